//! Compiling a graph into a relocatable object.

use super::model::{symbol_name, AotModel, AotOptions, AotTensor};
use super::recorder::Recorder;
use super::runtime::define_runtime;
use crate::error::{CodegenError, Result};
use crate::target::Target;
use cranelift_codegen::ir::{types, AbiParam, Function, InstBuilder, UserFuncName};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{Linkage, Module};
use cranelift_object::{ObjectBuilder, ObjectModule};
use optc_ir::Graph;

/// Lower `graph` for `target` into a relocatable object.
pub fn compile_object(graph: &Graph, target: &Target, opts: &AotOptions) -> Result<AotModel> {
    let name = symbol_name(&opts.name);
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
    let lowered = crate::module::lower_graph(&mut module, graph, target, &run_name, true)?;
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
        let v = b.ins().iconst(types::I64, lowered.workspace as i64);
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
        workspace: lowered.workspace,
        nodes: lowered.nodes,
        clif,
        asm,
        length: None,
    })
}
