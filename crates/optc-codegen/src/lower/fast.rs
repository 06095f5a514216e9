//! The AVX2/FMA GEMM path (BLIS style): MatMul/Gemm with a constant B packed at compile time
//! into 16-column panels, and ungrouped Conv as an implicit GEMM (`W[M, C*KH*KW] @ patches`)
//! whose patch panels are packed on the fly, one K block at a time, into per-task scratch.
//! The `mr x 16` tiles are computed by the `iced-x86` microkernels of [`crate::x64::asm`], which
//! also apply the epilogue (bias, Relu/Clip, residual add, alpha) before the store.
//!
//! Work is split into column units (`chunk` columns of one image); a node's units are spread
//! over up to [`MAX_TASKS`] tasks run by the `optc_rt_parallel_for` hook.

use super::*;
use crate::x64::asm::direct_conv::DcKey;
use crate::x64::asm::{Ep, Isa, Routine, UkrKey, MR, NR};
use cranelift_codegen::ir::{AtomicRmwOp, FuncRef};

mod dw;
mod pool;
mod tn;
mod wino;

/// At most this many tasks per node (each conv task owns a `KC x chunk` packing buffer).
pub(crate) const MAX_TASKS: usize = 16;

pub(super) enum Kind {
    /// `C[mt, n] = A[mt, k] @ B` with B packed (`extra[0]`), A = input 0.
    Mat,
    /// `C[i] = A[i] @ B[i]` with B an input (packed per unit and K block at run time);
    /// images `i` are the batch (B 2-D: one image, A's batch dims folded into M).
    MatRt { a_img: i64, b_img: i64 },
    /// Depthwise conv (one input channel per output channel), vectorized along output rows,
    /// the epilogue applied in registers; units are channel groups.
    Dw(ConvGeom),
    /// Implicit GEMM: A = weights (input 1), B = patches of input 0 (padded copy in scratch).
    Conv(ConvGeom),
    /// Winograd F(2x2, 3x3) (see [`wino`]): `n` counts 2x2 output tiles (tile columns padded
    /// to a multiple of 4), `k` is C, `chunk` tiles per unit.
    /// The `usize` is the output tile size r (F(r x r, 3x3), r = 2 or 4).
    Wino(ConvGeom, usize),
    /// 2-D MaxPool (see [`pool`]): `m` planes, units of `mrows` planes.
    Pool(Pool2d),
    /// 1x1 conv on a small map with the GEMM roles swapped (see [`tn`]): pixels are the
    /// microkernel rows, output channels the 16-wide panels of the packed weights
    /// (`extra[0]`); units of `mrows` channels.
    Tn,
}

/// How the microkernels read A.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum AMode {
    /// Rows of A in place (`lda` apart).
    Direct,
    /// Packed at compile time (constant conv weights, `extra[3]`): row tiles of `MR`
    /// (the last one `M % MR`) stored `[K][mr]`, tile of row `r` at `r * K` floats.
    Const,
    /// Packed per (M block, K block) at run time into the task's scratch.
    Runtime,
}

pub(super) struct Plan {
    pub kind: Kind,
    pub amode: AMode,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub nimg: usize,
    pub ep: Vec<Ep>,
    pub bias_port: Option<usize>,
    pub res_port: Option<usize>,
    /// Fused steps from this index on are applied afterwards by the generic chain pass.
    pub rest: usize,
    /// Gemm's `beta * C` term applied afterwards (when it is not an epilogue step).
    pub gemm_c_post: Option<f32>,
    /// Columns per work unit (a multiple of `NR`).
    pub chunk: usize,
    /// Rows per work unit (a multiple of `MR`, or all of M).
    pub mrows: usize,
    /// Depth of one K block: a 16-column B panel of `kc` rows stays in L1d
    /// ([`Target::blocking`]; 256 for a 32 KiB L1d).
    pub kc: usize,
    /// Rows of one M block: the `mc x kc` block of A stays in L2 (144 for 512 KiB).
    pub mc: usize,
    pub tasks: usize,
    /// Microkernel instruction set.
    pub isa: Isa,
}

impl Plan {
    fn units_per_img(&self) -> usize {
        self.n.div_ceil(self.chunk)
    }
    fn mparts(&self) -> usize {
        self.m.div_ceil(self.mrows)
    }
    /// Whether the generated code reads input `port` through its pointer: not the
    /// constant weights the plan packs at compile time (they live in `derived` data).
    pub fn reads_input(&self, port: usize) -> bool {
        let packed = match &self.kind {
            Kind::Mat | Kind::Wino(..) | Kind::Tn => true,
            Kind::Conv(_) => self.amode == AMode::Const,
            Kind::MatRt { .. } | Kind::Dw(_) | Kind::Pool(_) => false,
        };
        !(packed && port == 1)
    }
    /// Whether a last panel of `tail` valid columns uses the 8-column (half) microkernel.
    fn half_tail(&self, tail: usize) -> bool {
        self.isa == Isa::Avx2 && tail <= NR / 2
    }
    pub fn units(&self) -> usize {
        self.nimg * self.units_per_img() * self.mparts()
    }
    /// Bytes of the serial pre-pass's buffer at the start of scratch: the padded input copy
    /// of a conv, the packed input of a swapped 1x1 conv.
    pub fn pad_bytes(&self) -> usize {
        match &self.kind {
            // (Depthwise convs read their input in place: see `dw`.)
            Kind::Conv(g) if g.hp != g.h || g.wp != g.w => g.n * g.c * g.hp * g.wp * 4,
            // The packed input of a swapped 1x1 conv.
            Kind::Tn => tn::apack_bytes(self),
            _ => 0,
        }
    }
    /// Packing buffer bytes per task (conv only).
    pub fn pack_bytes(&self) -> usize {
        let b = match &self.kind {
            Kind::Conv(_) | Kind::MatRt { .. } => self.kc.min(self.k.max(1)) * self.chunk * 4,
            Kind::Mat | Kind::Dw(_) => 0,
            Kind::Tn => tn::tmp_bytes(self),
            Kind::Wino(g, r) => wino::task_bytes(self, g, *r),
            Kind::Pool(g) => pool::task_bytes(g),
        };
        b + self.apack_bytes()
    }
    /// Bytes of the run-time A packing buffer (at the end of the task's packing space).
    fn apack_bytes(&self) -> usize {
        if self.amode == AMode::Runtime {
            self.mc.min(self.m) * self.kc.min(self.k.max(1)) * 4
        } else {
            0
        }
    }
    pub fn scratch_bytes(&self) -> usize {
        self.mask_off() + 64
    }
    /// Byte offset of the node's buffer-slot mask (after the per-task buffers): see
    /// [`acquire_slot`].
    fn mask_off(&self) -> usize {
        (self.pad_bytes() + self.tasks * self.pack_bytes()).div_ceil(64) * 64
    }
    fn kblocks(&self) -> Vec<usize> {
        if self.k == 0 {
            return vec![0];
        }
        // Even blocks (a short last block would pay the C reload for little work).
        let kb = self.kb();
        let n = self.k.div_ceil(kb);
        let mut v = vec![kb; n - 1];
        v.push(self.k - (n - 1) * kb);
        v
    }
    /// Size of every K block but the last.
    fn kb(&self) -> usize {
        let n = self.k.div_ceil(self.kc).max(1);
        self.k.div_ceil(n).max(1)
    }
    /// Every assembled routine the node calls.
    pub fn routines(&self) -> Vec<Routine> {
        let mut r: Vec<Routine> = self.keys().into_iter().map(Routine::Gemm).collect();
        if let Kind::Dw(g) = &self.kind {
            r.extend(dw::routines(self, g).into_iter().map(Routine::Dw));
        }
        if let Kind::Conv(g) = &self.kind {
            let last_cols = self.n - (self.units_per_img() - 1) * self.chunk;
            let last_rows = self.m - (self.mparts() - 1) * self.mrows;
            for ncols in [self.chunk, last_cols] {
                for mrows in [self.mrows, last_rows] {
                    if let Some(k) = self.dc_key(g, ncols, mrows) {
                        let k = Routine::Dc(k);
                        if !r.contains(&k) {
                            r.push(k);
                        }
                    }
                }
            }
        }
        r
    }
    /// Whether the conv's padded input copy is deinterleaved for the stride-2 direct-conv
    /// kernel (every unit runs it: see [`emit_deinterleaved_copy`]).
    fn dc_deinterleaved(&self, g: &ConvGeom) -> bool {
        g.sw == 2 && self.dc_key(g, self.chunk, self.mrows).is_some()
    }
    /// The epilogue an assembled dw/dc kernel applies: `ep` without bias steps when the node
    /// has no bias input.
    pub(super) fn kernel_ep(&self) -> Vec<Ep> {
        self.ep
            .iter()
            .filter(|s| self.bias_port.is_some() || !matches!(s, Ep::BiasRow | Ep::BiasCol))
            .copied()
            .collect()
    }
    /// The direct-conv kernel of a unit of `ncols` pixels x `mrows` channels, if the conv
    /// has one ([`crate::x64::asm::direct_conv`]): few input channels, constant weights, one K block.
    fn dc_key(&self, g: &ConvGeom, ncols: usize, mrows: usize) -> Option<DcKey> {
        let ep = self.kernel_ep();
        // Stride 2 reads the deinterleaved padded copy, which exists only with pads.
        let ok = self.amode == AMode::Const
            && g.groups == 1
            && self.kblocks().len() == 1
            && self.res_port.is_none()
            && (g.sw == 1 || self.pad_bytes() > 0)
            && ncols.is_multiple_of(16)
            && DcKey::supports(g.c, g.kh, g.kw, g.sw, g.ow, &ep);
        ok.then_some(DcKey {
            c: g.c,
            hp: g.hp,
            wp: g.wp,
            ow: g.ow,
            kh: g.kh,
            kw: g.kw,
            sh: g.sh,
            sw: g.sw,
            dh: g.dh,
            dw: g.dw,
            n: self.n,
            mrows,
            ncols,
            ep,
        })
    }
    /// Every microkernel the node calls.
    pub fn keys(&self) -> Vec<UkrKey> {
        if matches!(self.kind, Kind::Dw(_) | Kind::Pool(_)) {
            return vec![];
        }
        if matches!(self.kind, Kind::Wino(..)) {
            return wino::keys(self);
        }
        if matches!(self.kind, Kind::Tn) {
            return tn::keys(self);
        }
        let mut mrs = vec![];
        if self.m >= MR {
            mrs.push(MR);
        }
        let last_rows = self.m - (self.mparts() - 1) * self.mrows;
        for rows in [self.mrows, last_rows] {
            for mc in [self.mc.min(rows), rows % self.mc] {
                if mc % MR != 0 && !mrs.contains(&(mc % MR)) {
                    mrs.push(mc % MR);
                }
            }
        }
        // (partial, half) of the panels: full ones, and the tails of a unit's columns.
        let mut parts = vec![(false, false)];
        let last = self.n - (self.units_per_img() - 1) * self.chunk;
        for tail in [last % NR, self.chunk % NR] {
            if tail > 0 && !parts.contains(&(true, self.half_tail(tail))) {
                parts.push((true, self.half_tail(tail)));
            }
        }
        let nkb = self.kblocks().len();
        let mut kinds = vec![(false, nkb == 1)];
        if nkb > 1 {
            kinds.push((true, false));
            kinds.push((true, true));
        }
        let mut keys = vec![];
        for &mr in &mrs {
            for &(partial, half) in &parts {
                for &(acc, ep) in &kinds {
                    let k = UkrKey {
                        isa: self.isa,
                        mr,
                        pa: self.amode != AMode::Direct,
                        half,
                        partial,
                        acc,
                        tn: false,
                        ep: if ep { self.ep.clone() } else { vec![] },
                    };
                    if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
        }
        keys
    }
}

fn is_f32(t: &TensorType) -> bool {
    t.dtype == DType::F32
}

/// The plan for `info` on the AVX2 path, or `None` when the node takes the generic path.
pub(super) fn plan(info: &NodeInfo, target: &Target) -> R<Option<Plan>> {
    if !target.has_avx2_fma() {
        return Ok(None);
    }
    let (base, steps): (&Op, &[FusedStep]) = match info.op {
        Op::Fused { base, steps, .. } => (base, steps),
        op => (op, &[]),
    };
    if !is_f32(&info.outs[0]) || info.outs.len() != 1 {
        return Ok(None);
    }
    if let Op::MaxPool { .. } = info.op {
        return Ok(maxpool2d_geom(info).map(|g| pool_plan(g, target)));
    }
    let out = &info.outs[0].shape;
    let nbase = match info.op {
        Op::Fused { base_inputs, .. } => *base_inputs,
        _ => info.ins.len(),
    };
    let sub = base_info(info);
    let binfo = sub.as_ref().unwrap_or(info);
    let mut ep = vec![];
    let mut bias_port = None;
    let mut res_port = None;
    let mut gemm_c_post = None;
    let (kind, m, n, k, nimg, bias_is_row) = match base {
        Op::MatMul if info.consts[1].is_none() => {
            let (sa, sb) = (&info.ins[0].shape, &info.ins[1].shape);
            if !is_f32(&info.ins[0]) || !is_f32(&info.ins[1]) || sa.len() < 2 || sb.len() < 2 {
                return Ok(None);
            }
            let (k, n) = (sb[sb.len() - 2], sb[sb.len() - 1]);
            if sa.last() != Some(&k) || k == 0 || n == 0 {
                return Ok(None);
            }
            if sb.len() == 2 {
                let mt = info.ins[0].numel() / k;
                if mt == 0 || mt * n != info.outs[0].numel() {
                    return Ok(None);
                }
                (Kind::MatRt { a_img: 0, b_img: 0 }, mt, n, k, 1, false)
            } else {
                if sa.len() != sb.len() || sa[..sa.len() - 2] != sb[..sb.len() - 2] {
                    return Ok(None);
                }
                let m = sa[sa.len() - 2];
                let nimg: usize = sa[..sa.len() - 2].iter().product();
                if m == 0 || nimg == 0 || nimg * m * n != info.outs[0].numel() {
                    return Ok(None);
                }
                let kind = Kind::MatRt {
                    a_img: (m * k * 4) as i64,
                    b_img: (k * n * 4) as i64,
                };
                (kind, m, n, k, nimg, false)
            }
        }
        Op::MatMul => {
            let Some(b) = &info.consts[1] else {
                return Ok(None);
            };
            if b.shape().len() != 2 || !is_f32(&info.ins[0]) || b.dtype() != DType::F32 {
                return Ok(None);
            }
            let (k, n) = (b.shape()[0], b.shape()[1]);
            let sa = &info.ins[0].shape;
            if sa.last() != Some(&k) || k == 0 {
                return Ok(None);
            }
            let mt = info.ins[0].numel() / k;
            if mt * n != info.outs[0].numel() || mt == 0 || n == 0 {
                return Ok(None);
            }
            (Kind::Mat, mt, n, k, 1, false)
        }
        Op::Gemm {
            alpha,
            beta,
            trans_a,
            ..
        } => {
            if *trans_a || info.consts[1].is_none() || !is_f32(&info.ins[0]) {
                return Ok(None);
            }
            let (m, k) = (info.ins[0].shape[0], info.ins[0].shape[1]);
            let n = out[1];
            if m * n == 0 || k == 0 {
                return Ok(None);
            }
            if *alpha != 1.0 {
                ep.push(Ep::Scale(alpha.to_bits()));
            }
            if nbase > 2 && *beta != 0.0 {
                let cs = &info.ins[2].shape;
                if *beta == 1.0 && (cs.as_slice() == [n] || cs.as_slice() == [1, n]) {
                    ep.push(Ep::BiasCol);
                    bias_port = Some(2);
                } else if *beta == 1.0 && cs.as_slice() == [m, n] {
                    ep.push(Ep::Residual);
                    res_port = Some(2);
                } else {
                    gemm_c_post = Some(*beta);
                }
            }
            (Kind::Mat, m, n, k, 1, false)
        }
        Op::Conv { .. } => {
            let Some((g, _)) = conv_geom(binfo)? else {
                return Ok(None);
            };
            if !info.ins.iter().take(3).all(is_f32) {
                return Ok(None);
            }
            let dw = g.groups > 1 && g.cg == 1 && g.mg == 1;
            if g.groups != 1 && !dw {
                return Ok(None);
            }
            let (m, n, k) = (g.m, g.oh * g.ow, g.c * g.kh * g.kw);
            if m * n * g.n == 0 || k == 0 {
                return Ok(None);
            }
            if nbase > 2 {
                ep.push(Ep::BiasRow);
                bias_port = Some(2);
            }
            let nimg = g.n;
            if dw {
                // Depth of one output: the window (not `c` windows).
                let k = g.kh * g.kw;
                (Kind::Dw(g), m, n, k, nimg, true)
            } else {
                (Kind::Conv(g), m, n, k, nimg, true)
            }
        }
        _ => return Ok(None),
    };
    // Fused steps that the tile store can apply.
    let mut rest = steps.len();
    if gemm_c_post.is_some() {
        rest = 0;
    }
    for (i, st) in steps.iter().enumerate().take(rest) {
        let e = match st {
            FusedStep::Unary(UnaryOp::Relu) => Some(Ep::Relu),
            FusedStep::Unary(UnaryOp::Clip { min, max }) => {
                Some(Ep::Clip(min.to_bits(), max.to_bits()))
            }
            FusedStep::Binary {
                op: BinaryOp::Add,
                input,
                ..
            } if is_f32(&info.ins[*input]) => {
                let s = &info.ins[*input].shape;
                if s == out && res_port.is_none() {
                    res_port = Some(*input);
                    Some(Ep::Residual)
                } else if bias_port.is_none() && s.len() <= out.len() {
                    // Rank-aligned: a bias broadcasts along rows (conv channels) or columns.
                    let pad = out.len() - s.len();
                    let dims: Vec<usize> = std::iter::repeat_n(1, pad)
                        .chain(s.iter().copied())
                        .collect();
                    let ok = if bias_is_row {
                        dims.len() == 4
                            && dims
                                .iter()
                                .enumerate()
                                .all(|(d, &x)| x == 1 || (d == 1 && x == m))
                            && dims[1] == m
                    } else {
                        dims.last() == Some(&n) && dims[..dims.len() - 1].iter().all(|&x| x == 1)
                    };
                    if ok {
                        bias_port = Some(*input);
                        Some(if bias_is_row {
                            Ep::BiasRow
                        } else {
                            Ep::BiasCol
                        })
                    } else {
                        None
                    }
                } else {
                    None
                }
            }
            _ => None,
        };
        match e {
            Some(x) => ep.push(x),
            None => {
                rest = i;
                break;
            }
        }
    }
    // 3x3 stride-1 convs with constant weights: Winograd F(2x2, 3x3).
    let (kind, n, k) = match kind {
        Kind::Conv(g)
            if target.winograd() >= 2 && wino::applies(&g, binfo.consts[1].is_some(), &ep) =>
        {
            let r = wino::choose_r(&g, target.winograd());
            let wg = wino::wgeom(&g, r);
            let c = g.c;
            (Kind::Wino(g, r), wg.th * wg.tw4, c)
        }
        // 1x1 convs on small maps: pixels as tile rows (see `tn::applies`).
        Kind::Conv(g)
            if conv_is_gemm(&g)
                && binfo.consts[1].is_some()
                && tn::applies(target.ukr_isa(), m, k, n, &ep) =>
        {
            ep = tn::ep(&ep);
            (Kind::Tn, n, k)
        }
        kind => (kind, n, k),
    };
    let chunk = match kind {
        Kind::Wino(_, r) => wino::nb(k, r),
        Kind::Pool(_) => n,
        Kind::Conv(_) => 128,
        Kind::Dw(_) | Kind::Tn => n,
        Kind::Mat | Kind::MatRt { .. } if m >= 256 => 512,
        Kind::Mat | Kind::MatRt { .. } if m >= 64 => 256,
        Kind::Mat | Kind::MatRt { .. } => 64,
    };
    let amode = match kind {
        Kind::Conv(_) if binfo.consts[1].is_some() => AMode::Const,
        // Packing A pays off only when a unit reuses it over many panels (measured: it
        // costs ~20% at 4 panels per unit, gains ~20% at 1024^3).
        Kind::Mat | Kind::MatRt { .. } if chunk >= 256 && n >= 256 && k >= 256 => AMode::Runtime,
        _ => AMode::Direct,
    };
    let mut p = Plan {
        kind,
        amode,
        m,
        n,
        k,
        nimg,
        ep,
        bias_port,
        res_port,
        rest,
        gemm_c_post,
        chunk,
        mrows: m,
        kc: target.blocking().0,
        mc: target.blocking().1,
        tasks: 1,
        isa: target.ukr_isa(),
    };
    // Split rows too when there are few column units (e.g. 7x7 maps, small N).
    let cu = p.nimg * p.units_per_img();
    if let Kind::Wino(_, r) = p.kind {
        p.mrows = wino::mrows(m, chunk, r);
    } else if let Kind::Tn = p.kind {
        p.mrows = tn::mrows(m);
        p.kc = tn::KC;
    } else if let Kind::Dw(_) = p.kind {
        // Channel groups: about 16 units.
        p.mrows = m.div_ceil(16usize.div_ceil(cu)).max(1);
    } else if cu < 8 && m >= 2 * 4 * MR {
        let want = 8usize.div_ceil(cu);
        // Every row part packs its own copy of B: keep parts >= 48 rows when B is packed
        // at run time, so the packing stays small next to the product.
        let floor = if matches!(p.kind, Kind::Mat) {
            4 * MR
        } else {
            8 * MR
        };
        p.mrows = balanced_rows(m, want, floor, m);
    }
    // Spread work only when a unit has enough of it (~256 KFLOP).
    let flops = match &p.kind {
        // n counts tiles: each costs (r + 2)^2 multiply-adds per (m, c).
        Kind::Wino(_, r) => 2 * m * n * k * nimg * (r + 2) * (r + 2),
        _ => 2 * m * n * k * nimg,
    };
    // Depthwise convs run ~8x fewer flops per cycle: split them at fewer flops.
    let min_flops = if matches!(p.kind, Kind::Dw(_)) {
        1 << 18
    } else if m <= 4 {
        // Few rows: bound by streaming B (weights) from memory, which two cores do faster.
        1 << 19
    } else {
        1 << 21
    };
    p.tasks = if flops < min_flops {
        1
    } else {
        p.units().min(MAX_TASKS)
    };
    Ok(Some(p))
}

/// Rows per part when splitting `m` rows into about `want` parts (multiples of `MR`, at
/// least `min_rows` unless there is one part, at most `max_rows`). The pool's threads pull
/// parts in order, so an odd count or a short last part idles one of two threads: among
/// part counts up to `2 want`, keep those whose two-thread split (alternate parts) is
/// within 3% of the most even one, and take the count nearest `want`.
pub(super) fn balanced_rows(m: usize, want: usize, min_rows: usize, max_rows: usize) -> usize {
    let mut cands: Vec<(usize, usize, usize)> = vec![];
    for parts in 1..=(2 * want).max(1) {
        let rows = m.div_ceil(parts).div_ceil(MR) * MR;
        if parts > 1 && rows < min_rows {
            break;
        }
        if rows > max_rows.max(MR) {
            continue;
        }
        let n = m.div_ceil(rows);
        let (mut a, mut b) = (0, 0);
        for i in 0..n {
            let s = rows.min(m - i * rows);
            if i % 2 == 0 {
                a += s;
            } else {
                b += s;
            }
        }
        cands.push((a.max(b), n, rows));
    }
    let Some(best) = cands.iter().map(|c| c.0).min() else {
        return m.div_ceil(MR) * MR;
    };
    cands
        .iter()
        .filter(|c| c.0 * 100 <= best * 103 + 100)
        .min_by_key(|c| (c.1.abs_diff(want), c.2))
        .map_or(m.div_ceil(MR) * MR, |c| c.2)
}

/// MaxPool: units of planes, split across tasks when the node is big enough.
fn pool_plan(g: Pool2d, target: &Target) -> Plan {
    let (kc, mc) = target.blocking();
    let mrows = pool::plane_rows(g.planes);
    let work = g.planes * g.hp * g.wp * g.kh.max(g.kw);
    let (m, n, k) = (g.planes, g.oh * g.ow, g.kh * g.kw);
    let mut p = Plan {
        kind: Kind::Pool(g),
        isa: target.ukr_isa(),
        amode: AMode::Direct,
        m,
        n,
        k,
        nimg: 1,
        ep: vec![],
        bias_port: None,
        res_port: None,
        rest: 0,
        gemm_c_post: None,
        chunk: n,
        mrows,
        kc,
        mc,
        tasks: 1,
    };
    if work >= 1 << 18 {
        p.tasks = p.units().min(MAX_TASKS);
    }
    p
}

/// Compile-time data: the packed B (Mat) or the conv offset tables.
pub(super) fn derived(info: &NodeInfo, p: &Plan) -> R<Vec<Vec<u8>>> {
    match &p.kind {
        Kind::MatRt { .. } | Kind::Dw(_) | Kind::Pool(_) => Ok(vec![]),
        Kind::Wino(g, r) => wino::derived(info, g, *r),
        Kind::Tn => tn::derived(info, p),
        Kind::Mat => {
            let b = info.consts[1]
                .as_ref()
                .ok_or_else(|| info.err("B is not constant"))?;
            let trans = matches!(info.op, Op::Gemm { trans_b: true, .. })
                || matches!(info.op, Op::Fused { base, .. } if matches!(**base, Op::Gemm { trans_b: true, .. }));
            let v = b.as_f32().ok_or_else(|| info.err("B is not f32"))?;
            let (r, c) = (b.shape()[0], b.shape()[1]);
            let (k, n) = if trans { (c, r) } else { (r, c) };
            let tiles = n.div_ceil(NR);
            let mut out = vec![0f32; tiles * k * NR];
            for kk in 0..k {
                for j in 0..n {
                    let x = if trans { v[j * c + kk] } else { v[kk * c + j] };
                    out[((j / NR) * k + kk) * NR + j % NR] = x;
                }
            }
            Ok(vec![out.iter().flat_map(|x| x.to_le_bytes()).collect()])
        }
        Kind::Conv(g) => {
            let plane = g.hp * g.wp;
            let mut koff: Vec<i64> = Vec::with_capacity(p.k);
            for c in 0..g.c {
                for kh in 0..g.kh {
                    for kw in 0..g.kw {
                        koff.push(((c * plane + kh * g.dh * g.wp + kw * g.dw) * 4) as i64);
                    }
                }
            }
            let np = p.n.div_ceil(NR) * NR;
            let pix: Vec<i64> = (0..np)
                .map(|q| {
                    if q < p.n {
                        let (oh, ow) = (q / g.ow, q % g.ow);
                        ((oh * g.sh * g.wp + ow * g.sw) * 4) as i64
                    } else {
                        0
                    }
                })
                .collect();
            // Per group of 4 pixels: 1 = contiguous (one vector load per k), 2 = every other
            // float (two loads and an even-lane shuffle per k; only where the second load's
            // extra float stays inside the source buffer), 0 = gathered one by one.
            let src_bytes = if p.pad_bytes() > 0 {
                p.pad_bytes() / g.n
            } else {
                g.c * g.h * g.w * 4
            } as i64;
            let max_koff = koff.iter().copied().max().unwrap_or(0);
            let contig: Vec<i64> = (0..np / 4)
                .map(|q| {
                    let step = |d: i64| {
                        (0..4).all(|l| {
                            let x = 4 * q + l;
                            x < p.n && pix[x] == pix[4 * q] + d * l as i64
                        })
                    };
                    if step(4) {
                        1
                    } else if step(8) && pix[4 * q] + max_koff + 32 <= src_bytes {
                        2
                    } else {
                        0
                    }
                })
                .collect();
            let bytes = |v: &[i64]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
            let mut v = vec![bytes(&koff), bytes(&pix), bytes(&contig)];
            if p.amode == AMode::Const {
                let w = info.consts[1]
                    .as_ref()
                    .and_then(|w| w.as_f32())
                    .ok_or_else(|| info.err("conv weight is not constant f32"))?;
                let (m, k) = (p.m, p.k);
                let mut out = vec![0f32; m * k];
                for t in 0..m.div_ceil(MR) {
                    let mr = MR.min(m - t * MR);
                    for kk in 0..k {
                        for r in 0..mr {
                            out[t * MR * k + kk * mr + r] = w[(t * MR + r) * k + kk];
                        }
                    }
                }
                v.push(out.iter().flat_map(|x| x.to_le_bytes()).collect());
            }
            Ok(v)
        }
    }
}

/// Everything a task needs: node pointers and the microkernels.
pub(super) struct Ctx<'a> {
    pub ins: &'a [Value],
    pub out: Value,
    pub scratch: Value,
    pub extra: &'a [Value],
    pub ukrs: &'a HashMap<Routine, FuncRef>,
}

impl Ctx<'_> {
    /// The GEMM microkernel `key` (declared by [`Plan::routines`]).
    fn ukr(&self, key: UkrKey) -> FuncRef {
        self.ukrs[&Routine::Gemm(key)]
    }
}

/// `for i in lo..hi` with runtime bounds.
fn loop_range(e: &mut E, lo: Value, hi: Value, body: &mut dyn FnMut(&mut E, Value)) {
    let iv = e.b.declare_var(types::I64);
    e.b.def_var(iv, lo);
    let header = e.b.create_block();
    let bodyb = e.b.create_block();
    let exit = e.b.create_block();
    e.b.ins().jump(header, &[]);
    e.b.switch_to_block(header);
    let i = e.b.use_var(iv);
    let c = e.b.ins().icmp(IntCC::SignedLessThan, i, hi);
    e.b.ins().brif(c, bodyb, &[], exit, &[]);
    e.b.switch_to_block(bodyb);
    e.b.seal_block(bodyb);
    body(e, i);
    let i2 = e.b.ins().iadd_imm_s(i, 1);
    e.b.def_var(iv, i2);
    e.b.ins().jump(header, &[]);
    e.b.seal_block(header);
    e.b.switch_to_block(exit);
    e.b.seal_block(exit);
}

/// `if c { then() } else { els() }`.
fn if_else(e: &mut E, c: Value, then: &mut dyn FnMut(&mut E), els: &mut dyn FnMut(&mut E)) {
    let tb = e.b.create_block();
    let eb = e.b.create_block();
    let join = e.b.create_block();
    e.b.ins().brif(c, tb, &[], eb, &[]);
    e.b.switch_to_block(tb);
    e.b.seal_block(tb);
    then(e);
    e.b.ins().jump(join, &[]);
    e.b.switch_to_block(eb);
    e.b.seal_block(eb);
    els(e);
    e.b.ins().jump(join, &[]);
    e.b.switch_to_block(join);
    e.b.seal_block(join);
}

/// Serial work before the tasks: the zero-padded input copy of a conv.
pub(super) fn emit_pre(e: &mut E, _info: &NodeInfo, p: &Plan, c: &Ctx) -> R<()> {
    // All buffer slots free.
    let z = e.ic(0);
    e.b.ins().store(mf(), z, c.scratch, p.mask_off() as i32);
    if let Kind::Tn = p.kind {
        tn::emit_pack(e, p, c);
        return Ok(());
    }
    // (Depthwise convs read their input in place: see `dw`.)
    let Kind::Conv(g) = &p.kind else {
        return Ok(());
    };
    if p.pad_bytes() == 0 {
        return Ok(());
    }
    if p.dc_deinterleaved(g) {
        emit_deinterleaved_copy(e, g, c);
        return Ok(());
    }
    // Zero only the border: per plane, the span before the first interior row's data,
    // the gaps between interior rows (right pad + next left pad) and the span after the
    // last one.
    let plane_b = (g.hp * g.wp * 4) as i64;
    let head = g.ph * g.wp + g.pw;
    let gap = g.wp - g.w;
    let tail_at = (g.ph + g.h.max(1) - 1) * g.wp + g.pw + g.w;
    let z = e.ic(0);
    e.loop_offs((g.n * g.c) as i64, &[z], &[plane_b], &mut |e, _i, o| {
        let base = e.b.ins().iadd(c.scratch, o[0]);
        if g.h == 0 || g.w == 0 {
            zero_span(e, base, g.hp * g.wp);
            return;
        }
        zero_span(e, base, head);
        if gap > 0 && g.h > 1 {
            let first = ((head + g.w) * 4) as i64;
            let r0 = e.b.ins().iadd_imm_s(base, first);
            e.loop_offs(
                (g.h - 1) as i64,
                &[r0],
                &[(g.wp * 4) as i64],
                &mut |e, _r, q| {
                    zero_span(e, q[0], gap);
                },
            );
        }
        let t = e.b.ins().iadd_imm_s(base, (tail_at * 4) as i64);
        zero_span(e, t, g.hp * g.wp - tail_at);
    });
    // The interior, row by row.
    let d0 =
        e.b.ins()
            .iadd_imm_s(c.scratch, ((g.ph * g.wp + g.pw) * 4) as i64);
    e.loop_offs(
        (g.n * g.c) as i64,
        &[c.ins[0], d0],
        &[(g.h * g.w * 4) as i64, plane_b],
        &mut |e, _i, o| {
            e.loop_offs(
                g.h as i64,
                &[o[0], o[1]],
                &[(g.w * 4) as i64, (g.wp * 4) as i64],
                &mut |e, _r, q| copy_span(e, q[0], q[1], g.w),
            );
        },
    );
    Ok(())
}

/// The padded input copy of a stride-2 conv run by the direct-conv kernel ([`Plan::dc_key`]):
/// each padded row of `wp` floats holds its even columns, then its odd columns (`ceil(wp / 2)`
/// and `floor(wp / 2)` floats), so a tap of 8 stride-2 outputs is one contiguous load. Zeroes
/// the pad rows and, per input row, its pad columns; the interior by f32x4 pairs split into
/// even and odd lanes.
fn emit_deinterleaved_copy(e: &mut E, g: &ConvGeom, c: &Ctx) {
    let half = g.wp.div_ceil(2);
    // Position of padded column j in its row.
    let pos = |j: usize| {
        if j.is_multiple_of(2) {
            j / 2
        } else {
            half + j / 2
        }
    };
    let plane_b = (g.hp * g.wp * 4) as i64;
    let row_b = (g.wp * 4) as i64;
    let z = e.ic(0);
    let zs = e.fc(types::F32, 0.0);
    let pads: Vec<usize> = (0..g.pw).chain(g.pw + g.w..g.wp).collect();
    e.loop_offs(
        (g.n * g.c) as i64,
        &[z, z],
        &[plane_b, (g.h * g.w * 4) as i64],
        &mut |e, _i, o| {
            let base = e.b.ins().iadd(c.scratch, o[0]);
            zero_span(e, base, g.ph * g.wp);
            let bot = e.b.ins().iadd_imm_s(base, (g.ph + g.h) as i64 * row_b);
            zero_span(e, bot, (g.hp - g.ph - g.h) * g.wp);
            let r0 = e.b.ins().iadd_imm_s(base, g.ph as i64 * row_b);
            let s0 = e.b.ins().iadd(c.ins[0], o[1]);
            e.loop_offs(
                g.h as i64,
                &[r0, s0],
                &[row_b, (g.w * 4) as i64],
                &mut |e, _r, q| {
                    for &j in &pads {
                        e.b.ins().store(mf(), zs, q[0], (pos(j) * 4) as i32);
                    }
                    // x[i], x[i + 2], .. (padded columns i + pw, ..: one part) and x[i + 1],
                    // x[i + 3], .. (the other), 4 consecutive positions each.
                    let nv = g.w / 8;
                    let ev0 = pos(g.pw);
                    let od0 = pos(g.pw + 1);
                    e.loop_offs(nv as i64, &[q[1], z, z], &[32, 16, 16], &mut |e, _v, t| {
                        let a = e.b.ins().load(F32X4, mf(), t[0], 0);
                        let b = e.b.ins().load(F32X4, mf(), t[0], 16);
                        let ev = shuf(e, a, b, [0, 2, 4, 6]);
                        let od = shuf(e, a, b, [1, 3, 5, 7]);
                        let d = e.b.ins().iadd(q[0], t[1]);
                        e.b.ins().store(mf(), ev, d, (ev0 * 4) as i32);
                        e.b.ins().store(mf(), od, d, (od0 * 4) as i32);
                    });
                    for i in nv * 8..g.w {
                        let x = e.b.ins().load(types::F32, mf(), q[1], (i * 4) as i32);
                        e.b.ins().store(mf(), x, q[0], (pos(i + g.pw) * 4) as i32);
                    }
                },
            );
        },
    );
}

/// Copy `len` floats from `s` to `d`: `f32x4` groups of 4 (unrolled when short, else a
/// loop), then the tail.
fn copy_span(e: &mut E, s: Value, d: Value, len: usize) {
    let group = |e: &mut E, s: Value, d: Value, nv: usize| {
        let v: Vec<Value> = (0..nv)
            .map(|l| e.b.ins().load(F32X4, mf(), s, (l * 16) as i32))
            .collect();
        for (l, &x) in v.iter().enumerate() {
            e.b.ins().store(mf(), x, d, (l * 16) as i32);
        }
    };
    let nv = len / 4;
    if nv <= 16 {
        group(e, s, d, nv);
    } else {
        e.loop_offs((nv / 4) as i64, &[s, d], &[64, 64], &mut |e, _i, o| {
            group(e, o[0], o[1], 4)
        });
        let o = (nv / 4 * 64) as i64;
        let s2 = e.b.ins().iadd_imm_s(s, o);
        let d2 = e.b.ins().iadd_imm_s(d, o);
        group(e, s2, d2, nv % 4);
    }
    for t in nv * 4..len {
        let x = e.b.ins().load(types::F32, mf(), s, (t * 4) as i32);
        e.b.ins().store(mf(), x, d, (t * 4) as i32);
    }
}

/// Serial work after the tasks: Gemm's general C term and fused steps the tile store skipped.
pub(super) fn emit_post(e: &mut E, info: &NodeInfo, p: &Plan, c: &Ctx) -> R<()> {
    let oty = &info.outs[0];
    if let Some(beta) = p.gemm_c_post {
        let o = Opd::dense(c.out, oty);
        let cc = Opd::bcast(c.ins[2], &info.ins[2], &oty.shape);
        map(
            e,
            info,
            &oty.shape,
            o.clone(),
            &[o, cc],
            &Ew::AddScaled(beta),
        )?;
    }
    if let Op::Fused { steps, .. } = info.op {
        if p.rest < steps.len() {
            apply_chain(e, info, c.ins, c.out, &steps[p.rest..])?;
        }
    }
    Ok(())
}

/// The units `[t U / T, (t + 1) U / T)` of task `t` (U units, T tasks).
pub(super) fn task_units(e: &mut E, p: &Plan, t: Value) -> (Value, Value) {
    let units = p.units() as i64;
    let tasks = p.tasks as i64;
    let a = e.b.ins().imul_imm_s(t, units);
    let lo = e.b.ins().udiv_imm_u(a, tasks);
    let t1 = e.b.ins().iadd_imm_s(t, 1);
    let b = e.b.ins().imul_imm_s(t1, units);
    let hi = e.b.ins().udiv_imm_u(b, tasks);
    (lo, hi)
}

/// Store the constant `x` (an `f32`) to floats `[from, to)` of `d` (vectors, then scalars).
pub(super) fn fill(e: &mut E, d: Value, from: usize, to: usize, x: f32) {
    let v = e.fc(F32X4, x);
    let s = e.fc(types::F32, x);
    let mut k = from;
    while k + 4 <= to {
        e.b.ins().store(mf(), v, d, (k * 4) as i32);
        k += 4;
    }
    while k < to {
        e.b.ins().store(mf(), s, d, (k * 4) as i32);
        k += 1;
    }
}

/// Store zeros to `len` floats at `d`: unrolled when short, else an `f32x4` loop and a tail.
fn zero_span(e: &mut E, d: Value, len: usize) {
    if len <= 32 {
        fill(e, d, 0, len, 0.0);
        return;
    }
    let zv = e.fc(F32X4, 0.0);
    let z = e.ic(0);
    e.loop_offs((len / 16) as i64, &[z], &[64], &mut |e, _i, o| {
        let a = e.b.ins().iadd(d, o[0]);
        for l in 0..4 {
            e.b.ins().store(mf(), zv, a, l * 16);
        }
    });
    fill(e, d, len / 16 * 16, len, 0.0);
}

/// The running task's buffers: a claimed slot's packing space (after the padded input copy
/// at the start of scratch), or scratch itself when the node packs nothing. Release the slot
/// (if any) at the task's end.
pub(super) fn task_buffers(e: &mut E, p: &Plan, c: &Ctx) -> (Option<Value>, Value) {
    let slot = (p.pack_bytes() > 0).then(|| acquire_slot(e, p, c));
    let buf = match slot {
        Some(slot) => {
            let o = e.b.ins().imul_imm_s(slot, p.pack_bytes() as i64);
            let o = e.b.ins().iadd_imm_s(o, p.pad_bytes() as i64);
            e.b.ins().iadd(c.scratch, o)
        }
        None => c.scratch,
    };
    (slot, buf)
}

/// Where unit `u` lies: M part `mp` (first row `row0`) of column unit `ci` (first column
/// `col0`) of image `img`; units run M parts fastest, then column units, then images
/// (`cu = img * units_per_img + ci` counts column units over all images).
pub(super) struct UnitAt {
    pub mp: Value,
    pub cu: Value,
    pub img: Value,
    pub ci: Value,
    pub col0: Value,
    pub row0: Value,
}

pub(super) fn unit_at(e: &mut E, p: &Plan, u: Value) -> UnitAt {
    let mparts = p.mparts() as i64;
    let upi = p.units_per_img() as i64;
    let mp = e.b.ins().urem_imm_u(u, mparts);
    let u2 = e.b.ins().udiv_imm_u(u, mparts);
    let img = e.b.ins().udiv_imm_u(u2, upi);
    let ci = e.b.ins().urem_imm_u(u2, upi);
    let col0 = e.b.ins().imul_imm_s(ci, p.chunk as i64);
    let row0 = e.b.ins().imul_imm_s(mp, p.mrows as i64);
    UnitAt {
        mp,
        cu: u2,
        img,
        ci,
        col0,
        row0,
    }
}

/// Claim a free buffer slot of the node (an index below `p.tasks`) for the running task.
/// A task's scratch buffers belong to the slot, not to the task index: a thread that runs
/// several tasks in a row (every task, at one thread) keeps reusing one warm set of
/// buffers. At most `p.tasks` tasks run at once, so a free slot always exists.
pub(super) fn acquire_slot(e: &mut E, p: &Plan, c: &Ctx) -> Value {
    let addr = e.b.ins().iadd_imm_s(c.scratch, p.mask_off() as i64);
    let head = e.b.create_block();
    let done = e.b.create_block();
    e.b.append_block_param(done, types::I64);
    e.b.ins().jump(head, &[]);
    e.b.switch_to_block(head);
    let m = e.b.ins().atomic_load(types::I64, mf(), addr);
    let free = e.b.ins().bnot(m);
    let slot = e.b.ins().ctz(free);
    let one = e.ic(1);
    let bit = e.b.ins().ishl(one, slot);
    let taken = e.b.ins().bor(m, bit);
    let old = e.b.ins().atomic_cas(mf(), addr, m, taken);
    let ok = e.b.ins().icmp(IntCC::Equal, old, m);
    e.b.ins().brif(ok, done, &[slot.into()], head, &[]);
    e.b.seal_block(head);
    e.b.switch_to_block(done);
    e.b.seal_block(done);
    e.b.block_params(done)[0]
}

/// Give the slot back.
pub(super) fn release_slot(e: &mut E, p: &Plan, c: &Ctx, slot: Value) {
    let addr = e.b.ins().iadd_imm_s(c.scratch, p.mask_off() as i64);
    let one = e.ic(1);
    let bit = e.b.ins().ishl(one, slot);
    let keep = e.b.ins().bnot(bit);
    e.b.ins()
        .atomic_rmw(types::I64, mf(), AtomicRmwOp::And, addr, keep);
}

/// The units of task `t` (of `p.tasks`).
pub(super) fn emit_task(e: &mut E, p: &Plan, c: &Ctx, t: Value) {
    if let Kind::Wino(g, r) = &p.kind {
        wino::emit_task(e, p, g, *r, c, t);
        return;
    }
    if let Kind::Pool(g) = &p.kind {
        pool::emit_task(e, p, g, c, t);
        return;
    }
    if let Kind::Tn = &p.kind {
        tn::emit_task(e, p, c, t);
        return;
    }
    let (lo, hi) = task_units(e, p, t);
    let (slot, pack) = task_buffers(e, p, c);
    let upi = p.units_per_img();
    let mparts = p.mparts();
    let last_cols = p.n - (upi - 1) * p.chunk;
    let last_rows = p.m - (mparts - 1) * p.mrows;
    loop_range(e, lo, hi, &mut |e, u| {
        let UnitAt {
            mp,
            img,
            ci,
            col0,
            row0,
            ..
        } = unit_at(e, p, u);
        let by_rows = |e: &mut E, ncols: usize| {
            if mparts == 1 || last_rows == p.mrows {
                emit_unit(e, p, c, pack, img, col0, ncols, row0, last_rows);
            } else {
                let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, mp, mparts as i64 - 1);
                if_else(
                    e,
                    is_last,
                    &mut |e| emit_unit(e, p, c, pack, img, col0, ncols, row0, last_rows),
                    &mut |e| emit_unit(e, p, c, pack, img, col0, ncols, row0, p.mrows),
                );
            }
        };
        if upi == 1 || last_cols == p.chunk {
            by_rows(e, last_cols);
        } else {
            let is_last = e.b.ins().icmp_imm_s(IntCC::Equal, ci, upi as i64 - 1);
            if_else(e, is_last, &mut |e| by_rows(e, last_cols), &mut |e| {
                by_rows(e, p.chunk)
            });
        }
    });
    if let Some(slot) = slot {
        release_slot(e, p, c, slot);
    }
}

/// One unit: `ncols` columns from column `col0` of image `img`, all rows, all of K.
#[allow(clippy::too_many_arguments)]
fn emit_unit(
    e: &mut E,
    p: &Plan,
    c: &Ctx,
    pack: Value,
    img: Value,
    col0: Value,
    ncols: usize,
    row0: Value,
    mrows: usize,
) {
    if let Kind::Dw(g) = &p.kind {
        dw::emit_dw(e, p, g, c, img, row0, mrows);
        return;
    }
    if let Kind::Conv(g) = &p.kind {
        let f = p.dc_key(g, ncols, mrows).map(Routine::Dc);
        if let Some(&f) = f.and_then(|k| c.ukrs.get(&k)) {
            // Window origin of pixel col0: input row `row * sh`, and position `col` of that
            // row (stride 1: column `col`; stride 2, the deinterleaved copy: the even
            // column `2 col`).
            let xb = conv_image(e, p, g, c, img);
            let r = e.b.ins().udiv_imm_u(col0, g.ow as i64);
            let col = e.b.ins().urem_imm_u(col0, g.ow as i64);
            let ro = e.b.ins().imul_imm_s(r, (g.sh * g.wp * 4) as i64);
            let co = e.b.ins().imul_imm_s(col, 4);
            let xo = e.b.ins().iadd(ro, co);
            let xp = e.b.ins().iadd(xb, xo);
            let oo = e.b.ins().imul_imm_s(img, (p.m * p.n * 4) as i64);
            let ro = e.b.ins().imul_imm_s(row0, (p.n * 4) as i64);
            let co = e.b.ins().imul_imm_s(col0, 4);
            let oo = e.b.ins().iadd(oo, ro);
            let oo = e.b.ins().iadd(oo, co);
            let op = e.b.ins().iadd(c.out, oo);
            let ao = e.b.ins().imul_imm_s(row0, (p.k * 4) as i64);
            let ap = e.b.ins().iadd(c.extra[3], ao);
            let bp = match p.bias_port {
                Some(q) => {
                    let bo = e.b.ins().imul_imm_s(row0, 4);
                    e.b.ins().iadd(c.ins[q], bo)
                }
                None => ap,
            };
            e.b.ins().call(f, &[xp, op, ap, bp, col]);
            return;
        }
    }
    let kbs = p.kblocks();
    let nkb = kbs.len();
    let z = e.ic(0);
    if nkb == 1 {
        emit_kblock(
            e, p, c, pack, img, col0, ncols, row0, mrows, z, kbs[0], false, true,
        );
        return;
    }
    let kb = kbs[0];
    emit_kblock(
        e, p, c, pack, img, col0, ncols, row0, mrows, z, kb, false, false,
    );
    let kstart = e.ic(kb as i64);
    let mids = nkb as i64 - 2;
    e.loop_offs(mids, &[kstart], &[kb as i64], &mut |e, _i, o| {
        emit_kblock(
            e, p, c, pack, img, col0, ncols, row0, mrows, o[0], kb, true, false,
        );
    });
    let k0 = e.ic((p.k - kbs[nkb - 1]) as i64);
    emit_kblock(
        e,
        p,
        c,
        pack,
        img,
        col0,
        ncols,
        row0,
        mrows,
        k0,
        kbs[nkb - 1],
        true,
        true,
    );
}

/// Image `img` of a conv's input: its padded copy in scratch, or the input itself.
fn conv_image(e: &mut E, p: &Plan, g: &ConvGeom, c: &Ctx, img: Value) -> Value {
    let x = if p.pad_bytes() > 0 {
        c.scratch
    } else {
        c.ins[0]
    };
    let io = e.b.ins().imul_imm_s(img, (g.c * g.hp * g.wp * 4) as i64);
    e.b.ins().iadd(x, io)
}

/// One K block `[k0, k0 + kc)` of a unit: pack (conv), then every tile.
#[allow(clippy::too_many_arguments)]
fn emit_kblock(
    e: &mut E,
    p: &Plan,
    c: &Ctx,
    pack: Value,
    img: Value,
    col0: Value,
    ncols: usize,
    row0: Value,
    mrows: usize,
    k0: Value,
    kc: usize,
    acc: bool,
    last: bool,
) {
    let npan = ncols.div_ceil(NR);
    let full = ncols / NR;
    let nr_last = ncols % NR;
    let ptr = types::I64;
    // B panel j of this block lives at `bbase + j * bstep`.
    let (bbase, bstep) = match &p.kind {
        // Handled by `emit_dw` / `wino`.
        Kind::Dw(_) | Kind::Wino(..) | Kind::Pool(_) | Kind::Tn => (pack, 0),
        Kind::Mat => {
            // packed[(col0/16 + j)][k][16]
            let pan = e.b.ins().udiv_imm_u(col0, NR as i64);
            let o = e.b.ins().imul_imm_s(pan, (p.k * NR * 4) as i64);
            let ko = e.b.ins().imul_imm_s(k0, (NR * 4) as i64);
            let o = e.b.ins().iadd(o, ko);
            (e.b.ins().iadd(c.extra[0], o), (p.k * NR * 4) as i64)
        }
        Kind::Conv(g) => {
            let xb = conv_image(e, p, g, c, img);
            if conv_is_gemm(g) {
                // 1x1, stride 1, unpadded: the input is already B[C][H*W], row-major.
                let hw = (g.h * g.w * 4) as i64;
                let ko = e.b.ins().imul_imm_s(k0, hw);
                let co = e.b.ins().imul_imm_s(col0, 4);
                let o = e.b.ins().iadd(ko, co);
                let src = e.b.ins().iadd(xb, o);
                pack_b_rt(e, src, pack, ncols, kc, hw);
            } else {
                pack_panels(e, c, pack, xb, col0, npan, k0, kc);
            }
            (pack, (kc * NR * 4) as i64)
        }
        Kind::MatRt { b_img, .. } => {
            let io = e.b.ins().imul_imm_s(img, *b_img);
            let ko = e.b.ins().imul_imm_s(k0, (p.n * 4) as i64);
            let co = e.b.ins().imul_imm_s(col0, 4);
            let o = e.b.ins().iadd(io, ko);
            let o = e.b.ins().iadd(o, co);
            let src = e.b.ins().iadd(c.ins[1], o);
            pack_b_rt(e, src, pack, ncols, kc, (p.n * 4) as i64);
            (pack, (kc * NR * 4) as i64)
        }
    };
    let (a, lda) = match &p.kind {
        Kind::Dw(_) | Kind::Wino(..) | Kind::Pool(_) | Kind::Tn => (c.ins[1], 0),
        Kind::Mat => (c.ins[0], p.k as i64 * 4),
        Kind::MatRt { a_img, .. } => {
            let io = e.b.ins().imul_imm_s(img, *a_img);
            (e.b.ins().iadd(c.ins[0], io), p.k as i64 * 4)
        }
        Kind::Conv(_) => (c.ins[1], p.k as i64 * 4),
    };
    let ldc = p.n as i64 * 4;
    let amode = p.amode;
    let a = match amode {
        AMode::Const => c.extra[3],
        _ => {
            let ko = e.b.ins().imul_imm_s(k0, 4);
            e.b.ins().iadd(a, ko)
        }
    };
    let apack = if amode == AMode::Runtime {
        e.b.ins()
            .iadd_imm_s(pack, (p.pack_bytes() - p.apack_bytes()) as i64)
    } else {
        pack
    };
    let io = e.b.ins().imul_imm_s(img, (p.m * p.n * 4) as i64);
    let co = e.b.ins().imul_imm_s(col0, 4);
    let cbase_off = e.b.ins().iadd(io, co);
    let kcv = e.ic(kc as i64);
    let ldav = e.ic(lda);
    let ldcv = e.ic(ldc);
    let ep = if last { p.ep.clone() } else { vec![] };
    let bias = p.bias_port.map(|q| c.ins[q]);
    let res = p.res_port.map(|q| c.ins[q]);
    let row_bias = matches!(p.kind, Kind::Conv(_));
    let _ = ptr;
    // One tile: `mr` rows at A/C row offsets, panel at `bp`, column offset `colb` (bytes).
    let tile = |e: &mut E,
                mr: usize,
                partial: bool,
                ablk: Value,
                arow: Value,
                crow: Value,
                rowb: Value,
                bp: Value,
                colb: Value| {
        let key = UkrKey {
            isa: p.isa,
            mr,
            pa: amode != AMode::Direct,
            half: partial && p.half_tail(nr_last),
            partial,
            acc,
            tn: false,
            ep: ep.clone(),
        };
        let f = c.ukr(key);
        let pa = match amode {
            AMode::Direct => e.b.ins().iadd(a, arow),
            AMode::Const => {
                let ko = e.b.ins().imul_imm_s(k0, (4 * mr) as i64);
                let o = e.b.ins().iadd(arow, ko);
                e.b.ins().iadd(a, o)
            }
            AMode::Runtime => {
                let rel = e.b.ins().isub(arow, ablk);
                let t = e.b.ins().udiv_imm_u(rel, lda);
                let o = e.b.ins().imul_imm_s(t, (kc * 4) as i64);
                e.b.ins().iadd(apack, o)
            }
        };
        let coff = e.b.ins().iadd(cbase_off, crow);
        let coff = e.b.ins().iadd(coff, colb);
        let pc = e.b.ins().iadd(c.out, coff);
        let nr = e.ic(if partial { nr_last as i64 } else { NR as i64 });
        let pb = match bias {
            Some(bv) => {
                if row_bias {
                    e.b.ins().iadd(bv, rowb)
                } else {
                    let cc = e.b.ins().iadd(co, colb);
                    e.b.ins().iadd(bv, cc)
                }
            }
            None => pc,
        };
        let pr = match res {
            Some(rv) => e.b.ins().iadd(rv, coff),
            None => pc,
        };
        e.b.ins()
            .call(f, &[pa, bp, pc, kcv, ldav, ldcv, nr, pb, pr]);
    };
    // Rows of one M block at row offset (a, c, bias) with `mc` rows, all panels.
    let mblock = |e: &mut E, mc: usize, ar: Value, cr: Value, br: Value| {
        let panel = |e: &mut E, partial: bool, bp: Value, colb: Value| {
            let nfull = mc / MR;
            e.loop_offs(
                nfull as i64,
                &[ar, cr, br],
                &[MR as i64 * lda, MR as i64 * ldc, MR as i64 * 4],
                &mut |e, _i, o| tile(e, MR, partial, ar, o[0], o[1], o[2], bp, colb),
            );
            let rem = mc % MR;
            if rem > 0 {
                let a2 = e.b.ins().iadd_imm_s(ar, (nfull * MR) as i64 * lda);
                let c2 = e.b.ins().iadd_imm_s(cr, (nfull * MR) as i64 * ldc);
                let b2 = e.b.ins().iadd_imm_s(br, (nfull * MR) as i64 * 4);
                tile(e, rem, partial, ar, a2, c2, b2, bp, colb);
            }
        };
        if amode == AMode::Runtime {
            let src = e.b.ins().iadd(a, ar);
            pack_a(e, src, apack, mc, kc, lda);
        }
        let zc = e.ic(0);
        e.loop_offs(
            full as i64,
            &[bbase, zc],
            &[bstep, (NR * 4) as i64],
            &mut |e, _j, o| {
                panel(e, false, o[0], o[1]);
            },
        );
        if nr_last > 0 {
            let bp = e.b.ins().iadd_imm_s(bbase, full as i64 * bstep);
            let colb = e.ic((full * NR * 4) as i64);
            panel(e, true, bp, colb);
        }
    };
    let mcb = p.mc;
    let nmb = mrows / mcb;
    let ar0 = e.b.ins().imul_imm_s(row0, lda);
    let cr0 = e.b.ins().imul_imm_s(row0, ldc);
    let br0 = e.b.ins().imul_imm_s(row0, 4);
    e.loop_offs(
        nmb as i64,
        &[ar0, cr0, br0],
        &[mcb as i64 * lda, mcb as i64 * ldc, mcb as i64 * 4],
        &mut |e, _i, o| mblock(e, mcb, o[0], o[1], o[2]),
    );
    if !mrows.is_multiple_of(mcb) {
        let ar = e.b.ins().iadd_imm_s(ar0, (nmb * mcb) as i64 * lda);
        let cr = e.b.ins().iadd_imm_s(cr0, (nmb * mcb) as i64 * ldc);
        let br = e.b.ins().iadd_imm_s(br0, (nmb * mcb) as i64 * 4);
        mblock(e, mrows % mcb, ar, cr, br);
    }
}

/// Pack patches `[k0, k0 + kc)` of columns `col0 .. col0 + 16 * npan` into `npan` panels of
/// `kc x 16` at `pack`; `xb` is this image's (padded) input.
#[allow(clippy::too_many_arguments)]
fn pack_panels(
    e: &mut E,
    c: &Ctx,
    pack: Value,
    xb: Value,
    col0: Value,
    npan: usize,
    k0: Value,
    kc: usize,
) {
    let (koff, pix, contig) = (c.extra[0], c.extra[1], c.extra[2]);
    let kb = e.b.ins().imul_imm_s(k0, 8);
    let kt = e.b.ins().iadd(koff, kb);
    let pixo = e.b.ins().imul_imm_s(col0, 8);
    let z = e.ic(0);
    e.loop_offs(
        npan as i64,
        &[z, pixo],
        &[(kc * NR * 4) as i64, (NR * 8) as i64],
        &mut |e, _j, o| {
            let dst = e.b.ins().iadd(pack, o[0]);
            // flags index = pixel / 4 -> byte offset (pixel * 8) / 4
            let fo = e.b.ins().ushr_imm_u(o[1], 2);
            let flags: Vec<Value> = (0..4)
                .map(|g| {
                    let f = e.b.ins().iadd_imm_s(fo, (g * 8) as i64);
                    e.ld(types::I64, contig, f)
                })
                .collect();
            let f01 = e.b.ins().band(flags[0], flags[1]);
            let f23 = e.b.ins().band(flags[2], flags[3]);
            let f = e.b.ins().band(f01, f23);
            // Flags are 0, 1 or 2: bit 0 of the AND is set iff all are 1, bit 1 iff all are 2.
            let all = e.b.ins().band_imm_u(f, 1);
            let all2 = e.b.ins().band_imm_u(f, 2);
            // Base pointer of every pixel of the panel.
            let po: Vec<Value> = (0..NR)
                .map(|l| {
                    let off = e.b.ins().iadd_imm_s(o[1], (l * 8) as i64);
                    let pv = e.ld(types::I64, pix, off);
                    e.b.ins().iadd(xb, pv)
                })
                .collect();
            let zz = e.ic(0);
            if_else(
                e,
                all,
                &mut |e| {
                    // Every group of 4 pixels is contiguous: one offset load per k.
                    e.loop_offs(kc as i64, &[zz, zz], &[8, 64], &mut |e, _k, q| {
                        let ko = e.ld(types::I64, kt, q[0]);
                        let d = e.b.ins().iadd(dst, q[1]);
                        for g in 0..4 {
                            let v = e.ld(F32X4, po[4 * g], ko);
                            e.b.ins().store(mf(), v, d, (g * 16) as i32);
                        }
                    });
                },
                &mut |e| {
                    if_else(
                        e,
                        all2,
                        &mut |e| {
                            // Every group reads every other float (stride 2): two loads and
                            // an even-lane shuffle per group and k.
                            e.loop_offs(kc as i64, &[zz, zz], &[8, 64], &mut |e, _k, q| {
                                let ko = e.ld(types::I64, kt, q[0]);
                                let d = e.b.ins().iadd(dst, q[1]);
                                for g in 0..4 {
                                    let v = evens(e, po[4 * g], ko);
                                    e.b.ins().store(mf(), v, d, (g * 16) as i32);
                                }
                            });
                        },
                        &mut |e| {
                            for g in 0..4 {
                                let dg = e.b.ins().iadd_imm_s(dst, (g * 16) as i64);
                                let pg = &po[4 * g..4 * g + 4];
                                let is1 = e.b.ins().icmp_imm_s(IntCC::Equal, flags[g], 1);
                                let is2 = e.b.ins().icmp_imm_s(IntCC::Equal, flags[g], 2);
                                let vector = |e: &mut E, stride2: bool| {
                                    e.loop_offs(kc as i64, &[zz, zz], &[8, 64], &mut |e, _k, q| {
                                        let ko = e.ld(types::I64, kt, q[0]);
                                        let v = if stride2 {
                                            evens(e, pg[0], ko)
                                        } else {
                                            e.ld(F32X4, pg[0], ko)
                                        };
                                        e.st(v, dg, q[1]);
                                    });
                                };
                                if_else(e, is1, &mut |e| vector(e, false), &mut |e| {
                                    if_else(e, is2, &mut |e| vector(e, true), &mut |e| {
                                        e.loop_offs(
                                            kc as i64,
                                            &[zz, zz],
                                            &[8, 64],
                                            &mut |e, _k, q| {
                                                let ko = e.ld(types::I64, kt, q[0]);
                                                let d = e.b.ins().iadd(dg, q[1]);
                                                for l in 0..4 {
                                                    let v = e.ld(types::F32, pg[l], ko);
                                                    e.b.ins().store(mf(), v, d, (l * 4) as i32);
                                                }
                                            },
                                        );
                                    })
                                });
                            }
                        },
                    );
                },
            );
        },
    );
}

/// Lanes `[l0, l1, l2, l3]` of the 8 lanes of `a` (0-3) and `b` (4-7), two `f32x4`.
pub(super) fn shuf(e: &mut E, a: Value, b: Value, lanes: [u8; 4]) -> Value {
    use cranelift_codegen::ir::{ConstantData, Endianness, MemFlagsData};
    let le = MemFlagsData::new().with_endianness(Endianness::Little);
    let a8 = e.b.ins().bitcast(types::I8X16, le, a);
    let b8 = e.b.ins().bitcast(types::I8X16, le, b);
    let mask: Vec<u8> = lanes
        .iter()
        .flat_map(|&l| (0..4).map(move |k| l * 4 + k))
        .collect();
    let imm = e.b.func.dfg.immediates.push(ConstantData::from(mask));
    let r = e.b.ins().shuffle(a8, b8, imm);
    e.b.ins().bitcast(F32X4, le, r)
}

/// Floats 0, 2, 4, 6 from `p + off` (reads 8 floats less one: the caller guarantees the
/// eighth is inside the buffer).
fn evens(e: &mut E, p: Value, off: Value) -> Value {
    let a = e.b.ins().iadd(p, off);
    let lo = e.b.ins().load(F32X4, mf(), a, 0);
    let hi = e.b.ins().load(F32X4, mf(), a, 16);
    shuf(e, lo, hi, [0, 2, 4, 6])
}

/// Pack `mc` rows of A (row 0 at `src`, rows `lda` bytes apart, `kc` floats each) into row
/// tiles of `MR` (`[kc][MR]`, the last tile `[kc][mc % MR]`) at `dst`.
fn pack_a(e: &mut E, src: Value, dst: Value, mc: usize, kc: usize, lda: i64) {
    let nfull = mc / MR;
    let tiles = |e: &mut E, mr: usize, s0: Value, d0: Value| {
        let zz = e.ic(0);
        e.loop_offs(
            kc as i64,
            &[zz, zz],
            &[4, (4 * mr) as i64],
            &mut |e, _k, q| {
                let s = e.b.ins().iadd(s0, q[0]);
                let d = e.b.ins().iadd(d0, q[1]);
                let v: Vec<Value> = (0..mr)
                    .map(|r| e.b.ins().load(types::F32, mf(), s, (r as i64 * lda) as i32))
                    .collect();
                for (r, &x) in v.iter().enumerate() {
                    e.b.ins().store(mf(), x, d, (r * 4) as i32);
                }
            },
        );
    };
    e.loop_offs(
        nfull as i64,
        &[src, dst],
        &[MR as i64 * lda, (MR * kc * 4) as i64],
        &mut |e, _t, o| tiles(e, MR, o[0], o[1]),
    );
    if !mc.is_multiple_of(MR) {
        let s = e.b.ins().iadd_imm_s(src, (nfull * MR) as i64 * lda);
        let d = e.b.ins().iadd_imm_s(dst, (nfull * MR * kc * 4) as i64);
        tiles(e, mc % MR, s, d);
    }
}

/// Pack `kc` rows x `ncols` columns of a row-major B (`src` at the block's top-left, rows
/// `ldb` bytes apart) into panels of `[kc][16]` at `dst`, zero-padding the last panel.
/// Deep blocks (`kc > 32`) row by row: each row is read front to back and scattered over the
/// panels (measured on MobileNetV2's projects, K = 96, 144: a third less packing time than
/// panel by panel, which reads `kc` rows one line at a time); shallow ones panel by panel
/// (K = 16 at 112x112: row by row was slower).
fn pack_b_rt(e: &mut E, src: Value, dst: Value, ncols: usize, kc: usize, ldb: i64) {
    if kc <= 32 {
        pack_b_panels(e, src, dst, ncols, kc, ldb);
        return;
    }
    let full = ncols / NR;
    let rest = ncols % NR;
    let pstep = (kc * NR * 4) as i64;
    let zv = e.fc(F32X4, 0.0);
    e.loop_offs(kc as i64, &[src, dst], &[ldb, 64], &mut |e, _k, q| {
        let (sk, dk) = (q[0], q[1]);
        e.loop_offs(
            full as i64,
            &[sk, dk],
            &[(NR * 4) as i64, pstep],
            &mut |e, _j, o| {
                let v: Vec<Value> = (0..4)
                    .map(|l| e.b.ins().load(F32X4, mf(), o[0], l * 16))
                    .collect();
                for (l, &x) in v.iter().enumerate() {
                    e.b.ins().store(mf(), x, o[1], (l * 16) as i32);
                }
            },
        );
        if rest > 0 {
            let s = e.b.ins().iadd_imm_s(sk, (full * NR * 4) as i64);
            let d = e.b.ins().iadd_imm_s(dk, full as i64 * pstep);
            for l in 0..4 {
                e.b.ins().store(mf(), zv, d, l * 16);
            }
            for j in 0..rest {
                let x = e.b.ins().load(types::F32, mf(), s, (j * 4) as i32);
                e.b.ins().store(mf(), x, d, (j * 4) as i32);
            }
        }
    });
}

/// Panel by panel: [`pack_b_rt`] for shallow blocks (`kc` rows of one line each per panel).
fn pack_b_panels(e: &mut E, src: Value, dst: Value, ncols: usize, kc: usize, ldb: i64) {
    let full = ncols / NR;
    let rest = ncols % NR;
    let pstep = (kc * NR * 4) as i64;
    e.loop_offs(
        full as i64,
        &[src, dst],
        &[(NR * 4) as i64, pstep],
        &mut |e, _j, o| {
            let (s0, d0) = (o[0], o[1]);
            let zz = e.ic(0);
            e.loop_offs(kc as i64, &[zz, zz], &[ldb, 64], &mut |e, _k, q| {
                let s = e.b.ins().iadd(s0, q[0]);
                let d = e.b.ins().iadd(d0, q[1]);
                let v: Vec<Value> = (0..4)
                    .map(|l| e.b.ins().load(F32X4, mf(), s, l * 16))
                    .collect();
                for (l, &x) in v.iter().enumerate() {
                    e.b.ins().store(mf(), x, d, (l * 16) as i32);
                }
            });
        },
    );
    if rest > 0 {
        let s0 = e.b.ins().iadd_imm_s(src, (full * NR * 4) as i64);
        let d0 = e.b.ins().iadd_imm_s(dst, full as i64 * pstep);
        let zv = e.fc(F32X4, 0.0);
        let zz = e.ic(0);
        e.loop_offs(kc as i64, &[zz, zz], &[ldb, 64], &mut |e, _k, q| {
            let s = e.b.ins().iadd(s0, q[0]);
            let d = e.b.ins().iadd(d0, q[1]);
            for l in 0..4 {
                e.b.ins().store(mf(), zv, d, l * 16);
            }
            for j in 0..rest {
                let x = e.b.ins().load(types::F32, mf(), s, (j * 4) as i32);
                e.b.ins().store(mf(), x, d, (j * 4) as i32);
            }
        });
    }
}
