//! ONNX `Einsum`, imported as reductions, transposes, reshapes and batched `MatMul`s.
//!
//! The equation (`"bij,bjk->bik"`, with `...` for broadcast dims and the implicit output
//! of the spec when `->` is absent) is parsed into one letter per dim. Per operand, a
//! letter written twice takes the diagonal (a product with an identity mask, then a sum),
//! and a letter no other operand and not the output uses is summed away. Operands are then
//! combined left to right: letters both share and the output (or a later operand) needs
//! are batch dims, letters both share and nothing later needs are contracted, the rest are
//! kept; one `MatMul` computes `[batch.., kept_a, contracted] @ [batch.., contracted,
//! kept_b]`. A final sum and transpose give the output's order.

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Op, ReduceKind, Tensor};
use tract_onnx::pb;

/// One operand on its way: its value and the letter of each of its dims.
struct Term {
    v: Val,
    letters: Vec<char>,
}

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let equation = a
        .string("equation")
        .ok_or("attribute 'equation' is missing")?;
    let ins: Vec<Val> = (0..node.input.len())
        .map(|k| ctx.required(node, k))
        .collect::<R<_>>()?;
    if ins.is_empty() {
        return Err("needs at least one input".into());
    }
    for v in &ins {
        let t = ctx.ty(v);
        if t.dtype != DType::F32 {
            return Err(format!("Einsum is supported on f32 inputs, got {t}"));
        }
    }
    let ranks: Vec<usize> = ins.iter().map(|v| ctx.ty(v).rank()).collect();
    let (inputs, output) = parse(&equation, &ranks)?;
    let mut s = Steps::new(ctx, name);
    // Sizes per letter (checked across operands; 1 broadcasts).
    let mut size: std::collections::HashMap<char, usize> = Default::default();
    for (v, letters) in ins.iter().zip(&inputs) {
        for (&c, &d) in letters.iter().zip(&s.shape(v)) {
            let e = size.entry(c).or_insert(d);
            if *e != d && *e != 1 && d != 1 {
                return Err(format!("'{c}' is {} in one operand and {d} in another", *e));
            }
            *e = (*e).max(d);
        }
    }
    let mut terms: Vec<Term> = vec![];
    for (k, (v, letters)) in ins.into_iter().zip(inputs.iter()).enumerate() {
        let mut t = diagonals(&mut s, v, letters.clone())?;
        // Sum letters used nowhere else.
        let used_elsewhere = |c: char| {
            output.contains(&c)
                || inputs
                    .iter()
                    .enumerate()
                    .any(|(j, l)| j != k && l.contains(&c))
        };
        let gone: Vec<usize> = (0..t.letters.len())
            .filter(|&i| !used_elsewhere(t.letters[i]))
            .collect();
        if !gone.is_empty() {
            t.v = s.reduce(ReduceKind::Sum, &t.v, &gone, false)?;
            t.letters = (0..t.letters.len())
                .filter(|i| !gone.contains(i))
                .map(|i| t.letters[i])
                .collect();
        }
        terms.push(t);
    }
    let mut acc = terms.remove(0);
    for (j, b) in terms.into_iter().enumerate() {
        // Letters needed after this product: the output's and the later operands'.
        let later: Vec<char> = output
            .iter()
            .copied()
            .chain(inputs.iter().skip(j + 2).flatten().copied())
            .collect();
        acc = product(&mut s, acc, b, &later, &size)?;
    }
    // Sum what the output does not keep, then its order.
    let gone: Vec<usize> = (0..acc.letters.len())
        .filter(|&i| !output.contains(&acc.letters[i]))
        .collect();
    if !gone.is_empty() {
        acc.v = s.reduce(ReduceKind::Sum, &acc.v, &gone, false)?;
        acc.letters = (0..acc.letters.len())
            .filter(|i| !gone.contains(i))
            .map(|i| acc.letters[i])
            .collect();
    }
    let perm: Vec<usize> = output
        .iter()
        .map(|c| acc.letters.iter().position(|l| l == c).expect("kept"))
        .collect();
    let out = if perm.iter().enumerate().all(|(i, &p)| i == p) {
        acc.v
    } else {
        s.transpose(&acc.v, perm)?
    };
    Ok(vec![Some(out)])
}

/// The letters of each operand and of the output, `...` expanded to synthetic letters
/// (right-aligned across operands, as numpy broadcasts).
fn parse(equation: &str, ranks: &[usize]) -> R<(Vec<Vec<char>>, Vec<char>)> {
    let eq: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l.to_string(), Some(r.to_string())),
        None => (eq.clone(), None),
    };
    let specs: Vec<&str> = lhs.split(',').collect();
    if specs.len() != ranks.len() {
        return Err(format!(
            "equation '{equation}' has {} operands, the node {}",
            specs.len(),
            ranks.len()
        ));
    }
    // Synthetic letters for `...`: Greek, never in an equation.
    let synthetic = |i: usize| char::from_u32(0x3B1 + i as u32).unwrap_or('?');
    let mut ellipsis = 0;
    for (spec, &r) in specs.iter().zip(ranks) {
        if spec.contains("...") {
            let named = spec.replace("...", "").chars().count();
            if named > r {
                return Err(format!("'{spec}' names more dims than its operand's {r}"));
            }
            ellipsis = ellipsis.max(r - named);
        }
    }
    let expand = |spec: &str, rank: Option<usize>| -> R<Vec<char>> {
        let mut out = vec![];
        let parts: Vec<&str> = spec.splitn(2, "...").collect();
        for c in parts[0].chars() {
            if !c.is_ascii_alphabetic() {
                return Err(format!("'{c}' in equation '{equation}' is not a letter"));
            }
            out.push(c);
        }
        if parts.len() == 2 {
            let e = match rank {
                Some(r) => r - spec.replace("...", "").chars().count(),
                None => ellipsis,
            };
            out.extend((ellipsis - e..ellipsis).map(synthetic));
            for c in parts[1].chars() {
                if !c.is_ascii_alphabetic() {
                    return Err(format!("'{c}' in equation '{equation}' is not a letter"));
                }
                out.push(c);
            }
        }
        Ok(out)
    };
    let mut inputs = vec![];
    for (spec, &r) in specs.iter().zip(ranks) {
        let l = expand(spec, Some(r))?;
        if l.len() != r {
            return Err(format!(
                "'{spec}' names {} dims, its operand has {r}",
                l.len()
            ));
        }
        inputs.push(l);
    }
    let output = match rhs {
        Some(r) => {
            let o = expand(&r, None)?;
            for c in &o {
                if !inputs.iter().any(|l| l.contains(c)) {
                    return Err(format!("output letter '{c}' is in no operand"));
                }
            }
            o
        }
        None => {
            // Implicit: the broadcast dims, then the letters used once, in order.
            let mut o: Vec<char> = (0..ellipsis).map(synthetic).collect();
            let mut once: Vec<char> = inputs
                .iter()
                .flatten()
                .copied()
                .filter(|c| c.is_ascii_alphabetic())
                .filter(|c| inputs.iter().flatten().filter(|d| *d == c).count() == 1)
                .collect();
            once.sort();
            o.extend(once);
            o
        }
    };
    Ok((inputs, output))
}

/// Take the diagonal of every letter an operand repeats.
fn diagonals(s: &mut Steps, v: Val, letters: Vec<char>) -> R<Term> {
    let mut t = Term { v, letters };
    while let Some((i, j)) = (0..t.letters.len()).find_map(|i| {
        (i + 1..t.letters.len())
            .find(|&j| t.letters[j] == t.letters[i])
            .map(|j| (i, j))
    }) {
        let shape = s.shape(&t.v);
        let n = shape[i];
        if shape[j] != n {
            return Err(format!(
                "'{}' is repeated over dims of {} and {}",
                t.letters[i], n, shape[j]
            ));
        }
        // x * eye(i, j), summed over j.
        let mut mask_shape = vec![1; shape.len()];
        mask_shape[i] = n;
        mask_shape[j] = n;
        let eye: Vec<f32> = (0..n * n).map(|k| (k / n == k % n) as u8 as f32).collect();
        let eye = s.constant(Tensor::from_f32(mask_shape, eye).map_err(|e| e.msg)?);
        let masked = s.binary(BinaryOp::Mul, &t.v, &eye)?;
        t.v = s.reduce(ReduceKind::Sum, &masked, &[j], false)?;
        t.letters.remove(j);
    }
    Ok(t)
}

/// `a * b` summed over the letters both have and `later` does not need.
fn product(
    s: &mut Steps,
    a: Term,
    b: Term,
    later: &[char],
    size: &std::collections::HashMap<char, usize>,
) -> R<Term> {
    let shared: Vec<char> = a
        .letters
        .iter()
        .copied()
        .filter(|c| b.letters.contains(c))
        .collect();
    let batch: Vec<char> = shared
        .iter()
        .copied()
        .filter(|c| later.contains(c))
        .collect();
    let contracted: Vec<char> = shared
        .iter()
        .copied()
        .filter(|c| !later.contains(c))
        .collect();
    let keep_a: Vec<char> = a
        .letters
        .iter()
        .copied()
        .filter(|c| !shared.contains(c))
        .collect();
    let keep_b: Vec<char> = b
        .letters
        .iter()
        .copied()
        .filter(|c| !shared.contains(c))
        .collect();
    let arrange = |s: &mut Steps, t: &Term, order: &[char]| -> R<Val> {
        let perm: Vec<usize> = order
            .iter()
            .map(|c| t.letters.iter().position(|l| l == c).expect("letter"))
            .collect();
        if perm.iter().enumerate().all(|(i, &p)| i == p) {
            Ok(t.v.clone())
        } else {
            s.transpose(&t.v, perm)
        }
    };
    let dims_of = |t: &Term, s: &Steps, cs: &[char]| -> Vec<usize> {
        let shape = s.shape(&t.v);
        cs.iter()
            .map(|c| shape[t.letters.iter().position(|l| l == c).expect("letter")])
            .collect()
    };
    let prod = |d: &[usize]| d.iter().product::<usize>();
    let order_a: Vec<char> = batch
        .iter()
        .chain(&keep_a)
        .chain(&contracted)
        .copied()
        .collect();
    let order_b: Vec<char> = batch
        .iter()
        .chain(&contracted)
        .chain(&keep_b)
        .copied()
        .collect();
    let (ba, bb) = (dims_of(&a, s, &batch), dims_of(&b, s, &batch));
    let (ka, cb) = (dims_of(&a, s, &keep_a), dims_of(&b, s, &keep_b));
    let (ca, cc) = (dims_of(&a, s, &contracted), dims_of(&b, s, &contracted));
    if ca != cc {
        return Err(format!(
            "contracted dims {contracted:?} differ: {ca:?} and {cc:?}"
        ));
    }
    let av = arrange(s, &a, &order_a)?;
    let bv = arrange(s, &b, &order_b)?;
    let mut sa = ba.clone();
    sa.extend([prod(&ka), prod(&ca)]);
    let mut sb = bb.clone();
    sb.extend([prod(&ca), prod(&cb)]);
    let av = s.reshape(&av, sa)?;
    let bv = s.reshape(&bv, sb)?;
    let m = s.op(Op::MatMul, &[av, bv])?;
    let mut out_shape: Vec<usize> = batch.iter().map(|c| size[c]).collect();
    out_shape.extend(&ka);
    out_shape.extend(&cb);
    let v = s.reshape(&m, out_shape)?;
    Ok(Term {
        v,
        letters: batch.into_iter().chain(keep_a).chain(keep_b).collect(),
    })
}
