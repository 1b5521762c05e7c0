//! YOLOv7 blocks: RepConv and IDetect fusing, ReOrg order, pool and DownC shapes, and
//! finite-difference gradient checks of RepConv and the implicit layers in training mode.

use yolo_activations::Activation;
use yolo_layers::{
    count_params, mp, named_tensors, sp, Act, BatchNorm2d, Ctx, DownC, IAuxDetect, IDetect,
    ImplicitA, ImplicitM, Init, Layer, Module, ReOrg, RepConv, Shortcut, Sppcspc,
};
use yolo_tensor::Tensor;

use yolo_testutil::{gradcheck_wrt, t, uniform, SMOOTH};

fn rand_t(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    t(uniform(shape.iter().product(), lo, hi, seed), shape)
}

/// Asserts `a` and `b` agree to `tol`, relative to max(1, |value|).
fn assert_close(name: &str, a: &[f32], b: &[f32], tol: f32) {
    assert_eq!(a.len(), b.len(), "{name}: lengths");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let bound = tol * x.abs().max(y.abs()).max(1.0);
        assert!((x - y).abs() <= bound, "{name}[{i}]: {x} vs {y}");
    }
}

/// Gives a BN non-trivial statistics and affine parameters.
fn randomise_bn(bn: &BatchNorm2d, seed: u64) {
    let c = bn.weight.numel();
    bn.weight.assign(&rand_t(&[c], 0.5, 1.5, seed)).unwrap();
    bn.bias.assign(&rand_t(&[c], -0.5, 0.5, seed + 1)).unwrap();
    bn.running_mean
        .assign(&rand_t(&[c], -0.3, 0.3, seed + 2))
        .unwrap();
    bn.running_var
        .assign(&rand_t(&[c], 0.5, 2.0, seed + 3))
        .unwrap();
}

fn randomise_repconv(r: &RepConv, seed: u64) {
    randomise_bn(&r.rbr_dense.as_ref().unwrap().bn, seed);
    randomise_bn(&r.rbr_1x1.as_ref().unwrap().bn, seed + 10);
    if let Some(bn) = &r.rbr_identity {
        randomise_bn(bn, seed + 20);
    }
}

fn names(l: &dyn Layer) -> Vec<(String, Vec<usize>)> {
    named_tensors(l, "")
        .into_iter()
        .map(|(n, t, _)| (n, t.shape().to_vec()))
        .collect()
}

/// Eval-mode BN of one value: (x − mean)/√(var + eps)·γ + β.
fn bn_ref(bn: &BatchNorm2d, c: usize, x: f32) -> f32 {
    let (g, b) = (bn.weight.to_vec()[c], bn.bias.to_vec()[c]);
    let (m, v) = (bn.running_mean.to_vec()[c], bn.running_var.to_vec()[c]);
    (x - m) / (v + bn.eps).sqrt() * g + b
}

#[test]
fn repconv_matches_a_naive_three_branch_sum_and_fuses_exactly() {
    // No activation, so the reference is plain arithmetic.
    let ctx = Ctx::new(3, Activation::Silu);
    let (c, h, w) = (3usize, 5usize, 4usize);
    let mut r = RepConv::new(c, c, 3, 1, None, 1, Act::Off, &ctx).unwrap();
    randomise_repconv(&r, 100);
    assert!(
        r.rbr_identity.is_some(),
        "c1 == c2, s == 1 has the identity branch"
    );
    let x = rand_t(&[2, c, h, w], -1.0, 1.0, 7);
    let y = r.forward(&x, false).unwrap();
    assert_eq!(y.shape(), &[2, c, h, w]);

    let xv = x.to_vec();
    let dense = r.rbr_dense.as_ref().unwrap();
    let one = r.rbr_1x1.as_ref().unwrap();
    let (w3, w1) = (dense.conv.weight.to_vec(), one.conv.weight.to_vec());
    let id = r.rbr_identity.as_ref().unwrap();
    let at = |n: usize, ci: usize, i: isize, j: isize| -> f32 {
        if i < 0 || j < 0 || i >= h as isize || j >= w as isize {
            0.0
        } else {
            xv[((n * c + ci) * h + i as usize) * w + j as usize]
        }
    };
    let mut want = vec![0.0f32; 2 * c * h * w];
    for n in 0..2 {
        for co in 0..c {
            for i in 0..h {
                for j in 0..w {
                    let (mut s3, mut s1) = (0.0f32, 0.0f32);
                    for ci in 0..c {
                        for ki in 0..3 {
                            for kj in 0..3 {
                                s3 += w3[((co * c + ci) * 3 + ki) * 3 + kj]
                                    * at(
                                        n,
                                        ci,
                                        i as isize + ki as isize - 1,
                                        j as isize + kj as isize - 1,
                                    );
                            }
                        }
                        s1 += w1[co * c + ci] * at(n, ci, i as isize, j as isize);
                    }
                    want[((n * c + co) * h + i) * w + j] = bn_ref(&dense.bn, co, s3)
                        + bn_ref(&one.bn, co, s1)
                        + bn_ref(id, co, at(n, co, i as isize, j as isize));
                }
            }
        }
    }
    assert_close("RepConv branches", &y.to_vec(), &want, 1e-5);

    r.fuse().unwrap();
    let yf = r.forward(&x, false).unwrap();
    assert_close("RepConv fused", &yf.to_vec(), &want, 1e-5);
}

#[test]
fn repconv_fuse_gives_identical_outputs_and_upstream_names() {
    let ctx = Ctx::new(11, Activation::Silu);
    // (c1, c2, stride): with the identity branch, without (c1 ≠ c2), and strided.
    for (c1, c2, s, seed) in [(8, 8, 1, 1u64), (6, 10, 1, 2), (8, 8, 2, 3)] {
        let mut r = RepConv::new(c1, c2, 3, s, None, 1, Act::Default, &ctx).unwrap();
        randomise_repconv(&r, 40 + seed);
        let has_id = c1 == c2 && s == 1;
        assert_eq!(r.rbr_identity.is_some(), has_id);
        let mut want_names = vec![];
        if has_id {
            for n in ["weight", "bias", "running_mean", "running_var"] {
                want_names.push((format!("rbr_identity.{n}"), vec![c1]));
            }
        }
        for (branch, k) in [("rbr_dense", 3), ("rbr_1x1", 1)] {
            want_names.push((format!("{branch}.0.weight"), vec![c2, c1, k, k]));
            for n in ["weight", "bias", "running_mean", "running_var"] {
                want_names.push((format!("{branch}.1.{n}"), vec![c2]));
            }
        }
        assert_eq!(names(&r), want_names, "RepConv({c1}, {c2}, s={s}) names");
        let bn_params = 2 * c2 * 2 + if has_id { 2 * c1 } else { 0 };
        assert_eq!(
            count_params(&r),
            c2 * c1 * 9 + c2 * c1 + bn_params,
            "train-time parameters"
        );

        let x = rand_t(&[2, c1, 9, 7], -2.0, 2.0, seed);
        let y = r.forward(&x, false).unwrap();
        r.fuse().unwrap();
        assert_eq!(
            names(&r),
            vec![
                ("rbr_reparam.weight".to_string(), vec![c2, c1, 3, 3]),
                ("rbr_reparam.bias".to_string(), vec![c2]),
            ]
        );
        assert_eq!(count_params(&r), c2 * c1 * 9 + c2, "fused parameters");
        let yf = r.forward(&x, false).unwrap();
        assert_eq!(yf.shape(), y.shape());
        assert_eq!(y.shape(), &[2, c2, 9usize.div_ceil(s), 7usize.div_ceil(s)]);
        assert_close("RepConv fuse", &yf.to_vec(), &y.to_vec(), 1e-5);
        // A second fuse is a no-op.
        r.fuse().unwrap();
        assert_close(
            "RepConv fuse twice",
            &r.forward(&x, false).unwrap().to_vec(),
            &y.to_vec(),
            1e-5,
        );
    }
}

fn randomise_implicit(ia: &[ImplicitA], im: &[ImplicitM], seed: u64) {
    for (i, a) in ia.iter().enumerate() {
        let s = a.implicit.shape().to_vec();
        a.implicit
            .assign(&rand_t(&s, -0.5, 0.5, seed + i as u64))
            .unwrap();
    }
    for (i, m) in im.iter().enumerate() {
        let s = m.implicit.shape().to_vec();
        m.implicit
            .assign(&rand_t(&s, 0.5, 1.5, seed + 50 + i as u64))
            .unwrap();
    }
}

#[test]
fn idetect_applies_implicit_layers_and_fuses_exactly() {
    let ctx = Ctx::new(5, Activation::Silu);
    let anchors = vec![vec![10.0, 13.0, 16.0, 30.0], vec![30.0, 61.0, 62.0, 45.0]];
    let (nc, na) = (3usize, 2usize);
    let no = nc + 5;
    let mut d = IDetect::new(nc, &anchors, &[4, 6], &ctx).unwrap();
    d.set_head_strides(vec![8.0, 16.0], true).unwrap().unwrap();
    randomise_implicit(d.ia(), d.im(), 300);
    let want_names: Vec<(String, Vec<usize>)> = vec![
        ("anchors".into(), vec![2, na, 2]),
        ("m.0.weight".into(), vec![na * no, 4, 1, 1]),
        ("m.0.bias".into(), vec![na * no]),
        ("m.1.weight".into(), vec![na * no, 6, 1, 1]),
        ("m.1.bias".into(), vec![na * no]),
        ("ia.0.implicit".into(), vec![1, 4, 1, 1]),
        ("ia.1.implicit".into(), vec![1, 6, 1, 1]),
        ("im.0.implicit".into(), vec![1, na * no, 1, 1]),
        ("im.1.implicit".into(), vec![1, na * no, 1, 1]),
    ];
    assert_eq!(names(&d), want_names);
    // Anchors are in grid units once the strides are set.
    assert_eq!(
        d.det.anchors.to_vec(),
        vec![1.25, 1.625, 2.0, 3.75, 1.875, 3.8125, 3.875, 2.8125]
    );
    let params = count_params(&d);
    assert_eq!(
        params,
        (4 + 6) * na * no + 2 * na * no + 4 + 6 + 2 * na * no
    );

    let xs = [
        rand_t(&[2, 4, 8, 8], -1.0, 1.0, 1),
        rand_t(&[2, 6, 4, 4], -1.0, 1.0, 2),
    ];
    let out = d.forward_levels(&xs, false).unwrap();
    assert_eq!(out.raw[0].shape(), &[2, na, 8, 8, no]);
    assert_eq!(out.raw[1].shape(), &[2, na, 4, 4, no]);
    assert_eq!(out.pred.as_ref().unwrap().shape(), &[2, na * (64 + 16), no]);
    assert!(out.aux.is_empty());

    // Naive level 1 at (n=1, anchor a, y=2, x=3, output k): im·(W·(x + ia) + b).
    let (w, b) = (
        d.det.m[1].weight.to_vec(),
        d.det.m[1].bias.as_ref().unwrap().to_vec(),
    );
    let (ia, im) = (d.ia()[1].implicit.to_vec(), d.im()[1].implicit.to_vec());
    let x1 = xs[1].to_vec();
    let raw1 = out.raw[1].to_vec();
    for a in 0..na {
        for k in 0..no {
            let o = a * no + k;
            let mut s = b[o];
            for ci in 0..6 {
                s += w[o * 6 + ci] * (x1[((6 + ci) * 4 + 2) * 4 + 3] + ia[ci]);
            }
            let got = raw1[(((na + a) * 4 + 2) * 4 + 3) * no + k];
            assert!(
                (got - s * im[o]).abs() < 1e-5,
                "level 1 [{a},{k}]: {got} vs {}",
                s * im[o]
            );
        }
    }

    d.fuse_layer().unwrap();
    assert!(d.is_fused());
    // Upstream keeps ia/im as parameters after folding them.
    assert_eq!(count_params(&d), params);
    let fused = d.forward_levels(&xs, false).unwrap();
    for (i, (a, b)) in fused.raw.iter().zip(&out.raw).enumerate() {
        assert_close(&format!("IDetect raw {i}"), &a.to_vec(), &b.to_vec(), 1e-5);
    }
    assert_close(
        "IDetect pred",
        &fused.pred.unwrap().to_vec(),
        &out.pred.unwrap().to_vec(),
        1e-5,
    );
    // Training mode gives the same raw levels, and no decoded boxes.
    let tr = d.forward_levels(&xs, true).unwrap();
    assert!(tr.pred.is_none());
    assert_close(
        "IDetect train raw",
        &tr.raw[0].to_vec(),
        &out.raw[0].to_vec(),
        1e-5,
    );
}

#[test]
fn iauxdetect_runs_aux_levels_until_fused() {
    let ctx = Ctx::new(9, Activation::Silu);
    let anchors = vec![vec![10.0, 13.0], vec![30.0, 61.0]];
    let (nc, na) = (2usize, 1usize);
    let no = nc + 5;
    assert!(IAuxDetect::new(nc, &anchors, &[4, 6, 5], &ctx).is_err());
    let mut d = IAuxDetect::new(nc, &anchors, &[4, 6, 3, 5], &ctx).unwrap();
    d.set_head_strides(vec![8.0, 16.0], true).unwrap().unwrap();
    randomise_implicit(d.ia(), d.im(), 700);
    let n: Vec<String> = names(&d).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        n,
        [
            "anchors",
            "m.0.weight",
            "m.0.bias",
            "m.1.weight",
            "m.1.bias",
            "m2.0.weight",
            "m2.0.bias",
            "m2.1.weight",
            "m2.1.bias",
            "ia.0.implicit",
            "ia.1.implicit",
            "im.0.implicit",
            "im.1.implicit"
        ]
    );
    assert_eq!(d.m2[0].weight.shape(), &[na * no, 3, 1, 1]);
    // Bias priors on main and auxiliary convs alike: objectness log(8 / (640 / s)²).
    let prior = (8.0f64 / (640.0f64 / 16.0).powi(2)).ln() as f32;
    // (before the prior, a bias is U(±1/√fan_in) with fan_in = 5 here).
    let b2 = d.m2[1].bias.as_ref().unwrap().to_vec();
    assert!(
        (b2[4] - prior).abs() <= 1.0 / 5f32.sqrt() + 1e-6,
        "{} vs prior {prior}",
        b2[4]
    );
    let cls = (0.6f64 / (nc as f64 - 0.99)).ln() as f32;
    assert!(
        (b2[5] - cls).abs() <= 1.0 / 5f32.sqrt() + 1e-6,
        "{} vs prior {cls}",
        b2[5]
    );

    let xs = [
        rand_t(&[1, 4, 8, 8], -1.0, 1.0, 1),
        rand_t(&[1, 6, 4, 4], -1.0, 1.0, 2),
        rand_t(&[1, 3, 8, 8], -1.0, 1.0, 3),
        rand_t(&[1, 5, 4, 4], -1.0, 1.0, 4),
    ];
    let tr = d.forward_levels(&xs, true).unwrap();
    assert_eq!(tr.raw.len(), 2);
    assert_eq!(tr.aux.len(), 2);
    assert_eq!(tr.aux[0].shape(), &[1, na, 8, 8, no]);
    assert_eq!(tr.aux[1].shape(), &[1, na, 4, 4, no]);
    // aux level 0 at (y=1, x=2), output k: plain 1×1 conv of input 2.
    let (w, b) = (
        d.m2[0].weight.to_vec(),
        d.m2[0].bias.as_ref().unwrap().to_vec(),
    );
    let x2 = xs[2].to_vec();
    let a0 = tr.aux[0].to_vec();
    for k in 0..no {
        let mut s = b[k];
        for ci in 0..3 {
            s += w[k * 3 + ci] * x2[(ci * 8 + 1) * 8 + 2];
        }
        assert!((a0[(8 + 2) * no + k] - s).abs() < 1e-5);
    }
    let ev = d.forward_levels(&xs, false).unwrap();
    assert_eq!(
        ev.aux.len(),
        2,
        "upstream runs the auxiliary convs in eval mode too"
    );

    d.fuse_layer().unwrap();
    let params_fused = count_params(&d);
    // m and m2 (weights + biases), ia, im: all kept after fusing, as upstream.
    assert_eq!(
        params_fused,
        (4 + 6 + 3 + 5) * na * no + 4 * na * no + (4 + 6) + 2 * na * no
    );
    let f = d.forward_levels(&xs, false).unwrap();
    assert!(f.aux.is_empty(), "fused: auxiliary levels are not run");
    assert_close(
        "IAuxDetect fused raw 0",
        &f.raw[0].to_vec(),
        &ev.raw[0].to_vec(),
        1e-5,
    );
    assert_close(
        "IAuxDetect fused pred",
        &f.pred.unwrap().to_vec(),
        &ev.pred.unwrap().to_vec(),
        1e-5,
    );
    // Once fused, the main inputs alone suffice.
    assert!(d.forward_levels(&xs[..2], false).is_ok());
}

#[test]
fn reorg_matches_naive_space_to_depth() {
    let (n, c, h, w) = (2usize, 3usize, 4usize, 6usize);
    let xv: Vec<f32> = (0..n * c * h * w).map(|v| v as f32).collect();
    let x = t(xv.clone(), &[n, c, h, w]);
    let y = ReOrg.forward(&x, false).unwrap();
    assert_eq!(y.shape(), &[n, 4 * c, h / 2, w / 2]);
    // torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
    let offsets = [(0, 0), (1, 0), (0, 1), (1, 1)];
    let mut want = Vec::new();
    for b in 0..n {
        for (di, dj) in offsets {
            for ci in 0..c {
                for i in 0..h / 2 {
                    for j in 0..w / 2 {
                        want.push(xv[((b * c + ci) * h + 2 * i + di) * w + 2 * j + dj]);
                    }
                }
            }
        }
    }
    assert_eq!(y.to_vec(), want);
    assert!(ReOrg
        .forward(&t(vec![0.0; 9], &[1, 1, 3, 3]), false)
        .is_err());
}

#[test]
fn pools_downc_sppcspc_and_shortcut_shapes_and_values() {
    let xv: Vec<f32> = (0..3 * 9 * 8).map(|v| ((v * 37) % 101) as f32).collect();
    let x = t(xv.clone(), &[1, 3, 9, 8]);
    // MP: 2×2 windows, stride 2, floor.
    let y = mp(2).forward(&x, false).unwrap();
    assert_eq!(y.shape(), &[1, 3, 4, 4]);
    let yv = y.to_vec();
    for c in 0..3 {
        for i in 0..4 {
            for j in 0..4 {
                let m = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .iter()
                    .map(|(a, b)| xv[(c * 9 + 2 * i + a) * 8 + 2 * j + b])
                    .fold(f32::MIN, f32::max);
                assert_eq!(yv[(c * 4 + i) * 4 + j], m);
            }
        }
    }
    // SP keeps the size ("same" padding, stride 1); SP(3) at a corner sees a 2×2 window.
    for k in [3, 5] {
        assert_eq!(sp(k, 1).forward(&x, false).unwrap().shape(), &[1, 3, 9, 8]);
    }
    let s3 = sp(3, 1).forward(&x, false).unwrap().to_vec();
    assert_eq!(s3[0], xv[0].max(xv[1]).max(xv[8]).max(xv[9]));
    assert_eq!(sp(3, 2).forward(&x, false).unwrap().shape(), &[1, 3, 5, 4]);

    let ctx = Ctx::new(1, Activation::Silu);
    let d = DownC::new(4, 10, 2, &ctx).unwrap();
    let xd = rand_t(&[2, 4, 8, 6], -1.0, 1.0, 3);
    assert_eq!(d.forward(&xd, true).unwrap().shape(), &[2, 10, 4, 3]);
    let n: Vec<(String, Vec<usize>)> = names(&d)
        .into_iter()
        .filter(|(n, _)| n.ends_with("conv.weight"))
        .collect();
    assert_eq!(
        n,
        vec![
            ("cv1.conv.weight".to_string(), vec![4, 4, 1, 1]),
            ("cv2.conv.weight".to_string(), vec![5, 4, 3, 3]),
            ("cv3.conv.weight".to_string(), vec![5, 4, 1, 1]),
        ]
    );
    assert_eq!(count_params(&d), 16 + 8 + 180 + 10 + 20 + 10);

    let s = Sppcspc::new(8, 6, 0.5, &[5, 9, 13], &ctx).unwrap();
    let xs = rand_t(&[1, 8, 7, 7], -1.0, 1.0, 4);
    assert_eq!(s.forward(&xs, false).unwrap().shape(), &[1, 6, 7, 7]);
    // c_ = int(2·c2·e) = 6; cv5 sees 4·c_ channels.
    let cv5 = names(&s)
        .into_iter()
        .find(|(n, _)| n == "cv5.conv.weight")
        .unwrap();
    assert_eq!(cv5.1, vec![6, 24, 1, 1]);

    let a = rand_t(&[1, 2, 3, 3], -1.0, 1.0, 5);
    let b = rand_t(&[1, 2, 3, 3], -1.0, 1.0, 6);
    let sum = Shortcut
        .run(&[a.clone(), b.clone()], false)
        .unwrap()
        .to_vec();
    let want: Vec<f32> = a
        .to_vec()
        .iter()
        .zip(b.to_vec())
        .map(|(x, y)| x + y)
        .collect();
    assert_eq!(sum, want);
    assert!(Shortcut.run(&[a], false).is_err());
}

#[test]
fn implicit_init_matches_upstream_distribution() {
    let init = Init::new(21);
    let a = ImplicitA::new(4000, &init).unwrap();
    let m = ImplicitM::new(4000, &init).unwrap();
    for (v, mean) in [(a.implicit.to_vec(), 0.0f64), (m.implicit.to_vec(), 1.0)] {
        let n = v.len() as f64;
        let mu = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let sd = (v.iter().map(|&x| (x as f64 - mu).powi(2)).sum::<f64>() / n).sqrt();
        assert!((mu - mean).abs() < 0.002, "mean {mu}");
        assert!((sd - 0.02).abs() < 0.002, "std {sd}");
    }
    assert_eq!(a.implicit.shape(), &[1, 4000, 1, 1]);
    assert!(a.implicit.requires_grad() && m.implicit.requires_grad());
}

/// Central-difference check of d(Σ f()·r)/d(tensor) for each tensor in `wrt`, perturbing it in
/// place (the shared helper, 40 samples per tensor).
fn gradcheck(name: &str, wrt: &[(&str, &Tensor)], f: impl Fn() -> Tensor) {
    let tol = yolo_testutil::Tol {
        samples: 40,
        ..SMOOTH
    };
    gradcheck_wrt(name, wrt, tol, || Ok(f()));
}

#[test]
fn repconv_gradients_in_train_mode_match_finite_differences() {
    let ctx = Ctx::new(17, Activation::Silu);
    let r = RepConv::new(3, 3, 3, 1, None, 1, Act::Default, &ctx).unwrap();
    randomise_repconv(&r, 900);
    let x = rand_t(&[2, 3, 5, 4], -1.0, 1.0, 8).with_grad();
    let dense = r.rbr_dense.as_ref().unwrap();
    let one = r.rbr_1x1.as_ref().unwrap();
    let id = r.rbr_identity.as_ref().unwrap();
    gradcheck(
        "RepConv",
        &[
            ("x", &x),
            ("rbr_dense.0.weight", &dense.conv.weight),
            ("rbr_dense.1.weight", &dense.bn.weight),
            ("rbr_1x1.0.weight", &one.conv.weight),
            ("rbr_1x1.1.bias", &one.bn.bias),
            ("rbr_identity.weight", &id.weight),
            ("rbr_identity.bias", &id.bias),
        ],
        || r.forward(&x, true).unwrap(),
    );
}

#[test]
fn implicit_gradients_in_train_mode_match_finite_differences() {
    let init = Init::new(23);
    let a = ImplicitA::with_init(3, 0.1, 0.5, &init).unwrap();
    let m = ImplicitM::with_init(3, 1.0, 0.5, &init).unwrap();
    let x = rand_t(&[2, 3, 3, 2], -1.0, 1.0, 9).with_grad();
    // tanh keeps the loss non-linear in both implicit tensors.
    gradcheck(
        "ImplicitM(ImplicitA(x))",
        &[
            ("x", &x),
            ("ia.implicit", &a.implicit),
            ("im.implicit", &m.implicit),
        ],
        || {
            let y = a.forward(&x, true).unwrap();
            m.forward(&y, true).unwrap().tanh()
        },
    );
}
