//! Code generation: lowering an `optc_ir::Graph` to native code through Cranelift.
//!
//! - [`Target`] (`target.rs`): which instruction-set features the generated code may use.
//! - [`compile_jit`] (`jit.rs`): lower a graph into a [`JitModel`] that runs in this process;
//!   [`aot::compile_object`] (`aot/`): the same lowering into a relocatable object, with its
//!   C header, Rust bindings and static archive.
//! - `module/`: the lowering of a whole graph, generic over `cranelift_module::Module`: memory
//!   plan, constant data, one kernel function per node, task functions, the entry function.
//! - `ops/`: the generic lowering of every op family as Cranelift IR (any target).
//! - `x64/`: the x86-64 path (AVX2/FMA, AVX-512F): the per-node plan, GEMM driver, packing,
//!   tasks, Winograd, depthwise, direct conv, swapped-roles 1x1 convs, max pools, and
//!   `x64/asm/`, the routines assembled with `iced-x86`.
//! - [`runtime`]: the one table of host functions generated code calls, and the thread pool.
//! - `builder.rs`: the function builder the lowering writes through (loops, loads, constants,
//!   vector math); `node.rs`: the node being lowered. Codegen never rewrites the graph: that
//!   is the optimizer's job (`passes/`).
//!
//! Invariants: nothing imports from a parent module; the objects and their CLIF are
//! byte-for-byte reproducible, so declarations keep their order; every kernel addresses a
//! tensor with 32-bit offsets (tensors up to 2 GiB).
//!
//! Generated entry ABI:
//! `extern "C" fn(inputs: *const *const u8, outputs: *const *mut u8, workspace: *mut u8) -> i32`
//! returning 0 on success, or `((node_position + 1) << 8) | code` on a runtime error
//! (a [`RuntimeError`] code).
//!
//! Host functions called by generated code are listed in [`runtime::SYMBOLS`] (AOT objects
//! carry their own copies). Setting `OPTC_DISASM=1` prints every kernel's machine code to
//! stderr.

pub mod aot;
mod border_regions;
mod builder;
mod error;
mod graph_rewrite;
mod jit;
mod module;
mod node;
mod ops;
pub mod runtime;
mod target;
mod thread_choice;
mod x64;

pub use error::{CodegenError, RuntimeError};
pub use jit::{compile_jit, JitModel, Workspace};
pub use module::KernelInfo;
pub use target::{Caches, Target};
pub use x64::asm::{fma_peak_gflops, fma_peak_gflops_for, fma_peak_loop, fma_peak_loop_512};
pub use x64::{int8_plans, pairs_never_saturate, sparse_plans};

/// Largest workspace or constant size we accept (16 GiB).
pub const MAX_BYTES: usize = 16 << 30;
