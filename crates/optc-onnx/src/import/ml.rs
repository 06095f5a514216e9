//! Ops of the `ai.onnx.ml` domain (classic machine learning): `Binarizer` (1 where the
//! input exceeds `threshold`, else 0, in the input's type) and `ArrayFeatureExtractor`
//! (the elements of the last axis at the given indices: a `Gather`; a 1-D input gives one
//! row, as onnxruntime and the ONNX reference shape it); `TreeEnsemble` in
//! `tree_ensemble.rs`.

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Op};
use tract_onnx::pb;

/// The domain's name in `opset_import` and `NodeProto::domain`.
pub(super) const DOMAIN: &str = "ai.onnx.ml";

/// The op types of the domain this module imports.
pub(super) const OPS: &[&str] = &["ArrayFeatureExtractor", "Binarizer", "TreeEnsemble"];

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    if node.op_type == "TreeEnsemble" {
        return super::tree_ensemble::convert(ctx, node, name);
    }
    let a = Attrs { node };
    let x = ctx.required(node, 0)?;
    let xt = ctx.ty(&x);
    match node.op_type.as_str() {
        "Binarizer" => {
            if !matches!(xt.dtype, DType::F32 | DType::F64 | DType::I64 | DType::I32) {
                return Err(format!("the input must be a number tensor, it is {xt}"));
            }
            let threshold = a.float_or("threshold", 0.0);
            let mut s = Steps::new(ctx, name);
            let t = s.scalar(threshold, xt.dtype)?;
            let above = s.binary(BinaryOp::Greater, &x, &t)?;
            Ok(vec![Some(s.last(Op::Cast { to: xt.dtype }, &[above])?)])
        }
        "ArrayFeatureExtractor" => {
            let indices = ctx.required(node, 1)?;
            let it = ctx.ty(&indices);
            if xt.rank() == 0 || !matches!(it.dtype, DType::I64 | DType::I32) {
                return Err(format!(
                    "the data {xt} must have rank >= 1 and the indices {it} be integers"
                ));
            }
            let count = it.numel();
            let mut s = Steps::new(ctx, name);
            let flat = s.reshape(&indices, vec![count])?;
            let picked = s.op(
                Op::Gather {
                    axis: xt.rank() - 1,
                },
                &[x, flat],
            )?;
            let mut shape = if xt.rank() == 1 {
                vec![1]
            } else {
                xt.shape[..xt.rank() - 1].to_vec()
            };
            shape.push(count);
            Ok(vec![Some(s.last(Op::Reshape { shape }, &[picked])?)])
        }
        other => Err(format!("{other} is not an {DOMAIN} op optc imports")),
    }
}
