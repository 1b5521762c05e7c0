//! Finding images, the images/ → labels/ path rule, and decoding with EXIF orientation.

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
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    decode_rgb(path, &bytes)
}

/// [`load_rgb_checked`] of a file's contents already read (`path` names it in errors).
pub(crate) fn decode_rgb(path: &Path, bytes: &[u8]) -> Result<(RgbBuf, DecodeNotes)> {
    let img_err = |detail: String| DataError::Image {
        path: path.to_path_buf(),
        detail,
    };
    let reader = ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(io_err(path))?;
    let format = reader
        .format()
        .ok_or_else(|| img_err("not an image file (unrecognised content)".into()))?;
    let mut notes = DecodeNotes::default();
    if format == image::ImageFormat::Jpeg {
        notes.jpeg_truncated = !bytes.ends_with(&[0xFF, 0xD9]);
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
