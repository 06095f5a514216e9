//! ONNX `BitCast` (opset 26): each element's bits read as another type of the same width.
//! Between types the IR holds as themselves (f32 and int32, double and int64, int8 and
//! uint8) it is the IR's `bitcast`; the integer types held widened (int16, uint16, uint32,
//! uint64) take their bits by a cast to the held type, and `narrowing` wraps the result
//! into the target's range (two's complement reinterpretation is that wrap). A bool (a byte
//! of 0 or 1) as int8 or uint8 is the cast; float16 and bfloat16 (held as f32 values, not
//! bits) and the other bool casts are refused.

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::narrow::Narrow;
use crate::proto::{held_as, onnx_type_name, Attrs};
use optc_ir::{DType, Op};
use tract_onnx::pb;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let x = ctx.required(node, 0)?;
    let to_code = a.int("to").ok_or("attribute 'to' is missing")? as i32;
    let from = ctx.ty(&x).dtype;
    let from_narrow = ctx.narrow.get(&node.input[0]).copied();
    let to_narrow = Narrow::of(to_code);
    let held = held_as(to_code)
        .ok_or_else(|| format!("bitcast to {} is not supported", onnx_type_name(to_code)))?;
    // A bool's byte is 0 or 1: as int8 or uint8 it is the cast.
    if from == DType::Bool && matches!(held, DType::U8 | DType::I8) && to_narrow.is_none() {
        let mut s = Steps::new(ctx, name);
        return Ok(vec![Some(s.last(Op::Cast { to: held }, &[x])?)]);
    }
    let floats16 = [Narrow::F16, Narrow::Bf16];
    if from == DType::Bool
        || held == DType::Bool
        || from_narrow.is_some_and(|n| floats16.contains(&n))
        || to_narrow.is_some_and(|n| floats16.contains(&n))
    {
        return Err(format!(
            "bitcast to {} of this input is not supported (bool, float16 and bfloat16 are not held as their bits)",
            onnx_type_name(to_code)
        ));
    }
    let width = |narrow: Option<Narrow>, held: DType| narrow.map_or(held.size(), |n| n.size());
    let (from_width, to_width) = (width(from_narrow, from), width(to_narrow, held));
    if from_width != to_width {
        return Err(format!(
            "bitcast to {} needs an input of {to_width} bytes per element, it has {from_width}",
            onnx_type_name(to_code)
        ));
    }
    let mut s = Steps::new(ctx, name);
    // The input's bits in an IR type of its width: a widened integer cast down to it.
    let bits = match (from_narrow, from_width) {
        (Some(Narrow::U32), 4) => s.op(Op::Cast { to: DType::I32 }, &[x])?,
        _ => x,
    };
    let bits_type = s.ctx.ty(&bits).dtype;
    // Read as the target's IR type of that width, then held as the target is.
    let same_width = match (to_narrow, to_width) {
        (Some(_), 4) => DType::I32,
        (Some(_), 8) => DType::I64,
        (Some(_), _) => bits_type,
        (None, _) => held,
    };
    let read = if same_width == bits_type {
        bits
    } else {
        s.op(Op::Bitcast { to: same_width }, &[bits])?
    };
    let out = if s.ctx.ty(&read).dtype == held {
        read
    } else {
        s.op(Op::Cast { to: held }, &[read])?
    };
    // The node's own name on its output.
    let shape = s.shape(&out);
    Ok(vec![Some(s.last(Op::Reshape { shape }, &[out])?)])
}
