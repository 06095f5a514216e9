//! [`Steps`]: builds the nodes of an ONNX op imported as a composition of IR ops
//! (`decompose.rs`, `attention.rs`, `resize.rs`, `conv_transpose.rs`), each named
//! `<node>/<step>`; [`Steps::last`] gives the node's own name to its final step.

use super::{Ctx, Val, R};
use optc_ir::{BinaryOp, DType, Data, Op, ReduceKind, SliceDim, Tensor, UnaryOp};
use std::sync::Arc;

pub(super) struct Steps<'c> {
    pub ctx: &'c mut Ctx,
    pub name: String,
    pub count: usize,
}

impl<'c> Steps<'c> {
    pub fn new(ctx: &'c mut Ctx, name: &str) -> Self {
        Steps {
            ctx,
            name: name.to_string(),
            count: 0,
        }
    }

    pub fn op(&mut self, op: Op, ins: &[Val]) -> R<Val> {
        self.count += 1;
        let n = format!("{}/{}", self.name, self.count);
        self.ctx.emit1(&n, op, ins, false)
    }

    /// Like [`Steps::op`], but computed at import time whenever the inputs are constants
    /// (for weights: the size cap of ordinary folding does not apply).
    pub fn fold(&mut self, op: Op, ins: &[Val]) -> R<Val> {
        self.count += 1;
        let n = format!("{}/{}", self.name, self.count);
        self.ctx.emit1(&n, op, ins, true)
    }

    pub fn last(&mut self, op: Op, ins: &[Val]) -> R<Val> {
        let n = self.name.clone();
        self.ctx.emit1(&n, op, ins, false)
    }

    pub fn unary(&mut self, u: UnaryOp, x: &Val) -> R<Val> {
        self.op(Op::Unary(u), std::slice::from_ref(x))
    }

    pub fn binary(&mut self, b: BinaryOp, x: &Val, y: &Val) -> R<Val> {
        self.op(Op::Binary(b), &[x.clone(), y.clone()])
    }

    pub fn constant(&mut self, t: Tensor) -> Val {
        self.count += 1;
        Val::Const {
            t: Arc::new(t),
            name: format!("{}/{}", self.name, self.count),
        }
    }

    pub fn f32(&mut self, v: f32) -> Val {
        self.constant(Tensor::scalar_f32(v))
    }

    /// A scalar constant `v` of `dtype` (converted as `Cast` converts).
    pub fn scalar(&mut self, v: f32, dtype: DType) -> R<Val> {
        let t = optc_ir::interp::eval_op(&Op::Cast { to: dtype }, &[&Tensor::scalar_f32(v)])
            .map_err(|e| e.msg)?
            .remove(0);
        Ok(self.constant(t))
    }

    pub fn reshape(&mut self, x: &Val, shape: Vec<usize>) -> R<Val> {
        self.count += 1;
        let n = format!("{}/{}", self.name, self.count);
        self.ctx
            .emit1(&n, Op::Reshape { shape }, std::slice::from_ref(x), true)
    }

    pub fn transpose(&mut self, x: &Val, perm: Vec<usize>) -> R<Val> {
        self.op(Op::Transpose { perm }, std::slice::from_ref(x))
    }

    pub fn reduce(&mut self, kind: ReduceKind, x: &Val, axes: &[usize], keepdims: bool) -> R<Val> {
        self.op(
            Op::Reduce {
                kind,
                axes: axes.to_vec(),
                keepdims,
            },
            std::slice::from_ref(x),
        )
    }

    /// `x` sliced along `axis` only: `len` elements from `start`, `step` apart.
    pub fn slice_axis(
        &mut self,
        x: &Val,
        axis: usize,
        start: i64,
        step: i64,
        len: usize,
    ) -> R<Val> {
        let dims = SliceDim::along(&self.shape(x), axis, start, step, len);
        self.op(Op::Slice { dims }, std::slice::from_ref(x))
    }

    pub fn shape(&self, x: &Val) -> Vec<usize> {
        self.ctx.ty(x).shape
    }
}

/// A tensor of float type `dtype` holding `v`: f64 as it is, any other type as f32 (the
/// values rounded to it).
pub(super) fn float_tensor(dtype: DType, v: Vec<f64>, shape: Vec<usize>) -> R<Tensor> {
    let data = match dtype {
        DType::F64 => Data::F64(v),
        _ => Data::F32(v.into_iter().map(|e| e as f32).collect()),
    };
    Tensor::new(shape, data).map_err(|e| e.msg)
}

/// An i64 tensor holding `v`.
pub(super) fn i64_tensor(v: Vec<i64>, shape: Vec<usize>) -> R<Tensor> {
    Tensor::new(shape, Data::I64(v)).map_err(|e| e.msg)
}

/// The multi-index of row-major flat index `i` in `shape` (the last axis fastest).
pub(super) fn unflatten(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for k in (0..shape.len()).rev() {
        index[k] = i % shape[k];
        i /= shape[k];
    }
    index
}
