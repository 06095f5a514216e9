//! The sparse kernel (AVX2/FMA, ymm): rows of a sparse constant matrix `W` times a dense
//! panel, for a weight whose zeros are skipped (see `crate::x64::sparse`).
//!
//! For each of `nrows` rows `r`: `y[r][0..cols] = sum over the stored entries (offset, w) of
//! row r of w * panel[offset .. offset + cols]` (a conv's output channel over a run of
//! pixels, or a MatMul's output feature over a run of rows of A), then the epilogue, then
//! the store. The panel holds `vectors` ymm per entry: vector `t` at byte `offset +
//! (t / 2) * panel_stride + (t % 2) * 32` (16-column panels, as the conv patch packing
//! writes them). The entries of a row are summed in order by `sets` accumulator sets
//! (entry `i` into set `i % sets`, the sets added at the end) so that `vectors * sets`
//! independent FMA chains hide the FMA latency.
//!
//! Stored entries: `(u32 byte offset, f32 value)` pairs; `starts[r]..starts[r + 1]` (u32
//! indices into the entries) are row r's.
//!
//! System-V ABI, no return value, rbx and r12 saved and restored:
//! `sparse(panel, out, starts, entries, nrows, ldo, bias)`:
//! - `out`: row 0 of the output; row r at `out + r * ldo` (direct store, `cols` contiguous
//!   floats), or, `transposed`, column `j` of row `r` at `out + j * key.ldo + 4 r` (a
//!   MatMul's output `Y[m][n]` from rows `n` over columns `m`),
//! - `bias`: one float per row (read only with a bias step).

use super::epilogue::{epilogue_pointwise, epilogue_symbol, Epilogue};
use super::registers::{xmm, ymm};
use iced_x86::code_asm::*;

/// One sparse kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SparseKey {
    /// ymm vectors per row (1, 2 or 4): 8, 16 or 32 columns; 0: `cols` (1..=7) scalar
    /// columns `panel_stride` bytes apart (a MatMul with fewer than 8 rows of A, read in
    /// place: column `j` is row `j` of A).
    pub vectors: usize,
    /// Valid columns (`8 (vectors / 2) < cols <= 8 vectors`); the rest is not stored.
    pub cols: usize,
    /// Bytes between the two 16-column panels of a 4-vector row.
    pub panel_stride: i32,
    /// Store column `j` of row `r` at `out + j * ldo + 4 r` (0: the direct store).
    pub transposed_ldo: i32,
    /// Bias (per row), Relu, Clip, Scale.
    pub epilogue: Vec<Epilogue>,
}

impl SparseKey {
    pub fn symbol(&self) -> String {
        let mut s = format!("optc_sparse_avx2_{}v_{}c", self.vectors, self.cols);
        if self.vectors > 2 || self.vectors == 0 {
            s.push_str(&format!("_ps{}", self.panel_stride));
        }
        if self.transposed_ldo != 0 {
            s.push_str(&format!("_t{}", self.transposed_ldo));
        }
        s.push_str(&epilogue_symbol(&self.epilogue));
        s
    }
    /// Accumulator sets: `vectors * sets` chains (at least 8: 2 FMA ports x 4 cycles).
    pub fn sets(&self) -> usize {
        match self.accumulators() {
            1 => 8,
            2 | 3 => 4,
            _ => 2,
        }
    }
    /// Accumulators per set: the vectors, or the scalar columns.
    fn accumulators(&self) -> usize {
        if self.vectors == 0 {
            self.cols
        } else {
            self.vectors
        }
    }
    /// Whether the kernel applies `epilogue`: per-row bias, Relu, Clip, Scale.
    pub fn supports(epilogue: &[Epilogue]) -> bool {
        epilogue.iter().all(|e| {
            matches!(
                e,
                Epilogue::BiasRow | Epilogue::Relu | Epilogue::Clip(..) | Epilogue::Scale(_)
            )
        })
    }
}

/// Parameters of every sparse kernel.
pub(crate) const SPARSE_PARAMS: usize = 7;

fn vector_disp(key: &SparseKey, t: usize) -> i32 {
    if key.vectors == 0 {
        return t as i32 * key.panel_stride;
    }
    (t / 2) as i32 * key.panel_stride + (t % 2) as i32 * 32
}

/// Register number of accumulator `t` of set `u`.
fn s_index(u: usize, t: usize, per_set: usize) -> usize {
    u * per_set + t
}

/// Assemble `key` (position independent, no relocations).
pub(crate) fn assemble(key: &SparseKey) -> Result<Vec<u8>, IcedError> {
    let (scalar, sets) = (key.vectors == 0, key.sets());
    let nv = key.accumulators();
    if scalar {
        assert!((1..8).contains(&key.cols), "1 to 7 scalar columns");
        assert!(key.transposed_ldo != 0, "scalar columns store transposed");
    } else {
        assert!(
            matches!(nv, 1 | 2 | 4),
            "sparse kernels have 1, 2 or 4 vectors"
        );
        assert!(
            key.cols > 8 * (nv / 2) && key.cols <= 8 * nv,
            "columns out of range"
        );
    }
    assert!(SparseKey::supports(&key.epilogue), "unsupported epilogue");
    let acc = |s: usize, t: usize| ymm(s_index(s, t, nv));
    let (wreg, tmp) = (ymm15, ymm14);
    let mut a = CodeAssembler::new(64)?;
    let mut consts: Vec<(CodeLabel, u32)> = vec![];
    let mut mask = a.create_label();
    a.push(rbx)?;
    a.push(r12)?;
    a.mov(r11, qword_ptr(rsp + 24))?;
    let bias_init = key.epilogue.first() == Some(&Epilogue::BiasRow);
    let mut row_loop = a.create_label();
    let mut rows_done = a.create_label();
    a.test(r8, r8)?;
    a.jz(rows_done)?;
    a.set_label(&mut row_loop)?;
    for s in 0..sets {
        for t in 0..nv {
            if s == 0 && bias_init {
                a.vbroadcastss(acc(0, t), dword_ptr(r11))?;
            } else {
                a.vxorps(acc(s, t), acc(s, t), acc(s, t))?;
            }
        }
    }
    // rax: the row's first entry; r10: its entry count; rbx: groups of `sets` entries.
    a.mov(eax, dword_ptr(rdx))?;
    a.mov(r10d, dword_ptr(rdx + 4))?;
    a.sub(r10, rax)?;
    a.lea(rax, rcx + rax * 8)?;
    a.mov(rbx, r10)?;
    a.shr(rbx, sets.trailing_zeros())?;
    a.and(r10, (sets - 1) as i32)?;
    let entry = |a: &mut CodeAssembler, u: usize| -> Result<(), IcedError> {
        a.mov(r12d, dword_ptr(rax + 8 * u as i32))?;
        a.vbroadcastss(wreg, dword_ptr(rax + (8 * u + 4) as i32))?;
        for t in 0..nv {
            if scalar {
                let m = dword_ptr(rdi + r12 + vector_disp(key, t));
                a.vfmadd231ss(xmm(s_index(u, t, nv)), xmm15, m)?;
            } else {
                let m = ymmword_ptr(rdi + r12 + vector_disp(key, t));
                a.vfmadd231ps(acc(u, t), wreg, m)?;
            }
        }
        Ok(())
    };
    let mut groups = a.create_label();
    let mut rest = a.create_label();
    let mut one = a.create_label();
    let mut summed = a.create_label();
    a.test(rbx, rbx)?;
    a.jz(rest)?;
    a.set_label(&mut groups)?;
    for u in 0..sets {
        entry(&mut a, u)?;
    }
    a.add(rax, (8 * sets) as i32)?;
    a.dec(rbx)?;
    a.jnz(groups)?;
    a.set_label(&mut rest)?;
    a.test(r10, r10)?;
    a.jz(summed)?;
    a.set_label(&mut one)?;
    entry(&mut a, 0)?;
    a.add(rax, 8)?;
    a.dec(r10)?;
    a.jnz(one)?;
    a.set_label(&mut summed)?;
    // Sets added pairwise: (s0 + s1) + (s2 + s3), ...
    let mut width = 1;
    while width < sets {
        for s in (0..sets).step_by(2 * width) {
            for t in 0..nv {
                a.vaddps(acc(s, t), acc(s, t), acc(s + width, t))?;
            }
        }
        width *= 2;
    }
    let regs: Vec<AsmRegisterYmm> = (0..nv).map(|t| acc(0, t)).collect();
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    for e in &key.epilogue[usize::from(bias_init)..] {
        match e {
            Epilogue::BiasRow => {
                a.vbroadcastss(tmp, dword_ptr(r11))?;
                for &r in &regs {
                    a.vaddps(r, r, tmp)?;
                }
            }
            _ => epilogue_pointwise(&mut a, *e, &regs, tmp, &mut konst)?,
        }
    }
    if key.transposed_ldo == 0 {
        for (t, &r) in regs.iter().enumerate() {
            let valid = key.cols.saturating_sub(8 * t).min(8);
            if valid == 8 {
                a.vmovups(ymmword_ptr(rsi + 32 * t as i32), r)?;
            } else if valid > 0 {
                a.vmovups(tmp, ymmword_ptr(mask))?;
                a.vmaskmovps(ymmword_ptr(rsi + 32 * t as i32), tmp, r)?;
            }
        }
        a.add(rsi, r9)?;
    } else if scalar {
        for t in 0..nv {
            let m = dword_ptr(rsi + t as i32 * key.transposed_ldo);
            a.vmovss(m, xmm(t))?;
        }
        a.add(rsi, 4)?;
    } else {
        let ldo = key.transposed_ldo;
        for t in 0..nv {
            for half in 0..2 {
                let lanes: Vec<usize> = (0..4)
                    .map(|l| 8 * t + 4 * half + l)
                    .filter(|&j| j < key.cols)
                    .collect();
                if lanes.is_empty() {
                    continue;
                }
                let x = if half == 0 {
                    xmm(t)
                } else {
                    a.vextractf128(xmm14, ymm(t), 1)?;
                    xmm14
                };
                for (l, &j) in lanes.iter().enumerate() {
                    let m = dword_ptr(rsi + j as i32 * ldo);
                    if l == 0 {
                        a.vmovss(m, x)?;
                    } else {
                        a.vextractps(m, x, l as i32)?;
                    }
                }
            }
        }
        a.add(rsi, 4)?;
    }
    a.add(r11, 4)?;
    a.add(rdx, 4)?;
    a.dec(r8)?;
    a.jnz(row_loop)?;
    a.set_label(&mut rows_done)?;
    a.vzeroupper()?;
    a.pop(r12)?;
    a.pop(rbx)?;
    a.ret()?;
    a.set_label(&mut mask)?;
    let valid = key.cols % 8;
    let tab: Vec<u32> = (0..8)
        .map(|l| if l < valid { u32::MAX } else { 0 })
        .collect();
    a.dd(&tab)?;
    for (mut l, bits) in consts {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    a.assemble(0)
}
