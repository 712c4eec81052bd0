//! Pure kernels over slices. No pyo3 in here.
//!
//! Determinism: every parallel loop splits its work into pieces whose boundaries depend only on
//! the input sizes (never on the number of threads), computes each piece serially and merges
//! the pieces in order, so results are bit-identical for any `RAYON_NUM_THREADS`.

pub mod mutual_info;
pub mod ordering;
mod rng;
pub mod units;
