//! ONNX LSTM, GRU and RNN, unrolled by the importer (crates/optc-onnx/src/import/
//! recurrent.rs), against two oracles:
//! - tract, where tract implements the case (forward, and bidirectional in layout 0, with
//!   the default activations, no clip, no input_forget, full-length sequences: tract
//!   ignores `direction`, the activation attributes, `clip` and `input_forget`);
//! - everywhere, a plain-Rust reference written here from the spec's formulas, one
//!   sequence at a time (itself checked against tract on the cases tract implements).
//!
//! Each case runs through optc's interpreter on the imported graph and the JIT at -O0..-O3.

mod common;

use common::{check_with, dims, Rng};
use optc::{Data, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};

const RTOL: f64 = 1e-4;
const ATOL: f64 = 1e-5;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Rnn,
    Gru,
    Lstm,
}

impl Kind {
    fn op(self) -> &'static str {
        match self {
            Kind::Rnn => "RNN",
            Kind::Gru => "GRU",
            Kind::Lstm => "LSTM",
        }
    }
    fn gates(self) -> usize {
        match self {
            Kind::Rnn => 1,
            Kind::Gru => 3,
            Kind::Lstm => 4,
        }
    }
    fn default_activations(self) -> Vec<Act> {
        match self {
            Kind::Rnn => vec![Act::Tanh],
            Kind::Gru => vec![Act::Sigmoid, Act::Tanh],
            Kind::Lstm => vec![Act::Sigmoid, Act::Tanh, Act::Tanh],
        }
    }
}

/// An activation as the reference computes it (parameters resolved by the test).
#[derive(Clone, Copy, Debug)]
enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f32, f32),
    LeakyRelu(f32),
    ThresholdedRelu(f32),
    ScaledTanh(f32, f32),
    HardSigmoid(f32, f32),
    Elu(f32),
    Softsign,
    Softplus,
}

impl Act {
    fn apply(self, x: f32) -> f32 {
        match self {
            Act::Relu => x.max(0.0),
            Act::Tanh => x.tanh(),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Affine(a, b) => a * x + b,
            Act::LeakyRelu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * x
                }
            }
            Act::ThresholdedRelu(a) => {
                if x >= a {
                    x
                } else {
                    0.0
                }
            }
            Act::ScaledTanh(a, b) => a * (b * x).tanh(),
            Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Act::Elu(a) => {
                if x >= 0.0 {
                    x
                } else {
                    a * (x.exp() - 1.0)
                }
            }
            Act::Softsign => x / (1.0 + x.abs()),
            Act::Softplus => (x.exp() + 1.0).ln(),
        }
    }
}

/// The `activations`, `activation_alpha` and `activation_beta` attributes, and the
/// activations they mean (every direction's).
type Activations = (Vec<&'static str>, Vec<f32>, Vec<f32>, Vec<Act>);

/// One recurrent node and its data.
#[derive(Clone)]
struct Case {
    kind: Kind,
    direction: &'static str,
    layout: i64,
    steps: usize,
    batch: usize,
    input: usize,
    hidden: usize,
    bias: bool,
    initial_h: bool,
    initial_c: bool,
    peepholes: bool,
    /// `sequence_lens` (an initializer).
    lengths: Option<Vec<i32>>,
    clip: Option<f32>,
    input_forget: bool,
    linear_before_reset: bool,
    /// `activations`, `activation_alpha`, `activation_beta` attributes and what they mean.
    activations: Option<Activations>,
    /// Which of Y, Y_h, Y_c the node produces.
    outputs: [bool; 3],
    seed: u64,
}

fn case(kind: Kind) -> Case {
    Case {
        kind,
        direction: "forward",
        layout: 0,
        steps: 4,
        batch: 2,
        input: 3,
        hidden: 5,
        bias: true,
        initial_h: true,
        initial_c: kind == Kind::Lstm,
        peepholes: false,
        lengths: None,
        clip: None,
        input_forget: false,
        linear_before_reset: false,
        activations: None,
        outputs: [true, true, kind == Kind::Lstm],
        seed: 1,
    }
}

/// The tensors of a case.
struct Tensors {
    x: Tensor,
    w: Tensor,
    r: Tensor,
    b: Option<Tensor>,
    h0: Option<Tensor>,
    c0: Option<Tensor>,
    p: Option<Tensor>,
}

impl Case {
    fn directions(&self) -> usize {
        if self.direction == "bidirectional" {
            2
        } else {
            1
        }
    }

    fn state_shape(&self) -> Vec<usize> {
        if self.layout == 1 {
            vec![self.batch, self.directions(), self.hidden]
        } else {
            vec![self.directions(), self.batch, self.hidden]
        }
    }

    fn data(&self) -> Tensors {
        let mut r = Rng::new(self.seed);
        let (d, g, h) = (self.directions(), self.kind.gates(), self.hidden);
        let x_shape = if self.layout == 1 {
            vec![self.batch, self.steps, self.input]
        } else {
            vec![self.steps, self.batch, self.input]
        };
        Tensors {
            x: r.tensor(&x_shape, -1.5, 1.5),
            w: r.tensor(&[d, g * h, self.input], -0.8, 0.8),
            r: r.tensor(&[d, g * h, h], -0.8, 0.8),
            b: self.bias.then(|| r.tensor(&[d, 2 * g * h], -0.5, 0.5)),
            h0: self
                .initial_h
                .then(|| r.tensor(&self.state_shape(), -1.0, 1.0)),
            c0: self
                .initial_c
                .then(|| r.tensor(&self.state_shape(), -1.0, 1.0)),
            p: self.peepholes.then(|| r.tensor(&[d, 3 * h], -0.7, 0.7)),
        }
    }

    /// The ONNX model (W, R, B, P and sequence_lens initializers; X, initial_h and
    /// initial_c graph inputs) and its run-time inputs.
    fn model(&self, data: &Tensors) -> (Vec<u8>, Vec<Tensor>) {
        let mut m = ModelBuilder::new(14);
        let mut runtime = vec![data.x.clone()];
        m.input("x", optc::DType::F32, &dims(data.x.shape()));
        m.initializer("w", &data.w).initializer("r", &data.r);
        let mut ins = vec!["x", "w", "r", "", "", "", "", ""];
        if let Some(b) = &data.b {
            m.initializer("b", b);
            ins[3] = "b";
        }
        if let Some(l) = &self.lengths {
            let t = Tensor::new(vec![l.len()], Data::I32(l.clone())).unwrap();
            m.initializer("lens", &t);
            ins[4] = "lens";
        }
        if let Some(h0) = &data.h0 {
            m.input("h0", optc::DType::F32, &dims(h0.shape()));
            runtime.push(h0.clone());
            ins[5] = "h0";
        }
        if let Some(c0) = &data.c0 {
            m.input("c0", optc::DType::F32, &dims(c0.shape()));
            runtime.push(c0.clone());
            ins[6] = "c0";
        }
        if let Some(p) = &data.p {
            m.initializer("p", p);
            ins[7] = "p";
        }
        while ins.last() == Some(&"") {
            ins.pop();
        }
        let names = ["y", "y_h", "y_c"];
        let mut outs: Vec<&str> = (0..3)
            .map(|k| if self.outputs[k] { names[k] } else { "" })
            .collect();
        while outs.last() == Some(&"") {
            outs.pop();
        }
        let mut attrs = vec![
            ("hidden_size", Attr::Int(self.hidden as i64)),
            ("direction", Attr::Str(self.direction.into())),
        ];
        if self.layout != 0 {
            attrs.push(("layout", Attr::Int(self.layout)));
        }
        if let Some(c) = self.clip {
            attrs.push(("clip", Attr::Float(c)));
        }
        if self.input_forget {
            attrs.push(("input_forget", Attr::Int(1)));
        }
        if self.linear_before_reset {
            attrs.push(("linear_before_reset", Attr::Int(1)));
        }
        if let Some((names, alphas, betas, _)) = &self.activations {
            attrs.push((
                "activations",
                Attr::Strs(names.iter().map(|s| s.to_string()).collect()),
            ));
            if !alphas.is_empty() {
                attrs.push(("activation_alpha", Attr::Floats(alphas.clone())));
            }
            if !betas.is_empty() {
                attrs.push(("activation_beta", Attr::Floats(betas.clone())));
            }
        }
        m.node_named("rec", self.kind.op(), &ins, &outs, attrs);
        for (name, wanted) in names.iter().zip(self.outputs) {
            if wanted {
                m.output(name);
            }
        }
        (m.to_bytes(), runtime)
    }

    /// The spec's formulas, one batch entry and direction at a time. Returns the requested
    /// outputs in the op's layout.
    fn reference(&self, data: &Tensors) -> Vec<Tensor> {
        let (t_len, n, i_len, h) = (self.steps, self.batch, self.input, self.hidden);
        let (dirs, g) = (self.directions(), self.kind.gates());
        let acts: Vec<Act> = match &self.activations {
            Some((_, _, _, acts)) => acts.clone(),
            None => (0..dirs)
                .flat_map(|_| self.kind.default_activations())
                .collect(),
        };
        let per_dir = self.kind.default_activations().len();
        let f32s = |t: &Tensor| t.to_f64_vec().iter().map(|&v| v as f32).collect::<Vec<_>>();
        let x = f32s(&data.x);
        let w = f32s(&data.w);
        let r = f32s(&data.r);
        let b = data.b.as_ref().map(f32s);
        let h0 = data.h0.as_ref().map(f32s);
        let c0 = data.c0.as_ref().map(f32s);
        let p = data.p.as_ref().map(f32s);
        let lf = self.layout == 1;
        let x_at = |t: usize, bi: usize, k: usize| {
            if lf {
                x[(bi * t_len + t) * i_len + k]
            } else {
                x[(t * n + bi) * i_len + k]
            }
        };
        let state_at = |s: &Vec<f32>, d: usize, bi: usize, j: usize| {
            if lf {
                s[(bi * dirs + d) * h + j]
            } else {
                s[(d * n + bi) * h + j]
            }
        };
        let clip = |v: f32| match self.clip {
            Some(c) => v.clamp(-c, c),
            None => v,
        };
        // y[t][d][b][j], last h and c [d][b][j]
        let mut y = vec![0f32; t_len * dirs * n * h];
        let mut yh = vec![0f32; dirs * n * h];
        let mut yc = vec![0f32; dirs * n * h];
        for d in 0..dirs {
            let a = &acts[d * per_dir..(d + 1) * per_dir];
            // x . W[gate row] + Wb ; h . R[gate row] + Rb
            let wrow = |row: usize, xt: &dyn Fn(usize) -> f32| -> f32 {
                let mut s = 0f32;
                for k in 0..i_len {
                    s += w[(d * g * h + row) * i_len + k] * xt(k);
                }
                s + b.as_ref().map_or(0.0, |b| b[d * 2 * g * h + row])
            };
            let rrow = |row: usize, hv: &[f32]| -> f32 {
                let mut s = 0f32;
                for k in 0..h {
                    s += r[(d * g * h + row) * h + k] * hv[k];
                }
                s + b.as_ref().map_or(0.0, |b| b[d * 2 * g * h + g * h + row])
            };
            for bi in 0..n {
                let len = self.lengths.as_ref().map_or(t_len, |l| l[bi] as usize);
                let mut hs: Vec<f32> = (0..h)
                    .map(|j| h0.as_ref().map_or(0.0, |s| state_at(s, d, bi, j)))
                    .collect();
                let mut cs: Vec<f32> = (0..h)
                    .map(|j| c0.as_ref().map_or(0.0, |s| state_at(s, d, bi, j)))
                    .collect();
                let backwards = d == 1 || self.direction == "reverse";
                let order: Vec<usize> = if backwards {
                    (0..len).rev().collect()
                } else {
                    (0..len).collect()
                };
                for t in order {
                    let xt = |k: usize| x_at(t, bi, k);
                    let mut hn = vec![0f32; h];
                    let mut cn = vec![0f32; h];
                    match self.kind {
                        Kind::Rnn => {
                            for (j, out) in hn.iter_mut().enumerate() {
                                *out = a[0].apply(clip(wrow(j, &xt) + rrow(j, &hs)));
                            }
                        }
                        Kind::Gru => {
                            let z: Vec<f32> = (0..h)
                                .map(|j| a[0].apply(clip(wrow(j, &xt) + rrow(j, &hs))))
                                .collect();
                            let rg: Vec<f32> = (0..h)
                                .map(|j| a[0].apply(clip(wrow(h + j, &xt) + rrow(h + j, &hs))))
                                .collect();
                            let rh: Vec<f32> = (0..h).map(|k| rg[k] * hs[k]).collect();
                            for j in 0..h {
                                let pre = if self.linear_before_reset {
                                    wrow(2 * h + j, &xt) + rg[j] * rrow(2 * h + j, &hs)
                                } else {
                                    wrow(2 * h + j, &xt) + rrow(2 * h + j, &rh)
                                };
                                let cand = a[1].apply(clip(pre));
                                hn[j] = (1.0 - z[j]) * cand + z[j] * hs[j];
                            }
                        }
                        Kind::Lstm => {
                            let peep = |k: usize, j: usize| {
                                p.as_ref().map_or(0.0, |p| p[d * 3 * h + k * h + j])
                            };
                            for j in 0..h {
                                let pre =
                                    |gate: usize| wrow(gate * h + j, &xt) + rrow(gate * h + j, &hs);
                                let ig = a[0].apply(clip(pre(0) + peep(0, j) * cs[j]));
                                let fg = if self.input_forget {
                                    1.0 - ig
                                } else {
                                    a[0].apply(clip(pre(2) + peep(2, j) * cs[j]))
                                };
                                let cg = a[1].apply(clip(pre(3)));
                                cn[j] = fg * cs[j] + ig * cg;
                                let og = a[0].apply(clip(pre(1) + peep(1, j) * cn[j]));
                                hn[j] = og * a[2].apply(cn[j]);
                            }
                        }
                    }
                    for j in 0..h {
                        y[((t * dirs + d) * n + bi) * h + j] = hn[j];
                    }
                    hs = hn;
                    cs = cn;
                }
                for j in 0..h {
                    yh[(d * n + bi) * h + j] = hs[j];
                    yc[(d * n + bi) * h + j] = cs[j];
                }
            }
        }
        let y = Tensor::from_f32(vec![t_len, dirs, n, h], y).unwrap();
        let yh = Tensor::from_f32(vec![dirs, n, h], yh).unwrap();
        let yc = Tensor::from_f32(vec![dirs, n, h], yc).unwrap();
        let (y, yh, yc) = if lf {
            (
                transpose(&y, &[2, 0, 1, 3]),
                transpose(&yh, &[1, 0, 2]),
                transpose(&yc, &[1, 0, 2]),
            )
        } else {
            (y, yh, yc)
        };
        [y, yh, yc]
            .into_iter()
            .zip(self.outputs)
            .filter(|(_, w)| *w)
            .map(|(t, _)| t)
            .collect()
    }
}

fn transpose(t: &Tensor, perm: &[usize]) -> Tensor {
    optc_ir::interp::eval_op(
        &optc_ir::Op::Transpose {
            perm: perm.to_vec(),
        },
        &[t],
    )
    .unwrap()
    .remove(0)
}

fn report(what: &str, got: &Tensor, want: &Tensor) -> Option<String> {
    match optc::compare(got, want, RTOL, ATOL) {
        Ok(d) if d.allclose => None,
        Ok(d) => Some(format!(
            "{what}: max abs {:.3e}, max rel {:.3e}\n got  {:?}\n want {:?}",
            d.max_abs, d.max_rel, got, want
        )),
        Err(e) => Some(format!("{what}: {e}")),
    }
}

/// optc (interpreter on the imported graph, JIT at -O0..-O3) against the reference.
fn check_reference(label: &str, c: &Case) {
    let data = c.data();
    let (bytes, inputs) = c.model(&data);
    let want = c.reference(&data);
    let opts = optc::Options::default();
    let graph =
        optc::import_bytes(&bytes, &opts).unwrap_or_else(|e| panic!("{label}: import: {e}"));
    let mut errs = vec![];
    let interp = optc_ir::interp::run(&graph, &inputs)
        .unwrap_or_else(|e| panic!("{label}: interpreter: {e}"));
    assert_eq!(interp.len(), want.len(), "{label}: output count");
    for (k, (g, w)) in interp.iter().zip(&want).enumerate() {
        errs.extend(report(&format!("{label}: interpreter output {k}"), g, w));
    }
    for level in [0u8, 1, 2, 3] {
        let opts = optc::Options {
            opt_level: level,
            ..Default::default()
        };
        let mut m = optc::compile_bytes(&bytes, &opts)
            .unwrap_or_else(|e| panic!("{label}: compile -O{level}: {e}"));
        let got = m
            .run(&inputs)
            .unwrap_or_else(|e| panic!("{label}: run -O{level}: {e}"));
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            errs.extend(report(&format!("{label}: -O{level} output {k}"), g, w));
        }
    }
    // The other targets this host runs: an LSTM step's gates are an assembled routine on
    // AVX-512 and Cranelift code on the others.
    for target in other_targets() {
        let opts = optc::Options {
            target: target.into(),
            ..Default::default()
        };
        let got = optc::compile_bytes(&bytes, &opts)
            .and_then(|mut m| m.run(&inputs))
            .unwrap_or_else(|e| panic!("{label}: {target}: {e}"));
        for (k, (g, w)) in got.iter().zip(&want).enumerate() {
            errs.extend(report(&format!("{label}: {target} output {k}"), g, w));
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

/// The x86-64 targets below the host's own that it runs.
fn other_targets() -> Vec<&'static str> {
    let mut t = vec![];
    #[cfg(target_arch = "x86_64")]
    {
        t.push("x86_64-sse4.2");
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            t.push("x86_64-avx2");
        }
    }
    t
}

/// optc against tract, and the reference against tract (it is the oracle elsewhere).
fn check_tract(label: &str, c: &Case) {
    let data = c.data();
    let (bytes, inputs) = c.model(&data);
    check_with(label, &bytes, &inputs, RTOL, ATOL);
    let tract = optc_onnx::oracle::run_tract(&bytes, &inputs).unwrap();
    let reference = c.reference(&data);
    assert_eq!(tract.len(), reference.len(), "{label}: output count");
    for (k, (r, t)) in reference.iter().zip(&tract).enumerate() {
        if let Some(e) = report(&format!("{label}: reference output {k} vs tract"), r, t) {
            panic!("{e}");
        }
    }
}

const KINDS: [Kind; 3] = [Kind::Rnn, Kind::Gru, Kind::Lstm];

#[test]
fn forward_against_tract() {
    for kind in KINDS {
        let k = kind.op();
        check_tract(&format!("{k} forward"), &case(kind));
        // One step, one batch entry, no bias and zero initial states.
        let mut c = case(kind);
        (c.steps, c.batch, c.bias, c.initial_h, c.initial_c) = (1, 1, false, false, false);
        check_tract(&format!("{k} one step, bare"), &c);
        // Longer, zero initial states, bias.
        let mut c = case(kind);
        (c.steps, c.batch, c.initial_h, c.initial_c, c.seed) = (7, 3, false, false, 2);
        if kind == Kind::Lstm {
            // tract 0.23.9 fails on an LSTM with a zero initial state and a batch > 1
            // ("Clashing resolution for expression. 1=1 != 3").
            check_reference(&format!("{k} seven steps"), &c);
        } else {
            check_tract(&format!("{k} seven steps"), &c);
        }
        // Only the last state; only the sequence.
        let mut c = case(kind);
        c.outputs = [false, true, false];
        check_tract(&format!("{k} Y_h only"), &c);
        let mut c = case(kind);
        c.outputs = [true, false, false];
        check_tract(&format!("{k} Y only"), &c);
        // Layout 1.
        let mut c = case(kind);
        (c.layout, c.batch, c.seed) = (1, 3, 3);
        check_tract(&format!("{k} layout 1"), &c);
        // sequence_lens all full length: ignored.
        let mut c = case(kind);
        c.lengths = Some(vec![4, 4]);
        check_tract(&format!("{k} full sequence_lens"), &c);
    }
    // LSTM specifics: peepholes, an initial_h without initial_c, Y_c alone.
    let mut c = case(Kind::Lstm);
    c.peepholes = true;
    check_tract("LSTM peepholes", &c);
    let mut c = case(Kind::Lstm);
    (c.peepholes, c.initial_c, c.seed) = (true, false, 4);
    check_tract("LSTM peepholes, zero initial_c", &c);
    let mut c = case(Kind::Lstm);
    c.outputs = [false, false, true];
    check_tract("LSTM Y_c only", &c);
    // GRU linear_before_reset, with and without bias and initial state.
    let mut c = case(Kind::Gru);
    c.linear_before_reset = true;
    check_tract("GRU linear_before_reset", &c);
    let mut c = case(Kind::Gru);
    (c.linear_before_reset, c.bias, c.initial_h) = (true, false, false);
    check_tract("GRU linear_before_reset, bare", &c);
    let mut c = case(Kind::Gru);
    (c.linear_before_reset, c.initial_h) = (true, false);
    check_tract("GRU linear_before_reset, zero initial_h", &c);
}

#[test]
fn bidirectional_against_tract() {
    for kind in KINDS {
        let k = kind.op();
        let mut c = case(kind);
        c.direction = "bidirectional";
        check_tract(&format!("{k} bidirectional"), &c);
        (c.steps, c.initial_h, c.initial_c, c.seed) = (1, false, false, 5);
        check_tract(&format!("{k} bidirectional one step"), &c);
    }
    let mut c = case(Kind::Lstm);
    (c.direction, c.peepholes) = ("bidirectional", true);
    check_tract("LSTM bidirectional peepholes", &c);
    let mut c = case(Kind::Gru);
    (c.direction, c.linear_before_reset) = ("bidirectional", true);
    check_tract("GRU bidirectional linear_before_reset", &c);
}

#[test]
fn reverse_and_bidirectional_layout_1_against_the_reference() {
    for kind in KINDS {
        let k = kind.op();
        let mut c = case(kind);
        c.direction = "reverse";
        check_reference(&format!("{k} reverse"), &c);
        (c.layout, c.peepholes) = (1, kind == Kind::Lstm);
        check_reference(&format!("{k} reverse layout 1"), &c);
        let mut c = case(kind);
        (c.direction, c.layout, c.batch, c.seed) = ("bidirectional", 1, 3, 6);
        check_reference(&format!("{k} bidirectional layout 1"), &c);
        c.outputs = [false, true, kind == Kind::Lstm];
        check_reference(&format!("{k} bidirectional layout 1, states only"), &c);
    }
}

#[test]
fn clip_and_input_forget_against_the_reference() {
    for kind in KINDS {
        let mut c = case(kind);
        (c.clip, c.direction) = (Some(0.4), "bidirectional");
        check_reference(&format!("{} clip", kind.op()), &c);
    }
    let mut c = case(Kind::Lstm);
    (c.input_forget, c.peepholes) = (true, true);
    check_reference("LSTM input_forget", &c);
    (c.clip, c.direction) = (Some(0.7), "reverse");
    check_reference("LSTM input_forget, clip, reverse", &c);
}

#[test]
fn every_activation_against_the_reference() {
    // Each activation as the RNN's f, with its alpha/beta attributes.
    let cases: Vec<(&str, Vec<f32>, Vec<f32>, Act)> = vec![
        ("Relu", vec![], vec![], Act::Relu),
        ("Tanh", vec![], vec![], Act::Tanh),
        ("Sigmoid", vec![], vec![], Act::Sigmoid),
        ("Affine", vec![0.7], vec![-0.2], Act::Affine(0.7, -0.2)),
        ("LeakyRelu", vec![], vec![], Act::LeakyRelu(0.01)),
        ("LeakyRelu", vec![0.2], vec![], Act::LeakyRelu(0.2)),
        (
            "ThresholdedRelu",
            vec![0.3],
            vec![],
            Act::ThresholdedRelu(0.3),
        ),
        (
            "ScaledTanh",
            vec![1.5],
            vec![0.6],
            Act::ScaledTanh(1.5, 0.6),
        ),
        ("HardSigmoid", vec![], vec![], Act::HardSigmoid(0.2, 0.5)),
        (
            "HardSigmoid",
            vec![0.3],
            vec![0.4],
            Act::HardSigmoid(0.3, 0.4),
        ),
        ("Elu", vec![], vec![], Act::Elu(1.0)),
        ("Elu", vec![0.5], vec![], Act::Elu(0.5)),
        ("Softsign", vec![], vec![], Act::Softsign),
        ("softplus", vec![], vec![], Act::Softplus),
    ];
    for (name, alphas, betas, act) in cases {
        let mut c = case(Kind::Rnn);
        c.activations = Some((vec![name], alphas.clone(), betas, vec![act]));
        check_reference(&format!("RNN {name} {alphas:?}"), &c);
    }
    // Mixed lists: parameters go to the activations that take them, in order.
    let mut c = case(Kind::Lstm);
    c.direction = "bidirectional";
    c.activations = Some((
        vec![
            "HardSigmoid",
            "Softsign",
            "ScaledTanh",
            "Sigmoid",
            "LeakyRelu",
            "Elu",
        ],
        vec![0.25, 0.9, 0.1, 0.8],
        vec![0.45, 1.2],
        vec![
            Act::HardSigmoid(0.25, 0.45),
            Act::Softsign,
            Act::ScaledTanh(0.9, 1.2),
            Act::Sigmoid,
            Act::LeakyRelu(0.1),
            Act::Elu(0.8),
        ],
    ));
    check_reference("LSTM mixed activations", &c);
    let mut c = case(Kind::Gru);
    c.linear_before_reset = true;
    c.activations = Some((
        vec!["HardSigmoid", "Affine"],
        vec![0.3, 0.5],
        vec![0.5, 0.1],
        vec![Act::HardSigmoid(0.3, 0.5), Act::Affine(0.5, 0.1)],
    ));
    check_reference("GRU HardSigmoid and Affine", &c);
    // One direction's list for both directions.
    let mut c = case(Kind::Gru);
    c.direction = "bidirectional";
    c.activations = Some((
        vec!["Sigmoid", "Softplus"],
        vec![],
        vec![],
        vec![Act::Sigmoid, Act::Softplus, Act::Sigmoid, Act::Softplus],
    ));
    check_reference("GRU one list for two directions", &c);
}

#[test]
fn shorter_sequences_are_masked() {
    for kind in KINDS {
        for direction in ["forward", "reverse", "bidirectional"] {
            let mut c = case(kind);
            (c.direction, c.batch, c.steps) = (direction, 3, 5);
            c.lengths = Some(vec![5, 2, 1]);
            c.peepholes = kind == Kind::Lstm;
            check_reference(&format!("{} {direction} lengths 5 2 1", kind.op()), &c);
            (c.layout, c.initial_h, c.initial_c) = (1, false, false);
            check_reference(
                &format!(
                    "{} {direction} lengths 5 2 1, layout 1, zero states",
                    kind.op()
                ),
                &c,
            );
        }
    }
}

#[test]
fn one_matmul_projects_every_step() {
    // The input projection of all steps and both directions is a single MatMul; then one
    // recurrent MatMul per step (none for the first, from a zero state).
    let mut c = case(Kind::Lstm);
    (c.direction, c.steps, c.initial_h, c.initial_c) = ("bidirectional", 6, false, false);
    let (bytes, _) = c.model(&c.data());
    let g = optc::import_bytes(&bytes, &optc::Options::default()).unwrap();
    let matmuls: Vec<(String, Vec<usize>)> =
        g.g.node_weights()
            .filter(|n| n.op == optc_ir::Op::MatMul)
            .map(|n| (n.name.clone(), n.outputs[0].shape.clone()))
            .collect();
    assert_eq!(matmuls.len(), 1 + 2 * 5, "{matmuls:?}");
    let projection: Vec<_> = matmuls.iter().filter(|(_, s)| s == &[12, 40]).collect();
    assert_eq!(projection.len(), 1, "{matmuls:?}");
}

fn import_error(c: &Case, edit: impl FnOnce(&mut ModelBuilder)) -> String {
    let data = c.data();
    let mut m = ModelBuilder::new(14);
    m.input("x", optc::DType::F32, &dims(data.x.shape()));
    m.initializer("w", &data.w).initializer("r", &data.r);
    edit(&mut m);
    optc::import_bytes(&m.to_bytes(), &optc::Options::default())
        .map(|_| ())
        .expect_err("the import should fail")
        .to_string()
}

#[test]
fn unsupported_forms_are_refused_naming_node_and_attribute() {
    let c = case(Kind::Lstm);
    let node = |attrs: Vec<(&'static str, Attr)>| {
        move |m: &mut ModelBuilder| {
            let mut all = attrs;
            if !all.iter().any(|(n, _)| *n == "hidden_size") {
                all.push(("hidden_size", Attr::Int(5)));
            }
            m.node_named("lstm", "LSTM", &["x", "w", "r"], &["y"], all)
                .output("y");
        }
    };
    let cases: Vec<(Vec<(&'static str, Attr)>, &str)> = vec![
        (
            vec![(
                "activations",
                Attr::Strs(vec!["Sigmoid".into(), "Gelu".into(), "Tanh".into()]),
            )],
            "activation 'Gelu' is not supported",
        ),
        (vec![("layout", Attr::Int(2))], "attribute 'layout' = 2"),
        (
            vec![("direction", Attr::Str("sideways".into()))],
            "attribute 'direction' = 'sideways'",
        ),
        (
            vec![("hidden_size", Attr::Int(6))],
            "attribute 'hidden_size' = 6",
        ),
        (vec![("clip", Attr::Float(-1.0))], "attribute 'clip' = -1"),
        (
            vec![("direction", Attr::Str("bidirectional".into()))],
            "expected [2, 20, 3]",
        ),
    ];
    for (attrs, want) in cases {
        let e = import_error(&c, node(attrs));
        assert!(
            e.contains("node 'lstm' (LSTM)") && e.contains(want),
            "{want}: {e}"
        );
    }
    // input_forget belongs to LSTM, linear_before_reset to GRU.
    let e = import_error(&c, |m| {
        m.node_named(
            "gru",
            "GRU",
            &["x", "w", "r"],
            &["y"],
            vec![("input_forget", Attr::Int(1))],
        )
        .output("y");
    });
    assert!(
        e.contains("node 'gru' (GRU)") && e.contains("'input_forget'"),
        "{e}"
    );
    // sequence_lens must be constant, and within the sequence.
    let e = import_error(&c, |m| {
        m.input("lens", optc::DType::I32, &[2])
            .node_named("lstm", "LSTM", &["x", "w", "r", "", "lens"], &["y"], vec![])
            .output("y");
    });
    assert!(
        e.contains("node 'lstm' (LSTM)") && e.contains("sequence_lens ('lens') must be a constant"),
        "{e}"
    );
    let e = import_error(&c, |m| {
        m.initializer(
            "lens",
            &Tensor::new(vec![2], Data::I32(vec![4, 0])).unwrap(),
        )
        .node_named("lstm", "LSTM", &["x", "w", "r", "", "lens"], &["y"], vec![])
        .output("y");
    });
    assert!(
        e.contains("node 'lstm' (LSTM)") && e.contains("holds 0"),
        "{e}"
    );
    // A bias of the wrong shape.
    let e = import_error(&c, |m| {
        m.initializer("b", &Tensor::zeros(optc::DType::F32, vec![1, 20]))
            .node_named("lstm", "LSTM", &["x", "w", "r", "b"], &["y"], vec![])
            .output("y");
    });
    assert!(
        e.contains("node 'lstm' (LSTM)")
            && e.contains("input B has shape [1, 20], expected [1, 40]"),
        "{e}"
    );
}
