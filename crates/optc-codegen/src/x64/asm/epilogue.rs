//! The epilogue a kernel applies to its tile before the store: bias, activation, residual,
//! scale, in order.

use iced_x86::code_asm::*;

/// One epilogue step, applied to the whole tile in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Epilogue {
    /// `+= bias[row]`
    BiasRow,
    /// `+= bias[col]`
    BiasCol,
    /// `max(x, 0)`
    Relu,
    /// `min(max(x, lo), hi)` (f32 bit patterns)
    Clip(u32, u32),
    /// `+= res[row][col]`
    Residual,
    /// `*= s` (f32 bit pattern)
    Scale(u32),
    /// `x * clamp(x / 6 + 0.5, 0, 1)`, rounded as the interpreter does (a division, an
    /// addition, the clamp, a multiplication). GEMM microkernels only (see
    /// [`Epilogue::gemm_only`]).
    HardSwish,
    /// `x * sigmoid(x)` (SiLU), the sigmoid as `Emitter::sigmoid` computes it (`exp` by
    /// Cody-Waite reduction and a degree-7 polynomial, then `1 / (1 + e)`). AVX-512 GEMM
    /// microkernels only.
    Silu,
    /// A QDQ pair's requantization, as `UnaryOp::FakeQuantize` rounds it (f32 bit patterns of
    /// the scale and the zero point): `(min(max(round_half_even(x / scale) + zero, lo), hi) -
    /// zero) * scale`, `[lo, hi]` the i8 or u8 range, NaN giving `lo`. The AVX-512 int8
    /// kernels only (VNNI and AMX: `kernel_plan::tile_steps` with `fake_quantize`).
    FakeQuantize { scale: u32, zero: u32, signed: bool },
}

/// A fake-quantize step on `x` (zmm), `t` scratch, `c` = the scale, the zero point and the
/// clamp bounds broadcast: the operations of the generic lowering (`ops/math.rs`), in order:
/// a division, rounding half to even, the zero point added, `max` with the low bound (which
/// `vmaxps` returns for a NaN: its second operand), `min` with the high one, the zero point
/// subtracted, the scale multiplied.
pub(crate) fn fake_quantize(
    a: &mut CodeAssembler,
    x: AsmRegisterZmm,
    t: AsmRegisterZmm,
    c: [AsmRegisterZmm; 4],
) -> Result<(), IcedError> {
    let [scale, zero, lo, hi] = c;
    a.vdivps(t, x, scale)?;
    a.vrndscaleps(t, t, 0)?;
    a.vaddps(t, t, zero)?;
    a.vmaxps(t, t, lo)?;
    a.vminps(t, t, hi)?;
    a.vsubps(t, t, zero)?;
    a.vmulps(x, t, scale)
}

impl Epilogue {
    /// Whether only the GEMM microkernels (AVX2 and AVX-512) apply this step: the sparse,
    /// Winograd, depthwise and direct-conv kernels end their epilogue before it, and the
    /// steps from there run after their tiles.
    pub fn gemm_only(&self) -> bool {
        matches!(self, Epilogue::HardSwish | Epilogue::Silu)
    }
}

/// The epilogue's part of a kernel symbol.
pub(crate) fn epilogue_symbol(epilogue: &[Epilogue]) -> String {
    let mut s = String::new();
    for e in epilogue {
        match e {
            Epilogue::BiasRow => s.push_str("_br"),
            Epilogue::BiasCol => s.push_str("_bc"),
            Epilogue::Relu => s.push_str("_relu"),
            Epilogue::Clip(a, b) => s.push_str(&format!("_clip{a:08x}{b:08x}")),
            Epilogue::Residual => s.push_str("_res"),
            Epilogue::Scale(a) => s.push_str(&format!("_s{a:08x}")),
            Epilogue::HardSwish => s.push_str("_hswish"),
            Epilogue::Silu => s.push_str("_silu"),
            Epilogue::FakeQuantize {
                scale,
                zero,
                signed,
            } => s.push_str(&format!(
                "_fq{scale:08x}{zero:08x}{}",
                if *signed { "s" } else { "u" }
            )),
        }
    }
    s
}

/// A pointwise epilogue step (Relu, Clip, Scale) on `regs`, with `tmp` as scratch and
/// `konst` placing f32 constants after the code (the depthwise and direct-conv kernels; a
/// bias or residual step is the kernel's own).
pub(crate) fn epilogue_pointwise(
    a: &mut CodeAssembler,
    epilogue: Epilogue,
    regs: &[AsmRegisterYmm],
    tmp: AsmRegisterYmm,
    konst: &mut dyn FnMut(&mut CodeAssembler, u32) -> CodeLabel,
) -> Result<(), IcedError> {
    match epilogue {
        Epilogue::Relu => {
            a.vxorps(tmp, tmp, tmp)?;
            for &r in regs {
                a.vmaxps(r, tmp, r)?;
            }
        }
        Epilogue::Clip(lo, hi) => {
            let llo = konst(a, lo);
            let lhi = konst(a, hi);
            a.vbroadcastss(tmp, dword_ptr(llo))?;
            for &r in regs {
                a.vmaxps(r, tmp, r)?;
            }
            a.vbroadcastss(tmp, dword_ptr(lhi))?;
            for &r in regs {
                a.vminps(r, tmp, r)?;
            }
        }
        Epilogue::Scale(sc) => {
            let l = konst(a, sc);
            a.vbroadcastss(tmp, dword_ptr(l))?;
            for &r in regs {
                a.vmulps(r, r, tmp)?;
            }
        }
        Epilogue::BiasRow | Epilogue::BiasCol | Epilogue::Residual => {
            unreachable!("not a pointwise epilogue step")
        }
        Epilogue::HardSwish | Epilogue::Silu | Epilogue::FakeQuantize { .. } => {
            unreachable!("a GEMM-only epilogue step")
        }
    }
    Ok(())
}
