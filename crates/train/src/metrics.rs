//! Detection metrics as upstream YOLOv5 (`utils/metrics.py`, `val.py`).
//!
//! - [`process_batch`]: which detections are true positives at each IoU threshold (0.50:0.95),
//!   with upstream's one-to-one matching (highest IoU first per detection, then one detection
//!   per label).
//! - [`ap_per_class`]: precision/recall curves per class, AP by 101-point interpolation
//!   ([`compute_ap`]), and P, R, F1 at the confidence of the best smoothed mean F1.
//! - [`MetricsAccumulator`]: collects per-image statistics as val.py does and summarises them
//!   into mP, mR, mAP@0.5, mAP@0.5:0.95 and [`fitness`].
//! - [`ConfusionMatrix`], and COCO JSON entries ([`coco_json_entries`]).

use crate::error::{invalid, Result};
use crate::postprocess::Detection;

/// The ten COCO IoU thresholds 0.50, 0.55, …, 0.95 (`torch.linspace(0.5, 0.95, 10)` in float32).
pub fn iou_thresholds() -> Vec<f32> {
    (0..10).map(|i| 0.5 + 0.05 * i as f32).collect()
}

/// Pairwise IoU of xyxy boxes `a` (rows) and `b` (columns), row-major `a.len() × b.len()`,
/// as upstream `box_iou` (float32, eps 1e-7 in the union).
pub fn box_iou(a: &[[f32; 4]], b: &[[f32; 4]]) -> Vec<f32> {
    let mut out = Vec::with_capacity(a.len() * b.len());
    for p in a {
        let ap = (p[2] - p[0]) * (p[3] - p[1]);
        for q in b {
            let w = (p[2].min(q[2]) - p[0].max(q[0])).max(0.0);
            let h = (p[3].min(q[3]) - p[1].max(q[1])).max(0.0);
            let inter = w * h;
            let aq = (q[2] - q[0]) * (q[3] - q[1]);
            out.push(inter / (ap + aq - inter + 1e-7));
        }
    }
    out
}

/// Upstream's dedup: sort matches `(label, det, iou)` by IoU descending, keep the first match
/// of each detection, then (in detection order) the first match of each label.
fn dedup_matches(m: &mut Vec<(usize, usize, f32)>, resort: bool) {
    if m.len() <= 1 {
        return;
    }
    m.sort_by(|a, b| b.2.total_cmp(&a.2));
    first_by(m, |x| x.1);
    if resort {
        m.sort_by(|a, b| b.2.total_cmp(&a.2));
    }
    first_by(m, |x| x.0);
}

/// `m[np.unique(key(m), return_index=True)[1]]`: first occurrence per key, sorted by key.
fn first_by(m: &mut Vec<(usize, usize, f32)>, key: impl Fn(&(usize, usize, f32)) -> usize) {
    let mut idx: Vec<usize> = (0..m.len()).collect();
    idx.sort_by_key(|&i| (key(&m[i]), i));
    idx.dedup_by_key(|i| key(&m[*i]));
    *m = idx.into_iter().map(|i| m[i]).collect();
}

/// Upstream `process_batch`: for detections `[x1, y1, x2, y2, conf, cls]` and labels
/// `[cls, x1, y1, x2, y2]`, the correct matrix `dets × iouv` (row-major).
pub fn process_batch(dets: &[Detection], labels: &[[f32; 5]], iouv: &[f32]) -> Vec<bool> {
    let (n, m, t) = (dets.len(), labels.len(), iouv.len());
    let mut correct = vec![false; n * t];
    if n == 0 || m == 0 {
        return correct;
    }
    let lb: Vec<[f32; 4]> = labels.iter().map(|l| [l[1], l[2], l[3], l[4]]).collect();
    let db: Vec<[f32; 4]> = dets.iter().map(|d| [d[0], d[1], d[2], d[3]]).collect();
    let iou = box_iou(&lb, &db);
    let mut cand: Vec<(usize, usize, f32)> = Vec::new();
    for (li, l) in labels.iter().enumerate() {
        for (di, d) in dets.iter().enumerate() {
            if l[0] == d[5] {
                cand.push((li, di, iou[li * n + di]));
            }
        }
    }
    let mut matches = Vec::new();
    for (k, &thr) in iouv.iter().enumerate() {
        matches.clear();
        matches.extend(cand.iter().copied().filter(|c| c.2 >= thr));
        dedup_matches(&mut matches, false);
        for &(_, di, _) in &matches {
            correct[di * t + k] = true;
        }
    }
    correct
}

/// `np.interp(x, xp, fp, left, right)` for non-decreasing `xp`.
fn interp(x: f64, xp: &[f64], fp: &[f64], left: f64, right: f64) -> f64 {
    let n = xp.len();
    if n == 0 {
        return f64::NAN;
    }
    if x < xp[0] {
        return left;
    }
    if x > xp[n - 1] {
        return right;
    }
    if x == xp[n - 1] {
        return fp[n - 1];
    }
    // last j with xp[j] <= x
    let j = xp.partition_point(|&v| v <= x) - 1;
    if xp[j] == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    let v = slope * (x - xp[j]) + fp[j];
    if v.is_nan() {
        slope * (x - xp[j + 1]) + fp[j + 1]
    } else {
        v
    }
}

/// `np.linspace(0, 1, num)`.
fn linspace01(num: usize) -> Vec<f64> {
    let step = 1.0 / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step).collect();
    v[num - 1] = 1.0;
    v
}

/// Upstream `compute_ap`: AP of one recall/precision curve by 101-point interpolation of the
/// precision envelope (COCO); returns `(ap, mpre, mrec)`.
pub fn compute_ap(recall: &[f64], precision: &[f64]) -> (f64, Vec<f64>, Vec<f64>) {
    let mut mrec = Vec::with_capacity(recall.len() + 2);
    mrec.push(0.0);
    mrec.extend_from_slice(recall);
    mrec.push(1.0);
    let mut mpre = Vec::with_capacity(precision.len() + 2);
    mpre.push(1.0);
    mpre.extend_from_slice(precision);
    mpre.push(0.0);
    for i in (0..mpre.len() - 1).rev() {
        mpre[i] = mpre[i].max(mpre[i + 1]);
    }
    let x = linspace01(101);
    let y: Vec<f64> = x
        .iter()
        .map(|&xi| interp(xi, &mrec, &mpre, mpre[0], mpre[mpre.len() - 1]))
        .collect();
    let ap = (0..x.len() - 1)
        .map(|i| (x[i + 1] - x[i]) * (y[i + 1] + y[i]) / 2.0)
        .sum();
    (ap, mpre, mrec)
}

/// Upstream `smooth`: box filter of width fraction `f` (odd number of taps), edge-padded.
pub fn smooth(y: &[f64], f: f64) -> Vec<f64> {
    if y.is_empty() {
        return Vec::new();
    }
    let nf = ((y.len() as f64 * f * 2.0).round_ties_even() as usize) / 2 + 1;
    let pad = nf / 2;
    let mut yp = Vec::with_capacity(y.len() + 2 * pad);
    yp.extend(std::iter::repeat_n(y[0], pad));
    yp.extend_from_slice(y);
    yp.extend(std::iter::repeat_n(y[y.len() - 1], pad));
    let w = 1.0 / nf as f64;
    (0..y.len())
        .map(|k| yp[k..k + nf].iter().map(|v| v * w).sum())
        .collect()
}

/// `ap_per_class` output: per class with labels (sorted class ids).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApPerClass {
    /// True positives at the best-F1 confidence (`round(r · n_labels)`).
    pub tp: Vec<f64>,
    /// False positives at the best-F1 confidence.
    pub fp: Vec<f64>,
    /// Precision at the best-F1 confidence.
    pub p: Vec<f64>,
    /// Recall at the best-F1 confidence.
    pub r: Vec<f64>,
    /// F1 at the best-F1 confidence.
    pub f1: Vec<f64>,
    /// AP per class and IoU threshold, row-major `classes × niou`.
    pub ap: Vec<f64>,
    /// Number of IoU thresholds (columns of `ap`).
    pub niou: usize,
    /// The class ids (those with at least one label), ascending.
    pub classes: Vec<usize>,
    /// The x axis of the curves below: 1000 points `linspace(0, 1)` (recall for
    /// [`Self::pr_curve`], confidence for the others); empty when there are no classes.
    pub curve_x: Vec<f64>,
    /// Per class row: precision (envelope) at recall `curve_x`, IoU 0.5 (upstream `py`).
    pub pr_curve: Vec<Vec<f64>>,
    /// Per class row: precision at confidence `curve_x` (upstream `p` before the best-F1 pick).
    pub p_curve: Vec<Vec<f64>>,
    /// Per class row: recall at confidence `curve_x` (upstream `r` before the best-F1 pick).
    pub r_curve: Vec<Vec<f64>>,
    /// Per class row: F1 at confidence `curve_x` (upstream `f1` before the best-F1 pick).
    pub f1_curve: Vec<Vec<f64>>,
}

impl ApPerClass {
    /// AP of class row `ci` at IoU column `j`.
    pub fn ap_at(&self, ci: usize, j: usize) -> f64 {
        self.ap[ci * self.niou + j]
    }
    /// AP@0.5 per class (first IoU column).
    pub fn ap50(&self) -> Vec<f64> {
        (0..self.classes.len()).map(|c| self.ap_at(c, 0)).collect()
    }
    /// AP@0.5:0.95 per class (mean over IoU columns).
    pub fn ap_mean(&self) -> Vec<f64> {
        (0..self.classes.len())
            .map(|c| (0..self.niou).map(|j| self.ap_at(c, j)).sum::<f64>() / self.niou as f64)
            .collect()
    }
}

/// Upstream `ap_per_class`: `tp` is the correct matrix (`n × niou`, row-major), `conf` and
/// `pred_cls` per detection, `target_cls` per label.
pub fn ap_per_class(
    tp: &[bool],
    niou: usize,
    conf: &[f32],
    pred_cls: &[f32],
    target_cls: &[f32],
) -> Result<ApPerClass> {
    let n = conf.len();
    if pred_cls.len() != n || tp.len() != n * niou || niou == 0 {
        return invalid(
            "ap_per_class",
            format!(
                "tp has {} values, conf {n}, pred_cls {}, niou {niou}: need tp = conf·niou",
                tp.len(),
                pred_cls.len()
            ),
        );
    }
    let eps = 1e-16;
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| conf[b].total_cmp(&conf[a]));

    let mut label_counts: std::collections::BTreeMap<i64, usize> = Default::default();
    for &c in target_cls {
        *label_counts.entry(c as i64).or_default() += 1;
    }
    let (classes, counts): (Vec<i64>, Vec<usize>) = label_counts.into_iter().unzip();
    let nc = classes.len();
    let px = linspace01(1000);
    let mut ap = vec![0.0; nc * niou];
    let mut p = vec![vec![0.0; 1000]; nc];
    let mut r = vec![vec![0.0; 1000]; nc];
    let mut pr_curve = vec![vec![0.0; 1000]; nc];

    // per class, the detections in confidence order
    let mut per_class: std::collections::HashMap<i64, Vec<usize>> = Default::default();
    for &i in &order {
        per_class.entry(pred_cls[i] as i64).or_default().push(i);
    }
    for (ci, &c) in classes.iter().enumerate() {
        let Some(idx) = per_class.get(&c) else {
            continue;
        };
        let n_l = counts[ci] as f64;
        let n_p = idx.len();
        if n_p == 0 || n_l == 0.0 {
            continue;
        }
        let xp: Vec<f64> = idx.iter().map(|&i| -(conf[i] as f64)).collect();
        let mut recall = vec![vec![0.0; n_p]; niou];
        let mut precision = vec![vec![0.0; n_p]; niou];
        for j in 0..niou {
            let (mut tpc, mut fpc) = (0.0f64, 0.0f64);
            for (k, &i) in idx.iter().enumerate() {
                if tp[i * niou + j] {
                    tpc += 1.0;
                } else {
                    fpc += 1.0;
                }
                recall[j][k] = tpc / (n_l + eps);
                precision[j][k] = tpc / (tpc + fpc);
            }
        }
        let (r_last, p_last) = (recall[0][n_p - 1], precision[0][n_p - 1]);
        for (k, &x) in px.iter().enumerate() {
            r[ci][k] = interp(-x, &xp, &recall[0], 0.0, r_last);
            p[ci][k] = interp(-x, &xp, &precision[0], 1.0, p_last);
        }
        for j in 0..niou {
            let (a, mpre, mrec) = compute_ap(&recall[j], &precision[j]);
            ap[ci * niou + j] = a;
            if j == 0 {
                let (first, last) = (mpre[0], mpre[mpre.len() - 1]);
                for (k, &x) in px.iter().enumerate() {
                    pr_curve[ci][k] = interp(x, &mrec, &mpre, first, last);
                }
            }
        }
    }
    let f1: Vec<Vec<f64>> = (0..nc)
        .map(|ci| {
            (0..1000)
                .map(|k| 2.0 * p[ci][k] * r[ci][k] / (p[ci][k] + r[ci][k] + eps))
                .collect()
        })
        .collect();
    let best = if nc == 0 {
        0
    } else {
        let mean: Vec<f64> = (0..1000)
            .map(|k| f1.iter().map(|row| row[k]).sum::<f64>() / nc as f64)
            .collect();
        let s = smooth(&mean, 0.1);
        let mut bi = 0;
        for (k, &v) in s.iter().enumerate() {
            if v > s[bi] {
                bi = k;
            }
        }
        bi
    };
    let pb: Vec<f64> = p.iter().map(|row| row[best]).collect();
    let rb: Vec<f64> = r.iter().map(|row| row[best]).collect();
    let fb: Vec<f64> = f1.iter().map(|row| row[best]).collect();
    let tpb: Vec<f64> = rb
        .iter()
        .zip(&counts)
        .map(|(r, &n)| (r * n as f64).round_ties_even())
        .collect();
    let fpb: Vec<f64> = tpb
        .iter()
        .zip(&pb)
        .map(|(t, p)| (t / (p + eps) - t).round_ties_even())
        .collect();
    Ok(ApPerClass {
        tp: tpb,
        fp: fpb,
        p: pb,
        r: rb,
        f1: fb,
        ap,
        niou,
        classes: classes.iter().map(|&c| c.max(0) as usize).collect(),
        curve_x: if nc == 0 { Vec::new() } else { px },
        pr_curve,
        p_curve: p,
        r_curve: r,
        f1_curve: f1,
    })
}

/// Upstream `fitness`: `0.1 · mAP@0.5 + 0.9 · mAP@0.5:0.95` (P and R weigh 0).
pub fn fitness(mp: f64, mr: f64, map50: f64, map: f64) -> f64 {
    0.0 * mp + 0.0 * mr + 0.1 * map50 + 0.9 * map
}

/// The validation summary (val.py's "all" row).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DetectionMetrics {
    /// Mean precision over classes.
    pub mp: f64,
    /// Mean recall over classes.
    pub mr: f64,
    /// mAP at IoU 0.5.
    pub map50: f64,
    /// mAP at IoU 0.5:0.95.
    pub map: f64,
    /// [`fitness`] of the above.
    pub fitness: f64,
    /// Per-class details (empty when no detection is correct).
    pub per_class: ApPerClass,
    /// Labels per class id (`np.bincount(target_cls, minlength=nc)`).
    pub labels_per_class: Vec<usize>,
}

/// Collects per-image statistics as val.py's loop does and summarises them.
#[derive(Clone, Debug, Default)]
pub struct MetricsAccumulator {
    iouv: Vec<f32>,
    correct: Vec<bool>,
    conf: Vec<f32>,
    pred_cls: Vec<f32>,
    target_cls: Vec<f32>,
    /// Images seen.
    pub seen: usize,
}

impl MetricsAccumulator {
    /// An accumulator over the COCO thresholds 0.50:0.95.
    pub fn new() -> Self {
        Self::with_thresholds(iou_thresholds())
    }

    /// An accumulator over IoU thresholds `iouv`.
    pub fn with_thresholds(iouv: Vec<f32>) -> Self {
        MetricsAccumulator {
            iouv,
            ..Default::default()
        }
    }

    /// Adds one image: its detections (after NMS, native pixels) and labels `[cls, x1, y1, x2, y2]`.
    pub fn add_image(&mut self, dets: &[Detection], labels: &[[f32; 5]]) {
        self.seen += 1;
        if dets.is_empty() {
            // upstream only records labels of images without detections
            self.target_cls.extend(labels.iter().map(|l| l[0]));
            return;
        }
        let c = process_batch(dets, labels, &self.iouv);
        self.correct.extend_from_slice(&c);
        self.conf.extend(dets.iter().map(|d| d[4]));
        self.pred_cls.extend(dets.iter().map(|d| d[5]));
        self.target_cls.extend(labels.iter().map(|l| l[0]));
    }

    /// The summary; zeros when no detection is correct (as upstream).
    pub fn compute(&self, nc: usize) -> Result<DetectionMetrics> {
        let mut labels_per_class = vec![0usize; nc];
        for &c in &self.target_cls {
            let c = c.max(0.0) as usize;
            if c >= labels_per_class.len() {
                labels_per_class.resize(c + 1, 0);
            }
            labels_per_class[c] += 1;
        }
        let mut m = DetectionMetrics {
            labels_per_class,
            ..Default::default()
        };
        if !self.correct.iter().any(|&b| b) {
            return Ok(m);
        }
        let niou = self.iouv.len();
        let pc = ap_per_class(
            &self.correct,
            niou,
            &self.conf,
            &self.pred_cls,
            &self.target_cls,
        )?;
        let k = pc.classes.len().max(1) as f64;
        m.mp = pc.p.iter().sum::<f64>() / k;
        m.mr = pc.r.iter().sum::<f64>() / k;
        m.map50 = pc.ap50().iter().sum::<f64>() / k;
        m.map = pc.ap_mean().iter().sum::<f64>() / k;
        m.fitness = fitness(m.mp, m.mr, m.map50, m.map);
        m.per_class = pc;
        Ok(m)
    }
}

/// Upstream `ConfusionMatrix`: rows predicted class (+ background), columns true class
/// (+ background), `(nc + 1)²` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfusionMatrix {
    /// Counts, `(nc + 1) × (nc + 1)` row-major.
    pub matrix: Vec<f64>,
    /// Number of classes.
    pub nc: usize,
    /// Minimum detection confidence.
    pub conf: f32,
    /// IoU needed to pair a detection with a label.
    pub iou_thres: f32,
}

impl ConfusionMatrix {
    /// An empty matrix with upstream's defaults (conf 0.25, IoU 0.45).
    pub fn new(nc: usize) -> Self {
        ConfusionMatrix {
            matrix: vec![0.0; (nc + 1) * (nc + 1)],
            nc,
            conf: 0.25,
            iou_thres: 0.45,
        }
    }

    fn bump(&mut self, row: usize, col: usize) {
        let k = self.nc + 1;
        if row < k && col < k {
            self.matrix[row * k + col] += 1.0;
        }
    }

    /// Updates the counts with one image (`dets` `None`: the image had no detections).
    pub fn process_batch(&mut self, dets: Option<&[Detection]>, labels: &[[f32; 5]]) {
        let bg = self.nc;
        let gt: Vec<usize> = labels.iter().map(|l| l[0] as usize).collect();
        let Some(dets) = dets else {
            for &g in &gt {
                self.bump(bg, g);
            }
            return;
        };
        let dets: Vec<&Detection> = dets.iter().filter(|d| d[4] > self.conf).collect();
        let dc: Vec<usize> = dets.iter().map(|d| d[5] as usize).collect();
        let lb: Vec<[f32; 4]> = labels.iter().map(|l| [l[1], l[2], l[3], l[4]]).collect();
        let db: Vec<[f32; 4]> = dets.iter().map(|d| [d[0], d[1], d[2], d[3]]).collect();
        let iou = box_iou(&lb, &db);
        let n = db.len();
        let mut matches: Vec<(usize, usize, f32)> = Vec::new();
        for li in 0..lb.len() {
            for di in 0..n {
                let v = iou[li * n + di];
                if v > self.iou_thres {
                    matches.push((li, di, v));
                }
            }
        }
        dedup_matches(&mut matches, true);
        let any = !matches.is_empty();
        for (i, &g) in gt.iter().enumerate() {
            let hits: Vec<&(usize, usize, f32)> = matches.iter().filter(|m| m.0 == i).collect();
            if any && hits.len() == 1 {
                self.bump(dc[hits[0].1], g);
            } else {
                self.bump(bg, g);
            }
        }
        if any {
            for (i, &c) in dc.iter().enumerate() {
                if !matches.iter().any(|m| m.1 == i) {
                    self.bump(c, bg);
                }
            }
        }
    }
}

/// The COCO 80-class index → COCO category id (1–90) map (upstream `coco80_to_coco91_class`).
pub fn coco80_to_91() -> Vec<u32> {
    vec![
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
        28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
        54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
        81, 82, 84, 85, 86, 87, 88, 89, 90,
    ]
}

fn round_to(v: f64, digits: i32) -> f64 {
    let s = 10f64.powi(digits);
    (v * s).round_ties_even() / s
}

/// Upstream `save_one_json`: COCO result entries `{image_id, category_id, bbox: [x, y, w, h],
/// score}` for one image's native-space detections; `image_id` is the file stem (a number
/// when it is all digits); `class_map` maps class index → category id (identity when empty).
pub fn coco_json_entries(
    image_stem: &str,
    dets: &[Detection],
    class_map: &[u32],
) -> Result<Vec<serde_json::Value>> {
    let image_id = if !image_stem.is_empty() && image_stem.bytes().all(|b| b.is_ascii_digit()) {
        match image_stem.parse::<u64>() {
            Ok(n) => serde_json::Value::from(n),
            Err(_) => serde_json::Value::from(image_stem),
        }
    } else {
        serde_json::Value::from(image_stem)
    };
    let mut out = Vec::with_capacity(dets.len());
    for d in dets {
        let c = d[5] as usize;
        let cat = if class_map.is_empty() {
            c as u32
        } else {
            match class_map.get(c) {
                Some(&v) => v,
                None => {
                    return invalid(
                        "coco_json class_map",
                        format!("class {c} not in a map of {} classes", class_map.len()),
                    )
                }
            }
        };
        let (w, h) = ((d[2] - d[0]) as f64, (d[3] - d[1]) as f64);
        let bbox = [d[0] as f64, d[1] as f64, w, h].map(|v| round_to(v, 3));
        out.push(serde_json::json!({
            "image_id": image_id,
            "category_id": cat,
            "bbox": bbox,
            "score": round_to(d[4] as f64, 5),
        }));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interp_matches_numpy_rules() {
        let xp = [0.0, 1.0, 1.0, 2.0];
        let fp = [0.0, 10.0, 20.0, 40.0];
        assert_eq!(interp(-1.0, &xp, &fp, -5.0, 99.0), -5.0);
        assert_eq!(interp(3.0, &xp, &fp, -5.0, 99.0), 99.0);
        assert_eq!(interp(0.5, &xp, &fp, 0.0, 0.0), 5.0);
        assert_eq!(interp(1.0, &xp, &fp, 0.0, 0.0), 20.0);
        assert_eq!(interp(1.5, &xp, &fp, 0.0, 0.0), 30.0);
        assert_eq!(interp(2.0, &xp, &fp, 0.0, 0.0), 40.0);
    }

    #[test]
    fn perfect_detector_ap_is_upstreams_0_995() {
        // the sentinel (recall 1, precision 0) wins at x = 1 in np.interp: upstream's known 0.995
        let (ap, _, _) = compute_ap(&[0.5, 1.0], &[1.0, 1.0]);
        assert!((ap - 0.995).abs() < 1e-12, "{ap}");
        let (ap, _, _) = compute_ap(&[0.5], &[1.0]);
        // envelope 1 up to recall 0.5, then linear down to 0 at recall 1
        assert!((ap - 0.75).abs() < 1e-9, "{ap}");
    }

    #[test]
    fn process_batch_one_to_one() {
        let labels = [[0.0, 0.0, 0.0, 10.0, 10.0]];
        let dets = [
            [0.0, 0.0, 10.0, 10.0, 0.9, 0.0],
            [0.0, 0.0, 10.0, 9.0, 0.8, 0.0],
            [0.0, 0.0, 10.0, 10.0, 0.7, 1.0],
        ];
        let c = process_batch(&dets, &labels, &[0.5]);
        assert_eq!(c, vec![true, false, false]);
    }

    #[test]
    fn coco_entries() {
        let e = coco_json_entries(
            "000042",
            &[[10.0, 20.0, 30.0, 60.0, 0.912_345_7, 1.0]],
            &coco80_to_91(),
        )
        .unwrap();
        assert_eq!(e[0]["image_id"], 42);
        assert_eq!(e[0]["category_id"], 2);
        assert_eq!(e[0]["bbox"], serde_json::json!([10.0, 20.0, 20.0, 40.0]));
        assert_eq!(e[0]["score"], 0.91235);
        assert!(coco_json_entries("a", &[[0.0, 0.0, 1.0, 1.0, 0.5, 3.0]], &[1, 2]).is_err());
    }
}
