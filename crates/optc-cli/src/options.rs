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
    /// Fix a dynamic input shape, e.g. `--input-shape input_ids=1x128`. Repeatable. Ahead of
    /// time, a dim may be a length range, `input_ids=1x1..512`: one object for every length
    /// (inputs whose dims the model names like it follow; the README's ahead-of-time section).
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
    /// Sparse kernels for constant weights with zeros (exact): `auto` where the cost model
    /// says they beat the dense kernels (below about 40% density), `off`, or `always` (any
    /// weight with a zero: to measure them).
    #[arg(long, default_value = "auto", value_parser = optc_ir::sparsity::SparseMode::parse)]
    pub sparse: optc_ir::sparsity::SparseMode,
    /// Lossy: quantize the contractions with constant weights (`int8`: int8 weights per
    /// output channel; dynamic activations for MatMul/Gemm, calibrated static ones for convs).
    /// Runs only when given, at any -O level; the output error is measured and reported.
    #[arg(long, value_name = "KIND", value_parser = optc::compress::Quantization::parse)]
    pub quantize: Option<optc::compress::Quantization>,
    /// Lossy: magnitude pruning, the fraction of each layer's weights smallest in magnitude
    /// set to zero (`0.9`), or every weight below one global magnitude (`threshold=0.01`);
    /// several, comma-separated, are alternatives the budget picks from. Run by the sparse
    /// kernels where they are faster. Like --quantize: measured and reported.
    #[arg(long, value_name = "AMOUNTS", value_delimiter = ',', value_parser = optc::compress::prune::PruneAmount::parse)]
    pub prune: Vec<optc::compress::prune::PruneAmount>,
    /// Lossy: structured channel pruning, the fraction of each dependency group's channels
    /// with the smallest L1 norm removed from every layer that writes, carries or reads them
    /// (through activations, pools, depthwise and grouped convs, residual adds, concats and a
    /// flatten);
    /// the tensors shrink.
    #[arg(long = "prune-channels", value_name = "FRACTIONS", value_delimiter = ',', value_parser = optc::compress::prune::parse_fraction)]
    pub prune_channels: Vec<f64>,
    /// Lossy: low-rank factorization of the weights by truncated SVD: `energy=0.95` (the
    /// smallest rank keeping that share of the squared singular values), `rank=N`, or `auto`
    /// (energies 0.99, 0.95, 0.9, 0.8 as alternatives the budget picks from). Only ranks
    /// below the break-even that the cost model prices faster.
    #[arg(long = "low-rank", value_name = "HOW", value_parser = optc::compress::lowrank::LowRank::parse)]
    pub low_rank: Option<optc::compress::lowrank::LowRank>,
    /// Calibration inputs: `input_<i>.pb`, `input_<i>_<k>.pb`, `.npy` files or
    /// `test_data_set_<k>/` directories. Repeatable. Without it, seeded random inputs.
    #[arg(long, value_name = "DIR")]
    pub calibrate: Vec<PathBuf>,
    /// Inputs the error is measured on (default: the calibration inputs). Repeatable.
    #[arg(long = "eval", value_name = "DIR")]
    pub eval: Vec<PathBuf>,
    /// Integer class labels (.npy) of the evaluation rows: reports top-1 accuracy.
    #[arg(long, value_name = "FILE")]
    pub labels: Option<PathBuf>,
    /// Error budget of lossy rewrites, e.g. `cos=0.99,top1=0.995,acc=0.005,abs=0.1,rel=0.05`
    /// (min cosine, min top-1 agreement (or max disagreement when below 0.5), max top-1
    /// accuracy drop with --labels, max abs, max rel); `output=NAME` (repeatable) limits only
    /// the named outputs. Over it, layers stay f32; if the measured model is still over, the
    /// compile fails.
    #[arg(long = "max-error", value_name = "BUDGET", value_parser = optc::compress::Budget::parse)]
    pub max_error: Option<optc::compress::Budget>,
    /// Print the whole compression report (md or json) on stderr, or into --report-file.
    #[arg(long, value_parser = ["md", "json"])]
    pub report: Option<String>,
    /// Write the compression report here instead of stderr.
    #[arg(long = "report-file", value_name = "FILE", requires = "report")]
    pub report_file: Option<PathBuf>,
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
        let mut length: Option<optc::dynamic_length::LengthSpec> = None;
        for s in &self.input_shapes {
            let (name, dims) = s
                .rsplit_once('=')
                .ok_or_else(|| format!("--input-shape '{s}' must look like NAME=1x3x224x224"))?;
            let optc::dynamic_length::RangedShape {
                dims: shape,
                axes,
                range,
            } = optc::dynamic_length::parse_ranged_shape(dims)
                .map_err(|e| format!("--input-shape '{s}': {e}"))?;
            if let Some((min, max)) = range {
                let spec = length.get_or_insert_with(|| optc::dynamic_length::LengthSpec {
                    min,
                    max,
                    axes: HashMap::new(),
                });
                if (spec.min, spec.max) != (min, max) {
                    return Err(format!(
                        "--input-shape '{s}': a model has one length range; another input's is {}..{}",
                        spec.min, spec.max
                    ));
                }
                spec.axes.insert(name.to_string(), axes);
            }
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
            length,
            extra_rules,
            disabled_rules: self.disabled_rules.clone(),
            winograd: self.winograd,
            sparse: self.sparse,
            compress: optc::compress::CompressOptions {
                quantize: self.quantize,
                prune: self.prune.clone(),
                low_rank: self.low_rank.clone(),
                prune_channels: self.prune_channels.clone(),
                calibrate: self.calibrate.clone(),
                eval: self.eval.clone(),
                labels: self.labels.clone(),
                max_error: self.max_error.clone().unwrap_or_default(),
                measure_latency: true,
                ..Default::default()
            },
            ..Options::default()
        })
    }

    /// Show what the lossy passes did: the summary on stderr, or the whole report as asked.
    pub fn show_compression(
        &self,
        report: Option<&optc::compress::CompressionReport>,
    ) -> Result<(), String> {
        let Some(r) = report else { return Ok(()) };
        let text = match self.report.as_deref() {
            Some("md") => r.markdown(),
            Some("json") => r.json() + "\n",
            _ => {
                eprint!("{}", r.summary());
                return Ok(());
            }
        };
        match &self.report_file {
            Some(p) => {
                std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
            }
            None => {
                eprint!("{text}");
                Ok(())
            }
        }
    }

    /// An error of a compile; an over-budget compile shows its report first.
    pub fn compile_error(&self, e: optc::Error) -> String {
        if let optc::Error::OverBudget(r) = &e {
            if self.report.is_some() {
                let _ = self.show_compression(Some(r));
            }
        }
        format!("{}: {e}", self.model.display())
    }
}
