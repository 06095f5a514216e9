//! `Resize` (and `Upsample`), imported as per-axis gathers and interpolation matrices:
//! against tract where it implements the mode, and against the spec's formulas written
//! out here (bilinear by its closed form, cubic on polynomials it must reproduce,
//! antialias and extrapolation on constants) where it does not.

mod common;

use common::*;
use optc::{DType, Options, Tensor};
use optc_onnx::builder::{Attr as A, ModelBuilder};

/// A Resize model: x (a run-time input), roi / scales / sizes as initializers.
fn resize(
    x: &[usize],
    scales: Option<&[f32]>,
    sizes: Option<&[i64]>,
    roi: Option<&[f32]>,
    attrs: Vec<(&str, A)>,
) -> Vec<u8> {
    let mut b = ModelBuilder::new(19);
    b.input("x", DType::F32, &dims(x));
    let mut ins = vec!["x", "", "", ""];
    if let Some(r) = roi {
        b.initializer("roi", &Tensor::from_f32(vec![r.len()], r.to_vec()).unwrap());
        ins[1] = "roi";
    }
    if let Some(s) = scales {
        b.initializer(
            "scales",
            &Tensor::from_f32(vec![s.len()], s.to_vec()).unwrap(),
        );
        ins[2] = "scales";
    }
    if let Some(s) = sizes {
        b.initializer(
            "sizes",
            &Tensor::from_i64(vec![s.len()], s.to_vec()).unwrap(),
        );
        ins[3] = "sizes";
    }
    while ins.last() == Some(&"") {
        ins.pop();
    }
    b.node("Resize", &ins, &["y"], attrs);
    b.output("y");
    b.to_bytes()
}

fn run(bytes: &[u8], x: &Tensor) -> Tensor {
    let mut m = optc::compile_bytes(bytes, &Options::default()).unwrap();
    m.run(std::slice::from_ref(x)).unwrap().remove(0)
}

fn s(v: &str) -> A {
    A::Str(v.into())
}

#[test]
fn nearest_and_linear_against_tract() {
    let mut r = Rng::new(3);
    let x = r.tensor(&[1, 2, 4, 5], -1.0, 1.0);
    for (mode, transform, nearest) in [
        ("nearest", "asymmetric", "floor"),
        ("nearest", "half_pixel", "round_prefer_floor"),
        ("nearest", "align_corners", "round_prefer_ceil"),
        ("nearest", "asymmetric", "ceil"),
        ("linear", "half_pixel", "round_prefer_floor"),
        ("linear", "align_corners", "round_prefer_floor"),
        ("linear", "asymmetric", "round_prefer_floor"),
        ("linear", "pytorch_half_pixel", "round_prefer_floor"),
    ] {
        let attrs = || {
            vec![
                ("mode", s(mode)),
                ("coordinate_transformation_mode", s(transform)),
                ("nearest_mode", s(nearest)),
            ]
        };
        let label = format!("{mode} {transform} {nearest}");
        let up = resize(
            &[1, 2, 4, 5],
            Some(&[1.0, 1.0, 2.0, 1.5]),
            None,
            None,
            attrs(),
        );
        check(&format!("{label} up"), &up, std::slice::from_ref(&x));
        let down = resize(&[1, 2, 4, 5], None, Some(&[1, 2, 3, 2]), None, attrs());
        check(&format!("{label} down"), &down, std::slice::from_ref(&x));
    }
}

/// Bilinear with half_pixel, by its closed form: source coordinate (o + 0.5) / scale -
/// 0.5, clamped to the edge, weights 1 - t and t.
fn bilinear(x: &Tensor, oh: usize, ow: usize) -> Tensor {
    let (h, w) = (x.shape()[2], x.shape()[3]);
    let v = x.to_f64_vec();
    let at = |i: usize, j: usize| v[i * w + j];
    let axis = |o: usize, n_in: usize, n_out: usize| {
        let c = ((o as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).max(0.0);
        let i0 = (c.floor() as usize).min(n_in - 1);
        let i1 = (i0 + 1).min(n_in - 1);
        (i0, i1, c - c.floor())
    };
    let mut out = vec![];
    for oi in 0..oh {
        let (i0, i1, ti) = axis(oi, h, oh);
        for oj in 0..ow {
            let (j0, j1, tj) = axis(oj, w, ow);
            let top = at(i0, j0) * (1.0 - tj) + at(i0, j1) * tj;
            let bottom = at(i1, j0) * (1.0 - tj) + at(i1, j1) * tj;
            out.push((top * (1.0 - ti) + bottom * ti) as f32);
        }
    }
    Tensor::from_f32(vec![1, 1, oh, ow], out).unwrap()
}

#[test]
fn linear_matches_the_closed_form() {
    let x = Rng::new(5).tensor(&[1, 1, 5, 7], -2.0, 2.0);
    for (oh, ow) in [(10, 14), (3, 4), (8, 5)] {
        let m = resize(
            &[1, 1, 5, 7],
            None,
            Some(&[1, 1, oh as i64, ow as i64]),
            None,
            vec![("mode", s("linear"))],
        );
        let d = optc::compare(&run(&m, &x), &bilinear(&x, oh, ow), 1e-5, 1e-5).unwrap();
        assert!(d.allclose, "{oh}x{ow}: {d:?}");
    }
}

#[test]
fn cubic_reproduces_constants_and_ramps_away_from_the_edges() {
    // Cubic convolution with a = -0.5 reproduces polynomials up to degree 2 where all four
    // taps are inside; constants everywhere, also with exclude_outside and antialias.
    let (h, w) = (6usize, 9usize);
    let ramp: Vec<f32> = (0..h * w)
        .map(|k| (k % w) as f32 * 0.5 + (k / w) as f32)
        .collect();
    let x = Tensor::from_f32(vec![1, 1, h, w], ramp).unwrap();
    let m = resize(
        &[1, 1, h, w],
        Some(&[1.0, 1.0, 2.0, 2.0]),
        None,
        None,
        vec![
            ("mode", s("cubic")),
            ("cubic_coeff_a", A::Float(-0.5)),
            ("coordinate_transformation_mode", s("align_corners")),
        ],
    );
    let y = run(&m, &x);
    let (oh, ow) = (2 * h, 2 * w);
    let v = y.to_f64_vec();
    let inside = |c: f64, n: usize| c.floor() >= 1.0 && c.floor() + 2.0 <= (n - 1) as f64;
    let mut checked = 0;
    for oi in 0..oh {
        for oj in 0..ow {
            let ci = oi as f64 * (h - 1) as f64 / (oh - 1) as f64;
            let cj = oj as f64 * (w - 1) as f64 / (ow - 1) as f64;
            if !inside(ci, h) || !inside(cj, w) {
                continue;
            }
            checked += 1;
            let want = cj * 0.5 + ci;
            assert!(
                (v[oi * ow + oj] - want).abs() < 1e-4,
                "{oi},{oj}: {} vs {want}",
                v[oi * ow + oj]
            );
        }
    }
    assert!(checked > 20, "{checked}");
    let c = Tensor::from_f32(vec![1, 1, h, w], vec![1.5; h * w]).unwrap();
    for attrs in [
        vec![("mode", s("cubic")), ("exclude_outside", A::Int(1))],
        vec![("mode", s("cubic")), ("antialias", A::Int(1))],
        vec![("mode", s("linear")), ("antialias", A::Int(1))],
    ] {
        let m = resize(&[1, 1, h, w], None, Some(&[1, 1, 4, 3]), None, attrs);
        for v in run(&m, &c).to_f64_vec() {
            assert!((v - 1.5).abs() < 1e-5, "{v}");
        }
    }
}

#[test]
fn crop_and_resize_fills_outside_with_the_extrapolation_value() {
    let x = Rng::new(8).tensor(&[1, 1, 4, 4], 0.0, 1.0);
    let m = resize(
        &[1, 1, 4, 4],
        None,
        Some(&[1, 1, 3, 3]),
        Some(&[0.0, 0.0, -0.5, 0.4, 1.0, 1.0, 0.5, 1.5]),
        vec![
            ("mode", s("linear")),
            ("coordinate_transformation_mode", s("tf_crop_and_resize")),
            ("extrapolation_value", A::Float(10.0)),
        ],
    );
    let y = run(&m, &x).to_f64_vec();
    // rows: source 1.5 o - 1.5 = -1.5, 0, 1.5; cols: 1.65 o + 1.2 = 1.2, 2.85, 4.5: row 0
    // and column 2 are outside.
    let xv = x.to_f64_vec();
    let lerp = |i: f64, j: f64| {
        let (i0, j0) = (i.floor() as usize, j.floor() as usize);
        let (ti, tj) = (i - i0 as f64, j - j0 as f64);
        let at = |a: usize, b: usize| xv[a.min(3) * 4 + b.min(3)];
        (at(i0, j0) * (1.0 - tj) + at(i0, j0 + 1) * tj) * (1.0 - ti)
            + (at(i0 + 1, j0) * (1.0 - tj) + at(i0 + 1, j0 + 1) * tj) * ti
    };
    for (k, v) in y.iter().enumerate() {
        let (oi, oj) = (k / 3, k % 3);
        let want = if oi == 0 || oj == 2 {
            10.0
        } else {
            lerp([-1.5, 0.0, 1.5][oi], [1.2, 2.85, 4.5][oj])
        };
        assert!((v - want).abs() < 1e-5, "({oi},{oj}): {v} vs {want}");
    }
}

#[test]
fn nearest_keeps_integers_and_axes_and_aspect_policy_work() {
    // Integers: a gather, exact.
    let mut b = ModelBuilder::new(19);
    b.input("x", DType::I64, &[2, 3]);
    b.initializer(
        "scales",
        &Tensor::from_f32(vec![2], vec![2.0, 0.7]).unwrap(),
    );
    b.node(
        "Resize",
        &["x", "", "scales"],
        &["y"],
        vec![("mode", s("nearest"))],
    );
    b.output("y");
    let x = Tensor::from_i64(vec![2, 3], vec![1, 2, 3, 4, 5, 6]).unwrap();
    let y = run(&b.to_bytes(), &x);
    // rows 0,0,1,1 (half_pixel, round_prefer_floor); cols: 3 * 0.7 = 2 -> sources 0.21, 1.64
    assert_eq!(y.shape(), &[4, 2]);
    assert_eq!(y.to_i64_vec(), vec![1, 3, 1, 3, 4, 6, 4, 6]);
    // axes + keep_aspect_ratio_policy: [4, 6] to fit in 2 x 5 -> scale 0.5 -> [2, 3]
    let mut b = ModelBuilder::new(19);
    b.input("x", DType::F32, &[1, 4, 6]);
    b.initializer("sizes", &Tensor::from_i64(vec![2], vec![2, 5]).unwrap());
    b.node(
        "Resize",
        &["x", "", "", "sizes"],
        &["y"],
        vec![
            ("mode", s("linear")),
            ("axes", A::Ints(vec![1, 2])),
            ("keep_aspect_ratio_policy", s("not_larger")),
        ],
    );
    b.output("y");
    let x = Rng::new(2).tensor(&[1, 4, 6], -1.0, 1.0);
    let y = run(&b.to_bytes(), &x);
    assert_eq!(y.shape(), &[1, 2, 3]);
    // scale 1/2 with half_pixel: sources 0.5, 2.5 (rows) and 0.5, 2.5, 4.5 (cols)
    let xv = x.to_f64_vec();
    let mean4 = |i: usize, j: usize| {
        (xv[i * 6 + j] + xv[i * 6 + j + 1] + xv[(i + 1) * 6 + j] + xv[(i + 1) * 6 + j + 1]) / 4.0
    };
    let want: Vec<f64> = [(0, 0), (0, 2), (0, 4), (2, 0), (2, 2), (2, 4)]
        .iter()
        .map(|&(i, j)| mean4(i, j))
        .collect();
    for (g, w) in y.to_f64_vec().iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{g} vs {w}");
    }
}

#[test]
fn upsample_repeats() {
    let mut b = ModelBuilder::new(9);
    b.input("x", DType::F32, &[1, 1, 2, 2]);
    b.initializer(
        "scales",
        &Tensor::from_f32(vec![4], vec![1.0, 1.0, 2.0, 3.0]).unwrap(),
    );
    b.node(
        "Upsample",
        &["x", "scales"],
        &["y"],
        vec![("mode", s("nearest"))],
    );
    b.output("y");
    let x = Tensor::from_f32(vec![1, 1, 2, 2], vec![1.0, 2.0, 3.0, 4.0]).unwrap();
    let y = run(&b.to_bytes(), &x);
    let row = |a: f32, c: f32| [a, a, a, c, c, c];
    let mut want = vec![];
    for r in [row(1.0, 2.0), row(1.0, 2.0), row(3.0, 4.0), row(3.0, 4.0)] {
        want.extend(r);
    }
    assert_eq!(
        y.to_f64_vec(),
        want.iter().map(|&v| v as f64).collect::<Vec<_>>()
    );
}

#[test]
fn bad_attributes_name_the_problem() {
    for (attrs, want) in [
        (vec![("mode", s("bicubic"))], "mode"),
        (
            vec![("coordinate_transformation_mode", s("tf_half_pixel_for_nn"))],
            "coordinate_transformation_mode",
        ),
        (
            vec![("mode", s("nearest")), ("antialias", A::Int(1))],
            "antialias",
        ),
    ] {
        let m = resize(
            &[1, 1, 2, 2],
            Some(&[1.0, 1.0, 2.0, 2.0]),
            None,
            None,
            attrs,
        );
        let e = optc::compile_bytes(&m, &Options::default())
            .err()
            .expect(want)
            .to_string();
        assert!(e.contains(want), "{e}");
    }
    let m = resize(&[1, 1, 2, 2], Some(&[1.0, 2.0]), None, None, vec![]);
    let e = optc::compile_bytes(&m, &Options::default())
        .err()
        .expect("scales")
        .to_string();
    assert!(e.contains("scales"), "{e}");
}
