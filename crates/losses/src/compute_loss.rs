//! YOLOv5 `ComputeLoss`: target assignment (`build_targets`) and the box/objectness/class loss.
//!
//! Semantics follow upstream `utils/loss.py`:
//! - every target is tried against every anchor of every level; it is kept where the larger of
//!   `w/anchor_w`, `anchor_w/w`, `h/anchor_h`, `anchor_h/h` is below `anchor_t`;
//! - besides its own cell, a kept target also goes to the two nearest neighbour cells (left or
//!   right, up or down) when its centre is within 0.5 of that edge and not in the border cell;
//! - box loss `1 − IoU` (CIoU by default) on decoded `xy = 2σ − 0.5`, `wh = (2σ)²·anchor`;
//! - objectness targets are the detached, clamped IoU (blended by `gr`), written per cell (a
//!   later target overwrites an earlier one in the same cell, as upstream's indexed assignment);
//! - levels weighted by `balance` (4, 1, 0.4 for three levels); class loss only when `nc > 1`;
//! - the total is `(box·lbox + obj·lobj + cls·lcls) × batch size`.

use crate::bce::{smooth_bce, BceLoss};
use crate::error::{invalid, Result};
use crate::iou::{bbox_iou, IouConfig, IouKind};
use yolo_tensor::Tensor;

/// The detection head as the loss needs it: plain values, no model types.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectSpec {
    /// Number of classes.
    pub nc: usize,
    /// Anchors per level, in grid units (pixels / stride), `[w, h]` each.
    pub anchors: Vec<Vec<[f32; 2]>>,
    /// Stride of each level in pixels.
    pub strides: Vec<f32>,
}

impl DetectSpec {
    /// A spec from anchors in pixels (as written in model YAML: `[w0, h0, w1, h1, …]` per level).
    pub fn from_pixel_anchors(nc: usize, anchors_px: &[Vec<f32>], strides: &[f32]) -> Result<Self> {
        if anchors_px.len() != strides.len() || anchors_px.is_empty() {
            return invalid(
                "DetectSpec anchors",
                format!(
                    "{} anchor levels for {} strides",
                    anchors_px.len(),
                    strides.len()
                ),
            );
        }
        let mut anchors = Vec::with_capacity(anchors_px.len());
        for (lvl, (a, &s)) in anchors_px.iter().zip(strides).enumerate() {
            if a.len() % 2 != 0 || a.is_empty() || s <= 0.0 {
                return invalid(
                    "DetectSpec anchors",
                    format!(
                        "level {lvl}: {} values (need w,h pairs), stride {s}",
                        a.len()
                    ),
                );
            }
            anchors.push(a.chunks(2).map(|p| [p[0] / s, p[1] / s]).collect());
        }
        let spec = DetectSpec {
            nc,
            anchors,
            strides: strides.to_vec(),
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Number of detection levels.
    pub fn nl(&self) -> usize {
        self.anchors.len()
    }

    /// Anchors per level.
    pub fn na(&self) -> usize {
        self.anchors.first().map_or(0, |a| a.len())
    }

    fn validate(&self) -> Result<()> {
        let na = self.na();
        if self.nl() == 0 || na == 0 {
            return invalid("DetectSpec anchors", "no anchors");
        }
        if self.anchors.iter().any(|a| a.len() != na) {
            return invalid(
                "DetectSpec anchors",
                "every level needs the same number of anchors",
            );
        }
        if self.strides.len() != self.nl() {
            return invalid(
                "DetectSpec strides",
                format!("{} strides for {} levels", self.strides.len(), self.nl()),
            );
        }
        if self.nc == 0 {
            return invalid("DetectSpec nc", "need at least one class");
        }
        Ok(())
    }
}

/// Loss hyper-parameters (the loss keys of upstream hyp YAML files).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossHyp {
    /// Box loss gain (`box`).
    pub box_gain: f32,
    /// Class loss gain (`cls`).
    pub cls_gain: f32,
    /// Objectness loss gain (`obj`).
    pub obj_gain: f32,
    /// Class BCE positive weight (`cls_pw`).
    pub cls_pw: f32,
    /// Objectness BCE positive weight (`obj_pw`).
    pub obj_pw: f32,
    /// Focal loss gamma, 0 = plain BCE (`fl_gamma`).
    pub fl_gamma: f32,
    /// Anchor-multiple threshold of the target assignment (`anchor_t`).
    pub anchor_t: f32,
    /// Label smoothing epsilon of the class targets (`label_smoothing`).
    pub label_smoothing: f32,
    /// Box loss IoU variant (upstream: CIoU).
    pub iou_kind: IouKind,
    /// Alpha-IoU power of the box loss (1 = off).
    pub iou_alpha: f32,
    /// IoU ratio of the objectness target: `(1 − gr) + gr·IoU` (upstream 1.0).
    pub gr: f32,
}

impl Default for LossHyp {
    /// `data/hyps/hyp.scratch-low.yaml`, before train.py's scaling.
    fn default() -> Self {
        LossHyp {
            box_gain: 0.05,
            cls_gain: 0.5,
            obj_gain: 1.0,
            cls_pw: 1.0,
            obj_pw: 1.0,
            fl_gamma: 0.0,
            anchor_t: 4.0,
            label_smoothing: 0.0,
            iou_kind: IouKind::CIoU,
            iou_alpha: 1.0,
            gr: 1.0,
        }
    }
}

impl LossHyp {
    /// The gains as train.py scales them: box ×3/nl, cls ×nc/80·3/nl, obj ×(imgsz/640)²·3/nl.
    pub fn scaled(mut self, nl: usize, nc: usize, imgsz: usize) -> Self {
        let l = 3.0 / nl as f32;
        self.box_gain *= l;
        self.cls_gain *= nc as f32 / 80.0 * l;
        self.obj_gain *= (imgsz as f32 / 640.0).powi(2) * l;
        self
    }
}

/// Targets assigned to one level (one entry per prediction that gets a target).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LevelTargets {
    /// Image index in the batch.
    pub b: Vec<usize>,
    /// Anchor index.
    pub a: Vec<usize>,
    /// Grid row (clamped to the grid).
    pub gj: Vec<usize>,
    /// Grid column (clamped to the grid).
    pub gi: Vec<usize>,
    /// Class.
    pub cls: Vec<usize>,
    /// Target box `[x − gi, y − gj, w, h]` in grid units.
    pub tbox: Vec<[f32; 4]>,
    /// The assigned anchor `[w, h]` in grid units.
    pub anchor: Vec<[f32; 2]>,
}

impl LevelTargets {
    /// Number of assigned targets.
    pub fn len(&self) -> usize {
        self.b.len()
    }
    /// Whether no target was assigned.
    pub fn is_empty(&self) -> bool {
        self.b.is_empty()
    }
}

/// `build_targets` output: per level, the assigned targets.
pub type BuiltTargets = Vec<LevelTargets>;

/// The loss and its detached components.
#[derive(Clone, Debug)]
pub struct LossOutput {
    /// `(lbox + lobj + lcls) × batch size`, shape `[1]`, differentiable.
    pub total: Tensor,
    /// Gained box loss (`hyp.box · lbox`).
    pub lbox: f32,
    /// Gained objectness loss.
    pub lobj: f32,
    /// Gained class loss.
    pub lcls: f32,
}

/// YOLOv5's `ComputeLoss`.
#[derive(Clone, Debug)]
pub struct ComputeLoss {
    spec: DetectSpec,
    hyp: LossHyp,
    balance: Vec<f32>,
}

const NEIGHBOUR: f32 = 0.5;

impl ComputeLoss {
    /// A loss for the head `spec` with hyper-parameters `hyp` (gains already scaled, see
    /// [`LossHyp::scaled`]).
    pub fn new(spec: DetectSpec, hyp: LossHyp) -> Result<Self> {
        spec.validate()?;
        let nl = spec.nl();
        let balance = if nl == 3 {
            vec![4.0, 1.0, 0.4]
        } else if nl <= 5 {
            [4.0, 1.0, 0.25, 0.06, 0.02][..nl].to_vec()
        } else {
            return invalid(
                "ComputeLoss levels",
                format!("upstream balance covers at most 5 levels, got {nl}"),
            );
        };
        if hyp.anchor_t.is_nan() || hyp.anchor_t <= 0.0 {
            return invalid(
                "LossHyp anchor_t",
                format!("must be positive, got {}", hyp.anchor_t),
            );
        }
        Ok(ComputeLoss { spec, hyp, balance })
    }

    /// The head description.
    pub fn spec(&self) -> &DetectSpec {
        &self.spec
    }

    /// The hyper-parameters.
    pub fn hyp(&self) -> &LossHyp {
        &self.hyp
    }

    /// Per-level objectness weights.
    pub fn balance(&self) -> &[f32] {
        &self.balance
    }

    /// Validates the raw head outputs: (batch size, (ny, nx) per level).
    pub(crate) fn check_preds(&self, preds: &[Tensor]) -> Result<(usize, Vec<(usize, usize)>)> {
        let (nl, na, no) = (self.spec.nl(), self.spec.na(), self.spec.nc + 5);
        if preds.len() != nl {
            return invalid(
                "predictions",
                format!("{} levels given, head has {nl}", preds.len()),
            );
        }
        let mut bs = None;
        let mut grids = Vec::with_capacity(nl);
        for (i, p) in preds.iter().enumerate() {
            let s = p.shape();
            if s.len() != 5 || s[1] != na || s[4] != no || bs.is_some_and(|b| b != s[0]) {
                return invalid(
                    "predictions",
                    format!(
                        "level {i} has shape {s:?}, expected [bs, {na}, ny, nx, {no}] with one bs"
                    ),
                );
            }
            bs = Some(s[0]);
            grids.push((s[2], s[3]));
        }
        Ok((bs.unwrap_or(0), grids))
    }

    /// Upstream `build_targets` for grids `(ny, nx)` per level and `targets` rows
    /// `[image, class, x, y, w, h]` (normalised xywh).
    pub fn build_targets(
        &self,
        grids: &[(usize, usize)],
        targets: &[[f32; 6]],
    ) -> Result<BuiltTargets> {
        self.build_targets_bias(grids, targets, NEIGHBOUR)
    }

    /// [`ComputeLoss::build_targets`] with neighbour-cell bias `g`: a target also goes to the
    /// cell on a side when its fractional position there is below `g` (upstream 0.5;
    /// YOLOv7's `find_5_positive` of the auxiliary head uses 1.0: all four neighbours).
    pub(crate) fn build_targets_bias(
        &self,
        grids: &[(usize, usize)],
        targets: &[[f32; 6]],
        g: f32,
    ) -> Result<BuiltTargets> {
        if grids.len() != self.spec.nl() {
            return invalid(
                "build_targets grids",
                format!("{} grids for {} levels", grids.len(), self.spec.nl()),
            );
        }
        for (k, t) in targets.iter().enumerate() {
            if !t.iter().all(|v| v.is_finite()) || t[0] < 0.0 || t[1] < 0.0 {
                return invalid("targets", format!("row {k} is invalid: {t:?}"));
            }
            if t[1] as usize >= self.spec.nc {
                return invalid(
                    "targets",
                    format!("row {k}: class {} ≥ nc {}", t[1], self.spec.nc),
                );
            }
        }
        const OFF: [[f32; 2]; 5] = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]];
        let mut out = Vec::with_capacity(grids.len());
        for (lvl, &(ny, nx)) in grids.iter().enumerate() {
            let anchors = &self.spec.anchors[lvl];
            let (gx_gain, gy_gain) = (nx as f32, ny as f32);
            // Candidates in upstream order: anchor-major, then target.
            struct Cand {
                t: [f32; 6],
                a: usize,
                flags: [bool; 5],
            }
            let mut cands = Vec::new();
            for (a, anc) in anchors.iter().enumerate() {
                for t in targets {
                    let (w, h) = (t[4] * gx_gain, t[5] * gy_gain);
                    let (rw, rh) = (w / anc[0], h / anc[1]);
                    let m = rw.max(1.0 / rw).max(rh.max(1.0 / rh));
                    // NaN ratios (zero-size targets) fail the test, as upstream's `<`
                    if m.is_nan() || m >= self.hyp.anchor_t {
                        continue;
                    }
                    let (gx, gy) = (t[2] * gx_gain, t[3] * gy_gain);
                    let (ix, iy) = (gx_gain - gx, gy_gain - gy);
                    let flags = [
                        true,
                        gx.rem_euclid(1.0) < g && gx > 1.0,
                        gy.rem_euclid(1.0) < g && gy > 1.0,
                        ix.rem_euclid(1.0) < g && ix > 1.0,
                        iy.rem_euclid(1.0) < g && iy > 1.0,
                    ];
                    cands.push(Cand {
                        t: [t[0], t[1], gx, gy, w, h],
                        a,
                        flags,
                    });
                }
            }
            let mut lt = LevelTargets::default();
            for (o, off) in OFF.iter().enumerate() {
                for c in cands.iter().filter(|c| c.flags[o]) {
                    let (gx, gy) = (c.t[2], c.t[3]);
                    // `.long()` truncates toward zero; then the indices are clamped in place,
                    // and the clamped values also enter the box offsets.
                    let gi = ((gx - off[0] * g).trunc() as i64).clamp(0, nx as i64 - 1);
                    let gj = ((gy - off[1] * g).trunc() as i64).clamp(0, ny as i64 - 1);
                    lt.b.push(c.t[0] as usize);
                    lt.cls.push(c.t[1] as usize);
                    lt.a.push(c.a);
                    lt.gi.push(gi as usize);
                    lt.gj.push(gj as usize);
                    lt.tbox
                        .push([gx - gi as f32, gy - gj as f32, c.t[4], c.t[5]]);
                    lt.anchor.push(anchors[c.a]);
                }
            }
            out.push(lt);
        }
        Ok(out)
    }

    /// The loss of raw head outputs `preds` (per level `[bs, na, ny, nx, nc+5]`) against
    /// `targets` `[nt, 6]` rows `[image, class, x, y, w, h]` (normalised).
    pub fn forward(&self, preds: &[Tensor], targets: &Tensor) -> Result<LossOutput> {
        self.forward_rows(preds, &target_rows(targets)?)
    }

    /// [`ComputeLoss::forward`] with targets given as host rows.
    pub fn forward_rows(&self, preds: &[Tensor], targets: &[[f32; 6]]) -> Result<LossOutput> {
        let (bs, grids) = self.check_preds(preds)?;
        if let Some(t) = targets.iter().find(|t| t[0] as usize >= bs) {
            return invalid("targets", format!("image index {} ≥ batch size {bs}", t[0]));
        }
        let built = self.build_targets(&grids, targets)?;
        self.loss_from_targets(preds, bs, &grids, &built)
    }

    /// The box, objectness and class losses of `preds` for assigned targets `built` (shared by
    /// the YOLOv5 assignment and YOLOv7's SimOTA).
    pub(crate) fn loss_from_targets(
        &self,
        preds: &[Tensor],
        bs: usize,
        grids: &[(usize, usize)],
        built: &[LevelTargets],
    ) -> Result<LossOutput> {
        self.loss_from_heads(&[(preds, built, 1.0)], bs, grids)
    }

    /// [`ComputeLoss::loss_from_targets`] summed over several heads on the same grids, each
    /// `(predictions, assigned targets, weight)`: per level, every head's box, objectness and
    /// class terms are added with its weight (YOLOv7's auxiliary head weighs 0.25).
    pub(crate) fn loss_from_heads(
        &self,
        heads: &[(&[Tensor], &[LevelTargets], f32)],
        bs: usize,
        grids: &[(usize, usize)],
    ) -> Result<LossOutput> {
        let (na, nc) = (self.spec.na(), self.spec.nc);
        let no = nc + 5;
        let (cp, cn) = smooth_bce(self.hyp.label_smoothing);
        let bce_cls = BceLoss::new(self.hyp.cls_pw).focal(self.hyp.fl_gamma);
        let bce_obj = BceLoss::new(self.hyp.obj_pw).focal(self.hyp.fl_gamma);
        let iou_cfg = IouConfig::new(self.hyp.iou_kind).alpha(self.hyp.iou_alpha);
        let dev = heads
            .first()
            .and_then(|h| h.0.first())
            .map(|t| t.device())
            .unwrap_or(yolo_tensor::Device::Cpu);

        let mut lbox: Option<Tensor> = None;
        let mut lcls: Option<Tensor> = None;
        let mut lobj: Option<Tensor> = None;
        let acc = |slot: &mut Option<Tensor>, v: Tensor, w: f32| -> Result<()> {
            let v = if w == 1.0 { v } else { v.mul_scalar(w) };
            *slot = Some(match slot.take() {
                None => v,
                Some(s) => s.add(&v)?,
            });
            Ok(())
        };

        for (lvl, &(ny, nx)) in grids.iter().enumerate() {
            for &(preds, built, w) in heads {
                let (pi, lt) = (&preds[lvl], &built[lvl]);
                let cells = bs * na * ny * nx;
                let mut tobj = vec![0.0f32; cells];
                let n = lt.len();
                if n > 0 {
                    let flat: Vec<usize> = (0..n)
                        .map(|k| ((lt.b[k] * na + lt.a[k]) * ny + lt.gj[k]) * nx + lt.gi[k])
                        .collect();
                    let ps = pi.reshape(&[cells, no])?.index_select(0, &flat)?;
                    let pxy = ps.narrow(1, 0, 2)?.sigmoid().affine(2.0, -0.5);
                    let anch: Vec<f32> = lt.anchor.iter().flatten().copied().collect();
                    let anch = Tensor::from_vec(anch, &[n, 2], dev)?;
                    let pwh = ps
                        .narrow(1, 2, 2)?
                        .sigmoid()
                        .mul_scalar(2.0)
                        .sqr()
                        .mul(&anch)?;
                    let pbox = Tensor::concat(&[&pxy, &pwh], 1)?;
                    let tb: Vec<f32> = lt.tbox.iter().flatten().copied().collect();
                    let tbox = Tensor::from_vec(tb, &[n, 4], dev)?;
                    let iou = bbox_iou(&pbox, &tbox, iou_cfg)?; // [n, 1]
                    acc(&mut lbox, iou.affine(-1.0, 1.0).mean_all()?, w)?;

                    // Indexed assignment: a later match of the same cell overwrites an earlier one.
                    let gr = self.hyp.gr;
                    for (k, &v) in iou.to_vec().iter().enumerate() {
                        let v = v.max(0.0);
                        tobj[flat[k]] = if gr < 1.0 { (1.0 - gr) + gr * v } else { v };
                    }

                    if nc > 1 {
                        let pcls = ps.narrow(1, 5, nc)?;
                        let mut t = vec![cn; n * nc];
                        for (k, &c) in lt.cls.iter().enumerate() {
                            t[k * nc + c] = cp;
                        }
                        let t = Tensor::from_vec(t, &[n, nc], dev)?;
                        acc(&mut lcls, bce_cls.forward(&pcls, &t)?, w)?;
                    }
                }
                let pobj = pi.narrow(-1, 4, 1)?;
                let tobj = Tensor::from_vec(tobj, pobj.shape(), dev)?;
                let obji = bce_obj.forward(&pobj, &tobj)?;
                acc(&mut lobj, obji.mul_scalar(self.balance[lvl]), w)?;
            }
        }

        let zero = || Tensor::zeros(&[], dev);
        let lbox = lbox.map_or_else(zero, Ok)?.mul_scalar(self.hyp.box_gain);
        let lobj = lobj.map_or_else(zero, Ok)?.mul_scalar(self.hyp.obj_gain);
        let lcls = lcls.map_or_else(zero, Ok)?.mul_scalar(self.hyp.cls_gain);
        let total = lbox
            .add(&lobj)?
            .add(&lcls)?
            .mul_scalar(bs as f32)
            .reshape(&[1])?;
        Ok(LossOutput {
            total,
            lbox: lbox.item()?,
            lobj: lobj.item()?,
            lcls: lcls.item()?,
        })
    }
}

/// Target rows `[image, class, x, y, w, h]` of an `[nt, 6]` tensor.
pub(crate) fn target_rows(targets: &Tensor) -> Result<Vec<[f32; 6]>> {
    if targets.rank() != 2 || targets.shape()[1] != 6 {
        return invalid(
            "targets",
            format!("expected [nt, 6], got {:?}", targets.shape()),
        );
    }
    Ok(targets
        .to_vec()
        .chunks(6)
        .map(|c| [c[0], c[1], c[2], c[3], c[4], c[5]])
        .collect())
}
