//! ONNX `ConvTranspose`, imported as the convolution it equals: the input with `stride - 1`
//! zeros inserted after every element (a reshape, a pad and a reshape), padded (or cropped)
//! so the window lands where the transposed convolution's output starts, and convolved at
//! stride 1 with the kernel's spatial axes flipped and its in/out channels swapped per
//! group (computed once at import time for a constant weight).
//!
//! Output extent per spatial axis: the full transposed convolution has
//! `s * (in - 1) + d * (k - 1) + 1` positions; output `o` is full position `o + pad_begin`
//! (zero past its end: `output_padding`, or an `output_shape` larger than the full one).
//! `pads`, `auto_pad` and `output_shape` resolve as the ONNX reference implementation
//! does.
//!
//! With a stride above 1 and no dilation it is instead one convolution per output phase,
//! all phases one convolution over the input itself, then put in place and cropped
//! ([`phases`]).

use super::steps::Steps;
use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{DType, Op, PadMode, SliceDim, Window};
use tract_onnx::pb;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let x = ctx
        .input(node, 0)
        .ok_or("required input #0 (X) is missing")?;
    let w = ctx
        .input(node, 1)
        .ok_or("required input #1 (W) is missing")?;
    let bias = ctx.input(node, 2);
    let (xt, wt) = (ctx.ty(&x), ctx.ty(&w));
    if !matches!(xt.dtype, DType::F32 | DType::F64) || wt.dtype != xt.dtype {
        return Err(format!(
            "ConvTranspose is supported for f32 or f64 input and weight (both alike), got {xt} and {wt}"
        ));
    }
    if wt.rank() < 3 || xt.rank() != wt.rank() {
        return Err(format!(
            "input {xt} and weight {wt} must have the same rank >= 3"
        ));
    }
    let nsp = xt.rank() - 2;
    let group = a.int_or("group", 1);
    let group = usize::try_from(group)
        .ok()
        .filter(|&g| g >= 1)
        .ok_or_else(|| format!("bad group {group}"))?;
    let c_in = xt.shape[1];
    if wt.shape[0] != c_in || !c_in.is_multiple_of(group) {
        return Err(format!(
            "weight {wt} must have the input's {c_in} channels first, a multiple of group {group}"
        ));
    }
    let c_out = wt.shape[1] * group;
    let kernel = wt.shape[2..].to_vec();
    if let Some(k) = a.ints("kernel_shape") {
        if k.len() != nsp || k.iter().zip(&kernel).any(|(a, b)| *a != *b as i64) {
            return Err(format!("kernel_shape {k:?} does not match the weight {wt}"));
        }
    }
    let per_axis = |n: &str, default: i64, min: i64| -> R<Vec<i64>> {
        match a.ints(n) {
            None => Ok(vec![default; nsp]),
            Some(v) if v.len() == nsp && v.iter().all(|&e| e >= min && e <= LIMIT) => Ok(v),
            Some(v) => Err(format!(
                "attribute '{n}' {v:?} needs {nsp} entries, each at least {min} and at most {LIMIT}"
            )),
        }
    };
    const LIMIT: i64 = super::LIMIT_DIM as i64;
    let strides = per_axis("strides", 1, 1)?;
    let dilations = per_axis("dilations", 1, 1)?;
    let output_padding = per_axis("output_padding", 0, 0)?;
    let output_shape = match a.ints("output_shape") {
        None => None,
        // Older models give it with the batch and channel dims.
        Some(v)
            if (v.len() == nsp || v.len() == nsp + 2)
                && v.iter().all(|&e| (0..=LIMIT).contains(&e)) =>
        {
            Some(v[v.len() - nsp..].to_vec())
        }
        Some(v) => {
            return Err(format!(
                "output_shape {v:?} needs {nsp} entries between 0 and {LIMIT}"
            ))
        }
    };
    let auto_pad = a.string("auto_pad").unwrap_or_else(|| "NOTSET".into());
    let same = match auto_pad.as_str() {
        "SAME_UPPER" | "SAME_LOWER" => true,
        "NOTSET" | "VALID" => false,
        other => return Err(format!("auto_pad '{other}' is not an ONNX value")),
    };
    let input: Vec<i64> = xt.shape[2..].iter().map(|&d| d as i64).collect();
    let k: Vec<i64> = kernel.iter().map(|&d| d as i64).collect();
    let full: Vec<i64> = (0..nsp)
        .map(|i| {
            let span = strides[i].checked_mul(input[i] - 1)?;
            span.checked_add(dilations[i].checked_mul(k[i] - 1)?)?
                .checked_add(1)
        })
        .collect::<Option<_>>()
        .ok_or_else(|| format!("the output of input {xt} with strides {strides:?} is too large"))?;
    // Where the output starts in the full result, and its extent.
    let (begin, out): (Vec<i64>, Vec<i64>) = match a.ints("pads") {
        Some(p) if !same && auto_pad != "VALID" => {
            if p.len() != 2 * nsp || p.iter().any(|&e| !(0..=LIMIT).contains(&e)) {
                return Err(format!(
                    "pads {p:?} needs {} entries in 0..={LIMIT}",
                    2 * nsp
                ));
            }
            let out = match &output_shape {
                Some(o) => o.clone(),
                None => (0..nsp)
                    .map(|i| full[i] + output_padding[i] - p[i] - p[nsp + i])
                    .collect(),
            };
            (p[..nsp].to_vec(), out)
        }
        _ if same => {
            let out = match &output_shape {
                Some(o) => o.clone(),
                None => (0..nsp).map(|i| input[i] * strides[i]).collect(),
            };
            let begin = (0..nsp)
                .map(|i| {
                    let total = full[i] + output_padding[i] - out[i];
                    if auto_pad == "SAME_UPPER" {
                        total.div_euclid(2)
                    } else {
                        total - total.div_euclid(2)
                    }
                })
                .collect();
            (begin, out)
        }
        _ => {
            let out = match &output_shape {
                Some(o) => o.clone(),
                None => (0..nsp).map(|i| full[i] + output_padding[i]).collect(),
            };
            (vec![0; nsp], out)
        }
    };
    if let Some(i) = (0..nsp).find(|&i| out[i] < 1) {
        return Err(format!(
            "the output would have extent {} on spatial axis {i} (input {xt}, weight {wt})",
            out[i]
        ));
    }

    let mut s = Steps::new(ctx, name);
    // Stride > 1 without dilation: one convolution per output phase, all in one (at most
    // `MAX_PHASES` of them: each multiplies the weight's output channels).
    const MAX_PHASES: i64 = 64;
    if strides.iter().any(|&v| v > 1)
        && strides
            .iter()
            .try_fold(1i64, |a, &b| a.checked_mul(b))
            .is_some_and(|p| p <= MAX_PHASES)
        && dilations.iter().all(|&d| d == 1)
        && begin.iter().all(|&b| b >= 0)
    {
        let geometry = Phases {
            kernel: kernel.clone(),
            strides: strides.iter().map(|&v| v as usize).collect(),
            begin: begin.iter().map(|&v| v as usize).collect(),
            out: out.iter().map(|&v| v as usize).collect(),
        };
        return phases(&mut s, x, w, bias, group, c_out, &geometry, &xt.shape)
            .map(|v| vec![Some(v)]);
    }
    // 1. Zeros inserted: [N, C, a, b] -> [N, C, a, 1, b, 1] -> pad -> [N, C, a*s, b*s].
    let mut z = x;
    if strides.iter().any(|&v| v > 1) {
        let mut split = xt.shape[..2].to_vec();
        let mut ends = vec![0i64; 2];
        for (&d, &st) in xt.shape[2..].iter().zip(&strides) {
            split.extend([d, 1]);
            ends.extend([0, st - 1]);
        }
        let r = s.reshape(&z, split)?;
        let mut pad = vec![0i64; ends.len()];
        pad.extend(ends);
        let p = s.op(
            Op::Pad {
                pads: pad,
                mode: PadMode::Constant,
                value: 0.0,
            },
            &[r],
        )?;
        let mut merged = xt.shape[..2].to_vec();
        for (&d, &st) in xt.shape[2..].iter().zip(&strides) {
            merged.push(d * st as usize);
        }
        z = s.reshape(&p, merged)?;
    }
    // 2. Conv pads; negative ones crop the input first.
    let mut conv_pads = vec![0usize; 2 * nsp];
    let mut crop = vec![0i64; 2 * (nsp + 2)];
    for i in 0..nsp {
        let reach = dilations[i] * (k[i] - 1);
        let p0 = reach - begin[i];
        let inserted = input[i] * strides[i];
        let proper = strides[i] * (input[i] - 1) + 1;
        let p1 = out[i] - proper - p0 + reach - (inserted - proper);
        for (p, slot) in [(p0, i), (p1, nsp + i)] {
            if p >= 0 {
                conv_pads[slot] = p as usize;
            } else {
                let at = if slot < nsp { 2 + i } else { nsp + 2 + 2 + i };
                crop[at] = p;
            }
        }
    }
    if crop.iter().any(|&c| c != 0) {
        z = s.op(
            Op::Pad {
                pads: crop,
                mode: PadMode::Constant,
                value: 0.0,
            },
            &[z],
        )?;
    }
    // 3. The kernel: [C_in, C_out/g, k..] -> [C_out, C_in/g, k..], spatial axes flipped.
    let (cig, cog) = (c_in / group, c_out / group);
    let mut grouped = vec![group, cig, cog];
    grouped.extend(&kernel);
    let mut perm = vec![0, 2, 1];
    perm.extend(3..3 + nsp);
    let mut conv_shape = vec![c_out, cig];
    conv_shape.extend(&kernel);
    let wg = s.reshape(&w, grouped)?;
    let wt2 = s.fold(Op::Transpose { perm }, &[wg])?;
    let wc = s.reshape(&wt2, conv_shape.clone())?;
    let mut dims: Vec<SliceDim> = conv_shape.iter().map(|&n| SliceDim::whole(n)).collect();
    for (i, &kk) in kernel.iter().enumerate() {
        dims[2 + i] = SliceDim {
            start: kk as i64 - 1,
            step: -1,
            len: kk,
        };
    }
    let flipped = s.fold(Op::Slice { dims }, &[wc])?;
    // 4. The convolution.
    let window = Window {
        kernel,
        strides: vec![1; nsp],
        pads: conv_pads,
        dilations: dilations.iter().map(|&d| d as usize).collect(),
        ceil_mode: false,
    };
    let mut ins = vec![z, flipped];
    if let Some(b) = bias {
        ins.push(b);
    }
    Ok(vec![Some(s.last(Op::Conv { window, group }, &ins)?)])
}

/// Where a strided transposed convolution's output lies: `kernel`, `strides`, the first
/// output's position in the full result (`begin`) and the output's extent, per spatial axis.
struct Phases {
    kernel: Vec<usize>,
    strides: Vec<usize>,
    begin: Vec<usize>,
    out: Vec<usize>,
}

/// A transposed convolution with stride `s` (dilation 1) as one convolution over the input
/// itself: full output position `s q + r` (phase `r`) sums `x[q - m] w[r + s m]`, a
/// convolution of `x` with the taps `r, r + s, ...` flipped, `M = ceil(k / s)` of them (zeros
/// past the kernel's end), padded by `M - 1` in front. Every phase is a group of output
/// channels of one convolution (`C_out x s...` channels, channel-major), then the phases are
/// put in place (DepthToSpace's reshape, transpose, reshape) and the output cropped from the
/// full result (`pads`, `output_padding`, `output_shape`). `M^d` multiplies per output where
/// the zero-inserted convolution takes `k^d` (a quarter for 3x3 or 4x4 at stride 2), and no
/// zero-inserted copy of the input; a kernel equal to its stride (U-Net's 2x2 at stride 2)
/// is a 1x1 convolution: unet_small 9.9 -> 6.5 ms at 1 thread.
#[allow(clippy::too_many_arguments)]
fn phases(
    s: &mut Steps,
    x: Val,
    w: Val,
    bias: Option<Val>,
    group: usize,
    c_out: usize,
    geo: &Phases,
    in_shape: &[usize],
) -> R<Val> {
    let nsp = geo.kernel.len();
    let st = &geo.strides;
    let taps: Vec<usize> = (0..nsp).map(|i| geo.kernel[i].div_ceil(st[i])).collect();
    let cells: usize = st.iter().product();
    let (cig, cog) = (in_shape[1] / group, c_out / group);
    // [C_in, C_out/g, k...] -> [g, C_in/g, C_out/g, M s...] (zero taps at the end).
    let mut grouped = vec![group, cig, cog];
    grouped.extend(&geo.kernel);
    let mut wk = s.reshape(&w, grouped)?;
    if (0..nsp).any(|i| taps[i] * st[i] != geo.kernel[i]) {
        let mut pads = vec![0i64; 2 * (nsp + 3)];
        for i in 0..nsp {
            pads[nsp + 3 + 3 + i] = (taps[i] * st[i] - geo.kernel[i]) as i64;
        }
        wk = s.fold(
            Op::Pad {
                pads,
                mode: PadMode::Constant,
                value: 0.0,
            },
            &[wk],
        )?;
    }
    // Tap `m s + r` at [.., m, r, ..], m flipped: [g, C_in/g, C_out/g, (M, s)...].
    let mut split = vec![group, cig, cog];
    for i in 0..nsp {
        split.extend([taps[i], st[i]]);
    }
    let wk = s.reshape(&wk, split.clone())?;
    let mut dims: Vec<SliceDim> = split.iter().map(|&n| SliceDim::whole(n)).collect();
    for (i, &m) in taps.iter().enumerate() {
        dims[3 + 2 * i] = SliceDim {
            start: m as i64 - 1,
            step: -1,
            len: m,
        };
    }
    let wk = s.fold(Op::Slice { dims }, &[wk])?;
    // [g, C_out/g, s..., C_in/g, M...] -> [C_out s..., C_in/g, M...].
    let mut perm = vec![0, 2];
    perm.extend((0..nsp).map(|i| 4 + 2 * i));
    perm.push(1);
    perm.extend((0..nsp).map(|i| 3 + 2 * i));
    let wk = s.fold(Op::Transpose { perm }, &[wk])?;
    let mut conv_shape = vec![c_out * cells, cig];
    conv_shape.extend(&taps);
    let wc = s.reshape(&wk, conv_shape)?;
    let mut ins = vec![x, wc];
    if let Some(b) = bias {
        let col = s.reshape(&b, vec![c_out, 1])?;
        let rep = s.fold(
            Op::Expand {
                shape: vec![c_out, cells],
            },
            &[col],
        )?;
        ins.push(s.reshape(&rep, vec![c_out * cells])?);
    }
    // Phase positions q of each axis: enough for the cropped output, at least the input's.
    let q: Vec<usize> = (0..nsp)
        .map(|i| (geo.begin[i] + geo.out[i]).div_ceil(st[i]))
        .collect();
    let len: Vec<usize> = (0..nsp).map(|i| q[i].max(in_shape[2 + i])).collect();
    let mut pads: Vec<usize> = taps.iter().map(|m| m - 1).collect();
    pads.extend((0..nsp).map(|i| len[i] - in_shape[2 + i]));
    let window = Window {
        kernel: taps.clone(),
        strides: vec![1; nsp],
        pads,
        dilations: vec![1; nsp],
        ceil_mode: false,
    };
    let y = s.op(Op::Conv { window, group }, &ins)?;
    // [N, C_out, s..., L...] -> [N, C_out, L1, s1, L2, s2, ...] -> [N, C_out, L1 s1, ...].
    let mut split = vec![in_shape[0], c_out];
    split.extend(st);
    split.extend(&len);
    let ys = s.reshape(&y, split)?;
    let mut perm = vec![0, 1];
    for i in 0..nsp {
        perm.extend([2 + nsp + i, 2 + i]);
    }
    let yt = s.transpose(&ys, perm)?;
    let mut merged = vec![in_shape[0], c_out];
    merged.extend((0..nsp).map(|i| len[i] * st[i]));
    if (0..nsp).all(|i| geo.begin[i] == 0 && geo.out[i] == len[i] * st[i]) {
        return s.last(Op::Reshape { shape: merged }, &[yt]);
    }
    let ym = s.reshape(&yt, merged.clone())?;
    let mut dims: Vec<SliceDim> = merged.iter().map(|&n| SliceDim::whole(n)).collect();
    for i in 0..nsp {
        dims[2 + i] = SliceDim {
            start: geo.begin[i] as i64,
            step: 1,
            len: geo.out[i],
        };
    }
    s.last(Op::Slice { dims }, &[ym])
}
