//! Letterbox geometry and augmentations keeping boxes consistent with pixels.

mod common;

use common::aug::{check_consistent, rect_dataset, COLOURS, RECTS};
use yolo_data::augment::{augment_hsv, mixup};
use yolo_data::imgbuf::RgbBuf;
use yolo_data::rng::sample_rng;
use yolo_data::{letterbox, AugParams, Dataset, DatasetOptions};

fn geometric_aug() -> AugParams {
    AugParams {
        hsv_h: 0.0,
        hsv_s: 0.0,
        hsv_v: 0.0,
        degrees: 15.0,
        translate: 0.1,
        scale: 0.5,
        shear: 5.0,
        perspective: 0.0005,
        flipud: 0.5,
        fliplr: 0.5,
        mosaic: 1.0,
        mixup: 0.0,
        mosaic9: 0.0,
    }
}

fn dataset(dir: &std::path::Path, opts: DatasetOptions) -> Dataset {
    let images = rect_dataset(dir);
    Dataset::new(
        &[images],
        DatasetOptions {
            label_cache: false,
            nc: Some(6),
            ..opts
        },
    )
    .unwrap()
}

#[test]
fn letterbox_geometry_maps_back_exactly() {
    for &(w, h) in &[
        (100, 37),
        (37, 100),
        (640, 480),
        (13, 500),
        (333, 333),
        (1000, 10),
    ] {
        let mut im = RgbBuf::filled(w, h, [0, 0, 0]);
        let (x0, y0, x1, y1) = (
            w / 4,
            h / 4,
            (3 * w / 4).max(w / 4 + 1),
            (3 * h / 4).max(h / 4 + 1),
        );
        for y in y0..y1 {
            for x in x0..x1 {
                im.put_pixel(x, y, [255, 255, 255]);
            }
        }
        for &(shape, auto, scaleup) in &[
            ((128, 128), false, true),
            ((128, 128), true, true),
            ((64, 96), false, false),
            ((1024, 1024), false, true),
            ((1024, 1024), false, false),
            ((160, 64), true, true),
        ] {
            let (out, info) = letterbox(&im, shape, auto, false, scaleup, 32);
            if !auto {
                assert_eq!((out.height, out.width), shape);
            } else {
                assert!(out.height <= shape.0 && out.width <= shape.1);
                let (ph, pw) = (
                    out.height as f32 - h as f32 * info.ratio.1,
                    out.width as f32 - w as f32 * info.ratio.0,
                );
                assert!((ph.round() as usize).is_multiple_of(32) || ph < 32.0);
                assert!((pw.round() as usize).is_multiple_of(32) || pw < 32.0);
            }
            // The content occupies exactly [pad, pad + size * ratio).
            let cw = (w as f32 * info.ratio.0).round();
            let ch = (h as f32 * info.ratio.1).round();
            assert!((info.pad.0 + cw - out.width as f32).abs() <= info.pad.0 + 1.0);
            // The white rectangle's mapped box agrees with its pixels.
            let b = [
                x0 as f32 * info.ratio.0 + info.pad.0,
                y0 as f32 * info.ratio.1 + info.pad.1,
                x1 as f32 * info.ratio.0 + info.pad.0,
                y1 as f32 * info.ratio.1 + info.pad.1,
            ];
            let (mut px1, mut py1, mut px2, mut py2) = (usize::MAX, usize::MAX, 0, 0);
            for y in 0..out.height {
                for x in 0..out.width {
                    if out.pixel(x, y)[0] >= 128 && out.pixel(x, y) != [114; 3] {
                        px1 = px1.min(x);
                        py1 = py1.min(y);
                        px2 = px2.max(x + 1);
                        py2 = py2.max(y + 1);
                    }
                }
            }
            let tol = 1.0 + info.ratio.0.max(info.ratio.1) * 0.5;
            let px = [px1 as f32, py1 as f32, px2 as f32, py2 as f32];
            for k in 0..4 {
                assert!(
                    (px[k] - b[k]).abs() <= tol,
                    "{w}x{h} → {shape:?} auto={auto}: {b:?} vs {px:?}"
                );
            }
            // Padding is grey 114 and the resized content fills the rest.
            assert_eq!(
                out.pixel(0, 0),
                if info.pad.0 >= 1.0 || info.pad.1 >= 1.0 {
                    [114; 3]
                } else {
                    [0; 3]
                }
            );
            let _ = ch;
        }
    }
}

#[test]
fn validation_samples_map_back_to_original_labels() {
    let dir = tempfile::tempdir().unwrap();
    for rect in [false, true] {
        let ds = dataset(
            dir.path(),
            DatasetOptions {
                imgsz: 128,
                rect,
                batch_size: 2,
                pad: 0.5,
                ..Default::default()
            },
        );
        let mut rng = sample_rng(0, 0, 0);
        for i in 0..ds.len() {
            let s = ds.get(i, &mut rng).unwrap();
            check_consistent(&s, 2.0, 0, false).unwrap();
            let rec = &ds.records()[i];
            let (w0, h0) = (rec.width as f32, rec.height as f32);
            assert_eq!(s.shape.orig_hw, (rec.height as usize, rec.width as usize));
            let l = s.labels[0];
            let (w, h) = (s.image.width as f32, s.image.height as f32);
            let input = [
                (l[1] - l[3] / 2.0) * w,
                (l[2] - l[4] / 2.0) * h,
                (l[1] + l[3] / 2.0) * w,
                (l[2] + l[4] / 2.0) * h,
            ];
            let back = s.shape.to_original(input);
            let o = rec.labels[0];
            let orig = [
                (o[1] - o[3] / 2.0) * w0,
                (o[2] - o[4] / 2.0) * h0,
                (o[1] + o[3] / 2.0) * w0,
                (o[2] + o[4] / 2.0) * h0,
            ];
            for k in 0..4 {
                assert!(
                    (back[k] - orig[k]).abs() < 0.02,
                    "rect={rect} {back:?} vs {orig:?}"
                );
            }
            if rect {
                let (bh, bw) = ds.batch_shapes().unwrap()[i / 2];
                assert_eq!((s.image.height, s.image.width), (bh, bw));
                assert!(bh % 32 == 0 && bw % 32 == 0 && bh.max(bw) <= 128 + 32);
            } else {
                assert_eq!((s.image.height, s.image.width), (128, 128));
            }
        }
    }
}

#[test]
fn rect_shapes_follow_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(
        dir.path(),
        DatasetOptions {
            imgsz: 640,
            rect: true,
            batch_size: 2,
            pad: 0.5,
            ..Default::default()
        },
    );
    // Sorted by h / w.
    let ars: Vec<f32> = ds
        .records()
        .iter()
        .map(|r| r.height as f32 / r.width as f32)
        .collect();
    assert!(ars.windows(2).all(|p| p[0] <= p[1]), "{ars:?}");
    // Batch 0 holds 256x128 (ar 0.5) and 200x150 (0.75): shape [0.75, 1] * 640 / 32 + 0.5 → ceil.
    let expect = |sh: f64, sw: f64| {
        (
            ((sh * 20.0 + 0.5).ceil() as usize) * 32,
            ((sw * 20.0 + 0.5).ceil() as usize) * 32,
        )
    };
    assert_eq!(
        ds.batch_shapes().unwrap(),
        &[
            expect(0.75, 1.0),
            expect(1.0, 1.0),
            expect(1.0, 1.0 / 1.7777777)
        ]
    );
}

#[test]
fn mosaic_and_perspective_keep_boxes_on_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(
        dir.path(),
        DatasetOptions {
            imgsz: 128,
            augment: true,
            aug: geometric_aug(),
            ..Default::default()
        },
    );
    let limit = 4 * 1300;
    let mut labelled = 0;
    for seed in 0..40u64 {
        let mut rng = sample_rng(seed, 1, 2);
        let s = ds.get((seed % 6) as usize, &mut rng).unwrap();
        assert_eq!((s.image.width, s.image.height), (128, 128));
        labelled += s.labels.len();
        check_consistent(&s, 2.0, limit, true).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
    assert!(
        labelled > 40,
        "augmentation dropped nearly every box ({labelled})"
    );
}

#[test]
fn mosaic9_keeps_boxes_on_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(
        dir.path(),
        DatasetOptions {
            imgsz: 128,
            augment: true,
            aug: AugParams {
                mosaic9: 1.0,
                degrees: 0.0,
                shear: 0.0,
                perspective: 0.0,
                ..geometric_aug()
            },
            ..Default::default()
        },
    );
    for seed in 0..25u64 {
        let mut rng = sample_rng(seed, 0, 0);
        let s = ds.get((seed % 6) as usize, &mut rng).unwrap();
        assert_eq!((s.image.width, s.image.height), (128, 128));
        check_consistent(&s, 2.0, 9 * 1300, false).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}

#[test]
fn single_image_augmentation_keeps_boxes_on_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(
        dir.path(),
        DatasetOptions {
            imgsz: 128,
            augment: true,
            aug: AugParams {
                mosaic: 0.0,
                ..geometric_aug()
            },
            ..Default::default()
        },
    );
    let mut flipped = 0;
    for seed in 0..30u64 {
        let mut rng = sample_rng(seed, 0, 0);
        let i = (seed % 6) as usize;
        let s = ds.get(i, &mut rng).unwrap();
        check_consistent(&s, 2.0, 1300, true).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        // Flip check: the box centre is in the mirrored half when the source rect was off-centre.
        flipped += s.labels.iter().filter(|l| l[0] as usize == i).count();
    }
    assert!(flipped > 20);
}

#[test]
fn flips_only_move_boxes_with_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let aug = AugParams {
        flipud: 1.0,
        fliplr: 1.0,
        ..AugParams::none()
    };
    let ds = dataset(
        dir.path(),
        DatasetOptions {
            imgsz: 128,
            augment: true,
            aug,
            ..Default::default()
        },
    );
    let plain = dataset(
        dir.path(),
        DatasetOptions {
            imgsz: 128,
            augment: true,
            aug: AugParams::none(),
            ..Default::default()
        },
    );
    for i in 0..ds.len() {
        let s = ds.get(i, &mut sample_rng(0, 0, i as u64)).unwrap();
        let p = plain.get(i, &mut sample_rng(0, 0, i as u64)).unwrap();
        check_consistent(&s, 2.0, 0, false).unwrap();
        let (a, b) = (s.labels[0], p.labels[0]);
        assert!((a[1] - (1.0 - b[1])).abs() < 1e-5 && (a[2] - (1.0 - b[2])).abs() < 1e-5);
        let mut img = p.image.clone();
        img.flip_lr();
        img.flip_ud();
        assert!(img == s.image, "flipped pixels differ");
    }
}

#[test]
fn hsv_changes_colours_not_geometry() {
    let mut rng = sample_rng(3, 0, 0);
    let mut grey = RgbBuf::filled(8, 8, [90, 90, 90]);
    augment_hsv(&mut grey, 0.5, 0.5, 0.5, &mut rng);
    let p = grey.pixel(0, 0);
    assert!(p[0] == p[1] && p[1] == p[2], "grey stays grey: {p:?}");
    assert!(grey.data.chunks(3).all(|q| q == p));
    let mut im = RgbBuf::filled(4, 4, [10, 10, 10]);
    im.put_pixel(1, 2, COLOURS[0]);
    let before = im.clone();
    augment_hsv(&mut im, 0.0, 0.0, 0.0, &mut rng);
    assert_eq!(im, before);
    augment_hsv(&mut im, 0.015, 0.7, 0.4, &mut rng);
    let q = im.pixel(1, 2);
    assert!(
        q[0] > q[1] + 50 && q[0] > q[2] + 50,
        "red stays reddish: {q:?}"
    );
    assert!(im.pixel(0, 0)[0] < 40);
}

#[test]
fn mixup_blends_and_concatenates() {
    let mut rng = sample_rng(1, 0, 0);
    let mut a = RgbBuf::filled(4, 4, [200, 0, 0]);
    let b = RgbBuf::filled(4, 4, [0, 0, 200]);
    let mut la = vec![[0.0, 1.0, 1.0, 2.0, 2.0]];
    mixup(&mut a, &mut la, &b, &[[1.0, 0.0, 0.0, 1.0, 1.0]], &mut rng);
    assert_eq!(la.len(), 2);
    let p = a.pixel(0, 0);
    assert!(
        (p[0] as i32 + p[2] as i32 - 200).abs() <= 2 && p[0] > 60 && p[2] > 60,
        "{p:?}"
    );
}

#[test]
fn mixup_in_pipeline_keeps_all_labels_valid() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(
        dir.path(),
        DatasetOptions {
            imgsz: 128,
            augment: true,
            aug: AugParams {
                mixup: 1.0,
                ..AugParams::default()
            },
            ..Default::default()
        },
    );
    for seed in 0..10 {
        let s = ds.get(0, &mut sample_rng(seed, 0, 0)).unwrap();
        for l in &s.labels {
            assert!(l[1..].iter().all(|v| (0.0..=1.0).contains(v)), "{l:?}");
            assert!(l[3] > 0.0 && l[4] > 0.0);
        }
    }
    let _ = RECTS;
}

#[test]
fn axis_aligned_mosaic_boxes_are_exact_even_when_clipped() {
    let dir = tempfile::tempdir().unwrap();
    let aug = AugParams {
        degrees: 0.0,
        shear: 0.0,
        perspective: 0.0,
        ..geometric_aug()
    };
    let ds = dataset(
        dir.path(),
        DatasetOptions {
            imgsz: 128,
            augment: true,
            aug,
            ..Default::default()
        },
    );
    for seed in 0..40u64 {
        let s = ds
            .get((seed % 6) as usize, &mut sample_rng(seed, 7, 0))
            .unwrap();
        check_consistent(&s, 2.0, 4 * 1300, false).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    }
}
