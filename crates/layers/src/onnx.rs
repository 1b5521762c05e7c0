//! ONNX export of blocks: helpers shared by the [`crate::Module::export_onnx`] and
//! [`crate::Layer::export_onnx_layer`] implementations (weights as initializers named by their
//! `state_dict` names, activations as standard ONNX ops, space-to-depth).

use crate::error::{LayerError, Result};
use yolo_activations::{Activation, ActivationLayer};
use yolo_tensor::Tensor;

pub use yolo_onnx::{GraphBuilder, Value, Window};

/// The error of a block type that has no ONNX export (its short type name).
pub(crate) fn unsupported<T: ?Sized>() -> LayerError {
    let full = std::any::type_name::<T>();
    // `yolo_layers::attention::Cbam` → `Cbam` (keep generic arguments readable).
    let head = full.split('<').next().unwrap_or(full);
    let short = head.rsplit("::").next().unwrap_or(head);
    LayerError::Unsupported(format!("{short}{}", &full[head.len()..]))
}

/// Adds `t` as a FLOAT initializer called `name`.
pub fn tensor_initializer(g: &mut GraphBuilder, name: &str, t: &Tensor) -> Result<Value> {
    Ok(g.initializer(name, t.shape(), t.to_vec())?)
}

/// Appends an activation layer as standard ONNX ops (opset 17): SiLU as `x·Sigmoid(x)`,
/// GELU in its Erf (or tanh) form, Mish as `x·Tanh(Softplus(x))`, ReLU6 as `Clip(0, 6)`, the
/// others as their own op. FReLU and the ACON family are not exported yet.
pub fn export_activation(
    g: &mut GraphBuilder,
    act: &dyn ActivationLayer,
    x: &Value,
) -> Result<Value> {
    use Activation::*;
    let spec = act.spec();
    let attr_f = yolo_onnx::AttributeProto::float;
    Ok(match spec {
        Identity => x.clone(),
        Silu => {
            let s = g.unary("Sigmoid", x, Vec::new())?;
            g.mul(x, &s)?
        }
        Relu => g.unary("Relu", x, Vec::new())?,
        Relu6 => g.clip(x, 0.0, 6.0)?,
        LeakyRelu(a) => g.unary("LeakyRelu", x, vec![attr_f("alpha", a)])?,
        Elu(a) => g.unary("Elu", x, vec![attr_f("alpha", a)])?,
        Hardswish => g.unary("HardSwish", x, Vec::new())?,
        Hardsigmoid => g.unary(
            "HardSigmoid",
            x,
            vec![attr_f("alpha", 1.0 / 6.0), attr_f("beta", 0.5)],
        )?,
        Mish => {
            let sp = g.unary("Softplus", x, Vec::new())?;
            let t = g.unary("Tanh", &sp, Vec::new())?;
            g.mul(x, &t)?
        }
        Sigmoid => g.unary("Sigmoid", x, Vec::new())?,
        Tanh => g.unary("Tanh", x, Vec::new())?,
        Gelu => {
            // 0.5·x·(1 + erf(x/√2))
            let a = g.mul_scalar(x, std::f32::consts::FRAC_1_SQRT_2)?;
            let e = g.unary("Erf", &a, Vec::new())?;
            let e1 = g.add_scalar(&e, 1.0)?;
            let y = g.mul(x, &e1)?;
            g.mul_scalar(&y, 0.5)?
        }
        GeluTanh => {
            // 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))
            let x2 = g.mul(x, x)?;
            let x3 = g.mul(&x2, x)?;
            let c = g.mul_scalar(&x3, 0.044715)?;
            let inner = g.add(x, &c)?;
            let s = g.mul_scalar(&inner, (2.0 / std::f32::consts::PI).sqrt())?;
            let t = g.unary("Tanh", &s, Vec::new())?;
            let t1 = g.add_scalar(&t, 1.0)?;
            let y = g.mul(x, &t1)?;
            g.mul_scalar(&y, 0.5)?
        }
        FRelu | AconC | MetaAconC { .. } => {
            return Err(LayerError::Unsupported(format!("activation {spec}")))
        }
    })
}

/// Space-to-depth by 2 in upstream Focus order (see [`crate::space_to_depth2`]) as
/// Reshape → Transpose → Reshape.
pub fn export_space_to_depth2(g: &mut GraphBuilder, x: &Value) -> Result<Value> {
    let s = x.shape().to_vec();
    if s.len() != 4 || !s[2].is_multiple_of(2) || !s[3].is_multiple_of(2) {
        return Err(LayerError::Invalid(format!(
            "space-to-depth needs N×C×H×W with even H and W, got {s:?}"
        )));
    }
    let (n, c, h, w) = (s[0], s[1], s[2], s[3]);
    let y = g.reshape(x, &[n, c, h / 2, 2, w / 2, 2])?;
    let y = g.transpose(&y, &[0, 5, 3, 1, 2, 4])?;
    Ok(g.reshape(&y, &[n, 4 * c, h / 2, w / 2])?)
}
