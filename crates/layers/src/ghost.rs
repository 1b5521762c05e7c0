//! GhostNet blocks: GhostConv and GhostBottleneck (used by C3Ghost).

use crate::basic::dw_conv;
use crate::common::{Act, Conv, Ctx};
use crate::error::Result;
use crate::module::{join, Module, Visitor};
use crate::onnx::{GraphBuilder, Value};
use yolo_tensor::Tensor;

/// Ghost convolution: half the channels from a conv, half from a cheap 5×5 depth-wise conv.
#[derive(Debug)]
pub struct GhostConv {
    /// Primary conv.
    pub cv1: Conv,
    /// Cheap depth-wise conv.
    pub cv2: Conv,
}

impl GhostConv {
    /// `GhostConv(c1, c2, k, s, g, act)`.
    pub fn new(
        c1: usize,
        c2: usize,
        k: usize,
        s: usize,
        g: usize,
        act: Act,
        ctx: &Ctx,
    ) -> Result<GhostConv> {
        let c_ = c2 / 2;
        Ok(GhostConv {
            cv1: Conv::new(c1, c_, k, s, None, g, 1, act, ctx)?,
            cv2: Conv::new(c_, c_, 5, 1, None, c_, 1, act, ctx)?,
        })
    }
}

impl Module for GhostConv {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.cv1.forward(x, train)?;
        let z = self.cv2.forward(&y, train)?;
        Ok(Tensor::concat(&[&y, &z], 1)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.cv1.visit(&join(prefix, "cv1"), f);
        self.cv2.visit(&join(prefix, "cv2"), f);
    }
    fn fuse(&mut self) -> Result<()> {
        self.cv1.fuse()?;
        self.cv2.fuse()
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let y = self.cv1.export_onnx(g, &join(prefix, "cv1"), x)?;
        let z = self.cv2.export_onnx(g, &join(prefix, "cv2"), &y)?;
        Ok(g.concat(&[&y, &z], 1)?)
    }
}

/// Ghost bottleneck: GhostConv → (DWConv if stride 2) → GhostConv, plus a shortcut.
#[derive(Debug)]
pub struct GhostBottleneck {
    /// `conv.0`.
    pub pw: GhostConv,
    /// `conv.1`, stride-2 depth-wise conv (identity at stride 1).
    pub dw: Option<Conv>,
    /// `conv.2`.
    pub pwl: GhostConv,
    /// `shortcut.0`, `shortcut.1` at stride 2 (identity at stride 1).
    pub shortcut: Option<(Conv, Conv)>,
}

impl GhostBottleneck {
    /// `GhostBottleneck(c1, c2, k, s)`.
    pub fn new(c1: usize, c2: usize, k: usize, s: usize, ctx: &Ctx) -> Result<GhostBottleneck> {
        let c_ = c2 / 2;
        let pw = GhostConv::new(c1, c_, 1, 1, 1, Act::Default, ctx)?;
        let dw = if s == 2 {
            Some(dw_conv(c_, c_, k, s, 1, Act::Off, ctx)?)
        } else {
            None
        };
        let pwl = GhostConv::new(c_, c2, 1, 1, 1, Act::Off, ctx)?;
        let shortcut = if s == 2 {
            Some((
                dw_conv(c1, c1, k, s, 1, Act::Off, ctx)?,
                Conv::new(c1, c2, 1, 1, None, 1, 1, Act::Off, ctx)?,
            ))
        } else {
            None
        };
        Ok(GhostBottleneck {
            pw,
            dw,
            pwl,
            shortcut,
        })
    }
}

impl Module for GhostBottleneck {
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut y = self.pw.forward(x, train)?;
        if let Some(dw) = &self.dw {
            y = dw.forward(&y, train)?;
        }
        let y = self.pwl.forward(&y, train)?;
        let s = match &self.shortcut {
            Some((a, b)) => b.forward(&a.forward(x, train)?, train)?,
            None => x.clone(),
        };
        Ok(y.add(&s)?)
    }
    fn visit(&self, prefix: &str, f: &mut Visitor<'_>) {
        self.pw.visit(&join(prefix, "conv.0"), f);
        if let Some(dw) = &self.dw {
            dw.visit(&join(prefix, "conv.1"), f);
        }
        self.pwl.visit(&join(prefix, "conv.2"), f);
        if let Some((a, b)) = &self.shortcut {
            a.visit(&join(prefix, "shortcut.0"), f);
            b.visit(&join(prefix, "shortcut.1"), f);
        }
    }
    fn fuse(&mut self) -> Result<()> {
        self.pw.fuse()?;
        if let Some(dw) = &mut self.dw {
            dw.fuse()?;
        }
        self.pwl.fuse()?;
        if let Some((a, b)) = &mut self.shortcut {
            a.fuse()?;
            b.fuse()?;
        }
        Ok(())
    }
    fn export_onnx(&self, g: &mut GraphBuilder, prefix: &str, x: &Value) -> Result<Value> {
        let mut y = self.pw.export_onnx(g, &join(prefix, "conv.0"), x)?;
        if let Some(dw) = &self.dw {
            y = dw.export_onnx(g, &join(prefix, "conv.1"), &y)?;
        }
        let y = self.pwl.export_onnx(g, &join(prefix, "conv.2"), &y)?;
        let s = match &self.shortcut {
            Some((a, b)) => {
                let s = a.export_onnx(g, &join(prefix, "shortcut.0"), x)?;
                b.export_onnx(g, &join(prefix, "shortcut.1"), &s)?
            }
            None => x.clone(),
        };
        Ok(g.add(&y, &s)?)
    }
}
