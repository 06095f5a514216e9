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
