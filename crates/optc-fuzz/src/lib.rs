//! optc's fuzz targets, as plain functions of a byte string.
//!
//! Each target takes arbitrary bytes and either gets a clear error from optc or a result
//! it checks; a panic, an abort or a wrong answer is a bug. Two drivers call them:
//! - `fuzz/` (cargo-fuzz, libFuzzer, nightly): coverage-guided, for hours;
//! - `tests/` here: a fixed, seeded set of inputs in `cargo test` (CI), so every target
//!   runs on every commit and every crash found once stays a regression test
//!   (`regressions/<target>/`).
//!
//! The targets:
//! - [`import::target`]: the ONNX importer on bytes (and the optimizer and the interpreter
//!   on what it imports, when small);
//! - [`text::target`]: the IR text parser (what parses prints and parses back the same);
//! - [`graphs::target`]: a random well-typed graph ([`graphs::generate`]) run by the
//!   interpreter and compiled at -O0..-O3 ([`differential`]); outputs must agree;
//! - [`inputs::target`]: `CompiledModel::run` with inputs of wrong shapes and types;
//! - [`tensors::target`]: the `.pb` and `.npy` tensor readers.

pub mod differential;
pub mod graphs;
pub mod import;
pub mod inputs;
pub mod mutate;
pub mod seeds;
pub mod source;
pub mod tensors;
pub mod text;

/// Graphs or models above this many elements in one tensor are skipped by the targets
/// that run them (a fuzz input must stay fast).
pub const RUN_MAX_ELEMENTS: usize = 1 << 16;
