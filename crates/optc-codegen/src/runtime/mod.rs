//! The host functions generated code calls, in ONE table ([`SYMBOLS`]): their symbol names,
//! signatures and host addresses. The JIT resolves the symbols to the host functions, the
//! lowering declares its imports from the table's signatures, and AOT compilation emits an
//! equivalent of each into the object (`aot::runtime`, one emitter per [`RuntimeFunction`],
//! checked against the host functions by a test).
//!
//! - `math.rs`: `logf`, `powf`, the integer `pow` and libm's trigonometric and hyperbolic
//!   functions of the elementwise kernels,
//! - `threads.rs`: `optc_rt_parallel_for` and the persistent thread pool behind it
//!   (`affinity.rs`: CPU moves under contention, `profile.rs`: per-node profiles).

use cranelift_codegen::ir::{types, AbiParam, Signature, Type};
use cranelift_codegen::isa::CallConv;

mod affinity;
mod math;
pub mod profile;
mod threads;

pub use math::{
    optc_rt_fmodf, optc_rt_logf, optc_rt_math_f64, optc_rt_powf, optc_rt_powi, optc_rt_unary_math,
    F64_ERF, F64_EXP, F64_FMOD, F64_LOG, F64_POW, F64_TANH, MATH_F64, UNARY_MATH,
};
pub use threads::{
    available_cores, contended, optc_rt_parallel_for, run_begin, set_active_wait, set_thread_count,
    RunGuard, TaskFn,
};

/// A runtime function, the index of its row in [`SYMBOLS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RuntimeFunction {
    /// `ln(x)` in f32.
    Log,
    /// `x^y` in f32, computed in f64.
    Pow,
    /// `Pow` with an integer base.
    IntegerPow,
    /// `task(ctx, i)` for every `i` in `0..n`, on the thread pool (in objects: through the
    /// embedder's callback, or serially).
    ParallelFor,
    /// One of libm's f32 trigonometric and hyperbolic functions, chosen by a code
    /// ([`UNARY_MATH`]).
    UnaryMath,
    /// C's `fmod` in f32.
    FMod,
    /// Code compiled for profiling calls it before each kernel (`profile.rs`; a no-op in
    /// objects).
    ProfileMark,
    /// One of libm's f64 functions, chosen by a code ([`MATH_F64`]): f64 elementwise math.
    MathF64,
}

/// The type of a parameter or result of a runtime function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AbiType {
    F32,
    F64,
    I32,
    I64,
    /// The target's pointer type.
    Pointer,
}

impl AbiType {
    /// The Cranelift type, given the target's pointer type.
    pub fn cranelift(self, pointer: Type) -> Type {
        match self {
            AbiType::F32 => types::F32,
            AbiType::F64 => types::F64,
            AbiType::I32 => types::I32,
            AbiType::I64 => types::I64,
            AbiType::Pointer => pointer,
        }
    }
}

/// One row of the runtime table.
pub struct RuntimeSymbol {
    pub function: RuntimeFunction,
    /// The symbol the generated code imports.
    pub name: &'static str,
    pub params: &'static [AbiType],
    pub returns: &'static [AbiType],
    /// The host function's address (what the JIT links the symbol to).
    pub address: fn() -> *const u8,
}

impl RuntimeSymbol {
    /// The signature generated code calls the function with.
    pub fn signature(&self, call_conv: CallConv, pointer: Type) -> Signature {
        let mut s = Signature::new(call_conv);
        let abi = |t: &AbiType| AbiParam::new(t.cranelift(pointer));
        s.params.extend(self.params.iter().map(abi));
        s.returns.extend(self.returns.iter().map(abi));
        s
    }
}

/// Every runtime function, in the order the lowering declares them.
pub static SYMBOLS: [RuntimeSymbol; 8] = [
    RuntimeSymbol {
        function: RuntimeFunction::Log,
        name: "optc_rt_logf",
        params: &[AbiType::F32],
        returns: &[AbiType::F32],
        address: || optc_rt_logf as *const u8,
    },
    RuntimeSymbol {
        function: RuntimeFunction::Pow,
        name: "optc_rt_powf",
        params: &[AbiType::F32, AbiType::F32],
        returns: &[AbiType::F32],
        address: || optc_rt_powf as *const u8,
    },
    RuntimeSymbol {
        function: RuntimeFunction::IntegerPow,
        name: "optc_rt_powi",
        params: &[
            AbiType::I64,
            AbiType::F64,
            AbiType::I32,
            AbiType::I64,
            AbiType::I64,
            AbiType::I64,
        ],
        returns: &[AbiType::I64],
        address: || optc_rt_powi as *const u8,
    },
    RuntimeSymbol {
        function: RuntimeFunction::ParallelFor,
        name: "optc_rt_parallel_for",
        params: &[AbiType::Pointer, AbiType::Pointer, AbiType::I64],
        returns: &[],
        address: || optc_rt_parallel_for as *const u8,
    },
    RuntimeSymbol {
        function: RuntimeFunction::UnaryMath,
        name: "optc_rt_unary_math",
        params: &[AbiType::F32, AbiType::I32],
        returns: &[AbiType::F32],
        address: || optc_rt_unary_math as *const u8,
    },
    RuntimeSymbol {
        function: RuntimeFunction::FMod,
        name: "optc_rt_fmodf",
        params: &[AbiType::F32, AbiType::F32],
        returns: &[AbiType::F32],
        address: || optc_rt_fmodf as *const u8,
    },
    RuntimeSymbol {
        function: RuntimeFunction::ProfileMark,
        name: "optc_rt_profile_mark",
        params: &[AbiType::I64],
        returns: &[],
        address: || profile::optc_rt_profile_mark as *const u8,
    },
    RuntimeSymbol {
        function: RuntimeFunction::MathF64,
        name: "optc_rt_math_f64",
        params: &[AbiType::F64, AbiType::F64, AbiType::I32],
        returns: &[AbiType::F64],
        address: || optc_rt_math_f64 as *const u8,
    },
];

impl RuntimeFunction {
    /// The function's row of [`SYMBOLS`].
    pub fn symbol(self) -> &'static RuntimeSymbol {
        &SYMBOLS[self as usize]
    }
}

/// The runtime symbol named `name`, if it is one.
pub fn lookup(name: &str) -> Option<&'static RuntimeSymbol> {
    SYMBOLS.iter().find(|s| s.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_function_indexes_its_own_row() {
        for (i, s) in SYMBOLS.iter().enumerate() {
            assert_eq!(s.function as usize, i, "{}", s.name);
            assert_eq!(s.function.symbol().name, s.name);
            assert!(s.name.starts_with("optc_rt_"), "{}", s.name);
            assert_eq!(lookup(s.name).map(|r| r.function), Some(s.function));
        }
    }
}
