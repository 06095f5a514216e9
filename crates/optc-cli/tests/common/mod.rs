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
