//! Test-time augmentation as upstream `Model._forward_augment` (models/yolo.py): the image at
//! scales 1, 0.83 (mirrored left–right) and 0.67, each prediction mapped back to the input's
//! pixels (`_descale_pred`), the tails each scale sees worst dropped (`_clip_augmented`), and
//! the three sets concatenated for the usual NMS.

use crate::error::{invalid, Result, TrainError};
use crate::scale::{flip_lr, scale_img};
use std::ops::Range;
use yolo_models::Model;
use yolo_tensor::Tensor;

/// Upstream's TTA passes: `(scale, mirrored left–right)`.
pub const TTA_PASSES: [(f64, bool); 3] = [(1.0, false), (0.83, true), (0.67, false)];

/// The grid size inputs must be multiples of: the model's largest stride, at least 32
/// (upstream `gs = max(int(model.stride.max()), 32)`).
pub fn max_stride(model: &Model) -> usize {
    model.stride.iter().cloned().fold(32.0f32, f32::max) as usize
}

/// Upstream `_descale_pred` on rows of `no` values `[x, y, w, h, …]` (input pixels): the box
/// divided by `scale`, then with `flip_width = Some(W)` mirrored back (`x = W − x`) for a pass
/// on a left–right flipped image `W` pixels wide.
pub fn descale_pred(rows: &mut [f32], no: usize, scale: f32, flip_width: Option<f32>) {
    if no < 4 {
        return;
    }
    for r in rows.chunks_exact_mut(no) {
        for v in &mut r[..4] {
            *v /= scale;
        }
        if let Some(w) = flip_width {
            r[0] = w - r[0];
        }
    }
}

/// Upstream `_clip_augmented` as row ranges: given the prediction count of each pass (pass 0 at
/// full scale, the last at the smallest) and `nl` detection levels, the first pass loses its
/// last `n/g` rows (the coarsest level, large objects) and the last pass its first
/// `n/g · 4^(nl−1)` rows (the finest level), with `g = Σ 4^k, k < nl`.
///
/// Unlike Python's `y[0][:, :-0]`, a count below `g` (no level left to drop) keeps every row.
pub fn clip_augmented(counts: &[usize], nl: usize) -> Vec<Range<usize>> {
    let mut r: Vec<Range<usize>> = counts.iter().map(|&n| 0..n).collect();
    if counts.is_empty() || nl == 0 {
        return r;
    }
    let g: usize = (0..nl).map(|k| 4usize.pow(k as u32)).sum();
    let n0 = counts[0];
    r[0].end = n0 - n0 / g; // e = 1: sum(4**x for x in range(1)) = 1
    let last = counts.len() - 1;
    let nz = counts[last];
    let start = (nz / g) * 4usize.pow(nl as u32 - 1);
    r[last].start = start.min(r[last].end);
    r
}

/// TTA with any inference forward: `forward(x)` maps an N×3×H×W batch to decoded predictions
/// N×n×(nc+5) (xywh in input pixels); `nl` is its number of detection levels and `gs` the
/// stride the scaled images are padded to. Returns N×(Σ kept rows)×(nc+5), the layout of the
/// plain forward.
pub fn forward_augment_with(
    images: &Tensor,
    gs: usize,
    nl: usize,
    mut forward: impl FnMut(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let &[b, _, _, w] = images.shape() else {
        return invalid(
            "augment input",
            format!("expected an N×3×H×W batch, got {:?}", images.shape()),
        );
    };
    let mut parts = Vec::with_capacity(TTA_PASSES.len());
    let mut no = 0;
    for &(scale, flip) in &TTA_PASSES {
        let x = if flip {
            flip_lr(images)?
        } else {
            images.clone()
        };
        let xi = scale_img(&x, scale, false, gs)?;
        let p = forward(&xi)?;
        let &[pb, n, pno] = p.shape() else {
            return invalid(
                "augment prediction",
                format!("expected N×n×(nc+5), got {:?}", p.shape()),
            );
        };
        if pb != b || (no != 0 && pno != no) || pno < 5 {
            return invalid(
                "augment prediction",
                format!(
                    "shape {:?} for a batch of {b} ({no} values per row before)",
                    p.shape()
                ),
            );
        }
        no = pno;
        tracing::debug!(
            "TTA pass: scale {scale}, flip {flip}, input {:?}, {n} predictions",
            xi.shape()
        );
        let mut v = p.to_vec();
        descale_pred(&mut v, no, scale as f32, flip.then_some(w as f32));
        parts.push((v, n));
    }
    let counts: Vec<usize> = parts.iter().map(|p| p.1).collect();
    let ranges = clip_augmented(&counts, nl);
    let total: usize = ranges.iter().map(|r| r.len()).sum();
    let mut out = Vec::with_capacity(b * total * no);
    for k in 0..b {
        for ((v, n), r) in parts.iter().zip(&ranges) {
            let base = k * n * no;
            out.extend_from_slice(&v[base + r.start * no..base + r.end * no]);
        }
    }
    Ok(Tensor::from_vec(out, &[b, total, no], images.device())?)
}

/// Upstream `model(x, augment=True)`: [`forward_augment_with`] on `model`'s inference forward.
pub fn forward_augment(model: &Model, images: &Tensor, gs: usize) -> Result<Tensor> {
    let _g = yolo_tensor::no_grad();
    let nl = model.detect().nl();
    forward_augment_with(images, gs, nl, |x| {
        model.forward(x, false)?.pred.ok_or(TrainError::Invalid {
            what: "model",
            detail: "no inference output".into(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_tensor::Device;

    #[test]
    fn clip_augmented_index_arithmetic() {
        // nl 3, 64×64 at gs 32, na 3: levels 3·8·8 + 3·4·4 + 3·2·2 = 192 + 48 + 12 = 252 = 21·12
        let r = clip_augmented(&[252, 252, 252], 3);
        assert_eq!(r, vec![0..240, 0..252, 192..252]);
        // different counts per pass (e.g. 96×96 full scale, 64×64 smaller)
        let r = clip_augmented(&[567, 252, 252], 3);
        assert_eq!(r, vec![0..540, 0..252, 192..252]);
        // nl 4 (P6): g = 85; last pass drops 64·(n/85)
        let r = clip_augmented(&[85 * 3, 10, 85 * 2], 4);
        assert_eq!(r, vec![0..252, 0..10, 128..170]);
        // nl 1: g = 1 drops everything from the first and last pass, as upstream
        assert_eq!(clip_augmented(&[5, 5, 5], 1), vec![0..0, 0..5, 5..5]);
        assert_eq!(clip_augmented(&[3, 3, 3], 3), vec![0..3, 0..3, 0..3]);
        assert!(clip_augmented(&[], 3).is_empty());
    }

    #[test]
    fn descale_and_deflip_rows() {
        // rows [x, y, w, h, obj, cls]: scale 0.5, image 100 px wide, mirrored
        let mut v = vec![
            10.0, 20.0, 4.0, 6.0, 0.9, 0.8, 30.0, 5.0, 2.0, 2.0, 0.5, 0.1,
        ];
        descale_pred(&mut v, 6, 0.5, Some(100.0));
        assert_eq!(
            v,
            vec![80.0, 40.0, 8.0, 12.0, 0.9, 0.8, 40.0, 10.0, 4.0, 4.0, 0.5, 0.1]
        );
        let mut v = vec![83.0, 8.3, 16.6, 0.83, 1.0];
        descale_pred(&mut v, 5, 0.83, None);
        for (a, b) in v.iter().zip([100.0, 10.0, 20.0, 1.0, 1.0]) {
            assert!((a - b).abs() < 1e-4, "{a} vs {b}");
        }
    }

    /// A stand-in detector whose answer is known: every row reports the centroid of the bright
    /// (> 0.5) pixels of channel 0, one row per cell of three levels (strides 8, 16, 32).
    fn centroid_forward(x: &Tensor) -> Result<Tensor> {
        let s = x.shape().to_vec();
        let (b, h, w) = (s[0], s[2], s[3]);
        let v = x.to_vec();
        let n: usize = [8, 16, 32].iter().map(|st| (h / st) * (w / st)).sum();
        let mut out = Vec::new();
        for k in 0..b {
            let plane = &v[k * 3 * h * w..k * 3 * h * w + h * w];
            let (mut sx, mut sy, mut m) = (0.0, 0.0, 0.0);
            for (i, &p) in plane.iter().enumerate() {
                if p > 0.5 {
                    sx += p * ((i % w) as f32 + 0.5);
                    sy += p * ((i / w) as f32 + 0.5);
                    m += p;
                }
            }
            for r in 0..n {
                out.extend_from_slice(&[sx / m, sy / m, 6.0, 6.0, 0.9, r as f32]);
            }
        }
        Ok(Tensor::from_vec(out, &[b, n, 6], x.device())?)
    }

    #[test]
    fn every_pass_maps_back_to_the_original_position() {
        // two 64×128 images with a 6×6 bright square at different places
        let (h, w) = (64usize, 128usize);
        let spots = [(10usize, 20usize), (70, 40)];
        let mut v = vec![0f32; 2 * 3 * h * w];
        for (k, &(x0, y0)) in spots.iter().enumerate() {
            for c in 0..3 {
                for y in y0..y0 + 6 {
                    for x in x0..x0 + 6 {
                        v[((k * 3 + c) * h + y) * w + x] = 1.0;
                    }
                }
            }
        }
        let img = Tensor::from_vec(v, &[2, 3, h, w], Device::Cpu).unwrap();
        let p = forward_augment_with(&img, 32, 3, centroid_forward).unwrap();
        // full: 8·16 + 4·8 + 2·4 = 168 (drop 8); 0.83 → 64×128: 168; 0.67 → 64×96: 126
        // (keep the last 126 − 6·16 = 30)
        assert_eq!(p.shape(), &[2, 160 + 168 + 30, 6]);
        let rows = p.to_vec();
        for (k, &(x0, y0)) in spots.iter().enumerate() {
            let (cx, cy) = (x0 as f32 + 3.0, y0 as f32 + 3.0);
            for r in rows[k * 358 * 6..(k + 1) * 358 * 6].chunks_exact(6) {
                assert!(
                    (r[0] - cx).abs() < 1.5 && (r[1] - cy).abs() < 1.5,
                    "image {k}: ({}, {}) vs ({cx}, {cy})",
                    r[0],
                    r[1]
                );
                assert!(r[2] >= 6.0 && r[2] < 9.0, "w {}", r[2]);
            }
        }
        // the kept rows: the first pass's 0..160, all of the second, the last's 96..126
        let ids: Vec<f32> = rows[..358 * 6].chunks_exact(6).map(|r| r[5]).collect();
        assert_eq!(ids[159], 159.0);
        assert_eq!(ids[160], 0.0);
        assert_eq!(ids[327], 167.0);
        assert_eq!(ids[328], 96.0);
        assert_eq!(ids[357], 125.0);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let img = Tensor::ones(&[3, 8, 8], Device::Cpu).unwrap();
        assert!(forward_augment_with(&img, 32, 3, centroid_forward).is_err());
        let img = Tensor::ones(&[1, 3, 64, 64], Device::Cpu).unwrap();
        let flat = |x: &Tensor| Ok(Tensor::ones(&[x.shape()[0], 10], Device::Cpu)?);
        assert!(forward_augment_with(&img, 32, 3, flat).is_err());
    }

    #[test]
    fn yolov5n_augmented_output_is_the_three_clipped_parts() {
        let yaml = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../configs/models/yolov5n.yaml");
        let mut cfg = yolo_models::ModelConfig::from_file(&yaml).unwrap();
        cfg.nc = 2;
        let model = Model::new(cfg, 0).unwrap();
        let gs = max_stride(&model);
        assert_eq!(gs, 32);
        let v: Vec<f32> = (0..3 * 64 * 64).map(|i| (i % 97) as f32 / 97.0).collect();
        let img = Tensor::from_vec(v, &[1, 3, 64, 64], Device::Cpu).unwrap();
        let _g = yolo_tensor::no_grad();
        let plain = model.forward(&img, false).unwrap().pred.unwrap();
        assert_eq!(plain.shape(), &[1, 252, 7]); // 3·(8·8 + 4·4 + 2·2)
        let aug = forward_augment(&model, &img, gs).unwrap();
        // every pass sees 64×64 (0.83 and 0.67 pad back up): 252 − 12, 252, and 252 − 192
        assert_eq!(aug.shape(), &[1, 240 + 252 + 60, 7]);
        // the first part is the plain forward without its coarsest level
        let (a, p) = (aug.to_vec(), plain.to_vec());
        assert_eq!(&a[..240 * 7], &p[..240 * 7]);
    }
}
