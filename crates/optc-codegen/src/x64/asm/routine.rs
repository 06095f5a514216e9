//! Every assembled routine a node may call, as one key type.

use super::depthwise::{self, DwKey};
use super::direct_conv::{self, DcKey};
use super::gemm::{self, UkrKey};
use iced_x86::IcedError;

/// A routine assembled with `iced-x86` and defined into the module: a GEMM microkernel, a
/// depthwise kernel ([`depthwise`]) or a direct-conv kernel ([`direct_conv`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Routine {
    Gemm(UkrKey),
    Dw(DwKey),
    Dc(DcKey),
}

impl Routine {
    pub fn symbol(&self) -> String {
        match self {
            Routine::Gemm(k) => k.symbol(),
            Routine::Dw(k) => k.symbol(),
            Routine::Dc(k) => k.symbol(),
        }
    }
    /// Integer (pointer / count) parameters.
    pub fn nparams(&self) -> usize {
        match self {
            Routine::Gemm(_) => 9,
            Routine::Dw(_) | Routine::Dc(_) => 5,
        }
    }
    pub fn assemble(&self) -> Result<Vec<u8>, IcedError> {
        match self {
            Routine::Gemm(k) => gemm::assemble(k),
            Routine::Dw(k) => depthwise::assemble(k),
            Routine::Dc(k) => direct_conv::assemble(k),
        }
    }
}
