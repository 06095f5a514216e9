//! The example app (model compiled in `build.rs` by optc-build) computes exactly what optc's
//! JIT computes for the same model, target and optimization level.

include!(concat!(env!("OUT_DIR"), "/tiny_cnn.rs"));

use std::path::Path;
use std::process::Command;

fn model_bytes() -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tiny_cnn.onnx");
    std::fs::read(p).unwrap()
}

/// The JIT's output for `image` (same target and -O3 as the build script).
fn jit(image: &[f32]) -> Vec<f32> {
    let opts = optc::Options {
        opt_level: 3,
        target: TinyCnn::TARGET.to_string(),
        ..Default::default()
    };
    let mut m = optc::compile_bytes(&model_bytes(), &opts).unwrap();
    let x = optc::Tensor::from_f32(TinyCnn::INPUT_SHAPES[0].to_vec(), image.to_vec()).unwrap();
    let out = m.run(&[x]).unwrap();
    out[0].as_f32().unwrap().to_vec()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn random_image(seed: u64) -> Vec<f32> {
    let ty = optc::TensorType::new(optc::DType::F32, TinyCnn::INPUT_SHAPES[0].to_vec());
    optc::random_inputs(&[ty], seed)[0]
        .as_f32()
        .unwrap()
        .to_vec()
}

#[test]
fn app_binary_prints_what_the_jit_computes() {
    let image = random_image(11);
    let dir = std::env::temp_dir().join(format!("optc-app-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("image.bin");
    let raw: Vec<u8> = image.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(&input, raw).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_optc-example-app"))
        .arg(&input)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Vec<f32> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(printed.len(), TinyCnn::OUTPUT0_LEN);
    assert_eq!(bits(&printed), bits(&jit(&image)));
    // Without arguments it runs on its built-in image.
    let out = Command::new(env!("CARGO_BIN_EXE_optc-example-app"))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 10);
}

#[test]
fn generated_struct_matches_the_jit_in_process() {
    fn is_send<T: Send>() {}
    is_send::<TinyCnn>();
    let mut model = TinyCnn::new();
    for seed in 0..3 {
        let image = random_image(seed);
        let want = jit(&image);
        let arr: &[f32; TinyCnn::INPUT0_LEN] = image.as_slice().try_into().unwrap();
        let got = model.run(arr).unwrap().to_vec();
        assert_eq!(bits(&got), bits(&want));
        let got = model.run_slices(&image).unwrap().to_vec();
        assert_eq!(bits(&got), bits(&want));
    }
    let e = model.run_slices(&[0.0; 3]).unwrap_err();
    assert!(e.to_string().contains("768"), "{e}");
    assert_eq!(TinyCnn::INPUT_NAMES, ["image"]);
    assert_eq!(TinyCnn::OUTPUT_SHAPES[0], &[1, 10]);
}
