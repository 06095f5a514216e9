//! The AVX-512 VNNI int8 microkernel ([`Scheme::DotProduct`], `x86_64-avx512`): one zmm of 16
//! i32 per tile row, `vpdpbusd` adding the 4 u8 x s8 products of each dword without
//! intermediate saturation.
//!
//! Registers: zmm0-5 accumulate rows 0-5 for even K groups, zmm6-11 for odd ones (summed after
//! the k loop: `vpdpbusd` has a 5-cycle latency, 6 chains would not fill two ports), zmm12/13
//! hold the panel's group, zmm14 a matmul row's broadcast activations (a conv's weights are
//! embedded broadcasts, `vpdpbusd zmm, zmm, dword bcst [a]`); partial tiles use opmask
//! `k1 = (1 << nr) - 1`. GPRs as in the AVX2 kernel (`int8_avx2.rs`).

use super::epilogue::{
    fake_quantize, fake_quantize_constants, quantize_store_constants, quantize_to_bytes,
    Activation, Epilogue,
};
use super::gemm::row;
use super::int8::{assemble_loop_aligned, Contraction, Int8Key, PairLayout, Scheme};
use super::registers::{xmm, zmm};
use iced_x86::code_asm::*;

pub(super) fn assemble_vnni(key: &Int8Key) -> Result<Vec<u8>, IcedError> {
    assemble_loop_aligned(&|pad| build(key, pad))
}

/// The kernel with `pad` bytes of NOPs before its k loop (returned: the loop's label).
fn build(key: &Int8Key, pad: usize) -> Result<(CodeAssembler, CodeLabel), IcedError> {
    let mr = key.mr;
    assert!((1..=6).contains(&mr), "int8 microkernel rows out of range");
    assert_eq!(key.scheme, Scheme::DotProduct);
    let matmul = key.contraction == Contraction::MatMul;
    let p = key.partial;
    let mut a = CodeAssembler::new(64)?;
    let mut consts: Vec<(CodeLabel, u32)> = vec![];
    let gb = key.scheme.panel_group_bytes() as i32;
    let rgb = key.scheme.row_group_bytes() as i32;
    let ga = if matmul { rgb } else { rgb * mr as i32 };
    if p {
        // k1 = (1 << nr) - 1, nr in 1..=16 (rcx, the group count, kept in rax).
        a.mov(rax, rcx)?;
        a.mov(rcx, qword_ptr(rsp + 8))?;
        a.mov(r11d, 1)?;
        a.shl(r11d, cl)?;
        a.dec(r11d)?;
        a.kmovw(k1, r11d)?;
        a.mov(rcx, rax)?;
    }
    if matmul {
        a.lea(r10, rdi + r8 * 2)?;
        a.add(r10, r8)?;
    }
    a.lea(r11, rdx + r9 * 2)?;
    a.add(r11, r9)?;
    let c_row = |r: usize| row(r, rdx, r11, r9, 0);

    if key.first {
        a.mov(rax, qword_ptr(rsp + 16))?;
        if key.channel_rows() {
            for r in 0..mr {
                a.vpbroadcastd(zmm(r), dword_ptr(rax + 4 * r as i32))?;
            }
        } else {
            // The offset table is padded to whole panels.
            a.vmovdqu32(zmm0, zmmword_ptr(rax))?;
            for r in 1..mr {
                a.vmovdqa32(zmm(r), zmm0)?;
            }
        }
    } else {
        for r in 0..mr {
            if p {
                a.vmovdqu32(zmm(r).k1().z(), zmmword_ptr(c_row(r)))?;
            } else {
                a.vmovdqu32(zmm(r), zmmword_ptr(c_row(r)))?;
            }
        }
    }
    for r in 0..mr {
        a.vpxord(zmm(6 + r), zmm(6 + r), zmm(6 + r))?;
    }

    // Group `u` of an iteration: accumulator set `u`, panel register zmm12 + u.
    let unpacked = key.unpacked;
    assert!(
        !unpacked || !matmul,
        "only conv kernels read unpacked planes"
    );
    let group = |a: &mut CodeAssembler, u: i32| -> Result<(), IcedError> {
        let b = zmm(12 + u as usize);
        let set = 6 * u as usize;
        if unpacked {
            // The group's plane at rsi; rsi moves on to the next one.
            a.vmovdqu32(b, zmmword_ptr(rsi))?;
            a.add(rsi, r8)?;
        } else {
            a.vmovdqu32(b, zmmword_ptr(rsi + u * gb))?;
        }
        for r in 0..mr {
            let ao = u * ga;
            if matmul {
                a.vpbroadcastd(zmm14, dword_ptr(row(r, rdi, r10, r8, ao)))?;
                a.vpdpbusd(zmm(set + r), zmm14, b)?;
            } else {
                a.vpdpbusd(zmm(set + r), b, dword_bcst(rdi + (ao + rgb * r as i32)))?;
            }
        }
        Ok(())
    };
    let layout = PairLayout {
        matmul,
        unpacked,
        ga,
        gb,
    };
    let l2 = layout.k_loop(&mut a, pad, &group)?;
    for r in 0..mr {
        a.vpaddd(zmm(r), zmm(r), zmm(6 + r))?;
    }

    let Some(dq) = &key.last else {
        for r in 0..mr {
            if p {
                a.vmovdqu32(zmmword_ptr(c_row(r)).k1(), zmm(r))?;
            } else {
                a.vmovdqu32(zmmword_ptr(c_row(r)), zmm(r))?;
            }
        }
        a.vzeroupper()?;
        a.ret()?;
        return Ok((a, l2));
    };
    for r in 0..mr {
        a.vcvtdq2ps(zmm(r), zmm(r))?;
    }
    // `acc (*|+)= v[c]` for the per-channel vector at `base` (a bias is not padded: masked).
    let channel_op = |a: &mut CodeAssembler, base: AsmRegister64, mul: bool| {
        if key.channel_rows() {
            for r in 0..mr {
                let m = dword_bcst(base + 4 * r as i32);
                if mul {
                    a.vmulps(zmm(r), zmm(r), m)?;
                } else {
                    a.vaddps(zmm(r), zmm(r), m)?;
                }
            }
        } else {
            if p && !mul {
                a.vmovups(zmm12.k1().z(), zmmword_ptr(base))?;
            } else {
                a.vmovups(zmm12, zmmword_ptr(base))?;
            }
            for r in 0..mr {
                if mul {
                    a.vmulps(zmm(r), zmm(r), zmm12)?;
                } else {
                    a.vaddps(zmm(r), zmm(r), zmm12)?;
                }
            }
        }
        Ok::<(), IcedError>(())
    };
    a.mov(rax, qword_ptr(rsp + 24))?;
    channel_op(&mut a, rax, true)?;
    if dq.bias {
        a.mov(rax, qword_ptr(rsp + 32))?;
        channel_op(&mut a, rax, false)?;
    }
    if dq.steps.contains(&Epilogue::Residual) {
        a.mov(rcx, qword_ptr(rsp + 40))?;
        a.lea(rdi, rcx + r9 * 2)?;
        a.add(rdi, r9)?;
    }
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    for step in &dq.steps {
        match *step {
            Epilogue::BiasRow | Epilogue::BiasCol => {
                assert_eq!(
                    *step == Epilogue::BiasRow,
                    key.channel_rows(),
                    "a fused bias runs along the channels"
                );
                a.mov(rax, qword_ptr(rsp + 32))?;
                channel_op(&mut a, rax, false)?;
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
            Epilogue::Residual => {
                for r in 0..mr {
                    let m = row(r, rcx, rdi, r9, 0);
                    if p {
                        a.vmovups(zmm12.k1().z(), zmmword_ptr(m))?;
                        a.vaddps(zmm(r), zmm(r), zmm12)?;
                    } else {
                        a.vaddps(zmm(r), zmm(r), zmmword_ptr(m))?;
                    }
                }
            }
            Epilogue::FakeQuantize {
                scale,
                zero,
                signed,
            } => {
                // Constants in zmm12-15; each row through its odd-group register (free).
                let regs = [zmm12, zmm13, zmm14, zmm15];
                fake_quantize_constants(&mut a, (scale, zero, signed), regs, &mut konst)?;
                for r in 0..mr {
                    fake_quantize(&mut a, zmm(r), zmm(6 + r), [zmm12, zmm13, zmm14, zmm15])?;
                }
            }
            Epilogue::HardSwish | Epilogue::Silu | Epilogue::Gelu | Epilogue::GeluTanh => {
                // zmm16-20 are free (the loop uses zmm0-15).
                let act = Activation::new(&mut a, *step, &mut konst).expect("an activation step");
                for r in 0..mr {
                    act.apply(&mut a, zmm(r), [zmm16, zmm17, zmm18, zmm19, zmm20])?;
                }
            }
            Epilogue::Scale(_) => unreachable!("int8 kernels have no scale step"),
        }
    }
    if let Some(store) = dq.quantize {
        // u8 rows: 16 bytes a row (`ldc` is the u8 output's).
        assert!(key.channel_rows(), "u8 stores are a conv's");
        let regs = [zmm12, zmm13, zmm14, zmm15];
        quantize_store_constants(&mut a, store, regs, &mut konst)?;
        for r in 0..mr {
            // Packed in a register (through its odd-group one, free), then stored: a
            // partial row's bytes under k1 (one bit a column).
            quantize_to_bytes(&mut a, zmm(r), regs)?;
            let t = xmm(6 + r);
            a.vpmovusdb(t, zmm(r))?;
            if p {
                a.vmovdqu8(xmmword_ptr(c_row(r)).k1(), t)?;
            } else {
                a.vmovdqu(xmmword_ptr(c_row(r)), t)?;
            }
        }
    } else {
        for r in 0..mr {
            if p {
                a.vmovups(zmmword_ptr(c_row(r)).k1(), zmm(r))?;
            } else {
                a.vmovups(zmmword_ptr(c_row(r)), zmm(r))?;
            }
        }
    }
    a.vzeroupper()?;
    a.ret()?;
    for (mut l, bits) in consts {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    Ok((a, l2))
}
