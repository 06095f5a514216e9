//! The two graph rewrites codegen still does itself, kept in this one place until they move
//! into `passes/` (the optimizer's job):
//!
//! - `Where(IsNaN(x), c, x)` with a one-element f32 `c` (BERT's masked-softmax cleanup) runs as
//!   one `NanTo` loop, the IsNaN node neither lowered nor called (see `module`),
//! - `acc / c` followed by `erf` in a fused chain (GELU's `erf(x / sqrt 2)`) becomes one
//!   `erf(acc * (1 / c))` step ([`fold_erf_div`]).

use crate::node::NodeInfo;
use crate::ops::fused::ChainStep;
use crate::ops::operand::Opd;
use cranelift_codegen::ir::Value;
use optc_ir::{BinaryOp, DType, UnaryOp};

/// Replace `acc / c` followed by `erf` (GELU's `erf(x / sqrt 2)`) by one `ErfMul(1/c)` step
/// when `c` is a finite, nonzero scalar constant: a multiply instead of a divide. `erf(x * r)`
/// differs from `erf(fl(x / c))` by under 1.5 ulp of the argument, which moves erf by at most
/// 1.5 * 2^-24 relative (`|y erf'(y)| <= erf(y)`); with `E::erf`'s own 3.3e-7 the step stays
/// within 5e-7 relative (`erf_of_quotient_error_bound`).
pub(crate) fn fold_erf_div(
    info: &NodeInfo,
    ins: &[Value],
    opds: &[Opd],
    chain: &mut Vec<ChainStep>,
) {
    let mut i = 0;
    while i + 1 < chain.len() {
        let r = match (&chain[i], &chain[i + 1]) {
            (
                ChainStep::Binary {
                    op: BinaryOp::Div,
                    k,
                    swap: false,
                },
                ChainStep::Unary(UnaryOp::Erf),
            ) => ins
                .iter()
                .position(|&v| v == opds[*k].p)
                .and_then(|j| info.consts[j].as_ref())
                .filter(|c| c.dtype() == DType::F32 && c.numel() == 1)
                .map(|c| c.to_f64_vec()[0])
                .filter(|c| c.is_finite() && *c != 0.0)
                .map(|c| (1.0 / c) as f32)
                .filter(|r| r.is_normal()),
            _ => None,
        };
        if let Some(r) = r {
            chain.splice(i..i + 2, [ChainStep::ErfMul(r)]);
        }
        i += 1;
    }
}
