//! `yolo-forge devices`: what this machine offers to the tensor backends.

use anyhow::Result;

/// `yolo-forge devices`.
pub fn devices() -> Result<()> {
    println!("cpu: {} kernel threads", yolo_tensor::num_threads());
    println!("{}", yolo_tensor::cuda_status());
    println!("CUDA op backend: not implemented yet (tensors run on the CPU)");
    Ok(())
}
