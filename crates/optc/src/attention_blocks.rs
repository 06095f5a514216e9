//! Attention split into blocks of queries: `MatMul(Q, K^T) -> Softmax -> MatMul(P, V)` whose
//! score tensor is large (whisper's encoder: six heads of 1500 x 1500 floats, 54 MB) becomes
//! the same three nodes per block of query rows, then a `Concat` of the blocks' outputs.
//! Every query row's scores, probabilities and output depend on that row alone, and each
//! block computes them with the same ops in the same order: the results are the same bits.
//! What changes is memory: a block's scores (a few MB) are written, normalized and read back
//! while in cache, where the whole tensor went to DRAM and back (the scores' MatMul ran at
//! 35% of the FMA peak for six heads, 65% for one).
//!
//! With one batch axis of several heads whose scores each exceed a block, the blocks are cut
//! per head: each head's queries, keys and values sliced out, its blocks one after another,
//! the heads' outputs joined along that axis. A head's keys and values (whisper: 384 KB
//! each) then stay in L2 through its blocks, where blocks of every head read all heads' keys
//! and values (2.3 MB each) from L3 once per block.
//!
//! A graph pass after extraction (the cost model prices operations, not cache sizes).

use crate::error::Result;
use optc_ir::{Graph, Op, SliceDim, TensorType, Value};

/// Score tensors above this many bytes are split.
pub const SPLIT_ABOVE_BYTES: usize = 16 << 20;
/// Bytes of one block's scores (about; whole blocks of 16 query rows) when the threads that
/// run the model are not known at compile time.
pub const BLOCK_BYTES: usize = 4 << 20;

/// Bytes of one block's scores for `threads` threads with `l2` bytes of L2 cache each: twice
/// L2 per thread ([`BLOCK_BYTES`] when either is unknown, 0). The tasks of a block's nodes
/// split it between the threads, so each thread's share of the scores is about twice its L2.
/// Measured on whisper's encoder (six heads of 1500 x 1500 scores): on a Zen 4 core (1 MiB
/// L2) at 1 thread, 2 MiB blocks ran the attention 0.85x the time of 4 MiB blocks (the
/// scores' MatMul 102 -> 84 ms, softmax 24 -> 18, the output MatMul 80 -> 76) and 1 MiB
/// blocks no faster than 4; at 2 threads 4 and 8 MiB blocks the same, 2 MiB slower. On a Xeon
/// with 2 MiB L2 per core, 4 MiB blocks at 1 thread.
pub fn block_bytes(l2: usize, threads: usize) -> usize {
    if l2 == 0 || threads == 0 {
        BLOCK_BYTES
    } else {
        2 * l2 * threads
    }
}

/// Whether every input of `op` past its base inputs (a fused step's operand) broadcasts along
/// `axis` of an output of `out` (size 1 there, or of lower rank), so a block of that axis
/// can read it whole.
fn extras_broadcast(op: &Op, ins: &[TensorType], out: &TensorType, axis: usize) -> bool {
    let Op::Fused { base_inputs, .. } = op else {
        return true;
    };
    ins[*base_inputs..].iter().all(|t| {
        let pad = out.rank().saturating_sub(t.rank());
        axis < pad || t.shape[axis - pad] == 1
    })
}

/// One attention found in the graph.
struct Attention {
    /// The scores' MatMul, the softmax, the output MatMul.
    nodes: [optc_ir::NodeId; 3],
    /// Query rows and rows per block.
    rows: usize,
    block: usize,
    /// The heads' axis when the blocks are cut per head.
    head_axis: Option<usize>,
}

/// The axis of the heads, if the blocks of this attention are cut per head: the scores have
/// one batch axis of more than one index (the others of one), the queries, keys and values
/// the scores' rank and that axis, every fused operand broadcasts along it (the three
/// nodes' input and output types `ins`, `outs`), and one head's scores exceed a block.
fn head_axis(
    ops: [&Op; 3],
    ins: [&[TensorType]; 3],
    outs: [&TensorType; 3],
    block_bytes: usize,
) -> Option<usize> {
    let st = outs[0];
    let r = st.rank();
    let axes: Vec<usize> = (0..r - 2).filter(|&d| st.shape[d] > 1).collect();
    let [axis] = axes[..] else {
        return None;
    };
    let n = st.shape[axis];
    let operands = [&ins[0][0], &ins[0][1], &ins[2][1]];
    if operands.iter().any(|t| t.rank() != r || t.shape[axis] != n) {
        return None;
    }
    if !(0..3).all(|i| extras_broadcast(ops[i], ins[i], outs[i], axis)) {
        return None;
    }
    (st.numel() / n * 4 > block_bytes).then_some(axis)
}

fn find(g: &Graph, above: usize, block_bytes: usize) -> Result<Vec<Attention>> {
    let mut found = vec![];
    let only_user = |n: optc_ir::NodeId| -> Option<(optc_ir::NodeId, usize)> {
        let users = g.node_users(n);
        let is_output = g.outputs.iter().any(|o| o.value.node == n);
        match users.as_slice() {
            [(u, 0, port)] if !is_output => Some((*u, *port)),
            _ => None,
        }
    };
    for s in g.g.node_indices() {
        let Op::Softmax { axis } = g.node(s).op.base() else {
            continue;
        };
        let s_ins = g.node_inputs(s);
        let Some(&scores) = s_ins.first() else {
            continue;
        };
        let a = scores.node;
        let st = g.value_type(scores)?.clone();
        if st.rank() < 2 || *axis + 1 != st.rank() || g.node(a).outputs.len() != 1 {
            continue;
        }
        if *g.node(a).op.base() != Op::MatMul || only_user(a) != Some((s, 0)) {
            continue;
        }
        let Some((b, 0)) = only_user(s) else {
            continue;
        };
        if *g.node(b).op.base() != Op::MatMul {
            continue;
        }
        let a_ins = g.node_inputs(a);
        let b_ins = g.node_inputs(b);
        let types = |ins: &[Value]| -> Result<Vec<TensorType>> {
            ins.iter().map(|&v| Ok(g.value_type(v)?.clone())).collect()
        };
        let (at, bt) = (types(&a_ins)?, types(&b_ins)?);
        let out_b = g.node(b).outputs[0].clone();
        let q = &at[0];
        // Q [.., L, d] and the output [.., L, dv] of the same rank as the scores: the query
        // axis is the second last of all three.
        if q.rank() != st.rank() || out_b.rank() != st.rank() || q.shape[q.rank() - 2] < 2 {
            continue;
        }
        let st_ins = types(&s_ins)?;
        let ops = [a, s, b].map(|n| &g.node(n).op);
        let (ins, outs) = ([&at[..], &st_ins[..], &bt[..]], [&st, &st, &out_b]);
        let query_axis = st.rank() - 2;
        if !(0..3).all(|i| extras_broadcast(ops[i], ins[i], outs[i], query_axis)) {
            continue;
        }
        let bytes = st.numel() * 4;
        if bytes <= above {
            continue;
        }
        let rows = st.shape[query_axis];
        let head_axis = head_axis(ops, ins, outs, block_bytes);
        // Bytes of one query row's scores in a block: of every head, or of one.
        let row_bytes = bytes / rows / head_axis.map_or(1, |h| st.shape[h]);
        let block = (block_bytes / row_bytes / 16 * 16).max(16);
        if block >= rows && head_axis.is_none() {
            continue;
        }
        found.push(Attention {
            nodes: [a, s, b],
            rows,
            block,
            head_axis,
        });
    }
    Ok(found)
}

/// Split every attention of `g` whose scores take more than [`SPLIT_ABOVE_BYTES`] into
/// blocks of about `block_bytes` of scores ([`block_bytes`]); returns how many were split.
pub fn split(g: &mut Graph, block_bytes: usize) -> Result<usize> {
    split_with(g, SPLIT_ABOVE_BYTES, block_bytes)
}

/// [`split`] with other sizes: scores above `above` bytes, blocks of about `block_bytes`.
pub fn split_with(g: &mut Graph, above: usize, block_bytes: usize) -> Result<usize> {
    let found = find(g, above, block_bytes)?;
    let mut taken: std::collections::HashSet<String> =
        g.g.node_indices().map(|n| g.node(n).name.clone()).collect();
    // A name no node has yet: `want`, else `want` with a number.
    let mut fresh = |want: String| -> String {
        let name = (1..)
            .map(|k| {
                if k == 1 {
                    want.clone()
                } else {
                    format!("{want}_{k}")
                }
            })
            .find(|n| !taken.contains(n))
            .unwrap_or(want);
        taken.insert(name.clone());
        name
    };
    for att in &found {
        let [a, s, b] = att.nodes;
        let ins_of = [a, s, b].map(|n| g.node_inputs(n));
        let names = [a, s, b].map(|n| g.node(n).name.clone());
        let ops = [a, s, b].map(|n| g.node(n).op.clone());
        let nodes = Nodes {
            names: &names,
            ops: &ops,
        };
        let joined = match att.head_axis {
            None => blocks(g, &mut fresh, att, nodes, ins_of)?,
            Some(axis) => {
                // Per head: its queries (the scores MatMul's first input), keys (its second)
                // and values (the output MatMul's second), then its blocks.
                let heads = g.value_type(ins_of[0][0])?.shape[axis];
                let mut outs = vec![];
                for h in 0..heads {
                    let mut ins = ins_of.clone();
                    for (node, port, what) in [(0, 0, "queries"), (0, 1, "keys"), (2, 1, "values")]
                    {
                        let v = ins_of[node][port];
                        let dims = SliceDim::along(&g.value_type(v)?.shape, axis, h as i64, 1, 1);
                        let name = fresh(format!("{}/{what}/head{h}", names[node]));
                        ins[node][port] = g.add(&name, Op::Slice { dims }, &[v])?;
                    }
                    outs.push(blocks(g, &mut fresh, att, nodes, ins)?);
                }
                let name = fresh(format!("{}/heads", names[2]));
                g.add(&name, Op::Concat { axis }, &outs)?
            }
        };
        g.replace_uses(optc_ir::Value::new(b, 0), joined);
    }
    if !found.is_empty() {
        g.remove_dead();
        g.verify()?;
    }
    Ok(found.len())
}

/// The names and ops of an attention's three nodes.
#[derive(Clone, Copy)]
struct Nodes<'a> {
    names: &'a [String; 3],
    ops: &'a [Op; 3],
}

/// The three nodes again per block of query rows of the queries `ins[0][0]` (the other
/// inputs `ins` as given), each block's output MatMul joined along the query axis (a single
/// block alone); returns the joined value.
fn blocks(
    g: &mut Graph,
    fresh: &mut impl FnMut(String) -> String,
    att: &Attention,
    nodes: Nodes,
    ins: [Vec<Value>; 3],
) -> Result<Value> {
    let q = ins[0][0];
    let qt = g.value_type(q)?.clone();
    let axis = qt.rank() - 2;
    let mut outs = vec![];
    for (i, r0) in (0..att.rows).step_by(att.block).enumerate() {
        let len = att.block.min(att.rows - r0);
        let dims = SliceDim::along(&qt.shape, axis, r0 as i64, 1, len);
        let mut x = g.add(
            &fresh(format!("{}/queries{i}", nodes.names[0])),
            Op::Slice { dims },
            &[q],
        )?;
        // The three nodes again on the block: each reads the one before in place of its
        // first input.
        for ((ins, name), op) in ins.iter().zip(nodes.names).zip(nodes.ops) {
            let mut ins = ins.clone();
            ins[0] = x;
            x = g.add(&fresh(format!("{name}/block{i}")), op.clone(), &ins)?;
        }
        outs.push(x);
    }
    if let [one] = outs[..] {
        return Ok(one);
    }
    let name = fresh(format!("{}/blocks", nodes.names[2]));
    Ok(g.add(&name, Op::Concat { axis }, &outs)?)
}
