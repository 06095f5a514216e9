//! ONNX `Resize` (opsets 10-19, every mode, coordinate transformation, antialias, axes and
//! aspect-ratio policy) and the older `Upsample`, imported as what they are once the shapes
//! are static: a linear map along each resized axis. Per axis the importer computes, as the
//! ONNX reference does, each output position's source coordinate, its neighbours (clamped
//! to the edge) and their weights; then
//! - `nearest` (every weight 0 or 1): a `Gather` of the chosen indices along the axis, exact
//!   for every element type;
//! - `linear` / `cubic`: a `MatMul` with the constant `[out, in]` weight matrix (on the last
//!   axis as `x @ W^T`, on the one before as `W @ x`, elsewhere between two transposes);
//! - `tf_crop_and_resize`: the output positions whose source lies outside the input take
//!   `extrapolation_value` (a `Where` on a constant mask).
//!
//! Axes whose scale is 1 with an unchanged extent and no region of interest are skipped, as
//! in the reference.

use super::steps::Steps;
use super::{norm_axis, Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{DType, Data, Op, Tensor};
use tract_onnx::pb;

/// Largest interpolation matrix (`out * in` entries) the importer builds for one axis.
const MATRIX_MAX: usize = 1 << 24;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

/// How one axis is resized: the attributes that shape its weights.
struct Params {
    mode: Mode,
    transform: String,
    nearest: String,
    cubic_a: f64,
    exclude_outside: bool,
    antialias: bool,
}

/// One axis' weights: per output position, (input index, weight) pairs, and whether the
/// position lies outside the input (`tf_crop_and_resize` only).
struct AxisMap {
    rows: Vec<Vec<(usize, f64)>>,
    outside: Vec<bool>,
}

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let upsample = node.op_type == "Upsample";
    let x = ctx.required(node, 0)?;
    let xt = ctx.ty(&x);
    let rank = xt.rank();
    if rank == 0 {
        return Err("cannot resize a scalar".into());
    }
    let opset = ctx.opset;
    let legacy = upsample || opset < 11;
    let mode = match a.string("mode").as_deref().unwrap_or("nearest") {
        "nearest" => Mode::Nearest,
        "linear" | "bilinear" | "trilinear" => Mode::Linear,
        "cubic" if !legacy => Mode::Cubic,
        other => return Err(format!("mode '{other}' is not supported")),
    };
    let p = Params {
        mode,
        transform: if legacy {
            "asymmetric".into()
        } else {
            a.string("coordinate_transformation_mode")
                .unwrap_or_else(|| "half_pixel".into())
        },
        nearest: if legacy {
            "floor".into()
        } else {
            a.string("nearest_mode")
                .unwrap_or_else(|| "round_prefer_floor".into())
        },
        cubic_a: a.float_or("cubic_coeff_a", -0.75) as f64,
        exclude_outside: a.int_or("exclude_outside", 0) != 0,
        antialias: a.int_or("antialias", 0) != 0,
    };
    const TRANSFORMS: [&str; 6] = [
        "half_pixel",
        "half_pixel_symmetric",
        "pytorch_half_pixel",
        "align_corners",
        "asymmetric",
        "tf_crop_and_resize",
    ];
    if !TRANSFORMS.contains(&p.transform.as_str()) {
        return Err(format!(
            "coordinate_transformation_mode '{}' is not an ONNX value",
            p.transform
        ));
    }
    const NEAREST: [&str; 4] = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"];
    if !NEAREST.contains(&p.nearest.as_str()) {
        return Err(format!("nearest_mode '{}' is not an ONNX value", p.nearest));
    }
    if p.antialias && mode == Mode::Nearest {
        return Err("antialias is not defined for mode 'nearest'".into());
    }
    if mode != Mode::Nearest && !xt.dtype.is_float() {
        return Err(format!(
            "mode '{}' is supported for f32 and f64 input, got {xt}",
            a.string("mode").unwrap_or_default()
        ));
    }
    let extrapolation = a.float_or("extrapolation_value", 0.0);

    // The axes resized, and per axis its scale (or size) and region of interest.
    let axes: Vec<usize> = match a.ints("axes") {
        Some(v) if !legacy => {
            let mut axes = vec![];
            for &ax in &v {
                let ax = norm_axis(ax, rank, "axis")?;
                if axes.contains(&ax) {
                    return Err(format!("axes {v:?} repeats an axis"));
                }
                axes.push(ax);
            }
            axes
        }
        _ => (0..rank).collect(),
    };
    let n = axes.len();
    let constant = |ctx: &Ctx, k: usize, what: &str| -> R<Option<Vec<f64>>> {
        Ok(ctx
            .constant_input(node, k, what)?
            .map(|t| t.to_f64_vec())
            .filter(|v| !v.is_empty()))
    };
    let (roi, scales, sizes) = if upsample {
        let scales = match opset {
            ..=8 => a
                .floats("scales")
                .map(|v| v.iter().map(|&s| s as f64).collect()),
            _ => constant(ctx, 1, "scales")?,
        };
        (None, scales, None)
    } else if opset < 11 {
        (None, constant(ctx, 1, "scales")?, None)
    } else {
        (
            constant(ctx, 1, "roi")?,
            constant(ctx, 2, "scales")?,
            constant(ctx, 3, "sizes")?,
        )
    };
    let mut scale = vec![1.0f64; rank];
    let mut out: Vec<usize> = xt.shape.clone();
    match (&scales, &sizes) {
        (Some(_), Some(_)) => return Err("give scales or sizes, not both".into()),
        (None, None) => return Err("needs scales or sizes".into()),
        (Some(s), None) => {
            if s.len() != n {
                return Err(format!("scales {s:?} needs {n} entries"));
            }
            for (&ax, &f) in axes.iter().zip(s) {
                if !(f > 0.0 && f.is_finite()) {
                    return Err(format!("scale {f} must be positive"));
                }
                scale[ax] = f;
                out[ax] = (f * xt.shape[ax] as f64) as usize;
            }
        }
        (None, Some(z)) => {
            if z.len() != n {
                return Err(format!("sizes {z:?} needs {n} entries"));
            }
            for (&ax, &size) in axes.iter().zip(z) {
                if size < 0.0 {
                    return Err(format!("size {size} is negative"));
                }
                out[ax] = size as usize;
                scale[ax] = size / xt.shape[ax].max(1) as f64;
            }
            let policy = a
                .string("keep_aspect_ratio_policy")
                .unwrap_or_else(|| "stretch".into());
            let pick = match policy.as_str() {
                "stretch" => None,
                "not_larger" => Some(f64::min as fn(f64, f64) -> f64),
                "not_smaller" => Some(f64::max as fn(f64, f64) -> f64),
                other => {
                    return Err(format!(
                        "keep_aspect_ratio_policy '{other}' is not an ONNX value"
                    ))
                }
            };
            if let Some(pick) = pick {
                let s = axes.iter().map(|&ax| scale[ax]).reduce(pick).unwrap_or(1.0);
                for &ax in &axes {
                    scale[ax] = s;
                    out[ax] = (s * xt.shape[ax] as f64 + 0.5) as usize;
                }
            }
        }
    }
    let roi_of = |ax: usize| -> R<Option<(f64, f64)>> {
        match &roi {
            None => Ok(None),
            Some(r) if r.len() == 2 * n => {
                let k = axes.iter().position(|&b| b == ax).unwrap_or(0);
                Ok(Some((r[k], r[n + k])))
            }
            Some(r) => Err(format!("roi {r:?} needs {} entries", 2 * n)),
        }
    };
    if p.transform == "tf_crop_and_resize" && roi.is_none() {
        return Err("coordinate_transformation_mode 'tf_crop_and_resize' needs a roi".into());
    }
    optc_ir::checked_numel(&out).map_err(|e| format!("the output {out:?}: {}", e.msg))?;

    let mut s = Steps::new(ctx, name);
    let mut y = x;
    let todo: Vec<usize> = axes
        .iter()
        .copied()
        .filter(|&ax| {
            let roi_trivial = match &roi {
                None => true,
                Some(_) => roi_of(ax)
                    .ok()
                    .flatten()
                    .is_none_or(|(b, e)| b.abs() < 1e-9 && (e - 1.0).abs() < 1e-9),
            };
            !((scale[ax] - 1.0).abs() < 1e-9 && out[ax] == xt.shape[ax] && roi_trivial)
        })
        .collect();
    if todo.is_empty() {
        return Ok(vec![Some(y)]);
    }
    for (i, &ax) in todo.iter().enumerate() {
        let map = axis_map(&p, xt.shape[ax], out[ax], scale[ax], roi_of(ax)?)?;
        let final_step = i + 1 == todo.len();
        y = apply(&mut s, &y, ax, &map, extrapolation, mode, final_step)?;
    }
    Ok(vec![Some(y)])
}

/// Resize `x` along `axis` by `map`; the last step takes the node's name.
fn apply(
    s: &mut Steps,
    x: &Val,
    axis: usize,
    map: &AxisMap,
    extrapolation: f32,
    mode: Mode,
    last: bool,
) -> R<Val> {
    let shape = s.shape(x);
    let rank = shape.len();
    let (n_in, n_out) = (shape[axis], map.rows.len());
    let selection: Option<Vec<i64>> = map
        .rows
        .iter()
        .map(|r| {
            let nonzero: Vec<&(usize, f64)> = r.iter().filter(|(_, w)| *w != 0.0).collect();
            match nonzero[..] {
                [(i, w)] if *w == 1.0 => Some(*i as i64),
                _ => None,
            }
        })
        .collect();
    let outside = map.outside.iter().any(|&o| o);
    let emit = |s: &mut Steps, op: Op, ins: &[Val], is_last: bool| {
        if is_last {
            s.last(op, ins)
        } else {
            s.op(op, ins)
        }
    };
    let resized = match selection {
        Some(idx) if mode == Mode::Nearest || !s.ctx.ty(x).dtype.is_float() => {
            let idx = s.constant(Tensor::from_i64(vec![n_out], idx).map_err(|e| e.msg)?);
            emit(s, Op::Gather { axis }, &[x.clone(), idx], last && !outside)?
        }
        _ => {
            let dtype = s.ctx.ty(x).dtype;
            if !dtype.is_float() {
                return Err(format!("interpolating {} needs f32 or f64", s.ctx.ty(x)));
            }
            if n_out.saturating_mul(n_in) > MATRIX_MAX {
                return Err(format!(
                    "resizing axis {axis} from {n_in} to {n_out} needs an interpolation matrix \
                     larger than optc builds ({MATRIX_MAX} entries)"
                ));
            }
            let is_last = last && !outside;
            // The interpolation matrix W [out, in], or its transpose when x multiplies it.
            let left = axis + 2 == rank;
            if n_out.saturating_mul(n_in) > super::CREATE_MAX {
                return Err(format!(
                    "the {n_out} x {n_in} interpolation matrix of an axis is larger than {} \
                     entries",
                    super::CREATE_MAX
                ));
            }
            // The weights in the input's type: each rounded to f32 for f32 (summed there, as
            // before), kept in f64 for f64.
            fn matrix<T: Copy + Default + std::ops::AddAssign>(
                rows: &[Vec<(usize, f64)>],
                (n_in, n_out, left): (usize, usize, bool),
                cast: impl Fn(f64) -> T,
            ) -> Vec<T> {
                let mut w = vec![T::default(); n_out * n_in];
                for (o, r) in rows.iter().enumerate() {
                    for &(i, wt) in r {
                        let at = if left { o * n_in + i } else { i * n_out + o };
                        w[at] += cast(wt);
                    }
                }
                w
            }
            let dims = (n_in, n_out, left);
            let shape = if left {
                vec![n_out, n_in]
            } else {
                vec![n_in, n_out]
            };
            let data = match dtype {
                DType::F64 => Data::F64(matrix(&map.rows, dims, |w| w)),
                _ => Data::F32(matrix(&map.rows, dims, |w| w as f32)),
            };
            let w = s.constant(Tensor::new(shape, data).map_err(|e| e.msg)?);
            if left {
                // W @ x
                emit(s, Op::MatMul, &[w, x.clone()], is_last)?
            } else if axis + 1 == rank {
                // x @ W^T
                emit(s, Op::MatMul, &[x.clone(), w], is_last)?
            } else {
                // Move the axis last, x @ W^T, move it back.
                let mut perm: Vec<usize> = (0..rank).filter(|&d| d != axis).collect();
                perm.push(axis);
                let mut back = vec![0; rank];
                for (k, &d) in perm.iter().enumerate() {
                    back[d] = k;
                }
                let moved = s.transpose(x, perm)?;
                let r = s.op(Op::MatMul, &[moved, w])?;
                emit(s, Op::Transpose { perm: back }, &[r], is_last)?
            }
        }
    };
    if !outside {
        return Ok(resized);
    }
    let mut mask_shape = vec![1usize; rank];
    mask_shape[axis] = n_out;
    let mask =
        s.constant(Tensor::new(mask_shape, Data::Bool(map.outside.clone())).map_err(|e| e.msg)?);
    let dtype = s.ctx.ty(x).dtype;
    let fill = s.scalar(extrapolation, dtype)?;
    emit(s, Op::Where, &[mask, fill, resized], last)
}

/// The weights of one axis, as the ONNX reference computes them (`op_resize.py`,
/// `_interpolate_1d_along_axis`).
fn axis_map(
    p: &Params,
    n_in: usize,
    n_out: usize,
    scale: f64,
    roi: Option<(f64, f64)>,
) -> R<AxisMap> {
    if n_in == 0 {
        return Err("cannot resize an empty axis".into());
    }
    if n_out > super::CREATE_MAX {
        return Err(format!(
            "an axis resized from {n_in} to {n_out} entries; optc resizes axes up to {}",
            super::CREATE_MAX
        ));
    }
    let input = n_in as f64;
    let width = scale * input;
    let mut rows = Vec::with_capacity(n_out);
    let mut outside = vec![false; n_out];
    for (y, out_of_range) in outside.iter_mut().enumerate() {
        let yf = y as f64;
        let x = match p.transform.as_str() {
            "align_corners" if width == 1.0 => 0.0,
            "align_corners" => yf * (input - 1.0) / (width - 1.0),
            "asymmetric" => yf / scale,
            "tf_crop_and_resize" => {
                let (b, e) = roi.unwrap_or((0.0, 1.0));
                let x = if width == 1.0 {
                    (e - b) * (input - 1.0) / 2.0
                } else {
                    yf * (e - b) * (input - 1.0) / (width - 1.0)
                } + b * (input - 1.0);
                *out_of_range = x < 0.0 || x > input - 1.0;
                x
            }
            "pytorch_half_pixel" if width == 1.0 => -0.5,
            "half_pixel_symmetric" => {
                let adjustment = n_out as f64 / width;
                let offset = input / 2.0 * (1.0 - adjustment);
                offset + (yf + 0.5) / scale - 0.5
            }
            _ => (yf + 0.5) / scale - 0.5,
        };
        let floor = x.floor();
        let ratio = if x == floor { 1.0 } else { x - floor };
        let mut coeffs = coefficients(p, ratio, scale);
        let n = coeffs.len() as i64;
        let pad = (n + 1) / 2;
        let xp = x + pad as f64;
        let pp = xp.floor();
        let frac = xp - pp;
        let offset = if n % 2 == 0 {
            if frac == 0.0 {
                -(n / 2)
            } else {
                -(n / 2) + 1
            }
        } else {
            let base = -((n - 1) / 2);
            if frac <= 0.5 {
                base
            } else {
                base + 1
            }
        };
        let start = pp as i64 + offset;
        let idx: Vec<i64> = (0..n).map(|j| start + j - pad).collect();
        if p.exclude_outside {
            for (c, &i) in coeffs.iter_mut().zip(&idx) {
                if i < 0 || i >= n_in as i64 {
                    *c = 0.0;
                }
            }
            let sum: f64 = coeffs.iter().sum();
            let sum = if sum == 0.0 { 1.0 } else { sum };
            for c in &mut coeffs {
                *c /= sum;
            }
        }
        rows.push(
            idx.iter()
                .zip(&coeffs)
                .map(|(&i, &c)| (i.clamp(0, n_in as i64 - 1) as usize, c))
                .collect(),
        );
    }
    Ok(AxisMap { rows, outside })
}

/// The interpolation weights of the neighbours of a source coordinate whose fractional
/// part is `ratio` (1 for a whole coordinate).
fn coefficients(p: &Params, ratio: f64, scale: f64) -> Vec<f64> {
    match p.mode {
        Mode::Nearest => {
            if ratio == ratio.floor() {
                return vec![0.0, 1.0];
            }
            let up = match p.nearest.as_str() {
                "round_prefer_floor" => ratio > 0.5,
                "round_prefer_ceil" => ratio >= 0.5,
                "floor" => false,
                _ => true,
            };
            if up {
                vec![0.0, 1.0]
            } else {
                vec![1.0, 0.0]
            }
        }
        Mode::Linear if p.antialias => {
            let scale = scale.min(1.0);
            let start = (-1.0 / scale).floor() as i64 + 1;
            let footprint = 2 - 2 * start;
            let c: Vec<f64> = (start..start + footprint)
                .map(|i| (1.0 - ((i as f64 - ratio) * scale).abs()).clamp(0.0, 1.0))
                .collect();
            normalized(c)
        }
        Mode::Linear => vec![1.0 - ratio, ratio],
        Mode::Cubic if p.antialias => {
            let scale = scale.min(1.0);
            let start = (-2.0 / scale).floor() as i64 + 1;
            let end = 2 - start;
            let c: Vec<f64> = (start..end)
                .map(|i| cubic(p.cubic_a, scale * (i as f64 - ratio)))
                .collect();
            normalized(c)
        }
        Mode::Cubic => {
            let a = p.cubic_a;
            let r = ratio;
            vec![
                ((a * (r + 1.0) - 5.0 * a) * (r + 1.0) + 8.0 * a) * (r + 1.0) - 4.0 * a,
                ((a + 2.0) * r - (a + 3.0)) * r * r + 1.0,
                ((a + 2.0) * (1.0 - r) - (a + 3.0)) * (1.0 - r) * (1.0 - r) + 1.0,
                ((a * ((1.0 - r) + 1.0) - 5.0 * a) * ((1.0 - r) + 1.0) + 8.0 * a)
                    * ((1.0 - r) + 1.0)
                    - 4.0 * a,
            ]
        }
    }
}

/// The cubic convolution kernel with parameter `a`.
fn cubic(a: f64, x: f64) -> f64 {
    let x = x.abs();
    let (x2, x3) = (x * x, x * x * x);
    if x <= 1.0 {
        (a + 2.0) * x3 - (a + 3.0) * x2 + 1.0
    } else if x < 2.0 {
        a * x3 - 5.0 * a * x2 + 8.0 * a * x - 4.0 * a
    } else {
        0.0
    }
}

fn normalized(c: Vec<f64>) -> Vec<f64> {
    let sum: f64 = c.iter().sum();
    c.into_iter().map(|v| v / sum).collect()
}
