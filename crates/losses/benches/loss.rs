//! ComputeLoss forward + backward on a yolov5s-sized batch of raw head outputs.

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{rngs::StdRng, Rng, SeedableRng};
use yolo_losses::{ComputeLoss, DetectSpec, LossHyp};
use yolo_tensor::{Device, Tensor};

fn bench(c: &mut Criterion) {
    let anchors = vec![
        vec![10.0, 13.0, 16.0, 30.0, 33.0, 23.0],
        vec![30.0, 61.0, 62.0, 45.0, 59.0, 119.0],
        vec![116.0, 90.0, 156.0, 198.0, 373.0, 326.0],
    ];
    let spec = DetectSpec::from_pixel_anchors(80, &anchors, &[8.0, 16.0, 32.0]).unwrap();
    let loss = ComputeLoss::new(spec, LossHyp::default().scaled(3, 80, 640)).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let bs = 2;
    let preds: Vec<Tensor> = [80usize, 40, 20]
        .iter()
        .map(|&g| {
            let n = bs * 3 * g * g * 85;
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-3.0..3.0)).collect();
            Tensor::from_vec(v, &[bs, 3, g, g, 85], Device::Cpu)
                .unwrap()
                .with_grad()
        })
        .collect();
    let targets: Vec<[f32; 6]> = (0..40)
        .map(|k| {
            [
                (k % bs) as f32,
                rng.random_range(0..80) as f32,
                rng.random_range(0.05..0.95),
                rng.random_range(0.05..0.95),
                rng.random_range(0.02..0.5),
                rng.random_range(0.02..0.5),
            ]
        })
        .collect();
    c.bench_function(
        "compute_loss fwd+bwd 2×640² yolov5 head, 40 targets",
        |b| {
            b.iter(|| {
                let out = loss.forward_rows(&preds, &targets).unwrap();
                out.total.backward().unwrap();
                for p in &preds {
                    p.zero_grad();
                }
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
