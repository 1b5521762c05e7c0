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
    // On a pool thread, that pool's (a private pool's workers do not carry its handle).
    if rayon::current_thread_index().is_some() {
        return rayon::current_num_threads();
    }
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

/// Runs `f(i)` for every `i < n` in the kernel pool and returns when all are done. Inside an
/// inference call ([`in_pool`] with spinning workers) the calling thread posts the job on its
/// [`Board`] and the spinners take indices from one atomic counter (a fork and a join are a
/// few cache-line transfers, where rayon's split and steal took microseconds per kernel);
/// elsewhere rayon runs it; with one thread, a plain loop.
pub(crate) fn par_for(n: usize, f: impl Fn(usize) + Sync + Send) {
    if n == 0 {
        return;
    }
    if n == 1 || num_threads() == 1 {
        return (0..n).for_each(f);
    }
    if let Some(board) = BOARD.with(|b| b.borrow().clone()) {
        if n < CLOSED as usize && !board.busy.swap(true, std::sync::atomic::Ordering::Relaxed) {
            // Cleared also when a task panics here.
            struct Idle<'a>(&'a Board);
            impl Drop for Idle<'_> {
                fn drop(&mut self) {
                    self.0
                        .busy
                        .store(false, std::sync::atomic::Ordering::Relaxed);
                }
            }
            let _idle = Idle(&board);
            board.run(n, &f);
            return;
        }
    }
    use rayon::prelude::*;
    install(|| (0..n).into_par_iter().for_each(f));
}

thread_local! {
    /// The board of the inference call this thread runs ([`in_pool`]), if any.
    static BOARD: std::cell::RefCell<Option<Arc<Board>>> = const { std::cell::RefCell::new(None) };
}

/// One posted job at a time, shared by an inference call's thread and its spinners. `next`
/// packs the job's sequence number (high 32 bits) and its next unclaimed index (low 32): a
/// spinner claims an index by a compare-exchange that also proves the job it read is still
/// the posted one, so a stale reader can never run an index of a newer job.
struct Board {
    next: std::sync::atomic::AtomicU64,
    /// The posted job: `*const &(dyn Fn(usize) + Sync)` on the poster's stack.
    job: std::sync::atomic::AtomicPtr<()>,
    len: std::sync::atomic::AtomicUsize,
    done: std::sync::atomic::AtomicUsize,
    /// A task panicked on a spinner (the poster re-raises it).
    panicked: std::sync::atomic::AtomicBool,
    /// The poster is inside a job (a nested `par_for` falls back to rayon); only the poster's
    /// thread touches it.
    busy: std::sync::atomic::AtomicBool,
}

/// Ends a posted job ([`Board::run`]): stops further claims, then waits until every index a
/// spinner claimed is done.
struct Close<'a> {
    board: &'a Board,
    seq: u64,
    n: usize,
    /// Indices the poster claimed.
    mine: usize,
}

impl Drop for Close<'_> {
    fn drop(&mut self) {
        use std::sync::atomic::Ordering::*;
        let b = self.board;
        let prev = b.next.swap((self.seq << 32) | CLOSED, AcqRel);
        let claimed = ((prev & 0xffff_ffff) as usize).min(self.n);
        let theirs = claimed.saturating_sub(self.mine);
        while b.done.load(Acquire) < theirs {
            std::hint::spin_loop();
        }
    }
}

/// The low 32 bits of [`Board::next`] when no job is open.
const CLOSED: u64 = u32::MAX as u64;

type Task<'a> = &'a (dyn Fn(usize) + Sync);

impl Board {
    fn new() -> Board {
        use std::sync::atomic::*;
        Board {
            next: AtomicU64::new(CLOSED),
            job: AtomicPtr::new(std::ptr::null_mut()),
            len: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            busy: AtomicBool::new(false),
        }
    }

    /// Posts `f` over `0..n`, runs indices itself, and waits for the spinners' ones.
    fn run(&self, n: usize, f: &(dyn Fn(usize) + Sync)) {
        use std::sync::atomic::Ordering::*;
        let task: Task<'_> = f;
        let seq = (self.next.load(Relaxed) >> 32).wrapping_add(1) & 0xffff_ffff;
        self.job.store(&task as *const Task<'_> as *mut (), Relaxed);
        self.len.store(n, Relaxed);
        self.done.store(0, Relaxed);
        // Closes the job and waits for the spinners' indices when it ends, also by a panic
        // in `f` here: no spinner may run the closure after this frame.
        let close = Close {
            board: self,
            seq,
            n,
            mine: 0,
        };
        // Publishes the job: its fields are written before (Release).
        self.next.store(seq << 32, Release);
        let mut close = close;
        loop {
            let i = (self.next.fetch_add(1, AcqRel) & 0xffff_ffff) as usize;
            if i >= n {
                break;
            }
            close.mine += 1;
            f(i);
        }
        drop(close);
        if self.panicked.swap(false, Relaxed) {
            panic!("a kernel task panicked on another thread");
        }
    }

    /// A spinner's turn: runs indices of the posted job while there are any; whether it ran one.
    fn help(&self) -> bool {
        use std::sync::atomic::Ordering::*;
        let mut ran = false;
        loop {
            let cur = self.next.load(Acquire);
            let i = cur & 0xffff_ffff;
            if i >= CLOSED {
                return ran;
            }
            let (job, len) = (self.job.load(Relaxed), self.len.load(Relaxed));
            if i as usize >= len {
                return ran;
            }
            if self
                .next
                .compare_exchange_weak(cur, cur + 1, AcqRel, Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: the exchange succeeded on this job's sequence number with an index below
            // its length, so the job and its length read above are the posted ones, and the
            // poster waits for this index (`done`) before its stack frame ends.
            let f: Task<'_> = unsafe { *(job as *const Task<'_>) };
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(i as usize))).is_err() {
                self.panicked.store(true, Relaxed);
            }
            self.done.fetch_add(1, Release);
            ran = true;
        }
    }
}

/// Jobs that keep the pool's other workers awake for the length of one call: each loops on
/// `rayon::yield_now`, running any work the call's kernels split off as soon as it appears,
/// until the call ends (drop). A sleeping worker takes a futex wake-up and a reschedule per
/// kernel (tens of µs on a VM, against kernels of 0.1–1 ms at small images); ONNX Runtime's
/// pool spins between kernels the same way. `YOLO_SPIN=off` turns it off.
struct Spinners(Arc<std::sync::atomic::AtomicBool>, Option<Arc<Board>>);

impl Spinners {
    /// Spawns one spinner per other worker (from this worker's deque, so idle workers steal
    /// them); a spinner that this worker itself pops while waiting in a join leaves at once.
    fn start() -> Spinners {
        use std::sync::atomic::{AtomicBool, Ordering};
        let done = Arc::new(AtomicBool::new(false));
        let me = rayon::current_thread_index();
        let others = rayon::current_num_threads().saturating_sub(1);
        if me.is_none() || !spin_on() || others == 0 {
            done.store(true, Ordering::Relaxed);
            return Spinners(done, None);
        }
        let board = Arc::new(Board::new());
        BOARD.with(|b| *b.borrow_mut() = Some(board.clone()));
        for _ in 0..others {
            let (done, board) = (done.clone(), board.clone());
            rayon::spawn(move || {
                if rayon::current_thread_index() == me {
                    return;
                }
                let mut idle = 0u32;
                while !done.load(Ordering::Acquire) {
                    if board.help() || matches!(rayon::yield_now(), Some(rayon::Yield::Executed)) {
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
        Spinners(done, Some(board))
    }
}

impl Drop for Spinners {
    fn drop(&mut self) {
        if self.1.is_some() {
            BOARD.with(|b| *b.borrow_mut() = None);
        }
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Whether inference keeps idle workers spinning (`YOLO_SPIN=off`: no).
fn spin_on() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| !std::env::var("YOLO_SPIN").is_ok_and(|v| v == "off"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    /// Every index runs exactly once, with the spinners' board (inference) and without
    /// (training: rayon), including nested calls from inside a task.
    #[test]
    fn par_for_runs_every_index_once() {
        use_private_pool(2);
        for grad in [false, true] {
            let _g = crate::autograd::set_grad_enabled(grad);
            for n in [1usize, 2, 3, 7, 64, 1000] {
                for _ in 0..20 {
                    let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                    let inner = AtomicUsize::new(0);
                    in_pool(|| {
                        assert_eq!(num_threads(), 2);
                        par_for(n, |i| {
                            hits[i].fetch_add(1, Relaxed);
                            if i % 5 == 0 {
                                par_for(3, |_| {
                                    inner.fetch_add(1, Relaxed);
                                });
                            }
                        })
                    });
                    assert!(hits.iter().all(|h| h.load(Relaxed) == 1), "n = {n}");
                    assert_eq!(inner.load(Relaxed), 3 * n.div_ceil(5));
                }
            }
        }
        use_private_pool(0);
    }

    /// A panicking task reaches the caller, and the next job runs normally.
    #[test]
    fn par_for_passes_a_task_panic_on() {
        use_private_pool(2);
        let _g = crate::autograd::set_grad_enabled(false);
        for round in 0..10 {
            let r = std::panic::catch_unwind(|| {
                in_pool(|| {
                    par_for(50, |i| {
                        if i == 17 + round {
                            panic!("task {i}");
                        }
                    })
                })
            });
            assert!(r.is_err(), "round {round}: the panic was lost");
            let sum = AtomicUsize::new(0);
            in_pool(|| {
                par_for(100, |i| {
                    sum.fetch_add(i, Relaxed);
                })
            });
            assert_eq!(sum.load(Relaxed), 4950);
        }
        use_private_pool(0);
    }
}
