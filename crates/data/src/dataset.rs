//! `Dataset`: scanned images and labels plus upstream `LoadImagesAndLabels.__getitem__` —
//! load with long side = imgsz, mosaic (4 or 9 images), MixUp, random_perspective, letterbox,
//! HSV, flips; rectangular batch shapes for validation; optional RAM cache of decoded images.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rand::seq::SliceRandom;
use rand::Rng;
use rayon::prelude::*;

use crate::augment::{
    augment_hsv, flip_lr, flip_ud, letterbox, mixup, random_perspective, Perspective, PixelBox,
};
use crate::boxes::{xywhn_to_xyxy, xyxy_to_xywhn};
use crate::error::{DataError, Result};
use crate::hyp::AugParams;
use crate::imgbuf::{Interp, RgbBuf, PAD_VALUE};
use crate::io::{decode_rgb, load_rgb};
use crate::jpegband::{decode_band, recycle, RowIndex};
use crate::labels::{scan, ImageRecord, Label, ScanReport};
use crate::rng::uniform;

/// Options of a [`Dataset`] (upstream `LoadImagesAndLabels` arguments).
#[derive(Clone, Debug)]
pub struct DatasetOptions {
    /// Network input size (long side), pixels.
    pub imgsz: usize,
    /// Model stride (rect shapes are multiples of it).
    pub stride: usize,
    /// Training-time augmentation on/off.
    pub augment: bool,
    /// Rectangular batches (validation): images sorted by aspect ratio, per-batch shapes.
    pub rect: bool,
    /// Batch size (only used to compute rect batch shapes).
    pub batch_size: usize,
    /// Augmentation hyper-parameters.
    pub aug: AugParams,
    /// Keep decoded, resized images in RAM (`--cache ram`).
    pub cache_ram: bool,
    /// Keep decoded images on disk next to their sources (`--cache disk`, see
    /// [`crate::diskcache`]); ignored with `cache_ram`.
    pub cache_disk: bool,
    /// Merge all classes into class 0.
    pub single_cls: bool,
    /// Number of classes: rows with a class id ≥ nc make their image dropped. `None`: no check.
    pub nc: Option<usize>,
    /// Rect shape padding in strides (upstream: 0.0 train, 0.5 val).
    pub pad: f32,
    /// Read/write the label cache file next to the labels.
    pub label_cache: bool,
}

impl Default for DatasetOptions {
    fn default() -> Self {
        DatasetOptions {
            imgsz: 640,
            stride: 32,
            augment: false,
            rect: false,
            batch_size: 16,
            aug: AugParams::default(),
            cache_ram: false,
            cache_disk: false,
            single_cls: false,
            nc: None,
            pad: 0.0,
            label_cache: true,
        }
    }
}

/// How a sample's pixels relate to its original image: `x_input = x_orig * ratio.0 + pad.0`,
/// `y_input = y_orig * ratio.1 + pad.1`. Exact for letterboxed samples; for mosaic samples it
/// only describes the first image's load resize (upstream returns no shapes there).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShapeInfo {
    /// Original (height, width), after EXIF orientation.
    pub orig_hw: (usize, usize),
    /// (width gain, height gain) from original to network-input pixels.
    pub ratio: (f32, f32),
    /// (left, top) padding in network-input pixels.
    pub pad: (f32, f32),
}

impl ShapeInfo {
    /// Maps an `x1 y1 x2 y2` box from network-input pixels back to original-image pixels.
    pub fn to_original(&self, b: [f32; 4]) -> [f32; 4] {
        [
            (b[0] - self.pad.0) / self.ratio.0,
            (b[1] - self.pad.1) / self.ratio.1,
            (b[2] - self.pad.0) / self.ratio.0,
            (b[3] - self.pad.1) / self.ratio.1,
        ]
    }

    /// Maps an `x1 y1 x2 y2` box from original-image pixels to network-input pixels.
    pub fn to_input(&self, b: [f32; 4]) -> [f32; 4] {
        [
            b[0] * self.ratio.0 + self.pad.0,
            b[1] * self.ratio.1 + self.pad.1,
            b[2] * self.ratio.0 + self.pad.0,
            b[3] * self.ratio.1 + self.pad.1,
        ]
    }
}

/// One preprocessed sample.
#[derive(Clone, Debug)]
pub struct Sample {
    /// RGB u8 HWC image at network-input size.
    pub image: RgbBuf,
    /// `[class, cx, cy, w, h]`, normalised to `image`'s size.
    pub labels: Vec<Label>,
    /// The image file.
    pub path: PathBuf,
    /// Original shape and the mapping to the input.
    pub shape: ShapeInfo,
}

/// Rows of an image and the image row the first of them is.
type RowsFrom<'a> = (Cow<'a, RgbBuf>, i64);

/// A decoded image resized so its long side is `imgsz`.
#[derive(Clone, Debug)]
struct Loaded {
    im: RgbBuf,
    orig_hw: (usize, usize),
}

/// A YOLO-format dataset ready for sampling.
#[derive(Debug)]
pub struct Dataset {
    opts: DatasetOptions,
    sources: Vec<PathBuf>,
    records: Vec<ImageRecord>,
    report: ScanReport,
    /// Rect mode: (height, width) per batch.
    batch_shapes: Option<Vec<(usize, usize)>>,
    ram: Option<Vec<Loaded>>,
    /// Images are read from their disk cache files.
    disk: bool,
    /// Per image, where its JPEG's MCU rows start, once a mosaic first needed a band of it.
    bands: Vec<OnceLock<Option<RowIndex>>>,
}

impl Dataset {
    /// Scans `image_sources` (folders, `.txt` lists, images), verifies labels (using the label
    /// cache when allowed), and prepares rect shapes and the RAM cache as the options ask.
    pub fn new(image_sources: &[PathBuf], opts: DatasetOptions) -> Result<Dataset> {
        if opts.imgsz < 32 || opts.stride == 0 || opts.batch_size == 0 {
            return Err(DataError::InvalidArgument {
                what: "DatasetOptions",
                detail: format!(
                    "imgsz {} must be ≥ 32, stride {} and batch_size {} ≥ 1",
                    opts.imgsz, opts.stride, opts.batch_size
                ),
            });
        }
        opts.aug
            .validate()
            .map_err(|detail| DataError::InvalidArgument {
                what: "AugParams",
                detail,
            })?;
        let scanned = scan(image_sources, opts.nc, opts.label_cache)?;
        Self::from_records(image_sources, scanned.records, scanned.report, opts)
    }

    /// Builds a dataset from already-verified records (e.g. a loaded [`crate::LabelCache`]).
    pub fn from_records(
        sources: &[PathBuf],
        mut records: Vec<ImageRecord>,
        report: ScanReport,
        opts: DatasetOptions,
    ) -> Result<Dataset> {
        if records.is_empty() {
            return Err(DataError::NoUsableImages {
                sources: sources.to_vec(),
                summary: report.summary(),
            });
        }
        if opts.augment && records.iter().all(|r| r.labels.is_empty()) {
            return Err(DataError::NoLabels {
                sources: sources.to_vec(),
            });
        }
        if opts.single_cls {
            for r in &mut records {
                for l in &mut r.labels {
                    l[0] = 0.0;
                }
            }
        }
        let rect = opts.rect;
        let mut batch_shapes = None;
        if rect {
            // Sort by aspect ratio h / w; each batch gets the smallest stride-multiple shape.
            records.sort_by(|a, b| {
                let ra = a.height as f64 / a.width as f64;
                let rb = b.height as f64 / b.width as f64;
                ra.total_cmp(&rb)
            });
            let bs = opts.batch_size;
            let nb = records.len().div_ceil(bs);
            let mut shapes = Vec::with_capacity(nb);
            for b in 0..nb {
                let chunk = &records[b * bs..((b + 1) * bs).min(records.len())];
                let ars = chunk.iter().map(|r| r.height as f64 / r.width as f64);
                let (mini, maxi) = ars.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), a| {
                    (lo.min(a), hi.max(a))
                });
                let (sh, sw) = if maxi < 1.0 {
                    (maxi, 1.0)
                } else if mini > 1.0 {
                    (1.0, 1.0 / mini)
                } else {
                    (1.0, 1.0)
                };
                let f = |x: f64| {
                    ((x * opts.imgsz as f64 / opts.stride as f64 + opts.pad as f64).ceil() as usize)
                        * opts.stride
                };
                shapes.push((f(sh), f(sw)));
            }
            batch_shapes = Some(shapes);
        }
        let mut ds = Dataset {
            opts,
            sources: sources.to_vec(),
            records,
            report,
            batch_shapes,
            ram: None,
            disk: false,
            bands: Vec::new(),
        };
        ds.bands = (0..ds.records.len()).map(|_| OnceLock::new()).collect();
        if ds.opts.cache_disk && !ds.opts.cache_ram {
            ds.disk = ds.fill_disk_cache();
        }
        if ds.opts.cache_ram {
            let loaded: Result<Vec<Loaded>> = (0..ds.records.len())
                .into_par_iter()
                .map(|i| ds.read_image(i))
                .collect();
            let loaded = loaded?;
            let bytes: usize = loaded.iter().map(|l| l.im.data.len()).sum();
            tracing::info!(
                "cached {} images in RAM ({:.2} GB)",
                loaded.len(),
                bytes as f64 / (1u64 << 30) as f64
            );
            ds.ram = Some(loaded);
        }
        Ok(ds)
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether the dataset has no image (never true for a constructed dataset).
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The options it was built with.
    pub fn options(&self) -> &DatasetOptions {
        &self.opts
    }

    /// The sources it was built from.
    pub fn sources(&self) -> &[PathBuf] {
        &self.sources
    }

    /// Verified records, in sampling order (aspect-sorted in rect mode).
    pub fn records(&self) -> &[ImageRecord] {
        &self.records
    }

    /// The scan report (counts and issues).
    pub fn report(&self) -> &ScanReport {
        &self.report
    }

    /// Rect mode: the (height, width) of each batch.
    pub fn batch_shapes(&self) -> Option<&[(usize, usize)]> {
        self.batch_shapes.as_deref()
    }

    /// The image file of sample `i`.
    pub fn path(&self, i: usize) -> &Path {
        &self.records[i].path
    }

    /// Writes the missing or stale disk-cache files; returns whether the cache can be used
    /// (false, with a warning, when a file cannot be written: e.g. a read-only dataset).
    fn fill_disk_cache(&self) -> bool {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let written = AtomicUsize::new(0);
        let failure: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);
        self.records.par_iter().for_each(|rec| {
            if failure.lock().map(|f| f.is_some()).unwrap_or(true)
                || crate::diskcache::is_fresh(&rec.path)
            {
                return;
            }
            // Unreadable images were dropped by the scan; a decode error now is left to the
            // normal load path to report.
            let Ok(im) = load_rgb(&rec.path) else { return };
            match crate::diskcache::write(&rec.path, &im) {
                Ok(()) => {
                    written.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    if let Ok(mut f) = failure.lock() {
                        f.get_or_insert_with(|| {
                            format!("{}: {e}", crate::diskcache::cache_path(&rec.path).display())
                        });
                    }
                }
            }
        });
        if let Some(why) = failure.into_inner().ok().flatten() {
            tracing::warn!("--cache disk is off: cannot write the image cache ({why})");
            return false;
        }
        tracing::info!(
            "disk cache: {} images ({} written now, next to the images as *.yfraw)",
            self.records.len(),
            written.into_inner()
        );
        true
    }

    /// Decodes image `i` (or reads its disk cache) and resizes its long side to `imgsz`
    /// (upstream `load_image`).
    fn read_image(&self, i: usize) -> Result<Loaded> {
        let rec = &self.records[i];
        let cached = if self.disk {
            crate::diskcache::read(&rec.path)
        } else {
            None
        };
        let im = match cached {
            Some(im) => im,
            None => load_rgb(&rec.path)?,
        };
        Ok(self.fit(im))
    }

    /// A decoded image resized so its long side is `imgsz` (upstream `load_image`'s resize).
    fn fit(&self, im: RgbBuf) -> Loaded {
        let (h0, w0) = (im.height, im.width);
        let r = self.opts.imgsz as f64 / h0.max(w0) as f64;
        let im = if r != 1.0 {
            let interp = if self.opts.augment || r > 1.0 {
                Interp::Linear
            } else {
                Interp::Area
            };
            let nw = ((w0 as f64 * r).ceil() as usize).max(1);
            let nh = ((h0 as f64 * r).ceil() as usize).max(1);
            im.resize(nw, nh, interp)
        } else {
            im
        };
        Loaded {
            im,
            orig_hw: (h0, w0),
        }
    }

    fn load_image(&self, i: usize) -> Result<Cow<'_, Loaded>> {
        match &self.ram {
            Some(v) => Ok(Cow::Borrowed(&v[i])),
            None => self.read_image(i).map(Cow::Owned),
        }
    }

    /// Labels of image `i` as pixel boxes in a `w × h` image placed at (padw, padh).
    fn pixel_labels(&self, i: usize, w: f32, h: f32, padw: f32, padh: f32) -> Vec<PixelBox> {
        self.records[i]
            .labels
            .iter()
            .map(|l| {
                let b = xywhn_to_xyxy([l[1], l[2], l[3], l[4]], w, h, padw, padh);
                [l[0], b[0], b[1], b[2], b[3]]
            })
            .collect()
    }

    /// Sample `index`, augmented (when the options say so) with randomness from `rng`.
    pub fn get<R: Rng + ?Sized>(&self, index: usize, rng: &mut R) -> Result<Sample> {
        if index >= self.len() {
            return Err(DataError::InvalidArgument {
                what: "Dataset::get",
                detail: format!("index {index} out of range for {} images", self.len()),
            });
        }
        let aug = &self.opts.aug;
        let mosaic = self.opts.augment && !self.opts.rect;
        let (mut img, boxes, shape) = if mosaic && rng.random::<f32>() < aug.mosaic {
            let nine = aug.mosaic9 > 0.0 && rng.random::<f32>() < aug.mosaic9;
            let (mut img, mut boxes) = if nine {
                self.load_mosaic9(index, rng)?
            } else {
                self.load_mosaic(index, rng)?
            };
            if rng.random::<f32>() < aug.mixup {
                let other = rng.random_range(0..self.len());
                let (img2, boxes2) = self.load_mosaic(other, rng)?;
                mixup(&mut img, &mut boxes, &img2, &boxes2, rng);
            }
            let rec = &self.records[index];
            let s = self.opts.imgsz as f32 / rec.width.max(rec.height) as f32;
            let shape = ShapeInfo {
                orig_hw: (rec.height as usize, rec.width as usize),
                ratio: (s, s),
                pad: (0.0, 0.0),
            };
            (img, boxes, shape)
        } else {
            let loaded = self.load_image(index)?;
            let (h0, w0) = loaded.orig_hw;
            let (h, w) = (loaded.im.height, loaded.im.width);
            let target = match &self.batch_shapes {
                Some(bs) => bs[index / self.opts.batch_size],
                None => (self.opts.imgsz, self.opts.imgsz),
            };
            let (img, lb) = letterbox(
                &loaded.im,
                target,
                false,
                false,
                self.opts.augment,
                self.opts.stride,
            );
            let boxes = self.pixel_labels(
                index,
                lb.ratio.0 * w as f32,
                lb.ratio.1 * h as f32,
                lb.pad.0,
                lb.pad.1,
            );
            let shape = ShapeInfo {
                orig_hw: (h0, w0),
                ratio: (
                    lb.ratio.0 * w as f32 / w0 as f32,
                    lb.ratio.1 * h as f32 / h0 as f32,
                ),
                pad: lb.pad,
            };
            if self.opts.augment {
                let (img, boxes) = random_perspective(&img, &boxes, aug, (0, 0), rng);
                (img, boxes, shape)
            } else {
                (img, boxes, shape)
            }
        };
        let (w, h) = (img.width as f32, img.height as f32);
        let mut labels: Vec<Label> = boxes
            .iter()
            .map(|b| {
                let n = xyxy_to_xywhn([b[1], b[2], b[3], b[4]], w, h, true, 1e-3);
                [b[0], n[0], n[1], n[2], n[3]]
            })
            .collect();
        if self.opts.augment {
            augment_hsv(&mut img, aug.hsv_h, aug.hsv_s, aug.hsv_v, rng);
            if rng.random::<f32>() < aug.flipud {
                flip_ud(&mut img, &mut labels);
            }
            if rng.random::<f32>() < aug.fliplr {
                flip_lr(&mut img, &mut labels);
            }
        }
        Ok(Sample {
            image: img,
            labels,
            path: self.records[index].path.clone(),
            shape,
        })
    }

    /// Upstream `load_mosaic`: the image and 3 random others around a random centre on a
    /// 2s × 2s canvas, then random_perspective cropping back to s × s.
    ///
    /// The same pixels and boxes as building the whole canvas, but cheaper: the warp is drawn
    /// first (no draw depends on pixels, so the random stream is upstream's), only the window
    /// of the canvas it reads is built, and a JPEG that needs no resizing is decoded only over
    /// the band of rows that window shows, or not at all when it shows none of it.
    pub fn load_mosaic<R: Rng + ?Sized>(
        &self,
        index: usize,
        rng: &mut R,
    ) -> Result<(RgbBuf, Vec<PixelBox>)> {
        let s = self.opts.imgsz;
        let (xc, yc, indices) = self.mosaic_draws(index, rng);
        let border = -(s as i64 / 2);
        let warp = Perspective::draw((2 * s, 2 * s), &self.opts.aug, (border, border), rng);
        let (wx0, wy0, wx1, wy1) = warp.source_window();
        let mut window = RgbBuf::filled(wx1 - wx0, wy1 - wy0, [PAD_VALUE; 3]);
        let win = [wx0 as i64, wy0 as i64, wx1 as i64, wy1 as i64];
        let mut boxes = Vec::new();
        for (i, &mi) in indices.iter().enumerate() {
            let place = |w: i64, h: i64| match i {
                0 => (xc - w, yc - h),
                1 => (xc, yc - h),
                2 => (xc - w, yc),
                _ => (xc, yc),
            };
            let (w, h, im) = self.load_for_window(mi, place, win)?;
            let (padw, padh) = place(w, h);
            if let Some((im, y0)) = im {
                paste_clipped(&mut window, &im, padw - win[0], padh + y0 - win[1]);
                if let Cow::Owned(im) = im {
                    recycle(im);
                }
            }
            boxes.extend(self.pixel_labels(mi, w as f32, h as f32, padw as f32, padh as f32));
        }
        clip_boxes(&mut boxes, 2.0 * s as f32);
        Ok(warp.apply(&window, (wx0, wy0), &boxes))
    }

    /// The first draws of a 4-image mosaic: the centre (x, y) on the 2s × 2s canvas and the
    /// images in placement order (top-left, top-right, bottom-left, bottom-right).
    fn mosaic_draws<R: Rng + ?Sized>(&self, index: usize, rng: &mut R) -> (i64, i64, Vec<usize>) {
        let s = self.opts.imgsz;
        let half = (s / 2) as f64;
        let yc = uniform(rng, half, 2.0 * s as f64 - half) as i64;
        let xc = uniform(rng, half, 2.0 * s as f64 - half) as i64;
        let mut indices = vec![index];
        for _ in 0..3 {
            indices.push(rng.random_range(0..self.len()));
        }
        indices.shuffle(rng);
        (xc, yc, indices)
    }

    /// Image `i` for a mosaic: its size once loaded (long side `imgsz`) and as much of its
    /// pixels as the canvas window `win = [x0, y0, x1, y1]` shows when the image's top-left
    /// corner goes where `place(width, height)` says, with the image row they start at.
    /// Without a cache and when no resizing is needed, a JPEG is decoded only over the band of
    /// rows the window shows (see `jpegband`), and an image the window misses is not read.
    fn load_for_window(
        &self,
        i: usize,
        place: impl Fn(i64, i64) -> (i64, i64),
        win: [i64; 4],
    ) -> Result<(i64, i64, Option<RowsFrom<'_>>)> {
        let rec = &self.records[i];
        let (w, h) = (rec.width as i64, rec.height as i64);
        let full = |loaded: Loaded| {
            let (w, h) = (loaded.im.width as i64, loaded.im.height as i64);
            (w, h, Some((Cow::Owned(loaded.im), 0)))
        };
        if let Some(ram) = &self.ram {
            let im = &ram[i].im;
            return Ok((
                im.width as i64,
                im.height as i64,
                Some((Cow::Borrowed(im), 0)),
            ));
        }
        let jpeg = rec
            .path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("jpg") || e.eq_ignore_ascii_case("jpeg"));
        if self.disk || !jpeg || w.max(h) as usize != self.opts.imgsz {
            return self.read_image(i).map(full);
        }
        let (x, y) = place(w, h);
        let (r0, r1) = ((win[1] - y).max(0), (win[3] - y).min(h));
        if x >= win[2] || x + w <= win[0] || r1 <= r0 {
            return Ok((w, h, None));
        }
        let bytes = std::fs::read(&rec.path).map_err(crate::error::io_err(&rec.path))?;
        match decode_band(&rec.path, &bytes, r0 as usize..r1 as usize, &self.bands[i])? {
            Some(b) if b.full == (w as usize, h as usize) => {
                Ok((w, h, Some((Cow::Owned(b.im), b.y0 as i64))))
            }
            // Not a JPEG it can cut, or not the size the scan recorded: decode it all (from
            // the bytes already read).
            _ => decode_rgb(&rec.path, &bytes).map(|(im, _)| full(self.fit(im))),
        }
    }

    /// The 9-image mosaic variant of upstream (`load_mosaic9`): tiles around a centre image on
    /// a 3s × 3s canvas, a random 2s × 2s crop, then random_perspective to s × s.
    pub fn load_mosaic9<R: Rng + ?Sized>(
        &self,
        index: usize,
        rng: &mut R,
    ) -> Result<(RgbBuf, Vec<PixelBox>)> {
        let s = self.opts.imgsz as i64;
        let mut indices = vec![index];
        for _ in 0..8 {
            indices.push(rng.random_range(0..self.len()));
        }
        indices.shuffle(rng);
        let mut canvas = RgbBuf::filled(3 * s as usize, 3 * s as usize, [PAD_VALUE; 3]);
        let mut boxes = Vec::new();
        let (mut hp, mut wp) = (-1i64, -1i64);
        let (mut h0, mut w0) = (0i64, 0i64);
        for (i, &mi) in indices.iter().enumerate() {
            let loaded = self.load_image(mi)?;
            let (w, h) = (loaded.im.width as i64, loaded.im.height as i64);
            // Top-left corner of each tile: centre, top, top-right, right, bottom-right,
            // bottom, bottom-left, left, top-left.
            let (x, y) = match i {
                0 => {
                    h0 = h;
                    w0 = w;
                    (s, s)
                }
                1 => (s, s - h),
                2 => (s + wp, s - h),
                3 => (s + w0, s),
                4 => (s + w0, s + hp),
                5 => (s + w0 - w, s + h0),
                6 => (s + w0 - wp - w, s + h0),
                7 => (s - w, s + h0 - h),
                _ => (s - w, s + h0 - hp - h),
            };
            paste_clipped(&mut canvas, &loaded.im, x, y);
            boxes.extend(self.pixel_labels(mi, w as f32, h as f32, x as f32, y as f32));
            hp = h;
            wp = w;
        }
        let yc = uniform(rng, 0.0, s as f64) as usize;
        let xc = uniform(rng, 0.0, s as f64) as usize;
        let mut crop = RgbBuf::filled(2 * s as usize, 2 * s as usize, [PAD_VALUE; 3]);
        crop.copy_rect((0, 0), &canvas, (xc, yc), (2 * s as usize, 2 * s as usize));
        for b in &mut boxes {
            b[1] -= xc as f32;
            b[3] -= xc as f32;
            b[2] -= yc as f32;
            b[4] -= yc as f32;
        }
        clip_boxes(&mut boxes, 2.0 * s as f32);
        let border = -(s / 2);
        Ok(random_perspective(
            &crop,
            &boxes,
            &self.opts.aug,
            (border, border),
            rng,
        ))
    }
}

/// Clip pixel boxes to [0, limit] (upstream clips mosaic labels before the warp).
fn clip_boxes(boxes: &mut [PixelBox], limit: f32) {
    for b in boxes {
        for v in &mut b[1..] {
            *v = v.clamp(0.0, limit);
        }
    }
}

/// Pastes `src` with its top-left corner at (x, y) of `dst`, clipped to `dst`.
fn paste_clipped(dst: &mut RgbBuf, src: &RgbBuf, x: i64, y: i64) {
    let x1 = x.max(0);
    let y1 = y.max(0);
    let x2 = (x + src.width as i64).min(dst.width as i64);
    let y2 = (y + src.height as i64).min(dst.height as i64);
    if x2 <= x1 || y2 <= y1 {
        return;
    }
    dst.copy_rect(
        (x1 as usize, y1 as usize),
        src,
        ((x1 - x) as usize, (y1 - y) as usize),
        ((x2 - x1) as usize, (y2 - y1) as usize),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::save_rgb;
    use crate::rng::sample_rng;
    use crate::synth::{generate, SynthConfig};

    /// Upstream's order of work, the reference for [`Dataset::load_mosaic`]: every image
    /// decoded in full onto the whole 2s × 2s canvas, then random_perspective.
    fn mosaic_reference<R: Rng + ?Sized>(
        ds: &Dataset,
        index: usize,
        rng: &mut R,
    ) -> (RgbBuf, Vec<PixelBox>) {
        let s = ds.opts.imgsz;
        let (xc, yc, indices) = ds.mosaic_draws(index, rng);
        let mut canvas = RgbBuf::filled(2 * s, 2 * s, [PAD_VALUE; 3]);
        let mut boxes = Vec::new();
        for (i, &mi) in indices.iter().enumerate() {
            let loaded = ds.read_image(mi).unwrap();
            let (w, h) = (loaded.im.width as i64, loaded.im.height as i64);
            let (padw, padh) = match i {
                0 => (xc - w, yc - h),
                1 => (xc, yc - h),
                2 => (xc - w, yc),
                _ => (xc, yc),
            };
            paste_clipped(&mut canvas, &loaded.im, padw, padh);
            boxes.extend(ds.pixel_labels(mi, w as f32, h as f32, padw as f32, padh as f32));
        }
        clip_boxes(&mut boxes, 2.0 * s as f32);
        let border = -(s as i64 / 2);
        random_perspective(&canvas, &boxes, &ds.opts.aug, (border, border), rng)
    }

    #[test]
    fn windowed_mosaic_equals_the_whole_canvas() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("d");
        generate(&SynthConfig {
            out: out.clone(),
            train: 6,
            val: 0,
            imgsz: 96,
            seed: 3,
            ..Default::default()
        })
        .unwrap();
        // Non-square JPEGs and a PNG beside the square synthetic JPEGs.
        let train = out.join("images/train");
        let src = load_rgb(&train.join("train_000000.jpg")).unwrap();
        for (name, w, h) in [
            ("wide.jpg", 96, 61),
            ("tall.jpg", 45, 96),
            ("flat.png", 96, 70),
        ] {
            let mut im = RgbBuf::filled(w, h, [0; 3]);
            im.copy_rect((0, 0), &src, (0, 0), (w, h));
            save_rgb(&im, &train.join(name)).unwrap();
            let label = out
                .join("labels/train")
                .join(name.replace(".jpg", ".txt").replace(".png", ".txt"));
            std::fs::write(label, "1 0.5 0.5 0.4 0.3\n0 0.2 0.8 0.2 0.2\n").unwrap();
        }
        // JPEGs no band can be cut from (progressive; EXIF-rotated to 53 × 70): at imgsz 70
        // they take the full decode of the bytes already read.
        for name in ["decline_progressive.jpg", "decline_rotated.jpg"] {
            let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg");
            std::fs::copy(fixture.join(name), train.join(name)).unwrap();
            let label = out.join("labels/train").join(name.replace(".jpg", ".txt"));
            std::fs::write(label, "2 0.5 0.5 0.6 0.5\n").unwrap();
        }
        let base = AugParams::default();
        let tilted = AugParams {
            degrees: 12.0,
            shear: 4.0,
            ..base.clone()
        };
        let persp = AugParams {
            perspective: 0.0008,
            scale: 0.9,
            ..base.clone()
        };
        let wide = AugParams {
            scale: 0.95,
            translate: 0.3,
            ..base.clone()
        };
        let mut windows_cut = 0;
        for (imgsz, cache_ram) in [(96, false), (96, true), (128, false), (70, false)] {
            for aug in [&base, &tilted, &persp, &wide] {
                let ds = Dataset::new(
                    std::slice::from_ref(&train),
                    DatasetOptions {
                        imgsz,
                        augment: true,
                        aug: aug.clone(),
                        cache_ram,
                        label_cache: false,
                        nc: Some(6),
                        ..Default::default()
                    },
                )
                .unwrap();
                for seed in 0..30u64 {
                    let index = seed as usize % ds.len();
                    let got = ds.load_mosaic(index, &mut sample_rng(seed, 0, 0)).unwrap();
                    let want = mosaic_reference(&ds, index, &mut sample_rng(seed, 0, 0));
                    assert_eq!(got.1, want.1, "boxes, imgsz {imgsz} seed {seed} {aug:?}");
                    assert!(
                        got.0 == want.0,
                        "pixels, imgsz {imgsz} cache {cache_ram} seed {seed} {aug:?}"
                    );
                    // Whether the window left out part of the canvas (the same draws again).
                    let mut r = sample_rng(seed, 0, 0);
                    ds.mosaic_draws(index, &mut r);
                    let border = -(imgsz as i64) / 2;
                    let (x0, y0, x1, y1) =
                        Perspective::draw((2 * imgsz, 2 * imgsz), aug, (border, border), &mut r)
                            .source_window();
                    let cut = x0 > 0 || y0 > 0 || x1 < 2 * imgsz || y1 < 2 * imgsz;
                    windows_cut += (!cache_ram && imgsz == 96 && cut) as usize;
                }
            }
        }
        assert!(
            windows_cut > 40,
            "windows rarely left out part of the canvas: {windows_cut}"
        );
    }
}
