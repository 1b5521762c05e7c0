//! A tiny dataset of filled rectangles with exact labels, and a pixel/box consistency check.

use std::path::{Path, PathBuf};

use yolo_data::imgbuf::RgbBuf;
use yolo_data::io::save_rgb;
use yolo_data::Sample;

/// One colour per class; far from the dark background and from the 114 grey padding.
pub const COLOURS: [[u8; 3]; 6] = [
    [255, 0, 0],
    [0, 255, 0],
    [0, 0, 255],
    [255, 255, 0],
    [255, 0, 255],
    [0, 255, 255],
];

pub const BG: [u8; 3] = [10, 10, 10];

/// An image size (w, h) and a rectangle (x0, y0, x1, y1) in it.
pub type RectImage = ((usize, usize), (usize, usize, usize, usize));

/// Image sizes and rectangles, one per image, class = index.
pub const RECTS: [RectImage; 6] = [
    ((200, 150), (30, 40, 120, 110)),
    ((120, 240), (20, 100, 90, 200)),
    ((300, 300), (150, 20, 280, 120)),
    ((90, 160), (10, 10, 60, 60)),
    ((256, 128), (100, 30, 230, 100)),
    ((180, 180), (40, 60, 140, 150)),
];

/// Writes the dataset under `root/images`, `root/labels`; returns the images folder.
pub fn rect_dataset(root: &Path) -> PathBuf {
    let im_dir = root.join("images");
    let lb_dir = root.join("labels");
    std::fs::create_dir_all(&im_dir).unwrap();
    std::fs::create_dir_all(&lb_dir).unwrap();
    for (i, ((w, h), (x0, y0, x1, y1))) in RECTS.iter().enumerate() {
        let mut im = RgbBuf::filled(*w, *h, BG);
        for y in *y0..*y1 {
            for x in *x0..*x1 {
                im.put_pixel(x, y, COLOURS[i]);
            }
        }
        save_rgb(&im, &im_dir.join(format!("im{i}.png"))).unwrap();
        let (wf, hf) = (*w as f32, *h as f32);
        let label = format!(
            "{i} {} {} {} {}\n",
            (*x0 + *x1) as f32 / 2.0 / wf,
            (*y0 + *y1) as f32 / 2.0 / hf,
            (*x1 - *x0) as f32 / wf,
            (*y1 - *y0) as f32 / hf
        );
        std::fs::write(lb_dir.join(format!("im{i}.txt")), label).unwrap();
    }
    im_dir
}

fn is_colour(p: [u8; 3], c: [u8; 3]) -> bool {
    p.iter()
        .zip(c)
        .all(|(a, b)| (*a as i32 - b as i32).abs() <= 60)
}

/// Checks that each label box is the bounding box of its colour's pixels (within `tol` px) and
/// that few coloured pixels lie outside every box of their class (boxes filtered as too small
/// after augmentation may leave some, bounded by `stray_limit`).
/// With `loose_at_border`, a box touching the image border only has to contain its pixels:
/// upstream clips the transformed box, not the rotated shape, so a rotated shape cut by the
/// border gets a box larger than its visible part.
pub fn check_consistent(
    s: &Sample,
    tol: f32,
    stray_limit: usize,
    loose_at_border: bool,
) -> Result<(), String> {
    let (w, h) = (s.image.width, s.image.height);
    let boxes: Vec<(usize, [f32; 4])> = s
        .labels
        .iter()
        .map(|l| {
            (
                l[0] as usize,
                [
                    (l[1] - l[3] / 2.0) * w as f32,
                    (l[2] - l[4] / 2.0) * h as f32,
                    (l[1] + l[3] / 2.0) * w as f32,
                    (l[2] + l[4] / 2.0) * h as f32,
                ],
            )
        })
        .collect();
    let grow = |b: [f32; 4], m: f32| [b[0] - m, b[1] - m, b[2] + m, b[3] + m];
    let inside = |b: [f32; 4], x: usize, y: usize| {
        let (xf, yf) = (x as f32 + 0.5, y as f32 + 0.5);
        xf >= b[0] && xf <= b[2] && yf >= b[1] && yf <= b[3]
    };
    let overlap =
        |a: [f32; 4], b: [f32; 4]| a[0] < b[2] && b[0] < a[2] && a[1] < b[3] && b[1] < a[3];
    for (i, (c, b)) in boxes.iter().enumerate() {
        let g = grow(*b, tol + 1.0);
        if boxes
            .iter()
            .enumerate()
            .any(|(j, (c2, b2))| j != i && c2 == c && overlap(g, grow(*b2, tol + 1.0)))
        {
            continue;
        }
        let (mut x1, mut y1, mut x2, mut y2) = (usize::MAX, usize::MAX, 0usize, 0usize);
        let mut n = 0;
        for y in 0..h {
            for x in 0..w {
                if inside(g, x, y) && is_colour(s.image.pixel(x, y), COLOURS[*c]) {
                    x1 = x1.min(x);
                    y1 = y1.min(y);
                    x2 = x2.max(x + 1);
                    y2 = y2.max(y + 1);
                    n += 1;
                }
            }
        }
        if n == 0 {
            return Err(format!(
                "box {b:?} of class {c} covers none of its pixels ({})",
                s.path.display()
            ));
        }
        let px = [x1 as f32, y1 as f32, x2 as f32, y2 as f32];
        let at_border = b[0] < 0.5 || b[1] < 0.5 || b[2] > w as f32 - 0.5 || b[3] > h as f32 - 0.5;
        for k in 0..4 {
            let off = if k < 2 { b[k] - px[k] } else { px[k] - b[k] };
            let bad = if loose_at_border && at_border {
                off > tol
            } else {
                off.abs() > tol
            };
            if bad {
                return Err(format!(
                    "class {c}: label box {b:?} vs pixel box {px:?} (tol {tol}) in {}x{} ({})",
                    w,
                    h,
                    s.path.display()
                ));
            }
        }
    }
    let mut stray = 0;
    for y in 0..h {
        for x in 0..w {
            let p = s.image.pixel(x, y);
            for (c, col) in COLOURS.iter().enumerate() {
                if is_colour(p, *col)
                    && !boxes
                        .iter()
                        .any(|(bc, b)| *bc == c && inside(grow(*b, tol + 1.0), x, y))
                {
                    stray += 1;
                }
            }
        }
    }
    if stray > stray_limit {
        return Err(format!(
            "{stray} coloured pixels outside their boxes (limit {stray_limit}) ({})",
            s.path.display()
        ));
    }
    Ok(())
}
