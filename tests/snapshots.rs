//! insta snapshots of the optimized IR (text format) of every test model at -O1, -O2 and
//! -O3, stored in the top-level `snapshots/` folder. Review changed snapshots like code
//! (`cargo insta review`, or read the `.snap.new` files) before accepting them.

mod common;

use common::models;

include!("../examples/models/tiny_cnn_model.rs");

fn snapshot(name: &str, bytes: &[u8]) {
    let g = optc::import_bytes(bytes, &optc::Options::default()).expect("imports");
    for level in 1..=3u8 {
        let (opt, _) = optc::optimize_with_report(g.clone(), level).expect("optimizes");
        let text = optc_ir::text::print(&opt);
        insta::with_settings!({
            snapshot_path => "../snapshots",
            prepend_module_to_snapshot => false,
            omit_expression => true,
        }, {
            insta::assert_snapshot!(format!("{name}_O{level}"), text);
        });
    }
}

#[test]
fn mlp() {
    snapshot("mlp", &models::mlp().0);
}

#[test]
fn small_cnn_with_batchnorm() {
    snapshot(
        "small_cnn_with_batchnorm",
        &models::small_cnn_with_batchnorm().0,
    );
}

#[test]
fn resnet_style_stage() {
    snapshot("resnet_style_stage", &models::resnet_style_stage().0);
}

#[test]
fn mobilenet_v2_inverted_residual() {
    snapshot(
        "mobilenet_v2_inverted_residual",
        &models::mobilenet_v2_inverted_residual().0,
    );
}

#[test]
fn transformer_encoder_block() {
    snapshot(
        "transformer_encoder_block",
        &models::transformer_encoder_block().0,
    );
}

#[test]
fn tiny_cnn_example() {
    snapshot("tiny_cnn", &tiny_cnn_model());
}
