//! Quantized contractions: `QuantizedMatMul` and `QuantizedConv`, optc's internal int8 ops.
//!
//! Both take f32 activations, int8 weights with an f32 scale per output channel (zero
//! point 0: symmetric weights), and give f32 outputs, so they slot in where `MatMul`/`Gemm`
//! and `Conv` were and take the same fused epilogues. Their exact semantics (what the
//! interpreter computes and every kernel must reproduce bit for bit):
//!
//! 1. The activation's scale `xs` and zero point `xz` (u8): inputs of the op
//!    ([`ActivationQuantization::Static`], from calibration), or chosen from `x` itself at run
//!    time ([`ActivationQuantization::Dynamic`], [`QuantParams::dynamic`]: ONNX
//!    `DynamicQuantizeLinear`'s rule, over the whole tensor).
//! 2. `xq = clamp(round_half_even(x * (1 / xs)) + xz, 0, 255)` in f32, `1 / xs` rounded to
//!    f32 once ([`QuantParams::quantize`]; a NaN becomes 0). Multiplying by the reciprocal
//!    (not dividing as ONNX `QuantizeLinear` does) is what kernels do; it is part of the
//!    definition.
//! 3. `acc = Σ (xq - xz) * w` exactly, in i32 (padding of a conv contributes nothing: 0.0
//!    quantizes to `xz` exactly).
//! 4. `y = f32(acc) * (xs * ws[c]) + bias[c]`: `acc` rounded to f32, the scale product
//!    rounded to f32, then a multiply and an add, each rounded (no fused multiply-add).
//!
//! With static parameters `x` may instead be u8, already quantized with `xs` and `xz` (step 2
//! skipped): the input of a conv whose producer quantized its output (codegen's int8
//! hand-off, `UnaryOp::QuantizeActivation`).
//!
//! Inputs, in order: `x` f32 (or u8), `w` i8 (`[K, N]` for matmul, `[M, C/group, k...]` for conv),
//! `ws` f32 (one per output channel, or one for all), then for `Static` `xs` f32 and `xz` u8
//! (one element each), then an optional `bias` f32 (one per output channel).

use crate::{bail, DType, Result, TensorType, Window};

/// Where a quantized contraction's activation scale and zero point come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActivationQuantization {
    /// From the activation at run time (per tensor, `DynamicQuantizeLinear`'s rule).
    Dynamic,
    /// Inputs of the op (constants chosen from calibration data).
    Static,
}

// The names in the text format.
named_values!(ActivationQuantization {
    Dynamic => "dynamic",
    Static => "static",
});

impl ActivationQuantization {
    /// Inputs before the optional bias: `x, w, ws` (+ `xs, xz` when static).
    pub fn fixed_inputs(self) -> usize {
        match self {
            ActivationQuantization::Dynamic => 3,
            ActivationQuantization::Static => 5,
        }
    }
}

/// Largest reduction length of a quantized contraction: `K * 255 * 128` stays below 2^31,
/// so the i32 accumulator cannot overflow.
pub const MAX_REDUCTION: usize = 65_000;

/// Scale and zero point of an activation quantized to u8.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct QuantParams {
    pub scale: f32,
    pub zero: u8,
}

impl QuantParams {
    /// `DynamicQuantizeLinear`'s choice for the values `x`: the range
    /// `[min(0, min x), max(0, max x)]` (NaNs ignored) in 255 steps, `scale = (hi - lo) / 255`
    /// (1 when the range is empty: every value is 0), `zero = clamp(round_half_even(-lo /
    /// scale), 0, 255)`; all in f32.
    pub fn dynamic(x: &[f32]) -> QuantParams {
        let (mut lo, mut hi) = (0f32, 0f32);
        for &v in x {
            if v < lo {
                lo = v;
            }
            if v > hi {
                hi = v;
            }
        }
        QuantParams::from_range(lo, hi)
    }

    /// The parameters for the range `[lo, hi]` (which must contain 0).
    pub fn from_range(lo: f32, hi: f32) -> QuantParams {
        let mut scale = (hi - lo) / 255.0;
        if scale == 0.0 {
            scale = 1.0;
        }
        let zero = (-lo / scale).round_ties_even().clamp(0.0, 255.0) as u8;
        QuantParams { scale, zero }
    }

    /// `1 / scale`, rounded to f32: what [`QuantParams::quantize`] multiplies by.
    pub fn inverse(self) -> f32 {
        1.0 / self.scale
    }

    /// `clamp(round_half_even(v * inverse) + zero, 0, 255)`, computed in f32; NaN gives 0.
    pub fn quantize(self, v: f32, inverse: f32) -> u8 {
        let r = (v * inverse).round_ties_even() + self.zero as f32;
        // `max` before `min`, NaN falling to 0, as `vmaxps(r, 0)` does.
        let r = if r > 0.0 { r } else { 0.0 };
        r.min(255.0) as u8
    }
}

/// Input types of a quantized contraction after `x` and `w`: checks `ws`, `xs`, `xz` and
/// `bias` against `channels` output channels.
fn check_quant_inputs(
    what: &str,
    act: ActivationQuantization,
    inputs: &[&TensorType],
    channels: usize,
) -> Result<()> {
    let fixed = act.fixed_inputs();
    if inputs.len() != fixed && inputs.len() != fixed + 1 {
        bail!(
            "{what} ({} activations) takes {fixed} or {} inputs, got {}",
            act.name(),
            fixed + 1,
            inputs.len()
        );
    }
    let (x, w, ws) = (inputs[0], inputs[1], inputs[2]);
    match (x.dtype, act) {
        (DType::F32, _) | (DType::U8, ActivationQuantization::Static) => {}
        (DType::U8, ActivationQuantization::Dynamic) => {
            bail!("{what}: u8 activations (already quantized) need static parameters")
        }
        (d, _) => bail!("{what} needs f32 activations (or u8 ones, static), got {d}"),
    }
    if w.dtype != DType::I8 {
        bail!("{what} needs i8 weights, got {}", w.dtype);
    }
    let per_channel = |t: &TensorType, name: &str| -> Result<()> {
        if t.dtype != DType::F32 {
            bail!("{what}: {name} must be f32, got {}", t.dtype);
        }
        if t.numel() != 1 && t.shape != [channels] {
            bail!(
                "{what}: {name} must have one element or one per output channel ({channels}), got {:?}",
                t.shape
            );
        }
        Ok(())
    };
    per_channel(ws, "the weight scale")?;
    if act == ActivationQuantization::Static {
        let (xs, xz) = (inputs[3], inputs[4]);
        if xs.dtype != DType::F32 || xs.numel() != 1 {
            bail!("{what}: the activation scale must be one f32, got {xs}");
        }
        if xz.dtype != DType::U8 || xz.numel() != 1 {
            bail!("{what}: the activation zero point must be one u8, got {xz}");
        }
    }
    if let Some(b) = inputs.get(fixed) {
        if b.dtype != DType::F32 || b.shape != [channels] {
            bail!("{what}: the bias must be f32[{channels}], got {b}");
        }
    }
    Ok(())
}

/// Output type of `QuantizedMatMul`: `x [..., M, K] @ w [K, N] -> [..., M, N]` (a rank-1
/// `x` is one row, as in `matmul`).
pub fn infer_matmul(act: ActivationQuantization, inputs: &[&TensorType]) -> Result<TensorType> {
    let what = "quantized_matmul";
    if inputs.len() < 3 {
        bail!("{what} takes at least 3 inputs, got {}", inputs.len());
    }
    let (x, w) = (inputs[0], inputs[1]);
    if w.rank() != 2 {
        bail!("{what} needs rank-2 weights [K, N], got {:?}", w.shape);
    }
    let (k, n) = (w.shape[0], w.shape[1]);
    check_quant_inputs(what, act, inputs, n)?;
    if x.rank() == 0 || *x.shape.last().unwrap() != k {
        bail!(
            "{what}: activations {:?} do not end in the weights' K = {k}",
            x.shape
        );
    }
    if k > MAX_REDUCTION {
        bail!("{what}: K = {k} exceeds {MAX_REDUCTION} (the i32 accumulator could overflow)");
    }
    let mut s = x.shape.clone();
    *s.last_mut().unwrap() = n;
    Ok(TensorType::new(DType::F32, s))
}

/// Output type of `QuantizedConv` (the conv's geometry rules, then the quantized inputs).
pub fn infer_conv(
    window: &Window,
    group: usize,
    act: ActivationQuantization,
    inputs: &[&TensorType],
) -> Result<TensorType> {
    let what = "quantized_conv";
    window.check(what)?;
    if window.ceil_mode {
        bail!("{what} has no ceil_mode");
    }
    if inputs.len() < 3 {
        bail!("{what} takes at least 3 inputs, got {}", inputs.len());
    }
    let (x, w) = (inputs[0], inputs[1]);
    let nsp = window.nsp();
    if x.rank() != nsp + 2 || w.rank() != nsp + 2 {
        bail!(
            "{what} with {nsp} spatial dims needs rank-{} input and weight, got {:?} and {:?}",
            nsp + 2,
            x.shape,
            w.shape
        );
    }
    let (c, m) = (x.shape[1], w.shape[0]);
    if group == 0 || c % group != 0 || m % group != 0 || w.shape[1] * group != c {
        bail!(
            "{what}: input has {c} channels, weight {:?}, group {group} do not agree",
            w.shape
        );
    }
    if w.shape[2..] != window.kernel[..] {
        bail!(
            "{what}: weight {:?} does not match kernel {:?}",
            w.shape,
            window.kernel
        );
    }
    let reduction = w.shape[1] * window.kernel.iter().product::<usize>();
    if reduction > MAX_REDUCTION {
        bail!("{what}: a reduction of {reduction} exceeds {MAX_REDUCTION}");
    }
    check_quant_inputs(what, act, inputs, m)?;
    let mut s = vec![x.shape[0], m];
    for i in 0..nsp {
        s.push(window.out_dim(i, x.shape[2 + i])?);
    }
    Ok(TensorType::new(DType::F32, s))
}
