//! AVX2/FMA and AVX-512F SGEMM microkernels assembled with `iced-x86` and put into the Cranelift
//! module with `Module::define_function_bytes` (Cranelift's x86-64 backend lowers only 128-bit
//! vectors).
//!
//! A microkernel computes one `mr x 16` tile (`mr <= 6`):
//! `C[r][j] (+)= sum_k A[r][k] * B[k][j]`, then applies an epilogue chain and stores the tile.
//! [`Isa::Avx2`] keeps 2 ymm accumulators per row; [`Isa::Avx512`] one zmm per row (see
//! [`assemble_avx512`]). Both ISAs share the signature and the packed A/B layouts, so the
//! driver (`lower::fast`) is the same for both; only [`UkrKey::isa`] differs.
//!
//! System-V ABI, no return value, no callee-saved register touched:
//! `ukr(a, b, c, kc, lda_bytes, ldc_bytes, nr, bias, res)`
//! - `a`: row 0 of the A block (rows `lda_bytes` apart, k contiguous),
//! - `b`: a packed B panel: `kc` rows of 16 floats (64 bytes each), zero-padded columns,
//! - `c`: top-left of the output tile (rows `ldc_bytes` apart),
//! - `kc`: depth (any value, 0 included),
//! - `nr`: valid columns (1..=16) for `partial` kernels (masked loads/stores), else ignored,
//! - `bias`: per-row bias (`bias[r]`) or per-column bias (`bias[j]`) of this tile,
//! - `res`: a residual tile with the same layout as `c`.

use iced_x86::code_asm::*;

/// Rows of a microkernel tile.
pub(crate) const MR: usize = 6;
/// Columns of a microkernel tile (= packed B panel width).
pub(crate) const NR: usize = 16;

/// One epilogue step, applied to the whole tile in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Ep {
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
}

/// Instruction set of a microkernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Isa {
    /// AVX2 + FMA3, 256-bit ymm.
    Avx2,
    /// AVX-512F, 512-bit zmm with opmask registers and embedded broadcasts.
    Avx512,
}

/// Which microkernel: ISA, rows, masked columns, accumulate into C, epilogue.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct UkrKey {
    pub isa: Isa,
    pub mr: usize,
    /// A is packed: `kc` groups of `mr` floats (k-major), `lda_bytes` ignored.
    pub pa: bool,
    /// Only the panel's first 8 columns (AVX2): one ymm accumulator per row. For a last panel
    /// of at most 8 valid columns (e.g. 49 = 3 x 16 + 1), half the work of a full tile.
    pub half: bool,
    pub partial: bool,
    pub acc: bool,
    /// Stored transposed (AVX2 only, see [`assemble_tn_store`]): for small N with the roles
    /// swapped, the tile's rows are pixels, its 16 columns output channels; channel `j` goes
    /// to `c + j ldc_bytes`, pixel `r` to `+ 4 r`. With `acc`, the sum so far is read in row
    /// layout (rows 64 bytes apart) from the `nr` argument (a pointer here). A residual (same
    /// layout as C) only as the last epilogue step. Not with `half`, `partial` or `BiasRow`.
    pub tn: bool,
    pub ep: Vec<Ep>,
}

/// The epilogue's part of a kernel symbol.
pub(crate) fn ep_symbol(ep: &[Ep]) -> String {
    let mut s = String::new();
    for e in ep {
        match e {
            Ep::BiasRow => s.push_str("_br"),
            Ep::BiasCol => s.push_str("_bc"),
            Ep::Relu => s.push_str("_relu"),
            Ep::Clip(a, b) => s.push_str(&format!("_clip{a:08x}{b:08x}")),
            Ep::Residual => s.push_str("_res"),
            Ep::Scale(a) => s.push_str(&format!("_s{a:08x}")),
        }
    }
    s
}

/// A pointwise epilogue step (Relu, Clip, Scale) on `regs`, with `tmp` as scratch and
/// `konst` placing f32 constants after the code (the depthwise and direct-conv kernels; a
/// bias or residual step is the kernel's own).
pub(crate) fn ep_pointwise(
    a: &mut CodeAssembler,
    ep: Ep,
    regs: &[AsmRegisterYmm],
    tmp: AsmRegisterYmm,
    konst: &mut dyn FnMut(&mut CodeAssembler, u32) -> CodeLabel,
) -> Result<(), IcedError> {
    match ep {
        Ep::Relu => {
            a.vxorps(tmp, tmp, tmp)?;
            for &r in regs {
                a.vmaxps(r, r, tmp)?;
            }
        }
        Ep::Clip(lo, hi) => {
            let llo = konst(a, lo);
            let lhi = konst(a, hi);
            a.vbroadcastss(tmp, dword_ptr(llo))?;
            for &r in regs {
                a.vmaxps(r, r, tmp)?;
            }
            a.vbroadcastss(tmp, dword_ptr(lhi))?;
            for &r in regs {
                a.vminps(r, r, tmp)?;
            }
        }
        Ep::Scale(sc) => {
            let l = konst(a, sc);
            a.vbroadcastss(tmp, dword_ptr(l))?;
            for &r in regs {
                a.vmulps(r, r, tmp)?;
            }
        }
        Ep::BiasRow | Ep::BiasCol | Ep::Residual => {
            unreachable!("not a pointwise epilogue step")
        }
    }
    Ok(())
}

impl UkrKey {
    pub fn symbol(&self) -> String {
        let mut s = format!(
            "optc_ukr_{}_{}x16{}{}{}{}",
            match self.isa {
                Isa::Avx2 => "avx2",
                Isa::Avx512 => "avx512",
            },
            self.mr,
            if self.pa { "_pa" } else { "" },
            if self.half { "_h" } else { "" },
            if self.partial { "_p" } else { "" },
            if self.acc { "_acc" } else { "" }
        );
        if self.tn {
            s.push_str("_tn");
        }
        s.push_str(&ep_symbol(&self.ep));
        s
    }
}

pub(crate) fn ymm(i: usize) -> AsmRegisterYmm {
    [
        ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13,
        ymm14, ymm15,
    ][i]
}

/// Address of row `r` (0..6) given bases for rows 0-2 and 3-5, the row stride register, and
/// a displacement.
fn row(
    r: usize,
    b012: AsmRegister64,
    b345: AsmRegister64,
    st: AsmRegister64,
    d: i32,
) -> AsmMemoryOperand {
    let base = if r < 3 { b012 } else { b345 };
    match r % 3 {
        0 => base + d,
        1 => base + st + d,
        _ => base + st * 2 + d,
    }
}

/// The k loop shared by the kernels: `kc` (rcx) steps, 4 at a time then one at a time;
/// `step(a, u)` emits step `u` of a group (B at `rsi + 64 u`, A at `rdi + ka u` or, unpacked,
/// the rows from `rdi`/`r10` at `4 u`). Advances rsi, rdi (and r10 for unpacked A).
fn k_loop(
    a: &mut CodeAssembler,
    pa: bool,
    ka: i32,
    step: &mut dyn FnMut(&mut CodeAssembler, i32) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let mut l4 = a.create_label();
    let mut rem = a.create_label();
    let mut l1 = a.create_label();
    let mut done = a.create_label();
    a.mov(rax, rcx)?;
    a.shr(rax, 2)?;
    a.jz(rem)?;
    a.set_label(&mut l4)?;
    for u in 0..4 {
        step(a, u)?;
    }
    a.add(rsi, 256)?;
    a.add(rdi, 4 * ka)?;
    if !pa {
        a.add(r10, 16)?;
    }
    a.dec(rax)?;
    a.jnz(l4)?;
    a.set_label(&mut rem)?;
    a.and(rcx, 3)?;
    a.jz(done)?;
    a.set_label(&mut l1)?;
    step(a, 0)?;
    a.add(rsi, 64)?;
    a.add(rdi, ka)?;
    if !pa {
        a.add(r10, 4)?;
    }
    a.dec(rcx)?;
    a.jnz(l1)?;
    a.set_label(&mut done)?;
    Ok(())
}

/// A routine assembled with `iced-x86` and defined into the module: a GEMM microkernel, a
/// depthwise kernel ([`dw`]) or a direct-conv kernel ([`dc`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Routine {
    Gemm(UkrKey),
    Dw(dw::DwKey),
    Dc(dc::DcKey),
}

impl Routine {
    pub fn symbol(&self) -> String {
        match self {
            Routine::Gemm(k) => k.symbol(),
            Routine::Dw(k) => k.symbol(),
            Routine::Dc(k) => k.symbol(),
        }
    }
    /// Integer (pointer / count) parameters.
    pub fn nparams(&self) -> usize {
        match self {
            Routine::Gemm(_) => 9,
            Routine::Dw(_) | Routine::Dc(_) => 5,
        }
    }
    pub fn assemble(&self) -> Result<Vec<u8>, IcedError> {
        match self {
            Routine::Gemm(k) => assemble(k),
            Routine::Dw(k) => dw::assemble(k),
            Routine::Dc(k) => dc::assemble(k),
        }
    }
}

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

/// Assemble the microkernel `key` (position independent, no relocations).
pub(crate) fn assemble(key: &UkrKey) -> Result<Vec<u8>, IcedError> {
    match key.isa {
        Isa::Avx2 => assemble_avx2(key),
        Isa::Avx512 => assemble_avx512(key),
    }
}

fn assemble_avx2(key: &UkrKey) -> Result<Vec<u8>, IcedError> {
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
    let bias_init = !key.acc
        && match key.ep.first() {
            Some(Ep::BiasRow) => true,
            Some(Ep::BiasCol) => !key.partial,
            _ => false,
        };
    if bias_init {
        a.mov(r11, qword_ptr(rsp + 16))?;
        if key.ep[0] == Ep::BiasRow {
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
    let tn = key.tn;
    if tn {
        assert!(
            !key.half && !key.partial,
            "transposed kernels are full tiles"
        );
        let n = key.ep.len();
        assert!(
            key.ep
                .iter()
                .enumerate()
                .all(|(i, e)| *e != Ep::BiasRow && (*e != Ep::Residual || i + 1 == n)),
            "transposed kernels take no row bias, and a residual last only"
        );
    }
    let pa = key.pa;
    if !pa {
        a.lea(r10, rdi + r8 * 2)?;
        a.add(r10, r8)?;
    }
    let ka = if pa { 4 * mr as i32 } else { 4 };
    let mut step = |a: &mut CodeAssembler, u: i32| -> Result<(), IcedError> {
        let acc = &set[u as usize % nsets];
        a.vmovups(ymm12, ymmword_ptr(rsi + 64 * u))?;
        if nh == 2 {
            a.vmovups(ymm13, ymmword_ptr(rsi + (64 * u + 32)))?;
        }
        for r in 0..mr {
            let t = ymm(14 + (r & 1));
            let m = if pa {
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
    k_loop(&mut a, pa, ka, &mut step)?;
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
    if key.acc && tn {
        // The partial sums of the earlier K blocks: a row-layout tile (64-byte rows) at the
        // `nr` argument.
        a.mov(rdi, qword_ptr(rsp + 8))?;
        for r in 0..mr {
            for h in 0..2 {
                let m = ymmword_ptr(rdi + (64 * r + 32 * h) as i32);
                a.vaddps(ymm(2 * r + h), ymm(2 * r + h), m)?;
            }
        }
    } else if key.acc {
        add_tile(&mut a, rdx, r10)?;
    }
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    for ep in &key.ep[usize::from(bias_init)..] {
        match *ep {
            Ep::BiasRow => {
                for r in 0..mr {
                    a.vbroadcastss(ymm14, dword_ptr(r11 + 4 * r as i32))?;
                    a.vaddps(ymm(2 * r), ymm(2 * r), ymm14)?;
                    if nh == 2 {
                        a.vaddps(ymm(2 * r + 1), ymm(2 * r + 1), ymm14)?;
                    }
                }
            }
            Ep::BiasCol => {
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
            Ep::Relu => {
                a.vxorps(ymm14, ymm14, ymm14)?;
                for &r in &accs {
                    a.vmaxps(ymm(r), ymm(r), ymm14)?;
                }
            }
            Ep::Clip(lo, hi) => {
                let llo = konst(&mut a, lo);
                let lhi = konst(&mut a, hi);
                a.vbroadcastss(ymm14, dword_ptr(llo))?;
                a.vbroadcastss(ymm15, dword_ptr(lhi))?;
                for &r in &accs {
                    a.vmaxps(ymm(r), ymm(r), ymm14)?;
                    a.vminps(ymm(r), ymm(r), ymm15)?;
                }
            }
            // (Transposed: added in the store.)
            Ep::Residual if tn => {}
            Ep::Residual => add_tile(&mut a, rax, rcx)?,
            Ep::Scale(s) => {
                let l = konst(&mut a, s);
                a.vbroadcastss(ymm14, dword_ptr(l))?;
                for &r in &accs {
                    a.vmulps(ymm(r), ymm(r), ymm14)?;
                }
            }
        }
    }
    if tn {
        assemble_tn_store(&mut a, mr, key.ep.contains(&Ep::Residual))?;
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

fn xmm(i: usize) -> AsmRegisterXmm {
    [
        xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
        xmm14, xmm15,
    ][i]
}

/// The transposed store of a `tn` tile: rows `r < mr` (pixels) of accumulators
/// `ymm(2 r + h)` (channels `8 h ..`) go to channel `j` at `rdx + j * r9`, float `r`.
/// Rows are taken 4 at a time (a 4x4 transpose per 128-bit lane: xmm stores, the high lane by
/// `vextractf128` to memory), then 2 (unpack: 64-bit stores) and 1 (`vextractps`).
/// Channel `j` is addressed from base `j / 3` (rdx, r10, rax, rcx, rdi, rsi: `rdx + 3 (j / 3)
/// r9`) plus `(j % 3) r9`. With `res` (its tile at rax on entry), every piece adds the same
/// piece of the residual (at `piece + r11`, r11 = res - c, through `lea r8`) before its store.
/// Clobbers the accumulators and ymm12-15.
fn assemble_tn_store(a: &mut CodeAssembler, mr: usize, res: bool) -> Result<(), IcedError> {
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

fn zmm(i: usize) -> AsmRegisterZmm {
    [
        zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13,
        zmm14, zmm15,
    ][i]
}

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
/// panel width for this ISA; the driver in `lower::fast` is shared with AVX2 and keeps
/// `MR = 6`, `NR = 16`.
fn assemble_avx512(key: &UkrKey) -> Result<Vec<u8>, IcedError> {
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
    let pa = key.pa;
    if !pa {
        a.lea(r10, rdi + r8 * 2)?;
        a.add(r10, r8)?;
    }
    let ka = if pa { 4 * mr as i32 } else { 4 };
    // k step `u` of an unrolled group: B row into zmm12+u, accumulators of parity u.
    let mut step = |a: &mut CodeAssembler, u: i32| -> Result<(), IcedError> {
        let bu = zmm(12 + u as usize);
        let set = 6 * (u as usize & 1);
        a.vmovups(bu, zmmword_ptr(rsi + 64 * u))?;
        for r in 0..mr {
            let m = if pa {
                rdi + (4 * r as i32 + ka * u)
            } else {
                row(r, rdi, r10, r8, 4 * u)
            };
            a.vfmadd231ps(zmm(set + r), bu, dword_bcst(m))?;
        }
        Ok(())
    };
    k_loop(&mut a, pa, ka, &mut step)?;
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
    if key.acc {
        add_tile(&mut a, rdx, r10)?;
    }
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    for ep in &key.ep {
        match *ep {
            Ep::BiasRow => {
                for r in 0..mr {
                    a.vaddps(zmm(r), zmm(r), dword_bcst(r11 + 4 * r as i32))?;
                }
            }
            Ep::BiasCol => {
                load(&mut a, r11 + 0)?;
                for r in 0..mr {
                    a.vaddps(zmm(r), zmm(r), zmm12)?;
                }
            }
            Ep::Relu => {
                a.vpxord(zmm12, zmm12, zmm12)?;
                for r in 0..mr {
                    a.vmaxps(zmm(r), zmm(r), zmm12)?;
                }
            }
            Ep::Clip(lo, hi) => {
                let llo = konst(&mut a, lo);
                let lhi = konst(&mut a, hi);
                a.vbroadcastss(zmm12, dword_ptr(llo))?;
                a.vbroadcastss(zmm13, dword_ptr(lhi))?;
                for r in 0..mr {
                    a.vmaxps(zmm(r), zmm(r), zmm12)?;
                    a.vminps(zmm(r), zmm(r), zmm13)?;
                }
            }
            Ep::Residual => add_tile(&mut a, rax, rcx)?,
            Ep::Scale(s) => {
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

/// Assemble a register-only FMA loop for measuring peak throughput:
/// `fn(iters: u64)` runs `iters` iterations of `acc` independent `vfmadd231ps ymm` (8 lanes,
/// 2 flops each), i.e. `iters * acc * 16` flops.
pub fn fma_peak_loop(acc: usize) -> Result<Vec<u8>, IcedError> {
    let acc = acc.clamp(1, 14);
    let mut a = CodeAssembler::new(64)?;
    for r in 0..acc {
        a.vxorps(ymm(r), ymm(r), ymm(r))?;
    }
    a.vxorps(ymm14, ymm14, ymm14)?;
    a.vxorps(ymm15, ymm15, ymm15)?;
    let mut l = a.create_label();
    let mut out = a.create_label();
    a.test(rdi, rdi)?;
    a.jz(out)?;
    a.set_label(&mut l)?;
    for r in 0..acc {
        a.vfmadd231ps(ymm(r), ymm14, ymm15)?;
    }
    a.dec(rdi)?;
    a.jnz(l)?;
    a.set_label(&mut out)?;
    a.vzeroupper()?;
    a.ret()?;
    a.assemble(0)
}

/// Measure this core's 256-bit FMA peak: run [`fma_peak_loop`] (10 independent accumulators,
/// so FMA latency is hidden) through the JIT for about `seconds`, best of 5; GFLOP/s.
pub fn fma_peak_gflops(seconds: f64) -> Result<f64, crate::CodegenError> {
    use cranelift_codegen::ir::{types, AbiParam};
    use cranelift_jit::{JITBuilder, JITModule};
    use cranelift_module::{Linkage, Module};
    let err = |e: String| crate::CodegenError::new(e);
    const ACC: usize = 10;
    let bytes = fma_peak_loop(ACC).map_err(|e| err(e.to_string()))?;
    let isa = crate::Target::host()?.jit_isa()?;
    let mut module = JITModule::new(JITBuilder::with_isa(
        isa,
        cranelift_module::default_libcall_names(),
    ));
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(types::I64));
    let id = module
        .declare_function("optc_fma_peak", Linkage::Local, &sig)
        .map_err(|e| err(e.to_string()))?;
    module
        .define_function_bytes(id, 16, &bytes, &[])
        .map_err(|e| err(e.to_string()))?;
    module
        .finalize_definitions()
        .map_err(|e| err(e.to_string()))?;
    let p = module.get_finalized_function(id);
    // SAFETY: `p` is the finalized `fma_peak_loop` routine: System-V `fn(u64)`, touches only
    // vector registers (and ends with vzeroupper).
    let f: extern "C" fn(u64) = unsafe { std::mem::transmute::<*const u8, extern "C" fn(u64)>(p) };
    // Calibrate, then best of 5 runs of ~seconds/5.
    let mut iters = 1u64 << 16;
    loop {
        let t = std::time::Instant::now();
        f(iters);
        if t.elapsed().as_secs_f64() > 0.02 {
            break;
        }
        iters *= 2;
    }
    let t = std::time::Instant::now();
    f(iters);
    let per = t.elapsed().as_secs_f64() / iters as f64;
    let n = ((seconds / 5.0 / per) as u64).max(1);
    let mut best = 0f64;
    for _ in 0..5 {
        let t = std::time::Instant::now();
        f(n);
        let s = t.elapsed().as_secs_f64();
        best = best.max((n * ACC as u64 * 16) as f64 / s / 1e9);
    }
    // SAFETY: `f` is not called after this point.
    unsafe { module.free_memory() };
    Ok(best)
}

pub(crate) mod dc;
pub(crate) mod dw;
#[cfg(test)]
mod emu;
#[cfg(test)]
mod tests;
