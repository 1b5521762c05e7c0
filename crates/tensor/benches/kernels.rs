//! Kernel throughput of the tensor core (criterion). GFLOP/s = reported elements/s ÷ 1e9,
//! with "elements" set to the FLOP count of each case (2 × multiply-accumulates for convs).
//!
//! Run: `cargo bench -p yolo-tensor --bench kernels` (set `YOLO_THREADS=1` for 1 thread).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use yolo_tensor::{Conv2dParams, Device, Tensor};

/// Cache-line-aligned tensor buffers, as in the `yolo-forge` binary.
#[global_allocator]
static ALLOC: yolo_tensor::AlignedAlloc = yolo_tensor::AlignedAlloc;

fn tensor(shape: &[usize], seed: u32) -> Tensor {
    let n: usize = shape.iter().product();
    // A cheap deterministic pattern in [-1, 1): no RNG crate needed in the bench.
    let data = (0..n)
        .map(|i| {
            ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32 / 8_388_608.0
                - 1.0
        })
        .collect();
    Tensor::from_vec(data, shape, Device::Cpu).unwrap()
}

fn conv_flops(n: usize, cin: usize, cout: usize, oh: usize, ow: usize, k: usize) -> u64 {
    2 * (n * cin * cout * oh * ow * k * k) as u64
}

fn conv(c: &mut Criterion) {
    let mut g = c.benchmark_group("conv2d");
    g.sample_size(20);
    // 3×3, 64→64, 1×64×160×160 (1.89 GFLOP).
    let x = tensor(&[1, 64, 160, 160], 1);
    let w = tensor(&[64, 64, 3, 3], 2).mul_scalar(0.05);
    let p = Conv2dParams::new(1, 1);
    let f = conv_flops(1, 64, 64, 160, 160, 3);
    g.throughput(Throughput::Elements(f));
    g.bench_function(BenchmarkId::new("3x3_64_160", "forward"), |b| {
        let _ng = yolo_tensor::no_grad();
        b.iter(|| black_box(x.conv2d(&w, None, p).unwrap()))
    });
    // forward + backward does 3× the forward FLOPs (dx and dw each cost one forward).
    g.throughput(Throughput::Elements(3 * f));
    let xg = x.clone().detach().with_grad();
    let wg = w.detach().with_grad();
    let dy = tensor(&[1, 64, 160, 160], 3);
    g.bench_function(BenchmarkId::new("3x3_64_160", "forward_backward"), |b| {
        b.iter(|| {
            let y = xg.conv2d(&wg, None, p).unwrap();
            y.backward_with(&dy).unwrap();
            xg.zero_grad();
            wg.zero_grad();
        })
    });
    // Depthwise 3×3 on 64 channels (FReLU, DWConv): a direct kernel, no GEMM.
    let wd = tensor(&[64, 1, 3, 3], 9).mul_scalar(0.3);
    g.throughput(Throughput::Elements(2 * 64 * 160 * 160 * 9));
    g.bench_function(BenchmarkId::new("dw3x3_64_160", "forward"), |b| {
        let _ng = yolo_tensor::no_grad();
        b.iter(|| {
            black_box(
                x.conv2d(&wd, None, Conv2dParams::new(1, 1).with_groups(64))
                    .unwrap(),
            )
        })
    });
    // 1×1, 128→128, 1×128×80×80.
    let x1 = tensor(&[1, 128, 80, 80], 4);
    let w1 = tensor(&[128, 128, 1, 1], 5).mul_scalar(0.05);
    g.throughput(Throughput::Elements(conv_flops(1, 128, 128, 80, 80, 1)));
    g.bench_function(BenchmarkId::new("1x1_128_80", "forward"), |b| {
        let _ng = yolo_tensor::no_grad();
        b.iter(|| black_box(x1.conv2d(&w1, None, Conv2dParams::new(1, 0)).unwrap()))
    });
    g.finish();
}

fn batch_norm(c: &mut Criterion) {
    let mut g = c.benchmark_group("batch_norm2d");
    g.sample_size(20);
    let x = tensor(&[8, 64, 80, 80], 6).detach().with_grad();
    let w = Tensor::ones(&[64], Device::Cpu).unwrap().with_grad();
    let b = Tensor::zeros(&[64], Device::Cpu).unwrap().with_grad();
    let (rm, rv) = (
        Tensor::zeros(&[64], Device::Cpu).unwrap(),
        Tensor::ones(&[64], Device::Cpu).unwrap(),
    );
    let dy = tensor(&[8, 64, 80, 80], 7);
    // Rough FLOP model: ~5 per element forward (sum, sq-dev, scale, shift) + ~8 backward.
    g.throughput(Throughput::Elements(13 * x.numel() as u64));
    g.bench_function("train_fwd_bwd_8x64x80x80", |bch| {
        bch.iter(|| {
            let y = x.batch_norm2d_train(&w, &b, &rm, &rv, 0.03, 1e-3).unwrap();
            y.backward_with(&dy).unwrap();
            x.zero_grad();
            w.zero_grad();
            b.zero_grad();
        })
    });
    g.finish();
}

fn elementwise(c: &mut Criterion) {
    let mut g = c.benchmark_group("elementwise");
    g.sample_size(20);
    let x = tensor(&[16 << 20], 8);
    // Sigmoid ≈ 4 FLOP-equivalents per element is conventional; report elements/s here.
    g.throughput(Throughput::Elements(x.numel() as u64));
    g.bench_function("sigmoid_16M", |b| {
        let _ng = yolo_tensor::no_grad();
        b.iter(|| black_box(x.sigmoid()))
    });
    g.bench_function("silu_16M", |b| {
        let _ng = yolo_tensor::no_grad();
        b.iter(|| black_box(x.silu()))
    });
    g.finish();
}

criterion_group!(benches, conv, batch_norm, elementwise);
criterion_main!(benches);
