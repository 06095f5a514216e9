//! Threads: a persistent pool behind the `optc_rt_parallel_for` hook.
//!
//! Workers sleep when idle. During a JIT run ([`run_begin`], called by `JitModel::run`) and
//! 50 us after it, they poll for the next parallel node, yielding the core; the caller of a
//! parallel node polls for its end the same way; workers are woken through the condvar only
//! when one sleeps. [`set_active_wait`]`(false)` or `OPTC_WAIT_POLICY=passive` turns the
//! polling off.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// A task of `optc_rt_parallel_for`: called as `task(ctx, i)`.
pub type TaskFn = extern "C" fn(ctx: *const u8, i: u64);

thread_local! {
    /// Threads the generated code may use when called from this thread (0 = all cores).
    static THREADS: Cell<usize> = const { Cell::new(1) };
}

/// Set how many threads `optc_rt_parallel_for` uses for calls made from the current thread
/// (0 = all cores). Returns the previous value.
pub fn set_thread_count(n: usize) -> usize {
    THREADS.with(|t| t.replace(n))
}

/// Number of cores of this machine.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

struct Job {
    f: TaskFn,
    ctx: usize,
    n: u64,
    next: AtomicU64,
    done: AtomicU64,
}

impl Job {
    /// Claim and run items until none are left; returns after its last item finished.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            (self.f)(self.ctx as *const u8, i);
            self.done.fetch_add(1, Ordering::AcqRel);
        }
    }
}

struct ThreadPoolState {
    job: Option<Arc<Job>>,
    /// Helpers still wanted for the current job.
    want: usize,
    generation: u64,
    /// Workers asleep on `ThreadPool::wake` (none while they poll during a run: no wake-up call).
    sleepers: usize,
}

struct ThreadPool {
    state: Mutex<ThreadPoolState>,
    wake: Condvar,
    finished: Condvar,
    /// Only one job at a time; other callers run serially.
    busy: Mutex<()>,
    workers: usize,
    /// `ThreadPoolState::generation`, readable without the lock (for spinning workers).
    gen: AtomicU64,
    /// The caller of the current job sleeps on `finished` (else the worker that finishes the
    /// job's last item need not lock and notify).
    caller_asleep: std::sync::atomic::AtomicBool,
    /// Model runs in progress that may post jobs ([`RunGuard`]): while there is one, idle
    /// workers poll for the next job instead of sleeping, so the many short parallel nodes
    /// of a run do not each pay a futex wake-up (tens of microseconds) before a worker
    /// joins. Between runs they sleep.
    hot: AtomicUsize,
}

/// How long idle workers keep polling after a run ends, so that back-to-back runs (a
/// serving loop, a benchmark) find them awake.
const GRACE: std::time::Duration = std::time::Duration::from_micros(50);

/// Marks a model run in progress (see `ThreadPool::hot`); dropping it ends the run.
pub struct RunGuard(bool);

/// Whether workers poll during runs (see [`set_active_wait`]).
static ACTIVE_WAIT: OnceLock<std::sync::atomic::AtomicBool> = OnceLock::new();

fn active_wait() -> &'static std::sync::atomic::AtomicBool {
    ACTIVE_WAIT.get_or_init(|| {
        let passive = std::env::var("OPTC_WAIT_POLICY").is_ok_and(|v| v == "passive");
        std::sync::atomic::AtomicBool::new(!passive)
    })
}

/// Active waiting (the default): during a run, and for 50 us after it, idle pool workers
/// poll for the next parallel node (yielding the core to other runnable threads) instead of
/// sleeping, like onnxruntime's and OpenMP's spinning thread pools. Measured on 2 cores at
/// 2 threads: 8-18% lower latency for BERT-tiny and the MLP, 3% for MobileNetV2, but 5-30%
/// higher when another process competes for the cores. `false` (or the environment variable
/// `OPTC_WAIT_POLICY=passive`) makes workers sleep between parallel nodes.
pub fn set_active_wait(on: bool) {
    active_wait().store(on, Ordering::Relaxed);
}

/// Start a run that calls `optc_rt_parallel_for` from this thread with more than one
/// thread: workers that finish a job poll for the next one until the guard is dropped
/// (with active waiting, see [`set_active_wait`]).
pub fn run_begin() -> RunGuard {
    if !active_wait().load(Ordering::Relaxed) {
        return RunGuard(false);
    }
    let threads = match THREADS.with(|t| t.get()) {
        0 => available_cores(),
        t => t,
    };
    if threads <= 1 {
        return RunGuard(false);
    }
    let p = pool();
    if p.workers == 0 {
        return RunGuard(false);
    }
    // No wake-up here: sleeping workers wake for the run's first job (as between runs) and
    // then keep polling until the run ends. Waking them up front measured slower on short
    // runs (the MLP: one parallel node).
    p.hot.fetch_add(1, Ordering::AcqRel);
    RunGuard(true)
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if self.0 {
            pool().hot.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn pool() -> &'static ThreadPool {
    static POOL: OnceLock<&'static ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let workers = available_cores().saturating_sub(1).min(63);
        let p: &'static ThreadPool = Box::leak(Box::new(ThreadPool {
            state: Mutex::new(ThreadPoolState {
                job: None,
                want: 0,
                generation: 0,
                sleepers: 0,
            }),
            wake: Condvar::new(),
            finished: Condvar::new(),
            busy: Mutex::new(()),
            workers,
            gen: AtomicU64::new(0),
            caller_asleep: std::sync::atomic::AtomicBool::new(false),
            hot: AtomicUsize::new(0),
        }));
        for k in 0..workers {
            let _ = std::thread::Builder::new()
                .name(format!("optc-worker-{k}"))
                .spawn(move || worker(p));
        }
        p
    })
}

fn worker(p: &'static ThreadPool) {
    let mut seen = 0u64;
    loop {
        // During a run, and for `GRACE` after the last one ended (back-to-back runs), poll
        // for the next job (see `ThreadPool::hot`); then sleep.
        let mut cool: Option<std::time::Instant> = None;
        let active = active_wait().load(Ordering::Relaxed);
        while active && p.gen.load(Ordering::Acquire) == seen {
            if p.hot.load(Ordering::Acquire) > 0 {
                cool = None;
            } else if cool.get_or_insert_with(std::time::Instant::now).elapsed() > GRACE {
                break;
            }
            // Yield, not just spin: when other threads compete for the cores, the time goes
            // to them (often the thread that posts the next job).
            std::thread::yield_now();
        }
        let job = {
            let mut st = p.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if st.generation != seen && st.want > 0 {
                    if let Some(j) = st.job.clone() {
                        seen = st.generation;
                        st.want -= 1;
                        break Some(j);
                    }
                }
                if st.generation != seen && st.want == 0 {
                    seen = st.generation;
                }
                if p.hot.load(Ordering::Acquire) > 0 {
                    // A run is in progress: back to polling (without the lock).
                    break None;
                }
                // Sleeps while idle between runs: no spinning.
                st.sleepers += 1;
                st = p.wake.wait(st).unwrap_or_else(|e| e.into_inner());
                st.sleepers -= 1;
            }
        };
        let Some(job) = job else {
            continue;
        };
        job.work();
        // `done` (AcqRel in `work`) then the flag, SeqCst on both sides with the caller's flag
        // then `done`: one of the two sees the other's write.
        std::sync::atomic::fence(Ordering::SeqCst);
        if job.done.load(Ordering::Acquire) == job.n && p.caller_asleep.load(Ordering::SeqCst) {
            let _g = p.state.lock().unwrap_or_else(|e| e.into_inner());
            p.finished.notify_all();
        }
    }
}

/// Run `task(ctx, i)` for every `i` in `0..n`, possibly concurrently on the pool's threads
/// (as many as [`set_thread_count`] allows for the calling thread). Returns when all are done.
///
/// # Safety contract
/// Called by generated code: `task` must be safe to call concurrently with distinct `i` and
/// `ctx` must stay valid until this returns (it does: we wait for every item).
pub extern "C" fn optc_rt_parallel_for(task: TaskFn, ctx: *const u8, n: u64) {
    let threads = match THREADS.with(|t| t.get()) {
        0 => available_cores(),
        t => t,
    };
    if n <= 1 || threads <= 1 {
        for i in 0..n {
            task(ctx, i);
        }
        return;
    }
    let p = pool();
    let helpers = (threads - 1).min(p.workers).min(n as usize - 1);
    let guard = match p.busy.try_lock() {
        Ok(g) if helpers > 0 => g,
        _ => {
            for i in 0..n {
                task(ctx, i);
            }
            return;
        }
    };
    let job = Arc::new(Job {
        f: task,
        ctx: ctx as usize,
        n,
        next: AtomicU64::new(0),
        done: AtomicU64::new(0),
    });
    {
        let mut st = p.state.lock().unwrap_or_else(|e| e.into_inner());
        st.job = Some(job.clone());
        st.want = helpers;
        st.generation = st.generation.wrapping_add(1);
        p.gen.store(st.generation, Ordering::Release);
        if st.sleepers > 0 {
            p.wake.notify_all();
        }
    }
    job.work();
    // Wait until helpers finished their items: briefly spinning, then (during a run with
    // active waiting) yielding, else sleeping.
    let polling = p.hot.load(Ordering::Acquire) > 0 && active_wait().load(Ordering::Relaxed);
    let mut spins = 0u32;
    while job.done.load(Ordering::Acquire) < n {
        if spins < 2000 {
            spins += 1;
            std::hint::spin_loop();
            continue;
        }
        if polling {
            std::thread::yield_now();
            continue;
        }
        let st = p.state.lock().unwrap_or_else(|e| e.into_inner());
        p.caller_asleep.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        if job.done.load(Ordering::Acquire) < n {
            let _st = p
                .finished
                .wait_timeout(st, std::time::Duration::from_millis(1))
                .unwrap_or_else(|e| e.into_inner());
        }
        p.caller_asleep.store(false, Ordering::SeqCst);
    }
    {
        let mut st = p.state.lock().unwrap_or_else(|e| e.into_inner());
        st.job = None;
        st.want = 0;
    }
    drop(guard);
}
