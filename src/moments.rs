//! Count, mean and M2 (the sum of squared deviations) of a set of values,
//! with Welford's one-value update and Chan's merge of two sets.
//!
//! Welford: `delta = x - mean; mean += delta / n; m2 += delta * (x - mean)`.
//! Chan: for sets A and B, `delta = mean_B - mean_A`,
//! `mean = mean_A + delta * n_B / n`, `m2 = m2_A + m2_B + delta² * n_A n_B / n`.
//! Both only ever subtract values close to the mean, so they stay accurate
//! where `E[x²] - E[x]²` cancels. Fields are f64: this is the type that
//! crosses threads and processes (SyncBatchNorm-style), where f64 costs
//! nothing and keeps merges of many shards exact enough.
//!
//! The merge is commutative up to rounding but not bit-for-bit associative:
//! merging shards in one fixed order (rank order) gives the same bits on
//! every run.

use crate::Isa;

/// Running statistics of a set of values.
///
/// ```
/// use simdnorm::Moments;
/// let mut a = Moments::new();
/// for x in [1.0, 2.0, 3.0] { a.push(x); }
/// let mut b = Moments::new();
/// for x in [4.0, 5.0] { b.push(x); }
/// let all = a.merge(&b);
/// assert_eq!(all.count, 5);
/// assert_eq!(all.mean, 3.0);
/// assert_eq!(all.variance(false), 2.0);  // biased: m2 / n
/// assert_eq!(all.variance(true), 2.5);   // unbiased: m2 / (n - 1)
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Moments {
    /// Number of values.
    pub count: u64,
    /// Their mean (0 when empty).
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl Moments {
    /// The moments of no values.
    pub const fn new() -> Self {
        Moments {
            count: 0,
            mean: 0.0,
            m2: 0.0,
        }
    }

    /// Adds one value (Welford's update).
    pub fn push(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// The moments of the union of two sets (Chan's merge). The count
    /// saturates at `u64::MAX` rather than wrapping (no real data reaches it).
    pub fn merge(&self, other: &Moments) -> Moments {
        if other.count == 0 {
            return *self;
        }
        if self.count == 0 {
            return *other;
        }
        let (na, nb) = (self.count as f64, other.count as f64);
        let count = self.count.saturating_add(other.count);
        // The true total in f64, so the weights still sum to one if `count`
        // saturated.
        let n = na + nb;
        let delta = other.mean - self.mean;
        Moments {
            count,
            mean: self.mean + delta * (nb / n),
            m2: self.m2 + other.m2 + delta * delta * (na * nb / n),
        }
    }

    /// Variance: `m2 / n` (biased, PyTorch's `unbiased=False`, what
    /// normalization uses) or `m2 / (n - 1)` (unbiased, Bessel's correction).
    /// NaN when there are too few values.
    pub fn variance(&self, unbiased: bool) -> f64 {
        let d = if unbiased {
            self.count as f64 - 1.0
        } else {
            self.count as f64
        };
        if d > 0.0 { self.m2 / d } else { f64::NAN }
    }

    /// The moments of `x`, computed by the vectorized row kernel of the
    /// selected ISA (two passes, centred; see the crate's numeric contract).
    /// Any NaN or infinity makes `mean` and `m2` NaN.
    ///
    /// ```
    /// let m = simdnorm::Moments::of(&[1e4 + 1.0, 1e4 + 2.0, 1e4 + 3.0])?;
    /// assert_eq!(m.mean, 1e4 + 2.0);
    /// assert_eq!(m.m2, 2.0);
    /// # Ok::<(), simdnorm::Error>(())
    /// ```
    pub fn of(x: &[f32]) -> Result<Moments, crate::Error> {
        Self::of_with(x, None)
    }

    /// [`Moments::of`] on a chosen ISA (`None`: the selected one).
    pub fn of_with(x: &[f32], isa: Option<Isa>) -> Result<Moments, crate::Error> {
        Ok((Isa::kernels(isa)?.row_moments)(x))
    }
}
