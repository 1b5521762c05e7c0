//! `--cache disk`: each decoded image (after EXIF orientation, before resizing — as upstream's
//! `.npy` cache) is kept next to its source as `<file name>.yfraw`, raw RGB behind a 32-byte
//! header, so later epochs and runs read it instead of decoding the JPEG again.
//!
//! Header: magic `YFRAW\x01\0\0`, width and height (u32 LE), the source file's length (u64 LE)
//! and modification time in nanoseconds since the epoch (i64 LE). A cache file whose header
//! does not match its source (edited, replaced, truncated) is ignored and rewritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::imgbuf::RgbBuf;

const MAGIC: &[u8; 8] = b"YFRAW\x01\0\0";
const HEADER: usize = 32;

/// Where the cache of `image` lives: `photo.jpg` → `photo.jpg.yfraw`.
pub fn cache_path(image: &Path) -> PathBuf {
    let mut name = image.file_name().unwrap_or_default().to_os_string();
    name.push(".yfraw");
    image.with_file_name(name)
}

/// The source's (length, mtime in ns) that a cache file records.
fn source_stamp(image: &Path) -> std::io::Result<(u64, i64)> {
    let m = std::fs::metadata(image)?;
    let mtime = m
        .modified()?
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    Ok((m.len(), mtime))
}

/// The (width, height) a cache header describes, if it is ours, matches `stamp` (the
/// source's length and mtime) and promises exactly `file_len` bytes.
fn check_header(header: &[u8], stamp: (u64, i64), file_len: u64) -> Option<(usize, usize)> {
    if header.len() < HEADER || &header[..8] != MAGIC {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().unwrap()) as usize;
    let (w, h) = (u32_at(8), u32_at(12));
    let len = u64::from_le_bytes(header[16..24].try_into().ok()?);
    let mtime = i64::from_le_bytes(header[24..32].try_into().ok()?);
    let ok = (len, mtime) == stamp && file_len == (HEADER + w * h * 3) as u64 && w > 0 && h > 0;
    ok.then_some((w, h))
}

/// Whether `image` has a cache file that matches it, reading only the header (the start-up
/// check of every image: the pixels are read when the image is used).
pub fn is_fresh(image: &Path) -> bool {
    use std::io::Read;
    let Ok(stamp) = source_stamp(image) else {
        return false;
    };
    let Ok(mut f) = std::fs::File::open(cache_path(image)) else {
        return false;
    };
    let Ok(file_len) = f.metadata().map(|m| m.len()) else {
        return false;
    };
    let mut header = [0u8; HEADER];
    f.read_exact(&mut header).is_ok() && check_header(&header, stamp, file_len).is_some()
}

/// The cached pixels of `image`, if a cache file exists and matches the source.
pub fn read(image: &Path) -> Option<RgbBuf> {
    let stamp = source_stamp(image).ok()?;
    let bytes = std::fs::read(cache_path(image)).ok()?;
    let (w, h) = check_header(&bytes, stamp, bytes.len() as u64)?;
    let mut data = bytes;
    data.drain(..HEADER);
    RgbBuf::from_raw(w, h, data)
}

/// Writes the cache file of `image` (a temporary file renamed into place, so a reader never
/// sees half a file).
pub fn write(image: &Path, im: &RgbBuf) -> std::io::Result<()> {
    let (len, mtime) = source_stamp(image)?;
    let dst = cache_path(image);
    let mut tmp_name = dst.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dst.with_file_name(tmp_name);
    let result = (|| {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
        f.write_all(MAGIC)?;
        f.write_all(&(im.width as u32).to_le_bytes())?;
        f.write_all(&(im.height as u32).to_le_bytes())?;
        f.write_all(&len.to_le_bytes())?;
        f.write_all(&mtime.to_le_bytes())?;
        f.write_all(&im.data)?;
        f.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        std::fs::rename(&tmp, &dst)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_staleness() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.jpg");
        std::fs::write(&src, b"pretend jpeg bytes").unwrap();
        assert!(read(&src).is_none(), "no cache yet");
        assert!(!is_fresh(&src));
        let im = RgbBuf::from_raw(3, 2, (0..18).collect()).unwrap();
        write(&src, &im).unwrap();
        assert_eq!(cache_path(&src), dir.path().join("a.jpg.yfraw"));
        assert!(is_fresh(&src));
        let back = read(&src).expect("cache read back");
        assert_eq!((back.width, back.height, &back.data), (3, 2, &im.data));
        // a changed source (other length) invalidates the cache
        std::fs::write(&src, b"another, longer pretend jpeg").unwrap();
        assert!(read(&src).is_none(), "stale cache must be ignored");
        assert!(!is_fresh(&src));
        // a truncated cache file is ignored
        write(&src, &im).unwrap();
        let p = cache_path(&src);
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(read(&src).is_none(), "truncated cache must be ignored");
        assert!(!is_fresh(&src));
        // no temporary files left behind
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .collect();
        assert!(left.iter().all(|n| !n.contains(".tmp")), "{left:?}");
    }
}
