//! `optc MODEL.onnx [--target T] [-O N] [-o OUT] [--emit LIST] [-v]`: ahead-of-time
//! compilation to an object file and the files around it.

use crate::options::CompileArgs;
use clap::Parser;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

/// Every `--emit` kind: (name, file extension).
const KINDS: [(&str, &str); 8] = [
    ("obj", "o"),
    ("staticlib", "a"),
    ("header", "h"),
    ("rust", "rs"),
    ("asm", "s"),
    ("clif", "clif"),
    ("ir", "ir"),
    ("dot", "dot"),
];

#[derive(Parser, Debug)]
#[command(
    name = "optc",
    version,
    about = "Compile an ONNX model ahead of time (default: MODEL.o and MODEL.h next to the model)",
    after_help = "Other commands: optc run|check|bench|explain ... (see `optc help`)."
)]
pub struct CompileCli {
    #[command(flatten)]
    c: CompileArgs,
    /// Output file. With one `--emit` kind it is that file; with several it is the object
    /// (or the first kind) and the others take its stem with their own extension.
    #[arg(short = 'o', value_name = "OUT")]
    output: Option<PathBuf>,
    /// What to write, comma-separated: obj, staticlib, header, rust, asm, clif, ir, dot
    /// [default: obj,header].
    #[arg(long, value_delimiter = ',', value_parser = ["obj", "staticlib", "header", "rust", "asm", "clif", "ir", "dot"])]
    emit: Vec<String>,
    /// Symbol name of the model (`optc_<name>_run`) [default: the output's file stem].
    #[arg(long)]
    name: Option<String>,
    /// Report compile times, sizes and memory (the run's needs, the compile's peak).
    #[arg(short = 'v', long)]
    verbose: bool,
}

/// Parse `args` (including the program name) and compile.
pub fn main_compile(args: Vec<String>) -> ExitCode {
    let cli = match CompileCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

fn run(cli: &CompileCli) -> Result<(), String> {
    let t0 = Instant::now();
    let mut kinds: Vec<&str> = Vec::new();
    for k in &cli.emit {
        if !kinds.contains(&k.as_str()) {
            kinds.push(k);
        }
    }
    if kinds.is_empty() {
        kinds = vec!["obj", "header"];
    }
    fn ext(k: &str) -> &'static str {
        KINDS
            .iter()
            .find(|x| x.0 == k)
            .map(|x| x.1)
            .unwrap_or("out")
    }
    let primary = if kinds.contains(&"obj") {
        "obj"
    } else {
        kinds[0]
    };
    let base: PathBuf = match &cli.output {
        Some(o) => o.clone(),
        None => cli.c.model.with_extension(ext(primary)),
    };
    let path_of = |k: &str| -> PathBuf {
        // `-o` names the primary output when it is the only kind or has its extension
        // (`-o model.o`); otherwise every kind gets `-o`'s stem with its own extension.
        let own_ext = base.extension().is_some_and(|e| e == ext(k));
        if k == primary && (kinds.len() == 1 || own_ext) {
            return base.clone();
        }
        if k == "staticlib" {
            let stem = base
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            return base.with_file_name(format!("lib{stem}.a"));
        }
        base.with_extension(ext(k))
    };
    let stem = |p: &Path| {
        p.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    };
    let name = cli.name.clone().unwrap_or_else(|| stem(&base));
    let opts = cli.c.options(3)?;
    let bytes = std::fs::read(&cli.c.model)
        .map_err(|e| format!("cannot read {}: {e}", cli.c.model.display()))?;
    let source = cli
        .c
        .model
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let obj = optc::ObjectOptions {
        name,
        source,
        keep_clif: kinds.contains(&"clif"),
        keep_asm: kinds.contains(&"asm"),
    };
    // Errors name the path as given on the command line.
    let art = optc::compile_object(&bytes, &opts, &obj).map_err(|e| cli.c.compile_error(e))?;
    crate::show_warnings(&art.report);
    cli.c.show_compression(art.report.compression.as_ref())?;
    let t_write = Instant::now();
    for k in &kinds {
        let p = path_of(k);
        let data: Vec<u8> = match *k {
            "obj" => art.object().to_vec(),
            "staticlib" => art.staticlib(),
            "header" => art.header().into_bytes(),
            "rust" => art.rust().into_bytes(),
            "asm" => art.asm().as_bytes().to_vec(),
            "clif" => art.clif().as_bytes().to_vec(),
            "ir" => art.ir().into_bytes(),
            "dot" => art.dot().into_bytes(),
            other => return Err(format!("unknown --emit kind {other}")),
        };
        std::fs::write(&p, &data).map_err(|e| format!("cannot write {}: {e}", p.display()))?;
        println!("wrote {} ({k}, {} bytes)", p.display(), data.len());
    }
    if cli.verbose {
        let t = &art.report.timings;
        eprintln!(
            "compile time: import {:.3} s, optimize {:.3} s, codegen {:.3} s, write {:.3} s, total {:.3} s",
            t.import.as_secs_f64(),
            t.optimize.as_secs_f64(),
            t.codegen.as_secs_f64(),
            t_write.elapsed().as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
        eprintln!(
            "model optc_{}: target {} ({}), {} kernels, workspace {} bytes, object {} bytes",
            art.model.name,
            art.model.target,
            art.model.triple,
            art.model.nodes.len(),
            art.model.workspace,
            art.model.object.len()
        );
        eprintln!(
            "memory: the object's run needs its workspace ({} bytes) and the caller's input and \
             output buffers, nothing else; this compile peaked at {} resident",
            art.model.workspace,
            peak_resident().unwrap_or_else(|| "an unknown amount".into())
        );
    }
    Ok(())
}

/// The process's peak resident memory (Linux: `VmHWM` of /proc/self/status).
fn peak_resident() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(format!("{:.1} MiB", kib as f64 / 1024.0))
}
