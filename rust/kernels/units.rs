//! Per-unit statistics over a dense `(n_samples, n_units)` row-major f32 array or over
//! long-format records `(unit, label, value)`: class-conditional means and counts, overall
//! mean / std / min / max / fraction active, class selectivity with the preferred class, and
//! (optionally) mutual information with the class.
//!
//! Paths, each independent of the thread count:
//! - dense, per unit: blocks of [`UNIT_BLOCK`] units, read row by row (a row shares one label,
//!   so class updates are vector updates across units) or transposed into columns for what
//!   needs a unit's values together (equal-frequency bins, label shuffles);
//! - dense, MI only (equal width, no shuffles): rows in order, merged exactly (min, max and
//!   integer tables), the fastest memory access;
//! - long format: records that form a flattened dense array go the dense way; records with
//!   each unit's records together (any unit order) are used in place; other orders are
//!   accumulated in fixed record chunks merged in order, or, when a unit's values are needed
//!   together, regrouped by a stable counting sort.
//!
//! In the per-unit paths a unit's sums run serially in its record (sample) order with the
//! same operations, so dense and long-format results are bit-identical when each unit's
//! records come in the dense sample order. Scattered accumulation rounds its float sums in
//! another order (equal to ~1e-12 relative); counts, min, max and MI stay exact.
//!
//! Class selectivity: `SI = (mu_max - mu_rest) / (mu_max + mu_rest)`, with `mu_max` the largest
//! class-conditional mean and `mu_rest` the mean of the other classes' means; the preferred
//! class is the argmax (lowest class on ties). A silent unit (all class means 0) gets SI 0.
//! Negative activity makes SI meaningless; [`NegativePolicy`] says what to do with it.

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use crate::error::{KernelError, KernelResult};

use super::mutual_info::{
    entropy_bits, mi_from_table, unit_mutual_info, Binning, MiOptions, MiScratch,
};

/// Units per dense block: 64 f32 = four adjacent 64-byte cache lines of each row, so the
/// strided reads of a block's transpose keep several memory requests in flight.
pub const UNIT_BLOCK: usize = 64;

/// How many rows ahead the dense transpose prefetches: rows lie a page or more apart, beyond
/// the reach of the hardware prefetcher.
const PREFETCH_ROWS: usize = 8;

/// Hint the cache to load `acts[start..start + len]` (no effect past the end or off x86-64).
#[inline(always)]
fn prefetch_row_segment(acts: &[f32], start: usize, len: usize) {
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

/// Records per chunk when grouping long-format records by unit.
const GROUP_CHUNK: usize = 1 << 20;

/// What class selectivity does with a unit whose activity goes below 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegativePolicy {
    /// Refuse with an error naming the unit (the default).
    Error,
    /// Subtract the unit's minimum from every activity when that minimum is negative, i.e.
    /// use `mu_c - min` as class means (units with non-negative activity are unchanged).
    Shift,
    /// Use the mean of `max(x, 0)` per class, as if a ReLU followed.
    Clip,
}

impl NegativePolicy {
    pub fn parse(name: &str) -> KernelResult<NegativePolicy> {
        match name {
            "error" => Ok(NegativePolicy::Error),
            "shift" => Ok(NegativePolicy::Shift),
            "clip" => Ok(NegativePolicy::Clip),
            other => Err(KernelError::Value(format!(
                "unknown negative-activity policy {other:?}: use 'error', 'shift' or 'clip'"
            ))),
        }
    }
}

/// What to compute besides the class-conditional means and the moments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SummaryOptions {
    pub n_classes: usize,
    /// Class selectivity with this policy (None: skip, `selectivity` stays empty).
    pub selectivity: Option<NegativePolicy>,
    /// Mutual information (None: skip, the `mi*` vectors stay empty).
    pub mutual_info: Option<MiOptions>,
    /// Class means, mean, std and fraction active (false: left NaN, which lets a call that
    /// wants only MI skip their work; counts, min and max are always computed). Selectivity
    /// needs them and turns them on.
    pub moments: bool,
}

/// Flat per-unit results; `(n_units, n_classes)` tables are row-major. A unit without any
/// sample (possible in the long layout) has count 0, NaN statistics and preferred class -1.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UnitSummary {
    pub n_units: usize,
    pub n_classes: usize,
    pub n_samples: Vec<u64>,
    pub class_counts: Vec<u64>,
    pub class_means: Vec<f64>,
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    pub min: Vec<f64>,
    pub max: Vec<f64>,
    pub fraction_active: Vec<f64>,
    pub selectivity: Vec<f64>,
    pub preferred_class: Vec<i64>,
    pub mi: Vec<f64>,
    pub mi_shuffled: Vec<f64>,
    pub class_entropy: Vec<f64>,
}

struct UnitRow {
    n: u64,
    counts: Vec<u64>,
    means: Vec<f64>,
    mean: f64,
    std: f64,
    min: f64,
    max: f64,
    active: f64,
    si: f64,
    preferred: i64,
    mi: f64,
    mi_shuffled: f64,
    class_entropy: f64,
}

fn check_options(opts: &SummaryOptions) -> KernelResult<()> {
    if opts.n_classes < 2 {
        return Err(KernelError::Value(format!(
            "need at least 2 classes (got {}): check the labels",
            opts.n_classes
        )));
    }
    if let Some(mi) = &opts.mutual_info {
        mi.validate(opts.n_classes)?;
    }
    Ok(())
}

fn check_labels(labels: &[i64], n_classes: usize) -> KernelResult<Vec<u32>> {
    labels
        .iter()
        .map(|&l| {
            if l < 0 || l as u64 >= n_classes as u64 {
                Err(KernelError::Value(format!(
                    "label {l} is outside 0..{}: labels must be class indices 0..{}",
                    n_classes,
                    n_classes - 1
                )))
            } else {
                Ok(l as u32)
            }
        })
        .collect()
}

/// SI and preferred class from class means (see the module docs). `pos_means` are the means
/// of `max(x, 0)`, used by [`NegativePolicy::Clip`].
fn selectivity_of(
    unit: usize,
    means: &[f64],
    pos_means: &[f64],
    min: f64,
    policy: NegativePolicy,
) -> KernelResult<(f64, i64)> {
    let shifted: Vec<f64>;
    let mu: &[f64] = if min >= 0.0 {
        means
    } else {
        match policy {
            NegativePolicy::Error => {
                return Err(KernelError::Value(format!(
                    "unit {unit} has negative activity (min {min:.4}): class selectivity needs \
                     non-negative activity (e.g. after a ReLU); choose the negative policy \
                     'shift' or 'clip'"
                )))
            }
            NegativePolicy::Shift => {
                shifted = means.iter().map(|m| m - min).collect();
                &shifted
            }
            NegativePolicy::Clip => pos_means,
        }
    };
    let mut best = 0usize;
    for (c, &m) in mu.iter().enumerate() {
        if m > mu[best] {
            best = c;
        }
    }
    let mu_max = mu[best];
    let rest: f64 = mu
        .iter()
        .enumerate()
        .filter(|&(c, _)| c != best)
        .map(|(_, &m)| m)
        .sum::<f64>()
        / (mu.len() - 1) as f64;
    let denom = mu_max + rest;
    let si = if denom > 0.0 {
        ((mu_max - rest) / denom).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Ok((si, best as i64))
}

/// Running sums of one unit, accumulated in sample order (the same operations, in the same
/// order, in the column and the row-wise paths, so both give bit-identical results).
struct Moments {
    n: u64,
    counts: Vec<u64>,
    sums: Vec<f64>,
    pos_sums: Vec<f64>,
    x0: f64,
    s1: f64,
    s2: f64,
    lo: f32,
    hi: f32,
    active: u64,
}

fn empty_row(k: usize) -> UnitRow {
    UnitRow {
        n: 0,
        counts: vec![0; k],
        means: vec![f64::NAN; k],
        mean: f64::NAN,
        std: f64::NAN,
        min: f64::NAN,
        max: f64::NAN,
        active: f64::NAN,
        si: f64::NAN,
        preferred: -1,
        mi: f64::NAN,
        mi_shuffled: f64::NAN,
        class_entropy: f64::NAN,
    }
}

fn non_finite(unit: usize, x: f32, sample: usize) -> KernelError {
    KernelError::Value(format!(
        "unit {unit} has a non-finite activity ({x}) at sample {sample}: drop or impute NaN \
         and inf values first"
    ))
}

/// Means, moments and selectivity of one unit from its sums (`m.n > 0`).
fn finish_unit(unit: usize, m: Moments, opts: &SummaryOptions) -> KernelResult<UnitRow> {
    let k = opts.n_classes;
    let nf = m.n as f64;
    let var = (m.s2 / nf - (m.s1 / nf) * (m.s1 / nf)).max(0.0);
    let means: Vec<f64> = m
        .sums
        .iter()
        .zip(&m.counts)
        .map(|(&s, &c)| if c > 0 { s / c as f64 } else { f64::NAN })
        .collect();
    let (si, preferred) = match opts.selectivity {
        None => (f64::NAN, -1),
        Some(policy) => {
            if let Some(missing) = m.counts.iter().position(|&c| c == 0) {
                return Err(KernelError::Value(format!(
                    "unit {unit} has no samples of class {missing}: every class 0..{} needs \
                     samples (relabel the classes or set the number of classes)",
                    k - 1
                )));
            }
            let pos_means: Vec<f64> = m
                .pos_sums
                .iter()
                .zip(&m.counts)
                .map(|(&s, &c)| s / c as f64)
                .collect();
            selectivity_of(unit, &means, &pos_means, m.lo as f64, policy)?
        }
    };
    Ok(UnitRow {
        n: m.n,
        counts: m.counts,
        means,
        mean: m.x0 + m.s1 / nf,
        std: var.sqrt(),
        min: m.lo as f64,
        max: m.hi as f64,
        active: m.active as f64 / nf,
        si,
        preferred,
        mi: f64::NAN,
        mi_shuffled: f64::NAN,
        class_entropy: f64::NAN,
    })
}

/// All statistics of one unit from its contiguous activity and labels (labels in range).
fn summarize_column(
    unit: usize,
    values: &[f32],
    labels: &[u32],
    opts: &SummaryOptions,
    scratch: &mut MiScratch,
) -> KernelResult<UnitRow> {
    let k = opts.n_classes;
    if values.is_empty() {
        return Ok(empty_row(k));
    }
    let mut m = Moments {
        n: values.len() as u64,
        counts: vec![0u64; k],
        sums: vec![0f64; k],
        pos_sums: vec![0f64; k],
        // Sums shifted by the first value keep the variance accurate when |mean| >> std.
        x0: values[0] as f64,
        s1: 0.0,
        s2: 0.0,
        lo: f32::INFINITY,
        hi: f32::NEG_INFINITY,
        active: 0,
    };
    for (i, (&x, &c)) in values.iter().zip(labels).enumerate() {
        if !x.is_finite() {
            return Err(non_finite(unit, x, i));
        }
        let c = c as usize;
        let xf = x as f64;
        m.counts[c] += 1;
        m.sums[c] += xf;
        m.pos_sums[c] += xf.max(0.0);
        let d = xf - m.x0;
        m.s1 += d;
        m.s2 += d * d;
        m.lo = m.lo.min(x);
        m.hi = m.hi.max(x);
        m.active += (x > 0.0) as u64;
    }
    let (lo, hi) = (m.lo, m.hi);
    let mut row = finish_unit(unit, m, opts)?;
    if let Some(mo) = &opts.mutual_info {
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
    Ok(row)
}

/// Largest per-block contingency table (cells) of the row-wise dense path.
const ROW_PATH_MAX_CELLS: usize = 1 << 20;

fn wants_moments(opts: &SummaryOptions) -> bool {
    opts.moments || opts.selectivity.is_some()
}

/// Rows per chunk of the sequential MI-only dense path.
const MI_ROW_CHUNK: usize = 512;

/// Largest `n_units * bins * n_classes` table of the sequential MI-only path (per thread).
const MI_SEQUENTIAL_MAX_CELLS: usize = 1 << 22;

/// Options of the sequential MI-only path: equal width, no shuffles, no moments.
fn sequential_mi_applies(opts: &SummaryOptions, n_units: usize) -> Option<MiOptions> {
    let mo = opts.mutual_info?;
    let fits = n_units * mo.bins * opts.n_classes <= MI_SEQUENTIAL_MAX_CELLS;
    (!wants_moments(opts) && mo.binning == Binning::EqualWidth && mo.shuffles == 0 && fits)
        .then_some(mo)
}

/// MI only, reading the dense array in row order (the fastest access): chunks of rows give
/// per-unit min/max, then per-unit contingency tables. Every merge is exact (min, max, integer
/// counts), so the order of merging, and hence the thread count, cannot change the result,
/// which equals the per-unit path's.
fn mi_only_sequential(
    acts: &[f32],
    n_units: usize,
    labels: &[u32],
    opts: &SummaryOptions,
    mo: &MiOptions,
) -> KernelResult<Vec<UnitRow>> {
    let k = opts.n_classes;
    let chunk = MI_ROW_CHUNK * n_units;
    type Extremes = (Vec<f32>, Vec<f32>, Vec<f32>);
    let fresh = || -> Extremes {
        (
            vec![f32::INFINITY; n_units],
            vec![f32::NEG_INFINITY; n_units],
            vec![0f32; n_units],
        )
    };
    let (lo, hi, check) = acts
        .par_chunks(chunk)
        .fold(fresh, |(mut lo, mut hi, mut check), block| {
            for row in block.chunks_exact(n_units) {
                for j in 0..n_units {
                    let x = row[j];
                    lo[j] = if x < lo[j] { x } else { lo[j] };
                    hi[j] = if x > hi[j] { x } else { hi[j] };
                    check[j] += x * 0.0; // NaN unless x is finite
                }
            }
            (lo, hi, check)
        })
        .reduce(fresh, |(mut lo, mut hi, mut check), (lo2, hi2, check2)| {
            for j in 0..n_units {
                lo[j] = if lo2[j] < lo[j] { lo2[j] } else { lo[j] };
                hi[j] = if hi2[j] > hi[j] { hi2[j] } else { hi[j] };
                check[j] += check2[j];
            }
            (lo, hi, check)
        });
    if let Some(j) = check.iter().position(|c| !c.is_finite()) {
        let (s, x) = acts
            .chunks_exact(n_units)
            .map(|r| r[j])
            .enumerate()
            .find(|(_, x)| !x.is_finite())
            .unwrap_or((0, f32::NAN));
        return Err(non_finite(j, x, s));
    }
    let bins = mo.bins;
    let last = (bins - 1) as i32;
    let base: Vec<f64> = lo.iter().map(|&v| v as f64).collect();
    let scale: Vec<f64> = (0..n_units)
        .map(|j| {
            if hi[j] <= lo[j] {
                0.0
            } else {
                bins as f64 / (hi[j] as f64 - lo[j] as f64)
            }
        })
        .collect();
    let cells = n_units * bins * k;
    let tables = acts
        .par_chunks(chunk)
        .enumerate()
        .fold(
            || vec![0u32; cells],
            |mut table, (i, block)| {
                let mut codes = vec![0u32; n_units];
                for (r, row) in block.chunks_exact(n_units).enumerate() {
                    let c = labels[i * MI_ROW_CHUNK + r] as usize;
                    for j in 0..n_units {
                        // As in `bin_codes`: 0 <= value <= bins, so the conversion is floor.
                        codes[j] = (((row[j] as f64 - base[j]) * scale[j]) as i32).min(last) as u32;
                    }
                    for (j, &b) in codes.iter().enumerate() {
                        table[(j * bins + b as usize) * k + c] += 1;
                    }
                }
                table
            },
        )
        .reduce(
            || vec![0u32; cells],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        );
    let mut counts = vec![0u64; k];
    for &c in labels {
        counts[c as usize] += 1;
    }
    let n = labels.len() as u64;
    let mut table64 = vec![0u64; bins * k];
    Ok((0..n_units)
        .map(|j| {
            for (t, &v) in table64
                .iter_mut()
                .zip(&tables[j * bins * k..(j + 1) * bins * k])
            {
                *t = v as u64;
            }
            UnitRow {
                n,
                counts: counts.clone(),
                means: vec![f64::NAN; k],
                mean: f64::NAN,
                std: f64::NAN,
                min: lo[j] as f64,
                max: hi[j] as f64,
                active: f64::NAN,
                si: f64::NAN,
                preferred: -1,
                mi: mi_from_table(&table64, bins, k, mo.miller_madow),
                mi_shuffled: f64::NAN,
                class_entropy: entropy_bits(&counts),
            }
        })
        .collect())
}

/// Whether a dense block can skip the transpose: equal-width (or no) MI without shuffles.
fn row_path_applies(opts: &SummaryOptions) -> bool {
    match &opts.mutual_info {
        None => true,
        Some(mo) => {
            mo.binning == Binning::EqualWidth
                && mo.shuffles == 0
                && UNIT_BLOCK * mo.bins * opts.n_classes <= ROW_PATH_MAX_CELLS
        }
    }
}

/// Dense block `u0..u0 + w`, row by row: a row shares one label, so every per-class update is
/// a vector update across the block's units. Same per-unit operations as `summarize_column`.
fn summarize_block_rows(
    acts: &[f32],
    n_units: usize,
    u0: usize,
    w: usize,
    labels: &[u32],
    opts: &SummaryOptions,
) -> KernelResult<Vec<UnitRow>> {
    let k = opts.n_classes;
    let mut counts = vec![0u64; k];
    let mut sums = vec![0f64; k * w];
    let mut pos = vec![0f64; k * w];
    let x0: Vec<f64> = acts[u0..u0 + w].iter().map(|&x| x as f64).collect();
    let (mut s1, mut s2) = (vec![0f64; w], vec![0f64; w]);
    let (mut lo, mut hi) = (vec![f32::INFINITY; w], vec![f32::NEG_INFINITY; w]);
    let mut active = vec![0u64; w];
    if !wants_moments(opts) {
        // MI only: counts, min, max and a finiteness flag (selects, so the loop vectorizes).
        // `x * 0` is 0 for a finite x and NaN otherwise, so `check` ends NaN on a bad value.
        let mut check = vec![0f32; w];
        for (s, row) in acts.chunks_exact(n_units).enumerate() {
            prefetch_row_segment(acts, (s + PREFETCH_ROWS) * n_units + u0, w);
            let row = &row[u0..u0 + w];
            counts[labels[s] as usize] += 1;
            let (lo, hi, check) = (&mut lo[..w], &mut hi[..w], &mut check[..w]);
            for j in 0..w {
                let x = row[j];
                lo[j] = if x < lo[j] { x } else { lo[j] };
                hi[j] = if x > hi[j] { x } else { hi[j] };
                check[j] += x * 0.0;
            }
        }
        for (j, c) in check.iter().enumerate() {
            if !c.is_finite() {
                s1[j] = f64::NAN; // reported below
            }
        }
    }
    for (s, row) in acts.chunks_exact(n_units).enumerate() {
        if !wants_moments(opts) {
            break;
        }
        prefetch_row_segment(acts, (s + PREFETCH_ROWS) * n_units + u0, w);
        let row = &row[u0..u0 + w];
        let c = labels[s] as usize;
        counts[c] += 1;
        let sc = &mut sums[c * w..(c + 1) * w];
        let pc = &mut pos[c * w..(c + 1) * w];
        let (s1, s2, lo, hi, active, x0) = (
            &mut s1[..w],
            &mut s2[..w],
            &mut lo[..w],
            &mut hi[..w],
            &mut active[..w],
            &x0[..w],
        );
        for j in 0..w {
            let x = row[j];
            let xf = x as f64;
            sc[j] += xf;
            pc[j] += xf.max(0.0);
            let d = xf - x0[j];
            s1[j] += d;
            s2[j] += d * d;
            lo[j] = lo[j].min(x);
            hi[j] = hi[j].max(x);
            active[j] += (x > 0.0) as u64;
        }
    }
    // A non-finite activity leaves a non-finite shifted sum (f32 sums cannot overflow f64);
    // find the first one for the message.
    for j in 0..w {
        if !s1[j].is_finite() {
            let (s, x) = acts
                .chunks_exact(n_units)
                .map(|r| r[u0 + j])
                .enumerate()
                .find(|(_, x)| !x.is_finite())
                .unwrap_or((0, f32::NAN));
            return Err(non_finite(u0 + j, x, s));
        }
    }
    let n = labels.len() as u64;
    let mut rows = Vec::with_capacity(w);
    for j in 0..w {
        let m = Moments {
            n,
            counts: counts.clone(),
            sums: (0..k).map(|c| sums[c * w + j]).collect(),
            pos_sums: (0..k).map(|c| pos[c * w + j]).collect(),
            x0: x0[j],
            s1: s1[j],
            s2: s2[j],
            lo: lo[j],
            hi: hi[j],
            active: active[j],
        };
        rows.push(finish_unit(u0 + j, m, opts)?);
    }
    if let Some(mo) = &opts.mutual_info {
        // Second pass: equal-width bin codes (as in `bin_codes`) into one table per unit.
        let bins = mo.bins;
        let last = (bins - 1) as u32;
        let base: Vec<f64> = lo.iter().map(|&v| v as f64).collect();
        let scale: Vec<f64> = (0..w)
            .map(|j| {
                if hi[j] <= lo[j] {
                    0.0
                } else {
                    bins as f64 / (hi[j] as f64 - lo[j] as f64)
                }
            })
            .collect();
        let mut tables = vec![0u64; w * bins * k];
        let mut codes = vec![0u32; w];
        for (s, row) in acts.chunks_exact(n_units).enumerate() {
            prefetch_row_segment(acts, (s + PREFETCH_ROWS) * n_units + u0, w);
            let row = &row[u0..u0 + w];
            let c = labels[s] as usize;
            for j in 0..w {
                // 0 <= value <= bins (x >= min): the i32 conversion is exact floor.
                codes[j] = (((row[j] as f64 - base[j]) * scale[j]) as i32).min(last as i32) as u32;
            }
            for (j, &b) in codes.iter().enumerate() {
                tables[(j * bins + b as usize) * k + c] += 1;
            }
        }
        for (j, row) in rows.iter_mut().enumerate() {
            row.mi = mi_from_table(
                &tables[j * bins * k..(j + 1) * bins * k],
                bins,
                k,
                mo.miller_madow,
            );
            row.mi_shuffled = f64::NAN;
            row.class_entropy = entropy_bits(&row.counts);
        }
    }
    Ok(rows)
}

fn assemble(mut rows: Vec<UnitRow>, opts: &SummaryOptions) -> UnitSummary {
    if !wants_moments(opts) {
        for r in &mut rows {
            r.means.iter_mut().for_each(|m| *m = f64::NAN);
            (r.mean, r.std, r.active) = (f64::NAN, f64::NAN, f64::NAN);
        }
    }
    let n_units = rows.len();
    let mut s = UnitSummary {
        n_units,
        n_classes: opts.n_classes,
        ..Default::default()
    };
    for r in rows {
        s.n_samples.push(r.n);
        s.class_counts.extend_from_slice(&r.counts);
        s.class_means.extend_from_slice(&r.means);
        s.mean.push(r.mean);
        s.std.push(r.std);
        s.min.push(r.min);
        s.max.push(r.max);
        s.fraction_active.push(r.active);
        if opts.selectivity.is_some() {
            s.selectivity.push(r.si);
            s.preferred_class.push(r.preferred);
        }
        if opts.mutual_info.is_some() {
            s.mi.push(r.mi);
            s.mi_shuffled.push(r.mi_shuffled);
            s.class_entropy.push(r.class_entropy);
        }
    }
    s
}

/// First error in unit order (so the message does not depend on scheduling), else the rows.
fn first_error(parts: Vec<KernelResult<Vec<UnitRow>>>) -> KernelResult<Vec<UnitRow>> {
    let mut rows = Vec::new();
    for p in parts {
        rows.extend(p?);
    }
    Ok(rows)
}

/// Statistics of every unit of a dense row-major `(n_samples, n_units)` array.
pub fn summarize_dense(
    acts: &[f32],
    n_samples: usize,
    n_units: usize,
    labels: &[i64],
    opts: &SummaryOptions,
) -> KernelResult<UnitSummary> {
    check_options(opts)?;
    if acts.len() != n_samples * n_units {
        return Err(KernelError::Shape(format!(
            "activity has {} values, not n_samples x n_units = {} x {}",
            acts.len(),
            n_samples,
            n_units
        )));
    }
    if labels.len() != n_samples {
        return Err(KernelError::Shape(format!(
            "{} labels for {} samples: give one label per row of the activity array",
            labels.len(),
            n_samples
        )));
    }
    if n_samples == 0 || n_units == 0 {
        return Err(KernelError::Shape(format!(
            "activity array is empty ({n_samples} samples x {n_units} units): give at least one \
             of each"
        )));
    }
    let labels = check_labels(labels, opts.n_classes)?;
    if let Some(mo) = sequential_mi_applies(opts, n_units) {
        return Ok(assemble(
            mi_only_sequential(acts, n_units, &labels, opts, &mo)?,
            opts,
        ));
    }
    let n_blocks = n_units.div_ceil(UNIT_BLOCK);
    let parts: Vec<KernelResult<Vec<UnitRow>>> = (0..n_blocks)
        .into_par_iter()
        .map(|b| {
            let u0 = b * UNIT_BLOCK;
            let width = UNIT_BLOCK.min(n_units - u0);
            if row_path_applies(opts) {
                return summarize_block_rows(acts, n_units, u0, width, &labels, opts);
            }
            // Transpose the block once: each row contributes one contiguous segment.
            let mut cols = vec![0f32; width * n_samples];
            for (s, row) in acts.chunks_exact(n_units).enumerate() {
                prefetch_row_segment(acts, (s + PREFETCH_ROWS) * n_units + u0, width);
                for (col, &x) in cols.chunks_exact_mut(n_samples).zip(&row[u0..u0 + width]) {
                    col[s] = x;
                }
            }
            let mut scratch = MiScratch::default();
            (0..width)
                .map(|j| {
                    let col = &cols[j * n_samples..(j + 1) * n_samples];
                    summarize_column(u0 + j, col, &labels, opts, &mut scratch)
                })
                .collect()
        })
        .collect();
    Ok(assemble(first_error(parts)?, opts))
}

/// Statistics of every unit `0..n_units` from long-format records, one per (sample, unit).
/// Each unit's records are taken in the order they come (see the module docs for the paths).
pub fn summarize_long(
    units: &[i64],
    labels: &[i64],
    values: &[f32],
    n_units: usize,
    opts: &SummaryOptions,
) -> KernelResult<UnitSummary> {
    check_options(opts)?;
    let n = units.len();
    if labels.len() != n || values.len() != n {
        return Err(KernelError::Shape(format!(
            "records disagree in length: {} units, {} labels, {} values",
            n,
            labels.len(),
            values.len()
        )));
    }
    if let Some(row_labels) = interleaved_rows(units, labels, n_units) {
        // The records are a flattened row-major (samples, units) array: use the dense path,
        // which performs the same per-unit operations in the same order.
        return summarize_dense(values, n / n_units, n_units, &row_labels, opts);
    }
    let (ranges, grouped_values, grouped_labels) =
        match group_by_unit(units, labels, values, n_units, opts)? {
            Grouping::Grouped(g) => g,
            Grouping::Scattered => {
                return summarize_scattered(units, labels, values, n_units, opts)
            }
        };
    let n_blocks = n_units.div_ceil(UNIT_BLOCK);
    let parts: Vec<KernelResult<Vec<UnitRow>>> = (0..n_blocks)
        .into_par_iter()
        .map(|b| {
            let mut scratch = MiScratch::default();
            (b * UNIT_BLOCK..((b + 1) * UNIT_BLOCK).min(n_units))
                .map(|u| {
                    let r = ranges[u].clone();
                    summarize_column(
                        u,
                        &grouped_values[r.clone()],
                        &grouped_labels[r],
                        opts,
                        &mut scratch,
                    )
                })
                .collect()
        })
        .collect();
    Ok(assemble(first_error(parts)?, opts))
}

/// Rows per chunk when checking for the interleaved layout.
const ROW_CHECK_CHUNK: usize = 4096;

/// The per-row labels when record `i` is unit `i % n_units` of row `i / n_units` and every
/// record of a row has the row's label (the layout of a flattened dense array); else None.
fn interleaved_rows(units: &[i64], labels: &[i64], n_units: usize) -> Option<Vec<i64>> {
    let n = units.len();
    if n_units == 0 || n == 0 || n % n_units != 0 {
        return None;
    }
    let row_ok = |(unit_row, label_row): (&[i64], &[i64])| {
        unit_row.iter().enumerate().all(|(j, &u)| u == j as i64)
            && label_row.iter().all(|&l| l == label_row[0])
    };
    let ok = units
        .par_chunks(n_units * ROW_CHECK_CHUNK)
        .zip(labels.par_chunks(n_units * ROW_CHECK_CHUNK))
        .all(|(uc, lc)| {
            uc.chunks_exact(n_units)
                .zip(lc.chunks_exact(n_units))
                .all(row_ok)
        });
    ok.then(|| labels.iter().step_by(n_units).copied().collect())
}

/// Each unit's records: its range in the values and labels (which keep each unit's record
/// order).
type Grouped<'a> = (Vec<Range<usize>>, Cow<'a, [f32]>, Vec<u32>);

enum Grouping<'a> {
    Grouped(Grouped<'a>),
    /// Units interleaved in no simple order, and the statistics can be accumulated in record
    /// order instead (see `summarize_scattered`).
    Scattered,
}

/// The start of each unit's records when each unit's records form one contiguous run (any
/// unit order); None otherwise. Absent units get `usize::MAX`.
fn unit_runs(units: &[i64], n_units: usize) -> Option<Vec<usize>> {
    let mut start = vec![usize::MAX; n_units];
    let mut prev = -1i64;
    for (i, &u) in units.iter().enumerate() {
        if u != prev {
            let slot = &mut start[u as usize];
            if *slot != usize::MAX {
                return None;
            }
            *slot = i;
            prev = u;
        }
    }
    Some(start)
}

/// Validates the records and finds each unit's records: in place when each unit's records are
/// contiguous, `Scattered` when they may be accumulated in record order, else by a stable
/// counting sort in fixed chunks (chunk `i` writes its records of unit `u` after those of
/// chunks `0..i`, so the output keeps record order).
fn group_by_unit<'a>(
    units: &[i64],
    labels: &[i64],
    values: &'a [f32],
    n_units: usize,
    opts: &SummaryOptions,
) -> KernelResult<Grouping<'a>> {
    let n_classes = opts.n_classes;
    let n = units.len();
    let chunk = GROUP_CHUNK.max(n_units);
    let n_chunks = n.div_ceil(chunk).max(1);
    let chunk_counts: Vec<KernelResult<Vec<usize>>> = (0..n_chunks)
        .into_par_iter()
        .map(|i| {
            let mut counts = vec![0usize; n_units];
            let lo = i * chunk;
            let hi = ((i + 1) * chunk).min(n);
            for r in lo..hi {
                let u = units[r];
                if u < 0 || u as u64 >= n_units as u64 {
                    return Err(KernelError::Value(format!(
                        "unit index {u} is outside 0..{n_units}: unit indices must be 0..{}",
                        n_units.saturating_sub(1)
                    )));
                }
                let l = labels[r];
                if l < 0 || l as u64 >= n_classes as u64 {
                    return Err(KernelError::Value(format!(
                        "label {l} is outside 0..{n_classes}: labels must be class indices 0..{}",
                        n_classes - 1
                    )));
                }
                counts[u as usize] += 1;
            }
            Ok(counts)
        })
        .collect();
    let mut chunk_counts = chunk_counts.into_iter().collect::<KernelResult<Vec<_>>>()?;
    // Unit offsets, then each chunk's starting position within each unit.
    let mut offsets = vec![0usize; n_units + 1];
    for counts in &chunk_counts {
        for (u, &c) in counts.iter().enumerate() {
            offsets[u + 1] += c;
        }
    }
    for u in 0..n_units {
        offsets[u + 1] += offsets[u];
    }
    if let Some(start) = unit_runs(units, n_units) {
        // Already grouped (e.g. unit-major records): use the values in place.
        let ranges = (0..n_units)
            .map(|u| match start[u] {
                usize::MAX => 0..0,
                b => b..b + (offsets[u + 1] - offsets[u]),
            })
            .collect();
        let labels = labels.par_iter().map(|&l| l as u32).collect();
        return Ok(Grouping::Grouped((ranges, Cow::Borrowed(values), labels)));
    }
    if scattered_applies(opts, n_units) {
        return Ok(Grouping::Scattered);
    }
    let mut cursor = offsets[..n_units].to_vec();
    for counts in chunk_counts.iter_mut() {
        for (u, c) in counts.iter_mut().enumerate() {
            let start = cursor[u];
            cursor[u] += *c;
            *c = start;
        }
    }
    let mut out_values = vec![0f32; n];
    let mut out_labels = vec![0u32; n];
    let vp = SyncPtr(out_values.as_mut_ptr());
    let lp = SyncPtr(out_labels.as_mut_ptr());
    chunk_counts
        .into_par_iter()
        .enumerate()
        .for_each(|(i, mut pos)| {
            let (vp, lp) = (&vp, &lp);
            let lo = i * chunk;
            let hi = ((i + 1) * chunk).min(n);
            for r in lo..hi {
                let u = units[r] as usize;
                let p = pos[u];
                pos[u] += 1;
                // SAFETY: the positions handed to chunk `i` for unit `u` are the disjoint range
                // that the prefix sums above reserved for it, all inside `0..n`.
                unsafe {
                    *vp.0.add(p) = values[r];
                    *lp.0.add(p) = labels[r] as u32;
                }
            }
        });
    let ranges = (0..n_units).map(|u| offsets[u]..offsets[u + 1]).collect();
    Ok(Grouping::Grouped((
        ranges,
        Cow::Owned(out_values),
        out_labels,
    )))
}

/// Largest `n_units * n_classes` for accumulating scattered records (per-chunk tables).
const SCATTERED_MAX_CELLS: usize = 1 << 18;

/// At most this many record chunks when accumulating scattered records (bounds memory).
const SCATTERED_MAX_CHUNKS: usize = 16;

/// Whether scattered records can be summarized without regrouping: no equal-frequency bins
/// and no shuffles (both need each unit's records together).
fn scattered_applies(opts: &SummaryOptions, n_units: usize) -> bool {
    let small = n_units.saturating_mul(opts.n_classes) <= SCATTERED_MAX_CELLS;
    small
        && match &opts.mutual_info {
            None => true,
            Some(mo) => {
                mo.binning == Binning::EqualWidth
                    && mo.shuffles == 0
                    && n_units * mo.bins * opts.n_classes <= MI_SEQUENTIAL_MAX_CELLS
            }
        }
}

/// Per-chunk sums of scattered records, unit-major: `k` class cells then unit totals.
struct ChunkSums {
    counts: Vec<u64>,
    sums: Vec<f64>,
    pos: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    active: Vec<u64>,
    bad: Option<(usize, f32)>,
}

/// Statistics of records in no useful order (labels and units already validated), without
/// regrouping: fixed chunks of records (their number depends only on the input size) are
/// summed separately and merged in chunk order, so the result does not depend on the thread
/// count. It equals the per-unit path's up to the rounding of the float sums; min, max,
/// counts and MI (integer contingency tables) are exact.
fn summarize_scattered(
    units: &[i64],
    labels: &[i64],
    values: &[f32],
    n_units: usize,
    opts: &SummaryOptions,
) -> KernelResult<UnitSummary> {
    let k = opts.n_classes;
    let n = units.len();
    let chunk = GROUP_CHUNK.max(n.div_ceil(SCATTERED_MAX_CHUNKS)).max(1);
    // The shift of each unit's sums: its first value, as in the per-unit path.
    let mut x0 = vec![f64::NAN; n_units];
    let mut missing = n_units;
    for (&u, &x) in units.iter().zip(values) {
        let slot = &mut x0[u as usize];
        if slot.is_nan() && x.is_finite() {
            *slot = x as f64;
            missing -= 1;
            if missing == 0 {
                break;
            }
        }
    }
    let parts: Vec<ChunkSums> = values
        .par_chunks(chunk)
        .zip(units.par_chunks(chunk))
        .zip(labels.par_chunks(chunk))
        .enumerate()
        .map(|(i, ((vals, us), ls))| {
            let mut a = ChunkSums {
                counts: vec![0; n_units * k],
                sums: vec![0.0; n_units * k],
                pos: vec![0.0; n_units * k],
                s1: vec![0.0; n_units],
                s2: vec![0.0; n_units],
                lo: vec![f32::INFINITY; n_units],
                hi: vec![f32::NEG_INFINITY; n_units],
                active: vec![0; n_units],
                bad: None,
            };
            for (r, ((&x, &u), &c)) in vals.iter().zip(us).zip(ls).enumerate() {
                let u = u as usize;
                if !x.is_finite() {
                    a.bad.get_or_insert((i * chunk + r, x));
                    continue;
                }
                let cell = u * k + c as usize;
                let xf = x as f64;
                a.counts[cell] += 1;
                a.sums[cell] += xf;
                a.pos[cell] += xf.max(0.0);
                let d = xf - x0[u];
                a.s1[u] += d;
                a.s2[u] += d * d;
                a.lo[u] = a.lo[u].min(x);
                a.hi[u] = a.hi[u].max(x);
                a.active[u] += (x > 0.0) as u64;
            }
            a
        })
        .collect();
    if let Some((r, x)) = parts.iter().find_map(|p| p.bad) {
        return Err(KernelError::Value(format!(
            "unit {} has a non-finite activity ({x}) at record {r}: drop or impute NaN and inf \
             values first",
            units[r]
        )));
    }
    let mut total = parts.into_iter();
    let mut acc = total.next().expect("at least one chunk");
    for p in total {
        // In chunk order, so the float sums round the same way for any thread count.
        acc.counts
            .iter_mut()
            .zip(&p.counts)
            .for_each(|(a, b)| *a += b);
        acc.sums.iter_mut().zip(&p.sums).for_each(|(a, b)| *a += b);
        acc.pos.iter_mut().zip(&p.pos).for_each(|(a, b)| *a += b);
        acc.s1.iter_mut().zip(&p.s1).for_each(|(a, b)| *a += b);
        acc.s2.iter_mut().zip(&p.s2).for_each(|(a, b)| *a += b);
        acc.lo
            .iter_mut()
            .zip(&p.lo)
            .for_each(|(a, b)| *a = a.min(*b));
        acc.hi
            .iter_mut()
            .zip(&p.hi)
            .for_each(|(a, b)| *a = a.max(*b));
        acc.active
            .iter_mut()
            .zip(&p.active)
            .for_each(|(a, b)| *a += b);
    }
    let mut rows = Vec::with_capacity(n_units);
    for (u, &shift) in x0.iter().enumerate() {
        let cells = u * k..(u + 1) * k;
        let counts = acc.counts[cells.clone()].to_vec();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            rows.push(empty_row(k));
            continue;
        }
        let m = Moments {
            n: total,
            counts,
            sums: acc.sums[cells.clone()].to_vec(),
            pos_sums: acc.pos[cells].to_vec(),
            x0: shift,
            s1: acc.s1[u],
            s2: acc.s2[u],
            lo: acc.lo[u],
            hi: acc.hi[u],
            active: acc.active[u],
        };
        rows.push(finish_unit(u, m, opts)?);
    }
    if let Some(mo) = &opts.mutual_info {
        let bins = mo.bins;
        let last = (bins - 1) as i32;
        let base: Vec<f64> = acc.lo.iter().map(|&v| v as f64).collect();
        let scale: Vec<f64> = (0..n_units)
            .map(|u| {
                if acc.hi[u] <= acc.lo[u] {
                    0.0
                } else {
                    bins as f64 / (acc.hi[u] as f64 - acc.lo[u] as f64)
                }
            })
            .collect();
        let cells = n_units * bins * k;
        // Integer counts: exact in any merge order.
        let tables = values
            .par_chunks(chunk)
            .zip(units.par_chunks(chunk))
            .zip(labels.par_chunks(chunk))
            .fold(
                || vec![0u32; cells],
                |mut table, ((vals, us), ls)| {
                    for ((&x, &u), &c) in vals.iter().zip(us).zip(ls) {
                        let u = u as usize;
                        let b = (((x as f64 - base[u]) * scale[u]) as i32).min(last) as usize;
                        table[(u * bins + b) * k + c as usize] += 1;
                    }
                    table
                },
            )
            .reduce(
                || vec![0u32; cells],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                    a
                },
            );
        let mut table64 = vec![0u64; bins * k];
        for (u, row) in rows.iter_mut().enumerate() {
            if row.n == 0 {
                continue;
            }
            for (t, &v) in table64
                .iter_mut()
                .zip(&tables[u * bins * k..(u + 1) * bins * k])
            {
                *t = v as u64;
            }
            row.mi = mi_from_table(&table64, bins, k, mo.miller_madow);
            row.mi_shuffled = f64::NAN;
            row.class_entropy = entropy_bits(&row.counts);
        }
    }
    Ok(assemble(rows, opts))
}

struct SyncPtr<T>(*mut T);
// SAFETY: used only for writes to disjoint indices (see `group_by_unit`).
unsafe impl<T> Sync for SyncPtr<T> {}
unsafe impl<T> Send for SyncPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(k: usize, mi: bool) -> SummaryOptions {
        SummaryOptions {
            n_classes: k,
            selectivity: Some(NegativePolicy::Error),
            moments: true,
            mutual_info: mi.then_some(MiOptions {
                bins: 4,
                binning: Binning::EqualWidth,
                miller_madow: false,
                shuffles: 2,
                seed: 1,
            }),
        }
    }

    /// A pseudo-random (n_samples, n_units) array, labels cycling over k classes.
    fn data(n_samples: usize, n_units: usize, k: usize) -> (Vec<f32>, Vec<i64>) {
        let mut state = 12345u64;
        let acts = (0..n_samples * n_units)
            .map(|i| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let u = (i % n_units) as f32;
                ((state >> 40) as f32 / (1u64 << 24) as f32) * (1.0 + u) + (i / n_units % k) as f32
            })
            .collect();
        let labels = (0..n_samples).map(|s| (s % k) as i64).collect();
        (acts, labels)
    }

    #[test]
    fn class_means_and_moments_match_naive() {
        let (n, u, k) = (50, 19, 3);
        let (acts, labels) = data(n, u, k);
        let s = summarize_dense(&acts, n, u, &labels, &opts(k, false)).unwrap();
        for unit in 0..u {
            let col: Vec<f64> = (0..n).map(|r| acts[r * u + unit] as f64).collect();
            let mean = col.iter().sum::<f64>() / n as f64;
            let var = col.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
            assert!((s.mean[unit] - mean).abs() < 1e-9);
            assert!((s.std[unit] - var.sqrt()).abs() < 1e-9);
            for c in 0..k {
                let vals: Vec<f64> = (0..n)
                    .filter(|&r| labels[r] == c as i64)
                    .map(|r| col[r])
                    .collect();
                let m = vals.iter().sum::<f64>() / vals.len() as f64;
                assert_eq!(s.class_counts[unit * k + c], vals.len() as u64);
                assert!((s.class_means[unit * k + c] - m).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn selectivity_examples() {
        // unit 0: active on class 1 only -> SI 1; unit 1: same on every class -> SI 0;
        // unit 2: silent -> SI 0; unit 3: means (1, 3) -> (3 - 1) / (3 + 1) = 0.5.
        let labels = [0i64, 1, 0, 1];
        let acts = [
            0.0f32, 2.0, 0.0, 1.0, //
            5.0, 2.0, 0.0, 3.0, //
            0.0, 2.0, 0.0, 1.0, //
            5.0, 2.0, 0.0, 3.0,
        ];
        let s = summarize_dense(&acts, 4, 4, &labels, &opts(2, false)).unwrap();
        assert_eq!(s.selectivity, vec![1.0, 0.0, 0.0, 0.5]);
        assert_eq!(s.preferred_class, vec![1, 0, 0, 1]);
        assert_eq!(s.fraction_active, vec![0.5, 1.0, 0.0, 1.0]);
    }

    #[test]
    fn negative_policies() {
        let labels = [0i64, 1];
        let acts = [-1.0f32, 1.0];
        let mut o = opts(2, false);
        let err = summarize_dense(&acts, 2, 1, &labels, &o).unwrap_err();
        assert!(err.to_string().contains("negative activity"));
        o.selectivity = Some(NegativePolicy::Shift);
        // means (0, 2) after shifting by 1 -> SI 1
        assert_eq!(
            summarize_dense(&acts, 2, 1, &labels, &o)
                .unwrap()
                .selectivity,
            vec![1.0]
        );
        o.selectivity = Some(NegativePolicy::Clip);
        assert_eq!(
            summarize_dense(&acts, 2, 1, &labels, &o)
                .unwrap()
                .selectivity,
            vec![1.0]
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let o = opts(2, true);
        assert!(summarize_dense(&[1.0, f32::NAN], 2, 1, &[0, 1], &o).is_err());
        assert!(summarize_dense(&[1.0, 2.0], 2, 1, &[0, 2], &o).is_err());
        assert!(summarize_dense(&[1.0, 2.0], 2, 1, &[0, -1], &o).is_err());
        assert!(summarize_dense(&[1.0, 2.0], 2, 1, &[0], &o).is_err());
        assert!(summarize_dense(&[1.0, 2.0], 2, 1, &[0, 0], &o).is_err()); // class 1 empty
        assert!(summarize_dense(&[1.0, 2.0], 2, 1, &[0, 1], &opts(1, true)).is_err());
        assert!(summarize_long(&[0, 3], &[0, 1], &[1.0, 2.0], 2, &o).is_err());
        assert!(summarize_long(&[0, 1], &[0, 1], &[1.0], 2, &o).is_err());
    }

    /// Bit-for-bit equality that also matches NaN with NaN (Debug prints floats exactly).
    fn assert_same(a: &UnitSummary, b: &UnitSummary) {
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
    }

    #[test]
    fn long_matches_dense_and_thread_count() {
        let (n, u, k) = (40, 137, 4);
        let (acts, labels) = data(n, u, k);
        let o = opts(k, true);
        // Three record orders, one per long-format path: unit-major reversed (grouped by a
        // counting sort), unit-major (used in place), sample-major (the dense layout).
        let mut orders: Vec<(Vec<i64>, Vec<i64>, Vec<f32>)> = Vec::new();
        for unit_major in [true, false] {
            let mut rec = (Vec::new(), Vec::new(), Vec::new());
            let mut push = |unit: usize, s: usize| {
                rec.0.push(unit as i64);
                rec.1.push(labels[s]);
                rec.2.push(acts[s * u + unit]);
            };
            if unit_major {
                (0..u).for_each(|unit| (0..n).for_each(|s| push(unit, s)));
            } else {
                (0..n).for_each(|s| (0..u).for_each(|unit| push(unit, s)));
            }
            orders.push(rec);
        }
        let mut reversed = (Vec::new(), Vec::new(), Vec::new());
        for unit in (0..u).rev() {
            let r = unit * n..(unit + 1) * n;
            reversed.0.extend_from_slice(&orders[0].0[r.clone()]);
            reversed.1.extend_from_slice(&orders[0].1[r.clone()]);
            reversed.2.extend_from_slice(&orders[0].2[r]);
        }
        orders.push(reversed);
        // Scrambled: regrouped by the counting sort when the options need whole units
        // (shuffles, equal frequency), else accumulated in record order (exact only for
        // integer results; see `scattered_records_match_dense_...`).
        // Sample-major with the units of each row rotated: each unit keeps sample order.
        let mut scrambled = (Vec::new(), Vec::new(), Vec::new());
        for s in 0..n {
            for j in 0..u {
                let unit = (j + 7 * s) % u;
                scrambled.0.push(unit as i64);
                scrambled.1.push(labels[s]);
                scrambled.2.push(acts[s * u + unit]);
            }
        }
        assert!(unit_runs(&scrambled.0, u).is_none());
        assert!(interleaved_rows(&scrambled.0, &scrambled.1, u).is_none());
        assert!(interleaved_rows(&orders[1].0, &orders[1].1, u).is_some());
        assert!(interleaved_rows(&orders[0].0, &orders[0].1, u).is_none());
        // Row-wise dense path (no shuffles, equal width), column path (shuffles, equal
        // frequency), no MI at all: all bit-identical to the long layout.
        let mut variants = vec![o, opts(k, false)];
        let mut row_path = o;
        row_path.mutual_info.as_mut().unwrap().shuffles = 0;
        row_path.mutual_info.as_mut().unwrap().miller_madow = true;
        variants.push(row_path);
        let mut mi_only = row_path;
        (mi_only.selectivity, mi_only.moments) = (None, false);
        variants.push(mi_only);
        let mut freq = o;
        freq.mutual_info.as_mut().unwrap().binning = Binning::EqualFrequency;
        variants.push(freq);
        for o in variants {
            let dense = summarize_dense(&acts, n, u, &labels, &o).unwrap();
            for (units_l, labels_l, values_l) in &orders {
                let long = summarize_long(units_l, labels_l, values_l, u, &o).unwrap();
                assert_same(&dense, &long);
            }
            if !scattered_applies(&o, u) {
                let (us, ls, vs) = &scrambled;
                assert_same(&dense, &summarize_long(us, ls, vs, u, &o).unwrap());
            }
            let (units_l, labels_l, values_l) = &orders[2];
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap();
                let again = pool.install(|| summarize_dense(&acts, n, u, &labels, &o).unwrap());
                assert_same(&dense, &again);
                let again =
                    pool.install(|| summarize_long(units_l, labels_l, values_l, u, &o).unwrap());
                assert_same(&dense, &again);
            }
        }
    }

    #[test]
    fn sequential_mi_path_over_many_row_chunks() {
        let (n, u, k) = (MI_ROW_CHUNK * 3 + 7, 21, 5);
        let (acts, labels) = data(n, u, k);
        let mut o = opts(k, true);
        (o.selectivity, o.moments) = (None, false);
        o.mutual_info.as_mut().unwrap().shuffles = 0;
        assert!(sequential_mi_applies(&o, u).is_some());
        let dense = summarize_dense(&acts, n, u, &labels, &o).unwrap();
        let mut units_l = Vec::new();
        let mut labels_l = Vec::new();
        let mut values_l = Vec::new();
        for unit in 0..u {
            for s in 0..n {
                units_l.push(unit as i64);
                labels_l.push(labels[s]);
                values_l.push(acts[s * u + unit]);
            }
        }
        let long = summarize_long(&units_l, &labels_l, &values_l, u, &o).unwrap();
        assert_same(&dense, &long);
        for threads in [1, 2, 5] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let again = pool.install(|| summarize_dense(&acts, n, u, &labels, &o).unwrap());
            assert_same(&dense, &again);
        }
        let mut bad = acts.clone();
        bad[(MI_ROW_CHUNK + 3) * u + 4] = f32::INFINITY;
        let err = summarize_dense(&bad, n, u, &labels, &o).unwrap_err();
        assert!(err.to_string().contains(&format!(
            "unit 4 has a non-finite activity (inf) at sample {}",
            MI_ROW_CHUNK + 3
        )));
    }

    #[test]
    fn scattered_records_match_dense_and_do_not_depend_on_threads() {
        // More records than one chunk, in a scrambled order.
        let (n, u, k) = (1100, 1000, 3);
        let (acts, labels) = data(n, u, k);
        let o = {
            let mut o = opts(k, true);
            o.mutual_info.as_mut().unwrap().shuffles = 0;
            o.mutual_info.as_mut().unwrap().miller_madow = true;
            o
        };
        assert!(scattered_applies(&o, u));
        let dense = summarize_dense(&acts, n, u, &labels, &o).unwrap();
        let total = n * u;
        let stride = 7919; // prime, coprime with total: a permutation of the records
        let (mut us, mut ls, mut vs) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..total {
            let r = (i * stride) % total;
            us.push((r % u) as i64);
            ls.push(labels[r / u]);
            vs.push(acts[r]);
        }
        assert!(unit_runs(&us, u).is_none() && interleaved_rows(&us, &ls, u).is_none());
        let long = summarize_long(&us, &ls, &vs, u, &o).unwrap();
        assert_eq!(long.class_counts, dense.class_counts);
        assert_eq!((&long.min, &long.max), (&dense.min, &dense.max));
        assert_eq!(long.mi, dense.mi);
        assert_eq!(long.preferred_class, dense.preferred_class);
        let close = |a: &[f64], b: &[f64]| {
            a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= 1e-9 * (1.0 + y.abs()))
        };
        assert!(close(&long.class_means, &dense.class_means));
        assert!(close(&long.mean, &dense.mean) && close(&long.std, &dense.std));
        assert!(close(&long.selectivity, &dense.selectivity));
        assert_eq!(long.fraction_active, dense.fraction_active);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let again = pool.install(|| summarize_long(&us, &ls, &vs, u, &o).unwrap());
            assert_same(&long, &again);
        }
        let o2 = SummaryOptions { n_classes: 2, ..o };
        let s =
            summarize_long(&[0, 2, 0, 2], &[0, 1, 1, 0], &[1.0, 2.0, 3.0, 4.0], 3, &o2).unwrap();
        assert_eq!(s.n_samples, vec![2, 0, 2]);
        let mut bad = vs.clone();
        bad[5] = f32::NAN;
        assert!(summarize_long(&us, &ls, &bad, u, &o).is_err());
    }

    #[test]
    fn empty_units_in_long_format_are_marked() {
        let o = opts(2, true);
        let s = summarize_long(&[0, 0, 2, 2], &[0, 1, 0, 1], &[1.0, 2.0, 3.0, 4.0], 3, &o).unwrap();
        assert_eq!(s.n_samples, vec![2, 0, 2]);
        assert_eq!(s.preferred_class, vec![1, -1, 1]);
        assert!(s.selectivity[1].is_nan());
    }
}

#[cfg(test)]
mod timing {
    use super::*;
    #[test]
    #[ignore]
    fn time_phases() {
        let (n, u, k) = (10_000usize, 1000usize, 10usize);
        let mut state = 1u64;
        let acts: Vec<f32> = (0..n * u)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.3).max(0.0)
            })
            .collect();
        let labels: Vec<i64> = (0..n).map(|s| (s * 7 % k) as i64).collect();
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        for (name, o) in [
            (
                "si only",
                SummaryOptions {
                    n_classes: k,
                    selectivity: Some(NegativePolicy::Error),
                    moments: true,
                    mutual_info: None,
                },
            ),
            (
                "pass1",
                SummaryOptions {
                    n_classes: k,
                    selectivity: None,
                    moments: false,
                    mutual_info: None,
                },
            ),
            (
                "mi ew",
                SummaryOptions {
                    n_classes: k,
                    selectivity: None,
                    moments: false,
                    mutual_info: Some(MiOptions {
                        bins: 10,
                        binning: Binning::EqualWidth,
                        miller_madow: false,
                        shuffles: 0,
                        seed: 0,
                    }),
                },
            ),
            (
                "mi ef",
                SummaryOptions {
                    n_classes: k,
                    selectivity: None,
                    moments: false,
                    mutual_info: Some(MiOptions {
                        bins: 10,
                        binning: Binning::EqualFrequency,
                        miller_madow: false,
                        shuffles: 0,
                        seed: 0,
                    }),
                },
            ),
        ] {
            if std::env::var("PHASE").is_ok_and(|p| p != name) {
                continue;
            }
            let t = std::time::Instant::now();
            pool.install(|| summarize_dense(&acts, n, u, &labels, &o).unwrap());
            eprintln!("{name}: {:?} (1 thread)", t.elapsed());
        }
        if std::env::var("PHASE").is_ok_and(|p| p == "long") {
            let units: Vec<i64> = (0..n * u).map(|i| (i % u) as i64).collect();
            let long_labels: Vec<i64> = (0..n * u).map(|i| labels[i / u]).collect();
            let o = SummaryOptions {
                n_classes: k,
                selectivity: Some(NegativePolicy::Error),
                moments: true,
                mutual_info: None,
            };
            let t = std::time::Instant::now();
            pool.install(|| summarize_long(&units, &long_labels, &acts, u, &o).unwrap());
            eprintln!("long: {:?} (1 thread)", t.elapsed());
        }
    }
}
