//! Test helpers, shared across the workspace in `yolo-testutil`.
#![allow(unused_imports)]

pub use yolo_testutil::*;
