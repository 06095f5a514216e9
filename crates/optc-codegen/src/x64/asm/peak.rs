//! A register-only FMA loop that measures the core's peak (benches).

use super::registers::{ymm, zmm};
use iced_x86::code_asm::asm_traits::{CodeAsmVfmadd231ps, CodeAsmVxorps};
use iced_x86::code_asm::*;

/// Assemble a register-only FMA loop for measuring peak throughput:
/// `fn(iters: u64)` runs `iters` iterations of `acc` independent `vfmadd231ps ymm` (8 lanes,
/// 2 flops each), i.e. `iters * acc * 16` flops.
pub fn fma_peak_loop(acc: usize) -> Result<Vec<u8>, IcedError> {
    fma_loop(acc, ymm)
}

/// [`fma_peak_loop`] with `vfmadd231ps zmm` (16 lanes): `iters * acc * 32` flops. Needs
/// AVX-512F.
pub fn fma_peak_loop_512(acc: usize) -> Result<Vec<u8>, IcedError> {
    fma_loop(acc, zmm)
}

/// The loop of [`fma_peak_loop`] on the vector registers `reg` names (registers 14 and 15
/// are the sources).
fn fma_loop<R: Copy>(acc: usize, reg: fn(usize) -> R) -> Result<Vec<u8>, IcedError>
where
    CodeAssembler: CodeAsmVxorps<R, R, R> + CodeAsmVfmadd231ps<R, R, R>,
{
    let acc = acc.clamp(1, 14);
    let mut a = CodeAssembler::new(64)?;
    for r in (0..acc).chain([14, 15]) {
        a.vxorps(reg(r), reg(r), reg(r))?;
    }
    let mut l = a.create_label();
    let mut out = a.create_label();
    a.test(rdi, rdi)?;
    a.jz(out)?;
    a.set_label(&mut l)?;
    for r in 0..acc {
        a.vfmadd231ps(reg(r), reg(14), reg(15))?;
    }
    a.dec(rdi)?;
    a.jnz(l)?;
    a.set_label(&mut out)?;
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

/// Measure this core's 256-bit FMA peak: run [`fma_peak_loop`] (10 independent accumulators,
/// so FMA latency is hidden) through the JIT for about `seconds`, best of 5; GFLOP/s.
pub fn fma_peak_gflops(seconds: f64) -> Result<f64, crate::CodegenError> {
    fma_peak(seconds, false)
}

/// The FMA peak of the vectors `target`'s microkernels use: 512-bit when it takes the
/// AVX-512 kernels (on a host that has them), else 256-bit ([`fma_peak_gflops`]).
pub fn fma_peak_gflops_for(
    target: &crate::Target,
    seconds: f64,
) -> Result<f64, crate::CodegenError> {
    let wide = target.microkernel_isa() == super::Isa::Avx512
        && cfg!(target_arch = "x86_64")
        && crate::Target::host()?.has_avx512f();
    fma_peak(seconds, wide)
}

fn fma_peak(seconds: f64, wide: bool) -> Result<f64, crate::CodegenError> {
    use cranelift_codegen::ir::{types, AbiParam};
    use cranelift_jit::{JITBuilder, JITModule};
    use cranelift_module::{Linkage, Module};
    let err = |e: String| crate::CodegenError::new(e);
    const ACC: usize = 10;
    let bytes = if wide {
        fma_peak_loop_512(ACC)
    } else {
        fma_peak_loop(ACC)
    }
    .map_err(|e| err(e.to_string()))?;
    let flops_per_fma = if wide { 32 } else { 16 };
    let isa = crate::Target::host()?.jit_isa()?;
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(types::I64));
    let id = module
        .declare_function("optc_fma_peak", Linkage::Local, &sig)
        .map_err(|e| err(e.to_string()))?;
    module
        .define_function_bytes(id, 16, &bytes, &[])
        .map_err(|e| err(e.to_string()))?;
    module
        .finalize_definitions()
        .map_err(|e| err(e.to_string()))?;
    let p = module.get_finalized_function(id);
    // SAFETY: `p` is the finalized `fma_peak_loop` (or `_512`, only when the host has
    // AVX-512F) routine: System-V `fn(u64)`, touches only vector registers (and ends with
    // vzeroupper).
    let f: extern "C" fn(u64) = unsafe { std::mem::transmute::<*const u8, extern "C" fn(u64)>(p) };
    // Calibrate, then best of 5 runs of ~seconds/5.
    let mut iters = 1u64 << 16;
    loop {
        let t = std::time::Instant::now();
        f(iters);
        if t.elapsed().as_secs_f64() > 0.02 {
            break;
        }
        iters *= 2;
    }
    let t = std::time::Instant::now();
    f(iters);
    let per = t.elapsed().as_secs_f64() / iters as f64;
    let n = ((seconds / 5.0 / per) as u64).max(1);
    let mut best = 0f64;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        f(n);
        let s = t.elapsed().as_secs_f64();
        best = best.max((n * ACC as u64 * flops_per_fma) as f64 / s / 1e9);
    }
    // SAFETY: `f` is not called after this point.
    unsafe { module.free_memory() };
    Ok(best)
}
