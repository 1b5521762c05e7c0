//! Differentiable operations on [`crate::Tensor`]: each validates shapes, runs the kernel
//! through the backend seam and records its backward rule, written in terms of other ops.

mod elementwise;
mod nn;
mod reduce;
mod shape;
mod sync_bn;
pub use sync_bn::AllReduceSum;

use crate::error::{Error, Result};
use crate::Tensor;

pub(crate) fn same_device(op: &'static str, a: &Tensor, b: &Tensor) -> Result<()> {
    if a.device() != b.device() {
        return Err(Error::DeviceMismatch {
            op,
            lhs: a.device(),
            rhs: b.device(),
        });
    }
    Ok(())
}
