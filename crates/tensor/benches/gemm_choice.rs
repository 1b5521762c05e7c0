//! Which GEMM crate the CPU backend uses: `gemm` vs `matrixmultiply` on the products that
//! im2col convolution runs (single-threaded, as each conv task calls it).
//!
//! Run: `cargo bench -p yolo-tensor --bench gemm_choice`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

fn data(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 8_388_608.0
                - 1.0
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("gemm_choice");
    g.sample_size(20);
    // (m, k, n): 3×3 conv 64→64 band of 4 rows at 160 wide; 1×1 conv 128→128 on 4096 px;
    // yolov5s-like 3×3 128→128 at 40×40 whole plane.
    for (m, k, n) in [
        (64usize, 576usize, 640usize),
        (128, 128, 4096),
        (128, 1152, 1600),
    ] {
        let a = data(m * k, 1);
        let b = data(k * n, 2);
        let mut cbuf = vec![0.0f32; m * n];
        g.throughput(Throughput::Elements(2 * (m * k * n) as u64));
        let id = format!("{m}x{k}x{n}");
        g.bench_function(BenchmarkId::new("gemm", &id), |bch| {
            bch.iter(|| unsafe {
                gemm::gemm(
                    m,
                    n,
                    k,
                    cbuf.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    k as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
                black_box(&cbuf);
            })
        });
        g.bench_function(BenchmarkId::new("matrixmultiply", &id), |bch| {
            bch.iter(|| unsafe {
                matrixmultiply::sgemm(
                    m,
                    k,
                    n,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    0.0,
                    cbuf.as_mut_ptr(),
                    n as isize,
                    1,
                );
                black_box(&cbuf);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
