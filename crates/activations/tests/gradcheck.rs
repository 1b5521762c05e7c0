//! Central finite-difference gradient checks of every activation w.r.t. its input and every
//! learnable parameter, at batch 1 and 2, on channel counts that are not a multiple of 8.

mod common;
use common::*;
use yolo_activations::{Activation, ActivationLayer};
use yolo_tensor::{Conv2dParams, Tensor};

/// Smooth pointwise activations.
const SMOOTH_ACTS: &[&str] = &[
    "nn.SiLU()",
    "nn.GELU()",
    "nn.GELU(approximate='tanh')",
    "nn.Mish()",
    "nn.Sigmoid()",
    "nn.Tanh()",
    "nn.Identity()",
];
/// Pointwise activations with kinks (at 0, ±3 or 6).
const PIECEWISE_ACTS: &[&str] = &[
    "nn.ReLU()",
    "nn.ReLU6()",
    "nn.LeakyReLU(0.1)",
    "nn.ELU()",
    "nn.ELU(alpha=0.5)",
    "nn.Hardswish()",
    "nn.Hardsigmoid()",
];

#[test]
fn every_activation_is_covered() {
    let listed: Vec<Activation> = SMOOTH_ACTS
        .iter()
        .chain(PIECEWISE_ACTS)
        .map(|s| s.parse().unwrap())
        .collect();
    for a in Activation::all() {
        let covered = listed
            .iter()
            .any(|l| std::mem::discriminant(l) == std::mem::discriminant(&a))
            || a.has_parameters();
        assert!(covered, "{a} has no gradient check");
    }
}

#[test]
fn pointwise_smooth() {
    let shape = [2usize, 3, 5, 7];
    let x = uniform(210, -4.0, 4.0, 1);
    for name in SMOOTH_ACTS {
        let layer = name.parse::<Activation>().unwrap().build(3, 0).unwrap();
        let n = gradcheck_layer(name, &*layer, &x, &shape, true, SMOOTH);
        assert!(n >= 48, "{name}: only {n} values checked");
    }
}

#[test]
fn pointwise_piecewise() {
    let shape = [1usize, 3, 5, 7];
    // 0.1 apart, 0.005 off every kink (0, ±3, 6), over [-5.2, 5.2]; eps 2e-3 never crosses one.
    let x: Vec<f32> = distinct(105, 0.01, 3)
        .iter()
        .map(|v| v * 10.0 + 0.005)
        .collect();
    // ReLU6's kink at 6 needs values above it too.
    let x6: Vec<f32> = x.iter().map(|v| v + 2.0).collect();
    for name in PIECEWISE_ACTS {
        let layer = name.parse::<Activation>().unwrap().build(3, 0).unwrap();
        gradcheck_layer(name, &*layer, &x, &shape, true, PIECEWISE);
        gradcheck_layer(name, &*layer, &x6, &shape, true, PIECEWISE);
    }
}

#[test]
fn aconc_input_and_p1_p2_beta() {
    for (n, c) in [(1usize, 3usize), (2, 5)] {
        let shape = [n, c, 4, 3];
        let layer = Activation::AconC.build(c, 3).unwrap();
        // Move β off its initial ones so the check sees a general point.
        layer.named_parameters()[2]
            .1
            .assign(&t(uniform(c, 0.3, 2.0, 4), &[1, c, 1, 1]))
            .unwrap();
        let x = uniform(n * c * 12, -3.0, 3.0, 5);
        let checked = gradcheck_layer("AconC", &*layer, &x, &shape, true, SMOOTH);
        assert!(checked >= 48.min(x.len()) + 3 * c, "checked {checked}");
    }
}

#[test]
fn meta_aconc_input_p1_p2_fc1_fc2_at_batch_1_and_2() {
    // c = 6 → hidden max(16, 0) = 16; c = 40, r = 4 → hidden max(4, 10) = 10.
    for (n, c, spec) in [
        (1usize, 6usize, "MetaAconC"),
        (2, 6, "MetaAconC"),
        (1, 40, "MetaAconC(r=4)"),
    ] {
        let layer = spec.parse::<Activation>().unwrap().build(c, 9).unwrap();
        let names: Vec<String> = layer
            .named_parameters()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(
            names,
            [
                "p1",
                "p2",
                "fc1.weight",
                "fc1.bias",
                "fc2.weight",
                "fc2.bias"
            ]
        );
        let shape = [n, c, 3, 4];
        let x = uniform(n * c * 12, -3.0, 3.0, 10 + n as u64);
        // A perturbation of fc1/fc2 moves β and so every output: the f32 rounding of the
        // forward pass (~1e-6 on the loss) needs a wider step than SMOOTH's to stay small.
        let tol = Tol {
            eps: 5e-2,
            ..SMOOTH
        };
        gradcheck_layer(
            &format!("{spec} n={n} c={c}"),
            &*layer,
            &x,
            &shape,
            true,
            tol,
        );
    }
}

/// The smallest `|x − bn(conv(x))|` FReLU sees: finite differences must not cross a tie.
fn frelu_margin(layer: &dyn ActivationLayer, x: &[f32], shape: &[usize], train: bool) -> f32 {
    let _g = yolo_tensor::no_grad();
    let p: std::collections::HashMap<String, Tensor> = layer
        .named_parameters()
        .into_iter()
        .chain(layer.named_buffers())
        .collect();
    let c = shape[1];
    let xt = t(x.to_vec(), shape);
    let z = xt
        .conv2d(
            &p["conv.weight"],
            None,
            Conv2dParams::new(1, 1).with_groups(c),
        )
        .unwrap();
    let z = if train {
        // Copies of the running statistics: this probe must not update the layer's.
        let (rm, rv) = (p["bn.running_mean"].detach(), p["bn.running_var"].detach());
        let (rm, rv) = (t(rm.to_vec(), &[c]), t(rv.to_vec(), &[c]));
        z.batch_norm2d_train(&p["bn.weight"], &p["bn.bias"], &rm, &rv, 0.1, 1e-5)
    } else {
        z.batch_norm2d_eval(
            &p["bn.weight"],
            &p["bn.bias"],
            &p["bn.running_mean"],
            &p["bn.running_var"],
            1e-5,
        )
    }
    .unwrap();
    x.iter()
        .zip(z.to_vec())
        .map(|(a, b)| (a - b).abs())
        .fold(f32::INFINITY, f32::min)
}

#[test]
fn frelu_input_conv_and_bn_in_train_and_eval() {
    // BN in train mode couples every value of a channel, so a perturbation moves all outputs:
    // a looser tolerance for the f32 noise, and inputs chosen (deterministically) so that no
    // output sits within 0.05 of the max's tie.
    let tol = Tol {
        eps: 2e-3,
        atol: 1e-3,
        rtol: 1e-2,
        samples: 48,
    };
    for (train, n, c) in [(true, 2usize, 3usize), (true, 1, 5), (false, 1, 3)] {
        let shape = [n, c, 4, 4];
        let layer = Activation::FRelu.build(c, 17).unwrap();
        let params = layer.named_parameters();
        // Non-trivial BN affine parameters and, for eval, running statistics.
        params[1]
            .1
            .assign(&t(uniform(c, 0.5, 1.5, 1), &[c]))
            .unwrap();
        params[2]
            .1
            .assign(&t(uniform(c, -0.5, 0.5, 2), &[c]))
            .unwrap();
        let bufs = layer.named_buffers();
        bufs[0]
            .1
            .assign(&t(uniform(c, -0.2, 0.2, 3), &[c]))
            .unwrap();
        bufs[1]
            .1
            .assign(&t(uniform(c, 0.05, 0.3, 4), &[c]))
            .unwrap();
        let x = (0..2000u64)
            .map(|seed| uniform(n * c * 16, -2.0, 2.0, 100 + seed))
            .find(|x| frelu_margin(&*layer, x, &shape, train) > 0.05)
            .expect("an input with no near-tie");
        let name = format!("FReLU train={train} n={n} c={c}");
        let checked = gradcheck_layer(&name, &*layer, &x, &shape, train, tol);
        assert!(checked >= 48 + 9 * c + 2 * c, "{name}: checked {checked}");
    }
}
