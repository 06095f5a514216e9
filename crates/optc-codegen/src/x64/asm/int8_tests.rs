//! The int8 microkernels and the quantizing routines: every variant decodes to the
//! instructions of its scheme; the VNNI kernels run in the emulator (`emulator.rs`) and the
//! AVX2 ones natively (on AVX2 hosts) against a scalar reference of the tile; the saturation
//! of `vpmaddubsw` is shown on weights the plan must not give to `BytePairs`; the quantizing
//! routines against `optc_ir::quantized::QuantParams`.

use super::emulator::Machine;
use super::epilogue::Epilogue;
use super::int8::{assemble, Contraction, Dequantize, Int8Key, QuantizeStore, Scheme};
use super::int8_amx::TileState;
use super::quantize::{PlaneKey, QuantizeKey};
use super::tests::{gelu, gelu_tanh, silu};
use crate::target::Target;
use cranelift_codegen::ir::{types, AbiParam};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{default_libcall_names, Linkage, Module};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use optc_ir::quantized::QuantParams;

const CLIP_LO: u32 = 0xc000_0000; // -2.0
const CLIP_HI: u32 = 0x4080_0000; // 4.0

/// A u8 and an i8 requantization (the AVX-512 kernels' fake-quantize steps).
const FQ_U8: Epilogue = Epilogue::FakeQuantize {
    scale: 0x3d4c_cccd, // 0.05
    zero: 0x4040_0000,  // 3.0
    signed: false,
};
const FQ_I8: Epilogue = Epilogue::FakeQuantize {
    scale: 0x3ca3_d70a, // 0.02
    zero: 0xc0a0_0000,  // -5.0
    signed: true,
};

/// Fused step lists of a tile whose channels run along rows (`rows`), with or without the
/// op's own bias (a fused bias only without it).
pub(super) fn step_lists(rows: bool, bias: bool, scheme: Scheme) -> Vec<Vec<Epilogue>> {
    let fused_bias = if rows {
        Epilogue::BiasRow
    } else {
        Epilogue::BiasCol
    };
    let mut v = vec![
        vec![],
        vec![Epilogue::Relu],
        vec![Epilogue::Clip(CLIP_LO, CLIP_HI)],
        vec![Epilogue::Residual, Epilogue::Relu],
    ];
    if !bias {
        v.push(vec![
            fused_bias,
            Epilogue::Residual,
            Epilogue::Clip(CLIP_LO, CLIP_HI),
        ]);
    }
    if matches!(scheme, Scheme::DotProduct | Scheme::Tiles) {
        // A QDQ conv's requantization, and a residual block's (requantized, added,
        // requantized again).
        v.push(vec![FQ_U8]);
        v.push(vec![FQ_I8, Epilogue::Residual, Epilogue::Relu, FQ_U8]);
        // The activations of the f32 GEMM's tiles.
        v.push(vec![Epilogue::Gelu]);
        v.push(vec![
            Epilogue::Residual,
            Epilogue::Silu,
            Epilogue::HardSwish,
        ]);
        // An activation before a residual (the residual's masked loads after the
        // activation's mask).
        v.push(vec![Epilogue::GeluTanh, Epilogue::Residual]);
        v.push(vec![Epilogue::Silu, Epilogue::Residual]);
    }
    v
}

fn all_keys(scheme: Scheme) -> Vec<Int8Key> {
    let mut v = vec![];
    let tiles = scheme == Scheme::Tiles;
    let forms: &[(Contraction, bool)] = if tiles {
        &[(Contraction::MatMul, false), (Contraction::Conv, false)]
    } else {
        &[
            (Contraction::MatMul, false),
            (Contraction::Conv, false),
            (Contraction::Conv, true),
        ]
    };
    let heights: Vec<usize> = if tiles {
        vec![1, 6, 11, 16]
    } else {
        (1..=6).collect()
    };
    for &(contraction, unpacked) in forms {
        for &mr in &heights {
            for partial in [false, true] {
                for first in [false, true] {
                    let mut lasts = vec![None];
                    for bias in [false, true] {
                        for steps in step_lists(contraction == Contraction::Conv, bias, scheme) {
                            lasts.push(Some(Dequantize {
                                bias,
                                steps,
                                quantize: None,
                            }));
                        }
                    }
                    for last in lasts {
                        v.push(Int8Key {
                            scheme,
                            contraction,
                            mr,
                            partial,
                            unpacked,
                            first,
                            last,
                        });
                    }
                }
            }
        }
    }
    v
}

/// The code part (up to the only `ret`).
fn decode(key: &Int8Key, bytes: &[u8]) -> Vec<Instruction> {
    let mut d = Decoder::with_ip(64, bytes, 0, DecoderOptions::NONE);
    let mut v = vec![];
    while d.can_decode() {
        let i = d.decode();
        assert!(!i.is_invalid(), "{}: invalid instruction", key.symbol());
        v.push(i);
        if i.mnemonic() == Mnemonic::Ret {
            return v;
        }
    }
    panic!("{}: no ret", key.symbol());
}

fn count(ins: &[Instruction], m: Mnemonic) -> usize {
    ins.iter().filter(|i| i.mnemonic() == m).count()
}

fn vector_regs(i: &Instruction) -> impl Iterator<Item = Register> + '_ {
    (0..i.op_count())
        .filter(|&o| i.op_kind(o) == OpKind::Register)
        .map(|o| i.op_register(o))
        .filter(|r| r.is_xmm() || r.is_ymm() || r.is_zmm())
}

#[test]
fn int8_kernels_decode_to_their_scheme() {
    let mut symbols = std::collections::HashSet::new();
    for scheme in [Scheme::BytePairs, Scheme::WordPairs, Scheme::DotProduct] {
        for key in all_keys(scheme) {
            let s = key.symbol();
            assert!(symbols.insert(s.clone()), "duplicate symbol {s}");
            assert!(s.contains(scheme.name()), "{s}");
            let ins = decode(&key, &assemble(&key).unwrap());
            let n = ins.len();
            assert_eq!(ins[n - 2].mnemonic(), Mnemonic::Vzeroupper, "{s}");
            let mr = key.mr;
            // The k loop: two unrolled groups and the odd one.
            let (maddubsw, maddwd, dpbusd) = match scheme {
                Scheme::BytePairs => (3 * 2 * mr, 3 * 2 * mr, 0),
                Scheme::WordPairs => (0, 3 * 4 * mr, 0),
                Scheme::DotProduct => (0, 0, 3 * mr),
                Scheme::Tiles => unreachable!("decoded by amx_kernels_decode_to_tiles"),
            };
            assert_eq!(count(&ins, Mnemonic::Vpmaddubsw), maddubsw, "{s}");
            assert_eq!(count(&ins, Mnemonic::Vpmaddwd), maddwd, "{s}");
            assert_eq!(count(&ins, Mnemonic::Vpdpbusd), dpbusd, "{s}");
            // Dequantizing kernels convert every accumulator once and store floats; the others
            // store the i32 sums.
            let accs = if scheme == Scheme::DotProduct {
                mr
            } else {
                2 * mr
            };
            let converts = count(&ins, Mnemonic::Vcvtdq2ps);
            assert_eq!(converts, if key.last.is_some() { accs } else { 0 }, "{s}");
            let stores = ins
                .iter()
                .filter(|i| {
                    i.op_count() > 0
                        && i.op_kind(0) == OpKind::Memory
                        && i.mnemonic() != Mnemonic::Nop
                        && i.mnemonic() != Mnemonic::Prefetcht0
                })
                .count();
            assert_eq!(stores, accs, "{s}: stores");
            // A conv's weights are prefetched ahead in the k loop; a matmul's are not.
            let prefetches = count(&ins, Mnemonic::Prefetcht0);
            assert_eq!(
                prefetches > 0,
                key.contraction == Contraction::Conv,
                "{s}: prefetches"
            );
            // The k loop (the target of its backward branch) starts on a 64-byte boundary.
            let back = ins
                .iter()
                .filter(|i| i.mnemonic() == Mnemonic::Jne)
                .map(|i| i.near_branch_target())
                .min()
                .expect("a k loop");
            assert_eq!(back % 64, 0, "{s}: k loop at {back:#x}");
            for i in &ins {
                for r in vector_regs(i) {
                    if scheme == Scheme::DotProduct {
                        assert!(r.is_zmm(), "{s}: {r:?} in {:?}", i.code());
                    } else {
                        assert!(!r.is_zmm(), "{s}: {r:?}");
                    }
                }
            }
            if scheme == Scheme::DotProduct {
                // A conv's weights are embedded dword broadcasts; a matmul's activations are
                // broadcast into zmm14 first (`vpdpbusd` takes the unsigned operand first).
                let bcst = ins
                    .iter()
                    .filter(|i| i.mnemonic() == Mnemonic::Vpdpbusd && i.is_broadcast())
                    .count();
                let conv = key.contraction == Contraction::Conv;
                assert_eq!(bcst, if conv { 3 * mr } else { 0 }, "{s}");
                assert_eq!(count(&ins, Mnemonic::Kmovw), key.partial as usize, "{s}");
            } else {
                assert!(ins.iter().all(|i| !i.has_op_mask()), "{s}: EVEX");
            }
        }
    }
}

/// Deterministic values.
pub(super) struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
    pub fn f32(&mut self) -> f32 {
        self.int(-1000, 1000) as f32 / 256.0
    }
}

/// One tile's operands, built from logical values and laid out for `key`.
struct TileData {
    a: Vec<u8>,
    b: Vec<u8>,
    c: Vec<u8>,
    offset: Vec<i32>,
    scale: Vec<f32>,
    bias: Vec<f32>,
    res: Vec<f32>,
    lda: usize,
    ldc: usize,
    /// The expected tile (f32 bits, or i32 sums).
    want: Vec<u32>,
}

/// Activations `act[r or c][k]` (u8) and weights `w[k][channel]` (i8), `groups` K groups.
fn tile_data(key: &Int8Key, groups: usize, nr: usize, w_lim: i64, seed: u64) -> TileData {
    let mut q = Rng(seed);
    let mr = key.mr;
    let k = 4 * groups;
    let eb = key.scheme.element_bytes();
    let conv = key.contraction == Contraction::Conv;
    // Logical operands: x[i][k] with i = row (matmul) or column (conv); w[k][j] with j =
    // column (matmul) or row (conv).
    let xrows = if conv { 16 } else { mr };
    let wcols = if conv { mr } else { 16 };
    let x: Vec<Vec<i64>> = (0..xrows)
        .map(|_| (0..k).map(|_| q.int(0, 255)).collect())
        .collect();
    let w: Vec<Vec<i64>> = (0..k)
        .map(|_| {
            (0..wcols)
                .map(|_| q.int(-w_lim.min(128), w_lim.min(127)))
                .collect()
        })
        .collect();
    let put = |v: &mut Vec<u8>, at: usize, x: i64, bytes: usize| {
        for (i, b) in x.to_le_bytes().iter().take(bytes).enumerate() {
            v[at + i] = *b;
        }
    };
    // Element `j` of group `g` for 16 panel columns: byte offset (unpacked: the dword slots
    // `stride` bytes apart).
    let stride = 64 * 3 + 16;
    let panel_at = |g: usize, col: usize, j: usize| match (key.scheme, key.unpacked) {
        (Scheme::WordPairs, false) => 128 * g + 64 * (j / 2) + 4 * col + 2 * (j % 2),
        (Scheme::WordPairs, true) => (2 * g + j / 2) * stride + 4 * col + 2 * (j % 2),
        (_, false) => 64 * g + 4 * col + j,
        (_, true) => g * stride + 4 * col + j,
    };
    // (AMX kernels read whole tiles of 16 groups: the rest of the weights are zeros, the
    // rest of the activations anything.)
    let tiles = key.scheme == Scheme::Tiles;
    let groups_read = if tiles {
        groups.div_ceil(16) * 16
    } else {
        groups
    };
    let b_len = if key.unpacked {
        (2 * groups.max(1) + 1) * stride
    } else {
        groups_read.max(1) * key.scheme.panel_group_bytes()
    };
    let mut b = vec![0u8; b_len];
    let lda = if key.unpacked {
        stride
    } else if conv {
        0
    } else {
        4 * groups * eb + 12
    };
    let a_len = match (tiles, conv) {
        (true, true) => groups_read * mr * 4 + 1024,
        (true, false) => lda * 16 + groups_read * 4 + 64,
        (false, true) => groups * mr * 4 * eb,
        (false, false) => lda * mr,
    };
    let mut a = vec![0u8; a_len.max(1)];
    if tiles && !conv {
        // Activation bytes past the rows' K and past the tile's rows: not zeros.
        for (i, x) in a.iter_mut().enumerate() {
            *x = (i * 37 % 251) as u8;
        }
    }
    for g in 0..groups {
        for j in 0..4 {
            let kk = 4 * g + j;
            for col in 0..16 {
                let v = if conv { x[col][kk] } else { w[kk][col] };
                put(&mut b, panel_at(g, col, j), v, eb);
            }
            for r in 0..mr {
                let (at, v) = if conv && tiles {
                    ((g / 16) * mr * 64 + r * 64 + (g % 16) * 4 + j, w[kk][r])
                } else if conv {
                    (g * mr * 4 * eb + r * 4 * eb + j * eb, w[kk][r])
                } else {
                    (r * lda + (4 * g + j) * eb, x[r][kk])
                };
                put(&mut a, at, v, eb);
            }
        }
    }
    let ldc = 16 + 3;
    let cols = if key.partial { nr } else { 16 };
    let tile_len = ldc * (mr - 1) + cols;
    let c0: Vec<u32> = (0..tile_len)
        .map(|_| q.int(-100_000, 100_000) as i32 as u32)
        .collect();
    let res: Vec<f32> = (0..tile_len).map(|_| q.f32()).collect();
    // Channel tables padded to 16 entries.
    let offset: Vec<i32> = (0..16).map(|_| q.int(-50_000, 50_000) as i32).collect();
    let scale: Vec<f32> = (0..16).map(|_| q.int(1, 300) as f32 / 65536.0).collect();
    let bias: Vec<f32> = (0..16).map(|_| q.f32()).collect();
    let mut want = c0.clone();
    for r in 0..mr {
        for col in 0..cols {
            let ch = if conv { r } else { col };
            let o = r * ldc + col;
            let mut acc: i32 = if key.first { offset[ch] } else { c0[o] as i32 };
            for kk in 0..k {
                let (xv, wv) = if conv {
                    (x[col][kk], w[kk][r])
                } else {
                    (x[r][kk], w[kk][col])
                };
                acc = acc.wrapping_add((xv * wv) as i32);
            }
            want[o] = match &key.last {
                None => acc as u32,
                Some(d) => dequantized(acc, d, scale[ch], bias[ch], res[o]),
            };
        }
    }
    TileData {
        a,
        b,
        c: c0.iter().flat_map(|x| x.to_le_bytes()).collect(),
        offset,
        scale,
        bias,
        res,
        lda,
        ldc: ldc * 4,
        want,
    }
}

/// The f32 bits an int8 kernel's epilogue `d` makes of the i32 sum `acc` of a channel with
/// scale `scale` and bias `bias`, `res` the residual at the element.
pub(super) fn dequantized(acc: i32, d: &Dequantize, scale: f32, bias: f32, res: f32) -> u32 {
    let mut y = acc as f32 * scale;
    if d.bias {
        y += bias;
    }
    for s in &d.steps {
        y = match *s {
            Epilogue::BiasRow | Epilogue::BiasCol => y + bias,
            Epilogue::Relu => y.max(0.0),
            Epilogue::Clip(lo, hi) => y.max(f32::from_bits(lo)).min(f32::from_bits(hi)),
            Epilogue::Residual => y + res,
            Epilogue::FakeQuantize {
                scale,
                zero,
                signed,
            } => {
                // optc_ir's fake_quantize, as the generic lowering rounds it.
                let (s, z) = (f32::from_bits(scale), f32::from_bits(zero));
                let (lo, hi) = if signed {
                    (-128.0, 127.0)
                } else {
                    (0.0, 255.0)
                };
                let q = (y / s).round_ties_even() + z;
                let q = if q > lo { q } else { lo };
                let q = if q < hi { q } else { hi };
                (q - z) * s
            }
            Epilogue::HardSwish => y * (y / 6.0 + 0.5).clamp(0.0, 1.0),
            Epilogue::Silu => silu(y),
            Epilogue::Gelu => gelu(y),
            Epilogue::GeluTanh => gelu_tanh(y),
            Epilogue::Scale(_) => unreachable!(),
        };
    }
    y.to_bits()
}

pub(super) fn le<T: Copy>(v: &[T], f: impl Fn(T) -> [u8; 4]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

fn check_tile(key: &Int8Key, got: &[u32], want: &[u32], what: &str) {
    for (o, (&g, &w)) in got.iter().zip(want).enumerate() {
        let float = key.last.is_some();
        assert!(
            g == w,
            "{} {what}: element {o} got {} want {}",
            key.symbol(),
            if float {
                f32::from_bits(g).to_string()
            } else {
                (g as i32).to_string()
            },
            if float {
                f32::from_bits(w).to_string()
            } else {
                (w as i32).to_string()
            },
        );
    }
}

/// Run one VNNI kernel in the emulator: the output region's dwords.
fn emulate(key: &Int8Key, code: &[u8], d: &TileData, groups: usize, nr: usize) -> Vec<u32> {
    const CODE: u64 = 0x1000_0000;
    const A: u64 = 0x2000_0000;
    const B: u64 = 0x3000_0000;
    const C: u64 = 0x4000_0000;
    const OFFSET: u64 = 0x5000_0000;
    const SCALE: u64 = 0x5100_0000;
    const BIAS: u64 = 0x5200_0000;
    const RES: u64 = 0x6000_0000;
    let mut m = Machine::new();
    m.mem.push((CODE, code.to_vec()));
    m.mem.push((A, d.a.clone()));
    m.mem.push((B, d.b.clone()));
    m.mem.push((C, d.c.clone()));
    m.mem.push((OFFSET, le(&d.offset, i32::to_le_bytes)));
    m.mem.push((SCALE, le(&d.scale, f32::to_le_bytes)));
    // A bias is not padded: only the valid columns of a matmul tile exist.
    let nb = if key.channel_rows() || !key.partial {
        16
    } else {
        nr
    };
    m.mem.push((BIAS, le(&d.bias[..nb], f32::to_le_bytes)));
    m.mem.push((RES, le(&d.res, f32::to_le_bytes)));
    let args = [
        A,
        B,
        C,
        groups as u64,
        d.lda as u64,
        d.ldc as u64,
        nr as u64,
        OFFSET,
        SCALE,
        BIAS,
        RES,
    ];
    m.call(code, CODE, &args, 1_000_000);
    (0..d.c.len() / 4)
        .map(|o| m.read32(C + 4 * o as u64))
        .collect()
}

/// The u8 output of a tile whose f32 output would be `want` (`ldc` elements a row, `mr` rows,
/// `cols` valid columns), quantized with `p` as the kernels' u8 store does, over the bytes
/// `c0` (the rest stays).
pub(super) fn quantized_bytes(
    want: &[u32],
    c0: &[u8],
    p: QuantParams,
    positions: impl Iterator<Item = usize>,
) -> Vec<u8> {
    let mut out = c0.to_vec();
    let inverse = p.inverse();
    for o in positions {
        out[o] = p.quantize(f32::from_bits(want[o]), inverse);
    }
    out
}

/// The u8 outputs' parameters of the kernel tests: one saturating most of the tiles' values,
/// one spreading them over the range.
pub(super) const STORE_PARAMS: [QuantParams; 2] = [
    QuantParams {
        scale: 2.5,
        zero: 128,
    },
    QuantParams {
        scale: 0.3,
        zero: 7,
    },
];

/// Conv kernels (channels along rows) that store u8: each row's 16 (or `nr`) pixels
/// quantized after the steps, `ldc` bytes apart; the other bytes untouched. In the emulator,
/// against the f32 tile of the same key quantized by `QuantParams::quantize`.
#[test]
fn vnni_conv_kernels_store_quantized_bytes() {
    let params = STORE_PARAMS;
    let mut seed = 7000;
    for mr in 1..=6 {
        for partial in [false, true] {
            for unpacked in [false, true] {
                for bias in [false, true] {
                    let mut lists = vec![
                        vec![],
                        vec![Epilogue::Relu],
                        vec![Epilogue::Clip(CLIP_LO, CLIP_HI)],
                        vec![FQ_U8],
                    ];
                    if !bias {
                        lists.push(vec![Epilogue::BiasRow, Epilogue::Relu]);
                    }
                    for steps in lists {
                        seed += 1;
                        let p = params[seed as usize % 2];
                        let f32_key = Int8Key {
                            scheme: Scheme::DotProduct,
                            contraction: Contraction::Conv,
                            mr,
                            partial,
                            unpacked,
                            first: true,
                            last: Some(Dequantize {
                                bias,
                                steps: steps.clone(),
                                quantize: None,
                            }),
                        };
                        let mut key = f32_key.clone();
                        key.last.as_mut().unwrap().quantize = Some(QuantizeStore::of(p));
                        let code = assemble(&key).unwrap();
                        for groups in [1, 3] {
                            let nrs: &[usize] = if partial { &[1, 9] } else { &[16] };
                            for &nr in nrs {
                                let mut d = tile_data(&f32_key, groups, nr, 128, seed);
                                // Rows 19 bytes apart (the f32 tile's `ldc` elements).
                                let ldc = 19;
                                let c0: Vec<u8> = (0..d.want.len().next_multiple_of(4))
                                    .map(|i| (i * 37 % 251) as u8)
                                    .collect();
                                let cols = if partial { nr } else { 16 };
                                let cells =
                                    (0..mr).flat_map(|r| (0..cols).map(move |c| r * ldc + c));
                                let want = quantized_bytes(&d.want, &c0, p, cells);
                                d.c = c0;
                                d.ldc = ldc;
                                let got: Vec<u8> = emulate(&key, &code, &d, groups, nr)
                                    .iter()
                                    .flat_map(|x| x.to_le_bytes())
                                    .collect();
                                assert_eq!(got, want, "{} groups={groups} nr={nr}", key.symbol());
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn vnni_kernels_compute_the_reference_tile() {
    let mut seed = 1;
    for key in all_keys(Scheme::DotProduct) {
        let code = assemble(&key).unwrap();
        for groups in [0, 1, 2, 3, 5] {
            let nrs: &[usize] = if key.partial { &[1, 9, 16] } else { &[16] };
            for &nr in nrs {
                seed += 1;
                // Full-range weights: `vpdpbusd` never saturates.
                let d = tile_data(&key, groups, nr, 128, seed);
                let got = emulate(&key, &code, &d, groups, nr);
                check_tile(&key, &got, &d.want, &format!("groups={groups} nr={nr}"));
            }
        }
    }
}

/// The AVX2 kernels' signature.
pub(super) type Kernel = extern "C" fn(
    *const u8,
    *const u8,
    *mut u8,
    u64,
    u64,
    u64,
    u64,
    *const i32,
    *const f32,
    *const f32,
    *const f32,
);

/// Machine code defined into a JIT module of this process (kept alive by the module).
pub(super) fn native(bytes: &[u8], nparams: usize) -> (JITModule, *const u8) {
    let isa = Target::parse("x86_64-avx2").unwrap().jit_isa().unwrap();
    let mut module = JITModule::new(JITBuilder::with_isa(isa, default_libcall_names()));
    let mut sig = module.make_signature();
    for _ in 0..nparams {
        sig.params.push(AbiParam::new(types::I64));
    }
    let id = module
        .declare_function("routine", Linkage::Local, &sig)
        .unwrap();
    module.define_function_bytes(id, 64, bytes, &[]).unwrap();
    module.finalize_definitions().unwrap();
    let p = module.get_finalized_function(id);
    (module, p)
}

fn host_has_avx2() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
}

/// Run one AVX2 kernel natively on `d`.
fn run_native(key: &Int8Key, d: &TileData, groups: usize, nr: usize) -> Vec<u32> {
    let (_module, p) = native(&assemble(key).unwrap(), 11);
    // SAFETY: `p` is the finalized code of an int8 kernel, whose signature is `Kernel`
    // (System-V, 11 integer/pointer arguments); `_module` keeps it mapped during the call.
    let f: Kernel = unsafe { std::mem::transmute::<*const u8, Kernel>(p) };
    let mut c = d.c.clone();
    // The kernel reads only the valid columns of a partial bias and the `groups` of `a`/`b`.
    f(
        d.a.as_ptr(),
        d.b.as_ptr(),
        c.as_mut_ptr(),
        groups as u64,
        d.lda as u64,
        d.ldc as u64,
        nr as u64,
        d.offset.as_ptr(),
        d.scale.as_ptr(),
        d.bias.as_ptr(),
        d.res.as_ptr(),
    );
    c.chunks(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

#[test]
fn avx2_kernels_compute_the_reference_tile() {
    if !host_has_avx2() {
        return;
    }
    let mut seed = 7;
    for scheme in [Scheme::BytePairs, Scheme::WordPairs] {
        for key in all_keys(scheme) {
            for groups in [0, 1, 2, 5] {
                let nrs: &[usize] = if key.partial { &[1, 8, 15] } else { &[16] };
                for &nr in nrs {
                    seed += 1;
                    // BytePairs: weights whose pairs cannot saturate (|w| <= 64); WordPairs:
                    // the full range.
                    let lim = if scheme == Scheme::BytePairs { 64 } else { 128 };
                    let d = tile_data(&key, groups, nr, lim, seed);
                    let got = run_native(&key, &d, groups, nr);
                    check_tile(&key, &got, &d.want, &format!("groups={groups} nr={nr}"));
                }
            }
        }
    }
}

/// Every AMX kernel: tile multiplies into four accumulators (`tdpbusd` for matmuls, whose
/// unsigned activations are the A tile; `tdpbsud` for convs, whose unsigned patches are the B
/// tile), one store per stored row, and no tile configuration (the unit's routines load and
/// release it once).
#[test]
fn amx_kernels_decode_to_tiles() {
    let mut symbols = std::collections::HashSet::new();
    for key in all_keys(Scheme::Tiles) {
        let s = key.symbol();
        assert!(symbols.insert(s.clone()), "duplicate symbol {s}");
        assert!(s.contains("amx"), "{s}");
        let ins = decode(&key, &assemble(&key).unwrap());
        let matmul = key.contraction == Contraction::MatMul;
        // Four K tiles per iteration (four accumulators), up to three after the loop.
        let multiplies = 4 + 3;
        assert_eq!(
            count(&ins, Mnemonic::Tdpbusd),
            multiplies * matmul as usize,
            "{s}"
        );
        assert_eq!(
            count(&ins, Mnemonic::Tdpbsud),
            multiplies * !matmul as usize,
            "{s}"
        );
        assert_eq!(count(&ins, Mnemonic::Tileloadd), 2 * multiplies, "{s}");
        for m in [Mnemonic::Ldtilecfg, Mnemonic::Tilerelease] {
            assert_eq!(count(&ins, m), 0, "{s}: {m:?}");
        }
        assert_eq!(count(&ins, Mnemonic::Tilestored), 4, "{s}");
        assert_eq!(count(&ins, Mnemonic::Tilezero), 4, "{s}");
        let converts = count(&ins, Mnemonic::Vcvtdq2ps);
        assert_eq!(converts, if key.last.is_some() { key.mr } else { 0 }, "{s}");
        let stores = ins
            .iter()
            .filter(|i| {
                i.op_count() > 0
                    && i.op_kind(0) == OpKind::Memory
                    && !matches!(
                        i.mnemonic(),
                        Mnemonic::Tilestored | Mnemonic::Push | Mnemonic::Ldtilecfg
                    )
            })
            .count();
        assert_eq!(stores, key.mr, "{s}: stores");
    }
}

/// Run a tile-state routine natively.
fn tile_state(t: TileState) {
    let (_module, p) = native(&t.assemble().unwrap(), 0);
    // SAFETY: `p` is the finalized code of a routine without arguments or results (it only
    // loads the tile configuration from its own code, or releases the tiles); `_module`
    // keeps it mapped during the call.
    let f: extern "C" fn() = unsafe { std::mem::transmute::<*const u8, extern "C" fn()>(p) };
    f();
}
fn configure() {
    tile_state(TileState::Configure);
}
fn release() {
    tile_state(TileState::Release);
}

/// The AMX kernels on a host that has AMX-INT8 (and the permission for its tile state):
/// every key, K from 0 to 3 tiles with partial ones, partial columns; full-range weights.
#[test]
fn amx_kernels_compute_the_reference_tile() {
    if !crate::target::amx_permission() {
        eprintln!("no AMX-INT8 on this host: the AMX kernels are only decoded");
        return;
    }
    let mut seed = 11;
    for key in all_keys(Scheme::Tiles) {
        for groups in [0, 1, 5, 16, 17, 40] {
            let nrs: &[usize] = if key.partial { &[1, 9] } else { &[16] };
            for &nr in nrs {
                seed += 1;
                let d = tile_data(&key, groups, nr, 128, seed);
                configure();
                let got = run_native(&key, &d, groups, nr);
                release();
                check_tile(&key, &got, &d.want, &format!("groups={groups} nr={nr}"));
            }
        }
    }
}

/// Weights (127, 127) against activations (255, 255): the pair sum 64770 saturates to 32767
/// in `vpmaddubsw`. `BytePairs` computes the wrong tile; `WordPairs` and VNNI the right one.
#[test]
fn byte_pairs_saturate_where_word_pairs_do_not() {
    let saturating = |scheme: Scheme| {
        let key = Int8Key {
            scheme,
            contraction: Contraction::MatMul,
            mr: 1,
            partial: false,
            unpacked: false,
            first: true,
            last: None,
        };
        let mut d = tile_data(&key, 1, 16, 1, 3);
        // Every weight 127, every activation 255; offsets 0.
        let eb = scheme.element_bytes();
        for g in d.b.chunks_mut(eb) {
            g[0] = 127;
            if eb == 2 {
                g[1] = 0;
            }
        }
        for x in d.a.iter_mut().take(4 * eb).step_by(eb) {
            *x = 255;
        }
        d.offset.fill(0);
        (key, d, 4 * 255 * 127)
    };
    let (key, d, exact) = saturating(Scheme::DotProduct);
    let got = emulate(&key, &assemble(&key).unwrap(), &d, 1, 16);
    assert!(got.iter().all(|&x| x as i32 == exact), "{got:?}");
    if !host_has_avx2() {
        return;
    }
    let (key, d, exact) = saturating(Scheme::WordPairs);
    let got = run_native(&key, &d, 1, 16);
    assert!(got.iter().all(|&x| x as i32 == exact), "{got:?}");
    let (key, d, exact) = saturating(Scheme::BytePairs);
    let got = run_native(&key, &d, 1, 16);
    assert!(
        got.iter()
            .all(|&x| x as i32 == 2 * 32767 && x as i32 != exact),
        "{got:?}"
    );
}

/// Values that exercise the quantizer's edges: NaN, infinities, signed zeros, ties of the
/// rounding, values far outside the range.
fn edge_values(q: &mut Rng, n: usize) -> Vec<f32> {
    let special = [
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        0.0,
        -0.0,
        0.5,
        -0.5,
        1.5,
        2.5,
        -2.5,
        1e30,
        -1e30,
        3.0e-39,
    ];
    (0..n)
        .map(|i| {
            if i % 7 == 3 {
                special[(q.next() % special.len() as u64) as usize]
            } else {
                q.f32()
            }
        })
        .collect()
}

fn params_block(p: QuantParams) -> Vec<u8> {
    let mut v = vec![];
    v.extend(p.inverse().to_le_bytes());
    v.extend((p.zero as f32).to_le_bytes());
    v.extend((p.zero as u32).to_le_bytes());
    v.extend(p.scale.to_le_bytes());
    v
}

#[test]
fn quantize_rows_match_the_definition() {
    if !host_has_avx2() {
        return;
    }
    let mut q = Rng(11);
    for eb in [1usize, 2, 4] {
        for k in [1usize, 7, 8, 9, 16, 37, 64, 100, 131] {
            let key = QuantizeKey::Rows {
                element_bytes: eb,
                k,
            };
            let (_module, p) = native(&key.assemble().unwrap(), 5);
            type Rows = extern "C" fn(*const f32, *mut u8, u64, u64, *const u8);
            // SAFETY: the finalized code of a `Rows` routine (5 integer/pointer arguments).
            let f: Rows = unsafe { std::mem::transmute::<*const u8, Rows>(p) };
            for (scale, zero) in [(0.03f32, 0u8), (0.0117, 128), (1.0, 255), (7.5, 3)] {
                let params = QuantParams { scale, zero };
                let rows = 3;
                let x = edge_values(&mut q, rows * k);
                let ldd = (k.div_ceil(8) * 8 * eb) + 5;
                let mut dst = vec![0xaau8; ldd * rows];
                f(
                    x.as_ptr(),
                    dst.as_mut_ptr(),
                    rows as u64,
                    ldd as u64,
                    params_block(params).as_ptr(),
                );
                let inv = params.inverse();
                for r in 0..rows {
                    for i in 0..k.div_ceil(8) * 8 {
                        let q = if i < k {
                            params.quantize(x[r * k + i], inv)
                        } else {
                            zero
                        };
                        let at = r * ldd + i * eb;
                        let (got, want) = match eb {
                            1 => (dst[at] as i32, q as i32),
                            2 => (u16::from_le_bytes([dst[at], dst[at + 1]]) as i32, q as i32),
                            _ => {
                                let v = f32::from_le_bytes(dst[at..at + 4].try_into().unwrap());
                                let want = q as f32 - zero as f32;
                                assert_eq!(v.to_bits(), want.to_bits(), "k={k} {r} {i}");
                                (0, 0)
                            }
                        };
                        assert_eq!(got, want, "k={k} eb={eb} row {r} element {i}");
                    }
                    // Nothing written past the row's elements.
                    assert_eq!(dst[r * ldd + ldd - 1], 0xaa);
                }
            }
        }
    }
}

#[test]
fn quantize_range_matches_the_definition() {
    if !host_has_avx2() {
        return;
    }
    let (_module, p) = native(&QuantizeKey::Range.assemble().unwrap(), 3);
    type Range = extern "C" fn(*const f32, u64, *mut f32);
    // SAFETY: the finalized code of the `Range` routine (3 integer/pointer arguments).
    let f: Range = unsafe { std::mem::transmute::<*const u8, Range>(p) };
    let mut q = Rng(5);
    for n in [0usize, 1, 5, 8, 15, 16, 17, 40, 1001] {
        let mut x = edge_values(&mut q, n);
        // Without infinities too (the usual case).
        for pass in 0..2 {
            if pass == 1 {
                x.iter_mut()
                    .filter(|v| v.is_infinite())
                    .for_each(|v| *v = 1.0);
            }
            let mut out = [7.0f32; 2];
            f(x.as_ptr(), n as u64, out.as_mut_ptr());
            let (mut lo, mut hi) = (0f32, 0f32);
            for &v in &x {
                if v < lo {
                    lo = v;
                }
                if v > hi {
                    hi = v;
                }
            }
            assert_eq!(out[0].to_bits(), lo.to_bits(), "n={n}");
            assert_eq!(out[1].to_bits(), hi.to_bits(), "n={n}");
            assert_eq!(
                QuantParams::from_range(out[0], out[1]),
                QuantParams::dynamic(&x)
            );
        }
    }
}

/// The plane routines against the definition: f32 inputs quantized (`QuantParams`), u8
/// inputs (already quantized) moved, f32 inputs subsampled (every `step`-th row and column
/// of a source as short as the steps allow, or as long); padding the zero point, missing
/// channels 0, nothing written past the plane.
#[test]
fn quantize_planes_match_the_definition() {
    if !host_has_avx2() {
        return;
    }
    let mut q = Rng(9);
    for source_bytes in [4usize, 1] {
        let steps: &[(usize, usize)] = if source_bytes == 4 {
            &[(1, 1), (2, 2), (2, 1), (3, 2)]
        } else {
            &[(1, 1)]
        };
        for &step in steps {
            for eb in [1usize, 2] {
                for channels in 1..=4 / eb {
                    for (k, &(h, w, ph, pw, extra_h, extra_w)) in [
                        (3, 5, 1, 1, 1, 1),
                        (2, 17, 0, 0, 0, 0),
                        (4, 8, 2, 3, 0, 3),
                        (1, 1, 3, 3, 3, 3),
                        (5, 9, 0, 2, 1, 0),
                    ]
                    .iter()
                    .enumerate()
                    {
                        // Sources as short as the steps allow, or one step longer.
                        let longer = (k % 2) * (step.0 - 1);
                        let source = (
                            (h - 1) * step.0 + 1 + longer,
                            (w - 1) * step.1 + 1 + (k % 2) * (step.1 - 1),
                        );
                        check_plane(
                            &mut q,
                            source_bytes,
                            eb,
                            channels,
                            (h, w, ph, pw),
                            (extra_h, extra_w),
                            source,
                            step,
                        );
                    }
                }
            }
        }
    }
}

/// One plane routine against the definition ([`quantize_planes_match_the_definition`]).
#[allow(clippy::too_many_arguments)]
fn check_plane(
    q: &mut Rng,
    source_bytes: usize,
    eb: usize,
    channels: usize,
    (h, w, ph, pw): (usize, usize, usize, usize),
    (extra_h, extra_w): (usize, usize),
    source: (usize, usize),
    step: (usize, usize),
) {
    let (hp, wp) = (h + ph + extra_h, w + pw + extra_w);
    let key = PlaneKey {
        source_bytes,
        element_bytes: eb,
        channels,
        h,
        w,
        ph,
        pw,
        hp,
        wp,
        source,
        step,
    };
    let (_module, p) = native(&QuantizeKey::Plane(key).assemble().unwrap(), 3);
    type Plane = extern "C" fn(*const u8, *mut u32, *const u8);
    // SAFETY: the finalized code of a `Plane` routine (3 pointer arguments).
    let f: Plane = unsafe { std::mem::transmute::<*const u8, Plane>(p) };
    let params = QuantParams {
        scale: 0.02,
        zero: 131,
    };
    let inv = params.inverse();
    let n = channels * source.0 * source.1;
    let x = edge_values(q, n);
    // The input exactly as long as its planes (a read past them would be caught only by
    // chance; the u8 tail is read byte by byte).
    let input: Vec<u8> = if source_bytes == 4 {
        x.iter().flat_map(|v| v.to_le_bytes()).collect()
    } else {
        (0..n).map(|_| q.int(0, 255) as u8).collect()
    };
    // Channel `e`'s pixel `(y, x)` of the plane: source pixel `(step.0 y, step.1 x)`.
    let value = |e: usize, y: usize, xx: usize| -> u32 {
        let i = (e * source.0 + step.0 * y) * source.1 + step.1 * xx;
        if source_bytes == 4 {
            params.quantize(x[i], inv) as u32
        } else {
            input[i] as u32
        }
    };
    let mut dst = vec![0x5a5a_5a5au32; hp * wp + 1];
    f(
        input.as_ptr(),
        dst.as_mut_ptr(),
        params_block(params).as_ptr(),
    );
    for y in 0..hp {
        for xx in 0..wp {
            let mut want = 0u32;
            for e in 0..4 / eb {
                let inside = y >= ph && y < ph + h && xx >= pw && xx < pw + w;
                let v = if !inside {
                    params.zero as u32
                } else if e < channels {
                    value(e, y - ph, xx - pw)
                } else {
                    0
                };
                want |= v << (8 * eb * e);
            }
            assert_eq!(dst[y * wp + xx], want, "{key:?}: padded pixel ({y}, {xx})");
        }
    }
    assert_eq!(dst[hp * wp], 0x5a5a_5a5a, "{key:?}: written past the plane");
}
