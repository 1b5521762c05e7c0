//! `yolo-activations`: every activation yolo-forge knows, by name, forward + backward.
//!
//! An [`Activation`] is a parsed, cloneable *spec*: it comes from the text a model YAML holds
//! (`activation: nn.LeakyReLU(0.1)`, or a short name such as `leaky_relu:0.1`) and is a factory:
//! [`Activation::build`] makes one [`ActivationLayer`] per layer, given that layer's channel
//! count, so parametric activations (FReLU, ACON) never share one instance between layers.
//!
//! | Activation | Upstream spellings | Short names |
//! |---|---|---|
//! | SiLU (default) | `nn.SiLU()`, `SiLU` | `silu`, `swish` |
//! | GELU, exact `0.5·x·(1+erf(x/√2))` | `nn.GELU()`, `nn.GELU(approximate='none')` | `gelu` |
//! | GELU, tanh approximation | `nn.GELU(approximate='tanh')` | `gelu_tanh`, `gelu:tanh` |
//! | ReLU | `nn.ReLU()` | `relu` |
//! | ReLU6 | `nn.ReLU6()` | `relu6` |
//! | LeakyReLU(slope) | `nn.LeakyReLU(0.1)`, `nn.LeakyReLU(negative_slope=0.1)` | `leaky_relu:0.1` (`leaky_relu` = 0.01) |
//! | ELU(alpha) | `nn.ELU()`, `nn.ELU(alpha=1.0)` | `elu`, `elu:1.0` |
//! | Hardswish | `nn.Hardswish()` | `hardswish` |
//! | Hardsigmoid | `nn.Hardsigmoid()` | `hardsigmoid` |
//! | Mish | `nn.Mish()`, `Mish`, `MemoryEfficientMish` | `mish` |
//! | Sigmoid | `nn.Sigmoid()` | `sigmoid` |
//! | Tanh | `nn.Tanh()` | `tanh` |
//! | Identity | `nn.Identity()` | `identity` |
//! | FReLU `max(x, BN(DWConv3×3(x)))` | `FReLU`, `FReLU(c1)`, `FReLU(c1, 3)` | `frelu` |
//! | AconC `(p1−p2)·x·σ(β(p1−p2)x) + p2·x` | `AconC`, `AconC(c1)` | `aconc` |
//! | MetaAconC (β from a squeeze net, no BN) | `MetaAconC`, `MetaAconC(c1, 1, 1, 16)`, `MetaAconC(r=8)` | `metaaconc` |
//!
//! Names are matched case-insensitively, with an optional `nn.` / `torch.nn.` prefix and
//! optional `()`; arguments are read as text, never evaluated. Channel arguments (`c1`) are
//! ignored: the channel count comes from the layer that builds the activation.
//!
//! The pointwise activations run as the fused single-pass kernels of
//! [`yolo_tensor::UnaryOp`] (forward, and backward from the saved input), so every backend of
//! `yolo-tensor` provides them through the same seam. Parameter and buffer names are the
//! upstream PyTorch `state_dict` names (`conv.weight`, `bn.running_mean`, `p1`, `fc1.bias`, …).
//!
//! ```
//! use yolo_activations::Activation;
//! use yolo_tensor::{Device, Tensor};
//! let act: Activation = "nn.LeakyReLU(0.1)".parse()?;
//! let layer = act.build(8, 0)?;
//! let x = Tensor::full(-1.0, &[1, 8, 4, 4], Device::Cpu)?;
//! let y = layer.forward(&x, false)?;
//! assert!((y.to_vec()[0] + 0.1).abs() < 1e-7);
//! assert!("nn.Swishy()".parse::<Activation>().is_err());
//! # Ok::<(), yolo_activations::Error>(())
//! ```

#![warn(missing_docs)]

mod acon;
mod error;
mod frelu;
mod init;
mod layer;
mod spec;

pub use acon::{AconC, MetaAconC};
pub use error::{Error, Result};
pub use frelu::FRelu;
pub use layer::{ActivationLayer, Pointwise};
pub use spec::{Activation, SHORT_NAMES, UPSTREAM_NAMES};
