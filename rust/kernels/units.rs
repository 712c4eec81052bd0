//! Per-unit statistics over a dense `(n_samples, n_units)` row-major f32 array or over
//! long-format records `(unit, label, value)`: class-conditional means and counts, overall
//! mean / std / min / max / fraction active, class selectivity with the preferred class, and
//! (optionally) mutual information with the class.
//!
//! Both layouts go through the same per-unit worker on a contiguous column: the dense path
//! transposes blocks of [`UNIT_BLOCK`] units, the long path groups records by unit (counting
//! sort that keeps record order). A unit's numbers are computed serially, in sample order, so
//! they do not depend on the thread count, and the two layouts agree when the records of each
//! unit come in the dense array's sample order.
//!
//! Class selectivity: `SI = (mu_max - mu_rest) / (mu_max + mu_rest)`, with `mu_max` the largest
//! class-conditional mean and `mu_rest` the mean of the other classes' means; the preferred
//! class is the argmax (lowest class on ties). A silent unit (all class means 0) gets SI 0.
//! Negative activity makes SI meaningless; [`NegativePolicy`] says what to do with it.

use rayon::prelude::*;

use crate::error::{KernelError, KernelResult};

use super::mutual_info::{unit_mutual_info, MiOptions, MiScratch};

/// Units per dense block: 16 f32 = one 64-byte cache line of each row.
pub const UNIT_BLOCK: usize = 16;

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

/// All statistics of one unit from its contiguous activity and labels (labels in range).
fn summarize_column(
    unit: usize,
    values: &[f32],
    labels: &[u32],
    opts: &SummaryOptions,
    scratch: &mut MiScratch,
) -> KernelResult<UnitRow> {
    let k = opts.n_classes;
    let n = values.len();
    if n == 0 {
        return Ok(UnitRow {
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
        });
    }
    let mut counts = vec![0u64; k];
    let mut sums = vec![0f64; k];
    let mut pos_sums = vec![0f64; k];
    // Sums shifted by the first value keep the variance accurate when |mean| >> std.
    let x0 = values[0] as f64;
    let (mut s1, mut s2) = (0f64, 0f64);
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    let mut active = 0u64;
    for (i, (&x, &c)) in values.iter().zip(labels).enumerate() {
        if !x.is_finite() {
            return Err(KernelError::Value(format!(
                "unit {unit} has a non-finite activity ({x}) at sample {i}: drop or impute NaN \
                 and inf values first"
            )));
        }
        let c = c as usize;
        let xf = x as f64;
        counts[c] += 1;
        sums[c] += xf;
        pos_sums[c] += xf.max(0.0);
        let d = xf - x0;
        s1 += d;
        s2 += d * d;
        lo = lo.min(x);
        hi = hi.max(x);
        active += (x > 0.0) as u64;
    }
    let nf = n as f64;
    let var = (s2 / nf - (s1 / nf) * (s1 / nf)).max(0.0);
    let means: Vec<f64> = sums
        .iter()
        .zip(&counts)
        .map(|(&s, &c)| if c > 0 { s / c as f64 } else { f64::NAN })
        .collect();
    let (si, preferred) = match opts.selectivity {
        None => (f64::NAN, -1),
        Some(policy) => {
            if let Some(missing) = counts.iter().position(|&c| c == 0) {
                return Err(KernelError::Value(format!(
                    "unit {unit} has no samples of class {missing}: every class 0..{} needs \
                     samples (relabel the classes or set the number of classes)",
                    k - 1
                )));
            }
            let pos_means: Vec<f64> = pos_sums
                .iter()
                .zip(&counts)
                .map(|(&s, &c)| s / c as f64)
                .collect();
            selectivity_of(unit, &means, &pos_means, lo as f64, policy)?
        }
    };
    let (mi, mi_shuffled, class_entropy) = match &opts.mutual_info {
        None => (f64::NAN, f64::NAN, f64::NAN),
        Some(mo) => {
            let r = unit_mutual_info(unit as u64, values, labels, lo, hi, &counts, mo, scratch);
            (r.mi, r.shuffled, r.class_entropy)
        }
    };
    Ok(UnitRow {
        n: n as u64,
        counts,
        means,
        mean: x0 + s1 / nf,
        std: var.sqrt(),
        min: lo as f64,
        max: hi as f64,
        active: active as f64 / nf,
        si,
        preferred,
        mi,
        mi_shuffled,
        class_entropy,
    })
}

fn assemble(rows: Vec<UnitRow>, opts: &SummaryOptions) -> UnitSummary {
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
    let labels = check_labels(labels, opts.n_classes)?;
    let n_blocks = n_units.div_ceil(UNIT_BLOCK);
    let parts: Vec<KernelResult<Vec<UnitRow>>> = (0..n_blocks)
        .into_par_iter()
        .map(|b| {
            let u0 = b * UNIT_BLOCK;
            let width = UNIT_BLOCK.min(n_units - u0);
            // Transpose the block once: each row contributes one contiguous segment.
            let mut cols = vec![0f32; width * n_samples];
            for s in 0..n_samples {
                let row = &acts[s * n_units + u0..s * n_units + u0 + width];
                for (j, &x) in row.iter().enumerate() {
                    cols[j * n_samples + s] = x;
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
/// Each unit's records are used in the order they come.
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
    let (offsets, grouped_values, grouped_labels) =
        group_by_unit(units, labels, values, n_units, opts.n_classes)?;
    let n_blocks = n_units.div_ceil(UNIT_BLOCK);
    let parts: Vec<KernelResult<Vec<UnitRow>>> = (0..n_blocks)
        .into_par_iter()
        .map(|b| {
            let mut scratch = MiScratch::default();
            (b * UNIT_BLOCK..((b + 1) * UNIT_BLOCK).min(n_units))
                .map(|u| {
                    let r = offsets[u]..offsets[u + 1];
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

type Grouped = (Vec<usize>, Vec<f32>, Vec<u32>);

/// Stable counting sort of the records by unit, in fixed chunks: chunk `i` writes its records
/// of unit `u` after those of chunks `0..i`, so the output keeps record order.
fn group_by_unit(
    units: &[i64],
    labels: &[i64],
    values: &[f32],
    n_units: usize,
    n_classes: usize,
) -> KernelResult<Grouped> {
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
    Ok((offsets, out_values, out_labels))
}

struct SyncPtr<T>(*mut T);
// SAFETY: used only for writes to disjoint indices (see `group_by_unit`).
unsafe impl<T> Sync for SyncPtr<T> {}
unsafe impl<T> Send for SyncPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::mutual_info::Binning;

    fn opts(k: usize, mi: bool) -> SummaryOptions {
        SummaryOptions {
            n_classes: k,
            selectivity: Some(NegativePolicy::Error),
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

    #[test]
    fn long_matches_dense_and_thread_count() {
        let (n, u, k) = (40, 37, 4);
        let (acts, labels) = data(n, u, k);
        let o = opts(k, true);
        let dense = summarize_dense(&acts, n, u, &labels, &o).unwrap();
        // Records in unit-major order reversed, so grouping really has to reorder them.
        let mut units_l = Vec::new();
        let mut labels_l = Vec::new();
        let mut values_l = Vec::new();
        for unit in (0..u).rev() {
            for s in 0..n {
                units_l.push(unit as i64);
                labels_l.push(labels[s]);
                values_l.push(acts[s * u + unit]);
            }
        }
        let long = summarize_long(&units_l, &labels_l, &values_l, u, &o).unwrap();
        assert_eq!(dense, long);
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let again = pool.install(|| summarize_dense(&acts, n, u, &labels, &o).unwrap());
            assert_eq!(dense, again);
            let again =
                pool.install(|| summarize_long(&units_l, &labels_l, &values_l, u, &o).unwrap());
            assert_eq!(dense, again);
        }
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
