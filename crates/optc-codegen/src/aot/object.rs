//! Compiling a graph into a relocatable object.

use super::model::{symbol_name, AotModel, AotOptions, AotTensor};
use super::recorder::Recorder;
use super::runtime::define_runtime;
use crate::error::{CodegenError, Result};
use crate::module::{lower_graph_into, DataObjects, Entry, Lowered};
use crate::target::Target;
use cranelift_codegen::ir::{types, AbiParam, Function, InstBuilder, UserFuncName};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use optc_ir::Graph;

/// Lower `graph` for `target` into a relocatable object.
pub fn compile_object(graph: &Graph, target: &Target, opts: &AotOptions) -> Result<AotModel> {
    compile_object_variants(&[(0, graph)], target, opts)
}

/// Lower several variants of one model into one object: `(longest length, graph)` in
/// increasing order of length, each the model masked for every length up to its own
/// (`optc::dynamic_length`), the run's length the last input of each, every length axis
/// led by extents of 1 (so each variant's buffers are the first bytes of the longest's).
/// `optc_NAME_run` calls the first variant whose length is at least the run's (the last
/// for longer ones, whose guard refuses them); read-only data with the same bytes is stored
/// once. A variant's status names its kernel in [`AotModel::nodes`], every variant's
/// kernels one after another. One variant: the plain object.
pub fn compile_object_variants(
    variants: &[(usize, &Graph)],
    target: &Target,
    opts: &AotOptions,
) -> Result<AotModel> {
    let name = symbol_name(&opts.name);
    let Some(&(_, graph)) = variants.last() else {
        return Err(CodegenError::new("no graph to compile"));
    };
    if opts.keep_asm && target.name().starts_with("aarch64") {
        return Err(CodegenError::new(
            "assembly output (--emit asm) is only available for x86-64 targets",
        ));
    }
    let isa = target.object_isa()?;
    let triple = isa.triple().to_string();
    let builder = ObjectBuilder::new(
        isa,
        format!("optc_{name}"),
        cranelift_module::default_libcall_names(),
    )
    .map_err(|e| CodegenError::new(format!("object builder: {e}")))?;
    let mut module = Recorder {
        inner: ObjectModule::new(builder),
        keep_clif: opts.keep_clif,
        keep_asm: opts.keep_asm,
        clif: String::new(),
        asm: String::new(),
    };
    let run_name = format!("optc_{name}_run");
    if target.profile() {
        return Err(CodegenError::new(
            "profiling is for JIT runs (optc bench --profile); objects are not profiled",
        ));
    }
    let mut data = DataObjects::default();
    let mut lowered = vec![];
    for (k, &(length, g)) in variants.iter().enumerate() {
        let own = format!("{run_name}_{length}");
        let entry = if variants.len() == 1 {
            Entry {
                name: &run_name,
                linkage: Linkage::Export,
            }
        } else {
            Entry {
                name: &own,
                linkage: Linkage::Local,
            }
        };
        if k + 1 < variants.len() && g.inputs.len() != graph.inputs.len() {
            return Err(CodegenError::new(
                "the variants of a model differ in inputs",
            ));
        }
        lowered.push(lower_graph_into(
            &mut module,
            g,
            target,
            entry,
            true,
            &mut data,
        )?);
    }
    data.finish(&mut module)?;
    if variants.len() > 1 {
        define_dispatch(
            &mut module,
            &run_name,
            variants,
            &lowered,
            graph.inputs.len(),
        )?;
    }
    let workspace = lowered.iter().map(|l| l.workspace).max().unwrap_or(0);
    let nodes: Vec<(String, String)> = lowered.iter().flat_map(|l| l.nodes.clone()).collect();
    let lowered = lowered.pop().expect("one variant at least");
    define_runtime(&mut module, &format!("optc_{name}_set_parallel_for"))?;

    // `uint64_t optc_NAME_workspace_size(void)`.
    let mut sig = module.make_signature();
    sig.returns.push(AbiParam::new(types::I64));
    let ws_name = format!("optc_{name}_workspace_size");
    let id = module
        .declare_function(&ws_name, Linkage::Export, &sig)
        .map_err(|e| CodegenError::new(e.to_string()))?;
    let mut ctx = module.make_context();
    let cfg = module.target_config();
    ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    {
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let blk = b.create_block();
        b.switch_to_block(blk);
        b.seal_block(blk);
        let v = b.ins().iconst(types::I64, workspace as i64);
        b.ins().return_(&[v]);
        b.finalize(cfg);
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| CodegenError::new(format!("cranelift ({ws_name}): {e:?}")))?;

    let Recorder {
        inner, clif, asm, ..
    } = module;
    let object = inner
        .finish()
        .emit()
        .map_err(|e| CodegenError::new(format!("writing the object: {e}")))?;
    let input_types = graph.input_types();
    let inputs = graph
        .inputs
        .iter()
        .zip(input_types)
        .map(|(i, ty)| AotTensor {
            name: i.name.clone(),
            ty,
        })
        .collect();
    let outputs = graph
        .outputs
        .iter()
        .zip(&lowered.output_types)
        .map(|(o, ty)| AotTensor {
            name: o.name.clone(),
            ty: ty.clone(),
        })
        .collect();
    Ok(AotModel {
        name,
        target: target.name().to_string(),
        triple,
        object,
        inputs,
        outputs,
        workspace,
        nodes,
        clif,
        asm,
        length: None,
    })
}

/// `optc_NAME_run` of an object with several variants: reads the run's length (the last
/// input, an i64) and calls the first variant whose length is at least it, else the last;
/// a failing variant's status is moved past the kernels of the variants before it.
fn define_dispatch<M: Module>(
    module: &mut M,
    run_name: &str,
    variants: &[(usize, &Graph)],
    lowered: &[Lowered],
    inputs: usize,
) -> Result<()> {
    let ptr = module.target_config().pointer_type();
    let mut sig = module.make_signature();
    for _ in 0..3 {
        sig.params.push(AbiParam::new(ptr));
    }
    sig.returns.push(AbiParam::new(types::I32));
    let id = module
        .declare_function(run_name, Linkage::Export, &sig)
        .map_err(|e| CodegenError::new(e.to_string()))?;
    let mut ctx = module.make_context();
    let cfg = module.target_config();
    ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    let callees: Vec<_> = lowered
        .iter()
        .map(|l| module.declare_func_in_func(l.entry, &mut ctx.func))
        .collect();
    {
        let mut fctx = FunctionBuilderContext::new();
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let start = b.create_block();
        b.append_block_params_for_function_params(start);
        b.switch_to_block(start);
        b.seal_block(start);
        let args: Vec<_> = b.block_params(start).to_vec();
        let flags = crate::builder::tensor_flags();
        let at = b.ins().load(ptr, flags, args[0], (8 * (inputs - 1)) as i32);
        let length = b.ins().load(types::I64, flags, at, 0);
        let mut before = 0i64;
        for (k, callee) in callees.iter().enumerate() {
            let next = (k + 1 < callees.len()).then(|| b.create_block());
            if let Some(next) = next {
                let call = b.create_block();
                let fits = b.ins().icmp_imm_s(
                    cranelift_codegen::ir::condcodes::IntCC::SignedLessThanOrEqual,
                    length,
                    variants[k].0 as i64,
                );
                b.ins().brif(fits, call, &[], next, &[]);
                b.switch_to_block(call);
                b.seal_block(call);
            }
            let c = b.ins().call(*callee, &args);
            let status = b.inst_results(c)[0];
            let failed = b.create_block();
            let done = b.create_block();
            b.ins().brif(status, failed, &[], done, &[]);
            b.switch_to_block(failed);
            b.seal_block(failed);
            let moved = b.ins().iadd_imm_s(status, before << 8);
            b.ins().return_(&[moved]);
            b.switch_to_block(done);
            b.seal_block(done);
            b.ins().return_(&[status]);
            before += lowered[k].nodes.len() as i64;
            if let Some(next) = next {
                b.switch_to_block(next);
                b.seal_block(next);
            }
        }
        b.finalize(cfg);
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| CodegenError::new(format!("cranelift ({run_name}): {e:?}")))?;
    module.clear_context(&mut ctx);
    Ok(())
}
