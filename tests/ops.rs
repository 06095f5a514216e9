//! Every supported ONNX op against tract, over many attribute combinations.
//! Each case is a one-node model made with optc's builder; see `common::check`.

mod common;

use common::*;
use optc::{DType, Tensor};
use optc_onnx::builder::Attr as A;

fn x(t: Tensor) -> (&'static str, Tensor, bool) {
    ("x", t, false)
}
fn inp(name: &'static str, t: Tensor) -> (&'static str, Tensor, bool) {
    (name, t, false)
}
fn init(name: &'static str, t: Tensor) -> (&'static str, Tensor, bool) {
    (name, t, true)
}
fn ints(v: &[i64]) -> A {
    A::Ints(v.to_vec())
}
fn i64s(v: &[i64]) -> Tensor {
    Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap()
}

#[test]
fn unary_activations() {
    let mut r = Rng::new(1);
    for shape in [vec![7], vec![2, 3, 5], vec![1, 4, 4, 4], vec![]] {
        let t = r.tensor(&shape, -4.0, 4.0);
        for op in [
            "Relu",
            "Sigmoid",
            "Tanh",
            "Erf",
            "Exp",
            "Neg",
            "Abs",
            "HardSwish",
            "Identity",
        ] {
            check_op(
                &format!("{op} {shape:?}"),
                op,
                17,
                &[x(t.clone())],
                vec![],
                1,
            );
        }
        check_op(
            "LeakyRelu default",
            "LeakyRelu",
            17,
            &[x(t.clone())],
            vec![],
            1,
        );
        check_op(
            "LeakyRelu 0.3",
            "LeakyRelu",
            17,
            &[x(t.clone())],
            vec![("alpha", A::Float(0.3))],
            1,
        );
        check_op(
            "HardSigmoid default",
            "HardSigmoid",
            17,
            &[x(t.clone())],
            vec![],
            1,
        );
        check_op(
            "HardSigmoid a b",
            "HardSigmoid",
            17,
            &[x(t.clone())],
            vec![("alpha", A::Float(0.25)), ("beta", A::Float(0.4))],
            1,
        );
        let pos = r.tensor(&shape, 0.01, 9.0);
        for op in ["Log", "Sqrt"] {
            check_op(
                &format!("{op} {shape:?}"),
                op,
                17,
                &[x(pos.clone())],
                vec![],
                1,
            );
        }
    }
}

#[test]
fn clip_across_opsets() {
    let mut r = Rng::new(2);
    let t = r.tensor(&[3, 17], -8.0, 8.0);
    check_op(
        "Clip relu6 attrs",
        "Clip",
        6,
        &[x(t.clone())],
        vec![("min", A::Float(0.0)), ("max", A::Float(6.0))],
        1,
    );
    check_op(
        "Clip 13 inputs",
        "Clip",
        13,
        &[
            x(t.clone()),
            init("lo", Tensor::scalar_f32(-1.5)),
            init("hi", Tensor::scalar_f32(2.5)),
        ],
        vec![],
        1,
    );
    check_op(
        "Clip 13 min only",
        "Clip",
        13,
        &[x(t.clone()), init("lo", Tensor::scalar_f32(0.5))],
        vec![],
        1,
    );
    check_op(
        "Clip 13 max only",
        "Clip",
        13,
        &[
            x(t.clone()),
            ("", t.clone(), true),
            init("hi", Tensor::scalar_f32(0.5)),
        ],
        vec![],
        1,
    );
    check_op("Clip 13 none", "Clip", 13, &[x(t)], vec![], 1);
}

#[test]
fn binary_broadcasting() {
    let mut r = Rng::new(3);
    let shapes: &[(&[usize], &[usize])] = &[
        (&[2, 3, 4], &[2, 3, 4]),
        (&[2, 3, 4], &[4]),
        (&[2, 3, 4], &[3, 1]),
        (&[1, 3, 1], &[2, 1, 5]),
        (&[5], &[]),
        (&[], &[7, 1]),
        (&[1, 8, 5, 5], &[1, 8, 1, 1]),
        (&[13], &[13]),
    ];
    for (sa, sb) in shapes {
        let a = r.tensor(sa, -3.0, 3.0);
        let b = r.tensor(sb, 0.5, 3.0);
        for op in ["Add", "Sub", "Mul", "Div", "Max", "Min"] {
            check_op(
                &format!("{op} {sa:?} {sb:?}"),
                op,
                17,
                &[inp("a", a.clone()), inp("b", b.clone())],
                vec![],
                1,
            );
        }
        // constant right-hand side
        check_op(
            &format!("Add const {sa:?} {sb:?}"),
            "Add",
            17,
            &[inp("a", a.clone()), init("b", b.clone())],
            vec![],
            1,
        );
        let cmp_b = r.tensor(sb, -3.0, 3.0);
        for op in ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"] {
            check_op(
                &format!("{op} {sa:?} {sb:?}"),
                op,
                17,
                &[inp("a", a.clone()), inp("b", cmp_b.clone())],
                vec![],
                1,
            );
        }
        let pa = r.tensor(sa, 0.1, 2.0);
        check_op(
            &format!("Pow {sa:?} {sb:?}"),
            "Pow",
            17,
            &[inp("a", pa), inp("b", b.clone())],
            vec![],
            1,
        );
    }
    // integer arithmetic and comparisons
    let a = r.tensor_i64(&[4, 5], -20, 20);
    let b = r.tensor_i64(&[5], 1, 7);
    for op in [
        "Add", "Sub", "Mul", "Div", "Max", "Min", "Equal", "Greater", "Less",
    ] {
        check_op(
            &format!("{op} i64"),
            op,
            17,
            &[inp("a", a.clone()), inp("b", b.clone())],
            vec![],
            1,
        );
    }
    // x^2 and x^0.5 with a constant exponent, as in normalization layers
    let p = r.tensor(&[3, 9], 0.1, 3.0);
    check_op(
        "Pow 2",
        "Pow",
        17,
        &[inp("a", p.clone()), init("e", Tensor::scalar_f32(2.0))],
        vec![],
        1,
    );
    check_op(
        "Pow 0.5",
        "Pow",
        17,
        &[inp("a", p.clone()), init("e", Tensor::scalar_f32(0.5))],
        vec![],
        1,
    );
    let n = r.tensor(&[3, 9], -3.0, 3.0);
    check_op(
        "Pow neg base 2",
        "Pow",
        17,
        &[inp("a", n), init("e", Tensor::scalar_f32(2.0))],
        vec![],
        1,
    );
}

#[test]
fn variadic_max_min() {
    let mut r = Rng::new(4);
    let (a, b, c) = (
        r.tensor(&[2, 3], -1.0, 1.0),
        r.tensor(&[3], -1.0, 1.0),
        r.tensor(&[2, 1], -1.0, 1.0),
    );
    for op in ["Max", "Min"] {
        check_op(
            &format!("{op} 3"),
            op,
            13,
            &[
                inp("a", a.clone()),
                inp("b", b.clone()),
                inp("c", c.clone()),
            ],
            vec![],
            1,
        );
        check_op(
            &format!("{op} 1"),
            op,
            13,
            &[inp("a", a.clone())],
            vec![],
            1,
        );
    }
}

#[test]
fn logic_where_cast() {
    let mut r = Rng::new(5);
    let (p, q) = (r.tensor_bool(&[3, 4]), r.tensor_bool(&[4]));
    check_op(
        "And",
        "And",
        17,
        &[inp("p", p.clone()), inp("q", q.clone())],
        vec![],
        1,
    );
    check_op(
        "Or",
        "Or",
        17,
        &[inp("p", p.clone()), inp("q", q.clone())],
        vec![],
        1,
    );
    check_op("Not", "Not", 17, &[inp("p", p.clone())], vec![], 1);
    let (a, b) = (r.tensor(&[3, 4], -1.0, 1.0), r.tensor(&[1, 4], -1.0, 1.0));
    check_op(
        "Where",
        "Where",
        17,
        &[
            inp("c", p.clone()),
            inp("a", a.clone()),
            inp("b", b.clone()),
        ],
        vec![],
        1,
    );
    check_op(
        "Where bcast cond",
        "Where",
        17,
        &[
            inp("c", q),
            inp("a", a.clone()),
            init("b", Tensor::scalar_f32(-1e4)),
        ],
        vec![],
        1,
    );
    let f = r.tensor(&[2, 9], -40.0, 40.0);
    for (to, name) in [
        (7, "i64"),
        (6, "i32"),
        (9, "bool"),
        (1, "f32"),
        (2, "u8"),
        (3, "i8"),
    ] {
        let src = if to == 2 {
            r.tensor(&[2, 9], 0.0, 200.0)
        } else {
            f.clone()
        };
        check_op(
            &format!("Cast f32->{name}"),
            "Cast",
            17,
            &[x(src)],
            vec![("to", A::Int(to))],
            1,
        );
    }
    let i = r.tensor_i64(&[11], -5, 5);
    for (to, name) in [(1, "f32"), (6, "i32"), (9, "bool")] {
        check_op(
            &format!("Cast i64->{name}"),
            "Cast",
            17,
            &[x(i.clone())],
            vec![("to", A::Int(to))],
            1,
        );
    }
    check_op(
        "Cast bool->f32",
        "Cast",
        17,
        &[x(p)],
        vec![("to", A::Int(1))],
        1,
    );
    let nanny = Tensor::from_f32(vec![4], vec![1.0, f32::NAN, -0.0, f32::INFINITY]).unwrap();
    check_op("IsNaN", "IsNaN", 17, &[x(nanny)], vec![], 1);
}

#[test]
fn matmul_shapes() {
    let mut r = Rng::new(6);
    let cases: &[(&[usize], &[usize])] = &[
        (&[1, 7], &[7, 5]),
        (&[4, 8], &[8, 16]),
        (&[13, 17], &[17, 11]),
        (&[2, 3, 5, 6], &[2, 3, 6, 4]),
        (&[2, 5, 6], &[6, 3]),
        (&[5, 6], &[3, 6, 2]),
        (&[1, 3, 4], &[2, 4, 5]),
        (&[6], &[6, 3]),
        (&[4, 6], &[6]),
        // [6] @ [6] (a scalar result) is valid numpy but tract rejects it; the
        // interpreter and codegen tests cover it.
    ];
    for (sa, sb) in cases {
        let (a, b) = (r.tensor(sa, -1.0, 1.0), r.tensor(sb, -1.0, 1.0));
        check_op(
            &format!("MatMul {sa:?} {sb:?}"),
            "MatMul",
            17,
            &[inp("a", a.clone()), inp("b", b.clone())],
            vec![],
            1,
        );
        check_op(
            &format!("MatMul const {sa:?} {sb:?}"),
            "MatMul",
            17,
            &[inp("a", a), init("b", b)],
            vec![],
            1,
        );
    }
}

#[test]
fn gemm_attributes() {
    let mut r = Rng::new(7);
    let (m, k, n) = (5, 9, 6);
    for ta in [0, 1] {
        for tb in [0, 1] {
            let a = r.tensor(&if ta == 1 { [k, m] } else { [m, k] }, -1.0, 1.0);
            let b = r.tensor(&if tb == 1 { [n, k] } else { [k, n] }, -1.0, 1.0);
            for cshape in [
                None,
                Some(vec![n]),
                Some(vec![m, n]),
                Some(vec![m, 1]),
                Some(vec![]),
            ] {
                let mut ins = vec![inp("a", a.clone()), init("b", b.clone())];
                if let Some(cs) = &cshape {
                    ins.push(init("c", r.tensor(cs, -1.0, 1.0)));
                }
                check_op(
                    &format!("Gemm ta{ta} tb{tb} c{cshape:?}"),
                    "Gemm",
                    13,
                    &ins,
                    vec![
                        ("transA", A::Int(ta)),
                        ("transB", A::Int(tb)),
                        ("alpha", A::Float(0.7)),
                        ("beta", A::Float(1.3)),
                    ],
                    1,
                );
            }
        }
    }
    let a = r.tensor(&[1, 784], -1.0, 1.0);
    let b = r.tensor(&[10, 784], -1.0, 1.0);
    let c = r.tensor(&[10], -1.0, 1.0);
    check_op(
        "Gemm mlp-like",
        "Gemm",
        17,
        &[inp("a", a), init("b", b), init("c", c)],
        vec![("transB", A::Int(1))],
        1,
    );
}

#[allow(clippy::too_many_arguments)]
fn conv_case(
    r: &mut Rng,
    label: &str,
    xs: &[usize],
    ws: &[usize],
    bias: bool,
    attrs: Vec<(&str, A)>,
) {
    let xt = r.tensor(xs, -1.0, 1.0);
    let wt = r.tensor(ws, -1.0, 1.0);
    let mut ins = vec![x(xt), init("w", wt)];
    if bias {
        ins.push(init("b", r.tensor(&[ws[0]], -1.0, 1.0)));
    }
    check_op(label, "Conv", 17, &ins, attrs, 1);
}

/// 1x1 convs over one-pixel maps (squeeze-excitation blocks): a GEMM of the images' channel
/// vectors with the transposed weights; with a bias, a fused activation and a residual add,
/// several images, a partial last panel of output channels and K over one K block.
#[test]
fn one_pixel_convs_are_gemms() {
    let mut r = Rng::new(29);
    for (xs, ws) in [
        ([3, 40, 1, 1], [24, 40, 1, 1]),
        ([1, 576, 1, 1], [144, 576, 1, 1]),
        ([2, 7, 1, 1], [5, 7, 1, 1]),
    ] {
        conv_case(
            &mut r,
            &format!("conv 1x1 of {xs:?}"),
            &xs,
            &ws,
            true,
            vec![],
        );
        let mut b = optc_onnx::builder::ModelBuilder::new(17);
        b.input("x", DType::F32, &dims(&xs))
            .input("skip", DType::F32, &dims(&[xs[0], ws[0], 1, 1]))
            .initializer("w", &r.tensor(&ws, -1.0, 1.0))
            .initializer("b", &r.tensor(&[ws[0]], -1.0, 1.0))
            .node("Conv", &["x", "w", "b"], &["y"], vec![])
            .node("HardSigmoid", &["y"], &["s"], vec![])
            .node("Add", &["s", "skip"], &["z"], vec![])
            .output("z");
        let inputs = [
            r.tensor(&xs, -1.0, 1.0),
            r.tensor(&[xs[0], ws[0], 1, 1], -1.0, 1.0),
        ];
        check(
            &format!("conv 1x1 + hard_sigmoid + add of {xs:?}"),
            &b.to_bytes(),
            &inputs,
        );
    }
}

#[test]
fn conv_2d() {
    let mut r = Rng::new(8);
    conv_case(
        &mut r,
        "conv 3x3 pad1",
        &[1, 3, 9, 9],
        &[8, 3, 3, 3],
        true,
        vec![("pads", ints(&[1, 1, 1, 1]))],
    );
    conv_case(
        &mut r,
        "conv 1x1",
        &[1, 16, 7, 7],
        &[12, 16, 1, 1],
        false,
        vec![],
    );
    conv_case(
        &mut r,
        "conv 7x7 s2 p3",
        &[1, 3, 23, 23],
        &[8, 3, 7, 7],
        true,
        vec![("strides", ints(&[2, 2])), ("pads", ints(&[3, 3, 3, 3]))],
    );
    conv_case(
        &mut r,
        "conv asym pads",
        &[2, 2, 8, 6],
        &[4, 2, 3, 2],
        true,
        vec![("pads", ints(&[0, 1, 2, 0]))],
    );
    conv_case(
        &mut r,
        "conv dilation",
        &[1, 3, 11, 11],
        &[5, 3, 3, 3],
        false,
        vec![("dilations", ints(&[2, 3])), ("pads", ints(&[2, 2, 2, 2]))],
    );
    conv_case(
        &mut r,
        "conv stride 3 x2",
        &[1, 4, 13, 10],
        &[6, 4, 3, 2],
        true,
        vec![("strides", ints(&[3, 2]))],
    );
    conv_case(
        &mut r,
        "conv groups 2",
        &[1, 8, 6, 6],
        &[6, 4, 3, 3],
        true,
        vec![("group", A::Int(2)), ("pads", ints(&[1, 1, 1, 1]))],
    );
    conv_case(
        &mut r,
        "conv depthwise",
        &[1, 12, 9, 9],
        &[12, 1, 3, 3],
        true,
        vec![("group", A::Int(12)), ("pads", ints(&[1, 1, 1, 1]))],
    );
    conv_case(
        &mut r,
        "conv depthwise s2",
        &[1, 6, 10, 10],
        &[6, 1, 3, 3],
        false,
        vec![
            ("group", A::Int(6)),
            ("strides", ints(&[2, 2])),
            ("pads", ints(&[1, 1, 1, 1])),
        ],
    );
    conv_case(
        &mut r,
        "conv depth multiplier",
        &[1, 3, 5, 5],
        &[6, 1, 3, 3],
        false,
        vec![("group", A::Int(3))],
    );
    for ap in ["SAME_UPPER", "SAME_LOWER", "VALID"] {
        conv_case(
            &mut r,
            &format!("conv auto_pad {ap}"),
            &[1, 2, 8, 7],
            &[3, 2, 4, 3],
            true,
            vec![("auto_pad", A::Str(ap.into())), ("strides", ints(&[2, 2]))],
        );
    }
    conv_case(
        &mut r,
        "conv kernel_shape attr",
        &[1, 2, 5, 5],
        &[3, 2, 2, 2],
        false,
        vec![("kernel_shape", ints(&[2, 2]))],
    );
}

#[test]
fn conv_1d() {
    let mut r = Rng::new(9);
    conv_case(
        &mut r,
        "conv1d",
        &[1, 4, 31],
        &[6, 4, 5],
        true,
        vec![("pads", ints(&[2, 2]))],
    );
    conv_case(
        &mut r,
        "conv1d stride dil",
        &[2, 3, 40],
        &[5, 3, 3],
        false,
        vec![("strides", ints(&[2])), ("dilations", ints(&[2]))],
    );
    conv_case(
        &mut r,
        "conv1d depthwise",
        &[1, 8, 17],
        &[8, 1, 3],
        true,
        vec![("group", A::Int(8)), ("pads", ints(&[1, 1]))],
    );
}

#[test]
fn batch_norm() {
    let mut r = Rng::new(10);
    for shape in [vec![2, 5, 4, 3], vec![3, 5], vec![1, 5, 7]] {
        let c = 5;
        let ins = vec![
            x(r.tensor(&shape, -2.0, 2.0)),
            init("s", r.tensor(&[c], 0.5, 1.5)),
            init("b", r.tensor(&[c], -1.0, 1.0)),
            init("m", r.tensor(&[c], -0.5, 0.5)),
            init("v", r.tensor(&[c], 0.1, 2.0)),
        ];
        check_op(
            &format!("BatchNormalization {shape:?}"),
            "BatchNormalization",
            15,
            &ins,
            vec![("epsilon", A::Float(1e-3))],
            1,
        );
    }
}

#[test]
fn pooling() {
    let mut r = Rng::new(11);
    let t = r.tensor(&[1, 3, 11, 10], -2.0, 2.0);
    let cases: Vec<(&str, Vec<(&str, A)>)> = vec![
        ("k2", vec![("kernel_shape", ints(&[2, 2]))]),
        (
            "k3 s2",
            vec![("kernel_shape", ints(&[3, 3])), ("strides", ints(&[2, 2]))],
        ),
        (
            "k3 s2 p1",
            vec![
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("pads", ints(&[1, 1, 1, 1])),
            ],
        ),
        (
            "k3 s2 ceil",
            vec![
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("ceil_mode", A::Int(1)),
            ],
        ),
        (
            "k2x3 asym",
            vec![
                ("kernel_shape", ints(&[2, 3])),
                ("pads", ints(&[1, 0, 0, 2])),
            ],
        ),
        (
            "same_upper",
            vec![
                ("kernel_shape", ints(&[3, 3])),
                ("strides", ints(&[2, 2])),
                ("auto_pad", A::Str("SAME_UPPER".into())),
            ],
        ),
    ];
    for (name, attrs) in &cases {
        check_op(
            &format!("MaxPool {name}"),
            "MaxPool",
            12,
            &[x(t.clone())],
            attrs.clone(),
            1,
        );
        check_op(
            &format!("AveragePool {name}"),
            "AveragePool",
            11,
            &[x(t.clone())],
            attrs.clone(),
            1,
        );
        let mut with = attrs.clone();
        with.push(("count_include_pad", A::Int(1)));
        check_op(
            &format!("AveragePool incl {name}"),
            "AveragePool",
            11,
            &[x(t.clone())],
            with,
            1,
        );
    }
    check_op(
        "MaxPool dilated",
        "MaxPool",
        12,
        &[x(t.clone())],
        vec![
            ("kernel_shape", ints(&[2, 2])),
            ("dilations", ints(&[2, 2])),
        ],
        1,
    );
    let t1 = r.tensor(&[2, 4, 15], -2.0, 2.0);
    check_op(
        "MaxPool 1d",
        "MaxPool",
        12,
        &[x(t1.clone())],
        vec![("kernel_shape", ints(&[3])), ("strides", ints(&[2]))],
        1,
    );
    // MaxPool on int8 and uint8 (opset 12): pooled in f32 between exact casts.
    let bytes: Vec<u8> = (0..3 * 11 * 10)
        .map(|i| ((i * 37 + 11) % 256) as u8)
        .collect();
    let u8s = Tensor::new(vec![1, 3, 11, 10], optc_ir::Data::U8(bytes.clone())).unwrap();
    let i8s = Tensor::new(
        vec![1, 3, 11, 10],
        optc_ir::Data::I8(bytes.iter().map(|&b| b as i8).collect()),
    )
    .unwrap();
    for (name, attrs) in &cases {
        for t in [&u8s, &i8s] {
            check_op(
                &format!("MaxPool {:?} {name}", t.dtype()),
                "MaxPool",
                12,
                &[x(t.clone())],
                attrs.clone(),
                1,
            );
        }
    }
    check_op(
        "GlobalAveragePool",
        "GlobalAveragePool",
        17,
        &[x(t.clone())],
        vec![],
        1,
    );
    check_op(
        "GlobalAveragePool 1d",
        "GlobalAveragePool",
        17,
        &[x(t1)],
        vec![],
        1,
    );
}

#[test]
fn reductions() {
    let mut r = Rng::new(12);
    let t = r.tensor(&[2, 3, 5, 4], -2.0, 2.0);
    for axes in [vec![1], vec![-1], vec![2, 3], vec![0, 2], vec![]] {
        for keep in [0, 1] {
            for op in ["ReduceMean", "ReduceMax", "ReduceL2"] {
                let mut attrs = vec![("keepdims", A::Int(keep))];
                if !axes.is_empty() {
                    attrs.push(("axes", ints(&axes)));
                }
                check_op(
                    &format!("{op} {axes:?} keep{keep}"),
                    op,
                    13,
                    &[x(t.clone())],
                    attrs,
                    1,
                );
            }
            // ReduceSum takes axes as an input from opset 13
            let mut ins = vec![x(t.clone())];
            if !axes.is_empty() {
                ins.push(init("axes", i64s(&axes)));
            }
            check_op(
                &format!("ReduceSum {axes:?} keep{keep}"),
                "ReduceSum",
                13,
                &ins,
                vec![("keepdims", A::Int(keep))],
                1,
            );
            // ReduceMean 18 takes axes as an input too
            check_op(
                &format!("ReduceMean18 {axes:?} keep{keep}"),
                "ReduceMean",
                18,
                &ins,
                vec![("keepdims", A::Int(keep))],
                1,
            );
        }
    }
    check_op(
        "ReduceSum 11 attr",
        "ReduceSum",
        11,
        &[x(t.clone())],
        vec![("axes", ints(&[1]))],
        1,
    );
}

#[test]
fn softmax_and_layer_norm() {
    let mut r = Rng::new(13);
    let t = r.tensor(&[2, 3, 7], -5.0, 5.0);
    for axis in [-1, 0, 1, 2] {
        check_op(
            &format!("Softmax13 axis {axis}"),
            "Softmax",
            13,
            &[x(t.clone())],
            vec![("axis", A::Int(axis))],
            1,
        );
        check_op(
            &format!("Softmax11 axis {axis}"),
            "Softmax",
            11,
            &[x(t.clone())],
            vec![("axis", A::Int(axis))],
            1,
        );
    }
    check_op(
        "Softmax11 default",
        "Softmax",
        11,
        &[x(t.clone())],
        vec![],
        1,
    );
    for axis in [-1, 1] {
        let ns: Vec<usize> = if axis == -1 { vec![7] } else { vec![3, 7] };
        let ins = vec![
            x(t.clone()),
            init("s", r.tensor(&ns, 0.5, 1.5)),
            init("b", r.tensor(&ns, -1.0, 1.0)),
        ];
        check_op(
            &format!("LayerNorm axis {axis}"),
            "LayerNormalization",
            17,
            &ins,
            vec![("axis", A::Int(axis)), ("epsilon", A::Float(1e-5))],
            1,
        );
        let ins = vec![x(t.clone()), init("s", r.tensor(&ns, 0.5, 1.5))];
        check_op(
            &format!("LayerNorm no bias axis {axis}"),
            "LayerNormalization",
            17,
            &ins,
            vec![("axis", A::Int(axis))],
            1,
        );
    }
}

#[test]
fn shape_ops() {
    let mut r = Rng::new(14);
    let t = r.tensor(&[2, 3, 4, 5], -1.0, 1.0);
    check_op("Flatten default", "Flatten", 13, &[x(t.clone())], vec![], 1);
    for axis in [0, 2, -1] {
        check_op(
            &format!("Flatten {axis}"),
            "Flatten",
            13,
            &[x(t.clone())],
            vec![("axis", A::Int(axis))],
            1,
        );
    }
    for s in [
        vec![6, 20],
        vec![0, -1],
        vec![-1],
        vec![2, 0, 20],
        vec![1, 2, 3, 4, 5],
    ] {
        check_op(
            &format!("Reshape {s:?}"),
            "Reshape",
            14,
            &[x(t.clone()), init("s", i64s(&s))],
            vec![],
            1,
        );
    }
    for perm in [
        vec![0, 1, 2, 3],
        vec![3, 2, 1, 0],
        vec![0, 2, 3, 1],
        vec![1, 0, 3, 2],
    ] {
        check_op(
            &format!("Transpose {perm:?}"),
            "Transpose",
            13,
            &[x(t.clone())],
            vec![("perm", ints(&perm))],
            1,
        );
    }
    check_op(
        "Transpose default",
        "Transpose",
        13,
        &[x(t.clone())],
        vec![],
        1,
    );
    let u = r.tensor(&[3, 1, 4, 1], -1.0, 1.0);
    check_op(
        "Squeeze 11 axes",
        "Squeeze",
        11,
        &[x(u.clone())],
        vec![("axes", ints(&[1]))],
        1,
    );
    // Squeeze without axes (all 1-dims) is valid ONNX that tract rejects; see
    // crates/optc-onnx/tests for its import.
    // negative or unsorted axes import fine (crates/optc-onnx/tests) but panic inside tract 0.23
    check_op(
        "Squeeze 13 input",
        "Squeeze",
        13,
        &[x(u.clone()), init("a", i64s(&[1, 3]))],
        vec![],
        1,
    );
    check_op(
        "Unsqueeze 11",
        "Unsqueeze",
        11,
        &[x(u.clone())],
        vec![("axes", ints(&[0, 5]))],
        1,
    );
    check_op(
        "Unsqueeze 13",
        "Unsqueeze",
        13,
        &[x(u.clone()), init("a", i64s(&[-1, 2]))],
        vec![],
        1,
    );
    check_op("Identity", "Identity", 13, &[x(u.clone())], vec![], 1);
    check_op("Dropout", "Dropout", 13, &[x(u.clone())], vec![], 1);
    // Its mask (inference: all true) where the model uses it.
    check_op("Dropout mask", "Dropout", 13, &[x(u.clone())], vec![], 2);
    check_op(
        "Dropout mask opset 7",
        "Dropout",
        7,
        &[x(u.clone())],
        vec![],
        2,
    );
    check_op(
        "Expand",
        "Expand",
        13,
        &[x(r.tensor(&[3, 1], -1.0, 1.0)), init("s", i64s(&[2, 3, 4]))],
        vec![],
        1,
    );
    check_op(
        "Expand smaller shape",
        "Expand",
        13,
        &[x(r.tensor(&[2, 3, 1], -1.0, 1.0)), init("s", i64s(&[1, 5]))],
        vec![],
        1,
    );
}

#[test]
fn concat_split() {
    let mut r = Rng::new(15);
    let (a, b, c) = (
        r.tensor(&[2, 3, 4], -1.0, 1.0),
        r.tensor(&[2, 5, 4], -1.0, 1.0),
        r.tensor(&[2, 1, 4], -1.0, 1.0),
    );
    check_op(
        "Concat 1",
        "Concat",
        13,
        &[inp("a", a.clone()), inp("b", b.clone()), init("c", c)],
        vec![("axis", A::Int(1))],
        1,
    );
    check_op(
        "Concat -1",
        "Concat",
        13,
        &[
            inp("a", a.clone()),
            inp("b", r.tensor(&[2, 3, 2], -1.0, 1.0)),
        ],
        vec![("axis", A::Int(-1))],
        1,
    );
    check_op(
        "Concat 0",
        "Concat",
        13,
        &[inp("a", a.clone()), inp("b", a.clone())],
        vec![("axis", A::Int(0))],
        1,
    );
    let ints_t = r.tensor_i64(&[3, 2], -9, 9);
    check_op(
        "Concat i64",
        "Concat",
        13,
        &[inp("a", ints_t.clone()), inp("b", ints_t)],
        vec![("axis", A::Int(0))],
        1,
    );
    let t = r.tensor(&[2, 6, 5], -1.0, 1.0);
    check_op(
        "Split 11 equal",
        "Split",
        11,
        &[x(t.clone())],
        vec![("axis", A::Int(1))],
        3,
    );
    check_op(
        "Split 11 sizes",
        "Split",
        11,
        &[x(t.clone())],
        vec![("axis", A::Int(1)), ("split", ints(&[1, 5]))],
        2,
    );
    check_op(
        "Split 13 input",
        "Split",
        13,
        &[x(t.clone()), init("s", i64s(&[2, 3]))],
        vec![("axis", A::Int(-1))],
        2,
    );
    check_op(
        "Split 18 num_outputs",
        "Split",
        18,
        &[x(t.clone())],
        vec![("axis", A::Int(1)), ("num_outputs", A::Int(3))],
        3,
    );
}

#[test]
fn slice_cases() {
    let mut r = Rng::new(16);
    let t = r.tensor(&[4, 7, 6], -1.0, 1.0);
    // (starts, ends, axes, steps)
    type SliceCase<'a> = (&'a [i64], &'a [i64], Option<&'a [i64]>, Option<&'a [i64]>);
    let cases: &[SliceCase] = &[
        (&[1], &[3], Some(&[0]), None),
        (&[0, 2], &[-1, 100], Some(&[1, 2]), None),
        (&[-3], &[i64::MAX], Some(&[1]), None),
        (&[5, 6], &[0, -100], Some(&[1, 2]), Some(&[-2, -1])),
        (&[0, 0, 0], &[4, 7, 6], None, Some(&[2, 3, 4])),
        (&[i64::MAX], &[i64::MIN], Some(&[2]), Some(&[-1])),
        (&[2], &[2], Some(&[0]), None),
    ];
    for (k, (s, e, axes, steps)) in cases.iter().enumerate() {
        let mut ins = vec![x(t.clone()), init("s", i64s(s)), init("e", i64s(e))];
        if let Some(a) = axes {
            ins.push(init("a", i64s(a)));
        } else if steps.is_some() {
            ins.push(("", t.clone(), true));
        }
        if let Some(st) = steps {
            ins.push(init("st", i64s(st)));
        }
        check_op(&format!("Slice case {k}"), "Slice", 13, &ins, vec![], 1);
    }
}

#[test]
fn pad_modes() {
    let mut r = Rng::new(17);
    let t = r.tensor(&[1, 2, 5, 4], -1.0, 1.0);
    for (mode, pads) in [
        ("constant", vec![0, 0, 1, 2, 0, 0, 2, 1]),
        ("reflect", vec![0, 0, 2, 1, 0, 0, 1, 3]),
        ("edge", vec![0, 1, 1, 0, 0, 0, 3, 2]),
        // negative (cropping) pads are valid ONNX but overflow inside tract 0.23; the
        // interpreter and codegen tests cover them.
    ] {
        let mut ins = vec![x(t.clone()), init("p", i64s(&pads))];
        if mode == "constant" {
            ins.push(init("v", Tensor::scalar_f32(0.75)));
        }
        check_op(
            &format!("Pad {mode} {pads:?}"),
            "Pad",
            13,
            &ins,
            vec![("mode", A::Str(mode.into()))],
            1,
        );
    }
    // A last dim of a few vectors: its interior is copied a vector at a time (rows in the
    // padding of an outer dim filled), the table-driven loop before and after it.
    let wide = r.tensor(&[1, 2, 3, 21], -1.0, 1.0);
    for (mode, pads) in [
        ("constant", vec![0, 0, 1, 3, 0, 0, 2, 5]),
        ("reflect", vec![0, 0, 1, 2, 0, 0, 1, 3]),
        ("edge", vec![0, 1, 0, 4, 0, 0, 0, 6]),
    ] {
        let mut ins = vec![x(wide.clone()), init("p", i64s(&pads))];
        if mode == "constant" {
            ins.push(init("v", Tensor::scalar_f32(0.75)));
        }
        check_op(
            &format!("Pad {mode} {pads:?} of [1, 2, 3, 21]"),
            "Pad",
            13,
            &ins,
            vec![("mode", A::Str(mode.into()))],
            1,
        );
    }
    check_op(
        "Pad 2 attrs",
        "Pad",
        2,
        &[x(t.clone())],
        vec![
            ("pads", ints(&[0, 0, 1, 1, 0, 0, 1, 1])),
            ("value", A::Float(-2.0)),
        ],
        1,
    );
    check_op(
        "Pad 18 axes",
        "Pad",
        18,
        &[
            x(t),
            init("p", i64s(&[1, 2, 0, 1])),
            ("", Tensor::scalar_f32(0.0), true),
            init("a", i64s(&[2, 3])),
        ],
        vec![],
        1,
    );
}

/// Negative (cropping) pads, which tract 0.23 does not run, and a rank-0 pad: compiled at
/// -O0 and -O3 against the interpreter.
#[test]
fn pad_crops_against_the_interpreter() {
    let mut r = Rng::new(23);
    let t = r.tensor(&[2, 3, 20], -1.0, 1.0);
    let scalar = Tensor::scalar_f32(0.5);
    for (x_in, mode, pads) in [
        // A rank-0 input: nothing to pad (found by the fuzzer: the last dim's interior).
        (&scalar, "constant", vec![]),
        (&t, "constant", vec![1, 0, -2, 0, -1, 3]),
        (&t, "reflect", vec![0, -1, -3, 0, 0, -4]),
        (&t, "edge", vec![0, 1, 5, 0, 0, -6]),
    ] {
        let label = format!("Pad {mode} {pads:?}");
        let (bytes, inputs) = one_node(
            "Pad",
            13,
            &[x(x_in.clone()), init("p", i64s(&pads))],
            vec![("mode", A::Str(mode.into()))],
            1,
        );
        let graph = optc::import_bytes(&bytes, &optc::Options::default()).unwrap();
        let want = optc_ir::interp::run(&graph, &inputs).unwrap();
        for level in [0u8, 3] {
            let opts = optc::Options {
                opt_level: level,
                ..Default::default()
            };
            let got = optc::compile_bytes(&bytes, &opts)
                .and_then(|mut m| m.run(&inputs))
                .unwrap_or_else(|e| panic!("{label} -O{level}: {e}"));
            assert_eq!(got[0].shape(), want[0].shape(), "{label}");
            assert_eq!(
                got[0].to_f64_vec(),
                want[0].to_f64_vec(),
                "{label} -O{level}"
            );
        }
    }
}

#[test]
fn gather_cases() {
    let mut r = Rng::new(18);
    let data = r.tensor(&[10, 6], -1.0, 1.0);
    let idx = r.tensor_i64(&[2, 3], -10, 10);
    check_op(
        "Gather axis 0 runtime idx",
        "Gather",
        13,
        &[inp("d", data.clone()), inp("i", idx.clone())],
        vec![],
        1,
    );
    check_op(
        "Gather embedding",
        "Gather",
        13,
        &[
            init("d", data.clone()),
            inp("i", r.tensor_i64(&[1, 9], 0, 10)),
        ],
        vec![],
        1,
    );
    check_op(
        "Gather axis 1",
        "Gather",
        13,
        &[inp("d", data.clone()), init("i", i64s(&[5, 0, -1]))],
        vec![("axis", A::Int(1))],
        1,
    );
    check_op(
        "Gather scalar idx",
        "Gather",
        13,
        &[inp("d", data.clone()), init("i", Tensor::scalar_i64(3))],
        vec![],
        1,
    );
    // Consecutive constant indices from a computed tensor are imported as a slice.
    let d3 = r.tensor(&[3, 7, 6], -1.0, 1.0);
    for (label, idx, axis) in [
        ("Gather scalar -1 axis 1", Tensor::scalar_i64(-1), 1),
        ("Gather run axis 2", i64s(&[2, 3, 4]), 2),
        ("Gather run of negatives", i64s(&[-3, -2, -1]), 1),
        ("Gather run from 0 axis 0", i64s(&[0, 1]), 0),
        ("Gather not a run", i64s(&[4, 2, 3]), 1),
    ] {
        check_op(
            label,
            "Gather",
            13,
            &[inp("d", d3.clone()), init("i", idx)],
            vec![("axis", A::Int(axis))],
            1,
        );
    }
    let i32s = Tensor::new(vec![3], optc::Data::I32(vec![1, 0, 2])).unwrap();
    check_op(
        "Gather i32 idx",
        "Gather",
        13,
        &[inp("d", r.tensor(&[2, 3, 4], -1.0, 1.0)), inp("i", i32s)],
        vec![("axis", A::Int(-2))],
        1,
    );
    let di = r.tensor_i64(&[5, 2], 0, 100);
    check_op(
        "Gather i64 data",
        "Gather",
        13,
        &[inp("d", di), inp("i", r.tensor_i64(&[4], 0, 5))],
        vec![],
        1,
    );
}

#[test]
fn constant_and_shape_folding() {
    // Shape -> Gather -> Unsqueeze -> Concat -> Reshape, the pattern exporters emit.
    let mut r = Rng::new(19);
    let mut b = optc_onnx::builder::ModelBuilder::new(13);
    b.input("x", DType::F32, &[2, 3, 4]);
    b.initializer("zero", &Tensor::scalar_i64(0));
    b.initializer("minus1", &i64s(&[-1]));
    b.node("Shape", &["x"], &["s"], vec![]);
    b.node("Gather", &["s", "zero"], &["n"], vec![("axis", A::Int(0))]);
    b.node("Unsqueeze", &["n", "ax"], &["n1"], vec![]);
    b.node(
        "Constant",
        &[],
        &["ax"],
        vec![("value", A::Tensor(i64s(&[0])))],
    );
    b.node(
        "Concat",
        &["n1", "minus1"],
        &["shape"],
        vec![("axis", A::Int(0))],
    );
    b.node("Reshape", &["x", "shape"], &["r"], vec![]);
    b.node(
        "ConstantOfShape",
        &["shape2"],
        &["ones"],
        vec![(
            "value",
            A::Tensor(Tensor::from_f32(vec![1], vec![0.5]).unwrap()),
        )],
    );
    b.node(
        "Constant",
        &[],
        &["shape2"],
        vec![("value", A::Tensor(i64s(&[2, 12])))],
    );
    b.node("Add", &["r", "ones"], &["y"], vec![]);
    b.output("y");
    let bytes = b.to_bytes();
    let inputs = vec![r.tensor(&[2, 3, 4], -1.0, 1.0)];
    check("shape chain", &bytes, &inputs);
    let g = optc::import_bytes(&bytes, &optc::Options::default()).unwrap();
    let kinds: Vec<&str> = g.g.node_weights().map(|n| n.op.name()).collect();
    assert!(
        !kinds.contains(&"gather") && !kinds.contains(&"concat"),
        "shape chain not folded: {kinds:?}"
    );
}

#[test]
fn trigonometric_and_hyperbolic_functions_against_tract() {
    let mut r = Rng::new(31);
    for op in [
        "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
    ] {
        // inside each function's domain
        let (lo, hi) = match op {
            "Asin" | "Acos" | "Atanh" => (-0.99, 0.99),
            "Acosh" => (1.0, 9.0),
            _ => (-3.0, 3.0),
        };
        check_op(
            op,
            op,
            13,
            &[("x", r.tensor(&[5, 7], lo, hi), false)],
            vec![],
            1,
        );
    }
}

#[test]
fn reduce_min_and_prod() {
    let mut r = Rng::new(41);
    let t = r.tensor(&[2, 3, 5, 4], -2.0, 2.0);
    for axes in [vec![1], vec![-1], vec![2, 3], vec![]] {
        for keep in [0, 1] {
            for op in ["ReduceMin", "ReduceProd"] {
                let mut attrs = vec![("keepdims", A::Int(keep))];
                if !axes.is_empty() {
                    attrs.push(("axes", ints(&axes)));
                }
                check_op(
                    &format!("{op} {axes:?} keep{keep}"),
                    op,
                    13,
                    &[x(t.clone())],
                    attrs,
                    1,
                );
            }
        }
    }
}

#[test]
fn arg_max_and_min() {
    let mut r = Rng::new(43);
    let t = r.tensor(&[3, 4, 5], -2.0, 2.0);
    for axis in [0, 1, -1] {
        for keep in [0, 1] {
            for op in ["ArgMax", "ArgMin"] {
                check_op(
                    &format!("{op} axis {axis} keep{keep}"),
                    op,
                    13,
                    &[x(t.clone())],
                    vec![("axis", A::Int(axis)), ("keepdims", A::Int(keep))],
                    1,
                );
            }
        }
    }
}

#[test]
fn cumsum_directions() {
    let mut r = Rng::new(47);
    let t = r.tensor(&[3, 4, 5], -2.0, 2.0);
    for axis in [0, 2, -2] {
        for exclusive in [0, 1] {
            for reverse in [0, 1] {
                check_op(
                    &format!("CumSum axis {axis} exclusive {exclusive} reverse {reverse}"),
                    "CumSum",
                    14,
                    &[x(t.clone()), init("axis", Tensor::scalar_i64(axis))],
                    vec![
                        ("exclusive", A::Int(exclusive)),
                        ("reverse", A::Int(reverse)),
                    ],
                    1,
                );
            }
        }
    }
}

#[test]
fn top_k_largest_and_smallest() {
    let mut r = Rng::new(53);
    let t = r.tensor(&[3, 6, 4], -2.0, 2.0);
    for (axis, k) in [(1, 3), (-1, 2), (0, 3)] {
        for largest in [0, 1] {
            check_op(
                &format!("TopK axis {axis} k {k} largest {largest}"),
                "TopK",
                11,
                &[x(t.clone()), init("k", i64s(&[k]))],
                vec![("axis", A::Int(axis)), ("largest", A::Int(largest))],
                2,
            );
        }
    }
}

#[test]
fn gather_elements_and_nd() {
    let mut r = Rng::new(59);
    let data = r.tensor(&[4, 5, 3], -1.0, 1.0);
    for axis in [0i64, 1, 2] {
        let n = [4, 5, 3][axis as usize];
        let idx = r.tensor_i64(&[3, 2, 3], -n, n);
        check_op(
            &format!("GatherElements axis {axis}"),
            "GatherElements",
            13,
            &[inp("d", data.clone()), inp("i", idx)],
            vec![("axis", A::Int(axis))],
            1,
        );
    }
    // tract takes no negative GatherND / ScatterND indices (the interpreter tests cover them).
    let idx = Tensor::from_i64(vec![3, 2], vec![0, 1, 3, 4, 2, 4]).unwrap();
    check_op(
        "GatherND",
        "GatherND",
        13,
        &[inp("d", data.clone()), inp("i", idx)],
        vec![],
        1,
    );
    let idx = Tensor::from_i64(vec![4, 2, 1], vec![0, 4, 1, 2, 3, 3, 0, 0]).unwrap();
    check_op(
        "GatherND batch_dims 1",
        "GatherND",
        13,
        &[inp("d", data), inp("i", idx)],
        vec![("batch_dims", A::Int(1))],
        1,
    );
}

#[test]
fn scatter_elements_and_nd() {
    let mut r = Rng::new(61);
    let data = r.tensor(&[4, 5], -1.0, 1.0);
    // Distinct targets per column (rows 3, 0 and -3), so the order of updates cannot matter.
    let idx = Tensor::from_i64(vec![3, 5], [[3i64; 5], [0; 5], [-3; 5]].concat()).unwrap();
    let upd = r.tensor(&[3, 5], -1.0, 1.0);
    check_op(
        "ScatterElements axis 0",
        "ScatterElements",
        11,
        &[inp("d", data.clone()), inp("i", idx), inp("u", upd)],
        vec![("axis", A::Int(0))],
        1,
    );
    let idx = Tensor::from_i64(vec![2, 1], vec![2, 3]).unwrap();
    let upd = r.tensor(&[2, 5], -1.0, 1.0);
    check_op(
        "ScatterND rows",
        "ScatterND",
        11,
        &[inp("d", data), inp("i", idx), inp("u", upd)],
        vec![],
        1,
    );
}

#[test]
fn einsum_equations() {
    let mut r = Rng::new(67);
    let cases: Vec<(&str, Vec<Vec<usize>>)> = vec![
        ("ij,jk->ik", vec![vec![3, 4], vec![4, 5]]),
        ("bij,bjk->bik", vec![vec![2, 3, 4], vec![2, 4, 5]]),
        ("i,i->", vec![vec![6], vec![6]]),
        ("ij->i", vec![vec![3, 4]]),
        ("ij->ji", vec![vec![3, 4]]),
        ("ii->i", vec![vec![4, 4]]),
        ("bii->bi", vec![vec![2, 3, 3]]),
        ("...ij,...jk->...ik", vec![vec![2, 3, 4], vec![2, 4, 5]]),
        ("ij,jk", vec![vec![3, 4], vec![4, 5]]),
        (
            "abc,cd,de->abe",
            vec![vec![2, 3, 4], vec![4, 5], vec![5, 2]],
        ),
        ("ij,ij->ij", vec![vec![3, 4], vec![3, 4]]),
        ("i,j->ij", vec![vec![3], vec![4]]),
        // (tract gives "ijk->" the input's shape, not numpy's scalar; "i,i->" covers that.)
        ("ijk->j", vec![vec![2, 3, 4]]),
        ("bhqd,bhkd->bhqk", vec![vec![2, 2, 3, 4], vec![2, 2, 5, 4]]),
        ("ijk,jil->kl", vec![vec![2, 3, 4], vec![3, 2, 5]]),
    ];
    let names = ["a", "b", "c"];
    for (eq, shapes) in cases {
        let ins: Vec<_> = shapes
            .iter()
            .zip(names)
            .map(|(s, n)| inp(n, r.tensor(s, -1.0, 1.0)))
            .collect();
        check_op(
            &format!("Einsum {eq}"),
            "Einsum",
            12,
            &ins,
            vec![("equation", A::Str(eq.to_string()))],
            1,
        );
    }
}

/// numpy's einsum by definition: every assignment of the labels, the product of the
/// operands' elements added into the output element (explicit equations, no ellipsis).
fn einsum_by_definition(eq: &str, ins: &[Tensor]) -> (Vec<usize>, Vec<f64>) {
    let (lhs, out) = eq.split_once("->").unwrap();
    let terms: Vec<Vec<char>> = lhs.split(',').map(|t| t.chars().collect()).collect();
    let mut labels: Vec<char> = vec![];
    let mut extent = std::collections::HashMap::new();
    for (t, x) in terms.iter().zip(ins) {
        for (&c, &n) in t.iter().zip(x.shape()) {
            if !labels.contains(&c) {
                labels.push(c);
            }
            extent.insert(c, n);
        }
    }
    let out: Vec<char> = out.chars().collect();
    let oshape: Vec<usize> = out.iter().map(|c| extent[c]).collect();
    let mut y = vec![0f64; oshape.iter().product()];
    let total: usize = labels.iter().map(|c| extent[c]).product();
    let flat = |ls: &[char], at: &std::collections::HashMap<char, usize>| {
        ls.iter().fold(0, |o, c| o * extent[c] + at[c])
    };
    for mut p in 0..total {
        let mut at = std::collections::HashMap::new();
        for c in labels.iter().rev() {
            at.insert(*c, p % extent[c]);
            p /= extent[c];
        }
        let prod: f64 = terms
            .iter()
            .zip(ins)
            .map(|(t, x)| x.as_f32().unwrap()[flat(t, &at)] as f64)
            .product();
        y[flat(&out, &at)] += prod;
    }
    (oshape, y)
}

/// The equations tract does not take: optc against einsum's definition.
#[test]
fn einsum_beyond_tract() {
    let mut r = Rng::new(71);
    for (eq, shapes) in [
        ("ijk->", vec![vec![2, 3, 4]]),
        ("iij,jk->ik", vec![vec![3, 3, 4], vec![4, 2]]),
        ("iji,jk->k", vec![vec![3, 2, 3], vec![2, 4]]),
    ] {
        let ins: Vec<Tensor> = shapes.iter().map(|s| r.tensor(s, -1.0, 1.0)).collect();
        let mut b = optc_onnx::builder::ModelBuilder::new(12);
        let names = ["a", "b"];
        for (n, t) in names.iter().zip(&ins) {
            let dims: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
            b.input(n, DType::F32, &dims);
        }
        b.node(
            "Einsum",
            &names[..ins.len()],
            &["y"],
            vec![("equation", A::Str(eq.to_string()))],
        );
        b.output("y");
        let mut m = optc::compile_bytes(&b.to_bytes(), &optc::Options::default()).unwrap();
        let got = m.run(&ins).unwrap().remove(0);
        let (shape, want) = einsum_by_definition(eq, &ins);
        assert_eq!(got.shape(), &shape[..], "{eq}");
        for (g, w) in got.as_f32().unwrap().iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{eq}: {g} vs {w}");
        }
    }
}
