//! MI from a unit's values taken together: equal-frequency bins (quantile edges), label
//! shuffles, and tables too large to bin by rows. Dense arrays transpose blocks of units;
//! long-format records collect bounded groups of units (see `long`).

use rayon::prelude::*;

use crate::kernels::mutual_info::{unit_mutual_info, MiOptions, MiScratch};

use super::UnitRow;

/// Units per transposed block: 64 f32 = four adjacent 64-byte cache lines of each row, so
/// the strided reads keep several memory requests in flight.
const COLUMN_BLOCK: usize = 64;

/// How many rows ahead the transpose prefetches: rows lie a page or more apart, beyond the
/// reach of the hardware prefetcher.
const PREFETCH_ROWS: usize = 8;

/// Hint the cache to load `acts[start..start + len]` (no effect past the end or off x86-64).
#[inline(always)]
pub(super) fn prefetch(acts: &[f32], start: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    if start + len <= acts.len() {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        for off in (0..len).step_by(16) {
            // SAFETY: `start + off < acts.len()`, so the address is inside the slice; a
            // prefetch never faults and does not change memory.
            unsafe { _mm_prefetch::<_MM_HINT_T0>(acts.as_ptr().add(start + off) as *const i8) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (acts, start, len);
}

/// MI of one unit (`row` holds its counts, min and max) from its values and labels in order.
pub(super) fn column_mutual_info(
    unit: usize,
    values: &[f32],
    labels: &[u32],
    mo: &MiOptions,
    row: &mut UnitRow,
    scratch: &mut MiScratch,
) {
    if row.n == 0 {
        return;
    }
    let (lo, hi) = (row.min as f32, row.max as f32);
    let r = unit_mutual_info(
        unit as u64,
        values,
        labels,
        lo,
        hi,
        &row.counts,
        mo,
        scratch,
    );
    (row.mi, row.mi_shuffled, row.class_entropy) = (r.mi, r.shuffled, r.class_entropy);
}

/// MI of every unit of a dense array, one transposed block of units per task.
pub(super) fn dense_columns_mutual_info(
    acts: &[f32],
    n_samples: usize,
    n_units: usize,
    labels: &[u32],
    mo: &MiOptions,
    rows: &mut [UnitRow],
) {
    rows.par_chunks_mut(COLUMN_BLOCK)
        .enumerate()
        .for_each(|(b, block_rows)| {
            let u0 = b * COLUMN_BLOCK;
            let width = block_rows.len();
            let mut cols = vec![0f32; width * n_samples];
            for (s, row) in acts.chunks_exact(n_units).enumerate() {
                prefetch(acts, (s + PREFETCH_ROWS) * n_units + u0, width);
                for (col, &x) in cols.chunks_exact_mut(n_samples).zip(&row[u0..u0 + width]) {
                    col[s] = x;
                }
            }
            let mut scratch = MiScratch::default();
            for (j, row) in block_rows.iter_mut().enumerate() {
                let col = &cols[j * n_samples..(j + 1) * n_samples];
                column_mutual_info(u0 + j, col, labels, mo, row, &mut scratch);
            }
        });
}
