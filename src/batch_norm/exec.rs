//! The operator's engine room: statistics and the affine map over a whole
//! tensor, split across threads in ways that never change the bits.

use crate::kernels::Kernels;
use crate::kernels::channels::{self, ChunkJob, PatternJob, PlaneJob, PlaneStatsJob};
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
            let a = rstd(ch) * weight.map_or(1.0, |w| w[ch] as f64);
            let sc = 2f64.powi(apply_scale_log2(a));
            let m = mean(ch);
            let hi = m as f32;
            let lo = m - hi as f64;
            let beta = bias.map_or(0.0, |b| b[ch] as f64);
            // lo * a is exactly 0 when lo is 0, so b == beta bit for bit.
            let b = if lo == 0.0 { beta } else { beta - lo * a };
            scale.push(sc as f32);
            out.hi.push(hi);
            out.a.push((a / sc) as f32);
            out.b.push(b as f32);
        }
        if scale.iter().any(|&v| v != 1.0) {
            out.scale = Some(scale);
        }
        out
    }
}

/// Writes `y = (x - hi[c]) * scale[c] * a[c] + b[c]` over the whole tensor.
pub(super) fn apply(
    k: &Kernels,
    g: Geometry,
    x: &[f32],
    y: &mut [f32],
    coef: &Coefficients,
    parallel: bool,
) {
    let par = threads(parallel);
    let stream = stream_for(y.len());
    if g.rows_of_channels {
        let period = channels::pattern_period(g.c);
        let pattern = |v: &[f32]| -> Vec<f32> { (0..period + LANES).map(|i| v[i % g.c]).collect() };
        let (hi, a, b) = (pattern(&coef.hi), pattern(&coef.a), pattern(&coef.b));
        let scale = coef.scale.as_deref().map(pattern);
        let job = PatternJob {
            input: x,
            output: y,
            phase: 0,
            period,
            scale: scale.as_deref(),
            hi: &hi,
            a: &a,
            b: &b,
            stream,
        };
        apply_flat(k, job, par);
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
        };
        apply_planes(k, job, par);
    }
    redo_overflowed_differences(g, x, y, coef);
    canonicalize_nan_channels(g, y, coef);
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

fn apply_planes(k: &Kernels, job: PlaneJob<'_>, par: bool) {
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
        join(|| apply_planes(k, lo, par), || apply_planes(k, hi, par));
        return;
    }
    (k.bn_apply_planes)(job)
}

fn apply_flat(k: &Kernels, job: PatternJob<'_>, par: bool) {
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
        join(|| apply_flat(k, lo, par), || apply_flat(k, hi, par));
        return;
    }
    (k.bn_apply_pattern)(job)
}
