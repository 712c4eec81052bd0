//! Timing of the per-unit statistics kernels (moved out of the unit tests):
//! `cargo bench --bench units` (set `RAYON_NUM_THREADS`, and `PHASE=<name>` for one phase).
//! The Python bench, `bench/stats.py`, compares against NumPy and polars.

use std::time::{Duration, Instant};

use rayon::prelude::*;

use _core::kernels::mutual_info::{Binning, MiOptions};
use _core::kernels::units::{
    summarize_dense, summarize_long, NegativePolicy, RecordStats, SummaryOptions,
};

#[repr(C)]
struct Timeval {
    sec: i64,
    usec: i64,
}

#[repr(C)]
struct Rusage {
    utime: Timeval,
    stime: Timeval,
    rest: [i64; 14],
}

extern "C" {
    fn getrusage(who: i32, usage: *mut Rusage) -> i32;
}

/// CPU time of the process, all threads (on a shared machine, wall-clock also counts waiting
/// for a core; CPU time is the work).
fn cpu_seconds() -> f64 {
    let mut r = Rusage {
        utime: Timeval { sec: 0, usec: 0 },
        stime: Timeval { sec: 0, usec: 0 },
        rest: [0; 14],
    };
    // SAFETY: getrusage(RUSAGE_SELF = 0) writes one `struct rusage`, whose Linux x86-64 / arm64
    // layout is two timevals and fourteen longs, as declared above.
    unsafe { getrusage(0, &mut r) };
    let t = |v: &Timeval| v.sec as f64 + v.usec as f64 * 1e-6;
    t(&r.utime) + t(&r.stime)
}

/// Best wall-clock and best CPU time of `repeats` calls.
fn best_of(repeats: usize, mut f: impl FnMut()) -> (Duration, f64) {
    let (mut wall, mut cpu) = (Duration::MAX, f64::INFINITY);
    for _ in 0..repeats {
        let (t, c) = (Instant::now(), cpu_seconds());
        f();
        wall = wall.min(t.elapsed());
        cpu = cpu.min(cpu_seconds() - c);
    }
    (wall, cpu)
}

fn main() {
    // `SAMPLES=<n>` changes the number of rows (a small array stays in cache).
    let n: usize = std::env::var("SAMPLES").map_or(10_000, |s| s.parse().unwrap());
    let (u, k) = (1000usize, 10usize);
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
    let mi = |binning| MiOptions {
        bins: 10,
        binning,
        miller_madow: false,
        shuffles: 0,
        seed: 0,
    };
    let phases = [
        ("scan", None),
        ("scan, all threads", None),
        (
            "selectivity",
            Some(SummaryOptions {
                n_classes: k,
                selectivity: Some(NegativePolicy::Error),
                moments: false,
                mutual_info: None,
            }),
        ),
        (
            "selectivity+moments",
            Some(SummaryOptions {
                n_classes: k,
                selectivity: Some(NegativePolicy::Error),
                moments: true,
                mutual_info: None,
            }),
        ),
        (
            "mi equal width",
            Some(SummaryOptions {
                n_classes: k,
                selectivity: None,
                moments: false,
                mutual_info: Some(mi(Binning::EqualWidth)),
            }),
        ),
        (
            "mi equal frequency",
            Some(SummaryOptions {
                n_classes: k,
                selectivity: None,
                moments: false,
                mutual_info: Some(mi(Binning::EqualFrequency)),
            }),
        ),
        (
            "all (unit_stats)",
            Some(SummaryOptions {
                n_classes: k,
                selectivity: Some(NegativePolicy::Error),
                moments: true,
                mutual_info: Some(mi(Binning::EqualWidth)),
            }),
        ),
    ];
    let only = std::env::var("PHASE").ok();
    println!("{n} x {u} float32, {k} classes (best of 10)");
    for (name, opts) in phases {
        if only.as_deref().is_some_and(|p| p != name) {
            continue;
        }
        // A plain read of values: 16 independent lanes, so the sum vectorizes.
        let scan = |part: &[f32]| {
            part.chunks_exact(16).fold([0f32; 16], |mut acc, c| {
                acc.iter_mut().zip(c).for_each(|(a, x)| *a += x);
                acc
            })
        };
        let t = match opts {
            None if name == "scan" => best_of(10, || {
                std::hint::black_box(scan(&acts));
            }),
            // The same read split over the rayon threads (the memory bandwidth of the machine).
            None => best_of(10, || {
                let parts: Vec<[f32; 16]> = acts.par_chunks(1 << 18).map(scan).collect();
                std::hint::black_box(parts);
            }),
            Some(o) => best_of(10, || {
                std::hint::black_box(summarize_dense(&acts, n, u, &labels, &o).unwrap());
            }),
        };
        println!(
            "  dense {name:24} {:8.2} ms wall {:8.2} ms cpu",
            t.0.as_secs_f64() * 1e3,
            t.1 * 1e3
        );
    }
    if only.as_deref().is_none_or(|p| p == "long") {
        let units: Vec<i64> = (0..n * u).map(|i| (i % u) as i64).collect();
        let long_labels: Vec<i64> = (0..n * u).map(|i| labels[i / u]).collect();
        let o = SummaryOptions {
            n_classes: k,
            selectivity: Some(NegativePolicy::Error),
            moments: true,
            mutual_info: None,
        };
        let t = best_of(3, || {
            std::hint::black_box(summarize_long(&units, &long_labels, &acts, u, &o).unwrap());
        });
        println!(
            "  long  {:24} {:8.2} ms wall {:8.2} ms cpu",
            "selectivity+moments",
            t.0.as_secs_f64() * 1e3,
            t.1 * 1e3
        );
    }
    if only.as_deref().is_none_or(|p| p == "stream") {
        // Unit-major records with samples, as `singledir record` writes them and
        // `singledir stats` streams them: all statistics, MI from the first pass.
        let units: Vec<i64> = (0..n * u).map(|i| (i / n) as i64).collect();
        let samples: Vec<i64> = (0..n * u).map(|i| (i % n) as i64).collect();
        let long_labels: Vec<i64> = (0..n * u).map(|i| labels[i % n]).collect();
        let values: Vec<f32> = (0..n * u).map(|i| acts[(i % n) * u + i / n]).collect();
        let o = SummaryOptions {
            n_classes: 0,
            selectivity: Some(NegativePolicy::Error),
            moments: true,
            mutual_info: std::env::var("NO_MI")
                .is_err()
                .then(|| mi(Binning::EqualWidth)),
        };
        let t = best_of(3, || {
            let mut stats = RecordStats::new(o, None, 1 << 24).unwrap();
            let layer = stats.layer_code("layer");
            for start in (0..n * u).step_by(1 << 20) {
                let r = start..(start + (1 << 20)).min(n * u);
                let s = std::env::var("NO_SAMPLES")
                    .is_err()
                    .then(|| &samples[r.clone()]);
                stats
                    .add_layer(
                        layer,
                        &units[r.clone()],
                        s,
                        &long_labels[r.clone()],
                        &values[r],
                    )
                    .unwrap();
            }
            assert!(!stats.next_pass().unwrap());
            std::hint::black_box(stats.finish().unwrap());
        });
        println!(
            "  long  {:24} {:8.2} ms wall {:8.2} ms cpu",
            "streamed, unit-major",
            t.0.as_secs_f64() * 1e3,
            t.1 * 1e3
        );
    }
}
