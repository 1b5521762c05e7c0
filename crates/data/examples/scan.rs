//! Scans a dataset source and prints the report: `cargo run -p yolo-data --example scan -- DIR [NC]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let src = std::path::PathBuf::from(args.first().ok_or("usage: scan DIR [NC]")?);
    let nc = args.get(1).and_then(|s| s.parse().ok());
    let s = yolo_data::labels::scan(&[src], nc, false)?;
    eprintln!("{}", s.report);
    Ok(())
}
