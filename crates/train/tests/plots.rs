//! Training plots: each writes a decodable image of the documented size; bad input is a
//! typed error naming the file.

use std::path::Path;

use yolo_train::plots::{
    class_color, gaussian_filter1d, plot_ap_curves, plot_confusion, plot_confusion_matrix,
    plot_images, plot_labels, plot_metric_curve, plot_pr_curves, plot_results, ImageBox, ImageView,
    CONFUSION_SIZE, CURVE_SIZE, LABELS_SIZE, RESULTS_SIZE,
};
use yolo_train::{ap_per_class, ConfusionMatrix, TrainError};

const HEADER: &str = "               epoch,      train/box_loss,      train/obj_loss,      train/cls_loss,   metrics/precision,      metrics/recall,     metrics/mAP_0.5,metrics/mAP_0.5:0.95,        val/box_loss,        val/obj_loss,        val/cls_loss,               x/lr0,               x/lr1,               x/lr2";

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class{i}")).collect()
}

fn decode(path: &Path) -> image::RgbImage {
    let bytes = std::fs::read(path).expect("file written");
    assert!(!bytes.is_empty(), "{} is empty", path.display());
    image::load_from_memory(&bytes)
        .expect("decodable image")
        .to_rgb8()
}

fn write_csv(path: &Path, rows: usize) {
    let mut s = format!("{HEADER}\n");
    for e in 0..rows {
        let f = e as f64;
        let vals = [
            f,
            0.1 / (f + 1.0),
            0.05 / (f + 1.0),
            0.03 / (f + 1.0),
            0.1 * f,
            0.08 * f,
            0.07 * f,
            0.04 * f,
            0.09 / (f + 1.0),
            0.04 / (f + 1.0),
            0.02 / (f + 1.0),
            0.01,
            0.01,
            0.01,
        ];
        let cells: Vec<String> = vals.iter().map(|v| format!("{v:>20.5}")).collect();
        s.push_str(&cells.join(","));
        s.push('\n');
    }
    std::fs::write(path, s).unwrap();
}

fn file_error_path(e: TrainError) -> String {
    match e {
        TrainError::File { path, .. } => path,
        other => panic!("expected a File error, got {other:?}"),
    }
}

#[test]
fn results_png_has_the_expected_size() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("results.csv");
    for rows in [1, 5] {
        write_csv(&csv, rows);
        let out = dir.path().join("results.png");
        plot_results(&csv, &out).unwrap();
        let im = decode(&out);
        assert_eq!(im.dimensions(), RESULTS_SIZE);
        // something besides the white background was drawn
        assert!(im.pixels().any(|p| p.0 != [255, 255, 255]));
    }
}

#[test]
fn results_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.png");
    let missing = dir.path().join("nope.csv");
    let e = plot_results(&missing, &out).unwrap_err();
    assert!(e.to_string().contains("nope.csv"), "{e}");
    assert!(file_error_path(e).contains("nope.csv"));

    let csv = dir.path().join("results.csv");
    write_csv(&csv, 3);
    let mut text = std::fs::read_to_string(&csv).unwrap();
    text.push_str("3, 0.1, abc, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1\n");
    std::fs::write(&csv, &text).unwrap();
    let e = plot_results(&csv, &out).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("results.csv:5"), "{msg}");
    assert!(msg.contains("abc"), "{msg}");

    std::fs::write(&csv, format!("{HEADER}\n1, 2, 3\n")).unwrap();
    let e = plot_results(&csv, &out).unwrap_err();
    assert!(e.to_string().contains("results.csv:2"), "{e}");

    std::fs::write(&csv, "epoch, a, b\n").unwrap();
    let e = plot_results(&csv, &out).unwrap_err();
    assert!(e.to_string().contains("results.csv"), "{e}");

    std::fs::write(&csv, format!("{HEADER}\n")).unwrap();
    assert!(plot_results(&csv, &out).is_err());
    assert!(!out.exists());
}

#[test]
fn labels_jpg_has_the_expected_size() {
    let dir = tempfile::tempdir().unwrap();
    let labels: Vec<[f32; 5]> = (0..200)
        .map(|i| {
            let t = i as f32 / 200.0;
            [
                (i % 3) as f32,
                t,
                1.0 - t,
                0.05 + 0.3 * t,
                0.1 + 0.2 * (1.0 - t),
            ]
        })
        .collect();
    let out = dir.path().join("labels.jpg");
    plot_labels(&labels, &names(3), &out).unwrap();
    assert_eq!(decode(&out).dimensions(), LABELS_SIZE);

    // no labels at all, and more classes than names: still a plot
    plot_labels(&[], &names(2), &out).unwrap();
    plot_labels(&[[40.0, 0.5, 0.5, 0.1, 0.1]], &names(2), &out).unwrap();
    assert_eq!(decode(&out).dimensions(), LABELS_SIZE);

    let e = plot_labels(&[[-1.0, 0.5, 0.5, 0.1, 0.1]], &names(2), &out).unwrap_err();
    assert!(file_error_path(e).contains("labels.jpg"));
    let e = plot_labels(&[[4e9, 0.5, 0.5, 0.1, 0.1]], &names(2), &out).unwrap_err();
    assert!(file_error_path(e).contains("labels.jpg"));
}

fn grey_image(w: u32, h: u32) -> Vec<u8> {
    vec![114; (w * h * 3) as usize]
}

#[test]
fn plot_images_draws_the_class_colour_on_box_edges() {
    let dir = tempfile::tempdir().unwrap();
    let px = grey_image(64, 64);
    let im = ImageView {
        width: 64,
        height: 64,
        rgb: &px,
    };
    let boxes: Vec<Vec<ImageBox>> = vec![vec![([10.0, 20.0, 50.0, 60.0], 2, None)]];
    let out = dir.path().join("one.png");
    let size = plot_images(&[im], &boxes, &names(3), &out, 16).unwrap();
    assert_eq!(size, (64, 64));
    let img = decode(&out);
    assert_eq!(img.dimensions(), (64, 64));
    let c = class_color(2);
    assert_eq!(c, [0xFF, 0x70, 0x1F]);
    // left and right edges, half-way down; bottom edge in the middle
    assert_eq!(img.get_pixel(10, 40).0, c);
    assert_eq!(img.get_pixel(50, 40).0, c);
    assert_eq!(img.get_pixel(30, 60).0, c);
    // inside the box: the image
    assert_eq!(img.get_pixel(30, 40).0, [114, 114, 114]);

    // a JPEG mosaic of 5 images: 3×3 grid, colours within JPEG tolerance
    let ims: Vec<ImageView> = (0..5).map(|_| im).collect();
    let mut boxes: Vec<Vec<ImageBox>> = vec![Vec::new(); 5];
    // image 4 sits in column 1, row 1 (column-major as upstream)
    boxes[4] = vec![
        ([8.0, 24.0, 56.0, 56.0], 5, Some(0.9)),
        ([20.0, 30.0, 40.0, 50.0], 0, Some(0.1)), // below 0.25: not drawn
    ];
    let out = dir.path().join("train_batch0.jpg");
    let size = plot_images(&ims, &boxes, &names(6), &out, 16).unwrap();
    assert_eq!(size, (192, 192));
    let img = decode(&out);
    assert_eq!(img.dimensions(), (192, 192));
    let near = |p: [u8; 3], q: [u8; 3]| {
        p.iter()
            .zip(q)
            .all(|(a, b)| (*a as i32 - b as i32).abs() <= 40)
    };
    let c5 = class_color(5);
    assert!(
        near(img.get_pixel(64 + 8, 64 + 40).0, c5),
        "{:?}",
        img.get_pixel(72, 104)
    );
    assert!(near(img.get_pixel(64 + 56, 64 + 40).0, c5));
    // the low-confidence box is not drawn
    assert!(near(img.get_pixel(64 + 20, 64 + 40).0, [114, 114, 114]));
    // the unused ninth cell stays white
    assert!(near(img.get_pixel(160, 160).0, [255, 255, 255]));
}

#[test]
fn plot_images_shrinks_big_mosaics_and_limits_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let px = grey_image(640, 480);
    let im = ImageView {
        width: 640,
        height: 480,
        rgb: &px,
    };
    let ims: Vec<ImageView> = (0..20).map(|_| im).collect();
    let boxes: Vec<Vec<ImageBox>> = (0..20)
        .map(|i| vec![([100.0, 100.0, 300.0, 200.0], i, None)])
        .collect();
    let out = dir.path().join("big.jpg");
    // 16 images → 4×4 cells; scale = 1920 / 4 / 640 = 0.75 → cells 480×360
    let size = plot_images(&ims, &boxes, &[], &out, 16).unwrap();
    assert_eq!(size, (1920, 1440));
    assert_eq!(decode(&out).dimensions(), (1920, 1440));
}

#[test]
fn plot_images_rejects_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bad.jpg");
    let px = vec![0u8; 10];
    let im = ImageView {
        width: 4,
        height: 4,
        rgb: &px,
    };
    let e = plot_images(&[im], &[], &[], &out, 16).unwrap_err();
    assert!(file_error_path(e).contains("bad.jpg"));
    let e = plot_images(&[], &[], &[], &out, 16).unwrap_err();
    assert!(e.to_string().contains("bad.jpg"));
    let good = grey_image(4, 4);
    let im = ImageView {
        width: 4,
        height: 4,
        rgb: &good,
    };
    let e = plot_images(&[im], &[], &[], &dir.path().join("x.gif"), 16).unwrap_err();
    assert!(e.to_string().contains("x.gif"));
    assert!(!out.exists());
}

#[test]
fn confusion_matrix_png_has_the_expected_size() {
    let dir = tempfile::tempdir().unwrap();
    let nc = 3;
    let k = nc + 1;
    let matrix: Vec<f64> = (0..k * k)
        .map(|i| if i / k == i % k { 10.0 } else { (i % 3) as f64 })
        .collect();
    let out = dir.path().join("confusion_matrix.png");
    plot_confusion_matrix(&matrix, nc, &names(nc), &out).unwrap();
    let img = decode(&out);
    assert_eq!(img.dimensions(), CONFUSION_SIZE);
    assert!(img.pixels().any(|p| p.0[2] as i32 > p.0[0] as i32 + 60)); // blue cells

    // many classes (no annotations, index labels), and the struct wrapper
    let mut cm = ConfusionMatrix::new(40);
    cm.matrix[0] = 5.0;
    cm.matrix[41 * 41 - 1] = 3.0;
    plot_confusion(&cm, &[], &out).unwrap();
    assert_eq!(decode(&out).dimensions(), CONFUSION_SIZE);

    let e = plot_confusion_matrix(&matrix[1..], nc, &names(nc), &out).unwrap_err();
    assert!(file_error_path(e).contains("confusion_matrix.png"));
}

#[test]
fn curve_plots_have_the_expected_size() {
    let dir = tempfile::tempdir().unwrap();
    let px: Vec<f64> = (0..1000).map(|i| i as f64 / 999.0).collect();
    let py: Vec<Vec<f64>> = (0..3)
        .map(|c| {
            px.iter()
                .map(|x| (1.0 - x * x) * (1.0 - 0.1 * c as f64))
                .collect()
        })
        .collect();
    let out = dir.path().join("PR_curve.png");
    plot_pr_curves(&px, &py, &[0.7, 0.6, 0.5], &names(3), &out).unwrap();
    assert_eq!(decode(&out).dimensions(), CURVE_SIZE);
    let out = dir.path().join("F1_curve.png");
    plot_metric_curve(&px, &py, &names(3), "Confidence", "F1", &out).unwrap();
    assert_eq!(decode(&out).dimensions(), CURVE_SIZE);

    // many classes: grey, unlabelled
    let many: Vec<Vec<f64>> = (0..25).map(|_| py[0].clone()).collect();
    plot_metric_curve(&px, &many, &names(25), "Confidence", "Recall", &out).unwrap();
    // no classes at all
    plot_metric_curve(&px, &[], &[], "Confidence", "Precision", &out).unwrap();

    let e = plot_pr_curves(&px, &py, &[0.7], &names(3), &out).unwrap_err();
    assert!(file_error_path(e).contains("F1_curve.png"));
    let e = plot_metric_curve(&px[1..], &py, &names(3), "Confidence", "F1", &out).unwrap_err();
    assert!(file_error_path(e).contains("F1_curve.png"));
}

#[test]
fn ap_per_class_keeps_curves_and_plot_ap_curves_writes_four_files() {
    // 2 classes, niou 1: class 0 has 3 labels, 3 detections (2 right); class 1 one label
    let conf = [0.9f32, 0.8, 0.3, 0.6];
    let pred_cls = [0.0f32, 0.0, 0.0, 1.0];
    let tp = [true, false, true, true];
    let pc = ap_per_class(&tp, 1, &conf, &pred_cls, &[0.0, 0.0, 0.0, 1.0]).unwrap();
    assert_eq!(pc.curve_x.len(), 1000);
    for curves in [&pc.pr_curve, &pc.p_curve, &pc.r_curve, &pc.f1_curve] {
        assert_eq!(curves.len(), 2);
        assert!(curves.iter().all(|c| c.len() == 1000));
    }
    // recall at confidence 0 reaches the final recall; precision at recall 0 is the envelope 1
    assert!((pc.r_curve[0][0] - 2.0 / 3.0).abs() < 1e-9);
    assert!((pc.pr_curve[0][0] - 1.0).abs() < 1e-12);
    // the best-F1 values are points of the kept curves
    let k = (0..1000)
        .find(|&k| (pc.f1_curve[0][k] - pc.f1[0]).abs() < 1e-12)
        .expect("best F1 on the curve");
    assert!((pc.p_curve[0][k] - pc.p[0]).abs() < 1e-9);

    let dir = tempfile::tempdir().unwrap();
    plot_ap_curves(&pc, &names(2), dir.path()).unwrap();
    for f in ["PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png"] {
        assert_eq!(decode(&dir.path().join(f)).dimensions(), CURVE_SIZE, "{f}");
    }
}

#[test]
fn gaussian_filter_matches_scipy() {
    // scipy.ndimage.gaussian_filter1d([0, 0, 0, 10, 0, 0, 0], 1.0): radius 4, reflected ends
    let y = gaussian_filter1d(&[0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0], 1.0);
    let want = [
        0.04566, 0.53991, 2.41971, 3.98943, 2.41971, 0.53991, 0.04566,
    ];
    for (a, b) in y.iter().zip(want) {
        assert!((a - b).abs() < 1e-4, "{y:?}");
    }
    // constant stays constant, short input reflects
    let y = gaussian_filter1d(&[2.0, 2.0], 3.0);
    assert!(y.iter().all(|v| (v - 2.0).abs() < 1e-12));
}

#[test]
fn annotate_draws_box_and_label_bar_in_class_colour() {
    let (w, h) = (200u32, 160u32);
    let grey = 90u8;
    let blank = vec![grey; (w * h * 3) as usize];
    let px = |buf: &[u8], x: u32, y: u32| {
        let i = ((y * w + x) * 3) as usize;
        [buf[i], buf[i + 1], buf[i + 2]]
    };
    let color = yolo_train::class_color(2);
    let item = |label: Option<&str>| yolo_train::Annotation {
        xyxy: [40.0, 60.0, 150.0, 140.0],
        class: 2,
        label: label.map(str::to_string),
    };

    let mut im = blank.clone();
    yolo_train::annotate(&mut im, w, h, &[item(Some("shape 0.87"))], Some(3)).unwrap();
    // the outline, 3 px wide, on all four sides; the inside untouched
    for (x, y) in [
        (40, 100),
        (42, 100),
        (150, 100),
        (148, 100),
        (95, 140),
        (95, 138),
    ] {
        assert_eq!(px(&im, x, y), color, "outline at ({x}, {y})");
    }
    assert_eq!(px(&im, 95, 100), [grey; 3], "inside the box");
    assert_eq!(px(&im, 44, 100), [grey; 3], "just inside the outline");
    // the label bar sits on top of the box: class colour with white glyph pixels in it
    let bar: Vec<[u8; 3]> = (30..60)
        .flat_map(|y| (40..100).map(move |x| (x, y)))
        .map(|(x, y)| px(&im, x, y))
        .collect();
    let coloured = bar.iter().filter(|&&p| p == color).count();
    let whiteish = bar.iter().filter(|p| p.iter().all(|&v| v > 200)).count();
    assert!(
        coloured > 200,
        "label bar: {coloured} class-coloured pixels"
    );
    assert!(whiteish > 20, "label text: {whiteish} white pixels");
    // nothing left of the box or far below it
    assert_eq!(px(&im, 10, 50), [grey; 3]);
    assert_eq!(px(&im, 100, 155), [grey; 3]);

    // hidden label: the area above the box stays as it was
    let mut plain = blank.clone();
    yolo_train::annotate(&mut plain, w, h, &[item(None)], Some(3)).unwrap();
    assert!((30..58).all(|y| (40..100).all(|x| px(&plain, x, y) == [grey; 3])));
    assert_eq!(px(&plain, 40, 100), color);

    // a box at the top edge puts its label inside the box
    let mut top = blank.clone();
    let at_top = yolo_train::Annotation {
        xyxy: [10.0, 2.0, 120.0, 100.0],
        class: 2,
        label: Some("x".into()),
    };
    yolo_train::annotate(&mut top, w, h, &[at_top], Some(2)).unwrap();
    let inside_bar = (4..14)
        .flat_map(|y| (12..18).map(move |x| (x, y)))
        .filter(|&(x, y)| px(&top, x, y) == color)
        .count();
    assert!(
        inside_bar > 20,
        "label bar inside the box: {inside_bar} coloured pixels"
    );
    assert_eq!(
        px(&blank, 14, 1),
        px(&top, 14, 0),
        "nothing drawn above the image's box"
    );

    // a buffer that is not w·h·3 bytes is an error, not a panic
    let mut short = vec![0u8; 10];
    let e = yolo_train::annotate(&mut short, w, h, &[], None).unwrap_err();
    assert!(e.to_string().contains("200×160"), "{e}");
}
