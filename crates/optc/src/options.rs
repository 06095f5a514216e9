//! Compile options: the one options type of the JIT, ahead-of-time compiles, the CLI and
//! `optc-build`.

use optc_ir::Tensor;
use std::collections::HashMap;

/// Compilation options.
#[derive(Clone, Debug)]
pub struct Options {
    /// Optimization level 0..=3: 0 none, 1 simplify + fold, 2 every pass by level in
    /// phases, 3 equality saturation of all exact rules with cost-based extraction.
    pub opt_level: u8,
    /// Target name: `native`, `x86_64-sse4.2`, `x86_64-avx2`, `x86_64-avx512`, `aarch64-neon`
    /// (the last two ahead of time only, unless the host runs them).
    pub target: String,
    /// Shapes for inputs with dynamic dims, by input name.
    pub input_shapes: HashMap<String, Vec<usize>>,
    /// Extra rule files (`(origin, text)`, `.rules` syntax) run as a level-1 pass `user`.
    pub extra_rules: Vec<(String, String)>,
    /// Rules (by name) that must not run.
    pub disabled_rules: Vec<String>,
    /// Threads the compiled model uses: 0 = all cores (default), 1 = single-threaded.
    pub threads: usize,
    /// Input values known at compile time, by name: bound as constants only where a
    /// node needs a constant (see `optc_onnx::ImportOptions::input_values`).
    pub input_values: HashMap<String, Tensor>,
    /// Largest Winograd output tile for 3x3 stride-1 convs: 4 (default: F(4x4, 3x3) or
    /// F(2x2, 3x3), whichever needs fewer flops), 2 (F(2x2, 3x3) only) or 0 (direct
    /// convolution, the smallest rounding error). See `optc_codegen::Target::with_winograd`.
    pub winograd: usize,
    /// When constant weights with zeros take the sparse kernels (exact): `Auto` (where the
    /// cost model says they pay), `Off`, `Always`.
    pub sparse: optc_ir::sparsity::SparseMode,
    /// Lossy compression (quantization, with calibration, budget and report). Nothing lossy
    /// runs unless asked for here, whatever the `opt_level`.
    pub compress: crate::compress::CompressOptions,
    /// How many variants a `CompiledModel` keeps: one per distinct set of input shapes (and
    /// values of inputs bound at compile time) it ran with; the least recently used goes
    /// first. At least 1; default 8.
    pub shape_cache: usize,
    /// Compile for per-node profiling (`optc bench --profile`, [`crate::profile`]): a call
    /// to the runtime before each kernel. JIT only.
    pub profile: bool,
    /// One ahead-of-time object for every length in a range (`--input-shape
    /// input_ids=1x1..512`): which input dims are the length and its range; the shapes in
    /// `input_shapes` are the longest length's. Ahead-of-time compiles only
    /// ([`crate::dynamic_length`]).
    pub length: Option<crate::dynamic_length::LengthSpec>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            opt_level: 2,
            target: "native".into(),
            input_shapes: HashMap::new(),
            extra_rules: vec![],
            disabled_rules: vec![],
            threads: 0,
            input_values: HashMap::new(),
            winograd: 4,
            sparse: Default::default(),
            compress: Default::default(),
            shape_cache: 8,
            profile: false,
            length: None,
        }
    }
}
