//! Host buffers recycled through a size-keyed pool. A forward pass allocates the same output
//! sizes again and again; fresh multi-megabyte allocations come from `mmap` and fault every page
//! in (perf showed page faults and `clear_page` at 5–10 % of a yolov5s forward), while a
//! recycled buffer is already resident.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, OnceLock};

/// Buffers smaller than this go straight to the allocator (cheap there, and numerous).
const MIN_POOLED: usize = 1 << 14;
/// Most floats the pool keeps idle (1 GiB).
const MAX_POOLED_FLOATS: usize = 1 << 28;

struct Pool {
    free: HashMap<usize, Vec<Vec<f32>>>,
    floats: usize,
}

fn pool() -> &'static Mutex<Pool> {
    static P: OnceLock<Mutex<Pool>> = OnceLock::new();
    P.get_or_init(|| {
        Mutex::new(Pool {
            free: HashMap::new(),
            floats: 0,
        })
    })
}

fn take(n: usize) -> Option<Vec<f32>> {
    if n < MIN_POOLED {
        return None;
    }
    let mut p = pool().lock().unwrap_or_else(|e| e.into_inner());
    let v = p.free.get_mut(&n)?.pop()?;
    p.floats -= n;
    Some(v)
}

fn give(v: Vec<f32>) {
    let n = v.len();
    if n < MIN_POOLED || v.capacity() != n {
        return;
    }
    let mut p = pool().lock().unwrap_or_else(|e| e.into_inner());
    if p.floats + n > MAX_POOLED_FLOATS {
        return;
    }
    p.floats += n;
    p.free.entry(n).or_default().push(v);
}

/// A buffer of `n` floats whose contents are unspecified (recycled or fresh): for outputs that
/// the caller overwrites completely before reading.
pub(crate) fn alloc(n: usize) -> Vec<f32> {
    // Zero-filled when fresh (calloc maps zero pages lazily, no memset); stale data when
    // recycled. Either way every element is initialised, so no uninitialised memory is read.
    take(n).unwrap_or_else(|| vec![0.0; n])
}

/// A buffer of `n` copies of `value`.
pub(crate) fn filled(n: usize, value: f32) -> Vec<f32> {
    match take(n) {
        Some(mut v) => {
            v.fill(value);
            v
        }
        None => vec![value; n],
    }
}

/// Host storage of one tensor; its memory returns to the pool when dropped. Its stamp is
/// unique to its current contents: a new one on creation, on clone and on every mutable
/// access, so caches of data derived from it (packed conv weights) can key on it.
#[derive(Debug)]
pub(crate) struct CpuBuf {
    data: Vec<f32>,
    stamp: u64,
}

/// A stamp no buffer has had before.
fn next_stamp() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl CpuBuf {
    /// The stamp of the current contents (changes whenever they may have changed).
    pub(crate) fn stamp(&self) -> u64 {
        self.stamp
    }
}

impl From<Vec<f32>> for CpuBuf {
    fn from(data: Vec<f32>) -> Self {
        CpuBuf {
            data,
            stamp: next_stamp(),
        }
    }
}

impl Clone for CpuBuf {
    fn clone(&self) -> Self {
        let mut v = alloc(self.data.len());
        v.copy_from_slice(&self.data);
        v.into()
    }
}

impl Drop for CpuBuf {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.data));
    }
}

impl Deref for CpuBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.data
    }
}

impl DerefMut for CpuBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        self.stamp = next_stamp();
        &mut self.data
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn buffers_are_recycled_by_size() {
        let n = super::MIN_POOLED * 3 + 7;
        let a = super::CpuBuf::from(super::filled(n, 1.5));
        let ptr = a.as_ptr();
        drop(a);
        let b = super::alloc(n);
        assert_eq!(b.as_ptr(), ptr, "same size comes back from the pool");
        let c = super::filled(n, 2.0);
        assert!(c.iter().all(|&v| v == 2.0));
    }

    #[test]
    fn stamps_change_with_every_mutable_access_and_clone() {
        let mut a = super::CpuBuf::from(vec![1.0; 4]);
        let s0 = a.stamp();
        assert_eq!(a.stamp(), s0, "reading keeps the stamp");
        let _ = a[0];
        assert_eq!(a.stamp(), s0);
        a[1] = 2.0;
        let s1 = a.stamp();
        assert_ne!(s1, s0, "a write gets a new stamp");
        let b = a.clone();
        assert_ne!(b.stamp(), s1, "a clone is another buffer");
        assert_ne!(super::CpuBuf::from(vec![1.0; 4]).stamp(), s0);
    }
}
