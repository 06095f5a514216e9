//! A progress line on stderr for calibration and measurement loops: shown only when stderr is
//! a terminal and the loop has run for more than a second.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

pub(super) struct Progress {
    what: &'static str,
    total: usize,
    done: usize,
    start: Instant,
    shown: bool,
    terminal: bool,
}

impl Progress {
    pub fn new(what: &'static str, total: usize) -> Progress {
        Progress {
            what,
            total,
            done: 0,
            start: Instant::now(),
            shown: false,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn step(&mut self) {
        self.done += 1;
        if self.terminal && self.start.elapsed() > Duration::from_secs(1) {
            let width = 30;
            let filled = width * self.done / self.total.max(1);
            let elapsed = self.start.elapsed().as_secs_f64();
            let left = elapsed / self.done as f64 * (self.total - self.done) as f64;
            eprint!(
                "\r{:<24} [{}{}] {}/{} ({:.0} s left) ",
                self.what,
                "#".repeat(filled),
                " ".repeat(width - filled),
                self.done,
                self.total,
                left
            );
            let _ = std::io::stderr().flush();
            self.shown = true;
        }
    }

    pub fn done(&mut self) {
        if self.shown {
            eprintln!();
            self.shown = false;
        }
    }
}
