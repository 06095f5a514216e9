#![allow(dead_code)]
//! Shared helpers: deterministic inputs, JIT vs interpreter comparison (on the host target,
//! or on several targets and thread counts), windows, and fused steps by name.

use optc_codegen::{compile_jit, JitModel, Target};
use optc_ir::{
    interp, BinaryOp, DType, Data, FusedStep, Graph, Tensor, TensorType, UnaryOp, Value, Window,
};

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    /// Uniform in [lo, hi).
    pub fn f32(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }
    pub fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % ((hi - lo) as u64)) as i64
    }
}

pub fn rand_tensor(rng: &mut Rng, ty: &TensorType) -> Tensor {
    let n = ty.numel();
    let data = match ty.dtype {
        DType::F32 => Data::F32((0..n).map(|_| rng.f32(-2.0, 2.0)).collect()),
        DType::I64 => Data::I64((0..n).map(|_| rng.int(-50, 50)).collect()),
        DType::I32 => Data::I32((0..n).map(|_| rng.int(-50, 50) as i32).collect()),
        DType::Bool => Data::Bool((0..n).map(|_| rng.next_u64().is_multiple_of(2)).collect()),
        DType::U8 => Data::U8((0..n).map(|_| rng.int(0, 256) as u8).collect()),
        DType::I8 => Data::I8((0..n).map(|_| rng.int(-128, 128) as i8).collect()),
        DType::F64 => Data::F64(
            (0..n)
                .map(|_| {
                    let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
                    4.0 * u - 2.0
                })
                .collect(),
        ),
    };
    Tensor::new(ty.shape.clone(), data).unwrap()
}

pub fn f32t(rng: &mut Rng, shape: &[usize]) -> Tensor {
    rand_tensor(rng, &TensorType::f32(shape))
}

#[derive(Clone, Copy)]
pub struct Tol {
    pub atol: f64,
    pub rtol: f64,
}
pub const EXACT: Tol = Tol {
    atol: 0.0,
    rtol: 0.0,
};
pub const ARITH: Tol = Tol {
    atol: 1e-5,
    rtol: 1e-5,
};
pub const TRANS: Tol = Tol {
    atol: 1e-5,
    rtol: 1e-4,
};

pub fn compare(name: &str, got: &Tensor, want: &Tensor, tol: Tol) {
    assert_eq!(got.dtype(), want.dtype(), "{name}: dtype");
    assert_eq!(got.shape(), want.shape(), "{name}: shape");
    if got.dtype() == DType::F64 {
        // Exact, NaN matching NaN.
        let (g, w) = (got.to_f64_vec(), want.to_f64_vec());
        for (i, (a, b)) in g.iter().zip(&w).enumerate() {
            assert!(
                a == b || (a.is_nan() && b.is_nan()),
                "{name}: element {i} got {a} want {b}"
            );
        }
        return;
    }
    if got.dtype() != DType::F32 {
        assert_eq!(got.data(), want.data(), "{name}: data differs");
        return;
    }
    let g = got.to_f64_vec();
    let w = want.to_f64_vec();
    for (i, (&a, &b)) in g.iter().zip(&w).enumerate() {
        if a.is_nan() && b.is_nan() {
            continue;
        }
        if a == b {
            continue;
        }
        let d = (a - b).abs();
        assert!(
            d <= tol.atol + tol.rtol * b.abs(),
            "{name}: element {i} got {a} want {b} (|d| = {d})"
        );
    }
}

pub fn compile(g: &Graph) -> JitModel {
    compile_jit(g, &Target::host().unwrap()).unwrap_or_else(|e| panic!("compile: {e}"))
}

pub fn run_jit(m: &JitModel, inputs: &[Tensor]) -> Result<Vec<Tensor>, optc_codegen::CodegenError> {
    let mut outs: Vec<Tensor> = m
        .output_types()
        .iter()
        .map(|t| Tensor::zeros(t.dtype, t.shape.clone()))
        .collect();
    let refs: Vec<&Tensor> = inputs.iter().collect();
    let mut ws = m.new_workspace();
    m.run(&refs, &mut outs, &mut ws)?;
    Ok(outs)
}

/// Compile `g`, run it and the interpreter on `inputs`, compare every output.
pub fn check_with(g: &Graph, inputs: &[Tensor], tol: Tol, target: &Target) {
    let want = interp::run(g, inputs).unwrap_or_else(|e| panic!("interp: {e}"));
    let m = compile_jit(g, target).unwrap_or_else(|e| panic!("compile: {e}"));
    let got = run_jit(&m, inputs).unwrap_or_else(|e| panic!("run: {e}"));
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        compare(&format!("output {i}"), a, b, tol);
    }
}

/// [`check_with`] on every target of `targets`, each run at 1 and 2 threads.
pub fn check_targets(g: &Graph, inputs: &[Tensor], tol: Tol, targets: &[Target]) {
    let want = interp::run(g, inputs).unwrap_or_else(|e| panic!("interp: {e}"));
    for t in targets {
        let mut m = compile_jit(g, t).unwrap_or_else(|e| panic!("compile {}: {e}", t.name()));
        for threads in [1, 2] {
            m.set_threads(threads);
            let got = run_jit(&m, inputs).unwrap_or_else(|e| panic!("run: {e}"));
            for (i, (a, b)) in got.iter().zip(&want).enumerate() {
                compare(
                    &format!("{} threads={threads} output {i}", t.name()),
                    a,
                    b,
                    tol,
                );
            }
        }
    }
}

/// The named x86-64 targets (`x86_64-avx2`, `x86_64-sse4.2`) this host can run, with
/// Winograd convolution limited to `max_tile` (0 = direct convolution).
pub fn runnable_targets(max_tile: usize) -> Vec<Target> {
    let mut v = vec![];
    // The AVX-512 microkernels where the host runs them (the emulator checks them elsewhere).
    #[cfg(target_arch = "x86_64")]
    let avx512 = std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512vl")
        && std::is_x86_feature_detected!("avx512dq");
    #[cfg(not(target_arch = "x86_64"))]
    let avx512 = false;
    let names: &[&str] = if avx512 {
        &["x86_64-avx512", "x86_64-avx2", "x86_64-sse4.2"]
    } else {
        &["x86_64-avx2", "x86_64-sse4.2"]
    };
    for &name in names {
        if let Ok(t) = Target::parse(name).and_then(|t| t.with_winograd(max_tile)) {
            let mut g = Graph::new();
            let x = g.add_input("x", f(&[1]));
            g.add_output("y", x);
            if compile_jit(&g, &t).is_ok() {
                v.push(t);
            }
        }
    }
    v
}

pub fn check(g: &Graph, inputs: &[Tensor], tol: Tol) {
    check_with(g, inputs, tol, &Target::host().unwrap());
}

/// Random inputs for every graph input.
pub fn inputs_for(g: &Graph, seed: u64) -> Vec<Tensor> {
    let mut rng = Rng::new(seed);
    g.input_types()
        .iter()
        .map(|t| rand_tensor(&mut rng, t))
        .collect()
}

/// Build a one-node graph with inputs of the given types and check it.
pub fn check_op(op: optc_ir::Op, ins: &[TensorType], tol: Tol, seed: u64) {
    let mut g = Graph::new();
    let vs: Vec<_> = ins
        .iter()
        .enumerate()
        .map(|(i, t)| g.add_input(&format!("x{i}"), t.clone()))
        .collect();
    let outs = g
        .add_node("n", op.clone(), &vs)
        .unwrap_or_else(|e| panic!("{op:?}: {e}"));
    for (i, o) in outs.iter().enumerate() {
        g.add_output(&format!("y{i}"), *o);
    }
    let inputs = inputs_for(&g, seed);
    check(&g, &inputs, tol);
}

pub fn f(shape: &[usize]) -> TensorType {
    TensorType::f32(shape)
}
pub fn ty(dt: DType, shape: &[usize]) -> TensorType {
    TensorType::new(dt, shape.to_vec())
}

/// A window (no ceil mode).
pub fn window(kernel: &[usize], strides: &[usize], pads: &[usize], dilations: &[usize]) -> Window {
    Window {
        kernel: kernel.to_vec(),
        strides: strides.to_vec(),
        pads: pads.to_vec(),
        dilations: dilations.to_vec(),
        ceil_mode: false,
    }
}

/// A 2-D `k x k` window with stride `s` and padding `p` on every side.
pub fn square_window(k: usize, s: usize, p: usize) -> Window {
    window(&[k, k], &[s, s], &[p; 4], &[1, 1])
}

/// Fused steps by name, appending the inputs they read to `ins`: "relu", "relu6",
/// "sigmoid", "hardswish", "silu", "res" (adds a graph input of type `out`, on the right unless `res_swap`) and
/// "bias" (adds a constant of shape `bias`).
pub fn fused_steps(
    g: &mut Graph,
    ins: &mut Vec<Value>,
    rng: &mut Rng,
    names: &[&str],
    out: &TensorType,
    bias: &[usize],
    res_swap: bool,
) -> Vec<FusedStep> {
    fn add(ins: &mut Vec<Value>, v: Value, swap: bool) -> FusedStep {
        ins.push(v);
        FusedStep::Binary {
            op: BinaryOp::Add,
            input: ins.len() - 1,
            swap,
        }
    }
    names
        .iter()
        .map(|name| match *name {
            "relu" => FusedStep::Unary(UnaryOp::Relu),
            "relu6" => FusedStep::Unary(UnaryOp::Clip { min: 0.0, max: 6.0 }),
            "sigmoid" => FusedStep::Unary(UnaryOp::Sigmoid),
            "hardswish" => FusedStep::Unary(UnaryOp::HardSwish),
            "silu" => FusedStep::Unary(UnaryOp::Silu),
            "gelu" => FusedStep::Unary(UnaryOp::Gelu),
            "res" => {
                let r = g.add_input("r", out.clone());
                add(ins, r, res_swap)
            }
            "bias" => {
                let b = g.add_const("step_bias", f32t(rng, bias));
                add(ins, b, false)
            }
            other => panic!("unknown fused step {other:?}"),
        })
        .collect()
}
