//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

pub mod aug;

use std::path::{Path, PathBuf};

/// The workspace's `datasets/samples` folder.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/samples")
}

/// Recursively copies a folder.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let q = dst.join(e.file_name());
        if p.is_dir() {
            copy_dir(&p, &q);
        } else if !p.to_string_lossy().contains(".cache") {
            std::fs::copy(&p, &q).unwrap();
        }
    }
}

/// A copy of a committed sample dataset in a fresh temporary folder.
pub fn sample_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join(name);
    copy_dir(&samples().join(name), &dst);
    (dir, dst)
}
