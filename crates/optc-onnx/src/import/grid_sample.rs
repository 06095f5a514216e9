//! ONNX `GridSample` (2-D and 3-D; `linear`, `nearest` and `cubic`; every padding mode and
//! `align_corners`), imported as the ONNX reference computes it: per spatial dim the grid's
//! coordinate is unnormalized, brought inside the borders (`border`: clamped, `reflection`:
//! reflected), and the neighbouring pixels (the nearest one, or the 2^d corners with their
//! linear weights, or the 4^d of the cubic convolution with a = -0.75) are gathered from the
//! flattened input; a pixel outside the input is 0 (`zeros`), the edge one (`border`) or its
//! reflection (`reflection`).

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{BinaryOp, DType, Data, Op, Tensor, UnaryOp};
use tract_onnx::pb;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Linear,
    Nearest,
    Cubic,
}

#[derive(Clone, Copy, PartialEq)]
enum Padding {
    Zeros,
    Border,
    Reflection,
}

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let x = ctx.required(node, 0)?;
    let grid = ctx.required(node, 1)?;
    let (xt, gt) = (ctx.ty(&x), ctx.ty(&grid));
    let dt = xt.dtype;
    if !matches!(dt, DType::F32 | DType::F64) || gt.dtype != dt {
        return Err(format!(
            "GridSample is supported on f32 or f64 (input and grid of one type), got {xt} and {gt}"
        ));
    }
    let d = xt.rank().saturating_sub(2);
    if !(2..=3).contains(&d)
        || gt.rank() != d + 2
        || gt.shape[0] != xt.shape[0]
        || gt.shape[d + 1] != d
    {
        return Err(format!(
            "input {xt} and grid {gt} must be [N, C, spatial..] and [N, out.., {d}] with 2 or 3 spatial dims"
        ));
    }
    let mode = match a.string("mode").as_deref().unwrap_or("linear") {
        "linear" | "bilinear" => Mode::Linear,
        "nearest" => Mode::Nearest,
        "cubic" | "bicubic" => Mode::Cubic,
        m => return Err(format!("mode '{m}' is not an ONNX value")),
    };
    let linear = mode != Mode::Nearest;
    let padding = match a.string("padding_mode").as_deref().unwrap_or("zeros") {
        "zeros" => Padding::Zeros,
        "border" => Padding::Border,
        "reflection" => Padding::Reflection,
        p => return Err(format!("padding_mode '{p}' is not an ONNX value")),
    };
    let align = a.int_or("align_corners", 0) != 0;
    let (n, c) = (xt.shape[0], xt.shape[1]);
    let dims = &xt.shape[2..];
    let out_sp = &gt.shape[1..=d];
    let plane: usize = dims.iter().product();
    let total = xt.numel();
    if total >= 1 << 24 {
        return Err(format!("the input {xt} is too large for optc's GridSample"));
    }
    let mut s = Steps::new(ctx, name);
    // [N, 1, out..]: where the output pixel reads; one coordinate per spatial dim.
    let mut coord_shape = vec![n, 1];
    coord_shape.extend(out_sp);
    let mut coords = vec![];
    for (i, &dim) in dims.iter().enumerate() {
        // the grid's last axis holds (x, y[, z]): dim i is its entry d-1-i
        let g = s.slice_axis(&grid, d + 1, (d - 1 - i) as i64, 1, 1)?;
        let g = s.reshape(&g, coord_shape.clone())?;
        let len = dim as f32;
        let one = s.scalar(1.0, dt)?;
        let g1 = s.binary(BinaryOp::Add, &g, &one)?;
        let v = if align {
            let k = s.scalar((len - 1.0) / 2.0, dt)?;
            s.binary(BinaryOp::Mul, &g1, &k)?
        } else {
            let l = s.scalar(len, dt)?;
            let t = s.binary(BinaryOp::Mul, &g1, &l)?;
            let t = s.binary(BinaryOp::Sub, &t, &one)?;
            let h = s.scalar(0.5, dt)?;
            s.binary(BinaryOp::Mul, &t, &h)?
        };
        let v = if linear {
            v
        } else {
            s.unary(UnaryOp::Round, &v)?
        };
        let (lo, hi) = if align {
            (0.0, len - 1.0)
        } else {
            (-0.5, len - 0.5)
        };
        let v = match padding {
            Padding::Zeros => v,
            Padding::Border => clamp_outside(&mut s, &v, lo, hi, 0.0, len - 1.0, dt)?,
            Padding::Reflection => reflect(&mut s, &v, lo, hi, dt)?,
        };
        coords.push((v, lo, hi));
    }
    // Base offset of every (n, c) plane: [N, C, 1..].
    let mut base_shape = vec![n, c];
    base_shape.extend(std::iter::repeat_n(1, d));
    let offsets = (0..n * c).map(|p| (p * plane) as f64);
    let base = s.constant(
        match dt {
            DType::F64 => Tensor::new(base_shape, Data::F64(offsets.collect())),
            _ => Tensor::from_f32(base_shape, offsets.map(|o| o as f32).collect()),
        }
        .map_err(|e| e.msg)?,
    );
    let flat = s.reshape(&x, vec![total])?;
    let strides = optc_ir::strides(dims);
    // Per dim: the (index, weight) pairs of the neighbours.
    let mut taps: Vec<Vec<(Val, Option<Val>)>> = vec![];
    for (v, _, _) in &coords {
        if mode == Mode::Cubic {
            let f = s.unary(UnaryOp::Floor, v)?;
            let t = s.binary(BinaryOp::Sub, v, &f)?;
            let weights = cubic_weights(&mut s, &t, dt)?;
            let mut tap = vec![];
            for (k, w) in weights.into_iter().enumerate() {
                let off = s.scalar(k as f32 - 1.0, dt)?;
                let idx = s.binary(BinaryOp::Add, &f, &off)?;
                tap.push((idx, Some(w)));
            }
            taps.push(tap);
        } else if linear {
            let f = s.unary(UnaryOp::Floor, v)?;
            let one = s.scalar(1.0, dt)?;
            let f1 = s.binary(BinaryOp::Add, &f, &one)?;
            let w1 = s.binary(BinaryOp::Sub, v, &f)?;
            let w0 = s.binary(BinaryOp::Sub, &one, &w1)?;
            taps.push(vec![(f, Some(w0)), (f1, Some(w1))]);
        } else {
            // integral already (rounded, then clamped or reflected onto integers)
            taps.push(vec![(v.clone(), None)]);
        }
    }
    let mut acc: Option<Val> = None;
    let corners: usize = taps.iter().map(|t| t.len()).product();
    for corner in 0..corners {
        let mut rem = corner;
        let mut offset: Option<Val> = None;
        let mut weight: Option<Val> = None;
        let mut valid: Option<Val> = None;
        for (i, t) in taps.iter().enumerate() {
            let (idx, w) = &t[rem % t.len()];
            rem /= t.len();
            let len = dims[i] as f32;
            let (idx, ok) = pixel_index(&mut s, idx, len, padding, coords[i].1, coords[i].2, dt)?;
            let st = s.scalar(strides[i] as f32, dt)?;
            let term = s.binary(BinaryOp::Mul, &idx, &st)?;
            offset = Some(match offset {
                None => term,
                Some(o) => s.binary(BinaryOp::Add, &o, &term)?,
            });
            if let Some(w) = w {
                weight = Some(match weight {
                    None => w.clone(),
                    Some(o) => s.binary(BinaryOp::Mul, &o, w)?,
                });
            }
            if let Some(ok) = ok {
                valid = Some(match valid {
                    None => ok,
                    Some(o) => s.binary(BinaryOp::And, &o, &ok)?,
                });
            }
        }
        let offset = offset.expect("at least one spatial dim");
        let at = s.binary(BinaryOp::Add, &base, &offset)?;
        let at = s.op(Op::Cast { to: DType::I64 }, &[at])?;
        let mut v = s.op(Op::Gather { axis: 0 }, &[flat.clone(), at])?;
        if let Some(ok) = valid {
            let zero = s.scalar(0.0, dt)?;
            v = s.op(Op::Where, &[ok, v, zero])?;
        }
        if let Some(w) = weight {
            v = s.binary(BinaryOp::Mul, &v, &w)?;
        }
        acc = Some(match acc {
            None => v,
            Some(a) => s.binary(BinaryOp::Add, &a, &v)?,
        });
    }
    Ok(vec![acc])
}

/// The cubic convolution weights (a = -0.75) of the taps at -1, 0, 1 and 2 from the floor,
/// for the fraction `t`, in the reference's formulas.
fn cubic_weights(s: &mut Steps, t: &Val, dt: DType) -> R<Vec<Val>> {
    const A: f32 = -0.75;
    // a polynomial in u with the given coefficients, highest power first (Horner)
    let poly = |s: &mut Steps, u: &Val, coeffs: &[f32]| -> R<Val> {
        let mut acc = s.scalar(coeffs[0], dt)?;
        for &c in &coeffs[1..] {
            let m = s.binary(BinaryOp::Mul, &acc, u)?;
            let k = s.scalar(c, dt)?;
            acc = s.binary(BinaryOp::Add, &m, &k)?;
        }
        Ok(acc)
    };
    // |x| in (1, 2): A x^3 - 5A x^2 + 8A x - 4A; |x| <= 1: (A+2) x^3 - (A+3) x^2 + 1
    let far = [A, -5.0 * A, 8.0 * A, -4.0 * A];
    let near = [A + 2.0, -(A + 3.0), 0.0, 1.0];
    let one = s.scalar(1.0, dt)?;
    let two = s.scalar(2.0, dt)?;
    let t1 = s.binary(BinaryOp::Add, t, &one)?;
    let u1 = s.binary(BinaryOp::Sub, &one, t)?;
    let u2 = s.binary(BinaryOp::Sub, &two, t)?;
    Ok(vec![
        poly(s, &t1, &far)?,
        poly(s, t, &near)?,
        poly(s, &u1, &near)?,
        poly(s, &u2, &far)?,
    ])
}

/// `v` clamped to `[a, b]` where it lies outside `[lo, hi]`.
#[allow(clippy::too_many_arguments)]
fn clamp_outside(s: &mut Steps, v: &Val, lo: f32, hi: f32, a: f32, b: f32, dt: DType) -> R<Val> {
    let (l, h) = (s.scalar(lo, dt)?, s.scalar(hi, dt)?);
    let below = s.binary(BinaryOp::Less, v, &l)?;
    let above = s.binary(BinaryOp::Greater, v, &h)?;
    let out = s.binary(BinaryOp::Or, &below, &above)?;
    let clamped = s.op(
        Op::Unary(UnaryOp::Clip { min: a, max: b }),
        std::slice::from_ref(v),
    )?;
    s.op(Op::Where, &[out, clamped, v.clone()])
}

/// The reference's reflection of `v` into `[lo, hi]` (repeatedly, by the nearer border).
fn reflect(s: &mut Steps, v: &Val, lo: f32, hi: f32, dt: DType) -> R<Val> {
    let range = hi - lo;
    let (l, h) = (s.scalar(lo, dt)?, s.scalar(hi, dt)?);
    let rng = s.scalar(range, dt)?;
    let two = s.scalar(2.0, dt)?;
    // distance past the border it crossed, how many ranges, and the rest
    let side = |s: &mut Steps, dx: Val, near: &Val, far: &Val, toward: f32| -> R<Val> {
        let q = s.binary(BinaryOp::Div, &dx, &rng)?;
        let k = s.unary(UnaryOp::Floor, &q)?;
        let kr = s.binary(BinaryOp::Mul, &k, &rng)?;
        let r = s.binary(BinaryOp::Sub, &dx, &kr)?;
        let half = s.binary(BinaryOp::Div, &k, &two)?;
        let fl = s.unary(UnaryOp::Floor, &half)?;
        let even = s.binary(BinaryOp::Equal, &half, &fl)?;
        let sign = s.scalar(toward, dt)?;
        let rs = s.binary(BinaryOp::Mul, &r, &sign)?;
        let from_near = s.binary(BinaryOp::Add, near, &rs)?;
        let from_far = s.binary(BinaryOp::Sub, far, &rs)?;
        s.op(Op::Where, &[even, from_near, from_far])
    };
    let below = s.binary(BinaryOp::Less, v, &l)?;
    let dx = s.binary(BinaryOp::Sub, &l, v)?;
    let low = side(s, dx, &l, &h, 1.0)?;
    let above = s.binary(BinaryOp::Greater, v, &h)?;
    let dx = s.binary(BinaryOp::Sub, v, &h)?;
    let high = side(s, dx, &h, &l, -1.0)?;
    let v2 = s.op(Op::Where, &[above, high, v.clone()])?;
    s.op(Op::Where, &[below, low, v2])
}

/// The pixel an integer index `i` reads along a dim of `len`, as the reference's
/// `_pixel_at_array`: with `zeros` padding also whether it lies inside (else the value is 0).
fn pixel_index(
    s: &mut Steps,
    i: &Val,
    len: f32,
    padding: Padding,
    lo: f32,
    hi: f32,
    dt: DType,
) -> R<(Val, Option<Val>)> {
    match padding {
        Padding::Zeros => {
            let zero = s.scalar(0.0, dt)?;
            let top = s.scalar(len - 1.0, dt)?;
            let ge = s.binary(BinaryOp::GreaterOrEqual, i, &zero)?;
            let le = s.binary(BinaryOp::LessOrEqual, i, &top)?;
            let ok = s.binary(BinaryOp::And, &ge, &le)?;
            let safe = s.op(Op::Where, &[ok.clone(), i.clone(), zero])?;
            Ok((safe, Some(ok)))
        }
        Padding::Border => Ok((
            s.op(
                Op::Unary(UnaryOp::Clip {
                    min: 0.0,
                    max: len - 1.0,
                }),
                std::slice::from_ref(i),
            )?,
            None,
        )),
        Padding::Reflection => {
            let r = reflect(s, i, lo, hi, dt)?;
            // int(): toward zero, then kept inside for safety
            let neg = s.scalar(0.0, dt)?;
            let is_neg = s.binary(BinaryOp::Less, &r, &neg)?;
            let up = s.unary(UnaryOp::Ceil, &r)?;
            let down = s.unary(UnaryOp::Floor, &r)?;
            let t = s.op(Op::Where, &[is_neg, up, down])?;
            let t = s.op(
                Op::Unary(UnaryOp::Clip {
                    min: 0.0,
                    max: len - 1.0,
                }),
                &[t],
            )?;
            Ok((t, None))
        }
    }
}
