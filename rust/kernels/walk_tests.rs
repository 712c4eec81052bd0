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
    widths.push(2 + rng.below(5)); // classes
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
                mlp_importance(&big.walk(), 8).unwrap(),
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

#[test]
fn scan_variants_agree() {
    let mut rng = SplitMix64::new(11);
    for n in [0usize, 1, 7, 8, 9, 31, 64, 100] {
        let z: Vec<f32> = (0..n).map(|_| uniform(&mut rng) - 0.5).collect();
        let w: Vec<f32> = (0..n).map(|_| uniform(&mut rng) - 0.5).collect();
        let a: Vec<f32> = z.iter().map(|v| v.max(0.0)).collect();
        let (mut c1, mut c2, mut c3) = (Vec::new(), Vec::new(), Vec::new());
        let (mut z1, mut a1) = (z.clone(), a.clone());
        Portable::axpy_scan(&mut z1, 0.3, &w, &mut a1, 5, &mut c1);
        Portable::axpy_scan_ro(&z, 0.3, &w, &a, 5, &mut c2);
        assert_eq!(c1, c2);
        assert!(a1.iter().zip(&z1).all(|(a, z)| *a == z.max(0.0)));
        #[cfg(target_arch = "x86_64")]
        if has_avx2() {
            let (mut z2, mut a2) = (z.clone(), a.clone());
            Avx2::axpy_scan(&mut z2, 0.3, &w, &mut a2, 5, &mut c3);
            assert_eq!((c1.clone(), z1.clone(), a1.clone()), (c3.clone(), z2, a2));
            c3.clear();
            Avx2::axpy_scan_ro(&z, 0.3, &w, &a, 5, &mut c3);
            assert_eq!(c1, c3);
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
