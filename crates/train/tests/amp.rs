//! The dynamic loss scaler (upstream `GradScaler`) on the CPU: growth after N finite steps,
//! backoff and a skipped step on an inf gradient, exact unscaling, and training steps with the
//! scaler equal to the same steps without it, bit for bit (the scale is a power of two).

use yolo_models::{Model, ModelConfig};
use yolo_tensor::{Device, Tensor};
use yolo_train::amp::{BACKOFF_FACTOR, GROWTH_FACTOR, GROWTH_INTERVAL, INIT_SCALE};
use yolo_train::optim::{Optimizer, OptimizerKind, ParamGroups};
use yolo_train::{Criterion, GradScaler, Hyp, ScalerState};

use yolo_testutil::root;

fn yolov5n(seed: u64) -> Model {
    let cfg = ModelConfig::from_file(root().join("configs/models/yolov5n.yaml")).unwrap();
    Model::new(ModelConfig { nc: 3, ..cfg }, seed).unwrap()
}

fn batch() -> (Tensor, Tensor) {
    let n = 2 * 3 * 64 * 64;
    let x = Tensor::from_vec(
        (0..n).map(|i| ((i * 31) % 97) as f32 / 97.0).collect(),
        &[2, 3, 64, 64],
        Device::Cpu,
    )
    .unwrap();
    let t = Tensor::from_vec(
        vec![
            0.0, 0.0, 0.3, 0.3, 0.25, 0.3, //
            0.0, 2.0, 0.7, 0.6, 0.3, 0.2, //
            1.0, 1.0, 0.5, 0.5, 0.4, 0.4,
        ],
        &[3, 6],
        Device::Cpu,
    )
    .unwrap();
    (x, t)
}

fn sgd(model: &Model) -> Optimizer {
    Optimizer::smart(
        OptimizerKind::sgd(),
        ParamGroups::split(model.named_tensors()),
        0.02,
        0.9,
        0.0005,
    )
}

fn values(model: &Model) -> Named {
    model
        .named_tensors()
        .into_iter()
        .map(|(n, t, _)| (n, t.to_vec()))
        .collect()
}

#[test]
fn defaults_are_upstreams() {
    assert_eq!(INIT_SCALE, 65536.0);
    assert_eq!((GROWTH_FACTOR, BACKOFF_FACTOR), (2.0, 0.5));
    assert_eq!(GROWTH_INTERVAL, 2000);
    let s = GradScaler::new(true);
    assert_eq!(s.scale(), 65536.0);
    let off = GradScaler::new(false);
    assert_eq!(off.scale(), 1.0);
    assert_eq!(off.state(), None);
    for bad in [
        GradScaler::with_settings(0.0, 2.0, 0.5, 10),
        GradScaler::with_settings(f32::INFINITY, 2.0, 0.5, 10),
        GradScaler::with_settings(1.0, 1.0, 0.5, 10),
        GradScaler::with_settings(1.0, 2.0, 1.0, 10),
        GradScaler::with_settings(1.0, 2.0, 0.5, 0),
    ] {
        assert!(bad.is_err());
    }
}

#[test]
fn the_scale_grows_after_growth_interval_finite_steps() {
    let mut s = GradScaler::new(true);
    for k in 1..GROWTH_INTERVAL {
        s.update(false);
        assert_eq!(s.scale(), 65536.0, "no growth after {k} steps");
        assert_eq!(s.growth_tracker(), k);
    }
    s.update(false);
    assert_eq!(
        s.scale(),
        131072.0,
        "×2 after {GROWTH_INTERVAL} finite steps"
    );
    assert_eq!(s.growth_tracker(), 0);
    // an overflow halves the scale and restarts the count
    for _ in 0..5 {
        s.update(false);
    }
    s.update(true);
    assert_eq!((s.scale(), s.growth_tracker()), (65536.0, 0));
    let mut s = GradScaler::with_settings(8.0, 2.0, 0.5, 3).unwrap();
    for want in [8.0, 8.0, 16.0, 16.0, 16.0, 32.0] {
        s.update(false);
        assert_eq!(s.scale(), want);
    }
    // a disabled scaler never changes
    let mut off = GradScaler::new(false);
    off.update(true);
    off.update(false);
    assert_eq!(off.scale(), 1.0);
}

#[test]
fn an_inf_gradient_skips_the_step_drops_the_grads_and_backs_off() {
    let p = Tensor::from_vec(vec![1.0, 2.0, 3.0], &[3], Device::Cpu)
        .unwrap()
        .with_grad();
    let q = Tensor::from_vec(vec![0.5, -0.5], &[2], Device::Cpu)
        .unwrap()
        .with_grad();
    let mut opt = Optimizer::new(
        OptimizerKind::sgd(),
        vec![(
            yolo_train::GroupSettings {
                lr: 0.1,
                initial_lr: 0.1,
                momentum: 0.9,
                weight_decay: 0.0,
            },
            vec![("p".into(), p.clone()), ("q".into(), q.clone())],
        )],
    );
    let mut scaler = GradScaler::new(true);
    // loss = Σ p·c + Σ q: one inf coefficient makes that gradient inf
    let c = Tensor::from_vec(vec![1.0, f32::INFINITY, 1.0], &[3], Device::Cpu).unwrap();
    let loss = p
        .mul(&c)
        .unwrap()
        .sum_all()
        .unwrap()
        .add(&q.sum_all().unwrap())
        .unwrap();
    scaler.scale_loss(&loss).backward().unwrap();
    assert!(p.grad().unwrap().to_vec().iter().any(|g| g.is_infinite()));
    let r = scaler.step_clipped(&mut opt, 10.0).unwrap();
    assert!(r.skipped && !r.grad_norm.is_finite(), "{r:?}");
    assert_eq!(p.to_vec(), vec![1.0, 2.0, 3.0], "p not stepped");
    assert_eq!(
        q.to_vec(),
        vec![0.5, -0.5],
        "q (finite grad) not stepped either"
    );
    assert!(p.grad().is_none() && q.grad().is_none(), "grads dropped");
    assert!(
        opt.state_tensors()
            .unwrap()
            .iter()
            .all(|(n, _)| !n.contains("momentum_buffer")),
        "no momentum state after a skipped step"
    );
    assert_eq!(scaler.scale(), 32768.0);
    assert_eq!(scaler.growth_tracker(), 0);
    // a NaN as well
    let nan = Tensor::from_vec(vec![f32::NAN; 2], &[2], Device::Cpu).unwrap();
    scaler
        .scale_loss(&q.mul(&nan).unwrap().sum_all().unwrap())
        .backward()
        .unwrap();
    assert!(scaler.step_clipped(&mut opt, 10.0).unwrap().skipped);
    assert_eq!(scaler.scale(), 16384.0);
    // the next finite step runs, unscaled: SGD from zero momentum moves q by lr·grad = 0.1
    scaler.scale_loss(&q.sum_all().unwrap()).backward().unwrap();
    let r = scaler.step_clipped(&mut opt, 10.0).unwrap();
    assert!(!r.skipped);
    assert_eq!(r.grad_norm, 2f64.sqrt(), "norm of the unscaled gradient");
    opt.zero_grad();
    // nesterov SGD from zero momentum: d = g + m·g = 1.9
    let want: Vec<f32> = [0.5f32, -0.5].iter().map(|v| v - 0.1 * 1.9).collect();
    assert_eq!(q.to_vec(), want);
    assert_eq!(scaler.growth_tracker(), 1);
}

#[test]
fn unscaled_gradients_equal_those_of_the_unscaled_loss() {
    let (x, t) = batch();
    let model = yolov5n(4);
    let crit = Criterion::new(&model, &Hyp::default(), 64, false).unwrap();
    let opt = sgd(&model);
    let params = model.parameters();

    let loss = crit
        .loss(&model.forward(&x, true).unwrap(), &t, [64, 64])
        .unwrap();
    loss.total.backward().unwrap();
    let plain: Vec<Vec<f32>> = params.iter().map(|p| p.grad().unwrap().to_vec()).collect();
    let plain_norm = opt.grad_norm();
    opt.zero_grad();

    let scaler = GradScaler::new(true);
    let loss2 = crit
        .loss(&model.forward(&x, true).unwrap(), &t, [64, 64])
        .unwrap();
    assert_eq!(loss.total.item().unwrap(), loss2.total.item().unwrap());
    scaler.scale_loss(&loss2.total).backward().unwrap();
    let inv = 1.0 / scaler.scale();
    let mut nonzero = 0;
    for (p, want) in params.iter().zip(&plain) {
        let scaled = p.grad().unwrap().to_vec();
        let unscaled: Vec<f32> = scaled.iter().map(|g| g * inv).collect();
        assert_eq!(&unscaled, want, "unscaled gradient equals the plain one");
        nonzero += scaled.iter().filter(|g| **g != 0.0).count();
        // and really was scaled
        if let Some((s, w)) = scaled.iter().zip(want).find(|(_, w)| **w != 0.0) {
            assert_eq!(*s, w * 65536.0);
        }
    }
    assert!(nonzero > 1000, "gradients flowed: {nonzero}");
    assert_eq!(opt.grad_norm_unscaled(inv), plain_norm);
    assert_eq!(opt.grad_norm(), plain_norm * 65536.0);
}

/// Tensor values by name.
type Named = Vec<(String, Vec<f32>)>;

/// Runs `steps` training steps (clipping at `max_norm`) with or without a scaler.
fn train_steps(
    scaled: bool,
    kind: OptimizerKind,
    max_norm: f64,
    steps: usize,
) -> (Vec<f32>, Vec<f64>, Named) {
    let (x, t) = batch();
    let model = yolov5n(7);
    let crit = Criterion::new(&model, &Hyp::default(), 64, false).unwrap();
    let mut opt = Optimizer::smart(
        kind,
        ParamGroups::split(model.named_tensors()),
        0.01,
        0.9,
        5e-4,
    );
    let mut scaler = GradScaler::new(scaled);
    let (mut losses, mut norms) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let l = crit
            .loss(&model.forward(&x, true).unwrap(), &t, [64, 64])
            .unwrap();
        losses.push(l.total.item().unwrap());
        scaler.scale_loss(&l.total).backward().unwrap();
        let r = scaler.step_clipped(&mut opt, max_norm).unwrap();
        assert!(!r.skipped);
        norms.push(r.grad_norm);
        opt.zero_grad();
    }
    assert_eq!(
        scaler.growth_tracker() as usize,
        if scaled { steps } else { 0 }
    );
    (losses, norms, values(&model))
}

#[test]
fn training_steps_with_the_scaler_equal_those_without_bit_for_bit() {
    // clipping off (10: upstream's bound) and on (0.05: every step clipped), SGD and AdamW
    for (kind, max_norm) in [
        (OptimizerKind::sgd(), 10.0),
        (OptimizerKind::sgd(), 0.05),
        (OptimizerKind::adamw(), 0.05),
    ] {
        let (l0, n0, v0) = train_steps(false, kind, max_norm, 3);
        let (l1, n1, v1) = train_steps(true, kind, max_norm, 3);
        assert_eq!(l0, l1, "{kind:?}: losses");
        assert_eq!(n0, n1, "{kind:?}: unscaled norms");
        if max_norm < 1.0 {
            assert!(
                n0.iter().all(|n| *n > max_norm),
                "clipping was active: {n0:?}"
            );
        }
        assert!(l0[2] != l0[0], "the steps changed the model");
        for ((n, a), (_, b)) in v0.iter().zip(&v1) {
            assert_eq!(a, b, "{kind:?}: `{n}` after 3 steps");
        }
    }
}

#[test]
fn scaler_state_round_trips_and_rejects_nonsense() {
    let mut s = GradScaler::new(true);
    for _ in 0..7 {
        s.update(false);
    }
    s.update(true);
    s.update(false);
    let st = s.state().unwrap();
    assert_eq!(
        st,
        ScalerState {
            scale: 32768.0,
            growth_tracker: 1
        }
    );
    let json = serde_json::to_string(&st).unwrap();
    let back: ScalerState = serde_json::from_str(&json).unwrap();
    let mut r = GradScaler::new(true);
    r.load_state(&back).unwrap();
    assert_eq!(r, s);
    for bad in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        let e = r.load_state(&ScalerState {
            scale: bad,
            growth_tracker: 0,
        });
        assert!(e.is_err(), "{bad}");
    }
    assert_eq!(r, s, "a rejected state changes nothing");
}

fn checkpoint_tensors(path: &std::path::Path) -> Named {
    let ck = yolo_train::Checkpoint::load(path).unwrap();
    let mut v: Vec<(String, Vec<f32>)> = ck
        .ema
        .iter()
        .chain(&ck.model)
        .chain(&ck.optimizer)
        .map(|(n, t)| (n.clone(), t.to_vec()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn amp_on_the_cpu_trains_in_f32_exactly_as_without() {
    let dir = yolo_testutil::sample_copy("amp-cpu");
    let opts = |amp: bool, name: &str| yolo_train::TrainOptions {
        data: dir.join("data/data.yaml"),
        cfg: Some(root().join("configs/models/yolov5n.yaml")),
        epochs: 1,
        batch_size: 4,
        imgsz: 64,
        workers: 1,
        save_dir: dir.join(name),
        seed: 3,
        noautoanchor: true,
        progress: false,
        plots: false,
        amp,
        ..yolo_train::TrainOptions::default()
    };
    let a = yolo_train::train(&opts(false, "f32"), None).unwrap();
    let b = yolo_train::train(&opts(true, "amp"), None).unwrap();
    assert!(
        !yolo_tensor::mixed_precision(),
        "never switched on for the CPU"
    );
    assert_eq!(a.epochs[0].train_loss, b.epochs[0].train_loss);
    let (ta, tb) = (checkpoint_tensors(&a.last), checkpoint_tensors(&b.last));
    assert!(ta.len() > 100);
    assert_eq!(ta, tb, "no loss scaling on the CPU");
    let opt_yaml = std::fs::read_to_string(dir.join("amp/opt.yaml")).unwrap();
    assert!(opt_yaml.contains("amp: true"), "{opt_yaml}");
    // the run's state holds no scaler (nothing was scaled)
    let ck = yolo_train::Checkpoint::load(&b.last).unwrap();
    assert!(ck.state.get("scaler").is_none(), "{}", ck.state);
    if yolo_tensor::cuda_device_count() == 0 {
        // a CUDA device without a GPU is a clear error, not a panic
        let e = yolo_train::train(
            &yolo_train::TrainOptions {
                device: Device::Cuda(0),
                ..opts(true, "cuda")
            },
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("cuda:0"), "{e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
