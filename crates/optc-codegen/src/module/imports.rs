//! The module's imports of the runtime table ([`crate::runtime::SYMBOLS`]), declared once;
//! every kernel, task and entry function declares the math functions it may call.

use crate::builder::RuntimeRefs;
use crate::error::{CodegenError, Result};
use crate::runtime::{RuntimeFunction, SYMBOLS};
use cranelift_codegen::ir::Function;
use cranelift_module::{FuncId, Linkage, Module};

/// The runtime imports of a module ([`crate::runtime::SYMBOLS`], in table order), declared
/// once; `declare_in` makes the math functions callable from one function.
pub(crate) struct RuntimeImports {
    ids: Vec<FuncId>,
}

impl RuntimeImports {
    pub fn declare<M: Module>(module: &mut M) -> Result<RuntimeImports> {
        let call_conv = module.isa().default_call_conv();
        let pointer = module.target_config().pointer_type();
        let ids = SYMBOLS
            .iter()
            .map(|s| {
                module
                    .declare_function(s.name, Linkage::Import, &s.signature(call_conv, pointer))
                    .map_err(|e| CodegenError::new(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(RuntimeImports { ids })
    }

    /// The module's import of `f`.
    pub fn id(&self, f: RuntimeFunction) -> FuncId {
        self.ids[f as usize]
    }

    pub fn declare_in<M: Module>(&self, module: &mut M, func: &mut Function) -> RuntimeRefs {
        RuntimeRefs {
            log: module.declare_func_in_func(self.id(RuntimeFunction::Log), func),
            pow: module.declare_func_in_func(self.id(RuntimeFunction::Pow), func),
            integer_pow: module.declare_func_in_func(self.id(RuntimeFunction::IntegerPow), func),
            unary_math: module.declare_func_in_func(self.id(RuntimeFunction::UnaryMath), func),
            fmod: module.declare_func_in_func(self.id(RuntimeFunction::FMod), func),
            math_f64: module.declare_func_in_func(self.id(RuntimeFunction::MathF64), func),
        }
    }
}
