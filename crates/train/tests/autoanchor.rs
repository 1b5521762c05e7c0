//! AutoAnchor: BPR on hand-made label sets, k-means on obvious clusters, evolution monotone.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use yolo_tensor::{Device, Tensor};
use yolo_train::autoanchor::{
    anchor_fitness, anchor_metric, apply_anchors, check_anchor_order, check_anchors,
    evolve_anchors, kmean_anchors, label_wh, AutoAnchorConfig, KmeansInit,
};

const CENTERS: [[f32; 2]; 3] = [[10.0, 14.0], [60.0, 45.0], [220.0, 180.0]];

/// 3 tight clusters of 60 labels each (±5 %).
fn clusters() -> Vec<[f32; 2]> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut v = Vec::new();
    for _ in 0..60 {
        for c in CENTERS {
            v.push([
                c[0] * rng.random_range(0.95..1.05),
                c[1] * rng.random_range(0.95..1.05),
            ]);
        }
    }
    v
}

#[test]
fn bpr_of_exact_and_hopeless_anchors() {
    let anchors = [[10.0, 13.0], [30.0, 20.0], [100.0, 90.0]];
    let m = anchor_metric(&anchors, &anchors, 4.0);
    assert_eq!(m.bpr, 1.0);
    // Each label fits its own anchor; [30, 20] is also within 4× of [10, 13].
    assert!(m.aat >= 1.0);

    let big: Vec<[f32; 2]> = anchors.iter().map(|a| [a[0] * 40.0, a[1] * 40.0]).collect();
    let m = anchor_metric(&big, &[[10.0, 13.0]], 4.0);
    assert_eq!((m.bpr, m.aat), (0.0, 0.0));

    // The threshold is strict: exactly anchor_t times bigger does not count.
    let m = anchor_metric(&[[40.0, 40.0], [39.0, 39.0]], &[[10.0, 10.0]], 4.0);
    assert_eq!(m.bpr, 0.5);
    assert_eq!(m.aat, 0.5);

    // Fitness: mean of best ratios above threshold.
    let f = anchor_fitness(
        &[[10.0, 10.0], [20.0, 10.0], [50.0, 50.0]],
        &[[10.0, 10.0]],
        4.0,
    );
    assert!((f - (1.0 + 0.5 + 0.0) / 3.0).abs() < 1e-7);
}

#[test]
fn kmeans_finds_the_three_clusters() {
    let wh = clusters();
    for init in [KmeansInit::Plain, KmeansInit::PlusPlus] {
        let r = kmean_anchors(&wh, 3, 640, 4.0, 0, 1, init).unwrap();
        assert!(r.used_kmeans);
        assert_eq!(r.anchors.len(), 3);
        for (a, c) in r.anchors.iter().zip(CENTERS) {
            for j in 0..2 {
                assert!(
                    (a[j] / c[j] - 1.0).abs() < 0.03,
                    "{init:?}: {:?} vs {CENTERS:?}",
                    r.anchors
                );
            }
        }
        assert_eq!(r.metric.bpr, 1.0);
        assert_eq!(r.fitness, r.initial_fitness);
    }
}

#[test]
fn kmean_anchors_is_seeded_and_sorted() {
    let wh = clusters();
    let a = kmean_anchors(&wh, 6, 640, 4.0, 50, 3, KmeansInit::PlusPlus).unwrap();
    let b = kmean_anchors(&wh, 6, 640, 4.0, 50, 3, KmeansInit::PlusPlus).unwrap();
    assert_eq!(a, b);
    let areas: Vec<f32> = a.anchors.iter().map(|k| k[0] * k[1]).collect();
    assert!(areas.windows(2).all(|w| w[0] <= w[1]), "{areas:?}");
    assert!(a.fitness >= a.initial_fitness);
}

#[test]
fn evolution_never_decreases_fitness() {
    let wh = clusters();
    let mut rng = StdRng::seed_from_u64(11);
    let start = vec![[30.0, 30.0], [31.0, 32.0], [400.0, 20.0]];
    let f0 = anchor_fitness(
        &wh,
        &start
            .iter()
            .map(|a: &[f64; 2]| [a[0] as f32, a[1] as f32])
            .collect::<Vec<_>>(),
        4.0,
    );
    let e = evolve_anchors(&start, &wh, 4.0, 300, &mut rng);
    assert_eq!(e.history.len(), 300);
    assert!(e.history[0] >= f0);
    assert!(e.history.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*e.history.last().unwrap(), e.fitness);
    assert!(e.fitness > f0, "300 generations improve a poor start");
    assert!(e.anchors.iter().flatten().all(|&x| x >= 2.0));
}

#[test]
fn small_labels_are_filtered_and_counted() {
    let mut wh = clusters();
    wh.push([1.0, 1.5]); // dropped (both sides < 2)
    wh.push([2.5, 40.0]); // kept, but counted as < 3 px
    let r = kmean_anchors(&wh, 3, 640, 4.0, 0, 1, KmeansInit::Plain).unwrap();
    assert_eq!(r.small_labels, 2);
    assert!(kmean_anchors(&[[1.0, 1.0]], 3, 640, 4.0, 10, 1, KmeansInit::Plain).is_err());
    // Too few labels for k-means: upstream's random initialisation, still n anchors.
    let r = kmean_anchors(&wh[..2], 9, 640, 4.0, 10, 1, KmeansInit::Plain).unwrap();
    assert!(!r.used_kmeans);
    assert_eq!(r.anchors.len(), 9);
}

#[test]
fn anchor_order_follows_strides() {
    let small_first = vec![[10.0, 13.0], [16.0, 30.0], [116.0, 90.0], [156.0, 198.0]];
    let mut a = small_first.clone();
    assert!(!check_anchor_order(&mut a, &[8.0, 32.0]));
    assert_eq!(a, small_first);
    assert!(check_anchor_order(&mut a, &[32.0, 8.0]));
    assert_eq!(
        a,
        vec![[116.0, 90.0], [156.0, 198.0], [10.0, 13.0], [16.0, 30.0]]
    );
    let mut b = vec![[156.0, 198.0], [116.0, 90.0], [16.0, 30.0], [10.0, 13.0]];
    assert!(check_anchor_order(&mut b, &[8.0, 32.0]));
    assert_eq!(b[0], [16.0, 30.0]);
}

#[test]
fn label_sizes_and_apply() {
    let shapes = [[640.0, 480.0], [100.0, 200.0]];
    let labels = vec![vec![[0.5, 0.5]], vec![[0.1, 0.25], [1.0, 1.0]]];
    let wh = label_wh(&shapes, &labels, 320, None).unwrap();
    assert_eq!(wh, vec![[160.0, 120.0], [16.0, 80.0], [160.0, 320.0]]);
    let scaled = label_wh(&shapes, &labels, 320, Some(5)).unwrap();
    assert_eq!(scaled, label_wh(&shapes, &labels, 320, Some(5)).unwrap());
    for (s, w) in scaled.iter().zip(&wh) {
        let f = s[0] / w[0];
        assert!((0.9..=1.1).contains(&f));
        assert!((s[1] / w[1] - f).abs() < 1e-5, "one factor per image");
    }
    assert!(label_wh(&shapes, &labels[..1], 320, None).is_err());

    let buf = Tensor::zeros(&[2, 2, 2], Device::Cpu).unwrap();
    apply_anchors(
        &buf,
        &[[8.0, 16.0], [16.0, 8.0], [64.0, 32.0], [32.0, 64.0]],
        &[8.0, 16.0],
    )
    .unwrap();
    assert_eq!(buf.to_vec(), vec![1.0, 2.0, 2.0, 1.0, 4.0, 2.0, 2.0, 4.0]);
    assert!(apply_anchors(&buf, &[[8.0, 16.0]], &[8.0, 16.0]).is_err());
}

#[test]
fn check_anchors_keeps_good_and_replaces_poor() {
    // 30 images of 640×480 with labels in three clusters (normalised).
    let shapes = vec![[640.0f32, 480.0f32]; 30];
    let labels: Vec<Vec<[f32; 2]>> = clusters()
        .chunks(6)
        .map(|c| c.iter().map(|w| [w[0] / 640.0, w[1] / 480.0]).collect())
        .collect();
    let strides = [8.0, 16.0, 32.0];
    let cfg = AutoAnchorConfig {
        img_size: 640,
        gen: 100,
        ..AutoAnchorConfig::default()
    };
    let good = [
        [10.0, 13.0],
        [16.0, 30.0],
        [33.0, 23.0],
        [30.0, 61.0],
        [62.0, 45.0],
        [59.0, 119.0],
        [116.0, 90.0],
        [156.0, 198.0],
        [373.0, 326.0],
    ];
    let r = check_anchors(&shapes, &labels, &good, &strides, &cfg).unwrap();
    assert!(r.current.bpr > 0.98);
    assert!(r.anchors.is_none() && r.new_bpr.is_none());

    let poor = [[1000.0f32, 1000.0]; 9];
    let r = check_anchors(&shapes, &labels, &poor, &strides, &cfg).unwrap();
    assert_eq!(r.current.bpr, 0.0);
    let new = r.anchors.expect("k-means anchors replace hopeless ones");
    assert_eq!(new.len(), 9);
    assert!(r.new_bpr.unwrap() > 0.98);
    assert!(anchor_metric(&label_wh(&shapes, &labels, 640, None).unwrap(), &new, 4.0).bpr > 0.98);
    assert!(check_anchors(&shapes, &labels, &poor[..8], &strides, &cfg).is_err());
}
