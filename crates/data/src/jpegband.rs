//! Decoding a horizontal band of a JPEG's rows, for the mosaic: its window often shows only a
//! band of an image, and decoding just that band skips the entropy decoding, IDCT and colour
//! conversion of the rest. The band's pixels equal those of a full decode ([`load_rgb`]).
//!
//! - Below the band: the frame header's height is lowered, so the decoder stops there.
//! - Above the band (with a [`RowIndex`]: where each MCU row starts in the entropy-coded data and
//!   the DC predictors there, found once per image by parsing its Huffman codes): the entropy
//!   data before the band is dropped and the first DC difference of each component re-encoded
//!   against a zero predictor, which makes the band a baseline JPEG of its own.
//!
//! One MCU row of margin is kept on each cut side: chroma upsampling reads the neighbouring rows.
//!
//! [`load_rgb`]: crate::io::load_rgb

use std::borrow::Cow;
use std::path::Path;
use std::sync::OnceLock;

use crate::error::{DataError, Result};
use crate::imgbuf::RgbBuf;

thread_local! {
    /// A pixel buffer handed back by [`recycle`] for the next [`decode_band`].
    static RECYCLED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hands a decoded image's buffer back for the next [`decode_band`] on this thread (saves
/// allocating and zeroing a megabyte-sized buffer per image).
pub(crate) fn recycle(im: RgbBuf) {
    RECYCLED.with(|r| {
        let mut r = r.borrow_mut();
        if im.data.capacity() > r.capacity() {
            *r = im.data;
        }
    });
}

/// One colour component of the scan.
#[derive(Clone, Copy, Debug)]
struct Comp {
    /// Blocks per MCU, horizontally and vertically.
    h: usize,
    v: usize,
    /// DC and AC Huffman table ids.
    td: usize,
    ta: usize,
}

/// What the headers say, as far as cutting goes.
struct Layout {
    /// Byte offset of the frame header's 16-bit height.
    height_at: usize,
    width: usize,
    height: usize,
    /// Pixel rows per MCU row.
    mcu_h: usize,
    /// MCUs per MCU row.
    mcus_per_row: usize,
    /// Components in scan order.
    comps: Vec<Comp>,
    /// DHT tables in force at the scan: [class (0 DC, 1 AC)][id].
    tables: [[Option<Huffman>; 4]; 2],
    /// Restart interval (0: none).
    restart: usize,
    /// Byte offset where the entropy-coded data starts (after the scan header).
    scan_start: usize,
}

impl Layout {
    fn mcu_rows(&self) -> usize {
        self.height.div_ceil(self.mcu_h)
    }

    /// Reads the markers up to the first scan. `None` unless the file is an 8-bit sequential
    /// Huffman JPEG (SOF0/SOF1) with three components, all in its first scan (so the
    /// entropy-coded data is in raster order of MCU rows), and no Adobe colour-transform
    /// segment.
    fn parse(b: &[u8]) -> Option<Layout> {
        if b.get(..2)? != [0xFF, 0xD8] {
            return None;
        }
        let mut pos = 2;
        let mut tables: [[Option<Huffman>; 4]; 2] = Default::default();
        // (height offset, width, height, per component: id, h, v)
        type Frame = (usize, usize, usize, Vec<(u8, usize, usize)>);
        let mut frame: Option<Frame> = None;
        let mut restart = 0;
        loop {
            while *b.get(pos)? == 0xFF && *b.get(pos + 1)? == 0xFF {
                pos += 1; // fill bytes
            }
            if *b.get(pos)? != 0xFF {
                return None;
            }
            let marker = *b.get(pos + 1)?;
            let len = u16::from_be_bytes([*b.get(pos + 2)?, *b.get(pos + 3)?]) as usize;
            let seg = b.get(pos + 4..pos + 2 + len.max(2))?;
            match marker {
                0xC0 | 0xC1 => {
                    if *seg.first()? != 8 || *seg.get(5)? != 3 || frame.is_some() {
                        return None;
                    }
                    let height = u16::from_be_bytes([seg[1], seg[2]]) as usize;
                    let width = u16::from_be_bytes([seg[3], seg[4]]) as usize;
                    let comps = (0..3)
                        .map(|c| {
                            let s = seg.get(6 + 3 * c..9 + 3 * c)?;
                            let (h, v) = ((s[1] >> 4) as usize, (s[1] & 15) as usize);
                            ((1..=4).contains(&h) && (1..=4).contains(&v)).then_some((s[0], h, v))
                        })
                        .collect::<Option<Vec<_>>>()?;
                    if height == 0 || width == 0 {
                        return None; // height given later by a DNL marker
                    }
                    frame = Some((pos + 5, width, height, comps));
                }
                0xC4 => {
                    let mut t = seg;
                    while !t.is_empty() {
                        let (class, id) = ((t[0] >> 4) as usize, (t[0] & 15) as usize);
                        let counts: [u8; 16] = t.get(1..17)?.try_into().ok()?;
                        let n: usize = counts.iter().map(|&c| c as usize).sum();
                        let symbols = t.get(17..17 + n)?;
                        if class > 1 || id > 3 {
                            return None;
                        }
                        tables[class][id] = Some(Huffman::new(&counts, symbols)?);
                        t = &t[17 + n..];
                    }
                }
                0xDD => restart = u16::from_be_bytes([*seg.first()?, *seg.get(1)?]) as usize,
                0xDA => {
                    let (height_at, width, height, fcomps) = frame?;
                    let ns = *seg.first()? as usize;
                    if ns != 3 {
                        return None;
                    }
                    let mut comps = Vec::with_capacity(3);
                    for k in 0..ns {
                        let (id, t) = (*seg.get(1 + 2 * k)?, *seg.get(2 + 2 * k)?);
                        let &(_, h, v) = fcomps.iter().find(|c| c.0 == id)?;
                        let (td, ta) = ((t >> 4) as usize, (t & 15) as usize);
                        if td > 3 || ta > 3 {
                            return None;
                        }
                        comps.push(Comp { h, v, td, ta });
                    }
                    let hmax = comps.iter().map(|c| c.h).max()?;
                    let vmax = comps.iter().map(|c| c.v).max()?;
                    return Some(Layout {
                        height_at,
                        width,
                        height,
                        mcu_h: 8 * vmax,
                        mcus_per_row: width.div_ceil(8 * hmax),
                        comps,
                        tables,
                        restart,
                        scan_start: pos + 2 + len,
                    });
                }
                // Adobe segment: its colour transform is the decoder's business.
                0xEE if seg.starts_with(b"Adobe") => return None,
                0xDB | 0xE0..=0xEF | 0xFE => {}
                _ => return None, // progressive, lossless, arithmetic, EOI, …
            }
            pos += 2 + len;
        }
    }
}

/// One canonical Huffman table (JPEG Annex C/F).
struct Huffman {
    /// By the next 9 bits: (symbol, code length); length 0 when the code is longer.
    fast: [(u8, u8); 512],
    /// Per code length 1..=16: the largest code (-1: none), the first code, and where its
    /// symbols start in `symbols`.
    maxcode: [i32; 17],
    mincode: [i32; 17],
    valptr: [usize; 17],
    symbols: Vec<u8>,
    /// By symbol: (code, length); length 0 when the table has no such symbol.
    codes: [(u16, u8); 256],
}

impl Huffman {
    fn new(counts: &[u8; 16], symbols: &[u8]) -> Option<Huffman> {
        let mut h = Huffman {
            fast: [(0, 0); 512],
            maxcode: [-1; 17],
            mincode: [0; 17],
            valptr: [0; 17],
            symbols: symbols.to_vec(),
            codes: [(0, 0); 256],
        };
        let (mut code, mut k) = (0u32, 0usize);
        for len in 1..=16usize {
            let n = counts[len - 1] as usize;
            if n > 0 {
                h.valptr[len] = k;
                h.mincode[len] = code as i32;
                for _ in 0..n {
                    if code >= 1 << len {
                        return None; // over-subscribed
                    }
                    let sym = symbols[k];
                    h.codes[sym as usize] = (code as u16, len as u8);
                    if len <= 9 {
                        let shift = 9 - len;
                        let start = (code as usize) << shift;
                        for e in &mut h.fast[start..start + (1 << shift)] {
                            *e = (sym, len as u8);
                        }
                    }
                    code += 1;
                    k += 1;
                }
                h.maxcode[len] = code as i32 - 1;
            }
            code <<= 1;
        }
        Some(h)
    }

    /// The symbol whose code starts the 16 bits `bits`, and the code's length.
    #[inline]
    fn decode(&self, bits: u32) -> Option<(u8, u32)> {
        let (sym, len) = self.fast[(bits >> 7) as usize];
        if len > 0 {
            return Some((sym, len as u32));
        }
        (10..=16).find_map(|len| {
            let code = (bits >> (16 - len)) as i32;
            (code <= self.maxcode[len]).then(|| {
                let i = self.valptr[len] + (code - self.mincode[len]) as usize;
                (self.symbols[i], len as u32)
            })
        })
    }
}

/// The entropy-coded data from `start` with the stuffed zero bytes removed, up to the first
/// marker or once `limit` bytes are out, followed by 16 bytes of 1 bits (so reads up to 64
/// bits past the end are defined); and its length in bits.
fn unstuff(d: &[u8], start: usize, limit: usize) -> (Vec<u8>, u64) {
    let mut u = Vec::with_capacity(d.len().saturating_sub(start).min(limit) + 16);
    let mut i = start;
    while i < d.len() && u.len() < limit {
        let run = memchr::memchr(0xFF, &d[i..]).unwrap_or(d.len() - i);
        u.extend_from_slice(&d[i..i + run]);
        i += run;
        match d.get(i + 1) {
            Some(0) => {
                u.push(0xFF);
                i += 2;
            }
            Some(0xFF) => i += 1, // fill byte before a marker
            _ => break,           // a marker (or the end)
        }
    }
    let bits = u.len() as u64 * 8;
    u.extend_from_slice(&[0xFF; 16]);
    (u, bits)
}

/// The `n ≤ 32` bits at bit `p` of `u` (the caller keeps `p` within the data: [`unstuff`]
/// leaves 16 bytes of slack).
#[inline]
fn peek(u: &[u8], p: u64, n: u32) -> u32 {
    let i = (p >> 3) as usize;
    let w = u64::from_be_bytes(u[i..i + 8].try_into().expect("8 bytes"));
    if n == 0 {
        0
    } else {
        ((w << (p & 7)) >> (64 - n)) as u32
    }
}

/// A DC difference from its `s` magnitude bits (JPEG's EXTEND).
fn extend(bits: u32, s: u32) -> i32 {
    if s == 0 {
        0
    } else if bits < 1 << (s - 1) {
        bits as i32 - (1 << s) + 1
    } else {
        bits as i32
    }
}

/// Walks one MCU from bit `p`, calling `symbol(component, first DC of the component?, start,
/// code length, extra bits, symbol)` per Huffman symbol; updates the DC predictors. `None`
/// when the data does not parse.
fn walk_mcu(
    l: &Layout,
    (u, bits): (&[u8], u64),
    p: &mut u64,
    pred: &mut [i32; 3],
    mut symbol: impl FnMut(usize, bool, u64, u32, u32),
) -> Option<()> {
    for (ci, c) in l.comps.iter().enumerate() {
        let (dc, ac) = (l.tables[0][c.td].as_ref()?, l.tables[1][c.ta].as_ref()?);
        for b in 0..c.h * c.v {
            // Each symbol and its extra bits take at most 32 bits: reads stay in the slack.
            if *p > bits {
                return None;
            }
            let (s, len) = dc.decode(peek(u, *p, 16))?;
            let s = s as u32;
            if s > 11 {
                return None;
            }
            symbol(ci, b == 0, *p, len, s);
            pred[ci] += extend(peek(u, *p + len as u64, s), s);
            *p += (len + s) as u64;
            let mut k = 1;
            while k < 64 {
                if *p > bits {
                    return None;
                }
                let (rs, len) = ac.decode(peek(u, *p, 16))?;
                let (r, s) = ((rs >> 4) as u32, (rs & 15) as u32);
                symbol(ci, false, *p, len, s);
                *p += (len + s) as u64;
                if s == 0 {
                    if r != 15 {
                        break; // end of block
                    }
                    k += 16;
                } else {
                    k += r + 1;
                }
            }
            if k > 64 {
                return None;
            }
        }
    }
    Some(())
}

/// Where each MCU row of an image starts in its unstuffed entropy-coded data, with the DC
/// predictors there (10 bytes per MCU row).
#[derive(Debug)]
pub(crate) struct RowIndex {
    /// Per MCU row, and once more for the end: bit position and DC predictors.
    rows: Vec<(u32, [i16; 3])>,
    /// The file's length when indexed (a file rewritten since is not cut from above).
    file_len: usize,
}

impl RowIndex {
    /// Parses every Huffman code of the scan once. `None` when the image has restart markers,
    /// does not parse, or its data does not end where the last MCU does (then only the cut
    /// below the band is made).
    fn build(l: &Layout, d: &[u8]) -> Option<RowIndex> {
        if l.restart != 0 {
            return None;
        }
        let (u, bits) = unstuff(d, l.scan_start, usize::MAX);
        let (mut p, mut pred) = (0u64, [0i32; 3]);
        let mut rows = Vec::with_capacity(l.mcu_rows() + 1);
        let entry = |p: u64, pred: &[i32; 3]| -> Option<(u32, [i16; 3])> {
            let pred = pred.map(|v| i16::try_from(v).ok());
            Some((u32::try_from(p).ok()?, [pred[0]?, pred[1]?, pred[2]?]))
        };
        for _ in 0..l.mcu_rows() {
            rows.push(entry(p, &pred)?);
            for _ in 0..l.mcus_per_row {
                walk_mcu(l, (&u, bits), &mut p, &mut pred, |_, _, _, _, _| {})?;
            }
            if p > bits {
                return None;
            }
        }
        rows.push(entry(p, &pred)?);
        // Only the final byte's padding may follow the last MCU.
        (bits - p < 8).then_some(RowIndex {
            rows,
            file_len: d.len(),
        })
    }
}

/// Accumulates bits into bytes (unstuffed; see [`stuff`]).
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    /// Bits in `acc` not yet written out (< 8 between calls).
    n: u32,
}

impl BitWriter {
    /// Appends the low `n ≤ 32` bits of `v`.
    #[inline]
    fn put(&mut self, v: u32, n: u32) {
        if n == 0 {
            return;
        }
        self.acc = (self.acc << n) | (v as u64 & ((1u64 << n) - 1));
        self.n += n;
        while self.n >= 8 {
            self.n -= 8;
            self.out.push((self.acc >> self.n) as u8);
        }
        self.acc &= (1u64 << self.n) - 1;
    }

    /// Copies `n` bits of `u` from bit `p`, 56 at a time.
    fn copy(&mut self, u: &[u8], mut p: u64, mut n: u64) {
        while n >= 56 {
            let i = (p >> 3) as usize;
            let word = u64::from_be_bytes(u[i..i + 8].try_into().expect("8 bytes"));
            let v = (word << (p & 7)) >> 8; // the 56 bits at p
            let total = self.n + 56; // ≤ 63
            let all = (self.acc << 56) | v;
            let keep = total - 56;
            self.out
                .extend_from_slice(&(all >> keep).to_be_bytes()[1..]);
            self.acc = all & ((1u64 << keep) - 1);
            p += 56;
            n -= 56;
        }
        while n > 0 {
            let k = n.min(32) as u32;
            self.put(peek(u, p, k), k);
            p += k as u64;
            n -= k as u64;
        }
    }
}

/// Appends `u` to `out` with a zero byte after every 0xFF (JPEG byte stuffing).
fn stuff(u: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < u.len() {
        let run = memchr::memchr(0xFF, &u[i..]).map_or(u.len() - i, |r| r + 1);
        out.extend_from_slice(&u[i..i + run]);
        i += run;
        if out.last() == Some(&0xFF) {
            out.push(0);
        }
    }
}

/// The JPEG of MCU rows `k0..k1` alone: the headers with the height lowered, the entropy data
/// of those rows with each component's first DC difference re-encoded against a zero
/// predictor, and an end marker. `None` when a re-encoded difference has no code in the table.
fn band_jpeg(l: &Layout, d: &[u8], idx: &RowIndex, k0: usize, k1: usize) -> Option<Vec<u8>> {
    if d.len() != idx.file_len {
        return None;
    }
    let (p0, pred0) = idx.rows[k0];
    let p_end = idx.rows[k1].0 as u64;
    let (u, bits) = unstuff(d, l.scan_start, p_end.div_ceil(8) as usize + 8);
    if bits < p_end {
        return None;
    }
    let rows = (l.height - k0 * l.mcu_h).min((k1 - k0) * l.mcu_h);
    let mut head = d[..l.scan_start].to_vec();
    head[l.height_at..l.height_at + 2].copy_from_slice(&(rows as u16).to_be_bytes());
    let out = Vec::with_capacity((p_end - p0 as u64) as usize / 8 + 16);
    let mut w = BitWriter { out, acc: 0, n: 0 };
    // The first MCU symbol by symbol; every symbol copied but each component's first DC.
    let (mut p, mut pred) = (p0 as u64, pred0.map(i32::from));
    let mut ok = true;
    walk_mcu(
        l,
        (&u, bits),
        &mut p,
        &mut pred,
        |ci, first_dc, at, len, s| {
            if first_dc {
                let diff = extend(peek(&u, at + len as u64, s), s) + pred0[ci] as i32;
                let ns = 32 - diff.unsigned_abs().leading_zeros();
                let (code, clen) = l.tables[0][l.comps[ci].td]
                    .as_ref()
                    .map_or((0, 0), |t| t.codes[ns as usize]);
                ok &= clen > 0 && ns <= 11;
                w.put(code as u32, clen as u32);
                let bits = if diff < 0 { diff - 1 } else { diff };
                w.put(bits as u32, ns);
            } else {
                w.copy(&u, at, (len + s) as u64);
            }
        },
    )?;
    if !ok || p > p_end {
        return None;
    }
    w.copy(&u, p, p_end - p);
    let pad = (8 - w.n % 8) % 8;
    w.put(u32::MAX, pad);
    stuff(&w.out, &mut head);
    head.extend_from_slice(&[0xFF, 0xD9]);
    Some(head)
}

/// A band of an image's rows.
pub(crate) struct Band {
    /// The rows (full width), at least those asked for.
    pub im: RgbBuf,
    /// The image row of the band's first row.
    pub y0: usize,
    /// The image's full size (width, height).
    pub full: (usize, usize),
}

/// Decodes at least the rows `r0..r1` of a JPEG, with the pixels a full decode gives them;
/// `index` holds the image's [`RowIndex`] once built (it is built here the first time a band
/// that does not start at the top is asked for). `Ok(None)` when the file is not a JPEG this
/// applies to (see `Layout::parse`) or has an EXIF rotation: the caller decodes it in full.
pub(crate) fn decode_band(
    path: &Path,
    bytes: &[u8],
    rows: std::ops::Range<usize>,
    index: &OnceLock<Option<RowIndex>>,
) -> Result<Option<Band>> {
    let img_err = |detail: String| DataError::Image {
        path: path.to_path_buf(),
        detail,
    };
    let Some(l) = Layout::parse(bytes) else {
        return Ok(None);
    };
    let n = l.mcu_rows();
    let k1 = (rows.end.saturating_sub(1) / l.mcu_h + 2).min(n);
    let k0 = (rows.start / l.mcu_h)
        .saturating_sub(1)
        .min(k1.saturating_sub(1));
    let cut = if k0 > 0 || k1 < n {
        index
            .get_or_init(|| RowIndex::build(&l, bytes))
            .as_ref()
            .and_then(|idx| band_jpeg(&l, bytes, idx, k0, k1))
    } else {
        None
    };
    let (y0, jpeg) = match cut {
        Some(j) => (k0 * l.mcu_h, Cow::Owned(j)),
        None if k1 < n => {
            // No index: only the cut below the band.
            let mut b = bytes.to_vec();
            let keep = k1 * l.mcu_h;
            b[l.height_at..l.height_at + 2].copy_from_slice(&(keep as u16).to_be_bytes());
            (0, Cow::Owned(b))
        }
        None => (0, Cow::Borrowed(bytes)),
    };
    let options = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB)
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(&jpeg[..]),
        options,
    );
    dec.decode_headers().map_err(|e| img_err(e.to_string()))?;
    let rotated = dec
        .exif()
        .and_then(|e| image::metadata::Orientation::from_exif_chunk(e))
        .is_some_and(|o| o != image::metadata::Orientation::NoTransforms);
    if rotated || dec.input_colorspace() != Some(zune_core::colorspace::ColorSpace::YCbCr) {
        return Ok(None);
    }
    let (w, h) = dec
        .dimensions()
        .ok_or_else(|| img_err("no frame header".into()))?;
    // A recycled buffer: its old contents are overwritten, so only growth is zeroed.
    let mut px = RECYCLED.with(|r| std::mem::take(&mut *r.borrow_mut()));
    px.resize(w * h * 3, 0);
    dec.decode_into(&mut px)
        .map_err(|e| img_err(e.to_string()))?;
    let im = RgbBuf::from_raw(w, h, px)
        .ok_or_else(|| img_err("decoder returned a buffer of the wrong size".into()))?;
    Ok(Some(Band {
        im,
        y0,
        full: (l.width, l.height),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::load_rgb;
    use std::path::PathBuf;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jpeg")
            .join(name)
    }

    #[test]
    fn every_band_equals_a_full_decode() {
        for (name, cut_above) in [
            ("s444.jpg", Some(true)),
            ("s422.jpg", Some(true)),
            ("s420.jpg", Some(true)),
            // Restart markers: only the cut below.
            ("s444_rst.jpg", Some(false)),
            ("s422_rst.jpg", Some(false)),
            ("s420_rst.jpg", Some(false)),
            // Optimised tables: a re-encoded DC difference may have no code (then cut below).
            ("s420_optimized.jpg", None),
        ] {
            let path = fixture(name);
            let full = load_rgb(&path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let index = OnceLock::new();
            let (mut shortest, mut latest) = (full.height, 0);
            for r0 in 0..full.height {
                for r1 in r0 + 1..=full.height {
                    let band = decode_band(&path, &bytes, r0..r1, &index)
                        .unwrap()
                        .unwrap_or_else(|| panic!("{name}: declined"));
                    assert_eq!(band.full, (full.width, full.height), "{name}");
                    assert_eq!(band.im.width, full.width, "{name}");
                    let (y0, y1) = (band.y0, band.y0 + band.im.height);
                    assert!(
                        y0 <= r0 && y1 >= r1 && y1 <= full.height,
                        "{name} {r0}..{r1}"
                    );
                    let row = full.width * 3;
                    assert!(
                        band.im.data[(r0 - y0) * row..(r1 - y0) * row]
                            == full.data[r0 * row..r1 * row],
                        "{name}: rows {r0}..{r1} differ (band from {y0})"
                    );
                    shortest = shortest.min(band.im.height);
                    latest = latest.max(y0);
                }
            }
            assert!(shortest < full.height, "{name}: never cut below");
            if let Some(cut_above) = cut_above {
                assert_eq!(latest > 0, cut_above, "{name}: cut above");
                let indexed = index.get().is_some_and(|i| i.is_some());
                assert_eq!(indexed, cut_above, "{name}");
            }
        }
    }

    #[test]
    fn bands_decline_what_they_cannot_cut() {
        let index = OnceLock::new();
        for name in ["decline_progressive.jpg", "decline_rotated.jpg"] {
            let path = fixture(name);
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                decode_band(&path, &bytes, 0..1, &index).unwrap().is_none(),
                "{name}"
            );
        }
        // Not a JPEG at all, or cut off inside its headers.
        let path = fixture("s420.jpg");
        let bytes = std::fs::read(&path).unwrap();
        let png = b"\x89PNG\r\n";
        assert!(decode_band(&path, png, 0..1, &index).unwrap().is_none());
        assert!(decode_band(&path, &bytes[..200], 0..1, &index)
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_corrupt_scan_gives_no_index() {
        let path = fixture("s420.jpg");
        let mut bytes = std::fs::read(&path).unwrap();
        let l = Layout::parse(&bytes).unwrap();
        assert!(RowIndex::build(&l, &bytes).is_some());
        // Flip bits in the middle of the entropy-coded data: the codes no longer end where
        // the last MCU does (or stop parsing), so no index is trusted.
        let mid = (l.scan_start + bytes.len()) / 2;
        for b in &mut bytes[mid..mid + 8] {
            *b = if *b == 0xFF { 0xFF } else { !*b & 0xFE };
        }
        assert!(RowIndex::build(&l, &bytes).is_none());
    }

    #[test]
    fn corrupt_data_never_panics() {
        let path = fixture("s420.jpg");
        let good = std::fs::read(&path).unwrap();
        let l = Layout::parse(&good).unwrap();
        let stale = RowIndex::build(&l, &good).unwrap();
        for at in (l.scan_start..good.len() - 2).step_by(7) {
            for value in [0x00, 0xFF, 0x5A] {
                let mut bytes = good.clone();
                bytes[at] = value;
                // An index of the intact file applied to the damaged one, and a fresh one.
                let _ = band_jpeg(&l, &bytes, &stale, 1, 3);
                let _ = RowIndex::build(&l, &bytes);
                let _ = decode_band(&path, &bytes, 20..30, &OnceLock::new());
            }
        }
        // Cut short inside the entropy data.
        let short = &good[..(l.scan_start + good.len()) / 2];
        assert!(band_jpeg(&l, short, &stale, 1, 3).is_none());
        assert!(RowIndex::build(&l, short).is_none());
    }
}
