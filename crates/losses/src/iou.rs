//! The box IoU family as differentiable tensor ops.
//!
//! With `alpha == 1` the formulas are upstream YOLOv5's `bbox_iou` (Ultralytics): IoU, GIoU,
//! DIoU, CIoU (the CIoU trade-off factor α_v taken without gradient). `alpha != 1` gives the
//! Alpha-IoU family as YOLOv7's `bbox_alpha_iou` writes it (IoU and penalty terms each raised
//! to α). SIoU follows the YOLOv6/YOLOv5-fork form (angle, distance and shape costs) and EIoU
//! the Focal-EIoU paper (DIoU plus width and height differences over the enclosing box).

use crate::error::{invalid, Result};
use yolo_tensor::Tensor;

/// Which member of the IoU family to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum IouKind {
    /// Plain intersection over union.
    Iou,
    /// Generalized IoU: minus the empty share of the enclosing box.
    GIoU,
    /// Distance IoU: minus squared centre distance over squared enclosing diagonal.
    DIoU,
    /// Complete IoU: DIoU minus the aspect-ratio consistency term (YOLOv5's box loss).
    #[default]
    CIoU,
    /// SCYLLA IoU: minus half of (angle-aware distance cost + shape cost).
    SIoU,
    /// Efficient IoU: DIoU minus width and height differences over the enclosing box.
    EIoU,
}

impl IouKind {
    /// Parses a name as written in hyp YAML files (`iou`, `giou`, `diou`, `ciou`, `siou`, `eiou`).
    pub fn from_name(name: &str) -> Option<IouKind> {
        match name.to_ascii_lowercase().as_str() {
            "iou" => Some(IouKind::Iou),
            "giou" => Some(IouKind::GIoU),
            "diou" => Some(IouKind::DIoU),
            "ciou" => Some(IouKind::CIoU),
            "siou" => Some(IouKind::SIoU),
            "eiou" => Some(IouKind::EIoU),
            _ => None,
        }
    }
}

/// How the last axis (4 values) of a box tensor is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BoxFormat {
    /// Centre x, centre y, width, height.
    #[default]
    Xywh,
    /// Corners x1, y1, x2, y2.
    Xyxy,
}

/// Settings of [`bbox_iou`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct IouConfig {
    /// Which IoU variant.
    pub kind: IouKind,
    /// Box layout of both inputs.
    pub format: BoxFormat,
    /// Alpha-IoU power (1 = the plain variant).
    pub alpha: f32,
    /// Guard against division by zero.
    pub eps: f32,
}

impl Default for IouConfig {
    fn default() -> Self {
        IouConfig {
            kind: IouKind::Iou,
            format: BoxFormat::Xywh,
            alpha: 1.0,
            eps: 1e-7,
        }
    }
}

impl IouConfig {
    /// A config of `kind` with the other settings at their defaults (xywh, α = 1, eps 1e-7).
    pub fn new(kind: IouKind) -> Self {
        IouConfig {
            kind,
            ..Default::default()
        }
    }
    /// The same config with boxes in `format`.
    pub fn format(mut self, format: BoxFormat) -> Self {
        self.format = format;
        self
    }
    /// The same config with Alpha-IoU power `alpha`.
    pub fn alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }
}

/// `atan(x)` elementwise with its gradient `1/(1+x²)`: the tensor core's fused
/// `UnaryOp::Atan`, so it runs on any backend.
pub fn atan(x: &Tensor) -> Result<Tensor> {
    Ok(x.atan())
}

/// One box tensor split into corners and sizes (each `[..., 1]`).
struct Corners {
    x1: Tensor,
    y1: Tensor,
    x2: Tensor,
    y2: Tensor,
    w: Tensor,
    h: Tensor,
}

fn corners(b: &Tensor, format: BoxFormat, eps: f32, h_eps: bool) -> Result<Corners> {
    let c = |i: usize| b.narrow(-1, i, 1);
    let (a0, a1, a2, a3) = (c(0)?, c(1)?, c(2)?, c(3)?);
    Ok(match format {
        BoxFormat::Xywh => {
            let (hw, hh) = (a2.mul_scalar(0.5), a3.mul_scalar(0.5));
            let (x1, x2, y1, y2) = (a0.sub(&hw)?, a0.add(&hw)?, a1.sub(&hh)?, a1.add(&hh)?);
            if h_eps {
                // Alpha-IoU measures sizes from the corners, with eps on the height.
                let (w, h) = (x2.sub(&x1)?, y2.sub(&y1)?.add_scalar(eps));
                Corners {
                    x1,
                    y1,
                    x2,
                    y2,
                    w,
                    h,
                }
            } else {
                Corners {
                    x1,
                    y1,
                    x2,
                    y2,
                    w: a2,
                    h: a3,
                }
            }
        }
        BoxFormat::Xyxy => {
            let w = a2.sub(&a0)?;
            let h = a3.sub(&a1)?.add_scalar(eps);
            Corners {
                x1: a0,
                y1: a1,
                x2: a2,
                y2: a3,
                w,
                h,
            }
        }
    })
}

fn check_boxes(what: &'static str, t: &Tensor) -> Result<()> {
    if t.rank() == 0 || t.shape()[t.rank() - 1] != 4 {
        return invalid(
            what,
            format!("boxes need a last axis of 4, got shape {:?}", t.shape()),
        );
    }
    Ok(())
}

/// The IoU variant `cfg.kind` between `box1` and `box2` (last axis 4, other axes broadcast),
/// shaped like the broadcast inputs with a last axis of 1, differentiable w.r.t. both.
pub fn bbox_iou(box1: &Tensor, box2: &Tensor, cfg: IouConfig) -> Result<Tensor> {
    check_boxes("bbox_iou box1", box1)?;
    check_boxes("bbox_iou box2", box2)?;
    if !(cfg.alpha.is_finite() && cfg.alpha > 0.0) {
        return invalid(
            "bbox_iou alpha",
            format!("must be positive, got {}", cfg.alpha),
        );
    }
    let eps = cfg.eps;
    let alpha_mode = cfg.alpha != 1.0;
    let a = corners(box1, cfg.format, eps, alpha_mode)?;
    let b = corners(box2, cfg.format, eps, alpha_mode)?;

    let iw = a.x2.minimum(&b.x2)?.sub(&a.x1.maximum(&b.x1)?)?.relu();
    let ih = a.y2.minimum(&b.y2)?.sub(&a.y1.maximum(&b.y1)?)?.relu();
    let inter = iw.mul(&ih)?;
    let union =
        a.w.mul(&a.h)?
            .add(&b.w.mul(&b.h)?)?
            .sub(&inter)?
            .add_scalar(eps);
    let iou = inter.div(&union)?;
    if cfg.kind == IouKind::Iou {
        return Ok(if alpha_mode {
            iou.add_scalar(eps).powf(cfg.alpha)
        } else {
            iou
        });
    }

    // Enclosing box.
    let cw = a.x2.maximum(&b.x2)?.sub(&a.x1.minimum(&b.x1)?)?;
    let ch = a.y2.maximum(&b.y2)?.sub(&a.y1.minimum(&b.y1)?)?;
    // Doubled centre offsets (box2 − box1).
    let dx2 = b.x1.add(&b.x2)?.sub(&a.x1)?.sub(&a.x2)?;
    let dy2 = b.y1.add(&b.y2)?.sub(&a.y1)?.sub(&a.y2)?;
    let rho2 = dx2.sqr().add(&dy2.sqr())?.mul_scalar(0.25);
    let diag2 = cw.sqr().add(&ch.sqr())?;

    let pow = |t: Tensor| -> Tensor {
        if alpha_mode {
            t.powf(cfg.alpha)
        } else {
            t
        }
    };
    let iou_a = if alpha_mode {
        iou.add_scalar(eps).powf(cfg.alpha)
    } else {
        iou.clone()
    };

    Ok(match cfg.kind {
        IouKind::Iou => unreachable!("returned above"),
        IouKind::GIoU => {
            if alpha_mode {
                let c_area = cw.mul(&ch)?.add_scalar(eps).maximum(&union)?;
                let pen = c_area.sub(&union)?.div(&c_area)?.add_scalar(eps);
                iou_a.sub(&pow(pen))?
            } else {
                let c_area = cw.mul(&ch)?.add_scalar(eps);
                iou.sub(&c_area.sub(&union)?.div(&c_area)?)?
            }
        }
        IouKind::DIoU | IouKind::CIoU => {
            let c2 = pow(diag2).add_scalar(eps);
            let dist = pow(rho2).div(&c2)?;
            if cfg.kind == IouKind::DIoU {
                iou_a.sub(&dist)?
            } else {
                let d = atan(&b.w.div(&b.h)?)?.sub(&atan(&a.w.div(&a.h)?)?)?;
                let v = d
                    .sqr()
                    .mul_scalar(4.0 / (std::f32::consts::PI * std::f32::consts::PI));
                let alpha_v = {
                    let _g = yolo_tensor::no_grad();
                    let denom = if alpha_mode {
                        iou.neg().add_scalar(1.0 + eps).add(&v)?
                    } else {
                        iou.neg().add_scalar(1.0).add(&v)?.add_scalar(eps)
                    };
                    v.detach().div(&denom)?.detach()
                };
                let va = v.mul(&alpha_v)?;
                if alpha_mode {
                    iou_a.sub(&dist.add(&va.add_scalar(eps).powf(cfg.alpha))?)?
                } else {
                    iou.sub(&dist.add(&va)?)?
                }
            }
        }
        IouKind::EIoU => {
            let c2 = diag2.add_scalar(eps);
            let dw2 = b.w.sub(&a.w)?.sqr();
            let dh2 = b.h.sub(&a.h)?.sqr();
            let pen = rho2
                .div(&c2)?
                .add(&dw2.div(&cw.sqr().add_scalar(eps))?)?
                .add(&dh2.div(&ch.sqr().add_scalar(eps))?)?;
            if alpha_mode {
                iou_a.sub(&pen.add_scalar(eps).powf(cfg.alpha))?
            } else {
                iou.sub(&pen)?
            }
        }
        IouKind::SIoU => {
            let s_cw = dx2.mul_scalar(0.5).add_scalar(eps);
            let s_ch = dy2.mul_scalar(0.5).add_scalar(eps);
            let sigma = s_cw.sqr().add(&s_ch.sqr())?.sqrt();
            let sin1 = s_cw.abs().div(&sigma)?;
            let sin2 = s_ch.abs().div(&sigma)?;
            let thr = Tensor::scalar(std::f32::consts::FRAC_1_SQRT_2).to_device(sin1.device())?;
            let sin_a = Tensor::where_cond(&sin1.gt(&thr)?, &sin2, &sin1)?;
            // cos(2·asin(s) − π/2) = sin(2·asin(s)) = 2·s·√(1 − s²); s ≤ 1/√2 here.
            let angle = sin_a
                .mul(&sin_a.sqr().affine(-1.0, 1.0).sqrt())?
                .mul_scalar(2.0);
            let gamma = angle.add_scalar(-2.0);
            let rho_x = s_cw.div(&cw)?.sqr();
            let rho_y = s_ch.div(&ch)?.sqr();
            let dist = gamma
                .mul(&rho_x)?
                .exp()
                .add(&gamma.mul(&rho_y)?.exp())?
                .affine(-1.0, 2.0);
            let om_w = a.w.sub(&b.w)?.abs().div(&a.w.maximum(&b.w)?)?;
            let om_h = a.h.sub(&b.h)?.abs().div(&a.h.maximum(&b.h)?)?;
            let shape_cost = om_w
                .neg()
                .exp()
                .affine(-1.0, 1.0)
                .powf(4.0)
                .add(&om_h.neg().exp().affine(-1.0, 1.0).powf(4.0))?;
            let pen = dist.add(&shape_cost)?.mul_scalar(0.5);
            if alpha_mode {
                iou_a.sub(&pen.add_scalar(eps).powf(cfg.alpha))?
            } else {
                iou.sub(&pen)?
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_tensor::Device;

    fn t(v: &[f32]) -> Tensor {
        Tensor::from_vec(v.to_vec(), &[v.len() / 4, 4], Device::Cpu).unwrap()
    }

    fn val(kind: IouKind, a: &[f32], b: &[f32]) -> f32 {
        bbox_iou(&t(a), &t(b), IouConfig::new(kind))
            .unwrap()
            .to_vec()[0]
    }

    #[test]
    fn identical_boxes_give_one_for_every_kind() {
        let b = [5.0, 5.0, 4.0, 2.0];
        for k in [
            IouKind::Iou,
            IouKind::GIoU,
            IouKind::DIoU,
            IouKind::CIoU,
            IouKind::SIoU,
            IouKind::EIoU,
        ] {
            let v = val(k, &b, &b);
            assert!((v - 1.0).abs() < 1e-5, "{k:?}: {v}");
        }
    }

    #[test]
    fn closed_form_values() {
        // xyxy [0,0,2,2] and [1,1,3,3]: inter 1, union 7, enclosure 3×3.
        let (a, b) = ([1.0, 1.0, 2.0, 2.0], [2.0, 2.0, 2.0, 2.0]);
        let iou = 1.0 / 7.0;
        assert!((val(IouKind::Iou, &a, &b) - iou).abs() < 1e-6);
        assert!((val(IouKind::GIoU, &a, &b) - (iou - 2.0 / 9.0)).abs() < 1e-6);
        // centre distance² 2, diagonal² 18
        assert!((val(IouKind::DIoU, &a, &b) - (iou - 2.0 / 18.0)).abs() < 1e-6);
        // same aspect ratio: v = 0, CIoU = DIoU
        assert!((val(IouKind::CIoU, &a, &b) - (iou - 2.0 / 18.0)).abs() < 1e-6);
        // EIoU: equal sizes, so only the distance term
        assert!((val(IouKind::EIoU, &a, &b) - (iou - 2.0 / 18.0)).abs() < 1e-6);
        // CIoU with different aspect ratios
        let (a, b) = ([0.0, 0.0, 2.0, 1.0], [0.5, 0.0, 1.0, 2.0]);
        let inter = 1.0 * 1.0;
        let iou: f64 = inter / (2.0 + 2.0 - inter);
        let (cw, ch): (f64, f64) = (2.0, 2.0);
        let rho2 = 0.25;
        let v = 4.0 / std::f64::consts::PI.powi(2) * (0.5f64.atan() - 2.0f64.atan()).powi(2);
        let al = v / (1.0 - iou + v);
        let want = iou - (rho2 / (cw * cw + ch * ch) + v * al);
        assert!((val(IouKind::CIoU, &a, &b) as f64 - want).abs() < 1e-5);
    }

    #[test]
    fn disjoint_boxes_have_negative_giou() {
        let (a, b) = ([0.0, 0.0, 1.0, 1.0], [5.0, 0.0, 1.0, 1.0]);
        assert_eq!(val(IouKind::Iou, &a, &b), 0.0);
        let g = val(IouKind::GIoU, &a, &b);
        assert!((g - (0.0 - (6.0 - 2.0) / 6.0)).abs() < 1e-5, "{g}");
        assert!(val(IouKind::DIoU, &a, &b) < 0.0);
        assert!(val(IouKind::SIoU, &a, &b) < 0.0);
    }

    #[test]
    fn xyxy_matches_xywh() {
        let a = t(&[1.0, 2.0, 4.0, 3.0]);
        let b = t(&[2.0, 2.5, 3.0, 5.0]);
        let ax = t(&[-1.0, 0.5, 3.0, 3.5]);
        let bx = t(&[0.5, 0.0, 3.5, 5.0]);
        for k in [IouKind::Iou, IouKind::GIoU, IouKind::DIoU, IouKind::CIoU] {
            let p = bbox_iou(&a, &b, IouConfig::new(k)).unwrap().to_vec()[0];
            let q = bbox_iou(&ax, &bx, IouConfig::new(k).format(BoxFormat::Xyxy))
                .unwrap()
                .to_vec()[0];
            assert!((p - q).abs() < 1e-5, "{k:?} {p} {q}");
        }
    }

    #[test]
    fn alpha_one_and_alpha_three() {
        let a = t(&[1.0, 1.0, 2.0, 2.0]);
        let b = t(&[2.0, 2.0, 2.0, 2.0]);
        let plain = bbox_iou(&a, &b, IouConfig::new(IouKind::Iou))
            .unwrap()
            .to_vec()[0];
        let cubed = bbox_iou(&a, &b, IouConfig::new(IouKind::Iou).alpha(3.0))
            .unwrap()
            .to_vec()[0];
        assert!((cubed - plain.powi(3)).abs() < 1e-5);
        let d3 = bbox_iou(&a, &b, IouConfig::new(IouKind::DIoU).alpha(3.0))
            .unwrap()
            .to_vec()[0];
        let want = (1.0f32 / 7.0).powi(3) - (2.0f32 / 18.0).powi(3);
        assert!((d3 - want).abs() < 1e-5, "{d3} {want}");
    }

    #[test]
    fn rejects_bad_shapes() {
        let a = Tensor::zeros(&[2, 3], Device::Cpu).unwrap();
        let e = bbox_iou(&a, &a, IouConfig::default()).unwrap_err();
        assert!(e.to_string().contains("box1"), "{e}");
    }

    #[test]
    fn atan_value_and_gradient() {
        let x = Tensor::from_vec(vec![-2.0, 0.0, 0.5, 3.0], &[4], Device::Cpu)
            .unwrap()
            .with_grad();
        let y = atan(&x).unwrap();
        for (a, b) in y.to_vec().iter().zip([-2.0f32, 0.0, 0.5, 3.0]) {
            assert!((a - b.atan()).abs() < 1e-7);
        }
        y.sum_all().unwrap().backward().unwrap();
        for (g, v) in x
            .grad()
            .unwrap()
            .to_vec()
            .iter()
            .zip([-2.0f32, 0.0, 0.5, 3.0])
        {
            assert!((g - 1.0 / (1.0 + v * v)).abs() < 1e-6);
        }
    }
}
