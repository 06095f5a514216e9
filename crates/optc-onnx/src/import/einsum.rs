//! ONNX `Einsum` as a composition of IR ops, operand by operand:
//! - a label repeated within one operand takes the diagonal (the two axes moved last,
//!   flattened, and a `Gather` of the constant diagonal positions);
//! - labels of one operand that nothing later needs (no other operand, not the output) are
//!   summed away (`ReduceSum`);
//! - two operands contract as one batched `MatMul`: each transposed to
//!   `[batch, kept, contracted]` / `[batch, contracted, kept]` and flattened to rank 3, the
//!   product reshaped back; more operands contract left to right;
//! - a final `Transpose` puts the labels in the output's order.
//!
//! Ellipses stand for the same leading dims in every operand (equal extents: optc does not
//! broadcast them). Contractions need f32.

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{Op, ReduceKind, Tensor};
use tract_onnx::pb;

/// One operand: its value and a label per axis.
struct Term {
    v: Val,
    labels: Vec<char>,
}

/// The label of ellipsis dim `k`: a private-use character, never a letter.
fn ellipsis_label(k: usize) -> char {
    char::from_u32(0xE000 + k as u32).unwrap_or('\u{E000}')
}

/// Parse one side's term: letters, at most one `...` standing for `ell` labels.
fn parse_term(t: &str, rank: Option<usize>, ell: &mut Option<usize>) -> R<Vec<char>> {
    let t = t.trim();
    let parts: Vec<&str> = t.split("...").collect();
    if parts.len() > 2 {
        return Err(format!("term '{t}' has more than one ellipsis"));
    }
    let letters: usize = parts.iter().map(|p| p.chars().count()).sum();
    for c in parts.iter().flat_map(|p| p.chars()) {
        if !c.is_ascii_alphabetic() {
            return Err(format!(
                "term '{t}' has a character '{c}' that is not a letter"
            ));
        }
    }
    let mut out: Vec<char> = parts[0].chars().collect();
    if parts.len() == 2 {
        let n = match rank {
            Some(r) => r
                .checked_sub(letters)
                .ok_or_else(|| format!("term '{t}' has more labels than its operand's rank {r}"))?,
            None => ell.ok_or("the output has an ellipsis but no input has")?,
        };
        if let Some(prev) = *ell {
            if prev != n {
                return Err(format!(
                    "ellipses stand for {prev} and {n} dims (broadcasting is not supported)"
                ));
            }
        }
        *ell = Some(n);
        out.extend((0..n).map(ellipsis_label));
        out.extend(parts[1].chars());
    } else if let Some(r) = rank {
        if letters != r {
            return Err(format!(
                "term '{t}' has {letters} labels for an operand of rank {r}"
            ));
        }
    }
    Ok(out)
}

/// Take the diagonal of every label repeated within `t`.
fn diagonals(s: &mut Steps, t: Term) -> R<Term> {
    let mut t = t;
    loop {
        let dup = (0..t.labels.len()).find_map(|p| {
            (p + 1..t.labels.len())
                .find(|&q| t.labels[q] == t.labels[p])
                .map(|q| (p, q))
        });
        let Some((p, q)) = dup else { return Ok(t) };
        let shape = s.shape(&t.v);
        if shape[p] != shape[q] {
            return Err(format!(
                "label '{}' has extents {} and {}",
                t.labels[p], shape[p], shape[q]
            ));
        }
        let n = shape[p];
        let others: Vec<usize> = (0..shape.len()).filter(|&a| a != p && a != q).collect();
        let mut perm = others.clone();
        perm.extend([p, q]);
        let moved = s.transpose(&t.v, perm)?;
        let mut flat: Vec<usize> = others.iter().map(|&a| shape[a]).collect();
        flat.push(n * n);
        let r = flat.len();
        let flat_v = s.reshape(&moved, flat)?;
        let idx = Tensor::from_i64(vec![n], (0..n as i64).map(|k| k * (n as i64 + 1)).collect())
            .map_err(|e| e.msg)?;
        let idx = s.constant(idx);
        let d = s.op(Op::Gather { axis: r - 1 }, &[flat_v, idx])?;
        let mut labels: Vec<char> = others.iter().map(|&a| t.labels[a]).collect();
        labels.push(t.labels[p]);
        t = Term { v: d, labels };
    }
}

/// Sum away the labels of `t` not in `keep`.
fn sum_unused(s: &mut Steps, t: Term, keep: &[char]) -> R<Term> {
    let axes: Vec<usize> = (0..t.labels.len())
        .filter(|&a| !keep.contains(&t.labels[a]))
        .collect();
    if axes.is_empty() {
        return Ok(t);
    }
    let v = s.reduce(ReduceKind::Sum, &t.v, &axes, false)?;
    let labels = (0..t.labels.len())
        .filter(|a| !axes.contains(a))
        .map(|a| t.labels[a])
        .collect();
    Ok(Term { v, labels })
}

/// `x` transposed so its labels read `order` (skipped when they already do).
fn arrange(s: &mut Steps, t: &Term, order: &[char]) -> R<Val> {
    let perm: Vec<usize> = order
        .iter()
        .map(|c| t.labels.iter().position(|l| l == c).unwrap_or(0))
        .collect();
    if perm.iter().enumerate().all(|(i, &p)| i == p) {
        return Ok(t.v.clone());
    }
    s.transpose(&t.v, perm)
}

/// `a` and `b` contracted, keeping the labels in `keep`, as one batched MatMul.
fn contract(s: &mut Steps, a: Term, b: Term, keep: &[char]) -> R<Term> {
    let (sa, sb) = (s.shape(&a.v), s.shape(&b.v));
    let extent = |t: &Term, shape: &[usize], c: char| {
        shape[t.labels.iter().position(|&l| l == c).unwrap_or(0)]
    };
    let in_b = |c: &char| b.labels.contains(c);
    let batch: Vec<char> = a
        .labels
        .iter()
        .filter(|c| in_b(c) && keep.contains(c))
        .copied()
        .collect();
    let summed: Vec<char> = a
        .labels
        .iter()
        .filter(|c| in_b(c) && !keep.contains(c))
        .copied()
        .collect();
    let a_kept: Vec<char> = a.labels.iter().filter(|c| !in_b(c)).copied().collect();
    let b_kept: Vec<char> = b
        .labels
        .iter()
        .filter(|c| !a.labels.contains(c))
        .copied()
        .collect();
    for c in batch.iter().chain(&summed) {
        let (ea, eb) = (extent(&a, &sa, *c), extent(&b, &sb, *c));
        if ea != eb {
            return Err(format!(
                "label '{c}' has extents {ea} and {eb} (broadcasting is not supported)"
            ));
        }
    }
    let size = |t: &Term, shape: &[usize], ls: &[char]| -> usize {
        ls.iter().map(|&c| extent(t, shape, c)).product()
    };
    let (nb, m, k) = (
        size(&a, &sa, &batch),
        size(&a, &sa, &a_kept),
        size(&a, &sa, &summed),
    );
    let n = size(&b, &sb, &b_kept);
    let order_a: Vec<char> = [&batch[..], &a_kept, &summed].concat();
    let order_b: Vec<char> = [&batch[..], &summed, &b_kept].concat();
    let va = arrange(s, &a, &order_a)?;
    let vb = arrange(s, &b, &order_b)?;
    let va = s.reshape(&va, vec![nb, m, k])?;
    let vb = s.reshape(&vb, vec![nb, k, n])?;
    let p = s.op(Op::MatMul, &[va, vb])?;
    let mut shape: Vec<usize> = batch.iter().map(|&c| extent(&a, &sa, c)).collect();
    shape.extend(a_kept.iter().map(|&c| extent(&a, &sa, c)));
    shape.extend(b_kept.iter().map(|&c| extent(&b, &sb, c)));
    let v = s.reshape(&p, shape)?;
    Ok(Term {
        v,
        labels: [&batch[..], &a_kept, &b_kept].concat(),
    })
}

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let eq: String = a
        .string("equation")
        .ok_or("attribute equation is missing")?
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let ins: Vec<Val> = (0..node.input.len())
        .map(|k| ctx.required(node, k))
        .collect::<R<_>>()?;
    let terms_text: Vec<&str> = lhs.split(',').collect();
    if terms_text.len() != ins.len() {
        return Err(format!(
            "equation '{eq}' has {} terms for {} inputs",
            terms_text.len(),
            ins.len()
        ));
    }
    let mut ell = None;
    let mut terms = vec![];
    for (t, v) in terms_text.iter().zip(&ins) {
        let ty = ctx.ty(v);
        if !ty.dtype.is_float() {
            return Err(format!(
                "Einsum on {} is not supported (f32 and f64 only)",
                ty.dtype
            ));
        }
        let labels = parse_term(t, Some(ty.rank()), &mut ell)?;
        terms.push(Term {
            v: v.clone(),
            labels,
        });
    }
    let out: Vec<char> = match rhs {
        Some(r) => parse_term(&r, None, &mut ell)?,
        None => {
            // Implicit: the ellipsis dims, then the labels seen once, alphabetically.
            let all: Vec<char> = terms.iter().flat_map(|t| t.labels.clone()).collect();
            let mut once: Vec<char> = all
                .iter()
                .filter(|c| c.is_ascii_alphabetic() && all.iter().filter(|d| d == c).count() == 1)
                .copied()
                .collect();
            once.sort();
            let mut o: Vec<char> = (0..ell.unwrap_or(0)).map(ellipsis_label).collect();
            o.extend(once);
            o
        }
    };
    for (i, c) in out.iter().enumerate() {
        if out[..i].contains(c) || !terms.iter().any(|t| t.labels.contains(c)) {
            return Err(format!("output label '{c}' is repeated or in no input"));
        }
    }
    let mut s = Steps::new(ctx, name);
    let mut terms = terms
        .into_iter()
        .map(|t| diagonals(&mut s, t))
        .collect::<R<Vec<_>>>()?;
    // Labels still needed after term `i`: the output's and those of the terms after it.
    let needed_after = |terms: &[Term], i: usize| -> Vec<char> {
        let mut v = out.clone();
        for t in &terms[i + 1..] {
            v.extend(t.labels.iter().copied());
        }
        v
    };
    let mut acc: Option<Term> = None;
    for i in 0..terms.len() {
        let later = needed_after(&terms, i);
        let t = std::mem::replace(
            &mut terms[i],
            Term {
                v: ins[0].clone(),
                labels: vec![],
            },
        );
        acc = Some(match acc {
            None => sum_unused(&mut s, t, &later)?,
            Some(prev) => {
                let mut with_b = later.clone();
                with_b.extend(prev.labels.iter().copied());
                let t = sum_unused(&mut s, t, &with_b)?;
                contract(&mut s, prev, t, &later)?
            }
        });
    }
    let acc = acc.ok_or("Einsum has no inputs")?;
    let perm: Vec<usize> = out
        .iter()
        .map(|c| acc.labels.iter().position(|l| l == c).unwrap_or(0))
        .collect();
    if acc.labels.len() != out.len() {
        return Err(format!(
            "internal: labels {:?} left for output {:?}",
            acc.labels, out
        ));
    }
    let v = s.last(Op::Transpose { perm }, &[acc.v])?;
    Ok(vec![Some(v)])
}
