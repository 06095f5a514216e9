//! Shared by the criterion benches (`benches/sgemm.rs`, `benches/models.rs`): settings from the
//! environment, and timing that keeps its own per-sample record so each bench can print a
//! summary line (GFLOP/s, % of peak, ms) next to criterion's report.

use criterion::measurement::WallTime;
use criterion::{Bencher, BenchmarkGroup, Criterion, SamplingMode};
use std::time::{Duration, Instant};

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// `OPTC_BENCH_THREADS` (default 1).
pub fn threads() -> usize {
    env("OPTC_BENCH_THREADS").unwrap_or(1).max(1)
}

/// `OPTC_BENCH_SAMPLES` (default 20; criterion needs at least 10).
pub fn sample_size() -> usize {
    env("OPTC_BENCH_SAMPLES").unwrap_or(20).max(10)
}

/// Criterion settings, chosen so a whole `cargo bench` takes a few minutes:
/// `OPTC_BENCH_TIME` seconds of measurement per case (default 1; warm-up is half of it) and
/// `OPTC_BENCH_SAMPLES` samples. Criterion's own command-line flags (`-- --measurement-time 5`)
/// still override the times; the sample count is set per group from `OPTC_BENCH_SAMPLES`
/// because the summary lines take the median of exactly that many samples.
pub fn config() -> Criterion {
    let secs: f64 = env("OPTC_BENCH_TIME").unwrap_or(1.0_f64).max(0.01);
    Criterion::default()
        .measurement_time(Duration::from_secs_f64(secs))
        .warm_up_time(Duration::from_secs_f64(secs / 2.0))
        .sample_size(sample_size())
}

/// Per-group settings: exactly `sample_size()` samples (the summary lines take their median),
/// flat sampling (every sample runs the same number of iterations, so a sample's mean is
/// comparable with the others; criterion then reports the mean and its confidence interval
/// instead of a regression slope).
pub fn setup(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.sample_size(sample_size());
    group.sampling_mode(SamplingMode::Flat);
}

/// True when criterion only lists the benches (`cargo bench -- --list`): nothing is measured,
/// so nothing is compiled or printed.
pub fn listing() -> bool {
    std::env::args().any(|a| a == "--list")
}

/// True in criterion's test mode (`cargo bench -- --test`, `cargo test --benches`): every
/// bench runs once.
#[allow(dead_code)] // used by sgemm.rs only
pub fn testing() -> bool {
    std::env::args().any(|a| a == "--test")
}

/// Time `iters` calls of `f` for criterion (`Bencher::iter_custom`) and record the seconds
/// per call of this sample in `record`.
pub fn timed(b: &mut Bencher<'_>, record: &mut Vec<f64>, mut f: impl FnMut()) {
    b.iter_custom(|iters| {
        let t = Instant::now();
        for _ in 0..iters {
            f();
        }
        let e = t.elapsed();
        record.push(e.as_secs_f64() / iters.max(1) as f64);
        e
    });
}

/// Median seconds per call over the measured samples: the last `sample_size()` entries of
/// `record` (criterion's warm-up calls come first). `None` when the bench did not run
/// (filtered out).
pub fn median(record: &[f64]) -> Option<f64> {
    if record.is_empty() {
        return None;
    }
    let n = sample_size().min(record.len());
    let mut v = record[record.len() - n..].to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    Some(v[v.len() / 2])
}

/// Deterministic pseudo-random values in [-0.5, 0.5) (xorshift).
#[allow(dead_code)] // used by sgemm.rs only
pub fn rand(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}
