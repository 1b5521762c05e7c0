//! A global allocator that gives large blocks cache-line alignment.
//!
//! glibc serves big allocations from `mmap` with a 16-byte header, so every tensor buffer
//! started 16 bytes past a cache line and half of the 32-byte vector loads and stores of the
//! kernels split across two lines. With this allocator installed the yolov5n training step
//! (batch 8, 320 px, 1 thread) ran 4–6 % faster in interleaved runs (`docs/benchmarks.md`).
//! A library cannot choose the process's allocator, so binaries opt in with one line:
//!
//! ```
//! #[global_allocator]
//! static ALLOC: yolo_tensor::AlignedAlloc = yolo_tensor::AlignedAlloc;
//! ```

use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of at least this many bytes get [`LINE`] alignment.
const LARGE: usize = 1 << 16;
/// Cache-line size: the alignment given to large blocks.
const LINE: usize = 64;

/// [`System`] with every block of 64 KiB or more aligned to a 64-byte cache line.
pub struct AlignedAlloc;

/// The layout actually requested from [`System`] for `l` (the same on alloc and dealloc).
fn adjusted(l: Layout) -> Layout {
    if l.size() >= LARGE && l.align() < LINE {
        // Size and a power-of-two alignment ≤ the size: always a valid layout.
        Layout::from_size_align(l.size(), LINE).unwrap_or(l)
    } else {
        l
    }
}

// SAFETY: every method forwards to `System` with `adjusted(layout)`, a deterministic function
// of the caller's layout, so a block is always freed or resized with the layout it was
// allocated with; `adjusted` only raises the alignment, so the caller's requirement holds.
unsafe impl GlobalAlloc for AlignedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        System.alloc(adjusted(layout))
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        System.alloc_zeroed(adjusted(layout))
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, adjusted(layout))
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = adjusted(layout);
        let Ok(requested) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let new = adjusted(requested);
        if old.align() == new.align() {
            // Same alignment class: System can resize in place (mremap for big blocks).
            return System.realloc(ptr, old, new_size);
        }
        // Crossing the threshold changes the alignment: move the block.
        let p = System.alloc(new);
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
            System.dealloc(ptr, old);
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_blocks_are_line_aligned_and_survive_realloc() {
        let a = AlignedAlloc;
        unsafe {
            // Small: untouched (System's own alignment).
            let small = Layout::from_size_align(100, 4).unwrap();
            let p = a.alloc(small);
            assert!(!p.is_null());
            p.write_bytes(7, 100);
            // Grow across the threshold: contents kept, now line-aligned.
            let p = a.realloc(p, small, 3 * LARGE);
            assert_eq!(p as usize % LINE, 0);
            assert!((0..100).all(|i| *p.add(i) == 7));
            let big = Layout::from_size_align(3 * LARGE, 4).unwrap();
            for i in 0..3 * LARGE {
                *p.add(i) = (i % 251) as u8;
            }
            // Grow within the large class.
            let p = a.realloc(p, big, 5 * LARGE);
            assert_eq!(p as usize % LINE, 0);
            assert!((0..3 * LARGE).all(|i| *p.add(i) == (i % 251) as u8));
            // Shrink back below the threshold: contents kept.
            let big = Layout::from_size_align(5 * LARGE, 4).unwrap();
            let p = a.realloc(p, big, 64);
            assert!((0..64).all(|i| *p.add(i) == (i % 251) as u8));
            a.dealloc(p, Layout::from_size_align(64, 4).unwrap());
            // Many fresh large blocks, zeroed and aligned.
            for k in 1..20 {
                let l = Layout::from_size_align(LARGE * k + 4 * k, 4).unwrap();
                let z = a.alloc_zeroed(l);
                assert_eq!(z as usize % LINE, 0, "block {k}");
                assert!((0..l.size()).step_by(997).all(|i| *z.add(i) == 0));
                a.dealloc(z, l);
            }
        }
    }
}
