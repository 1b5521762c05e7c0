//! The attention and fusion blocks (SE, CBAM, ECA, CoordAtt, SimAM, space_to_depth,
//! BiFPN_Add2/3): forward against naive f64 loops written from each definition, central
//! finite-difference gradients w.r.t. the input and every parameter, parameter names and counts
//! from their formulas, and thop-rule FLOPs.

// The references are plain index loops on purpose: they read like the definitions.
#![allow(clippy::needless_range_loop)]

use yolo_layers::{
    count_params, flops, named_tensors, BiFpnAdd, Cbam, CoordAtt, Eca, Init, Kind, Layer, Module,
    Se, SimAm, SpaceToDepth,
};
use yolo_tensor::{Device, Tensor};

mod gc {
    //! The shared seeded inputs and gradient check, plus an f64-reference comparison.
    #![allow(dead_code)]

    pub use yolo_testutil::{distinct, gradcheck, t, uniform, PIECEWISE, SMOOTH};

    /// Asserts `a` and `b` agree to `rel` relative (with an absolute floor of rel near 0).
    pub fn assert_close(name: &str, a: &[f32], b: &[f64], rel: f64) {
        assert_eq!(a.len(), b.len(), "{name}: lengths");
        for (i, (&x, &y)) in a.iter().zip(b).enumerate() {
            let x = x as f64;
            let bound = rel * x.abs().max(y.abs()).max(1.0);
            assert!((x - y).abs() <= bound, "{name}[{i}]: {x} vs {y}");
        }
    }
}

use gc::{assert_close, distinct, gradcheck, t, uniform, PIECEWISE, SMOOTH};

// ---------------------------------------------------------------------------------------------
// Naive f64 reference pieces (NCHW, row-major).

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn relu(x: f64) -> f64 {
    x.max(0.0)
}

fn hardswish(x: f64) -> f64 {
    x * (x + 3.0).clamp(0.0, 6.0) / 6.0
}

fn silu(x: f64) -> f64 {
    x * sigmoid(x)
}

/// Stride-1 convolution with zero padding (ph, pw), weight co×ci×kh×kw.
#[allow(clippy::too_many_arguments)]
fn conv(
    x: &[f64],
    (n, ci, h, w): (usize, usize, usize, usize),
    wt: &[f64],
    (co, kh, kw): (usize, usize, usize),
    (ph, pw): (usize, usize),
    bias: Option<&[f64]>,
) -> (Vec<f64>, (usize, usize, usize, usize)) {
    let oh = h + 2 * ph - kh + 1;
    let ow = w + 2 * pw - kw + 1;
    let mut y = vec![0.0; n * co * oh * ow];
    for b in 0..n {
        for o in 0..co {
            for i in 0..oh {
                for j in 0..ow {
                    let mut s = bias.map_or(0.0, |bb| bb[o]);
                    for c in 0..ci {
                        for u in 0..kh {
                            for v in 0..kw {
                                let (r, q) = (i + u, j + v);
                                if r < ph || q < pw || r - ph >= h || q - pw >= w {
                                    continue;
                                }
                                s += wt[((o * ci + c) * kh + u) * kw + v]
                                    * x[((b * ci + c) * h + r - ph) * w + q - pw];
                            }
                        }
                    }
                    y[((b * co + o) * oh + i) * ow + j] = s;
                }
            }
        }
    }
    (y, (n, co, oh, ow))
}

/// Mean over H×W per (n, c).
fn spatial_mean(x: &[f64], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<f64> {
    (0..n * c)
        .map(|p| x[p * h * w..(p + 1) * h * w].iter().sum::<f64>() / (h * w) as f64)
        .collect()
}

fn spatial_max(x: &[f64], (n, c, h, w): (usize, usize, usize, usize)) -> Vec<f64> {
    (0..n * c)
        .map(|p| {
            x[p * h * w..(p + 1) * h * w]
                .iter()
                .cloned()
                .fold(f64::MIN, f64::max)
        })
        .collect()
}

/// y = W·v for W out×in.
fn matvec(wt: &[f64], v: &[f64], out: usize) -> Vec<f64> {
    let inp = v.len();
    (0..out)
        .map(|o| (0..inp).map(|i| wt[o * inp + i] * v[i]).sum())
        .collect()
}

fn names(l: &dyn Layer) -> Vec<(String, Vec<usize>, Kind)> {
    named_tensors(l, "")
        .into_iter()
        .map(|(n, t, k)| (n, t.shape().to_vec(), k))
        .collect()
}

fn named(name: &str, shape: &[usize], kind: Kind) -> (String, Vec<usize>, Kind) {
    (name.to_string(), shape.to_vec(), kind)
}

fn forward_flops(m: &dyn Module, x: &Tensor) -> f64 {
    let (r, macs) = flops::count(|| m.forward(x, false));
    r.unwrap();
    macs
}

// ---------------------------------------------------------------------------------------------
// SE

fn naive_se(x: &[f64], d: (usize, usize, usize, usize), w1: &[f64], w2: &[f64]) -> Vec<f64> {
    let (n, c, h, w) = d;
    let hidden = w1.len() / c;
    let p = spatial_mean(x, d);
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        let z: Vec<f64> = matvec(w1, &p[b * c..(b + 1) * c], hidden)
            .into_iter()
            .map(relu)
            .collect();
        let s: Vec<f64> = matvec(w2, &z, c).into_iter().map(sigmoid).collect();
        for ch in 0..c {
            for i in 0..h * w {
                let k = (b * c + ch) * h * w + i;
                y[k] = x[k] * s[ch];
            }
        }
    }
    y
}

#[test]
fn se_forward_matches_naive_loops() {
    let (n, c, h, w, r) = (2, 32, 5, 4, 4);
    let se = Se::new(c, r, &Init::new(1)).unwrap();
    let xv = uniform(n * c * h * w, -2.0, 2.0, 11);
    let y = se.forward(&t(xv.clone(), &[n, c, h, w]), true).unwrap();
    assert_eq!(y.shape(), &[n, c, h, w]);
    let want = naive_se(
        &f64s(&xv),
        (n, c, h, w),
        &f64s(&se.l1.weight.to_vec()),
        &f64s(&se.l2.weight.to_vec()),
    );
    assert_close("SE", &y.to_vec(), &want, 1e-5);
    // Not the identity: the gate is strictly inside (0, 1).
    assert!(y
        .to_vec()
        .iter()
        .zip(&xv)
        .any(|(a, b)| (a - b).abs() > 1e-3));
}

#[test]
fn se_names_and_parameter_count() {
    let (c, r) = (64, 16);
    let se = Se::new(c, r, &Init::new(0)).unwrap();
    let hidden = c / r;
    assert_eq!(count_params(&se), c * hidden + hidden * c);
    assert_eq!(count_params(&se), 512);
    assert_eq!(
        names(&se),
        vec![
            named("l1.weight", &[hidden, c], Kind::Param),
            named("l2.weight", &[c, hidden], Kind::Param),
        ]
    );
    assert!(Se::new(8, 16, &Init::new(0)).is_err(), "8 / 16 = 0 hidden");
    assert!(se
        .forward(&Tensor::zeros(&[1, 32, 4, 4], Device::Cpu).unwrap(), false)
        .is_err());
}

#[test]
fn se_gradients() {
    let (n, c, h, w, r) = (2, 16, 3, 3, 4);
    let hidden = c / r;
    let inputs = vec![
        (uniform(n * c * h * w, -2.0, 2.0, 1), vec![n, c, h, w]),
        (uniform(hidden * c, -0.5, 0.5, 2), vec![hidden, c]),
        (uniform(c * hidden, -0.5, 0.5, 3), vec![c, hidden]),
    ];
    // ReLU in the hidden layer: a small step keeps the pre-activations on one side of 0.
    gradcheck("SE", &inputs, PIECEWISE, |xs| {
        let mut se = Se::new(c, r, &Init::new(0)).unwrap();
        se.l1.weight = xs[1].clone();
        se.l2.weight = xs[2].clone();
        Ok(se.forward(&xs[0], true).unwrap())
    });
}

// ---------------------------------------------------------------------------------------------
// CBAM

#[allow(clippy::too_many_arguments)]
fn naive_cbam(
    x: &[f64],
    d: (usize, usize, usize, usize),
    f1: &[f64],
    f2: &[f64],
    sw: &[f64],
    k: usize,
) -> Vec<f64> {
    let (n, c, h, w) = d;
    let hidden = f1.len() / c;
    let (avg, max) = (spatial_mean(x, d), spatial_max(x, d));
    let mlp = |v: &[f64]| -> Vec<f64> {
        let z: Vec<f64> = matvec(f1, v, hidden).into_iter().map(relu).collect();
        matvec(f2, &z, c)
    };
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        let a = mlp(&avg[b * c..(b + 1) * c]);
        let m = mlp(&max[b * c..(b + 1) * c]);
        for ch in 0..c {
            let g = sigmoid(a[ch] + m[ch]);
            for i in 0..h * w {
                let q = (b * c + ch) * h * w + i;
                y[q] = x[q] * g;
            }
        }
    }
    // Spatial: [mean over channels, max over channels] → k×k conv → sigmoid.
    let mut pooled = vec![0.0; n * 2 * h * w];
    for b in 0..n {
        for i in 0..h * w {
            let vals: Vec<f64> = (0..c).map(|ch| y[(b * c + ch) * h * w + i]).collect();
            pooled[(b * 2) * h * w + i] = vals.iter().sum::<f64>() / c as f64;
            pooled[(b * 2 + 1) * h * w + i] = vals.iter().cloned().fold(f64::MIN, f64::max);
        }
    }
    let (s, _) = conv(&pooled, (n, 2, h, w), sw, (1, k, k), (k / 2, k / 2), None);
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..h * w {
                let q = (b * c + ch) * h * w + i;
                out[q] = y[q] * sigmoid(s[b * h * w + i]);
            }
        }
    }
    out
}

#[test]
fn cbam_forward_matches_naive_loops() {
    for (k, seed) in [(7, 5), (3, 6)] {
        let (n, c, h, w, r) = (2, 32, 6, 5, 8);
        let m = Cbam::new(c, r, k, &Init::new(seed)).unwrap();
        let xv = uniform(n * c * h * w, -2.0, 2.0, seed + 10);
        let y = m.forward(&t(xv.clone(), &[n, c, h, w]), false).unwrap();
        assert_eq!(y.shape(), &[n, c, h, w]);
        let want = naive_cbam(
            &f64s(&xv),
            (n, c, h, w),
            &f64s(&m.channel_attention.f1.weight.to_vec()),
            &f64s(&m.channel_attention.f2.weight.to_vec()),
            &f64s(&m.spatial_attention.conv.weight.to_vec()),
            k,
        );
        assert_close(&format!("CBAM k={k}"), &y.to_vec(), &want, 1e-5);
    }
}

#[test]
fn cbam_names_and_parameter_count() {
    let (c, r, k) = (64, 16, 7);
    let m = Cbam::new(c, r, k, &Init::new(0)).unwrap();
    let hidden = c / r;
    assert_eq!(count_params(&m), 2 * c * hidden + 2 * k * k);
    assert_eq!(count_params(&m), 610);
    assert_eq!(
        names(&m),
        vec![
            named(
                "channel_attention.f1.weight",
                &[hidden, c, 1, 1],
                Kind::Param
            ),
            named(
                "channel_attention.f2.weight",
                &[c, hidden, 1, 1],
                Kind::Param
            ),
            named("spatial_attention.conv.weight", &[1, 2, k, k], Kind::Param),
        ]
    );
    assert!(Cbam::new(64, 16, 4, &Init::new(0)).is_err(), "even kernel");
}

#[test]
fn cbam_gradients() {
    let (n, c, h, w, r, k) = (2, 8, 4, 4, 2, 3);
    let hidden = c / r;
    // Distinct inputs keep the channel and spatial arg-maxes apart under the step.
    let inputs = vec![
        (distinct(n * c * h * w, 2e-2, 7), vec![n, c, h, w]),
        (uniform(hidden * c, -0.5, 0.5, 8), vec![hidden, c, 1, 1]),
        (uniform(c * hidden, -0.5, 0.5, 9), vec![c, hidden, 1, 1]),
        (uniform(2 * k * k, -0.5, 0.5, 10), vec![1, 2, k, k]),
    ];
    gradcheck("CBAM", &inputs, PIECEWISE, |xs| {
        let mut m = Cbam::new(c, r, k, &Init::new(0)).unwrap();
        m.channel_attention.f1.weight = xs[1].clone();
        m.channel_attention.f2.weight = xs[2].clone();
        m.spatial_attention.conv.weight = xs[3].clone();
        Ok(m.forward(&xs[0], true).unwrap())
    });
}

// ---------------------------------------------------------------------------------------------
// ECA

fn naive_eca(x: &[f64], d: (usize, usize, usize, usize), wk: &[f64]) -> Vec<f64> {
    let (n, c, h, w) = d;
    let k = wk.len();
    let pad = (k - 1) / 2;
    let p = spatial_mean(x, d);
    let mut y = vec![0.0; x.len()];
    for b in 0..n {
        for ch in 0..c {
            let mut s = 0.0;
            for (j, wj) in wk.iter().enumerate() {
                let src = ch as isize + j as isize - pad as isize;
                if src >= 0 && (src as usize) < c {
                    s += wj * p[b * c + src as usize];
                }
            }
            let g = sigmoid(s);
            for i in 0..h * w {
                let q = (b * c + ch) * h * w + i;
                y[q] = x[q] * g;
            }
        }
    }
    y
}

#[test]
fn eca_forward_matches_naive_loops() {
    for k in [3, 5] {
        let (n, c, h, w) = (2, 12, 4, 3);
        let m = Eca::new(k, &Init::new(k as u64)).unwrap();
        let xv = uniform(n * c * h * w, -2.0, 2.0, 21);
        let y = m.forward(&t(xv.clone(), &[n, c, h, w]), false).unwrap();
        let want = naive_eca(&f64s(&xv), (n, c, h, w), &f64s(&m.weight.to_vec()));
        assert_close(&format!("ECA k={k}"), &y.to_vec(), &want, 1e-5);
    }
}

#[test]
fn eca_names_and_parameter_count() {
    let m = Eca::new(3, &Init::new(0)).unwrap();
    assert_eq!(count_params(&m), 3);
    assert_eq!(
        names(&m),
        vec![named("conv.weight", &[1, 1, 3], Kind::Param)]
    );
    assert!(Eca::new(4, &Init::new(0)).is_err(), "even kernel");
}

#[test]
fn eca_gradients() {
    let (n, c, h, w, k) = (2, 10, 3, 4, 5);
    let inputs = vec![
        (uniform(n * c * h * w, -2.0, 2.0, 31), vec![n, c, h, w]),
        (uniform(k, -1.0, 1.0, 32), vec![1, 1, k]),
    ];
    gradcheck("ECA", &inputs, SMOOTH, |xs| {
        let mut m = Eca::new(k, &Init::new(0)).unwrap();
        m.weight = xs[1].clone();
        Ok(m.forward(&xs[0], false).unwrap())
    });
}

// ---------------------------------------------------------------------------------------------
// CoordAtt

/// CoordAtt's parameters, in visiting order, as f64.
struct CaParams {
    conv1_w: Vec<f64>,
    conv1_b: Vec<f64>,
    bn_w: Vec<f64>,
    bn_b: Vec<f64>,
    bn_mean: Vec<f64>,
    bn_var: Vec<f64>,
    h_w: Vec<f64>,
    h_b: Vec<f64>,
    w_w: Vec<f64>,
    w_b: Vec<f64>,
}

impl CaParams {
    fn of(m: &CoordAtt) -> CaParams {
        let v = |t: &Tensor| f64s(&t.to_vec());
        CaParams {
            conv1_w: v(&m.conv1.weight),
            conv1_b: v(m.conv1.bias.as_ref().unwrap()),
            bn_w: v(&m.bn1.weight),
            bn_b: v(&m.bn1.bias),
            bn_mean: v(&m.bn1.running_mean),
            bn_var: v(&m.bn1.running_var),
            h_w: v(&m.conv_h.weight),
            h_b: v(m.conv_h.bias.as_ref().unwrap()),
            w_w: v(&m.conv_w.weight),
            w_b: v(m.conv_w.bias.as_ref().unwrap()),
        }
    }
}

fn naive_coordatt(
    x: &[f64],
    d: (usize, usize, usize, usize),
    p: &CaParams,
    train: bool,
) -> Vec<f64> {
    let (n, c, h, w) = d;
    let mip = p.bn_w.len();
    let l = h + w;
    // z[b][ch][i]: i < h → mean over the row i (over W); i ≥ h → mean over the column i−h.
    let mut z = vec![0.0; n * c * l];
    for b in 0..n {
        for ch in 0..c {
            let at = |i: usize, j: usize| x[((b * c + ch) * h + i) * w + j];
            for i in 0..h {
                z[(b * c + ch) * l + i] = (0..w).map(|j| at(i, j)).sum::<f64>() / w as f64;
            }
            for j in 0..w {
                z[(b * c + ch) * l + h + j] = (0..h).map(|i| at(i, j)).sum::<f64>() / h as f64;
            }
        }
    }
    let (y, _) = conv(
        &z,
        (n, c, l, 1),
        &p.conv1_w,
        (mip, 1, 1),
        (0, 0),
        Some(&p.conv1_b),
    );
    let eps = 1e-3;
    let mut a = vec![0.0; y.len()];
    for m in 0..mip {
        let vals: Vec<f64> = (0..n)
            .flat_map(|b| (0..l).map(move |i| (b, i)))
            .map(|(b, i)| y[(b * mip + m) * l + i])
            .collect();
        let (mean, var) = if train {
            let mu = vals.iter().sum::<f64>() / vals.len() as f64;
            let var = vals.iter().map(|v| (v - mu).powi(2)).sum::<f64>() / vals.len() as f64;
            (mu, var)
        } else {
            (p.bn_mean[m], p.bn_var[m])
        };
        for b in 0..n {
            for i in 0..l {
                let q = (b * mip + m) * l + i;
                a[q] = hardswish((y[q] - mean) / (var + eps).sqrt() * p.bn_w[m] + p.bn_b[m]);
            }
        }
    }
    let mut out = vec![0.0; x.len()];
    for b in 0..n {
        for o in 0..c {
            let gate = |wt: &[f64], bias: &[f64], i: usize| -> f64 {
                sigmoid(
                    bias[o]
                        + (0..mip)
                            .map(|m| wt[o * mip + m] * a[(b * mip + m) * l + i])
                            .sum::<f64>(),
                )
            };
            let gh: Vec<f64> = (0..h).map(|i| gate(&p.h_w, &p.h_b, i)).collect();
            let gw: Vec<f64> = (0..w).map(|j| gate(&p.w_w, &p.w_b, h + j)).collect();
            for i in 0..h {
                for j in 0..w {
                    let q = ((b * c + o) * h + i) * w + j;
                    out[q] = x[q] * gw[j] * gh[i];
                }
            }
        }
    }
    out
}

#[test]
fn coordatt_forward_matches_naive_loops_in_train_and_eval() {
    let (n, c, h, w) = (2, 16, 5, 3);
    let m = CoordAtt::new(c, c, 4, &Init::new(3)).unwrap();
    // Non-trivial running statistics for eval mode.
    let mip = m.bn1.weight.numel();
    m.bn1
        .running_mean
        .assign(&t(uniform(mip, -0.3, 0.3, 40), &[mip]))
        .unwrap();
    m.bn1
        .running_var
        .assign(&t(uniform(mip, 0.5, 2.0, 41), &[mip]))
        .unwrap();
    m.bn1
        .weight
        .assign(&t(uniform(mip, 0.5, 1.5, 42), &[mip]))
        .unwrap();
    m.bn1
        .bias
        .assign(&t(uniform(mip, -0.5, 0.5, 43), &[mip]))
        .unwrap();
    let xv = uniform(n * c * h * w, -2.0, 2.0, 44);
    let x = t(xv.clone(), &[n, c, h, w]);
    let p = CaParams::of(&m);
    let y = m.forward(&x, false).unwrap();
    let want = naive_coordatt(&f64s(&xv), (n, c, h, w), &p, false);
    assert_close("CoordAtt eval", &y.to_vec(), &want, 1e-5);
    let y = m.forward(&x, true).unwrap();
    let want = naive_coordatt(&f64s(&xv), (n, c, h, w), &p, true);
    assert_close("CoordAtt train", &y.to_vec(), &want, 1e-5);
    // Training mode moved the running mean towards the batch mean (momentum 0.03).
    assert_ne!(m.bn1.running_mean.to_vec(), f64s_to_f32(&p.bn_mean));
}

fn f64s_to_f32(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&x| x as f32).collect()
}

#[test]
fn coordatt_names_and_parameter_count() {
    for (c, reduction) in [(64, 32), (512, 32)] {
        let m = CoordAtt::new(c, c, reduction, &Init::new(0)).unwrap();
        let mip = (c / reduction).max(8);
        let want = (c * mip + mip) + 2 * mip + 2 * (mip * c + c);
        assert_eq!(count_params(&m), want, "CoordAtt({c})");
        if c == 64 {
            assert_eq!(mip, 8);
            assert_eq!(want, 1688);
            assert_eq!(
                names(&m),
                vec![
                    named("conv1.weight", &[mip, c, 1, 1], Kind::Param),
                    named("conv1.bias", &[mip], Kind::Param),
                    named("bn1.weight", &[mip], Kind::Param),
                    named("bn1.bias", &[mip], Kind::Param),
                    named("bn1.running_mean", &[mip], Kind::Buffer),
                    named("bn1.running_var", &[mip], Kind::Buffer),
                    named("conv_h.weight", &[c, mip, 1, 1], Kind::Param),
                    named("conv_h.bias", &[c], Kind::Param),
                    named("conv_w.weight", &[c, mip, 1, 1], Kind::Param),
                    named("conv_w.bias", &[c], Kind::Param),
                ]
            );
        } else {
            assert_eq!(want, 25648);
        }
    }
}

#[test]
fn coordatt_gradients_train_and_eval() {
    let (n, c, h, w, red) = (2, 8, 3, 4, 4);
    let mip = 8;
    for train in [true, false] {
        let inputs = vec![
            (uniform(n * c * h * w, -2.0, 2.0, 51), vec![n, c, h, w]),
            (uniform(mip * c, -0.5, 0.5, 52), vec![mip, c, 1, 1]),
            (uniform(mip, -0.3, 0.3, 53), vec![mip]),
            (uniform(mip, 0.5, 1.5, 54), vec![mip]),
            (uniform(mip, -0.3, 0.3, 55), vec![mip]),
            (uniform(c * mip, -0.5, 0.5, 56), vec![c, mip, 1, 1]),
            (uniform(c, -0.3, 0.3, 57), vec![c]),
            (uniform(c * mip, -0.5, 0.5, 58), vec![c, mip, 1, 1]),
            (uniform(c, -0.3, 0.3, 59), vec![c]),
        ];
        let name = if train {
            "CoordAtt train"
        } else {
            "CoordAtt eval"
        };
        gradcheck(name, &inputs, SMOOTH, |xs| {
            let mut m = CoordAtt::new(c, c, red, &Init::new(0)).unwrap();
            m.conv1.weight = xs[1].clone();
            m.conv1.bias = Some(xs[2].clone());
            m.bn1.weight = xs[3].clone();
            m.bn1.bias = xs[4].clone();
            m.conv_h.weight = xs[5].clone();
            m.conv_h.bias = Some(xs[6].clone());
            m.conv_w.weight = xs[7].clone();
            m.conv_w.bias = Some(xs[8].clone());
            Ok(m.forward(&xs[0], train).unwrap())
        });
    }
}

// ---------------------------------------------------------------------------------------------
// SimAM

fn naive_simam(x: &[f64], (n, c, h, w): (usize, usize, usize, usize), lambda: f64) -> Vec<f64> {
    let hw = h * w;
    let nn = (hw - 1) as f64;
    let mut y = vec![0.0; x.len()];
    for p in 0..n * c {
        let s = &x[p * hw..(p + 1) * hw];
        let mu = s.iter().sum::<f64>() / hw as f64;
        let d: Vec<f64> = s.iter().map(|v| (v - mu).powi(2)).collect();
        let denom = 4.0 * (d.iter().sum::<f64>() / nn + lambda);
        for i in 0..hw {
            y[p * hw + i] = s[i] * sigmoid(d[i] / denom + 0.5);
        }
    }
    y
}

#[test]
fn simam_forward_matches_naive_loops() {
    let (n, c, h, w) = (2, 3, 4, 5);
    let xv = uniform(n * c * h * w, -2.0, 2.0, 61);
    for lambda in [1e-4, 0.5] {
        let m = SimAm { e_lambda: lambda };
        let y = m.forward(&t(xv.clone(), &[n, c, h, w]), false).unwrap();
        let want = naive_simam(&f64s(&xv), (n, c, h, w), lambda as f64);
        assert_close(&format!("SimAM λ={lambda}"), &y.to_vec(), &want, 1e-5);
    }
    assert_eq!(SimAm::default().e_lambda, 1e-4);
    assert_eq!(count_params(&SimAm::default()), 0);
    assert!(names(&SimAm::default()).is_empty());
    // A 1×1 map: n clamps to 1, so the output is x·σ(0.5) (the fork's 0/0 would be NaN).
    let y = SimAm::default()
        .forward(&t(vec![2.0, -1.0], &[1, 2, 1, 1]), false)
        .unwrap()
        .to_vec();
    assert_close("SimAM 1×1", &y, &[2.0 * sigmoid(0.5), -sigmoid(0.5)], 1e-6);
}

#[test]
fn simam_gradients() {
    let (n, c, h, w) = (2, 2, 3, 4);
    let inputs = vec![(uniform(n * c * h * w, -2.0, 2.0, 62), vec![n, c, h, w])];
    gradcheck("SimAM", &inputs, SMOOTH, |xs| {
        Ok(SimAm::default().forward(&xs[0], true).unwrap())
    });
}

// ---------------------------------------------------------------------------------------------
// space_to_depth

#[test]
fn space_to_depth_matches_the_fork_slicing_order() {
    let (n, c, h, w) = (2, 3, 4, 6);
    let xv = uniform(n * c * h * w, -1.0, 1.0, 71);
    let y = SpaceToDepth { dimension: 1 }
        .forward(&t(xv.clone(), &[n, c, h, w]), false)
        .unwrap();
    assert_eq!(y.shape(), &[n, 4 * c, h / 2, w / 2]);
    // torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
    let offsets = [(0, 0), (1, 0), (0, 1), (1, 1)];
    let mut want = Vec::new();
    for b in 0..n {
        for &(dr, dc) in &offsets {
            for ch in 0..c {
                for i in 0..h / 2 {
                    for j in 0..w / 2 {
                        want.push(xv[((b * c + ch) * h + 2 * i + dr) * w + 2 * j + dc] as f64);
                    }
                }
            }
        }
    }
    assert_close("space_to_depth", &y.to_vec(), &want, 0.0);
    assert_eq!(count_params(&SpaceToDepth { dimension: 1 }), 0);
    let odd = Tensor::zeros(&[1, 1, 3, 4], Device::Cpu).unwrap();
    assert!(SpaceToDepth { dimension: 1 }.forward(&odd, false).is_err());
}

#[test]
fn space_to_depth_gradients() {
    let inputs = vec![(uniform(2 * 2 * 4 * 4, -1.0, 1.0, 72), vec![2, 2, 4, 4])];
    gradcheck("space_to_depth", &inputs, SMOOTH, |xs| {
        Ok(SpaceToDepth { dimension: 1 }.forward(&xs[0], true).unwrap())
    });
}

// ---------------------------------------------------------------------------------------------
// BiFPN_Add2 / BiFPN_Add3

fn naive_bifpn(
    xs: &[Vec<f64>],
    (n, c1, h, w): (usize, usize, usize, usize),
    wts: &[f64],
    cw: &[f64],
    cb: &[f64],
) -> Vec<f64> {
    let total: f64 = wts.iter().sum::<f64>() + 1e-4;
    let s: Vec<f64> = (0..xs[0].len())
        .map(|q| silu(xs.iter().zip(wts).map(|(x, wi)| wi / total * x[q]).sum()))
        .collect();
    let c2 = cb.len();
    conv(&s, (n, c1, h, w), cw, (c2, 1, 1), (0, 0), Some(cb)).0
}

#[test]
fn bifpn_add_forward_matches_naive_loops() {
    for inputs in [2, 3] {
        let (n, c1, c2, h, w) = (2, 6, 5, 3, 4);
        let m = BiFpnAdd::new(inputs, c1, c2, &Init::new(inputs as u64)).unwrap();
        assert_eq!(m.w.to_vec(), vec![1.0; inputs], "w starts at ones");
        // Trained-looking weights, one negative (used as is, no ReLU, as the forks).
        let wv = [0.7f32, 1.9, -0.2][..inputs].to_vec();
        m.w.assign(&t(wv.clone(), &[inputs])).unwrap();
        let xv: Vec<Vec<f32>> = (0..inputs)
            .map(|i| uniform(n * c1 * h * w, -2.0, 2.0, 80 + i as u64))
            .collect();
        let xs: Vec<Tensor> = xv.iter().map(|v| t(v.clone(), &[n, c1, h, w])).collect();
        let y = m.run(&xs, false).unwrap();
        assert_eq!(y.shape(), &[n, c2, h, w]);
        let want = naive_bifpn(
            &xv.iter().map(|v| f64s(v)).collect::<Vec<_>>(),
            (n, c1, h, w),
            &f64s(&wv),
            &f64s(&m.conv.weight.to_vec()),
            &f64s(&m.conv.bias.as_ref().unwrap().to_vec()),
        );
        assert_close(&format!("BiFPN_Add{inputs}"), &y.to_vec(), &want, 1e-5);
        assert!(m.run(&xs[..1], false).is_err(), "too few inputs");
    }
}

#[test]
fn bifpn_add_names_and_parameter_count() {
    for inputs in [2, 3] {
        let (c1, c2) = (256, 256);
        let m = BiFpnAdd::new(inputs, c1, c2, &Init::new(0)).unwrap();
        assert_eq!(count_params(&m), inputs + c1 * c2 + c2);
        assert_eq!(
            names(&m),
            vec![
                named("w", &[inputs], Kind::Param),
                named("conv.weight", &[c2, c1, 1, 1], Kind::Param),
                named("conv.bias", &[c2], Kind::Param),
            ]
        );
    }
    assert_eq!(
        count_params(&BiFpnAdd::new(2, 128, 128, &Init::new(0)).unwrap()),
        16514
    );
    let m = BiFpnAdd::new(2, 4, 4, &Init::new(0)).unwrap();
    let a = Tensor::zeros(&[1, 4, 2, 2], Device::Cpu).unwrap();
    let b = Tensor::zeros(&[1, 4, 4, 4], Device::Cpu).unwrap();
    assert!(m.run(&[a, b], false).is_err(), "shapes must match");
}

#[test]
fn bifpn_add_gradients() {
    for inputs in [2, 3] {
        let (n, c1, c2, h, w) = (2, 4, 3, 3, 3);
        let mut data: Vec<(Vec<f32>, Vec<usize>)> = (0..inputs)
            .map(|i| {
                (
                    uniform(n * c1 * h * w, -2.0, 2.0, 90 + i as u64),
                    vec![n, c1, h, w],
                )
            })
            .collect();
        data.push((uniform(inputs, 0.5, 1.5, 95), vec![inputs]));
        data.push((uniform(c2 * c1, -0.5, 0.5, 96), vec![c2, c1, 1, 1]));
        data.push((uniform(c2, -0.5, 0.5, 97), vec![c2]));
        gradcheck(&format!("BiFPN_Add{inputs}"), &data, SMOOTH, |xs| {
            let mut m = BiFpnAdd::new(inputs, c1, c2, &Init::new(0)).unwrap();
            m.w = xs[inputs].clone();
            m.conv.weight = xs[inputs + 1].clone();
            m.conv.bias = Some(xs[inputs + 2].clone());
            Ok(m.run(&xs[..inputs], true).unwrap())
        });
    }
}

// ---------------------------------------------------------------------------------------------
// FLOPs (thop's rules: conv/linear MACs, adaptive average pooling (window + 1) per output,
// batch norm 4 per element; max, mean-over-channels, activations and products free).

#[test]
fn flops_follow_thop_rules() {
    let (n, c, h, w) = (2, 32, 6, 4);
    let x = Tensor::zeros(&[n, c, h, w], Device::Cpu).unwrap();
    let init = Init::new(0);
    let pool = ((h * w + 1) * n * c) as f64;

    let hidden = c / 4;
    let se = Se::new(c, 4, &init).unwrap();
    assert_eq!(forward_flops(&se, &x), pool + (2 * n * c * hidden) as f64);

    let k = 7;
    let cbam = Cbam::new(c, 4, k, &init).unwrap();
    let mlp = (2 * 2 * n * c * hidden) as f64; // f1 and f2, on the avg and the max branch
    let spatial = (n * h * w * 2 * k * k) as f64;
    assert_eq!(forward_flops(&cbam, &x), pool + mlp + spatial);

    let eca = Eca::new(3, &init).unwrap();
    assert_eq!(forward_flops(&eca, &x), pool + (n * c * 3) as f64);

    let ca = CoordAtt::new(c, c, 32, &init).unwrap();
    let mip = 8;
    let want = ((w + 1) * n * c * h + (h + 1) * n * c * w) as f64 // pool_h, pool_w
        + (n * mip * (h + w) * c) as f64 // conv1
        + (4 * n * mip * (h + w)) as f64 // bn1
        + (n * c * h * mip + n * c * w * mip) as f64; // conv_h, conv_w
    assert_eq!(forward_flops(&ca, &x), want);

    assert_eq!(forward_flops(&SimAm::default(), &x), 0.0);
    assert_eq!(forward_flops(&SpaceToDepth { dimension: 1 }, &x), 0.0);

    let bi = BiFpnAdd::new(2, c, c, &init).unwrap();
    let (r, macs) = flops::count(|| bi.run(&[x.clone(), x.clone()], false));
    r.unwrap();
    assert_eq!(macs, (n * c * h * w * c) as f64);
}
