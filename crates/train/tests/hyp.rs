//! Hyp YAML: every file of `configs/hyp` parses; values, our extra keys and errors.

use std::path::PathBuf;
use yolo_losses::IouKind;
use yolo_train::Hyp;

fn hyp_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../configs/hyp")
}

#[test]
fn every_config_file_parses() {
    let mut n = 0;
    for e in std::fs::read_dir(hyp_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            let h = Hyp::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert!(h.lr0 > 0.0, "{}", p.display());
            n += 1;
        }
    }
    assert!(n >= 6, "only {n} hyp files");
}

#[test]
fn upstream_values_are_read() {
    let low = Hyp::load(hyp_dir().join("hyp.scratch-low.yaml")).unwrap();
    assert_eq!(low, Hyp::default(), "defaults are hyp.scratch-low.yaml");
    let high = Hyp::load(hyp_dir().join("hyp.scratch-high.yaml")).unwrap();
    assert_eq!((high.lrf, high.mixup, high.cls_gain), (0.1, 0.1, 0.3));
    assert_eq!(high.scale, 0.9);
    let p5 = Hyp::load(hyp_dir().join("hyp.scratch.p5.yaml")).unwrap();
    assert!(p5.use_ota());
    assert_eq!(p5.paste_in, Some(0.15));
    assert!(!low.use_ota());
}

#[test]
fn box_loss_and_focal_gamma_come_from_the_file() {
    let h = Hyp::load(hyp_dir().join("hyp.siou-focal.yaml")).unwrap();
    assert_eq!(h.iou_kind(), IouKind::SIoU);
    let l = h.loss_hyp();
    assert_eq!((l.iou_kind, l.fl_gamma), (IouKind::SIoU, 1.5));
    let h = Hyp::from_yaml("iou_type: EIoU\niou_alpha: 3\nfl_gamma: 2", "inline").unwrap();
    let l = h.loss_hyp();
    assert_eq!(
        (l.iou_kind, l.iou_alpha, l.fl_gamma),
        (IouKind::EIoU, 3.0, 2.0)
    );
    // missing keys take the defaults
    assert_eq!(l.box_gain, 0.05);
}

#[test]
fn bad_files_name_the_problem() {
    let e = Hyp::from_yaml("lr0: 0.01\nfl_gama: 1.5\n", "my.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("my.yaml") && e.contains("fl_gama") && e.contains("line 2"),
        "{e}"
    );
    let e = Hyp::from_yaml("iou_type: wiou\n", "x.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("iou_type `wiou`"), "{e}");
    let e = Hyp::from_yaml("lr0: [1, 2\n", "y.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("y.yaml") && e.contains("line"), "{e}");
    let e = Hyp::from_yaml("mosaic: 1.5\n", "z.yaml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("mosaic"), "{e}");
    let e = Hyp::load("/nonexistent/hyp.yaml").unwrap_err().to_string();
    assert!(
        e.contains("/nonexistent/hyp.yaml") && e.contains("cannot read"),
        "{e}"
    );
}

#[test]
fn yaml_round_trip() {
    let h = Hyp::load(hyp_dir().join("hyp.scratch.p5.yaml")).unwrap();
    let back = Hyp::from_yaml(&h.to_yaml(), "round trip").unwrap();
    assert_eq!(h, back);
}

#[test]
fn augmentation_part_equals_the_data_crates_reading_of_each_file() {
    let mut n = 0;
    for e in std::fs::read_dir(hyp_dir()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "yaml") {
            continue;
        }
        let hyp = Hyp::load(&p).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        let direct = yolo_data::AugParams::from_yaml_str(&text, &p).unwrap();
        assert_eq!(hyp.aug(), direct, "{}", p.display());
        n += 1;
    }
    assert!(n >= 8, "only {n} hyp files");
}
