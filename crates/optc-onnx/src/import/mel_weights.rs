//! ONNX `MelWeightMatrix` (opset 17): the [dft_length / 2 + 1, num_mel_bins] matrix that
//! maps a one-sided spectrum onto triangular mel-scale filters. Every input is a scalar
//! the matrix depends on alone, so it is computed at import time (the inputs must be
//! constants; a model that feeds them from graph inputs compiles per value), the way the
//! ONNX reference computes it: `num_mel_bins + 2` edge frequencies evenly spaced in mel
//! (`2595 log10(1 + f / 700)`, the step being the mel range over `num_mel_bins + 2`),
//! mapped to spectrum bins `floor((dft_length + 1) f / sample_rate)`, and filter `i`
//! rising from edge `i` to edge `i + 1` and falling to edge `i + 2`.

use super::{Ctx, Val, R};
use crate::proto::Attrs;
use optc_ir::{DType, Data, Tensor};
use tract_onnx::pb;

/// The largest matrix computed (elements).
const MAX_ELEMENTS: usize = 1 << 24;

pub(super) fn convert(ctx: &mut Ctx, node: &pb::NodeProto, name: &str) -> R<Vec<Option<Val>>> {
    let a = Attrs { node };
    let mut scalars = vec![];
    for (k, what) in [
        "num_mel_bins",
        "dft_length",
        "sample_rate",
        "lower_edge_hertz",
        "upper_edge_hertz",
    ]
    .into_iter()
    .enumerate()
    {
        let t = ctx
            .constant_input(node, k, what)?
            .ok_or_else(|| format!("required input #{k} ({what}) is missing"))?;
        match t.to_f64_vec()[..] {
            [v] => scalars.push((v, t.dtype())),
            _ => {
                return Err(format!(
                    "the {what} must be a scalar, it has shape {:?}",
                    t.shape()
                ))
            }
        }
    }
    let (mel_bins, dft_length, sample_rate) = (scalars[0].0, scalars[1].0, scalars[2].0);
    let (lower, upper) = (scalars[3], scalars[4]);
    if mel_bins < 1.0 || dft_length < 1.0 || sample_rate < 1.0 {
        return Err(format!(
            "num_mel_bins {mel_bins}, dft_length {dft_length} and sample_rate {sample_rate} must be positive"
        ));
    }
    let (mel_bins, dft_length) = (mel_bins as usize, dft_length as usize);
    let spectrum = dft_length / 2 + 1;
    if spectrum.saturating_mul(mel_bins) > MAX_ELEMENTS {
        return Err(format!(
            "a {spectrum} x {mel_bins} matrix is larger than supported ({MAX_ELEMENTS} elements)"
        ));
    }
    // The reference computes log1p in the edges' own type (f32 for float inputs), the rest
    // in f64.
    let mel = |(hz, dtype): (f64, DType)| -> f64 {
        let scaled = if dtype == DType::F64 {
            2595.0 * (hz / 700.0).ln_1p()
        } else {
            (2595.0 * (hz as f32 / 700.0).ln_1p()) as f64
        };
        scaled / std::f64::consts::LN_10
    };
    let (low_mel, high_mel) = (mel(lower), mel(upper));
    let step = (high_mel - low_mel) / (mel_bins + 2) as f64;
    let edges: Vec<i64> = (0..mel_bins + 2)
        .map(|i| {
            let hz =
                700.0 * ((i as f64 * step + low_mel) / 2595.0 * std::f64::consts::LN_10).exp_m1();
            ((dft_length as f64 + 1.0) * hz / sample_rate).floor() as i64
        })
        .collect();
    // Filters write up to their center bin and up to before their right edge.
    let last = edges.len() - 1;
    if edges
        .iter()
        .enumerate()
        .any(|(i, &e)| e < 0 || e as usize >= spectrum + usize::from(i == last))
    {
        return Err(format!(
            "the filters' edge bins {edges:?} fall outside the {spectrum} spectrum bins (lower_edge_hertz {}, upper_edge_hertz {}, sample_rate {sample_rate})",
            lower.0, upper.0
        ));
    }
    let mut out = vec![0.0f64; spectrum * mel_bins];
    for i in 0..mel_bins {
        let (left, center, right) = (edges[i], edges[i + 1], edges[i + 2]);
        let rise = center - left;
        if rise == 0 {
            out[center as usize * mel_bins + i] = 1.0;
        } else {
            for j in left..=center {
                out[j as usize * mel_bins + i] = (j - left) as f64 / rise as f64;
            }
        }
        let fall = right - center;
        if fall > 0 {
            for j in center..right {
                out[j as usize * mel_bins + i] = (right - j) as f64 / fall as f64;
            }
        }
    }
    let data = match a.int_or("output_datatype", 1) {
        1 => Data::F32(out.into_iter().map(|v| v as f32).collect()),
        11 => Data::F64(out),
        t => {
            return Err(format!(
                "output_datatype {t} is not supported (FLOAT (1) or DOUBLE (11))"
            ))
        }
    };
    let t = Tensor::new(vec![spectrum, mel_bins], data).map_err(|e| e.msg)?;
    Ok(vec![Some(Val::constant(t, name.to_string()))])
}
