//! ACON-C and Meta-ACON-C (Ma et al., "Activate or Not: Learning Customized Activation",
//! arXiv:2009.04759), as upstream `utils/activations.py`.

use crate::error::{Error, Result};
use crate::init;
use crate::layer::{check_nchw, ActivationLayer};
use crate::spec::Activation;
use yolo_tensor::{Conv2dParams, Device, Tensor};

/// `(p1−p2)·x·σ(β·(p1−p2)·x) + p2·x`, written as `x·((p1−p2)·σ(β(p1−p2)·x) + p2)`: the
/// per-channel factors (`[1|N, C, 1, 1]`) are combined before touching the full tensor, so
/// the chain makes five full-size passes instead of six.
fn acon(x: &Tensor, p1: &Tensor, p2: &Tensor, beta: &Tensor) -> Result<Tensor> {
    let dp = p1.sub(p2)?;
    let gate = x.mul(&beta.mul(&dp)?)?.sigmoid();
    Ok(x.mul(&gate.mul(&dp)?.add(p2)?)?)
}

/// Two randn `[1, C, 1, 1]` tensors `p1`, `p2` (drawn in that order).
fn p1_p2(rng: &mut rand::rngs::StdRng, c: usize, device: Device) -> Result<(Tensor, Tensor)> {
    let p1 = init::param(init::randn(rng, c), &[1, c, 1, 1], device)?;
    let p2 = init::param(init::randn(rng, c), &[1, c, 1, 1], device)?;
    Ok((p1, p2))
}

/// An ACON-C layer: learnable per-channel `p1`, `p2` (randn) and `beta` (ones), each
/// `[1, C, 1, 1]`.
#[derive(Debug)]
pub struct AconC {
    channels: usize,
    p1: Tensor,
    p2: Tensor,
    beta: Tensor,
}

impl AconC {
    /// A fresh layer for `channels` channels, `p1`/`p2` drawn from `seed`.
    pub fn new(channels: usize, seed: u64, device: Device) -> Result<AconC> {
        let c = channels;
        let (p1, p2) = p1_p2(&mut init::rng(seed), c, device)?;
        Ok(AconC {
            channels: c,
            p1,
            p2,
            beta: init::param(vec![1.0; c], &[1, c, 1, 1], device)?,
        })
    }
}

impl ActivationLayer for AconC {
    fn spec(&self) -> Activation {
        Activation::AconC
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        check_nchw(Activation::AconC, x, self.channels)?;
        acon(x, &self.p1, &self.p2, &self.beta)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("p1".into(), self.p1.clone()),
            ("p2".into(), self.p2.clone()),
            ("beta".into(), self.beta.clone()),
        ]
    }
}

/// A Meta-ACON-C layer: ACON-C whose `β = σ(fc2(fc1(mean_HW(x))))` is computed per sample by
/// two 1×1 convs with bias (hidden width `max(r, C/r)`). No batch norm (upstream removed it
/// for batch size 1), so it behaves the same in training and inference and at any batch size.
#[derive(Debug)]
pub struct MetaAconC {
    channels: usize,
    r: usize,
    p1: Tensor,
    p2: Tensor,
    fc1_weight: Tensor,
    fc1_bias: Tensor,
    fc2_weight: Tensor,
    fc2_bias: Tensor,
}

impl MetaAconC {
    /// A fresh layer for `channels` channels with reduction ratio `r`: `p1`, `p2` randn, then
    /// `fc1`, `fc2` with PyTorch's default conv initialisation, all drawn from `seed`.
    pub fn new(channels: usize, r: usize, seed: u64, device: Device) -> Result<MetaAconC> {
        let c = channels;
        if r == 0 || c == 0 {
            return Err(Error::InvalidInput {
                activation: "MetaAconC".into(),
                detail: format!("needs positive channels and r, got channels={c}, r={r}"),
            });
        }
        let c2 = r.max(c / r);
        let mut rng = init::rng(seed);
        let (p1, p2) = p1_p2(&mut rng, c, device)?;
        let fc1_weight = init::param(
            init::conv_uniform(&mut rng, c2 * c, c),
            &[c2, c, 1, 1],
            device,
        )?;
        let fc1_bias = init::param(init::conv_uniform(&mut rng, c2, c), &[c2], device)?;
        let fc2_weight = init::param(
            init::conv_uniform(&mut rng, c * c2, c2),
            &[c, c2, 1, 1],
            device,
        )?;
        let fc2_bias = init::param(init::conv_uniform(&mut rng, c, c2), &[c], device)?;
        Ok(MetaAconC {
            channels: c,
            r,
            p1,
            p2,
            fc1_weight,
            fc1_bias,
            fc2_weight,
            fc2_bias,
        })
    }

    /// Hidden width of the squeeze network.
    pub fn hidden_channels(&self) -> usize {
        self.fc1_weight.shape()[0]
    }
}

impl ActivationLayer for MetaAconC {
    fn spec(&self) -> Activation {
        Activation::MetaAconC { r: self.r }
    }

    fn forward(&self, x: &Tensor, _train: bool) -> Result<Tensor> {
        check_nchw(self.spec(), x, self.channels)?;
        let p = Conv2dParams::default();
        let y = x.mean(&[2, 3], true)?;
        let h = y.conv2d(&self.fc1_weight, Some(&self.fc1_bias), p)?;
        let beta = h
            .conv2d(&self.fc2_weight, Some(&self.fc2_bias), p)?
            .sigmoid();
        acon(x, &self.p1, &self.p2, &beta)
    }

    fn named_parameters(&self) -> Vec<(String, Tensor)> {
        vec![
            ("p1".into(), self.p1.clone()),
            ("p2".into(), self.p2.clone()),
            ("fc1.weight".into(), self.fc1_weight.clone()),
            ("fc1.bias".into(), self.fc1_bias.clone()),
            ("fc2.weight".into(), self.fc2_weight.clone()),
            ("fc2.bias".into(), self.fc2_bias.clone()),
        ]
    }
}
