//! Every fuzz target on a fixed, seeded set of inputs: what CI runs on each commit.
//!
//! The inputs are the seed models and their mutations (`optc_fuzz::mutate`), bytes from a
//! seeded generator for the graph and input targets, and every file kept in
//! `regressions/<target>/` (a crash the fuzzer once found). `OPTC_FUZZ_SCALE=N` runs N
//! times as many cases (a longer local run without libFuzzer). A case that panics is
//! written to `target/optc-fuzz-failures/` and named in the failure, ready to become a
//! regression file. An allocation above 1 GiB aborts the run: absurd sizes must be refused
//! before anything is allocated.

use optc_fuzz::source::SplitMix;
use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The largest single allocation any case may make.
const ALLOCATION_LIMIT: usize = 1 << 30;

struct Guard;

// SAFETY: forwards to the system allocator; only refuses (null) requests above the limit,
// which the standard library turns into `handle_alloc_error` (an abort that names the size).
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: the caller's layout contract is passed on unchanged.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOCATION_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > ALLOCATION_LIMIT {
            return std::ptr::null_mut();
        }
        // SAFETY: as in `alloc`; `ptr` came from this allocator with `layout`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Guard = Guard;

fn scale() -> usize {
    std::env::var("OPTC_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Run `target` on `data`; a panic saves the input and fails with its path.
fn case(name: &str, data: &[u8], target: fn(&[u8])) {
    let result = catch_unwind(AssertUnwindSafe(|| target(data)));
    if let Err(e) = result {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/optc-fuzz-failures");
        let _ = std::fs::create_dir_all(&dir);
        let hash = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        let path = dir.join(format!("{name}-{hash:016x}"));
        let _ = std::fs::write(&path, data);
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("fuzz target {name} failed on {}: {msg}", path.display());
    }
}

fn regressions(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn run_regressions(target: &str, f: fn(&[u8])) {
    for path in regressions(target) {
        let data = std::fs::read(&path).expect("regression file reads");
        case(target, &data, f);
    }
}

#[test]
fn seed_models_import() {
    for (name, bytes) in optc_fuzz::seeds::models() {
        if let Err(e) = optc_onnx::import_bytes(&bytes, &Default::default()) {
            // Only the dynamic-batch model needs a shape first; the others must import
            // (a seed that does not import explores little).
            assert!(
                !e.needs_values().is_empty() || e.message().contains("dynamic"),
                "seed model {name} does not import: {e}"
            );
        }
    }
}

#[test]
fn import_mutated_models() {
    run_regressions("import", optc_fuzz::import::target);
    let mut rng = SplitMix::new(1);
    for (_, bytes) in optc_fuzz::seeds::models() {
        case("import", &bytes, optc_fuzz::import::target);
        for _ in 0..2000 * scale() {
            let mut m = optc_fuzz::mutate::mutate(&bytes, &mut rng);
            if rng.below(3) == 0 {
                m = optc_fuzz::mutate::mutate(&m, &mut rng);
            }
            case("import", &m, optc_fuzz::import::target);
        }
    }
}

#[test]
fn import_and_compile_mutated_models() {
    run_regressions("import_compiled", optc_fuzz::import::target_compiled);
    let mut rng = SplitMix::new(2);
    for (_, bytes) in optc_fuzz::seeds::models() {
        case(
            "import_compiled",
            &bytes,
            optc_fuzz::import::target_compiled,
        );
        for _ in 0..80 * scale() {
            let m = optc_fuzz::mutate::mutate(&bytes, &mut rng);
            case("import_compiled", &m, optc_fuzz::import::target_compiled);
        }
    }
}

#[test]
fn text_parser() {
    run_regressions("text", optc_fuzz::text::target);
    let mut rng = SplitMix::new(3);
    for i in 0..800 * scale() {
        let Some(graph) = optc_fuzz::graphs::generate(&rng.bytes(64)) else {
            continue;
        };
        let text = optc_ir::text::print(&graph).into_bytes();
        case("text", &text, optc_fuzz::text::target);
        // Damaged text: bytes flipped, cut, repeated.
        for _ in 0..4 {
            let mut t = text.clone();
            let at = rng.below(t.len());
            match (i + rng.below(3)) % 3 {
                0 => t.truncate(at),
                1 => t[at] = b"0123456789x[](),:=%-.e \n"[rng.below(24)],
                _ => {
                    let end = (at + 1 + rng.below(40)).min(t.len());
                    let chunk = t[at..end].to_vec();
                    t.splice(at..at, chunk);
                }
            }
            case("text", &t, optc_fuzz::text::target);
        }
    }
}

#[test]
fn random_graphs_agree_with_the_interpreter() {
    run_regressions("graphs", optc_fuzz::graphs::target);
    let mut rng = SplitMix::new(4);
    let mut checked = 0;
    for _ in 0..1000 * scale() {
        let data = rng.bytes(96);
        if optc_fuzz::graphs::generate(&data).is_some() {
            checked += 1;
        }
        case("graphs", &data, optc_fuzz::graphs::target);
    }
    let agreed = optc_fuzz::differential::AGREED.load(std::sync::atomic::Ordering::Relaxed);
    let refused = optc_fuzz::differential::REFUSED.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!("{checked} graphs; compiled runs: {agreed} agreed, {refused} refused");
    assert!(checked >= 850 * scale(), "only {checked} graphs generated");
    assert!(
        agreed >= refused,
        "optc refused most graphs ({refused} of {})",
        agreed + refused
    );
}

#[test]
fn wrong_inputs() {
    run_regressions("inputs", optc_fuzz::inputs::target);
    let mut rng = SplitMix::new(5);
    for _ in 0..3000 * scale() {
        case("inputs", &rng.bytes(32), optc_fuzz::inputs::target);
    }
}

#[test]
fn tensor_files() {
    run_regressions("tensors", optc_fuzz::tensors::target);
    let mut rng = SplitMix::new(7);
    let seeds: Vec<Vec<u8>> = {
        let t = optc_ir::Tensor::from_f32(vec![2, 3], vec![1.0, -2.0, 0.5, 3.0, f32::NAN, 0.0])
            .expect("6 values");
        let i = optc_ir::Tensor::new(vec![4], optc_ir::Data::I64(vec![1, -1, 1 << 40, 0]))
            .expect("4 values");
        vec![
            optc_onnx::tensor_to_pb(&t, "x"),
            optc_onnx::tensor_to_pb(&i, "i"),
            optc::npy::to_bytes(&t),
            optc::npy::to_bytes(&i),
        ]
    };
    for seed in &seeds {
        case("tensors", seed, optc_fuzz::tensors::target);
        for _ in 0..1500 * scale() {
            let mut b = seed.clone();
            for _ in 0..1 + rng.below(3) {
                if b.is_empty() {
                    break;
                }
                let at = rng.below(b.len());
                match rng.below(4) {
                    0 => b.truncate(at),
                    1 => b[at] ^= 1 << rng.below(8),
                    2 => b[at] = [0, 0xff, b'9', b','][rng.below(4)],
                    _ => {
                        let chunk = b[at..(at + 1 + rng.below(12)).min(b.len())].to_vec();
                        b.splice(at..at, chunk);
                    }
                }
            }
            case("tensors", &b, optc_fuzz::tensors::target);
        }
    }
}
