//! Kernel functions: one per scheduled node, `fn(in_ptrs.., out_ptrs.., scratch) -> i32`
//! (0, or a [`crate::RuntimeError`] code). A kernel declares its compile-time data, the
//! assembled routines its x64 plan calls (each defined once per module) and, when the node is
//! split across threads, its task function; then it emits the x64 plan's code or the generic
//! lowering.

use super::constants::DataObjects;
use super::imports::RuntimeImports;
use super::tasks::{call_parallel, TaskFunction};
use crate::builder::{Emitter, Partition};
use crate::error::Result;
use crate::node::NodeInfo;
use crate::ops::parallel::{output_split, task_split};
use crate::ops::{kernel_data, lower_node};
use crate::runtime::RuntimeFunction;
use crate::target::Target;
use crate::x64::asm::Routine;
use crate::x64::{self, KernelPlan};
use cranelift_codegen::ir::{types, AbiParam, Function, InstBuilder, UserFuncName, Value};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_module::{FuncId, Linkage, Module};
use std::collections::HashMap;

/// What a kernel does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum KernelBody {
    /// Its node's lowering (the x64 plan's, or the generic one).
    Node,
    /// Nothing: an aliased reshape (see [`super::memory`]); the entry does not call it.
    Nothing,
}

/// Defines the kernels of a module, in schedule order.
pub(super) struct KernelWriter<'a> {
    pub target: &'a Target,
    /// The entry function's name, the prefix of every kernel's.
    pub entry_name: &'a str,
    pub runtime: &'a RuntimeImports,
    pub data: DataObjects,
    pub ctx: Context,
    pub fctx: FunctionBuilderContext,
    /// Data a kernel may compute at the first run instead of storing it (a Winograd conv's
    /// `U`) is computed then: for AOT objects, which then hold each weight once.
    pub weights_at_first_run: bool,
    /// Assembled routines defined so far.
    routines: HashMap<Routine, FuncId>,
}

impl<'a> KernelWriter<'a> {
    pub fn new(
        target: &'a Target,
        entry_name: &'a str,
        runtime: &'a RuntimeImports,
        data: DataObjects,
        ctx: Context,
        weights_at_first_run: bool,
    ) -> Self {
        KernelWriter {
            target,
            entry_name,
            runtime,
            data,
            ctx,
            fctx: FunctionBuilderContext::new(),
            weights_at_first_run,
            routines: HashMap::new(),
        }
    }

    /// Define the kernel of scheduled node `i`.
    pub fn define<M: Module>(
        &mut self,
        module: &mut M,
        i: usize,
        info: &NodeInfo,
        plan: Option<&KernelPlan>,
        what: KernelBody,
    ) -> Result<FuncId> {
        let ptr = module.target_config().pointer_type();
        let entry_name = self.entry_name;
        let nparams = info.ins.len() + info.outs.len() + 1;
        let mut sig = module.make_signature();
        for _ in 0..nparams {
            sig.params.push(AbiParam::new(ptr));
        }
        sig.returns.push(AbiParam::new(types::I32));
        let fid = module
            .declare_function(&format!("{entry_name}_k{i}"), Linkage::Local, &sig)
            .map_err(|e| info.err(e.to_string()))?;
        let mut first_run = match plan {
            Some(p) if self.weights_at_first_run => x64::first_run_weights(info, p)?,
            _ => None,
        };
        let mut data_ids = vec![];
        // The 3x3 weights a first run transforms (not among the task functions' data).
        let mut raw_id = None;
        if let Some(f) = &mut first_run {
            data_ids.push(self.data.define_zeroed(module, f.zeroed_bytes())?);
            raw_id = Some(self.data.define(module, std::mem::take(&mut f.raw))?);
        } else {
            let derived = match plan {
                Some(p) => x64::derived(info, p)?,
                None => kernel_data(info)?,
            };
            for d in derived {
                data_ids.push(self.data.define(module, d)?);
            }
        }
        // Microkernels and the task function of the AVX2 GEMM path.
        let mut task_function: Option<FuncId> = None;
        let ew = if plan.is_none() {
            task_split(info)
        } else {
            None
        };
        let task = TaskFunction {
            info,
            name: format!("{entry_name}_k{i}_task"),
            data_ids: &data_ids,
            runtime: self.runtime,
            fma: self.target.fma,
            nparams,
        };
        let (ctx, fctx) = (&mut self.ctx, &mut self.fctx);
        if let Some((dim, parts)) = ew {
            // A large f32 elementwise node: `parts` tasks, each a slice along `dim`.
            let body =
                &mut |e: &mut Emitter, params: &[Value], extra: &[Value], _: &_, t: Value| {
                    e.partition = Some(Partition {
                        shape: info.outs[0].shape.clone(),
                        dim,
                        parts,
                        t,
                    });
                    lower_node(e, info, params, extra)
                };
            task_function = Some(task.define(module, ctx, fctx, &[], body)?);
        }
        let nin = info.ins.len();
        // The routines the plan calls (the task and prepare functions declare them).
        let mut keys: Vec<(Routine, FuncId)> = vec![];
        if let Some(p) = plan {
            define_routines(module, &mut self.routines, entry_name, info, p)?;
            keys = p
                .routines()
                .into_iter()
                .map(|k| (k.clone(), self.routines[&k]))
                .collect();
            if p.tasks > 1 {
                let body = &mut |e: &mut Emitter,
                                 params: &[Value],
                                 extra: &[Value],
                                 microkernels: &_,
                                 t| {
                    let c = x64::KernelArgs::of_params(params, nin, extra, microkernels);
                    x64::emit_task(e, p, &c, t);
                    Ok(())
                };
                task_function = Some(task.define(module, ctx, fctx, &keys, body)?);
            }
        }
        // A node whose serial work before the tasks is split into parallel parts too (an int8
        // node's activation quantization, a conv's shared patches): a second task function,
        // run first.
        let mut prepare_function: Option<FuncId> = None;
        if let Some(p) = plan.filter(|p| p.prepare_parts() > 1) {
            let prepare = TaskFunction {
                name: format!("{entry_name}_k{i}_prepare"),
                ..task
            };
            let body =
                &mut |e: &mut Emitter, params: &[Value], extra: &[Value], microkernels: &_, t| {
                    let c = x64::KernelArgs::of_params(params, nin, extra, microkernels);
                    x64::emit_prepare(e, p, &c, t);
                    Ok(())
                };
            prepare_function = Some(prepare.define(module, ctx, fctx, &keys, body)?);
        }
        // A folded conv's reorder into its output in parallel parts: a task function run
        // after the tasks.
        let mut unfold_function: Option<FuncId> = None;
        if let Some(p) = plan.filter(|p| p.unfold_parts() > 1) {
            let unfold = TaskFunction {
                name: format!("{entry_name}_k{i}_unfold"),
                ..task
            };
            let body =
                &mut |e: &mut Emitter, params: &[Value], extra: &[Value], microkernels: &_, t| {
                    let c = x64::KernelArgs::of_params(params, nin, extra, microkernels);
                    x64::emit_unfold_part(e, p, &c, t);
                    Ok(())
                };
            unfold_function = Some(unfold.define(module, ctx, fctx, &[], body)?);
        }
        // The work after the tasks on a large output (the fused steps the tiles did not
        // apply): split into slices like an elementwise node, a third task function.
        let mut post_function: Option<(FuncId, usize)> = None;
        if let Some((p, (dim, parts))) = plan
            .filter(|p| p.post_in_slices(info))
            .and_then(|p| output_split(&info.outs[0]).map(|s| (p, s)))
        {
            let post = TaskFunction {
                name: format!("{entry_name}_k{i}_post"),
                ..task
            };
            let body =
                &mut |e: &mut Emitter, params: &[Value], extra: &[Value], microkernels: &_, t| {
                    let c = x64::KernelArgs::of_params(params, nin, extra, microkernels);
                    e.partition = Some(Partition {
                        shape: info.outs[0].shape.clone(),
                        dim,
                        parts,
                        t,
                    });
                    x64::emit_post(e, info, p, &c)
                };
            post_function = Some((post.define(module, ctx, fctx, &[], body)?, parts));
        }
        ctx.func = Function::with_name_signature(UserFuncName::user(0, fid.as_u32()), sig);
        let gvs: Vec<_> = data_ids
            .iter()
            .map(|d| module.declare_data_in_func(*d, &mut ctx.func))
            .collect();
        let raw_gv = raw_id.map(|d| module.declare_data_in_func(d, &mut ctx.func));
        let runtime_refs = self.runtime.declare_in(module, &mut ctx.func);
        let microkernels: HashMap<_, _> = match plan {
            Some(p) if task_function.is_none() || p.calls_routines_before_tasks() => p
                .routines()
                .into_iter()
                .map(|k| {
                    let f = module.declare_func_in_func(self.routines[&k], &mut ctx.func);
                    (k, f)
                })
                .collect(),
            _ => HashMap::new(),
        };
        let task_ref = task_function.map(|t| module.declare_func_in_func(t, &mut ctx.func));
        let par_for = self.runtime.id(RuntimeFunction::ParallelFor);
        let par_ref = (task_function.is_some()
            || prepare_function.is_some()
            || post_function.is_some()
            || unfold_function.is_some())
        .then(|| module.declare_func_in_func(par_for, &mut ctx.func));
        let post_ref =
            post_function.map(|(f, parts)| (module.declare_func_in_func(f, &mut ctx.func), parts));
        let prepare_ref = prepare_function.map(|f| module.declare_func_in_func(f, &mut ctx.func));
        let unfold_ref = unfold_function.map(|f| module.declare_func_in_func(f, &mut ctx.func));
        {
            let (mut e, params) =
                Emitter::begin(&mut ctx.func, fctx, self.target.fma, runtime_refs);
            let extra: Vec<Value> = gvs
                .iter()
                .map(|g| e.b.ins().symbol_value(ptr, *g))
                .collect();
            if let (Some(f), Some(raw)) = (&first_run, raw_gv) {
                let raw = e.b.ins().symbol_value(ptr, raw);
                f.emit(&mut e, extra[0], raw);
            }
            match plan {
                Some(p) => {
                    let c = x64::KernelArgs::of_params(&params, nin, &extra, &microkernels);
                    x64::emit_pre(&mut e, info, p, &c)?;
                    if let (Some(pf), Some(pr)) = (prepare_ref, par_ref) {
                        call_parallel(&mut e, &params, pf, pr, p.prepare_parts());
                    }
                    match (task_ref, par_ref) {
                        (Some(tr), Some(pr)) => call_parallel(&mut e, &params, tr, pr, p.tasks),
                        _ => {
                            let z = e.int_const(0);
                            x64::emit_task(&mut e, p, &c, z);
                        }
                    }
                    if let (Some(f), Some(pr)) = (unfold_ref, par_ref) {
                        call_parallel(&mut e, &params, f, pr, p.unfold_parts());
                    }
                    match (post_ref, par_ref) {
                        (Some((f, parts)), Some(pr)) => {
                            call_parallel(&mut e, &params, f, pr, parts)
                        }
                        _ => x64::emit_post(&mut e, info, p, &c)?,
                    }
                }
                None => match (task_ref, par_ref, ew) {
                    (Some(tr), Some(pr), Some((_, parts))) => {
                        call_parallel(&mut e, &params, tr, pr, parts)
                    }
                    _ if what == KernelBody::Nothing => {}
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
            .define_function(fid, ctx)
            .map_err(|e| info.err(format!("cranelift: {e:?}")))?;
        if disasm {
            if let Some(v) = ctx.compiled_code().and_then(|c| c.vcode.as_ref()) {
                eprintln!("; kernel {i}: {} ({})\n{v}", info.name, info.op.name());
            }
        }
        module.clear_context(ctx);
        Ok(fid)
    }
}

/// Assemble and define the routines `plan` calls that the module does not have yet.
fn define_routines<M: Module>(
    module: &mut M,
    routines: &mut HashMap<Routine, FuncId>,
    entry_name: &str,
    info: &NodeInfo,
    plan: &KernelPlan,
) -> Result<()> {
    for key in plan.routines() {
        if routines.contains_key(&key) {
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
            .define_function_bytes(id, key.alignment(), &bytes, &[])
            .map_err(|e| info.err(format!("defining microkernel: {e}")))?;
        routines.insert(key, id);
    }
    Ok(())
}
