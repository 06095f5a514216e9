//! Every assembled routine a node may call, as one key type.

use super::depthwise::{self, DepthwiseKey};
use super::direct_conv::{self, DirectConvKey};
use super::gemm::{self, MicrokernelKey};
use super::int8::{self, Int8Key, INT8_ALIGN, INT8_PARAMS};
use super::int8_amx::TileState;
use super::lstm::{self, LstmCellKey, LSTM_CELL_PARAMS};
use super::matrix_transpose::{self, MatrixTransposeKey, MATRIX_TRANSPOSE_PARAMS};
use super::max_pool::{self, MaxPoolKey, MAX_POOL_PARAMS};
use super::padded_rows::{self, PaddedRowsKey, PADDED_ROWS_PARAMS};
use super::panel_rows::{self, PANEL_ROWS_PARAMS};
use super::quantize::QuantizeKey;
use super::softmax::{self, SoftmaxKey, SOFTMAX_PARAMS};
use super::sparse::{self, SparseKey, SPARSE_PARAMS};
use super::transpose::{self, TransposeKey, TRANSPOSE_PARAMS};
use iced_x86::IcedError;

/// A routine assembled with `iced-x86` and defined into the module: a GEMM microkernel, a
/// depthwise kernel ([`depthwise`]), a direct-conv kernel ([`direct_conv`]), an int8
/// microkernel ([`int8`]), an activation-quantizing routine ([`super::quantize`]), a sparse
/// kernel ([`sparse`]), a softmax over rows ([`softmax`]), max-pool rows ([`max_pool`]), an
/// LSTM step's gates ([`lstm`]), a contiguous patch panel's copy ([`panel_rows`]), a
/// conv's zero-padded input copy ([`padded_rows`]) or a matrix transpose
/// ([`matrix_transpose`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Routine {
    Microkernel(MicrokernelKey),
    Depthwise(DepthwiseKey),
    DirectConv(DirectConvKey),
    Int8(Int8Key),
    Quantize(QuantizeKey),
    Sparse(SparseKey),
    Transpose(TransposeKey),
    Softmax(SoftmaxKey),
    MaxPool(MaxPoolKey),
    LstmCell(LstmCellKey),
    /// Configure or release the AMX tiles around a unit's int8 kernel calls.
    Tiles(TileState),
    /// A patch panel whose columns are evenly spaced in the source (dword stride 1 or 2),
    /// copied row by row ([`panel_rows`]).
    PanelRows {
        stride: usize,
    },
    /// The zero-padded copy of a conv's input planes ([`padded_rows`]).
    PaddedRows(PaddedRowsKey),
    /// Strips of a matrix transpose ([`matrix_transpose`]).
    MatrixTranspose(MatrixTransposeKey),
}

impl Routine {
    pub fn symbol(&self) -> String {
        match self {
            Routine::Microkernel(k) => k.symbol(),
            Routine::Depthwise(k) => k.symbol(),
            Routine::DirectConv(k) => k.symbol(),
            Routine::Int8(k) => k.symbol(),
            Routine::Quantize(k) => k.symbol(),
            Routine::Sparse(k) => k.symbol(),
            Routine::Transpose(k) => k.symbol(),
            Routine::Softmax(k) => k.symbol(),
            Routine::MaxPool(k) => k.symbol(),
            Routine::LstmCell(k) => k.symbol(),
            Routine::Tiles(t) => t.symbol(),
            Routine::PanelRows { stride } => panel_rows::symbol(*stride),
            Routine::PaddedRows(k) => k.symbol(),
            Routine::MatrixTranspose(k) => k.symbol(),
        }
    }
    /// Alignment in the module, bytes (int8 kernels align their k loop to 64 bytes).
    pub fn alignment(&self) -> u64 {
        match self {
            Routine::Int8(_) => INT8_ALIGN,
            _ => 16,
        }
    }
    /// Integer (pointer / count) parameters.
    pub fn nparams(&self) -> usize {
        match self {
            Routine::Microkernel(k) => 9 + k.wide as usize,
            Routine::Depthwise(_) | Routine::DirectConv(_) => 5,
            Routine::Int8(_) => INT8_PARAMS,
            Routine::Quantize(k) => k.nparams(),
            Routine::Sparse(_) => SPARSE_PARAMS,
            Routine::Transpose(_) => TRANSPOSE_PARAMS,
            Routine::Softmax(_) => SOFTMAX_PARAMS,
            Routine::MaxPool(_) => MAX_POOL_PARAMS,
            Routine::LstmCell(_) => LSTM_CELL_PARAMS,
            Routine::Tiles(_) => 0,
            Routine::PanelRows { .. } => PANEL_ROWS_PARAMS,
            Routine::PaddedRows(_) => PADDED_ROWS_PARAMS,
            Routine::MatrixTranspose(_) => MATRIX_TRANSPOSE_PARAMS,
        }
    }
    pub fn assemble(&self) -> Result<Vec<u8>, IcedError> {
        match self {
            Routine::Microkernel(k) => gemm::assemble(k),
            Routine::Depthwise(k) => depthwise::assemble(k),
            Routine::DirectConv(k) => direct_conv::assemble(k),
            Routine::Int8(k) => int8::assemble(k),
            Routine::Quantize(k) => k.assemble(),
            Routine::Sparse(k) => sparse::assemble(k),
            Routine::Transpose(k) => transpose::assemble(k),
            Routine::Softmax(k) => softmax::assemble(k),
            Routine::MaxPool(k) => max_pool::assemble(k),
            Routine::LstmCell(k) => lstm::assemble(k),
            Routine::Tiles(t) => t.assemble(),
            Routine::PanelRows { stride } => panel_rows::assemble(*stride),
            Routine::PaddedRows(k) => padded_rows::assemble(k),
            Routine::MatrixTranspose(k) => matrix_transpose::assemble(k),
        }
    }
}
