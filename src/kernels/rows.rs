//! Row kernels: LayerNorm and RMSNorm over the last axis, written once over
//! [`Simd`].
//!
//! # The math
//!
//! LayerNorm: `y = (x - mean) * rstd * gamma + beta`, `rstd = 1/sqrt(var + eps)`,
//! `var` the biased variance of the row. RMSNorm: `y = x * rstd * gamma`,
//! `rstd = 1/sqrt(mean(x²) + eps)`.
//!
//! # Loop shape (LayerNorm): three passes over a row, one from memory
//!
//! 1. The sum of the row (reads memory; the row lands in L1/L2).
//!    `shift = sum / n` rounded to f32 is a centre close to the mean.
//! 2. `s1 = Σ(x - shift)`, `s2 = Σ(x - shift)²` (from cache). This is the
//!    corrected two-pass algorithm: `mean = shift + s1/n` and
//!    `M2 = s2 - s1²/n`, both centred, so the E[x²]−E[x]² cancellation never
//!    happens. If `shift` was poor (`s1²/n > s2/4`), pass 2 reruns once around
//!    the better centre.
//! 3. `y = ((x - shift) * rstd + offset) * gamma + beta` with
//!    `offset = -(s1/n) * rstd` (from cache). `x - shift` is exact whenever x is
//!    within a factor two of the mean (Sterbenz), so the mean reaches the
//!    normalize step as the pair `shift + s1/n`, with twice f32's precision.
//!    That is what keeps rows like `1e4 + N(0,1)` at ~1e-7 error, where any
//!    kernel that rounds the mean to one f32 is stuck at `ulp(mean)/2 / std`.
//!
//! Alternative considered: lane-wise Welford in one pass. Its running mean is
//! rounded to f32 at every step, so on `1e4 + N(0,1)` its M2 carries
//! ~ulp(1e4)/σ relative noise and the output error is ~1e-5 before the final
//! mean is even used; and it still needs the extra pass for the low half of
//! the mean. The row's second and third passes come from cache, so they cost
//! compute, not memory traffic. `Moments` (Welford/Chan) is kept for merging
//! statistics across chunks, threads and processes.
//!
//! # Extremes
//!
//! Rows whose sum or sum of squares overflows, or whose sum of squares is
//! tiny, get a scalar look at their largest magnitude; if it is outside
//! `[2^-32, 2^32]` they are computed on `x * 2^k`, an exact rescaling, so squares neither
//! overflow (1e30, f32::MAX) nor underflow (1e-30, subnormals); `rstd` and
//! `eps` are carried in f64 and the scale is folded back in the saved
//! statistics. A row holding NaN or ±inf becomes all NaN. A constant row
//! (detected when the variance vanishes against rounding) has variance 0
//! exactly and outputs `beta`. Pass 1 used to track min and max for these
//! decisions; moving them to scalar checks on the rare rows that need them
//! took two of the ~12 vector operations per element off the hot path.
//!
//! # Determinism
//!
//! Reductions use [`LANES`]-wide vectors, four accumulators, zero-neutral
//! tails and the fixed tree of [`hsum`]; the per-row scalars are computed in
//! f64 with correctly rounded operations. Every ISA therefore produces the same
//! bits, and since rows are independent, so does every thread count.

use super::RowJob;
use crate::moments::Moments;
use crate::simd::{LANES, Simd, hsum, lane_mask, load_padded, store_partial};

/// Rows with a largest magnitude in this range run unscaled.
pub(crate) const SAFE_MIN: f32 = 1.0 / 4_294_967_296.0; // 2^-32
pub(crate) const SAFE_MAX: f32 = 4_294_967_296.0; // 2^32

/// Chunks per block of the two-level sums below: lane accumulators restart
/// every `BLOCK_CHUNKS * LANES` elements and are folded into running totals,
/// so each lane's rounding error grows with ~(block + blocks) additions rather
/// than n / 64 (measured on 4096-long rows of 1e4 + N(0,1): M2 relative error
/// 3.5e-7 with one level, see README).
pub(crate) const BLOCK_CHUNKS: usize = 32;

/// What one reduction pass adds up per chunk: `N` vectors of terms.
///
/// A trait with `#[inline(always)]` methods rather than a closure: closures
/// are separate functions compiled without the caller's `#[target_feature]`s,
/// and unless LLVM happens to inline them, every intrinsic inside becomes an
/// out-of-line call (measured 5-15x slower). Kernel code holds no closures.
trait Terms<S: Simd, const N: usize> {
    /// The terms of one chunk; `chunk` is its elements, fewer than `LANES`
    /// only for the zero-padded tail (padding lanes must give 0).
    fn terms(&mut self, s: S, v: S::V, chunk: &[f32]) -> [S::V; N];
}

#[inline(always)]
fn accumulate<S: Simd, const N: usize>(s: S, acc: &mut [[S::V; 4]; N], k: usize, t: [S::V; N]) {
    for i in 0..N {
        acc[i][k] = s.add(acc[i][k], t[i]);
    }
}

/// Sums the terms of every `LANES`-wide chunk of `x` into `N` sums.
///
/// The order of additions is fixed: four accumulators take chunks round-robin
/// inside a block of [`BLOCK_CHUNKS`]; blocks fold into totals in order; the
/// short tail chunk (zero-padded) goes to the next accumulator in turn; then
/// `(t0 + t1) + (t2 + t3)` and [`hsum`].
#[inline(always)]
fn reduce_row<S: Simd, const N: usize>(s: S, x: &[f32], pass: &mut impl Terms<S, N>) -> [f32; N] {
    let zero = s.splat(0.0);
    let mut total = [[zero; 4]; N];
    let mut acc = [[zero; 4]; N];
    let (chunks, tail) = x.as_chunks::<LANES>();
    let mut blocks = chunks.chunks_exact(BLOCK_CHUNKS);
    for block in &mut blocks {
        for quad in block.as_chunks::<4>().0 {
            for (k, c) in quad.iter().enumerate() {
                let t = pass.terms(s, s.load(c), c);
                accumulate(s, &mut acc, k, t);
            }
        }
        for i in 0..N {
            for k in 0..4 {
                total[i][k] = s.add(total[i][k], acc[i][k]);
                acc[i][k] = zero;
            }
        }
    }
    let rest = blocks.remainder();
    for (j, c) in rest.iter().enumerate() {
        let t = pass.terms(s, s.load(c), c);
        accumulate(s, &mut acc, j % 4, t);
    }
    if !tail.is_empty() {
        let t = pass.terms(s, load_padded(s, tail, 0.0), tail);
        accumulate(s, &mut acc, rest.len() % 4, t);
    }
    let mut out = [0.0; N];
    for i in 0..N {
        let mut t = [zero; 4];
        for k in 0..4 {
            t[k] = s.add(total[i][k], acc[i][k]);
        }
        out[i] = hsum(s.to_array(s.add(s.add(t[0], t[1]), s.add(t[2], t[3]))));
    }
    out
}

/// Pass 1 of LayerNorm: the plain sum, for a centre close to the mean.
struct Sum;

impl<S: Simd> Terms<S, 1> for Sum {
    #[inline(always)]
    fn terms(&mut self, _s: S, v: S::V, _chunk: &[f32]) -> [S::V; 1] {
        [v]
    }
}

/// Pass 1 of RMSNorm: the squares.
struct SumSquares;

impl<S: Simd> Terms<S, 1> for SumSquares {
    #[inline(always)]
    fn terms(&mut self, s: S, v: S::V, _chunk: &[f32]) -> [S::V; 1] {
        [s.mul(v, v)]
    }
}

/// Pass 2: `d = x*scale - shift` (`x - shift` unless SCALED) and `d²`.
struct Centered<S: Simd, const SCALED: bool> {
    scale: S::V,
    shift: S::V,
}

impl<S: Simd, const SCALED: bool> Terms<S, 2> for Centered<S, SCALED> {
    #[inline(always)]
    fn terms(&mut self, s: S, v: S::V, chunk: &[f32]) -> [S::V; 2] {
        let v = if SCALED { s.mul(v, self.scale) } else { v };
        let mut d = s.sub(v, self.shift);
        if chunk.len() < LANES {
            // Padding lanes would centre to -shift: mask them to zero.
            d = s.mul(d, lane_mask(s, chunk.len()));
        }
        [d, s.mul(d, d)]
    }
}

/// Pass 2: `(Σd, Σd²)` with `d = x*scale - shift` (`x - shift` unless SCALED).
#[inline(always)]
fn centered_sums<S: Simd, const SCALED: bool>(
    s: S,
    x: &[f32],
    scale: f32,
    shift: f32,
) -> (f32, f32) {
    let mut pass = Centered::<S, SCALED> {
        scale: s.splat(scale),
        shift: s.splat(shift),
    };
    let [s1, s2] = reduce_row(s, x, &mut pass);
    (s1, s2)
}

/// The per-row constants of `y = ((x*scale - shift) * rstd + offset) * gamma + beta`,
/// and the statistics saved for a backward pass (in the input's units).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowAffine {
    /// `false`: the row holds NaN or ±inf and its output is all NaN.
    pub finite: bool,
    /// A power of two; 1.0 unless the row's magnitudes are extreme.
    pub scale: f32,
    /// High half of the (scaled) mean; 0 for RMSNorm.
    pub shift: f32,
    pub rstd: f32,
    /// `-(low half of the scaled mean) * rstd`; 0 for RMSNorm.
    pub offset: f32,
    pub saved_mean: f32,
    pub saved_rstd: f32,
    /// Exact moments of the row (for `row_moments`).
    pub moments: Moments,
}

impl RowAffine {
    fn non_finite(n: usize) -> Self {
        RowAffine {
            finite: false,
            scale: 1.0,
            shift: 0.0,
            rstd: f32::NAN,
            offset: 0.0,
            saved_mean: f32::NAN,
            saved_rstd: f32::NAN,
            moments: Moments {
                count: n as u64,
                mean: f64::NAN,
                m2: f64::NAN,
            },
        }
    }
}

/// A power of two that brings `amax` into `[1, 2)`, clamped to what f32 can
/// represent (`2^±126`), for rows outside the safe range.
pub(crate) fn rescale_for(amax: f32) -> f32 {
    let exp = (amax.to_bits() >> 23) as i32 - 127; // subnormals give -127
    f32::from_bits((((-exp).clamp(-126, 126) + 127) as u32) << 23)
}

fn has_non_finite(x: &[f32]) -> bool {
    x.iter().any(|v| !v.is_finite())
}

fn abs_max(x: &[f32]) -> f32 {
    x.iter().fold(0.0f32, |m, v| m.max(v.abs()))
}

/// Sums of squares below this may have lost terms to underflow (squares of
/// values under 2^-63 are subnormal): such rows get their magnitude checked
/// and, if tiny, are rescaled. Above it, anything that underflowed is
/// negligible.
pub(crate) const TINY_SUM_SQ: f32 = 1.0 / 1_152_921_504_606_846_976.0; // 2^-60

/// Whether every value equals the first (-0 and +0 count as equal).
fn is_constant(x: &[f32]) -> bool {
    x.iter().all(|&v| v == x[0])
}

impl RowAffine {
    /// A constant row: variance exactly 0, output exactly `beta`.
    fn constant(n: usize, value: f32, eps: f32) -> Self {
        // `+ 0.0` turns -0 into +0, so the mean does not depend on which zero
        // came first, and makes eps = -0.0 (which passes the eps check) act as +0.
        let mean = value + 0.0;
        let rstd = 1.0 / (eps as f64 + 0.0).sqrt();
        RowAffine {
            finite: true,
            scale: 1.0,
            shift: mean,
            rstd: rstd as f32,
            offset: 0.0,
            saved_mean: mean,
            saved_rstd: rstd as f32,
            moments: Moments {
                count: n as u64,
                mean: mean as f64,
                m2: 0.0,
            },
        }
    }
}

/// Statistics of one LayerNorm row (passes 1 and 2) and its affine constants.
///
/// The common case is two vector passes (a sum, then centred sums) and a few
/// f64 operations. Rare rows take scalar detours: a non-finite sum (NaN/inf
/// in the row, or overflow), a tiny or overflowing sum of squares (magnitudes
/// outside `[2^-32, 2^32]`: rescale by a power of two), a centre far from the
/// mean (recentre once), or a variance that vanishes against rounding
/// (check for a constant row).
#[inline(always)]
pub(crate) fn layer_norm_stats<S: Simd>(s: S, x: &[f32], eps: f32) -> RowAffine {
    let n = x.len();
    let nf = n as f64;
    let [sum] = reduce_row(s, x, &mut Sum);
    if !sum.is_finite() && has_non_finite(x) {
        return RowAffine::non_finite(n);
    }
    // From here on every value is finite.
    let mut scale = 1.0f32;
    let (mut shift, mut s1, mut s2) = (0.0f32, 0.0f32, f32::INFINITY);
    if sum.is_finite() {
        shift = (sum as f64 / nf) as f32;
        (s1, s2) = centered_sums::<S, false>(s, x, 1.0, shift);
    }
    if !s2.is_finite() || s2 < TINY_SUM_SQ {
        let amax = abs_max(x);
        if amax != 0.0 && !(SAFE_MIN..=SAFE_MAX).contains(&amax) {
            scale = rescale_for(amax);
            let (scaled_sum, _) = centered_sums::<S, true>(s, x, scale, 0.0);
            shift = (scaled_sum as f64 / nf) as f32;
            (s1, s2) = centered_sums::<S, true>(s, x, scale, shift);
        }
    }
    let scaled = scale != 1.0;
    // A centre far from the mean (relative to the spread) would make
    // s2 - s1²/n cancel: recentre once.
    if (s1 as f64) * (s1 as f64) / nf > 0.25 * s2 as f64 {
        shift = (shift as f64 + s1 as f64 / nf) as f32;
        (s1, s2) = if scaled {
            centered_sums::<S, true>(s, x, scale, shift)
        } else {
            centered_sums::<S, false>(s, x, 1.0, shift)
        };
    }
    let mean_lo = s1 as f64 / nf;
    let m2 = (s2 as f64 - s1 as f64 * mean_lo).max(0.0);
    // A variance lost in rounding: exactly 0 if the row is constant.
    if m2 <= s2 as f64 * (1.0 / 1_048_576.0) && is_constant(x) {
        return RowAffine::constant(n, x[0], eps);
    }
    let scale64 = scale as f64;
    let rstd = 1.0 / (m2 / nf + eps as f64 * scale64 * scale64).sqrt();
    let mean = (shift as f64 + mean_lo) / scale64;
    RowAffine {
        finite: true,
        scale,
        shift,
        rstd: rstd as f32,
        offset: (-mean_lo * rstd) as f32,
        saved_mean: mean as f32,
        saved_rstd: (rstd * scale64) as f32,
        moments: Moments {
            count: n as u64,
            mean,
            m2: m2 / (scale64 * scale64),
        },
    }
}

/// Statistics of one RMSNorm row (pass 1, and a rescaled pass for rows of
/// extreme magnitude) and its affine constants.
#[inline(always)]
pub(crate) fn rms_norm_stats<S: Simd>(s: S, x: &[f32], eps: f32) -> RowAffine {
    let n = x.len();
    let nf = n as f64;
    let [mut sum_sq] = reduce_row(s, x, &mut SumSquares);
    if !sum_sq.is_finite() && has_non_finite(x) {
        return RowAffine::non_finite(n);
    }
    let mut scale = 1.0;
    if !sum_sq.is_finite() || sum_sq < TINY_SUM_SQ {
        let amax = abs_max(x);
        if amax != 0.0 && !(SAFE_MIN..=SAFE_MAX).contains(&amax) {
            scale = rescale_for(amax);
            (_, sum_sq) = centered_sums::<S, true>(s, x, scale, 0.0);
        }
    }
    let scale64 = scale as f64;
    let rstd = 1.0 / (sum_sq as f64 / nf + eps as f64 * scale64 * scale64).sqrt();
    RowAffine {
        finite: true,
        scale,
        shift: 0.0,
        rstd: rstd as f32,
        offset: 0.0,
        saved_mean: 0.0,
        saved_rstd: (rstd * scale64) as f32,
        moments: Moments {
            count: n as u64,
            mean: f64::NAN,
            m2: f64::NAN,
        },
    }
}

/// Pass 3: writes `y = ((x*scale - shift) * rstd + offset) * gamma + beta`
/// (the terms switched off by the const parameters are skipped, not computed
/// with neutral values). `src = None` reads `dst` (in place).
///
/// With `stream`, the body is stored with non-temporal stores from the first
/// 64-byte boundary of `dst`; results do not depend on that split since the
/// map is element-wise. `next` is the following row, prefetched one cache
/// line per chunk so that its read from memory overlaps this row's writes.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn normalize_row<
    S: Simd,
    const SCALED: bool,
    const CENTERED: bool,
    const GAMMA: bool,
    const BETA: bool,
>(
    s: S,
    src: Option<&[f32]>,
    dst: &mut [f32],
    a: &RowAffine,
    gamma: &[f32],
    beta: &[f32],
    stream: bool,
    next: Option<&[f32]>,
) {
    let k = AffineConsts::<S> {
        scale: s.splat(a.scale),
        shift: s.splat(a.shift),
        rstd: s.splat(a.rstd),
        offset: s.splat(a.offset),
    };
    let n = dst.len();
    let head = if stream {
        ((64 - dst.as_ptr() as usize % 64) % 64 / 4).min(n)
    } else {
        0
    };
    if head > 0 {
        partial_chunk::<S, SCALED, CENTERED, GAMMA, BETA>(s, &k, src, dst, gamma, beta, 0, head);
    }
    let body_len = (n - head) / LANES * LANES;
    let range = head..head + body_len;
    let (body, _) = dst[range.clone()].as_chunks_mut::<LANES>();
    // Chunked views of the other operands, each exactly as long as `body`
    // (or empty when absent), so the loops below index without checks.
    let gs = if GAMMA {
        gamma[range.clone()].as_chunks::<LANES>().0
    } else {
        &[]
    };
    let bs = if BETA {
        beta[range.clone()].as_chunks::<LANES>().0
    } else {
        &[]
    };
    let next = next.map(|next| next[range.clone()].as_chunks::<LANES>().0);
    let xs = src.map(|src| src[range].as_chunks::<LANES>().0);
    match (xs, stream) {
        (Some(xs), false) => body_loop::<S, SCALED, CENTERED, GAMMA, BETA, false>(
            s,
            &k,
            Some(xs),
            body,
            gs,
            bs,
            next,
        ),
        (Some(xs), true) => {
            body_loop::<S, SCALED, CENTERED, GAMMA, BETA, true>(s, &k, Some(xs), body, gs, bs, next)
        }
        (None, false) => {
            body_loop::<S, SCALED, CENTERED, GAMMA, BETA, false>(s, &k, None, body, gs, bs, next)
        }
        (None, true) => {
            body_loop::<S, SCALED, CENTERED, GAMMA, BETA, true>(s, &k, None, body, gs, bs, next)
        }
    }
    let done = head + body_len;
    if done < n {
        partial_chunk::<S, SCALED, CENTERED, GAMMA, BETA>(
            s,
            &k,
            src,
            dst,
            gamma,
            beta,
            done,
            n - done,
        );
    }
}

/// The aligned body of [`normalize_row`]: whole chunks, `xs = None` reading
/// `body` in place. The match on `xs` is per chunk but loop-invariant; the
/// store kind is a const so the streaming loop carries no flag.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn body_loop<
    S: Simd,
    const SCALED: bool,
    const CENTERED: bool,
    const GAMMA: bool,
    const BETA: bool,
    const STREAM: bool,
>(
    s: S,
    k: &AffineConsts<S>,
    xs: Option<&[[f32; LANES]]>,
    body: &mut [[f32; LANES]],
    gs: &[[f32; LANES]],
    bs: &[[f32; LANES]],
    next: Option<&[[f32; LANES]]>,
) {
    let n = body.len();
    let zero = s.splat(0.0);
    // Equal lengths, stated once so the indexing below needs no checks.
    let xs = xs.map(|xs| &xs[..n]);
    let gs = if GAMMA { &gs[..n] } else { gs };
    let bs = if BETA { &bs[..n] } else { bs };
    let next = next.map(|next| &next[..n]);
    for j in 0..n {
        if let Some(next) = next {
            s.prefetch(&next[j][0]);
        }
        let x = match xs {
            Some(xs) => s.load(&xs[j]),
            None => s.load(&body[j]),
        };
        let g = if GAMMA { s.load(&gs[j]) } else { zero };
        let b = if BETA { s.load(&bs[j]) } else { zero };
        let y = affine::<S, SCALED, CENTERED, GAMMA, BETA>(s, k, x, g, b);
        if STREAM {
            s.store_stream(&mut body[j], y)
        } else {
            s.store(&mut body[j], y)
        }
    }
}

/// A row's constants, splatted once.
struct AffineConsts<S: Simd> {
    scale: S::V,
    shift: S::V,
    rstd: S::V,
    offset: S::V,
}

/// `((x*scale - shift) * rstd + offset) * gamma + beta` on one vector.
#[inline(always)]
fn affine<
    S: Simd,
    const SCALED: bool,
    const CENTERED: bool,
    const GAMMA: bool,
    const BETA: bool,
>(
    s: S,
    k: &AffineConsts<S>,
    x: S::V,
    g: S::V,
    b: S::V,
) -> S::V {
    let mut t = if SCALED { s.mul(x, k.scale) } else { x };
    if CENTERED {
        t = s.sub(t, k.shift);
    }
    t = s.mul(t, k.rstd);
    if CENTERED {
        t = s.add(t, k.offset);
    }
    if GAMMA {
        t = s.mul(t, g);
    }
    if BETA {
        t = s.add(t, b);
    }
    t
}

/// One short chunk at `[i, i + len)`, `len < LANES`: padded loads, partial store.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn partial_chunk<
    S: Simd,
    const SCALED: bool,
    const CENTERED: bool,
    const GAMMA: bool,
    const BETA: bool,
>(
    s: S,
    k: &AffineConsts<S>,
    src: Option<&[f32]>,
    dst: &mut [f32],
    gamma: &[f32],
    beta: &[f32],
    i: usize,
    len: usize,
) {
    let zero = s.splat(0.0);
    let x = match src {
        Some(src) => load_padded(s, &src[i..i + len], 0.0),
        None => load_padded(s, &dst[i..i + len], 0.0),
    };
    let g = if GAMMA {
        load_padded(s, &gamma[i..i + len], 0.0)
    } else {
        zero
    };
    let b = if BETA {
        load_padded(s, &beta[i..i + len], 0.0)
    } else {
        zero
    };
    store_partial(
        s,
        &mut dst[i..i + len],
        affine::<S, SCALED, CENTERED, GAMMA, BETA>(s, k, x, g, b),
    );
}

/// Picks the monomorphized [`normalize_row`] for this row's flags.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn normalize_dispatch<S: Simd, const CENTERED: bool>(
    s: S,
    src: Option<&[f32]>,
    dst: &mut [f32],
    a: &RowAffine,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    stream: bool,
    next: Option<&[f32]>,
) {
    if !a.finite {
        dst.fill(f32::NAN);
        return;
    }
    let (g, b) = (gamma.unwrap_or(&[]), beta.unwrap_or(&[]));
    macro_rules! go {
        ($scaled:literal, $gamma:literal, $beta:literal) => {
            normalize_row::<S, $scaled, CENTERED, $gamma, $beta>(s, src, dst, a, g, b, stream, next)
        };
    }
    match (a.scale != 1.0, gamma.is_some(), beta.is_some()) {
        (false, false, false) => go!(false, false, false),
        (false, true, false) => go!(false, true, false),
        (false, false, true) => go!(false, false, true),
        (false, true, true) => go!(false, true, true),
        (true, false, false) => go!(true, false, false),
        (true, true, false) => go!(true, true, false),
        (true, false, true) => go!(true, false, true),
        (true, true, true) => go!(true, true, true),
    }
}

/// The row loop shared by LayerNorm and RMSNorm: statistics, then normalize,
/// row after row, prefetching the next row while writing this one.
#[inline(always)]
fn norm_rows<S: Simd, const CENTERED: bool>(s: S, job: RowJob<'_>) {
    // Chosen here rather than passed in as a closure: a function item passed
    // as `impl Fn` is called through a shim that lacks the caller's target
    // features, which made every intrinsic in the statistics an out-of-line
    // call (5-15x slower, caught by the bench tool).
    #[inline(always)]
    fn stats<S: Simd, const CENTERED: bool>(s: S, x: &[f32], eps: f32) -> RowAffine {
        if CENTERED {
            layer_norm_stats(s, x, eps)
        } else {
            rms_norm_stats(s, x, eps)
        }
    }
    let RowJob {
        input,
        input_stride,
        output,
        output_stride,
        rows,
        cols,
        weight,
        bias,
        eps,
        mut saved_mean,
        mut saved_rstd,
        stream,
    } = job;
    for r in 0..rows {
        let out_start = r * output_stride;
        let a = match input {
            Some(x) => stats::<S, CENTERED>(s, &x[r * input_stride..r * input_stride + cols], eps),
            None => stats::<S, CENTERED>(s, &output[out_start..out_start + cols], eps),
        };
        let (dst, after) = output[out_start..].split_at_mut(cols);
        let next = if r + 1 < rows {
            match input {
                Some(x) => Some(&x[(r + 1) * input_stride..(r + 1) * input_stride + cols]),
                None => Some(&after[output_stride - cols..][..cols]),
            }
        } else {
            None
        };
        let src = input.map(|x| &x[r * input_stride..r * input_stride + cols]);
        normalize_dispatch::<S, CENTERED>(s, src, dst, &a, weight, bias, stream, next);
        if let Some(m) = saved_mean.as_deref_mut() {
            m[r] = a.saved_mean;
        }
        if let Some(v) = saved_rstd.as_deref_mut() {
            v[r] = a.saved_rstd;
        }
    }
    if stream {
        s.stream_fence();
    }
}

/// LayerNorm over every row of `job`.
#[inline(always)]
pub(crate) fn layer_norm_rows<S: Simd>(s: S, job: RowJob<'_>) {
    norm_rows::<S, true>(s, job)
}

/// RMSNorm over every row of `job` (`bias`, if any, is added after `weight`).
#[inline(always)]
pub(crate) fn rms_norm_rows<S: Simd>(s: S, job: RowJob<'_>) {
    norm_rows::<S, false>(s, job)
}

/// Exact moments of one row (LayerNorm's passes 1 and 2).
#[inline(always)]
pub(crate) fn row_moments<S: Simd>(s: S, x: &[f32]) -> Moments {
    if x.is_empty() {
        return Moments::new();
    }
    layer_norm_stats(s, x, 0.0).moments
}
