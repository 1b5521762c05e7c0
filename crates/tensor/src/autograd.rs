//! Reverse-mode autograd over the dynamic graph that ops record as they run.

use crate::error::{Error, Result};
use crate::storage::Storage;
use crate::tensor::{Node, Tensor};
use crate::Device;
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

static PROFILING: AtomicBool = AtomicBool::new(false);
static PROFILE: Mutex<Vec<(&'static str, u64, Duration)>> = Mutex::new(Vec::new());

/// Turns the backward-pass profiler on or off (process-wide): while on, every backward
/// function's wall time is added to a per-op total that [`take_backward_profile`] returns.
pub fn set_backward_profiling(on: bool) {
    PROFILING.store(on, Ordering::Relaxed);
}

/// The backward profile gathered so far, as `(op, calls, seconds)` sorted by time (largest
/// first; gradient accumulation of tensors used twice appears as `accumulate`); clears it.
pub fn take_backward_profile() -> Vec<(&'static str, u64, f64)> {
    let mut p = std::mem::take(&mut *PROFILE.lock().unwrap_or_else(|e| e.into_inner()));
    p.sort_by_key(|e| std::cmp::Reverse(e.2));
    p.into_iter()
        .map(|(n, c, d)| (n, c, d.as_secs_f64()))
        .collect()
}

fn profile_add(name: &'static str, t: Instant) {
    let d = t.elapsed();
    let mut p = PROFILE.lock().unwrap_or_else(|e| e.into_inner());
    match p.iter_mut().find(|e| e.0 == name) {
        Some(e) => {
            e.1 += 1;
            e.2 += d;
        }
        None => p.push((name, 1, d)),
    }
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the graph.
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Restores the previous grad mode when dropped (see [`no_grad`]).
pub struct GradModeGuard(bool);

impl Drop for GradModeGuard {
    fn drop(&mut self) {
        GRAD_ENABLED.with(|g| g.set(self.0));
    }
}

/// Turns graph recording off on this thread until the guard is dropped: ops then record
/// nothing and keep no intermediates (inference, optimiser updates).
pub fn no_grad() -> GradModeGuard {
    set_grad_enabled(false)
}

/// Sets this thread's grad mode until the guard is dropped (the previous mode comes back).
pub fn set_grad_enabled(on: bool) -> GradModeGuard {
    let prev = GRAD_ENABLED.with(|g| g.replace(on));
    GradModeGuard(prev)
}

/// Records an op's output: a node is kept only when grad mode is on and some input needs it.
pub(crate) fn record<F>(
    storage: Storage,
    shape: Vec<usize>,
    name: &'static str,
    inputs: Vec<Tensor>,
    backward: F,
) -> Tensor
where
    F: Fn(&[Tensor], &Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
{
    let node = node_for(name, inputs, backward);
    Tensor::make(storage, shape, node)
}

pub(crate) fn node_for<F>(name: &'static str, inputs: Vec<Tensor>, backward: F) -> Option<Node>
where
    F: Fn(&[Tensor], &Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
{
    if is_grad_enabled() && inputs.iter().any(|t| t.requires_grad()) {
        Some(Node {
            name,
            inputs,
            backward: Box::new(backward),
        })
    } else {
        None
    }
}

impl Tensor {
    /// Back-propagates from this scalar (any one-element tensor): accumulates d(self)/d(leaf)
    /// into the `grad()` of every leaf that requires it.
    pub fn backward(&self) -> Result<()> {
        if self.numel() != 1 {
            return Err(Error::Backward(format!(
                "backward() needs a one-element tensor, got shape {:?}; use backward_with()",
                self.shape()
            )));
        }
        let seed = Tensor::ones(self.shape(), self.device())?;
        self.backward_with(&seed)
    }

    /// Back-propagates `grad` (same shape as self) through the graph.
    pub fn backward_with(&self, grad: &Tensor) -> Result<()> {
        if self.device() == Device::Cpu {
            // The whole pass on a kernel-pool thread: every op's kernels then start without a
            // cross-thread hand-off (one per pass instead of one per op).
            return crate::threads::in_pool(|| self.backward_here(grad));
        }
        self.backward_here(grad)
    }

    fn backward_here(&self, grad: &Tensor) -> Result<()> {
        if grad.shape() != self.shape() {
            return Err(Error::Backward(format!(
                "gradient of shape {:?} for a tensor of shape {:?}",
                grad.shape(),
                self.shape()
            )));
        }
        if !self.requires_grad() {
            return Err(Error::Backward(
                "the tensor does not require grad: no input of its graph has requires_grad set"
                    .into(),
            ));
        }
        let _guard = no_grad();
        let order = topo_order(self);
        let mut grads: HashMap<usize, Tensor> = HashMap::new();
        grads.insert(self.id(), grad.detach());
        for t in order.iter().rev() {
            let Some(g) = grads.remove(&t.id()) else {
                continue;
            };
            match &t.0.node {
                None => {
                    if t.requires_grad() {
                        t.accumulate_grad(g)?;
                    }
                }
                Some(node) => {
                    let profiling = PROFILING.load(Ordering::Relaxed);
                    let t0 = Instant::now();
                    let input_grads = (node.backward)(&node.inputs, t, &g)?;
                    if profiling {
                        profile_add(node.name, t0);
                    }
                    for (inp, ig) in node.inputs.iter().zip(input_grads) {
                        let Some(ig) = ig else { continue };
                        if !inp.requires_grad() {
                            continue;
                        }
                        if ig.shape() != inp.shape() {
                            return Err(Error::Backward(format!(
                                "`{}` produced a gradient of shape {:?} for an input of shape {:?}",
                                node.name,
                                ig.shape(),
                                inp.shape()
                            )));
                        }
                        match grads.remove(&inp.id()) {
                            Some(prev) => {
                                let t0 = Instant::now();
                                grads.insert(inp.id(), prev.accumulate(&ig)?);
                                if profiling {
                                    profile_add("accumulate", t0);
                                }
                            }
                            None => {
                                grads.insert(inp.id(), ig);
                            }
                        };
                    }
                }
            }
        }
        // A failed GPU op during the pass surfaces here (see `cuda::backend`).
        self.storage().check()
    }
}

/// Tensors reachable from `root` that require grad, inputs before the ops that use them
/// (iterative DFS: deep networks must not overflow the stack).
fn topo_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut seen: HashSet<usize> = HashSet::new();
    let mut stack: Vec<(Tensor, bool)> = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !seen.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = &t.0.node {
            for inp in &node.inputs {
                if inp.requires_grad() && !seen.contains(&inp.id()) {
                    stack.push((inp.clone(), false));
                }
            }
        }
    }
    order
}
