//! Central finite-difference gradient checks for every differentiable op, on awkward shapes
//! (batch 1 and 3, channel counts not a multiple of 8, odd sizes, stride 2, groups, padding).

mod common;
use common::*;
use yolo_tensor::{Conv2dParams, Pool2dParams, Tensor, UnaryOp};

fn inp(data: Vec<f32>, shape: &[usize]) -> (Vec<f32>, Vec<usize>) {
    (data, shape.to_vec())
}

#[test]
fn unary_ops() {
    let shape = [3usize, 5, 7];
    let n = 105;
    let smooth = [
        UnaryOp::Neg,
        UnaryOp::Exp,
        UnaryOp::Tanh,
        UnaryOp::Sigmoid,
        UnaryOp::Erf,
        UnaryOp::Softplus,
        UnaryOp::Sqr,
        UnaryOp::Affine(1.7, -0.3),
        UnaryOp::Silu,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Mish,
        UnaryOp::Atan,
    ];
    for op in smooth {
        gradcheck(
            op.name(),
            &[inp(uniform(n, -3.0, 3.0, 1), &shape)],
            SMOOTH,
            |x| Ok(x[0].unary(op)),
        );
    }
    // Positive domains.
    for op in [
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Recip,
        UnaryOp::Powf(2.5),
        UnaryOp::Powf(-0.7),
    ] {
        gradcheck(
            op.name(),
            &[inp(uniform(n, 0.5, 3.0, 2), &shape)],
            SMOOTH,
            |x| Ok(x[0].unary(op)),
        );
    }
    // Piecewise ops: distinct inputs (gap 0.01) spread over [-0.5, 0.5] scaled to reach kinks' sides.
    let pw: Vec<f32> = distinct(n, 0.01, 3)
        .iter()
        .map(|v| v * 10.0 + 0.005)
        .collect(); // [-5.2, 5.2], off the grid of kinks
    for op in [
        UnaryOp::Abs,
        UnaryOp::Relu,
        UnaryOp::Relu6,
        UnaryOp::LeakyRelu(0.1),
        UnaryOp::Elu(1.0),
        UnaryOp::Hardswish,
        UnaryOp::Hardsigmoid,
        UnaryOp::Clamp(-1.5, 2.5),
    ] {
        gradcheck(op.name(), &[inp(pw.clone(), &shape)], PIECEWISE, |x| {
            Ok(x[0].unary(op))
        });
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    let a = || inp(uniform(3 * 4 * 5, -2.0, 2.0, 10), &[3, 4, 5]);
    let b_row = || inp(uniform(4, -2.0, 2.0, 11), &[4, 1]);
    gradcheck("add", &[a(), b_row()], SMOOTH, |x| x[0].add(&x[1]));
    gradcheck("sub", &[b_row(), a()], SMOOTH, |x| x[0].sub(&x[1]));
    gradcheck(
        "mul",
        &[a(), inp(uniform(5, -2.0, 2.0, 12), &[5])],
        SMOOTH,
        |x| x[0].mul(&x[1]),
    );
    gradcheck(
        "div",
        &[a(), inp(uniform(4, 0.5, 2.0, 13), &[4, 1])],
        SMOOTH,
        |x| x[0].div(&x[1]),
    );
    gradcheck(
        "pow",
        &[
            inp(uniform(60, 0.5, 2.0, 14), &[3, 4, 5]),
            inp(uniform(5, -1.5, 2.0, 15), &[1, 1, 5]),
        ],
        SMOOTH,
        |x| x[0].pow(&x[1]),
    );
    // NCHW × per-channel scale, the Detect/BN pattern.
    gradcheck(
        "mul_nchw_c",
        &[
            inp(uniform(2 * 3 * 5 * 5, -1.0, 1.0, 16), &[2, 3, 5, 5]),
            inp(uniform(3, -1.0, 1.0, 17), &[1, 3, 1, 1]),
        ],
        SMOOTH,
        |x| x[0].mul(&x[1]),
    );
    let d = distinct(120, 0.01, 18);
    gradcheck(
        "maximum",
        &[
            inp(d[..60].to_vec(), &[3, 4, 5]),
            inp(d[60..80].to_vec(), &[4, 5]),
        ],
        PIECEWISE,
        |x| x[0].maximum(&x[1]),
    );
    gradcheck(
        "minimum",
        &[
            inp(d[..60].to_vec(), &[3, 4, 5]),
            inp(d[80..100].to_vec(), &[4, 5]),
        ],
        PIECEWISE,
        |x| x[0].minimum(&x[1]),
    );
    gradcheck("scalar_ops", &[a()], SMOOTH, |x| {
        Ok(x[0].add_scalar(2.0).mul_scalar(-0.5))
    });
}

#[test]
fn where_and_broadcast() {
    let cond = t(
        (0..20).map(|i| (i % 3 == 0) as u8 as f32).collect(),
        &[4, 5],
    );
    gradcheck(
        "where_cond",
        &[
            inp(uniform(60, -1.0, 1.0, 20), &[3, 4, 5]),
            inp(uniform(5, -1.0, 1.0, 21), &[5]),
        ],
        SMOOTH,
        |x| Tensor::where_cond(&cond, &x[0], &x[1]),
    );
    gradcheck(
        "broadcast_as",
        &[inp(uniform(6, -1.0, 1.0, 22), &[2, 1, 3])],
        SMOOTH,
        |x| x[0].broadcast_as(&[4, 2, 5, 3]),
    );
}

#[test]
fn reductions() {
    let x = || inp(uniform(3 * 4 * 5 * 2, -1.0, 1.0, 30), &[3, 4, 5, 2]);
    for (axes, keep) in [
        (vec![0isize], true),
        (vec![1, 3], false),
        (vec![-1], false),
        (vec![0, 2, 3], true),
    ] {
        gradcheck("sum", &[x()], SMOOTH, |t| t[0].sum(&axes, keep));
        gradcheck("mean", &[x()], SMOOTH, |t| t[0].mean(&axes, keep));
    }
    let d = || inp(distinct(120, 0.01, 31), &[3, 4, 5, 2]);
    for (axes, keep) in [(vec![1isize], true), (vec![0, 2], false), (vec![3], false)] {
        gradcheck("max", &[d()], PIECEWISE, |t| t[0].max(&axes, keep));
        gradcheck("min", &[d()], PIECEWISE, |t| t[0].min(&axes, keep));
    }
    gradcheck("sum_all", &[x()], SMOOTH, |t| t[0].sum_all());
    gradcheck("mean_all", &[x()], SMOOTH, |t| t[0].mean_all());
    gradcheck("sum_to_shape", &[x()], SMOOTH, |t| {
        t[0].sum_to_shape(&[4, 1, 2])
    });
    gradcheck("global_avg_pool2d", &[x()], SMOOTH, |t| {
        t[0].global_avg_pool2d()
    });
}

#[test]
fn matmul() {
    gradcheck(
        "matmul_2d",
        &[
            inp(uniform(15, -1.0, 1.0, 40), &[3, 5]),
            inp(uniform(20, -1.0, 1.0, 41), &[5, 4]),
        ],
        SMOOTH,
        |x| x[0].matmul(&x[1]),
    );
    gradcheck(
        "matmul_batched",
        &[
            inp(uniform(30, -1.0, 1.0, 42), &[2, 3, 5]),
            inp(uniform(40, -1.0, 1.0, 43), &[2, 5, 4]),
        ],
        SMOOTH,
        |x| x[0].matmul(&x[1]),
    );
    gradcheck(
        "matmul_shared_rhs",
        &[
            inp(uniform(30, -1.0, 1.0, 44), &[2, 3, 5]),
            inp(uniform(20, -1.0, 1.0, 45), &[5, 4]),
        ],
        SMOOTH,
        |x| x[0].matmul(&x[1]),
    );
}

#[test]
fn shape_ops() {
    let x = || inp(uniform(2 * 3 * 5, -1.0, 1.0, 50), &[2, 3, 5]);
    gradcheck("reshape", &[x()], SMOOTH, |t| {
        t[0].reshape(&[5, 6])?.mul(&t[0].reshape(&[5, 6])?)
    });
    gradcheck("reshape_infer", &[x()], SMOOTH, |t| {
        t[0].reshape_infer(&[-1, 5])?.sqr().sum(&[1], false)
    });
    gradcheck("permute", &[x()], SMOOTH, |t| {
        t[0].permute(&[2, 0, 1])?.mul(&Tensor::from_vec(
            (0..30).map(|i| i as f32).collect(),
            &[5, 2, 3],
            t[0].device(),
        )?)
    });
    gradcheck("transpose", &[x()], SMOOTH, |t| {
        Ok(t[0].transpose(0, -1)?.sqr())
    });
    gradcheck("unsqueeze_squeeze", &[x()], SMOOTH, |t| {
        t[0].unsqueeze(1)?.sqr().squeeze(1)
    });
    gradcheck("flatten_from", &[x()], SMOOTH, |t| {
        Ok(t[0].flatten_from(1)?.sqr())
    });
    gradcheck(
        "concat",
        &[x(), inp(uniform(2 * 4 * 5, -1.0, 1.0, 51), &[2, 4, 5])],
        SMOOTH,
        // The first input appears twice: a DAG edge inside one op.
        |t| Ok(Tensor::concat(&[&t[0], &t[1], &t[0]], 1)?.sqr()),
    );
    gradcheck("narrow", &[x()], SMOOTH, |t| {
        Ok(t[0].narrow(2, 1, 3)?.sqr())
    });
    gradcheck("split", &[x()], SMOOTH, |t| {
        let p = t[0].split(&[1, 2], 1)?;
        p[0].mul_scalar(2.0).add(&p[1].sum(&[1], true)?.sqr())
    });
    gradcheck("chunk", &[x()], SMOOTH, |t| {
        let p = t[0].chunk(2, -1)?; // sizes 3 and 2
        p[0].narrow(2, 0, 2)?.mul(&p[1])
    });
    gradcheck("pad", &[x()], SMOOTH, |t| {
        Ok(t[0].pad(&[(0, 1), (2, 0), (1, 1)], 0.5)?.sqr())
    });
    gradcheck(
        "pad2d",
        &[inp(uniform(2 * 3 * 4 * 5, -1.0, 1.0, 52), &[2, 3, 4, 5])],
        SMOOTH,
        |t| Ok(t[0].pad2d(1, 2, 0, 1)?.sqr()),
    );
    gradcheck("index_select", &[x()], SMOOTH, |t| {
        Ok(t[0].index_select(1, &[2, 0, 2, 1])?.sqr())
    });
    let index: Vec<usize> = vec![1, 0, 2, 2, 1, 0, 0, 0, 1, 2, 2, 1];
    gradcheck("gather", &[x()], SMOOTH, |t| {
        Ok(t[0].gather(1, &index, &[2, 2, 3])?.sqr())
    });
    gradcheck(
        "scatter_add",
        &[x(), inp(uniform(12, -1.0, 1.0, 53), &[2, 2, 3])],
        SMOOTH,
        |t| Ok(t[0].scatter_add(1, &index, &[2, 2, 3], &t[1])?.sqr()),
    );
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    name: &str,
    n: usize,
    cin: usize,
    hw: (usize, usize),
    cout: usize,
    k: (usize, usize),
    p: Conv2dParams,
    bias: bool,
) {
    let cin_g = cin / p.groups;
    let mut inputs = vec![
        inp(
            uniform(n * cin * hw.0 * hw.1, -1.0, 1.0, 60),
            &[n, cin, hw.0, hw.1],
        ),
        inp(
            uniform(cout * cin_g * k.0 * k.1, -0.5, 0.5, 61),
            &[cout, cin_g, k.0, k.1],
        ),
    ];
    if bias {
        inputs.push(inp(uniform(cout, -0.5, 0.5, 62), &[cout]));
    }
    gradcheck(name, &inputs, SMOOTH, |t| t[0].conv2d(&t[1], t.get(2), p));
}

#[test]
fn conv2d() {
    conv_case(
        "conv3x3_s1_p1_b1",
        1,
        5,
        (9, 11),
        7,
        (3, 3),
        Conv2dParams::new(1, 1),
        true,
    );
    conv_case(
        "conv3x3_s2_p1_b3",
        3,
        5,
        (9, 7),
        6,
        (3, 3),
        Conv2dParams::new(2, 1),
        false,
    );
    conv_case(
        "conv1x1",
        3,
        5,
        (5, 7),
        3,
        (1, 1),
        Conv2dParams::new(1, 0),
        true,
    );
    conv_case(
        "conv1x1_s2",
        1,
        5,
        (7, 7),
        3,
        (1, 1),
        Conv2dParams::new(2, 0),
        true,
    );
    conv_case(
        "conv_groups2",
        3,
        6,
        (7, 9),
        4,
        (3, 3),
        Conv2dParams::new(1, 1).with_groups(2),
        true,
    );
    conv_case(
        "conv_depthwise_s2",
        1,
        5,
        (9, 9),
        5,
        (3, 3),
        Conv2dParams::new(2, 1).with_groups(5),
        false,
    );
    conv_case(
        "conv5x5_dil2",
        1,
        3,
        (11, 10),
        4,
        (5, 5),
        Conv2dParams::new(1, 3).with_dilation(2),
        true,
    );
    conv_case(
        "conv_rect_k",
        3,
        2,
        (8, 9),
        3,
        (1, 3),
        Conv2dParams {
            padding: (0, 1),
            ..Conv2dParams::new(1, 0)
        },
        true,
    );
    conv_case(
        "conv6x6_s2_p2",
        1,
        3,
        (12, 13),
        4,
        (6, 6),
        Conv2dParams::new(2, 2),
        true,
    );
}

#[test]
fn batch_norm() {
    let (n, c, h, w) = (3, 5, 3, 5);
    let rm = t(vec![0.0; c], &[c]);
    let rv = t(vec![1.0; c], &[c]);
    gradcheck(
        "batch_norm2d_train",
        &[
            inp(uniform(n * c * h * w, -2.0, 2.0, 70), &[n, c, h, w]),
            inp(uniform(c, 0.5, 1.5, 71), &[c]),
            inp(uniform(c, -0.5, 0.5, 72), &[c]),
        ],
        SMOOTH,
        |x| x[0].batch_norm2d_train(&x[1], &x[2], &rm, &rv, 0.03, 1e-3),
    );
    let rm = t(uniform(c, -0.5, 0.5, 73), &[c]);
    let rv = t(uniform(c, 0.5, 2.0, 74), &[c]);
    gradcheck(
        "batch_norm2d_eval",
        &[
            inp(uniform(c * 4 * 3, -2.0, 2.0, 75), &[1, c, 4, 3]),
            inp(uniform(c, 0.5, 1.5, 76), &[c]),
            inp(uniform(c, -0.5, 0.5, 77), &[c]),
        ],
        SMOOTH,
        |x| x[0].batch_norm2d_eval(&x[1], &x[2], &rm, &rv, 1e-3),
    );
}

#[test]
fn pooling_and_upsampling() {
    let x = || inp(distinct(3 * 5 * 9 * 7, 0.01, 80), &[3, 5, 9, 7]);
    gradcheck("max_pool_k5_s1_p2", &[x()], PIECEWISE, |t| {
        t[0].max_pool2d(Pool2dParams::new(5, 1, 2))
    });
    gradcheck("max_pool_k3_s2_p1", &[x()], PIECEWISE, |t| {
        t[0].max_pool2d(Pool2dParams::new(3, 2, 1))
    });
    gradcheck("max_pool_k2_s2", &[x()], PIECEWISE, |t| {
        t[0].max_pool2d(Pool2dParams::new(2, 2, 0))
    });
    let y = || inp(uniform(2 * 3 * 4 * 5, -1.0, 1.0, 81), &[2, 3, 4, 5]);
    gradcheck("upsample_2x", &[y()], SMOOTH, |t| {
        t[0].upsample_nearest2d(2, 2)
    });
    gradcheck("upsample_2x3", &[y()], SMOOTH, |t| {
        t[0].upsample_nearest2d(2, 3)
    });
}

#[test]
fn softmax_and_bce() {
    let x = || inp(uniform(3 * 4 * 5, -2.0, 2.0, 90), &[3, 4, 5]);
    gradcheck("softmax_axis1", &[x()], SMOOTH, |t| t[0].softmax(1));
    gradcheck("softmax_last", &[x()], SMOOTH, |t| t[0].softmax(-1));
    gradcheck("log_softmax", &[x()], SMOOTH, |t| t[0].log_softmax(-1));
    let logits = || inp(uniform(60, -4.0, 4.0, 91), &[3, 4, 5]);
    let target = || inp(uniform(60, 0.0, 1.0, 92), &[3, 4, 5]);
    gradcheck("bce_with_logits", &[logits(), target()], SMOOTH, |t| {
        t[0].bce_with_logits(&t[1], None)
    });
    gradcheck(
        "bce_with_logits_pos_weight",
        &[logits(), target(), inp(uniform(5, 0.5, 3.0, 93), &[5])],
        SMOOTH,
        |t| t[0].bce_with_logits(&t[1], Some(&t[2])),
    );
}

#[test]
fn dag_with_three_consumers() {
    // x feeds a conv, a sigmoid gate and a skip connection; the results meet again.
    let w = uniform(4 * 4 * 9, -0.3, 0.3, 100);
    gradcheck(
        "dag",
        &[inp(uniform(2 * 4 * 5 * 5, -1.0, 1.0, 101), &[2, 4, 5, 5])],
        SMOOTH,
        |t| {
            let x = &t[0];
            let wt = Tensor::from_vec(w.clone(), &[4, 4, 3, 3], x.device())?;
            let a = x.conv2d(&wt, None, Conv2dParams::new(1, 1))?.silu();
            let b = x.sigmoid();
            let c = Tensor::concat(&[&a.mul(&b)?, x], 1)?;
            c.add(&Tensor::concat(&[x, x], 1)?)
        },
    );
}

#[test]
fn to_device_on_cpu_is_identity_for_grads() {
    gradcheck(
        "to_device",
        &[inp(uniform(6, -1.0, 1.0, 110), &[2, 3])],
        SMOOTH,
        |t| Ok(t[0].to_device(yolo_tensor::Device::Cpu)?.sqr()),
    );
}

#[test]
#[should_panic(expected = "autograd")]
fn gradcheck_catches_a_wrong_gradient() {
    // detach() hides x² from autograd: the analytic gradient (1) misses 2x.
    gradcheck(
        "detached",
        &[inp(uniform(6, 0.5, 1.0, 120), &[6])],
        SMOOTH,
        |t| t[0].detach().sqr().add(&t[0]),
    );
}
