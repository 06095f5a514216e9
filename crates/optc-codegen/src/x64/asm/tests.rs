//! Every microkernel variant of both ISAs, assembled and decoded back with iced-x86's decoder:
//! the instruction stream must decode completely and contain the instructions the variant
//! needs (and no instructions of the other ISA's vector width). The AVX-512 kernels cannot run
//! on every host, so they are also executed by a small interpreter of the instructions they
//! use (`emulator.rs`) and compared with a scalar reference GEMM.

use super::emulator::Machine;
use super::epilogue::Epilogue;
use super::gemm::{assemble, Isa, MicrokernelKey, MR, NR};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};

const CLIP_LO: u32 = 0xbf00_0000; // -0.5
const CLIP_HI: u32 = 0x3fc0_0000; // 1.5
const SCALE: u32 = 0x3f40_0000; // 0.75

fn ep_lists() -> Vec<Vec<Epilogue>> {
    vec![
        vec![],
        vec![Epilogue::BiasRow],
        vec![Epilogue::BiasCol],
        vec![Epilogue::Relu],
        vec![Epilogue::Clip(CLIP_LO, CLIP_HI)],
        vec![Epilogue::Residual],
        vec![Epilogue::Scale(SCALE)],
        vec![Epilogue::HardSwish],
        vec![Epilogue::BiasRow, Epilogue::HardSwish, Epilogue::Residual],
        vec![Epilogue::Silu],
        vec![Epilogue::BiasCol, Epilogue::Silu, Epilogue::Relu],
        vec![Epilogue::Gelu],
        vec![Epilogue::Residual, Epilogue::Gelu, Epilogue::BiasRow],
        vec![Epilogue::GeluTanh],
        vec![Epilogue::BiasCol, Epilogue::GeluTanh, Epilogue::Residual],
        vec![
            Epilogue::BiasCol,
            Epilogue::Residual,
            Epilogue::Scale(SCALE),
            Epilogue::Relu,
            Epilogue::BiasRow,
            Epilogue::Clip(CLIP_LO, CLIP_HI),
        ],
    ]
}

/// The activations only the AVX-512 tiles apply.
fn avx512_only(e: &Epilogue) -> bool {
    matches!(e, Epilogue::Silu | Epilogue::Gelu | Epilogue::GeluTanh)
}

pub(super) fn all_keys(isa: Isa) -> Vec<MicrokernelKey> {
    let mut v = vec![];
    // Half-panel (8-column) kernels exist for AVX2 only.
    let halves: &[bool] = if isa == Isa::Avx2 {
        &[false, true]
    } else {
        &[false]
    };
    // Wide (two-panel) kernels exist for AVX-512 only.
    let wides: &[bool] = if isa == Isa::Avx512 {
        &[false, true]
    } else {
        &[false]
    };
    for mr in 1..=MR {
        for packed_a in [false, true] {
            for (&half, &wide) in halves
                .iter()
                .flat_map(|h| wides.iter().map(move |w| (h, w)))
            {
                for partial in [false, true] {
                    for acc in [false, true] {
                        for epilogue in ep_lists() {
                            // SiLU and GELU tiles are AVX-512 only.
                            if isa == Isa::Avx2 && epilogue.iter().any(avx512_only) {
                                continue;
                            }
                            v.push(MicrokernelKey {
                                isa,
                                mr,
                                wide,
                                packed_a,
                                half,
                                partial,
                                accumulate: acc,
                                transposed: false,
                                epilogue,
                            });
                        }
                    }
                }
            }
        }
    }
    // Transposed-store kernels (AVX2): packed A, full tiles, no row bias, a residual last.
    if isa == Isa::Avx2 {
        for mr in 1..=MR {
            for acc in [false, true] {
                for epilogue in ep_lists() {
                    if epilogue.iter().any(avx512_only) {
                        continue;
                    }
                    let n = epilogue.len();
                    let res_last = |i: usize, e: &Epilogue| *e != Epilogue::Residual || i + 1 == n;
                    if epilogue
                        .iter()
                        .enumerate()
                        .any(|(i, e)| *e == Epilogue::BiasRow || !res_last(i, e))
                    {
                        continue;
                    }
                    v.push(MicrokernelKey {
                        isa,
                        mr,
                        wide: false,
                        packed_a: true,
                        half: false,
                        partial: false,
                        accumulate: acc,
                        transposed: true,
                        epilogue,
                    });
                }
            }
        }
    }
    v
}

/// Decode the code part of a kernel (up to and including its only `ret`); the rest is data.
fn decode(key: &MicrokernelKey, bytes: &[u8]) -> (Vec<Instruction>, usize) {
    let mut d = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let mut v = vec![];
    while d.can_decode() {
        let i = d.decode();
        assert!(
            !i.is_invalid(),
            "{}: invalid instruction at {:#x}",
            key.symbol(),
            i.ip()
        );
        v.push(i);
        if i.mnemonic() == Mnemonic::Ret {
            return (v, d.position());
        }
    }
    panic!("{}: no ret", key.symbol());
}

fn regs(i: &Instruction) -> impl Iterator<Item = Register> + '_ {
    (0..i.op_count())
        .filter(|&o| i.op_kind(o) == OpKind::Register)
        .map(|o| i.op_register(o))
        .chain([i.memory_base(), i.memory_index()])
}

fn count(ins: &[Instruction], f: impl Fn(&Instruction) -> bool) -> usize {
    ins.iter().filter(|i| f(i)).count()
}

fn is_mem(i: &Instruction) -> bool {
    (0..i.op_count()).any(|o| i.op_kind(o) == OpKind::Memory)
}

fn data_len(key: &MicrokernelKey) -> usize {
    let consts: usize = key
        .epilogue
        .iter()
        .map(|e| match e {
            Epilogue::Clip(..) => 8,
            Epilogue::Scale(_) => 4,
            // AVX2: 6, 0.5, 0 and 1 as 8-float vectors; AVX-512: one float each, and 1/6
            // and the quotient's bound 4.
            Epilogue::HardSwish if key.isa == Isa::Avx2 => 4 * 32,
            Epilogue::HardSwish => 24,
            // -1, the clamp bounds, magic, log2(e), ln 2 (2), the polynomial (6), 1, the
            // exponent bias, the overflow bound, infinity.
            Epilogue::Silu => 4 * 17,
            // GELU: the erf scale, the clamp bounds, the polynomials (7 + 5), 1 and 0.5.
            Epilogue::Gelu => 4 * 17,
            // The tanh GELU: 0.5, its two coefficients, the masks of the magnitude and the
            // sign, tanh's bound, exp's (overflow, clamps, magic, log2(e), ln 2 (2), 1, 2,
            // infinity, the exponent bias) and the polynomials (6 + 5).
            Epilogue::GeluTanh => 4 * 28,
            _ => 0,
        })
        .sum();
    let mask_tab = if key.isa == Isa::Avx2 { 128 } else { 0 };
    consts + mask_tab
}

/// How many of `key`'s epilogue steps satisfy `f`.
fn steps(key: &MicrokernelKey, f: fn(&Epilogue) -> bool) -> usize {
    key.epilogue.iter().filter(|e| f(e)).count()
}

/// Common shape: complete decode, ends in `vzeroupper; ret`, then only the data.
fn check_common(key: &MicrokernelKey, bytes: &[u8], ins: &[Instruction], end: usize) {
    let s = key.symbol();
    let n = ins.len();
    assert!(
        n >= 2 && ins[n - 2].mnemonic() == Mnemonic::Vzeroupper,
        "{s}"
    );
    assert_eq!(bytes.len() - end, data_len(key), "{s}: trailing data");
    // Every branch stays inside the code.
    for i in ins {
        if matches!(i.mnemonic(), Mnemonic::Jne | Mnemonic::Je) {
            assert!((i.near_branch_target() as usize) < end, "{s}");
        }
    }
    let eps = |e: fn(&Epilogue) -> bool| steps(key, e);
    let vec_op = |i: &Instruction, m: Mnemonic| i.mnemonic() == m;
    // Relu: one vmax per accumulator; Clip: one vmax and one vmin per accumulator.
    let per_row = if (key.isa == Isa::Avx2 && !key.half) || key.wide {
        2
    } else {
        1
    };
    let accs = per_row * key.mr;
    let relu = eps(|e| *e == Epilogue::Relu);
    let clip = eps(|e| matches!(e, Epilogue::Clip(..)));
    // HardSwish: per accumulator both clamps and the product, and x / 6: on AVX2 a division,
    // on AVX-512 `min(x, 4)` and a product (then two FMAs, `epilogue::sixth`).
    let hswish = eps(|e| *e == Epilogue::HardSwish);
    let (hswish_min, hswish_mul, hswish_div) = if key.isa == Isa::Avx512 {
        (2 * hswish, 2 * hswish, 0)
    } else {
        (hswish, hswish, hswish)
    };
    // SiLU: per accumulator the exp argument's clamps, 4 products (-x, r^2, y 2^n, x s) and
    // the division 1 / (1 + e).
    let silu = eps(|e| *e == Epilogue::Silu);
    // GELU: per accumulator erf's argument clamps, 5 products (x r, z^2, z P, x (erf + 1),
    // times 0.5) and the division P / Q.
    let gelu = eps(|e| *e == Epilogue::Gelu);
    // The tanh GELU: per accumulator exp's argument clamps, 10 products (the cube's 2, its
    // coefficient, the scale, r^2, y 2^n, z^2, p z^2, x 0.5, times (tanh + 1)) and the
    // division 2 / (e + 1).
    let gelu_tanh = eps(|e| *e == Epilogue::GeluTanh);
    assert_eq!(
        count(ins, |i| vec_op(i, Mnemonic::Vmaxps)),
        (relu + clip + hswish + silu + gelu + gelu_tanh) * accs,
        "{s}: vmaxps"
    );
    assert_eq!(
        count(ins, |i| vec_op(i, Mnemonic::Vminps)),
        (clip + hswish_min + silu + gelu + gelu_tanh) * accs,
        "{s}: vminps"
    );
    assert_eq!(
        count(ins, |i| vec_op(i, Mnemonic::Vmulps)),
        (eps(|e| matches!(e, Epilogue::Scale(_)))
            + hswish_mul
            + 4 * silu
            + 5 * gelu
            + 10 * gelu_tanh)
            * accs,
        "{s}: vmulps"
    );
    assert_eq!(
        count(ins, |i| vec_op(i, Mnemonic::Vdivps)),
        (hswish_div + silu + gelu + gelu_tanh) * accs,
        "{s}: vdivps"
    );
    let stores = count(ins, |i| {
        i.op_kind(0) == OpKind::Memory && i.mnemonic() != Mnemonic::Prefetcht0
    });
    // Packed A is prefetched ahead: two lines per unrolled group of 4 k steps.
    let prefetches = count(ins, |i| i.mnemonic() == Mnemonic::Prefetcht0);
    assert_eq!(
        prefetches,
        if key.packed_a { 2 } else { 0 },
        "{s}: prefetches"
    );
    if key.transposed {
        // Transposed: per group of 4, 2 or 1 rows, 8 stores (one per channel) per 8 channels.
        let groups = key.mr / 4 + (key.mr % 4) / 2 + key.mr % 2;
        assert_eq!(stores, 16 * groups, "{s}: stores");
    } else {
        // One full-width store per accumulator into C.
        assert_eq!(stores, accs, "{s}: stores");
    }
}

#[test]
fn avx512_kernels_decode_to_zmm_code() {
    for key in all_keys(Isa::Avx512) {
        let s = key.symbol();
        assert!(s.starts_with("optc_microkernel_avx512_"), "{s}");
        let bytes = assemble(&key).unwrap();
        let (ins, end) = decode(&key, &bytes);
        check_common(&key, &bytes, &ins, end);
        let mr = key.mr;
        // Nothing but zmm vector registers (no ymm/xmm, so no VEX-256 FMA or moves).
        for i in &ins {
            for r in regs(i) {
                assert!(!r.is_ymm() && !r.is_xmm(), "{s}: {r:?} in {:?}", i.code());
            }
        }
        // The FMAs (4 unrolled steps + 1 remainder step per row): narrow, zmm accumulator +=
        // zmm B row * embedded f32 broadcast of A; wide, A broadcast once into a register
        // for the FMAs of both panels. (Into the accumulators, zmm0-11: the SiLU epilogue
        // has FMAs of its own.)
        let fmas: Vec<_> = ins
            .iter()
            .filter(|i| {
                i.mnemonic() == Mnemonic::Vfmadd231ps
                    && (i.op0_register() as usize) < Register::ZMM12 as usize
            })
            .collect();
        let w = 1 + key.wide as usize;
        assert_eq!(fmas.len(), 5 * mr * w, "{s}");
        for i in &fmas {
            assert!(
                i.op0_register().is_zmm() && i.op1_register().is_zmm(),
                "{s}"
            );
            if key.wide {
                assert!(i.op2_register().is_zmm(), "{s}");
            } else {
                assert_eq!(i.op2_kind(), OpKind::Memory, "{s}");
                assert!(i.is_broadcast(), "{s}: FMA without embedded broadcast");
                assert_eq!(i.memory_size(), iced_x86::MemorySize::Broadcast512_Float32);
            }
        }
        let row_bias_steps = steps(&key, |e| *e == Epilogue::BiasRow);
        let hswish = steps(&key, |e| *e == Epilogue::HardSwish);
        let silu = steps(&key, |e| *e == Epilogue::Silu);
        let gelu = steps(&key, |e| *e == Epilogue::Gelu);
        let gelu_tanh = steps(&key, |e| *e == Epilogue::GeluTanh);
        if key.wide {
            // Every A broadcast and every row bias: a vbroadcastss. SiLU: 4 per accumulator
            // (magic, the polynomial's first coefficient, infinity where exp overflows, 1 as
            // the dividend); GELU: 2 (the polynomials' first coefficients); the tanh GELU: 7
            // (magic, the polynomials' first coefficients, infinity, 2, 1 and tanh's bound).
            let clip = steps(&key, |e| matches!(e, Epilogue::Clip(..)));
            let scale = steps(&key, |e| matches!(e, Epilogue::Scale(_)));
            assert_eq!(
                count(&ins, |i| i.mnemonic() == Mnemonic::Vbroadcastss),
                5 * mr
                    + mr * row_bias_steps
                    + 2 * clip
                    + scale
                    + (4 * silu + 2 * gelu + 7 * gelu_tanh) * mr * w,
                "{s}: broadcasts"
            );
        }
        // Partial tiles: opmask from nr, zero-masked loads and masked stores; full tiles: none.
        let kmov = count(&ins, |i| i.mnemonic() == Mnemonic::Kmovw);
        let masked = |store: bool| {
            count(&ins, |i| {
                i.has_op_mask()
                    && i.op_mask() == Register::K1
                    && (i.op_kind(0) == OpKind::Memory) == store
            })
        };
        let loads = mr
            * (key.accumulate as usize + (key.epilogue.contains(&Epilogue::Residual)) as usize)
            + key.epilogue.contains(&Epilogue::BiasCol) as usize;
        if key.partial {
            // Only the last column vector is masked.
            assert_eq!(kmov, 1, "{s}");
            assert_eq!(masked(true), mr, "{s}: masked stores");
            assert_eq!(masked(false), loads, "{s}: masked loads");
            let mem_adds = count(&ins, |i| {
                i.mnemonic() == Mnemonic::Vaddps && is_mem(i) && !i.is_broadcast()
            });
            assert_eq!(
                mem_adds,
                (w - 1) * (loads - key.epilogue.contains(&Epilogue::BiasCol) as usize),
                "{s}: full-width adds"
            );
            assert!(
                ins.iter()
                    .filter(|i| i.has_op_mask()
                        && i.op_mask() == Register::K1
                        && i.op_kind(0) != OpKind::Memory)
                    .all(|i| i.zeroing_masking()),
                "{s}: merge-masked load"
            );
        } else {
            // (The activations' k7 marks where exp overflows, or tanh's polynomial side.)
            assert_eq!(kmov, 0, "{s}");
            assert!(
                ins.iter()
                    .all(|i| !i.has_op_mask() || i.op_mask() == Register::K7),
                "{s}"
            );
            // acc / residual add straight from memory, full width.
            let mem_adds = count(&ins, |i| {
                i.mnemonic() == Mnemonic::Vaddps && is_mem(i) && !i.is_broadcast()
            });
            assert_eq!(
                mem_adds,
                w * (loads - key.epilogue.contains(&Epilogue::BiasCol) as usize),
                "{s}"
            );
        }
        // Row bias: broadcast adds (narrow; wide broadcasts into a register). HardSwish adds
        // its 0.5 by broadcast to each accumulator's `x / 6`.
        // SiLU adds 1 twice by broadcast (r + 1, 1 + e), GELU once (erf + 1), the tanh GELU
        // three times (r + 1, e + 1, tanh + 1).
        let row_bias = count(&ins, |i| {
            i.mnemonic() == Mnemonic::Vaddps && i.is_broadcast()
        });
        assert_eq!(
            row_bias,
            if key.wide { 0 } else { mr * row_bias_steps }
                + (hswish + 2 * silu + gelu + 3 * gelu_tanh) * mr * w,
            "{s}"
        );
    }
}

#[test]
fn avx2_kernels_decode_to_ymm_code() {
    for key in all_keys(Isa::Avx2) {
        let s = key.symbol();
        assert!(s.starts_with("optc_microkernel_avx2_"), "{s}");
        let bytes = assemble(&key).unwrap();
        let (ins, end) = decode(&key, &bytes);
        check_common(&key, &bytes, &ins, end);
        for i in &ins {
            assert!(!i.has_op_mask() && !i.is_broadcast(), "{s}: EVEX feature");
            for r in regs(i) {
                assert!(!r.is_zmm(), "{s}: {r:?}");
            }
        }
        let fmas: Vec<_> = ins
            .iter()
            .filter(|i| i.mnemonic() == Mnemonic::Vfmadd231ps)
            .collect();
        // 4x-unrolled loop + remainder step, one FMA per accumulator (2 per row, 1 if half).
        let per_row = if key.half { 1 } else { 2 };
        assert_eq!(fmas.len(), per_row * 5 * key.mr, "{s}");
        assert!(fmas
            .iter()
            .all(|i| (0..3).all(|o| i.op_register(o).is_ymm())));
        let maskmov = count(&ins, |i| i.mnemonic() == Mnemonic::Vmaskmovps);
        assert_eq!(maskmov > 0, key.partial, "{s}");
    }
}

#[test]
fn isas_have_distinct_symbols() {
    let mut seen = std::collections::HashSet::new();
    for isa in [Isa::Avx2, Isa::Avx512] {
        for k in all_keys(isa) {
            assert!(seen.insert(k.symbol()), "duplicate symbol {}", k.symbol());
        }
    }
}

/// Small multiples of 1/4: every product and partial sum below is exact in f32, so the
/// kernel's summation order does not matter and results compare exactly.
struct Quarters(u64);
impl Quarters {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) % 17) as f32 / 4.0 - 2.0
    }
    fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn bytes_of(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// SiLU step by step as the kernels compute it (and `Emitter::sigmoid`): the same
/// operations, so that the tile compares exactly. Its accuracy is checked against the
/// interpreter by the conv and MatMul tests.
#[allow(clippy::excessive_precision, clippy::manual_clamp)]
pub(super) fn silu(x: f32) -> f32 {
    let nx = -x;
    // min/max as vminps/vmaxps with the bound second: a NaN gives the bound (clamp would
    // give NaN), as the kernel does.
    let xc = nx.min(88.72283).max(-86.64);
    let magic = 12582912.0f32;
    let t = xc.mul_add(std::f32::consts::LOG2_E, magic);
    let n = t - magic;
    let r = n.mul_add(-0.693359375, xc);
    let r = n.mul_add(2.12194440e-4, r);
    let mut p = 1.987_569_2e-4f32;
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        1.666_666_5e-1,
        5.000_000_1e-1,
    ] {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r * r, r + 1.0);
    let scale = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 126) << 23);
    let e = if nx > 88.72284 {
        f32::INFINITY
    } else {
        y * scale * 2.0
    };
    x * (1.0 / (1.0 + e))
}

/// GELU as the kernels compute it: the erf argument clamped with the bound second (as
/// vminps/vmaxps), the rational minimax in z^2 by fused multiply-adds, then the chain.
#[allow(clippy::manual_clamp)]
pub(super) fn gelu(x: f32) -> f32 {
    use crate::ops::transcendental::{ERF_CLAMP, ERF_P, ERF_Q};
    let z = (x * optc_ir::GELU_ERF_SCALE).min(ERF_CLAMP).max(-ERF_CLAMP);
    let z2 = z * z;
    let horner = |c: &[f32]| c[1..].iter().fold(c[0], |p, &k| p.mul_add(z2, k));
    let p = horner(&ERF_P);
    let q = horner(&ERF_Q);
    let erf = z * p / q;
    x * (erf + 1.0) * 0.5
}

/// `exp` step by step as the kernels compute it (`Emitter::exp`): the argument clamped with
/// the bound second (as vminps/vmaxps), Cody-Waite reduction, the degree-7 polynomial by fused
/// multiply-adds, the scale 2^(n-1) from the bits, doubled; infinite past the bound.
#[allow(clippy::manual_clamp)]
pub(super) fn exp(x: f32) -> f32 {
    use crate::ops::transcendental::{
        EXP_HI, EXP_LN2_HI, EXP_LN2_LO, EXP_LO, EXP_MAGIC, EXP_OVERFLOW, EXP_POLY,
    };
    let xc = x.min(EXP_HI).max(EXP_LO);
    let t = xc.mul_add(std::f32::consts::LOG2_E, EXP_MAGIC);
    let n = t - EXP_MAGIC;
    let r = n.mul_add(EXP_LN2_HI, xc);
    let r = n.mul_add(EXP_LN2_LO, r);
    let p = EXP_POLY[1..]
        .iter()
        .fold(EXP_POLY[0], |p, &c| p.mul_add(r, c));
    let y = p.mul_add(r * r, r + 1.0);
    let scale = f32::from_bits(t.to_bits().wrapping_sub(0x4B40_0000 - 126) << 23);
    if x > EXP_OVERFLOW {
        f32::INFINITY
    } else {
        let e = y * scale;
        e + e
    }
}

/// `tanh` step by step as the kernels compute it (`Emitter::tanh`): the odd polynomial below
/// 0.625, `1 - 2 / (exp(2|x|) + 1)` with the sign of `x` above.
pub(super) fn tanh(x: f32) -> f32 {
    use crate::ops::transcendental::{TANH_POLY, TANH_SMALL};
    let m = x.abs();
    let z = x * x;
    let p = TANH_POLY[1..]
        .iter()
        .fold(TANH_POLY[0], |p, &c| p.mul_add(z, c));
    let small = (p * z).mul_add(x, x);
    let mag = 1.0 - 2.0 / (exp(m + m) + 1.0);
    let large = f32::from_bits(mag.to_bits() | (x.to_bits() & 0x8000_0000));
    if TANH_SMALL > m {
        small
    } else {
        large
    }
}

/// The tanh GELU as the kernels compute it: the cube as `(x x) x`, then the chain.
pub(super) fn gelu_tanh(x: f32) -> f32 {
    let z = (x + x * x * x * optc_ir::GELU_TANH_CUBE) * optc_ir::GELU_TANH_SCALE;
    x * 0.5 * (tanh(z) + 1.0)
}

/// Run one AVX-512 kernel in the interpreter and compare the tile with a scalar reference.
fn check_avx512_tile(key: &MicrokernelKey, code: &[u8], kc: usize, nr: usize, seed: u64) {
    const CODE: u64 = 0x1000_0000;
    const A: u64 = 0x2000_0000;
    const B: u64 = 0x3000_0000;
    const C: u64 = 0x4000_0000;
    const BIAS: u64 = 0x5000_0000;
    const RES: u64 = 0x6000_0000;
    let mr = key.mr;
    let mut q = Quarters(seed);
    let width = NR * (1 + key.wide as usize);
    let cols = if key.partial { nr } else { width };
    // Strides in floats; regions end right after the last valid element. A wide tile's second
    // panel starts `panel_stride` floats after the first.
    let lda = kc + 3;
    let ldc = width + 5;
    let panel_stride = kc * NR + 7;
    let a: Vec<f32> = if key.packed_a {
        q.vec(kc * mr)
    } else {
        q.vec(lda * (mr - 1) + kc)
    };
    let at = |r: usize, k: usize| {
        if key.packed_a {
            a[k * mr + r]
        } else {
            a[r * lda + k]
        }
    };
    let b = if key.wide {
        q.vec(panel_stride + kc * NR)
    } else {
        q.vec(kc * NR)
    };
    let bt = |k: usize, j: usize| {
        if j < NR {
            b[k * NR + j]
        } else {
            b[panel_stride + k * NR + j - NR]
        }
    };
    let tile_len = ldc * (mr - 1) + cols;
    let c0 = q.vec(tile_len);
    let res = q.vec(tile_len);
    let bias = q.vec(mr.max(cols));
    let mut m = Machine::new();
    m.mem.push((CODE, code.to_vec()));
    m.mem.push((A, bytes_of(&a)));
    m.mem.push((B, bytes_of(&b)));
    m.mem.push((C, bytes_of(&c0)));
    m.mem.push((BIAS, bytes_of(&bias)));
    m.mem.push((RES, bytes_of(&res)));
    let args = [
        A,
        B,
        C,
        kc as u64,
        (lda * 4) as u64,
        (ldc * 4) as u64,
        nr as u64,
        BIAS,
        RES,
        (panel_stride * 4) as u64,
    ];
    m.call(code, CODE, &args, 100_000);
    let s = key.symbol();
    for r in 0..mr {
        for j in 0..width {
            let o = r * ldc + j;
            if o >= tile_len {
                continue;
            }
            let got = f32::from_bits(m.read32(C + 4 * o as u64));
            if j >= cols {
                assert_eq!(got.to_bits(), c0[o].to_bits(), "{s}: column {j} written");
                continue;
            }
            let mut x = if key.accumulate { c0[o] } else { 0.0 };
            for k in 0..kc {
                x += at(r, k) * bt(k, j);
            }
            for e in &key.epilogue {
                x = match *e {
                    Epilogue::BiasRow => x + bias[r],
                    Epilogue::BiasCol => x + bias[j],
                    Epilogue::Relu => x.max(0.0),
                    Epilogue::Clip(lo, hi) => x.max(f32::from_bits(lo)).min(f32::from_bits(hi)),
                    Epilogue::Residual => x + res[o],
                    Epilogue::Scale(sc) => x * f32::from_bits(sc),
                    Epilogue::HardSwish => x * (x / 6.0 + 0.5).clamp(0.0, 1.0),
                    Epilogue::Silu => silu(x),
                    Epilogue::Gelu => gelu(x),
                    Epilogue::GeluTanh => gelu_tanh(x),
                    Epilogue::FakeQuantize { .. } => unreachable!("int8 kernels only"),
                };
            }
            assert_eq!(got, x, "{s} kc={kc} nr={nr}: C[{r}][{j}]");
        }
    }
}

#[test]
fn avx512_kernels_compute_the_reference_tile() {
    let mut seed = 1;
    for key in all_keys(Isa::Avx512) {
        let code = assemble(&key).unwrap();
        for kc in [0, 1, 3, 4, 5, 9] {
            let nrs: &[usize] = match (key.wide, key.partial) {
                (false, true) => &[1, 7, 15, 16],
                (false, false) => &[16],
                (true, true) => &[17, 23, 31],
                (true, false) => &[32],
            };
            for &nr in nrs {
                seed += 1;
                check_avx512_tile(&key, &code, kc, nr, seed);
            }
        }
    }
}
