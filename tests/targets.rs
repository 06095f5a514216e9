//! The whole test models of `tests/common/models.rs` compiled for each explicit x86-64 target
//! this host can run (`x86_64-sse4.2`: no AVX, no FMA, the generic 128-bit kernels;
//! `x86_64-avx2`: the AVX2/FMA microkernel GEMM path; `x86_64-avx512` on AVX-512 hosts), at
//! -O0 and -O3, against tract.
//! (`tests/models.rs` runs them at the `native` target only.)

mod common;

use common::models;
use optc::Tensor;

type Builder = fn() -> (Vec<u8>, Vec<Tensor>);

const MODELS: [(&str, Builder); 5] = [
    ("mlp", models::mlp),
    ("small cnn", models::small_cnn_with_batchnorm),
    ("resnet stage", models::resnet_style_stage),
    ("mobilenet block", models::mobilenet_v2_inverted_residual),
    ("transformer block", models::transformer_encoder_block),
];

fn host_runs(target: &str) -> bool {
    match target {
        "x86_64-sse4.2" => cfg!(target_arch = "x86_64"),
        "x86_64-avx2" => {
            #[cfg(target_arch = "x86_64")]
            {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            false
        }
        "x86_64-avx512" => {
            #[cfg(target_arch = "x86_64")]
            {
                host_runs("x86_64-avx2")
                    && std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512dq")
            }
            #[cfg(not(target_arch = "x86_64"))]
            false
        }
        _ => false,
    }
}

fn check_target(target: &str) {
    if !host_runs(target) {
        eprintln!("skipped: this host cannot run {target}");
        return;
    }
    let mut errs = vec![];
    for (label, build) in MODELS {
        let (bytes, inputs) = build();
        let want = optc_onnx::oracle::run_tract(&bytes, &inputs)
            .unwrap_or_else(|e| panic!("{label}: tract failed: {e}"));
        for level in [0u8, 3] {
            let opts = optc::Options {
                opt_level: level,
                target: target.to_string(),
                ..Default::default()
            };
            let mut m = optc::compile_bytes(&bytes, &opts)
                .unwrap_or_else(|e| panic!("{label} {target} -O{level}: compile: {e}"));
            let got = m
                .run(&inputs)
                .unwrap_or_else(|e| panic!("{label} {target} -O{level}: run: {e}"));
            assert_eq!(got.len(), want.len(), "{label}: output count");
            for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                let what = format!("{label} {target} -O{level} output {k}");
                match optc::compare(g, w, common::RTOL, common::ATOL) {
                    Ok(d) if d.allclose => {}
                    Ok(d) => errs.push(format!(
                        "{what}: max abs {:.3e}, max rel {:.3e}",
                        d.max_abs, d.max_rel
                    )),
                    Err(e) => errs.push(format!("{what}: {e}")),
                }
            }
        }
    }
    assert!(errs.is_empty(), "{}", errs.join("\n"));
}

#[test]
fn models_at_sse42() {
    check_target("x86_64-sse4.2");
}

#[test]
fn models_at_avx2() {
    check_target("x86_64-avx2");
}

/// The AVX-512 microkernels (zmm GEMM, conv, depthwise, int8) on AVX-512 hardware; skipped
/// elsewhere (they are also checked by disassembly and emulation, `isa_disasm.rs`).
#[test]
fn models_at_avx512() {
    check_target("x86_64-avx512");
}
