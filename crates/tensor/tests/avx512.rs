//! The AVX-512 microkernels against the AVX2 ones, in one process (`set_avx512`): the 1×1
//! GEMM (full and partial 48-pixel tiles, channel counts off the 8-row tile), 1×1
//! convolutions on small maps through the direct kernels (143 and 63 pixels), the direct
//! kernel at strides 1 and 2 (groups of up to 12 pixels per row, rows shorter and longer than
//! a group; one block of 16 channels, pairs of blocks, and a pair plus one), Winograd's
//! products (pairs, a pair then one, more than one chunk of input channels) and input
//! transform (whole and masked 16-tile vectors), a 5 × 5 stride-1 direct kernel, and the SiLU
//! and sigmoid kernels. Their own file: switching the kernels process-wide must not race the
//! bitwise thread-count tests.

mod common;
use common::*;
use yolo_tensor::{Conv2dParams, Tensor, UnaryOp};

/// Every case's output, with the current kernels.
fn outputs() -> Vec<(String, Vec<f32>)> {
    let _g = yolo_tensor::no_grad();
    let mut out = Vec::new();
    // (cin, cout, k, stride, pad, h, w)
    let cases = [
        (16, 32, 1, 1, 0, 13, 11),
        (40, 68, 1, 1, 0, 5, 6),
        (8, 20, 1, 1, 0, 40, 40),
        (300, 16, 1, 1, 0, 9, 7),
        (16, 32, 3, 1, 1, 21, 19),
        (24, 16, 3, 2, 1, 33, 50),
        (3, 16, 6, 2, 2, 64, 64),
        (32, 48, 3, 2, 1, 7, 5),
        (8, 64, 3, 2, 1, 30, 45),
        (3, 32, 6, 2, 2, 64, 64),
        (5, 32, 3, 1, 1, 9, 26),
        (8, 16, 3, 1, 1, 12, 70),
        (16, 32, 3, 1, 1, 6, 33),
        (16, 48, 3, 1, 1, 11, 20),
        (160, 32, 3, 1, 1, 6, 20),
        (8, 32, 5, 1, 2, 13, 30),
    ];
    for (i, &(cin, cout, k, s, p, h, w)) in cases.iter().enumerate() {
        let seed = 100 + 3 * i as u64;
        let x = t(uniform(cin * h * w, -1.0, 1.0, seed), &[1, cin, h, w]);
        let wt = t(
            uniform(cout * cin * k * k, -0.5, 0.5, seed + 1),
            &[cout, cin, k, k],
        );
        let b = t(uniform(cout, -1.0, 1.0, seed + 2), &[cout]);
        let y = x.conv2d(&wt, Some(&b), Conv2dParams::new(s, p)).unwrap();
        out.push((format!("conv {cin}->{cout} k{k} s{s} {h}x{w}"), y.to_vec()));
    }
    let x = Tensor::from_vec(
        (0..1000).map(|i| (i as f32 - 500.0) * 0.037).collect(),
        &[1000],
        yolo_tensor::Device::Cpu,
    )
    .unwrap();
    out.push(("silu".into(), x.unary(UnaryOp::Silu).to_vec()));
    out.push(("sigmoid".into(), x.unary(UnaryOp::Sigmoid).to_vec()));
    out
}

#[test]
fn avx512_kernels_match_the_avx2_ones() {
    if !yolo_tensor::cpu_has_avx512() {
        println!("skipped: this CPU has no AVX-512 (the AVX2 kernels are the only path)");
        return;
    }
    // One thread keeps every task's channel blocks whole (pairs of blocks); two split small
    // maps into channel parts.
    for threads in [1, 2] {
        yolo_tensor::set_num_threads(threads);
        yolo_tensor::set_avx512(false);
        let narrow = outputs();
        yolo_tensor::set_avx512(true);
        let wide = outputs();
        compare(&narrow, &wide);
    }
}

/// Asserts the two kernels' outputs agree (bitwise for convolutions).
fn compare(narrow: &[(String, Vec<f32>)], wide: &[(String, Vec<f32>)]) {
    for ((name, a), (_, b)) in narrow.iter().zip(wide) {
        assert_eq!(a.len(), b.len(), "{name}");
        if name.starts_with("conv") {
            // The same products summed in the same order: bitwise equal.
            assert_eq!(a, b, "{name}");
        } else {
            // The reciprocal estimates differ (rcp14 against rcp), each refined by a Newton step.
            for (x, y) in a.iter().zip(b) {
                assert!(
                    (x - y).abs() <= 5e-7 * x.abs().max(1e-30),
                    "{name}: {x} vs {y}"
                );
            }
        }
    }
}
