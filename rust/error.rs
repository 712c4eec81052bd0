//! The one error type of the kernels: one variant per kind of error. `bindings` maps each
//! variant to a class of `singledir.errors`, in one place.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum KernelError {
    /// Array shapes or lengths that do not agree with each other (`ShapeError`).
    Shape(String),
    /// A value outside what the computation accepts: NaN, negative activity, a label out of
    /// range, a duplicate record (`InputError`).
    Value(String),
    /// An option the kernels do not know or cannot use: unknown name, bins < 2 (`ConfigError`).
    Config(String),
    /// Input that would need an absurd amount of memory, e.g. a label of 10^12 making 10^12
    /// classes of accumulators (`InputError`, the message says how much and the fix).
    Capacity(String),
    /// Bytes that do not follow their file format, e.g. a corrupt parquet footer (`DataError`).
    Format(String),
}

impl KernelError {
    pub fn message(&self) -> &str {
        match self {
            KernelError::Shape(m)
            | KernelError::Value(m)
            | KernelError::Config(m)
            | KernelError::Capacity(m)
            | KernelError::Format(m) => m,
        }
    }
}

impl fmt::Display for KernelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl std::error::Error for KernelError {}

pub type KernelResult<T> = Result<T, KernelError>;

/// `ensure!(condition, Kind, "message {}", args)`: return `Err(KernelError::Kind(message))`
/// unless the condition holds. One line per check.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $kind:ident, $($msg:tt)+) => {
        if !$cond {
            return Err($crate::error::KernelError::$kind(format!($($msg)+)));
        }
    };
}

/// `fail!(Kind, "message {}", args)`: the `KernelError::Kind` value (for `Err(...)`,
/// `ok_or_else` and early returns).
#[macro_export]
macro_rules! fail {
    ($kind:ident, $($msg:tt)+) => {
        $crate::error::KernelError::$kind(format!($($msg)+))
    };
}

/// Bytes as a short human figure for capacity messages ("3.2 GB").
pub fn human_bytes(bytes: f64) -> String {
    if bytes >= 1e9 {
        format!("{:.1} GB", bytes / 1e9)
    } else {
        format!("{:.1} MB", bytes / 1e6)
    }
}
