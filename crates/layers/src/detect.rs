//! The YOLOv5 detection head (`Detect`): one 1×1 conv per level, anchors in grid units, and the
//! box decoding of inference mode.

use crate::common::{Conv2d, Ctx};
use crate::error::{invalid, Result};
use crate::module::{join, Kind, Layer, Module, Visitor};
use crate::onnx::{GraphBuilder, Value};
use yolo_tensor::{Device, Tensor, UnaryOp};

/// Output of [`Detect::forward_levels`].
#[derive(Debug, Clone)]
pub struct DetectOutput {
    /// Per level, raw predictions shaped N×na×ny×nx×(nc+5) (what the loss consumes).
    pub raw: Vec<Tensor>,
    /// Decoded boxes N×(Σ na·ny·nx)×(nc+5): xywh in input pixels, objectness and class
    /// probabilities (inference mode only).
    pub pred: Option<Tensor>,
    /// Auxiliary levels, shaped as `raw` (YOLOv7's `IAuxDetect` before fusing; empty otherwise).
    pub aux: Vec<Tensor>,
}

/// YOLOv5 `Detect(nc, anchors, ch)`.
#[derive(Debug)]
pub struct Detect {
    /// Number of classes.
    pub nc: usize,
    /// Anchors per level.
    pub na: usize,
    /// Outputs per anchor (`nc + 5`).
    pub no: usize,
    /// Output convs `m.0`, `m.1`, ….
    pub m: Vec<Conv2d>,
    /// Buffer `anchors`, nl×na×2: pixels until [`Detect::set_strides`] divides them by the
    /// strides (grid units, as upstream stores them).
    pub anchors: Tensor,
    /// Stride of each level (input pixels per cell), once known.
    pub stride: Vec<f32>,
}

impl Detect {
    /// Builds the head for input channels `ch` (one per level) and pixel anchors per level.
    pub fn new(nc: usize, anchors: &[Vec<f64>], ch: &[usize], ctx: &Ctx) -> Result<Detect> {
        if anchors.is_empty() || anchors.len() != ch.len() {
            return invalid(format!(
                "Detect: {} anchor levels for {} input layers",
                anchors.len(),
                ch.len()
            ));
        }
        let na = anchors[0].len() / 2;
        if na == 0 || anchors.iter().any(|a| a.len() != 2 * na) {
            return invalid("Detect: every level needs the same number of (w, h) anchor pairs");
        }
        let no = nc + 5;
        let m = ch
            .iter()
            .map(|&c| Conv2d::new(c, no * na, (1, 1), (1, 1), (0, 0), 1, 1, true, &ctx.init))
            .collect::<Result<Vec<_>>>()?;
        let flat: Vec<f32> = anchors.iter().flatten().map(|&v| v as f32).collect();
        Ok(Detect {
            nc,
            na,
            no,
            m,
            anchors: Tensor::from_vec(flat, &[ch.len(), na, 2], ctx.init.device)?,
            stride: Vec::new(),
        })
    }

    /// Number of levels.
    pub fn nl(&self) -> usize {
        self.m.len()
    }

    /// Records the strides found by a dummy forward, converts the anchors to grid units and
    /// applies upstream's bias prior (objectness ~8 objects per 640² image, class prior 0.6/nc).
    pub fn set_strides(&mut self, stride: Vec<f32>, init_biases: bool) -> Result<()> {
        if stride.len() != self.nl() {
            return invalid(format!(
                "Detect: {} strides for {} levels",
                stride.len(),
                self.nl()
            ));
        }
        let _g = yolo_tensor::no_grad();
        let s = Tensor::from_vec(stride.clone(), &[self.nl(), 1, 1], self.anchors.device())?;
        self.anchors.assign(&self.anchors.div(&s)?)?;
        if init_biases {
            for (conv, &st) in self.m.iter().zip(&stride) {
                let Some(b) = &conv.bias else { continue };
                let mut v = b.to_vec();
                for a in 0..self.na {
                    v[a * self.no + 4] += (8.0 / (640.0 / st as f64).powi(2)).ln() as f32;
                    for c in 0..self.nc {
                        v[a * self.no + 5 + c] += (0.6 / (self.nc as f64 - 0.99999)).ln() as f32;
                    }
                }
                b.assign(&Tensor::from_vec(v, b.shape(), b.device())?)?;
            }
        }
        self.stride = stride;
        Ok(())
    }

    /// Runs the head: raw per-level outputs, plus decoded boxes unless `train`.
    pub fn forward_levels(&self, xs: &[Tensor], train: bool) -> Result<DetectOutput> {
        if xs.len() != self.nl() {
            return invalid(format!(
                "Detect: {} inputs for {} levels",
                xs.len(),
                self.nl()
            ));
        }
        // Each level's 1×1 conv writes its N×na×ny×nx×no rows directly.
        let raw = xs
            .iter()
            .zip(&self.m)
            .map(|(x, conv)| conv.forward_heads(x, self.na))
            .collect::<Result<Vec<_>>>()?;
        self.decode_raw(raw, train)
    }

    /// One level's conv output N×(na·no)×ny×nx as N×na×ny×nx×no.
    pub fn split_level(&self, y: &Tensor) -> Result<Tensor> {
        let s = y.shape();
        if s.len() != 4 || s[1] != self.na * self.no {
            return invalid(format!(
                "Detect: a level needs N×{}×H×W, got {s:?}",
                self.na * self.no
            ));
        }
        let (bs, ny, nx) = (s[0], s[2], s[3]);
        Ok(y.reshape(&[bs, self.na, self.no, ny, nx])?
            .permute(&[0, 1, 3, 4, 2])?)
    }

    /// The head's output from per-level conv outputs (N×(na·no)×ny×nx): heads that change the
    /// conv outputs (YOLOv7's implicit layers) run their own convs, then this.
    pub fn decode_levels(&self, ys: &[Tensor], train: bool) -> Result<DetectOutput> {
        let raw = ys
            .iter()
            .map(|y| self.split_level(y))
            .collect::<Result<Vec<_>>>()?;
        self.decode_raw(raw, train)
    }

    /// The head's output from per-level rows N×na×ny×nx×no ([`Detect::split_level`]).
    fn decode_raw(&self, raw: Vec<Tensor>, train: bool) -> Result<DetectOutput> {
        if train {
            return Ok(DetectOutput {
                raw,
                pred: None,
                aux: Vec::new(),
            });
        }
        if self.stride.len() != self.nl() {
            return invalid("Detect: strides unknown (the model sets them at construction)");
        }
        let anchors = self.anchors.to_vec();
        let records = yolo_tensor::is_grad_enabled() && raw.iter().any(|r| r.requires_grad());
        if !records && raw.iter().all(|r| r.device() == Device::Cpu) {
            return self.decode_host(raw, &anchors);
        }
        let mut z = Vec::with_capacity(raw.len());
        for (i, r) in raw.iter().enumerate() {
            let (bs, ny, nx) = (r.shape()[0], r.shape()[2], r.shape()[3]);
            let st = self.stride[i];
            let dev = r.device();
            let ag_host: Vec<f32> = anchors[i * self.na * 2..(i + 1) * self.na * 2]
                .iter()
                .map(|a| a * st)
                .collect();
            let mut grid = Vec::with_capacity(ny * nx * 2);
            for y in 0..ny {
                for x in 0..nx {
                    grid.extend([x as f32 - 0.5, y as f32 - 0.5]);
                }
            }
            let grid = Tensor::from_vec(grid, &[1, 1, ny, nx, 2], dev)?;
            let ag = Tensor::from_vec(ag_host, &[1, self.na, 1, 1, 2], dev)?;
            let s = r.sigmoid();
            let xy = s
                .narrow(4, 0, 2)?
                .mul_scalar(2.0)
                .add(&grid)?
                .mul_scalar(st);
            let wh = s.narrow(4, 2, 2)?.mul_scalar(2.0).sqr().mul(&ag)?;
            let conf = s.narrow(4, 4, self.no - 4)?;
            let y = Tensor::concat(&[&xy, &wh, &conf], 4)?;
            z.push(y.reshape(&[bs, self.na * ny * nx, self.no])?);
        }
        let refs: Vec<&Tensor> = z.iter().collect();
        Ok(DetectOutput {
            raw,
            pred: Some(Tensor::concat(&refs, 1)?),
            aux: Vec::new(),
        })
    }

    /// [`Detect::decode_raw`]'s predictions on the CPU when nothing records them: every
    /// level's rows go through the sigmoid straight into the joined N×(Σ na·ny·nx)×no buffer
    /// (one pass, `Tensor::concat_unary`), then the box arithmetic runs in place on each row's
    /// first four values (instead of eight whole-tensor ops per level and a concat).
    fn decode_host(&self, raw: Vec<Tensor>, anchors: &[f32]) -> Result<DetectOutput> {
        let (na, no) = (self.na, self.no);
        let flat = raw
            .iter()
            .map(|r| {
                let s = r.shape();
                r.reshape(&[s[0], na * s[2] * s[3], no])
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let refs: Vec<&Tensor> = flat.iter().collect();
        let pred = Tensor::concat_unary(&refs, 1, UnaryOp::Sigmoid)?;
        let rows: usize = flat.iter().map(|f| f.shape()[1]).sum();
        pred.update_data(|d| {
            for img in d.chunks_exact_mut(rows * no) {
                let mut img_rows = img.chunks_exact_mut(no);
                for (i, r) in raw.iter().enumerate() {
                    let (ny, nx) = (r.shape()[2], r.shape()[3]);
                    let st = self.stride[i];
                    // Anchors in pixels (as the recorded path's anchor grid).
                    let ag: Vec<f32> = anchors[i * na * 2..(i + 1) * na * 2]
                        .iter()
                        .map(|a| a * st)
                        .collect();
                    // Rows in (anchor, y, x) order, counted without divisions.
                    for a in 0..na {
                        for y in 0..ny {
                            let gy = y as f32 - 0.5;
                            for (x, v) in img_rows.by_ref().take(nx).enumerate() {
                                let gx = x as f32 - 0.5;
                                v[0] = (v[0] * 2.0 + gx) * st;
                                v[1] = (v[1] * 2.0 + gy) * st;
                                let (w, h) = (v[2] * 2.0, v[3] * 2.0);
                                v[2] = w * w * ag[a * 2];
                                v[3] = h * h * ag[a * 2 + 1];
                            }
                        }
                    }
                }
            }
        })?;
        Ok(DetectOutput {
            raw,
            pred: Some(pred),
            aux: Vec::new(),
        })
    }

    /// Appends the per-level output convs (`m.0`, `m.1`, …) to an ONNX graph.
    pub fn export_convs(
        &self,
        g: &mut GraphBuilder,
        prefix: &str,
        xs: &[Value],
    ) -> Result<Vec<Value>> {
        if xs.len() != self.nl() {
            return invalid(format!(
                "Detect: {} inputs for {} levels",
                xs.len(),
                self.nl()
            ));
        }
        xs.iter()
            .zip(&self.m)
            .enumerate()
            .map(|(i, (x, conv))| conv.export_onnx(g, &join(prefix, &format!("m.{i}")), x))
            .collect()
    }

    /// Appends the inference decoding of per-level conv outputs N×(na·no)×ny×nx to an ONNX
    /// graph, as [`Detect::decode_levels`] computes it: sigmoid, `xy = (2σ + grid − 0.5)·stride`,
    /// `wh = (2σ)²·anchor`, levels concatenated to N×(Σ na·ny·nx)×no. The grids (`grid.i`,
    /// cell offsets minus 0.5) and pixel anchors (`anchor_grid.i`) become initializers.
    pub fn export_decode(&self, g: &mut GraphBuilder, prefix: &str, ys: &[Value]) -> Result<Value> {
        if ys.len() != self.nl() || self.stride.len() != self.nl() {
            return invalid(format!(
                "Detect: {} inputs and {} strides for {} levels",
                ys.len(),
                self.stride.len(),
                self.nl()
            ));
        }
        let (na, no) = (self.na, self.no);
        let anchors = self.anchors.to_vec();
        let mut z = Vec::with_capacity(ys.len());
        for (i, y) in ys.iter().enumerate() {
            let s = y.shape().to_vec();
            if s.len() != 4 || s[1] != na * no {
                return invalid(format!(
                    "Detect: a level needs N×{}×H×W, got {s:?}",
                    na * no
                ));
            }
            let (bs, ny, nx) = (s[0], s[2], s[3]);
            let st = self.stride[i];
            let r = g.reshape(y, &[bs, na, no, ny, nx])?;
            let r = g.transpose(&r, &[0, 1, 3, 4, 2])?;
            let sig = g.unary("Sigmoid", &r, Vec::new())?;
            let parts = g.split(&sig, 4, &[2, 2, no - 4])?;
            let mut grid = Vec::with_capacity(ny * nx * 2);
            for y in 0..ny {
                for x in 0..nx {
                    grid.extend([x as f32 - 0.5, y as f32 - 0.5]);
                }
            }
            let grid = g.initializer(
                &join(prefix, &format!("grid.{i}")),
                &[1, 1, ny, nx, 2],
                grid,
            )?;
            let ag: Vec<f32> = anchors[i * na * 2..(i + 1) * na * 2]
                .iter()
                .map(|a| a * st)
                .collect();
            let ag = g.initializer(
                &join(prefix, &format!("anchor_grid.{i}")),
                &[1, na, 1, 1, 2],
                ag,
            )?;
            let xy = g.mul_scalar(&parts[0], 2.0)?;
            let xy = g.add(&xy, &grid)?;
            let xy = g.mul_scalar(&xy, st)?;
            let wh = g.mul_scalar(&parts[1], 2.0)?;
            let wh = g.mul(&wh, &wh)?;
            let wh = g.mul(&wh, &ag)?;
            let y = g.concat(&[&xy, &wh, &parts[2]], 4)?;
            z.push(g.reshape(&y, &[bs, na * ny * nx, no])?);
        }
        let refs: Vec<&Value> = z.iter().collect();
        Ok(g.concat(&refs, 1)?)
    }

    /// A zero input batch of the right channel counts, for stride discovery.
    pub fn input_channels(&self) -> Vec<usize> {
        self.m.iter().map(|c| c.weight.shape()[1]).collect()
    }

    /// Device of the head's tensors.
    pub fn device(&self) -> Device {
        self.anchors.device()
    }
}

impl Layer for Detect {
    /// The decoded predictions (inference form); training code calls
    /// [`Detect::forward_levels`] for the raw levels.
    fn run(&self, xs: &[Tensor], _train: bool) -> Result<Tensor> {
        match self.forward_levels(xs, false)?.pred {
            Some(p) => Ok(p),
            None => invalid("Detect: no decoded output"),
        }
    }
    fn visit_layer(&self, prefix: &str, f: &mut Visitor<'_>) {
        f(&join(prefix, "anchors"), &self.anchors, Kind::Buffer);
        for (i, c) in self.m.iter().enumerate() {
            c.visit(&join(prefix, &format!("m.{i}")), f);
        }
    }
    fn export_onnx_layer(&self, g: &mut GraphBuilder, prefix: &str, xs: &[Value]) -> Result<Value> {
        let ys = self.export_convs(g, prefix, xs)?;
        self.export_decode(g, prefix, &ys)
    }
    fn as_detect(&self) -> Option<&Detect> {
        Some(self)
    }
    fn as_detect_mut(&mut self) -> Option<&mut Detect> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use yolo_activations::Activation;

    /// The in-place decode (nothing to record) gives bit for bit what the recorded tensor ops
    /// give.
    #[test]
    fn in_place_decode_equals_the_recorded_ops() {
        let ctx = Ctx::new(3, Activation::Silu);
        let anchors = vec![vec![10.0, 13.0, 16.0, 30.0], vec![30.0, 61.0, 62.0, 45.0]];
        let mut d = Detect::new(3, &anchors, &[4, 6], &ctx).unwrap();
        d.set_strides(vec![8.0, 16.0], false).unwrap();
        let level = |shape: &[usize], seed: u32| {
            let n: usize = shape.iter().product();
            let v = (0..n)
                .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) as f32 / u32::MAX as f32)
                .map(|u| 8.0 * u - 4.0)
                .collect();
            Tensor::from_vec(v, shape, Device::Cpu).unwrap()
        };
        let no = d.no;
        let ys = [level(&[2, 2 * no, 5, 7], 1), level(&[2, 2 * no, 3, 4], 2)];
        let fast = d.decode_levels(&ys, false).unwrap().pred.unwrap();
        let graded: Vec<Tensor> = ys.iter().map(|y| y.detach().with_grad()).collect();
        let slow = d.decode_levels(&graded, false).unwrap().pred.unwrap();
        assert!(slow.requires_grad(), "the recorded path ran");
        assert_eq!(fast.shape(), &[2, 2 * (35 + 12), no]);
        assert_eq!(fast.to_vec(), slow.to_vec());
    }
}
