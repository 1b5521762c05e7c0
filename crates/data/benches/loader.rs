//! Loader throughput (images/s): mosaic training pipeline at 640 on 2 worker threads over 64
//! synthetic 640-px images. `cargo bench -p yolo-data --bench loader`.
//! The same measurement as a plain program (and the dataset for the upstream comparison,
//! tools/bench_upstream_loader.py): `cargo run --release -p yolo-data --example bench_loader`.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use yolo_data::{generate, AugParams, Dataset, DatasetConfig, DatasetOptions, Loader, SynthConfig};

/// Cache-line-aligned tensor buffers, as in the `yolo-forge` binary.
#[global_allocator]
static ALLOC: yolo_tensor::AlignedAlloc = yolo_tensor::AlignedAlloc;

fn bench_loader(c: &mut Criterion) {
    let out = std::env::temp_dir().join("yolo-data-bench-synth640");
    let yaml = out.join("data.yaml");
    if !yaml.exists() {
        generate(&SynthConfig {
            out: out.clone(),
            train: 64,
            val: 0,
            imgsz: 640,
            seed: 0,
            ..Default::default()
        })
        .expect("generate the bench dataset");
    }
    let dc = DatasetConfig::load(&yaml).expect("dataset yaml");
    let opts = DatasetOptions {
        imgsz: 640,
        augment: true,
        aug: AugParams::default(),
        batch_size: 16,
        nc: Some(dc.nc()),
        ..Default::default()
    };
    let ds = Arc::new(Dataset::new(&dc.train, opts).expect("dataset"));
    let mut g = c.benchmark_group("loader");
    g.sample_size(10);
    g.throughput(Throughput::Elements(ds.len() as u64));
    for workers in [1usize, 2] {
        let loader = Loader::new(ds.clone(), 16, true, 0, workers);
        let mut epoch = 0u64;
        g.bench_function(format!("mosaic640_epoch64_workers{workers}"), |b| {
            b.iter(|| {
                epoch += 1;
                let mut n = 0;
                for batch in loader.epoch(epoch) {
                    n += batch.expect("batch").len();
                }
                n
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench_loader);
criterion_main!(benches);
