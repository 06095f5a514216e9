//! Target: the ONNX importer on bytes.

use crate::RUN_MAX_ELEMENTS;
use optc_ir::Graph;

/// Import `data` as an ONNX model: an error must say something; an imported graph must
/// verify, and when small, the interpreter runs it on random inputs without panicking.
/// The other entry points that read a model's bytes (`interface`, `check_ops`) are called
/// too.
pub fn target(data: &[u8]) {
    let _ = optc_onnx::interface(data);
    let _ = optc_onnx::check_ops(data);
    if let Some(graph) = import(data) {
        if small(&graph) {
            let inputs = optc::random_inputs(&graph.input_types(), 1);
            let _ = optc_ir::interp::run(&graph, &inputs);
        }
    }
}

/// Import, compile at -O2 and run what imports, comparing the compiled model with the
/// interpreter on the imported graph ([`crate::differential::check`]) when its float
/// constants are tame (finite, at most 1e4 in magnitude: mutated weights of 1e30 overflow
/// optc's f32 sums where the interpreter's f64 sums do not); otherwise the compiled model
/// only has to run or refuse without crashing.
pub fn target_compiled(data: &[u8]) {
    if let Some(graph) = import(data) {
        if !small(&graph) {
            return;
        }
        if tame(&graph) {
            crate::differential::check(&graph, &[2], 1);
        } else {
            let inputs = optc::random_inputs(&graph.input_types(), 1);
            let _ =
                optc::compile_graph(graph, &Default::default()).and_then(|mut m| m.run(&inputs));
        }
    }
}

/// Whether every float constant of `graph` is finite and at most 1e4 in magnitude.
fn tame(graph: &Graph) -> bool {
    graph.consts.iter().all(|t| {
        t.dtype() != optc_ir::DType::F32
            || t.to_f64_vec()
                .iter()
                .all(|v| v.is_finite() && v.abs() <= 1e4)
    })
}

/// The imported graph, or `None` after checking the error is a real message.
pub fn import(data: &[u8]) -> Option<Graph> {
    match optc_onnx::import_bytes(data, &Default::default()) {
        Ok(graph) => {
            if let Err(e) = graph.verify() {
                panic!("the importer made a graph that does not verify: {e}");
            }
            Some(graph)
        }
        Err(e) => {
            assert!(
                !e.message().trim().is_empty(),
                "an import error without a message"
            );
            None
        }
    }
}

/// Whether every tensor of `graph` (inputs, constants, node outputs) is small enough to run.
pub fn small(graph: &Graph) -> bool {
    let Ok(order) = graph.topo_order() else {
        return false;
    };
    let fits = |t: &optc_ir::TensorType| {
        optc_ir::checked_numel(&t.shape).is_ok_and(|n| n <= RUN_MAX_ELEMENTS)
    };
    graph.input_types().iter().all(fits)
        && order
            .iter()
            .all(|&n| graph.node(n).outputs.iter().all(fits))
}
