//! The e-graph optimizer: optc's IR in an `egg` e-graph, rewrite passes, a runner with
//! limits, and extraction by a target cost model.
//!
//! - [`lang`]: one e-node per IR op (attributes included), `Proj` for multi-output ops.
//! - [`analysis`]: dtype/shape per e-class, constants, folding through the interpreter.
//! - [`convert`]: IR → e-graph → IR.
//! - [`rules`]: a pass's rules (data or Rust), all type-guarded; [`FnRule`] for Rust.
//! - [`rule_file`], [`pattern`]: rules as data (`.rules` files): syntax, matching with
//!   attributes, building.
//! - [`soundness`]: checking a rule on random instances against the reference interpreter.
//! - [`query`]: what rules ask the e-graph (ops in a class, types, constants).
//! - [`cost`]: the cost model.
//! - [`lossy`]: lossy alternatives in the e-graph and extraction under an error budget.
//! - [`Pass`], [`optimize`]: passes by level, phases, stats for `optc explain`.

pub mod analysis;
pub mod convert;
pub mod cost;
pub mod lang;
pub mod lossy;
pub mod pattern;
pub mod query;
pub mod rule_file;
pub mod rules;
pub mod soundness;

pub use egg;

pub use analysis::{single_user, Data, OptAnalysis, OptEGraph};
pub use cost::{CostModel, EGraphCost};
pub use lang::{ENode, ENodeKind, OpKey};
pub use pattern::DataRule;
pub use rules::{Build, FnRule, Rule};

use optc_ir::{Graph, IrError, Result};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A rewrite pass: a named family of rules.
pub struct Pass {
    pub name: &'static str,
    /// Lowest `-O` level that runs it.
    pub level: u8,
    /// Exact passes preserve results; lossy ones run only when asked for.
    pub exact: bool,
    /// Whether the pass enables constant folding (the `fold` pass has no rules of its own:
    /// folding happens in the e-class analysis).
    pub folds: bool,
    pub rules: Vec<Rule>,
    /// Soundness cases of the Rust rules: for each, graphs it fires on. The soundness test
    /// fails for a Rust rule without one (rules as data are instantiated automatically).
    pub cases: Vec<Case>,
}

/// A soundness case: a graph (made from a seed: shapes and values vary) on which rule
/// `rule` must fire; the optimized graph must compute the same outputs.
pub struct Case {
    pub rule: &'static str,
    pub make: fn(u64) -> Graph,
}

/// Limits of one e-graph run. Every run stops; the report says which limit stopped it.
#[derive(Clone, Debug)]
pub struct Limits {
    pub nodes: usize,
    pub iterations: usize,
    pub time: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            nodes: 100_000,
            iterations: 30,
            time: Duration::from_secs(2),
        }
    }
}

/// What one phase (one e-graph run) did.
#[derive(Clone, Debug, Default)]
pub struct PhaseReport {
    pub passes: Vec<String>,
    pub iterations: usize,
    pub egraph_nodes: usize,
    pub egraph_classes: usize,
    pub stop_reason: String,
    /// Times each rule fired (rules that never fired are listed with 0).
    pub rules_fired: BTreeMap<String, usize>,
    pub time: Duration,
}

/// What `optimize` did, for `optc explain`.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub level: u8,
    pub phases: Vec<PhaseReport>,
    pub nodes_before: usize,
    pub nodes_after: usize,
    pub cost_before: f64,
    pub cost_after: f64,
    pub time: Duration,
}

/// Estimated cost of a graph (seconds) by `model`, and its op-node count.
pub fn graph_cost(graph: &Graph, model: &CostModel) -> (f64, usize) {
    let mut total = 0.0;
    let mut n = 0;
    for id in graph.g.node_indices() {
        let node = graph.node(id);
        if matches!(
            node.op,
            optc_ir::Op::Input { .. } | optc_ir::Op::Constant { .. }
        ) {
            continue;
        }
        n += 1;
        let ins: Vec<optc_ir::TensorType> = graph
            .node_inputs(id)
            .iter()
            .filter_map(|v| graph.value_type(*v).ok().cloned())
            .collect();
        let refs: Vec<&optc_ir::TensorType> = ins.iter().collect();
        total += model.op_cost(&node.op, &refs, &node.outputs);
    }
    (total, n)
}

fn stop_reason(r: &Option<egg::StopReason>) -> String {
    match r {
        Some(egg::StopReason::Saturated) => "saturated".into(),
        Some(egg::StopReason::IterationLimit(n)) => format!("iteration limit ({n})"),
        Some(egg::StopReason::NodeLimit(n)) => format!("node limit ({n})"),
        Some(egg::StopReason::TimeLimit(s)) => format!("time limit ({s:.1} s)"),
        Some(egg::StopReason::Other(s)) => s.clone(),
        None => "not run".into(),
    }
}

/// Run `passes` together in one e-graph and extract the cheapest graph.
pub fn run_phase(
    graph: &Graph,
    passes: &[&Pass],
    limits: &Limits,
    model: &CostModel,
) -> Result<(Graph, PhaseReport)> {
    let t0 = Instant::now();
    let folds = passes.iter().any(|p| p.folds);
    let mut conv = convert::to_egraph(graph, if folds { 4096 } else { 0 })?;
    let rules: Vec<&egg::Rewrite<ENode, OptAnalysis>> = passes
        .iter()
        .flat_map(|p| p.rules.iter().map(|r| &r.rewrite))
        .collect();
    let egraph = std::mem::take(&mut conv.egraph);
    let runner = egg::Runner::default()
        .with_egraph(egraph)
        .with_node_limit(limits.nodes)
        .with_iter_limit(limits.iterations)
        .with_time_limit(limits.time)
        .run(rules.iter().copied());
    let mut fired: BTreeMap<String, usize> =
        rules.iter().map(|r| (r.name.to_string(), 0)).collect();
    for it in &runner.iterations {
        for (name, n) in &it.applied {
            *fired.entry(name.to_string()).or_default() += n;
        }
    }
    let report = PhaseReport {
        passes: passes.iter().map(|p| p.name.to_string()).collect(),
        iterations: runner.iterations.len(),
        egraph_nodes: runner.egraph.total_number_of_nodes(),
        egraph_classes: runner.egraph.number_of_classes(),
        stop_reason: stop_reason(&runner.stop_reason),
        rules_fired: fired,
        time: Duration::ZERO,
    };
    conv.egraph = runner.egraph;
    // Roots may have been merged: canonicalize.
    for r in &mut conv.roots {
        r.1 = conv.egraph.find(r.1);
    }
    let cost = EGraphCost::new(&conv.egraph, model.clone());
    let out =
        convert::to_graph(&conv, cost).map_err(|e| IrError::new(format!("extraction: {e}")))?;
    let mut report = report;
    report.time = t0.elapsed();
    Ok((out, report))
}

/// Optimize `graph` at `level` with the exact passes in `passes`:
/// `-O0` nothing; `-O1` the level-1 passes (simplify, fold) together; `-O2` every pass
/// up to level 2, each level's passes as one phase, in level order; `-O3` all exact passes
/// together in one e-graph (equality saturation) with cost-based extraction.
pub fn optimize(
    graph: &Graph,
    passes: &[Pass],
    level: u8,
    limits: &Limits,
    model: &CostModel,
) -> Result<(Graph, Report)> {
    let t0 = Instant::now();
    let (cost_before, nodes_before) = graph_cost(graph, model);
    let mut report = Report {
        level,
        nodes_before,
        cost_before,
        ..Default::default()
    };
    let mut g = graph.clone();
    let eligible: Vec<&Pass> = passes
        .iter()
        .filter(|p| p.exact && p.level <= level.min(3))
        .collect();
    if level > 0 && !eligible.is_empty() {
        let phases: Vec<Vec<&Pass>> = if level >= 3 {
            vec![eligible]
        } else {
            let mut by: BTreeMap<u8, Vec<&Pass>> = BTreeMap::new();
            for p in eligible {
                by.entry(p.level).or_default().push(p);
            }
            by.into_values().collect()
        };
        for phase in phases {
            let (ng, r) = run_phase(&g, &phase, limits, model)?;
            g = ng;
            report.phases.push(r);
        }
    }
    let (cost_after, nodes_after) = graph_cost(&g, model);
    report.cost_after = cost_after;
    report.nodes_after = nodes_after;
    report.time = t0.elapsed();
    Ok((g, report))
}
