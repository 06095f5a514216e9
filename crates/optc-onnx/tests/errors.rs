//! Bad input gives one clear error, never a panic.

mod common;

use common::{binary_model, import, one_node_model, unary_model};
use optc_ir::{DType, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};
use optc_onnx::{import_bytes, import_file, parse_shape, ImportOptions};
use std::collections::HashMap;
use tract_onnx::pb;

fn err(m: &ModelBuilder) -> String {
    err_opts(m, &ImportOptions::default())
}

fn err_opts(m: &ModelBuilder, o: &ImportOptions) -> String {
    match import_bytes(&m.to_bytes(), o) {
        Ok(_) => panic!("import unexpectedly succeeded"),
        Err(e) => e.to_string(),
    }
}

fn shapes(kv: &[(&str, &[usize])]) -> ImportOptions {
    ImportOptions {
        input_shapes: kv
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect::<HashMap<_, _>>(),
        ..Default::default()
    }
}

/// A model `y = x + w` of the f32 input `x` of shape [2] and the initializer `w` given as
/// its proto (for encodings the builder does not make).
fn add_initializer_model(w: pb::TensorProto) -> ModelBuilder {
    let name = w.name.clone();
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2])
        .initializer_proto(w)
        .node("Add", &["x", &name], &["y"], vec![])
        .output("y");
    m
}

fn cnn() -> ModelBuilder {
    let w = Tensor::from_f32(
        vec![4, 3, 3, 3],
        (0..108).map(|i| i as f32 * 0.01).collect(),
    )
    .unwrap();
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[1, 3, 8, 8])
        .initializer("w", &w)
        .node(
            "Conv",
            &["x", "w"],
            &["c"],
            vec![("pads", Attr::Ints(vec![1, 1, 1, 1]))],
        )
        .node("Relu", &["c"], &["r"], vec![])
        .node("GlobalAveragePool", &["r"], &["p"], vec![])
        .node("Flatten", &["p"], &["y"], vec![])
        .output("y");
    m
}

#[test]
fn valid_model_imports_from_file() {
    let dir = std::env::temp_dir().join(format!("optc-onnx-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("cnn.onnx");
    cnn().write(&p).unwrap();
    let g = import_file(&p, &ImportOptions::default()).unwrap();
    assert_eq!(g.output_types()[0].shape, vec![1, 4]);
    let e = import_file(&dir.join("missing.onnx"), &ImportOptions::default()).unwrap_err();
    assert!(e.to_string().contains("cannot read"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn truncated_and_corrupted_files_never_panic() {
    let bytes = cnn().to_bytes();
    let o = ImportOptions::default();
    assert!(import_bytes(&bytes, &o).is_ok());
    let mut errors = 0;
    let mut n = 0;
    for cut in (0..bytes.len()).step_by(7) {
        n += 1;
        if import_bytes(&bytes[..cut], &o).is_err() {
            errors += 1;
        }
    }
    // Nearly every truncation is detected (a cut at a field boundary can be a valid,
    // smaller model).
    assert!(errors * 10 >= n * 8, "{errors} of {n}");
    let e = import_bytes(&bytes[..bytes.len() / 2], &o).unwrap_err();
    assert!(!e.to_string().is_empty());
    for i in (0..bytes.len()).step_by(3) {
        for flip in [0xffu8, 0x01, 0x80] {
            let mut b = bytes.clone();
            b[i] ^= flip;
            let _ = import_bytes(&b, &o);
        }
    }
    assert!(import_bytes(b"definitely not onnx", &o).is_err());
    assert!(import_bytes(&[], &o).is_err());
}

#[test]
fn all_unsupported_ops_in_one_error() {
    let mut m = ModelBuilder::new(17);
    m.input("x", DType::F32, &[1, 2, 3])
        .node_named("strings_1", "StringNormalizer", &["x"], &["a"], vec![])
        .node_named("strings_2", "StringNormalizer", &["a"], &["b"], vec![])
        .node_named("", "NonMaxSuppression", &["b"], &["c"], vec![])
        .node("Relu", &["c"], &["y"], vec![])
        .output("y");
    let e = err(&m);
    assert_eq!(
        e,
        "model uses 2 unsupported op types (opset 17): StringNormalizer (nodes: strings_1, strings_2), NonMaxSuppression (nodes: NonMaxSuppression_2)"
    );
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[3])
        .node_in_domain("q", "com.microsoft", "FusedGemm", &["x"], &["y"], vec![])
        .output("y");
    let e = err(&m);
    assert!(e.contains("com.microsoft::FusedGemm (nodes: q)"), "{e}");
}

#[test]
fn missing_initializer() {
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2, 3])
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .output("y");
    let e = err(&m);
    assert!(e.contains("'y' (MatMul)") && e.contains("input 'w'"), "{e}");
    assert!(e.contains("missing initializer"), "{e}");
}

#[test]
fn unsorted_nodes_are_sorted_and_cycles_are_errors() {
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[3])
        .node("Relu", &["a"], &["y"], vec![])
        .node("Neg", &["x"], &["a"], vec![])
        .output("y");
    let g = import(&m);
    assert_eq!(g.g.node_count(), 3);

    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[3])
        .node("Add", &["x", "b"], &["a"], vec![])
        .node("Relu", &["a"], &["b"], vec![])
        .node("Neg", &["b"], &["y"], vec![])
        .output("y");
    let e = err(&m);
    assert!(e.contains("cycle"), "{e}");
    assert!(e.contains("'a' (Add)") && e.contains("'b' (Relu)"), "{e}");
}

#[test]
fn dynamic_dims_and_overrides() {
    let m = unary_model(13, "Relu", &[-1, 3, 4], vec![]);
    let e = err(&m);
    assert!(
        e.contains("input 'x' has a dynamic dimension (d0)") && e.contains("--input-shape x=1x3x4"),
        "{e}"
    );
    let g = import_bytes(&m.to_bytes(), &shapes(&[("x", &[5, 3, 4])])).unwrap();
    assert_eq!(g.output_types()[0].shape, vec![5, 3, 4]);
    // Contradicting a static dim, or the rank.
    for bad in [&[5usize, 2, 4][..], &[5, 3][..]] {
        let e = err_opts(&m, &shapes(&[("x", bad)]));
        assert!(e.contains("input 'x'") && e.contains("d0x3x4"), "{e}");
        let shown = bad
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("x");
        assert!(e.contains(&shown), "{e}");
    }
    // Unknown name.
    let e = err_opts(&m, &shapes(&[("input", &[1, 3, 4])]));
    assert!(e.contains("'input'") && e.contains("'x'"), "{e}");
}

#[test]
fn parse_shapes() {
    assert_eq!(parse_shape("1x3x224x224").unwrap(), vec![1, 3, 224, 224]);
    assert_eq!(parse_shape("128").unwrap(), vec![128]);
    assert!(parse_shape("1x").is_err());
    assert!(parse_shape("").is_err());
    assert!(parse_shape("1x-3").is_err());
}

#[test]
fn unsupported_dtypes_and_bad_tensors() {
    // float8 initializer
    let m = add_initializer_model(pb::TensorProto {
        name: "h".into(),
        dims: vec![2],
        data_type: 17,
        raw_data: vec![0; 2],
        ..Default::default()
    });
    let e = err(&m);
    assert!(e.contains("'h'") && e.contains("FLOAT8E4M3FN"), "{e}");
    // float16 (held as f32) whose data is too short for its dims
    let m = add_initializer_model(pb::TensorProto {
        name: "h".into(),
        dims: vec![2],
        data_type: 10,
        raw_data: vec![0; 3],
        ..Default::default()
    });
    let e = err(&m);
    assert!(e.contains("'h'") && e.contains("elements"), "{e}");

    // complex input (double is supported since f64 is a dtype)
    let mut p = unary_model(13, "Relu", &[2], vec![]).to_proto();
    if let Some(pb::type_proto::Value::TensorType(t)) = p.graph.as_mut().unwrap().input[0]
        .r#type
        .as_mut()
        .unwrap()
        .value
        .as_mut()
    {
        t.elem_type = 14;
    }
    let e = import_bytes(
        &prost::Message::encode_to_vec(&p),
        &ImportOptions::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("input 'x'") && e.contains("COMPLEX64"), "{e}");

    // absurd dims, data length mismatch, external data
    for (dims, raw) in [
        (vec![1i64 << 40, 1 << 40], vec![0u8; 4]),
        (vec![i64::MAX, 2], vec![0u8; 4]),
        (vec![3], vec![0u8; 8]),
        (vec![-1], vec![]),
    ] {
        let m = add_initializer_model(pb::TensorProto {
            name: "w".into(),
            dims: dims.clone(),
            data_type: 1,
            raw_data: raw,
            ..Default::default()
        });
        let e = err(&m);
        assert!(e.contains("'w'"), "{dims:?}: {e}");
    }
    let m = add_initializer_model(pb::TensorProto {
        name: "w".into(),
        dims: vec![2],
        data_type: 1,
        data_location: Some(1),
        ..Default::default()
    });
    let e = err(&m);
    assert!(e.contains("'w'") && e.contains("external"), "{e}");

    // Cast to an unsupported type.
    let m = unary_model(19, "Cast", &[2], vec![("to", Attr::Int(17))]);
    let e = err(&m);
    assert!(
        e.contains("'y' (Cast)") && e.contains("FLOAT8E4M3FN"),
        "{e}"
    );
}

#[test]
fn unsupported_attributes_and_outputs() {
    let m = one_node_model(
        7,
        "BatchNormalization",
        &[("x", DType::F32, &[2, 3])],
        &["s", "b", "m", "v"].map(|p| (p, Tensor::from_f32(vec![3], vec![1.0; 3]).unwrap())),
        vec![("spatial", Attr::Int(0))],
    );
    let e = err(&m);
    assert!(
        e.contains("'y' (BatchNormalization)") && e.contains("spatial=0"),
        "{e}"
    );

    // BatchNormalization-9's running statistics (outputs of training, which opset 9 has no
    // attribute for), as a graph output and read by a node.
    let stats = ["s", "b", "m", "v"].map(|p| (p, Tensor::from_f32(vec![3], vec![1.0; 3]).unwrap()));
    let mut m = ModelBuilder::new(9);
    m.input("x", DType::F32, &[2, 3]);
    for (p, t) in &stats {
        m.initializer(p, t);
    }
    m.node(
        "BatchNormalization",
        &["x", "s", "b", "m", "v"],
        &["y", "mean"],
        vec![],
    )
    .output("y")
    .output("mean");
    let e = err(&m);
    assert!(
        e.contains("(BatchNormalization)") && e.contains("'mean'"),
        "{e}"
    );

    let mut m = ModelBuilder::new(9);
    m.input("x", DType::F32, &[2, 3]);
    for (p, t) in &stats {
        m.initializer(p, t);
    }
    m.node(
        "BatchNormalization",
        &["x", "s", "b", "m", "v"],
        &["y", "", "var"],
        vec![],
    )
    .node("Cast", &["var"], &["z"], vec![("to", Attr::Int(1))])
    .output("y")
    .output("z");
    let e = err(&m);
    assert!(
        e.contains("(BatchNormalization)") && e.contains("'var'"),
        "{e}"
    );

    let m = one_node_model(
        13,
        "ConstantOfShape",
        &[("x", DType::I64, &[2])],
        &[],
        vec![],
    );
    let e = err(&m);
    assert!(
        e.contains("(ConstantOfShape)") && e.contains("computed at run time"),
        "{e}"
    );

    let m = one_node_model(
        13,
        "Reshape",
        &[("x", DType::F32, &[2, 3]), ("s", DType::I64, &[2])],
        &[],
        vec![],
    );
    let e = err(&m);
    assert!(
        e.contains("'y' (Reshape)") && e.contains("computed at run time"),
        "{e}"
    );

    // Shape errors from the IR name the node.
    let m = binary_model("MatMul", &[2, 3], &[4, 5]);
    let e = err(&m);
    assert!(e.contains("'y' (MatMul)"), "{e}");

    // Huge ConstantOfShape is an error, not an OOM.
    let mut m = ModelBuilder::new(13);
    m.input("x", DType::F32, &[2])
        .initializer(
            "s",
            &Tensor::from_i64(vec![2], vec![1 << 30, 1 << 30]).unwrap(),
        )
        .node("ConstantOfShape", &["s"], &["c"], vec![])
        .node("Add", &["x", "c"], &["y"], vec![])
        .output("y");
    let e = err(&m);
    assert!(
        e.contains("(ConstantOfShape)") && (e.contains("too large") || e.contains("limit")),
        "{e}"
    );
}

#[test]
fn absurd_attributes_are_errors_not_overflows() {
    let w = Tensor::from_f32(vec![1, 1, 1, 1], vec![1.0]).unwrap();
    for (k, v) in [
        ("pads", Attr::Ints(vec![i64::MAX, 0, i64::MAX, 0])),
        ("strides", Attr::Ints(vec![i64::MAX, 1])),
        ("dilations", Attr::Ints(vec![1 << 62, 1])),
        ("group", Attr::Int(i64::MAX)),
    ] {
        let m = one_node_model(
            13,
            "Conv",
            &[("x", DType::F32, &[1, 1, 4, 4])],
            &[("w", w.clone())],
            vec![(k, v)],
        );
        let e = err(&m);
        assert!(e.contains("'y' (Conv)"), "{k}: {e}");
    }
    let m = one_node_model(
        13,
        "Pad",
        &[("x", DType::F32, &[2])],
        &[(
            "p",
            Tensor::from_i64(vec![2], vec![i64::MAX, i64::MIN]).unwrap(),
        )],
        vec![],
    );
    let e = err(&m);
    assert!(e.contains("'y' (Pad)"), "{e}");
    let mut m = ModelBuilder::new(18);
    m.input("x", DType::F32, &[6])
        .node(
            "Split",
            &["x"],
            &["a", "b"],
            vec![("num_outputs", Attr::Int(1 << 60))],
        )
        .output("a");
    let e = err(&m);
    assert!(e.contains("(Split)"), "{e}");
}

/// Subgraphs nested hundreds deep (an `If` in the branch of an `If` ...) are refused with
/// an error, not a stack overflow.
#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [20usize, 400] {
        // The test's builder recurses through the levels (its clone, encoding and drop, deep
        // enough to overflow a 2 MiB stack in a release build): the bytes are built on a
        // thread with a large stack; the import runs here, on the test thread's own 2 MiB.
        let bytes = std::thread::Builder::new()
            .stack_size(256 << 20)
            .spawn(move || nested_if_model(depth))
            .expect("a builder thread")
            .join()
            .expect("the model is built");
        let result = optc_onnx::import_bytes(&bytes, &Default::default());
        if depth == 20 {
            result.unwrap_or_else(|e| panic!("20 levels import: {e}"));
        } else {
            // The protobuf decoder's recursion limit refuses it before the importer runs.
            let e = result.expect_err("400 levels are refused").to_string();
            assert!(e.contains("not a valid ONNX model"), "{e}");
        }
    }
}

/// A model whose `If` holds in its then-branch an `If` ... `depth` levels deep.
fn nested_if_model(depth: usize) -> Vec<u8> {
    let mut inner = ModelBuilder::new(13);
    inner
        .node("Relu", &["x"], &["t0"], vec![])
        .output_typed("t0", DType::F32, &[2]);
    for level in 1..depth {
        let mut other = ModelBuilder::new(13);
        other
            .node("Neg", &["x"], &[&format!("e{level}")], vec![])
            .output_typed(&format!("e{level}"), DType::F32, &[2]);
        let mut outer = ModelBuilder::new(13);
        let out = format!("t{level}");
        outer
            .node(
                "If",
                &["c"],
                &[&out],
                vec![
                    ("then_branch", Attr::Graph(Box::new(inner))),
                    ("else_branch", Attr::Graph(Box::new(other))),
                ],
            )
            .output_typed(&out, DType::F32, &[2]);
        inner = outer;
    }
    let mut top = ModelBuilder::new(13);
    top.input("x", DType::F32, &[2])
        .input("c", DType::Bool, &[])
        .node(
            "If",
            &["c"],
            &["y"],
            vec![
                ("then_branch", Attr::Graph(Box::new(inner.clone()))),
                ("else_branch", Attr::Graph(Box::new(inner))),
            ],
        )
        .output("y");
    top.to_bytes()
}
