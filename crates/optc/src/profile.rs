//! Per-node profiles of a model's runs (`optc bench --profile`): a model compiled with
//! [`crate::Options::profile`] marks each kernel's start, the thread pool records each task
//! of a parallel node ([`optc_codegen::runtime::profile`]); [`profile`] runs the model for a
//! while and sums the time per kernel, and [`Profile::chrome_trace`] writes the tasks of both
//! threads on a timeline (Chrome's trace event format: `chrome://tracing`, Perfetto).

use crate::{CompiledModel, Error, Result, Tensor};
use optc_codegen::runtime::profile::{self as recorder, Recording};
use optc_codegen::KernelInfo;
use std::time::{Duration, Instant};

/// One kernel's share of the runs.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeProfile {
    /// Its position in the schedule.
    pub kernel: usize,
    pub name: String,
    /// The op, a fused node as `Conv+Add+Relu`.
    pub op: String,
    /// FLOPs of one run (contractions; 0 for the rest).
    pub flops: f64,
    /// Mean milliseconds per run.
    pub ms: f64,
    /// Of the runs' kernel time (0..1).
    pub share: f64,
    /// Tasks per run its parallel loop ran (0: it ran on the caller alone).
    pub tasks_per_run: f64,
}

impl NodeProfile {
    /// GFLOP/s while it ran (`None` for kernels without contraction FLOPs).
    pub fn gflops(&self) -> Option<f64> {
        (self.flops > 0.0 && self.ms > 0.0).then(|| self.flops / (self.ms * 1e6))
    }
}

/// What [`profile`] measured.
#[derive(Clone, Debug)]
pub struct Profile {
    pub runs: usize,
    /// Mean milliseconds per run from the first kernel's start to the last one's end.
    pub ms_per_run: f64,
    /// Every kernel that was called, the slowest first.
    pub nodes: Vec<NodeProfile>,
    kernels: Vec<KernelInfo>,
    recording: Recording,
}

/// Run `model` (compiled with [`crate::Options::profile`]) on `inputs` for about `seconds`
/// (at least 3 runs, after one unrecorded warm-up run) and profile the runs. Recording is
/// process-wide: profile one model at a time.
pub fn profile(model: &mut CompiledModel, inputs: &[Tensor], seconds: f64) -> Result<Profile> {
    let mut outputs = model.run(inputs)?;
    let inputs: Vec<&Tensor> = inputs.iter().collect();
    let inputs = &inputs[..];
    let kernels = model.kernels().to_vec();
    let budget = Duration::from_secs_f64(seconds.max(0.0));
    let start = Instant::now();
    let mut runs = 0;
    recorder::start();
    let ran = (|| {
        while runs < 3 || (start.elapsed() < budget && runs < 100_000) {
            model.run_into(inputs, &mut outputs)?;
            runs += 1;
        }
        Ok::<(), Error>(())
    })();
    let recording = recorder::stop();
    ran?;
    if recording.marks.is_empty() {
        return Err(Error::Input(
            "the model was not compiled for profiling (Options::profile)".into(),
        ));
    }
    Ok(summarize(kernels, recording, runs))
}

fn summarize(kernels: Vec<KernelInfo>, recording: Recording, runs: usize) -> Profile {
    let n = kernels.len();
    let mut ns = vec![0u64; n];
    let mut tasks = vec![0usize; n];
    for w in recording.marks.windows(2) {
        let k = w[0].kernel as usize;
        if k < n {
            ns[k] += w[1].ns.saturating_sub(w[0].ns);
        }
    }
    for t in &recording.tasks {
        if let Some(c) = tasks.get_mut(t.kernel as usize) {
            *c += 1;
        }
    }
    let total: u64 = ns.iter().sum();
    let runs_f = runs.max(1) as f64;
    let mut nodes: Vec<NodeProfile> = kernels
        .iter()
        .enumerate()
        .filter(|(_, k)| !k.skipped)
        .map(|(i, k)| NodeProfile {
            kernel: i,
            name: k.name.clone(),
            op: k.op.clone(),
            flops: k.flops,
            ms: ns[i] as f64 / 1e6 / runs_f,
            share: ns[i] as f64 / total.max(1) as f64,
            tasks_per_run: tasks[i] as f64 / runs_f,
        })
        .collect();
    nodes.sort_by(|a, b| b.ms.total_cmp(&a.ms).then(a.kernel.cmp(&b.kernel)));
    Profile {
        runs,
        ms_per_run: total as f64 / 1e6 / runs_f,
        nodes,
        kernels,
        recording,
    }
}

impl Profile {
    /// The first `max_runs` runs as a Chrome trace (JSON): per run, each kernel on the
    /// calling thread ("caller"), and each task of a parallel loop on the thread that ran it
    /// ("worker k"); times in microseconds from the first run's start.
    pub fn chrome_trace(&self, max_runs: usize) -> String {
        let marks = &self.recording.marks;
        let n = self.kernels.len() as u32;
        let t0 = marks.first().map_or(0, |m| m.ns);
        // Where run `max_runs` ends.
        let mut end_ns = u64::MAX;
        let mut ended = 0;
        for m in marks {
            if m.kernel == n {
                ended += 1;
                if ended == max_runs {
                    end_ns = m.ns;
                    break;
                }
            }
        }
        let us = |ns: u64| ns.saturating_sub(t0) as f64 / 1e3;
        let mut events: Vec<String> = vec![];
        let mut threads = std::collections::BTreeSet::from([0u32]);
        for w in marks.windows(2) {
            let k = w[0].kernel;
            if k >= n || w[0].ns > end_ns {
                continue;
            }
            let info = &self.kernels[k as usize];
            events.push(format!(
                r#"{{"name":{},"cat":{},"ph":"X","pid":1,"tid":0,"ts":{:.3},"dur":{:.3},"args":{{"kernel":{k},"gflop":{:.6}}}}}"#,
                json_string(&info.name),
                json_string(&info.op),
                us(w[0].ns),
                (w[1].ns.saturating_sub(w[0].ns)) as f64 / 1e3,
                info.flops / 1e9
            ));
        }
        for t in &self.recording.tasks {
            if t.start_ns > end_ns {
                continue;
            }
            let Some(info) = self.kernels.get(t.kernel as usize) else {
                continue;
            };
            threads.insert(t.thread);
            events.push(format!(
                r#"{{"name":{},"cat":"task","ph":"X","pid":1,"tid":{},"ts":{:.3},"dur":{:.3}}}"#,
                json_string(&format!("{} (task)", info.name)),
                t.thread,
                us(t.start_ns),
                (t.end_ns.saturating_sub(t.start_ns)) as f64 / 1e3
            ));
        }
        for t in threads {
            let name = if t == 0 {
                "caller".to_string()
            } else {
                format!("worker {}", t - 1)
            };
            events.push(format!(
                r#"{{"name":"thread_name","ph":"M","pid":1,"tid":{t},"args":{{"name":{}}}}}"#,
                json_string(&name)
            ));
        }
        format!(
            "{{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n{}\n]}}\n",
            events.join(",\n")
        )
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use optc_codegen::runtime::profile::{Mark, TaskSpan};

    fn kernel(name: &str, flops: f64, skipped: bool) -> KernelInfo {
        KernelInfo {
            name: name.into(),
            op: "Conv".into(),
            flops,
            skipped,
        }
    }

    #[test]
    fn sums_the_time_between_marks_per_kernel() {
        let kernels = vec![
            kernel("a", 2e6, false),
            kernel("r", 0.0, true),
            kernel("b", 0.0, false),
        ];
        let mark = |kernel, ns| Mark { kernel, ns };
        // Two runs: a 1000 ns then b 3000 ns; a 2000 ns then b 1000 ns (the skipped
        // reshape has no mark); the gap between runs counts for nobody.
        let recording = Recording {
            marks: vec![
                mark(0, 100),
                mark(2, 1100),
                mark(3, 4100),
                mark(0, 9000),
                mark(2, 11000),
                mark(3, 12000),
            ],
            tasks: vec![TaskSpan {
                kernel: 0,
                thread: 1,
                start_ns: 150,
                end_ns: 900,
            }],
        };
        let p = summarize(kernels, recording, 2);
        // The slowest first: b (2000 ns per run), a (1500 ns per run).
        assert_eq!(p.nodes.len(), 2);
        let (b, a) = (&p.nodes[0], &p.nodes[1]);
        assert_eq!((b.name.as_str(), b.ms), ("b", 2e-3));
        assert_eq!((a.name.as_str(), a.ms), ("a", 1.5e-3));
        assert!((p.ms_per_run - 3.5e-3).abs() < 1e-12);
        assert!((a.share - 3.0 / 7.0).abs() < 1e-12);
        assert_eq!(a.tasks_per_run, 0.5);
        // 2 MFLOP in 1.5 us.
        assert!((a.gflops().unwrap() - 2e6 / 1.5e3).abs() < 1e-6);
        assert_eq!(b.gflops(), None);
        let trace = p.chrome_trace(1);
        assert_eq!(trace.matches(r#""ph":"X""#).count(), 3, "{trace}");
        assert!(trace.contains(r#""name":"worker 0""#), "{trace}");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
    }
}
