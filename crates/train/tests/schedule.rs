//! LR schedules and warmup against hand-computed upstream values (np.interp, Python round).

use yolo_train::schedule::{
    interp, nominal_accumulate, warmup_iters, warmup_state, LrSchedule, WarmupHyp,
    WARMUP_MIN_ITERS_V5,
};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn linear_and_cosine_factors() {
    let lin = LrSchedule::new(false, 300, 0.01);
    assert!(close(lin.factor(0.0), 1.0));
    assert!(close(lin.factor(1.0), (1.0 - 1.0 / 300.0) * 0.99 + 0.01));
    assert!(close(lin.factor(150.0), 0.505));
    assert!(close(lin.factor(300.0), 0.01));
    let cos = LrSchedule::new(true, 300, 0.01);
    assert!(close(cos.factor(0.0), 1.0));
    assert!(close(cos.factor(150.0), 0.505));
    assert!(close(cos.factor(300.0), 0.01));
    // one_cycle at a quarter: ((1 - cos(pi/4)) / 2) * (lrf - 1) + 1.
    let q = ((1.0 - std::f64::consts::FRAC_1_SQRT_2) / 2.0) * (0.01 - 1.0) + 1.0;
    assert!(close(cos.factor(75.0), q));
}

#[test]
fn np_interp_semantics() {
    assert_eq!(interp(0.0, 150.0, 0.1, 0.2), 0.1);
    assert_eq!(interp(150.0, 150.0, 0.1, 0.2), 0.2);
    assert!(close(interp(75.0, 150.0, 1.0, 4.0), 2.5));
    assert_eq!(interp(200.0, 150.0, 1.0, 4.0), 4.0);
}

#[test]
fn warmup_length() {
    assert_eq!(warmup_iters(3.0, 50, WARMUP_MIN_ITERS_V5), 150);
    assert_eq!(warmup_iters(3.0, 20, WARMUP_MIN_ITERS_V5), 100);
    assert_eq!(warmup_iters(0.0, 500, WARMUP_MIN_ITERS_V5), 100);
    assert_eq!(warmup_iters(2.5, 41, WARMUP_MIN_ITERS_V5), 102); // round(102.5) = 102
    assert_eq!(warmup_iters(2.5, 43, WARMUP_MIN_ITERS_V5), 108); // round(107.5) = 108
    assert_eq!(nominal_accumulate(64, 16), 4);
    assert_eq!(nominal_accumulate(64, 24), 3);
    assert_eq!(nominal_accumulate(64, 256), 1);
}

fn hyp(batch_size: usize) -> WarmupHyp {
    WarmupHyp {
        lr0: 0.01,
        momentum: 0.937,
        warmup_momentum: 0.8,
        warmup_bias_lr: 0.1,
        nbs: 64,
        batch_size,
    }
}

#[test]
fn warmup_state_hand_values() {
    let lf = LrSchedule::new(false, 300, 0.01);
    let h = hyp(16);
    let nw = 150; // 3 epochs of 50 batches

    let s = warmup_state(0, nw, 0, &h, &lf).unwrap();
    assert_eq!(s.accumulate, 1);
    assert_eq!(s.lr, [0.1, 0.0, 0.0]);
    assert_eq!(s.momentum, 0.8);

    // ni = 75 (epoch 1, i = 25): halfway. accumulate interp = 2.5 → round-half-even 2.
    let s = warmup_state(75, nw, 1, &h, &lf).unwrap();
    assert_eq!(s.accumulate, 2);
    let target = 0.01 * ((1.0 - 1.0 / 300.0) * 0.99 + 0.01); // 0.009967
    assert!(close(s.lr[0], 0.1 + (target - 0.1) * 0.5));
    assert!(close(s.lr[1], target * 0.5));
    assert!(close(s.lr[2], target * 0.5));
    assert!(close(s.lr[1], 0.0049835));
    assert!(close(s.momentum, 0.8685));

    // Last warmup iteration: the targets exactly.
    let s = warmup_state(150, nw, 3, &h, &lf).unwrap();
    assert_eq!(s.accumulate, 4);
    let target = 0.01 * 0.9901;
    assert!(s.lr.iter().all(|&l| close(l, target)));
    assert_eq!(s.momentum, 0.937);

    assert!(warmup_state(151, nw, 3, &h, &lf).is_none());
}

#[test]
fn warmup_accumulate_rounding() {
    let lf = LrSchedule::new(true, 100, 0.1);
    let h = hyp(24); // nbs / bs = 2.667
    let acc = |ni| warmup_state(ni, 100, 0, &h, &lf).unwrap().accumulate;
    assert_eq!(acc(25), 1); // 1.417
    assert_eq!(acc(50), 2); // 1.833
    assert_eq!(acc(100), 3); // 2.667
    let h = hyp(128); // nbs / bs = 0.5: accumulate interp falls below 1, floored at 1
    let acc = |ni| warmup_state(ni, 100, 0, &h, &lf).unwrap().accumulate;
    assert_eq!(acc(0), 1);
    assert_eq!(acc(100), 1);
}
