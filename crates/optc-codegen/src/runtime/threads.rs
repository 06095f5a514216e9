//! Threads: a persistent pool behind the `optc_rt_parallel_for` hook.
//!
//! Workers sleep when idle. During a JIT run ([`run_begin`], called by `JitModel::run`) and
//! 50 us after it, they poll for the next parallel node, yielding the core, and are woken
//! through the condvar only when one sleeps. The caller of a parallel node spins for its end
//! (up to 2 ms, then sleeps). [`set_active_wait`]`(false)` or `OPTC_WAIT_POLICY=passive`
//! turns the polling off.
//!
//! Contention: when a worker's yields give most of its polling time to other threads
//! ([`Polling`]), another process wants the cores; for the next 200 ms workers then sleep
//! between nodes, and a worker woken on the CPU of the job's caller moves to another CPU
//! (`affinity.rs`). Measured with one `yes` busy on one of two cores, 2 threads against 1:
//! polling workers took turns with the caller on one core and gained nothing (1.0x; the
//! scheduler wakes a thread next to its waker and never splits them again); sleeping workers
//! wake with the scheduler's credit for the time they slept and run exactly when there is
//! work, but landed on the caller's CPU often (1.05-1.15x, erratic); kept off it, resnet18
//! runs 1.36x and mobilenet_v2 1.22x faster than one thread (its ~55 nodes of ~170 us pay a
//! wake-up each). A caller that yields or sleeps at a node's end waits a time slice for its
//! core again, so it spins. A whole run shorter than a wake-up (`JitModel::run`: under
//! 300 us, the MLP) takes one thread while [`contended`] (0.87x -> 1.0x for the MLP).

use super::affinity::{current_cpu, Affinity};
use super::profile::{self, now_ns};
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

/// Number of cores of this machine, read once: `available_parallelism` reads the affinity
/// mask and the cgroup quota files at each call (28 us here), and this is asked per run and
/// per parallel node of a model whose thread count is 0 (all cores). The pool's size is fixed
/// at its first use from the same number.
pub fn available_cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

struct Job {
    f: TaskFn,
    ctx: usize,
    n: u64,
    /// The items not yet claimed, `[front, back)`: `front` in the low 32 bits, `back` in
    /// the high ones.
    unclaimed: AtomicU64,
    done: AtomicU64,
}

impl Job {
    fn new(f: TaskFn, ctx: usize, n: u64) -> Job {
        Job {
            f,
            ctx,
            n,
            unclaimed: AtomicU64::new(n << 32),
            done: AtomicU64::new(0),
        }
    }

    /// Claim and run items until none are left; returns after its last item finished. The
    /// caller claims from the front, the workers from the back: a node's first items run
    /// on the caller and its last on a worker, as the next node's do, so the part of a
    /// tensor one core wrote is mostly the part it reads next (on a VM whose vCPUs sit on
    /// two chiplets, a read of the other core's writes crosses between them).
    fn work(&self, from_back: bool) {
        loop {
            let mut cur = self.unclaimed.load(Ordering::Relaxed);
            let i = loop {
                let (front, back) = (cur & 0xffff_ffff, cur >> 32);
                if front >= back {
                    return;
                }
                let (i, next) = if from_back {
                    (back - 1, ((back - 1) << 32) | front)
                } else {
                    (front, (back << 32) | (front + 1))
                };
                match self.unclaimed.compare_exchange_weak(
                    cur,
                    next,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break i,
                    Err(now) => cur = now,
                }
            };
            run_task(self.f, self.ctx as *const u8, i);
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
    /// Until when ([`now_ns`]) idle workers sleep between the parallel
    /// nodes of a run instead of polling: set when a polling worker's yields gave
    /// other threads most of its time, i.e. another process wanted its core (see [`Polling`]).
    contended_until: AtomicU64,
    /// The CPU the caller of the current job ran on when it posted it (`usize::MAX`:
    /// unknown).
    caller_cpu: AtomicUsize,
}

/// How long idle workers keep polling after a run ends, so that back-to-back runs (a
/// serving loop, a benchmark) find them awake.
const GRACE: std::time::Duration = std::time::Duration::from_micros(50);

/// A worker's polling: how much of its polling time went to other threads in its yields.
/// When another process keeps the core busy, each yield hands it a time slice
/// (milliseconds); an occasional kernel thread or interrupt takes little.
struct Polling {
    polled: std::time::Duration,
    yielded: std::time::Duration,
}

impl Polling {
    fn new() -> Polling {
        Polling {
            polled: std::time::Duration::ZERO,
            yielded: std::time::Duration::ZERO,
        }
    }

    /// Yield the core; whether the cores are contended (see [`Polling::record`]).
    fn yield_now(&mut self) -> bool {
        let t = std::time::Instant::now();
        std::thread::yield_now();
        self.record(t.elapsed())
    }

    /// Count a yield that took `took`; whether the cores are contended: over the last 2 ms
    /// or more of polling, other threads had more than half of it.
    fn record(&mut self, took: std::time::Duration) -> bool {
        // A yield that returns at once (the system call: about a microsecond) gave nothing
        // away; one that took longer ran another thread for that long.
        if took > std::time::Duration::from_micros(20) {
            self.yielded += took;
        }
        self.polled += took;
        if self.polled < std::time::Duration::from_millis(2) {
            return false;
        }
        let contended = self.yielded * 2 > self.polled;
        *self = Polling::new();
        contended
    }
}

/// How long workers stop polling after they saw contention (then they try again).
const CONTENDED_FOR: std::time::Duration = std::time::Duration::from_millis(200);

/// How long the caller of a parallel node spins for its helpers' last items before it
/// sleeps: it is the run's critical path, and under contention a thread that sleeps or
/// yields waits a whole scheduler time slice (milliseconds) for a core again.
const JOIN_SPIN: std::time::Duration = std::time::Duration::from_millis(2);

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
/// 2 threads: 8-18% lower latency for BERT-tiny and the MLP, 3% for MobileNetV2. When
/// another process competes for the cores, workers notice (their yields give most of the time away) and sleep
/// between nodes without being told. `false` (or the environment variable
/// `OPTC_WAIT_POLICY=passive`) makes workers always sleep between parallel nodes.
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

/// Whether the pool's workers found, within the last 200 ms, that another process wants the
/// cores (see [`Polling`]). False before the pool exists.
pub fn contended() -> bool {
    POOL.get()
        .is_some_and(|p| p.contended_until.load(Ordering::Relaxed) > now_ns())
}

static POOL: OnceLock<&'static ThreadPool> = OnceLock::new();

fn pool() -> &'static ThreadPool {
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
            contended_until: AtomicU64::new(0),
            caller_cpu: AtomicUsize::new(usize::MAX),
        }));
        for k in 0..workers {
            let _ = std::thread::Builder::new()
                .name(format!("optc-worker-{k}"))
                .spawn(move || worker(p, k));
        }
        p
    })
}

fn worker(p: &'static ThreadPool, index: usize) {
    profile::set_thread(index as u32 + 1);
    let mut seen = 0u64;
    let mut polled = Polling::new();
    let mut affinity = Affinity::new();
    loop {
        // During a run, and for `GRACE` after the last one ended (back-to-back runs), poll
        // for the next job (see `ThreadPool::hot`); then sleep.
        let mut cool: Option<std::time::Instant> = None;
        let active = active_wait().load(Ordering::Relaxed);
        while active && p.gen.load(Ordering::Acquire) == seen {
            if p.contended_until.load(Ordering::Relaxed) > now_ns() {
                break;
            }
            if p.hot.load(Ordering::Acquire) > 0 {
                cool = None;
            } else if cool.get_or_insert_with(std::time::Instant::now).elapsed() > GRACE {
                break;
            }
            // Yield, not just spin: when other threads compete for the cores, the time goes
            // to them. When they took most of it, one wants the core: then sleep between the nodes
            // for a while, leaving the core to it (and to this run's caller) instead of
            // taking a share of it to poll.
            if polled.yield_now() {
                let until = now_ns() + CONTENDED_FOR.as_nanos() as u64;
                p.contended_until.store(until, Ordering::Relaxed);
                break;
            }
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
                if p.hot.load(Ordering::Acquire) > 0
                    && active_wait().load(Ordering::Relaxed)
                    && p.contended_until.load(Ordering::Relaxed) <= now_ns()
                {
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
        // Contended: when woken on the caller's CPU (the scheduler tends to wake a thread
        // where its waker runs), the two would take turns on one core while the other core
        // runs the competing process; move to another CPU. Uncontended: all CPUs again.
        if p.contended_until.load(Ordering::Relaxed) > now_ns() {
            let caller = p.caller_cpu.load(Ordering::Relaxed);
            if current_cpu() == Some(caller) {
                affinity.avoid(caller);
            }
        } else if affinity.changed() {
            affinity.restore();
        }
        job.work(true);
        // `done` (AcqRel in `work`) then the flag, SeqCst on both sides with the caller's flag
        // then `done`: one of the two sees the other's write.
        std::sync::atomic::fence(Ordering::SeqCst);
        if job.done.load(Ordering::Acquire) == job.n && p.caller_asleep.load(Ordering::SeqCst) {
            let _g = p.state.lock().unwrap_or_else(|e| e.into_inner());
            p.finished.notify_all();
        }
    }
}

/// `task(ctx, i)`, recorded as a task while a profile records.
fn run_task(task: TaskFn, ctx: *const u8, i: u64) {
    if profile::on() {
        let t = now_ns();
        task(ctx, i);
        profile::task(t);
    } else {
        task(ctx, i);
    }
}

/// `task(ctx, i)` for every `i` in `0..n` on this thread.
fn serial(task: TaskFn, ctx: *const u8, n: u64) {
    for i in 0..n {
        run_task(task, ctx, i);
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
    // (More items than the 32-bit halves of `Job::unclaimed` count: one thread.)
    if n <= 1 || threads <= 1 || n > u64::from(u32::MAX) {
        serial(task, ctx, n);
        return;
    }
    let p = pool();
    let helpers = (threads - 1).min(p.workers).min(n as usize - 1);
    let guard = match p.busy.try_lock() {
        Ok(g) if helpers > 0 => g,
        _ => {
            serial(task, ctx, n);
            return;
        }
    };
    let job = Arc::new(Job::new(task, ctx as usize, n));
    {
        let mut st = p.state.lock().unwrap_or_else(|e| e.into_inner());
        p.caller_cpu
            .store(current_cpu().unwrap_or(usize::MAX), Ordering::Relaxed);
        st.job = Some(job.clone());
        st.want = helpers;
        st.generation = st.generation.wrapping_add(1);
        p.gen.store(st.generation, Ordering::Release);
        if st.sleepers > 0 {
            p.wake.notify_all();
        }
    }
    job.work(false);
    // Wait until helpers finished their items: spinning (for up to `JOIN_SPIN`), then
    // sleeping.
    let start = std::time::Instant::now();
    let mut spins = 0u32;
    while job.done.load(Ordering::Acquire) < n {
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(64) || start.elapsed() < JOIN_SPIN {
            std::hint::spin_loop();
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

#[cfg(test)]
mod tests {
    use super::Polling;
    use std::time::Duration;

    #[test]
    fn polling_sees_contention_only_when_yields_give_most_time_away() {
        // Quick yields (nothing else wanted the core): never contended.
        let mut p = Polling::new();
        assert!((0..10_000).all(|_| !p.record(Duration::from_micros(1))));
        // An occasional kernel thread (50 us every 500 us of polling): not contended.
        let mut p = Polling::new();
        for _ in 0..20 {
            let mut contended = false;
            for _ in 0..450 {
                contended |= p.record(Duration::from_micros(1));
            }
            contended |= p.record(Duration::from_micros(50));
            assert!(!contended);
        }
        // Another process's time slice (4 ms) in one yield: contended.
        let mut p = Polling::new();
        assert!(!p.record(Duration::from_micros(1)));
        assert!(p.record(Duration::from_millis(4)));
        // The window starts over after each verdict.
        assert!(!p.record(Duration::from_micros(1)));
    }
}
