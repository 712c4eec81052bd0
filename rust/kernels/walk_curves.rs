//! The cumulative walk: each ordering ablates its units one after the other, and every
//! requested level is scored on the way.

use super::*;

/// Exact correct counts and summed cross-entropy `(n_orders, n_levels)` of the cumulative
/// ablation along each ordering (`orders` row-major `(n_orders, n_units)`, each row a
/// permutation of the pooled units) at each of `levels` (sorted, unique, in `0..=n_units`).
pub fn mlp_curves(
    walk: &Walk<'_>,
    orders: &[i64],
    n_orders: usize,
    levels: &[i64],
) -> KernelResult<Curves> {
    let chain = prepare(walk)?;
    let n = chain.n_units;
    check_orders(orders, n_orders, n)?;
    if levels.windows(2).any(|p| p[0] >= p[1]) || levels.iter().any(|&l| l < 0 || l as usize > n) {
        return Err(value(format!(
            "levels must be sorted, unique and within 0..={n} (the number of pooled units)"
        )));
    }
    let n_levels = levels.len();
    let mut correct = vec![0i64; n_orders * n_levels];
    let mut loss_sum = vec![0f64; n_orders * n_levels];
    let Some(&last) = levels.last() else {
        return Ok(Curves { correct, loss_sum });
    };
    let mut slot = vec![usize::MAX; n + 1];
    for (i, &l) in levels.iter().enumerate() {
        slot[l as usize] = i;
    }
    let zoff = z_offsets(&chain);
    // at least 1 so that chunking works for a chain without hidden layers
    let z_len = zoff[chain.depth()].max(1);
    let n0 = chain.widths[0];
    #[cfg(target_arch = "x86_64")]
    let avx2 = has_avx2();
    for block in (0..walk.n_samples).step_by(BLOCK) {
        let bn = BLOCK.min(walk.n_samples - block);
        let h0 = &walk.h0[block * n0..(block + bn) * n0];
        let mut z0 = vec![0f32; bn * z_len];
        let mut logits0 = vec![0f64; bn * chain.padded];
        z0.par_chunks_mut(z_len)
            .zip(logits0.par_chunks_mut(chain.padded))
            .enumerate()
            .for_each_init(Vec::new, |acc, (i, (z, lg))| {
                forward_any(&chain, &h0[i * n0..(i + 1) * n0], z, lg, acc)
            });
        for o in 0..n_orders {
            let plan = Plan::new(&chain, &orders[o * n..(o + 1) * n]);
            let ctx = Ctx {
                chain: &chain,
                plan: &plan,
                h0,
                z0: &z0,
                logits0: &logits0,
                zoff: &zoff,
                labels: &chain.labels[block..block + bn],
                slot: &slot,
                last: last as usize,
                n_levels,
            };
            let row = o * n_levels..(o + 1) * n_levels;
            ordered_chunks(
                bn.div_ceil(CHUNK),
                64,
                |c| {
                    let samples = c * CHUNK..((c + 1) * CHUNK).min(bn);
                    #[cfg(target_arch = "x86_64")]
                    if avx2 {
                        // SAFETY: the CPU has AVX2 and FMA (checked above).
                        return unsafe { walk_chunk_avx2(&ctx, samples) };
                    }
                    walk_chunk_portable(&ctx, samples)
                },
                |(c, l)| {
                    for ((acc, v), (accl, vl)) in correct[row.clone()]
                        .iter_mut()
                        .zip(c)
                        .zip(loss_sum[row.clone()].iter_mut().zip(l))
                    {
                        *acc += v;
                        *accl += vl;
                    }
                },
            );
        }
    }
    Ok(Curves { correct, loss_sum })
}

fn check_orders(orders: &[i64], n_orders: usize, n: usize) -> KernelResult<()> {
    if orders.len() != n_orders * n {
        return Err(shape(format!(
            "orders has {} values, expected n_orders x n_units = {n_orders} x {n}",
            orders.len()
        )));
    }
    let mut seen = vec![usize::MAX; n];
    for (o, row) in orders.chunks_exact(n.max(1)).enumerate().take(n_orders) {
        for &u in row {
            if u < 0 || u as usize >= n || seen[u as usize] == o {
                return Err(value(format!(
                    "ordering {o} is not a permutation of the {n} pooled units (unit {u} is out \
                     of range or repeated)"
                )));
            }
            seen[u as usize] = o;
        }
    }
    Ok(())
}

/// One ordering's view of the chain: units of site layers after the first permuted into
/// their ablation order (so clamped units form a prefix), weights permuted to match.
struct Plan {
    /// Per activation layer, position -> unit (None: identity).
    perm: Vec<Option<Vec<usize>>>,
    hidden: Vec<Vec<f32>>,
    out: Vec<f64>,
    blocks: Vec<f64>,
    /// Per activation layer: fills by position (empty when not a site).
    fills: Vec<Vec<f32>>,
    /// (activation layer, unit for layer 0 / position otherwise) of each step.
    events: Vec<(u32, u32)>,
}

impl Plan {
    fn new(chain: &Chain, order: &[i64]) -> Plan {
        let depth = chain.depth();
        let mut perm: Vec<Option<Vec<usize>>> = vec![None; depth];
        let mut events = Vec::with_capacity(order.len());
        for &u in order {
            let u = u as usize;
            let s = chain.offsets.partition_point(|&off| off <= u) - 1;
            let (layer, unit) = (chain.sites[s], u - chain.offsets[s]);
            if layer == 0 {
                events.push((0, unit as u32));
            } else {
                let p = perm[layer].get_or_insert_with(Vec::new);
                events.push((layer as u32, p.len() as u32));
                p.push(unit);
            }
        }
        let source = |m: usize, i: usize| perm[m].as_ref().map_or(i, |p| p[i]);
        let hidden = (1..depth)
            .map(|m| {
                let (n_in, n_out) = (chain.widths[m - 1], chain.widths[m]);
                let wt = &chain.hidden[m - 1];
                let mut t = vec![0f32; n_in * n_out];
                for (r, dst) in t.chunks_exact_mut(n_out).enumerate() {
                    let src = &wt[source(m - 1, r) * n_out..];
                    for (c, v) in dst.iter_mut().enumerate() {
                        *v = src[source(m, c)];
                    }
                }
                t
            })
            .collect();
        let p = chain.padded;
        let mut out = vec![0f64; chain.out.len()];
        for (r, dst) in out.chunks_exact_mut(p).enumerate() {
            let src = source(depth - 1, r);
            dst.copy_from_slice(&chain.out[src * p..(src + 1) * p]);
        }
        let fills = (0..depth)
            .map(|m| match chain.site_of[m] {
                None => Vec::new(),
                Some(s) => (0..chain.widths[m])
                    .map(|i| chain.fills[s][source(m, i)])
                    .collect(),
            })
            .collect();
        Plan {
            perm,
            hidden,
            blocks: out_blocks(&out, p),
            out,
            fills,
            events,
        }
    }
}

struct Ctx<'a> {
    chain: &'a Chain,
    plan: &'a Plan,
    h0: &'a [f32],
    z0: &'a [f32],
    logits0: &'a [f64],
    zoff: &'a [usize],
    labels: &'a [usize],
    slot: &'a [usize],
    last: usize,
    n_levels: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn walk_chunk_avx2(ctx: &Ctx<'_>, samples: std::ops::Range<usize>) -> (Vec<i64>, Vec<f64>) {
    by_width!(ctx.chain.padded, walk_chunk, Avx2, (ctx, samples))
}

fn walk_chunk_portable(ctx: &Ctx<'_>, samples: std::ops::Range<usize>) -> (Vec<i64>, Vec<f64>) {
    by_width!(ctx.chain.padded, walk_chunk, Portable, (ctx, samples))
}

/// Correct counts and loss sums `(n_levels,)` of one ordering over some samples.
#[inline(always)]
fn walk_chunk<S: Lanes, const P: usize>(
    ctx: &Ctx<'_>,
    samples: std::ops::Range<usize>,
) -> (Vec<i64>, Vec<f64>) {
    let (chain, plan) = (ctx.chain, ctx.plan);
    let (depth, n0, p) = (chain.depth(), chain.widths[0], chain.padded);
    let z_len = ctx.zoff[depth].max(1);
    let maps = Maps {
        hidden: &plan.hidden,
        out: &plan.out,
        blocks: &plan.blocks,
        padded: p,
    };
    let fill0 = &chain.fills[0];
    let mut correct = vec![0i64; ctx.n_levels];
    let mut loss = vec![0f64; ctx.n_levels];
    let mut st = State::new(chain);
    for i in samples {
        let label = ctx.labels[i];
        st.a[0].copy_from_slice(&ctx.h0[i * n0..(i + 1) * n0]);
        let z0 = &ctx.z0[i * z_len..(i + 1) * z_len];
        for m in 1..depth {
            let src = &z0[ctx.zoff[m]..ctx.zoff[m] + chain.widths[m]];
            match &plan.perm[m] {
                None => st.z[m].copy_from_slice(src),
                Some(perm) => {
                    for (z, &u) in st.z[m].iter_mut().zip(perm) {
                        *z = src[u];
                    }
                }
            }
            for (a, &z) in st.a[m].iter_mut().zip(&st.z[m]) {
                *a = z.max(0.0);
            }
            st.cut[m] = 0;
        }
        st.logits.copy_from_slice(&ctx.logits0[i * p..(i + 1) * p]);
        // A step that changes nothing (a unit already at its fill) keeps the last score.
        // (A macro, not a closure: a closure would be compiled without the AVX2 features
        // of this function.)
        let mut last_score: Option<(bool, f64)> = None;
        macro_rules! tally {
            ($level:expr) => {
                let k = ctx.slot[$level];
                if k != usize::MAX {
                    let (hit, l) = match last_score {
                        Some(v) => v,
                        None => {
                            let v = score(&st.logits, chain.n_classes, label, &mut st.scratch);
                            last_score = Some(v);
                            v
                        }
                    };
                    correct[k] += hit as i64;
                    loss[k] += l;
                }
            };
        }
        tally!(0);
        for (t, &(layer, idx)) in plan.events[..ctx.last].iter().enumerate() {
            let (layer, idx) = (layer as usize, idx as usize);
            let fill = if layer == 0 {
                fill0[idx]
            } else {
                st.cut[layer] += 1;
                plan.fills[layer][idx]
            };
            let old = st.a[layer][idx];
            if old != fill {
                st.a[layer][idx] = fill;
                propagate::<S, P>(&maps, layer, idx, fill as f64 - old as f64, &mut st);
                last_score = None;
            }
            tally!(t + 1);
        }
    }
    (correct, loss)
}
