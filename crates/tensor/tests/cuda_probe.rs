//! The CUDA presence check: an error that names the reason without a GPU, `Ok` with one.

use yolo_tensor::{cuda_device_count, cuda_status, Device, Error, Tensor};

#[test]
fn cuda_presence_check_matches_the_machine() {
    let n = cuda_device_count();
    let status = cuda_status();
    println!("{status}");
    assert!(status.starts_with("CUDA:"), "{status}");
    if n == 0 {
        println!("no CUDA device here: checking the no-GPU branch");
        match Device::cuda(0) {
            Err(Error::DeviceUnavailable { device, reason }) => {
                assert_eq!(device, Device::Cuda(0));
                let msg = Error::DeviceUnavailable {
                    device,
                    reason: reason.clone(),
                }
                .to_string();
                assert!(msg.contains("cuda:0"), "{msg}");
                // no driver library, a failing driver, or a driver with no devices
                assert!(
                    [
                        "libcuda.so could not be loaded: no NVIDIA driver",
                        "failed",
                        "device 0 requested but 0 GPUs found",
                    ]
                    .iter()
                    .any(|e| reason.contains(e)),
                    "the reason must say what is missing: {reason}"
                );
                assert!(
                    status.contains(&reason) || status.contains("no CUDA devices"),
                    "{status}"
                );
            }
            other => panic!("Device::cuda(0) without a GPU: {other:?}"),
        }
    } else {
        println!("{n} CUDA device(s) here: checking the GPU branch");
        assert_eq!(Device::cuda(0).unwrap(), Device::Cuda(0));
        assert_eq!(Device::cuda(n - 1).unwrap(), Device::Cuda(n - 1));
        assert!(status.contains("cuda:0"), "{status}");
    }
    // an ordinal past the last device is refused on every machine, with the count in the reason
    match Device::cuda(n + 3) {
        Err(Error::DeviceUnavailable { reason, .. }) => {
            if n > 0 {
                assert!(
                    reason.contains(&format!("device {} requested", n + 3)),
                    "{reason}"
                );
            }
        }
        other => panic!("Device::cuda({}) with {n} GPUs: {other:?}", n + 3),
    }
}

#[test]
fn cuda_tensors_need_a_gpu_and_say_why() {
    let r = Tensor::zeros(&[2], Device::Cuda(0));
    if cuda_device_count() == 0 {
        // no GPU: allocation is refused with the probe's reason, never a panic
        match r {
            Err(Error::DeviceUnavailable { reason, .. }) => {
                assert_eq!(
                    format!("CUDA: not available: {reason}"),
                    cuda_status().replace("driver present but unusable", "not available")
                );
            }
            other => panic!("{other:?}"),
        }
    } else {
        let t = r.expect("zeros on cuda:0");
        assert_eq!(t.device(), Device::Cuda(0));
        assert_eq!(t.to_vec(), vec![0.0, 0.0]);
    }
}

#[test]
fn probing_is_cached_and_stable() {
    assert_eq!(cuda_status(), cuda_status());
    assert_eq!(cuda_device_count(), cuda_device_count());
}
