//! `yolo-onnx`: a small, dependency-free ONNX writer and reader.
//!
//! - [`wire`]: the protobuf wire format by hand (varints, tags, length-delimited fields).
//! - [`proto`]: the ONNX messages an exported detector needs (`ModelProto`, `GraphProto`,
//!   `NodeProto`, `AttributeProto`, `TensorProto`, `ValueInfoProto`), encoded and decoded.
//! - [`GraphBuilder`]: builds a graph op by op with static shape inference, so exporters can
//!   read each value's shape and wiring mistakes fail at export time.
//!
//! ```
//! use yolo_onnx::{GraphBuilder, Message, ModelProto, OPSET};
//! let mut g = GraphBuilder::new("tiny");
//! let x = g.input("images", &[1, 3, 8, 8])?;
//! let y = g.unary("Sigmoid", &x, Vec::new())?;
//! g.output(&y, "output0")?;
//! let bytes = g.into_model(OPSET).encode();
//! let back = ModelProto::decode(&bytes)?;
//! assert_eq!(back.graph.node[0].op_type, "Sigmoid");
//! assert_eq!(back.graph.output[0].shape, [1, 3, 8, 8]);
//! # Ok::<(), yolo_onnx::OnnxError>(())
//! ```

#![warn(missing_docs)]

mod error;
mod graph;
pub mod proto;
pub mod wire;

pub use error::{OnnxError, Result};
pub use graph::{float_initializer_elements, GraphBuilder, Value, Window};
pub use proto::{
    AttrValue, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetId, TensorData,
    TensorProto, ValueInfoProto, IR_VERSION, OPSET, PRODUCER,
};
pub use wire::Message;
