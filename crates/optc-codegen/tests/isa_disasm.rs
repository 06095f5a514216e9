//! Ahead-of-time objects for targets this host may not be able to run contain the expected
//! machine code: the GEMM/conv microkernels of an `x86_64-avx512` object are zmm code (decoded
//! with iced-x86; its int8 kernels `vpdpbusd`), those of an `x86_64-avx2` object ymm code (its
//! int8 kernels `vpmaddubsw`/`vpmaddwd`), and an `aarch64-neon` object's
//! kernels use NEON vector arithmetic (checked by instruction encoding, and with
//! `aarch64-linux-gnu-objdump` when it is installed).

mod common;
use common::*;
use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
use object::{Object, ObjectSection, ObjectSymbol};
use optc_codegen::aot::{compile_object, AotOptions};
use optc_codegen::Target;
use optc_ir::quantized::ActivationQuantization;
use optc_ir::{Data, FusedStep, Graph, Op, Tensor, UnaryOp};

/// Conv(+bias, Relu) as an implicit GEMM and a MatMul with a constant B: both take the
/// microkernel path on x86-64 targets with AVX2/FMA.
fn conv_gemm_graph() -> Graph {
    let mut rng = Rng::new(7);
    let mut g = Graph::new();
    let x = g.add_input("x", f(&[1, 8, 12, 12]));
    let w = g.add_const("w", f32t(&mut rng, &[20, 8, 3, 3]));
    let b = g.add_const("b", f32t(&mut rng, &[20]));
    let window = square_window(3, 1, 1);
    let conv = Op::Fused {
        base: Box::new(Op::Conv { window, group: 1 }),
        base_inputs: 3,
        steps: vec![FusedStep::Unary(UnaryOp::Relu)],
    };
    let y = g.add("conv", conv, &[x, w, b]).unwrap();
    g.add_output("y", y);
    let a = g.add_input("a", f(&[13, 40]));
    let bm = g.add_const("bm", f32t(&mut rng, &[40, 37]));
    let z = g.add("mm", Op::MatMul, &[a, bm]).unwrap();
    g.add_output("z", z);
    g
}

fn object_for(target: &str) -> Vec<u8> {
    let t = Target::parse(target).unwrap();
    let opts = AotOptions {
        name: "isa".into(),
        ..Default::default()
    };
    compile_object(&conv_gemm_graph(), &t, &opts)
        .unwrap_or_else(|e| panic!("{target}: {e}"))
        .object
}

/// `(symbol name, code bytes)` of every defined function whose name contains `pat`.
fn functions(obj: &[u8], pat: &str) -> Vec<(String, Vec<u8>)> {
    let f = object::File::parse(obj).unwrap();
    let mut v = vec![];
    for s in f.symbols() {
        let name = s.name().unwrap_or("");
        if s.kind() != object::SymbolKind::Text || !name.contains(pat) {
            continue;
        }
        let sec = f.section_by_index(s.section_index().unwrap()).unwrap();
        let data = sec.data().unwrap();
        let o = (s.address() - sec.address()) as usize;
        assert!(s.size() > 0, "{name}: no symbol size");
        v.push((name.to_string(), data[o..o + s.size() as usize].to_vec()));
    }
    v
}

/// Whether the `_`-separated symbol name has the component `part` (`p`: partial tile).
fn has_part(name: &str, part: &str) -> bool {
    name.split('_').any(|c| c == part)
}

/// Decode x86-64 code up to its first `ret`; every instruction must be valid.
fn decode_x86(name: &str, code: &[u8]) -> Vec<iced_x86::Instruction> {
    let mut d = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut v = vec![];
    while d.can_decode() {
        let i = d.decode();
        assert!(
            !i.is_invalid(),
            "{name}: invalid instruction at {:#x}",
            i.ip()
        );
        v.push(i);
        if i.mnemonic() == Mnemonic::Ret {
            return v;
        }
    }
    panic!("{name}: no ret");
}

#[test]
fn avx512_object_has_zmm_microkernels() {
    let obj = object_for("x86_64-avx512");
    assert!(functions(&obj, "_optc_microkernel_avx2_").is_empty());
    let kernels = functions(&obj, "_optc_microkernel_avx512_");
    // Full and partial tiles, several row counts, Relu epilogue on the conv.
    assert!(
        kernels.len() >= 4,
        "{:?}",
        kernels.iter().map(|u| &u.0).collect::<Vec<_>>()
    );
    assert!(kernels.iter().any(|u| has_part(&u.0, "p")));
    assert!(kernels.iter().any(|u| has_part(&u.0, "relu")));
    for (name, code) in &kernels {
        let ins = decode_x86(name, code);
        // 16-column tiles take A by embedded broadcast; 32-column (`6x32`) tiles broadcast
        // it into a register for the FMAs of both panels.
        let wide = name.contains("x32");
        let zmm_fma = ins
            .iter()
            .filter(|i| {
                i.mnemonic() == Mnemonic::Vfmadd231ps
                    && i.op0_register().is_zmm()
                    && if wide {
                        i.op2_register().is_zmm()
                    } else {
                        i.op2_kind() == OpKind::Memory && i.is_broadcast()
                    }
            })
            .count();
        let ymm_fma = ins
            .iter()
            .filter(|i| i.mnemonic() == Mnemonic::Vfmadd231ps && i.op0_register().is_ymm())
            .count();
        assert!(
            zmm_fma > 0 && ymm_fma == 0,
            "{name}: {zmm_fma} zmm / {ymm_fma} ymm FMAs"
        );
        let mnem = |m: Mnemonic| ins.iter().any(|i| i.mnemonic() == m);
        assert!(mnem(Mnemonic::Vzeroupper), "{name}");
        assert_eq!(mnem(Mnemonic::Vmaxps), has_part(name, "relu"), "{name}");
        if has_part(name, "p") {
            assert!(mnem(Mnemonic::Kmovw), "{name}");
            assert!(ins.iter().any(|i| i.has_op_mask()
                && i.op_kind(0) == OpKind::Memory
                && i.mnemonic() == Mnemonic::Vmovups));
        }
    }
}

#[test]
fn avx2_object_has_ymm_microkernels() {
    let obj = object_for("x86_64-avx2");
    assert!(functions(&obj, "_optc_microkernel_avx512_").is_empty());
    let kernels = functions(&obj, "_optc_microkernel_avx2_");
    assert!(kernels.len() >= 4);
    for (name, code) in &kernels {
        let ins = decode_x86(name, code);
        assert!(ins
            .iter()
            .any(|i| i.mnemonic() == Mnemonic::Vfmadd231ps && i.op0_register().is_ymm()));
        for i in &ins {
            for o in 0..i.op_count() {
                if i.op_kind(o) == OpKind::Register {
                    assert!(!i.op_register(o).is_zmm(), "{name}: zmm in AVX2 code");
                }
            }
        }
    }
}

/// A quantized conv (static activations, fused Relu) and a quantized matmul (dynamic), with
/// 7-bit weights (`BytePairs` on AVX2).
fn int8_object_for(target: &str) -> Vec<u8> {
    let mut rng = Rng::new(3);
    let mut g = Graph::new();
    let i8s = |rng: &mut Rng, shape: &[usize]| {
        let n = shape.iter().product();
        let v = (0..n).map(|_| rng.int(-64, 65) as i8).collect();
        Tensor::new(shape.to_vec(), Data::I8(v)).unwrap()
    };
    let x = g.add_input("x", f(&[1, 8, 12, 12]));
    let w = g.add_const("w", i8s(&mut rng, &[20, 8, 3, 3]));
    let ws = g.add_const("ws", f32t(&mut rng, &[20]));
    let xs = g.add_const("xs", Tensor::scalar_f32(0.02));
    let xz = g.add_const("xz", Tensor::new(vec![], Data::U8(vec![7])).unwrap());
    let conv = Op::Fused {
        base: Box::new(Op::QuantizedConv {
            window: square_window(3, 1, 1),
            group: 1,
            activation: ActivationQuantization::Static,
        }),
        base_inputs: 5,
        steps: vec![FusedStep::Unary(UnaryOp::Relu)],
    };
    let y = g.add("qconv", conv, &[x, w, ws, xs, xz]).unwrap();
    g.add_output("y", y);
    let a = g.add_input("a", f(&[13, 40]));
    let wm = g.add_const("wm", i8s(&mut rng, &[40, 37]));
    let wsm = g.add_const("wsm", f32t(&mut rng, &[37]));
    let op = Op::QuantizedMatMul {
        activation: ActivationQuantization::Dynamic,
    };
    let z = g.add("qmm", op, &[a, wm, wsm]).unwrap();
    g.add_output("z", z);
    let opts = AotOptions {
        name: "int8".into(),
        ..Default::default()
    };
    compile_object(&g, &Target::parse(target).unwrap(), &opts)
        .unwrap_or_else(|e| panic!("{target}: {e}"))
        .object
}

#[test]
fn int8_kernels_of_each_x86_target() {
    // AVX-512: VNNI `vpdpbusd` on zmm only; AVX2: `vpmaddubsw` + `vpmaddwd` on ymm only.
    for (target, kind, other, mnemonic, zmm) in [
        (
            "x86_64-avx512",
            "_optc_int8_vnni_",
            "_optc_int8_bytepairs_",
            Mnemonic::Vpdpbusd,
            true,
        ),
        (
            "x86_64-avx2",
            "_optc_int8_bytepairs_",
            "_optc_int8_vnni_",
            Mnemonic::Vpmaddubsw,
            false,
        ),
    ] {
        let obj = int8_object_for(target);
        assert!(functions(&obj, other).is_empty(), "{target}");
        let kernels = functions(&obj, kind);
        let names: Vec<&String> = kernels.iter().map(|k| &k.0).collect();
        // Matmul and conv kernels, full and partial tiles, the conv's Relu.
        assert!(names.iter().any(|n| n.contains("_matmul_")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("_conv_")), "{names:?}");
        assert!(names.iter().any(|n| has_part(n, "p")), "{names:?}");
        assert!(names.iter().any(|n| has_part(n, "relu")), "{names:?}");
        for (name, code) in &kernels {
            let ins = decode_x86(name, code);
            let products: Vec<_> = ins.iter().filter(|i| i.mnemonic() == mnemonic).collect();
            assert!(!products.is_empty(), "{name}: no {mnemonic:?}");
            assert!(
                products
                    .iter()
                    .all(|i| i.op0_register().is_zmm() == zmm && i.op0_register().is_ymm() != zmm),
                "{name}"
            );
            if !zmm {
                assert!(
                    ins.iter().any(|i| i.mnemonic() == Mnemonic::Vpmaddwd),
                    "{name}"
                );
            }
            assert_eq!(
                ins.iter().any(|i| i.mnemonic() == Mnemonic::Vmaxps),
                has_part(name, "relu"),
                "{name}"
            );
        }
        // The activation quantizers are AVX2 routines on both targets.
        assert!(
            !functions(&obj, "_optc_quantize_range").is_empty(),
            "{target}"
        );
        assert!(
            !functions(&obj, "_optc_quantize_plane_").is_empty(),
            "{target}"
        );
    }
}

/// AArch64 AdvSIMD single-precision 4-lane ops (Arm ARM encodings): `(mask, value, name)`.
const NEON_4S: [(u32, u32, &str); 7] = [
    // "Three same": Q=1, size=0 (single), Rm/Rn/Rd free.
    (0xffe0_fc00, 0x4e20_d400, "fadd v.4s"),
    (0xffe0_fc00, 0x4ea0_d400, "fsub v.4s"),
    (0xffe0_fc00, 0x6e20_dc00, "fmul v.4s"),
    (0xffe0_fc00, 0x4e20_cc00, "fmla v.4s"),
    (0xffe0_fc00, 0x4e20_f400, "fmax v.4s"),
    // By element: `fmla Vd.4s, Vn.4s, Vm.s[i]` (Q=1, sz=0; L, M, H, Rm free).
    (0xffc0_f400, 0x4f80_1000, "fmla v.s[]"),
    // Compare with zero: `fcmlt Vd.4s, Vn.4s, #0.0`.
    (0xffff_fc00, 0x4ea0_e800, "fcmlt v.4s"),
];

#[test]
fn aarch64_object_has_neon_vector_code() {
    let obj = object_for("aarch64-neon");
    let f = object::File::parse(&*obj).unwrap();
    assert_eq!(f.architecture(), object::Architecture::Aarch64);
    let text: Vec<u8> = f
        .sections()
        .filter(|s| s.kind() == object::SectionKind::Text)
        .flat_map(|s| s.data().unwrap().to_vec())
        .collect();
    assert!(!text.is_empty());
    let mut found = vec![];
    for w in text.chunks_exact(4) {
        let w = u32::from_le_bytes(w.try_into().unwrap());
        for (mask, val, name) in NEON_4S {
            if w & mask == val && !found.contains(&name) {
                found.push(name);
            }
        }
    }
    // Conv/GEMM accumulate with vector FMAs (by element: a broadcast weight times 4 pixels).
    assert!(
        found.contains(&"fmla v.s[]") || found.contains(&"fmla v.4s"),
        "{found:?}"
    );

    // Cross-check with binutils when available (`.ci/run` installs it).
    let objdump = "aarch64-linux-gnu-objdump";
    if std::process::Command::new(objdump)
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have {objdump} (binutils-aarch64-linux-gnu, see .ci/run)"
        );
        eprintln!("skipped the objdump cross-check: {objdump} is not installed");
        return;
    }
    let dir = std::env::temp_dir().join(format!("optc_isa_disasm_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("isa.o");
    std::fs::write(&p, &obj).unwrap();
    let o = std::process::Command::new(objdump)
        .arg("-d")
        .arg(&p)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let asm = String::from_utf8_lossy(&o.stdout);
    let vec_ops: Vec<&str> = asm
        .lines()
        .filter(|l| {
            l.contains(".4s")
                && ["fmla", "fmul", "fadd", "fsub", "fmax", "fcmlt"]
                    .iter()
                    .any(|m| l.contains(m))
        })
        .collect();
    assert!(
        !vec_ops.is_empty(),
        "no NEON f32x4 arithmetic in the disassembly"
    );
    for (_, _, name) in NEON_4S {
        if found.contains(&name) {
            let m = name.split(' ').next().unwrap();
            assert!(
                vec_ops.iter().any(|l| l.contains(m)),
                "{name} found by encoding but not by objdump"
            );
        }
    }
}
