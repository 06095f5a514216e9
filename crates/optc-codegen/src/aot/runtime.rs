//! The runtime functions generated code calls ([`crate::runtime::SYMBOLS`]), emitted into the
//! object as local functions: one [`RuntimeEmitter`] per [`RuntimeFunction`], instruction for
//! instruction what the host function computes (a test compares them).

use crate::error::{CodegenError, Result};
use crate::runtime::{self, RuntimeFunction};
use cranelift_codegen::ir::{
    condcodes::{FloatCC, IntCC},
    types, AbiParam, FuncRef, Function, GlobalValue, InstBuilder, MemFlagsData, Signature,
    UserFuncName,
};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_module::{DataDescription, DataId, FuncId, Linkage, Module};

/// What a runtime function's body refers to outside itself, declared in the function being
/// built.
trait Imports {
    /// An imported libm function, by name and signature.
    fn libm(&mut self, name: &str, sig: Signature, func: &mut Function) -> Result<FuncRef>;
    /// The address of the object's parallel-for callback slot ([`CALLBACK_SLOT`]).
    fn callback_slot(&mut self, func: &mut Function) -> GlobalValue;
}

/// [`Imports`] declared in `module`.
struct ModuleImports<'a, M: Module> {
    module: &'a mut M,
    slot: DataId,
}

impl<M: Module> Imports for ModuleImports<'_, M> {
    fn libm(&mut self, name: &str, sig: Signature, func: &mut Function) -> Result<FuncRef> {
        let f = self
            .module
            .declare_function(name, Linkage::Import, &sig)
            .map_err(|e| CodegenError::new(format!("declaring {name}: {e}")))?;
        Ok(self.module.declare_func_in_func(f, func))
    }
    fn callback_slot(&mut self, func: &mut Function) -> GlobalValue {
        self.module.declare_data_in_func(self.slot, func)
    }
}

/// The object-local data the model's `set_parallel_for` entry point writes and
/// `optc_rt_parallel_for` reads: two pointers, the embedder's callback (null: run serially)
/// and its user pointer. Zero-initialized, so an object runs serially until one is set.
const CALLBACK_SLOT: &str = "optc_parallel_for_callback";

/// Emits the body of one runtime function into `b` (entry block already created, sealed and
/// holding the parameters), declaring what it calls or reads through `imports`.
type RuntimeEmitter = fn(&mut FunctionBuilder, &mut dyn Imports) -> Result<()>;

/// The in-object implementation of a runtime function (the host one is in
/// [`crate::runtime`]; a test checks that both compute the same).
fn emitter(f: RuntimeFunction) -> RuntimeEmitter {
    match f {
        RuntimeFunction::Log => emit_logf,
        RuntimeFunction::Pow => emit_powf,
        RuntimeFunction::IntegerPow => emit_powi,
        RuntimeFunction::ParallelFor => emit_parallel_for,
        RuntimeFunction::UnaryMath => emit_unary_math,
        RuntimeFunction::FMod => emit_fmodf,
        RuntimeFunction::ProfileMark => emit_return,
        RuntimeFunction::MathF64 => emit_math_f64,
    }
}

/// `runtime::optc_rt_math_f64`: a jump on the code to a call of the libm function (of one
/// argument, or two for `pow` and `fmod`).
fn emit_math_f64(b: &mut FunctionBuilder, imports: &mut dyn Imports) -> Result<()> {
    let p = params(b);
    let (x, y, code) = (p[0], p[1], p[2]);
    libm_switch(b, imports, code, &runtime::MATH_F64, types::F64, &|i| {
        if i as i64 >= runtime::F64_POW {
            vec![x, y]
        } else {
            vec![x]
        }
    })
}

/// A jump on `code` to a call of libm function `names[code]` (of type `ty`, on the
/// arguments `args(code)`) whose result is returned; NaN for any other code.
fn libm_switch(
    b: &mut FunctionBuilder,
    imports: &mut dyn Imports,
    code: cranelift_codegen::ir::Value,
    names: &[&str],
    ty: types::Type,
    args: &dyn Fn(usize) -> Vec<cranelift_codegen::ir::Value>,
) -> Result<()> {
    let cc = b.func.signature.call_conv;
    let blocks: Vec<_> = names.iter().map(|_| b.create_block()).collect();
    let fallback = b.create_block();
    let table: Vec<_> = blocks
        .iter()
        .map(|&blk| b.func.dfg.block_call(blk, &[]))
        .collect();
    let default = b.func.dfg.block_call(fallback, &[]);
    let jt = b
        .func
        .create_jump_table(cranelift_codegen::ir::JumpTableData::new(default, &table));
    b.ins().br_table(code, jt);
    for (i, (&blk, name)) in blocks.iter().zip(names).enumerate() {
        b.switch_to_block(blk);
        b.seal_block(blk);
        let a = args(i);
        let f = imports.libm(name, sig_of(cc, &vec![ty; a.len()], &[ty]), b.func)?;
        let c = b.ins().call(f, &a);
        let r = b.inst_results(c)[0];
        b.ins().return_(&[r]);
    }
    b.switch_to_block(fallback);
    b.seal_block(fallback);
    let nan = if ty == types::F64 {
        b.ins().f64const(f64::NAN)
    } else {
        b.ins().f32const(f32::NAN)
    };
    b.ins().return_(&[nan]);
    Ok(())
}

/// `runtime::profile::optc_rt_profile_mark` when nothing records: objects are not profiled.
fn emit_return(b: &mut FunctionBuilder, _imports: &mut dyn Imports) -> Result<()> {
    b.ins().return_(&[]);
    Ok(())
}

/// `runtime::optc_rt_unary_math`: a jump on the code to a call of the libm function.
fn emit_unary_math(b: &mut FunctionBuilder, imports: &mut dyn Imports) -> Result<()> {
    let p = params(b);
    let (x, code) = (p[0], p[1]);
    libm_switch(b, imports, code, &runtime::UNARY_MATH, types::F32, &|_| {
        vec![x]
    })
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

/// `fmodf(x, y)` from libm (what Rust's `%` on f32 calls).
fn emit_fmodf(b: &mut FunctionBuilder, imports: &mut dyn Imports) -> Result<()> {
    let p = params(b);
    let cc = b.func.signature.call_conv;
    let f = imports.libm(
        "fmodf",
        sig_of(cc, &[types::F32, types::F32], &[types::F32]),
        b.func,
    )?;
    let c = b.ins().call(f, &[p[0], p[1]]);
    let r = b.inst_results(c)[0];
    b.ins().return_(&[r]);
    Ok(())
}

/// `logf(x)` from libm (what Rust's `f32::ln` calls).
fn emit_logf(b: &mut FunctionBuilder, imports: &mut dyn Imports) -> Result<()> {
    let p = params(b);
    let cc = b.func.signature.call_conv;
    let f = imports.libm("logf", sig_of(cc, &[types::F32], &[types::F32]), b.func)?;
    let c = b.ins().call(f, &[p[0]]);
    let r = b.inst_results(c)[0];
    b.ins().return_(&[r]);
    Ok(())
}

/// `(f32)pow((f64)x, (f64)y)` (see `runtime::optc_rt_powf`).
fn emit_powf(b: &mut FunctionBuilder, imports: &mut dyn Imports) -> Result<()> {
    let p = params(b);
    let cc = b.func.signature.call_conv;
    let f = imports.libm(
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
fn emit_powi(b: &mut FunctionBuilder, imports: &mut dyn Imports) -> Result<()> {
    let p = params(b);
    let (x, ef, is_int, ei, lo, hi) = (p[0], p[1], p[2], p[3], p[4], p[5]);
    let cc = b.func.signature.call_conv;
    let pow = imports.libm(
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

/// `optc_rt_parallel_for(task, ctx, n)`: when the embedder has set a callback (in
/// [`CALLBACK_SLOT`], see [`define_parallel_for_setter`]), `callback(user, task, ctx, n)`,
/// which runs `task(ctx, i)` for every `i` in `0..n` on its threads; else the same calls
/// serially, in order.
fn emit_parallel_for(b: &mut FunctionBuilder, imports: &mut dyn Imports) -> Result<()> {
    let p = params(b);
    let (task, ctx, n) = (p[0], p[1], p[2]);
    let cc = b.func.signature.call_conv;
    let ptr = b.func.dfg.value_type(task);
    let slot = imports.callback_slot(b.func);
    let slot = b.ins().symbol_value(ptr, slot);
    let callback = b.ins().load(ptr, MemFlagsData::trusted(), slot, 0);
    let user = b
        .ins()
        .load(ptr, MemFlagsData::trusted(), slot, ptr.bytes() as i32);
    let threaded = b.create_block();
    let serial = b.create_block();
    b.ins().brif(callback, threaded, &[], serial, &[]);

    b.switch_to_block(threaded);
    b.seal_block(threaded);
    let callback_sig = b.import_signature(sig_of(cc, &[ptr, ptr, ptr, types::I64], &[]));
    b.ins()
        .call_indirect(callback_sig, callback, &[user, task, ctx, n]);
    b.ins().return_(&[]);

    b.switch_to_block(serial);
    b.seal_block(serial);
    let task_sig = b.import_signature(sig_of(cc, &[ptr, types::I64], &[]));
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

/// `void NAME(optc_parallel_for_fn callback, void *user)`, exported: stores both in
/// [`CALLBACK_SLOT`] (a null callback: serial again).
fn define_parallel_for_setter<M: Module>(module: &mut M, name: &str, slot: DataId) -> Result<()> {
    let ptr = module.isa().pointer_type();
    let mut sig = module.make_signature();
    sig.params.extend([AbiParam::new(ptr), AbiParam::new(ptr)]);
    let id = module
        .declare_function(name, Linkage::Export, &sig)
        .map_err(|e| CodegenError::new(format!("declaring {name}: {e}")))?;
    let mut ctx = module.make_context();
    ctx.func = Function::with_name_signature(UserFuncName::user(0, id.as_u32()), sig);
    let slot = module.declare_data_in_func(slot, &mut ctx.func);
    let mut fctx = FunctionBuilderContext::new();
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
        let blk = b.create_block();
        b.append_block_params_for_function_params(blk);
        b.switch_to_block(blk);
        b.seal_block(blk);
        let p = params(&b);
        let addr = b.ins().symbol_value(ptr, slot);
        b.ins()
            .store(MemFlagsData::trusted(), p[1], addr, ptr.bytes() as i32);
        b.ins().store(MemFlagsData::trusted(), p[0], addr, 0);
        b.ins().return_(&[]);
        b.finalize(module.target_config());
    }
    module
        .define_function(id, &mut ctx)
        .map_err(|e| CodegenError::new(format!("cranelift ({name}): {e:?}")))
}

/// Define every imported runtime function of `module` locally, and the exported
/// `setter_name(callback, user)` that hands `optc_rt_parallel_for` the embedder's threads
/// (the object-local [`CALLBACK_SLOT`]).
pub(super) fn define_runtime<M: Module>(module: &mut M, setter_name: &str) -> Result<()> {
    let imports: Vec<(FuncId, String, Signature)> = module
        .declarations()
        .get_functions()
        .filter(|(_, d)| d.linkage == Linkage::Import)
        .filter_map(|(id, d)| d.name.clone().map(|n| (id, n, d.signature.clone())))
        .filter(|(_, n, _)| n.starts_with("optc_rt_"))
        .collect();
    let ptr = module.isa().pointer_type();
    let slot = module
        .declare_data(CALLBACK_SLOT, Linkage::Local, true, false)
        .map_err(|e| CodegenError::new(format!("declaring {CALLBACK_SLOT}: {e}")))?;
    let mut zeros = DataDescription::new();
    zeros.define_zeroinit(2 * ptr.bytes() as usize);
    zeros.set_align(u64::from(ptr.bytes()));
    module
        .define_data(slot, &zeros)
        .map_err(|e| CodegenError::new(format!("defining {CALLBACK_SLOT}: {e}")))?;
    define_parallel_for_setter(module, setter_name, slot)?;
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
            let mut imports = ModuleImports {
                module: &mut *module,
                slot,
            };
            emit(&mut b, &mut imports)?;
            b.finalize(cfg);
        }
        module
            .define_function(id, &mut ctx)
            .map_err(|e| CodegenError::new(format!("cranelift ({name}): {e:?}")))?;
        module.clear_context(&mut ctx);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Target;

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
        define_runtime(&mut m, "optc_test_set_parallel_for").unwrap();
        let Some(cranelift_module::FuncOrDataId::Func(setter)) =
            m.get_name("optc_test_set_parallel_for")
        else {
            panic!("no setter defined");
        };
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
        // SAFETY: as above, the runtime table's signature of `optc_rt_unary_math`.
        let unary_math = unsafe {
            std::mem::transmute::<*const u8, extern "C" fn(f32, i32) -> f32>(ptr(
                RuntimeFunction::UnaryMath,
            ))
        };
        for &x in &fs {
            for code in 0..=runtime::UNARY_MATH.len() as i32 {
                assert_eq!(
                    unary_math(x, code).to_bits(),
                    crate::runtime::optc_rt_unary_math(x, code).to_bits(),
                    "unary math {code} ({x})"
                );
            }
        }
        // SAFETY: as above, the runtime table's signature of `optc_rt_math_f64`.
        let math_f64 = unsafe {
            std::mem::transmute::<*const u8, extern "C" fn(f64, f64, i32) -> f64>(ptr(
                RuntimeFunction::MathF64,
            ))
        };
        for &x in &fs {
            for &y in &[0.0f32, -1.5, 2.0, 0.3, f32::NAN, f32::INFINITY] {
                let (x, y) = (x as f64 * 1.000_000_000_1, y as f64);
                for code in 0..=runtime::MATH_F64.len() as i32 {
                    let (got, want) = (
                        math_f64(x, y, code),
                        crate::runtime::optc_rt_math_f64(x, y, code),
                    );
                    assert!(
                        got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                        "f64 math {code} ({x}, {y})"
                    );
                }
            }
        }
        // SAFETY: as above, the runtime table's signature of `optc_rt_fmodf`.
        let fmodf = unsafe {
            std::mem::transmute::<*const u8, extern "C" fn(f32, f32) -> f32>(ptr(
                RuntimeFunction::FMod,
            ))
        };
        for &x in &fs {
            for &y in &fs {
                let (got, want) = (fmodf(x, y), crate::runtime::optc_rt_fmodf(x, y));
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "fmodf({x}, {y})"
                );
            }
        }
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

        // With a callback set, `optc_rt_parallel_for` hands it the whole loop: here two
        // threads, one taking the even items, the other the odd ones.
        type Task = extern "C" fn(*const u8, u64);
        extern "C" fn two_threads(user: *mut u8, task: Task, ctx: *const u8, n: u64) {
            // SAFETY: user points to the `AtomicU64` call counter below, alive during runs.
            let calls = unsafe { &*(user as *const std::sync::atomic::AtomicU64) };
            calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let ctx = ctx as usize;
            std::thread::scope(|s| {
                for first in [0, 1] {
                    s.spawn(move || {
                        for i in (first..n).step_by(2) {
                            task(ctx as *const u8, i);
                        }
                    });
                }
            });
        }
        // SAFETY: the setter is a finalized function of this signature (two pointers).
        let set = unsafe {
            std::mem::transmute::<
                *const u8,
                extern "C" fn(Option<extern "C" fn(*mut u8, Task, *const u8, u64)>, *mut u8),
            >(m.get_finalized_function(setter))
        };
        let calls = std::sync::atomic::AtomicU64::new(0);
        set(Some(two_threads), &calls as *const _ as *mut u8);
        par(task, &hits as *const _ as *const u8, 8);
        par(task, &hits as *const _ as *const u8, 3);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
        for (i, h) in hits.iter().enumerate() {
            let want = (i as u64 + 1) * if i < 3 { 3 } else { 2 };
            assert_eq!(
                h.load(std::sync::atomic::Ordering::Relaxed),
                want,
                "item {i}"
            );
        }
        // A null callback: serial again.
        set(None, std::ptr::null_mut());
        par(task, &hits as *const _ as *const u8, 1);
        assert_eq!(calls.load(std::sync::atomic::Ordering::Relaxed), 2);
        assert_eq!(hits[0].load(std::sync::atomic::Ordering::Relaxed), 4);
        // SAFETY: no code from the module runs after this.
        unsafe { m.free_memory() };
    }
}
