//! An LSTM step's gates (`Op::LstmCell`) on the AVX-512 routine of [`super::asm::lstm`]: every
//! row (batch entry) in one call.

use super::asm::lstm::LstmCellKey;
use super::asm::{Isa, Routine};
use super::kernel_plan::{rows_plan, KernelPlan, Strategy};
use super::tasks::KernelArgs;
use crate::builder::Emitter;
use crate::node::NodeInfo;
use crate::target::Target;
use cranelift_codegen::ir::{InstBuilder, Value};
use optc_ir::DType;

/// The plan of an f32 LSTM cell on AVX-512 (else the generic lowering).
pub(super) fn plan(info: &NodeInfo, target: &Target) -> Option<KernelPlan> {
    let (rows, hidden) = (info.outs[0].shape[0], info.outs[0].shape[1]);
    let ok = target.microkernel_isa() == Isa::Avx512
        && info.ins[0].dtype == DType::F32
        && rows > 0
        && hidden > 0;
    ok.then(|| {
        rows_plan(
            Strategy::LstmCell {
                cell: info.ins.len() == 2,
            },
            Isa::Avx512,
            (rows, hidden, 0),
            rows,
            false,
            target,
        )
    })
}

/// The routine's key.
pub(super) fn key(p: &KernelPlan, cell: bool) -> LstmCellKey {
    LstmCellKey { hidden: p.n, cell }
}

/// All rows, one call.
pub(super) fn emit_task(e: &mut Emitter, p: &KernelPlan, cell: bool, c: &KernelArgs, _t: Value) {
    let f = c.microkernels[&Routine::LstmCell(key(p, cell))];
    let gates = c.ins[0];
    // Without a cell state the routine reads none: any pointer does.
    let cell_state = c.ins.get(1).copied().unwrap_or(gates);
    let rows = e.int_const(p.m as i64);
    e.b.ins()
        .call(f, &[gates, cell_state, c.outs[0], c.outs[1], rows]);
}
