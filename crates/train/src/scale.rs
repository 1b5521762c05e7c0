//! Resizing whole NCHW batches as upstream does on tensors: bilinear interpolation with
//! PyTorch's `F.interpolate(mode='bilinear', align_corners=False)` semantics, `scale_img`
//! (resize, then pad to a stride multiple) for test-time augmentation, and the size choice of
//! multi-scale training (`train.py --multi-scale`).

use crate::error::{invalid, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yolo_data::rng::mix64;
use yolo_tensor::Tensor;

/// Grey value `scale_img` pads with (the ImageNet mean, upstream's 0.447).
pub const SCALE_IMG_PAD: f32 = 0.447;

/// Source taps of one output coordinate: `(i0, i1, w0, w1)`, PyTorch's `align_corners=False`
/// rule (source = (dst + ½)·in/out − ½, clamped at 0; the right neighbour clamped to the edge).
fn linear_taps(src: usize, dst: usize) -> Vec<(usize, usize, f32, f32)> {
    let scale = src as f32 / dst as f32;
    (0..dst)
        .map(|i| {
            let s = (scale * (i as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (s as usize).min(src - 1);
            let i1 = if i0 + 1 < src { i0 + 1 } else { i0 };
            let l1 = s - i0 as f32;
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// Bilinear resize of NCHW f32 data of `shape` to `out_hw = [height, width]`, as PyTorch's
/// `F.interpolate(x, size=out_hw, mode='bilinear', align_corners=False)`.
pub fn resize_bilinear_nchw(
    data: &[f32],
    shape: [usize; 4],
    out_hw: [usize; 2],
) -> Result<Vec<f32>> {
    let [n, c, h, w] = shape;
    let [oh, ow] = out_hw;
    if data.len() != n * c * h * w {
        return invalid(
            "resize input",
            format!("{} values for shape {shape:?}", data.len()),
        );
    }
    if h == 0 || w == 0 || oh == 0 || ow == 0 {
        return invalid(
            "resize size",
            format!("cannot resize {h}x{w} to {oh}x{ow} (a side is 0)"),
        );
    }
    if [oh, ow] == [h, w] {
        return Ok(data.to_vec());
    }
    let ty = linear_taps(h, oh);
    let tx = linear_taps(w, ow);
    let mut out = vec![0f32; n * c * oh * ow];
    for (src, dst) in data.chunks_exact(h * w).zip(out.chunks_exact_mut(oh * ow)) {
        for (row, &(y0, y1, wy0, wy1)) in dst.chunks_exact_mut(ow).zip(&ty) {
            let (r0, r1) = (&src[y0 * w..(y0 + 1) * w], &src[y1 * w..(y1 + 1) * w]);
            for (o, &(x0, x1, wx0, wx1)) in row.iter_mut().zip(&tx) {
                *o = wy0 * (wx0 * r0[x0] + wx1 * r0[x1]) + wy1 * (wx0 * r1[x0] + wx1 * r1[x1]);
            }
        }
    }
    Ok(out)
}

fn nchw(t: &Tensor, what: &'static str) -> Result<[usize; 4]> {
    match *t.shape() {
        [n, c, h, w] => Ok([n, c, h, w]),
        ref s => invalid(what, format!("expected an N×C×H×W tensor, got shape {s:?}")),
    }
}

/// [`resize_bilinear_nchw`] on a tensor (no gradient: the result is a new leaf).
pub fn interpolate_bilinear(t: &Tensor, out_hw: [usize; 2]) -> Result<Tensor> {
    let s = nchw(t, "interpolate input")?;
    if [s[2], s[3]] == out_hw {
        return Ok(t.clone());
    }
    let v = resize_bilinear_nchw(&t.to_vec(), s, out_hw)?;
    Ok(Tensor::from_vec(
        v,
        &[s[0], s[1], out_hw[0], out_hw[1]],
        t.device(),
    )?)
}

/// Mirrors an NCHW tensor left–right (PyTorch `x.flip(3)`).
pub fn flip_lr(t: &Tensor) -> Result<Tensor> {
    let s = nchw(t, "flip input")?;
    let mut v = t.to_vec();
    if s[3] > 0 {
        for row in v.chunks_exact_mut(s[3]) {
            row.reverse();
        }
    }
    Ok(Tensor::from_vec(v, t.shape(), t.device())?)
}

/// Upstream `scale_img(img, ratio, same_shape, gs)`: bilinear resize to
/// `(int(h·ratio), int(w·ratio))`, then pad right and bottom with [`SCALE_IMG_PAD`] to
/// `ceil(dim·ratio / gs)·gs` (or back to the original size with `same_shape`, cropping if larger).
/// Ratio 1 returns the image unchanged.
pub fn scale_img(img: &Tensor, ratio: f64, same_shape: bool, gs: usize) -> Result<Tensor> {
    if ratio == 1.0 {
        return Ok(img.clone());
    }
    let [n, c, h, w] = nchw(img, "scale_img input")?;
    if !(ratio.is_finite() && ratio > 0.0) || gs == 0 {
        return invalid(
            "scale_img",
            format!("ratio {ratio} and stride {gs} must be positive"),
        );
    }
    let (sh, sw) = ((h as f64 * ratio) as usize, (w as f64 * ratio) as usize);
    let resized = resize_bilinear_nchw(&img.to_vec(), [n, c, h, w], [sh, sw])?;
    let (ph, pw) = if same_shape {
        (h, w)
    } else {
        let up = |x: usize| (x as f64 * ratio / gs as f64).ceil() as usize * gs;
        (up(h), up(w))
    };
    let mut out = vec![SCALE_IMG_PAD; n * c * ph * pw];
    let (ch, cw) = (sh.min(ph), sw.min(pw));
    for (src, dst) in resized
        .chunks_exact(sh * sw)
        .zip(out.chunks_exact_mut(ph * pw))
    {
        for y in 0..ch {
            dst[y * pw..y * pw + cw].copy_from_slice(&src[y * sw..y * sw + cw]);
        }
    }
    Ok(Tensor::from_vec(out, &[n, c, ph, pw], img.device())?)
}

/// The generator of multi-scale size choices for batch `batch` of epoch `epoch`: a function of
/// the run's seed alone, so a resumed run draws the same sizes as an uninterrupted one.
pub fn multi_scale_rng(seed: u64, epoch: u64, batch: u64) -> StdRng {
    StdRng::seed_from_u64(mix64(
        mix64(mix64(seed ^ 0x4D55_4C54_4953_4341) ^ epoch) ^ batch,
    ))
}

/// Upstream's multi-scale size: uniform in `[imgsz·0.5, imgsz·1.5 + gs)`, rounded down to a
/// multiple of `gs` (never below `gs`).
pub fn multi_scale_size<R: Rng + ?Sized>(rng: &mut R, imgsz: usize, gs: usize) -> usize {
    let gs = gs.max(1);
    let lo = imgsz / 2;
    let hi = imgsz * 3 / 2 + gs;
    let sz = rng.random_range(lo..hi) / gs * gs;
    sz.max(gs)
}

/// The batch shape multi-scale training resizes an `hw` batch to for size `sz`:
/// `ceil(x·sz / max(h, w) / gs)·gs` per side, or `None` when `sz` equals the longer side.
pub fn multi_scale_shape(hw: [usize; 2], sz: usize, gs: usize) -> Option<[usize; 2]> {
    let m = hw[0].max(hw[1]);
    if m == 0 || sz == m {
        return None;
    }
    let sf = sz as f64 / m as f64;
    let gs = gs.max(1);
    let side = |x: usize| ((x as f64 * sf / gs as f64).ceil() as usize * gs).max(gs);
    Some([side(hw[0]), side(hw[1])])
}

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_tensor::Device;

    /// An independent reference: PyTorch's formula evaluated per output pixel in f64.
    fn naive(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
        let at = |y: usize, x: usize| src[y * w + x] as f64;
        let coord = |i: usize, n_in: usize, n_out: usize| {
            let s = ((i as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).max(0.0);
            let i0 = s.floor() as usize;
            let i0 = i0.min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            (i0, i1, s - i0 as f64)
        };
        let mut out = Vec::new();
        for y in 0..oh {
            let (y0, y1, fy) = coord(y, h, oh);
            for x in 0..ow {
                let (x0, x1, fx) = coord(x, w, ow);
                let top = at(y0, x0) * (1.0 - fx) + at(y0, x1) * fx;
                let bot = at(y1, x0) * (1.0 - fx) + at(y1, x1) * fx;
                out.push((top * (1.0 - fy) + bot * fy) as f32);
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol, "index {i}: {x} vs {y}\n{a:?}\n{b:?}");
        }
    }

    #[test]
    fn two_by_two_to_three_by_three_matches_pytorch() {
        // F.interpolate([[1,2],[3,4]], size=(3,3), mode='bilinear', align_corners=False);
        // by hand: x source = (i+½)·⅔ − ½ = 0 (clamped from −⅙), ½, 7/6 → edge 1
        let out = resize_bilinear_nchw(&[1.0, 2.0, 3.0, 4.0], [1, 1, 2, 2], [3, 3]).unwrap();
        close(&out, &[1.0, 1.5, 2.0, 2.0, 2.5, 3.0, 3.0, 3.5, 4.0], 1e-6);
    }

    #[test]
    fn four_by_four_to_two_by_two_matches_pytorch() {
        // source = (i+½)·2 − ½ = ½, 2½: the mean of each 2×2 block's inner neighbours
        let src: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let out = resize_bilinear_nchw(&src, [1, 1, 4, 4], [2, 2]).unwrap();
        close(&out, &[2.5, 4.5, 10.5, 12.5], 1e-6);
    }

    #[test]
    fn odd_sizes_match_pytorch_values() {
        // values printed by PyTorch 2.x for x = ((i·7) mod 11)/10, shape 1×2×3×5
        let src: Vec<f32> = (0..30).map(|i| ((i * 7) % 11) as f32 / 10.0).collect();
        let up = resize_bilinear_nchw(&src, [1, 2, 3, 5], [4, 7]).unwrap();
        let torch_up = [
            0.0,
            0.4,
            0.585_714_2,
            0.3,
            0.8,
            0.828_571_4,
            0.6,
            0.125,
            0.525,
            0.710_714_2,
            0.425,
            0.433_928_6,
            0.560_714_3,
            0.725,
            0.275,
            0.439_285_7,
            0.566_071_5,
            0.575,
            0.289_285_7,
            0.475,
            0.875,
            0.4,
            0.171_428_6,
            0.2,
            0.7,
            0.414_285_7,
            0.6,
            1.0,
            0.6,
            0.371_428_6,
            0.4,
            0.9,
            0.614_285_6,
            0.328_571_4,
            0.1,
            0.725,
            0.496_428_5,
            0.328_571_4,
            0.337_5,
            0.542_857_2,
            0.453_571_4,
            0.225,
            0.875,
            0.646_428_6,
            0.360_714_3,
            0.075,
            0.575,
            0.603_571_4,
            0.375,
            1.0,
            0.771_428_5,
            0.485_714_3,
            0.2,
            0.7,
            0.728_571_4,
            0.5,
        ];
        close(&up, &torch_up, 1e-6);
        let down = resize_bilinear_nchw(&src, [1, 2, 3, 5], [2, 3]).unwrap();
        let torch_down = [
            0.283_333_3,
            0.35,
            0.691_666_7,
            0.308_333_3,
            0.65,
            0.716_666_6,
            0.516_666_7,
            0.675,
            0.283_333_4,
            0.816_666_7,
            0.15,
            0.583_333_4,
        ];
        close(&down, &torch_down, 1e-6);
    }

    #[test]
    fn linear_ramp_stays_linear_inside_and_clamps_at_the_edges() {
        // f(x) = x over 8 columns → 16: source = (i+½)/2 − ½ = i/2 − ¼, so the value is
        // i/2 − ¼ wherever both taps are inside, 0 at the left edge and 7 at the right one
        let src: Vec<f32> = (0..3).flat_map(|_| (0..8).map(|x| x as f32)).collect();
        let out = resize_bilinear_nchw(&src, [1, 1, 3, 8], [3, 16]).unwrap();
        for row in out.chunks_exact(16) {
            for (i, &v) in row.iter().enumerate() {
                let want = (i as f32 / 2.0 - 0.25).clamp(0.0, 7.0);
                assert!((v - want).abs() < 1e-6, "column {i}: {v} vs {want}");
            }
        }
    }

    #[test]
    fn random_shapes_match_the_naive_reference() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..40 {
            let (h, w) = (rng.random_range(1..12), rng.random_range(1..12));
            let (oh, ow) = (rng.random_range(1..20), rng.random_range(1..20));
            let src: Vec<f32> = (0..2 * h * w).map(|_| rng.random::<f32>()).collect();
            let out = resize_bilinear_nchw(&src, [2, 1, h, w], [oh, ow]).unwrap();
            for k in 0..2 {
                let want = naive(&src[k * h * w..(k + 1) * h * w], h, w, oh, ow);
                close(&out[k * oh * ow..(k + 1) * oh * ow], &want, 1e-5);
            }
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(resize_bilinear_nchw(&[1.0; 3], [1, 1, 2, 2], [2, 2]).is_err());
        assert!(resize_bilinear_nchw(&[1.0; 4], [1, 1, 2, 2], [0, 2]).is_err());
        let t = Tensor::ones(&[2, 2], Device::Cpu).unwrap();
        assert!(interpolate_bilinear(&t, [2, 2]).is_err());
        let img = Tensor::ones(&[1, 3, 8, 8], Device::Cpu).unwrap();
        assert!(scale_img(&img, 0.0, false, 4).is_err());
        assert!(scale_img(&img, 0.5, false, 0).is_err());
    }

    #[test]
    fn scale_img_pads_right_and_bottom_to_the_stride() {
        // 64×40 at 0.83: resized to int(53.12)×int(33.2) = 53×33, padded to 64×64 (gs 32)
        let img = Tensor::ones(&[1, 3, 64, 40], Device::Cpu).unwrap();
        let s = scale_img(&img, 0.83, false, 32).unwrap();
        assert_eq!(s.shape(), &[1, 3, 64, 64]);
        let v = s.to_vec();
        let at = |c: usize, y: usize, x: usize| v[(c * 64 + y) * 64 + x];
        assert_eq!(at(2, 52, 32), 1.0);
        assert_eq!(at(2, 53, 0), SCALE_IMG_PAD);
        assert_eq!(at(0, 0, 33), SCALE_IMG_PAD);
        // same_shape: back to 64×40
        let s = scale_img(&img, 0.67, true, 32).unwrap();
        assert_eq!(s.shape(), &[1, 3, 64, 40]);
        assert_eq!(scale_img(&img, 1.0, false, 32).unwrap().id(), img.id());
    }

    #[test]
    fn flip_lr_reverses_rows() {
        let t = Tensor::from_vec(
            (0..12).map(|v| v as f32).collect(),
            &[1, 2, 2, 3],
            Device::Cpu,
        )
        .unwrap();
        assert_eq!(
            flip_lr(&t).unwrap().to_vec(),
            vec![2.0, 1.0, 0.0, 5.0, 4.0, 3.0, 8.0, 7.0, 6.0, 11.0, 10.0, 9.0]
        );
    }

    #[test]
    fn multi_scale_sizes_cover_upstream_range() {
        // imgsz 64, gs 32: randrange(32, 128) // 32 * 32 ∈ {32, 64, 96}
        let mut seen = std::collections::BTreeSet::new();
        for b in 0..200 {
            seen.insert(multi_scale_size(&mut multi_scale_rng(1, 0, b), 64, 32));
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), vec![32, 64, 96]);
        // the same (seed, epoch, batch) draws the same size; another seed may not
        let a: Vec<usize> = (0..20)
            .map(|b| multi_scale_size(&mut multi_scale_rng(5, 3, b), 640, 32))
            .collect();
        let b: Vec<usize> = (0..20)
            .map(|b| multi_scale_size(&mut multi_scale_rng(5, 3, b), 640, 32))
            .collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|s| (320..992).contains(s) && s % 32 == 0));
    }

    #[test]
    fn multi_scale_shape_as_train_py() {
        assert_eq!(multi_scale_shape([64, 64], 64, 32), None);
        assert_eq!(multi_scale_shape([64, 64], 96, 32), Some([96, 96]));
        // 640×480 to 416: sf 0.65 → ceil(416/32)·32 = 416, ceil(312/32)·32 = 320
        assert_eq!(multi_scale_shape([640, 480], 416, 32), Some([416, 320]));
    }
}
