//! ONNX `Attention` as imported (IR interpreter) against a direct loop over the spec's
//! definition, written here independently: per batch, query head and query position, the
//! scaled dot products with every key, the masks, softmax, the weighted sum of values.

mod common;

use common::import;
use optc_ir::{DType, Data, Tensor};
use optc_onnx::builder::{Attr, ModelBuilder};

fn rand_t(shape: &[usize], seed: &mut u64) -> Tensor {
    let n: usize = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((*seed >> 33) % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    Tensor::new(shape.to_vec(), Data::F32(v)).unwrap()
}

struct Case {
    batch: usize,
    q_heads: usize,
    kv_heads: usize,
    q_len: usize,
    kv_len: usize,
    past: usize,
    head: usize,
    value_head: usize,
    three_d: bool,
    causal: bool,
    /// A boolean mask `[q_len, past + kv_len]` given as an input.
    bool_mask: bool,
    softcap: f32,
    scale: Option<f32>,
}

/// `x[b][h][s][d]` of a `[B, H, S, D]` tensor given as 4-D, or as 3-D `[B, S, H * D]`.
fn at(v: &[f64], three_d: bool, dims: [usize; 4], b: usize, h: usize, s: usize, d: usize) -> f64 {
    let [_, heads, len, size] = dims;
    if three_d {
        v[(b * len + s) * heads * size + h * size + d]
    } else {
        v[((b * heads + h) * len + s) * size + d]
    }
}

fn reference(
    c: &Case,
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    past: Option<(&Tensor, &Tensor)>,
    mask: Option<&[bool]>,
) -> Vec<f64> {
    let (qv, kv, vv) = (q.to_f64_vec(), k.to_f64_vec(), v.to_f64_vec());
    let total = c.past + c.kv_len;
    let scale = c.scale.map_or(1.0 / (c.head as f64).sqrt(), |s| s as f64);
    let key = |b: usize, h: usize, j: usize, d: usize| -> f64 {
        if j < c.past {
            let pk = past.unwrap().0.to_f64_vec();
            pk[((b * c.kv_heads + h) * c.past + j) * c.head + d]
        } else {
            at(
                &kv,
                c.three_d,
                [c.batch, c.kv_heads, c.kv_len, c.head],
                b,
                h,
                j - c.past,
                d,
            )
        }
    };
    let value = |b: usize, h: usize, j: usize, d: usize| -> f64 {
        if j < c.past {
            let pv = past.unwrap().1.to_f64_vec();
            pv[((b * c.kv_heads + h) * c.past + j) * c.value_head + d]
        } else {
            at(
                &vv,
                c.three_d,
                [c.batch, c.kv_heads, c.kv_len, c.value_head],
                b,
                h,
                j - c.past,
                d,
            )
        }
    };
    let group = c.q_heads / c.kv_heads;
    let mut out = vec![0.0; c.batch * c.q_heads * c.q_len * c.value_head];
    for b in 0..c.batch {
        for h in 0..c.q_heads {
            for i in 0..c.q_len {
                let mut scores = vec![f64::NEG_INFINITY; total];
                for (j, sc) in scores.iter_mut().enumerate() {
                    let visible_causal = !c.causal || j <= i + c.past;
                    let visible_mask = mask.is_none_or(|m| m[i * total + j]);
                    if !(visible_causal && visible_mask) {
                        continue;
                    }
                    let mut dot = 0.0;
                    for d in 0..c.head {
                        dot += at(
                            &qv,
                            c.three_d,
                            [c.batch, c.q_heads, c.q_len, c.head],
                            b,
                            h,
                            i,
                            d,
                        ) * key(b, h / group, j, d);
                    }
                    let mut x = dot * scale;
                    if c.softcap > 0.0 {
                        x = c.softcap as f64 * (x / c.softcap as f64).tanh();
                    }
                    *sc = x;
                }
                let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores
                    .iter()
                    .map(|x| if m.is_finite() { (x - m).exp() } else { 0.0 })
                    .collect();
                let sum: f64 = e.iter().sum();
                for d in 0..c.value_head {
                    let y: f64 = (0..total)
                        .map(|j| {
                            if sum > 0.0 {
                                e[j] / sum * value(b, h / group, j, d)
                            } else {
                                0.0
                            }
                        })
                        .sum();
                    let idx = if c.three_d {
                        (b * c.q_len + i) * c.q_heads * c.value_head + h * c.value_head + d
                    } else {
                        ((b * c.q_heads + h) * c.q_len + i) * c.value_head + d
                    };
                    out[idx] = y;
                }
            }
        }
    }
    out
}

fn check(c: Case, seed: u64) {
    let mut s = seed;
    let dims = |heads: usize, len: usize, size: usize| -> Vec<usize> {
        if c.three_d {
            vec![c.batch, len, heads * size]
        } else {
            vec![c.batch, heads, len, size]
        }
    };
    let q = rand_t(&dims(c.q_heads, c.q_len, c.head), &mut s);
    let k = rand_t(&dims(c.kv_heads, c.kv_len, c.head), &mut s);
    let v = rand_t(&dims(c.kv_heads, c.kv_len, c.value_head), &mut s);
    let total = c.past + c.kv_len;
    let mut m = ModelBuilder::new(23);
    let i64s = |d: &[usize]| d.iter().map(|&x| x as i64).collect::<Vec<_>>();
    m.input("q", DType::F32, &i64s(q.shape()))
        .input("k", DType::F32, &i64s(k.shape()))
        .input("v", DType::F32, &i64s(v.shape()));
    let mut inputs = vec![q.clone(), k.clone(), v.clone()];
    let mut names = vec!["q", "k", "v"];
    let mask: Option<Vec<bool>> = c.bool_mask.then(|| {
        // Mask a few keys, and every key of query row 0 when there is no causal mask,
        // which the spec says gives zeros.
        (0..c.q_len * total)
            .map(|x| (x * 7 + 3) % 5 != 0 && (c.causal || x >= total))
            .collect()
    });
    if let Some(mv) = &mask {
        m.input("mask", DType::Bool, &[c.q_len as i64, total as i64]);
        inputs.push(Tensor::new(vec![c.q_len, total], Data::Bool(mv.clone())).unwrap());
        names.push("mask");
    } else if c.past > 0 {
        names.push("");
    }
    let past = (c.past > 0).then(|| {
        let pk = rand_t(&[c.batch, c.kv_heads, c.past, c.head], &mut s);
        let pv = rand_t(&[c.batch, c.kv_heads, c.past, c.value_head], &mut s);
        (pk, pv)
    });
    if let Some((pk, pv)) = &past {
        m.initializer("past_key", pk).initializer("past_value", pv);
        names.extend(["past_key", "past_value"]);
    }
    let mut attrs = vec![("is_causal", Attr::Int(c.causal as i64))];
    if c.three_d {
        attrs.push(("q_num_heads", Attr::Int(c.q_heads as i64)));
        attrs.push(("kv_num_heads", Attr::Int(c.kv_heads as i64)));
    }
    if c.softcap > 0.0 {
        attrs.push(("softcap", Attr::Float(c.softcap)));
    }
    if let Some(sc) = c.scale {
        attrs.push(("scale", Attr::Float(sc)));
    }
    m.node("Attention", &names, &["y", "present_key"], attrs)
        .output("y")
        .output("present_key");
    let g = import(&m);
    let outs = optc_ir::interp::run(&g, &inputs).unwrap_or_else(|e| panic!("{e}"));
    let want = reference(
        &c,
        &q,
        &k,
        &v,
        past.as_ref().map(|(a, b)| (a, b)),
        mask.as_deref(),
    );
    let got = outs[0].to_f64_vec();
    assert_eq!(got.len(), want.len());
    for (i, (x, y)) in got.iter().zip(&want).enumerate() {
        assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "[{i}] {x} vs {y}");
    }
    assert_eq!(
        outs[1].shape(),
        &[c.batch, c.kv_heads, total, c.head],
        "present_key"
    );
}

fn base() -> Case {
    Case {
        batch: 2,
        q_heads: 3,
        kv_heads: 3,
        q_len: 4,
        kv_len: 5,
        past: 0,
        head: 8,
        value_head: 8,
        three_d: false,
        causal: false,
        bool_mask: false,
        softcap: 0.0,
        scale: None,
    }
}

#[test]
fn attention_4d_plain() {
    check(base(), 1);
}

#[test]
fn attention_3d_grouped_query_heads_with_a_different_value_size() {
    check(
        Case {
            q_heads: 4,
            kv_heads: 2,
            value_head: 6,
            three_d: true,
            ..base()
        },
        2,
    );
}

#[test]
fn attention_causal_with_a_cache() {
    check(
        Case {
            past: 3,
            kv_len: 4,
            causal: true,
            ..base()
        },
        3,
    );
}

#[test]
fn attention_boolean_mask_with_a_fully_masked_row_softcap_and_scale() {
    check(
        Case {
            bool_mask: true,
            softcap: 2.0,
            scale: Some(0.2),
            ..base()
        },
        4,
    );
}
