//! Times the SiLU kernel (`Tensor::silu`, no grad) on 16 K to 3.3 M floats: the best of five
//! batches, in ns per float.
//!
//! Run: `YOLO_THREADS=1 cargo run --release -p yolo-tensor --example silu_speed`.

use std::time::Instant;
/// Cache-line-aligned tensor buffers, as in the `yolo-forge` binary.
#[global_allocator]
static ALLOC: yolo_tensor::AlignedAlloc = yolo_tensor::AlignedAlloc;
fn main() {
    let _g = yolo_tensor::no_grad();
    for n in [16_384usize, 102_400, 409_600, 3_276_800] {
        let x = yolo_testutil::t(yolo_testutil::uniform(n, -6.0, 6.0, 1), &[n]);
        let reps = (50_000_000 / n).max(5);
        let mut best = f64::MAX;
        yolo_tensor::in_pool(|| {
            for _ in 0..5 {
                let s = Instant::now();
                for _ in 0..reps {
                    std::hint::black_box(x.silu());
                }
                best = best.min(s.elapsed().as_secs_f64() / reps as f64);
            }
        });
        println!("{n:>8} floats: {:.3} ns/float", best / n as f64 * 1e9);
    }
}
