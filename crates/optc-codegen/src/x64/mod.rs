//! The x86-64 path (AVX2/FMA and AVX-512F).

pub(crate) mod asm;
