//! Reductions over axes.

use crate::autograd::record;
use crate::error::{shape_err, Result};
use crate::op::ReduceOp;
use crate::shape::norm_axis;
use crate::Tensor;

impl Tensor {
    fn reduce_axes(&self, op: &'static str, axes: &[isize]) -> Result<Vec<usize>> {
        let mut v = Vec::with_capacity(axes.len());
        for &a in axes {
            let a = norm_axis(op, a, self.rank())?;
            if v.contains(&a) {
                return crate::error::arg_err(op, format!("axis {a} given twice"));
            }
            v.push(a);
        }
        v.sort_unstable();
        Ok(v)
    }

    fn reduced_shape(&self, axes: &[usize], keepdim: bool) -> Vec<usize> {
        self.shape()
            .iter()
            .enumerate()
            .filter_map(|(i, &d)| match (axes.contains(&i), keepdim) {
                (true, true) => Some(1),
                (true, false) => None,
                (false, _) => Some(d),
            })
            .collect()
    }

    fn reduce(
        &self,
        op: ReduceOp,
        name: &'static str,
        axes: &[isize],
        keepdim: bool,
    ) -> Result<Tensor> {
        let ax = self.reduce_axes(name, axes)?;
        if self.numel() == 0 {
            return shape_err(
                name,
                format!("reduction of an empty tensor of shape {:?}", self.shape()),
            );
        }
        let keep_shape = self.reduced_shape(&ax, true);
        let out_shape = self.reduced_shape(&ax, keepdim);
        let out = self.storage().reduce(op, self.shape(), &ax);
        Ok(record(
            out,
            out_shape,
            name,
            vec![self.clone()],
            move |inp, out, g| {
                let x = &inp[0];
                let g = g.reshape(&keep_shape)?;
                let dx = match op {
                    ReduceOp::Sum => g.broadcast_as(x.shape())?,
                    ReduceOp::Max | ReduceOp::Min => {
                        // Ties share the gradient equally (as torch.amax).
                        let m = out.reshape(&keep_shape)?;
                        let mask = x.eq(&m)?;
                        let count = mask.sum_keepdim_axes(&keep_shape)?;
                        mask.mul(&g.div(&count)?)?
                    }
                };
                Ok(vec![Some(dx)])
            },
        ))
    }

    /// Sums `mask` down to `keep_shape` (a keepdim shape of the same rank).
    fn sum_keepdim_axes(&self, keep_shape: &[usize]) -> Result<Tensor> {
        let axes: Vec<isize> = keep_shape
            .iter()
            .zip(self.shape())
            .enumerate()
            .filter(|(_, (k, d))| k != d)
            .map(|(i, _)| i as isize)
            .collect();
        self.sum(&axes, true)
    }

    /// Sum over `axes` (negative counts from the end).
    pub fn sum(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        if axes.is_empty() {
            return Ok(self.clone());
        }
        self.reduce(ReduceOp::Sum, "sum", axes, keepdim)
    }

    /// Mean over `axes`.
    pub fn mean(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        let ax = self.reduce_axes("mean", axes)?;
        let count: usize = ax.iter().map(|&a| self.shape()[a]).product();
        Ok(self
            .sum(axes, keepdim)?
            .mul_scalar(1.0 / count.max(1) as f32))
    }

    /// Maximum over `axes`.
    pub fn max(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Max, "max", axes, keepdim)
    }

    /// Minimum over `axes`.
    pub fn min(&self, axes: &[isize], keepdim: bool) -> Result<Tensor> {
        self.reduce(ReduceOp::Min, "min", axes, keepdim)
    }

    fn all_axes(&self) -> Vec<isize> {
        (0..self.rank() as isize).collect()
    }

    /// Sum of all elements, as a 0-d tensor.
    pub fn sum_all(&self) -> Result<Tensor> {
        if self.rank() == 0 {
            return Ok(self.clone());
        }
        self.sum(&self.all_axes(), false)
    }

    /// Mean of all elements, as a 0-d tensor.
    pub fn mean_all(&self) -> Result<Tensor> {
        if self.rank() == 0 {
            return Ok(self.clone());
        }
        self.mean(&self.all_axes(), false)
    }

    /// Sums a broadcast result back to `shape` (the adjoint of broadcasting).
    pub fn sum_to_shape(&self, shape: &[usize]) -> Result<Tensor> {
        if self.shape() == shape {
            return Ok(self.clone());
        }
        let extra =
            self.rank()
                .checked_sub(shape.len())
                .ok_or_else(|| crate::Error::ShapeMismatch {
                    op: "sum_to_shape",
                    detail: format!("{:?} has fewer axes than {shape:?}", self.shape()),
                })?;
        let mut axes: Vec<isize> = (0..extra as isize).collect();
        for (i, &d) in shape.iter().enumerate() {
            let have = self.shape()[extra + i];
            if d == 1 && have != 1 {
                axes.push((extra + i) as isize);
            } else if d != have {
                return shape_err(
                    "sum_to_shape",
                    format!("{:?} does not broadcast from {shape:?}", self.shape()),
                );
            }
        }
        self.sum(&axes, true)?.reshape(shape)
    }
}
