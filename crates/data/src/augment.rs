//! Upstream augmentations: letterbox, random_perspective (with box transform, clipping and
//! candidate filtering), HSV gains through look-up tables, MixUp and flips.
//!
//! Boxes here are `[class, x1, y1, x2, y2]` in pixels unless a function says otherwise.

use rand::Rng;

use crate::boxes::box_candidate;
use crate::hyp::AugParams;
use crate::imgbuf::{invert3, matmul3, Interp, RgbBuf, PAD_VALUE};
use crate::rng::{beta, uniform};

/// A pixel-space box row: `[class, x1, y1, x2, y2]`.
pub type PixelBox = [f32; 5];

/// How a letterbox mapped the input: `x_out = x_in * ratio.0 + pad.0`, likewise for y.
/// Unlike upstream (which returns the nominal gain and half the padding), both are the values
/// actually applied to the pixels (resized size / old size, whole-pixel left/top padding), so
/// boxes map back exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LetterboxInfo {
    /// Width and height scale factors (new / old).
    pub ratio: (f32, f32),
    /// Padding added on the left and top (upstream `(dw, dh)`).
    pub pad: (f32, f32),
}

/// Resizes keeping the aspect ratio and pads to `new_shape = (height, width)` with grey 114,
/// as upstream `letterbox`. `auto` pads only to a multiple of `stride` (minimum rectangle);
/// `scale_fill` stretches without padding; `scaleup = false` never enlarges.
pub fn letterbox(
    im: &RgbBuf,
    new_shape: (usize, usize),
    auto: bool,
    scale_fill: bool,
    scaleup: bool,
    stride: usize,
) -> (RgbBuf, LetterboxInfo) {
    let (h0, w0) = (im.height as f64, im.width as f64);
    let (nh, nw) = (new_shape.0 as f64, new_shape.1 as f64);
    let mut r = (nh / h0).min(nw / w0);
    if !scaleup {
        r = r.min(1.0);
    }
    let mut unpad = (
        (w0 * r).round_ties_even() as usize,
        (h0 * r).round_ties_even() as usize,
    );
    let (mut dw, mut dh) = (nw - unpad.0 as f64, nh - unpad.1 as f64);
    if auto {
        let s = stride.max(1) as f64;
        dw = dw.rem_euclid(s);
        dh = dh.rem_euclid(s);
    } else if scale_fill {
        dw = 0.0;
        dh = 0.0;
        unpad = (new_shape.1, new_shape.0);
    }
    // The scale actually applied (the rounded size over the old size), so boxes map exactly.
    let ratio = (unpad.0 as f64 / w0, unpad.1 as f64 / h0);
    dw /= 2.0;
    dh /= 2.0;
    let resized;
    let src = if (im.width, im.height) != unpad {
        resized = im.resize(unpad.0, unpad.1, Interp::Linear);
        &resized
    } else {
        im
    };
    let top = (dh - 0.1).round_ties_even().max(0.0) as usize;
    let bottom = (dh + 0.1).round_ties_even().max(0.0) as usize;
    let left = (dw - 0.1).round_ties_even().max(0.0) as usize;
    let right = (dw + 0.1).round_ties_even().max(0.0) as usize;
    let out = src.pad(top, bottom, left, right, PAD_VALUE);
    (
        out,
        LetterboxInfo {
            ratio: (ratio.0 as f32, ratio.1 as f32),
            pad: (left as f32, top as f32),
        },
    )
}

/// Upstream `random_perspective`: a random perspective/rotation/scale/shear/translation about the
/// image centre, output size `input + 2 * border` (`border = (rows, cols)`, negative for a mosaic
/// crop), grey border; boxes transformed through their 4 corners, clipped, and filtered with
/// [`box_candidate`].
pub fn random_perspective<R: Rng + ?Sized>(
    im: &RgbBuf,
    targets: &[PixelBox],
    aug: &AugParams,
    border: (i64, i64),
    rng: &mut R,
) -> (RgbBuf, Vec<PixelBox>) {
    Perspective::draw((im.width, im.height), aug, border, rng).apply(im, (0, 0), targets)
}

/// One draw of [`random_perspective`]'s transform, made before the image it applies to exists
/// (it depends on the image's size only), so a caller can build just the part the warp reads.
#[derive(Clone, Debug)]
pub struct Perspective {
    /// Source → output pixel coordinates, `M = T @ S @ R @ P @ C`.
    pub m: [[f64; 3]; 3],
    /// The drawn scale gain (for the box-candidate area test).
    pub scale: f64,
    /// The source's width and height.
    pub input: (usize, usize),
    /// The output's width and height.
    pub output: (usize, usize),
    /// Whether the output differs from the input at all (otherwise it is a copy).
    changed: bool,
}

impl Perspective {
    /// Draws the transform for an `input = (width, height)` image, consuming `rng` exactly as
    /// upstream's `random_perspective` does.
    pub fn draw<R: Rng + ?Sized>(
        input: (usize, usize),
        aug: &AugParams,
        border: (i64, i64),
        rng: &mut R,
    ) -> Perspective {
        let height = (input.1 as i64 + border.0 * 2).max(1) as usize;
        let width = (input.0 as i64 + border.1 * 2).max(1) as usize;
        let eye = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

        let mut c = eye;
        c[0][2] = -(input.0 as f64) / 2.0;
        c[1][2] = -(input.1 as f64) / 2.0;

        let persp = aug.perspective as f64;
        let mut p = eye;
        p[2][0] = uniform(rng, -persp, persp);
        p[2][1] = uniform(rng, -persp, persp);

        let a = uniform(rng, -aug.degrees as f64, aug.degrees as f64).to_radians();
        let s = uniform(rng, 1.0 - aug.scale as f64, 1.0 + aug.scale as f64);
        // cv2.getRotationMatrix2D(angle, centre (0, 0), scale): [[α, β], [-β, α]].
        let (alpha, betav) = (s * a.cos(), s * a.sin());
        let r = [[alpha, betav, 0.0], [-betav, alpha, 0.0], [0.0, 0.0, 1.0]];

        let sh = aug.shear as f64;
        let mut shm = eye;
        shm[0][1] = uniform(rng, -sh, sh).to_radians().tan();
        shm[1][0] = uniform(rng, -sh, sh).to_radians().tan();

        let t = aug.translate as f64;
        let mut tm = eye;
        tm[0][2] = uniform(rng, 0.5 - t, 0.5 + t) * width as f64;
        tm[1][2] = uniform(rng, 0.5 - t, 0.5 + t) * height as f64;

        // M = T @ S @ R @ P @ C (right to left).
        let m = matmul3(&tm, &matmul3(&shm, &matmul3(&r, &matmul3(&p, &c))));
        Perspective {
            m,
            scale: s,
            input,
            output: (width, height),
            changed: border != (0, 0) || m != eye,
        }
    }

    /// The part of the input the warp reads, `(x0, y0, x1, y1)` (end-exclusive, within the
    /// input; empty when it reads none): the output's corners mapped back, with a margin for
    /// the bilinear taps and rounding. The whole input when the map folds (a perspective whose
    /// horizon crosses the output) or is singular.
    pub fn source_window(&self) -> (usize, usize, usize, usize) {
        let (iw, ih) = self.input;
        let whole = (0, 0, iw, ih);
        if !self.changed {
            return whole;
        }
        let Some(inv) = invert3(&self.m) else {
            return whole;
        };
        let (xr, yr) = ((self.output.0 - 1) as f64, (self.output.1 - 1) as f64);
        let (mut lo, mut hi) = ([f64::INFINITY; 2], [f64::NEG_INFINITY; 2]);
        for (x, y) in [(0.0, 0.0), (xr, 0.0), (0.0, yr), (xr, yr)] {
            let w = inv[2][0] * x + inv[2][1] * y + inv[2][2];
            let sx = (inv[0][0] * x + inv[0][1] * y + inv[0][2]) / w;
            let sy = (inv[1][0] * x + inv[1][1] * y + inv[1][2]) / w;
            if !(w > 1e-9 && sx.is_finite() && sy.is_finite()) {
                return whole;
            }
            lo = [lo[0].min(sx), lo[1].min(sy)];
            hi = [hi[0].max(sx), hi[1].max(sy)];
        }
        // Taps reach floor(s) - 1 .. floor(s) + 2 after fixed-point rounding; one pixel more.
        let span = |lo: f64, hi: f64, n: usize| {
            let a = (lo.floor() - 2.0).clamp(0.0, n as f64) as usize;
            let b = (hi.floor() + 4.0).clamp(0.0, n as f64) as usize;
            if b > a {
                (a, b)
            } else {
                (0, 0)
            }
        };
        let ((x0, x1), (y0, y1)) = (span(lo[0], hi[0], iw), span(lo[1], hi[1], ih));
        if x1 == 0 || y1 == 0 {
            return (0, 0, 0, 0);
        }
        (x0, y0, x1, y1)
    }

    /// Warps `im`, the input or the window of it at `origin` that holds at least
    /// [`source_window`](Self::source_window), and transforms, clips and filters the boxes
    /// (given in input pixels).
    pub fn apply(
        &self,
        im: &RgbBuf,
        origin: (usize, usize),
        targets: &[PixelBox],
    ) -> (RgbBuf, Vec<PixelBox>) {
        let (m, (width, height)) = (&self.m, self.output);
        let is_perspective = m[2][0] != 0.0 || m[2][1] != 0.0;
        let whole = origin == (0, 0) && (im.width, im.height) == self.input;
        let out = if self.changed || !whole {
            im.warp_window(origin, self.input, m, width, height, PAD_VALUE)
        } else {
            im.clone()
        };
        let mut kept = Vec::with_capacity(targets.len());
        for tgt in targets {
            let [cls, x1, y1, x2, y2] = *tgt;
            let corners = [(x1, y1), (x2, y2), (x1, y2), (x2, y1)];
            let (mut nx1, mut ny1, mut nx2, mut ny2) = (
                f64::INFINITY,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::NEG_INFINITY,
            );
            for (x, y) in corners {
                let (x, y) = (x as f64, y as f64);
                let mut tx = m[0][0] * x + m[0][1] * y + m[0][2];
                let mut ty = m[1][0] * x + m[1][1] * y + m[1][2];
                if is_perspective {
                    let w = m[2][0] * x + m[2][1] * y + m[2][2];
                    tx /= w;
                    ty /= w;
                }
                nx1 = nx1.min(tx);
                ny1 = ny1.min(ty);
                nx2 = nx2.max(tx);
                ny2 = ny2.max(ty);
            }
            let new = [
                nx1.clamp(0.0, width as f64) as f32,
                ny1.clamp(0.0, height as f64) as f32,
                nx2.clamp(0.0, width as f64) as f32,
                ny2.clamp(0.0, height as f64) as f32,
            ];
            if new.iter().any(|v| !v.is_finite()) {
                continue;
            }
            let sf = self.scale as f32;
            let before = [x1 * sf, y1 * sf, x2 * sf, y2 * sf];
            if box_candidate(before, new, 2.0, 100.0, 0.1) {
                kept.push([cls, new[0], new[1], new[2], new[3]]);
            }
        }
        (out, kept)
    }
}

/// Integer RGB → HSV as OpenCV's 8-bit conversion (H in 0..180, S and V in 0..=255).
struct HsvTables {
    sdiv: [i32; 256],
    hdiv: [i32; 256],
}

const HSV_SHIFT: i32 = 12;

impl HsvTables {
    fn new() -> HsvTables {
        let mut sdiv = [0i32; 256];
        let mut hdiv = [0i32; 256];
        for i in 1..256 {
            sdiv[i] = ((255 << HSV_SHIFT) as f64 / i as f64).round() as i32;
            hdiv[i] = ((180 << HSV_SHIFT) as f64 / (6.0 * i as f64)).round() as i32;
        }
        HsvTables { sdiv, hdiv }
    }
}

fn hsv_tables() -> &'static HsvTables {
    static T: std::sync::OnceLock<HsvTables> = std::sync::OnceLock::new();
    T.get_or_init(HsvTables::new)
}

#[inline(always)]
fn rgb_to_hsv(t: &HsvTables, r: i32, g: i32, b: i32) -> (usize, usize, usize) {
    let v = r.max(g).max(b);
    let vmin = r.min(g).min(b);
    let diff = v - vmin;
    let half = 1 << (HSV_SHIFT - 1);
    let s = (diff * t.sdiv[v as usize] + half) >> HSV_SHIFT;
    // Branch-free selection of the hue formula (which channel is the maximum).
    let hr = g - b;
    let hg = b - r + 2 * diff;
    let hb = r - g + 4 * diff;
    let h = if v == r {
        hr
    } else if v == g {
        hg
    } else {
        hb
    };
    let mut h = (h * t.hdiv[diff as usize] + half) >> HSV_SHIFT;
    h += ((h < 0) as i32) * 180;
    (h.clamp(0, 179) as usize, s as usize, v as usize)
}

/// Where each of (r, g, b) comes from in `[v, p, q, t]`, per hue sector (OpenCV's table).
const SECTOR_PERM: [[usize; 3]; 6] = [
    [0, 3, 1],
    [2, 0, 1],
    [1, 0, 3],
    [1, 2, 0],
    [3, 1, 0],
    [0, 1, 2],
];

/// OpenCV's 8-bit HSV → RGB (H in 0..180, sectors of 30), in integer arithmetic with the same
/// rounding as its float path. `sector` and `f` are `h / 30` and `h % 30`. With s = 0 every
/// term equals v (grey), so no branch is needed.
#[inline(always)]
fn hsv_to_rgb(sector: usize, f: u32, s: u32, v: u32) -> [u8; 3] {
    let p = (v * (255 - s) + 127) / 255;
    let q = (v * (7650 - s * f) + 3825) / 7650;
    let t = (v * (7650 - s * (30 - f)) + 3825) / 7650;
    let vals = [v, p, q, t];
    let perm = SECTOR_PERM[sector];
    [
        vals[perm[0]] as u8,
        vals[perm[1]] as u8,
        vals[perm[2]] as u8,
    ]
}

/// Upstream `augment_hsv`: random gains `1 + U(-1, 1) * gain` for hue, saturation and value,
/// applied through look-up tables in OpenCV's 8-bit HSV space. In place.
pub fn augment_hsv<R: Rng + ?Sized>(
    im: &mut RgbBuf,
    hgain: f32,
    sgain: f32,
    vgain: f32,
    rng: &mut R,
) {
    if hgain == 0.0 && sgain == 0.0 && vgain == 0.0 {
        return;
    }
    let gains = [
        uniform(rng, -1.0, 1.0) * hgain as f64 + 1.0,
        uniform(rng, -1.0, 1.0) * sgain as f64 + 1.0,
        uniform(rng, -1.0, 1.0) * vgain as f64 + 1.0,
    ];
    let luts = HsvLuts::new(gains);
    let done = hsv_simd::apply(&luts, &mut im.data);
    hsv_apply_scalar(&luts, &mut im.data[done..]);
}

/// The per-image tables of [`augment_hsv`]: hue → (sector, fraction), saturation, value.
struct HsvLuts {
    hue: [(usize, u32); 180],
    lut_s: [u32; 256],
    lut_v: [u32; 256],
}

impl HsvLuts {
    /// The tables for hue, saturation and value `gains` (multipliers): the hue LUT folded into
    /// (sector, fraction) pairs, S and V LUTs as upstream.
    fn new(gains: [f64; 3]) -> HsvLuts {
        let mut hue = [(0usize, 0u32); 180];
        for (x, e) in hue.iter_mut().enumerate() {
            let h2 = ((x as f64 * gains[0]).rem_euclid(180.0) as u32).min(179);
            *e = ((h2 / 30) as usize, h2 % 30);
        }
        HsvLuts {
            hue,
            lut_s: std::array::from_fn(|x| (x as f64 * gains[1]).clamp(0.0, 255.0) as u32),
            lut_v: std::array::from_fn(|x| (x as f64 * gains[2]).clamp(0.0, 255.0) as u32),
        }
    }
}

/// One pixel of [`augment_hsv`] (the reference the vector path must equal exactly).
#[inline(always)]
fn hsv_pixel(t: &HsvTables, l: &HsvLuts, px: &mut [u8]) {
    let (h, s, v) = rgb_to_hsv(t, px[0] as i32, px[1] as i32, px[2] as i32);
    let (sector, f) = l.hue[h];
    let rgb = hsv_to_rgb(sector, f, l.lut_s[s], l.lut_v[v]);
    px.copy_from_slice(&rgb);
}

fn hsv_apply_scalar(l: &HsvLuts, data: &mut [u8]) {
    let t = hsv_tables();
    for px in data.chunks_exact_mut(3) {
        hsv_pixel(t, l, px);
    }
}

/// [`augment_hsv`]'s per-pixel transform on 8 pixels at a time with AVX2 (x86-64 with the
/// instructions only), bit-identical to [`hsv_pixel`]: the same integer RGB → HSV with
/// OpenCV's division tables (gathered), the same look-ups, and the HSV → RGB divisions done
/// in f32, which is exact here (numerators below 2^24, quotients floored).
mod hsv_simd {
    use super::{hsv_tables, HsvLuts, HSV_SHIFT};

    /// Transforms the longest prefix of `data` that is whole groups of 8 pixels; returns its
    /// length in bytes (0 when the CPU lacks AVX2).
    pub(super) fn apply(l: &HsvLuts, data: &mut [u8]) -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                let n = data.len() / 24 * 24;
                let hue: [i32; 180] =
                    std::array::from_fn(|h| (l.hue[h].0 * 32) as i32 + l.hue[h].1 as i32);
                let ls: [i32; 256] = std::array::from_fn(|i| l.lut_s[i] as i32);
                let lv: [i32; 256] = std::array::from_fn(|i| l.lut_v[i] as i32);
                let t = hsv_tables();
                // SAFETY: AVX2 is present (checked above); `run` reads and writes `data[..n]`
                // in groups of 24 bytes and looks tables up with indices in their ranges.
                unsafe { run(&t.sdiv, &t.hdiv, &hue, &ls, &lv, &mut data[..n]) };
                return n;
            }
        }
        let _ = (l, data);
        0
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run(
        sdiv: &[i32; 256],
        hdiv: &[i32; 256],
        hue: &[i32; 180],
        ls: &[i32; 256],
        lv: &[i32; 256],
        data: &mut [u8],
    ) {
        use std::arch::x86_64::*;
        let half = _mm256_set1_epi32(1 << (HSV_SHIFT - 1));
        let zero = _mm256_setzero_si256();
        let c180 = _mm256_set1_epi32(180);
        let c179 = _mm256_set1_epi32(179);
        let c255 = _mm256_set1_epi32(255);
        let c7650 = _mm256_set1_epi32(7650);
        let c30 = _mm256_set1_epi32(30);
        let f255 = _mm256_set1_ps(255.0);
        let f7650 = _mm256_set1_ps(7650.0);
        let div = |num: __m256i, d: __m256| {
            _mm256_cvttps_epi32(_mm256_floor_ps(_mm256_div_ps(_mm256_cvtepi32_ps(num), d)))
        };
        let masks = crate::imgbuf::rgb8::masks();
        // Interleave back: per lane r0..3 g0..3 b0..3 (b again) → r0 g0 b0 r1 g1 b1 …
        let out_mask = {
            let lane: [i8; 16] = [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11, -1, -1, -1, -1];
            let mut all = [0i8; 32];
            all[..16].copy_from_slice(&lane);
            all[16..].copy_from_slice(&lane);
            _mm256_loadu_si256(all.as_ptr().cast())
        };
        for chunk in data.chunks_exact_mut(24) {
            let [r, g, b] = crate::imgbuf::rgb8::load(chunk, &masks);
            let v = _mm256_max_epi32(_mm256_max_epi32(r, g), b);
            let vmin = _mm256_min_epi32(_mm256_min_epi32(r, g), b);
            let diff = _mm256_sub_epi32(v, vmin);
            let s = _mm256_srai_epi32::<HSV_SHIFT>(_mm256_add_epi32(
                _mm256_mullo_epi32(diff, _mm256_i32gather_epi32::<4>(sdiv.as_ptr(), v)),
                half,
            ));
            // Hue formula by maximum channel: r first, then g, else b (as the scalar code).
            let hr = _mm256_sub_epi32(g, b);
            let hg = _mm256_add_epi32(_mm256_sub_epi32(b, r), _mm256_add_epi32(diff, diff));
            let d4 = _mm256_slli_epi32::<2>(diff);
            let hb = _mm256_add_epi32(_mm256_sub_epi32(r, g), d4);
            let is_r = _mm256_cmpeq_epi32(v, r);
            let is_g = _mm256_cmpeq_epi32(v, g);
            let h = _mm256_blendv_epi8(_mm256_blendv_epi8(hb, hg, is_g), hr, is_r);
            let mut h = _mm256_srai_epi32::<HSV_SHIFT>(_mm256_add_epi32(
                _mm256_mullo_epi32(h, _mm256_i32gather_epi32::<4>(hdiv.as_ptr(), diff)),
                half,
            ));
            h = _mm256_add_epi32(h, _mm256_and_si256(_mm256_cmpgt_epi32(zero, h), c180));
            h = _mm256_min_epi32(_mm256_max_epi32(h, zero), c179);
            let packed = _mm256_i32gather_epi32::<4>(hue.as_ptr(), h);
            let sector = _mm256_srli_epi32::<5>(packed);
            let f = _mm256_and_si256(packed, _mm256_set1_epi32(31));
            let s2 = _mm256_i32gather_epi32::<4>(ls.as_ptr(), s);
            let v2 = _mm256_i32gather_epi32::<4>(lv.as_ptr(), v);
            // p = (v(255 − s) + 127) / 255, q = (v(7650 − s f) + 3825) / 7650,
            // t = (v(7650 − s(30 − f)) + 3825) / 7650.
            let p = div(
                _mm256_add_epi32(
                    _mm256_mullo_epi32(v2, _mm256_sub_epi32(c255, s2)),
                    _mm256_set1_epi32(127),
                ),
                f255,
            );
            let q = div(
                _mm256_add_epi32(
                    _mm256_mullo_epi32(v2, _mm256_sub_epi32(c7650, _mm256_mullo_epi32(s2, f))),
                    _mm256_set1_epi32(3825),
                ),
                f7650,
            );
            let tt = div(
                _mm256_add_epi32(
                    _mm256_mullo_epi32(
                        v2,
                        _mm256_sub_epi32(c7650, _mm256_mullo_epi32(s2, _mm256_sub_epi32(c30, f))),
                    ),
                    _mm256_set1_epi32(3825),
                ),
                f7650,
            );
            // Sector → (r, g, b) among (v, p, q, t): 0 (v,t,p) 1 (q,v,p) 2 (p,v,t) 3 (p,q,v)
            // 4 (t,p,v) 5 (v,p,q).
            let sec = |k: i32| _mm256_cmpeq_epi32(sector, _mm256_set1_epi32(k));
            let (s0, s1, s2m, s3, s4) = (sec(0), sec(1), sec(2), sec(3), sec(4));
            let pick = |base: __m256i, alts: [(__m256i, __m256i); 4]| {
                alts.iter()
                    .fold(base, |acc, &(m, val)| _mm256_blendv_epi8(acc, val, m))
            };
            // Lanes of sector 5 keep `base`.
            let ro = pick(v2, [(s0, v2), (s1, q), (s2m, p), (s3, p)]);
            let ro = _mm256_blendv_epi8(ro, tt, s4);
            let go = pick(p, [(s0, tt), (s1, v2), (s2m, v2), (s3, q)]);
            let go = _mm256_blendv_epi8(go, p, s4);
            let bo = pick(q, [(s0, p), (s1, p), (s2m, tt), (s3, v2)]);
            let bo = _mm256_blendv_epi8(bo, v2, s4);
            // Values are 0..=255: pack to bytes per lane, then interleave.
            let rg = _mm256_packus_epi32(ro, go);
            let bb = _mm256_packus_epi32(bo, bo);
            let px = _mm256_shuffle_epi8(_mm256_packus_epi16(rg, bb), out_mask);
            let (lo, hi) = (
                _mm256_castsi256_si128(px),
                _mm256_extracti128_si256::<1>(px),
            );
            let o = chunk.as_mut_ptr();
            _mm_storel_epi64(o.cast(), lo);
            std::ptr::write_unaligned(o.add(8).cast::<i32>(), _mm_extract_epi32::<2>(lo));
            _mm_storel_epi64(o.add(12).cast(), hi);
            std::ptr::write_unaligned(o.add(20).cast::<i32>(), _mm_extract_epi32::<2>(hi));
        }
    }
}

/// Upstream `mixup`: blends two same-size images with a Beta(32, 32) ratio and concatenates labels.
pub fn mixup<R: Rng + ?Sized>(
    im: &mut RgbBuf,
    labels: &mut Vec<PixelBox>,
    im2: &RgbBuf,
    labels2: &[PixelBox],
    rng: &mut R,
) {
    let r = beta(rng, 32.0, 32.0) as f32;
    if im.width == im2.width && im.height == im2.height {
        for (a, &b) in im.data.iter_mut().zip(&im2.data) {
            *a = (*a as f32 * r + b as f32 * (1.0 - r)) as u8;
        }
        labels.extend_from_slice(labels2);
    }
}

/// Flips normalised `[class, cx, cy, w, h]` labels and the image left-right.
pub fn flip_lr(im: &mut RgbBuf, labels: &mut [[f32; 5]]) {
    im.flip_lr();
    for l in labels {
        l[1] = 1.0 - l[1];
    }
}

/// Flips normalised `[class, cx, cy, w, h]` labels and the image up-down.
pub fn flip_ud(im: &mut RgbBuf, labels: &mut [[f32; 5]]) {
    im.flip_ud();
    for l in labels {
        l[2] = 1.0 - l[2];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsv_round_trip_is_close() {
        let t = hsv_tables();
        for &(r, g, b) in &[
            (255, 0, 0),
            (10, 200, 30),
            (0, 0, 0),
            (128, 128, 128),
            (250, 120, 7),
            (3, 60, 250),
        ] {
            let (h, s, v) = rgb_to_hsv(t, r, g, b);
            let back = hsv_to_rgb(h / 30, (h % 30) as u32, s as u32, v as u32);
            for (x, y) in back.iter().zip([r, g, b]) {
                assert!((*x as i32 - y).abs() <= 4, "{:?} -> {:?}", (r, g, b), back);
            }
        }
    }

    /// The vector path equals the per-pixel reference on every 8-bit colour, for gains that
    /// push hue around the circle and saturation/value into both clamps.
    #[test]
    fn hsv_vector_path_equals_scalar_on_every_colour() {
        let mut all: Vec<u8> = (0..1u32 << 24)
            .flat_map(|c| [(c >> 16) as u8, (c >> 8) as u8, c as u8])
            .collect();
        let mut reference = all.clone();
        for gains in [
            [1.0, 1.0, 1.0],
            [1.47, 0.31, 1.9],
            [0.52, 1.66, 0.2],
            [0.0, 0.0, 0.0],
        ] {
            let l = HsvLuts::new(gains);
            let (mut a, mut b) = (all.clone(), reference.clone());
            let done = hsv_simd::apply(&l, &mut a);
            if done == 0 {
                println!("skipped: no AVX2 here, the vector path is not used");
                return;
            }
            assert_eq!(done, a.len());
            hsv_apply_scalar(&l, &mut b);
            if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
                let px = i / 3;
                panic!(
                    "gains {gains:?}: colour {:?} -> vector {:?}, scalar {:?}",
                    &all[px * 3..px * 3 + 3],
                    &a[px * 3..px * 3 + 3],
                    &b[px * 3..px * 3 + 3]
                );
            }
        }
        all.clear();
        reference.clear();
    }

    #[test]
    fn letterbox_auto_pads_to_stride() {
        let im = RgbBuf::filled(100, 50, [1, 2, 3]);
        let (out, info) = letterbox(&im, (64, 64), true, false, true, 32);
        assert_eq!((out.width, out.height), (64, 32));
        assert_eq!(info.ratio, (0.64, 0.64));
        let (out, _) = letterbox(&im, (64, 64), false, false, true, 32);
        assert_eq!((out.width, out.height), (64, 64));
    }
}
