//! IoU family: gradients against central finite differences, and property tests (symmetry,
//! bounds, identity) with proptest.

use proptest::prelude::*;
use yolo_losses::{bbox_iou, BoxFormat, IouConfig, IouKind};
use yolo_tensor::{Device, Tensor};

const KINDS: [IouKind; 6] = [
    IouKind::Iou,
    IouKind::GIoU,
    IouKind::DIoU,
    IouKind::CIoU,
    IouKind::SIoU,
    IouKind::EIoU,
];

fn boxes(v: &[f32]) -> Tensor {
    Tensor::from_vec(v.to_vec(), &[v.len() / 4, 4], Device::Cpu).unwrap()
}

fn value(a: &[f32], b: &[f32], cfg: IouConfig) -> f64 {
    bbox_iou(&boxes(a), &boxes(b), cfg)
        .unwrap()
        .to_vec()
        .iter()
        .map(|&x| x as f64)
        .sum()
}

/// Plain-f64 CIoU (xywh, α = 1) with the trade-off factor α_v frozen at `av` (or computed when
/// `None`), as upstream differentiates it: α_v carries no gradient.
fn ciou_f64(a: &[f64], b: &[f64], av: Option<f64>) -> (f64, f64) {
    let eps = 1e-7;
    let (ax1, ax2, ay1, ay2) = (
        a[0] - a[2] / 2.0,
        a[0] + a[2] / 2.0,
        a[1] - a[3] / 2.0,
        a[1] + a[3] / 2.0,
    );
    let (bx1, bx2, by1, by2) = (
        b[0] - b[2] / 2.0,
        b[0] + b[2] / 2.0,
        b[1] - b[3] / 2.0,
        b[1] + b[3] / 2.0,
    );
    let inter = (ax2.min(bx2) - ax1.max(bx1)).max(0.0) * (ay2.min(by2) - ay1.max(by1)).max(0.0);
    let union = a[2] * a[3] + b[2] * b[3] - inter + eps;
    let iou = inter / union;
    let (cw, ch) = (ax2.max(bx2) - ax1.min(bx1), ay2.max(by2) - ay1.min(by1));
    let c2 = cw * cw + ch * ch + eps;
    let rho2 = ((bx1 + bx2 - ax1 - ax2).powi(2) + (by1 + by2 - ay1 - ay2).powi(2)) / 4.0;
    let v =
        4.0 / std::f64::consts::PI.powi(2) * ((b[2] / b[3]).atan() - (a[2] / a[3]).atan()).powi(2);
    let al = av.unwrap_or(v / (1.0 - iou + v + eps));
    (iou - (rho2 / c2 + v * al), al)
}

#[test]
fn ciou_gradient_treats_alpha_as_constant() {
    let a = [10.0f32, 11.0, 6.0, 4.0];
    let b = [12.3f32, 9.6, 5.1, 6.2];
    let (ta, tb) = (boxes(&a).with_grad(), boxes(&b).with_grad());
    let out = bbox_iou(&ta, &tb, IouConfig::new(IouKind::CIoU)).unwrap();
    out.sum_all().unwrap().backward().unwrap();
    let (a64, b64): (Vec<f64>, Vec<f64>) = (
        a.iter().map(|&x| x as f64).collect(),
        b.iter().map(|&x| x as f64).collect(),
    );
    let (want, av) = ciou_f64(&a64, &b64, None);
    assert!((out.to_vec()[0] as f64 - want).abs() < 1e-6);
    let (ga, gb) = (ta.grad().unwrap().to_vec(), tb.grad().unwrap().to_vec());
    let h = 1e-6;
    for k in 0..4 {
        let (mut p, mut m) = (a64.clone(), a64.clone());
        p[k] += h;
        m[k] -= h;
        let fd = (ciou_f64(&p, &b64, Some(av)).0 - ciou_f64(&m, &b64, Some(av)).0) / (2.0 * h);
        assert!(
            (ga[k] as f64 - fd).abs() < 1e-5,
            "box1 {k}: {} vs {fd}",
            ga[k]
        );
        let (mut p, mut m) = (b64.clone(), b64.clone());
        p[k] += h;
        m[k] -= h;
        let fd = (ciou_f64(&a64, &p, Some(av)).0 - ciou_f64(&a64, &m, Some(av)).0) / (2.0 * h);
        assert!(
            (gb[k] as f64 - fd).abs() < 1e-5,
            "box2 {k}: {} vs {fd}",
            gb[k]
        );
    }
}

/// d(Σ iou)/d(box1, box2) by autograd against central differences (CIoU excluded: its α_v is
/// constant to autograd by design, see `ciou_gradient_treats_alpha_as_constant`).
fn check_grad(cfg: IouConfig) {
    // overlapping pairs away from every kink (min/max ties, zero overlap)
    let a = vec![
        10.0f32, 11.0, 6.0, 4.0, 3.0, 2.5, 2.2, 3.1, 20.0, 18.0, 7.0, 9.0,
    ];
    let b = vec![
        12.3f32, 9.6, 5.1, 6.2, 3.7, 3.3, 3.0, 1.7, 18.4, 19.1, 9.5, 6.5,
    ];
    let (ta, tb) = (boxes(&a).with_grad(), boxes(&b).with_grad());
    bbox_iou(&ta, &tb, cfg)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let (ga, gb) = (ta.grad().unwrap().to_vec(), tb.grad().unwrap().to_vec());
    let h = 1e-2f32;
    for which in 0..2 {
        for k in 0..a.len() {
            let (mut p, mut m) = ((a.clone(), b.clone()), (a.clone(), b.clone()));
            if which == 0 {
                p.0[k] += h;
                m.0[k] -= h;
            } else {
                p.1[k] += h;
                m.1[k] -= h;
            }
            let fd = (value(&p.0, &p.1, cfg) - value(&m.0, &m.1, cfg)) / (2.0 * h as f64);
            let g = if which == 0 { ga[k] } else { gb[k] } as f64;
            assert!(
                (g - fd).abs() < 2e-3 + 2e-2 * fd.abs(),
                "{cfg:?} box{} elem {k}: autograd {g} vs finite difference {fd}",
                which + 1
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    for k in KINDS.into_iter().filter(|&k| k != IouKind::CIoU) {
        check_grad(IouConfig::new(k));
        check_grad(IouConfig::new(k).alpha(3.0));
    }
}

#[test]
fn gradients_match_finite_differences_xyxy() {
    for k in [IouKind::Iou, IouKind::GIoU, IouKind::DIoU] {
        let cfg = IouConfig::new(k).format(BoxFormat::Xyxy);
        let a = vec![1.0f32, 2.0, 5.0, 6.5];
        let b = vec![2.2f32, 1.3, 6.1, 5.2];
        let (ta, tb) = (boxes(&a).with_grad(), boxes(&b).with_grad());
        bbox_iou(&ta, &tb, cfg)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let ga = ta.grad().unwrap().to_vec();
        for i in 0..4 {
            let (mut p, mut m) = (a.clone(), a.clone());
            p[i] += 1e-2;
            m[i] -= 1e-2;
            let fd = (value(&p, &b, cfg) - value(&m, &b, cfg)) / 2e-2;
            assert!(
                (ga[i] as f64 - fd).abs() < 2e-3,
                "{k:?} {i}: {} vs {fd}",
                ga[i]
            );
        }
    }
}

fn arb_box() -> impl Strategy<Value = [f32; 4]> {
    (0.0f32..100.0, 0.0f32..100.0, 0.5f32..60.0, 0.5f32..60.0).prop_map(|(x, y, w, h)| [x, y, w, h])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn iou_symmetric_and_bounded(a in arb_box(), b in arb_box()) {
        for k in KINDS {
            let cfg = IouConfig::new(k);
            let ab = value(&a, &b, cfg);
            let ba = value(&b, &a, cfg);
            // SIoU's eps offset on the centre distance breaks exact symmetry by ~eps
            prop_assert!((ab - ba).abs() < 1e-4, "{:?}: {} vs {}", k, ab, ba);
            prop_assert!(ab <= 1.0 + 1e-5, "{:?}: {}", k, ab);
            let lo = match k {
                IouKind::Iou => 0.0,
                IouKind::GIoU | IouKind::DIoU => -1.0,
                IouKind::CIoU | IouKind::SIoU => -2.0,
                IouKind::EIoU => -3.0,
            };
            prop_assert!(ab >= lo - 1e-5, "{:?}: {} below {}", k, ab, lo);
            // every variant is at most plain IoU
            let iou = value(&a, &b, IouConfig::new(IouKind::Iou));
            prop_assert!(ab <= iou + 1e-5, "{:?}: {} above IoU {}", k, ab, iou);
        }
    }

    #[test]
    fn iou_of_a_box_with_itself_is_one(a in arb_box()) {
        for k in KINDS {
            let v = value(&a, &a, IouConfig::new(k));
            prop_assert!((v - 1.0).abs() < 1e-4, "{:?}: {}", k, v);
        }
    }

    #[test]
    fn alpha_iou_is_a_power_of_iou(a in arb_box(), b in arb_box(), alpha in 0.5f32..3.0) {
        let plain = value(&a, &b, IouConfig::new(IouKind::Iou));
        let pow = value(&a, &b, IouConfig::new(IouKind::Iou).alpha(alpha));
        prop_assert!((pow - (plain + 1e-7).powf(alpha as f64)).abs() < 1e-4);
    }
}
