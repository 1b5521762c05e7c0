//! ONNX export: the written bytes decode (with `yolo_onnx`'s reader), the graph is well formed
//! (names, shapes, topological order, op counts, initializers = parameters + grids), and a small
//! reference interpreter of the emitted ops, run on the decoded file, gives the Rust model's
//! own inference output.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use yolo_models::{Model, ModelConfig, ONNX_INPUT, ONNX_OUTPUT};
use yolo_onnx::{AttrValue, GraphProto, Message, ModelProto, NodeProto, TensorData};
use yolo_tensor::{Device, Tensor};

fn zoo(name: &str) -> Model {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../configs/models")
        .join(name);
    let cfg = ModelConfig::from_file(path).unwrap_or_else(|e| panic!("{e}"));
    Model::new(cfg, 0).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Uniform values in [0, 1) from a fixed hash.
fn noise(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| {
            let h = (i ^ seed.wrapping_mul(0x9e37_79b9)).wrapping_mul(2_654_435_761);
            ((h ^ (h >> 15)).wrapping_mul(0x85eb_ca6b) >> 8) as f32 / 16_777_216.0
        })
        .collect()
}

/// Non-trivial batch-norm statistics and scales (BN and fused convs then differ from the
/// identity-like initial state).
fn perturb_bn(m: &Model) {
    let _g = yolo_tensor::no_grad();
    let named = m.named_tensors();
    let bn: HashSet<String> = named
        .iter()
        .filter_map(|(n, _, _)| n.strip_suffix(".running_var").map(String::from))
        .collect();
    for (k, (name, t, _)) in named.iter().enumerate() {
        let Some((prefix, leaf)) = name.rsplit_once('.') else {
            continue;
        };
        if !bn.contains(prefix) {
            continue;
        }
        let r = noise(t.numel(), k as u32);
        let v: Vec<f32> = r
            .iter()
            .map(|u| match leaf {
                "running_mean" => 0.2 * (u - 0.5),
                "running_var" => 0.5 + u,
                "weight" => 0.6 + 0.8 * u,
                _ => 0.2 * (u - 0.5),
            })
            .collect();
        t.assign(&Tensor::from_vec(v, t.shape(), Device::Cpu).unwrap())
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// A reference interpreter of the ops the exporter emits: naive loops, f32, batch 1.

#[derive(Clone, Debug)]
enum Val {
    F(Vec<usize>, Vec<f32>),
    I(Vec<i64>),
}

impl Val {
    fn f(&self) -> (&[usize], &[f32]) {
        match self {
            Val::F(s, d) => (s, d),
            Val::I(_) => panic!("expected a float tensor"),
        }
    }
    fn i(&self) -> &[i64] {
        match self {
            Val::I(v) => v,
            Val::F(..) => panic!("expected an int64 tensor"),
        }
    }
}

fn strides(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * shape[i + 1];
    }
    s
}

fn attr_ints(n: &NodeProto, name: &str) -> Vec<i64> {
    match n.attr(name) {
        Some(AttrValue::Ints(v)) => v.clone(),
        other => panic!("{}: attribute {name}: {other:?}", n.op_type),
    }
}

fn attr_int(n: &NodeProto, name: &str) -> i64 {
    match n.attr(name) {
        Some(AttrValue::Int(v)) => *v,
        other => panic!("{}: attribute {name}: {other:?}", n.op_type),
    }
}

fn attr_f(n: &NodeProto, name: &str) -> f32 {
    match n.attr(name) {
        Some(AttrValue::Float(v)) => *v,
        other => panic!("{}: attribute {name}: {other:?}", n.op_type),
    }
}

fn attr_s(n: &NodeProto, name: &str) -> String {
    match n.attr(name) {
        Some(AttrValue::String(v)) => v.clone(),
        other => panic!("{}: attribute {name}: {other:?}", n.op_type),
    }
}

fn broadcast2(a: &Val, b: &Val, f: impl Fn(f32, f32) -> f32) -> Val {
    let ((sa, da), (sb, db)) = (a.f(), b.f());
    let r = sa.len().max(sb.len());
    let pad = |s: &[usize]| {
        let mut v = vec![1; r - s.len()];
        v.extend_from_slice(s);
        v
    };
    let (pa, pb) = (pad(sa), pad(sb));
    let out: Vec<usize> = (0..r).map(|i| pa[i].max(pb[i])).collect();
    let (ta, tb) = (strides(&pa), strides(&pb));
    let n: usize = out.iter().product();
    let os = strides(&out);
    let mut v = Vec::with_capacity(n);
    for flat in 0..n {
        let (mut ia, mut ib) = (0, 0);
        for d in 0..r {
            let c = flat / os[d] % out[d];
            if pa[d] != 1 {
                ia += c * ta[d];
            }
            if pb[d] != 1 {
                ib += c * tb[d];
            }
        }
        v.push(f(da[ia], db[ib]));
    }
    Val::F(out, v)
}

fn unary(x: &Val, f: impl Fn(f32) -> f32) -> Val {
    let (s, d) = x.f();
    Val::F(s.to_vec(), d.iter().map(|&v| f(v)).collect())
}

/// erf from the Chebyshev fit of erfc in Numerical Recipes (fractional error < 1.2e-7).
fn erf(x: f32) -> f32 {
    let x = x as f64;
    let t = 1.0 / (1.0 + 0.5 * x.abs());
    let y = t
        * (-x * x - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    (if x >= 0.0 { 1.0 - y } else { y - 1.0 }) as f32
}

fn conv(n: &NodeProto, x: &Val, w: &Val, b: Option<&Val>) -> Val {
    let ((xs, xd), (ws, wd)) = (x.f(), w.f());
    let (st, pads, dil, group) = (
        attr_ints(n, "strides"),
        attr_ints(n, "pads"),
        attr_ints(n, "dilations"),
        attr_int(n, "group") as usize,
    );
    assert_eq!(attr_ints(n, "kernel_shape"), [ws[2] as i64, ws[3] as i64]);
    let (c, h, wd_) = (xs[1], xs[2] as i64, xs[3] as i64);
    let (m, cg, kh, kw) = (ws[0], ws[1], ws[2] as i64, ws[3] as i64);
    assert_eq!(c, cg * group);
    let oh = (h + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) / st[0] + 1;
    let ow = (wd_ + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) / st[1] + 1;
    let mg = m / group;
    let mut out = vec![0f32; m * (oh * ow) as usize];
    for o in 0..m {
        let gi = o / mg;
        let bias = b.map_or(0.0, |b| b.f().1[o]);
        for oy in 0..oh {
            for ox in 0..ow {
                let mut acc = bias as f64;
                for ci in 0..cg {
                    let cin = gi * cg + ci;
                    for ky in 0..kh {
                        let iy = oy * st[0] - pads[0] + ky * dil[0];
                        if iy < 0 || iy >= h {
                            continue;
                        }
                        for kx in 0..kw {
                            let ix = ox * st[1] - pads[1] + kx * dil[1];
                            if ix < 0 || ix >= wd_ {
                                continue;
                            }
                            let xv =
                                xd[(cin * h as usize + iy as usize) * wd_ as usize + ix as usize];
                            let wv = wd[((o * cg + ci) * kh as usize + ky as usize) * kw as usize
                                + kx as usize];
                            acc += xv as f64 * wv as f64;
                        }
                    }
                }
                out[(o * oh as usize + oy as usize) * ow as usize + ox as usize] = acc as f32;
            }
        }
    }
    Val::F(vec![1, m, oh as usize, ow as usize], out)
}

fn max_pool(n: &NodeProto, x: &Val) -> Val {
    let (xs, xd) = x.f();
    let (k, st, pads) = (
        attr_ints(n, "kernel_shape"),
        attr_ints(n, "strides"),
        attr_ints(n, "pads"),
    );
    assert_eq!(attr_int(n, "ceil_mode"), 0);
    let (c, h, w) = (xs[1], xs[2] as i64, xs[3] as i64);
    let oh = (h + pads[0] + pads[2] - k[0]) / st[0] + 1;
    let ow = (w + pads[1] + pads[3] - k[1]) / st[1] + 1;
    let mut out = Vec::with_capacity(c * (oh * ow) as usize);
    for ch in 0..c {
        for oy in 0..oh {
            for ox in 0..ow {
                let mut m = f32::NEG_INFINITY;
                for ky in 0..k[0] {
                    for kx in 0..k[1] {
                        let (iy, ix) = (oy * st[0] - pads[0] + ky, ox * st[1] - pads[1] + kx);
                        if iy >= 0 && iy < h && ix >= 0 && ix < w {
                            m = m.max(
                                xd[(ch * h as usize + iy as usize) * w as usize + ix as usize],
                            );
                        }
                    }
                }
                out.push(m);
            }
        }
    }
    Val::F(vec![1, c, oh as usize, ow as usize], out)
}

fn transpose(x: &Val, perm: &[i64]) -> Val {
    let (s, d) = x.f();
    let out: Vec<usize> = perm.iter().map(|&p| s[p as usize]).collect();
    let (is, os) = (strides(s), strides(&out));
    let v = (0..d.len())
        .map(|flat| {
            let mut src = 0;
            for (k, &p) in perm.iter().enumerate() {
                src += (flat / os[k] % out[k]) * is[p as usize];
            }
            d[src]
        })
        .collect();
    Val::F(out, v)
}

/// Copies `x` restricted to `[start, start + len)` along `axis`.
fn narrow(x: &Val, axis: usize, start: usize, len: usize) -> Val {
    let (s, d) = x.f();
    let outer: usize = s[..axis].iter().product();
    let inner: usize = s[axis + 1..].iter().product();
    let mut v = Vec::with_capacity(outer * len * inner);
    for o in 0..outer {
        let base = o * s[axis] * inner;
        v.extend_from_slice(&d[base + start * inner..base + (start + len) * inner]);
    }
    let mut sh = s.to_vec();
    sh[axis] = len;
    Val::F(sh, v)
}

fn run_graph(g: &GraphProto, input: Vec<f32>) -> Val {
    let mut env: HashMap<String, Val> = HashMap::new();
    for t in &g.initializer {
        let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
        env.insert(
            t.name.clone(),
            match &t.data {
                TensorData::Float(v) => Val::F(dims, v.clone()),
                TensorData::Int64(v) => Val::I(v.clone()),
            },
        );
    }
    let shape: Vec<usize> = g.input[0].shape.iter().map(|&d| d as usize).collect();
    env.insert(g.input[0].name.clone(), Val::F(shape, input));
    for n in &g.node {
        let ins: Vec<Option<&Val>> = n
            .input
            .iter()
            .map(|i| (!i.is_empty()).then(|| &env[i]))
            .collect();
        let x = || ins[0].expect("first input");
        let outs: Vec<Val> = match n.op_type.as_str() {
            "Conv" => vec![conv(n, x(), ins[1].unwrap(), ins.get(2).copied().flatten())],
            "MaxPool" => vec![max_pool(n, x())],
            "BatchNormalization" => {
                let (s, d) = x().f();
                let p: Vec<&[f32]> = ins[1..5].iter().map(|v| v.unwrap().f().1).collect();
                let eps = attr_f(n, "epsilon");
                let hw: usize = s[2..].iter().product();
                let v = d
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| {
                        let c = i / hw % s[1];
                        (v - p[2][c]) / (p[3][c] + eps).sqrt() * p[0][c] + p[1][c]
                    })
                    .collect();
                vec![Val::F(s.to_vec(), v)]
            }
            "Resize" => {
                assert_eq!(attr_s(n, "mode"), "nearest");
                assert_eq!(attr_s(n, "coordinate_transformation_mode"), "asymmetric");
                assert_eq!(attr_s(n, "nearest_mode"), "floor");
                let sc = ins[2].unwrap().f().1;
                let (s, d) = x().f();
                let (oh, ow) = (
                    (s[2] as f32 * sc[2]) as usize,
                    (s[3] as f32 * sc[3]) as usize,
                );
                let mut v = Vec::with_capacity(s[1] * oh * ow);
                for c in 0..s[1] {
                    for y in 0..oh {
                        for xx in 0..ow {
                            let iy = ((y as f32 / sc[2]).floor() as usize).min(s[2] - 1);
                            let ix = ((xx as f32 / sc[3]).floor() as usize).min(s[3] - 1);
                            v.push(d[(c * s[2] + iy) * s[3] + ix]);
                        }
                    }
                }
                vec![Val::F(vec![s[0], s[1], oh, ow], v)]
            }
            "Concat" => {
                let vals: Vec<&Val> = ins.iter().map(|v| v.unwrap()).collect();
                let a = attr_int(n, "axis") as usize;
                let s0 = vals[0].f().0.to_vec();
                let outer: usize = s0[..a].iter().product();
                let mut sh = s0.clone();
                sh[a] = vals.iter().map(|v| v.f().0[a]).sum();
                let mut v = Vec::new();
                for o in 0..outer {
                    for val in &vals {
                        let (s, d) = val.f();
                        let chunk: usize = s[a..].iter().product();
                        v.extend_from_slice(&d[o * chunk..(o + 1) * chunk]);
                    }
                }
                vec![Val::F(sh, v)]
            }
            "Add" => vec![broadcast2(x(), ins[1].unwrap(), |a, b| a + b)],
            "Sub" => vec![broadcast2(x(), ins[1].unwrap(), |a, b| a - b)],
            "Mul" => vec![broadcast2(x(), ins[1].unwrap(), |a, b| a * b)],
            "Div" => vec![broadcast2(x(), ins[1].unwrap(), |a, b| a / b)],
            "Pow" => vec![broadcast2(x(), ins[1].unwrap(), f32::powf)],
            "Sigmoid" => vec![unary(x(), |v| 1.0 / (1.0 + (-v).exp()))],
            "Relu" => vec![unary(x(), |v| v.max(0.0))],
            "Tanh" => vec![unary(x(), f32::tanh)],
            "Erf" => vec![unary(x(), erf)],
            "Softplus" => vec![unary(x(), |v| (v as f64).exp().ln_1p() as f32)],
            "Identity" => vec![x().clone()],
            "LeakyRelu" => {
                let a = attr_f(n, "alpha");
                vec![unary(x(), |v| if v > 0.0 { v } else { a * v })]
            }
            "Elu" => {
                let a = attr_f(n, "alpha");
                vec![unary(
                    x(),
                    |v| if v > 0.0 { v } else { a * (v.exp() - 1.0) },
                )]
            }
            "HardSigmoid" => {
                let (a, b) = (attr_f(n, "alpha"), attr_f(n, "beta"));
                vec![unary(x(), |v| (a * v + b).clamp(0.0, 1.0))]
            }
            "HardSwish" => vec![unary(x(), |v| v * (v / 6.0 + 0.5).clamp(0.0, 1.0))],
            "Clip" => {
                let (lo, hi) = (ins[1].unwrap().f().1[0], ins[2].unwrap().f().1[0]);
                vec![unary(x(), |v| v.clamp(lo, hi))]
            }
            "Reshape" => {
                let sh: Vec<usize> = ins[1].unwrap().i().iter().map(|&d| d as usize).collect();
                let d = x().f().1.to_vec();
                assert_eq!(sh.iter().product::<usize>(), d.len());
                vec![Val::F(sh, d)]
            }
            "Transpose" => vec![transpose(x(), &attr_ints(n, "perm"))],
            "Split" => {
                let a = attr_int(n, "axis") as usize;
                let mut start = 0;
                ins[1]
                    .unwrap()
                    .i()
                    .iter()
                    .map(|&len| {
                        let v = narrow(x(), a, start, len as usize);
                        start += len as usize;
                        v
                    })
                    .collect()
            }
            "Pad" => {
                assert_eq!(attr_s(n, "mode"), "constant");
                let p = ins[1].unwrap().i();
                let (s, d) = x().f();
                let (t, l, b, r) = (p[2] as usize, p[3] as usize, p[6] as usize, p[7] as usize);
                let (oh, ow) = (s[2] + t + b, s[3] + l + r);
                let mut v = vec![0f32; s[1] * oh * ow];
                for c in 0..s[1] {
                    for y in 0..s[2] {
                        for xx in 0..s[3] {
                            v[(c * oh + y + t) * ow + xx + l] = d[(c * s[2] + y) * s[3] + xx];
                        }
                    }
                }
                vec![Val::F(vec![s[0], s[1], oh, ow], v)]
            }
            op => panic!("the reference interpreter has no `{op}`"),
        };
        assert_eq!(outs.len(), n.output.len(), "{}", n.op_type);
        for (name, v) in n.output.iter().zip(outs) {
            env.insert(name.clone(), v);
        }
    }
    env.remove(&g.output[0].name)
        .expect("the output is computed")
}

// ---------------------------------------------------------------------------------------------

/// Checks that every node input exists before the node (graph input, initializer or an earlier
/// output) and that every value is defined once.
fn assert_topological(g: &GraphProto) {
    let mut known: HashSet<&str> = g.input.iter().map(|v| v.name.as_str()).collect();
    for t in &g.initializer {
        assert!(
            known.insert(&t.name),
            "initializer {} defined twice",
            t.name
        );
    }
    for n in &g.node {
        for i in n.input.iter().filter(|i| !i.is_empty()) {
            assert!(
                known.contains(i.as_str()),
                "{} reads `{i}` before it exists",
                n.name
            );
        }
        for o in &n.output {
            assert!(known.insert(o), "`{o}` defined twice");
        }
    }
    for o in &g.output {
        assert!(
            known.contains(o.name.as_str()),
            "output {} is never computed",
            o.name
        );
    }
}

fn op_counts(g: &GraphProto) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for n in &g.node {
        *c.entry(n.op_type.clone()).or_insert(0) += 1;
    }
    c
}

/// Exports at `imgsz`, decodes the bytes, checks the structure, interprets the graph on a
/// noise input and compares with the model's inference output (relative to max(|x|, 0.01));
/// returns the decoded model.
fn export_and_compare(name: &str, m: &Model, imgsz: usize, tol: f32) -> ModelProto {
    let bytes = m
        .to_onnx(imgsz, imgsz)
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .encode();
    let onnx = ModelProto::decode(&bytes).unwrap();
    assert_eq!(onnx.ir_version, 8);
    assert_eq!(onnx.producer_name, "yolo-forge");
    assert_eq!(onnx.opset_import[0].version, 17);
    let g = &onnx.graph;
    assert_eq!(g.input.len(), 1);
    assert_eq!(g.input[0].name, ONNX_INPUT);
    assert_eq!(g.input[0].shape, [1, 3, imgsz as i64, imgsz as i64]);
    assert_eq!(g.output.len(), 1);
    assert_eq!(g.output[0].name, ONNX_OUTPUT);
    let d = m.detect();
    let n: usize = d
        .stride
        .iter()
        .map(|&s| d.na * (imgsz / s as usize).pow(2))
        .sum();
    assert_eq!(g.output[0].shape, [1, n as i64, d.no as i64], "{name}");
    assert_topological(g);

    let xv = noise(3 * imgsz * imgsz, 7);
    let x = Tensor::from_vec(xv.clone(), &[1, 3, imgsz, imgsz], Device::Cpu).unwrap();
    let want = {
        let _g = yolo_tensor::no_grad();
        m.forward(&x, false).unwrap().pred.unwrap()
    };
    let (shape, got) = match run_graph(g, xv) {
        Val::F(s, d) => (s, d),
        Val::I(_) => panic!("int output"),
    };
    assert_eq!(shape, want.shape(), "{name}");
    let want = want.to_vec();
    let mut worst = 0f32;
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        let rel = (a - b).abs() / b.abs().max(1e-2);
        worst = worst.max(rel);
        assert!(
            rel <= tol,
            "{name} output[{i}]: interpreter {a} vs model {b}"
        );
    }
    eprintln!(
        "{name}: {} outputs, max relative difference {worst:.2e}",
        want.len()
    );
    onnx
}

/// Every parameter the graph uses is an initializer with its `state_dict` name and size; the
/// other float initializers are the head's grids (plus scalar constants).
fn assert_initializers(m: &Model, g: &GraphProto, skip: &[&str], imgsz: usize) {
    let inits: HashMap<&str, usize> = g
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.data.len()))
        .collect();
    let mut params = 0;
    for (n, t, _) in m.named_tensors() {
        if n.ends_with(".anchors") || skip.iter().any(|s| n.contains(s)) {
            continue;
        }
        assert_eq!(inits.get(n.as_str()), Some(&t.numel()), "initializer {n}");
        params += t.numel();
    }
    let d = m.detect();
    let grids: usize = d
        .stride
        .iter()
        .map(|&s| (imgsz / s as usize).pow(2) * 2 + d.na * 2)
        .sum();
    let names: HashSet<String> = m.named_tensors().into_iter().map(|(n, _, _)| n).collect();
    let (mut grid_n, mut consts) = (0, 0);
    for t in &g.initializer {
        let TensorData::Float(_) = t.data else {
            continue;
        };
        if t.name.contains(".grid.") || t.name.contains(".anchor_grid.") {
            grid_n += t.data.len();
        } else if !names.contains(&t.name) {
            // scalars of the activations and the head, and Resize scales
            assert!(
                t.dims.is_empty() || t.dims == [4],
                "unexpected constant {}",
                t.name
            );
            consts += t.data.len();
        }
    }
    assert_eq!(grid_n, grids, "grid and anchor-grid constants");
    let floats = yolo_onnx::float_initializer_elements(g);
    assert_eq!(floats, params + grids + consts);
    assert!(consts < 32, "{consts} constant values");
}

#[test]
fn yolov5n_fused_export_matches_the_model() {
    let mut m = zoo("yolov5n.yaml");
    perturb_bn(&m);
    m.fuse().unwrap();
    let onnx = export_and_compare("yolov5n", &m, 64, 1e-4);
    let g = &onnx.graph;
    let c = op_counts(g);
    let convs = m
        .named_tensors()
        .iter()
        .filter(|(n, t, _)| n.ends_with(".weight") && t.shape().len() == 4)
        .count();
    assert_eq!(c["Conv"], convs, "one Conv node per fused conv");
    assert_eq!(convs, 60);
    // every conv but the head's is Conv+SiLU; the head adds one sigmoid per level
    assert_eq!(c["Sigmoid"], convs);
    assert_eq!(c["MaxPool"], 3, "SPPF: one pool applied three times");
    assert_eq!(c["Resize"], 2);
    // 4 Concat rows + 8 C3 + SPPF + per level (xy, wh, conf) + the level concatenation
    assert_eq!(c["Concat"], 4 + 8 + 1 + 3 + 1);
    // 7 backbone bottlenecks with a shortcut + the grid offset of each level
    assert_eq!(c["Add"], 7 + 3);
    assert_eq!(c["Split"], 3);
    assert!(!c.contains_key("BatchNormalization"));
    assert_initializers(&m, g, &[], 64);
    let meta: HashMap<_, _> = onnx.metadata_props.iter().cloned().collect();
    assert_eq!(meta["stride"], "32");
    assert!(meta["names"].starts_with("{0: '0', 1: '1'"));
}

#[test]
fn yolov5n_unfused_export_has_batch_norms_and_matches() {
    let m = zoo("yolov5n.yaml");
    perturb_bn(&m);
    let onnx = export_and_compare("yolov5n unfused", &m, 64, 1e-4);
    let c = op_counts(&onnx.graph);
    assert_eq!(c["BatchNormalization"], 57);
    let named = m.named_tensors();
    let inits: HashSet<&str> = onnx
        .graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    for (n, _, _) in &named {
        assert!(n.ends_with(".anchors") || inits.contains(n.as_str()), "{n}");
    }
}

#[test]
fn yolov7_tiny_fused_export_matches_the_model() {
    let mut m = zoo("yolov7-tiny.yaml");
    perturb_bn(&m);
    m.fuse().unwrap();
    let onnx = export_and_compare("yolov7-tiny", &m, 64, 1e-4);
    let g = &onnx.graph;
    let c = op_counts(g);
    let convs = m
        .named_tensors()
        .iter()
        .filter(|(n, t, _)| n.ends_with(".weight") && t.shape().len() == 4)
        .count();
    assert_eq!(c["Conv"], convs);
    assert_eq!(c["LeakyRelu"], convs - 3, "every conv but the head's");
    assert_eq!(c["Sigmoid"], 3);
    // 3 MP rows, SPPCSPC-like pools of the tiny model (5, 9, 13 as SP rows)
    assert_eq!(c["MaxPool"], 6);
    assert_eq!(c["Resize"], 2);
    assert!(!c.contains_key("BatchNormalization"));
    // the implicit layers are folded into the head's convs
    assert_initializers(&m, g, &[".ia.", ".im."], 64);
}

#[test]
fn yolov7_tiny_unfused_head_exports_implicit_layers() {
    let m = zoo("yolov7-tiny.yaml");
    perturb_bn(&m);
    let onnx = export_and_compare("yolov7-tiny unfused", &m, 64, 1e-4);
    let inits: HashSet<&str> = onnx
        .graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    let head = m.nodes.len() - 1;
    for n in ["ia.0", "im.2"] {
        assert!(
            inits.contains(format!("model.{head}.{n}.implicit").as_str()),
            "{n}"
        );
    }
}

/// Every exportable block, one activation per run (rows with an explicit activation keep
/// theirs).
fn kitchen_sink(act: &str, head: &str) -> String {
    format!(
        r#"
nc: 3
depth_multiple: 0.33
width_multiple: 0.25
activation: {act}
anchors:
  - [10,13, 16,30, 33,23]
  - [30,61, 62,45, 59,119]
backbone:
  [[-1, 1, Focus, [64, 3]],                          # 0 /2
   [-1, 1, Conv, [128, 3, 2]],                       # 1 /4
   [-1, 3, BottleneckCSP, [128]],                    # 2
   [-1, 1, GhostConv, [128, 3, 1]],                  # 3
   [-1, 3, C3Ghost, [128]],                          # 4
   [-1, 3, C3x, [128]],                              # 5
   [-1, 1, GhostBottleneck, [128, 3, 1]],            # 6
   [-1, 1, DownC, [256]],                            # 7 /8
   [-1, 1, RepConv, [256, 3, 1]],                    # 8
   [-1, 1, RepConv, [256, 3, 2]],                    # 9 /16
   [-1, 1, SPP, [256, [3, 5]]],                      # 10
   [-1, 1, SPPCSPC, [256]],                          # 11
   [-1, 6, Bottleneck, [256]],                       # 12 (two repeats)
   [-1, 1, CrossConv, [256, 3, 1]],                  # 13
  ]
head:
  [[-1, 1, nn.Upsample, [None, 2, 'nearest']],       # 14 /8
   [[-1, 8], 1, Concat, [1]],                        # 15
   [-1, 1, Conv, [128, 1, 1, None, 1, nn.ReLU6()]],  # 16
   [-1, 1, SP, [5]],                                 # 17
   [[-1, 16], 1, Shortcut, [1]],                     # 18
   [-1, 1, nn.ZeroPad2d, [[1, 0, 1, 0]]],            # 19
   [-1, 1, nn.MaxPool2d, [2, 1, 0]],                 # 20
   [-1, 1, Conv, [128, 3, 1, None, 1, nn.Mish()]],   # 21
   [-1, 1, Contract, [2]],                           # 22 /16
   [-1, 1, Expand, [2]],                             # 23 /8
   [-1, 1, ReOrg, []],                               # 24 /16
   [-1, 1, GhostBottleneck, [256, 3, 2]],            # 25 /32
   [-1, 1, DWConv, [256, 3, 1]],                     # 26
   [-1, 1, nn.Upsample, [None, 2, 'nearest']],       # 27 /16
   [-1, 1, MP, []],                                  # 28 /32
   [-1, 1, nn.Upsample, [None, 4, 'nearest']],       # 29 /8
   [-1, 1, SPPF, [64, 3]],                           # 30
   [[30, 11], 1, {head}, [nc, anchors]],             # 31
  ]
"#
    )
}

#[test]
fn every_block_and_activation_exports_exactly() {
    let acts = [
        "nn.SiLU()",
        "nn.GELU()",
        "nn.GELU(approximate='tanh')",
        "nn.ReLU()",
        "nn.ReLU6()",
        "nn.LeakyReLU(0.1)",
        "nn.ELU(alpha=0.7)",
        "nn.Hardswish()",
        "nn.Hardsigmoid()",
        "nn.Mish()",
        "nn.Sigmoid()",
        "nn.Tanh()",
        "nn.Identity()",
    ];
    for (k, act) in acts.iter().enumerate() {
        let head = ["Detect", "IDetect"][k % 2];
        let cfg = ModelConfig::from_yaml(&kitchen_sink(act, head)).unwrap();
        let mut m = Model::new(cfg, k as u64).unwrap_or_else(|e| panic!("{act}: {e}"));
        perturb_bn(&m);
        export_and_compare(&format!("{act} unfused ({head})"), &m, 64, 1e-4);
        m.fuse().unwrap();
        let onnx = export_and_compare(&format!("{act} fused ({head})"), &m, 64, 1e-4);
        let c = op_counts(&onnx.graph);
        // BottleneckCSP keeps its batch norm after fusing, as upstream
        assert_eq!(c.get("BatchNormalization"), Some(&1), "{act}");
        for op in ["Pad", "Clip", "Softplus", "Resize", "MaxPool", "Transpose"] {
            assert!(c.contains_key(op), "{act}: no {op}");
        }
    }
}

#[test]
fn iaux_detect_exports_its_main_levels() {
    let yaml = kitchen_sink("nn.SiLU()", "IAuxDetect").replace(
        "[[30, 11], 1, IAuxDetect",
        "[[30, 11, 30, 11], 1, IAuxDetect",
    );
    let cfg = ModelConfig::from_yaml(&yaml).unwrap();
    let mut m = Model::new(cfg, 3).unwrap();
    perturb_bn(&m);
    export_and_compare("IAuxDetect unfused", &m, 64, 1e-4);
    m.fuse().unwrap();
    let onnx = export_and_compare("IAuxDetect fused", &m, 64, 1e-4);
    assert!(!onnx
        .graph
        .initializer
        .iter()
        .any(|t| t.name.contains(".m2.")));
}

#[test]
fn unsupported_blocks_and_activations_are_clear_errors() {
    let m = zoo("yolov5s-cbam.yaml");
    let e = m.to_onnx(64, 64).unwrap_err().to_string();
    assert!(
        e.contains("(CBAM)") && e.contains("ONNX export does not support it yet"),
        "{e}"
    );
    assert!(e.starts_with("layer "), "{e}");
    let m = zoo("yolov5s-frelu.yaml");
    let e = m.to_onnx(64, 64).unwrap_err().to_string();
    assert!(
        e.contains("layer 0 (Conv)") && e.contains("activation FReLU"),
        "{e}"
    );
    let m = zoo("yolov5s-transformer.yaml");
    let e = m.to_onnx(64, 64).unwrap_err().to_string();
    assert!(
        e.contains("(C3TR)") && e.contains("ONNX export does not support"),
        "{e}"
    );
    // sizes the strides do not divide
    let m = zoo("yolov5n.yaml");
    let e = m.to_onnx(100, 100).unwrap_err().to_string();
    assert!(e.contains("multiple of the largest stride 32"), "{e}");
    assert!(m.to_onnx(0, 64).is_err());
}

#[test]
fn save_onnx_writes_atomically() {
    let dir = std::env::temp_dir().join(format!("yf-onnx-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut m = zoo("yolov5n.yaml");
    m.fuse().unwrap();
    let p = dir.join("m.onnx");
    m.save_onnx(&p, 64, 64).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..2], [0x08, 0x08], "ir_version 8 first");
    let back = ModelProto::decode(&bytes).unwrap();
    assert_eq!(back.graph.output[0].shape, [1, 252, 85]);
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file left");
    // a directory that does not exist is an I/O error, not a panic
    assert!(m.save_onnx(dir.join("no/such/dir/m.onnx"), 64, 64).is_err());
    std::fs::remove_dir_all(&dir).ok();
}
