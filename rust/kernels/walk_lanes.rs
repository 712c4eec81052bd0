//! Inner loops of the ablation walk (`walk.rs`): rank-1 updates, the ReLU change scan and the
//! per-level score.
//!
//! The scan is the one loop the compiler cannot vectorize on its own (it compacts the indices
//! of changed units), so it has an AVX2 version next to the portable one. Both use a separate
//! multiply and add (no fused multiply-add), so they give bit-identical results.

/// The ReLU change scan: given pre-activations `z` and the activations `a` they produced
/// before, find the units whose ReLU output changed, store the new output in `a` and push
/// `(base + k, new - old)` with the difference taken exactly in f64.
pub(crate) trait Lanes {
    /// `z += d * w`, then the scan (writing `a`).
    fn axpy_scan(z: &mut [f32], d: f32, w: &[f32], a: &mut [f32], base: usize, out: &mut Changes);
    /// The changes `max(z + d * w, 0)` would make to `a`, nothing written.
    fn axpy_scan_ro(z: &[f32], d: f32, w: &[f32], a: &[f32], base: usize, out: &mut Changes);
    /// The scan of `max(z, 0)` against `a` (writing `a`).
    fn scan(z: &[f32], a: &mut [f32], base: usize, out: &mut Changes);
}

/// Sparse activation changes of one layer: unit index and exact change.
pub(crate) type Changes = Vec<(u32, f64)>;

/// Plain Rust; vectorized by the compiler where it can.
pub(crate) struct Portable;

impl Lanes for Portable {
    #[inline(always)]
    fn axpy_scan(z: &mut [f32], d: f32, w: &[f32], a: &mut [f32], base: usize, out: &mut Changes) {
        axpy(z, d, w);
        Self::scan(z, a, base, out);
    }

    #[inline(always)]
    fn axpy_scan_ro(z: &[f32], d: f32, w: &[f32], a: &[f32], base: usize, out: &mut Changes) {
        for (k, ((&zk, &wk), &ak)) in z.iter().zip(w).zip(a).enumerate() {
            let new = (zk + d * wk).max(0.0);
            if new != ak {
                out.push(((base + k) as u32, new as f64 - ak as f64));
            }
        }
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

    use super::{Changes, Lanes};

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
        fn axpy_scan_ro(z: &[f32], d: f32, w: &[f32], a: &[f32], base: usize, out: &mut Changes) {
            let n = z.len().min(w.len()).min(a.len());
            // SAFETY: as above; with WRITE = false nothing is written through the pointers.
            unsafe {
                scan8::<true, false>(
                    z.as_ptr() as *mut f32,
                    d,
                    w.as_ptr(),
                    a.as_ptr() as *mut f32,
                    n,
                    base,
                    out,
                )
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
