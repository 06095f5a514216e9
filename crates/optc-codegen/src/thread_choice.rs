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
//! all it may use) whose recent runs were faster, and about once a second runs the other arm
//! twice to see whether that changed; after a look that switched arms, the next comes within
//! 0.2 s (`OPTC_ADAPTIVE_THREADS=0` turns this off).

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

/// Runs of the other arm per look.
const LOOK_RUNS: u32 = 2;
/// Runs before the first look (the first runs warm caches and the pool up).
const FIRST_LOOK_AFTER: u64 = 8;
/// Time between looks at the other arm.
const LOOK_EVERY_NS: u64 = 1_000_000_000;
/// Time to the next look after a look switched arms: a switch may come from a moment that
/// has passed (a look at one thread while the vCPUs were briefly far apart), so it is checked
/// again soon.
const RECHECK_AFTER_NS: u64 = 200_000_000;
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
    /// Runs of the other arm left in the look in progress, and their sum (ns).
    looking: u32,
    look_sum: f64,
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
            looking: 0,
            look_sum: 0.0,
            last_look_ns: 0,
            switched: false,
        }
    }

    /// The arm for the next run, at time `now_ns`.
    pub fn pick(&mut self, now_ns: u64) -> Arm {
        if self.looking == 0 {
            let due = if self.runs < FIRST_LOOK_AFTER {
                false
            } else if self.estimate[self.current.other().index()].is_none() {
                true
            } else {
                let every = if self.switched {
                    RECHECK_AFTER_NS
                } else {
                    LOOK_EVERY_NS
                };
                now_ns.saturating_sub(self.last_look_ns) >= every
            };
            if due {
                self.looking = LOOK_RUNS;
                self.look_sum = 0.0;
                self.last_look_ns = now_ns;
            }
        }
        if self.looking > 0 {
            self.current.other()
        } else {
            self.current
        }
    }

    /// A run of `arm` took `ns`.
    pub fn record(&mut self, arm: Arm, ns: u64) {
        self.runs += 1;
        let ns = ns as f64;
        if self.looking > 0 && arm == self.current.other() {
            self.looking -= 1;
            self.look_sum += ns;
            if self.looking == 0 {
                let other = self.look_sum / f64::from(LOOK_RUNS);
                self.estimate[arm.index()] = Some(other);
                let mine = self.estimate[self.current.index()];
                self.switched = mine.is_none_or(|m| other < SWITCH_BELOW * m);
                if self.switched {
                    self.current = arm;
                }
            }
            return;
        }
        if arm == self.current {
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
        // A look of two runs about once a second (the first after 8 runs).
        assert!(count[0] >= 2 * 10 && count[0] <= 2 * 12, "{count:?}");
    }

    #[test]
    fn takes_one_thread_when_it_is_faster_and_goes_back_when_that_changes() {
        let mut c = ThreadChoice::new();
        let far = times(7_200_000, 8_200_000);
        let count = simulate(&mut c, 0, 500, 7_000_000, far);
        assert_eq!(c.current(), Arm::One);
        // Only the first runs, and a look now and then, took 2 threads.
        assert!(count[1] <= 8 + 2 * 5, "{count:?}");
        // The vCPUs come near again: the next look sees it and 2 threads take over.
        let near = times(7_200_000, 4_100_000);
        simulate(&mut c, 500 * 7_000_000, 300, 7_000_000, near);
        assert_eq!(c.current(), Arm::Many);
    }

    #[test]
    fn a_switch_made_in_a_passing_moment_is_undone_soon() {
        let mut c = ThreadChoice::new();
        let near = times(7_200_000, 4_100_000);
        // Two seconds near (the last look, at 1.032 s, kept two threads).
        simulate(&mut c, 0, 500, 4_000_000, near);
        assert_eq!(c.current(), Arm::Many);
        // Then two threads slow for a moment, long enough to lift their estimate, and the
        // look at one thread due at 2.032 s finds it faster.
        let far = times(7_200_000, 9_000_000);
        simulate(&mut c, 500 * 4_000_000, 12, 4_000_000, far);
        assert_eq!(c.current(), Arm::One);
        // Near again: within a quarter second two threads are back (not after a second).
        let start = 512 * 4_000_000;
        simulate(&mut c, start, 250_000_000 / 7_200_000, 7_200_000, near);
        assert_eq!(c.current(), Arm::Many);
    }

    #[test]
    fn a_small_difference_does_not_switch() {
        let mut c = ThreadChoice::new();
        // One thread 3% faster: within the hysteresis, 2 threads stay (one thread only for
        // the looks).
        let count = simulate(&mut c, 0, 1000, 4_000_000, times(3_880_000, 4_000_000));
        assert_eq!(c.current(), Arm::Many);
        assert!(count[0] <= 2 * 4, "{count:?}");
    }
}
