//! Choosing, run by run, between the threads asked for and one thread, by measuring both.
//!
//! Two threads are not always faster than one. On a 2-vCPU virtual machine (an AMD EPYC) the
//! host places the two vCPUs near each other (a core-to-core round trip of 60-130 ns,
//! `examples/core_round_trip.rs`) or far apart (340-690 ns: most likely on two chiplets, which
//! share no L3), and moves them every few seconds. Far apart, every parallel node reads the
//! other core's half of its input from the other chiplet, and MobileNetV2 at 2 threads took
//! 8.2 ms where one thread took 7.2 ms (near: 4.1 ms). Another process busy on a core changes
//! the balance too.
//! Neither is visible from inside: so a model measures. It mostly runs the arm (one thread or
//! all it may use) whose recent runs were faster, and about once a second looks at the other
//! arm to see whether that changed; after a look that switched arms, the next comes within
//! 0.2 s (`OPTC_ADAPTIVE_THREADS=0` turns this off).
//!
//! An arm is slow for a while after the other ran: its first run warms caches, and a pool
//! worker that slept through one-thread runs is woken on the caller's CPU, where the two take
//! turns until the scheduler moves it (2 ms measured on a 2-vCPU Xeon: the MLP's 15 us runs
//! took 45 us for 50 runs). Judged on its first runs, two threads lost to one (33 us) in half
//! the processes. So a look leaves out its first run and lasts at least
//! [`LOOK_MIN_NS`] of measured runs, its estimate weighted toward the last ones, and the first
//! look waits [`FIRST_LOOK_AFTER_NS`] past the first run. The next look comes a second (0.2 s
//! after a switch) after a look's end, or ten times the look's time when that is longer, so
//! looks take at most about a tenth of the time however long a run is.

/// The two ways a run can go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arm {
    /// One thread: the caller's.
    One,
    /// The threads the model was given.
    Many,
}

impl Arm {
    fn index(self) -> usize {
        match self {
            Arm::One => 0,
            Arm::Many => 1,
        }
    }
    fn other(self) -> Arm {
        match self {
            Arm::One => Arm::Many,
            Arm::Many => Arm::One,
        }
    }
}

/// Measured runs of the other arm per look, at least (after its first, which is not measured).
const LOOK_RUNS: u32 = 2;
/// Time in the measured runs of a look, at least: a look ends when it has both.
const LOOK_MIN_NS: u64 = 4_000_000;
/// Runs before the first look (the first runs warm caches and the pool up)...
const FIRST_LOOK_AFTER: u64 = 8;
/// ... and time since the first run.
const FIRST_LOOK_AFTER_NS: u64 = 10_000_000;
/// Time between looks at the other arm.
const LOOK_EVERY_NS: u64 = 1_000_000_000;
/// Time to the next look after a look switched arms: a switch may come from a moment that
/// has passed (a look at one thread while the vCPUs were briefly far apart), so it is checked
/// again soon.
const RECHECK_AFTER_NS: u64 = 200_000_000;
/// The time between looks is at least this many times the last look's (its runs, the
/// first included): a model whose runs take a third of a second looks every few seconds,
/// not every other run.
const LOOK_SHARE: u64 = 10;
/// The other arm must be this much faster to take over (hysteresis against noise).
const SWITCH_BELOW: f64 = 0.96;
/// Weight of a new run in the running estimate of the arm in use.
const NEW_WEIGHT: f64 = 0.2;

/// The state of the choice: estimates per arm and the look in progress.
#[derive(Clone, Debug)]
pub struct ThreadChoice {
    /// Running estimate of a run's time per arm (ns).
    estimate: [Option<f64>; 2],
    current: Arm,
    runs: u64,
    /// When the first run was picked (ns).
    first_ns: Option<u64>,
    /// A look at the other arm is in progress: its runs so far (the first not measured), the
    /// estimate from the measured ones and their total time (ns).
    looking: bool,
    look_runs: u32,
    look_estimate: f64,
    look_ns: u64,
    /// Time in all the runs of the look in progress (or the last one), the first included.
    look_total_ns: u64,
    /// A look ended at the last run: the next pick marks the time.
    ended: bool,
    /// When the last look ended (ns).
    last_look_ns: u64,
    /// The last look switched arms (the next comes after [`RECHECK_AFTER_NS`]).
    switched: bool,
}

impl Default for ThreadChoice {
    fn default() -> Self {
        ThreadChoice::new()
    }
}

impl ThreadChoice {
    pub fn new() -> ThreadChoice {
        ThreadChoice {
            estimate: [None, None],
            current: Arm::Many,
            runs: 0,
            first_ns: None,
            looking: false,
            look_runs: 0,
            look_estimate: 0.0,
            look_ns: 0,
            look_total_ns: 0,
            ended: false,
            last_look_ns: 0,
            switched: false,
        }
    }

    /// The arm for the next run, at time `now_ns`.
    pub fn pick(&mut self, now_ns: u64) -> Arm {
        let first_ns = *self.first_ns.get_or_insert(now_ns);
        if self.ended {
            self.last_look_ns = now_ns;
            self.ended = false;
        }
        if !self.looking {
            let due = if self.runs < FIRST_LOOK_AFTER
                || now_ns.saturating_sub(first_ns) < FIRST_LOOK_AFTER_NS
            {
                false
            } else if self.estimate[self.current.other().index()].is_none() {
                true
            } else {
                let every = if self.switched {
                    RECHECK_AFTER_NS
                } else {
                    LOOK_EVERY_NS
                }
                .max(LOOK_SHARE * self.look_total_ns);
                now_ns.saturating_sub(self.last_look_ns) >= every
            };
            if due {
                self.looking = true;
                self.look_runs = 0;
                self.look_estimate = 0.0;
                self.look_ns = 0;
                self.look_total_ns = 0;
            }
        }
        if self.looking {
            self.current.other()
        } else {
            self.current
        }
    }

    /// A run of `arm` took `ns`.
    pub fn record(&mut self, arm: Arm, ns: u64) {
        self.runs += 1;
        if self.looking && arm == self.current.other() {
            self.look_runs += 1;
            self.look_total_ns += ns;
            if self.look_runs == 1 {
                // The arm's first run after the other's: caches and workers still cold.
                return;
            }
            let measured = self.look_runs - 1;
            self.look_ns += ns;
            // The mean of the measured runs up to 1 / NEW_WEIGHT of them, then a running
            // estimate that forgets the look's early (still slow) runs.
            let weight = (1.0 / f64::from(measured)).max(NEW_WEIGHT);
            self.look_estimate += weight * (ns as f64 - self.look_estimate);
            if measured >= LOOK_RUNS && self.look_ns >= LOOK_MIN_NS {
                self.looking = false;
                self.ended = true;
                let other = self.look_estimate;
                self.estimate[arm.index()] = Some(other);
                let mine = self.estimate[self.current.index()];
                self.switched = mine.is_none_or(|m| other < SWITCH_BELOW * m);
                if self.switched {
                    self.current = arm;
                }
            }
            return;
        }
        // The first run (the pool starting, the workspace's first touch) says little.
        if arm == self.current && self.runs > 1 {
            let ns = ns as f64;
            let e = &mut self.estimate[arm.index()];
            *e = Some(match *e {
                Some(old) => old + NEW_WEIGHT * (ns - old),
                None => ns,
            });
        }
    }

    /// The arm runs take when not looking at the other.
    #[cfg(test)]
    pub fn current(&self) -> Arm {
        self.current
    }
}

/// Whether models choose their thread count by measuring (`OPTC_ADAPTIVE_THREADS=0`: no).
pub fn adaptive() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("OPTC_ADAPTIVE_THREADS").is_none_or(|v| v != "0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run times of a model: `one` ns at one thread, `many` at all.
    fn times(one: u64, many: u64) -> impl Fn(Arm) -> u64 + Copy {
        move |a| match a {
            Arm::One => one,
            Arm::Many => many,
        }
    }

    /// Runs `n` runs of a model whose arms take `times(arm)` ns, one run every `step` ns
    /// from `start`; returns how many runs took each arm.
    fn simulate(
        c: &mut ThreadChoice,
        start: u64,
        n: u64,
        step: u64,
        times: impl Fn(Arm) -> u64,
    ) -> [u64; 2] {
        let mut count = [0; 2];
        for i in 0..n {
            let arm = c.pick(start + i * step);
            count[arm.index()] += 1;
            c.record(arm, times(arm));
        }
        count
    }

    #[test]
    fn keeps_many_threads_when_they_are_faster_and_looks_rarely() {
        let mut c = ThreadChoice::new();
        // 4 ms runs at 2 threads, 7 ms at 1: ten seconds of runs.
        let count = simulate(&mut c, 0, 2500, 4_000_000, times(7_000_000, 4_000_000));
        assert_eq!(c.current(), Arm::Many);
        // A look of three runs (the first not measured) about once a second.
        assert!(count[0] >= 3 * 10 && count[0] <= 3 * 12, "{count:?}");
    }

    #[test]
    fn takes_one_thread_when_it_is_faster_and_goes_back_when_that_changes() {
        let mut c = ThreadChoice::new();
        let far = times(7_200_000, 8_200_000);
        let count = simulate(&mut c, 0, 500, 7_000_000, far);
        assert_eq!(c.current(), Arm::One);
        // Only the first runs, and a look now and then, took 2 threads.
        assert!(count[1] <= 8 + 3 * 5, "{count:?}");
        // The vCPUs come near again: the next look sees it and 2 threads take over.
        let near = times(7_200_000, 4_100_000);
        simulate(&mut c, 500 * 7_000_000, 300, 7_000_000, near);
        assert_eq!(c.current(), Arm::Many);
    }

    #[test]
    fn a_switch_made_in_a_passing_moment_is_undone_soon() {
        let mut c = ThreadChoice::new();
        let near = times(7_200_000, 4_100_000);
        // Two seconds near (the last look, ending at 1.056 s, kept two threads).
        simulate(&mut c, 0, 500, 4_000_000, near);
        assert_eq!(c.current(), Arm::Many);
        // Then two threads slow for a moment, long enough to lift their estimate, and the
        // look at one thread due at 2.056 s finds it faster.
        let far = times(7_200_000, 9_000_000);
        simulate(&mut c, 500 * 4_000_000, 20, 4_000_000, far);
        assert_eq!(c.current(), Arm::One);
        // Near again: within a quarter second two threads are back (not after a second).
        let start = 520 * 4_000_000;
        simulate(&mut c, start, 250_000_000 / 7_200_000, 7_200_000, near);
        assert_eq!(c.current(), Arm::Many);
    }

    /// The MLP on a 2-vCPU Xeon: 15 us runs at 2 threads, 33 us at one; but 2 threads take
    /// 45 us per run for their first 2 ms (the pool worker woken on the caller's CPU until the
    /// scheduler moves it), at the start and after each stretch of one-thread runs.
    #[test]
    fn an_arm_slow_only_while_it_warms_up_is_judged_warm() {
        let mut c = ThreadChoice::new();
        let mut now = 0;
        // Since when the arm in the runs has been running (ns).
        let mut since = (Arm::Many, 0);
        let mut count = [0u64; 2];
        while now < 3_000_000_000 {
            let arm = c.pick(now);
            if arm != since.0 {
                since = (arm, now);
            }
            let ns = match arm {
                Arm::One => 33_000,
                Arm::Many if now - since.1 < 2_000_000 => 45_000,
                Arm::Many => 15_000,
            };
            count[arm.index()] += 1;
            c.record(arm, ns);
            now += ns;
        }
        assert_eq!(c.current(), Arm::Many);
        // One thread only in the looks (4 ms each, about once a second): under 1% of runs.
        assert!(count[0] * 100 < count[1], "{count:?}");
    }

    /// Whisper's encoder at 2 threads: 150 ms runs, 300 ms at one thread. A look (three
    /// runs at one thread, 0.9 s) came again after a second from its start, i.e. right after
    /// it ended: 6 of 16 runs at one thread. Looks now take at most about a tenth of the time.
    #[test]
    fn looks_at_long_runs_take_a_tenth_of_the_time() {
        let mut c = ThreadChoice::new();
        let (one, many) = (300_000_000, 150_000_000);
        let mut now = 0;
        let mut time = [0u64; 2];
        while now < 60_000_000_000 {
            let arm = c.pick(now);
            let ns = if arm == Arm::One { one } else { many };
            time[arm.index()] += ns;
            c.record(arm, ns);
            now += ns;
        }
        assert_eq!(c.current(), Arm::Many);
        assert!(time[0] * 9 < time[1], "{time:?}");
    }

    #[test]
    fn a_small_difference_does_not_switch() {
        let mut c = ThreadChoice::new();
        // One thread 3% faster: within the hysteresis, 2 threads stay (one thread only for
        // the looks).
        let count = simulate(&mut c, 0, 1000, 4_000_000, times(3_880_000, 4_000_000));
        assert_eq!(c.current(), Arm::Many);
        assert!(count[0] <= 3 * 4, "{count:?}");
    }
}
