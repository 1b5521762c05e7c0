//! Forward values: the pointwise activations at known points and against f64 closed forms,
//! and the channel-aware layers against plain-loop f64 references.

mod common;
use common::*;
use yolo_activations::{Activation, ActivationLayer};
use yolo_tensor::Tensor;

fn act(name: &str) -> Box<dyn ActivationLayer> {
    name.parse::<Activation>().unwrap().build(1, 0).unwrap()
}

fn at(name: &str, xs: &[f32]) -> Vec<f32> {
    act(name)
        .forward(&t(xs.to_vec(), &[xs.len()]), false)
        .unwrap()
        .to_vec()
}

/// erf by its Maclaurin series (|x| ≤ 4: the terms' cancellation loses < 1e-9).
fn erf64(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..200 {
        term *= -x * x / n as f64;
        let add = term / (2 * n + 1) as f64;
        sum += add;
        if add.abs() < 1e-17 {
            break;
        }
    }
    sum * 2.0 / std::f64::consts::PI.sqrt()
}

fn sigmoid64(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// The closed form of each pointwise activation, in f64.
fn reference(a: Activation, x: f64) -> f64 {
    use Activation::*;
    match a {
        Silu => x * sigmoid64(x),
        Gelu => 0.5 * x * (1.0 + erf64(x / 2f64.sqrt())),
        GeluTanh => {
            0.5 * x
                * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
        }
        Relu => x.max(0.0),
        Relu6 => x.clamp(0.0, 6.0),
        LeakyRelu(s) => {
            if x > 0.0 {
                x
            } else {
                s as f64 * x
            }
        }
        Elu(al) => {
            if x > 0.0 {
                x
            } else {
                al as f64 * (x.exp() - 1.0)
            }
        }
        Hardswish => x * (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Hardsigmoid => (x + 3.0).clamp(0.0, 6.0) / 6.0,
        Mish => x * x.exp().ln_1p().tanh(),
        Sigmoid => sigmoid64(x),
        Tanh => x.tanh(),
        Identity => x,
        FRelu | AconC | MetaAconC { .. } => unreachable!("not pointwise"),
    }
}

#[test]
fn known_points() {
    // Expected values in f64: the 7-digit constants are compared as written.
    let cases: &[(&str, f32, f64)] = &[
        ("nn.GELU()", 1.0, 0.841_344_7),
        ("nn.GELU(approximate='tanh')", 1.0, 0.841_192_0),
        ("nn.SiLU()", 1.0, 0.731_058_6),
        ("nn.Mish()", 1.0, 0.865_098_4),
        ("nn.GELU()", -1.0, -0.158_655_25),
        ("gelu_tanh", -1.0, -0.158_808),
        ("silu", -2.0, -0.238_405_84),
        ("mish", -1.0, -0.303_401_5),
        ("nn.Hardswish()", 1.0, 2.0 / 3.0),
        ("nn.Hardswish()", -4.0, 0.0),
        ("nn.Hardswish()", 4.0, 4.0),
        ("nn.Hardsigmoid()", 1.0, 2.0 / 3.0),
        ("nn.ReLU()", -0.5, 0.0),
        ("nn.ReLU6()", 7.0, 6.0),
        ("nn.ReLU6()", 2.5, 2.5),
        ("nn.LeakyReLU(0.1)", -2.0, -0.2),
        ("nn.LeakyReLU(0.1)", 2.0, 2.0),
        ("nn.ELU()", -1.0, -0.632_120_56),
        ("nn.ELU(alpha=0.5)", -1.0, -0.316_060_28),
        ("nn.Sigmoid()", 0.5, 0.622_459_3),
        ("nn.Tanh()", 0.5, 0.462_117_16),
        ("nn.Identity()", 3.5, 3.5),
    ];
    for &(name, x, want) in cases {
        let got = at(name, &[x])[0] as f64;
        assert!(
            (got - want).abs() <= 1e-6,
            "{name} at {x}: got {got:.8}, expected {want:.8}"
        );
    }
}

#[test]
fn pointwise_match_closed_forms_on_a_grid() {
    // Off the kinks (0, ±3, 6) by 0.05 so piecewise forms are compared away from ties.
    let xs: Vec<f32> = (0..=40).map(|k| -5.05 + 0.25 * k as f32).collect();
    for a in Activation::all().into_iter().filter(|a| a.is_pointwise()) {
        let got = at(&a.to_string(), &xs);
        let want: Vec<f64> = xs.iter().map(|&x| reference(a, x as f64)).collect();
        // 1e-6 absolute, plus 2 f32 ulps of the value for the outputs above 1.
        assert_close(&a.to_string(), &got, &want, 1e-6, 2.4e-7);
    }
}

#[test]
fn pointwise_derivatives_match_closed_forms() {
    let xs: Vec<f32> = (0..=40).map(|k| -5.05 + 0.25 * k as f32).collect();
    for a in Activation::all().into_iter().filter(|a| a.is_pointwise()) {
        let layer = a.build(1, 0).unwrap();
        let x = t(xs.clone(), &[xs.len()]).with_grad();
        layer
            .forward(&x, true)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let got = x.grad().unwrap().to_vec();
        let h = 1e-6;
        let want: Vec<f64> = xs
            .iter()
            .map(|&x| (reference(a, x as f64 + h) - reference(a, x as f64 - h)) / (2.0 * h))
            .collect();
        assert_close(&format!("d {a}"), &got, &want, 2e-6, 2e-6);
    }
}

#[test]
fn pointwise_keeps_shape_and_identity_is_free() {
    let x = t(uniform(2 * 3 * 4 * 5, -3.0, 3.0, 9), &[2, 3, 4, 5]);
    for a in Activation::all().into_iter().filter(|a| a.is_pointwise()) {
        let y = a.build(3, 0).unwrap().forward(&x, false).unwrap();
        assert_eq!(y.shape(), x.shape(), "{a}");
    }
    let y = Activation::Identity
        .build(3, 0)
        .unwrap()
        .forward(&x, true)
        .unwrap();
    assert!(y.same_storage(&x), "Identity should return its input");
}

fn param(layer: &dyn ActivationLayer, name: &str) -> Vec<f32> {
    layer
        .named_parameters()
        .into_iter()
        .chain(layer.named_buffers())
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no tensor named {name}"))
        .1
        .to_vec()
}

/// Depthwise 3×3 conv (padding 1) of an N×C×H×W buffer, in f64.
fn dwconv3(x: &[f32], w: &[f32], (n, c, h, wd): (usize, usize, usize, usize)) -> Vec<f64> {
    let mut out = vec![0f64; x.len()];
    for b in 0..n {
        for ch in 0..c {
            for i in 0..h {
                for j in 0..wd {
                    let mut s = 0f64;
                    for di in 0..3 {
                        for dj in 0..3 {
                            let (ii, jj) =
                                (i as isize + di as isize - 1, j as isize + dj as isize - 1);
                            if ii < 0 || jj < 0 || ii >= h as isize || jj >= wd as isize {
                                continue;
                            }
                            let xv = x[((b * c + ch) * h + ii as usize) * wd + jj as usize];
                            s += xv as f64 * w[ch * 9 + di * 3 + dj] as f64;
                        }
                    }
                    out[((b * c + ch) * h + i) * wd + j] = s;
                }
            }
        }
    }
    out
}

#[test]
fn frelu_matches_reference_in_train_and_eval() {
    let dims = (2, 3, 5, 4);
    let (n, c, h, w) = dims;
    let x = uniform(n * c * h * w, -2.0, 2.0, 21);
    let mut layer = Activation::FRelu.build(c, 7).unwrap();
    layer.set_batch_norm(1e-3, 0.03);
    // Non-trivial BN affine parameters.
    for (name, p) in layer.named_parameters() {
        if name.starts_with("bn.") {
            p.assign(&t(uniform(c, 0.5, 1.5, 22), &[c])).unwrap();
        }
    }
    let wt = param(&*layer, "conv.weight");
    let (gamma, beta) = (param(&*layer, "bn.weight"), param(&*layer, "bn.bias"));
    let z = dwconv3(&x, &wt, dims);
    let hw = h * w;
    let idx = |b: usize, ch: usize, k: usize| (b * c + ch) * hw + k;

    // Train: batch statistics (biased variance), running stats updated with momentum 0.03.
    let y = layer
        .forward(&t(x.clone(), &[n, c, h, w]), true)
        .unwrap()
        .to_vec();
    let mut want = vec![0f64; x.len()];
    let (mut want_rm, mut want_rv) = (vec![0f64; c], vec![0f64; c]);
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|b| (0..hw).map(move |k| (b, k)))
            .map(|(b, k)| z[idx(b, ch, k)])
            .collect();
        let m = vals.len() as f64;
        let mean = vals.iter().sum::<f64>() / m;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / m;
        for b in 0..n {
            for k in 0..hw {
                let bn = (z[idx(b, ch, k)] - mean) / (var + 1e-3).sqrt() * gamma[ch] as f64
                    + beta[ch] as f64;
                want[idx(b, ch, k)] = (x[idx(b, ch, k)] as f64).max(bn);
            }
        }
        want_rm[ch] = 0.03 * mean;
        want_rv[ch] = 0.97 + 0.03 * var * m / (m - 1.0);
    }
    assert_close("FReLU train", &y, &want, 1e-5, 1e-5);
    assert_close(
        "running_mean",
        &param(&*layer, "bn.running_mean"),
        &want_rm,
        1e-6,
        1e-5,
    );
    assert_close(
        "running_var",
        &param(&*layer, "bn.running_var"),
        &want_rv,
        1e-6,
        1e-5,
    );

    // Eval: running statistics.
    let (rm, rv) = (
        param(&*layer, "bn.running_mean"),
        param(&*layer, "bn.running_var"),
    );
    let y = layer
        .forward(&t(x.clone(), &[n, c, h, w]), false)
        .unwrap()
        .to_vec();
    for b in 0..n {
        for ch in 0..c {
            for k in 0..hw {
                let bn = (z[idx(b, ch, k)] - rm[ch] as f64) / (rv[ch] as f64 + 1e-3).sqrt()
                    * gamma[ch] as f64
                    + beta[ch] as f64;
                want[idx(b, ch, k)] = (x[idx(b, ch, k)] as f64).max(bn);
            }
        }
    }
    assert_close("FReLU eval", &y, &want, 1e-5, 1e-5);
    // Eval leaves the running statistics alone.
    assert_eq!(param(&*layer, "bn.running_mean"), rm);
}

/// ACON-C in f64 with per-(sample, channel) β.
fn acon_ref(
    x: &[f32],
    p1: &[f32],
    p2: &[f32],
    beta: &[f64],
    (n, c, hw): (usize, usize, usize),
) -> Vec<f64> {
    let mut out = vec![0f64; x.len()];
    for b in 0..n {
        for ch in 0..c {
            let (a, p2v) = (p1[ch] as f64 - p2[ch] as f64, p2[ch] as f64);
            let bt = beta[b * c + ch];
            for k in 0..hw {
                let i = (b * c + ch) * hw + k;
                let xv = x[i] as f64;
                let dpx = a * xv;
                out[i] = dpx * sigmoid64(bt * dpx) + p2v * xv;
            }
        }
    }
    out
}

#[test]
fn aconc_matches_reference() {
    let (n, c, h, w) = (2, 5, 3, 4);
    let x = uniform(n * c * h * w, -3.0, 3.0, 31);
    let layer = Activation::AconC.build(c, 11).unwrap();
    // Non-trivial β.
    let beta_t = &layer.named_parameters()[2];
    assert_eq!(beta_t.0, "beta");
    assert_eq!(beta_t.1.to_vec(), vec![1.0; c], "beta starts at ones");
    beta_t
        .1
        .assign(&t(uniform(c, 0.2, 2.0, 32), &[1, c, 1, 1]))
        .unwrap();
    let (p1, p2, beta) = (
        param(&*layer, "p1"),
        param(&*layer, "p2"),
        param(&*layer, "beta"),
    );
    let beta_nc: Vec<f64> = (0..n * c).map(|i| beta[i % c] as f64).collect();
    let y = layer
        .forward(&t(x.clone(), &[n, c, h, w]), true)
        .unwrap()
        .to_vec();
    assert_close(
        "AconC",
        &y,
        &acon_ref(&x, &p1, &p2, &beta_nc, (n, c, h * w)),
        1e-5,
        1e-5,
    );
}

#[test]
fn meta_aconc_matches_reference_at_batch_1_and_3() {
    for n in [1usize, 3] {
        let (c, h, w) = (40, 3, 5);
        let layer: Box<dyn ActivationLayer> = "MetaAconC(c1, 1, 1, 4)"
            .parse::<Activation>()
            .unwrap()
            .build(c, 5)
            .unwrap();
        let c2 = 10; // max(r, c / r) = max(4, 10)
        let x = uniform(n * c * h * w, -3.0, 3.0, 40 + n as u64);
        let (p1, p2) = (param(&*layer, "p1"), param(&*layer, "p2"));
        let (w1, b1) = (param(&*layer, "fc1.weight"), param(&*layer, "fc1.bias"));
        let (w2, b2) = (param(&*layer, "fc2.weight"), param(&*layer, "fc2.bias"));
        assert_eq!(
            (w1.len(), b1.len(), w2.len(), b2.len()),
            (c2 * c, c2, c * c2, c)
        );
        let mut beta = vec![0f64; n * c];
        for b in 0..n {
            let y: Vec<f64> = (0..c)
                .map(|ch| {
                    x[(b * c + ch) * h * w..][..h * w]
                        .iter()
                        .map(|&v| v as f64)
                        .sum::<f64>()
                        / (h * w) as f64
                })
                .collect();
            let hid: Vec<f64> = (0..c2)
                .map(|o| b1[o] as f64 + (0..c).map(|i| w1[o * c + i] as f64 * y[i]).sum::<f64>())
                .collect();
            for o in 0..c {
                let v = b2[o] as f64 + (0..c2).map(|i| w2[o * c2 + i] as f64 * hid[i]).sum::<f64>();
                beta[b * c + o] = sigmoid64(v);
            }
        }
        // Train and eval agree: no batch statistics anywhere.
        for train in [true, false] {
            let out = layer.forward(&t(x.clone(), &[n, c, h, w]), train).unwrap();
            assert_eq!(out.shape(), &[n, c, h, w]);
            assert_close(
                &format!("MetaAconC n={n} train={train}"),
                &out.to_vec(),
                &acon_ref(&x, &p1, &p2, &beta, (n, c, h * w)),
                1e-5,
                1e-5,
            );
        }
    }
}

#[test]
fn channel_aware_layers_reject_wrong_inputs() {
    for a in Activation::all().into_iter().filter(|a| a.has_parameters()) {
        let layer = a.build(4, 0).unwrap();
        for shape in [vec![1usize, 3, 4, 4], vec![4, 4, 4], vec![1, 4, 4, 4, 1]] {
            let x = Tensor::zeros(&shape, yolo_tensor::Device::Cpu).unwrap();
            let err = layer.forward(&x, false).unwrap_err().to_string();
            assert!(err.contains("4 channels"), "{a} on {shape:?}: {err}");
        }
        assert!(a.build(0, 0).is_err(), "{a}: 0 channels must be an error");
    }
    // Train-mode batch norm needs more than one value per channel: an error, not a panic.
    let frelu = Activation::FRelu.build(2, 0).unwrap();
    let one = Tensor::ones(&[1, 2, 1, 1], yolo_tensor::Device::Cpu).unwrap();
    assert!(frelu.forward(&one, true).is_err());
    assert!(frelu.forward(&one, false).is_ok());
}
