//! The synthetic dataset generator writes consistent, deterministic files.

use yolo_data::io::load_rgb;
use yolo_data::labels::scan;
use yolo_data::{generate, DataError, DatasetConfig, SynthConfig};

fn cfg(out: &std::path::Path, seed: u64) -> SynthConfig {
    SynthConfig {
        out: out.to_path_buf(),
        train: 40,
        val: 10,
        imgsz: 96,
        seed,
        ..Default::default()
    }
}

#[test]
fn writes_a_loadable_consistent_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synth");
    let yaml = generate(&cfg(&out, 3)).unwrap();
    let dc = DatasetConfig::load(&yaml).unwrap();
    assert_eq!(dc.nc(), 6);
    assert_eq!(dc.names[0], "circle");
    let train = scan(&dc.train, Some(dc.nc()), false).unwrap();
    let val = scan(&dc.val, Some(dc.nc()), false).unwrap();
    assert_eq!(train.records.len(), 40);
    assert_eq!(val.records.len(), 10);
    assert!(!train.report.has_problems(), "{}", train.report);
    let objects: usize = train.records.iter().map(|r| r.labels.len()).sum();
    let empty = train.records.iter().filter(|r| r.labels.is_empty()).count();
    assert!(
        objects >= 40 && empty <= 10,
        "{objects} objects, {empty} empty"
    );
    let mut classes = [0usize; 6];
    for r in &train.records {
        assert_eq!((r.width, r.height), (96, 96));
        for l in &r.labels {
            classes[l[0] as usize] += 1;
            // Sizes within the configured range (a rotated shape's box can be up to ~1.5× its size).
            let side = l[3].max(l[4]);
            assert!((0.05..=0.62).contains(&side), "{l:?}");
        }
    }
    assert!(classes.iter().all(|&c| c > 0), "{classes:?}");
    for r in train.records.iter().take(10) {
        let im = load_rgb(&r.path).unwrap();
        assert_eq!((im.width, im.height), (96, 96));
    }
}

#[test]
fn deterministic_per_seed() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let c = dir.path().join("c");
    generate(&cfg(&a, 5)).unwrap();
    generate(&cfg(&b, 5)).unwrap();
    generate(&cfg(&c, 6)).unwrap();
    let read = |d: &std::path::Path, f: &str| std::fs::read(d.join(f)).unwrap();
    for f in [
        "images/train/train_000007.jpg",
        "labels/train/train_000007.txt",
        "labels/val/val_000003.txt",
    ] {
        assert_eq!(read(&a, f), read(&b, f), "{f}");
    }
    assert_ne!(
        read(&a, "images/train/train_000007.jpg"),
        read(&c, "images/train/train_000007.jpg")
    );
    // Regenerating into the same folder replaces it.
    generate(&SynthConfig {
        train: 5,
        ..cfg(&a, 5)
    })
    .unwrap();
    assert_eq!(
        std::fs::read_dir(a.join("images/train")).unwrap().count(),
        5
    );
}

#[test]
fn refuses_bad_settings_and_foreign_folders() {
    let dir = tempfile::tempdir().unwrap();
    let bad_class = SynthConfig {
        classes: vec!["dragon".into()],
        ..cfg(dir.path(), 0)
    };
    assert!(matches!(
        generate(&bad_class),
        Err(DataError::InvalidArgument { .. })
    ));
    std::fs::write(dir.path().join("data.yaml"), "train: x\n").unwrap();
    let e = generate(&cfg(dir.path(), 0)).unwrap_err();
    assert!(
        e.to_string().contains("not written by the generator"),
        "{e}"
    );
}

#[test]
fn shapes_lie_inside_their_boxes() {
    // Every box lies inside the image and is at least the smallest configured object size
    // (tightness of the box around the drawn pixels is a unit test in src/synth.rs).
    let c = SynthConfig {
        imgsz: 128,
        empty_fraction: 0.0,
        ..Default::default()
    };
    let kinds: Vec<usize> = (0..6).collect();
    for i in 0..20 {
        let mut rng = yolo_data::rng::sample_rng(9, 0, i);
        let (img, labels) = yolo_data::synth::render_image(&c, &kinds, &mut rng);
        assert!(!labels.is_empty());
        for l in &labels {
            let s = 128.0;
            let (x1, y1) = ((l[1] - l[3] / 2.0) * s, (l[2] - l[4] / 2.0) * s);
            let (x2, y2) = ((l[1] + l[3] / 2.0) * s, (l[2] + l[4] / 2.0) * s);
            assert!(
                x1 >= -0.01 && y1 >= -0.01 && x2 <= s + 0.01 && y2 <= s + 0.01,
                "{l:?}"
            );
            assert!(x2 - x1 >= 0.08 * s && y2 - y1 >= 0.05 * s, "{l:?}");
        }
        assert_eq!(img.width, 128);
    }
}
