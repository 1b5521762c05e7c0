//! Trains a tiny conv net with the tensor core alone: each synthetic 16×16 image holds a bright
//! 4×4 square in one quadrant, and the class is that quadrant. Shows conv2d, batch norm, SiLU,
//! max-pool, global pooling, matmul, log-softmax, autograd and an SGD step end to end.
//!
//! Run: `cargo run --release -p yolo-tensor --example tiny_cnn`

use yolo_tensor::{Conv2dParams, Device, Pool2dParams, Result, Tensor};

/// A small linear congruential generator: the example needs no RNG crate.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
}

fn batch(rng: &mut Lcg, n: usize) -> Result<(Tensor, Vec<usize>)> {
    let mut img = vec![0.0f32; n * 16 * 16];
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let q = (rng.next() * 4.0) as usize % 4;
        let (oy, ox) = (
            (q / 2) * 8 + (rng.next() * 4.0) as usize,
            (q % 2) * 8 + (rng.next() * 4.0) as usize,
        );
        for p in img[i * 256..(i + 1) * 256].iter_mut() {
            *p = rng.next() * 0.3;
        }
        for y in oy..oy + 4 {
            for x in ox..ox + 4 {
                img[i * 256 + y * 16 + x] = 1.0;
            }
        }
        labels.push(q);
    }
    Ok((Tensor::from_vec(img, &[n, 1, 16, 16], Device::Cpu)?, labels))
}

fn param(rng: &mut Lcg, shape: &[usize], scale: f32) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v = (0..n).map(|_| (rng.next() * 2.0 - 1.0) * scale).collect();
    Ok(Tensor::from_vec(v, shape, Device::Cpu)?.with_grad())
}

fn main() -> Result<()> {
    let mut rng = Lcg(7);
    let w1 = param(&mut rng, &[8, 1, 3, 3], 0.5)?;
    let (g1, b1) = (
        Tensor::ones(&[8], Device::Cpu)?.with_grad(),
        Tensor::zeros(&[8], Device::Cpu)?.with_grad(),
    );
    let (rm, rv) = (
        Tensor::zeros(&[8], Device::Cpu)?,
        Tensor::ones(&[8], Device::Cpu)?,
    );
    let w2 = param(&mut rng, &[16, 8, 3, 3], 0.2)?;
    let fc = param(&mut rng, &[16, 4], 0.3)?;
    let params = [&w1, &g1, &b1, &w2, &fc];
    // The quadrant must survive pooling: keep a 2×2 spatial map, then flatten per quadrant.
    let forward = |x: &Tensor, train: bool| -> Result<Tensor> {
        let h = x.conv2d(&w1, None, Conv2dParams::new(1, 1))?;
        let h = if train {
            h.batch_norm2d_train(&g1, &b1, &rm, &rv, 0.1, 1e-5)?
        } else {
            h.batch_norm2d_eval(&g1, &b1, &rm, &rv, 1e-5)?
        };
        let h = h.silu().max_pool2d(Pool2dParams::new(2, 2, 0))?;
        let h = h
            .conv2d(&w2, None, Conv2dParams::new(1, 1))?
            .silu()
            .max_pool2d(Pool2dParams::new(4, 4, 0))?; // n×16×2×2
        let n = x.shape()[0];
        // logits[q] = Σ_c h[c, q] · fc[c, q]: one linear score per quadrant.
        let hq = h.reshape(&[n, 16, 4])?;
        hq.mul(&fc.reshape(&[1, 16, 4])?)?.sum(&[1], false)
    };
    for step in 0..=150 {
        let (x, labels) = batch(&mut rng, 32)?;
        let logp = forward(&x, true)?.log_softmax(1)?;
        let picked = logp.gather(1, &labels, &[labels.len(), 1])?;
        let loss = picked.mean_all()?.neg();
        loss.backward()?;
        {
            let _g = yolo_tensor::no_grad();
            for p in params {
                let g = p.grad().expect("every parameter is used");
                p.assign(&p.sub(&g.mul_scalar(0.5))?)?;
                p.zero_grad();
            }
        }
        if step % 25 == 0 {
            let _g = yolo_tensor::no_grad();
            let (xv, lv) = batch(&mut rng, 256)?;
            let logits = forward(&xv, false)?.to_vec();
            let correct = lv
                .iter()
                .enumerate()
                .filter(|(i, &l)| {
                    (0..4).max_by(|&a, &b| logits[i * 4 + a].total_cmp(&logits[i * 4 + b]))
                        == Some(l)
                })
                .count();
            println!(
                "step {step:4}  loss {:.4}  val accuracy {:.1}%",
                loss.item()?,
                100.0 * correct as f32 / 256.0
            );
        }
    }
    Ok(())
}
