//! NMS invariants under proptest: kept boxes are candidates above the threshold, sorted by
//! confidence, at most `max_det`, pairwise below the IoU threshold within a class (any class
//! when agnostic), and respect the class filter; Soft-NMS never raises a score.

use proptest::prelude::*;
use yolo_train::{box_iou, non_max_suppression_rows, NmsConfig, NmsMethod};

const NC: usize = 3;
const NO: usize = 5 + NC;

fn arb_rows() -> impl Strategy<Value = Vec<f32>> {
    prop::collection::vec(
        (
            0.0f32..100.0,
            0.0f32..100.0,
            2.0f32..40.0,
            2.0f32..40.0,
            0.0f32..1.0,
            prop::array::uniform3(0.0f32..1.0),
        ),
        0..80,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .flat_map(|(x, y, w, h, o, c)| [x, y, w, h, o, c[0], c[1], c[2]])
            .collect()
    })
}

fn check(rows: &[f32], cfg: &NmsConfig) -> Result<(), TestCaseError> {
    let n = rows.len() / NO;
    let out = non_max_suppression_rows(rows, 1, n, NO, cfg).unwrap();
    let dets = &out[0];
    prop_assert!(dets.len() <= cfg.max_det);
    for w in dets.windows(2) {
        prop_assert!(w[0][4] >= w[1][4], "not sorted by confidence");
    }
    for d in dets {
        prop_assert!(d[4] > cfg.conf_thres);
        if let Some(c) = &cfg.classes {
            prop_assert!(c.contains(&(d[5] as usize)));
        }
        // comes from an input row: same box, conf = obj × cls of its class
        let found = rows.chunks(NO).any(|r| {
            let b = [
                r[0] - r[2] / 2.0,
                r[1] - r[3] / 2.0,
                r[0] + r[2] / 2.0,
                r[1] + r[3] / 2.0,
            ];
            b == [d[0], d[1], d[2], d[3]] && r[4] * r[5 + d[5] as usize] == d[4]
        });
        prop_assert!(found, "detection {:?} is not a candidate", d);
    }
    if cfg.method == NmsMethod::Standard {
        let boxes: Vec<[f32; 4]> = dets.iter().map(|d| [d[0], d[1], d[2], d[3]]).collect();
        let iou = box_iou(&boxes, &boxes);
        for i in 0..dets.len() {
            for j in i + 1..dets.len() {
                if cfg.agnostic || dets[i][5] == dets[j][5] {
                    prop_assert!(
                        iou[i * dets.len() + j] <= cfg.iou_thres + 1e-5,
                        "kept pair overlaps: {}",
                        iou[i * dets.len() + j]
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn standard_nms_invariants(rows in arb_rows(), conf in 0.0f32..0.6, iou in 0.1f32..0.9,
                               agnostic: bool, multi_label: bool, max_det in 1usize..30) {
        let cfg = NmsConfig { conf_thres: conf, iou_thres: iou, agnostic, multi_label, max_det,
                              ..Default::default() };
        check(&rows, &cfg)?;
        let filtered = NmsConfig { classes: Some(vec![0, 2]), ..cfg };
        check(&rows, &filtered)?;
    }

    #[test]
    fn nms_is_idempotent_on_its_output(rows in arb_rows(), iou in 0.1f32..0.9) {
        let cfg = NmsConfig { conf_thres: 0.1, iou_thres: iou, ..Default::default() };
        let n = rows.len() / NO;
        let once = non_max_suppression_rows(&rows, 1, n, NO, &cfg).unwrap();
        // feed the kept boxes back as one-hot rows with objectness = confidence
        let again: Vec<f32> = once[0].iter().flat_map(|d| {
            let mut r = vec![(d[0] + d[2]) / 2.0, (d[1] + d[3]) / 2.0, d[2] - d[0], d[3] - d[1], d[4]];
            r.extend((0..NC).map(|c| if c == d[5] as usize { 1.0 } else { 0.0 }));
            r
        }).collect();
        let twice = non_max_suppression_rows(&again, 1, once[0].len(), NO, &cfg).unwrap();
        prop_assert_eq!(once[0].len(), twice[0].len());
    }

    #[test]
    fn soft_and_diou_nms_invariants(rows in arb_rows(), iou in 0.1f32..0.9, sigma in 0.1f32..1.0) {
        for method in [NmsMethod::DIoU, NmsMethod::SoftLinear { score_thres: 0.05 },
                       NmsMethod::SoftGaussian { sigma, score_thres: 0.05 }] {
            let cfg = NmsConfig { conf_thres: 0.1, iou_thres: iou, method, ..Default::default() };
            let n = rows.len() / NO;
            let out = non_max_suppression_rows(&rows, 1, n, NO, &cfg).unwrap();
            let std = non_max_suppression_rows(&rows, 1, n, NO,
                &NmsConfig { method: NmsMethod::Standard, ..cfg.clone() }).unwrap();
            for w in out[0].windows(2) { prop_assert!(w[0][4] >= w[1][4]); }
            for d in &out[0] { prop_assert!(d[4] <= 1.0 && d[4] > 0.0); }
            // DIoU ≤ IoU, so DIoU-NMS suppresses no more than standard NMS
            if method == NmsMethod::DIoU { prop_assert!(out[0].len() >= std[0].len()); }
        }
    }
}
