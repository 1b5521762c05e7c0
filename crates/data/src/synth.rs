//! Synthetic shapes dataset: one class per shape kind (circle, square, triangle, cross, star,
//! ring, …) of varied size, colour, rotation and aspect, on textured noisy backgrounds with
//! clutter and partial occlusion; some images are empty. Deterministic per seed.
//!
//! Labels are the tight box of every pixel a shape touched (amodal: a box stays whole when a
//! later shape covers part of it, which is limited to a third of its area).

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::Rng;
use rayon::prelude::*;

use crate::error::{io_err, DataError, Result};
use crate::imgbuf::RgbBuf;
use crate::io::save_rgb;
use crate::rng::{sample_rng, uniform};

/// Shape kinds the generator can draw; a class is named by its kind.
pub const SHAPE_KINDS: &[&str] = &[
    "circle", "square", "triangle", "cross", "star", "ring", "hexagon", "arrow",
];

/// First line of a generated `data.yaml` (marks a folder the generator may overwrite).
const MARKER: &str = "# synthetic shapes dataset written by yolo-data synth";

/// Generator settings.
#[derive(Clone, Debug)]
pub struct SynthConfig {
    /// Output folder (created): `images/{train,val}`, `labels/{train,val}`, `data.yaml`.
    pub out: PathBuf,
    /// Class names, each one of [`SHAPE_KINDS`]; the class id is the index here.
    pub classes: Vec<String>,
    /// Number of training images.
    pub train: usize,
    /// Number of validation images.
    pub val: usize,
    /// Square image side in pixels.
    pub imgsz: u32,
    /// Seed: the same seed writes the same files.
    pub seed: u64,
    /// Fewest objects in a non-empty image.
    pub min_objects: usize,
    /// Most objects in an image.
    pub max_objects: usize,
    /// Fraction of images with no object.
    pub empty_fraction: f32,
    /// Object size range as fractions of the image side.
    pub size_range: (f32, f32),
    /// Image file extension: "jpg" or "png".
    pub ext: String,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            out: PathBuf::from("datasets/synth"),
            classes: ["circle", "square", "triangle", "cross", "star", "ring"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            train: 512,
            val: 128,
            imgsz: 256,
            seed: 0,
            min_objects: 1,
            max_objects: 6,
            empty_fraction: 0.07,
            size_range: (0.10, 0.40),
            ext: "jpg".into(),
        }
    }
}

impl SynthConfig {
    /// The default settings with the first `nc` shape kinds as classes.
    pub fn with_nc(nc: usize) -> SynthConfig {
        SynthConfig {
            classes: SHAPE_KINDS.iter().take(nc).map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Circle,
    Square,
    Triangle,
    Cross,
    Star,
    Ring,
    Hexagon,
    Arrow,
}

fn kind_of(name: &str) -> Option<Kind> {
    Some(match name {
        "circle" => Kind::Circle,
        "square" => Kind::Square,
        "triangle" => Kind::Triangle,
        "cross" => Kind::Cross,
        "star" => Kind::Star,
        "ring" => Kind::Ring,
        "hexagon" => Kind::Hexagon,
        "arrow" => Kind::Arrow,
        _ => return None,
    })
}

/// Polygons in the unit frame (extents within the unit circle, except the square's corners).
fn polygon(kind: Kind) -> Vec<(f32, f32)> {
    use std::f32::consts::PI;
    let ring = |n: usize, r_out: f32, r_in: Option<f32>, start: f32| {
        let mut v = Vec::new();
        let steps = if r_in.is_some() { 2 * n } else { n };
        for i in 0..steps {
            let a = start + i as f32 * 2.0 * PI / steps as f32;
            let r = match r_in {
                Some(ri) if i % 2 == 1 => ri,
                _ => r_out,
            };
            v.push((r * a.cos(), r * a.sin()));
        }
        v
    };
    match kind {
        Kind::Triangle => ring(3, 1.0, None, -PI / 2.0),
        Kind::Star => ring(5, 1.0, Some(0.42), -PI / 2.0),
        Kind::Hexagon => ring(6, 1.0, None, 0.0),
        Kind::Arrow => vec![
            (-1.0, -0.3),
            (0.2, -0.3),
            (0.2, -0.75),
            (1.0, 0.0),
            (0.2, 0.75),
            (0.2, 0.3),
            (-1.0, 0.3),
        ],
        _ => Vec::new(),
    }
}

fn in_polygon(poly: &[(f32, f32)], x: f32, y: f32) -> bool {
    let mut inside = false;
    let n = poly.len();
    let mut j = n - 1;
    for i in 0..n {
        let (xi, yi) = poly[i];
        let (xj, yj) = poly[j];
        if (yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn inside(kind: Kind, poly: &[(f32, f32)], u: f32, v: f32) -> bool {
    match kind {
        Kind::Circle => u * u + v * v <= 1.0,
        Kind::Ring => {
            let r2 = u * u + v * v;
            (0.2..=1.0).contains(&r2)
        }
        Kind::Square => u.abs() <= 0.8 && v.abs() <= 0.8,
        Kind::Cross => (u.abs() <= 0.28 && v.abs() <= 1.0) || (v.abs() <= 0.28 && u.abs() <= 1.0),
        _ => in_polygon(poly, u, v),
    }
}

/// A rendered shape: coverage (0..=1) over a `w × h` block whose top-left is at `(x0, y0)`
/// relative to the shape's integer centre, cropped to the touched pixels.
struct Mask {
    x0: i64,
    y0: i64,
    w: usize,
    h: usize,
    cov: Vec<f32>,
}

const SS: usize = 4;

fn render_mask(kind: Kind, diameter: f32, aspect: f32, theta: f32, sub: (f32, f32)) -> Mask {
    let poly = polygon(kind);
    let rx = diameter / 2.0 * aspect.sqrt();
    let ry = diameter / 2.0 / aspect.sqrt();
    let r = (rx.max(ry) * 1.15).ceil() as i64 + 1;
    let (s, c) = theta.sin_cos();
    let n = (2 * r + 1) as usize;
    let mut cov = vec![0f32; n * n];
    let step = 1.0 / SS as f32;
    let (mut bx1, mut by1, mut bx2, mut by2) = (i64::MAX, i64::MAX, i64::MIN, i64::MIN);
    for j in 0..n {
        for i in 0..n {
            let px = i as i64 - r;
            let py = j as i64 - r;
            let mut hits = 0;
            for sy in 0..SS {
                for sx in 0..SS {
                    let x = px as f32 + (sx as f32 + 0.5) * step - sub.0;
                    let y = py as f32 + (sy as f32 + 0.5) * step - sub.1;
                    let u = (x * c + y * s) / rx;
                    let v = (-x * s + y * c) / ry;
                    hits += inside(kind, &poly, u, v) as usize;
                }
            }
            if hits > 0 {
                cov[j * n + i] = hits as f32 / (SS * SS) as f32;
                bx1 = bx1.min(px);
                by1 = by1.min(py);
                bx2 = bx2.max(px);
                by2 = by2.max(py);
            }
        }
    }
    if bx1 > bx2 {
        return Mask {
            x0: 0,
            y0: 0,
            w: 0,
            h: 0,
            cov: Vec::new(),
        };
    }
    let (w, h) = ((bx2 - bx1 + 1) as usize, (by2 - by1 + 1) as usize);
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        let src = ((y as i64 + by1 + r) as usize) * n + (bx1 + r) as usize;
        out[y * w..(y + 1) * w].copy_from_slice(&cov[src..src + w]);
    }
    Mask {
        x0: bx1,
        y0: by1,
        w,
        h,
        cov: out,
    }
}

fn hsv(h: f32, s: f32, v: f32) -> [f32; 3] {
    let h6 = (h.rem_euclid(1.0)) * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
    let (r, g, b) = match i as u32 {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    };
    [r * 255.0, g * 255.0, b * 255.0]
}

/// A textured background: a gradient between two colours, sinusoidal texture and blotches.
fn background(rng: &mut StdRng, s: usize) -> Vec<f32> {
    let c1 = hsv(
        rng.random(),
        uniform(rng, 0.0, 0.5) as f32,
        uniform(rng, 0.2, 0.9) as f32,
    );
    let c2 = hsv(
        rng.random(),
        uniform(rng, 0.0, 0.5) as f32,
        uniform(rng, 0.2, 0.9) as f32,
    );
    let ga = uniform(rng, 0.0, std::f64::consts::TAU) as f32;
    let (gx, gy) = (ga.cos(), ga.sin());
    let amp = uniform(rng, 5.0, 30.0) as f32;
    let f1 = uniform(rng, 0.02, 0.25) as f32;
    let f2 = uniform(rng, 0.02, 0.25) as f32;
    let a1 = uniform(rng, 0.0, std::f64::consts::TAU) as f32;
    let (d1x, d1y) = (a1.cos() * f1, a1.sin() * f1);
    let a2 = a1 + uniform(rng, 0.5, 2.5) as f32;
    let (d2x, d2y) = (a2.cos() * f2, a2.sin() * f2);
    let mut img = vec![0f32; s * s * 3];
    let sf = s as f32;
    for y in 0..s {
        for x in 0..s {
            let t = (((x as f32 - sf / 2.0) * gx + (y as f32 - sf / 2.0) * gy) / sf + 0.5)
                .clamp(0.0, 1.0);
            let tex = amp
                * (x as f32 * d1x + y as f32 * d1y).sin()
                * (x as f32 * d2x + y as f32 * d2y).cos();
            let o = (y * s + x) * 3;
            for ch in 0..3 {
                img[o + ch] = c1[ch] * (1.0 - t) + c2[ch] * t + tex;
            }
        }
    }
    img
}

fn blend_mask(
    img: &mut [f32],
    s: usize,
    mask: &Mask,
    cx: i64,
    cy: i64,
    colour: [f32; 3],
    shade: (f32, f32),
) {
    for my in 0..mask.h {
        let y = cy + mask.y0 + my as i64;
        if y < 0 || y >= s as i64 {
            continue;
        }
        for mx in 0..mask.w {
            let x = cx + mask.x0 + mx as i64;
            let a = mask.cov[my * mask.w + mx];
            if a == 0.0 || x < 0 || x >= s as i64 {
                continue;
            }
            // Gentle lighting across the shape keeps it from being a flat colour.
            let l = 1.0
                + shade.0 * (mx as f32 / mask.w.max(1) as f32 - 0.5)
                + shade.1 * (my as f32 / mask.h.max(1) as f32 - 0.5);
            let o = (y as usize * s + x as usize) * 3;
            for ch in 0..3 {
                img[o + ch] = img[o + ch] * (1.0 - a) + (colour[ch] * l) * a;
            }
        }
    }
}

/// Small clutter: short thin lines and dots, well below the smallest object size.
fn clutter(img: &mut [f32], s: usize, rng: &mut StdRng) {
    let n = rng.random_range(4..16);
    let sf = s as f32;
    for _ in 0..n {
        let col = hsv(rng.random(), rng.random(), uniform(rng, 0.1, 1.0) as f32);
        let x0 = rng.random::<f32>() * sf;
        let y0 = rng.random::<f32>() * sf;
        if rng.random::<bool>() {
            let len = uniform(rng, 0.01, 0.05) as f32 * sf;
            let a = rng.random::<f32>() * std::f32::consts::TAU;
            let steps = (len * 2.0) as usize + 1;
            for k in 0..steps {
                let t = k as f32 / steps as f32 * len;
                let (x, y) = ((x0 + t * a.cos()) as i64, (y0 + t * a.sin()) as i64);
                if x >= 0 && y >= 0 && (x as usize) < s && (y as usize) < s {
                    let o = (y as usize * s + x as usize) * 3;
                    img[o..o + 3].copy_from_slice(&col);
                }
            }
        } else {
            let r = uniform(rng, 1.0, (0.012 * sf as f64).max(1.5)) as f32;
            let ri = r.ceil() as i64;
            for dy in -ri..=ri {
                for dx in -ri..=ri {
                    if (dx * dx + dy * dy) as f32 > r * r {
                        continue;
                    }
                    let (x, y) = (x0 as i64 + dx, y0 as i64 + dy);
                    if x >= 0 && y >= 0 && (x as usize) < s && (y as usize) < s {
                        let o = (y as usize * s + x as usize) * 3;
                        img[o..o + 3].copy_from_slice(&col);
                    }
                }
            }
        }
    }
}

fn mean_colour(img: &[f32], s: usize, b: [i64; 4]) -> [f32; 3] {
    let mut acc = [0f32; 3];
    let mut n = 0f32;
    let step = (((b[2] - b[0]).max(b[3] - b[1]) / 8).max(1)) as usize;
    for y in (b[1].max(0)..b[3].min(s as i64)).step_by(step) {
        for x in (b[0].max(0)..b[2].min(s as i64)).step_by(step) {
            let o = (y as usize * s + x as usize) * 3;
            for ch in 0..3 {
                acc[ch] += img[o + ch];
            }
            n += 1.0;
        }
    }
    if n == 0.0 {
        return [128.0; 3];
    }
    acc.map(|a| a / n)
}

fn ioa(a: [i64; 4], b: [i64; 4]) -> f32 {
    // Intersection over the area of `a`.
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0);
    let area = ((a[2] - a[0]) * (a[3] - a[1])).max(1);
    (iw * ih) as f32 / area as f32
}

/// One generated image and its label rows (`class cx cy w h`, normalised).
pub fn render_image(
    cfg: &SynthConfig,
    kinds: &[usize],
    rng: &mut StdRng,
) -> (RgbBuf, Vec<[f32; 5]>) {
    let s = cfg.imgsz as usize;
    let sf = s as f32;
    let mut img = background(rng, s);
    clutter(&mut img, s, rng);
    let all_kinds: Vec<Kind> = cfg.classes.iter().filter_map(|c| kind_of(c)).collect();
    let n_obj = if rng.random::<f32>() < cfg.empty_fraction || kinds.is_empty() {
        0
    } else {
        rng.random_range(cfg.min_objects.max(1)..=cfg.max_objects.max(cfg.min_objects.max(1)))
    };
    let mut placed: Vec<[i64; 4]> = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..n_obj {
        let cls = kinds[rng.random_range(0..kinds.len())];
        let kind = all_kinds[cls];
        let d = uniform(rng, cfg.size_range.0 as f64, cfg.size_range.1 as f64) as f32 * sf;
        let aspect = uniform(rng, 0.7, 1.4) as f32;
        let theta = rng.random::<f32>() * std::f32::consts::TAU;
        let mask = render_mask(kind, d, aspect, theta, (rng.random(), rng.random()));
        if mask.w == 0 || mask.w >= s || mask.h >= s {
            continue;
        }
        // Find a spot: fully inside, covering at most a third of any earlier box, and not
        // itself hidden under an earlier box.
        let mut spot = None;
        for _ in 0..30 {
            let cx = rng
                .random_range(-mask.x0..(s as i64 - mask.x0 - mask.w as i64 + 1).max(-mask.x0 + 1));
            let cy = rng
                .random_range(-mask.y0..(s as i64 - mask.y0 - mask.h as i64 + 1).max(-mask.y0 + 1));
            let b = [
                cx + mask.x0,
                cy + mask.y0,
                cx + mask.x0 + mask.w as i64,
                cy + mask.y0 + mask.h as i64,
            ];
            if b[0] < 0 || b[1] < 0 || b[2] > s as i64 || b[3] > s as i64 {
                continue;
            }
            if placed
                .iter()
                .all(|p| ioa(*p, b) <= 0.33 && ioa(b, *p) <= 0.5)
            {
                spot = Some((cx, cy, b));
                break;
            }
        }
        let Some((cx, cy, b)) = spot else { continue };
        // A colour that stands out from what is under the shape.
        let under = mean_colour(&img, s, b);
        let mut colour = [0f32; 3];
        for attempt in 0..12 {
            colour = if attempt < 11 {
                hsv(
                    rng.random(),
                    uniform(rng, 0.4, 1.0) as f32,
                    uniform(rng, 0.25, 1.0) as f32,
                )
            } else {
                under.map(|u| if u > 127.0 { 20.0 } else { 235.0 })
            };
            let dist: f32 = colour.iter().zip(&under).map(|(a, b)| (a - b).abs()).sum();
            if dist >= 160.0 {
                break;
            }
        }
        let shade = (
            uniform(rng, -0.25, 0.25) as f32,
            uniform(rng, -0.25, 0.25) as f32,
        );
        blend_mask(&mut img, s, &mask, cx, cy, colour, shade);
        placed.push(b);
        let bw = (b[2] - b[0]) as f32;
        let bh = (b[3] - b[1]) as f32;
        labels.push([
            cls as f32,
            (b[0] as f32 + bw / 2.0) / sf,
            (b[1] as f32 + bh / 2.0) / sf,
            bw / sf,
            bh / sf,
        ]);
    }
    // Sensor-like noise.
    let noise = uniform(rng, 2.0, 10.0) as f32;
    let mut data = vec![0u8; s * s * 3];
    for (o, v) in data.iter_mut().zip(&img) {
        let n = (rng.random::<f32>() - 0.5) * 2.0 * noise;
        *o = (v + n).round().clamp(0.0, 255.0) as u8;
    }
    (
        RgbBuf {
            width: s,
            height: s,
            data,
        },
        labels,
    )
}

/// Writes the dataset and returns the path of its `data.yaml`. An existing output folder is
/// reused only if it holds nothing or an earlier synthetic dataset (whose images, labels and
/// label caches are replaced).
pub fn generate(cfg: &SynthConfig) -> Result<PathBuf> {
    let bad = |detail: String| DataError::InvalidArgument {
        what: "synth::generate",
        detail,
    };
    if cfg.classes.is_empty() {
        return Err(bad("no classes given".into()));
    }
    for c in &cfg.classes {
        if kind_of(c).is_none() {
            return Err(bad(format!(
                "unknown shape class `{c}`; choose from {}",
                SHAPE_KINDS.join(", ")
            )));
        }
    }
    if cfg.imgsz < 32 {
        return Err(bad(format!("imgsz {} is too small (≥ 32)", cfg.imgsz)));
    }
    if !(cfg.size_range.0 > 0.0 && cfg.size_range.0 <= cfg.size_range.1 && cfg.size_range.1 < 0.9) {
        return Err(bad(format!(
            "size_range {:?} must satisfy 0 < lo ≤ hi < 0.9",
            cfg.size_range
        )));
    }
    if cfg.ext != "jpg" && cfg.ext != "png" {
        return Err(bad(format!("ext `{}` must be jpg or png", cfg.ext)));
    }
    let yaml = cfg.out.join("data.yaml");
    if yaml.exists() {
        let text = std::fs::read_to_string(&yaml).map_err(io_err(&yaml))?;
        if !text.starts_with(MARKER) {
            return Err(bad(format!(
                "{} exists and was not written by the generator; choose another --out",
                yaml.display()
            )));
        }
    }
    for split in ["train", "val"] {
        for top in ["images", "labels"] {
            let d = cfg.out.join(top).join(split);
            if d.exists() {
                std::fs::remove_dir_all(&d).map_err(io_err(&d))?;
            }
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        for ext in ["cache", "cache.json"] {
            let cache = cfg.out.join("labels").join(format!("{split}.{ext}"));
            if cache.exists() {
                std::fs::remove_file(&cache).map_err(io_err(&cache))?;
            }
        }
    }
    let kinds: Vec<usize> = (0..cfg.classes.len()).collect();
    for (split_id, (split, n)) in [("train", cfg.train), ("val", cfg.val)]
        .into_iter()
        .enumerate()
    {
        (0..n).into_par_iter().try_for_each(|i| -> Result<()> {
            let mut rng = sample_rng(cfg.seed, 1000 + split_id as u64, i as u64);
            let (img, labels) = render_image(cfg, &kinds, &mut rng);
            let name = format!("{split}_{i:06}");
            save_rgb(
                &img,
                &cfg.out
                    .join("images")
                    .join(split)
                    .join(format!("{name}.{}", cfg.ext)),
            )?;
            let mut txt = String::new();
            for l in &labels {
                txt.push_str(&format!(
                    "{} {:.6} {:.6} {:.6} {:.6}\n",
                    l[0] as usize, l[1], l[2], l[3], l[4]
                ));
            }
            let lp = cfg
                .out
                .join("labels")
                .join(split)
                .join(format!("{name}.txt"));
            std::fs::write(&lp, txt).map_err(io_err(&lp))
        })?;
    }
    let names = cfg.classes.join(", ");
    let text = format!(
        "{MARKER} (seed {seed}, {train} train + {val} val images at {sz} px)\n\
         path: .\n\
         train: images/train\n\
         val: images/val\n\
         nc: {nc}\n\
         names: [{names}]\n",
        seed = cfg.seed,
        train = cfg.train,
        val = cfg.val,
        sz = cfg.imgsz,
        nc = cfg.classes.len(),
    );
    std::fs::write(&yaml, text).map_err(io_err(&yaml))?;
    Ok(yaml)
}

/// Where a generated dataset's `data.yaml` would be.
pub fn yaml_path(out: &Path) -> PathBuf {
    out.join("data.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn masks_are_tight() {
        let mut rng = StdRng::seed_from_u64(1);
        for name in SHAPE_KINDS {
            let kind = kind_of(name).unwrap();
            for _ in 0..20 {
                let d = uniform(&mut rng, 8.0, 60.0) as f32;
                let aspect = uniform(&mut rng, 0.7, 1.4) as f32;
                let theta = rng.random::<f32>() * std::f32::consts::TAU;
                let m = render_mask(kind, d, aspect, theta, (rng.random(), rng.random()));
                assert!(m.w > 0 && m.h > 0, "{name}");
                let at = |x: usize, y: usize| m.cov[y * m.w + x];
                // Every edge row and column of the box holds some coverage: the box is tight.
                assert!((0..m.w).any(|x| at(x, 0) > 0.0), "{name} top");
                assert!((0..m.w).any(|x| at(x, m.h - 1) > 0.0), "{name} bottom");
                assert!((0..m.h).any(|y| at(0, y) > 0.0), "{name} left");
                assert!((0..m.h).any(|y| at(m.w - 1, y) > 0.0), "{name} right");
                // And the shape is roughly as large as asked.
                let side = m.w.max(m.h) as f32;
                assert!(
                    side >= 0.6 * d && side <= 1.7 * d + 2.0,
                    "{name}: {side} for {d}"
                );
            }
        }
    }
}
