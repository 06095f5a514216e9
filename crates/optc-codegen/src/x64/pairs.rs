//! An expansion 1x1 conv and the depthwise conv that alone reads it, as one node
//! ([`Op::Pair`]): MobileNet's and EfficientNet's inverted residual blocks expand a few
//! channels into many (16 -> 96 on 112x112: 4.8 MB) that only the depthwise conv reads. Two
//! nodes write that tensor to memory and read it back; the pair computes a group of expanded
//! channels at a time into a task buffer that stays in L2, and runs the depthwise conv on it
//! at once.
//!
//! - [`pair_expand_depthwise`]: the graph pass (codegen's, after extraction, like
//!   `swap_small_map_convs`): each pair whose plan exists ([`plan`]) becomes one node.
//! - The plan is the expansion's implicit GEMM with one column unit per image (all pixels)
//!   and row parts of [`group_rows`] channels, its patches (the input itself, packed into
//!   panels) packed once before the tasks in parallel column parts ([`emit_pack_part`]), and
//!   the depthwise conv's plan in [`DepthwiseAfter`].
//! - A unit ([`emit_unit`]): the GEMM tiles of its channels over every column panel store
//!   into the task's buffer `[channels][pixels]`, then the assembled depthwise kernel reads
//!   that buffer as its input planes and writes the pair's output channels.
//!
//! The same sums as the two nodes, tile by tile; a pixel's tile can be a wide one (two panels)
//! in the pair where the node alone had a narrow one, whose even and odd K steps are summed
//! apart: such outputs round differently (both against the interpreter within the usual
//! tolerance).

use super::asm::{MR, NR};
use super::depthwise;
use super::gemm::{self, Unit};
use super::kernel_plan::{balanced_rows, kernel_plan, ALayout, KernelPlan, Strategy, MAX_TASKS};
use super::packing::pack_b_rt;
use super::tasks::KernelArgs;
use crate::builder::{if_else, Emitter};
use crate::error::{CodegenError, Result};
use crate::node::{pair_infos, NodeInfo};
use crate::ops::conv::{conv_is_gemm, ConvGeometry};
use crate::target::Target;
use cranelift_codegen::ir::{condcodes::IntCC, InstBuilder, Value};
use optc_ir::{Graph, NodeId, Op};

/// Expanded tensors (one image) below twice L2 stay two nodes (4 MiB when L2 is unknown).
/// Measured on this Xeon (2 MiB L2), against the two nodes: MobileNetV2's 16 -> 96 on
/// 112x112 (4.8 MB) 0.75 -> 0.53 ms, the model 0.96 at 1 and 2 threads; MNASNet's 16 -> 48
/// (2.4 MB) level, and the 1.8 MB and smaller ones level or up to 2% slower at two threads
/// (the tensor stays in L2 or L3 between the nodes anyway; fewer, larger units). EfficientNet's
/// 16 -> 96 with SiLU level: its expansion is bound by the activation, not memory.
fn min_expanded_bytes(l2: usize) -> usize {
    if l2 == 0 {
        4 << 20
    } else {
        2 * l2
    }
}

/// The depthwise conv of a pair: its plan (on the pair's tensor between the two ops), its
/// geometry, and the pair's input port of its weights (its own input 1; its bias follows).
pub(crate) struct DepthwiseAfter {
    pub plan: KernelPlan,
    pub g: ConvGeometry,
    pub port: usize,
}

/// Channels per row part: a task buffer of `[channels][pixels]` within a third of L2 (beside
/// the packed input), a multiple of `MR`, the parts even for two threads.
fn group_rows(m: usize, pixels: usize, l2: usize) -> usize {
    let budget = (l2.max(1 << 20)) / 3;
    let most = (budget / (pixels * 4)) / MR * MR;
    let most = most.max(MR);
    balanced_rows(m, m.div_ceil(most), MR, most)
}

/// The plan of a pair node, `None` unless the expansion is an implicit GEMM of one K block
/// on compile-time packed weights whose tiles apply all its steps, and the depthwise conv
/// runs on the assembled kernel with all its steps (no residual).
pub(super) fn plan(info: &NodeInfo, target: &Target) -> Result<Option<KernelPlan>> {
    let Some((a, b)) = pair_infos(info) else {
        return Ok(None);
    };
    let (Some(mut p), Some(q)) = (kernel_plan(&a, target)?, kernel_plan(&b, target)?) else {
        return Ok(None);
    };
    let steps = |op: &Op| match op {
        Op::Fused { steps, .. } => steps.len(),
        _ => 0,
    };
    let (Strategy::ImplicitGemm(g1), Strategy::Depthwise(g2)) = (&p.kind, &q.kind) else {
        return Ok(None);
    };
    if !conv_is_gemm(g1)
        || p.fold != 0
        || p.res_port.is_some()
        || p.rest != steps(a.op)
        || p.gemm_c_post.is_some()
        || p.a_layout != ALayout::PackedAtCompileTime
        || p.k > p.kc
        || q.res_port.is_some()
        || q.rest != steps(b.op)
        || depthwise::routines(&q, g2).is_empty()
        || p.n * 4 * p.m < min_expanded_bytes(target.caches().l2)
    {
        return Ok(None);
    }
    let g2 = g2.clone();
    p.chunk = p.n;
    p.mrows = group_rows(p.m, p.n, target.caches().l2);
    if [p.mrows, p.last_part_rows()]
        .iter()
        .any(|&r| p.direct_conv_key(g1, p.n, r).is_some())
    {
        return Ok(None);
    }
    p.tasks = p.units().min(MAX_TASKS);
    p.depthwise_after = Some(Box::new(DepthwiseAfter {
        plan: q,
        g: g2,
        port: a.ins.len(),
    }));
    Ok(Some(p))
}

impl KernelPlan {
    /// Bytes of a pair's task buffer: a row part's expanded channels.
    pub(super) fn pair_bytes(&self) -> usize {
        match &self.depthwise_after {
            Some(_) => (self.mrows * self.n * 4).div_ceil(64) * 64,
            None => 0,
        }
    }
    /// Parallel parts of a pair's packing: per image, runs of whole panels.
    pub(super) fn pair_pack_parts(&self) -> usize {
        self.nimg * pack_runs(self.n)
    }
}

/// Runs of panels the packing of one image is split into: about 64 KB each, at most 4.
fn pack_runs(n: usize) -> usize {
    (n / 4096).clamp(1, 4).min(n.div_ceil(NR))
}

/// Part `t` of a pair's packing (before the tasks): run `t % runs` of the panels of image
/// `t / runs`, into the shared patches (`[panel][k][16]` per image).
pub(super) fn emit_pack_part(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, t: Value) {
    let panels = p.n.div_ceil(NR);
    let runs = pack_runs(p.n);
    let per = panels.div_ceil(runs);
    let img = e.b.ins().udiv_imm_u(t, runs as i64);
    let run = e.b.ins().urem_imm_u(t, runs as i64);
    let io = e.b.ins().imul_imm_s(img, (p.k * p.n * 4) as i64);
    let x = e.b.ins().iadd(c.ins[0], io);
    let po = e.b.ins().imul_imm_s(img, (panels * p.k * NR * 4) as i64);
    let po = e.b.ins().iadd_imm_s(po, p.patches_off() as i64);
    let base = e.b.ins().iadd(c.scratch, po);
    // The runs have `per` panels but the last; its columns may end in a partial panel.
    let last_cols = p.n - (runs - 1) * per * NR;
    let pack = |e: &mut Emitter, ncols: usize| {
        let src = e.b.ins().imul_imm_s(run, (per * NR * 4) as i64);
        let src = e.b.ins().iadd(x, src);
        let dst = e.b.ins().imul_imm_s(run, (per * p.k * NR * 4) as i64);
        let dst = e.b.ins().iadd(base, dst);
        pack_b_rt(e, src, dst, ncols, p.k, (p.n * 4) as i64);
    };
    if runs == 1 {
        pack(e, last_cols);
        return;
    }
    let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, run, runs as i64 - 1);
    if_else(e, is_last, &mut |e| pack(e, last_cols), &mut |e| {
        pack(e, per * NR)
    });
}

/// One unit of a pair: the expansion's channels `[row0, row0 + mrows)` of image `img` into
/// the task buffer (`unit.pack`), then the depthwise conv of those channels.
pub(super) fn emit_unit(
    e: &mut Emitter,
    p: &KernelPlan,
    d: &DepthwiseAfter,
    c: &KernelArgs,
    unit: Unit,
) {
    let buf = unit.pack;
    // The tiles store row `r` of image `img` at `out + (img m + r) n` floats: the unit's
    // first row at the buffer's start.
    let io = e.b.ins().imul_imm_s(unit.img, (p.m * p.n * 4) as i64);
    let ro = e.b.ins().imul_imm_s(unit.row0, (p.n * 4) as i64);
    let o = e.b.ins().iadd(io, ro);
    let out = e.b.ins().isub(buf, o);
    gemm::emit_columns(e, p, &c.with_out(out), unit);
    // The depthwise conv reads channel `row0` at its input + `row0` planes (image 0 of a
    // one-image view whose output starts at image `img`'s).
    let g = &d.g;
    let x = e.b.ins().isub(buf, ro);
    let ins: Vec<Value> = std::iter::once(x)
        .chain(c.ins[d.port..].iter().copied())
        .collect();
    let oo =
        e.b.ins()
            .imul_imm_s(unit.img, (g.c * g.oh * g.ow * 4) as i64);
    let out = e.b.ins().iadd(c.out, oo);
    let outs = [out];
    let dw = KernelArgs {
        ins: &ins,
        out,
        outs: &outs,
        scratch: c.scratch,
        extra: &[],
        microkernels: c.microkernels,
    };
    let z = e.int_const(0);
    depthwise::emit_depthwise(e, &d.plan, g, &dw, z, unit.row0, unit.mrows);
}

/// Whether node `n` is an expansion a pair can start with: a 1x1 conv (fused or not) with
/// constant weights whose one output only a depthwise conv reads, as its input 0. Returns
/// that conv.
fn expansion_reader(graph: &Graph, n: NodeId) -> Option<NodeId> {
    let node = graph.node(n);
    let Op::Conv { window, group: 1 } = node.op.base() else {
        return None;
    };
    if node.outputs.len() != 1
        || !window.kernel.iter().all(|&k| k == 1)
        || graph.outputs.iter().any(|o| o.value.node == n)
    {
        return None;
    }
    let ins = graph.node_inputs(n);
    graph.const_value(*ins.get(1)?)?;
    let users = graph.node_users(n);
    let [(reader, 0, 0)] = users.as_slice() else {
        return None;
    };
    let Op::Conv { group, .. } = graph.node(*reader).op.base() else {
        return None;
    };
    (*group > 1).then_some(*reader)
}

/// Each expansion 1x1 conv read only by a depthwise conv, as one pair node where its plan
/// exists ([`plan`]); `None` when there is none.
pub(crate) fn pair_expand_depthwise(graph: &Graph, target: &Target) -> Result<Option<Graph>> {
    if !target.has_avx2_fma() {
        return Ok(None);
    }
    let order = graph
        .topo_order()
        .map_err(|e| CodegenError::new(e.msg.clone()))?;
    let mut g = graph.clone();
    let mut changed = false;
    for n in order {
        let Some(reader) = expansion_reader(&g, n) else {
            continue;
        };
        let first_ins = g.node_inputs(n);
        let second_ins = g.node_inputs(reader);
        let op = Op::Pair {
            first: Box::new(g.node(n).op.clone()),
            first_inputs: first_ins.len(),
            second: Box::new(g.node(reader).op.clone()),
        };
        let inputs: Vec<_> = first_ins.iter().chain(&second_ins[1..]).copied().collect();
        let name = g.node(reader).name.clone();
        let info = NodeInfo {
            name: &name,
            op: &op,
            ins: inputs
                .iter()
                .map(|v| g.value_type(*v).cloned())
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| CodegenError::new(e.msg))?,
            outs: g.node(reader).outputs.clone(),
            consts: inputs.iter().map(|v| g.const_value(*v).cloned()).collect(),
        };
        if plan(&info, target)?.is_none() {
            continue;
        }
        let pair = g
            .add(&name, op, &inputs)
            .map_err(|e| CodegenError::at(&name, "pair", e.msg))?;
        g.replace_uses(optc_ir::Value::new(reader, 0), pair);
        changed = true;
    }
    if !changed {
        return Ok(None);
    }
    g.remove_dead();
    Ok(Some(g))
}
