//! Prediction folders: evaluation equals the in-memory metrics, errors name file and line,
//! the COCO JSON writer is atomic.

use yolo_train::{
    evaluate_prediction_folder, read_yolo_predictions, write_coco_json, write_file_atomic,
    LabelledImage, MetricsAccumulator,
};

fn tmpdir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("yf-predfiles-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn folder_metrics_equal_the_accumulator_on_pixel_boxes() {
    let d = tmpdir("eval");
    // image a: 200×100, two labels; image b: 100×100, one label, no prediction file
    let images = vec![
        LabelledImage {
            stem: "a".into(),
            labels: vec![[0.0, 0.25, 0.5, 0.2, 0.4], [1.0, 0.75, 0.5, 0.2, 0.4]],
            size: (200, 100),
        },
        LabelledImage {
            stem: "b".into(),
            labels: vec![[1.0, 0.5, 0.5, 0.5, 0.5]],
            size: (100, 100),
        },
    ];
    std::fs::write(
        d.join("a.txt"),
        "0 0.25 0.5 0.2 0.4 0.9\n1 0.76 0.5 0.2 0.4 0.8\n1 0.1 0.1 0.05 0.05 0.3\n",
    )
    .unwrap();
    std::fs::write(d.join("stray.txt"), "").unwrap();
    let r = evaluate_prediction_folder(&d, &images, 2).unwrap();
    assert_eq!(r.detections, 3);
    assert_eq!(r.missing.len(), 1);
    assert!(r.missing[0].ends_with("b.txt"));
    assert_eq!(r.unmatched.len(), 1);

    // the same in pixels by hand
    let mut acc = MetricsAccumulator::new();
    acc.add_image(
        &[
            [30.0, 30.0, 70.0, 70.0, 0.9, 0.0],
            [132.0, 30.0, 172.0, 70.0, 0.8, 1.0],
            [7.5, 7.5, 12.5, 12.5, 0.3, 1.0],
        ],
        &[
            [0.0, 30.0, 30.0, 70.0, 70.0],
            [1.0, 130.0, 30.0, 170.0, 70.0],
        ],
    );
    acc.add_image(&[], &[[1.0, 25.0, 25.0, 75.0, 75.0]]);
    let want = acc.compute(2).unwrap();
    let got = &r.metrics;
    for (a, b) in [
        (got.map50, want.map50),
        (got.map, want.map),
        (got.mp, want.mp),
        (got.mr, want.mr),
    ] {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }
    assert!(got.map50 > 0.3 && got.map50 < 1.0, "{}", got.map50);
    assert_eq!(got.labels_per_class, vec![1, 2]);
}

#[test]
fn bad_prediction_files_name_file_and_line() {
    let d = tmpdir("bad");
    let p = d.join("x.txt");
    std::fs::write(&p, "0 0.5 0.5 0.1 0.1 0.9\n0 0.5 0.5 0.1 0.1\n").unwrap();
    let e = read_yolo_predictions(&p).unwrap_err().to_string();
    assert!(e.contains("x.txt:2") && e.contains("6 columns"), "{e}");
    std::fs::write(&p, "0 0.5 abc 0.1 0.1 0.9\n").unwrap();
    let e = read_yolo_predictions(&p).unwrap_err().to_string();
    assert!(e.contains("x.txt:1") && e.contains("not a number"), "{e}");
    std::fs::write(&p, "0 0.5 0.5 -0.1 0.1 0.9\n").unwrap();
    assert!(read_yolo_predictions(&p).is_err());
    // class beyond nc
    std::fs::write(&p, "7 0.5 0.5 0.1 0.1 0.9\n").unwrap();
    let img = LabelledImage {
        stem: "x".into(),
        labels: vec![],
        size: (10, 10),
    };
    let e = evaluate_prediction_folder(&d, &[img], 3)
        .unwrap_err()
        .to_string();
    assert!(e.contains("class 7") && e.contains("x.txt"), "{e}");
    // not a folder
    assert!(evaluate_prediction_folder(d.join("nope"), &[], 3).is_err());
    // a missing file is no detections
    assert!(read_yolo_predictions(d.join("none.txt"))
        .unwrap()
        .is_empty());
}

#[test]
fn coco_json_is_written_atomically() {
    let d = tmpdir("json");
    let p = d.join("predictions.json");
    std::fs::write(&p, "old").unwrap();
    let entries = vec![
        serde_json::json!({"image_id": 1, "category_id": 3, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.5}),
    ];
    write_coco_json(&p, &entries).unwrap();
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v[0]["category_id"], 3);
    // no temporary file left behind
    let n = std::fs::read_dir(&d).unwrap().count();
    assert_eq!(n, 1);
    // a failed write leaves the old file intact
    let dir_as_file = d.join("sub");
    std::fs::create_dir(&dir_as_file).unwrap();
    assert!(write_file_atomic(&dir_as_file, b"x").is_err());
    assert!(std::fs::read_to_string(&p).unwrap().starts_with('['));
}
