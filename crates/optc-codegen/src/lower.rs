#![allow(clippy::needless_range_loop)]
//! Lowering a graph to Cranelift functions, generic over `cranelift_module::Module`.
//!
//! Every op node becomes one kernel function `fn(in_ptrs.., out_ptrs.., scratch) -> i32`;
//! the entry function resolves every value to its buffer (graph input, graph output, constant
//! data object or workspace offset) and calls the kernels in schedule order.

use crate::emit::{mf, RtIds, E};
use crate::node::{bytes_of, NodeInfo};
use crate::ops::elementwise::Ew;
use crate::ops::map::map;
use crate::ops::operand::Opd;
use crate::ops::parallel::{ew_split, layernorm_split, softmax_split};
use crate::ops::{derived_data, lower_node, scratch_bytes};
use crate::plan::Arena;
use crate::runtime::RuntimeFunction;
use crate::{CodegenError, Target, MAX_BYTES};
use cranelift_codegen::ir::{
    types, AbiParam, Function, InstBuilder, StackSlotData, StackSlotKind, UserFuncName, Value,
};
use cranelift_frontend::FunctionBuilderContext;
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use optc_ir::{DType, Graph, NodeId, Op, Tensor, TensorType, UnaryOp, Value as IrValue};
use std::collections::HashMap;
use std::sync::Arc;

type R<T> = Result<T, CodegenError>;

/// What `lower_graph` produced.
pub struct Lowered {
    pub entry: FuncId,
    pub workspace: usize,
    pub output_types: Vec<TensorType>,
    /// `(node name, op name)` of every kernel, in schedule order.
    pub nodes: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Loc {
    Input(usize),
    Output(usize),
    Const(DataId),
    Ws(usize),
}

/// Lower `graph` into `module`; defines the entry function `entry_name`.
pub fn lower_graph<M: Module>(
    module: &mut M,
    graph: &Graph,
    target: &Target,
    entry_name: &str,
) -> R<Lowered> {
    graph
        .verify()
        .map_err(|e| CodegenError::new(format!("invalid graph: {e}")))?;
    let order = graph
        .topo_order()
        .map_err(|e| CodegenError::new(e.msg.clone()))?;
    let ptr = module.target_config().pointer_type();

    // Runtime imports.
    let rt_ids = RtIds::declare(module)?;
    let par_for = rt_ids.id(RuntimeFunction::ParallelFor);
    let mut ukr_ids: HashMap<crate::x64::asm::Routine, FuncId> = HashMap::new();

    let mut locs: HashMap<IrValue, Loc> = HashMap::new();
    let mut const_data: HashMap<u32, DataId> = HashMap::new();
    let mut const_pending: Vec<(DataId, Arc<Tensor>)> = vec![];
    // Constants some kernel (or a graph output) reads through their pointer.
    let mut const_read: std::collections::HashSet<DataId> = std::collections::HashSet::new();
    let mut data_count = 0usize;
    let mut total_const = 0usize;

    // Inputs and constants.
    for &n in &order {
        let node = graph.node(n);
        match &node.op {
            Op::Input { index } => {
                locs.insert(IrValue::new(n, 0), Loc::Input(*index));
            }
            Op::Constant { id } => {
                let t = graph.const_tensor(*id).ok_or_else(|| {
                    CodegenError::at(&node.name, "const", format!("missing constant c{}", id.0))
                })?;
                let did = match const_data.get(&id.0) {
                    Some(d) => *d,
                    None => {
                        let b = bytes_of(&t.ty())?;
                        total_const = total_const.saturating_add(b);
                        if total_const > MAX_BYTES {
                            return Err(CodegenError::new("constants exceed 16 GiB"));
                        }
                        // Declared now, defined once the plans say whether any kernel reads
                        // it (weights that only feed packed copies are left out).
                        let d = declare_data(module, &mut data_count)?;
                        const_data.insert(id.0, d);
                        const_pending.push((d, t.clone()));
                        d
                    }
                };
                locs.insert(IrValue::new(n, 0), Loc::Const(did));
            }
            _ => {}
        }
    }

    // Graph outputs produced by op nodes are written in place.
    let mut out_copies: Vec<(usize, IrValue)> = vec![];
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
            locs.insert(o.value, Loc::Output(j));
        } else {
            out_copies.push((j, o.value));
        }
    }

    // Schedule and memory plan.
    let sched: Vec<NodeId> = order
        .iter()
        .copied()
        .filter(|&n| !matches!(graph.node(n).op, Op::Input { .. } | Op::Constant { .. }))
        .collect();
    let pos: HashMap<NodeId, usize> = sched.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let mut last_use: HashMap<IrValue, usize> = HashMap::new();
    for (i, &n) in sched.iter().enumerate() {
        for v in graph.node_inputs(n) {
            last_use.insert(v, i);
        }
    }
    let mut arena = Arena::default();
    let mut scratch: Vec<Option<usize>> = vec![None; sched.len()];
    let mut infos: Vec<NodeInfo> = Vec::with_capacity(sched.len());
    let mut plans: Vec<Option<crate::x64::Plan>> = Vec::with_capacity(sched.len());
    // Reshapes whose output takes over their input's workspace block (no copy, no call).
    let mut aliased: Vec<bool> = vec![false; sched.len()];
    for (i, &n) in sched.iter().enumerate() {
        let node = graph.node(n);
        let inputs = graph.node_inputs(n);
        // A reshape of a workspace value read by nobody after it: same bytes, same block.
        if let (Op::Reshape { .. }, [vin]) = (&node.op, inputs.as_slice()) {
            let out = IrValue::new(n, 0);
            if let Some(&Loc::Ws(off)) = locs.get(vin) {
                if last_use.get(vin) == Some(&i)
                    && !locs.contains_key(&out)
                    && last_use.contains_key(&out)
                {
                    locs.insert(out, Loc::Ws(off));
                    aliased[i] = true;
                }
            }
        }
        let info = NodeInfo {
            name: &node.name,
            op: &node.op,
            ins: inputs
                .iter()
                .map(|v| graph.value_type(*v).cloned())
                .collect::<Result<_, _>>()
                .map_err(|e| CodegenError::at(&node.name, node.op.name(), e.msg))?,
            outs: node.outputs.clone(),
            consts: inputs
                .iter()
                .map(|v| graph.const_value(*v).cloned())
                .collect(),
        };
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
            locs.insert(v, Loc::Ws(off));
            fresh.push((v, off, b));
        }
        let fp = crate::x64::plan(&info, target)?;
        for (j, v) in inputs.iter().enumerate() {
            if let Some(Loc::Const(d)) = locs.get(v) {
                if fp.as_ref().is_none_or(|p| p.reads_input(j)) {
                    const_read.insert(*d);
                }
            }
        }
        let sb = match &fp {
            Some(p) => p.scratch_bytes(),
            None => scratch_bytes(&info)?,
        };
        plans.push(fp);
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
            .filter(|v| last_use.get(v) == Some(&i) && !aliased[i])
            .collect();
        dying.sort();
        dying.dedup();
        for (v, off, b) in &fresh {
            if !last_use.contains_key(v) {
                arena.free(*off, *b);
            }
        }
        for v in dying {
            if let Some(Loc::Ws(off)) = locs.get(&v) {
                let b = bytes_of(graph.value_type(v).map_err(|e| CodegenError::new(e.msg))?)?;
                arena.free(*off, b);
            }
        }
        if arena.top > MAX_BYTES {
            return Err(info.err(format!("workspace would exceed {MAX_BYTES} bytes (16 GiB)")));
        }
        infos.push(info);
    }
    // `Where(IsNaN(s), c, s)` with a one-element f32 `c` and the IsNaN read by nobody else
    // (BERT's masked-softmax cleanup): the Where replaces NaNs itself in one pass and the
    // IsNaN is neither lowered nor called.
    let mut nan_where: Vec<bool> = vec![false; sched.len()];
    {
        let mut users: HashMap<IrValue, usize> = HashMap::new();
        for &n in &sched {
            for v in graph.node_inputs(n) {
                *users.entry(v).or_insert(0) += 1;
            }
        }
        for o in &graph.outputs {
            *users.entry(o.value).or_insert(0) += 1;
        }
        for (i, &n) in sched.iter().enumerate() {
            let ins = graph.node_inputs(n);
            let (Op::Where, [cond, _, x]) = (&graph.node(n).op, ins.as_slice()) else {
                continue;
            };
            let Some(&j) = pos.get(&cond.node) else {
                continue;
            };
            let is_nan_of_x = matches!(graph.node(cond.node).op, Op::Unary(UnaryOp::IsNaN))
                && graph.node_inputs(cond.node).as_slice() == [*x];
            let info = &infos[i];
            let f32_ok = info.ins[1].dtype == DType::F32
                && info.ins[1].numel() == 1
                && info.ins[2].dtype == DType::F32
                && info.ins[2].shape == info.outs[0].shape;
            if is_nan_of_x && f32_ok && users.get(cond) == Some(&1) && !aliased[j] {
                nan_where[i] = true;
                aliased[j] = true;
            }
        }
    }
    let workspace = arena.top;
    for (_, v) in &out_copies {
        if let Some(Loc::Const(d)) = locs.get(v) {
            const_read.insert(*d);
        }
    }
    for (d, t) in const_pending {
        let bytes = if const_read.contains(&d) {
            t.data().to_le_bytes()
        } else {
            vec![0]
        };
        define_declared(module, d, bytes)?;
    }

    // Kernels.
    let mut ctx = module.make_context();
    let mut fctx = FunctionBuilderContext::new();
    let mut kernels: Vec<FuncId> = Vec::with_capacity(sched.len());
    for (i, info) in infos.iter().enumerate() {
        let nparams = info.ins.len() + info.outs.len() + 1;
        let mut sig = module.make_signature();
        for _ in 0..nparams {
            sig.params.push(AbiParam::new(ptr));
        }
        sig.returns.push(AbiParam::new(types::I32));
        let fid = module
            .declare_function(&format!("{entry_name}_k{i}"), Linkage::Local, &sig)
            .map_err(|e| info.err(e.to_string()))?;
        let plan = plans[i].as_ref();
        let derived = match plan {
            Some(p) => crate::x64::derived(info, p)?,
            None => derived_data(info)?,
        };
        let mut dids = vec![];
        for d in derived {
            dids.push(define_data(module, &mut data_count, d)?);
        }
        // Microkernels and the task function of the AVX2 GEMM path.
        let mut task_fn: Option<FuncId> = None;
        let ew = if plan.is_none() {
            ew_split(info)
                .or_else(|| softmax_split(info).map(|p| (0, p)))
                .or_else(|| layernorm_split(info).map(|p| (0, p)))
        } else {
            None
        };
        let task = TaskFn {
            info,
            name: format!("{entry_name}_k{i}_task"),
            dids: &dids,
            rt_ids: &rt_ids,
            fma: target.fma,
            nparams,
        };
        if let Some((dim, parts)) = ew {
            // A large f32 elementwise node: `parts` tasks, each a slice along `dim`.
            let body = &mut |e: &mut E, params: &[Value], extra: &[Value], _: &_, t: Value| {
                e.split = Some(crate::emit::Split {
                    shape: info.outs[0].shape.clone(),
                    dim,
                    parts,
                    t,
                });
                lower_node(e, info, params, extra)
            };
            task_fn = Some(task.define(module, &mut ctx, &mut fctx, &[], body)?);
        }
        if let Some(p) = plan {
            for key in p.routines() {
                if ukr_ids.contains_key(&key) {
                    continue;
                }
                let bytes = key
                    .assemble()
                    .map_err(|e| info.err(format!("assembling microkernel: {e}")))?;
                let mut us = module.make_signature();
                for _ in 0..key.nparams() {
                    us.params.push(AbiParam::new(types::I64));
                }
                let name = format!("{entry_name}_{}", key.symbol());
                let id = module
                    .declare_function(&name, Linkage::Local, &us)
                    .map_err(|e| info.err(e.to_string()))?;
                module
                    .define_function_bytes(id, 16, &bytes, &[])
                    .map_err(|e| info.err(format!("defining microkernel: {e}")))?;
                ukr_ids.insert(key, id);
            }
            if p.tasks > 1 {
                let keys: Vec<_> = p
                    .routines()
                    .into_iter()
                    .map(|k| (k.clone(), ukr_ids[&k]))
                    .collect();
                let nin = info.ins.len();
                let body = &mut |e: &mut E, params: &[Value], extra: &[Value], ukrs: &_, t| {
                    let c = crate::x64::Ctx {
                        ins: &params[..nin],
                        out: params[nin],
                        scratch: params[nparams - 1],
                        extra,
                        ukrs,
                    };
                    crate::x64::emit_task(e, p, &c, t);
                    Ok(())
                };
                task_fn = Some(task.define(module, &mut ctx, &mut fctx, &keys, body)?);
            }
        }
        ctx.func = Function::with_name_signature(UserFuncName::user(0, fid.as_u32()), sig);
        let gvs: Vec<_> = dids
            .iter()
            .map(|d| module.declare_data_in_func(*d, &mut ctx.func))
            .collect();
        let rt = rt_ids.declare_in(module, &mut ctx.func);
        let ukrs: HashMap<_, _> = match plan {
            Some(p) if task_fn.is_none() => p
                .routines()
                .into_iter()
                .map(|k| {
                    let f = module.declare_func_in_func(ukr_ids[&k], &mut ctx.func);
                    (k, f)
                })
                .collect(),
            _ => HashMap::new(),
        };
        let task_ref = task_fn.map(|t| module.declare_func_in_func(t, &mut ctx.func));
        let par_ref = task_fn.map(|_| module.declare_func_in_func(par_for, &mut ctx.func));
        {
            let (mut e, params) = E::begin(&mut ctx.func, &mut fctx, target.fma, rt);
            let extra: Vec<Value> = gvs
                .iter()
                .map(|g| e.b.ins().symbol_value(ptr, *g))
                .collect();
            match plan {
                Some(p) => {
                    let nin = info.ins.len();
                    let c = crate::x64::Ctx {
                        ins: &params[..nin],
                        out: params[nin],
                        scratch: params[nparams - 1],
                        extra: &extra,
                        ukrs: &ukrs,
                    };
                    crate::x64::emit_pre(&mut e, info, p, &c)?;
                    match (task_ref, par_ref) {
                        (Some(tr), Some(pr)) => call_parallel(&mut e, &params, tr, pr, p.tasks),
                        _ => {
                            let z = e.ic(0);
                            crate::x64::emit_task(&mut e, p, &c, z);
                        }
                    }
                    crate::x64::emit_post(&mut e, info, p, &c)?;
                }
                None => match (task_ref, par_ref, ew) {
                    (Some(tr), Some(pr), Some((_, parts))) => {
                        call_parallel(&mut e, &params, tr, pr, parts)
                    }
                    // An aliased reshape: nothing to do (the entry does not call it).
                    _ if aliased[i] => {}
                    _ if nan_where[i] => {
                        let oty = &info.outs[0];
                        let c = Opd::bcast(params[1], &info.ins[1], &oty.shape);
                        let x = Opd::dense(params[2], &info.ins[2]);
                        let out = Opd::dense(params[3], oty);
                        map(&mut e, info, &oty.shape, out, &[c, x], &Ew::NanTo)?
                    }
                    _ => lower_node(&mut e, info, &params, &extra)?,
                },
            }
            let z = e.b.ins().iconst(types::I32, 0);
            e.b.ins().return_(&[z]);
            e.b.finalize(module.target_config());
        }
        let disasm = std::env::var_os("OPTC_DISASM").is_some();
        ctx.set_disasm(disasm);
        module
            .define_function(fid, &mut ctx)
            .map_err(|e| info.err(format!("cranelift: {e:?}")))?;
        if disasm {
            if let Some(v) = ctx.compiled_code().and_then(|c| c.vcode.as_ref()) {
                eprintln!("; kernel {i}: {} ({})\n{v}", info.name, info.op.name());
            }
        }
        module.clear_context(&mut ctx);
        kernels.push(fid);
    }

    // Entry.
    let mut sig = module.make_signature();
    for _ in 0..3 {
        sig.params.push(AbiParam::new(ptr));
    }
    sig.returns.push(AbiParam::new(types::I32));
    let entry = module
        .declare_function(entry_name, Linkage::Export, &sig)
        .map_err(|e| CodegenError::new(e.to_string()))?;
    ctx.func = Function::with_name_signature(UserFuncName::user(0, entry.as_u32()), sig);
    let kref: Vec<_> = kernels
        .iter()
        .map(|k| module.declare_func_in_func(*k, &mut ctx.func))
        .collect();
    let entry_rt = rt_ids.declare_in(module, &mut ctx.func);
    let mut gv_of: HashMap<DataId, cranelift_codegen::ir::GlobalValue> = HashMap::new();
    // In id order, so the entry function (and `--emit clif`) is reproducible.
    let mut dids: Vec<DataId> = const_data.values().copied().collect();
    dids.sort_by_key(|d| d.as_u32());
    for d in &dids {
        gv_of.insert(*d, module.declare_data_in_func(*d, &mut ctx.func));
    }
    {
        let (mut e, p) = E::begin(&mut ctx.func, &mut fctx, target.fma, entry_rt);
        let (pin, pout, pws) = (p[0], p[1], p[2]);
        let ptr_of = |e: &mut E, loc: Loc| -> Value {
            match loc {
                Loc::Input(i) => e.b.ins().load(ptr, mf(), pin, (i * 8) as i32),
                Loc::Output(j) => e.b.ins().load(ptr, mf(), pout, (j * 8) as i32),
                Loc::Const(d) => e.b.ins().symbol_value(ptr, gv_of[&d]),
                Loc::Ws(off) => e.b.ins().iadd_imm_s(pws, off as i64),
            }
        };
        for (i, &n) in sched.iter().enumerate() {
            if aliased[i] {
                continue;
            }
            let mut args = vec![];
            for v in graph.node_inputs(n) {
                let l = locs[&v];
                args.push(ptr_of(&mut e, l));
            }
            for p in 0..graph.node(n).outputs.len() {
                let l = locs[&IrValue::new(n, p)];
                args.push(ptr_of(&mut e, l));
            }
            args.push(match scratch[i] {
                Some(off) => e.b.ins().iadd_imm_s(pws, off as i64),
                None => pws,
            });
            let call = e.b.ins().call(kref[i], &args);
            let st = e.b.inst_results(call)[0];
            let bad = e.b.create_block();
            let ok = e.b.create_block();
            e.b.ins().brif(st, bad, &[], ok, &[]);
            e.b.switch_to_block(bad);
            e.b.seal_block(bad);
            let code = e.b.ins().iadd_imm_s(st, ((i as i64) + 1) << 8);
            e.b.ins().return_(&[code]);
            e.b.switch_to_block(ok);
            e.b.seal_block(ok);
        }
        for (j, v) in out_copies {
            let src = ptr_of(&mut e, locs[&v]);
            let dst = ptr_of(&mut e, Loc::Output(j));
            let n = bytes_of(&output_types[j])?;
            let z = e.ic(0);
            e.copy_bytes(dst, z, src, z, n);
        }
        let z = e.b.ins().iconst(types::I32, 0);
        e.b.ins().return_(&[z]);
        e.b.finalize(module.target_config());
    }
    module
        .define_function(entry, &mut ctx)
        .map_err(|e| CodegenError::new(format!("cranelift (entry): {e:?}")))?;
    module.clear_context(&mut ctx);

    let nodes = infos
        .iter()
        .map(|i| (i.name.to_string(), i.op.name().to_string()))
        .collect();
    Ok(Lowered {
        entry,
        workspace,
        output_types,
        nodes,
    })
}

/// What a node's task function (`fn(params: *const ptr, t: i64)`, run by
/// `optc_rt_parallel_for`) needs: it loads the kernel's parameters from the array the kernel
/// passes, declares the node's data and microkernels, and lets `body` emit task `t`.
struct TaskFn<'a> {
    info: &'a NodeInfo<'a>,
    name: String,
    dids: &'a [DataId],
    rt_ids: &'a RtIds,
    fma: bool,
    nparams: usize,
}

/// Emits one task: `(e, params, extra data, microkernels, t)`.
type TaskBody<'b> = dyn FnMut(
        &mut E,
        &[Value],
        &[Value],
        &HashMap<crate::x64::asm::Routine, cranelift_codegen::ir::FuncRef>,
        Value,
    ) -> R<()>
    + 'b;

impl TaskFn<'_> {
    fn define<M: Module>(
        &self,
        module: &mut M,
        ctx: &mut cranelift_codegen::Context,
        fctx: &mut FunctionBuilderContext,
        ukr_ids: &[(crate::x64::asm::Routine, FuncId)],
        body: &mut TaskBody<'_>,
    ) -> R<FuncId> {
        let ptr = module.target_config().pointer_type();
        let mut ts = module.make_signature();
        ts.params.push(AbiParam::new(ptr));
        ts.params.push(AbiParam::new(types::I64));
        let tid = module
            .declare_function(&self.name, Linkage::Local, &ts)
            .map_err(|e| self.info.err(e.to_string()))?;
        ctx.func = Function::with_name_signature(UserFuncName::user(0, tid.as_u32()), ts);
        let gvs: Vec<_> = self
            .dids
            .iter()
            .map(|d| module.declare_data_in_func(*d, &mut ctx.func))
            .collect();
        let ukrs: HashMap<_, _> = ukr_ids
            .iter()
            .map(|(k, id)| (k.clone(), module.declare_func_in_func(*id, &mut ctx.func)))
            .collect();
        let rt = self.rt_ids.declare_in(module, &mut ctx.func);
        {
            let (mut e, tp) = E::begin(&mut ctx.func, fctx, self.fma, rt);
            let params: Vec<Value> = (0..self.nparams)
                .map(|j| e.b.ins().load(ptr, mf(), tp[0], (j * 8) as i32))
                .collect();
            let extra: Vec<Value> = gvs
                .iter()
                .map(|g| e.b.ins().symbol_value(ptr, *g))
                .collect();
            body(&mut e, &params, &extra, &ukrs, tp[1])?;
            e.b.ins().return_(&[]);
            e.b.finalize(module.target_config());
        }
        module
            .define_function(tid, ctx)
            .map_err(|e| self.info.err(format!("cranelift: {e:?}")))?;
        module.clear_context(ctx);
        Ok(tid)
    }
}

/// Run task function `task` for `0..n` through `optc_rt_parallel_for` (`par`), handing it the
/// kernel's parameters in a stack array.
fn call_parallel(
    e: &mut E,
    params: &[Value],
    task: cranelift_codegen::ir::FuncRef,
    par: cranelift_codegen::ir::FuncRef,
    n: usize,
) {
    let slot = e.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (params.len() * 8) as u32,
        3,
    ));
    let sa = e.b.ins().stack_addr(types::I64, slot, 0);
    for (j, &v) in params.iter().enumerate() {
        e.b.ins().store(mf(), v, sa, (j * 8) as i32);
    }
    let fa = e.b.ins().func_addr(types::I64, task);
    let nt = e.b.ins().iconst(types::I64, n as i64);
    e.b.ins().call(par, &[fa, sa, nt]);
}

fn define_data<M: Module>(module: &mut M, count: &mut usize, bytes: Vec<u8>) -> R<DataId> {
    let id = declare_data(module, count)?;
    define_declared(module, id, bytes)?;
    Ok(id)
}

/// Declare the next `optc_data_N` (defined later by [`define_declared`]).
fn declare_data<M: Module>(module: &mut M, count: &mut usize) -> R<DataId> {
    let name = format!("optc_data_{}", *count);
    *count += 1;
    module
        .declare_data(&name, Linkage::Local, false, false)
        .map_err(|e| CodegenError::new(e.to_string()))
}

/// Define a declared data object (64-byte aligned; at least one byte).
fn define_declared<M: Module>(module: &mut M, id: DataId, mut bytes: Vec<u8>) -> R<()> {
    if bytes.is_empty() {
        bytes.push(0);
    }
    let mut d = DataDescription::new();
    d.define(bytes.into_boxed_slice());
    d.set_align(64);
    module
        .define_data(id, &d)
        .map_err(|e| CodegenError::new(e.to_string()))
}
