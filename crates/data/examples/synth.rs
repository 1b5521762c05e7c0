//! Generates a synthetic shapes dataset: `cargo run -p yolo-data --example synth -- OUT [TRAIN VAL IMGSZ SEED]`.

use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let cfg = yolo_data::SynthConfig {
        out: PathBuf::from(
            args.first()
                .cloned()
                .unwrap_or_else(|| "datasets/synth".into()),
        ),
        train: arg(1, 512) as usize,
        val: arg(2, 128) as usize,
        imgsz: arg(3, 256) as u32,
        seed: arg(4, 0),
        ..Default::default()
    };
    let t = Instant::now();
    let yaml = yolo_data::generate(&cfg)?;
    eprintln!(
        "wrote {} ({} images) in {:.2} s",
        yaml.display(),
        cfg.train + cfg.val,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
