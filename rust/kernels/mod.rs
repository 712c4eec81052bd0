//! Pure kernels over slices. No pyo3 in here.
//!
//! Determinism: every parallel loop splits its work into pieces whose boundaries depend only on
//! the input sizes (never on the number of threads) and computes each piece serially. Float
//! results are merged in piece order; only exact merges (min, max, integer counts) use rayon's
//! scheduling-dependent reductions. Results are therefore bit-identical for any
//! `RAYON_NUM_THREADS`.

/// `fn $name(args) -> ret` calling the `#[inline(always)]` `$portable` with the same
/// arguments, compiled for each listed x86 feature in turn where the CPU has it (the first
/// one present wins), else as it is. The portable body is the same IEEE operations whatever
/// the instruction set, so results do not depend on the CPU.
macro_rules! multiversion {
    (
        $(#[$meta:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $portable:ident [$($feature:tt),+]
    ) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) $(-> $ret)? {
            multiversion!(@each [$($feature),+] $portable ($($arg: $ty),*) $(-> $ret)?);
            $portable($($arg),*)
        }
    };
    (@each [$feature:tt $(, $rest:tt)*] $portable:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!($feature) {
            #[target_feature(enable = $feature)]
            #[allow(clippy::too_many_arguments)]
            fn compiled($($arg: $ty),*) $(-> $ret)? {
                $portable($($arg),*)
            }
            // SAFETY: the CPU supports the feature (checked just above).
            return unsafe { compiled($($arg),*) };
        }
        multiversion!(@each [$($rest),*] $portable ($($arg: $ty),*) $(-> $ret)?);
    };
    (@each [] $portable:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {};
}

pub mod binning;
pub mod mutual_info;
pub mod ordering;
pub mod parquet_meta;
mod rng;
pub mod units;
pub mod walk;
