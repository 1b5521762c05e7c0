//! Times batch-1 inference convolutions (no grad) of yolov5n at 320 px, or the shapes given in
//! `SHAPES` (`cin,cout,k,stride,hw[,padding];…`, padding k/2 unless given): median and minimum ms and GFLOP/s of the
//! minimum, over `RUNS` calls (default 200).
//!
//! Run: `YOLO_THREADS=1 cargo run --release -p yolo-tensor --example conv_forward`
//! (`SHAPES=16,32,3,2,160 …` for one shape; `ACT=1` adds the SiLU after each convolution,
//! `ACT=fused` the same inside it (`Tensor::conv2d_act`);
//! `PARTS=n` feeds the input as n channel parts to `Tensor::concat_conv2d` (1×1 shapes);
//! `FLUSH=1` writes a 128 MB buffer before each timed call, so the operands start out of
//! cache as they do inside a whole network).

use std::time::Instant;
use yolo_tensor::{Conv2dParams, Tensor};

/// Cache-line-aligned tensor buffers, as in the `yolo-forge` binary.
#[global_allocator]
static ALLOC: yolo_tensor::AlignedAlloc = yolo_tensor::AlignedAlloc;

fn tensor(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    yolo_testutil::t(yolo_testutil::uniform(n, -1.0, 1.0, seed), shape)
}

fn main() {
    let default = "3,16,6,2,320;16,32,3,2,160;32,64,3,2,80;64,128,3,2,40;128,256,3,2,20;\
                   16,16,3,1,80;32,32,3,1,40;64,64,3,1,20;32,16,1,1,80;64,32,1,1,40;128,64,1,1,20";
    let spec = std::env::var("SHAPES").unwrap_or_else(|_| default.to_string());
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let act = std::env::var("ACT").ok();
    // PARTS=n: the input as n channel parts through `Tensor::concat_conv2d` (1×1 only).
    let nparts: usize = std::env::var("PARTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let flush = std::env::var("FLUSH").is_ok();
    let mut big = vec![0.0f32; if flush { 32 << 20 } else { 0 }];
    let _g = yolo_tensor::no_grad();
    println!("cin cout k s hw   median ms  min ms  GFLOP/s(min)");
    for s in spec.split(';').filter(|s| !s.trim().is_empty()) {
        let v: Vec<usize> = s.split(',').map(|x| x.trim().parse().unwrap()).collect();
        let (cin, cout, k, st, hw) = (v[0], v[1], v[2], v[3], v[4]);
        let x = tensor(&[1, cin, hw, hw], 1);
        let w = tensor(&[cout, cin, k, k], 2);
        let b = tensor(&[cout], 3);
        let pad = v.get(5).copied().unwrap_or(k / 2);
        let p = Conv2dParams::new(st, pad);
        let oh = (hw + 2 * pad - k) / st + 1;
        let flops = 2.0 * (cin * cout * k * k * oh * oh) as f64;
        let parts: Vec<Tensor> = (0..nparts)
            .map(|i| tensor(&[1, cin / nparts.max(1), hw, hw], 10 + i as u64))
            .collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        let mut t = Vec::with_capacity(runs);
        for i in 0..runs + 5 {
            for (j, v) in big.iter_mut().enumerate() {
                *v += j as f32;
            }
            std::hint::black_box(&big);
            let s = Instant::now();
            let y = yolo_tensor::in_pool(|| match act.as_deref() {
                _ if nparts > 0 => {
                    let op = act.as_ref().map(|_| yolo_tensor::UnaryOp::Silu);
                    Tensor::concat_conv2d(&refs, &w, Some(&b), p, op).unwrap()
                }
                Some("fused") => x
                    .conv2d_act(&w, Some(&b), p, yolo_tensor::UnaryOp::Silu)
                    .unwrap(),
                Some(_) => x.conv2d(&w, Some(&b), p).unwrap().silu(),
                None => x.conv2d(&w, Some(&b), p).unwrap(),
            });
            let dt = s.elapsed().as_secs_f64();
            std::hint::black_box(y);
            if i >= 5 {
                t.push(dt);
            }
        }
        t.sort_by(f64::total_cmp);
        println!(
            "{cin:>3} {cout:>4} {k} {st} {hw:>3}   {:>8.3}  {:>7.3}  {:>7.1}",
            t[t.len() / 2] * 1e3,
            t[0] * 1e3,
            flops / t[0] / 1e9
        );
    }
}
