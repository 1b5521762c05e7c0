//! Loader throughput in images/s with the upstream training pipeline (mosaic, random_perspective,
//! HSV, flips; hyp.scratch-low) at 640 px:
//! `cargo run --release -p yolo-data --example bench_loader -- [DIR] [WORKERS] [EPOCHS] [ram|disk]`.
//! DIR defaults to a 64-image synthetic 640-px dataset generated under the temp folder; the
//! same folder is what tools/bench_upstream_loader.py reads for the comparison.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use yolo_data::{generate, AugParams, Dataset, DatasetConfig, DatasetOptions, Loader, SynthConfig};

/// Cache-line-aligned tensor buffers, as in the `yolo-forge` binary.
#[global_allocator]
static ALLOC: yolo_tensor::AlignedAlloc = yolo_tensor::AlignedAlloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("yolo-data-bench-synth640"));
    let workers: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(2);
    let epochs: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5);
    let cache = args.get(3).cloned().unwrap_or_default();
    let (cache_ram, cache_disk) = (cache == "ram", cache == "disk");
    let yaml = out.join("data.yaml");
    if !yaml.exists() {
        let t = Instant::now();
        generate(&SynthConfig {
            out: out.clone(),
            train: 64,
            val: 0,
            imgsz: 640,
            seed: 0,
            ..Default::default()
        })?;
        eprintln!(
            "generated {} in {:.1}s",
            out.display(),
            t.elapsed().as_secs_f64()
        );
    }
    let dc = DatasetConfig::load(&yaml)?;
    let opts = DatasetOptions {
        imgsz: 640,
        augment: true,
        aug: AugParams::default(),
        batch_size: 16,
        nc: Some(dc.nc()),
        cache_ram,
        cache_disk,
        ..Default::default()
    };
    let ds = Arc::new(Dataset::new(&dc.train, opts)?);
    let loader = Loader::new(ds.clone(), 16, true, 0, workers);
    // Warm-up epoch (page cache, allocator).
    for b in loader.epoch(0) {
        b?;
    }
    let t = Instant::now();
    let mut n = 0;
    for e in 1..=epochs {
        for b in loader.epoch(e) {
            n += b?.len();
        }
    }
    let dt = t.elapsed().as_secs_f64();
    println!(
        "yolo-data loader: {n} images in {dt:.2}s = {:.1} images/s (mosaic 640, batch 16, {workers} workers, f32 NCHW batches{})",
        n as f64 / dt,
        match cache.as_str() {
            "ram" => ", cache ram",
            "disk" => ", cache disk",
            _ => "",
        }
    );
    Ok(())
}
