//! Every public op on `cuda:0` against the CPU: forward outputs and every input gradient.
//!
//! One table ([`cases`]) lists the ops; each case builds seeded random inputs on a device, runs
//! the op, then backward from `Σ sum(output · w)` with a seeded random weight `w` per
//! differentiable output, and returns its named results (outputs, gradients, updated buffers).
//! The GPU test runs each case on the CPU and on `cuda:0` and compares every result with
//! `max|gpu − cpu| / max(1, max|cpu|)` ≤ [`REL_TOL`], printing one line per op:
//!
//! ```text
//! cuda_ops | conv2d depthwise 3x3 s2 | ok | worst 3.1e-7 at grad[w] | cpu 1.2 ms | gpu 0.4 ms
//! ```
//!
//! (`cargo xtask gpu-check` collects these lines.) Without a GPU the test prints `skipped:
//! <reason>` and passes, unless `YOLO_REQUIRE_GPU=1`, where it fails. The other tests check the
//! table itself on the CPU: every case runs and yields the gradients it promises, every
//! [`UnaryOp`] variant is listed, and the comparison catches a difference just over the
//! tolerance.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

use yolo_tensor::{
    cuda_status, mixed_precision, set_mixed_precision, synchronize, Conv2dParams, Device,
    Pool2dParams, Result, Tensor, UnaryOp,
};
use yolo_testutil::uniform;

/// Relative tolerance of every comparison (f32 on both sides).
const REL_TOL: f32 = 1e-4;

/// One compared quantity: a name (`out0`, `grad[x]`, `running_mean`…), its shape and data.
#[derive(Clone, Debug)]
struct Named {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
}

type RunFn = Box<dyn Fn(Device) -> Result<Vec<Named>>>;

/// One row of the table.
struct Case {
    name: String,
    run: RunFn,
}

/// An input of a standard case.
#[derive(Clone)]
struct In {
    name: &'static str,
    data: Vec<f32>,
    shape: Vec<usize>,
    grad: bool,
}

fn numel(shape: &[usize]) -> usize {
    shape.iter().product()
}

/// A differentiable input with uniform values in `[lo, hi)`.
fn inp(name: &'static str, shape: &[usize], lo: f32, hi: f32, seed: u64) -> In {
    In {
        name,
        data: uniform(numel(shape), lo, hi, seed),
        shape: shape.to_vec(),
        grad: true,
    }
}

/// A constant input (no gradient).
fn konst(name: &'static str, shape: &[usize], data: Vec<f32>) -> In {
    assert_eq!(data.len(), numel(shape), "{name}");
    In {
        name,
        data,
        shape: shape.to_vec(),
        grad: false,
    }
}

/// Uniform values rounded to a grid of `step`: many exact ties (for comparisons, `eq`).
fn grid(n: usize, lo: f32, hi: f32, step: f32, seed: u64) -> Vec<f32> {
    uniform(n, lo, hi, seed)
        .into_iter()
        .map(|v| (v / step).round() * step)
        .collect()
}

fn named(name: impl Into<String>, t: &Tensor) -> Named {
    Named {
        name: name.into(),
        shape: t.shape().to_vec(),
        data: t.to_vec(),
    }
}

fn check_device(what: &str, t: &Tensor, dev: Device) -> Result<()> {
    if t.device() != dev {
        return Err(yolo_tensor::Error::DeviceUnavailable {
            device: dev,
            reason: format!("{what} came back on {} instead of {dev}", t.device()),
        });
    }
    Ok(())
}

fn fail(dev: Device, reason: impl Into<String>) -> yolo_tensor::Error {
    yolo_tensor::Error::DeviceUnavailable {
        device: dev,
        reason: reason.into(),
    }
}

/// Builds `inputs` on `dev`, runs `f`, backward from `Σ sum(out_i · w_i)` over the outputs that
/// require gradients, and returns the outputs and the gradients of every differentiable input.
fn run_standard(
    dev: Device,
    inputs: &[In],
    seed: u64,
    f: &dyn Fn(&[Tensor]) -> Result<Vec<Tensor>>,
) -> Result<Vec<Named>> {
    let ts: Vec<Tensor> = inputs
        .iter()
        .map(|i| {
            let t = Tensor::from_vec(i.data.clone(), &i.shape, dev)?;
            Ok(if i.grad { t.with_grad() } else { t })
        })
        .collect::<Result<_>>()?;
    let outs = f(&ts)?;
    let mut res = Vec::new();
    let mut loss: Option<Tensor> = None;
    for (k, o) in outs.iter().enumerate() {
        check_device(&format!("out{k}"), o, dev)?;
        res.push(named(format!("out{k}"), o));
        if o.requires_grad() {
            let w = Tensor::from_vec(
                uniform(
                    o.numel(),
                    -1.0,
                    1.0,
                    seed.wrapping_mul(31).wrapping_add(k as u64),
                ),
                o.shape(),
                dev,
            )?;
            let term = o.mul(&w)?.sum_all()?;
            loss = Some(match loss {
                None => term,
                Some(l) => l.add(&term)?,
            });
        }
    }
    if let Some(l) = loss {
        check_device("loss", &l, dev)?;
        l.backward()?;
        for (i, t) in inputs.iter().zip(&ts) {
            if !i.grad {
                continue;
            }
            let g = t
                .grad()
                .ok_or_else(|| fail(dev, format!("no gradient reached input `{}`", i.name)))?;
            check_device(&format!("grad[{}]", i.name), &g, dev)?;
            if g.shape() != t.shape() {
                return Err(fail(
                    dev,
                    format!(
                        "gradient of `{}` has shape {:?}, input {:?}",
                        i.name,
                        g.shape(),
                        t.shape()
                    ),
                ));
            }
            res.push(named(format!("grad[{}]", i.name), &g));
        }
    }
    Ok(res)
}

#[derive(Default)]
struct Table(Vec<Case>);

impl Table {
    /// A standard case: inputs, op, outputs + input gradients.
    fn op(
        &mut self,
        name: impl Into<String>,
        inputs: Vec<In>,
        f: impl Fn(&[Tensor]) -> Result<Vec<Tensor>> + 'static,
    ) {
        let name = name.into();
        let seed = 7 + self.0.len() as u64;
        self.0.push(Case {
            name,
            run: Box::new(move |dev| run_standard(dev, &inputs, seed, &f)),
        });
    }

    /// A case with its own procedure (device moves, in-place updates).
    fn custom(&mut self, name: &str, f: impl Fn(Device) -> Result<Vec<Named>> + 'static) {
        self.0.push(Case {
            name: name.into(),
            run: Box::new(f),
        });
    }
}

/// Every variant, listed by an exhaustive match so a new variant fails to compile here until
/// it is given a domain and a row in the table.
fn unary_domain(op: UnaryOp) -> (f32, f32) {
    use UnaryOp::*;
    match op {
        Log | Sqrt | Recip | Powf(_) => (0.5, 3.0),
        Neg | Exp | Abs | Tanh | Sigmoid | Erf | Softplus | Sqr | Clamp(..) | Affine(..) | Relu
        | Relu6 | LeakyRelu(_) | Elu(_) | Silu | Gelu | GeluTanh | Hardswish | Hardsigmoid
        | Mish | Atan => (-4.0, 4.0),
    }
}

fn all_unary_ops() -> Vec<UnaryOp> {
    use UnaryOp::*;
    vec![
        Neg,
        Exp,
        Log,
        Sqrt,
        Abs,
        Tanh,
        Sigmoid,
        Erf,
        Softplus,
        Recip,
        Sqr,
        Powf(2.5),
        Powf(-0.7),
        Clamp(-1.5, 2.5),
        Affine(1.7, -0.3),
        Relu,
        Relu6,
        LeakyRelu(0.1),
        Elu(1.0),
        Silu,
        Gelu,
        GeluTanh,
        Hardswish,
        Hardsigmoid,
        Mish,
        Atan,
    ]
}

fn one(t: Tensor) -> Result<Vec<Tensor>> {
    Ok(vec![t])
}

/// The table: every public op of `Tensor`.
fn cases() -> Vec<Case> {
    let mut t = Table::default();
    unary_cases(&mut t);
    binary_cases(&mut t);
    reduce_cases(&mut t);
    matmul_cases(&mut t);
    shape_cases(&mut t);
    conv_cases(&mut t);
    nn_cases(&mut t);
    device_cases(&mut t);
    t.0
}

fn unary_cases(t: &mut Table) {
    // odd sizes: tails of vectorised kernels
    let shape = [3usize, 5, 67];
    for (k, op) in all_unary_ops().into_iter().enumerate() {
        let (lo, hi) = unary_domain(op);
        t.op(
            format!("unary {op:?}"),
            vec![inp("x", &shape, lo, hi, 100 + k as u64)],
            move |x| one(x[0].unary(op)),
        );
    }
    // the method wrappers reach the same kernels through their own entry points
    let x = || vec![inp("x", &[4, 33], -3.0, 3.0, 140)];
    t.op("neg/exp/log/sqrt/abs/tanh chain", x(), |x| {
        one(x[0].neg().exp().add_scalar(1.0).log().sqrt().abs().tanh())
    });
    t.op("sigmoid/erf/softplus/recip/sqr/relu/silu/atan", x(), |x| {
        let a = x[0].sigmoid().mul(&x[0].erf())?;
        let b = x[0].softplus().recip().sqr();
        one(a.add(&b)?.add(&x[0].relu())?.add(&x[0].silu().atan())?)
    });
    t.op("powf/clamp/affine/add_scalar/mul_scalar", x(), |x| {
        one(x[0]
            .clamp(-2.0, 2.5)
            .add_scalar(3.0)
            .powf(1.5)
            .affine(0.5, -0.25)
            .mul_scalar(-2.0))
    });
    // a large tensor: grid-stride loops and launch sizes past one block
    t.op(
        "silu large (1x64x80x80)",
        vec![inp("x", &[1, 64, 80, 80], -6.0, 6.0, 141)],
        |x| one(x[0].silu()),
    );
}

fn binary_cases(t: &mut Table) {
    type Bin = fn(&Tensor, &Tensor) -> Result<Tensor>;
    type Range = (f32, f32);
    let ops: [(&str, Bin, Range, Range); 7] = [
        ("add", Tensor::add, (-2.0, 2.0), (-2.0, 2.0)),
        ("sub", Tensor::sub, (-2.0, 2.0), (-2.0, 2.0)),
        ("mul", Tensor::mul, (-2.0, 2.0), (-2.0, 2.0)),
        ("div", Tensor::div, (-2.0, 2.0), (0.5, 2.0)),
        ("maximum", Tensor::maximum, (-2.0, 2.0), (-2.0, 2.0)),
        ("minimum", Tensor::minimum, (-2.0, 2.0), (-2.0, 2.0)),
        ("pow", Tensor::pow, (0.5, 2.0), (-2.0, 2.0)),
    ];
    // (lhs shape, rhs shape): same shape, trailing broadcast, both sides broadcast, scalar-like
    let shapes: [(&[usize], &[usize]); 4] = [
        (&[3, 4, 37], &[3, 4, 37]),
        (&[3, 4, 5], &[4, 1]),
        (&[3, 1, 5], &[1, 4, 1]),
        (&[1], &[2, 3, 6]),
    ];
    for (k, (name, f, (alo, ahi), (blo, bhi))) in ops.into_iter().enumerate() {
        for (j, (sa, sb)) in shapes.iter().enumerate() {
            let seed = 200 + 10 * k as u64 + j as u64;
            t.op(
                format!("binary {name} {sa:?} {sb:?}"),
                vec![
                    inp("a", sa, alo, ahi, seed),
                    inp("b", sb, blo, bhi, seed + 500),
                ],
                move |x| one(f(&x[0], &x[1])?),
            );
        }
    }
    // maximum/minimum with exact ties: the gradient is shared equally
    for (name, f) in [
        ("maximum", Tensor::maximum as Bin),
        ("minimum", Tensor::minimum as Bin),
    ] {
        t.op(
            format!("binary {name} with ties"),
            vec![
                In {
                    data: grid(60, -1.0, 1.0, 0.5, 290),
                    ..inp("a", &[3, 4, 5], 0.0, 1.0, 0)
                },
                In {
                    data: grid(20, -1.0, 1.0, 0.5, 291),
                    ..inp("b", &[4, 5], 0.0, 1.0, 0)
                },
            ],
            move |x| one(f(&x[0], &x[1])?),
        );
    }
    // comparisons: no gradient; values on a grid so that equality happens
    let cmps: [(&str, Bin); 5] = [
        ("eq", Tensor::eq),
        ("gt", Tensor::gt),
        ("ge", Tensor::ge),
        ("lt", Tensor::lt),
        ("le", Tensor::le),
    ];
    for (k, (name, f)) in cmps.into_iter().enumerate() {
        t.op(
            format!("compare {name} (broadcast)"),
            vec![
                konst("a", &[3, 4, 5], grid(60, -2.0, 2.0, 0.5, 300 + k as u64)),
                konst("b", &[4, 1], grid(4, -2.0, 2.0, 0.5, 310 + k as u64)),
            ],
            move |x| one(f(&x[0], &x[1])?),
        );
    }
    t.op(
        "broadcast_as [4,1] -> [3,4,5]",
        vec![inp("x", &[4, 1], -1.0, 1.0, 320)],
        |x| one(x[0].broadcast_as(&[3, 4, 5])?),
    );
    t.op(
        "where_cond (broadcast cond, a, b)",
        vec![
            konst("cond", &[3, 1, 5], grid(15, 0.0, 1.0, 1.0, 330)),
            inp("a", &[3, 4, 5], -2.0, 2.0, 331),
            inp("b", &[1, 4, 1], -2.0, 2.0, 332),
        ],
        |x| one(Tensor::where_cond(&x[0], &x[1], &x[2])?),
    );
}

fn reduce_cases(t: &mut Table) {
    let shape = [3usize, 4, 5, 6];
    type Red = fn(&Tensor, &[isize], bool) -> Result<Tensor>;
    let reds: [(&str, Red); 4] = [
        ("sum", Tensor::sum),
        ("mean", Tensor::mean),
        ("max", Tensor::max),
        ("min", Tensor::min),
    ];
    let axes: [&[isize]; 5] = [&[0], &[1], &[-1], &[0, 2], &[1, 2, 3]];
    for (k, (name, f)) in reds.into_iter().enumerate() {
        for (j, ax) in axes.iter().enumerate() {
            for keep in [false, true] {
                let seed = 400 + 20 * k as u64 + 2 * j as u64 + keep as u64;
                let ax = ax.to_vec();
                t.op(
                    format!("reduce {name} axes {ax:?} keepdim {keep}"),
                    vec![inp("x", &shape, -3.0, 3.0, seed)],
                    move |x| one(f(&x[0], &ax, keep)?),
                );
            }
        }
    }
    // a long reduction (many blocks per output on a GPU)
    t.op(
        "reduce sum axes [0,2,3] of 8x16x40x40",
        vec![inp("x", &[8, 16, 40, 40], -1.0, 1.0, 490)],
        |x| one(x[0].sum(&[0, 2, 3], false)?),
    );
    t.op(
        "reduce max axes [-1] of 4x5000",
        vec![inp("x", &[4, 5000], -1.0, 1.0, 491)],
        |x| one(x[0].max(&[-1], true)?),
    );
    t.op("sum_all", vec![inp("x", &shape, -1.0, 1.0, 492)], |x| {
        one(x[0].sum_all()?)
    });
    t.op("mean_all", vec![inp("x", &shape, -1.0, 1.0, 493)], |x| {
        one(x[0].mean_all()?)
    });
    t.op(
        "sum_to_shape [3,4,5,6] -> [4,1,6]",
        vec![inp("x", &shape, -1.0, 1.0, 494)],
        |x| one(x[0].sum_to_shape(&[4, 1, 6])?),
    );
    t.op(
        "global_avg_pool2d",
        vec![inp("x", &[2, 6, 7, 9], -1.0, 1.0, 495)],
        |x| one(x[0].global_avg_pool2d()?),
    );
}

fn matmul_cases(t: &mut Table) {
    let mm = |a: &[usize], b: &[usize], seed: u64| {
        vec![
            inp("a", a, -1.0, 1.0, seed),
            inp("b", b, -1.0, 1.0, seed + 1),
        ]
    };
    t.op("matmul [5,7]x[7,3]", mm(&[5, 7], &[7, 3], 500), |x| {
        one(x[0].matmul(&x[1])?)
    });
    t.op(
        "matmul [67,129]x[129,95] (odd, tiled)",
        mm(&[67, 129], &[129, 95], 502),
        |x| one(x[0].matmul(&x[1])?),
    );
    t.op(
        "matmul batched [2,3,4,5]x[2,3,5,6]",
        mm(&[2, 3, 4, 5], &[2, 3, 5, 6], 504),
        |x| one(x[0].matmul(&x[1])?),
    );
    t.op(
        "matmul shared rhs [2,4,5]x[5,3]",
        mm(&[2, 4, 5], &[5, 3], 506),
        |x| one(x[0].matmul(&x[1])?),
    );
    t.op(
        "matmul transposed lhs [2,6,4]^T x [2,6,5]",
        mm(&[2, 6, 4], &[2, 6, 5], 508),
        |x| one(x[0].transpose(-1, -2)?.matmul(&x[1])?),
    );
    t.op(
        "matmul transposed rhs [3,4,6] x [3,5,6]^T",
        mm(&[3, 4, 6], &[3, 5, 6], 510),
        |x| one(x[0].matmul(&x[1].transpose(-1, -2)?)?),
    );
}

fn shape_cases(t: &mut Table) {
    let x4 = |seed| vec![inp("x", &[2, 3, 4, 5], -1.0, 1.0, seed)];
    t.op("reshape", x4(600), |x| one(x[0].reshape(&[6, 20])?));
    t.op("reshape_infer", x4(601), |x| {
        one(x[0].reshape_infer(&[2, -1, 5])?)
    });
    t.op("flatten_from(1)", x4(602), |x| one(x[0].flatten_from(1)?));
    t.op("unsqueeze/squeeze", x4(603), |x| {
        one(x[0].unsqueeze(1)?.mul_scalar(2.0).squeeze(1)?)
    });
    t.op("permute [0,2,3,1]", x4(604), |x| {
        one(x[0].permute(&[0, 2, 3, 1])?)
    });
    t.op("permute [3,1,0,2]", x4(605), |x| {
        one(x[0].permute(&[3, 1, 0, 2])?)
    });
    t.op("transpose(1,3)", x4(606), |x| one(x[0].transpose(1, 3)?));
    t.op(
        "concat axis 1 (3 parts)",
        vec![
            inp("a", &[2, 3, 4, 5], -1.0, 1.0, 610),
            inp("b", &[2, 1, 4, 5], -1.0, 1.0, 611),
            inp("c", &[2, 6, 4, 5], -1.0, 1.0, 612),
        ],
        |x| one(Tensor::concat(&[&x[0], &x[1], &x[2]], 1)?),
    );
    t.op(
        "concat axis -1",
        vec![
            inp("a", &[3, 4, 2], -1.0, 1.0, 613),
            inp("b", &[3, 4, 7], -1.0, 1.0, 614),
        ],
        |x| one(Tensor::concat(&[&x[0], &x[1]], -1)?),
    );
    t.op("concat the same tensor twice", x4(615), |x| {
        one(Tensor::concat(&[&x[0], &x[0]], 2)?)
    });
    t.op("narrow axis 2", x4(620), |x| one(x[0].narrow(2, 1, 2)?));
    t.op("split [1,2,2] axis 3", x4(621), |x| {
        x[0].split(&[1, 2, 2], 3)
    });
    t.op("chunk 2 axis 1", x4(622), |x| x[0].chunk(2, 1));
    t.op("pad value 0.5", x4(623), |x| {
        one(x[0].pad(&[(0, 1), (2, 0), (1, 1), (0, 3)], 0.5)?)
    });
    t.op("pad2d", x4(624), |x| one(x[0].pad2d(1, 2, 0, 3)?));
    t.op(
        "index_select axis 1 repeated (backward index_add)",
        x4(630),
        |x| one(x[0].index_select(1, &[2, 0, 2, 1, 2])?),
    );
    t.op("index_select axis 0", x4(631), |x| {
        one(x[0].index_select(0, &[1, 1, 0])?)
    });
    t.op("index_select axis -1", x4(632), |x| {
        one(x[0].index_select(-1, &[4, 0, 3])?)
    });
    let gidx: Vec<usize> = grid(3 * 2 * 5, 0.0, 3.0, 1.0, 640)
        .into_iter()
        .map(|v| v as usize)
        .collect();
    t.op(
        "gather axis 1",
        vec![inp("x", &[3, 4, 5], -1.0, 1.0, 641)],
        move |x| one(x[0].gather(1, &gidx, &[3, 2, 5])?),
    );
    let sidx: Vec<usize> = grid(3 * 6 * 5, 0.0, 3.0, 1.0, 642)
        .into_iter()
        .map(|v| v as usize)
        .collect();
    t.op(
        "scatter_add axis 1 (repeated indices)",
        vec![
            inp("x", &[3, 4, 5], -1.0, 1.0, 643),
            inp("src", &[3, 6, 5], -1.0, 1.0, 644),
        ],
        move |x| one(x[0].scatter_add(1, &sidx, &[3, 6, 5], &x[1])?),
    );
}

fn conv_cases(t: &mut Table) {
    struct C {
        name: &'static str,
        x: [usize; 4],
        w: [usize; 4],
        bias: bool,
        p: Conv2dParams,
    }
    let p = Conv2dParams::new;
    let list = [
        C {
            name: "3x3 s1 p1 bias",
            x: [2, 5, 9, 11],
            w: [7, 5, 3, 3],
            bias: true,
            p: p(1, 1),
        },
        C {
            name: "3x3 s2 p1",
            x: [2, 6, 13, 10],
            w: [8, 6, 3, 3],
            bias: false,
            p: p(2, 1),
        },
        C {
            name: "3x3 dilation 2 p2",
            x: [1, 4, 12, 12],
            w: [5, 4, 3, 3],
            bias: true,
            p: p(1, 2).with_dilation(2),
        },
        C {
            name: "groups 2",
            x: [2, 6, 8, 8],
            w: [4, 3, 3, 3],
            bias: true,
            p: p(1, 1).with_groups(2),
        },
        C {
            name: "depthwise 3x3 s2",
            x: [2, 8, 11, 11],
            w: [8, 1, 3, 3],
            bias: false,
            p: p(2, 1).with_groups(8),
        },
        C {
            name: "depthwise 5x5 p2",
            x: [1, 16, 9, 9],
            w: [16, 1, 5, 5],
            bias: true,
            p: p(1, 2).with_groups(16),
        },
        C {
            name: "1x1 bias",
            x: [2, 9, 7, 5],
            w: [12, 9, 1, 1],
            bias: true,
            p: p(1, 0),
        },
        C {
            name: "1x1 s2",
            x: [2, 9, 8, 8],
            w: [4, 9, 1, 1],
            bias: false,
            p: p(2, 0),
        },
        C {
            name: "6x6 s2 p2 (yolov5 stem)",
            x: [2, 3, 32, 32],
            w: [16, 3, 6, 6],
            bias: false,
            p: p(2, 2),
        },
        C {
            name: "non-square stride/padding",
            x: [1, 3, 10, 9],
            w: [4, 3, 3, 2],
            bias: true,
            p: Conv2dParams {
                stride: (2, 1),
                padding: (1, 0),
                dilation: (1, 2),
                groups: 1,
            },
        },
        C {
            name: "3x3 64->64 on 2x64x20x20",
            x: [2, 64, 20, 20],
            w: [64, 64, 3, 3],
            bias: false,
            p: p(1, 1),
        },
    ];
    for (k, c) in list.into_iter().enumerate() {
        let seed = 700 + 3 * k as u64;
        // weights at a typical init scale so outputs stay O(1)
        let fan_in = (c.w[1] * c.w[2] * c.w[3]) as f32;
        let s = 1.0 / fan_in.sqrt();
        let mut inputs = vec![
            inp("x", &c.x, -1.0, 1.0, seed),
            inp("w", &c.w, -s, s, seed + 1),
        ];
        if c.bias {
            inputs.push(inp("b", &[c.w[0]], -1.0, 1.0, seed + 2));
        }
        let p = c.p;
        t.op(format!("conv2d {}", c.name), inputs, move |x| {
            one(x[0].conv2d(&x[1], x.get(2), p)?)
        });
    }
    // input without gradient (the first layer of a network): only dw
    t.op(
        "conv2d constant input (grad w only)",
        vec![
            konst("x", &[2, 3, 8, 8], uniform(384, -1.0, 1.0, 760)),
            inp("w", &[4, 3, 3, 3], -0.3, 0.3, 761),
        ],
        |x| one(x[0].conv2d(&x[1], None, Conv2dParams::new(1, 1))?),
    );
}

fn nn_cases(t: &mut Table) {
    for (k, (kk, s, pp)) in [(5usize, 1usize, 2usize), (2, 2, 0), (3, 2, 1), (3, 1, 1)]
        .into_iter()
        .enumerate()
    {
        t.op(
            format!("max_pool2d k{kk} s{s} p{pp}"),
            vec![inp("x", &[2, 3, 9, 10], -1.0, 1.0, 800 + k as u64)],
            move |x| one(x[0].max_pool2d(Pool2dParams::new(kk, s, pp))?),
        );
    }
    t.op(
        "upsample_nearest2d 2x2",
        vec![inp("x", &[2, 3, 5, 4], -1.0, 1.0, 810)],
        |x| one(x[0].upsample_nearest2d(2, 2)?),
    );
    t.op(
        "upsample_nearest2d 3x2",
        vec![inp("x", &[1, 2, 3, 5], -1.0, 1.0, 811)],
        |x| one(x[0].upsample_nearest2d(3, 2)?),
    );
    // batch norm: outputs, gradients of x, weight, bias, and the updated running statistics
    let bn_inputs = |seed: u64, shape: [usize; 4]| {
        let c = shape[1];
        vec![
            inp("x", &shape, -2.0, 3.0, seed),
            inp("weight", &[c], 0.5, 1.5, seed + 1),
            inp("bias", &[c], -0.5, 0.5, seed + 2),
            konst("running_mean", &[c], uniform(c, -0.1, 0.1, seed + 3)),
            konst("running_var", &[c], uniform(c, 0.9, 1.1, seed + 4)),
        ]
    };
    t.op("batch_norm2d_train", bn_inputs(820, [3, 5, 6, 7]), |x| {
        let y = x[0].batch_norm2d_train(&x[1], &x[2], &x[3], &x[4], 0.03, 1e-3)?;
        Ok(vec![y, x[3].clone(), x[4].clone()])
    });
    t.op(
        "batch_norm2d_train large (8x32x20x20)",
        bn_inputs(825, [8, 32, 20, 20]),
        |x| {
            let y = x[0].batch_norm2d_train(&x[1], &x[2], &x[3], &x[4], 0.1, 1e-5)?;
            Ok(vec![y, x[3].clone(), x[4].clone()])
        },
    );
    for (k, act) in [
        UnaryOp::Silu,
        UnaryOp::LeakyRelu(0.1),
        UnaryOp::Hardswish,
        UnaryOp::Relu,
        UnaryOp::Mish,
    ]
    .into_iter()
    .enumerate()
    {
        t.op(
            format!("batch_norm2d_act_train {act:?}"),
            bn_inputs(830 + 5 * k as u64, [2, 6, 5, 9]),
            move |x| {
                let y =
                    x[0].batch_norm2d_act_train(&x[1], &x[2], &x[3], &x[4], 0.03, 1e-3, Some(act))?;
                Ok(vec![y, x[3].clone(), x[4].clone()])
            },
        );
    }
    t.op("batch_norm2d_eval", bn_inputs(860, [2, 4, 5, 3]), |x| {
        one(x[0].batch_norm2d_eval(&x[1], &x[2], &x[3], &x[4], 1e-3)?)
    });
    for (k, (name, log, axis)) in [
        ("softmax axis -1", false, -1isize),
        ("softmax axis 1", false, 1),
        ("log_softmax axis -1", true, -1),
        ("log_softmax axis 0", true, 0),
    ]
    .into_iter()
    .enumerate()
    {
        t.op(
            name,
            vec![inp("x", &[3, 17, 6], -5.0, 5.0, 870 + k as u64)],
            move |x| {
                one(if log {
                    x[0].log_softmax(axis)?
                } else {
                    x[0].softmax(axis)?
                })
            },
        );
    }
    t.op(
        "bce_with_logits",
        vec![
            inp("logits", &[4, 3, 5], -8.0, 8.0, 880),
            inp("target", &[4, 3, 5], 0.0, 1.0, 881),
        ],
        |x| one(x[0].bce_with_logits(&x[1], None)?),
    );
    t.op(
        "bce_with_logits pos_weight (broadcast)",
        vec![
            inp("logits", &[4, 3, 5], -30.0, 30.0, 882),
            konst("target", &[4, 3, 5], grid(60, 0.0, 1.0, 1.0, 883)),
            inp("pos_weight", &[5], 0.5, 2.0, 884),
        ],
        |x| one(x[0].bce_with_logits(&x[1], Some(&x[2]))?),
    );
    // a DAG: one input used by three paths, gradients accumulated on the device
    t.op(
        "graph: shared input, accumulated gradients",
        vec![
            inp("x", &[3, 8], -1.0, 1.0, 890),
            inp("w", &[8, 4], -1.0, 1.0, 891),
        ],
        |x| {
            let h = x[0].matmul(&x[1])?.silu();
            let skip = x[0].sum(&[1], true)?;
            let y = h.add(&skip)?.mul(&x[0].narrow(1, 0, 4)?)?;
            Ok(vec![y.softmax(-1)?, x[0].exp()])
        },
    );
}

fn device_cases(t: &mut Table) {
    t.custom(
        "creation: from_vec/full/zeros/ones/zeros_like/scalar",
        |dev| {
            let a = Tensor::from_vec(uniform(30, -1.0, 1.0, 900), &[5, 6], dev)?;
            let f = Tensor::full(1.25, &[3, 7], dev)?;
            let z = Tensor::zeros(&[4], dev)?;
            let o = Tensor::ones(&[2, 2], dev)?;
            let zl = a.zeros_like()?;
            let s = Tensor::scalar(2.5).to_device(dev)?;
            for (n, x) in [("from_vec", &a), ("full", &f), ("zeros", &z), ("ones", &o)] {
                check_device(n, x, dev)?;
            }
            check_device("zeros_like", &zl, dev)?;
            Ok(vec![
                named("from_vec", &a),
                named("full", &f),
                named("zeros", &z),
                named("ones", &o),
                named("zeros_like", &zl),
                Named {
                    name: "scalar.item".into(),
                    shape: vec![],
                    data: vec![s.item()?],
                },
            ])
        },
    );
    t.custom(
        "to_device round trip (cpu -> dev -> cpu, grad back)",
        |dev| {
            let x =
                Tensor::from_vec(uniform(24, -1.0, 1.0, 910), &[2, 3, 4], Device::Cpu)?.with_grad();
            let w = Tensor::from_vec(uniform(24, -1.0, 1.0, 911), &[2, 3, 4], dev)?;
            let on = x.to_device(dev)?;
            check_device("x.to_device", &on, dev)?;
            let y = on.mul(&w)?.exp();
            let back = y.to_device(Device::Cpu)?;
            check_device("back", &back, Device::Cpu)?;
            back.sum_all()?.backward()?;
            let g = x
                .grad()
                .ok_or_else(|| fail(dev, "no gradient reached the CPU source"))?;
            check_device("grad[x]", &g, Device::Cpu)?;
            let exact = on.to_device(Device::Cpu)?.to_vec() == x.to_vec();
            if !exact {
                return Err(fail(dev, "cpu -> device -> cpu changed the values"));
            }
            Ok(vec![named("back", &back), named("grad[x]", &g)])
        },
    );
    t.custom(
        "update_data in place (seen through a detached view)",
        |dev| {
            let x = Tensor::from_vec(uniform(50, -1.0, 1.0, 920), &[5, 10], dev)?;
            let view = x.detach();
            x.update_data(|v| {
                for (i, e) in v.iter_mut().enumerate() {
                    *e = *e * 0.9 - 0.01 * i as f32;
                }
            })?;
            check_device("x", &x, dev)?;
            if x.to_vec() != view.to_vec() {
                return Err(fail(dev, "a view sharing storage did not see update_data"));
            }
            Ok(vec![named("x", &x)])
        },
    );
    t.custom(
        "assign (in place, same shape; device mismatch refused)",
        |dev| {
            let x = Tensor::zeros(&[4, 6], dev)?;
            let view = x.detach();
            let src = Tensor::from_vec(uniform(24, -1.0, 1.0, 930), &[4, 6], dev)?;
            x.assign(&src.mul_scalar(3.0).add_scalar(0.5))?;
            if x.to_vec() != view.to_vec() {
                return Err(fail(dev, "a view sharing storage did not see assign"));
            }
            if x.assign(&Tensor::zeros(&[4, 5], dev)?).is_ok() {
                return Err(fail(dev, "assign of another shape was accepted"));
            }
            if !dev.is_cpu() && x.assign(&Tensor::zeros(&[4, 6], Device::Cpu)?).is_ok() {
                return Err(fail(
                    dev,
                    "assign from the CPU into a device tensor was accepted",
                ));
            }
            Ok(vec![named("x", &x)])
        },
    );
    t.custom(
        "grad of a parameter used twice, zero_grad, second backward",
        |dev| {
            let p = Tensor::from_vec(uniform(12, -1.0, 1.0, 940), &[3, 4], dev)?.with_grad();
            let y = p.mul(&p)?.add(&p.tanh())?.sum_all()?;
            y.backward()?;
            let g1 = p.grad().ok_or_else(|| fail(dev, "no gradient"))?;
            p.zero_grad();
            if p.grad().is_some() {
                return Err(fail(dev, "zero_grad left a gradient"));
            }
            p.sigmoid().sum_all()?.backward()?;
            p.sigmoid().mean_all()?.backward()?; // accumulates onto the first
            let g2 = p.grad().ok_or_else(|| fail(dev, "no gradient"))?;
            Ok(vec![named("grad1", &g1), named("grad2", &g2)])
        },
    );
}

/// Worst relative difference of `got` against `reference` and the name where it happens; an
/// `Err` when the two do not line up (different names, shapes or lengths).
fn compare(reference: &[Named], got: &[Named]) -> std::result::Result<(f32, String), String> {
    if reference.len() != got.len() {
        return Err(format!(
            "{} results on the CPU, {} on the device",
            reference.len(),
            got.len()
        ));
    }
    let mut worst = (0.0f32, String::from("-"));
    for (r, g) in reference.iter().zip(got) {
        if r.name != g.name || r.shape != g.shape || r.data.len() != g.data.len() {
            return Err(format!(
                "result `{}` {:?} on the CPU, `{}` {:?} on the device",
                r.name, r.shape, g.name, g.shape
            ));
        }
        let e = rel_err(&r.data, &g.data);
        if e > worst.0 || (e.is_nan() && !worst.0.is_nan()) {
            worst = (e, r.name.clone());
        }
    }
    Ok(worst)
}

/// `max|got − ref| / max(1, max|ref|)`; infinite where exactly one side is not finite or the
/// two sides disagree on which elements are not finite.
fn rel_err(reference: &[f32], got: &[f32]) -> f32 {
    let scale = reference
        .iter()
        .filter(|v| v.is_finite())
        .fold(1.0f32, |m, v| m.max(v.abs()));
    let mut worst = 0.0f32;
    for (&r, &g) in reference.iter().zip(got) {
        let d = if r.is_finite() && g.is_finite() {
            (g - r).abs()
        } else if r.to_bits() == g.to_bits() || (r.is_nan() && g.is_nan()) {
            0.0
        } else {
            f32::INFINITY
        };
        worst = worst.max(d);
    }
    worst / scale
}

/// Runs `case` on `dev`, turning errors and panics into messages.
fn run_case(case: &Case, dev: Device) -> std::result::Result<(Vec<Named>, f64), String> {
    let t0 = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| {
        let r = (case.run)(dev);
        synchronize(dev)?;
        r
    }));
    let ms = t0.elapsed().as_secs_f64() * 1e3;
    match r {
        Ok(Ok(v)) => Ok((v, ms)),
        Ok(Err(e)) => Err(format!("error on {dev}: {e}")),
        Err(p) => Err(format!(
            "panic on {dev}: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into())
        )),
    }
}

/// One case on both devices: `Ok(line)` or `Err(line)` for the report.
fn check_case(case: &Case, dev: Device) -> std::result::Result<String, String> {
    let (cpu, cpu_ms) =
        run_case(case, Device::Cpu).map_err(|e| format!("FAIL | cpu reference: {e}"))?;
    let (gpu, gpu_ms) = run_case(case, dev).map_err(|e| format!("FAIL | {e}"))?;
    let (worst, at) = compare(&cpu, &gpu).map_err(|e| format!("FAIL | {e}"))?;
    let line = format!("worst {worst:.1e} at {at} | cpu {cpu_ms:.1} ms | gpu {gpu_ms:.1} ms");
    if worst <= REL_TOL {
        Ok(format!("ok | {line}"))
    } else {
        Err(format!("FAIL | {line} (tolerance {REL_TOL:.0e})"))
    }
}

/// `Some(device)` when `cuda:0` is usable; otherwise prints the skip reason (and fails when
/// `YOLO_REQUIRE_GPU=1`).
fn gpu_or_skip() -> Option<Device> {
    match Device::cuda(0) {
        Ok(d) => {
            println!("{}", cuda_status());
            Some(d)
        }
        Err(e) => {
            let required = std::env::var("YOLO_REQUIRE_GPU").is_ok_and(|v| v.trim() == "1");
            assert!(
                !required,
                "YOLO_REQUIRE_GPU=1 but cuda:0 is unusable: {e}\n{}",
                cuda_status()
            );
            println!("skipped: {e}");
            None
        }
    }
}

#[test]
fn every_op_on_cuda_matches_the_cpu() {
    let Some(dev) = gpu_or_skip() else {
        return;
    };
    set_mixed_precision(false);
    assert!(!mixed_precision());
    let cases = cases();
    let mut failed = Vec::new();
    for case in &cases {
        match check_case(case, dev) {
            Ok(line) => println!("cuda_ops | {} | {line}", case.name),
            Err(line) => {
                println!("cuda_ops | {} | {line}", case.name);
                failed.push(case.name.clone());
            }
        }
    }
    println!(
        "cuda_ops | summary | {} of {} ops agree within {REL_TOL:.0e}",
        cases.len() - failed.len(),
        cases.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} ops differ between {dev} and the CPU: {}",
        failed.len(),
        cases.len(),
        failed.join(", ")
    );
}

/// The table on the CPU alone: every case runs, twice with the same results, and yields a
/// gradient for every differentiable input (so the GPU test compares what it claims to).
#[test]
fn the_op_table_runs_on_the_cpu() {
    let cases = cases();
    assert!(cases.len() > 150, "only {} cases", cases.len());
    let mut names = std::collections::HashSet::new();
    for case in &cases {
        assert!(
            names.insert(case.name.clone()),
            "duplicate case `{}`",
            case.name
        );
        let (a, _) = run_case(case, Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        let (b, _) = run_case(case, Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(!a.is_empty(), "{}: no results", case.name);
        let (worst, at) = compare(&a, &b).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        assert!(
            worst <= 1e-6,
            "{}: CPU run-to-run {worst} at {at}",
            case.name
        );
        for n in &a {
            assert!(
                n.data.iter().all(|v| v.is_finite()),
                "{}: {} is not finite",
                case.name,
                n.name
            );
        }
    }
    // gradients are there for the standard ops (a few spot checks of the names)
    let grads_of = |name: &str| -> Vec<String> {
        let c = cases.iter().find(|c| c.name == name).expect(name);
        (c.run)(Device::Cpu)
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect()
    };
    assert_eq!(
        grads_of("conv2d 3x3 s1 p1 bias"),
        ["out0", "grad[x]", "grad[w]", "grad[b]"]
    );
    assert_eq!(
        grads_of("batch_norm2d_train"),
        [
            "out0",
            "out1",
            "out2",
            "grad[x]",
            "grad[weight]",
            "grad[bias]"
        ]
    );
    assert_eq!(grads_of("compare eq (broadcast)"), ["out0"]);
    assert_eq!(
        grads_of("where_cond (broadcast cond, a, b)"),
        ["out0", "grad[a]", "grad[b]"]
    );
    assert_eq!(
        grads_of("split [1,2,2] axis 3"),
        ["out0", "out1", "out2", "grad[x]"]
    );
}

#[test]
fn the_table_covers_every_unary_op_and_op_family() {
    let cases = cases();
    for op in all_unary_ops() {
        let _ = unary_domain(op); // exhaustive: a new variant does not compile until listed
        let name = format!("unary {op:?}");
        assert!(cases.iter().any(|c| c.name == name), "{name} missing");
    }
    for family in [
        "binary add",
        "binary sub",
        "binary mul",
        "binary div",
        "binary maximum",
        "binary minimum",
        "binary pow",
        "compare eq",
        "compare gt",
        "compare ge",
        "compare lt",
        "compare le",
        "broadcast_as",
        "where_cond",
        "reduce sum",
        "reduce mean",
        "reduce max",
        "reduce min",
        "sum_all",
        "mean_all",
        "sum_to_shape",
        "global_avg_pool2d",
        "matmul batched",
        "matmul transposed",
        "reshape",
        "permute",
        "transpose",
        "concat",
        "split",
        "chunk",
        "narrow",
        "pad",
        "pad2d",
        "index_select",
        "gather",
        "scatter_add",
        "conv2d depthwise",
        "conv2d groups",
        "conv2d 1x1",
        "conv2d 3x3 dilation",
        "max_pool2d",
        "upsample_nearest2d",
        "batch_norm2d_train",
        "batch_norm2d_act_train",
        "batch_norm2d_eval",
        "softmax",
        "log_softmax",
        "bce_with_logits",
        "to_device",
        "update_data",
        "assign",
    ] {
        assert!(
            cases.iter().any(|c| c.name.starts_with(family)),
            "no case for {family}"
        );
    }
}

#[test]
fn the_comparison_catches_a_difference_over_the_tolerance() {
    let r = vec![Named {
        name: "out0".into(),
        shape: vec![3],
        data: vec![0.5, -2.0, 4.0],
    }];
    let mut g = r.clone();
    assert_eq!(compare(&r, &g).unwrap().0, 0.0);
    // relative to max(1, max|ref|) = 4: a difference of 4e-4 + a bit is over 1e-4
    g[0].data[0] += 4.1e-4;
    let (e, at) = compare(&r, &g).unwrap();
    assert!(e > REL_TOL && e < 2.0 * REL_TOL, "{e}");
    assert_eq!(at, "out0");
    g[0].data[0] = r[0].data[0] + 3.9e-4;
    assert!(compare(&r, &g).unwrap().0 <= REL_TOL);
    // small references are measured absolutely (scale 1)
    let small = vec![Named {
        name: "grad[x]".into(),
        shape: vec![2],
        data: vec![1e-6, 0.0],
    }];
    let mut s2 = small.clone();
    s2[0].data[1] = 5e-5;
    assert!(compare(&small, &s2).unwrap().0 <= REL_TOL);
    s2[0].data[1] = 2e-4;
    assert!(compare(&small, &s2).unwrap().0 > REL_TOL);
    // NaN where the reference is finite, and mismatched shapes or names
    let mut n = r.clone();
    n[0].data[1] = f32::NAN;
    assert!(compare(&r, &n).unwrap().0.is_infinite());
    let mut sh = r.clone();
    sh[0].shape = vec![1, 3];
    assert!(compare(&r, &sh).is_err());
    assert!(compare(&r, &[]).is_err());
}

#[test]
fn without_a_gpu_the_skip_names_the_reason() {
    if let Err(e) = Device::cuda(0) {
        let msg = e.to_string();
        assert!(msg.contains("cuda:0"), "{msg}");
        assert!(!cuda_status().is_empty());
    }
}
