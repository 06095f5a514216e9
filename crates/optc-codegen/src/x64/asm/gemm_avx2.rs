//! The AVX2/FMA microkernel: two ymm accumulators per tile row (one for `half` kernels), and
//! the transposed store of the swapped-roles kernels.

use super::epilogue::{epilogue_pointwise, Epilogue};
use super::gemm::{k_loop, row, MicrokernelKey, MR};
use super::registers::{xmm, ymm};
use iced_x86::code_asm::*;

/// Accumulator registers of the AVX2 k loop: set 0 is `accs` (the epilogue's registers);
/// when `accs` are fewer than the 8 independent FMA chains that hide the FMA latency
/// (2 ports x 4 cycles), 2 or 4 sets (a power of two, at most 12 registers in all) take the
/// remaining registers of ymm0-11. Not for 1 or 2 accumulators (one-row tiles: a batch-1
/// classifier is bound by streaming B anyway, and its k-sequential sum stays bit-identical
/// to the portable kernels', which `aarch64_object_runs_under_qemu_like_the_jit` compares on
/// tiny_cnn).
fn acc_sets(accs: &[usize]) -> Vec<Vec<usize>> {
    let n = accs.len();
    let mut nsets = 1;
    while n > 2 && n * nsets < 8 && n * nsets * 2 <= 12 && nsets < 4 {
        nsets *= 2;
    }
    let mut free = (0..12).filter(|r| !accs.contains(r));
    let mut v = vec![accs.to_vec()];
    for _ in 1..nsets {
        v.push(
            (0..n)
                .map(|_| free.next().expect("12 accumulators"))
                .collect(),
        );
    }
    v
}

pub(super) fn assemble_avx2(key: &MicrokernelKey) -> Result<Vec<u8>, IcedError> {
    let mr = key.mr;
    assert!((1..=MR).contains(&mr), "microkernel rows out of range");
    let mut a = CodeAssembler::new(64)?;
    let mut consts: Vec<(CodeLabel, u32)> = vec![];
    let mut mask_tab = a.create_label();
    // Accumulator halves per row: 2 (16 columns) or 1 (`half`: 8 columns).
    let nh = if key.half { 1 } else { 2 };
    let accs: Vec<usize> = (0..mr)
        .flat_map(|r| (0..nh).map(move |h| 2 * r + h))
        .collect();

    // Accumulator sets: `set[s][i]` accumulates `accs[i]` over the k steps `u` of an
    // unrolled group with `u % nsets == s` (summed into set 0 after the k loop).
    let set = acc_sets(&accs);
    let nsets = set.len();
    // A bias as the first epilogue step of a tile that does not accumulate into C starts the
    // accumulators (set 0) instead of being added at the end (a column bias only for full
    // panels: the partial mask is made in the epilogue).
    let bias_init = !key.accumulate
        && match key.epilogue.first() {
            Some(Epilogue::BiasRow) => true,
            Some(Epilogue::BiasCol) => !key.partial,
            _ => false,
        };
    if bias_init {
        a.mov(r11, qword_ptr(rsp + 16))?;
        if key.epilogue[0] == Epilogue::BiasRow {
            for r in 0..mr {
                a.vbroadcastss(ymm(accs[nh * r]), dword_ptr(r11 + 4 * r as i32))?;
                if nh == 2 {
                    a.vmovaps(ymm(accs[nh * r + 1]), ymm(accs[nh * r]))?;
                }
            }
        } else {
            for r in 0..mr {
                for h in 0..nh {
                    a.vmovups(ymm(accs[nh * r + h]), ymmword_ptr(r11 + 32 * h as i32))?;
                }
            }
        }
    }
    for (i, s) in set.iter().enumerate() {
        if i == 0 && bias_init {
            continue;
        }
        for &r in s {
            a.vxorps(ymm(r), ymm(r), ymm(r))?;
        }
    }
    // r10 = a + 3 * lda
    let transposed = key.transposed;
    if transposed {
        assert!(
            !key.half && !key.partial,
            "transposed kernels are full tiles"
        );
        let n = key.epilogue.len();
        assert!(
            key.epilogue
                .iter()
                .enumerate()
                .all(|(i, e)| *e != Epilogue::BiasRow && (*e != Epilogue::Residual || i + 1 == n)),
            "transposed kernels take no row bias, and a residual last only"
        );
    }
    let packed_a = key.packed_a;
    if !packed_a {
        a.lea(r10, rdi + r8 * 2)?;
        a.add(r10, r8)?;
    }
    let ka = if packed_a { 4 * mr as i32 } else { 4 };
    let mut step = |a: &mut CodeAssembler, u: i32| -> Result<(), IcedError> {
        let acc = &set[u as usize % nsets];
        a.vmovups(ymm12, ymmword_ptr(rsi + 64 * u))?;
        if nh == 2 {
            a.vmovups(ymm13, ymmword_ptr(rsi + (64 * u + 32)))?;
        }
        for r in 0..mr {
            let t = ymm(14 + (r & 1));
            let m = if packed_a {
                rdi + (4 * r as i32 + ka * u)
            } else {
                row(r, rdi, r10, r8, 4 * u)
            };
            a.vbroadcastss(t, dword_ptr(m))?;
            a.vfmadd231ps(ymm(acc[nh * r]), ymm12, t)?;
            if nh == 2 {
                a.vfmadd231ps(ymm(acc[nh * r + 1]), ymm13, t)?;
            }
        }
        Ok(())
    };
    k_loop(&mut a, packed_a, ka, &mut step)?;
    // Pairwise: set s += set s + half, halving the sets.
    let mut live = nsets;
    while live > 1 {
        live /= 2;
        for s in 0..live {
            for (i, &r) in set[s].iter().enumerate() {
                let o = set[s + live][i];
                a.vaddps(ymm(r), ymm(r), ymm(o))?;
            }
        }
    }

    // Epilogue. rdx/r10: C rows 0-2 / 3-5; r9: ldc; r11: bias; rax/rcx: residual rows.
    a.lea(r10, rdx + r9 * 2)?;
    a.add(r10, r9)?;
    let p = key.partial;
    if p {
        a.mov(rdi, qword_ptr(rsp + 8))?;
        a.mov(rsi, 16i64)?;
        a.sub(rsi, rdi)?;
        a.lea(rdi, ptr(mask_tab))?;
        a.vmovups(ymm12, ymmword_ptr(rdi + rsi * 4))?;
        if nh == 2 {
            a.vmovups(ymm13, ymmword_ptr(rdi + rsi * 4 + 32))?;
        }
    }
    a.mov(r11, qword_ptr(rsp + 16))?;
    a.mov(rax, qword_ptr(rsp + 24))?;
    a.lea(rcx, rax + r9 * 2)?;
    a.add(rcx, r9)?;
    // acc += tile at (b012, b345)
    let add_tile = |a: &mut CodeAssembler,
                    b012: AsmRegister64,
                    b345: AsmRegister64|
     -> Result<(), IcedError> {
        for r in 0..mr {
            for h in 0..nh {
                let m = ymmword_ptr(row(r, b012, b345, r9, 32 * h as i32));
                if p {
                    a.vmaskmovps(ymm14, ymm(12 + h), m)?;
                    a.vaddps(ymm(2 * r + h), ymm(2 * r + h), ymm14)?;
                } else {
                    a.vaddps(ymm(2 * r + h), ymm(2 * r + h), m)?;
                }
            }
        }
        Ok(())
    };
    if key.accumulate && transposed {
        // The partial sums of the earlier K blocks: a row-layout tile (64-byte rows) at the
        // `nr` argument.
        a.mov(rdi, qword_ptr(rsp + 8))?;
        for r in 0..mr {
            for h in 0..2 {
                let m = ymmword_ptr(rdi + (64 * r + 32 * h) as i32);
                a.vaddps(ymm(2 * r + h), ymm(2 * r + h), m)?;
            }
        }
    } else if key.accumulate {
        add_tile(&mut a, rdx, r10)?;
    }
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    for epilogue in &key.epilogue[usize::from(bias_init)..] {
        match *epilogue {
            Epilogue::BiasRow => {
                for r in 0..mr {
                    a.vbroadcastss(ymm14, dword_ptr(r11 + 4 * r as i32))?;
                    a.vaddps(ymm(2 * r), ymm(2 * r), ymm14)?;
                    if nh == 2 {
                        a.vaddps(ymm(2 * r + 1), ymm(2 * r + 1), ymm14)?;
                    }
                }
            }
            Epilogue::BiasCol => {
                if p {
                    a.vmaskmovps(ymm14, ymm12, ymmword_ptr(r11))?;
                    if nh == 2 {
                        a.vmaskmovps(ymm15, ymm13, ymmword_ptr(r11 + 32))?;
                    }
                } else {
                    a.vmovups(ymm14, ymmword_ptr(r11))?;
                    if nh == 2 {
                        a.vmovups(ymm15, ymmword_ptr(r11 + 32))?;
                    }
                }
                for r in 0..mr {
                    a.vaddps(ymm(2 * r), ymm(2 * r), ymm14)?;
                    if nh == 2 {
                        a.vaddps(ymm(2 * r + 1), ymm(2 * r + 1), ymm15)?;
                    }
                }
            }
            Epilogue::Relu => {
                a.vxorps(ymm14, ymm14, ymm14)?;
                for &r in &accs {
                    a.vmaxps(ymm(r), ymm14, ymm(r))?;
                }
            }
            Epilogue::Clip(lo, hi) => {
                let llo = konst(&mut a, lo);
                let lhi = konst(&mut a, hi);
                a.vbroadcastss(ymm14, dword_ptr(llo))?;
                a.vbroadcastss(ymm15, dword_ptr(lhi))?;
                for &r in &accs {
                    a.vmaxps(ymm(r), ymm14, ymm(r))?;
                    a.vminps(ymm(r), ymm15, ymm(r))?;
                }
            }
            // (Transposed: added in the store.)
            Epilogue::Residual if transposed => {}
            Epilogue::Residual => add_tile(&mut a, rax, rcx)?,
            Epilogue::Scale(s) => {
                let l = konst(&mut a, s);
                a.vbroadcastss(ymm14, dword_ptr(l))?;
                for &r in &accs {
                    a.vmulps(ymm(r), ymm(r), ymm14)?;
                }
            }
            Epilogue::Silu | Epilogue::Gelu | Epilogue::GeluTanh => {
                unreachable!("SiLU and GELU tiles are AVX-512 only (`kernel_plan`)")
            }
            Epilogue::FakeQuantize { .. } => unreachable!("int8 kernels only (`kernel_plan`)"),
            Epilogue::HardSwish => {
                let regs: Vec<AsmRegisterYmm> = accs.iter().map(|&r| ymm(r)).collect();
                epilogue_pointwise(&mut a, Epilogue::HardSwish, &regs, ymm14, &mut konst)?;
            }
        }
    }
    if transposed {
        assemble_transposed_store(&mut a, mr, key.epilogue.contains(&Epilogue::Residual))?;
    } else {
        for r in 0..mr {
            for h in 0..nh {
                let m = ymmword_ptr(row(r, rdx, r10, r9, 32 * h as i32));
                if p {
                    a.vmaskmovps(m, ymm(12 + h), ymm(2 * r + h))?;
                } else {
                    a.vmovups(m, ymm(2 * r + h))?;
                }
            }
        }
    }
    a.vzeroupper()?;
    a.ret()?;
    // Data: the column mask table and the f32 constants.
    a.set_label(&mut mask_tab)?;
    let mut tab = [0u32; 32];
    tab[..16].fill(u32::MAX);
    a.dd(&tab)?;
    for (mut l, bits) in consts {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    a.assemble(0)
}

/// The transposed store of a `transposed` tile: rows `r < mr` (pixels) of accumulators
/// `ymm(2 r + h)` (channels `8 h ..`) go to channel `j` at `rdx + j * r9`, float `r`.
/// Rows are taken 4 at a time (a 4x4 transpose per 128-bit lane: xmm stores, the high lane by
/// `vextractf128` to memory), then 2 (unpack: 64-bit stores) and 1 (`vextractps`).
/// Channel `j` is addressed from base `j / 3` (rdx, r10, rax, rcx, rdi, rsi: `rdx + 3 (j / 3)
/// r9`) plus `(j % 3) r9`. With `res` (its tile at rax on entry), every piece adds the same
/// piece of the residual (at `piece + r11`, r11 = res - c, through `lea r8`) before its store.
/// Clobbers the accumulators and ymm12-15.
fn assemble_transposed_store(a: &mut CodeAssembler, mr: usize, res: bool) -> Result<(), IcedError> {
    let bases = [rdx, r10, rax, rcx, rdi, rsi];
    if res {
        a.mov(r11, rax)?;
        a.sub(r11, rdx)?;
    }
    a.lea(r8, r9 + r9 * 2)?;
    a.lea(r10, rdx + r8)?;
    a.lea(rax, r10 + r8)?;
    a.lea(rcx, rax + r8)?;
    a.lea(rdi, rcx + r8)?;
    a.lea(rsi, rdi + r8)?;
    let at = |j: usize, r: usize| -> AsmMemoryOperand {
        let b = bases[j / 3];
        let d = 4 * r as i32;
        match j % 3 {
            0 => b + d,
            1 => b + r9 + d,
            _ => b + r9 * 2 + d,
        }
    };
    let mut groups = vec![];
    let mut r0 = 0;
    while r0 < mr {
        let g = match mr - r0 {
            x if x >= 4 => 4,
            x if x >= 2 => 2,
            _ => 1,
        };
        groups.push((r0, g));
        r0 += g;
    }
    for (r0, g) in groups {
        for h in 0..2 {
            let reg = |i: usize| 2 * (r0 + i) + h;
            let c0 = 8 * h;
            match g {
                4 => {
                    a.vunpcklps(ymm12, ymm(reg(0)), ymm(reg(1)))?;
                    a.vunpckhps(ymm13, ymm(reg(0)), ymm(reg(1)))?;
                    a.vunpcklps(ymm14, ymm(reg(2)), ymm(reg(3)))?;
                    a.vunpckhps(ymm15, ymm(reg(2)), ymm(reg(3)))?;
                    a.vunpcklpd(ymm(reg(0)), ymm12, ymm14)?;
                    a.vunpckhpd(ymm(reg(1)), ymm12, ymm14)?;
                    a.vunpcklpd(ymm(reg(2)), ymm13, ymm15)?;
                    a.vunpckhpd(ymm(reg(3)), ymm13, ymm15)?;
                    for i in 0..4 {
                        let (lo, hi) = (at(c0 + i, r0), at(c0 + 4 + i, r0));
                        if res {
                            // (High lane first: a 128-bit VEX op zeroes it.)
                            a.vextractf128(xmm14, ymm(reg(i)), 1)?;
                            a.lea(r8, hi)?;
                            a.vaddps(xmm14, xmm14, xmmword_ptr(r8 + r11))?;
                            a.vmovups(xmmword_ptr(hi), xmm14)?;
                            a.lea(r8, lo)?;
                            a.vaddps(xmm(reg(i)), xmm(reg(i)), xmmword_ptr(r8 + r11))?;
                            a.vmovups(xmmword_ptr(lo), xmm(reg(i)))?;
                        } else {
                            a.vmovups(xmmword_ptr(lo), xmm(reg(i)))?;
                            a.vextractf128(xmmword_ptr(hi), ymm(reg(i)), 1)?;
                        }
                    }
                }
                2 => {
                    a.vunpcklps(ymm12, ymm(reg(0)), ymm(reg(1)))?;
                    a.vunpckhps(ymm13, ymm(reg(0)), ymm(reg(1)))?;
                    a.vextractf128(xmm14, ymm12, 1)?;
                    a.vextractf128(xmm15, ymm13, 1)?;
                    for (t, c) in [(12, 0), (13, 2), (14, 4), (15, 6)] {
                        let (m0, m1) = (at(c0 + c, r0), at(c0 + c + 1, r0));
                        if res {
                            // The two channels' residual pieces into one xmm (the group's
                            // rows are free now).
                            let (tmp, tmp2) = (xmm(reg(0)), xmm(reg(1)));
                            a.lea(r8, m0)?;
                            a.vmovsd(tmp, qword_ptr(r8 + r11))?;
                            a.lea(r8, m1)?;
                            a.vmovsd(tmp2, qword_ptr(r8 + r11))?;
                            a.vmovlhps(tmp, tmp, tmp2)?;
                            a.vaddps(xmm(t), xmm(t), tmp)?;
                        }
                        a.vmovlps(qword_ptr(m0), xmm(t))?;
                        a.vmovhps(qword_ptr(m1), xmm(t))?;
                    }
                }
                _ => {
                    a.vextractf128(xmm14, ymm(reg(0)), 1)?;
                    for (t, c) in [(reg(0), 0), (14, 4)] {
                        for l in 0..4 {
                            let m = at(c0 + c + l, r0);
                            if res {
                                a.vpermilps(xmm15, xmm(t), l as i32)?;
                                a.lea(r8, m)?;
                                a.vaddss(xmm15, xmm15, dword_ptr(r8 + r11))?;
                                a.vmovss(dword_ptr(m), xmm15)?;
                            } else if l == 0 {
                                a.vmovss(dword_ptr(m), xmm(t))?;
                            } else {
                                a.vextractps(dword_ptr(m), xmm(t), l as i32)?;
                            }
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
