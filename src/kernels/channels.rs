//! Channel kernels: BatchNorm's statistics and its per-channel affine map,
//! written once over [`Simd`].
//!
//! # Statistics
//!
//! - NCHW: each `(n, c)` plane is contiguous. A channel's planes are taken in
//!   units of [`unit_samples`]`(spatial)` consecutive samples (at least 2048
//!   values, so the per-unit scalar work is amortized on small planes); a
//!   unit's exact moments come from the row statistics' algorithm run over
//!   its planes as one sequence of segments feeding the same accumulators
//!   ([`reduce_planes`]: a sum for a centre, then centred sums from cache).
//!   Units are merged with Chan's formula in the fixed tree of [`TreeMerge`].
//! - NHWC: a chunk of `rows` rows (`rows` a multiple of [`LANES`]) is a flat run
//!   of `rows * C` values whose channel pattern repeats every
//!   `period = lcm(C, LANES)` values. Seen as a `[periods, period]` matrix, every
//!   column holds one channel, so column sums are plain vector adds down the
//!   columns (vectorized across channels, tails zero-padded); the columns of a
//!   channel are then added in f64 in ascending order. A sample of rows gives
//!   each channel a centre (`shift`), one pass the centred `Σd`, `Σd²`, rerun
//!   once around a better centre when the first was poor, as for rows.
//!
//! Every lane accumulates its column in row order with rounded adds and no
//! FMA, and every cross-lane step is scalar in a fixed order, so all ISAs give
//! the same bits.
//!
//! # Apply
//!
//! `y = (x - hi) * a + b` with per-channel `hi` (the mean rounded to f32),
//! `a = rstd * gamma` and `b = beta - (mean - hi) * a` (computed in f64 by the
//! operator). NCHW broadcasts one channel's scalars over a plane; NHWC loads
//! `LANES`-wide windows of the channel pattern (`period + LANES` long, so a
//! window never wraps).

// Index loops over channels and lanes read more plainly than zipped iterators here.
#![allow(clippy::needless_range_loop)]

use super::rows::{BLOCK_CHUNKS, SAFE_MAX, SAFE_MIN, TINY_SUM_SQ, rescale_for};
use crate::moments::Moments;
use crate::simd::{LANES, Simd, hsum, lane_mask, load_padded, store_partial};

/// Chan merges of a sequence of moments in one fixed binary tree: blocks of
/// `2^k` consecutive items aligned at multiples of `2^k` are merged first
/// (equivalently: a range splits at the largest power of two below its
/// length, left part first). The tree depends only on the number of items, so
/// the result is the same on every thread count; and a sequence cut into
/// parts that each hold the same power-of-two number of items (the last may
/// hold fewer) gives the same bits when each part is merged by its own tree
/// and the parts are merged by a tree in order.
pub(crate) struct TreeMerge {
    /// Pending complete subtrees: (moments, number of items), sizes strictly
    /// decreasing from the bottom.
    stack: [(Moments, u64); 64],
    depth: usize,
}

impl TreeMerge {
    pub(crate) fn new() -> Self {
        TreeMerge {
            stack: [(Moments::new(), 0); 64],
            depth: 0,
        }
    }

    /// Adds the next item.
    pub(crate) fn push(&mut self, m: Moments) {
        let mut item = (m, 1u64);
        while self.depth > 0 && self.stack[self.depth - 1].1 == item.1 {
            let left = self.stack[self.depth - 1];
            self.depth -= 1;
            item = (left.0.merge(&item.0), left.1 + item.1);
        }
        self.stack[self.depth] = item;
        self.depth += 1;
    }

    /// The merge of every item pushed (right to left over the pending
    /// subtrees, which is the tree's shape).
    pub(crate) fn finish(&self) -> Moments {
        let mut acc = Moments::new();
        for (i, (m, _)) in self.stack[..self.depth].iter().enumerate().rev() {
            acc = if i + 1 == self.depth {
                *m
            } else {
                m.merge(&acc)
            };
        }
        acc
    }
}

/// Values per NCHW statistics unit that amortize its scalar work: a unit is
/// the smallest power-of-two number of samples whose planes hold at least
/// this many values.
const UNIT_VALUES: usize = 2048;

/// Samples per NCHW statistics unit for planes of `spatial` values: the power
/// of two `>= ceil(2048 / spatial)` (1 from `spatial = 2048` on). Depends on
/// `spatial` only.
pub(crate) fn unit_samples(spatial: usize) -> usize {
    UNIT_VALUES.div_ceil(spatial.max(1)).next_power_of_two()
}

/// `[0.0; LANES]` followed by `[1.0; LANES]`: `&ZEROS_THEN_ONES[r..r + LANES]`
/// ends with exactly `r` ones, the mask of an overlapping tail load.
static ZEROS_THEN_ONES: [f32; 2 * LANES] = {
    let mut m = [0.0f32; 2 * LANES];
    let mut i = LANES;
    while i < 2 * LANES {
        m[i] = 1.0;
        i += 1;
    }
    m
};

/// What one reduction pass adds up per vector: `N` vectors of terms.
///
/// A trait with `#[inline(always)]` methods rather than a closure: a closure
/// is compiled as its own function without the caller's `#[target_feature]`s,
/// so unless LLVM inlines it every intrinsic inside becomes an out-of-line
/// call (the row kernels measured 5-15x slower). Kernel code holds no
/// closures around vector code.
trait Terms<S: Simd, const N: usize> {
    /// The terms of `v`, a vector of column block `g` (always 0 for planes).
    /// `mask` is `Some` for a tail vector: lanes where it is 0.0 hold values
    /// counted elsewhere or zero padding and must give 0 terms (multiplying
    /// by the mask does it: those lanes are finite whenever the unit is).
    fn terms(&mut self, s: S, v: S::V, mask: Option<S::V>, g: usize) -> [S::V; N];
}

#[inline(always)]
fn accumulate<S: Simd, const N: usize>(s: S, acc: &mut [S::V; N], t: [S::V; N]) {
    for i in 0..N {
        acc[i] = s.add(acc[i], t[i]);
    }
}

/// Adds one whole chunk's terms to `acc`.
#[inline(always)]
fn add_chunk<S: Simd, const N: usize, T: Terms<S, N>>(
    s: S,
    acc: &mut [S::V; N],
    chunk: &[f32; LANES],
    pass: &mut T,
) {
    let t = pass.terms(s, s.load(chunk), None, 0);
    accumulate(s, acc, t);
}

/// Adds the masked tail vector's terms to `acc`.
#[inline(always)]
fn add_masked<S: Simd, const N: usize, T: Terms<S, N>>(
    s: S,
    acc: &mut [S::V; N],
    v: S::V,
    mask: S::V,
    pass: &mut T,
) {
    let t = pass.terms(s, v, Some(mask), 0);
    accumulate(s, acc, t);
}

/// Sums the terms of a block of `planes` planes of `spatial` values, plane
/// `p` at `x[p * stride..]`, into `N` sums, as one sequence of segments
/// feeding the same four accumulators.
///
/// Fixed order: in each plane, chunk `j` of a run of [`BLOCK_CHUNKS`] goes to
/// accumulator `j % 4` and the accumulators fold into totals after each full
/// run; the plane's last chunks (fewer than a run) go to accumulators
/// `0, 1, ...` in turn and its tail vector to the next one. The tail vector
/// is the plane's last `LANES` values with the already-counted lanes masked
/// (planes of `LANES` values or more), or the whole plane padded with its
/// first value (shorter planes): no partial copies on the hot path, no reads
/// outside the plane. Then `(t0 + t1) + (t2 + t3)` and [`hsum`].
#[inline(always)]
fn reduce_planes<S: Simd, const N: usize, T: Terms<S, N>>(
    s: S,
    x: &[f32],
    planes: usize,
    stride: usize,
    spatial: usize,
    pass: &mut T,
    next: Option<&[f32]>,
) -> [f32; N] {
    let zero = s.splat(0.0);
    // Four accumulators and four totals as separate locals, each index a
    // constant where it is used: held in an array and indexed in loops,
    // LLVM kept them on the stack, and every add waited on a store and a
    // reload. NCHW `[64, 512, 7, 7]` statistics alone, one thread, harness
    // medians: 414-595 -> 310 µs; training in the bench tool, medians of 3
    // alternations: 717 -> 649 µs, `[8, 256, 28, 28]` 448 -> 415 µs.
    let [mut t0, mut t1, mut t2, mut t3] = [[zero; N]; 4];
    let [mut a0, mut a1, mut a2, mut a3] = [[zero; N]; 4];
    let rem = spatial % LANES;
    let short = spatial < LANES;
    let tail_mask = if short {
        lane_mask(s, rem)
    } else {
        let m: &[f32; LANES] = ZEROS_THEN_ONES[rem..rem + LANES]
            .try_into()
            .expect("LANES long");
        s.load(m)
    };
    for p in 0..planes {
        let plane = &x[p * stride..p * stride + spatial];
        // The same plane of the next unit, prefetched one line per chunk.
        let ahead = next.and_then(|n| n.get(p * stride..p * stride + spatial));
        let (chunks, _) = plane.as_chunks::<LANES>();
        let mut runs = chunks.chunks_exact(BLOCK_CHUNKS);
        let mut at = 0;
        for run in &mut runs {
            for quad in run.as_chunks::<4>().0 {
                prefetch_quad(s, ahead, at);
                add_chunk(s, &mut a0, &quad[0], pass);
                add_chunk(s, &mut a1, &quad[1], pass);
                add_chunk(s, &mut a2, &quad[2], pass);
                add_chunk(s, &mut a3, &quad[3], pass);
                at += 4 * LANES;
            }
            fold(s, &mut t0, &mut a0);
            fold(s, &mut t1, &mut a1);
            fold(s, &mut t2, &mut a2);
            fold(s, &mut t3, &mut a3);
        }
        let (quads, left) = runs.remainder().as_chunks::<4>();
        for quad in quads {
            prefetch_quad(s, ahead, at);
            add_chunk(s, &mut a0, &quad[0], pass);
            add_chunk(s, &mut a1, &quad[1], pass);
            add_chunk(s, &mut a2, &quad[2], pass);
            add_chunk(s, &mut a3, &quad[3], pass);
            at += 4 * LANES;
        }
        if let Some(a) = ahead {
            s.prefetch(&a[spatial - 1]);
            for k in 0..left.len() {
                s.prefetch(&a[at + k * LANES]);
            }
        }
        // The last whole chunks go to accumulators 0, 1, 2 and the tail
        // vector to the next.
        let tail = if rem == 0 {
            None
        } else if short {
            Some(load_padded(s, plane, 0.0))
        } else {
            Some(s.load(plane[spatial - LANES..].try_into().expect("LANES long")))
        };
        match (left, tail) {
            ([], None) => {}
            ([], Some(v)) => add_masked(s, &mut a0, v, tail_mask, pass),
            ([c0], tail) => {
                add_chunk(s, &mut a0, c0, pass);
                if let Some(v) = tail {
                    add_masked(s, &mut a1, v, tail_mask, pass);
                }
            }
            ([c0, c1], tail) => {
                add_chunk(s, &mut a0, c0, pass);
                add_chunk(s, &mut a1, c1, pass);
                if let Some(v) = tail {
                    add_masked(s, &mut a2, v, tail_mask, pass);
                }
            }
            ([c0, c1, c2, ..], tail) => {
                add_chunk(s, &mut a0, c0, pass);
                add_chunk(s, &mut a1, c1, pass);
                add_chunk(s, &mut a2, c2, pass);
                if let Some(v) = tail {
                    add_masked(s, &mut a3, v, tail_mask, pass);
                }
            }
        }
    }
    fold(s, &mut t0, &mut a0);
    fold(s, &mut t1, &mut a1);
    fold(s, &mut t2, &mut a2);
    fold(s, &mut t3, &mut a3);
    let mut out = [0.0; N];
    for i in 0..N {
        out[i] = hsum(s.to_array(s.add(s.add(t0[i], t1[i]), s.add(t2[i], t3[i]))));
    }
    out
}

/// `total += acc`, then `acc = 0`.
#[inline(always)]
fn fold<S: Simd, const N: usize>(s: S, total: &mut [S::V; N], acc: &mut [S::V; N]) {
    accumulate(s, total, *acc);
    *acc = [s.splat(0.0); N];
}

/// Prefetches `ahead`'s lines under the four chunks at `at`.
#[inline(always)]
fn prefetch_quad<S: Simd>(s: S, ahead: Option<&[f32]>, at: usize) {
    if let Some(a) = ahead.and_then(|a| a.get(at..at + 4 * LANES)) {
        for k in 0..4 {
            s.prefetch(&a[k * LANES]);
        }
    }
}

/// Pass 1 (planes and chunks): the sum.
struct Sum;

impl<S: Simd> Terms<S, 1> for Sum {
    #[inline(always)]
    fn terms(&mut self, s: S, v: S::V, mask: Option<S::V>, _g: usize) -> [S::V; 1] {
        [match mask {
            Some(m) => s.mul(v, m),
            None => v,
        }]
    }
}

/// Pass 2 over planes: `d = x*scale - shift` (`x - shift` unless SCALED), `d²`.
struct PlaneCentred<S: Simd, const SCALED: bool> {
    scale: S::V,
    shift: S::V,
}

impl<S: Simd, const SCALED: bool> Terms<S, 2> for PlaneCentred<S, SCALED> {
    #[inline(always)]
    fn terms(&mut self, s: S, v: S::V, mask: Option<S::V>, _g: usize) -> [S::V; 2] {
        let v = if SCALED { s.mul(v, self.scale) } else { v };
        let mut d = s.sub(v, self.shift);
        if let Some(m) = mask {
            d = s.mul(d, m);
        }
        [d, s.mul(d, d)]
    }
}

/// `(Σd, Σd²)` over a block of planes, `d = x*scale - shift`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn plane_centred<S: Simd, const SCALED: bool>(
    s: S,
    x: &[f32],
    planes: usize,
    stride: usize,
    spatial: usize,
    scale: f32,
    shift: f32,
    next: Option<&[f32]>,
) -> (f32, f32) {
    let mut pass = PlaneCentred::<S, SCALED> {
        scale: s.splat(scale),
        shift: s.splat(shift),
    };
    let [s1, s2] = reduce_planes(s, x, planes, stride, spatial, &mut pass, next);
    (s1, s2)
}

/// Whether any plane of the block holds NaN or ±inf.
fn planes_non_finite(x: &[f32], planes: usize, stride: usize, spatial: usize) -> bool {
    (0..planes).any(|p| {
        x[p * stride..p * stride + spatial]
            .iter()
            .any(|v| !v.is_finite())
    })
}

/// Largest magnitude in the block's planes.
fn planes_abs_max(x: &[f32], planes: usize, stride: usize, spatial: usize) -> f32 {
    (0..planes).fold(0.0f32, |m, p| {
        x[p * stride..p * stride + spatial]
            .iter()
            .fold(m, |m, v| m.max(v.abs()))
    })
}

/// Whether every value of the block's planes equals the first (-0 == +0).
fn planes_constant(x: &[f32], planes: usize, stride: usize, spatial: usize) -> bool {
    (0..planes).all(|p| {
        x[p * stride..p * stride + spatial]
            .iter()
            .all(|&v| v == x[0])
    })
}

/// Exact moments of one NCHW unit: `planes` planes of `spatial` values, plane
/// `p` at `x[p * stride..]`. The row statistics' algorithm on the planes seen
/// as one sequence: a sum pass for a centre `shift`, then the centred `Σd`,
/// `Σd²` from cache (rerun once around a better centre when the first was
/// poor), mean `shift + Σd/n`, `M2 = Σd² - (Σd)²/n`. The rare units that need
/// it get scalar checks: a non-finite sum looks for NaN/±inf (NaN moments);
/// an overflowing or tiny `Σd²` looks at the largest magnitude, and if it is
/// outside `[2^-32, 2^32]` the unit runs on `x * 2^k`, an exact rescaling; a
/// variance lost in rounding checks for a constant unit (M2 exactly 0).
#[inline(always)]
fn unit_moments<S: Simd>(
    s: S,
    x: &[f32],
    planes: usize,
    stride: usize,
    spatial: usize,
    next: Option<&[f32]>,
) -> Moments {
    let n = planes * spatial;
    let nf = n as f64;
    let [sum] = reduce_planes(s, x, planes, stride, spatial, &mut Sum, None);
    if !sum.is_finite() && planes_non_finite(x, planes, stride, spatial) {
        return Moments {
            count: n as u64,
            mean: f64::NAN,
            m2: f64::NAN,
        };
    }
    // From here on every value is finite.
    let mut scale = 1.0f32;
    let (mut shift, mut s1, mut s2) = (0.0f32, 0.0f32, f32::INFINITY);
    if sum.is_finite() {
        shift = (sum as f64 / nf) as f32;
        (s1, s2) = plane_centred::<S, false>(s, x, planes, stride, spatial, 1.0, shift, next);
    }
    if !s2.is_finite() || s2 < TINY_SUM_SQ {
        let amax = planes_abs_max(x, planes, stride, spatial);
        if amax != 0.0 && !(SAFE_MIN..=SAFE_MAX).contains(&amax) {
            scale = rescale_for(amax);
            let (scaled_sum, _) =
                plane_centred::<S, true>(s, x, planes, stride, spatial, scale, 0.0, None);
            shift = (scaled_sum as f64 / nf) as f32;
            (s1, s2) = plane_centred::<S, true>(s, x, planes, stride, spatial, scale, shift, None);
        }
    }
    let scaled = scale != 1.0;
    // A centre far from the mean (relative to the spread) would make
    // s2 - s1²/n cancel: recentre once.
    if (s1 as f64) * (s1 as f64) / nf > 0.25 * s2 as f64 {
        shift = (shift as f64 + s1 as f64 / nf) as f32;
        (s1, s2) = if scaled {
            plane_centred::<S, true>(s, x, planes, stride, spatial, scale, shift, None)
        } else {
            plane_centred::<S, false>(s, x, planes, stride, spatial, 1.0, shift, None)
        };
    }
    let mean_lo = s1 as f64 / nf;
    let m2 = (s2 as f64 - s1 as f64 * mean_lo).max(0.0);
    // A variance lost in rounding: exactly 0 if the unit is constant.
    if m2 <= s2 as f64 * (1.0 / 1_048_576.0) && planes_constant(x, planes, stride, spatial) {
        // `+ 0.0` turns -0 into +0, whichever zero came first.
        return Moments {
            count: n as u64,
            mean: (x[0] + 0.0) as f64,
            m2: 0.0,
        };
    }
    let scale64 = scale as f64;
    Moments {
        count: n as u64,
        mean: (shift as f64 + mean_lo) / scale64,
        m2: m2 / (scale64 * scale64),
    }
}

/// NCHW statistics for a range of channels: `input` is the whole
/// `[n, channels, spatial]` tensor; channel `first_channel + i` gets its
/// mean and M2 in `mean[i]`, `m2[i]`.
pub(crate) struct PlaneStatsJob<'a> {
    pub input: &'a [f32],
    pub n: usize,
    pub channels: usize,
    pub spatial: usize,
    pub first_channel: usize,
    pub mean: &'a mut [f64],
    pub m2: &'a mut [f64],
}

/// Per-channel moments of a range of channels: each channel's planes in units
/// of [`unit_samples`] consecutive samples (the last may hold fewer), merged
/// in [`TreeMerge`] order. While a unit's centred pass runs from cache, the
/// next unit (of this channel, or the next channel's first) is prefetched, so
/// its sum pass does not wait on memory.
#[inline(always)]
pub(crate) fn plane_moments<S: Simd>(s: S, job: PlaneStatsJob<'_>) {
    let PlaneStatsJob {
        input,
        n,
        channels,
        spatial,
        first_channel,
        mean,
        m2,
    } = job;
    let unit = unit_samples(spatial);
    let stride = channels * spatial;
    let count = mean.len();
    for i in 0..count {
        let base = (first_channel + i) * spatial;
        let mut tree = TreeMerge::new();
        let mut p = 0;
        while p < n {
            let b = unit.min(n - p);
            let next = if p + b < n {
                input.get(base + (p + b) * stride..)
            } else if i + 1 < count {
                input.get(base + spatial..)
            } else {
                None
            };
            tree.push(unit_moments(
                s,
                &input[base + p * stride..],
                b,
                stride,
                spatial,
                next,
            ));
            p += b;
        }
        let m = tree.finish();
        mean[i] = m.mean;
        m2[i] = m.m2;
    }
}

/// Rows of a chunk for `channels` channels (NHWC): about 256 KiB of input, a
/// multiple of [`LANES`] between 16 and 1024. Depends on `channels` only.
///
/// Big enough that each chunk's per-channel scalar work (f64 totals, checks,
/// the merge) is small against its vector work, small enough that the chunk
/// and the next one (prefetched during the centred pass) sit in L2. Measured
/// against 64 KiB chunks (one thread, NHWC training): `[64, 512, 7, 7]`
/// 686 -> 495 µs, `[8, 256, 28, 28]` 549 -> 479 µs.
pub(crate) fn chunk_rows(channels: usize) -> usize {
    ((65536 / channels.max(1)) / LANES * LANES).clamp(LANES, 1024)
}

/// `lcm(channels, LANES)`: the period of the channel pattern of a flat NHWC
/// tensor, a multiple of `LANES`.
pub(crate) fn pattern_period(channels: usize) -> usize {
    let (mut a, mut b) = (channels.max(1), LANES);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    channels.max(1) / a * LANES
}

/// Per-chunk statistics of an NHWC block: `input` is `rows * channels`
/// values; chunk `k` is rows `[k * chunk_rows, (k + 1) * chunk_rows)` (the
/// last may be shorter) and its per-channel mean and M2 go to
/// `mean[k * channels..]`, `m2[k * channels..]`.
pub(crate) struct ChunkJob<'a> {
    pub input: &'a [f32],
    pub channels: usize,
    pub chunk_rows: usize,
    pub mean: &'a mut [f64],
    pub m2: &'a mut [f64],
    /// At least [`CHUNK_SCRATCH`]` * pattern_period(channels)` long.
    pub scratch: &'a mut [f32],
    /// At least `3 * channels` long: per-channel f64 totals.
    pub totals: &'a mut [f64],
}

/// Scratch patterns per chunk job, in units of the pattern period: shifts,
/// scales, `Σd`, `Σd²`.
pub(crate) const CHUNK_SCRATCH: usize = 4;

/// Column sums of the flat `x` seen as rows of `period` values (the last row
/// may be short, zero-padded and masked) for the `G` column blocks from
/// `first_block`: `out[g][i]` = lane-wise `Σ_r terms(x[r, block g])[i]`. Rows
/// are added in order into two accumulators (even and odd rows, halving the
/// add latency chain), combined at the end: a fixed order on every ISA.
#[inline(always)]
fn column_sums<S: Simd, const N: usize, const G: usize, T: Terms<S, N>>(
    s: S,
    x: &[f32],
    ahead: &[f32],
    period: usize,
    first_block: usize,
    out: &mut [[[f32; LANES]; N]; G],
    pass: &mut T,
) {
    let zero = s.splat(0.0);
    let mut even = [[zero; N]; G];
    let mut odd = [[zero; N]; G];
    let full = x.len() / period;
    let col0 = first_block * LANES;
    let row = |r: usize| -> &[[f32; LANES]] {
        let at = r * period + col0;
        x[at..at + LANES * G].as_chunks::<LANES>().0
    };
    // Two rows per step, each into its own accumulators, every reference
    // fixed: choosing `even` or `odd` at run time per row had put both in
    // memory, each add waiting on a store and a reload.
    let mut r = 0;
    while r + 1 < full {
        prefetch_row::<S, G>(s, ahead, r * period + col0);
        add_row(s, row(r), &mut even, pass);
        prefetch_row::<S, G>(s, ahead, (r + 1) * period + col0);
        add_row(s, row(r + 1), &mut odd, pass);
        r += 2;
    }
    if r < full {
        prefetch_row::<S, G>(s, ahead, r * period + col0);
        add_row(s, row(r), &mut even, pass);
    }
    let tail = x.len() - full * period;
    if full.is_multiple_of(2) {
        add_tail(s, x, full * period, tail, col0, &mut even, pass);
    } else {
        add_tail(s, x, full * period, tail, col0, &mut odd, pass);
    }
    for g in 0..G {
        for i in 0..N {
            out[g][i] = s.to_array(s.add(even[g][i], odd[g][i]));
        }
    }
}

/// Prefetches `ahead`'s `G` vectors from `at` (those that exist): the
/// same positions in the next chunk as the vectors being summed, so one pass
/// over this chunk fetches the whole next one.
#[inline(always)]
fn prefetch_row<S: Simd, const G: usize>(s: S, ahead: &[f32], at: usize) {
    if let Some(lines) = ahead.get(at..at + G * LANES) {
        for g in 0..G {
            s.prefetch(&lines[g * LANES]);
        }
    }
}

/// One row's `G` column blocks into `acc`.
#[inline(always)]
fn add_row<S: Simd, const N: usize, const G: usize, T: Terms<S, N>>(
    s: S,
    chunks: &[[f32; LANES]],
    acc: &mut [[S::V; N]; G],
    pass: &mut T,
) {
    for g in 0..G {
        let t = pass.terms(s, s.load(&chunks[g]), None, g);
        accumulate(s, &mut acc[g], t);
    }
}

/// The short last row (`tail` values from `start`, zero-padded and masked)
/// into `acc`.
#[inline(always)]
fn add_tail<S: Simd, const N: usize, const G: usize, T: Terms<S, N>>(
    s: S,
    x: &[f32],
    start: usize,
    tail: usize,
    col0: usize,
    acc: &mut [[S::V; N]; G],
    pass: &mut T,
) {
    for g in 0..G {
        let col = col0 + g * LANES;
        if tail > col {
            let len = (tail - col).min(LANES);
            let at = start + col;
            let v = load_padded(s, &x[at..at + len], 0.0);
            let t = pass.terms(s, v, Some(lane_mask(s, len)), g);
            accumulate(s, &mut acc[g], t);
        }
    }
}

/// Column blocks per group in the chunk passes (4 blocks = 256 bytes of a
/// row, read contiguously).
const GROUP: usize = 4;

/// Per-channel f64 totals of a column pattern: `out[c]` = the columns
/// `c, c + C, ...` below `period`, added in ascending order from 0. Plain
/// loops over channels, so the compiler vectorizes them (IEEE f64 adds in
/// the same order per channel: the same bits on every ISA).
#[inline(always)]
fn channel_totals(cols: &[f32], channels: usize, out: &mut [f64]) {
    let out = &mut out[..channels];
    let (first, rest) = cols.split_at(channels);
    // `0.0 + v`, bit for bit (-0 becomes +0), without a fill to reload.
    for (o, &v) in out.iter_mut().zip(first) {
        *o = v as f64 + 0.0;
    }
    for row in rest.chunks_exact(channels) {
        for (o, &v) in out.iter_mut().zip(row) {
            *o += v as f64;
        }
    }
}

/// The values of channel `c` in a chunk.
fn channel_values(x: &[f32], channels: usize, c: usize) -> impl Iterator<Item = f32> + '_ {
    x.iter().skip(c).step_by(channels).copied()
}

/// Pattern rows (`period` values each) sampled for a chunk's first centre.
const PILOT_ROWS: usize = 32;

/// A first centre per channel: the f32-rounded mean of [`PILOT_ROWS`]
/// pattern rows spread evenly over the chunk (every full one when there are
/// fewer; every row, in scalar, when the chunk is shorter than one pattern
/// row). Spread, so that images whose statistics drift across a chunk still
/// give a centre near the chunk's mean; a centre far from it costs a rerun
/// of its column group (see [`chunk_stats`]), never accuracy. Lane-wise f32
/// sums down the sampled rows in order, then [`channel_totals`]: the same
/// bits on every ISA. `cols` is `period` long scratch.
#[inline(always)]
fn pilot_centres<S: Simd>(
    s: S,
    x: &[f32],
    channels: usize,
    period: usize,
    cols: &mut [f32],
    mean: &mut [f64],
    totals: &mut [f64],
) {
    let full = x.len() / period;
    if full == 0 {
        let rows = x.len() / channels;
        channel_totals(x, channels, totals);
        for (m, &t) in mean.iter_mut().zip(totals.iter()) {
            *m = ((t / rows as f64) as f32) as f64;
        }
        return;
    }
    let pilots = full.min(PILOT_ROWS);
    let mut starts = [0usize; PILOT_ROWS];
    for (i, at) in starts[..pilots].iter_mut().enumerate() {
        *at = i * full / pilots * period;
    }
    for (b, out) in cols[..period]
        .as_chunks_mut::<LANES>()
        .0
        .iter_mut()
        .enumerate()
    {
        let mut acc = s.splat(0.0);
        for &at in &starts[..pilots] {
            let at = at + b * LANES;
            acc = s.add(acc, s.load(x[at..at + LANES].try_into().expect("LANES")));
        }
        s.store(out, acc);
    }
    channel_totals(&cols[..period], channels, totals);
    let count = (pilots * (period / channels)) as f64;
    for (m, &t) in mean.iter_mut().zip(totals.iter()) {
        *m = ((t / count) as f32) as f64;
    }
}

/// Exact two-pass f64 moments of one channel of a chunk: the safety net for
/// a finite channel whose f32 sums still failed (not expected after
/// rescaling, kept so no finite input can give NaN statistics).
fn channel_moments_f64(x: &[f32], channels: usize, c: usize) -> Moments {
    let n = channel_values(x, channels, c).count();
    let mean = channel_values(x, channels, c)
        .map(|v| v as f64)
        .sum::<f64>()
        / n as f64;
    let m2 = channel_values(x, channels, c)
        .map(|v| (v as f64 - mean) * (v as f64 - mean))
        .sum::<f64>();
    Moments {
        count: n as u64,
        mean,
        m2,
    }
}

/// Chunk pass 2: per column, `d = x*scale - shift` (`x - shift` unless
/// SCALED) and `d²`, with the `G` column blocks' shift and scale vectors.
struct ColumnCentred<S: Simd, const G: usize, const SCALED: bool> {
    scale: [S::V; G],
    shift: [S::V; G],
}

impl<S: Simd, const G: usize, const SCALED: bool> Terms<S, 2> for ColumnCentred<S, G, SCALED> {
    #[inline(always)]
    fn terms(&mut self, s: S, v: S::V, mask: Option<S::V>, g: usize) -> [S::V; 2] {
        let v = if SCALED { s.mul(v, self.scale[g]) } else { v };
        let mut d = s.sub(v, self.shift[g]);
        if let Some(m) = mask {
            d = s.mul(d, m);
        }
        [d, s.mul(d, d)]
    }
}

/// The per-column patterns of a chunk (each `period` long; pattern index `k`
/// belongs to channel `k % C`).
struct ChunkPatterns<'a> {
    shift: &'a mut [f32],
    scale: &'a mut [f32],
    s1: &'a mut [f32],
    s2: &'a mut [f32],
}

/// The centred pass: per-column `Σd`, `Σd²` with `d = x*scale - shift` of
/// the column's channel (`mean` holds the per-channel shifts, `p.scale` the
/// scale pattern, read only when SCALED). `changed_only`: rerun only the
/// column groups whose shifts changed since the last pass (with the same
/// scales), keeping the others' sums, which a rerun would reproduce bit for
/// bit: a recentring for one channel in 512 then costs a 64-column group,
/// not the whole chunk.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn centred_pass<S: Simd, const SCALED: bool>(
    s: S,
    x: &[f32],
    ahead: &[f32],
    channels: usize,
    period: usize,
    mean: &[f64],
    p: &mut ChunkPatterns<'_>,
    changed_only: bool,
) {
    let blocks = period / LANES;
    let (mut b, mut channel) = (0, 0);
    while b < blocks {
        let g = if b + GROUP <= blocks { GROUP } else { 1 };
        let mut changed = false;
        for shift in &mut p.shift[b * LANES..(b + g) * LANES] {
            let v = mean[channel] as f32;
            changed |= v.to_bits() != shift.to_bits();
            *shift = v;
            channel = if channel + 1 == channels {
                0
            } else {
                channel + 1
            };
        }
        if changed || !changed_only {
            if g == GROUP {
                centred_group::<S, GROUP, SCALED>(s, x, ahead, period, b, p);
            } else {
                centred_group::<S, 1, SCALED>(s, x, ahead, period, b, p);
            }
        }
        b += g;
    }
}

/// Pass 2 for the `G` column blocks from `b`.
#[inline(always)]
fn centred_group<S: Simd, const G: usize, const SCALED: bool>(
    s: S,
    x: &[f32],
    ahead: &[f32],
    period: usize,
    b: usize,
    p: &mut ChunkPatterns<'_>,
) {
    let at = b * LANES;
    let one = s.splat(1.0);
    let mut pass = ColumnCentred::<S, G, SCALED> {
        scale: [one; G],
        shift: [one; G],
    };
    for g in 0..G {
        let w = at + g * LANES..at + (g + 1) * LANES;
        pass.shift[g] = s.load(p.shift[w.clone()].try_into().expect("LANES"));
        if SCALED {
            pass.scale[g] = s.load(p.scale[w].try_into().expect("LANES"));
        }
    }
    let mut out = [[[0.0; LANES]; 2]; G];
    column_sums(s, x, ahead, period, b, &mut out, &mut pass);
    for (g, o) in out.iter().enumerate() {
        p.s1[at + g * LANES..at + (g + 1) * LANES].copy_from_slice(&o[0]);
        p.s2[at + g * LANES..at + (g + 1) * LANES].copy_from_slice(&o[1]);
    }
}

/// Statistics of one NHWC chunk (`rows * channels` values, rows a multiple of
/// `LANES` unless this is the batch's last chunk).
///
/// The row statistics' algorithm per channel, vectorized across channels,
/// with the centre taken from a sample of rows ([`pilot_centres`]) instead
/// of a sum pass, so the chunk is read once: that pass gives the centred
/// `Σd`, `Σd²` and prefetches the next chunk. Channels that need it then get scalar checks, as in the
/// row kernels: a non-finite sum looks for NaN/±inf; an overflowing or tiny
/// `Σd²` (squares that overflow or underflow f32: 1e30, 1e-30, subnormals)
/// looks at the channel's largest magnitude, and a channel outside
/// `[2^-32, 2^32]` is recomputed on `x * 2^k` (an exact rescaling, one scale
/// per column in the pattern; unscaled columns get scale 1, which gives the
/// same bits as the unscaled pass); a variance lost in rounding checks for a
/// constant channel (M2 exactly 0). A centre far from the mean (more than
/// ~0.58 standard deviations) gets a better one and the centred pass runs
/// once more, from cache, over the column groups holding such channels.
///
/// Measured (one thread, NHWC `[32, 64, 56, 56]`, statistics alone, against
/// a plain vector sum of the tensor in the same process): a sum pass and a
/// centred pass per chunk took 1.7-1.9x the plain read; the pilot and one
/// pass 1.3x.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk_stats<S: Simd>(
    s: S,
    x: &[f32],
    ahead: &[f32],
    channels: usize,
    mean: &mut [f64],
    m2: &mut [f64],
    scratch: &mut [f32],
    totals: &mut [f64],
) {
    let period = pattern_period(channels);
    let rows = x.len() / channels;
    let nf = rows as f64;
    let (shift, rest) = scratch.split_at_mut(period);
    let (scale, rest) = rest.split_at_mut(period);
    let (s1, rest) = rest.split_at_mut(period);
    let mut p = ChunkPatterns {
        shift,
        scale,
        s1,
        s2: &mut rest[..period],
    };
    let (t1, rest) = totals.split_at_mut(channels);
    let (t2, rest) = rest.split_at_mut(channels);
    let sc = &mut rest[..channels];

    // A first centre per channel from a sample of rows, so that one pass
    // over the chunk usually gives its moments.
    pilot_centres(s, x, channels, period, p.s1, mean, t1);
    // `mean` holds the shifts (exact f32 values) until the end.
    // The centred pass also prefetches the next chunk.
    centred_pass::<S, false>(s, x, ahead, channels, period, mean, &mut p, false);
    channel_totals(p.s2, channels, t2);

    // Extreme magnitudes: rescale the channels whose squares overflow or
    // underflow (checked in scalar, only when some sum of squares is
    // non-finite or tiny).
    sc.fill(1.0);
    let mut scaled = false;
    let tiny = TINY_SUM_SQ as f64;
    if t2.iter().any(|&v| !(v.is_finite() && v >= tiny)) {
        for c in 0..channels {
            if t2[c].is_finite() && t2[c] >= tiny {
                continue;
            }
            if channel_values(x, channels, c).any(|v| !v.is_finite()) {
                continue; // NaN statistics, settled at the end.
            }
            let amax = channel_values(x, channels, c).fold(0.0f32, |m, v| m.max(v.abs()));
            if amax != 0.0 && !(SAFE_MIN..=SAFE_MAX).contains(&amax) {
                sc[c] = rescale_for(amax) as f64;
                mean[c] = 0.0;
                scaled = true;
            }
        }
    }
    if scaled {
        for row in p.scale.chunks_exact_mut(channels) {
            for (v, &k) in row.iter_mut().zip(sc.iter()) {
                *v = k as f32;
            }
        }
        // Scaled channels have shift 0: their Σd is the scaled sum.
        centred_pass::<S, true>(s, x, &[], channels, period, mean, &mut p, false);
        channel_totals(p.s1, channels, t1);
        for c in 0..channels {
            if sc[c] != 1.0 {
                mean[c] = ((t1[c] / nf) as f32) as f64;
            }
        }
        centred_pass::<S, true>(s, x, &[], channels, period, mean, &mut p, true);
    }
    channel_totals(p.s1, channels, t1);
    channel_totals(p.s2, channels, t2);

    // A centre far from the mean (relative to the spread) would make
    // s2 - s1²/n cancel: recentre once.
    let mut recentre = false;
    for c in 0..channels {
        let (s1, s2) = (t1[c], t2[c]);
        let far = s1 * s1 / nf > 0.25 * s2;
        let moved = ((mean[c] + s1 / nf) as f32) as f64;
        mean[c] = if far { moved } else { mean[c] };
        recentre |= far;
    }
    if recentre {
        if scaled {
            centred_pass::<S, true>(s, x, &[], channels, period, mean, &mut p, true);
        } else {
            centred_pass::<S, false>(s, x, &[], channels, period, mean, &mut p, true);
        }
        channel_totals(p.s1, channels, t1);
        channel_totals(p.s2, channels, t2);
    }
    let mut rare = false;
    for c in 0..channels {
        let (s1, s2, k) = (t1[c], t2[c], sc[c]);
        let lo = s1 / nf;
        let m = mean[c] + lo;
        let v = (s2 - s1 * lo).max(0.0);
        rare |= v <= s2 * (1.0 / 1_048_576.0) || !(m.is_finite() && s2.is_finite());
        mean[c] = m / k;
        m2[c] = v / (k * k);
    }
    if !rare {
        return;
    }
    for c in 0..channels {
        let (s1, s2) = (t1[c], t2[c]);
        let lo = s1 / nf;
        let v = (s2 - s1 * lo).max(0.0);
        let m = mean[c];
        if v <= s2 * (1.0 / 1_048_576.0) && channel_values(x, channels, c).all(|v| v == x[c]) {
            // A variance lost in rounding: exactly 0 if the channel is
            // constant. `+ 0.0` turns -0 into +0, whichever zero came first.
            mean[c] = (x[c] + 0.0) as f64;
            m2[c] = 0.0;
        } else if !(m.is_finite() && s2.is_finite()) {
            let finite = channel_values(x, channels, c).all(|v| v.is_finite());
            let exact = if finite {
                channel_moments_f64(x, channels, c)
            } else {
                Moments {
                    count: rows as u64,
                    mean: f64::NAN,
                    m2: f64::NAN,
                }
            };
            mean[c] = exact.mean;
            m2[c] = exact.m2;
        }
    }
}

/// Every chunk of `job`.
#[inline(always)]
pub(crate) fn chunk_moments<S: Simd>(s: S, job: ChunkJob<'_>) {
    let ChunkJob {
        input,
        channels,
        chunk_rows,
        mean,
        m2,
        scratch,
        totals,
    } = job;
    let chunk_len = chunk_rows * channels;
    for (k, x) in input.chunks(chunk_len).enumerate() {
        let range = k * channels..(k + 1) * channels;
        let ahead = input.get((k + 1) * chunk_len..).unwrap_or(&[]);
        chunk_stats(
            s,
            x,
            &ahead[..ahead.len().min(chunk_len)],
            channels,
            &mut mean[range.clone()],
            &mut m2[range],
            scratch,
            totals,
        );
    }
}

/// One vector's affine coefficients: `y = (x - hi) * scale * a + b`
/// (`scale` only read when the map is SCALED).
#[derive(Clone, Copy)]
struct Affine<S: Simd> {
    scale: S::V,
    hi: S::V,
    a: S::V,
    b: S::V,
}

impl<S: Simd> Affine<S> {
    /// Channel `c`'s scalars broadcast (`scale` read only when SCALED).
    #[inline(always)]
    fn channel<const SCALED: bool>(s: S, [scale, hi, a, b]: [&[f32]; 4], c: usize) -> Self {
        Affine {
            scale: s.splat(if SCALED { scale[c] } else { 1.0 }),
            hi: s.splat(hi[c]),
            a: s.splat(a[c]),
            b: s.splat(b[c]),
        }
    }
}

/// `(x - hi) * scale * a + b` (no `* scale` unless SCALED), rounded after
/// each operation.
#[inline(always)]
fn affine<S: Simd, const SCALED: bool>(s: S, x: S::V, k: &Affine<S>) -> S::V {
    let t = s.sub(x, k.hi);
    let t = if SCALED { s.mul(t, k.scale) } else { t };
    s.add(s.mul(t, k.a), k.b)
}

/// Where [`affine_map`] gets the coefficients of the vector at each offset.
/// A trait rather than a closure so the code stays inside the caller's
/// `#[target_feature]` function (see [`Terms`]).
trait CoefSource<S: Simd> {
    /// The coefficients of the `LANES` values from offset `i`; called with
    /// increasing offsets at most `LANES` apart, except for constant sources
    /// (only those are walked backward).
    fn at(&mut self, s: S, i: usize) -> Affine<S>;
}

/// One channel's coefficients, the same for every offset (a NCHW plane).
impl<S: Simd> CoefSource<S> for Affine<S> {
    #[inline(always)]
    fn at(&mut self, _s: S, _i: usize) -> Affine<S> {
        *self
    }
}

/// `y = (x - hi) * scale * a + b` over `dst.len()` values, with the coefficient
/// vectors from `coef`; streaming stores from the first 64-byte boundary of
/// `dst` when `stream`. `ahead` (at least `dst.len()` long) is prefetched one
/// line per vector. `reverse`: the same vectors, last first (constant
/// coefficients only; see [`CoefSource`]).
///
/// Runs of `LANES` values or more never go through a partial copy: the
/// unaligned head and the tail are whole vectors overlapping the body (the
/// map is element-wise, so a value written twice gets the same bits both
/// times). On 49-value planes the padded copies had cost more than the math.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn affine_map<S: Simd, const SCALED: bool, C: CoefSource<S>>(
    s: S,
    src: &[f32],
    dst: &mut [f32],
    stream: bool,
    coef: &mut C,
    ahead: Option<&[f32]>,
    reverse: bool,
) {
    let n = dst.len();
    if n < LANES {
        if n > 0 {
            let k = coef.at(s, 0);
            let y = affine::<S, SCALED>(s, load_padded(s, &src[..n], 0.0), &k);
            store_partial(s, &mut dst[..n], y);
        }
        return;
    }
    let head = if stream {
        (64 - dst.as_ptr() as usize % 64) % 64 / 4
    } else {
        0
    };
    let body_len = (n - head) / LANES * LANES;
    let tail = head + body_len < n;
    // Last first when `reverse` (see `walk_backward`): the overlapping
    // tail vector, the body backward, the unaligned head.
    if reverse && tail {
        edge_vector::<S, SCALED, C>(s, src, dst, n - LANES, coef);
    }
    if !reverse && head > 0 {
        edge_vector::<S, SCALED, C>(s, src, dst, 0, coef);
    }
    let (body, _) = dst[head..head + body_len].as_chunks_mut::<LANES>();
    let (from, _) = src[head..head + body_len].as_chunks::<LANES>();
    let vectors = body.iter_mut().zip(from).enumerate();
    if reverse {
        for (j, (out, x)) in vectors.rev() {
            body_vector::<S, SCALED, C>(s, x, out, head + j * LANES, coef, ahead, stream);
        }
    } else {
        for (j, (out, x)) in vectors {
            body_vector::<S, SCALED, C>(s, x, out, head + j * LANES, coef, ahead, stream);
        }
    }
    if let Some(a) = ahead {
        s.prefetch(&a[n - 1]);
    }
    if !reverse && tail {
        edge_vector::<S, SCALED, C>(s, src, dst, n - LANES, coef);
    }
    if reverse && head > 0 {
        edge_vector::<S, SCALED, C>(s, src, dst, 0, coef);
    }
}

/// The body vector of [`affine_map`] at offset `at`, prefetching `ahead`'s
/// line there.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn body_vector<S: Simd, const SCALED: bool, C: CoefSource<S>>(
    s: S,
    x: &[f32; LANES],
    out: &mut [f32; LANES],
    at: usize,
    coef: &mut C,
    ahead: Option<&[f32]>,
    stream: bool,
) {
    if let Some(a) = ahead {
        s.prefetch(&a[at]);
    }
    let k = coef.at(s, at);
    let y = affine::<S, SCALED>(s, s.load(x), &k);
    if stream {
        s.store_stream(out, y)
    } else {
        s.store(out, y)
    }
}

/// The vector of [`affine_map`] at `at` (the unaligned head or the
/// overlapping tail), stored normally.
#[inline(always)]
fn edge_vector<S: Simd, const SCALED: bool, C: CoefSource<S>>(
    s: S,
    src: &[f32],
    dst: &mut [f32],
    at: usize,
    coef: &mut C,
) {
    let k = coef.at(s, at);
    let x = src[at..at + LANES].try_into().expect("LANES");
    let y = affine::<S, SCALED>(s, s.load(x), &k);
    s.store((&mut dst[at..at + LANES]).try_into().expect("LANES"), y);
}

/// Planes to normalize (NCHW): `input` and `output` are whole planes of
/// `spatial` values; plane `p` belongs to channel `(first_channel + p) % channels`.
pub(crate) struct PlaneJob<'a> {
    pub input: &'a [f32],
    pub output: &'a mut [f32],
    pub spatial: usize,
    pub channels: usize,
    pub first_channel: usize,
    /// Per channel: the power of two `x` is multiplied by first (`None`: all
    /// 1), the scaled mean rounded to f32, `rstd * gamma / scale`,
    /// `beta - (scaled mean - hi) * a`.
    pub scale: Option<&'a [f32]>,
    pub hi: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub stream: bool,
    /// Walk the planes last first (see [`walk_backward`](super::walk_backward)).
    pub reverse: bool,
}

/// Applies the per-channel affine map to every plane of `job`.
#[inline(always)]
pub(crate) fn apply_planes<S: Simd>(s: S, job: PlaneJob<'_>) {
    if job.scale.is_some() {
        apply_planes_with::<S, true>(s, job)
    } else {
        apply_planes_with::<S, false>(s, job)
    }
}

#[inline(always)]
fn apply_planes_with<S: Simd, const SCALED: bool>(s: S, job: PlaneJob<'_>) {
    let PlaneJob {
        input,
        output,
        spatial,
        channels,
        first_channel,
        scale,
        hi,
        a,
        b,
        stream,
        reverse,
    } = job;
    let scale = scale.unwrap_or(&[]);
    // Streaming stores want whole 64-byte lines: short planes would write
    // mostly partial ones, so they store through the cache.
    let stream = stream && spatial >= 256;
    let planes = input.len() / spatial;
    for q in 0..planes {
        let p = if reverse { planes - 1 - q } else { q };
        let c = (first_channel + p) % channels;
        let mut k = Affine::channel::<SCALED>(s, [scale, hi, a, b], c);
        let span = p * spatial..(p + 1) * spatial;
        let (x, y) = (&input[span.clone()], &mut output[span]);
        affine_map::<S, SCALED, _>(s, x, y, stream, &mut k, None, reverse);
    }
    if stream {
        s.stream_fence();
    }
}

/// A group of NCHW channels to normalize right after their statistics
/// (training): channel `first_channel + i` of sample `n` is read from
/// `input[(n * channels + first_channel + i) * spatial..]` and written to
/// `outputs[n][(offset + i) * spatial..]`, with coefficients `hi[i]`, `a[i]`,
/// `b[i]` (and `scale[i]`). While channel `first_channel + i` is written, the
/// planes of channel `first_channel + count + i` are prefetched for
/// `i < prefetch`: the next group, whose statistics then read from L2.
pub(crate) struct ChannelPlanesJob<'a, 'b> {
    pub input: &'a [f32],
    pub outputs: &'a mut [&'b mut [f32]],
    pub offset: usize,
    pub spatial: usize,
    pub channels: usize,
    pub first_channel: usize,
    /// See [`PlaneJob`]; all `count` long, `count = hi.len()`.
    pub scale: Option<&'a [f32]>,
    pub hi: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub prefetch: usize,
    pub stream: bool,
    /// Walk the planes last first (see [`walk_backward`](super::walk_backward)).
    pub reverse: bool,
}

/// Applies the per-channel affine map to every plane of a channel group.
#[inline(always)]
pub(crate) fn apply_channel_planes<S: Simd>(s: S, job: ChannelPlanesJob<'_, '_>) {
    if job.scale.is_some() {
        apply_channel_planes_with::<S, true>(s, job)
    } else {
        apply_channel_planes_with::<S, false>(s, job)
    }
}

#[inline(always)]
fn apply_channel_planes_with<S: Simd, const SCALED: bool>(s: S, job: ChannelPlanesJob<'_, '_>) {
    let ChannelPlanesJob {
        input,
        outputs,
        offset,
        spatial,
        channels,
        first_channel,
        scale,
        hi,
        a,
        b,
        prefetch,
        stream,
        reverse,
    } = job;
    let scale = scale.unwrap_or(&[]);
    // As in `apply_planes_with`: short planes store through the cache.
    let stream = stream && spatial >= 256;
    let plane = |n: usize, c: usize| {
        let at = (n * channels + c) * spatial;
        &input[at..at + spatial]
    };
    // Sample by sample: the group's planes of one sample are one contiguous
    // run (channel by channel, short planes would share cache lines with
    // planes written much later).
    // Last first when `reverse` (see `walk_backward`).
    let group = hi.len();
    let planes = outputs.len() * group;
    for q in 0..planes {
        let q = if reverse { planes - 1 - q } else { q };
        let (n, i) = (q / group, q % group);
        let mut k = Affine::channel::<SCALED>(s, [scale, hi, a, b], i);
        let c = first_channel + i;
        let at = (offset + i) * spatial;
        let ahead = (i < prefetch).then(|| plane(n, c + group));
        let y = &mut outputs[n][at..at + spatial];
        affine_map::<S, SCALED, _>(s, plane(n, c), y, stream, &mut k, ahead, reverse);
    }
    if stream {
        s.stream_fence();
    }
}

/// A flat run of an NHWC tensor to normalize: `input[i]` has pattern index
/// `(phase + i) % period`; the coefficient patterns are `period + LANES` long
/// (`pattern[k] = coefficient of channel k % C`).
pub(crate) struct PatternJob<'a> {
    pub input: &'a [f32],
    pub output: &'a mut [f32],
    pub phase: usize,
    pub period: usize,
    /// See [`PlaneJob`]; `None`: every scale is 1.
    pub scale: Option<&'a [f32]>,
    pub hi: &'a [f32],
    pub a: &'a [f32],
    pub b: &'a [f32],
    pub stream: bool,
    /// Walk the values last first (see [`walk_backward`](super::walk_backward)).
    pub reverse: bool,
}

/// `LANES` values of a coefficient pattern from index `k`.
#[inline(always)]
fn window<S: Simd>(s: S, v: &[f32], k: usize) -> S::V {
    s.load(v[k..k + LANES].try_into().expect("in bounds"))
}

/// Coefficient windows of a `period`-periodic pattern. Offsets grow by at
/// most `LANES` (the overlapping tail starts less than `LANES` after the
/// last body vector), so the pattern index follows without a division.
struct PatternCoef<'a, const SCALED: bool> {
    k: usize,
    last: usize,
    period: usize,
    scale: &'a [f32],
    hi: &'a [f32],
    a: &'a [f32],
    b: &'a [f32],
}

impl<S: Simd, const SCALED: bool> CoefSource<S> for PatternCoef<'_, SCALED> {
    #[inline(always)]
    fn at(&mut self, s: S, i: usize) -> Affine<S> {
        self.k += i - self.last;
        self.last = i;
        if self.k >= self.period {
            self.k -= self.period;
        }
        self.coefs(s, self.k)
    }
}

impl<const SCALED: bool> PatternCoef<'_, SCALED> {
    /// The coefficient windows at pattern index `k`.
    #[inline(always)]
    fn coefs<S: Simd>(&self, s: S, k: usize) -> Affine<S> {
        Affine {
            scale: if SCALED {
                window(s, self.scale, k)
            } else {
                s.splat(1.0)
            },
            hi: window(s, self.hi, k),
            a: window(s, self.a, k),
            b: window(s, self.b, k),
        }
    }
}

/// Applies the channel-pattern affine map to every value of `job`.
#[inline(always)]
pub(crate) fn apply_pattern<S: Simd>(s: S, job: PatternJob<'_>) {
    if job.scale.is_some() {
        apply_pattern_with::<S, true>(s, job)
    } else {
        apply_pattern_with::<S, false>(s, job)
    }
}

#[inline(always)]
fn apply_pattern_with<S: Simd, const SCALED: bool>(s: S, job: PatternJob<'_>) {
    let PatternJob {
        input,
        output,
        phase,
        period,
        scale,
        hi,
        a,
        b,
        stream,
        reverse,
    } = job;
    let coef = PatternCoef::<SCALED> {
        k: phase % period,
        last: 0,
        period,
        scale: scale.unwrap_or(&[]),
        hi,
        a,
        b,
    };
    let n = output.len();
    if n < LANES {
        // One short vector: the general map handles it.
        let mut coef = coef;
        affine_map::<S, SCALED, _>(s, input, output, stream, &mut coef, None, false);
        return;
    }
    // As in `affine_map`: an unaligned head vector (stored normally), the
    // aligned body, and an overlapping last vector.
    let head = if stream {
        (64 - output.as_ptr() as usize % 64) % 64 / 4
    } else {
        0
    };
    let body_len = (n - head) / LANES * LANES;
    let tail = head + body_len < n;
    // Last vector first when `reverse` (see `walk_backward`).
    if reverse && tail {
        pattern_edge(s, &coef, phase, n - LANES, input, output);
    }
    if !reverse && head > 0 {
        pattern_edge(s, &coef, phase, 0, input, output);
    }
    let (body, _) = output[head..head + body_len].as_chunks_mut::<LANES>();
    let (from, _) = input[head..head + body_len].as_chunks::<LANES>();
    let k0 = (phase + head) % period;
    match (stream, reverse) {
        (true, false) => pattern_body::<S, SCALED, true, false>(s, from, body, &coef, k0),
        (false, false) => pattern_body::<S, SCALED, false, false>(s, from, body, &coef, k0),
        (true, true) => pattern_body::<S, SCALED, true, true>(s, from, body, &coef, k0),
        (false, true) => pattern_body::<S, SCALED, false, true>(s, from, body, &coef, k0),
    }
    if !reverse && tail {
        pattern_edge(s, &coef, phase, n - LANES, input, output);
    }
    if reverse && head > 0 {
        pattern_edge(s, &coef, phase, 0, input, output);
    }
    if stream {
        s.stream_fence();
    }
}

/// The vector of [`apply_pattern`] at `at` (the unaligned head or the
/// overlapping tail), stored normally.
#[inline(always)]
fn pattern_edge<S: Simd, const SCALED: bool>(
    s: S,
    coef: &PatternCoef<'_, SCALED>,
    phase: usize,
    at: usize,
    input: &[f32],
    output: &mut [f32],
) {
    let k = coef.coefs(s, (phase + at) % coef.period);
    let x = input[at..at + LANES].try_into().expect("LANES");
    let y = affine::<S, SCALED>(s, s.load(x), &k);
    s.store((&mut output[at..at + LANES]).try_into().expect("LANES"), y);
}

/// The body of [`apply_pattern`]: vector `j` takes the coefficient windows at
/// pattern index `(k0 + j * LANES) % period`. Those indices run through
/// segments `k0, k0 + LANES, ... < period`, then `r, r + LANES, ... < period`
/// again and again (`r = k0 % LANES`, as `period` is a multiple of `LANES`),
/// so each segment zips chunked slices of the patterns: no index arithmetic
/// or bounds checks per vector (the per-vector wrap-around and window checks
/// had made NHWC inference ~1.6x slower than NCHW at one thread).
#[inline(always)]
fn pattern_body<S: Simd, const SCALED: bool, const STREAM: bool, const REV: bool>(
    s: S,
    from: &[[f32; LANES]],
    body: &mut [[f32; LANES]],
    coef: &PatternCoef<'_, SCALED>,
    k0: usize,
) {
    let period = coef.period;
    // The windows of one segment from pattern index `k`: `(period - k) / LANES`
    // vectors, rounded up (the last window reaches into the pattern's
    // `LANES` extra values).
    fn windows(v: &[f32], k: usize, period: usize) -> &[[f32; LANES]] {
        let count = (period - k).div_ceil(LANES);
        v[k..k + count * LANES].as_chunks::<LANES>().0
    }
    let segment = |k: usize| -> Windows<'_> {
        (
            if SCALED {
                windows(coef.scale, k, period)
            } else {
                &[]
            },
            windows(coef.hi, k, period),
            windows(coef.a, k, period),
            windows(coef.b, k, period),
        )
    };
    let first = (period - k0).div_ceil(LANES).min(body.len());
    let (body_first, body_rest) = body.split_at_mut(first);
    let (from_first, from_rest) = from.split_at(first);
    if !REV {
        segment_map::<S, SCALED, STREAM, REV>(s, from_first, body_first, segment(k0));
    }
    let r = k0 % LANES;
    let full = (period - r).div_ceil(LANES);
    let windows_r = segment(r);
    // Short periods (up to 64 channels): the whole period's coefficients
    // fit in registers, loaded once instead of once per vector (the
    // per-vector loads and the per-period loop overhead had left NHWC
    // inference with 64 channels at ~0.65 of NCHW's speed).
    match full {
        1 => whole_periods::<S, SCALED, STREAM, REV, 1>(s, from_rest, body_rest, windows_r),
        2 => whole_periods::<S, SCALED, STREAM, REV, 2>(s, from_rest, body_rest, windows_r),
        3 => whole_periods::<S, SCALED, STREAM, REV, 3>(s, from_rest, body_rest, windows_r),
        4 => whole_periods::<S, SCALED, STREAM, REV, 4>(s, from_rest, body_rest, windows_r),
        _ if full.is_multiple_of(TILE) && S::REGISTER_VECTORS >= TILE_MIN_REGISTERS => {
            tiled_periods::<S, SCALED, STREAM, REV>(s, from_rest, body_rest, windows_r, full)
        }
        _ => {
            let segments = body_rest.chunks_mut(full).zip(from_rest.chunks(full));
            if REV {
                for (out, x) in segments.rev() {
                    segment_map::<S, SCALED, STREAM, REV>(s, x, out, windows_r);
                }
            } else {
                for (out, x) in segments {
                    segment_map::<S, SCALED, STREAM, REV>(s, x, out, windows_r);
                }
            }
        }
    }
    if REV {
        segment_map::<S, SCALED, STREAM, REV>(s, from_first, body_first, segment(k0));
    }
}

/// [`pattern_body`]'s repeating segments when a period is `W` vectors: the
/// `W` coefficient windows stay in registers across all whole periods; a cut
/// period at the end goes through [`segment_map`].
#[inline(always)]
fn whole_periods<
    S: Simd,
    const SCALED: bool,
    const STREAM: bool,
    const REV: bool,
    const W: usize,
>(
    s: S,
    from: &[[f32; LANES]],
    body: &mut [[f32; LANES]],
    windows: Windows<'_>,
) {
    let one = s.splat(1.0);
    let mut k = [Affine {
        scale: one,
        hi: one,
        a: one,
        b: one,
    }; W];
    for (j, kj) in k.iter_mut().enumerate() {
        *kj = window_coefs::<S, SCALED>(s, windows, j);
    }
    let (periods, cut) = body.as_chunks_mut::<W>();
    let (from_periods, from_cut) = from.as_chunks::<W>();
    let periods = periods.iter_mut().zip(from_periods);
    if REV {
        segment_map::<S, SCALED, STREAM, REV>(s, from_cut, cut, windows);
        for (out, x) in periods.rev() {
            for j in (0..W).rev() {
                store_vector::<S, STREAM>(
                    s,
                    &mut out[j],
                    affine::<S, SCALED>(s, s.load(&x[j]), &k[j]),
                );
            }
        }
    } else {
        for (out, x) in periods {
            for j in 0..W {
                store_vector::<S, STREAM>(
                    s,
                    &mut out[j],
                    affine::<S, SCALED>(s, s.load(&x[j]), &k[j]),
                );
            }
        }
        segment_map::<S, SCALED, STREAM, REV>(s, from_cut, cut, windows);
    }
}

/// Vectors per column tile of [`tiled_periods`].
const TILE: usize = 4;
/// Periods per block of [`tiled_periods`].
const TILE_PERIODS: usize = 8;
/// Vector registers [`tiled_periods`] needs: up to four coefficient windows
/// per tile vector, plus the values in flight. Only AVX-512 has them; on
/// AVX2 and Portable the tiles spilled and ran 12-20% slower than the
/// per-vector windows.
const TILE_MIN_REGISTERS: usize = 24;

/// [`pattern_body`]'s repeating segments when a period is `full` vectors, a
/// multiple of [`TILE`] above it (multiples of 64 channels from 128 on): in
/// blocks of [`TILE_PERIODS`] periods, one column tile of `TILE` vectors at
/// a time, its coefficient windows held in registers down the block, where
/// [`segment_map`] loads three or four windows per vector. A cut period at
/// the end goes through [`segment_map`]. Walking backward (`REV`) reverses
/// blocks, tiles, periods and vectors. The same map per value, so the same
/// bits. Measured, NHWC, one thread, AVX-512 (a modest gain on this noisy
/// machine): harness, inference `[8, 256, 28, 28]`, three alternations,
/// 198-207 -> 185-193 µs (NCHW 179-183 µs); bench tool, medians of 3
/// alternations, inference `[8, 256, 28, 28]` 237 -> 220 µs, `[64, 512, 7,
/// 7]` 239 -> 229 µs, training 445 -> 394 µs and 495 -> 450 µs in one
/// sitting, and within 3% either way in the next.
#[inline(always)]
fn tiled_periods<S: Simd, const SCALED: bool, const STREAM: bool, const REV: bool>(
    s: S,
    from: &[[f32; LANES]],
    body: &mut [[f32; LANES]],
    windows: Windows<'_>,
    full: usize,
) {
    let whole = body.len() / full;
    let (body, cut) = body.split_at_mut(whole * full);
    let (from, from_cut) = from.split_at(whole * full);
    if REV {
        segment_map::<S, SCALED, STREAM, REV>(s, from_cut, cut, windows);
    }
    let blocks = whole.div_ceil(TILE_PERIODS);
    let tiles = full / TILE;
    for bi in 0..blocks {
        let block = if REV { blocks - 1 - bi } else { bi };
        let (p0, p1) = (
            block * TILE_PERIODS,
            ((block + 1) * TILE_PERIODS).min(whole),
        );
        for ti in 0..tiles {
            let t0 = TILE * if REV { tiles - 1 - ti } else { ti };
            let k = [
                window_coefs::<S, SCALED>(s, windows, t0),
                window_coefs::<S, SCALED>(s, windows, t0 + 1),
                window_coefs::<S, SCALED>(s, windows, t0 + 2),
                window_coefs::<S, SCALED>(s, windows, t0 + 3),
            ];
            for pi in 0..p1 - p0 {
                let at = full * if REV { p1 - 1 - pi } else { p0 + pi } + t0;
                let x: &[[f32; LANES]; TILE] = from[at..at + TILE].try_into().expect("TILE");
                let out: &mut [[f32; LANES]; TILE] =
                    (&mut body[at..at + TILE]).try_into().expect("TILE");
                for jj in 0..TILE {
                    let j = if REV { TILE - 1 - jj } else { jj };
                    store_vector::<S, STREAM>(
                        s,
                        &mut out[j],
                        affine::<S, SCALED>(s, s.load(&x[j]), &k[j]),
                    );
                }
            }
        }
    }
    if !REV {
        segment_map::<S, SCALED, STREAM, REV>(s, from_cut, cut, windows);
    }
}

/// Coefficient window `j` of a segment.
#[inline(always)]
fn window_coefs<S: Simd, const SCALED: bool>(
    s: S,
    (sc, hi, a, b): Windows<'_>,
    j: usize,
) -> Affine<S> {
    Affine {
        scale: if SCALED { s.load(&sc[j]) } else { s.splat(1.0) },
        hi: s.load(&hi[j]),
        a: s.load(&a[j]),
        b: s.load(&b[j]),
    }
}

/// A streaming store when STREAM, a plain one otherwise.
#[inline(always)]
fn store_vector<S: Simd, const STREAM: bool>(s: S, out: &mut [f32; LANES], y: S::V) {
    if STREAM {
        s.store_stream(out, y)
    } else {
        s.store(out, y)
    }
}

type Windows<'a> = (
    &'a [[f32; LANES]],
    &'a [[f32; LANES]],
    &'a [[f32; LANES]],
    &'a [[f32; LANES]],
);

/// `y = affine(x)` over one segment, coefficient windows zipped with the
/// values (stops at the shorter: the last segment may be cut short).
#[inline(always)]
fn segment_map<S: Simd, const SCALED: bool, const STREAM: bool, const REV: bool>(
    s: S,
    from: &[[f32; LANES]],
    body: &mut [[f32; LANES]],
    (sc, hi, a, b): Windows<'_>,
) {
    let coefs = hi.iter().zip(a).zip(b).enumerate();
    let vectors = body.iter_mut().zip(from).zip(coefs);
    if REV {
        for ((out, x), (j, ((h, a), b))) in vectors.rev() {
            window_vector::<S, SCALED, STREAM>(s, out, x, sc, j, [h, a, b]);
        }
    } else {
        for ((out, x), (j, ((h, a), b))) in vectors {
            window_vector::<S, SCALED, STREAM>(s, out, x, sc, j, [h, a, b]);
        }
    }
}

/// One vector of [`segment_map`]: `x` through the windows `hab` (and
/// `sc[j]` when SCALED) into `out`.
#[inline(always)]
fn window_vector<S: Simd, const SCALED: bool, const STREAM: bool>(
    s: S,
    out: &mut [f32; LANES],
    x: &[f32; LANES],
    sc: &[[f32; LANES]],
    j: usize,
    [h, a, b]: [&[f32; LANES]; 3],
) {
    let k = Affine {
        scale: if SCALED { s.load(&sc[j]) } else { s.splat(1.0) },
        hi: s.load(h),
        a: s.load(a),
        b: s.load(b),
    };
    store_vector::<S, STREAM>(s, out, affine::<S, SCALED>(s, s.load(x), &k));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recursive(items: &[Moments]) -> Moments {
        match items.len() {
            0 => Moments::new(),
            1 => items[0],
            n => {
                let mid = 1usize << (usize::BITS - 1 - (n - 1).leading_zeros());
                recursive(&items[..mid]).merge(&recursive(&items[mid..]))
            }
        }
    }

    #[test]
    fn tree_matches_recursive_split() {
        for n in 0..40usize {
            let items: Vec<Moments> = (0..n)
                .map(|i| Moments {
                    count: 3 + i as u64 % 5,
                    mean: (i as f64 * 0.37).sin() * 10.0,
                    m2: 1.0 + i as f64 * 0.1,
                })
                .collect();
            let mut t = TreeMerge::new();
            items.iter().for_each(|m| t.push(*m));
            assert_eq!(t.finish(), recursive(&items), "n = {n}");
        }
    }

    /// Chunks whose sampled rows are outliers in one channel: that channel's
    /// pilot centre lands many standard deviations from its mean, and its
    /// moments must still be accurate (the recentring pass, which reruns only
    /// the column groups holding that channel), with the same bits on every
    /// ISA. Fails with the recentre disabled (the mean off by 1.0e-6
    /// standard deviations, 1.2e-7 with it: the cancellation that pass
    /// exists for) and with the partial rerun inverted.
    #[test]
    fn unrepresentative_pilot_rows_are_recentred() {
        for channels in [1, 5, 64, 100] {
            let rows = chunk_rows(channels);
            let period = pattern_period(channels);
            let full = rows * channels / period;
            let pilots = full.min(PILOT_ROWS);
            // Pattern row q holds data rows q * period / channels onwards.
            let pilot_row = |r: usize| {
                let q = r * channels / period;
                (0..pilots).any(|i| i * full / pilots == q)
            };
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut noise = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
            };
            let x: Vec<f32> = (0..rows * channels)
                .map(|i| {
                    let (r, c) = (i / channels, i % channels);
                    let outlier = pilot_row(r) && c == channels / 3;
                    let base = if outlier { 100.0 } else { 0.5 * c as f32 };
                    base + 1e-3 * noise()
                })
                .collect();
            // Every available ISA through the dispatch table, Portable first.
            let run = |isa: crate::Isa| {
                let (mut mean, mut m2) = (vec![0.0; channels], vec![0.0; channels]);
                let k = crate::Isa::kernels(Some(isa)).expect("available");
                (k.bn_chunk_moments)(ChunkJob {
                    input: &x,
                    channels,
                    chunk_rows: rows,
                    mean: &mut mean,
                    m2: &mut m2,
                    scratch: &mut vec![0.0; CHUNK_SCRATCH * period],
                    totals: &mut vec![0.0; 3 * channels],
                });
                (mean, m2)
            };
            let (mean, m2) = run(crate::Isa::Portable);
            for isa in crate::Isa::available() {
                let (mi, m2i) = run(isa);
                let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&mi), bits(&mean), "C={channels} {isa}: mean");
                assert_eq!(bits(&m2i), bits(&m2), "C={channels} {isa}: M2");
            }
            for c in 0..channels {
                let exact = channel_moments_f64(&x, channels, c);
                let (dm, dm2) = (mean[c] - exact.mean, m2[c] - exact.m2);
                let std = (exact.m2 / rows as f64).sqrt();
                assert!(
                    dm.abs() <= 5e-7 * std,
                    "C={channels} c={c}: mean off by {:e} std",
                    dm / std
                );
                assert!(
                    dm2.abs() <= 1e-5 * exact.m2,
                    "C={channels} c={c}: M2 off by {:e}",
                    dm2 / exact.m2
                );
            }
        }
    }

    #[test]
    fn period_is_lcm() {
        assert_eq!(pattern_period(64), 64);
        assert_eq!(pattern_period(3), 48);
        assert_eq!(pattern_period(24), 48);
        assert_eq!(pattern_period(1), 16);
        assert!(chunk_rows(3) == 1024 && chunk_rows(512) == 128 && chunk_rows(100_000) == 16);
    }
}
