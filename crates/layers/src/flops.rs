//! FLOP accounting during a forward pass, with the rules of the `thop` profiler that upstream
//! uses for its "GFLOPs" (multiply-accumulates of convolutions and linear layers; upstream then
//! reports 2 × MACs).

use std::cell::Cell;

thread_local! {
    static MACS: Cell<Option<f64>> = const { Cell::new(None) };
}

/// Runs `f` while counting multiply-accumulates; returns its result and the count.
pub fn count<R>(f: impl FnOnce() -> R) -> (R, f64) {
    let prev = MACS.with(|m| m.replace(Some(0.0)));
    let r = f();
    let n = MACS.with(|m| m.replace(prev)).unwrap_or(0.0);
    (r, n)
}

/// Adds `macs` to the running count, if counting.
pub fn add(macs: f64) {
    MACS.with(|m| {
        if let Some(v) = m.get() {
            m.set(Some(v + macs));
        }
    });
}

/// Whether a count is running (blocks may skip bookkeeping otherwise).
pub fn counting() -> bool {
    MACS.with(|m| m.get().is_some())
}
