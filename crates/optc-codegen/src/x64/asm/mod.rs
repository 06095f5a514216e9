//! Machine code assembled with `iced-x86` (Cranelift's x86-64 backend lowers only 128-bit
//! vectors) and put into the module with `Module::define_function_bytes`:
//!
//! - `gemm.rs` (with `gemm_avx2.rs`, `gemm_avx512.rs`): the SGEMM microkernels every GEMM,
//!   conv, Winograd and swapped-roles node of the x64 path calls,
//! - `depthwise.rs`: whole depthwise-conv units,
//! - `direct_conv.rs`: convs with few input channels (a network's first conv),
//! - `epilogue.rs`: the bias/activation/residual/scale steps applied before a tile's store,
//! - `routine.rs`: [`Routine`], the one key type of every assembled routine a node calls,
//! - `peak.rs`: the FMA-peak loop of the benches,
//! - `emulator.rs` (tests): an interpreter of the AVX-512 instructions the kernels use, so
//!   they are checked on hosts without AVX-512; `tests.rs` decodes every variant.

pub(crate) mod depthwise;
pub(crate) mod direct_conv;
mod epilogue;
mod gemm;
mod gemm_avx2;
mod gemm_avx512;
mod peak;
mod registers;
mod routine;

#[cfg(test)]
mod emulator;
#[cfg(test)]
mod tests;

pub(crate) use epilogue::Epilogue;
pub(crate) use gemm::{Isa, MicrokernelKey, MR, NR};
pub use peak::{fma_peak_gflops, fma_peak_loop};
pub(crate) use routine::Routine;
