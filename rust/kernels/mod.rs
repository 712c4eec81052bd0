//! Pure kernels over slices. No pyo3 in here.
//!
//! Determinism: every parallel loop splits its work into pieces whose boundaries depend only on
//! the input sizes (never on the number of threads) and computes each piece serially. Float
//! results are merged in piece order; only exact merges (min, max, integer counts) use rayon's
//! scheduling-dependent reductions. Results are therefore bit-identical for any
//! `RAYON_NUM_THREADS`.

pub mod binning;
pub mod mutual_info;
pub mod ordering;
mod rng;
pub mod units;
pub mod walk;
