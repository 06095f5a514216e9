//! The AVX-512F microkernels: an `mr x 16` tile (one zmm accumulator per row, a second set
//! for odd k steps) and an `mr x 32` "wide" tile over two B panels (two zmm per row).

use super::epilogue::{Activation, Epilogue};
use super::gemm::{k_loop, row, MicrokernelKey, MR};
use super::registers::zmm;
use iced_x86::code_asm::*;

/// The AVX-512F microkernel: same signature, layouts and epilogues as the AVX2 one, a 16-column
/// tile row is one zmm.
///
/// Registers: accumulator `(r, c)` (row `r`, column vector `c`) is `zmm(6 c + r)`. A narrow
/// tile has one column vector; zmm6-11 then accumulate the odd k steps (summed after the k
/// loop). zmm12-15 hold B rows in the k loop and are temporaries in the epilogue; A is read
/// with embedded broadcasts (`vfmadd231ps zmm, zmm, dword bcst [a]`) by the narrow tile, and
/// broadcast once into zmm16-21 for the two FMAs of the wide one. Partial tiles mask the last
/// column vector with `k1 = (1 << valid) - 1`: zero-masked loads (masked-out lanes do not
/// fault) and masked stores.
///
/// Throughput (2 FMA ports, 4-cycle latency, 2 loads per cycle): the narrow 6x16 tile issues 7
/// loads (1 B row + 6 broadcasts) per 6 FMAs, so the load ports cap it near 6/7 of peak, and
/// its 12 chains exist only through the even/odd split. The wide 6x32 tile issues 8 loads per
/// 12 FMAs (FMA-bound) with 12 independent chains.
///
/// The wide tile (`key.wide`) reads its second panel at `b + panel_stride`, a tenth argument
/// (on the stack after `res`); with `partial`, `nr` counts the valid columns of the whole tile
/// (17..=31: the first panel is full).
pub(super) fn assemble_avx512(key: &MicrokernelKey) -> Result<Vec<u8>, IcedError> {
    assert!(!key.half, "half-panel kernels are AVX2 only");
    assert!(!key.transposed, "transposed stores are AVX2 only");
    let mr = key.mr;
    assert!((1..=MR).contains(&mr), "microkernel rows out of range");
    let wide = key.wide;
    // Column vectors per row.
    let w = if wide { 2 } else { 1 };
    let acc = |r: usize, c: usize| zmm(6 * c + r);
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
    if wide {
        // r11 = the second panel's offset from the first.
        a.mov(r11, qword_ptr(rsp + 32))?;
    }
    let ka = if packed_a { 4 * mr as i32 } else { 4 };
    let a_row = |r: usize, u: i32| {
        if packed_a {
            rdi + (4 * r as i32 + ka * u)
        } else {
            row(r, rdi, r10, r8, 4 * u)
        }
    };
    // k step `u` of an unrolled group.
    let mut step = |a: &mut CodeAssembler, u: i32| -> Result<(), IcedError> {
        if wide {
            // B rows of both panels into zmm12-13 or zmm14-15 (by parity), A broadcast once.
            let b0 = zmm(12 + 2 * (u as usize & 1));
            let b1 = zmm(13 + 2 * (u as usize & 1));
            a.vmovups(b0, zmmword_ptr(rsi + 64 * u))?;
            a.vmovups(b1, zmmword_ptr(rsi + r11 + 64 * u))?;
            for r in 0..mr {
                let t = zmm16_plus(r);
                a.vbroadcastss(t, dword_ptr(a_row(r, u)))?;
                a.vfmadd231ps(acc(r, 0), b0, t)?;
                a.vfmadd231ps(acc(r, 1), b1, t)?;
            }
        } else {
            // B row into zmm12+u, accumulators of parity u.
            let bu = zmm(12 + u as usize);
            let set = 6 * (u as usize & 1);
            a.vmovups(bu, zmmword_ptr(rsi + 64 * u))?;
            for r in 0..mr {
                a.vfmadd231ps(zmm(set + r), bu, dword_bcst(a_row(r, u)))?;
            }
        }
        Ok(())
    };
    k_loop(&mut a, packed_a, ka, &mut step)?;
    if !wide {
        for r in 0..mr {
            a.vaddps(zmm(r), zmm(r), zmm(6 + r))?;
        }
    }

    // Epilogue. rdx/r10: C rows 0-2 / 3-5; r9: ldc; r11: bias; rax/rcx: residual rows.
    a.lea(r10, rdx + r9 * 2)?;
    a.add(r10, r9)?;
    let p = key.partial;
    if p {
        // k1 = (1 << valid) - 1, valid = the last column vector's columns (1..=16).
        a.mov(rcx, qword_ptr(rsp + 8))?;
        if wide {
            a.sub(rcx, 16)?;
        }
        a.mov(eax, 1)?;
        a.shl(eax, cl)?;
        a.dec(eax)?;
        a.kmovw(k1, eax)?;
    }
    a.mov(r11, qword_ptr(rsp + 16))?;
    a.mov(rax, qword_ptr(rsp + 24))?;
    a.lea(rcx, rax + r9 * 2)?;
    a.add(rcx, r9)?;
    // Whether column vector `c` is masked.
    let masked = |c: usize| p && c + 1 == w;
    // zmm12+c = the 16 (or valid, rest zero) floats at `m`.
    let load = |a: &mut CodeAssembler, c: usize, m: AsmMemoryOperand| -> Result<(), IcedError> {
        if masked(c) {
            a.vmovups(zmm(12 + c).k1().z(), zmmword_ptr(m))
        } else {
            a.vmovups(zmm(12 + c), zmmword_ptr(m))
        }
    };
    // acc += tile at (b012, b345)
    let add_tile = |a: &mut CodeAssembler,
                    b012: AsmRegister64,
                    b345: AsmRegister64|
     -> Result<(), IcedError> {
        for r in 0..mr {
            for c in 0..w {
                let m = row(r, b012, b345, r9, 64 * c as i32);
                if masked(c) {
                    load(a, c, m)?;
                    a.vaddps(acc(r, c), acc(r, c), zmm(12 + c))?;
                } else {
                    a.vaddps(acc(r, c), acc(r, c), zmmword_ptr(m))?;
                }
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
    let all = |f: &mut dyn FnMut(AsmRegisterZmm) -> Result<(), IcedError>| {
        for r in 0..mr {
            for c in 0..w {
                f(acc(r, c))?;
            }
        }
        Ok::<(), IcedError>(())
    };
    for epilogue in &key.epilogue {
        match *epilogue {
            Epilogue::BiasRow => {
                for r in 0..mr {
                    if wide {
                        a.vbroadcastss(zmm12, dword_ptr(r11 + 4 * r as i32))?;
                        for c in 0..w {
                            a.vaddps(acc(r, c), acc(r, c), zmm12)?;
                        }
                    } else {
                        a.vaddps(acc(r, 0), acc(r, 0), dword_bcst(r11 + 4 * r as i32))?;
                    }
                }
            }
            Epilogue::BiasCol => {
                for c in 0..w {
                    load(&mut a, c, r11 + 64 * c as i32)?;
                }
                for r in 0..mr {
                    for c in 0..w {
                        a.vaddps(acc(r, c), acc(r, c), zmm(12 + c))?;
                    }
                }
            }
            Epilogue::Relu => {
                a.vpxord(zmm14, zmm14, zmm14)?;
                all(&mut |x| a.vmaxps(x, zmm14, x))?;
            }
            Epilogue::Clip(lo, hi) => {
                let llo = konst(&mut a, lo);
                let lhi = konst(&mut a, hi);
                a.vbroadcastss(zmm14, dword_ptr(llo))?;
                a.vbroadcastss(zmm15, dword_ptr(lhi))?;
                all(&mut |x| {
                    a.vmaxps(x, zmm14, x)?;
                    a.vminps(x, zmm15, x)
                })?;
            }
            Epilogue::Residual => add_tile(&mut a, rax, rcx)?,
            Epilogue::Scale(s) => {
                let l = konst(&mut a, s);
                a.vbroadcastss(zmm14, dword_ptr(l))?;
                all(&mut |x| a.vmulps(x, x, zmm14))?;
            }
            Epilogue::HardSwish | Epilogue::Silu | Epilogue::Gelu | Epilogue::GeluTanh => {
                // zmm16-20 (the A broadcasts of the loop) are free now.
                let act =
                    Activation::new(&mut a, *epilogue, &mut konst).expect("an activation step");
                all(&mut |x| act.apply(&mut a, x, [zmm16, zmm17, zmm18, zmm19, zmm20]))?;
            }
            Epilogue::FakeQuantize { .. } => unreachable!("int8 kernels only (`kernel_plan`)"),
        }
    }
    for r in 0..mr {
        for c in 0..w {
            let m = zmmword_ptr(row(r, rdx, r10, r9, 64 * c as i32));
            if masked(c) {
                a.vmovups(m.k1(), acc(r, c))?;
            } else {
                a.vmovups(m, acc(r, c))?;
            }
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

/// zmm16 + `i` (the wide tile's A broadcasts; EVEX-only registers).
fn zmm16_plus(i: usize) -> AsmRegisterZmm {
    [zmm16, zmm17, zmm18, zmm19, zmm20, zmm21][i]
}
