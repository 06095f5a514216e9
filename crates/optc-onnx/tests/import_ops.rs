//! Each op imports to the right IR op, and the IR's inferred output shapes agree with the
//! shapes tract (an independent ONNX implementation) infers for the same model.

mod common;

use common::{
    binary_model, f32t, i64t, import, import_checked, one_node_model, only_op, ops, unary_model,
};
use optc_ir::{DType, Op, PadMode, ReduceKind, SliceDim, Tensor, UnaryOp};
use optc_onnx::builder::{Attr, ModelBuilder};

#[test]
fn elementwise_unary_ops() {
    type Case<'a> = (&'a str, Vec<(&'a str, Attr)>, UnaryOp);
    let cases: Vec<Case> = vec![
        ("Relu", vec![], UnaryOp::Relu),
        ("LeakyRelu", vec![], UnaryOp::LeakyRelu { alpha: 0.01 }),
        (
            "LeakyRelu",
            vec![("alpha", Attr::Float(0.2))],
            UnaryOp::LeakyRelu { alpha: 0.2 },
        ),
        ("Sigmoid", vec![], UnaryOp::Sigmoid),
        (
            "HardSigmoid",
            vec![],
            UnaryOp::HardSigmoid {
                alpha: 0.2,
                beta: 0.5,
            },
        ),
        ("HardSwish", vec![], UnaryOp::HardSwish),
        ("Tanh", vec![], UnaryOp::Tanh),
        ("Erf", vec![], UnaryOp::Erf),
        ("Exp", vec![], UnaryOp::Exp),
        ("Log", vec![], UnaryOp::Log),
        ("Sqrt", vec![], UnaryOp::Sqrt),
        ("Neg", vec![], UnaryOp::Neg),
        ("Abs", vec![], UnaryOp::Abs),
    ];
    for (op, attrs, want) in cases {
        let g = import_checked(&unary_model(17, op, &[2, 3], attrs));
        assert_eq!(only_op(&g), Op::Unary(want), "{op}");
    }
}

#[test]
fn clip_opset_6_attributes_and_11_inputs() {
    let g = import_checked(&unary_model(
        6,
        "Clip",
        &[4],
        vec![("min", Attr::Float(-1.0)), ("max", Attr::Float(2.0))],
    ));
    assert_eq!(
        only_op(&g),
        Op::Unary(UnaryOp::Clip {
            min: -1.0,
            max: 2.0
        })
    );

    let mut m = ModelBuilder::new(11);
    m.input("x", DType::F32, &[4])
        .initializer("lo", &Tensor::scalar_f32(0.0))
        .initializer("hi", &Tensor::scalar_f32(6.0))
        .node("Clip", &["x", "lo", "hi"], &["y"], vec![])
        .node("Clip", &["y", "", "hi"], &["z"], vec![])
        .output("z");
    let g = import_checked(&m);
    assert_eq!(
        ops(&g),
        vec![
            Op::Unary(UnaryOp::Clip { min: 0.0, max: 6.0 }),
            Op::Unary(UnaryOp::Clip {
                min: f32::NEG_INFINITY,
                max: 6.0
            })
        ]
    );
}

#[test]
fn binary_and_variadic() {
    for op in ["Add", "Sub", "Mul", "Div", "Pow"] {
        import_checked(&binary_model(op, &[2, 1, 4], &[3, 1]));
    }
    for op in ["Equal", "Greater", "Less", "GreaterOrEqual", "LessOrEqual"] {
        import_checked(&binary_model(op, &[2, 4], &[4]));
    }
    let mut m = ModelBuilder::new(13);
    m.input("a", DType::Bool, &[3])
        .input("b", DType::Bool, &[3])
        .node("And", &["a", "b"], &["c"], vec![])
        .node("Or", &["c", "b"], &["d"], vec![])
        .node("Not", &["d"], &["y"], vec![])
        .output("y");
    import_checked(&m);
    // Max of three inputs: a chain of two binary ops. Min of one: identity.
    let mut m = ModelBuilder::new(13);
    m.input("a", DType::F32, &[3])
        .input("b", DType::F32, &[3])
        .input("c", DType::F32, &[2, 3])
        .node("Max", &["a", "b", "c"], &["y"], vec![])
        .node("Min", &["y"], &["z"], vec![])
        .output("z");
    let g = import_checked(&m);
    assert_eq!(ops(&g).len(), 2);
}

#[test]
fn gemm_matmul() {
    let g = import_checked(&one_node_model(
        13,
        "Gemm",
        &[("a", DType::F32, &[4, 3])],
        &[("b", f32t(&[5, 4])), ("c", f32t(&[5]))],
        vec![
            ("transA", Attr::Int(1)),
            ("transB", Attr::Int(1)),
            ("alpha", Attr::Float(0.5)),
        ],
    ));
    assert_eq!(
        only_op(&g),
        Op::Gemm {
            alpha: 0.5,
            beta: 1.0,
            trans_a: true,
            trans_b: true
        }
    );
    let m = binary_model("MatMul", &[2, 1, 4, 3], &[5, 3, 6]);
    assert_eq!(only_op(&import_checked(&m)), Op::MatMul);
}

fn conv_model(x: &[i64], w: &[usize], attrs: Vec<(&str, Attr)>, bias: bool) -> ModelBuilder {
    let mut constants = vec![("w", f32t(w))];
    if bias {
        constants.push(("b", f32t(&[w[0]])));
    }
    one_node_model(13, "Conv", &[("x", DType::F32, x)], &constants, attrs)
}

#[test]
fn conv_variants() {
    // 2-D with pads and strides.
    let g = import_checked(&conv_model(
        &[1, 3, 9, 8],
        &[4, 3, 3, 3],
        vec![
            ("pads", Attr::Ints(vec![1, 0, 2, 1])),
            ("strides", Attr::Ints(vec![2, 1])),
        ],
        true,
    ));
    match only_op(&g) {
        Op::Conv { window, group } => {
            assert_eq!(group, 1);
            assert_eq!(window.kernel, vec![3, 3]);
            assert_eq!(window.pads, vec![1, 0, 2, 1]);
            assert_eq!(window.strides, vec![2, 1]);
        }
        o => panic!("{o:?}"),
    }
    // Depthwise with dilation, kernel from weight.
    import_checked(&conv_model(
        &[1, 6, 10, 10],
        &[6, 1, 3, 3],
        vec![
            ("group", Attr::Int(6)),
            ("dilations", Attr::Ints(vec![2, 2])),
        ],
        false,
    ));
    // 1-D.
    import_checked(&conv_model(
        &[2, 4, 11],
        &[8, 2, 3],
        vec![("group", Attr::Int(2))],
        true,
    ));
    // auto_pad variants, odd sizes and strides.
    for ap in ["SAME_UPPER", "SAME_LOWER", "VALID"] {
        for (h, s) in [(7, 2), (8, 3), (5, 1)] {
            let g = import_checked(&conv_model(
                &[1, 2, h, h + 1],
                &[3, 2, 4, 3],
                vec![
                    ("auto_pad", Attr::Str(ap.into())),
                    ("strides", Attr::Ints(vec![s, s])),
                ],
                false,
            ));
            if let Op::Conv { window, .. } = only_op(&g) {
                let total = window.pads[0] + window.pads[2];
                if ap == "SAME_LOWER" {
                    assert!(window.pads[0] >= window.pads[2]);
                } else if ap == "SAME_UPPER" {
                    assert!(window.pads[0] <= window.pads[2]);
                } else {
                    assert_eq!(total, 0);
                }
            }
        }
    }
}

#[test]
fn pools() {
    let g = import_checked(&unary_model(
        13,
        "MaxPool",
        &[1, 2, 9, 9],
        vec![
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("strides", Attr::Ints(vec![2, 2])),
            ("ceil_mode", Attr::Int(1)),
        ],
    ));
    assert!(matches!(only_op(&g), Op::MaxPool { window } if window.ceil_mode));
    import_checked(&unary_model(
        13,
        "MaxPool",
        &[1, 2, 10, 10],
        vec![
            ("kernel_shape", Attr::Ints(vec![2, 3])),
            ("auto_pad", Attr::Str("SAME_UPPER".into())),
            ("strides", Attr::Ints(vec![3, 2])),
        ],
    ));
    let g = import_checked(&unary_model(
        13,
        "AveragePool",
        &[1, 2, 8, 8],
        vec![
            ("kernel_shape", Attr::Ints(vec![3, 3])),
            ("pads", Attr::Ints(vec![1, 1, 1, 1])),
            ("count_include_pad", Attr::Int(1)),
        ],
    ));
    assert!(matches!(
        only_op(&g),
        Op::AveragePool {
            count_include_pad: true,
            ..
        }
    ));
    let g = import_checked(&unary_model(13, "GlobalAveragePool", &[1, 4, 5, 6], vec![]));
    assert_eq!(
        only_op(&g),
        Op::Reduce {
            kind: ReduceKind::Mean,
            axes: vec![2, 3],
            keepdims: true
        }
    );
    let g = import_checked(&unary_model(13, "GlobalMaxPool", &[1, 4, 5], vec![]));
    assert!(matches!(
        only_op(&g),
        Op::Reduce {
            kind: ReduceKind::Max,
            ..
        }
    ));
}

#[test]
fn batchnorm_layernorm() {
    let m = one_node_model(
        15,
        "BatchNormalization",
        &[("x", DType::F32, &[2, 3, 4, 4])],
        &["s", "b", "m", "v"].map(|p| (p, f32t(&[3]))),
        vec![],
    );
    assert_eq!(
        only_op(&import_checked(&m)),
        Op::BatchNorm { epsilon: 1e-5 }
    );

    let m = one_node_model(
        17,
        "LayerNormalization",
        &[("x", DType::F32, &[2, 5, 8])],
        &[("s", f32t(&[8])), ("b", f32t(&[8]))],
        vec![],
    );
    assert_eq!(
        only_op(&import_checked(&m)),
        Op::LayerNorm {
            axis: 2,
            epsilon: 1e-5
        }
    );
}

#[test]
fn reductions_across_opsets() {
    // ReduceSum: attribute axes at opset 11, input axes at 13.
    let g = import_checked(&unary_model(
        11,
        "ReduceSum",
        &[2, 3, 4],
        vec![
            ("axes", Attr::Ints(vec![-1, 0])),
            ("keepdims", Attr::Int(0)),
        ],
    ));
    assert_eq!(
        only_op(&g),
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![0, 2],
            keepdims: false
        }
    );
    let m = one_node_model(
        13,
        "ReduceSum",
        &[("x", DType::F32, &[2, 3, 4])],
        &[("ax", i64t(&[1]))],
        vec![],
    );
    assert_eq!(
        only_op(&import_checked(&m)),
        Op::Reduce {
            kind: ReduceKind::Sum,
            axes: vec![1],
            keepdims: true
        }
    );
    // ReduceMean: attribute at 13, input at 18; empty axes reduce all.
    import_checked(&unary_model(
        13,
        "ReduceMean",
        &[2, 3, 4],
        vec![("axes", Attr::Ints(vec![1, 2]))],
    ));
    let mut m = ModelBuilder::new(18);
    m.input("x", DType::F32, &[2, 3, 4])
        .initializer("ax", &i64t(&[-2]))
        .node("ReduceMax", &["x", "ax"], &["y"], vec![])
        .node("ReduceL2", &["y"], &["z"], vec![])
        .output("z");
    let o = ops(&import_checked(&m));
    assert_eq!(
        o[1],
        Op::Reduce {
            kind: ReduceKind::L2,
            axes: vec![0, 1, 2],
            keepdims: true
        }
    );
    // noop_with_empty_axes
    let g = import_checked(&unary_model(
        18,
        "ReduceMean",
        &[2, 3],
        vec![("noop_with_empty_axes", Attr::Int(1))],
    ));
    assert_eq!(only_op(&g), Op::Unary(UnaryOp::Identity));
}

#[test]
fn softmax_opset_11_vs_13() {
    // opset 13: a single axis (default -1).
    let g = import_checked(&unary_model(
        13,
        "Softmax",
        &[2, 3, 4],
        vec![("axis", Attr::Int(1))],
    ));
    assert_eq!(only_op(&g), Op::Softmax { axis: 1 });
    // opset 11: axis 1 flattens to 2-D [2, 12].
    let g = import_checked(&unary_model(11, "Softmax", &[2, 3, 4], vec![]));
    assert_eq!(
        ops(&g),
        vec![
            Op::Reshape { shape: vec![2, 12] },
            Op::Softmax { axis: 1 },
            Op::Reshape {
                shape: vec![2, 3, 4]
            }
        ]
    );
    let g = import_checked(&unary_model(
        11,
        "Softmax",
        &[2, 3, 4],
        vec![("axis", Attr::Int(-1))],
    ));
    assert_eq!(only_op(&g), Op::Softmax { axis: 2 });
}

#[test]
fn shape_ops() {
    // Concat reads one input twice.
    let mut concat = ModelBuilder::new(13);
    concat
        .input("a", DType::F32, &[2, 3])
        .input("b", DType::F32, &[2, 5])
        .node(
            "Concat",
            &["a", "b", "a"],
            &["y"],
            vec![("axis", Attr::Int(-1))],
        )
        .output("y");
    let x = |shape: &'static [i64]| [("x", DType::F32, shape)];
    let cases: Vec<(ModelBuilder, Op)> = vec![
        (
            unary_model(13, "Flatten", &[2, 3, 4], vec![("axis", Attr::Int(2))]),
            Op::Reshape { shape: vec![6, 4] },
        ),
        (
            unary_model(13, "Transpose", &[2, 3, 4], vec![]),
            Op::Transpose {
                perm: vec![2, 1, 0],
            },
        ),
        (
            one_node_model(
                14,
                "Reshape",
                &x(&[2, 3, 4]),
                &[("s", i64t(&[0, -1, 2]))],
                vec![],
            ),
            Op::Reshape {
                shape: vec![2, 6, 2],
            },
        ),
        (concat, Op::Concat { axis: 1 }),
        (
            one_node_model(
                13,
                "Gather",
                &x(&[5, 4]),
                &[(
                    "i",
                    Tensor::from_i64(vec![2, 2], vec![0, -1, 2, 1]).unwrap(),
                )],
                vec![("axis", Attr::Int(-2))],
            ),
            Op::Gather { axis: 0 },
        ),
        (
            one_node_model(
                13,
                "Expand",
                &x(&[3, 1]),
                &[("s", i64t(&[2, 1, 4]))],
                vec![],
            ),
            Op::Expand {
                shape: vec![2, 1, 4],
            },
        ),
        (
            one_node_model(
                13,
                "Where",
                &[
                    ("c", DType::Bool, &[3, 1]),
                    ("a", DType::F32, &[3, 4]),
                    ("b", DType::F32, &[4]),
                ],
                &[],
                vec![],
            ),
            Op::Where,
        ),
        (
            unary_model(13, "Cast", &[3], vec![("to", Attr::Int(7))]),
            Op::Cast { to: DType::I64 },
        ),
        (
            unary_model(13, "IsNaN", &[3], vec![]),
            Op::Unary(UnaryOp::IsNaN),
        ),
    ];
    for (m, want) in cases {
        assert_eq!(only_op(&import_checked(&m)), want);
    }
}

#[test]
fn squeeze_unsqueeze_11_vs_13() {
    let g = import_checked(&unary_model(
        11,
        "Squeeze",
        &[1, 3, 1, 2],
        vec![("axes", Attr::Ints(vec![-2]))],
    ));
    assert_eq!(
        only_op(&g),
        Op::Reshape {
            shape: vec![1, 3, 2]
        }
    );
    // tract needs `axes` at opset 11; the spec squeezes every 1-dim when it is absent.
    let g = import(&unary_model(11, "Squeeze", &[1, 3, 1, 2], vec![]));
    assert_eq!(only_op(&g), Op::Reshape { shape: vec![3, 2] });
    let g = import_checked(&unary_model(
        11,
        "Unsqueeze",
        &[3, 2],
        vec![("axes", Attr::Ints(vec![0, -1]))],
    ));
    assert_eq!(
        only_op(&g),
        Op::Reshape {
            shape: vec![1, 3, 2, 1]
        }
    );

    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[1, 3, 1, 2])
        .initializer("a", &i64t(&[0]))
        .initializer("b", &i64t(&[1, 3]))
        .node("Squeeze", &["x", "a"], &["y"], vec![])
        .node("Unsqueeze", &["y", "b"], &["z"], vec![])
        .output("z");
    let g = import_checked(&m);
    assert_eq!(
        ops(&g),
        vec![
            Op::Reshape {
                shape: vec![3, 1, 2]
            },
            Op::Reshape {
                shape: vec![3, 1, 1, 1, 2]
            }
        ]
    );
}

/// A Split at `opset` of the f32 input `x` of `shape` into `parts` outputs, reading the
/// part sizes from an input when `sizes` is given.
fn split_model(
    opset: i64,
    shape: &[i64],
    sizes: Option<&[i64]>,
    parts: usize,
    attrs: Vec<(&str, Attr)>,
) -> ModelBuilder {
    let outputs = &["a", "b", "c"][..parts];
    let mut m = ModelBuilder::new(opset);
    m.input("x", DType::F32, shape);
    let mut inputs = vec!["x"];
    if let Some(s) = sizes {
        m.initializer("s", &i64t(s));
        inputs.push("s");
    }
    m.node("Split", &inputs, outputs, attrs);
    for o in outputs {
        m.output(o);
    }
    m
}

#[test]
fn split_11_13_18() {
    let cases = [
        (
            split_model(
                11,
                &[2, 7],
                None,
                2,
                vec![("axis", Attr::Int(1)), ("split", Attr::Ints(vec![3, 4]))],
            ),
            1,
            vec![3, 4],
        ),
        (
            split_model(13, &[6, 2], Some(&[1, 5]), 2, vec![]),
            0,
            vec![1, 5],
        ),
        (split_model(13, &[6, 2], None, 3, vec![]), 0, vec![2, 2, 2]),
        (
            split_model(
                18,
                &[2, 7],
                None,
                3,
                vec![("axis", Attr::Int(-1)), ("num_outputs", Attr::Int(3))],
            ),
            1,
            vec![3, 3, 1],
        ),
    ];
    for (m, axis, sizes) in cases {
        assert_eq!(only_op(&import_checked(&m)), Op::Split { axis, sizes });
    }
}

fn slice_model(
    shape: &[i64],
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> ModelBuilder {
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, shape)
        .initializer("st", &i64t(starts))
        .initializer("en", &i64t(ends));
    let mut ins = vec!["x", "st", "en"];
    if let Some(a) = axes {
        m.initializer("ax", &i64t(a));
        ins.push("ax");
    }
    if let Some(s) = steps {
        if axes.is_none() {
            ins.push("");
        }
        m.initializer("sp", &i64t(s));
        ins.push("sp");
    }
    m.node("Slice", &ins, &["y"], vec![]).output("y");
    m
}

#[test]
fn slice_variants() {
    type V = Vec<i64>;
    type Case = (V, V, V, Option<V>, Option<V>);
    let cases: Vec<Case> = vec![
        (vec![10], vec![2], vec![8], None, None),
        (vec![10], vec![-3], vec![i64::MAX], None, None),
        (vec![10], vec![-1], vec![i64::MIN], None, Some(vec![-1])),
        (vec![10], vec![8], vec![1], None, Some(vec![-3])),
        (vec![10], vec![20], vec![-20], None, Some(vec![-2])),
        (
            vec![4, 6, 8],
            vec![1, -5],
            vec![100, 7],
            Some(vec![2, 0]),
            Some(vec![3, 1]),
        ),
        (vec![4, 6], vec![0], vec![-1], Some(vec![-1]), None),
    ];
    for (shape, st, en, ax, sp) in cases {
        import_checked(&slice_model(&shape, &st, &en, ax.as_deref(), sp.as_deref()));
    }
    // Empty result (tract rejects start > end, so no tract comparison here).
    let g = import(&slice_model(&[10, 2], &[5], &[2], None, None));
    assert_eq!(g.output_types()[0].shape, vec![0, 2]);
    // One exact check of the normalized form.
    let g = import_checked(&slice_model(&[10], &[-1], &[i64::MIN], None, Some(&[-2])));
    assert_eq!(
        only_op(&g),
        Op::Slice {
            dims: vec![SliceDim {
                start: 9,
                step: -2,
                len: 5
            }]
        }
    );
    // opset 9 attributes.
    let g = import_checked(&unary_model(
        9,
        "Slice",
        &[4, 5],
        vec![
            ("starts", Attr::Ints(vec![1])),
            ("ends", Attr::Ints(vec![-1])),
            ("axes", Attr::Ints(vec![1])),
        ],
    ));
    assert_eq!(
        only_op(&g),
        Op::Slice {
            dims: vec![
                SliceDim {
                    start: 0,
                    step: 1,
                    len: 4
                },
                SliceDim {
                    start: 1,
                    step: 1,
                    len: 3
                }
            ]
        }
    );
}

#[test]
fn pad_opsets() {
    let g = import_checked(&unary_model(
        2,
        "Pad",
        &[2, 3],
        vec![
            ("pads", Attr::Ints(vec![0, 1, 1, 2])),
            ("value", Attr::Float(1.5)),
        ],
    ));
    assert_eq!(
        only_op(&g),
        Op::Pad {
            pads: vec![0, 1, 1, 2],
            mode: PadMode::Constant,
            value: 1.5
        }
    );
    let m = one_node_model(
        13,
        "Pad",
        &[("x", DType::F32, &[2, 3, 4])],
        &[("p", i64t(&[0, 1, 2, 0, 1, 2]))],
        vec![("mode", Attr::Str("reflect".into()))],
    );
    assert!(matches!(
        only_op(&import_checked(&m)),
        Op::Pad {
            mode: PadMode::Reflect,
            ..
        }
    ));
    let m = one_node_model(
        18,
        "Pad",
        &[("x", DType::F32, &[2, 3, 4])],
        &[
            ("p", i64t(&[1, 2, 3, 0])),
            ("v", Tensor::scalar_f32(-1.0)),
            ("a", i64t(&[-1, 0])),
        ],
        vec![("mode", Attr::Str("edge".into()))],
    );
    assert_eq!(
        only_op(&import_checked(&m)),
        Op::Pad {
            pads: vec![2, 0, 1, 0, 0, 3],
            mode: PadMode::Edge,
            value: -1.0
        }
    );
    let m = one_node_model(
        19,
        "Pad",
        &[("x", DType::F32, &[2, 3])],
        &[("p", i64t(&[0, 4, 0, 1]))],
        vec![("mode", Attr::Str("wrap".into()))],
    );
    // (tract has no wrap mode to check the output type against.)
    let g = import(&m);
    assert_eq!(g.output_types()[0].shape, vec![2, 8]);
    assert_eq!(
        only_op(&g),
        Op::Pad {
            pads: vec![0, 4, 0, 1],
            mode: PadMode::Wrap,
            value: 0.0
        }
    );
}

#[test]
fn identity_dropout_and_io_aliases() {
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[3])
        .initializer("w", &f32t(&[3]))
        .node("Dropout", &["x"], &["d"], vec![])
        .node("Identity", &["d"], &["y"], vec![])
        .output("y")
        .output("w");
    let g = import_checked(&m);
    assert_eq!(g.outputs[0].name, "y");
    assert_eq!(g.outputs[1].name, "w");
    assert_eq!(
        ops(&g),
        vec![Op::Unary(UnaryOp::Identity), Op::Unary(UnaryOp::Identity)]
    );
}

#[test]
fn initializer_encodings_and_dtypes() {
    // raw and typed-field encodings import to the same constants, for every dtype.
    let ts = [
        f32t(&[2, 3]),
        Tensor::from_i64(vec![3], vec![-1, 0, i64::MAX]).unwrap(),
        Tensor::new(vec![2], optc_ir::Data::I32(vec![-7, 9])).unwrap(),
        Tensor::new(vec![3], optc_ir::Data::Bool(vec![true, false, true])).unwrap(),
        Tensor::new(vec![2], optc_ir::Data::U8(vec![0, 255])).unwrap(),
        Tensor::new(vec![2], optc_ir::Data::I8(vec![-128, 127])).unwrap(),
    ];
    for typed in [false, true] {
        let mut m = ModelBuilder::new(13);
        for (i, t) in ts.iter().enumerate() {
            let n = format!("t{i}");
            if typed {
                m.initializer_typed_fields(&n, t);
            } else {
                m.initializer(&n, t);
            }
            m.output(&n);
        }
        let g = import(&m);
        for (i, t) in ts.iter().enumerate() {
            let v = g.outputs[i].value;
            let c = match g.const_value(v) {
                Some(c) => c.clone(),
                None => {
                    // Identity over the constant.
                    let ins = g.node_inputs(v.node);
                    g.const_value(ins[0]).expect("constant").clone()
                }
            };
            assert_eq!(&*c, t, "typed={typed} t{i}");
        }
    }
}
