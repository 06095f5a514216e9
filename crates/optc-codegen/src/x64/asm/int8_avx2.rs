//! The AVX2 int8 microkernels ([`Scheme::BytePairs`], [`Scheme::WordPairs`]): two ymm
//! accumulators of 8 i32 per tile row.
//!
//! Registers: ymm0-11 accumulate (row `r`: `ymm(2r)` columns 0-7, `ymm(2r + 1)` columns 8-15),
//! ymm12/13 hold the panel's group (and the column masks of partial tiles outside the k loop),
//! ymm14 the broadcast operand of a row, ymm15 the products. `BytePairs` multiplies the s16 pair
//! sums by ones: a register (ymm11) when a row is free, else a constant after the code.
//! GPRs: rdi/r10 `a` rows 0-2/3-5 (matmul), rdx/r11 `c` rows 0-2/3-5, rax the loop counter.

use super::epilogue::Epilogue;
use super::gemm::row;
use super::int8::{assemble_loop_aligned, Contraction, Int8Key, PairLayout, Scheme};
use super::registers::ymm;
use iced_x86::code_asm::*;

pub(super) fn assemble_avx2(key: &Int8Key) -> Result<Vec<u8>, IcedError> {
    assemble_loop_aligned(&|pad| build(key, pad))
}

/// The kernel with `pad` bytes of NOPs before its k loop (returned: the loop's label).
fn build(key: &Int8Key, pad: usize) -> Result<(CodeAssembler, CodeLabel), IcedError> {
    let mr = key.mr;
    assert!((1..=6).contains(&mr), "int8 microkernel rows out of range");
    assert!(key.scheme != Scheme::DotProduct, "VNNI kernels are AVX-512");
    let words = key.scheme == Scheme::WordPairs;
    let matmul = key.contraction == Contraction::MatMul;
    let p = key.partial;
    let mut a = CodeAssembler::new(64)?;
    let mask_tab = a.create_label();
    let ones_label = a.create_label();
    let mut consts: Vec<(CodeLabel, u32)> = vec![];
    let acc = |r: usize, h: usize| ymm(2 * r + h);
    // Bytes of one K group: in a panel, and of one row of `a`.
    let gb = key.scheme.panel_group_bytes() as i32;
    let rgb = key.scheme.row_group_bytes() as i32;
    // Step of `a` per group: a row's bytes (in place) or a whole packed tile's.
    let ga = if matmul { rgb } else { rgb * mr as i32 };
    // The column masks of a partial tile into ymm12/13 (clobbers rax, `via`).
    let masks = |a: &mut CodeAssembler, via: AsmRegister64| -> Result<(), IcedError> {
        a.mov(rax, 16i64)?;
        a.sub(rax, qword_ptr(rsp + 8))?;
        a.lea(via, ptr(mask_tab))?;
        a.vmovdqu(ymm12, ymmword_ptr(via + rax * 4))?;
        a.vmovdqu(ymm13, ymmword_ptr(via + rax * 4 + 32))
    };
    if p && !key.first {
        masks(&mut a, r11)?;
    }
    if matmul {
        a.lea(r10, rdi + r8 * 2)?;
        a.add(r10, r8)?;
    }
    a.lea(r11, rdx + r9 * 2)?;
    a.add(r11, r9)?;

    // Starting values: the channel offsets (first block) or the partial sums in C.
    if key.first {
        a.mov(rax, qword_ptr(rsp + 16))?;
        if key.channel_rows() {
            for r in 0..mr {
                a.vpbroadcastd(acc(r, 0), dword_ptr(rax + 4 * r as i32))?;
                a.vmovdqa(acc(r, 1), acc(r, 0))?;
            }
        } else {
            a.vmovdqu(acc(0, 0), ymmword_ptr(rax))?;
            a.vmovdqu(acc(0, 1), ymmword_ptr(rax + 32))?;
            for r in 1..mr {
                a.vmovdqa(acc(r, 0), acc(0, 0))?;
                a.vmovdqa(acc(r, 1), acc(0, 1))?;
            }
        }
    } else {
        for r in 0..mr {
            for h in 0..2 {
                let m = ymmword_ptr(row(r, rdx, r11, r9, 32 * h as i32));
                if p {
                    a.vpmaskmovd(acc(r, h), ymm(12 + h), m)?;
                } else {
                    a.vmovdqu(acc(r, h), m)?;
                }
            }
        }
    }
    // Ones (16-bit) for `vpmaddwd`: in ymm11 when row 5 is not used.
    let ones_in_reg = !words && mr < 6;
    if ones_in_reg {
        a.vpcmpeqw(ymm11, ymm11, ymm11)?;
        a.vpsrlw(ymm11, ymm11, 15)?;
    }

    // One K group at displacement `u` groups from rsi/rdi (unpacked: its planes from rsi,
    // which then moves on to the next group).
    let unpacked = key.unpacked;
    assert!(
        !unpacked || !matmul,
        "only conv kernels read unpacked planes"
    );
    let group = |a: &mut CodeAssembler, u: i32| -> Result<(), IcedError> {
        let pairs = if words { 2 } else { 1 };
        for pair in 0..pairs {
            let bm = |d: i32| {
                if unpacked {
                    if pair == 0 {
                        rsi + d
                    } else {
                        rsi + r8 + d
                    }
                } else {
                    rsi + (u * gb + 64 * pair + d)
                }
            };
            a.vmovdqu(ymm12, ymmword_ptr(bm(0)))?;
            a.vmovdqu(ymm13, ymmword_ptr(bm(32)))?;
            for r in 0..mr {
                let ao = u * ga + 4 * pair;
                let m = if matmul {
                    row(r, rdi, r10, r8, ao)
                } else {
                    rdi + (ao + rgb * r as i32)
                };
                a.vpbroadcastd(ymm14, dword_ptr(m))?;
                for h in 0..2 {
                    let b = ymm(12 + h);
                    if words {
                        a.vpmaddwd(ymm15, ymm14, b)?;
                    } else {
                        // The u8 operand first: the activations.
                        if matmul {
                            a.vpmaddubsw(ymm15, ymm14, b)?;
                        } else {
                            a.vpmaddubsw(ymm15, b, ymm14)?;
                        }
                        if ones_in_reg {
                            a.vpmaddwd(ymm15, ymm15, ymm11)?;
                        } else {
                            a.vpmaddwd(ymm15, ymm15, ymmword_ptr(ones_label))?;
                        }
                    }
                    a.vpaddd(acc(r, h), acc(r, h), ymm15)?;
                }
            }
        }
        if unpacked {
            if words {
                a.lea(rsi, rsi + r8 * 2)?;
            } else {
                a.add(rsi, r8)?;
            }
        }
        Ok(())
    };
    // Two groups per iteration, then the odd one.
    let layout = PairLayout {
        matmul,
        unpacked,
        ga,
        gb,
    };
    let l2 = layout.k_loop(&mut a, pad, &group)?;

    if p {
        masks(&mut a, rsi)?;
    }
    let accs: Vec<AsmRegisterYmm> = (0..mr).flat_map(|r| [acc(r, 0), acc(r, 1)]).collect();
    let store = |a: &mut CodeAssembler, float: bool| -> Result<(), IcedError> {
        for r in 0..mr {
            for h in 0..2 {
                let m = ymmword_ptr(row(r, rdx, r11, r9, 32 * h as i32));
                match (p, float) {
                    (true, true) => a.vmaskmovps(m, ymm(12 + h), acc(r, h))?,
                    (true, false) => a.vpmaskmovd(m, ymm(12 + h), acc(r, h))?,
                    (false, true) => a.vmovups(m, acc(r, h))?,
                    (false, false) => a.vmovdqu(m, acc(r, h))?,
                }
            }
        }
        Ok(())
    };
    let ones = (!ones_in_reg && !words).then_some(ones_label);
    let Some(dq) = &key.last else {
        store(&mut a, false)?;
        a.vzeroupper()?;
        a.ret()?;
        return finish(a, p, mask_tab, ones, consts).map(|a| (a, l2));
    };
    assert!(dq.quantize.is_none(), "u8 stores are the VNNI kernels'");

    // Dequantize: f32(acc) * scale[c].
    for &r in &accs {
        a.vcvtdq2ps(r, r)?;
    }
    // Per-channel vector at `ptr` into ymm14 (row `r`: broadcast) / ymm14+15 (columns).
    let channel_add_or_mul =
        |a: &mut CodeAssembler, base: AsmRegister64, mul: bool| -> Result<(), IcedError> {
            if key.channel_rows() {
                for r in 0..mr {
                    a.vbroadcastss(ymm14, dword_ptr(base + 4 * r as i32))?;
                    for h in 0..2 {
                        if mul {
                            a.vmulps(acc(r, h), acc(r, h), ymm14)?;
                        } else {
                            a.vaddps(acc(r, h), acc(r, h), ymm14)?;
                        }
                    }
                }
            } else {
                for h in 0..2 {
                    let m = ymmword_ptr(base + 32 * h as i32);
                    // The scale table is padded to whole panels; a bias is not.
                    if p && !mul {
                        a.vmaskmovps(ymm(14 + h), ymm(12 + h), m)?;
                    } else {
                        a.vmovups(ymm(14 + h), m)?;
                    }
                }
                for r in 0..mr {
                    for h in 0..2 {
                        if mul {
                            a.vmulps(acc(r, h), acc(r, h), ymm(14 + h))?;
                        } else {
                            a.vaddps(acc(r, h), acc(r, h), ymm(14 + h))?;
                        }
                    }
                }
            }
            Ok(())
        };
    a.mov(rax, qword_ptr(rsp + 24))?;
    channel_add_or_mul(&mut a, rax, true)?;
    if dq.bias {
        a.mov(rax, qword_ptr(rsp + 32))?;
        channel_add_or_mul(&mut a, rax, false)?;
    }
    // Residual rows 0-2 / 3-5 in rcx / rdi.
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
                channel_add_or_mul(&mut a, rax, false)?;
            }
            Epilogue::Relu => {
                a.vxorps(ymm14, ymm14, ymm14)?;
                for &r in &accs {
                    a.vmaxps(r, ymm14, r)?;
                }
            }
            Epilogue::Clip(lo, hi) => {
                let llo = konst(&mut a, lo);
                let lhi = konst(&mut a, hi);
                a.vbroadcastss(ymm14, dword_ptr(llo))?;
                a.vbroadcastss(ymm15, dword_ptr(lhi))?;
                for &r in &accs {
                    a.vmaxps(r, ymm14, r)?;
                    a.vminps(r, ymm15, r)?;
                }
            }
            Epilogue::Residual => {
                for r in 0..mr {
                    for h in 0..2 {
                        let m = ymmword_ptr(row(r, rcx, rdi, r9, 32 * h as i32));
                        if p {
                            a.vmaskmovps(ymm14, ymm(12 + h), m)?;
                            a.vaddps(acc(r, h), acc(r, h), ymm14)?;
                        } else {
                            a.vaddps(acc(r, h), acc(r, h), m)?;
                        }
                    }
                }
            }
            Epilogue::Scale(_)
            | Epilogue::HardSwish
            | Epilogue::Silu
            | Epilogue::Gelu
            | Epilogue::GeluTanh
            | Epilogue::FakeQuantize { .. } => {
                unreachable!("AVX2 int8 kernels have no scale, HardSwish or fake-quantize step")
            }
        }
    }
    store(&mut a, true)?;
    a.vzeroupper()?;
    a.ret()?;
    finish(a, p, mask_tab, ones, consts).map(|a| (a, l2))
}

/// The data after the code: the column mask table (partial tiles), the 16-bit ones and the f32
/// constants.
fn finish(
    mut a: CodeAssembler,
    partial: bool,
    mut mask_tab: CodeLabel,
    ones: Option<CodeLabel>,
    consts: Vec<(CodeLabel, u32)>,
) -> Result<CodeAssembler, IcedError> {
    if partial {
        a.set_label(&mut mask_tab)?;
        let mut tab = [0u32; 32];
        tab[..16].fill(u32::MAX);
        a.dd(&tab)?;
    }
    if let Some(mut l) = ones {
        a.set_label(&mut l)?;
        a.dd(&[0x0001_0001; 8])?;
    }
    for (mut l, bits) in consts {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    Ok(a)
}
