//! Target: `CompiledModel::run` with inputs of wrong counts, shapes and element types.
//!
//! Two models: one with fixed shapes (any other shape must be refused) and one with a
//! dynamic batch (a new shape compiles a new variant; an absurd one must be refused
//! before anything is allocated). A run that succeeds is compared with the interpreter.

use crate::source::Source;
use optc::{CompiledModel, DType, Data, Options, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};
use std::cell::RefCell;

/// Dims the inputs take: the right ones, 0, 1, and ones far too large to allocate
/// (only ever paired with a 0 so the tensor itself stays empty).
const DIMS: [usize; 10] = [0, 1, 2, 3, 4, 8, 9, 1 << 20, 1 << 40, usize::MAX];

fn static_model() -> Vec<u8> {
    let mut m = ModelBuilder::new(13);
    let w = Tensor::from_f32(vec![4, 3], (0..12).map(|i| i as f32 * 0.25 - 1.0).collect())
        .expect("12 values");
    m.input("x", DType::F32, &[2, 4])
        .input("k", DType::I64, &[1])
        .initializer("w", &w)
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .node("Relu", &["y"], &["r"], vec![])
        .node(
            "Gather",
            &["r", "k"],
            &["out"],
            vec![("axis", Attr::Int(1))],
        )
        .output("out");
    m.to_bytes()
}

fn dynamic_model() -> Vec<u8> {
    let mut m = ModelBuilder::new(13);
    let w = Tensor::from_f32(
        vec![4, 3],
        (0..12).map(|i| 1.0 - i as f32 * 0.125).collect(),
    )
    .expect("12 values");
    m.input("x", DType::F32, &[-1, 4])
        .initializer("w", &w)
        .node("MatMul", &["x", "w"], &["y"], vec![])
        .node("Softmax", &["y"], &["out"], vec![("axis", Attr::Int(-1))])
        .output("out");
    m.to_bytes()
}

/// A model's bytes and the model compiled from them.
type Compiled = (Vec<u8>, CompiledModel);

thread_local! {
    static MODELS: RefCell<Option<Vec<Compiled>>> = const { RefCell::new(None) };
}

/// Run one of the two models on the inputs `data` describes.
pub fn target(data: &[u8]) {
    MODELS.with(|cell| {
        let mut cell = cell.borrow_mut();
        let models = cell.get_or_insert_with(|| {
            [static_model(), dynamic_model()]
                .into_iter()
                .map(|b| {
                    let m =
                        optc::compile_bytes(&b, &Options::default()).expect("the model compiles");
                    (b, m)
                })
                .collect()
        });
        let mut src = Source::new(data);
        let k = src.below(models.len());
        let (bytes, model) = &mut models[k];
        let mut inputs = describe(&mut src);
        let result = match src.below(3) {
            0 => model.run(&inputs),
            1 => {
                let names = ["x", "k", "y", ""];
                let named: Vec<(&str, Tensor)> = inputs
                    .iter()
                    .map(|t| (*src.pick(&names), t.clone()))
                    .collect();
                let result = model.run_named(&named);
                if result.is_ok() {
                    let order = optc_onnx::input_names(bytes).expect("the model reads");
                    assert!(
                        named.len() == order.len(),
                        "run_named succeeded on {} inputs for a model of {}: {:?}",
                        named.len(),
                        order.len(),
                        named.iter().map(|(n, _)| n).collect::<Vec<_>>()
                    );
                    // The inputs in model order, as the interpreter takes them.
                    inputs = order
                        .iter()
                        .map(|n| {
                            let given = named.iter().find(|(m, _)| m == n);
                            given.expect("a run without an input succeeded").1.clone()
                        })
                        .collect();
                }
                result
            }
            _ => {
                let refs: Vec<&Tensor> = inputs.iter().collect();
                let mut outs: Vec<Tensor> =
                    (0..src.range(0, 2)).map(|_| tensor(&mut src)).collect();
                model.run_into(&refs, &mut outs).map(|_| outs)
            }
        };
        if let Ok(outputs) = result {
            check(bytes, &inputs, &outputs);
        }
    });
}

/// Inputs: a count, then per input an element type and a shape.
fn describe(src: &mut Source) -> Vec<Tensor> {
    (0..src.range(0, 3)).map(|_| tensor(src)).collect()
}

fn tensor(src: &mut Source) -> Tensor {
    let dtype = *src.pick(&[
        DType::F32,
        DType::F32,
        DType::I64,
        DType::I32,
        DType::Bool,
        DType::F64,
    ]);
    let rank = src.below(4);
    let mut shape: Vec<usize> = (0..rank).map(|_| *src.pick(&DIMS)).collect();
    // Keep the tensor allocatable: a huge dim comes with a zero somewhere.
    let big = shape.iter().any(|&d| d > 64);
    if big {
        // First, so the element count is 0 before any huge dim multiplies it.
        shape.insert(0, 0);
    }
    let n = optc_ir::checked_numel(&shape).unwrap_or(0);
    let data = match dtype {
        DType::F32 => Data::F32((0..n).map(|i| (i % 7) as f32 - 3.0).collect()),
        DType::I64 => Data::I64((0..n).map(|i| (i % 9) as i64 - 4).collect()),
        DType::I32 => Data::I32((0..n).map(|i| (i % 5) as i32).collect()),
        DType::F64 => Data::F64((0..n).map(|i| (i % 7) as f64 - 2.5).collect()),
        _ => Data::Bool((0..n).map(|i| i % 2 == 0).collect()),
    };
    Tensor::new(shape, data).expect("length matches")
}

/// A run optc accepted must give what the interpreter gives for the same shapes.
fn check(bytes: &[u8], inputs: &[Tensor], outputs: &[Tensor]) {
    let mut opts = optc_onnx::ImportOptions::default();
    let names = optc_onnx::input_names(bytes).expect("the model reads");
    for (name, t) in names.iter().zip(inputs) {
        opts.input_shapes.insert(name.clone(), t.shape().to_vec());
    }
    let graph = match optc_onnx::import_bytes(bytes, &opts) {
        Ok(g) => g,
        Err(e) => panic!("optc ran inputs the importer refuses for those shapes: {e}"),
    };
    let want = optc_ir::interp::run(&graph, inputs).expect("the interpreter runs what optc ran");
    if let Err(why) = crate::differential::agree(outputs, &want) {
        panic!(
            "a run on shapes {:?} differs from the interpreter: {why}",
            shapes(inputs)
        );
    }
}

fn shapes(inputs: &[Tensor]) -> Vec<Vec<usize>> {
    inputs.iter().map(|t| t.shape().to_vec()).collect()
}
