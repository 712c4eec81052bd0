//! The thin pyo3 layer: argument conversion, GIL release, error mapping. No logic.

use pyo3::prelude::*;

#[pymodule]
mod _core {
    use pyo3::prelude::*;

    /// Version of the compiled core, to check that the extension matches the Python package.
    #[pyfunction]
    fn core_version() -> &'static str {
        env!("CARGO_PKG_VERSION")
    }
}
