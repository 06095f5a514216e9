#![allow(dead_code)] // each test file uses its own part
//! Shared setup of the importer's tests: build small models, import them, read the
//! imported ops, and ask tract (an independent ONNX implementation) what it infers for a
//! model or computes from it.

use optc_ir::{DType, Data, Graph, Op, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};
use optc_onnx::{import_bytes, ImportOptions};
use tract_onnx::prelude::{DatumType, Framework, InferenceModelExt};

/// Import with default options; an import error fails the test with its message.
pub fn import(m: &ModelBuilder) -> Graph {
    import_bytes(&m.to_bytes(), &ImportOptions::default()).unwrap_or_else(|e| panic!("{e}"))
}

/// Import, asserting that the graph's output types (dtype name, shape) are the ones tract
/// infers for the same model.
pub fn import_checked(m: &ModelBuilder) -> Graph {
    let g = import(m);
    let ours: Vec<(String, Vec<usize>)> = g
        .output_types()
        .into_iter()
        .map(|t| (t.dtype.name().to_string(), t.shape))
        .collect();
    assert_eq!(
        ours,
        tract_output_types(&m.to_bytes()),
        "output types differ from tract"
    );
    g
}

/// Output (dtype name, shape) per graph output, as tract infers them.
pub fn tract_output_types(bytes: &[u8]) -> Vec<(String, Vec<usize>)> {
    let model = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap_or_else(|e| panic!("tract loads the model: {e:?}"))
        .into_typed()
        .unwrap_or_else(|e| panic!("tract types the model: {e:?}"));
    model
        .output_outlets()
        .unwrap()
        .iter()
        .map(|o| {
            let f = model.outlet_fact(*o).unwrap();
            let dt = match f.datum_type {
                DatumType::F32 => "f32",
                DatumType::I64 => "i64",
                DatumType::I32 => "i32",
                DatumType::Bool => "bool",
                DatumType::U8 => "u8",
                DatumType::I8 => "i8",
                DatumType::TDim => "i64",
                o => panic!("unexpected tract dtype {o:?}"),
            };
            (
                dt.to_string(),
                f.shape.as_concrete().expect("concrete shape").to_vec(),
            )
        })
        .collect()
}

/// Run the original model in tract on `inputs` (in graph order); a tract error fails the
/// test.
pub fn run_tract(bytes: &[u8], inputs: &[Tensor]) -> Vec<Tensor> {
    optc_onnx::oracle::run_tract(bytes, inputs).unwrap_or_else(|e| panic!("{e}"))
}

/// The ops of the graph's non-input, non-constant nodes, in topological order.
pub fn ops(g: &Graph) -> Vec<Op> {
    g.topo_order()
        .unwrap()
        .into_iter()
        .map(|n| g.node(n).op.clone())
        .filter(|o| !matches!(o, Op::Input { .. } | Op::Constant { .. }))
        .collect()
}

/// The graph's one op (inputs and constants aside); fails the test if there are more.
pub fn only_op(g: &Graph) -> Op {
    let o = ops(g);
    assert_eq!(o.len(), 1, "expected one op, got {o:?}");
    o[0].clone()
}

/// An f32 tensor of `shape` holding the ramp -0.3, -0.29, -0.28, ...
pub fn f32t(shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    Tensor::from_f32(
        shape.to_vec(),
        (0..n).map(|i| (i as f32) * 0.01 - 0.3).collect(),
    )
    .unwrap()
}

/// A 1-D i64 tensor holding `v`.
pub fn i64t(v: &[i64]) -> Tensor {
    Tensor::from_i64(vec![v.len()], v.to_vec()).unwrap()
}

/// A model of one node `op` at `opset`. The node reads the graph inputs `inputs` (name,
/// dtype, shape; a negative dim is dynamic) and then the initializers `constants`, in that
/// order, and writes the graph output `y` (so error messages name the node `'y'`).
pub fn one_node_model(
    opset: i64,
    op: &str,
    inputs: &[(&str, DType, &[i64])],
    constants: &[(&str, Tensor)],
    attrs: Vec<(&str, Attr)>,
) -> ModelBuilder {
    let mut m = ModelBuilder::new(opset);
    for (name, dtype, shape) in inputs {
        m.input(name, *dtype, shape);
    }
    for (name, t) in constants {
        m.initializer(name, t);
    }
    let names: Vec<&str> = inputs
        .iter()
        .map(|i| i.0)
        .chain(constants.iter().map(|c| c.0))
        .collect();
    m.node(op, &names, &["y"], attrs).output("y");
    m
}

/// A model of one node `op` at `opset` from the f32 graph input `x` of `shape` to `y`.
pub fn unary_model(opset: i64, op: &str, shape: &[i64], attrs: Vec<(&str, Attr)>) -> ModelBuilder {
    one_node_model(opset, op, &[("x", DType::F32, shape)], &[], attrs)
}

/// A model `y = op(a, b)` at opset 13 over the f32 graph inputs `a` and `b` of the given
/// shapes.
pub fn binary_model(op: &str, a: &[i64], b: &[i64]) -> ModelBuilder {
    one_node_model(
        13,
        op,
        &[("a", DType::F32, a), ("b", DType::F32, b)],
        &[],
        vec![],
    )
}

/// An f32 tensor of `shape` with values in [-scale, scale) in steps of scale / 1000, from a
/// linear congruential generator advanced in `seed`.
pub fn rand_scaled(shape: &[usize], seed: &mut u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (((*seed >> 33) % 2000) as f32 / 1000.0 - 1.0) * scale
        })
        .collect();
    Tensor::new(shape.to_vec(), Data::F32(v)).unwrap()
}
