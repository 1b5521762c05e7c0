//! ComputeLossOta equals upstream YOLOv7 `ComputeLossOTA` (fixture from
//! `tools/make_ota_fixtures.py`: float64 PyTorch on the same float32 predictions): the SimOTA
//! assignment exactly, the loss components to 1e-5 relative, and the gradient w.r.t. every
//! prediction level with the bound of `tests/parity.rs`: per element, relative to
//! max(|reference|, 1e-3 · the level's largest gradient), below max(1e-5, 1.5 × PyTorch's own
//! float32 error on the same inputs, recorded as `<case>.f32_err`).

mod common;
use common::*;
use safetensors::SafeTensors;
use yolo_losses::ComputeLossOta;

fn img_size(st: &SafeTensors<'_>) -> [usize; 2] {
    let (v, _) = f64s(st, "img_size");
    [v[0] as usize, v[1] as usize]
}

#[test]
fn ota_assignment_matches_upstream() {
    let bytes = load("compute_loss_ota.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let loss = ComputeLossOta::new(spec(&st), hyp(&st, "a")).unwrap();
    let (t, _) = f64s(&st, "targets");
    let rows: Vec<[f32; 6]> = t
        .chunks(6)
        .map(|c| std::array::from_fn(|k| c[k] as f32))
        .collect();
    let built = loss
        .build_targets(&preds(&st), &rows, img_size(&st))
        .unwrap();
    let mut total = 0;
    for (i, lt) in built.iter().enumerate() {
        let (idx, s) = f64s(&st, &format!("asg.{i}.idx"));
        eprintln!("level {i}: {} matched (upstream {})", lt.len(), s[0]);
        assert_eq!(lt.len(), s[0], "level {i}: number of matched predictions");
        total += lt.len();
        for k in 0..lt.len() {
            let ours = [lt.b[k], lt.a[k], lt.gj[k], lt.gi[k], lt.cls[k]];
            let theirs: Vec<usize> = idx[k * 5..k * 5 + 5].iter().map(|&x| x as usize).collect();
            assert_eq!(ours.to_vec(), theirs, "level {i} row {k}");
        }
    }
    assert!(
        total >= rows.len(),
        "{total} matches for {} targets",
        rows.len()
    );
}

fn check_case(case: &str) {
    let bytes = load("compute_loss_ota.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let loss = ComputeLossOta::new(spec(&st), hyp(&st, case)).unwrap();
    let p = preds(&st);
    let out = loss.forward(&p, &targets(&st), img_size(&st)).unwrap();
    check_loss_output(&st, case, &out, &p);
}

#[test]
fn compute_loss_ota_matches_upstream_scratch_p5() {
    check_case("a");
}

#[test]
fn compute_loss_ota_matches_upstream_focal_smoothing_pos_weight() {
    check_case("b");
}

#[test]
fn ota_rejects_bad_inputs() {
    let bytes = load("compute_loss_ota.safetensors");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let loss = ComputeLossOta::new(spec(&st), hyp(&st, "a")).unwrap();
    let p = preds(&st);
    // image index beyond the batch
    let bad = [[5.0, 0.0, 0.5, 0.5, 0.1, 0.1]];
    assert!(loss.forward_rows(&p, &bad, [128, 128]).is_err());
    // class beyond nc
    let bad = [[0.0, 7.0, 0.5, 0.5, 0.1, 0.1]];
    assert!(loss.forward_rows(&p, &bad, [128, 128]).is_err());
    // wrong number of levels
    assert!(loss.forward_rows(&p[..2], &[], [128, 128]).is_err());
    // no targets: objectness loss only
    let out = loss.forward_rows(&p, &[], [128, 128]).unwrap();
    assert_eq!(out.lbox, 0.0);
    assert_eq!(out.lcls, 0.0);
    assert!(out.lobj > 0.0);
}
