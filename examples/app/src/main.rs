//! An app with a model compiled into it at build time (see `build.rs`).
//!
//! `optc-example-app [INPUT.bin]`: runs the bundled classifier on the raw little-endian f32
//! image in INPUT.bin (default: a fixed gradient image) and prints one probability a line.

include!(concat!(env!("OUT_DIR"), "/tiny_cnn.rs"));

fn main() -> std::process::ExitCode {
    let mut image = [0f32; TinyCnn::INPUT0_LEN];
    match std::env::args().nth(1) {
        Some(path) => {
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) => {
                    eprintln!("error: cannot read {path}: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            };
            if bytes.len() != image.len() * 4 {
                eprintln!("error: {path} must hold {} f32 values", image.len());
                return std::process::ExitCode::FAILURE;
            }
            for (x, b) in image.iter_mut().zip(bytes.chunks_exact(4)) {
                *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        None => {
            for (i, x) in image.iter_mut().enumerate() {
                *x = (i % 17) as f32 / 8.0 - 1.0;
            }
        }
    }
    let mut model = TinyCnn::new();
    match model.run(&image) {
        Ok(probs) => {
            // `{:?}` prints the shortest text that reads back as the same f32.
            for p in probs {
                println!("{p:?}");
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
