//! Training plots, as upstream `utils/plots.py` and `utils/metrics.py` draw them.
//!
//! Every function takes plain data and writes one image file; the format follows the
//! extension of `out` (`.png`, or `.jpg` / `.jpeg` at quality 95). Charts are drawn with
//! `plotters` into an RGB buffer and encoded with `image`; text uses the built-in DejaVu Sans
//! (see `crates/train/assets/LICENSE_DEJAVU`), so nothing depends on system fonts.
//!
//! - [`plot_results`]: `results.png`, the 2×5 grid of `results.csv` columns against epoch,
//!   each with a Gaussian-smoothed line (σ = 3).
//! - [`plot_labels`]: `labels.jpg`, class histogram, the label boxes drawn at one centre,
//!   and 2-D histograms of box centre x/y and width/height.
//! - [`plot_images`]: `train_batch*.jpg`, `val_batch*_labels.jpg`, `val_batch*_pred.jpg`:
//!   a mosaic of up to 16 images with coloured boxes and class (and confidence) labels.
//! - [`plot_confusion_matrix`] / [`plot_confusion`]: `confusion_matrix.png`, column-normalised.
//! - [`plot_pr_curves`], [`plot_metric_curve`] and [`plot_ap_curves`] (all four from an
//!   [`ApPerClass`]): `PR_curve.png`, `F1_curve.png`, `P_curve.png`, `R_curve.png`.
//!
//! Errors are [`TrainError::File`] naming the file read or written (and the line of a
//! malformed `results.csv` row); input that does not fit (a pixel buffer of the wrong length,
//! a matrix of the wrong size) is reported against the output file.

use std::error::Error as StdError;
use std::path::Path;
use std::sync::OnceLock;

use image::codecs::jpeg::JpegEncoder;
use image::codecs::png::PngEncoder;
use image::{ExtendedColorType, ImageEncoder};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Result, TrainError};
use crate::metrics::{smooth, ApPerClass, ConfusionMatrix};

/// Upstream `Colors` palette (`utils/plots.py`), as `0xRRGGBB`; class `c` uses entry `c % 20`.
pub const PALETTE: [u32; 20] = [
    0xFF3838, 0xFF9D97, 0xFF701F, 0xFFB21D, 0xCFD231, 0x48F90A, 0x92CC17, 0x3DDB86, 0x1A9334,
    0x00D4BB, 0x2C99A8, 0x00C2FF, 0x344593, 0x6473FF, 0x0018EC, 0x8438FF, 0x520085, 0xCB38FF,
    0xFF95C8, 0xFF37C7,
];

/// Size of `results.png` (upstream 12×6 in at 200 dpi).
pub const RESULTS_SIZE: (u32, u32) = (2400, 1200);
/// Size of `labels.jpg` (upstream 8×8 in at 200 dpi).
pub const LABELS_SIZE: (u32, u32) = (1600, 1600);
/// Size of `confusion_matrix.png`.
pub const CONFUSION_SIZE: (u32, u32) = (2000, 1500);
/// Size of the PR / F1 / P / R curve plots.
pub const CURVE_SIZE: (u32, u32) = (1800, 1200);
/// Largest side of a [`plot_images`] mosaic (upstream `max_size`); bigger mosaics are shrunk.
pub const MOSAIC_MAX_SIZE: u32 = 1920;
/// Predictions at or below this confidence are not drawn by [`plot_images`] (upstream 0.25).
pub const PLOT_CONF_THRES: f32 = 0.25;
/// The `results.csv` columns [`plot_results`] draws, in grid order (upstream order).
pub const RESULTS_PLOT_COLUMNS: [usize; 10] = [1, 2, 3, 4, 5, 8, 9, 10, 6, 7];

/// One RGB image, row-major `height × width × 3` bytes (HWC).
#[derive(Clone, Copy, Debug)]
pub struct ImageView<'a> {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width · height · 3` bytes, RGB.
    pub rgb: &'a [u8],
}

/// A box to draw on an image: `[x1, y1, x2, y2]` in that image's pixels, the class, and the
/// confidence (`None` for a label, which is always drawn).
pub type ImageBox = ([f32; 4], usize, Option<f32>);

static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FONT: &str = "sans-serif";
const MPL_BLUE: RGBColor = RGBColor(31, 119, 180);
const MPL_ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREY: RGBColor = RGBColor(128, 128, 128);

type DrawResult = std::result::Result<(), Box<dyn StdError>>;
type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// The RGB colour of class `class` in the upstream palette.
pub fn class_color(class: usize) -> [u8; 3] {
    let c = PALETTE[class % PALETTE.len()];
    [(c >> 16) as u8, (c >> 8) as u8, c as u8]
}

fn rgb(class: usize) -> RGBColor {
    let [r, g, b] = class_color(class);
    RGBColor(r, g, b)
}

fn file_err(path: &Path, detail: impl std::fmt::Display) -> TrainError {
    TrainError::File {
        path: path.display().to_string(),
        detail: detail.to_string(),
    }
}

fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY
        .get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok())
}

#[derive(Clone, Copy)]
enum Format {
    Png,
    Jpeg,
}

fn format_of(out: &Path) -> Result<Format> {
    let ext = out
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("png") => Ok(Format::Png),
        Some("jpg") | Some("jpeg") => Ok(Format::Jpeg),
        _ => Err(file_err(
            out,
            "unsupported image extension (use .png, .jpg or .jpeg)",
        )),
    }
}

/// Encodes an RGB buffer to `out` (format from the extension), creating its folder.
fn save_rgb(out: &Path, width: u32, height: u32, buf: &[u8]) -> Result<()> {
    let format = format_of(out)?;
    let mut bytes = Vec::new();
    let encoded = match format {
        Format::Png => {
            PngEncoder::new(&mut bytes).write_image(buf, width, height, ExtendedColorType::Rgb8)
        }
        Format::Jpeg => JpegEncoder::new_with_quality(&mut bytes, 95).write_image(
            buf,
            width,
            height,
            ExtendedColorType::Rgb8,
        ),
    };
    encoded.map_err(|e| file_err(out, format!("encoding failed: {e}")))?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    }
    std::fs::write(out, bytes).map_err(|e| file_err(out, e))
}

/// Draws on a white canvas of `size` with `draw`, then writes it to `out`.
fn render(out: &Path, size: (u32, u32), draw: impl FnOnce(&Area<'_>) -> DrawResult) -> Result<()> {
    format_of(out)?;
    if !font_ready() {
        return Err(file_err(out, "the built-in font could not be loaded"));
    }
    let mut buf = vec![255u8; size.0 as usize * size.1 as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| file_err(out, e))?;
        draw(&root).map_err(|e| file_err(out, format!("drawing failed: {e}")))?;
        root.present().map_err(|e| file_err(out, e))?;
    }
    save_rgb(out, size.0, size.1, &buf)
}

fn text(size: f64) -> TextStyle<'static> {
    (FONT, size).into_font().color(&BLACK)
}

/// `scipy.ndimage.gaussian_filter1d(y, sigma)` with the default `mode="reflect"` and
/// `truncate=4.0`.
pub fn gaussian_filter1d(y: &[f64], sigma: f64) -> Vec<f64> {
    let n = y.len() as i64;
    if n == 0 || sigma <= 0.0 {
        return y.to_vec();
    }
    let radius = (4.0 * sigma + 0.5) as i64;
    let mut w: Vec<f64> = (-radius..=radius)
        .map(|x| (-0.5 * (x * x) as f64 / (sigma * sigma)).exp())
        .collect();
    let total: f64 = w.iter().sum();
    w.iter_mut().for_each(|v| *v /= total);
    let reflect = |mut i: i64| {
        // d c b a | a b c d | d c b a, repeated for short inputs
        loop {
            if i < 0 {
                i = -i - 1;
            } else if i >= n {
                i = 2 * n - i - 1;
            } else {
                return i as usize;
            }
        }
    };
    (0..n)
        .map(|i| {
            (-radius..=radius)
                .zip(&w)
                .map(|(k, wk)| wk * y[reflect(i + k)])
                .sum()
        })
        .collect()
}

/// A padded axis range over the finite values (0..1 when there are none).
fn axis_range<'a>(values: impl Iterator<Item = &'a f64>) -> std::ops::Range<f64> {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    let span = hi - lo;
    if span <= 1e-12 * lo.abs().max(1.0) {
        let pad = (lo.abs() * 0.05).max(0.5e-3);
        return lo - pad..hi + pad;
    }
    lo - 0.05 * span..hi + 0.05 * span
}

fn finite_points(x: &[f64], y: &[f64]) -> Vec<(f64, f64)> {
    x.iter()
        .zip(y)
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .map(|(&a, &b)| (a, b))
        .collect()
}

/// Reads `results.csv`: the trimmed header and the rows as numbers.
fn read_results_csv(path: &Path) -> Result<(Vec<String>, Vec<Vec<f64>>)> {
    let content = std::fs::read_to_string(path).map_err(|e| file_err(path, e))?;
    let mut lines = content
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let Some((_, head)) = lines.next() else {
        return Err(file_err(path, "empty file: no header line"));
    };
    let header: Vec<String> = head.split(',').map(|s| s.trim().to_string()).collect();
    let need = RESULTS_PLOT_COLUMNS.iter().max().map_or(0, |m| m + 1);
    if header.len() < need {
        return Err(file_err(
            path,
            format!(
                "header has {} columns, need at least {need} (epoch, train losses, metrics, val losses)",
                header.len()
            ),
        ));
    }
    let mut rows = Vec::new();
    for (i, line) in lines {
        let at = || format!("{}:{}", path.display(), i + 1);
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != header.len() {
            return Err(TrainError::File {
                path: at(),
                detail: format!(
                    "row has {} cells, the header has {}",
                    cells.len(),
                    header.len()
                ),
            });
        }
        let mut row = Vec::with_capacity(cells.len());
        for (c, cell) in cells.iter().enumerate() {
            let v: f64 = cell.parse().map_err(|_| TrainError::File {
                path: at(),
                detail: format!("column {} ({}): {cell:?} is not a number", c + 1, header[c]),
            })?;
            row.push(v);
        }
        rows.push(row);
    }
    if rows.is_empty() {
        return Err(file_err(path, "no data rows after the header"));
    }
    Ok((header, rows))
}

/// Upstream `plot_results`: reads `results.csv` at `csv_path` and writes the 2×5 grid of
/// train box/obj/cls loss, precision, recall, val box/obj/cls loss, mAP@0.5 and
/// mAP@0.5:0.95 against epoch (points and line, plus a dashed Gaussian-smoothed line) to
/// `out_png` ([`RESULTS_SIZE`]).
pub fn plot_results(csv_path: &Path, out_png: &Path) -> Result<()> {
    let (header, rows) = read_results_csv(csv_path)?;
    let x: Vec<f64> = rows.iter().map(|r| r[0]).collect();
    render(out_png, RESULTS_SIZE, |root| {
        let panels = root.split_evenly((2, 5));
        for (k, (area, &j)) in panels.iter().zip(&RESULTS_PLOT_COLUMNS).enumerate() {
            let y: Vec<f64> = rows.iter().map(|r| r[j]).collect();
            let ys = gaussian_filter1d(&y, 3.0);
            let raw = finite_points(&x, &y);
            let smoothed = finite_points(&x, &ys);
            let mut chart = ChartBuilder::on(area)
                .caption(&header[j], text(26.0))
                .margin(12)
                .x_label_area_size(34)
                .y_label_area_size(70)
                .build_cartesian_2d(axis_range(x.iter()), axis_range(y.iter().chain(&ys)))?;
            chart
                .configure_mesh()
                .light_line_style(TRANSPARENT)
                .bold_line_style(RGBColor(235, 235, 235))
                .x_labels(6)
                .y_labels(6)
                .label_style(text(16.0))
                .draw()?;
            chart
                .draw_series(LineSeries::new(raw.clone(), MPL_BLUE.stroke_width(3)))?
                .label("results")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], MPL_BLUE.stroke_width(3)));
            chart.draw_series(raw.iter().map(|&p| Circle::new(p, 5, MPL_BLUE.filled())))?;
            chart
                .draw_series(DashedLineSeries::new(
                    smoothed,
                    6,
                    5,
                    MPL_ORANGE.stroke_width(3),
                ))?
                .label("smooth")
                .legend(|(x, y)| {
                    PathElement::new([(x, y), (x + 24, y)], MPL_ORANGE.stroke_width(3))
                });
            if k == 1 {
                chart
                    .configure_series_labels()
                    .label_font(text(16.0))
                    .background_style(WHITE.mix(0.8))
                    .border_style(RGBColor(200, 200, 200))
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()?;
            }
        }
        Ok(())
    })
}

/// The matplotlib "Blues" colour map at `t` in `[0, 1]`.
fn blues(t: f64) -> RGBColor {
    const STOPS: [(u8, u8, u8); 5] = [
        (247, 251, 255),
        (198, 219, 239),
        (107, 174, 214),
        (33, 113, 181),
        (8, 48, 107),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let f = t * (STOPS.len() - 1) as f64;
    let i = (f.floor() as usize).min(STOPS.len() - 2);
    let u = f - i as f64;
    let mix = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * u).round() as u8;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    RGBColor(mix(a.0, b.0), mix(a.1, b.1), mix(a.2, b.2))
}

/// A 2-D histogram panel of `(x, y)` pairs over `[0, 1]²` with `bins × bins` cells.
fn hist2d_panel(
    area: &Area<'_>,
    pts: &[(f64, f64)],
    bins: usize,
    xdesc: &str,
    ydesc: &str,
) -> DrawResult {
    let mut counts = vec![0usize; bins * bins];
    for &(x, y) in pts {
        if !(x.is_finite() && y.is_finite()) {
            continue;
        }
        let bx = ((x * bins as f64).floor() as i64).clamp(0, bins as i64 - 1) as usize;
        let by = ((y * bins as f64).floor() as i64).clamp(0, bins as i64 - 1) as usize;
        counts[by * bins + bx] += 1;
    }
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let mut chart = ChartBuilder::on(area)
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .bold_line_style(RGBColor(240, 240, 240))
        .x_desc(xdesc)
        .y_desc(ydesc)
        .label_style(text(16.0))
        .axis_desc_style(text(20.0))
        .draw()?;
    let step = 1.0 / bins as f64;
    chart.draw_series(
        counts
            .iter()
            .enumerate()
            .filter(|(_, &c)| c > 0)
            .map(|(i, &c)| {
                let (bx, by) = ((i % bins) as f64, (i / bins) as f64);
                let t = 0.2 + 0.8 * (c as f64 / max).sqrt();
                Rectangle::new(
                    [
                        (bx * step, by * step),
                        ((bx + 1.0) * step, (by + 1.0) * step),
                    ],
                    blues(t).filled(),
                )
            }),
    )?;
    Ok(())
}

/// Class indices at or above this are rejected by [`plot_labels`] (a corrupt label, not a class).
const MAX_CLASSES: f32 = 65536.0;

/// Upstream `plot_labels`: writes the label statistics of `labels` (`[class, cx, cy, w, h]`,
/// coordinates normalised to `[0, 1]`) to `out` ([`LABELS_SIZE`]): instances per class
/// (named by `names` when there are fewer than 30 classes), the first 1000 boxes drawn at one
/// centre in their class colour, and 2-D histograms of centre x/y and width/height.
pub fn plot_labels(labels: &[[f32; 5]], names: &[String], out: &Path) -> Result<()> {
    let mut nc = names.len();
    for (i, l) in labels.iter().enumerate() {
        if !l[0].is_finite() || l[0] < 0.0 || l[0].fract() != 0.0 || l[0] >= MAX_CLASSES {
            return Err(file_err(
                out,
                format!("label {i}: class {} is not a class index", l[0]),
            ));
        }
        nc = nc.max(l[0] as usize + 1);
    }
    let mut counts = vec![0usize; nc];
    for l in labels {
        counts[l[0] as usize] += 1;
    }
    render(out, LABELS_SIZE, |root| {
        let panels = root.split_evenly((2, 2));
        // instances per class
        {
            let ymax = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.05;
            let show_names = nc > 0 && nc < 30;
            let mut chart = ChartBuilder::on(&panels[0])
                .margin(16)
                .x_label_area_size(if show_names { 140 } else { 50 })
                .y_label_area_size(70)
                .build_cartesian_2d(-0.5f64..(nc.max(1) as f64 - 0.5), 0f64..ymax)?;
            let mut mesh = chart.configure_mesh();
            mesh.disable_x_mesh()
                .light_line_style(TRANSPARENT)
                .bold_line_style(RGBColor(240, 240, 240))
                .y_desc("instances")
                .y_label_formatter(&|v| format!("{v:.0}"))
                .label_style(text(16.0))
                .axis_desc_style(text(20.0));
            if show_names {
                mesh.x_labels(0);
            } else {
                mesh.x_desc("classes");
            }
            mesh.draw()?;
            chart.draw_series(counts.iter().enumerate().map(|(c, &n)| {
                let x = c as f64;
                Rectangle::new([(x - 0.4, 0.0), (x + 0.4, n as f64)], rgb(c).filled())
            }))?;
            if show_names {
                let style = text(16.0)
                    .transform(FontTransform::Rotate90)
                    .pos(Pos::new(HPos::Left, VPos::Center));
                for c in 0..nc {
                    let (px, py) = chart.backend_coord(&(c as f64, 0.0));
                    let label = names.get(c).cloned().unwrap_or_else(|| c.to_string());
                    root.draw_text(&label, &style, (px, py + 8))?;
                }
            }
        }
        // boxes at one centre
        {
            let area = panels[1].margin(30, 30, 30, 30);
            let mut chart = ChartBuilder::on(&area).build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
            chart.draw_series(labels.iter().take(1000).map(|l| {
                let (w, h) = (l[3] as f64 / 2.0, l[4] as f64 / 2.0);
                Rectangle::new(
                    [(0.5 - w, 0.5 - h), (0.5 + w, 0.5 + h)],
                    rgb(l[0] as usize).stroke_width(1),
                )
            }))?;
        }
        let xy: Vec<(f64, f64)> = labels.iter().map(|l| (l[1] as f64, l[2] as f64)).collect();
        let wh: Vec<(f64, f64)> = labels.iter().map(|l| (l[3] as f64, l[4] as f64)).collect();
        hist2d_panel(&panels[2], &xy, 50, "x", "y")?;
        hist2d_panel(&panels[3], &wh, 50, "width", "height")?;
        Ok(())
    })
}

/// Fills the pixel rectangle `[x0, x1) × [y0, y1)` (clipped by the backend).
fn fill_px(area: &Area<'_>, x0: i32, y0: i32, x1: i32, y1: i32, color: RGBColor) -> DrawResult {
    if x1 > x0 && y1 > y0 {
        // the bitmap backend fills the half-open `[x0, x1) × [y0, y1)`
        area.draw(&Rectangle::new([(x0, y0), (x1, y1)], color.filled()))?;
    }
    Ok(())
}

/// PIL `rectangle(outline, width)`: a `width`-pixel outline inside `[x0, x1] × [y0, y1]`.
fn outline_px(
    area: &Area<'_>,
    [x0, y0, x1, y1]: [i32; 4],
    width: i32,
    color: RGBColor,
) -> DrawResult {
    let w = width.max(1);
    fill_px(area, x0, y0, x1 + 1, (y0 + w).min(y1 + 1), color)?;
    fill_px(area, x0, (y1 + 1 - w).max(y0), x1 + 1, y1 + 1, color)?;
    fill_px(area, x0, y0, (x0 + w).min(x1 + 1), y1 + 1, color)?;
    fill_px(area, (x1 + 1 - w).max(x0), y0, x1 + 1, y1 + 1, color)
}

/// One detection to draw with [`annotate`]: box `[x1, y1, x2, y2]` in pixels, the label text
/// (`None`: box only) and the class (for the colour).
pub struct Annotation {
    /// Corners in pixels of the image.
    pub xyxy: [f32; 4],
    /// Class index (colour from [`class_color`]).
    pub class: usize,
    /// Text above the box, e.g. `person 0.87`; `None` draws the box alone.
    pub label: Option<String>,
}

/// Upstream `Annotator.box_label` on an RGB image in place: each box outlined in its class
/// colour `line_width` pixels wide (upstream default when `None`: max(round((w + h) / 2 ·
/// 0.003), 2)), its label in white on a filled class-coloured bar above the box (inside the
/// box when there is no room above).
pub fn annotate(
    pixels: &mut [u8],
    width: u32,
    height: u32,
    items: &[Annotation],
    line_width: Option<u32>,
) -> Result<()> {
    let here = Path::new("<image>");
    if width == 0 || height == 0 || pixels.len() != width as usize * height as usize * 3 {
        return Err(file_err(
            here,
            format!("{} bytes for a {width}×{height} RGB image", pixels.len()),
        ));
    }
    if !font_ready() {
        return Err(file_err(here, "the built-in font could not be loaded"));
    }
    let lw = line_width
        .unwrap_or_else(|| (((width + height) as f64 / 2.0 * 0.003).round() as u32).max(2))
        .max(1) as i32;
    // cv2's Hershey font at scale lw/3 is about 7·lw pixels tall.
    let font_px = (7.0 * lw as f64 + 4.0).max(12.0);
    let root = BitMapBackend::with_buffer(pixels, (width, height)).into_drawing_area();
    let draw = || -> DrawResult {
        let style = (FONT, font_px).into_font().color(&WHITE);
        for a in items {
            if !a.xyxy.iter().all(|v| v.is_finite()) {
                continue;
            }
            let r = a.xyxy.map(|v| v.round() as i32);
            let color = rgb(a.class);
            outline_px(&root, r, lw, color)?;
            if let Some(label) = &a.label {
                let (tw, th) = root.estimate_text_size(label, &style)?;
                let (tw, th) = (tw as i32 + 2, th as i32 + 2);
                let outside = r[1] - th >= 3;
                let ty = if outside { r[1] - th } else { r[1] };
                fill_px(&root, r[0], ty, r[0] + tw, ty + th, color)?;
                root.draw_text(label, &style, (r[0] + 1, ty + 1))?;
            }
        }
        Ok(())
    };
    draw().map_err(|e| file_err(here, format!("drawing failed: {e}")))?;
    root.present().map_err(|e| file_err(here, e))?;
    Ok(())
}

/// Upstream `plot_images`: a mosaic of the first `max_images` (upstream 16) images, column by
/// column in a `⌈√n⌉ × ⌈√n⌉` grid, shrunk so its side is at most [`MOSAIC_MAX_SIZE`], with
/// each image's `boxes` (pixels of that image) drawn in the class colour and labelled with the
/// class name (and the confidence, one decimal, for predictions; predictions at or below
/// [`PLOT_CONF_THRES`] are skipped). Images of different sizes sit at the top left of cells
/// as large as the largest. Returns the mosaic's `(width, height)`.
pub fn plot_images(
    images: &[ImageView<'_>],
    boxes: &[Vec<ImageBox>],
    names: &[String],
    out: &Path,
    max_images: usize,
) -> Result<(u32, u32)> {
    format_of(out)?;
    let n = images.len().min(max_images);
    if n == 0 {
        return Err(file_err(out, "no images to plot"));
    }
    for (i, im) in images.iter().take(n).enumerate() {
        let need = im.width as usize * im.height as usize * 3;
        if im.width == 0 || im.height == 0 || im.rgb.len() != need {
            return Err(file_err(
                out,
                format!(
                    "image {i}: {} bytes for {}×{} RGB (need {need}, non-empty)",
                    im.rgb.len(),
                    im.width,
                    im.height
                ),
            ));
        }
    }
    let ns = (n as f64).sqrt().ceil() as u32;
    let w = images[..n].iter().map(|im| im.width).max().unwrap_or(1);
    let h = images[..n].iter().map(|im| im.height).max().unwrap_or(1);
    let (mw, mh) = (w as usize * ns as usize, h as usize * ns as usize);
    if mw * mh > 1 << 28 {
        return Err(file_err(
            out,
            format!("mosaic of {mw}×{mh} pixels is too large"),
        ));
    }
    let mut mosaic = image::RgbImage::from_pixel(mw as u32, mh as u32, image::Rgb([255; 3]));
    for (i, im) in images.iter().take(n).enumerate() {
        let (ox, oy) = (w * (i as u32 / ns), h * (i as u32 % ns));
        let row = im.width as usize * 3;
        for y in 0..im.height as usize {
            let src = &im.rgb[y * row..(y + 1) * row];
            let start = ((oy as usize + y) * mw + ox as usize) * 3;
            mosaic.as_mut()[start..start + row].copy_from_slice(src);
        }
    }
    // shrink as upstream
    let scale = MOSAIC_MAX_SIZE as f64 / ns as f64 / w.max(h) as f64;
    let (cw, ch) = if scale < 1.0 {
        let cw = (scale * w as f64).ceil() as u32;
        let ch = (scale * h as f64).ceil() as u32;
        mosaic = image::imageops::resize(
            &mosaic,
            cw * ns,
            ch * ns,
            image::imageops::FilterType::Triangle,
        );
        (cw, ch)
    } else {
        (w, h)
    };
    let (sx, sy) = (cw as f64 / w as f64, ch as f64 / h as f64);
    let (width, height) = (cw * ns, ch * ns);
    let fs = ((cw + ch) as f64 * ns as f64 * 0.01) as i32;
    let lw = match (fs as f64 / 10.0).round() as i32 {
        0 => ((((width + height + 3) as f64) / 2.0 * 0.003).round() as i32).max(2),
        v => v,
    };
    let font_px = fs.max(12) as f64;
    if !font_ready() {
        return Err(file_err(out, "the built-in font could not be loaded"));
    }
    let mut buf = mosaic.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        let draw = || -> DrawResult {
            let label_style = (FONT, font_px).into_font().color(&WHITE);
            for i in 0..n {
                let (ox, oy) = ((cw * (i as u32 / ns)) as i32, (ch * (i as u32 % ns)) as i32);
                outline_px(
                    &root,
                    [ox, oy, ox + cw as i32, oy + ch as i32],
                    2,
                    RGBColor(255, 255, 255),
                )?;
                let Some(list) = boxes.get(i) else {
                    continue;
                };
                for &(b, cls, conf) in list {
                    if conf.is_some_and(|c| c.is_nan() || c <= PLOT_CONF_THRES)
                        || !b.iter().all(|v| v.is_finite())
                    {
                        continue;
                    }
                    let px = |v: f32, s: f64, o: i32| (v as f64 * s).round() as i32 + o;
                    let r = [
                        px(b[0], sx, ox),
                        px(b[1], sy, oy),
                        px(b[2], sx, ox),
                        px(b[3], sy, oy),
                    ];
                    let color = rgb(cls);
                    outline_px(&root, r, lw, color)?;
                    let name = names.get(cls).cloned().unwrap_or_else(|| cls.to_string());
                    let label = match conf {
                        Some(c) => format!("{name} {c:.1}"),
                        None => name,
                    };
                    let (tw, th) = root.estimate_text_size(&label, &label_style)?;
                    let (tw, th) = (tw as i32, th as i32);
                    let outside = r[1] - th >= 0;
                    let ty = if outside { r[1] - th } else { r[1] };
                    fill_px(&root, r[0], ty, r[0] + tw + 2, ty + th + 1, color)?;
                    root.draw_text(&label, &label_style, (r[0] + 1, ty))?;
                }
            }
            Ok(())
        };
        draw().map_err(|e| file_err(out, format!("drawing failed: {e}")))?;
        root.present().map_err(|e| file_err(out, e))?;
    }
    save_rgb(out, width, height, &buf)?;
    Ok((width, height))
}

/// Upstream `ConfusionMatrix.plot`: `matrix` is `(nc + 1)²` counts, row-major, rows the
/// predicted class and columns the true class, the last of each the background (as
/// [`ConfusionMatrix::matrix`]). Each column is normalised to sum to 1, cells below 0.005
/// are left blank, values are written in the cells when `nc < 30`, and the axes are named by
/// `names` plus "background" (by class index when `names` does not have `nc` entries).
pub fn plot_confusion_matrix(
    matrix: &[f64],
    nc: usize,
    names: &[String],
    out: &Path,
) -> Result<()> {
    let k = nc + 1;
    if matrix.len() != k * k {
        return Err(file_err(
            out,
            format!(
                "confusion matrix has {} values, need (nc + 1)² = {} for nc = {nc}",
                matrix.len(),
                k * k
            ),
        ));
    }
    let col_sum: Vec<f64> = (0..k)
        .map(|c| (0..k).map(|r| matrix[r * k + c]).sum::<f64>())
        .collect();
    let norm: Vec<Option<f64>> = (0..k * k)
        .map(|i| {
            let v = matrix[i] / (col_sum[i % k] + 1e-9);
            (v.is_finite() && v >= 0.005).then_some(v)
        })
        .collect();
    let mut labels: Vec<String> = if names.len() == nc {
        names.to_vec()
    } else {
        (0..nc).map(|c| c.to_string()).collect()
    };
    labels.push("background".to_string());
    let show_labels = k <= 100;
    let tick_px = (700.0 / k as f64).clamp(9.0, 22.0);
    let annotate = nc < 30;
    render(out, CONFUSION_SIZE, |root| {
        let root = root
            .margin(14, 0, 0, 0)
            .titled("Confusion Matrix", text(34.0))?;
        let (main, bar) = root.split_horizontally(CONFUSION_SIZE.0 - 220);
        let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(1) as f64;
        let label_room = if show_labels {
            (longest * tick_px * 0.62 + 20.0).min(320.0) as u32
        } else {
            10
        };
        let mut chart = ChartBuilder::on(&main)
            .margin(20)
            .x_label_area_size(label_room + 50)
            .y_label_area_size(label_room + 50)
            .build_cartesian_2d(0f64..k as f64, 0f64..k as f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc("True")
            .y_desc("Predicted")
            .axis_desc_style(text(26.0))
            .draw()?;
        let cell_px = {
            let (a, _) = chart.backend_coord(&(0.0, 0.0));
            let (b, _) = chart.backend_coord(&(1.0, 0.0));
            (b - a).abs() as f64
        };
        let value_px = (cell_px * 0.3).clamp(6.0, 28.0);
        for r in 0..k {
            for c in 0..k {
                let Some(v) = norm[r * k + c] else { continue };
                // row 0 at the top
                let y = (k - 1 - r) as f64;
                let x = c as f64;
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(x, y), (x + 1.0, y + 1.0)],
                    blues(v).filled(),
                )))?;
                if annotate {
                    let color = if v > 0.5 { WHITE } else { BLACK };
                    let style = (FONT, value_px)
                        .into_font()
                        .color(&color)
                        .pos(Pos::new(HPos::Center, VPos::Center));
                    chart.draw_series(std::iter::once(Text::new(
                        format!("{v:.2}"),
                        (x + 0.5, y + 0.5),
                        style,
                    )))?;
                }
            }
        }
        if show_labels {
            let xs = text(tick_px)
                .transform(FontTransform::Rotate90)
                .pos(Pos::new(HPos::Left, VPos::Center));
            let ys = text(tick_px).pos(Pos::new(HPos::Right, VPos::Center));
            let (ox, oy) = (root.get_base_pixel().0, root.get_base_pixel().1);
            for (i, label) in labels.iter().enumerate() {
                let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
                root.draw_text(label, &xs, (px - ox, py - oy + 8))?;
                let (px, py) = chart.backend_coord(&(0.0, (k - 1 - i) as f64 + 0.5));
                root.draw_text(label, &ys, (px - ox - 8, py - oy))?;
            }
        }
        // colour bar
        let bar = bar.margin(60, 200, 40, 100);
        let mut cb = ChartBuilder::on(&bar)
            .y_label_area_size(0)
            .right_y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        cb.configure_mesh()
            .disable_mesh()
            .disable_x_axis()
            .y_labels(6)
            .label_style(text(18.0))
            .draw()?;
        cb.draw_series((0..100).map(|i| {
            let t = i as f64 / 100.0;
            Rectangle::new([(0.0, t), (1.0, t + 0.01)], blues(t + 0.005).filled())
        }))?;
        Ok(())
    })
}

/// [`plot_confusion_matrix`] of a [`ConfusionMatrix`].
pub fn plot_confusion(cm: &ConfusionMatrix, names: &[String], out: &Path) -> Result<()> {
    plot_confusion_matrix(&cm.matrix, cm.nc, names, out)
}

/// One legend row: label, colour, line width.
type LegendEntry = (String, RGBColor, u32);

/// A 0..1 × 0..1 chart with `lines` drawn, and the legend entries in a panel on the right.
#[allow(clippy::too_many_arguments)]
fn curve_plot(
    out: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    x: &[f64],
    lines: &[(&[f64], RGBColor, u32)],
    legend: &[LegendEntry],
) -> Result<()> {
    render(out, CURVE_SIZE, |root| {
        let root = root.margin(14, 0, 0, 0).titled(title, text(34.0))?;
        let (main, side) = root.split_horizontally(CURVE_SIZE.0 - 480);
        let mut chart = ChartBuilder::on(&main)
            .margin(24)
            .x_label_area_size(70)
            .y_label_area_size(90)
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(235, 235, 235))
            .x_desc(xlabel)
            .y_desc(ylabel)
            .x_labels(6)
            .y_labels(6)
            .label_style(text(20.0))
            .axis_desc_style(text(26.0))
            .draw()?;
        for &(y, color, width) in lines {
            chart.draw_series(LineSeries::new(
                finite_points(x, y),
                color.stroke_width(width),
            ))?;
        }
        if !legend.is_empty() {
            let row = 30;
            let (x0, y0) = (10, 40);
            let hgt = row * legend.len() as i32 + 16;
            side.draw(&Rectangle::new(
                [(x0 - 6, y0 - 8), (470, y0 - 8 + hgt)],
                RGBColor(200, 200, 200).stroke_width(1),
            ))?;
            let style = text(20.0).pos(Pos::new(HPos::Left, VPos::Center));
            for (i, (label, color, width)) in legend.iter().enumerate() {
                let y = y0 + 8 + row * i as i32;
                side.draw(&PathElement::new(
                    [(x0, y), (x0 + 36, y)],
                    color.stroke_width(*width),
                ))?;
                side.draw_text(label, &style, (x0 + 46, y))?;
            }
        }
        Ok(())
    })
}

fn check_curves(out: &Path, px: &[f64], py: &[Vec<f64>], names: &[String]) -> Result<()> {
    if names.len() != py.len() {
        return Err(file_err(
            out,
            format!("{} curves but {} names", py.len(), names.len()),
        ));
    }
    if let Some((i, row)) = py.iter().enumerate().find(|(_, r)| r.len() != px.len()) {
        return Err(file_err(
            out,
            format!("curve {i} has {} points, x has {}", row.len(), px.len()),
        ));
    }
    Ok(())
}

fn column_mean(px: &[f64], py: &[Vec<f64>]) -> Vec<f64> {
    (0..px.len())
        .map(|k| py.iter().map(|r| r[k]).sum::<f64>() / py.len().max(1) as f64)
        .collect()
}

/// Upstream `plot_pr_curve`: precision against recall `px` for each class row of `py`
/// (labelled with `names` and the class's AP@0.5 when there are fewer than 21, else grey and
/// unlabelled) and their mean, thick blue, labelled "all classes {mAP@0.5} mAP@0.5"
/// ([`CURVE_SIZE`]).
pub fn plot_pr_curves(
    px: &[f64],
    py: &[Vec<f64>],
    ap50: &[f64],
    names: &[String],
    out: &Path,
) -> Result<()> {
    check_curves(out, px, py, names)?;
    if ap50.len() != py.len() {
        return Err(file_err(
            out,
            format!("{} curves but {} AP values", py.len(), ap50.len()),
        ));
    }
    let per_class = py.len() < 21;
    let mut lines: Vec<(&[f64], RGBColor, u32)> = Vec::new();
    let mut legend = Vec::new();
    for (i, y) in py.iter().enumerate() {
        let color = if per_class { rgb(i) } else { GREY };
        lines.push((y.as_slice(), color, if per_class { 2 } else { 1 }));
        if per_class {
            legend.push((format!("{} {:.3}", names[i], ap50[i]), color, 2));
        }
    }
    let mean = column_mean(px, py);
    if !py.is_empty() {
        let map50 = ap50.iter().sum::<f64>() / ap50.len() as f64;
        lines.push((mean.as_slice(), BLUE, 4));
        legend.push((format!("all classes {map50:.3} mAP@0.5"), BLUE, 4));
    }
    curve_plot(
        out,
        "Precision-Recall Curve",
        "Recall",
        "Precision",
        px,
        &lines,
        &legend,
    )
}

/// Upstream `plot_mc_curve`: a metric (`ylabel`, e.g. "F1", "Precision", "Recall") against
/// `px` (`xlabel`, "Confidence") for each class row of `py` (labelled by `names` when there
/// are fewer than 21 classes, else grey), and the class mean smoothed with
/// [`smooth`]`(·, 0.05)`, thick blue, labelled "all classes {max} at {x of max}"
/// ([`CURVE_SIZE`]).
pub fn plot_metric_curve(
    px: &[f64],
    py: &[Vec<f64>],
    names: &[String],
    xlabel: &str,
    ylabel: &str,
    out: &Path,
) -> Result<()> {
    check_curves(out, px, py, names)?;
    let per_class = py.len() < 21;
    let mut lines: Vec<(&[f64], RGBColor, u32)> = Vec::new();
    let mut legend = Vec::new();
    for (i, y) in py.iter().enumerate() {
        let color = if per_class { rgb(i) } else { GREY };
        lines.push((y.as_slice(), color, if per_class { 2 } else { 1 }));
        if per_class {
            legend.push((names[i].clone(), color, 2));
        }
    }
    let mean = smooth(&column_mean(px, py), 0.05);
    if !py.is_empty() && !mean.is_empty() {
        let mut best = 0;
        for (k, &v) in mean.iter().enumerate() {
            if v > mean[best] {
                best = k;
            }
        }
        lines.push((mean.as_slice(), BLUE, 4));
        legend.push((
            format!("all classes {:.2} at {:.3}", mean[best], px[best]),
            BLUE,
            4,
        ));
    }
    curve_plot(
        out,
        &format!("{ylabel}-Confidence Curve"),
        xlabel,
        ylabel,
        px,
        &lines,
        &legend,
    )
}

/// Writes `PR_curve.png`, `F1_curve.png`, `P_curve.png` and `R_curve.png` into `dir` from the
/// curves kept in `pc` (as upstream `ap_per_class(plot=True)`); `names` is indexed by class
/// id (ids without a name are written as numbers).
pub fn plot_ap_curves(pc: &ApPerClass, names: &[String], dir: &Path) -> Result<()> {
    let labels: Vec<String> = pc
        .classes
        .iter()
        .map(|&c| names.get(c).cloned().unwrap_or_else(|| c.to_string()))
        .collect();
    let px: Vec<f64> = if pc.curve_x.is_empty() {
        (0..1000).map(|i| i as f64 / 999.0).collect()
    } else {
        pc.curve_x.clone()
    };
    plot_pr_curves(
        &px,
        &pc.pr_curve,
        &pc.ap50(),
        &labels,
        &dir.join("PR_curve.png"),
    )?;
    for (curve, ylabel, file) in [
        (&pc.f1_curve, "F1", "F1_curve.png"),
        (&pc.p_curve, "Precision", "P_curve.png"),
        (&pc.r_curve, "Recall", "R_curve.png"),
    ] {
        plot_metric_curve(&px, curve, &labels, "Confidence", ylabel, &dir.join(file))?;
    }
    Ok(())
}
