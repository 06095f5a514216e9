//! The AVX-512 kernels' fake-quantize step ([`FakeQuantizer`]: the division by the scale done
//! as a product with its reciprocal where that rounds to the same integer) against the
//! reference's division, bit for bit: values on and next to every half-integer multiple of
//! the scale in range (where the product could round the other way), random values, zeros,
//! NaN, infinities, huge values; scales with and without a normal reciprocal. In the emulator
//! on every host, natively on hosts with AVX-512.

use super::emulator::Machine;
use super::epilogue::FakeQuantizer;
use super::int8_tests::{native, Rng};
use iced_x86::code_asm::*;
use iced_x86::Register;
use optc_ir::linear_quantization::fake_quantize_bounds;

/// `routine(src, dst, n)`: the step on `n` vectors of 16 floats.
fn routine(scale: f32, zero: f32, signed: bool) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut consts: Vec<(CodeLabel, u32)> = vec![];
    let mut konst = |a: &mut CodeAssembler, bits: u32| -> CodeLabel {
        let l = a.create_label();
        consts.push((l, bits));
        l
    };
    let mut fq = FakeQuantizer::new(&mut a, scale.to_bits(), zero.to_bits(), signed, &mut konst);
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.vmovups(zmm3, zmmword_ptr(rdi)).unwrap();
    fq.apply(&mut a, zmm3, zmm4, zmm5, k3).unwrap();
    a.vmovups(zmmword_ptr(rsi), zmm3).unwrap();
    a.add(rdi, 64).unwrap();
    a.add(rsi, 64).unwrap();
    a.dec(rdx).unwrap();
    a.jnz(top).unwrap();
    a.ret().unwrap();
    fq.finish(&mut a).unwrap();
    for (mut l, bits) in consts {
        a.set_label(&mut l).unwrap();
        a.dd(&[bits]).unwrap();
    }
    a.assemble(0).unwrap()
}

/// The reference: `ops/math.rs`'s fake_quantize.
fn reference(x: f32, scale: f32, zero: f32, signed: bool) -> u32 {
    let (lo, hi) = fake_quantize_bounds(signed);
    let q = (x / scale).round_ties_even() + zero;
    let q = if q > lo as f32 { q } else { lo as f32 };
    let q = if q < hi as f32 { q } else { hi as f32 };
    ((q - zero) * scale).to_bits()
}

fn values(scale: f32, rng: &mut Rng) -> Vec<f32> {
    let mut v = vec![
        0.0,
        -0.0,
        f32::NAN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        -f32::MAX,
        1e30,
        f32::MIN_POSITIVE,
    ];
    for k in -400i32..400 {
        let h = (k as f32 + 0.5) * scale;
        v.extend([
            h,
            f32::from_bits(h.to_bits() + 1),
            f32::from_bits(h.to_bits() - 1),
        ]);
        let m = k as f32 * scale;
        v.push(m);
    }
    for _ in 0..2000 {
        v.push(rng.int(-1 << 20, 1 << 20) as f32 * scale / 1024.0);
    }
    while v.len() % 16 != 0 {
        v.push(1.0);
    }
    v
}

fn emulate(code: &[u8], x: &[f32]) -> Vec<u32> {
    const CODE: u64 = 0x1000_0000;
    const SRC: u64 = 0x2000_0000;
    const DST: u64 = 0x3000_0000;
    let mut m = Machine::new();
    m.mem.push((CODE, code.to_vec()));
    m.mem
        .push((SRC, x.iter().flat_map(|v| v.to_le_bytes()).collect()));
    m.mem.push((DST, vec![0; 4 * x.len()]));
    m.set(Register::RDI, SRC);
    m.set(Register::RSI, DST);
    m.set(Register::RDX, (x.len() / 16) as u64);
    m.run(code, CODE, 10_000_000);
    (0..x.len()).map(|i| m.read32(DST + 4 * i as u64)).collect()
}

type Routine = extern "C" fn(*const f32, *mut f32, u64);

fn run_native(code: &[u8], x: &[f32]) -> Vec<u32> {
    let (_module, p) = native(code, 3);
    // SAFETY: `p` is the finalized code of `routine`, System-V with three integer/pointer
    // arguments; it reads and writes `n` vectors of 16 floats of `x` and `y`.
    let f: Routine = unsafe { std::mem::transmute::<*const u8, Routine>(p) };
    let mut y = vec![0f32; x.len()];
    f(x.as_ptr(), y.as_mut_ptr(), (x.len() / 16) as u64);
    y.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn fake_quantize_rounds_as_the_division() {
    let avx512 = std::is_x86_feature_detected!("avx512f");
    let mut rng = Rng(11);
    // Scales of QDQ models, a power of two, one whose reciprocal is not normal.
    for (scale, zero, signed) in [
        (0.05f32, 3.0f32, false),
        (0.02, -5.0, true),
        (0.007_843_138, 128.0, false),
        (0.125, 0.0, true),
        (3.1e-39, 0.0, false),
        (1.7e38, 10.0, false),
    ] {
        let code = routine(scale, zero, signed);
        let x = values(scale, &mut rng);
        let want: Vec<u32> = x
            .iter()
            .map(|&v| reference(v, scale, zero, signed))
            .collect();
        let mut runs = vec![("emulated", emulate(&code, &x))];
        if avx512 {
            runs.push(("native", run_native(&code, &x)));
        }
        for (how, got) in runs {
            for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    g == w,
                    "{how} scale {scale} zero {zero}: x = {:e} ({:#x}) gives {} want {}",
                    x[i],
                    x[i].to_bits(),
                    f32::from_bits(g),
                    f32::from_bits(w)
                );
            }
        }
    }
}
