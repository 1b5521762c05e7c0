//! NMS and validation metrics equal upstream YOLOv5's (`non_max_suppression`, `process_batch`,
//! `ap_per_class`, `ConfusionMatrix`, `fitness`) on fixtures from `tools/make_loss_fixtures.py`.

use safetensors::SafeTensors;
use yolo_tensor::{Device, Tensor};
use yolo_train::{
    ap_per_class, fitness, non_max_suppression, process_batch, ConfusionMatrix, Detection,
    MetricsAccumulator, NmsConfig,
};

fn load(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn f64s(st: &SafeTensors<'_>, key: &str) -> (Vec<f64>, Vec<usize>) {
    yolo_testutil::tensor_f64(st, key)
}

struct Fixture {
    labels: Vec<Vec<[f32; 5]>>,
    dets: Vec<Vec<Detection>>,
}

fn metrics_fixture(st: &SafeTensors<'_>) -> Fixture {
    let (l, _) = f64s(st, "labels");
    let (d, _) = f64s(st, "dets");
    let n_img = 12;
    let mut labels = vec![Vec::new(); n_img];
    for r in l.chunks(6) {
        labels[r[0] as usize].push(std::array::from_fn(|k| r[k + 1] as f32));
    }
    let mut dets = vec![Vec::new(); n_img];
    for r in d.chunks(7) {
        dets[r[0] as usize].push(std::array::from_fn(|k| r[k + 1] as f32));
    }
    Fixture { labels, dets }
}

fn close(what: &str, ours: &[f64], theirs: &[f64], tol: f64) {
    assert_eq!(ours.len(), theirs.len(), "{what}: lengths");
    for (k, (a, b)) in ours.iter().zip(theirs).enumerate() {
        assert!((a - b).abs() <= tol, "{what}[{k}]: ours {a} upstream {b}");
    }
}

#[test]
fn process_batch_matches_upstream() {
    let bytes = load("metrics.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let fx = metrics_fixture(&st);
    let (correct, _) = f64s(&st, "correct");
    let iouv = yolo_train::metrics::iou_thresholds();
    let mut ours = Vec::new();
    for (d, l) in fx.dets.iter().zip(&fx.labels) {
        ours.extend(process_batch(d, l, &iouv).iter().map(|&b| b as u8 as f64));
    }
    assert_eq!(ours, correct);
    assert!(correct.contains(&1.0) && correct.contains(&0.0));
}

#[test]
fn ap_per_class_and_summary_match_upstream() {
    let bytes = load("metrics.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let fx = metrics_fixture(&st);
    let mut acc = MetricsAccumulator::new();
    for (d, l) in fx.dets.iter().zip(&fx.labels) {
        acc.add_image(d, l);
    }
    let m = acc.compute(5).unwrap();
    let pc = &m.per_class;
    let tol = 1e-4;
    for key in ["tp", "fp", "p", "r", "f1", "ap", "ap_class"] {
        let (theirs, _) = f64s(&st, key);
        let ours: Vec<f64> = match key {
            "tp" => pc.tp.clone(),
            "fp" => pc.fp.clone(),
            "p" => pc.p.clone(),
            "r" => pc.r.clone(),
            "f1" => pc.f1.clone(),
            "ap" => pc.ap.clone(),
            _ => pc.classes.iter().map(|&c| c as f64).collect(),
        };
        let worst = ours
            .iter()
            .zip(&theirs)
            .fold(0.0f64, |w, (a, b)| w.max((a - b).abs()));
        eprintln!("{key}: worst abs difference {worst:.2e}\n ours {ours:?}\n upstream {theirs:?}");
        close(key, &ours, &theirs, tol);
    }
    let (s, _) = f64s(&st, "summary");
    let ours = [m.mp, m.mr, m.map50, m.map, m.fitness];
    eprintln!("summary ours {ours:?} upstream {s:?}");
    close("mp, mr, map50, map, fitness", &ours, &s, tol);
    assert!((fitness(m.mp, m.mr, m.map50, m.map) - s[4]).abs() < tol);
    // the bare function on the accumulated arrays agrees with the accumulator
    let again = ap_per_class(&[true; 10], 10, &[0.5], &[0.0], &[0.0]).unwrap();
    assert!((again.ap_at(0, 0) - 0.995).abs() < 1e-12);
}

#[test]
fn confusion_matrix_matches_upstream() {
    let bytes = load("metrics.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let fx = metrics_fixture(&st);
    let mut cm = ConfusionMatrix::new(5);
    for (d, l) in fx.dets.iter().zip(&fx.labels) {
        if l.is_empty() {
            continue; // the fixture, like val.py, only counts images with labels
        }
        cm.process_batch(if d.is_empty() { None } else { Some(d) }, l);
    }
    let (theirs, _) = f64s(&st, "confusion");
    assert_eq!(cm.matrix, theirs);
}

#[test]
fn non_max_suppression_matches_upstream() {
    let bytes = load("nms.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (pred, shape) = f64s(&st, "pred");
    let pred = Tensor::from_vec(
        pred.iter().map(|&x| x as f32).collect(),
        &shape,
        Device::Cpu,
    )
    .unwrap();
    let configs: [(&str, NmsConfig); 5] = [
        ("default", NmsConfig::default()),
        (
            "val",
            NmsConfig {
                conf_thres: 0.001,
                iou_thres: 0.6,
                multi_label: true,
                ..Default::default()
            },
        ),
        (
            "agnostic",
            NmsConfig {
                conf_thres: 0.2,
                iou_thres: 0.5,
                agnostic: true,
                ..Default::default()
            },
        ),
        (
            "classes",
            NmsConfig {
                conf_thres: 0.1,
                classes: Some(vec![1, 3]),
                ..Default::default()
            },
        ),
        (
            "maxdet",
            NmsConfig {
                conf_thres: 0.05,
                iou_thres: 0.3,
                max_det: 7,
                ..Default::default()
            },
        ),
    ];
    for (name, cfg) in configs {
        let out = non_max_suppression(&pred, &cfg).unwrap();
        let (theirs, _) = f64s(&st, &format!("out.{name}"));
        let ours: Vec<f64> = out
            .iter()
            .enumerate()
            .flat_map(|(i, dets)| {
                dets.iter()
                    .flat_map(move |d| std::iter::once(i as f64).chain(d.iter().map(|&v| v as f64)))
            })
            .collect();
        assert_eq!(ours.len(), theirs.len(), "{name}: number of detections");
        for (k, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 * b.abs().max(1.0),
                "{name} value {k}: {a} vs {b}"
            );
        }
    }
}
