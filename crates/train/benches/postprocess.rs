//! NMS on one 640² image's 25 200 candidates × 80 classes, and mAP over 5 000 images with 10
//! labels and 100 detections each.

use criterion::{criterion_group, criterion_main, Criterion};
use rand::{rngs::StdRng, Rng, SeedableRng};
use yolo_train::{non_max_suppression_rows, Detection, MetricsAccumulator, NmsConfig};

fn nms_input(rng: &mut StdRng) -> Vec<f32> {
    let (n, no) = (25_200, 85);
    let mut v = Vec::with_capacity(n * no);
    for _ in 0..n {
        v.extend([
            rng.random_range(0.0..640.0),
            rng.random_range(0.0..640.0),
            rng.random_range(8.0..200.0),
            rng.random_range(8.0..200.0),
        ]);
        // a trained model's objectness: mostly near 0, a few hundred cells above 0.25
        let u: f32 = rng.random();
        v.push(u.powi(8));
        v.extend((0..80).map(|_| rng.random::<f32>()));
    }
    v
}

fn map_input(rng: &mut StdRng) -> Vec<(Vec<Detection>, Vec<[f32; 5]>)> {
    (0..5000)
        .map(|_| {
            let labels: Vec<[f32; 5]> = (0..10)
                .map(|_| {
                    let (x, y) = (rng.random_range(0.0..560.0), rng.random_range(0.0..560.0));
                    let (w, h) = (rng.random_range(10.0..80.0), rng.random_range(10.0..80.0));
                    [rng.random_range(0..80) as f32, x, y, x + w, y + h]
                })
                .collect();
            let mut dets: Vec<Detection> = (0..100)
                .map(|k| {
                    let l = labels[k % 10];
                    let (w, h) = (l[3] - l[1], l[4] - l[2]);
                    let jit: [f32; 4] = std::array::from_fn(|_| rng.random_range(-0.15..0.15f32));
                    let cls = if rng.random::<f32>() < 0.7 {
                        l[0]
                    } else {
                        rng.random_range(0..80) as f32
                    };
                    [
                        l[1] + jit[0] * w,
                        l[2] + jit[1] * h,
                        l[3] + jit[2] * w,
                        l[4] + jit[3] * h,
                        rng.random(),
                        cls,
                    ]
                })
                .collect();
            dets.sort_by(|a, b| b[4].total_cmp(&a[4]));
            (dets, labels)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(0);
    let pred = nms_input(&mut rng);
    for (name, cfg) in [
        ("nms 25200×80 conf 0.25 (detect)", NmsConfig::default()),
        (
            "nms 25200×80 conf 0.001 multi-label (val)",
            NmsConfig {
                conf_thres: 0.001,
                iou_thres: 0.6,
                multi_label: true,
                ..Default::default()
            },
        ),
    ] {
        let kept = non_max_suppression_rows(&pred, 1, 25_200, 85, &cfg).unwrap()[0].len();
        eprintln!("{name}: {kept} kept");
        c.bench_function(name, |b| {
            b.iter(|| non_max_suppression_rows(&pred, 1, 25_200, 85, &cfg).unwrap())
        });
    }
    let data = map_input(&mut rng);
    let mut g = c.benchmark_group("map");
    g.sample_size(10);
    g.bench_function("mAP 5000 images × (10 labels, 100 dets)", |b| {
        b.iter(|| {
            let mut acc = MetricsAccumulator::new();
            for (d, l) in &data {
                acc.add_image(d, l);
            }
            acc.compute(80).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
