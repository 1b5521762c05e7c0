//! AutoAnchor as upstream `utils/autoanchor.py`: the best-possible-recall check of the current
//! anchors against the training labels, and new anchors from k-means (plain, as upstream's
//! scipy `kmeans` on whitened wh, or k-means++ seeding) refined by a genetic evolution.
//!
//! Anchors here are in pixels, `[w, h]`, level after level (`nl * na` rows); the model stores
//! them divided by the stride ([`apply_anchors`] converts). Everything is seeded.

use crate::error::{invalid, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yolo_tensor::Tensor;

/// Upstream's BPR below which `check_anchors` recomputes anchors.
pub const BPR_THRESHOLD: f64 = 0.98;

/// How k-means picks its initial centroids.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KmeansInit {
    /// Upstream (scipy `kmeans`): `n` distinct random labels, best of 30 restarts.
    #[default]
    Plain,
    /// k-means++ seeding (D² sampling), best of 30 restarts.
    PlusPlus,
}

/// Fit of a set of anchors to label sizes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnchorMetric {
    /// Best possible recall: fraction of labels whose best anchor ratio beats `1 / anchor_t`.
    pub bpr: f64,
    /// Anchors above threshold: mean number of anchors per label beating `1 / anchor_t`.
    pub aat: f64,
}

/// Ratio metric `x[label][anchor] = min over w, h of min(r, 1/r)`, `r = wh / anchor` (f32, as
/// upstream's torch code).
fn ratio(wh: [f32; 2], k: [f32; 2]) -> f32 {
    let rw = wh[0] / k[0];
    let rh = wh[1] / k[1];
    rw.min(1.0 / rw).min(rh.min(1.0 / rh))
}

/// Upstream `metric(k)` of `check_anchors`: BPR and anchors-above-threshold of `anchors` for
/// label sizes `wh` (pixels) at `anchor_t` (`hyp['anchor_t']`, threshold `1 / anchor_t`).
/// Empty `wh` gives zeros.
pub fn anchor_metric(wh: &[[f32; 2]], anchors: &[[f32; 2]], anchor_t: f64) -> AnchorMetric {
    if wh.is_empty() {
        return AnchorMetric { bpr: 0.0, aat: 0.0 };
    }
    let thr = (1.0 / anchor_t) as f32;
    let (mut recalled, mut above) = (0usize, 0usize);
    for &w in wh {
        let mut best = f32::NEG_INFINITY;
        for &k in anchors {
            let x = ratio(w, k);
            if x > thr {
                above += 1;
            }
            best = best.max(x);
        }
        if best > thr {
            recalled += 1;
        }
    }
    AnchorMetric {
        bpr: recalled as f64 / wh.len() as f64,
        aat: above as f64 / wh.len() as f64,
    }
}

/// Upstream `anchor_fitness`: mean over labels of the best ratio, counting only those above
/// `1 / anchor_t`.
pub fn anchor_fitness(wh: &[[f32; 2]], anchors: &[[f32; 2]], anchor_t: f64) -> f64 {
    if wh.is_empty() {
        return 0.0;
    }
    let thr = (1.0 / anchor_t) as f32;
    let sum: f64 = wh
        .iter()
        .map(|&w| {
            let best = anchors
                .iter()
                .map(|&k| ratio(w, k))
                .fold(f32::NEG_INFINITY, f32::max);
            if best > thr {
                best as f64
            } else {
                0.0
            }
        })
        .sum();
    sum / wh.len() as f64
}

/// Label sizes in pixels: each image's longer side scaled to `img_size` (`shapes` are image
/// `[w, h]`, `labels` normalised `[w, h]` per image). With `scale_seed`, each image is further
/// scaled by one uniform factor in [0.9, 1.1] as upstream `check_anchors` augments.
pub fn label_wh(
    shapes: &[[f32; 2]],
    labels: &[Vec<[f32; 2]>],
    img_size: usize,
    scale_seed: Option<u64>,
) -> Result<Vec<[f32; 2]>> {
    if shapes.len() != labels.len() {
        return invalid(
            "autoanchor",
            format!(
                "{} image shapes for {} label sets",
                shapes.len(),
                labels.len()
            ),
        );
    }
    let mut rng = scale_seed.map(StdRng::seed_from_u64);
    let mut out = Vec::with_capacity(labels.iter().map(Vec::len).sum());
    for (s, l) in shapes.iter().zip(labels) {
        let m = s[0].max(s[1]) as f64;
        if m.is_nan() || m <= 0.0 {
            return invalid("autoanchor", format!("image shape {s:?} has no size"));
        }
        let scale = rng.as_mut().map_or(1.0, |r| r.random_range(0.9..1.1));
        let sw = img_size as f64 * s[0] as f64 / m * scale;
        let sh = img_size as f64 * s[1] as f64 / m * scale;
        out.extend(
            l.iter()
                .map(|w| [(w[0] as f64 * sw) as f32, (w[1] as f64 * sh) as f32]),
        );
    }
    Ok(out)
}

/// Upstream `check_anchor_order`: mean anchor area per level must change with stride in the
/// same direction; if not, the levels are reversed. Returns whether they were.
pub fn check_anchor_order(anchors: &mut [[f32; 2]], strides: &[f32]) -> bool {
    let nl = strides.len();
    if nl < 2 || anchors.is_empty() || !anchors.len().is_multiple_of(nl) {
        return false;
    }
    let na = anchors.len() / nl;
    let area = |l: usize| {
        anchors[l * na..(l + 1) * na]
            .iter()
            .map(|a| a[0] * a[1])
            .sum::<f32>()
            / na as f32
    };
    let da = area(nl - 1) - area(0);
    let ds = strides[nl - 1] - strides[0];
    let sign = |x: f32| (x > 0.0) as i8 - (x < 0.0) as i8;
    if da != 0.0 && sign(da) != sign(ds) {
        let levels: Vec<Vec<[f32; 2]>> = anchors.chunks(na).rev().map(<[_]>::to_vec).collect();
        for (dst, src) in anchors.chunks_mut(na).zip(levels) {
            dst.copy_from_slice(&src);
        }
        return true;
    }
    false
}

/// Writes pixel anchors (`nl * na` rows) into a Detect `anchors` buffer (`nl × na × 2`, grid
/// units) by dividing each level by its stride.
pub fn apply_anchors(buffer: &Tensor, anchors: &[[f32; 2]], strides: &[f32]) -> Result<()> {
    let nl = strides.len();
    if nl == 0 || buffer.numel() != anchors.len() * 2 || !anchors.len().is_multiple_of(nl) {
        return invalid(
            "autoanchor",
            format!(
                "{} anchors for {} levels into a buffer of shape {:?}",
                anchors.len(),
                nl,
                buffer.shape()
            ),
        );
    }
    let na = anchors.len() / nl;
    let v: Vec<f32> = anchors
        .iter()
        .enumerate()
        .flat_map(|(i, a)| [a[0] / strides[i / na], a[1] / strides[i / na]])
        .collect();
    let t = Tensor::from_vec(v, buffer.shape(), yolo_tensor::Device::Cpu)?;
    buffer.assign(&t.to_device(buffer.device())?)?;
    Ok(())
}

/// A standard normal draw (Box–Muller).
fn randn(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn dist2(a: [f64; 2], b: [f64; 2]) -> f64 {
    (a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)
}

/// Nearest centroid and its squared distance.
fn nearest(p: [f64; 2], book: &[[f64; 2]]) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (i, &c) in book.iter().enumerate() {
        let d = dist2(p, c);
        if d < best.1 {
            best = (i, d);
        }
    }
    best
}

/// k-means++ seeding: the first centroid uniformly, then each with probability ∝ D².
fn plus_plus_init(obs: &[[f64; 2]], k: usize, rng: &mut StdRng) -> Vec<[f64; 2]> {
    let mut book = vec![obs[rng.random_range(0..obs.len())]];
    let mut d2: Vec<f64> = obs.iter().map(|&p| dist2(p, book[0])).collect();
    while book.len() < k {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let mut u = rng.random::<f64>() * total;
            let mut pick = obs.len() - 1;
            for (i, &d) in d2.iter().enumerate() {
                if u < d {
                    pick = i;
                    break;
                }
                u -= d;
            }
            pick
        } else {
            rng.random_range(0..obs.len())
        };
        let c = obs[pick];
        book.push(c);
        for (d, &p) in d2.iter_mut().zip(obs) {
            *d = d.min(dist2(p, c));
        }
    }
    book
}

/// scipy's `_kmeans`: Lloyd iterations until the mean (Euclidean) distortion changes by at
/// most `thresh`; empty clusters are dropped. Returns the codebook and its distortion.
fn lloyd(obs: &[[f64; 2]], mut book: Vec<[f64; 2]>, thresh: f64) -> (Vec<[f64; 2]>, f64) {
    let mut prev = f64::INFINITY;
    let mut avg = f64::INFINITY;
    for _ in 0..1000 {
        let mut sums = vec![[0.0f64; 2]; book.len()];
        let mut counts = vec![0usize; book.len()];
        let mut total = 0.0;
        for &p in obs {
            let (i, d) = nearest(p, &book);
            total += d.sqrt();
            sums[i][0] += p[0];
            sums[i][1] += p[1];
            counts[i] += 1;
        }
        avg = total / obs.len() as f64;
        book = sums
            .iter()
            .zip(&counts)
            .filter(|(_, &c)| c > 0)
            .map(|(s, &c)| [s[0] / c as f64, s[1] / c as f64])
            .collect();
        if (prev - avg).abs() <= thresh {
            break;
        }
        prev = avg;
    }
    (book, avg)
}

/// Best-of-`restarts` k-means on whitened observations; `None` if no run kept `k` centroids.
fn kmeans(
    obs: &[[f64; 2]],
    k: usize,
    restarts: usize,
    init: KmeansInit,
    rng: &mut StdRng,
) -> Option<Vec<[f64; 2]>> {
    let mut best: Option<(Vec<[f64; 2]>, f64)> = None;
    for _ in 0..restarts {
        let guess = match init {
            KmeansInit::Plain => rand::seq::index::sample(rng, obs.len(), k)
                .into_iter()
                .map(|i| obs[i])
                .collect(),
            KmeansInit::PlusPlus => plus_plus_init(obs, k, rng),
        };
        let (book, dist) = lloyd(obs, guess, 1e-5);
        if book.len() == k && best.as_ref().is_none_or(|b| dist < b.1) {
            best = Some((book, dist));
        }
    }
    best.map(|b| b.0)
}

fn sort_by_area(k: &mut [[f64; 2]]) {
    k.sort_by(|a, b| (a[0] * a[1]).total_cmp(&(b[0] * b[1])));
}

fn to_f32(k: &[[f64; 2]]) -> Vec<[f32; 2]> {
    k.iter().map(|a| [a[0] as f32, a[1] as f32]).collect()
}

/// Result of a genetic evolution of anchors.
#[derive(Clone, Debug, PartialEq)]
pub struct Evolution {
    /// Best anchors found (pixels, unsorted).
    pub anchors: Vec<[f64; 2]>,
    /// Their fitness.
    pub fitness: f64,
    /// Best fitness after each generation (non-decreasing).
    pub history: Vec<f64>,
}

/// Upstream's genetic evolution: each generation mutates every coordinate with probability 0.9
/// by a factor `1 + r * N(0, 1) * 0.1` (one `r ~ U(0, 1)` per generation) clipped to [0.3, 3],
/// floors anchors at 2 px, and keeps the mutant only if its [`anchor_fitness`] is higher.
pub fn evolve_anchors(
    anchors: &[[f64; 2]],
    wh: &[[f32; 2]],
    anchor_t: f64,
    gen: usize,
    rng: &mut StdRng,
) -> Evolution {
    let (mp, sigma) = (0.9, 0.1);
    let mut k = anchors.to_vec();
    let mut f = anchor_fitness(wh, &to_f32(&k), anchor_t);
    let mut history = Vec::with_capacity(gen);
    let mut v = vec![[1.0f64; 2]; k.len()];
    for _ in 0..gen {
        let mut tries = 0;
        loop {
            let r: f64 = rng.random();
            for c in v.iter_mut().flat_map(|x| x.iter_mut()) {
                let m = (rng.random::<f64>() < mp) as u8 as f64;
                *c = (m * r * randn(rng) * sigma + 1.0).clamp(0.3, 3.0);
            }
            tries += 1;
            if v.iter().flatten().any(|&c| c != 1.0) || tries > 1000 {
                break;
            }
        }
        let kg: Vec<[f64; 2]> = k
            .iter()
            .zip(&v)
            .map(|(a, m)| [(a[0] * m[0]).max(2.0), (a[1] * m[1]).max(2.0)])
            .collect();
        let fg = anchor_fitness(wh, &to_f32(&kg), anchor_t);
        if fg > f {
            f = fg;
            k = kg;
        }
        history.push(f);
    }
    Evolution {
        anchors: k,
        fitness: f,
        history,
    }
}

/// Output of [`kmean_anchors`].
#[derive(Clone, Debug, PartialEq)]
pub struct KmeansAnchors {
    /// The anchors (pixels), sorted by area, small to large.
    pub anchors: Vec<[f32; 2]>,
    /// Their fitness on the filtered labels.
    pub fitness: f64,
    /// Fitness of the k-means (or random) starting point.
    pub initial_fitness: f64,
    /// BPR and anchors-above-threshold on all labels (upstream's `aat` here is per label).
    pub metric: AnchorMetric,
    /// Labels under 3 px on a side (upstream warns about them).
    pub small_labels: usize,
    /// Whether k-means succeeded (else upstream's random initialisation was used).
    pub used_kmeans: bool,
    /// Best fitness after each evolution generation.
    pub history: Vec<f64>,
}

/// Upstream `kmean_anchors`: `n` anchors for label sizes `wh` (pixels at `img_size`) by k-means
/// on whitened wh of labels with a side ≥ 2 px (falling back to random anchors as upstream when
/// k-means cannot give `n` centroids), then `gen` generations of [`evolve_anchors`]; sorted by
/// area. Deterministic for a given `seed`.
pub fn kmean_anchors(
    wh: &[[f32; 2]],
    n: usize,
    img_size: usize,
    anchor_t: f64,
    gen: usize,
    seed: u64,
    init: KmeansInit,
) -> Result<KmeansAnchors> {
    if n == 0 {
        return invalid("autoanchor", "zero anchors requested");
    }
    if anchor_t.is_nan() || anchor_t <= 0.0 {
        return invalid(
            "autoanchor",
            format!("anchor_t must be > 0, got {anchor_t}"),
        );
    }
    let small_labels = wh.iter().filter(|w| w[0] < 3.0 || w[1] < 3.0).count();
    let kept: Vec<[f32; 2]> = wh
        .iter()
        .copied()
        .filter(|w| w[0] >= 2.0 || w[1] >= 2.0)
        .filter(|w| w[0].is_finite() && w[1].is_finite())
        .collect();
    if kept.is_empty() {
        return invalid("autoanchor", "no labels of 2 px or more to fit anchors to");
    }
    let mut rng = StdRng::seed_from_u64(seed);

    // Whitening as upstream: divide by the population standard deviation of each side.
    let len = kept.len() as f64;
    let mut sd = [0.0f64; 2];
    for (j, s) in sd.iter_mut().enumerate() {
        let mean = kept.iter().map(|w| w[j] as f64).sum::<f64>() / len;
        *s = (kept
            .iter()
            .map(|w| (w[j] as f64 - mean).powi(2))
            .sum::<f64>()
            / len)
            .sqrt();
    }
    let mut k = None;
    if n <= kept.len() && sd.iter().all(|&s| s > 0.0 && s.is_finite()) {
        let obs: Vec<[f64; 2]> = kept
            .iter()
            .map(|w| [w[0] as f64 / sd[0], w[1] as f64 / sd[1]])
            .collect();
        k = kmeans(&obs, n, 30, init, &mut rng)
            .map(|b| b.iter().map(|c| [c[0] * sd[0], c[1] * sd[1]]).collect());
    }
    let used_kmeans = k.is_some();
    let mut k: Vec<[f64; 2]> = k.unwrap_or_else(|| {
        let mut r: Vec<f64> = (0..n * 2).map(|_| rng.random::<f64>()).collect();
        r.sort_by(f64::total_cmp);
        r.chunks(2)
            .map(|c| [c[0] * img_size as f64, c[1] * img_size as f64])
            .collect()
    });
    sort_by_area(&mut k);
    let initial_fitness = anchor_fitness(&kept, &to_f32(&k), anchor_t);
    let evo = evolve_anchors(&k, &kept, anchor_t, gen, &mut rng);
    let mut k = evo.anchors;
    sort_by_area(&mut k);
    let anchors = to_f32(&k);
    let metric = anchor_metric(wh, &anchors, anchor_t);
    Ok(KmeansAnchors {
        anchors,
        fitness: evo.fitness,
        initial_fitness,
        metric,
        small_labels,
        used_kmeans,
        history: evo.history,
    })
}

/// Settings of [`check_anchors`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AutoAnchorConfig {
    /// `hyp['anchor_t']` (4.0).
    pub anchor_t: f64,
    /// Training image size.
    pub img_size: usize,
    /// Evolution generations (upstream: 1000).
    pub gen: usize,
    /// k-means initialisation.
    pub init: KmeansInit,
    /// Seed of the scale augmentation, k-means and evolution.
    pub seed: u64,
}

impl Default for AutoAnchorConfig {
    /// Upstream's defaults: anchor_t 4, 640 px, 1000 generations, plain k-means, seed 0.
    fn default() -> AutoAnchorConfig {
        AutoAnchorConfig {
            anchor_t: 4.0,
            img_size: 640,
            gen: 1000,
            init: KmeansInit::Plain,
            seed: 0,
        }
    }
}

/// Outcome of [`check_anchors`].
#[derive(Clone, Debug, PartialEq)]
pub struct AnchorCheck {
    /// Metric of the current anchors on the scale-augmented labels.
    pub current: AnchorMetric,
    /// BPR of the k-means anchors, when they were computed (current BPR ≤ 0.98).
    pub new_bpr: Option<f64>,
    /// Replacement anchors (pixels, level order checked against the strides) when they beat
    /// the current ones; write them with [`apply_anchors`].
    pub anchors: Option<Vec<[f32; 2]>>,
}

/// Upstream `check_anchors`: BPR of the current pixel `anchors` (`nl * na` rows, one level per
/// stride) on scale-augmented labels; below 0.98, new anchors from [`kmean_anchors`] on the
/// unaugmented labels replace them if their BPR is higher.
pub fn check_anchors(
    shapes: &[[f32; 2]],
    labels: &[Vec<[f32; 2]>],
    anchors: &[[f32; 2]],
    strides: &[f32],
    cfg: &AutoAnchorConfig,
) -> Result<AnchorCheck> {
    if strides.is_empty() || anchors.is_empty() || !anchors.len().is_multiple_of(strides.len()) {
        return invalid(
            "autoanchor",
            format!("{} anchors for {} strides", anchors.len(), strides.len()),
        );
    }
    let wh = label_wh(shapes, labels, cfg.img_size, Some(cfg.seed))?;
    if wh.is_empty() {
        return invalid("autoanchor", "the dataset has no labels");
    }
    let current = anchor_metric(&wh, anchors, cfg.anchor_t);
    if current.bpr > BPR_THRESHOLD {
        return Ok(AnchorCheck {
            current,
            new_bpr: None,
            anchors: None,
        });
    }
    let wh0 = label_wh(shapes, labels, cfg.img_size, None)?;
    let fit = kmean_anchors(
        &wh0,
        anchors.len(),
        cfg.img_size,
        cfg.anchor_t,
        cfg.gen,
        cfg.seed.wrapping_add(1),
        cfg.init,
    )?;
    let new_bpr = anchor_metric(&wh, &fit.anchors, cfg.anchor_t).bpr;
    let replaced = (new_bpr > current.bpr).then(|| {
        let mut k = fit.anchors;
        check_anchor_order(&mut k, strides);
        k
    });
    Ok(AnchorCheck {
        current,
        new_bpr: Some(new_bpr),
        anchors: replaced,
    })
}
