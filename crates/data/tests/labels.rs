//! Label parsing, the scan of deliberately bad data, and the label cache.

mod common;

use yolo_data::dataset::{Dataset, DatasetOptions};
use yolo_data::io::{label_path, list_images, load_rgb};
use yolo_data::labels::{files_hash, parse_labels, read_label_file, scan, IssueKind, LabelCache};
use yolo_data::DataError;

#[test]
fn parses_boxes_and_polygons() {
    let p = parse_labels("0 0.5 0.5 0.2 0.4\n\n  3 0.1 0.2 0.05 0.1  \n", Some(4)).unwrap();
    assert_eq!(
        p.labels,
        vec![[0.0, 0.5, 0.5, 0.2, 0.4], [3.0, 0.1, 0.2, 0.05, 0.1]]
    );
    assert_eq!(p.duplicates, 0);
    // Any row with more than 6 values makes every row a polygon.
    let p = parse_labels("1 0.2 0.2 0.6 0.2 0.6 0.8 0.2 0.8\n", None).unwrap();
    let l = p.labels[0];
    assert_eq!(l[0], 1.0);
    for (a, b) in l[1..].iter().zip([0.4, 0.5, 0.4, 0.6]) {
        assert!((a - b).abs() < 1e-6, "{l:?}");
    }
    assert_eq!(p.segments.len(), 1);
}

#[test]
fn every_bad_case_is_classified() {
    let cases = [
        ("0 0.5 0.5 0.2\n", IssueKind::Columns),
        ("0 0.5 0.5 0.2 0.2 0.1\n", IssueKind::Columns),
        ("0 0.5 0.5 0.2 0.2\n0 0.5 0.5\n", IssueKind::Columns),
        ("1 0.1 0.1 0.2 0.2 0.3\n", IssueKind::Columns), // 6 values: not a polygon
        ("1 0.1 0.1 0.2 0.2 0.3 0.3 0.4\n", IssueKind::Columns), // odd polygon
        ("0 nan 0.5 0.2 0.2\n", IssueKind::NotANumber),
        ("0 inf 0.5 0.2 0.2\n", IssueKind::NotANumber),
        ("cat 0.5 0.5 0.2 0.2\n", IssueKind::NotANumber),
        ("0 0.5 -0.5 0.2 0.2\n", IssueKind::Negative),
        ("-1 0.5 0.5 0.2 0.2\n", IssueKind::Negative),
        ("0 0.5 0.5 1.5 0.2\n", IssueKind::OutOfRange),
        ("0 0.5 0.5 0.2 0.2 0.3 0.4 1.2 0.5\n", IssueKind::OutOfRange),
        ("5 0.5 0.5 0.2 0.2\n", IssueKind::BadClass),
        ("1.5 0.5 0.5 0.2 0.2\n", IssueKind::BadClass),
    ];
    for (text, kind) in cases {
        let e = parse_labels(text, Some(5)).expect_err(text);
        assert_eq!(e.kind, kind, "{text:?}: {e:?}");
        assert!(e.line >= 1 && !e.detail.is_empty());
    }
    // Duplicates are removed, not fatal.
    let p = parse_labels(
        "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2 0.2\n",
        Some(2),
    )
    .unwrap();
    assert_eq!(p.labels.len(), 2);
    assert_eq!(p.duplicates, 1);
    // Empty text: no labels.
    assert!(parse_labels("\n \n", Some(2)).unwrap().labels.is_empty());
}

#[test]
fn strict_reader_names_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.txt");
    std::fs::write(&f, "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2\n").unwrap();
    let e = read_label_file(&f, None).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::Label { line: 2, .. }), "{msg}");
    assert!(
        msg.contains("x.txt:2") && msg.contains("expected 5"),
        "{msg}"
    );
}

#[test]
fn scan_of_bad_samples() {
    let (_tmp, bad) = common::sample_copy("bad");
    let s = scan(&[bad.join("images")], Some(2), false).unwrap();
    let r = &s.report;
    let names: Vec<String> = s
        .records
        .iter()
        .map(|r| r.path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    for kept in [
        "good",
        "duplicates",
        "missing",
        "empty",
        "polygon",
        "format_png",
        "format_bmp",
        "format_tiff",
        "format_webp",
        "exif_rot90",
    ] {
        assert!(
            names.contains(&kept.to_string()),
            "{kept} should be kept: {names:?}\n{r}"
        );
    }
    for dropped in [
        "columns",
        "six_columns",
        "nan",
        "text",
        "negative",
        "out_of_range",
        "class_too_big",
        "corrupt",
        "tiny",
        "odd_polygon",
    ] {
        assert!(
            !names.contains(&dropped.to_string()),
            "{dropped} should be dropped\n{r}"
        );
    }
    assert_eq!(r.count(IssueKind::NonImage), 1, "{r}");
    assert_eq!(r.count(IssueKind::Columns), 3, "{r}");
    assert_eq!(r.count(IssueKind::NotANumber), 2, "{r}");
    assert_eq!(r.count(IssueKind::Negative), 1, "{r}");
    assert_eq!(r.count(IssueKind::OutOfRange), 1, "{r}");
    assert_eq!(r.count(IssueKind::BadClass), 1, "{r}");
    assert_eq!(r.count(IssueKind::Duplicate), 1, "{r}");
    assert_eq!(r.count(IssueKind::MissingLabel), 1, "{r}");
    assert_eq!(r.count(IssueKind::EmptyLabel), 1, "{r}");
    assert!(r.count(IssueKind::CorruptImage) >= 2, "{r}");
    assert_eq!(r.missing, 1);
    assert_eq!(r.empty, 1);
    assert_eq!(r.usable, s.records.len());
    assert_eq!(r.total, r.usable + r.corrupt);
    let summary = r.summary();
    assert!(
        summary.contains("class id 9") && summary.contains("class_too_big.jpg"),
        "{summary}"
    );
    // Duplicates removed, polygon turned into its box.
    let rec = |n: &str| {
        s.records
            .iter()
            .find(|r| r.path.file_stem().unwrap() == n)
            .unwrap()
    };
    assert_eq!(rec("duplicates").labels.len(), 2);
    let poly = rec("polygon").labels[0];
    assert!(
        (poly[1] - 0.4375).abs() < 1e-6 && (poly[3] - 0.375).abs() < 1e-6,
        "{poly:?}"
    );
    assert!(rec("missing").labels.is_empty() && rec("empty").labels.is_empty());
    // EXIF orientation 6: stored 32×24, used 24×32.
    assert_eq!(
        (rec("exif_rot90").width, rec("exif_rot90").height),
        (24, 32)
    );
    assert_eq!((rec("good").width, rec("good").height), (32, 24));
}

#[test]
fn exif_orientation_rotates_pixels() {
    let bad = common::samples().join("bad/images");
    let plain = load_rgb(&bad.join("good.jpg")).unwrap();
    let rotated = load_rgb(&bad.join("exif_rot90.jpg")).unwrap();
    assert_eq!((rotated.width, rotated.height), (plain.height, plain.width));
    // Orientation 6 = rotate 90° clockwise: displayed (x, y) = stored (y, H - 1 - x).
    let mut max_diff = 0i32;
    for y in 0..rotated.height {
        for x in 0..rotated.width {
            let a = rotated.pixel(x, y);
            let b = plain.pixel(y, plain.height - 1 - x);
            for c in 0..3 {
                max_diff = max_diff.max((a[c] as i32 - b[c] as i32).abs());
            }
        }
    }
    assert!(max_diff <= 2, "max diff {max_diff}");
}

#[test]
fn no_usable_image_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let im = dir.path().join("images");
    std::fs::create_dir_all(&im).unwrap();
    std::fs::write(im.join("a.jpg"), b"garbage").unwrap();
    std::fs::write(im.join("b.png"), b"garbage").unwrap();
    let e = scan(std::slice::from_ref(&im), None, false).unwrap_err();
    assert!(matches!(e, DataError::NoUsableImages { .. }), "{e}");
    assert!(e.to_string().contains("a.jpg"), "{e}");
    std::fs::remove_file(im.join("a.jpg")).unwrap();
    std::fs::remove_file(im.join("b.png")).unwrap();
    let e = scan(std::slice::from_ref(&im), None, false).unwrap_err();
    assert!(matches!(e, DataError::NoImages { .. }), "{e}");
    let e = scan(&[dir.path().join("nope")], None, false).unwrap_err();
    assert!(matches!(e, DataError::SourceNotFound { .. }), "{e}");
}

#[test]
fn training_needs_labels() {
    let dir = tempfile::tempdir().unwrap();
    let im = dir.path().join("images");
    std::fs::create_dir_all(&im).unwrap();
    std::fs::copy(
        common::samples().join("bad/images/good.jpg"),
        im.join("a.jpg"),
    )
    .unwrap();
    let opts = DatasetOptions {
        augment: true,
        label_cache: false,
        ..Default::default()
    };
    let e = Dataset::new(std::slice::from_ref(&im), opts).unwrap_err();
    assert!(matches!(e, DataError::NoLabels { .. }), "{e}");
    let ok = Dataset::new(
        &[im],
        DatasetOptions {
            label_cache: false,
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(ok.len(), 1);
}

#[test]
fn label_cache_round_trip() {
    let (_tmp, shapes) = common::sample_copy("shapes");
    let src = vec![shapes.join("images/train")];
    let first = scan(&src, Some(6), true).unwrap();
    assert!(!first.from_cache);
    let cache_file = first.cache_file.clone().unwrap();
    assert_eq!(cache_file, shapes.join("labels/train.cache.json"));
    assert!(cache_file.exists());
    let second = scan(&src, Some(6), true).unwrap();
    assert!(second.from_cache);
    assert_eq!(second.records, first.records);
    assert_eq!(second.report, first.report);

    // Explicit load/save with the hash check.
    let listed = list_images(&src).unwrap().images;
    let labels: Vec<_> = listed.iter().map(|p| label_path(p)).collect();
    let hash = files_hash(&listed, &labels, Some(6));
    let c = LabelCache::load(&cache_file, &hash).unwrap();
    assert_eq!(c.records, first.records);
    let other = shapes.join("copy.cache");
    c.save(&other).unwrap();
    assert_eq!(LabelCache::load(&other, &hash).unwrap(), c);
    assert!(matches!(
        LabelCache::load(&other, "0000"),
        Err(DataError::Cache { .. })
    ));
    // A save that cannot rename into place (a directory is in the way) fails with the path
    // and leaves no temporary file behind.
    let blocked = shapes.join("blocked.cache");
    std::fs::create_dir_all(blocked.join("inside")).unwrap();
    let err = c.save(&blocked).unwrap_err().to_string();
    assert!(err.contains("blocked.cache"), "{err}");
    assert!(!blocked.with_extension("cache.tmp").exists());
    // A different nc is a different cache.
    assert_ne!(files_hash(&listed, &labels, Some(7)), hash);

    // Changing a label file invalidates the cache.
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(
        &labels[0],
        "0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n0 0.2 0.2 0.1 0.1\n",
    )
    .unwrap();
    let third = scan(&src, Some(6), true).unwrap();
    assert!(!third.from_cache);
    assert_eq!(third.records[0].labels.len(), 2);
    assert_eq!(third.report.count(IssueKind::Duplicate), 1);

    // A garbage cache file is ignored (rescanned and rewritten).
    std::fs::write(&cache_file, b"{not json").unwrap();
    let fourth = scan(&src, Some(6), true).unwrap();
    assert!(!fourth.from_cache);
    assert!(scan(&src, Some(6), true).unwrap().from_cache);
}
