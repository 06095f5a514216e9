//! Machine code assembled with `iced-x86` (Cranelift's x86-64 backend lowers only 128-bit
//! vectors) and put into the module with `Module::define_function_bytes`:
//!
//! - `gemm.rs` (with `gemm_avx2.rs`, `gemm_avx512.rs`): the SGEMM microkernels every GEMM,
//!   conv, Winograd and swapped-roles node of the x64 path calls,
//! - `depthwise.rs`: whole depthwise-conv units,
//! - `direct_conv.rs`: convs with few input channels (a network's first conv),
//! - `int8.rs` (with `int8_avx2.rs`, `int8_vnni.rs`, `int8_pixels.rs`, `int8_amx.rs`): the int8 microkernels of the quantized
//!   contractions, and `quantize.rs`: the routines that quantize their f32 activations,
//! - `sparse.rs`: the sparse kernel (rows of a mostly-zero constant weight times dense panels),
//!   and `transpose.rs`: the 8x8-block transposing copy that packs its MatMul panels,
//! - `padded_rows.rs`: the zero-padded input copy of a conv (AVX-512),
//! - `softmax.rs`: softmax over contiguous rows (AVX-512), `lstm.rs`: an LSTM step's gates
//!   (AVX-512),
//! - `epilogue.rs`: the bias/activation/residual/scale steps applied before a tile's store,
//! - `routine.rs`: [`Routine`], the one key type of every assembled routine a node calls,
//! - `peak.rs`: the FMA-peak loop of the benches,
//! - `emulator.rs` (tests): an interpreter of the AVX-512 instructions the kernels use, so
//!   they are checked on hosts without AVX-512; `tests.rs` decodes every variant,
//!   `int8_tests.rs` every int8 kernel (and runs the VNNI ones in the emulator).

pub(crate) mod depthwise;
mod depthwise_avx512;
pub(crate) mod direct_conv;
pub(crate) mod direct_conv_avx512;
mod epilogue;
mod gemm;
mod gemm_avx2;
mod gemm_avx512;
pub(crate) mod int8;
pub(crate) mod int8_amx;
mod int8_avx2;
pub(crate) mod int8_pixels;
mod int8_vnni;
pub(crate) mod lstm;
pub(crate) mod matrix_transpose;
pub(crate) mod max_pool;
pub(crate) mod padded_rows;
mod panel_rows;
mod peak;
pub(crate) mod quantize;
mod registers;
mod routine;
pub(crate) mod softmax;
pub(crate) mod sparse;
pub(crate) mod transpose;

#[cfg(test)]
mod emulator;
#[cfg(test)]
mod int8_pixels_tests;
#[cfg(test)]
mod int8_tests;
#[cfg(test)]
mod tests;

pub(crate) use epilogue::Epilogue;
pub(crate) use gemm::{Isa, MicrokernelKey, MR, NR};
pub use peak::{fma_peak_gflops, fma_peak_gflops_for, fma_peak_loop, fma_peak_loop_512};
pub(crate) use routine::Routine;
pub(crate) use sparse::SparseKey;
pub(crate) use transpose::TransposeKey;
