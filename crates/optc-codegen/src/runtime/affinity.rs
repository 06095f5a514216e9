//! Keeping a pool worker off one CPU (Linux; elsewhere these do nothing).
//!
//! Under contention the scheduler may wake a worker on the CPU of the thread that posted the
//! job (it wakes it from there), where the two then take turns on one core while the other
//! core runs the competing process. [`Affinity::avoid`] moves the worker to the other CPUs
//! the process may use; [`Affinity::restore`] gives it back its original set.

/// The CPU the calling thread runs on.
pub(super) fn current_cpu() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sched_getcpu` takes no arguments and only reports the caller's CPU.
        let c = unsafe { libc::sched_getcpu() };
        usize::try_from(c).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// A thread's CPU set, as it was before [`Affinity::avoid`] changed it.
pub(super) struct Affinity {
    #[cfg(target_os = "linux")]
    original: Option<libc::cpu_set_t>,
}

impl Affinity {
    pub fn new() -> Affinity {
        Affinity {
            #[cfg(target_os = "linux")]
            original: None,
        }
    }

    /// Whether the set was changed (and not restored).
    pub fn changed(&self) -> bool {
        #[cfg(target_os = "linux")]
        {
            self.original.is_some()
        }
        #[cfg(not(target_os = "linux"))]
        {
            false
        }
    }

    /// Let the calling thread run on its CPUs but `cpu` (when that leaves any).
    pub fn avoid(&mut self, cpu: usize) {
        #[cfg(target_os = "linux")]
        {
            let size = std::mem::size_of::<libc::cpu_set_t>();
            let original = match self.original {
                Some(set) => set,
                None => {
                    // SAFETY: an all-zero `cpu_set_t` is a valid (empty) set.
                    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                    // SAFETY: `set` is a writable `cpu_set_t` of `size` bytes.
                    if unsafe { libc::sched_getaffinity(0, size, &mut set) } != 0 {
                        return;
                    }
                    set
                }
            };
            if cpu >= libc::CPU_SETSIZE as usize {
                return;
            }
            let mut set = original;
            // SAFETY: `cpu` is below `CPU_SETSIZE`, inside the set's bits.
            let (had, others) = unsafe {
                let had = libc::CPU_ISSET(cpu, &set);
                libc::CPU_CLR(cpu, &mut set);
                (had, libc::CPU_COUNT(&set))
            };
            if !had || others == 0 {
                return;
            }
            // SAFETY: `set` is a valid `cpu_set_t` of `size` bytes, read by the call.
            if unsafe { libc::sched_setaffinity(0, size, &set) } == 0 {
                self.original = Some(original);
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = cpu;
    }

    /// Give the calling thread back the set it had before [`Affinity::avoid`].
    pub fn restore(&mut self) {
        #[cfg(target_os = "linux")]
        if let Some(set) = self.original.take() {
            let size = std::mem::size_of::<libc::cpu_set_t>();
            // SAFETY: `set` is a valid `cpu_set_t` of `size` bytes, read by the call.
            unsafe { libc::sched_setaffinity(0, size, &set) };
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::{current_cpu, Affinity};

    /// With two CPUs or more, avoiding the current CPU moves the thread at once, and
    /// restoring lets it run anywhere again.
    #[test]
    fn avoiding_a_cpu_moves_the_thread_and_restore_undoes_it() {
        std::thread::spawn(|| {
            let size = std::mem::size_of::<libc::cpu_set_t>();
            let get = || {
                // SAFETY: an all-zero `cpu_set_t` is a valid (empty) set.
                let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
                // SAFETY: `set` is a writable `cpu_set_t` of `size` bytes.
                assert_eq!(unsafe { libc::sched_getaffinity(0, size, &mut set) }, 0);
                // SAFETY: `set` is a valid set.
                (0..libc::CPU_SETSIZE as usize)
                    .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
                    .collect::<Vec<_>>()
            };
            let all = get();
            let cpu = current_cpu().expect("sched_getcpu works on Linux");
            let mut a = Affinity::new();
            a.avoid(cpu);
            if all.len() < 2 {
                // Nowhere else to go: nothing changes.
                assert!(!a.changed());
                return;
            }
            assert!(a.changed());
            assert_ne!(current_cpu(), Some(cpu));
            assert!(!get().contains(&cpu));
            a.restore();
            assert!(!a.changed());
            assert_eq!(get(), all);
        })
        .join()
        .unwrap();
    }
}
