//! Memory planning: where every value lives. Graph inputs and outputs in the caller's
//! buffers (an op's output that is a graph output is written in place), constants in their
//! data objects, everything else at an offset of one workspace block, reused by liveness
//! ([`Arena`]: a value's block is freed after its last use in the schedule), plus each
//! node's scratch for the duration of its kernel.
//!
//! Reshape aliasing: a reshape of a workspace value that nobody reads after it takes over
//! its input's block (same bytes, no copy); its kernel is neither lowered nor called.
//!
//! Slice aliasing: a slice that is a consecutive byte range of its input (every dim before
//! one is 1 in the slice, every dim after it whole), starting at a multiple of 64 bytes,
//! reads that range where it is (attention's heads and blocks of query rows cut out); its
//! input lives until the slice's last use, and the slice's kernel is neither lowered nor
//! called.
//!
//! Concats in place: a concat whose inputs are consecutive byte ranges of its output (every
//! dim before its axis is 1: heads or blocks of query rows joined, a channel concat at batch
//! 1), each computed by an op node for it alone, gets its block when the first of them is
//! computed, and each producer writes its part there; the concat's kernel is neither lowered
//! nor called.

use super::arena::Arena;
use super::constants::Constants;
use crate::error::{CodegenError, Result};
use crate::node::{bytes_of, NodeInfo};
use crate::MAX_BYTES;
use cranelift_module::DataId;
use optc_ir::{Graph, NodeId, Op, TensorType, Value as IrValue};
use std::collections::HashMap;

/// Where a value lives.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Location {
    /// Graph input `i` (the entry's `inputs[i]`).
    Input(usize),
    /// Graph output `j` (the entry's `outputs[j]`).
    Output(usize),
    Constant(DataId),
    /// A byte offset in the workspace.
    Workspace(usize),
}

/// The op nodes of `order` (inputs and constants are no kernels).
pub(super) fn schedule(graph: &Graph, order: &[NodeId]) -> Vec<NodeId> {
    order
        .iter()
        .copied()
        .filter(|&n| !matches!(graph.node(n).op, Op::Input { .. } | Op::Constant { .. }))
        .collect()
}

/// The memory plan of a schedule.
pub(super) struct MemoryPlan {
    pub locations: HashMap<IrValue, Location>,
    /// Workspace offset of each scheduled node's scratch, if it needs any.
    pub scratch: Vec<Option<usize>>,
    /// Nodes whose kernel is not called: reshapes whose output takes over their input's
    /// workspace block, slices read in place, concats whose inputs were written in place.
    pub aliased: Vec<bool>,
    /// Graph outputs the entry function copies `(output, value)`: graph inputs, constants and
    /// values that are an earlier output too.
    pub output_copies: Vec<(usize, IrValue)>,
    pub output_types: Vec<TensorType>,
    /// Bytes of workspace the plan needs.
    pub workspace: usize,
}

impl MemoryPlan {
    /// KernelPlan `schedule` (the op nodes of `order`), whose nodes are `nodes` and need
    /// `scratch_bytes` each.
    pub fn new(
        graph: &Graph,
        order: &[NodeId],
        schedule: &[NodeId],
        constants: &Constants,
        nodes: &[NodeInfo],
        scratch_bytes: &[usize],
    ) -> Result<MemoryPlan> {
        let mut locs: HashMap<IrValue, Location> = HashMap::new();
        for &n in order {
            match &graph.node(n).op {
                Op::Input { index } => {
                    locs.insert(IrValue::new(n, 0), Location::Input(*index));
                }
                Op::Constant { .. } => {
                    if let Some(d) = constants.data_of(graph, n) {
                        locs.insert(IrValue::new(n, 0), Location::Constant(d));
                    }
                }
                _ => {}
            }
        }

        // Inputs are the caller's buffers, but kernels address them with 32-bit offsets too.
        for (i, ty) in graph.input_types().iter().enumerate() {
            bytes_of(ty).map_err(|e| {
                CodegenError::new(format!("input {i} ('{}'): {}", graph.inputs[i].name, e.msg))
            })?;
        }
        // Graph outputs produced by op nodes are written in place.
        let mut output_copies: Vec<(usize, IrValue)> = vec![];
        let mut output_types = vec![];
        for (j, o) in graph.outputs.iter().enumerate() {
            let ty = graph
                .value_type(o.value)
                .map_err(|e| CodegenError::new(e.msg))?
                .clone();
            bytes_of(&ty)?;
            output_types.push(ty);
            let is_op = !matches!(
                graph.node(o.value.node).op,
                Op::Input { .. } | Op::Constant { .. }
            );
            if is_op && !locs.contains_key(&o.value) {
                locs.insert(o.value, Location::Output(j));
            } else {
                output_copies.push((j, o.value));
            }
        }

        let mut last_use: HashMap<IrValue, usize> = HashMap::new();
        for (i, &n) in schedule.iter().enumerate() {
            for v in graph.node_inputs(n) {
                last_use.insert(v, i);
            }
        }
        let concats = concats_in_place(graph, schedule, nodes, &locs)?;
        // Slices read in place (output -> input, byte offset); their inputs live as long, and
        // die at the slices' last use (`extended`) if no node reads them there.
        let pieces: Vec<IrValue> = concats
            .iter()
            .flat_map(|c| c.pieces.iter().map(|p| p.0))
            .collect();
        let slices = slices_in_place(graph, schedule, nodes, &locs, &last_use, &pieces);
        for (out, (vin, _)) in &slices {
            if let Some(&end) = last_use.get(out) {
                let e = last_use.entry(*vin).or_insert(end);
                *e = (*e).max(end);
            }
        }
        let mut extended: HashMap<usize, Vec<IrValue>> = HashMap::new();
        for (vin, _) in slices.values() {
            if let Some(&end) = last_use.get(vin) {
                extended.entry(end).or_default().push(*vin);
            }
        }
        let mut arena = Arena::default();
        let mut scratch: Vec<Option<usize>> = vec![None; schedule.len()];
        let mut aliased: Vec<bool> = vec![false; schedule.len()];
        // The concat (index into `concats`) each producer writes into.
        let mut piece_of: HashMap<NodeId, usize> = HashMap::new();
        for (k, c) in concats.iter().enumerate() {
            aliased[c.index] = true;
            for (v, _) in &c.pieces {
                piece_of.insert(v.node, k);
            }
        }
        for (i, &n) in schedule.iter().enumerate() {
            let node = graph.node(n);
            let info = &nodes[i];
            let inputs = graph.node_inputs(n);
            // The first producer of an in-place concat's pieces: the concat's block, each
            // piece at its offset in it.
            if let Some(c) = piece_of.get(&n).map(|&k| &concats[k]) {
                if !locs.contains_key(&c.out) {
                    let off = arena
                        .alloc(c.bytes)
                        .ok_or_else(|| info.err("workspace size overflows"))?;
                    locs.insert(c.out, Location::Workspace(off));
                    for &(v, at) in &c.pieces {
                        locs.insert(v, Location::Workspace(off + at));
                    }
                }
            }
            // A slice read in place.
            if let Some(&(vin, at)) = slices.get(&IrValue::new(n, 0)) {
                if let Some(&Location::Workspace(off)) = locs.get(&vin) {
                    locs.insert(IrValue::new(n, 0), Location::Workspace(off + at));
                    aliased[i] = true;
                }
            }
            // A reshape of a workspace value read by nobody after it: same bytes, same block
            // (not of a slice read in place: that block is its input's).
            if let (Op::Reshape { .. }, [vin]) = (&node.op, inputs.as_slice()) {
                let out = IrValue::new(n, 0);
                if let Some(&Location::Workspace(off)) = locs.get(vin) {
                    if last_use.get(vin) == Some(&i)
                        && !slices.contains_key(vin)
                        && !locs.contains_key(&out)
                        && last_use.contains_key(&out)
                    {
                        locs.insert(out, Location::Workspace(off));
                        aliased[i] = true;
                    }
                }
            }
            let mut fresh = vec![];
            for (p, ty) in node.outputs.iter().enumerate() {
                let v = IrValue::new(n, p);
                if locs.contains_key(&v) {
                    continue;
                }
                let b = bytes_of(ty).map_err(|e| info.err(e.msg))?;
                let off = arena
                    .alloc(b)
                    .ok_or_else(|| info.err("workspace size overflows"))?;
                locs.insert(v, Location::Workspace(off));
                fresh.push((v, off, b));
            }
            let sb = scratch_bytes[i];
            if sb > 0 {
                let off = arena
                    .alloc(sb)
                    .ok_or_else(|| info.err("workspace size overflows"))?;
                scratch[i] = Some(off);
                arena.free(off, sb);
            }
            // Free values whose last use is this node, and outputs nobody reads.
            let mut dying: Vec<IrValue> = inputs
                .iter()
                .copied()
                .chain(extended.get(&i).into_iter().flatten().copied())
                .filter(|v| last_use.get(v) == Some(&i) && !aliased[i] && !slices.contains_key(v))
                .collect();
            dying.sort();
            dying.dedup();
            for (v, off, b) in &fresh {
                if !last_use.contains_key(v) {
                    arena.free(*off, *b);
                }
            }
            for v in dying {
                if let Some(Location::Workspace(off)) = locs.get(&v) {
                    let b = bytes_of(graph.value_type(v).map_err(|e| CodegenError::new(e.msg))?)?;
                    arena.free(*off, b);
                }
            }
            if arena.top > MAX_BYTES {
                return Err(info.err(format!("workspace would exceed {MAX_BYTES} bytes (16 GiB)")));
            }
        }
        Ok(MemoryPlan {
            locations: locs,
            scratch,
            aliased,
            output_copies,
            output_types,
            workspace: arena.top,
        })
    }
}

/// A concat whose inputs its producers write in place.
struct InPlaceConcat {
    /// Its index in the schedule.
    index: usize,
    out: IrValue,
    bytes: usize,
    /// Each input and its byte offset in the output.
    pieces: Vec<(IrValue, usize)>,
}

/// The concats of `schedule` whose inputs can be written in place: each input a consecutive
/// range of the output (every output dim before the axis is 1) of a multiple of 64 bytes (so
/// each piece starts where a block of its own would be aligned and ends where the next
/// begins), read by the concat alone and once, the only output of an op node that is not a
/// reshape (whose output may take over its input's block) or another such concat; the output
/// in the workspace (not a graph output: `locs` has those).
fn concats_in_place(
    graph: &Graph,
    schedule: &[NodeId],
    nodes: &[NodeInfo],
    locs: &HashMap<IrValue, Location>,
) -> Result<Vec<InPlaceConcat>> {
    let mut uses: HashMap<IrValue, usize> = HashMap::new();
    for &n in schedule {
        for v in graph.node_inputs(n) {
            *uses.entry(v).or_default() += 1;
        }
    }
    for o in &graph.outputs {
        *uses.entry(o.value).or_default() += 1;
    }
    let mut found: Vec<InPlaceConcat> = vec![];
    for (i, &n) in schedule.iter().enumerate() {
        let Op::Concat { axis } = graph.node(n).op else {
            continue;
        };
        let out = IrValue::new(n, 0);
        let oty = &nodes[i].outs[0];
        if locs.contains_key(&out) || oty.shape[..axis.min(oty.rank())].iter().any(|&d| d != 1) {
            continue;
        }
        let mut pieces = vec![];
        let mut at = 0;
        for (v, ty) in graph.node_inputs(n).into_iter().zip(&nodes[i].ins) {
            let producer = graph.node(v.node);
            let eligible = uses.get(&v) == Some(&1)
                && !locs.contains_key(&v)
                && producer.outputs.len() == 1
                && !matches!(
                    producer.op,
                    Op::Reshape { .. } | Op::Input { .. } | Op::Constant { .. }
                )
                && !found.iter().any(|c| c.out == v);
            let b = bytes_of(ty)?;
            if !eligible || !b.is_multiple_of(64) {
                pieces.clear();
                break;
            }
            pieces.push((v, at));
            at += b;
        }
        if pieces.len() >= 2 {
            found.push(InPlaceConcat {
                index: i,
                out,
                bytes: bytes_of(oty)?,
                pieces,
            });
        }
    }
    Ok(found)
}

/// The slices of `schedule` read in place: output -> (input, byte offset). A slice qualifies
/// when its output is a consecutive range of its input (dims of 1 in the slice, then one dim
/// of step 1, then whole dims) starting at a multiple of 64 bytes, its input a workspace
/// value (computed by an op node: not a graph input, output or constant) that is not itself
/// such a slice, its output read later, not a graph output and not one of `pieces` (the
/// inputs of concats written in place).
fn slices_in_place(
    graph: &Graph,
    schedule: &[NodeId],
    nodes: &[NodeInfo],
    locs: &HashMap<IrValue, Location>,
    last_use: &HashMap<IrValue, usize>,
    pieces: &[IrValue],
) -> HashMap<IrValue, (IrValue, usize)> {
    let mut found: HashMap<IrValue, (IrValue, usize)> = HashMap::new();
    for (i, &n) in schedule.iter().enumerate() {
        let Op::Slice { dims } = &graph.node(n).op else {
            continue;
        };
        let out = IrValue::new(n, 0);
        let [vin] = graph.node_inputs(n)[..] else {
            continue;
        };
        let xty = &nodes[i].ins[0];
        let producer = &graph.node(vin.node).op;
        if locs.contains_key(&out)
            || pieces.contains(&out)
            || !last_use.contains_key(&out)
            || locs.contains_key(&vin)
            || matches!(producer, Op::Input { .. } | Op::Constant { .. })
            || found.contains_key(&vin)
            || dims.len() != xty.rank()
        {
            continue;
        }
        // The first dim the slice does not cut to one element; every later one whole.
        let lead = dims.iter().position(|d| d.len != 1).unwrap_or(dims.len());
        let whole =
            |(d, n): (&optc_ir::SliceDim, &usize)| d.start == 0 && d.step == 1 && d.len == *n;
        let contiguous = dims.get(lead).is_none_or(|d| d.step == 1)
            && dims.iter().zip(&xty.shape).skip(lead + 1).all(whole);
        if !contiguous {
            continue;
        }
        let mut stride = 1usize;
        let mut first = 0usize;
        for (d, &extent) in dims.iter().zip(&xty.shape).rev() {
            first += d.start.max(0) as usize * stride;
            stride *= extent;
        }
        let at = first * xty.dtype.size();
        if at.is_multiple_of(64) {
            found.insert(out, (vin, at));
        }
    }
    found
}
