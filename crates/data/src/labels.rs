//! Label parsing and verification as upstream `verify_image_label`, the dataset scan with its
//! one-time summary of bad data, and the label cache that lets a second run skip the scan.

use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::boxes::polygon_to_xywh;
use crate::error::{io_err, DataError, Result};
use crate::io::{label_path, list_images, load_rgb_checked};

/// One label row: `[class, cx, cy, w, h]`, coordinates normalised to the image.
pub type Label = [f32; 5];

/// What went wrong with a file, by upstream's handling.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum IssueKind {
    /// The image cannot be decoded or is too small: skipped.
    CorruptImage,
    /// A file among the sources is not an image: skipped.
    NonImage,
    /// A label row has the wrong number of columns (or a polygon an odd one): image dropped.
    Columns,
    /// A label value is not a number, NaN or infinite: image dropped.
    NotANumber,
    /// A label value is negative: image dropped.
    Negative,
    /// A coordinate is above 1 (not normalised): image dropped.
    OutOfRange,
    /// A class id is ≥ nc or not an integer: image dropped.
    BadClass,
    /// Duplicate label rows: de-duplicated, image kept.
    Duplicate,
    /// A JPEG lacks its end marker but decodes: kept.
    TruncatedJpeg,
    /// No label file: kept as a background image.
    MissingLabel,
    /// An empty label file: kept as a background image.
    EmptyLabel,
}

impl IssueKind {
    /// Whether the image is dropped from the dataset.
    pub fn drops_image(self) -> bool {
        !matches!(
            self,
            IssueKind::Duplicate
                | IssueKind::TruncatedJpeg
                | IssueKind::MissingLabel
                | IssueKind::EmptyLabel
        )
    }

    fn describe(self) -> &'static str {
        match self {
            IssueKind::CorruptImage => "corrupt image (skipped)",
            IssueKind::NonImage => "not an image (skipped)",
            IssueKind::Columns => "wrong column count (image dropped)",
            IssueKind::NotANumber => "non-numeric/NaN value (image dropped)",
            IssueKind::Negative => "negative value (image dropped)",
            IssueKind::OutOfRange => "coordinate > 1 (image dropped)",
            IssueKind::BadClass => "bad class id (image dropped)",
            IssueKind::Duplicate => "duplicate rows (removed)",
            IssueKind::TruncatedJpeg => "truncated JPEG (kept)",
            IssueKind::MissingLabel => "missing label file (background)",
            IssueKind::EmptyLabel => "empty label file (background)",
        }
    }
}

/// One problem found in one file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Issue {
    /// How it is handled.
    pub kind: IssueKind,
    /// The image (or label) file concerned.
    pub path: PathBuf,
    /// Human-readable reason, with the line number for label problems.
    pub reason: String,
}

/// A label file problem found by [`parse_labels`].
#[derive(Clone, Debug, PartialEq)]
pub struct LabelProblem {
    /// The category.
    pub kind: IssueKind,
    /// 1-based line (0 for the whole file).
    pub line: usize,
    /// What was wrong.
    pub detail: String,
}

/// Labels parsed from one file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParsedLabels {
    /// De-duplicated rows.
    pub labels: Vec<Label>,
    /// The polygons of segment rows (normalised x, y pairs), parallel to `labels`, if any.
    pub segments: Vec<Vec<f32>>,
    /// How many duplicate rows were removed.
    pub duplicates: usize,
}

/// Parses label text as upstream: rows `class cx cy w h`; if any row has more than 6 values the
/// rows are polygons `class x1 y1 x2 y2 …` converted to their bounding boxes. Values must be
/// finite, ≥ 0, coordinates ≤ 1, class ids integers below `nc` (when given). Duplicate rows are
/// removed (counted in `duplicates`).
pub fn parse_labels(
    text: &str,
    nc: Option<usize>,
) -> std::result::Result<ParsedLabels, LabelProblem> {
    let rows: Vec<(usize, Vec<&str>)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split_whitespace().collect::<Vec<_>>()))
        .filter(|(_, t)| !t.is_empty())
        .collect();
    let problem = |kind, line, detail: String| LabelProblem { kind, line, detail };
    let is_segments = rows.iter().any(|(_, t)| t.len() > 6);
    let mut labels = Vec::with_capacity(rows.len());
    let mut segments = Vec::new();
    for (line, toks) in &rows {
        let mut vals = Vec::with_capacity(toks.len());
        for t in toks {
            match t.parse::<f32>() {
                Ok(v) if v.is_finite() => vals.push(v),
                Ok(v) => {
                    return Err(problem(
                        IssueKind::NotANumber,
                        *line,
                        format!("value `{t}` is {v}; expected a finite number"),
                    ))
                }
                Err(_) => {
                    return Err(problem(
                        IssueKind::NotANumber,
                        *line,
                        format!("`{t}` is not a number"),
                    ))
                }
            }
        }
        let row: Label = if is_segments {
            let pts = &vals[1..];
            if pts.len() < 2 || pts.len() % 2 != 0 {
                return Err(problem(
                    IssueKind::Columns,
                    *line,
                    format!(
                        "polygon row has {} coordinates; expected an even number (x y pairs)",
                        pts.len()
                    ),
                ));
            }
            if let Some(&v) = pts.iter().find(|v| **v < 0.0) {
                return Err(problem(
                    IssueKind::Negative,
                    *line,
                    format!("negative coordinate {v}"),
                ));
            }
            if let Some(&v) = pts.iter().find(|v| **v > 1.0) {
                return Err(problem(
                    IssueKind::OutOfRange,
                    *line,
                    format!("coordinate {v} > 1; expected normalised coordinates"),
                ));
            }
            segments.push(pts.to_vec());
            let b = polygon_to_xywh(pts);
            [vals[0], b[0], b[1], b[2], b[3]]
        } else {
            if vals.len() != 5 {
                return Err(problem(
                    IssueKind::Columns,
                    *line,
                    format!("{} columns; expected 5 (class cx cy w h)", vals.len()),
                ));
            }
            [vals[0], vals[1], vals[2], vals[3], vals[4]]
        };
        if let Some(&v) = row.iter().find(|v| **v < 0.0) {
            return Err(problem(
                IssueKind::Negative,
                *line,
                format!("negative value {v}"),
            ));
        }
        if let Some(&v) = row[1..].iter().find(|v| **v > 1.0) {
            return Err(problem(
                IssueKind::OutOfRange,
                *line,
                format!("coordinate {v} > 1; expected normalised coordinates (0..1)"),
            ));
        }
        if row[0].fract() != 0.0 {
            return Err(problem(
                IssueKind::BadClass,
                *line,
                format!("class id {} is not an integer", row[0]),
            ));
        }
        if let Some(nc) = nc {
            if row[0] as usize >= nc {
                return Err(problem(
                    IssueKind::BadClass,
                    *line,
                    format!("class id {} ≥ nc = {nc}", row[0]),
                ));
            }
        }
        labels.push(row);
    }
    // De-duplicate exact rows, keeping the first occurrence.
    let n = labels.len();
    let mut keep = Vec::with_capacity(n);
    for i in 0..n {
        if !labels[..i].iter().any(|r| r == &labels[i]) {
            keep.push(i);
        }
    }
    let duplicates = n - keep.len();
    if duplicates > 0 {
        labels = keep.iter().map(|&i| labels[i]).collect();
        if !segments.is_empty() {
            segments = keep.iter().map(|&i| segments[i].clone()).collect();
        }
    }
    Ok(ParsedLabels {
        labels,
        segments,
        duplicates,
    })
}

/// Reads and parses one label file strictly: any problem is an error naming the file and line.
pub fn read_label_file(path: &Path, nc: Option<usize>) -> Result<Vec<Label>> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    parse_labels(&text, nc)
        .map(|p| p.labels)
        .map_err(|p| DataError::Label {
            path: path.to_path_buf(),
            line: p.line,
            detail: p.detail,
        })
}

/// A verified image and its labels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image file.
    pub path: PathBuf,
    /// Width after EXIF orientation.
    pub width: u32,
    /// Height after EXIF orientation.
    pub height: u32,
    /// Label rows (empty for a background image).
    pub labels: Vec<Label>,
    /// Polygons of segment labels, parallel to `labels` (empty for box labels).
    #[serde(default)]
    pub segments: Vec<Vec<f32>>,
}

/// Counts and issues of a dataset scan.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ScanReport {
    /// Image files considered.
    pub total: usize,
    /// Images kept.
    pub usable: usize,
    /// Label files found (and valid).
    pub found: usize,
    /// Images without a label file (background).
    pub missing: usize,
    /// Images with an empty label file (background).
    pub empty: usize,
    /// Images dropped (corrupt image or bad labels).
    pub corrupt: usize,
    /// Non-image files skipped.
    pub non_images: usize,
    /// Every issue, in file order.
    pub issues: Vec<Issue>,
}

/// How many example paths the summary names per kind.
const SUMMARY_EXAMPLES: usize = 3;

impl ScanReport {
    /// Number of issues of one kind.
    pub fn count(&self, kind: IssueKind) -> usize {
        self.issues.iter().filter(|i| i.kind == kind).count()
    }

    /// One-paragraph summary: counts and, per kind, the first few files with reasons.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} images: {} usable, {} with labels, {} backgrounds ({} missing, {} empty label files), {} dropped, {} non-image files skipped",
            self.total,
            self.usable,
            self.found,
            self.missing + self.empty,
            self.missing,
            self.empty,
            self.corrupt,
            self.non_images
        );
        let mut kinds: Vec<IssueKind> = Vec::new();
        for i in &self.issues {
            if !kinds.contains(&i.kind) {
                kinds.push(i.kind);
            }
        }
        for k in kinds {
            if matches!(k, IssueKind::MissingLabel | IssueKind::EmptyLabel) {
                continue;
            }
            let of_kind: Vec<&Issue> = self.issues.iter().filter(|i| i.kind == k).collect();
            s.push_str(&format!("\n  {} × {}:", of_kind.len(), k.describe()));
            for i in of_kind.iter().take(SUMMARY_EXAMPLES) {
                s.push_str(&format!("\n    {}: {}", i.path.display(), i.reason));
            }
            if of_kind.len() > SUMMARY_EXAMPLES {
                s.push_str(&format!(
                    "\n    … and {} more",
                    of_kind.len() - SUMMARY_EXAMPLES
                ));
            }
        }
        s
    }

    /// Whether anything worth a warning happened (backgrounds alone are not).
    pub fn has_problems(&self) -> bool {
        self.issues
            .iter()
            .any(|i| !matches!(i.kind, IssueKind::MissingLabel | IssueKind::EmptyLabel))
    }
}

impl fmt::Display for ScanReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.summary())
    }
}

/// Outcome of verifying one image/label pair.
#[derive(Clone, Debug)]
pub struct Verified {
    /// The record if the image is usable.
    pub record: Option<ImageRecord>,
    /// Issues found (possibly several, e.g. a truncated JPEG with duplicate rows).
    pub issues: Vec<Issue>,
    /// A label file was found and valid.
    pub found: bool,
}

/// Smallest accepted image side, as upstream.
const MIN_SIDE: usize = 10;

/// Verifies one image and its label file as upstream `verify_image_label`.
pub fn verify_image_label(image: &Path, labels: &Path, nc: Option<usize>) -> Verified {
    let mut issues = Vec::new();
    let issue = |kind, reason: String| Issue {
        kind,
        path: image.to_path_buf(),
        reason,
    };
    let dropped = |issues: Vec<Issue>| Verified {
        record: None,
        issues,
        found: false,
    };
    let (im, notes) = match load_rgb_checked(image) {
        Ok(x) => x,
        Err(e) => {
            let reason = match e {
                DataError::Image { detail, .. } => detail,
                other => other.to_string(),
            };
            let reason = reason.trim().to_string();
            return dropped(vec![issue(IssueKind::CorruptImage, reason)]);
        }
    };
    if im.width < MIN_SIDE || im.height < MIN_SIDE {
        return dropped(vec![issue(
            IssueKind::CorruptImage,
            format!(
                "image size {}x{} is below {MIN_SIDE} pixels",
                im.width, im.height
            ),
        )]);
    }
    if notes.jpeg_truncated {
        issues.push(issue(
            IssueKind::TruncatedJpeg,
            "JPEG has no end-of-image marker; decoded what is there".into(),
        ));
    }
    let mut found = false;
    let (labels_out, segments) = match std::fs::read_to_string(labels) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            issues.push(issue(
                IssueKind::MissingLabel,
                format!("no {}", labels.display()),
            ));
            (Vec::new(), Vec::new())
        }
        Err(e) => {
            issues.push(issue(
                IssueKind::NotANumber,
                format!("{}: unreadable label file: {e}", labels.display()),
            ));
            return dropped(issues);
        }
        Ok(text) => match parse_labels(&text, nc) {
            Err(p) => {
                issues.push(issue(
                    p.kind,
                    format!("{}:{}: {}", labels.display(), p.line, p.detail),
                ));
                return dropped(issues);
            }
            Ok(p) if p.labels.is_empty() => {
                issues.push(issue(
                    IssueKind::EmptyLabel,
                    format!("{} is empty", labels.display()),
                ));
                (Vec::new(), Vec::new())
            }
            Ok(p) => {
                found = true;
                if p.duplicates > 0 {
                    issues.push(issue(
                        IssueKind::Duplicate,
                        format!("{} duplicate label rows removed", p.duplicates),
                    ));
                }
                (p.labels, p.segments)
            }
        },
    };
    Verified {
        record: Some(ImageRecord {
            path: image.to_path_buf(),
            width: im.width as u32,
            height: im.height as u32,
            labels: labels_out,
            segments,
        }),
        issues,
        found,
    }
}

/// Version of the cache file layout; bump when it changes.
pub const CACHE_VERSION: u32 = 1;

/// The label cache file: every verified record plus the scan report, keyed by a hash of the
/// image and label files' paths, sizes and modification times (and `nc`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LabelCache {
    /// Layout version ([`CACHE_VERSION`]).
    pub version: u32,
    /// [`files_hash`] of the inputs.
    pub hash: String,
    /// Usable images.
    pub records: Vec<ImageRecord>,
    /// The scan's report.
    pub report: ScanReport,
}

impl LabelCache {
    /// Loads a cache file and checks its version and hash.
    pub fn load(path: &Path, expected_hash: &str) -> Result<LabelCache> {
        let bytes = std::fs::read(path).map_err(io_err(path))?;
        let cache: LabelCache = serde_json::from_slice(&bytes).map_err(|e| DataError::Cache {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        if cache.version != CACHE_VERSION {
            return Err(DataError::Cache {
                path: path.to_path_buf(),
                detail: format!("version {} (expected {CACHE_VERSION})", cache.version),
            });
        }
        if cache.hash != expected_hash {
            return Err(DataError::Cache {
                path: path.to_path_buf(),
                detail: "stale (files changed since it was written)".into(),
            });
        }
        Ok(cache)
    }

    /// Writes the cache atomically: a temporary file, synced to disk, then renamed over
    /// `path` (a crash leaves the old cache or the new one, never half a file); on an error
    /// the temporary file is removed.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| DataError::Cache {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
        let tmp = path.with_extension("cache.tmp");
        let written = (|| {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&bytes).map_err(io_err(&tmp))?;
            f.sync_all().map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, path).map_err(io_err(path))
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }
}

/// A stable 64-bit FNV-1a hash (hex) over paths, sizes and modification times of the files, and `nc`.
pub fn files_hash(images: &[PathBuf], labels: &[PathBuf], nc: Option<usize>) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    eat(&CACHE_VERSION.to_le_bytes());
    eat(&(nc.map(|n| n as u64 + 1).unwrap_or(0)).to_le_bytes());
    for p in images.iter().chain(labels) {
        eat(p.to_string_lossy().as_bytes());
        eat(&[0]);
        if let Ok(m) = std::fs::metadata(p) {
            eat(&m.len().to_le_bytes());
            if let Ok(t) = m.modified() {
                if let Ok(d) = t.duration_since(std::time::UNIX_EPOCH) {
                    eat(&d.as_nanos().to_le_bytes());
                }
            }
        } else {
            eat(b"<absent>");
        }
    }
    format!("{h:016x}")
}

/// Where the label cache of a source set lives: `<list>.cache.json` for a `.txt` list, else the
/// first label file's folder with `.cache.json` appended (`labels/train` →
/// `labels/train.cache.json`). Upstream's pickle cache is `labels/train.cache`; a distinct name
/// lets both tools share a dataset without invalidating each other's cache.
pub fn cache_path(sources: &[PathBuf], first_label: &Path) -> PathBuf {
    if let [only] = sources {
        if only.is_file() && !crate::io::is_image_path(only) {
            return only.with_extension("cache.json");
        }
    }
    let dir = first_label.parent().unwrap_or(Path::new("."));
    let mut s = dir.as_os_str().to_owned();
    s.push(".cache.json");
    PathBuf::from(s)
}

/// The result of scanning sources: usable records (sorted by path) and the report.
#[derive(Clone, Debug)]
pub struct Scan {
    /// Usable images with their labels.
    pub records: Vec<ImageRecord>,
    /// Counts and issues.
    pub report: ScanReport,
    /// Whether the records came from the cache file.
    pub from_cache: bool,
    /// The cache file used or written (None if caching is off).
    pub cache_file: Option<PathBuf>,
}

/// Lists, verifies and (with `use_cache`) caches a dataset's images and labels. Logs the summary
/// once through `tracing::warn` when anything was wrong. Errors if no image is usable.
pub fn scan(sources: &[PathBuf], nc: Option<usize>, use_cache: bool) -> Result<Scan> {
    let listed = list_images(sources)?;
    if listed.images.is_empty() {
        return Err(DataError::NoImages {
            sources: sources.to_vec(),
            formats: crate::io::IMG_FORMATS.join(", "),
        });
    }
    let label_files: Vec<PathBuf> = listed.images.iter().map(|p| label_path(p)).collect();
    let hash = files_hash(&listed.images, &label_files, nc);
    let cache_file = use_cache.then(|| cache_path(sources, &label_files[0]));
    if let Some(cf) = &cache_file {
        if cf.exists() {
            match LabelCache::load(cf, &hash) {
                Ok(c) => {
                    let scan = Scan {
                        records: c.records,
                        report: c.report,
                        from_cache: true,
                        cache_file: cache_file.clone(),
                    };
                    return finish(scan, sources);
                }
                Err(e) => tracing::info!("rescanning labels: {e}"),
            }
        }
    }
    let verified: Vec<Verified> = listed
        .images
        .par_iter()
        .zip(label_files.par_iter())
        .map(|(im, lb)| verify_image_label(im, lb, nc))
        .collect();
    let mut report = ScanReport {
        total: listed.images.len(),
        non_images: listed.non_images.len(),
        ..Default::default()
    };
    for p in &listed.non_images {
        report.issues.push(Issue {
            kind: IssueKind::NonImage,
            path: p.clone(),
            reason: "extension is not an image format".into(),
        });
    }
    let mut records = Vec::with_capacity(verified.len());
    for v in verified {
        for i in &v.issues {
            match i.kind {
                IssueKind::MissingLabel => report.missing += 1,
                IssueKind::EmptyLabel => report.empty += 1,
                _ => {}
            }
        }
        report.found += v.found as usize;
        if v.record.is_none() {
            report.corrupt += 1;
        }
        report.issues.extend(v.issues);
        if let Some(r) = v.record {
            records.push(r);
        }
    }
    report.usable = records.len();
    if let Some(cf) = &cache_file {
        let cache = LabelCache {
            version: CACHE_VERSION,
            hash,
            records: records.clone(),
            report: report.clone(),
        };
        if let Err(e) = cache.save(cf) {
            tracing::warn!("label cache not written ({e}); the next run will rescan");
        }
    }
    finish(
        Scan {
            records,
            report,
            from_cache: false,
            cache_file,
        },
        sources,
    )
}

fn finish(scan: Scan, sources: &[PathBuf]) -> Result<Scan> {
    if scan.report.has_problems() {
        tracing::warn!("dataset scan: {}", scan.report.summary());
    } else {
        tracing::info!("dataset scan: {}", scan.report.summary());
    }
    if scan.records.is_empty() {
        return Err(DataError::NoUsableImages {
            sources: sources.to_vec(),
            summary: scan.report.summary(),
        });
    }
    Ok(scan)
}
