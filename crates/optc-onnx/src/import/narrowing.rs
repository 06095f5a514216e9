//! Values of narrow ONNX types (`float16`, `bfloat16`, `int16`, `uint16`, `uint32`; see
//! `crate::narrow`): which values have one, and the narrowing op after each node that
//! computes a new value of such a type. Ops that only move or select values (reshapes,
//! slices, gathers, concatenations, max/min, where, ...) keep the type without one.

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::narrow::Narrow;
use crate::proto::Attrs;
use optc_ir::DType;
use tract_onnx::pb;

/// Ops whose outputs are some of their inputs' values, moved or selected: exact in the
/// narrow type as they are.
const MOVES: &[&str] = &[
    "Concat",
    "CenterCropPad",
    "DepthToSpace",
    "Dropout",
    "Expand",
    "Flatten",
    "Gather",
    "GatherElements",
    "GatherND",
    "Identity",
    "If",
    "Max",
    "MaxPool",
    "Min",
    "Pad",
    "ReduceMax",
    "ReduceMin",
    "Relu",
    "Reshape",
    "ScatterElements",
    "ScatterND",
    "Slice",
    "SpaceToDepth",
    "Split",
    "Squeeze",
    "Tile",
    "Transpose",
    "Trilu",
    "Unsqueeze",
    "Where",
];

/// Ops whose outputs are indices or shapes, never of their inputs' type.
const INDICES: &[&str] = &["ArgMax", "ArgMin", "NonZero", "Shape", "Size"];

/// Refuse what optc cannot compute as the narrow type does: `Attention` and `Einsum` on
/// bfloat16 inputs. optc computes the composition in f32 and rounds once; the ONNX reference rounds
/// every step to bfloat16, and the two differ by a bfloat16 unit (0.4%) in many outputs.
pub(super) fn check_inputs(ctx: &Ctx, node: &pb::NodeProto) -> R<()> {
    let bf16 = node
        .input
        .iter()
        .any(|n| ctx.narrow.get(n) == Some(&Narrow::Bf16));
    let op = node.op_type.as_str();
    let u64_input = node
        .input
        .iter()
        .any(|n| ctx.narrow.get(n) == Some(&Narrow::U64));
    if u64_input {
        let a = Attrs { node };
        let refused = if !UINT64_OPS.contains(&op) && !MOVES.contains(&op) {
            true
        } else if op == "BitShift" {
            a.string("direction").as_deref() != Some("LEFT")
        } else if op == "Cast" {
            // to another integer type: the low bits, as C converts
            !a.int("to")
                .and_then(|t| crate::proto::held_as(t as i32))
                .is_some_and(|d| matches!(d, DType::I64 | DType::I32 | DType::I8 | DType::U8))
        } else {
            false
        };
        if refused {
            return Err(format!(
                "{op} on uint64 is not supported (optc holds uint64 values as int64 bits; \
                 this op would read them as signed)"
            ));
        }
    }
    if bf16 && ["Attention", "Einsum"].contains(&node.op_type.as_str()) {
        return Err(format!(
            "{} on bfloat16 inputs is not supported (optc would compute it in f32 and round \
             once, which differs from bfloat16 arithmetic by a unit in the last place)",
            node.op_type
        ));
    }
    Ok(())
}

/// Ops whose result on uint64 values held as int64 bits is right as it is (wrapping
/// arithmetic, bits, moves) or through the sign-bit flip of [`unsigned_order_in`].
const UINT64_OPS: &[&str] = &[
    "Add",
    "ArgMax",
    "BitCast",
    "BitShift",
    "BitwiseAnd",
    "BitwiseNot",
    "BitwiseOr",
    "BitwiseXor",
    "Cast",
    "CastLike",
    "Constant",
    "ConstantOfShape",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Mul",
    "ReduceMax",
    "Shape",
    "Size",
    "Sub",
    "Sum",
];

/// Ops that order their inputs: on uint64 they see the values with the sign bit flipped
/// (an order-preserving map onto int64).
const ORDERING: &[&str] = &[
    "ArgMax",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Max",
    "Min",
    "ReduceMax",
];

/// For an ordering op on uint64 inputs: rebind those inputs to their sign-flipped values;
/// returns the bindings to restore after the node is converted.
pub(super) fn unsigned_order_in(
    ctx: &mut Ctx,
    node: &pb::NodeProto,
    label: &str,
) -> R<Vec<(String, Val)>> {
    let mut saved = vec![];
    if !ORDERING.contains(&node.op_type.as_str()) {
        return Ok(saved);
    }
    for (k, name) in node.input.iter().enumerate() {
        if name.is_empty() || ctx.narrow.get(name) != Some(&Narrow::U64) {
            continue;
        }
        let Some(v) = ctx.env.get(name).cloned() else {
            continue;
        };
        let flipped = sign_flip(ctx, &format!("{label}/unsigned{k}"), v.clone())?;
        ctx.env.insert(name.clone(), flipped);
        saved.push((name.clone(), v));
    }
    Ok(saved)
}

/// Undo [`unsigned_order_in`]: restore the inputs and flip value outputs back.
pub(super) fn unsigned_order_out(
    ctx: &mut Ctx,
    node: &pb::NodeProto,
    label: &str,
    saved: Vec<(String, Val)>,
    mut outs: Vec<Option<Val>>,
) -> R<Vec<Option<Val>>> {
    if saved.is_empty() {
        return Ok(outs);
    }
    for (name, v) in saved {
        ctx.env.insert(name, v);
    }
    if ["Max", "Min", "ReduceMax"].contains(&node.op_type.as_str()) {
        if let Some(Some(v)) = outs.first().cloned() {
            outs[0] = Some(sign_flip(ctx, &format!("{label}/unsigned"), v)?);
        }
    }
    Ok(outs)
}

fn sign_flip(ctx: &mut Ctx, name: &str, v: Val) -> R<Val> {
    use optc_ir::{BinaryOp, Op, Tensor};
    let n = ctx.unique(&format!("{name}/sign_bit"));
    let bit = Val::Const {
        t: std::sync::Arc::new(Tensor::scalar_i64(i64::MIN)),
        name: n,
    };
    let n = ctx.unique(name);
    ctx.emit1(&n, Op::Binary(BinaryOp::BitXor), &[v, bit], false)
}

/// `Softmax` of a narrow float along `axis` as the ONNX reference computes it in that type:
/// every step (`x - max`, `exp`, the sum) rounded to it, the division rounded by the node's
/// own narrowing. A fused f32 softmax rounded once differs in the last place.
pub(super) fn softmax(ctx: &mut Ctx, name: &str, x: Val, axis: usize, narrow: Narrow) -> R<Val> {
    use optc_ir::{BinaryOp, Op, ReduceKind, UnaryOp};
    if narrow == Narrow::Bf16 {
        // The reference sums in bfloat16 (each partial sum rounded): a sum in f32 differs
        // by a unit in the last place in many outputs.
        return Err(
            "Softmax on bfloat16 is not supported (optc sums in f32, which differs \
                    from bfloat16 summation in the last place)"
                .into(),
        );
    }
    let mut s = Steps::new(ctx, name);
    let m = s.reduce(ReduceKind::Max, &x, &[axis], true)?;
    let d = s.binary(BinaryOp::Sub, &x, &m)?;
    let round = narrow.op().ok_or("not a float type")?;
    let d = s.op(round.clone(), &[d])?;
    let e = s.unary(UnaryOp::Exp, &d)?;
    let e = s.op(round.clone(), &[e])?;
    let sum = s.reduce(ReduceKind::Sum, &e, &[axis], true)?;
    let sum = s.op(round, &[sum])?;
    s.last(Op::Binary(BinaryOp::Div), &[e, sum])
}

/// The narrow type of the tensor proto a node's attribute holds, if any.
fn attribute_type(node: &pb::NodeProto, name: &str) -> Option<Narrow> {
    let a = Attrs { node };
    let t = a.get(name)?.t.as_ref()?;
    Narrow::of(t.data_type)
}

/// Tag `node`'s outputs with their narrow types and narrow the new values. `outs` are
/// the converted outputs, in ONNX order.
pub(super) fn narrow_outputs(
    ctx: &mut Ctx,
    node: &pb::NodeProto,
    label: &str,
    mut outs: Vec<Option<Val>>,
) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let op = node.op_type.as_str();
    let input_type = node
        .input
        .iter()
        .filter(|n| !n.is_empty())
        .find_map(|n| ctx.narrow.get(n).copied());
    // (type, whether its values need the narrowing op) per output.
    let decided: Option<(Narrow, bool)> = match op {
        "Cast" => a
            .int("to")
            .and_then(|to| Narrow::of(to as i32))
            .map(|n| (n, true)),
        "BitCast" => a
            .int("to")
            .and_then(|to| Narrow::of(to as i32))
            .map(|n| (n, true)),
        "CastLike" => node
            .input
            .get(1)
            .and_then(|n| ctx.narrow.get(n).copied())
            .map(|n| (n, true)),
        "Constant" => attribute_type(node, "value").map(|n| (n, false)),
        "ConstantOfShape" => attribute_type(node, "value").map(|n| (n, false)),
        "EyeLike" => a
            .int("dtype")
            .and_then(|d| Narrow::of(d as i32))
            .map(|n| (n, false)),
        _ if INDICES.contains(&op) => None,
        // A scatter that adds or multiplies computes new values; the others only move.
        "ScatterElements" | "ScatterND"
            if matches!(a.string("reduction").as_deref(), Some("add" | "mul")) =>
        {
            input_type.map(|n| (n, true))
        }
        _ => input_type.map(|n| (n, !MOVES.contains(&op))),
    };
    let Some((narrow, apply)) = decided else {
        return Ok(outs);
    };
    for (k, slot) in outs.iter_mut().enumerate() {
        let Some(v) = slot.clone() else { continue };
        if ctx.ty(&v).dtype != narrow.wide() || (op == "TopK" && k == 1) {
            continue;
        }
        let v = match narrow.op().filter(|_| apply) {
            Some(op) => {
                let name = ctx.unique(&format!("{label}/narrow{k}"));
                ctx.emit1(&name, op, &[v], false)?
            }
            None => v,
        };
        if let Some(o) = node.output.get(k).filter(|o| !o.is_empty()) {
            ctx.narrow.insert(o.clone(), narrow);
        }
        *slot = Some(v);
    }
    Ok(outs)
}
