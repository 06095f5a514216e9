//! Errors of code generation, and the status codes generated code returns when it fails.
//!
//! The entry function returns 0 on success, or `((kernel + 1) << 8) | code` where `kernel` is
//! the failing node's position in the schedule and `code` a [`RuntimeError`].

use std::fmt;

/// A result whose error is, unless said otherwise, a [`CodegenError`].
pub(crate) type Result<T, E = CodegenError> = std::result::Result<T, E>;

/// An error of code generation or of running generated code.
#[derive(Debug, Clone)]
pub struct CodegenError {
    /// `(node name, op name)` when the error is about a node.
    pub node: Option<(String, String)>,
    pub msg: String,
}

impl CodegenError {
    pub fn new(msg: impl Into<String>) -> Self {
        CodegenError {
            node: None,
            msg: msg.into(),
        }
    }
    pub fn at(node: &str, op: &str, msg: impl Into<String>) -> Self {
        CodegenError {
            node: Some((node.to_string(), op.to_string())),
            msg: msg.into(),
        }
    }
}

impl fmt::Display for CodegenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.node {
            Some((n, op)) => write!(f, "node {n} ({op}): {}", self.msg),
            None => f.write_str(&self.msg),
        }
    }
}

impl std::error::Error for CodegenError {}

/// What a kernel reports in the low byte of a failing status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeError {
    /// A Gather, GatherElements or GatherND index is out of range.
    GatherIndex = 1,
    /// An integer division by zero.
    DivisionByZero = 2,
    /// A ScatterElements / ScatterND index is out of range.
    ScatterIndex = 3,
    /// An `If` branch that could not be compiled for the model's shapes was taken.
    UncompiledBranch = 4,
    /// The run's length is outside the range an object was compiled for.
    LengthOutOfRange = 5,
}

impl RuntimeError {
    /// Every runtime error, by code.
    pub const ALL: [RuntimeError; 5] = [
        RuntimeError::GatherIndex,
        RuntimeError::DivisionByZero,
        RuntimeError::ScatterIndex,
        RuntimeError::UncompiledBranch,
        RuntimeError::LengthOutOfRange,
    ];

    /// The status code (the low byte of the entry function's return value).
    pub fn code(self) -> i32 {
        self as i32
    }

    /// The error of a status code, if it is one.
    pub fn from_code(code: i32) -> Option<RuntimeError> {
        RuntimeError::ALL.into_iter().find(|e| e.code() == code)
    }

    /// What went wrong, in words (also in the generated C header and Rust bindings).
    pub fn message(self) -> &'static str {
        match self {
            RuntimeError::GatherIndex => "gather index out of range",
            RuntimeError::DivisionByZero => "integer division by zero",
            RuntimeError::ScatterIndex => "scatter index out of range",
            RuntimeError::UncompiledBranch => optc_ir::UNCOMPILED_BRANCH,
            RuntimeError::LengthOutOfRange => optc_ir::LENGTH_OUT_OF_RANGE,
        }
    }
}
