//! optc-build as a build script uses it: readable errors naming the model file (never a
//! panic), files written, reproducible output.

use optc_build::{compile_object, target_for, Build, ObjectOptions, Options};
use std::path::{Path, PathBuf};

fn model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/models/tiny_cnn.onnx")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("optc-build-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bad_model_is_an_error_naming_the_file() {
    let dir = tmp("bad");
    let bad = dir.join("not_a_model.onnx");
    std::fs::write(&bad, b"\x08\x07garbage").unwrap();
    let r = std::panic::catch_unwind(|| {
        Build::new()
            .model(&bad)
            .out_dir(&dir)
            .target("x86_64-sse4.2")
            .cargo_metadata(false)
            .try_compile("m")
    });
    let e = r.expect("no panic").unwrap_err().to_string();
    assert!(e.contains("not_a_model.onnx"), "{e}");
    // A missing file.
    let e = Build::new()
        .model(dir.join("missing.onnx"))
        .out_dir(&dir)
        .cargo_metadata(false)
        .try_compile("m")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("missing.onnx") && e.contains("cannot read"),
        "{e}"
    );
    // No model at all.
    let e = Build::new()
        .out_dir(&dir)
        .cargo_metadata(false)
        .try_compile("m")
        .unwrap_err()
        .to_string();
    assert!(e.contains(".model("), "{e}");
    // A bad target.
    let e = Build::new()
        .model(model())
        .out_dir(&dir)
        .target("mips")
        .cargo_metadata(false)
        .try_compile("m")
        .unwrap_err()
        .to_string();
    assert!(e.contains("tiny_cnn.onnx") && e.contains("mips"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn writes_archive_header_and_bindings() {
    let dir = tmp("ok");
    let out = Build::new()
        .model(model())
        .out_dir(&dir)
        .target("x86_64-avx2")
        .cargo_metadata(false)
        .try_compile("Tiny-Net")
        .unwrap();
    assert_eq!(out.archive, dir.join("libtiny_net.a"));
    let ar = std::fs::read(&out.archive).unwrap();
    assert!(ar.starts_with(b"!<arch>\n"));
    let needle = b"optc_tiny_net_run\0";
    assert!(ar.windows(needle.len()).any(|w| w == needle));
    let rs = std::fs::read_to_string(&out.bindings).unwrap();
    assert!(rs.contains("pub struct TinyNet"), "{rs}");
    assert!(
        rs.contains("pub fn run(&mut self, input0: &[f32; 768])"),
        "{rs}"
    );
    let h = std::fs::read_to_string(&out.header).unwrap();
    assert!(h.contains("optc_tiny_net_run"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compile_object_is_reproducible_in_process() {
    let bytes = std::fs::read(model()).unwrap();
    let opts = Options {
        target: "x86_64-avx2".into(),
        opt_level: 3,
        ..Options::default()
    };
    let obj = ObjectOptions {
        name: "t".into(),
        source: "tiny_cnn.onnx".into(),
        keep_clif: false,
        keep_asm: false,
    };
    let a = compile_object(&bytes, &opts, &obj).unwrap();
    let b = compile_object(&bytes, &opts, &obj).unwrap();
    assert!(a.object() == b.object());
    assert!(a.staticlib() == b.staticlib());
    assert_eq!(a.header(), b.header());
    assert_eq!(a.rust(), b.rust());
    assert!(compile_object(b"junk", &opts, &obj).is_err());
}

#[test]
fn target_follows_the_cargo_target() {
    assert_eq!(
        target_for("x86_64-unknown-linux-gnu", "fxsr,sse,sse2").unwrap(),
        "x86_64-sse4.2"
    );
    assert_eq!(
        target_for("x86_64-unknown-linux-gnu", "avx,avx2,fma,sse4.1").unwrap(),
        "x86_64-avx2"
    );
    assert_eq!(
        target_for("aarch64-unknown-linux-gnu", "neon").unwrap(),
        "aarch64-neon"
    );
    assert!(target_for("riscv64gc-unknown-linux-gnu", "")
        .unwrap_err()
        .contains("riscv64"));
}

/// A model whose nodes the kernel plans split into parallel items: a 3x3 conv + relu, a 1x1
/// conv, a 65,536-element elementwise node and a matmul.
fn parallel_model() -> Vec<u8> {
    use optc::{DType, Tensor};
    let weights = |shape: Vec<usize>, seed: f32| {
        let n: usize = shape.iter().product();
        let v = (0..n)
            .map(|i| (i as f32 * 0.37 + seed).sin() * 0.1)
            .collect();
        Tensor::from_f32(shape, v).unwrap()
    };
    let mut b = optc_onnx::builder::ModelBuilder::new(17);
    b.input("x", DType::F32, &[1, 16, 32, 32]);
    b.initializer("w1", &weights(vec![32, 16, 3, 3], 0.0));
    b.initializer("w2", &weights(vec![64, 32, 1, 1], 2.0));
    let shape = Tensor::new(vec![2], optc::Data::I64(vec![64, 1024])).unwrap();
    b.initializer("shape", &shape);
    b.initializer("w3", &weights(vec![1024, 48], 3.0));
    let pads = optc_onnx::builder::Attr::Ints(vec![1; 4]);
    b.node("Conv", &["x", "w1"], &["c1"], vec![("pads", pads)]);
    b.node("Relu", &["c1"], &["r1"], vec![]);
    b.node("Conv", &["r1", "w2"], &["c2"], vec![]);
    b.node("Tanh", &["c2"], &["t"], vec![]);
    b.node("Mul", &["t", "c2"], &["m"], vec![]);
    b.node("Reshape", &["m", "shape"], &["rows"], vec![]);
    b.node("MatMul", &["rows", "w3"], &["y"], vec![]);
    b.output("y");
    b.to_bytes()
}

/// A program using the generated bindings (`par.rs`): runs the model on the f32 input in
/// `argv[1]` with the parallel-for given by `argv[2]` and writes the output to `argv[3]`;
/// prints on stderr how many parallel loops went through the threads function.
const BINDINGS_MAIN: &str = r#"
include!("par.rs");

use std::sync::atomic::{AtomicUsize, Ordering};

static LOOPS: AtomicUsize = AtomicUsize::new(0);

/// Two threads (a scoped one and the caller), each calling `work`.
fn two_threads(work: &(dyn Fn() + Sync)) {
    LOOPS.fetch_add(1, Ordering::Relaxed);
    std::thread::scope(|s| {
        s.spawn(work);
        work();
    });
}

/// Three threads calling `work` twice each.
fn three_threads_twice(work: &(dyn Fn() + Sync)) {
    LOOPS.fetch_add(1, Ordering::Relaxed);
    std::thread::scope(|s| {
        for _ in 0..3 {
            s.spawn(|| {
                work();
                work();
            });
        }
    });
}

/// Never calls `work`: the bindings run the items afterwards.
fn no_threads(_work: &(dyn Fn() + Sync)) {
    LOOPS.fetch_add(1, Ordering::Relaxed);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bytes = std::fs::read(&args[1]).unwrap();
    let input: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    let threads: Option<fn(&(dyn Fn() + Sync))> = match args[2].as_str() {
        "two" => Some(two_threads),
        "three-twice" => Some(three_threads_twice),
        "none" => Some(no_threads),
        _ => None,
    };
    Par::set_parallel_for(threads);
    let mut model = Par::new();
    let y = model.run_slices(&input).unwrap();
    let out: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&args[3], out).unwrap();
    eprintln!("loops: {}", LOOPS.load(Ordering::Relaxed));
}
"#;

/// The generated Rust bindings hand the model's parallel nodes to the program's threads
/// (`set_parallel_for`): a program compiled with rustc against the archive and the bindings
/// (warnings denied) computes exactly what the JIT computes, serially, on two or three
/// threads, and when the threads function never calls `work`; the threads function was
/// called for the parallel nodes.
#[test]
fn rust_bindings_run_parallel_nodes_on_the_program_threads() {
    let dir = tmp("threads");
    let bytes = parallel_model();
    let opts = Options {
        target: "native".into(),
        opt_level: 3,
        ..Options::default()
    };
    let obj = ObjectOptions {
        name: "par".into(),
        source: "par.onnx".into(),
        keep_clif: false,
        keep_asm: false,
    };
    let a = compile_object(&bytes, &opts, &obj).unwrap();
    std::fs::write(dir.join("libpar.a"), a.staticlib()).unwrap();
    std::fs::write(dir.join("par.rs"), a.rust()).unwrap();
    std::fs::write(dir.join("main.rs"), BINDINGS_MAIN).unwrap();
    let exe = dir.join("par_app");
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = std::process::Command::new(rustc)
        .current_dir(&dir)
        .args(["--edition", "2021", "-D", "warnings", "main.rs", "-L", "."])
        .args(["-l", "static=par", "-l", "m", "-o"])
        .arg(&exe)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rustc failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let graph = optc::import_bytes(&bytes, &opts).unwrap();
    let inputs = optc::random_inputs(&graph.input_types(), 5);
    std::fs::write(dir.join("x.bin"), inputs[0].data().to_le_bytes()).unwrap();
    let want = optc::compile_bytes(&bytes, &opts)
        .unwrap()
        .run(&inputs)
        .unwrap()[0]
        .data()
        .to_le_bytes();
    for (threads, loops) in [("serial", 0), ("two", 3), ("three-twice", 3), ("none", 3)] {
        let y = dir.join(format!("y_{threads}.bin"));
        let run = std::process::Command::new(&exe)
            .arg(dir.join("x.bin"))
            .arg(threads)
            .arg(&y)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{threads}: {stderr}");
        let n: usize = stderr
            .trim()
            .strip_prefix("loops: ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{threads}: {stderr}"));
        if loops == 0 {
            assert_eq!(n, 0, "{threads}");
        } else {
            assert!(n >= loops, "{threads}: {n} parallel loops");
        }
        assert!(
            std::fs::read(&y).unwrap() == want,
            "{threads}: the bindings' output differs from the JIT's"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bindings of an object for lengths 1..40 (variants for 20 and 40) compiled into a
/// program with rustc: `run_length` on inputs of the run's length gives what the JIT gives
/// for the model at that length, and refuses a length outside the range.
#[test]
fn run_length_of_the_bindings_matches_the_model_at_each_length() {
    let dir = tmp("run-length");
    let mut b = optc_onnx::builder::ModelBuilder::new(17);
    b.input("x", optc::DType::F32, &[1, -1, 4])
        .node(
            "Softmax",
            &["x"],
            &["p"],
            vec![("axis", optc_onnx::builder::Attr::Int(1))],
        )
        .node(
            "ReduceMax",
            &["x"],
            &["m"],
            vec![("axes", optc_onnx::builder::Attr::Ints(vec![1]))],
        )
        .output("p")
        .output("m");
    let model = dir.join("attend.onnx");
    b.write(&model).unwrap();
    let out = Build::new()
        .model(&model)
        .out_dir(&dir)
        .target("native")
        .cargo_metadata(false)
        .input_length_range("x", &[1, 40, 4], &[1], 1, 40)
        .try_compile("attend")
        .unwrap();
    let rs = std::fs::read_to_string(&out.bindings).unwrap();
    for s in [
        "pub fn run_length(&mut self, length: usize, input0: &[f32]) -> Result<(&[f32], &[f32]), AttendError>",
        "pub const LENGTH_MIN: usize = 1;",
        "pub const INPUT_LENGTH_AXES: [&'static [usize]; 1] = [&[1]];",
        "pub const OUTPUT_LENGTH_AXES: [&'static [usize]; 2] = [&[1], &[]];",
        "pub fn run(&mut self, input0: &[f32; 160], input1: &[i64; 1])",
    ] {
        assert!(rs.contains(s), "bindings lack {s}:\n{rs}");
    }
    let main = dir.join("main.rs");
    std::fs::write(
        &main,
        format!(
            r#"include!({:?});
fn main() {{
    let mut m = Attend::new();
    assert_eq!(Attend::LENGTH_VARIANTS, [20, 40]);
    assert!(m.run_length(0, &[]).is_err() && m.run_length(41, &[0.0; 164]).is_err());
    assert!(m.run_length(3, &[0.0; 11]).is_err());
    for length in std::env::args().skip(1).map(|a| a.parse::<usize>().unwrap()) {{
        let x: Vec<f32> = (0..4 * length).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let (p, mx) = m.run_length(length, &x).unwrap();
        let bits: Vec<String> = p.iter().chain(mx).map(|v| v.to_bits().to_string()).collect();
        println!("{{}}", bits.join(" "));
    }}
}}
"#,
            out.bindings
        ),
    )
    .unwrap();
    let exe = dir.join("attend_app");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let built = std::process::Command::new(rustc)
        .args(["--edition", "2021", "-O", "-o"])
        .arg(&exe)
        .arg(&main)
        .arg("-L")
        .arg(&dir)
        .args(["-l", "static=attend", "-l", "m"])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let lengths = [1usize, 3, 20, 21, 40];
    let run = std::process::Command::new(&exe)
        .args(lengths.iter().map(|l| l.to_string()))
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let bytes = std::fs::read(&model).unwrap();
    for (line, &length) in stdout.lines().zip(&lengths) {
        let got: Vec<f32> = line
            .split(' ')
            .map(|w| f32::from_bits(w.parse().unwrap()))
            .collect();
        let x: Vec<f32> = (0..4 * length)
            .map(|i| (i as f32 * 0.37).sin() * 3.0)
            .collect();
        let x = optc::Tensor::from_f32(vec![1, length, 4], x).unwrap();
        let mut jit = optc::compile_bytes(&bytes, &Options::default()).unwrap();
        let want: Vec<f32> = jit
            .run(&[x])
            .unwrap()
            .iter()
            .flat_map(|t| t.as_f32().unwrap().to_vec())
            .collect();
        assert_eq!(got.len(), want.len(), "length {length}");
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g - w).abs() <= 1e-6 + 1e-5 * w.abs(),
                "length {length}: {g} against {w}"
            );
        }
    }
    assert_eq!(stdout.lines().count(), lengths.len());
    let _ = std::fs::remove_dir_all(&dir);
}
