//! Differential testing: a graph run by the interpreter (the oracle) and compiled by
//! optc, at several `-O` levels and on every target this host runs; outputs must agree.

use optc::{Options, Tensor};
use optc_ir::{DType, Graph};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The targets whose code runs on this host (the JIT needs the host to have the features).
pub fn host_targets() -> Vec<&'static str> {
    let mut t = vec!["native"];
    #[cfg(target_arch = "x86_64")]
    {
        t.push("x86_64-sse4.2");
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            t.push("x86_64-avx2");
            if std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("avx512vl")
                && std::is_x86_feature_detected!("avx512dq")
            {
                t.push("x86_64-avx512");
            }
        }
    }
    t
}

/// Floats agree when `|got - want| <= ATOL * scale + RTOL * |want|`, `scale` being the
/// largest finite magnitude of any value the interpreter computes (at least 1, see
/// `reference`): kernels sum in other orders and use polynomial approximations of
/// exp/tanh/erf.
const RTOL: f64 = 1e-3;
const ATOL: f64 = 1e-4;
/// The same for f64 outputs (both tolerances).
const F64_TOL: f64 = 1e-12;

/// How many compiled configurations agreed with the interpreter, and how many optc
/// refused, since the process started (the tests print them: a generator whose graphs
/// are all refused tests nothing).
pub static AGREED: AtomicUsize = AtomicUsize::new(0);
pub static REFUSED: AtomicUsize = AtomicUsize::new(0);

/// What one compiled configuration did with the graph.
#[derive(Debug)]
pub enum Outcome {
    /// The outputs agree with the interpreter.
    Agrees,
    /// optc refused the graph with an error (allowed: the message is kept).
    Refused(String),
}

/// Run `graph` in the interpreter on random inputs (`seed`), then compile it at each of
/// `levels` for the native target (and at the last level for the other host targets, with
/// two threads) and compare. Panics, with the graph printed, when an output differs.
/// Returns what each configuration did (empty when the interpreter itself refuses).
pub fn check(graph: &Graph, levels: &[u8], seed: u64) -> Vec<(String, Outcome)> {
    let inputs = optc::random_inputs(&graph.input_types(), seed);
    let Some((want, scale)) = reference(graph, &inputs) else {
        return vec![];
    };
    let mut configs: Vec<(u8, &str, usize)> = levels.iter().map(|&l| (l, "native", 1)).collect();
    if let Some(&last) = levels.last() {
        for t in host_targets().into_iter().skip(1) {
            configs.push((last, t, 2));
        }
    }
    let mut outcomes = vec![];
    for (level, target, threads) in configs {
        let name = format!("-O{level} --target {target} --threads {threads}");
        let opts = Options {
            opt_level: level,
            target: target.to_string(),
            threads,
            ..Default::default()
        };
        let got = optc::compile_graph(graph.clone(), &opts).and_then(|mut m| m.run(&inputs));
        let outcome = match got {
            Err(e) => {
                REFUSED.fetch_add(1, Ordering::Relaxed);
                Outcome::Refused(e.to_string())
            }
            Ok(got) => {
                if let Err(why) = agree_within(&got, &want, scale) {
                    panic!(
                        "optc {name} differs from the interpreter: {why}\n\
                         inputs: random_inputs(seed {seed})\ngraph:\n{}",
                        optc_ir::text::print(graph)
                    );
                }
                AGREED.fetch_add(1, Ordering::Relaxed);
                Outcome::Agrees
            }
        };
        outcomes.push((name, outcome));
    }
    outcomes
}

/// Whether compiled outputs agree with the reference's (tolerance scaled by the outputs).
pub fn agree(got: &[Tensor], want: &[Tensor]) -> Result<(), String> {
    agree_within(got, want, 1.0)
}

/// The interpreter's outputs for `graph`, and the largest finite magnitude of any float
/// value it computes on the way (at least 1): a sum that cancels down to a small output
/// still carries rounding of the size of its terms. One run of the graph with every float
/// value as an extra output; when that run fails (a dead node the plain run skips), the
/// plain run with scale 1. `None` when the interpreter refuses the graph.
fn reference(graph: &Graph, inputs: &[Tensor]) -> Option<(Vec<Tensor>, f64)> {
    let mut probe = graph.clone();
    let values: Vec<optc_ir::Value> = graph
        .g
        .node_indices()
        .flat_map(|n| {
            let k = graph.node(n).outputs.len();
            (0..k).map(move |p| optc_ir::Value::new(n, p))
        })
        .filter(|&v| graph.value_type(v).is_ok_and(|t| t.dtype == DType::F32))
        .collect();
    for (i, v) in values.into_iter().enumerate() {
        probe.add_output(&format!("probe.v{i}"), v);
    }
    match optc_ir::interp::run(&probe, inputs) {
        Ok(mut all) => {
            let scale = all
                .iter()
                .flat_map(|t| t.to_f64_vec())
                .filter(|v| v.is_finite())
                .fold(1.0f64, |m, v| m.max(v.abs()));
            all.truncate(graph.outputs.len());
            Some((all, scale))
        }
        Err(_) => optc_ir::interp::run(graph, inputs)
            .ok()
            .map(|want| (want, 1.0)),
    }
}

/// As [`agree`], the absolute tolerance scaled by at least `scale`.
pub fn agree_within(got: &[Tensor], want: &[Tensor], scale: f64) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{} outputs, the reference has {}",
            got.len(),
            want.len()
        ));
    }
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let scale = w
            .to_f64_vec()
            .iter()
            .filter(|v| v.is_finite())
            .fold(scale, |m, v| m.max(v.abs()));
        // f64: libm's erf against the interpreter's, fused multiply-adds, a few ulp.
        let (rtol, atol) = match w.dtype() {
            DType::F32 => (RTOL, ATOL * scale),
            DType::F64 => (F64_TOL, F64_TOL * scale),
            _ => (0.0, 0.0),
        };
        match optc::compare(g, w, rtol, atol) {
            Err(e) => return Err(format!("output {i}: {e}")),
            Ok(d) if !d.allclose => {
                return Err(format!(
                    "output {i} ({} {:?}): max abs error {:.3e}, max rel {:.3e} \
                     (allowed {atol:.1e} + {rtol:.0e} x |reference|)",
                    w.dtype(),
                    w.shape(),
                    d.max_abs,
                    d.max_rel
                ))
            }
            Ok(_) => {}
        }
    }
    Ok(())
}
