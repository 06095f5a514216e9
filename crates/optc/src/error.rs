//! The error type of the library.

use std::fmt;

/// Every way compiling or running can fail. `Display` gives one readable paragraph.
#[derive(Debug)]
pub enum Error {
    /// Reading the file failed.
    Io(String),
    /// The ONNX model could not be imported (malformed file, unsupported ops, ...).
    Import(optc_onnx::ImportError),
    /// The IR is invalid or an op could not be evaluated.
    Ir(optc_ir::IrError),
    /// Code generation failed, or generated code reported a runtime error.
    Codegen(optc_codegen::CodegenError),
    /// The inputs passed to `run` do not match the model.
    Input(String),
    /// A lossy compile measured an error beyond its budget (the report says where).
    OverBudget(Box<crate::compress::CompressionReport>),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "{e}"),
            Error::Import(e) => write!(f, "{e}"),
            Error::Ir(e) => write!(f, "{e}"),
            Error::Codegen(e) => write!(f, "{e}"),
            Error::Input(e) => write!(f, "{e}"),
            Error::OverBudget(r) => write!(
                f,
                "the compressed model is over the error budget ({}); measured:\n{}",
                r.budget,
                r.summary().trim_end()
            ),
        }
    }
}

impl std::error::Error for Error {}

impl From<optc_onnx::ImportError> for Error {
    fn from(e: optc_onnx::ImportError) -> Self {
        Error::Import(e)
    }
}
impl From<optc_ir::IrError> for Error {
    fn from(e: optc_ir::IrError) -> Self {
        Error::Ir(e)
    }
}
impl From<optc_codegen::CodegenError> for Error {
    fn from(e: optc_codegen::CodegenError) -> Self {
        Error::Codegen(e)
    }
}

pub type Result<T> = std::result::Result<T, Error>;
