//! The operator's engine room: statistics and the affine map over a whole
//! tensor, split across threads in ways that never change the bits.

use crate::kernels::Kernels;
use crate::kernels::channels::{
    self, ChannelPlanesJob, ChunkJob, PatternJob, PlaneJob, PlaneStatsJob,
};
use crate::parallel::MIN_ELEMS_PER_TASK;
use crate::simd::LANES;

/// Outputs at least this large are written with non-temporal stores. The
/// same value as `row_norm::STREAM_MIN_BYTES` (see the reasoning there); kept
/// in step by hand.
const STREAM_MIN_BYTES: usize = 16 << 20;

/// Whether `elems` values of output should be streamed past the caches.
pub(super) fn stream_for(elems: usize) -> bool {
    elems.saturating_mul(4) >= STREAM_MIN_BYTES
}

fn threads(parallel: bool) -> bool {
    #[cfg(feature = "rayon")]
    {
        parallel && rayon::current_num_threads() > 1
    }
    #[cfg(not(feature = "rayon"))]
    {
        let _ = parallel;
        false
    }
}

fn join(a: impl FnOnce() + Send, b: impl FnOnce() + Send) {
    #[cfg(feature = "rayon")]
    rayon::join(a, b);
    #[cfg(not(feature = "rayon"))]
    {
        a();
        b();
    }
}

/// Whether `items` items of `work` values each are worth splitting in two.
fn split(parallel: bool, items: usize, work: usize) -> bool {
    parallel && items >= 2 && items.saturating_mul(work) >= 2 * MIN_ELEMS_PER_TASK
}

/// The memory layout the kernels see: planes (NCHW with spatial > 1) or rows
/// of channels (NHWC, and NCHW with spatial == 1, which is the same memory).
#[derive(Clone, Copy, Debug)]
pub(super) struct Geometry {
    pub n: usize,
    pub c: usize,
    pub spatial: usize,
    pub rows_of_channels: bool,
}

/// Per-channel mean and M2 of `x` into `mean`, `m2` (`c` long each); the
/// count is `n * spatial`. NCHW: moments of units of `unit_samples(spatial)`
/// samples merged in tree order;
/// NHWC: chunk moments merged over chunks in tree order. `n * spatial > 0`.
pub(super) fn moments(
    k: &Kernels,
    g: Geometry,
    x: &[f32],
    mean: &mut [f64],
    m2: &mut [f64],
    parallel: bool,
) {
    let par = threads(parallel);
    if g.rows_of_channels {
        rows_moments(k, g, x, mean, m2, par)
    } else {
        plane_moments(k, g, x, 0, mean, m2, par)
    }
}

fn plane_moments(
    k: &Kernels,
    g: Geometry,
    x: &[f32],
    c0: usize,
    mean: &mut [f64],
    m2: &mut [f64],
    par: bool,
) {
    let cs = mean.len();
    if split(par, cs, g.n * g.spatial) {
        let h = cs / 2;
        let (mean_lo, mean_hi) = mean.split_at_mut(h);
        let (m2_lo, m2_hi) = m2.split_at_mut(h);
        join(
            || plane_moments(k, g, x, c0, mean_lo, m2_lo, par),
            || plane_moments(k, g, x, c0 + h, mean_hi, m2_hi, par),
        );
        return;
    }
    (k.bn_plane_moments)(PlaneStatsJob {
        input: x,
        n: g.n,
        channels: g.c,
        spatial: g.spatial,
        first_channel: c0,
        mean,
        m2,
    })
}

fn rows_moments(k: &Kernels, g: Geometry, x: &[f32], mean: &mut [f64], m2: &mut [f64], par: bool) {
    let c = g.c;
    let rows = g.n * g.spatial;
    let r = channels::chunk_rows(c);
    let chunks = rows.div_ceil(r);
    // Per-(chunk, channel) moments: an O(rows / R * C) buffer per call.
    let mut cmean = vec![0.0f64; chunks * c];
    let mut cm2 = vec![0.0f64; chunks * c];
    chunk_pass(k, x, c, r, &mut cmean, &mut cm2, par);
    // Merge chunks bottom-up: blocks of 2^j chunks aligned at multiples of
    // 2^j, the tree of `channels::TreeMerge`, vectorizable across channels.
    let mut count: Vec<u64> = (0..chunks).map(|i| (rows - i * r).min(r) as u64).collect();
    let mut step = 1;
    while step < chunks {
        let mut i = 0;
        while i + step < chunks {
            let j = i + step;
            let (na, nb) = (count[i] as f64, count[j] as f64);
            count[i] += count[j];
            let n = count[i] as f64;
            let (fb, fab) = (nb / n, na * nb / n);
            let (left, right) = cmean.split_at_mut(j * c);
            let (left2, right2) = cm2.split_at_mut(j * c);
            let (ma, mb) = (&mut left[i * c..i * c + c], &right[..c]);
            let (qa, qb) = (&mut left2[i * c..i * c + c], &right2[..c]);
            for ch in 0..c {
                let delta = mb[ch] - ma[ch];
                ma[ch] += delta * fb;
                qa[ch] = qa[ch] + qb[ch] + delta * delta * fab;
            }
            i += 2 * step;
        }
        step *= 2;
    }
    mean.copy_from_slice(&cmean[..c]);
    m2.copy_from_slice(&cm2[..c]);
}

fn chunk_pass(
    k: &Kernels,
    x: &[f32],
    c: usize,
    r: usize,
    mean: &mut [f64],
    m2: &mut [f64],
    par: bool,
) {
    let chunks = mean.len() / c;
    if split(par, chunks, r * c) {
        let h = chunks / 2;
        let (x_lo, x_hi) = x.split_at(h * r * c);
        let (mean_lo, mean_hi) = mean.split_at_mut(h * c);
        let (m2_lo, m2_hi) = m2.split_at_mut(h * c);
        join(
            || chunk_pass(k, x_lo, c, r, mean_lo, m2_lo, par),
            || chunk_pass(k, x_hi, c, r, mean_hi, m2_hi, par),
        );
        return;
    }
    let mut scratch = vec![0.0f32; channels::CHUNK_SCRATCH * channels::pattern_period(c)];
    let mut totals = vec![0.0f64; 3 * c];
    (k.bn_chunk_moments)(ChunkJob {
        input: x,
        channels: c,
        chunk_rows: r,
        mean,
        m2,
        scratch: &mut scratch,
        totals: &mut totals,
    });
}

/// Per-channel coefficients of `y = (x - hi) * scale * a + b`.
pub(super) struct Coefficients {
    /// Powers of two, `None` when all are 1 (the usual case).
    pub scale: Option<Vec<f32>>,
    pub hi: Vec<f32>,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// `log2` of the power of two that keeps `a = rstd * gamma` of a channel
/// inside `[2^-64, 2^64]` (0 for most channels): a channel of spread
/// ~1e-40 (subnormals) with `eps = 0` has `rstd` ~1e40, beyond f32. The
/// scale multiplies `x - hi` (exact: a power of two), never `x` itself, so
/// it overflows only where `y` would: scaling `x` first turned a channel of
/// huge mean and huge `a` into `inf - inf` (found by fuzzing).
fn apply_scale_log2(a: f64) -> i32 {
    if !a.is_finite() || a == 0.0 {
        return 0;
    }
    let e = ((a.to_bits() >> 52) & 0x7ff) as i32 - 1023;
    let k = if e > 64 {
        e - 64
    } else if e < -64 {
        e + 64
    } else {
        0
    };
    k.clamp(-126, 126)
}

impl Coefficients {
    /// From a per-channel mean (f64, split into hi + lo) and rstd (f64).
    pub(super) fn new(
        c: usize,
        mean: impl Fn(usize) -> f64,
        rstd: impl Fn(usize) -> f64,
        weight: Option<&[f32]>,
        bias: Option<&[f32]>,
    ) -> Self {
        let mut out = Coefficients {
            scale: None,
            hi: Vec::with_capacity(c),
            a: Vec::with_capacity(c),
            b: Vec::with_capacity(c),
        };
        let mut scale = Vec::with_capacity(c);
        for ch in 0..c {
            let [sc, hi, a, b] = channel_coefficients(
                mean(ch),
                rstd(ch),
                weight.map(|w| w[ch]),
                bias.map(|b| b[ch]),
            );
            scale.push(sc);
            out.hi.push(hi);
            out.a.push(a);
            out.b.push(b);
        }
        if scale.iter().any(|&v| v != 1.0) {
            out.scale = Some(scale);
        }
        out
    }
}

/// One channel's `[scale, hi, a, b]` from its mean and rstd (f64).
fn channel_coefficients(mean: f64, rstd: f64, weight: Option<f32>, bias: Option<f32>) -> [f32; 4] {
    let a = rstd * weight.map_or(1.0, |w| w as f64);
    let sc = 2f64.powi(apply_scale_log2(a));
    let hi = mean as f32;
    let lo = mean - hi as f64;
    let beta = bias.map_or(0.0, |b| b as f64);
    // lo * a is exactly 0 when lo is 0, so b == beta bit for bit.
    let b = if lo == 0.0 { beta } else { beta - lo * a };
    [sc as f32, hi, (a / sc) as f32, b as f32]
}

/// What turns a channel's batch moments into its training coefficients.
pub(super) struct Normalization<'a> {
    /// Values per channel.
    pub count: u64,
    pub eps: f32,
    pub weight: Option<&'a [f32]>,
    pub bias: Option<&'a [f32]>,
}

impl Normalization<'_> {
    /// `1 / sqrt(M2 / count + eps)`: the batch rstd, biased variance.
    pub(super) fn rstd(&self, m2: f64) -> f64 {
        1.0 / (m2 / self.count as f64 + self.eps as f64).sqrt()
    }
}

/// Bytes of input per channel group of [`train_planes`]: the group and the
/// next one (prefetched while the group is written; the output is streamed)
/// stay inside a 1 MiB L2. A channel larger than this is a group of its own.
const TRAIN_GROUP_BYTES: usize = 256 << 10;

/// Whether [`train_planes`] runs this training step: NCHW planes of at least
/// 256 values (written with streaming stores) in a tensor large enough to
/// stream (below that, the separate output pass reads `x` back from L3
/// anyway), and, when threads share it, enough channels to give each thread
/// a few (it spreads channels, not planes).
///
/// Measured, one thread, A/B against moments-then-apply: `[32, 64, 56, 56]`
/// 2753 -> 2456 µs, `[16, 64, 112, 112]` 6796 -> 5277 µs, `[32, 256, 28, 28]`
/// 3823 -> 3282 µs; but short planes lost (`[256, 512, 7, 7]` 4989 -> 8998 µs:
/// they are stored through the cache, a few hundred bytes per sample and
/// group; prefetching the output lines too, or groups of 32-128 KiB, did not
/// help), and so did cache-sized tensors (`[8, 256, 28, 28]` 457 -> 499 µs).
pub(super) fn fuses_training(g: Geometry, parallel: bool) -> bool {
    let elems = g.n.saturating_mul(g.c).saturating_mul(g.spatial);
    if g.rows_of_channels || g.spatial < 256 || !stream_for(elems) {
        return false;
    }
    #[cfg(feature = "rayon")]
    if threads(parallel) {
        return g.c >= 4 * rayon::current_num_threads();
    }
    let _ = parallel;
    true
}

/// Per-channel columns of one channel range of [`train_planes`].
struct ChannelColumns<'a> {
    mean: &'a mut [f64],
    m2: &'a mut [f64],
    scale: &'a mut [f32],
    hi: &'a mut [f32],
    a: &'a mut [f32],
    b: &'a mut [f32],
}

impl<'a> ChannelColumns<'a> {
    fn split_at(self, h: usize) -> (ChannelColumns<'a>, ChannelColumns<'a>) {
        let (mean_lo, mean_hi) = self.mean.split_at_mut(h);
        let (m2_lo, m2_hi) = self.m2.split_at_mut(h);
        let (scale_lo, scale_hi) = self.scale.split_at_mut(h);
        let (hi_lo, hi_hi) = self.hi.split_at_mut(h);
        let (a_lo, a_hi) = self.a.split_at_mut(h);
        let (b_lo, b_hi) = self.b.split_at_mut(h);
        (
            ChannelColumns {
                mean: mean_lo,
                m2: m2_lo,
                scale: scale_lo,
                hi: hi_lo,
                a: a_lo,
                b: b_lo,
            },
            ChannelColumns {
                mean: mean_hi,
                m2: m2_hi,
                scale: scale_hi,
                hi: hi_hi,
                a: a_hi,
                b: b_hi,
            },
        )
    }
}

/// Training forward over NCHW planes in one sweep of `x`: channel group by
/// channel group, the group's moments (as [`moments`]), its coefficients, then
/// its outputs while the next group's planes are prefetched into L2, so the
/// next moments read from cache and `x` comes from memory once, not twice.
/// Every channel's moments, coefficients and outputs are computed exactly as
/// by [`moments`], [`Coefficients::new`] and [`apply`]: the same bits.
/// Threads take contiguous channel ranges. Allocates O(`n`) per range for the
/// per-sample output slices, besides the O(`c`) coefficients returned.
#[allow(clippy::too_many_arguments)]
pub(super) fn train_planes(
    k: &Kernels,
    g: Geometry,
    x: &[f32],
    y: &mut [f32],
    mean: &mut [f64],
    m2: &mut [f64],
    norm: &Normalization<'_>,
    parallel: bool,
) -> Coefficients {
    let par = threads(parallel);
    let c = g.c;
    let mut scale = vec![1.0f32; c];
    let mut coef = Coefficients {
        scale: None,
        hi: vec![0.0; c],
        a: vec![0.0; c],
        b: vec![0.0; c],
    };
    #[cfg(feature = "rayon")]
    let per_task = if par {
        c.div_ceil(rayon::current_num_threads())
    } else {
        c
    };
    #[cfg(not(feature = "rayon"))]
    let per_task = c;
    let plan = TrainPlan {
        k,
        g,
        x,
        norm,
        group: (TRAIN_GROUP_BYTES / (g.n * g.spatial * 4).max(1)).max(1),
        per_task,
        stream: stream_for(y.len()),
        reverse: crate::kernels::walk_backward(x, y),
        par,
    };
    let mut outs: Vec<&mut [f32]> = y.chunks_exact_mut(c * g.spatial).collect();
    let cols = ChannelColumns {
        mean,
        m2,
        scale: &mut scale,
        hi: &mut coef.hi,
        a: &mut coef.a,
        b: &mut coef.b,
    };
    plan.channel_range(&mut outs, 0, cols);
    drop(outs);
    if scale.iter().any(|&v| v != 1.0) {
        coef.scale = Some(scale);
    }
    redo_overflowed_differences(g, x, y, &coef);
    canonicalize_nan_channels(g, y, &coef);
    coef
}

/// The fixed inputs of one [`train_planes`] call.
struct TrainPlan<'a> {
    k: &'a Kernels,
    g: Geometry,
    x: &'a [f32],
    norm: &'a Normalization<'a>,
    /// Channels per group.
    group: usize,
    /// Channels per thread at most.
    per_task: usize,
    stream: bool,
    /// Walk the output backward (see `kernels::walk_backward`).
    reverse: bool,
    par: bool,
}

impl TrainPlan<'_> {
    /// Channels `c0..c0 + cols.hi.len()`; `outs[n]` is those channels' planes
    /// of sample `n`.
    fn channel_range(&self, outs: &mut [&mut [f32]], c0: usize, cols: ChannelColumns<'_>) {
        let cs = cols.hi.len();
        let g = self.g;
        if self.par && cs > self.per_task {
            let h = cs / 2;
            let (mut lo, mut hi): (Vec<&mut [f32]>, Vec<&mut [f32]>) = outs
                .iter_mut()
                .map(|o| std::mem::take(o).split_at_mut(h * g.spatial))
                .unzip();
            let (cols_lo, cols_hi) = cols.split_at(h);
            join(
                || self.channel_range(&mut lo, c0, cols_lo),
                || self.channel_range(&mut hi, c0 + h, cols_hi),
            );
            return;
        }
        let mut i = 0;
        while i < cs {
            let end = (i + self.group).min(cs);
            let next = self.group.min(cs - end);
            (self.k.bn_plane_moments)(PlaneStatsJob {
                input: self.x,
                n: g.n,
                channels: g.c,
                spatial: g.spatial,
                first_channel: c0 + i,
                mean: &mut cols.mean[i..end],
                m2: &mut cols.m2[i..end],
            });
            for j in i..end {
                let ch = c0 + j;
                [cols.scale[j], cols.hi[j], cols.a[j], cols.b[j]] = channel_coefficients(
                    cols.mean[j],
                    self.norm.rstd(cols.m2[j]),
                    self.norm.weight.map(|w| w[ch]),
                    self.norm.bias.map(|b| b[ch]),
                );
            }
            let scaled = cols.scale[i..end].iter().any(|&v| v != 1.0);
            (self.k.bn_apply_channel_planes)(ChannelPlanesJob {
                input: self.x,
                outputs: outs,
                offset: i,
                spatial: g.spatial,
                channels: g.c,
                first_channel: c0 + i,
                scale: scaled.then(|| &cols.scale[i..end]),
                hi: &cols.hi[i..end],
                a: &cols.a[i..end],
                b: &cols.b[i..end],
                prefetch: next,
                stream: self.stream,
                reverse: self.reverse,
            });
            i = end;
        }
    }
}

/// Values per block of an output pass walked from the end (128 KiB).
const BACKWARD_BLOCK: usize = 1 << 15;

/// Writes `y = (x - hi[c]) * scale[c] * a[c] + b[c]` over the whole tensor.
///
/// `after_stats`: a statistics pass over `x` has just run (training). Then
/// streamed tensors (16 MiB and more) are walked from the end, block by
/// block (each thread its own part), so the output pass starts on the lines
/// the statistics pass read last, still in L2 and L3, rather than on the
/// ones it read first and L3 has since let go. Element-wise, so the same
/// bits. NHWC training `[32, 64, 56, 56]` (fits the 32 MiB L3), one thread:
/// from -8% to +18% over seven A/B runs, +4% (3115 -> 2997 µs) over the
/// longest (12 alternations); a modest gain on this noisy machine.
pub(super) fn apply(
    k: &Kernels,
    g: Geometry,
    x: &[f32],
    y: &mut [f32],
    coef: &Coefficients,
    parallel: bool,
    after_stats: bool,
) {
    let par = threads(parallel);
    let stream = stream_for(y.len());
    let backward = after_stats && stream;
    let reverse = crate::kernels::walk_backward(x, y);
    if g.rows_of_channels {
        let period = channels::pattern_period(g.c);
        let pattern = |v: &[f32]| LinePattern::new(v, period);
        let (hi, a, b) = (pattern(&coef.hi), pattern(&coef.a), pattern(&coef.b));
        let scale = coef.scale.as_deref().map(pattern);
        let job = PatternJob {
            input: x,
            output: y,
            phase: 0,
            period,
            scale: scale.as_ref().map(LinePattern::values),
            hi: hi.values(),
            a: a.values(),
            b: b.values(),
            stream,
            reverse,
        };
        apply_flat(k, job, par, backward);
    } else {
        let job = PlaneJob {
            input: x,
            output: y,
            spatial: g.spatial,
            channels: g.c,
            first_channel: 0,
            scale: coef.scale.as_deref(),
            hi: &coef.hi,
            a: &coef.a,
            b: &coef.b,
            stream,
            reverse,
        };
        apply_planes(k, job, par, backward);
    }
    redo_overflowed_differences(g, x, y, coef);
    canonicalize_nan_channels(g, y, coef);
}

/// A channel's coefficients repeated over one pattern period plus `LANES`
/// values (`values()[i]` = `v[i % C]`), starting on a 64-byte boundary.
///
/// For periods longer than 4 vectors the NHWC output pass loads one
/// coefficient window per vector of data; from a plain `Vec` (16-byte
/// aligned) each window would straddle two cache lines, two loads instead
/// of one, three times per vector. Measured (inference, one thread, median
/// of 61 calls, windows one float off a line against on it): `[8, 192, 28, 28]`
/// 159 -> 116-129 µs, NCHW 119-122 µs in the same sitting.
struct LinePattern {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl LinePattern {
    fn new(v: &[f32], period: usize) -> Self {
        let len = period + LANES;
        // 15 spare values: some start among the first 16 is on a line.
        let mut buf = vec![0.0f32; len + 15];
        let start = (64 - buf.as_ptr() as usize % 64) % 64 / 4;
        for (i, out) in buf[start..start + len].iter_mut().enumerate() {
            *out = v[i % v.len()];
        }
        LinePattern { buf, start, len }
    }

    fn values(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.len]
    }
}

/// Centres at least this large can overflow `x - hi` for some finite `x`:
/// `|x - hi| <= f32::MAX + |hi|` rounds to infinity only once `|hi|` reaches
/// half an ulp of f32::MAX, 2^103. 2^100 leaves a margin.
const HUGE_CENTRE: f32 = 1_267_650_600_228_229_401_496_703_205_376.0; // 2^100

/// Recomputes, in scalar code, the outputs whose difference `x - hi`
/// overflowed f32 though `y` itself may be finite (x and the mean near
/// ±f32::MAX on opposite sides; found by fuzzing). Such elements come out of
/// the kernel as ±inf or NaN; here they are computed as
/// `(x/2 - hi/2) * scale * (2a) + b`: halving is exact at these magnitudes and
/// rounding commutes with powers of two, so where the plain difference does
/// not overflow this is the same value bit for bit, and where it does the
/// result is the correctly scaled one. Only channels with `|hi| >= 2^100`
/// are scanned, so ordinary tensors pay one comparison per channel.
fn redo_overflowed_differences(g: Geometry, x: &[f32], y: &mut [f32], coef: &Coefficients) {
    let redo = |c: usize, x: f32, y: &mut f32| {
        if x.is_finite() && !y.is_finite() {
            let scale = coef.scale.as_ref().map_or(1.0, |s| s[c]);
            let d = x * 0.5 - coef.hi[c] * 0.5;
            *y = d * scale * (coef.a[c] * 2.0) + coef.b[c];
        }
    };
    for c in (0..g.c).filter(|&c| coef.hi[c].abs() >= HUGE_CENTRE) {
        if g.rows_of_channels {
            let ys = y.iter_mut().skip(c).step_by(g.c);
            let xs = x.iter().skip(c).step_by(g.c);
            xs.zip(ys).for_each(|(&x, y)| redo(c, x, y));
        } else {
            let ys = y.chunks_mut(g.spatial).skip(c).step_by(g.c);
            let xs = x.chunks(g.spatial).skip(c).step_by(g.c);
            for (xp, yp) in xs.zip(ys) {
                xp.iter().zip(yp).for_each(|(&x, y)| redo(c, x, y));
            }
        }
    }
}

/// Rewrites the output of every channel whose coefficients are not finite
/// (a NaN or ±inf in its batch statistics, or in the running statistics
/// given) as the one canonical NaN. The arithmetic already made those
/// outputs NaN, but with two NaN operands x86 returns the first one's
/// payload and LLVM may commute operands differently per ISA, so the bits
/// would differ between ISAs (found by fuzzing). O(c) to check; the rewrite
/// touches only such channels.
fn canonicalize_nan_channels(g: Geometry, y: &mut [f32], coef: &Coefficients) {
    let finite = |c: usize| {
        coef.hi[c].is_finite()
            && coef.a[c].is_finite()
            && coef.b[c].is_finite()
            && coef.scale.as_ref().is_none_or(|s| s[c].is_finite())
    };
    for c in (0..g.c).filter(|&c| !finite(c)) {
        if g.rows_of_channels {
            y.iter_mut()
                .skip(c)
                .step_by(g.c)
                .for_each(|v| *v = f32::NAN);
        } else {
            for plane in y.chunks_mut(g.spatial).skip(c).step_by(g.c) {
                plane.fill(f32::NAN);
            }
        }
    }
}

fn apply_planes(k: &Kernels, job: PlaneJob<'_>, par: bool, backward: bool) {
    let planes = job.input.len() / job.spatial;
    if split(par, planes, job.spatial) {
        let h = planes / 2;
        let (x_lo, x_hi) = job.input.split_at(h * job.spatial);
        let (y_lo, y_hi) = job.output.split_at_mut(h * job.spatial);
        let first_hi = (job.first_channel + h) % job.channels;
        let lo = PlaneJob {
            input: x_lo,
            output: y_lo,
            ..job
        };
        let hi = PlaneJob {
            input: x_hi,
            output: y_hi,
            first_channel: first_hi,
            ..lo
        };
        join(
            || apply_planes(k, lo, par, backward),
            || apply_planes(k, hi, par, backward),
        );
        return;
    }
    if !backward {
        return (k.bn_apply_planes)(job);
    }
    let block = (BACKWARD_BLOCK / job.spatial).max(1);
    let PlaneJob { input, output, .. } = job;
    for b in (0..planes.div_ceil(block)).rev() {
        let (p0, p1) = (b * block, ((b + 1) * block).min(planes));
        let (x0, x1) = (p0 * job.spatial, p1 * job.spatial);
        (k.bn_apply_planes)(PlaneJob {
            input: &input[x0..x1],
            output: &mut output[x0..x1],
            first_channel: (job.first_channel + p0) % job.channels,
            ..job
        });
    }
}

fn apply_flat(k: &Kernels, job: PatternJob<'_>, par: bool, backward: bool) {
    let n = job.input.len();
    let blocks = n / LANES;
    if split(par, blocks, LANES) {
        let h = blocks / 2 * LANES;
        let (x_lo, x_hi) = job.input.split_at(h);
        let (y_lo, y_hi) = job.output.split_at_mut(h);
        let phase_hi = (job.phase + h) % job.period;
        let lo = PatternJob {
            input: x_lo,
            output: y_lo,
            ..job
        };
        let hi = PatternJob {
            input: x_hi,
            output: y_hi,
            phase: phase_hi,
            ..lo
        };
        join(
            || apply_flat(k, lo, par, backward),
            || apply_flat(k, hi, par, backward),
        );
        return;
    }
    if !backward {
        return (k.bn_apply_pattern)(job);
    }
    let PatternJob { input, output, .. } = job;
    for b in (0..n.div_ceil(BACKWARD_BLOCK)).rev() {
        let (start, end) = (b * BACKWARD_BLOCK, ((b + 1) * BACKWARD_BLOCK).min(n));
        (k.bn_apply_pattern)(PatternJob {
            input: &input[start..end],
            output: &mut output[start..end],
            phase: (job.phase + start) % job.period,
            ..job
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;

    /// Deterministic values around `offset`, spread `spread`.
    fn values(len: usize, seed: u64, offset: f32, spread: f32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                offset + spread * ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            })
            .collect()
    }

    /// The output pass walked from the end (training, streamed tensors)
    /// writes the same bits as the forward walk, for both loop shapes, with
    /// and without threads.
    #[test]
    fn backward_output_pass_gives_same_bits() {
        let min = STREAM_MIN_BYTES / 4;
        let geometries = [
            Geometry {
                n: 3,
                c: 7,
                spatial: min / 21 + 1,
                rows_of_channels: false,
            },
            Geometry {
                n: min / 24 + 3,
                c: 24,
                spatial: 1,
                rows_of_channels: true,
            },
        ];
        let k = Isa::kernels(Some(Isa::best())).expect("best");
        for g in geometries {
            let len = g.n * g.c * g.spatial;
            assert!(stream_for(len));
            let x = values(len, 3, 1.0, 4.0);
            let mean = values(g.c, 4, 1.0, 1.0);
            let rstd = values(g.c, 5, 2.0, 1.0);
            let coef = Coefficients::new(g.c, |c| mean[c] as f64, |c| rstd[c] as f64, None, None);
            let mut want = vec![0.0; len];
            apply(k, g, &x, &mut want, &coef, false, false);
            for parallel in [false, true] {
                let mut y = vec![0.0; len];
                apply(k, g, &x, &mut y, &coef, parallel, true);
                let same = y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{g:?} parallel {parallel}");
            }
        }
    }

    /// The fused sweep against moments, then coefficients, then the output
    /// pass: the same bits on every ISA, with and without threads, over
    /// uneven groups, channels that need a power-of-two scale, a NaN
    /// channel and channels of huge mean.
    #[test]
    fn train_planes_matches_moments_then_apply() {
        // (n, c, spatial): one channel per group, many groups with an
        // uneven last one, short and long planes.
        let shapes = [(3, 5, 300), (4, 9, 9000), (1, 70, 1000), (2, 3, 17)];
        for (n, c, spatial) in shapes {
            let g = Geometry {
                n,
                c,
                spatial,
                rows_of_channels: false,
            };
            let mut x = values(n * c * spatial, (n * c + spatial) as u64, 3.0, 2.0);
            for sample in 0..n {
                let plane = |ch: usize| (sample * c + ch) * spatial;
                // Channel 1: subnormal spread, beyond f32 once divided
                // by (eps = 0). Channel 2: huge mean. Last: one NaN.
                for v in &mut x[plane(1)..plane(1) + spatial] {
                    *v *= 1e-41;
                }
                for v in &mut x[plane(2)..plane(2) + spatial] {
                    *v = *v * 1e3 + 1e30;
                }
            }
            x[(c - 1) * spatial + spatial / 2] = f32::NAN;
            let weight = values(c, 7, 1.0, 0.5);
            let bias = values(c, 8, 0.0, 1.0);
            let norm = Normalization {
                count: (n * spatial) as u64,
                eps: 0.0,
                weight: Some(&weight),
                bias: Some(&bias),
            };
            for isa in Isa::available() {
                let k = Isa::kernels(Some(isa)).expect("available");
                let (mut mean, mut m2) = (vec![0.0; c], vec![0.0; c]);
                moments(k, g, &x, &mut mean, &mut m2, false);
                let rstd = |ch: usize| norm.rstd(m2[ch]);
                let coef = Coefficients::new(c, |ch| mean[ch], rstd, Some(&weight), Some(&bias));
                assert!(coef.scale.is_some(), "a channel needs scaling");
                let mut want = vec![0.0; x.len()];
                apply(k, g, &x, &mut want, &coef, false, false);
                for parallel in [false, true] {
                    let (mut fmean, mut fm2) = (vec![0.0; c], vec![0.0; c]);
                    let mut y = vec![0.0; x.len()];
                    let fcoef =
                        train_planes(k, g, &x, &mut y, &mut fmean, &mut fm2, &norm, parallel);
                    let what = format!("{isa:?} {n}x{c}x{spatial} parallel {parallel}");
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    let bits64 = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits64(&fmean), bits64(&mean), "{what}: mean");
                    assert_eq!(bits64(&fm2), bits64(&m2), "{what}: m2");
                    assert_eq!(fcoef.scale, coef.scale, "{what}: scale");
                    assert_eq!(bits(&fcoef.hi), bits(&coef.hi), "{what}: hi");
                    assert_eq!(bits(&fcoef.a), bits(&coef.a), "{what}: a");
                    assert_eq!(bits(&fcoef.b), bits(&coef.b), "{what}: b");
                    assert_eq!(bits(&y), bits(&want), "{what}: output");
                }
            }
        }
    }

    /// A buffer of `len` values whose start sits `d` bytes past `x`'s,
    /// modulo 4 KiB (`d` a multiple of 4).
    fn output_at(x: &[f32], len: usize, d: usize) -> (Vec<f32>, usize) {
        let buf = vec![0.0f32; len + 1024];
        let gap = (buf.as_ptr() as usize).wrapping_sub(x.as_ptr() as usize) % 4096;
        let start = (d + 4096 - gap) % 4096 / 4;
        (buf, start)
    }

    /// The output passes give the same bits whichever way they walk:
    /// outputs placed at every kind of 4 KiB offset from the input (forward
    /// and backward walks, lines and not), both layouts (NHWC periods of
    /// 1, 4 and more than 4 vectors, short NCHW planes, a head vector when
    /// streaming), inference and the fused NCHW training sweep, every ISA.
    /// Fails if the backward walk skips or misplaces any vector.
    #[test]
    fn output_pass_same_bits_walked_either_way() {
        let min = STREAM_MIN_BYTES / 4;
        let geometries = [
            (2, 3, 49, false),
            (3, 5, 300, false),
            (130, 64, 1, true),
            (41, 24, 1, true),
            (37, 192, 1, true),
            (9, 7, 5, true),
            (3, 7, min / 21 + 1, false),
            (min / 192 + 5, 192, 1, true),
        ];
        let offsets = [0, 4, 32, 64, 256, 2044, 2048, 4032, 4092];
        for (n, c, spatial, rows_of_channels) in geometries {
            let g = Geometry {
                n,
                c,
                spatial,
                rows_of_channels,
            };
            let len = n * c * spatial;
            let x = values(len, (n + c) as u64, 2.0, 3.0);
            let weight = values(c, 9, 1.0, 0.5);
            let bias = values(c, 10, 0.0, 1.0);
            let mean = values(c, 11, 2.0, 1.0);
            let rstd = values(c, 12, 1.0, 0.5);
            let coef = Coefficients::new(
                c,
                |ch| mean[ch] as f64,
                |ch| rstd[ch] as f64,
                Some(&weight),
                Some(&bias),
            );
            let norm = Normalization {
                count: (n * spatial) as u64,
                eps: 1e-5,
                weight: Some(&weight),
                bias: Some(&bias),
            };
            for isa in Isa::available() {
                let k = Isa::kernels(Some(isa)).expect("available");
                // The forward walk's output (same place modulo 4 KiB).
                let (mut want, start) = output_at(&x, len, 0);
                let want = &mut want[start..start + len];
                apply(k, g, &x, want, &coef, false, false);
                let (mut want_train, start) = output_at(&x, len, 0);
                let want_train = &mut want_train[start..start + len];
                if !rows_of_channels {
                    let (mut wmean, mut wm2) = (vec![0.0; c], vec![0.0; c]);
                    train_planes(k, g, &x, want_train, &mut wmean, &mut wm2, &norm, false);
                }
                let mut backward = 0;
                for d in offsets {
                    let (mut buf, start) = output_at(&x, len, d);
                    let y = &mut buf[start..start + len];
                    backward += usize::from(crate::kernels::walk_backward(&x, y));
                    let what = format!("{isa:?} {g:?} offset {d}");
                    for after_stats in [false, true] {
                        y.fill(0.0);
                        apply(k, g, &x, y, &coef, false, after_stats);
                        let same = y
                            .iter()
                            .zip(&*want)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{what}: apply, after_stats {after_stats}");
                    }
                    if !rows_of_channels {
                        y.fill(0.0);
                        let (mut fmean, mut fm2) = (vec![0.0; c], vec![0.0; c]);
                        train_planes(k, g, &x, y, &mut fmean, &mut fm2, &norm, false);
                        let same = y
                            .iter()
                            .zip(&*want_train)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(same, "{what}: train_planes");
                    }
                }
                assert_eq!(backward, 5, "offsets 4..=2044 walk backward");
            }
        }
    }
}
