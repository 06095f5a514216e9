//! The zero-padded input copy of a conv on AVX-512 ([`crate::x64::padded_copy`] keeps the
//! Cranelift copy in 16-byte vectors for the other targets): each interior row of a plane
//! becomes a padded row of `wp` floats, the input at column `pw` and zeros around it, or,
//! for the stride-2 direct-conv kernel, the padded row deinterleaved (its even columns, then
//! its odd ones).
//!
//! A padded row is written 16 floats at a time, its moves worked out when the routine is
//! assembled (the row is unrolled): a plain row's vector is one load of the input at the
//! same place (masked at the row's ends, so the pad lanes load as zeros) and one store; a
//! deinterleaved row's vector is a `vpermt2ps` of the 32 inputs its lanes come from (two
//! moves where the vector holds the end of the even columns and the start of the odd
//! ones). Loads are masked to the input row, so nothing is read outside the input.
//!
//! System-V ABI, no return value, no callee-saved register touched. Two forms:
//! - rows ([`PaddedRowsKey::planes`] false): `padded_rows(src, dst, rows, row)` copies
//!   `rows` consecutive interior rows, the first of them interior row `row` (`< h`) of its
//!   plane: `src` is that input row, `dst` its padded row; past a plane's last interior
//!   row `dst` skips the pad rows (`hp - h` of them: zeroed elsewhere),
//! - planes (true): `padded_rows(src, dst, planes, _)` writes `planes` whole padded planes,
//!   pad rows included, from `planes` consecutive input planes.

use super::registers::zmm;
use iced_x86::code_asm::*;

/// Integer (pointer / count) parameters.
pub(crate) const PADDED_ROWS_PARAMS: usize = 4;

/// Padded rows longer than this keep the Cranelift copy (a row's moves are unrolled).
pub(crate) const MAX_ROW_FLOATS: usize = 1024;

/// The geometry of one padded copy (of every plane of a conv's input).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PaddedRowsKey {
    /// Input row length, padded row length, left pad columns.
    pub w: usize,
    pub wp: usize,
    pub pw: usize,
    /// Input rows of a plane, padded rows, top pad rows.
    pub h: usize,
    pub hp: usize,
    pub ph: usize,
    /// Each padded row's even columns, then its odd ones (the stride-2 direct conv's).
    pub deinterleaved: bool,
    /// Whole planes (pad rows too) rather than runs of interior rows.
    pub planes: bool,
}

impl PaddedRowsKey {
    pub fn symbol(&self) -> String {
        format!(
            "optc_padded_rows_w{}_wp{}_pw{}_h{}_hp{}_ph{}{}{}",
            self.w,
            self.wp,
            self.pw,
            self.h,
            self.hp,
            self.ph,
            if self.deinterleaved {
                "_deinterleaved"
            } else {
                ""
            },
            if self.planes { "_planes" } else { "" },
        )
    }

    /// The input column at position `p` of a padded row (None: a pad).
    fn source(&self, p: usize) -> Option<usize> {
        let j = if self.deinterleaved {
            let half = self.wp.div_ceil(2);
            if p < half {
                2 * p
            } else {
                2 * (p - half) + 1
            }
        } else {
            p
        };
        (j >= self.pw && j < self.pw + self.w).then(|| j - self.pw)
    }

    /// The moves of one padded row (offsets from its start).
    fn row_moves(&self) -> Vec<Move> {
        let mut moves = vec![];
        for d in (0..self.wp).step_by(16) {
            let n = 16.min(self.wp - d);
            let store = lanes(0..n);
            let sources: Vec<(usize, usize)> = (0..n)
                .filter_map(|l| self.source(d + l).map(|j| (l, j)))
                .collect();
            if sources.is_empty() {
                moves.push(Move::zeros(d, store));
                continue;
            }
            if !self.deinterleaved {
                // Lane `l` is input column `d + l - pw`: one load at that offset.
                let s = d as isize - self.pw as isize;
                moves.push(Move {
                    dst: d,
                    store,
                    src: s,
                    load: [self.in_row(s), 0],
                    index: None,
                    take: 0,
                });
                continue;
            }
            // The even columns' lanes and the odd ones' (each at most 31 inputs apart).
            let half = self.wp.div_ceil(2);
            let (even, odd): (Vec<_>, Vec<_>) = sources.into_iter().partition(|s| d + s.0 < half);
            let mut first = true;
            for group in [even, odd] {
                if group.is_empty() {
                    continue;
                }
                let s = group.iter().map(|g| g.1).min().expect("a lane");
                let mut index = [0u32; 16];
                for &(l, j) in &group {
                    assert!(j - s < 32, "a vector's inputs span more than 32 floats");
                    index[l] = (j - s) as u32;
                }
                let s = s as isize;
                moves.push(Move {
                    dst: d,
                    store: if first { store } else { lanes_of(&group) },
                    src: s,
                    load: [self.in_row(s), self.in_row(s + 16)],
                    index: Some(index),
                    take: lanes_of(&group),
                });
                first = false;
            }
        }
        moves
    }

    /// The lanes of a load of 16 floats from input column `s` that are in the row.
    fn in_row(&self, s: isize) -> u16 {
        lanes((0..16).filter(|&l| {
            let j = s + l as isize;
            j >= 0 && (j as usize) < self.w
        }))
    }
}

/// The 16-bit mask of `lanes`.
fn lanes(lanes: impl IntoIterator<Item = usize>) -> u16 {
    lanes.into_iter().fold(0, |m, l| m | (1 << l))
}

fn lanes_of(group: &[(usize, usize)]) -> u16 {
    lanes(group.iter().map(|g| g.0))
}

/// One vector of a padded row: loaded from input column `src` (the lanes of `load[0]`, and
/// of `load[1]` 16 columns on, zeros elsewhere; no lane: a vector of zeros), permuted by
/// `index` into the lanes of `take` when there is one, stored at float `dst` of the padded
/// row (the lanes of `store`).
#[derive(Clone, Copy, Debug)]
struct Move {
    dst: usize,
    store: u16,
    src: isize,
    load: [u16; 2],
    index: Option<[u32; 16]>,
    take: u16,
}

impl Move {
    fn zeros(dst: usize, store: u16) -> Move {
        Move {
            dst,
            store,
            src: 0,
            load: [0, 0],
            index: None,
            take: 0,
        }
    }
}

/// Zeros over `len` floats from float `at` (pad rows).
fn zero_moves(at: usize, len: usize) -> Vec<Move> {
    (0..len)
        .step_by(16)
        .map(|d| Move::zeros(at + d, lanes(0..16.min(len - d))))
        .collect()
}

/// The mask registers: masks used by the moves in k1-k7 for the whole routine when there
/// are at most seven; otherwise loaded before each use (k1, k2 the loads', k3 the
/// permutation's, k4 the store's).
struct Masks {
    held: Vec<u16>,
}

const K: [AsmRegisterK; 7] = [k1, k2, k3, k4, k5, k6, k7];

impl Masks {
    fn new(a: &mut CodeAssembler, moves: &[Move]) -> Result<Masks, IcedError> {
        let mut all: Vec<u16> = vec![];
        for m in moves {
            for mask in [m.load[0], m.load[1], m.take, m.store] {
                if mask != 0 && mask != u16::MAX && !all.contains(&mask) {
                    all.push(mask);
                }
            }
        }
        if all.len() > K.len() {
            return Ok(Masks { held: vec![] });
        }
        for (i, &mask) in all.iter().enumerate() {
            a.mov(eax, mask as u32)?;
            a.kmovw(K[i], eax)?;
        }
        Ok(Masks { held: all })
    }

    /// The register (1-7: k1-k7) holding `mask`, loaded into `role`'s register if it is
    /// not held.
    fn get(&self, a: &mut CodeAssembler, mask: u16, role: usize) -> Result<usize, IcedError> {
        if let Some(i) = self.held.iter().position(|&m| m == mask) {
            return Ok(i + 1);
        }
        assert!(
            self.held.is_empty(),
            "mask {mask:#x} not among the held ones"
        );
        a.mov(eax, mask as u32)?;
        a.kmovw(K[role], eax)?;
        Ok(role + 1)
    }
}

/// `v{k<i>}{z}`.
fn zero_masked(v: AsmRegisterZmm, i: usize) -> AsmRegisterZmm {
    let v = match i {
        1 => v.k1(),
        2 => v.k2(),
        3 => v.k3(),
        4 => v.k4(),
        5 => v.k5(),
        6 => v.k6(),
        _ => v.k7(),
    };
    v.z()
}

/// `m{k<i>}`.
fn masked(m: AsmMemoryOperand, i: usize) -> AsmMemoryOperand {
    match i {
        1 => m.k1(),
        2 => m.k2(),
        3 => m.k3(),
        4 => m.k4(),
        5 => m.k5(),
        6 => m.k6(),
        _ => m.k7(),
    }
}

/// The moves at `rdi` (the input row) and `rsi` (the padded row); zmm31 holds zeros.
fn emit_moves(
    a: &mut CodeAssembler,
    moves: &[Move],
    masks: &Masks,
    indexes: &[CodeLabel],
) -> Result<(), IcedError> {
    let mut next_index = 0;
    for m in moves {
        let value = if m.load == [0, 0] {
            zmm31
        } else {
            for (i, &mask) in m.load.iter().enumerate() {
                if i == 1 && m.index.is_none() {
                    break;
                }
                let v = zmm(i);
                let at = zmmword_ptr(rdi + (4 * (m.src + 16 * i as isize)) as i32);
                match mask {
                    0 => a.vpxord(v, v, v)?,
                    u16::MAX => a.vmovups(v, at)?,
                    _ => {
                        let k = masks.get(a, mask, i)?;
                        a.vmovups(zero_masked(v, k), at)?
                    }
                }
            }
            if m.index.is_some() {
                a.vmovups(zmm2, zmmword_ptr(indexes[next_index]))?;
                next_index += 1;
                if m.take == u16::MAX {
                    a.vpermt2ps(zmm0, zmm2, zmm1)?;
                } else {
                    let k = masks.get(a, m.take, 2)?;
                    a.vpermt2ps(zero_masked(zmm0, k), zmm2, zmm1)?;
                }
            }
            zmm0
        };
        let at = zmmword_ptr(rsi + (4 * m.dst) as i32);
        if m.store == u16::MAX {
            a.vmovups(at, value)?;
        } else {
            let k = masks.get(a, m.store, 3)?;
            a.vmovups(masked(at, k), value)?;
        }
    }
    Ok(())
}

/// Assemble the copy of `key` (position independent, no relocations).
pub(crate) fn assemble(key: &PaddedRowsKey) -> Result<Vec<u8>, IcedError> {
    assert!(
        key.w > 0
            && key.h > 0
            && key.pw + key.w <= key.wp
            && key.ph + key.h <= key.hp
            && key.wp <= MAX_ROW_FLOATS,
        "unsupported padded copy {key:?}"
    );
    let mut a = CodeAssembler::new(64)?;
    let row = key.row_moves();
    let top = zero_moves(0, key.ph * key.wp);
    let bottom = zero_moves(0, (key.hp - key.ph - key.h) * key.wp);
    let all: Vec<Move> = if key.planes {
        [&row[..], &top, &bottom].concat()
    } else {
        row.clone()
    };
    let masks = Masks::new(&mut a, &all)?;
    let indexes: Vec<CodeLabel> = row
        .iter()
        .filter(|m| m.index.is_some())
        .map(|_| a.create_label())
        .collect();
    let mut done = a.create_label();
    a.vpxord(zmm31, zmm31, zmm31)?;
    a.test(rdx, rdx)?;
    a.jz(done)?;
    let (row_in, row_out) = ((4 * key.w) as i32, (4 * key.wp) as i32);
    if key.planes {
        let mut plane = a.create_label();
        let mut next_row = a.create_label();
        a.set_label(&mut plane)?;
        emit_moves(&mut a, &top, &masks, &[])?;
        if key.ph > 0 {
            a.add(rsi, row_out * key.ph as i32)?;
        }
        a.mov(r8, key.h as i64)?;
        a.set_label(&mut next_row)?;
        emit_moves(&mut a, &row, &masks, &indexes)?;
        a.add(rdi, row_in)?;
        a.add(rsi, row_out)?;
        a.dec(r8)?;
        a.jnz(next_row)?;
        emit_moves(&mut a, &bottom, &masks, &[])?;
        let below = key.hp - key.ph - key.h;
        if below > 0 {
            a.add(rsi, row_out * below as i32)?;
        }
        a.dec(rdx)?;
        a.jnz(plane)?;
    } else {
        let mut next_row = a.create_label();
        let mut same_plane = a.create_label();
        a.set_label(&mut next_row)?;
        emit_moves(&mut a, &row, &masks, &indexes)?;
        a.add(rdi, row_in)?;
        a.add(rsi, row_out)?;
        a.inc(rcx)?;
        a.cmp(rcx, key.h as i32)?;
        a.jne(same_plane)?;
        a.xor(ecx, ecx)?;
        if key.hp > key.h {
            a.add(rsi, row_out * (key.hp - key.h) as i32)?;
        }
        a.set_label(&mut same_plane)?;
        a.dec(rdx)?;
        a.jnz(next_row)?;
    }
    a.set_label(&mut done)?;
    a.vzeroupper()?;
    a.ret()?;
    for (mut label, m) in indexes.into_iter().zip(row.iter().filter_map(|m| m.index)) {
        a.set_label(&mut label)?;
        a.dd(&m)?;
    }
    a.assemble(0)
}

#[cfg(test)]
mod tests {
    use super::super::int8_tests::native;
    use super::*;

    /// The padded planes of `planes` input planes of `key`'s geometry (the definition).
    /// Written forward from the padded columns (the layout `padded_copy` documents: input
    /// column `j` at padded column `pw + j`; deinterleaved, padded column `c` at `c / 2`
    /// when even, `ceil(wp / 2) + c / 2` when odd), not from the routine's
    /// [`PaddedRowsKey::source`].
    fn reference(key: &PaddedRowsKey, x: &[f32], planes: usize) -> Vec<f32> {
        let mut out = vec![0f32; planes * key.hp * key.wp];
        let position = |c: usize| match key.deinterleaved {
            false => c,
            true if c.is_multiple_of(2) => c / 2,
            true => key.wp.div_ceil(2) + c / 2,
        };
        for p in 0..planes {
            for r in 0..key.h {
                let row = &mut out[(p * key.hp + key.ph + r) * key.wp..][..key.wp];
                for j in 0..key.w {
                    row[position(key.pw + j)] = x[(p * key.h + r) * key.w + j];
                }
            }
        }
        out
    }

    /// Every geometry form (plain and deinterleaved, rows and planes; rows shorter and
    /// longer than a vector, pads on either side or none, odd padded widths, masks held in
    /// registers and loaded at each use) against the
    /// definition: the rows form from every start row and count, the planes form for 0-3
    /// planes; nothing written outside the padded rows asked for (the pad rows of the rows
    /// form, past the end).
    #[test]
    fn padded_rows_match_the_definition() {
        if !std::is_x86_feature_detected!("avx512f") {
            return;
        }
        let geometries = [
            // (w, pw, right pad, h, ph, bottom pad)
            (7, 1, 1, 7, 1, 1),
            (14, 1, 1, 14, 1, 1),
            (56, 1, 1, 5, 1, 1),
            (112, 1, 1, 3, 1, 1),
            (16, 0, 0, 3, 0, 0),
            (33, 2, 3, 4, 2, 0),
            (5, 3, 0, 2, 0, 3),
            (100, 0, 1, 3, 0, 1),
            (113, 1, 0, 2, 1, 0),
            // Deinterleaved: more than seven masks (loaded at each use).
            (31, 3, 3, 4, 2, 0),
        ];
        let poison = f32::from_bits(0x7fc0_dead);
        for (w, pw, right, h, ph, below) in geometries {
            for deinterleaved in [false, true] {
                for planes in [false, true] {
                    let key = PaddedRowsKey {
                        w,
                        wp: pw + w + right,
                        pw,
                        h,
                        hp: ph + h + below,
                        ph,
                        deinterleaved,
                        planes,
                    };
                    let bytes = assemble(&key).unwrap();
                    let (_module, f) = native(&bytes, PADDED_ROWS_PARAMS);
                    type Copy = extern "C" fn(*const f32, *mut f32, u64, u64);
                    // SAFETY: the finalized code of the routine (4 integer arguments, no
                    // return value); the buffers below cover what each call reads and
                    // writes.
                    let f: Copy = unsafe { std::mem::transmute::<*const u8, Copy>(f) };
                    let nplanes = 3;
                    let x: Vec<f32> = (0..nplanes * h * w).map(|i| i as f32 + 0.5).collect();
                    let want = reference(&key, &x, nplanes);
                    let plane = key.hp * key.wp;
                    if planes {
                        for count in 0..=nplanes {
                            let mut out = vec![poison; nplanes * plane + 16];
                            f(x.as_ptr(), out.as_mut_ptr(), count as u64, 0);
                            let n = count * plane;
                            assert_eq!(&out[..n], &want[..n], "{key:?} planes={count}");
                            assert!(out[n..].iter().all(|v| v.to_bits() == poison.to_bits()));
                        }
                        continue;
                    }
                    for first in 0..nplanes * h {
                        for count in 0..=(nplanes * h - first) {
                            let mut out = vec![poison; nplanes * plane + 16];
                            let (p, r) = (first / h, first % h);
                            let dst = (p * key.hp + key.ph + r) * key.wp;
                            f(
                                x[first * w..].as_ptr(),
                                out[dst..].as_mut_ptr(),
                                count as u64,
                                r as u64,
                            );
                            for (i, (got, want)) in out.iter().zip(&want).enumerate() {
                                let (pi, ri) = (i / plane, i % plane / key.wp);
                                // The interior row of index `pi h + ri - ph`, if it is one.
                                let asked = (key.ph..key.ph + h)
                                    .contains(&ri)
                                    .then(|| pi * h + ri - key.ph)
                                    .is_some_and(|index| (first..first + count).contains(&index));
                                if asked {
                                    assert_eq!(
                                        got, want,
                                        "{key:?} first={first} count={count} at {i}"
                                    );
                                } else {
                                    assert_eq!(
                                        got.to_bits(),
                                        poison.to_bits(),
                                        "{key:?} first={first} count={count}: wrote {i}"
                                    );
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
