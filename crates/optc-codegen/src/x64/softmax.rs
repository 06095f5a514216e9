//! Softmax over the last axis on the AVX-512 routine of [`super::asm::softmax`]: a task's
//! units are runs of `mrows` rows, one routine call per task; fused steps (BERT's `nan_to`)
//! run after the rows, on slices of the output (`serial::emit_post`).

use super::asm::softmax::SoftmaxKey;
use super::asm::Routine;
use super::kernel_plan::KernelPlan;
use super::tasks::{task_units, KernelArgs};
use crate::builder::Emitter;
use cranelift_codegen::ir::{InstBuilder, Value};
use optc_ir::{DType, TensorType};

/// `(rows, n)` of a softmax over `axis` of `x` when its rows are contiguous (the last axis, or
/// only ones after it) and not empty.
pub(super) fn rows(x: &TensorType, axis: usize) -> Option<(usize, usize)> {
    let s = &x.shape;
    if x.dtype != DType::F32 || axis >= s.len() || s[axis + 1..].iter().product::<usize>() != 1 {
        return None;
    }
    let (rows, n) = (s[..axis].iter().product::<usize>(), s[axis]);
    (rows > 0 && n > 0).then_some((rows, n))
}

pub(super) fn key(p: &KernelPlan) -> SoftmaxKey {
    SoftmaxKey { n: p.n }
}

/// The rows of task `t`.
pub(super) fn emit_task(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, t: Value) {
    let (lo, hi) = task_units(e, p, t);
    let r0 = e.b.ins().imul_imm_s(lo, p.mrows as i64);
    let r1 = e.b.ins().imul_imm_s(hi, p.mrows as i64);
    let cap = e.int_const(p.m as i64);
    let r1 = e.b.ins().smin(r1, cap);
    let rows = e.b.ins().isub(r1, r0);
    let off = e.b.ins().imul_imm_s(r0, (p.n * 4) as i64);
    let x = e.b.ins().iadd(c.ins[0], off);
    let out = e.b.ins().iadd(c.out, off);
    let f = c.microkernels[&Routine::Softmax(key(p))];
    e.b.ins().call(f, &[x, out, rows]);
}
