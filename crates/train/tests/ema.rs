//! ModelEma against the closed form of the decay ramp.

use yolo_layers::Kind;
use yolo_tensor::{Device, Tensor};
use yolo_train::ema::{ModelEma, EMA_DECAY, EMA_TAU};

fn t(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len()], Device::Cpu).unwrap()
}

fn model() -> Vec<(String, Tensor, Kind)> {
    vec![
        (
            "model.0.conv.weight".into(),
            t(&[1.0, 2.0, 3.0]),
            Kind::Param,
        ),
        ("model.0.bn.running_mean".into(), t(&[0.5]), Kind::Buffer),
    ]
}

#[test]
fn decay_ramp() {
    let ema = ModelEma::new(&model()).unwrap();
    assert_eq!(ema.decay, EMA_DECAY);
    assert_eq!(ema.tau, EMA_TAU);
    let d1 = 0.9999 * (1.0 - (-1.0f64 / 2000.0).exp());
    assert!((ema.decay_at(1) - d1).abs() < 1e-15);
    assert!((ema.decay_at(2000) - 0.9999 * (1.0 - (-1.0f64).exp())).abs() < 1e-15);
}

#[test]
fn constant_model_closed_form() {
    let m = model();
    let mut ema = ModelEma::new(&m).unwrap();
    ema.tau = 3.0;
    ema.decay = 0.9;
    // The EMA is a deep copy: changing the model does not change it.
    m[0].1.assign(&t(&[2.0, 4.0, 6.0])).unwrap();
    m[1].1.assign(&t(&[1.5])).unwrap();
    assert_eq!(ema.tensors()[0].1.to_vec(), vec![1.0, 2.0, 3.0]);
    let n = 6u64;
    for _ in 0..n {
        ema.update(&m).unwrap();
    }
    assert_eq!(ema.updates, n);
    // e_n = m + (e_0 - m) * prod_{t=1..n} d_t, d_t = 0.9 (1 - exp(-t / 3)).
    let prod: f64 = (1..=n)
        .map(|k| 0.9 * (1.0 - (-(k as f64) / 3.0).exp()))
        .product();
    let want = |e0: f64, mv: f64| mv + (e0 - mv) * prod;
    let w = ema.get("model.0.conv.weight").unwrap().to_vec();
    for (i, (e0, mv)) in [(1.0, 2.0), (2.0, 4.0), (3.0, 6.0)].iter().enumerate() {
        assert!((w[i] as f64 - want(*e0, *mv)).abs() < 1e-5, "{w:?}");
    }
    let b = ema.get("model.0.bn.running_mean").unwrap().to_vec();
    assert!(
        (b[0] as f64 - want(0.5, 1.5)).abs() < 1e-5,
        "buffers are averaged too"
    );
}

#[test]
fn moving_model_recurrence_and_resume() {
    let m = model();
    let mut ema = ModelEma::new(&m).unwrap();
    let mut e = 1.0f64;
    let mut resumed: Option<ModelEma> = None;
    for k in 1..=8u64 {
        let mv = 1.0 + 0.5 * k as f64;
        m[0].1.assign(&t(&[mv as f32, 0.0, 0.0])).unwrap();
        ema.update(&m).unwrap();
        let r = resumed.get_or_insert_with(|| {
            // A checkpoint after the first update: tensors + `updates`.
            ModelEma::from_tensors(ema.tensors(), ema.updates).unwrap()
        });
        if k > 1 {
            r.update(&m).unwrap();
        }
        let d = 0.9999 * (1.0 - (-(k as f64) / 2000.0).exp());
        e = d * e + (1.0 - d) * mv;
    }
    let got = ema.get("model.0.conv.weight").unwrap().to_vec()[0] as f64;
    assert!((got - e).abs() < 1e-5, "{got} vs {e}");
    let r = resumed.unwrap();
    assert_eq!(r.updates, 8);
    for ((_, a), (_, b)) in ema.tensors().iter().zip(r.tensors()) {
        assert_eq!(a.to_vec(), b.to_vec());
    }
}

#[test]
fn copy_load_and_errors() {
    let m = model();
    let ema = ModelEma::new(&m).unwrap();
    let other = vec![
        (
            "model.0.conv.weight".into(),
            t(&[9.0, 9.0, 9.0]),
            Kind::Param,
        ),
        ("model.0.bn.running_mean".into(), t(&[9.0]), Kind::Buffer),
    ];
    ema.copy_to(&other).unwrap();
    assert_eq!(other[0].1.to_vec(), vec![1.0, 2.0, 3.0]);
    assert_eq!(other[1].1.to_vec(), vec![0.5]);

    let mut ema2 = ModelEma::new(&other).unwrap();
    ema2.load(&[("model.0.bn.running_mean".into(), t(&[7.0]))])
        .unwrap();
    assert_eq!(
        ema2.get("model.0.bn.running_mean").unwrap().to_vec(),
        vec![7.0]
    );
    assert!(ema2
        .load(&[("model.0.bn.running_mean".into(), t(&[7.0, 1.0]))])
        .is_err());
    assert!(ema2.load(&[("nope".into(), t(&[7.0]))]).is_err());

    let mut ema3 = ModelEma::new(&m).unwrap();
    assert!(
        ema3.update(&m[..1]).is_err(),
        "a missing tensor is an error"
    );
    assert_eq!(ema3.updates, 0);
}
