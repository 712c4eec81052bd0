use super::*;
use crate::error::KernelError;
use crate::kernels::mutual_info::{Binning, MiOptions};

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

/// Bit-for-bit equality that also matches NaN with NaN (Debug prints floats exactly).
fn assert_same(a: &UnitSummary, b: &UnitSummary) {
    assert_eq!(format!("{a:?}"), format!("{b:?}"));
}

/// Every option set the paths distinguish: no MI, MI by rows (plain, Miller-Madow, MI only),
/// MI by columns (shuffles, equal frequency), selectivity only, clip policy.
fn variants(k: usize) -> Vec<SummaryOptions> {
    let o = opts(k, true);
    let mut out = vec![o, opts(k, false)];
    let mut rows = o;
    rows.mutual_info.as_mut().unwrap().shuffles = 0;
    rows.mutual_info.as_mut().unwrap().miller_madow = true;
    out.push(rows);
    let mut mi_only = rows;
    (mi_only.selectivity, mi_only.moments) = (None, false);
    out.push(mi_only);
    let mut freq = o;
    freq.mutual_info.as_mut().unwrap().binning = Binning::EqualFrequency;
    out.push(freq);
    let mut si_only = opts(k, false);
    si_only.moments = false;
    out.push(si_only);
    let mut clip = o;
    clip.selectivity = Some(NegativePolicy::Clip);
    out.push(clip);
    // Without moments the dense path adds tiles of rows class by class: every combination of
    // class sums, clipped sums and the maximum.
    let mut si_mi = rows;
    si_mi.moments = false;
    out.push(si_mi);
    let mut clip_only = si_only;
    clip_only.selectivity = Some(NegativePolicy::Clip);
    out.push(clip_only);
    let mut clip_mi = si_mi;
    clip_mi.selectivity = Some(NegativePolicy::Clip);
    out.push(clip_mi);
    out
}

fn in_pool<T: Send>(threads: usize, f: impl FnOnce() -> T + Send) -> T {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap()
        .install(f)
}

#[test]
fn class_means_and_moments_match_naive() {
    // More rows than one summation run, so run sums are merged.
    let (n, u, k) = (SUM_RUN * 2 + 50, 19, 3);
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
    let si = |o: &SummaryOptions| {
        summarize_dense(&acts, 2, 1, &labels, o)
            .unwrap()
            .selectivity
    };
    assert_eq!(si(&o), vec![1.0]);
    o.selectivity = Some(NegativePolicy::Clip);
    assert_eq!(si(&o), vec![1.0]);
}

#[test]
fn class_tiles_match_the_row_pass_and_naive_means() {
    // Shuffled labels (uneven class runs, so tiles of 8, 4, 2 and 1 rows), negative values,
    // several summation runs: the pass without moments (class by class, in tiles) gives the
    // bits of the row pass with moments, and means within 1e-12 of a naive f64 sum.
    let (n, u, k) = (SUM_RUN * 3 + 77, 37, 5);
    let (mut acts, _) = data(n, u, k);
    acts.iter_mut().for_each(|x| *x -= 3.0);
    let mut state = 99u64;
    let labels: Vec<i64> = (0..n)
        .map(|s| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
            if s < k {
                s as i64
            } else {
                ((state >> 33) % k as u64) as i64
            }
        })
        .collect();
    for policy in [NegativePolicy::Shift, NegativePolicy::Clip] {
        for mi in [false, true] {
            let mut with_moments = opts(k, mi);
            with_moments.selectivity = Some(policy);
            with_moments
                .mutual_info
                .iter_mut()
                .for_each(|m| m.shuffles = 0);
            let without = SummaryOptions {
                moments: false,
                ..with_moments
            };
            let a = summarize_dense(&acts, n, u, &labels, &with_moments).unwrap();
            let b = summarize_dense(&acts, n, u, &labels, &without).unwrap();
            assert_eq!(
                format!("{:?}", a.class_means),
                format!("{:?}", b.class_means)
            );
            assert_eq!(
                format!("{:?}", a.selectivity),
                format!("{:?}", b.selectivity)
            );
            assert_eq!(format!("{:?}", a.mi), format!("{:?}", b.mi));
            assert_eq!((&a.min, &a.class_counts), (&b.min, &b.class_counts));
            for unit in 0..u {
                let lo = (0..n)
                    .map(|r| acts[r * u + unit])
                    .fold(f32::INFINITY, f32::min);
                assert_eq!(b.min[unit], lo as f64);
                let mu: Vec<f64> = (0..k)
                    .map(|c| {
                        let vals: Vec<f64> = (0..n)
                            .filter(|&r| labels[r] == c as i64)
                            .map(|r| acts[r * u + unit] as f64)
                            .collect();
                        let m = vals.iter().sum::<f64>() / vals.len() as f64;
                        assert!((b.class_means[unit * k + c] - m).abs() < 1e-12 * m.abs().max(1.0));
                        match policy {
                            NegativePolicy::Clip => {
                                vals.iter().map(|x| x.max(0.0)).sum::<f64>() / vals.len() as f64
                            }
                            _ => m - lo.min(0.0) as f64,
                        }
                    })
                    .collect();
                let best = (0..k).fold(0, |b, c| if mu[c] > mu[b] { c } else { b });
                let rest = (mu.iter().sum::<f64>() - mu[best]) / (k - 1) as f64;
                let want = if mu[best] + rest > 0.0 {
                    (mu[best] - rest) / (mu[best] + rest)
                } else {
                    0.0
                };
                assert!(
                    (b.selectivity[unit] - want).abs() < 1e-9,
                    "{policy:?} unit {unit}"
                );
                assert_eq!(b.preferred_class[unit], best as i64);
            }
        }
    }
}

#[test]
fn bad_inputs_are_errors_of_their_kind() {
    let o = opts(2, true);
    let value = |r: KernelResult<UnitSummary>| matches!(r, Err(KernelError::Value(_)));
    let shape = |r: KernelResult<UnitSummary>| matches!(r, Err(KernelError::Shape(_)));
    assert!(value(summarize_dense(&[1.0, f32::NAN], 2, 1, &[0, 1], &o)));
    assert!(value(summarize_dense(&[1.0, 2.0], 2, 1, &[0, 2], &o)));
    assert!(value(summarize_dense(&[1.0, 2.0], 2, 1, &[0, -1], &o)));
    assert!(shape(summarize_dense(&[1.0, 2.0], 2, 1, &[0], &o)));
    assert!(value(summarize_dense(&[1.0, 2.0], 2, 1, &[0, 0], &o))); // class 1 empty
    assert!(value(summarize_dense(
        &[1.0, 2.0],
        2,
        1,
        &[0, 1],
        &opts(1, true)
    )));
    assert!(value(summarize_long(&[0, 3], &[0, 1], &[1.0, 2.0], 2, &o)));
    assert!(shape(summarize_long(&[0, 1], &[0, 1], &[1.0], 2, &o)));
    let mut bad_bins = o;
    bad_bins.mutual_info.as_mut().unwrap().bins = 1;
    assert!(matches!(
        summarize_dense(&[1.0, 2.0], 2, 1, &[0, 1], &bad_bins),
        Err(KernelError::Config(_))
    ));
    assert!(matches!(
        NegativePolicy::parse("abs"),
        Err(KernelError::Config(_))
    ));
}

/// Long-format records of a dense array in three orders that keep each unit's records in
/// sample order: unit-major, sample-major, unit-major with units reversed.
fn orders(acts: &[f32], labels: &[i64], n: usize, u: usize) -> Vec<(Vec<i64>, Vec<i64>, Vec<f32>)> {
    let mut out = Vec::new();
    for unit_order in [(0..u).collect::<Vec<_>>(), (0..u).rev().collect::<Vec<_>>()] {
        let mut rec = (Vec::new(), Vec::new(), Vec::new());
        for &unit in &unit_order {
            for s in 0..n {
                rec.0.push(unit as i64);
                rec.1.push(labels[s]);
                rec.2.push(acts[s * u + unit]);
            }
        }
        out.push(rec);
    }
    let mut rec = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..n {
        for unit in 0..u {
            rec.0.push(unit as i64);
            rec.1.push(labels[s]);
            rec.2.push(acts[s * u + unit]);
        }
    }
    out.push(rec);
    // Sample-major with the units of each row rotated: interleaved, each unit in sample order.
    let mut rec = (Vec::new(), Vec::new(), Vec::new());
    for s in 0..n {
        for j in 0..u {
            let unit = (j + 7 * s) % u;
            rec.0.push(unit as i64);
            rec.1.push(labels[s]);
            rec.2.push(acts[s * u + unit]);
        }
    }
    out.push(rec);
    out
}

#[test]
fn long_matches_dense_bit_for_bit_and_thread_count() {
    // Several summation runs per unit and a unit count that is not a block multiple.
    let (n, u, k) = (SUM_RUN * 2 + 37, 70, 4);
    let (acts, labels) = data(n, u, k);
    let records = orders(&acts, &labels, n, u);
    for o in variants(k) {
        let dense = summarize_dense(&acts, n, u, &labels, &o).unwrap();
        for (units_l, labels_l, values_l) in &records {
            let long = summarize_long(units_l, labels_l, values_l, u, &o).unwrap();
            assert_same(&dense, &long);
        }
        for threads in [1, 3] {
            let again = in_pool(threads, || {
                summarize_dense(&acts, n, u, &labels, &o).unwrap()
            });
            assert_same(&dense, &again);
            let (units_l, labels_l, values_l) = &records[2];
            let again = in_pool(threads, || {
                summarize_long(units_l, labels_l, values_l, u, &o).unwrap()
            });
            assert_same(&dense, &again);
        }
    }
}

#[test]
fn records_in_batches_and_layers_match_dense() {
    // Two layers interleaved batch by batch, unsorted within the layer (sample-major rotated),
    // fed in uneven batches: each layer equals its dense array.
    let (n, k) = (SUM_RUN + 300, 3);
    let (a1, labels) = data(n, 9, k);
    let (a2, _) = data(n, 5, k);
    let r1 = orders(&a1, &labels, n, 9).swap_remove(3);
    let r2 = orders(&a2, &labels, n, 5).swap_remove(0);
    let samples = |rec: &(Vec<i64>, Vec<i64>, Vec<f32>), u: usize| -> Vec<i64> {
        // sample of each record: recover from position (sample-major or unit-major)
        let _ = rec;
        (0..n * u).map(|i| (i / u) as i64).collect()
    };
    let s1 = samples(&r1, 9);
    let s2: Vec<i64> = (0..5 * n).map(|i| (i % n) as i64).collect();
    for o in variants(k) {
        let mut stats = RecordStats::new(SummaryOptions { n_classes: 0, ..o }, None, 700).unwrap();
        let (l1, l2) = (stats.layer_code("a"), stats.layer_code("b"));
        loop {
            let samples_on = stats.wants_samples();
            let (mut i1, mut i2, mut step) = (0, 0, 1);
            while i1 < r1.0.len() || i2 < r2.0.len() {
                for (layer, rec, smp, i) in [(l1, &r1, &s1, &mut i1), (l2, &r2, &s2, &mut i2)] {
                    let end = (*i + step).min(rec.0.len());
                    let r = *i..end;
                    let sm = samples_on.then(|| &smp[r.clone()]);
                    stats
                        .add_layer(layer, &rec.0[r.clone()], sm, &rec.1[r.clone()], &rec.2[r])
                        .unwrap();
                    *i = end;
                }
                step = step * 3 + 1;
            }
            if !stats.next_pass().unwrap() {
                break;
            }
        }
        let layers = stats.finish().unwrap();
        assert_eq!(layers[0].0, "a");
        assert_same(
            &layers[0].1,
            &summarize_dense(&a1, n, 9, &labels, &o).unwrap(),
        );
        assert_same(
            &layers[1].1,
            &summarize_dense(&a2, n, 5, &labels, &o).unwrap(),
        );
    }
}

#[test]
fn duplicates_huge_labels_and_changed_passes_are_refused() {
    let o = opts(2, true);
    let mut stats = RecordStats::new(SummaryOptions { n_classes: 0, ..o }, None, 100).unwrap();
    let l = stats.layer_code("relu");
    let err = stats
        .add_layer(
            l,
            &[0, 1, 0],
            Some(&[4, 4, 4]),
            &[0, 1, 1],
            &[1.0, 2.0, 3.0],
        )
        .unwrap_err();
    assert!(matches!(err, KernelError::Value(_)));
    assert!(err
        .to_string()
        .contains("layer 'relu': two records of unit 0, sample 4"));
    let mut stats = RecordStats::new(SummaryOptions { n_classes: 0, ..o }, None, 100).unwrap();
    let l = stats.layer_code("relu");
    let err = stats
        .add_layer(
            l,
            &[0, 0],
            Some(&[0, 1]),
            &[0, 1_000_000_000_000],
            &[1.0, 2.0],
        )
        .unwrap_err();
    assert!(matches!(err, KernelError::Capacity(_)), "{err}");
    assert!(err.to_string().contains("renumber"));
    let err = stats
        .add_layer(l, &[0, 0], Some(&[0, 1 << 50]), &[0, 1], &[1.0, 2.0])
        .unwrap_err();
    assert!(matches!(err, KernelError::Capacity(_)), "{err}");
    let mut fixed = RecordStats::new(o, None, 100).unwrap();
    let l = fixed.layer_code("x");
    let err = fixed
        .add_layer(l, &[0, 0], None, &[0, 2], &[1.0, 2.0])
        .unwrap_err();
    assert!(err.to_string().contains("out of range for num_classes=2"));
    let mut twice = RecordStats::new(o, None, 100).unwrap();
    let l = twice.layer_code("x");
    // Units interleaved: MI needs a second pass, which must see the same records.
    let (units, labels) = ([0i64, 1, 0, 1], [0i64, 1, 1, 0]);
    twice
        .add_layer(
            l,
            &units,
            Some(&[0, 0, 1, 1]),
            &labels,
            &[1.0, 2.0, 3.0, 4.0],
        )
        .unwrap();
    assert!(twice.next_pass().unwrap());
    twice.add_layer(l, &[0], None, &[0], &[1.0]).unwrap();
    assert!(twice.next_pass().is_err());
}

#[test]
fn non_finite_values_name_unit_and_sample() {
    let (n, u, k) = (SUM_RUN + 9, 21, 5);
    let (acts, labels) = data(n, u, k);
    for o in variants(k) {
        let mut bad = acts.clone();
        bad[(SUM_RUN + 3) * u + 4] = f32::INFINITY;
        let err = summarize_dense(&bad, n, u, &labels, &o).unwrap_err();
        let expect = format!(
            "unit 4 has a non-finite (NaN or inf) activity (inf) at sample {}",
            SUM_RUN + 3
        );
        assert!(err.to_string().contains(&expect), "{err}");
        bad[(SUM_RUN + 3) * u + 4] = f32::NAN;
        assert!(summarize_dense(&bad, n, u, &labels, &o).is_err());
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

#[test]
fn column_groups_cover_every_unit_once() {
    // A budget smaller than one unit's records: one unit per pass, same result.
    let (n, u, k) = (50, 7, 3);
    let (acts, labels) = data(n, u, k);
    let o = opts(k, true); // shuffles: columns
    let dense = summarize_dense(&acts, n, u, &labels, &o).unwrap();
    let rec = orders(&acts, &labels, n, u).swap_remove(2);
    let mut stats = RecordStats::new(o, Some(u), 10).unwrap();
    let l = stats.layer_code("");
    let mut passes = 0;
    loop {
        stats.add_layer(l, &rec.0, None, &rec.1, &rec.2).unwrap();
        passes += 1;
        if !stats.next_pass().unwrap() {
            break;
        }
    }
    assert_eq!(passes, 1 + u);
    assert_same(&stats.finish().unwrap()[0].1, &dense);
    // Unit-major records (each unit in one run): MI from the first pass alone, for every
    // option, unless a run is longer than the budget.
    let unit_major = orders(&acts, &labels, n, u).swap_remove(0);
    for (budget, expect) in [(n, 1), (n - 1, 1 + u)] {
        for o in variants(k) {
            let mut stats = RecordStats::new(o, Some(u), budget).unwrap();
            let l = stats.layer_code("");
            let mut passes = 0;
            loop {
                stats
                    .add_layer(l, &unit_major.0, None, &unit_major.1, &unit_major.2)
                    .unwrap();
                passes += 1;
                if !stats.next_pass().unwrap() {
                    break;
                }
            }
            let columns = o
                .mutual_info
                .is_some_and(|m| m.binning == Binning::EqualFrequency || m.shuffles > 0);
            let expect = match o.mutual_info {
                None => 1,
                Some(_) if expect == 1 => 1,
                Some(_) if columns => expect,
                Some(_) => 2,
            };
            assert_eq!(passes, expect, "{o:?} budget {budget}");
            let dense = summarize_dense(&acts, n, u, &labels, &o).unwrap();
            assert_same(&stats.finish().unwrap()[0].1, &dense);
        }
    }
}

#[test]
fn parallel_runs_match_dense_and_keep_the_first_pass_mi() {
    // Unit-major records with runs long enough to be added in parallel, in batches that cut
    // runs; then unit 0's second half moved to the end (the unit comes back: the first-pass
    // MI is given up); then a duplicate inside a run.
    let (n, u, k) = (SUM_RUN * 8 + 123, 5, 3);
    let (acts, labels) = data(n, u, k);
    let unit_major = orders(&acts, &labels, n, u).swap_remove(0);
    let samples: Vec<i64> = (0..n * u).map(|i| (i % n) as i64).collect();
    let mut back: Vec<usize> = (0..n / 2).chain(n..n * u).collect();
    back.extend(n / 2..n);
    let run =
        |o: &SummaryOptions, order: &[usize], batch: usize| -> KernelResult<(usize, UnitSummary)> {
            let pick = |v: &[i64]| order.iter().map(|&i| v[i]).collect::<Vec<_>>();
            let (units, samples, classes) =
                (pick(&unit_major.0), pick(&samples), pick(&unit_major.1));
            let values: Vec<f32> = order.iter().map(|&i| unit_major.2[i]).collect();
            let mut stats = RecordStats::new(*o, None, usize::MAX)?;
            let l = stats.layer_code("l");
            let mut passes = 0;
            loop {
                let first = stats.wants_samples();
                for start in (0..units.len()).step_by(batch) {
                    let r = start..(start + batch).min(units.len());
                    let s = first.then(|| &samples[r.clone()]);
                    stats.add_layer(l, &units[r.clone()], s, &classes[r.clone()], &values[r])?;
                }
                passes += 1;
                if !stats.next_pass()? {
                    break;
                }
            }
            Ok((passes, stats.finish()?.pop().unwrap().1))
        };
    let in_order: Vec<usize> = (0..n * u).collect();
    for o in variants(k) {
        let dense = summarize_dense(&acts, n, u, &labels, &o).unwrap();
        for batch in [n * u, 3 * n, 2 * n + n / 3, n + 5] {
            for threads in [1, 3] {
                let (passes, s) = in_pool(threads, || run(&o, &in_order, batch)).unwrap();
                assert_eq!(passes, 1, "{o:?}");
                assert_same(&s, &dense);
            }
        }
        let (passes, s) = run(&o, &back, 3 * n).unwrap();
        assert_eq!(passes > 1, o.mutual_info.is_some(), "{o:?}");
        assert_same(&s, &dense);
    }
    let mut dup = in_order.clone();
    dup[2 * n + 100] = 2 * n + 99;
    let err = run(&opts(k, true), &dup, 3 * n).unwrap_err().to_string();
    assert!(err.contains("two records of unit 2, sample 99"), "{err}");
    let mut bad = unit_major.2.clone();
    bad[3 * n + 7] = f32::NAN;
    let order: Vec<usize> = (0..n * u).collect();
    let values = bad;
    let mut stats = RecordStats::new(opts(k, false), None, usize::MAX).unwrap();
    let l = stats.layer_code("l");
    let err = stats
        .add_layer(l, &unit_major.0, Some(&samples), &unit_major.1, &values)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unit 3") && err.contains("sample 7"),
        "{err} {}",
        order.len()
    );
}
