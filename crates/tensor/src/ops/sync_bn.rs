//! Synchronised batch normalisation (upstream `--sync-bn`, PyTorch `SyncBatchNorm`): the batch
//! statistics of every data-parallel replica together. Forward all-reduces each channel's
//! Σx, Σx² and count; backward all-reduces Σg and Σg·x̂, so each replica's input gradient is
//! the one a single process with the whole batch would compute. The collective is a callback
//! (the tensor core knows no communicator), called in the same order on every replica.

use std::sync::Arc;

use super::nn::{bn_checks, update_running};
use crate::autograd::record;
use crate::error::{arg_err, Result};
use crate::op::UnaryOp;
use crate::Tensor;

/// Sums a vector element-wise over all replicas, in place (an all-reduce).
pub type AllReduceSum = Arc<dyn Fn(&mut [f64]) -> Result<()> + Send + Sync>;

fn channel_sums(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.sum(&[0, 2, 3], false)?
        .to_vec()
        .into_iter()
        .map(f64::from)
        .collect())
}

impl Tensor {
    /// Training-mode 2-D batch norm (then `act`, if any) with statistics over the batches of
    /// all replicas that `sync` connects; updates the running statistics like
    /// [`Tensor::batch_norm2d_act_train`] (unbiased variance over the global count). With one
    /// replica (`sync` a no-op) it equals that op up to rounding.
    #[allow(clippy::too_many_arguments)]
    pub fn batch_norm2d_sync_train(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        running_mean: &Tensor,
        running_var: &Tensor,
        momentum: f32,
        eps: f32,
        act: Option<UnaryOp>,
        sync: &AllReduceSum,
    ) -> Result<Tensor> {
        let op = "batch_norm2d_sync_train";
        let (n, c, h, w) = bn_checks(op, self, [weight, bias, running_mean, running_var])?;
        let dev = self.device();
        // Forward statistics: [Σx (c), Σx² (c), count].
        let (mut stats, xs) = {
            let _g = crate::no_grad();
            let xs = self.detach();
            let mut v = channel_sums(&xs)?;
            v.extend(channel_sums(&xs.sqr())?);
            v.push((n * h * w) as f64);
            (v, xs)
        };
        sync(&mut stats)?;
        let m = stats[2 * c];
        if m < 2.0 {
            return arg_err(
                op,
                format!("needs more than one value per channel over all replicas, got {m}"),
            );
        }
        let mean: Vec<f64> = (0..c).map(|i| stats[i] / m).collect();
        let var: Vec<f64> = (0..c)
            .map(|i| (stats[c + i] / m - mean[i] * mean[i]).max(0.0))
            .collect();
        let invstd: Vec<f32> = var
            .iter()
            .map(|v| (1.0 / (v + eps as f64).sqrt()) as f32)
            .collect();
        let col = |v: Vec<f32>| Tensor::from_vec(v, &[1, c, 1, 1], dev);
        let mean_t = col(mean.iter().map(|&x| x as f32).collect())?;
        let inv_t = col(invstd)?;
        {
            let _g = crate::no_grad();
            let mean1 = Tensor::from_vec(mean.iter().map(|&x| x as f32).collect(), &[c], dev)?;
            let unbiased: Vec<f32> = var.iter().map(|v| (v * m / (m - 1.0)) as f32).collect();
            let var1 = Tensor::from_vec(unbiased, &[c], dev)?;
            update_running(running_mean, running_var, &mean1, &var1, momentum)?;
        }
        // x̂ as its own node: its backward needs the global sums of the incoming gradient.
        let xhat_data = {
            let _g = crate::no_grad();
            xs.sub(&mean_t)?.mul(&inv_t)?
        };
        let storage = xhat_data.storage().clone();
        let sync_b = sync.clone();
        let xhat = record(
            storage,
            self.shape().to_vec(),
            "batch_norm2d_sync",
            vec![self.clone()],
            move |_inp, xhat, g| {
                let mut sums = channel_sums(g)?;
                sums.extend(channel_sums(&g.mul(xhat)?)?);
                sync_b(&mut sums)?;
                let dev = g.device();
                let g1: Vec<f32> = sums[..c].iter().map(|s| (s / m) as f32).collect();
                let g2: Vec<f32> = sums[c..].iter().map(|s| (s / m) as f32).collect();
                let g1 = Tensor::from_vec(g1, &[1, c, 1, 1], dev)?;
                let g2 = Tensor::from_vec(g2, &[1, c, 1, 1], dev)?;
                let dx = g.sub(&xhat.mul(&g2)?.add(&g1)?)?.mul(&inv_t)?;
                Ok(vec![Some(dx)])
            },
        );
        let y = xhat
            .mul(&weight.reshape(&[1, c, 1, 1])?)?
            .add(&bias.reshape(&[1, c, 1, 1])?)?;
        Ok(match act {
            Some(a) => y.unary(a),
            None => y,
        })
    }
}
