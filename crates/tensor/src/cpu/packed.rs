//! Packed forms of convolution weights (the direct kernel's `[block][k][16]` lines, the
//! Winograd-transformed kernels), kept across inference calls: keyed by the weight buffer's
//! address, length and form, and valid while the buffer's stamp (see
//! [`super::buffer::CpuBuf::stamp`]) is unchanged. Only calls made without autograd recording
//! pass a stamp; during training the weights change every step, so nothing is kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Which packed form of a weight buffer.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Form {
    /// The direct convolution's `[block][k][16]` (64-byte aligned start).
    Direct,
    /// The Winograd F(2×2, 3×3) kernels, `[block][ξ][c][16]`.
    Winograd,
    /// A 1×1 convolution's weights per head, transposed to `[head][c][wide]` (each head's k
    /// outputs padded to `wide`, the GEMM's strip multiple): [`super::conv::pointwise_heads`].
    Heads { heads: usize, wide: usize },
}

/// Floats kept at most, all forms together (256 MiB); past it the cache starts over.
const BUDGET: usize = 64 << 20;

/// One packed form and the stamp of the weights it was made from.
struct Entry {
    stamp: u64,
    data: Arc<Vec<f32>>,
}

/// The entries and their total length in floats.
#[derive(Default)]
struct Cache {
    map: HashMap<(usize, usize, Form), Entry>,
    floats: usize,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

/// `make()` for the weights `w` in `form`; with a stamp, the result kept from an earlier call
/// on the same buffer with the same stamp, or this one's (kept for later calls).
pub(crate) fn packed(
    form: Form,
    w: &[f32],
    stamp: Option<u64>,
    make: impl FnOnce() -> Vec<f32>,
) -> Arc<Vec<f32>> {
    let Some(stamp) = stamp else {
        return Arc::new(make());
    };
    let key = (w.as_ptr() as usize, w.len(), form);
    let lock = || CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(e) = lock().as_ref().and_then(|c| c.map.get(&key)) {
        if e.stamp == stamp {
            return e.data.clone();
        }
    }
    // Made outside the lock: other threads' convolutions go on meanwhile.
    let data = Arc::new(make());
    let mut guard = lock();
    let cache = guard.get_or_insert_with(Cache::default);
    if let Some(old) = cache.map.remove(&key) {
        cache.floats -= old.data.len();
    }
    if cache.floats + data.len() > BUDGET {
        cache.map.clear();
        cache.floats = 0;
    }
    if data.len() <= BUDGET {
        cache.floats += data.len();
        cache.map.insert(
            key,
            Entry {
                stamp,
                data: data.clone(),
            },
        );
    }
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_while_the_stamp_holds() {
        let w = vec![1.0f32; 8];
        let mut made = 0;
        let mut get = |stamp| {
            packed(Form::Direct, &w, stamp, || {
                made += 1;
                vec![made as f32]
            })
        };
        assert_eq!(get(Some(7))[0], 1.0);
        assert_eq!(get(Some(7))[0], 1.0, "same buffer and stamp: kept");
        assert_eq!(get(Some(8))[0], 2.0, "new stamp: made again");
        assert_eq!(get(None)[0], 3.0, "no stamp: always made");
        assert_eq!(get(Some(8))[0], 2.0);
        let other = packed(Form::Winograd, &w, Some(8), || vec![-1.0]);
        assert_eq!(other[0], -1.0, "forms are kept apart");
    }
}
