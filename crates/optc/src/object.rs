//! Ahead-of-time compiles: a model to a relocatable object and the files around it (static
//! archive, C header, Rust bindings, disassembly, Cranelift IR, optimized IR), through the
//! same pipeline as the JIT.

use crate::pipeline::{front, Report, Source};
use crate::{Error, Options, Result};
use optc_codegen::aot::{self, AotModel, AotOptions};
use optc_ir::Graph;
use std::time::Instant;

/// What an ahead-of-time compile adds to [`Options`].
#[derive(Clone, Debug)]
pub struct ObjectOptions {
    /// Symbol name of the model: symbols are `optc_<name>_run`, ... (made a C identifier
    /// by `optc_codegen::aot::symbol_name`).
    pub name: String,
    /// Name of the model in generated comments (a file name, for reproducible output).
    pub source: String,
    /// Keep the Cranelift IR ([`Artifacts::clif`]).
    pub keep_clif: bool,
    /// Keep the disassembly ([`Artifacts::asm`], x86-64 only).
    pub keep_asm: bool,
}

/// Everything one ahead-of-time compile produces.
#[derive(Clone, Debug)]
pub struct Artifacts {
    pub model: AotModel,
    /// The optimized graph (for `ir` and `dot` output).
    pub graph: Graph,
    /// Time per stage and the optimizer's report.
    pub report: Report,
    source: String,
}

/// Import, optimize and compile ONNX `bytes` to an object and its descriptions.
pub fn compile_object(bytes: &[u8], opts: &Options, obj: &ObjectOptions) -> Result<Artifacts> {
    compile(Source::Bytes(bytes), opts, obj)
}

/// Optimize and compile an IR graph to an object.
pub fn compile_object_graph(
    graph: Graph,
    opts: &Options,
    obj: &ObjectOptions,
) -> Result<Artifacts> {
    compile(Source::Graph(graph), opts, obj)
}

fn compile(source: Source, opts: &Options, obj: &ObjectOptions) -> Result<Artifacts> {
    let aopts = AotOptions {
        name: aot::symbol_name(&obj.name),
        keep_clif: obj.keep_clif,
        keep_asm: obj.keep_asm,
    };
    let (f, variants, length) = match (&opts.length, source) {
        (Some(spec), Source::Bytes(bytes)) => {
            if opts.compress.lossy() {
                return Err(Error::Input(
                    "a length range cannot be combined with lossy compression yet".into(),
                ));
            }
            let t = Instant::now();
            let (graphs, axes) = crate::dynamic_length::masked_graphs(bytes, opts, spec)?;
            let import = t.elapsed();
            let mut o = opts.clone();
            o.length = None;
            let mut fronts = vec![];
            for (max, g) in graphs {
                fronts.push((max, front(Source::Graph(g), &o)?));
            }
            let optimize = fronts.iter().map(|(_, f)| f.report.timings.optimize).sum();
            let (_, mut f) = fronts.pop().expect("the longest length's");
            f.report.timings.import = import;
            f.report.timings.optimize = optimize;
            let shorter: Vec<(usize, Graph)> =
                fronts.into_iter().map(|(m, f)| (m, f.graph)).collect();
            (f, shorter, Some((spec.max, axes)))
        }
        (Some(_), Source::Graph(_)) => {
            return Err(Error::Input(
                "a length range needs the ONNX model (it is imported at two lengths)".into(),
            ))
        }
        (None, source) => (front(source, opts)?, vec![], None),
    };
    let mut report = f.report;
    let t = Instant::now();
    let mut all: Vec<(usize, &Graph)> = variants.iter().map(|(m, g)| (*m, g)).collect();
    all.push((length.as_ref().map_or(0, |l| l.0), &f.graph));
    let mut model = aot::compile_object_variants(&all, &f.target, &aopts)?;
    model.length = length.map(|(_, l)| aot::AotLength {
        min: l.min,
        max: l.max,
        variants: all.iter().map(|(m, _)| *m).collect(),
        inputs: l.inputs,
        outputs: l.outputs,
        leading: l.leading,
    });
    report.timings.codegen = t.elapsed();
    Ok(Artifacts {
        model,
        graph: f.graph,
        report,
        source: obj.source.clone(),
    })
}

impl Artifacts {
    /// The relocatable object.
    pub fn object(&self) -> &[u8] {
        &self.model.object
    }
    /// A static archive holding the object as `<name>.o`.
    pub fn staticlib(&self) -> Vec<u8> {
        aot::static_archive(
            &format!("{}.o", self.model.name),
            &self.model.object,
            &self.model.exported_symbols(),
        )
    }
    /// The C header.
    pub fn header(&self) -> String {
        aot::c_header(&self.model, &self.source)
    }
    /// The safe Rust bindings (`include!` them; link the static archive and libm).
    pub fn rust(&self) -> String {
        aot::rust_bindings(&self.model, &self.source)
    }
    /// Cranelift IR of every function (when [`ObjectOptions::keep_clif`]).
    pub fn clif(&self) -> &str {
        &self.model.clif
    }
    /// Disassembly (when [`ObjectOptions::keep_asm`]).
    pub fn asm(&self) -> &str {
        &self.model.asm
    }
    /// The optimized graph in optc's text format.
    pub fn ir(&self) -> String {
        optc_ir::text::print(&self.graph)
    }
    /// The optimized graph in Graphviz format.
    pub fn dot(&self) -> String {
        optc_ir::dot::to_dot(&self.graph)
    }
}
