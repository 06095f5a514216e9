//! The `optc` command line.

mod compile;
mod options;
mod sweep;

use clap::{Args, Parser, Subcommand};
use optc::{Options, Tensor};
use optc_onnx::oracle::TractModel;
use options::CompileArgs;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

#[derive(Parser)]
#[command(
    name = "optc",
    version,
    about = "optc: an optimizing compiler from ONNX to native CPU code",
    long_about = "optc imports an ONNX model, optimizes it and compiles it to native code with Cranelift.\n\
                  Run `optc <command> --help` for the options of each command.\n\n\
                  Ahead-of-time compilation: `optc MODEL.onnx [--target T] [-O N] [-o OUT] [--emit LIST] [-v]`\n\
                  writes an object file and a C header (see `optc MODEL.onnx --help`)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Compile a model and run it once; print (and optionally save) its outputs.
    Run(RunArgs),
    /// Run a model in optc and in tract on the same inputs and compare the outputs.
    Check(CheckArgs),
    /// Measure latency (median, p90) of optc and of tract side by side.
    Bench(BenchArgs),
    /// Optimize a model and report what each pass and rule did (default -O3).
    Explain(ExplainArgs),
    /// Rule files: `optc rules check FILE` checks each rule before it is trusted.
    Rules(RulesArgs),
    /// Run every lossy pass at a grid of settings (int8; prune 0.5/0.7/0.9; channels
    /// 0.25/0.5; low-rank energy 0.99/0.95/0.9), print the table (setting, error, top-1, weight bytes, latency) and
    /// write the error-vs-latency trade-off as an SVG plot with the Pareto front marked.
    Sweep(SweepArgs),
}

#[derive(Args)]
struct SweepArgs {
    #[command(flatten)]
    c: CompileArgs,
    #[command(flatten)]
    t: ThreadArgs,
    /// Where the SVG plot goes.
    #[arg(long, value_name = "FILE", default_value = "sweep.svg")]
    svg: PathBuf,
}

#[derive(Args)]
struct RulesArgs {
    #[command(subcommand)]
    cmd: RulesCmd,
}

#[derive(Subcommand)]
enum RulesCmd {
    /// Check each rule of a `.rules` file: instantiate its left side on random shapes,
    /// dtypes and values, run both sides in the reference interpreter and compare them
    /// exactly. Prints `ok (N instances)` or `UNSOUND:` with a counterexample per rule;
    /// exits 1 if a rule is unsound or could not be checked.
    Check {
        /// The `.rules` file.
        file: PathBuf,
    },
}

/// Threads of a compiled model run in this process.
#[derive(Args, Clone)]
struct ThreadArgs {
    /// Threads the compiled model uses (0 = all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
}

#[derive(Args)]
struct ExplainArgs {
    #[command(flatten)]
    c: CompileArgs,
    /// Print the optimized graph instead of the report (the report goes to stderr):
    /// `ir` (optc's text format) or `dot` (Graphviz).
    #[arg(long, value_parser = ["ir", "dot"])]
    emit: Option<String>,
}

#[derive(Args, Clone)]
struct InputArgs {
    /// An input from a .npy file: `--input name=x.npy`. Repeatable. Others are random.
    #[arg(long = "input", value_name = "NAME=FILE")]
    inputs: Vec<String>,
    /// A directory of `input_N.pb` TensorProto files, one per input in model order.
    #[arg(long = "inputs", value_name = "DIR", conflicts_with = "inputs")]
    inputs_dir: Option<PathBuf>,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    c: CompileArgs,
    #[command(flatten)]
    t: ThreadArgs,
    #[command(flatten)]
    i: InputArgs,
    /// Write each output as `<name>.npy` into this directory.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Write `output_N.pb` TensorProto files into this directory (ONNX backend-test layout).
    #[arg(long, value_name = "DIR")]
    outputs: Option<PathBuf>,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    c: CompileArgs,
    #[command(flatten)]
    t: ThreadArgs,
    #[command(flatten)]
    i: InputArgs,
    /// Relative tolerance.
    #[arg(long, default_value_t = 1e-4)]
    rtol: f64,
    /// Absolute tolerance.
    #[arg(long, default_value_t = 1e-5)]
    atol: f64,
    /// Compare with the reference outputs `output_N.pb` in this directory (the ONNX
    /// backend-test layout, as model zoos ship them next to `input_N.pb`) instead of running
    /// the model in tract.
    #[arg(long, value_name = "DIR")]
    expected: Option<PathBuf>,
}

#[derive(Args)]
struct BenchArgs {
    #[command(flatten)]
    c: CompileArgs,
    #[command(flatten)]
    t: ThreadArgs,
    /// The inputs to measure on (default: random ones); values a node needs at compile
    /// time (an `If` on a sample rate) come from them, as for `run`.
    #[command(flatten)]
    i: InputArgs,
    /// Print one JSON object (optc's `median_ms`, `p90_ms`; tract's too with `--tract`).
    #[arg(long)]
    json: bool,
    /// With --json, also measure tract.
    #[arg(long)]
    tract: bool,
    /// Do not measure tract.
    #[arg(long, conflicts_with = "tract")]
    no_tract: bool,
    /// Seconds to measure each engine for (after warm-up); at least 5 runs are made.
    #[arg(long, default_value_t = 3.0)]
    time: f64,
    /// Also profile per node: compile a second time with a mark before each kernel, run
    /// for --time seconds, and print per node (a fused node as `Conv+Add+Relu`) the time
    /// per run, its share, GFLOP/s and % of the FMA peak (of the threads used), slowest first.
    #[arg(long)]
    profile: bool,
    /// With --profile (implied): write the first 20 profiled runs as a Chrome trace (JSON for
    /// chrome://tracing or ui.perfetto.dev): kernels on the calling thread, each parallel
    /// task on the thread that ran it.
    #[arg(long, value_name = "FILE")]
    trace: Option<std::path::PathBuf>,
}

fn main() -> ExitCode {
    // `optc MODEL.onnx [...]`: ahead-of-time compilation (see compile.rs).
    let args: Vec<String> = std::env::args().collect();
    if let Some(first) = args.get(1) {
        let sub = ["run", "check", "bench", "explain", "rules", "sweep", "help"];
        if !first.starts_with('-') && !sub.contains(&first.as_str()) {
            return compile::main_compile(args);
        }
    }
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Run(a) => cmd_run(a),
        Cmd::Check(a) => cmd_check(a),
        Cmd::Bench(a) => cmd_bench(a),
        Cmd::Explain(a) => cmd_explain(a),
        Cmd::Sweep(a) => cmd_sweep(a),
        Cmd::Rules(a) => cmd_rules(a),
    };
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

type Res<T> = Result<T, String>;

fn cmd_rules(a: RulesArgs) -> Res<ExitCode> {
    let RulesCmd::Check { file } = a.cmd;
    let text = std::fs::read_to_string(&file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let checks =
        optc::check_rules(&file.display().to_string(), &text).map_err(|e| e.to_string())?;
    let mut failed = 0;
    for (rule, verdict) in checks {
        let name = rule.name();
        match verdict {
            optc::Verdict::Sound { instances } => println!("{name}: ok ({instances} instances)"),
            optc::Verdict::Unsound(c) => {
                failed += 1;
                println!("{name}: UNSOUND: its two sides differ on this instance:\n{c}");
            }
            optc::Verdict::NotChecked(why) => {
                failed += 1;
                println!("{name}: NOT CHECKED: {why}");
            }
        }
    }
    Ok(if failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Options of a command that compiles in this process (default -O2).
fn jit_options(c: &CompileArgs, t: &ThreadArgs) -> Res<Options> {
    let mut o = c.options(2)?;
    o.threads = t.threads;
    Ok(o)
}

fn read_model(path: &Path) -> Res<Vec<u8>> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// A model with dynamic dims is compiled only once their sizes are known: from
/// `--input-shape`, or from the inputs given (`--inputs`, `--input`). Name what is missing.
fn require_compiled(m: &optc::CompiledModel) -> Res<()> {
    if !m.compiled_shapes().is_empty() {
        return Ok(());
    }
    if let Some(e) = m.waits_for_values() {
        return Err(format!(
            "{e}\n(give the value of {} with --inputs DIR or --input NAME=FILE.npy: the model \
             is then compiled for it)",
            e.needs_values()
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let missing: Vec<String> = m
        .declared_inputs()
        .unwrap_or_default()
        .iter()
        .filter(|d| !d.is_static())
        .map(|d| {
            let example: Vec<String> = match &d.dims {
                Some(dims) => dims
                    .iter()
                    .map(|x| x.fixed().unwrap_or(1).to_string())
                    .collect(),
                None => vec!["1".into()],
            };
            format!(
                "input '{}' has dynamic dims ({d}): pass --input-shape {}={}, or its value \
                 with --inputs DIR / --input {}=FILE.npy",
                d.name,
                d.name,
                example.join("x"),
                d.name
            )
        })
        .collect();
    Err(missing.join("; "))
}

/// Inputs in model order: from `--inputs DIR`, `--input name=file.npy`, or random.
fn gather_inputs(
    m: &optc::CompiledModel,
    known: &HashMap<String, Tensor>,
    seed: u64,
) -> Res<Vec<Tensor>> {
    let types = m.input_types();
    let names = m.input_names();
    let mut inputs = optc::random_inputs(&types, seed);
    for (t, name) in inputs.iter_mut().zip(names) {
        if let Some(v) = known.get(name) {
            *t = v.clone();
        }
    }
    for ((t, want), name) in inputs.iter().zip(&types).zip(names) {
        if t.dtype() != want.dtype || t.shape() != want.shape.as_slice() {
            return Err(format!(
                "input '{name}' must be {want}, the given tensor is {}",
                t.ty()
            ));
        }
    }
    Ok(inputs)
}

fn summary(t: &Tensor) -> String {
    let v = t.to_f64_vec();
    if v.is_empty() {
        return "empty".into();
    }
    let (mut lo, mut hi, mut sum) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
    for &x in &v {
        lo = lo.min(x);
        hi = hi.max(x);
        sum += x;
    }
    let head: Vec<String> = v.iter().take(5).map(|x| format!("{x:.6}")).collect();
    format!(
        "min {lo:.6} max {hi:.6} mean {:.6} first [{}{}]",
        sum / v.len() as f64,
        head.join(", "),
        if v.len() > 5 { ", ..." } else { "" }
    )
}

fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Input values given on the command line (`--inputs DIR`, `--input NAME=FILE`), by
/// name, read once before compiling: a node that needs a constant (pads, a shape, clip
/// bounds) may take it from them, and `gather_inputs` runs the model on them.
fn known_inputs(bytes: &[u8], i: &InputArgs) -> Res<HashMap<String, Tensor>> {
    let mut known = HashMap::new();
    if i.inputs_dir.is_none() && i.inputs.is_empty() {
        return Ok(known);
    }
    let names = optc_onnx::input_names(bytes).map_err(|e| e.to_string())?;
    if let Some(dir) = &i.inputs_dir {
        for (k, name) in names.iter().enumerate() {
            let p = dir.join(format!("input_{k}.pb"));
            let b = std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
            let t = optc_onnx::tensor_from_pb(&b).map_err(|e| format!("{}: {e}", p.display()))?;
            known.insert(name.clone(), t);
        }
    }
    for spec in &i.inputs {
        let (name, file) = spec
            .split_once('=')
            .ok_or_else(|| format!("--input '{spec}' must look like NAME=FILE.npy"))?;
        if !names.iter().any(|n| n == name) {
            return Err(format!(
                "--input '{spec}': the model has no input '{name}' (it takes: {})",
                names.join(", ")
            ));
        }
        known.insert(name.to_string(), optc::npy::read(Path::new(file))?);
    }
    Ok(known)
}

fn compile_with_inputs(
    c: &CompileArgs,
    t: &ThreadArgs,
    bytes: &[u8],
    known: &HashMap<String, Tensor>,
) -> Res<optc::CompiledModel> {
    let m = compile_jit(c, t, bytes, known, false)?;
    c.show_compression(m.report().compression.as_ref())?;
    Ok(m)
}

/// What the compile left to run time (an `If` branch it could not compile), on stderr.
pub(crate) fn show_warnings(report: &optc::Report) {
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
}

/// The JIT compile of `run`, `check` and `bench` (`profile`: with the per-kernel marks of
/// `bench --profile`).
fn compile_jit(
    c: &CompileArgs,
    t: &ThreadArgs,
    bytes: &[u8],
    known: &HashMap<String, Tensor>,
    profile: bool,
) -> Res<optc::CompiledModel> {
    let mut opts = jit_options(c, t)?;
    opts.input_values = known.clone();
    opts.profile = profile;
    let m = optc::compile_bytes(bytes, &opts).map_err(|e| c.compile_error(e))?;
    show_warnings(m.report());
    require_compiled(&m)?;
    Ok(m)
}

fn cmd_sweep(a: SweepArgs) -> Res<ExitCode> {
    let bytes = read_model(&a.c.model)?;
    if a.c.quantize.is_some()
        || !a.c.prune.is_empty()
        || !a.c.prune_channels.is_empty()
        || a.c.low_rank.is_some()
    {
        return Err(
            "optc sweep runs its own grid of lossy settings: drop --quantize, --prune, \
             --prune-channels and --low-rank"
                .into(),
        );
    }
    let base = a.c.options(2)?.compress;
    let labels = base.labels.is_some();
    let mut rows = vec![sweep::Row::original()];
    for setting in sweep::grid(&base) {
        eprintln!("sweep: {} ...", setting.name);
        let opts = sweep::options_for(&a.c, &setting, a.t.threads)?;
        let report = match optc::compile_bytes(&bytes, &opts) {
            Ok(m) => m.report().compression.clone(),
            Err(optc::Error::OverBudget(r)) => Some(*r),
            Err(e) => return Err(a.c.compile_error(e)),
        };
        if let Some(r) = report {
            for w in &r.warnings {
                eprintln!("warning: {w}");
            }
            rows.push(sweep::Row::of(&setting.name, &r));
        }
    }
    print!("{}", sweep::table(&rows[1..]));
    let front = sweep::pareto(&rows);
    println!(
        "Pareto front: {}",
        front
            .iter()
            .map(|&i| rows[i].name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // The model's name: its file's, or its directory's for `.../NAME/model.onnx`.
    let stem = |p: &Path| p.file_stem().map(|f| f.to_string_lossy().to_string());
    let name = match stem(&a.c.model) {
        Some(s) if s == "model" => {
            a.c.model
                .parent()
                .and_then(|p| p.file_name())
                .map(|f| f.to_string_lossy().to_string())
        }
        s => s,
    };
    let title = format!(
        "{}: error vs latency, one setting per point",
        name.unwrap_or_else(|| "model".into())
    );
    std::fs::write(&a.svg, sweep::svg(&rows, &title, labels))
        .map_err(|e| format!("cannot write {}: {e}", a.svg.display()))?;
    println!("wrote {}", a.svg.display());
    Ok(ExitCode::SUCCESS)
}

fn cmd_run(a: RunArgs) -> Res<ExitCode> {
    let bytes = read_model(&a.c.model)?;
    let known = known_inputs(&bytes, &a.i)?;
    let mut m = compile_with_inputs(&a.c, &a.t, &bytes, &known)?;
    let inputs = gather_inputs(&m, &known, a.i.seed)?;
    let outs = m.run(&inputs).map_err(|e| e.to_string())?;
    for (name, t) in m.output_names().iter().zip(&outs) {
        println!("{name}: {} {}", t.ty(), summary(t));
    }
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        for (name, t) in m.output_names().iter().zip(&outs) {
            optc::npy::write(&dir.join(format!("{}.npy", safe_file_name(name))), t)?;
        }
    }
    if let Some(dir) = &a.outputs {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // Outputs of a narrow ONNX type (float16, ...) are written in their own encoding.
        let types = optc_onnx::interface(&bytes)
            .map(|i| i.output_types)
            .unwrap_or_default();
        for (k, (name, t)) in m.output_names().iter().zip(&outs).enumerate() {
            let p = dir.join(format!("output_{k}.pb"));
            let code = types.get(k).copied().unwrap_or(0);
            let pb = optc_onnx::tensor_to_pb_as(t, name, code)
                .map_err(|e| format!("output '{name}': {e}"))?;
            std::fs::write(&p, pb).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cmd_check(a: CheckArgs) -> Res<ExitCode> {
    if a.expected.is_some() && a.i.inputs_dir.is_none() && a.i.inputs.is_empty() {
        return Err(
            "--expected compares with outputs computed from given inputs: pass them \
                    with --inputs DIR (input_N.pb) or --input NAME=FILE"
                .into(),
        );
    }
    let bytes = read_model(&a.c.model)?;
    let known = known_inputs(&bytes, &a.i)?;
    let mut m = compile_with_inputs(&a.c, &a.t, &bytes, &known)?;
    let inputs = gather_inputs(&m, &known, a.i.seed)?;
    let ours = m.run(&inputs).map_err(|e| e.to_string())?;
    let (theirs, what) = match &a.expected {
        Some(dir) => (expected_outputs(dir, ours.len())?, "the reference outputs"),
        None => (
            optc_onnx::oracle::run_tract(&bytes, &inputs).map_err(|e| {
                format!(
                    "optc compiled and ran the model ({} output(s)), but the comparison needs \
                     tract, which cannot run it (`optc run --outputs DIR` writes optc's \
                     outputs; `--expected DIR` compares with reference outputs): {e}",
                    ours.len()
                )
            })?,
            "tract",
        ),
    };
    if theirs.len() != ours.len() {
        return Err(format!(
            "tract gives {} outputs, optc {}",
            theirs.len(),
            ours.len()
        ));
    }
    let mut ok = true;
    let mut tiny = vec![];
    println!(
        "{:<32} {:<20} {:>12} {:>12}  result (rtol {}, atol {})",
        "output", "type", "max abs", "max rel", a.rtol, a.atol
    );
    for ((name, o), t) in m.output_names().iter().zip(&ours).zip(&theirs) {
        // Outputs whose every value is under 10 x atol pass whatever they hold.
        if let Some(v) = t.as_f32() {
            let big = v
                .iter()
                .filter(|x| x.is_finite())
                .fold(0f32, |m, x| m.max(x.abs()));
            if a.atol > 0.0 && !v.is_empty() && (big as f64) < 10.0 * a.atol {
                tiny.push(format!("{name} (|values| <= {big:.3e})"));
            }
        }
        match optc::compare(o, t, a.rtol, a.atol) {
            Ok(d) => {
                ok &= d.allclose;
                println!(
                    "{:<32} {:<20} {:>12.3e} {:>12.3e}  {}",
                    name,
                    o.ty().to_string(),
                    d.max_abs,
                    d.max_rel,
                    if d.allclose { "ok" } else { "MISMATCH" }
                );
            }
            Err(e) => {
                ok = false;
                println!("{name:<32} MISMATCH: {e}");
            }
        }
    }
    if !tiny.is_empty() {
        println!(
            "note: {} below 10 x atol: the absolute tolerance accepts any values this small; \
             compare them with --atol 0",
            tiny.join(", ")
        );
    }
    if ok {
        println!("all outputs match {what}");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("outputs differ from {what} beyond tolerance");
        Ok(ExitCode::from(1))
    }
}

/// The reference outputs `output_0.pb` .. of `dir`, one per output of the model (`count`).
fn expected_outputs(dir: &Path, count: usize) -> Res<Vec<Tensor>> {
    (0..count)
        .map(|k| {
            let p = dir.join(format!("output_{k}.pb"));
            let b = std::fs::read(&p).map_err(|e| {
                format!(
                    "--expected: cannot read {} (the model has {count} output(s)): {e}",
                    p.display()
                )
            })?;
            optc_onnx::tensor_from_pb(&b).map_err(|e| format!("{}: {e}", p.display()))
        })
        .collect()
}

struct Stats {
    median_ms: f64,
    p90_ms: f64,
    runs: usize,
}

fn measure(seconds: f64, mut f: impl FnMut() -> Res<()>) -> Res<Stats> {
    for _ in 0..2 {
        f()?;
    }
    let mut times = vec![];
    let t0 = Instant::now();
    while times.len() < 5 || (t0.elapsed().as_secs_f64() < seconds && times.len() < 100_000) {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    Ok(Stats {
        median_ms: q(0.5),
        p90_ms: q(0.9),
        runs: times.len(),
    })
}

fn cmd_bench(a: BenchArgs) -> Res<ExitCode> {
    let threads = match a.t.threads {
        0 => optc_codegen::runtime::available_cores(),
        t => t,
    };
    let bytes = read_model(&a.c.model)?;
    let known = known_inputs(&bytes, &a.i)?;
    let t0 = Instant::now();
    let mut m = compile_with_inputs(&a.c, &a.t, &bytes, &known)?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let inputs = gather_inputs(&m, &known, a.i.seed)?;
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let mut outs: Vec<Tensor> = m
        .output_types()
        .iter()
        .map(|t| Tensor::zeros(t.dtype, t.shape.clone()))
        .collect();
    let ours = measure(a.time, || {
        m.run_into(&refs, &mut outs).map_err(|e| e.to_string())
    })?;
    let profile = if a.profile || a.trace.is_some() {
        let mut pm = compile_jit(&a.c, &a.t, &bytes, &known, true)?;
        let p = optc::profile::profile(&mut pm, &inputs, a.time).map_err(|e| e.to_string())?;
        if let Some(path) = &a.trace {
            std::fs::write(path, p.chrome_trace(20))
                .map_err(|e| format!("--trace {}: {e}", path.display()))?;
        }
        Some(p)
    } else {
        None
    };
    // tract is a point of comparison, not part of optc: a model tract cannot run (an op it
    // lacks, a shape its analysis refuses) is benchmarked all the same, with a note.
    let with_tract = if a.json { a.tract } else { !a.no_tract };
    let tract = if with_tract {
        let facts: Vec<_> = inputs
            .iter()
            .map(|t| (t.dtype(), t.shape().to_vec()))
            .collect();
        Some(
            TractModel::load(&bytes, &facts)
                .and_then(|tm| measure(a.time, || tm.run(&inputs).map(|_| ()))),
        )
    } else {
        None
    };
    if a.json {
        let mut s = format!(
            "{{\"model\": {:?}, \"threads\": {}, \"opt_level\": {}, \"target\": {:?}, \"compile_ms\": {:.3}, \"runs\": {}, \"median_ms\": {:.6}, \"p90_ms\": {:.6}",
            a.c.model.display().to_string(),
            threads,
            a.c.level_or(2),
            a.c.target,
            compile_ms,
            ours.runs,
            ours.median_ms,
            ours.p90_ms
        );
        match &tract {
            Some(Ok(t)) => {
                s += &format!(
                    ", \"tract_median_ms\": {:.6}, \"tract_p90_ms\": {:.6}",
                    t.median_ms, t.p90_ms
                )
            }
            Some(Err(e)) => s += &format!(", \"tract_error\": {e:?}"),
            None => {}
        }
        if let Some(p) = &profile {
            let nodes: Vec<String> = p
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{{\"name\": {:?}, \"op\": {:?}, \"ms\": {:.6}, \"share\": {:.6}, \"gflops\": {}}}",
                        n.name,
                        n.op,
                        n.ms,
                        n.share,
                        n.gflops().map_or("null".to_string(), |g| format!("{g:.3}"))
                    )
                })
                .collect();
            s += &format!(", \"profile\": [{}]", nodes.join(", "));
        }
        s += "}";
        println!("{s}");
    } else {
        println!("model   {}", a.c.model.display());
        println!(
            "optc    -O{} target {}, compiled in {:.0} ms; threads: {}",
            a.c.level_or(2),
            a.c.target,
            compile_ms,
            threads
        );
        if let Ok(t) = optc_codegen::Target::parse(&a.c.target) {
            println!("target  {}", t.describe());
        }
        println!(
            "{:<8} {:>12} {:>12} {:>8}",
            "engine", "median ms", "p90 ms", "runs"
        );
        println!(
            "{:<8} {:>12.3} {:>12.3} {:>8}",
            "optc", ours.median_ms, ours.p90_ms, ours.runs
        );
        match &tract {
            Some(Ok(t)) => {
                println!(
                    "{:<8} {:>12.3} {:>12.3} {:>8}",
                    "tract", t.median_ms, t.p90_ms, t.runs
                );
                println!("optc / tract (median): {:.2}", ours.median_ms / t.median_ms);
            }
            Some(Err(e)) => println!("tract    not measured: {e}"),
            None => {}
        }
        if let Some(p) = &profile {
            print_profile(p, threads, &a.c.target);
            if let Some(path) = &a.trace {
                println!("trace   {} (the first 20 profiled runs)", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The per-node table of `bench --profile`.
fn print_profile(p: &optc::profile::Profile, threads: usize, target: &str) {
    // One core's FMA peak at the width of the target's microkernels (x86-64 with AVX2 and
    // FMA; else no % column).
    let parsed = optc_codegen::Target::parse(target).ok();
    let peak = parsed
        .as_ref()
        .and_then(|t| optc_codegen::fma_peak_gflops_for(t, 0.1).ok())
        .map(|g| g * threads as f64);
    let width = match &parsed {
        Some(t) if t.describe().contains("512-bit") => "512-bit",
        _ => "256-bit",
    };
    println!(
        "profile {} runs, {:.3} ms per run in kernels{}",
        p.runs,
        p.ms_per_run,
        peak.map_or(String::new(), |g| format!(
            "; {width} FMA peak {g:.1} GFLOP/s ({threads} thread(s))"
        ))
    );
    println!(
        "{:>9} {:>6} {:>8} {:>6} {:>6}  {:<24} node",
        "ms/run", "share", "GFLOP/s", "%peak", "tasks", "op"
    );
    for n in &p.nodes {
        let g = n.gflops();
        println!(
            "{:>9.4} {:>5.1}% {:>8} {:>6} {:>6}  {:<24} {}",
            n.ms,
            100.0 * n.share,
            g.map_or("-".to_string(), |g| format!("{g:.1}")),
            match (g, peak) {
                (Some(g), Some(pk)) => format!("{:.0}%", 100.0 * g / pk),
                _ => "-".to_string(),
            },
            if n.tasks_per_run > 0.0 {
                format!("{:.0}", n.tasks_per_run)
            } else {
                "-".to_string()
            },
            n.op,
            n.name
        );
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn cmd_explain(a: ExplainArgs) -> Res<ExitCode> {
    let opts = a.c.options(3)?;
    let bytes = read_model(&a.c.model)?;
    let (g, report) =
        optc::optimize_bytes(&bytes, &opts).map_err(|e| format!("{}: {e}", a.c.model.display()))?;
    show_warnings(&report);
    let import = report.timings.import;
    let r = report.optimizer;
    let mut out = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "model {} (imported in {:.1} ms)",
        a.c.model.display(),
        ms(import)
    );
    let _ = writeln!(
        out,
        "-O{}: {} phase(s), {:.1} ms",
        r.level,
        r.phases.len(),
        ms(r.time)
    );
    for (i, p) in r.phases.iter().enumerate() {
        let _ = writeln!(
            out,
            "phase {} [{}]: {} iteration(s), stopped: {}, e-graph {} nodes / {} classes, {:.1} ms",
            i + 1,
            p.passes.join(", "),
            p.iterations,
            p.stop_reason,
            p.egraph_nodes,
            p.egraph_classes,
            ms(p.time)
        );
        let mut rules: Vec<_> = p.rules_fired.iter().collect();
        rules.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
        for (name, n) in rules {
            let _ = writeln!(out, "    {name:<28} fired {n}");
        }
    }
    let _ = writeln!(
        out,
        "nodes {} -> {}, estimated cost {:.3} ms -> {:.3} ms",
        r.nodes_before,
        r.nodes_after,
        r.cost_before * 1e3,
        r.cost_after * 1e3
    );
    // Which int8 kernels the quantized contractions take on this target, and why.
    if let Ok(target) = optc::pipeline::target(&opts) {
        // (The JIT's: on an AMX host, `native` objects take the VNNI kernels instead.)
        let plans = optc_codegen::int8_plans(&g, &target.for_jit()).unwrap_or_default();
        if !plans.is_empty() {
            let _ = writeln!(out, "int8 kernels ({}, as run in the JIT):", opts.target);
            for (name, plan) in plans {
                let _ = writeln!(out, "    {name}: {plan}");
            }
        }
        let plans = optc_codegen::sparse_plans(&g, &target).unwrap_or_default();
        if !plans.is_empty() {
            let _ = writeln!(out, "sparse kernels ({}):", opts.target);
            for (name, plan) in plans {
                let _ = writeln!(out, "    {name}: {plan}");
            }
        }
    }
    match a.emit.as_deref() {
        Some("ir") => {
            eprint!("{out}");
            print!("{}", optc_ir::text::print(&g));
        }
        Some("dot") => {
            eprint!("{out}");
            print!("{}", optc_ir::dot::to_dot(&g));
        }
        _ => print!("{out}"),
    }
    Ok(ExitCode::SUCCESS)
}
