//! Forward results (and the conv backward at sizes that exercise tiling) against naive
//! reference implementations written straight from the definitions.

mod common;
use common::*;
use yolo_tensor::{Conv2dParams, Device, Error, Pool2dParams, Tensor, UnaryOp};

struct Conv {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    co: usize,
    k: (usize, usize),
    p: Conv2dParams,
    /// Forward tolerance (relative, floored at 1 as in `assert_close`).
    tol: f32,
}

impl Conv {
    fn out_hw(&self) -> (usize, usize) {
        let oh = (self.h + 2 * self.p.padding.0 - self.p.dilation.0 * (self.k.0 - 1) - 1)
            / self.p.stride.0
            + 1;
        let ow = (self.w + 2 * self.p.padding.1 - self.p.dilation.1 * (self.k.1 - 1) - 1)
            / self.p.stride.1
            + 1;
        (oh, ow)
    }

    /// Calls `f(n, o, oy, ox, c_in, ci_in_group, ky, kx, iy, ix)` for every valid tap.
    fn taps(&self, mut f: impl FnMut([usize; 10])) {
        let (oh, ow) = self.out_hw();
        let g = self.p.groups;
        let (cg, og) = (self.c / g, self.co / g);
        for n in 0..self.n {
            for o in 0..self.co {
                let grp = o / og;
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ci in 0..cg {
                            for ky in 0..self.k.0 {
                                for kx in 0..self.k.1 {
                                    let iy = (oy * self.p.stride.0 + ky * self.p.dilation.0)
                                        as isize
                                        - self.p.padding.0 as isize;
                                    let ix = (ox * self.p.stride.1 + kx * self.p.dilation.1)
                                        as isize
                                        - self.p.padding.1 as isize;
                                    if iy < 0
                                        || ix < 0
                                        || iy >= self.h as isize
                                        || ix >= self.w as isize
                                    {
                                        continue;
                                    }
                                    f([
                                        n,
                                        o,
                                        oy,
                                        ox,
                                        grp * cg + ci,
                                        ci,
                                        ky,
                                        kx,
                                        iy as usize,
                                        ix as usize,
                                    ]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    fn idx_x(&self, n: usize, c: usize, y: usize, x: usize) -> usize {
        ((n * self.c + c) * self.h + y) * self.w + x
    }
    fn idx_w(&self, o: usize, ci: usize, ky: usize, kx: usize) -> usize {
        ((o * (self.c / self.p.groups) + ci) * self.k.0 + ky) * self.k.1 + kx
    }
    fn idx_y(&self, n: usize, o: usize, y: usize, x: usize) -> usize {
        let (oh, ow) = self.out_hw();
        ((n * self.co + o) * oh + y) * ow + x
    }

    fn check(&self, name: &str) {
        let (oh, ow) = self.out_hw();
        let xs = uniform(self.n * self.c * self.h * self.w, -1.0, 1.0, 1);
        let ws = uniform(
            self.co * (self.c / self.p.groups) * self.k.0 * self.k.1,
            -0.5,
            0.5,
            2,
        );
        let bs = uniform(self.co, -0.5, 0.5, 3);
        let gy = uniform(self.n * self.co * oh * ow, -1.0, 1.0, 4);
        // Naive, f64 accumulation.
        let mut y = vec![0.0f64; gy.len()];
        let mut dx = vec![0.0f64; xs.len()];
        let mut dw = vec![0.0f64; ws.len()];
        for (i, v) in y.iter_mut().enumerate() {
            *v = bs[(i / (oh * ow)) % self.co] as f64;
        }
        self.taps(|[n, o, oy, ox, c, ci, ky, kx, iy, ix]| {
            let (xi, wi, yi) = (
                self.idx_x(n, c, iy, ix),
                self.idx_w(o, ci, ky, kx),
                self.idx_y(n, o, oy, ox),
            );
            y[yi] += xs[xi] as f64 * ws[wi] as f64;
            dx[xi] += gy[yi] as f64 * ws[wi] as f64;
            dw[wi] += gy[yi] as f64 * xs[xi] as f64;
        });
        let x = t(xs.clone(), &[self.n, self.c, self.h, self.w]).with_grad();
        let w = t(
            ws.clone(),
            &[self.co, self.c / self.p.groups, self.k.0, self.k.1],
        )
        .with_grad();
        let b = t(bs, &[self.co]);
        let out = x.conv2d(&w, Some(&b), self.p).unwrap();
        assert_eq!(
            out.shape(),
            &[self.n, self.co, oh, ow],
            "{name}: output shape"
        );
        let f = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
        assert_close(&format!("{name} forward"), &out.to_vec(), &f(&y), self.tol);
        out.backward_with(&t(gy, out.shape())).unwrap();
        assert_close(
            &format!("{name} d/dx"),
            &x.grad().unwrap().to_vec(),
            &f(&dx),
            1e-5,
        );
        assert_close(
            &format!("{name} d/dw"),
            &w.grad().unwrap().to_vec(),
            &f(&dw),
            1e-4,
        );
    }
}

#[test]
fn conv2d_matches_naive() {
    let cases = [
        (
            "3x3 64ch bands",
            Conv {
                n: 1,
                c: 64,
                h: 40,
                w: 38,
                co: 24,
                k: (3, 3),
                p: Conv2dParams::new(1, 1),
                tol: 1e-5,
            },
        ),
        (
            "3x3 s2 batch3",
            Conv {
                n: 3,
                c: 13,
                h: 17,
                w: 15,
                co: 10,
                k: (3, 3),
                p: Conv2dParams::new(2, 1),
                tol: 1e-5,
            },
        ),
        (
            "1x1 pointwise",
            Conv {
                n: 2,
                c: 33,
                h: 70,
                w: 71,
                co: 17,
                k: (1, 1),
                p: Conv2dParams::new(1, 0),
                tol: 1e-5,
            },
        ),
        (
            // Wide enough for the 1×1 convolutions' own GEMM, forward and input gradient:
            // channel counts off the 4-channel tiles, pixels off the 24-pixel strips.
            "1x1 own gemm",
            Conv {
                n: 2,
                c: 70,
                h: 7,
                w: 9,
                co: 67,
                k: (1, 1),
                p: Conv2dParams::new(1, 0),
                tol: 1e-5,
            },
        ),
        (
            // A small map (≤ 256 pixels, whole blocks of 16 output channels): the direct
            // kernels with the pixels as one row; a pair of blocks and a single one, input
            // channels past one 128-channel chunk.
            "1x1 small map direct",
            Conv {
                n: 2,
                c: 150,
                h: 9,
                w: 11,
                co: 48,
                k: (1, 1),
                p: Conv2dParams::new(1, 0),
                tol: 1e-5,
            },
        ),
        (
            // More than one 256-deep reduction block.
            "1x1 own gemm k blocks",
            Conv {
                n: 1,
                c: 300,
                h: 11,
                w: 10,
                co: 13,
                k: (1, 1),
                p: Conv2dParams::new(1, 0),
                tol: 1e-5,
            },
        ),
        (
            "1x1 own gemm groups 2",
            Conv {
                n: 2,
                c: 140,
                h: 5,
                w: 6,
                co: 134,
                k: (1, 1),
                p: Conv2dParams::new(1, 0).with_groups(2),
                tol: 1e-5,
            },
        ),
        (
            "groups 3",
            Conv {
                n: 2,
                c: 12,
                h: 11,
                w: 9,
                co: 9,
                k: (3, 3),
                p: Conv2dParams::new(1, 1).with_groups(3),
                tol: 1e-5,
            },
        ),
        (
            "depthwise 5x5",
            Conv {
                n: 1,
                c: 7,
                h: 13,
                w: 12,
                co: 7,
                k: (5, 5),
                p: Conv2dParams::new(1, 2).with_groups(7),
                tol: 1e-5,
            },
        ),
        (
            "6x6 s2 p2 stem",
            Conv {
                n: 1,
                c: 3,
                h: 32,
                w: 30,
                co: 8,
                k: (6, 6),
                p: Conv2dParams::new(2, 2),
                tol: 1e-5,
            },
        ),
        (
            "3x3 unpadded",
            Conv {
                n: 2,
                c: 5,
                h: 12,
                w: 11,
                co: 6,
                k: (3, 3),
                p: Conv2dParams::new(1, 0),
                tol: 1e-5,
            },
        ),
        (
            // Output channels in blocks of 16, stride 1: Winograd with 7 tiles per row (scalar
            // transforms), two blocks, more than one band per image, the input gradient
            // through the same path; the direct kernel's weight gradient. (The direct forward
            // kernel's 6-pixel groups and tails: the stride-2, stem and dilated cases.)
            "3x3 direct",
            Conv {
                n: 2,
                c: 64,
                h: 70,
                w: 13,
                co: 32,
                k: (3, 3),
                p: Conv2dParams::new(1, 1),
                tol: 1e-5,
            },
        ),
        (
            // Winograd F(2×2, 3×3): odd output rows and columns (a dropped last row and
            // column), 12 tiles per row (one vector of 8 and the overlapping last 8), two
            // chunks of input channels (256 + 44).
            "3x3 winograd tails",
            Conv {
                n: 2,
                c: 300,
                h: 19,
                w: 23,
                co: 16,
                k: (3, 3),
                p: Conv2dParams::new(1, 1),
                // 2700 products per output, through transforms that add 4 inputs per V and 9
                // products per output: 1.1e-5 off on outputs near 0 (1e-6 of the largest).
                tol: 3e-5,
            },
        ),
        (
            // Winograd: 35 tiles per row, several bands per image; the input gradient (16 → 64
            // channels) takes the same path.
            "3x3 winograd bands",
            Conv {
                n: 1,
                c: 64,
                h: 20,
                w: 70,
                co: 16,
                k: (3, 3),
                p: Conv2dParams::new(1, 1),
                tol: 1e-5,
            },
        ),
        (
            // Winograd, unpadded, fewer than 8 tiles per row (scalar transforms only).
            "3x3 winograd unpadded",
            Conv {
                n: 1,
                c: 16,
                h: 9,
                w: 12,
                co: 32,
                k: (3, 3),
                p: Conv2dParams::new(1, 0),
                tol: 1e-5,
            },
        ),
        (
            // Stride 2 with every tail length 1..5 over the rows of 11 and 7 pixels.
            "3x3 s2 direct",
            Conv {
                n: 3,
                c: 5,
                h: 9,
                w: 21,
                co: 16,
                k: (3, 3),
                p: Conv2dParams::new(2, 1),
                tol: 1e-5,
            },
        ),
        (
            "6x6 s2 p2 stem direct",
            Conv {
                n: 2,
                c: 3,
                h: 26,
                w: 34,
                co: 16,
                k: (6, 6),
                p: Conv2dParams::new(2, 2),
                tol: 1e-5,
            },
        ),
        (
            "dilated unpadded direct",
            Conv {
                n: 1,
                c: 4,
                h: 15,
                w: 16,
                co: 16,
                k: (3, 5),
                p: Conv2dParams::new(1, 0).with_dilation(2),
                tol: 1e-5,
            },
        ),
        (
            // The direct weight gradient of a 1×1 convolution: more than one 256-pixel group
            // and a partial one, six channels per kernel call and a tail of five.
            "1x1 direct weight gradient",
            Conv {
                n: 2,
                c: 23,
                h: 23,
                w: 25,
                co: 32,
                k: (1, 1),
                p: Conv2dParams::new(1, 0),
                tol: 1e-5,
            },
        ),
        (
            // Stride 4 over a 3×3 kernel: some input pixels get no tap (zero gradient).
            "3x3 s4",
            Conv {
                n: 2,
                c: 16,
                h: 17,
                w: 15,
                co: 5,
                k: (3, 3),
                p: Conv2dParams::new(4, 1),
                tol: 1e-5,
            },
        ),
        (
            "dilated s2",
            Conv {
                n: 1,
                c: 16,
                h: 16,
                w: 15,
                co: 3,
                k: (3, 3),
                p: Conv2dParams::new(2, 2).with_dilation(2),
                tol: 1e-5,
            },
        ),
        (
            "dilated",
            Conv {
                n: 1,
                c: 4,
                h: 15,
                w: 16,
                co: 5,
                k: (3, 3),
                p: Conv2dParams::new(1, 2).with_dilation(2),
                tol: 1e-5,
            },
        ),
    ];
    for (name, c) in cases {
        c.check(name);
    }
}

#[test]
fn conv2d_same_result_at_any_thread_count() {
    let x = t(uniform(2 * 16 * 21 * 19, -1.0, 1.0, 5), &[2, 16, 21, 19]);
    // Eight output channels (im2col + GEMM) and sixteen (Winograd, bands by thread count).
    let w8 = t(uniform(8 * 16 * 9, -1.0, 1.0, 6), &[8, 16, 3, 3]);
    let w16 = t(uniform(16 * 16 * 9, -1.0, 1.0, 7), &[16, 16, 3, 3]);
    // A small deep map: with more threads, too few row bands split the output channels into
    // parts (the 1×1 GEMM, the stride-2 direct kernel and Winograd).
    let xs = t(uniform(40 * 5 * 6, -1.0, 1.0, 8), &[1, 40, 5, 6]);
    let w1 = t(uniform(68 * 40, -1.0, 1.0, 9), &[68, 40, 1, 1]);
    let w3 = t(uniform(64 * 40 * 9, -1.0, 1.0, 10), &[64, 40, 3, 3]);
    let b = t(uniform(68, -1.0, 1.0, 11), &[68]);
    // Whole blocks of 16: the small-map 1×1 path, its blocks split between threads.
    let w1b = t(uniform(64 * 40, -1.0, 1.0, 12), &[64, 40, 1, 1]);
    let b64 = t(uniform(64, -1.0, 1.0, 13), &[64]);
    let run = || {
        let _g = yolo_tensor::no_grad();
        let mut v: Vec<Vec<f32>> = [&w8, &w16]
            .map(|w| x.conv2d(w, None, Conv2dParams::new(1, 1)).unwrap().to_vec())
            .into();
        v.push(
            xs.conv2d(&w1, Some(&b), Conv2dParams::new(1, 0))
                .unwrap()
                .to_vec(),
        );
        v.push(
            xs.conv2d(&w1b, Some(&b64), Conv2dParams::new(1, 0))
                .unwrap()
                .to_vec(),
        );
        for s in [1, 2] {
            v.push(
                xs.conv2d(&w3, None, Conv2dParams::new(s, 1))
                    .unwrap()
                    .to_vec(),
            );
        }
        v
    };
    let mut results = Vec::new();
    for n in [1, 2, 4] {
        yolo_tensor::set_num_threads(n);
        assert_eq!(yolo_tensor::num_threads(), n);
        results.push(run());
    }
    yolo_tensor::set_num_threads(2);
    assert_eq!(
        results[0], results[1],
        "tiles are independent, so results are bitwise equal"
    );
    assert_eq!(results[0], results[2], "and with channel parts too");
}

#[test]
fn batch_norm_train_matches_naive_and_updates_running_stats() {
    let (n, c, h, w) = (3, 5, 7, 6);
    let xs = uniform(n * c * h * w, -2.0, 3.0, 10);
    let ws = uniform(c, 0.5, 1.5, 11);
    let bs = uniform(c, -0.5, 0.5, 12);
    let rm0 = uniform(c, -0.1, 0.1, 13);
    let rv0 = uniform(c, 0.9, 1.1, 14);
    let (rm, rv) = (t(rm0.clone(), &[c]), t(rv0.clone(), &[c]));
    let (eps, mom) = (1e-3f32, 0.03f32);
    let y = t(xs.clone(), &[n, c, h, w])
        .batch_norm2d_train(
            &t(ws.clone(), &[c]),
            &t(bs.clone(), &[c]),
            &rm,
            &rv,
            mom,
            eps,
        )
        .unwrap();
    let m = (n * h * w) as f64;
    let mut expect = vec![0.0f32; xs.len()];
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|i| (0..h * w).map(move |p| (i, p)))
            .map(|(i, p)| xs[(i * c + ch) * h * w + p] as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / m;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m;
        for i in 0..n {
            for p in 0..h * w {
                let k = (i * c + ch) * h * w + p;
                expect[k] = (((xs[k] as f64 - mean) / (var + eps as f64).sqrt()) * ws[ch] as f64
                    + bs[ch] as f64) as f32;
            }
        }
        let rm_e = (1.0 - mom as f64) * rm0[ch] as f64 + mom as f64 * mean;
        let rv_e = (1.0 - mom as f64) * rv0[ch] as f64 + mom as f64 * var * m / (m - 1.0);
        assert!(
            (rm.to_vec()[ch] as f64 - rm_e).abs() < 1e-6,
            "running mean of channel {ch}"
        );
        assert!(
            (rv.to_vec()[ch] as f64 - rv_e).abs() < 1e-6,
            "running var (unbiased) of channel {ch}"
        );
    }
    assert_close("batch_norm2d_train", &y.to_vec(), &expect, 1e-5);
}

#[test]
fn batch_norm_eval_matches_naive() {
    let (c, hw) = (3, 4);
    let xs = uniform(2 * c * hw, -2.0, 2.0, 20);
    let (ws, bs, rm, rv) = (
        uniform(c, 0.5, 1.5, 21),
        uniform(c, -1.0, 1.0, 22),
        uniform(c, -1.0, 1.0, 23),
        uniform(c, 0.2, 2.0, 24),
    );
    let y = t(xs.clone(), &[2, c, 2, 2])
        .batch_norm2d_eval(
            &t(ws.clone(), &[c]),
            &t(bs.clone(), &[c]),
            &t(rm.clone(), &[c]),
            &t(rv.clone(), &[c]),
            1e-3,
        )
        .unwrap();
    let expect: Vec<f32> = xs
        .iter()
        .enumerate()
        .map(|(i, &x)| {
            let ch = (i / hw) % c;
            (x - rm[ch]) / (rv[ch] + 1e-3).sqrt() * ws[ch] + bs[ch]
        })
        .collect();
    assert_close("batch_norm2d_eval", &y.to_vec(), &expect, 1e-5);
}

/// Every output's window of in-image values (k × k, stride s, padding p), in output order.
fn pool_windows(
    x: &[f32],
    planes: usize,
    (h, w): (usize, usize),
    k: usize,
    s: usize,
    p: usize,
) -> Vec<Vec<f32>> {
    let (oh, ow) = ((h + 2 * p - k) / s + 1, (w + 2 * p - k) / s + 1);
    let mut out = Vec::new();
    for pl in 0..planes {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut window = Vec::new();
                for ky in 0..k {
                    for kx in 0..k {
                        let (iy, ix) = (
                            (oy * s + ky) as isize - p as isize,
                            (ox * s + kx) as isize - p as isize,
                        );
                        if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                            window.push(x[pl * h * w + iy as usize * w + ix as usize]);
                        }
                    }
                }
                out.push(window);
            }
        }
    }
    out
}

fn naive_max_pool(
    x: &[f32],
    planes: usize,
    h: usize,
    w: usize,
    k: usize,
    s: usize,
    p: usize,
) -> Vec<f32> {
    pool_windows(x, planes, (h, w), k, s, p)
        .iter()
        .map(|win| win.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)))
        .collect()
}

#[test]
fn max_pool_matches_naive() {
    for (k, s, p, h, w) in [
        (5, 1, 2, 13, 11),
        (3, 2, 1, 9, 10),
        (2, 2, 0, 8, 7),
        (9, 1, 4, 20, 20),
        (13, 1, 6, 15, 14),
    ] {
        let xs = uniform(2 * 3 * h * w, -1.0, 1.0, 30 + k as u64);
        let y = t(xs.clone(), &[2, 3, h, w])
            .max_pool2d(Pool2dParams::new(k, s, p))
            .unwrap();
        assert_close(
            &format!("max_pool k{k} s{s} p{p}"),
            &y.to_vec(),
            &naive_max_pool(&xs, 6, h, w, k, s, p),
            0.0,
        );
    }
}

#[test]
fn max_pool_propagates_nan_over_many_planes() {
    // Enough planes for several per task; NaN anywhere in a window makes that output NaN
    // (PyTorch's rule), −inf inputs stay −inf, padding never wins.
    let (planes, h, w) = (70, 9, 12);
    let mut xs = uniform(planes * h * w, -1.0, 1.0, 77);
    for i in (0..xs.len()).step_by(97) {
        xs[i] = f32::NAN;
    }
    for i in (5..xs.len()).step_by(89) {
        xs[i] = f32::NEG_INFINITY;
    }
    for (k, s, p) in [(5, 1, 2), (3, 1, 0), (3, 2, 1)] {
        let y = t(xs.clone(), &[1, planes, h, w])
            .max_pool2d(Pool2dParams::new(k, s, p))
            .unwrap()
            .to_vec();
        let windows = pool_windows(&xs, planes, (h, w), k, s, p);
        assert_eq!(y.len(), windows.len());
        for (i, (&v, window)) in y.iter().zip(&windows).enumerate() {
            if window.iter().any(|x| x.is_nan()) {
                assert!(
                    v.is_nan(),
                    "k{k} s{s} p{p} [{i}]: {v} for a window with NaN"
                );
            } else {
                let m = window.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
                assert_eq!(v, m, "k{k} s{s} p{p} [{i}]");
            }
        }
    }
}

#[test]
fn max_pool_of_an_empty_plane_is_padding() {
    // k = 2p: a 0-row input still has one output row, every window all padding (−inf).
    let x = t(Vec::new(), &[1, 1, 0, 5]);
    let y = x.max_pool2d(Pool2dParams::new(2, 1, 1)).unwrap();
    assert_eq!(y.shape(), &[1, 1, 1, 6]);
    assert!(y.to_vec().iter().all(|&v| v == f32::NEG_INFINITY));
}

#[test]
fn sppf_chain_equals_spp() {
    // SPPF's three chained 5×5 pools equal SPP's 5, 9 and 13 pools (stride 1): the identity
    // upstream relies on when it swapped SPP for SPPF.
    let x = t(uniform(2 * 4 * 12 * 11, -1.0, 1.0, 40), &[2, 4, 12, 11]);
    let p5 = |t: &Tensor| t.max_pool2d(Pool2dParams::new(5, 1, 2)).unwrap();
    let y1 = p5(&x);
    let y2 = p5(&y1);
    let y3 = p5(&y2);
    assert_eq!(
        y2.to_vec(),
        x.max_pool2d(Pool2dParams::new(9, 1, 4)).unwrap().to_vec()
    );
    assert_eq!(
        y3.to_vec(),
        x.max_pool2d(Pool2dParams::new(13, 1, 6)).unwrap().to_vec()
    );
}

#[test]
fn upsample_matches_naive() {
    let (h, w) = (3, 5);
    let xs = uniform(2 * 3 * h * w, -1.0, 1.0, 50);
    let y = t(xs.clone(), &[2, 3, h, w])
        .upsample_nearest2d(2, 3)
        .unwrap();
    assert_eq!(y.shape(), &[2, 3, 6, 15]);
    let mut expect = Vec::new();
    for pl in 0..6 {
        for oy in 0..6 {
            for ox in 0..15 {
                expect.push(xs[pl * h * w + (oy / 2) * w + ox / 3]);
            }
        }
    }
    assert_eq!(y.to_vec(), expect);
}

#[test]
fn closed_form_values() {
    let x = t(vec![1.0, -2.0, 0.0], &[3]);
    let s = x.softmax(0).unwrap().to_vec();
    let z = 1f32.exp() + (-2f32).exp() + 1.0;
    assert_close(
        "softmax",
        &s,
        &[1f32.exp() / z, (-2f32).exp() / z, 1.0 / z],
        1e-6,
    );
    // BCE(x=0, t=1) = ln 2; with pos_weight 3 it is 3·ln 2. Large logits stay finite.
    let l = t(vec![0.0, 0.0, 100.0, -100.0], &[4]);
    let tg = t(vec![1.0, 1.0, 0.0, 1.0], &[4]);
    let pw = t(vec![1.0, 3.0, 1.0, 1.0], &[4]);
    let b = l.bce_with_logits(&tg, Some(&pw)).unwrap().to_vec();
    assert_close(
        "bce",
        &b,
        &[
            std::f32::consts::LN_2,
            3.0 * std::f32::consts::LN_2,
            100.0,
            100.0,
        ],
        1e-6,
    );
    let m = t(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])
        .matmul(&t(vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2]))
        .unwrap();
    assert_eq!(m.to_vec(), vec![4.0, 5.0, 10.0, 11.0]);
}

/// `concat_unary` is `unary(concat)` element for element on every axis (large parts take the
/// parallel copy), and with a part that needs a gradient it records both ops.
#[test]
fn concat_unary_equals_concat_then_unary() {
    for dims in [[2usize, 24, 40, 50], [2, 3, 4, 5]] {
        let n: usize = dims.iter().product();
        let ta = t(uniform(n, -6.0, 6.0, 41), &dims);
        let tb = t(uniform(n, -6.0, 6.0, 42), &dims);
        for axis in 0..4 {
            for op in [UnaryOp::Sigmoid, UnaryOp::Silu, UnaryOp::Affine(2.0, -1.0)] {
                let fused = Tensor::concat_unary(&[&ta, &tb], axis, op).unwrap();
                let plain = Tensor::concat(&[&ta, &tb], axis).unwrap().unary(op);
                assert_eq!(fused.shape(), plain.shape());
                assert_eq!(fused.to_vec(), plain.to_vec(), "axis {axis}, {op:?}");
            }
        }
    }
    let x = t(uniform(6, -1.0, 1.0, 43), &[2, 3]).with_grad();
    let y = t(uniform(6, -1.0, 1.0, 44), &[2, 3]);
    let z = Tensor::concat_unary(&[&x, &y], 0, UnaryOp::Sigmoid).unwrap();
    assert!(
        z.requires_grad(),
        "a part needing a gradient records the ops"
    );
    z.sum_all().unwrap().backward().unwrap();
    assert_eq!(x.grad().unwrap().shape(), &[2, 3]);
}

/// `conv2d_act` is `conv2d` then the op, element for element, on every forward path: Winograd
/// (3×3 stride 1), the direct kernels (stride 2, 6×6), the 1×1 GEMM, im2col + GEMM (channels
/// not in blocks of 16), depthwise; `conv2d_act_add` adds a residual the same way; with a
/// weight needing a gradient it records the ops.
#[test]
fn conv2d_act_equals_conv_then_act() {
    // (c_in, c_out, k, stride, groups, hw)
    let shapes = [
        (16, 32, 3, 1, 1, 20),
        (8, 16, 3, 2, 1, 23),
        (3, 16, 6, 2, 1, 40),
        (24, 40, 1, 1, 1, 19),
        (6, 10, 3, 2, 1, 17),
        (16, 16, 3, 1, 16, 21),
    ];
    for (ci, co, k, st, g, hw) in shapes {
        let x = t(uniform(2 * ci * hw * hw, -3.0, 3.0, 51), &[2, ci, hw, hw]);
        let w = t(
            uniform(co * ci / g * k * k, -0.5, 0.5, 52),
            &[co, ci / g, k, k],
        );
        let b = t(uniform(co, -0.5, 0.5, 53), &[co]);
        let p = Conv2dParams::new(st, k / 2).with_groups(g);
        for op in [UnaryOp::Silu, UnaryOp::Sigmoid, UnaryOp::Affine(0.5, 1.0)] {
            let fused = x.conv2d_act(&w, Some(&b), p, op).unwrap();
            let plain = x.conv2d(&w, Some(&b), p).unwrap().unary(op);
            assert_eq!(fused.shape(), plain.shape());
            assert_eq!(
                fused.to_vec(),
                plain.to_vec(),
                "{ci}->{co} k{k} s{st} g{g}, {op:?}"
            );
        }
    }
    // With a residual of the output's shape: `conv2d_act_add` is `conv2d_act` then add.
    for (ci, co, k, st, g, hw) in shapes {
        let x = t(uniform(2 * ci * hw * hw, -3.0, 3.0, 56), &[2, ci, hw, hw]);
        let w = t(
            uniform(co * ci / g * k * k, -0.5, 0.5, 57),
            &[co, ci / g, k, k],
        );
        let b = t(uniform(co, -0.5, 0.5, 58), &[co]);
        let p = Conv2dParams::new(st, k / 2).with_groups(g);
        let y = x.conv2d_act(&w, Some(&b), p, UnaryOp::Silu).unwrap();
        let r = t(uniform(y.numel(), -2.0, 2.0, 59), y.shape());
        let fused = x
            .conv2d_act_add(&w, Some(&b), p, UnaryOp::Silu, &r)
            .unwrap();
        let plain = y.add(&r).unwrap();
        assert_eq!(fused.shape(), plain.shape());
        assert_eq!(
            fused.to_vec(),
            plain.to_vec(),
            "{ci}->{co} k{k} s{st} g{g} + residual"
        );
    }
    let x = t(uniform(2 * 4 * 25, -1.0, 1.0, 54), &[2, 4, 5, 5]);
    // A residual of another shape broadcasts as `add` does, or is its error.
    let w8 = t(uniform(8 * 4 * 9, -0.5, 0.5, 55), &[8, 4, 3, 3]);
    let p1 = Conv2dParams::new(1, 1);
    let per_channel = t(uniform(8, -1.0, 1.0, 60), &[1, 8, 1, 1]);
    let y = x
        .conv2d_act_add(&w8, None, p1, UnaryOp::Silu, &per_channel)
        .unwrap();
    let want = x
        .conv2d(&w8, None, p1)
        .unwrap()
        .silu()
        .add(&per_channel)
        .unwrap();
    assert_eq!(y.to_vec(), want.to_vec());
    let wrong = t(vec![0.0; 3], &[3]);
    assert!(x
        .conv2d_act_add(&w8, None, p1, UnaryOp::Silu, &wrong)
        .is_err());
    let w = t(uniform(8 * 4 * 9, -0.5, 0.5, 55), &[8, 4, 3, 3]).with_grad();
    let y = x
        .conv2d_act(&w, None, Conv2dParams::new(1, 1), UnaryOp::Silu)
        .unwrap();
    assert!(
        y.requires_grad(),
        "a weight needing a gradient records the ops"
    );
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(w.grad().unwrap().shape(), &[8, 4, 3, 3]);
}

/// `concat_conv2d` of a 1×1 convolution (the parts read in place) against the naive sum over
/// the joined channels, at widths with a partial pixel strip, reductions past one block of
/// 256 rows and two images; and against `concat` + `conv2d` (+ the op).
#[test]
fn concat_conv2d_matches_naive_and_the_joined_conv() {
    // (channels of each part, c_out, hw)
    // The first, third and last: small maps in whole blocks of 16, the direct kernels' 1×1
    // path (chunks of 128 input channels never spanning two parts).
    let cases: [(&[usize], usize, usize); 5] = [
        (&[16, 16], 32, 13),
        (&[64, 64, 64, 64], 24, 10),
        (&[200, 120], 16, 7),
        (&[8, 24, 16], 40, 50),
        (&[256, 100, 156], 80, 10),
    ];
    for (chans, co, hw) in cases {
        let n = 2;
        let ci: usize = chans.iter().sum();
        let parts: Vec<Tensor> = chans
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                t(
                    uniform(n * c * hw * hw, -1.0, 1.0, 60 + i as u64),
                    &[n, c, hw, hw],
                )
            })
            .collect();
        let refs: Vec<&Tensor> = parts.iter().collect();
        let ws = uniform(co * ci, -0.5, 0.5, 70);
        let bs = uniform(co, -0.5, 0.5, 71);
        let (w, b) = (t(ws.clone(), &[co, ci, 1, 1]), t(bs.clone(), &[co]));
        let p = Conv2dParams::new(1, 0);
        let y = Tensor::concat_conv2d(&refs, &w, Some(&b), p, None).unwrap();
        assert_eq!(y.shape(), &[n, co, hw, hw]);
        let yv = y.to_vec();
        let xv: Vec<Vec<f32>> = parts.iter().map(|p| p.to_vec()).collect();
        let hw2 = hw * hw;
        for img in 0..n {
            for o in 0..co {
                for px in 0..hw2 {
                    let mut acc = bs[o] as f64;
                    let mut c0 = 0;
                    for (part, &c) in xv.iter().zip(chans) {
                        for c in 0..c {
                            let x = part[(img * (part.len() / n / hw2) + c) * hw2 + px];
                            acc += ws[o * ci + c0 + c] as f64 * x as f64;
                        }
                        c0 += c;
                    }
                    let got = yv[(img * co + o) * hw2 + px] as f64;
                    assert!(
                        (got - acc).abs() <= 1e-4 * acc.abs().max(1.0),
                        "{chans:?}->{co}: image {img}, channel {o}, pixel {px}: {got} against {acc}"
                    );
                }
            }
        }
        let joined = Tensor::concat(&refs, 1).unwrap();
        let fused = Tensor::concat_conv2d(&refs, &w, Some(&b), p, Some(UnaryOp::Silu)).unwrap();
        let plain = joined.conv2d(&w, Some(&b), p).unwrap().silu();
        assert_close(
            "concat_conv2d + SiLU",
            &fused.to_vec(),
            &plain.to_vec(),
            1e-5,
        );
    }
    // Wrong channel counts are the joined conv's error, not a panic.
    let a = t(vec![0.0; 2 * 9], &[1, 2, 3, 3]);
    let w = t(vec![0.0; 4 * 3], &[4, 3, 1, 1]);
    let err = Tensor::concat_conv2d(&[&a, &a], &w, None, Conv2dParams::new(1, 0), None);
    assert!(err.is_err(), "4 input channels against a weight for 3");
}

/// `concat_conv2d_up` (upsampled parts' products taken at their own size) against the parts
/// upsampled and joined first (`upsample_nearest2d` + `concat_conv2d`): YOLO's neck shape (an
/// upsampled part then a full one), the upsampled part second, two upsampled parts, factor 3,
/// odd widths, two images, a partial pixel strip, with and without bias and SiLU; recording
/// falls back to the joined ops.
#[test]
fn concat_conv2d_up_equals_upsample_then_concat_conv2d() {
    // (parts as (channels, factor), c_out, full h, full w, bias)
    type Case = (&'static [(usize, usize)], usize, usize, usize, bool);
    let cases: [Case; 5] = [
        (&[(64, 2), (48, 1)], 40, 14, 22, true),
        (&[(16, 1), (24, 2)], 16, 10, 6, true),
        (&[(8, 2), (300, 1), (16, 2)], 24, 12, 18, false),
        (&[(32, 3), (16, 1)], 8, 9, 15, true),
        (&[(16, 2), (16, 1)], 32, 40, 40, true),
    ];
    for (ci, (chans, co, h, w, with_bias)) in cases.into_iter().enumerate() {
        let n = 2;
        let parts: Vec<(Tensor, usize)> = chans
            .iter()
            .enumerate()
            .map(|(i, &(c, f))| {
                let len = n * c * (h / f) * (w / f);
                let seed = 80 + 10 * ci as u64 + i as u64;
                (t(uniform(len, -1.0, 1.0, seed), &[n, c, h / f, w / f]), f)
            })
            .collect();
        let cin: usize = chans.iter().map(|c| c.0).sum();
        let wt = t(uniform(co * cin, -0.5, 0.5, 90), &[co, cin, 1, 1]);
        let b = t(uniform(co, -0.5, 0.5, 91), &[co]);
        let b = with_bias.then_some(&b);
        let refs: Vec<(&Tensor, usize)> = parts.iter().map(|(t, f)| (t, *f)).collect();
        let full: Vec<Tensor> = parts
            .iter()
            .map(|(t, f)| t.upsample_nearest2d(*f, *f).unwrap())
            .collect();
        let full_refs: Vec<&Tensor> = full.iter().collect();
        let p = Conv2dParams::new(1, 0);
        for act in [None, Some(UnaryOp::Silu)] {
            let got = {
                let _g = yolo_tensor::no_grad();
                Tensor::concat_conv2d_up(&refs, &wt, b, p, act).unwrap()
            };
            let want = Tensor::concat_conv2d(&full_refs, &wt, b, p, act).unwrap();
            assert_eq!(got.shape(), &[n, co, h, w]);
            assert_close(
                &format!("case {ci} {act:?}"),
                &got.to_vec(),
                &want.to_vec(),
                1e-5,
            );
        }
    }
    // Recording: the joined ops, with gradients for every part.
    let a = t(uniform(2 * 4 * 9, -1.0, 1.0, 95), &[2, 4, 3, 3]).with_grad();
    let c = t(uniform(2 * 4 * 36, -1.0, 1.0, 96), &[2, 4, 6, 6]).with_grad();
    let wt = t(uniform(16 * 8, -0.5, 0.5, 97), &[16, 8, 1, 1]);
    let y = Tensor::concat_conv2d_up(
        &[(&a, 2), (&c, 1)],
        &wt,
        None,
        Conv2dParams::new(1, 0),
        None,
    )
    .unwrap();
    assert!(y.requires_grad());
    y.sum_all().unwrap().backward().unwrap();
    assert_eq!(a.grad().unwrap().shape(), &[2, 4, 3, 3]);
    // Mismatched sizes once upsampled are the joined ops' error, not a panic.
    let bad = t(vec![0.0; 2 * 4 * 16], &[2, 4, 4, 4]);
    let r = Tensor::concat_conv2d_up(
        &[(&a, 2), (&bad, 1)],
        &wt,
        None,
        Conv2dParams::new(1, 0),
        None,
    );
    assert!(r.is_err());
    assert!(Tensor::concat_conv2d_up(
        &[(&a, 0), (&c, 1)],
        &wt,
        None,
        Conv2dParams::new(1, 0),
        None
    )
    .is_err());
}

/// `conv1x1_heads` (the GEMM writing the per-head channels-last layout) against `conv2d` +
/// reshape + permute: partial tiles of pixels and channels, reductions past one block, two
/// images, one image of three heads (split between threads), no bias; a channel count that
/// does not split is an error; recording falls back.
#[test]
fn conv1x1_heads_equals_conv_then_permute() {
    // (c_in, heads, k, h, w, bias)
    let cases = [
        (64, 3, 85, 13, 11, true),
        (300, 2, 7, 5, 9, true),
        (16, 1, 48, 8, 8, false),
        (128, 3, 6, 20, 20, true),
    ];
    for (i, (ci, heads, k, h, wd, with_bias)) in cases.into_iter().enumerate() {
        let co = heads * k;
        // One image in the last case: with several threads its heads split between tasks.
        let n = if i == 3 { 1 } else { 2 };
        let x = t(uniform(n * ci * h * wd, -1.0, 1.0, 81), &[n, ci, h, wd]);
        let w = t(uniform(co * ci, -0.5, 0.5, 82), &[co, ci, 1, 1]);
        let b = t(uniform(co, -0.5, 0.5, 83), &[co]);
        let b = with_bias.then_some(&b);
        let p = Conv2dParams::new(1, 0);
        let got = x.conv1x1_heads(&w, b, p, heads).unwrap();
        let want = x
            .conv2d(&w, b, p)
            .unwrap()
            .reshape(&[n, heads, k, h, wd])
            .unwrap()
            .permute(&[0, 1, 3, 4, 2])
            .unwrap();
        assert_eq!(got.shape(), want.shape());
        assert_close(
            &format!("conv1x1_heads {ci}->{heads}x{k} at {h}x{wd}"),
            &got.to_vec(),
            &want.to_vec(),
            1e-5,
        );
        // Without recording the transposed weights are kept: the second call reuses them.
        let _g = yolo_tensor::no_grad();
        for _ in 0..2 {
            let kept = x.conv1x1_heads(&w, b, p, heads).unwrap();
            assert_eq!(
                kept.to_vec(),
                got.to_vec(),
                "kept weights, {ci}->{heads}x{k}"
            );
        }
    }
    let x = t(uniform(4 * 9, -1.0, 1.0, 84), &[1, 4, 3, 3]);
    let w = t(uniform(6 * 4, -0.5, 0.5, 85), &[6, 4, 1, 1]);
    assert!(
        x.conv1x1_heads(&w, None, Conv2dParams::new(1, 0), 4)
            .is_err(),
        "6 into 4 heads"
    );
    let wg = w.clone().with_grad();
    let y = x
        .conv1x1_heads(&wg, None, Conv2dParams::new(1, 0), 2)
        .unwrap();
    assert_eq!(y.shape(), &[1, 2, 3, 3, 3]);
    assert!(
        y.requires_grad(),
        "a weight needing a gradient records the ops"
    );
}

/// Concat and narrow on every axis against index arithmetic, at sizes that take the parallel,
/// coalesced copy (whole trailing axes joined into one run) and at small ones.
#[test]
fn concat_and_narrow_match_naive_indexing() {
    for dims in [[2usize, 24, 40, 50], [2, 3, 4, 5]] {
        let n: usize = dims.iter().product();
        let (a, b) = (uniform(n, -1.0, 1.0, 31), uniform(n, -1.0, 1.0, 32));
        let (ta, tb) = (t(a.clone(), &dims), t(b.clone(), &dims));
        let at = |v: &[f32], s: [usize; 4], i: [usize; 4]| {
            v[((i[0] * s[1] + i[1]) * s[2] + i[2]) * s[3] + i[3]]
        };
        for axis in 0..4 {
            let c = Tensor::concat(&[&ta, &tb], axis as isize).unwrap();
            let mut cs = dims;
            cs[axis] *= 2;
            assert_eq!(c.shape(), &cs);
            let cv = c.to_vec();
            let len = dims[axis] - 1;
            let nar = ta.narrow(axis as isize, 1, len).unwrap().to_vec();
            let mut ns = dims;
            ns[axis] = len;
            let mut i = [0usize; 4];
            for (f, &got) in cv.iter().enumerate() {
                let mut r = f;
                for ax in (0..4).rev() {
                    i[ax] = r % cs[ax];
                    r /= cs[ax];
                }
                let mut j = i;
                let want = if i[axis] < dims[axis] {
                    at(&a, dims, i)
                } else {
                    j[axis] -= dims[axis];
                    at(&b, dims, j)
                };
                assert_eq!(got, want, "concat axis {axis} at {i:?}");
                if i[axis] < len && i.iter().zip(&ns).all(|(x, s)| x < s) {
                    let mut k = i;
                    k[axis] += 1;
                    assert_eq!(
                        at(&nar, ns, i),
                        at(&a, dims, k),
                        "narrow axis {axis} at {i:?}"
                    );
                }
            }
        }
    }
}

/// Inference keeps the packed weights of the direct and Winograd paths across calls; they must
/// follow every change of the weights (in place, or by assignment).
#[test]
fn packed_weights_follow_weight_updates() {
    let _g = yolo_tensor::no_grad();
    let x = t(uniform(16 * 9 * 10, -1.0, 1.0, 21), &[1, 16, 9, 10]);
    for stride in [1, 2] {
        let p = Conv2dParams::new(stride, 1);
        let w = t(uniform(16 * 16 * 9, -1.0, 1.0, 22), &[16, 16, 3, 3]);
        let y1 = x.conv2d(&w, None, p).unwrap().to_vec();
        assert_eq!(
            x.conv2d(&w, None, p).unwrap().to_vec(),
            y1,
            "s{stride}: again"
        );
        // Scaling by −½ is exact, so the result must be exactly −½·y1.
        w.update_data(|d| d.iter_mut().for_each(|v| *v *= -0.5))
            .unwrap();
        let y2 = x.conv2d(&w, None, p).unwrap().to_vec();
        let half: Vec<f32> = y1.iter().map(|v| v * -0.5).collect();
        assert_eq!(y2, half, "s{stride}: after update_data");
        let other = t(uniform(16 * 16 * 9, -1.0, 1.0, 23), &[16, 16, 3, 3]);
        w.assign(&other).unwrap();
        let fresh = x.conv2d(&other, None, p).unwrap().to_vec();
        assert_eq!(
            x.conv2d(&w, None, p).unwrap().to_vec(),
            fresh,
            "s{stride}: after assign"
        );
    }
}

#[test]
fn no_grad_records_nothing() {
    let w = t(vec![1.0, 2.0], &[2]).with_grad();
    let y = {
        let _g = yolo_tensor::no_grad();
        assert!(!yolo_tensor::is_grad_enabled());
        w.sqr().add(&w).unwrap()
    };
    assert!(yolo_tensor::is_grad_enabled());
    assert!(!y.requires_grad() && y.is_leaf());
    assert!(matches!(
        y.sum_all().unwrap().backward(),
        Err(Error::Backward(_))
    ));
}

#[test]
fn grads_accumulate_and_zero() {
    let w = t(vec![3.0], &[1]).with_grad();
    for _ in 0..2 {
        w.sqr().sum_all().unwrap().backward().unwrap();
    }
    assert_eq!(w.grad().unwrap().to_vec(), vec![12.0]);
    w.zero_grad();
    assert!(w.grad().is_none());
}

/// Accumulation adds in place only into gradients nobody else holds: a gradient the caller
/// kept, or one that several inputs share (`add` hands the same tensor to both), keeps its
/// values; and a tensor used by several ops gets the sum of all their contributions.
#[test]
fn in_place_accumulation_never_changes_a_held_gradient() {
    let n = 40_000; // above the pooled-buffer and parallel-chunk sizes
    let w = t(vec![1.5; n], &[n]).with_grad();
    w.sqr().sum_all().unwrap().backward().unwrap();
    let kept = w.grad().unwrap();
    assert!(kept.to_vec().iter().all(|&v| v == 3.0));
    w.sqr().sum_all().unwrap().backward().unwrap();
    assert!(
        kept.to_vec().iter().all(|&v| v == 3.0),
        "held gradient changed"
    );
    assert!(w.grad().unwrap().to_vec().iter().all(|&v| v == 6.0));
    // x feeds an add twice (one shared gradient tensor) and a mul: d/dx (x + x + 3x) = 5.
    let x = t(vec![2.0; n], &[n]).with_grad();
    let y = x.add(&x).unwrap().add(&x.mul_scalar(3.0)).unwrap();
    y.sum_all().unwrap().backward().unwrap();
    assert!(x.grad().unwrap().to_vec().iter().all(|&v| v == 5.0));
}

#[test]
fn errors_name_the_op_and_shapes() {
    let a = t(vec![0.0; 6], &[2, 3]);
    let b = t(vec![0.0; 4], &[4]);
    let e = a.add(&b).unwrap_err().to_string();
    assert!(
        e.contains("add") && e.contains("[2, 3]") && e.contains("[4]"),
        "{e}"
    );
    let e = a.matmul(&a).unwrap_err().to_string();
    assert!(e.contains("matmul") && e.contains("[2, 3]"), "{e}");
    let x = t(vec![0.0; 2 * 3 * 4 * 4], &[2, 3, 4, 4]);
    let w = t(vec![0.0; 4 * 2 * 9], &[4, 2, 3, 3]);
    let e = x
        .conv2d(&w, None, Conv2dParams::new(1, 1))
        .unwrap_err()
        .to_string();
    assert!(e.contains("conv2d") && e.contains("groups"), "{e}");
    assert!(matches!(
        x.reshape(&[5, 5]),
        Err(Error::ShapeMismatch { op: "reshape", .. })
    ));
    assert!(matches!(
        x.narrow(1, 2, 2),
        Err(Error::InvalidArgument { op: "narrow", .. })
    ));
    assert!(matches!(
        x.index_select(0, &[2]),
        Err(Error::InvalidArgument {
            op: "index_select",
            ..
        })
    ));
    assert!(matches!(
        x.permute(&[0, 0, 1, 2]),
        Err(Error::InvalidArgument { op: "permute", .. })
    ));
    assert!(matches!(
        x.max_pool2d(Pool2dParams::new(3, 1, 2)),
        Err(Error::InvalidArgument {
            op: "max_pool2d",
            ..
        })
    ));
    assert!(matches!(
        Tensor::from_vec(vec![1.0; 3], &[2, 2], Device::Cpu),
        Err(Error::ShapeMismatch { .. })
    ));
    assert!(matches!(
        Tensor::zeros(&[2], Device::Cuda(0)),
        Err(Error::DeviceUnavailable { .. })
    ));
    if yolo_tensor::cuda_device_count() == 0 {
        assert!(matches!(
            Device::cuda(0),
            Err(Error::DeviceUnavailable { .. })
        ));
    }
    let one = t(vec![1.0; 2], &[1, 2, 1, 1]);
    assert!(matches!(
        one.batch_norm2d_train(
            &t(vec![1.0; 2], &[2]),
            &t(vec![0.0; 2], &[2]),
            &t(vec![0.0; 2], &[2]),
            &t(vec![1.0; 2], &[2]),
            0.1,
            1e-3
        ),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn permute_matches_naive() {
    // Detect's (bs, na, no, ny, nx) → (bs, na, ny, nx, no) and back, small and large enough to
    // run in parallel chunks, plus a permutation with no contiguous axis left.
    let cases: [(&[usize], &[usize]); 4] = [
        (&[2, 3, 7, 5, 6], &[0, 1, 3, 4, 2]),
        (&[2, 3, 85, 20, 21], &[0, 1, 3, 4, 2]),
        (&[2, 3, 20, 21, 85], &[0, 1, 4, 2, 3]),
        (&[4, 5, 6], &[2, 0, 1]),
    ];
    for (shape, perm) in cases {
        let n: usize = shape.iter().product();
        let xs: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let x = Tensor::from_vec(xs.clone(), shape, Device::Cpu).unwrap();
        let y = x.permute(perm).unwrap();
        let out_shape: Vec<usize> = perm.iter().map(|&p| shape[p]).collect();
        assert_eq!(y.shape(), &out_shape[..]);
        let mut strides = vec![1usize; shape.len()];
        for i in (0..shape.len() - 1).rev() {
            strides[i] = strides[i + 1] * shape[i + 1];
        }
        let got = y.to_vec();
        let mut idx = vec![0usize; shape.len()];
        for (o, &g) in got.iter().enumerate() {
            let mut r = o;
            for ax in (0..out_shape.len()).rev() {
                idx[ax] = r % out_shape[ax];
                r /= out_shape[ax];
            }
            let src: usize = idx.iter().zip(perm).map(|(&i, &p)| i * strides[p]).sum();
            assert_eq!(g, xs[src], "{shape:?} {perm:?} at {o}");
        }
    }
}

#[test]
fn max_pool_backward_picks_first_maximum() {
    // Few distinct values, so most windows hold ties: the gradient must go to the first
    // maximum in row-major order, as PyTorch's CPU kernel picks it.
    let (n, c, h, w) = (2, 3, 9, 11);
    let xs: Vec<f32> = (0..n * c * h * w)
        .map(|i| ((i * 7 + i / 5) % 4) as f32)
        .collect();
    for (k, s, p) in [(5, 1, 2), (3, 2, 1), (2, 2, 0), (3, 1, 1)] {
        let x = Tensor::from_vec(xs.clone(), &[n, c, h, w], Device::Cpu)
            .unwrap()
            .with_grad();
        let y = x.max_pool2d(Pool2dParams::new(k, s, p)).unwrap();
        let (oh, ow) = (y.shape()[2], y.shape()[3]);
        let gy: Vec<f32> = (0..y.numel()).map(|i| 1.0 + i as f32 * 0.25).collect();
        y.backward_with(&Tensor::from_vec(gy.clone(), y.shape(), Device::Cpu).unwrap())
            .unwrap();
        let mut want = vec![0.0f32; xs.len()];
        for pl in 0..n * c {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut best: Option<usize> = None;
                    for ky in 0..k {
                        for kx in 0..k {
                            let (iy, ix) = (
                                (oy * s + ky) as isize - p as isize,
                                (ox * s + kx) as isize - p as isize,
                            );
                            if iy < 0 || ix < 0 || iy as usize >= h || ix as usize >= w {
                                continue;
                            }
                            let i = pl * h * w + iy as usize * w + ix as usize;
                            if best.is_none_or(|b| xs[i] > xs[b]) {
                                best = Some(i);
                            }
                        }
                    }
                    want[best.unwrap()] += gy[(pl * oh + oy) * ow + ox];
                }
            }
        }
        assert_eq!(x.grad().unwrap().to_vec(), want, "k{k} s{s} p{p}");
    }
}

/// Grad mode is per caller even when callers share the kernel pool: a pool thread that waits
/// inside one caller's no-grad work may run another caller's closure, which must still record.
#[test]
fn grad_mode_does_not_leak_between_pool_callers() {
    use yolo_tensor::{in_pool, is_grad_enabled, no_grad, set_grad_enabled, Device, Tensor};
    {
        let _off = no_grad();
        assert!(!is_grad_enabled());
        {
            let _on = set_grad_enabled(true);
            assert!(is_grad_enabled());
        }
        assert!(!is_grad_enabled());
    }
    assert!(is_grad_enabled());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s2 = stop.clone();
    let inference = std::thread::spawn(move || {
        let _g = no_grad();
        let x = Tensor::ones(&[64, 64, 64], Device::Cpu).unwrap();
        while !s2.load(std::sync::atomic::Ordering::Relaxed) {
            in_pool(|| {
                let y = x.silu().sum_all().unwrap();
                assert!(!y.requires_grad());
            });
        }
    });
    for _ in 0..200 {
        let w = Tensor::ones(&[32, 64, 64], Device::Cpu)
            .unwrap()
            .with_grad();
        let y = in_pool(|| w.silu().sum_all().unwrap());
        assert!(y.requires_grad(), "a training op lost its graph");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    inference.join().unwrap();
}

/// The fused batch norm + activation equals the two ops in sequence: output, running
/// statistics, and the gradients of input, weight and bias — for each activation the model
/// zoo fuses. Sizes above one stack chunk (1024) per plane exercise the chunked passes.
#[test]
fn fused_batch_norm_activation_equals_the_composition() {
    use yolo_tensor::UnaryOp;
    let (n, c, h, w) = (2, 3, 33, 37);
    let xs = uniform(n * c * h * w, -2.0, 3.0, 40);
    let ws = uniform(c, 0.5, 1.5, 41);
    let bs = uniform(c, -0.5, 0.5, 42);
    let gz = uniform(n * c * h * w, -1.0, 1.0, 43);
    for act in [
        UnaryOp::Silu,
        UnaryOp::LeakyRelu(0.1),
        UnaryOp::Relu,
        UnaryOp::Gelu,
        UnaryOp::Sigmoid,
        UnaryOp::Tanh,
    ] {
        let run = |fused: bool| {
            let x = t(xs.clone(), &[n, c, h, w]).with_grad();
            let wt = t(ws.clone(), &[c]).with_grad();
            let b = t(bs.clone(), &[c]).with_grad();
            let (rm, rv) = (t(vec![0.0; c], &[c]), t(vec![1.0; c], &[c]));
            let z = if fused {
                x.batch_norm2d_act_train(&wt, &b, &rm, &rv, 0.03, 1e-3, Some(act))
                    .unwrap()
            } else {
                x.batch_norm2d_train(&wt, &b, &rm, &rv, 0.03, 1e-3)
                    .unwrap()
                    .unary(act)
            };
            z.backward_with(&t(gz.clone(), z.shape())).unwrap();
            [
                z.to_vec(),
                x.grad().unwrap().to_vec(),
                wt.grad().unwrap().to_vec(),
                b.grad().unwrap().to_vec(),
                rm.to_vec(),
                rv.to_vec(),
            ]
        };
        let (f, u) = (run(true), run(false));
        for (name, (a, e)) in [
            "output",
            "d/dx",
            "d/dweight",
            "d/dbias",
            "running mean",
            "running var",
        ]
        .iter()
        .zip(f.iter().zip(&u))
        {
            assert_close(&format!("{act:?} {name}"), a, e, 1e-5);
        }
    }
}
