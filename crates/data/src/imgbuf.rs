//! An RGB u8 image buffer (HWC) and the pixel kernels the augmentations need: separable
//! resampling (bilinear as OpenCV INTER_LINEAR, box-area as INTER_AREA), affine/perspective warps
//! with bilinear sampling and a constant border, flips, fills and rectangle copies.

/// The padding grey of upstream letterbox, mosaic and warps.
pub const PAD_VALUE: u8 = 114;

/// An 8-bit RGB image, rows top to bottom, pixels interleaved (HWC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbBuf {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// `height * width * 3` bytes.
    pub data: Vec<u8>,
}

/// Which resampling filter [`RgbBuf::resize`] uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// 2-tap bilinear with pixel-centre alignment (OpenCV `INTER_LINEAR`).
    Linear,
    /// Pixel-area averaging when shrinking (OpenCV `INTER_AREA`); bilinear when enlarging.
    Area,
}

thread_local! {
    /// One vertically blended source row of [`RgbBuf::warp`]'s axis-aligned path.
    static VROW: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl RgbBuf {
    /// A `width × height` image filled with one colour.
    pub fn filled(width: usize, height: usize, rgb: [u8; 3]) -> RgbBuf {
        let mut data = vec![0u8; width * height * 3];
        if rgb[0] == rgb[1] && rgb[1] == rgb[2] {
            data.fill(rgb[0]);
        } else {
            for px in data.chunks_exact_mut(3) {
                px.copy_from_slice(&rgb);
            }
        }
        RgbBuf {
            width,
            height,
            data,
        }
    }

    /// Wraps raw HWC bytes; `None` if the length does not match.
    pub fn from_raw(width: usize, height: usize, data: Vec<u8>) -> Option<RgbBuf> {
        (data.len() == width * height * 3).then_some(RgbBuf {
            width,
            height,
            data,
        })
    }

    /// The pixel at (x, y).
    pub fn pixel(&self, x: usize, y: usize) -> [u8; 3] {
        let i = (y * self.width + x) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }

    /// Sets the pixel at (x, y).
    pub fn put_pixel(&mut self, x: usize, y: usize, rgb: [u8; 3]) {
        let i = (y * self.width + x) * 3;
        self.data[i..i + 3].copy_from_slice(&rgb);
    }

    /// One row of pixels.
    pub fn row(&self, y: usize) -> &[u8] {
        &self.data[y * self.width * 3..(y + 1) * self.width * 3]
    }

    /// Copies the `size = (w, h)` block at `from = (x, y)` of `src` to `to = (x, y)` of `self`.
    /// The caller keeps both rectangles inside their images.
    pub fn copy_rect(
        &mut self,
        to: (usize, usize),
        src: &RgbBuf,
        from: (usize, usize),
        size: (usize, usize),
    ) {
        let ((dx, dy), (sx, sy), (w, h)) = (to, from, size);
        if w == 0 || h == 0 {
            return;
        }
        for r in 0..h {
            let s = ((sy + r) * src.width + sx) * 3;
            let d = ((dy + r) * self.width + dx) * 3;
            self.data[d..d + w * 3].copy_from_slice(&src.data[s..s + w * 3]);
        }
    }

    /// Mirror left-right in place.
    pub fn flip_lr(&mut self) {
        let w = self.width;
        if w == 0 {
            return;
        }
        let mut tmp = vec![0u8; w * 3];
        for row in self.data.chunks_exact_mut(w * 3) {
            for (d, s) in tmp.chunks_exact_mut(3).zip(row.chunks_exact(3).rev()) {
                d.copy_from_slice(s);
            }
            row.copy_from_slice(&tmp);
        }
    }

    /// Mirror up-down in place.
    pub fn flip_ud(&mut self) {
        let stride = self.width * 3;
        let h = self.height;
        for y in 0..h / 2 {
            let (top, bottom) = self.data.split_at_mut((h - 1 - y) * stride);
            top[y * stride..(y + 1) * stride].swap_with_slice(&mut bottom[..stride]);
        }
    }

    /// Pads with a constant colour: `top`, `bottom`, `left`, `right` pixels.
    pub fn pad(&self, top: usize, bottom: usize, left: usize, right: usize, value: u8) -> RgbBuf {
        let mut out = RgbBuf::filled(
            self.width + left + right,
            self.height + top + bottom,
            [value; 3],
        );
        out.copy_rect((left, top), self, (0, 0), (self.width, self.height));
        out
    }

    /// Resamples to `new_w × new_h`.
    pub fn resize(&self, new_w: usize, new_h: usize, interp: Interp) -> RgbBuf {
        if new_w == self.width && new_h == self.height {
            return self.clone();
        }
        if new_w == 0 || new_h == 0 || self.width == 0 || self.height == 0 {
            return RgbBuf::filled(new_w, new_h, [0; 3]);
        }
        let tx = taps(self.width, new_w, interp);
        let ty = taps(self.height, new_h, interp);
        // Horizontal pass over the source rows the vertical taps touch (all of them, in practice).
        let sw = self.width;
        let mut tmp = vec![0f32; self.height * new_w * 3];
        for (y, out) in tmp.chunks_exact_mut(new_w * 3).enumerate() {
            let row = &self.data[y * sw * 3..(y + 1) * sw * 3];
            for x in 0..new_w {
                let (start, w) = tx.of(x);
                let (mut r, mut g, mut b) = (0f32, 0f32, 0f32);
                for (k, &wk) in w.iter().enumerate() {
                    let i = (start + k) * 3;
                    r += wk * row[i] as f32;
                    g += wk * row[i + 1] as f32;
                    b += wk * row[i + 2] as f32;
                }
                out[x * 3] = r;
                out[x * 3 + 1] = g;
                out[x * 3 + 2] = b;
            }
        }
        let mut data = vec![0u8; new_w * new_h * 3];
        let stride = new_w * 3;
        let mut acc = vec![0f32; stride];
        for (y, out) in data.chunks_exact_mut(stride).enumerate() {
            let (start, w) = ty.of(y);
            acc.fill(0.0);
            for (k, &wk) in w.iter().enumerate() {
                let src = &tmp[(start + k) * stride..(start + k + 1) * stride];
                for (a, &s) in acc.iter_mut().zip(src) {
                    *a += wk * s;
                }
            }
            for (o, &a) in out.iter_mut().zip(&acc) {
                *o = (a + 0.5).clamp(0.0, 255.0) as u8;
            }
        }
        RgbBuf {
            width: new_w,
            height: new_h,
            data,
        }
    }

    /// Warps with the forward 3×3 matrix `m` (source → destination pixel coordinates) into a
    /// `dst_w × dst_h` image: bilinear sampling (10-bit fixed-point weights, as OpenCV uses
    /// fixed-point too), constant `border` outside the source.
    pub fn warp(&self, m: &[[f64; 3]; 3], dst_w: usize, dst_h: usize, border: u8) -> RgbBuf {
        self.warp_window((0, 0), (self.width, self.height), m, dst_w, dst_h, border)
    }

    /// [`warp`](Self::warp) of a `full = (width, height)` source of which `self` holds only
    /// the window whose top-left corner is at `origin`: the same pixels, provided the window
    /// holds every source pixel the warp reads inside the full source (pixels outside the
    /// window read as `border`, as do those outside the full source).
    pub fn warp_window(
        &self,
        origin: (usize, usize),
        full: (usize, usize),
        m: &[[f64; 3]; 3],
        dst_w: usize,
        dst_h: usize,
        border: u8,
    ) -> RgbBuf {
        let mut out = RgbBuf::filled(dst_w, dst_h, [border; 3]);
        let Some(inv) = invert3(m) else {
            return out;
        };
        if self.width == 0 || self.height == 0 || full.0 == 0 || full.1 == 0 {
            return out;
        }
        let at = Src {
            origin: (origin.0 as i64, origin.1 as i64),
            full,
        };
        let affine = inv[2][0] == 0.0 && inv[2][1] == 0.0;
        if affine && inv[0][1] == 0.0 && inv[1][0] == 0.0 {
            self.warp_axis_aligned(&inv, &at, &mut out, border);
            return out;
        }
        let stride = dst_w * 3;
        for (y, row) in out.data.chunks_exact_mut(stride).enumerate() {
            let yf = y as f64;
            if affine {
                // Source position = base + x * step; computed per pixel (no drift).
                let (bx, by) = (inv[0][1] * yf + inv[0][2], inv[1][1] * yf + inv[1][2]);
                let (ax, ay) = (inv[0][0], inv[1][0]);
                for (x, o) in row.chunks_exact_mut(3).enumerate() {
                    let xf = x as f64;
                    self.sample_into(&at, bx + ax * xf, by + ay * xf, border, o);
                }
            } else {
                for (x, o) in row.chunks_exact_mut(3).enumerate() {
                    let xf = x as f64;
                    let w = inv[2][0] * xf + inv[2][1] * yf + inv[2][2];
                    if w.abs() < 1e-12 {
                        continue;
                    }
                    let sx = (inv[0][0] * xf + inv[0][1] * yf + inv[0][2]) / w;
                    let sy = (inv[1][0] * xf + inv[1][1] * yf + inv[1][2]) / w;
                    self.sample_into(&at, sx, sy, border, o);
                }
            }
        }
        out
    }

    /// Scale + translation only (no rotation or shear: upstream's default hyp): the source
    /// column and row of every output pixel come from two small tables.
    fn warp_axis_aligned(&self, inv: &[[f64; 3]; 3], at: &Src, out: &mut RgbBuf, border: u8) {
        const BITS: u32 = 10;
        const ONE: i64 = 1 << BITS;
        // Per output coordinate: first source index (or -1 .. len for partly outside; counted
        // from the window's corner `origin`) and weight.
        let table = |n_out: usize, scale: f64, offset: f64, n_src: usize, origin: i64| {
            (0..n_out)
                .map(|i| {
                    let s = scale * i as f64 + offset;
                    if !(s > -1.0 && s < n_src as f64) {
                        return (i64::MIN, 0);
                    }
                    let fp = (s * ONE as f64 + (ONE as f64 + 0.5)) as i64 - ONE;
                    ((fp >> BITS) - origin, (fp & (ONE - 1)) as u32)
                })
                .collect::<Vec<(i64, u32)>>()
        };
        let (sw, sh) = (self.width as i64, self.height as i64);
        let xs = table(out.width, inv[0][0], inv[0][2], at.full.0, at.origin.0);
        let ys = table(out.height, inv[1][1], inv[1][2], at.full.1, at.origin.1);
        // Columns whose two taps are both inside the source.
        let inner = |x0: i64| x0 >= 0 && x0 + 1 < sw;
        // The run of such columns (x0 is monotonic in x), if they are contiguous.
        let interior = {
            let first = xs.iter().position(|&(x0, _)| x0 != i64::MIN && inner(x0));
            first.map(|c0| {
                let len = xs[c0..]
                    .iter()
                    .take_while(|&&(x0, _)| x0 != i64::MIN && inner(x0))
                    .count();
                (c0, c0 + len)
            })
        };
        // The interior's horizontal taps, per output byte: where its left tap sits in the
        // vertically blended row (which starts at source byte `lo`), and its weight.
        let hpass = interior.map(|(c0, c1)| {
            let lo = xs[c0].0.min(xs[c1 - 1].0) as usize * 3;
            let hi = (xs[c0].0.max(xs[c1 - 1].0) as usize + 2) * 3;
            let (mut idx, mut fx) = (Vec::with_capacity((c1 - c0) * 3), Vec::new());
            for &(x0, f) in &xs[c0..c1] {
                for k in 0..3 {
                    idx.push((x0 as usize * 3 + k - lo) as i32);
                    fx.push(f);
                }
            }
            let reach = idx.iter().map(|&i| i as usize + 3).max().unwrap_or(0);
            HPass {
                lo,
                hi,
                idx,
                fx,
                reach,
            }
        });
        let stride = out.width * 3;
        let d = &self.data;
        let b = border as u32;
        for (row, &(y0, fy)) in out.data.chunks_exact_mut(stride).zip(&ys) {
            if y0 == i64::MIN {
                continue;
            }
            let gy = ONE as u32 - fy;
            let get_row = |yy: i64| {
                (yy >= 0 && yy < sh)
                    .then(|| &d[(yy * sw * 3) as usize..((yy + 1) * sw * 3) as usize])
            };
            let (ra, rb) = (get_row(y0), get_row(y0 + 1));
            if let (Some(ra), Some(rb)) = (ra, rb) {
                // Both source rows exist: interior columns (both taps inside) in one tight
                // loop, the few edge columns by the general path below.
                if let (Some((c0, c1)), Some(hpass)) = (interior, &hpass) {
                    // Separable: the two source rows blended vertically over the span the
                    // interior columns read (vectorises), then two taps per output channel.
                    // Same integer sum as the 4-tap form, so the same results.
                    let (lo, hi) = (hpass.lo, hpass.hi);
                    VROW.with(|cell| {
                        let mut v = cell.borrow_mut();
                        v.resize(hi - lo, 0);
                        blend_rows(&ra[lo..hi], &rb[lo..hi], gy, fy, &mut v);
                        let out = &mut row[c0 * 3..c1 * 3];
                        let done = hpass.run(&v, out);
                        for (j, o) in out.iter_mut().enumerate().skip(done) {
                            let (i, f) = (hpass.idx[j] as usize, hpass.fx[j]);
                            *o = ((v[i] * (ONE as u32 - f) + v[i + 3] * f + (1 << 19)) >> 20) as u8;
                        }
                    });
                }
            }
            // The columns the interior pass did not write (all of them without both rows).
            let (skip0, skip1) = match (ra.is_some() && rb.is_some(), interior) {
                (true, Some(span)) => span,
                _ => (0, 0),
            };
            for x in (0..skip0).chain(skip1..out.width) {
                let (x0, fx) = xs[x];
                if x0 == i64::MIN {
                    continue;
                }
                let o = &mut row[x * 3..x * 3 + 3];
                let gx = ONE as u32 - fx;
                if let (Some(ra), Some(rb), true) = (ra, rb, inner(x0)) {
                    let i = (x0 * 3) as usize;
                    let (a, c) = (&ra[i..i + 6], &rb[i..i + 6]);
                    for k in 0..3 {
                        let top = a[k] as u32 * gx + a[k + 3] as u32 * fx;
                        let bot = c[k] as u32 * gx + c[k + 3] as u32 * fx;
                        o[k] = ((top * gy + bot * fy + (1 << 19)) >> 20) as u8;
                    }
                } else {
                    let px = |r: Option<&[u8]>, xx: i64, k: usize| -> u32 {
                        match r {
                            Some(r) if xx >= 0 && xx < sw => r[(xx * 3) as usize + k] as u32,
                            _ => b,
                        }
                    };
                    for (k, ok) in o.iter_mut().enumerate() {
                        let top = px(ra, x0, k) * gx + px(ra, x0 + 1, k) * fx;
                        let bot = px(rb, x0, k) * gx + px(rb, x0 + 1, k) * fx;
                        *ok = ((top * gy + bot * fy + (1 << 19)) >> 20) as u8;
                    }
                }
            }
        }
    }

    /// Bilinear sample at (sx, sy) of the full source into `o`; pixels outside the full source
    /// or the window `self` read as `border`.
    #[inline(always)]
    fn sample_into(&self, at: &Src, sx: f64, sy: f64, border: u8, o: &mut [u8]) {
        const BITS: i64 = 10;
        const ONE: i64 = 1 << BITS;
        let (sw, sh) = (self.width as i64, self.height as i64);
        if !(sx > -1.0 && sy > -1.0 && sx < at.full.0 as f64 && sy < at.full.1 as f64) {
            return; // already border
        }
        // sx, sy > -1 here, so the shifted values are positive and truncation rounds half up
        // (f64::round is a libm call on baseline x86-64).
        let fxp = (sx * ONE as f64 + (ONE as f64 + 0.5)) as i64 - ONE;
        let fyp = (sy * ONE as f64 + (ONE as f64 + 0.5)) as i64 - ONE;
        let (x0, y0) = ((fxp >> BITS) - at.origin.0, (fyp >> BITS) - at.origin.1);
        let (fx, fy) = ((fxp & (ONE - 1)) as u32, (fyp & (ONE - 1)) as u32);
        let (gx, gy) = (ONE as u32 - fx, ONE as u32 - fy);
        let d = &self.data;
        if x0 >= 0 && y0 >= 0 && x0 + 1 < sw && y0 + 1 < sh {
            let i00 = ((y0 * sw + x0) * 3) as usize;
            let i01 = i00 + sw as usize * 3;
            let (a, b) = (&d[i00..i00 + 6], &d[i01..i01 + 6]);
            for c in 0..3 {
                let top = a[c] as u32 * gx + a[c + 3] as u32 * fx;
                let bot = b[c] as u32 * gx + b[c + 3] as u32 * fx;
                o[c] = ((top * gy + bot * fy + (1 << 19)) >> 20) as u8;
            }
        } else {
            let get = |xx: i64, yy: i64, c: usize| -> u32 {
                if xx >= 0 && yy >= 0 && xx < sw && yy < sh {
                    d[((yy * sw + xx) * 3) as usize + c] as u32
                } else {
                    border as u32
                }
            };
            for (c, oc) in o.iter_mut().enumerate().take(3) {
                let top = get(x0, y0, c) * gx + get(x0 + 1, y0, c) * fx;
                let bot = get(x0, y0 + 1, c) * gx + get(x0 + 1, y0 + 1, c) * fx;
                *oc = ((top * gy + bot * fy + (1 << 19)) >> 20) as u8;
            }
        }
    }
}

/// AVX2 access to 8 interleaved RGB pixels at a time, shared by the pixel kernels.
#[cfg(target_arch = "x86_64")]
pub(crate) mod rgb8 {
    use std::arch::x86_64::*;

    /// The shuffles of [`load`]: per channel, pixels 0–3 from bytes 0..12 (low lane) and 4–7
    /// from bytes 12..24 (high lane, loaded from byte 8), each byte zero-extended to an i32.
    #[target_feature(enable = "avx2")]
    pub(crate) fn masks() -> [__m256i; 3] {
        std::array::from_fn(|c| {
            let mut m = [-1i8; 32];
            for k in 0..4 {
                m[4 * k] = (3 * k + c) as i8;
                m[16 + 4 * k] = (4 + 3 * k + c) as i8;
            }
            // SAFETY: reads 32 bytes of a 32-byte array.
            unsafe { _mm256_loadu_si256(m.as_ptr().cast()) }
        })
    }

    /// The r, g and b values of the 8 pixels in `px[..24]`, as 8 × i32 each.
    ///
    /// # Safety
    /// `px` holds at least 24 bytes.
    #[target_feature(enable = "avx2")]
    #[inline]
    pub(crate) unsafe fn load(px: &[u8], masks: &[__m256i; 3]) -> [__m256i; 3] {
        let src = _mm256_set_m128i(
            _mm_loadu_si128(px.as_ptr().add(8).cast()),
            _mm_loadu_si128(px.as_ptr().cast()),
        );
        masks.map(|m| _mm256_shuffle_epi8(src, m))
    }
}

/// The vertical half of the axis-aligned warp's interior: `v[k] = a[k] * ga + c[k] * gc`.
fn blend_rows(a: &[u8], c: &[u8], ga: u32, gc: u32, v: &mut [u32]) {
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            done = a.len().min(c.len()).min(v.len()) / 8 * 8;
            // SAFETY: AVX2 is present; all three slices are at least `done` long.
            unsafe { blend_rows_avx2(&a[..done], &c[..done], ga, gc, &mut v[..done]) };
        }
    }
    for ((d, &a), &c) in v[done..].iter_mut().zip(&a[done..]).zip(&c[done..]) {
        *d = a as u32 * ga + c as u32 * gc;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn blend_rows_avx2(a: &[u8], c: &[u8], ga: u32, gc: u32, v: &mut [u32]) {
    use std::arch::x86_64::*;
    let (wa, wc) = (_mm256_set1_epi32(ga as i32), _mm256_set1_epi32(gc as i32));
    for ((a, c), d) in a
        .chunks_exact(8)
        .zip(c.chunks_exact(8))
        .zip(v.chunks_exact_mut(8))
    {
        let x = _mm256_cvtepu8_epi32(_mm_loadl_epi64(a.as_ptr() as *const __m128i));
        let y = _mm256_cvtepu8_epi32(_mm_loadl_epi64(c.as_ptr() as *const __m128i));
        let r = _mm256_add_epi32(_mm256_mullo_epi32(x, wa), _mm256_mullo_epi32(y, wc));
        _mm256_storeu_si256(d.as_mut_ptr() as *mut __m256i, r);
    }
}

/// The horizontal half of the axis-aligned warp's interior: output byte `j` is
/// `(v[idx[j]] * (1024 - fx[j]) + v[idx[j] + 3] * fx[j] + 2^19) >> 20` of the vertically blended
/// row `v` (10-bit weights both ways).
struct HPass {
    /// The source byte range the interior reads (the blended row's extent).
    lo: usize,
    hi: usize,
    idx: Vec<i32>,
    fx: Vec<u32>,
    /// The largest index read, `max(idx) + 3`.
    reach: usize,
}

impl HPass {
    /// Writes the longest prefix of `out` that is whole groups of 8 bytes with AVX2; returns
    /// its length (0 without AVX2). The caller finishes the rest.
    fn run(&self, v: &[u32], out: &mut [u8]) -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                let n = out.len() / 8 * 8;
                // Every tap inside the blended row (checked here, not per gather).
                if self.reach < v.len() {
                    // SAFETY: AVX2 is present; every gathered index (idx ≥ 0 by construction,
                    // idx + 3 ≤ reach) is below v.len() (checked above).
                    unsafe { hpass_avx2(&self.idx[..n], &self.fx[..n], v, &mut out[..n]) };
                    return n;
                }
            }
        }
        let _ = (v, out);
        0
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn hpass_avx2(idx: &[i32], fx: &[u32], v: &[u32], out: &mut [u8]) {
    use std::arch::x86_64::*;
    let one = _mm256_set1_epi32(1024);
    let round = _mm256_set1_epi32(1 << 19);
    let three = _mm256_set1_epi32(3);
    let base = v.as_ptr() as *const i32;
    for ((ix, f), o) in idx
        .chunks_exact(8)
        .zip(fx.chunks_exact(8))
        .zip(out.chunks_exact_mut(8))
    {
        let i = _mm256_loadu_si256(ix.as_ptr() as *const __m256i);
        let f = _mm256_loadu_si256(f.as_ptr() as *const __m256i);
        let a = _mm256_i32gather_epi32::<4>(base, i);
        let b = _mm256_i32gather_epi32::<4>(base, _mm256_add_epi32(i, three));
        let g = _mm256_sub_epi32(one, f);
        let sum = _mm256_add_epi32(
            _mm256_add_epi32(_mm256_mullo_epi32(a, g), _mm256_mullo_epi32(b, f)),
            round,
        );
        let r = _mm256_srli_epi32::<20>(sum);
        // 8 × i32 (each ≤ 255) → 8 bytes.
        let w = _mm256_packus_epi32(r, r);
        let bytes = _mm256_packus_epi16(w, w);
        let lo = _mm256_castsi256_si128(bytes);
        let hi = _mm256_extracti128_si256::<1>(bytes);
        _mm_storel_epi64(o.as_mut_ptr() as *mut __m128i, _mm_unpacklo_epi32(lo, hi));
    }
}

/// Where a warp's source window lies in the full source.
struct Src {
    /// The window's top-left corner in full-source pixels.
    origin: (i64, i64),
    /// The full source's width and height.
    full: (usize, usize),
}

/// Per-output-coordinate filter taps: a start index and a fixed number of weights.
struct Taps {
    start: Vec<usize>,
    n: usize,
    w: Vec<f32>,
}

impl Taps {
    fn of(&self, i: usize) -> (usize, &[f32]) {
        (self.start[i], &self.w[i * self.n..(i + 1) * self.n])
    }
}

fn taps(src: usize, dst: usize, interp: Interp) -> Taps {
    let scale = src as f64 / dst as f64;
    if interp == Interp::Area && scale > 1.0 {
        // Each output pixel averages the source interval [i*scale, (i+1)*scale).
        let n = (scale.ceil() as usize + 1).min(src);
        let mut start = Vec::with_capacity(dst);
        let mut w = vec![0f32; dst * n];
        for i in 0..dst {
            let a = i as f64 * scale;
            let b = ((i + 1) as f64 * scale).min(src as f64);
            // Shift left if needed so every tap lies inside the source (extra taps weigh 0).
            let s0 = (a.floor() as usize).min(src - n);
            start.push(s0);
            for k in 0..n {
                let p = s0 + k;
                if p >= src {
                    break;
                }
                let lo = a.max(p as f64);
                let hi = b.min(p as f64 + 1.0);
                if hi > lo {
                    w[i * n + k] = ((hi - lo) / scale) as f32;
                }
            }
        }
        return Taps { start, n, w };
    }
    let mut start = Vec::with_capacity(dst);
    let mut w = vec![0f32; dst * 2];
    for i in 0..dst {
        let s = (i as f64 + 0.5) * scale - 0.5;
        let mut s0 = s.floor();
        let mut f = s - s0;
        if s0 < 0.0 {
            s0 = 0.0;
            f = 0.0;
        }
        let mut s0 = s0 as usize;
        if s0 + 1 >= src {
            s0 = src - 1;
            f = 0.0;
        }
        // Keep both taps inside the source: the second weight is 0 at the right edge.
        if s0 + 1 >= src {
            if src >= 2 {
                start.push(src - 2);
                w[i * 2] = 0.0;
                w[i * 2 + 1] = 1.0;
            } else {
                start.push(0);
                w[i * 2] = 1.0;
                w[i * 2 + 1] = 0.0;
            }
            continue;
        }
        start.push(s0);
        w[i * 2] = (1.0 - f) as f32;
        w[i * 2 + 1] = f as f32;
    }
    if src < 2 {
        // A 1-pixel axis: a single tap.
        return Taps {
            start: vec![0; dst],
            n: 1,
            w: vec![1.0; dst],
        };
    }
    Taps { start, n: 2, w }
}

/// Inverse of a 3×3 matrix; `None` if singular.
pub fn invert3(m: &[[f64; 3]; 3]) -> Option<[[f64; 3]; 3]> {
    let [[a, b, c], [d, e, f], [g, h, i]] = *m;
    let co = [
        e * i - f * h,
        -(d * i - f * g),
        d * h - e * g,
        -(b * i - c * h),
        a * i - c * g,
        -(a * h - b * g),
        b * f - c * e,
        -(a * f - c * d),
        a * e - b * d,
    ];
    let det = a * co[0] + b * co[1] + c * co[2];
    if det.abs() < 1e-15 || !det.is_finite() {
        return None;
    }
    let k = 1.0 / det;
    Some([
        [co[0] * k, co[3] * k, co[6] * k],
        [co[1] * k, co[4] * k, co[7] * k],
        [co[2] * k, co[5] * k, co[8] * k],
    ])
}

/// 3×3 matrix product `a @ b`.
pub fn matmul3(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for r in 0..3 {
        for c in 0..3 {
            out[r][c] = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_identity_and_constant() {
        let im = RgbBuf::filled(7, 5, [10, 20, 30]);
        for interp in [Interp::Linear, Interp::Area] {
            let up = im.resize(13, 11, interp);
            assert!(up.data.chunks(3).all(|p| p == [10, 20, 30]));
            let down = im.resize(3, 2, interp);
            assert!(down.data.chunks(3).all(|p| p == [10, 20, 30]));
        }
    }

    #[test]
    fn area_halving_averages() {
        let mut im = RgbBuf::filled(4, 2, [0; 3]);
        im.put_pixel(0, 0, [100, 100, 100]);
        im.put_pixel(1, 1, [100, 100, 100]);
        let d = im.resize(2, 1, Interp::Area);
        assert_eq!(d.pixel(0, 0), [50, 50, 50]);
        assert_eq!(d.pixel(1, 0), [0, 0, 0]);
    }

    #[test]
    fn flips_are_involutions() {
        let mut im = RgbBuf::filled(5, 3, [0; 3]);
        im.put_pixel(0, 0, [1, 2, 3]);
        let orig = im.clone();
        im.flip_lr();
        assert_eq!(im.pixel(4, 0), [1, 2, 3]);
        im.flip_ud();
        assert_eq!(im.pixel(4, 2), [1, 2, 3]);
        im.flip_ud();
        im.flip_lr();
        assert_eq!(im, orig);
    }

    #[test]
    fn axis_aligned_warp_matches_general_path() {
        let mut im = RgbBuf::filled(37, 23, [0; 3]);
        for (i, v) in im.data.iter_mut().enumerate() {
            *v = (i * 7 % 251) as u8;
        }
        let m = [[1.37, 0.0, -5.2], [0.0, 0.61, 3.9], [0.0, 0.0, 1.0]];
        let fast = im.warp(&m, 50, 30, 114);
        // The same transform with a negligible rotation goes through the general path.
        let m2 = [[1.37, 1e-13, -5.2], [0.0, 0.61, 3.9], [0.0, 0.0, 1.0]];
        let slow = im.warp(&m2, 50, 30, 114);
        let diff = fast
            .data
            .iter()
            .zip(&slow.data)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max();
        assert!(diff.unwrap() <= 1, "{diff:?}");
    }

    #[test]
    fn warp_horizontal_pass_vector_equals_scalar() {
        // Blended rows hold up to 255 * 1024; taps run forwards and backwards (a mirror).
        let v: Vec<u32> = (0..200u32).map(|i| (i * 7919) % (255 * 1024 + 1)).collect();
        for n in 0..60usize {
            for backwards in [false, true] {
                let idx: Vec<i32> = (0..n)
                    .map(|j| {
                        let (px, k) = (j / 3, j % 3);
                        let px = if backwards { n / 3 - px } else { px };
                        (px * 5 / 2 * 3 + k) as i32
                    })
                    .collect();
                let fx: Vec<u32> = (0..n).map(|j| (j as u32 * 389) % 1025).collect();
                let reach = idx.iter().map(|&i| i as usize + 3).max().unwrap_or(0);
                let hp = HPass {
                    lo: 0,
                    hi: v.len(),
                    idx,
                    fx,
                    reach,
                };
                let mut out = vec![0u8; n];
                let done = hp.run(&v, &mut out);
                #[cfg(target_arch = "x86_64")]
                if std::is_x86_feature_detected!("avx2") {
                    assert_eq!(done, n / 8 * 8);
                }
                for (j, &got) in out.iter().enumerate().take(done) {
                    let (i, f) = (hp.idx[j] as usize, hp.fx[j]);
                    let want = (v[i] * (1024 - f) + v[i + 3] * f + (1 << 19)) >> 20;
                    assert_eq!(got as u32, want, "n {n} j {j} backwards {backwards}");
                }
            }
        }
    }

    #[test]
    fn axis_aligned_warp_equals_per_pixel_sampling() {
        let mut im = RgbBuf::filled(53, 41, [0; 3]);
        for (i, v) in im.data.iter_mut().enumerate() {
            *v = (i * 7 % 251) as u8;
        }
        let at = Src {
            origin: (0, 0),
            full: (53, 41),
        };
        // Shrink, enlarge, mirror, and shifts that leave part of the output outside.
        for (sx, tx, sy, ty) in [
            (1.0, 0.0, 1.0, 0.0),
            (0.7, -3.3, 1.9, 5.1),
            (1.37, 10.2, 0.61, -7.9),
            (-1.2, 60.0, 0.9, 2.0),
            (2.5, -40.0, 2.5, -30.0),
        ] {
            let m = [[sx, 0.0, tx], [0.0, sy, ty], [0.0, 0.0, 1.0]];
            let (w, h) = (67, 45);
            let fast = im.warp(&m, w, h, 114);
            let inv = invert3(&m).unwrap();
            let mut naive = RgbBuf::filled(w, h, [114; 3]);
            for y in 0..h {
                for x in 0..w {
                    let (xs, ys) = (
                        inv[0][0] * x as f64 + inv[0][2],
                        inv[1][1] * y as f64 + inv[1][2],
                    );
                    let o = (y * w + x) * 3;
                    im.sample_into(&at, xs, ys, 114, &mut naive.data[o..o + 3]);
                }
            }
            assert!(fast == naive, "scale ({sx}, {sy}) shift ({tx}, {ty})");
        }
    }

    #[test]
    fn warp_identity_and_translation() {
        let mut im = RgbBuf::filled(6, 4, [0; 3]);
        im.put_pixel(2, 1, [200, 0, 0]);
        let id = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
        assert_eq!(im.warp(&id, 6, 4, 114), im);
        let t = [[1.0, 0.0, 3.0], [0.0, 1.0, 2.0], [0.0, 0.0, 1.0]];
        let w = im.warp(&t, 10, 8, 114);
        assert_eq!(w.pixel(5, 3), [200, 0, 0]);
        assert_eq!(w.pixel(0, 0), [114, 114, 114]);
    }
}
