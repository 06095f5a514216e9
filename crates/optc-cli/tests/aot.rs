//! Ahead-of-time compilation through the `optc MODEL.onnx ...` command: objects linked into
//! the C example (`examples/c/main.c`) with the system `cc` must compute exactly what the JIT
//! computes; output is reproducible; cross-compiled objects are AArch64 ELF; errors are
//! readable.

use optc::{DType, Tensor};
use optc_onnx::builder::ModelBuilder;
use std::path::{Path, PathBuf};
use std::process::Command;

mod common;
use common::{compile_object, jit, optc_ok as optc, root};

fn tmp(name: &str) -> PathBuf {
    common::tmpdir("aot", name)
}

/// Two inputs and two outputs of different dtypes; exercises the runtime functions
/// (`logf`, `powf`, integer `pow`, `fmodf`) that AOT objects define themselves.
fn two_io_model() -> Vec<u8> {
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[2, 3]);
    b.input("n", DType::I64, &[5]);
    b.initializer("k", &Tensor::new(vec![], optc::Data::I64(vec![3])).unwrap());
    b.node("Abs", &["x"], &["a"], vec![]);
    b.node("Log", &["a"], &["l"], vec![]);
    b.node("Pow", &["a", "x"], &["p"], vec![]);
    b.node("Add", &["l", "p"], &["lp"], vec![]);
    b.node(
        "Mod",
        &["x", "l"],
        &["r"],
        vec![("fmod", optc_onnx::builder::Attr::Int(1))],
    );
    b.node("Add", &["lp", "r"], &["y"], vec![]);
    b.initializer(
        "f",
        &Tensor::from_f32(vec![5], vec![0.5, 2.0, -1.0, 3.0, 2.5]).unwrap(),
    );
    b.node("Pow", &["n", "k"], &["m"], vec![]);
    b.node("Pow", &["n", "f"], &["q"], vec![]);
    b.output("y");
    b.output("m");
    b.output("q");
    b.to_bytes()
}

/// Nodes big enough that the kernel plans split them into several parallel items: a 3x3
/// conv + relu, a 1x1 conv, a 65,536-element elementwise node and a matmul.
fn parallel_model() -> Vec<u8> {
    let weights = |shape, seed| common::weights(shape, seed, 0.1);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 16, 32, 32]);
    b.initializer("w1", &weights(vec![32, 16, 3, 3], 0.0));
    b.initializer("b1", &weights(vec![32], 1.0));
    b.initializer("w2", &weights(vec![64, 32, 1, 1], 2.0));
    b.initializer(
        "shape",
        &Tensor::new(vec![2], optc::Data::I64(vec![64, 1024])).unwrap(),
    );
    b.initializer("w3", &weights(vec![1024, 48], 3.0));
    let pads = optc_onnx::builder::Attr::Ints(vec![1; 4]);
    b.node("Conv", &["x", "w1", "b1"], &["c1"], vec![("pads", pads)]);
    b.node("Relu", &["c1"], &["r1"], vec![]);
    b.node("Conv", &["r1", "w2"], &["c2"], vec![]);
    b.node("Tanh", &["c2"], &["t"], vec![]);
    b.node("Mul", &["t", "c2"], &["m"], vec![]);
    b.node("Reshape", &["m", "shape"], &["rows"], vec![]);
    b.node("MatMul", &["rows", "w3"], &["y"], vec![]);
    b.output("y");
    b.output("m");
    b.to_bytes()
}

/// A transformer's FFN and attention pieces: a MatMul with BERT's GELU chain (fused into the
/// GEMM tiles as one step), a second MatMul, a softmax over 64-float rows (on AVX-512 hosts
/// the assembled softmax routine, 512 rows: split into tasks).
fn gelu_softmax_model() -> Vec<u8> {
    let weights = |shape, seed| common::weights(shape, seed, 0.3);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 512, 32]);
    b.initializer("w1", &weights(vec![32, 128], 4.0));
    b.initializer("w2", &weights(vec![128, 64], 5.0));
    let scalar = |v: f32| Tensor::from_f32(vec![], vec![v]).unwrap();
    b.initializer("sqrt2", &scalar(std::f32::consts::SQRT_2));
    b.initializer("one", &scalar(1.0));
    b.initializer("half", &scalar(0.5));
    b.node("MatMul", &["x", "w1"], &["h"], vec![]);
    b.node("Div", &["h", "sqrt2"], &["hs"], vec![]);
    b.node("Erf", &["hs"], &["e"], vec![]);
    b.node("Add", &["e", "one"], &["e1"], vec![]);
    b.node("Mul", &["h", "e1"], &["g0"], vec![]);
    b.node("Mul", &["g0", "half"], &["g"], vec![]);
    b.node("MatMul", &["g", "w2"], &["s"], vec![]);
    let axis = optc_onnx::builder::Attr::Int(-1);
    b.node("Softmax", &["s"], &["y"], vec![("axis", axis)]);
    b.output("y");
    b.to_bytes()
}

/// Compile `model` with optc (AOT, into `dir`), link the C example, run it on `inputs` and
/// return its outputs as raw bytes.
fn run_c(dir: &Path, model: &Path, name: &str, inputs: &[Tensor], n_out: usize) -> Vec<Vec<u8>> {
    let exe = build_c(dir, model, name);
    run_built(dir, &exe, inputs, n_out, None).0
}

/// Compile `model` with optc (AOT, `-O3` for this machine, into `dir`) and link the C
/// example against it; returns the program.
fn build_c(dir: &Path, model: &Path, name: &str) -> PathBuf {
    let obj = dir.join(format!("{name}.o"));
    compile_object(model, &obj);
    assert!(dir.join(format!("{name}.h")).exists());
    let exe = dir.join(format!("{name}_app"));
    link_c_example("cc", &["-O2", "-Wall", "-Werror"], name, dir, &obj, &exe);
    exe
}

/// Run the C example `exe` on `inputs` (with `OPTC_THREADS=threads` when given); returns its
/// outputs as raw bytes and its stderr.
fn run_built(
    dir: &Path,
    exe: &Path,
    inputs: &[Tensor],
    n_out: usize,
    threads: Option<usize>,
) -> (Vec<Vec<u8>>, String) {
    let mut args = write_inputs(dir, "", inputs);
    let outs: Vec<PathBuf> = (0..n_out)
        .map(|i| dir.join(format!("out{i}.bin")))
        .collect();
    args.extend(outs.iter().cloned());
    let mut cmd = Command::new(exe);
    cmd.args(&args).env_remove("OPTC_THREADS");
    if let Some(t) = threads {
        cmd.env("OPTC_THREADS", t.to_string());
    }
    let run = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "C app failed: {stderr}");
    let outs = outs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    (outs, stderr)
}

/// The C example built in a fresh directory `label` against model `bytes` (as `name`), random
/// inputs for it (`seed`) and the JIT's outputs on them: `(dir, inputs, outputs, executable)`.
fn c_example_for(
    label: &str,
    name: &str,
    bytes: &[u8],
    seed: u64,
) -> (PathBuf, Vec<Tensor>, Vec<Vec<u8>>, PathBuf) {
    let dir = tmp(label);
    let model = dir.join(format!("{name}.onnx"));
    std::fs::write(&model, bytes).unwrap();
    let graph = optc::import_bytes(bytes, &optc::Options::default()).unwrap();
    let inputs = optc::random_inputs(&graph.input_types(), seed);
    let want = jit(bytes, &inputs);
    let exe = build_c(&dir, &model, name);
    (dir, inputs, want, exe)
}

/// The parallel loops the C example ran on its thread pool (`OPTC_THREADS` set), from its
/// report on stderr.
fn pool_loops(stderr: &str) -> usize {
    let line = stderr
        .lines()
        .find(|l| l.contains("parallel loops on the pool"))
        .unwrap_or_else(|| panic!("no thread pool report in: {stderr}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Build the C example against the object `obj` of model `name` (header in `dir`) with the
/// C compiler `cc` and extra `flags`.
fn link_c_example(cc: &str, flags: &[&str], name: &str, dir: &Path, obj: &Path, exe: &Path) {
    let out = Command::new(cc)
        .args(flags)
        .arg(format!("-DOPTC_MODEL={name}"))
        .arg("-I")
        .arg(dir)
        .arg(root().join("examples/c/main.c"))
        .arg(obj)
        .arg("-lm")
        .arg("-pthread")
        .arg("-o")
        .arg(exe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{cc} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Write `inputs` as raw little-endian files `dir/{prefix}in{i}.bin` (the C example's input
/// format); returns their paths.
fn write_inputs(dir: &Path, prefix: &str, inputs: &[Tensor]) -> Vec<PathBuf> {
    inputs
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let p = dir.join(format!("{prefix}in{i}.bin"));
            std::fs::write(&p, t.data().to_le_bytes()).unwrap();
            p
        })
        .collect()
}

#[test]
fn c_example_matches_jit_bit_for_bit_on_bundled_model() {
    let dir = tmp("c-tiny");
    let model = root().join("examples/models/tiny_cnn.onnx");
    let bytes = std::fs::read(&model).unwrap();
    let opts = optc::Options::default();
    let graph = optc::import_bytes(&bytes, &opts).unwrap();
    let inputs = optc::random_inputs(&graph.input_types(), 7);
    let c_out = run_c(&dir, &model, "tiny_cnn", &inputs, 1);
    let j_out = jit(&bytes, &inputs);
    assert_eq!(c_out.len(), 1);
    assert_eq!(c_out[0].len(), 40);
    assert_eq!(c_out, j_out, "AOT (C) and JIT outputs differ");
    let _ = std::fs::remove_dir_all(&dir);
}

/// An object run through the C example's thread pool (`OPTC_THREADS=2`, the callback given
/// to `optc_NAME_set_parallel_for`) computes exactly what the JIT and the serial object
/// compute: the same items, each computed the same way, on whichever thread.
#[test]
fn c_example_on_two_threads_matches_jit_bit_for_bit() {
    let (dir, inputs, want, exe) = c_example_for("c-threads", "par", &parallel_model(), 21);
    let (serial, report) = run_built(&dir, &exe, &inputs, 2, Some(1));
    assert_eq!(pool_loops(&report), 0, "{report}");
    assert_eq!(serial, want, "AOT (C, serial) and JIT outputs differ");
    for run in 0..3 {
        let (threaded, report) = run_built(&dir, &exe, &inputs, 2, Some(2));
        // Every parallel node went through the callback: at least the two convs, the
        // elementwise node and the matmul.
        assert!(pool_loops(&report) >= 3, "run {run}: {report}");
        assert_eq!(
            threaded, want,
            "run {run}: AOT (C, 2 threads) and JIT outputs differ"
        );
    }
    let h = std::fs::read_to_string(dir.join("par.h")).unwrap();
    for s in [
        "typedef void (*optc_task_fn)(const void *ctx, uint64_t i);",
        "void optc_par_set_parallel_for(optc_parallel_for_fn f, void *user);",
    ] {
        assert!(h.contains(s), "header lacks {s}:\n{h}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// GELU in the GEMM tiles and the softmax routine in an object: serial and on two threads
/// through the callback, exactly what the JIT computes.
#[test]
fn c_example_matches_jit_on_gelu_and_softmax() {
    let (dir, inputs, want, exe) = c_example_for("c-gelu-softmax", "gs", &gelu_softmax_model(), 22);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512dq")
    {
        let object = std::fs::read(dir.join("gs.o")).unwrap();
        let has = |s: &str| object.windows(s.len()).any(|w| w == s.as_bytes());
        assert!(
            has("optc_softmax_avx512_64"),
            "no softmax routine in the object"
        );
        assert!(
            has("_gelu"),
            "no GEMM microkernel with the GELU step in the object"
        );
    }
    for threads in [1, 2] {
        let (got, report) = run_built(&dir, &exe, &inputs, 1, Some(threads));
        assert_eq!(
            got, want,
            "{threads} thread(s): AOT (C) and JIT outputs differ\n{report}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// MobileNetV2's first expansion: a 1x1 conv of 16 -> 96 channels on 112x112 (4.8 MB
/// expanded) read only by a 3x3 stride-2 depthwise conv, each with a Relu: one pair node
/// (`x64/pairs.rs`) where the host's L2 is 2.4 MB or less.
fn expansion_model() -> Vec<u8> {
    let weights = |shape, seed| common::weights(shape, seed, 0.3);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 16, 112, 112]);
    b.initializer("w1", &weights(vec![96, 16, 1, 1], 0.0));
    b.initializer("b1", &weights(vec![96], 1.0));
    b.initializer("w2", &weights(vec![96, 1, 3, 3], 2.0));
    b.initializer("b2", &weights(vec![96], 3.0));
    let pads = optc_onnx::builder::Attr::Ints(vec![1; 4]);
    let strides = optc_onnx::builder::Attr::Ints(vec![2, 2]);
    let group = optc_onnx::builder::Attr::Int(96);
    b.node("Conv", &["x", "w1", "b1"], &["e"], vec![]);
    b.node("Relu", &["e"], &["r"], vec![]);
    b.node(
        "Conv",
        &["r", "w2", "b2"],
        &["d"],
        vec![("pads", pads), ("strides", strides), ("group", group)],
    );
    b.node("Relu", &["d"], &["y"], vec![]);
    b.output("y");
    b.to_bytes()
}

/// An expansion pair in an object: serial and on two threads, exactly what the JIT computes.
#[test]
fn c_example_matches_jit_on_an_expansion_pair() {
    let (dir, inputs, want, exe) = c_example_for("c-pair", "pair", &expansion_model(), 23);
    for threads in [1, 2] {
        let (got, report) = run_built(&dir, &exe, &inputs, 1, Some(threads));
        assert_eq!(
            got, want,
            "{threads} thread(s): AOT (C) and JIT outputs differ\n{report}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A 3x3 conv over 128 images of 4x4 pixels: images folded into the GEMM's columns, run by
/// tap classes (`x64/tap_classes.rs`: the image-innermost copy and the reorder into the
/// output in parallel parts).
fn tap_classes_model() -> Vec<u8> {
    let weights = |shape, seed| common::weights(shape, seed, 0.3);
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[128, 32, 4, 4]);
    b.initializer("w", &weights(vec![64, 32, 3, 3], 0.0));
    b.initializer("b", &weights(vec![64], 1.0));
    let pads = optc_onnx::builder::Attr::Ints(vec![1; 4]);
    b.node("Conv", &["x", "w", "b"], &["c"], vec![("pads", pads)]);
    b.node("Relu", &["c"], &["y"], vec![]);
    b.output("y");
    b.to_bytes()
}

/// A conv run by tap classes in an object: serial and on two threads, exactly what the JIT
/// computes.
#[test]
fn c_example_matches_jit_on_a_conv_by_tap_classes() {
    let (dir, inputs, want, exe) = c_example_for("c-taps", "taps", &tap_classes_model(), 24);
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        let object = std::fs::read(dir.join("taps.o")).unwrap();
        let has = |s: &str| object.windows(s.len()).any(|w| w == s.as_bytes());
        assert!(
            has("_unfold"),
            "no parallel reorder of a tap-class conv in the object"
        );
    }
    for threads in [1, 2] {
        let (got, report) = run_built(&dir, &exe, &inputs, 1, Some(threads));
        assert_eq!(
            got, want,
            "{threads} thread(s): AOT (C) and JIT outputs differ\n{report}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn c_example_matches_jit_with_two_inputs_and_outputs_of_different_dtypes() {
    let dir = tmp("c-two");
    let bytes = two_io_model();
    let model = dir.join("two_io.onnx");
    std::fs::write(&model, &bytes).unwrap();
    let x = optc::random_inputs(&[optc::TensorType::new(DType::F32, vec![2, 3])], 3).remove(0);
    let n = Tensor::new(vec![5], optc::Data::I64(vec![-3, 0, 2, 7, 1 << 40])).unwrap();
    let inputs = vec![x, n];
    let c_out = run_c(&dir, &model, "two_io", &inputs, 3);
    let j_out = jit(&bytes, &inputs);
    assert_eq!(c_out[0].len(), 6 * 4);
    assert_eq!(c_out[1].len(), 5 * 8);
    assert_eq!(c_out[2].len(), 5 * 8);
    assert_eq!(c_out, j_out, "AOT (C) and JIT outputs differ");
    // The header describes both inputs and outputs.
    let h = std::fs::read_to_string(dir.join("two_io.h")).unwrap();
    for s in [
        "#define OPTC_TWO_IO_INPUT1_NAME \"n\"",
        "#define OPTC_TWO_IO_INPUT1_CTYPE int64_t",
        "#define OPTC_TWO_IO_OUTPUT0_SHAPE {2, 3}",
        "#define OPTC_TWO_IO_OUTPUT1_DTYPE \"i64\"",
        "int32_t optc_two_io_run(",
    ] {
        assert!(h.contains(s), "header lacks {s}:\n{h}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_models_link_into_one_program() {
    // Runtime helpers are local symbols: linking two objects must not clash; the headers
    // both declare the parallel-for types, once.
    let dir = tmp("c-link2");
    let model = root().join("examples/models/tiny_cnn.onnx");
    let bytes = two_io_model();
    let m2 = dir.join("two_io.onnx");
    std::fs::write(&m2, &bytes).unwrap();
    let a = dir.join("a.o");
    let b = dir.join("b.o");
    optc(&[model.to_str().unwrap(), "-o", a.to_str().unwrap()]);
    optc(&[m2.to_str().unwrap(), "-o", b.to_str().unwrap()]);
    let main = dir.join("m.c");
    std::fs::write(
        &main,
        "#include \"a.h\"\n#include \"b.h\"\nint main(void) { \
         optc_a_set_parallel_for(NULL, NULL); optc_b_set_parallel_for(NULL, NULL); \
         return (optc_a_workspace_size() == OPTC_A_WORKSPACE_SIZE && \
         optc_b_workspace_size() == OPTC_B_WORKSPACE_SIZE) ? 0 : 1; }\n",
    )
    .unwrap();
    let exe = dir.join("m");
    let cc = Command::new("cc")
        .args(["-std=c99", "-pedantic-errors", "-Wall", "-Werror"])
        .arg("-I")
        .arg(&dir)
        .arg(&main)
        .arg(&a)
        .arg(&b)
        .arg("-lm")
        .arg("-o")
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    assert!(Command::new(&exe).status().unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn output_is_reproducible() {
    let model = root().join("examples/models/tiny_cnn.onnx");
    let mut all = vec![];
    for run in 0..2 {
        let dir = tmp(&format!("repro{run}"));
        let out = dir.join("tiny.o");
        optc(&[
            model.to_str().unwrap(),
            "--target",
            "x86_64-avx2",
            "--emit",
            "obj,staticlib,header,rust,clif,asm,ir",
            "-o",
            out.to_str().unwrap(),
        ]);
        let files: Vec<Vec<u8>> = [
            "tiny.o",
            "libtiny.a",
            "tiny.h",
            "tiny.rs",
            "tiny.clif",
            "tiny.s",
            "tiny.ir",
        ]
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
        all.push(files);
        let _ = std::fs::remove_dir_all(&dir);
    }
    for (i, (a, b)) in all[0].iter().zip(&all[1]).enumerate() {
        assert!(!a.is_empty());
        assert!(a == b, "output {i} differs between two compilations");
    }
    // The archive is a GNU ar archive holding the object verbatim.
    let ar = &all[0][1];
    assert!(ar.starts_with(b"!<arch>\n/ "));
    assert!(ar
        .windows(all[0][0].len())
        .any(|w| w == all[0][0].as_slice()));
}

fn check_elf(bytes: &[u8], arch: object::Architecture, name: &str) {
    use object::{Object, ObjectSection, ObjectSymbol, SectionKind};
    let f = object::File::parse(bytes).unwrap();
    assert_eq!(f.format(), object::BinaryFormat::Elf);
    assert_eq!(f.architecture(), arch);
    for s in [
        format!("optc_{name}_run"),
        format!("optc_{name}_workspace_size"),
        format!("optc_{name}_set_parallel_for"),
    ] {
        let sym = f
            .symbols()
            .find(|x| x.name() == Ok(s.as_str()))
            .unwrap_or_else(|| panic!("no symbol {s}"));
        assert!(
            sym.is_definition() && sym.is_global(),
            "{s} is not exported"
        );
    }
    // Everything else defined is local; weights live in read-only data.
    for sym in f.symbols().filter(|s| s.is_definition() && s.is_global()) {
        assert!(sym.name().unwrap().starts_with(&format!("optc_{name}_")));
    }
    let data = f
        .symbols()
        .find(|s| s.name().is_ok_and(|n| n.starts_with("optc_data_")))
        .expect("constant data symbol");
    let sec = f.section_by_index(data.section_index().unwrap()).unwrap();
    assert_eq!(sec.kind(), SectionKind::ReadOnlyData, "{:?}", sec.name());
}

#[test]
fn cross_compiles_to_aarch64_elf() {
    let dir = tmp("arm");
    let model = root().join("examples/models/tiny_cnn.onnx");
    for (target, arch, name) in [
        ("aarch64-neon", object::Architecture::Aarch64, "tiny"),
        ("x86_64-avx512", object::Architecture::X86_64, "tiny512"),
    ] {
        let out = dir.join(format!("{name}.o"));
        let m = model.to_str().unwrap();
        optc(&[m, "--target", target, "-o", out.to_str().unwrap()]);
        check_elf(&std::fs::read(&out).unwrap(), arch, name);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn emits_every_kind() {
    let dir = tmp("kinds");
    let model = root().join("examples/models/tiny_cnn.onnx");
    let out = dir.join("t.o");
    let o = optc(&[
        model.to_str().unwrap(),
        "--target",
        "x86_64-avx2",
        "--emit",
        "obj,staticlib,header,rust,asm,clif,ir,dot",
        "-o",
        out.to_str().unwrap(),
        "-v",
    ]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    for f in [
        "t.o", "libt.a", "t.h", "t.rs", "t.s", "t.clif", "t.ir", "t.dot",
    ] {
        let p = dir.join(f);
        assert!(p.exists(), "{f} missing");
        assert!(stdout.contains(p.to_str().unwrap()), "not reported: {f}");
    }
    let asm = std::fs::read_to_string(dir.join("t.s")).unwrap();
    assert!(asm.contains("optc_t_run:") && asm.contains("ret"));
    assert!(std::fs::read_to_string(dir.join("t.clif"))
        .unwrap()
        .contains("function"));
    assert!(String::from_utf8_lossy(&o.stderr).contains("compile time"));
    // Default output: MODEL.o and MODEL.h next to the model.
    let m = dir.join("net.onnx");
    std::fs::copy(&model, &m).unwrap();
    let o = optc(&[m.to_str().unwrap()]);
    assert!(dir.join("net.o").exists() && dir.join("net.h").exists());
    assert!(String::from_utf8_lossy(&o.stdout).contains("net.h"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_model_is_a_readable_error() {
    let dir = tmp("bad");
    let m = dir.join("broken.onnx");
    std::fs::write(&m, b"this is not onnx").unwrap();
    let o = common::optc(&[m.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("broken.onnx"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    // Unknown target.
    let model = root().join("examples/models/tiny_cnn.onnx");
    let (m, x) = (model.to_str().unwrap(), dir.join("x.o"));
    let o = common::optc(&[m, "--target", "riscv", "-o", x.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("aarch64-neon"));
    // The JIT refuses a foreign target with a clear message.
    let bytes = std::fs::read(&model).unwrap();
    let opts = optc::Options {
        target: "aarch64-neon".into(),
        ..Default::default()
    };
    if !cfg!(target_arch = "aarch64") {
        let e = match optc::compile_bytes(&bytes, &opts) {
            Ok(_) => panic!("JIT accepted a foreign target"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains("cannot run on this host"), "{e}");
    }
    // Existing subcommands still work.
    optc(&["run", "-O1", m]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Compile `model` for AArch64, link the C example with the cross gcc, run it under qemu-user
/// on `inputs` and compare with the x86-64 JIT: f32 outputs within rounding (the x86-64 JIT
/// sums in the order of its AVX2 kernels, the AArch64 object in that of its NEON / portable
/// code), everything else bit for bit. With `threads`, runs with `OPTC_THREADS=threads`;
/// returns the program's stderr.
fn aarch64_matches_jit(
    dir: &Path,
    model: &Path,
    name: &str,
    inputs: &[Tensor],
    threads: Option<usize>,
) -> String {
    let obj = dir.join(format!("{name}.o"));
    optc(&[
        model.to_str().unwrap(),
        "--target",
        "aarch64-neon",
        "-o",
        obj.to_str().unwrap(),
    ]);
    let exe = dir.join(format!("{name}_arm"));
    link_c_example("aarch64-linux-gnu-gcc", &["-O2"], name, dir, &obj, &exe);
    let mut args = write_inputs(dir, &format!("{name}_"), inputs);
    let want = jit(&std::fs::read(model).unwrap(), inputs);
    let outs: Vec<PathBuf> = (0..want.len())
        .map(|i| dir.join(format!("{name}_out{i}.bin")))
        .collect();
    args.extend(outs.iter().cloned());
    let mut qemu = Command::new("qemu-aarch64");
    qemu.arg("-L")
        .arg("/usr/aarch64-linux-gnu")
        .arg(&exe)
        .args(&args)
        .env_remove("OPTC_THREADS");
    if let Some(t) = threads {
        qemu.env("OPTC_THREADS", t.to_string());
    }
    let run = qemu.output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "{stderr}");
    let otys = optc::import_bytes(&std::fs::read(model).unwrap(), &optc::Options::default())
        .unwrap()
        .output_types();
    for (i, p) in outs.iter().enumerate() {
        let got = std::fs::read(p).unwrap();
        if otys[i].dtype != DType::F32 {
            assert_eq!(
                got, want[i],
                "{name}: output {i} differs from the x86-64 JIT"
            );
            continue;
        }
        assert_eq!(got.len(), want[i].len(), "{name}: output {i} size");
        let f = |b: &[u8]| -> Vec<f32> {
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        for (j, (a, b)) in f(&got).iter().zip(f(&want[i])).enumerate() {
            assert!(
                (a - b).abs() <= 1e-6 + 1e-5 * b.abs() || (a.is_nan() && b.is_nan()),
                "{name}: output {i} element {j}: AArch64 {a} vs x86-64 JIT {b}"
            );
        }
    }
    stderr
}

/// Cross-compiled objects run: link the C example with the AArch64 cross gcc and run it under
/// qemu-user (`.ci/run` installs both; outside CI the test is skipped when they are missing),
/// and match the x86-64 JIT (f32 within rounding).
#[test]
fn aarch64_object_runs_under_qemu_like_the_jit() {
    let have = |t: &str| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("qemu-aarch64") || !have("aarch64-linux-gnu-gcc") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have qemu-aarch64 and aarch64-linux-gnu-gcc (see .ci/run)"
        );
        eprintln!("skipped: qemu-aarch64 or aarch64-linux-gnu-gcc is not installed");
        return;
    }
    let dir = tmp("qemu");
    let m2 = dir.join("two_io.onnx");
    std::fs::write(&m2, two_io_model()).unwrap();
    let tiny = root().join("examples/models/tiny_cnn.onnx");
    let x = optc::random_inputs(&[optc::TensorType::new(DType::F32, vec![2, 3])], 5).remove(0);
    let n = Tensor::new(vec![5], optc::Data::I64(vec![-3, 0, 2, 7, 1 << 40])).unwrap();
    let tiny_bytes = std::fs::read(&tiny).unwrap();
    let g = optc::import_bytes(&tiny_bytes, &optc::Options::default()).unwrap();
    let cases = [
        (
            tiny.clone(),
            "tiny",
            optc::random_inputs(&g.input_types(), 9),
        ),
        (m2.clone(), "two", vec![x, n]),
    ];
    for (model, name, inputs) in cases {
        aarch64_matches_jit(&dir, &model, name, &inputs, None);
    }
    // Parallel nodes through the C example's thread pool (the callback the AArch64 object
    // calls).
    let par = dir.join("par.onnx");
    let par_bytes = parallel_model();
    std::fs::write(&par, &par_bytes).unwrap();
    let g = optc::import_bytes(&par_bytes, &optc::Options::default()).unwrap();
    let inputs = optc::random_inputs(&g.input_types(), 4);
    let report = aarch64_matches_jit(&dir, &par, "par", &inputs, Some(2));
    assert!(pool_loops(&report) > 0, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The quantized ONNX fixtures (`tests/data/quantized`: the quantization ops, the integer and
/// int8 contractions on the generic lowering) run as AArch64 objects under qemu like the
/// x86-64 JIT.
#[test]
fn quantized_models_run_under_qemu_like_the_jit() {
    let have = |t: &str| {
        Command::new(t)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("qemu-aarch64") || !have("aarch64-linux-gnu-gcc") {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have qemu-aarch64 and aarch64-linux-gnu-gcc (see .ci/run)"
        );
        eprintln!("skipped: qemu-aarch64 or aarch64-linux-gnu-gcc is not installed");
        return;
    }
    let dir = tmp("qemu_quantized");
    let data = root().join("tests/data/quantized");
    for case in [
        "quantize_per_axis_negative",
        "quantize_per_axis_0_i8",
        "dequantize_per_axis_i8",
        "dynamic_quantize_mixed",
        "matmul_integer_batched_both",
        "conv_integer_group",
        "qlinear_conv_per_channel_bias",
        "qlinear_matmul_per_column_i8_out",
        "tool_dynamic_mlp_per_channel",
        "tool_static_cnn_per_channel",
    ] {
        let inputs: Vec<Tensor> = (0..)
            .map(|i| data.join(case).join(format!("input_{i}.pb")))
            .take_while(|p| p.exists())
            .map(|p| optc_onnx::tensor_from_pb(&std::fs::read(p).unwrap()).unwrap())
            .collect();
        aarch64_matches_jit(
            &dir,
            &data.join(case).join("model.onnx"),
            case,
            &inputs,
            None,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A runtime error in AOT code reports the same node as the JIT, by name (header table).
#[test]
fn runtime_error_names_the_node_like_the_jit() {
    let dir = tmp("rterr");
    let mut b = ModelBuilder::new(17);
    b.input("data", DType::F32, &[4]);
    b.input("idx", DType::I64, &[2]);
    b.node_named("pick", "Gather", &["data", "idx"], &["out"], vec![]);
    b.output("out");
    let bytes = b.to_bytes();
    let model = dir.join("gather.onnx");
    std::fs::write(&model, &bytes).unwrap();
    let inputs = vec![
        Tensor::from_f32(vec![4], vec![1.0, 2.0, 3.0, 4.0]).unwrap(),
        Tensor::new(vec![2], optc::Data::I64(vec![0, 9])).unwrap(),
    ];
    let opts = optc::Options {
        opt_level: 3,
        ..Default::default()
    };
    let jit_err = match optc::compile_bytes(&bytes, &opts).unwrap().run(&inputs) {
        Ok(_) => panic!("JIT accepted an out-of-range index"),
        Err(e) => e.to_string(),
    };
    assert!(jit_err.contains("pick"), "{jit_err}");
    let obj = dir.join("gather.o");
    optc(&[model.to_str().unwrap(), "-o", obj.to_str().unwrap()]);
    let exe = dir.join("gather_app");
    link_c_example("cc", &[], "gather", &dir, &obj, &exe);
    let mut args = write_inputs(&dir, "", &inputs);
    args.push(dir.join("out0.bin"));
    let run = Command::new(&exe).args(&args).output().unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("pick") && err.contains("gather index out of range"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Attention over `x [1, seq, 4]` (scores, softmax over keys, `P x`) and the mean over the
/// sequence.
fn attention_model() -> Vec<u8> {
    let mut b = ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, -1, 4])
        .initializer("wq", &common::weights(vec![4, 4], 0.3, 0.6))
        .node("MatMul", &["x", "wq"], &["q"], vec![])
        .node(
            "Transpose",
            &["x"],
            &["xt"],
            vec![("perm", optc_onnx::builder::Attr::Ints(vec![0, 2, 1]))],
        )
        .node("MatMul", &["q", "xt"], &["scores"], vec![])
        .node("Softmax", &["scores"], &["p"], vec![])
        .node("MatMul", &["p", "x"], &["y"], vec![])
        .node(
            "ReduceMean",
            &["y"],
            &["mean"],
            vec![("axes", optc_onnx::builder::Attr::Ints(vec![1]))],
        )
        .output("y")
        .output("mean");
    b.to_bytes()
}

#[test]
fn one_object_serves_every_length_of_its_range() {
    let dir = tmp("c-length");
    let bytes = attention_model();
    let model = dir.join("attend.onnx");
    std::fs::write(&model, &bytes).unwrap();
    let obj = dir.join("attend.o");
    optc(&[
        model.to_str().unwrap(),
        "--target",
        "native",
        "-O3",
        "--input-shape",
        "x=1x1..40x4",
        "-o",
        obj.to_str().unwrap(),
    ]);
    let h = std::fs::read_to_string(dir.join("attend.h")).unwrap();
    for s in [
        "#define OPTC_ATTEND_LENGTH_MAX 40",
        "#define OPTC_ATTEND_INPUT0_SHAPE {1, 40, 4}",
        "a variant for each\n * longest length [20, 40]",
        "#define OPTC_ATTEND_INPUT1_NAME \"optc_length\"",
        " *   input 0 along dims [1]\n",
    ] {
        assert!(h.contains(s), "header lacks {s}:\n{h}");
    }
    let exe = dir.join("attend_app");
    link_c_example(
        "cc",
        &["-O2", "-Wall", "-Werror"],
        "attend",
        &dir,
        &obj,
        &exe,
    );
    // Lengths 1-20 run the variant for 20, 21-40 the one for 40.
    for len in [1usize, 4, 20, 21, 40] {
        let x = common::weights(vec![1, len, 4], len as f32, 2.0);
        let want = jit(&bytes, std::slice::from_ref(&x));
        // Past the length: NaN, which no position within it may read.
        let mut padded = x.as_f32().unwrap().to_vec();
        padded.resize(40 * 4, f32::NAN);
        let inputs = [
            Tensor::from_f32(vec![1, 40, 4], padded).unwrap(),
            Tensor::scalar_i64(len as i64),
        ];
        let (got, _) = run_built(&dir, &exe, &inputs, 2, None);
        let floats = |b: &[u8]| -> Vec<f32> {
            b.chunks(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect()
        };
        // Batch 1, the length the first dim past it: the first positions are a prefix.
        for (o, n) in [(0, len * 4), (1, 4)] {
            let (g, w) = (floats(&got[o]), floats(&want[o]));
            assert_eq!(w.len(), n);
            for (i, (a, b)) in g[..n].iter().zip(&w).enumerate() {
                assert!(
                    (a - b).abs() <= 1e-5 + 1e-4 * b.abs(),
                    "length {len}, output {o}[{i}]: {a} against {b}"
                );
            }
        }
    }
    // Outside the range (0 in the first variant, 41 in the last): the guard's error, named.
    for bad in [0i64, 41] {
        let x = Tensor::from_f32(vec![1, 40, 4], vec![0.5; 160]).unwrap();
        let mut args = write_inputs(&dir, "", &[x, Tensor::scalar_i64(bad)]);
        args.extend([dir.join("out0.bin"), dir.join("out1.bin")]);
        let run = Command::new(&exe).args(&args).output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(
            run.status.code() == Some(1)
                && err.contains("optc_length_checked (guard)")
                && err.contains("outside the range"),
            "length {bad}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn length_ranges_are_checked_and_only_ahead_of_time() {
    let dir = tmp("length-errors");
    let model = dir.join("attend.onnx");
    std::fs::write(&model, attention_model()).unwrap();
    let m = model.to_str().unwrap();
    let obj = dir.join("x.o");
    let o = obj.to_str().unwrap();
    for (args, says) in [
        (
            vec![m, "--input-shape", "x=1x5..3x4", "-o", o],
            "must run from at least 1 to a larger length",
        ),
        (
            vec![m, "--input-shape", "x=1x1..ax4", "-o", o],
            "write MIN..MAX",
        ),
        (
            vec!["run", m, "--input-shape", "x=1x1..9x4"],
            "one ahead-of-time object for every length",
        ),
    ] {
        let out = common::optc(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{args:?}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
