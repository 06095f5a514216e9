//! The AVX2/FMA GEMM path (BLIS style): MatMul/Gemm with a constant B packed at compile time
//! into 16-column panels, and ungrouped Conv as an implicit GEMM (`W[M, C*KH*KW] @ patches`)
//! whose patch panels are packed on the fly, one K block at a time, into per-task scratch.
//! The `mr x 16` tiles are computed by the `iced-x86` microkernels of [`crate::x64::asm`], which
//! also apply the epilogue (bias, Relu/Clip, residual add, alpha) before the store.
//!
//! Work is split into column units (`chunk` columns of one image); a node's units are spread
//! over up to [`MAX_TASKS`] tasks run by the `optc_rt_parallel_for` hook.

pub(crate) mod asm;
mod depthwise;
mod direct_conv;
mod gemm;
mod kernel_plan;
mod packing;
mod pool;
mod serial;
mod small_map;
mod tasks;
mod winograd;

pub(crate) use kernel_plan::{kernel_plan, KernelPlan};
pub(crate) use packing::derived;
pub(crate) use serial::{emit_post, emit_pre};
pub(crate) use tasks::{emit_task, KernelArgs};
