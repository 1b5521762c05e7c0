//! Dataset YAML and hyp YAML parsing.

mod common;

use std::path::Path;

use yolo_data::{AugParams, DataError, DatasetConfig};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn list_and_dict_names_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("ds/images/train")).unwrap();
    let y = write(
        dir.path(),
        "a.yaml",
        "path: ds\ntrain: images/train\nval: [images/val, images/val2]\nnames: [cat, dog]\n",
    );
    let c = DatasetConfig::load(&y).unwrap();
    assert_eq!(c.root, dir.path().join("ds"));
    assert_eq!(c.train, vec![dir.path().join("ds/images/train")]);
    assert_eq!(c.val.len(), 2);
    assert!(c.test.is_empty());
    assert_eq!(c.names, vec!["cat", "dog"]);
    assert_eq!(c.nc(), 2);

    let y = write(
        dir.path(),
        "b.yaml",
        "train: t.txt\nval: v\ntest:\nnc: 3\nnames:\n  2: c\n  0: a\n  1: b\ndownload: https://x\n",
    );
    let c = DatasetConfig::load(&y).unwrap();
    assert_eq!(c.root, dir.path());
    assert_eq!(c.train, vec![dir.path().join("t.txt")]);
    assert_eq!(c.names, vec!["a", "b", "c"]);
}

#[test]
fn bad_yaml_errors_name_file_and_place() {
    let dir = tempfile::tempdir().unwrap();
    let y = write(dir.path(), "bad.yaml", "train: a\nval: b\nnames: [a, b\n");
    let e = DatasetConfig::load(&y).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::Yaml { .. }));
    assert!(msg.contains("bad.yaml") && msg.contains("line"), "{msg}");

    for (text, needle) in [
        ("val: b\nnames: [a]\n", "train"),
        ("train: a\nval: b\nnc: 3\nnames: [a, b]\n", "nc: 3"),
        ("train: a\nval: b\nnames: {0: a, 2: c}\n", "id 1 is missing"),
        ("train: a\nval: b\nnames: {x: a}\n", "integer class ids"),
        ("train: 3\nval: b\nnames: [a]\n", "train"),
        ("- a\n- b\n", "mapping"),
    ] {
        let y = write(dir.path(), "c.yaml", text);
        let msg = DatasetConfig::load(&y).unwrap_err().to_string();
        assert!(
            msg.contains("c.yaml") && msg.contains(needle),
            "{text:?} → {msg}"
        );
    }
    let msg = DatasetConfig::load(dir.path().join("none.yaml"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("none.yaml"), "{msg}");
}

#[test]
fn committed_dataset_yamls_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let c = DatasetConfig::load(root.join("configs/data/coco128.yaml")).unwrap();
    assert_eq!(c.nc(), 80);
    assert_eq!(c.names[0], "person");
    assert_eq!(c.names[79], "toothbrush");
    let s = DatasetConfig::load(root.join("configs/data/synth.yaml")).unwrap();
    assert_eq!(
        s.names,
        vec!["circle", "square", "triangle", "cross", "star", "ring"]
    );
    assert!(s.root.ends_with("datasets/synth"), "{:?}", s.root);
    let samples = DatasetConfig::load(common::samples().join("shapes/data.yaml")).unwrap();
    assert!(samples.train[0].is_dir());
    assert!(samples.val[0].is_dir());
}

#[test]
fn hyp_defaults_and_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let low = AugParams::load(root.join("configs/hyp/hyp.scratch-low.yaml")).unwrap();
    assert_eq!(low, AugParams::default());
    let high = AugParams::load(root.join("configs/hyp/hyp.scratch-high.yaml")).unwrap();
    assert_eq!(high.scale, 0.9);
    assert_eq!(high.mixup, 0.1);
    let dir = tempfile::tempdir().unwrap();
    let y = write(dir.path(), "h.yaml", "lr0: 0.1\nfliplr: 0.0\nfoo: bar\n");
    let h = AugParams::load(&y).unwrap();
    assert_eq!(h.fliplr, 0.0);
    assert_eq!(h.mosaic, 1.0);
    let y = write(dir.path(), "h2.yaml", "fliplr: 2.0\n");
    let msg = AugParams::load(&y).unwrap_err().to_string();
    assert!(msg.contains("h2.yaml") && msg.contains("fliplr"), "{msg}");
    let y = write(dir.path(), "h3.yaml", "fliplr: yes please\n");
    assert!(AugParams::load(&y).is_err());
}
