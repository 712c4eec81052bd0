//! Single-unit importance: every pooled unit ablated alone, by the walk's sparse propagation.

use super::*;

/// Correct count, summed cross-entropy and per-class correct counts `(n_units, n_classes)`
/// with each pooled unit ablated alone. `n_classes` sizes the per-class table (labels must
/// lie below it and below the number of logits).
pub fn mlp_importance(walk: &Walk<'_>, n_classes: usize) -> KernelResult<Importance> {
    let chain = prepare(walk)?;
    if let Some(bad) = chain.labels.iter().find(|&&y| y >= n_classes) {
        return Err(value(format!(
            "label {bad} is outside 0..{n_classes}: n_classes must exceed every label"
        )));
    }
    let n = chain.n_units;
    let zoff = z_offsets(&chain);
    let mut correct = vec![0i64; n];
    let mut loss_sum = vec![0f64; n];
    let mut per_class_correct = vec![0i64; n * n_classes];
    #[cfg(target_arch = "x86_64")]
    let avx2 = has_avx2();
    let blocks = out_blocks(&chain.out, chain.padded);
    let ctx = Ctx {
        chain: &chain,
        blocks: &blocks,
        h0: walk.h0,
        zoff: &zoff,
        n_classes,
    };
    ordered_chunks(
        walk.n_samples.div_ceil(CHUNK),
        16,
        |c| {
            let samples = c * CHUNK..((c + 1) * CHUNK).min(walk.n_samples);
            #[cfg(target_arch = "x86_64")]
            if avx2 {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                return unsafe { importance_chunk_avx2(&ctx, samples) };
            }
            importance_chunk_portable(&ctx, samples)
        },
        |part| {
            for (acc, v) in correct.iter_mut().zip(&part.correct) {
                *acc += v;
            }
            for (acc, v) in loss_sum.iter_mut().zip(&part.loss_sum) {
                *acc += v;
            }
            for (acc, v) in per_class_correct.iter_mut().zip(&part.per_class_correct) {
                *acc += v;
            }
        },
    );
    Ok(Importance {
        correct,
        loss_sum,
        per_class_correct,
    })
}

struct Ctx<'a> {
    chain: &'a Chain,
    blocks: &'a [f64],
    h0: &'a [f32],
    zoff: &'a [usize],
    n_classes: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn importance_chunk_avx2(ctx: &Ctx<'_>, samples: std::ops::Range<usize>) -> Importance {
    by_width!(ctx.chain.padded, importance_chunk, Avx2, (ctx, samples))
}

fn importance_chunk_portable(ctx: &Ctx<'_>, samples: std::ops::Range<usize>) -> Importance {
    by_width!(ctx.chain.padded, importance_chunk, Portable, (ctx, samples))
}

#[inline(always)]
fn importance_chunk<S: Lanes, const P: usize>(
    ctx: &Ctx<'_>,
    samples: std::ops::Range<usize>,
) -> Importance {
    let chain = ctx.chain;
    let (depth, n0, p) = (chain.depth(), chain.widths[0], chain.padded);
    let n = chain.n_units;
    let maps = Maps {
        hidden: &chain.hidden,
        out: &chain.out,
        blocks: ctx.blocks,
        padded: p,
    };
    let mut part = Importance {
        correct: vec![0; n],
        loss_sum: vec![0.0; n],
        per_class_correct: vec![0; n * ctx.n_classes],
    };
    let mut z = vec![0f32; ctx.zoff[depth]];
    let mut acc = Vec::new();
    let mut base = State::new(chain);
    let mut trial = State::new(chain);
    for i in samples {
        let label = chain.labels[i];
        let h0 = &ctx.h0[i * n0..(i + 1) * n0];
        forward(chain, h0, &mut z, &mut base.logits, &mut acc);
        base.a[0].copy_from_slice(h0);
        for m in 1..depth {
            base.z[m].copy_from_slice(&z[ctx.zoff[m]..ctx.zoff[m] + chain.widths[m]]);
            for (a, &zk) in base.a[m].iter_mut().zip(&base.z[m]) {
                *a = zk.max(0.0);
            }
        }
        let (base_hit, base_loss) = score(&base.logits, chain.n_classes, label, &mut base.scratch);
        for (s, &layer) in chain.sites.iter().enumerate() {
            let fill = &chain.fills[s];
            // this site's activations read, the ones after it written (or borrowed mutably)
            let (before, after) = base.a.split_at_mut(layer + 1);
            for (j, (&old, &f)) in before[layer].iter().zip(fill).enumerate() {
                let (hit, l) = if old == f {
                    (base_hit, base_loss)
                } else {
                    let d = f as f64 - old as f64;
                    trial.logits.copy_from_slice(&base.logits);
                    if layer + 1 == depth {
                        axpy64(&mut trial.logits, d, &chain.out[j * p..(j + 1) * p]);
                    } else if layer + 2 == depth {
                        // The common case, one hidden layer between the unit and the logits:
                        // scan the next layer's changes without writing anything.
                        let nm = chain.widths[layer + 1];
                        S::scan_out_blocked::<true, false, P>(
                            &mut base.z[layer + 1],
                            d as f32,
                            &chain.hidden[layer][j * nm..(j + 1) * nm],
                            &mut after[0],
                            0,
                            ctx.blocks,
                            &chain.out,
                            &mut trial.logits,
                        );
                    } else {
                        for m in layer + 1..depth {
                            trial.z[m].copy_from_slice(&base.z[m]);
                            trial.a[m].copy_from_slice(&after[m - layer - 1]);
                        }
                        propagate::<S, P>(&maps, layer, j, d, &mut trial);
                    }
                    score(&trial.logits, chain.n_classes, label, &mut trial.scratch)
                };
                let u = chain.offsets[s] + j;
                part.correct[u] += hit as i64;
                part.loss_sum[u] += l;
                part.per_class_correct[u * ctx.n_classes + label] += hit as i64;
            }
        }
    }
    part
}
