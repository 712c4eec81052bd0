//! Dense `(n_samples, n_units)` arrays: one pass over the rows for counts, class sums,
//! moments, min and max; rayon over fixed chunks of [`SUM_RUN`] rows, whose sums are merged
//! in chunk order. Within a chunk, without moments, the rows go class by class in tiles of
//! rows of one class whose accumulators stay in registers across the tile (one load and store
//! per tile, not per row); with moments (sums over all rows in order) row by row, each row's
//! class update a vector update into that class's accumulator row. MI with equal-width bins
//! then bins the rows in a second pass (integer tables, merged exactly); other MI options use
//! per-unit columns.

use std::ops::Range;

use rayon::prelude::*;

use crate::ensure;
use crate::error::KernelResult;
use crate::kernels::binning::EqualWidthBins;
use crate::kernels::mutual_info::{entropy_bits, mi_from_table, MiOptions};

use super::columns::{dense_columns_mutual_info, prefetch};
use super::{
    assemble, check_labels, non_finite, SummaryOptions, Totals, UnitRow, UnitSummary, SUM_RUN,
};

/// Rows ahead that the row pass prefetches: the work between two row loads (stores into
/// the class accumulators) keeps the hardware prefetcher from running far enough ahead.
const PREFETCH_ROWS: usize = 2;

/// Units per task of the row pass: bounds one chunk's accumulators (k x 4096 f64).
const UNIT_BLOCK: usize = 4096;

/// Bytes of chunk accumulators alive at once: chunks are summed in waves of at most
/// [`MAX_WAVE`], each wave merged in chunk order (the wave size changes no result).
const WAVE_BYTES: usize = 64 << 20;
const MAX_WAVE: usize = 64;

/// Largest `n_units * bins * n_classes` table for binning by rows (per worker thread);
/// larger tables bin per-unit columns.
const ROW_TABLE_MAX_CELLS: usize = 1 << 22;

/// Rows per task when binning by rows (integer tables: any merge order is exact).
const MI_ROW_CHUNK: usize = 512;

/// Sums of one chunk of rows over units `u0..u0 + w`; class cells are class-major
/// (`c * w + j`), so a row adds to one contiguous accumulator row.
struct ChunkSums {
    counts: Vec<u64>,
    sums: Vec<f64>,
    pos: Vec<f64>,
    s1: Vec<f64>,
    s2: Vec<f64>,
    lo: Vec<f32>,
    hi: Vec<f32>,
    active: Vec<u64>,
    /// `sum(x * 0)`: NaN unless every value is finite (when there are no class sums).
    check: Vec<f32>,
}

multiversion!(
    /// [`chunk_sums_portable`], compiled for AVX-512 or AVX2 where the CPU has them (the
    /// loops are the same IEEE operations, so results do not depend on the instruction set;
    /// Rust never fuses a multiply and an add).
    #[allow(clippy::too_many_arguments)]
    fn chunk_sums(
        acts: &[f32],
        n_units: usize,
        u0: usize,
        w: usize,
        rows: Range<usize>,
        labels: &[u32],
        x0: &[f64],
        opts: &SummaryOptions,
    ) -> ChunkSums => chunk_sums_portable ["avx512f", "avx2"]
);

#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk_sums_portable(
    acts: &[f32],
    n_units: usize,
    u0: usize,
    w: usize,
    rows: Range<usize>,
    labels: &[u32],
    x0: &[f64],
    opts: &SummaryOptions,
) -> ChunkSums {
    let k = opts.n_classes;
    let (sums_on, pos_on, moments_on) = (opts.class_sums(), opts.clipped_sums(), opts.moments);
    let cells = |on: bool| if on { k * w } else { 0 };
    let units = |on: bool| if on { w } else { 0 };
    let mut p = ChunkSums {
        counts: vec![0; k],
        sums: vec![0.0; cells(sums_on)],
        pos: vec![0.0; cells(pos_on)],
        s1: vec![0.0; units(moments_on)],
        s2: vec![0.0; units(moments_on)],
        lo: vec![f32::INFINITY; w],
        hi: vec![f32::NEG_INFINITY; w],
        active: vec![0; units(moments_on)],
        check: vec![0.0; units(!sums_on)],
    };
    if !moments_on {
        // Without moments (whose sums run over all rows in order) the rows go class by class,
        // in row order within a class: each class cell still adds its rows in row order (the
        // same bits), and tiles of rows of one class share one load and store of the
        // accumulators.
        by_class_tiles(acts, n_units, u0, w, rows, labels, opts, &mut p);
        return p;
    }
    // With moments (class sums and the maximum too), in row order.
    for r in rows.clone() {
        if rows.contains(&(r + PREFETCH_ROWS)) {
            prefetch(acts, (r + PREFETCH_ROWS) * n_units + u0, w);
        }
        let row = &acts[r * n_units + u0..r * n_units + u0 + w];
        let c = labels[r] as usize;
        p.counts[c] += 1;
        // One loop per accumulator: each streams one array and vectorizes (zipped slices of
        // one length, so no bounds checks).
        // `min`/`max`, not a select, which would compile to slow masked stores (NaN never
        // reaches a result: it makes the sums non-finite and is refused). The extremes are
        // fused with the class sums: one read of the row for both.
        let (lo, hi) = (&mut p.lo[..w], &mut p.hi[..w]);
        let sums = &mut p.sums[c * w..(c + 1) * w];
        for (((lo, hi), s), &x) in lo.iter_mut().zip(hi.iter_mut()).zip(sums).zip(row) {
            *lo = lo.min(x);
            *hi = hi.max(x);
            *s += x as f64;
        }
        if pos_on {
            for (s, &x) in p.pos[c * w..(c + 1) * w].iter_mut().zip(row) {
                *s += (x as f64).max(0.0);
            }
        }
        for (((s1, s2), x0), &x) in p.s1.iter_mut().zip(p.s2.iter_mut()).zip(x0).zip(row) {
            let d = x as f64 - x0;
            *s1 += d;
            *s2 += d * d;
        }
        for (active, &x) in p.active.iter_mut().zip(row) {
            *active += (x > 0.0) as u64;
        }
    }
    p
}

/// Units whose accumulators [`add_tile`] keeps in registers together.
const LANES: usize = 16;

/// A block of [`LANES`] values (the slice has that length).
#[inline(always)]
fn lanes<T: Copy + Default>(xs: &[T]) -> [T; LANES] {
    let mut out = [T::default(); LANES];
    out.copy_from_slice(xs);
    out
}

/// Rows of one class added together by [`add_tile`]: their accumulators are loaded and stored
/// once per tile (in registers between), and the tile's rows are read as parallel streams.
const TILE_ROWS: usize = 8;

/// One class's accumulators over the units of a chunk (empty slices where not computed).
struct ClassCells<'a> {
    sums: &'a mut [f64],
    pos: &'a mut [f64],
    lo: &'a mut [f32],
    hi: &'a mut [f32],
    check: &'a mut [f32],
}

/// Adds rows of one class in row order (the summation rule's order for every cell).
/// `SUMS`: class sums (else `check`), `POS`: sums of `max(x, 0)`, `MAX`: the maximum.
#[inline(always)]
fn add_tile<const G: usize, const SUMS: bool, const POS: bool, const MAX: bool>(
    rows: [&[f32]; G],
    ahead: &[&[f32]],
    cells: &mut ClassCells<'_>,
) {
    let w = cells.lo.len();
    // Slices of one known length: no bounds checks in the loop, which vectorizes over units.
    let rows = rows.map(|r| &r[..w]);
    let lo = &mut cells.lo[..w];
    let hi = &mut cells.hi[..if MAX { w } else { 0 }];
    let sums = &mut cells.sums[..if SUMS { w } else { 0 }];
    let pos = &mut cells.pos[..if POS { w } else { 0 }];
    let check = &mut cells.check[..if SUMS { 0 } else { w }];
    // Blocks of LANES units: their accumulators are independent chains of adds (each unit's
    // rows stay in row order, the same bits), so several vector adds run at once instead of
    // one chain waiting on each add's latency.
    let blocks = w / LANES;
    for b in 0..blocks {
        let at = b * LANES..(b + 1) * LANES;
        // The next tile's rows, one cache line per block: a steady stream of prefetches as
        // far ahead as one tile (a burst of whole rows at once would overflow the queue).
        for r in ahead {
            prefetch(r, at.start, 1);
        }
        let mut l: [f32; LANES] = lanes(&lo[at.clone()]);
        let mut h: [f32; LANES] = if MAX {
            lanes(&hi[at.clone()])
        } else {
            [0.0; LANES]
        };
        let mut s: [f64; LANES] = if SUMS {
            lanes(&sums[at.clone()])
        } else {
            [0.0; LANES]
        };
        let mut q: [f64; LANES] = if POS {
            lanes(&pos[at.clone()])
        } else {
            [0.0; LANES]
        };
        let mut z: [f32; LANES] = if SUMS {
            [0.0; LANES]
        } else {
            lanes(&check[at.clone()])
        };
        for row in &rows {
            let x: [f32; LANES] = lanes(&row[at.clone()]);
            for i in 0..LANES {
                l[i] = if x[i] < l[i] { x[i] } else { l[i] };
                if MAX {
                    h[i] = if x[i] > h[i] { x[i] } else { h[i] };
                }
                if SUMS {
                    s[i] += x[i] as f64;
                } else {
                    z[i] += x[i] * 0.0;
                }
                if POS {
                    q[i] += (x[i] as f64).max(0.0);
                }
            }
        }
        lo[at.clone()].copy_from_slice(&l);
        if MAX {
            hi[at.clone()].copy_from_slice(&h);
        }
        if SUMS {
            sums[at.clone()].copy_from_slice(&s);
        } else {
            check[at.clone()].copy_from_slice(&z);
        }
        if POS {
            pos[at].copy_from_slice(&q);
        }
    }
    for u in blocks * LANES..w {
        let mut l = lo[u];
        let mut h = if MAX { hi[u] } else { 0.0 };
        let mut s = if SUMS { sums[u] } else { 0.0 };
        let mut q = if POS { pos[u] } else { 0.0 };
        let mut z = if SUMS { 0.0 } else { check[u] };
        for row in &rows {
            let x = row[u];
            // Selects, which compile to one `minps`/`maxps` (`f32::min` adds a NaN fix-up;
            // NaN never reaches a result: it makes the sums or `check` non-finite and is
            // refused).
            l = if x < l { x } else { l };
            if MAX {
                h = if x > h { x } else { h };
            }
            if SUMS {
                s += x as f64;
            } else {
                z += x * 0.0;
            }
            if POS {
                q += (x as f64).max(0.0);
            }
        }
        lo[u] = l;
        if MAX {
            hi[u] = h;
        }
        if SUMS {
            sums[u] = s;
        } else {
            check[u] = z;
        }
        if POS {
            pos[u] = q;
        }
    }
}

/// Adds the rows `class_rows` (of one class, in row order) in tiles of [`TILE_ROWS`].
#[inline(always)]
fn add_class_rows<const SUMS: bool, const POS: bool, const MAX: bool>(
    acts: &[f32],
    n_units: usize,
    u0: usize,
    class_rows: &[usize],
    after: &[usize],
    cells: &mut ClassCells<'_>,
) {
    let w = cells.lo.len();
    let row = |r: usize| &acts[r * n_units + u0..r * n_units + u0 + w];
    // The rows of the tile after the one at `i` (this class's, then the next class's).
    let ahead = |i: usize| -> ([&[f32]; TILE_ROWS], usize) {
        let mut out: [&[f32]; TILE_ROWS] = [&[]; TILE_ROWS];
        let upcoming = class_rows
            .iter()
            .skip(i)
            .chain(after.iter())
            .take(TILE_ROWS);
        let mut n = 0;
        for (slot, &r) in out.iter_mut().zip(upcoming) {
            *slot = row(r);
            n += 1;
        }
        (out, n)
    };
    let mut i = 0;
    while class_rows.len() - i >= TILE_ROWS {
        let tile: [&[f32]; TILE_ROWS] = std::array::from_fn(|j| row(class_rows[i + j]));
        let (next, n) = ahead(i + TILE_ROWS);
        add_tile::<TILE_ROWS, SUMS, POS, MAX>(tile, &next[..n], cells);
        i += TILE_ROWS;
    }
    let (next, n) = ahead(class_rows.len());
    let next = &next[..n];
    let mut rest = &class_rows[i..];
    if rest.len() >= 4 {
        add_tile::<4, SUMS, POS, MAX>(std::array::from_fn(|j| row(rest[j])), next, cells);
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        add_tile::<2, SUMS, POS, MAX>(std::array::from_fn(|j| row(rest[j])), next, cells);
        rest = &rest[2..];
    }
    if let Some(&r) = rest.first() {
        add_tile::<1, SUMS, POS, MAX>([row(r)], next, cells);
    }
}

/// The chunk's sums without moments: rows ordered by class (a stable counting sort, so row
/// order within a class), each class added in tiles into its accumulator row; without
/// class sums (MI alone) all rows form one group.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn by_class_tiles(
    acts: &[f32],
    n_units: usize,
    u0: usize,
    w: usize,
    rows: Range<usize>,
    labels: &[u32],
    opts: &SummaryOptions,
    p: &mut ChunkSums,
) {
    let (sums_on, pos_on, max_on) = (opts.class_sums(), opts.clipped_sums(), opts.reports_max());
    let labels = &labels[rows.clone()];
    for &c in labels {
        p.counts[c as usize] += 1;
    }
    let groups = if sums_on { opts.n_classes } else { 1 };
    let group_of = |c: u32| if sums_on { c as usize } else { 0 };
    let mut next = vec![0usize; groups];
    let mut start = 0;
    for (g, n) in next.iter_mut().enumerate() {
        *n = start;
        start += if sums_on {
            p.counts[g] as usize
        } else {
            labels.len()
        };
    }
    let starts = next.clone();
    let mut order = vec![0usize; labels.len()];
    for (r, &c) in rows.zip(labels) {
        let g = group_of(c);
        order[next[g]] = r;
        next[g] += 1;
    }
    for g in 0..groups {
        let class_rows = &order[starts[g]..next[g]];
        let after = &order[next[g]..];
        let cells_of = |v: &Vec<f64>| {
            if v.is_empty() {
                0..0
            } else {
                g * w..(g + 1) * w
            }
        };
        let (sums_cells, pos_cells) = (cells_of(&p.sums), cells_of(&p.pos));
        let mut cells = ClassCells {
            sums: &mut p.sums[sums_cells],
            pos: &mut p.pos[pos_cells],
            lo: &mut p.lo,
            hi: &mut p.hi,
            check: &mut p.check,
        };
        match (sums_on, pos_on, max_on) {
            (false, _, _) => add_class_rows::<false, false, true>(
                acts, n_units, u0, class_rows, after, &mut cells,
            ),
            (true, false, false) => add_class_rows::<true, false, false>(
                acts, n_units, u0, class_rows, after, &mut cells,
            ),
            (true, false, true) => add_class_rows::<true, false, true>(
                acts, n_units, u0, class_rows, after, &mut cells,
            ),
            (true, true, false) => add_class_rows::<true, true, false>(
                acts, n_units, u0, class_rows, after, &mut cells,
            ),
            (true, true, true) => {
                add_class_rows::<true, true, true>(acts, n_units, u0, class_rows, after, &mut cells)
            }
        }
    }
}

/// Adds one chunk's sums to the totals of units `u0..u0 + w` (in chunk order).
fn merge_chunk(tot: &mut Totals, check: &mut [f32], u0: usize, w: usize, p: &ChunkSums, rows: u64) {
    let k = tot.k;
    for j in 0..w {
        let u = u0 + j;
        tot.n[u] += rows;
        for c in 0..k {
            tot.counts[u * k + c] += p.counts[c];
        }
        if !p.sums.is_empty() {
            for c in 0..k {
                tot.sums[u * k + c] += p.sums[c * w + j];
            }
        }
        if !p.pos.is_empty() {
            for c in 0..k {
                tot.pos[u * k + c] += p.pos[c * w + j];
            }
        }
        if !p.s1.is_empty() {
            tot.s1[u] += p.s1[j];
            tot.s2[u] += p.s2[j];
            tot.active[u] += p.active[j];
        }
        if !p.check.is_empty() {
            check[u] += p.check[j];
        }
        tot.lo[u] = tot.lo[u].min(p.lo[j]);
        tot.hi[u] = tot.hi[u].max(p.hi[j]);
    }
}

/// Totals of every unit in one pass over the rows.
fn dense_totals(
    acts: &[f32],
    n_samples: usize,
    n_units: usize,
    labels: &[u32],
    opts: &SummaryOptions,
) -> KernelResult<Totals> {
    let k = opts.n_classes;
    let mut tot = Totals::new(n_units, k);
    tot.x0 = acts[..n_units].iter().map(|&x| x as f64).collect();
    let mut check = vec![0f32; n_units];
    let n_chunks = n_samples.div_ceil(SUM_RUN);
    for u0 in (0..n_units).step_by(UNIT_BLOCK) {
        let w = UNIT_BLOCK.min(n_units - u0);
        let chunk_bytes = (k * w * 2 + w * 6) * 8;
        let wave = (WAVE_BYTES / chunk_bytes).clamp(1, MAX_WAVE);
        let x0 = &tot.x0[u0..u0 + w].to_vec();
        for first in (0..n_chunks).step_by(wave) {
            let parts: Vec<ChunkSums> = (first..(first + wave).min(n_chunks))
                .into_par_iter()
                .map(|i| {
                    let rows = i * SUM_RUN..((i + 1) * SUM_RUN).min(n_samples);
                    chunk_sums(acts, n_units, u0, w, rows, labels, x0, opts)
                })
                .collect();
            for (i, p) in (first..).zip(&parts) {
                let rows = (((i + 1) * SUM_RUN).min(n_samples) - i * SUM_RUN) as u64;
                merge_chunk(&mut tot, &mut check, u0, w, p, rows);
            }
        }
    }
    // A non-finite value leaves a non-finite sum (f32 values cannot overflow an f64 sum):
    // report the first such unit and the sample.
    let bad = |u: usize| {
        if opts.class_sums() {
            tot.sums[u * k..(u + 1) * k].iter().any(|s| !s.is_finite())
        } else {
            !check[u].is_finite()
        }
    };
    if let Some(u) = (0..n_units).find(|&u| bad(u)) {
        let (s, x) = (0..n_samples)
            .map(|s| (s, acts[s * n_units + u]))
            .find(|(_, x)| !x.is_finite())
            .unwrap_or((0, f32::NAN));
        return Err(non_finite(&format!("unit {u}"), x, &format!("sample {s}")));
    }
    Ok(tot)
}

/// MI of every unit by binning rows: equal-width bins, one integer table per unit.
fn rows_mutual_info(
    acts: &[f32],
    n_units: usize,
    labels: &[u32],
    tot: &Totals,
    mo: &MiOptions,
    rows: &mut [UnitRow],
) {
    let (k, bins) = (tot.k, mo.bins);
    let binners = EqualWidthBins::per_unit(&tot.lo, &tot.hi, bins);
    let cells = n_units * bins * k;
    let tables = acts
        .par_chunks(MI_ROW_CHUNK * n_units)
        .enumerate()
        .fold(
            || vec![0u32; cells],
            |mut table, (i, block)| {
                let mut codes = vec![0u32; n_units];
                for (r, row) in block.chunks_exact(n_units).enumerate() {
                    let c = labels[i * MI_ROW_CHUNK + r] as usize;
                    for ((code, b), &x) in codes.iter_mut().zip(&binners).zip(row) {
                        *code = b.code(x);
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
    let mut table64 = vec![0u64; bins * k];
    for (j, row) in rows.iter_mut().enumerate() {
        for (t, &v) in table64
            .iter_mut()
            .zip(&tables[j * bins * k..(j + 1) * bins * k])
        {
            *t = v as u64;
        }
        row.mi = mi_from_table(&table64, bins, k, mo.miller_madow);
        row.class_entropy = entropy_bits(&row.counts);
    }
}

/// Statistics of every unit of a dense row-major `(n_samples, n_units)` array.
pub fn summarize_dense(
    acts: &[f32],
    n_samples: usize,
    n_units: usize,
    labels: &[i64],
    opts: &SummaryOptions,
) -> KernelResult<UnitSummary> {
    opts.validate()?;
    ensure!(
        acts.len() == n_samples * n_units,
        Shape,
        "activity has {} values, not n_samples x n_units = {n_samples} x {n_units}",
        acts.len()
    );
    ensure!(
        labels.len() == n_samples,
        Shape,
        "{} labels for {n_samples} samples: give one label per row of the activity array",
        labels.len()
    );
    ensure!(
        n_samples > 0 && n_units > 0,
        Shape,
        "activity array is empty ({n_samples} samples x {n_units} units): give at least one of \
         each"
    );
    let labels = check_labels(labels, opts.n_classes)?;
    let tot = dense_totals(acts, n_samples, n_units, &labels, opts)?;
    let mut rows = tot.rows(opts, &|u| format!("unit {u}"))?;
    if let Some(mo) = &opts.mutual_info {
        let small = n_units * mo.bins * opts.n_classes <= ROW_TABLE_MAX_CELLS;
        match opts.mi_by_rows() {
            Some(mo) if small => rows_mutual_info(acts, n_units, &labels, &tot, &mo, &mut rows),
            _ => dense_columns_mutual_info(acts, n_samples, n_units, &labels, mo, &mut rows),
        }
    }
    Ok(assemble(rows, opts))
}
