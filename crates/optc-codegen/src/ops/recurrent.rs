//! The gates of one recurrent step: `LstmCell` in one pass over the hidden units (f32x4
//! chunks, then single floats), each gate's activation and the state updates in registers
//! instead of a dozen nodes and their tensors.

use crate::builder::{Emitter, F32X4};
use crate::error::Result;
use crate::node::NodeInfo;
use cranelift_codegen::ir::{types, InstBuilder, Type, Value};

/// `LstmCell`: inputs gates [N, 4H] (i, o, f, g) and, when given, the cell state [N, H];
/// outputs h and c [N, H].
pub(super) fn lower_lstm_cell(
    e: &mut Emitter,
    info: &NodeInfo,
    ins: &[Value],
    outs: &[Value],
) -> Result<()> {
    let (rows, hidden) = (info.outs[0].shape[0], info.outs[0].shape[1]);
    let gate_bytes = (hidden * 4) as i64;
    // The four gates' pointers, one gate block apart.
    let gates: Vec<Value> = (0..4)
        .map(|k| e.b.ins().iadd_imm_s(ins[0], k * gate_bytes))
        .collect();
    let c_old = ins.get(1).copied();
    let (h_out, c_out) = (outs[0], outs[1]);
    let step = |e: &mut Emitter, ty: Type, o: &[Value]| {
        let (g_off, s_off) = (o[0], o[1]);
        let gate = |e: &mut Emitter, k: usize| e.load(ty, gates[k], g_off);
        let (i, og, f, g) = (gate(e, 0), gate(e, 1), gate(e, 2), gate(e, 3));
        let i = e.sigmoid(ty, i);
        let og = e.sigmoid(ty, og);
        let g = e.tanh(ty, g);
        let new = e.b.ins().fmul(i, g);
        let c = match c_old {
            Some(p) => {
                let f = e.sigmoid(ty, f);
                let c = e.load(ty, p, s_off);
                let old = e.b.ins().fmul(f, c);
                e.b.ins().fadd(old, new)
            }
            None => new,
        };
        let t = e.tanh(ty, c);
        let h = e.b.ins().fmul(og, t);
        e.store(h, h_out, s_off);
        e.store(c, c_out, s_off);
    };
    e.loop_count(rows as i64, &mut |e, row| {
        let g_off = e.b.ins().imul_imm_s(row, 4 * gate_bytes);
        let s_off = e.b.ins().imul_imm_s(row, gate_bytes);
        e.vector_loop(
            hidden,
            &[g_off, s_off],
            &[true, true],
            &mut |e, o| step(e, F32X4, o),
            &mut |e, o| step(e, types::F32, o),
        );
    });
    Ok(())
}
