//! The one equal-width binner. Every mutual-information path (dense rows, dense columns,
//! long-format records, streamed files) bins through [`EqualWidthBins::code`], so their
//! contingency tables, and hence their MI, are bit-identical.
//!
//! Rule, in f64 from the f32 activity of one unit with extremes `min <= max`:
//! `bin = min(floor((x - min) * (bins / (max - min))), bins - 1)`; a constant unit
//! (`max <= min`) puts every sample in bin 0.

/// Equal-width bins of one unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EqualWidthBins {
    base: f64,
    scale: f64,
    last: u32,
}

impl EqualWidthBins {
    /// Bins of a unit with extremes `min` and `max` (`bins >= 1`).
    pub fn new(min: f32, max: f32, bins: usize) -> EqualWidthBins {
        let base = min as f64;
        let scale = if max <= min {
            0.0
        } else {
            bins as f64 / (max as f64 - base)
        };
        EqualWidthBins {
            base,
            scale,
            last: (bins - 1) as u32,
        }
    }

    /// The bin of `x` (`min <= x <= max`). `x >= min` makes the product non-negative, so the
    /// conversion truncates as floor; `as` saturates, and the code vectorizes.
    #[inline(always)]
    pub fn code(&self, x: f32) -> u32 {
        (((x as f64 - self.base) * self.scale) as u32).min(self.last)
    }

    /// One binner per unit from the units' extremes.
    pub fn per_unit(min: &[f32], max: &[f32], bins: usize) -> Vec<EqualWidthBins> {
        min.iter()
            .zip(max)
            .map(|(&lo, &hi)| EqualWidthBins::new(lo, hi, bins))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edges_and_constant_units() {
        let b = EqualWidthBins::new(0.0, 1.0, 10);
        let codes: Vec<u32> = [0.0, 0.1, 0.5, 0.99, 1.0]
            .iter()
            .map(|&x| b.code(x))
            .collect();
        assert_eq!(codes, vec![0, 1, 5, 9, 9]);
        let c = EqualWidthBins::new(3.0, 3.0, 5);
        assert_eq!(c.code(3.0), 0);
        let n = EqualWidthBins::new(-2.0, 2.0, 4);
        let codes: Vec<u32> = [-2.0, -1.0, 0.0, 1.99, 2.0]
            .iter()
            .map(|&x| n.code(x))
            .collect();
        assert_eq!(codes, vec![0, 1, 2, 3, 3]);
    }

    #[test]
    fn matches_the_float64_formula() {
        let (lo, hi, bins) = (-0.37f32, 5.91f32, 7usize);
        let b = EqualWidthBins::new(lo, hi, bins);
        for i in 0..=1000 {
            let x = lo + (hi - lo) * (i as f32 / 1000.0);
            let x = x.clamp(lo, hi);
            let expect =
                (((x as f64 - lo as f64) * (bins as f64 / (hi as f64 - lo as f64))).floor() as u32)
                    .min(bins as u32 - 1);
            assert_eq!(b.code(x), expect, "x={x}");
        }
    }
}
