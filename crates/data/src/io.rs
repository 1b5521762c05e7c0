//! Finding images, the images/ → labels/ path rule, and decoding with EXIF orientation.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder, ImageReader};

use crate::error::{io_err, DataError, Result};
use crate::imgbuf::RgbBuf;

/// Image file extensions we decode (lower case).
pub const IMG_FORMATS: &[&str] = &["bmp", "jpeg", "jpg", "png", "tif", "tiff", "webp"];

/// Whether the path's extension is one of [`IMG_FORMATS`].
pub fn is_image_path(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| IMG_FORMATS.contains(&e.to_ascii_lowercase().as_str()))
        .unwrap_or(false)
}

/// Images found under dataset sources, plus the files skipped for not having an image extension.
#[derive(Clone, Debug, Default)]
pub struct ImageList {
    /// Image files, sorted and de-duplicated.
    pub images: Vec<PathBuf>,
    /// Files seen in source folders or lists that are not images.
    pub non_images: Vec<PathBuf>,
}

/// Lists images from sources as upstream: a folder (searched recursively), a `.txt` file of image
/// paths (`./x` and relative entries are taken relative to the list's folder), or an image.
pub fn list_images(sources: &[PathBuf]) -> Result<ImageList> {
    let mut out = ImageList::default();
    let push = |p: PathBuf, out: &mut ImageList| {
        if is_image_path(&p) {
            out.images.push(p);
        } else {
            out.non_images.push(p);
        }
    };
    for src in sources {
        if src.is_dir() {
            let mut files = Vec::new();
            walk(src, &mut files)?;
            for f in files {
                push(f, &mut out);
            }
        } else if src.is_file() {
            if is_image_path(src) {
                out.images.push(src.clone());
                continue;
            }
            let text = std::fs::read_to_string(src).map_err(io_err(src))?;
            let parent = src.parent().unwrap_or(Path::new("."));
            for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let p = if let Some(rest) = line.strip_prefix("./") {
                    parent.join(rest)
                } else {
                    let p = PathBuf::from(line);
                    if p.is_absolute() || p.exists() {
                        p
                    } else {
                        parent.join(p)
                    }
                };
                push(p, &mut out);
            }
        } else {
            return Err(DataError::SourceNotFound { path: src.clone() });
        }
    }
    out.images.sort();
    out.images.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains('.') && !n.starts_with('.') && !n.contains(".yfraw"))
        {
            // (`*.yfraw` are our own `--cache disk` files, not stray data.)
            out.push(p);
        }
    }
    Ok(())
}

/// The label file of an image: the last `/images/` component becomes `/labels/` and the
/// extension becomes `.txt` (upstream `img2label_paths`).
pub fn label_path(image: &Path) -> PathBuf {
    let sep = std::path::MAIN_SEPARATOR;
    let s = image.to_string_lossy();
    let (sa, sb) = (format!("{sep}images{sep}"), format!("{sep}labels{sep}"));
    let swapped = match s.rfind(&sa) {
        Some(i) => format!("{}{}{}", &s[..i], sb, &s[i + sa.len()..]),
        None => s.into_owned(),
    };
    // Replace the extension after the last dot (as upstream's rsplit('.', 1)).
    let stem = match swapped.rfind('.') {
        Some(i) if !swapped[i..].contains(sep) => &swapped[..i],
        _ => swapped.as_str(),
    };
    PathBuf::from(format!("{stem}.txt"))
}

/// What decoding found besides the pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DecodeNotes {
    /// A JPEG file lacks its end-of-image marker (truncated); the decoder still produced pixels.
    pub jpeg_truncated: bool,
}

/// Decodes an image to RGB with its EXIF orientation applied.
pub fn load_rgb(path: &Path) -> Result<RgbBuf> {
    load_rgb_checked(path).map(|(im, _)| im)
}

/// [`load_rgb`] plus integrity notes (used by the dataset scan).
pub fn load_rgb_checked(path: &Path) -> Result<(RgbBuf, DecodeNotes)> {
    let img_err = |detail: String| DataError::Image {
        path: path.to_path_buf(),
        detail,
    };
    let reader = ImageReader::open(path)
        .map_err(io_err(path))?
        .with_guessed_format()
        .map_err(io_err(path))?;
    let format = reader
        .format()
        .ok_or_else(|| img_err("not an image file (unrecognised content)".into()))?;
    let mut notes = DecodeNotes::default();
    if format == image::ImageFormat::Jpeg {
        notes.jpeg_truncated = !jpeg_has_eoi(path).map_err(io_err(path))?;
    }
    let mut decoder = reader.into_decoder().map_err(|e| img_err(e.to_string()))?;
    let orientation = decoder.orientation().map_err(|e| img_err(e.to_string()))?;
    let mut img = DynamicImage::from_decoder(decoder).map_err(|e| img_err(e.to_string()))?;
    img.apply_orientation(orientation);
    let rgb = img.into_rgb8();
    let (w, h) = (rgb.width() as usize, rgb.height() as usize);
    let buf = RgbBuf::from_raw(w, h, rgb.into_raw())
        .ok_or_else(|| img_err("decoder returned a buffer of the wrong size".into()))?;
    Ok((buf, notes))
}

thread_local! {
    /// A pixel buffer handed back by [`recycle`] for the next [`decode_jpeg_top`].
    static RECYCLED: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Hands a decoded image's buffer back for the next [`decode_jpeg_top`] on this thread (saves
/// allocating and zeroing a megabyte-sized buffer per image).
pub(crate) fn recycle(im: RgbBuf) {
    RECYCLED.with(|r| {
        let mut r = r.borrow_mut();
        if im.data.capacity() > r.capacity() {
            *r = im.data;
        }
    });
}

/// Where a JPEG keeps its height, and the height of one MCU row: what [`decode_jpeg_top`] needs
/// to make the decoder stop after the rows it is asked for.
struct JpegRows {
    /// Byte offset of the frame header's 16-bit height.
    height_at: usize,
    /// Image height in pixels.
    height: usize,
    /// Pixel rows per MCU row (8 × the largest vertical sampling factor).
    mcu_h: usize,
}

/// Reads the markers up to the first scan. `None` unless the file is an 8-bit sequential
/// Huffman JPEG (SOF0/SOF1) with three components, all in its first scan (so the entropy-coded
/// data is in raster order of MCU rows), and no Adobe colour-transform segment.
fn jpeg_rows(b: &[u8]) -> Option<JpegRows> {
    if b.get(..2)? != [0xFF, 0xD8] {
        return None;
    }
    let mut pos = 2;
    let mut frame: Option<(JpegRows, u8)> = None;
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
                let ncomp = *seg.get(5)?;
                if *seg.first()? != 8 || ncomp != 3 || frame.is_some() {
                    return None;
                }
                let height = u16::from_be_bytes([seg[1], seg[2]]) as usize;
                let vmax = (0..3)
                    .map(|c| seg.get(7 + 3 * c).map(|f| (f & 15) as usize))
                    .try_fold(0, |m, v| {
                        v.filter(|&v| (1..=4).contains(&v)).map(|v| v.max(m))
                    })?;
                if height == 0 {
                    return None; // height given later by a DNL marker
                }
                let rows = JpegRows {
                    height_at: pos + 5,
                    height,
                    mcu_h: 8 * vmax,
                };
                frame = Some((rows, ncomp));
            }
            0xDA => {
                let (rows, ncomp) = frame?;
                return (*seg.first()? == ncomp).then_some(rows);
            }
            // Adobe segment: its colour transform is the decoder's business; not ours to guess.
            0xEE if seg.starts_with(b"Adobe") => return None,
            0xC4 | 0xDB | 0xDD | 0xE0..=0xEF | 0xFE => {}
            _ => return None, // other frame types (progressive, lossless, arithmetic), EOI, …
        }
        pos += 2 + len;
    }
}

/// Decodes only the first rows of a JPEG, at least `rows` of them, with the pixels those rows
/// have in a full decode ([`load_rgb`]): the frame header's height is lowered (one MCU row
/// of margin kept, for the chroma upsampling of the last row) so the decoder stops there.
/// Returns the rows and the image's full height; `Ok(None)` when the file is not a JPEG this
/// applies to (see `jpeg_rows`) or has an EXIF rotation: the caller then decodes it in full.
pub(crate) fn decode_jpeg_top(
    path: &Path,
    mut bytes: Vec<u8>,
    rows: usize,
) -> Result<Option<(RgbBuf, usize)>> {
    let img_err = |detail: String| DataError::Image {
        path: path.to_path_buf(),
        detail,
    };
    let Some(layout) = jpeg_rows(&bytes) else {
        return Ok(None);
    };
    let keep = (rows.saturating_sub(1) / layout.mcu_h + 2) * layout.mcu_h;
    if keep < layout.height {
        bytes[layout.height_at..layout.height_at + 2].copy_from_slice(&(keep as u16).to_be_bytes());
    }
    let options = zune_core::options::DecoderOptions::default()
        .jpeg_set_out_colorspace(zune_core::colorspace::ColorSpace::RGB)
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX);
    let mut dec = zune_jpeg::JpegDecoder::new_with_options(
        zune_core::bytestream::ZCursor::new(&bytes[..]),
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
    RgbBuf::from_raw(w, h, px)
        .map(|im| Some((im, layout.height)))
        .ok_or_else(|| img_err("decoder returned a buffer of the wrong size".into()))
}

fn jpeg_has_eoi(path: &Path) -> std::io::Result<bool> {
    let mut f = std::fs::File::open(path)?;
    let len = f.seek(SeekFrom::End(0))?;
    if len < 2 {
        return Ok(false);
    }
    f.seek(SeekFrom::End(-2))?;
    let mut tail = [0u8; 2];
    f.read_exact(&mut tail)?;
    Ok(tail == [0xFF, 0xD9])
}

/// Writes an RGB buffer as an image; the format follows the extension (jpg quality 95).
pub fn save_rgb(im: &RgbBuf, path: &Path) -> Result<()> {
    let img_err = |detail: String| DataError::Image {
        path: path.to_path_buf(),
        detail,
    };
    let buf = image::RgbImage::from_raw(im.width as u32, im.height as u32, im.data.clone())
        .ok_or_else(|| img_err("buffer size does not match its dimensions".into()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    if ext == "jpg" || ext == "jpeg" {
        let file = std::fs::File::create(path).map_err(io_err(path))?;
        let mut w = std::io::BufWriter::new(file);
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, 95);
        buf.write_with_encoder(enc)
            .map_err(|e| img_err(e.to_string()))?;
        Ok(())
    } else {
        buf.save(path).map_err(|e| img_err(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jpeg")
            .join(name)
    }

    #[test]
    fn top_rows_equal_a_full_decode() {
        for name in [
            "s444.jpg",
            "s444_rst.jpg",
            "s422.jpg",
            "s422_rst.jpg",
            "s420.jpg",
            "s420_rst.jpg",
        ] {
            let path = fixture(name);
            let full = load_rgb(&path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            let mut shortest = full.height;
            for rows in 1..=full.height {
                let (top, h) = decode_jpeg_top(&path, bytes.clone(), rows)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{name}: declined"));
                assert_eq!(h, full.height, "{name}");
                assert_eq!(top.width, full.width, "{name}");
                assert!(top.height >= rows && top.height <= full.height, "{name}");
                let n = rows * full.width * 3;
                assert_eq!(
                    top.data[..n],
                    full.data[..n],
                    "{name}: first {rows} rows differ"
                );
                shortest = shortest.min(top.height);
            }
            // The point of it: asked for one row, it decoded fewer than all of them.
            assert!(shortest < full.height, "{name}: never stopped early");
        }
    }

    #[test]
    fn top_rows_decline_what_they_cannot_cut() {
        for name in ["decline_progressive.jpg", "decline_rotated.jpg"] {
            let path = fixture(name);
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                decode_jpeg_top(&path, bytes, 1).unwrap().is_none(),
                "{name}"
            );
        }
        // Not a JPEG at all, or cut off inside its headers.
        let path = fixture("s420.jpg");
        let bytes = std::fs::read(&path).unwrap();
        assert!(decode_jpeg_top(&path, b"\x89PNG\r\n".to_vec(), 1)
            .unwrap()
            .is_none());
        assert!(decode_jpeg_top(&path, bytes[..200].to_vec(), 1)
            .unwrap()
            .is_none());
    }

    #[test]
    fn label_rule() {
        let sep = std::path::MAIN_SEPARATOR;
        let p = PathBuf::from(format!("{sep}d{sep}images{sep}a{sep}images{sep}x.y.JPG"));
        assert_eq!(
            label_path(&p),
            PathBuf::from(format!("{sep}d{sep}images{sep}a{sep}labels{sep}x.y.txt"))
        );
        let q = PathBuf::from(format!("{sep}d{sep}imgs{sep}x.png"));
        assert_eq!(
            label_path(&q),
            PathBuf::from(format!("{sep}d{sep}imgs{sep}x.txt"))
        );
    }
}
