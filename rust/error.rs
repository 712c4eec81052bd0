//! The one error type of the kernels. `bindings` maps each variant to a class of
//! `singledir.errors`, in one place.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum KernelError {
    /// Array shapes or lengths that do not agree with each other.
    Shape(String),
    /// A value outside what the computation accepts (NaN, negative activity, bad label...).
    Value(String),
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelError::Shape(m) | KernelError::Value(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for KernelError {}

pub type KernelResult<T> = Result<T, KernelError>;
