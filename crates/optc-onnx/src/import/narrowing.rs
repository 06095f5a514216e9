//! Values of narrow ONNX types (`float16`, `bfloat16`, `int16`, `uint16`, `uint32`; see
//! `crate::narrow`): which values have one, and the narrowing op after each node that
//! computes a new value of such a type. Ops that only move or select values (reshapes,
//! slices, gathers, concatenations, max/min, where, ...) keep the type without one.

use super::{Ctx, Val, R};
use crate::narrow::Narrow;
use crate::proto::Attrs;
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

/// Refuse what optc cannot compute as the narrow type does: an `Attention` on bfloat16
/// inputs. optc computes the composition in f32 and rounds once; the ONNX reference rounds
/// every step to bfloat16, and the two differ by a bfloat16 unit (0.4%) in many outputs.
pub(super) fn check_inputs(ctx: &Ctx, node: &pb::NodeProto) -> R<()> {
    let bf16 = node
        .input
        .iter()
        .any(|n| ctx.narrow.get(n) == Some(&Narrow::Bf16));
    if bf16 && node.op_type == "Attention" {
        return Err(
            "Attention on bfloat16 inputs is not supported (optc would compute it in \
                    f32 and round once, which differs from bfloat16 arithmetic by a unit in \
                    the last place)"
                .into(),
        );
    }
    Ok(())
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
        let v = if apply {
            let name = ctx.unique(&format!("{label}/narrow{k}"));
            ctx.emit1(&name, narrow.op(), &[v], false)?
        } else {
            v
        };
        if let Some(o) = node.output.get(k).filter(|o| !o.is_empty()) {
            ctx.narrow.insert(o.clone(), narrow);
        }
        *slot = Some(v);
    }
    Ok(outs)
}
