//! The thread pool every CPU kernel runs in. Its size comes from `YOLO_THREADS` (or all cores)
//! and can be changed at run time with [`set_num_threads`].

use std::sync::{Arc, OnceLock, RwLock};

fn slot() -> &'static RwLock<Option<Arc<rayon::ThreadPool>>> {
    static POOL: OnceLock<RwLock<Option<Arc<rayon::ThreadPool>>>> = OnceLock::new();
    POOL.get_or_init(|| RwLock::new(None))
}

fn default_threads() -> usize {
    std::env::var("YOLO_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

fn build(n: usize) -> Arc<rayon::ThreadPool> {
    Arc::new(
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .thread_name(|i| format!("yolo-cpu-{i}"))
            .build()
            .unwrap_or_else(|_| {
                // Spawning threads failed (resource limits): fall back to the calling thread.
                rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .use_current_thread()
                    .build()
                    .expect("a one-thread pool on the current thread always builds")
            }),
    )
}

thread_local! {
    /// This thread's own pool, when [`use_private_pool`] gave it one.
    static PRIVATE: std::cell::RefCell<Option<Arc<rayon::ThreadPool>>> =
        const { std::cell::RefCell::new(None) };
}

/// Gives the calling thread a kernel pool of its own with `threads` threads (`0`: back to the
/// shared pool). For data-parallel replicas run as threads of one process: a replica blocked
/// in a collective (synchronised batch norm) inside a shared pool could be holding a worker
/// whose stack also carries another replica's work, and neither would finish.
pub fn use_private_pool(threads: usize) {
    PRIVATE.with(|p| *p.borrow_mut() = (threads > 0).then(|| build(threads)));
}

pub(crate) fn pool() -> Arc<rayon::ThreadPool> {
    if let Some(p) = PRIVATE.with(|p| p.borrow().clone()) {
        return p;
    }
    if let Some(p) = slot().read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return p.clone();
    }
    let mut w = slot().write().unwrap_or_else(|e| e.into_inner());
    w.get_or_insert_with(|| build(default_threads())).clone()
}

/// Sets the number of threads CPU kernels use (overrides `YOLO_THREADS`). `0` means all cores.
pub fn set_num_threads(n: usize) {
    let n = if n == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    } else {
        n
    };
    *slot().write().unwrap_or_else(|e| e.into_inner()) = Some(build(n));
}

/// The number of threads CPU kernels use.
pub fn num_threads() -> usize {
    pool().current_num_threads()
}

/// Runs `f` inside the kernel thread pool (nested calls stay in the pool).
pub(crate) fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    pool().install(f)
}

/// Runs `f` on a thread of the kernel pool, so that every kernel it launches starts without a
/// cross-thread hand-off (one hand-off per call instead of one per op: at one thread and small
/// images the per-op wake-ups cost more than some kernels). The caller's grad mode carries over.
pub fn in_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    // The caller's grad mode, set both ways: a pool thread waiting inside one caller's work may
    // run another caller's closure (work stealing), which must not inherit the first one's mode.
    let grad = crate::is_grad_enabled();
    pool().install(move || {
        let _g = crate::autograd::set_grad_enabled(grad);
        // Inference keeps the other workers spinning (see `Spinners`); training does not (data-
        // parallel replicas share the cores, and a replica waiting in a collective would spin).
        let _spin = (!grad).then(Spinners::start);
        f()
    })
}

/// Jobs that keep the pool's other workers awake for the length of one call: each loops on
/// `rayon::yield_now`, running any work the call's kernels split off as soon as it appears,
/// until the call ends (drop). A sleeping worker takes a futex wake-up and a reschedule per
/// kernel (tens of µs on a VM, against kernels of 0.1–1 ms at small images); ONNX Runtime's
/// pool spins between kernels the same way. `YOLO_SPIN=off` turns it off.
struct Spinners(Arc<std::sync::atomic::AtomicBool>);

impl Spinners {
    /// Spawns one spinner per other worker (from this worker's deque, so idle workers steal
    /// them); a spinner that this worker itself pops while waiting in a join leaves at once.
    fn start() -> Spinners {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = Arc::new(AtomicBool::new(false));
        let me = rayon::current_thread_index();
        let others = rayon::current_num_threads().saturating_sub(1);
        if me.is_none() || !spin_on() {
            done.store(true, Ordering::Relaxed);
            return Spinners(done);
        }
        for _ in 0..others {
            let done = done.clone();
            rayon::spawn(move || {
                if rayon::current_thread_index() == me {
                    return;
                }
                let mut idle = 0u32;
                while !done.load(Ordering::Acquire) {
                    if matches!(rayon::yield_now(), Some(rayon::Yield::Executed)) {
                        idle = 0;
                        continue;
                    }
                    idle = idle.wrapping_add(1);
                    if idle.is_multiple_of(64) {
                        // Let other runnable threads (a data loader's workers) have the core.
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            });
        }
        Spinners(done)
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Whether inference keeps idle workers spinning (`YOLO_SPIN=off`: no).
fn spin_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| !std::env::var("YOLO_SPIN").is_ok_and(|v| v == "off"))
}
