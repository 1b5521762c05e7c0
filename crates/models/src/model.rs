//! A built model: the layer graph of a [`ModelConfig`], its forward pass, summary and fusing.

use crate::config::{Anchors, Arg, ModelConfig};
use crate::error::{ModelError, Result};
use crate::registry::{Registry, RowInput};
use yolo_activations::Activation;
use yolo_layers::{count_params, flops, named_tensors, Ctx, DetectOutput, Kind, Layer, Visitor};
use yolo_tensor::{Device, Tensor};

/// `n` copies of a single-input layer run in sequence (upstream `nn.Sequential` for rows with
/// `number > 1` that do not consume the repeat count themselves).
#[derive(Debug)]
struct Repeat(Vec<Box<dyn Layer>>);

impl Layer for Repeat {
    fn run(&self, xs: &[Tensor], train: bool) -> yolo_layers::Result<Tensor> {
        let mut y = self.0[0].run(xs, train)?;
        for l in &self.0[1..] {
            y = l.run(std::slice::from_ref(&y), train)?;
        }
        Ok(y)
    }
    fn visit_layer(&self, prefix: &str, f: &mut Visitor<'_>) {
        for (i, l) in self.0.iter().enumerate() {
            l.visit_layer(&yolo_layers::join(prefix, &i.to_string()), f);
        }
    }
    fn fuse_layer(&mut self) -> yolo_layers::Result<()> {
        self.0.iter_mut().try_for_each(|l| l.fuse_layer())
    }
    fn export_onnx_layer(
        &self,
        g: &mut yolo_onnx::GraphBuilder,
        prefix: &str,
        xs: &[yolo_onnx::Value],
    ) -> yolo_layers::Result<yolo_onnx::Value> {
        let Some((first, _)) = self.0.split_first() else {
            return Err(yolo_layers::LayerError::Invalid("an empty repeat".into()));
        };
        let mut y = first.export_onnx_layer(g, &yolo_layers::join(prefix, "0"), xs)?;
        for (i, l) in self.0.iter().enumerate().skip(1) {
            y = l.export_onnx_layer(
                g,
                &yolo_layers::join(prefix, &i.to_string()),
                std::slice::from_ref(&y),
            )?;
        }
        Ok(y)
    }
}

/// One node of the graph.
#[derive(Debug)]
pub struct Node {
    /// The block.
    pub layer: Box<dyn Layer>,
    /// Absolute input indices (`None` is the model input).
    pub from: Vec<Option<usize>>,
    /// The row's `from` as written.
    pub from_text: String,
    /// Repeats after the depth gain.
    pub n: usize,
    /// Module name as written.
    pub module: String,
    /// Final arguments, as upstream prints them.
    pub args: Vec<Arg>,
    /// Output channels.
    pub c2: usize,
}

/// One row of [`Model::layer_table`].
#[derive(Clone, Debug, PartialEq)]
pub struct LayerRow {
    /// Row index.
    pub index: usize,
    /// `from` as written.
    pub from: String,
    /// Repeats after the depth gain.
    pub n: usize,
    /// Learnable parameters.
    pub params: usize,
    /// Module name.
    pub module: String,
    /// Final arguments.
    pub args: String,
}

/// The summary line of upstream `model.info()`.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// Number of YAML rows (graph nodes).
    pub layers: usize,
    /// Learnable parameters.
    pub params: usize,
    /// Parameters that require gradients.
    pub gradients: usize,
    /// Giga floating-point operations at the requested image size (2 × multiply-accumulates,
    /// counted with the `thop` rules upstream uses).
    pub gflops: f64,
}

/// A detection model built from YAML.
#[derive(Debug)]
pub struct Model {
    /// The configuration it was built from.
    pub config: ModelConfig,
    /// Graph nodes in order; the last is the detection head.
    pub nodes: Vec<Node>,
    /// Stride of each detection level.
    pub stride: Vec<f32>,
    /// Class names (from a dataset or weights metadata; `0..nc` by default).
    pub names: Vec<String>,
    keep: Vec<bool>,
    fused: bool,
    /// The modules it was built with: [`Model::to_device`] rebuilds the graph from them.
    registry: Registry,
    /// The switch every batch norm of this model shares (`--sync-bn`).
    sync_bn: yolo_layers::SyncBn,
}

fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    }
}

impl Model {
    /// Builds a model from a config with the built-in modules, seeded initialisation.
    pub fn new(config: ModelConfig, seed: u64) -> Result<Model> {
        Model::with_registry(config, &Registry::with_builtins(), seed)
    }

    /// Builds a model with `registry` (built-ins plus a user's modules).
    pub fn with_registry(config: ModelConfig, registry: &Registry, seed: u64) -> Result<Model> {
        let mut model = Model::assemble(config, registry, seed, Device::Cpu)?;
        model.init_strides()?;
        Ok(model)
    }

    /// The layer graph of `config` with fresh parameters on `device`; strides not yet known.
    fn assemble(
        config: ModelConfig,
        registry: &Registry,
        seed: u64,
        device: Device,
    ) -> Result<Model> {
        let default_act = match &config.activation {
            Some(a) => a
                .parse::<Activation>()
                .map_err(|e| ModelError::schema(format!("activation: {e}")))?,
            None => Activation::Silu,
        };
        let mut ctx = Ctx::new(seed, default_act);
        ctx.init.device = device;
        let na = config.anchors.per_level();
        let no = na * (config.nc + 5);
        let mut nodes: Vec<Node> = Vec::with_capacity(config.rows.len());
        let mut chs: Vec<usize> = Vec::new();
        for (i, row) in config.rows.iter().enumerate() {
            let err = |message: String| ModelError::Row {
                index: i,
                module: row.module.clone(),
                message,
                file: None,
            };
            let mut from = Vec::new();
            for &f in &row.from.indices() {
                let abs = if f < 0 { i as i64 + f } else { f };
                if abs >= i as i64 || (abs < 0 && !(i == 0 && f == -1)) {
                    return Err(err(format!(
                        "`from` index {f} does not point to an earlier layer"
                    )));
                }
                from.push(if abs < 0 { None } else { Some(abs as usize) });
            }
            let ch_in: Vec<usize> = from
                .iter()
                .map(|f| f.map_or(config.ch, |j| chs[j]))
                .collect();
            let builder = registry.get(&row.module).ok_or_else(|| {
                err(format!(
                    "unknown module `{}`; known: {}",
                    row.module,
                    registry.names().join(", ")
                ))
            })?;
            let n = if row.number > 1 {
                (round_half_even(row.number as f64 * config.depth_multiple) as usize).max(1)
            } else {
                row.number
            };
            let args: Vec<Arg> = row.args.iter().map(|a| substitute(a, &config)).collect();
            let input = RowInput {
                index: i,
                module: &row.module,
                ch_in,
                args,
                n,
                gw: config.width_multiple,
                ch_mul: config.channel_multiple,
                nc: config.nc,
                no,
                anchors: &config.anchors,
                ctx: &ctx,
            };
            let built = builder(&input).map_err(err)?;
            let layer = if built.uses_repeats || n == 1 {
                built.layer
            } else {
                let mut v = vec![built.layer];
                for _ in 1..n {
                    v.push(builder(&input).map_err(err)?.layer);
                }
                Box::new(Repeat(v)) as Box<dyn Layer>
            };
            chs.push(built.c2);
            nodes.push(Node {
                layer,
                from,
                from_text: row.from.to_string(),
                n,
                module: row.module.clone(),
                args: built.args,
                c2: built.c2,
            });
        }
        if nodes.last().and_then(|n| n.layer.as_detect()).is_none() {
            return Err(ModelError::schema(
                "the last row must be a detection head (Detect, IDetect, …)",
            ));
        }
        let mut keep = vec![false; nodes.len()];
        for (i, n) in nodes.iter().enumerate() {
            for &f in n.from.iter().flatten() {
                if f + 1 != i {
                    keep[f] = true;
                }
            }
        }
        let names = (0..config.nc).map(|c| c.to_string()).collect();
        Ok(Model {
            config,
            nodes,
            stride: Vec::new(),
            names,
            keep,
            fused: false,
            registry: registry.clone(),
            sync_bn: ctx.init.sync_bn.clone(),
        })
    }

    /// Synchronised batch norm (upstream `--sync-bn`): with `Some(all_reduce)`, every
    /// training-mode batch norm of this model takes its statistics over all replicas that the
    /// collective connects; `None` turns it off. Kept by [`Model::copy_to_device`].
    pub fn set_sync_bn(&self, sync: Option<yolo_tensor::AllReduceSum>) {
        self.sync_bn.set(sync);
    }

    /// Whether synchronised batch norm is on.
    pub fn sync_bn(&self) -> bool {
        self.sync_bn.get().is_some()
    }

    /// The device of the model's tensors (that of the detection head's anchors; every
    /// parameter and buffer lives there after [`Model::to_device`]).
    pub fn device(&self) -> Device {
        self.detect().device()
    }

    /// Moves every parameter and buffer to `device` (a no-op when already there); see
    /// [`Model::copy_to_device`] for how. Tensor handles taken before the move (optimisers,
    /// EMA sources) refer to the old copies: move first, then build those.
    pub fn to_device(&mut self, device: Device) -> Result<()> {
        if self.device() != device {
            *self = self.copy_to_device(device)?;
        }
        Ok(())
    }

    /// A deep copy of this model with every parameter and buffer on `device` (a copy even when
    /// `device` is the model's own).
    ///
    /// Tensors cannot change device in place, so the layer graph is rebuilt on `device` from
    /// the model's config and registry (and fused when this model is fused), then every named
    /// tensor is copied over by name with its `requires_grad` flag; strides and class names
    /// are carried over. Tensors a layer creates at construction outside its named tensors land
    /// on `device` too, since every layer builds through the same [`Ctx`].
    pub fn copy_to_device(&self, device: Device) -> Result<Model> {
        let _g = yolo_tensor::no_grad();
        let mut moved = Model::assemble(self.config.clone(), &self.registry, 0, device)?;
        moved
            .nodes
            .last_mut()
            .and_then(|n| n.layer.set_head_strides(self.stride.clone(), false))
            .expect("checked at construction")?;
        moved.stride = self.stride.clone();
        if self.fused {
            moved.fuse()?;
        }
        let src = self.named_tensors();
        let dst = moved.named_tensors();
        let mismatch = |detail: String| {
            Err(ModelError::Weights(format!(
                "copying the model to {device}: the rebuilt graph differs: {detail}"
            )))
        };
        if src.len() != dst.len() {
            return mismatch(format!("{} tensors, rebuilt {}", src.len(), dst.len()));
        }
        for ((sn, st, sk), (dn, dt, dk)) in src.iter().zip(&dst) {
            if sn != dn || st.shape() != dt.shape() || sk != dk {
                return mismatch(format!(
                    "`{sn}` {:?} where the rebuilt graph has `{dn}` {:?}",
                    st.shape(),
                    dt.shape()
                ));
            }
            dt.assign(&st.detach().to_device(device)?)?;
            dt.set_requires_grad(st.requires_grad())?;
        }
        moved.names = self.names.clone();
        moved.sync_bn.set(self.sync_bn.get());
        Ok(moved)
    }

    /// Upstream's construction-time pass: one training-mode forward of zeros at 256×256 finds
    /// the strides (and, as upstream, updates BN running statistics), then anchors are
    /// converted to grid units and the head's biases get their priors.
    fn init_strides(&mut self) -> Result<()> {
        let s = 256usize;
        let x = Tensor::zeros(&[1, self.config.ch, s, s], self.device())?;
        let out = {
            let _g = yolo_tensor::no_grad();
            self.forward(&x, true)?
        };
        let stride: Vec<f32> = out
            .raw
            .iter()
            .map(|r| s as f32 / r.shape()[2] as f32)
            .collect();
        self.nodes
            .last_mut()
            .and_then(|n| n.layer.set_head_strides(stride.clone(), true))
            .expect("checked at construction")?;
        let detect = self.detect_mut();
        check_anchor_order(detect)?;
        self.stride = stride;
        Ok(())
    }

    /// The detection head.
    pub fn detect(&self) -> &yolo_layers::Detect {
        self.nodes
            .last()
            .and_then(|n| n.layer.as_detect())
            .expect("checked at construction")
    }

    fn detect_mut(&mut self) -> &mut yolo_layers::Detect {
        self.nodes
            .last_mut()
            .and_then(|n| n.layer.as_detect_mut())
            .expect("checked at construction")
    }

    /// Runs the model on an N×C×H×W batch: raw per-level outputs (train) plus decoded
    /// predictions (inference).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<DetectOutput> {
        // The FLOP counter is thread-local: count on this thread; otherwise run the whole pass on
        // a pool thread (one hand-off instead of one per op).
        if flops::counting() {
            self.forward_here(x, train, None, false)
        } else {
            yolo_tensor::in_pool(|| self.forward_here(x, train, None, false))
        }
    }

    /// [`Model::forward`] that also returns each layer's wall time in seconds and its GFLOPs
    /// (2 × multiply-accumulates), in layer order (upstream's `profile=True`). On a GPU the
    /// device is synchronised after every layer. The FLOP counter is thread-local (a pool thread
    /// waiting inside a kernel may run other callers' jobs, whose ops it would count), so the
    /// GFLOPs come from an untimed pass on the calling thread; the timed pass runs on a pool
    /// thread as [`Model::forward`] does, so the times hold no per-op hand-offs.
    pub fn forward_profiled(
        &self,
        x: &Tensor,
        train: bool,
    ) -> Result<(DetectOutput, Vec<(f64, f64)>)> {
        let mut counted = Vec::with_capacity(self.nodes.len());
        self.forward_here(x, train, Some(&mut counted), true)?;
        let mut times = Vec::with_capacity(self.nodes.len());
        let out = if flops::counting() {
            self.forward_here(x, train, Some(&mut times), false)?
        } else {
            yolo_tensor::in_pool(|| self.forward_here(x, train, Some(&mut times), false))?
        };
        for (t, c) in times.iter_mut().zip(&counted) {
            t.1 = c.1;
        }
        Ok((out, times))
    }

    fn forward_here(
        &self,
        x: &Tensor,
        train: bool,
        mut times: Option<&mut Vec<(f64, f64)>>,
        count: bool,
    ) -> Result<DetectOutput> {
        let device = x.device();
        let mut outs: Vec<Option<Tensor>> = vec![None; self.nodes.len()];
        let mut prev = x.clone();
        let last = self.nodes.len() - 1;
        // A channel Concat whose only reader is the next row: its parts, not joined (each with
        // the factor of a nearest upsampling not yet applied to it).
        let mut joined: Option<Vec<(Tensor, usize)>> = None;
        // An upsampling row whose only reader is the next row, a channel Concat: (the row,
        // its input, its factor), applied by that Concat's reader at the parts' own size, or
        // when the Concat is not joined lazily.
        let mut deferred: Option<(usize, Tensor, usize)> = None;
        let row_err = |i: usize, e: yolo_layers::LayerError| ModelError::Row {
            index: i,
            module: self.nodes[i].module.clone(),
            message: e.to_string(),
            file: None,
        };
        for (i, node) in self.nodes.iter().enumerate() {
            let start = times.is_some().then(std::time::Instant::now);
            let mut inputs: Vec<(Tensor, usize)> = node
                .from
                .iter()
                .map(|f| match (f, &deferred) {
                    (None, _) => (x.clone(), 1),
                    (Some(j), Some((r, low, up))) if r == j => (low.clone(), *up),
                    (Some(j), _) if *j + 1 == i => (prev.clone(), 1),
                    (Some(j), _) => (outs[*j].clone().expect("kept outputs are stored"), 1),
                })
                .collect();
            let pending = deferred.take();
            if i != last && self.lazy_join(i, &inputs) {
                joined = Some(inputs);
                record(times.as_deref_mut(), start, 0.0, device)?;
                continue;
            }
            if let Some((r, low, _)) = pending {
                if inputs.iter().any(|p| p.1 > 1) {
                    let up = self.nodes[r]
                        .layer
                        .run(&[low], train)
                        .map_err(|e| row_err(r, e))?;
                    for p in inputs.iter_mut().filter(|p| p.1 > 1) {
                        *p = (up.clone(), 1);
                    }
                }
            }
            let inputs: Vec<Tensor> = inputs.into_iter().map(|p| p.0).collect();
            if i == last {
                let (head, macs) = count_if(count, || node.layer.forward_head(&inputs, train));
                let head = head.expect("last node is the head")?;
                record(times.as_deref_mut(), start, macs, device)?;
                return Ok(head);
            }
            if let (Some(up), [input], None) = (node.layer.upsample_factor(), &inputs[..], &joined)
            {
                if self.defers(i, up, train) {
                    deferred = Some((i, input.clone(), up));
                    record(times.as_deref_mut(), start, 0.0, device)?;
                    continue;
                }
            }
            let (y, macs) = count_if(count, || match joined.take() {
                Some(parts) if parts.iter().any(|p| p.1 > 1) => {
                    node.layer.run_joined_up(&parts, train)
                }
                Some(parts) => {
                    let parts: Vec<Tensor> = parts.into_iter().map(|p| p.0).collect();
                    node.layer.run_joined(&parts, train)
                }
                None => node.layer.run(&inputs, train),
            });
            let y = y.map_err(|e| row_err(i, e))?;
            record(times.as_deref_mut(), start, macs, device)?;
            if self.keep[i] {
                outs[i] = Some(y.clone());
            }
            prev = y;
        }
        unreachable!("the loop returns at the head")
    }

    /// Whether row `i` (not the head) is a channel Concat of N×C×H×W `inputs` on one device,
    /// of one size once each is upsampled by its factor, whose output only row `i + 1` (not
    /// the head) reads, as its one input: that row then takes the parts
    /// ([`Layer::run_joined`], or [`Layer::run_joined_up`] with a deferred upsampling; C3 and
    /// Conv read them in place) and the joined copy is never made.
    fn lazy_join(&self, i: usize, inputs: &[(Tensor, usize)]) -> bool {
        let next = i + 1;
        if self.keep[i]
            || next >= self.nodes.len() - 1
            || self.nodes[next].from != [Some(i)]
            || !self.nodes[i].layer.joins_channels()
            || inputs.len() < 2
        {
            return false;
        }
        // Each part's size once upsampled by its factor.
        let size = |(t, f): &(Tensor, usize)| match *t.shape() {
            [n, _, h, w] => Some((n, h * f, w * f)),
            _ => None,
        };
        let s0 = size(&inputs[0]);
        s0.is_some()
            && inputs
                .iter()
                .all(|p| size(p) == s0 && p.0.device() == inputs[0].0.device())
    }

    /// Whether row `i`, an upsampling by `up`, hands its input on not yet upsampled (see
    /// [`Layer::run_joined_up`]): in inference, when its only reader is the next row (not the
    /// head), a channel join that it feeds once.
    fn defers(&self, i: usize, up: usize, train: bool) -> bool {
        let next = i + 1;
        !train
            && up > 1
            && !self.keep[i]
            && next < self.nodes.len() - 1
            && self.nodes[next].layer.joins_channels()
            && self.nodes[next]
                .from
                .iter()
                .filter(|f| **f == Some(i))
                .count()
                == 1
    }

    /// Every parameter and buffer with its upstream `state_dict` name (`model.0.conv.weight`…).
    pub fn named_tensors(&self) -> Vec<(String, Tensor, Kind)> {
        let mut v = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            v.extend(named_tensors(n.layer.as_ref(), &format!("model.{i}")));
        }
        v
    }

    /// The learnable parameters.
    pub fn parameters(&self) -> Vec<Tensor> {
        self.named_tensors()
            .into_iter()
            .filter(|(_, _, k)| *k == Kind::Param)
            .map(|(_, t, _)| t)
            .collect()
    }

    /// Upstream's layer table: from, n, params, module, arguments per row.
    pub fn layer_table(&self) -> Vec<LayerRow> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| LayerRow {
                index: i,
                from: n.from_text.clone(),
                n: n.n,
                params: count_params(n.layer.as_ref()),
                module: n.module.clone(),
                args: format!("{}", Arg::List(n.args.clone())),
            })
            .collect()
    }

    /// The summary: layers, parameters, gradients and GFLOPs at `imgsz` (square), computed as
    /// upstream: a profile at max(stride, 32) pixels scaled to `imgsz`.
    pub fn info(&self, imgsz: usize) -> Result<ModelInfo> {
        let params: Vec<Tensor> = self.parameters();
        let n_params: usize = params.iter().map(Tensor::numel).sum();
        let gradients: usize = params
            .iter()
            .filter(|p| p.requires_grad())
            .map(Tensor::numel)
            .sum();
        let s = (self.stride.iter().cloned().fold(0.0f32, f32::max) as usize).max(32);
        let x = Tensor::zeros(&[1, self.config.ch, s, s], self.device())?;
        // Profile in eval mode so the running statistics are left untouched; the count is the
        // same as in training mode (only BN's statistics source differs).
        let (r, macs) = flops::count(|| {
            let _g = yolo_tensor::no_grad();
            self.forward(&x, false)
        });
        r?;
        let gflops = macs * 2.0 / 1e9 * (imgsz as f64 / s as f64).powi(2);
        Ok(ModelInfo {
            layers: self.nodes.len(),
            params: n_params,
            gradients,
            gflops,
        })
    }

    /// Folds Conv+BN (and other inference-time structure) in every block.
    pub fn fuse(&mut self) -> Result<()> {
        for n in &mut self.nodes {
            n.layer.fuse_layer()?;
        }
        self.fused = true;
        Ok(())
    }

    /// Whether [`Model::fuse`] ran (inference-only structure).
    pub fn is_fused(&self) -> bool {
        self.fused
    }
}

/// `f()` and, when `on`, the multiply-accumulates it counted.
fn count_if<R>(on: bool, f: impl FnOnce() -> R) -> (R, f64) {
    if on {
        flops::count(f)
    } else {
        (f(), 0.0)
    }
}

/// Appends a profiled layer's (seconds since `start`, GFLOPs) once the device is done.
fn record(
    times: Option<&mut Vec<(f64, f64)>>,
    start: Option<std::time::Instant>,
    macs: f64,
    device: yolo_tensor::Device,
) -> Result<()> {
    if let (Some(t), Some(s)) = (times, start) {
        yolo_tensor::synchronize(device)?;
        t.push((s.elapsed().as_secs_f64(), 2.0 * macs / 1e9));
    }
    Ok(())
}

/// Replaces `nc` and `anchors` by their values, as upstream's `eval` of row arguments does.
fn substitute(a: &Arg, cfg: &ModelConfig) -> Arg {
    match a {
        Arg::Text(t) if t == "nc" => Arg::Int(cfg.nc as i64),
        Arg::Text(t) if t == "anchors" => match &cfg.anchors {
            Anchors::Sizes(s) => Arg::List(
                s.iter()
                    .map(|l| {
                        Arg::List(
                            l.iter()
                                .map(|&v| {
                                    if v.fract() == 0.0 {
                                        Arg::Int(v as i64)
                                    } else {
                                        Arg::Float(v)
                                    }
                                })
                                .collect(),
                        )
                    })
                    .collect(),
            ),
            Anchors::Count(n) => Arg::Int(*n as i64),
        },
        Arg::List(l) => Arg::List(l.iter().map(|x| substitute(x, cfg)).collect()),
        other => other.clone(),
    }
}

/// Upstream `check_anchor_order`: anchor areas must grow with stride; reverse them if not.
fn check_anchor_order(d: &mut yolo_layers::Detect) -> Result<()> {
    let a = d.anchors.to_vec();
    let per_level: Vec<f32> = (0..d.nl())
        .map(|l| {
            (0..d.na)
                .map(|i| a[(l * d.na + i) * 2] * a[(l * d.na + i) * 2 + 1])
                .sum::<f32>()
                / d.na as f32
        })
        .collect();
    let areas: Vec<f32> = per_level
        .iter()
        .zip(&d.stride)
        .map(|(m, s)| m * s * s)
        .collect();
    let (first, last) = (areas[0], areas[areas.len() - 1]);
    let ds = d.stride[d.stride.len() - 1] - d.stride[0];
    if (last - first).signum() != ds.signum() && last != first {
        let mut rev = Vec::with_capacity(a.len());
        for l in (0..d.nl()).rev() {
            rev.extend_from_slice(&a[l * d.na * 2..(l + 1) * d.na * 2]);
        }
        d.anchors.assign(&Tensor::from_vec(
            rev,
            d.anchors.shape(),
            d.anchors.device(),
        )?)?;
    }
    Ok(())
}
