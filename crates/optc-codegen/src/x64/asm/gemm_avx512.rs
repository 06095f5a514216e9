//! The AVX-512F microkernel: one zmm accumulator per tile row, and a second set for odd k
//! steps.

use super::epilogue::Epilogue;
use super::gemm::{k_loop, row, MicrokernelKey, MR};
use super::registers::zmm;
use iced_x86::code_asm::*;

/// The AVX-512F microkernel: same signature, layouts and epilogues as the AVX2 one, a 16-column
/// tile row is one zmm.
///
/// Registers: zmm0-5 accumulate rows 0-5 for even k steps, zmm6-11 for odd k steps (summed
/// after the k loop), zmm12-15 hold B rows in the k loop and are temporaries in the epilogue;
/// A is read with embedded broadcasts (`vfmadd231ps zmm, zmm, dword bcst [a]`). Partial tiles
/// use opmask `k1 = (1 << nr) - 1`: zero-masked loads (`vmovups zmm{k1}{z}`, masked-out lanes
/// do not fault) and masked stores.
///
/// Throughput: a 6x16 tile is only 6 zmm accumulators (a quarter of the register file). On
/// AVX-512 hardware with 2 FMA ports and 4-cycle FMA latency, 8 independent chains are needed
/// to keep both ports busy; 6 chains would reach at most 6/8 = 75% of peak. Splitting the
/// accumulators over even/odd k steps gives 12 chains, but each k step still issues 7 loads
/// (1 B row + 6 broadcasts) for 6 FMAs, so the 2 load ports cap it near 6/7 (~86%) of peak.
/// Reaching peak needs a taller tile (e.g. 14x16 or 12x32: >= 2 FMAs per load and >= 8
/// accumulators), i.e. a driver with a different `MR`/`NR`, packed-A tile height and packed-B
/// panel width for this ISA; the driver in `crate::x64` is shared with AVX2 and keeps
/// `MR = 6`, `NR = 16`.
pub(super) fn assemble_avx512(key: &MicrokernelKey) -> Result<Vec<u8>, IcedError> {
    assert!(!key.half, "half-panel kernels are AVX2 only");
    let mr = key.mr;
    assert!((1..=MR).contains(&mr), "microkernel rows out of range");
    let mut a = CodeAssembler::new(64)?;
    let mut consts: Vec<(CodeLabel, u32)> = vec![];

    for r in 0..mr {
        a.vpxord(zmm(r), zmm(r), zmm(r))?;
        a.vpxord(zmm(6 + r), zmm(6 + r), zmm(6 + r))?;
    }
    // r10 = a + 3 * lda
    let packed_a = key.packed_a;
    if !packed_a {
        a.lea(r10, rdi + r8 * 2)?;
        a.add(r10, r8)?;
    }
    let ka = if packed_a { 4 * mr as i32 } else { 4 };
    // k step `u` of an unrolled group: B row into zmm12+u, accumulators of parity u.
    let mut step = |a: &mut CodeAssembler, u: i32| -> Result<(), IcedError> {
        let bu = zmm(12 + u as usize);
        let set = 6 * (u as usize & 1);
        a.vmovups(bu, zmmword_ptr(rsi + 64 * u))?;
        for r in 0..mr {
            let m = if packed_a {
                rdi + (4 * r as i32 + ka * u)
            } else {
                row(r, rdi, r10, r8, 4 * u)
            };
            a.vfmadd231ps(zmm(set + r), bu, dword_bcst(m))?;
        }
        Ok(())
    };
    k_loop(&mut a, packed_a, ka, &mut step)?;
    for r in 0..mr {
        a.vaddps(zmm(r), zmm(r), zmm(6 + r))?;
    }

    // Epilogue. rdx/r10: C rows 0-2 / 3-5; r9: ldc; r11: bias; rax/rcx: residual rows.
    a.lea(r10, rdx + r9 * 2)?;
    a.add(r10, r9)?;
    let p = key.partial;
    if p {
        // k1 = (1 << nr) - 1 (nr in 1..=16).
        a.mov(rcx, qword_ptr(rsp + 8))?;
        a.mov(eax, 1)?;
        a.shl(eax, cl)?;
        a.dec(eax)?;
        a.kmovw(k1, eax)?;
    }
    a.mov(r11, qword_ptr(rsp + 16))?;
    a.mov(rax, qword_ptr(rsp + 24))?;
    a.lea(rcx, rax + r9 * 2)?;
    a.add(rcx, r9)?;
    // zmm12 = the 16 (or nr, rest zero) floats at `m`.
    let load = |a: &mut CodeAssembler, m: AsmMemoryOperand| -> Result<(), IcedError> {
        if p {
            a.vmovups(zmm12.k1().z(), zmmword_ptr(m))
        } else {
            a.vmovups(zmm12, zmmword_ptr(m))
        }
    };
    // acc += tile at (b012, b345)
    let add_tile = |a: &mut CodeAssembler,
                    b012: AsmRegister64,
                    b345: AsmRegister64|
     -> Result<(), IcedError> {
        for r in 0..mr {
            let m = row(r, b012, b345, r9, 0);
            if p {
                load(a, m)?;
                a.vaddps(zmm(r), zmm(r), zmm12)?;
            } else {
                a.vaddps(zmm(r), zmm(r), zmmword_ptr(m))?;
            }
        }
        Ok(())
    };
    if key.accumulate {
        add_tile(&mut a, rdx, r10)?;
    }
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    for epilogue in &key.epilogue {
        match *epilogue {
            Epilogue::BiasRow => {
                for r in 0..mr {
                    a.vaddps(zmm(r), zmm(r), dword_bcst(r11 + 4 * r as i32))?;
                }
            }
            Epilogue::BiasCol => {
                load(&mut a, r11 + 0)?;
                for r in 0..mr {
                    a.vaddps(zmm(r), zmm(r), zmm12)?;
                }
            }
            Epilogue::Relu => {
                a.vpxord(zmm12, zmm12, zmm12)?;
                for r in 0..mr {
                    a.vmaxps(zmm(r), zmm12, zmm(r))?;
                }
            }
            Epilogue::Clip(lo, hi) => {
                let llo = konst(&mut a, lo);
                let lhi = konst(&mut a, hi);
                a.vbroadcastss(zmm12, dword_ptr(llo))?;
                a.vbroadcastss(zmm13, dword_ptr(lhi))?;
                for r in 0..mr {
                    a.vmaxps(zmm(r), zmm12, zmm(r))?;
                    a.vminps(zmm(r), zmm13, zmm(r))?;
                }
            }
            Epilogue::Residual => add_tile(&mut a, rax, rcx)?,
            Epilogue::Scale(s) => {
                let l = konst(&mut a, s);
                a.vbroadcastss(zmm12, dword_ptr(l))?;
                for r in 0..mr {
                    a.vmulps(zmm(r), zmm(r), zmm12)?;
                }
            }
        }
    }
    for r in 0..mr {
        let m = zmmword_ptr(row(r, rdx, r10, r9, 0));
        if p {
            a.vmovups(m.k1(), zmm(r))?;
        } else {
            a.vmovups(m, zmm(r))?;
        }
    }
    a.vzeroupper()?;
    a.ret()?;
    for (mut l, bits) in consts {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    a.assemble(0)
}
