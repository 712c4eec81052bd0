//! Ordering statistics: stable ranking of units by a score, Pearson and Spearman correlation
//! within groups (layers), trapezoid area under many curves at once, and per-level mean and
//! standard deviation across orderings.

use rayon::prelude::*;

use crate::error::KernelResult;
use crate::{ensure, fail};

fn check_finite(name: &str, xs: &[f64]) -> KernelResult<()> {
    match xs.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(fail!(
            Value,
            "{name} has a non-finite value ({}) at position {i}: drop or fill NaN and inf first",
            xs[i]
        )),
    }
}

/// Indices that sort `scores` (ascending, or descending), ties kept in index order.
pub fn stable_order(scores: &[f64], descending: bool) -> KernelResult<Vec<i64>> {
    check_finite("scores", scores)?;
    let mut idx: Vec<i64> = (0..scores.len() as i64).collect();
    // A stable sort has one answer, whatever the thread count. Scores are finite here, so
    // partial_cmp is total (and, unlike total_cmp, treats -0.0 and 0.0 as the tie they are).
    let cmp = |a: &i64, b: &i64| {
        scores[*a as usize]
            .partial_cmp(&scores[*b as usize])
            .unwrap()
    };
    if descending {
        idx.par_sort_by(|a, b| cmp(b, a));
    } else {
        idx.par_sort_by(cmp);
    }
    Ok(idx)
}

/// 1-based ranks with ties given their average rank (as `scipy.stats.rankdata`).
/// `xs` must be free of NaN.
pub fn average_ranks(xs: &[f64]) -> Vec<f64> {
    let mut idx: Vec<usize> = (0..xs.len()).collect();
    idx.sort_by(|&a, &b| xs[a].partial_cmp(&xs[b]).unwrap());
    let mut ranks = vec![0f64; xs.len()];
    let mut i = 0;
    while i < idx.len() {
        let mut j = i + 1;
        while j < idx.len() && xs[idx[j]] == xs[idx[i]] {
            j += 1;
        }
        let r = (i + j + 1) as f64 / 2.0; // mean of the 1-based ranks i+1..=j
        for &k in &idx[i..j] {
            ranks[k] = r;
        }
        i = j;
    }
    ranks
}

/// Pearson correlation; NaN when fewer than 2 points or either side is constant.
pub fn pearson(x: &[f64], y: &[f64]) -> f64 {
    let n = x.len();
    // A constant side has no correlation (its rounded mean can differ from its values, so
    // test equality rather than a zero sum of squares).
    let constant = |v: &[f64]| v.iter().all(|&a| a == v[0]);
    if n < 2 || y.len() != n || constant(x) || constant(y) {
        return f64::NAN;
    }
    // Deviations scaled by their largest magnitude, so that squares neither underflow nor
    // overflow for very small or very large scores.
    let centered = |v: &[f64]| {
        let m = v.iter().sum::<f64>() / n as f64;
        let d: Vec<f64> = v.iter().map(|a| a - m).collect();
        let scale = d.iter().fold(0f64, |acc, a| acc.max(a.abs()));
        d.into_iter().map(|a| a / scale).collect::<Vec<f64>>()
    };
    let (dx, dy) = (centered(x), centered(y));
    let (mut sxy, mut sxx, mut syy) = (0f64, 0f64, 0f64);
    for (&a, &b) in dx.iter().zip(&dy) {
        sxy += a * b;
        sxx += a * a;
        syy += b * b;
    }
    if !(sxx > 0.0 && syy > 0.0) {
        return f64::NAN;
    }
    (sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0)
}

/// Spearman correlation: Pearson on average ranks.
pub fn spearman(x: &[f64], y: &[f64]) -> f64 {
    pearson(&average_ranks(x), &average_ranks(y))
}

/// Per-group correlations of two scores.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupCorrelations {
    pub n: Vec<i64>,
    pub pearson: Vec<f64>,
    pub spearman: Vec<f64>,
}

/// Pearson and Spearman correlation of `x` and `y` within each group `0..n_groups`
/// (`groups[i]` is the group of point `i`; points keep their order inside a group).
pub fn group_correlations(
    x: &[f64],
    y: &[f64],
    groups: &[i64],
    n_groups: usize,
) -> KernelResult<GroupCorrelations> {
    ensure!(
        y.len() == x.len() && groups.len() == x.len(),
        Shape,
        "x, y and groups differ in length ({}, {}, {}): give one value per unit in each",
        x.len(),
        y.len(),
        groups.len()
    );
    check_finite("x", x)?;
    check_finite("y", y)?;
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); n_groups];
    for (i, &g) in groups.iter().enumerate() {
        ensure!(
            g >= 0 && (g as u64) < n_groups as u64,
            Value,
            "group code {g} is outside 0..{n_groups}"
        );
        members[g as usize].push(i);
    }
    let per: Vec<(i64, f64, f64)> = members
        .par_iter()
        .map(|m| {
            let gx: Vec<f64> = m.iter().map(|&i| x[i]).collect();
            let gy: Vec<f64> = m.iter().map(|&i| y[i]).collect();
            (m.len() as i64, pearson(&gx, &gy), spearman(&gx, &gy))
        })
        .collect();
    Ok(GroupCorrelations {
        n: per.iter().map(|p| p.0).collect(),
        pearson: per.iter().map(|p| p.1).collect(),
        spearman: per.iter().map(|p| p.2).collect(),
    })
}

/// Trapezoid area under each row of a row-major `(n_curves, n_points)` array `y`. `x` has
/// `n_points` values shared by every curve, or `n_curves * n_points` (one row per curve).
pub fn trapezoid_rows(
    y: &[f64],
    n_curves: usize,
    n_points: usize,
    x: &[f64],
) -> KernelResult<Vec<f64>> {
    ensure!(
        y.len() == n_curves * n_points,
        Shape,
        "curves have {} values, not {n_curves} x {n_points}",
        y.len()
    );
    let per_curve_x = x.len() == n_curves * n_points && n_curves != 1;
    ensure!(
        per_curve_x || x.len() == n_points,
        Shape,
        "x has {} values: give one per curve point ({n_points}) or an array shaped like y",
        x.len()
    );
    check_finite("curve values", y)?;
    check_finite("x", x)?;
    if n_points == 0 {
        return Ok(vec![0.0; n_curves]);
    }
    Ok(y.par_chunks(n_points)
        .enumerate()
        .map(|(i, row)| {
            let xs = if per_curve_x {
                &x[i * n_points..(i + 1) * n_points]
            } else {
                x
            };
            row.windows(2)
                .zip(xs.windows(2))
                .map(|(yy, xx)| (xx[1] - xx[0]) * (yy[0] + yy[1]) / 2.0)
                .sum()
        })
        .collect())
}

/// Mean and standard deviation (`ddof` degrees of freedom removed) of each column of a
/// row-major `(n_rows, n_cols)` array, e.g. accuracy per ablation level across orderings.
pub fn level_mean_std(
    values: &[f64],
    n_rows: usize,
    n_cols: usize,
    ddof: usize,
) -> KernelResult<(Vec<f64>, Vec<f64>)> {
    ensure!(
        values.len() == n_rows * n_cols,
        Shape,
        "values have {} entries, not {n_rows} x {n_cols}",
        values.len()
    );
    ensure!(
        n_rows > 0 && n_rows > ddof,
        Value,
        "need more than {ddof} row(s) (orderings) to take a std with ddof={ddof}; got {n_rows}"
    );
    check_finite("values", values)?;
    let stats: Vec<(f64, f64)> = (0..n_cols)
        .into_par_iter()
        .map(|c| {
            let mean = (0..n_rows).map(|r| values[r * n_cols + c]).sum::<f64>() / n_rows as f64;
            let ss: f64 = (0..n_rows)
                .map(|r| (values[r * n_cols + c] - mean).powi(2))
                .sum();
            (mean, (ss / (n_rows - ddof) as f64).sqrt())
        })
        .collect();
    Ok(stats.into_iter().unzip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_is_stable_both_ways() {
        let s = [2.0, 1.0, 2.0, 0.5, 1.0];
        assert_eq!(stable_order(&s, false).unwrap(), vec![3, 1, 4, 0, 2]);
        assert_eq!(stable_order(&s, true).unwrap(), vec![0, 2, 1, 4, 3]);
        assert!(stable_order(&[1.0, f64::NAN], false).is_err());
    }

    #[test]
    fn ranks_average_ties() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 10.0, 5.0]),
            vec![2.5, 4.0, 2.5, 1.0]
        );
    }

    #[test]
    fn correlations() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let y = [2.0, 4.0, 6.0, 8.5];
        assert!((pearson(&x, &y) - 0.998_381_439_457_029_8).abs() < 1e-9);
        let cube: Vec<f64> = x.iter().map(|v| v * v * v).collect();
        assert!((spearman(&x, &cube) - 1.0).abs() < 1e-12);
        assert!(pearson(&x, &[1.0; 4]).is_nan());
        let g = group_correlations(
            &[1.0, 2.0, 3.0, 1.0, 2.0],
            &[1.0, 2.0, 3.0, 2.0, 1.0],
            &[0, 0, 0, 1, 1],
            2,
        )
        .unwrap();
        assert_eq!(g.n, vec![3, 2]);
        assert!((g.pearson[0] - 1.0).abs() < 1e-12 && (g.pearson[1] + 1.0).abs() < 1e-12);
        assert!(group_correlations(&[1.0], &[1.0], &[3], 2).is_err());
    }

    #[test]
    fn trapezoid_and_levels() {
        let y = [1.0, 1.0, 1.0, 0.0, 0.5, 1.0];
        let a = trapezoid_rows(&y, 2, 3, &[0.0, 0.5, 1.0]).unwrap();
        assert_eq!(a, vec![1.0, 0.5]);
        let a = trapezoid_rows(&y, 2, 3, &[0.0, 1.0, 2.0, 0.0, 2.0, 4.0]).unwrap();
        assert_eq!(a, vec![2.0, 2.0]);
        assert!(trapezoid_rows(&y, 2, 3, &[0.0, 1.0]).is_err());
        let (m, s) = level_mean_std(&[1.0, 2.0, 3.0, 4.0], 2, 2, 0).unwrap();
        assert_eq!(m, vec![2.0, 3.0]);
        assert_eq!(s, vec![1.0, 1.0]);
        assert!(level_mean_std(&[1.0, 2.0], 1, 2, 1).is_err());
    }
}
