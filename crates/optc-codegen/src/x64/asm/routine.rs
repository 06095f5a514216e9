//! Every assembled routine a node may call, as one key type.

use super::depthwise::{self, DepthwiseKey};
use super::direct_conv::{self, DirectConvKey};
use super::gemm::{self, MicrokernelKey};
use iced_x86::IcedError;

/// A routine assembled with `iced-x86` and defined into the module: a GEMM microkernel, a
/// depthwise kernel ([`depthwise`]) or a direct-conv kernel ([`direct_conv`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Routine {
    Microkernel(MicrokernelKey),
    Depthwise(DepthwiseKey),
    DirectConv(DirectConvKey),
}

impl Routine {
    pub fn symbol(&self) -> String {
        match self {
            Routine::Microkernel(k) => k.symbol(),
            Routine::Depthwise(k) => k.symbol(),
            Routine::DirectConv(k) => k.symbol(),
        }
    }
    /// Integer (pointer / count) parameters.
    pub fn nparams(&self) -> usize {
        match self {
            Routine::Microkernel(_) => 9,
            Routine::Depthwise(_) | Routine::DirectConv(_) => 5,
        }
    }
    pub fn assemble(&self) -> Result<Vec<u8>, IcedError> {
        match self {
            Routine::Microkernel(k) => gemm::assemble(k),
            Routine::Depthwise(k) => depthwise::assemble(k),
            Routine::DirectConv(k) => direct_conv::assemble(k),
        }
    }
}
