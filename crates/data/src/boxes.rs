//! Box format conversions and the candidate filter of upstream `random_perspective`.

/// Normalised `(cx, cy, w, h)` → pixel `(x1, y1, x2, y2)` in a `w × h` image shifted by a pad.
pub fn xywhn_to_xyxy(b: [f32; 4], w: f32, h: f32, padw: f32, padh: f32) -> [f32; 4] {
    [
        w * (b[0] - b[2] / 2.0) + padw,
        h * (b[1] - b[3] / 2.0) + padh,
        w * (b[0] + b[2] / 2.0) + padw,
        h * (b[1] + b[3] / 2.0) + padh,
    ]
}

/// Pixel `(x1, y1, x2, y2)` → normalised `(cx, cy, w, h)`; with `clip`, the box is first clipped to
/// `[0, w - eps] × [0, h - eps]` as upstream `xyxy2xywhn(clip=True, eps=1e-3)`.
pub fn xyxy_to_xywhn(b: [f32; 4], w: f32, h: f32, clip: bool, eps: f32) -> [f32; 4] {
    let mut b = b;
    if clip {
        b[0] = b[0].clamp(0.0, w - eps);
        b[2] = b[2].clamp(0.0, w - eps);
        b[1] = b[1].clamp(0.0, h - eps);
        b[3] = b[3].clamp(0.0, h - eps);
    }
    [
        (b[0] + b[2]) / 2.0 / w,
        (b[1] + b[3]) / 2.0 / h,
        (b[2] - b[0]) / w,
        (b[3] - b[1]) / h,
    ]
}

/// Upstream `box_candidates`: keep a box after augmentation if it is wider and taller than
/// `wh_thr` pixels, keeps more than `area_thr` of its (scaled) area, and has aspect ratio below
/// `ar_thr`. `before` is already multiplied by the augmentation's scale.
pub fn box_candidate(
    before: [f32; 4],
    after: [f32; 4],
    wh_thr: f32,
    ar_thr: f32,
    area_thr: f32,
) -> bool {
    let eps = 1e-16f32;
    let (w1, h1) = (before[2] - before[0], before[3] - before[1]);
    let (w2, h2) = (after[2] - after[0], after[3] - after[1]);
    let ar = (w2 / (h2 + eps)).max(h2 / (w2 + eps));
    w2 > wh_thr && h2 > wh_thr && w2 * h2 / (w1 * h1 + eps) > area_thr && ar < ar_thr
}

/// A polygon (x, y pairs) → its bounding box as normalised `(cx, cy, w, h)`.
pub fn polygon_to_xywh(points: &[f32]) -> [f32; 4] {
    let (mut x1, mut y1, mut x2, mut y2) = (
        f32::INFINITY,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::NEG_INFINITY,
    );
    for p in points.chunks_exact(2) {
        x1 = x1.min(p[0]);
        x2 = x2.max(p[0]);
        y1 = y1.min(p[1]);
        y2 = y2.max(p[1]);
    }
    [(x1 + x2) / 2.0, (y1 + y2) / 2.0, x2 - x1, y2 - y1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let b = [0.5, 0.25, 0.2, 0.1];
        let p = xywhn_to_xyxy(b, 200.0, 100.0, 0.0, 0.0);
        for (a, b) in p.iter().zip([80.0, 20.0, 120.0, 30.0]) {
            assert!((a - b).abs() < 1e-4);
        }
        let n = xyxy_to_xywhn(p, 200.0, 100.0, false, 0.0);
        for k in 0..4 {
            assert!((n[k] - b[k]).abs() < 1e-6);
        }
    }

    #[test]
    fn candidates() {
        assert!(box_candidate(
            [0., 0., 10., 10.],
            [0., 0., 10., 10.],
            2.0,
            100.0,
            0.1
        ));
        assert!(!box_candidate(
            [0., 0., 10., 10.],
            [0., 0., 2., 10.],
            2.0,
            100.0,
            0.1
        ));
        assert!(!box_candidate(
            [0., 0., 100., 100.],
            [0., 0., 3., 3.],
            2.0,
            100.0,
            0.1
        ));
    }
}
