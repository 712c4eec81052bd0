//! Tests of the walk against a dense float64 forward pass per mask.

use super::super::rng::SplitMix64;
use super::*;

const MARGIN: f64 = 1e-4;

struct Net {
    h0: Vec<f32>,
    n_samples: usize,
    weights: Vec<(Vec<f32>, Vec<f32>, usize, usize)>,
    site_layers: Vec<i64>,
    fills: Vec<Vec<f32>>,
    labels: Vec<i64>,
}

impl Net {
    fn walk(&self) -> Walk<'_> {
        Walk {
            h0: &self.h0,
            n_samples: self.n_samples,
            layers: self
                .weights
                .iter()
                .map(|(w, b, n_out, n_in)| Affine {
                    weight: w,
                    bias: b,
                    n_out: *n_out,
                    n_in: *n_in,
                })
                .collect(),
            site_layers: &self.site_layers,
            fills: self.fills.iter().map(|f| f.as_slice()).collect(),
            labels: &self.labels,
        }
    }

    fn widths(&self) -> Vec<usize> {
        let mut w = vec![self.weights[0].3];
        w.extend(self.weights.iter().map(|l| l.2));
        w
    }

    fn n_units(&self) -> usize {
        let w = self.widths();
        self.site_layers.iter().map(|&s| w[s as usize]).sum()
    }

    /// Dense f64 logits of sample `i` with the pooled units in `ablated` at their fill.
    fn logits(&self, i: usize, ablated: &[bool]) -> Vec<f64> {
        let widths = self.widths();
        let mut site_off = vec![None; widths.len()];
        let mut off = 0;
        for &s in &self.site_layers {
            site_off[s as usize] = Some(off);
            off += widths[s as usize];
        }
        let n0 = widths[0];
        let mut a: Vec<f64> = self.h0[i * n0..(i + 1) * n0]
            .iter()
            .map(|&v| v as f64)
            .collect();
        for (m, (w, b, n_out, n_in)) in self.weights.iter().enumerate() {
            if let Some(off) = site_off[m] {
                let s = self
                    .site_layers
                    .iter()
                    .position(|&l| l as usize == m)
                    .unwrap();
                for (k, v) in a.iter_mut().enumerate() {
                    if ablated[off + k] {
                        *v = self.fills[s][k] as f64;
                    }
                }
            }
            let mut z: Vec<f64> = (0..*n_out)
                .map(|o| {
                    b[o] as f64
                        + (0..*n_in)
                            .map(|j| w[o * n_in + j] as f64 * a[j])
                            .sum::<f64>()
                })
                .collect();
            if m + 1 < self.weights.len() {
                z.iter_mut().for_each(|v| *v = v.max(0.0));
            }
            a = z;
        }
        a
    }
}

fn uniform(rng: &mut SplitMix64) -> f32 {
    (rng.next_u64() >> 40) as f32 / (1u64 << 24) as f32
}

fn random_net(seed: u64) -> Net {
    let mut rng = SplitMix64::new(seed);
    let n_layers = 1 + rng.below(3);
    let mut widths: Vec<usize> = (0..n_layers).map(|_| 1 + rng.below(12)).collect();
    widths.push(2 + rng.below(18)); // classes: padded widths 4..20, specialized or not
    let n_samples = 1 + rng.below(70);
    let h0 = (0..n_samples * widths[0])
        .map(|_| (2.0 * uniform(&mut rng) - 0.8).max(0.0))
        .collect();
    let weights = (0..n_layers)
        .map(|m| {
            let (n_in, n_out) = (widths[m], widths[m + 1]);
            let w = (0..n_in * n_out)
                .map(|_| 2.0 * uniform(&mut rng) - 1.0)
                .collect();
            let b = (0..n_out).map(|_| uniform(&mut rng) - 0.5).collect();
            (w, b, n_out, n_in)
        })
        .collect();
    let mut site_layers = vec![0i64];
    for m in 1..n_layers {
        if rng.below(3) > 0 {
            site_layers.push(m as i64);
        }
    }
    let mean_fill = rng.below(2) == 0;
    let fills = site_layers
        .iter()
        .map(|&s| {
            (0..widths[s as usize])
                .map(|_| if mean_fill { uniform(&mut rng) } else { 0.0 })
                .collect()
        })
        .collect();
    let labels = (0..n_samples)
        .map(|_| rng.below(widths[n_layers]) as i64)
        .collect();
    Net {
        h0,
        n_samples,
        weights,
        site_layers,
        fills,
        labels,
    }
}

/// (correct, summed loss, borderline samples) of the dense reference under `ablated`.
fn reference(net: &Net, ablated: &[bool]) -> (i64, f64, i64) {
    let (mut correct, mut loss, mut border) = (0, 0.0, 0);
    for i in 0..net.n_samples {
        let lg = net.logits(i, ablated);
        let y = net.labels[i] as usize;
        let mut arg = 0;
        for c in 1..lg.len() {
            if lg[c] > lg[arg] {
                arg = c;
            }
        }
        let mx = lg[arg];
        let second = lg
            .iter()
            .enumerate()
            .filter(|&(c, _)| c != arg)
            .fold(f64::NEG_INFINITY, |s, (_, &v)| s.max(v));
        border += (mx - second < MARGIN) as i64;
        correct += (arg == y) as i64;
        loss += mx + lg.iter().map(|&v| (v - mx).exp()).sum::<f64>().ln() - lg[y];
    }
    (correct, loss, border)
}

fn random_orders(rng: &mut SplitMix64, n_orders: usize, n: usize) -> Vec<i64> {
    let mut out = Vec::new();
    for _ in 0..n_orders {
        let mut p: Vec<i64> = (0..n as i64).collect();
        rng.shuffle(&mut p);
        out.extend(p);
    }
    out
}

fn assert_close(net: &Net, ablated: &[bool], correct: i64, loss: f64, what: &str) {
    let (c_ref, l_ref, border) = reference(net, ablated);
    assert!(
        (correct - c_ref).abs() <= border,
        "{what}: correct {correct} vs reference {c_ref} ({border} borderline)"
    );
    assert!(
        (loss - l_ref).abs() <= 1e-5 * l_ref.abs() + 1e-6 * net.n_samples as f64,
        "{what}: loss {loss} vs reference {l_ref}"
    );
}

#[test]
fn curves_match_dense_reference() {
    for seed in 0..60 {
        let net = random_net(seed);
        let n = net.n_units();
        let mut rng = SplitMix64::new(1000 + seed);
        let n_orders = 1 + rng.below(3);
        let orders = random_orders(&mut rng, n_orders, n);
        let levels: Vec<i64> = (0..=n as i64).filter(|_| rng.below(3) > 0).collect();
        let curves = mlp_curves(&net.walk(), &orders, n_orders, &levels).unwrap();
        for o in 0..n_orders {
            for (k, &level) in levels.iter().enumerate() {
                let mut ablated = vec![false; n];
                for &u in &orders[o * n..o * n + level as usize] {
                    ablated[u as usize] = true;
                }
                let idx = o * levels.len() + k;
                let what = format!("seed {seed} ordering {o} level {level}");
                assert_close(
                    &net,
                    &ablated,
                    curves.correct[idx],
                    curves.loss_sum[idx],
                    &what,
                );
            }
        }
    }
}

#[test]
fn importance_matches_dense_reference() {
    for seed in 100..140 {
        let net = random_net(seed);
        let n = net.n_units();
        let n_classes = net.weights.last().unwrap().2 + 1;
        let imp = mlp_importance(&net.walk(), n_classes).unwrap();
        for u in 0..n {
            let mut ablated = vec![false; n];
            ablated[u] = true;
            let what = format!("seed {seed} unit {u}");
            assert_close(&net, &ablated, imp.correct[u], imp.loss_sum[u], &what);
            let per_class: i64 = imp.per_class_correct[u * n_classes..(u + 1) * n_classes]
                .iter()
                .sum();
            assert_eq!(per_class, imp.correct[u]);
            assert_eq!(imp.per_class_correct[u * n_classes + n_classes - 1], 0);
        }
    }
}

#[test]
fn same_result_for_any_thread_count_and_lanes() {
    let net = random_net(7);
    let mut big = net;
    // many chunks: replicate the samples
    big.h0 = big.h0.repeat(40);
    big.labels = big.labels.repeat(40);
    big.n_samples *= 40;
    let n = big.n_units();
    let mut rng = SplitMix64::new(3);
    let orders = random_orders(&mut rng, 3, n);
    let levels: Vec<i64> = (0..=n as i64).collect();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            (
                mlp_curves(&big.walk(), &orders, 3, &levels).unwrap(),
                mlp_importance(&big.walk(), 20).unwrap(),
            )
        })
    };
    let one = run(1);
    assert_eq!(one, run(2));
    assert_eq!(one, run(3));
    FORCE_PORTABLE.with(|f| f.set(true));
    let portable = run(2);
    FORCE_PORTABLE.with(|f| f.set(false));
    assert_eq!(one, portable);
}

fn scan_out_all<S: Lanes>(z: &[f32], w: &[f32], a: &[f32], out: &[f64], width: usize) -> Vec<f64> {
    let mut results = Vec::new();
    let (mut z1, mut a1) = (z.to_vec(), a.to_vec());
    let mut logits = vec![0.5f64; width];
    match width {
        4 => S::scan_out::<true, true, 4>(&mut z1, 0.3, w, &mut a1, out, &mut logits),
        8 => S::scan_out::<true, false, 8>(&mut z1, 0.3, w, &mut a1, out, &mut logits),
        12 => S::scan_out::<false, true, 12>(&mut z1, 0.3, w, &mut a1, out, &mut logits),
        16 => S::scan_out::<true, true, 16>(&mut z1, 0.3, w, &mut a1, out, &mut logits),
        _ => S::scan_out::<true, true, 0>(&mut z1, 0.3, w, &mut a1, out, &mut logits),
    }
    results.extend(logits);
    results.extend(z1.iter().chain(&a1).map(|&v| v as f64));
    results
}

#[test]
fn scan_variants_agree() {
    let mut rng = SplitMix64::new(11);
    for n in [0usize, 1, 7, 8, 9, 31, 64, 100] {
        let z: Vec<f32> = (0..n).map(|_| uniform(&mut rng) - 0.5).collect();
        let w: Vec<f32> = (0..n).map(|_| uniform(&mut rng) - 0.5).collect();
        let a: Vec<f32> = z.iter().map(|v| v.max(0.0)).collect();
        let (mut c1, mut z1, mut a1) = (Vec::new(), z.clone(), a.clone());
        Portable::axpy_scan(&mut z1, 0.3, &w, &mut a1, 5, &mut c1);
        assert!(a1.iter().zip(&z1).all(|(a, z)| *a == z.max(0.0)));
        for width in [4usize, 8, 12, 16, 20] {
            let out: Vec<f64> = (0..n * width).map(|_| uniform(&mut rng) as f64).collect();
            let got = scan_out_all::<Portable>(&z, &w, &a, &out, width);
            // the fused update against the change list it stands for
            let axpy = width != 12;
            let mut want = vec![0.5f64; width];
            for k in 0..n {
                let zk = if axpy { z[k] + 0.3 * w[k] } else { z[k] };
                let change = zk.max(0.0) as f64 - a[k] as f64;
                for c in 0..width {
                    want[c] += change * out[k * width + c];
                }
            }
            for c in 0..width {
                assert!((got[c] - want[c]).abs() < 1e-12, "width {width} logit {c}");
            }
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                assert_eq!(
                    got,
                    scan_out_all::<Avx2>(&z, &w, &a, &out, width),
                    "width {width}"
                );
            }
        }
        for (width, cut) in [
            (4usize, 0usize),
            (8, 3),
            (12, 8),
            (12, 13),
            (16, 2),
            (20, 5),
        ] {
            let cut = cut.min(n);
            let rows: Vec<f64> = (0..n * width).map(|_| uniform(&mut rng) as f64).collect();
            let blocks = lanes::block_rows(&rows, n, width);
            let run = |avx2: bool| {
                let (mut z1, mut a1) = (z.clone(), a.clone());
                let mut logits = vec![0.25f64; width];
                macro_rules! go {
                    ($lanes:ty, $p:literal) => {
                        <$lanes>::scan_out_blocked::<true, true, $p>(
                            &mut z1,
                            0.3,
                            &w,
                            &mut a1,
                            cut,
                            &blocks,
                            &rows,
                            &mut logits,
                        )
                    };
                }
                match (avx2, width) {
                    #[cfg(target_arch = "x86_64")]
                    (true, 4) => go!(Avx2, 4),
                    #[cfg(target_arch = "x86_64")]
                    (true, 8) => go!(Avx2, 8),
                    #[cfg(target_arch = "x86_64")]
                    (true, 12) => go!(Avx2, 12),
                    #[cfg(target_arch = "x86_64")]
                    (true, 16) => go!(Avx2, 16),
                    #[cfg(target_arch = "x86_64")]
                    (true, _) => go!(Avx2, 0),
                    (_, 4) => go!(Portable, 4),
                    (_, 8) => go!(Portable, 8),
                    (_, 12) => go!(Portable, 12),
                    (_, 16) => go!(Portable, 16),
                    _ => go!(Portable, 0),
                }
                (logits, z1, a1)
            };
            let got = run(false);
            let mut want = vec![0.25f64; width];
            for k in cut..n {
                let change = (z[k] + 0.3 * w[k]).max(0.0) as f64 - a[k] as f64;
                for (c, want_c) in want.iter_mut().enumerate() {
                    *want_c += change * rows[k * width + c];
                }
            }
            for (g, w) in got.0.iter().zip(&want) {
                assert!((g - w).abs() < 1e-12, "blocked width {width} cut {cut}");
            }
            assert_eq!(&got.1[..cut], &z[..cut], "prefix left alone");
            #[cfg(target_arch = "x86_64")]
            if has_avx2() {
                assert_eq!(got, run(true), "blocked width {width} cut {cut}");
            }
        }
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            let (mut c2, mut z2, mut a2) = (Vec::new(), z.clone(), a.clone());
            Avx2::axpy_scan(&mut z2, 0.3, &w, &mut a2, 5, &mut c2);
            assert_eq!((c1, z1, a1), (c2, z2, a2));
        }
    }
}

#[test]
fn exp_is_accurate() {
    for i in 0..20000 {
        let x = -(i as f64) * 0.0371;
        let (got, want) = (lanes::exp_nonpos(x), x.exp());
        if x > -700.0 {
            assert!(
                (got - want).abs() <= 1e-13 * want,
                "exp({x}) = {got}, want {want}"
            );
        }
    }
    assert!(lanes::exp_nonpos(f64::NEG_INFINITY) > 0.0);
}

#[test]
fn bad_input_is_an_error() {
    let net = random_net(5);
    let n = net.n_units() as i64;
    let ok: Vec<i64> = (0..n).collect();
    let walk = net.walk();
    let mut dup = ok.clone();
    if n > 1 {
        dup[1] = dup[0];
        assert!(mlp_curves(&walk, &dup, 1, &[0]).is_err());
    }
    assert!(mlp_curves(&walk, &ok[..ok.len() - 1], 1, &[0]).is_err());
    assert!(mlp_curves(&walk, &ok, 1, &[1, 0]).is_err());
    assert!(mlp_curves(&walk, &ok, 1, &[n + 1]).is_err());
    assert!(mlp_curves(&walk, &ok, 1, &[0, 1]).is_ok());
    assert!(mlp_importance(&walk, 1).is_err()); // labels above n_classes
    let mut bad = random_net(5);
    bad.site_layers = vec![1];
    assert!(mlp_importance(&bad.walk(), 10).is_err());
    let mut bad = random_net(5);
    bad.h0[0] = f32::NAN;
    assert!(mlp_importance(&bad.walk(), 10).is_err());
    let mut bad = random_net(5);
    bad.labels[0] = -1;
    assert!(mlp_importance(&bad.walk(), 10).is_err());
    let mut bad = random_net(5);
    bad.fills[0].pop();
    assert!(mlp_importance(&bad.walk(), 10).is_err());
    let mut bad = random_net(5);
    bad.weights[0].1.pop();
    assert!(mlp_importance(&bad.walk(), 10).is_err());
}
