//! The per-node decision of the x64 path: which strategy ([`Strategy`]) a node takes, its GEMM
//! shape, blocking, epilogue and task split ([`KernelPlan`]), and every assembled routine it calls.

use super::asm::depthwise::DepthwiseKey;
use super::asm::{Epilogue, Isa, MicrokernelKey, Routine, MR, NR};
use super::int8::{self, Int8Plan};
use super::matrix_transpose::{self, MatrixGeometry};
use super::pairs::{self, DepthwiseAfter};
use super::sparse::{self, SparseKind, SparsePlan};
use super::tap_classes::{self, TapClasses};
use super::{depthwise, lstm, pool, small_map, softmax, winograd};
use crate::error::Result;
use crate::node::{base_info, NodeInfo};
use crate::ops::conv::{conv_geometry, conv_is_gemm, ConvGeometry};
use crate::ops::pool::{maxpool2d_geometry, MaxPoolGeometry};
use crate::target::Target;
use optc_ir::{BinaryOp, DType, FusedStep, Op, TensorType, UnaryOp};

/// At most this many tasks per node (each conv task owns a `KC x chunk` packing buffer).
pub(crate) const MAX_TASKS: usize = 16;

pub(super) enum Strategy {
    /// `C[mt, n] = A[mt, k] @ B` with B packed (`extra[0]`), A = input 0.
    GemmConstantB,
    /// `C[i] = A[i] @ B[i]` with B an input (packed per unit and K block at run time);
    /// images `i` are the batch (B 2-D: one image, A's batch dims folded into M).
    GemmRuntimeB { a_image: i64, b_image: i64 },
    /// Depthwise conv (one input channel per output channel), vectorized along output rows,
    /// the epilogue applied in registers; units are channel groups.
    Depthwise(ConvGeometry),
    /// Implicit GEMM: A = weights (input 1), B = patches of input 0 (padded copy in scratch).
    ImplicitGemm(ConvGeometry),
    /// Winograd F(2x2, 3x3) (see [`winograd`]): `n` counts 2x2 output tiles (tile columns padded
    /// to a multiple of 4), `k` is C, `chunk` tiles per unit.
    /// The `usize` is the output tile size r (F(r x r, 3x3), r = 2 or 4).
    Winograd(ConvGeometry, usize),
    /// 2-D MaxPool (see [`pool`]): `m` planes, units of `mrows` planes.
    MaxPool(MaxPoolGeometry),
    /// 1x1 conv on a small map with the GEMM roles swapped (see [`small_map`]): pixels are the
    /// microkernel rows, output channels the 16-wide panels of the packed weights
    /// (`extra[0]`); units of `mrows` channels.
    SmallMap,
    /// A quantized contraction on the int8 microkernels (see [`int8`]): `k` counts K groups.
    Int8(Box<Int8Plan>),
    /// A contraction with a mostly-zero constant weight (see [`sparse`]): `m` rows of the
    /// weight (conv output channels, MatMul output features), `n` columns (pixels, A's rows).
    Sparse(Box<SparsePlan>),
    /// Softmax over contiguous rows (AVX-512, see [`softmax`]): `m` rows of `n` floats,
    /// units of `mrows` rows; fused steps run after the rows, in slices.
    Softmax,
    /// An LSTM step's gates (AVX-512, see [`lstm`]): `m` rows (the batch) of `n` hidden
    /// units, all in one routine call; `cell`: with a previous cell state (else zero).
    LstmCell { cell: bool },
    /// A transpose of matrices (AVX-512, see [`matrix_transpose`]): `m` units, strips of
    /// 16 input rows or columns.
    MatrixTranspose(MatrixGeometry),
}

/// How the microkernels read A.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ALayout {
    /// Rows of A in place (`lda` apart).
    InPlace,
    /// Packed at compile time (constant conv weights, `extra[3]`): per K block `[k0, k0 +
    /// kc)` (at `k0 M` floats), row tiles of `MR` (the last one `M % MR`) stored `[kc][mr]`,
    /// the tile of row `r` at `r kc` floats.
    PackedAtCompileTime,
    /// Packed per (M block, K block) at run time into the task's scratch.
    PackedAtRunTime,
}

/// The tiles over a unit's columns: `count` tiles of `NR` columns (`2 NR` when `wide`), one
/// panel (two when wide) apart, then at most one last tile (`tail`).
pub(super) struct ColumnTiles {
    pub wide: bool,
    pub count: usize,
    pub tail: Option<ColumnTile>,
}

/// The columns of a microkernel tile: from panel `panel` (relative to the unit), one panel
/// or two (`wide`, AVX-512), or the first 8 columns of one (`half`, AVX2); `valid` columns
/// (partial when not all of its `NR` or `2 NR`).
#[derive(Clone, Copy)]
pub(super) struct ColumnTile {
    pub panel: usize,
    pub wide: bool,
    pub half: bool,
    pub valid: usize,
}

impl ColumnTile {
    pub fn partial(&self) -> bool {
        self.valid < if self.wide { 2 * NR } else { NR }
    }
}

pub(crate) struct KernelPlan {
    pub(super) kind: Strategy,
    pub(super) a_layout: ALayout,
    pub(super) m: usize,
    pub(super) n: usize,
    pub(super) k: usize,
    pub(super) nimg: usize,
    pub(super) epilogue: Vec<Epilogue>,
    pub(super) bias_port: Option<usize>,
    pub(super) res_port: Option<usize>,
    /// Fused steps from this index on are applied afterwards by the generic chain pass.
    pub(super) rest: usize,
    /// Gemm's `beta * C` term applied afterwards (when it is not an epilogue step).
    pub(super) gemm_c_post: Option<f32>,
    /// Columns per work unit (a multiple of `NR`).
    pub(super) chunk: usize,
    /// Rows per work unit (a multiple of `MR`, or all of M).
    pub(super) mrows: usize,
    /// Depth of one K block: a 16-column B panel of `kc` rows stays in L1d
    /// ([`Target::blocking`]; 256 for a 32 KiB L1d).
    pub(super) kc: usize,
    /// Rows of one M block: the `mc x kc` block of A stays in L2 (144 for 512 KiB).
    pub(super) mc: usize,
    pub(crate) tasks: usize,
    /// Microkernel instruction set.
    pub(super) isa: Isa,
    /// A conv whose images have few output pixels each: 0, or the pixels of one image when
    /// the images are folded into the GEMM's columns (`n` = images x pixels, `nimg` = 1; the
    /// patch tables span the images; the tiles store into a buffer in scratch, `[m][n]`,
    /// reordered into the output `[image][m][pixels]` after the tasks). See [`folds`].
    pub(super) fold: usize,
    /// A folded conv computed class by class of its pixels, only the taps each reads
    /// ([`super::tap_classes`]): `n` counts its columns (fillers included), `kc` is `cg`.
    pub(super) taps: Option<Box<TapClasses>>,
    /// A pair's depthwise conv ([`super::pairs`]): each unit's rows, computed into the
    /// task's buffer, are its input channels.
    pub(super) depthwise_after: Option<Box<DepthwiseAfter>>,
}

/// Whether an implicit-GEMM conv folds its images into the GEMM's columns: several images of
/// at most a panel's output pixels (16) each, which would each fill one panel partly (a
/// batch of 1-D convs over short windows: silero-vad's STFT and encoder over 128 frames,
/// 1-4 pixels per image) or take the narrow tiles (16 pixels: digits_cnn's 4x4 maps ran
/// 4.55 -> 4.31 ms folded, on `mr x 32` tiles), one conv group, no residual (its input is
/// laid out as the output, not as the tiles) or column bias.
pub(super) fn folds(g: &ConvGeometry, epilogue: &[Epilogue], res_port: Option<usize>) -> bool {
    g.n > 1
        && g.groups == 1
        && g.oh * g.ow <= NR
        && res_port.is_none()
        && !epilogue.contains(&Epilogue::BiasCol)
}

impl KernelPlan {
    /// The geometry of a conv run by tap classes ([`KernelPlan::taps`]).
    pub(super) fn tap_geometry(&self) -> Option<&ConvGeometry> {
        match (&self.taps, &self.kind) {
            (Some(_), Strategy::ImplicitGemm(g)) => Some(g),
            _ => None,
        }
    }
    pub(super) fn units_per_img(&self) -> usize {
        self.n.div_ceil(self.chunk)
    }
    pub(super) fn mparts(&self) -> usize {
        self.m.div_ceil(self.mrows)
    }
    /// Columns of an image's last column unit (the others have `chunk`).
    pub(super) fn last_unit_cols(&self) -> usize {
        self.n - (self.units_per_img() - 1) * self.chunk
    }
    /// Rows of the last row part (the others have `mrows`).
    pub(super) fn last_part_rows(&self) -> usize {
        self.m - (self.mparts() - 1) * self.mrows
    }
    /// Whether the generated code reads input `port` through its pointer: not the
    /// constant weights the plan packs at compile time (they live in `derived` data).
    pub fn reads_input(&self, port: usize) -> bool {
        if let Strategy::Int8(q) = &self.kind {
            return q.reads_input(port);
        }
        let packed = match &self.kind {
            Strategy::GemmConstantB | Strategy::Winograd(..) | Strategy::SmallMap => true,
            Strategy::ImplicitGemm(_) => self.a_layout == ALayout::PackedAtCompileTime,
            Strategy::Sparse(_) => true,
            Strategy::GemmRuntimeB { .. }
            | Strategy::Depthwise(_)
            | Strategy::MaxPool(_)
            | Strategy::Softmax
            | Strategy::LstmCell { .. }
            | Strategy::MatrixTranspose(_)
            | Strategy::Int8(_) => false,
        };
        !(packed && port == 1)
    }
    /// Whether a last panel of `tail` valid columns uses the 8-column (half) microkernel.
    pub(super) fn half_tail(&self, tail: usize) -> bool {
        self.isa == Isa::Avx2 && tail <= NR / 2
    }
    /// How the GEMM driver covers `ncols` columns with microkernel tiles: AVX-512 takes
    /// panels two at a time (`mr x 32` wide tiles), AVX2 one at a time.
    pub(super) fn column_tiles(&self, ncols: usize) -> ColumnTiles {
        let full = ncols / NR;
        let rest = ncols % NR;
        if self.isa == Isa::Avx512 {
            let tail = match (full % 2 == 1, rest > 0) {
                // The last full panel and the partial one: a partial wide tile.
                (true, true) => Some(ColumnTile {
                    panel: full - 1,
                    wide: true,
                    half: false,
                    valid: NR + rest,
                }),
                (true, false) => Some(ColumnTile {
                    panel: full - 1,
                    wide: false,
                    half: false,
                    valid: NR,
                }),
                (false, true) => Some(ColumnTile {
                    panel: full,
                    wide: false,
                    half: false,
                    valid: rest,
                }),
                (false, false) => None,
            };
            ColumnTiles {
                wide: true,
                count: full / 2,
                tail,
            }
        } else {
            ColumnTiles {
                wide: false,
                count: full,
                tail: (rest > 0).then(|| ColumnTile {
                    panel: full,
                    wide: false,
                    half: self.half_tail(rest),
                    valid: rest,
                }),
            }
        }
    }
    pub fn units(&self) -> usize {
        self.nimg * self.units_per_img() * self.mparts()
    }
    /// Bytes of the serial pre-pass's buffer at the start of scratch: the padded input copy
    /// of a conv, the packed input of a swapped 1x1 conv.
    pub fn pad_bytes(&self) -> usize {
        // (Depthwise convs read their input in place: see `depthwise`.)
        if let Some(g) = self.tap_geometry() {
            return tap_classes::copy_bytes(g);
        }
        if let Some(g) = self.padded_copy() {
            return g.n * g.c * g.hp * g.wp * 4;
        }
        match &self.kind {
            // The packed input of a swapped 1x1 conv.
            Strategy::SmallMap => small_map::apack_bytes(self),
            // Parameters, channel tables, quantized activations.
            Strategy::Int8(q) => q.prefix_bytes(self),
            // The input transform the row parts share.
            Strategy::Winograd(g, r) => winograd::shared_bytes(self, g, *r),
            _ => 0,
        }
    }
    /// A grouped conv's output channels per group (`None` for other nodes): its row parts
    /// are its groups, each an implicit GEMM of the group's weights and the patches of the
    /// group's input channels.
    pub(super) fn group_rows(&self) -> Option<usize> {
        match &self.kind {
            Strategy::ImplicitGemm(g) if g.groups > 1 => Some(g.mg),
            _ => None,
        }
    }
    /// The row tiles `(first row, rows)` of the microkernel calls, in the order of the
    /// driver (`gemm::emit_kblock`): per row part, per M block of `mc` rows, tiles of `MR`
    /// and the block's remainder. (Without groups, the parts and blocks are multiples of
    /// `MR` but the last: tiles of `MR` over all rows.)
    pub(super) fn row_tiles(&self) -> Vec<(usize, usize)> {
        let mut v = vec![];
        for part in (0..self.m).step_by(self.mrows.max(1)) {
            let part_end = (part + self.mrows).min(self.m);
            for block in (part..part_end).step_by(self.mc.max(1)) {
                let block_end = (block + self.mc).min(part_end);
                for t in (block..block_end).step_by(MR) {
                    v.push((t, MR.min(block_end - t)));
                }
            }
        }
        v
    }
    /// Whether a conv split by rows packs its patches once, before the tasks, into the
    /// node's scratch (every K block of every column unit, in parallel parts: see
    /// [`super::gemm::emit_pack_patches`]), rather than once per row part. Small maps (7x7,
    /// 14x14: one or two column units) split M into parts that would each pack all of B:
    /// measured on ResNet-18's 7x7 stage, the packing was a quarter of the conv's time.
    pub(super) fn shared_patches(&self) -> bool {
        let Strategy::ImplicitGemm(g) = &self.kind else {
            return false;
        };
        if g.groups > 1 || self.taps.is_some() {
            return false;
        }
        if self.depthwise_after.is_some() {
            return true;
        }
        let last_cols = self.last_unit_cols();
        let last_rows = self.last_part_rows();
        let direct = [self.chunk.min(self.n), last_cols].iter().any(|&nc| {
            [self.mrows, last_rows]
                .iter()
                .any(|&mr| self.direct_conv_key(g, nc, mr).is_some())
        });
        self.mparts() > 1
            && self.patch_parts() > 1
            && !direct
            && self.patches_bytes() >= 1 << 16
            && self.patches_bytes() <= 1 << 25
    }
    /// Panels of a full column unit.
    pub(super) fn unit_panels(&self) -> usize {
        self.chunk.div_ceil(NR)
    }
    /// Bytes of all patches, packed: per image and column unit, `K` rows of the unit's panels
    /// (each K block `[panel][kc][16]` at `k0 x panels x 64` bytes).
    fn patches_bytes(&self) -> usize {
        self.nimg * self.units_per_img() * self.k * self.unit_panels() * NR * 4
    }
    /// Parts of the patch packing: (image, column unit, K block).
    pub(super) fn patch_parts(&self) -> usize {
        if self.depthwise_after.is_some() {
            return self.pair_pack_parts();
        }
        self.nimg * self.units_per_img() * self.kblocks().len()
    }
    /// Byte offset of the shared patches in scratch (after the padded input copy).
    pub(super) fn patches_off(&self) -> usize {
        self.pad_bytes().div_ceil(64) * 64
    }
    /// Bytes before the per-task buffers: the padded input copy (and the shared patches),
    /// then a folded conv's output buffer.
    pub(super) fn prefix_bytes(&self) -> usize {
        self.fold_off() + self.fold_bytes()
    }
    /// Byte offset of a folded conv's output buffer ([`KernelPlan::fold`]).
    pub(super) fn fold_off(&self) -> usize {
        let before = if self.shared_patches() {
            self.patches_off() + self.patches_bytes()
        } else {
            self.pad_bytes()
        };
        before.div_ceil(64) * 64
    }
    /// Bytes of a folded conv's output buffer: `[m][n]` floats.
    pub(super) fn fold_bytes(&self) -> usize {
        if self.fold > 0 {
            self.m * self.n * 4
        } else {
            0
        }
    }
    /// Packing buffer bytes per task (conv only).
    pub fn pack_bytes(&self) -> usize {
        let b = match &self.kind {
            Strategy::ImplicitGemm(_) if self.shared_patches() => self.pair_bytes(),
            Strategy::ImplicitGemm(_) | Strategy::GemmRuntimeB { .. } => {
                self.kc.min(self.k.max(1)) * self.chunk * 4
            }
            Strategy::GemmConstantB
            | Strategy::Depthwise(_)
            | Strategy::Softmax
            | Strategy::LstmCell { .. }
            | Strategy::MatrixTranspose(_) => 0,
            Strategy::SmallMap => small_map::tmp_bytes(self),
            Strategy::Winograd(g, r) => winograd::task_bytes(self, g, *r),
            Strategy::MaxPool(g) => pool::task_bytes(g),
            Strategy::Int8(q) => q.task_bytes(self),
            Strategy::Sparse(s) => s.task_bytes(self),
        };
        b + self.apack_bytes()
    }
    /// Bytes of the run-time A packing buffer (at the end of the task's packing space).
    pub(super) fn apack_bytes(&self) -> usize {
        if self.a_layout == ALayout::PackedAtRunTime {
            self.mc.min(self.m) * self.kc.min(self.k.max(1)) * 4
        } else {
            0
        }
    }
    pub fn scratch_bytes(&self) -> usize {
        self.mask_off() + 64
    }
    /// Byte offset of the node's buffer-slot mask (after the per-task buffers): see
    /// [`super::tasks::acquire_slot`].
    pub(super) fn mask_off(&self) -> usize {
        (self.prefix_bytes() + self.tasks * self.pack_bytes()).div_ceil(64) * 64
    }
    pub(super) fn kblocks(&self) -> Vec<usize> {
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
    pub(super) fn kb(&self) -> usize {
        let n = self.k.div_ceil(self.kc).max(1);
        self.k.div_ceil(n).max(1)
    }
    /// Whether the serial work before the tasks calls assembled routines (an int8 node's
    /// quantizing ones), so the kernel function declares them too.
    pub fn calls_routines_before_tasks(&self) -> bool {
        matches!(self.kind, Strategy::Int8(_))
    }
    /// Parts of the serial work before the tasks that run in parallel (0: none; an int8
    /// node's activation quantization, see [`super::emit_prepare`]).
    pub fn prepare_parts(&self) -> usize {
        if let Some(g) = self.tap_geometry() {
            return tap_classes::parts(self, g);
        }
        if self.shared_patches() {
            return self.patch_parts();
        }
        match &self.kind {
            Strategy::Int8(q) => q.prepare_parts(self),
            Strategy::Winograd(g, _) if winograd::shares_transform(self) => {
                winograd::shared_parts(g)
            }
            _ => self.copy_parts(),
        }
    }
    /// Every assembled routine the node calls.
    pub fn routines(&self) -> Vec<Routine> {
        let mut r = self.kind_routines();
        if let Some(k) = self.padded_rows_key() {
            r.push(Routine::PaddedRows(k));
        }
        r
    }
    /// The routines of the node's strategy (all but the padded copy's).
    fn kind_routines(&self) -> Vec<Routine> {
        if let Strategy::Int8(q) = &self.kind {
            return int8::routines(self, q);
        }
        if let Strategy::Sparse(s) = &self.kind {
            return sparse::routines(self, s);
        }
        if let Strategy::Softmax = &self.kind {
            return vec![Routine::Softmax(softmax::key(self))];
        }
        if let Strategy::LstmCell { cell } = self.kind {
            return vec![Routine::LstmCell(lstm::key(self, cell))];
        }
        if let Strategy::MatrixTranspose(g) = &self.kind {
            return matrix_transpose::routines(g);
        }
        if let Strategy::MaxPool(g) = &self.kind {
            return pool::routine_keys(self, g)
                .into_iter()
                .map(Routine::MaxPool)
                .collect();
        }
        let mut r: Vec<Routine> = self.keys().into_iter().map(Routine::Microkernel).collect();
        if let Strategy::Depthwise(g) = &self.kind {
            r.extend(
                depthwise::routines(self, g)
                    .into_iter()
                    .map(Routine::Depthwise),
            );
        }
        if let Some(d) = &self.depthwise_after {
            r.extend(d.plan.routines());
        }
        if let Strategy::ImplicitGemm(g) = &self.kind {
            // (Patch panels of contiguous pixels copied row by row.)
            r.push(Routine::PanelRows { stride: 1 });
            r.push(Routine::PanelRows { stride: 2 });
            let last_cols = self.last_unit_cols();
            let last_rows = self.last_part_rows();
            for ncols in [self.chunk, last_cols] {
                for mrows in [self.mrows, last_rows] {
                    if let Some(k) = self.direct_conv_key(g, ncols, mrows) {
                        let k = Routine::DirectConv(k);
                        if !r.contains(&k) {
                            r.push(k);
                        }
                    }
                }
            }
        }
        r
    }
    /// The epilogue an assembled dw/dc kernel applies: `epilogue` without bias steps when the node
    /// has no bias input.
    pub(super) fn kernel_epilogue(&self) -> Vec<Epilogue> {
        self.epilogue
            .iter()
            .filter(|s| {
                self.bias_port.is_some() || !matches!(s, Epilogue::BiasRow | Epilogue::BiasCol)
            })
            .copied()
            .collect()
    }
    /// Every microkernel the node calls.
    pub fn keys(&self) -> Vec<MicrokernelKey> {
        if matches!(
            self.kind,
            Strategy::Depthwise(_)
                | Strategy::MaxPool(_)
                | Strategy::Int8(_)
                | Strategy::Sparse(_)
                | Strategy::Softmax
                | Strategy::LstmCell { .. }
                | Strategy::MatrixTranspose(_)
        ) {
            return vec![];
        }
        if matches!(self.kind, Strategy::Winograd(..)) {
            return winograd::keys(self);
        }
        if matches!(self.kind, Strategy::SmallMap) {
            return small_map::keys(self);
        }
        let mut mrs = vec![];
        if self.m >= MR {
            mrs.push(MR);
        }
        let last_rows = self.last_part_rows();
        for rows in [self.mrows, last_rows] {
            for mc in [self.mc.min(rows), rows % self.mc] {
                if mc % MR != 0 && !mrs.contains(&(mc % MR)) {
                    mrs.push(mc % MR);
                }
            }
        }
        // (wide, partial, half) of the tiles: the full ones, and the tails of a unit's columns.
        let mut parts = vec![];
        let last = self.last_unit_cols();
        for ncols in [self.chunk.min(self.n), last] {
            let tiles = self.column_tiles(ncols);
            let mut add = |t| {
                if !parts.contains(&t) {
                    parts.push(t);
                }
            };
            if tiles.count > 0 {
                add((tiles.wide, false, false));
            }
            if let Some(t) = tiles.tail {
                add((t.wide, t.partial(), t.half));
            }
        }
        let nkb = self.kblocks().len();
        let mut kinds = vec![(false, nkb == 1)];
        if nkb > 1 {
            kinds.push((true, false));
            kinds.push((true, true));
        }
        // A class of one tap: its one block both starts and ends.
        if self.taps.as_ref().is_some_and(|t| t.has_single_tap()) && nkb > 1 {
            kinds.push((false, true));
        }
        let mut keys = vec![];
        for &mr in &mrs {
            for &(wide, partial, half) in &parts {
                for &(acc, epilogue) in &kinds {
                    let k = MicrokernelKey {
                        isa: self.isa,
                        mr,
                        wide,
                        packed_a: self.a_layout != ALayout::InPlace,
                        half,
                        partial,
                        accumulate: acc,
                        transposed: false,
                        epilogue: if epilogue {
                            self.epilogue.clone()
                        } else {
                            vec![]
                        },
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

/// The output a tile store writes: `m` rows by `n` columns, a per-channel bias broadcast along
/// rows (`bias_is_row`: conv channels) or columns.
pub(super) struct TileShape {
    pub m: usize,
    pub n: usize,
    pub bias_is_row: bool,
}

/// The leading fused steps a tile store applies, and the ports they read.
pub(super) struct TileSteps {
    pub epilogue: Vec<Epilogue>,
    /// The input of a bias Add (one value per row or column).
    pub bias_port: Option<usize>,
    /// The input of a residual Add (the output's shape).
    pub residual_port: Option<usize>,
    /// Index of the first step the tiles do not apply.
    pub rest: usize,
}

/// What a kernel's tile store can apply beyond Relu and Clip.
#[derive(Clone, Copy)]
pub(super) struct TileStore {
    /// Binary steps (a bias or a residual add).
    pub binary: bool,
    /// The ISA of GEMM microkernels (their HardSwish step; SiLU and GELU on AVX-512, also
    /// the AVX-512 int8 kernels'); `None` for others.
    pub gemm_isa: Option<Isa>,
    /// Requantizations (`fake_quantize`): the AVX-512 int8 kernels.
    pub fake_quantize: bool,
}

/// The longest prefix of `steps` a tile store applies: Relu, Clip, one residual Add of the
/// output's shape (unless `has_residual`), one bias Add broadcast along the tile's rows or
/// columns (unless `has_bias`); binary steps only when `binary`; the steps of
/// [`Epilogue::gemm_only`] only for GEMM microkernels of `gemm_isa` (HardSwish; SiLU and
/// GELU on AVX-512); fake-quantize steps only when `fake_quantize` (the AVX-512 int8 kernels).
pub(super) fn tile_steps(
    info: &NodeInfo,
    steps: &[FusedStep],
    shape: TileShape,
    has_bias: bool,
    has_residual: bool,
    store: TileStore,
) -> TileSteps {
    let TileStore {
        binary,
        gemm_isa,
        fake_quantize,
    } = store;
    let out = &info.outs[0].shape;
    let TileShape { m, n, bias_is_row } = shape;
    let mut t = TileSteps {
        epilogue: vec![],
        bias_port: None,
        residual_port: None,
        rest: steps.len(),
    };
    for (i, st) in steps.iter().enumerate() {
        let e = match st {
            FusedStep::Binary { .. } if !binary => None,
            FusedStep::Unary(UnaryOp::Relu) => Some(Epilogue::Relu),
            FusedStep::Unary(UnaryOp::HardSwish) if gemm_isa.is_some() => Some(Epilogue::HardSwish),
            FusedStep::Unary(UnaryOp::Silu) if gemm_isa == Some(Isa::Avx512) => {
                Some(Epilogue::Silu)
            }
            FusedStep::Unary(UnaryOp::Gelu) if gemm_isa == Some(Isa::Avx512) => {
                Some(Epilogue::Gelu)
            }
            FusedStep::Unary(UnaryOp::GeluTanh) if gemm_isa == Some(Isa::Avx512) => {
                Some(Epilogue::GeluTanh)
            }
            FusedStep::Unary(UnaryOp::Clip { min, max }) => {
                Some(Epilogue::Clip(min.to_bits(), max.to_bits()))
            }
            FusedStep::Unary(UnaryOp::FakeQuantize {
                scale,
                zero,
                signed,
            }) if fake_quantize => Some(Epilogue::FakeQuantize {
                scale: scale.to_bits(),
                zero: zero.to_bits(),
                signed: *signed,
            }),
            FusedStep::Binary {
                op: BinaryOp::Add,
                input,
                ..
            } if is_f32(&info.ins[*input]) => {
                let s = &info.ins[*input].shape;
                if s == out && !has_residual && t.residual_port.is_none() {
                    t.residual_port = Some(*input);
                    Some(Epilogue::Residual)
                } else if !has_bias && t.bias_port.is_none() && s.len() <= out.len() {
                    // Rank-aligned: a bias broadcasts along rows (conv channels) or columns.
                    let pad = out.len() - s.len();
                    let dims: Vec<usize> = std::iter::repeat_n(1, pad)
                        .chain(s.iter().copied())
                        .collect();
                    let ok = if bias_is_row {
                        dims.len() == 4
                            && dims[1] == m
                            && dims.iter().enumerate().all(|(d, &x)| x == 1 || d == 1)
                    } else {
                        dims.last() == Some(&n) && dims[..dims.len() - 1].iter().all(|&x| x == 1)
                    };
                    if ok {
                        t.bias_port = Some(*input);
                        Some(if bias_is_row {
                            Epilogue::BiasRow
                        } else {
                            Epilogue::BiasCol
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
            Some(x) => t.epilogue.push(x),
            None => {
                t.rest = i;
                break;
            }
        }
    }
    t
}

/// Whether a conv is a GEMM of its images' channel vectors with its constant weights: a 1x1
/// conv (stride 1, no padding, one group) over maps of one pixel (a squeeze-excitation
/// block's). Its plan is `GemmConstantB` with the weights transposed ([`b_transposed`]).
fn one_pixel_gemm(g: &ConvGeometry, info: &NodeInfo) -> bool {
    conv_is_gemm(g) && g.oh * g.ow == 1 && info.consts[1].is_some()
}

/// Whether a `GemmConstantB` node's constant B is stored transposed, `[N, K]`: Gemm's
/// `trans_b`, and a conv's weights `[M, C, 1, 1]` ([`one_pixel_gemm`]).
pub(super) fn b_transposed(info: &NodeInfo) -> bool {
    let base = info.op.base();
    matches!(base, Op::Gemm { trans_b: true, .. } | Op::Conv { .. })
}

/// The plan for `info` on the AVX2 path, or `None` when the node takes the generic path.
pub(crate) fn kernel_plan(info: &NodeInfo, target: &Target) -> Result<Option<KernelPlan>> {
    if !target.has_avx2_fma() {
        return Ok(None);
    }
    let (base, steps): (&Op, &[FusedStep]) = match info.op {
        Op::Fused { base, steps, .. } => (base, steps),
        op => (op, &[]),
    };
    if matches!(base, Op::QuantizedMatMul { .. } | Op::QuantizedConv { .. }) {
        return int8::plan(info, target);
    }
    if let Op::Pair { .. } = info.op {
        return pairs::plan(info, target);
    }
    if let Op::LstmCell = info.op {
        return Ok(lstm::plan(info, target));
    }
    if !is_f32(&info.outs[0]) || info.outs.len() != 1 {
        return Ok(None);
    }
    if let Op::MaxPool { .. } = base {
        // Fused steps (e.g. a QDQ model's fake_quantize) run after the planes, in slices.
        let sub = base_info(info);
        return Ok(maxpool2d_geometry(sub.as_ref().unwrap_or(info)).map(|g| pool_plan(g, target)));
    }
    if target.microkernel_isa() == Isa::Avx512 {
        if let Some(g) = matrix_transpose::geometry(info) {
            return Ok(Some(matrix_transpose::plan(g, target)));
        }
    }
    if let &Op::Softmax { axis } = base {
        return Ok(softmax::rows(&info.ins[0], axis)
            .filter(|_| target.microkernel_isa() == Isa::Avx512)
            .map(|(rows, n)| softmax_plan(rows, n, target)));
    }
    let out = &info.outs[0].shape;
    let nbase = match info.op {
        Op::Fused { base_inputs, .. } => *base_inputs,
        _ => info.ins.len(),
    };
    let sub = base_info(info);
    let binfo = sub.as_ref().unwrap_or(info);
    let mut epilogue = vec![];
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
                (
                    Strategy::GemmRuntimeB {
                        a_image: 0,
                        b_image: 0,
                    },
                    mt,
                    n,
                    k,
                    1,
                    false,
                )
            } else {
                if sa.len() != sb.len() || sa[..sa.len() - 2] != sb[..sb.len() - 2] {
                    return Ok(None);
                }
                let m = sa[sa.len() - 2];
                let nimg: usize = sa[..sa.len() - 2].iter().product();
                if m == 0 || nimg == 0 || nimg * m * n != info.outs[0].numel() {
                    return Ok(None);
                }
                let kind = Strategy::GemmRuntimeB {
                    a_image: (m * k * 4) as i64,
                    b_image: (k * n * 4) as i64,
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
            (Strategy::GemmConstantB, mt, n, k, 1, false)
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
                epilogue.push(Epilogue::Scale(alpha.to_bits()));
            }
            if nbase > 2 && !crate::ops::matmul::c_vanishes(*beta, info.consts[2].as_deref()) {
                let cs = &info.ins[2].shape;
                if *beta == 1.0 && (cs.as_slice() == [n] || cs.as_slice() == [1, n]) {
                    epilogue.push(Epilogue::BiasCol);
                    bias_port = Some(2);
                } else if *beta == 1.0 && cs.as_slice() == [m, n] {
                    epilogue.push(Epilogue::Residual);
                    res_port = Some(2);
                } else {
                    gemm_c_post = Some(*beta);
                }
            }
            (Strategy::GemmConstantB, m, n, k, 1, false)
        }
        Op::Conv { .. } => {
            let Some((g, _)) = conv_geometry(binfo)? else {
                return Ok(None);
            };
            if !info.ins.iter().take(3).all(is_f32) {
                return Ok(None);
            }
            // The depthwise kernels drop some taps over padding (`0 x w`), which is exact only
            // for finite weights: with a NaN or infinite one (or weights known only at run
            // time) the generic lowering multiplies a padded copy.
            let finite_weight = info.consts[1]
                .as_ref()
                .and_then(|w| w.as_f32())
                .is_some_and(|w| w.iter().all(|x| x.is_finite()));
            let dw = g.groups > 1 && g.cg == 1 && g.mg == 1 && finite_weight;
            // Grouped convs (not depthwise): an implicit GEMM per group, one group per row
            // part (see `KernelPlan::group_rows`), with constant weights.
            let grouped = g.groups > 1 && !dw;
            if grouped && binfo.consts[1].is_none() {
                return Ok(None);
            }
            let (m, n, k) = (g.m, g.oh * g.ow, g.cg * g.kh * g.kw);
            if m * n * g.n == 0 || k == 0 {
                return Ok(None);
            }
            if one_pixel_gemm(&g, binfo) {
                // Rows: the images' channel vectors (in place, `k` apart); columns: the
                // output channels, in panels of 16 (the implicit GEMM's columns would be the
                // one pixel in a panel); the weights packed transposed (`b_transposed`).
                if nbase > 2 {
                    epilogue.push(Epilogue::BiasCol);
                    bias_port = Some(2);
                }
                (Strategy::GemmConstantB, g.n, m, k, 1, false)
            } else {
                if nbase > 2 {
                    epilogue.push(Epilogue::BiasRow);
                    bias_port = Some(2);
                }
                let nimg = g.n;
                if dw {
                    // Depth of one output: the window (not `c` windows).
                    let k = g.kh * g.kw;
                    (Strategy::Depthwise(g), m, n, k, nimg, true)
                } else {
                    (Strategy::ImplicitGemm(g), m, n, k, nimg, true)
                }
            }
        }
        _ => return Ok(None),
    };
    // Fused steps that the tile store can apply.
    let before = epilogue.len();
    let mut rest = if gemm_c_post.is_some() {
        0
    } else {
        let tile = tile_steps(
            info,
            steps,
            TileShape { m, n, bias_is_row },
            bias_port.is_some(),
            res_port.is_some(),
            TileStore {
                binary: true,
                gemm_isa: Some(target.microkernel_isa()),
                fake_quantize: false,
            },
        );
        epilogue.extend(tile.epilogue);
        bias_port = bias_port.or(tile.bias_port);
        res_port = res_port.or(tile.residual_port);
        tile.rest
    };
    // The epilogue of the kernels other than the GEMM microkernels: up to the first step
    // only those apply (the tile steps map one to one onto `steps`, after `before` entries
    // of the base's own).
    let (portable, portable_rest) = match epilogue.iter().position(|e| e.gemm_only()) {
        Some(cut) => (epilogue[..cut].to_vec(), cut - before),
        None => (epilogue.clone(), rest),
    };
    // Mostly-zero constant weights: the sparse kernels (before Winograd, whose transformed
    // weights are dense).
    // The dense kernel the sparse one competes with: Winograd where it would run the conv.
    let dense_gain = match &kind {
        Strategy::ImplicitGemm(g)
            if target.winograd() >= 2
                && winograd::applies(g, binfo.consts[1].is_some(), &portable)
                && winograd::saves_multiplies(g, winograd::choose_r(g, target.winograd())) =>
        {
            winograd::dense_gain(g, winograd::choose_r(g, target.winograd()))
        }
        _ => 1.0,
    };
    let (kind, m, n) = match sparse::choose(
        info,
        binfo,
        &kind,
        m,
        n,
        &portable,
        gemm_c_post,
        target.sparse(),
        dense_gain,
    ) {
        Some((plan, e)) => {
            let (m, n) = match plan.kind {
                SparseKind::MatMul { .. } => (n, m),
                SparseKind::Conv(_) => (m, n),
            };
            epilogue = e;
            rest = portable_rest;
            (Strategy::Sparse(Box::new(plan)), m, n)
        }
        None => (kind, m, n),
    };
    // 3x3 stride-1 convs with constant weights: Winograd F(2x2, 3x3).
    let (kind, n, k) = match kind {
        Strategy::ImplicitGemm(g)
            if target.winograd() >= 2
                && winograd::applies(&g, binfo.consts[1].is_some(), &portable)
                && winograd::saves_multiplies(&g, winograd::choose_r(&g, target.winograd())) =>
        {
            epilogue = portable.clone();
            rest = portable_rest;
            let r = winograd::choose_r(&g, target.winograd());
            let wg = winograd::winograd_geometry(&g, r);
            let c = g.c;
            (Strategy::Winograd(g, r), wg.th * wg.tw4, c)
        }
        // 1x1 convs on small maps: pixels as tile rows (see `small_map::applies`).
        Strategy::ImplicitGemm(g)
            if conv_is_gemm(&g)
                && binfo.consts[1].is_some()
                && small_map::applies(target.microkernel_isa(), m, k, n, &epilogue) =>
        {
            epilogue = small_map::epilogue(&epilogue);
            (Strategy::SmallMap, n, k)
        }
        Strategy::Depthwise(g) => {
            // The assembled kernel takes the activations too on AVX-512 (EfficientNet's SiLU,
            // MobileNetV3's HardSwish after its depthwise convs: a separate 4-lane pass
            // otherwise); the other depthwise code stops before them.
            let whole = target.microkernel_isa() == Isa::Avx512
                && res_port.is_none()
                && DepthwiseKey::supports(&depthwise::depthwise_geometry(&g), &epilogue, true);
            if !whole {
                epilogue = portable.clone();
                rest = portable_rest;
            }
            (Strategy::Depthwise(g), n, k)
        }
        kind => (kind, n, k),
    };
    let chunk = match &kind {
        Strategy::Int8(_) => unreachable!("int8 nodes are planned by `int8::plan`"),
        Strategy::Sparse(_) => sparse::CHUNK,
        Strategy::Winograd(g, r) => winograd::unit_tiles(g, *r),
        Strategy::MaxPool(_)
        | Strategy::Softmax
        | Strategy::LstmCell { .. }
        | Strategy::MatrixTranspose(_) => n,
        Strategy::ImplicitGemm(_) => 128,
        Strategy::Depthwise(_) | Strategy::SmallMap => n,
        Strategy::GemmConstantB | Strategy::GemmRuntimeB { .. } if m >= 256 => 512,
        Strategy::GemmConstantB | Strategy::GemmRuntimeB { .. } if m >= 64 => 256,
        Strategy::GemmConstantB | Strategy::GemmRuntimeB { .. } => 64,
    };
    let a_layout = match kind {
        Strategy::ImplicitGemm(_) if binfo.consts[1].is_some() => ALayout::PackedAtCompileTime,
        // A run-time B: packing A pays off only when a unit reuses it over many panels
        // (measured: it costs ~20% at 4 panels per unit, gains ~20% at 1024^3). A constant
        // B (a layer's weights) reads A in place: every unit packed its own copy of A per K
        // block, and the rows read in place measured 3-10% faster on this AMD EPYC (128 to
        // 1024 rows, K 384 to 4096, lda 1536 to 16384 bytes; AVX-512 and AVX2 tiles).
        Strategy::GemmRuntimeB { .. } if chunk >= 256 && n >= 256 && k >= 256 => {
            ALayout::PackedAtRunTime
        }
        _ => ALayout::InPlace,
    };
    let kc = match kind {
        Strategy::GemmConstantB => target.gemm_kc(),
        _ => target.blocking().0,
    };
    let mut p = KernelPlan {
        kind,
        a_layout,
        m,
        n,
        k,
        nimg,
        epilogue,
        bias_port,
        res_port,
        rest,
        gemm_c_post,
        chunk,
        mrows: m,
        kc,
        mc: target.blocking().1,
        tasks: 1,
        isa: target.microkernel_isa(),
        fold: 0,
        taps: None,
        depthwise_after: None,
    };
    let implicit = match &p.kind {
        Strategy::ImplicitGemm(g) => Some(g.clone()),
        _ => None,
    };
    if let Some(g) = &implicit {
        if folds(g, &p.epilogue, p.res_port) {
            p.fold = p.n;
            p.n *= p.nimg;
            p.nimg = 1;
            let finite = binfo.consts[1]
                .as_ref()
                .and_then(|w| w.as_f32())
                .is_some_and(|w| w.iter().all(|x| x.is_finite()));
            if p.a_layout == ALayout::PackedAtCompileTime {
                if let Some(t) = tap_classes::plan(g, finite) {
                    p.n = t.columns.len();
                    p.chunk = t.chunk;
                    p.kc = g.cg;
                    p.taps = Some(Box::new(t));
                }
            }
        }
    }
    // Column units two threads finish together (a short last unit idles one).
    if matches!(p.kind, Strategy::ImplicitGemm(_)) && p.nimg == 1 && p.taps.is_none() {
        p.chunk = super::tasks::balanced_chunk(p.n, p.chunk);
    }
    let (n, nimg) = (p.n, p.nimg);
    // Split rows too when there are few column units (e.g. 7x7 maps, small N).
    let cu = p.nimg * p.units_per_img();
    if let Strategy::Winograd(_, r) = p.kind {
        p.mrows = winograd::mrows(m, chunk, r, target.caches().l2);
    } else if let Strategy::SmallMap = p.kind {
        p.mrows = small_map::mrows(m);
        p.kc = small_map::KC;
    } else if let Strategy::Sparse(_) = p.kind {
        p.mrows = sparse::mrows(m, cu);
    } else if let Strategy::Depthwise(_) = p.kind {
        // Channel groups: about 16 units.
        p.mrows = m.div_ceil(16usize.div_ceil(cu)).max(1);
    } else if let Some(rows) = p.group_rows() {
        p.mrows = rows;
    } else if cu < 8 && m >= 2 * 4 * MR {
        let want = 8usize.div_ceil(cu);
        // Every row part packs its own copy of B: keep parts >= 48 rows when B is packed
        // at run time, so the packing stays small next to the product.
        let floor = if matches!(p.kind, Strategy::GemmConstantB) {
            4 * MR
        } else {
            8 * MR
        };
        p.mrows = balanced_rows(m, want, floor, m);
    }
    // Spread work only when a unit has enough of it (~256 KFLOP).
    let flops = match &p.kind {
        // n counts tiles: each costs (r + 2)^2 multiply-adds per (m, c).
        Strategy::Winograd(_, r) => 2 * m * n * k * nimg * (r + 2) * (r + 2),
        // Each stored weight costs about what two dense multiply-adds do.
        Strategy::Sparse(s) => 4 * s.nonzeros * n * nimg,
        _ => 2 * m * n * k * nimg,
    };
    // Depthwise convs run ~8x fewer flops per cycle: split them at fewer flops.
    let min_flops = if matches!(p.kind, Strategy::Depthwise(_)) {
        1 << 18
    } else if m <= 4 {
        // Few rows: bound by streaming B (weights) from memory, which two cores (two L2
        // caches) do faster: an LSTM step's 1 x 128 x 512 GEMV (256 KiB of weights) too.
        1 << 17
    } else {
        1 << 21
    };
    // Enough work for two threads in one unit (columns of one chunk, rows too few to split:
    // each row part would pack B again): two column units instead.
    if flops >= min_flops
        && p.units() == 1
        && p.taps.is_none()
        && matches!(p.kind, Strategy::ImplicitGemm(_) | Strategy::GemmConstantB)
        && p.n > NR
    {
        p.chunk = p.n.div_ceil(2).div_ceil(NR) * NR;
    }
    // A Winograd conv of one tile block in one row part, with work for two threads and at
    // least 64 rows: about two row parts (`balanced_rows`: 32 rows or more but the last),
    // sharing the input transform (`winograd::shares_transform`). DenseNet's 32-row convs
    // stay whole: split in two they ran 2% slower at one thread, 2% faster at two.
    if let Strategy::Winograd(..) = p.kind {
        if flops >= min_flops && cu == 1 && p.mparts() == 1 && m >= 64 {
            p.mrows = balanced_rows(m, 2, 32, p.mrows);
        }
    }
    p.tasks = if flops < min_flops {
        1
    } else {
        p.units().min(MAX_TASKS)
    };
    Ok(Some(p))
}

/// Rows per part when splitting `m` rows into about `want` parts (multiples of `MR`, at
/// least `min_rows` unless there is one part, at most `max_rows`). Two threads share the
/// parts about alternately (they claim from both ends, unequal tasks dealt to the two ends
/// by `tasks::claim_order`), so an odd count or a short last part idles one of them: among
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

/// A plan of `m` rows (planes, softmax rows) of `n` outputs done whole by one routine or
/// loop, in units of `mrows` rows: split across tasks when `parallel`; fused steps all run
/// after the tasks (`rest` 0).
pub(super) fn rows_plan(
    kind: Strategy,
    isa: Isa,
    (m, n, k): (usize, usize, usize),
    mrows: usize,
    parallel: bool,
    target: &Target,
) -> KernelPlan {
    let (kc, mc) = target.blocking();
    let mut p = KernelPlan {
        kind,
        isa,
        a_layout: ALayout::InPlace,
        m,
        n,
        k,
        nimg: 1,
        epilogue: vec![],
        bias_port: None,
        res_port: None,
        rest: 0,
        gemm_c_post: None,
        chunk: n,
        mrows,
        kc,
        mc,
        tasks: 1,
        fold: 0,
        taps: None,
        depthwise_after: None,
    };
    if parallel {
        p.tasks = p.units().min(MAX_TASKS);
    }
    p
}

/// Softmax: units of about 1/32 of the rows, split across tasks when the node has at least
/// 32K elements (a task of 16K elements runs ~10 us).
fn softmax_plan(rows: usize, n: usize, target: &Target) -> KernelPlan {
    let mrows = rows.div_ceil(32).max(1);
    let parallel = rows * n >= 1 << 15;
    rows_plan(
        Strategy::Softmax,
        Isa::Avx512,
        (rows, n, 0),
        mrows,
        parallel,
        target,
    )
}

/// MaxPool: units of planes, split across tasks when the node is big enough.
fn pool_plan(g: MaxPoolGeometry, target: &Target) -> KernelPlan {
    let mrows = pool::plane_rows(g.planes);
    let parallel = g.planes * g.hp * g.wp * g.kh.max(g.kw) >= 1 << 18;
    let (m, n, k) = (g.planes, g.oh * g.ow, g.kh * g.kw);
    let isa = target.microkernel_isa();
    rows_plan(
        Strategy::MaxPool(g),
        isa,
        (m, n, k),
        mrows,
        parallel,
        target,
    )
}
