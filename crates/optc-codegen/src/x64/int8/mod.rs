//! The int8 path of `QuantizedMatMul` and `QuantizedConv` (semantics: `optc_ir::quantized`,
//! reproduced bit for bit): the per-node plan ([`Int8Plan`], from [`plan`]), the compile-time
//! data (`packing.rs`), the serial pre-pass and the GEMM units (`driver.rs`), depthwise convs
//! (`depthwise.rs`).
//!
//! - Weights (constant i8) are packed at compile time for the int8 microkernels
//!   (`crate::x64::asm::int8`): a matmul's `[K, N]` into 16-column panels of K groups of 4, a
//!   conv's `[M, C, kh, kw]` into `MR`-row tiles over the same K order as its patches. The
//!   zero-point correction `-xz * sum(w of channel c)` is folded into a per-channel i32 table
//!   (static activations: entirely at compile time; dynamic: the sums at compile time, the
//!   product with `xz` in the pre-pass), which starts every tile's accumulators.
//! - Activations are quantized once per run before the tasks by the AVX2 routines of
//!   `crate::x64::asm::quantize` (dynamic mode: after one range pass over the input): a matmul's
//!   rows into u8 (u16 for `WordPairs`) rows; a conv's input into zero-padded planes of dwords,
//!   each dword the 4 (u16: 2) channels of one pixel, so a conv's K order is (channel group,
//!   kh, kw, channel within the group) and one K group of a patch panel is one dword per
//!   pixel, packed by the f32 path's patch packer (`pack_panels`: it moves 4-byte elements).
//!   Padding is the zero point, which the correction cancels.
//! - The scheme ([`Scheme`]): `DotProduct` (VNNI) where the target has it
//!   ([`crate::Target::has_int8_dot_product`]); otherwise `BytePairs`
//!   when [`pairs_never_saturate`] proves that no weight pair of the packing can saturate
//!   `vpmaddubsw`'s s16 sums, else the exact `WordPairs` (on Zen 3, `benches/int8.rs`: GEMMs
//!   at 1.6-2.0x the f32 path's rate with `BytePairs`, 1.3-1.6x with `WordPairs`). Kernel
//!   symbols name the scheme;
//!   `OPTC_INT8_PLAN=1` prints every int8 node's plan to stderr.
//! - Epilogue in the tile store: `f32(acc) * (xs * ws[c])`, `+ bias[c]`, then the fused Relu,
//!   Clip, residual or bias steps, and on the AVX-512 kernels (VNNI, AMX) requantizations
//!   (`fake_quantize`, as in a QDQ model); steps it cannot take run afterwards (`emit_post`).
//! - Depthwise convs: exact integer sums in f32 (every partial sum is an integer below 2^24),
//!   vectorized per channel by Cranelift; their fused steps run afterwards.
//!
//! Grouped convs: each conv group's channels start their own dword planes, a unit's rows are
//! one group's output channels. Nodes whose weights or weight scales are not constants (or
//! static activation parameters that are not) take the generic lowering.

mod depthwise;
mod driver;
mod hand_off;
mod packing;
mod rows;

pub(super) use driver::{emit_pre, emit_prepare, emit_unit};
pub(crate) use hand_off::hand_off_bytes;
pub(crate) use packing::derived;
use rows::KernelRows;

use super::asm::int8::{Contraction, Dequantize, Int8Key, QuantizeStore, Scheme};
use super::asm::int8_amx::{TileState, TILE_GROUPS, TILE_ROWS};
use super::asm::int8_pixels::{panels_for, ColumnSkips, PIXEL_ROWS};
use super::asm::quantize::{PlaneKey, QuantizeKey};
use super::asm::{Epilogue, Isa, Routine, MR, NR};
use super::kernel_plan::{
    balanced_rows, tile_steps, ALayout, KernelPlan, Strategy, TileShape, TileStore, MAX_TASKS,
};
use crate::error::Result;
use crate::node::{base_info, NodeInfo, MAX_TENSOR_BYTES};
use crate::ops::conv::{conv_geometry, ConvGeometry};
use crate::target::Target;
use optc_ir::quantized::{ActivationQuantization, QuantParams};
use optc_ir::{DType, Data, FusedStep, Op, Tensor, UnaryOp};

/// Which contraction an int8 node is.
pub(crate) enum Form {
    MatMul,
    /// Ungrouped conv: implicit GEMM over the quantized dword planes.
    Conv(ConvGeometry),
    /// One input channel per output channel.
    Depthwise(ConvGeometry),
}

/// The int8 part of a node's plan (the GEMM shape, blocking and task split are in its
/// [`KernelPlan`]: `m` x `n` tiles over `k` = [`Int8Plan::groups`] K groups).
pub(crate) struct Int8Plan {
    pub scheme: Scheme,
    pub form: Form,
    /// Static activation parameters (constants of the op); `None`: dynamic.
    pub params: Option<QuantParams>,
    /// Elements of the activation input.
    pub x_numel: usize,
    /// The op's bias input.
    pub bias_port: Option<usize>,
    /// The input of a fused bias step (only when the op has no bias).
    pub step_bias_port: Option<usize>,
    pub res_port: Option<usize>,
    /// Fused steps applied in the tile store.
    pub steps: Vec<Epilogue>,
    /// Output channels (a matmul's N, a conv's M).
    pub channels: usize,
    /// Reduction length.
    pub depth: usize,
    /// Dword slots of the K order (matmul: `ceil(K / 4)` groups; conv: planes x taps).
    pub slots: usize,
    /// K groups of the microkernels.
    pub groups: usize,
    /// Conv: dword planes per image.
    pub planes: usize,
    /// Matmul: bytes per quantized activation row.
    pub lda: usize,
    /// Conv: the kernels read the quantized planes in place (1x1, stride 1, unpadded: the
    /// patches are the planes), no patch packing.
    pub unpacked: bool,
    /// Conv: the patch panels of all columns and the whole K are packed once, next to the
    /// quantization (each part packs the taps of the planes it quantized), and every unit
    /// reads them: chosen when units split the output channels, which would each pack the
    /// same patches again.
    pub shared: bool,
    /// Conv: pixels are the tiles' rows and output channels their columns
    /// (`Contraction::ConvPixels`, VNNI), read from the quantized planes in place; one K
    /// block, units of whole output rows.
    pub pixels: bool,
    /// Conv: the input is u8, already quantized with the static parameters (its producer's
    /// last step, `UnaryOp::QuantizeActivation`): the pre-pass only moves bytes.
    pub quantized_input: bool,
    /// The output is u8, quantized in the tile store with these parameters (the node's last
    /// step): VNNI convs of one K block, every step in the tile.
    pub quantized_output: Option<QuantParams>,
    /// Conv: a 1x1 conv of strides above 1 (unpadded, f32 input) planned as the stride-1
    /// conv of every `s`-th pixel (`form`'s geometry); the pre-pass quantizes only those
    /// pixels into the planes, which the tiles then read in place. The input's extents and
    /// the strides.
    pub subsample: Option<Subsample>,
    /// Why the scheme was chosen.
    pub reason: &'static str,
}

/// The source of subsampled planes ([`Int8Plan::subsample`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Subsample {
    pub h: usize,
    pub w: usize,
    pub sh: usize,
    pub sw: usize,
}

/// Whether conv `g` is planned as the stride-1 conv of its subsampled input: 1x1, unpadded,
/// a stride above 1 (columns 1 or 2: the plane routine's), an f32 input.
fn subsampled(g: &ConvGeometry, quantized_input: bool) -> Option<Subsample> {
    let pointwise = (g.kh, g.kw, g.ph, g.pw, g.hp, g.wp) == (1, 1, 0, 0, g.h, g.w);
    (pointwise && (g.sh, g.sw) != (1, 1) && g.sw <= 2 && !quantized_input).then_some(Subsample {
        h: g.h,
        w: g.w,
        sh: g.sh,
        sw: g.sw,
    })
}

/// The parameter block (see `crate::x64::asm::quantize`) and, at +16/+20, the dynamic range.
const PARAMS_BYTES: usize = 64;

/// The largest shared patch panels (all images) a conv packs once; larger ones are packed
/// per unit and K block.
const SHARED_PANELS_MAX_BYTES: usize = 8 << 20;

fn align64(n: usize) -> usize {
    n.div_ceil(64) * 64
}

impl Int8Plan {
    pub fn is_static(&self) -> bool {
        self.params.is_some()
    }
    /// Bytes of one output element: 1 when the tile store quantizes, else 4 (f32).
    pub fn output_bytes(&self) -> usize {
        if self.quantized_output.is_some() {
            1
        } else {
            4
        }
    }
    /// Bytes of one input element: 1 when already quantized, else 4 (f32).
    pub fn input_bytes(&self) -> usize {
        if self.quantized_input {
            1
        } else {
            4
        }
    }
    /// Channel tables are padded to whole panels.
    pub fn padded_channels(&self) -> usize {
        self.channels.div_ceil(NR) * NR
    }
    /// Dword slots per K group (2 for `WordPairs`: one per pair).
    pub fn slots_per_group(&self) -> usize {
        match self.scheme {
            Scheme::WordPairs => 2,
            _ => 1,
        }
    }
    /// Dword planes of one conv group's input channels.
    pub fn planes_per_group(&self) -> usize {
        match &self.form {
            Form::Conv(g) => g.cg.div_ceil(self.channels_per_dword()),
            _ => 0,
        }
    }
    /// Channels in one dword of a quantized conv plane.
    pub fn channels_per_dword(&self) -> usize {
        4 / self.scheme.element_bytes()
    }
    /// Whether the generated code reads input `port` (not: the weights and weight scales,
    /// static activation parameters: compile-time data).
    pub fn reads_input(&self, port: usize) -> bool {
        let fixed = if self.is_static() { 5 } else { 3 };
        port == 0 || port >= fixed
    }
    /// Scratch offsets of the run-time tables (dynamic mode: offsets then scales).
    pub fn offsets_at(&self) -> usize {
        PARAMS_BYTES
    }
    pub fn scales_at(&self) -> usize {
        self.offsets_at() + align64(4 * self.padded_channels() * self.offset_tables())
    }
    /// A pixel-rows conv's kernel-row ranges (`rows.rs`).
    pub fn kernel_rows(&self) -> Option<KernelRows> {
        match &self.form {
            Form::Conv(g) if self.pixels => Some(KernelRows::of(g)),
            _ => None,
        }
    }
    /// Channel tables of zero-point corrections: one per kernel-row range.
    pub fn offset_tables(&self) -> usize {
        self.kernel_rows().map_or(1, |r| r.ranges.len())
    }
    /// Scratch offset of the quantized activations.
    pub fn activations_at(&self) -> usize {
        if self.is_static() {
            PARAMS_BYTES
        } else {
            self.scales_at() + align64(4 * self.padded_channels())
        }
    }
    /// Bytes of the quantized activations.
    pub fn activation_bytes(&self, p: &KernelPlan) -> usize {
        match &self.form {
            // (Slack: AMX kernels read whole tiles: 16 rows of whole K tiles.)
            Form::MatMul if self.scheme == Scheme::Tiles => {
                (p.m + TILE_ROWS) * self.lda + 4 * self.groups + 64
            }
            Form::MatMul => p.m * self.lda,
            // (Slack: an unpacked partial panel reads up to 16 pixels.)
            Form::Conv(g) => g.n * self.planes * g.hp * g.wp * 4 + 64,
            Form::Depthwise(_) => 0,
        }
    }
    /// Scratch offset of the shared patch panels (see [`Int8Plan::shared`]).
    pub fn panels_at(&self, p: &KernelPlan) -> usize {
        align64(self.activations_at() + self.activation_bytes(p))
    }
    /// Bytes of one image's shared patch panels: every 16-column panel over all K groups.
    pub fn panel_image_bytes(&self, p: &KernelPlan) -> usize {
        p.n.div_ceil(NR) * self.groups * self.scheme.panel_group_bytes()
    }
    /// Scratch before the per-task buffers.
    pub fn prefix_bytes(&self, p: &KernelPlan) -> usize {
        let shared = if self.shared {
            p.nimg * self.panel_image_bytes(p)
        } else {
            0
        };
        self.panels_at(p) + shared
    }
    /// Per-task buffer: a conv's patch panels of one K block, a depthwise channel's padded
    /// plane.
    pub fn task_bytes(&self, p: &KernelPlan) -> usize {
        match &self.form {
            Form::MatMul => 0,
            Form::Conv(_) if self.unpacked || self.shared || self.pixels => 0,
            Form::Conv(_) => p.kc.min(self.groups.max(1)) * p.chunk * self.scheme.row_group_bytes(),
            Form::Depthwise(g) => depthwise::buffer_bytes(g, p.mrows),
        }
    }
    /// Parallel parts of the activations' quantization (0: done serially before the tasks):
    /// as many as tasks when the node has tasks and enough activations to share.
    pub fn prepare_parts(&self, p: &KernelPlan) -> usize {
        if p.tasks < 2 || self.x_numel < 1 << 14 {
            return 0;
        }
        match &self.form {
            Form::MatMul => p.tasks.min(p.m),
            Form::Conv(g) => p.tasks.min(g.n * self.planes),
            Form::Depthwise(_) => 0,
        }
    }
    /// Rows of a full microkernel tile: 16 with AMX tiles, else `MR`; with
    /// [`Int8Plan::pixels`], the 16 channels of a weight panel (the weights are packed as
    /// 16-row tiles: a panel per 16 channels).
    pub fn tile_rows(&self) -> usize {
        if self.pixels {
            NR
        } else {
            tile_rows(self.scheme)
        }
    }
    /// The contraction of a tile `panels` 16-channel panels wide (1 but for pixel rows) of
    /// `rows` pixels from output column `x0` (pixel rows only).
    fn contraction(&self, panels: usize, x0: usize, rows: usize) -> Contraction {
        match &self.form {
            Form::MatMul => Contraction::MatMul,
            Form::Conv(g) if self.pixels => Contraction::ConvPixels {
                panels,
                row_step: 4 * g.sw,
                skips: if self.skips_padding() {
                    ColumnSkips::of(x0, rows, g.kw, (g.sw, g.dw, g.pw, g.w))
                } else {
                    ColumnSkips::default()
                },
            },
            _ => Contraction::Conv,
        }
    }
    /// Whether a pixel-rows conv's tiles skip the kernel columns that read the left or right
    /// padding ([`ColumnSkips`]): where padding is the static zero point 0, so that each of
    /// those products is 0 and no channel table changes.
    pub fn skips_padding(&self) -> bool {
        self.pixels && self.params.is_some_and(|p| p.zero == 0)
    }
    /// One line: form, shape, scheme and why, activation mode, epilogue, tasks.
    pub fn describe(&self, p: &KernelPlan) -> String {
        let form = match &self.form {
            Form::MatMul => format!("matmul M={} K={} N={}", p.m, self.depth, p.n),
            Form::Conv(g) => format!(
                "conv {}x{} stride {}x{} M={} K={} pixels={} images={}{}",
                g.kh,
                g.kw,
                self.subsample.map_or(g.sh, |s| s.sh),
                self.subsample.map_or(g.sw, |s| s.sw),
                p.m,
                self.depth,
                p.n,
                g.n,
                if g.groups > 1 {
                    format!(" groups={}", g.groups)
                } else {
                    String::new()
                }
            ),
            Form::Depthwise(g) => format!(
                "depthwise conv {}x{} stride {}x{} channels={} pixels={}",
                g.kh, g.kw, g.sh, g.sw, p.m, p.n
            ),
        };
        let scheme = match self.form {
            Form::Depthwise(_) => "exact f32 sums".to_string(),
            _ => format!("scheme {} ({})", self.scheme.name(), self.reason),
        };
        format!(
            "int8 {form}, {scheme}, {} activations, tile epilogue [{}], {} task(s){}{}{}{}",
            if self.is_static() {
                "static"
            } else {
                "dynamic"
            },
            self.steps
                .iter()
                .map(|s| format!("{s:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            p.tasks,
            match (self.quantized_input, self.quantized_output.is_some()) {
                (true, true) => ", u8 in and out",
                (true, false) => ", u8 in",
                (false, true) => ", u8 out",
                (false, false) => "",
            },
            match self.kernel_rows() {
                Some(rows) if rows.ranges.len() > 1 => format!(
                    ", pixels as rows, {:.0}% of the kernel rows (the rest read padding)",
                    100.0 * rows.share()
                ),
                _ if self.pixels => ", pixels as rows".to_string(),
                _ if self.shared => ", patches packed once for all tasks".to_string(),
                _ => String::new(),
            },
            if self.skips_padding() {
                ", the edge tiles skip the kernel columns that read padding"
            } else {
                ""
            },
            match self.subsample {
                Some(s) => format!(
                    ", the planes of every {}x{} pixel of {}x{} (read in place)",
                    s.sh, s.sw, s.h, s.w
                ),
                None => String::new(),
            }
        )
    }
}

fn tile_rows(scheme: Scheme) -> usize {
    if scheme == Scheme::Tiles {
        TILE_ROWS
    } else {
        MR
    }
}

/// One `vpmaddubsw` pair: with activations in 0..=255 its s16 sum stays in range iff the
/// positive weights sum to at most 128 (255 x 128 = 32640 <= 32767) and so do the negative
/// ones' magnitudes (-32640 >= -32768).
pub(crate) fn pair_is_safe(a: i8, b: i8) -> bool {
    let pos = |x: i8| (x as i32).max(0);
    let neg = |x: i8| (-(x as i32)).max(0);
    pos(a) + pos(b) <= 128 && neg(a) + neg(b) <= 128
}

/// Whether the `BytePairs` int8 kernels are exact for these weights of a `QuantizedMatMul`
/// (`[K, N]`) or `QuantizedConv` (`[M, C / group, k...]`): `vpmaddubsw` adds the products of
/// u8 activations and i8 weights in pairs into a saturating s16, and the packing pairs
/// K = (2i, 2i + 1) of a matmul column, and input channels (2i, 2i + 1) at the same kernel
/// tap of a conv's output channel. True when every pair passes `pair_is_safe`: always when
/// every |w| <= 64 (7-bit weights). Depthwise convs (one input channel per group) sum exactly
/// whatever the weights. False for other ops or non-i8 weights.
pub fn pairs_never_saturate(op: &Op, weights: &Tensor) -> bool {
    let Data::I8(w) = weights.data() else {
        return false;
    };
    let s = weights.shape();
    match op {
        Op::QuantizedMatMul { .. } if s.len() == 2 => {
            let (k, n) = (s[0], s[1]);
            (0..k / 2)
                .all(|i| (0..n).all(|c| pair_is_safe(w[2 * i * n + c], w[(2 * i + 1) * n + c])))
        }
        Op::QuantizedConv { .. } if s.len() >= 2 => {
            let (m, cg) = (s[0], s[1]);
            let taps: usize = s[2..].iter().product();
            (0..m).all(|o| {
                (0..cg / 2).all(|i| {
                    (0..taps).all(|t| {
                        let at = |ch: usize| w[(o * cg + ch) * taps + t];
                        pair_is_safe(at(2 * i), at(2 * i + 1))
                    })
                })
            })
        }
        _ => false,
    }
}

fn is_f32(t: &optc_ir::TensorType) -> bool {
    t.dtype == DType::F32
}

/// The plan of a `QuantizedMatMul`/`QuantizedConv` node (plain or the base of a fused node) on
/// the x64 path, or `None` (the generic lowering).
pub(crate) fn plan(info: &NodeInfo, target: &Target) -> Result<Option<KernelPlan>> {
    let plan = build_plan(info, target)?;
    if let Some(p) = &plan {
        if let (Strategy::Int8(q), Some(_)) = (&p.kind, std::env::var_os("OPTC_INT8_PLAN")) {
            eprintln!("node {}: {}", info.name, q.describe(p));
        }
    }
    Ok(plan)
}

/// [`plan`] without the report.
fn build_plan(info: &NodeInfo, target: &Target) -> Result<Option<KernelPlan>> {
    let (base, steps): (&Op, &[FusedStep]) = match info.op {
        Op::Fused { base, steps, .. } => (base, steps),
        op => (op, &[]),
    };
    let act = match base {
        Op::QuantizedMatMul { activation } | Op::QuantizedConv { activation, .. } => *activation,
        _ => return Ok(None),
    };
    // A last step that quantizes to u8: the tile store's (see `quantized_output`).
    let (steps, quantized_output) = match steps.split_last() {
        Some((FusedStep::Unary(UnaryOp::QuantizeActivation { scale, zero }), rest)) => (
            rest,
            Some(QuantParams {
                scale: *scale,
                zero: *zero as u8,
            }),
        ),
        _ => (steps, None),
    };
    let out_type_ok = match quantized_output {
        Some(_) => info.outs[0].dtype == DType::U8,
        None => is_f32(&info.outs[0]),
    };
    if !target.has_avx2_fma() || info.outs.len() != 1 || !out_type_ok {
        return Ok(None);
    }
    let sub = base_info(info);
    let binfo = sub.as_ref().unwrap_or(info);
    let fixed = act.fixed_inputs();
    let (Some(w), Some(ws)) = (&binfo.consts[1], &binfo.consts[2]) else {
        return Ok(None);
    };
    if w.dtype() != DType::I8 || ws.dtype() != DType::F32 {
        return Ok(None);
    }
    let params = match act {
        ActivationQuantization::Dynamic => None,
        ActivationQuantization::Static => {
            let (Some(xs), Some(xz)) = (&binfo.consts[3], &binfo.consts[4]) else {
                return Ok(None);
            };
            let (Some(&scale), Data::U8(z)) = (xs.as_f32().and_then(|v| v.first()), xz.data())
            else {
                return Ok(None);
            };
            if !(scale > 0.0 && scale.is_finite()) {
                return Err(info.err(format!(
                    "the activation scale must be positive and finite, got {scale}"
                )));
            }
            Some(QuantParams { scale, zero: z[0] })
        }
    };
    let bias_port = (binfo.ins.len() > fixed).then_some(fixed);
    let x = &binfo.ins[0];
    let quantized_input = x.dtype == DType::U8;
    // The permission for the tile state is asked here, when a layer would use tiles: a
    // process that never runs an int8 layer never holds it (see `amx_permission`).
    let (scheme, reason) = if target.has_int8_tiles() && crate::target::amx_permission() {
        (Scheme::Tiles, "AMX tiles sum without saturation")
    } else if target.has_int8_dot_product() {
        (Scheme::DotProduct, "VNNI sums without saturation")
    } else if pairs_never_saturate(base, w) {
        (Scheme::BytePairs, "no weight pair can saturate")
    } else {
        (Scheme::WordPairs, "a weight pair could saturate vpmaddubsw")
    };
    let eb = scheme.element_bytes();
    let (form, m, n, depth, nimg) = match base {
        Op::QuantizedMatMul { .. } => {
            let (k, n) = (w.shape()[0], w.shape()[1]);
            let m = x.numel() / k.max(1);
            if k == 0 || n == 0 || m == 0 {
                return Ok(None);
            }
            (Form::MatMul, m, n, k, 1)
        }
        _ => {
            let Some((g, _)) = conv_geometry(binfo)? else {
                return Ok(None);
            };
            let (m, n, k) = (g.m, g.oh * g.ow, g.cg * g.kh * g.kw);
            if m * n * g.n == 0 || k == 0 {
                return Ok(None);
            }
            let nimg = g.n;
            if g.groups > 1 && g.cg == 1 && g.mg == 1 {
                // Exact f32 sums need every partial sum below 2^24.
                if k * 255 * 128 >= 1 << 24 {
                    return Ok(None);
                }
                (Form::Depthwise(g), m, n, k, nimg)
            } else {
                (Form::Conv(g), m, n, k, nimg)
            }
        }
    };
    let subsample = match &form {
        Form::Conv(g) => subsampled(g, quantized_input),
        _ => None,
    };
    let form = match form {
        Form::Conv(g) if subsample.is_some() => Form::Conv(ConvGeometry {
            h: g.oh,
            w: g.ow,
            sh: 1,
            sw: 1,
            hp: g.oh,
            wp: g.ow,
            ..g
        }),
        f => f,
    };
    // Fused steps the tile store applies (depthwise: Relu and Clip; the rest of the chain runs
    // afterwards).
    let channel_rows = !matches!(form, Form::MatMul);
    let avx512 =
        matches!(scheme, Scheme::DotProduct | Scheme::Tiles) && !matches!(form, Form::Depthwise(_));
    let tile = tile_steps(
        info,
        steps,
        TileShape {
            m,
            n,
            bias_is_row: channel_rows,
        },
        bias_port.is_some(),
        false,
        TileStore {
            binary: !matches!(form, Form::Depthwise(_)),
            // The AVX-512 kernels (VNNI, AMX) apply the activations of the f32 GEMM's.
            gemm_isa: avx512.then_some(Isa::Avx512),
            fake_quantize: avx512,
        },
    );
    let (epilogue, step_bias_port, res_port, mut rest) =
        (tile.epilogue, tile.bias_port, tile.residual_port, tile.rest);
    // Only ungrouped VNNI convs take a quantized input (the dword planes), and store a
    // quantized output with every step in the tile (no residual: its rows are f32 ones).
    let conv = matches!(&form, Form::Conv(_));
    if quantized_input && !conv {
        return Ok(None);
    }
    if quantized_output.is_some() {
        if !(conv && scheme == Scheme::DotProduct && rest == steps.len() && res_port.is_none()) {
            return Ok(None);
        }
        // (Nothing runs after the tiles: the quantizing step is theirs too.)
        rest += 1;
    }
    // AMX kernels multiply whole tiles of 16 K groups: K padded with zero weights.
    let whole_tiles = |groups: usize| {
        if scheme == Scheme::Tiles {
            groups.div_ceil(TILE_GROUPS) * TILE_GROUPS
        } else {
            groups
        }
    };
    let (slots, groups, planes, lda) = match &form {
        Form::MatMul => {
            let groups = depth.div_ceil(4);
            (groups, whole_tiles(groups), 0, depth.div_ceil(8) * 8 * eb)
        }
        Form::Conv(g) => {
            // Every conv group's channels start a dword plane of their own.
            let per_group = g.cg.div_ceil(4 / eb);
            let planes = g.groups * per_group;
            let slots = per_group * g.kh * g.kw;
            let groups = if scheme == Scheme::WordPairs {
                slots.div_ceil(2)
            } else {
                whole_tiles(slots)
            };
            (slots, groups, planes, 0)
        }
        Form::Depthwise(_) => (depth, depth, 0, 0),
    };
    // (WordPairs read two planes per group: only with whole groups of planes. AMX kernels
    // read packed panels.)
    let unpacked = match &form {
        Form::Conv(_) if scheme == Scheme::Tiles => false,
        Form::Conv(g) => {
            (g.kh, g.kw, g.sh, g.sw) == (1, 1, 1, 1)
                && g.hp == g.h
                && g.wp == g.w
                && (scheme != Scheme::WordPairs || slots % 2 == 0)
        }
        _ => false,
    };
    let mut q = Int8Plan {
        scheme,
        form,
        params,
        x_numel: x.numel(),
        bias_port,
        step_bias_port,
        res_port,
        steps: epilogue,
        channels: if channel_rows { m } else { n },
        depth,
        slots,
        groups,
        planes,
        lda,
        unpacked,
        shared: false,
        pixels: false,
        quantized_input,
        quantized_output,
        subsample,
        reason,
    };
    q.pixels = pixel_rows_fit(&q, m);
    let caches = target.caches();
    let pgb = scheme.panel_group_bytes();
    let rgb = scheme.row_group_bytes();
    // A K block's panel takes half of L1d (whole AMX tiles); an M block of A about 9/32 of
    // L2 (whole row tiles).
    let kc = (caches.l1d / 2 / pgb).clamp(16, 1024) / TILE_GROUPS * TILE_GROUPS;
    let tr = q.tile_rows();
    let mc = (caches.l2 * 9 / 32 / (kc.min(groups) * rgb).max(1)).clamp(4 * tr, 1024) / tr * tr;
    let chunk = match &q.form {
        // (Pixel rows: whole output rows.)
        Form::Conv(g) if q.pixels => g.ow * (128 / g.ow).max(1),
        Form::Conv(_) => 128,
        Form::Depthwise(_) => n,
        Form::MatMul if m >= 256 => 512,
        Form::MatMul if m >= 64 => 256,
        Form::MatMul => 64,
    };
    let is_depthwise = matches!(q.form, Form::Depthwise(_));
    let pixels = q.pixels;
    let mut p = KernelPlan {
        kind: Strategy::Int8(Box::new(q)),
        a_layout: ALayout::InPlace,
        m,
        n,
        k: groups,
        nimg,
        epilogue: vec![],
        bias_port: None,
        res_port: None,
        rest,
        gemm_c_post: None,
        chunk,
        mrows: m,
        kc,
        mc,
        tasks: 1,
        isa: target.microkernel_isa(),
        fold: 0,
        taps: None,
        depthwise_after: None,
    };
    let cu = p.nimg * p.units_per_img();
    let conv_groups = match q_form_groups(&p) {
        Some((groups, mg)) if groups > 1 => Some(mg),
        _ => None,
    };
    if let Some(mg) = conv_groups {
        // A unit's rows are one conv group's output channels (the tiles read its patches).
        p.mrows = mg;
    } else if is_depthwise {
        // Channel groups: about 16 units.
        p.mrows = m.div_ceil(16usize.div_ceil(cu)).max(1);
    } else if cu < 8 && m >= 2 * 4 * MR {
        // (Whole row tiles: AMX tiles are 16 rows, pixel rows' panels 16 channels.)
        let want = 8usize.div_ceil(cu);
        p.mrows = if pixels {
            m.div_ceil(want).div_ceil(NR) * NR
        } else {
            let tr = tile_rows(scheme);
            balanced_rows(m, want, 4 * MR, m).div_ceil(tr) * tr
        };
    }
    // Spread work only when a unit has enough of it: int8 MACs run about twice as fast as
    // f32 FMAs, so twice the f32 path's threshold.
    let macs = m * n * depth * nimg;
    let min_macs = if is_depthwise { 1 << 17 } else { 1 << 21 };
    p.tasks = if macs < min_macs {
        1
    } else {
        p.units().min(MAX_TASKS)
    };
    // Patches packed once for all units when the units split the output channels (each
    // would pack the same ones), for one conv group and the dword schemes.
    let bytes = match &p.kind {
        Strategy::Int8(q) => p.nimg * q.panel_image_bytes(&p),
        _ => 0,
    };
    let row_split = p.mrows < p.m;
    if let Strategy::Int8(q) = &mut p.kind {
        let single_group = matches!(&q.form, Form::Conv(g) if g.groups == 1);
        q.shared = single_group
            && !q.unpacked
            && !q.pixels
            && matches!(q.scheme, Scheme::DotProduct | Scheme::BytePairs)
            && row_split
            && bytes <= SHARED_PANELS_MAX_BYTES;
    }
    if pixels {
        // One K block: a tile is a whole K.
        p.kc = p.k;
    }
    if quantized_output.is_some() && p.kblocks().len() > 1 {
        // (Partial sums of K blocks are kept in the output, as i32.)
        return Ok(None);
    }
    // Sizes the kernels address with 32-bit offsets.
    let Strategy::Int8(q) = &p.kind else {
        unreachable!()
    };
    let scratch = q.prefix_bytes(&p) + p.tasks * q.task_bytes(&p);
    if scratch > MAX_TENSOR_BYTES {
        return Err(info.err("the quantized activations are too large"));
    }
    Ok(Some(p))
}

/// `(node name, plan)` of every int8 node of `graph` on `target`, in topological order: form
/// and shape, scheme and why, activation mode, tile epilogue, tasks (what `OPTC_INT8_PLAN=1`
/// prints while compiling). Nodes that take the generic lowering are not listed.
pub fn int8_plans(
    graph: &optc_ir::Graph,
    target: &Target,
) -> std::result::Result<Vec<(String, String)>, crate::error::CodegenError> {
    // (The graph codegen lowers: with the int8 hand-offs.)
    let handed = hand_off_bytes(graph, target)?;
    let graph = handed.as_ref().unwrap_or(graph);
    let order = graph
        .topo_order()
        .map_err(|e| crate::error::CodegenError::new(e.msg))?;
    let mut v = vec![];
    for n in order {
        let info = NodeInfo::of(graph, n)?;
        let base = info.op.base();
        if !matches!(base, Op::QuantizedMatMul { .. } | Op::QuantizedConv { .. }) {
            continue;
        }
        if let Some(p) = plan(&info, target)? {
            if let Strategy::Int8(q) = &p.kind {
                v.push((info.name.to_string(), q.describe(&p)));
            }
        }
    }
    Ok(v)
}

/// What a pixel-rows tile's transposed store costs, in K groups of its rows (measured on
/// Zen 4: the store of 16 outputs takes about as long as 6 K groups of their sums).
const TRANSPOSED_STORE_GROUPS: f64 = 10.0;

/// What packing one K group of a 16-pixel patch panel costs, in K groups of a tile row
/// (measured on Zen 4 with the packing skipped: 3.3 on resnet18's 56x56 int8 convs, whose
/// panels are mostly copied by the assembled row routine, 4.4 on digits_cnn's 8x8 ones,
/// whose panels span two output rows).
const PANEL_PACK_GROUPS: f64 = 4.0;

/// Whether conv `q` takes pixels as rows (`Contraction::ConvPixels`): one conv group, VNNI,
/// whole 16-channel panels, output rows of at least 4 pixels, no per-channel step after a
/// residual (the tile is transposed there; the channel tables run along the vectors before),
/// and when it pays: the other form's tiles compute whole 16-pixel panels and 6-channel rows
/// over the whole kernel and pack the patch panels, `groups (fill + PANEL_PACK_GROUPS / m)`
/// K groups per output vector, the pixel rows only their kernel rows inside the image
/// (`rows.rs`: `groups share`) and a transposed store ([`TRANSPOSED_STORE_GROUPS`]). On
/// resnet18's int8 convs: every 3x3 and layer4's 1x1 downsample (49 pixels in 64 columns),
/// not the 7x7 stem nor the other downsamples (too few K groups to repay a transposed store);
/// on digits_cnn's: the 8x8 and 4x4 maps (a 3x3 kernel's rows read the padding in 2 of 24
/// and 2 of 12 pairs), not the first conv (K = 9).
fn pixel_rows_fit(q: &Int8Plan, m: usize) -> bool {
    let Form::Conv(g) = &q.form else {
        return false;
    };
    if g.groups != 1 || g.ow < 4 {
        return false;
    }
    let n = g.oh * g.ow;
    let fill = (n.div_ceil(NR) * NR * m.div_ceil(MR) * MR) as f64 / (n * m) as f64;
    let share = KernelRows::of(g).share();
    // (Packed once per panel for all `m` channels; an unpacked conv reads its planes.)
    let packing = if q.unpacked {
        0.0
    } else {
        PANEL_PACK_GROUPS / m as f64
    };
    if (q.groups as f64) * (fill + packing - share) <= TRANSPOSED_STORE_GROUPS {
        return false;
    }
    let channel_step = |s: &Epilogue| matches!(s, Epilogue::BiasRow | Epilogue::BiasCol);
    let after_residual = q
        .steps
        .iter()
        .skip_while(|s| **s != Epilogue::Residual)
        .any(channel_step);
    q.scheme == Scheme::DotProduct && m.is_multiple_of(NR) && !after_residual
}

/// `(groups, output channels per group)` of a conv node.
fn q_form_groups(p: &KernelPlan) -> Option<(usize, usize)> {
    match &p.kind {
        Strategy::Int8(q) => match &q.form {
            Form::Conv(g) => Some((g.groups, g.mg)),
            _ => None,
        },
        _ => None,
    }
}

/// The row-tile heights the units of `p` use (full tiles of [`Int8Plan::tile_rows`] and the
/// remainders of M blocks).
fn tile_heights(p: &KernelPlan, tr: usize) -> Vec<usize> {
    let mut v = vec![];
    let last_rows = p.last_part_rows();
    for rows in [p.mrows, last_rows] {
        let mut blocks = vec![p.mc; rows / p.mc];
        if rows % p.mc > 0 {
            blocks.push(rows % p.mc);
        }
        for b in blocks {
            for h in [tr.min(b), b % tr] {
                if h > 0 && !v.contains(&h) {
                    v.push(h);
                }
            }
        }
    }
    v
}

/// Every routine an int8 node calls.
pub(crate) fn routines(p: &KernelPlan, q: &Int8Plan) -> Vec<Routine> {
    let mut r = vec![];
    let eb = q.scheme.element_bytes();
    if !q.is_static() {
        r.push(Routine::Quantize(QuantizeKey::Range));
    }
    match &q.form {
        Form::Depthwise(g) => {
            r.push(Routine::Quantize(depthwise::rows_key(g)));
            if let Some(k) = depthwise::sum_key(g) {
                r.push(Routine::Depthwise(k));
            }
            return r;
        }
        Form::MatMul => r.push(Routine::Quantize(QuantizeKey::Rows {
            element_bytes: eb,
            k: q.depth,
        })),
        Form::Conv(g) => {
            let per = q.channels_per_dword();
            let mut counts = vec![];
            if g.cg >= per {
                counts.push(per);
            }
            if g.cg % per > 0 {
                counts.push(g.cg % per);
            }
            for channels in counts {
                r.push(Routine::Quantize(QuantizeKey::Plane(plane_key(
                    q, g, channels,
                ))));
            }
            if !q.unpacked && !q.pixels {
                // (Patch panels of contiguous pixels copied row by row.)
                r.push(Routine::PanelRows { stride: 1 });
                r.push(Routine::PanelRows { stride: 2 });
            }
        }
    }
    if q.scheme == Scheme::Tiles {
        r.push(Routine::Tiles(TileState::Configure));
        r.push(Routine::Tiles(TileState::Release));
    }
    if let (true, Form::Conv(g)) = (q.pixels, &q.form) {
        for (x0, mr, panels) in pixel_tiles(p, g) {
            let key = Routine::Int8(pixel_key(
                q,
                x0,
                mr,
                panels,
                false,
                true,
                Some(dequantize(q)),
            ));
            if !r.contains(&key) {
                r.push(key);
            }
        }
        return r;
    }
    let last = p.last_unit_cols();
    let mut partial = vec![false];
    if !last.is_multiple_of(NR) || !p.chunk.is_multiple_of(NR) {
        partial.push(true);
    }
    let nkb = p.kblocks().len();
    let dq = Some(dequantize(q));
    let blocks = if nkb == 1 {
        vec![(true, dq)]
    } else {
        vec![(true, None), (false, None), (false, dq)]
    };
    for mr in tile_heights(p, q.tile_rows()) {
        for &partial in &partial {
            for (first, last) in &blocks {
                let k = Routine::Int8(int8_key(q, mr, 1, partial, *first, last.clone()));
                if !r.contains(&k) {
                    r.push(k);
                }
            }
        }
    }
    r
}

/// A pixel-rows conv's tiles along an output row of `ow` pixels: `(first pixel, pixels)`, as
/// few as tiles of [`PIXEL_ROWS`] allow, as even as can be (14 = 7 + 7, 28 = 4 x 7).
pub(super) fn row_tiles(ow: usize) -> Vec<(usize, usize)> {
    let n = ow.div_ceil(PIXEL_ROWS);
    let (base, extra) = (ow / n, ow % n);
    let mut v = vec![];
    let mut x = 0;
    for t in 0..n {
        let w = base + usize::from(t < extra);
        v.push((x, w));
        x += w;
    }
    v
}

/// Channel panels per block of a pixel-rows conv with output rows of `ow` pixels: as many as
/// its widest row tile allows.
pub(super) fn block_panels(ow: usize) -> usize {
    let widest = row_tiles(ow).iter().map(|t| t.1).max().unwrap_or(1);
    panels_for(widest)
}

/// The tiles `(first column, pixel rows, channel panels)` the units of pixel-rows conv `g`
/// call: the row tiles by [`block_panels`] panels (and a part's last `rows % (16 panels) /
/// 16`).
pub(super) fn pixel_tiles(p: &KernelPlan, g: &ConvGeometry) -> Vec<(usize, usize, usize)> {
    let full = block_panels(g.ow);
    let rows = row_tiles(g.ow);
    let mut panels = vec![];
    for part in [p.mrows, p.last_part_rows()] {
        for z in [(part / NR).min(full), part % (NR * full) / NR] {
            if z > 0 && !panels.contains(&z) {
                panels.push(z);
            }
        }
    }
    rows.iter()
        .flat_map(|&(x0, mr)| panels.iter().map(move |&z| (x0, mr, z)))
        .collect()
}

/// The dequantizing end of a node's last K block.
pub(super) fn dequantize(q: &Int8Plan) -> Dequantize {
    Dequantize {
        bias: q.bias_port.is_some(),
        steps: q.steps.clone(),
        quantize: q.quantized_output.map(QuantizeStore::of),
    }
}

pub(super) fn int8_key(
    q: &Int8Plan,
    mr: usize,
    panels: usize,
    partial: bool,
    first: bool,
    last: Option<Dequantize>,
) -> Int8Key {
    pixel_key(q, 0, mr, panels, partial, first, last)
}

/// [`int8_key`] of a pixel-rows tile from output column `x0` (its [`ColumnSkips`]).
pub(super) fn pixel_key(
    q: &Int8Plan,
    x0: usize,
    mr: usize,
    panels: usize,
    partial: bool,
    first: bool,
    last: Option<Dequantize>,
) -> Int8Key {
    Int8Key {
        scheme: q.scheme,
        contraction: q.contraction(panels, x0, mr),
        mr,
        partial,
        unpacked: q.unpacked && !q.pixels,
        first,
        last,
    }
}

/// The plane routine for `channels` input planes of conv `g`.
pub(super) fn plane_key(q: &Int8Plan, g: &ConvGeometry, channels: usize) -> PlaneKey {
    let (source, step) = match q.subsample {
        Some(s) => ((s.h, s.w), (s.sh, s.sw)),
        None => ((g.h, g.w), (1, 1)),
    };
    PlaneKey {
        source_bytes: q.input_bytes(),
        element_bytes: q.scheme.element_bytes(),
        channels,
        h: g.h,
        w: g.w,
        ph: g.ph,
        pw: g.pw,
        hp: g.hp,
        wp: g.wp,
        source,
        step,
    }
}
