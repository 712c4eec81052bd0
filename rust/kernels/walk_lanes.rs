//! Inner loops of the ablation walk (`walk.rs`): rank-1 updates, the ReLU change scan and the
//! per-level score.
//!
//! The scan is the one loop the compiler cannot vectorize on its own (it compacts the indices
//! of changed units), so it has an AVX2 version next to the portable one. Both do the same
//! operations in the same order (a separate multiply and add, except the fused multiply-adds
//! of the blocked logits update, `mul_add` in the portable version), so they give
//! bit-identical results.

/// The ReLU change scan: given pre-activations `z` and the activations `a` they produced
/// before, find the units whose ReLU output changed, store the new output in `a` and push
/// `(base + k, new - old)` with the difference taken exactly in f64.
pub(crate) trait Lanes {
    /// `z += d * w`, then the scan (writing `a`).
    fn axpy_scan(z: &mut [f32], d: f32, w: &[f32], a: &mut [f32], base: usize, out: &mut Changes);
    /// The scan of `max(z, 0)` against `a` (writing `a`).
    fn scan(z: &[f32], a: &mut [f32], base: usize, out: &mut Changes);
    /// The scan of the layer before the logits, fused with the logits update: `z += d * w`
    /// when AXPY, the changes of `max(z, 0)` against `a` (z and a stored when WRITE), and
    /// `logits += sum of change_k * out[k]` where `out` holds one row of `P` logits per unit
    /// (`P = 0`: any width, `logits.len()`). The sum runs in two accumulators, alternate
    /// changes in each (a shorter dependency chain), added to the logits at the end.
    fn scan_out<const AXPY: bool, const WRITE: bool, const P: usize>(
        z: &mut [f32],
        d: f32,
        w: &[f32],
        a: &mut [f32],
        out: &[f64],
        logits: &mut [f64],
    );
    /// `scan_out` over the units `cut..` of a whole layer, with the logit weights also in
    /// blocks of 8 units (`blocks`, see `block_rows`): for `P` in 4, 8, 12 each group of 8
    /// units with a change updates the logits densely from its block (one multiply-add per
    /// class and lane, no branch per unit); the units before the first and after the last
    /// full group go through `rows` one by one. Other `P`: `scan_out` on the suffix.
    #[allow(clippy::too_many_arguments)]
    fn scan_out_blocked<const AXPY: bool, const WRITE: bool, const P: usize>(
        z: &mut [f32],
        d: f32,
        w: &[f32],
        a: &mut [f32],
        cut: usize,
        blocks: &[f64],
        rows: &[f64],
        logits: &mut [f64],
    );
}

/// Does `scan_out_blocked` take its blocked path for this `P`?
pub(crate) const fn blocked(p: usize) -> bool {
    p == 4 || p == 8 || p == 12
}

/// The rows `(n, p)` of the logit weights in blocks of 8 units, `[group][class][lane]`, for
/// the `n / 8` full groups.
pub(crate) fn block_rows(rows: &[f64], n: usize, p: usize) -> Vec<f64> {
    let mut blocks = vec![0f64; n / 8 * 8 * p];
    for (g, block) in blocks.chunks_exact_mut(8 * p).enumerate() {
        for c in 0..p {
            for l in 0..8 {
                block[c * 8 + l] = rows[(8 * g + l) * p + c];
            }
        }
    }
    blocks
}

/// The blocked path of `scan_out_blocked`, one `P`-class block per group of 8 units:
/// portable reference of the AVX2 version (same operations in the same order).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn scan_out_blocked_portable<const AXPY: bool, const WRITE: bool, const P: usize>(
    z: &mut [f32],
    d: f32,
    w: &[f32],
    a: &mut [f32],
    cut: usize,
    blocks: &[f64],
    rows: &[f64],
    logits: &mut [f64],
) {
    let n = z.len().min(a.len());
    let head_end = cut.div_ceil(8).saturating_mul(8).min(n);
    let body_end = (n / 8 * 8).max(head_end);
    let mut extra = [0f64; P];
    let mut acc = [[0f64; 4]; P];
    let one = |k: usize, z: &mut [f32], a: &mut [f32], extra: &mut [f64; P]| {
        let mut zk = z[k];
        if AXPY {
            zk += d * w[k];
            if WRITE {
                z[k] = zk;
            }
        }
        let new = zk.max(0.0);
        if new != a[k] {
            let change = new as f64 - a[k] as f64;
            for (e, &r) in extra.iter_mut().zip(&rows[k * P..(k + 1) * P]) {
                *e += change * r;
            }
            if WRITE {
                a[k] = new;
            }
        }
    };
    for k in cut..head_end {
        one(k, z, a, &mut extra);
    }
    let mut change = [0f64; 8];
    for g in head_end / 8..body_end / 8 {
        let mut any = false;
        for (l, change_l) in change.iter_mut().enumerate() {
            let k = 8 * g + l;
            let mut zk = z[k];
            if AXPY {
                zk += d * w[k];
                if WRITE {
                    z[k] = zk;
                }
            }
            let new = zk.max(0.0);
            any |= new != a[k];
            *change_l = new as f64 - a[k] as f64;
            if WRITE && new != a[k] {
                a[k] = new;
            }
        }
        if any {
            let block = &blocks[g * 8 * P..(g + 1) * 8 * P];
            // fused multiply-adds, as the AVX2 version (native on aarch64 and with FMA)
            for (c, acc_c) in acc.iter_mut().enumerate() {
                for l in 0..4 {
                    acc_c[l] = change[l].mul_add(block[c * 8 + l], acc_c[l]);
                }
                for l in 0..4 {
                    acc_c[l] = change[4 + l].mul_add(block[c * 8 + 4 + l], acc_c[l]);
                }
            }
        }
    }
    for k in body_end..n {
        one(k, z, a, &mut extra);
    }
    for c in 0..P {
        let h = &acc[c];
        logits[c] += ((h[0] + h[2]) + (h[1] + h[3])) + extra[c];
    }
}

/// Sparse activation changes of one layer: unit index and exact change.
pub(crate) type Changes = Vec<(u32, f64)>;

/// Plain Rust; vectorized by the compiler where it can.
pub(crate) struct Portable;

impl Lanes for Portable {
    #[inline(always)]
    fn scan_out_blocked<const AXPY: bool, const WRITE: bool, const P: usize>(
        z: &mut [f32],
        d: f32,
        w: &[f32],
        a: &mut [f32],
        cut: usize,
        blocks: &[f64],
        rows: &[f64],
        logits: &mut [f64],
    ) {
        if blocked(P) {
            scan_out_blocked_portable::<AXPY, WRITE, P>(z, d, w, a, cut, blocks, rows, logits)
        } else {
            let w = if AXPY { &w[cut..] } else { w };
            let width = if P == 0 { logits.len() } else { P };
            let rows = &rows[cut * width..];
            Self::scan_out::<AXPY, WRITE, P>(&mut z[cut..], d, w, &mut a[cut..], rows, logits)
        }
    }

    #[inline(always)]
    fn axpy_scan(z: &mut [f32], d: f32, w: &[f32], a: &mut [f32], base: usize, out: &mut Changes) {
        axpy(z, d, w);
        Self::scan(z, a, base, out);
    }

    #[inline(always)]
    fn scan(z: &[f32], a: &mut [f32], base: usize, out: &mut Changes) {
        for (k, (&zk, ak)) in z.iter().zip(a.iter_mut()).enumerate() {
            let new = zk.max(0.0);
            if new != *ak {
                out.push(((base + k) as u32, new as f64 - *ak as f64));
                *ak = new;
            }
        }
    }

    #[inline(always)]
    fn scan_out<const AXPY: bool, const WRITE: bool, const P: usize>(
        z: &mut [f32],
        d: f32,
        w: &[f32],
        a: &mut [f32],
        out: &[f64],
        logits: &mut [f64],
    ) {
        let width = if P == 0 { logits.len() } else { P };
        let n = z.len().min(a.len());
        let mut acc = [[0f64; P]; 2];
        let mut parity = 0;
        for k in 0..n {
            let mut zk = z[k];
            if AXPY {
                zk += d * w[k];
                if WRITE {
                    z[k] = zk;
                }
            }
            let new = zk.max(0.0);
            if new != a[k] {
                let change = new as f64 - a[k] as f64;
                let row = &out[k * width..(k + 1) * width];
                if P == 0 {
                    axpy64(logits, change, row);
                } else {
                    for (s, &r) in acc[parity].iter_mut().zip(row) {
                        *s += change * r;
                    }
                    parity ^= 1;
                }
                if WRITE {
                    a[k] = new;
                }
            }
        }
        if P > 0 {
            for (c, l) in logits.iter_mut().enumerate().take(P) {
                *l += acc[0][c] + acc[1][c];
            }
        }
    }
}

/// `z += d * w` (f32).
#[inline(always)]
pub(crate) fn axpy(z: &mut [f32], d: f32, w: &[f32]) {
    for (zk, &wk) in z.iter_mut().zip(w) {
        *zk += d * wk;
    }
}

/// `z += d * w` (f64 accumulator, f32 or f64 weights).
#[inline(always)]
pub(crate) fn axpy64(z: &mut [f64], d: f64, w: &[f64]) {
    for (zk, &wk) in z.iter_mut().zip(w) {
        *zk += d * wk;
    }
}

/// `exp(x)` for `x <= 0` to about 1e-14 relative error, in plain arithmetic so that a loop of
/// it vectorizes: `2^n * e^r` with `|r| <= ln 2 / 2` and a degree-11 Taylor polynomial.
/// Arguments below -708 give `exp(-708)` (about 3e-308), never a subnormal.
#[inline(always)]
pub(crate) fn exp_nonpos(x: f64) -> f64 {
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // Adding 1.5 * 2^52 rounds to an integer held in the low mantissa bits.
    const SHIFT: f64 = 6_755_399_441_055_744.0;
    let x = x.max(-708.0);
    let t = x * std::f64::consts::LOG2_E + SHIFT;
    let n = t - SHIFT;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.0 / 39_916_800.0;
    p = p * r + 1.0 / 3_628_800.0;
    p = p * r + 1.0 / 362_880.0;
    p = p * r + 1.0 / 40_320.0;
    p = p * r + 1.0 / 5_040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    let n_int = t.to_bits().wrapping_sub(SHIFT.to_bits()) as i64;
    p * f64::from_bits(((n_int + 1023) as u64) << 52)
}

/// Score of one sample's logits: (first index of the maximum == label, cross-entropy in nat).
/// `logits` is padded to a multiple of 4 with -inf; `scratch` has its length.
#[inline(always)]
pub(crate) fn score(
    logits: &[f64],
    n_classes: usize,
    label: usize,
    scratch: &mut [f64],
) -> (bool, f64) {
    let mut best = logits[0];
    let mut arg = 0;
    for (c, &v) in logits[..n_classes].iter().enumerate().skip(1) {
        if v > best {
            best = v;
            arg = c;
        }
    }
    for (e, &v) in scratch.iter_mut().zip(logits) {
        *e = exp_nonpos(v - best);
    }
    let sum: f64 = scratch[..n_classes].iter().sum();
    (arg == label, best - logits[label] + sum.ln())
}

#[cfg(target_arch = "x86_64")]
pub(crate) use avx2::Avx2;

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::{blocked, Changes, Lanes, Portable};

    /// AVX2 scan: eight units per step, a movemask of the changed ones.
    pub(crate) struct Avx2;

    impl Lanes for Avx2 {
        #[inline(always)]
        fn axpy_scan(
            z: &mut [f32],
            d: f32,
            w: &[f32],
            a: &mut [f32],
            base: usize,
            out: &mut Changes,
        ) {
            let n = z.len().min(w.len()).min(a.len());
            // SAFETY: `n` bounds all three slices; only reached from code compiled for, and
            // dispatched on, AVX2 (see `walk::has_avx2`).
            unsafe {
                scan8::<true, true>(z.as_mut_ptr(), d, w.as_ptr(), a.as_mut_ptr(), n, base, out)
            }
        }

        #[inline(always)]
        fn scan(z: &[f32], a: &mut [f32], base: usize, out: &mut Changes) {
            let n = z.len().min(a.len());
            // SAFETY: as above; with AXPY = false `z` is only read and `w` is never read.
            unsafe {
                scan8::<false, true>(
                    z.as_ptr() as *mut f32,
                    0.0,
                    z.as_ptr(),
                    a.as_mut_ptr(),
                    n,
                    base,
                    out,
                )
            }
        }

        #[inline(always)]
        fn scan_out<const AXPY: bool, const WRITE: bool, const P: usize>(
            z: &mut [f32],
            d: f32,
            w: &[f32],
            a: &mut [f32],
            out: &[f64],
            logits: &mut [f64],
        ) {
            Avx2::scan_out_impl::<AXPY, WRITE, P>(z, d, w, a, out, logits)
        }

        #[inline(always)]
        fn scan_out_blocked<const AXPY: bool, const WRITE: bool, const P: usize>(
            z: &mut [f32],
            d: f32,
            w: &[f32],
            a: &mut [f32],
            cut: usize,
            blocks: &[f64],
            rows: &[f64],
            logits: &mut [f64],
        ) {
            if !blocked(P) {
                let w = if AXPY { &w[cut..] } else { w };
                let width = if P == 0 { logits.len() } else { P };
                let rows = &rows[cut * width..];
                return Self::scan_out::<AXPY, WRITE, P>(
                    &mut z[cut..],
                    d,
                    w,
                    &mut a[cut..],
                    rows,
                    logits,
                );
            }
            let n = z.len().min(a.len());
            assert!(
                cut <= n
                    && (!AXPY || w.len() >= n)
                    && blocks.len() >= n / 8 * 8 * P
                    && rows.len() >= n * P
                    && logits.len() >= P
            );
            // SAFETY: the bounds are checked above; only reached from code compiled for, and
            // dispatched on, AVX2.
            unsafe {
                blocked8::<AXPY, WRITE, P>(
                    z.as_mut_ptr(),
                    d,
                    w.as_ptr(),
                    a.as_mut_ptr(),
                    cut,
                    n,
                    blocks.as_ptr(),
                    rows.as_ptr(),
                    logits.as_mut_ptr(),
                )
            }
        }
    }

    /// The blocked path of `scan_out_blocked` (same operations, in the same order, as
    /// `scan_out_blocked_portable`).
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn blocked8<const AXPY: bool, const WRITE: bool, const P: usize>(
        z: *mut f32,
        d: f32,
        w: *const f32,
        a: *mut f32,
        cut: usize,
        n: usize,
        blocks: *const f64,
        rows: *const f64,
        logits: *mut f64,
    ) {
        let head_end = cut.div_ceil(8).saturating_mul(8).min(n);
        let body_end = (n / 8 * 8).max(head_end);
        let mut extra = [0f64; P];
        let one = |k: usize, extra: &mut [f64; P]| {
            let mut zk = *z.add(k);
            if AXPY {
                zk += d * *w.add(k);
                if WRITE {
                    *z.add(k) = zk;
                }
            }
            let ak = *a.add(k);
            let new = zk.max(0.0);
            if new != ak {
                let change = new as f64 - ak as f64;
                for (c, e) in extra.iter_mut().enumerate() {
                    *e += change * *rows.add(k * P + c);
                }
                if WRITE {
                    *a.add(k) = new;
                }
            }
        };
        for k in cut..head_end {
            one(k, &mut extra);
        }
        let dv = _mm256_set1_ps(d);
        let zero = _mm256_setzero_ps();
        let mut acc = [_mm256_setzero_pd(); P];
        let mut k = head_end;
        while k < body_end {
            let mut zv = _mm256_loadu_ps(z.add(k));
            if AXPY {
                zv = _mm256_add_ps(zv, _mm256_mul_ps(dv, _mm256_loadu_ps(w.add(k))));
                if WRITE {
                    _mm256_storeu_ps(z.add(k), zv);
                }
            }
            let av = _mm256_loadu_ps(a.add(k));
            let nv = _mm256_max_ps(zv, zero);
            let mask = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(nv, av));
            if mask != 0 {
                let lo = _mm256_sub_pd(
                    _mm256_cvtps_pd(_mm256_castps256_ps128(nv)),
                    _mm256_cvtps_pd(_mm256_castps256_ps128(av)),
                );
                let hi = _mm256_sub_pd(
                    _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(nv)),
                    _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(av)),
                );
                if WRITE {
                    _mm256_storeu_ps(a.add(k), nv);
                }
                let block = blocks.add(k * P);
                for (c, v) in acc.iter_mut().enumerate() {
                    *v = _mm256_fmadd_pd(lo, _mm256_loadu_pd(block.add(c * 8)), *v);
                    *v = _mm256_fmadd_pd(hi, _mm256_loadu_pd(block.add(c * 8 + 4)), *v);
                }
            }
            k += 8;
        }
        for k in body_end..n {
            one(k, &mut extra);
        }
        let mut h = [0f64; 4];
        for (c, v) in acc.iter().enumerate() {
            _mm256_storeu_pd(h.as_mut_ptr(), *v);
            *logits.add(c) += ((h[0] + h[2]) + (h[1] + h[3])) + extra[c];
        }
    }

    impl Avx2 {
        #[inline(always)]
        fn scan_out_impl<const AXPY: bool, const WRITE: bool, const P: usize>(
            z: &mut [f32],
            d: f32,
            w: &[f32],
            a: &mut [f32],
            out: &[f64],
            logits: &mut [f64],
        ) {
            if P == 0 || P % 4 != 0 || P > 16 {
                return Portable::scan_out::<AXPY, WRITE, P>(z, d, w, a, out, logits);
            }
            let n = z.len().min(a.len());
            assert!(out.len() >= n * P && logits.len() >= P && (!AXPY || w.len() >= n));
            // SAFETY: the bounds are checked above; only reached from code compiled for, and
            // dispatched on, AVX2.
            unsafe {
                scan_out8::<AXPY, WRITE, P>(
                    z.as_mut_ptr(),
                    d,
                    w.as_ptr(),
                    a.as_mut_ptr(),
                    n,
                    out.as_ptr(),
                    logits.as_mut_ptr(),
                )
            }
        }
    }

    /// `scan8` fused with the logits update (see `Lanes::scan_out`), `P` in 4, 8, 12, 16.
    #[target_feature(enable = "avx2")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn scan_out8<const AXPY: bool, const WRITE: bool, const P: usize>(
        z: *mut f32,
        d: f32,
        w: *const f32,
        a: *mut f32,
        n: usize,
        out: *const f64,
        logits: *mut f64,
    ) {
        let dv = _mm256_set1_ps(d);
        let zero = _mm256_setzero_ps();
        // Two sets of accumulators in registers: each change goes into the first set, then
        // the sets swap (register moves), so alternate changes land in alternate sets.
        let (mut e0, mut e1, mut e2, mut e3) = (
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
            _mm256_setzero_pd(),
        );
        let (mut o0, mut o1, mut o2, mut o3) = (e0, e1, e2, e3);
        let mut change = [0f64; 8];
        // One change: acc += change * out row (separate multiply and add, as Portable).
        macro_rules! add {
            ($k:expr, $c:expr) => {{
                let cv = _mm256_set1_pd($c);
                let row = out.add($k * P);
                e0 = _mm256_add_pd(e0, _mm256_mul_pd(cv, _mm256_loadu_pd(row)));
                if P > 4 {
                    e1 = _mm256_add_pd(e1, _mm256_mul_pd(cv, _mm256_loadu_pd(row.add(4))));
                }
                if P > 8 {
                    e2 = _mm256_add_pd(e2, _mm256_mul_pd(cv, _mm256_loadu_pd(row.add(8))));
                }
                if P > 12 {
                    e3 = _mm256_add_pd(e3, _mm256_mul_pd(cv, _mm256_loadu_pd(row.add(12))));
                }
                std::mem::swap(&mut e0, &mut o0);
                std::mem::swap(&mut e1, &mut o1);
                std::mem::swap(&mut e2, &mut o2);
                std::mem::swap(&mut e3, &mut o3);
            }};
        }
        let mut k = 0;
        while k + 8 <= n {
            let mut zv = _mm256_loadu_ps(z.add(k));
            if AXPY {
                zv = _mm256_add_ps(zv, _mm256_mul_ps(dv, _mm256_loadu_ps(w.add(k))));
                if WRITE {
                    _mm256_storeu_ps(z.add(k), zv);
                }
            }
            let av = _mm256_loadu_ps(a.add(k));
            let nv = _mm256_max_ps(zv, zero);
            let mut mask = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(nv, av)) as u32;
            if mask != 0 {
                let lo = _mm256_sub_pd(
                    _mm256_cvtps_pd(_mm256_castps256_ps128(nv)),
                    _mm256_cvtps_pd(_mm256_castps256_ps128(av)),
                );
                let hi = _mm256_sub_pd(
                    _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(nv)),
                    _mm256_cvtps_pd(_mm256_extractf128_ps::<1>(av)),
                );
                _mm256_storeu_pd(change.as_mut_ptr(), lo);
                _mm256_storeu_pd(change.as_mut_ptr().add(4), hi);
                if WRITE {
                    _mm256_storeu_ps(a.add(k), nv);
                }
                while mask != 0 {
                    let lane = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    add!(k + lane, change[lane]);
                }
            }
            k += 8;
        }
        while k < n {
            let mut zk = *z.add(k);
            if AXPY {
                zk += d * *w.add(k);
                if WRITE {
                    *z.add(k) = zk;
                }
            }
            let ak = *a.add(k);
            let nk = zk.max(0.0);
            if nk != ak {
                add!(k, nk as f64 - ak as f64);
                if WRITE {
                    *a.add(k) = nk;
                }
            }
            k += 1;
        }
        // a + b == b + a: which set holds the even changes does not matter
        for (q, (e, o)) in [(e0, o0), (e1, o1), (e2, o2), (e3, o3)]
            .into_iter()
            .enumerate()
            .take(P / 4)
        {
            let l = logits.add(4 * q);
            _mm256_storeu_pd(l, _mm256_add_pd(_mm256_loadu_pd(l), _mm256_add_pd(e, o)));
        }
    }

    /// `z += d * w` when AXPY (stored when WRITE), then the change scan of `max(z, 0)`
    /// against `a` (stored when WRITE); same arithmetic as `Portable`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn scan8<const AXPY: bool, const WRITE: bool>(
        z: *mut f32,
        d: f32,
        w: *const f32,
        a: *mut f32,
        n: usize,
        base: usize,
        out: &mut Changes,
    ) {
        let dv = _mm256_set1_ps(d);
        let zero = _mm256_setzero_ps();
        let mut new = [0f32; 8];
        let mut old = [0f32; 8];
        let mut k = 0;
        while k + 8 <= n {
            let mut zv = _mm256_loadu_ps(z.add(k));
            if AXPY {
                zv = _mm256_add_ps(zv, _mm256_mul_ps(dv, _mm256_loadu_ps(w.add(k))));
                if WRITE {
                    _mm256_storeu_ps(z.add(k), zv);
                }
            }
            let av = _mm256_loadu_ps(a.add(k));
            let nv = _mm256_max_ps(zv, zero);
            let mut mask = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_NEQ_UQ>(nv, av)) as u32;
            if mask != 0 {
                _mm256_storeu_ps(new.as_mut_ptr(), nv);
                _mm256_storeu_ps(old.as_mut_ptr(), av);
                if WRITE {
                    _mm256_storeu_ps(a.add(k), nv);
                }
                while mask != 0 {
                    let lane = mask.trailing_zeros() as usize;
                    mask &= mask - 1;
                    out.push((
                        (base + k + lane) as u32,
                        new[lane] as f64 - old[lane] as f64,
                    ));
                }
            }
            k += 8;
        }
        while k < n {
            let mut zk = *z.add(k);
            if AXPY {
                zk += d * *w.add(k);
                if WRITE {
                    *z.add(k) = zk;
                }
            }
            let ak = *a.add(k);
            let nk = zk.max(0.0);
            if nk != ak {
                out.push(((base + k) as u32, nk as f64 - ak as f64));
                if WRITE {
                    *a.add(k) = nk;
                }
            }
            k += 1;
        }
    }
}
