//! Factories: one fresh layer per build, seeded initialisation, upstream names and shapes.

use yolo_activations::{Activation, ActivationLayer, Pointwise};

fn shapes(layer: &dyn ActivationLayer) -> Vec<(String, Vec<usize>)> {
    layer
        .named_parameters()
        .into_iter()
        .chain(layer.named_buffers())
        .map(|(n, t)| (n, t.shape().to_vec()))
        .collect()
}

fn s(v: &[(&str, &[usize])]) -> Vec<(String, Vec<usize>)> {
    v.iter()
        .map(|(n, sh)| (n.to_string(), sh.to_vec()))
        .collect()
}

#[test]
fn upstream_parameter_names_and_shapes() {
    let c = 24;
    assert_eq!(
        shapes(&*Activation::FRelu.build(c, 0).unwrap()),
        s(&[
            ("conv.weight", &[24, 1, 3, 3]),
            ("bn.weight", &[24]),
            ("bn.bias", &[24]),
            ("bn.running_mean", &[24]),
            ("bn.running_var", &[24]),
        ])
    );
    assert_eq!(
        shapes(&*Activation::AconC.build(c, 0).unwrap()),
        s(&[
            ("p1", &[1, 24, 1, 1]),
            ("p2", &[1, 24, 1, 1]),
            ("beta", &[1, 24, 1, 1])
        ])
    );
    // c2 = max(16, 24 / 16) = 16; for 512 channels max(16, 32) = 32.
    assert_eq!(
        shapes(&*Activation::MetaAconC { r: 16 }.build(c, 0).unwrap()),
        s(&[
            ("p1", &[1, 24, 1, 1]),
            ("p2", &[1, 24, 1, 1]),
            ("fc1.weight", &[16, 24, 1, 1]),
            ("fc1.bias", &[16]),
            ("fc2.weight", &[24, 16, 1, 1]),
            ("fc2.bias", &[24]),
        ])
    );
    let big = Activation::MetaAconC { r: 16 }.build(512, 0).unwrap();
    assert_eq!(big.named_parameters()[2].1.shape(), &[32, 512, 1, 1]);
    for a in Activation::all().into_iter().filter(|a| a.is_pointwise()) {
        let l = a.build(c, 0).unwrap();
        assert!(
            l.named_parameters().is_empty() && l.named_buffers().is_empty(),
            "{a}"
        );
    }
}

#[test]
fn initial_values_follow_pytorch_defaults() {
    let c = 64;
    let f = Activation::FRelu.build(c, 1).unwrap();
    let p = f.named_parameters();
    let w = p[0].1.to_vec();
    // kaiming-uniform(a=√5) of a depthwise 3×3: U(−1/3, 1/3).
    assert!(w.iter().all(|v| v.abs() <= 1.0 / 3.0));
    assert!(
        w.iter().any(|v| v.abs() > 0.25),
        "weights should span the range"
    );
    assert_eq!(p[1].1.to_vec(), vec![1.0; c]);
    assert_eq!(p[2].1.to_vec(), vec![0.0; c]);
    let b = f.named_buffers();
    assert_eq!(b[0].1.to_vec(), vec![0.0; c]);
    assert_eq!(b[1].1.to_vec(), vec![1.0; c]);
    assert!(
        b.iter().all(|(_, t)| !t.requires_grad()),
        "buffers are not learnable"
    );
    assert!(p.iter().all(|(_, t)| t.requires_grad()));

    // randn p1, p2: mean ≈ 0, variance ≈ 1 over 4096 draws.
    let a = Activation::AconC.build(4096, 2).unwrap();
    for (name, t) in &a.named_parameters()[..2] {
        let v = t.to_vec();
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(
            mean.abs() < 0.06 && (var - 1.0).abs() < 0.08,
            "{name}: mean {mean}, var {var}"
        );
    }
    assert_eq!(a.named_parameters()[2].1.to_vec(), vec![1.0; 4096]);
}

#[test]
fn every_build_is_a_fresh_layer_and_seeds_are_reproducible() {
    for a in Activation::all().into_iter().filter(|a| a.has_parameters()) {
        let l1 = a.build(8, 5).unwrap();
        let l2 = a.build(8, 5).unwrap();
        let l3 = a.build(8, 6).unwrap();
        for ((n, p1), ((_, p2), (_, p3))) in l1
            .named_parameters()
            .into_iter()
            .zip(l2.named_parameters().into_iter().zip(l3.named_parameters()))
        {
            assert!(!p1.same_storage(&p2), "{a}: {n} shared between layers");
            assert_eq!(
                p1.to_vec(),
                p2.to_vec(),
                "{a}: {n} not reproducible from the seed"
            );
            if n.starts_with('p') || n.ends_with("weight") && n != "bn.weight" {
                assert_ne!(p1.to_vec(), p3.to_vec(), "{a}: {n} ignores the seed");
            }
        }
        // Updating one layer's parameter leaves the other alone.
        let (name, p) = &l1.named_parameters()[0];
        p.assign(&p.mul_scalar(2.0)).unwrap();
        assert_ne!(
            p.to_vec(),
            l2.named_parameters()[0].1.to_vec(),
            "{a}: {name}"
        );
        assert_eq!(l1.spec(), a);
    }
}

#[test]
fn spec_queries() {
    use yolo_tensor::UnaryOp;
    assert_eq!(Activation::GeluTanh.unary_op(), Some(UnaryOp::GeluTanh));
    assert_eq!(
        Activation::LeakyRelu(0.1).unary_op(),
        Some(UnaryOp::LeakyRelu(0.1))
    );
    assert_eq!(Activation::Identity.unary_op(), None);
    assert_eq!(Activation::FRelu.unary_op(), None);
    assert!(Activation::Identity.is_pointwise());
    assert!(!Activation::AconC.is_pointwise());
    assert_eq!(Activation::all().len(), 16);
    assert!(Pointwise::new(Activation::FRelu).is_err());
    assert_eq!(
        Pointwise::new(Activation::Mish).unwrap().spec(),
        Activation::Mish
    );
    let m = "MetaAconC(r=8)"
        .parse::<Activation>()
        .unwrap()
        .build(16, 0)
        .unwrap();
    assert_eq!(m.spec(), Activation::MetaAconC { r: 8 });
}

#[test]
fn set_batch_norm_changes_frelu_running_stat_momentum() {
    use yolo_tensor::{Device, Tensor};
    let l = Activation::FRelu.build(2, 0).unwrap();
    let x = Tensor::from_vec(
        (0..32).map(|i| i as f32 * 0.1).collect(),
        &[1, 2, 4, 4],
        Device::Cpu,
    )
    .unwrap();
    l.forward(&x, true).unwrap();
    let rm_default = l.named_buffers()[0].1.to_vec();
    let mut l2 = Activation::FRelu.build(2, 0).unwrap();
    l2.set_batch_norm(1e-3, 0.03);
    l2.forward(&x, true).unwrap();
    let rm = l2.named_buffers()[0].1.to_vec();
    for (a, b) in rm_default.iter().zip(&rm) {
        // new = m · batch_mean: 0.1 vs 0.03 of the same batch mean.
        assert!((a * 0.3 - b).abs() < 1e-5, "{a} {b}");
    }
    // Pointwise layers accept and ignore it.
    let mut p = Activation::Silu.build(2, 0).unwrap();
    p.set_batch_norm(1e-3, 0.03);
}
