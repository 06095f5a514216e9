//! Depthwise-conv kernels (AVX2/FMA, ymm) assembled with `iced-x86`: every output pixel of a run of
//! channels, 8 output columns per ymm (on AVX-512 targets the epilogue's activations run on
//! the accumulators' zmm, see [`DepthwiseKey::epilogue`]).
//!
//! Cranelift's x86-64 backend lowers only 128-bit vectors and its FMA overwrites a multiplicand (a
//! register copy per tap), so the f32x4 depthwise code in `crate::x64::depthwise` runs at about a
//! quarter of the FMA peak. These kernels keep the channel's `kh * kw <= 9` weights in ymm0-8 and
//! up to 6 accumulators in ymm9-14 (on AVX-512, windows of up to 49 taps: taps 9-19 in
//! ymm21-31, the others read by EVEX embedded broadcasts from the weights; `DepthwiseKey::wide`),
//! and resolve the geometry at assembly time:
//! - rows: the rows whose window is inside the input run [`DepthwiseGeometry::rows`] at a time,
//!   each input row feeding every output row that uses it; the border rows run alone with the taps
//!   outside the input dropped ([`passes`]);
//! - columns: groups of 8 outputs. Inner groups (every load inside the row, 8 valid outputs) run in
//!   a loop, several vectors per step; the groups at the borders are unrolled with `vmaskmovps`
//!   loads that read zeros for columns outside the row (the pads) and a masked store for a last
//!   partial group;
//! - stride 1: every tap is one `vfmadd231ps acc, w, [x + off]` (the load folded into the FMA), or
//!   one load into ymm15 shared by the rows that use that input row;
//! - stride 2: outputs `o < 8` need input columns `2o + s`: `vshufps` of the two vectors at an even
//!   start picks even (`0x88`) or odd (`0xDD`) lanes in the order `[o0 o1 o4 o5 | o2 o3 o6 o7]`;
//!   every tap uses that order, so one `vpermpd 0xD8` per accumulator restores it before the
//!   epilogue.
//!
//! System-V ABI, no return value; rbx and r12 are saved and restored: `dw(x, o, w, bias, nch)`:
//! `nch` channels from input plane `x`, output plane `o`, weights `w` (`kh * kw` per channel) and
//! bias `bias` (one per channel, read only when the epilogue has a bias), planes and weights
//! contiguous.

use super::epilogue::{epilogue_pointwise, epilogue_symbol, Activation, Epilogue};
use super::registers::{ymm, zmm};
use iced_x86::code_asm::*;
use std::collections::HashMap;

/// Input rows (relative to a block's base row `r * sh - ph`) with their kernel rows, per output
/// row of the block.
pub(crate) type RowTaps = Vec<(i64, usize)>;

/// The geometry of one channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DepthwiseGeometry {
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub ph: usize,
    pub pw: usize,
}

impl DepthwiseGeometry {
    /// Output rows computed together in the inner rows: more for narrow maps, whose rows are
    /// only one or two groups (accumulators otherwise idle).
    pub fn rows(&self) -> usize {
        if self.ow <= 16 {
            4
        } else {
            2
        }
    }
}

/// The row passes of a channel, in order: `count` consecutive blocks of `rows.len()` output
/// rows from row `first`.
pub(crate) struct Pass {
    pub first: usize,
    pub rows: Vec<RowTaps>,
    pub count: usize,
}

/// Taps of output row `r` relative to input row `r0 * sh - ph`.
fn taps(g: &DepthwiseGeometry, r: usize, r0: usize) -> RowTaps {
    (0..g.kh)
        .filter_map(|kh| {
            let ih = (r * g.sh + kh * g.dh) as i64 - g.ph as i64;
            (ih >= 0 && ih < g.h as i64).then_some((ih - (r0 * g.sh) as i64 + g.ph as i64, kh))
        })
        .collect()
}

/// Output rows in blocks of `rows` (the last one shorter), in increasing order; consecutive
/// blocks with the same taps (the rows whose windows are inside the input) form one pass.
pub(crate) fn passes(g: &DepthwiseGeometry, rows: usize) -> Vec<Pass> {
    let rows = rows.max(1);
    let mut v: Vec<Pass> = vec![];
    for first in (0..g.oh).step_by(rows) {
        let t: Vec<RowTaps> = (first..(first + rows).min(g.oh))
            .map(|r| taps(g, r, first))
            .collect();
        match v.last_mut() {
            Some(p) if p.rows == t && p.first + p.count * rows == first => p.count += 1,
            _ => v.push(Pass {
                first,
                rows: t,
                count: 1,
            }),
        }
    }
    v
}

/// The input rows of a block in order, with the (output row, kernel row) pairs they feed.
pub(crate) fn input_rows(rows: &[RowTaps]) -> Vec<(i64, Vec<(usize, usize)>)> {
    let mut irs: Vec<(i64, Vec<(usize, usize)>)> = vec![];
    for (j, t) in rows.iter().enumerate() {
        for &(ir, kh) in t {
            match irs.iter_mut().find(|(r, _)| *r == ir) {
                Some((_, u)) => u.push((j, kh)),
                None => irs.push((ir, vec![(j, kh)])),
            }
        }
    }
    irs.sort_by_key(|(r, _)| *r);
    irs
}

/// One depthwise kernel: geometry and epilogue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct DepthwiseKey {
    pub g: DepthwiseGeometry,
    /// Epilogue (no residual: see [`DepthwiseKey::supports`]; the activations HardSwish,
    /// SiLU and GELU only on AVX-512 targets: they run on the accumulators' zmm with zmm16-20
    /// as scratch, the GEMM kernels' code).
    pub epilogue: Vec<Epilogue>,
    /// A window of more than 9 taps on an AVX-512 target: taps 9-19 in ymm21-31, the others
    /// read as embedded broadcasts of the weight (EVEX-encoded ymm, AVX-512VL).
    pub wide: bool,
    /// The AVX-512 kernel, 16 outputs per zmm ([`super::depthwise_avx512`]): on AVX-512
    /// targets for rows of more than 8 outputs.
    pub zmm: bool,
}

/// Taps of a window whose weights all stay in registers without AVX-512 (ymm0-8).
const REGISTER_TAPS: usize = 9;
/// Most taps of a window on AVX-512 (7x7).
pub(crate) const MAX_TAPS_WIDE: usize = 49;

/// Where tap `q`'s weight is: a register (ymm0-8, then on AVX-512 ymm21-31: `evex`, the
/// instructions that name it are EVEX-encoded), else at byte `4 q` of the channel's weights
/// (rdx), read by an embedded broadcast (EVEX too).
#[derive(Clone, Copy)]
enum Weight {
    Register { r: AsmRegisterYmm, evex: bool },
    Memory(i32),
}

fn weight(q: usize) -> Weight {
    const HIGH: [AsmRegisterYmm; 11] = [
        ymm21, ymm22, ymm23, ymm24, ymm25, ymm26, ymm27, ymm28, ymm29, ymm30, ymm31,
    ];
    match q {
        q if q < REGISTER_TAPS => Weight::Register {
            r: ymm(q),
            evex: false,
        },
        q if q < REGISTER_TAPS + HIGH.len() => Weight::Register {
            r: HIGH[q - REGISTER_TAPS],
            evex: true,
        },
        q => Weight::Memory(4 * q as i32),
    }
}

/// `acc += w x`, `x` a register.
fn fma(
    a: &mut CodeAssembler,
    acc: AsmRegisterYmm,
    w: Weight,
    x: AsmRegisterYmm,
) -> Result<(), IcedError> {
    match w {
        Weight::Register { r, evex: false } => a.vfmadd231ps(acc, r, x),
        Weight::Register { r, evex: true } => a.evex().vfmadd231ps(acc, r, x),
        Weight::Memory(off) => a.evex().vfmadd231ps(acc, x, dword_bcst(rdx + off)),
    }
}

impl DepthwiseKey {
    /// The kernel of this geometry and epilogue on a target with (`avx512`) or without
    /// AVX-512, if one exists ([`DepthwiseKey::supports`]); wide when its window has more
    /// taps than ymm0-8 hold.
    pub fn new(g: DepthwiseGeometry, epilogue: Vec<Epilogue>, avx512: bool) -> Option<Self> {
        Self::supports(&g, &epilogue, avx512).then(|| DepthwiseKey {
            wide: g.kh * g.kw > REGISTER_TAPS,
            // (Rows of up to 8 outputs are one ymm: a zmm would leave half its lanes idle.)
            zmm: avx512 && g.ow > 8,
            g,
            epilogue,
        })
    }

    /// Whether a kernel exists for this geometry and epilogue.
    /// (`avx512`: the target has AVX-512, whose registers take windows of up to
    /// [`MAX_TAPS_WIDE`] taps.)
    pub fn supports(g: &DepthwiseGeometry, epilogue: &[Epilogue], avx512: bool) -> bool {
        (g.sw == 1 || g.sw == 2)
            && g.kh * g.kw <= if avx512 { MAX_TAPS_WIDE } else { REGISTER_TAPS }
            && g.kh * g.kw > 0
            && g.ow > 0
            && g.oh > 0
            && !epilogue.contains(&Epilogue::Residual)
            // Displacements inside a plane stay far inside i32.
            && g.h * g.w * 4 < 1 << 28
            && g.oh * g.ow * 4 < 1 << 28
            && g.sh <= 16
            && g.dw <= 64
    }

    pub fn symbol(&self) -> String {
        let g = &self.g;
        let mut s = format!(
            "optc_depthwise_avx2_{}x{}_{}x{}_k{}x{}_s{}x{}_d{}x{}_p{}x{}",
            g.h, g.w, g.oh, g.ow, g.kh, g.kw, g.sh, g.sw, g.dh, g.dw, g.ph, g.pw
        );
        s.push_str(&epilogue_symbol(&self.epilogue));
        if self.wide {
            s.push_str("_wide");
        }
        if self.zmm {
            s.push_str("_zmm");
        }
        s
    }
}

fn zmm_of(r: AsmRegisterYmm) -> AsmRegisterZmm {
    zmm((0..16).find(|&i| ymm(i) == r).unwrap_or(0))
}

fn xmm_of(r: AsmRegisterYmm) -> AsmRegisterXmm {
    let i = (0..16).find(|&i| ymm(i) == r).unwrap_or(0);
    [
        xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
        xmm14, xmm15,
    ][i]
}

/// Lane masks (bit `l` = lane `l` valid) and their 32-byte constants.
#[derive(Default)]
struct Masks {
    labels: HashMap<u8, CodeLabel>,
    order: Vec<u8>,
    consts: Vec<(CodeLabel, u32)>,
}

impl Masks {
    fn get(&mut self, a: &mut CodeAssembler, bits: u8) -> CodeLabel {
        if let Some(&l) = self.labels.get(&bits) {
            return l;
        }
        let l = a.create_label();
        self.labels.insert(bits, l);
        self.order.push(bits);
        l
    }
    fn constant(&mut self, a: &mut CodeAssembler, bits: u32) -> CodeLabel {
        let l = a.create_label();
        self.consts.push((l, bits));
        l
    }
}

/// First output column of group `gi`: `8 gi`, except that a last partial group overlaps the
/// previous one (all 8 lanes valid) when the row has at least 8 outputs.
fn start(g: &DepthwiseGeometry, gi: usize) -> i64 {
    if g.ow >= 8 {
        (8 * gi).min(g.ow - 8) as i64
    } else {
        0
    }
}

/// Valid lanes of 8 consecutive columns from `c0` in a row of `w`.
fn lanes(c0: i64, w: usize) -> u8 {
    (0..8)
        .filter(|&l| c0 + l >= 0 && c0 + l < w as i64)
        .fold(0u8, |m, l| m | 1 << l)
}

/// A column group to emit: `rows.len() x nv` vectors from group `gi` of a block whose base
/// input row is at `xb` (column 0) and first output row at `ob` (column 0); `edge`: loads
/// and stores masked to the row (one vector).
#[derive(Clone, Copy)]
pub(crate) struct GroupAt<'p> {
    pub rows: &'p [RowTaps],
    pub nv: usize,
    pub xb: AsmRegister64,
    pub ob: AsmRegister64,
    pub gi: usize,
    pub edge: bool,
}

/// A kernel's column groups of `lanes` outputs: `ng` of them, the inner ones (every load
/// inside the row, all lanes valid) `[gl, gr)`.
struct Columns {
    ng: usize,
    gl: usize,
    gr: usize,
}

impl Columns {
    fn new(g: &DepthwiseGeometry, lanes: usize) -> Columns {
        let ng = g.ow.div_ceil(lanes);
        let inner = |gi: usize| -> bool {
            let o0 = (lanes * gi) as i64;
            o0 + lanes as i64 <= g.ow as i64
                && (0..g.kw).all(|kw| {
                    let s = (kw * g.dw) as i64;
                    let (c0, n) = if g.sw == 1 {
                        (o0 - g.pw as i64 + s, lanes)
                    } else {
                        (2 * o0 - g.pw as i64 + (s & !1), 2 * lanes)
                    };
                    c0 >= 0 && c0 + n as i64 <= g.w as i64
                })
        };
        let gl = (0..ng).find(|&gi| inner(gi)).unwrap_or(ng);
        let gr = (gl..ng).find(|&gi| !inner(gi)).unwrap_or(ng);
        Columns { ng, gl, gr }
    }
}

/// Accumulators a column step may use: stride 1, stride 2 (whose deinterleaved input takes
/// registers per start).
fn accumulators(g: &DepthwiseGeometry) -> usize {
    if g.sw == 1 {
        6
    } else {
        4
    }
}

/// The column groups a kernel of `lanes` outputs per vector emits for `pass`, in order: the
/// border groups, then the inner ones in steps of several vectors (a group at rax / rbx
/// stands for the inner loop's body: group 0 of pointers moved along the row), then the
/// rest.
pub(crate) fn pass_groups<'p>(
    g: &DepthwiseGeometry,
    lanes: usize,
    pass: &'p Pass,
) -> Vec<GroupAt<'p>> {
    let cols = Columns::new(g, lanes);
    let rows = &pass.rows[..];
    let at = |nv, gi, edge, xb, ob| GroupAt {
        rows,
        nv,
        xb,
        ob,
        gi,
        edge,
    };
    let mut v: Vec<GroupAt> = (0..cols.gl)
        .chain(cols.gr..cols.ng)
        .map(|gi| at(1, gi, true, r10, r11))
        .collect();
    let n = cols.gr - cols.gl;
    let step = (accumulators(g) / rows.len()).max(1);
    match n / step {
        0 => {}
        1 => v.push(at(step, cols.gl, false, r10, r11)),
        _ => v.push(at(step, 0, false, rax, rbx)),
    }
    if !n.is_multiple_of(step) {
        v.push(at(n % step, cols.gl + n / step * step, false, r10, r11));
    }
    v
}

/// The body shared by the depthwise kernels of `lanes` outputs per vector (rdi input plane,
/// rsi output plane, rdx weights, rcx bias, r8 channels): per channel, `weights` (the
/// channel's weights into registers), then every row pass and its column groups (`group`
/// emits one; the inner groups in a loop over rax / rbx when they take several steps), then
/// the pointers moved to the next channel. Uses r9-r12, rax, rbx (rbx and r12 saved by the
/// caller).
pub(crate) fn emit_channels(
    a: &mut CodeAssembler,
    g: &DepthwiseGeometry,
    lanes: usize,
    weights: &mut dyn FnMut(&mut CodeAssembler) -> Result<(), IcedError>,
    group: &mut dyn FnMut(&mut CodeAssembler, GroupAt) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let kk = g.kh * g.kw;
    let in_row = (g.w * 4) as i64;
    let out_row = (g.ow * 4) as i64;
    let cols = Columns::new(g, lanes);
    let vector = (4 * lanes) as i32;
    let mut chan = a.create_label();
    let mut end = a.create_label();
    a.test(r8, r8)?;
    a.jz(end)?;
    a.set_label(&mut chan)?;
    weights(a)?;
    for pass in &passes(g, g.rows()) {
        let nr = pass.rows.len();
        let xo = (pass.first * g.sh) as i64 * in_row - g.ph as i64 * in_row;
        a.lea(r10, rdi + xo as i32)?;
        a.lea(r11, rsi + (pass.first as i64 * out_row) as i32)?;
        let mut rl = a.create_label();
        if pass.count > 1 {
            a.mov(r9, pass.count as i64)?;
            a.set_label(&mut rl)?;
        }
        for at in pass_groups(g, lanes, pass) {
            if at.xb != rax {
                group(a, at)?;
                continue;
            }
            let nv = at.nv;
            a.lea(rax, r10 + vector * (cols.gl * g.sw) as i32)?;
            a.lea(rbx, r11 + vector * cols.gl as i32)?;
            a.mov(r12, ((cols.gr - cols.gl) / nv) as i64)?;
            let mut col_loop = a.create_label();
            a.set_label(&mut col_loop)?;
            group(a, at)?;
            a.add(rax, vector * (nv * g.sw) as i32)?;
            a.add(rbx, vector * nv as i32)?;
            a.dec(r12)?;
            a.jnz(col_loop)?;
        }
        if pass.count > 1 {
            a.add(r10, (nr * g.sh) as i32 * in_row as i32)?;
            a.add(r11, nr as i32 * out_row as i32)?;
            a.dec(r9)?;
            a.jnz(rl)?;
        }
    }
    a.add(rdi, (g.h * g.w * 4) as i32)?;
    a.add(rsi, (g.oh * g.ow * 4) as i32)?;
    a.add(rdx, (kk * 4) as i32)?;
    a.add(rcx, 4)?;
    a.dec(r8)?;
    a.jnz(chan)?;
    a.set_label(&mut end)?;
    Ok(())
}

/// Assemble the kernel `key` (position independent, no relocations).
pub(crate) fn assemble(key: &DepthwiseKey) -> Result<Vec<u8>, IcedError> {
    if key.zmm {
        return super::depthwise_avx512::assemble(key);
    }
    let g = &key.g;
    assert!(
        DepthwiseKey::supports(g, &key.epilogue, key.wide),
        "unsupported depthwise kernel"
    );
    assert!(
        key.wide == (g.kh * g.kw > REGISTER_TAPS),
        "a wide depthwise kernel is one of more than 9 taps"
    );
    let mut a = CodeAssembler::new(64)?;
    let mut mk = Masks::default();
    let kk = g.kh * g.kw;
    a.push(rbx)?;
    a.push(r12)?;
    emit_channels(
        &mut a,
        g,
        8,
        &mut |a| {
            for q in 0..kk {
                match weight(q) {
                    Weight::Register { r, evex: false } => {
                        a.vbroadcastss(r, dword_ptr(rdx + 4 * q as i32))?
                    }
                    Weight::Register { r, evex: true } => {
                        a.evex().vbroadcastss(r, dword_ptr(rdx + 4 * q as i32))?
                    }
                    Weight::Memory(_) => {}
                }
            }
            Ok(())
        },
        &mut |a, at| {
            let (rows, nv, gi, edge) = (at.rows, at.nv, at.gi, at.edge);
            group(a, key, rows, nv, at.xb, at.ob, gi, edge, &mut mk)
        },
    )?;
    a.vzeroupper()?;
    a.pop(r12)?;
    a.pop(rbx)?;
    a.ret()?;
    for bits in mk.order.clone() {
        let mut l = mk.labels[&bits];
        a.set_label(&mut l)?;
        let v: Vec<u32> = (0..8)
            .map(|i| if bits >> i & 1 == 1 { u32::MAX } else { 0 })
            .collect();
        a.dd(&v)?;
    }
    for (mut l, bits) in mk.consts.clone() {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    a.assemble(0)
}

/// `rows.len() x nv` vectors of 8 outputs: output group `gi` (and the next `nv - 1`) of the
/// block whose base input row is at `xb` (column 0) and first output row at `ob` (column 0).
/// `edge`: loads and the store are masked to the row (one vector).
#[allow(clippy::too_many_arguments)]
fn group(
    a: &mut CodeAssembler,
    key: &DepthwiseKey,
    rows: &[RowTaps],
    nv: usize,
    xb: AsmRegister64,
    ob: AsmRegister64,
    gi: usize,
    edge: bool,
    mk: &mut Masks,
) -> Result<(), IcedError> {
    let g = &key.g;
    let nr = rows.len();
    let in_row = (g.w * 4) as i64;
    let acc = |j: usize, v: usize| ymm(9 + j * nv + v);
    let bias0 = matches!(
        key.epilogue.first(),
        Some(Epilogue::BiasRow | Epilogue::BiasCol)
    );
    for j in 0..nr {
        for v in 0..nv {
            if bias0 {
                a.vbroadcastss(acc(j, v), dword_ptr(rcx))?;
            } else {
                a.vxorps(acc(j, v), acc(j, v), acc(j, v))?;
            }
        }
    }
    let irs = input_rows(rows);
    let o0 = start(g, gi);
    for (ir, uses) in irs.iter().filter(|_| g.sw == 1) {
        for kw in 0..g.kw {
            let s = (kw * g.dw) as i64;
            for v in 0..nv {
                let ov = o0 + 8 * v as i64;
                let fma_all = |a: &mut CodeAssembler, x: AsmRegisterYmm| -> Result<(), IcedError> {
                    for &(j, kh) in uses {
                        fma(a, acc(j, v), weight(kh * g.kw + kw), x)?;
                    }
                    Ok(())
                };
                let c0 = ov - g.pw as i64 + s;
                let m = xb + (ir * in_row + 4 * c0) as i32;
                let bits = if edge { lanes(c0, g.w) } else { 0xff };
                if bits == 0 {
                    continue;
                }
                if bits != 0xff {
                    let l = mk.get(a, bits);
                    a.vmovups(ymm14, ymmword_ptr(l))?;
                    a.vmaskmovps(ymm15, ymm14, ymmword_ptr(m))?;
                    fma_all(a, ymm15)?;
                } else if let (1, Weight::Register { r, evex: false }) =
                    (uses.len(), weight(uses[0].1 * g.kw + kw))
                {
                    a.vfmadd231ps(acc(uses[0].0, v), r, ymmword_ptr(m))?;
                } else if let (1, Weight::Register { r, evex: true }) =
                    (uses.len(), weight(uses[0].1 * g.kw + kw))
                {
                    a.evex().vfmadd231ps(acc(uses[0].0, v), r, ymmword_ptr(m))?;
                } else {
                    a.vmovups(ymm15, ymmword_ptr(m))?;
                    fma_all(a, ymm15)?;
                }
            }
        }
    }
    // Stride 2: per input row and vector, the pair of vectors at each even start is loaded
    // once (ymm13, ymm14) for the taps that read it (e.g. kw 0 and 1).
    for (ir, uses) in irs.iter().filter(|_| g.sw == 2) {
        for v in 0..nv {
            let ov = o0 + 8 * v as i64;
            let mut loaded: Option<i64> = None;
            for kw in 0..g.kw {
                let s = (kw * g.dw) as i64;
                // Columns c0 + s % 2 + 2i of the 16 from the even start c0.
                let (start, imm) = if s % 2 == 0 { (s, 0x88) } else { (s - 1, 0xDD) };
                let c0 = 2 * ov - g.pw as i64 + start;
                let m = xb + (ir * in_row + 4 * c0) as i32;
                let (b0, b1) = if edge {
                    (lanes(c0, g.w), lanes(c0 + 8, g.w))
                } else {
                    (0xff, 0xff)
                };
                if b0 == 0 && b1 == 0 {
                    continue;
                }
                if loaded != Some(start) {
                    for (half, bits, dst) in [(0, b0, ymm13), (32, b1, ymm14)] {
                        if bits == 0 {
                            a.vxorps(dst, dst, dst)?;
                        } else if bits == 0xff {
                            a.vmovups(dst, ymmword_ptr(m + half))?;
                        } else {
                            let l = mk.get(a, bits);
                            a.vmovups(ymm15, ymmword_ptr(l))?;
                            a.vmaskmovps(dst, ymm15, ymmword_ptr(m + half))?;
                        }
                    }
                    loaded = Some(start);
                }
                a.vshufps(ymm15, ymm13, ymm14, imm)?;
                for &(j, kh) in uses {
                    fma(a, acc(j, v), weight(kh * g.kw + kw), ymm15)?;
                }
            }
        }
    }
    let all: Vec<AsmRegisterYmm> = (0..nr)
        .flat_map(|j| (0..nv).map(move |v| (j, v)))
        .map(|(j, v)| acc(j, v))
        .collect();
    if g.sw == 2 {
        for &r in &all {
            a.vpermpd(r, r, 0xD8)?;
        }
    }
    for epilogue in &key.epilogue[bias0 as usize..] {
        match *epilogue {
            Epilogue::BiasRow | Epilogue::BiasCol => {
                a.vbroadcastss(ymm15, dword_ptr(rcx))?;
                for &r in &all {
                    a.vaddps(r, r, ymm15)?;
                }
            }
            Epilogue::Residual => unreachable!("checked by DepthwiseKey::supports"),
            Epilogue::HardSwish | Epilogue::Silu | Epilogue::Gelu | Epilogue::GeluTanh => {
                // (AVX-512 targets only, see `DepthwiseKey::supports`: the GEMM kernels'
                // activation, zmm16-20 scratch.) Two 8-lane accumulators per zmm, the
                // second in the upper half: the activation (tens of instructions, a
                // division) runs once per 16 outputs, not per 8 with half the lanes idle.
                let act = Activation::new(a, *epilogue, &mut |a, b| mk.constant(a, b))
                    .expect("an activation step");
                let scratch = [zmm16, zmm17, zmm18, zmm19, zmm20];
                for pair in all.chunks(2) {
                    let z = zmm_of(pair[0]);
                    if let [_, high] = *pair {
                        a.vinsertf64x4(z, z, high, 1)?;
                        act.apply(a, z, scratch)?;
                        a.vextractf64x4(high, z, 1)?;
                    } else {
                        act.apply(a, z, scratch)?;
                    }
                }
            }
            _ => epilogue_pointwise(a, *epilogue, &all, ymm15, &mut |a, b| mk.constant(a, b))?,
        }
    }
    let out_row = (g.ow * 4) as i64;
    // Valid outputs of this vector: 8, or all of a row shorter than 8.
    let nvalid = (g.ow as i64 - o0).min(8) as usize;
    for j in 0..nr {
        for v in 0..nv {
            let d = (j as i64 * out_row + 4 * o0 + 32 * v as i64) as i32;
            let r = acc(j, v);
            if nvalid == 8 {
                a.vmovups(ymmword_ptr(ob + d), r)?;
                continue;
            }
            // Lanes [0, nvalid): the low half, then 2 and 1 lanes of the next half.
            let x = xmm_of(r);
            let (mut src, mut rem, mut d) = (x, nvalid, d);
            if rem >= 4 {
                a.vmovups(xmmword_ptr(ob + d), x)?;
                a.vextractf128(xmm15, r, 1)?;
                src = xmm15;
                rem -= 4;
                d += 16;
            }
            if rem >= 2 {
                a.vmovlps(qword_ptr(ob + d), src)?;
                if rem == 3 {
                    a.vextractps(dword_ptr(ob + d + 8), src, 2)?;
                }
            } else if rem == 1 {
                a.vmovss(dword_ptr(ob + d), src)?;
            }
        }
    }
    Ok(())
}
