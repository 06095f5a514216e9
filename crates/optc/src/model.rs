//! [`CompiledModel`]: a model compiled to machine code in this process (JIT).

use crate::pipeline::{front, read_file, Report, Source};
use crate::{Error, Options, Result};
use optc_codegen::{JitModel, Workspace};
use optc_ir::{Graph, Tensor, TensorType};
use std::path::Path;
use std::time::Instant;

/// A model compiled to machine code, ready to run. Owns its workspace, so `run` takes
/// `&mut self`; compile once per thread to run on several threads.
pub struct CompiledModel {
    graph: Graph,
    jit: JitModel,
    ws: Workspace,
    input_names: Vec<String>,
    output_names: Vec<String>,
    report: Report,
}

/// Compile an ONNX file.
pub fn compile_file(path: &Path, opts: &Options) -> Result<CompiledModel> {
    compile_bytes(&read_file(path)?, opts)
}

/// Compile ONNX bytes.
pub fn compile_bytes(bytes: &[u8], opts: &Options) -> Result<CompiledModel> {
    compile(Source::Bytes(bytes), opts)
}

/// Compile an IR graph.
pub fn compile_graph(graph: Graph, opts: &Options) -> Result<CompiledModel> {
    compile(Source::Graph(graph), opts)
}

fn compile(source: Source, opts: &Options) -> Result<CompiledModel> {
    let f = front(source, opts)?;
    let mut report = f.report;
    let t = Instant::now();
    let mut jit = optc_codegen::compile_jit(&f.graph, &f.target)?;
    jit.set_threads(opts.threads);
    report.timings.codegen = t.elapsed();
    let ws = jit.new_workspace();
    let graph = f.graph;
    let input_names = graph.inputs.iter().map(|i| i.name.clone()).collect();
    let output_names = graph.outputs.iter().map(|o| o.name.clone()).collect();
    Ok(CompiledModel {
        graph,
        jit,
        ws,
        input_names,
        output_names,
        report,
    })
}

impl CompiledModel {
    /// The (optimized) IR this model was compiled from.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// What the compile did: time per stage and the optimizer's report.
    pub fn report(&self) -> &Report {
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
