//! Optimisers against independent scalar recurrences (f64), parameter grouping, state resume.

use yolo_layers::Kind;
use yolo_tensor::{Device, Tensor};
use yolo_train::optim::{
    scaled_weight_decay, GroupSettings, Optimizer, OptimizerKind, ParamGroups, GROUP_BIAS,
    GROUP_DECAY, GROUP_NO_DECAY,
};
use yolo_train::schedule::{warmup_state, LrSchedule, WarmupHyp};

const A: [f64; 4] = [0.5, 1.5, -0.25, 2.0];
const C: [f64; 4] = [0.3, -0.7, 0.1, 0.05];
const P0: [f64; 4] = [1.0, -2.0, 0.5, 3.0];

/// The gradient both sides use: `a * p + c` (a quadratic bowl plus a tilt).
fn grad_of(p: &[f64]) -> Vec<f64> {
    p.iter()
        .zip(A.iter().zip(&C))
        .map(|(p, (a, c))| a * p + c)
        .collect()
}

fn param(v: &[f64]) -> Tensor {
    let f: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(f, &[v.len()], Device::Cpu)
        .unwrap()
        .with_grad()
}

fn set_grad(p: &Tensor) {
    let cur: Vec<f64> = p.to_vec().iter().map(|&x| x as f64).collect();
    let g: Vec<f32> = grad_of(&cur).iter().map(|&x| x as f32).collect();
    p.zero_grad();
    p.backward_with(&Tensor::from_vec(g, p.shape(), Device::Cpu).unwrap())
        .unwrap();
}

fn settings(lr: f64, momentum: f64, wd: f64) -> GroupSettings {
    GroupSettings {
        lr,
        initial_lr: lr,
        momentum,
        weight_decay: wd,
    }
}

/// Per-step (lr, momentum) so the test also covers settings changed between steps (warmup).
fn schedule(t: usize) -> (f64, f64) {
    (0.01 + 0.002 * t as f64, 0.8 + 0.03 * t as f64)
}

#[derive(Clone, Copy)]
enum Rule {
    SgdNesterov,
    Adam,
    AdamW,
}

/// Textbook recurrences in f64, one element at a time.
fn naive(rule: Rule, wd: f64, steps: usize) -> Vec<f64> {
    let mut p = P0.to_vec();
    let mut buf = [0.0f64; 4];
    let mut m1 = [0.0f64; 4];
    let mut m2 = [0.0f64; 4];
    for t in 0..steps {
        let (lr, mom) = schedule(t);
        let g = grad_of(&p);
        for i in 0..4 {
            match rule {
                Rule::SgdNesterov => {
                    let d = g[i] + wd * p[i];
                    buf[i] = mom * buf[i] + d;
                    p[i] -= lr * (d + mom * buf[i]);
                }
                Rule::Adam | Rule::AdamW => {
                    let gi = if matches!(rule, Rule::Adam) {
                        g[i] + wd * p[i]
                    } else {
                        p[i] *= 1.0 - lr * wd;
                        g[i]
                    };
                    let (b1, b2, eps) = (mom, 0.999, 1e-8);
                    m1[i] = b1 * m1[i] + (1.0 - b1) * gi;
                    m2[i] = b2 * m2[i] + (1.0 - b2) * gi * gi;
                    let n = (t + 1) as i32;
                    let mhat = m1[i] / (1.0 - b1.powi(n));
                    let vhat = m2[i] / (1.0 - b2.powi(n));
                    p[i] -= lr * mhat / (vhat.sqrt() + eps);
                }
            }
        }
    }
    p
}

fn run(kind: OptimizerKind, wd: f64, steps: usize) -> Vec<f32> {
    let p = param(&P0);
    let mut opt = Optimizer::new(
        kind,
        vec![(settings(0.0, 0.0, wd), vec![("w".to_string(), p.clone())])],
    );
    for t in 0..steps {
        let (lr, mom) = schedule(t);
        opt.set_lr(0, lr);
        opt.set_momentum(0, mom);
        set_grad(&p);
        opt.step().unwrap();
    }
    p.to_vec()
}

fn assert_close(got: &[f32], want: &[f64], what: &str) {
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let tol = 2e-5 * w.abs().max(1.0);
        assert!(
            (g as f64 - w).abs() <= tol,
            "{what}[{i}]: got {g}, want {w}; all {got:?} vs {want:?}"
        );
    }
}

#[test]
fn sgd_nesterov_matches_recurrence() {
    for wd in [0.0, 5e-4, 0.05] {
        let got = run(OptimizerKind::sgd(), wd, 5);
        assert_close(&got, &naive(Rule::SgdNesterov, wd, 5), "sgd");
    }
}

#[test]
fn adam_matches_recurrence() {
    // (wd = 0.05 would make element 2 a stationary point, g + wd * p = 0, where Adam's
    // sign-like step amplifies rounding noise.)
    for wd in [0.0, 5e-4, 0.03] {
        let got = run(OptimizerKind::adam(), wd, 5);
        assert_close(&got, &naive(Rule::Adam, wd, 5), "adam");
    }
}

#[test]
fn adamw_matches_recurrence() {
    for wd in [0.0, 0.01, 0.2] {
        let got = run(OptimizerKind::adamw(), wd, 5);
        assert_close(&got, &naive(Rule::AdamW, wd, 5), "adamw");
    }
}

#[test]
fn params_without_grad_are_untouched() {
    let p = param(&P0);
    let q = param(&P0);
    let mut opt = Optimizer::new(
        OptimizerKind::adam(),
        vec![(
            settings(0.1, 0.9, 0.0),
            vec![("p".into(), p.clone()), ("q".into(), q.clone())],
        )],
    );
    set_grad(&p);
    opt.step().unwrap();
    assert_ne!(p.to_vec(), q.to_vec());
    let f: Vec<f32> = P0.iter().map(|&x| x as f32).collect();
    assert_eq!(q.to_vec(), f);
    opt.zero_grad();
    assert!(p.grad().is_none());
    let names: Vec<String> = opt
        .state_tensors()
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert!(names.contains(&"state.p.exp_avg".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("state.q.")));
}

fn named(name: &str, shape: &[usize], kind: Kind) -> (String, Tensor, Kind) {
    (
        name.to_string(),
        Tensor::zeros(shape, Device::Cpu).unwrap(),
        kind,
    )
}

#[test]
fn smart_optimizer_grouping() {
    let model = vec![
        named("model.0.conv.weight", &[16, 3, 6, 6], Kind::Param),
        named("model.0.bn.weight", &[16], Kind::Param),
        named("model.0.bn.bias", &[16], Kind::Param),
        named("model.0.bn.running_mean", &[16], Kind::Buffer),
        named("model.0.bn.running_var", &[16], Kind::Buffer),
        named("model.1.act.p1", &[1, 16, 1, 1], Kind::Param),
        named("model.2.ia.implicit", &[1, 16, 1, 1], Kind::Param),
        named("model.24.m.0.weight", &[255, 16, 1, 1], Kind::Param),
        named("model.24.m.0.bias", &[255], Kind::Param),
        named("model.24.anchors", &[3, 3, 2], Kind::Buffer),
    ];
    let g = ParamGroups::split(model);
    let names = |v: &[(String, Tensor)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(&g.decay),
        [
            "model.0.conv.weight",
            "model.1.act.p1",
            "model.2.ia.implicit",
            "model.24.m.0.weight"
        ]
    );
    assert_eq!(names(&g.no_decay), ["model.0.bn.weight"]);
    assert_eq!(names(&g.bias), ["model.0.bn.bias", "model.24.m.0.bias"]);
    assert_eq!(g.len(), 7);

    let opt = Optimizer::smart(OptimizerKind::sgd(), g, 0.01, 0.937, 5e-4);
    let gs = opt.groups();
    assert_eq!(gs.len(), 3);
    assert_eq!(gs[GROUP_BIAS].weight_decay, 0.0);
    assert_eq!(gs[GROUP_DECAY].weight_decay, 5e-4);
    assert_eq!(gs[GROUP_NO_DECAY].weight_decay, 0.0);
    assert!(gs.iter().all(|g| g.lr == 0.01 && g.momentum == 0.937));
    assert_eq!(
        opt.param_names()[..2],
        ["model.0.bn.bias", "model.24.m.0.bias"]
    );
}

#[test]
fn weight_decay_scaling() {
    // accumulate = max(round(64 / bs), 1); wd *= bs * accumulate / 64.
    assert_eq!(scaled_weight_decay(5e-4, 64, 64), 5e-4);
    assert_eq!(scaled_weight_decay(5e-4, 16, 64), 5e-4);
    assert!((scaled_weight_decay(5e-4, 24, 64) - 5e-4 * 72.0 / 64.0).abs() < 1e-15);
    assert!((scaled_weight_decay(5e-4, 128, 64) - 1e-3).abs() < 1e-15);
    assert!((scaled_weight_decay(5e-4, 48, 64) - 5e-4 * 48.0 / 64.0).abs() < 1e-15);
}

#[test]
fn optimizer_names_parse() {
    assert_eq!(
        "SGD".parse::<OptimizerKind>().unwrap(),
        OptimizerKind::sgd()
    );
    assert_eq!(
        "Adam".parse::<OptimizerKind>().unwrap(),
        OptimizerKind::adam()
    );
    assert_eq!(
        "AdamW".parse::<OptimizerKind>().unwrap(),
        OptimizerKind::adamw()
    );
    assert!("RMSProp2".parse::<OptimizerKind>().is_err());
}

#[test]
fn warmup_sets_momentum_for_sgd_only() {
    let hyp = WarmupHyp {
        lr0: 0.01,
        momentum: 0.937,
        warmup_momentum: 0.8,
        warmup_bias_lr: 0.1,
        nbs: 64,
        batch_size: 16,
    };
    let w = warmup_state(0, 100, 0, &hyp, &LrSchedule::new(false, 10, 0.01)).unwrap();
    let make = |kind| {
        let g = ParamGroups {
            decay: vec![("w".into(), param(&P0))],
            no_decay: vec![],
            bias: vec![("b".into(), param(&P0))],
        };
        Optimizer::smart(kind, g, 0.01, 0.937, 5e-4)
    };
    let mut sgd = make(OptimizerKind::sgd());
    sgd.apply_warmup(&w);
    assert_eq!(sgd.groups()[GROUP_BIAS].lr, 0.1);
    assert_eq!(sgd.groups()[GROUP_DECAY].lr, 0.0);
    assert!(sgd.groups().iter().all(|g| g.momentum == 0.8));
    let mut adam = make(OptimizerKind::adam());
    adam.apply_warmup(&w);
    assert_eq!(adam.groups()[GROUP_BIAS].lr, 0.1);
    assert!(adam.groups().iter().all(|g| g.momentum == 0.937));
    adam.apply_lr_factor(0.5);
    assert!(adam.groups().iter().all(|g| g.lr == 0.005));
}

/// Two parameters in two groups; `steps` steps; returns the optimiser and params.
fn two_group_run(kind: OptimizerKind, steps: usize) -> (Optimizer, Tensor, Tensor) {
    let p = param(&P0);
    let q = param(&[0.25, -0.5, 1.25, -3.0]);
    let mut opt = Optimizer::new(
        kind,
        vec![
            (settings(0.013, 0.937, 5e-4), vec![("p".into(), p.clone())]),
            (settings(0.07, 0.9, 0.0), vec![("q".into(), q.clone())]),
        ],
    );
    for _ in 0..steps {
        set_grad(&p);
        set_grad(&q);
        opt.step().unwrap();
    }
    (opt, p, q)
}

#[test]
fn state_round_trip_continues_identically() {
    for kind in [
        OptimizerKind::sgd(),
        OptimizerKind::adam(),
        OptimizerKind::adamw(),
    ] {
        let (mut a, ap, aq) = two_group_run(kind, 3);
        // Odd settings must survive the round trip exactly (stored as three f32 parts).
        a.set_lr(0, 0.0123456789012345);
        a.set_momentum(1, 0.937 + 1e-12);
        let state = a.state_tensors().unwrap();

        let (mut b, bp, bq) = two_group_run(kind, 0);
        bp.assign(&ap).unwrap();
        bq.assign(&aq).unwrap();
        b.load_state_tensors(&state).unwrap();
        assert_eq!(a.groups(), b.groups());
        for _ in 0..2 {
            for t in [&ap, &aq, &bp, &bq] {
                set_grad(t);
            }
            a.step().unwrap();
            b.step().unwrap();
        }
        assert_eq!(ap.to_vec(), bp.to_vec(), "{kind:?}");
        assert_eq!(aq.to_vec(), bq.to_vec(), "{kind:?}");
    }
}

#[test]
fn state_load_rejects_foreign_entries() {
    let (sgd, _, _) = two_group_run(OptimizerKind::sgd(), 1);
    let (mut adam, _, _) = two_group_run(OptimizerKind::adam(), 0);
    assert!(adam
        .load_state_tensors(&sgd.state_tensors().unwrap())
        .is_err());
    let bad = vec![(
        "state.p.momentum_buffer".to_string(),
        Tensor::zeros(&[3], Device::Cpu).unwrap(),
    )];
    let (mut s2, _, _) = two_group_run(OptimizerKind::sgd(), 0);
    assert!(s2.load_state_tensors(&bad).is_err());
    let unknown = vec![(
        "state.nope.momentum_buffer".to_string(),
        Tensor::zeros(&[4], Device::Cpu).unwrap(),
    )];
    assert!(s2.load_state_tensors(&unknown).is_err());
}

#[test]
fn clipping_scales_the_step() {
    // SGD without momentum: the step is lr * clipped gradient.
    let p = param(&[0.0, 0.0]);
    let mut opt = Optimizer::new(
        OptimizerKind::Sgd { nesterov: false },
        vec![(settings(1.0, 0.0, 0.0), vec![("p".into(), p.clone())])],
    );
    p.backward_with(&Tensor::from_vec(vec![30.0, 40.0], &[2], Device::Cpu).unwrap())
        .unwrap();
    let norm = opt.step_clipped(10.0).unwrap();
    assert!((norm - 50.0).abs() < 1e-9);
    let v = p.to_vec();
    assert!(
        (v[0] + 6.0).abs() < 1e-4 && (v[1] + 8.0).abs() < 1e-4,
        "{v:?}"
    );
}
