//! The compile options every command shares (`run`, `check`, `bench`, `explain` and
//! ahead-of-time `optc MODEL.onnx`), turned into the one `optc::Options`.

use clap::Args;
use optc::Options;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args, Clone, Debug)]
pub struct CompileArgs {
    /// The ONNX model.
    pub model: PathBuf,
    /// Optimization level 0-3 [default: 2 for run, check and bench; 3 for explain and
    /// ahead-of-time compiles].
    #[arg(short = 'O', value_parser = clap::value_parser!(u8).range(0..=3))]
    pub opt_level: Option<u8>,
    /// Target: native, x86_64-sse4.2, x86_64-avx2, x86_64-avx512, aarch64-neon (the last two
    /// ahead of time only, unless this machine runs them).
    #[arg(long, default_value = "native")]
    pub target: String,
    /// Fix a dynamic input shape, e.g. `--input-shape input_ids=1x128`. Repeatable.
    #[arg(long = "input-shape", value_name = "NAME=DIMS")]
    pub input_shapes: Vec<String>,
    /// Load extra rewrite rules (`.rules` syntax: `name: lhs => rhs`). Repeatable.
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// Do not run the rule NAME. Repeatable.
    #[arg(long = "disable-rule", value_name = "NAME")]
    pub disabled_rules: Vec<String>,
    /// Largest Winograd output tile for 3x3 stride-1 convs: 4 = F(4x4,3x3) or F(2x2,3x3),
    /// whichever needs fewer flops; 2 = F(2x2,3x3) only; 0 = direct convolution (the
    /// smallest rounding error).
    #[arg(long, default_value_t = 4, value_parser = winograd_tile)]
    pub winograd: usize,
}

fn winograd_tile(s: &str) -> Result<usize, String> {
    match s {
        "0" => Ok(0),
        "2" => Ok(2),
        "4" => Ok(4),
        _ => Err(format!("must be 0 (off), 2 or 4, not '{s}'")),
    }
}

impl CompileArgs {
    /// The optimization level asked for, else `default`.
    pub fn level_or(&self, default: u8) -> u8 {
        self.opt_level.unwrap_or(default)
    }

    /// The options these flags ask for, at `-O` `default_level` unless one is given.
    pub fn options(&self, default_level: u8) -> Result<Options, String> {
        let mut input_shapes = HashMap::new();
        for s in &self.input_shapes {
            let (name, dims) = s
                .rsplit_once('=')
                .ok_or_else(|| format!("--input-shape '{s}' must look like NAME=1x3x224x224"))?;
            let shape =
                optc_onnx::parse_shape(dims).map_err(|e| format!("--input-shape '{s}': {e}"))?;
            input_shapes.insert(name.to_string(), shape);
        }
        let mut extra_rules = vec![];
        for f in &self.rules {
            let text =
                std::fs::read_to_string(f).map_err(|e| format!("--rules {}: {e}", f.display()))?;
            extra_rules.push((f.display().to_string(), text));
        }
        Ok(Options {
            opt_level: self.level_or(default_level),
            target: self.target.clone(),
            input_shapes,
            extra_rules,
            disabled_rules: self.disabled_rules.clone(),
            winograd: self.winograd,
            ..Options::default()
        })
    }
}
