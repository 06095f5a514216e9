//! The bundled example model is exactly what its generator makes, and optc runs it
//! like tract does.

mod common;

include!("../examples/models/tiny_cnn_model.rs");

#[test]
fn committed_example_is_reproducible() {
    let committed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/models/tiny_cnn.onnx"
    ))
    .expect("examples/models/tiny_cnn.onnx is committed");
    assert!(
        committed == tiny_cnn_model(),
        "examples/models/tiny_cnn.onnx is stale: run `cargo run --example make_example_model`"
    );
}

#[test]
fn example_matches_tract() {
    let bytes = tiny_cnn_model();
    let mut r = common::Rng::new(42);
    let x = r.tensor(&[1, 3, 16, 16], -1.0, 1.0);
    common::check("tiny_cnn", &bytes, &[x]);
}
