//! Loader: collation, determinism independent of worker count, rect batches.

mod common;

use std::sync::Arc;

use yolo_data::{collate, AugParams, Dataset, DatasetOptions, Loader, Sampler};

fn shapes_dataset(augment: bool, rect: bool) -> (tempfile::TempDir, Arc<Dataset>) {
    let (tmp, shapes) = common::sample_copy("shapes");
    let ds = Dataset::new(
        &[shapes.join("images/train")],
        DatasetOptions {
            imgsz: 64,
            augment,
            rect,
            batch_size: 3,
            nc: Some(6),
            aug: AugParams {
                mixup: 0.3,
                degrees: 5.0,
                ..AugParams::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    (tmp, Arc::new(ds))
}

fn epoch_bytes(loader: &Loader, epoch: u64) -> Vec<(Vec<f32>, Vec<f32>, Vec<std::path::PathBuf>)> {
    loader
        .epoch(epoch)
        .map(|b| {
            let b = b.unwrap();
            (b.images.to_vec(), b.targets.to_vec(), b.paths)
        })
        .collect()
}

#[test]
fn same_batches_for_any_worker_count() {
    let (_tmp, ds) = shapes_dataset(true, false);
    let l0 = Loader::new(ds.clone(), 3, true, 42, 0);
    let l1 = Loader::new(ds.clone(), 3, true, 42, 1);
    let l2 = Loader::new(ds.clone(), 3, true, 42, 2);
    let l3 = Loader::new(ds.clone(), 3, true, 42, 3).with_prefetch(1);
    assert_eq!(l2.len(), 3);
    let a = epoch_bytes(&l1, 5);
    assert_eq!(a.len(), 3);
    assert!(a == epoch_bytes(&l2, 5), "1 vs 2 workers differ");
    assert!(a == epoch_bytes(&l0, 5), "0 vs 1 workers differ");
    assert!(a == epoch_bytes(&l3, 5), "3 workers differ");
    // Another epoch or seed gives other batches.
    assert!(a != epoch_bytes(&l2, 6));
    assert!(a != epoch_bytes(&Loader::new(ds.clone(), 3, true, 43, 2), 5));
    // Shuffling covers every image once per epoch.
    let mut seen: Vec<_> = a.iter().flat_map(|x| x.2.clone()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), ds.len());
}

#[test]
fn batch_layout() {
    let (_tmp, ds) = shapes_dataset(true, false);
    let loader = Loader::new(ds.clone(), 3, false, 0, 2);
    let mut n_images = 0;
    for b in loader.epoch(0) {
        let b = b.unwrap();
        let s = b.images.shape().to_vec();
        assert_eq!(&s[1..], &[3, 64, 64]);
        assert_eq!(s[0], b.len());
        assert_eq!(b.shapes.len(), b.len());
        n_images += b.len();
        let px = b.images.to_vec();
        assert!(px.iter().all(|v| (0.0..=1.0).contains(v)));
        let t = b.targets.to_vec();
        assert_eq!(b.targets.shape()[1], 6);
        for r in t.chunks(6) {
            assert!((r[0] as usize) < b.len() && r[0].fract() == 0.0);
            assert!((r[1] as usize) < 6);
            assert!(r[2..].iter().all(|v| (0.0..=1.0).contains(v)), "{r:?}");
        }
    }
    assert_eq!(n_images, ds.len());
}

#[test]
fn dropping_an_epoch_early_stops_workers() {
    let (_tmp, ds) = shapes_dataset(true, false);
    let loader = Loader::new(ds, 1, true, 0, 2);
    let mut it = loader.epoch(0);
    assert!(it.next().unwrap().is_ok());
    drop(it); // must not hang
    assert_eq!(loader.epoch(1).count(), loader.len());
}

#[test]
fn rect_validation_batches() {
    let (_tmp, ds) = shapes_dataset(false, true);
    // Asking to shuffle or for another batch size is overridden in rect mode.
    let loader = Loader::new(ds.clone(), 5, true, 0, 2);
    assert_eq!(loader.batch_size(), 3);
    for (i, b) in loader.epoch(0).enumerate() {
        let b = b.unwrap();
        let (h, w) = ds.batch_shapes().unwrap()[i];
        assert_eq!(&b.images.shape()[2..], &[h, w]);
    }
}

#[test]
fn collate_pads_mixed_sizes() {
    let (_tmp, ds) = shapes_dataset(false, false);
    let mut rng = yolo_data::rng::sample_rng(0, 0, 0);
    let mut a = ds.get(0, &mut rng).unwrap();
    let b = ds.get(1, &mut rng).unwrap();
    // Shrink `a` to 32 × 64 by cropping (labels kept as they are; only the layout matters).
    a.image = a.image.resize(32, 64, yolo_data::imgbuf::Interp::Linear);
    a.labels = vec![[1.0, 0.5, 0.5, 1.0, 1.0]];
    let batch = collate(vec![a, b]).unwrap();
    assert_eq!(batch.images.shape(), &[2, 3, 64, 64]);
    let t = batch.targets.to_vec();
    assert_eq!(&t[..6], &[0.0, 1.0, 0.25, 0.5, 0.5, 1.0]);
    let px = batch.images.to_vec();
    assert!((px[40] - 114.0 / 255.0).abs() < 1e-6, "padding is grey");
    assert!(collate(Vec::new()).is_err());
}

#[test]
fn ram_cache_gives_identical_samples() {
    let (_tmp, shapes) = common::sample_copy("shapes");
    let opts = DatasetOptions {
        imgsz: 64,
        augment: true,
        nc: Some(6),
        ..Default::default()
    };
    let disk = Dataset::new(&[shapes.join("images/train")], opts.clone()).unwrap();
    let ram = Dataset::new(
        &[shapes.join("images/train")],
        DatasetOptions {
            cache_ram: true,
            ..opts
        },
    )
    .unwrap();
    for i in 0..disk.len() {
        let a = disk
            .get(i, &mut yolo_data::rng::sample_rng(1, 2, i as u64))
            .unwrap();
        let b = ram
            .get(i, &mut yolo_data::rng::sample_rng(1, 2, i as u64))
            .unwrap();
        assert!(a.image == b.image);
        assert_eq!(a.labels, b.labels);
    }
}

#[test]
fn disk_cache_gives_identical_samples_and_is_reused() {
    let (_tmp, shapes) = common::sample_copy("shapes");
    let train = shapes.join("images/train");
    let opts = DatasetOptions {
        imgsz: 64,
        augment: true,
        nc: Some(6),
        ..Default::default()
    };
    let plain = Dataset::new(std::slice::from_ref(&train), opts.clone()).unwrap();
    let with_cache = DatasetOptions {
        cache_disk: true,
        ..opts
    };
    let cached = Dataset::new(std::slice::from_ref(&train), with_cache.clone()).unwrap();
    let files: Vec<_> = (0..plain.len())
        .map(|i| yolo_data::diskcache::cache_path(plain.path(i)))
        .collect();
    assert!(files.iter().all(|f| f.exists()), "a cache file per image");
    for i in 0..plain.len() {
        let a = plain
            .get(i, &mut yolo_data::rng::sample_rng(1, 2, i as u64))
            .unwrap();
        let b = cached
            .get(i, &mut yolo_data::rng::sample_rng(1, 2, i as u64))
            .unwrap();
        assert!(a.image == b.image, "sample {i} differs with --cache disk");
        assert_eq!(a.labels, b.labels);
    }
    // A second dataset reuses the files (not rewritten: same modification times) …
    let stamps: Vec<_> = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().modified().unwrap())
        .collect();
    let again = Dataset::new(std::slice::from_ref(&train), with_cache).unwrap();
    assert!(
        again
            .report()
            .summary()
            .to_lowercase()
            .find("yfraw")
            .is_none(),
        "cache files reported as stray data: {}",
        again.report().summary()
    );
    for (f, t) in files.iter().zip(&stamps) {
        assert_eq!(&std::fs::metadata(f).unwrap().modified().unwrap(), t);
    }
    // … and really reads them: a cache file holding other (valid) pixels shows up in samples.
    let i = 0;
    let im = yolo_data::io::load_rgb(plain.path(i)).unwrap();
    let white = yolo_data::RgbBuf::filled(im.width, im.height, [255, 255, 255]);
    yolo_data::diskcache::write(plain.path(i), &white).unwrap();
    let s = again
        .get(i, &mut yolo_data::rng::sample_rng(1, 2, i as u64))
        .unwrap();
    let orig = plain
        .get(i, &mut yolo_data::rng::sample_rng(1, 2, i as u64))
        .unwrap();
    assert!(s.image != orig.image, "the cached pixels were not used");
}

#[test]
fn a_sampler_sets_the_order_and_bad_indices_are_errors() {
    let (_tmp, ds) = shapes_dataset(false, false);
    let paths = |l: &Loader, epoch| -> Vec<std::path::PathBuf> {
        l.epoch(epoch).flat_map(|b| b.unwrap().paths).collect()
    };
    let all = paths(&Loader::new(ds.clone(), 3, false, 1, 0), 0);
    // every other image, reversed in odd epochs; 4 images in batches of 3 = 2 batches
    let s = Sampler::new(4, |e| {
        let v = vec![0, 2, 4, 6];
        if e % 2 == 1 {
            v.into_iter().rev().collect()
        } else {
            v
        }
    });
    for workers in [0, 2] {
        let l = Loader::new(ds.clone(), 3, true, 1, workers).with_sampler(s.clone());
        assert_eq!((l.len(), l.order(1)), (2, vec![6, 4, 2, 0]));
        let want: Vec<_> = [0, 2, 4, 6].iter().map(|&i| all[i].clone()).collect();
        assert_eq!(paths(&l, 0), want);
        assert_eq!(paths(&l, 1), want.into_iter().rev().collect::<Vec<_>>());
    }
    // an index past the dataset is that batch's error, not a panic
    let bad =
        Loader::new(ds.clone(), 2, false, 1, 0).with_sampler(Sampler::new(3, |_| vec![0, 99, 1]));
    let r: Vec<_> = bad.epoch(0).collect();
    assert_eq!(r.len(), 2);
    assert!(r[0]
        .as_ref()
        .unwrap_err()
        .to_string()
        .contains("out of range"));
    assert_eq!(r[1].as_ref().unwrap().len(), 1);
}
