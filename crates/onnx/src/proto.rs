//! The ONNX messages this crate writes and reads (`onnx.proto`, field numbers as upstream):
//! `ModelProto`, `GraphProto`, `NodeProto`, `AttributeProto`, `TensorProto`,
//! `ValueInfoProto`, `OperatorSetIdProto` and `StringStringEntryProto`.
//!
//! Only the fields an exported detector needs are modelled; unknown fields are skipped when
//! reading, as protobuf readers do. Fields are written in field-number order, repeated
//! `int64` fields unpacked (as `onnx.proto`, a proto2 file, declares them) and tensor data as
//! little-endian `raw_data`.

use crate::error::{OnnxError, Result};
use crate::wire::{
    read_bytes, read_floats, read_ints, read_string, read_varint, Message, Reader, Writer,
};

/// ONNX IR version written by [`ModelProto::new`] (IR 8: ONNX 1.10 to 1.12 era, read by every
/// current runtime).
pub const IR_VERSION: i64 = 8;
/// Default operator-set version of the exported graphs.
pub const OPSET: i64 = 17;
/// `producer_name` of the models this crate writes.
pub const PRODUCER: &str = "yolo-forge";

/// `TensorProto.DataType` FLOAT.
pub const DT_FLOAT: i32 = 1;
/// `TensorProto.DataType` INT64.
pub const DT_INT64: i32 = 7;

/// `onnx.ModelProto`: the file's top-level message.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ModelProto {
    /// `ir_version` (1).
    pub ir_version: i64,
    /// `producer_name` (2).
    pub producer_name: String,
    /// `producer_version` (3).
    pub producer_version: String,
    /// `domain` (4).
    pub domain: String,
    /// `model_version` (5).
    pub model_version: i64,
    /// `doc_string` (6).
    pub doc_string: String,
    /// `graph` (7).
    pub graph: GraphProto,
    /// `opset_import` (8).
    pub opset_import: Vec<OperatorSetId>,
    /// `metadata_props` (14) as (key, value) pairs.
    pub metadata_props: Vec<(String, String)>,
}

/// `onnx.OperatorSetIdProto`: an operator-set domain and version.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OperatorSetId {
    /// `domain` (1); empty is the default `ai.onnx` domain.
    pub domain: String,
    /// `version` (2).
    pub version: i64,
}

/// `onnx.GraphProto`: nodes in topological order, initializers, inputs and outputs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GraphProto {
    /// `node` (1).
    pub node: Vec<NodeProto>,
    /// `name` (2).
    pub name: String,
    /// `initializer` (5).
    pub initializer: Vec<TensorProto>,
    /// `doc_string` (10).
    pub doc_string: String,
    /// `input` (11).
    pub input: Vec<ValueInfoProto>,
    /// `output` (12).
    pub output: Vec<ValueInfoProto>,
    /// `value_info` (13).
    pub value_info: Vec<ValueInfoProto>,
}

/// `onnx.NodeProto`: one op application.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeProto {
    /// `input` (1); an empty name is an omitted optional input.
    pub input: Vec<String>,
    /// `output` (2).
    pub output: Vec<String>,
    /// `name` (3).
    pub name: String,
    /// `op_type` (4).
    pub op_type: String,
    /// `attribute` (5).
    pub attribute: Vec<AttributeProto>,
    /// `doc_string` (6).
    pub doc_string: String,
    /// `domain` (7).
    pub domain: String,
}

/// `onnx.AttributeProto`: a named, typed attribute of a node.
#[derive(Clone, Debug, PartialEq)]
pub struct AttributeProto {
    /// `name` (1).
    pub name: String,
    /// The value; its variant decides `type` (20) and the value field.
    pub value: AttrValue,
}

/// The value of an [`AttributeProto`].
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// `f` (2), type FLOAT.
    Float(f32),
    /// `i` (3), type INT.
    Int(i64),
    /// `s` (4), type STRING.
    String(String),
    /// `t` (5), type TENSOR.
    Tensor(TensorProto),
    /// `floats` (7), type FLOATS.
    Floats(Vec<f32>),
    /// `ints` (8), type INTS.
    Ints(Vec<i64>),
    /// `strings` (9), type STRINGS.
    Strings(Vec<String>),
}

impl AttrValue {
    /// `AttributeProto.AttributeType` of this value.
    pub fn type_code(&self) -> i64 {
        match self {
            AttrValue::Float(_) => 1,
            AttrValue::Int(_) => 2,
            AttrValue::String(_) => 3,
            AttrValue::Tensor(_) => 4,
            AttrValue::Floats(_) => 6,
            AttrValue::Ints(_) => 7,
            AttrValue::Strings(_) => 8,
        }
    }
}

impl AttributeProto {
    /// An INT attribute.
    pub fn int(name: &str, v: i64) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            value: AttrValue::Int(v),
        }
    }
    /// A FLOAT attribute.
    pub fn float(name: &str, v: f32) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            value: AttrValue::Float(v),
        }
    }
    /// An INTS attribute.
    pub fn ints(name: &str, v: &[i64]) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            value: AttrValue::Ints(v.to_vec()),
        }
    }
    /// A STRING attribute.
    pub fn string(name: &str, v: &str) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            value: AttrValue::String(v.into()),
        }
    }
}

/// Element data of a [`TensorProto`].
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// FLOAT elements.
    Float(Vec<f32>),
    /// INT64 elements.
    Int64(Vec<i64>),
}

impl TensorData {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            TensorData::Float(v) => v.len(),
            TensorData::Int64(v) => v.len(),
        }
    }
    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// `TensorProto.DataType` code.
    pub fn data_type(&self) -> i32 {
        match self {
            TensorData::Float(_) => DT_FLOAT,
            TensorData::Int64(_) => DT_INT64,
        }
    }
}

/// `onnx.TensorProto`: a named constant (an initializer or a tensor attribute).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorProto {
    /// `name` (8).
    pub name: String,
    /// `dims` (1); empty for a scalar.
    pub dims: Vec<i64>,
    /// `data_type` (2) and the elements (written as `raw_data`, 9).
    pub data: TensorData,
}

/// `onnx.ValueInfoProto` of a dense tensor with a static shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfoProto {
    /// `name` (1).
    pub name: String,
    /// `type.tensor_type.elem_type` (`TensorProto.DataType`).
    pub elem_type: i32,
    /// `type.tensor_type.shape.dim[*].dim_value`.
    pub shape: Vec<i64>,
}

impl ModelProto {
    /// A model around `graph` with IR [`IR_VERSION`], producer [`PRODUCER`] and the default
    /// domain at `opset`.
    pub fn new(graph: GraphProto, opset: i64) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: PRODUCER.into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            graph,
            opset_import: vec![OperatorSetId {
                domain: String::new(),
                version: opset,
            }],
            ..ModelProto::default()
        }
    }

    /// Reads a model from its bytes (the fields this crate models; others are skipped).
    pub fn decode(bytes: &[u8]) -> Result<ModelProto> {
        let mut m = ModelProto::default();
        let mut r = Reader::new(bytes);
        while let Some((f, at, v)) = r.next_field()? {
            match f {
                1 => m.ir_version = read_varint(v, at)? as i64,
                2 => m.producer_name = read_string(v, at)?,
                3 => m.producer_version = read_string(v, at)?,
                4 => m.domain = read_string(v, at)?,
                5 => m.model_version = read_varint(v, at)? as i64,
                6 => m.doc_string = read_string(v, at)?,
                7 => m.graph = GraphProto::decode_at(read_bytes(v, at)?, at)?,
                8 => {
                    let mut o = OperatorSetId::default();
                    let mut r = Reader::at(read_bytes(v, at)?, at);
                    while let Some((f, at, v)) = r.next_field()? {
                        match f {
                            1 => o.domain = read_string(v, at)?,
                            2 => o.version = read_varint(v, at)? as i64,
                            _ => {}
                        }
                    }
                    m.opset_import.push(o);
                }
                14 => {
                    let (mut k, mut val) = (String::new(), String::new());
                    let mut r = Reader::at(read_bytes(v, at)?, at);
                    while let Some((f, at, v)) = r.next_field()? {
                        match f {
                            1 => k = read_string(v, at)?,
                            2 => val = read_string(v, at)?,
                            _ => {}
                        }
                    }
                    m.metadata_props.push((k, val));
                }
                _ => {}
            }
        }
        Ok(m)
    }
}

struct OpsetRef<'a>(&'a OperatorSetId);

impl Message for OpsetRef<'_> {
    fn write(&self, w: &mut Writer) {
        if !self.0.domain.is_empty() {
            w.string(1, &self.0.domain);
        }
        w.int(2, self.0.version);
    }
}

struct Entry<'a>(&'a str, &'a str);

impl Message for Entry<'_> {
    fn write(&self, w: &mut Writer) {
        w.string(1, self.0);
        w.string(2, self.1);
    }
}

fn opt_string(w: &mut Writer, field: u32, s: &str) {
    if !s.is_empty() {
        w.string(field, s);
    }
}

impl Message for ModelProto {
    fn write(&self, w: &mut Writer) {
        w.int(1, self.ir_version);
        opt_string(w, 2, &self.producer_name);
        opt_string(w, 3, &self.producer_version);
        opt_string(w, 4, &self.domain);
        if self.model_version != 0 {
            w.int(5, self.model_version);
        }
        opt_string(w, 6, &self.doc_string);
        w.message(7, &self.graph);
        for o in &self.opset_import {
            w.message(8, &OpsetRef(o));
        }
        for (k, v) in &self.metadata_props {
            w.message(14, &Entry(k, v));
        }
    }
}

impl GraphProto {
    fn decode_at(bytes: &[u8], base: usize) -> Result<GraphProto> {
        let mut g = GraphProto::default();
        let mut r = Reader::at(bytes, base);
        while let Some((f, at, v)) = r.next_field()? {
            match f {
                1 => g.node.push(NodeProto::decode_at(read_bytes(v, at)?, at)?),
                2 => g.name = read_string(v, at)?,
                5 => g
                    .initializer
                    .push(TensorProto::decode_at(read_bytes(v, at)?, at)?),
                10 => g.doc_string = read_string(v, at)?,
                11 => g
                    .input
                    .push(ValueInfoProto::decode_at(read_bytes(v, at)?, at)?),
                12 => g
                    .output
                    .push(ValueInfoProto::decode_at(read_bytes(v, at)?, at)?),
                13 => g
                    .value_info
                    .push(ValueInfoProto::decode_at(read_bytes(v, at)?, at)?),
                _ => {}
            }
        }
        Ok(g)
    }
}

impl Message for GraphProto {
    fn write(&self, w: &mut Writer) {
        for n in &self.node {
            w.message(1, n);
        }
        opt_string(w, 2, &self.name);
        for t in &self.initializer {
            w.message(5, t);
        }
        opt_string(w, 10, &self.doc_string);
        for v in &self.input {
            w.message(11, v);
        }
        for v in &self.output {
            w.message(12, v);
        }
        for v in &self.value_info {
            w.message(13, v);
        }
    }
}

impl NodeProto {
    fn decode_at(bytes: &[u8], base: usize) -> Result<NodeProto> {
        let mut n = NodeProto::default();
        let mut r = Reader::at(bytes, base);
        while let Some((f, at, v)) = r.next_field()? {
            match f {
                1 => n.input.push(read_string(v, at)?),
                2 => n.output.push(read_string(v, at)?),
                3 => n.name = read_string(v, at)?,
                4 => n.op_type = read_string(v, at)?,
                5 => n
                    .attribute
                    .push(AttributeProto::decode_at(read_bytes(v, at)?, at)?),
                6 => n.doc_string = read_string(v, at)?,
                7 => n.domain = read_string(v, at)?,
                _ => {}
            }
        }
        Ok(n)
    }

    /// The attribute called `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&AttrValue> {
        self.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| &a.value)
    }
}

impl Message for NodeProto {
    fn write(&self, w: &mut Writer) {
        for i in &self.input {
            w.string(1, i);
        }
        for o in &self.output {
            w.string(2, o);
        }
        opt_string(w, 3, &self.name);
        w.string(4, &self.op_type);
        for a in &self.attribute {
            w.message(5, a);
        }
        opt_string(w, 6, &self.doc_string);
        opt_string(w, 7, &self.domain);
    }
}

impl AttributeProto {
    fn decode_at(bytes: &[u8], base: usize) -> Result<AttributeProto> {
        let mut name = String::new();
        let mut ty: Option<u64> = None;
        let (mut f1, mut i1, mut s1, mut t1) = (None, None, None, None);
        let (mut fs, mut is, mut ss) = (Vec::new(), Vec::new(), Vec::new());
        let mut r = Reader::at(bytes, base);
        while let Some((f, at, v)) = r.next_field()? {
            match f {
                1 => name = read_string(v, at)?,
                2 => {
                    let mut x = Vec::new();
                    read_floats(v, at, &mut x)?;
                    f1 = x.pop();
                }
                3 => i1 = Some(read_varint(v, at)? as i64),
                4 => s1 = Some(read_string(v, at)?),
                5 => t1 = Some(TensorProto::decode_at(read_bytes(v, at)?, at)?),
                7 => read_floats(v, at, &mut fs)?,
                8 => read_ints(v, at, &mut is)?,
                9 => ss.push(read_string(v, at)?),
                20 => ty = Some(read_varint(v, at)?),
                _ => {}
            }
        }
        let bad = |what: &str| OnnxError::Decode {
            offset: base,
            detail: format!("attribute `{name}`: {what}"),
        };
        let value = match ty {
            Some(1) => AttrValue::Float(f1.unwrap_or(0.0)),
            Some(2) => AttrValue::Int(i1.unwrap_or(0)),
            Some(3) => AttrValue::String(s1.unwrap_or_default()),
            Some(4) => AttrValue::Tensor(t1.ok_or_else(|| bad("TENSOR without `t`"))?),
            Some(6) => AttrValue::Floats(fs),
            Some(7) => AttrValue::Ints(is),
            Some(8) => AttrValue::Strings(ss),
            Some(t) => return Err(bad(&format!("unsupported attribute type {t}"))),
            None => return Err(bad("no `type`")),
        };
        Ok(AttributeProto { name, value })
    }
}

impl Message for AttributeProto {
    fn write(&self, w: &mut Writer) {
        w.string(1, &self.name);
        match &self.value {
            AttrValue::Float(f) => w.float(2, *f),
            AttrValue::Int(i) => w.int(3, *i),
            AttrValue::String(s) => w.string(4, s),
            AttrValue::Tensor(t) => w.message(5, t),
            AttrValue::Floats(v) => v.iter().for_each(|&f| w.float(7, f)),
            AttrValue::Ints(v) => v.iter().for_each(|&i| w.int(8, i)),
            AttrValue::Strings(v) => v.iter().for_each(|s| w.string(9, s)),
        }
        w.int(20, self.value.type_code());
    }
}

impl TensorProto {
    /// A FLOAT tensor.
    pub fn float(name: &str, dims: &[i64], data: Vec<f32>) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data: TensorData::Float(data),
        }
    }

    /// An INT64 tensor.
    pub fn int64(name: &str, dims: &[i64], data: Vec<i64>) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data: TensorData::Int64(data),
        }
    }

    /// Number of elements the dims describe.
    pub fn numel(&self) -> usize {
        self.dims.iter().map(|&d| d.max(0) as usize).product()
    }

    fn decode_at(bytes: &[u8], base: usize) -> Result<TensorProto> {
        let mut name = String::new();
        let mut dims = Vec::new();
        let mut dt = 0u64;
        let mut raw: Option<&[u8]> = None;
        let (mut fl, mut il) = (Vec::new(), Vec::new());
        let mut r = Reader::at(bytes, base);
        while let Some((f, at, v)) = r.next_field()? {
            match f {
                1 => read_ints(v, at, &mut dims)?,
                2 => dt = read_varint(v, at)?,
                4 => read_floats(v, at, &mut fl)?,
                7 => read_ints(v, at, &mut il)?,
                8 => name = read_string(v, at)?,
                9 => raw = Some(read_bytes(v, at)?),
                _ => {}
            }
        }
        let bad = |what: String| OnnxError::Decode {
            offset: base,
            detail: format!("tensor `{name}`: {what}"),
        };
        let data = match (dt as i32, raw) {
            (DT_FLOAT, Some(b)) if b.len() % 4 == 0 => TensorData::Float(
                b.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            (DT_INT64, Some(b)) if b.len() % 8 == 0 => TensorData::Int64(
                b.chunks_exact(8)
                    .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
                    .collect(),
            ),
            (DT_FLOAT, None) => TensorData::Float(fl),
            (DT_INT64, None) => TensorData::Int64(il),
            (DT_FLOAT | DT_INT64, Some(b)) => {
                return Err(bad(format!("raw_data of {} bytes", b.len())))
            }
            (t, _) => return Err(bad(format!("unsupported data type {t}"))),
        };
        let n: usize = dims.iter().map(|&d| d.max(0) as usize).product();
        if dims.iter().any(|&d| d < 0) || n != data.len() {
            return Err(bad(format!("dims {dims:?} for {} elements", data.len())));
        }
        Ok(TensorProto { name, dims, data })
    }
}

impl Message for TensorProto {
    fn write(&self, w: &mut Writer) {
        for &d in &self.dims {
            w.int(1, d);
        }
        w.int(2, self.data.data_type() as i64);
        w.string(8, &self.name);
        match &self.data {
            TensorData::Float(v) => w.bytes_from(9, v, f32::to_le_bytes),
            TensorData::Int64(v) => w.bytes_from(9, v, i64::to_le_bytes),
        }
    }
}

struct Dim(i64);
impl Message for Dim {
    fn write(&self, w: &mut Writer) {
        w.int(1, self.0);
    }
}

struct Shape<'a>(&'a [i64]);
impl Message for Shape<'_> {
    fn write(&self, w: &mut Writer) {
        for &d in self.0 {
            w.message(1, &Dim(d));
        }
    }
}

struct TensorType<'a>(&'a ValueInfoProto);
impl Message for TensorType<'_> {
    fn write(&self, w: &mut Writer) {
        w.int(1, self.0.elem_type as i64);
        w.message(2, &Shape(&self.0.shape));
    }
}

struct TypeProto<'a>(&'a ValueInfoProto);
impl Message for TypeProto<'_> {
    fn write(&self, w: &mut Writer) {
        w.message(1, &TensorType(self.0));
    }
}

impl ValueInfoProto {
    /// A FLOAT tensor of `shape`.
    pub fn float(name: &str, shape: &[usize]) -> ValueInfoProto {
        ValueInfoProto {
            name: name.into(),
            elem_type: DT_FLOAT,
            shape: shape.iter().map(|&d| d as i64).collect(),
        }
    }

    fn decode_at(bytes: &[u8], base: usize) -> Result<ValueInfoProto> {
        let mut v = ValueInfoProto {
            name: String::new(),
            elem_type: 0,
            shape: Vec::new(),
        };
        let mut r = Reader::at(bytes, base);
        while let Some((f, at, x)) = r.next_field()? {
            match f {
                1 => v.name = read_string(x, at)?,
                2 => {
                    // TypeProto { tensor_type (1) { elem_type (1), shape (2) { dim (1) { dim_value (1) } } } }
                    let mut tp = Reader::at(read_bytes(x, at)?, at);
                    while let Some((f, at, x)) = tp.next_field()? {
                        if f != 1 {
                            continue;
                        }
                        let mut tt = Reader::at(read_bytes(x, at)?, at);
                        while let Some((f, at, x)) = tt.next_field()? {
                            match f {
                                1 => v.elem_type = read_varint(x, at)? as i32,
                                2 => {
                                    let mut sh = Reader::at(read_bytes(x, at)?, at);
                                    while let Some((f, at, x)) = sh.next_field()? {
                                        if f != 1 {
                                            continue;
                                        }
                                        let mut d = Reader::at(read_bytes(x, at)?, at);
                                        let mut val = -1;
                                        while let Some((f, at, x)) = d.next_field()? {
                                            if f == 1 {
                                                val = read_varint(x, at)? as i64;
                                            }
                                        }
                                        v.shape.push(val);
                                    }
                                }
                                _ => {}
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(v)
    }
}

impl Message for ValueInfoProto {
    fn write(&self, w: &mut Writer) {
        w.string(1, &self.name);
        w.message(2, &TypeProto(self));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest useful model: `y = Relu(x)` on a [1, 2] float, opset 17, by hand.
    #[test]
    fn tiny_model_bytes_by_hand() {
        let graph = GraphProto {
            node: vec![NodeProto {
                input: vec!["x".into()],
                output: vec!["y".into()],
                op_type: "Relu".into(),
                ..NodeProto::default()
            }],
            name: "g".into(),
            input: vec![ValueInfoProto::float("x", &[1, 2])],
            output: vec![ValueInfoProto::float("y", &[1, 2])],
            ..GraphProto::default()
        };
        let mut m = ModelProto::new(graph, 17);
        m.producer_version.clear();
        let b = m.encode();
        // ValueInfoProto "x" [1, 2]: name, type { tensor_type { elem_type 1, shape { dim {1}, dim {2} } } }
        let vi = |n: u8| {
            vec![
                0x0a, 0x01, n, // name
                0x12, 0x0e, // type, 14 bytes
                0x0a, 0x0c, // tensor_type, 12 bytes
                0x08, 0x01, // elem_type FLOAT
                0x12, 0x08, // shape, 8 bytes
                0x0a, 0x02, 0x08, 0x01, // dim 1
                0x0a, 0x02, 0x08, 0x02, // dim 2
            ]
        };
        let node = [
            0x0a, 0x01, b'x', // input
            0x12, 0x01, b'y', // output
            0x22, 0x04, b'R', b'e', b'l', b'u', // op_type
        ];
        let mut graph = vec![0x0a, node.len() as u8];
        graph.extend(node);
        graph.extend([0x12, 0x01, b'g']);
        graph.extend([0x5a, 19]); // input (field 11)
        graph.extend(vi(b'x'));
        graph.extend([0x62, 19]); // output (field 12)
        graph.extend(vi(b'y'));
        let mut want = vec![0x08, 0x08]; // ir_version 8
        want.extend([0x12, 0x0a]);
        want.extend(b"yolo-forge");
        want.extend([0x3a, graph.len() as u8]);
        want.extend(&graph);
        want.extend([0x42, 0x02, 0x10, 0x11]); // opset_import { version 17 }
        assert_eq!(b, want);
        assert_eq!(ModelProto::decode(&b).unwrap(), m);
    }

    #[test]
    fn tensors_and_attributes_round_trip() {
        let t = TensorProto::float("w", &[2, 1], vec![1.0, -2.5]);
        // dims 2, 1 (unpacked), data_type 1, name, raw_data (8 bytes little-endian)
        let mut want = vec![
            0x08, 0x02, 0x08, 0x01, 0x10, 0x01, 0x42, 0x01, b'w', 0x4a, 0x08,
        ];
        want.extend(1.0f32.to_le_bytes());
        want.extend((-2.5f32).to_le_bytes());
        assert_eq!(t.encode(), want);
        let a = AttributeProto::ints("pads", &[1, -1]);
        let mut want = vec![0x0a, 0x04, b'p', b'a', b'd', b's', 0x40, 0x01, 0x40];
        want.extend([0xff; 9]);
        want.extend([0x01, 0xa0, 0x01, 0x07]); // type (field 20) = INTS
        assert_eq!(a.encode(), want);

        let node = NodeProto {
            input: vec!["x".into(), String::new(), "s".into()],
            output: vec!["y".into()],
            name: "n".into(),
            op_type: "Resize".into(),
            attribute: vec![
                AttributeProto::string("mode", "nearest"),
                AttributeProto::float("alpha", 0.1),
                AttributeProto::int("axis", -1),
                AttributeProto {
                    name: "t".into(),
                    value: AttrValue::Tensor(TensorProto::int64("c", &[], vec![7])),
                },
                AttributeProto {
                    name: "fs".into(),
                    value: AttrValue::Floats(vec![0.5, 2.0]),
                },
            ],
            ..NodeProto::default()
        };
        let graph = GraphProto {
            node: vec![node],
            initializer: vec![t, TensorProto::int64("i", &[3], vec![-1, 0, 1 << 40])],
            ..GraphProto::default()
        };
        let mut m = ModelProto::new(graph, 17);
        m.metadata_props.push(("stride".into(), "32".into()));
        m.doc_string = "doc".into();
        m.model_version = 3;
        assert_eq!(ModelProto::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn malformed_models_are_errors() {
        let m = ModelProto::new(GraphProto::default(), 17).encode();
        assert!(ModelProto::decode(&m[..m.len() - 1]).is_err());
        // a tensor whose dims do not match its data
        let t = TensorProto::float("w", &[3], vec![1.0]);
        let g = GraphProto {
            initializer: vec![t],
            ..GraphProto::default()
        };
        let b = ModelProto::new(g, 17).encode();
        let e = ModelProto::decode(&b).unwrap_err().to_string();
        assert!(e.contains("tensor `w`") && e.contains("dims [3]"), "{e}");
    }
}
