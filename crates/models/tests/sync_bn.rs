//! `Model::set_sync_bn`: two replicas, each running a training-mode forward on half of a
//! batch with synchronised batch norm, produce exactly what one model produces on the whole
//! batch (outputs and BN running statistics); without it the halves differ.

use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};

fn model() -> Model {
    let cfg = ModelConfig::from_yaml(include_str!("../../../configs/models/yolov5n.yaml")).unwrap();
    Model::new(cfg, 5).unwrap()
}

fn raw(m: &Model, x: &Tensor) -> Vec<Vec<f32>> {
    let _g = yolo_tensor::no_grad();
    m.forward(x, true)
        .unwrap()
        .raw
        .iter()
        .map(|r| r.to_vec())
        .collect()
}

fn running(m: &Model) -> Vec<f32> {
    m.named_tensors()
        .iter()
        .filter(|(n, _, _)| n.ends_with("running_mean") || n.ends_with("running_var"))
        .flat_map(|(_, t, _)| t.to_vec())
        .collect()
}

#[test]
fn synced_replicas_match_the_whole_batch() {
    let (n, s) = (4usize, 64usize);
    let data = yolo_testutil::uniform(n * 3 * s * s, 0.0, 1.0, 9);
    let full_x = Tensor::from_vec(data.clone(), &[n, 3, s, s], Device::Cpu).unwrap();
    let whole = model();
    let full = raw(&whole, &full_x);
    let half = data.len() / 2;
    let comms = yolo_testutil::sum_group(2);
    let threads: Vec<_> = comms
        .into_iter()
        .enumerate()
        .map(|(r, comm)| {
            let part = data[r * half..(r + 1) * half].to_vec();
            std::thread::spawn(move || {
                // replicas block in their collective inside kernel code: one pool each
                yolo_tensor::use_private_pool(1);
                let m = model();
                m.set_sync_bn(Some(comm));
                assert!(m.sync_bn());
                let x = Tensor::from_vec(part, &[n / 2, 3, s, s], Device::Cpu).unwrap();
                (raw(&m, &x), running(&m))
            })
        })
        .collect();
    let parts: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    for (level, f) in full.iter().enumerate() {
        let joined = [parts[0].0[level].clone(), parts[1].0[level].clone()].concat();
        let e = yolo_testutil::max_rel(f, &joined);
        assert!(e < 1e-4, "level {level}: {e}");
    }
    for p in &parts {
        let e = yolo_testutil::max_rel(&running(&whole), &p.1);
        assert!(e < 1e-4, "running statistics: {e}");
    }
    // without synchronisation, half a batch has other statistics
    let alone = model();
    let x = Tensor::from_vec(data[..half].to_vec(), &[n / 2, 3, s, s], Device::Cpu).unwrap();
    let e = yolo_testutil::max_rel(&full[0][..full[0].len() / 2], &raw(&alone, &x)[0]);
    assert!(e > 1e-3, "{e}");
}
