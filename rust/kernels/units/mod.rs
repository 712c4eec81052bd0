//! Per-unit statistics over a dense `(n_samples, n_units)` row-major f32 array or over
//! long-format records `(layer, unit, sample, label, value)`: class-conditional means and
//! counts, overall mean / std / min / max / fraction active, class selectivity with the
//! preferred class, and (optionally) mutual information with the class.
//!
//! Strategies, one file each:
//! - [`dense`]: one pass over the rows of the array (class sums accumulated row by row into
//!   per-class accumulators, rayon over fixed row chunks merged in order), then, for MI with
//!   equal-width bins, a second pass binning rows; equal-frequency bins and label shuffles
//!   need a unit's values together and transpose blocks of units ([`columns`]);
//! - [`long`]: records in any order, fed in batches (a file streamed by row groups, or arrays
//!   in memory) into per-unit state only, so memory does not grow with the number of records;
//!   a second pass over the records bins them (equal width) or collects bounded groups of units
//!   (equal frequency, shuffles).
//!
//! Summation rule shared by every path (it makes them bit-identical): a unit's float sums run
//! over its records in order, in runs of [`SUM_RUN`] records; each run is summed from 0 and the
//! run sums are added to the total in order. The dense path's row chunks are these runs, so a
//! unit whose records come in the dense sample order gets the same bits from the dense array,
//! from records in memory and from a streamed file, for any thread count. Counts, min, max and
//! MI tables are integers or exact.
//!
//! Class selectivity: `SI = (mu_max - mu_rest) / (mu_max + mu_rest)`, with `mu_max` the largest
//! class-conditional mean and `mu_rest` the mean of the other classes' means; the preferred
//! class is the argmax (lowest class on ties). A silent unit (all class means 0) gets SI 0.
//! Negative activity makes SI meaningless; [`NegativePolicy`] says what to do with it.

mod columns;
mod dense;
mod long;

pub use dense::summarize_dense;
pub use long::{summarize_long, RecordStats};

use crate::error::{human_bytes, KernelError, KernelResult};
use crate::{ensure, fail};

use super::mutual_info::{Binning, MiOptions};

/// Records per summation run (see the module docs). Also the dense path's row chunk.
pub const SUM_RUN: usize = 1024;

/// Largest per-unit state (accumulators, duplicate bitsets, MI tables) the kernels allocate;
/// beyond it the input is refused with the reason and the fix, not attempted.
pub const MAX_STATE_BYTES: usize = 4 << 30;

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
            other => Err(fail!(
                Config,
                "unknown negative-activity policy {other:?}: use 'error', 'shift' or 'clip'"
            )),
        }
    }
}

/// What to compute besides counts and min (always computed) and max (computed with moments
/// or MI).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SummaryOptions {
    pub n_classes: usize,
    /// Class selectivity with this policy (None: skip, `selectivity` stays empty).
    pub selectivity: Option<NegativePolicy>,
    /// Mutual information (None: skip, the `mi*` vectors stay empty).
    pub mutual_info: Option<MiOptions>,
    /// Class means, mean, std and fraction active (false: left NaN, which lets a call that
    /// wants only selectivity or MI skip their work; selectivity still computes class means).
    pub moments: bool,
}

impl SummaryOptions {
    fn validate(&self) -> KernelResult<()> {
        let k = self.n_classes;
        ensure!(
            k >= 2,
            Value,
            "need at least 2 classes (got {k}): check the labels"
        );
        if let Some(mi) = &self.mutual_info {
            mi.validate(k)?;
        }
        Ok(())
    }

    /// Whether class sums are needed (class means, selectivity).
    fn class_sums(&self) -> bool {
        self.moments || self.selectivity.is_some()
    }

    /// Whether sums of `max(x, 0)` are needed (the clip policy).
    fn clipped_sums(&self) -> bool {
        self.selectivity == Some(NegativePolicy::Clip)
    }

    /// Whether the maximum is reported (moments or MI need it; selectivity alone does not,
    /// and the dense path then skips it: max is NaN).
    fn reports_max(&self) -> bool {
        self.moments || self.mutual_info.is_some()
    }

    /// MI options when MI bins by rows: equal width and no shuffles (else per-unit columns).
    fn mi_by_rows(&self) -> Option<MiOptions> {
        self.mutual_info
            .filter(|mo| mo.binning == Binning::EqualWidth && mo.shuffles == 0)
    }
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

/// The accumulated totals of a set of units, unit-major (`u * k + c` for class cells), as
/// every path leaves them after the summation rule of the module docs.
#[derive(Debug, Clone, Default)]
struct Totals {
    k: usize,
    n: Vec<u64>,
    counts: Vec<u64>,
    sums: Vec<f64>,
    pos: Vec<f64>,
    x0: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    active: Vec<u64>,
}

impl Totals {
    fn new(n_units: usize, k: usize) -> Totals {
        Totals {
            k,
            n: vec![0; n_units],
            counts: vec![0; n_units * k],
            sums: vec![0.0; n_units * k],
            pos: vec![0.0; n_units * k],
            x0: vec![f64::NAN; n_units],
            s1: vec![0.0; n_units],
            s2: vec![0.0; n_units],
            lo: vec![f32::INFINITY; n_units],
            hi: vec![f32::NEG_INFINITY; n_units],
            active: vec![0; n_units],
        }
    }

    fn n_units(&self) -> usize {
        self.n.len()
    }

    /// Means, moments and selectivity of every unit; the first error in unit order.
    fn rows(
        &self,
        opts: &SummaryOptions,
        label: &dyn Fn(usize) -> String,
    ) -> KernelResult<Vec<UnitRow>> {
        let mut rows = Vec::with_capacity(self.n_units());
        for u in 0..self.n_units() {
            rows.push(self.row(u, opts, label)?);
        }
        Ok(rows)
    }

    fn row(
        &self,
        u: usize,
        opts: &SummaryOptions,
        label: &dyn Fn(usize) -> String,
    ) -> KernelResult<UnitRow> {
        let k = self.k;
        let n = self.n[u];
        if n == 0 {
            return Ok(UnitRow::empty(k));
        }
        let cells = u * k..(u + 1) * k;
        let counts = &self.counts[cells.clone()];
        let nf = n as f64;
        let (lo, hi) = (self.lo[u], self.hi[u]);
        // Built field by field: this runs once per unit, so it allocates only the two
        // per-class vectors and formats the unit's name only for an error.
        let mut row = UnitRow {
            n,
            counts: counts.to_vec(),
            means: Vec::new(),
            min: lo as f64,
            max: if opts.reports_max() {
                hi as f64
            } else {
                f64::NAN
            },
            ..UnitRow::empty(0)
        };
        if opts.class_sums() {
            row.means = self.sums[cells.clone()]
                .iter()
                .zip(counts)
                .map(|(&s, &c)| if c > 0 { s / c as f64 } else { f64::NAN })
                .collect();
            if let Some(policy) = opts.selectivity {
                if let Some(missing) = counts.iter().position(|&c| c == 0) {
                    return Err(fail!(
                        Value,
                        "{} has no samples of class {missing}: every class 0..{} needs samples \
                         (relabel the classes or set the number of classes)",
                        label(u),
                        k - 1
                    ));
                }
                let pos = &self.pos[cells];
                (row.si, row.preferred) =
                    selectivity_of(&|| label(u), &row.means, pos, counts, lo, policy)?;
            }
        } else {
            row.means = vec![f64::NAN; k];
        }
        if opts.moments {
            let (s1, s2) = (self.s1[u], self.s2[u]);
            let var = (s2 / nf - (s1 / nf) * (s1 / nf)).max(0.0);
            row.mean = self.x0[u] + s1 / nf;
            row.std = var.sqrt();
            row.active = self.active[u] as f64 / nf;
        }
        Ok(row)
    }
}

/// The results of one unit.
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

impl UnitRow {
    fn empty(k: usize) -> UnitRow {
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
}

/// SI and preferred class from class means (see the module docs). `pos_sums` are the sums
/// of `max(x, 0)` per class (over `counts`), used by [`NegativePolicy::Clip`]; `unit` names
/// the unit in an error.
fn selectivity_of(
    unit: &dyn Fn() -> String,
    means: &[f64],
    pos_sums: &[f64],
    counts: &[u64],
    min: f32,
    policy: NegativePolicy,
) -> KernelResult<(f64, i64)> {
    let min = min as f64;
    let k = means.len();
    // The class means the index uses; no allocation for non-negative activity.
    let mu = |c: usize| -> f64 {
        if min >= 0.0 {
            means[c]
        } else if policy == NegativePolicy::Shift {
            means[c] - min
        } else {
            pos_sums[c] / counts[c] as f64
        }
    };
    if min < 0.0 && policy == NegativePolicy::Error {
        return Err(fail!(
            Value,
            "{} has negative activity (min {min:.4}): class selectivity needs non-negative \
             activity (e.g. after a ReLU); choose the negative policy 'shift' or 'clip'",
            unit()
        ));
    }
    let mut best = 0usize;
    for c in 0..k {
        if mu(c) > mu(best) {
            best = c;
        }
    }
    let mu_max = mu(best);
    let rest: f64 = (0..k).filter(|&c| c != best).map(mu).sum::<f64>() / (k - 1) as f64;
    let denom = mu_max + rest;
    let si = if denom > 0.0 {
        ((mu_max - rest) / denom).clamp(0.0, 1.0)
    } else {
        0.0
    };
    Ok((si, best as i64))
}

/// The flat summary of the rows (selectivity and MI vectors only when asked for).
fn assemble(rows: Vec<UnitRow>, opts: &SummaryOptions) -> UnitSummary {
    let (n, k) = (rows.len(), opts.n_classes);
    fn units<T>(on: bool, n: usize) -> Vec<T> {
        Vec::with_capacity(if on { n } else { 0 })
    }
    let (si, mi) = (opts.selectivity.is_some(), opts.mutual_info.is_some());
    let mut s = UnitSummary {
        n_units: n,
        n_classes: k,
        n_samples: units(true, n),
        class_counts: Vec::with_capacity(n * k),
        class_means: Vec::with_capacity(n * k),
        mean: units(true, n),
        std: units(true, n),
        min: units(true, n),
        max: units(true, n),
        fraction_active: units(true, n),
        selectivity: units(si, n),
        preferred_class: units(si, n),
        mi: units(mi, n),
        mi_shuffled: units(mi, n),
        class_entropy: units(mi, n),
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

/// Labels as class indices, checked against `0..n_classes`.
fn check_labels(labels: &[i64], n_classes: usize) -> KernelResult<Vec<u32>> {
    labels
        .iter()
        .map(|&l| {
            ensure!(
                l >= 0 && (l as u64) < n_classes as u64,
                Value,
                "label {l} is outside 0..{n_classes}: labels must be class indices 0..{}",
                n_classes - 1
            );
            Ok(l as u32)
        })
        .collect()
}

/// The error for a NaN or inf activity of `unit` (a label such as "unit 3") at `at` (such as
/// "sample 7").
fn non_finite(unit: &str, x: f32, at: &str) -> KernelError {
    fail!(
        Value,
        "{unit} has a non-finite (NaN or inf) activity ({x}) at {at}: drop or impute NaN and \
         inf values first"
    )
}

/// Refuse state of `cells` x `bytes_per_cell` beyond [`MAX_STATE_BYTES`]; `what` and `fix`
/// name the cause and the remedy.
fn check_capacity(cells: u128, bytes_per_cell: u128, what: &str, fix: &str) -> KernelResult<()> {
    let bytes = cells.saturating_mul(bytes_per_cell);
    ensure!(
        bytes <= MAX_STATE_BYTES as u128,
        Capacity,
        "{what} would need {} of accumulators (limit {}): {fix}",
        human_bytes(bytes as f64),
        human_bytes(MAX_STATE_BYTES as f64)
    );
    Ok(())
}

#[cfg(test)]
mod tests;
