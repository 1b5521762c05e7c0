//! Activation throughput on 1×64×160×160 (1 638 400 elements): forward (inference: no-grad,
//! eval mode) and forward + backward (training: train mode, input and parameters require
//! grad, `backward_with` a fixed gradient, then grads zeroed) for every activation.
//!
//! Criterion reports elements/s per case. After it, the bench prints a plain table from its
//! own timing loop in the same process: the median of `ACT_BENCH_ROUNDS` (default 15) steady-
//! state runs of each activation, each interleaved with a SiLU run, so the ratios to SiLU come
//! from one run on a shared machine. `ACT_BENCH_ROUNDS=0` skips the table.
//!
//! Run: `cargo bench -p yolo-activations` (short: `-- --warm-up-time 1 --measurement-time 2`;
//! `YOLO_THREADS=1` for one thread).

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use std::hint::black_box;
use std::time::Instant;
use yolo_activations::{Activation, ActivationLayer};
use yolo_tensor::{Device, Tensor};

const SHAPE: [usize; 4] = [1, 64, 160, 160];

/// A cheap deterministic pattern in [-4, 4): the range where the activations differ.
fn tensor(seed: u32) -> Tensor {
    let n: usize = SHAPE.iter().product();
    let data = (0..n)
        .map(|i| {
            let u = ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32
                / 16_777_216.0;
            8.0 * u - 4.0
        })
        .collect();
    Tensor::from_vec(data, &SHAPE, Device::Cpu).unwrap()
}

/// One activation layer with its inputs.
struct Case {
    name: String,
    layer: Box<dyn ActivationLayer>,
    /// Input for the forward pass (no grad).
    x: Tensor,
    /// The same data as a leaf that requires grad, for forward + backward.
    xg: Tensor,
    /// The fixed output gradient.
    dy: Tensor,
}

impl Case {
    fn new(act: Activation) -> Case {
        let x = tensor(1);
        Case {
            name: act.short_name(),
            layer: act.build(SHAPE[1], 0).unwrap(),
            xg: x.detach().with_grad(),
            x,
            dy: tensor(2).mul_scalar(0.25),
        }
    }

    fn forward(&self) -> Tensor {
        let _g = yolo_tensor::no_grad();
        self.layer.forward(&self.x, false).unwrap()
    }

    fn forward_backward(&self) {
        let y = self.layer.forward(&self.xg, true).unwrap();
        y.backward_with(&self.dy).unwrap();
        self.xg.zero_grad();
        for (_, p) in self.layer.named_parameters() {
            p.zero_grad();
        }
    }
}

fn cases() -> Vec<Case> {
    Activation::all().into_iter().map(Case::new).collect()
}

fn criterion_benches(c: &mut Criterion, cases: &[Case]) {
    let numel = cases[0].x.numel() as u64;
    for (mode, fb) in [("forward", false), ("forward_backward", true)] {
        let mut g = c.benchmark_group(format!("activations/{mode}"));
        // Each iteration takes milliseconds: flat sampling keeps a 2 s measurement honest.
        g.sampling_mode(SamplingMode::Flat).sample_size(20);
        g.throughput(Throughput::Elements(numel));
        for case in cases {
            g.bench_function(BenchmarkId::new(&case.name, "1x64x160x160"), |b| {
                if fb {
                    b.iter(|| case.forward_backward())
                } else {
                    b.iter(|| black_box(case.forward()))
                }
            });
        }
        g.finish();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Seconds of one call of `f`, in steady state: an untimed call first leaves the allocator
/// as `f` itself left it (freed buffers of the right size, pages already touched), as in
/// criterion's loop; otherwise whichever case runs first after a switch pays for the other's
/// memory pattern.
fn time(f: impl Fn()) -> f64 {
    f();
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// Same-run table: each round times SiLU and the activation (alternating which goes first),
/// for forward and for forward + backward; medians over the rounds.
fn ratio_table(cases: &[Case], rounds: usize) {
    let numel = cases[0].x.numel() as f64;
    let silu = cases
        .iter()
        .find(|c| c.layer.spec() == Activation::Silu)
        .expect("SiLU is among the cases");
    println!();
    println!(
        "Activations on {}x{}x{}x{} ({} threads), median of {rounds} interleaved runs:",
        SHAPE[0],
        SHAPE[1],
        SHAPE[2],
        SHAPE[3],
        yolo_tensor::num_threads()
    );
    println!();
    println!("| activation | fwd ns/elem | fwd+bwd ns/elem | fwd vs SiLU | fwd+bwd vs SiLU |");
    println!("|---|---:|---:|---:|---:|");
    for case in cases {
        let (mut sf, mut af, mut sb, mut ab) = (vec![], vec![], vec![], vec![]);
        for round in 0..rounds {
            let fwd = |c: &Case| time(|| drop(black_box(c.forward())));
            let fb = |c: &Case| time(|| c.forward_backward());
            if round % 2 == 0 {
                sf.push(fwd(silu));
                af.push(fwd(case));
                sb.push(fb(silu));
                ab.push(fb(case));
            } else {
                af.push(fwd(case));
                sf.push(fwd(silu));
                ab.push(fb(case));
                sb.push(fb(silu));
            }
        }
        let (sf, af, sb, ab) = (median(sf), median(af), median(sb), median(ab));
        println!(
            "| {} | {:.2} | {:.2} | {:.2}× | {:.2}× |",
            case.layer.spec(),
            af * 1e9 / numel,
            ab * 1e9 / numel,
            af / sf,
            ab / sb
        );
    }
}

fn main() {
    let cases = cases();
    let args: Vec<String> = std::env::args().collect();
    let mut c = Criterion::default().configure_from_args();
    criterion_benches(&mut c, &cases);
    c.final_summary();
    // `cargo test --benches` / `--list` run criterion in a quick mode: no table then.
    if args.iter().any(|a| a == "--test" || a == "--list") {
        return;
    }
    let rounds = std::env::var("ACT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(15);
    if rounds > 0 {
        ratio_table(&cases, rounds);
    }
}
