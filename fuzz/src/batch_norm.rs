//! The differential harness for BatchNorm: inference, training, and the
//! SyncBatchNorm path (`local_moments` + `merge_ranks` + `apply_train`).
//!
//! Input layout (header first, so that mutating the data keeps the shape):
//! shape class and shape, layout, eps, weight, bias, the target's own
//! arguments (running statistics, momentum, shard split), an optional
//! corruption of one argument, then the data, channel by channel (each
//! channel's `n * spatial` values by one rule of [`values::fill_row`], so
//! constant channels, big offsets with tiny spreads and injected NaN/inf are
//! per channel, as BatchNorm sees them).
//!
//! A valid case runs on `Portable`, serially (the baseline), which is checked
//! against the f64 reference written here ([`reference_channel`],
//! [`running_update`]); then on every available ISA and the selected one with
//! rayon allowed, and, for shapes large enough to be split, inside 1- and
//! 2-thread pools: every run must give the baseline's bits (output, saved
//! mean and rstd, running statistics). Training also checks that a channel
//! holding NaN or ±inf is all NaN and leaves every other channel's bits as a
//! run without the bad values gives them. A case with a bad argument must
//! give exactly that argument's typed error and write nothing.
//!
//! Bounds (see [`oracle`]): outputs of finite channels within the README
//! bound plus one f32 subnormal step; saved rstd and mean as the row
//! harness checks them; the running statistics within the error the batch
//! statistics may carry (mean: `2e-6 / rstd`, M2: `4e-6` relative, as the
//! moments target holds the kernel to) times their weight in the update,
//! plus rounding the result to f32.

use crate::oracle::{self, BOUND, SUBNORMAL_STEP, same_error};
use crate::{Rng, Src, debug, values};
use simdnorm::{
    BatchNorm, BatchShape, ChannelMoments, Error, Isa, Layout, Momentum, RunningStats, TrainStats,
};
use std::sync::OnceLock;

/// What fills every element a call must not write.
pub const SENTINEL: f32 = f32::from_bits(0x7fba_d0d0);

/// Cap on `n * c * spatial` for the common shape classes.
pub const MAX_ELEMS: usize = 8192;

/// Elements from which rayon may split the work (`2 * MIN_ELEMS_PER_TASK`).
pub const SPLIT_ELEMS: usize = 1 << 16;

/// Elements from which the output is written with non-temporal stores
/// (16 MiB of f32, `STREAM_MIN_BYTES` in src/batch_norm/exec.rs).
pub const STREAM_ELEMS: usize = 4 << 20;

/// Cap on the sync target's shapes (several shards of whole units).
pub const MAX_SYNC_ELEMS: usize = 1 << 15;

/// Spatial sizes around the kernels' edges: the 16-lane width, the 64-value
/// accumulator run, the NCHW unit of 2048 values (1024 = 2 samples a unit,
/// 2048 = 1), small planes (7x7) whose units span many samples.
const SPATIAL: [usize; 26] = [
    0, 1, 1, 2, 3, 4, 7, 9, 15, 16, 17, 31, 33, 49, 63, 64, 65, 100, 127, 129, 255, 513, 1023,
    1024, 2048, 2049,
];

/// Channel counts around the NHWC pattern period `lcm(c, 16)`, the chunk
/// rows (256 up to 64 channels, fewer above) and the vector width.
const CHANNELS: [usize; 28] = [
    0, 1, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 100, 127, 128, 129, 255,
    257, 1000, 1025,
];

/// Index of `(n, c, s)` in a contiguous tensor of `shape`.
pub fn index(shape: BatchShape, n: usize, c: usize, s: usize) -> usize {
    match shape.layout {
        Layout::Nchw => (n * shape.c + c) * shape.spatial + s,
        Layout::Nhwc => (n * shape.spatial + s) * shape.c + c,
    }
}

/// The channel of element `i`.
pub fn channel_of(shape: BatchShape, i: usize) -> usize {
    match shape.layout {
        Layout::Nchw => (i / shape.spatial.max(1)) % shape.c.max(1),
        Layout::Nhwc => i % shape.c.max(1),
    }
}

/// The values of channel `c`, in sample-then-position order.
pub fn channel_values(shape: BatchShape, x: &[f32], c: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(shape.per_channel());
    for n in 0..shape.n {
        for s in 0..shape.spatial {
            v.push(x[index(shape, n, c, s)]);
        }
    }
    v
}

fn layout(src: &mut Src) -> Layout {
    if src.u8() & 1 == 0 {
        Layout::Nchw
    } else {
        Layout::Nhwc
    }
}

/// A shape from the input. Most are at most [`MAX_ELEMS`] elements; a class
/// byte of 252..=255 gives a shape rayon splits, or, rarely (255 and a
/// hash gate), one whose output is streamed: both far from byte 0, which an
/// exhausted input reads.
pub fn shape(src: &mut Src) -> BatchShape {
    let class = src.u8();
    let layout = layout(src);
    match class {
        // Streamed output: ~0.5 s a case (some 4M values on every ISA), so
        // gated by a hash of two more bytes that comparison tracing cannot
        // solve directly.
        255 if stream_gate(src.u16()) => {
            let c = src.pick(&[1usize, 3, 16, 17, 64, 100]);
            let spatial = src.pick(&[1usize, 49, 1024, 3000]);
            let n = STREAM_ELEMS.div_ceil(c * spatial) + src.below(2);
            BatchShape::new(layout, n, c, spatial)
        }
        252..=255 => {
            let c = src.pick(&[1usize, 3, 16, 17, 33, 64, 100, 1000]);
            let spatial = src
                .pick(&[1usize, 7, 49, 1024, 2048, 3000])
                .min(SPLIT_ELEMS / c);
            let n = SPLIT_ELEMS.div_ceil(c * spatial).max(2) + src.below(2);
            BatchShape::new(layout, n, c, spatial)
        }
        0..=127 => {
            let n = src.below(9);
            let c = src.pick(&CHANNELS);
            let spatial = src.pick(&SPATIAL);
            fit(BatchShape::new(layout, n, c, spatial), MAX_ELEMS)
        }
        _ => {
            let n = src.below(70);
            let c = src.below(40);
            let spatial = src.below(40);
            fit(BatchShape::new(layout, n, c, spatial), MAX_ELEMS)
        }
    }
}

/// Whether a 16-bit value opens the streamed shape class (1 in 64).
fn stream_gate(v: u16) -> bool {
    (u32::from(v).wrapping_mul(0x9E37_79B1) >> 26) == 37
}

/// Shrinks `spatial`, then `n`, until the shape holds at most `max` values.
fn fit(mut s: BatchShape, max: usize) -> BatchShape {
    if s.c * s.spatial > max {
        s.spatial = (max / s.c.max(1)).max(1);
    }
    if s.n * s.c * s.spatial > max {
        s.n = max / (s.c * s.spatial).max(1);
    }
    s
}

/// A per-channel running statistic: mostly ordinary values, sometimes hard
/// ones (NaN, ±inf, subnormals, negative variances).
pub fn running_vec(src: &mut Src, c: usize, var: bool) -> Vec<f32> {
    match src.u8() % 8 {
        0 => vec![if var { 1.0 } else { 0.0 }; c],
        1 => vec![values::scalar(src); c],
        2 | 3 => {
            let mut rng = Rng::new(src.u64());
            let scale = 2f64.powi((src.u8() % 40) as i32 - 20);
            (0..c)
                .map(|_| {
                    let v = rng.normal() * scale;
                    (if var { v.abs() } else { v }) as f32
                })
                .collect()
        }
        4 => {
            let v = values::param(src, false);
            vec![if var { v.abs() } else { v }; c]
        }
        _ => (0..c).map(|_| values::scalar(src)).collect(),
    }
}

/// A momentum value: usually valid, sometimes out of `[0, 1]` or NaN.
fn momentum_value(src: &mut Src) -> f32 {
    const GOOD: [f32; 12] = [
        0.1,
        0.9,
        0.0,
        1.0,
        -0.0,
        0.5,
        0.01,
        0.99,
        1e-8,
        0.999_999_94, // just below 1
        f32::MIN_POSITIVE,
        f32::from_bits(1),
    ];
    const BAD: [f32; 9] = [
        f32::NAN,
        -0.1,
        1.000_000_1, // just above 1
        f32::INFINITY,
        f32::NEG_INFINITY,
        -f32::from_bits(1),
        2.0,
        -f32::NAN,
        f32::MAX,
    ];
    let tag = src.u8();
    if tag < 208 {
        src.pick(&GOOD)
    } else if tag < 240 {
        src.pick(&BAD)
    } else {
        f32::from_bits(src.u32())
    }
}

/// A momentum convention and its parameter.
pub fn momentum(src: &mut Src) -> Momentum {
    match src.u8() % 3 {
        0 => Momentum::PyTorch(momentum_value(src)),
        1 => Momentum::Onnx(momentum_value(src)),
        _ => {
            let batches_seen = if src.chance(208) {
                src.pick(&[
                    0u64,
                    1,
                    2,
                    3,
                    9,
                    99,
                    1 << 24,
                    1 << 53,
                    (1 << 53) + 1,
                    u64::MAX - 1,
                    u64::MAX,
                ])
            } else {
                src.u64()
            };
            Momentum::Cumulative { batches_seen }
        }
    }
}

/// Whether `m` is a momentum the crate must accept (`[0, 1]`, documented).
pub fn momentum_valid(m: Momentum) -> bool {
    match m {
        Momentum::PyTorch(v) | Momentum::Onnx(v) => (0.0..=1.0).contains(&v),
        Momentum::Cumulative { .. } => true,
    }
}

/// Whether the crate must accept `eps` (finite, `>= 0`).
pub fn eps_valid(eps: f32) -> bool {
    eps.is_finite() && eps >= 0.0
}

/// The data: each channel's values by one rule of [`values::fill_row`]
/// (streamed shapes: one seeded rule for the whole tensor).
pub fn data(src: &mut Src, shape: BatchShape) -> Vec<f32> {
    let len = shape.n * shape.c * shape.spatial;
    let mut x = vec![0.0f32; len];
    if len == 0 {
        return x;
    }
    if len >= STREAM_ELEMS {
        // Streamed shapes (~0.5 s a run) take their data from one seed and
        // one optional NaN, not value by value: fewer variants of them reach
        // the corpus, where they slowed the campaigns to ~15 runs/s.
        let offset = src.pick(&values::OFFSETS) as f64;
        let spread = offset.abs().max(1.0) * 2f64.powi(-((src.u8() % 24) as i32));
        let mut rng = Rng::new(src.u64());
        x.iter_mut()
            .for_each(|v| *v = (offset + spread * rng.normal()) as f32);
        if src.chance(64) {
            let at = src.below(len);
            x[at] = f32::NAN;
        }
        return x;
    }
    let mut vals = vec![0.0f32; shape.per_channel()];
    for c in 0..shape.c {
        values::fill_row(src, &mut vals);
        let mut k = 0;
        for n in 0..shape.n {
            for s in 0..shape.spatial {
                x[index(shape, n, c, s)] = vals[k];
                k += 1;
            }
        }
    }
    x
}

/// The f64 statistics of one channel.
#[derive(Clone, Copy, Debug)]
pub struct RefChannel {
    /// Whether every value is finite (otherwise mean and m2 are NaN).
    pub finite: bool,
    /// Values in the channel.
    pub count: usize,
    /// Mean (two passes: the plain mean, then corrected by the mean residual).
    pub mean: f64,
    /// Sum of squared deviations from `mean`.
    pub m2: f64,
}

impl RefChannel {
    /// Biased variance `m2 / count`.
    pub fn var(&self) -> f64 {
        self.m2 / self.count as f64
    }

    /// `1 / sqrt(var + eps)`.
    pub fn rstd(&self, eps: f32) -> f64 {
        1.0 / (self.var() + eps as f64).sqrt()
    }
}

/// The f64 reference statistics of `vals` (one channel).
pub fn reference_channel(vals: &[f32]) -> RefChannel {
    let count = vals.len();
    if vals.iter().any(|v| !v.is_finite()) {
        return RefChannel {
            finite: false,
            count,
            mean: f64::NAN,
            m2: f64::NAN,
        };
    }
    let n = count as f64;
    let mean0 = vals.iter().map(|&v| v as f64).sum::<f64>() / n;
    let resid = vals.iter().map(|&v| v as f64 - mean0).sum::<f64>();
    let mean = mean0 + resid / n;
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &v in vals {
        let d = v as f64 - mean;
        s1 += d;
        s2 += d * d;
    }
    RefChannel {
        finite: true,
        count,
        mean,
        m2: (s2 - s1 * s1 / n).max(0.0),
    }
}

/// The documented running-statistics update, in f64: returns the new mean
/// and variance and the weights `(w_mean, w_var)` the batch mean and batch
/// variance carry in them.
pub fn running_update(m: Momentum, old_mean: f32, old_var: f32, ch: &RefChannel) -> Update {
    let n = ch.count as f64;
    let (old_mean, old_var) = (old_mean as f64, old_var as f64);
    let biased = ch.m2 / n;
    let unbiased = ch.m2 / (n - 1.0);
    let pytorch = |f: f64| Update {
        mean: (1.0 - f) * old_mean + f * ch.mean,
        var: (1.0 - f) * old_var + f * unbiased,
        weight: f,
        var_batch: unbiased,
    };
    match m {
        Momentum::PyTorch(f) => pytorch(f as f64),
        Momentum::Cumulative { batches_seen } => pytorch(1.0 / (batches_seen as f64 + 1.0)),
        Momentum::Onnx(f) => {
            let f = f as f64;
            Update {
                mean: f * old_mean + (1.0 - f) * ch.mean,
                var: f * old_var + (1.0 - f) * biased,
                weight: 1.0 - f,
                var_batch: biased,
            }
        }
    }
}

/// One channel's reference running update.
#[derive(Clone, Copy, Debug)]
pub struct Update {
    /// New running mean.
    pub mean: f64,
    /// New running variance.
    pub var: f64,
    /// Weight of the batch statistics in the update.
    pub weight: f64,
    /// The batch variance the update used (biased or unbiased).
    pub var_batch: f64,
}

/// Checks a running statistic: `want` computed in f64 from exact batch
/// statistics, `tol` the error the kernel's batch statistics may carry into
/// it; plus rounding to f32 (one ulp either way, as two f64 values that
/// differ slightly may round apart) and overflow to infinity near f32::MAX.
pub fn running_ok(got: f32, want: f64, tol: f64) -> Result<(), String> {
    if want.is_nan() {
        return if got.is_nan() {
            Ok(())
        } else {
            Err(format!("want NaN, got {got:e}"))
        };
    }
    let edge = f32::MAX as f64 * (1.0 - 1e-6) - tol;
    if want.abs() >= edge && (got.is_infinite() || got.abs() as f64 >= edge) {
        return if got.is_sign_negative() == (want < 0.0) {
            Ok(())
        } else {
            Err(format!("want {want:e} (near overflow), got {got:e}"))
        };
    }
    let err = (got as f64 - want).abs();
    let limit = tol + want.abs() * f32::EPSILON as f64 + SUBNORMAL_STEP;
    if got.is_finite() && err <= limit {
        Ok(())
    } else {
        Err(format!(
            "{got:e} vs reference {want:e}: err {err:e} > {limit:e}"
        ))
    }
}

/// Thread pools of 1 and 2 threads, for the thread-count check.
pub fn pools() -> &'static [rayon::ThreadPool] {
    static POOLS: OnceLock<Vec<rayon::ThreadPool>> = OnceLock::new();
    POOLS.get_or_init(|| {
        [1, 2]
            .into_iter()
            .map(|n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .expect("thread pool")
            })
            .collect()
    })
}

/// Every ISA to compare with the baseline: the available ones, and `None`
/// (the selected one).
pub fn isas() -> Vec<Option<Isa>> {
    let mut all: Vec<Option<Isa>> = Isa::available().into_iter().map(Some).collect();
    all.push(None);
    all
}

/// [`same_error`], with the momentum also compared by bits (NaN).
pub fn same_bn_error(a: &Error, b: &Error) -> bool {
    match (a, b) {
        (Error::Momentum { momentum: x }, Error::Momentum { momentum: y }) => {
            x.to_bits() == y.to_bits()
        }
        _ => same_error(a, b),
    }
}

/// Panics unless `got` is one of the errors in `want` (more than one when
/// several arguments are bad at once: the order of the checks is not part of
/// the contract).
#[track_caller]
pub fn expect_errors<T: std::fmt::Debug>(got: Result<T, Error>, want: &[Error], ctx: &str) {
    match got {
        Err(e) if want.iter().any(|w| same_bn_error(&e, w)) => {}
        other => panic!("{ctx}: expected one of {want:?}, got {other:?}"),
    }
}

/// A length other than `n`, chosen by `arg`.
pub fn wrong_len(n: usize, arg: u32) -> usize {
    let arg = arg as usize;
    if n > 0 && arg.is_multiple_of(2) {
        n - 1 - arg / 2 % n
    } else {
        n + 1 + arg % 3
    }
}

/// An ISA this CPU lacks, if any.
pub fn unavailable_isa() -> Option<Isa> {
    Isa::ALL.into_iter().find(|isa| !isa.is_available())
}

/// An eps the crate must reject.
pub fn bad_eps(arg: u32) -> f32 {
    [
        -1e-5,
        f32::NEG_INFINITY,
        f32::INFINITY,
        f32::NAN,
        -f32::from_bits(1),
    ][arg as usize % 5]
}

/// The parts every BatchNorm case shares.
#[derive(Clone, Debug)]
pub struct Common {
    /// The tensor's shape.
    pub shape: BatchShape,
    /// eps (may be invalid).
    pub eps: f32,
    /// gamma.
    pub weight: Option<Vec<f32>>,
    /// beta.
    pub bias: Option<Vec<f32>>,
}

impl Common {
    /// Decodes shape, eps, weight and bias.
    pub fn decode(src: &mut Src) -> Common {
        let shape = shape(src);
        let eps = values::eps(src);
        let weight = values::params(src, shape.c);
        let bias = values::params(src, shape.c);
        Common {
            shape,
            eps,
            weight,
            bias,
        }
    }

    /// The operator with these parameters, on `isa`.
    pub fn bn(&self, isa: Option<Isa>, parallel: bool) -> BatchNorm<'_> {
        let mut bn = BatchNorm::new().eps(self.eps).parallel(parallel);
        if let Some(w) = &self.weight {
            bn = bn.weight(w);
        }
        if let Some(b) = &self.bias {
            bn = bn.bias(b);
        }
        if let Some(isa) = isa {
            bn = bn.isa(isa);
        }
        bn
    }

    /// Gamma of channel `c` (1 when absent).
    pub fn w(&self, c: usize) -> f32 {
        self.weight.as_ref().map_or(1.0, |w| w[c])
    }

    /// Beta of channel `c` (0 when absent).
    pub fn b(&self, c: usize) -> f32 {
        self.bias.as_ref().map_or(0.0, |b| b[c])
    }

    /// Checks one output element against `y_ref = z_ref * w + b`, where
    /// `z_ref` is the reference's normalized value (may be non-finite).
    pub fn element(&self, c: usize, y: f32, z_ref: f64) -> Result<(), String> {
        let (w, b) = (self.w(c), self.b(c));
        let y_ref = z_ref * w as f64 + b as f64;
        if z_ref.is_finite() || z_ref.is_nan() {
            return oracle::element_ok(y, y_ref, z_ref, w, b);
        }
        if !w.is_finite() || !b.is_finite() {
            return Ok(());
        }
        // z = ±inf: only in inference (a running variance of -eps, or an
        // infinite running mean); the output is not finite, NaN where the
        // f64 formula gives NaN.
        if y.is_finite() || (y_ref.is_nan() && !y.is_nan()) {
            Err(format!(
                "z_ref = {z_ref:e}, y_ref = {y_ref:e}: got {y:e}, w = {w:e}, b = {b:e}"
            ))
        } else {
            Ok(())
        }
    }
}

/// Prints the case when `SIMDNORM_FUZZ_DEBUG` is set.
pub fn trace(what: &str) {
    if debug() {
        eprintln!("case: {what}");
    }
}

/// Describes `x` briefly (its first values).
pub fn head(x: &[f32]) -> Vec<f32> {
    x.iter().copied().take(24).collect()
}

/// Panics with the first element where `got` and `want` differ in bits.
#[track_caller]
pub fn same_bits(got: &[f32], want: &[f32], ctx: &str, what: &str) {
    // No `bits` vectors: streamed cases compare 16 MiB buffers many times.
    let differ = |i: usize| got[i].to_bits() != want[i].to_bits();
    compare(got, want, differ, ctx, what);
}

#[track_caller]
fn compare(got: &[f32], want: &[f32], differ: impl Fn(usize) -> bool, ctx: &str, what: &str) {
    let first = (0..got.len().min(want.len())).find(|&i| differ(i));
    if first.is_some() || got.len() != want.len() {
        let i = first.unwrap_or(0);
        panic!(
            "{ctx}: {what} differs at {i} (len {} vs {}): {:?} vs {:?} (bits {:#x?} vs {:#x?})",
            got.len(),
            want.len(),
            got.get(i),
            want.get(i),
            got.get(i).map(|v| v.to_bits()),
            want.get(i).map(|v| v.to_bits())
        );
    }
}

/// What a training call left behind.
#[derive(Clone, Debug)]
pub struct TrainOut {
    /// The call's result.
    pub result: Result<(), Error>,
    /// The output buffer.
    pub y: Vec<f32>,
    /// Saved mean buffer.
    pub mean: Vec<f32>,
    /// Saved rstd buffer.
    pub rstd: Vec<f32>,
    /// Running mean buffer (untouched when not passed).
    pub rm: Vec<f32>,
    /// Running var buffer (untouched when not passed).
    pub rv: Vec<f32>,
}

impl TrainOut {
    /// Fresh buffers: output and saved stats hold [`SENTINEL`], running
    /// stats their initial values.
    pub fn fresh(y_len: usize, c: usize, rm: &[f32], rv: &[f32]) -> TrainOut {
        TrainOut {
            result: Ok(()),
            y: vec![SENTINEL; y_len],
            mean: vec![SENTINEL; c],
            rstd: vec![SENTINEL; c],
            rm: rm.to_vec(),
            rv: rv.to_vec(),
        }
    }

    /// The stats argument over these buffers.
    pub fn stats(&mut self, momentum: Option<Momentum>) -> (&mut [f32], TrainStats<'_>) {
        let running = momentum.map(|momentum| RunningStats {
            mean: &mut self.rm,
            var: &mut self.rv,
            momentum,
        });
        (
            &mut self.y,
            TrainStats {
                saved_mean: &mut self.mean,
                saved_rstd: &mut self.rstd,
                running,
            },
        )
    }

    /// Panics unless every buffer has `other`'s bits.
    #[track_caller]
    pub fn same(&self, other: &TrainOut, ctx: &str, what: &str) {
        let same_result = match (&self.result, &other.result) {
            (Err(a), Err(b)) => same_bn_error(a, b),
            (a, b) => a == b,
        };
        assert!(
            same_result,
            "{ctx}: {what}: result {:?} vs {:?}",
            self.result, other.result
        );
        same_bits(&self.y, &other.y, ctx, &format!("{what}: output"));
        same_bits(&self.mean, &other.mean, ctx, &format!("{what}: saved mean"));
        same_bits(&self.rstd, &other.rstd, ctx, &format!("{what}: saved rstd"));
        same_bits(&self.rm, &other.rm, ctx, &format!("{what}: running mean"));
        same_bits(&self.rv, &other.rv, ctx, &format!("{what}: running var"));
    }
}

/// Whether the reference checks value `k` of `len`: all of them, except in
/// streamed shapes (millions of values), where the first and last 4096 and
/// every 61st between are checked (the bit-for-bit comparisons with Portable
/// still cover every value).
pub fn sampled(k: usize, len: usize) -> bool {
    len < SPLIT_ELEMS || k < 4096 || k + 4096 >= len || k.is_multiple_of(61)
}

/// Checks a training baseline against the f64 reference: output, saved
/// statistics and running statistics of every channel; the all-NaN rule for
/// non-finite channels; beta exactly for constant channels with `eps > 0`.
/// `rm0`, `rv0` are the running statistics before the call.
pub fn check_train_reference(
    case: &Common,
    x: &[f32],
    out: &TrainOut,
    momentum: Option<Momentum>,
    rm0: &[f32],
    rv0: &[f32],
    ctx: &str,
) {
    let sh = case.shape;
    let eps = case.eps;
    for c in 0..sh.c {
        let vals = channel_values(sh, x, c);
        let r = reference_channel(&vals);
        let cctx = || format!("{ctx}: channel {c} (values[..24] = {:?})", head(&vals));
        let ys: Vec<f32> = (0..sh.n)
            .flat_map(|n| (0..sh.spatial).map(move |s| (n, s)))
            .map(|(n, s)| out.y[index(sh, n, c, s)])
            .collect();
        if let Some(m) = momentum {
            let u = running_update(m, rm0[c], rv0[c], &r);
            let rstd = r.rstd(eps);
            let mean_tol = BOUND / rstd + SUBNORMAL_STEP;
            let m2_rel = 2.0 * BOUND;
            if let Err(msg) = running_ok(out.rm[c], u.mean, u.weight.abs() * mean_tol) {
                panic!("{}: running mean ({m:?}, old {:e}): {msg}", cctx(), rm0[c]);
            }
            if let Err(msg) = running_ok(out.rv[c], u.var, u.weight.abs() * m2_rel * u.var_batch) {
                panic!("{}: running var ({m:?}, old {:e}): {msg}", cctx(), rv0[c]);
            }
        }
        if !r.finite {
            assert!(
                ys.iter().all(|v| v.is_nan()),
                "{}: non-finite channel must be all NaN, got {:?}",
                cctx(),
                head(&ys)
            );
            assert!(
                out.mean[c].is_nan() && out.rstd[c].is_nan(),
                "{}: non-finite channel: saved mean {:e}, rstd {:e} must be NaN",
                cctx(),
                out.mean[c],
                out.rstd[c]
            );
            continue;
        }
        let rstd = r.rstd(eps);
        for (k, (&v, &y)) in vals.iter().zip(&ys).enumerate() {
            if !sampled(k, vals.len()) {
                continue;
            }
            let z = (v as f64 - r.mean) * rstd;
            if let Err(msg) = case.element(c, y, z) {
                panic!("{}, value {k} (x = {v:e}): {msg}", cctx());
            }
        }
        if eps > 0.0 && vals.iter().all(|&v| v == vals[0]) {
            let (w, b) = (case.w(c), case.b(c));
            if w.is_finite() && b.is_finite() {
                for (k, &y) in ys.iter().enumerate() {
                    assert!(
                        y.to_bits() == b.to_bits() || (y == 0.0 && b == 0.0),
                        "{}: constant channel must output beta exactly: value {k} gives {y:e}, beta {b:e}",
                        cctx()
                    );
                }
            }
        }
        if let Err(msg) = oracle::rstd_ok(out.rstd[c], rstd) {
            panic!("{}: saved rstd: {msg}", cctx());
        }
        if let Err(msg) = oracle::mean_ok(out.mean[c], r.mean, rstd) {
            panic!("{}: saved mean: {msg}", cctx());
        }
    }
}

/// Ensures the baseline's non-finite channels leave the others alone: `x`
/// with every non-finite value replaced by 0 must give the same bits in
/// every channel that was finite.
pub fn check_isolation(
    x: &[f32],
    out: &TrainOut,
    shape: BatchShape,
    rerun: impl Fn(&[f32]) -> TrainOut,
    ctx: &str,
) {
    let bad: Vec<bool> = (0..shape.c)
        .map(|c| channel_values(shape, x, c).iter().any(|v| !v.is_finite()))
        .collect();
    if !bad.iter().any(|&b| b) || bad.iter().all(|&b| b) {
        return;
    }
    let clean: Vec<f32> = x
        .iter()
        .map(|&v| if v.is_finite() { v } else { 0.0 })
        .collect();
    let o = rerun(&clean);
    assert_eq!(o.result, Ok(()), "{ctx}: clean rerun failed");
    for (i, (&a, &b)) in out.y.iter().zip(&o.y).enumerate() {
        let c = channel_of(shape, i);
        assert!(
            bad[c] || a.to_bits() == b.to_bits(),
            "{ctx}: output {i} (finite channel {c}) changed by another channel's NaN/inf: {a:e} vs {b:e}"
        );
    }
    for c in (0..shape.c).filter(|&c| !bad[c]) {
        for (what, a, b) in [
            ("saved mean", out.mean[c], o.mean[c]),
            ("saved rstd", out.rstd[c], o.rstd[c]),
            ("running mean", out.rm[c], o.rm[c]),
            ("running var", out.rv[c], o.rv[c]),
        ] {
            assert!(
                a.to_bits() == b.to_bits(),
                "{ctx}: {what} of finite channel {c} changed by another channel's NaN/inf: {a:e} vs {b:e}"
            );
        }
    }
}

/// Copies of a [`ChannelMoments`] compare by bits (NaN included).
pub fn moments_bits(m: &ChannelMoments) -> (u64, Vec<u64>, Vec<u64>) {
    (
        m.count,
        m.mean.iter().map(|v| v.to_bits()).collect(),
        m.m2.iter().map(|v| v.to_bits()).collect(),
    )
}
