//! Tasks: a node's work units spread over up to [`super::kernel_plan::MAX_TASKS`] tasks run by
//! `optc_rt_parallel_for`, each claiming a slot of per-task buffers in the node's scratch.

use super::asm::{MicrokernelKey, Routine, NR};
use super::gemm::{emit_unit, Unit};
use super::kernel_plan::{KernelPlan, Strategy};
use super::{lstm, matrix_transpose, pool, small_map, softmax, winograd};
use crate::builder::{if_else, tensor_flags, Emitter};
use cranelift_codegen::ir::{condcodes::IntCC, types, AtomicRmwOp, FuncRef, InstBuilder, Value};
use std::collections::HashMap;

/// Everything a task needs: node pointers and the microkernels.
pub(crate) struct KernelArgs<'a> {
    pub ins: &'a [Value],
    pub out: Value,
    /// Every output (`out` is the first; only an LSTM cell has two).
    pub outs: &'a [Value],
    pub scratch: Value,
    pub extra: &'a [Value],
    pub microkernels: &'a HashMap<Routine, FuncRef>,
}

impl<'a> KernelArgs<'a> {
    /// A node's kernel or task function arguments from its parameters: the `nin` inputs,
    /// the outputs, and last the scratch.
    pub(crate) fn of_params(
        params: &'a [Value],
        nin: usize,
        extra: &'a [Value],
        microkernels: &'a HashMap<Routine, FuncRef>,
    ) -> Self {
        KernelArgs {
            ins: &params[..nin],
            out: params[nin],
            outs: &params[nin..params.len() - 1],
            scratch: params[params.len() - 1],
            extra,
            microkernels,
        }
    }
}

impl<'a> KernelArgs<'a> {
    /// The same arguments with the tiles storing at `out` instead (a buffer in scratch).
    pub(super) fn with_out(&self, out: Value) -> KernelArgs<'a> {
        KernelArgs {
            ins: self.ins,
            out,
            outs: self.outs,
            scratch: self.scratch,
            extra: self.extra,
            microkernels: self.microkernels,
        }
    }

    /// The GEMM microkernel `key` (declared by [`KernelPlan::routines`]).
    pub(super) fn microkernel(&self, key: MicrokernelKey) -> FuncRef {
        self.microkernels[&Routine::Microkernel(key)]
    }
}

/// The units `[t U / T, (t + 1) U / T)` of task `t` (U units, T tasks).
pub(super) fn task_units(e: &mut Emitter, p: &KernelPlan, t: Value) -> (Value, Value) {
    let units = p.units() as i64;
    let tasks = p.tasks as i64;
    let a = e.b.ins().imul_imm_s(t, units);
    let lo = e.b.ins().udiv_imm_u(a, tasks);
    let t1 = e.b.ins().iadd_imm_s(t, 1);
    let b = e.b.ins().imul_imm_s(t1, units);
    let hi = e.b.ins().udiv_imm_u(b, tasks);
    (lo, hi)
}

/// The running task's buffers: a claimed slot's packing space (after the padded input copy
/// at the start of scratch), or scratch itself when the node packs nothing. Release the slot
/// (if any) at the task's end.
pub(super) fn task_buffers(
    e: &mut Emitter,
    p: &KernelPlan,
    c: &KernelArgs,
) -> (Option<Value>, Value) {
    let slot = (p.pack_bytes() > 0).then(|| acquire_slot(e, p, c));
    let buf = match slot {
        Some(slot) => {
            let o = e.b.ins().imul_imm_s(slot, p.pack_bytes() as i64);
            let o = e.b.ins().iadd_imm_s(o, p.prefix_bytes() as i64);
            e.b.ins().iadd(c.scratch, o)
        }
        None => c.scratch,
    };
    (slot, buf)
}

/// Where unit `u` lies: M part `mp` (first row `row0`) of column unit `ci` (first column
/// `col0`) of image `img`; units run M parts fastest, then column units, then images
/// (`cu = img * units_per_img + ci` counts column units over all images).
pub(super) struct UnitAt {
    pub mp: Value,
    pub cu: Value,
    pub img: Value,
    pub ci: Value,
    pub col0: Value,
    pub row0: Value,
}

pub(super) fn unit_at(e: &mut Emitter, p: &KernelPlan, u: Value) -> UnitAt {
    let mparts = p.mparts() as i64;
    let upi = p.units_per_img() as i64;
    let mp = e.b.ins().urem_imm_u(u, mparts);
    let u2 = e.b.ins().udiv_imm_u(u, mparts);
    let img = e.b.ins().udiv_imm_u(u2, upi);
    let ci = e.b.ins().urem_imm_u(u2, upi);
    let col0 = e.b.ins().imul_imm_s(ci, p.chunk as i64);
    let row0 = e.b.ins().imul_imm_s(mp, p.mrows as i64);
    UnitAt {
        mp,
        cu: u2,
        img,
        ci,
        col0,
        row0,
    }
}

/// Claim a free buffer slot of the node (an index below `p.tasks`) for the running task.
/// A task's scratch buffers belong to the slot, not to the task index: a thread that runs
/// several tasks in a row (every task, at one thread) keeps reusing one warm set of
/// buffers. At most `p.tasks` tasks run at once, so a free slot always exists.
pub(super) fn acquire_slot(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs) -> Value {
    let addr = e.b.ins().iadd_imm_s(c.scratch, p.mask_off() as i64);
    let head = e.b.create_block();
    let done = e.b.create_block();
    e.b.append_block_param(done, types::I64);
    e.b.ins().jump(head, &[]);
    e.b.switch_to_block(head);
    let m = e.b.ins().atomic_load(types::I64, tensor_flags(), addr);
    let free = e.b.ins().bnot(m);
    let slot = e.b.ins().ctz(free);
    let one = e.int_const(1);
    let bit = e.b.ins().ishl(one, slot);
    let taken = e.b.ins().bor(m, bit);
    let old = e.b.ins().atomic_cas(tensor_flags(), addr, m, taken);
    let ok = e.b.ins().icmp(IntCC::Equal, old, m);
    e.b.ins().brif(ok, done, &[slot.into()], head, &[]);
    e.b.seal_block(head);
    e.b.switch_to_block(done);
    e.b.seal_block(done);
    e.b.block_params(done)[0]
}

/// Give the slot back.
pub(super) fn release_slot(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, slot: Value) {
    let addr = e.b.ins().iadd_imm_s(c.scratch, p.mask_off() as i64);
    let one = e.int_const(1);
    let bit = e.b.ins().ishl(one, slot);
    let keep = e.b.ins().bnot(bit);
    e.b.ins()
        .atomic_rmw(types::I64, tensor_flags(), AtomicRmwOp::And, addr, keep);
}

/// The units of task `t` (of `p.tasks`).
pub(crate) fn emit_task(e: &mut Emitter, p: &KernelPlan, c: &KernelArgs, t: Value) {
    if let Strategy::Winograd(g, r) = &p.kind {
        winograd::emit_task(e, p, g, *r, c, t);
        return;
    }
    if let Strategy::MaxPool(g) = &p.kind {
        pool::emit_task(e, p, g, c, t);
        return;
    }
    if let Strategy::SmallMap = &p.kind {
        small_map::emit_task(e, p, c, t);
        return;
    }
    if let Strategy::Softmax = &p.kind {
        softmax::emit_task(e, p, c, t);
        return;
    }
    if let Strategy::LstmCell { cell } = p.kind {
        lstm::emit_task(e, p, cell, c, t);
        return;
    }
    if let Strategy::MatrixTranspose(g) = &p.kind {
        matrix_transpose::emit_task(e, p, g, c, t);
        return;
    }
    let t = claimed_task(e, &claim_order(&task_costs(p)), t);
    let (lo, hi) = task_units(e, p, t);
    let (slot, pack) = task_buffers(e, p, c);
    let upi = p.units_per_img();
    let mparts = p.mparts();
    let last_cols = p.last_unit_cols();
    let last_rows = p.last_part_rows();
    e.loop_range(lo, hi, &mut |e, u| {
        let UnitAt {
            mp,
            img,
            ci,
            col0,
            row0,
            ..
        } = unit_at(e, p, u);
        let unit = |ncols, mrows| Unit {
            pack,
            img,
            col0,
            ncols,
            row0,
            mrows,
        };
        let by_rows = |e: &mut Emitter, ncols: usize| {
            if mparts == 1 || last_rows == p.mrows {
                emit_unit(e, p, c, unit(ncols, last_rows));
            } else {
                let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, mp, mparts as i64 - 1);
                if_else(
                    e,
                    is_last,
                    &mut |e| emit_unit(e, p, c, unit(ncols, last_rows)),
                    &mut |e| emit_unit(e, p, c, unit(ncols, p.mrows)),
                );
            }
        };
        if upi == 1 || last_cols == p.chunk {
            by_rows(e, last_cols);
        } else {
            let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, ci, upi as i64 - 1);
            if_else(e, is_last, &mut |e| by_rows(e, last_cols), &mut |e| {
                by_rows(e, p.chunk)
            });
        }
    });
    if let Some(slot) = slot {
        release_slot(e, p, c, slot);
    }
}

/// The work of each task of `p` (the general path: its units' columns times rows).
fn task_costs(p: &KernelPlan) -> Vec<usize> {
    let (units, tasks) = (p.units(), p.tasks);
    let (upi, mparts) = (p.units_per_img(), p.mparts());
    let unit = |u: usize| {
        let cols = if (u / mparts) % upi == upi - 1 {
            p.last_unit_cols()
        } else {
            p.chunk
        };
        let rows = if u % mparts == mparts - 1 {
            p.last_part_rows()
        } else {
            p.mrows
        };
        cols * rows
    };
    (0..tasks)
        .map(|t| (t * units / tasks..(t + 1) * units / tasks).map(unit).sum())
        .collect()
}

/// When the two threads of a node claiming its tasks from both ends (the caller from the
/// front, a worker from the back, see `runtime::threads`) finish, for tasks of `costs` in
/// that order, both starting together and taking the next task whenever free.
fn two_ended_span(costs: &[usize]) -> usize {
    let (mut front, mut back) = (0, costs.len());
    let (mut caller, mut worker) = (0, 0);
    while front < back {
        if caller <= worker {
            caller += costs[front];
            front += 1;
        } else {
            back -= 1;
            worker += costs[back];
        }
    }
    caller.max(worker)
}

/// Columns per unit for `n` columns of panels of `NR`, at most `max`: among whole panels per
/// unit giving no more units than `max` does (each unit has its own packing and claim, paid
/// at one thread too), the chunk whose units two threads claiming from both ends
/// ([`claim_order`]) finish soonest; within 3% of that, the fewest units. A 1x1 conv's 196
/// pixels in chunks of 128 left one thread 128 columns and the other 68; in chunks of 112,
/// 112 and 84.
pub(super) fn balanced_chunk(n: usize, max: usize) -> usize {
    let panels = n.div_ceil(NR).max(1);
    let most = (max / NR).max(1);
    let span = |c: usize| {
        let units = panels.div_ceil(c);
        let costs: Vec<usize> = (0..units).map(|u| c.min(panels - u * c)).collect();
        let dealt: Vec<usize> = match claim_order(&costs) {
            Some(order) => order.iter().map(|&t| costs[t]).collect(),
            None => costs,
        };
        (two_ended_span(&dealt), units)
    };
    let units = panels.div_ceil(most);
    let cands: Vec<(usize, usize, usize)> = (1..=most)
        .map(|c| {
            let (s, u) = span(c);
            (s, u, c)
        })
        .filter(|&(_, u, _)| u <= units)
        .collect();
    let best = cands.iter().map(|c| c.0).min().unwrap_or(most);
    cands
        .iter()
        .filter(|c| c.0 * 100 <= best * 103)
        .min_by_key(|c| (c.1, std::cmp::Reverse(c.2)))
        .map_or(max, |c| c.2 * NR)
}

/// The order of a node's tasks for claims from both ends: `order[i]` is the task run as
/// the `i`-th. Tasks of equal work keep their order (the caller the first ones, a worker
/// the last: each thread a contiguous part of the data, as in the node before). When the
/// work differs (a short last column unit or row part) and that order would leave one
/// thread idle longer, the tasks are dealt by work, largest first, alternately to the
/// front and the back: both threads run the large ones first and get about half each.
/// `None`: the natural order.
pub(super) fn claim_order(costs: &[usize]) -> Option<Vec<usize>> {
    let n = costs.len();
    if !(3..=16).contains(&n) {
        return None;
    }
    let mut by_work: Vec<usize> = (0..n).collect();
    by_work.sort_by_key(|&t| std::cmp::Reverse(costs[t]));
    let mut order = vec![0; n];
    let (mut front, mut back) = (0, n);
    for (i, &t) in by_work.iter().enumerate() {
        if i % 2 == 0 {
            order[front] = t;
            front += 1;
        } else {
            back -= 1;
            order[back] = t;
        }
    }
    let dealt: Vec<usize> = order.iter().map(|&t| costs[t]).collect();
    (two_ended_span(&dealt) < two_ended_span(costs)).then_some(order)
}

/// Task `order[t]` (the identity without an order): the order packed 4 bits a task into one
/// constant.
fn claimed_task(e: &mut Emitter, order: &Option<Vec<usize>>, t: Value) -> Value {
    let Some(order) = order else {
        return t;
    };
    let packed = order
        .iter()
        .enumerate()
        .fold(0u64, |acc, (i, &task)| acc | ((task as u64) << (4 * i)));
    let table = e.int_const(packed as i64);
    let shift = e.b.ins().ishl_imm_u(t, 2);
    let entry = e.b.ins().ushr(table, shift);
    e.b.ins().band_imm_u(entry, 15)
}

/// `[t T / parts, (t + 1) T / parts)` of `T` items.
pub(in crate::x64) fn part_range(
    e: &mut Emitter,
    t: Value,
    total: usize,
    parts: usize,
) -> (Value, Value) {
    let a = e.b.ins().imul_imm_s(t, total as i64);
    let lo = e.b.ins().udiv_imm_u(a, parts as i64);
    let t1 = e.b.ins().iadd_imm_s(t, 1);
    let b = e.b.ins().imul_imm_s(t1, total as i64);
    let hi = e.b.ins().udiv_imm_u(b, parts as i64);
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_permutation(order: &[usize]) -> bool {
        let mut seen = vec![false; order.len()];
        order
            .iter()
            .all(|&t| t < seen.len() && !std::mem::replace(&mut seen[t], true))
    }

    #[test]
    fn balanced_chunks() {
        // 196 columns (a 14x14 map): 112 + 84, not 128 + 68.
        assert_eq!(balanced_chunk(196, 128), 112);
        // 784 (28x28): 7 units of 8 panels and one of 1, dealt so that the threads get 25
        // and 24 panels: as even as it gets, with the fewest units.
        assert_eq!(balanced_chunk(784, 128), 128);
        // 400 (20x20): 25 panels in four units of 7, 7, 7 and 4 (14 and 11 panels a thread),
        // not 8, 8, 8 and 1 (16 and 9).
        assert_eq!(balanced_chunk(400, 128), 112);
        // 49 (7x7): one unit, as before (a second would cost its packing at one thread).
        assert_eq!(balanced_chunk(49, 128), 128);
        // Even splits stay: 256 columns in two units of 128; a few columns in one unit.
        assert_eq!(balanced_chunk(256, 128), 128);
        assert_eq!(balanced_chunk(20, 128), 128);
        assert_eq!(balanced_chunk(3136, 128), 128);
    }

    #[test]
    fn claim_order_balances_both_ends() {
        // Equal work, or a short last unit the worker takes first: the natural order.
        assert_eq!(claim_order(&[5, 5, 5, 5]), None);
        assert_eq!(claim_order(&[112, 112, 112, 84]), None);
        assert_eq!(claim_order(&[7, 3]), None);
        // Two row parts of two column units, the last column unit short (a 1x1 conv of 96
        // channels on a 14x14 map: 112 + 84 columns): in order the caller would run both
        // long tasks and the worker both short ones.
        let costs = [112 * 48, 112 * 48, 84 * 48, 84 * 48];
        let order = claim_order(&costs).expect("reordered");
        assert!(is_permutation(&order));
        assert_eq!(order, vec![0, 2, 3, 1]);
        let dealt: Vec<usize> = order.iter().map(|&t| costs[t]).collect();
        assert_eq!(two_ended_span(&dealt), (112 + 84) * 48);
        assert_eq!(two_ended_span(&costs), 2 * 112 * 48);
        // Sixteen tasks of three sizes.
        let costs: Vec<usize> = (0..16).map(|t| [9, 9, 9, 4, 4, 1][t % 6]).collect();
        if let Some(order) = claim_order(&costs) {
            assert!(is_permutation(&order));
            let dealt: Vec<usize> = order.iter().map(|&t| costs[t]).collect();
            assert!(two_ended_span(&dealt) < two_ended_span(&costs));
        }
    }
}
