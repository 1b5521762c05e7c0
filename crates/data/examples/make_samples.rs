//! Writes the committed sample datasets under `datasets/samples/` (run from the workspace root):
//! `shapes/` (a tiny synthetic dataset) and `bad/` (one file per kind of bad data the scan handles).

use std::path::Path;

use yolo_data::imgbuf::RgbBuf;
use yolo_data::io::save_rgb;

/// An EXIF APP1 segment holding only Orientation = `o`.
fn exif_orientation_segment(o: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"II*\0");
    tiff.extend_from_slice(&8u32.to_le_bytes()); // offset of IFD0
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&o.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]);
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    let mut payload = b"Exif\0\0".to_vec();
    payload.extend_from_slice(&tiff);
    let mut seg = vec![0xFF, 0xE1];
    seg.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    seg.extend_from_slice(&payload);
    seg
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new("datasets/samples");
    let cfg = yolo_data::SynthConfig {
        out: root.join("shapes"),
        train: 8,
        val: 4,
        imgsz: 128,
        seed: 7,
        ..Default::default()
    };
    yolo_data::generate(&cfg)?;

    let bad = root.join("bad");
    let (im_dir, lb_dir) = (bad.join("images"), bad.join("labels"));
    std::fs::create_dir_all(&im_dir)?;
    std::fs::create_dir_all(&lb_dir)?;
    let mut im = RgbBuf::filled(32, 24, [200, 30, 30]);
    for y in 6..18 {
        for x in 8..20 {
            im.put_pixel(x, y, [20, 20, 220]);
        }
    }
    let good_row = "0 0.4375 0.5 0.375 0.5\n";
    let cases: &[(&str, Option<&str>)] = &[
        ("good", Some(good_row)),
        ("columns", Some("0 0.5 0.5 0.2\n")),
        ("six_columns", Some("0 0.5 0.5 0.2 0.2 0.9\n")),
        ("nan", Some("0 nan 0.5 0.2 0.2\n")),
        ("text", Some("zero 0.5 0.5 0.2 0.2\n")),
        ("negative", Some("0 0.5 -0.1 0.2 0.2\n")),
        ("out_of_range", Some("0 0.5 0.5 1.2 0.2\n")),
        ("class_too_big", Some("9 0.5 0.5 0.2 0.2\n")),
        (
            "duplicates",
            Some("0 0.4375 0.5 0.375 0.5\n1 0.2 0.2 0.1 0.1\n0 0.4375 0.5 0.375 0.5\n"),
        ),
        ("missing", None),
        ("empty", Some("")),
        (
            "polygon",
            Some("1 0.25 0.25 0.625 0.25 0.625 0.75 0.25 0.75\n"),
        ),
        (
            "odd_polygon",
            Some("1 0.25 0.25 0.625 0.25 0.625 0.75 0.25\n"),
        ),
    ];
    for (name, label) in cases {
        save_rgb(&im, &im_dir.join(format!("{name}.jpg")))?;
        if let Some(text) = label {
            std::fs::write(lb_dir.join(format!("{name}.txt")), text)?;
        }
    }
    // Not an image at all, though named like one.
    std::fs::write(im_dir.join("corrupt.jpg"), b"this is not a jpeg")?;
    std::fs::write(lb_dir.join("corrupt.txt"), good_row)?;
    // A truncated JPEG: the first half of a valid file.
    let bytes = std::fs::read(im_dir.join("good.jpg"))?;
    std::fs::write(im_dir.join("truncated.jpg"), &bytes[..bytes.len() / 2])?;
    std::fs::write(lb_dir.join("truncated.txt"), good_row)?;
    // Too small to train on.
    save_rgb(&RgbBuf::filled(8, 8, [1, 2, 3]), &im_dir.join("tiny.png"))?;
    // A file that is not an image.
    std::fs::write(im_dir.join("notes.md"), "not an image\n")?;
    // The other formats, each with the good label.
    for ext in ["png", "bmp", "tiff", "webp"] {
        save_rgb(&im, &im_dir.join(format!("format_{ext}.{ext}")))?;
        std::fs::write(lb_dir.join(format!("format_{ext}.txt")), good_row)?;
    }
    // EXIF orientation 6 (rotate 90° clockwise to display): stored 32×24, shown 24×32.
    let mut jpg = std::fs::read(im_dir.join("good.jpg"))?;
    let seg = exif_orientation_segment(6);
    jpg.splice(2..2, seg);
    std::fs::write(im_dir.join("exif_rot90.jpg"), jpg)?;
    std::fs::write(lb_dir.join("exif_rot90.txt"), good_row)?;
    std::fs::write(
        bad.join("data.yaml"),
        "# Deliberately bad data for the scan tests (see crates/data/examples/make_samples.rs).\n\
         path: .\ntrain: images\nval: images\nnames:\n  0: red\n  1: blue\n",
    )?;
    Ok(())
}
