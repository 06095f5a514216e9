//! ONNX `TfIdfVectorizer` on integer tokens (`pool_int64s`; string pools are refused): per
//! row, how often each n-gram of the pool occurs, weighted (`TF`: the count, `IDF`: the
//! weight where it occurs, `TFIDF`: weight times count). As the ONNX reference counts them:
//! an n-gram of `n >= 2` tokens at every start and at every skip distance from 1 to
//! `max_skip_count` plus one (its tokens that far apart), a unigram once; only sizes from
//! `min_gram_length` to `max_gram_length`; of duplicate pool entries the last one's output
//! column. Imported per
//! gram size and distance as shifted slices of the row compared with the pool's tokens
//! (`[B, positions, grams]`), all tokens matching, summed over the positions, and added
//! into the grams' output columns (`ngram_indexes`) by a `ScatterElements`.

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Data, Op, ReduceKind, ScatterReduction, Tensor};
use std::collections::BTreeMap;
use tract_onnx::pb;

/// The largest comparison tensor of one gram size and distance (rows x positions x grams).
const MAX_COMPARISONS: usize = 1 << 28;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let x = ctx.required(node, 0)?;
    let xt = ctx.ty(&x);
    if !matches!(xt.dtype, DType::I64 | DType::I32) || xt.rank() > 2 || xt.rank() == 0 {
        return Err(format!(
            "the input must be int32 or int64 tokens [C] or [B, C], it is {xt} (string pools are not supported)"
        ));
    }
    let pool = a
        .ints("pool_int64s")
        .ok_or("attribute 'pool_int64s' is required (string pools are not supported)")?;
    let counts = a
        .ints("ngram_counts")
        .ok_or("attribute 'ngram_counts' is required")?;
    let indexes = a
        .ints("ngram_indexes")
        .ok_or("attribute 'ngram_indexes' is required")?;
    let min_len = a.int_or("min_gram_length", 1);
    let max_len = a.int_or("max_gram_length", 1);
    let max_skip = a.int_or("max_skip_count", 0);
    let mode = a.string("mode").unwrap_or_default();
    let weights: Vec<f32> = a.floats("weights").unwrap_or_default();
    if !(1..=64).contains(&min_len)
        || max_len < min_len
        || max_len > 64
        || !(0..=1024).contains(&max_skip)
    {
        return Err(format!(
            "min_gram_length {min_len}, max_gram_length {max_len} and max_skip_count {max_skip} must satisfy 1 <= min <= max <= 64, 0 <= skip <= 1024"
        ));
    }
    if !["TF", "IDF", "TFIDF"].contains(&mode.as_str()) {
        return Err(format!("mode '{mode}' is not TF, IDF or TFIDF"));
    }
    let output_size = indexes
        .iter()
        .copied()
        .max()
        .map_or(0, |m| m.saturating_add(1));
    if indexes.iter().any(|&i| i < 0) || !(1..=1 << 24).contains(&output_size) {
        return Err(format!(
            "ngram_indexes must be non-negative, the largest below {}",
            1 << 24
        ));
    }
    let output_size = output_size as usize;
    if !weights.is_empty() && weights.len() < output_size {
        return Err(format!(
            "{} weights for {output_size} output columns",
            weights.len()
        ));
    }
    // The pool's grams per size: id order (ids count every gram, loaded or not), the last
    // of duplicates keeping the column.
    let mut grams: BTreeMap<usize, BTreeMap<Vec<i64>, usize>> = BTreeMap::new();
    let mut id = 0usize;
    for (i, &start) in counts.iter().enumerate() {
        let end = counts.get(i + 1).copied().unwrap_or(pool.len() as i64);
        if start < 0 || end < start || end as usize > pool.len() {
            return Err(format!(
                "ngram_counts {counts:?} does not split the {} pool entries",
                pool.len()
            ));
        }
        let size = i + 1;
        let items = &pool[start as usize..end as usize];
        let n = items.len() / size;
        if (min_len as usize..=max_len as usize).contains(&size) {
            for g in items.chunks_exact(size) {
                let column = *indexes
                    .get(id)
                    .ok_or_else(|| format!("ngram_indexes has no entry for gram {id}"))?;
                grams
                    .entry(size)
                    .or_default()
                    .insert(g.to_vec(), column as usize);
                id += 1;
            }
        } else {
            id += n;
        }
    }
    let (rows, width, one_row) = match xt.rank() {
        1 => (1, xt.shape[0], true),
        _ => (xt.shape[0], xt.shape[1], false),
    };
    let mut s = Steps::new(ctx, name);
    let tokens = if xt.dtype == DType::I64 {
        x
    } else {
        s.op(Op::Cast { to: DType::I64 }, &[x])?
    };
    let tokens = s.reshape(&tokens, vec![rows, width])?;
    let zeros = s.constant(Tensor::scalar_f32(0.0));
    let mut counted = s.op(
        Op::Expand {
            shape: vec![rows, output_size],
        },
        &[zeros],
    )?;
    for (&size, set) in &grams {
        let list: Vec<(&Vec<i64>, &usize)> = set.iter().collect();
        let p = list.len();
        let distances = if size == 1 { 1 } else { max_skip as usize + 1 };
        let mut total: Option<Val> = None;
        for d in 1..=distances {
            let span = (size - 1) * d;
            if span >= width {
                break;
            }
            let positions = width - span;
            if rows.saturating_mul(positions).saturating_mul(p) > MAX_COMPARISONS {
                return Err(format!(
                    "{rows} rows of {positions} positions against {p} grams of {size} tokens is more than supported"
                ));
            }
            let mut all: Option<Val> = None;
            for k in 0..size {
                let shifted = s.slice_axis(&tokens, 1, (k * d) as i64, 1, positions)?;
                let shifted = s.reshape(&shifted, vec![rows, positions, 1])?;
                let column: Vec<i64> = list.iter().map(|(g, _)| g[k]).collect();
                let column =
                    s.constant(Tensor::new(vec![1, 1, p], Data::I64(column)).map_err(|e| e.msg)?);
                let equal = s.binary(BinaryOp::Equal, &shifted, &column)?;
                all = Some(match all {
                    None => equal,
                    Some(v) => s.binary(BinaryOp::And, &v, &equal)?,
                });
            }
            let hits = s.op(Op::Cast { to: DType::F32 }, &[all.expect("size >= 1")])?;
            let found = s.reduce(ReduceKind::Sum, &hits, &[1], false)?;
            total = Some(match total {
                None => found,
                Some(t) => s.binary(BinaryOp::Add, &t, &found)?,
            });
        }
        let Some(total) = total else { continue };
        let columns: Vec<i64> = list.iter().map(|(_, &c)| c as i64).collect();
        let columns = s.constant(Tensor::new(vec![1, p], Data::I64(columns)).map_err(|e| e.msg)?);
        let columns = s.op(
            Op::Expand {
                shape: vec![rows, p],
            },
            &[columns],
        )?;
        counted = s.op(
            Op::ScatterElements {
                axis: 1,
                reduction: ScatterReduction::Add,
            },
            &[counted, columns, total],
        )?;
    }
    // TF: the counts; IDF: whether each gram occurs; TFIDF: the counts; then the weights
    // where given (IDF and TFIDF).
    let weighted = match mode.as_str() {
        "TF" => counted,
        mode => {
            let base = if mode == "IDF" {
                let zero = s.constant(Tensor::scalar_f32(0.0));
                let present = s.binary(BinaryOp::Greater, &counted, &zero)?;
                s.op(Op::Cast { to: DType::F32 }, &[present])?
            } else {
                counted
            };
            if weights.is_empty() {
                base
            } else {
                let w = s.constant(
                    Tensor::from_f32(vec![1, output_size], weights[..output_size].to_vec())
                        .map_err(|e| e.msg)?,
                );
                s.binary(BinaryOp::Mul, &base, &w)?
            }
        }
    };
    let shape = if one_row {
        vec![output_size]
    } else {
        vec![rows, output_size]
    };
    Ok(vec![Some(s.last(Op::Reshape { shape }, &[weighted])?)])
}
