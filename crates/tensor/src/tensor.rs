//! The [`Tensor`] type: a cheap handle (Arc) to a shape, a storage and an autograd node.

use crate::error::{shape_err, Error, Result};
use crate::shape::numel;
use crate::storage::Storage;
use crate::Device;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};

/// Computes input gradients from (inputs, output, output gradient); `None` where an input
/// needs no gradient.
pub(crate) type BackwardFn =
    dyn Fn(&[Tensor], &Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync;

/// How a non-leaf tensor was made: the op's inputs and its backward rule.
pub(crate) struct Node {
    pub name: &'static str,
    pub inputs: Vec<Tensor>,
    pub backward: Box<BackwardFn>,
}

pub(crate) struct Inner {
    pub id: usize,
    pub shape: Vec<usize>,
    pub device: Device,
    pub storage: Arc<RwLock<Storage>>,
    pub node: Option<Node>,
    pub requires_grad: AtomicBool,
    pub grad: Mutex<Option<Tensor>>,
}

/// A runtime-shaped, contiguous, row-major f32 tensor on a [`Device`], with reverse-mode autograd.
/// Cloning is cheap: clones share data and graph position.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

fn next_id() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

impl Tensor {
    pub(crate) fn make(storage: Storage, shape: Vec<usize>, node: Option<Node>) -> Tensor {
        let device = storage.device();
        let requires_grad = node.is_some();
        Tensor(Arc::new(Inner {
            id: next_id(),
            shape,
            device,
            storage: Arc::new(RwLock::new(storage)),
            node,
            requires_grad: AtomicBool::new(requires_grad),
            grad: Mutex::new(None),
        }))
    }

    /// A tensor of `shape` holding `data` (row-major) on `device`.
    pub fn from_vec(data: Vec<f32>, shape: &[usize], device: Device) -> Result<Tensor> {
        if data.len() != numel(shape) {
            return shape_err(
                "from_vec",
                format!(
                    "{} values given for shape {shape:?} ({} elements)",
                    data.len(),
                    numel(shape)
                ),
            );
        }
        Ok(Tensor::make(
            Storage::from_vec(data, device)?,
            shape.to_vec(),
            None,
        ))
    }

    /// A tensor of `shape` filled with `value`.
    pub fn full(value: f32, shape: &[usize], device: Device) -> Result<Tensor> {
        Ok(Tensor::make(
            Storage::full(value, numel(shape), device)?,
            shape.to_vec(),
            None,
        ))
    }

    /// Zeros of `shape`.
    pub fn zeros(shape: &[usize], device: Device) -> Result<Tensor> {
        Tensor::full(0.0, shape, device)
    }

    /// Ones of `shape`.
    pub fn ones(shape: &[usize], device: Device) -> Result<Tensor> {
        Tensor::full(1.0, shape, device)
    }

    /// A 0-dimensional tensor on the CPU.
    pub fn scalar(value: f32) -> Tensor {
        Tensor::make(Storage::Cpu(vec![value].into()), Vec::new(), None)
    }

    /// Zeros with this tensor's shape and device.
    pub fn zeros_like(&self) -> Result<Tensor> {
        Tensor::zeros(self.shape(), self.device())
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        numel(&self.0.shape)
    }

    /// The device the data lives on.
    pub fn device(&self) -> Device {
        self.0.device
    }

    /// A unique id (stable for the lifetime of this tensor and its clones).
    pub fn id(&self) -> usize {
        self.0.id
    }

    pub(crate) fn storage(&self) -> RwLockReadGuard<'_, Storage> {
        self.0.storage.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Copies the data to a host vector (row-major).
    pub fn to_vec(&self) -> Vec<f32> {
        self.storage().to_vec()
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f32> {
        if self.numel() != 1 {
            return shape_err(
                "item",
                format!(
                    "tensor of shape {:?} has {} elements, not 1",
                    self.shape(),
                    self.numel()
                ),
            );
        }
        let v = self.to_vec();
        self.storage().check()?;
        Ok(v[0])
    }

    /// A copy on `device` (no copy if already there). Gradients flow back to the source.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if device == self.device() {
            return Ok(self.clone());
        }
        let host = self.to_vec();
        self.storage().check()?;
        let data = Storage::from_vec(host, device)?;
        Ok(crate::autograd::record(
            data,
            self.shape().to_vec(),
            "to_device",
            vec![self.clone()],
            move |inp, _, g| Ok(vec![Some(g.to_device(inp[0].device())?)]),
        ))
    }

    /// Whether gradients are computed for this tensor.
    pub fn requires_grad(&self) -> bool {
        self.0.requires_grad.load(Ordering::Relaxed)
    }

    /// Marks a leaf tensor (a parameter) as needing gradients. Errors on non-leaf tensors.
    pub fn set_requires_grad(&self, on: bool) -> Result<()> {
        if self.0.node.is_some() {
            return Err(Error::Backward(format!(
                "set_requires_grad on a non-leaf tensor (made by `{}`); detach() it first",
                self.0.node.as_ref().map_or("", |n| n.name)
            )));
        }
        self.0.requires_grad.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// Builder form of [`Tensor::set_requires_grad`] for fresh leaves.
    pub fn with_grad(self) -> Tensor {
        if self.0.node.is_none() {
            self.0.requires_grad.store(true, Ordering::Relaxed);
        }
        self
    }

    /// Whether this tensor was produced by a recorded op (is not a leaf).
    pub fn is_leaf(&self) -> bool {
        self.0.node.is_none()
    }

    /// The accumulated gradient of a leaf, if any.
    pub fn grad(&self) -> Option<Tensor> {
        self.0
            .grad
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Drops the accumulated gradient.
    pub fn zero_grad(&self) {
        *self.0.grad.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    pub(crate) fn accumulate_grad(&self, g: Tensor) -> Result<()> {
        let mut slot = self.0.grad.lock().unwrap_or_else(|e| e.into_inner());
        *slot = Some(match slot.take() {
            None => g,
            Some(prev) => prev.accumulate(&g)?,
        });
        Ok(())
    }

    /// `self + g` for gradient accumulation: in place when this handle is the only one to
    /// its data (a gradient nobody else holds) and both live on the CPU, else a new tensor.
    pub(crate) fn accumulate(self, g: &Tensor) -> Result<Tensor> {
        let sole = Arc::strong_count(&self.0) == 1 && Arc::strong_count(&self.0.storage) == 1;
        let cpu = self.device() == Device::Cpu && g.device() == Device::Cpu;
        // Callers pass equal shapes; anything else keeps `add`'s broadcasting and errors.
        if !(sole && cpu && self.shape() == g.shape()) {
            return self.add(g);
        }
        let src = g.storage();
        match &*src {
            Storage::Cpu(v) => self.update_data(|d| crate::cpu::add_assign(d, v))?,
            Storage::Cuda(_) => return self.add(g),
        }
        drop(src);
        Ok(self)
    }

    /// A leaf sharing this tensor's data, cut from the graph.
    pub fn detach(&self) -> Tensor {
        Tensor(Arc::new(Inner {
            id: next_id(),
            shape: self.0.shape.clone(),
            device: self.0.device,
            storage: self.0.storage.clone(),
            node: None,
            requires_grad: AtomicBool::new(false),
            grad: Mutex::new(None),
        }))
    }

    /// A view with another shape over the same data (no copy).
    pub(crate) fn view(&self, shape: Vec<usize>, node: Option<Node>) -> Tensor {
        let requires_grad = node.is_some();
        Tensor(Arc::new(Inner {
            id: next_id(),
            shape,
            device: self.0.device,
            storage: self.0.storage.clone(),
            node,
            requires_grad: AtomicBool::new(requires_grad),
            grad: Mutex::new(None),
        }))
    }

    /// Overwrites this tensor's data with `src`'s (same shape), in place and outside the graph:
    /// optimisers and running statistics update parameters this way.
    pub fn assign(&self, src: &Tensor) -> Result<()> {
        if src.shape() != self.shape() {
            return shape_err(
                "assign",
                format!("source {:?} into {:?}", src.shape(), self.shape()),
            );
        }
        if src.device() != self.device() {
            return Err(Error::DeviceMismatch {
                op: "assign",
                lhs: self.device(),
                rhs: src.device(),
            });
        }
        if Arc::ptr_eq(&self.0.storage, &src.0.storage) {
            return Ok(());
        }
        let data = src.storage().clone();
        *self.0.storage.write().unwrap_or_else(|e| e.into_inner()) = data;
        Ok(())
    }

    /// Runs `f` on this tensor's host data in place, outside the graph: optimisers and EMA
    /// update parameters this way. On the CPU it does not allocate; on a GPU the data makes a
    /// round trip through host memory.
    pub fn update_data(&self, f: impl FnOnce(&mut [f32])) -> Result<()> {
        let mut guard = self.0.storage.write().unwrap_or_else(|e| e.into_inner());
        guard.check()?;
        guard.update_host(f)
    }

    /// Whether two tensors share the same data buffer.
    pub fn same_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0.storage, &other.0.storage)
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.to_vec();
        let head: Vec<f32> = v.iter().take(8).copied().collect();
        write!(
            f,
            "Tensor(shape={:?}, device={}, requires_grad={}, data={:?}{})",
            self.shape(),
            self.device(),
            self.requires_grad(),
            head,
            if v.len() > 8 { " …" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_data_mutates_in_place_and_views_see_it() {
        let t = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3], Device::Cpu).unwrap();
        let d = t.detach();
        t.update_data(|v| v.iter_mut().for_each(|x| *x *= 2.0))
            .unwrap();
        assert_eq!(t.to_vec(), vec![2.0, 4.0, 6.0]);
        assert_eq!(
            d.to_vec(),
            vec![2.0, 4.0, 6.0],
            "shared storage sees the update"
        );
    }
}
