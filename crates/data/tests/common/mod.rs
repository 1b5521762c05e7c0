//! Helpers shared by the integration tests (included with `mod common;`).
#![allow(dead_code)]

pub mod aug;

use std::path::{Path, PathBuf};

/// The workspace's `datasets/samples` folder.
pub fn samples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/samples")
}

/// A copy of a committed sample dataset in a fresh temporary folder.
pub fn sample_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join(name);
    yolo_testutil::copy_dir(&samples().join(name), &dst);
    (dir, dst)
}
