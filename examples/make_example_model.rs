//! Writes the bundled example model `examples/models/tiny_cnn.onnx`:
//! `cargo run --example make_example_model`.

include!("models/tiny_cnn_model.rs");

fn main() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/models/tiny_cnn.onnx");
    if let Err(e) = std::fs::write(&path, tiny_cnn_model()) {
        eprintln!("error: cannot write {}: {e}", path.display());
        std::process::exit(1);
    }
    println!("wrote {}", path.display());
}
