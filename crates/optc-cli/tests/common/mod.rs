//! Shared setup of the CLI tests: running the `optc` binary, scratch directories, the
//! repository root.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Run `optc` with `args` (whatever its exit status).
pub fn optc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_optc"))
        .args(args)
        .output()
        .expect("optc runs")
}

/// Run `optc` with `args`; it must succeed.
pub fn optc_ok(args: &[&str]) -> Output {
    let out = optc(args);
    assert!(
        out.status.success(),
        "optc {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// stdout and stderr as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A fresh scratch directory for one test (`tag` keeps test binaries apart).
pub fn tmpdir(tag: &str, name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("optc-{tag}-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Compile `model` ahead of time for this machine at -O3 into the object `obj` (and its
/// header next to it).
pub fn compile_object(model: &Path, obj: &Path) {
    optc_ok(&[
        model.to_str().unwrap(),
        "--target",
        "native",
        "-O3",
        "-o",
        obj.to_str().unwrap(),
    ]);
}

/// The JIT's outputs (-O3, this machine) for `inputs`, as raw little-endian bytes.
pub fn jit(bytes: &[u8], inputs: &[optc::Tensor]) -> Vec<Vec<u8>> {
    let opts = optc::Options {
        opt_level: 3,
        target: "native".into(),
        ..Default::default()
    };
    let mut m = optc::compile_bytes(bytes, &opts).unwrap();
    m.run(inputs)
        .unwrap()
        .iter()
        .map(|t| t.data().to_le_bytes())
        .collect()
}

/// Deterministic f32 weights of `shape` (small, varied; `seed` shifts them).
pub fn weights(shape: Vec<usize>, seed: f32, scale: f32) -> optc::Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|i| (i as f32 * 0.37 + seed).sin() * scale)
        .collect();
    optc::Tensor::from_f32(shape, v).unwrap()
}
