//! Long-format records `(layer, unit, sample, label, value)` in any order, fed in batches
//! (row groups of a file, or arrays in memory) into [`RecordStats`], which keeps per-unit state
//! only: memory does not grow with the number of records (except one bit per (unit, sample)
//! for refusing duplicates).
//!
//! Passes over the same records, in the same order:
//! 1. sums: counts, class sums, moments, min and max, by the summation rule of the module docs
//!    (each unit's records in the order they come, in runs of [`SUM_RUN`]);
//! 2. MI with equal-width bins and no shuffles: bin every record with its unit's min and max
//!    into per-unit integer tables (one more pass);
//! 3. other MI options need each unit's values together: groups of units holding at most
//!    `column_budget` records are collected, one pass per group.

use std::borrow::Cow;
use std::ops::Range;

use rayon::prelude::*;

use crate::error::KernelResult;
use crate::kernels::binning::EqualWidthBins;
use crate::kernels::mutual_info::{
    entropy_bits, mi_from_table, unit_mutual_info, MiScratch, MiUnit,
};
use crate::kernels::mutual_info::{Binning, MiOptions};
use crate::{ensure, fail};

use super::columns::column_mutual_info;
use super::{
    assemble, check_capacity, non_finite, SummaryOptions, Totals, UnitRow, UnitSummary, SUM_RUN,
};

/// Bytes of state per (unit, class) cell: count, total and run sums, clipped sums.
const CELL_BYTES: u128 = 40;

/// The pass the accumulator expects records for.
#[derive(Debug, Clone, PartialEq)]
enum Pass {
    Sums,
    Tables,
    /// Units collected in this pass: `(layer, units)`, and where the next group starts.
    Columns(Vec<(usize, Range<usize>)>, (usize, usize)),
    Done,
}

/// Per-unit state of one layer.
#[derive(Default)]
struct LayerState {
    name: String,
    tot: Totals,
    run_sums: Vec<f64>,
    run_pos: Vec<f64>,
    run_s1: Vec<f64>,
    run_s2: Vec<f64>,
    /// One bit per (unit, sample): `seen[u * words + s / 64]`.
    seen: Vec<u64>,
    words: usize,
    rows: Vec<UnitRow>,
    binners: Vec<EqualWidthBins>,
    tables: Vec<u32>,
    /// Column slot of each unit collected in this pass (`u32::MAX`: not collected).
    slots: Vec<u32>,
    col_values: Vec<Vec<f32>>,
    col_labels: Vec<Vec<u32>>,
    /// First pass, MI wanted: the unit whose run of records is being collected (its values
    /// and labels in `open_values`/`open_labels`), and the MI of the units whose run ended.
    open: Option<usize>,
    open_values: Vec<f32>,
    open_labels: Vec<u32>,
    closed_mi: Vec<Option<MiUnit>>,
}

impl LayerState {
    fn prefix(&self) -> String {
        if self.name.is_empty() {
            String::new()
        } else {
            format!("layer '{}': ", self.name)
        }
    }

    fn unit_label(&self, u: usize) -> String {
        format!("{}unit {u}", self.prefix())
    }

    fn n_units(&self) -> usize {
        self.tot.n.len()
    }

    /// The state of unit `u` that its records update.
    fn cells(&mut self, u: usize) -> UnitCells<'_> {
        let k = self.tot.k;
        let (t, cells) = (&mut self.tot, u * k..(u + 1) * k);
        UnitCells {
            n: &mut t.n[u],
            x0: &mut t.x0[u],
            lo: &mut t.lo[u],
            hi: &mut t.hi[u],
            active: &mut t.active[u],
            s1: &mut t.s1[u],
            s2: &mut t.s2[u],
            run_s1: &mut self.run_s1[u],
            run_s2: &mut self.run_s2[u],
            counts: &mut t.counts[cells.clone()],
            sums: &mut t.sums[cells.clone()],
            pos: &mut t.pos[cells.clone()],
            run_sums: &mut self.run_sums[cells.clone()],
            run_pos: &mut self.run_pos[cells],
        }
    }

    /// Flush the current run of unit `u` into its totals (the summation rule).
    fn flush(&mut self, u: usize) {
        self.cells(u).flush();
    }

    fn grow_units(&mut self, n_units: usize) {
        let k = self.tot.k;
        let t = &mut self.tot;
        t.n.resize(n_units, 0);
        t.counts.resize(n_units * k, 0);
        t.sums.resize(n_units * k, 0.0);
        t.pos.resize(n_units * k, 0.0);
        t.x0.resize(n_units, f64::NAN);
        t.s1.resize(n_units, 0.0);
        t.s2.resize(n_units, 0.0);
        t.lo.resize(n_units, f32::INFINITY);
        t.hi.resize(n_units, f32::NEG_INFINITY);
        t.active.resize(n_units, 0);
        self.run_sums.resize(n_units * k, 0.0);
        self.run_pos.resize(n_units * k, 0.0);
        self.run_s1.resize(n_units, 0.0);
        self.run_s2.resize(n_units, 0.0);
        self.seen.resize(n_units * self.words, 0);
        self.closed_mi.resize(n_units, None);
    }

    fn grow_classes(&mut self, k_new: usize) {
        let (n_units, k) = (self.n_units(), self.tot.k);
        fn restride<T: Copy>(v: &mut Vec<T>, n_units: usize, k: usize, k_new: usize, fill: T) {
            let mut out = vec![fill; n_units * k_new];
            for u in 0..n_units {
                out[u * k_new..u * k_new + k].copy_from_slice(&v[u * k..(u + 1) * k]);
            }
            *v = out;
        }
        restride(&mut self.tot.counts, n_units, k, k_new, 0);
        restride(&mut self.tot.sums, n_units, k, k_new, 0.0);
        restride(&mut self.tot.pos, n_units, k, k_new, 0.0);
        restride(&mut self.run_sums, n_units, k, k_new, 0.0);
        restride(&mut self.run_pos, n_units, k, k_new, 0.0);
        self.tot.k = k_new;
    }

    fn grow_samples(&mut self, words_new: usize) {
        let (n_units, words) = (self.n_units(), self.words);
        let mut out = vec![0u64; n_units * words_new];
        for u in 0..n_units {
            out[u * words_new..u * words_new + words]
                .copy_from_slice(&self.seen[u * words..(u + 1) * words]);
        }
        (self.seen, self.words) = (out, words_new);
    }
}

/// The run of the open unit ends and one of `unit` starts: the open unit's MI from its
/// collected values (they are all of its records unless it comes back, which this detects).
/// False when the first pass cannot give MI after all (a unit came back); the collected
/// values are then dropped.
fn switch_open_unit(
    state: &mut LayerState,
    unit: usize,
    mo: &MiOptions,
    scratch: &mut MiScratch,
) -> bool {
    close_open_unit(state, mo, scratch);
    if state.closed_mi[unit].is_some() {
        state.open = None;
        (state.open_values, state.open_labels) = (Vec::new(), Vec::new());
        return false;
    }
    state.open = Some(unit);
    true
}

/// The open unit's MI from its collected values (its extremes and counts are final).
fn close_open_unit(state: &mut LayerState, mo: &MiOptions, scratch: &mut MiScratch) {
    let Some(u) = state.open.take() else {
        return;
    };
    let k = state.tot.k;
    let counts = &state.tot.counts[u * k..(u + 1) * k];
    let (lo, hi) = (state.tot.lo[u], state.tot.hi[u]);
    let (values, labels) = (&state.open_values, &state.open_labels);
    state.closed_mi[u] = Some(unit_mutual_info(
        u as u64, values, labels, lo, hi, counts, mo, scratch,
    ));
    state.open_values.clear();
    state.open_labels.clear();
}

/// Adds one record of unit `u` (checked): [`add_unit_run`] for a run of one.
#[inline(always)]
fn add_record(
    state: &mut LayerState,
    u: usize,
    k: usize,
    c: usize,
    x: f32,
    (sums_on, pos_on, moments_on): (bool, bool, bool),
) {
    let t = &mut state.tot;
    let (cell, xf, seen) = (u * k + c, x as f64, t.n[u]);
    if seen == 0 {
        t.x0[u] = xf;
    }
    t.counts[cell] += 1;
    if sums_on {
        state.run_sums[cell] += xf;
    }
    if pos_on {
        state.run_pos[cell] += xf.max(0.0);
    }
    if moments_on {
        let d = xf - t.x0[u];
        state.run_s1[u] += d;
        state.run_s2[u] += d * d;
        t.active[u] += (x > 0.0) as u64;
    }
    t.lo[u] = t.lo[u].min(x);
    t.hi[u] = t.hi[u].max(x);
    t.n[u] = seen + 1;
    if (seen + 1) % SUM_RUN as u64 == 0 {
        state.flush(u);
    }
}

/// The state of one unit that a run of its records updates (borrowed from its layer's
/// state, or from a [`UnitAcc`] copy).
struct UnitCells<'a> {
    n: &'a mut u64,
    x0: &'a mut f64,
    lo: &'a mut f32,
    hi: &'a mut f32,
    active: &'a mut u64,
    s1: &'a mut f64,
    s2: &'a mut f64,
    run_s1: &'a mut f64,
    run_s2: &'a mut f64,
    counts: &'a mut [u64],
    sums: &'a mut [f64],
    pos: &'a mut [f64],
    run_sums: &'a mut [f64],
    run_pos: &'a mut [f64],
}

impl UnitCells<'_> {
    /// Flush the current run into the totals (the summation rule).
    fn flush(&mut self) {
        for (t, r) in self.sums.iter_mut().zip(self.run_sums.iter_mut()) {
            *t += std::mem::take(r);
        }
        for (t, r) in self.pos.iter_mut().zip(self.run_pos.iter_mut()) {
            *t += std::mem::take(r);
        }
        *self.s1 += std::mem::take(self.run_s1);
        *self.s2 += std::mem::take(self.run_s2);
    }
}

/// An owned copy of one unit's state, updated by a parallel task and stored back in order.
#[derive(Clone, Default)]
struct UnitAcc {
    n: u64,
    x0: f64,
    lo: f32,
    hi: f32,
    active: u64,
    s1: f64,
    s2: f64,
    run_s1: f64,
    run_s2: f64,
    counts: Vec<u64>,
    sums: Vec<f64>,
    pos: Vec<f64>,
    run_sums: Vec<f64>,
    run_pos: Vec<f64>,
}

impl UnitAcc {
    fn load(state: &LayerState, u: usize) -> UnitAcc {
        let (t, k) = (&state.tot, state.tot.k);
        let cells = u * k..(u + 1) * k;
        UnitAcc {
            n: t.n[u],
            x0: t.x0[u],
            lo: t.lo[u],
            hi: t.hi[u],
            active: t.active[u],
            s1: t.s1[u],
            s2: t.s2[u],
            run_s1: state.run_s1[u],
            run_s2: state.run_s2[u],
            counts: t.counts[cells.clone()].to_vec(),
            sums: t.sums[cells.clone()].to_vec(),
            pos: t.pos[cells.clone()].to_vec(),
            run_sums: state.run_sums[cells.clone()].to_vec(),
            run_pos: state.run_pos[cells].to_vec(),
        }
    }

    fn store(&self, state: &mut LayerState, u: usize) {
        let k = state.tot.k;
        let cells = u * k..(u + 1) * k;
        let t = &mut state.tot;
        (t.n[u], t.x0[u], t.lo[u], t.hi[u]) = (self.n, self.x0, self.lo, self.hi);
        (t.active[u], t.s1[u], t.s2[u]) = (self.active, self.s1, self.s2);
        (state.run_s1[u], state.run_s2[u]) = (self.run_s1, self.run_s2);
        t.counts[cells.clone()].copy_from_slice(&self.counts);
        t.sums[cells.clone()].copy_from_slice(&self.sums);
        t.pos[cells.clone()].copy_from_slice(&self.pos);
        state.run_sums[cells.clone()].copy_from_slice(&self.run_sums);
        state.run_pos[cells].copy_from_slice(&self.run_pos);
    }

    fn cells(&mut self) -> UnitCells<'_> {
        UnitCells {
            n: &mut self.n,
            x0: &mut self.x0,
            lo: &mut self.lo,
            hi: &mut self.hi,
            active: &mut self.active,
            s1: &mut self.s1,
            s2: &mut self.s2,
            run_s1: &mut self.run_s1,
            run_s2: &mut self.run_s2,
            counts: &mut self.counts,
            sums: &mut self.sums,
            pos: &mut self.pos,
            run_sums: &mut self.run_sums,
            run_pos: &mut self.run_pos,
        }
    }
}

/// What a parallel task gives back for one run: its unit's updated state and bitset, and
/// the unit's MI when the run holds all of its records.
struct RunPart {
    acc: UnitAcc,
    seen: Vec<u64>,
    mi: Option<MiUnit>,
    /// The last run's labels as `u32` (the open unit's collected labels; empty for the others).
    classes: Vec<u32>,
}

/// A class index as the record columns give it (`i64` from the caller, `u32` once checked).
trait ClassIndex: Copy {
    fn index(self) -> usize;
}

impl ClassIndex for i64 {
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}

impl ClassIndex for u32 {
    #[inline(always)]
    fn index(self) -> usize {
        self as usize
    }
}

/// Adds a run of records of one unit (checked) to its sums, in order, flushing at every
/// [`SUM_RUN`] records of the unit: the operations of the summation rule, with the unit's
/// running values in registers.
fn add_unit_run<L: ClassIndex>(
    cells: &mut UnitCells<'_>,
    labels: &[L],
    values: &[f32],
    (sums_on, pos_on, moments_on): (bool, bool, bool),
) {
    // One loop per combination of options, without branches inside.
    match (sums_on, pos_on, moments_on) {
        (true, false, true) => add_unit_run_with::<L, true, false, true>(cells, labels, values),
        (true, false, false) => add_unit_run_with::<L, true, false, false>(cells, labels, values),
        (true, true, true) => add_unit_run_with::<L, true, true, true>(cells, labels, values),
        (true, true, false) => add_unit_run_with::<L, true, true, false>(cells, labels, values),
        (false, _, true) => add_unit_run_with::<L, false, false, true>(cells, labels, values),
        (false, _, false) => add_unit_run_with::<L, false, false, false>(cells, labels, values),
    }
}

#[inline(always)]
fn add_unit_run_with<L: ClassIndex, const SUMS: bool, const POS: bool, const MOMENTS: bool>(
    cells: &mut UnitCells<'_>,
    labels: &[L],
    values: &[f32],
) {
    let k = cells.counts.len();
    let mut done = 0;
    while done < labels.len() {
        let seen = *cells.n;
        if seen == 0 {
            *cells.x0 = values[done] as f64;
        }
        let room = SUM_RUN - (seen % SUM_RUN as u64) as usize;
        let end = labels.len().min(done + room);
        let (labels, values) = (&labels[done..end], &values[done..end]);
        let x0 = *cells.x0;
        let (mut s1, mut s2) = (*cells.run_s1, *cells.run_s2);
        let (mut lo, mut hi, mut active) = (*cells.lo, *cells.hi, *cells.active);
        let counts = &mut cells.counts[..k];
        let sums = &mut cells.run_sums[..if SUMS { k } else { 0 }];
        let pos = &mut cells.run_pos[..if POS { k } else { 0 }];
        for (&c, &x) in labels.iter().zip(values) {
            let (c, xf) = (c.index(), x as f64);
            counts[c] += 1;
            if SUMS {
                sums[c] += xf;
            }
            if POS {
                pos[c] += xf.max(0.0);
            }
            if MOMENTS {
                let d = xf - x0;
                s1 += d;
                s2 += d * d;
                active += (x > 0.0) as u64;
            }
            // Selects (one `minss`/`maxss`): the values are checked finite.
            lo = if x < lo { x } else { lo };
            hi = if x > hi { x } else { hi };
        }
        (*cells.run_s1, *cells.run_s2) = (s1, s2);
        (*cells.lo, *cells.hi, *cells.active) = (lo, hi, active);
        *cells.n = seen + labels.len() as u64;
        if *cells.n % SUM_RUN as u64 == 0 {
            cells.flush();
        }
        done = end;
    }
}

/// The position of the first NaN or inf value (a vectorized test of blocks first: a value is
/// NaN or inf exactly when its exponent bits are all set; an integer test, where a float sum
/// would be one dependent add per value).
fn first_non_finite(values: &[f32]) -> Option<usize> {
    const EXPONENT: u32 = 0x7f80_0000;
    let finite = |block: &[f32]| {
        let bad = block.iter().fold(0u32, |m, &x| {
            m | ((x.to_bits() & EXPONENT) == EXPONENT) as u32
        });
        bad == 0
    };
    let block = values.chunks(256).position(|b| !finite(b))?;
    values[block * 256..]
        .iter()
        .position(|x| !x.is_finite())
        .map(|i| block * 256 + i)
}

/// Marks the samples of a run of one unit in its bitset (`seen`, one bit per sample); the
/// first sample already marked, if any.
fn mark_samples(seen: &mut [u64], samples: &[i64]) -> Option<usize> {
    let in_order = samples.len() >= 128 && consecutive(samples);
    mark_samples_known(seen, samples, in_order)
}

/// [`mark_samples`] for a caller that has tested whether the samples are consecutive.
fn mark_samples_known(seen: &mut [u64], samples: &[i64], in_order: bool) -> Option<usize> {
    // Consecutive samples (the layout `record` writes): whole words at a time, when none of
    // their bits is set yet (else the record-by-record loop finds the first duplicate).
    if in_order && samples.len() >= 128 {
        let (first, end) = (samples[0] as usize, samples[0] as usize + samples.len());
        let words = first / 64..end.div_ceil(64);
        let mask = |w: usize| {
            let lo = first.max(w * 64) - w * 64;
            let hi = end.min(w * 64 + 64) - w * 64;
            (u64::MAX >> (64 - (hi - lo))) << lo
        };
        if words.clone().all(|w| seen[w] & mask(w) == 0) {
            words.for_each(|w| seen[w] |= mask(w));
            return None;
        }
    }
    // The bitset word of the current samples stays in a register (samples in order share
    // words), instead of a load that waits on the previous store.
    let (mut at, mut bits) = (usize::MAX, 0u64);
    let mut duplicate = None;
    for &s in samples {
        let s = s as usize;
        if s / 64 != at {
            if at != usize::MAX {
                seen[at] = bits;
            }
            at = s / 64;
            bits = seen[at];
        }
        let mask = 1u64 << (s % 64);
        if bits & mask != 0 {
            duplicate = Some(s);
            break;
        }
        bits |= mask;
    }
    if at != usize::MAX {
        seen[at] = bits;
    }
    duplicate
}

fn duplicate_error(state: &LayerState, u: usize, s: usize) -> crate::error::KernelError {
    fail!(
        Value,
        "{}two records of unit {u}, sample {s}: each (layer, unit, sample) must appear once \
         (drop the duplicates, e.g. with polars unique())",
        state.prefix()
    )
}

/// Records per run, on average, from which the runs of a batch are added in parallel.
const PARALLEL_MIN_RUN: usize = 4096;

/// The runs of one unit in a batch, `(unit, records)`, when there are 2 to `max_runs`.
fn unit_runs(units: &[i64], max_runs: usize) -> Option<Vec<(usize, Range<usize>)>> {
    let mut runs = Vec::new();
    let mut i = 0;
    while i < units.len() {
        if runs.len() == max_runs {
            return None;
        }
        let j = run_end(units, i);
        runs.push((units[i] as usize, i..j));
        i = j;
    }
    (runs.len() >= 2).then_some(runs)
}

/// The end of the run of `units[start]` that starts at `start`: whole blocks compared
/// without an early exit (they vectorize), then record by record.
fn run_end(units: &[i64], start: usize) -> usize {
    const BLOCK: usize = 64;
    let u = units[start];
    let mut j = start;
    while j + BLOCK <= units.len() && all_equal(&units[j..j + BLOCK], u) {
        j += BLOCK;
    }
    j + units[j..].iter().take_while(|&&v| v == u).count()
}

#[inline(always)]
fn equal_to(xs: &[i64], v: i64) -> bool {
    xs.iter().map(|&x| (x != v) as u64).sum::<u64>() == 0
}
multiversion!(fn all_equal(xs: &[i64], v: i64) -> bool => equal_to ["avx2"]);

/// The record columns have one length.
fn check_lengths(
    units: &[i64],
    samples: Option<&[i64]>,
    labels: &[i64],
    values: &[f32],
) -> KernelResult<()> {
    let n = units.len();
    ensure!(
        labels.len() == n && values.len() == n && samples.is_none_or(|s| s.len() == n),
        Shape,
        "records disagree in length: {n} units, {} labels, {} values{}",
        labels.len(),
        values.len(),
        samples.map_or(String::new(), |s| format!(", {} samples", s.len()))
    );
    Ok(())
}

// Scans of 64-bit integers vectorize with AVX2 (SSE2 has no 64-bit compare): `multiversion!`.
#[inline(always)]
fn fold_extremes(xs: &[i64]) -> (i64, i64) {
    xs.iter()
        .fold((i64::MAX, i64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)))
}
multiversion!(fn block_extremes(xs: &[i64]) -> (i64, i64) => fold_extremes ["avx2"]);

/// Whether each value is the previous one + 1 (no early exit, so it vectorizes).
#[inline(always)]
fn all_consecutive(xs: &[i64]) -> bool {
    let steps = xs[1..]
        .iter()
        .zip(xs)
        .map(|(&b, &a)| (b.wrapping_sub(a) != 1) as u64);
    steps.sum::<u64>() == 0
}
multiversion!(fn consecutive(xs: &[i64]) -> bool => all_consecutive ["avx2"]);

/// The labels as `u32` in `out` when every one is a class index below `k` (else false): the
/// range test and the narrowing of a block while it is in cache.
#[inline(always)]
fn narrow_labels_below(labels: &[i64], k: usize, out: &mut Vec<u32>) -> bool {
    out.clear();
    for block in labels.chunks(1024) {
        // Negative labels are huge as u64, so one test covers both ends.
        let top = block.iter().fold(0u64, |m, &c| m.max(c as u64));
        if top >= k as u64 {
            return false;
        }
        out.extend(block.iter().map(|&c| c as u32));
    }
    true
}
multiversion!(fn labels_u32_below(labels: &[i64], k: usize, out: &mut Vec<u32>) -> bool => narrow_labels_below ["avx2"]);

/// Buffers of a parallel run task.
#[derive(Default)]
struct RunScratch {
    mi: MiScratch,
    classes: Vec<u32>,
}

thread_local! {
    /// Each pool thread's [`RunScratch`], kept from batch to batch: buffers made afresh for
    /// every run page-faulted their memory in again (half the page faults of a streamed file).
    /// Nothing a task runs while it holds them uses the pool (no re-entry).
    static RUN_SCRATCH: std::cell::RefCell<RunScratch> = std::cell::RefCell::default();
}

/// Smallest and largest of a non-empty slice (on the rayon pool for a large one: a batch
/// of a streamed file is checked three times over before its runs are added in parallel).
fn extremes(xs: &[i64]) -> (i64, i64) {
    const CHUNK: usize = 1 << 16;
    if xs.len() <= CHUNK {
        return block_extremes(xs);
    }
    xs.par_chunks(CHUNK)
        .map(block_extremes)
        .reduce(|| (i64::MAX, i64::MIN), |a, b| (a.0.min(b.0), a.1.max(b.1)))
}

/// Statistics of long-format records fed in batches over one or more passes; see the module
/// docs. Usage: [`RecordStats::layer_code`] names layers, [`RecordStats::add`] takes records,
/// [`RecordStats::next_pass`] ends a pass and says whether the same records are wanted once
/// more, [`RecordStats::finish`] gives one summary per layer (layers in code order).
pub struct RecordStats {
    opts: SummaryOptions,
    fixed_classes: bool,
    fixed_units: Option<usize>,
    column_budget: usize,
    layers: Vec<LayerState>,
    pass: Pass,
    /// Records fed in this pass (to check that every pass sees the same records).
    records: u64,
    sums_records: u64,
    /// Whether MI comes from the first pass: true while each unit's records have come in one
    /// run (the layout `singledir record` writes) of at most `column_budget` records; the run
    /// holds all of the unit's values, so its MI is computed when the run ends.
    one_pass: bool,
    scratch: MiScratch,
}

impl RecordStats {
    /// `opts.n_classes == 0` infers the class count as the largest label + 1; otherwise a
    /// larger label is refused. `fixed_units` refuses unit indices beyond it and reports that
    /// many units per layer; `column_budget` bounds the records collected per pass when MI
    /// needs each unit's values together.
    pub fn new(
        opts: SummaryOptions,
        fixed_units: Option<usize>,
        column_budget: usize,
    ) -> KernelResult<RecordStats> {
        if let Some(mo) = &opts.mutual_info {
            mo.validate(opts.n_classes.max(2))?;
        }
        check_capacity(
            (fixed_units.unwrap_or(0) as u128) * opts.n_classes as u128,
            CELL_BYTES,
            &format!(
                "{} classes for {} units",
                opts.n_classes,
                fixed_units.unwrap_or(0)
            ),
            "give the true number of classes",
        )?;
        Ok(RecordStats {
            fixed_classes: opts.n_classes > 0,
            opts,
            fixed_units,
            column_budget: column_budget.max(1),
            layers: Vec::new(),
            pass: Pass::Sums,
            records: 0,
            sums_records: 0,
            one_pass: opts.mutual_info.is_some(),
            scratch: MiScratch::default(),
        })
    }

    /// The code of layer `name`, assigned in order of first appearance.
    pub fn layer_code(&mut self, name: &str) -> usize {
        if let Some(i) = self.layers.iter().position(|l| l.name == name) {
            return i;
        }
        let mut layer = LayerState {
            name: name.to_string(),
            ..Default::default()
        };
        layer.tot.k = self.opts.n_classes;
        if let Some(n) = self.fixed_units {
            layer.grow_units(n);
        }
        self.layers.push(layer);
        self.layers.len() - 1
    }

    /// Whether the records of this pass need the samples (the first pass checks duplicates).
    pub fn wants_samples(&self) -> bool {
        self.pass == Pass::Sums
    }

    /// Records of several layers: `layers[i]` is a code from [`RecordStats::layer_code`].
    pub fn add(
        &mut self,
        layers: &[u32],
        units: &[i64],
        samples: Option<&[i64]>,
        labels: &[i64],
        values: &[f32],
    ) -> KernelResult<()> {
        ensure!(
            layers.len() == units.len(),
            Shape,
            "records disagree in length: {} layers, {} units",
            layers.len(),
            units.len()
        );
        check_lengths(units, samples, labels, values)?;
        let mut start = 0;
        while start < layers.len() {
            let code = layers[start];
            let len = layers[start..].iter().take_while(|&&c| c == code).count();
            let r = start..start + len;
            let samples = samples.map(|s| &s[r.clone()]);
            let (u, l, v) = (&units[r.clone()], &labels[r.clone()], &values[r]);
            self.add_layer(code as usize, u, samples, l, v)?;
            start += len;
        }
        Ok(())
    }

    /// Records in runs of one layer: run `i` has `lengths[i]` records of layer `codes[i]`.
    pub fn add_runs(
        &mut self,
        codes: &[u32],
        lengths: &[u64],
        units: &[i64],
        samples: Option<&[i64]>,
        labels: &[i64],
        values: &[f32],
    ) -> KernelResult<()> {
        check_lengths(units, samples, labels, values)?;
        let total: u64 = lengths.iter().sum();
        ensure!(
            codes.len() == lengths.len() && total == units.len() as u64,
            Shape,
            "{} layer runs of {total} records in all, for {} records: give one code and length \
             per run",
            codes.len(),
            units.len()
        );
        let mut start = 0usize;
        for (&code, &len) in codes.iter().zip(lengths) {
            let r = start..start + len as usize;
            let samples = samples.map(|s| &s[r.clone()]);
            let (u, l, v) = (&units[r.clone()], &labels[r.clone()], &values[r]);
            self.add_layer(code as usize, u, samples, l, v)?;
            start += len as usize;
        }
        Ok(())
    }

    /// Records of one layer.
    pub fn add_layer(
        &mut self,
        layer: usize,
        units: &[i64],
        samples: Option<&[i64]>,
        labels: &[i64],
        values: &[f32],
    ) -> KernelResult<()> {
        let n = units.len();
        check_lengths(units, samples, labels, values)?;
        ensure!(
            layer < self.layers.len(),
            Value,
            "layer code {layer} was never named: get codes from layer_code"
        );
        if n == 0 {
            return Ok(());
        }
        self.records += n as u64;
        match self.pass {
            Pass::Sums => self.add_sums(layer, units, samples, labels, values),
            Pass::Tables => self.add_tables(layer, units, labels, values),
            Pass::Columns(..) => self.add_columns(layer, units, labels, values),
            Pass::Done => Err(fail!(Value, "all passes are done: call finish")),
        }
    }

    /// Checks the ranges of a batch and grows the state to hold it (first pass).
    fn prepare(
        &mut self,
        layer: usize,
        units: &[i64],
        samples: Option<&[i64]>,
        labels: &[i64],
    ) -> KernelResult<()> {
        let prefix = self.layers[layer].prefix();
        let (u_lo, u_hi) = extremes(units);
        let (l_lo, l_hi) = extremes(labels);
        ensure!(
            u_lo >= 0,
            Value,
            "{prefix}unit index {u_lo} is negative: units must be indices 0..n_units-1"
        );
        ensure!(
            l_lo >= 0,
            Value,
            "{prefix}label {l_lo} is negative: labels must be class indices 0..n_classes-1"
        );
        if let Some(n) = self.fixed_units {
            ensure!(
                (u_hi as u64) < n as u64,
                Value,
                "{prefix}unit index {u_hi} is outside 0..{n}: unit indices must be 0..{}",
                n.saturating_sub(1)
            );
        }
        let k = self.opts.n_classes;
        if l_hi as u64 >= k as u64 {
            ensure!(
                !self.fixed_classes,
                Value,
                "{prefix}label {l_hi} is out of range for num_classes={k}: raise num_classes or \
                 fix the labels"
            );
            let k_new = l_hi as u128 + 1;
            let units_total: u128 = self.layers.iter().map(|l| l.n_units() as u128).sum();
            check_capacity(
                k_new * units_total.max(u_hi as u128 + 1),
                CELL_BYTES,
                &format!("{prefix}label {l_hi} ({k_new} classes)"),
                "labels must be class indices 0..n_classes-1: renumber them",
            )?;
            for l in &mut self.layers {
                l.grow_classes(k_new as usize);
            }
            self.opts.n_classes = k_new as usize;
        }
        let state = &mut self.layers[layer];
        if u_hi as usize >= state.n_units() {
            check_capacity(
                (u_hi as u128 + 1) * (self.opts.n_classes as u128 + 1),
                CELL_BYTES,
                &format!("{prefix}unit index {u_hi}"),
                "number the units 0..n_units-1",
            )?;
            state.grow_units(u_hi as usize + 1);
        }
        if let Some(samples) = samples {
            let (s_lo, s_hi) = extremes(samples);
            ensure!(
                s_lo >= 0,
                Value,
                "{prefix}sample index {s_lo} is negative: samples must be indices 0..n_samples-1"
            );
            let words = (s_hi as u128 / 64 + 1) as usize;
            if words > state.words {
                let words = words.max(state.words * 2);
                check_capacity(
                    state.n_units() as u128 * words as u128,
                    8,
                    &format!("{prefix}sample index {s_hi} (checking duplicates)"),
                    "number the samples 0..n_samples-1",
                )?;
                state.grow_samples(words);
            }
        }
        Ok(())
    }

    fn add_sums(
        &mut self,
        layer: usize,
        units: &[i64],
        samples: Option<&[i64]>,
        labels: &[i64],
        values: &[f32],
    ) -> KernelResult<()> {
        let (sums_on, pos_on, moments_on) = (
            self.opts.class_sums(),
            self.opts.clipped_sums(),
            self.opts.moments,
        );
        let mut collect = self.one_pass;
        let mo = self.opts.mutual_info.unwrap_or(MiOptions {
            bins: 2,
            binning: Binning::EqualWidth,
            miller_madow: false,
            shuffles: 0,
            seed: 0,
        });
        let flags = (sums_on, pos_on, moments_on);
        let n = units.len();
        let runs = unit_runs(units, n / PARALLEL_MIN_RUN);
        // Runs of distinct units: the units' range from the runs, the labels' and samples'
        // inside the parallel tasks, on data they read anyway (three scans of the batch
        // fewer). A batch found out of range takes `prepare`, which grows the state or names
        // the error, in its order of checks.
        if let Some(runs) = &runs {
            if self.prepare_run_units(layer, runs) && self.runs_are_independent(layer, runs) {
                let added =
                    self.add_sums_parallel(layer, runs, samples, labels, values, flags, mo)?;
                if added {
                    return Ok(());
                }
            }
        }
        self.prepare(layer, units, samples, labels)?;
        if let Some(runs) = &runs {
            if self.runs_are_independent(layer, runs) {
                let added =
                    self.add_sums_parallel(layer, runs, samples, labels, values, flags, mo)?;
                debug_assert!(added, "prepare makes every range fit");
                return Ok(());
            }
        }
        let k = self.layers[layer].tot.k;
        let words = self.layers[layer].words;
        let state = &mut self.layers[layer];
        let mut i = 0;
        // Runs of one unit (a whole batch of them in the layout `record` writes): per-run
        // checks, and the unit's sums in registers.
        while i < n {
            let u = units[i] as usize;
            let j = run_end(units, i);
            if j == i + 1 && !collect && samples.is_none() {
                // A lone record (units interleaved): the direct update, without run set-up.
                let (c, x) = (labels[i] as usize, values[i]);
                if !x.is_finite() {
                    let at = format!("record {i} of the batch");
                    return Err(non_finite(&state.unit_label(u), x, &at));
                }
                add_record(state, u, k, c, x, flags);
                i = j;
                continue;
            }
            if let Some(samples) = samples {
                let seen = &mut state.seen[u * words..(u + 1) * words];
                if let Some(s) = mark_samples(seen, &samples[i..j]) {
                    return Err(duplicate_error(state, u, s));
                }
            }
            if let Some(r) = first_non_finite(&values[i..j]) {
                let at = samples.map_or(format!("record {} of the batch", i + r), |s| {
                    format!("sample {}", s[i + r])
                });
                return Err(non_finite(&state.unit_label(u), values[i + r], &at));
            }
            if collect && state.open != Some(u) {
                collect = switch_open_unit(state, u, &mo, &mut self.scratch);
                self.one_pass = collect;
            }
            if collect && state.open_values.len() + (j - i) > self.column_budget {
                (state.open, state.open_values, state.open_labels) = (None, Vec::new(), Vec::new());
                (collect, self.one_pass) = (false, false);
            }
            if collect {
                state.open_values.extend_from_slice(&values[i..j]);
                state
                    .open_labels
                    .extend(labels[i..j].iter().map(|&c| c as u32));
            }
            add_unit_run(&mut state.cells(u), &labels[i..j], &values[i..j], flags);
            i = j;
        }
        Ok(())
    }

    /// The state holds the units of `runs` (grown when the units are new and in range): false
    /// when `prepare` must look at the batch (a negative or refused unit, or a size the
    /// capacity check refuses).
    fn prepare_run_units(&mut self, layer: usize, runs: &[(usize, Range<usize>)]) -> bool {
        let (lo, hi) = runs.iter().fold((i64::MAX, i64::MIN), |(lo, hi), (u, _)| {
            (lo.min(*u as i64), hi.max(*u as i64))
        });
        if lo < 0 || self.fixed_units.is_some_and(|n| hi as u64 >= n as u64) {
            return false;
        }
        let k = self.opts.n_classes as u128;
        let state = &mut self.layers[layer];
        if hi as usize >= state.n_units() {
            let cells = (hi as u128 + 1) * (k + 1);
            if check_capacity(cells, CELL_BYTES, "", "").is_err() {
                return false;
            }
            state.grow_units(hi as usize + 1);
        }
        true
    }

    /// Whether the runs of a batch (several, of distinct units) can be added in parallel: no
    /// unit repeats, the bitsets to copy are small beside the records, and MI from the first
    /// pass stays possible (or is already given up) through the whole batch, so the order of
    /// the runs changes nothing.
    fn runs_are_independent(&self, layer: usize, runs: &[(usize, Range<usize>)]) -> bool {
        let state = &self.layers[layer];
        // Each task copies its unit's duplicate bitset: at most one word per record in all.
        let records: usize = runs.iter().map(|(_, r)| r.len()).sum();
        if runs.len() * state.words > records {
            return false;
        }
        let mut taken = vec![false; state.n_units()];
        for (t, (u, r)) in runs.iter().enumerate() {
            if std::mem::replace(&mut taken[*u], true) {
                return false;
            }
            if self.one_pass {
                let continues = t == 0 && state.open == Some(*u);
                let held = if continues {
                    state.open_values.len()
                } else {
                    0
                };
                // The tests of `add_sums`: a unit that comes back, or a run beyond the budget,
                // gives up the first-pass MI in the middle of the batch.
                let back = state.closed_mi[*u].is_some() || (t > 0 && state.open == Some(*u));
                if back || held + r.len() > self.column_budget {
                    return false;
                }
            }
        }
        true
    }

    /// [`RecordStats::add_sums`] for runs of distinct units: each run is checked and added to
    /// a copy of its unit's state on the rayon pool (with its MI when the run holds all of the
    /// unit's records), and the copies are stored back in run order; the first error in
    /// record order is reported. The same operations on each unit as run by run, so the same
    /// bits. Each task first checks that its labels are below the class count and its samples
    /// inside the duplicate bitsets: false (nothing added) when one is not, for `prepare`.
    #[allow(clippy::too_many_arguments)]
    fn add_sums_parallel(
        &mut self,
        layer: usize,
        runs: &[(usize, Range<usize>)],
        samples: Option<&[i64]>,
        labels: &[i64],
        values: &[f32],
        flags: (bool, bool, bool),
        mo: MiOptions,
    ) -> KernelResult<bool> {
        let state = &self.layers[layer];
        let (k, words) = (state.tot.k, state.words);
        let collect = self.one_pass;
        let last = runs.len() - 1;
        let continues = state.open == Some(runs[0].0);
        let parts: Vec<KernelResult<Option<RunPart>>> = runs
            .par_iter()
            .enumerate()
            .map(|(t, (u, r))| {
                RUN_SCRATCH.with_borrow_mut(|scratch| {
                    let RunScratch {
                        mi: mi_scratch,
                        classes,
                    } = scratch;
                    let u = *u;
                    let (labels, values) = (&labels[r.clone()], &values[r.clone()]);
                    // The ranges first, as `prepare` checks them before anything else.
                    if !labels_u32_below(labels, k, classes) {
                        return Ok(None);
                    }
                    let mut seen = Vec::new();
                    if let Some(samples) = samples.map(|s| &s[r.clone()]) {
                        let in_order = consecutive(samples);
                        let (lo, hi) = if in_order {
                            (samples[0], samples[samples.len() - 1])
                        } else {
                            block_extremes(samples)
                        };
                        if lo < 0 || hi as u64 >= (words * 64) as u64 {
                            return Ok(None);
                        }
                        seen = state.seen[u * words..(u + 1) * words].to_vec();
                        if let Some(s) = mark_samples_known(&mut seen, samples, in_order) {
                            return Err(duplicate_error(state, u, s));
                        }
                    }
                    if let Some(i) = first_non_finite(values) {
                        let at = samples
                            .map_or(format!("record {} of the batch", r.start + i), |s| {
                                format!("sample {}", s[r.start + i])
                            });
                        return Err(non_finite(&state.unit_label(u), values[i], &at));
                    }
                    let mut acc = UnitAcc::load(state, u);
                    add_unit_run(&mut acc.cells(), classes, values, flags);
                    // A run followed by another holds the rest of its unit's records (the unit
                    // does not come back, or the first-pass MI is given up later): its MI now,
                    // with the values collected before when the run continues the open unit.
                    let mi = (collect && t < last).then(|| {
                        let (lo, hi) = (acc.lo, acc.hi);
                        let (values, classes) = if t == 0 && continues {
                            let mut all = state.open_values.clone();
                            all.extend_from_slice(values);
                            let mut all_classes = state.open_labels.clone();
                            all_classes.extend_from_slice(classes);
                            (Cow::Owned(all), Cow::Owned(all_classes))
                        } else {
                            (Cow::Borrowed(values), Cow::Borrowed(&classes[..]))
                        };
                        unit_mutual_info(
                            u as u64,
                            &values,
                            &classes,
                            lo,
                            hi,
                            &acc.counts,
                            &mo,
                            mi_scratch,
                        )
                    });
                    // The last run's labels stay with the open unit.
                    let classes = if t == last {
                        classes.clone()
                    } else {
                        Vec::new()
                    };
                    Ok(Some(RunPart {
                        acc,
                        seen,
                        mi,
                        classes,
                    }))
                })
            })
            .collect();
        // Nothing is stored when a range does not fit (whatever else went wrong: `prepare`
        // reports range errors first).
        if parts.iter().any(|p| matches!(p, Ok(None))) {
            return Ok(false);
        }
        let state = &mut self.layers[layer];
        // The bookkeeping of the open unit in run order, as `add_sums` does it run by run.
        for (t, ((u, r), part)) in runs.iter().zip(parts).enumerate() {
            let Some(RunPart {
                acc,
                seen,
                mi,
                classes,
            }) = part?
            else {
                unreachable!("checked above");
            };
            acc.store(state, *u);
            if samples.is_some() {
                state.seen[u * words..(u + 1) * words].copy_from_slice(&seen);
            }
            if !collect {
                continue;
            }
            if t == 0 && !continues {
                close_open_unit(state, &mo, &mut self.scratch);
            }
            if t == last {
                if !(t == 0 && continues) {
                    state.open_values.clear();
                    state.open_labels.clear();
                }
                state.open = Some(*u);
                state.open_values.extend_from_slice(&values[r.clone()]);
                state.open_labels.extend_from_slice(&classes);
            } else {
                if t == 0 && continues {
                    state.open = None;
                    state.open_values.clear();
                    state.open_labels.clear();
                }
                state.closed_mi[*u] = mi;
            }
        }
        Ok(true)
    }

    /// Checks that a later pass sees records the first pass accepted.
    fn check_known(&self, layer: usize, units: &[i64], labels: &[i64]) -> KernelResult<()> {
        let (u_lo, u_hi) = extremes(units);
        let (l_lo, l_hi) = extremes(labels);
        let state = &self.layers[layer];
        ensure!(
            u_lo >= 0
                && (u_hi as u64) < state.n_units() as u64
                && l_lo >= 0
                && (l_hi as u64) < self.opts.n_classes as u64,
            Value,
            "{}the records changed between passes: feed the same records in every pass",
            state.prefix()
        );
        Ok(())
    }

    fn add_tables(
        &mut self,
        layer: usize,
        units: &[i64],
        labels: &[i64],
        values: &[f32],
    ) -> KernelResult<()> {
        self.check_known(layer, units, labels)?;
        let (k, bins) = (
            self.opts.n_classes,
            self.opts.mutual_info.map_or(0, |m| m.bins),
        );
        let state = &mut self.layers[layer];
        for ((&u, &c), &x) in units.iter().zip(labels).zip(values) {
            let u = u as usize;
            let b = state.binners[u].code(x) as usize;
            state.tables[(u * bins + b) * k + c as usize] += 1;
        }
        Ok(())
    }

    fn add_columns(
        &mut self,
        layer: usize,
        units: &[i64],
        labels: &[i64],
        values: &[f32],
    ) -> KernelResult<()> {
        self.check_known(layer, units, labels)?;
        let state = &mut self.layers[layer];
        if state.col_values.is_empty() {
            return Ok(());
        }
        for ((&u, &c), &x) in units.iter().zip(labels).zip(values) {
            let slot = state.slots[u as usize];
            if slot != u32::MAX {
                state.col_values[slot as usize].push(x);
                state.col_labels[slot as usize].push(c as u32);
            }
        }
        Ok(())
    }

    /// Ends the current pass; true when the same records are wanted once more.
    pub fn next_pass(&mut self) -> KernelResult<bool> {
        if self.pass != Pass::Sums {
            ensure!(
                self.records == self.sums_records,
                Value,
                "this pass saw {} records and the first {}: feed the same records in every pass",
                self.records,
                self.sums_records
            );
        }
        let seen = std::mem::take(&mut self.records);
        match std::mem::replace(&mut self.pass, Pass::Done) {
            Pass::Sums => {
                self.sums_records = seen;
                self.end_sums()?
            }
            Pass::Tables => self.end_tables(),
            Pass::Columns(group, next) => {
                self.end_columns(&group);
                self.pass = self.plan_columns(next);
            }
            Pass::Done => {}
        }
        Ok(self.pass != Pass::Done)
    }

    fn end_sums(&mut self) -> KernelResult<()> {
        let k = self.opts.n_classes;
        ensure!(
            k >= 2,
            Value,
            "need at least 2 classes (got {k}): check the labels"
        );
        self.opts.validate()?;
        let opts = self.opts;
        for state in &mut self.layers {
            for u in 0..state.n_units() {
                if state.tot.n[u] % SUM_RUN as u64 != 0 {
                    state.flush(u);
                }
            }
            state.seen = Vec::new();
            let rows = state.tot.rows(&opts, &|u| state.unit_label(u))?;
            state.rows = rows;
        }
        let Some(mo) = opts.mutual_info else {
            return Ok(());
        };
        if self.one_pass {
            for state in &mut self.layers {
                close_open_unit(state, &mo, &mut self.scratch);
                for (row, mi) in state.rows.iter_mut().zip(&state.closed_mi) {
                    if let Some(mi) = mi {
                        (row.mi, row.mi_shuffled, row.class_entropy) =
                            (mi.mi, mi.shuffled, mi.class_entropy);
                    }
                }
                state.closed_mi = Vec::new();
            }
            return Ok(());
        }
        for state in &mut self.layers {
            (state.open, state.open_values, state.open_labels) = (None, Vec::new(), Vec::new());
            state.closed_mi = Vec::new();
        }
        if opts.mi_by_rows().is_some() {
            for state in &mut self.layers {
                let cells = state.n_units() as u128 * mo.bins as u128 * k as u128;
                check_capacity(
                    cells,
                    4,
                    &format!(
                        "{}MI tables of {} units x {} bins x {k} classes",
                        state.prefix(),
                        state.n_units(),
                        mo.bins
                    ),
                    "use fewer bins",
                )?;
                state.binners = EqualWidthBins::per_unit(&state.tot.lo, &state.tot.hi, mo.bins);
                state.tables = vec![0; cells as usize];
            }
            self.pass = Pass::Tables;
        } else {
            self.pass = self.plan_columns((0, 0));
        }
        Ok(())
    }

    fn end_tables(&mut self) {
        let Some(mo) = self.opts.mutual_info else {
            return;
        };
        let (k, bins) = (self.opts.n_classes, mo.bins);
        for state in &mut self.layers {
            let mut table64 = vec![0u64; bins * k];
            for (u, row) in state.rows.iter_mut().enumerate() {
                if row.n == 0 {
                    continue;
                }
                let cells = &state.tables[u * bins * k..(u + 1) * bins * k];
                table64
                    .iter_mut()
                    .zip(cells)
                    .for_each(|(t, &v)| *t = v as u64);
                row.mi = mi_from_table(&table64, bins, k, mo.miller_madow);
                row.class_entropy = entropy_bits(&row.counts);
            }
            state.tables = Vec::new();
        }
    }

    /// The next group of units holding at most `column_budget` records (at least one unit),
    /// starting at `(layer, unit)`; `Done` when none is left.
    fn plan_columns(&mut self, (mut layer, mut unit): (usize, usize)) -> Pass {
        let mut group: Vec<(usize, Range<usize>)> = Vec::new();
        let mut taken = 0u64;
        'outer: while layer < self.layers.len() {
            let state = &mut self.layers[layer];
            state.slots = vec![u32::MAX; state.n_units()];
            let start = unit;
            while unit < state.n_units() {
                let n = state.tot.n[unit];
                if taken > 0 && taken + n > self.column_budget as u64 {
                    if unit > start {
                        group.push((layer, start..unit));
                    }
                    break 'outer;
                }
                state.slots[unit] = (unit - start) as u32;
                state.col_values.push(Vec::with_capacity(n as usize));
                state.col_labels.push(Vec::with_capacity(n as usize));
                taken += n;
                unit += 1;
            }
            if unit > start {
                group.push((layer, start..unit));
            }
            (layer, unit) = (layer + 1, 0);
        }
        if group.is_empty() {
            Pass::Done
        } else {
            Pass::Columns(group, (layer, unit))
        }
    }

    fn end_columns(&mut self, group: &[(usize, Range<usize>)]) {
        let Some(mo) = self.opts.mutual_info else {
            return;
        };
        for (layer, units) in group {
            let state = &mut self.layers[*layer];
            let (values, labels) = (&state.col_values, &state.col_labels);
            state.rows[units.clone()]
                .par_iter_mut()
                .enumerate()
                .for_each_init(MiScratch::default, |scratch, (j, row)| {
                    column_mutual_info(units.start + j, &values[j], &labels[j], &mo, row, scratch)
                });
            state.col_values = Vec::new();
            state.col_labels = Vec::new();
            state.slots = Vec::new();
        }
    }

    /// One summary per layer, in code order, with the layer names.
    pub fn finish(self) -> KernelResult<Vec<(String, UnitSummary)>> {
        ensure!(
            self.pass == Pass::Done,
            Value,
            "the passes are not done: call next_pass until it returns false"
        );
        let opts = self.opts;
        Ok(self
            .layers
            .into_iter()
            .map(|state| (state.name, assemble(state.rows, &opts)))
            .collect())
    }
}

/// Statistics of every unit `0..n_units` from long-format records of one layer, one per
/// (sample, unit). Each unit's records are taken in the order they come; records in the dense
/// sample order give the bits of [`super::summarize_dense`].
pub fn summarize_long(
    units: &[i64],
    labels: &[i64],
    values: &[f32],
    n_units: usize,
    opts: &SummaryOptions,
) -> KernelResult<UnitSummary> {
    opts.validate()?;
    let n = units.len();
    ensure!(
        labels.len() == n && values.len() == n,
        Shape,
        "records disagree in length: {n} units, {} labels, {} values",
        labels.len(),
        values.len()
    );
    if let Some(row_labels) = interleaved_rows(units, labels, n_units) {
        // The records are a flattened row-major (samples, units) array: the dense path does
        // the same per-unit operations in the same order, over rows.
        return super::summarize_dense(values, n / n_units, n_units, &row_labels, opts);
    }
    let mut stats = RecordStats::new(*opts, Some(n_units), usize::MAX)?;
    let layer = stats.layer_code("");
    loop {
        stats.add_layer(layer, units, None, labels, values)?;
        if !stats.next_pass()? {
            break;
        }
    }
    let mut layers = stats.finish()?;
    Ok(layers.pop().map(|(_, s)| s).unwrap_or_default())
}

/// Rows per task when checking for the interleaved layout.
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
