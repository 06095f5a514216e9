//! The pixel-rows VNNI conv kernels (`int8_pixels.rs`) against a scalar reference of the
//! tile: every tile shape, both row steps, every epilogue; in the emulator on every host and
//! natively on hosts with AVX-512 VNNI. The output's other pixels and channels stay untouched.

use super::emulator::Machine;
use super::epilogue::Epilogue;
use super::int8::{assemble, Contraction, Dequantize, Int8Key, QuantizeStore, Scheme};
use super::int8_pixels::{panels_for, ColumnSkips, PIXEL_ROWS};
use super::int8_tests::{
    dequantized, le, native, quantized_bytes, step_lists, Kernel, Rng, STORE_PARAMS,
};

/// One tile's operands: the planes (`a`), the K groups' offsets, the weight panels (`b`, `lda`
/// apart), the channel tables, the output and residual (`ldc` bytes per channel).
struct PixelTile {
    a: Vec<u8>,
    koff: Vec<i64>,
    b: Vec<u8>,
    lda: usize,
    c: Vec<u8>,
    ldc: usize,
    offset: Vec<i32>,
    scale: Vec<f32>,
    bias: Vec<f32>,
    res: Vec<f32>,
    want: Vec<u32>,
}

fn pixel_tile(key: &Int8Key, groups: usize, seed: u64) -> PixelTile {
    let Contraction::ConvPixels {
        panels,
        row_step,
        skips,
    } = key.contraction
    else {
        unreachable!()
    };
    let mut q = Rng(seed);
    let (mr, channels) = (key.mr, 16 * panels);
    let a: Vec<u8> = (0..512).map(|_| q.int(0, 255) as u8).collect();
    // Each group's dword anywhere the tile's rows stay inside `a`.
    let span = row_step * (mr - 1) + 4;
    let koff: Vec<i64> = (0..groups)
        .map(|_| 4 * q.int(0, ((a.len() - span) / 4) as i64))
        .collect();
    let lda = 64 * groups + 64;
    let w: Vec<Vec<[i64; 4]>> = (0..channels)
        .map(|_| {
            (0..groups)
                .map(|_| [0; 4].map(|_| q.int(-128, 127)))
                .collect()
        })
        .collect();
    let mut b = vec![0u8; lda * panels];
    for (ch, wc) in w.iter().enumerate() {
        for (g, wg) in wc.iter().enumerate() {
            for (j, &x) in wg.iter().enumerate() {
                b[(ch / 16) * lda + 64 * g + 4 * (ch % 16) + j] = x as i8 as u8;
            }
        }
    }
    let ldc = 4 * (mr + 5);
    let cells = channels * ldc / 4;
    let c0: Vec<u32> = (0..cells).map(|_| q.next() as u32).collect();
    let res: Vec<f32> = (0..cells).map(|_| q.f32()).collect();
    let offset: Vec<i32> = (0..channels)
        .map(|_| q.int(-50_000, 50_000) as i32)
        .collect();
    let scale: Vec<f32> = (0..channels)
        .map(|_| q.int(1, 300) as f32 / 65536.0)
        .collect();
    let bias: Vec<f32> = (0..channels).map(|_| q.f32()).collect();
    let d = key.last.as_ref().unwrap();
    let mut want = c0.clone();
    for ch in 0..channels {
        for r in 0..mr {
            let mut acc = offset[ch];
            for (g, &o) in koff.iter().enumerate() {
                // (A skipped pair: kernel column `g % taps`, the row at an edge.)
                if skips.taps > 0 {
                    let (lead, trail) = skips.rows[g % skips.taps];
                    if r < lead || r + trail >= mr {
                        continue;
                    }
                }
                for j in 0..4 {
                    let x = a[o as usize + row_step * r + j] as i64;
                    acc = acc.wrapping_add((x * w[ch][g][j]) as i32);
                }
            }
            let o = ch * ldc / 4 + r;
            want[o] = dequantized(acc, d, scale[ch], bias[ch], res[o]);
        }
    }
    PixelTile {
        a,
        koff,
        b,
        lda,
        c: c0.iter().flat_map(|x| x.to_le_bytes()).collect(),
        ldc,
        offset,
        scale,
        bias,
        res,
        want,
    }
}

/// The key of a pixel-rows tile `(rows, panels, row step, skips)` storing f32.
fn f32_key(
    (mr, panels, row_step, skips): (usize, usize, usize, ColumnSkips),
    bias: bool,
    steps: Vec<Epilogue>,
) -> Int8Key {
    Int8Key {
        scheme: Scheme::DotProduct,
        contraction: Contraction::ConvPixels {
            panels,
            row_step,
            skips,
        },
        mr,
        partial: false,
        unpacked: false,
        first: true,
        last: Some(Dequantize {
            bias,
            steps,
            quantize: None,
        }),
    }
}

fn keys() -> Vec<Int8Key> {
    let mut v = vec![];
    for mr in 1..=PIXEL_ROWS {
        for panels in 1..=panels_for(mr) {
            for row_step in [4, 8] {
                for bias in [false, true] {
                    for steps in step_lists(false, bias, Scheme::DotProduct) {
                        let skips = ColumnSkips::default();
                        v.push(f32_key((mr, panels, row_step, skips), bias, steps));
                    }
                }
            }
        }
    }
    v
}

fn emulate(code: &[u8], t: &PixelTile, groups: usize) -> Vec<u32> {
    const CODE: u64 = 0x1000_0000;
    const A: u64 = 0x2000_0000;
    const B: u64 = 0x3000_0000;
    const C: u64 = 0x4000_0000;
    const KOFF: u64 = 0x4800_0000;
    const OFFSET: u64 = 0x5000_0000;
    const SCALE: u64 = 0x5100_0000;
    const BIAS: u64 = 0x5200_0000;
    const RES: u64 = 0x6000_0000;
    let mut m = Machine::new();
    m.mem.push((CODE, code.to_vec()));
    m.mem.push((A, t.a.clone()));
    m.mem.push((B, t.b.clone()));
    m.mem.push((C, t.c.clone()));
    let koff: Vec<u8> = t.koff.iter().flat_map(|x| x.to_le_bytes()).collect();
    m.mem.push((KOFF, koff));
    m.mem.push((OFFSET, le(&t.offset, i32::to_le_bytes)));
    m.mem.push((SCALE, le(&t.scale, f32::to_le_bytes)));
    m.mem.push((BIAS, le(&t.bias, f32::to_le_bytes)));
    m.mem.push((RES, le(&t.res, f32::to_le_bytes)));
    let args = [
        A,
        B,
        C,
        groups as u64,
        t.lda as u64,
        KOFF,
        t.ldc as u64,
        OFFSET,
        SCALE,
        BIAS,
        RES,
    ];
    m.call(code, CODE, &args, 1_000_000);
    (0..t.c.len() / 4)
        .map(|o| m.read32(C + 4 * o as u64))
        .collect()
}

fn run_native(code: &[u8], t: &PixelTile, groups: usize) -> Vec<u32> {
    let (_module, p) = native(code, 11);
    // SAFETY: `p` is the finalized code of an int8 kernel, whose signature is `Kernel`
    // (System-V, 11 integer/pointer arguments); `_module` keeps it mapped during the call,
    // and every buffer covers what the kernel reads and writes (checked in the emulator).
    let f: Kernel = unsafe { std::mem::transmute::<*const u8, Kernel>(p) };
    let mut c = t.c.clone();
    f(
        t.a.as_ptr(),
        t.b.as_ptr(),
        c.as_mut_ptr(),
        groups as u64,
        t.lda as u64,
        t.koff.as_ptr() as u64,
        t.ldc as u64,
        t.offset.as_ptr(),
        t.scale.as_ptr(),
        t.bias.as_ptr(),
        t.res.as_ptr(),
    );
    c.chunks(4)
        .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn check(key: &Int8Key, got: &[u32], want: &[u32], what: &str) {
    for (o, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w,
            "{} {what}: element {o} got {} want {}",
            key.symbol(),
            f32::from_bits(g),
            f32::from_bits(w)
        );
    }
}

#[test]
fn pixel_kernels_compute_the_reference_tile() {
    let vnni =
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni");
    let mut seed = 3;
    for key in keys() {
        let code = assemble(&key).unwrap();
        for groups in [0, 1, 2, 3, 5] {
            seed += 1;
            let t = pixel_tile(&key, groups, seed);
            let what = format!("groups={groups}");
            check(&key, &emulate(&code, &t, groups), &t.want, &what);
            if vnni {
                check(&key, &run_native(&code, &t, groups), &t.want, &what);
            }
        }
    }
}

/// Pixel-rows kernels that store u8: each channel's pixels quantized after the steps, `ldc`
/// bytes a channel (4 bytes a block of 4 pixels, a short block's fewer); the other bytes
/// untouched. Against the f32 tile of the same key quantized by `QuantParams::quantize`, in
/// the emulator and natively on hosts with AVX-512 VNNI.
#[test]
fn pixel_kernels_store_quantized_bytes() {
    let vnni =
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni");
    let params = STORE_PARAMS;
    let mut seed = 50;
    for mr in 1..=PIXEL_ROWS {
        for panels in 1..=panels_for(mr) {
            for row_step in [4, 8] {
                let bias = mr % 2 == 0;
                let lists = step_lists(false, bias, Scheme::DotProduct);
                for steps in lists
                    .into_iter()
                    .filter(|s| !s.contains(&Epilogue::Residual))
                {
                    seed += 1;
                    let p = params[seed as usize % 2];
                    let skips = ColumnSkips::default();
                    let f32_key = f32_key((mr, panels, row_step, skips), bias, steps);
                    let mut key = f32_key.clone();
                    key.last.as_mut().unwrap().quantize = Some(QuantizeStore::of(p));
                    let code = assemble(&key).unwrap();
                    for groups in [1, 3] {
                        let mut t = pixel_tile(&f32_key, groups, seed);
                        // Channels `mr + 5` bytes apart (the f32 tile's `ldc` elements).
                        let ld = mr + 5;
                        let c0: Vec<u8> = (0..t.want.len().next_multiple_of(4))
                            .map(|i| (i * 37 % 251) as u8)
                            .collect();
                        let cells =
                            (0..16 * panels).flat_map(|ch| (0..mr).map(move |r| ch * ld + r));
                        let want = quantized_bytes(&t.want, &c0, p, cells);
                        t.c = c0;
                        t.ldc = ld;
                        let bytes = |v: Vec<u32>| -> Vec<u8> {
                            v.iter().flat_map(|x| x.to_le_bytes()).collect()
                        };
                        let what = format!("{} groups={groups}", key.symbol());
                        assert_eq!(bytes(emulate(&code, &t, groups)), want, "{what}");
                        if vnni {
                            assert_eq!(bytes(run_native(&code, &t, groups)), want, "{what}");
                        }
                    }
                }
            }
        }
    }
}

/// Tiles at the edges of an output row ([`ColumnSkips`]): the kernel leaves out exactly the
/// (row, kernel column) pairs the skips name, and computes every other pair (the planes hold
/// random bytes there, so a pair skipped or computed wrongly changes the sum): the skips of
/// 3x3, 5x5 (padding 2) and 7x7 (padding 3) kernels at both edges of short rows, strides 1
/// and 2, against the reference without those pairs, in the emulator and natively with VNNI.
#[test]
fn pixel_kernels_skip_the_edge_columns() {
    let vnni =
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni");
    let mut seed = 900;
    let mut shapes = 0;
    for (kw, pw) in [(3, 1), (5, 2), (7, 3)] {
        for sw in [1, 2] {
            for w in [2, 4, 7] {
                let ow = (w + 2 * pw - kw) / sw + 1;
                for mr in 1..=PIXEL_ROWS.min(ow) {
                    for x0 in [0, ow - mr] {
                        let skips = ColumnSkips::of(x0, mr, kw, (sw, 1, pw, w));
                        if skips.taps == 0 {
                            continue;
                        }
                        shapes += 1;
                        let panels = 1 + shapes % panels_for(mr);
                        let bias = shapes % 2 == 0;
                        let steps =
                            step_lists(false, bias, Scheme::DotProduct).swap_remove(shapes % 3);
                        let key = f32_key((mr, panels, 4 * sw, skips), bias, steps);
                        let code = assemble(&key).unwrap();
                        for planes in [0, 1, 3] {
                            seed += 1;
                            let groups = planes * kw;
                            let t = pixel_tile(&key, groups, seed);
                            let what = format!("groups={groups}");
                            check(&key, &emulate(&code, &t, groups), &t.want, &what);
                            if vnni {
                                check(&key, &run_native(&code, &t, groups), &t.want, &what);
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(shapes > 30, "{shapes} edge tiles");
}

/// The skips of a 3x3 kernel (padding 1) on a 4-pixel row, by hand: the first pixel's left
/// column and the last pixel's right column; none inside; at stride 2 on 8 pixels (4
/// outputs) only the left edge, on 7 pixels both.
#[test]
fn column_skips_of_edge_tiles() {
    let s = ColumnSkips::of(0, 4, 3, (1, 1, 1, 4));
    assert_eq!((s.taps, &s.rows[..3]), (3, &[(1, 0), (0, 0), (0, 1)][..]));
    let s = ColumnSkips::of(0, 2, 3, (1, 1, 1, 4));
    assert_eq!(&s.rows[..3], &[(1, 0), (0, 0), (0, 0)]);
    assert_eq!(ColumnSkips::of(1, 2, 3, (1, 1, 1, 4)).taps, 0);
    let s = ColumnSkips::of(0, 4, 3, (2, 1, 1, 8));
    assert_eq!(&s.rows[..3], &[(1, 0), (0, 0), (0, 0)]);
    let s = ColumnSkips::of(0, 4, 3, (2, 1, 1, 7));
    assert_eq!(&s.rows[..3], &[(1, 0), (0, 0), (0, 1)]);
    // A 5x5 kernel (padding 2) on a 1-pixel map: the pixel reads only the middle column.
    let s = ColumnSkips::of(0, 1, 5, (1, 1, 2, 1));
    assert_eq!(&s.rows[..5], &[(1, 0), (1, 0), (0, 0), (1, 0), (1, 0)]);
    assert_eq!(ColumnSkips::of(0, 4, 9, (1, 1, 4, 4)).taps, 0);
}
