//! Text format tests: round-trips over every op, stability, hand-written texts, parse errors.

use optc_ir::interp::run;
use optc_ir::text::{parse, print};
use optc_ir::*;
use std::sync::Arc;

fn tf(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_f32(shape.to_vec(), v).unwrap()
}
fn ramp(shape: &[usize], scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    tf(
        shape,
        (0..n)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) * scale)
            .collect(),
    )
}
fn win(k: &[usize], s: &[usize], p: &[usize], d: &[usize], ceil: bool) -> Window {
    Window {
        kernel: k.to_vec(),
        strides: s.to_vec(),
        pads: p.to_vec(),
        dilations: d.to_vec(),
        ceil_mode: ceil,
    }
}

/// A graph that uses every `Op` variant (and every unary/binary/reduce kind).
fn every_op_graph() -> Graph {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[1, 4, 6, 6]));
    let idx = g.add_input("idx", TensorType::new(DType::I64, vec![2]));
    let w = g.add_const("conv.weight", ramp(&[4, 4, 3, 3], 0.05));
    let bias = g.add_const("conv.bias", tf(&[4], vec![0.1, -0.2, 0.3, 0.0]));
    let conv = g
        .add(
            "/layer1/Conv_output_0",
            Op::Conv {
                window: win(&[3, 3], &[1, 1], &[1, 1, 1, 1], &[1, 1], false),
                group: 1,
            },
            &[x, w, bias],
        )
        .unwrap();
    let wdw = g.add_const("dw", ramp(&[4, 1, 3, 3], 0.1));
    let _dw = g
        .add(
            "dw_conv",
            Op::Conv {
                window: win(&[3, 3], &[2, 2], &[1, 0, 1, 0], &[1, 2], false),
                group: 4,
            },
            &[x, wdw],
        )
        .unwrap();
    let bn_p: Vec<Value> = ["s", "b", "m", "v"]
        .iter()
        .enumerate()
        .map(|(i, n)| {
            g.add_const(
                &format!("bn.{n}"),
                tf(&[4], vec![1.0 + i as f32, 0.5, 0.25, 2.0]),
            )
        })
        .collect();
    let bn = g
        .add(
            "bn",
            Op::BatchNorm { epsilon: 1e-5 },
            &[conv, bn_p[0], bn_p[1], bn_p[2], bn_p[3]],
        )
        .unwrap();
    let mp = g
        .add(
            "mp",
            Op::MaxPool {
                window: win(&[2, 2], &[2, 2], &[0, 0, 0, 0], &[1, 1], true),
            },
            &[bn],
        )
        .unwrap();
    let ap = g
        .add(
            "ap",
            Op::AveragePool {
                window: win(&[3, 3], &[2, 2], &[1, 1, 0, 0], &[1, 1], true),
                count_include_pad: true,
            },
            &[bn],
        )
        .unwrap();
    let unaries = [
        UnaryOp::Identity,
        UnaryOp::Relu,
        UnaryOp::LeakyRelu { alpha: 0.1 },
        UnaryOp::Clip {
            min: f32::NEG_INFINITY,
            max: 6.0,
        },
        UnaryOp::Clip {
            min: -1e-7,
            max: f32::INFINITY,
        },
        UnaryOp::Sigmoid,
        UnaryOp::HardSigmoid {
            alpha: 0.2,
            beta: 0.5,
        },
        UnaryOp::HardSwish,
        UnaryOp::Silu,
        UnaryOp::Gelu,
        UnaryOp::GeluTanh,
        UnaryOp::Tanh,
        UnaryOp::Erf,
        UnaryOp::Exp,
        UnaryOp::Log,
        UnaryOp::Sqrt,
        UnaryOp::Neg,
        UnaryOp::Abs,
    ];
    let mut outs = vec![];
    for (i, u) in unaries.into_iter().enumerate() {
        outs.push(g.add(&format!("u{i}"), Op::Unary(u), &[mp]).unwrap());
    }
    let nan = g
        .add("nan", Op::Unary(UnaryOp::IsNaN), &[outs[11]])
        .unwrap();
    let not = g.add("not", Op::Unary(UnaryOp::Not), &[nan]).unwrap();
    let two = g.add_const("two", Tensor::scalar_f32(2.0));
    let mut bins = vec![];
    for b in [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Pow,
        BinaryOp::Max,
        BinaryOp::Min,
        BinaryOp::Equal,
        BinaryOp::Greater,
        BinaryOp::Less,
        BinaryOp::GreaterOrEqual,
        BinaryOp::LessOrEqual,
    ] {
        bins.push(
            g.add(&format!("bin.{b:?}"), Op::Binary(b), &[mp, two])
                .unwrap(),
        );
    }
    let and = g
        .add("and", Op::Binary(BinaryOp::And), &[not, bins[8]])
        .unwrap();
    let or = g
        .add("or", Op::Binary(BinaryOp::Or), &[and, bins[9]])
        .unwrap();
    let wh = g.add("where", Op::Where, &[or, mp, ap]).unwrap();
    let cast = g.add("cast", Op::Cast { to: DType::I64 }, &[wh]).unwrap();
    let ipow_e = g.add_const("e", Tensor::new(vec![1], Data::I32(vec![2])).unwrap());
    let ipow = g
        .add("ipow", Op::Binary(BinaryOp::Pow), &[cast, ipow_e])
        .unwrap();
    let r = g
        .add("reshape", Op::Reshape { shape: vec![4, 9] }, &[wh])
        .unwrap();
    let t = g
        .add("transpose", Op::Transpose { perm: vec![1, 0] }, &[r])
        .unwrap();
    let mw = g.add_const("mw", ramp(&[4, 5], 0.5));
    let mm = g.add("matmul", Op::MatMul, &[t, mw]).unwrap();
    let gb = g.add_const("gb", ramp(&[5, 4], 0.25));
    let gc = g.add_const("gc", tf(&[5], vec![1.0, 2.0, 3.0, 4.0, 5.0]));
    let gemm = Op::Gemm {
        alpha: 0.5,
        beta: 1.5,
        trans_a: false,
        trans_b: true,
    };
    let gm = g.add("gemm", gemm.clone(), &[t, gb, gc]).unwrap();
    let gm2 = g.add("gemm_noc", gemm, &[t, gb]).unwrap();
    let mut reds = vec![];
    for (i, k) in [
        ReduceKind::Sum,
        ReduceKind::Mean,
        ReduceKind::Max,
        ReduceKind::L2,
    ]
    .into_iter()
    .enumerate()
    {
        reds.push(
            g.add(
                &format!("red{i}"),
                Op::Reduce {
                    kind: k,
                    axes: vec![1],
                    keepdims: i % 2 == 0,
                },
                &[mm],
            )
            .unwrap(),
        );
    }
    let sm = g.add("softmax", Op::Softmax { axis: 1 }, &[gm]).unwrap();
    let ln = g
        .add(
            "ln",
            Op::LayerNorm {
                axis: 1,
                epsilon: 1e-5,
            },
            &[sm, gc, gc],
        )
        .unwrap();
    let cat = g
        .add("cat", Op::Concat { axis: 0 }, &[ln, gm2, mm])
        .unwrap();
    let sp = g
        .add_node(
            "sp",
            Op::Split {
                axis: 0,
                sizes: vec![10, 17],
            },
            &[cat],
        )
        .unwrap();
    let sl = g
        .add(
            "slice",
            Op::Slice {
                dims: vec![
                    SliceDim {
                        start: 16,
                        step: -2,
                        len: 8,
                    },
                    SliceDim {
                        start: 1,
                        step: 1,
                        len: 3,
                    },
                ],
            },
            &[sp[1]],
        )
        .unwrap();
    let pd = g
        .add(
            "pad",
            Op::Pad {
                pads: vec![1, -1, 2, 0],
                mode: PadMode::Reflect,
                value: 0.0,
            },
            &[sp[0]],
        )
        .unwrap();
    let ga = g.add("gather", Op::Gather { axis: 0 }, &[t, idx]).unwrap();
    let ex = g
        .add(
            "expand",
            Op::Expand {
                shape: vec![3, 1, 4],
            },
            &[ga],
        )
        .unwrap();
    g.add_output("y", ex);
    g.add_output("/out/slice:0", sl);
    g.add_output("pad", pd);
    g.add_output("split_first", sp[0]);
    g.add_output("ipow", ipow);
    g.add_output("dw", _dw);
    for (i, v) in outs.iter().chain(&bins).chain(&reds).enumerate() {
        g.add_output(&format!("o{i}"), *v);
    }
    g.verify().unwrap();
    g
}

fn inputs() -> Vec<Tensor> {
    vec![
        ramp(&[1, 4, 6, 6], 0.3),
        Tensor::from_i64(vec![2], vec![-1, 3]).unwrap(),
    ]
}

fn bits(ts: &[Tensor]) -> Vec<(Vec<usize>, DType, Vec<u8>)> {
    ts.iter()
        .map(|t| (t.shape().to_vec(), t.dtype(), t.data().to_le_bytes()))
        .collect()
}

#[test]
fn every_op_round_trips() {
    let g = every_op_graph();
    let text = print(&g);
    // every op name appears
    for name in [
        "conv(",
        "batch_norm(",
        "max_pool(",
        "avg_pool(",
        "identity(",
        "relu(",
        "leaky_relu(",
        "clip(",
        "sigmoid(",
        "hard_sigmoid(",
        "hard_swish(",
        "tanh(",
        "erf(",
        "exp(",
        "log(",
        "sqrt(",
        "neg(",
        "abs(",
        "not(",
        "is_nan(",
        "add(",
        "sub(",
        "mul(",
        "div(",
        "pow(",
        "max(",
        "min(",
        "equal(",
        "greater(",
        "less(",
        "greater_or_equal(",
        "less_or_equal(",
        "and(",
        "or(",
        "where(",
        "cast(",
        "matmul(",
        "gemm(",
        "reduce_sum(",
        "reduce_mean(",
        "reduce_max(",
        "reduce_l2(",
        "softmax(",
        "layer_norm(",
        "reshape(",
        "transpose(",
        "concat(",
        "split(",
        "slice(",
        "pad(",
        "gather(",
        "expand(",
    ] {
        assert!(
            text.contains(&format!(" = {name}")),
            "{name} missing from:\n{text}"
        );
    }
    let g2 = parse(&text, &g.consts).unwrap_or_else(|e| panic!("{e}\n{text}"));
    g2.verify().unwrap();
    assert_eq!(print(&g2), text);
    // The constant table is preserved id for id.
    assert_eq!(g2.consts.len(), g.consts.len());
    for (a, b) in g.consts.iter().zip(&g2.consts) {
        assert_eq!(**a, **b);
    }
    // Same structure: node for node in topological order.
    let (o1, o2) = (g.topo_order().unwrap(), g2.topo_order().unwrap());
    assert_eq!(o1.len(), o2.len());
    for (a, b) in o1.iter().zip(&o2) {
        assert_eq!(g.node(*a), g2.node(*b));
    }
    // And the same meaning.
    let (r1, r2) = (run(&g, &inputs()).unwrap(), run(&g2, &inputs()).unwrap());
    assert_eq!(bits(&r1), bits(&r2));
}

#[test]
fn printing_is_stable() {
    let a = print(&every_op_graph());
    let b = print(&every_op_graph());
    assert_eq!(a, b);
    let g = every_op_graph();
    assert_eq!(print(&g), print(&g));
}

fn small() -> Graph {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[2, 3]));
    let w = g.add_const("w", tf(&[3], vec![1.0, 2.0, 0.5]));
    let big = g.add_const("big", ramp(&[17], 1.0));
    let y = g.add("y", Op::Binary(BinaryOp::Add), &[x, w]).unwrap();
    let s = g
        .add_node(
            "s",
            Op::Split {
                axis: 1,
                sizes: vec![1, 2],
            },
            &[y],
        )
        .unwrap();
    let r = g
        .add("/out/Relu:0", Op::Unary(UnaryOp::Relu), &[s[1]])
        .unwrap();
    let c = g
        .add(
            "clip",
            Op::Unary(UnaryOp::Clip {
                min: f32::NEG_INFINITY,
                max: 1e-5,
            }),
            &[big],
        )
        .unwrap();
    g.add_output("out", r);
    g.add_output("first", s[0]);
    g.add_output("c", c);
    g
}

#[test]
fn exact_text_of_a_small_graph() {
    let g = small();
    let digest = g.consts[1].digest();
    let want = format!(
        "graph(%x: f32[2,3]) {{
  %w = const c0 [1.0, 2.0, 0.5] : f32[3]
  %big = const c1 #{digest:016x} : f32[17]
  %y = add(%x, %w) : f32[2,3]
  %s = split(%y) {{axis=1, sizes=[1,2]}} : f32[2,1], f32[2,2]
  %\"/out/Relu:0\" = relu(%s#1) : f32[2,2]
  %clip = clip(%big) {{min=-inf, max=1e-5}} : f32[17]
  return %out = %\"/out/Relu:0\", %first = %s#0, %c = %clip
}}
"
    );
    assert_eq!(print(&g), want);
}

#[test]
fn hand_written_text_parses_and_runs() {
    // Comments, blank lines, optional type annotations on op nodes, inline constants only.
    let text = r#"
// a tiny model
graph(%x: f32[2,2], %"in put": i64[1]) {
  %k = const c0 [1.0, -1.0] : f32[2]

  %a = mul(%x, %k)
  %b = gather(%a, %"in put") {axis=1} : f32[2,1]
  %t = transpose(%b) {perm=[1,0]}
  return %"y.0" = %t
}
"#;
    let g = parse(text, &[]).unwrap();
    g.verify().unwrap();
    let x = tf(&[2, 2], vec![1.0, 2.0, 3.0, 4.0]);
    let i = Tensor::from_i64(vec![1], vec![-1]).unwrap();
    let y = run(&g, &[x, i]).unwrap();
    // a = [[1,-2],[3,-4]]; b = a[:, -1] = [[-2],[-4]]; t = [[-2,-4]]
    assert_eq!(y[0].shape(), &[1, 2]);
    assert_eq!(y[0].as_f32().unwrap(), &[-2.0, -4.0]);
    assert_eq!(g.outputs[0].name, "y.0");
    assert_eq!(g.inputs[1].name, "in put");
    // Printing then parsing again is a fixed point.
    let p = print(&g);
    assert_eq!(print(&parse(&p, &g.consts).unwrap()), p);
}

#[test]
fn odd_names_round_trip() {
    let names = [
        "a.b",
        "/layer1/Conv_output_0",
        "with space",
        "q\"uote",
        "back\\slash",
        "new\nline",
        "hash#1",
        "",
        "ünï",
        "tab\tbell\u{7}",
    ];
    let mut g = Graph::new();
    let mut v = g.add_input(names[0], TensorType::f32(&[2]));
    for n in &names[1..] {
        v = g.add(n, Op::Unary(UnaryOp::Relu), &[v]).unwrap();
    }
    g.add_output("out#\"x\"", v);
    let text = print(&g);
    assert_eq!(text.lines().count(), names.len() + 2, "{text}");
    let g2 = parse(&text, &g.consts).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(print(&g2), text);
    let got: Vec<String> = g2
        .topo_order()
        .unwrap()
        .iter()
        .map(|&n| g2.node(n).name.clone())
        .collect();
    assert_eq!(got, names);
    assert_eq!(g2.outputs[0].name, "out#\"x\"");
}

#[test]
fn special_floats_round_trip() {
    let mut g = Graph::new();
    let x = g.add_input("x", TensorType::f32(&[3]));
    let c = g.add_const(
        "c",
        tf(&[4], vec![f32::INFINITY, f32::NEG_INFINITY, -0.0, 1.0e-45]),
    );
    let n = g.add_const("n", tf(&[1], vec![f32::NAN]));
    let a = g
        .add(
            "a",
            Op::Unary(UnaryOp::HardSigmoid {
                alpha: 0.1 + 0.2,
                beta: f32::MIN_POSITIVE,
            }),
            &[x],
        )
        .unwrap();
    let p = g
        .add(
            "p",
            Op::Pad {
                pads: vec![1, 0],
                mode: PadMode::Constant,
                value: f32::NAN,
            },
            &[a],
        )
        .unwrap();
    g.add_output("p", p);
    g.add_output("c", c);
    g.add_output("n", n);
    let text = print(&g);
    let g2 = parse(&text, &[]).unwrap();
    assert_eq!(print(&g2), text);
    assert_eq!(g2.consts[0].data(), g.consts[0].data());
    assert!(g2.consts[1].as_f32().unwrap()[0].is_nan());
    match &g2.node(g2.outputs[0].value.node).op {
        Op::Pad { value, .. } => assert!(value.is_nan()),
        op => panic!("{op:?}"),
    }
    let hs =
        g2.g.node_weights()
            .find(|n| n.name == "a")
            .unwrap()
            .op
            .clone();
    assert_eq!(
        hs,
        Op::Unary(UnaryOp::HardSigmoid {
            alpha: 0.1 + 0.2,
            beta: f32::MIN_POSITIVE,
        })
    );
}

#[test]
fn other_dtypes_inline() {
    let mut g = Graph::new();
    let b = g.add_const(
        "b",
        Tensor::new(vec![2], Data::Bool(vec![true, false])).unwrap(),
    );
    let u = g.add_const("u", Tensor::new(vec![2], Data::U8(vec![0, 255])).unwrap());
    let i = g.add_const("i", Tensor::new(vec![1], Data::I8(vec![-128])).unwrap());
    let j = g.add_const("j", Tensor::new(vec![], Data::I32(vec![i32::MIN])).unwrap());
    let k = g.add_const("k", Tensor::scalar_i64(i64::MAX));
    for (n, v) in ["b", "u", "i", "j", "k"].iter().zip([b, u, i, j, k]) {
        g.add_output(n, v);
    }
    let text = print(&g);
    assert!(text.contains("[true, false] : bool[2]"), "{text}");
    let g2 = parse(&text, &[]).unwrap();
    assert_eq!(print(&g2), text);
    for (a, b) in g.consts.iter().zip(&g2.consts) {
        assert_eq!(**a, **b);
    }
}

#[test]
fn const_table_ids_are_kept() {
    // An unused table entry and a shared entry referenced by two nodes.
    let mut g = Graph::new();
    let unused = g.add_const_tensor(Arc::new(ramp(&[20], 1.0)));
    assert_eq!(unused, ConstId(0));
    let big = Arc::new(ramp(&[30], 2.0));
    let id = g.add_const_tensor(big);
    let a = g.add_const_ref("a", id).unwrap();
    let b = g.add_const_ref("b", id).unwrap();
    let s = g.add("s", Op::Binary(BinaryOp::Add), &[a, b]).unwrap();
    g.add_output("s", s);
    let text = print(&g);
    let g2 = parse(&text, &g.consts).unwrap();
    assert_eq!(print(&g2), text);
    assert_eq!(g2.consts.len(), 2);
    assert_eq!(*g2.consts[0], *g.consts[0]);
    assert_eq!(*g2.consts[1], *g.consts[1]);
    // Without the table, the big constant cannot be found.
    let e = parse(&text, &[]).unwrap_err();
    assert!(e.msg.starts_with("line 2:"), "{}", e.msg);
    assert!(e.msg.contains("c1"), "{}", e.msg);
}

fn err(text: &str, consts: &[Arc<Tensor>]) -> String {
    match parse(text, consts) {
        Ok(g) => panic!("parsed unexpectedly:\n{}", print(&g)),
        Err(e) => e.msg,
    }
}

#[test]
fn parse_errors_have_line_numbers() {
    let g = small();
    let good = print(&g);
    assert!(parse(&good, &g.consts).is_ok());
    let replace = |from: &str, to: &str| {
        assert!(good.contains(from), "{from}");
        good.replacen(from, to, 1)
    };

    // unknown op
    let e = err(&replace("= add(", "= addd("), &g.consts);
    assert!(
        e.starts_with("line 4:") && e.contains("unknown op 'addd'"),
        "{e}"
    );
    // bad type
    let e = err(&replace("%x: f32[2,3]", "%x: f33[2,3]"), &g.consts);
    assert!(
        e.starts_with("line 1:") && e.contains("unknown dtype 'f33'"),
        "{e}"
    );
    let e = err(&replace(": f32[2,3]\n", ": f32[2,4]\n"), &g.consts);
    assert!(e.starts_with("line 4:") && e.contains("inferred"), "{e}");
    let e = err(&replace("f32[2,3]) {", "f32[2,x]) {"), &g.consts);
    assert!(
        e.starts_with("line 1:") && e.contains("bad dimension"),
        "{e}"
    );
    // wrong digest
    let d = format!("#{:016x}", g.consts[1].digest());
    let e = err(&replace(&d, "#0123456789abcdef"), &g.consts);
    assert!(e.starts_with("line 3:") && e.contains("digest"), "{e}");
    // a table entry of another type
    let mut other = g.consts.clone();
    other[1] = Arc::new(ramp(&[18], 1.0));
    let e = err(&good, &other);
    assert!(e.starts_with("line 3:") && e.contains("f32[18]"), "{e}");
    // undefined value
    let e = err(&replace("relu(%s#1)", "relu(%t)"), &g.consts);
    assert!(
        e.starts_with("line 6:") && e.contains("undefined value %t"),
        "{e}"
    );
    let e = err(&replace("%first = %s#0", "%first = %nope"), &g.consts);
    assert!(
        e.starts_with("line 8:") && e.contains("undefined value %nope"),
        "{e}"
    );
    // port errors
    let e = err(&replace("relu(%s#1)", "relu(%s#2)"), &g.consts);
    assert!(e.starts_with("line 6:") && e.contains("no output 2"), "{e}");
    let e = err(&replace("relu(%s#1)", "relu(%s)"), &g.consts);
    assert!(e.starts_with("line 6:") && e.contains("2 outputs"), "{e}");
    // syntax errors
    let e = err(&replace("add(%x, %w)", "add(%x %w)"), &g.consts);
    assert!(
        e.starts_with("line 4:") && e.contains("expected ','"),
        "{e}"
    );
    let e = err(
        &replace("{axis=1, sizes=[1,2]}", "{axis=1 sizes=[1,2]}"),
        &g.consts,
    );
    assert!(e.starts_with("line 5:"), "{e}");
    let e = err(
        &replace("%\"/out/Relu:0\" = relu", "%\"/out/Relu:0 = relu"),
        &g.consts,
    );
    assert!(
        e.starts_with("line 6:") && e.contains("unterminated"),
        "{e}"
    );
    let e = err(&good.replace("}\n", ""), &g.consts);
    assert!(e.contains("closing"), "{e}");
    let e = err(&replace("graph(", "grph("), &g.consts);
    assert!(e.starts_with("line 1:"), "{e}");
    // attribute errors
    let e = err(&replace("sizes=[1,2]", "sizes=[1,2], colour=3"), &g.consts);
    assert!(e.starts_with("line 5:") && e.contains("colour"), "{e}");
    let e = err(&replace("{axis=1, ", "{"), &g.consts);
    assert!(e.starts_with("line 5:") && e.contains("'axis'"), "{e}");
    let e = err(&replace("axis=1", "axis=one"), &g.consts);
    assert!(e.starts_with("line 5:") && e.contains("'one'"), "{e}");
    // inference errors name the node
    let e = err(&replace("sizes=[1,2]", "sizes=[1,1]"), &g.consts);
    assert!(e.starts_with("line 5:") && e.contains("node s"), "{e}");
    // inline data of the wrong length / kind
    let e = err(&replace("[1.0, 2.0, 0.5]", "[1.0, 2.0]"), &g.consts);
    assert!(e.starts_with("line 2:") && e.contains("3 elements"), "{e}");
    let e = err(&replace("[1.0, 2.0, 0.5]", "[1.0, 2.0, x]"), &g.consts);
    assert!(e.starts_with("line 2:") && e.contains("'x'"), "{e}");
    // duplicate names
    let e = err(&replace("%y = add", "%w = add"), &g.consts);
    assert!(
        e.starts_with("line 4:") && e.contains("defined twice"),
        "{e}"
    );
    // trailing junk
    let e = err(&replace(": f32[2,2]\n", ": f32[2,2] junk\n"), &g.consts);
    assert!(e.starts_with("line 6:") && e.contains("junk"), "{e}");
    let e = err(&format!("{good}extra\n"), &g.consts);
    assert!(e.starts_with("line 10:"), "{e}");
    assert!(err("", &[]).contains("empty"));
}
