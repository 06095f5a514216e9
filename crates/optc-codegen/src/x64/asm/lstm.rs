//! An LSTM step's gates (`Op::LstmCell`) on AVX-512, 16 hidden units a zmm: the gates'
//! sigmoids and tanhs, the new cell state and hidden state, in registers. The functions
//! are the generic lowering's (`ops::transcendental`: `Emitter::sigmoid` and
//! `Emitter::tanh`) step by step: the clamp of `exp`'s argument, Cody-Waite reduction, the
//! degree-7 polynomial, the scale built in the exponent bits, infinity past the overflow
//! bound; tanh's odd polynomial below 0.625 and `1 - 2 / (exp(2|x|) + 1)` with the sign of
//! `x` above; the state updates as separate multiplications and an addition.
//!
//! System-V ABI, no return value: `lstm_cell(gates, c, h_out, c_out, rows)`, row `r` of the
//! gates at `gates + 16 H r` (input, output, forget and cell gates `4 H` bytes apart), of the
//! states at `+ 4 H r`; `c` is not read when the key says there is none (zero).

use super::registers::zmm;
use crate::ops::transcendental::{
    EXP_HI, EXP_LN2_HI, EXP_LN2_LO, EXP_LO, EXP_MAGIC, EXP_OVERFLOW, EXP_POLY, TANH_POLY,
    TANH_SMALL,
};
use iced_x86::code_asm::*;
use std::f32::consts::LOG2_E;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct LstmCellKey {
    /// Hidden units, at least 1.
    pub hidden: usize,
    /// Whether there is a previous cell state (else it is zero).
    pub cell: bool,
}

impl LstmCellKey {
    pub fn symbol(&self) -> String {
        format!(
            "optc_lstm_cell_avx512_{}{}",
            self.hidden,
            if self.cell { "_c" } else { "" }
        )
    }
}

pub(crate) const LSTM_CELL_PARAMS: usize = 5;

// Registers broadcast once: 1, 2, tanh's bound.
const ONE: AsmRegisterZmm = zmm29;
const TWO: AsmRegisterZmm = zmm30;
const SMALL: AsmRegisterZmm = zmm31;

/// The constants, one label per distinct value.
struct Constants {
    labels: Vec<(u32, CodeLabel)>,
}

impl Constants {
    fn label(&mut self, a: &mut CodeAssembler, bits: u32) -> CodeLabel {
        if let Some(&(_, l)) = self.labels.iter().find(|(b, _)| *b == bits) {
            return l;
        }
        let l = a.create_label();
        self.labels.push((bits, l));
        l
    }
    fn f(&mut self, a: &mut CodeAssembler, v: f32) -> AsmMemoryOperand {
        dword_bcst(self.label(a, v.to_bits()))
    }
    fn bits(&mut self, a: &mut CodeAssembler, b: u32) -> AsmMemoryOperand {
        dword_bcst(self.label(a, b))
    }
}

/// `p = poly(x)` by Horner's rule (`coefficients` highest degree first), as `Emitter::poly`.
fn horner(
    a: &mut CodeAssembler,
    k: &mut Constants,
    p: AsmRegisterZmm,
    x: AsmRegisterZmm,
    coefficients: &[f32],
) -> Result<(), IcedError> {
    let first = k.label(a, coefficients[0].to_bits());
    a.vbroadcastss(p, dword_ptr(first))?;
    for &c in &coefficients[1..] {
        let c = k.f(a, c);
        a.vfmadd213ps(p, x, c)?;
    }
    Ok(())
}

/// `dst = exp(x)` (`x` kept), as `Emitter::exp`; `s` scratch (not `x` or `dst`).
fn exp(
    a: &mut CodeAssembler,
    k: &mut Constants,
    x: AsmRegisterZmm,
    dst: AsmRegisterZmm,
    s: [AsmRegisterZmm; 3],
) -> Result<(), IcedError> {
    let [t, n, p] = s;
    // dst = xc = clamp(x); t = xc log2(e) + magic; n = t - magic.
    let (hi, lo) = (k.f(a, EXP_HI), k.f(a, EXP_LO));
    a.vminps(dst, x, hi)?;
    a.vmaxps(dst, dst, lo)?;
    let magic = k.label(a, EXP_MAGIC.to_bits());
    a.vbroadcastss(t, dword_ptr(magic))?;
    let log2e = k.f(a, LOG2_E);
    a.vfmadd231ps(t, dst, log2e)?;
    let magic = k.f(a, EXP_MAGIC);
    a.vsubps(n, t, magic)?;
    // dst = r = xc - n ln 2 (two steps).
    let (c1, c2) = (k.f(a, EXP_LN2_HI), k.f(a, EXP_LN2_LO));
    a.vfmadd231ps(dst, n, c1)?;
    a.vfmadd231ps(dst, n, c2)?;
    // p = poly(r); n = r^2; dst = y = p r^2 + (r + 1).
    horner(a, k, p, dst, &EXP_POLY)?;
    a.vmulps(n, dst, dst)?;
    a.vaddps(dst, dst, ONE)?;
    a.vfmadd231ps(dst, p, n)?;
    // 2^(n-1) from t's bits, then y 2^(n-1) 2; infinite past the overflow bound.
    let bias = k.bits(a, (0x4B40_0000 - 126) as u32);
    a.vpsubd(t, t, bias)?;
    a.vpslld(t, t, 23)?;
    a.vmulps(dst, dst, t)?;
    a.vaddps(dst, dst, dst)?;
    let big = k.f(a, EXP_OVERFLOW);
    a.vcmpps(k2, x, big, 0x1e)?;
    let inf = k.label(a, f32::INFINITY.to_bits());
    a.vbroadcastss(dst.k2(), dword_ptr(inf))
}

/// `x = sigmoid(x)`, as `Emitter::sigmoid`: `1 / (1 + exp(-x))`; `s` scratch.
fn sigmoid(
    a: &mut CodeAssembler,
    k: &mut Constants,
    x: AsmRegisterZmm,
    s: [AsmRegisterZmm; 4],
) -> Result<(), IcedError> {
    let minus = k.f(a, -1.0);
    a.vmulps(s[0], x, minus)?;
    exp(a, k, s[0], x, [s[1], s[2], s[3]])?;
    a.vaddps(x, ONE, x)?;
    a.vdivps(x, ONE, x)
}

/// `x = tanh(x)`, as `Emitter::tanh`; `s` scratch.
fn tanh(
    a: &mut CodeAssembler,
    k: &mut Constants,
    x: AsmRegisterZmm,
    s: [AsmRegisterZmm; 7],
) -> Result<(), IcedError> {
    let [magnitude, z, p, e, t0, t1, t2] = s;
    let abs = k.bits(a, 0x7fff_ffff);
    a.vpandd(magnitude, x, abs)?;
    // Small |x|: p = poly(z), z = x^2; p = p z; p = p x + x.
    a.vmulps(z, x, x)?;
    horner(a, k, p, z, &TANH_POLY)?;
    a.vmulps(p, p, z)?;
    a.vfmadd213ps(p, x, x)?;
    // Large |x|: z = 2|x|; e = exp(z); 1 - 2 / (e + 1) with the sign of x.
    a.vaddps(z, magnitude, magnitude)?;
    exp(a, k, z, e, [t0, t1, t2])?;
    a.vaddps(e, e, ONE)?;
    a.vdivps(e, TWO, e)?;
    a.vsubps(e, ONE, e)?;
    let sign = k.bits(a, 0x8000_0000);
    a.vpandd(x, x, sign)?;
    a.vpord(x, e, x)?;
    // Where |x| < 0.625 (0.625 > |x|): the polynomial.
    a.vcmpps(k3, SMALL, magnitude, 0x1e)?;
    a.vmovups(x.k3(), p)
}

pub(crate) fn assemble(key: &LstmCellKey) -> Result<Vec<u8>, IcedError> {
    let h = key.hidden;
    assert!(h > 0, "an LSTM cell without hidden units");
    let mut a = CodeAssembler::new(64)?;
    let mut k = Constants { labels: vec![] };
    for (r, v) in [(ONE, 1.0f32), (TWO, 2.0), (SMALL, TANH_SMALL)] {
        let l = k.label(&mut a, v.to_bits());
        a.vbroadcastss(r, dword_ptr(l))?;
    }
    let (full, rest) = (h / 16, h % 16);
    if rest > 0 {
        a.mov(eax, (1u32 << rest) - 1)?;
        a.kmovw(k1, eax)?;
    }
    let gate = |g: usize, off: i32| zmmword_ptr(rdi + (4 * h * g) as i32 + off);
    let scratch = [zmm(8), zmm(9), zmm(10), zmm(11), zmm(12), zmm(13), zmm(14)];
    // 16 units (the valid ones when `masked`) at byte `off` of the row.
    let mut units = |a: &mut CodeAssembler, off: i32, masked: bool| -> Result<(), IcedError> {
        let (i, o, f, g, c) = (zmm(0), zmm(1), zmm(2), zmm(3), zmm(4));
        let load = |a: &mut CodeAssembler, r: AsmRegisterZmm, m: AsmMemoryOperand| {
            if masked {
                a.vmovups(r.k1().z(), m)
            } else {
                a.vmovups(r, m)
            }
        };
        let store = |a: &mut CodeAssembler, m: AsmMemoryOperand, r: AsmRegisterZmm| {
            if masked {
                a.vmovups(m.k1(), r)
            } else {
                a.vmovups(m, r)
            }
        };
        load(a, i, gate(0, off))?;
        load(a, o, gate(1, off))?;
        load(a, g, gate(3, off))?;
        let s4 = [scratch[0], scratch[1], scratch[2], scratch[3]];
        sigmoid(a, &mut k, i, s4)?;
        sigmoid(a, &mut k, o, s4)?;
        tanh(a, &mut k, g, scratch)?;
        // c = sigmoid(f) c_old + i g, or i g.
        a.vmulps(g, i, g)?;
        if key.cell {
            load(a, f, gate(2, off))?;
            sigmoid(a, &mut k, f, s4)?;
            load(a, c, zmmword_ptr(rsi + off))?;
            a.vmulps(c, f, c)?;
            a.vaddps(c, c, g)?;
        } else {
            a.vmovups(c, g)?;
        }
        store(a, zmmword_ptr(rcx + off), c)?;
        // h = o tanh(c).
        tanh(a, &mut k, c, scratch)?;
        a.vmulps(o, o, c)?;
        store(a, zmmword_ptr(rdx + off), o)
    };
    // rdi, rsi, rdx, rcx: cursors over the row's gates, cell state and outputs (advanced a
    // vector at a time, then to the next row); rax counts the row's whole vectors, r8 the
    // rows.
    let mut row = a.create_label();
    a.set_label(&mut row)?;
    if full > 0 {
        a.mov(eax, full as u32)?;
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        units(&mut a, 0, false)?;
        for r in [rdi, rsi, rdx, rcx] {
            a.add(r, 64)?;
        }
        a.dec(rax)?;
        a.jnz(top)?;
    }
    if rest > 0 {
        units(&mut a, 0, true)?;
    }
    let done = 64 * full as i32;
    a.add(rdi, (16 * h) as i32 - done)?;
    for r in [rsi, rdx, rcx] {
        a.add(r, (4 * h) as i32 - done)?;
    }
    a.dec(r8)?;
    a.jnz(row)?;
    a.vzeroupper()?;
    a.ret()?;
    for (bits, mut l) in k.labels {
        a.set_label(&mut l)?;
        a.dd(&[bits])?;
    }
    a.assemble(0)
}

#[cfg(test)]
mod tests {
    //! The routine in the emulator and, on hosts with AVX-512, natively, bit for bit against
    //! a scalar reference of the same operations (whose accuracy the recurrent-layer tests
    //! check against tract and the spec's formulas).
    use super::*;
    use crate::x64::asm::emulator::Machine;
    use crate::x64::asm::int8_tests::native;
    use crate::x64::asm::tests::{exp, tanh};

    fn sigmoid(x: f32) -> f32 {
        // The routine multiplies by -1 (the same bits as negating, NaN aside).
        1.0 / (1.0 + exp(-x))
    }

    /// `(h, c)` of every row.
    fn reference(key: &LstmCellKey, gates: &[f32], c: &[f32], rows: usize) -> Vec<f32> {
        let h = key.hidden;
        let (mut hidden_states, mut cells) = (vec![], vec![]);
        for r in 0..rows {
            let g = |k: usize, j: usize| gates[r * 4 * h + k * h + j];
            for j in 0..h {
                let i = sigmoid(g(0, j));
                let o = sigmoid(g(1, j));
                let new = i * tanh(g(3, j));
                let cell = if key.cell {
                    sigmoid(g(2, j)) * c[r * h + j] + new
                } else {
                    new
                };
                hidden_states.push(o * tanh(cell));
                cells.push(cell);
            }
        }
        hidden_states.extend(cells);
        hidden_states
    }

    /// Values over both tanh regions, exp's clamps and overflow, and zeros.
    fn values(n: usize, seed: &mut u64) -> Vec<f32> {
        const SPECIAL: [f32; 10] = [0.0, -0.0, 0.6, -0.625, 0.7, -20.0, 45.0, -90.0, 100.0, 1e-3];
        (0..n)
            .map(|k| {
                *seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if k % 7 == 3 {
                    SPECIAL[(*seed >> 40) as usize % SPECIAL.len()]
                } else {
                    ((*seed >> 33) % 24_000) as f32 / 2000.0 - 6.0
                }
            })
            .collect()
    }

    fn bytes_of(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    type Cell = extern "C" fn(*const f32, *const f32, *mut f32, *mut f32, u64);

    #[test]
    fn lstm_cell_matches_the_reference_bit_for_bit() {
        const CODE: u64 = 0x1000_0000;
        const GATES: u64 = 0x2000_0000;
        const C: u64 = 0x3000_0000;
        const H_OUT: u64 = 0x4000_0000;
        const C_OUT: u64 = 0x5000_0000;
        let native_too = std::is_x86_feature_detected!("avx512f");
        let mut seed = 7;
        for hidden in [1, 5, 16, 21, 32, 40, 128] {
            for cell in [true, false] {
                for rows in [1, 3] {
                    let key = LstmCellKey { hidden, cell };
                    let code = assemble(&key).unwrap();
                    let gates = values(rows * 4 * hidden, &mut seed);
                    let c = values(rows * hidden, &mut seed);
                    let want = reference(&key, &gates, &c, rows);
                    let n = rows * hidden;
                    let mut m = Machine::new();
                    m.mem.push((CODE, code.clone()));
                    m.mem.push((GATES, bytes_of(&gates)));
                    if cell {
                        m.mem.push((C, bytes_of(&c)));
                    }
                    m.mem.push((H_OUT, vec![0; 4 * n]));
                    m.mem.push((C_OUT, vec![0; 4 * n]));
                    m.call(
                        &code,
                        CODE,
                        &[GATES, C, H_OUT, C_OUT, rows as u64],
                        1_000_000,
                    );
                    let mut got: Vec<f32> = (0..n)
                        .map(|o| f32::from_bits(m.read32(H_OUT + 4 * o as u64)))
                        .collect();
                    for o in 0..n {
                        got.push(f32::from_bits(m.read32(C_OUT + 4 * o as u64)));
                    }
                    let what = format!("{} rows {rows}", key.symbol());
                    check(&got, &want, &what);
                    if native_too {
                        let (_module, p) = native(&code, LSTM_CELL_PARAMS);
                        // SAFETY: `p` is the finalized code of an LSTM cell routine, whose
                        // signature is `Cell`; `_module` keeps it mapped during the call, and
                        // the buffers cover the rows it reads and writes.
                        let f: Cell = unsafe { std::mem::transmute::<*const u8, Cell>(p) };
                        let (mut hidden_states, mut cells) = (vec![0f32; n], vec![0f32; n]);
                        f(
                            gates.as_ptr(),
                            c.as_ptr(),
                            hidden_states.as_mut_ptr(),
                            cells.as_mut_ptr(),
                            rows as u64,
                        );
                        hidden_states.extend(cells);
                        check(&hidden_states, &want, &format!("{what} natively"));
                    }
                }
            }
        }
    }

    fn check(got: &[f32], want: &[f32], what: &str) {
        for (o, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                g.to_bits() == w.to_bits(),
                "{what}: element {o} got {g} want {w}"
            );
        }
    }
}
