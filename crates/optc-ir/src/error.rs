//! The IR error type.

use std::fmt;

/// An error raised by the IR: type inference, verification, parsing or interpretation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IrError {
    pub msg: String,
}

impl IrError {
    pub fn new(msg: impl Into<String>) -> Self {
        IrError { msg: msg.into() }
    }
}

impl fmt::Display for IrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for IrError {}

pub type Result<T> = std::result::Result<T, IrError>;

/// `bail!("...")` returns an `IrError` built with `format!`.
#[macro_export]
macro_rules! bail {
    ($($t:tt)*) => { return Err($crate::IrError::new(format!($($t)*))) };
}
