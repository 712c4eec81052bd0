//! Pure kernels over slices. No pyo3 in here.
