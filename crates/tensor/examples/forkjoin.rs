use rayon::prelude::*;
use std::time::Instant;
fn main() {
    let iters = 20000;
    for work in [0usize, 2000, 20000] {
        let t = yolo_tensor::in_pool(|| {
            let s = Instant::now();
            for _ in 0..iters {
                (0..4usize).into_par_iter().for_each(|i| {
                    let mut a = i as f32;
                    for _ in 0..work {
                        a = std::hint::black_box(a * 1.0001 + 0.5);
                    }
                    std::hint::black_box(a);
                });
            }
            s.elapsed().as_secs_f64()
        });
        let s = Instant::now();
        for _ in 0..iters {
            for i in 0..4usize {
                let mut a = i as f32;
                for _ in 0..work {
                    a = std::hint::black_box(a * 1.0001 + 0.5);
                }
                std::hint::black_box(a);
            }
        }
        let serial = s.elapsed().as_secs_f64();
        println!(
            "work {work}: parallel {:.2} us/iter, serial {:.2} us/iter",
            t / iters as f64 * 1e6,
            serial / iters as f64 * 1e6
        );
    }
}
