//! Ahead-of-time compilation: the same lowering as the JIT, written to a relocatable object
//! through `cranelift-object`, plus the files around it (C header, Rust bindings, static
//! archive).
//!
//! An object is self-contained except for libm (`logf`, `pow`) and libc: every runtime
//! function the generated code calls ([`crate::runtime::SYMBOLS`]) is emitted into the object
//! as a local function (see `emitter`), so several models link into one binary.
//!
//! Symbols of a model named `NAME` (all other symbols are local):
//! - `int32_t optc_NAME_run(const void *const *inputs, void *const *outputs, void *workspace)`
//! - `uint64_t optc_NAME_workspace_size(void)`
//!
//! Constants (weights) live in read-only data. Output is byte-for-byte reproducible.

use crate::runtime::{self, RuntimeFunction};
use crate::{CodegenError, Target};
use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::{
    condcodes::{FloatCC, IntCC},
    types, AbiParam, Function, InstBuilder, Signature, UserFuncName,
};
use cranelift_codegen::Context;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{
    DataDescription, DataId, FuncId, Linkage, Module, ModuleDeclarations, ModuleReloc, ModuleResult,
};
use cranelift_object::{ObjectBuilder, ObjectModule};
use optc_ir::{DType, Graph, TensorType};
use std::fmt::Write as _;

type R<T> = Result<T, CodegenError>;

/// What to produce besides the object.
#[derive(Clone, Debug, Default)]
pub struct AotOptions {
    /// Model name used in symbols (`optc_<name>_run`); see [`symbol_name`].
    pub name: String,
    /// Keep the Cranelift IR text of every function ([`AotModel::clif`]).
    pub keep_clif: bool,
    /// Keep a disassembly of every function ([`AotModel::asm`]; x86-64 targets only).
    pub keep_asm: bool,
}

/// A named model input or output.
#[derive(Clone, Debug, PartialEq)]
pub struct AotTensor {
    pub name: String,
    pub ty: TensorType,
}

impl AotTensor {
    pub fn numel(&self) -> usize {
        self.ty.shape.iter().product()
    }
    pub fn bytes(&self) -> usize {
        self.numel() * self.ty.dtype.size()
    }
}

/// A model compiled to an object file.
#[derive(Clone, Debug)]
pub struct AotModel {
    /// Symbol name of the model (`optc_<name>_run`).
    pub name: String,
    /// Target name (`x86_64-avx2`, `aarch64-neon`, ...).
    pub target: String,
    /// Target triple of the object.
    pub triple: String,
    /// The relocatable ELF object.
    pub object: Vec<u8>,
    pub inputs: Vec<AotTensor>,
    pub outputs: Vec<AotTensor>,
    /// Bytes of 64-byte aligned scratch memory `run` needs.
    pub workspace: usize,
    /// `(node name, op name)` of every kernel in schedule order (runtime error positions).
    pub nodes: Vec<(String, String)>,
    /// Cranelift IR of every function, when [`AotOptions::keep_clif`].
    pub clif: String,
    /// Disassembly of every function, when [`AotOptions::keep_asm`].
    pub asm: String,
}

impl AotModel {
    /// `optc_<name>_run`.
    pub fn run_symbol(&self) -> String {
        format!("optc_{}_run", self.name)
    }
    /// `optc_<name>_workspace_size`.
    pub fn workspace_symbol(&self) -> String {
        format!("optc_{}_workspace_size", self.name)
    }
    /// Every global symbol the object defines.
    pub fn exported_symbols(&self) -> Vec<String> {
        vec![self.run_symbol(), self.workspace_symbol()]
    }
}

/// A C identifier from a model name: lower-case ASCII letters, digits and `_` (others become
/// `_`), never starting with a digit, never empty.
pub fn symbol_name(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 'm');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Runtime functions emitted into the object.

/// Emits the body of one runtime function into `b` (entry block already created, sealed and
/// holding the parameters). `libm` declares an imported libm function by name and signature.
type Emitter = fn(
    &mut FunctionBuilder,
    &mut dyn FnMut(&str, Signature, &mut Function) -> R<cranelift_codegen::ir::FuncRef>,
) -> R<()>;

/// The in-object implementation of a runtime function (the host one is in
/// [`crate::runtime`]; a test checks that both compute the same).
fn emitter(f: RuntimeFunction) -> Emitter {
    match f {
        RuntimeFunction::Log => emit_logf,
        RuntimeFunction::Pow => emit_powf,
        RuntimeFunction::IntegerPow => emit_powi,
        RuntimeFunction::ParallelFor => emit_parallel_for,
    }
}

fn sig_of(
    call_conv: cranelift_codegen::isa::CallConv,
    p: &[types::Type],
    r: &[types::Type],
) -> Signature {
    let mut s = Signature::new(call_conv);
    s.params.extend(p.iter().map(|t| AbiParam::new(*t)));
    s.returns.extend(r.iter().map(|t| AbiParam::new(*t)));
    s
}

fn params(b: &FunctionBuilder) -> Vec<cranelift_codegen::ir::Value> {
    let blk = b
        .current_block()
        .expect("emitters start in the entry block");
    b.block_params(blk).to_vec()
}

/// `logf(x)` from libm (what Rust's `f32::ln` calls).
fn emit_logf(
    b: &mut FunctionBuilder,
    libm: &mut dyn FnMut(&str, Signature, &mut Function) -> R<cranelift_codegen::ir::FuncRef>,
) -> R<()> {
    let p = params(b);
    let cc = b.func.signature.call_conv;
    let f = libm("logf", sig_of(cc, &[types::F32], &[types::F32]), b.func)?;
    let c = b.ins().call(f, &[p[0]]);
    let r = b.inst_results(c)[0];
    b.ins().return_(&[r]);
    Ok(())
}

/// `(f32)pow((f64)x, (f64)y)` (see `runtime::optc_rt_powf`).
fn emit_powf(
    b: &mut FunctionBuilder,
    libm: &mut dyn FnMut(&str, Signature, &mut Function) -> R<cranelift_codegen::ir::FuncRef>,
) -> R<()> {
    let p = params(b);
    let cc = b.func.signature.call_conv;
    let f = libm(
        "pow",
        sig_of(cc, &[types::F64, types::F64], &[types::F64]),
        b.func,
    )?;
    let x = b.ins().fpromote(types::F64, p[0]);
    let y = b.ins().fpromote(types::F64, p[1]);
    let c = b.ins().call(f, &[x, y]);
    let r = b.inst_results(c)[0];
    let r = b.ins().fdemote(types::F32, r);
    b.ins().return_(&[r]);
    Ok(())
}

/// `runtime::optc_rt_powi`, instruction for instruction.
fn emit_powi(
    b: &mut FunctionBuilder,
    libm: &mut dyn FnMut(&str, Signature, &mut Function) -> R<cranelift_codegen::ir::FuncRef>,
) -> R<()> {
    let p = params(b);
    let (x, ef, is_int, ei, lo, hi) = (p[0], p[1], p[2], p[3], p[4], p[5]);
    let cc = b.func.signature.call_conv;
    let pow = libm(
        "pow",
        sig_of(cc, &[types::F64, types::F64], &[types::F64]),
        b.func,
    )?;
    let i64t = types::I64;
    // k: is_int ? Some(ei) : (ef integral && 0 <= ef < 1.8e19) ? Some(ef as i64) : None.
    let int_blk = b.create_block();
    let flt_blk = b.create_block();
    let have_k = b.create_block(); // param: k
    let no_k = b.create_block();
    b.append_block_param(have_k, i64t);
    b.ins().brif(is_int, int_blk, &[], flt_blk, &[]);

    b.switch_to_block(int_blk);
    b.seal_block(int_blk);
    b.ins().jump(have_k, &[ei.into()]);

    b.switch_to_block(flt_blk);
    b.seal_block(flt_blk);
    let t = b.ins().trunc(ef);
    let fr = b.ins().fsub(ef, t);
    let zero = b.ins().f64const(0.0);
    let big = b.ins().f64const(1.8e19);
    let c1 = b.ins().fcmp(FloatCC::Equal, fr, zero);
    let c2 = b.ins().fcmp(FloatCC::GreaterThanOrEqual, ef, zero);
    let c3 = b.ins().fcmp(FloatCC::LessThan, ef, big);
    let c = b.ins().band(c1, c2);
    let c = b.ins().band(c, c3);
    let k = b.ins().fcvt_to_sint_sat(i64t, ef);
    b.ins().brif(c, have_k, &[k.into()], no_k, &[]);

    // Some(k): k >= 0 → wrapping binary power; else fall to the float path.
    b.switch_to_block(have_k);
    b.seal_block(have_k);
    let k = b.block_params(have_k)[0];
    let loop_hdr = b.create_block();
    let loop_body = b.create_block();
    let done = b.create_block();
    for (blk, n) in [(loop_hdr, 3), (done, 1)] {
        for _ in 0..n {
            b.append_block_param(blk, i64t);
        }
    }
    let neg = b.ins().icmp_imm_s(IntCC::SignedLessThan, k, 0);
    let one = b.ins().iconst(i64t, 1);
    b.ins()
        .brif(neg, no_k, &[], loop_hdr, &[x.into(), k.into(), one.into()]);

    b.switch_to_block(loop_hdr);
    let hp = b.block_params(loop_hdr).to_vec();
    let (base, e, acc) = (hp[0], hp[1], hp[2]);
    b.ins().brif(e, loop_body, &[], done, &[acc.into()]);

    b.switch_to_block(loop_body);
    b.seal_block(loop_body);
    let bit = b.ins().band_imm_u(e, 1);
    let prod = b.ins().imul(acc, base);
    let acc2 = b.ins().select(bit, prod, acc);
    let base2 = b.ins().imul(base, base);
    let e2 = b.ins().ushr_imm_u(e, 1);
    b.ins()
        .jump(loop_hdr, &[base2.into(), e2.into(), acc2.into()]);
    b.seal_block(loop_hdr);

    // None / negative k: f = is_int ? ei as f64 : ef; r = pow(x, f); NaN → 0, else clamp.
    b.switch_to_block(no_k);
    b.seal_block(no_k);
    let eif = b.ins().fcvt_from_sint(types::F64, ei);
    let f = b.ins().select(is_int, eif, ef);
    let xf = b.ins().fcvt_from_sint(types::F64, x);
    let c = b.ins().call(pow, &[xf, f]);
    let r = b.inst_results(c)[0];
    let lof = b.ins().fcvt_from_sint(types::F64, lo);
    let hif = b.ins().fcvt_from_sint(types::F64, hi);
    // f64::clamp: `if x < min { x = min } if x > max { x = max }`.
    let lt = b.ins().fcmp(FloatCC::LessThan, r, lof);
    let r = b.ins().select(lt, lof, r);
    let gt = b.ins().fcmp(FloatCC::GreaterThan, r, hif);
    let r = b.ins().select(gt, hif, r);
    let v = b.ins().fcvt_to_sint_sat(i64t, r);
    let is_nan = b.ins().fcmp(FloatCC::Unordered, r, r);
    let z = b.ins().iconst(i64t, 0);
    let v = b.ins().select(is_nan, z, v);
    b.ins().jump(done, &[v.into()]);

    b.switch_to_block(done);
    b.seal_block(done);
    let r = b.block_params(done)[0];
    b.ins().return_(&[r]);
    Ok(())
}

/// `optc_rt_parallel_for(task, ctx, n)`: calls `task(ctx, i)` for `i` in `0..n`, serially.
fn emit_parallel_for(
    b: &mut FunctionBuilder,
    _libm: &mut dyn FnMut(&str, Signature, &mut Function) -> R<cranelift_codegen::ir::FuncRef>,
) -> R<()> {
    let p = params(b);
    let (task, ctx, n) = (p[0], p[1], p[2]);
    let cc = b.func.signature.call_conv;
    let task_sig = b.import_signature(sig_of(cc, &[types::I64, types::I64], &[]));
    let hdr = b.create_block();
    let body = b.create_block();
    let done = b.create_block();
    b.append_block_param(hdr, types::I64);
    let z = b.ins().iconst(types::I64, 0);
    b.ins().jump(hdr, &[z.into()]);
    b.switch_to_block(hdr);
    let i = b.block_params(hdr)[0];
    let more = b.ins().icmp(IntCC::UnsignedLessThan, i, n);
    b.ins().brif(more, body, &[], done, &[]);
    b.switch_to_block(body);
    b.seal_block(body);
    b.ins().call_indirect(task_sig, task, &[ctx, i]);
    let i2 = b.ins().iadd_imm_u(i, 1);
    b.ins().jump(hdr, &[i2.into()]);
    b.seal_block(hdr);
    b.switch_to_block(done);
    b.seal_block(done);
    b.ins().return_(&[]);
    Ok(())
}

/// Define every imported runtime function of `module` locally.
fn define_runtime<M: Module>(module: &mut M) -> R<()> {
    let imports: Vec<(FuncId, String, Signature)> = module
        .declarations()
        .get_functions()
        .filter(|(_, d)| d.linkage == Linkage::Import)
        .filter_map(|(id, d)| d.name.clone().map(|n| (id, n, d.signature.clone())))
        .filter(|(_, n, _)| n.starts_with("optc_rt_"))
        .collect();
    let ptr = module.isa().pointer_type();
    let mut fctx = FunctionBuilderContext::new();
    let mut ctx = module.make_context();
    let cfg = module.target_config();
    for (_, name, sig) in imports {
        let Some(symbol) = runtime::lookup(&name) else {
            return Err(CodegenError::new(format!(
                "generated code calls {name}, which is not in the runtime table \
                 (optc_codegen::runtime::SYMBOLS)"
            )));
        };
        let want = symbol.signature(sig.call_conv, ptr);
        let got: Vec<_> = sig.params.iter().map(|a| a.value_type).collect();
        let got_r: Vec<_> = sig.returns.iter().map(|a| a.value_type).collect();
        let want_p: Vec<_> = want.params.iter().map(|a| a.value_type).collect();
        let want_r: Vec<_> = want.returns.iter().map(|a| a.value_type).collect();
        if got != want_p || got_r != want_r {
            return Err(CodegenError::new(format!(
                "runtime function {name} is called with signature {sig}, but the runtime \
                 table says {want}"
            )));
        }
        let emit = emitter(symbol.function);
        let id = module
            .declare_function(&name, Linkage::Local, &sig)
            .map_err(|e| CodegenError::new(format!("declaring {name}: {e}")))?;
        ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let blk = b.create_block();
            b.append_block_params_for_function_params(blk);
            b.switch_to_block(blk);
            b.seal_block(blk);
            let inner = &mut *module;
            let mut libm = |lname: &str,
                            s: Signature,
                            func: &mut Function|
             -> R<cranelift_codegen::ir::FuncRef> {
                let f = inner
                    .declare_function(lname, Linkage::Import, &s)
                    .map_err(|e| CodegenError::new(format!("declaring {lname}: {e}")))?;
                Ok(inner.declare_func_in_func(f, func))
            };
            emit(&mut b, &mut libm)?;
            b.finalize(cfg);
        }
        module
            .define_function(id, &mut ctx)
            .map_err(|e| CodegenError::new(format!("cranelift ({name}): {e:?}")))?;
        module.clear_context(&mut ctx);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// A module wrapper that records the IR and disassembly of each function.

struct Recorder {
    inner: ObjectModule,
    keep_clif: bool,
    keep_asm: bool,
    clif: String,
    asm: String,
}

impl Recorder {
    fn fname(&self, id: FuncId) -> String {
        self.inner
            .declarations()
            .get_function_decl(id)
            .linkage_name(id)
            .into_owned()
    }
}

impl Module for Recorder {
    fn isa(&self) -> &dyn cranelift_codegen::isa::TargetIsa {
        self.inner.isa()
    }
    fn declarations(&self) -> &ModuleDeclarations {
        self.inner.declarations()
    }
    fn declare_function(
        &mut self,
        name: &str,
        linkage: Linkage,
        signature: &Signature,
    ) -> ModuleResult<FuncId> {
        self.inner.declare_function(name, linkage, signature)
    }
    fn declare_anonymous_function(&mut self, signature: &Signature) -> ModuleResult<FuncId> {
        self.inner.declare_anonymous_function(signature)
    }
    fn declare_data(
        &mut self,
        name: &str,
        linkage: Linkage,
        writable: bool,
        tls: bool,
    ) -> ModuleResult<DataId> {
        self.inner.declare_data(name, linkage, writable, tls)
    }
    fn declare_anonymous_data(&mut self, writable: bool, tls: bool) -> ModuleResult<DataId> {
        self.inner.declare_anonymous_data(writable, tls)
    }
    fn define_function_with_control_plane(
        &mut self,
        func: FuncId,
        ctx: &mut Context,
        ctrl_plane: &mut ControlPlane,
    ) -> ModuleResult<()> {
        if self.keep_clif {
            let _ = writeln!(self.clif, "; {}\n{}", self.fname(func), ctx.func.display());
        }
        self.inner
            .define_function_with_control_plane(func, ctx, ctrl_plane)?;
        if self.keep_asm {
            let name = self.fname(func);
            if let Some(code) = ctx.compiled_code() {
                let bytes = code.code_buffer().to_vec();
                disassemble(&mut self.asm, &name, &bytes);
            }
        }
        Ok(())
    }
    fn define_function_bytes(
        &mut self,
        func_id: FuncId,
        alignment: u64,
        bytes: &[u8],
        relocs: &[ModuleReloc],
    ) -> ModuleResult<()> {
        self.inner
            .define_function_bytes(func_id, alignment, bytes, relocs)
    }
    fn define_data(&mut self, data_id: DataId, data: &DataDescription) -> ModuleResult<()> {
        self.inner.define_data(data_id, data)
    }
}

/// Intel-syntax disassembly of one x86-64 function (offsets from its start; relocated operands
/// show as zero).
fn disassemble(out: &mut String, name: &str, code: &[u8]) {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let _ = writeln!(out, "{name}:");
    let mut dec = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut fmt = IntelFormatter::new();
    let mut text = String::new();
    for ins in &mut dec {
        text.clear();
        fmt.format(&ins, &mut text);
        let _ = writeln!(out, "  {:6x}:  {text}", ins.ip());
    }
    out.push('\n');
}

// ---------------------------------------------------------------------------------------------
// Compilation.

/// Lower `graph` for `target` into a relocatable object.
pub fn compile_object(graph: &Graph, target: &Target, opts: &AotOptions) -> R<AotModel> {
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
    let lowered = crate::lower::lower_graph(&mut module, graph, target, &run_name)?;
    define_runtime(&mut module)?;

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
    })
}

// ---------------------------------------------------------------------------------------------
// Static archive.

/// A GNU `ar` archive holding `object` as member `member_name`, with a symbol index of
/// `symbols` (so linkers find them) and fixed timestamps/owners (reproducible).
pub fn static_archive(member_name: &str, object: &[u8], symbols: &[String]) -> Vec<u8> {
    fn header(out: &mut Vec<u8>, name: &str, size: usize) {
        let h = format!(
            "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            name, 0, 0, 0, 644, size
        );
        debug_assert_eq!(h.len(), 60);
        out.extend_from_slice(h.as_bytes());
    }
    let mut names = Vec::new();
    for s in symbols {
        names.extend_from_slice(s.as_bytes());
        names.push(0);
    }
    let symtab_len = 4 + 4 * symbols.len() + names.len();
    let symtab_pad = symtab_len % 2;
    // Member names longer than 15 chars would need a `//` table: shorten.
    let mut member: String = member_name.chars().take(15).collect();
    member.push('/');
    let obj_offset = 8 + 60 + symtab_len + symtab_pad;
    let mut out = b"!<arch>\n".to_vec();
    header(&mut out, "/", symtab_len);
    out.extend_from_slice(&(symbols.len() as u32).to_be_bytes());
    for _ in symbols {
        out.extend_from_slice(&(obj_offset as u32).to_be_bytes());
    }
    out.extend_from_slice(&names);
    if symtab_pad == 1 {
        out.push(b'\n');
    }
    header(&mut out, &member, object.len());
    out.extend_from_slice(object);
    if object.len() % 2 == 1 {
        out.push(b'\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// C header.

/// C element type of a dtype (`bool` is one byte holding 0 or 1).
pub fn c_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "float",
        DType::I64 => "int64_t",
        DType::I32 => "int32_t",
        DType::Bool | DType::U8 => "uint8_t",
        DType::I8 => "int8_t",
    }
}

/// Rust element type of a dtype (`bool` is `u8` holding 0 or 1).
pub fn rust_type(d: DType) -> &'static str {
    match d {
        DType::F32 => "f32",
        DType::I64 => "i64",
        DType::I32 => "i32",
        DType::Bool | DType::U8 => "u8",
        DType::I8 => "i8",
    }
}

fn c_str(s: &str) -> String {
    let mut o = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' => o.push_str("\\\""),
            b'\\' => o.push_str("\\\\"),
            0x20..=0x7e => o.push(b as char),
            _ => {
                let _ = write!(o, "\\{b:03o}");
            }
        }
    }
    o.push('"');
    o
}

/// A C header declaring the entry points and describing inputs, outputs and workspace.
/// `source` names the model in a comment (give a file name, not an absolute path, to keep
/// output reproducible across directories).
pub fn c_header(m: &AotModel, source: &str) -> String {
    let n = &m.name;
    let up = n.to_ascii_uppercase();
    let mut h = String::new();
    let _ = writeln!(
        h,
        "/* Generated by optc from {} for target {} ({}). Do not edit. */",
        source.replace("*/", "* /"),
        m.target,
        m.triple
    );
    let _ = write!(
        h,
        "#ifndef OPTC_{up}_H\n#define OPTC_{up}_H\n\n#include <stddef.h>\n#include <stdint.h>\n\n\
         #ifdef __cplusplus\nextern \"C\" {{\n#endif\n\n"
    );
    let _ = write!(
        h,
        "/* Run the model once.\n\
         \x20*   inputs[i]:  pointer to input i (see OPTC_{up}_INPUTi_*), dense row-major.\n\
         \x20*   outputs[i]: pointer to output i, written in full.\n\
         \x20*   workspace:  at least OPTC_{up}_WORKSPACE_SIZE bytes, 64-byte aligned; scratch.\n\
         \x20* Returns 0 on success, else ((kernel + 1) << 8) | code where code is\n\
         \x20* 1 (gather index out of range) or 2 (integer division by zero).\n\
         \x20* Reentrant: no global state; concurrent calls need separate workspaces. */\n\
         int32_t optc_{n}_run(const void *const *inputs, void *const *outputs, void *workspace);\n\n\
         /* Bytes of workspace optc_{n}_run needs (= OPTC_{up}_WORKSPACE_SIZE). */\n\
         uint64_t optc_{n}_workspace_size(void);\n\n"
    );
    let _ = writeln!(h, "#define OPTC_{up}_WORKSPACE_SIZE {}u", m.workspace);
    let _ = writeln!(h, "#define OPTC_{up}_NUM_INPUTS {}", m.inputs.len());
    let _ = writeln!(h, "#define OPTC_{up}_NUM_OUTPUTS {}\n", m.outputs.len());
    for (kind, list) in [("INPUT", &m.inputs), ("OUTPUT", &m.outputs)] {
        for (i, t) in list.iter().enumerate() {
            let p = format!("OPTC_{up}_{kind}{i}");
            let shape: Vec<String> = t.ty.shape.iter().map(|d| d.to_string()).collect();
            let _ = writeln!(
                h,
                "/* {} {i}: {} {} */",
                kind.to_ascii_lowercase(),
                c_str(&t.name),
                t.ty
            );
            let _ = writeln!(h, "#define {p}_NAME {}", c_str(&t.name));
            let _ = writeln!(h, "#define {p}_DTYPE \"{}\"", t.ty.dtype.name());
            let _ = writeln!(h, "#define {p}_CTYPE {}", c_type(t.ty.dtype));
            let _ = writeln!(h, "#define {p}_RANK {}", t.ty.shape.len());
            let _ = writeln!(h, "#define {p}_SHAPE {{{}}}", shape.join(", "));
            let _ = writeln!(h, "#define {p}_ELEMS {}u", t.numel());
            let _ = writeln!(h, "#define {p}_BYTES {}u\n", t.bytes());
        }
    }
    for (kind, list) in [("input", &m.inputs), ("output", &m.outputs)] {
        let bytes: Vec<String> = list.iter().map(|t| format!("{}u", t.bytes())).collect();
        let names: Vec<String> = list.iter().map(|t| c_str(&t.name)).collect();
        // Zero-length arrays are not C: pad with a sentinel.
        let pad = |v: Vec<String>, z: &str| {
            if v.is_empty() {
                z.to_string()
            } else {
                v.join(", ")
            }
        };
        let _ = writeln!(
            h,
            "static const size_t optc_{n}_{kind}_bytes[] = {{{}}};",
            pad(bytes, "0")
        );
        let dtypes: Vec<String> = list
            .iter()
            .map(|t| format!("\"{}\"", t.ty.dtype.name()))
            .collect();
        let _ = writeln!(
            h,
            "static const char *const optc_{n}_{kind}_names[] = {{{}}};",
            pad(names, "0")
        );
        let _ = writeln!(
            h,
            "static const char *const optc_{n}_{kind}_dtypes[] = {{{}}};",
            pad(dtypes, "0")
        );
        let _ = writeln!(
            h,
            "static const size_t optc_{n}_num_{kind}s = {};",
            list.len()
        );
    }
    // Kernel names for runtime errors: status >> 8 is 1 + the index into this table.
    let kernels: Vec<String> = m
        .nodes
        .iter()
        .map(|(node, op)| c_str(&format!("{node} ({op})")))
        .collect();
    let _ = writeln!(
        h,
        "/* Kernel (node) names: a failing run returns ((index + 1) << 8) | code. */\n\
         static const char *const optc_{n}_kernel_names[] = {{{}}};\n\
         static const size_t optc_{n}_num_kernels = {};",
        if kernels.is_empty() {
            "0".to_string()
        } else {
            kernels.join(", ")
        },
        m.nodes.len()
    );
    let _ = write!(
        h,
        "\n#ifdef __cplusplus\n}}\n#endif\n\n#endif /* OPTC_{up}_H */\n"
    );
    h
}

// ---------------------------------------------------------------------------------------------
// Rust bindings.

/// `tiny_cnn` → `TinyCnn`.
pub fn type_name(name: &str) -> String {
    let mut s = String::new();
    let mut up = true;
    for c in name.chars() {
        if c == '_' {
            up = true;
        } else if up {
            s.push(c.to_ascii_uppercase());
            up = false;
        } else {
            s.push(c);
        }
    }
    if s.is_empty() || s.starts_with(|c: char| c.is_ascii_digit()) {
        s.insert(0, 'M');
    }
    s
}

fn rust_ty_of(t: &AotTensor) -> String {
    format!("[{}; {}]", rust_type(t.ty.dtype), t.numel())
}

/// Safe Rust bindings: a struct `TypeName` (see [`type_name`]) owning its workspace and
/// output buffers, with `new`, `run` (arrays) and `run_slices` (slices). The object (or its
/// archive) must be linked, plus libm.
pub fn rust_bindings(m: &AotModel, source: &str) -> String {
    let n = &m.name;
    let ty = type_name(n);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "// Generated by optc from {source} for target {} ({}). Do not edit.",
        m.target, m.triple
    );
    let io_doc = |list: &[AotTensor]| -> String {
        list.iter()
            .enumerate()
            .map(|(i, t)| format!("/// - {i}: `{}`: `{}`\n", t.name.replace('`', "'"), t.ty))
            .collect()
    };
    let _ = write!(
        s,
        r#"
#[allow(dead_code)]
mod optc_{n}_ffi {{
    extern "C" {{
        pub fn optc_{n}_run(inputs: *const *const u8, outputs: *const *mut u8, workspace: *mut u8) -> i32;
    }}
}}

/// The model `{source}`, compiled ahead of time by optc.
///
/// Inputs:
{ins}///
/// Outputs:
{outs}///
/// Booleans are bytes holding 0 or 1.
///
/// # Threading
/// An instance owns its workspace and output buffers: [`{ty}::run`] takes `&mut self`, so
/// one instance runs one inference at a time, on the calling thread (the generated code
/// starts no threads and has no global state). `{ty}` is `Send` and `Sync`: move instances
/// between threads, or create one per thread to run in parallel.
///
/// # Allocation
/// Only [`{ty}::new`] allocates; `run` and `run_slices` do not.
#[allow(dead_code)]
pub struct {ty} {{
    workspace: Vec<{ty}Block64>,
"#,
        ins = io_doc(&m.inputs),
        outs = io_doc(&m.outputs),
    );
    for i in 0..m.outputs.len() {
        let _ = writeln!(s, "    out{i}: Box<{}>,", rust_ty_of(&m.outputs[i]));
    }
    let _ = write!(
        s,
        r#"}}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
#[allow(dead_code)]
struct {ty}Block64([u8; 64]);

/// A runtime error of the generated code: the kernel (node) and what went wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct {ty}Error {{
    /// The failing node's name, or empty when unknown.
    pub node: &'static str,
    /// The failing node's op.
    pub op: &'static str,
    /// What went wrong.
    pub message: &'static str,
}}

impl std::fmt::Display for {ty}Error {{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {{
        write!(f, "node {{}} ({{}}): {{}}", self.node, self.op, self.message)
    }}
}}

impl std::error::Error for {ty}Error {{}}

#[allow(dead_code, clippy::new_without_default)]
impl {ty} {{
    /// Input names, in order.
    pub const INPUT_NAMES: [&'static str; {ni}] = [{in_names}];
    /// Output names, in order.
    pub const OUTPUT_NAMES: [&'static str; {no}] = [{out_names}];
    /// Input shapes, in order.
    pub const INPUT_SHAPES: [&'static [usize]; {ni}] = [{in_shapes}];
    /// Output shapes, in order.
    pub const OUTPUT_SHAPES: [&'static [usize]; {no}] = [{out_shapes}];
    /// Bytes of scratch memory each instance holds.
    pub const WORKSPACE_SIZE: usize = {ws};
    /// The optc target the model was compiled for.
    pub const TARGET: &'static str = {target:?};
{lens}
    const NODES: [(&'static str, &'static str); {nn}] = [{nodes}];

    /// Allocate the workspace and the output buffers (the only allocation).
    pub fn new() -> Self {{
        {ty} {{
            workspace: vec![{ty}Block64([0; 64]); {ws}usize.div_ceil(64)],
"#,
        ni = m.inputs.len(),
        no = m.outputs.len(),
        in_names = m
            .inputs
            .iter()
            .map(|t| format!("{:?}", t.name))
            .collect::<Vec<_>>()
            .join(", "),
        out_names = m
            .outputs
            .iter()
            .map(|t| format!("{:?}", t.name))
            .collect::<Vec<_>>()
            .join(", "),
        in_shapes = m
            .inputs
            .iter()
            .map(|t| format!("&{:?}", t.ty.shape))
            .collect::<Vec<_>>()
            .join(", "),
        out_shapes = m
            .outputs
            .iter()
            .map(|t| format!("&{:?}", t.ty.shape))
            .collect::<Vec<_>>()
            .join(", "),
        ws = m.workspace,
        target = m.target,
        lens = m
            .inputs
            .iter()
            .enumerate()
            .map(|(i, t)| format!(
                "    /// Elements of input {i}.\n    pub const INPUT{i}_LEN: usize = {};\n",
                t.numel()
            ))
            .chain(m.outputs.iter().enumerate().map(|(i, t)| {
                format!(
                    "    /// Elements of output {i}.\n    pub const OUTPUT{i}_LEN: usize = {};\n",
                    t.numel()
                )
            }))
            .collect::<String>(),
        nn = m.nodes.len(),
        nodes = m
            .nodes
            .iter()
            .map(|(a, b)| format!("({a:?}, {b:?})"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (i, t) in m.outputs.iter().enumerate() {
        let _ = writeln!(
            s,
            "            out{i}: match vec![0 as {}; {}].into_boxed_slice().try_into() {{ Ok(b) => b, Err(_) => unreachable!(\"length is {}\") }},",
            rust_type(t.ty.dtype),
            t.numel(),
            t.numel()
        );
    }
    let arr_params: Vec<String> = m
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| format!("input{i}: &{}", rust_ty_of(t)))
        .collect();
    let slice_params: Vec<String> = m
        .inputs
        .iter()
        .enumerate()
        .map(|(i, t)| format!("input{i}: &[{}]", rust_type(t.ty.dtype)))
        .collect();
    let tuple = |v: Vec<String>| {
        if v.len() == 1 {
            v[0].clone()
        } else {
            format!("({})", v.join(", "))
        }
    };
    let arr_ret = tuple(
        m.outputs
            .iter()
            .map(|t| format!("&{}", rust_ty_of(t)))
            .collect(),
    );
    let slice_ret = tuple(
        m.outputs
            .iter()
            .map(|t| format!("&[{}]", rust_type(t.ty.dtype)))
            .collect(),
    );
    let arr_vals = tuple(
        (0..m.outputs.len())
            .map(|i| format!("&*self.out{i}"))
            .collect(),
    );
    let slice_vals = tuple(
        (0..m.outputs.len())
            .map(|i| format!("&self.out{i}[..]"))
            .collect(),
    );
    let in_ptrs: Vec<String> = (0..m.inputs.len())
        .map(|i| format!("input{i}.as_ptr() as *const u8"))
        .collect();
    let out_ptrs: Vec<String> = (0..m.outputs.len())
        .map(|i| format!("self.out{i}.as_mut_ptr() as *mut u8"))
        .collect();
    let in_args: Vec<String> = (0..m.inputs.len()).map(|i| format!("input{i}")).collect();
    let mut checks = String::new();
    for (i, t) in m.inputs.iter().enumerate() {
        let _ = writeln!(
            checks,
            "        if input{i}.len() != {} {{ return Err({ty}Error {{ node: \"\", op: \"\", message: \"input {i} ({}) must have {} elements\" }}); }}",
            t.numel(),
            t.name.escape_default(),
            t.numel()
        );
    }
    let _ = write!(
        s,
        r#"        }}
    }}

    /// Run on fixed-size arrays (inputs in model order); returns the outputs.
    pub fn run(&mut self, {arr_params}) -> Result<{arr_ret}, {ty}Error> {{
        self.call([{in_ptrs}])?;
        Ok({arr_vals})
    }}

    /// Run on slices (checked lengths, inputs in model order); returns the outputs.
    pub fn run_slices(&mut self, {slice_params}) -> Result<{slice_ret}, {ty}Error> {{
{checks}        self.call([{in_slice_ptrs}])?;
        Ok({slice_vals})
    }}

    fn call(&mut self, inputs: [*const u8; {ni}]) -> Result<(), {ty}Error> {{
        let outputs: [*mut u8; {no}] = [{out_ptrs}];
        // SAFETY: every input pointer addresses exactly the number of elements of the model's
        // input (arrays by type, slices checked by `run_slices`), the outputs are this
        // instance's buffers of the model's output sizes, and the workspace is 64-byte aligned
        // with at least WORKSPACE_SIZE bytes; the generated code touches nothing else.
        let status = unsafe {{
            optc_{n}_ffi::optc_{n}_run(inputs.as_ptr(), outputs.as_ptr(), self.workspace.as_mut_ptr() as *mut u8)
        }};
        if status == 0 {{
            return Ok(());
        }}
        let (node, op) = ((status >> 8) as usize)
            .checked_sub(1)
            .and_then(|k| Self::NODES.get(k).copied())
            .unwrap_or(("", ""));
        let message = match status & 0xff {{
            1 => "gather index out of range",
            2 => "integer division by zero",
            _ => "runtime error",
        }};
        Err({ty}Error {{ node, op, message }})
    }}
}}
"#,
        arr_params = arr_params.join(", "),
        slice_params = slice_params.join(", "),
        in_ptrs = in_ptrs.join(", "),
        in_slice_ptrs = in_ptrs.join(", "),
        out_ptrs = out_ptrs.join(", "),
        ni = m.inputs.len(),
        no = m.outputs.len(),
    );
    let _ = in_args;
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The emitted runtime functions (JIT-compiled here) compute exactly what the host
    /// functions in `runtime.rs` compute.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn emitted_runtime_matches_host_runtime() {
        use cranelift_jit::{JITBuilder, JITModule};
        let target = Target::parse("x86_64-sse4.2").unwrap();
        let isa = target.jit_isa().unwrap();
        let mut m = JITModule::new(JITBuilder::with_isa(
            isa,
            cranelift_module::default_libcall_names(),
        ));
        let cc = m.isa().default_call_conv();
        let ptr_ty = m.isa().pointer_type();
        let mut ids = vec![];
        for symbol in &runtime::SYMBOLS {
            let sig = symbol.signature(cc, ptr_ty);
            let id = m
                .declare_function(symbol.name, Linkage::Import, &sig)
                .unwrap();
            ids.push(id);
        }
        define_runtime(&mut m).unwrap();
        m.finalize_definitions().unwrap();
        let ptr = |f: RuntimeFunction| m.get_finalized_function(ids[f as usize]);
        // SAFETY: each pointer is a finalized function with exactly the transmuted signature
        // (the runtime table's params and returns, system-V).
        let (logf, powf, powi, par) = unsafe {
            (
                std::mem::transmute::<*const u8, extern "C" fn(f32) -> f32>(ptr(
                    RuntimeFunction::Log,
                )),
                std::mem::transmute::<*const u8, extern "C" fn(f32, f32) -> f32>(ptr(
                    RuntimeFunction::Pow,
                )),
                std::mem::transmute::<*const u8, extern "C" fn(i64, f64, i32, i64, i64, i64) -> i64>(
                    ptr(RuntimeFunction::IntegerPow),
                ),
                std::mem::transmute::<
                    *const u8,
                    extern "C" fn(extern "C" fn(*const u8, u64), *const u8, u64),
                >(ptr(RuntimeFunction::ParallelFor)),
            )
        };
        let fs = [
            0.0f32,
            -0.0,
            1.0,
            -1.0,
            0.5,
            2.0,
            3.7,
            -2.5,
            1e-30,
            1e30,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            123.456,
        ];
        for &x in &fs {
            assert_eq!(
                logf(x).to_bits(),
                crate::runtime::optc_rt_logf(x).to_bits(),
                "logf({x})"
            );
            for &y in &fs {
                assert_eq!(
                    powf(x, y).to_bits(),
                    crate::runtime::optc_rt_powf(x, y).to_bits(),
                    "powf({x}, {y})"
                );
            }
        }
        let xs = [0i64, 1, -1, 2, -3, 7, 255, 1 << 40, i64::MIN, i64::MAX];
        let efs = [
            0.0f64,
            -0.0,
            1.0,
            2.0,
            3.0,
            0.5,
            -1.0,
            -2.5,
            63.0,
            1e19,
            9.3e18,
            f64::NAN,
        ];
        let ranges = [
            (i64::MIN, i64::MAX),
            (-128, 127),
            (0, 255),
            (-(1 << 31), (1 << 31) - 1),
        ];
        for &x in &xs {
            for &(lo, hi) in &ranges {
                for &ef in &efs {
                    let want = crate::runtime::optc_rt_powi(x, ef, 0, 0, lo, hi);
                    assert_eq!(powi(x, ef, 0, 0, lo, hi), want, "powi({x}, {ef}, float)");
                }
                for &ei in &[0i64, 1, 2, 5, 63, 64, -1, -2, i64::MAX] {
                    let want = crate::runtime::optc_rt_powi(x, ei as f64, 1, ei, lo, hi);
                    let got = powi(x, ei as f64, 1, ei, lo, hi);
                    assert_eq!(got, want, "powi({x}, {ei}, int)");
                }
            }
        }
        extern "C" fn task(ctx: *const u8, i: u64) {
            // SAFETY: ctx points to the `[AtomicU64; 8]` below, alive during the call.
            let hits = unsafe { &*(ctx as *const [std::sync::atomic::AtomicU64; 8]) };
            hits[i as usize].fetch_add(i + 1, std::sync::atomic::Ordering::Relaxed);
        }
        let hits: [std::sync::atomic::AtomicU64; 8] = Default::default();
        par(task, &hits as *const _ as *const u8, 8);
        for (i, h) in hits.iter().enumerate() {
            assert_eq!(h.load(std::sync::atomic::Ordering::Relaxed), i as u64 + 1);
        }
        par(task, &hits as *const _ as *const u8, 0);
        // SAFETY: no code from the module runs after this.
        unsafe { m.free_memory() };
    }

    #[test]
    fn symbol_names_are_c_identifiers() {
        assert_eq!(symbol_name("Tiny-CNN.v2"), "tiny_cnn_v2");
        assert_eq!(symbol_name("18net"), "m18net");
        assert_eq!(symbol_name(""), "m");
        assert_eq!(type_name("tiny_cnn"), "TinyCnn");
    }

    #[test]
    fn archive_layout() {
        let a = static_archive("x.o", b"abc", &["f".to_string(), "gg".to_string()]);
        assert!(a.starts_with(b"!<arch>\n/               0   "));
        // symtab: 4 + 8 + 5 = 17 bytes, padded to 18.
        let obj = 8 + 60 + 18;
        assert_eq!(&a[8 + 60..8 + 64], &2u32.to_be_bytes());
        assert_eq!(&a[8 + 64..8 + 68], &(obj as u32).to_be_bytes());
        assert_eq!(&a[obj..obj + 16], b"x.o/            ");
        assert_eq!(&a[obj + 60..obj + 63], b"abc");
        assert_eq!(a.len() % 2, 0);
    }
}
