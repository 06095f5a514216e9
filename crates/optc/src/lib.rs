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
//! it (by `-O` level), and [`optc_codegen`] lowers it through Cranelift to machine code, in
//! this process ([`compile_bytes`] → [`CompiledModel`]) or to an object file
//! ([`compile_object`] → [`Artifacts`]). Both go through one pipeline ([`pipeline`]) with one
//! [`Options`] and one [`Report`]; the `optc` CLI and `optc-build` call these functions.

pub mod attention_blocks;
pub mod compress;
pub mod dynamic_length;
mod error;
mod inputs;
mod model;
pub mod npy;
mod object;
mod options;
pub mod pipeline;
pub mod profile;

pub use error::{Error, Result};
pub use inputs::{compare, random_inputs, Diff};
pub use model::{compile_bytes, compile_file, compile_graph, CompiledModel};
pub use object::{compile_object, compile_object_graph, Artifacts, ObjectOptions};
pub use optc_egraph::soundness::Verdict;
pub use optc_ir::{checked_numel, DType, Data, Graph, Tensor, TensorType};
pub use optc_onnx::ImportOptions;
pub use options::Options;
pub use pipeline::{
    check_rules, import_bytes, import_file, optimize, optimize_bytes, optimize_with,
    optimize_with_report, passes, passes_for, target, Report, Timings,
};
