//! optc: compile ONNX models to native code.
//!
//! ```no_run
//! let opts = optc::Options::default();
//! let mut model = optc::compile_file("model.onnx".as_ref(), &opts).unwrap();
//! let inputs = optc::random_inputs(&model.input_types(), 0);
//! let outputs = model.run(&inputs).unwrap();
//! println!("{:?}", outputs[0].shape());
//! ```
//!
//! Stages: [`optc_onnx`] imports the model into the IR ([`optc_ir`]), the optimizer rewrites
//! it (by `-O` level), and [`optc_codegen`] lowers it through Cranelift to machine code.

pub mod npy;

pub use optc_egraph::soundness::Verdict;
pub use optc_egraph::Report;
pub use optc_ir::{checked_numel, DType, Data, Graph, Tensor, TensorType};
pub use optc_onnx::ImportOptions;

use optc_codegen::{JitModel, Target, Workspace};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Compilation options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Optimization level 0..=3: 0 none, 1 simplify + fold, 2 every pass by level in
    /// phases, 3 equality saturation of all exact rules with cost-based extraction.
    pub opt_level: u8,
    /// Target name: `native`, `x86_64-sse4.2`, `x86_64-avx2`.
    pub target: String,
    /// Shapes for inputs with dynamic dims, by input name.
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Extra rule files (`(origin, text)`, `.rules` syntax) run as a level-1 pass `user`.
    pub extra_rules: Vec<(String, String)>,
    /// Rules (by name) that must not run.
    pub disabled_rules: Vec<String>,
    /// Threads the compiled model uses: 0 = all cores (default), 1 = single-threaded.
    pub threads: usize,
    /// Input values known at compile time, by name: bound as constants only where a
    /// node needs a constant (see `optc_onnx::ImportOptions::input_values`).
    pub input_values: HashMap<String, Tensor>,
    /// Largest Winograd output tile for 3x3 stride-1 convs: 4 (default: F(4x4, 3x3) or
    /// F(2x2, 3x3), whichever needs fewer flops), 2 (F(2x2, 3x3) only) or 0 (direct
    /// convolution, the smallest rounding error). See `optc_codegen::Target::with_winograd`.
    pub winograd: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            opt_level: 2,
            target: "native".into(),
            input_shapes: HashMap::new(),
            extra_rules: vec![],
            disabled_rules: vec![],
            threads: 0,
            input_values: HashMap::new(),
            winograd: 4,
        }
    }
}

/// Every way compiling or running can fail. `Display` gives one readable paragraph.
#[derive(Debug)]
pub enum Error {
    /// Reading the file failed.
    Io(String),
    /// The ONNX model could not be imported (malformed file, unsupported ops, ...).
    Import(optc_onnx::ImportError),
    /// The IR is invalid or an op could not be evaluated.
    Ir(optc_ir::IrError),
    /// Code generation failed, or generated code reported a runtime error.
    Codegen(optc_codegen::CodegenError),
    /// The inputs passed to `run` do not match the model.
    Input(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Import(e) => write!(f, "{e}"),
            Error::Ir(e) => write!(f, "{e}"),
            Error::Codegen(e) => write!(f, "{e}"),
            Error::Input(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<optc_onnx::ImportError> for Error {
    fn from(e: optc_onnx::ImportError) -> Self {
        Error::Import(e)
    }
}
impl From<optc_ir::IrError> for Error {
    fn from(e: optc_ir::IrError) -> Self {
        Error::Ir(e)
    }
}
impl From<optc_codegen::CodegenError> for Error {
    fn from(e: optc_codegen::CodegenError) -> Self {
        Error::Codegen(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Time spent in each stage of a compile.
#[derive(Clone, Debug, Default)]
pub struct CompileStats {
    pub import: Duration,
    pub optimize: Duration,
    pub codegen: Duration,
}

/// A model compiled to machine code, ready to run. Owns its workspace, so `run` takes
/// `&mut self`; compile once per thread to run on several threads.
pub struct CompiledModel {
    graph: Graph,
    jit: JitModel,
    ws: Workspace,
    input_names: Vec<String>,
    output_names: Vec<String>,
    stats: CompileStats,
    report: optc_egraph::Report,
}

/// Import an ONNX file into the IR (no optimization).
pub fn import_file(path: &Path, opts: &Options) -> Result<Graph> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
    import_bytes(&bytes, opts)
}

/// Import ONNX bytes into the IR (no optimization).
pub fn import_bytes(bytes: &[u8], opts: &Options) -> Result<Graph> {
    let iopts = ImportOptions {
        input_shapes: opts.input_shapes.clone(),
        input_values: opts.input_values.clone(),
    };
    Ok(optc_onnx::import_bytes(bytes, &iopts)?)
}

/// Compile an ONNX file.
pub fn compile_file(path: &Path, opts: &Options) -> Result<CompiledModel> {
    let bytes = std::fs::read(path)
        .map_err(|e| Error::Io(format!("cannot read {}: {e}", path.display())))?;
    compile_bytes(&bytes, opts)
}

/// Compile ONNX bytes.
pub fn compile_bytes(bytes: &[u8], opts: &Options) -> Result<CompiledModel> {
    let t0 = Instant::now();
    let graph = import_bytes(bytes, opts)?;
    let import = t0.elapsed();
    let mut m = compile_graph(graph, opts)?;
    m.stats.import = import;
    Ok(m)
}

/// Every registered optimizer pass, in no particular order (levels order them).
pub fn passes() -> Vec<optc_egraph::Pass> {
    vec![
        optc_pass_simplify::pass(),
        optc_pass_fold::pass(),
        optc_pass_fuse::pass(),
        optc_pass_layout::pass(),
    ]
}

/// The passes `opts` asks for: the registered ones plus `extra_rules`, without
/// `disabled_rules` (an unknown rule name is an error listing the known ones). Every extra
/// rule is checked first ([`check_rules`]): an unsound one, or one no instance makes fire,
/// is an error naming it (with the counterexample).
pub fn passes_for(opts: &Options) -> Result<Vec<optc_egraph::Pass>> {
    let mut ps = passes();
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
    if opt_level == 0 {
        let (cost, nodes) = optc_egraph::graph_cost(&graph, &optc_egraph::CostModel::host());
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
    let (g, report) = optc_egraph::optimize(
        &graph,
        &passes_for(opts)?,
        opt_level,
        &optc_egraph::Limits::default(),
        &optc_egraph::CostModel::host(),
    )?;
    Ok((g, report))
}

/// Optimize a graph at `opt_level` (0..=3).
pub fn optimize(graph: Graph, opt_level: u8) -> Result<Graph> {
    Ok(optimize_with_report(graph, opt_level)?.0)
}

/// Compile an IR graph.
pub fn compile_graph(graph: Graph, opts: &Options) -> Result<CompiledModel> {
    let t0 = Instant::now();
    let (graph, report) = optimize_with(graph, opts)?;
    let optimize_t = t0.elapsed();
    let target = Target::parse(&opts.target)?.with_winograd(opts.winograd)?;
    let t1 = Instant::now();
    let mut jit = optc_codegen::compile_jit(&graph, &target)?;
    jit.set_threads(opts.threads);
    let codegen = t1.elapsed();
    let ws = jit.new_workspace();
    let input_names = graph.inputs.iter().map(|i| i.name.clone()).collect();
    let output_names = graph.outputs.iter().map(|o| o.name.clone()).collect();
    Ok(CompiledModel {
        graph,
        jit,
        ws,
        input_names,
        output_names,
        stats: CompileStats {
            import: Duration::ZERO,
            optimize: optimize_t,
            codegen,
        },
        report,
    })
}

impl CompiledModel {
    /// The (optimized) IR this model was compiled from.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    pub fn stats(&self) -> &CompileStats {
        &self.stats
    }

    /// What the optimizer did.
    pub fn report(&self) -> &optc_egraph::Report {
        &self.report
    }

    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    pub fn input_types(&self) -> Vec<TensorType> {
        self.jit.input_types().to_vec()
    }

    pub fn output_types(&self) -> Vec<TensorType> {
        self.jit.output_types().to_vec()
    }

    /// Bytes of scratch memory the compiled code uses (allocated once, at compile time).
    pub fn workspace_size(&self) -> usize {
        self.jit.workspace_size()
    }

    /// Check inputs against the model: count, dtype and shape, naming the culprit.
    fn check_inputs(&self, inputs: &[&Tensor]) -> Result<()> {
        let want = self.jit.input_types();
        if inputs.len() != want.len() {
            return Err(Error::Input(format!(
                "the model takes {} input(s) ({}), got {}",
                want.len(),
                self.input_names.join(", "),
                inputs.len()
            )));
        }
        for ((t, w), name) in inputs.iter().zip(want).zip(&self.input_names) {
            if t.dtype() != w.dtype || t.shape() != w.shape.as_slice() {
                return Err(Error::Input(format!(
                    "input '{}' must be {}, got {}",
                    name,
                    w,
                    t.ty()
                )));
            }
        }
        Ok(())
    }

    /// Run on inputs in model order; returns the outputs in model order.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let refs: Vec<&Tensor> = inputs.iter().collect();
        let mut outs: Vec<Tensor> = self
            .jit
            .output_types()
            .iter()
            .map(|t| Tensor::zeros(t.dtype, t.shape.clone()))
            .collect();
        self.run_into(&refs, &mut outs)?;
        Ok(outs)
    }

    /// Run with inputs given by name (any order).
    pub fn run_named(&mut self, inputs: &[(&str, Tensor)]) -> Result<Vec<Tensor>> {
        let mut ordered = Vec::with_capacity(self.input_names.len());
        for name in &self.input_names {
            match inputs.iter().find(|(n, _)| n == name) {
                Some((_, t)) => ordered.push(t.clone()),
                None => {
                    return Err(Error::Input(format!(
                        "missing input '{}' (the model takes: {})",
                        name,
                        self.input_names.join(", ")
                    )))
                }
            }
        }
        for (n, _) in inputs {
            if !self.input_names.iter().any(|m| m == n) {
                return Err(Error::Input(format!(
                    "the model has no input '{}' (it takes: {})",
                    n,
                    self.input_names.join(", ")
                )));
            }
        }
        self.run(&ordered)
    }

    /// Run into preallocated outputs (no allocation).
    pub fn run_into(&mut self, inputs: &[&Tensor], outputs: &mut [Tensor]) -> Result<()> {
        self.check_inputs(inputs)?;
        self.jit.run(inputs, outputs, &mut self.ws)?;
        Ok(())
    }
}

/// Deterministic pseudo-random inputs: f32 uniform in [-1, 1), integers in {0, 1},
/// bools fair. Integers stay small so index-like inputs (token ids, masks) are valid.
pub fn random_inputs(types: &[TensorType], seed: u64) -> Vec<Tensor> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    types
        .iter()
        .map(|t| {
            let n = t.numel();
            let data = match t.dtype {
                DType::F32 => Data::F32(
                    (0..n)
                        .map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0)
                        .collect(),
                ),
                DType::I64 => Data::I64((0..n).map(|_| (next() >> 63) as i64).collect()),
                DType::I32 => Data::I32((0..n).map(|_| (next() >> 63) as i32).collect()),
                DType::Bool => Data::Bool((0..n).map(|_| next() >> 63 == 1).collect()),
                DType::U8 => Data::U8((0..n).map(|_| (next() >> 63) as u8).collect()),
                DType::I8 => Data::I8((0..n).map(|_| (next() >> 63) as i8).collect()),
            };
            Tensor::new(t.shape.clone(), data).expect("length matches shape")
        })
        .collect()
}

/// Largest absolute and relative error between two tensors, and whether they are
/// allclose (`|a - b| <= atol + rtol * |b|` everywhere, NaNs equal only to NaNs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Diff {
    pub max_abs: f64,
    pub max_rel: f64,
    pub allclose: bool,
}

/// Compare `got` against `want` (the reference).
pub fn compare(
    got: &Tensor,
    want: &Tensor,
    rtol: f64,
    atol: f64,
) -> std::result::Result<Diff, String> {
    if got.shape() != want.shape() {
        return Err(format!(
            "shape {:?} differs from the reference's {:?}",
            got.shape(),
            want.shape()
        ));
    }
    if got.dtype() != want.dtype() {
        return Err(format!(
            "dtype {} differs from the reference's {}",
            got.dtype(),
            want.dtype()
        ));
    }
    let (a, b) = (got.to_f64_vec(), want.to_f64_vec());
    let mut d = Diff {
        max_abs: 0.0,
        max_rel: 0.0,
        allclose: true,
    };
    for (&x, &y) in a.iter().zip(&b) {
        if x.is_nan() || y.is_nan() {
            if x.is_nan() != y.is_nan() {
                d.allclose = false;
                d.max_abs = f64::INFINITY;
                d.max_rel = f64::INFINITY;
            }
            continue;
        }
        if x == y {
            continue;
        }
        let abs = (x - y).abs();
        let rel = abs / y.abs().max(f64::MIN_POSITIVE);
        d.max_abs = d.max_abs.max(abs);
        d.max_rel = d.max_rel.max(rel);
        if abs > atol + rtol * y.abs() || !abs.is_finite() {
            d.allclose = false;
        }
    }
    Ok(d)
}
