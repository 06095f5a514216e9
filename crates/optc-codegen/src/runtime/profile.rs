//! Per-node profiling of JIT runs (`optc bench --profile`): code compiled with
//! [`crate::Target::with_profile`] calls `optc_rt_profile_mark(i)` before kernel `i` of the
//! schedule and `optc_rt_profile_mark(n)` after the last one; while [`start`]ed, the marks
//! and every task a parallel node runs (on which thread, from when to when) are recorded
//! until [`stop`]. Code compiled without profiling makes no calls; between `start` and `stop`
//! a task costs two clock reads and a lock.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

/// A kernel of the schedule starting (or, `kernel == kernels`, the run's kernels ending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub kernel: u32,
    /// Nanoseconds since the first clock read of the process.
    pub ns: u64,
}

/// One task (item) of a parallel node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskSpan {
    /// The kernel whose parallel loop ran it (the last mark before it).
    pub kernel: u32,
    /// 0: the thread that called the model; `k + 1`: pool worker `k`.
    pub thread: u32,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// What was recorded between [`start`] and [`stop`].
#[derive(Clone, Debug, Default)]
pub struct Recording {
    pub marks: Vec<Mark>,
    pub tasks: Vec<TaskSpan>,
}

static ON: AtomicBool = AtomicBool::new(false);
static CURRENT: AtomicU32 = AtomicU32::new(0);
static DATA: Mutex<Recording> = Mutex::new(Recording {
    marks: Vec::new(),
    tasks: Vec::new(),
});

thread_local! {
    static THREAD: Cell<u32> = const { Cell::new(0) };
}

/// Nanoseconds since the first call in this process.
pub(super) fn now_ns() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// Name the calling thread in recordings (`k + 1` for pool worker `k`).
pub(super) fn set_thread(index: u32) {
    THREAD.with(|t| t.set(index));
}

/// Whether a recording is in progress.
pub(super) fn on() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Record a task of the current kernel that ran from `start_ns` until now.
pub(super) fn task(start_ns: u64) {
    let span = TaskSpan {
        kernel: CURRENT.load(Ordering::Relaxed),
        thread: THREAD.with(|t| t.get()),
        start_ns,
        end_ns: now_ns(),
    };
    DATA.lock()
        .unwrap_or_else(|e| e.into_inner())
        .tasks
        .push(span);
}

/// Start recording (clearing what was recorded before).
pub fn start() {
    *DATA.lock().unwrap_or_else(|e| e.into_inner()) = Recording::default();
    ON.store(true, Ordering::SeqCst);
}

/// Stop recording; what was recorded.
pub fn stop() -> Recording {
    ON.store(false, Ordering::SeqCst);
    std::mem::take(&mut *DATA.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Called by profiling code before kernel `kernel` (see the module docs).
pub extern "C" fn optc_rt_profile_mark(kernel: u64) {
    if !on() {
        return;
    }
    let kernel = kernel.min(u32::MAX as u64) as u32;
    let ns = now_ns();
    CURRENT.store(kernel, Ordering::Relaxed);
    DATA.lock()
        .unwrap_or_else(|e| e.into_inner())
        .marks
        .push(Mark { kernel, ns });
}
