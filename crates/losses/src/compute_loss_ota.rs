//! YOLOv7 `ComputeLossOTA`: SimOTA dynamic-k target assignment and the box/objectness/class loss.
//!
//! Semantics follow upstream `utils/loss.py` (WongKinYiu/yolov7):
//! - candidates are found as YOLOv5's `build_targets` does (`find_3_positive`: anchor ratio test,
//!   own cell plus the two nearest neighbour cells), see [`ComputeLoss::build_targets`];
//! - per image, every ground truth is scored against every candidate prediction of that image
//!   (all levels together): pairwise IoU of the decoded boxes in pixels, and a class cost, the BCE
//!   of `sqrt(σ(cls)·σ(obj))` against the one-hot class; cost = class BCE + 3·(−log(IoU + 1e-8));
//! - each ground truth takes its `k` cheapest candidates, `k = max(1, ⌊Σ top-10 IoU⌋)`; a
//!   candidate taken by several ground truths keeps only the cheapest one;
//! - the loss on the matched predictions is then the YOLOv5 one (CIoU box loss, IoU objectness
//!   targets, per-level balance, class BCE when `nc > 1`), total `(lbox + lobj + lcls) × bs`.
//!
//! The assignment is discrete and not differentiated; it is computed on the host in `f64`.
//! Upstream scales the normalised targets to pixels by the image height only (square training
//! images); [`ComputeLossOta`] does the same with the height of the given image size.

use crate::compute_loss::{
    target_rows, BuiltTargets, ComputeLoss, DetectSpec, LevelTargets, LossHyp, LossOutput,
};
use crate::error::{invalid, Result};
use yolo_tensor::Tensor;

/// YOLOv7's `ComputeLossOTA` (SimOTA assignment over YOLOv5-style candidates).
#[derive(Clone, Debug)]
pub struct ComputeLossOta {
    base: ComputeLoss,
}

/// Top-k size of the IoU sum that sets each ground truth's dynamic k.
const OTA_TOPK: usize = 10;
/// The same for `ComputeLossAuxOTA` (both of its assignments).
const AUX_OTA_TOPK: usize = 20;
/// Weight of the auxiliary head's loss terms.
const AUX_WEIGHT: f32 = 0.25;
/// Weight of the IoU cost against the class cost.
const IOU_COST: f64 = 3.0;

/// One candidate prediction of one image.
struct Cand {
    lvl: usize,
    /// Index into the level's `LevelTargets` from `find_3_positive`.
    k: usize,
    /// Decoded box `[x1, y1, x2, y2]` in pixels.
    xyxy: [f64; 4],
    /// `sqrt(σ(cls)·σ(obj))` per class.
    score: Vec<f64>,
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// `F.binary_cross_entropy_with_logits` of one logit against a 0/1 target.
fn bce_logit(x: f64, t: f64) -> f64 {
    x.max(0.0) - x * t + (-x.abs()).exp().ln_1p()
}

fn box_iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    inter / (area_a + area_b - inter)
}

fn xywh_to_xyxy(x: f64, y: f64, w: f64, h: f64) -> [f64; 4] {
    [x - w / 2.0, y - h / 2.0, x + w / 2.0, y + h / 2.0]
}

impl ComputeLossOta {
    /// A loss for the head `spec` with hyper-parameters `hyp` (gains already scaled, see
    /// [`LossHyp::scaled`]).
    pub fn new(spec: DetectSpec, hyp: LossHyp) -> Result<Self> {
        Ok(ComputeLossOta {
            base: ComputeLoss::new(spec, hyp)?,
        })
    }

    /// The head description.
    pub fn spec(&self) -> &DetectSpec {
        self.base.spec()
    }

    /// The hyper-parameters.
    pub fn hyp(&self) -> &LossHyp {
        self.base.hyp()
    }

    /// Per-level objectness weights.
    pub fn balance(&self) -> &[f32] {
        self.base.balance()
    }

    /// Upstream `build_targets`: the SimOTA assignment of `targets` rows
    /// `[image, class, x, y, w, h]` (normalised xywh) to the raw predictions `preds`
    /// (per level `[bs, na, ny, nx, nc+5]`) of images of size `img_size = [height, width]`.
    ///
    /// Per level, the matched predictions in upstream order (image, then candidate order); `tbox`
    /// is the matched target in grid units relative to the cell, `cls` its class.
    pub fn build_targets(
        &self,
        preds: &[Tensor],
        targets: &[[f32; 6]],
        img_size: [usize; 2],
    ) -> Result<BuiltTargets> {
        self.assign(preds, targets, img_size, 0.5, OTA_TOPK)
    }

    /// SimOTA over candidates found with neighbour bias `g` (0.5: `find_3_positive`, 1.0:
    /// `find_5_positive`), dynamic k from the sum of the `topk` best IoUs of each ground truth.
    fn assign(
        &self,
        preds: &[Tensor],
        targets: &[[f32; 6]],
        img_size: [usize; 2],
        g: f32,
        topk: usize,
    ) -> Result<BuiltTargets> {
        let (bs, grids) = self.base.check_preds(preds)?;
        if img_size[0] == 0 || img_size[1] == 0 {
            return invalid("image size", format!("{img_size:?}"));
        }
        if let Some(t) = targets.iter().find(|t| t[0] as usize >= bs) {
            return invalid("targets", format!("image index {} ≥ batch size {bs}", t[0]));
        }
        let cands = self.base.build_targets_bias(&grids, targets, g)?;
        let spec = self.spec();
        let (na, nc) = (spec.na(), spec.nc);
        let no = nc + 5;
        let host: Vec<Vec<f32>> = preds.iter().map(|p| p.to_vec()).collect();
        let scale = img_size[0] as f64;

        let mut out: BuiltTargets = vec![LevelTargets::default(); grids.len()];
        for b in 0..bs {
            let gts: Vec<&[f32; 6]> = targets.iter().filter(|t| t[0] as usize == b).collect();
            if gts.is_empty() {
                continue;
            }
            // Candidate predictions of this image, level-major in find_3_positive order.
            let mut cols: Vec<Cand> = Vec::new();
            for (lvl, lt) in cands.iter().enumerate() {
                let (ny, nx) = grids[lvl];
                let stride = spec.strides[lvl] as f64;
                for k in (0..lt.len()).filter(|&k| lt.b[k] == b) {
                    let cell = ((b * na + lt.a[k]) * ny + lt.gj[k]) * nx + lt.gi[k];
                    let p = &host[lvl][cell * no..(cell + 1) * no];
                    let s = |j: usize| sigmoid(p[j] as f64);
                    let x = (s(0) * 2.0 - 0.5 + lt.gi[k] as f64) * stride;
                    let y = (s(1) * 2.0 - 0.5 + lt.gj[k] as f64) * stride;
                    let w = (s(2) * 2.0).powi(2) * lt.anchor[k][0] as f64 * stride;
                    let h = (s(3) * 2.0).powi(2) * lt.anchor[k][1] as f64 * stride;
                    let obj = s(4);
                    let score = (0..nc).map(|c| (s(5 + c) * obj).sqrt()).collect();
                    cols.push(Cand {
                        lvl,
                        k,
                        xyxy: xywh_to_xyxy(x, y, w, h),
                        score,
                    });
                }
            }
            let m = cols.len();
            if m == 0 {
                continue;
            }
            let ng = gts.len();
            let mut cost = vec![0.0f64; ng * m];
            let mut dynamic_k = vec![1usize; ng];
            for (g, t) in gts.iter().enumerate() {
                let tb = xywh_to_xyxy(
                    t[2] as f64 * scale,
                    t[3] as f64 * scale,
                    t[4] as f64 * scale,
                    t[5] as f64 * scale,
                );
                let cls = t[1] as usize;
                let mut ious: Vec<f64> = cols.iter().map(|c| box_iou(&tb, &c.xyxy)).collect();
                for (c, col) in cols.iter().enumerate() {
                    let cls_cost: f64 = col
                        .score
                        .iter()
                        .enumerate()
                        .map(|(j, &y)| bce_logit((y / (1.0 - y)).ln(), (j == cls) as u8 as f64))
                        .sum();
                    cost[g * m + c] = cls_cost + IOU_COST * -(ious[c] + 1e-8).ln();
                }
                ious.sort_by(|a, b| b.total_cmp(a));
                let top: f64 = ious.iter().take(topk.min(m)).sum();
                dynamic_k[g] = (top as i64).max(1) as usize;
            }
            // Each gt takes its k cheapest candidates (ties: the earlier candidate).
            let mut matched: Vec<Vec<usize>> = vec![Vec::new(); m];
            for g in 0..ng {
                let row = &cost[g * m..(g + 1) * m];
                let mut order: Vec<usize> = (0..m).collect();
                order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
                for &c in order.iter().take(dynamic_k[g].min(m)) {
                    matched[c].push(g);
                }
            }
            for (c, col) in cols.iter().enumerate() {
                let g = match matched[c].len() {
                    0 => continue,
                    1 => matched[c][0],
                    // shared candidate: the cheapest gt over all gts (first on ties)
                    _ => (0..ng)
                        .min_by(|&a, &b| cost[a * m + c].total_cmp(&cost[b * m + c]))
                        .unwrap_or(0),
                };
                let t = gts[g];
                let lt = &cands[col.lvl];
                let (ny, nx) = grids[col.lvl];
                let (gi, gj) = (lt.gi[col.k], lt.gj[col.k]);
                let o = &mut out[col.lvl];
                o.b.push(b);
                o.a.push(lt.a[col.k]);
                o.gj.push(gj);
                o.gi.push(gi);
                o.cls.push(t[1] as usize);
                o.tbox.push([
                    t[2] * nx as f32 - gi as f32,
                    t[3] * ny as f32 - gj as f32,
                    t[4] * nx as f32,
                    t[5] * ny as f32,
                ]);
                o.anchor.push(lt.anchor[col.k]);
            }
        }
        Ok(out)
    }

    /// The loss of raw head outputs `preds` (per level `[bs, na, ny, nx, nc+5]`) against
    /// `targets` `[nt, 6]` rows `[image, class, x, y, w, h]` (normalised), for training images
    /// of size `img_size = [height, width]` in pixels.
    pub fn forward(
        &self,
        preds: &[Tensor],
        targets: &Tensor,
        img_size: [usize; 2],
    ) -> Result<LossOutput> {
        self.forward_rows(preds, &target_rows(targets)?, img_size)
    }

    /// [`ComputeLossOta::forward`] with targets given as host rows.
    pub fn forward_rows(
        &self,
        preds: &[Tensor],
        targets: &[[f32; 6]],
        img_size: [usize; 2],
    ) -> Result<LossOutput> {
        let built = self.build_targets(preds, targets, img_size)?;
        let (bs, grids) = self.base.check_preds(preds)?;
        self.base.loss_from_targets(preds, bs, &grids, &built)
    }
}

/// YOLOv7's `ComputeLossAuxOTA`, the loss of the `IAuxDetect` models (yolov7-w6/e6/d6/e6e):
/// the lead head is assigned by SimOTA over `find_3_positive` candidates, the auxiliary head by
/// SimOTA over the coarser `find_5_positive` candidates (all four neighbour cells), both scored
/// with the lead head's predictions and a top-20 IoU sum for the dynamic k; the auxiliary box,
/// objectness and class terms enter with weight 0.25.
#[derive(Clone, Debug)]
pub struct ComputeLossAuxOta {
    ota: ComputeLossOta,
}

impl ComputeLossAuxOta {
    /// A loss for the head `spec` (the lead levels; the auxiliary levels share their anchors and
    /// strides) with hyper-parameters `hyp` (gains already scaled).
    pub fn new(spec: DetectSpec, hyp: LossHyp) -> Result<Self> {
        Ok(ComputeLossAuxOta {
            ota: ComputeLossOta::new(spec, hyp)?,
        })
    }

    /// The head description.
    pub fn spec(&self) -> &DetectSpec {
        self.ota.spec()
    }

    /// The hyper-parameters.
    pub fn hyp(&self) -> &LossHyp {
        self.ota.hyp()
    }

    fn split<'a>(&self, preds: &'a [Tensor]) -> Result<(&'a [Tensor], &'a [Tensor])> {
        let nl = self.spec().nl();
        if preds.len() != 2 * nl {
            return invalid(
                "ComputeLossAuxOTA predictions",
                format!(
                    "expected {} levels (lead then auxiliary), got {}",
                    2 * nl,
                    preds.len()
                ),
            );
        }
        Ok(preds.split_at(nl))
    }

    /// The lead and auxiliary assignments of `targets` for `preds` = lead levels then auxiliary
    /// levels (each `[bs, na, ny, nx, nc+5]`), images of size `img_size = [height, width]`.
    pub fn build_targets(
        &self,
        preds: &[Tensor],
        targets: &[[f32; 6]],
        img_size: [usize; 2],
    ) -> Result<(BuiltTargets, BuiltTargets)> {
        let (lead, _) = self.split(preds)?;
        let aux = self
            .ota
            .assign(lead, targets, img_size, 1.0, AUX_OTA_TOPK)?;
        let main = self
            .ota
            .assign(lead, targets, img_size, 0.5, AUX_OTA_TOPK)?;
        Ok((main, aux))
    }

    /// The loss of `preds` (lead levels then auxiliary levels) against `targets` `[nt, 6]`.
    pub fn forward(
        &self,
        preds: &[Tensor],
        targets: &Tensor,
        img_size: [usize; 2],
    ) -> Result<LossOutput> {
        self.forward_rows(preds, &target_rows(targets)?, img_size)
    }

    /// [`ComputeLossAuxOta::forward`] with targets given as host rows.
    pub fn forward_rows(
        &self,
        preds: &[Tensor],
        targets: &[[f32; 6]],
        img_size: [usize; 2],
    ) -> Result<LossOutput> {
        let (main, aux) = self.build_targets(preds, targets, img_size)?;
        let (lead, auxp) = self.split(preds)?;
        let (bs, grids) = self.ota.base.check_preds(lead)?;
        let (bs_aux, grids_aux) = self.ota.base.check_preds(auxp)?;
        if bs_aux != bs || grids_aux != grids {
            return invalid(
                "ComputeLossAuxOTA predictions",
                format!("auxiliary levels {grids_aux:?} (batch {bs_aux}) differ from the lead levels {grids:?} (batch {bs})"),
            );
        }
        self.ota
            .base
            .loss_from_heads(&[(lead, &main, 1.0), (auxp, &aux, AUX_WEIGHT)], bs, &grids)
    }
}
