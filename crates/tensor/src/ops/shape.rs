//! Shape and indexing ops: reshape, permute, concat/split/narrow, pad, index_select,
//! gather and scatter-add.

use super::same_device;
use crate::autograd::{node_for, record};
use crate::error::{arg_err, shape_err, Result};
use crate::shape::{norm_axis, numel, split_at_axis};
use crate::storage::Storage;
use crate::{Tensor, UnaryOp};

impl Tensor {
    /// The same data under another shape (no copy); see [`Tensor::reshape_infer`] for `-1`.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if numel(shape) != self.numel() {
            return shape_err(
                "reshape",
                format!(
                    "{:?} ({} elements) into {shape:?}",
                    self.shape(),
                    self.numel()
                ),
            );
        }
        if shape == self.shape() {
            return Ok(self.clone());
        }
        let node = node_for("reshape", vec![self.clone()], |inp, _, g| {
            Ok(vec![Some(g.reshape(inp[0].shape())?)])
        });
        Ok(self.view(shape.to_vec(), node))
    }

    /// Reshape where one entry may be -1 (inferred), as in PyTorch's `view(-1, 85)`.
    pub fn reshape_infer(&self, shape: &[isize]) -> Result<Tensor> {
        let known: usize = shape
            .iter()
            .filter(|&&d| d >= 0)
            .map(|&d| d as usize)
            .product();
        let unknown = shape.iter().filter(|&&d| d < 0).count();
        if unknown > 1 || shape.iter().any(|&d| d < -1) {
            return arg_err(
                "reshape",
                format!("{shape:?}: at most one -1 and no other negative size"),
            );
        }
        let dims: Vec<usize> = if unknown == 1 {
            if known == 0 || !self.numel().is_multiple_of(known) {
                return shape_err(
                    "reshape",
                    format!("{:?} cannot be viewed as {shape:?}", self.shape()),
                );
            }
            shape
                .iter()
                .map(|&d| {
                    if d < 0 {
                        self.numel() / known
                    } else {
                        d as usize
                    }
                })
                .collect()
        } else {
            shape.iter().map(|&d| d as usize).collect()
        };
        self.reshape(&dims)
    }

    /// Flattens axes `start..` into one.
    pub fn flatten_from(&self, start: usize) -> Result<Tensor> {
        if start > self.rank() {
            return arg_err(
                "flatten_from",
                format!("start {start} beyond rank {}", self.rank()),
            );
        }
        let mut s = self.shape()[..start].to_vec();
        s.push(numel(&self.shape()[start..]));
        self.reshape(&s)
    }

    /// Inserts a size-1 axis at `axis`.
    pub fn unsqueeze(&self, axis: isize) -> Result<Tensor> {
        let a = norm_axis("unsqueeze", axis, self.rank() + 1)?;
        let mut s = self.shape().to_vec();
        s.insert(a, 1);
        self.reshape(&s)
    }

    /// Removes a size-1 axis.
    pub fn squeeze(&self, axis: isize) -> Result<Tensor> {
        let a = norm_axis("squeeze", axis, self.rank())?;
        if self.shape()[a] != 1 {
            return shape_err(
                "squeeze",
                format!("axis {a} of {:?} is not 1", self.shape()),
            );
        }
        let mut s = self.shape().to_vec();
        s.remove(a);
        self.reshape(&s)
    }

    /// Reorders axes: output axis `i` is input axis `perm[i]` (copies into contiguous layout).
    pub fn permute(&self, perm: &[usize]) -> Result<Tensor> {
        let r = self.rank();
        let mut seen = vec![false; r];
        if perm.len() != r
            || perm
                .iter()
                .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
        {
            return arg_err(
                "permute",
                format!("{perm:?} is not a permutation of {r} axes"),
            );
        }
        let out_shape: Vec<usize> = perm.iter().map(|&p| self.shape()[p]).collect();
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            return Ok(self.clone());
        }
        let out = self.storage().permute(self.shape(), perm);
        let perm = perm.to_vec();
        Ok(record(
            out,
            out_shape,
            "permute",
            vec![self.clone()],
            move |_, _, g| {
                let mut inv = vec![0; perm.len()];
                for (i, &p) in perm.iter().enumerate() {
                    inv[p] = i;
                }
                Ok(vec![Some(g.permute(&inv)?)])
            },
        ))
    }

    /// Swaps two axes.
    pub fn transpose(&self, a: isize, b: isize) -> Result<Tensor> {
        let a = norm_axis("transpose", a, self.rank())?;
        let b = norm_axis("transpose", b, self.rank())?;
        let mut p: Vec<usize> = (0..self.rank()).collect();
        p.swap(a, b);
        self.permute(&p)
    }

    /// Joins tensors along `axis`; all other axes must agree.
    pub fn concat(parts: &[&Tensor], axis: isize) -> Result<Tensor> {
        let (ax, out_shape) = concat_shape(parts, axis)?;
        let out = assemble_parts(parts, ax, &out_shape, None)?;
        let sizes: Vec<usize> = parts.iter().map(|p| p.shape()[ax]).collect();
        let inputs: Vec<Tensor> = parts.iter().map(|&p| p.clone()).collect();
        Ok(record(out, out_shape, "concat", inputs, move |_, _, g| {
            let mut start = 0;
            let mut grads = Vec::with_capacity(sizes.len());
            for &s in &sizes {
                grads.push(Some(g.narrow(ax as isize, start, s)?));
                start += s;
            }
            Ok(grads)
        }))
    }

    /// `op(concat(parts, axis))` in one pass over the data when nothing records it for
    /// backward (inference: the detection head's sigmoid writes straight into the joined
    /// predictions); otherwise the two recorded ops.
    pub fn concat_unary(parts: &[&Tensor], axis: isize, op: UnaryOp) -> Result<Tensor> {
        if crate::is_grad_enabled() && parts.iter().any(|p| p.requires_grad()) {
            return Ok(Tensor::concat(parts, axis)?.unary(op));
        }
        let (ax, out_shape) = concat_shape(parts, axis)?;
        let out = assemble_parts(parts, ax, &out_shape, Some(op))?;
        Ok(Tensor::make(out, out_shape, None))
    }

    /// The slice `start..start+len` of `axis` (a copy).
    pub fn narrow(&self, axis: isize, start: usize, len: usize) -> Result<Tensor> {
        let ax = norm_axis("narrow", axis, self.rank())?;
        if start + len > self.shape()[ax] {
            return arg_err(
                "narrow",
                format!(
                    "range {start}..{} beyond size {} of axis {ax} in {:?}",
                    start + len,
                    self.shape()[ax],
                    self.shape()
                ),
            );
        }
        if start == 0 && len == self.shape()[ax] {
            return Ok(self.clone());
        }
        let mut region = self.shape().to_vec();
        region[ax] = len;
        let mut st = vec![0; self.rank()];
        st[ax] = start;
        let out = self.storage().crop(self.shape(), &st, &region);
        Ok(record(
            out,
            region,
            "narrow",
            vec![self.clone()],
            move |inp, _, g| {
                let x = &inp[0];
                let gs = g.storage();
                let full = Storage::assemble(
                    &[(&*gs, g.shape(), st.clone())],
                    x.shape(),
                    Some(0.0),
                    None,
                    g.device(),
                )?;
                Ok(vec![Some(Tensor::make(full, x.shape().to_vec(), None))])
            },
        ))
    }

    /// Splits `axis` into consecutive pieces of the given sizes (must add up to the axis size).
    pub fn split(&self, sizes: &[usize], axis: isize) -> Result<Vec<Tensor>> {
        let ax = norm_axis("split", axis, self.rank())?;
        if sizes.iter().sum::<usize>() != self.shape()[ax] {
            return arg_err(
                "split",
                format!(
                    "sizes {sizes:?} do not add up to {} (axis {ax} of {:?})",
                    self.shape()[ax],
                    self.shape()
                ),
            );
        }
        let mut start = 0;
        let mut out = Vec::with_capacity(sizes.len());
        for &s in sizes {
            out.push(self.narrow(ax as isize, start, s)?);
            start += s;
        }
        Ok(out)
    }

    /// Splits `axis` into `n` pieces of equal size (the last may be smaller), as `torch.chunk`.
    pub fn chunk(&self, n: usize, axis: isize) -> Result<Vec<Tensor>> {
        let ax = norm_axis("chunk", axis, self.rank())?;
        if n == 0 {
            return arg_err("chunk", "zero chunks");
        }
        let d = self.shape()[ax];
        let step = d.div_ceil(n).max(1);
        let mut sizes = Vec::new();
        let mut left = d;
        while left > 0 {
            sizes.push(step.min(left));
            left -= step.min(left);
        }
        self.split(&sizes, ax as isize)
    }

    /// Pads with `value`: `pads[i] = (before, after)` for axis i, one pair per axis.
    pub fn pad(&self, pads: &[(usize, usize)], value: f32) -> Result<Tensor> {
        if pads.len() != self.rank() {
            return arg_err(
                "pad",
                format!(
                    "{} (before, after) pairs for a tensor of rank {}",
                    pads.len(),
                    self.rank()
                ),
            );
        }
        let out_shape: Vec<usize> = self
            .shape()
            .iter()
            .zip(pads)
            .map(|(d, (a, b))| d + a + b)
            .collect();
        let start: Vec<usize> = pads.iter().map(|p| p.0).collect();
        let out = {
            let s = self.storage();
            Storage::assemble(
                &[(&*s, self.shape(), start.clone())],
                &out_shape,
                Some(value),
                None,
                self.device(),
            )?
        };
        Ok(record(
            out,
            out_shape,
            "pad",
            vec![self.clone()],
            move |inp, _, g| {
                let region = inp[0].shape().to_vec();
                let cropped = g.storage().crop(g.shape(), &start, &region);
                Ok(vec![Some(Tensor::make(cropped, region, None))])
            },
        ))
    }

    /// Zero-pads the last two axes of an N×C×H×W tensor: (left, right, top, bottom).
    pub fn pad2d(&self, left: usize, right: usize, top: usize, bottom: usize) -> Result<Tensor> {
        if self.rank() != 4 {
            return shape_err("pad2d", format!("expects N×C×H×W, got {:?}", self.shape()));
        }
        self.pad(&[(0, 0), (0, 0), (top, bottom), (left, right)], 0.0)
    }

    /// Rows `idx` along `axis` (a copy; indices may repeat).
    pub fn index_select(&self, axis: isize, idx: &[usize]) -> Result<Tensor> {
        let ax = norm_axis("index_select", axis, self.rank())?;
        let (outer, size, inner) = split_at_axis(self.shape(), ax);
        if let Some(&bad) = idx.iter().find(|&&i| i >= size) {
            return arg_err(
                "index_select",
                format!("index {bad} out of range for axis {ax} of size {size}"),
            );
        }
        let mut out_shape = self.shape().to_vec();
        out_shape[ax] = idx.len();
        let out = self.storage().index_select(outer, size, inner, idx);
        let idx = idx.to_vec();
        Ok(record(
            out,
            out_shape,
            "index_select",
            vec![self.clone()],
            move |inp, _, g| {
                let dx = g.storage().index_add(outer, size, inner, &idx);
                Ok(vec![Some(Tensor::make(dx, inp[0].shape().to_vec(), None))])
            },
        ))
    }

    fn check_index(
        op: &'static str,
        shape: &[usize],
        ax: usize,
        index: &[usize],
        index_shape: &[usize],
    ) -> Result<()> {
        if index.len() != numel(index_shape) {
            return shape_err(
                op,
                format!("{} indices for index shape {index_shape:?}", index.len()),
            );
        }
        if index_shape.len() != shape.len() {
            return shape_err(
                op,
                format!(
                    "index rank {} differs from tensor rank {}",
                    index_shape.len(),
                    shape.len()
                ),
            );
        }
        for (i, (&a, &b)) in index_shape.iter().zip(shape).enumerate() {
            if i != ax && a > b {
                return shape_err(
                    op,
                    format!("index shape {index_shape:?} exceeds {shape:?} on axis {i}"),
                );
            }
        }
        if let Some(&bad) = index.iter().find(|&&i| i >= shape[ax]) {
            return arg_err(
                op,
                format!(
                    "index {bad} out of range for axis {ax} of size {}",
                    shape[ax]
                ),
            );
        }
        Ok(())
    }

    /// `torch.gather`: `output[p] = self[p with the axis coordinate replaced by index[p]]`.
    pub fn gather(&self, axis: isize, index: &[usize], index_shape: &[usize]) -> Result<Tensor> {
        let ax = norm_axis("gather", axis, self.rank())?;
        Self::check_index("gather", self.shape(), ax, index, index_shape)?;
        let out = self.storage().gather(self.shape(), ax, index, index_shape);
        let (index, ishape) = (index.to_vec(), index_shape.to_vec());
        Ok(record(
            out,
            index_shape.to_vec(),
            "gather",
            vec![self.clone()],
            move |inp, _, g| {
                let x = &inp[0];
                let zeros = Storage::full(0.0, x.numel(), x.device())?;
                let dx = zeros.scatter_add(x.shape(), ax, &index, &ishape, &g.storage());
                Ok(vec![Some(Tensor::make(dx, x.shape().to_vec(), None))])
            },
        ))
    }

    /// `torch.scatter_add`: a copy of self with `src[p]` added at `self[p with the axis
    /// coordinate index[p]]`; `src` has the index's shape.
    pub fn scatter_add(
        &self,
        axis: isize,
        index: &[usize],
        index_shape: &[usize],
        src: &Tensor,
    ) -> Result<Tensor> {
        let ax = norm_axis("scatter_add", axis, self.rank())?;
        same_device("scatter_add", self, src)?;
        Self::check_index("scatter_add", self.shape(), ax, index, index_shape)?;
        if src.shape() != index_shape {
            return shape_err(
                "scatter_add",
                format!(
                    "src {:?} must have the index shape {index_shape:?}",
                    src.shape()
                ),
            );
        }
        let out = self
            .storage()
            .scatter_add(self.shape(), ax, index, index_shape, &src.storage());
        let (index, ishape) = (index.to_vec(), index_shape.to_vec());
        Ok(record(
            out,
            self.shape().to_vec(),
            "scatter_add",
            vec![self.clone(), src.clone()],
            move |_, _, g| {
                Ok(vec![
                    Some(g.clone()),
                    Some(g.gather(ax as isize, &index, &ishape)?),
                ])
            },
        ))
    }
}

/// The joined shape of `parts` along `axis` (normalised), checked: same device, rank and
/// every other size.
fn concat_shape(parts: &[&Tensor], axis: isize) -> Result<(usize, Vec<usize>)> {
    let Some(first) = parts.first() else {
        return arg_err("concat", "no tensors given");
    };
    let ax = norm_axis("concat", axis, first.rank())?;
    let mut out_shape = first.shape().to_vec();
    out_shape[ax] = 0;
    for (i, p) in parts.iter().enumerate() {
        same_device("concat", first, p)?;
        let ok = p.rank() == first.rank()
            && p.shape()
                .iter()
                .zip(first.shape())
                .enumerate()
                .all(|(j, (a, b))| j == ax || a == b);
        if !ok {
            return shape_err(
                "concat",
                format!(
                    "part {i} has shape {:?}, part 0 has {:?} (joining on axis {ax})",
                    p.shape(),
                    first.shape()
                ),
            );
        }
        out_shape[ax] += p.shape()[ax];
    }
    Ok((ax, out_shape))
}

/// The parts (checked by [`concat_shape`]) joined along `ax` into a new buffer, through `op`.
fn assemble_parts(
    parts: &[&Tensor],
    ax: usize,
    out_shape: &[usize],
    op: Option<UnaryOp>,
) -> Result<Storage> {
    let guards: Vec<_> = parts.iter().map(|p| p.storage()).collect();
    let mut offset = 0;
    let mut items = Vec::with_capacity(parts.len());
    for (p, gd) in parts.iter().zip(&guards) {
        let mut start = vec![0; out_shape.len()];
        start[ax] = offset;
        offset += p.shape()[ax];
        items.push((&**gd, p.shape(), start));
    }
    Storage::assemble(&items, out_shape, None, op, parts[0].device())
}
