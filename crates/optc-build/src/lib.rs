//! Compile ONNX models ahead of time from a `build.rs`, in the style of the `cc` crate.
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     optc_build::Build::new()
//!         .model("models/classifier.onnx")
//!         .compile("classifier");
//! }
//! ```
//!
//! ```text
//! // main.rs
//! include!(concat!(env!("OUT_DIR"), "/classifier.rs"));
//!
//! fn main() {
//!     let mut model = Classifier::new();
//!     let input = [0.5f32; Classifier::INPUT0_LEN];
//!     let output = model.run(&input).unwrap();
//!     println!("{output:?}");
//! }
//! ```
//!
//! [`Build::compile`] compiles the model for the crate's target (`TARGET`; override with
//! [`Build::target`] or the `OPTC_TARGET` environment variable), writes `lib<name>.a` and
//! `<name>.rs` into `OUT_DIR`, and prints the `cargo:rustc-link-*` and
//! `cargo:rerun-if-changed` lines. A bad model stops the build with a message naming the
//! model file (no panic). [`Build::try_compile`] returns the error instead.
//!
//! The compile itself is `optc::compile_object` (re-exported here with [`Options`],
//! [`ObjectOptions`] and [`Artifacts`]): the same pipeline the `optc` CLI and the JIT use.

// The first example is a build script: its `fn main` is the point.
#![allow(clippy::needless_doctest_main)]

pub use optc::{compile_object, Artifacts, ObjectOptions, Options};
use std::fmt;
use std::path::{Path, PathBuf};

/// A compile error: which model and what went wrong.
#[derive(Debug, Clone)]
pub struct Error {
    /// The model file (or a description of the model source).
    pub model: String,
    pub msg: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.model, self.msg)
    }
}

impl std::error::Error for Error {}

/// The optc target for a Rust target triple and its enabled features (the values of cargo's
/// `TARGET` and `CARGO_CFG_TARGET_FEATURE`).
pub fn target_for(triple: &str, features: &str) -> Result<String, String> {
    let has = |f: &str| features.split(',').any(|x| x == f);
    if triple.starts_with("x86_64") {
        Ok(if has("avx2") && has("fma") {
            "x86_64-avx2".to_string()
        } else {
            "x86_64-sse4.2".to_string()
        })
    } else if triple.starts_with("aarch64") {
        Ok("aarch64-neon".to_string())
    } else {
        Err(format!(
            "optc cannot compile for {triple}: supported are x86_64 and aarch64 targets"
        ))
    }
}

/// A model to compile from `build.rs`.
#[derive(Clone, Debug)]
pub struct Build {
    model: Option<PathBuf>,
    target: Option<String>,
    /// Everything but the target (set from `TARGET` at compile time unless given).
    opts: Options,
    out_dir: Option<PathBuf>,
    cargo_metadata: bool,
}

impl Default for Build {
    fn default() -> Self {
        Build::new()
    }
}

/// What [`Build::try_compile`] wrote.
#[derive(Clone, Debug)]
pub struct Output {
    /// `OUT_DIR/lib<name>.a`.
    pub archive: PathBuf,
    /// `OUT_DIR/<name>.rs` (the bindings to `include!`).
    pub bindings: PathBuf,
    /// `OUT_DIR/<name>.h`.
    pub header: PathBuf,
    /// The optc target compiled for.
    pub target: String,
}

impl Build {
    /// Defaults: -O3, the crate's build target, `OUT_DIR`, cargo metadata printed.
    pub fn new() -> Build {
        Build {
            model: None,
            target: None,
            opts: Options {
                opt_level: 3,
                ..Options::default()
            },
            out_dir: None,
            cargo_metadata: true,
        }
    }

    /// The ONNX file (relative to the crate root when run by cargo).
    pub fn model(&mut self, path: impl AsRef<Path>) -> &mut Build {
        self.model = Some(path.as_ref().to_path_buf());
        self
    }

    /// The optc target (`x86_64-avx2`, ...); default: from cargo's `TARGET` and target
    /// features, or `OPTC_TARGET`.
    pub fn target(&mut self, target: &str) -> &mut Build {
        self.target = Some(target.to_string());
        self
    }

    /// Optimization level 0..=3 (default 3).
    pub fn opt_level(&mut self, level: u8) -> &mut Build {
        self.opts.opt_level = level;
        self
    }

    /// Largest Winograd output tile for 3x3 stride-1 convs: 4 (default), 2, or 0 (off).
    pub fn winograd(&mut self, max_tile: usize) -> &mut Build {
        self.opts.winograd = max_tile;
        self
    }

    /// Fix the shape of an input with dynamic dims.
    pub fn input_shape(&mut self, name: &str, dims: &[usize]) -> &mut Build {
        self.opts
            .input_shapes
            .insert(name.to_string(), dims.to_vec());
        self
    }

    /// One object for every sequence length from `min` to `max` (`optc::dynamic_length`):
    /// `dims` is the input's shape at the longest length and `axes` its dims that are the
    /// length; inputs the model names like them follow; one range per model (the last given holds). The generated bindings take the
    /// length as their last input and say where it is (`LENGTH_MAX`, `INPUT_LENGTH_AXES`).
    pub fn input_length_range(
        &mut self,
        name: &str,
        dims: &[usize],
        axes: &[usize],
        min: usize,
        max: usize,
    ) -> &mut Build {
        self.opts
            .input_shapes
            .insert(name.to_string(), dims.to_vec());
        let spec = self
            .opts
            .length
            .get_or_insert_with(|| optc::dynamic_length::LengthSpec {
                min,
                max,
                axes: Default::default(),
            });
        (spec.min, spec.max) = (min, max);
        spec.axes.insert(name.to_string(), axes.to_vec());
        self
    }

    /// Every compile option at once (the same [`Options`] as the JIT and the CLI: extra
    /// rules, disabled rules, ...). The target still comes from [`Build::target`], else from
    /// cargo; the options' `target` field is ignored.
    pub fn options(&mut self, opts: Options) -> &mut Build {
        self.opts = opts;
        self
    }

    /// Where to write the files (default: `OUT_DIR`).
    pub fn out_dir(&mut self, dir: impl AsRef<Path>) -> &mut Build {
        self.out_dir = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Print `cargo:` lines (default true).
    pub fn cargo_metadata(&mut self, yes: bool) -> &mut Build {
        self.cargo_metadata = yes;
        self
    }

    /// Like [`Build::try_compile`], but a failure prints the error and exits the build script
    /// with status 1 (cargo shows the message; no panic, no backtrace).
    pub fn compile(&self, name: &str) -> Output {
        match self.try_compile(name) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: optc-build: {e}");
                std::process::exit(1);
            }
        }
    }

    /// Compile the model as `name` (symbols `optc_<name>_*`, struct from the name in
    /// CamelCase), write `lib<name>.a`, `<name>.h` and `<name>.rs`, print cargo metadata.
    pub fn try_compile(&self, name: &str) -> Result<Output, Error> {
        let model = self.model.clone().ok_or_else(|| Error {
            model: format!("optc_build::Build(\"{name}\")"),
            msg: "no model given: call .model(\"path/to/model.onnx\")".into(),
        })?;
        let shown = model.display().to_string();
        let err = |msg: String| Error {
            model: shown.clone(),
            msg,
        };
        if self.cargo_metadata {
            println!("cargo:rerun-if-changed={}", model.display());
            println!("cargo:rerun-if-env-changed=OPTC_TARGET");
        }
        let target = match (&self.target, std::env::var("OPTC_TARGET")) {
            (Some(t), _) => t.clone(),
            (None, Ok(t)) if !t.is_empty() => t,
            _ => {
                let triple = std::env::var("TARGET")
                    .unwrap_or_else(|_| format!("{}-unknown-linux-gnu", std::env::consts::ARCH));
                let feats = std::env::var("CARGO_CFG_TARGET_FEATURE").unwrap_or_default();
                target_for(&triple, &feats).map_err(err)?
            }
        };
        let out_dir = match &self.out_dir {
            Some(d) => d.clone(),
            None => PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| {
                err("OUT_DIR is not set: run from a build script or call .out_dir()".into())
            })?),
        };
        let bytes =
            std::fs::read(&model).map_err(|e| err(format!("cannot read the model: {e}")))?;
        let sym = optc_codegen::aot::symbol_name(name);
        let source = model
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| shown.clone());
        let opts = Options {
            target: target.clone(),
            ..self.opts.clone()
        };
        let obj = ObjectOptions {
            name: sym.clone(),
            source,
            keep_clif: false,
            keep_asm: false,
        };
        let art = compile_object(&bytes, &opts, &obj).map_err(|e| err(e.to_string()))?;
        std::fs::create_dir_all(&out_dir)
            .map_err(|e| err(format!("cannot create {}: {e}", out_dir.display())))?;
        let out = Output {
            archive: out_dir.join(format!("lib{sym}.a")),
            bindings: out_dir.join(format!("{sym}.rs")),
            header: out_dir.join(format!("{sym}.h")),
            target,
        };
        let write = |p: &Path, b: &[u8]| {
            std::fs::write(p, b).map_err(|e| err(format!("cannot write {}: {e}", p.display())))
        };
        write(&out.archive, &art.staticlib())?;
        write(&out.bindings, art.rust().as_bytes())?;
        write(&out.header, art.header().as_bytes())?;
        if self.cargo_metadata {
            println!("cargo:rustc-link-search=native={}", out_dir.display());
            println!("cargo:rustc-link-lib=static={sym}");
            println!("cargo:rustc-link-lib=m");
        }
        Ok(out)
    }
}
