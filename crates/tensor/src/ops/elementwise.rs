//! Pointwise ops: unary functions (incl. activations), broadcasting binary ops, `where`.

use super::same_device;
use crate::autograd::record;
use crate::error::Result;
use crate::op::{BinaryOp, UnaryOp};
use crate::shape::broadcast_shape;
use crate::Tensor;

macro_rules! unary_methods {
    ($($(#[$m:meta])* $name:ident => $op:expr;)*) => {
        impl Tensor {
            $($(#[$m])* pub fn $name(&self) -> Tensor { self.unary($op) })*
        }
    };
}

unary_methods! {
    /// `-x`.
    neg => UnaryOp::Neg;
    /// `e^x`.
    exp => UnaryOp::Exp;
    /// Natural logarithm.
    log => UnaryOp::Log;
    /// Square root.
    sqrt => UnaryOp::Sqrt;
    /// Absolute value.
    abs => UnaryOp::Abs;
    /// Hyperbolic tangent.
    tanh => UnaryOp::Tanh;
    /// Logistic sigmoid.
    sigmoid => UnaryOp::Sigmoid;
    /// Error function.
    erf => UnaryOp::Erf;
    /// `ln(1 + e^x)`.
    softplus => UnaryOp::Softplus;
    /// `1/x`.
    recip => UnaryOp::Recip;
    /// `x²`.
    sqr => UnaryOp::Sqr;
    /// `max(x, 0)`.
    relu => UnaryOp::Relu;
    /// `x·σ(x)`.
    silu => UnaryOp::Silu;
    /// Arctangent.
    atan => UnaryOp::Atan;
}

impl Tensor {
    /// Applies a pointwise function in one fused pass (backward: one fused pass from the input).
    pub fn unary(&self, op: UnaryOp) -> Tensor {
        let out = self.storage().unary(op);
        record(
            out,
            self.shape().to_vec(),
            op.name(),
            vec![self.clone()],
            move |inp, _, g| {
                let dx = inp[0].storage().unary_backward(op, &g.storage());
                Ok(vec![Some(Tensor::make(dx, inp[0].shape().to_vec(), None))])
            },
        )
    }

    /// `x^p` for a constant `p`.
    pub fn powf(&self, p: f32) -> Tensor {
        self.unary(UnaryOp::Powf(p))
    }

    /// `clamp(x, lo, hi)`.
    pub fn clamp(&self, lo: f32, hi: f32) -> Tensor {
        self.unary(UnaryOp::Clamp(lo, hi))
    }

    /// `a·x + b`.
    pub fn affine(&self, a: f32, b: f32) -> Tensor {
        self.unary(UnaryOp::Affine(a, b))
    }

    /// `x + s`.
    pub fn add_scalar(&self, s: f32) -> Tensor {
        self.affine(1.0, s)
    }

    /// `x · s`.
    pub fn mul_scalar(&self, s: f32) -> Tensor {
        self.affine(s, 0.0)
    }

    fn binary(&self, op: BinaryOp, rhs: &Tensor) -> Result<Tensor> {
        same_device(op.name(), self, rhs)?;
        let out_shape = broadcast_shape(op.name(), self.shape(), rhs.shape())?;
        let out = self
            .storage()
            .binary(op, self.shape(), &rhs.storage(), rhs.shape(), &out_shape);
        let differentiable = !matches!(
            op,
            BinaryOp::Eq | BinaryOp::Gt | BinaryOp::Ge | BinaryOp::Lt | BinaryOp::Le
        );
        if !differentiable {
            return Ok(Tensor::make(out, out_shape, None));
        }
        Ok(record(
            out,
            out_shape,
            op.name(),
            vec![self.clone(), rhs.clone()],
            move |inp, out, g| {
                let (a, b) = (&inp[0], &inp[1]);
                let (ga, gb) = match op {
                    BinaryOp::Add => (g.clone(), g.clone()),
                    BinaryOp::Sub => (g.clone(), g.neg()),
                    BinaryOp::Mul => (g.mul(b)?, g.mul(a)?),
                    BinaryOp::Div => (g.div(b)?, g.mul(out)?.div(b)?.neg()),
                    BinaryOp::Maximum | BinaryOp::Minimum => {
                        // Ties share the gradient equally, as PyTorch does.
                        let wins = if op == BinaryOp::Maximum {
                            a.gt(b)?
                        } else {
                            a.lt(b)?
                        };
                        let mask_a = wins.add(&a.eq(b)?.mul_scalar(0.5))?;
                        let mask_b = mask_a.affine(-1.0, 1.0);
                        (g.mul(&mask_a)?, g.mul(&mask_b)?)
                    }
                    BinaryOp::Pow => {
                        // d/da a^b = b·a^(b−1); d/db a^b = a^b·ln a
                        let ga = g.mul(b)?.mul(&a.pow(&b.add_scalar(-1.0))?)?;
                        let gb = g.mul(out)?.mul(&a.log())?;
                        (ga, gb)
                    }
                    _ => unreachable!("comparisons record no node"),
                };
                Ok(vec![
                    Some(ga.sum_to_shape(a.shape())?),
                    Some(gb.sum_to_shape(b.shape())?),
                ])
            },
        ))
    }

    /// `self + rhs` with broadcasting.
    pub fn add(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Add, rhs)
    }
    /// `self − rhs` with broadcasting.
    pub fn sub(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Sub, rhs)
    }
    /// `self · rhs` with broadcasting.
    pub fn mul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Mul, rhs)
    }
    /// `self / rhs` with broadcasting.
    pub fn div(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Div, rhs)
    }
    /// Elementwise maximum with broadcasting.
    pub fn maximum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Maximum, rhs)
    }
    /// Elementwise minimum with broadcasting.
    pub fn minimum(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Minimum, rhs)
    }
    /// `self ^ rhs` elementwise with broadcasting.
    pub fn pow(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Pow, rhs)
    }
    /// 1 where equal, else 0 (no gradient).
    pub fn eq(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Eq, rhs)
    }
    /// 1 where `self > rhs`, else 0 (no gradient).
    pub fn gt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Gt, rhs)
    }
    /// 1 where `self >= rhs`, else 0 (no gradient).
    pub fn ge(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Ge, rhs)
    }
    /// 1 where `self < rhs`, else 0 (no gradient).
    pub fn lt(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Lt, rhs)
    }
    /// 1 where `self <= rhs`, else 0 (no gradient).
    pub fn le(&self, rhs: &Tensor) -> Result<Tensor> {
        self.binary(BinaryOp::Le, rhs)
    }

    /// A copy broadcast to `shape` (numpy rules). Backward sums over the broadcast axes.
    pub fn broadcast_as(&self, shape: &[usize]) -> Result<Tensor> {
        let target = broadcast_shape("broadcast_as", self.shape(), shape)?;
        if target != shape {
            return crate::error::shape_err(
                "broadcast_as",
                format!("{:?} cannot broadcast to {shape:?}", self.shape()),
            );
        }
        if target == self.shape() {
            return Ok(self.clone());
        }
        let out = self.storage().broadcast_to(self.shape(), &target);
        Ok(record(
            out,
            target,
            "broadcast_as",
            vec![self.clone()],
            |inp, _, g| Ok(vec![Some(g.sum_to_shape(inp[0].shape())?)]),
        ))
    }

    /// `cond ? a : b` elementwise (cond nonzero = true), all three broadcast together.
    /// Gradients flow to `a` and `b`, not to `cond`.
    pub fn where_cond(cond: &Tensor, a: &Tensor, b: &Tensor) -> Result<Tensor> {
        same_device("where_cond", cond, a)?;
        same_device("where_cond", cond, b)?;
        let s = broadcast_shape("where_cond", cond.shape(), a.shape())?;
        let s = broadcast_shape("where_cond", &s, b.shape())?;
        let (c, ab, bb) = {
            let _g = crate::no_grad();
            (
                cond.broadcast_as(&s)?,
                a.broadcast_as(&s)?,
                b.broadcast_as(&s)?,
            )
        };
        let out = c.storage().where_cond(&ab.storage(), &bb.storage());
        Ok(record(
            out,
            s,
            "where_cond",
            vec![a.clone(), b.clone(), c],
            |inp, _, g| {
                let zero = Tensor::zeros(&[1], g.device())?;
                let ga = Tensor::where_cond(&inp[2], g, &zero)?;
                let gb = Tensor::where_cond(&inp[2], &zero, g)?;
                Ok(vec![
                    Some(ga.sum_to_shape(inp[0].shape())?),
                    Some(gb.sum_to_shape(inp[1].shape())?),
                    None,
                ])
            },
        ))
    }
}
