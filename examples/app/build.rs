// Compiles the bundled model ahead of time: writes `libtiny_cnn.a` and `tiny_cnn.rs` into
// OUT_DIR and tells cargo to link the archive.
fn main() {
    optc_build::Build::new()
        .model("../models/tiny_cnn.onnx")
        .compile("tiny_cnn");
}
