//! Mutual information, in bits, between one unit's binned activity and the class label.
//!
//! Binning (per unit, computed in f64 from the f32 activity):
//! - equal width: `bin = min(floor((x - min) * (bins / (max - min))), bins - 1)`; a constant
//!   unit puts every sample in bin 0 (the one binner, [`EqualWidthBins`], used by every path).
//! - equal frequency: with `s` the sorted activity of the unit's `n` samples, the edges are
//!   `s[k * n / bins]` for `k = 1..bins` (integer division) and `bin = #{edges <= x}`. Equal
//!   values always share a bin (ties never split by sample order), so a unit with many exact
//!   zeros (ReLU) may fill fewer than `bins` bins.
//!
//! The plug-in estimate is `sum_bc p(b,c) log2(p(b,c) / (p(b) p(c)))`, clipped at 0 against
//! rounding (as scikit-learn does). The Miller-Madow correction subtracts
//! `(m_bc - m_b - m_c + 1) / (2 N ln 2)`, where the `m` count the non-empty cells, bins and
//! classes; it may go slightly below 0.

use crate::error::KernelResult;
use crate::{ensure, fail};

use super::binning::EqualWidthBins;
use super::rng::SplitMix64;

/// Largest `bins * n_classes` contingency table accepted (per unit and worker thread).
pub const MAX_TABLE_CELLS: usize = 1 << 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binning {
    EqualWidth,
    EqualFrequency,
}

impl Binning {
    /// Parse `equal_width` / `equal_frequency` (hyphens accepted too).
    pub fn parse(name: &str) -> KernelResult<Binning> {
        match name.replace('-', "_").as_str() {
            "equal_width" => Ok(Binning::EqualWidth),
            "equal_frequency" => Ok(Binning::EqualFrequency),
            other => Err(fail!(
                Config,
                "unknown binning {other:?}: use 'equal_width' or 'equal_frequency'"
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MiOptions {
    pub bins: usize,
    pub binning: Binning,
    pub miller_madow: bool,
    /// Number of shuffled-label repetitions for the baseline (0: none).
    pub shuffles: usize,
    pub seed: u64,
}

impl MiOptions {
    pub fn validate(&self, n_classes: usize) -> KernelResult<()> {
        let bins = self.bins;
        ensure!(
            bins >= 2,
            Config,
            "bins must be at least 2 (got {bins}): choose e.g. 10"
        );
        ensure!(
            bins.saturating_mul(n_classes.max(1)) <= MAX_TABLE_CELLS,
            Config,
            "bins x classes = {bins} x {n_classes} is too large a table: use fewer bins"
        );
        Ok(())
    }
}

/// Mutual information of one unit, in bits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MiUnit {
    /// Plug-in (or Miller-Madow corrected) estimate.
    pub mi: f64,
    /// Mean estimate over the shuffled-label repetitions (NaN when there are none).
    pub shuffled: f64,
    /// Entropy of the unit's class labels, H(class), for normalization.
    pub class_entropy: f64,
}

/// Bin codes of one unit's activity (see the module docs for the exact rule).
pub fn bin_codes(
    values: &[f32],
    min: f32,
    max: f32,
    bins: usize,
    binning: Binning,
    sort_buf: &mut Vec<f32>,
    out: &mut Vec<u32>,
) {
    out.clear();
    out.reserve(values.len());
    match binning {
        Binning::EqualWidth => equal_width_codes(values, EqualWidthBins::new(min, max, bins), out),
        Binning::EqualFrequency => {
            sort_buf.clear();
            sort_buf.extend_from_slice(values);
            let n = values.len();
            let ranks: Vec<usize> = (1..bins).map(|k| k * n / bins).collect();
            let mut edges = vec![0f32; ranks.len()];
            order_statistics(sort_buf, 0, &ranks, &mut edges);
            for &x in values {
                out.push(edges.partition_point(|&e| e <= x) as u32);
            }
        }
    }
}

#[inline(always)]
fn push_equal_width_codes(values: &[f32], binner: EqualWidthBins, out: &mut Vec<u32>) {
    out.extend(values.iter().map(|&x| binner.code(x)));
}

multiversion!(
    /// Appends the equal-width codes of `values` to `out`, compiled for AVX-512 where the CPU
    /// has it (the f64 to u32 conversion vectorizes there; the same IEEE operations either way).
    fn equal_width_codes(values: &[f32], binner: EqualWidthBins, out: &mut Vec<u32>)
        => push_equal_width_codes ["avx512f"]
);

/// `out[i]` = the value of rank `ranks[i] - offset` in `buf` (ranks ascending), found by
/// recursive selection: O(n log(ranks)) instead of a full sort. The values equal those of a
/// sorted copy, whatever the order `buf` is left in.
fn order_statistics(buf: &mut [f32], offset: usize, ranks: &[usize], out: &mut [f32]) {
    if ranks.is_empty() {
        return;
    }
    let mid = ranks.len() / 2;
    let r = ranks[mid] - offset;
    let (left, nth, right) = buf.select_nth_unstable_by(r, f32::total_cmp);
    out[mid] = *nth;
    let (out_left, out_right) = out.split_at_mut(mid);
    // Ranks equal to r (repeated when n < bins) are answered by `nth` as well.
    let lower = ranks[..mid].partition_point(|&q| q - offset < r);
    for o in &mut out_left[lower..] {
        *o = out_right[0];
    }
    order_statistics(left, offset, &ranks[..lower], &mut out_left[..lower]);
    let upper = ranks[mid + 1..].partition_point(|&q| q - offset == r);
    for o in &mut out_right[1..1 + upper] {
        *o = *nth;
    }
    order_statistics(
        right,
        offset + r + 1,
        &ranks[mid + 1 + upper..],
        &mut out_right[1 + upper..],
    );
}

/// Entropy in bits of a count vector.
pub fn entropy_bits(counts: &[u64]) -> f64 {
    let n: u64 = counts.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let nf = n as f64;
    let h: f64 = counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / nf;
            -p * p.log2()
        })
        .sum();
    h.max(0.0)
}

/// MI in bits from bin codes and labels (both already in range), using `table` as scratch.
pub fn mi_from_codes(
    codes: &[u32],
    labels: &[u32],
    n_bins: usize,
    n_classes: usize,
    miller_madow: bool,
    table: &mut Vec<u64>,
) -> f64 {
    let n = codes.len();
    if n == 0 {
        return 0.0;
    }
    // Four interleaved tables, summed after: consecutive records that hit one cell (the
    // usual case) do not wait on each other's increments. Integer counts: exact.
    let cells = n_bins * n_classes;
    table.clear();
    table.resize(4 * cells, 0);
    let (quads, rest) = (codes.len() / 4 * 4, codes.len() % 4);
    let cell = |i: usize| codes[i] as usize * n_classes + labels[i] as usize;
    let (t0, t123) = table.split_at_mut(cells);
    let (t1, t23) = t123.split_at_mut(cells);
    let (t2, t3) = t23.split_at_mut(cells);
    for i in (0..quads).step_by(4) {
        t0[cell(i)] += 1;
        t1[cell(i + 1)] += 1;
        t2[cell(i + 2)] += 1;
        t3[cell(i + 3)] += 1;
    }
    for i in quads..quads + rest {
        t0[cell(i)] += 1;
    }
    for j in 0..cells {
        t0[j] += t1[j] + t2[j] + t3[j];
    }
    mi_from_table(&table[..cells], n_bins, n_classes, miller_madow)
}

/// MI in bits from a `(n_bins, n_classes)` row-major contingency table of counts.
pub fn mi_from_table(table: &[u64], n_bins: usize, n_classes: usize, miller_madow: bool) -> f64 {
    let n: u64 = table.iter().sum();
    if n == 0 {
        return 0.0;
    }
    let mut bin_tot = vec![0u64; n_bins];
    let mut class_tot = vec![0u64; n_classes];
    for b in 0..n_bins {
        for c in 0..n_classes {
            let v = table[b * n_classes + c];
            bin_tot[b] += v;
            class_tot[c] += v;
        }
    }
    let nf = n as f64;
    let mut mi = 0.0f64;
    let mut cells = 0usize;
    for b in 0..n_bins {
        if bin_tot[b] == 0 {
            continue;
        }
        for c in 0..n_classes {
            let v = table[b * n_classes + c];
            if v == 0 {
                continue;
            }
            cells += 1;
            let ratio = (v as f64 * nf) / (bin_tot[b] as f64 * class_tot[c] as f64);
            mi += (v as f64 / nf) * ratio.log2();
        }
    }
    let mut mi = mi.max(0.0);
    if miller_madow {
        let used_bins = bin_tot.iter().filter(|&&v| v > 0).count();
        let used_classes = class_tot.iter().filter(|&&v| v > 0).count();
        let excess = cells as f64 - used_bins as f64 - used_classes as f64 + 1.0;
        mi -= excess / (2.0 * nf * std::f64::consts::LN_2);
    }
    mi
}

/// Reusable per-worker buffers.
#[derive(Default)]
pub struct MiScratch {
    sort_buf: Vec<f32>,
    codes: Vec<u32>,
    table: Vec<u64>,
    shuffled: Vec<u32>,
}

/// MI of one unit (`unit` only seeds its shuffles). `labels` must be `< n_classes`, `values`
/// finite, and `min`/`max` the unit's extremes.
#[allow(clippy::too_many_arguments)]
pub fn unit_mutual_info(
    unit: u64,
    values: &[f32],
    labels: &[u32],
    min: f32,
    max: f32,
    class_counts: &[u64],
    opts: &MiOptions,
    scratch: &mut MiScratch,
) -> MiUnit {
    let n_classes = class_counts.len();
    let class_entropy = entropy_bits(class_counts);
    bin_codes(
        values,
        min,
        max,
        opts.bins,
        opts.binning,
        &mut scratch.sort_buf,
        &mut scratch.codes,
    );
    let mi = mi_from_codes(
        &scratch.codes,
        labels,
        opts.bins,
        n_classes,
        opts.miller_madow,
        &mut scratch.table,
    );
    let shuffled = if opts.shuffles == 0 {
        f64::NAN
    } else {
        let mut total = 0.0;
        for s in 0..opts.shuffles {
            scratch.shuffled.clear();
            scratch.shuffled.extend_from_slice(labels);
            SplitMix64::for_stream(opts.seed, unit, s as u64).shuffle(&mut scratch.shuffled);
            total += mi_from_codes(
                &scratch.codes,
                &scratch.shuffled,
                opts.bins,
                n_classes,
                opts.miller_madow,
                &mut scratch.table,
            );
        }
        total / opts.shuffles as f64
    };
    MiUnit {
        mi,
        shuffled,
        class_entropy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes(values: &[f32], bins: usize, binning: Binning) -> Vec<u32> {
        let min = values.iter().cloned().fold(f32::INFINITY, f32::min);
        let max = values.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut out = Vec::new();
        bin_codes(values, min, max, bins, binning, &mut Vec::new(), &mut out);
        out
    }

    #[test]
    fn equal_width_bins() {
        let v = [0.0, 0.1, 0.5, 0.99, 1.0];
        assert_eq!(codes(&v, 2, Binning::EqualWidth), vec![0, 0, 1, 1, 1]);
        assert_eq!(codes(&v, 10, Binning::EqualWidth), vec![0, 1, 5, 9, 9]);
        assert_eq!(codes(&[3.0; 4], 5, Binning::EqualWidth), vec![0; 4]);
    }

    #[test]
    fn equal_frequency_bins_keep_ties_together() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(codes(&v, 2, Binning::EqualFrequency), vec![1, 0, 1, 0]);
        let zeros = [0.0, 0.0, 0.0, 0.0, 1.0, 2.0];
        let c = codes(&zeros, 3, Binning::EqualFrequency);
        assert_eq!(&c[..4], &[c[0]; 4]);
        assert!(c[4] > c[0] && c[5] >= c[4]);
    }

    #[test]
    fn order_statistics_match_a_sort() {
        let mut state = 7u64;
        for n in [1usize, 2, 3, 5, 9, 10, 17, 100, 1000] {
            for bins in [2usize, 3, 7, 10, 64] {
                let values: Vec<f32> = (0..n)
                    .map(|_| {
                        state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                        ((state >> 59) as f32) - 8.0 // many ties
                    })
                    .collect();
                let mut sorted = values.clone();
                sorted.sort_by(f32::total_cmp);
                let ranks: Vec<usize> = (1..bins).map(|k| k * n / bins).collect();
                let expect: Vec<f32> = ranks.iter().map(|&r| sorted[r]).collect();
                let mut buf = values.clone();
                let mut got = vec![f32::NAN; ranks.len()];
                order_statistics(&mut buf, 0, &ranks, &mut got);
                assert_eq!(got, expect, "n={n} bins={bins}");
            }
        }
    }

    #[test]
    fn mi_of_a_perfect_code_is_class_entropy() {
        let labels = [0u32, 1, 2, 3, 0, 1, 2, 3];
        let mut t = Vec::new();
        let mi = mi_from_codes(&labels, &labels, 4, 4, false, &mut t);
        assert!((mi - 2.0).abs() < 1e-12);
        let constant = [0u32; 8];
        assert_eq!(mi_from_codes(&constant, &labels, 4, 4, false, &mut t), 0.0);
    }

    #[test]
    fn mi_matches_hand_computation() {
        // table [[2, 1], [0, 1]] over bins x classes; N = 4.
        let codes = [0u32, 0, 0, 1];
        let labels = [0u32, 0, 1, 1];
        let mut t = Vec::new();
        let mi = mi_from_codes(&codes, &labels, 2, 2, false, &mut t);
        let expect = 0.5 * (2.0f64 * 4.0 / (3.0 * 2.0)).log2()
            + 0.25 * (4.0f64 / (3.0 * 2.0)).log2()
            + 0.25 * (4.0f64 / (1.0 * 2.0)).log2();
        assert!((mi - expect).abs() < 1e-12);
        let mm = mi_from_codes(&codes, &labels, 2, 2, true, &mut t);
        let excess = 3.0 - 2.0 - 2.0 + 1.0;
        assert!((mm - (expect - excess / (8.0 * std::f64::consts::LN_2))).abs() < 1e-12);
    }

    #[test]
    fn shuffled_baseline_is_reproducible_and_small() {
        let n = 2000;
        let labels: Vec<u32> = (0..n).map(|i| (i % 4) as u32).collect();
        let values: Vec<f32> = labels.iter().map(|&l| l as f32).collect();
        let opts = MiOptions {
            bins: 4,
            binning: Binning::EqualWidth,
            miller_madow: false,
            shuffles: 5,
            seed: 3,
        };
        let counts = [500u64; 4];
        let mut s = MiScratch::default();
        let a = unit_mutual_info(0, &values, &labels, 0.0, 3.0, &counts, &opts, &mut s);
        let b = unit_mutual_info(0, &values, &labels, 0.0, 3.0, &counts, &opts, &mut s);
        assert_eq!(a, b);
        assert!((a.mi - 2.0).abs() < 1e-12);
        assert!((a.class_entropy - 2.0).abs() < 1e-12);
        assert!(a.shuffled > 0.0 && a.shuffled < 0.05);
    }

    #[test]
    fn options_are_checked() {
        let mut o = MiOptions {
            bins: 1,
            binning: Binning::EqualWidth,
            miller_madow: false,
            shuffles: 0,
            seed: 0,
        };
        assert!(o.validate(10).is_err());
        o.bins = 10;
        assert!(o.validate(10).is_ok());
        assert!(Binning::parse("equal-frequency").is_ok());
        assert!(Binning::parse("quantile").is_err());
    }
}
