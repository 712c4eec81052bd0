//! Cumulative-ablation walk through an MLP chain: exact accuracy and loss at every requested
//! level of many unit orderings, and single-unit importance, by sparse propagation.
//!
//! The chain: `a_0 = h0` (the first site's activity), `z_m = W_m a_{m-1} + b_m` and
//! `a_m = relu(z_m)` for `m = 1..L-1`, logits `= W_L a_{L-1} + b_L`. Sites are activation
//! layers (`site_layers`, starting with 0); their units are pooled in site order.
//!
//! Ablating a unit sets its activation to its fill; the change `delta = fill - a` enters the
//! next pre-activation as the rank-1 update `delta * W[:, j]`, and only the units whose ReLU
//! output then changes propagate further, down to the logits. An ablated unit is clamped (its
//! output is the fill whatever its input). A site-0 unit already at its fill (a ReLU zero
//! under `value="zero"`) changes nothing: that sparsity is most of the gain.
//!
//! Numbers: pre-activations and activations are f32, logits f64. Each activation change is
//! taken exactly in f64 (`new - old` of two f32), so the f64 logits telescope: they equal
//! `b_L + W_L a_{L-1}` of the current f32 activations up to f64 rounding, whatever the number
//! of events. What drifts is only each f32 pre-activation, by one rounding per rank-1 update
//! it receives (at most the number of units of the layer before): no periodic dense
//! recompute is needed for the accuracy the contract asks (exact except samples whose top-2
//! logit gap is below 1e-4), and none is done. Initial pre-activations are summed in f64.
//!
//! Layout: each weight is transposed once, so a unit's outgoing column is contiguous. For each
//! ordering the units of every site layer after the first are permuted into their ablation
//! order, so the clamped units of a layer are a prefix that the updates and scans skip.
//!
//! Parallelism: fixed chunks of samples (`CHUNK`), results merged serially in chunk order, so
//! counts and sums are the same for any number of threads.

use rayon::prelude::*;

#[path = "walk_lanes.rs"]
mod lanes;

use crate::error::{KernelError, KernelResult};
#[cfg(target_arch = "x86_64")]
use lanes::Avx2;
use lanes::{axpy, axpy64, score, Changes, Lanes, Portable};

/// Samples per parallel piece.
const CHUNK: usize = 32;
/// Samples whose initial state is held at once (bounds memory for large inputs).
const BLOCK: usize = 4096;

/// One affine map of the chain, `weight` row-major `(n_out, n_in)` as torch stores it.
pub struct Affine<'a> {
    pub weight: &'a [f32],
    pub bias: &'a [f32],
    pub n_out: usize,
    pub n_in: usize,
}

/// The arguments shared by the curves and the importance walk.
pub struct Walk<'a> {
    /// `(n_samples, n_0)` activity of the first site.
    pub h0: &'a [f32],
    pub n_samples: usize,
    pub layers: Vec<Affine<'a>>,
    pub site_layers: &'a [i64],
    pub fills: Vec<&'a [f32]>,
    pub labels: &'a [i64],
}

/// Correct counts and summed cross-entropy, `(n_orders, n_levels)` row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Curves {
    pub correct: Vec<i64>,
    pub loss_sum: Vec<f64>,
}

/// Per pooled unit ablated alone: correct count, summed loss, and correct count per class
/// (`(n_units, n_classes)` row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct Importance {
    pub correct: Vec<i64>,
    pub loss_sum: Vec<f64>,
    pub per_class_correct: Vec<i64>,
}

/// The validated chain, weights transposed.
struct Chain {
    /// Activation widths `n_0 .. n_{L-1}`.
    widths: Vec<usize>,
    n_classes: usize,
    /// Logit slots: `n_classes` rounded up to a multiple of 4, padding logits at -inf.
    padded: usize,
    /// `hidden[m - 1]` = `W_m^T` `(n_{m-1}, n_m)` for `m = 1..L-1`.
    hidden: Vec<Vec<f32>>,
    hidden_bias: Vec<Vec<f32>>,
    /// `W_L^T` `(n_{L-1}, padded)` in f64 and its bias.
    out: Vec<f64>,
    out_bias: Vec<f64>,
    /// Activation layer of each site, its first pooled index, its fill.
    sites: Vec<usize>,
    offsets: Vec<usize>,
    fills: Vec<Vec<f32>>,
    /// Site index of each activation layer.
    site_of: Vec<Option<usize>>,
    n_units: usize,
    labels: Vec<usize>,
}

impl Chain {
    fn depth(&self) -> usize {
        self.widths.len()
    }
}

fn shape(msg: String) -> KernelError {
    KernelError::Shape(msg)
}

fn value(msg: String) -> KernelError {
    KernelError::Value(msg)
}

fn check_finite(name: &str, xs: &[f32]) -> KernelResult<()> {
    match xs.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(value(format!(
            "{name} has a non-finite value ({}) at position {i}: the walk needs finite \
             activations, weights and fills",
            xs[i]
        ))),
    }
}

fn prepare(w: &Walk<'_>) -> KernelResult<Chain> {
    let n_layers = w.layers.len();
    if n_layers == 0 {
        return Err(shape(
            "layers is empty: pass at least the map to the logits".into(),
        ));
    }
    let n0 = w.layers[0].n_in;
    if w.h0.len() != w.n_samples * n0 {
        return Err(shape(format!(
            "h0 has {} values, expected n_samples x n_inputs of the first layer = {} x {n0}",
            w.h0.len(),
            w.n_samples
        )));
    }
    check_finite("h0", w.h0)?;
    let mut widths = vec![n0];
    for (m, layer) in w.layers.iter().enumerate() {
        if layer.n_in != *widths.last().unwrap() {
            return Err(shape(format!(
                "layer {m} takes {} inputs but the activation before it has {}: pass the \
                 chain's affine maps in order",
                layer.n_in,
                widths.last().unwrap()
            )));
        }
        if layer.weight.len() != layer.n_out * layer.n_in || layer.bias.len() != layer.n_out {
            return Err(shape(format!(
                "layer {m}: weight must be (out, in) = ({}, {}) and bias ({},)",
                layer.n_out, layer.n_in, layer.n_out
            )));
        }
        check_finite(&format!("layer {m} weight"), layer.weight)?;
        check_finite(&format!("layer {m} bias"), layer.bias)?;
        if m + 1 < n_layers {
            widths.push(layer.n_out);
        }
    }
    let n_classes = w.layers[n_layers - 1].n_out;
    if n_classes == 0 {
        return Err(shape(
            "the last layer has no outputs: it must produce the logits".into(),
        ));
    }
    let sites: Vec<usize> = w
        .site_layers
        .iter()
        .map(|&s| usize::try_from(s).unwrap_or(usize::MAX))
        .collect();
    if sites.first() != Some(&0)
        || sites.windows(2).any(|p| p[0] >= p[1])
        || sites.iter().any(|&s| s >= n_layers)
    {
        return Err(value(format!(
            "site_layers {:?} must be sorted, unique, start with 0 and lie below the number \
             of layers ({n_layers})",
            w.site_layers
        )));
    }
    if w.fills.len() != sites.len() {
        return Err(shape(format!(
            "{} fills for {} sites: pass one fill vector per site",
            w.fills.len(),
            sites.len()
        )));
    }
    let mut offsets = Vec::with_capacity(sites.len());
    let mut site_of = vec![None; n_layers];
    let mut n_units = 0;
    for (s, (&layer, fill)) in sites.iter().zip(&w.fills).enumerate() {
        if fill.len() != widths[layer] {
            return Err(shape(format!(
                "fill of site {s} has {} values but its layer has {} units",
                fill.len(),
                widths[layer]
            )));
        }
        check_finite(&format!("fill of site {s}"), fill)?;
        offsets.push(n_units);
        site_of[layer] = Some(s);
        n_units += widths[layer];
    }
    if w.labels.len() != w.n_samples {
        return Err(shape(format!(
            "{} labels for {} samples",
            w.labels.len(),
            w.n_samples
        )));
    }
    if let Some(bad) = w.labels.iter().find(|&&y| y < 0 || y as usize >= n_classes) {
        return Err(value(format!(
            "label {bad} is outside 0..{n_classes} (the number of logits)"
        )));
    }
    let transpose = |layer: &Affine<'_>| -> Vec<f32> {
        let mut t = vec![0f32; layer.n_in * layer.n_out];
        for (o, row) in layer.weight.chunks_exact(layer.n_in).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                t[i * layer.n_out + o] = v;
            }
        }
        t
    };
    let padded = n_classes.div_ceil(4) * 4;
    let last = &w.layers[n_layers - 1];
    let mut out = vec![0f64; last.n_in * padded];
    for (o, row) in last.weight.chunks_exact(last.n_in).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            out[i * padded + o] = v as f64;
        }
    }
    let mut out_bias = vec![f64::NEG_INFINITY; padded];
    for (b, &v) in out_bias.iter_mut().zip(last.bias) {
        *b = v as f64;
    }
    Ok(Chain {
        widths,
        n_classes,
        padded,
        hidden: w.layers[..n_layers - 1].iter().map(transpose).collect(),
        hidden_bias: w.layers[..n_layers - 1]
            .iter()
            .map(|l| l.bias.to_vec())
            .collect(),
        out,
        out_bias,
        sites,
        offsets,
        fills: w.fills.iter().map(|f| f.to_vec()).collect(),
        site_of,
        n_units,
        labels: w.labels.iter().map(|&y| y as usize).collect(),
    })
}

/// Initial pre-activations of one sample (`z_1 .. z_{L-1}`, concatenated) and its logits,
/// summed in f64 from the sample's `h0` row.
#[inline(always)]
fn forward(chain: &Chain, h0: &[f32], z: &mut [f32], logits: &mut [f64], acc: &mut Vec<f64>) {
    let mut off = 0;
    let mut prev_off = usize::MAX; // usize::MAX: the previous activation is h0
    for m in 1..chain.depth() {
        let n = chain.widths[m];
        let n_in = chain.widths[m - 1];
        acc.clear();
        acc.extend(chain.hidden_bias[m - 1].iter().map(|&b| b as f64));
        let wt = &chain.hidden[m - 1];
        for j in 0..n_in {
            let a = if prev_off == usize::MAX {
                h0[j]
            } else {
                z[prev_off + j].max(0.0)
            };
            if a != 0.0 {
                for (s, &wv) in acc.iter_mut().zip(&wt[j * n..(j + 1) * n]) {
                    *s += a as f64 * wv as f64;
                }
            }
        }
        for (zk, &s) in z[off..off + n].iter_mut().zip(acc.iter()) {
            *zk = s as f32;
        }
        prev_off = off;
        off += n;
    }
    logits.copy_from_slice(&chain.out_bias);
    let n_in = *chain.widths.last().unwrap();
    for j in 0..n_in {
        let a = if prev_off == usize::MAX {
            h0[j]
        } else {
            z[prev_off + j].max(0.0)
        };
        if a != 0.0 {
            axpy64(
                logits,
                a as f64,
                &chain.out[j * chain.padded..(j + 1) * chain.padded],
            );
        }
    }
}

/// `forward` compiled for AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn forward_avx2(chain: &Chain, h0: &[f32], z: &mut [f32], logits: &mut [f64], acc: &mut Vec<f64>) {
    forward(chain, h0, z, logits, acc)
}

/// `forward` with the best lanes this CPU has.
fn forward_any(chain: &Chain, h0: &[f32], z: &mut [f32], logits: &mut [f64], acc: &mut Vec<f64>) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { forward_avx2(chain, h0, z, logits, acc) };
    }
    forward(chain, h0, z, logits, acc)
}

/// Offsets of `z_1 .. z_{L-1}` in the concatenated pre-activations.
fn z_offsets(chain: &Chain) -> Vec<usize> {
    let mut offs = vec![0; chain.depth() + 1];
    for m in 1..chain.depth() {
        offs[m + 1] = offs[m] + chain.widths[m];
    }
    offs // offs[depth]: total
}

/// Runs `work` on chunks `0..n_chunks` in parallel, a wave at a time, and hands the results
/// to `merge` serially in chunk order (deterministic whatever the thread count).
fn ordered_chunks<T: Send>(
    n_chunks: usize,
    wave: usize,
    work: impl Fn(usize) -> T + Sync,
    mut merge: impl FnMut(T),
) {
    let mut start = 0;
    while start < n_chunks {
        let end = (start + wave).min(n_chunks);
        let results: Vec<T> = (start..end).into_par_iter().map(&work).collect();
        results.into_iter().for_each(&mut merge);
        start = end;
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    #[cfg(test)]
    if FORCE_PORTABLE.with(|f| f.get()) {
        return false;
    }
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(test)]
thread_local! {
    /// Tests compare the portable lanes with the AVX2 ones on the same input.
    static FORCE_PORTABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Activations of the chain for one walk, per activation layer (`z[0]` is unused).
struct State {
    a: Vec<Vec<f32>>,
    z: Vec<Vec<f32>>,
    logits: Vec<f64>,
    /// Per layer, how many of its (permuted) units are clamped: a prefix that is skipped.
    cut: Vec<usize>,
    changes: Changes,
    next: Changes,
    scratch: Vec<f64>,
}

impl State {
    fn new(chain: &Chain) -> State {
        State {
            a: chain.widths.iter().map(|&n| vec![0f32; n]).collect(),
            z: chain.widths.iter().map(|&n| vec![0f32; n]).collect(),
            logits: vec![0f64; chain.padded],
            cut: vec![0; chain.depth()],
            changes: Vec::new(),
            next: Vec::new(),
            scratch: vec![0f64; chain.padded],
        }
    }
}

/// Weights as one walk sees them: `hidden[m - 1]` = `W_m^T`, `out` = `W_L^T` (f64, padded).
struct Maps<'a> {
    hidden: &'a [Vec<f32>],
    out: &'a [f64],
    /// `out` in blocks of 8 units (`lanes::block_rows`; empty unless `blocked(padded)`).
    blocks: &'a [f64],
    padded: usize,
}

/// `out` rows in blocks when the fused update uses them.
fn out_blocks(out: &[f64], padded: usize) -> Vec<f64> {
    if lanes::blocked(padded) {
        lanes::block_rows(out, out.len() / padded, padded)
    } else {
        Vec::new()
    }
}

/// Propagates the change `d` of unit `row` of activation layer `layer` down to the logits,
/// updating `state` (pre-activations, activations, logits) sparsely. `P` is the padded
/// number of logits when it is one of the specialized widths, else 0 (see `by_width!`).
#[inline(always)]
fn propagate<S: Lanes, const P: usize>(
    maps: &Maps<'_>,
    layer: usize,
    row: usize,
    d: f64,
    st: &mut State,
) {
    let depth = st.a.len();
    let p = maps.padded;
    if layer + 1 == depth {
        axpy64(&mut st.logits, d, &maps.out[row * p..(row + 1) * p]);
        return;
    }
    let mut m = layer + 1;
    let (n, cut) = (st.z[m].len(), st.cut[m]);
    let w = &maps.hidden[m - 1][row * n..(row + 1) * n];
    if m + 1 == depth {
        S::scan_out_blocked::<true, true, P>(
            &mut st.z[m],
            d as f32,
            w,
            &mut st.a[m],
            cut,
            maps.blocks,
            maps.out,
            &mut st.logits,
        );
        return;
    }
    st.changes.clear();
    S::axpy_scan(
        &mut st.z[m][cut..],
        d as f32,
        &w[cut..],
        &mut st.a[m][cut..],
        cut,
        &mut st.changes,
    );
    loop {
        if st.changes.is_empty() {
            return;
        }
        let next_m = m + 1;
        let (n, cut) = (st.z[next_m].len(), st.cut[next_m]);
        let wt = &maps.hidden[next_m - 1];
        for &(k, dk) in &st.changes {
            let k = k as usize;
            axpy(
                &mut st.z[next_m][cut..],
                dk as f32,
                &wt[k * n + cut..(k + 1) * n],
            );
        }
        if next_m + 1 == depth {
            S::scan_out_blocked::<false, true, P>(
                &mut st.z[next_m],
                0.0,
                &[],
                &mut st.a[next_m],
                cut,
                maps.blocks,
                maps.out,
                &mut st.logits,
            );
            return;
        }
        st.next.clear();
        S::scan(
            &st.z[next_m][cut..],
            &mut st.a[next_m][cut..],
            cut,
            &mut st.next,
        );
        std::mem::swap(&mut st.changes, &mut st.next);
        m = next_m;
    }
}

/// Calls `$f::<$lanes, P>($args)` with `P` the padded logit count when it is 4, 8, 12 or 16
/// (the fused logits update then runs in registers), else `P = 0` (any width).
macro_rules! by_width {
    ($padded:expr, $f:ident, $lanes:ty, ($($arg:expr),*)) => {
        match $padded {
            4 => $f::<$lanes, 4>($($arg),*),
            8 => $f::<$lanes, 8>($($arg),*),
            12 => $f::<$lanes, 12>($($arg),*),
            16 => $f::<$lanes, 16>($($arg),*),
            _ => $f::<$lanes, 0>($($arg),*),
        }
    };
}

#[path = "walk_curves.rs"]
mod curves;
#[path = "walk_importance.rs"]
mod importance;

#[cfg(test)]
#[path = "walk_tests.rs"]
mod tests;

pub use curves::mlp_curves;
pub use importance::mlp_importance;
