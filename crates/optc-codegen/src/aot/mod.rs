//! Ahead-of-time compilation: the same lowering as the JIT, written to a relocatable object
//! through `cranelift-object`, plus the files around it.
//!
//! - `object.rs`: [`compile_object`] (the object, and the CLIF/assembly text on request),
//! - `model.rs`: what it returns ([`AotModel`]) and the symbol names,
//! - `runtime.rs`: every runtime function the generated code calls
//!   ([`crate::runtime::SYMBOLS`]) emitted into the object as a local function, so an object
//!   is self-contained except for libm (`logf`, `pow`) and libc, and several models link into
//!   one binary,
//! - `recorder.rs`: a module wrapper keeping each function's IR and disassembly,
//! - `archive.rs`, `c_header.rs`, `rust_bindings.rs`: the static archive, the C header and
//!   the safe Rust bindings.
//!
//! Symbols of a model named `NAME` (all other symbols are local):
//! - `int32_t optc_NAME_run(const void *const *inputs, void *const *outputs, void *workspace)`
//! - `uint64_t optc_NAME_workspace_size(void)`
//! - `void optc_NAME_set_parallel_for(optc_parallel_for_fn f, void *user)`: the embedder's
//!   parallel for-loop (see `c_header.rs`), kept in a zero-initialized writable slot local
//!   to the object; the object's `optc_rt_parallel_for` calls it when set, else loops
//!   serially.
//!
//! Constants (weights) live in read-only data. Output is byte-for-byte reproducible. An
//! object for a range of lengths may hold several variants of the model
//! ([`compile_object_variants`]): local entry functions `optc_NAME_run_<length>` that
//! `optc_NAME_run` picks from by the run's length, with one copy of each weight.

mod archive;
mod c_header;
mod model;
mod object;
mod recorder;
mod runtime;
mod rust_bindings;

pub use archive::static_archive;
pub use c_header::{c_header, c_type};
pub use model::{symbol_name, AotLength, AotModel, AotOptions, AotTensor};
pub use object::{compile_object, compile_object_variants};
pub use rust_bindings::{rust_bindings, rust_type, type_name};
