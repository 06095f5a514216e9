//! The compile pipeline: import → optimize → code generation, shared by the JIT
//! ([`crate::compile_bytes`]), ahead-of-time compiles ([`crate::compile_object`]), the CLI and
//! `optc-build`. Every compile goes through [`front`] (import and optimize as [`Options`] say,
//! and the target) and reports one [`Report`].

use crate::{Error, Options, Result, Verdict};
use optc_codegen::Target;
use optc_ir::Graph;
use optc_onnx::ImportOptions;
use std::path::Path;
use std::time::{Duration, Instant};

/// Time spent in each stage of a compile.
#[derive(Clone, Debug, Default)]
pub struct Timings {
    pub import: Duration,
    pub optimize: Duration,
    pub codegen: Duration,
}

impl Timings {
    pub fn total(&self) -> Duration {
        self.import + self.optimize + self.codegen
    }
}

/// What one compile did: the time per stage and what the optimizer did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub timings: Timings,
    /// Per phase: passes, iterations, e-graph size, rules fired; cost before and after.
    pub optimizer: optc_egraph::Report,
    /// What the lossy passes did, when asked for.
    pub compression: Option<crate::compress::CompressionReport>,
    /// Time spent compressing (calibration, measurement).
    pub compress_time: Duration,
    /// What the import left to run time, in words (`optc_onnx::Imported::warnings`).
    pub warnings: Vec<String>,
}

/// Read a model file (the error names the path).
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))
}

/// Import an ONNX file into the IR (no optimization).
pub fn import_file(path: &Path, opts: &Options) -> Result<Graph> {
    import_bytes(&read_file(path)?, opts)
}

/// Import ONNX bytes into the IR (no optimization).
pub fn import_bytes(bytes: &[u8], opts: &Options) -> Result<Graph> {
    Ok(optc_onnx::import_bytes(bytes, &import_options(opts))?)
}

fn import_options(opts: &Options) -> ImportOptions {
    ImportOptions {
        input_shapes: opts.input_shapes.clone(),
        input_values: opts.input_values.clone(),
    }
}

/// The target `opts` names, with its Winograd limit.
pub fn target(opts: &Options) -> Result<Target> {
    Ok(Target::parse(&opts.target)?
        .with_winograd(opts.winograd)?
        .with_sparse(opts.sparse)
        .with_profile(opts.profile))
}

/// The cost model the rewrites and the lossy choices are priced with on `target`: its int8
/// rates depend on how the target's int8 kernels sum (VNNI or byte/word pairs).
pub(crate) fn cost_model(target: &Target) -> optc_egraph::CostModel {
    let model = optc_egraph::CostModel::host();
    if target.has_int8_dot_product() {
        model.with_int8_dot_product()
    } else {
        model
    }
}

/// A graph ready for code generation: optimized, with its target and what it took.
pub(crate) struct Front {
    pub graph: Graph,
    pub target: Target,
    pub report: Report,
    /// Inputs bound to their value in `Options::input_values` (see
    /// `optc_onnx::Imported::bound_inputs`).
    pub bound_inputs: Vec<String>,
}

/// The front of every compile: check the target, import `bytes` (when given, else take
/// `graph`), optimize.
pub(crate) fn front(source: Source, opts: &Options) -> Result<Front> {
    if let Some(spec) = &opts.length {
        return Err(Error::Input(format!(
            "a length range ({}..{}) makes one ahead-of-time object for every length; a model \
             compiled in this process takes each input shape it is run with (give fixed shapes)",
            spec.min, spec.max
        )));
    }
    let target = target(opts)?;
    let mut report = Report::default();
    let bytes = match &source {
        Source::Bytes(b) => Some(*b),
        Source::Graph(_) => None,
    };
    let (graph, bound_inputs) = match source {
        Source::Bytes(bytes) => {
            let t0 = Instant::now();
            let imported = optc_onnx::import_bytes_bound(bytes, &import_options(opts))?;
            report.timings.import = t0.elapsed();
            report.warnings = imported.warnings;
            (imported.graph, imported.bound_inputs)
        }
        Source::Graph(g) => (g, vec![]),
    };
    let t1 = Instant::now();
    let (graph, optimizer) = optimize_with(graph, opts)?;
    report.timings.optimize = t1.elapsed();
    report.optimizer = optimizer;
    let graph = if opts.compress.lossy() {
        let t2 = Instant::now();
        let graph_for = |shapes: &std::collections::HashMap<String, Vec<usize>>| -> Result<Graph> {
            let Some(bytes) = bytes else {
                return Err(Error::Input(
                    "calibration and evaluation data must have the graph's own input shapes \
                     when a graph (not an ONNX model) is compiled"
                        .into(),
                ));
            };
            let mut o = opts.clone();
            o.compress = Default::default();
            o.input_shapes
                .extend(shapes.iter().map(|(k, v)| (k.clone(), v.clone())));
            Ok(optimize_with(import_bytes(bytes, &o)?, &o)?.0)
        };
        let (g, r) = crate::compress::compress(graph, opts, &graph_for)?;
        report.compress_time = t2.elapsed();
        let passed = r.passed();
        report.compression = Some(r);
        if !passed {
            return Err(Error::OverBudget(Box::new(
                report.compression.take().expect("just set"),
            )));
        }
        g
    } else {
        graph
    };
    Ok(Front {
        graph,
        target,
        report,
        bound_inputs,
    })
}

/// Import and optimize ONNX `bytes` as `opts` say (the target is checked too): the graph
/// code generation would see, and the report so far (no codegen time). `optc explain`.
pub fn optimize_bytes(bytes: &[u8], opts: &Options) -> Result<(Graph, Report)> {
    let f = front(Source::Bytes(bytes), opts)?;
    Ok((f.graph, f.report))
}

/// What a compile starts from.
pub(crate) enum Source<'a> {
    Bytes(&'a [u8]),
    Graph(Graph),
}

/// Every registered optimizer pass, in no particular order (levels order them).
pub fn passes() -> Vec<optc_egraph::Pass> {
    passes_priced(&optc_egraph::CostModel::host())
}

/// Every registered pass, fusion choosing among a value's forms as `model` prices them (the
/// model extraction uses: the target's).
fn passes_priced(model: &optc_egraph::CostModel) -> Vec<optc_egraph::Pass> {
    vec![
        optc_pass_simplify::pass(),
        optc_pass_fold::pass(),
        optc_pass_fuse::pass_with(model.clone()),
        optc_pass_layout::pass(),
        optc_pass_quantize::pass(),
    ]
}

/// The passes `opts` asks for: the registered ones plus `extra_rules`, without
/// `disabled_rules` (an unknown rule name is an error listing the known ones). Every extra
/// rule is checked first ([`check_rules`]): an unsound one, or one no instance makes fire,
/// is an error naming it (with the counterexample).
pub fn passes_for(opts: &Options) -> Result<Vec<optc_egraph::Pass>> {
    passes_for_model(opts, &cost_model(&Target::parse(&opts.target)?))
}

/// [`passes_for`] with the target's cost model already made.
fn passes_for_model(
    opts: &Options,
    model: &optc_egraph::CostModel,
) -> Result<Vec<optc_egraph::Pass>> {
    let mut ps = passes_priced(model);
    if !opts.extra_rules.is_empty() {
        let mut rules = vec![];
        for (origin, text) in &opts.extra_rules {
            for (rule, verdict) in check_rules(origin, text)? {
                refuse_unchecked(origin, rule.name(), verdict)?;
                rules.push(rule);
            }
        }
        ps.push(optc_egraph::Pass {
            name: "user",
            level: 1,
            exact: true,
            folds: false,
            rules,
            cases: vec![],
        });
    }
    for name in &opts.disabled_rules {
        let known = ps.iter().any(|p| p.rules.iter().any(|r| r.name() == name));
        if !known {
            let mut all: Vec<String> = ps
                .iter()
                .flat_map(|p| p.rules.iter().map(|r| r.name().to_string()))
                .collect();
            all.sort();
            return Err(Error::Input(format!(
                "--disable-rule {name}: no such rule (rules: {})",
                all.join(", ")
            )));
        }
    }
    for p in &mut ps {
        p.rules
            .retain(|r| !opts.disabled_rules.iter().any(|d| d == r.name()));
    }
    Ok(ps)
}

/// Parse a `.rules` file (named `origin` in errors) and check each rule on random
/// instances against the reference interpreter (`optc_egraph::soundness::check`).
pub fn check_rules(origin: &str, text: &str) -> Result<Vec<(optc_egraph::Rule, Verdict)>> {
    let rules = optc_egraph::rules::load_rules(text, origin).map_err(Error::Input)?;
    Ok(rules
        .into_iter()
        .map(|r| {
            let v = match &r.data {
                Some(d) => optc_egraph::soundness::check(d),
                None => Verdict::NotChecked("it is not a rule as data".into()),
            };
            (r, v)
        })
        .collect())
}

fn refuse_unchecked(origin: &str, name: &str, verdict: Verdict) -> Result<()> {
    match verdict {
        Verdict::Sound { .. } => Ok(()),
        Verdict::Unsound(c) => Err(Error::Input(format!(
            "--rules {origin}: rule {name} is unsound, refusing to use it. Its two sides \
             differ on this instance:\n{c}"
        ))),
        Verdict::NotChecked(why) => Err(Error::Input(format!(
            "--rules {origin}: rule {name} could not be checked, refusing to use it: {why}"
        ))),
    }
}

/// Optimize a graph at `opt_level` (0..=3) with the registered passes; returns the
/// optimized graph and a report of what each phase did.
pub fn optimize_with_report(graph: Graph, opt_level: u8) -> Result<(Graph, optc_egraph::Report)> {
    let opts = Options {
        opt_level,
        ..Default::default()
    };
    optimize_with(graph, &opts)
}

/// Optimize a graph as `opts` says (level, extra and disabled rules).
pub fn optimize_with(graph: Graph, opts: &Options) -> Result<(Graph, optc_egraph::Report)> {
    let opt_level = opts.opt_level;
    if opt_level > 3 {
        return Err(Error::Input(format!(
            "optimization level {opt_level} does not exist; use 0, 1, 2 or 3"
        )));
    }
    graph.verify()?;
    let target = Target::parse(&opts.target)?;
    let model = cost_model(&target);
    if opt_level == 0 {
        let (cost, nodes) = optc_egraph::graph_cost(&graph, &model);
        let report = optc_egraph::Report {
            level: 0,
            nodes_before: nodes,
            nodes_after: nodes,
            cost_before: cost,
            cost_after: cost,
            ..Default::default()
        };
        return Ok((graph, report));
    }
    let (mut g, report) = optc_egraph::optimize(
        &graph,
        &passes_for_model(opts, &model)?,
        opt_level,
        &optc_egraph::Limits::default(),
        &model,
    )?;
    // The threads the model runs on: as asked, at most the cores (0: all cores; 0 when both
    // are unknown, an AOT object for another machine).
    let cores = target.cores();
    let threads = match (opts.threads, cores) {
        (0, c) => c,
        (t, 0) => t,
        (t, c) => t.min(c),
    };
    let block = crate::attention_blocks::block_bytes(target.caches().l2, threads);
    crate::attention_blocks::split(&mut g, block)?;
    Ok((g, report))
}

/// Optimize a graph at `opt_level` (0..=3).
pub fn optimize(graph: Graph, opt_level: u8) -> Result<Graph> {
    Ok(optimize_with_report(graph, opt_level)?.0)
}
