//! ONNX export of a built model: the graph of every row's block (see
//! [`yolo_layers::Module::export_onnx`]) from the input `images` to the decoded predictions
//! `output0`, as the model's inference forward computes them.

use crate::error::{ModelError, Result};
use crate::model::Model;
use std::path::Path;
use yolo_onnx::{GraphBuilder, Message, ModelProto, Value, OPSET};

/// Name of the exported graph's input (upstream's).
pub const ONNX_INPUT: &str = "images";
/// Name of the exported graph's output (upstream's).
pub const ONNX_OUTPUT: &str = "output0";

/// Upstream's `names` metadata: a Python dict literal `{0: 'person', 1: 'bicycle'}`.
fn names_literal(names: &[String]) -> String {
    let items: Vec<String> = names
        .iter()
        .enumerate()
        .map(|(i, n)| format!("{i}: '{}'", n.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    format!("{{{}}}", items.join(", "))
}

impl Model {
    /// The inference graph for a batch-1 `h`×`w` input as an ONNX model (opset 17, IR 8,
    /// producer `yolo-forge`): input `images` [1, ch, h, w], output `output0`
    /// [1, N, 5 + nc] (decoded xywh in pixels, objectness, class scores), weights as
    /// initializers with their `state_dict` names, the head's grids as constants, and
    /// upstream's `stride` and `names` metadata. The graph mirrors the model as it is: call
    /// [`Model::fuse`] first for the folded inference form upstream exports.
    ///
    /// A block without an export is an error naming its row and module.
    pub fn to_onnx(&self, h: usize, w: usize) -> Result<ModelProto> {
        let gs = self.stride.iter().cloned().fold(1.0f32, f32::max) as usize;
        if h == 0 || w == 0 || !h.is_multiple_of(gs) || !w.is_multiple_of(gs) {
            return Err(ModelError::Export(format!(
                "the input size {h}×{w} must be a positive multiple of the largest stride {gs}"
            )));
        }
        let mut g = GraphBuilder::new("yolo-forge");
        let x = g.input(ONNX_INPUT, &[1, self.config.ch, h, w])?;
        let mut outs: Vec<Value> = Vec::with_capacity(self.nodes.len());
        for (i, node) in self.nodes.iter().enumerate() {
            let inputs: Vec<Value> = node
                .from
                .iter()
                .map(|f| match f {
                    None => x.clone(),
                    Some(j) => outs[*j].clone(),
                })
                .collect();
            let prefix = format!("model.{i}");
            g.set_scope(&prefix);
            let y = node
                .layer
                .export_onnx_layer(&mut g, &prefix, &inputs)
                .map_err(|e| ModelError::Row {
                    index: i,
                    module: node.module.clone(),
                    message: e.to_string(),
                    file: None,
                })?;
            outs.push(y);
        }
        let y = outs.pop().expect("a model has a head row");
        let d = self.detect();
        let n: usize = d
            .stride
            .iter()
            .map(|&s| d.na * (h / s as usize) * (w / s as usize))
            .sum();
        if y.shape() != [1, n, d.no] {
            return Err(ModelError::Export(format!(
                "the head's ONNX output has shape {:?}, expected [1, {n}, {}]",
                y.shape(),
                d.no
            )));
        }
        g.output(&y, ONNX_OUTPUT)?;
        let mut m = g.into_model(OPSET);
        m.doc_string = format!(
            "yolo-forge export: {} classes, strides {:?}, input {h}x{w}{}",
            self.config.nc,
            self.stride,
            if self.is_fused() { ", fused" } else { "" }
        );
        m.metadata_props = vec![
            ("stride".into(), gs.to_string()),
            ("names".into(), names_literal(&self.names)),
        ];
        Ok(m)
    }

    /// Writes [`Model::to_onnx`] to `path` atomically (a temporary file, flushed, then renamed).
    pub fn save_onnx(&self, path: impl AsRef<Path>, h: usize, w: usize) -> Result<()> {
        let bytes = self.to_onnx(h, w)?.encode();
        crate::weights::write_atomic(path.as_ref(), &bytes, "onnx.partial")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_a_python_dict_literal() {
        let n = vec!["person".to_string(), "it's".to_string(), "a\\b".to_string()];
        assert_eq!(
            super::names_literal(&n),
            r"{0: 'person', 1: 'it\'s', 2: 'a\\b'}"
        );
    }
}
