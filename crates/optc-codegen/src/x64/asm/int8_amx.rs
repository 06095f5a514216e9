//! The AMX int8 microkernel ([`Scheme::Tiles`]: Intel AMX-INT8, Sapphire Rapids and later,
//! JIT only): `16 x 16` i32 tile registers accumulate a whole output tile per `tdpbusd` /
//! `tdpbsud` (16 x 16 x 64 multiply-adds, 256 times a `vpdpbusd` zmm's); four accumulators
//! take the K tiles in turn (a tile multiply's latency is about three times its issue
//! interval), then they are stored to the stack, summed row by row and the rows take the
//! VNNI kernel's epilogue in zmm registers.
//!
//! Operands, per K tile of 16 groups (64 K values):
//! - matmul: `a` = the quantized activation rows in place (u8, `lda` apart: the A tile),
//!   `b` = a weight panel `[g][16][4 x s8]` (the B tile, 64-byte rows): `tdpbusd`;
//! - conv: `a` = weights packed as `[k tile][mr rows][64 x s8]` (the A tile, rows 64 bytes
//!   apart), `b` = a patch panel `[g][16][4 x u8]`: `tdpbsud` (signed A, unsigned B).
//!
//! The kernel always multiplies whole tiles: 16 rows (rows past `mr` are computed from
//! whatever follows and never stored) and 16 groups (the plan pads K to whole tiles with zero
//! weights: past `groups`, the other operand's bytes meet zeros). So `a` and `b` must be
//! readable for whole tiles: the plan leaves slack after them.
//!
//! Same arguments as every int8 kernel (`int8.rs`); a frame (`rbp`) for the accumulators'
//! 4 KiB on the stack. The tiles must be configured ([`TileState::Configure`]: eight 16 x
//! 64-byte tiles, tmm0-3 accumulate, tmm4/5 hold A, tmm6/7 B): the driver configures them
//! once per work unit and releases them after it (`ldtilecfg` and `tilerelease` in every
//! call cost about a quarter of a 9-tile call).

use super::epilogue::{fake_quantize, fake_quantize_constants, Activation, Epilogue};
use super::int8::{Contraction, Int8Key, Scheme};
use iced_x86::code_asm::*;

/// Rows of the tile a kernel computes (at most; `Int8Key::mr` are stored).
pub(crate) const TILE_ROWS: usize = 16;
/// K groups (of 4) per tile step.
pub(crate) const TILE_GROUPS: usize = 16;

/// Accumulator tiles (tmm0-3: K tiles in turn), summed in the epilogue.
const ACCUMULATORS: usize = 4;

fn tmm(i: usize) -> AsmRegisterTmm {
    [tmm0, tmm1, tmm2, tmm3, tmm4, tmm5, tmm6, tmm7][i]
}

/// The 64-byte tile configuration: palette 1, all eight tiles of 16 rows x 64 bytes.
fn tile_config() -> [u8; 64] {
    let mut c = [0u8; 64];
    c[0] = 1;
    for t in 0..8 {
        c[16 + 2 * t] = 64;
        c[48 + t] = TILE_ROWS as u8;
    }
    c
}

/// The routines around a unit's AMX kernel calls (no arguments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum TileState {
    /// Load the tile configuration (`ldtilecfg`).
    Configure,
    /// Return the tiles to their initial state (`tilerelease`).
    Release,
}

impl TileState {
    pub fn symbol(self) -> String {
        match self {
            TileState::Configure => "optc_amx_configure".into(),
            TileState::Release => "optc_amx_release".into(),
        }
    }

    pub fn assemble(self) -> Result<Vec<u8>, IcedError> {
        let mut a = CodeAssembler::new(64)?;
        match self {
            TileState::Configure => {
                let mut config = a.create_label();
                a.ldtilecfg(ptr(config))?;
                a.ret()?;
                a.set_label(&mut config)?;
                a.db(&tile_config())?;
            }
            TileState::Release => {
                a.tilerelease()?;
                a.ret()?;
            }
        }
        a.assemble(0)
    }
}

pub(super) fn assemble_amx(key: &Int8Key) -> Result<Vec<u8>, IcedError> {
    let mr = key.mr;
    assert!((1..=TILE_ROWS).contains(&mr), "AMX tile rows out of range");
    assert_eq!(key.scheme, Scheme::Tiles);
    assert!(!key.unpacked, "AMX conv kernels read packed panels");
    let matmul = key.contraction == Contraction::MatMul;
    let p = key.partial;
    let mut a = CodeAssembler::new(64)?;
    let mut consts: Vec<(CodeLabel, u32)> = vec![];
    // Frame: the stack arguments at [rbp + 16..]; the stored tiles at rsp (64-byte aligned).
    a.push(rbp)?;
    a.mov(rbp, rsp)?;
    a.sub(rsp, (64 * TILE_ROWS * ACCUMULATORS) as i32)?;
    a.and(rsp, -64)?;
    let arg = |i: i32| qword_ptr(rbp + (16 + 8 * i));
    // rax = K tiles; k1 = (1 << nr) - 1 for partial tiles.
    a.lea(rax, rcx + (TILE_GROUPS as i32 - 1))?;
    a.shr(rax, 4)?;
    if p {
        a.mov(rcx, arg(0))?;
        a.mov(r11d, 1)?;
        a.shl(r11d, cl)?;
        a.dec(r11d)?;
        a.kmovw(k1, r11d)?;
    }
    for t in 0..ACCUMULATORS {
        a.tilezero(tmm(t))?;
    }
    if matmul {
        a.mov(r10, r8)?;
    } else {
        a.mov(r10d, 64)?;
    }
    a.mov(r11d, 64)?;
    // K tile `u` into accumulator `u % 4` (a tile multiply's latency is about three times
    // its throughput: four independent chains), A and B in alternating registers.
    let step = |a: &mut CodeAssembler, u: usize| -> Result<(), IcedError> {
        let (ta, tb) = (tmm(4 + u % 2), tmm(6 + u % 2));
        a.tileloadd(ta, ptr(rdi + r10))?;
        a.tileloadd(tb, ptr(rsi + r11))?;
        if matmul {
            a.tdpbusd(tmm(u % ACCUMULATORS), ta, tb)?;
            a.add(rdi, 64)?;
        } else {
            a.tdpbsud(tmm(u % ACCUMULATORS), ta, tb)?;
            a.add(rdi, 64 * mr as i32)?;
        }
        a.add(rsi, 64 * TILE_GROUPS as i32)
    };
    let mut l = a.create_label();
    let mut rest = a.create_label();
    let mut done = a.create_label();
    a.cmp(rax, ACCUMULATORS as i32)?;
    a.jb(rest)?;
    a.set_label(&mut l)?;
    for u in 0..ACCUMULATORS {
        step(&mut a, u)?;
    }
    a.sub(rax, ACCUMULATORS as i32)?;
    a.cmp(rax, ACCUMULATORS as i32)?;
    a.jae(l)?;
    a.set_label(&mut rest)?;
    for u in 0..ACCUMULATORS - 1 {
        a.cmp(rax, u as i32)?;
        a.jbe(done)?;
        step(&mut a, u)?;
    }
    a.set_label(&mut done)?;
    for t in 0..ACCUMULATORS {
        a.tilestored(ptr(rsp + r11 + 1024 * t as i32), tmm(t))?;
    }

    // Row by row: zmm0 the row; zmm16-21 the per-column (matmul) tables and constants.
    // rsi = the output row, rdi = the residual row, r8/r10/r11 = offsets, scales, bias.
    a.mov(rsi, rdx)?;
    a.mov(r8, arg(1))?;
    a.mov(r10, arg(2))?;
    a.mov(r11, arg(3))?;
    a.mov(rdi, arg(4))?;
    let acc = zmm0;
    // Per-column tables of a matmul (a conv's channels run along rows: broadcast per row).
    if matmul {
        if key.first {
            a.vmovdqu32(zmm18, zmmword_ptr(r8))?;
        }
        if key.last.is_some() {
            // The scale table is padded to whole panels; a bias is not: masked.
            a.vmovups(zmm16, zmmword_ptr(r10))?;
            if p {
                a.vmovups(zmm17.k1().z(), zmmword_ptr(r11))?;
            } else {
                a.vmovups(zmm17, zmmword_ptr(r11))?;
            }
        }
    }
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    if let Some(dq) = &key.last {
        assert!(dq.quantize.is_none(), "u8 stores are the VNNI kernels'");
        for step in &dq.steps {
            match *step {
                Epilogue::Relu => a.vpxord(zmm19, zmm19, zmm19)?,
                Epilogue::Clip(lo, hi) => {
                    let llo = konst(&mut a, lo);
                    let lhi = konst(&mut a, hi);
                    a.vbroadcastss(zmm20, dword_ptr(llo))?;
                    a.vbroadcastss(zmm21, dword_ptr(lhi))?;
                }
                _ => {}
            }
        }
    }
    // The activation steps' constants, once for every row.
    let activations: Vec<Option<Activation>> = key
        .last
        .iter()
        .flat_map(|dq| &dq.steps)
        .map(|&step| Activation::new(&mut a, step, &mut konst))
        .collect();
    for r in 0..mr as i32 {
        a.vmovdqa32(acc, zmmword_ptr(rsp + 64 * r))?;
        for t in 1..ACCUMULATORS as i32 {
            a.vpaddd(acc, acc, zmmword_ptr(rsp + (1024 * t + 64 * r)))?;
        }
        if key.first {
            if matmul {
                a.vpaddd(acc, acc, zmm18)?;
            } else {
                a.vpaddd(acc, acc, dword_bcst(r8 + 4 * r))?;
            }
        } else if p {
            a.vmovdqu32(zmm1.k1().z(), zmmword_ptr(rsi))?;
            a.vpaddd(acc, acc, zmm1)?;
        } else {
            a.vpaddd(acc, acc, zmmword_ptr(rsi))?;
        }
        let Some(dq) = &key.last else {
            if p {
                a.vmovdqu32(zmmword_ptr(rsi).k1(), acc)?;
            } else {
                a.vmovdqu32(zmmword_ptr(rsi), acc)?;
            }
            a.add(rsi, r9)?;
            continue;
        };
        a.vcvtdq2ps(acc, acc)?;
        let channel =
            |a: &mut CodeAssembler, base: AsmRegister64, table: AsmRegisterZmm, mul| match (
                matmul, mul,
            ) {
                (true, true) => a.vmulps(acc, acc, table),
                (true, false) => a.vaddps(acc, acc, table),
                (false, true) => a.vmulps(acc, acc, dword_bcst(base + 4 * r)),
                (false, false) => a.vaddps(acc, acc, dword_bcst(base + 4 * r)),
            };
        channel(&mut a, r10, zmm16, true)?;
        if dq.bias {
            channel(&mut a, r11, zmm17, false)?;
        }
        for (step, activation) in dq.steps.iter().zip(&activations) {
            match *step {
                Epilogue::BiasRow | Epilogue::BiasCol => {
                    assert_eq!(
                        *step == Epilogue::BiasRow,
                        key.channel_rows(),
                        "a fused bias runs along the channels"
                    );
                    channel(&mut a, r11, zmm17, false)?;
                }
                Epilogue::Relu => a.vmaxps(acc, zmm19, acc)?,
                Epilogue::Clip(..) => {
                    a.vmaxps(acc, zmm20, acc)?;
                    a.vminps(acc, zmm21, acc)?;
                }
                Epilogue::Residual => {
                    if p {
                        a.vmovups(zmm1.k1().z(), zmmword_ptr(rdi))?;
                        a.vaddps(acc, acc, zmm1)?;
                    } else {
                        a.vaddps(acc, acc, zmmword_ptr(rdi))?;
                    }
                }
                Epilogue::FakeQuantize {
                    scale,
                    zero,
                    signed,
                } => {
                    let regs = [zmm2, zmm3, zmm4, zmm5];
                    fake_quantize_constants(&mut a, (scale, zero, signed), regs, &mut konst)?;
                    fake_quantize(&mut a, acc, zmm1, regs)?;
                }
                Epilogue::HardSwish | Epilogue::Silu | Epilogue::Gelu | Epilogue::GeluTanh => {
                    // zmm22-26 are free (zmm16-21 hold the tables).
                    let act = activation.as_ref().expect("an activation step");
                    act.apply(&mut a, acc, [zmm22, zmm23, zmm24, zmm25, zmm26])?;
                }
                Epilogue::Scale(_) => unreachable!("int8 kernels have no scale step"),
            }
        }
        if p {
            a.vmovups(zmmword_ptr(rsi).k1(), acc)?;
        } else {
            a.vmovups(zmmword_ptr(rsi), acc)?;
        }
        a.add(rsi, r9)?;
        if dq.steps.contains(&Epilogue::Residual) {
            a.add(rdi, r9)?;
        }
    }
    a.mov(rsp, rbp)?;
    a.pop(rbp)?;
    a.vzeroupper()?;
    a.ret()?;
    for (mut l, bits) in consts {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    a.assemble(0)
}
