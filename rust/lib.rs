//! singledir's compiled core.
//!
//! `kernels` holds pure Rust over slices (no pyo3, tested with `cargo test`); `bindings` is the
//! one thin pyo3 layer, compiled only with the `python` feature that maturin enables.

pub mod error;
pub mod kernels;

#[cfg(feature = "python")]
mod bindings;
