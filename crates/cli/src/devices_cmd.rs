//! `yolo-forge devices`: what this machine offers to the tensor backends.

use anyhow::Result;
use yolo_tensor::{Device, Tensor};

/// `yolo-forge devices`.
pub fn devices() -> Result<()> {
    println!("cpu: {} kernel threads", yolo_tensor::num_threads());
    println!("{}", yolo_tensor::cuda_status());
    let n = yolo_tensor::cuda_device_count();
    if n == 0 {
        println!(
            "CUDA op backend: built in (kernels compiled by NVRTC at first use, cuBLAS, cuDNN \
             when present); no usable GPU here"
        );
    }
    for i in 0..n {
        // Initialising the device compiles the kernels and opens cuBLAS and cuDNN.
        match Tensor::zeros(&[1], Device::Cuda(i)) {
            Ok(_) => println!(
                "cuda:{i}: ready; convolutions via {}",
                yolo_tensor::cuda_conv_backend(i).unwrap_or_else(|| "?".into())
            ),
            Err(e) => println!("cuda:{i}: not usable: {e}"),
        }
    }
    Ok(())
}
