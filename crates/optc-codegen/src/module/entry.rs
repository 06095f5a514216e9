//! The entry function, `fn(inputs, outputs, workspace) -> i32`: resolves every value to its
//! buffer (graph input, graph output, constant data object or workspace offset), calls the
//! kernels in schedule order (returning `((kernel + 1) << 8) | code` when one fails; a
//! predicated kernel only when its condition holds, `predicates.rs`), then copies the graph
//! outputs that are not written in place.

use super::imports::RuntimeImports;
use super::memory::{Location, MemoryPlan};
use super::predicates::Predicate;
use crate::builder::{tensor_flags, Emitter};
use crate::error::{CodegenError, Result};
use crate::node::bytes_of;
use crate::runtime::RuntimeFunction;
use cranelift_codegen::ir::{
    types, AbiParam, Function, GlobalValue, InstBuilder, UserFuncName, Value,
};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_module::{DataId, FuncId, Linkage, Module};
use optc_ir::{Graph, NodeId, Value as IrValue};
use std::collections::HashMap;

/// What the entry function calls and where the values live.
pub(super) struct EntryFunction<'a> {
    pub name: &'a str,
    pub linkage: Linkage,
    pub graph: &'a Graph,
    pub schedule: &'a [NodeId],
    pub memory: &'a MemoryPlan,
    /// The constants' data objects, in declaration order.
    pub constants: &'a [DataId],
    /// The kernel of every scheduled node.
    pub kernels: &'a [FuncId],
    /// Scheduled nodes whose kernel is not called (aliased reshapes, folded IsNaN).
    pub skipped: &'a [bool],
    /// The conditions under which each scheduled node's kernel is called (none: always).
    pub predicates: &'a [Vec<Predicate>],
    /// Call `optc_rt_profile_mark(i)` before kernel `i` and `(kernels)` after the last.
    pub profile: bool,
}

impl EntryFunction<'_> {
    pub fn define<M: Module>(
        &self,
        module: &mut M,
        ctx: &mut Context,
        fctx: &mut FunctionBuilderContext,
        runtime: &RuntimeImports,
        fma: bool,
    ) -> Result<FuncId> {
        let ptr = module.target_config().pointer_type();
        let (graph, memory) = (self.graph, self.memory);
        let locs = &memory.locations;
        let mut sig = module.make_signature();
        for _ in 0..3 {
            sig.params.push(AbiParam::new(ptr));
        }
        sig.returns.push(AbiParam::new(types::I32));
        let entry = module
            .declare_function(self.name, self.linkage, &sig)
            .map_err(|e| CodegenError::new(e.to_string()))?;
        ctx.func = Function::with_name_signature(UserFuncName::user(0, entry.as_u32()), sig);
        let kref: Vec<_> = self
            .kernels
            .iter()
            .map(|k| module.declare_func_in_func(*k, &mut ctx.func))
            .collect();
        let entry_rt = runtime.declare_in(module, &mut ctx.func);
        let mark = self.profile.then(|| {
            module.declare_func_in_func(runtime.id(RuntimeFunction::ProfileMark), &mut ctx.func)
        });
        let mut gv_of: HashMap<DataId, GlobalValue> = HashMap::new();
        // In id order, so the entry function (and `--emit clif`) is reproducible.
        for d in self.constants {
            gv_of.insert(*d, module.declare_data_in_func(*d, &mut ctx.func));
        }
        {
            let (mut e, p) = Emitter::begin(&mut ctx.func, fctx, fma, entry_rt);
            let (pin, pout, pws) = (p[0], p[1], p[2]);
            let ptr_of = |e: &mut Emitter, loc: Location| -> Value {
                match loc {
                    Location::Input(i) => e.b.ins().load(ptr, tensor_flags(), pin, (i * 8) as i32),
                    Location::Output(j) => {
                        e.b.ins().load(ptr, tensor_flags(), pout, (j * 8) as i32)
                    }
                    Location::Constant(d) => e.b.ins().symbol_value(ptr, gv_of[&d]),
                    Location::Workspace(off) => e.b.ins().iadd_imm_s(pws, off as i64),
                }
            };
            for (i, &n) in self.schedule.iter().enumerate() {
                if self.skipped[i] {
                    continue;
                }
                if let Some(mark) = mark {
                    let k = e.int_const(i as i64);
                    e.b.ins().call(mark, &[k]);
                }
                // A predicated kernel: called only when its conditions hold, tested in order.
                let after = (!self.predicates[i].is_empty()).then(|| e.b.create_block());
                for p in &self.predicates[i] {
                    let after = after.expect("made for predicates");
                    let c = ptr_of(&mut e, locs[&p.condition]);
                    let byte = e.b.ins().load(types::I8, tensor_flags(), c, 0);
                    let next = e.b.create_block();
                    if p.when {
                        e.b.ins().brif(byte, next, &[], after, &[]);
                    } else {
                        e.b.ins().brif(byte, after, &[], next, &[]);
                    }
                    e.b.switch_to_block(next);
                    e.b.seal_block(next);
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
                args.push(match memory.scratch[i] {
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
                if let Some(after) = after {
                    e.b.ins().jump(after, &[]);
                    e.b.switch_to_block(after);
                    e.b.seal_block(after);
                }
            }
            if let Some(mark) = mark {
                let k = e.int_const(self.schedule.len() as i64);
                e.b.ins().call(mark, &[k]);
            }
            for &(j, v) in &memory.output_copies {
                let src = ptr_of(&mut e, locs[&v]);
                let dst = ptr_of(&mut e, Location::Output(j));
                let n = bytes_of(&memory.output_types[j])?;
                let z = e.int_const(0);
                e.copy_bytes(dst, z, src, z, n);
            }
            let z = e.b.ins().iconst(types::I32, 0);
            e.b.ins().return_(&[z]);
            e.b.finalize(module.target_config());
        }
        module
            .define_function(entry, ctx)
            .map_err(|e| CodegenError::new(format!("cranelift (entry): {e:?}")))?;
        module.clear_context(ctx);
        Ok(entry)
    }
}
