//! Shared test harness: run an ONNX model (made with the builder) in tract (oracle 1),
//! optc's reference interpreter (oracle 2) and optc's JIT, and compare.
#![allow(dead_code)]

use optc::{DType, Data, Tensor};
use optc_onnx::builder::ModelBuilder;

pub mod models;

pub const RTOL: f64 = 1e-4;
pub const ATOL: f64 = 1e-5;

/// Deterministic xorshift generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [lo, hi).
    pub fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn tensor(&mut self, shape: &[usize], lo: f32, hi: f32) -> Tensor {
        let n = shape.iter().product();
        Tensor::from_f32(shape.to_vec(), (0..n).map(|_| self.f32(lo, hi)).collect()).unwrap()
    }
    pub fn tensor_i64(&mut self, shape: &[usize], lo: i64, hi: i64) -> Tensor {
        let n = shape.iter().product();
        let span = (hi - lo) as u64;
        Tensor::from_i64(
            shape.to_vec(),
            (0..n).map(|_| lo + self.below(span) as i64).collect(),
        )
        .unwrap()
    }
    pub fn tensor_bool(&mut self, shape: &[usize]) -> Tensor {
        let n = shape.iter().product();
        Tensor::new(
            shape.to_vec(),
            Data::Bool((0..n).map(|_| self.below(2) == 1).collect()),
        )
        .unwrap()
    }
}

pub fn dims(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

fn fmt_diff(what: &str, got: &Tensor, want: &Tensor, rtol: f64, atol: f64) -> Option<String> {
    match optc::compare(got, want, rtol, atol) {
        Ok(d) if d.allclose => None,
        Ok(d) => Some(format!(
            "{what}: max abs {:.3e}, max rel {:.3e}\n got  {:?}\n want {:?}",
            d.max_abs, d.max_rel, got, want
        )),
        Err(e) => Some(format!("{what}: {e}")),
    }
}

/// Compare optc (JIT at every -O level, and the interpreter on the imported graph)
/// against tract on `inputs`. Panics with a readable report on mismatch.
pub fn check_with(label: &str, bytes: &[u8], inputs: &[Tensor], rtol: f64, atol: f64) {
    let want = optc_onnx::oracle::run_tract(bytes, inputs)
        .unwrap_or_else(|e| panic!("{label}: tract failed: {e}"));
    let opts = optc::Options::default();
    let graph = optc::import_bytes(bytes, &opts).unwrap_or_else(|e| panic!("{label}: import: {e}"));
    let interp = optc_ir::interp::run(&graph, inputs)
        .unwrap_or_else(|e| panic!("{label}: interpreter: {e}"));
    assert_eq!(interp.len(), want.len(), "{label}: output count");
    let mut errs = vec![];
    for (k, (g, w)) in interp.iter().zip(&want).enumerate() {
        if let Some(e) = fmt_diff(
            &format!("{label}: interpreter output {k}"),
            g,
            w,
            rtol,
            atol,
        ) {
            errs.push(e);
        }
    }
    for level in [0u8, 1, 2, 3] {
        let opts = optc::Options {
            opt_level: level,
            ..Default::default()
        };
        let mut m = optc::compile_bytes(bytes, &opts)
            .unwrap_or_else(|e| panic!("{label}: compile -O{level}: {e}"));
        let got = m
            .run(inputs)
            .unwrap_or_else(|e| panic!("{label}: run -O{level}: {e}"));
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            if let Some(e) = fmt_diff(&format!("{label}: -O{level} output {k}"), g, w, rtol, atol) {
                errs.push(e);
            }
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

pub fn check(label: &str, bytes: &[u8], inputs: &[Tensor]) {
    check_with(label, bytes, inputs, RTOL, ATOL)
}

/// A model with one node: inputs x0.. (given tensors; those listed in `consts` become
/// initializers instead), one output `y`.
pub struct OneNode {
    pub op: &'static str,
    pub opset: i64,
    pub attrs: Vec<(&'static str, optc_onnx::builder::Attr)>,
    pub outputs: usize,
}

pub fn one_node(
    op: &str,
    opset: i64,
    inputs: &[(&str, Tensor, bool)],
    attrs: Vec<(&str, optc_onnx::builder::Attr)>,
    n_outputs: usize,
) -> (Vec<u8>, Vec<Tensor>) {
    let mut b = ModelBuilder::new(opset);
    let mut names = vec![];
    let mut runtime = vec![];
    for (name, t, is_const) in inputs {
        if name.is_empty() {
            names.push("");
            continue;
        }
        if *is_const {
            b.initializer(name, t);
        } else {
            b.input(name, t.dtype(), &dims(t.shape()));
            runtime.push(t.clone());
        }
        names.push(name);
    }
    let outs: Vec<String> = (0..n_outputs).map(|i| format!("y{i}")).collect();
    let out_refs: Vec<&str> = outs.iter().map(|s| s.as_str()).collect();
    b.node(op, &names, &out_refs, attrs);
    for o in &outs {
        b.output(o);
    }
    (b.to_bytes(), runtime)
}

/// Build and check a one-node model. `inputs`: (name, tensor, is_initializer); an empty
/// name skips an optional input.
pub fn check_op(
    label: &str,
    op: &str,
    opset: i64,
    inputs: &[(&str, Tensor, bool)],
    attrs: Vec<(&str, optc_onnx::builder::Attr)>,
    n_outputs: usize,
) {
    let (bytes, rt) = one_node(op, opset, inputs, attrs, n_outputs);
    check(label, &bytes, &rt);
}

pub fn dtype_of(t: &Tensor) -> DType {
    t.dtype()
}
