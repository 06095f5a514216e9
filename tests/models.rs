//! Whole models built in Rust with optc's builder (`tests/common/models.rs`), checked
//! against tract (and the reference interpreter) at every optimization level.

mod common;

use common::models;

#[test]
fn mlp() {
    let (b, i) = models::mlp();
    common::check("mlp", &b, &i);
}

#[test]
fn small_cnn_with_batchnorm() {
    let (b, i) = models::small_cnn_with_batchnorm();
    common::check("small cnn", &b, &i);
}

#[test]
fn resnet_style_stage() {
    let (b, i) = models::resnet_style_stage();
    common::check("resnet stage", &b, &i);
}

#[test]
fn mobilenet_v2_inverted_residual() {
    let (b, i) = models::mobilenet_v2_inverted_residual();
    common::check("mobilenet block", &b, &i);
}

#[test]
fn transformer_encoder_block() {
    let (b, i) = models::transformer_encoder_block();
    common::check("transformer block", &b, &i);
}
