//! Code generation: lowering an `optc_ir::Graph` to native code through Cranelift.
//!
//! - [`Target`]: which instruction-set features the generated code may use.
//! - [`compile_jit`]: lower a graph into a [`JitModel`] that runs in this process.
//! - The lowering itself ([`lower`]) is generic over `cranelift_module::Module`, so the same
//!   code path can serve `cranelift-object` for ahead-of-time compilation.
//!
//! Generated entry ABI:
//! `extern "C" fn(inputs: *const *const u8, outputs: *const *mut u8, workspace: *mut u8) -> i32`
//! returning 0 on success, or `((node_position + 1) << 8) | code` on a runtime error
//! (a [`RuntimeError`] code).
//!
//! Host functions called by generated code are listed in [`runtime::SYMBOLS`] (AOT objects
//! carry their own copies). Setting `OPTC_DISASM=1` prints every kernel's machine code to stderr.

pub mod aot;
mod emit;
mod error;
mod jit;
mod lower;
mod node;
mod ops;
mod peephole;
mod plan;
pub mod runtime;
mod target;
mod x64;

pub use error::{CodegenError, RuntimeError};
pub use jit::{compile_jit, JitModel, Workspace};
pub use target::{Caches, Target};
pub use x64::asm::{fma_peak_gflops, fma_peak_loop};

/// Largest workspace or constant size we accept (16 GiB).
pub const MAX_BYTES: usize = 16 << 30;
