//! [`CompiledModel`]: a model compiled to machine code in this process (JIT).
//!
//! Code is compiled for static shapes. A model whose inputs have dynamic dims (`batch`,
//! `seq`) is compiled once per distinct set of input shapes it is run with: each such
//! *variant* is kept in a small least-recently-used cache ([`Options::shape_cache`]), so a
//! run with shapes seen before costs nothing extra, and a run with new shapes costs one
//! compile (import, optimization and code generation: tens to hundreds of milliseconds;
//! [`CompiledModel::compile_count`] says how many there were). The same holds for inputs a
//! node needs as constants (an `If` condition, a shape): the variant is specialized to
//! their values and a run with other values compiles another variant, never reuses a
//! variant made for different values.

use crate::pipeline::{front, read_file, Report, Source};
use crate::{Error, Options, Result};
use optc_codegen::{JitModel, Workspace};
use optc_ir::{Graph, Tensor, TensorType};
use optc_onnx::DeclaredInput;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

/// A model compiled to machine code, ready to run.
///
/// It owns the workspaces its runs write to, so `run` takes `&mut self`. To run one model
/// on several threads, give each thread a handle from [`CompiledModel::share`]: the
/// handles share the machine code (compiled once) and each has workspaces of its own.
/// `CompiledModel` is `Send` and `Sync` (a handle can move to the thread that runs it);
/// the generated code keeps no global state, and the thread pool it calls serves one
/// parallel node at a time (a second caller runs its node on its own thread meanwhile).
pub struct CompiledModel {
    /// What new variants are compiled from; `None` for a model compiled from a graph
    /// (one variant, its shapes fixed).
    recompile: Option<Recompile>,
    input_names: Vec<String>,
    output_names: Vec<String>,
    /// Compiled variants, the most recently used first.
    variants: Vec<Variant>,
    compiles: usize,
    /// Why the compile waits for the first run's input values, when it does.
    deferred: Option<optc_onnx::ImportError>,
}

/// The ONNX model and options a variant is compiled from.
#[derive(Clone)]
struct Recompile {
    bytes: Arc<[u8]>,
    opts: Options,
    declared: Vec<DeclaredInput>,
}

/// The model compiled for one set of input shapes (and values of bound inputs).
struct Variant {
    graph: Arc<Graph>,
    /// Shared by the handles [`CompiledModel::share`] makes; the workspace is each's own.
    jit: Arc<JitModel>,
    ws: Workspace,
    report: Report,
    /// Inputs bound to a value at compile time: (input index, value).
    bound: Vec<(usize, Tensor)>,
}

/// Compile an ONNX file.
pub fn compile_file(path: &Path, opts: &Options) -> Result<CompiledModel> {
    compile_bytes(&read_file(path)?, opts)
}

/// Compile ONNX bytes. A model with dynamic dims that `opts` does not size
/// (`input_shapes`, or the shapes of `input_values`) is compiled at its first run, for the
/// shapes of that run's inputs.
pub fn compile_bytes(bytes: &[u8], opts: &Options) -> Result<CompiledModel> {
    let interface = optc_onnx::interface(bytes)?;
    let names: Vec<&str> = interface.inputs.iter().map(|i| i.name.as_str()).collect();
    let mut unknown: Vec<&String> = (opts.input_shapes.keys())
        .chain(opts.input_values.keys())
        .filter(|k| !names.contains(&k.as_str()))
        .collect();
    unknown.sort();
    if let Some(k) = unknown.first() {
        let what = if opts.input_shapes.contains_key(*k) {
            "--input-shape"
        } else {
            "a value given"
        };
        return Err(Error::Input(format!(
            "{what} names '{k}', but the model has no such input; its inputs are: {}",
            names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let sized = interface.inputs.iter().all(|i| {
        i.is_static()
            || opts.input_shapes.contains_key(&i.name)
            || opts.input_values.contains_key(&i.name)
    });
    let mut m = CompiledModel {
        recompile: Some(Recompile {
            bytes: bytes.into(),
            opts: opts.clone(),
            declared: interface.inputs.clone(),
        }),
        input_names: interface.inputs.into_iter().map(|i| i.name).collect(),
        output_names: interface.outputs,
        variants: vec![],
        compiles: 0,
        deferred: None,
    };
    if !sized {
        // Compiled at the first run; unsupported ops are reported now.
        optc_onnx::check_ops(bytes)?;
        return Ok(m);
    }
    match m.compile_variant(Source::Bytes(bytes), opts) {
        Ok(v) => m.variants.push(v),
        // A node needs the value of an input (an `If` condition, a trip count): compile
        // at the first run, for its values.
        Err(Error::Import(e)) if !e.needs_values().is_empty() => m.deferred = Some(e),
        Err(e) => return Err(e),
    }
    Ok(m)
}

/// Compile an IR graph.
pub fn compile_graph(graph: Graph, opts: &Options) -> Result<CompiledModel> {
    let input_names = graph.inputs.iter().map(|i| i.name.clone()).collect();
    let output_names = graph.outputs.iter().map(|o| o.name.clone()).collect();
    let mut m = CompiledModel {
        recompile: None,
        input_names,
        output_names,
        variants: vec![],
        compiles: 0,
        deferred: None,
    };
    let v = m.compile_variant(Source::Graph(graph), opts)?;
    m.variants.push(v);
    Ok(m)
}

impl CompiledModel {
    fn compile_variant(&mut self, source: Source, opts: &Options) -> Result<Variant> {
        let f = front(source, opts)?;
        let mut report = f.report;
        let t = Instant::now();
        let mut jit = optc_codegen::compile_jit(&f.graph, &f.target)?;
        jit.set_threads(opts.threads);
        report.timings.codegen = t.elapsed();
        let ws = jit.new_workspace();
        let mut bound = vec![];
        for name in &f.bound_inputs {
            let k = self.input_names.iter().position(|n| n == name);
            if let (Some(k), Some(v)) = (k, opts.input_values.get(name)) {
                bound.push((k, v.clone()));
            }
        }
        self.compiles += 1;
        Ok(Variant {
            graph: Arc::new(f.graph),
            jit: Arc::new(jit),
            ws,
            report,
            bound,
        })
    }

    /// Another handle on this model for another thread: the same compiled variants (their
    /// machine code and constants are shared, not copied or compiled again), fresh
    /// workspaces of its own. Shapes compiled later by one handle are that handle's own.
    pub fn share(&self) -> CompiledModel {
        CompiledModel {
            recompile: self.recompile.clone(),
            input_names: self.input_names.clone(),
            output_names: self.output_names.clone(),
            variants: self
                .variants
                .iter()
                .map(|v| Variant {
                    graph: v.graph.clone(),
                    jit: v.jit.clone(),
                    ws: v.jit.new_workspace(),
                    report: v.report.clone(),
                    bound: v.bound.clone(),
                })
                .collect(),
            compiles: 0,
            deferred: self.deferred.clone(),
        }
    }

    /// The variant run last (or compiled last), if any.
    fn current(&self) -> Option<&Variant> {
        self.variants.first()
    }

    /// The (optimized) IR of the current variant: the one run last, or compiled last. A
    /// model with dynamic dims compiled without their sizes has no variant before its first
    /// run; its graph is empty until then.
    pub fn graph(&self) -> &Graph {
        static EMPTY: OnceLock<Graph> = OnceLock::new();
        match self.current() {
            Some(v) => &v.graph,
            None => EMPTY.get_or_init(Graph::new),
        }
    }

    /// The kernels of the current variant in schedule order (what a profile numbers; empty
    /// before the first compile).
    pub fn kernels(&self) -> &[optc_codegen::KernelInfo] {
        match self.current() {
            Some(v) => v.jit.kernels(),
            None => &[],
        }
    }

    /// What the compile of the current variant did: time per stage and the optimizer's
    /// report (empty before the first compile).
    pub fn report(&self) -> &Report {
        static EMPTY: OnceLock<Report> = OnceLock::new();
        match self.current() {
            Some(v) => &v.report,
            None => EMPTY.get_or_init(Report::default),
        }
    }

    pub fn input_names(&self) -> &[String] {
        &self.input_names
    }

    pub fn output_names(&self) -> &[String] {
        &self.output_names
    }

    /// The input types of the current variant; empty when nothing is compiled yet (a model
    /// with dynamic dims before its first run: see [`CompiledModel::declared_inputs`]).
    pub fn input_types(&self) -> Vec<TensorType> {
        self.current()
            .map(|v| v.jit.input_types().to_vec())
            .unwrap_or_default()
    }

    /// The output types of the current variant; empty when nothing is compiled yet.
    pub fn output_types(&self) -> Vec<TensorType> {
        self.current()
            .map(|v| v.jit.output_types().to_vec())
            .unwrap_or_default()
    }

    /// The inputs as the ONNX model declares them, dynamic dims by name; `None` for a
    /// model compiled from an IR graph.
    pub fn declared_inputs(&self) -> Option<&[DeclaredInput]> {
        self.recompile.as_ref().map(|r| r.declared.as_slice())
    }

    /// When the model was compiled without a variant because a node needs the value of an
    /// input (an `If` condition over branches of different shapes, a loop's trip count):
    /// the importer's error, whose `needs_values` names those inputs. Each run then
    /// compiles (or reuses) a variant for its values.
    pub fn waits_for_values(&self) -> Option<&optc_onnx::ImportError> {
        self.deferred.as_ref()
    }

    /// The input shapes of every compiled variant, the most recently used first.
    pub fn compiled_shapes(&self) -> Vec<Vec<Vec<usize>>> {
        self.variants
            .iter()
            .map(|v| {
                v.jit
                    .input_types()
                    .iter()
                    .map(|t| t.shape.clone())
                    .collect()
            })
            .collect()
    }

    /// How many times this model was compiled (the first compile and one per new variant,
    /// including variants compiled again after the cache dropped them).
    pub fn compile_count(&self) -> usize {
        self.compiles
    }

    /// Bytes of scratch memory the current variant uses (allocated once, at compile time).
    pub fn workspace_size(&self) -> usize {
        self.current().map_or(0, |v| v.jit.workspace_size())
    }

    /// Run on inputs in model order; returns the outputs in model order.
    pub fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>> {
        let refs: Vec<&Tensor> = inputs.iter().collect();
        self.select(&refs)?;
        let mut outs: Vec<Tensor> = self
            .output_types()
            .iter()
            .map(|t| Tensor::zeros(t.dtype, t.shape.clone()))
            .collect();
        self.run_current(&refs, &mut outs)?;
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
        for (i, (n, _)) in inputs.iter().enumerate() {
            if inputs[..i].iter().any(|(m, _)| m == n) {
                return Err(Error::Input(format!("input '{n}' is given twice")));
            }
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

    /// Run into preallocated outputs. No allocation when a variant for these input shapes
    /// exists (the outputs must have its output types).
    pub fn run_into(&mut self, inputs: &[&Tensor], outputs: &mut [Tensor]) -> Result<()> {
        self.select(inputs)?;
        self.run_current(inputs, outputs)
    }

    /// Run the current variant (`select` made it the one for `inputs`).
    fn run_current(&mut self, inputs: &[&Tensor], outputs: &mut [Tensor]) -> Result<()> {
        let v = &mut self.variants[0];
        v.jit.run(inputs, outputs, &mut v.ws)?;
        Ok(())
    }

    /// Make the variant for `inputs` the current one, compiling it when there is none.
    fn select(&mut self, inputs: &[&Tensor]) -> Result<()> {
        if inputs.len() != self.input_names.len() {
            return Err(Error::Input(format!(
                "the model takes {} input(s) ({}), got {}",
                self.input_names.len(),
                self.input_names.join(", "),
                inputs.len()
            )));
        }
        if let Some(k) = self.variants.iter().position(|v| v.fits(inputs)) {
            self.variants[..=k].rotate_right(1);
            return Ok(());
        }
        let Some(r) = &self.recompile else {
            // A graph's one variant: say what it takes.
            return Err(self.mismatch(inputs));
        };
        for ((t, d), name) in inputs.iter().zip(&r.declared).zip(&self.input_names) {
            if !d.admits(t.dtype(), t.shape()) {
                return Err(Error::Input(format!(
                    "input '{name}' must be {d}, got {}",
                    t.ty()
                )));
            }
        }
        if r.opts.compress.lossy() {
            return Err(Error::Input(format!(
                "this model was compressed for the input shapes {}; a run with other shapes \
                 needs its own compile (with its own calibration): {}",
                self.shapes_text(),
                self.mismatch(inputs)
            )));
        }
        let mut opts = r.opts.clone();
        for (t, name) in inputs.iter().zip(&self.input_names) {
            opts.input_shapes.insert(name.clone(), t.shape().to_vec());
            opts.input_values.insert(name.clone(), (*t).clone());
        }
        let bytes = r.bytes.clone();
        let v = self.compile_variant(Source::Bytes(&bytes), &opts)?;
        let capacity = self
            .recompile
            .as_ref()
            .map_or(1, |r| r.opts.shape_cache.max(1));
        self.variants.insert(0, v);
        self.variants.truncate(capacity);
        Ok(())
    }

    /// The error for inputs no variant takes (and none may be compiled for).
    fn mismatch(&self, inputs: &[&Tensor]) -> Error {
        if let Some(v) = self.current() {
            for (((t, w), name), k) in inputs
                .iter()
                .zip(v.jit.input_types())
                .zip(&self.input_names)
                .zip(0..)
            {
                if t.dtype() != w.dtype || t.shape() != w.shape.as_slice() {
                    return Error::Input(format!("input '{}' must be {}, got {}", name, w, t.ty()));
                }
                if let Some((_, b)) = v.bound.iter().find(|(i, _)| *i == k) {
                    if b != *t {
                        return Error::Input(format!(
                            "input '{name}' was bound to its value at compile time (a node \
                             needs it as a constant), and this run gives another value"
                        ));
                    }
                }
            }
        }
        Error::Input("the inputs do not match the compiled model".into())
    }

    fn shapes_text(&self) -> String {
        self.input_types()
            .iter()
            .zip(&self.input_names)
            .map(|(t, n)| format!("{n}: {t}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Variant {
    /// Whether this variant was compiled for these inputs: their types, and the values of
    /// the inputs it bound.
    fn fits(&self, inputs: &[&Tensor]) -> bool {
        let types_match = inputs
            .iter()
            .zip(self.jit.input_types())
            .all(|(t, w)| t.dtype() == w.dtype && t.shape() == w.shape.as_slice());
        types_match && self.bound.iter().all(|(k, b)| inputs[*k] == b)
    }
}

#[cfg(test)]
mod tests {
    /// Compile-time check of what the type promises its users.
    #[test]
    fn compiled_model_is_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<super::CompiledModel>();
    }
}
