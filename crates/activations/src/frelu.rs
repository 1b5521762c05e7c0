//! FReLU (Ma et al., "Funnel Activation for Visual Recognition", arXiv:2007.11824), as
//! upstream `utils/activations.py`: `max(x, bn(conv(x)))` with a depthwise 3×3 conv.

use crate::error::Result;
use crate::init;
use crate::layer::{check_nchw, ActivationLayer};
use crate::spec::Activation;
use yolo_tensor::{Conv2dParams, Device, Tensor};

/// PyTorch's `BatchNorm2d` defaults.
const BN_EPS: f32 = 1e-5;
const BN_MOMENTUM: f32 = 0.1;

/// An FReLU layer: `conv` = depthwise 3×3 conv (stride 1, padding 1, no bias), `bn` =
/// `BatchNorm2d(c)`; output `max(x, bn(conv(x)))`.
#[derive(Debug)]
pub struct FRelu {
    channels: usize,
    conv_weight: Tensor,
    bn_weight: Tensor,
    bn_bias: Tensor,
    running_mean: Tensor,
    running_var: Tensor,
    eps: f32,
    momentum: f32,
}

impl FRelu {
    /// A fresh layer for `channels` channels: conv weight from PyTorch's default
    /// initialisation (seeded by `seed`), BN weight 1, bias 0, running mean 0, variance 1.
    pub fn new(channels: usize, seed: u64, device: Device) -> Result<FRelu> {
        let c = channels;
        let mut rng = init::rng(seed);
        Ok(FRelu {
            channels: c,
            conv_weight: init::param(
                init::conv_uniform(&mut rng, c * 9, 9),
                &[c, 1, 3, 3],
                device,
            )?,
            bn_weight: init::param(vec![1.0; c], &[c], device)?,
            bn_bias: init::param(vec![0.0; c], &[c], device)?,
            running_mean: init::buffer(0.0, &[c], device)?,
            running_var: init::buffer(1.0, &[c], device)?,
            eps: BN_EPS,
            momentum: BN_MOMENTUM,
        })
    }
}

impl ActivationLayer for FRelu {
    fn spec(&self) -> Activation {
        Activation::FRelu
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        check_nchw(Activation::FRelu, x, self.channels)?;
        let p = Conv2dParams::new(1, 1).with_groups(self.channels);
        let z = x.conv2d(&self.conv_weight, None, p)?;
        let z = if train {
            z.batch_norm2d_train(
                &self.bn_weight,
                &self.bn_bias,
                &self.running_mean,
                &self.running_var,
                self.momentum,
                self.eps,
            )?
        } else {
            z.batch_norm2d_eval(
                &self.bn_weight,
                &self.bn_bias,
                &self.running_mean,
                &self.running_var,
                self.eps,
            )?
        };
        Ok(x.maximum(&z)?)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("conv.weight".into(), self.conv_weight.clone()),
            ("bn.weight".into(), self.bn_weight.clone()),
            ("bn.bias".into(), self.bn_bias.clone()),
        ]
    }

    fn named_buffers(&self) -> Vec<(String, Tensor)> {
        vec![
            ("bn.running_mean".into(), self.running_mean.clone()),
            ("bn.running_var".into(), self.running_var.clone()),
        ]
    }

    fn set_batch_norm(&mut self, eps: f32, momentum: f32) {
        self.eps = eps;
        self.momentum = momentum;
    }
}
