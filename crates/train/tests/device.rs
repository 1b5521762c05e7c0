//! Device handling of a training step on the CPU (the only device CI has): a model moved with
//! `to_device` / copied with `copy_to_device` trains exactly as the original, every tensor of
//! the forward pass and of both losses lands on the input's device, gradients on their
//! parameters', and a checkpoint's host tensors load into a model wherever it lives.

use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};
use yolo_train::{checkpoint::assign_named, Criterion, Hyp};

use yolo_testutil::root;

fn build(name: &str) -> Model {
    let cfg = ModelConfig::from_file(root().join("configs/models").join(name)).unwrap();
    Model::new(ModelConfig { nc: 3, ..cfg }, 5).unwrap()
}

fn batch(device: Device) -> (Tensor, Tensor) {
    let n = 2 * 3 * 64 * 64;
    let x = Tensor::from_vec(
        (0..n).map(|i| ((i * 13) % 89) as f32 / 89.0).collect(),
        &[2, 3, 64, 64],
        device,
    )
    .unwrap();
    let t = Tensor::from_vec(
        vec![
            0.0, 0.0, 0.3, 0.3, 0.25, 0.3, //
            1.0, 2.0, 0.6, 0.5, 0.4, 0.3,
        ],
        &[2, 6],
        Device::Cpu,
    )
    .unwrap();
    (x, t)
}

/// Loss value and every parameter gradient of one step, checking devices on the way.
fn step(model: &Model, crit: &Criterion) -> (f32, Vec<Vec<f32>>) {
    let dev = model.device();
    let (x, t) = batch(dev);
    let out = model.forward(&x, true).unwrap();
    assert!(out.raw.iter().all(|r| r.device() == dev));
    let l = crit.loss(&out, &t, [64, 64]).unwrap();
    assert_eq!(
        l.total.device(),
        dev,
        "the loss is on the predictions' device"
    );
    l.total.backward().unwrap();
    let grads = model
        .parameters()
        .iter()
        .filter(|p| p.requires_grad())
        .map(|p| {
            let g = p.grad().expect("every trainable parameter gets a gradient");
            assert_eq!(g.device(), p.device());
            let v = g.to_vec();
            p.zero_grad();
            v
        })
        .collect();
    (l.total.item().unwrap(), grads)
}

#[test]
fn a_moved_model_trains_as_the_original_with_both_losses() {
    for (name, ota) in [("yolov5n.yaml", false), ("yolov7-tiny.yaml", true)] {
        let mut model = build(name);
        let hyp = Hyp {
            loss_ota: Some(ota as u8),
            ..Hyp::default()
        };
        let crit = Criterion::new(&model, &hyp, 64, false).unwrap();
        assert_eq!(
            crit.name(),
            if ota { "ComputeLossOTA" } else { "ComputeLoss" }
        );
        let copy = model.copy_to_device(Device::Cpu).unwrap();
        let (l0, g0) = step(&model, &crit);
        model.to_device(Device::Cpu).unwrap();
        assert_eq!(model.device(), Device::Cpu);
        let (l1, g1) = step(&model, &crit);
        let (l2, g2) = step(&copy, &crit);
        assert!(l0.is_finite() && l0 > 0.0, "{name}: {l0}");
        // the first step also moved BN running statistics in `model` (and in `copy` alike):
        // training-mode BN uses batch statistics, so the loss and gradients do not change
        assert_eq!((l0, &g0), (l1, &g1), "{name}: after a no-op move");
        assert_eq!((l0, &g0), (l2, &g2), "{name}: on a deep copy");
    }
}

#[test]
fn checkpoint_tensors_load_into_a_model_on_its_device() {
    let model = build("yolov5n.yaml");
    let src = build("yolov5n.yaml").copy_to_device(Device::Cpu).unwrap();
    src.named_tensors()[0]
        .1
        .update_data(|v| v.iter_mut().for_each(|x| *x += 1.0))
        .unwrap();
    let host: Vec<(String, Tensor)> = src
        .named_tensors()
        .into_iter()
        .map(|(n, t, _)| {
            (
                n,
                Tensor::from_vec(t.to_vec(), t.shape(), Device::Cpu).unwrap(),
            )
        })
        .collect();
    assign_named(&model.named_tensors(), &host, "test").unwrap();
    for ((n, a, _), (_, b)) in model.named_tensors().iter().zip(&host) {
        assert_eq!(a.to_vec(), b.to_vec(), "{n}");
        assert_eq!(a.device(), model.device());
        assert!(!a.same_storage(b), "{n}: copied, not aliased");
    }
}
