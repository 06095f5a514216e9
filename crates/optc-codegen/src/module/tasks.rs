//! Task functions: a node split across threads runs `task(params, t)` for `t` in `0..n`
//! through `optc_rt_parallel_for`; its kernel hands the task function its own parameters in a
//! stack array.

use super::imports::RuntimeImports;
use crate::builder::{tensor_flags, Emitter};
use crate::error::Result;
use crate::node::NodeInfo;
use crate::x64::asm::Routine;
use cranelift_codegen::ir::{
    types, AbiParam, FuncRef, Function, InstBuilder, StackSlotData, StackSlotKind, UserFuncName,
    Value,
};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_module::{DataId, FuncId, Linkage, Module};
use std::collections::HashMap;

/// What a node's task function (`fn(params: *const ptr, t: i64)`, run by
/// `optc_rt_parallel_for`) needs: it loads the kernel's parameters from the array the kernel
/// passes, declares the node's data and microkernels, and lets `body` emit task `t`.
pub(super) struct TaskFunction<'a> {
    pub info: &'a NodeInfo<'a>,
    pub name: String,
    pub data_ids: &'a [DataId],
    pub runtime: &'a RuntimeImports,
    pub fma: bool,
    pub nparams: usize,
}

/// Emits one task: `(e, params, extra data, microkernels, t)`.
pub(super) type TaskBody<'b> = dyn FnMut(&mut Emitter, &[Value], &[Value], &HashMap<Routine, FuncRef>, Value) -> Result<()>
    + 'b;

impl TaskFunction<'_> {
    pub fn define<M: Module>(
        &self,
        module: &mut M,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
        microkernel_ids: &[(Routine, FuncId)],
        body: &mut TaskBody<'_>,
    ) -> Result<FuncId> {
        let ptr = module.target_config().pointer_type();
        let mut ts = module.make_signature();
        ts.params.push(AbiParam::new(ptr));
        ts.params.push(AbiParam::new(types::I64));
        let tid = module
            .declare_function(&self.name, Linkage::Local, &ts)
            .map_err(|e| self.info.err(e.to_string()))?;
        ctx.func = Function::with_name_signature(UserFuncName::user(0, tid.as_u32()), ts);
        let gvs: Vec<_> = self
            .data_ids
            .iter()
            .map(|d| module.declare_data_in_func(*d, &mut ctx.func))
            .collect();
        let microkernels: HashMap<_, _> = microkernel_ids
            .iter()
            .map(|(k, id)| (k.clone(), module.declare_func_in_func(*id, &mut ctx.func)))
            .collect();
        let runtime_refs = self.runtime.declare_in(module, &mut ctx.func);
        {
            let (mut e, tp) = Emitter::begin(&mut ctx.func, fctx, self.fma, runtime_refs);
            let params: Vec<Value> = (0..self.nparams)
                .map(|j| e.b.ins().load(ptr, tensor_flags(), tp[0], (j * 8) as i32))
                .collect();
            let extra: Vec<Value> = gvs
                .iter()
                .map(|g| e.b.ins().symbol_value(ptr, *g))
                .collect();
            body(&mut e, &params, &extra, &microkernels, tp[1])?;
            e.b.ins().return_(&[]);
            e.b.finalize(module.target_config());
        }
        let disasm = std::env::var_os("OPTC_DISASM").is_some();
        ctx.set_disasm(disasm);
        module
            .define_function(tid, ctx)
            .map_err(|e| self.info.err(format!("cranelift: {e:?}")))?;
        if disasm {
            if let Some(v) = ctx.compiled_code().and_then(|c| c.vcode.as_ref()) {
                eprintln!("; task function {}\n{v}", self.name);
            }
        }
        module.clear_context(ctx);
        Ok(tid)
    }
}

/// Run task function `task` for `0..n` through `optc_rt_parallel_for` (`par`), handing it the
/// kernel's parameters in a stack array.
pub(super) fn call_parallel(
    e: &mut Emitter,
    params: &[Value],
    task: FuncRef,
    par: FuncRef,
    n: usize,
) {
    let slot = e.b.create_sized_stack_slot(StackSlotData::new(
        StackSlotKind::ExplicitSlot,
        (params.len() * 8) as u32,
        3,
    ));
    let sa = e.b.ins().stack_addr(types::I64, slot, 0);
    for (j, &v) in params.iter().enumerate() {
        e.b.ins().store(tensor_flags(), v, sa, (j * 8) as i32);
    }
    let fa = e.b.ins().func_addr(types::I64, task);
    let nt = e.b.ins().iconst(types::I64, n as i64);
    e.b.ins().call(par, &[fa, sa, nt]);
}
