//! The x86-64 path, on targets with AVX2/FMA (`x86_64-avx2`, `x86_64-avx512`, `native` on such
//! a host): nodes whose plan ([`kernel_plan()`]) is not `None` are lowered here instead of by
//! [`crate::ops`]. The heavy lifting is done by the routines of [`asm`], assembled with
//! `iced-x86` (Cranelift's x86-64 backend lowers only 128-bit vectors): AVX2 microkernels, or
//! AVX-512F ones on the `x86_64-avx512` target only (`native` keeps AVX2 until they have run
//! on AVX-512 hardware).
//!
//! The GEMM family (BLIS style): MatMul/Gemm with a constant B packed at compile time into
//! 16-column panels (or a run-time B packed per unit), and ungrouped Conv as an implicit GEMM
//! (`W[M, C*KH*KW] @ patches`) whose patch panels are packed on the fly, one K block at a time,
//! into per-task scratch. The `mr x 16` tiles are computed by the microkernels, which also apply
//! the epilogue (bias, Relu/Clip, residual add, alpha) before the store. Work is split into
//! units (`chunk` columns of one image, `mrows` rows); a node's units are spread over up to
//! `MAX_TASKS` tasks run by the `optc_rt_parallel_for` hook.
//!
//! - `kernel_plan.rs`: the per-node decision ([`KernelPlan`], its [`kernel_plan::Strategy`]),
//!   blocking (`KC` from L1d, `MC` from L2: [`crate::Target::caches`]) and task split,
//! - `tasks.rs`: the units of a task, per-task buffer slots; `serial.rs`: the work before and
//!   after the tasks (padded input copy, Gemm's C term, fused steps the tiles skipped),
//! - `gemm.rs`: the GEMM driver of a unit; `packing.rs`: compile-time and run-time packing,
//! - the other strategies: `winograd.rs` (3x3 stride-1 convs, F(2x2) or F(4x4)),
//!   `depthwise.rs`, `direct_conv.rs` (few input channels: a network's first conv),
//!   `small_map.rs` (1x1 convs on small maps, the GEMM roles swapped), `pool.rs` (2-D max
//!   pools, separable), `int8/` (the quantized contractions on the int8 microkernels),
//!   `sparse.rs` (contractions whose constant weight is mostly zeros), `softmax.rs`
//!   (softmax over rows, AVX-512), `lstm.rs` (an LSTM step's gates, AVX-512).

pub(crate) mod asm;
mod depthwise;
mod direct_conv;
mod gemm;
pub(crate) mod int8;
mod kernel_plan;
mod lstm;
mod matrix_transpose;
mod packing;
mod padded_copy;
mod pairs;
mod pool;
mod serial;
mod small_map;
mod softmax;
pub(crate) mod sparse;
mod sparse_skipped;
mod swapped_convs;
mod tap_classes;
mod tasks;
mod winograd;
mod winograd_weights;

pub(crate) use int8::hand_off_bytes;
pub use int8::{int8_plans, pairs_never_saturate};
pub(crate) use kernel_plan::{kernel_plan, KernelPlan};
pub(crate) use packing::{derived, first_run_weights};
pub(crate) use pairs::pair_expand_depthwise;
pub(crate) use serial::{emit_post, emit_pre, emit_prepare, emit_unfold_part};
pub use sparse::sparse_plans;
pub(crate) use swapped_convs::swap_small_map_convs;
pub(crate) use tasks::{emit_task, KernelArgs};
