//! Readers of the ComputeLoss / ComputeLossOTA parity fixtures (`tools/make_loss_fixtures.py`,
//! `tools/make_ota_fixtures.py`), shared by both parity tests.
#![allow(dead_code)]

use safetensors::SafeTensors;
use yolo_losses::{DetectSpec, LossHyp, LossOutput};
use yolo_tensor::{Device, Tensor};

/// The bytes of fixture `name`.
pub fn load(name: &str) -> Vec<u8> {
    yolo_testutil::read_fixture(env!("CARGO_MANIFEST_DIR"), name)
}

/// A fixture tensor as f64 values and its shape.
pub fn f64s(st: &SafeTensors<'_>, key: &str) -> (Vec<f64>, Vec<usize>) {
    yolo_testutil::tensor_f64(st, key)
}

/// The head of the fixture (anchors in grid units, strides).
pub fn spec(st: &SafeTensors<'_>) -> DetectSpec {
    let (a, s) = f64s(st, "anchors");
    let (strides, _) = f64s(st, "strides");
    let (nl, na) = (s[0], s[1]);
    DetectSpec {
        nc: 3,
        anchors: (0..nl)
            .map(|l| {
                (0..na)
                    .map(|k| [a[(l * na + k) * 2] as f32, a[(l * na + k) * 2 + 1] as f32])
                    .collect()
            })
            .collect(),
        strides: strides.iter().map(|&x| x as f32).collect(),
    }
}

/// The hyper-parameters of fixture case `case`.
pub fn hyp(st: &SafeTensors<'_>, case: &str) -> LossHyp {
    let (h, _) = f64s(st, &format!("{case}.hyp"));
    LossHyp {
        box_gain: h[0] as f32,
        cls_gain: h[1] as f32,
        obj_gain: h[2] as f32,
        anchor_t: h[3] as f32,
        fl_gamma: h[4] as f32,
        cls_pw: h[5] as f32,
        obj_pw: h[6] as f32,
        label_smoothing: h[7] as f32,
        ..LossHyp::default()
    }
}

/// The prediction levels, as leaves that require grad.
pub fn preds(st: &SafeTensors<'_>) -> Vec<Tensor> {
    preds_n(st, 3)
}

/// The first `n` prediction levels (`pred.<i>`), as leaves that require grad.
pub fn preds_n(st: &SafeTensors<'_>, n: usize) -> Vec<Tensor> {
    (0..n)
        .map(|i| {
            let (v, s) = f64s(st, &format!("pred.{i}"));
            Tensor::from_vec(v.iter().map(|&x| x as f32).collect(), &s, Device::Cpu)
                .unwrap()
                .with_grad()
        })
        .collect()
}

/// The target rows.
pub fn targets(st: &SafeTensors<'_>) -> Tensor {
    let (v, s) = f64s(st, "targets");
    Tensor::from_vec(v.iter().map(|&x| x as f32).collect(), &s, Device::Cpu).unwrap()
}

/// Compares the gradient of every prediction level with the fixture's `<case>.grad.<level>`:
/// per element relative to max(|reference|, 1e-3 × the level's largest gradient), bounded by
/// max(1e-5, 1.5 × PyTorch's own float32 error `<case>.f32_err`).
pub fn check_gradients(st: &SafeTensors<'_>, case: &str, preds: &[Tensor]) {
    check_gradients_with(st, case, preds, 1.5)
}

/// [`check_gradients`] with the bound max(1e-5, `factor` × PyTorch's own float32 error).
pub fn check_gradients_with(st: &SafeTensors<'_>, case: &str, preds: &[Tensor], factor: f64) {
    let (torch_err, _) = f64s(st, &format!("{case}.f32_err"));
    for (i, pi) in preds.iter().enumerate() {
        let (g, _) = f64s(st, &format!("{case}.grad.{i}"));
        let ours = pi.grad().unwrap().to_vec();
        assert_eq!(ours.len(), g.len(), "case {case} grad level {i}: size");
        let gmax = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let mut worst = 0.0f64;
        let mut worst_abs = 0.0f64;
        for (a, b) in ours.iter().zip(&g) {
            let d = (*a as f64 - b).abs();
            worst_abs = worst_abs.max(d / gmax);
            worst = worst.max(d / b.abs().max(1e-3 * gmax));
        }
        let bound = 1e-5f64.max(factor * torch_err[i]);
        eprintln!("case {case} grad.{i}: worst rel {worst:.2e} (torch f32 {:.2e}), worst vs max {worst_abs:.2e}", torch_err[i]);
        assert!(
            worst < bound,
            "case {case} grad level {i}: {worst:.2e} ≥ {bound:.2e}"
        );
    }
}

/// Relative difference of `a` from the reference `b`.
pub fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-12)
}

/// Checks a loss against fixture case `case`: box, obj and cls components and the total to 1e-5
/// relative, then back-propagates the total and checks the gradients ([`check_gradients`]).
pub fn check_loss_output(st: &SafeTensors<'_>, case: &str, out: &LossOutput, preds: &[Tensor]) {
    check_loss_output_with(st, case, out, preds, 1.5)
}

/// [`check_loss_output`] with the gradient bound factor of [`check_gradients_with`].
pub fn check_loss_output_with(
    st: &SafeTensors<'_>,
    case: &str,
    out: &LossOutput,
    preds: &[Tensor],
    factor: f64,
) {
    let (items, _) = f64s(st, &format!("{case}.items"));
    let (total, _) = f64s(st, &format!("{case}.loss"));
    let ours = [out.lbox as f64, out.lobj as f64, out.lcls as f64];
    for (k, name) in ["box", "obj", "cls"].iter().enumerate() {
        let e = rel(ours[k], items[k]);
        eprintln!(
            "case {case} {name}: ours {} upstream {} rel {e:.2e}",
            ours[k], items[k]
        );
        assert!(
            e < 1e-5,
            "case {case} {name}: {} vs {} ({e:.2e})",
            ours[k],
            items[k]
        );
    }
    let t = out.total.item().unwrap() as f64;
    eprintln!(
        "case {case} total: ours {t} upstream {} rel {:.2e}",
        total[0],
        rel(t, total[0])
    );
    assert!(rel(t, total[0]) < 1e-5, "total {t} vs {}", total[0]);
    out.total.backward().unwrap();
    check_gradients_with(st, case, preds, factor);
}
