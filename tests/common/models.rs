//! The test models: built in Rust with optc's builder, each with its inputs.
#![allow(dead_code)]

use super::Rng;
use optc::{DType, Tensor};
use optc_onnx::builder::{Attr as A, ModelBuilder};

fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap()
}

/// Small helper that names things and adds weights.
struct M<'a> {
    b: &'a mut ModelBuilder,
    r: &'a mut Rng,
    n: usize,
}

impl M<'_> {
    fn name(&mut self, p: &str) -> String {
        self.n += 1;
        format!("{p}{}", self.n)
    }
    fn weight(&mut self, shape: &[usize], scale: f32) -> String {
        let n = self.name("w");
        let t = self.r.tensor(shape, -scale, scale);
        self.b.initializer(&n, &t);
        n
    }
    fn op(&mut self, op: &str, ins: &[&str], attrs: Vec<(&str, A)>) -> String {
        let o = self.name(&op.to_lowercase());
        self.b.node(op, ins, &[&o], attrs);
        o
    }
    fn conv(
        &mut self,
        x: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        group: usize,
    ) -> String {
        let fan = (cin / group * k * k) as f32;
        let w = self.weight(&[cout, cin / group, k, k], 1.0 / fan.sqrt());
        let b = self.weight(&[cout], 0.1);
        let p = (k / 2) as i64;
        self.op(
            "Conv",
            &[x, &w, &b],
            vec![
                ("strides", A::Ints(vec![stride as i64; 2])),
                ("pads", A::Ints(vec![p; 4])),
                ("group", A::Int(group as i64)),
                ("kernel_shape", A::Ints(vec![k as i64; 2])),
            ],
        )
    }
    fn bn(&mut self, x: &str, c: usize) -> String {
        let s = self.weight(&[c], 1.0);
        let b = self.weight(&[c], 0.2);
        let m = self.weight(&[c], 0.2);
        let v = {
            let n = self.name("var");
            let t = self.r.tensor(&[c], 0.5, 1.5);
            self.b.initializer(&n, &t);
            n
        };
        self.op("BatchNormalization", &[x, &s, &b, &m, &v], vec![])
    }
}

pub fn mlp() -> (Vec<u8>, Vec<Tensor>) {
    let mut r = Rng::new(100);
    let mut b = ModelBuilder::new(17);
    b.input("input", DType::F32, &[1, 784]);
    let mut m = M {
        b: &mut b,
        r: &mut r,
        n: 0,
    };
    let mut x = "input".to_string();
    for (k, (i, o)) in [(784, 512), (512, 256), (256, 10)].into_iter().enumerate() {
        let w = m.weight(&[o, i], 1.0 / (i as f32).sqrt());
        let bias = m.weight(&[o], 0.1);
        x = m.op("Gemm", &[&x, &w, &bias], vec![("transB", A::Int(1))]);
        if k < 2 {
            x = m.op("Relu", &[&x], vec![]);
        }
    }
    m.b.node("Softmax", &[&x], &["probs"], vec![("axis", A::Int(1))]);
    b.output("probs");
    let inputs = vec![r.tensor(&[1, 784], 0.0, 1.0)];
    (b.to_bytes(), inputs)
}

pub fn small_cnn_with_batchnorm() -> (Vec<u8>, Vec<Tensor>) {
    let mut r = Rng::new(101);
    let mut b = ModelBuilder::new(17);
    b.input("input", DType::F32, &[2, 3, 16, 16]);
    let mut m = M {
        b: &mut b,
        r: &mut r,
        n: 0,
    };
    let mut x = m.conv("input", 3, 8, 3, 1, 1);
    x = m.bn(&x, 8);
    x = m.op("Relu", &[&x], vec![]);
    x = m.op(
        "MaxPool",
        &[&x],
        vec![
            ("kernel_shape", A::Ints(vec![2, 2])),
            ("strides", A::Ints(vec![2, 2])),
        ],
    );
    x = m.conv(&x, 8, 16, 3, 1, 1);
    x = m.bn(&x, 16);
    x = m.op("Relu", &[&x], vec![]);
    x = m.op("GlobalAveragePool", &[&x], vec![]);
    x = m.op("Flatten", &[&x], vec![]);
    let w = m.weight(&[10, 16], 0.25);
    let bias = m.weight(&[10], 0.1);
    m.b.node(
        "Gemm",
        &[&x, &w, &bias],
        &["logits"],
        vec![("transB", A::Int(1))],
    );
    b.output("logits");
    let inputs = vec![r.tensor(&[2, 3, 16, 16], -1.0, 1.0)];
    (b.to_bytes(), inputs)
}

pub fn resnet_style_stage() -> (Vec<u8>, Vec<Tensor>) {
    let mut r = Rng::new(102);
    let mut b = ModelBuilder::new(17);
    b.input("input", DType::F32, &[1, 3, 32, 32]);
    let mut m = M {
        b: &mut b,
        r: &mut r,
        n: 0,
    };
    let mut x = m.conv("input", 3, 16, 7, 2, 1);
    x = m.op("Relu", &[&x], vec![]);
    x = m.op(
        "MaxPool",
        &[&x],
        vec![
            ("kernel_shape", A::Ints(vec![3, 3])),
            ("strides", A::Ints(vec![2, 2])),
            ("pads", A::Ints(vec![1; 4])),
        ],
    );
    // basic block, identity shortcut
    let y = m.conv(&x, 16, 16, 3, 1, 1);
    let y = m.op("Relu", &[&y], vec![]);
    let y = m.conv(&y, 16, 16, 3, 1, 1);
    let s = m.op("Add", &[&y, &x], vec![]);
    x = m.op("Relu", &[&s], vec![]);
    // downsampling block with a 1x1 projection shortcut
    let y = m.conv(&x, 16, 32, 3, 2, 1);
    let y = m.op("Relu", &[&y], vec![]);
    let y = m.conv(&y, 32, 32, 3, 1, 1);
    let p = m.conv(&x, 16, 32, 1, 2, 1);
    let s = m.op("Add", &[&y, &p], vec![]);
    x = m.op("Relu", &[&s], vec![]);
    x = m.op("GlobalAveragePool", &[&x], vec![]);
    m.b.node("Flatten", &[&x], &["features"], vec![]);
    b.output("features");
    let inputs = vec![r.tensor(&[1, 3, 32, 32], -1.0, 1.0)];
    (b.to_bytes(), inputs)
}

pub fn mobilenet_v2_inverted_residual() -> (Vec<u8>, Vec<Tensor>) {
    let mut r = Rng::new(103);
    let mut b = ModelBuilder::new(17);
    b.initializer("zero", &Tensor::scalar_f32(0.0));
    b.initializer("six", &Tensor::scalar_f32(6.0));
    b.input("input", DType::F32, &[1, 16, 14, 14]);
    let mut m = M {
        b: &mut b,
        r: &mut r,
        n: 0,
    };
    let relu6 = |m: &mut M, x: &str| m.op("Clip", &[x, "zero", "six"], vec![]);
    // expand 1x1, depthwise 3x3, project 1x1, residual
    let e = m.conv("input", 16, 96, 1, 1, 1);
    let e = relu6(&mut m, &e);
    let d = m.conv(&e, 96, 96, 3, 1, 96);
    let d = relu6(&mut m, &d);
    let p = m.conv(&d, 96, 16, 1, 1, 1);
    let x = m.op("Add", &[&p, "input"], vec![]);
    // a stride-2 block without residual
    let e = m.conv(&x, 16, 64, 1, 1, 1);
    let e = relu6(&mut m, &e);
    let d = m.conv(&e, 64, 64, 3, 2, 64);
    let d = relu6(&mut m, &d);
    let p = m.conv(&d, 64, 24, 1, 1, 1);
    m.b.node("GlobalAveragePool", &[&p], &["pooled"], vec![]);
    b.output("pooled");
    let inputs = vec![r.tensor(&[1, 16, 14, 14], -1.0, 1.0)];
    (b.to_bytes(), inputs)
}

pub fn transformer_encoder_block() -> (Vec<u8>, Vec<Tensor>) {
    let (seq, hid, heads, ffn) = (8usize, 32usize, 4usize, 64usize);
    let dh = hid / heads;
    let mut r = Rng::new(104);
    let mut b = ModelBuilder::new(17);
    b.input("ids", DType::I64, &[1, seq as i64]);
    b.input("mask", DType::I64, &[1, seq as i64]);
    let mut m = M {
        b: &mut b,
        r: &mut r,
        n: 0,
    };
    // embeddings
    let emb = m.weight(&[50, hid], 1.0);
    let pos = m.weight(&[1, seq, hid], 0.5);
    let x = m.op("Gather", &[&emb, "ids"], vec![]);
    let x = m.op("Add", &[&x, &pos], vec![]);
    let ln = |m: &mut M, x: &str| {
        let s = m.weight(&[hid], 1.0);
        let b = m.weight(&[hid], 0.1);
        m.op(
            "LayerNormalization",
            &[x, &s, &b],
            vec![("axis", A::Int(-1)), ("epsilon", A::Float(1e-12))],
        )
    };
    let x = ln(&mut m, &x);
    // attention mask: (1 - mask) * -10000, shaped [1, 1, 1, seq]
    m.b.initializer("one", &Tensor::scalar_f32(1.0));
    m.b.initializer("neg", &Tensor::scalar_f32(-10000.0));
    m.b.initializer("mask_axes", &i64s(&[1, 2]));
    let mf = m.op("Cast", &["mask"], vec![("to", A::Int(1))]);
    let inv = m.op("Sub", &["one", &mf], vec![]);
    let bias = m.op("Mul", &[&inv, "neg"], vec![]);
    let bias = m.op("Unsqueeze", &[&bias, "mask_axes"], vec![]);
    let proj = |m: &mut M, x: &str, i: usize, o: usize| {
        let w = m.weight(&[i, o], 1.0 / (i as f32).sqrt());
        let b = m.weight(&[o], 0.1);
        let y = m.op("MatMul", &[x, &w], vec![]);
        m.op("Add", &[&y, &b], vec![])
    };
    m.b.initializer(
        "heads_shape",
        &i64s(&[1, seq as i64, heads as i64, dh as i64]),
    );
    m.b.initializer("merge_shape", &i64s(&[1, seq as i64, hid as i64]));
    m.b.initializer("scale", &Tensor::scalar_f32(1.0 / (dh as f32).sqrt()));
    let split_heads = |m: &mut M, x: &str, perm: &[i64]| {
        let y = m.op("Reshape", &[x, "heads_shape"], vec![]);
        m.op("Transpose", &[&y], vec![("perm", A::Ints(perm.to_vec()))])
    };
    let q = proj(&mut m, &x, hid, hid);
    let k = proj(&mut m, &x, hid, hid);
    let v = proj(&mut m, &x, hid, hid);
    let q = split_heads(&mut m, &q, &[0, 2, 1, 3]);
    let k = split_heads(&mut m, &k, &[0, 2, 3, 1]);
    let v = split_heads(&mut m, &v, &[0, 2, 1, 3]);
    let s = m.op("MatMul", &[&q, &k], vec![]);
    let s = m.op("Mul", &[&s, "scale"], vec![]);
    let s = m.op("Add", &[&s, &bias], vec![]);
    let p = m.op("Softmax", &[&s], vec![("axis", A::Int(-1))]);
    let c = m.op("MatMul", &[&p, &v], vec![]);
    let c = m.op(
        "Transpose",
        &[&c],
        vec![("perm", A::Ints(vec![0, 2, 1, 3]))],
    );
    let c = m.op("Reshape", &[&c, "merge_shape"], vec![]);
    let a = proj(&mut m, &c, hid, hid);
    let x1 = m.op("Add", &[&a, &x], vec![]);
    let x1 = ln(&mut m, &x1);
    // FFN with the exact Erf-GELU: 0.5 * x * (1 + erf(x / sqrt(2)))
    m.b.initializer("sqrt2", &Tensor::scalar_f32(std::f32::consts::SQRT_2));
    m.b.initializer("half", &Tensor::scalar_f32(0.5));
    let h = proj(&mut m, &x1, hid, ffn);
    let t = m.op("Div", &[&h, "sqrt2"], vec![]);
    let t = m.op("Erf", &[&t], vec![]);
    let t = m.op("Add", &[&t, "one"], vec![]);
    let t = m.op("Mul", &[&h, &t], vec![]);
    let g = m.op("Mul", &[&t, "half"], vec![]);
    let o = proj(&mut m, &g, ffn, hid);
    let x2 = m.op("Add", &[&o, &x1], vec![]);
    let y = ln(&mut m, &x2);
    m.b.node("Identity", &[&y], &["hidden"], vec![]);
    b.output("hidden");
    let inputs = vec![r.tensor_i64(&[1, seq], 0, 50), {
        let mut t = vec![1i64; seq];
        t[seq - 2] = 0;
        t[seq - 1] = 0;
        Tensor::from_i64(vec![1, seq], t).unwrap()
    }];
    (b.to_bytes(), inputs)
}
