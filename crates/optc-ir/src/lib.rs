//! optc's intermediate representation.
//!
//! - [`Graph`]: a `petgraph` dataflow graph of [`Node`]s, each holding an [`Op`].
//! - [`Op`]: every operator, with its shape/dtype inference ([`Op::infer`]).
//! - [`op_table`]: every kind of op once: name, arity, attributes ([`attr`]), properties.
//! - [`Tensor`]: constants and values; constants live in [`Graph::consts`].
//! - [`interp`]: the reference interpreter that defines each op's semantics.
//! - [`text`]: the deterministic text format (printer and parser).

#[macro_use]
mod names;

mod dtype;
mod error;
mod graph;
pub mod linear_quantization;
pub mod narrow;
mod op;
pub mod op_table;
pub mod quantized;
pub mod sparsity;
mod tensor;

pub mod attr;
pub mod dot;
pub mod flops;
pub mod interp;
pub mod text;

pub use attr::{AttrSpec, AttrText, AttrType, AttrValue, Attrs};
pub use dtype::DType;
pub use error::{IrError, Result};
pub use graph::{Edge, Graph, GraphInput, GraphOutput, Node, NodeId, Value};
pub use op::{
    broadcast_shapes, BinaryOp, ConstId, FusedStep, Op, PadMode, ReduceKind, ScatterReduction,
    SliceDim, TensorType, UnaryOp, Window, GELU_ERF_SCALE, GELU_TANH_CUBE, GELU_TANH_SCALE,
    LENGTH_OUT_OF_RANGE, UNCOMPILED_BRANCH,
};
pub use op_table::{CostClass, Family, OpInfo, OpKind, Prop, OPS};
pub use quantized::{ActivationQuantization, QuantParams};
pub use tensor::{checked_numel, numel, strides, Data, Tensor, MAX_ELEMENTS};
