//! `ai.onnx.ml` `TreeEnsemble` (v5): every tree walked from its root to a leaf for every
//! row, as gathers over tables built at import time. Nodes and leaves share one index
//! space (leaves after the nodes, each its own child both ways), so one step moves every
//! (row, tree) pair to the child its comparison picks: the node's feature (`Gather`) read
//! from the row (`GatherElements`), compared by the node's mode (`<=`, `<`, `>=`, `>`,
//! `==`, `!=`, or membership in the node's set, a row of members padded with NaN), NaN
//! going the true way where `nodes_missing_value_tracks_true` says so. After as many steps
//! as the deepest tree, the leaves' weights are added (or averaged, or their min or max
//! taken) into their targets by a `ScatterElements` in tree order, as the ONNX reference
//! accumulates them. `post_transform` must be NONE (the reference defines no other).

use super::steps::{float_tensor, i64_tensor, Steps};
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Data, Op, ReduceKind, ScatterReduction, Tensor, UnaryOp};
use tract_onnx::pb;

/// The deepest tree imported (each level is one step of gathers).
const MAX_DEPTH: usize = 512;

/// The comparison modes of `nodes_modes`.
const MODES: [&str; 7] = ["LEQ", "LT", "GTE", "GT", "EQ", "NEQ", "MEMBER"];

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let x = ctx.required(node, 0)?;
    let xt = ctx.ty(&x);
    if !matches!(xt.dtype, DType::F32 | DType::F64) || xt.rank() != 2 {
        return Err(format!("X must be f32 or f64 [N, features], it is {xt}"));
    }
    let (rows, features) = (xt.shape[0], xt.shape[1]);
    let ints = |n: &str| {
        a.ints(n)
            .ok_or_else(|| format!("attribute '{n}' is required"))
    };
    let floats = |n: &str| -> R<Vec<f64>> {
        let t = a
            .tensor(n)?
            .ok_or_else(|| format!("attribute '{n}' is required"))?;
        if t.dtype() != xt.dtype {
            return Err(format!(
                "attribute '{n}' must be of X's type {}, it is {}",
                xt.dtype,
                t.dtype()
            ));
        }
        Ok(t.to_f64_vec())
    };
    let splits = floats("nodes_splits")?;
    let n_nodes = splits.len();
    let feature_ids = ints("nodes_featureids")?;
    let modes = a
        .tensor("nodes_modes")?
        .ok_or("attribute 'nodes_modes' is required")?
        .to_i64_vec();
    let true_ids = ints("nodes_truenodeids")?;
    let false_ids = ints("nodes_falsenodeids")?;
    let true_leafs = ints("nodes_trueleafs")?;
    let false_leafs = ints("nodes_falseleafs")?;
    let missing_true = a
        .ints("nodes_missing_value_tracks_true")
        .unwrap_or_else(|| vec![0; n_nodes]);
    let leaf_targets = ints("leaf_targetids")?;
    let leaf_weights = floats("leaf_weights")?;
    let roots = ints("tree_roots")?;
    let n_targets = a
        .int("n_targets")
        .ok_or("attribute 'n_targets' is required")?;
    let n_leaves = leaf_weights.len();
    let per_node = [
        ("nodes_featureids", feature_ids.len()),
        ("nodes_modes", modes.len()),
        ("nodes_truenodeids", true_ids.len()),
        ("nodes_falsenodeids", false_ids.len()),
        ("nodes_trueleafs", true_leafs.len()),
        ("nodes_falseleafs", false_leafs.len()),
        ("nodes_missing_value_tracks_true", missing_true.len()),
    ];
    if let Some((n, len)) = per_node.iter().find(|(_, len)| *len != n_nodes) {
        return Err(format!(
            "attribute '{n}' has {len} entries for {n_nodes} nodes"
        ));
    }
    if leaf_targets.len() != n_leaves || n_targets < 1 || roots.is_empty() {
        return Err(format!(
            "{} leaf_targetids for {n_leaves} leaf_weights, n_targets {n_targets} and {} tree_roots: each leaf needs a target, n_targets and the roots must be positive",
            leaf_targets.len(),
            roots.len()
        ));
    }
    let n_targets = n_targets as usize;
    if let Some(t) = leaf_targets
        .iter()
        .find(|&&t| t < 0 || t as usize >= n_targets)
    {
        return Err(format!("leaf target {t} is outside 0..{n_targets}"));
    }
    if let Some(f) = feature_ids
        .iter()
        .find(|&&f| f < 0 || f as usize >= features)
    {
        return Err(format!("feature {f} is outside X's {features} features"));
    }
    if let Some(m) = modes
        .iter()
        .find(|&&m| !(0..MODES.len() as i64).contains(&m))
    {
        return Err(format!("node mode {m} is not one of {MODES:?}"));
    }
    match a.int_or("post_transform", 0) {
        0 => {}
        p => {
            return Err(format!(
                "post_transform {p} is not supported (only NONE, 0)"
            ))
        }
    }
    let aggregate = a.int_or("aggregate_function", 1);
    // Children in the shared index space: nodes, then leaves.
    let child = |id: i64, leaf: i64| -> R<i64> {
        let (limit, base) = if leaf != 0 {
            (n_leaves, n_nodes)
        } else {
            (n_nodes, 0)
        };
        if id < 0 || id as usize >= limit {
            return Err(format!(
                "child {id} is outside the {limit} {}",
                if leaf != 0 { "leaves" } else { "nodes" }
            ));
        }
        Ok(base as i64 + id)
    };
    let total = n_nodes + n_leaves;
    let mut true_child: Vec<i64> = (0..total as i64).collect();
    let mut false_child = true_child.clone();
    for i in 0..n_nodes {
        true_child[i] = child(true_ids[i], true_leafs[i])?;
        false_child[i] = child(false_ids[i], false_leafs[i])?;
    }
    // A tree that is a leaf: its root's leaf is the leaf of the root's own index, as the
    // reference reads it.
    let mut starts = vec![];
    for &r in &roots {
        if r < 0 || r as usize >= n_nodes.max(1) {
            return Err(format!("tree root {r} is outside the {n_nodes} nodes"));
        }
        let i = r as usize;
        let leaf =
            n_nodes > 0 && true_leafs[i] != 0 && false_leafs[i] != 0 && true_ids[i] == false_ids[i];
        starts.push(if leaf { child(r, 1)? } else { r });
    }
    // The depth of the deepest tree (a cycle is an error).
    let mut depth = 0;
    for &s in &starts {
        let mut level = vec![s];
        let mut d = 0;
        while level.iter().any(|&i| (i as usize) < n_nodes) {
            d += 1;
            if d > MAX_DEPTH {
                return Err(format!(
                    "a tree is deeper than {MAX_DEPTH} levels (or has a cycle)"
                ));
            }
            level = level
                .iter()
                .filter(|&&i| (i as usize) < n_nodes)
                .flat_map(|&i| [true_child[i as usize], false_child[i as usize]])
                .collect();
        }
        depth = depth.max(d);
    }
    // Each membership node's set, in node order, from the NaN-separated list.
    let members: Vec<Vec<f64>> = {
        let values = match a.tensor("membership_values")? {
            Some(t) => t.to_f64_vec(),
            None => vec![],
        };
        let member_nodes = modes.iter().filter(|&&m| m == 6).count();
        let separators = values.iter().filter(|v| v.is_nan()).count();
        if separators != member_nodes {
            return Err(format!(
                "membership_values holds {separators} NaN-terminated sets for {member_nodes} membership nodes"
            ));
        }
        let mut sets = values.split(|v| v.is_nan()).map(|s| s.to_vec());
        let mut out = vec![vec![]; total];
        for i in (0..n_nodes).filter(|&i| modes[i] == 6) {
            out[i] = sets
                .next()
                .ok_or("membership_values holds fewer sets than there are membership nodes")?;
        }
        out
    };
    let widest = members.iter().map(Vec::len).max().unwrap_or(0).max(1);

    let dtype = xt.dtype;
    let float = |v: Vec<f64>, shape: Vec<usize>| float_tensor(dtype, v, shape);
    let i64s = i64_tensor;
    let pad = |v: &[i64], fill: i64| -> Vec<i64> {
        let mut v = v.to_vec();
        v.resize(total, fill);
        v
    };
    let trees = starts.len();
    let mut s = Steps::new(ctx, name);
    let feature_table = s.constant(i64s(pad(&feature_ids, 0), vec![total])?);
    let mut split_values = splits.clone();
    split_values.resize(total, 0.0);
    let split_table = s.constant(float(split_values, vec![total])?);
    // (A leaf's entries take the first node's mode: any comparison leads it to itself.)
    let mode_table = s.constant(i64s(
        pad(&modes, modes.first().copied().unwrap_or(0)),
        vec![total],
    )?);
    let missing_table = s.constant(
        Tensor::new(
            vec![total],
            Data::Bool(pad(&missing_true, 0).iter().map(|&v| v != 0).collect()),
        )
        .map_err(|e| e.msg)?,
    );
    let true_table = s.constant(i64s(true_child, vec![total])?);
    let false_table = s.constant(i64s(false_child, vec![total])?);
    let member_rows: Vec<f64> = members
        .iter()
        .flat_map(|m| {
            let mut row = m.clone();
            row.resize(widest, f64::NAN);
            row
        })
        .collect();
    let member_table = s.constant(float(member_rows, vec![total, widest])?);
    // The modes in use, in code order.
    let mut used_modes: Vec<i64> = modes.clone();
    used_modes.sort_unstable();
    used_modes.dedup();
    let mode_codes: Vec<Val> = (0..MODES.len() as i64)
        .map(|m| s.constant(i64s(vec![m], vec![]).expect("a scalar")))
        .collect();
    // Every (row, tree) at its tree's root.
    let start = s.constant(i64s(starts, vec![1, trees])?);
    let mut at = s.op(
        Op::Expand {
            shape: vec![rows, trees],
        },
        &[start],
    )?;
    for _ in 0..depth {
        let feature = s.op(Op::Gather { axis: 0 }, &[feature_table.clone(), at.clone()])?;
        let value = s.op(Op::GatherElements { axis: 1 }, &[x.clone(), feature])?;
        let split = s.op(Op::Gather { axis: 0 }, &[split_table.clone(), at.clone()])?;
        // The comparison of each mode the ensemble uses, chosen per node by its mode (read
        // once per level, when there is a choice).
        let mode = match used_modes.len() {
            1 => None,
            _ => Some(s.op(Op::Gather { axis: 0 }, &[mode_table.clone(), at.clone()])?),
        };
        let mut taken: Option<Val> = None;
        for &m in used_modes.iter().rev() {
            let r = match m {
                0 => s.binary(BinaryOp::LessOrEqual, &value, &split)?,
                1 => s.binary(BinaryOp::Less, &value, &split)?,
                2 => s.binary(BinaryOp::GreaterOrEqual, &value, &split)?,
                3 => s.binary(BinaryOp::Greater, &value, &split)?,
                4 => s.binary(BinaryOp::Equal, &value, &split)?,
                5 => {
                    let equal = s.binary(BinaryOp::Equal, &value, &split)?;
                    s.unary(UnaryOp::Not, &equal)?
                }
                _ => {
                    // The value equals one of the node's (NaN-padded) members.
                    let set = s.op(Op::Gather { axis: 0 }, &[member_table.clone(), at.clone()])?;
                    let lifted = s.reshape(&value, vec![rows, trees, 1])?;
                    let hits = s.binary(BinaryOp::Equal, &set, &lifted)?;
                    let hits = s.op(Op::Cast { to: dtype }, &[hits])?;
                    let any = s.reduce(ReduceKind::Max, &hits, &[2], false)?;
                    let zero = s.constant(float(vec![0.0], vec![])?);
                    s.binary(BinaryOp::Greater, &any, &zero)?
                }
            };
            taken = Some(match taken {
                None => r,
                Some(other) => {
                    let mode = mode.as_ref().expect("read when modes differ");
                    let is = s.binary(BinaryOp::Equal, mode, &mode_codes[m as usize])?;
                    s.op(Op::Where, &[is, r, other])?
                }
            });
        }
        let mut taken = taken.expect("at least one mode");
        if missing_true.iter().any(|&t| t != 0) {
            // NaN: the value that differs from itself (f32 and f64 alike).
            let itself = s.binary(BinaryOp::Equal, &value, &value)?;
            let missing = s.unary(UnaryOp::Not, &itself)?;
            let tracks = s.op(Op::Gather { axis: 0 }, &[missing_table.clone(), at.clone()])?;
            let missing = s.binary(BinaryOp::And, &missing, &tracks)?;
            taken = s.binary(BinaryOp::Or, &taken, &missing)?;
        }
        let yes = s.op(Op::Gather { axis: 0 }, &[true_table.clone(), at.clone()])?;
        let no = s.op(Op::Gather { axis: 0 }, &[false_table.clone(), at])?;
        at = s.op(Op::Where, &[taken, yes, no])?;
    }
    // The leaves' weights into their targets, tree by tree.
    let base = s.constant(i64s(vec![n_nodes as i64], vec![])?);
    let leaf = s.binary(BinaryOp::Sub, &at, &base)?;
    let weight_table = s.constant(float(leaf_weights, vec![n_leaves])?);
    let target_table = s.constant(i64s(leaf_targets, vec![n_leaves])?);
    let mut weight = s.op(Op::Gather { axis: 0 }, &[weight_table, leaf.clone()])?;
    let target = s.op(Op::Gather { axis: 0 }, &[target_table, leaf])?;
    // The largest finite value of the type (a min starts there, a max at its negation).
    let largest = if dtype == DType::F64 {
        f64::MAX
    } else {
        f32::MAX as f64
    };
    let (initial, reduction) = match aggregate {
        0 | 1 => (0.0, ScatterReduction::Add),
        2 => (largest, ScatterReduction::Min),
        3 => (-largest, ScatterReduction::Max),
        f => return Err(format!("aggregate_function {f} is not an ONNX value (0-3)")),
    };
    if aggregate == 0 {
        let count = s.constant(float(vec![trees as f64], vec![])?);
        weight = s.binary(BinaryOp::Div, &weight, &count)?;
    }
    let initial = s.constant(float(vec![initial], vec![])?);
    let result = s.op(
        Op::Expand {
            shape: vec![rows, n_targets],
        },
        &[initial],
    )?;
    Ok(vec![Some(s.last(
        Op::ScatterElements { axis: 1, reduction },
        &[result, target, weight],
    )?)])
}
