//! Non-maximum suppression as upstream YOLOv5 `utils/general.py::non_max_suppression`, with
//! DIoU-NMS, Soft-NMS and merge-NMS as alternative suppression rules.
//!
//! Standard NMS reproduces upstream exactly: candidates with objectness above `conf_thres`,
//! confidence = objectness × class probability, best class (or every class above the threshold
//! with `multi_label`), the class filter, a descending confidence sort capped at `max_nms`,
//! torchvision's greedy NMS (suppress when IoU > `iou_thres`, IoU in float32 on boxes offset by
//! `class × max_wh`) and the `max_det` cap. Classes are bucketed before the greedy pass: with
//! the class offset, boxes of different classes never overlap, so this changes nothing but
//! speed. Upstream's wall-clock time limit is not reproduced (results must not depend on load).

use crate::error::{invalid, Result};
use yolo_tensor::Tensor;

/// One detection: `[x1, y1, x2, y2, confidence, class]`.
pub type Detection = [f32; 6];

/// How overlapping boxes are suppressed.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub enum NmsMethod {
    /// Greedy NMS: drop a box whose IoU with a kept box exceeds `iou_thres` (upstream).
    #[default]
    Standard,
    /// DIoU-NMS: drop a box whose DIoU (IoU − centre distance² / enclosing diagonal²) with a
    /// kept box exceeds `iou_thres`.
    DIoU,
    /// Soft-NMS, linear decay: overlapping scores are multiplied by `1 − IoU` when IoU exceeds
    /// `iou_thres`; boxes whose score falls below `score_thres` are dropped.
    SoftLinear {
        /// Drop threshold of decayed scores.
        score_thres: f32,
    },
    /// Soft-NMS, Gaussian decay: every overlapping score is multiplied by `exp(−IoU²/sigma)`;
    /// boxes whose score falls below `score_thres` are dropped.
    SoftGaussian {
        /// Width of the Gaussian.
        sigma: f32,
        /// Drop threshold of decayed scores.
        score_thres: f32,
    },
    /// Merge-NMS (upstream `merge = True`): greedy NMS, then each kept box becomes the
    /// score-weighted mean of the boxes it suppressed (IoU > `iou_thres`, itself included).
    Merge {
        /// Keep only boxes that merged at least one other box (upstream `redundant`).
        redundant: bool,
    },
}

/// Settings of [`non_max_suppression`] (defaults as upstream's signature).
#[derive(Clone, Debug, PartialEq)]
pub struct NmsConfig {
    /// Minimum objectness and confidence.
    pub conf_thres: f32,
    /// IoU threshold of suppression.
    pub iou_thres: f32,
    /// Keep only these classes (`None`: all).
    pub classes: Option<Vec<usize>>,
    /// Class-agnostic suppression.
    pub agnostic: bool,
    /// One detection per class above the threshold, not only the best class (ignored when nc = 1).
    pub multi_label: bool,
    /// Maximum detections per image.
    pub max_det: usize,
    /// Maximum boxes entering the suppression (upstream 30 000).
    pub max_nms: usize,
    /// Class offset in pixels (upstream `max_wh` = 7680).
    pub max_wh: f32,
    /// Suppression rule.
    pub method: NmsMethod,
}

impl Default for NmsConfig {
    fn default() -> Self {
        NmsConfig {
            conf_thres: 0.25,
            iou_thres: 0.45,
            classes: None,
            agnostic: false,
            multi_label: false,
            max_det: 300,
            max_nms: 30_000,
            max_wh: 7680.0,
            method: NmsMethod::Standard,
        }
    }
}

impl NmsConfig {
    fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.conf_thres) {
            return invalid(
                "NmsConfig conf_thres",
                format!("must be in [0, 1], got {}", self.conf_thres),
            );
        }
        if !(0.0..=1.0).contains(&self.iou_thres) {
            return invalid(
                "NmsConfig iou_thres",
                format!("must be in [0, 1], got {}", self.iou_thres),
            );
        }
        if let NmsMethod::SoftGaussian { sigma, .. } = self.method {
            if sigma.is_nan() || sigma <= 0.0 {
                return invalid("NmsConfig sigma", format!("must be positive, got {sigma}"));
            }
        }
        Ok(())
    }
}

/// `[x, y, w, h]` → `[x1, y1, x2, y2]` (upstream `xywh2xyxy`).
pub fn xywh2xyxy(b: [f32; 4]) -> [f32; 4] {
    let (hw, hh) = (b[2] / 2.0, b[3] / 2.0);
    [b[0] - hw, b[1] - hh, b[0] + hw, b[1] + hh]
}

/// IoU in float32 with torchvision's `nms` arithmetic (no eps).
#[inline]
fn tv_iou(a: &[f32; 4], area_a: f32, b: &[f32; 4], area_b: f32) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    inter / (area_a + area_b - inter)
}

#[inline]
fn area(b: &[f32; 4]) -> f32 {
    (b[2] - b[0]) * (b[3] - b[1])
}

fn diou(a: &[f32; 4], area_a: f32, b: &[f32; 4], area_b: f32) -> f32 {
    let iou = tv_iou(a, area_a, b, area_b);
    let cw = a[2].max(b[2]) - a[0].min(b[0]);
    let ch = a[3].max(b[3]) - a[1].min(b[1]);
    let c2 = cw * cw + ch * ch + 1e-7;
    let dx = (b[0] + b[2] - a[0] - a[2]) * 0.5;
    let dy = (b[1] + b[3] - a[1] - a[3]) * 0.5;
    iou - (dx * dx + dy * dy) / c2
}

/// Greedy NMS over boxes already sorted by descending score (torchvision semantics; boxes
/// xyxy): indices of the kept boxes in order. `overlap` decides suppression.
fn greedy_sorted(
    boxes: &[[f32; 4]],
    order: &[usize],
    thres: f32,
    use_diou: bool,
    limit: usize,
) -> Vec<usize> {
    let areas: Vec<f32> = order.iter().map(|&i| area(&boxes[i])).collect();
    let mut suppressed = vec![false; order.len()];
    let mut keep = Vec::new();
    for a in 0..order.len() {
        if suppressed[a] {
            continue;
        }
        keep.push(order[a]);
        if keep.len() >= limit {
            break;
        }
        let ba = &boxes[order[a]];
        for b in a + 1..order.len() {
            if suppressed[b] {
                continue;
            }
            let bb = &boxes[order[b]];
            let o = if use_diou {
                diou(ba, areas[a], bb, areas[b])
            } else {
                tv_iou(ba, areas[a], bb, areas[b])
            };
            if o > thres {
                suppressed[b] = true;
            }
        }
    }
    keep
}

/// torchvision `nms`: greedy suppression (IoU > `iou_thres`) of xyxy `boxes` in descending
/// `scores` order (ties keep input order); the indices kept, best first.
pub fn nms(boxes: &[[f32; 4]], scores: &[f32], iou_thres: f32) -> Result<Vec<usize>> {
    if boxes.len() != scores.len() {
        return invalid(
            "nms scores",
            format!("{} scores for {} boxes", scores.len(), boxes.len()),
        );
    }
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    Ok(greedy_sorted(boxes, &order, iou_thres, false, usize::MAX))
}

/// torchvision `batched_nms` (class-offset trick): [`nms`] within each class; kept indices in
/// descending score order.
pub fn batched_nms(
    boxes: &[[f32; 4]],
    scores: &[f32],
    classes: &[usize],
    iou_thres: f32,
) -> Result<Vec<usize>> {
    if boxes.len() != scores.len() || boxes.len() != classes.len() {
        return invalid(
            "batched_nms",
            format!(
                "{} boxes, {} scores, {} classes",
                boxes.len(),
                scores.len(),
                classes.len()
            ),
        );
    }
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut keep = Vec::new();
    for bucket in buckets(&order, |i| classes[i]) {
        keep.extend(greedy_sorted(boxes, &bucket, iou_thres, false, usize::MAX));
    }
    let rank = ranks(&order, boxes.len());
    keep.sort_by_key(|&i| rank[i]);
    Ok(keep)
}

/// Splits `order` into per-key lists, each keeping the order.
fn buckets(order: &[usize], key: impl Fn(usize) -> usize) -> Vec<Vec<usize>> {
    let mut map: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for &i in order {
        map.entry(key(i)).or_default().push(i);
    }
    map.into_values().collect()
}

fn ranks(order: &[usize], n: usize) -> Vec<usize> {
    let mut r = vec![0; n];
    for (k, &i) in order.iter().enumerate() {
        r[i] = k;
    }
    r
}

/// Upstream `non_max_suppression` on a prediction tensor `[bs, n, 5 + nc]` (xywh, objectness,
/// class probabilities): per image, the detections kept, best first.
pub fn non_max_suppression(pred: &Tensor, cfg: &NmsConfig) -> Result<Vec<Vec<Detection>>> {
    let s = pred.shape();
    if s.len() != 3 || s[2] < 6 {
        return invalid(
            "prediction",
            format!("expected [bs, n, 5 + nc] with nc ≥ 1, got {s:?}"),
        );
    }
    non_max_suppression_rows(&pred.to_vec(), s[0], s[1], s[2], cfg)
}

/// [`non_max_suppression`] on host data: `data` holds `bs × n` rows of `no = 5 + nc` values.
pub fn non_max_suppression_rows(
    data: &[f32],
    bs: usize,
    n: usize,
    no: usize,
    cfg: &NmsConfig,
) -> Result<Vec<Vec<Detection>>> {
    cfg.validate()?;
    if no < 6 || data.len() != bs * n * no {
        return invalid(
            "prediction",
            format!(
                "{} values for bs {bs} × {n} rows × {no} (need 5 + nc, nc ≥ 1)",
                data.len()
            ),
        );
    }
    let nc = no - 5;
    let multi_label = cfg.multi_label && nc > 1;
    let mut out = Vec::with_capacity(bs);
    for img in data.chunks_exact((n * no).max(1)).take(bs) {
        out.push(nms_image(img, no, nc, multi_label, cfg));
    }
    while out.len() < bs {
        out.push(Vec::new());
    }
    Ok(out)
}

fn nms_image(
    img: &[f32],
    no: usize,
    nc: usize,
    multi_label: bool,
    cfg: &NmsConfig,
) -> Vec<Detection> {
    let thr = cfg.conf_thres;
    let mut dets: Vec<Detection> = Vec::new();
    for row in img.chunks_exact(no) {
        let obj = row[4];
        if obj.is_nan() || obj <= thr {
            continue;
        }
        let b = xywh2xyxy([row[0], row[1], row[2], row[3]]);
        let cls = &row[5..5 + nc];
        if multi_label {
            for (j, &p) in cls.iter().enumerate() {
                let c = p * obj;
                if c > thr {
                    dets.push([b[0], b[1], b[2], b[3], c, j as f32]);
                }
            }
        } else {
            // torch.max: the first maximum
            let mut best = (f32::NEG_INFINITY, 0usize);
            for (j, &p) in cls.iter().enumerate() {
                let c = p * obj;
                if c > best.0 {
                    best = (c, j);
                }
            }
            if best.0 > thr {
                dets.push([b[0], b[1], b[2], b[3], best.0, best.1 as f32]);
            }
        }
    }
    if let Some(keep) = &cfg.classes {
        dets.retain(|d| keep.iter().any(|&c| c as f32 == d[5]));
    }
    if dets.is_empty() {
        return dets;
    }
    // stable descending sort by confidence, capped
    dets.sort_by(|a, b| b[4].total_cmp(&a[4]));
    dets.truncate(cfg.max_nms);
    let off = |d: &Detection| if cfg.agnostic { 0.0 } else { d[5] * cfg.max_wh };
    let boxes: Vec<[f32; 4]> = dets
        .iter()
        .map(|d| {
            let c = off(d);
            [d[0] + c, d[1] + c, d[2] + c, d[3] + c]
        })
        .collect();
    let order: Vec<usize> = (0..dets.len()).collect();
    let class_of = |i: usize| if cfg.agnostic { 0 } else { dets[i][5] as usize };
    let groups = buckets(&order, class_of);

    match cfg.method {
        NmsMethod::Standard | NmsMethod::DIoU => {
            let use_diou = cfg.method == NmsMethod::DIoU;
            let mut keep: Vec<usize> = groups
                .iter()
                .flat_map(|g| greedy_sorted(&boxes, g, cfg.iou_thres, use_diou, cfg.max_det))
                .collect();
            keep.sort_unstable();
            keep.truncate(cfg.max_det);
            keep.into_iter().map(|i| dets[i]).collect()
        }
        NmsMethod::Merge { redundant } => {
            let mut keep: Vec<usize> = groups
                .iter()
                .flat_map(|g| greedy_sorted(&boxes, g, cfg.iou_thres, false, usize::MAX))
                .collect();
            keep.sort_unstable();
            keep.truncate(cfg.max_det);
            let n = dets.len();
            if !(1 < n && n < 3000) {
                return keep.into_iter().map(|i| dets[i]).collect();
            }
            let mut out = Vec::with_capacity(keep.len());
            for &i in &keep {
                let (mut acc, mut wsum, mut count) = ([0.0f32; 4], 0.0f32, 0usize);
                let bi = &boxes[i];
                for j in 0..n {
                    // upstream's box_iou (with eps) on the offset boxes
                    let bj = &boxes[j];
                    let w = (bi[2].min(bj[2]) - bi[0].max(bj[0])).max(0.0);
                    let h = (bi[3].min(bj[3]) - bi[1].max(bj[1])).max(0.0);
                    let inter = w * h;
                    let iou = inter / (area(bi) + area(bj) - inter + 1e-7);
                    if iou > cfg.iou_thres {
                        let s = dets[j][4];
                        for k in 0..4 {
                            acc[k] += s * dets[j][k];
                        }
                        wsum += s;
                        count += 1;
                    }
                }
                if redundant && count <= 1 {
                    continue;
                }
                let mut d = dets[i];
                if wsum > 0.0 {
                    for k in 0..4 {
                        d[k] = acc[k] / wsum;
                    }
                }
                out.push(d);
            }
            out
        }
        NmsMethod::SoftLinear { score_thres } | NmsMethod::SoftGaussian { score_thres, .. } => {
            let mut out: Vec<Detection> = Vec::new();
            for g in &groups {
                let mut live: Vec<(usize, f32)> = g.iter().map(|&i| (i, dets[i][4])).collect();
                while !live.is_empty() {
                    let (bi, _) =
                        live.iter()
                            .enumerate()
                            .fold(
                                (0, f32::NEG_INFINITY),
                                |m, (k, &(_, s))| {
                                    if s > m.1 {
                                        (k, s)
                                    } else {
                                        m
                                    }
                                },
                            );
                    let (i, s) = live.swap_remove(bi);
                    let mut d = dets[i];
                    d[4] = s;
                    out.push(d);
                    let ai = area(&boxes[i]);
                    live.retain_mut(|(j, sj)| {
                        let iou = tv_iou(&boxes[i], ai, &boxes[*j], area(&boxes[*j]));
                        let w = match cfg.method {
                            NmsMethod::SoftGaussian { sigma, .. } => (-(iou * iou) / sigma).exp(),
                            _ if iou > cfg.iou_thres => 1.0 - iou,
                            _ => 1.0,
                        };
                        *sj *= w;
                        *sj >= score_thres
                    });
                }
            }
            out.sort_by(|a, b| b[4].total_cmp(&a[4]));
            out.truncate(cfg.max_det);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nms_keeps_best_of_overlapping_pair() {
        let boxes = [
            [0.0, 0.0, 10.0, 10.0],
            [1.0, 1.0, 11.0, 11.0],
            [50.0, 50.0, 60.0, 60.0],
        ];
        let keep = nms(&boxes, &[0.5, 0.9, 0.3], 0.5).unwrap();
        assert_eq!(keep, vec![1, 2]);
        // different classes never suppress each other
        let keep = batched_nms(&boxes, &[0.5, 0.9, 0.3], &[0, 1, 0], 0.5).unwrap();
        assert_eq!(keep, vec![1, 0, 2]);
    }

    fn rows() -> Vec<f32> {
        // xywh, obj, 2 classes
        vec![
            5.0, 5.0, 10.0, 10.0, 0.9, 0.9, 0.1, //
            6.0, 6.0, 10.0, 10.0, 0.8, 0.8, 0.2, //
            40.0, 40.0, 10.0, 10.0, 0.7, 0.2, 0.9, //
            41.0, 40.0, 10.0, 10.0, 0.1, 0.9, 0.9, // below conf
        ]
    }

    #[test]
    fn soft_nms_decays_instead_of_dropping() {
        let cfg = NmsConfig {
            conf_thres: 0.2,
            iou_thres: 0.3,
            method: NmsMethod::SoftLinear { score_thres: 0.01 },
            ..Default::default()
        };
        let out = non_max_suppression_rows(&rows(), 1, 4, 7, &cfg).unwrap();
        assert_eq!(out[0].len(), 3);
        let std = non_max_suppression_rows(
            &rows(),
            1,
            4,
            7,
            &NmsConfig {
                conf_thres: 0.2,
                iou_thres: 0.3,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(std[0].len(), 2);
        let g = NmsConfig {
            method: NmsMethod::SoftGaussian {
                sigma: 0.5,
                score_thres: 0.5,
            },
            ..cfg
        };
        let out = non_max_suppression_rows(&rows(), 1, 4, 7, &g).unwrap();
        // the overlapping box (IoU ≈ 0.68) decays from 0.64 below 0.5 and is dropped
        assert_eq!(out[0].len(), 2);
    }

    #[test]
    fn merge_averages_boxes() {
        let cfg = NmsConfig {
            conf_thres: 0.2,
            iou_thres: 0.3,
            method: NmsMethod::Merge { redundant: true },
            ..Default::default()
        };
        let out = non_max_suppression_rows(&rows(), 1, 4, 7, &cfg).unwrap();
        // the lone class-1 box is not redundant and goes; the merged box lies between the two
        assert_eq!(out[0].len(), 1);
        assert!(out[0][0][0] > 0.0 && out[0][0][0] < 1.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(non_max_suppression_rows(&[0.0; 5], 1, 1, 5, &NmsConfig::default()).is_err());
        let cfg = NmsConfig {
            iou_thres: 1.5,
            ..Default::default()
        };
        assert!(non_max_suppression_rows(&rows(), 1, 4, 7, &cfg).is_err());
    }
}
