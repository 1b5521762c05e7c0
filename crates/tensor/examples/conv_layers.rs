//! Times every convolution shape of yolov5n at batch 8, 320 px (the training-step bench):
//! forward, input gradient and weight gradient, in ms and GFLOP/s, with the total weighted by
//! how often each shape occurs. `FLUSH=1` writes a 128 MB buffer before each timed call, so
//! the operands start out of cache as they do inside a whole network.
//!
//! Run: `YOLO_THREADS=1 cargo run --release -p yolo-tensor --example conv_layers` (`ONLY=0,4`
//! times only those rows of the table; `AB=1` times forward + backward with the 1×1
//! convolutions' own GEMM against the `gemm` crate's, alternating; `AB=direct` the same with
//! the direct convolution on and off).

use std::time::Instant;
use yolo_tensor::{Conv2dParams, Tensor};

/// Cache-line-aligned tensor buffers, as in the `yolo-forge` binary.
#[global_allocator]
static ALLOC: yolo_tensor::AlignedAlloc = yolo_tensor::AlignedAlloc;

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    yolo_testutil::t(yolo_testutil::uniform(n, -1.0, 1.0, seed), shape)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Evicts the caches (when `FLUSH` is set) by writing `buf`.
fn flush(buf: &mut [f32]) {
    if std::env::var("FLUSH").is_ok() {
        for (i, v) in buf.iter_mut().enumerate() {
            *v += i as f32;
        }
        std::hint::black_box(&buf);
    }
}

fn main() {
    let mut big = vec![0.0f32; 32 << 20];
    let n = 8;
    // (cin, cout, k, stride, in_hw, count in the model)
    let shapes: &[(usize, usize, usize, usize, usize, usize)] = &[
        (3, 16, 6, 2, 320, 1),
        (16, 32, 3, 2, 160, 1),
        (32, 16, 1, 1, 80, 2),
        (16, 16, 1, 1, 80, 1),
        (16, 16, 3, 1, 80, 1),
        (32, 32, 1, 1, 80, 1),
        (32, 64, 3, 2, 80, 1),
        (64, 32, 1, 1, 40, 2),
        (32, 32, 1, 1, 40, 2),
        (32, 32, 3, 1, 40, 2),
        (64, 64, 1, 1, 40, 1),
        (64, 128, 3, 2, 40, 1),
        (128, 64, 1, 1, 20, 2),
        (64, 64, 1, 1, 20, 3),
        (64, 64, 3, 1, 20, 3),
        (128, 128, 1, 1, 20, 1),
        (128, 256, 3, 2, 20, 1),
        (256, 128, 1, 1, 10, 4),
        (128, 128, 3, 1, 10, 1),
        (512, 256, 1, 1, 10, 1),
        (256, 256, 1, 1, 10, 1),
        // head
        (256, 64, 1, 1, 20, 2),
        (64, 64, 1, 1, 20, 1),
        (64, 64, 3, 1, 20, 1),
        (128, 64, 1, 1, 20, 1),
        (128, 32, 1, 1, 40, 2),
        (32, 32, 3, 1, 40, 1),
        (64, 64, 1, 1, 40, 1),
        (64, 64, 3, 2, 40, 1),
        (64, 255, 1, 1, 40, 1),
        (128, 128, 3, 2, 20, 1),
        (128, 255, 1, 1, 20, 1),
        (256, 255, 1, 1, 10, 1),
    ];
    let (mut tf, mut tx, mut tw) = (0.0, 0.0, 0.0);
    println!("cin cout k s hw count | fwd ms GF/s | dx ms GF/s | dw ms GF/s");
    // `ONLY=i,j,…` times only those rows of the table (0-based), e.g. to profile one shape.
    let only: Option<Vec<usize>> = std::env::var("ONLY")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect());
    for (i, &(cin, cout, k, s, hw, cnt)) in shapes.iter().enumerate() {
        if only.as_ref().is_some_and(|o| !o.contains(&i)) {
            continue;
        }
        let x = tensor(&[n, cin, hw, hw], 1).detach().with_grad();
        let w = tensor(&[cout, cin, k, k], 2)
            .mul_scalar(0.05)
            .detach()
            .with_grad();
        let p = Conv2dParams::new(s, if k == 6 { 2 } else { k / 2 });
        let y = x.conv2d(&w, None, p).unwrap();
        let oh = y.shape()[2];
        let dy = tensor(y.shape(), 3);
        let flops = 2.0 * (n * cin * cout * oh * oh * k * k) as f64;
        if std::env::var("AB").is_ok() {
            // Forward + backward with the 1×1 convolutions' own GEMM and with the `gemm`
            // crate alone, alternating in this process (the host is too noisy to compare two
            // runs).
            let direct = std::env::var("AB").is_ok_and(|v| v == "direct");
            let set = |on: bool| {
                if direct {
                    yolo_tensor::set_direct_conv(on)
                } else {
                    yolo_tensor::set_pointwise_gemm(on)
                }
            };
            let (mut own, mut other) = (vec![], vec![]);
            for i in 0..22 {
                set(i % 2 == 0);
                flush(&mut big);
                let t = Instant::now();
                let y = x.conv2d(&w, None, p).unwrap();
                y.backward_with(&dy).unwrap();
                let e = t.elapsed().as_secs_f64();
                x.zero_grad();
                w.zero_grad();
                if i % 2 == 0 {
                    own.push(e)
                } else {
                    other.push(e)
                }
            }
            set(true);
            let (a, b) = (median(own), median(other));
            tf += a * cnt as f64;
            tx += b * cnt as f64;
            println!(
                "{cin:4} {cout:4} {k} {s} {hw:4} x{cnt} | on {:7.2} ms | off {:7.2} ms | {:.2}",
                a * 1e3,
                b * 1e3,
                a / b
            );
            continue;
        }
        let (mut f, mut b) = (vec![], vec![]);
        for _ in 0..7 {
            flush(&mut big);
            let t = Instant::now();
            let y = x.conv2d(&w, None, p).unwrap();
            f.push(t.elapsed().as_secs_f64());
            flush(&mut big);
            let t = Instant::now();
            y.backward_with(&dy).unwrap();
            b.push(t.elapsed().as_secs_f64());
            x.zero_grad();
            w.zero_grad();
        }
        // The weight gradient alone: the same step with an input that needs no gradient.
        let xn = x.detach();
        let mut wonly = vec![];
        for _ in 0..7 {
            let y = xn.conv2d(&w, None, p).unwrap();
            flush(&mut big);
            let t = Instant::now();
            y.backward_with(&dy).unwrap();
            wonly.push(t.elapsed().as_secs_f64());
            w.zero_grad();
        }
        let (fm, bm, wm) = (median(f), median(b), median(wonly));
        let xm = bm - wm;
        let c = cnt as f64;
        tf += fm * c;
        tx += xm * c;
        tw += wm * c;
        println!(
            "{cin:4} {cout:4} {k} {s} {hw:4} x{cnt} | {:7.2} {:5.1} | {:7.2} {:5.1} | {:7.2} {:5.1}",
            fm * 1e3,
            flops / fm / 1e9,
            xm * 1e3,
            flops / xm / 1e9,
            wm * 1e3,
            flops / wm / 1e9
        );
    }
    if std::env::var("AB").is_ok() {
        println!(
            "total (×count): on {:.1} ms, off {:.1} ms",
            tf * 1e3,
            tx * 1e3
        );
        return;
    }
    println!(
        "total (×count): fwd {:.1} ms, dx {:.1} ms, dw {:.1} ms",
        tf * 1e3,
        tx * 1e3,
        tw * 1e3
    );
}
