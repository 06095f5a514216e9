//! A module wrapper that records the IR and disassembly of each function it defines.

use cranelift_codegen::control::ControlPlane;
use cranelift_codegen::ir::Signature;
use cranelift_codegen::Context;
use cranelift_module::{
    DataDescription, DataId, FuncId, Linkage, Module, ModuleDeclarations, ModuleReloc, ModuleResult,
};
use cranelift_object::ObjectModule;
use std::fmt::Write as _;

pub(super) struct Recorder {
    pub inner: ObjectModule,
    pub keep_clif: bool,
    pub keep_asm: bool,
    /// The IR of every function defined, when `keep_clif`.
    pub clif: String,
    /// The disassembly of every function defined, when `keep_asm`.
    pub asm: String,
}

impl Recorder {
    fn fname(&self, id: FuncId) -> String {
        self.inner
            .declarations()
            .get_function_decl(id)
            .linkage_name(id)
            .into_owned()
    }
}

impl Module for Recorder {
    fn isa(&self) -> &dyn cranelift_codegen::isa::TargetIsa {
        self.inner.isa()
    }
    fn declarations(&self) -> &ModuleDeclarations {
        self.inner.declarations()
    }
    fn declare_function(
        &mut self,
        name: &str,
        linkage: Linkage,
        signature: &Signature,
    ) -> ModuleResult<FuncId> {
        self.inner.declare_function(name, linkage, signature)
    }
    fn declare_anonymous_function(&mut self, signature: &Signature) -> ModuleResult<FuncId> {
        self.inner.declare_anonymous_function(signature)
    }
    fn declare_data(
        &mut self,
        name: &str,
        linkage: Linkage,
        writable: bool,
        tls: bool,
    ) -> ModuleResult<DataId> {
        self.inner.declare_data(name, linkage, writable, tls)
    }
    fn declare_anonymous_data(&mut self, writable: bool, tls: bool) -> ModuleResult<DataId> {
        self.inner.declare_anonymous_data(writable, tls)
    }
    fn define_function_with_control_plane(
        &mut self,
        func: FuncId,
        ctx: &mut Context,
        ctrl_plane: &mut ControlPlane,
    ) -> ModuleResult<()> {
        if self.keep_clif {
            let _ = writeln!(self.clif, "; {}\n{}", self.fname(func), ctx.func.display());
        }
        self.inner
            .define_function_with_control_plane(func, ctx, ctrl_plane)?;
        if self.keep_asm {
            let name = self.fname(func);
            if let Some(code) = ctx.compiled_code() {
                let bytes = code.code_buffer().to_vec();
                disassemble(&mut self.asm, &name, &bytes);
            }
        }
        Ok(())
    }
    fn define_function_bytes(
        &mut self,
        func_id: FuncId,
        alignment: u64,
        bytes: &[u8],
        relocs: &[ModuleReloc],
    ) -> ModuleResult<()> {
        self.inner
            .define_function_bytes(func_id, alignment, bytes, relocs)
    }
    fn define_data(&mut self, data_id: DataId, data: &DataDescription) -> ModuleResult<()> {
        self.inner.define_data(data_id, data)
    }
}

/// Intel-syntax disassembly of one x86-64 function (offsets from its start; relocated operands
/// show as zero).
fn disassemble(out: &mut String, name: &str, code: &[u8]) {
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter};
    let _ = writeln!(out, "{name}:");
    let mut dec = Decoder::with_ip(64, code, 0, DecoderOptions::NONE);
    let mut fmt = IntelFormatter::new();
    let mut text = String::new();
    for ins in &mut dec {
        text.clear();
        fmt.format(&ins, &mut text);
        let _ = writeln!(out, "  {:6x}:  {text}", ins.ip());
    }
    out.push('\n');
}
