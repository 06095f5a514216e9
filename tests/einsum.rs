//! `Einsum` (imported as reductions, transposes and batched MatMuls) against tract, over
//! matrix products, batches, traces and diagonals, sums, outer products, broadcasting
//! ellipses, implicit outputs and three operands.

mod common;

use common::*;
use optc::Tensor;
use optc_onnx::builder::Attr as A;

fn case(equation: &str, shapes: &[&[usize]]) {
    let mut r = Rng::new(equation.len() as u64 * 31 + shapes.len() as u64);
    let names = ["a", "b", "c"];
    let ins: Vec<(&str, Tensor, bool)> = shapes
        .iter()
        .zip(names)
        .map(|(s, n)| (n, r.tensor(s, -1.0, 1.0), false))
        .collect();
    check_op(
        equation,
        "Einsum",
        12,
        &ins,
        vec![("equation", A::Str(equation.into()))],
        1,
    );
}

#[test]
fn products_and_batches() {
    case("ij,jk->ik", &[&[3, 4], &[4, 5]]);
    case("bij,bjk->bik", &[&[2, 3, 4], &[2, 4, 5]]);
    case("bhqd,bhkd->bhqk", &[&[1, 2, 3, 4], &[1, 2, 5, 4]]);
    case("ij,kj->ik", &[&[3, 4], &[5, 4]]);
    case("i,i->", &[&[6], &[6]]);
    case("i,j->ij", &[&[3], &[4]]);
    case("ij,j->i", &[&[3, 4], &[4]]);
    case("ij,jk,kl->il", &[&[2, 3], &[3, 4], &[4, 2]]);
}

#[test]
fn single_operands_sums_traces_and_diagonals() {
    case("ij->ji", &[&[3, 4]]);
    case("ijk->j", &[&[2, 3, 4]]);
    case("ijk->ki", &[&[2, 3, 4]]);
    case("ii->", &[&[4, 4]]);
    case("ii->i", &[&[4, 4]]);
    case("bii->bi", &[&[2, 3, 3]]);
}

#[test]
fn ellipses_and_implicit_outputs() {
    case("...ij,...jk->...ik", &[&[2, 3, 4], &[2, 4, 5]]);
    case("...ij,jk", &[&[2, 3, 4], &[4, 5]]);
    case("ij,jk", &[&[3, 4], &[4, 5]]);
    case("ba", &[&[3, 4]]);
}

#[test]
fn bad_equations_name_the_problem() {
    let mut r = Rng::new(1);
    for (eq, want) in [
        ("ij->iz", "'z'"),
        ("ij->i", ""),
        ("ijk->i", "3 labels"),
        ("i1->i", "not a letter"),
    ] {
        let (bytes, _) = one_node(
            "Einsum",
            12,
            &[("a", r.tensor(&[3, 4], -1.0, 1.0), false)],
            vec![("equation", A::Str(eq.into()))],
            1,
        );
        match optc::compile_bytes(&bytes, &optc::Options::default()) {
            Err(e) => assert!(e.to_string().contains(want), "{eq}: {e}"),
            Ok(_) => assert!(want.is_empty(), "{eq} should fail"),
        }
    }
}

#[test]
fn a_full_sum_is_a_scalar() {
    // (tract returns the input unchanged for "ijk->", so the oracle here is the sum)
    let x = Rng::new(4).tensor(&[2, 3, 4], -1.0, 1.0);
    let (bytes, rt) = one_node(
        "Einsum",
        12,
        &[("a", x.clone(), false)],
        vec![("equation", A::Str("ijk->".into()))],
        1,
    );
    let mut m = optc::compile_bytes(&bytes, &optc::Options::default()).unwrap();
    let y = m.run(&rt).unwrap();
    assert_eq!(y[0].shape(), &[] as &[usize]);
    let want: f64 = x.to_f64_vec().iter().sum();
    assert!((y[0].to_f64_vec()[0] - want).abs() < 1e-5);
}
