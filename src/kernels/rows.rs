//! Row kernels: LayerNorm and RMSNorm over the last axis, written once over
//! [`Simd`].
//!
//! # The math
//!
//! LayerNorm: `y = (x - mean) * rstd * gamma + beta`, `rstd = 1/sqrt(var + eps)`,
//! `var` the biased variance of the row. RMSNorm: `y = x * rstd * gamma`,
//! `rstd = 1/sqrt(mean(x²) + eps)`.
//!
//! # Loop shape (LayerNorm): two passes over a row, software-pipelined
//!
//! 1. `shift` = the mean of the row's first `LANES` values, then
//!    `s1 = Σ(x - shift)`, `s2 = Σ(x - shift)²`. This is the corrected
//!    two-pass algorithm with a cheap centre: `mean = shift + s1/n` and
//!    `M2 = s2 - s1²/n`, both centred, so the E[x²]−E[x]² cancellation never
//!    happens. If `shift` was poor (more than one standard deviation off,
//!    `s1²/n > s2/2`: sorted or structured rows), the pass reruns once around
//!    the better centre.
//! 2. `y = ((x - shift) * rstd + offset) * gamma + beta` with
//!    `offset = -(s1/n) * rstd`. `x - shift` is exact whenever x is
//!    within a factor two of the mean (Sterbenz), so the mean reaches the
//!    normalize step as the pair `shift + s1/n`, with twice f32's precision.
//!    That is what keeps rows like `1e4 + N(0,1)` at ~1e-7 error, where any
//!    kernel that rounds the mean to one f32 is stuck at `ulp(mean)/2 / std`.
//!
//! For cache-sized tensors the next row's pass 1 runs inside this row's
//! pass 2 loop (see [`normalize_row`]), so every row after the first costs
//! one loop; measured against the three separate passes this replaced
//! (a plain sum for the centre, the centred sums, the normalize step):
//! LayerNorm [128, 768] 25.4 -> 15.8 µs and [512, 1024] 113 -> 81 µs at one
//! thread (medians of three alternating bench runs). Memory-sized (streamed)
//! tensors keep the passes apart, prefetching the next row while writing
//! this one (see [`norm_rows`] and [`body_loop`]); on ISAs without a
//! prefetch, rows with weight and bias go in batches instead (see
//! [`streamed_rows`]).
//!
//! Alternative considered: lane-wise Welford in one pass. Its running mean is
//! rounded to f32 at every step, so on `1e4 + N(0,1)` its M2 carries
//! ~ulp(1e4)/σ relative noise and the output error is ~1e-5 before the final
//! mean is even used; and it still needs the extra pass for the low half of
//! the mean. The row's second pass comes from cache, so it costs compute,
//! not memory traffic. `Moments` (Welford/Chan) is kept for merging
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

    /// `acc + t`, the add of every term into its accumulator.
    #[inline(always)]
    fn add(&self, s: S, acc: S::V, t: S::V) -> S::V {
        s.add(acc, t)
    }
}

#[inline(always)]
fn accumulate<S: Simd, const N: usize>(
    s: S,
    pass: &impl Terms<S, N>,
    acc: &mut [[S::V; 4]; N],
    k: usize,
    t: [S::V; N],
) {
    for i in 0..N {
        acc[i][k] = pass.add(s, acc[i][k], t[i]);
    }
}

/// Adds the terms of up to four chunks to accumulators `0, 1, ...` in turn.
///
/// Every accumulator index is a constant here: an index computed at run time
/// (`j % 4`, or an `enumerate` LLVM did not unroll) put the accumulators in
/// a stack array, and each add then waited on a store and a reload (measured:
/// ~17 cycles per 16 floats for LayerNorm on [128, 768], ~2x what the
/// arithmetic needs).
#[inline(always)]
fn accumulate_chunks<S: Simd, const N: usize>(
    s: S,
    acc: &mut [[S::V; 4]; N],
    chunks: &[[f32; LANES]],
    pass: &mut impl Terms<S, N>,
) {
    // A function, not a closure, to stay inside the caller's target features.
    #[inline(always)]
    fn add<S: Simd, const N: usize>(
        s: S,
        acc: &mut [[S::V; 4]; N],
        pass: &mut impl Terms<S, N>,
        k: usize,
        c: &[f32; LANES],
    ) {
        let t = pass.terms(s, s.load(c), c);
        accumulate(s, pass, acc, k, t);
    }
    match chunks {
        [] => {}
        [c0] => add(s, acc, pass, 0, c0),
        [c0, c1] => {
            add(s, acc, pass, 0, c0);
            add(s, acc, pass, 1, c1);
        }
        [c0, c1, c2] => {
            add(s, acc, pass, 0, c0);
            add(s, acc, pass, 1, c1);
            add(s, acc, pass, 2, c2);
        }
        [c0, c1, c2, c3, ..] => {
            add(s, acc, pass, 0, c0);
            add(s, acc, pass, 1, c1);
            add(s, acc, pass, 2, c2);
            add(s, acc, pass, 3, c3);
        }
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
        for quad in block.chunks_exact(4) {
            accumulate_chunks(s, &mut acc, quad, pass);
        }
        for i in 0..N {
            for k in 0..4 {
                total[i][k] = s.add(total[i][k], acc[i][k]);
                acc[i][k] = zero;
            }
        }
    }
    let rest = blocks.remainder();
    let mut quads = rest.chunks_exact(4);
    for quad in &mut quads {
        accumulate_chunks(s, &mut acc, quad, pass);
    }
    let leftover = quads.remainder();
    if tail.is_empty() {
        accumulate_chunks(s, &mut acc, leftover, pass);
    } else {
        // The zero-padded tail chunk follows the leftover chunks round-robin.
        accumulate_chunks(s, &mut acc, leftover, pass);
        let t = pass.terms(s, load_padded(s, tail, 0.0), tail);
        match leftover.len() {
            0 => accumulate(s, pass, &mut acc, 0, t),
            1 => accumulate(s, pass, &mut acc, 1, t),
            2 => accumulate(s, pass, &mut acc, 2, t),
            _ => accumulate(s, pass, &mut acc, 3, t),
        }
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

/// RMSNorm's statistics pass: the squares.
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
    /// 1.0, hidden from the optimizer (see [`Simd::add_fused`]).
    one: S::V,
}

impl<S: Simd, const SCALED: bool> Centered<S, SCALED> {
    #[inline(always)]
    fn new(s: S, scale: f32, shift: f32) -> Self {
        Centered {
            scale: s.splat(scale),
            shift: s.splat(shift),
            one: s.splat(core::hint::black_box(1.0)),
        }
    }
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

    /// LayerNorm's fused loop (a row's normalize step beside the next row's
    /// centred sums) issues six adds and three multiplies per vector; with
    /// the two accumulator adds on the FMA pipes Zen 4 has four and five.
    /// Measured in one process against the build before (alternating blocks,
    /// medians of 41), LayerNorm at one thread: [128, 768] ~6% faster,
    /// [512, 1024] ~3%. RMSNorm's loop (two or three multiplies, one add per
    /// vector) is multiply-bound and keeps plain adds.
    #[inline(always)]
    fn add(&self, s: S, acc: S::V, t: S::V) -> S::V {
        s.add_fused(t, acc, self.one)
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
    let mut pass = Centered::<S, SCALED>::new(s, scale, shift);
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

/// The centre of a row's first pass: the mean of its first `LANES` values
/// (fewer for shorter rows), rounded to f32. For values drawn around a
/// common mean this lands within ~σ/4 of it, close enough that one centred
/// pass gives both moments; rows where it does not (sorted or structured
/// rows) recentre once, which costs the pass a plain sum used to.
#[inline(always)]
fn head_shift<S: Simd>(s: S, x: &[f32]) -> f32 {
    let head = &x[..x.len().min(LANES)];
    let sum = hsum(s.to_array(load_padded(s, head, 0.0)));
    (sum as f64 / head.len() as f64) as f32
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
    let shift = head_shift(s, x);
    let (s1, s2) = centered_sums::<S, false>(s, x, 1.0, shift);
    layer_norm_finish(s, x, eps, FirstSums { shift, s1, s2 })
}

/// What the statistics pass of a row leaves for [`layer_norm_finish`] or
/// [`rms_norm_finish`]: LayerNorm's centre and `Σ(x - shift)`, `Σ(x - shift)²`;
/// RMSNorm's `Σx²` in `s2` (the others 0).
#[derive(Clone, Copy, Debug)]
struct FirstSums {
    shift: f32,
    s1: f32,
    s2: f32,
}

/// LayerNorm's statistics from the first pass's sums, with the rare detours
/// (non-finite, rescaled, recentred, constant rows) that reread the row.
#[inline(always)]
fn layer_norm_finish<S: Simd>(s: S, x: &[f32], eps: f32, first: FirstSums) -> RowAffine {
    let n = x.len();
    let nf = n as f64;
    let FirstSums {
        mut shift,
        mut s1,
        mut s2,
    } = first;
    if !(s1.is_finite() && s2.is_finite()) && has_non_finite(x) {
        return RowAffine::non_finite(n);
    }
    // From here on every value is finite.
    let mut scale = 1.0f32;
    if !(s1.is_finite() && s2.is_finite()) || s2 < TINY_SUM_SQ {
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
    // s2 - s1²/n cancel: recentre once. `s1²/n > s2/2` means the centre is
    // more than one standard deviation off, where M2 loses at most a factor
    // two of its relative precision (~2e-8 with the blocked sums).
    if (s1 as f64) * (s1 as f64) / nf > 0.5 * s2 as f64 {
        shift = (shift as f64 + s1 as f64 / nf) as f32;
        (s1, s2) = if scaled {
            centered_sums::<S, true>(s, x, scale, shift)
        } else {
            centered_sums::<S, false>(s, x, 1.0, shift)
        };
    }
    // Multiplied by 1/n rather than divided by n: this chain (from the sums
    // to `rstd`) is latency the next row's loop waits on, and a division
    // costs ~13 cycles of it where a product costs 3 (within one ulp of f64,
    // far below f32's). LayerNorm at one thread, measured in one process
    // against the build before (alternating blocks, medians of 41):
    // [128, 768] 4-7% faster, [512, 1024] ~4%.
    let inv_n = 1.0 / nf;
    let mean_lo = s1 as f64 * inv_n;
    let m2 = (s2 as f64 - s1 as f64 * mean_lo).max(0.0);
    // A variance lost in rounding: exactly 0 if the row is constant.
    if m2 <= s2 as f64 * (1.0 / 1_048_576.0) && is_constant(x) {
        return RowAffine::constant(n, x[0], eps);
    }
    let scale64 = scale as f64;
    let rstd = 1.0 / (m2 * inv_n + eps as f64 * scale64 * scale64).sqrt();
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
    let [sum_sq] = reduce_row(s, x, &mut SumSquares);
    rms_norm_finish(s, x, eps, sum_sq)
}

/// RMSNorm's statistics from the first pass's `Σx²`, rescaling rows of
/// extreme magnitude.
#[inline(always)]
fn rms_norm_finish<S: Simd>(s: S, x: &[f32], eps: f32, mut sum_sq: f32) -> RowAffine {
    let n = x.len();
    let nf = n as f64;
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
/// map is element-wise.
///
/// `next` is the following row. With `first = Some(pass)` and a body that
/// starts at the row's first element (no streaming head; the caller fuses
/// only unstreamed rows, which have none), the next row's
/// statistics pass runs in this loop, chunk for chunk beside this row's
/// writes, and its sums come back: the next row's reads from memory overlap
/// this row's writes, as in a copy, and the row costs one loop instead of
/// two. The sums are the same bits as [`reduce_row`] on its own would give
/// (same chunks, same accumulators, same order). Otherwise (`None` back) the
/// next row is prefetched (all of it: see
/// [`body_loop`]) and the caller runs its statistics pass separately.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn normalize_row<
    S: Simd,
    const SCALED: bool,
    const CENTERED: bool,
    const GAMMA: bool,
    const BETA: bool,
    const BATCHED: bool,
    const REV: bool,
    const N: usize,
    T: Terms<S, N>,
>(
    s: S,
    src: Option<&[f32]>,
    dst: &mut [f32],
    a: &RowAffine,
    gamma: &[f32],
    beta: &[f32],
    stream: bool,
    next: Option<&[f32]>,
    first: Option<T>,
) -> Option<[f32; N]> {
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
    let xs = src.map(|src| src[range.clone()].as_chunks::<LANES>().0);
    let mut sums = None;
    match (next, first) {
        (Some(next), Some(inner)) if head == 0 => {
            macro_rules! fused {
                ($stream:literal) => {{
                    let mut pass =
                        WithNormalize::<S, T, SCALED, CENTERED, GAMMA, BETA, $stream, REV> {
                            inner,
                            k: &k,
                            xs,
                            body,
                            gs,
                            bs,
                            j: 0,
                        };
                    reduce_row(s, next, &mut pass)
                }};
            }
            sums = Some(if stream { fused!(true) } else { fused!(false) });
        }
        _ => {
            let next = next.map(|next| next[range].as_chunks::<LANES>().0);
            macro_rules! plain {
                ($xs:expr, $stream:literal) => {
                    body_loop::<S, SCALED, CENTERED, GAMMA, BETA, $stream, BATCHED, REV>(
                        s, &k, $xs, body, gs, bs, next,
                    )
                };
            }
            match (xs, stream) {
                (Some(xs), false) => plain!(Some(xs), false),
                (Some(xs), true) => plain!(Some(xs), true),
                (None, false) => plain!(None, false),
                (None, true) => plain!(None, true),
            }
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
    sums
}

/// The next row's statistics terms, with this row's normalize step riding
/// along: the `j`-th call (chunks come in order) also writes this row's
/// `j`-th chunk. The next row's zero-padded tail is the call after the last
/// whole chunk; this row's tail is left to [`partial_chunk`].
struct WithNormalize<
    'a,
    S: Simd,
    T,
    const SCALED: bool,
    const CENTERED: bool,
    const GAMMA: bool,
    const BETA: bool,
    const STREAM: bool,
    const REV: bool,
> {
    inner: T,
    k: &'a AffineConsts<S>,
    /// `None`: in place, read `body`.
    xs: Option<&'a [[f32; LANES]]>,
    body: &'a mut [[f32; LANES]],
    gs: &'a [[f32; LANES]],
    bs: &'a [[f32; LANES]],
    j: usize,
}

impl<
    S: Simd,
    const N: usize,
    T: Terms<S, N>,
    const SCALED: bool,
    const CENTERED: bool,
    const GAMMA: bool,
    const BETA: bool,
    const STREAM: bool,
    const REV: bool,
> Terms<S, N> for WithNormalize<'_, S, T, SCALED, CENTERED, GAMMA, BETA, STREAM, REV>
{
    #[inline(always)]
    fn terms(&mut self, s: S, v: S::V, chunk: &[f32]) -> [S::V; N] {
        let j = self.j;
        self.j += 1;
        let n = self.body.len();
        if j < n {
            // Walking backward, this row's chunks go last first while the
            // next row's sums keep their order (see `walk_backward`).
            let j = if REV { n - 1 - j } else { j };
            normalize_chunk::<S, SCALED, CENTERED, GAMMA, BETA, STREAM>(
                s, self.k, self.xs, self.body, self.gs, self.bs, j,
            );
        }
        self.inner.terms(s, v, chunk)
    }

    #[inline(always)]
    fn add(&self, s: S, acc: S::V, t: S::V) -> S::V {
        self.inner.add(s, acc, t)
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
    const BATCHED: bool,
    const REV: bool,
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
    // Equal lengths, stated once so the indexing below needs no checks.
    let xs = xs.map(|xs| &xs[..n]);
    let gs = if GAMMA { &gs[..n] } else { gs };
    let bs = if BETA { &bs[..n] } else { bs };
    let next = next.map(|next| &next[..n]);
    // The whole next row, one line per chunk, in page-interleaved order
    // (see `page_interleaved`). In row order, rows of 8192 values with
    // weight and bias prefetched only a quarter of the next row (a whole
    // row was slower on the Zen 4 host, AVX2 by 30-40%); interleaved, the
    // whole row is faster on this host for every row length and both ISAs.
    // A/B, one thread, two alternations, 2026-12-07 (Intel Xeon host):
    // interleaved against in order, RMSNorm [8192, 4096] 12.2 -> 11.3-11.5
    // ms, LayerNorm 13.4-13.7 -> 12.0-12.1 ms; LayerNorm [16384, 8192],
    // whole interleaved row against the quarter, AVX-512 62.0-63.5 -> 47.3-48.4
    // ms, AVX2 70.1-70.2 -> 50.5-53.0 ms, two threads 33.1 -> 28.4 ms.
    // Unlike the copy (see `prefetch_ahead`), this order also won on the
    // Zen 4 host: same A/B against 89f7847, LayerNorm AVX-512 [8192, 4096]
    // 10.4-10.5 -> 9.7-9.8 ms, [16384, 8192] 40.0-41.0 -> 36.9-38.2 ms.
    let pages = n.div_ceil(super::PAGE_CHUNKS).max(1);
    for j in 0..n {
        if let Some(next) = next
            && let Some(line) = next.get(super::page_interleaved(j, pages))
        {
            s.prefetch(&line[0]);
        }
        let j = if REV { n - 1 - j } else { j };
        normalize_chunk::<S, SCALED, CENTERED, GAMMA, BETA, STREAM>(s, k, xs, body, gs, bs, j);
    }
}

/// Chunk `j` of the normalize step: reads `xs[j]` (or `body[j]` in place),
/// the weight and bias chunks that are present, writes `body[j]`. Shared by
/// [`body_loop`] and the fused loop of [`WithNormalize`].
#[inline(always)]
fn normalize_chunk<
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
    j: usize,
) {
    let zero = s.splat(0.0);
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
fn normalize_dispatch<
    S: Simd,
    const CENTERED: bool,
    const BATCHED: bool,
    const REV: bool,
    const N: usize,
    T: Terms<S, N>,
>(
    s: S,
    src: Option<&[f32]>,
    dst: &mut [f32],
    a: &RowAffine,
    gamma: Option<&[f32]>,
    beta: Option<&[f32]>,
    stream: bool,
    next: Option<&[f32]>,
    first: Option<T>,
) -> Option<[f32; N]> {
    if !a.finite {
        dst.fill(f32::NAN);
        return None;
    }
    let (g, b) = (gamma.unwrap_or(&[]), beta.unwrap_or(&[]));
    macro_rules! go {
        ($scaled:literal, $gamma:literal, $beta:literal) => {
            normalize_row::<S, $scaled, CENTERED, $gamma, $beta, BATCHED, REV, N, T>(
                s, src, dst, a, g, b, stream, next, first,
            )
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

/// A row's constants: LayerNorm's (`CENTERED`) or RMSNorm's, from its first
/// pass's sums if they were taken already. Chosen by a const rather than
/// passed in as a closure: a function item passed as `impl Fn` is called
/// through a shim that lacks the caller's target features, which made every
/// intrinsic in the statistics an out-of-line call (5-15x slower, caught by
/// the bench tool).
#[inline(always)]
fn stats<S: Simd, const CENTERED: bool>(
    s: S,
    x: &[f32],
    eps: f32,
    first: Option<FirstSums>,
) -> RowAffine {
    match (CENTERED, first) {
        (true, Some(first)) => layer_norm_finish(s, x, eps, first),
        (true, None) => layer_norm_stats(s, x, eps),
        (false, Some(first)) => rms_norm_finish(s, x, eps, first.s2),
        (false, None) => rms_norm_stats(s, x, eps),
    }
}

/// The row loop shared by LayerNorm and RMSNorm, software-pipelined: each
/// row's normalize loop also runs the next row's statistics pass (see
/// [`normalize_row`]), so a row costs one statistics-only pass only when
/// fusing was not possible for it.
#[inline(always)]
fn norm_rows<S: Simd, const CENTERED: bool, const DESCENDING: bool>(s: S, job: RowJob<'_>) {
    // Row by row below: cache-sized tensors (fused passes), and streamed
    // rows where the next row can be prefetched, or without both parameter
    // rows, or longer than `BATCH_MAX_COLS`.
    // The descending walk is only chosen for unstreamed outputs
    // (`Kernels::row_op`); saying so here as a constant keeps the streamed
    // paths out of its entry points, which halves what they compile.
    if !DESCENDING
        && !S::PREFETCHES
        && job.stream
        && job.rows > 1
        && job.weight.is_some()
        && job.bias.is_some()
        && job.cols <= BATCH_MAX_COLS
    {
        return streamed_rows::<S, CENTERED>(s, job);
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
    let stream = stream && !DESCENDING;
    let mut carried: Option<FirstSums> = None;
    for r in 0..rows {
        let out_start = r * output_stride;
        let a = match input {
            Some(x) => stats::<S, CENTERED>(
                s,
                &x[r * input_stride..r * input_stride + cols],
                eps,
                carried,
            ),
            None => stats::<S, CENTERED>(s, &output[out_start..out_start + cols], eps, carried),
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
        // Streamed (memory-sized) outputs keep separate passes: there the
        // fused loop's reads of the next row stalled its writes (LayerNorm
        // and RMSNorm [8192, 4096] 5-10% slower, with or without prefetching
        // the row after), while prefetching (part of) the next row during
        // this row's writes and summing it afterwards keeps both streams busy.
        let fuse_next = if stream { None } else { next };
        carried = match (CENTERED, fuse_next) {
            (true, Some(nx)) => {
                let shift = head_shift(s, nx);
                let pass = Centered::<S, false>::new(s, 1.0, shift);
                normalize_dispatch::<S, CENTERED, false, DESCENDING, 2, _>(
                    s,
                    src,
                    dst,
                    &a,
                    weight,
                    bias,
                    stream,
                    next,
                    Some(pass),
                )
                .map(|[s1, s2]| FirstSums { shift, s1, s2 })
            }
            (false, Some(_)) => normalize_dispatch::<S, CENTERED, false, DESCENDING, 1, _>(
                s,
                src,
                dst,
                &a,
                weight,
                bias,
                stream,
                next,
                Some(SumSquares),
            )
            .map(|[s2]| FirstSums {
                shift: 0.0,
                s1: 0.0,
                s2,
            }),
            (_, None) => {
                normalize_dispatch::<S, CENTERED, false, DESCENDING, 1, SumSquares>(
                    s, src, dst, &a, weight, bias, stream, next, None,
                );
                None
            }
        };
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

/// Rows per batch of [`streamed_rows`], at most.
const BATCH_ROWS: usize = 8;
/// Input per batch of [`streamed_rows`]: 8 rows of 4096 values, or fewer
/// longer rows (at least 2).
const BATCH_BYTES: usize = 128 * 1024;
/// Columns per block of [`streamed_rows`]' output pass: weight and bias
/// blocks of 4 KiB each stay in L1 while a batch's rows pass them.
const BLOCK_COLS: usize = 1024;

/// Longest rows that take [`streamed_rows`]. Rows of 8192 values (4 per
/// batch) measured no faster batched: LayerNorm [16384, 8192], A/B medians of
/// three, 47.0 -> 49.0 ms at one thread, 32.7 -> 38.3 ms at two (though at two
/// threads the row-by-row loop alone also measured 3-8% apart between two
/// builds that did not change it).
const BATCH_MAX_COLS: usize = 4096;

/// Streamed rows with weight and bias on ISAs without a prefetch, in
/// batches: the statistics of a batch of rows, then its output pass in
/// column blocks, each block over every row of the batch.
///
/// Where [`Simd::PREFETCHES`], row by row with the next row prefetched is
/// faster: LayerNorm, AVX-512, one thread, medians of 4 alternating bench
/// runs (batches against rows), [8192, 4096] 8.84 -> 6.98 ms, ratio to copy
/// 0.60 -> 0.76; [2048, 4096] 1.71 -> 1.43 ms. AVX2 (3 runs) [8192, 4096]
/// 11.0 -> 9.0 ms. The batches were written when the row loop prefetched
/// only a quarter of the next row in order (see [`body_loop`]), and measured faster
/// than that then. Portable still gains from them: [8192, 4096] 15.3 ms in
/// batches, 16.8 ms row by row.
///
/// Row by row, the output pass reads the row, the weight and the bias: at
/// 4096 values, 48 KiB where L1 holds 32, so all three come from L2 and
/// every output line costs three line reads. In blocks, a weight and bias
/// block is read once per batch and stays in L1, so an output line costs
/// about one. Per row the statistics and the affine map are those of the
/// row-by-row loop, so the bits are the same. Measured, LayerNorm, A/B
/// medians of 3-4 alternating bench runs, three sittings: [2048, 4096] 3.75 ->
/// 2.93 and 4.23 -> 3.28 ms at one thread, 1.93 -> 1.79 and 2.42 -> 1.97 ms at
/// two; [8192, 4096] 13.4-14.2 ms against 14.7-14.9 ms at one thread, and at
/// two threads from 8% faster to 5% slower (9.14 -> 8.71, 9.85 -> 9.09,
/// 9.21 -> 9.64 ms).
#[inline(always)]
fn streamed_rows<S: Simd, const CENTERED: bool>(s: S, job: RowJob<'_>) {
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
    let mut consts = [RowAffine::non_finite(0); BATCH_ROWS];
    let batch = (BATCH_BYTES / (cols * 4).max(1)).clamp(2, BATCH_ROWS);
    let mut r0 = 0;
    while r0 < rows {
        let rb = batch.min(rows - r0);
        for (i, a) in consts[..rb].iter_mut().enumerate() {
            let r = r0 + i;
            let x = match input {
                Some(x) => &x[r * input_stride..r * input_stride + cols],
                None => &output[r * output_stride..r * output_stride + cols],
            };
            *a = stats::<S, CENTERED>(s, x, eps, None);
            if let Some(m) = saved_mean.as_deref_mut() {
                m[r] = a.saved_mean;
            }
            if let Some(v) = saved_rstd.as_deref_mut() {
                v[r] = a.saved_rstd;
            }
        }
        let next_r0 = r0 + rb;
        // This batch's rows, and the rest (the next batch, prefetched while
        // this one is written; in place, it is read from `later`).
        let (rows_now, later) = output.split_at_mut((next_r0 * output_stride).min(output.len()));
        let mut c0 = 0;
        while c0 < cols {
            let len = BLOCK_COLS.min(cols - c0);
            let g = weight.map(|w| &w[c0..c0 + len]);
            let b = bias.map(|w| &w[c0..c0 + len]);
            for (i, a) in consts[..rb].iter().enumerate() {
                let r = r0 + i;
                let nr = next_r0 + i;
                let next = if nr >= rows {
                    None
                } else {
                    match input {
                        Some(x) => Some(&x[nr * input_stride + c0..][..len]),
                        None => Some(&later[i * output_stride + c0..][..len]),
                    }
                };
                let src = input.map(|x| &x[r * input_stride + c0..][..len]);
                let dst = &mut rows_now[r * output_stride + c0..][..len];
                normalize_dispatch::<S, CENTERED, true, false, 1, SumSquares>(
                    s, src, dst, a, g, b, stream, next, None,
                );
            }
            c0 += len;
        }
        r0 = next_r0;
    }
    s.stream_fence();
}

/// LayerNorm over every row of `job`.
#[inline(always)]
pub(crate) fn layer_norm_rows<S: Simd>(s: S, job: RowJob<'_>) {
    norm_rows::<S, true, false>(s, job)
}

/// [`layer_norm_rows`] writing each cache-resident row last chunk first
/// (see [`walk_backward`](super::walk_backward)).
#[inline(always)]
pub(crate) fn layer_norm_rows_descending<S: Simd>(s: S, job: RowJob<'_>) {
    norm_rows::<S, true, true>(s, job)
}

/// RMSNorm over every row of `job` (`bias`, if any, is added after `weight`).
#[inline(always)]
pub(crate) fn rms_norm_rows<S: Simd>(s: S, job: RowJob<'_>) {
    norm_rows::<S, false, false>(s, job)
}

/// [`rms_norm_rows`] writing each cache-resident row last chunk first
/// (see [`walk_backward`](super::walk_backward)).
#[inline(always)]
pub(crate) fn rms_norm_rows_descending<S: Simd>(s: S, job: RowJob<'_>) {
    norm_rows::<S, false, true>(s, job)
}

/// Exact moments of one row (LayerNorm's passes 1 and 2).
#[inline(always)]
pub(crate) fn row_moments<S: Simd>(s: S, x: &[f32]) -> Moments {
    if x.is_empty() {
        return Moments::new();
    }
    layer_norm_stats(s, x, 0.0).moments
}
