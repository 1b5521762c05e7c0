//! The vision transformer blocks of C3TR: TransformerLayer (multi-head self-attention + MLP)
//! and TransformerBlock.

use crate::common::{Act, Conv, Ctx, Linear};
use crate::error::{invalid, Result};
use crate::module::{join, Kind, Module, Visitor};
use yolo_tensor::Tensor;

/// `nn.MultiheadAttention` (sequence-first input L×N×E), packed input projection.
#[derive(Debug)]
pub struct MultiheadAttention {
    /// `in_proj_weight`, 3E×E.
    pub in_proj_weight: Tensor,
    /// `in_proj_bias`, 3E.
    pub in_proj_bias: Tensor,
    /// `out_proj`.
    pub out_proj: Linear,
    /// Number of heads.
    pub heads: usize,
}

impl MultiheadAttention {
    /// Attention over `e` features with `heads` heads (PyTorch's initialisation: xavier-uniform
    /// input projection, zero biases).
    pub fn new(e: usize, heads: usize, ctx: &Ctx) -> Result<MultiheadAttention> {
        if heads == 0 || !e.is_multiple_of(heads) {
            return invalid(format!(
                "MultiheadAttention: {e} features not divisible by {heads} heads"
            ));
        }
        let bound = (6.0 / (e + 3 * e) as f32).sqrt();
        let mut out_proj = Linear::new(e, e, true, &ctx.init)?;
        out_proj.bias = Some(ctx.init.constant(&[e], 0.0)?);
        Ok(MultiheadAttention {
            in_proj_weight: ctx.init.uniform(&[3 * e, e], bound)?,
            in_proj_bias: ctx.init.constant(&[3 * e], 0.0)?,
            out_proj,
            heads,
        })
    }

    /// Attention of queries `q` over keys `k` / values `v`, each L×N×E.
    pub fn forward_qkv(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let (l, n, e) = match *q.shape() {
            [l, n, e] => (l, n, e),
            _ => {
                return invalid(format!(
                    "MultiheadAttention expects L×N×E, got {:?}",
                    q.shape()
                ))
            }
        };
        let h = self.heads;
        let hd = e / h;
        let w = self.in_proj_weight.chunk(3, 0)?;
        let b = self.in_proj_bias.chunk(3, 0)?;
        let proj = |x: &Tensor, i: usize| -> Result<Tensor> {
            // L×N×E → (N·h)×L×hd
            let y = x.matmul(&w[i].transpose(0, 1)?)?.add(&b[i])?;
            Ok(y.reshape(&[l, n * h, hd])?.transpose(0, 1)?)
        };
        let (qh, kh, vh) = (
            proj(q, 0)?.mul_scalar(1.0 / (hd as f32).sqrt()),
            proj(k, 1)?,
            proj(v, 2)?,
        );
        if crate::flops::counting() {
            // thop's rule for nn.MultiheadAttention (self-attention, kdim = vdim = E):
            // projections 4·L·E², attention products 2·L²·E per batch, softmax 3·L−1 per row.
            let (lf, ef, nf, hf) = (l as f64, e as f64, n as f64, h as f64);
            crate::flops::add(
                nf * (4.0 * lf * ef * ef + 2.0 * lf * lf * ef) + nf * hf * lf * (3.0 * lf - 1.0),
            );
        }
        let attn = qh.matmul(&kh.transpose(1, 2)?)?.softmax(-1)?;
        let o = attn.matmul(&vh)?.transpose(0, 1)?.reshape(&[l, n, e])?;
        // out_proj runs inside the attention call upstream, so thop never counts it: neither do we.
        let w = &self.out_proj.weight;
        let y = o.matmul(&w.transpose(0, 1)?)?;
        Ok(match &self.out_proj.bias {
            Some(b) => y.add(b)?,
            None => y,
        })
    }

    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        f(
            &join(prefix, "in_proj_weight"),
            &self.in_proj_weight,
            Kind::Param,
        );
        f(
            &join(prefix, "in_proj_bias"),
            &self.in_proj_bias,
            Kind::Param,
        );
        self.out_proj.visit(&join(prefix, "out_proj"), f);
    }
}

/// Transformer layer (LayerNorm removed, as upstream): self-attention and a 2-layer MLP, both
/// residual.
#[derive(Debug)]
pub struct TransformerLayer {
    /// Query projection.
    pub q: Linear,
    /// Key projection.
    pub k: Linear,
    /// Value projection.
    pub v: Linear,
    /// Attention.
    pub ma: MultiheadAttention,
    /// MLP first layer.
    pub fc1: Linear,
    /// MLP second layer.
    pub fc2: Linear,
}

impl TransformerLayer {
    /// `TransformerLayer(c, num_heads)`.
    pub fn new(c: usize, heads: usize, ctx: &Ctx) -> Result<TransformerLayer> {
        let i = &ctx.init;
        Ok(TransformerLayer {
            q: Linear::new(c, c, false, i)?,
            k: Linear::new(c, c, false, i)?,
            v: Linear::new(c, c, false, i)?,
            ma: MultiheadAttention::new(c, heads, ctx)?,
            fc1: Linear::new(c, c, false, i)?,
            fc2: Linear::new(c, c, false, i)?,
        })
    }
}

impl Module for TransformerLayer {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let a = self.ma.forward_qkv(
            &self.q.forward(x, train)?,
            &self.k.forward(x, train)?,
            &self.v.forward(x, train)?,
        )?;
        let x = a.add(x)?;
        let m = self.fc2.forward(&self.fc1.forward(&x, train)?, train)?;
        Ok(m.add(&x)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.q.visit(&join(prefix, "q"), f);
        self.k.visit(&join(prefix, "k"), f);
        self.v.visit(&join(prefix, "v"), f);
        self.ma.visit(&join(prefix, "ma"), f);
        self.fc1.visit(&join(prefix, "fc1"), f);
        self.fc2.visit(&join(prefix, "fc2"), f);
    }
}

/// Vision transformer block: optional conv to c2, learned position embedding, n layers.
#[derive(Debug)]
pub struct TransformerBlock {
    /// Channel-matching conv when c1 ≠ c2.
    pub conv: Option<Conv>,
    /// Learnable position embedding.
    pub linear: Linear,
    /// The layers (`tr.0`, `tr.1`, …).
    pub tr: Vec<TransformerLayer>,
    /// Output channels.
    pub c2: usize,
}

impl TransformerBlock {
    /// `TransformerBlock(c1, c2, num_heads, num_layers)`.
    pub fn new(
        c1: usize,
        c2: usize,
        heads: usize,
        layers: usize,
        ctx: &Ctx,
    ) -> Result<TransformerBlock> {
        let conv = if c1 != c2 {
            Some(Conv::new(c1, c2, 1, 1, None, 1, 1, Act::Default, ctx)?)
        } else {
            None
        };
        let linear = Linear::new(c2, c2, true, &ctx.init)?;
        let tr = (0..layers)
            .map(|_| TransformerLayer::new(c2, heads, ctx))
            .collect::<Result<_>>()?;
        Ok(TransformerBlock {
            conv,
            linear,
            tr,
            c2,
        })
    }
}

impl Module for TransformerBlock {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = match &self.conv {
            Some(c) => c.forward(x, train)?,
            None => x.clone(),
        };
        let (b, _, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        // N×C×H×W → (H·W)×N×C
        let p = x.flatten_from(2)?.permute(&[2, 0, 1])?;
        let mut y = p.add(&self.linear.forward(&p, train)?)?;
        for l in &self.tr {
            y = l.forward(&y, train)?;
        }
        Ok(y.permute(&[1, 2, 0])?.reshape(&[b, self.c2, h, w])?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        if let Some(c) = &self.conv {
            c.visit(&join(prefix, "conv"), f);
        }
        self.linear.visit(&join(prefix, "linear"), f);
        for (i, l) in self.tr.iter().enumerate() {
            l.visit(&join(prefix, &format!("tr.{i}")), f);
        }
    }
    fn fuse(&mut self) -> Result<()> {
        if let Some(c) = &mut self.conv {
            c.fuse()?;
        }
        Ok(())
    }
}
