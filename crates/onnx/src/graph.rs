//! [`GraphBuilder`]: builds an ONNX graph op by op, with static shape inference, so that
//! exporters can ask for a value's shape (a detection head needs each level's grid size) and a
//! wrong wiring fails at export with the op's name, not later in a runtime.

use crate::error::{shape_err, OnnxError, Result};
use crate::proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, TensorData, TensorProto, ValueInfoProto,
};
use std::collections::{HashMap, HashSet};

/// A value of the graph being built: its name and static shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    name: String,
    shape: Vec<usize>,
}

impl Value {
    /// The value's name in the graph.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Its static shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    /// Its rank.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
}

/// Geometry of a 2-D convolution or pooling window (rows, cols), as ONNX attributes take it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Kernel size (pooling only; a convolution takes it from its weight).
    pub kernel: (usize, usize),
    /// Stride.
    pub stride: (usize, usize),
    /// Padding on each side (top = bottom, left = right).
    pub padding: (usize, usize),
    /// Dilation (convolution only).
    pub dilation: (usize, usize),
}

/// Builds a [`GraphProto`]: graph inputs, initializers and nodes in topological order, each
/// output's shape known. Node and value names are `/<scope>/<Op>_<n>` (see
/// [`GraphBuilder::set_scope`]); initializers take the names their callers give.
#[derive(Debug)]
pub struct GraphBuilder {
    graph: GraphProto,
    shapes: HashMap<String, Vec<usize>>,
    produced_by: HashMap<String, usize>,
    scalars: HashMap<u32, Value>,
    taken: HashSet<String>,
    scope: String,
    counter: usize,
}

fn broadcast(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r {
            a[i + a.len() - r]
        } else {
            1
        };
        let db = if i + b.len() >= r {
            b[i + b.len() - r]
        } else {
            1
        };
        out[i] = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return shape_err(op, format!("shapes {a:?} and {b:?} do not broadcast")),
        };
    }
    Ok(out)
}

fn axis_of(op: &str, axis: i64, rank: usize) -> Result<usize> {
    let a = if axis < 0 { axis + rank as i64 } else { axis };
    if a < 0 || a >= rank as i64 {
        return shape_err(op, format!("axis {axis} out of range for rank {rank}"));
    }
    Ok(a as usize)
}

fn window_out(op: &str, n: usize, k: usize, s: usize, p: usize, d: usize) -> Result<usize> {
    let span = d * (k.max(1) - 1) + 1;
    if s == 0 || n + 2 * p < span {
        return shape_err(
            op,
            format!("window {k} (dilation {d}, stride {s}, padding {p}) does not fit size {n}"),
        );
    }
    Ok((n + 2 * p - span) / s + 1)
}

fn ints(v: &[usize]) -> Vec<i64> {
    v.iter().map(|&x| x as i64).collect()
}

impl GraphBuilder {
    /// An empty graph called `name`.
    pub fn new(name: &str) -> GraphBuilder {
        GraphBuilder {
            graph: GraphProto {
                name: name.into(),
                ..GraphProto::default()
            },
            shapes: HashMap::new(),
            produced_by: HashMap::new(),
            scalars: HashMap::new(),
            taken: HashSet::new(),
            scope: String::new(),
            counter: 0,
        }
    }

    /// Sets the scope that names the next nodes (e.g. `model.3`, the row being exported).
    pub fn set_scope(&mut self, scope: &str) {
        self.scope = scope.to_string();
    }

    /// The nodes added so far.
    pub fn nodes(&self) -> &[NodeProto] {
        &self.graph.node
    }

    /// The initializers added so far.
    pub fn initializers(&self) -> &[TensorProto] {
        &self.graph.initializer
    }

    fn claim(&mut self, name: &str) -> Result<()> {
        if name.is_empty() || !self.taken.insert(name.to_string()) {
            return Err(OnnxError::Graph(format!(
                "value name `{name}` is empty or already used"
            )));
        }
        Ok(())
    }

    fn value(&mut self, name: &str, shape: Vec<usize>) -> Value {
        self.shapes.insert(name.to_string(), shape.clone());
        Value {
            name: name.to_string(),
            shape,
        }
    }

    /// Declares a FLOAT graph input of a static shape.
    pub fn input(&mut self, name: &str, shape: &[usize]) -> Result<Value> {
        self.claim(name)?;
        self.graph.input.push(ValueInfoProto::float(name, shape));
        Ok(self.value(name, shape.to_vec()))
    }

    /// Adds a FLOAT initializer (a constant input, e.g. a weight) of `shape`.
    pub fn initializer(&mut self, name: &str, shape: &[usize], data: Vec<f32>) -> Result<Value> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(OnnxError::Graph(format!(
                "initializer `{name}`: shape {shape:?} for {} values",
                data.len()
            )));
        }
        self.claim(name)?;
        self.graph
            .initializer
            .push(TensorProto::float(name, &ints(shape), data));
        Ok(self.value(name, shape.to_vec()))
    }

    /// Adds an INT64 initializer (shapes, axes, pads) with a generated name.
    fn const_i64(&mut self, data: Vec<i64>) -> Result<Value> {
        let name = self.fresh("const");
        let n = data.len();
        self.graph
            .initializer
            .push(TensorProto::int64(&name, &[n as i64], data));
        Ok(self.value(&name, vec![n]))
    }

    /// A FLOAT scalar constant (shape `[]`), shared between all uses of the same value.
    pub fn scalar(&mut self, v: f32) -> Result<Value> {
        if let Some(s) = self.scalars.get(&v.to_bits()) {
            return Ok(s.clone());
        }
        let name = self.fresh("const");
        self.graph
            .initializer
            .push(TensorProto::float(&name, &[], vec![v]));
        let val = self.value(&name, Vec::new());
        self.scalars.insert(v.to_bits(), val.clone());
        Ok(val)
    }

    fn fresh(&mut self, op: &str) -> String {
        loop {
            self.counter += 1;
            let name = if self.scope.is_empty() {
                format!("/{op}_{}", self.counter)
            } else {
                format!("/{}/{op}_{}", self.scope, self.counter)
            };
            if self.taken.insert(name.clone()) {
                return name;
            }
        }
    }

    fn check_known(&self, op: &str, v: &Value) -> Result<()> {
        match self.shapes.get(&v.name) {
            Some(s) if *s == v.shape => Ok(()),
            _ => Err(OnnxError::Graph(format!(
                "{op}: input `{}` is not a value of this graph",
                v.name
            ))),
        }
    }

    /// Adds a node of any op (`""` names an omitted optional input). The caller gives the
    /// output shapes: the escape hatch for ops the typed helpers below do not cover.
    pub fn node(
        &mut self,
        op: &str,
        inputs: &[Option<&Value>],
        attrs: Vec<AttributeProto>,
        out_shapes: Vec<Vec<usize>>,
    ) -> Result<Vec<Value>> {
        for v in inputs.iter().flatten() {
            self.check_known(op, v)?;
        }
        let name = self.fresh(op);
        let outs: Vec<String> = if out_shapes.len() == 1 {
            vec![name.clone()]
        } else {
            (0..out_shapes.len())
                .map(|i| format!("{name}:{i}"))
                .collect()
        };
        for o in &outs {
            if o != &name {
                self.claim(o)?;
            }
        }
        let idx = self.graph.node.len();
        self.graph.node.push(NodeProto {
            input: inputs
                .iter()
                .map(|v| v.map_or(String::new(), |v| v.name.clone()))
                .collect(),
            output: outs.clone(),
            name: name.clone(),
            op_type: op.to_string(),
            attribute: attrs,
            ..NodeProto::default()
        });
        Ok(outs
            .iter()
            .zip(out_shapes)
            .map(|(o, s)| {
                self.produced_by.insert(o.clone(), idx);
                self.value(o, s)
            })
            .collect())
    }

    fn node1(
        &mut self,
        op: &str,
        inputs: &[Option<&Value>],
        attrs: Vec<AttributeProto>,
        shape: Vec<usize>,
    ) -> Result<Value> {
        let mut v = self.node(op, inputs, attrs, vec![shape])?;
        Ok(v.remove(0))
    }

    /// An elementwise op of one input that keeps its shape (`Sigmoid`, `Relu`, `Tanh`, `Erf`,
    /// `Softplus`, `HardSwish`, `LeakyRelu` with `alpha`, …).
    pub fn unary(&mut self, op: &str, x: &Value, attrs: Vec<AttributeProto>) -> Result<Value> {
        self.node1(op, &[Some(x)], attrs, x.shape.clone())
    }

    /// A broadcasting binary op (`Add`, `Sub`, `Mul`, `Div`, `Pow`, `Max`).
    pub fn binary(&mut self, op: &str, a: &Value, b: &Value) -> Result<Value> {
        let s = broadcast(op, &a.shape, &b.shape)?;
        self.node1(op, &[Some(a), Some(b)], Vec::new(), s)
    }

    /// `Add`.
    pub fn add(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Add", a, b)
    }

    /// `Mul`.
    pub fn mul(&mut self, a: &Value, b: &Value) -> Result<Value> {
        self.binary("Mul", a, b)
    }

    /// `Mul` by a scalar constant.
    pub fn mul_scalar(&mut self, a: &Value, s: f32) -> Result<Value> {
        let c = self.scalar(s)?;
        self.binary("Mul", a, &c)
    }

    /// `Add` of a scalar constant.
    pub fn add_scalar(&mut self, a: &Value, s: f32) -> Result<Value> {
        let c = self.scalar(s)?;
        self.binary("Add", a, &c)
    }

    /// `Clip(x, lo, hi)`.
    pub fn clip(&mut self, x: &Value, lo: f32, hi: f32) -> Result<Value> {
        let (l, h) = (self.scalar(lo)?, self.scalar(hi)?);
        self.node1(
            "Clip",
            &[Some(x), Some(&l), Some(&h)],
            Vec::new(),
            x.shape.clone(),
        )
    }

    /// `Conv` over an N×C×H×W input with an M×(C/group)×kh×kw weight and optional bias of M.
    pub fn conv(
        &mut self,
        x: &Value,
        w: &Value,
        b: Option<&Value>,
        win: Window,
        group: usize,
    ) -> Result<Value> {
        let (xs, ws) = (&x.shape, &w.shape);
        if xs.len() != 4 || ws.len() != 4 || group == 0 {
            return shape_err(
                "Conv",
                format!("input {xs:?} and weight {ws:?} must be 4-D, group {group} positive"),
            );
        }
        if xs[1] != ws[1] * group || ws[0] % group != 0 {
            return shape_err(
                "Conv",
                format!("input {xs:?} does not fit weight {ws:?} with group {group}"),
            );
        }
        if let Some(b) = b {
            if b.shape != [ws[0]] {
                return shape_err("Conv", format!("bias {:?} for {} outputs", b.shape, ws[0]));
            }
        }
        let oh = window_out(
            "Conv",
            xs[2],
            ws[2],
            win.stride.0,
            win.padding.0,
            win.dilation.0,
        )?;
        let ow = window_out(
            "Conv",
            xs[3],
            ws[3],
            win.stride.1,
            win.padding.1,
            win.dilation.1,
        )?;
        let (ph, pw) = (win.padding.0 as i64, win.padding.1 as i64);
        let attrs = vec![
            AttributeProto::ints("dilations", &ints(&[win.dilation.0, win.dilation.1])),
            AttributeProto::int("group", group as i64),
            AttributeProto::ints("kernel_shape", &ints(&ws[2..])),
            AttributeProto::ints("pads", &[ph, pw, ph, pw]),
            AttributeProto::ints("strides", &ints(&[win.stride.0, win.stride.1])),
        ];
        self.node1(
            "Conv",
            &[Some(x), Some(w), b],
            attrs,
            vec![xs[0], ws[0], oh, ow],
        )
    }

    /// `BatchNormalization` (inference form) over N×C×H×W with per-channel scale, bias, mean
    /// and variance.
    pub fn batch_norm(&mut self, x: &Value, params: [&Value; 4], eps: f32) -> Result<Value> {
        if x.rank() < 2 || params.iter().any(|p| p.shape != [x.shape[1]]) {
            return shape_err(
                "BatchNormalization",
                format!("input {:?} needs per-channel parameters", x.shape),
            );
        }
        let ins: Vec<Option<&Value>> = std::iter::once(Some(x))
            .chain(params.iter().map(|p| Some(*p)))
            .collect();
        self.node1(
            "BatchNormalization",
            &ins,
            vec![AttributeProto::float("epsilon", eps)],
            x.shape.clone(),
        )
    }

    /// `MaxPool` over N×C×H×W (floor mode, padding with −∞ as PyTorch).
    pub fn max_pool(&mut self, x: &Value, win: Window) -> Result<Value> {
        if x.rank() != 4 {
            return shape_err("MaxPool", format!("input {:?} must be 4-D", x.shape));
        }
        let (k, s, p) = (win.kernel, win.stride, win.padding);
        if 2 * p.0 > k.0 || 2 * p.1 > k.1 {
            return shape_err(
                "MaxPool",
                format!("padding {p:?} over half the kernel {k:?}"),
            );
        }
        let oh = window_out("MaxPool", x.shape[2], k.0, s.0, p.0, 1)?;
        let ow = window_out("MaxPool", x.shape[3], k.1, s.1, p.1, 1)?;
        let (ph, pw) = (p.0 as i64, p.1 as i64);
        let attrs = vec![
            AttributeProto::int("ceil_mode", 0),
            AttributeProto::ints("kernel_shape", &ints(&[k.0, k.1])),
            AttributeProto::ints("pads", &[ph, pw, ph, pw]),
            AttributeProto::ints("strides", &ints(&[s.0, s.1])),
        ];
        let sh = vec![x.shape[0], x.shape[1], oh, ow];
        self.node1("MaxPool", &[Some(x)], attrs, sh)
    }

    /// Nearest-neighbour upsampling of N×C×H×W by integer factors: `Resize` with scales,
    /// `asymmetric` coordinates and `floor` rounding (PyTorch's `nearest`).
    pub fn resize_nearest(&mut self, x: &Value, sh: usize, sw: usize) -> Result<Value> {
        if x.rank() != 4 || sh == 0 || sw == 0 {
            return shape_err(
                "Resize",
                format!(
                    "input {:?} must be 4-D, scales ({sh}, {sw}) positive",
                    x.shape
                ),
            );
        }
        let name = self.fresh("scales");
        self.graph.initializer.push(TensorProto::float(
            &name,
            &[4],
            vec![1.0, 1.0, sh as f32, sw as f32],
        ));
        let scales = self.value(&name, vec![4]);
        let attrs = vec![
            AttributeProto::string("coordinate_transformation_mode", "asymmetric"),
            AttributeProto::string("mode", "nearest"),
            AttributeProto::string("nearest_mode", "floor"),
        ];
        let s = vec![x.shape[0], x.shape[1], x.shape[2] * sh, x.shape[3] * sw];
        self.node1("Resize", &[Some(x), None, Some(&scales)], attrs, s)
    }

    /// `Concat` along `axis` (negative counts from the end).
    pub fn concat(&mut self, xs: &[&Value], axis: i64) -> Result<Value> {
        let Some(first) = xs.first() else {
            return shape_err("Concat", "no inputs");
        };
        let a = axis_of("Concat", axis, first.rank())?;
        let mut s = first.shape.clone();
        for x in &xs[1..] {
            let same_rest = x.rank() == s.len()
                && x.shape
                    .iter()
                    .zip(&s)
                    .enumerate()
                    .all(|(i, (p, q))| i == a || p == q);
            if !same_rest {
                return shape_err(
                    "Concat",
                    format!(
                        "shapes {:?} and {:?} differ off axis {axis}",
                        first.shape, x.shape
                    ),
                );
            }
            s[a] += x.shape[a];
        }
        let ins: Vec<Option<&Value>> = xs.iter().map(|v| Some(*v)).collect();
        self.node1(
            "Concat",
            &ins,
            vec![AttributeProto::int("axis", a as i64)],
            s,
        )
    }

    /// `Reshape` to a static shape of the same size.
    pub fn reshape(&mut self, x: &Value, shape: &[usize]) -> Result<Value> {
        let (n, m): (usize, usize) = (x.shape.iter().product(), shape.iter().product());
        if n != m {
            return shape_err("Reshape", format!("{:?} to {shape:?}", x.shape));
        }
        let s = self.const_i64(ints(shape))?;
        self.node1("Reshape", &[Some(x), Some(&s)], Vec::new(), shape.to_vec())
    }

    /// `Transpose` with a permutation of the axes.
    pub fn transpose(&mut self, x: &Value, perm: &[usize]) -> Result<Value> {
        let mut seen = vec![false; x.rank()];
        for &p in perm {
            if p >= x.rank() || std::mem::replace(&mut seen[p], true) {
                return shape_err("Transpose", format!("{perm:?} for rank {}", x.rank()));
            }
        }
        if perm.len() != x.rank() {
            return shape_err("Transpose", format!("{perm:?} for rank {}", x.rank()));
        }
        let s = perm.iter().map(|&p| x.shape[p]).collect();
        self.node1(
            "Transpose",
            &[Some(x)],
            vec![AttributeProto::ints("perm", &ints(perm))],
            s,
        )
    }

    /// `Split` along `axis` into parts of the given sizes.
    pub fn split(&mut self, x: &Value, axis: i64, sizes: &[usize]) -> Result<Vec<Value>> {
        let a = axis_of("Split", axis, x.rank())?;
        if sizes.iter().sum::<usize>() != x.shape[a] || sizes.contains(&0) {
            return shape_err(
                "Split",
                format!("sizes {sizes:?} for axis {a} of {:?}", x.shape),
            );
        }
        let sp = self.const_i64(ints(sizes))?;
        let outs = sizes
            .iter()
            .map(|&n| {
                let mut s = x.shape.clone();
                s[a] = n;
                s
            })
            .collect();
        self.node(
            "Split",
            &[Some(x), Some(&sp)],
            vec![AttributeProto::int("axis", a as i64)],
            outs,
        )
    }

    /// `Pad` of N×C×H×W with zeros: (left, right, top, bottom) as `nn.ZeroPad2d`.
    pub fn pad2d(&mut self, x: &Value, pads: [usize; 4]) -> Result<Value> {
        if x.rank() != 4 {
            return shape_err("Pad", format!("input {:?} must be 4-D", x.shape));
        }
        let [l, r, t, b] = pads;
        let p = self.const_i64(ints(&[0, 0, t, l, 0, 0, b, r]))?;
        let s = vec![
            x.shape[0],
            x.shape[1],
            x.shape[2] + t + b,
            x.shape[3] + l + r,
        ];
        self.node1(
            "Pad",
            &[Some(x), Some(&p)],
            vec![AttributeProto::string("mode", "constant")],
            s,
        )
    }

    /// Makes `v` a graph output called `name` (renaming the node output that produces it; a
    /// graph input or initializer gets an `Identity` node).
    pub fn output(&mut self, v: &Value, name: &str) -> Result<()> {
        self.check_known("output", v)?;
        let v = if self.produced_by.contains_key(&v.name) {
            v.clone()
        } else {
            self.unary("Identity", v, Vec::new())?
        };
        if v.name != name {
            self.rename(&v.name, name)?;
        }
        self.graph
            .output
            .push(ValueInfoProto::float(name, &v.shape));
        Ok(())
    }

    fn rename(&mut self, old: &str, name: &str) -> Result<()> {
        self.claim(name)?;
        let Some(i) = self.produced_by.remove(old) else {
            return Err(OnnxError::Graph(format!("`{old}` is not a node output")));
        };
        for n in &mut self.graph.node[i..] {
            for s in n.output.iter_mut().chain(n.input.iter_mut()) {
                if s == old {
                    *s = name.to_string();
                }
            }
        }
        for out in &mut self.graph.output {
            if out.name == old {
                out.name = name.to_string();
            }
        }
        self.produced_by.insert(name.to_string(), i);
        if let Some(s) = self.shapes.remove(old) {
            self.shapes.insert(name.to_string(), s);
        }
        Ok(())
    }

    /// The finished graph.
    pub fn finish(self) -> GraphProto {
        self.graph
    }

    /// The finished graph in a model at `opset` (see [`ModelProto::new`]).
    pub fn into_model(self, opset: i64) -> ModelProto {
        ModelProto::new(self.finish(), opset)
    }
}

/// Number of elements of every FLOAT initializer, summed.
pub fn float_initializer_elements(g: &GraphProto) -> usize {
    g.initializer
        .iter()
        .filter(|t| matches!(t.data, TensorData::Float(_)))
        .map(|t| t.data.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(k: usize, s: usize, p: usize) -> Window {
        Window {
            kernel: (k, k),
            stride: (s, s),
            padding: (p, p),
            dilation: (1, 1),
        }
    }

    #[test]
    fn shapes_are_inferred() {
        let mut g = GraphBuilder::new("t");
        let x = g.input("images", &[1, 3, 64, 64]).unwrap();
        let w = g.initializer("w", &[8, 3, 3, 3], vec![0.0; 216]).unwrap();
        let b = g.initializer("b", &[8], vec![0.0; 8]).unwrap();
        let y = g.conv(&x, &w, Some(&b), win(3, 2, 1), 1).unwrap();
        assert_eq!(y.shape(), [1, 8, 32, 32]);
        let p = g.max_pool(&y, win(5, 1, 2)).unwrap();
        assert_eq!(p.shape(), [1, 8, 32, 32]);
        let m = g.max_pool(&y, win(2, 2, 0)).unwrap();
        assert_eq!(m.shape(), [1, 8, 16, 16]);
        let u = g.resize_nearest(&m, 2, 2).unwrap();
        let c = g.concat(&[&y, &u], 1).unwrap();
        assert_eq!(c.shape(), [1, 16, 32, 32]);
        let r = g.reshape(&c, &[1, 2, 8, 32, 32]).unwrap();
        let t = g.transpose(&r, &[0, 1, 3, 4, 2]).unwrap();
        assert_eq!(t.shape(), [1, 2, 32, 32, 8]);
        let parts = g.split(&t, -1, &[2, 2, 4]).unwrap();
        assert_eq!(parts[2].shape(), [1, 2, 32, 32, 4]);
        let grid = g
            .initializer("grid", &[1, 1, 32, 32, 2], vec![0.0; 2048])
            .unwrap();
        let s = g.add(&parts[0], &grid).unwrap();
        assert_eq!(s.shape(), [1, 2, 32, 32, 2]);
        g.output(&s, "output0").unwrap();
        let gp = g.finish();
        assert_eq!(gp.output[0].name, "output0");
        assert_eq!(gp.node.last().unwrap().output, ["output0"]);
        let split = gp.node.iter().find(|n| n.op_type == "Split").unwrap();
        assert_eq!(split.output.len(), 3);
    }

    #[test]
    fn bad_wiring_is_an_error() {
        let mut g = GraphBuilder::new("t");
        let x = g.input("x", &[1, 4, 8, 8]).unwrap();
        let w = g.initializer("w", &[8, 3, 1, 1], vec![0.0; 24]).unwrap();
        let e = g
            .conv(&x, &w, None, win(1, 1, 0), 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("Conv"), "{e}");
        let y = g.input("y", &[1, 4, 4, 4]).unwrap();
        assert!(g.concat(&[&x, &y], 1).is_err());
        assert!(g.add(&x, &y).is_err());
        assert!(g.input("x", &[1]).is_err(), "names are unique");
        assert!(g.initializer("z", &[2], vec![1.0]).is_err());
        assert!(g.reshape(&x, &[3, 3]).is_err());
        assert!(g.transpose(&x, &[0, 1, 1, 2]).is_err());
        assert!(g.max_pool(&x, win(3, 1, 2)).is_err());
        let stranger = Value {
            name: "nope".into(),
            shape: vec![1],
        };
        assert!(g.unary("Relu", &stranger, Vec::new()).is_err());
    }

    #[test]
    fn scalars_are_shared() {
        let mut g = GraphBuilder::new("t");
        let a = g.scalar(2.0).unwrap();
        let b = g.scalar(2.0).unwrap();
        assert_eq!(a, b);
        assert_eq!(g.initializers().len(), 1);
    }
}
