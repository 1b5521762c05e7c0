//! `Loader`: batches of a [`Dataset`] built by worker threads ahead of the consumer, in a fixed
//! order, and collated into tensors. Every sample draws from its own generator seeded by
//! (seed, epoch, image index), so a batch's bytes do not depend on the number of workers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use yolo_tensor::{Device, Tensor};

use crate::dataset::{Dataset, Sample, ShapeInfo};
use crate::error::{DataError, Result};
use crate::imgbuf::PAD_VALUE;
use crate::rng::{epoch_rng, sample_rng};

/// A collated batch.
#[derive(Clone, Debug)]
pub struct Batch {
    /// `[B, 3, H, W]` RGB in 0..1.
    pub images: Tensor,
    /// `[N, 6]` rows `(image index in batch, class, cx, cy, w, h)`, normalised to H and W.
    pub targets: Tensor,
    /// Image files, one per batch image.
    pub paths: Vec<PathBuf>,
    /// Original shapes and input mappings, one per batch image.
    pub shapes: Vec<ShapeInfo>,
}

impl Batch {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the batch has no image.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// Stacks samples into a [`Batch`]. Samples of different sizes are padded (bottom/right, grey
/// 114) to the largest height and width, with their labels renormalised.
pub fn collate(samples: Vec<Sample>) -> Result<Batch> {
    if samples.is_empty() {
        return Err(DataError::InvalidArgument {
            what: "collate",
            detail: "no samples".into(),
        });
    }
    let hmax = samples.iter().map(|s| s.image.height).max().unwrap_or(0);
    let wmax = samples.iter().map(|s| s.image.width).max().unwrap_or(0);
    let plane = hmax * wmax;
    let b = samples.len();
    // Every element is written below (pixels or padding): a recycled batch buffer is fine.
    let mut images = yolo_tensor::pooled_buffer(b * 3 * plane);
    let mut targets = Vec::new();
    let mut paths = Vec::with_capacity(b);
    let mut shapes = Vec::with_capacity(b);
    let lut: [f32; 256] = std::array::from_fn(|v| v as f32 / 255.0);
    for (i, s) in samples.into_iter().enumerate() {
        let (w, h) = (s.image.width, s.image.height);
        let base = i * 3 * plane;
        let (r_plane, rest) = images[base..base + 3 * plane].split_at_mut(plane);
        let (g_plane, b_plane) = rest.split_at_mut(plane);
        if w < wmax || h < hmax {
            let pad = PAD_VALUE as f32 / 255.0;
            for p in [&mut *r_plane, &mut *g_plane, &mut *b_plane] {
                p.fill(pad);
            }
        }
        for y in 0..h {
            let row = s.image.row(y);
            let o = y * wmax;
            let (rr, gr, br) = (
                &mut r_plane[o..o + w],
                &mut g_plane[o..o + w],
                &mut b_plane[o..o + w],
            );
            let done = planes_simd::split(row, rr, gr, br);
            for (((px, r), g), b) in row.chunks_exact(3).zip(rr).zip(gr).zip(br).skip(done) {
                *r = lut[px[0] as usize];
                *g = lut[px[1] as usize];
                *b = lut[px[2] as usize];
            }
        }
        let (sx, sy) = (w as f32 / wmax as f32, h as f32 / hmax as f32);
        for l in &s.labels {
            targets.extend_from_slice(&[
                i as f32,
                l[0],
                l[1] * sx,
                l[2] * sy,
                l[3] * sx,
                l[4] * sy,
            ]);
        }
        paths.push(s.path);
        shapes.push(s.shape);
    }
    let n = targets.len() / 6;
    Ok(Batch {
        images: Tensor::from_vec(images, &[b, 3, hmax, wmax], Device::Cpu)?,
        targets: Tensor::from_vec(targets, &[n, 6], Device::Cpu)?,
        paths,
        shapes,
    })
}

/// An RGB row into three f32 planes of `value / 255` (exactly the scalar division), 8 pixels
/// at a time.
mod planes_simd {
    /// Converts the longest prefix of whole groups of 8 pixels; returns how many pixels (0
    /// without AVX2).
    pub(super) fn split(row: &[u8], r: &mut [f32], g: &mut [f32], b: &mut [f32]) -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                let n = (row.len() / 3).min(r.len()).min(g.len()).min(b.len()) / 8 * 8;
                // SAFETY: AVX2 is present; `run` reads row[..3n] and writes the first n of
                // each plane.
                unsafe { run(&row[..3 * n], &mut r[..n], &mut g[..n], &mut b[..n]) };
                return n;
            }
        }
        let _ = (row, r, g, b);
        0
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run(row: &[u8], r: &mut [f32], g: &mut [f32], b: &mut [f32]) {
        use std::arch::x86_64::*;
        let masks = crate::imgbuf::rgb8::masks();
        let d = _mm256_set1_ps(255.0);
        for (i, px) in row.chunks_exact(24).enumerate() {
            let rgb = crate::imgbuf::rgb8::load(px, &masks);
            let o = 8 * i;
            for (v, plane) in rgb.into_iter().zip([&mut *r, &mut *g, &mut *b]) {
                let v = _mm256_cvtepi32_ps(v);
                _mm256_storeu_ps(plane.as_mut_ptr().add(o), _mm256_div_ps(v, d));
            }
        }
    }
}

/// The image order of every epoch, chosen by the caller instead of the loader's own shuffle:
/// e.g. one rank's shard of a distributed sampler.
#[derive(Clone)]
pub struct Sampler {
    len: usize,
    order: Arc<dyn Fn(u64) -> Vec<usize> + Send + Sync>,
}

impl Sampler {
    /// A sampler that gives `len` image indices per epoch, `order(epoch)`. Indices out of the
    /// dataset's range make that batch an error; a different length changes the batch count.
    pub fn new(len: usize, order: impl Fn(u64) -> Vec<usize> + Send + Sync + 'static) -> Sampler {
        Sampler {
            len,
            order: Arc::new(order),
        }
    }

    /// Indices per epoch.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether an epoch has no index.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The indices of `epoch`, in order.
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        (self.order)(epoch)
    }
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sampler {{ len: {} }}", self.len)
    }
}

/// Iterates a dataset in batches, prefetched by worker threads.
#[derive(Clone, Debug)]
pub struct Loader {
    dataset: Arc<Dataset>,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    workers: usize,
    prefetch: usize,
    sampler: Option<Sampler>,
}

impl Loader {
    /// A loader over `dataset`. `workers = 0` builds batches on the consuming thread. In rect
    /// mode batches must follow the dataset's order and batch size, so `shuffle` is turned off
    /// and the dataset's batch size used (with a warning), as upstream.
    pub fn new(
        dataset: Arc<Dataset>,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        workers: usize,
    ) -> Loader {
        let mut batch_size = batch_size.max(1);
        let mut shuffle = shuffle;
        if dataset.options().rect {
            if shuffle {
                tracing::warn!("rect batches are incompatible with shuffle; shuffle turned off");
                shuffle = false;
            }
            let bs = dataset.options().batch_size;
            if bs != batch_size {
                tracing::warn!(
                    "rect dataset was built for batch size {bs}; using it instead of {batch_size}"
                );
                batch_size = bs;
            }
        }
        Loader {
            dataset,
            batch_size,
            shuffle,
            seed,
            workers,
            prefetch: 2 * workers.max(1),
            sampler: None,
        }
    }

    /// Takes each epoch's image order from `sampler` instead of the loader's own (shuffled or
    /// not) order. Augmentation randomness still comes from (seed, epoch, image index).
    pub fn with_sampler(mut self, sampler: Sampler) -> Loader {
        self.sampler = Some(sampler);
        self
    }

    /// How many batches each worker may build ahead of the consumer in total (default 2 × workers).
    pub fn with_prefetch(mut self, batches: usize) -> Loader {
        self.prefetch = batches.max(1);
        self
    }

    /// Batches per epoch (the last may be smaller).
    pub fn len(&self) -> usize {
        self.images_per_epoch().div_ceil(self.batch_size)
    }

    /// Whether an epoch has no batch.
    pub fn is_empty(&self) -> bool {
        self.images_per_epoch() == 0
    }

    fn images_per_epoch(&self) -> usize {
        match &self.sampler {
            Some(s) => s.len(),
            None => self.dataset.len(),
        }
    }

    /// The batch size.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The dataset.
    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.dataset
    }

    /// The image order of an epoch (the sampler's, else a seeded permutation when shuffling).
    pub fn order(&self, epoch: u64) -> Vec<usize> {
        if let Some(s) = &self.sampler {
            return s.order(epoch);
        }
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            order.shuffle(&mut epoch_rng(self.seed, epoch));
        }
        order
    }

    /// The batches of one epoch, in order.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        let job = Arc::new(Job {
            dataset: self.dataset.clone(),
            order: self.order(epoch),
            batch_size: self.batch_size,
            seed: self.seed,
            epoch,
        });
        // batches of the order actually drawn (a sampler may not give its declared length)
        let n = job.order.len().div_ceil(self.batch_size);
        let mut it = EpochIter {
            job: job.clone(),
            n,
            next_out: 0,
            pending: BTreeMap::new(),
            rx: None,
            shared: None,
            handles: Vec::new(),
        };
        if self.workers > 0 && n > 0 {
            let shared = Arc::new(Shared {
                next: AtomicUsize::new(0),
                consumed: Mutex::new(0),
                cv: Condvar::new(),
                stop: AtomicBool::new(false),
                prefetch: self.prefetch,
            });
            let (tx, rx) = channel();
            for w in 0..self.workers.min(n) {
                let (job, shared, tx): (Arc<Job>, Arc<Shared>, Sender<_>) =
                    (job.clone(), shared.clone(), tx.clone());
                let h = std::thread::Builder::new()
                    .name(format!("yolo-data-{w}"))
                    .spawn(move || worker(job, shared, tx, n));
                match h {
                    Ok(h) => it.handles.push(h),
                    Err(e) => tracing::warn!("could not start loader worker {w}: {e}"),
                }
            }
            if !it.handles.is_empty() {
                it.rx = Some(rx);
                it.shared = Some(shared);
            }
        }
        it
    }
}

/// What every worker needs to build a batch.
#[derive(Debug)]
struct Job {
    dataset: Arc<Dataset>,
    order: Vec<usize>,
    batch_size: usize,
    seed: u64,
    epoch: u64,
}

impl Job {
    fn build(&self, b: usize) -> Result<Batch> {
        let lo = b * self.batch_size;
        let hi = ((b + 1) * self.batch_size).min(self.order.len());
        let samples = self.order[lo..hi]
            .iter()
            .map(|&i| {
                let mut rng = sample_rng(self.seed, self.epoch, i as u64);
                self.dataset.get(i, &mut rng)
            })
            .collect::<Result<Vec<_>>>()?;
        collate(samples)
    }
}

#[derive(Debug)]
struct Shared {
    next: AtomicUsize,
    consumed: Mutex<usize>,
    cv: Condvar,
    stop: AtomicBool,
    prefetch: usize,
}

fn worker(job: Arc<Job>, shared: Arc<Shared>, tx: Sender<(usize, Result<Batch>)>, n: usize) {
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let b = shared.next.fetch_add(1, Ordering::Relaxed);
        if b >= n {
            return;
        }
        {
            let mut consumed = match shared.consumed.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            while b >= *consumed + shared.prefetch && !shared.stop.load(Ordering::Relaxed) {
                consumed = match shared.cv.wait(consumed) {
                    Ok(g) => g,
                    Err(p) => p.into_inner(),
                };
            }
        }
        if shared.stop.load(Ordering::Relaxed) {
            return;
        }
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.build(b)))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into());
                Err(DataError::Worker(format!("batch {b}: {msg}")))
            });
        if tx.send((b, out)).is_err() {
            return;
        }
    }
}

/// The batches of one epoch, in order; worker threads stop when it is dropped.
pub struct EpochIter {
    job: Arc<Job>,
    n: usize,
    next_out: usize,
    pending: BTreeMap<usize, Result<Batch>>,
    rx: Option<Receiver<(usize, Result<Batch>)>>,
    shared: Option<Arc<Shared>>,
    handles: Vec<JoinHandle<()>>,
}

impl EpochIter {
    fn advance(&mut self) {
        self.next_out += 1;
        if let Some(sh) = &self.shared {
            let mut c = match sh.consumed.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            *c = self.next_out;
            sh.cv.notify_all();
        }
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        if self.next_out >= self.n {
            return None;
        }
        let Some(rx) = &self.rx else {
            let b = self.job.build(self.next_out);
            self.advance();
            return Some(b);
        };
        loop {
            if let Some(b) = self.pending.remove(&self.next_out) {
                self.advance();
                return Some(b);
            }
            match rx.recv() {
                Ok((i, b)) => {
                    self.pending.insert(i, b);
                }
                Err(_) => {
                    self.next_out = self.n;
                    return Some(Err(DataError::Worker(
                        "loader workers exited before finishing the epoch".into(),
                    )));
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.n - self.next_out;
        (left, Some(left))
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        if let Some(sh) = &self.shared {
            sh.stop.store(true, Ordering::Relaxed);
            let _g = sh.consumed.lock();
            sh.cv.notify_all();
        }
        self.rx = None;
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn planes_split_equals_the_division() {
        let row: Vec<u8> = (0..3 * 70).map(|i| (i * 97 % 256) as u8).collect();
        for n in 0..=70usize {
            let (mut r, mut g, mut b) = (vec![-1.0f32; n], vec![-1.0f32; n], vec![-1.0f32; n]);
            let done = super::planes_simd::split(&row[..3 * n], &mut r, &mut g, &mut b);
            #[cfg(target_arch = "x86_64")]
            if std::is_x86_feature_detected!("avx2") {
                assert_eq!(done, n / 8 * 8);
            }
            for i in 0..done {
                for (c, p) in [&r, &g, &b].into_iter().enumerate() {
                    let want = row[3 * i + c] as f32 / 255.0;
                    assert_eq!(
                        p[i].to_bits(),
                        want.to_bits(),
                        "n {n} pixel {i} channel {c}"
                    );
                }
            }
            assert!(r[done..].iter().all(|&v| v == -1.0), "wrote past {done}");
        }
    }
}
