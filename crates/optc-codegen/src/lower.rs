#![allow(clippy::needless_range_loop)]
//! Lowering a graph to Cranelift functions, generic over `cranelift_module::Module`.
//!
//! Every op node becomes one kernel function `fn(in_ptrs.., out_ptrs.., scratch) -> i32`;
//! the entry function resolves every value to its buffer (graph input, graph output, constant
//! data object or workspace offset) and calls the kernels in schedule order.

use crate::emit::{clty, mf, RtIds, E, F32X4, I32X4};
use crate::plan::Arena;
use crate::runtime::RuntimeFunction;
use crate::{CodegenError, RuntimeError, Target, MAX_BYTES};
use cranelift_codegen::ir::{
    condcodes::{FloatCC, IntCC},
    types, AbiParam, Function, InstBuilder, MemFlagsData, StackSlotData, StackSlotKind, Type,
    UserFuncName, Value,
};
use cranelift_frontend::{FunctionBuilderContext, Variable};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};
use optc_ir::{
    BinaryOp, DType, FusedStep, Graph, NodeId, Op, ReduceKind, Tensor, TensorType, UnaryOp,
    Value as IrValue,
};
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

/// Largest single tensor: kernels address within a tensor with 32-bit displacements.
const MAX_TENSOR_BYTES: usize = (1 << 31) - 1;

fn bytes_of(ty: &TensorType) -> R<usize> {
    let n = optc_ir::checked_numel(&ty.shape).map_err(|e| CodegenError::new(e.msg))?;
    match n.checked_mul(ty.dtype.size()) {
        Some(b) if b <= MAX_TENSOR_BYTES => Ok(b),
        _ => Err(CodegenError::new(format!(
            "tensor {ty} is larger than {MAX_TENSOR_BYTES} bytes (2 GiB), which codegen does not support"
        ))),
    }
}

/// Information about one op node handed to its lowering.
pub(crate) struct NodeInfo<'g> {
    pub name: &'g str,
    pub op: &'g Op,
    pub ins: Vec<TensorType>,
    pub outs: Vec<TensorType>,
    pub consts: Vec<Option<Arc<Tensor>>>,
}

impl NodeInfo<'_> {
    pub fn err(&self, msg: impl Into<String>) -> CodegenError {
        CodegenError::at(self.name, self.op.name(), msg)
    }
}

/// The base op of a fused node, as a node of its own writing the fused node's output.
pub(crate) fn base_info<'g>(info: &NodeInfo<'g>) -> Option<NodeInfo<'g>> {
    match info.op {
        Op::Fused {
            base, base_inputs, ..
        } => Some(NodeInfo {
            name: info.name,
            op: base,
            ins: info.ins[..*base_inputs].to_vec(),
            outs: info.outs.clone(),
            consts: info.consts[..*base_inputs].to_vec(),
        }),
        _ => None,
    }
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

/// A large f32 elementwise node worth splitting across threads: `(dim, parts)` such that
/// `parts` divides the output's extent along `dim`.
fn ew_split(info: &NodeInfo) -> Option<(usize, usize)> {
    let ok = match info.op {
        Op::Unary(_) | Op::Binary(_) | Op::Cast { .. } => true,
        Op::Fused { base, .. } => matches!(**base, Op::Unary(_) | Op::Binary(_)),
        _ => false,
    };
    if !ok || info.outs.len() != 1 {
        return None;
    }
    if !info
        .ins
        .iter()
        .chain(&info.outs)
        .all(|t| t.dtype == DType::F32)
    {
        return None;
    }
    let o = &info.outs[0];
    if o.numel() < (1 << 16) {
        return None;
    }
    for parts in [8, 4, 2] {
        for (d, &n) in o.shape.iter().enumerate() {
            if n >= parts && n % parts == 0 {
                return Some((d, parts));
            }
        }
    }
    None
}

/// A softmax over contiguous rows worth splitting across threads: the number of parts (row
/// blocks of ~8K elements, ~10 us each, dividing the row count).
fn softmax_split(info: &NodeInfo) -> Option<usize> {
    let &Op::Softmax { axis } = info.op else {
        return None;
    };
    let s = &info.ins[0].shape;
    if s[axis + 1..].iter().product::<usize>() != 1 {
        return None;
    }
    let rows: usize = s[..axis].iter().product();
    let want = (info.ins[0].numel() / 8192).min(8);
    (2..=want).rev().find(|&p| rows.is_multiple_of(p))
}

/// A LayerNorm over the last dim (scale and bias per element of the row or single values)
/// worth splitting across threads: the number of row blocks (of ~8K elements).
fn layernorm_split(info: &NodeInfo) -> Option<usize> {
    let &Op::LayerNorm { axis, .. } = info.op else {
        return None;
    };
    let s = &info.ins[0].shape;
    if axis + 1 != s.len() {
        return None;
    }
    let d = s[axis];
    let per_row = |t: &TensorType| t.numel() == 1 || (t.shape.len() == 1 && t.shape[0] == d);
    if !info.ins[1..].iter().all(per_row) {
        return None;
    }
    let rows: usize = s[..axis].iter().product();
    let want = (info.ins[0].numel() / 8192).min(8);
    (2..=want).rev().find(|&p| rows.is_multiple_of(p))
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

// ---------------------------------------------------------------------------------------------
// Per-node planning facts.

/// Bytes of scratch a node needs during its execution.
fn scratch_bytes(info: &NodeInfo) -> R<usize> {
    if let Some(b) = base_info(info) {
        return scratch_bytes(&b);
    }
    if let Some(g) = maxpool2d_geom(info) {
        return Ok(g.planes * g.hp * g.wp * 4);
    }
    if let Op::Conv { window, .. } = info.op {
        if window.pads.iter().any(|&p| p > 0) {
            let Some((g, _)) = conv_geom(info)? else {
                return Ok(0);
            };
            let n =
                g.n.checked_mul(g.c)
                    .and_then(|v| v.checked_mul(g.hp))
                    .and_then(|v| v.checked_mul(g.wp))
                    .and_then(|v| v.checked_mul(4))
                    .filter(|&b| b <= MAX_TENSOR_BYTES)
                    .ok_or_else(|| info.err("padded conv input is too large"))?;
            return Ok(n);
        }
    }
    Ok(0)
}

/// Constant data a kernel needs besides its inputs (packed weights, index tables).
fn derived_data(info: &NodeInfo) -> R<Vec<Vec<u8>>> {
    if let Some(b) = base_info(info) {
        return derived_data(&b);
    }
    match info.op {
        Op::Conv { .. } => {
            let Some((g, packed)) = conv_geom(info)? else {
                return Ok(vec![]);
            };
            if let Some(w) = packed {
                let w = w
                    .as_f32()
                    .ok_or_else(|| info.err("conv weight is not f32"))?;
                let nb = g.mg.div_ceil(16);
                let r = g.cg * g.kh * g.kw;
                let mut out = vec![0f32; g.groups * nb * r * 16];
                for gi in 0..g.groups {
                    for m in 0..g.mg {
                        let (b, l) = (m / 16, m % 16);
                        for rr in 0..r {
                            let oc = gi * g.mg + m;
                            out[((gi * nb + b) * r + rr) * 16 + l] = w[oc * r + rr];
                        }
                    }
                }
                return Ok(vec![out.iter().flat_map(|x| x.to_le_bytes()).collect()]);
            }
            Ok(vec![])
        }
        Op::Gemm { trans_b, .. } => match &info.consts[1] {
            Some(b) => Ok(vec![pack_b(info, b, *trans_b)?]),
            None => Ok(vec![]),
        },
        Op::MatMul => match &info.consts[1] {
            Some(b) if b.shape().len() == 2 => Ok(vec![pack_b(info, b, false)?]),
            _ => Ok(vec![]),
        },
        Op::Pad { pads, mode, .. } => {
            let xs = &info.ins[0].shape;
            let out = &info.outs[0].shape;
            let r = xs.len();
            let es = info.ins[0].dtype.size() as i64;
            let ist = optc_ir::strides(xs);
            let mut tab: Vec<i64> = vec![];
            for d in 0..r {
                let n = xs[d] as i64;
                for i in 0..out[d] as i64 {
                    let src = mode.source_index(i, pads[d], n);
                    tab.push(src.map_or(-1, |s| s * ist[d] as i64 * es));
                }
            }
            Ok(vec![tab.iter().flat_map(|x| x.to_le_bytes()).collect()])
        }
        _ => Ok(vec![]),
    }
}

/// Columns per packed tile of a constant GEMM operand B.
const NR: usize = 8;

/// Pack a constant `B` (logically `[K, N]`, stored `[N, K]` when `trans`) into tiles of
/// `NR` columns: `packed[t][k][j] = B[k][t * NR + j]`, zero-padded to whole tiles, so the
/// GEMM inner loop walks B sequentially.
fn pack_b(info: &NodeInfo, b: &Tensor, trans: bool) -> R<Vec<u8>> {
    let v = b.as_f32().ok_or_else(|| info.err("B is not f32"))?;
    let (r, c) = (b.shape()[0], b.shape()[1]);
    let (k, n) = if trans { (c, r) } else { (r, c) };
    let tiles = n.div_ceil(NR);
    let mut p = vec![0f32; tiles * k * NR];
    for kk in 0..k {
        for j in 0..n {
            let x = if trans { v[j * c + kk] } else { v[kk * c + j] };
            p[((j / NR) * k + kk) * NR + j % NR] = x;
        }
    }
    Ok(p.iter().flat_map(|x| x.to_le_bytes()).collect())
}

// ---------------------------------------------------------------------------------------------
// Node lowering.

fn lower_node(e: &mut E, info: &NodeInfo, p: &[Value], extra: &[Value]) -> R<()> {
    let nin = info.ins.len();
    let outp = &p[nin..nin + info.outs.len()];
    let scratch = p[nin + info.outs.len()];
    let ins = &p[..nin];
    let oty = &info.outs[0];
    match info.op {
        Op::Input { .. } | Op::Constant { .. } => Ok(()),
        Op::Fused {
            base,
            base_inputs,
            steps,
        } if elementwise_base(info, base, *base_inputs) => {
            // An elementwise base is the chain's first step: one loop for the whole chain.
            let mut opds: Vec<Opd> = (0..*base_inputs)
                .map(|k| Opd::bcast(ins[k], &info.ins[k], &oty.shape))
                .collect();
            let first = match &**base {
                Op::Unary(u) => ChainStep::Unary(u.clone()),
                Op::Binary(b) => ChainStep::Binary {
                    op: *b,
                    k: 1,
                    swap: false,
                },
                _ => return Err(info.err("elementwise fused base expected")),
            };
            let mut chain = vec![first];
            chain.extend(chain_steps(info, ins, steps, &mut opds));
            fold_erf_div(info, ins, &opds, &mut chain);
            map(
                e,
                info,
                &oty.shape,
                Opd::dense(outp[0], oty),
                &opds,
                &Ew::Chain(chain),
            )
        }
        Op::Fused {
            base_inputs, steps, ..
        } => {
            // Generic path: the base kernel writes the output, then one pass applies the
            // whole step chain in registers (no intermediate tensors).
            let sub = base_info(info).ok_or_else(|| info.err("fused node without base"))?;
            let mut bp: Vec<Value> = ins[..*base_inputs].to_vec();
            bp.extend_from_slice(outp);
            bp.push(scratch);
            lower_node(e, &sub, &bp, extra)?;
            apply_chain(e, info, ins, outp[0], steps)
        }
        Op::Unary(u) => {
            let f = if *u == UnaryOp::Identity {
                Ew::Copy
            } else {
                Ew::Unary(u.clone())
            };
            let x = Opd::bcast(ins[0], &info.ins[0], &oty.shape);
            map(e, info, &oty.shape, Opd::dense(outp[0], oty), &[x], &f)
        }
        Op::Binary(bop) => {
            let f = match (bop, &info.consts[1]) {
                (BinaryOp::Pow, Some(c)) if c.numel() == 1 && info.ins[0].dtype == DType::F32 => {
                    Ew::PowConst(c.to_f64_vec()[0] as f32)
                }
                _ => Ew::Binary(*bop),
            };
            let a = Opd::bcast(ins[0], &info.ins[0], &oty.shape);
            let b = Opd::bcast(ins[1], &info.ins[1], &oty.shape);
            map(e, info, &oty.shape, Opd::dense(outp[0], oty), &[a, b], &f)
        }
        Op::Where => {
            let v: Vec<Opd> = (0..3)
                .map(|k| Opd::bcast(ins[k], &info.ins[k], &oty.shape))
                .collect();
            map(
                e,
                info,
                &oty.shape,
                Opd::dense(outp[0], oty),
                &v,
                &Ew::Where,
            )
        }
        Op::Cast { .. } => {
            let f = if info.ins[0].dtype == oty.dtype {
                Ew::Copy
            } else {
                Ew::Cast
            };
            let x = Opd::bcast(ins[0], &info.ins[0], &oty.shape);
            map(e, info, &oty.shape, Opd::dense(outp[0], oty), &[x], &f)
        }
        Op::BatchNorm { epsilon } => {
            let mut v = vec![Opd::bcast(ins[0], &info.ins[0], &oty.shape)];
            for k in 1..5 {
                let mut st = vec![0i64; oty.rank()];
                st[1] = 1;
                v.push(Opd {
                    p: ins[k],
                    dt: DType::F32,
                    base: 0,
                    strides: st,
                });
            }
            map(
                e,
                info,
                &oty.shape,
                Opd::dense(outp[0], oty),
                &v,
                &Ew::BatchNorm(*epsilon),
            )
        }
        Op::Reshape { .. } => {
            let x = Opd::dense(ins[0], &info.ins[0]);
            let n = oty.numel();
            map(
                e,
                info,
                &[n],
                Opd::dense(outp[0], &TensorType::new(oty.dtype, vec![n])),
                &[Opd {
                    strides: vec![1],
                    ..x
                }],
                &Ew::Copy,
            )
        }
        Op::Expand { .. } => {
            let x = Opd::bcast(ins[0], &info.ins[0], &oty.shape);
            map(
                e,
                info,
                &oty.shape,
                Opd::dense(outp[0], oty),
                &[x],
                &Ew::Copy,
            )
        }
        Op::Transpose { perm } => {
            let xs = elem_strides(&info.ins[0].shape);
            let st = perm.iter().map(|&q| xs[q]).collect();
            let x = Opd {
                p: ins[0],
                dt: oty.dtype,
                base: 0,
                strides: st,
            };
            map(
                e,
                info,
                &oty.shape,
                Opd::dense(outp[0], oty),
                &[x],
                &Ew::Copy,
            )
        }
        Op::Slice { dims } => {
            let xs = elem_strides(&info.ins[0].shape);
            let base = dims.iter().zip(&xs).map(|(d, s)| d.start * s).sum();
            let st = dims.iter().zip(&xs).map(|(d, s)| d.step * s).collect();
            let x = Opd {
                p: ins[0],
                dt: oty.dtype,
                base,
                strides: st,
            };
            map(
                e,
                info,
                &oty.shape,
                Opd::dense(outp[0], oty),
                &[x],
                &Ew::Copy,
            )
        }
        Op::Concat { axis } => {
            let os = elem_strides(&oty.shape);
            let mut at = 0i64;
            for (k, t) in info.ins.iter().enumerate() {
                let o = Opd {
                    p: outp[0],
                    dt: oty.dtype,
                    base: at * os[*axis],
                    strides: os.clone(),
                };
                map(e, info, &t.shape, o, &[Opd::dense(ins[k], t)], &Ew::Copy)?;
                at += t.shape[*axis] as i64;
            }
            Ok(())
        }
        Op::Split { axis, .. } => {
            let xs = elem_strides(&info.ins[0].shape);
            let mut at = 0i64;
            for (j, t) in info.outs.iter().enumerate() {
                let x = Opd {
                    p: ins[0],
                    dt: t.dtype,
                    base: at * xs[*axis],
                    strides: xs.clone(),
                };
                map(e, info, &t.shape, Opd::dense(outp[j], t), &[x], &Ew::Copy)?;
                at += t.shape[*axis] as i64;
            }
            Ok(())
        }
        Op::Pad { value, .. } => lower_pad(e, info, ins[0], outp[0], extra[0], *value),
        Op::Gather { axis } => lower_gather(e, info, ins[0], ins[1], outp[0], *axis),
        Op::MatMul => lower_matmul(e, info, ins, outp[0], extra),
        Op::Gemm { .. } => lower_gemm(e, info, ins, outp[0], extra),
        Op::Conv { .. } => lower_conv(e, info, ins, outp[0], scratch, extra),
        Op::MaxPool { window } => match maxpool2d_geom(info) {
            Some(g) => lower_maxpool2d(e, info, &g, ins[0], outp[0], scratch),
            None => lower_pool(e, info, ins[0], outp[0], window, None),
        },
        Op::AveragePool {
            window,
            count_include_pad,
        } => lower_pool(e, info, ins[0], outp[0], window, Some(*count_include_pad)),
        Op::Reduce {
            kind,
            axes,
            keepdims: _,
        } => lower_reduce(e, info, ins[0], outp[0], *kind, axes),
        Op::Softmax { axis } => lower_softmax(e, info, ins[0], outp[0], *axis),
        Op::LayerNorm { axis, epsilon } => lower_layernorm(e, info, ins, outp[0], *axis, *epsilon),
    }
}

/// Apply fused `steps` in place on the output `out` of a fused node (one pass).
/// Whether a fused node's base is an f32 elementwise op that can run as the first step
/// of its chain (Pow keeps its own kernel: constant exponents have a fast path there).
fn elementwise_base(info: &NodeInfo, base: &Op, base_inputs: usize) -> bool {
    let f32_ins = info.ins[..base_inputs]
        .iter()
        .all(|t| t.dtype == DType::F32);
    f32_ins
        && info.outs[0].dtype == DType::F32
        && match base {
            Op::Unary(u) => !matches!(u, UnaryOp::Not | UnaryOp::IsNaN | UnaryOp::Identity),
            Op::Binary(b) => matches!(
                b,
                BinaryOp::Add
                    | BinaryOp::Sub
                    | BinaryOp::Mul
                    | BinaryOp::Div
                    | BinaryOp::Max
                    | BinaryOp::Min
            ),
            _ => false,
        }
}

/// The fused `steps` as a chain over `opds`: each extra input a step reads is appended to
/// `opds` once (broadcast to the output) and referred to by its position there.
fn chain_steps(
    info: &NodeInfo,
    ins: &[Value],
    steps: &[FusedStep],
    opds: &mut Vec<Opd>,
) -> Vec<ChainStep> {
    let oty = &info.outs[0];
    let mut kmap: HashMap<usize, usize> = HashMap::new();
    steps
        .iter()
        .map(|st| match st {
            FusedStep::Unary(u) => ChainStep::Unary(u.clone()),
            FusedStep::Binary { op, input, swap } => {
                let k = *kmap.entry(*input).or_insert_with(|| {
                    opds.push(Opd::bcast(ins[*input], &info.ins[*input], &oty.shape));
                    opds.len() - 1
                });
                ChainStep::Binary {
                    op: *op,
                    k,
                    swap: *swap,
                }
            }
        })
        .collect()
}

pub(crate) fn apply_chain(
    e: &mut E,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    steps: &[FusedStep],
) -> R<()> {
    if steps.is_empty() {
        return Ok(());
    }
    let oty = &info.outs[0];
    let mut opds = vec![Opd::dense(out, oty)];
    let mut chain = chain_steps(info, ins, steps, &mut opds);
    fold_erf_div(info, ins, &opds, &mut chain);
    map(
        e,
        info,
        &oty.shape,
        Opd::dense(out, oty),
        &opds,
        &Ew::Chain(chain),
    )
}

fn elem_strides(shape: &[usize]) -> Vec<i64> {
    optc_ir::strides(shape).iter().map(|&s| s as i64).collect()
}

/// An operand of an index-mapped loop: pointer, dtype, base element offset and element strides
/// per loop dim (0 = broadcast, negative allowed).
#[derive(Clone)]
pub(crate) struct Opd {
    pub p: Value,
    pub dt: DType,
    pub base: i64,
    pub strides: Vec<i64>,
}

impl Opd {
    pub fn dense(p: Value, ty: &TensorType) -> Opd {
        Opd {
            p,
            dt: ty.dtype,
            base: 0,
            strides: elem_strides(&ty.shape),
        }
    }
    /// `ty` broadcast (numpy, right-aligned) to `out`.
    pub fn bcast(p: Value, ty: &TensorType, out: &[usize]) -> Opd {
        Opd {
            p,
            dt: ty.dtype,
            base: 0,
            strides: bcast_strides(&ty.shape, out),
        }
    }
}

fn bcast_strides(shape: &[usize], out: &[usize]) -> Vec<i64> {
    let s = elem_strides(shape);
    let r = out.len();
    let k = shape.len();
    (0..r)
        .map(|i| {
            if i + k < r {
                0
            } else {
                let j = i + k - r;
                if shape[j] == 1 && out[i] != 1 {
                    0
                } else {
                    s[j]
                }
            }
        })
        .collect()
}

/// Elementwise functions of a `map`.
#[derive(Clone, Debug)]
pub(crate) enum Ew {
    Copy,
    Unary(UnaryOp),
    Binary(BinaryOp),
    PowConst(f32),
    Where,
    Cast,
    BatchNorm(f32),
    /// `out = a + beta * b` (Gemm's C term).
    AddScaled(f32),
    /// `erf(x * r)`.
    ErfMul(f32),
    /// `isnan(b) ? a : b` (a fused `Where(IsNaN(b), a, b)`).
    NanTo,
    /// A fused step chain on f32: operand 0 is the running value, each step applies a
    /// unary op or a binary op with operand `k` (swapped: `operand op acc`).
    Chain(Vec<ChainStep>),
}

#[derive(Clone, Debug)]
pub(crate) enum ChainStep {
    Unary(UnaryOp),
    Binary {
        op: BinaryOp,
        k: usize,
        swap: bool,
    },
    /// `erf(acc / c)` for a constant `c`, evaluated as `erf(acc * r)` with `r = 1/c` (see
    /// `fold_erf_div`).
    ErfMul(f32),
}

/// Replace `acc / c` followed by `erf` (GELU's `erf(x / sqrt 2)`) by one `ErfMul(1/c)` step
/// when `c` is a finite, nonzero scalar constant: a multiply instead of a divide. `erf(x * r)`
/// differs from `erf(fl(x / c))` by under 1.5 ulp of the argument, which moves erf by at most
/// 1.5 * 2^-24 relative (`|y erf'(y)| <= erf(y)`); with `E::erf`'s own 3.3e-7 the step stays
/// within 5e-7 relative (`erf_of_quotient_error_bound`).
fn fold_erf_div(info: &NodeInfo, ins: &[Value], opds: &[Opd], chain: &mut Vec<ChainStep>) {
    let mut i = 0;
    while i + 1 < chain.len() {
        let r = match (&chain[i], &chain[i + 1]) {
            (
                ChainStep::Binary {
                    op: BinaryOp::Div,
                    k,
                    swap: false,
                },
                ChainStep::Unary(UnaryOp::Erf),
            ) => ins
                .iter()
                .position(|&v| v == opds[*k].p)
                .and_then(|j| info.consts[j].as_ref())
                .filter(|c| c.dtype() == DType::F32 && c.numel() == 1)
                .map(|c| c.to_f64_vec()[0])
                .filter(|c| c.is_finite() && *c != 0.0)
                .map(|c| (1.0 / c) as f32)
                .filter(|r| r.is_normal()),
            _ => None,
        };
        if let Some(r) = r {
            chain.splice(i..i + 2, [ChainStep::ErfMul(r)]);
        }
        i += 1;
    }
}

/// Evaluate a chain with `one(f, args)` computing one unfused op.
fn eval_chain<X: Copy>(
    steps: &[ChainStep],
    args: &[X],
    mut one: impl FnMut(&Ew, &[X]) -> Option<X>,
) -> Option<X> {
    let mut acc = args[0];
    for st in steps {
        acc = match st {
            ChainStep::Unary(u) => one(&Ew::Unary(u.clone()), &[acc])?,
            ChainStep::ErfMul(r) => one(&Ew::ErfMul(*r), &[acc])?,
            ChainStep::Binary { op, k, swap } => {
                let pair = if *swap {
                    [args[*k], acc]
                } else {
                    [acc, args[*k]]
                };
                one(&Ew::Binary(*op), &pair)?
            }
        };
    }
    Some(acc)
}

fn ew_vectorizable(f: &Ew, dts: &[DType], out: DType) -> bool {
    if matches!(f, Ew::Copy) {
        return true;
    }
    if out != DType::F32 || dts.iter().any(|&d| d != DType::F32) {
        return false;
    }
    match f {
        Ew::Unary(u) => !matches!(u, UnaryOp::Log | UnaryOp::Not | UnaryOp::IsNaN),
        Ew::Binary(b) => matches!(
            b,
            BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Max
                | BinaryOp::Min
        ),
        Ew::PowConst(c) => [1.0, 2.0, 3.0, 0.5].contains(c),
        Ew::BatchNorm(_) | Ew::AddScaled(_) | Ew::ErfMul(_) | Ew::NanTo => true,
        Ew::Chain(steps) => steps.iter().all(|st| match st {
            ChainStep::Unary(u) => {
                ew_vectorizable(&Ew::Unary(u.clone()), &[DType::F32], DType::F32)
            }
            ChainStep::Binary { op, .. } => {
                ew_vectorizable(&Ew::Binary(*op), &[DType::F32, DType::F32], DType::F32)
            }
            ChainStep::ErfMul(_) => true,
        }),
        _ => false,
    }
}

/// Float elementwise math on scalar `F32` or `F32X4` values.
fn ew_float(e: &mut E, ty: Type, f: &Ew, a: &[Value]) -> Option<Value> {
    if let Ew::Chain(steps) = f {
        return eval_chain(steps, a, |g, v| ew_float(e, ty, g, v));
    }
    let x = a[0];
    Some(match f {
        Ew::Unary(u) => match u {
            UnaryOp::Identity => x,
            UnaryOp::Relu => {
                let z = e.fc(ty, 0.0);
                e.clamp_lo(ty, x, z)
            }
            UnaryOp::LeakyRelu { alpha } => {
                let z = e.fc(ty, 0.0);
                let al = e.fc(ty, *alpha);
                let m = e.b.ins().fmul(x, al);
                let c = e.b.ins().fcmp(FloatCC::LessThan, x, z);
                e.fsel(ty, c, m, x)
            }
            UnaryOp::Clip { min, max } => {
                let mut v = x;
                if *min > f32::NEG_INFINITY {
                    let lo = e.fc(ty, *min);
                    v = e.clamp_lo(ty, v, lo);
                }
                if *max < f32::INFINITY {
                    let hi = e.fc(ty, *max);
                    v = e.clamp_hi(ty, v, hi);
                }
                v
            }
            UnaryOp::Sigmoid => e.sigmoid(ty, x),
            UnaryOp::HardSigmoid { alpha, beta } => {
                let al = e.fc(ty, *alpha);
                let be = e.fc(ty, *beta);
                let v = e.mul_add(x, al, be);
                let z = e.fc(ty, 0.0);
                let o = e.fc(ty, 1.0);
                let v = e.clamp_hi(ty, v, o);
                e.clamp_lo(ty, v, z)
            }
            UnaryOp::HardSwish => {
                let six = e.fc(ty, 6.0);
                let h = e.fc(ty, 0.5);
                let d = e.b.ins().fdiv(x, six);
                let v = e.b.ins().fadd(d, h);
                let z = e.fc(ty, 0.0);
                let o = e.fc(ty, 1.0);
                let v = e.clamp_hi(ty, v, o);
                let v = e.clamp_lo(ty, v, z);
                e.b.ins().fmul(x, v)
            }
            UnaryOp::Tanh => e.tanh(ty, x),
            UnaryOp::Erf => e.erf(ty, x),
            UnaryOp::Exp => e.exp(ty, x),
            UnaryOp::Log => {
                if ty.is_vector() {
                    return None;
                }
                let f = e.rt.logf;
                e.call1(f, x)
            }
            UnaryOp::Sqrt => e.b.ins().sqrt(x),
            UnaryOp::Neg => e.b.ins().fneg(x),
            UnaryOp::Abs => e.b.ins().fabs(x),
            UnaryOp::Not | UnaryOp::IsNaN => return None,
        },
        Ew::Binary(b) => {
            let y = a[1];
            match b {
                BinaryOp::Add => e.b.ins().fadd(x, y),
                BinaryOp::Sub => e.b.ins().fsub(x, y),
                BinaryOp::Mul => e.b.ins().fmul(x, y),
                BinaryOp::Div => e.b.ins().fdiv(x, y),
                BinaryOp::Max => e.b.ins().fmax(x, y),
                BinaryOp::Min => e.b.ins().fmin(x, y),
                BinaryOp::Pow if !ty.is_vector() => {
                    let f = e.rt.powf;
                    e.call2(f, x, y)
                }
                _ => return None,
            }
        }
        Ew::NanTo => {
            let m = e.b.ins().fcmp(FloatCC::Unordered, a[1], a[1]);
            e.fsel(ty, m, x, a[1])
        }
        Ew::ErfMul(r) => {
            let rv = e.fc(ty, *r);
            let y = e.b.ins().fmul(x, rv);
            e.erf(ty, y)
        }
        Ew::PowConst(c) => {
            if *c == 1.0 {
                x
            } else if *c == 2.0 {
                e.b.ins().fmul(x, x)
            } else if *c == 3.0 {
                let x2 = e.b.ins().fmul(x, x);
                e.b.ins().fmul(x2, x)
            } else if *c == 0.5 {
                e.b.ins().sqrt(x)
            } else if ty.is_vector() {
                return None;
            } else {
                let f = e.rt.powf;
                let cv = e.fc(ty, *c);
                e.call2(f, x, cv)
            }
        }
        Ew::BatchNorm(eps) => {
            let (sc, bi, mean, var) = (a[1], a[2], a[3], a[4]);
            let ep = e.fc(ty, *eps);
            let v = e.b.ins().fadd(var, ep);
            let sd = e.b.ins().sqrt(v);
            let d = e.b.ins().fsub(x, mean);
            let n = e.b.ins().fdiv(d, sd);
            e.mul_add(n, sc, bi)
        }
        Ew::AddScaled(beta) => {
            let bt = e.fc(ty, *beta);
            e.mul_add(a[1], bt, x)
        }
        _ => return None,
    })
}

fn is_signed(dt: DType) -> bool {
    matches!(dt, DType::I64 | DType::I32 | DType::I8)
}

/// Scalar elementwise function on native values (`clty` of each dtype).
fn ew_scalar(
    e: &mut E,
    info: &NodeInfo,
    f: &Ew,
    a: &[Value],
    dts: &[DType],
    out: DType,
) -> R<Value> {
    if matches!(f, Ew::Copy) {
        return Ok(a[0]);
    }
    if let Ew::Chain(steps) = f {
        let mut err = None;
        let r = eval_chain(steps, a, |g, v| {
            match ew_scalar(e, info, g, v, &vec![DType::F32; v.len()], DType::F32) {
                Ok(x) => Some(x),
                Err(x) => {
                    err.get_or_insert(x);
                    None
                }
            }
        });
        return r.ok_or_else(|| err.unwrap_or_else(|| info.err("fused step chain")));
    }
    if dts[0] == DType::F32 && out == DType::F32 && !matches!(f, Ew::Cast | Ew::Where) {
        let mut args = a.to_vec();
        if let Ew::Binary(BinaryOp::Pow) = f {
            if dts[1] != DType::F32 {
                args[1] = int_to_f32(e, a[1], dts[1]);
            }
        }
        if let Some(v) = ew_float(e, types::F32, f, &args) {
            return Ok(v);
        }
    }
    let x = a[0];
    let dt = dts[0];
    let ty = clty(dt);
    let sg = is_signed(dt);
    let v = match f {
        Ew::Unary(u) => match u {
            UnaryOp::IsNaN => e.b.ins().fcmp(FloatCC::Unordered, x, x),
            UnaryOp::Not => e.b.ins().bxor_imm_s(x, 1),
            UnaryOp::Identity => x,
            UnaryOp::Relu => {
                let z = e.b.ins().iconst(ty, 0);
                if sg {
                    e.b.ins().smax(x, z)
                } else {
                    x
                }
            }
            UnaryOp::Neg => e.b.ins().ineg(x),
            UnaryOp::Abs => {
                if sg {
                    e.b.ins().iabs(x)
                } else {
                    x
                }
            }
            UnaryOp::Clip { min, max } => {
                let (lo, hi) = int_range(dt);
                let mut v = x;
                if *min > lo as f32 {
                    let l = (*min as f64).clamp(lo as f64, hi as f64) as i64;
                    let c = e.b.ins().iconst(ty, l);
                    v = if sg {
                        e.b.ins().smax(v, c)
                    } else {
                        e.b.ins().umax(v, c)
                    };
                }
                if *max < hi as f32 {
                    let h = (*max as f64).clamp(lo as f64, hi as f64) as i64;
                    let c = e.b.ins().iconst(ty, h);
                    v = if sg {
                        e.b.ins().smin(v, c)
                    } else {
                        e.b.ins().umin(v, c)
                    };
                }
                v
            }
            _ => return Err(info.err(format!("{} does not take {}", info.op.name(), dt))),
        },
        Ew::Binary(b) => {
            let y = a[1];
            if dt == DType::F32 {
                let cc = match b {
                    BinaryOp::Equal => FloatCC::Equal,
                    BinaryOp::Greater => FloatCC::GreaterThan,
                    BinaryOp::Less => FloatCC::LessThan,
                    BinaryOp::GreaterOrEqual => FloatCC::GreaterThanOrEqual,
                    BinaryOp::LessOrEqual => FloatCC::LessThanOrEqual,
                    _ => return Err(info.err(format!("unsupported f32 op {b:?}"))),
                };
                e.b.ins().fcmp(cc, x, y)
            } else {
                let cmp = |s: IntCC, u: IntCC| if sg { s } else { u };
                match b {
                    BinaryOp::Add => e.b.ins().iadd(x, y),
                    BinaryOp::Sub => e.b.ins().isub(x, y),
                    BinaryOp::Mul => e.b.ins().imul(x, y),
                    BinaryOp::Div => {
                        let z = e.b.ins().icmp_imm_s(IntCC::Equal, y, 0);
                        e.fail_if(z, RuntimeError::DivisionByZero);
                        if sg {
                            let m1 = e.b.ins().icmp_imm_s(IntCC::Equal, y, -1);
                            let one = e.b.ins().iconst(ty, 1);
                            let ys = e.b.ins().select(m1, one, y);
                            let q = e.b.ins().sdiv(x, ys);
                            let nx = e.b.ins().ineg(x);
                            e.b.ins().select(m1, nx, q)
                        } else {
                            e.b.ins().udiv(x, y)
                        }
                    }
                    BinaryOp::Max => {
                        if sg {
                            e.b.ins().smax(x, y)
                        } else {
                            e.b.ins().umax(x, y)
                        }
                    }
                    BinaryOp::Min => {
                        if sg {
                            e.b.ins().smin(x, y)
                        } else {
                            e.b.ins().umin(x, y)
                        }
                    }
                    BinaryOp::Equal => e.b.ins().icmp(IntCC::Equal, x, y),
                    BinaryOp::Greater => e.b.ins().icmp(
                        cmp(IntCC::SignedGreaterThan, IntCC::UnsignedGreaterThan),
                        x,
                        y,
                    ),
                    BinaryOp::Less => {
                        e.b.ins()
                            .icmp(cmp(IntCC::SignedLessThan, IntCC::UnsignedLessThan), x, y)
                    }
                    BinaryOp::GreaterOrEqual => e.b.ins().icmp(
                        cmp(
                            IntCC::SignedGreaterThanOrEqual,
                            IntCC::UnsignedGreaterThanOrEqual,
                        ),
                        x,
                        y,
                    ),
                    BinaryOp::LessOrEqual => e.b.ins().icmp(
                        cmp(IntCC::SignedLessThanOrEqual, IntCC::UnsignedLessThanOrEqual),
                        x,
                        y,
                    ),
                    BinaryOp::And => e.b.ins().band(x, y),
                    BinaryOp::Or => e.b.ins().bor(x, y),
                    BinaryOp::Pow => {
                        let x64 = cast(e, x, dt, DType::I64);
                        let edt = dts[1];
                        let (ef, is_int, ei) = if edt == DType::F32 {
                            let ef = e.b.ins().fpromote(types::F64, y);
                            (ef, 0, e.ic(0))
                        } else {
                            let ei = cast(e, y, edt, DType::I64);
                            let ef = e.b.ins().fcvt_from_sint(types::F64, ei);
                            (ef, 1, ei)
                        };
                        let (lo, hi) = int_range(dt);
                        let isi = e.b.ins().iconst(types::I32, is_int);
                        let lo = e.ic(lo);
                        let hi = e.ic(hi);
                        let f = e.rt.powi;
                        let c = e.b.ins().call(f, &[x64, ef, isi, ei, lo, hi]);
                        let r = e.b.inst_results(c)[0];
                        if ty == types::I64 {
                            r
                        } else {
                            e.b.ins().ireduce(ty, r)
                        }
                    }
                }
            }
        }
        Ew::Where => e.b.ins().select(a[0], a[1], a[2]),
        Ew::Cast => cast(e, x, dt, out),
        _ => return Err(info.err(format!("unsupported elementwise op on {dt}"))),
    };
    Ok(v)
}

fn int_range(dt: DType) -> (i64, i64) {
    match dt {
        DType::I64 => (i64::MIN, i64::MAX),
        DType::I32 => (i32::MIN as i64, i32::MAX as i64),
        DType::I8 => (-128, 127),
        DType::U8 => (0, 255),
        _ => (0, 1),
    }
}

fn int_to_f32(e: &mut E, x: Value, dt: DType) -> Value {
    match dt {
        DType::F32 => x,
        DType::I64 | DType::I32 => e.b.ins().fcvt_from_sint(types::F32, x),
        DType::I8 => {
            let w = e.b.ins().sextend(types::I32, x);
            e.b.ins().fcvt_from_sint(types::F32, w)
        }
        DType::U8 | DType::Bool => {
            let w = e.b.ins().uextend(types::I32, x);
            e.b.ins().fcvt_from_sint(types::F32, w)
        }
    }
}

/// `Cast` semantics (see the interpreter): float→int truncates and saturates (NaN → 0),
/// int→int wraps, anything→bool is `x != 0`, bool→number is 0/1.
fn cast(e: &mut E, x: Value, from: DType, to: DType) -> Value {
    if from == to {
        return x;
    }
    let tt = clty(to);
    if to == DType::Bool {
        return if from == DType::F32 {
            let z = e.fc(types::F32, 0.0);
            e.b.ins().fcmp(FloatCC::NotEqual, x, z)
        } else {
            e.b.ins().icmp_imm_s(IntCC::NotEqual, x, 0)
        };
    }
    if to == DType::F32 {
        return int_to_f32(e, x, from);
    }
    if from == DType::F32 {
        return match to {
            DType::I64 | DType::I32 => e.b.ins().fcvt_to_sint_sat(tt, x),
            _ => {
                let w = e.b.ins().fcvt_to_sint_sat(types::I32, x);
                let (lo, hi) = int_range(to);
                let l = e.b.ins().iconst(types::I32, lo);
                let h = e.b.ins().iconst(types::I32, hi);
                let w = e.b.ins().smax(w, l);
                let w = e.b.ins().smin(w, h);
                e.b.ins().ireduce(types::I8, w)
            }
        };
    }
    // int/bool → int
    let fb = clty(from).bits();
    let tb = tt.bits();
    if fb == tb {
        x
    } else if fb > tb {
        e.b.ins().ireduce(tt, x)
    } else if is_signed(from) {
        e.b.ins().sextend(tt, x)
    } else {
        e.b.ins().uextend(tt, x)
    }
}

/// Drop size-1 dims and merge dims that are contiguous for every operand.
fn collapse(shape: &[usize], ops: &mut [&mut Vec<i64>]) -> Vec<usize> {
    let mut dims: Vec<usize> = vec![];
    let mut st: Vec<Vec<i64>> = vec![vec![]; ops.len()];
    for (d, &n) in shape.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let can_merge = !dims.is_empty()
            && ops.iter().enumerate().all(|(k, o)| {
                let last = *st[k].last().unwrap_or(&0);
                last == o[d] * n as i64
            });
        if can_merge {
            let l = dims.len() - 1;
            dims[l] *= n;
            for (k, o) in ops.iter().enumerate() {
                let l2 = st[k].len() - 1;
                st[k][l2] = o[d];
            }
        } else {
            dims.push(n);
            for (k, o) in ops.iter().enumerate() {
                st[k].push(o[d]);
            }
        }
    }
    for (k, o) in ops.iter_mut().enumerate() {
        **o = std::mem::take(&mut st[k]);
    }
    dims
}

/// Lanes of the vector path of an elementwise function over bools mixed with f32 (`Where`
/// with a bool condition, `IsNaN`: 4 lanes) or over bools only (`And`/`Or`: 16 lanes).
/// Bool vectors are `I32X4` lanes of 0/1 (4 lanes) or `I8X16` bytes (16 lanes).
fn mixed_lanes(f: &Ew, dts: &[DType], out: DType) -> Option<i64> {
    use DType::{Bool, F32};
    match f {
        Ew::Where if dts == [Bool, F32, F32] && out == F32 => Some(4),
        Ew::Unary(UnaryOp::IsNaN) if dts == [F32] && out == Bool => Some(4),
        Ew::Binary(BinaryOp::And | BinaryOp::Or) if dts == [Bool, Bool] && out == Bool => Some(16),
        _ => None,
    }
}

fn le() -> MemFlagsData {
    MemFlagsData::new().with_endianness(cranelift_codegen::ir::Endianness::Little)
}

/// Load one vector of a `mixed_lanes` path from `p + off` (`bcast`: one element, splatted).
fn vload_mixed(e: &mut E, dt: DType, lanes: i64, p: Value, off: Value, bcast: bool) -> Value {
    match (dt, lanes, bcast) {
        (DType::F32, _, false) => e.ld(F32X4, p, off),
        (DType::F32, _, true) => {
            let s = e.ld(types::F32, p, off);
            e.b.ins().splat(F32X4, s)
        }
        (_, 16, false) => e.ld(types::I8X16, p, off),
        (_, 16, true) => {
            let s = e.ld(types::I8, p, off);
            e.b.ins().splat(types::I8X16, s)
        }
        (_, _, false) => {
            let w = e.ld(types::I32, p, off);
            let v = e.b.ins().scalar_to_vector(types::I32X4, w);
            let v = e.b.ins().bitcast(types::I8X16, le(), v);
            let v = e.b.ins().uwiden_low(v);
            e.b.ins().uwiden_low(v)
        }
        (_, _, true) => {
            let s = e.ld(types::I8, p, off);
            let w = e.b.ins().uextend(types::I32, s);
            e.b.ins().splat(types::I32X4, w)
        }
    }
}

/// Store one vector of a `mixed_lanes` path (bool `I32X4` lanes of 0/1 narrow to 4 bytes).
fn vstore_mixed(e: &mut E, dt: DType, lanes: i64, v: Value, p: Value, off: Value) {
    if dt == DType::F32 || lanes == 16 {
        e.st(v, p, off);
        return;
    }
    let h = e.b.ins().snarrow(v, v);
    let b = e.b.ins().snarrow(h, h);
    let w = e.b.ins().bitcast(types::I32X4, le(), b);
    let w = e.b.ins().extractlane(w, 0);
    e.st(w, p, off);
}

/// The function of a `mixed_lanes` path on loaded vectors.
fn ew_mixed(e: &mut E, f: &Ew, a: &[Value]) -> Value {
    match f {
        Ew::Where => {
            let z = e.i32c(I32X4, 0);
            let m = e.b.ins().icmp(IntCC::NotEqual, a[0], z);
            let m = e.b.ins().bitcast(F32X4, MemFlagsData::new(), m);
            e.b.ins().bitselect(m, a[1], a[2])
        }
        Ew::Unary(_) => {
            // IsNaN: all-ones lanes where unordered, then 0/1.
            let m = e.b.ins().fcmp(FloatCC::Unordered, a[0], a[0]);
            let one = e.i32c(I32X4, 1);
            e.b.ins().band(m, one)
        }
        Ew::Binary(BinaryOp::And) => e.b.ins().band(a[0], a[1]),
        _ => e.b.ins().bor(a[0], a[1]),
    }
}

/// A 4-byte copy whose output is contiguous along the inner dim while the input is
/// contiguous along an outer dim `j` (a transpose of the two): 4x4 tiles, four f32x4 loads
/// along `j`, an in-register transpose (unpack lo/hi of dwords, then of qwords), four stores.
/// Returns false (emitting nothing) when the shape does not fit.
#[allow(clippy::too_many_arguments)]
fn copy_4x4_tiles(
    e: &mut E,
    dims: &[usize],
    inner: usize,
    outer_st: &[Vec<i64>],
    inner_st: &[i64],
    es: &[i64],
    base: &[Value],
    ptrs: &[Value],
) -> bool {
    if es != [4, 4]
        || inner_st[0] != 4
        || inner_st[1] == 4
        || inner_st[1] == 0
        || !inner.is_multiple_of(4)
    {
        return false;
    }
    let Some(j) = (0..dims.len()).find(|&j| outer_st[1][j] == 4 && dims[j].is_multiple_of(4))
    else {
        return false;
    };
    let rest: Vec<usize> = (0..dims.len()).filter(|&d| d != j).collect();
    let rdims: Vec<usize> = rest.iter().map(|&d| dims[d]).collect();
    let rst: Vec<Vec<i64>> = outer_st
        .iter()
        .map(|s| rest.iter().map(|&d| s[d]).collect())
        .collect();
    let (ojs, ins_) = (outer_st[0][j], inner_st[1]);
    let shuf = |e: &mut E, a: Value, b: Value, lanes: [u8; 4], dq: bool| -> Value {
        // Bytes of `a` are 0..16, of `b` 16..32; `lanes` are dword (or qword, `dq`) indices.
        let mut m = [0u8; 16];
        for (k, &l) in lanes.iter().enumerate() {
            if dq {
                if k < 2 {
                    for t in 0..8 {
                        m[k * 8 + t] = l * 8 + t as u8;
                    }
                }
            } else {
                for t in 0..4 {
                    m[k * 4 + t] = l * 4 + t as u8;
                }
            }
        }
        let imm = e.b.func.dfg.immediates.push(m.to_vec().into());
        e.b.ins().shuffle(a, b, imm)
    };
    e.nest(&rdims, &rst, base, &mut |e, offs| {
        e.loop_offs(
            (dims[j] / 4) as i64,
            offs,
            &[4 * ojs, 16],
            &mut |e, _i, o1| {
                e.loop_offs((inner / 4) as i64, o1, &[16, 4 * ins_], &mut |e, _k, o| {
                    let a: Vec<Value> = (0..4)
                        .map(|k| {
                            let off = e.b.ins().iadd_imm_s(o[1], k * ins_);
                            let v = e.ld(F32X4, ptrs[1], off);
                            e.b.ins().bitcast(types::I8X16, le(), v)
                        })
                        .collect();
                    // dword unpacks: t0 = a0.0 a1.0 a0.1 a1.1, t2 = a0.2 a1.2 a0.3 a1.3, ...
                    let t0 = shuf(e, a[0], a[1], [0, 4, 1, 5], false);
                    let t1 = shuf(e, a[2], a[3], [0, 4, 1, 5], false);
                    let t2 = shuf(e, a[0], a[1], [2, 6, 3, 7], false);
                    let t3 = shuf(e, a[2], a[3], [2, 6, 3, 7], false);
                    let r = [
                        shuf(e, t0, t1, [0, 2, 0, 0], true),
                        shuf(e, t0, t1, [1, 3, 0, 0], true),
                        shuf(e, t2, t3, [0, 2, 0, 0], true),
                        shuf(e, t2, t3, [1, 3, 0, 0], true),
                    ];
                    for (k, &v) in r.iter().enumerate() {
                        let off = e.b.ins().iadd_imm_s(o[0], k as i64 * ojs);
                        let v = e.b.ins().bitcast(F32X4, le(), v);
                        e.st(v, ptrs[0], off);
                    }
                });
            },
        );
    });
    true
}

/// Generic index-mapped elementwise loop: `out[i] = f(ins[k][i]...)` over `shape`.
pub(crate) fn map(
    e: &mut E,
    info: &NodeInfo,
    shape: &[usize],
    out: Opd,
    ins: &[Opd],
    f: &Ew,
) -> R<()> {
    if shape.iter().product::<usize>() == 0 {
        return Ok(());
    }
    let mut ops: Vec<Opd> = std::iter::once(out).chain(ins.iter().cloned()).collect();
    // A task's part of a split node: a slice along `dim`, at a run-time offset.
    let split = e.split.clone().filter(|sp| sp.shape.as_slice() == shape);
    let mut part_shape = shape.to_vec();
    let mut rt_base: Option<Vec<Value>> = None;
    if let Some(sp) = &split {
        let part = shape[sp.dim] / sp.parts;
        part_shape[sp.dim] = part;
        let v = ops
            .iter()
            .map(|o| {
                e.b.ins()
                    .imul_imm_s(sp.t, part as i64 * o.strides[sp.dim] * o.dt.size() as i64)
            })
            .collect();
        rt_base = Some(v);
    }
    let shape = part_shape.as_slice();
    let dims = {
        let mut refs: Vec<&mut Vec<i64>> = ops.iter_mut().map(|o| &mut o.strides).collect();
        collapse(shape, &mut refs)
    };
    let (dims, inner) = if dims.is_empty() {
        (vec![], 1usize)
    } else {
        (dims[..dims.len() - 1].to_vec(), dims[dims.len() - 1])
    };
    let nd = dims.len();
    // Byte strides of outer dims, inner stride separately.
    let es: Vec<i64> = ops.iter().map(|o| o.dt.size() as i64).collect();
    let outer_st: Vec<Vec<i64>> = ops
        .iter()
        .zip(&es)
        .map(|(o, s)| o.strides[..nd].iter().map(|x| x * s).collect())
        .collect();
    let inner_st: Vec<i64> = ops
        .iter()
        .zip(&es)
        .map(|(o, s)| o.strides.get(nd).copied().unwrap_or(0) * s)
        .collect();
    let mut base: Vec<Value> = ops.iter().zip(&es).map(|(o, s)| e.ic(o.base * s)).collect();
    if let Some(rb) = &rt_base {
        for (b, r) in base.iter_mut().zip(rb) {
            *b = e.b.ins().iadd(*b, *r);
        }
    }
    let dts: Vec<DType> = ops[1..].iter().map(|o| o.dt).collect();
    let odt = ops[0].dt;
    let ptrs: Vec<Value> = ops.iter().map(|o| o.p).collect();
    if matches!(f, Ew::Copy)
        && rt_base.is_none()
        && copy_4x4_tiles(e, &dims, inner, &outer_st, &inner_st, &es, &base, &ptrs)
    {
        return Ok(());
    }
    // Vector path: contiguous output, every input contiguous or broadcast along the inner dim.
    let mixed = mixed_lanes(f, &dts, odt);
    let lanes: i64 = match (f, mixed) {
        (_, Some(l)) => l,
        (Ew::Copy, _) => 16 / es[0],
        _ => 4,
    };
    let vec_ok = (mixed.is_some() || ew_vectorizable(f, &dts, odt))
        && inner as i64 >= lanes
        && inner_st[0] == es[0]
        && inner_st[1..]
            .iter()
            .zip(&es[1..])
            .all(|(&s, &z)| s == 0 || s == z);
    let vty = match es[0] {
        1 => types::I8X16,
        2 => types::I16X8,
        8 => types::I64X2,
        _ => F32X4,
    };
    let vty = if matches!(f, Ew::Copy) { vty } else { F32X4 };
    // Vector path: an input broadcast along every dim is loaded and splatted once, before
    // the loops.
    let mut hoisted: Vec<Option<Value>> = vec![None; ops.len()];
    if vec_ok {
        for k in 1..ops.len() {
            if inner_st[k] == 0 && outer_st[k].iter().all(|&s| s == 0) {
                hoisted[k] = Some(if mixed.is_some() {
                    vload_mixed(e, dts[k - 1], lanes, ptrs[k], base[k], true)
                } else {
                    let s = e.ld(vty.lane_type(), ptrs[k], base[k]);
                    e.b.ins().splat(vty, s)
                });
            }
        }
    }
    let mut err: Option<CodegenError> = None;
    e.nest(&dims, &outer_st, &base, &mut |e, offs| {
        let mut rem_offs = offs.to_vec();
        let mut rem = inner as i64;
        if vec_ok {
            let nv = inner as i64 / lanes;
            let steps: Vec<i64> = inner_st.iter().map(|s| s * lanes).collect();
            e.loop_offs(nv, offs, &steps, &mut |e, _i, o| {
                let mut args = vec![];
                for k in 1..o.len() {
                    let v = if let Some(h) = hoisted[k] {
                        h
                    } else if mixed.is_some() {
                        vload_mixed(e, dts[k - 1], lanes, ptrs[k], o[k], inner_st[k] == 0)
                    } else if inner_st[k] == 0 {
                        let s = e.ld(vty.lane_type(), ptrs[k], o[k]);
                        e.b.ins().splat(vty, s)
                    } else {
                        e.ld(vty, ptrs[k], o[k])
                    };
                    args.push(v);
                }
                if mixed.is_some() {
                    let r = ew_mixed(e, f, &args);
                    vstore_mixed(e, odt, lanes, r, ptrs[0], o[0]);
                    return;
                }
                let r = if matches!(f, Ew::Copy) {
                    Some(args[0])
                } else {
                    ew_float(e, F32X4, f, &args)
                };
                if let Some(r) = r {
                    e.st(r, ptrs[0], o[0]);
                }
            });
            rem = inner as i64 % lanes;
            rem_offs = offs
                .iter()
                .zip(&inner_st)
                .map(|(&o, &s)| e.b.ins().iadd_imm_s(o, s * nv * lanes))
                .collect();
        }
        e.loop_offs(rem, &rem_offs, &inner_st, &mut |e, _i, o| {
            let mut args = vec![];
            for k in 1..o.len() {
                args.push(e.ld(clty(dts[k - 1]), ptrs[k], o[k]));
            }
            match ew_scalar(e, info, f, &args, &dts, odt) {
                Ok(r) => e.st(r, ptrs[0], o[0]),
                Err(x) => {
                    if err.is_none() {
                        err = Some(x);
                    }
                }
            }
        });
    });
    match err {
        Some(x) => Err(x),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// Data movement with index tables and gathers.

fn lower_pad(e: &mut E, info: &NodeInfo, x: Value, out: Value, tab: Value, value: f32) -> R<()> {
    let oty = &info.outs[0];
    if oty.numel() == 0 {
        return Ok(());
    }
    let dt = oty.dtype;
    let ty = clty(dt);
    let es = dt.size() as i64;
    let fillf = e.fc(types::F32, value);
    let fill = cast(e, fillf, DType::F32, dt);
    let shape = oty.shape.clone();
    let mut tab_off = vec![];
    let mut acc = 0i64;
    for &n in &shape {
        tab_off.push(acc);
        acc += n as i64 * 8;
    }
    let ost = elem_strides(&shape);
    let in_empty = info.ins[0].numel() == 0;
    #[allow(clippy::too_many_arguments)]
    fn rec(
        e: &mut E,
        d: usize,
        shape: &[usize],
        tab_off: &[i64],
        ost: &[i64],
        es: i64,
        p: (Value, Value, Value),
        st: (Value, Value, Value),
        leaf: &mut dyn FnMut(&mut E, Value, Value, Value),
    ) {
        if d == shape.len() {
            leaf(e, st.0, st.1, st.2);
            return;
        }
        let tab = p.2;
        let (ooff, ioff, valid) = st;
        let step = ost[d] * es;
        let tstart = e.ic(tab_off[d]);
        e.loop_offs(
            shape[d] as i64,
            &[ooff, tstart],
            &[step, 8],
            &mut |e, _i, o| {
                let t = e.ld(types::I64, tab, o[1]);
                let ok = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, t, 0);
                let v = e.b.ins().band(valid, ok);
                let z = e.ic(0);
                let t = e.b.ins().select(ok, t, z);
                let io = e.b.ins().iadd(ioff, t);
                rec(e, d + 1, shape, tab_off, ost, es, p, (o[0], io, v), leaf);
            },
        );
    }
    let z = e.ic(0);
    let t = e.b.ins().iconst(types::I8, if in_empty { 0 } else { 1 });
    rec(
        e,
        0,
        &shape,
        &tab_off,
        &ost,
        es,
        (x, out, tab),
        (z, z, t),
        &mut |e, ooff, ioff, valid| {
            let v = e.ld_if(ty, valid, x, ioff);
            let r = e.b.ins().select(valid, v, fill);
            e.st(r, out, ooff);
        },
    );
    Ok(())
}

fn lower_gather(
    e: &mut E,
    info: &NodeInfo,
    d: Value,
    idx: Value,
    out: Value,
    axis: usize,
) -> R<()> {
    let ds = &info.ins[0].shape;
    let ity = &info.ins[1];
    let dt = info.ins[0].dtype;
    let es = dt.size() as i64;
    let a = ds[axis] as i64;
    let pre: usize = ds[..axis].iter().product();
    let q: usize = ds[axis + 1..].iter().product();
    let ni = ity.numel();
    if info.outs[0].numel() == 0 {
        // Still validate indices when there are any.
        if ni == 0 || pre == 0 {
            return Ok(());
        }
    }
    let isz = ity.dtype.size() as i64;
    let qb = q as i64 * es;
    let z = e.ic(0);
    e.loop_offs(
        pre as i64,
        &[z, z],
        &[a * qb, ni as i64 * qb],
        &mut |e, _p, o1| {
            let z = e.ic(0);
            e.loop_offs(ni as i64, &[z, o1[1]], &[isz, qb], &mut |e, _j, o2| {
                let k = e.ld(clty(ity.dtype), idx, o2[0]);
                let k = if ity.dtype == DType::I64 {
                    k
                } else {
                    e.b.ins().sextend(types::I64, k)
                };
                let neg = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, k, 0);
                let ka = e.b.ins().iadd_imm_s(k, a);
                let k = e.b.ins().select(neg, ka, k);
                let lo = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, k, 0);
                let hi = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, k, a);
                let bad = e.b.ins().bor(lo, hi);
                e.fail_if(bad, RuntimeError::GatherIndex);
                let so = e.b.ins().imul_imm_s(k, qb);
                let so = e.b.ins().iadd(so, o1[0]);
                e.copy_bytes(out, o2[1], d, so, qb as usize);
            });
        },
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Matrix products.

/// One batched GEMM: `out[b] = alpha * A[b] @ B[b]` with element strides.
struct Mm {
    batch: Vec<usize>,
    /// Element strides per batch dim: a, b, out.
    bst: [Vec<i64>; 3],
    m: usize,
    n: usize,
    k: usize,
    am: i64,
    ak: i64,
    bk: i64,
    bn: i64,
    /// Bytes between consecutive `NR`-column tiles of B when B is packed (`pack_b`).
    b_packed: Option<i64>,
    alpha: f32,
}

impl Mm {
    /// Byte offset of column `c` of B (row 0).
    fn boff(&self, c: usize) -> i64 {
        match self.b_packed {
            Some(t) => (c / NR) as i64 * t + (c % NR) as i64 * 4,
            None => c as i64 * self.bn * 4,
        }
    }
    /// B byte stride between consecutive k.
    fn bk_bytes(&self) -> i64 {
        match self.b_packed {
            Some(_) => NR as i64 * 4,
            None => self.bk * 4,
        }
    }
}

fn lower_matmul(e: &mut E, info: &NodeInfo, ins: &[Value], out: Value, extra: &[Value]) -> R<()> {
    let mut sa = info.ins[0].shape.clone();
    let mut sb = info.ins[1].shape.clone();
    if sa.len() == 1 {
        sa.insert(0, 1);
    }
    if sb.len() == 1 {
        sb.push(1);
    }
    let (m, k) = (sa[sa.len() - 2], sa[sa.len() - 1]);
    let n = sb[sb.len() - 1];
    let ba = &sa[..sa.len() - 2];
    let bb = &sb[..sb.len() - 2];
    let batch = optc_ir::broadcast_shapes(ba, bb).map_err(|x| info.err(x.msg))?;
    let sta = elem_strides(&sa);
    let stb = elem_strides(&sb);
    let mm = Mm {
        bst: [
            batch_strides(ba, &batch, (m * k) as i64),
            batch_strides(bb, &batch, (k * n) as i64),
            batch_strides(&batch, &batch, (m * n) as i64),
        ],
        batch,
        m,
        n,
        k,
        am: sta[sta.len() - 2],
        ak: sta[sta.len() - 1],
        bk: stb[stb.len() - 2],
        bn: stb[stb.len() - 1],
        b_packed: None,
        alpha: 1.0,
    };
    if let Some(&packed) = extra.first() {
        let mm = Mm {
            b_packed: Some((k * NR * 4) as i64),
            bk: NR as i64,
            bn: 1,
            ..mm
        };
        gemm(e, &mm, ins[0], packed, out);
        return Ok(());
    }
    gemm(e, &mm, ins[0], ins[1], out);
    Ok(())
}

/// Element strides of batch dims `s` broadcast to `batch`, where one matrix has `mat` elements.
fn batch_strides(s: &[usize], batch: &[usize], mat: i64) -> Vec<i64> {
    bcast_strides(s, batch).iter().map(|&x| x * mat).collect()
}

fn lower_gemm(e: &mut E, info: &NodeInfo, ins: &[Value], out: Value, extra: &[Value]) -> R<()> {
    let (alpha, beta, ta, tb) = match info.op {
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            trans_b,
        } => (*alpha, *beta, *trans_a, *trans_b),
        _ => return Err(info.err("not a gemm")),
    };
    let sa = &info.ins[0].shape;
    let sb = &info.ins[1].shape;
    let (m, k) = if ta { (sa[1], sa[0]) } else { (sa[0], sa[1]) };
    let n = info.outs[0].shape[1];
    let (am, ak) = if ta {
        (1, sa[1] as i64)
    } else {
        (sa[1] as i64, 1)
    };
    // A constant B was packed into column tiles at compile time.
    let (bp, bk, bn, b_packed) = if let Some(&p) = extra.first() {
        (p, NR as i64, 1, Some((k * NR * 4) as i64))
    } else if tb {
        (ins[1], 1, sb[1] as i64, None)
    } else {
        (ins[1], sb[1] as i64, 1, None)
    };
    let mm = Mm {
        batch: vec![],
        bst: [vec![], vec![], vec![]],
        m,
        n,
        k,
        am,
        ak,
        bk,
        bn,
        b_packed,
        alpha,
    };
    gemm(e, &mm, ins[0], bp, out);
    if ins.len() > 2 && beta != 0.0 {
        let oty = &info.outs[0];
        let o = Opd::dense(out, oty);
        let c = Opd::bcast(ins[2], &info.ins[2], &oty.shape);
        map(
            e,
            info,
            &oty.shape,
            o.clone(),
            &[o, c],
            &Ew::AddScaled(beta),
        )?;
    }
    Ok(())
}

fn gemm(e: &mut E, mm: &Mm, a: Value, b: Value, out: Value) {
    if mm.m * mm.n == 0 {
        return;
    }
    let bst: Vec<Vec<i64>> = mm
        .bst
        .iter()
        .map(|v| v.iter().map(|x| x * 4).collect())
        .collect();
    let z = e.ic(0);
    e.nest(&mm.batch, &bst, &[z, z, z], &mut |e, offs| {
        gemm2d(e, mm, a, b, out, offs[0], offs[1], offs[2]);
    });
}

/// One 2-D product; `ao`, `bo`, `oo` are byte offsets of this batch's matrices.
#[allow(clippy::too_many_arguments)]
fn gemm2d(e: &mut E, mm: &Mm, a: Value, b: Value, out: Value, ao: Value, bo: Value, oo: Value) {
    const MR: usize = 6;
    let vec_ok = mm.bn == 1;
    let row_step_a = mm.am * 4;
    let row_step_o = mm.n as i64 * 4;
    // Column blocks of `nc` columns keep a K x nc panel of B (~256 KiB) in L2 across all rows.
    let nc = if vec_ok {
        ((256 * 1024 / (mm.k * 4).max(1)) / NR * NR).clamp(NR, mm.n.div_ceil(NR) * NR)
    } else {
        mm.n
    };
    let tile_step = mm.boff(NR);
    // `ncols` columns starting at B byte offset `bo` / output byte offset `oo` (row 0).
    let block = |e: &mut E, ncols: usize, bo: Value, oo: Value| {
        let nv_full = if vec_ok { ncols / 8 } else { 0 };
        let n8 = nv_full * 8;
        let n4 = if vec_ok && ncols - n8 >= 4 { 4 } else { 0 };
        let ncols_vec = n8 + n4;
        let rows = |e: &mut E, mr: usize, ao: Value, oo: Value| {
            if nv_full > 0 {
                e.loop_offs(
                    nv_full as i64,
                    &[bo, oo],
                    &[tile_step, 32],
                    &mut |e, _j, o| {
                        tile(e, mm, mr, 2, a, b, out, ao, o[0], o[1]);
                    },
                );
            }
            if n4 > 0 {
                let bo4 = e.b.ins().iadd_imm_s(bo, mm.boff(n8));
                let oo4 = e.b.ins().iadd_imm_s(oo, n8 as i64 * 4);
                tile(e, mm, mr, 1, a, b, out, ao, bo4, oo4);
            }
            let rest = ncols - ncols_vec;
            if rest > 0 {
                let bo0 = e.b.ins().iadd_imm_s(bo, mm.boff(ncols_vec));
                let oo0 = e.b.ins().iadd_imm_s(oo, ncols_vec as i64 * 4);
                e.loop_offs(
                    rest as i64,
                    &[bo0, oo0],
                    &[mm.bn * 4, 4],
                    &mut |e, _j, o| {
                        tile(e, mm, mr, 0, a, b, out, ao, o[0], o[1]);
                    },
                );
            }
        };
        let mb = mm.m / MR;
        let mrem = mm.m % MR;
        if mb > 0 {
            e.loop_offs(
                mb as i64,
                &[ao, oo],
                &[row_step_a * MR as i64, row_step_o * MR as i64],
                &mut |e, _i, o| rows(e, MR, o[0], o[1]),
            );
        }
        if mrem > 0 {
            let ao2 = e.b.ins().iadd_imm_s(ao, row_step_a * (mb * MR) as i64);
            let oo2 = e.b.ins().iadd_imm_s(oo, row_step_o * (mb * MR) as i64);
            rows(e, mrem, ao2, oo2);
        }
    };
    let nblocks = mm.n / nc;
    let rem = mm.n % nc;
    if nblocks == 1 && rem == 0 {
        block(e, nc, bo, oo);
        return;
    }
    e.loop_offs(
        nblocks as i64,
        &[bo, oo],
        &[mm.boff(nc), nc as i64 * 4],
        &mut |e, _j, o| block(e, nc, o[0], o[1]),
    );
    if rem > 0 {
        let bo2 = e.b.ins().iadd_imm_s(bo, mm.boff(nblocks * nc));
        let oo2 = e.b.ins().iadd_imm_s(oo, (nblocks * nc) as i64 * 4);
        block(e, rem, bo2, oo2);
    }
}

/// `mr` rows × (`nv` f32x4 vectors, or one scalar column when `nv == 0`) of the output.
#[allow(clippy::too_many_arguments)]
fn tile(
    e: &mut E,
    mm: &Mm,
    mr: usize,
    nv: usize,
    a: Value,
    b: Value,
    out: Value,
    ao: Value,
    bo: Value,
    oo: Value,
) {
    let ty = if nv == 0 { types::F32 } else { F32X4 };
    let ncol = nv.max(1);
    let accs: Vec<_> = (0..mr * ncol)
        .map(|_| {
            let v = e.b.declare_var(ty);
            let z = e.fc(ty, 0.0);
            e.b.def_var(v, z);
            v
        })
        .collect();
    e.loop_offs(
        mm.k as i64,
        &[ao, bo],
        &[mm.ak * 4, mm.bk_bytes()],
        &mut |e, _k, o| {
            let pa = e.b.ins().iadd(a, o[0]);
            let pb = e.b.ins().iadd(b, o[1]);
            let bv: Vec<Value> = (0..ncol)
                .map(|j| e.b.ins().load(ty, mf(), pb, (j * 16) as i32))
                .collect();
            for r in 0..mr {
                let s =
                    e.b.ins()
                        .load(types::F32, mf(), pa, (r as i64 * mm.am * 4) as i32);
                let av = if nv == 0 {
                    s
                } else {
                    e.b.ins().splat(F32X4, s)
                };
                for j in 0..ncol {
                    let acc = e.b.use_var(accs[r * ncol + j]);
                    let nacc = e.mul_add(av, bv[j], acc);
                    e.b.def_var(accs[r * ncol + j], nacc);
                }
            }
        },
    );
    let po = e.b.ins().iadd(out, oo);
    for r in 0..mr {
        for j in 0..ncol {
            let mut v = e.b.use_var(accs[r * ncol + j]);
            if mm.alpha != 1.0 {
                let al = e.fc(ty, mm.alpha);
                v = e.b.ins().fmul(v, al);
            }
            let off = r as i64 * mm.n as i64 * 4 + j as i64 * 16;
            e.b.ins().store(mf(), v, po, off as i32);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Convolution.

pub(crate) struct ConvGeom {
    pub n: usize,
    pub c: usize,
    /// input extents (2-D view; 1-D convs have h = 1)
    pub h: usize,
    pub w: usize,
    pub m: usize,
    pub groups: usize,
    pub cg: usize,
    pub mg: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub ph: usize,
    pub pw: usize,
    /// padded extents
    pub hp: usize,
    pub wp: usize,
    pub oh: usize,
    pub ow: usize,
}

/// The 2-D view of a 1-D or 2-D conv, and the constant weight when it is packed.
/// A 1x1, stride-1, unpadded, ungrouped conv is a batched GEMM `W[M, C] @ X[n][C, H*W]`.
pub(crate) fn conv_is_gemm(g: &ConvGeom) -> bool {
    g.kh == 1 && g.kw == 1 && g.sh == 1 && g.sw == 1 && g.groups == 1 && g.hp == g.h && g.wp == g.w
}

/// `None` for convs with more than two spatial dims (lowered by the generic scalar path).
pub(crate) fn conv_geom(info: &NodeInfo) -> R<Option<(ConvGeom, Option<Arc<Tensor>>)>> {
    let (window, group) = match info.op {
        Op::Conv { window, group } => (window, *group),
        _ => return Err(info.err("not a conv")),
    };
    let xs = &info.ins[0].shape;
    let ws = &info.ins[1].shape;
    let os = &info.outs[0].shape;
    let nsp = window.nsp();
    let g = match nsp {
        1 => ConvGeom {
            n: xs[0],
            c: xs[1],
            h: 1,
            w: xs[2],
            m: ws[0],
            groups: group,
            cg: ws[1],
            mg: ws[0] / group,
            kh: 1,
            kw: window.kernel[0],
            sh: 1,
            sw: window.strides[0],
            dh: 1,
            dw: window.dilations[0],
            ph: 0,
            pw: window.pads[0],
            hp: 1,
            wp: xs[2] + window.pads[0] + window.pads[1],
            oh: 1,
            ow: os[2],
        },
        2 => ConvGeom {
            n: xs[0],
            c: xs[1],
            h: xs[2],
            w: xs[3],
            m: ws[0],
            groups: group,
            cg: ws[1],
            mg: ws[0] / group,
            kh: window.kernel[0],
            kw: window.kernel[1],
            sh: window.strides[0],
            sw: window.strides[1],
            dh: window.dilations[0],
            dw: window.dilations[1],
            ph: window.pads[0],
            pw: window.pads[1],
            hp: xs[2] + window.pads[0] + window.pads[2],
            wp: xs[3] + window.pads[1] + window.pads[3],
            oh: os[2],
            ow: os[3],
        },
        _ => return Ok(None),
    };
    let packed = if g.mg >= 8 && !conv_is_gemm(&g) {
        info.consts[1].clone()
    } else {
        None
    };
    Ok(Some((g, packed)))
}

fn lower_conv(
    e: &mut E,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    scratch: Value,
    extra: &[Value],
) -> R<()> {
    if info.outs[0].numel() == 0 {
        return Ok(());
    }
    let Some((g, packed)) = conv_geom(info)? else {
        return lower_conv_nd(e, info, ins, out);
    };
    if conv_is_gemm(&g) {
        let hw = g.h * g.w;
        let mm = Mm {
            batch: vec![g.n],
            bst: [vec![0], vec![(g.c * hw) as i64], vec![(g.m * hw) as i64]],
            m: g.m,
            n: hw,
            k: g.c,
            am: g.c as i64,
            ak: 1,
            bk: hw as i64,
            bn: 1,
            b_packed: None,
            alpha: 1.0,
        };
        gemm(e, &mm, ins[1], ins[0], out);
        if ins.len() > 2 {
            let oty = &info.outs[0];
            let o = Opd::dense(out, oty);
            let mut st = vec![0i64; oty.rank()];
            st[1] = 1;
            let b = Opd {
                p: ins[2],
                dt: DType::F32,
                base: 0,
                strides: st,
            };
            map(e, info, &oty.shape, o.clone(), &[o, b], &Ew::AddScaled(1.0))?;
        }
        return Ok(());
    }
    let padded = g.hp != g.h || g.wp != g.w;
    // 1. Padded copy of the input in scratch.
    let x = if padded {
        let total = g.n * g.c * g.hp * g.wp;
        let zv = e.fc(F32X4, 0.0);
        let z = e.ic(0);
        e.loop_offs((total / 4) as i64, &[z], &[16], &mut |e, _i, o| {
            e.st(zv, scratch, o[0]);
        });
        let zs = e.fc(types::F32, 0.0);
        for t in (total / 4) * 4..total {
            let o = e.ic(t as i64 * 4);
            e.st(zs, scratch, o);
        }
        let plane = [g.n * g.c, g.h, g.w];
        let dst = Opd {
            p: scratch,
            dt: DType::F32,
            base: (g.ph * g.wp + g.pw) as i64,
            strides: vec![(g.hp * g.wp) as i64, g.wp as i64, 1],
        };
        let src = Opd {
            p: ins[0],
            dt: DType::F32,
            base: 0,
            strides: vec![(g.h * g.w) as i64, g.w as i64, 1],
        };
        map(e, info, &plane, dst, &[src], &Ew::Copy)?;
        scratch
    } else {
        ins[0]
    };
    let bias = ins.get(2).copied();
    let xplane = (g.hp * g.wp) as i64 * 4;
    let oplane = (g.oh * g.ow) as i64 * 4;
    let z = e.ic(0);
    if packed.is_some() {
        // Vectorized over 16 output channels with packed weights [g][mb][c*kh*kw][16].
        let wp = extra[0];
        let nb = g.mg.div_ceil(16);
        let full = g.mg / 16;
        let r = (g.cg * g.kh * g.kw) as i64;
        let blk_w = r * 64;
        let zb = e.ic(0);
        e.loop_offs(
            g.n as i64,
            &[z, z],
            &[g.c as i64 * xplane, g.m as i64 * oplane],
            &mut |e, _n, on| {
                // groups: x, out, packed weights, bias (byte offsets)
                e.loop_offs(
                    g.groups as i64,
                    &[on[0], on[1], zb, zb],
                    &[
                        g.cg as i64 * xplane,
                        g.mg as i64 * oplane,
                        nb as i64 * blk_w,
                        g.mg as i64 * 4,
                    ],
                    &mut |e, _gi, og| {
                        let block = |e: &mut E, nch: usize, oo: Value, wo: Value, bo: Value| {
                            let nvec = nch.div_ceil(4);
                            e.loop_offs(
                                g.oh as i64,
                                &[og[0], oo],
                                &[(g.sh * g.wp) as i64 * 4, g.ow as i64 * 4],
                                &mut |e, _oh, oh| {
                                    let np = if nvec <= 2 { 3 } else { 2 };
                                    let pairs = g.ow / np;
                                    e.loop_offs(
                                        pairs as i64,
                                        &[oh[0], oh[1]],
                                        &[(np * g.sw) as i64 * 4, np as i64 * 4],
                                        &mut |e, _ow, o| {
                                            conv_pixel_packed(
                                                e, &g, np, x, wp, wo, o[0], out, o[1], oplane,
                                                nvec, nch, bias, bo,
                                            );
                                        },
                                    );
                                    let rest = g.ow % np;
                                    let xr =
                                        e.b.ins().iadd_imm_s(oh[0], (pairs * np * g.sw) as i64 * 4);
                                    let or = e.b.ins().iadd_imm_s(oh[1], (pairs * np) as i64 * 4);
                                    e.loop_offs(
                                        rest as i64,
                                        &[xr, or],
                                        &[g.sw as i64 * 4, 4],
                                        &mut |e, _ow, o| {
                                            conv_pixel_packed(
                                                e, &g, 1, x, wp, wo, o[0], out, o[1], oplane, nvec,
                                                nch, bias, bo,
                                            );
                                        },
                                    );
                                },
                            );
                        };
                        e.loop_offs(
                            full as i64,
                            &[og[1], og[2], og[3]],
                            &[16 * oplane, blk_w, 64],
                            &mut |e, _bi, ob| block(e, 16, ob[0], ob[1], ob[2]),
                        );
                        if nb > full {
                            let oo = e.b.ins().iadd_imm_s(og[1], (full * 16) as i64 * oplane);
                            let wo = e.b.ins().iadd_imm_s(og[2], full as i64 * blk_w);
                            let bo = e.b.ins().iadd_imm_s(og[3], (full * 16) as i64 * 4);
                            block(e, g.mg - full * 16, oo, wo, bo);
                        }
                    },
                );
            },
        );
    } else {
        // Vectorized over output width.
        let w = ins[1];
        let wsz = (g.cg * g.kh * g.kw) as i64 * 4;
        e.loop_offs(
            g.n as i64,
            &[z, z],
            &[g.c as i64 * xplane, g.m as i64 * oplane],
            &mut |e, _n, on| {
                let zz = e.ic(0);
                e.loop_offs(
                    g.m as i64,
                    &[zz, on[1]],
                    &[wsz, oplane],
                    &mut |e, mi, om| {
                        // input channel base of this output channel's group
                        let gidx = e.b.ins().udiv_imm_u(mi, g.mg as i64);
                        let xo = e.b.ins().imul_imm_s(gidx, g.cg as i64 * xplane);
                        let xo = e.b.ins().iadd(xo, on[0]);
                        let bv = match bias {
                            Some(bp) => {
                                let bo = e.b.ins().imul_imm_s(mi, 4);
                                e.ld(types::F32, bp, bo)
                            }
                            None => e.fc(types::F32, 0.0),
                        };
                        if g.cg == 1 && g.kh * g.kw <= 16 {
                            // Depthwise-like: the window weights stay in registers.
                            let wv: Vec<Value> = (0..g.kh * g.kw)
                                .map(|c| {
                                    let a = e.b.ins().iadd(w, om[0]);
                                    let s = e.b.ins().load(types::F32, mf(), a, (c * 4) as i32);
                                    e.b.ins().splat(F32X4, s)
                                })
                                .collect();
                            let bsplat = e.b.ins().splat(F32X4, bv);
                            e.loop_offs(
                                g.oh as i64,
                                &[xo, om[1]],
                                &[(g.sh * g.wp) as i64 * 4, g.ow as i64 * 4],
                                &mut |e, _oh, oh| {
                                    let n8 = g.ow / 8;
                                    e.loop_offs(
                                        n8 as i64,
                                        &[oh[0], oh[1]],
                                        &[(8 * g.sw) as i64 * 4, 32],
                                        &mut |e, _i, o| {
                                            dw_block(e, &g, x, &wv, o[0], out, o[1], bsplat, 2);
                                        },
                                    );
                                    let mut done = n8 * 8;
                                    if g.ow - done >= 4 {
                                        let xr =
                                            e.b.ins().iadd_imm_s(oh[0], (done * g.sw) as i64 * 4);
                                        let or = e.b.ins().iadd_imm_s(oh[1], done as i64 * 4);
                                        dw_block(e, &g, x, &wv, xr, out, or, bsplat, 1);
                                        done += 4;
                                    }
                                    let rest = g.ow - done;
                                    let xr = e.b.ins().iadd_imm_s(oh[0], (done * g.sw) as i64 * 4);
                                    let or = e.b.ins().iadd_imm_s(oh[1], done as i64 * 4);
                                    e.loop_offs(
                                        rest as i64,
                                        &[xr, or],
                                        &[g.sw as i64 * 4, 4],
                                        &mut |e, _i, o| {
                                            conv_row(
                                                e, &g, x, w, om[0], o[0], out, o[1], bv, false,
                                            );
                                        },
                                    );
                                },
                            );
                            return;
                        }
                        e.loop_offs(
                            g.oh as i64,
                            &[xo, om[1]],
                            &[(g.sh * g.wp) as i64 * 4, g.ow as i64 * 4],
                            &mut |e, _oh, oh| {
                                let nv = g.ow / 4;
                                e.loop_offs(
                                    nv as i64,
                                    &[oh[0], oh[1]],
                                    &[(4 * g.sw) as i64 * 4, 16],
                                    &mut |e, _i, o| {
                                        conv_row(e, &g, x, w, om[0], o[0], out, o[1], bv, true);
                                    },
                                );
                                let rest = g.ow % 4;
                                let xr = e.b.ins().iadd_imm_s(oh[0], (nv * 4 * g.sw) as i64 * 4);
                                let or = e.b.ins().iadd_imm_s(oh[1], (nv * 4) as i64 * 4);
                                e.loop_offs(
                                    rest as i64,
                                    &[xr, or],
                                    &[g.sw as i64 * 4, 4],
                                    &mut |e, _i, o| {
                                        conv_row(e, &g, x, w, om[0], o[0], out, o[1], bv, false);
                                    },
                                );
                            },
                        );
                    },
                );
            },
        );
    }
    Ok(())
}

/// `4 * nv` consecutive output pixels of one output channel reading one input channel, with the
/// window weights `wv` (splatted) already in registers.
#[allow(clippy::too_many_arguments)]
fn dw_block(
    e: &mut E,
    g: &ConvGeom,
    x: Value,
    wv: &[Value],
    xo: Value,
    out: Value,
    oo: Value,
    bias: Value,
    nv: usize,
) {
    let px = e.b.ins().iadd(x, xo);
    let mut accs = vec![bias; nv];
    for kh in 0..g.kh {
        for kw in 0..g.kw {
            for (j, acc) in accs.iter_mut().enumerate() {
                let xoff = ((kh * g.dh * g.wp + kw * g.dw + j * 4 * g.sw) * 4) as i32;
                let xv = if g.sw == 1 {
                    e.b.ins().load(F32X4, mf(), px, xoff)
                } else {
                    let s0 = e.b.ins().load(types::F32, mf(), px, xoff);
                    let mut v = e.b.ins().scalar_to_vector(F32X4, s0);
                    for l in 1..4 {
                        let s =
                            e.b.ins()
                                .load(types::F32, mf(), px, xoff + (l * g.sw * 4) as i32);
                        v = e.b.ins().insertlane(v, s, l as u8);
                    }
                    v
                };
                *acc = e.mul_add(wv[kh * g.kw + kw], xv, *acc);
            }
        }
    }
    let po = e.b.ins().iadd(out, oo);
    for (j, &acc) in accs.iter().enumerate() {
        e.b.ins().store(mf(), acc, po, (j * 16) as i32);
    }
}

/// `np` consecutive output pixels for up to 16 channels: `x` at byte offset `xo` (top-left of
/// the first window in the first input channel of the group), packed weights at `wbase`.
#[allow(clippy::too_many_arguments)]
fn conv_pixel_packed(
    e: &mut E,
    g: &ConvGeom,
    np: usize,
    x: Value,
    wp: Value,
    wo: Value,
    xo: Value,
    out: Value,
    oo: Value,
    oplane: i64,
    nvec: usize,
    nch: usize,
    bias: Option<Value>,
    bo: Value,
) {
    let accs: Vec<_> = (0..nvec * np)
        .map(|_| {
            let v = e.b.declare_var(F32X4);
            let z = e.fc(F32X4, 0.0);
            e.b.def_var(v, z);
            v
        })
        .collect();
    let xplane = (g.hp * g.wp) as i64 * 4;
    let kk = (g.kh * g.kw) as i64;
    e.loop_offs(
        g.cg as i64,
        &[xo, wo],
        &[xplane, kk * 64],
        &mut |e, _c, o| {
            let px = e.b.ins().iadd(x, o[0]);
            let pw = e.b.ins().iadd(wp, o[1]);
            let mut cur: Vec<Value> = accs.iter().map(|&v| e.b.use_var(v)).collect();
            for kh in 0..g.kh {
                for kw in 0..g.kw {
                    let cell = (kh * g.kw + kw) as i32 * 64;
                    let wv: Vec<Value> = (0..nvec)
                        .map(|j| e.b.ins().load(F32X4, mf(), pw, cell + j as i32 * 16))
                        .collect();
                    for p in 0..np {
                        let xoff = ((kh * g.dh * g.wp + kw * g.dw + p * g.sw) * 4) as i32;
                        let s = e.b.ins().load(types::F32, mf(), px, xoff);
                        let sv = e.b.ins().splat(F32X4, s);
                        for j in 0..nvec {
                            let k = p * nvec + j;
                            cur[k] = e.mul_add(sv, wv[j], cur[k]);
                        }
                    }
                }
            }
            for (j, &v) in accs.iter().enumerate() {
                e.b.def_var(v, cur[j]);
            }
        },
    );
    let po = e.b.ins().iadd(out, oo);
    let pb = bias.map(|bp| e.b.ins().iadd(bp, bo));
    for p in 0..np {
        for j in 0..nvec {
            let v = e.b.use_var(accs[p * nvec + j]);
            for l in 0..4 {
                let ch = j * 4 + l;
                if ch >= nch {
                    break;
                }
                let mut s = e.b.ins().extractlane(v, l as u8);
                if let Some(bp) = pb {
                    let bb = e.b.ins().load(types::F32, mf(), bp, (ch * 4) as i32);
                    s = e.b.ins().fadd(s, bb);
                }
                e.b.ins()
                    .store(mf(), s, po, (ch as i64 * oplane + p as i64 * 4) as i32);
            }
        }
    }
}

/// Four (vector) or one (scalar) consecutive output pixels of one output channel.
#[allow(clippy::too_many_arguments)]
fn conv_row(
    e: &mut E,
    g: &ConvGeom,
    x: Value,
    w: Value,
    wo: Value,
    xo: Value,
    out: Value,
    oo: Value,
    bias: Value,
    vector: bool,
) {
    let ty = if vector { F32X4 } else { types::F32 };
    let acc = e.b.declare_var(ty);
    let init = if vector {
        e.b.ins().splat(F32X4, bias)
    } else {
        bias
    };
    e.b.def_var(acc, init);
    let xplane = (g.hp * g.wp) as i64 * 4;
    let kk = (g.kh * g.kw) as i64;
    e.loop_offs(
        g.cg as i64,
        &[xo, wo],
        &[xplane, kk * 4],
        &mut |e, _c, o| {
            let px = e.b.ins().iadd(x, o[0]);
            let pw = e.b.ins().iadd(w, o[1]);
            let mut a = e.b.use_var(acc);
            for kh in 0..g.kh {
                for kw in 0..g.kw {
                    let xoff = ((kh * g.dh * g.wp + kw * g.dw) * 4) as i32;
                    let ws =
                        e.b.ins()
                            .load(types::F32, mf(), pw, ((kh * g.kw + kw) * 4) as i32);
                    let xv = if !vector {
                        e.b.ins().load(types::F32, mf(), px, xoff)
                    } else if g.sw == 1 {
                        e.b.ins().load(F32X4, mf(), px, xoff)
                    } else {
                        let s0 = e.b.ins().load(types::F32, mf(), px, xoff);
                        let mut v = e.b.ins().splat(F32X4, s0);
                        for l in 1..4 {
                            let s =
                                e.b.ins()
                                    .load(types::F32, mf(), px, xoff + (l * g.sw * 4) as i32);
                            v = e.b.ins().insertlane(v, s, l as u8);
                        }
                        v
                    };
                    let wv = if vector {
                        e.b.ins().splat(F32X4, ws)
                    } else {
                        ws
                    };
                    a = e.mul_add(wv, xv, a);
                }
            }
            e.b.def_var(acc, a);
        },
    );
    let v = e.b.use_var(acc);
    e.st(v, out, oo);
}

// ---------------------------------------------------------------------------------------------
// Pools.

/// Nested loops over `dims` giving each loop index (i64).
fn loops_idx(
    e: &mut E,
    dims: &[usize],
    idx: &mut Vec<Value>,
    body: &mut dyn FnMut(&mut E, &[Value]),
) {
    if idx.len() == dims.len() {
        body(e, idx);
        return;
    }
    let d = dims[idx.len()];
    e.loop_n(d as i64, &mut |e, i| {
        idx.push(i);
        loops_idx(e, dims, idx, body);
        idx.pop();
    });
}

fn lower_pool(
    e: &mut E,
    info: &NodeInfo,
    x: Value,
    out: Value,
    w: &optc_ir::Window,
    avg: Option<bool>,
) -> R<()> {
    let xs = info.ins[0].shape.clone();
    let os = info.outs[0].shape.clone();
    if info.outs[0].numel() == 0 {
        return Ok(());
    }
    let nsp = w.nsp();
    let isp = xs[2..].to_vec();
    let osp = os[2..].to_vec();
    let ist = elem_strides(&isp);
    let iplane: i64 = isp.iter().product::<usize>() as i64 * 4;
    let oplane: i64 = osp.iter().product::<usize>() as i64 * 4;
    let ost = elem_strides(&osp);
    let planes = (xs[0] * xs[1]) as i64;
    let z = e.ic(0);
    let w = w.clone();
    e.loop_offs(planes, &[z, z], &[iplane, oplane], &mut |e, _p, pl| {
        let mut oidx = vec![];
        loops_idx(e, &osp, &mut oidx, &mut |e, o| {
            let acc = e.b.declare_var(types::F32);
            // Max starts at NaN so that the first valid cell always wins (NaN cells are then
            // ignored unless every valid cell is NaN); no valid cell at all gives -inf.
            let init = if avg.is_some() { 0.0 } else { f32::NAN };
            let iv = e.fc(types::F32, init);
            e.b.def_var(acc, iv);
            let cv = e.b.declare_var(types::F32);
            let zf = e.fc(types::F32, 0.0);
            e.b.def_var(cv, zf);
            let o = o.to_vec();
            let mut kidx = vec![];
            loops_idx(e, &w.kernel, &mut kidx, &mut |e, k| {
                let mut valid = e.b.ins().iconst(types::I8, 1);
                let mut inpad = e.b.ins().iconst(types::I8, 1);
                let mut off = e.b.ins().iconst(types::I64, 0);
                for d in 0..nsp {
                    let a = e.b.ins().imul_imm_s(o[d], w.strides[d] as i64);
                    let b = e.b.ins().imul_imm_s(k[d], w.dilations[d] as i64);
                    let pp = e.b.ins().iadd(a, b);
                    let ext = (isp[d] + w.pads[d] + w.pads[nsp + d]) as i64;
                    let ip = e.b.ins().icmp_imm_s(IntCC::SignedLessThan, pp, ext);
                    inpad = e.b.ins().band(inpad, ip);
                    let p = e.b.ins().iadd_imm_s(pp, -(w.pads[d] as i64));
                    let ge = e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, p, 0);
                    let lt =
                        e.b.ins()
                            .icmp_imm_s(IntCC::SignedLessThan, p, isp[d] as i64);
                    valid = e.b.ins().band(valid, ge);
                    valid = e.b.ins().band(valid, lt);
                    let t = e.b.ins().imul_imm_s(p, ist[d] * 4);
                    off = e.b.ins().iadd(off, t);
                }
                let off = e.b.ins().iadd(off, pl[0]);
                let v = e.ld_if(types::F32, valid, x, off);
                let a = e.b.use_var(acc);
                match avg {
                    None => {
                        // padding never wins; NaN cells are ignored
                        let gt = e.b.ins().fcmp(FloatCC::GreaterThan, v, a);
                        let un = e.b.ins().fcmp(FloatCC::Unordered, a, a);
                        let gt = e.b.ins().bor(gt, un);
                        let take = e.b.ins().band(gt, valid);
                        let na = e.b.ins().select(take, v, a);
                        e.b.def_var(acc, na);
                        let zf = e.fc(types::F32, 0.0);
                        let one = e.fc(types::F32, 1.0);
                        let inc = e.b.ins().select(valid, one, zf);
                        let c = e.b.use_var(cv);
                        let nc = e.b.ins().fadd(c, inc);
                        e.b.def_var(cv, nc);
                    }
                    Some(include_pad) => {
                        let zf = e.fc(types::F32, 0.0);
                        let v = e.b.ins().select(valid, v, zf);
                        let na = e.b.ins().fadd(a, v);
                        e.b.def_var(acc, na);
                        let cnt_if = if include_pad { inpad } else { valid };
                        let one = e.fc(types::F32, 1.0);
                        let inc = e.b.ins().select(cnt_if, one, zf);
                        let c = e.b.use_var(cv);
                        let nc = e.b.ins().fadd(c, inc);
                        e.b.def_var(cv, nc);
                    }
                }
            });
            let mut r = e.b.use_var(acc);
            if avg.is_none() {
                let c = e.b.use_var(cv);
                let zf = e.fc(types::F32, 0.0);
                let none = e.b.ins().fcmp(FloatCC::Equal, c, zf);
                let ninf = e.fc(types::F32, f32::NEG_INFINITY);
                r = e.b.ins().select(none, ninf, r);
            }
            if avg.is_some() {
                let c = e.b.use_var(cv);
                let q = e.b.ins().fdiv(r, c);
                let zf = e.fc(types::F32, 0.0);
                let is0 = e.b.ins().fcmp(FloatCC::Equal, c, zf);
                r = e.b.ins().select(is0, zf, q);
            }
            let mut ooff = pl[1];
            for d in 0..nsp {
                let t = e.b.ins().imul_imm_s(o[d], ost[d] * 4);
                ooff = e.b.ins().iadd(ooff, t);
            }
            e.st(r, out, ooff);
        });
    });
    Ok(())
}

/// A 2-D f32 max pool taken by the vector path: the input is copied into a NaN-filled padded
/// buffer, where a NaN cell never replaces a non-NaN maximum and is replaced by any cell
/// (exactly the reference's "padding and NaN cells are skipped" rule, as long as every window
/// holds at least one real cell, which we check).
pub(crate) struct Pool2d {
    pub planes: usize,
    pub h: usize,
    pub w: usize,
    pub hp: usize,
    pub wp: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub ph: usize,
    pub pw: usize,
}

pub(crate) fn maxpool2d_geom(info: &NodeInfo) -> Option<Pool2d> {
    let Op::MaxPool { window: w } = info.op else {
        return None;
    };
    let xs = &info.ins[0].shape;
    let os = &info.outs[0].shape;
    if w.nsp() != 2 || info.ins[0].dtype != DType::F32 || info.outs.len() != 1 {
        return None;
    }
    if info.outs[0].numel() == 0 {
        return None;
    }
    let (h, wd, oh, ow) = (xs[2], xs[3], os[2], os[3]);
    // Every window must contain a real cell.
    for (n, o, k, s, d, p) in [
        (h, oh, w.kernel[0], w.strides[0], w.dilations[0], w.pads[0]),
        (wd, ow, w.kernel[1], w.strides[1], w.dilations[1], w.pads[1]),
    ] {
        for i in 0..o {
            let ok = (0..k).any(|j| {
                let q = (i * s + j * d) as i64 - p as i64;
                q >= 0 && q < n as i64
            });
            if !ok {
                return None;
            }
        }
    }
    let hp = (h + w.pads[0] + w.pads[2])
        .max((oh - 1) * w.strides[0] + (w.kernel[0] - 1) * w.dilations[0] + 1);
    let wp = (wd + w.pads[1] + w.pads[3])
        .max((ow - 1) * w.strides[1] + (w.kernel[1] - 1) * w.dilations[1] + 1);
    let g = Pool2d {
        planes: xs[0] * xs[1],
        h,
        w: wd,
        hp,
        wp,
        oh,
        ow,
        kh: w.kernel[0],
        kw: w.kernel[1],
        sh: w.strides[0],
        sw: w.strides[1],
        dh: w.dilations[0],
        dw: w.dilations[1],
        ph: w.pads[0],
        pw: w.pads[1],
    };
    let bytes = g.planes.checked_mul(hp)?.checked_mul(wp)?.checked_mul(4)?;
    (bytes <= MAX_TENSOR_BYTES).then_some(g)
}

fn lower_maxpool2d(
    e: &mut E,
    info: &NodeInfo,
    g: &Pool2d,
    x: Value,
    out: Value,
    scratch: Value,
) -> R<()> {
    // NaN-filled padded copy.
    let total = g.planes * g.hp * g.wp;
    let nanv = e.fc(F32X4, f32::NAN);
    let z = e.ic(0);
    e.loop_offs((total / 4) as i64, &[z], &[16], &mut |e, _i, o| {
        e.st(nanv, scratch, o[0]);
    });
    let nans = e.fc(types::F32, f32::NAN);
    for t in (total / 4) * 4..total {
        let o = e.ic(t as i64 * 4);
        e.st(nans, scratch, o);
    }
    let dst = Opd {
        p: scratch,
        dt: DType::F32,
        base: (g.ph * g.wp + g.pw) as i64,
        strides: vec![(g.hp * g.wp) as i64, g.wp as i64, 1],
    };
    let src = Opd {
        p: x,
        dt: DType::F32,
        base: 0,
        strides: vec![(g.h * g.w) as i64, g.w as i64, 1],
    };
    map(e, info, &[g.planes, g.h, g.w], dst, &[src], &Ew::Copy)?;
    // acc = (v > acc || acc is NaN) ? v : acc
    let step = |e: &mut E, ty: Type, v: Value, acc: Value| -> Value {
        let gt = e.b.ins().fcmp(FloatCC::GreaterThan, v, acc);
        let un = e.b.ins().fcmp(FloatCC::Unordered, acc, acc);
        let take = e.b.ins().bor(gt, un);
        e.fsel(ty, take, v, acc)
    };
    let xplane = (g.hp * g.wp) as i64 * 4;
    let oplane = (g.oh * g.ow) as i64 * 4;
    let nv = g.ow / 4;
    let z = e.ic(0);
    e.loop_offs(
        g.planes as i64,
        &[z, z],
        &[xplane, oplane],
        &mut |e, _p, pl| {
            e.loop_offs(
                g.oh as i64,
                &[pl[0], pl[1]],
                &[(g.sh * g.wp) as i64 * 4, g.ow as i64 * 4],
                &mut |e, _r, ro| {
                    e.loop_offs(
                        nv as i64,
                        &[ro[0], ro[1]],
                        &[(4 * g.sw) as i64 * 4, 16],
                        &mut |e, _c, o| {
                            let px = e.b.ins().iadd(scratch, o[0]);
                            let mut acc = e.fc(F32X4, f32::NAN);
                            for kh in 0..g.kh {
                                for kw in 0..g.kw {
                                    let off = ((kh * g.dh * g.wp + kw * g.dw) * 4) as i32;
                                    let v = if g.sw == 1 {
                                        e.b.ins().load(F32X4, mf(), px, off)
                                    } else {
                                        let s0 = e.b.ins().load(types::F32, mf(), px, off);
                                        let mut v = e.b.ins().scalar_to_vector(F32X4, s0);
                                        for l in 1..4 {
                                            let s = e.b.ins().load(
                                                types::F32,
                                                mf(),
                                                px,
                                                off + (l * g.sw * 4) as i32,
                                            );
                                            v = e.b.ins().insertlane(v, s, l as u8);
                                        }
                                        v
                                    };
                                    acc = step(e, F32X4, v, acc);
                                }
                            }
                            e.st(acc, out, o[1]);
                        },
                    );
                    let xr = e.b.ins().iadd_imm_s(ro[0], (nv * 4 * g.sw) as i64 * 4);
                    let or = e.b.ins().iadd_imm_s(ro[1], (nv * 4) as i64 * 4);
                    e.loop_offs(
                        (g.ow % 4) as i64,
                        &[xr, or],
                        &[g.sw as i64 * 4, 4],
                        &mut |e, _c, o| {
                            let px = e.b.ins().iadd(scratch, o[0]);
                            let mut acc = e.fc(types::F32, f32::NAN);
                            for kh in 0..g.kh {
                                for kw in 0..g.kw {
                                    let off = ((kh * g.dh * g.wp + kw * g.dw) * 4) as i32;
                                    let v = e.b.ins().load(types::F32, mf(), px, off);
                                    acc = step(e, types::F32, v, acc);
                                }
                            }
                            e.st(acc, out, o[1]);
                        },
                    );
                },
            );
        },
    );
    Ok(())
}

/// Any-rank convolution, scalar: the interpreter's window semantics, one output at a time.
fn lower_conv_nd(e: &mut E, info: &NodeInfo, ins: &[Value], out: Value) -> R<()> {
    let (w, group) = match info.op {
        Op::Conv { window, group } => (window.clone(), *group),
        _ => return Err(info.err("not a conv")),
    };
    let xs = info.ins[0].shape.clone();
    let ws = info.ins[1].shape.clone();
    let os = info.outs[0].shape.clone();
    let nsp = w.nsp();
    let isp = xs[2..].to_vec();
    let osp = os[2..].to_vec();
    let ist = elem_strides(&isp);
    let kst = elem_strides(&w.kernel);
    let ost = elem_strides(&osp);
    let iplane = isp.iter().product::<usize>() as i64 * 4;
    let oplane = osp.iter().product::<usize>() as i64 * 4;
    let ksz = w.kernel.iter().product::<usize>() as i64 * 4;
    let (c, m, cg) = (xs[1] as i64, ws[0] as i64, ws[1] as i64);
    let mg = m / group as i64;
    let bias = ins.get(2).copied();
    let z = e.ic(0);
    e.loop_offs(
        xs[0] as i64,
        &[z, z],
        &[c * iplane, m * oplane],
        &mut |e, _n, on| {
            let zz = e.ic(0);
            e.loop_offs(m, &[zz, on[1]], &[cg * ksz, oplane], &mut |e, mi, om| {
                let gi = e.b.ins().udiv_imm_u(mi, mg);
                let xg = e.b.ins().imul_imm_s(gi, cg * iplane);
                let xg = e.b.ins().iadd(xg, on[0]);
                let init = match bias {
                    Some(bp) => {
                        let bo = e.b.ins().imul_imm_s(mi, 4);
                        e.ld(types::F32, bp, bo)
                    }
                    None => e.fc(types::F32, 0.0),
                };
                let mut oidx = vec![];
                loops_idx(e, &osp, &mut oidx, &mut |e, o| {
                    let o = o.to_vec();
                    let acc = e.b.declare_var(types::F32);
                    e.b.def_var(acc, init);
                    e.loop_offs(cg, &[xg, om[0]], &[iplane, ksz], &mut |e, _ci, oc| {
                        let mut kidx = vec![];
                        loops_idx(e, &w.kernel, &mut kidx, &mut |e, k| {
                            let mut valid = e.b.ins().iconst(types::I8, 1);
                            let mut xoff = e.b.ins().iconst(types::I64, 0);
                            let mut woff = oc[1];
                            for d in 0..nsp {
                                let a = e.b.ins().imul_imm_s(o[d], w.strides[d] as i64);
                                let b = e.b.ins().imul_imm_s(k[d], w.dilations[d] as i64);
                                let pp = e.b.ins().iadd(a, b);
                                let p = e.b.ins().iadd_imm_s(pp, -(w.pads[d] as i64));
                                let ge =
                                    e.b.ins().icmp_imm_s(IntCC::SignedGreaterThanOrEqual, p, 0);
                                let lt =
                                    e.b.ins()
                                        .icmp_imm_s(IntCC::SignedLessThan, p, isp[d] as i64);
                                valid = e.b.ins().band(valid, ge);
                                valid = e.b.ins().band(valid, lt);
                                let t = e.b.ins().imul_imm_s(p, ist[d] * 4);
                                xoff = e.b.ins().iadd(xoff, t);
                                let t = e.b.ins().imul_imm_s(k[d], kst[d] * 4);
                                woff = e.b.ins().iadd(woff, t);
                            }
                            let xoff = e.b.ins().iadd(xoff, oc[0]);
                            let xv = e.ld_if(types::F32, valid, ins[0], xoff);
                            let zf = e.fc(types::F32, 0.0);
                            let xv = e.b.ins().select(valid, xv, zf);
                            let wv = e.ld(types::F32, ins[1], woff);
                            let a = e.b.use_var(acc);
                            let na = e.mul_add(xv, wv, a);
                            e.b.def_var(acc, na);
                        });
                    });
                    let r = e.b.use_var(acc);
                    let mut ooff = om[1];
                    for d in 0..nsp {
                        let t = e.b.ins().imul_imm_s(o[d], ost[d] * 4);
                        ooff = e.b.ins().iadd(ooff, t);
                    }
                    e.st(r, out, ooff);
                });
            });
        },
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reductions and normalizations.

fn lower_reduce(
    e: &mut E,
    info: &NodeInfo,
    x: Value,
    out: Value,
    kind: ReduceKind,
    axes: &[usize],
) -> R<()> {
    let xs = &info.ins[0].shape;
    let dt = info.ins[0].dtype;
    let es = dt.size() as i64;
    let ty = clty(dt);
    let xst = elem_strides(xs);
    let kept: Vec<usize> = (0..xs.len()).filter(|d| !axes.contains(d)).collect();
    let kdims: Vec<usize> = kept.iter().map(|&d| xs[d]).collect();
    if kdims.iter().product::<usize>() == 0 {
        return Ok(());
    }
    let ost = elem_strides(&kdims);
    let count: usize = axes.iter().map(|&a| xs[a]).product();
    let mut rdims: Vec<usize> = axes.iter().map(|&a| xs[a]).collect();
    let mut rst: Vec<i64> = axes.iter().map(|&a| xst[a]).collect();
    let rdims = {
        let mut refs = [&mut rst];
        let d = collapse(&rdims, &mut refs);
        rdims.clear();
        d
    };
    let kst: Vec<Vec<i64>> = vec![
        kept.iter().map(|&d| xst[d] * es).collect(),
        ost.iter().map(|s| s * es).collect(),
    ];
    let z = e.ic(0);
    let is_f = dt == DType::F32;
    let sg = is_signed(dt);
    let contiguous_inner = rdims.len() == 1 && rst[0] == 1;
    if count == 0 && kind == ReduceKind::Max && !is_f {
        return Err(info.err("reduce_max over an empty axis of an integer tensor"));
    }
    e.nest(&kdims, &kst, &[z, z], &mut |e, o| {
        let init = |e: &mut E, ty: Type| -> Value {
            match (kind, is_f) {
                (ReduceKind::Max, true) if count == 0 => e.fc(ty, f32::NEG_INFINITY),
                // NaN start: the first element always wins, later NaNs are ignored.
                (ReduceKind::Max, true) => e.fc(ty, f32::NAN),
                (_, true) => e.fc(ty, 0.0),
                (ReduceKind::Max, false) => e.b.ins().iconst(ty, int_range(dt).0),
                (_, false) => e.b.ins().iconst(ty, 0),
            }
        };
        let combine = |e: &mut E, a: Value, v: Value| -> Value {
            match (kind, is_f) {
                (ReduceKind::Max, true) => nan_ignoring_max(e, a, v),
                (ReduceKind::L2, _) => e.mul_add(v, v, a),
                (_, true) => e.b.ins().fadd(a, v),
                (ReduceKind::Max, false) => {
                    if sg {
                        e.b.ins().smax(a, v)
                    } else {
                        e.b.ins().umax(a, v)
                    }
                }
                (_, false) => e.b.ins().iadd(a, v),
            }
        };
        let acc = e.b.declare_var(ty);
        let iv = init(e, ty);
        e.b.def_var(acc, iv);
        let mut start = o[0];
        let mut rem_dims = rdims.clone();
        if is_f && contiguous_inner && rdims[0] >= 8 {
            let n = rdims[0];
            let nv = n / 4;
            let vacc = e.b.declare_var(F32X4);
            let vi = init(e, F32X4);
            e.b.def_var(vacc, vi);
            e.loop_offs(nv as i64, &[o[0]], &[16], &mut |e, _i, oo| {
                let v = e.ld(F32X4, x, oo[0]);
                let a = e.b.use_var(vacc);
                let na = combine(e, a, v);
                e.b.def_var(vacc, na);
            });
            let v = e.b.use_var(vacc);
            let mut r = e.b.ins().extractlane(v, 0);
            for l in 1..4u8 {
                let s = e.b.ins().extractlane(v, l);
                r = match kind {
                    ReduceKind::Max => nan_ignoring_max(e, r, s),
                    _ => e.b.ins().fadd(r, s),
                };
            }
            e.b.def_var(acc, r);
            start = e.b.ins().iadd_imm_s(o[0], nv as i64 * 16);
            rem_dims = vec![n % 4];
        }
        let rstb: Vec<Vec<i64>> = vec![rst.iter().map(|s| s * es).collect()];
        e.nest(&rem_dims, &rstb, &[start], &mut |e, ro| {
            let v = e.ld(ty, x, ro[0]);
            let a = e.b.use_var(acc);
            let na = combine(e, a, v);
            e.b.def_var(acc, na);
        });
        let mut r = e.b.use_var(acc);
        match kind {
            ReduceKind::Mean if count > 0 => {
                if is_f {
                    let c = e.fc(types::F32, count as f32);
                    r = e.b.ins().fdiv(r, c);
                } else {
                    let c = e.b.ins().iconst(ty, count as i64);
                    r = if sg {
                        e.b.ins().sdiv(r, c)
                    } else {
                        e.b.ins().udiv(r, c)
                    };
                }
            }
            ReduceKind::Mean if is_f => r = e.fc(types::F32, f32::NAN),
            ReduceKind::L2 => r = e.b.ins().sqrt(r),
            _ => {}
        }
        e.st(r, out, o[1]);
    });
    Ok(())
}

/// `v` when it is greater than `a` or `a` is NaN, else `a` (scalar or f32x4).
fn nan_ignoring_max(e: &mut E, a: Value, v: Value) -> Value {
    let ty = e.b.func.dfg.value_type(a);
    let gt = e.b.ins().fcmp(FloatCC::GreaterThan, v, a);
    let un = e.b.ins().fcmp(FloatCC::Unordered, a, a);
    let take = e.b.ins().bor(gt, un);
    e.fsel(ty, take, v, a)
}

fn lower_softmax(e: &mut E, info: &NodeInfo, x: Value, out: Value, axis: usize) -> R<()> {
    let s = &info.ins[0].shape;
    let n = s[axis];
    let inner: usize = s[axis + 1..].iter().product();
    let outer: usize = s[..axis].iter().product();
    if n * inner * outer == 0 {
        return Ok(());
    }
    if inner == 1 {
        // A task of a split softmax (`softmax_split`) does its block of rows.
        match e.split.clone() {
            Some(sp) => {
                let rows = outer / sp.parts;
                let start = e.b.ins().imul_imm_s(sp.t, (rows * n * 4) as i64);
                softmax_rows(e, x, out, start, rows, n);
            }
            None => {
                let z = e.ic(0);
                softmax_rows(e, x, out, z, outer, n);
            }
        }
        return Ok(());
    }
    let st = (inner * 4) as i64;
    let f = types::F32;
    let z = e.ic(0);
    e.nest(
        &[outer, inner],
        &[vec![(n * inner * 4) as i64, 4]],
        &[z],
        &mut |e, o| {
            let base = o[0];
            let mx = e.b.declare_var(f);
            let ni = e.fc(f, f32::NEG_INFINITY);
            e.b.def_var(mx, ni);
            e.loop_offs(n as i64, &[base], &[st], &mut |e, _j, oo| {
                let v = e.ld(f, x, oo[0]);
                let a = e.b.use_var(mx);
                let na = e.b.ins().fmax(a, v);
                e.b.def_var(mx, na);
            });
            let m = e.b.use_var(mx);
            let sum = e.b.declare_var(f);
            let zf = e.fc(f, 0.0);
            e.b.def_var(sum, zf);
            e.loop_offs(n as i64, &[base], &[st], &mut |e, _j, oo| {
                let v = e.ld(f, x, oo[0]);
                let d = e.b.ins().fsub(v, m);
                let ex = e.exp(f, d);
                e.st(ex, out, oo[0]);
                let a = e.b.use_var(sum);
                let na = e.b.ins().fadd(a, ex);
                e.b.def_var(sum, na);
            });
            let sm = e.b.use_var(sum);
            let one = e.fc(f, 1.0);
            let inv = e.b.ins().fdiv(one, sm);
            e.loop_offs(n as i64, &[base], &[st], &mut |e, _j, oo| {
                let v = e.ld(f, out, oo[0]);
                let r = e.b.ins().fmul(v, inv);
                e.st(r, out, oo[0]);
            });
        },
    );
    Ok(())
}

/// Softmax over `rows` contiguous rows of `n` elements from byte offset `start`, vectorized.
fn softmax_rows(e: &mut E, x: Value, out: Value, start: Value, rows: usize, n: usize) {
    let f = types::F32;
    e.loop_offs(rows as i64, &[start], &[(n * 4) as i64], &mut |e, _r, o| {
        let row = o[0];
        // Row max with a compare-and-select (`v > a ? v : a`), four independent accumulators
        // over 16 elements a step. A NaN in the row is skipped here but still reaches every
        // output through the sum of exponentials, as with a NaN-propagating max.
        let ni = e.fc(F32X4, f32::NEG_INFINITY);
        let accs: Vec<Variable> = (0..4)
            .map(|_| {
                let a = e.b.declare_var(F32X4);
                e.b.def_var(a, ni);
                a
            })
            .collect();
        let vmax = |e: &mut E, a: Variable, v: Value| {
            let cur = e.b.use_var(a);
            let gt = e.b.ins().fcmp(FloatCC::GreaterThan, v, cur);
            let na = e.fsel(F32X4, gt, v, cur);
            e.b.def_var(a, na);
        };
        let n16 = n / 16;
        e.loop_offs(n16 as i64, &[row], &[64], &mut |e, _j, oo| {
            for (k, &a) in accs.iter().enumerate() {
                let o = e.b.ins().iadd_imm_s(oo[0], 16 * k as i64);
                let v = e.ld(F32X4, x, o);
                vmax(e, a, v);
            }
        });
        let row16 = e.b.ins().iadd_imm_s(row, (n16 * 64) as i64);
        let smx = e.b.declare_var(f);
        let ns = e.fc(f, f32::NEG_INFINITY);
        e.b.def_var(smx, ns);
        e.vloop(
            n % 16,
            &[row16],
            &[true],
            &mut |e, oo| {
                let v = e.ld(F32X4, x, oo[0]);
                vmax(e, accs[0], v);
            },
            &mut |e, oo| {
                let v = e.ld(f, x, oo[0]);
                let a = e.b.use_var(smx);
                let na = e.b.ins().fmax(a, v);
                e.b.def_var(smx, na);
            },
        );
        let mut vm = e.b.use_var(accs[0]);
        for &a in &accs[1..] {
            let w = e.b.use_var(a);
            let gt = e.b.ins().fcmp(FloatCC::GreaterThan, w, vm);
            vm = e.fsel(F32X4, gt, w, vm);
        }
        let hm = e.hreduce(vm, true);
        let sm = e.b.use_var(smx);
        let m = e.b.ins().fmax(hm, sm);
        let mv = e.b.ins().splat(F32X4, m);
        let vsum = e.b.declare_var(F32X4);
        let ssum = e.b.declare_var(f);
        let zv = e.fc(F32X4, 0.0);
        e.b.def_var(vsum, zv);
        let zs = e.fc(f, 0.0);
        e.b.def_var(ssum, zs);
        e.vloop(
            n,
            &[row],
            &[true],
            &mut |e, oo| {
                let v = e.ld(F32X4, x, oo[0]);
                let d = e.b.ins().fsub(v, mv);
                let ex = e.exp_nonpos(F32X4, d);
                e.st(ex, out, oo[0]);
                let a = e.b.use_var(vsum);
                let na = e.b.ins().fadd(a, ex);
                e.b.def_var(vsum, na);
            },
            &mut |e, oo| {
                let v = e.ld(f, x, oo[0]);
                let d = e.b.ins().fsub(v, m);
                let ex = e.exp_nonpos(f, d);
                e.st(ex, out, oo[0]);
                let a = e.b.use_var(ssum);
                let na = e.b.ins().fadd(a, ex);
                e.b.def_var(ssum, na);
            },
        );
        let vs = e.b.use_var(vsum);
        let hs = e.hreduce(vs, false);
        let ss = e.b.use_var(ssum);
        let total = e.b.ins().fadd(hs, ss);
        let one = e.fc(f, 1.0);
        let inv = e.b.ins().fdiv(one, total);
        let iv = e.b.ins().splat(F32X4, inv);
        e.vloop(
            n,
            &[row],
            &[true],
            &mut |e, oo| {
                let v = e.ld(F32X4, out, oo[0]);
                let r = e.b.ins().fmul(v, iv);
                e.st(r, out, oo[0]);
            },
            &mut |e, oo| {
                let v = e.ld(f, out, oo[0]);
                let r = e.b.ins().fmul(v, inv);
                e.st(r, out, oo[0]);
            },
        );
    });
}

fn lower_layernorm(
    e: &mut E,
    info: &NodeInfo,
    ins: &[Value],
    out: Value,
    axis: usize,
    eps: f32,
) -> R<()> {
    let s = &info.ins[0].shape;
    let norm: Vec<usize> = s[axis..].to_vec();
    let d: usize = norm.iter().product();
    let outer: usize = s[..axis].iter().product();
    if d * outer == 0 {
        return Ok(());
    }
    let f = types::F32;
    let mut ndims = norm.clone();
    let mut sx = elem_strides(&norm);
    let mut ssc = bcast_strides(&info.ins[1].shape, &norm);
    let mut sbi = match info.ins.get(2) {
        Some(t) => bcast_strides(&t.shape, &norm),
        None => vec![0; norm.len()],
    };
    ndims = {
        let mut refs = [&mut sx, &mut ssc, &mut sbi];
        collapse(&ndims, &mut refs)
    };
    let strides: Vec<Vec<i64>> = [&sx, &ssc, &sbi]
        .iter()
        .map(|v| v.iter().map(|x| x * 4).collect())
        .collect();
    let has_bias = ins.len() > 2;
    if ndims.len() == 1 && sx[0] == 1 && ssc[0] <= 1 && sbi[0] <= 1 {
        // A task of a split LayerNorm (`layernorm_split`) does its block of rows.
        let (start, rows) = match e.split.clone() {
            Some(sp) => {
                let rows = outer / sp.parts;
                (e.b.ins().imul_imm_s(sp.t, (rows * d * 4) as i64), rows)
            }
            None => (e.ic(0), outer),
        };
        let moving = [ssc[0] == 1, sbi[0] == 1];
        layernorm_rows(e, ins, out, start, rows, d, eps, moving);
        return Ok(());
    }
    let z = e.ic(0);
    e.loop_offs(outer as i64, &[z], &[(d * 4) as i64], &mut |e, _r, o| {
        let row = o[0];
        let sum = e.b.declare_var(f);
        let zf = e.fc(f, 0.0);
        e.b.def_var(sum, zf);
        e.loop_offs(d as i64, &[row], &[4], &mut |e, _j, oo| {
            let v = e.ld(f, ins[0], oo[0]);
            let a = e.b.use_var(sum);
            let na = e.b.ins().fadd(a, v);
            e.b.def_var(sum, na);
        });
        let sm = e.b.use_var(sum);
        let dn = e.fc(f, d as f32);
        let mean = e.b.ins().fdiv(sm, dn);
        let sq = e.b.declare_var(f);
        e.b.def_var(sq, zf);
        e.loop_offs(d as i64, &[row], &[4], &mut |e, _j, oo| {
            let v = e.ld(f, ins[0], oo[0]);
            let c = e.b.ins().fsub(v, mean);
            let a = e.b.use_var(sq);
            let na = e.mul_add(c, c, a);
            e.b.def_var(sq, na);
        });
        let q = e.b.use_var(sq);
        let var = e.b.ins().fdiv(q, dn);
        let ep = e.fc(f, eps);
        let ve = e.b.ins().fadd(var, ep);
        let sd = e.b.ins().sqrt(ve);
        let zz = e.ic(0);
        e.nest(&ndims, &strides, &[row, zz, zz], &mut |e, oo| {
            let v = e.ld(f, ins[0], oo[0]);
            let c = e.b.ins().fsub(v, mean);
            let n = e.b.ins().fdiv(c, sd);
            let sc = e.ld(f, ins[1], oo[1]);
            let mut r = e.b.ins().fmul(n, sc);
            if has_bias {
                let b = e.ld(f, ins[2], oo[2]);
                r = e.b.ins().fadd(r, b);
            }
            e.st(r, out, oo[0]);
        });
    });
    Ok(())
}

/// Fold a contiguous row of `n` f32 at `p + row` into one sum: `step(e, ty, x, acc)` adds
/// the term of a loaded `x` (f32x4 or f32) to an accumulator. Four independent vector
/// accumulators over 16 elements a step (the additions' latency is hidden), then the tail.
fn row_fold(
    e: &mut E,
    p: Value,
    row: Value,
    n: usize,
    step: &dyn Fn(&mut E, Type, Value, Value) -> Value,
) -> Value {
    let f = types::F32;
    let zv = e.fc(F32X4, 0.0);
    let accs: Vec<Variable> = (0..4)
        .map(|_| {
            let a = e.b.declare_var(F32X4);
            e.b.def_var(a, zv);
            a
        })
        .collect();
    let n16 = n / 16;
    e.loop_offs(n16 as i64, &[row], &[64], &mut |e, _j, oo| {
        for (k, &a) in accs.iter().enumerate() {
            let o = e.b.ins().iadd_imm_s(oo[0], 16 * k as i64);
            let v = e.ld(F32X4, p, o);
            let cur = e.b.use_var(a);
            let na = step(e, F32X4, v, cur);
            e.b.def_var(a, na);
        }
    });
    let row16 = e.b.ins().iadd_imm_s(row, (n16 * 64) as i64);
    let ss = e.b.declare_var(f);
    let zs = e.fc(f, 0.0);
    e.b.def_var(ss, zs);
    e.vloop(
        n % 16,
        &[row16],
        &[true],
        &mut |e, oo| {
            let v = e.ld(F32X4, p, oo[0]);
            let cur = e.b.use_var(accs[0]);
            let na = step(e, F32X4, v, cur);
            e.b.def_var(accs[0], na);
        },
        &mut |e, oo| {
            let v = e.ld(f, p, oo[0]);
            let cur = e.b.use_var(ss);
            let na = step(e, f, v, cur);
            e.b.def_var(ss, na);
        },
    );
    let a: Vec<Value> = accs.iter().map(|&a| e.b.use_var(a)).collect();
    let s01 = e.b.ins().fadd(a[0], a[1]);
    let s23 = e.b.ins().fadd(a[2], a[3]);
    let v = e.b.ins().fadd(s01, s23);
    let h = e.hreduce(v, false);
    let t = e.b.use_var(ss);
    e.b.ins().fadd(h, t)
}

/// LayerNorm over contiguous rows of `d` elements; scale/bias are either contiguous over the
/// row (`moving`) or a single broadcast value.
#[allow(clippy::too_many_arguments)]
fn layernorm_rows(
    e: &mut E,
    ins: &[Value],
    out: Value,
    start: Value,
    rows: usize,
    d: usize,
    eps: f32,
    moving: [bool; 2],
) {
    let f = types::F32;
    let x = ins[0];
    let has_bias = ins.len() > 2;
    e.loop_offs(rows as i64, &[start], &[(d * 4) as i64], &mut |e, _r, o| {
        let row = o[0];
        let sum = row_fold(e, x, row, d, &|e, _ty, v, a| e.b.ins().fadd(a, v));
        let dn = e.fc(f, d as f32);
        let mean = e.b.ins().fdiv(sum, dn);
        let meanv = e.b.ins().splat(F32X4, mean);
        let q = row_fold(e, x, row, d, &|e, ty, v, a| {
            let m = if ty == F32X4 { meanv } else { mean };
            let c = e.b.ins().fsub(v, m);
            e.mul_add(c, c, a)
        });
        let var = e.b.ins().fdiv(q, dn);
        let ep = e.fc(f, eps);
        let ve = e.b.ins().fadd(var, ep);
        let sd = e.b.ins().sqrt(ve);
        // One division per row; every element is scaled by the reciprocal.
        let one = e.fc(f, 1.0);
        let rs = e.b.ins().fdiv(one, sd);
        let rsv = e.b.ins().splat(F32X4, rs);
        let zz = e.ic(0);
        let apply = |e: &mut E, ty: Type, oo: &[Value]| {
            let (m, s) = if ty == F32X4 {
                (meanv, rsv)
            } else {
                (mean, rs)
            };
            let v = e.ld(ty, x, oo[0]);
            let c = e.b.ins().fsub(v, m);
            let n = e.b.ins().fmul(c, s);
            let sc = if moving[0] || ty == f {
                e.ld(ty, ins[1], oo[1])
            } else {
                let t = e.ld(f, ins[1], oo[1]);
                e.b.ins().splat(F32X4, t)
            };
            let mut r = e.b.ins().fmul(n, sc);
            if has_bias {
                let b = if moving[1] || ty == f {
                    e.ld(ty, ins[2], oo[2])
                } else {
                    let t = e.ld(f, ins[2], oo[2]);
                    e.b.ins().splat(F32X4, t)
                };
                r = e.b.ins().fadd(r, b);
            }
            e.st(r, out, oo[0]);
        };
        e.vloop(
            d,
            &[row, zz, zz],
            &[true, moving[0], moving[1]],
            &mut |e, oo| apply(e, F32X4, oo),
            &mut |e, oo| apply(e, f, oo),
        );
    });
}
