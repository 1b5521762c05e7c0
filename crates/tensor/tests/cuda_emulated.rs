//! The CUDA backend's allocator and error paths, run on the CUDA emulator (the CUDA kernels
//! compiled for the CPU; see `YOLO_CUDA_EMULATE` in crates/tensor/src/cuda/mod.rs), so they
//! are checked on every machine. The op-by-op comparison with the CPU is `tests/cuda_ops.rs`
//! (run by `cargo xtask ci` under the emulator and by `cargo xtask gpu-check` on a GPU).

use std::sync::Mutex;

use yolo_tensor::{cuda_memory_stats, reset_cuda_peak_memory, Conv2dParams, Device, Error, Tensor};

/// The emulated device is shared by this binary's tests: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn emulated_gpu() -> Device {
    // Set before the first CUDA probe of this process (every test here does it first).
    // SAFETY: tests of this binary hold SERIAL; nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("YOLO_CUDA_EMULATE", "1");
        std::env::set_var("YOLO_CUDA_EMULATE_MEM_MB", "64");
    }
    Device::cuda(0).expect("the emulator provides cuda:0")
}

fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}

/// conv → batch norm + SiLU → max-pool → sum, forward and backward.
fn step(x: &Tensor, w: &Tensor, g: &Tensor, b: &Tensor) -> f32 {
    let dev = x.device();
    let rm = Tensor::zeros(&[g.numel()], dev).unwrap();
    let rv = Tensor::ones(&[g.numel()], dev).unwrap();
    let y = x.conv2d(w, None, Conv2dParams::new(1, 1)).unwrap();
    let y = y
        .batch_norm2d_act_train(g, b, &rm, &rv, 0.03, 1e-3, Some(yolo_tensor::UnaryOp::Silu))
        .unwrap();
    let y = y
        .max_pool2d(yolo_tensor::Pool2dParams::new(2, 2, 0))
        .unwrap();
    let loss = y.sum_all().unwrap();
    loss.backward().unwrap();
    loss.item().unwrap()
}

#[test]
fn a_warm_training_step_allocates_nothing_from_the_driver() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = emulated_gpu();
    let x = Tensor::from_vec(rand(2 * 8 * 12 * 12, 1), &[2, 8, 12, 12], dev).unwrap();
    let w = Tensor::from_vec(rand(16 * 8 * 9, 2), &[16, 8, 3, 3], dev)
        .unwrap()
        .with_grad();
    let g = Tensor::ones(&[16], dev).unwrap().with_grad();
    let b = Tensor::zeros(&[16], dev).unwrap().with_grad();
    let mut allocs = Vec::new();
    let mut losses = Vec::new();
    for _ in 0..4 {
        w.zero_grad();
        g.zero_grad();
        b.zero_grad();
        losses.push(step(&x, &w, &g, &b));
        allocs.push(cuda_memory_stats(0).unwrap().driver_allocs);
    }
    assert!(allocs[0] > 0, "{allocs:?}");
    assert_eq!(
        allocs[1], allocs[3],
        "driver allocations after warm-up: {allocs:?}"
    );
    assert!(losses.windows(2).all(|p| p[0] == p[1]), "{losses:?}");
    let st = cuda_memory_stats(0).unwrap();
    assert!(st.peak >= st.in_use && st.peak > 0, "{st:?}");
    reset_cuda_peak_memory(0);
    assert_eq!(
        cuda_memory_stats(0).unwrap().peak,
        cuda_memory_stats(0).unwrap().in_use
    );
    // the same step on the CPU gives the same loss
    let cpu = |t: &Tensor| t.to_device(Device::Cpu).unwrap().detach();
    let (xc, wc, gc, bc) = (
        cpu(&x),
        cpu(&w).with_grad(),
        cpu(&g).with_grad(),
        cpu(&b).with_grad(),
    );
    let lc = step(&xc, &wc, &gc, &bc);
    assert!(
        (lc - losses[0]).abs() <= 1e-4 * lc.abs().max(1.0),
        "{lc} vs {}",
        losses[0]
    );
}

#[test]
fn running_out_of_device_memory_is_an_error_not_a_panic() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = emulated_gpu();
    // a direct allocation past the device's 64 MiB fails with the reason
    match Tensor::zeros(&[80 << 18], dev) {
        Err(Error::DeviceUnavailable { reason, .. }) => {
            assert!(reason.contains("out of device memory"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    // an infallible op that runs out: the error is kept and surfaces at the next fallible call
    let x = Tensor::full(0.5, &[4 << 20], dev).unwrap(); // 16 MiB
    let a = x.exp();
    let b = a.exp();
    let c = b.exp(); // 64 MiB held: this one cannot be allocated
    let d = c.exp();
    match d.sum_all().and_then(|s| s.item()) {
        Err(Error::DeviceUnavailable { reason, .. }) => {
            assert!(reason.contains("out of device memory"), "{reason}")
        }
        other => panic!("expected the out-of-memory error, got {other:?}"),
    }
    drop((a, b, c, d));
    // once reported, the device works again
    let y = x.mul_scalar(2.0).sum_all().unwrap().item().unwrap();
    assert_eq!(y, (4 << 20) as f32);
}

/// Round to nearest even bf16, back to f32.
fn bf16(x: f32) -> f32 {
    let u = x.to_bits();
    f32::from_bits((u + 0x7fff + ((u >> 16) & 1)) & 0xffff_0000)
}

#[test]
fn mixed_precision_rounds_gemm_inputs_to_bf16_and_accumulates_in_f32() {
    let _s = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dev = emulated_gpu();
    let (m, k, n) = (9, 70, 11);
    let (a, b) = (rand(m * k, 21), rand(k * n, 22));
    let on = |d: Device, a: &[f32], b: &[f32]| {
        let ta = Tensor::from_vec(a.to_vec(), &[m, k], d).unwrap();
        let tb = Tensor::from_vec(b.to_vec(), &[k, n], d).unwrap();
        ta.matmul(&tb).unwrap().to_vec()
    };
    yolo_tensor::set_mixed_precision(true);
    let mixed = on(dev, &a, &b);
    yolo_tensor::set_mixed_precision(false);
    let exact = on(Device::Cpu, &a, &b);
    let ra: Vec<f32> = a.iter().map(|&x| bf16(x)).collect();
    let rb: Vec<f32> = b.iter().map(|&x| bf16(x)).collect();
    let rounded = on(Device::Cpu, &ra, &rb);
    let diff = |p: &[f32], q: &[f32]| {
        p.iter()
            .zip(q)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
    };
    assert!(
        diff(&mixed, &rounded) < 1e-5,
        "vs bf16 inputs: {}",
        diff(&mixed, &rounded)
    );
    assert!(diff(&mixed, &exact) > 1e-4, "bf16 rounding had no effect");
    // and off again, the device is exact f32
    assert!(diff(&on(dev, &a, &b), &exact) < 1e-5);
}
