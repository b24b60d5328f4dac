//! BatchNorm: per-channel normalization with statistics taken across the
//! batch and the spatial positions (PyTorch `BatchNorm1d/2d/3d` and
//! `SyncBatchNorm`, ONNX `BatchNormalization`).
//!
//! # What it computes
//!
//! For a tensor of `N` samples, `C` channels and `S` spatial positions per
//! sample (`S` the product of the spatial axes; 1 for `[N, C]`), channel `c`
//! holds `N·S` values. With per-channel `mean`, `var`:
//!
//! `y = (x - mean) / sqrt(var + eps) * gamma + beta`
//!
//! - Inference ([`BatchNorm::forward_inference`]): `mean`, `var` are the
//!   running statistics given by the caller.
//! - Training ([`BatchNorm::forward_train`]): the batch's own mean and biased
//!   variance `M2 / (N·S)`; the mean and `rstd = 1/sqrt(var + eps)` are saved
//!   for a backward pass, and the running statistics are updated by the
//!   convention chosen in [`Momentum`]. A channel of one value (`N·S == 1`)
//!   has no variance and is an error ([`Error::SingleValuePerChannel`]).
//! - SyncBatchNorm: [`BatchNorm::local_moments`] on each shard, a collective
//!   to exchange [`ChannelMoments`], [`ChannelMoments::merge_ranks`], then
//!   [`BatchNorm::apply_train`].
//!
//! # Layouts and loop shapes
//!
//! [`Layout::Nchw`] (`[N, C, spatial…]`): each `(n, c)` plane is contiguous.
//! A channel's planes are taken in *units* of `B` consecutive samples
//! ([`BatchNorm::nchw_unit_samples`]: the smallest power of two with
//! `B·spatial >= 2048`, so 64 samples for 7×7 planes, 1 from 2048 values
//! on; the last unit may hold fewer). A unit's moments come from the row
//! statistics' algorithm run over its `B` planes as one sequence of
//! contiguous segments feeding the same vector accumulators: a sum for a
//! centre, then exactly centred `Σd`, `Σd²` from cache, with the mean carried
//! as `shift + Σd/n`. Units are merged with Chan's formula in f64. Channels
//! are spread over threads. The output pass broadcasts each channel's three
//! coefficients over its planes, planes spread over threads.
//!
//! Why units and not planes: the per-unit work (a few f64 operations, the
//! horizontal sums, a Chan merge) is fixed, and on a 49-value plane it
//! outweighed the vector work many times over: `[64, 512, 7, 7]` trained at
//! ~0.06 of a memory copy with one unit per plane, ~0.25 with 64-plane units
//! (~0.35 with the later output-pass fixes; one thread, shared machine).
//!
//! [`Layout::Nhwc`] (`[N, spatial…, C]`): rows of `C` channels. Rows are cut
//! into chunks of `R` rows ([`BatchNorm::nhwc_chunk_rows`], ~256 KiB, fixed by
//! `C` alone). Within a chunk the flat values repeat their channel pattern
//! every `P = lcm(C, 16)` values, so per-column sums down the chunk are plain
//! 16-wide vector adds, vectorized across channels for any `C` (no masked
//! channel tails except at the very end): one centred pass from memory
//! around a centre taken from a sample of the chunk's rows (a second pass
//! from cache when that centre proves poor). Chunks are spread over threads and their per-channel
//! moments merged in f64. The output pass is one flat loop whose three
//! coefficient vectors are windows of a `P`-periodic pattern. `[N, C]` with
//! `Layout::Nchw` (`spatial == 1`) is the same memory and runs this path.
//!
//! Memory traffic: inference reads `x` once and writes `y` once; training
//! reads `x` twice (statistics, then output) and writes once. Outputs of
//! 16 MiB and more use non-temporal stores. NCHW training of such tensors
//! (planes of 256 values and more) runs as one sweep instead: channel group
//! by channel group (~256 KiB of input each), the group's statistics, then
//! its output while the next group is prefetched into L2, so the second read
//! comes from cache; the same per-channel arithmetic, so the same bits. The
//! other training schedules walk their output pass over such tensors from the
//! end, where the statistics pass left the lines it read last.
//!
//! # Determinism
//!
//! Per-unit moments (`B` samples of a channel for NCHW, a chunk of rows for
//! NHWC; the unit sizes depend only on `spatial` and `C`) are computed the
//! same way on every ISA (fixed lanes, fixed order, no FMA) and merged in one
//! fixed binary tree over the units in index order (blocks of `2^k`
//! consecutive units aligned at multiples of `2^k` first), which depends only
//! on the number of units: so statistics and output are the same bits on
//! every ISA and thread count. NCHW and NHWC of the same data agree to
//! rounding, not bitwise (different orders).
//!
//! The same tree makes SyncBatchNorm reproducible: when shards split at unit
//! boundaries, every shard but the last holds the same power-of-two number of
//! units (for NCHW: `2^j·B` samples, `B` =
//! [`BatchNorm::nchw_unit_samples`]`(spatial)`; for NHWC: `2^j` chunks of
//! `R` = [`BatchNorm::nhwc_chunk_rows`]`(C)` rows, so `n·spatial` a multiple
//! of `2^j·R`), and the shards' [`ChannelMoments`] are merged with
//! [`ChannelMoments::merge_ranks`] in rank order, the result equals the
//! single-process statistics bit for bit. Chan's merge is associative in exact arithmetic but not bit for bit
//! in floating point, so other splits agree only to rounding (but are still
//! reproducible run to run if merged in rank order).
//!
//! # Precision
//!
//! Statistics are never `E[x²] - E[x]²`: every unit is centred on its own
//! mean, and units merge by Chan's formula in f64. In the output pass the
//! mean enters as `hi + lo` (`hi` the mean rounded to f32): `y = (x - hi)·a + b`
//! with `a = rstd·gamma`, `b = beta - lo·a`. `x - hi` is exact when `x` is
//! within a factor two of the mean, so channels like `1000 + N(0,1)` stay at
//! ~1e-7 absolute error. Rejected: the fold `y = x·a' + b'` with
//! `b' = beta - mean·a'` (one operation less): `x·a'` and `b'` are both of
//! size `mean·rstd` and cancel, leaving an error of `ulp(mean·a')` — ~6e-5 for
//! a mean of 1000 at unit variance — on a loop that is memory-bound anyway.
//! The fold is still offered ([`BatchNorm::fold`]) for engines that fuse it
//! into a convolution.
//!
//! Extreme magnitudes: a unit (NCHW) or a chunk's channel (NHWC) whose
//! squared deviations overflow or underflow f32 (values like 1e30, 1e-30 or
//! subnormals) is recomputed on `x·2^k`, an exact rescaling chosen from its
//! largest magnitude, and the scale is divided out of its moments in f64. In
//! the output pass a channel whose `a` would leave `[2^-64, 2^64]` (a
//! subnormal channel with `eps = 0` has `rstd` ~1e40, beyond f32) runs as
//! `y = (x·2^k - hi)·a + b` with `hi`, `a` scaled to match, again exactly;
//! other channels are untouched. So the accuracy bound holds for every finite
//! channel, `eps = 0` included.
//!
//! Rejected: lane-wise Welford in f32 (its running mean rounds to f32 every
//! step, so large-mean channels lose accuracy) and a per-element Welford in
//! f64 (a division per element: compute-bound, not memory-bound).

mod exec;

use crate::Error;
use crate::error::{check_eps, check_len};
use crate::isa::Isa;
use crate::kernels::channels::{TreeMerge, chunk_rows, unit_samples};
use crate::moments::Moments;
use exec::{Coefficients, Geometry};

/// How a BatchNorm tensor is laid out in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Channels first: `[N, C]`, `[N, C, L]`, `[N, C, H, W]`, `[N, C, D, H, W]`…
    /// (PyTorch's default, "contiguous").
    Nchw,
    /// Channels last: `[N, L, C]`, `[N, H, W, C]`, `[N, D, H, W, C]`…
    /// (PyTorch's `channels_last`, TensorFlow's default).
    Nhwc,
}

/// The shape of a contiguous BatchNorm tensor: `n` samples, `c` channels,
/// `spatial` positions per sample and channel (the product of the spatial
/// axes, 1 for `[N, C]`), and the layout.
///
/// ```
/// use simdnorm::{BatchShape, Layout};
/// let s = BatchShape::from_dims(Layout::Nhwc, &[8, 56, 56, 64])?;
/// assert_eq!((s.n, s.c, s.spatial), (8, 64, 56 * 56));
/// assert_eq!(s.len()?, 8 * 56 * 56 * 64);
/// # Ok::<(), simdnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BatchShape {
    /// Batch size `N`.
    pub n: usize,
    /// Channels `C`.
    pub c: usize,
    /// Product of the spatial dimensions (1 when there are none).
    pub spatial: usize,
    /// Where the channel axis sits.
    pub layout: Layout,
}

impl BatchShape {
    /// A shape from its parts.
    pub fn new(layout: Layout, n: usize, c: usize, spatial: usize) -> Self {
        BatchShape {
            n,
            c,
            spatial,
            layout,
        }
    }

    /// A shape from a tensor's dimensions: `[N, C, spatial…]` for NCHW,
    /// `[N, spatial…, C]` for NHWC; at least two dimensions.
    pub fn from_dims(layout: Layout, dims: &[usize]) -> Result<Self, Error> {
        if dims.len() < 2 {
            return Err(Error::Shape {
                what: "BatchNorm dims (at least [N, C])",
                expected: vec![0, 0],
                actual: dims.to_vec(),
            });
        }
        let (n, c, rest) = match layout {
            Layout::Nchw => (dims[0], dims[1], &dims[2..]),
            Layout::Nhwc => (dims[0], dims[dims.len() - 1], &dims[1..dims.len() - 1]),
        };
        let spatial = rest
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(Error::TooLarge { what: "input" })?;
        Ok(BatchShape::new(layout, n, c, spatial))
    }

    /// Number of elements, `n * c * spatial`.
    pub fn len(&self) -> Result<usize, Error> {
        self.n
            .checked_mul(self.c)
            .and_then(|v| v.checked_mul(self.spatial))
            .ok_or(Error::TooLarge { what: "input" })
    }

    /// Whether the tensor holds no elements.
    pub fn is_empty(&self) -> bool {
        self.n == 0 || self.c == 0 || self.spatial == 0
    }

    /// Values per channel, `n * spatial`.
    pub fn per_channel(&self) -> usize {
        self.n.saturating_mul(self.spatial)
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            n: self.n,
            c: self.c,
            spatial: self.spatial,
            rows_of_channels: self.layout == Layout::Nhwc || self.spatial == 1,
        }
    }
}

/// How the running statistics follow the batch statistics in training.
/// Computed in f64, stored as f32.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Momentum {
    /// PyTorch: `running = (1 - m)·running + m·batch`, with the running
    /// variance fed the *unbiased* batch variance `M2 / (N·S - 1)`.
    /// PyTorch's default is `m = 0.1`. `m` must be in `[0, 1]`.
    PyTorch(f32),
    /// ONNX `BatchNormalization`: `running = m·running + (1 - m)·batch`
    /// (momentum weighs the *old* value), with the *biased* batch variance.
    /// ONNX's default is `m = 0.9`. `m` must be in `[0, 1]`.
    Onnx(f32),
    /// PyTorch's `momentum=None`: a cumulative average over the batches
    /// seen, the PyTorch formula with `m = 1 / (batches_seen + 1)` (unbiased
    /// variance). `batches_seen` is the number of earlier batches, PyTorch's
    /// `num_batches_tracked` before this step: the caller keeps it and adds 1
    /// after each training step.
    Cumulative {
        /// Batches folded into the running statistics so far.
        batches_seen: u64,
    },
}

impl Momentum {
    fn check(self) -> Result<(), Error> {
        match self {
            Momentum::PyTorch(m) | Momentum::Onnx(m) if !(0.0..=1.0).contains(&m) => {
                Err(Error::Momentum { momentum: m })
            }
            _ => Ok(()),
        }
    }

    /// The new running mean and variance from the old ones and the batch's
    /// mean, M2 and count.
    fn update(self, old_mean: f64, old_var: f64, m: &Moments) -> (f64, f64) {
        let n = m.count as f64;
        let (biased, unbiased) = (m.m2 / n, m.m2 / (n - 1.0));
        let pytorch = |f: f64| {
            (
                (1.0 - f) * old_mean + f * m.mean,
                (1.0 - f) * old_var + f * unbiased,
            )
        };
        match self {
            Momentum::PyTorch(f) => pytorch(f as f64),
            Momentum::Cumulative { batches_seen } => pytorch(1.0 / (batches_seen as f64 + 1.0)),
            Momentum::Onnx(f) => {
                let f = f as f64;
                (
                    f * old_mean + (1.0 - f) * m.mean,
                    f * old_var + (1.0 - f) * biased,
                )
            }
        }
    }
}

/// Running statistics to update in training: `c` values each.
#[derive(Debug)]
pub struct RunningStats<'a> {
    /// Running mean, read and updated.
    pub mean: &'a mut [f32],
    /// Running variance, read and updated.
    pub var: &'a mut [f32],
    /// The update convention.
    pub momentum: Momentum,
}

/// What a training step writes besides the output: the batch mean and rstd
/// saved for a backward pass (PyTorch's `save_mean`, `save_invstd`), and
/// optionally the running statistics (`None`: PyTorch's
/// `track_running_stats=False`).
#[derive(Debug)]
pub struct TrainStats<'a> {
    /// Per-channel batch mean, `c` long (written).
    pub saved_mean: &'a mut [f32],
    /// Per-channel `1/sqrt(var + eps)` of the batch, `c` long (written).
    pub saved_rstd: &'a mut [f32],
    /// Running statistics to update, if any.
    pub running: Option<RunningStats<'a>>,
}

/// Per-channel partial statistics of a shard: what SyncBatchNorm exchanges
/// between processes. Plain arrays (one count, `c` means, `c` M2s) that any
/// collective can move (e.g. allgather `[count, mean…, m2…]` as f64).
///
/// ```
/// use simdnorm::{BatchNorm, BatchShape, ChannelMoments, Layout};
/// // Two shards of 2 samples each of a [4, 3, 32, 32] batch; the statistics
/// // unit for 1024-value planes is 2 samples, so each shard holds one.
/// assert_eq!(BatchNorm::nchw_unit_samples(1024), 2);
/// let x: Vec<f32> = (0..4 * 3 * 1024).map(|i| ((i * 7) % 11) as f32).collect();
/// let bn = BatchNorm::new();
/// let shard = BatchShape::new(Layout::Nchw, 2, 3, 1024);
/// let mut parts = vec![ChannelMoments::new(3), ChannelMoments::new(3)];
/// let (first, second) = x.split_at(2 * 3 * 1024);
/// bn.local_moments(shard, first, &mut parts[0])?;
/// bn.local_moments(shard, second, &mut parts[1])?;
/// let mut merged = ChannelMoments::new(3);
/// ChannelMoments::merge_ranks(&parts, &mut merged)?;
/// // The same bits as the whole batch on one process.
/// let mut whole = ChannelMoments::new(3);
/// bn.local_moments(BatchShape::new(Layout::Nchw, 4, 3, 1024), &x, &mut whole)?;
/// assert_eq!(merged, whole);
/// # Ok::<(), simdnorm::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChannelMoments {
    /// Values per channel (`N·S` of the shard; the same for every channel).
    pub count: u64,
    /// Per-channel mean.
    pub mean: Vec<f64>,
    /// Per-channel sum of squared deviations from the mean.
    pub m2: Vec<f64>,
}

impl ChannelMoments {
    /// Zero moments (count 0) for `c` channels.
    pub fn new(c: usize) -> Self {
        ChannelMoments {
            count: 0,
            mean: vec![0.0; c],
            m2: vec![0.0; c],
        }
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.mean.len()
    }

    /// The moments of channel `c`.
    pub fn channel(&self, c: usize) -> Option<Moments> {
        Some(Moments {
            count: self.count,
            mean: *self.mean.get(c)?,
            m2: *self.m2.get(c)?,
        })
    }

    fn check(&self, what: &'static str, c: usize) -> Result<(), Error> {
        for len in [self.mean.len(), self.m2.len()] {
            if len != c {
                return Err(Error::Length {
                    what,
                    expected: c,
                    actual: len,
                });
            }
        }
        Ok(())
    }

    /// Merges `other` into `self` (Chan's formula per channel, `self` first).
    /// A left fold of this over shards is reproducible but matches the
    /// single-process bits only for two shards; use
    /// [`ChannelMoments::merge_ranks`] for the guarantee in general.
    pub fn merge(&mut self, other: &ChannelMoments) -> Result<(), Error> {
        let c = self.channels();
        self.check("moments", c)?;
        other.check("other moments", c)?;
        for ch in 0..c {
            let m = self
                .channel(ch)
                .expect("in range")
                .merge(&other.channel(ch).expect("in range"));
            self.mean[ch] = m.mean;
            self.m2[ch] = m.m2;
        }
        self.count += other.count;
        Ok(())
    }

    /// Merges the shards' moments, given in rank order, into `out` (resized
    /// to their channel count), with the fixed tree the single-process path
    /// uses over its units. When the shards split at unit boundaries and
    /// every shard but the last holds the same power-of-two number of units
    /// (see the [module docs](self)), `out`
    /// equals the single-process statistics bit for bit. No allocation when
    /// `out` already has the right size.
    pub fn merge_ranks(parts: &[ChannelMoments], out: &mut ChannelMoments) -> Result<(), Error> {
        let c = parts.first().map_or(0, |p| p.channels());
        for p in parts {
            p.check("shard moments", c)?;
        }
        out.mean.resize(c, 0.0);
        out.m2.resize(c, 0.0);
        out.count = parts.iter().map(|p| p.count).sum();
        for ch in 0..c {
            let mut tree = TreeMerge::new();
            for p in parts {
                tree.push(p.channel(ch).expect("checked"));
            }
            let m = tree.finish();
            out.mean[ch] = m.mean;
            out.m2[ch] = m.m2;
        }
        Ok(())
    }
}

/// BatchNorm over `[N, C, spatial…]` or `[N, spatial…, C]`: see the
/// [module docs](self) for the math, the layouts and the guarantees.
///
/// A builder over borrowed parameters, like [`LayerNorm`](crate::LayerNorm):
/// `weight` (gamma) and `bias` (beta) are optional and `c` long.
///
/// ```
/// use simdnorm::{BatchNorm, BatchShape, Layout, Momentum, RunningStats, TrainStats};
/// let shape = BatchShape::new(Layout::Nchw, 2, 3, 4); // [2, 3, 2, 2]
/// let x: Vec<f32> = (0..24).map(|i| i as f32).collect();
/// let mut y = vec![0.0f32; 24];
/// let (gamma, beta) = ([1.0f32; 3], [0.0f32; 3]);
/// let (mut rm, mut rv) = (vec![0.0f32; 3], vec![1.0f32; 3]);
/// let (mut mean, mut rstd) = (vec![0.0f32; 3], vec![0.0f32; 3]);
/// let bn = BatchNorm::new().eps(1e-5).weight(&gamma).bias(&beta);
/// bn.forward_train(shape, &x, &mut y, TrainStats {
///     saved_mean: &mut mean,
///     saved_rstd: &mut rstd,
///     running: Some(RunningStats { mean: &mut rm, var: &mut rv, momentum: Momentum::PyTorch(0.1) }),
/// })?;
/// assert_eq!(mean, [7.5, 11.5, 15.5]);          // channel 0 holds 0..4 and 12..16
/// assert!((rm[0] - 0.75).abs() < 1e-6);          // 0.9 * 0 + 0.1 * 7.5
/// // Inference with the running statistics.
/// bn.forward_inference(shape, &x, &mut y, &rm, &rv)?;
/// # Ok::<(), simdnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct BatchNorm<'p> {
    eps: f32,
    weight: Option<&'p [f32]>,
    bias: Option<&'p [f32]>,
    isa: Option<Isa>,
    parallel: bool,
}

impl Default for BatchNorm<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'p> BatchNorm<'p> {
    /// No weight, no bias, `eps = 1e-5` (PyTorch's and ONNX's default),
    /// threads on.
    pub fn new() -> Self {
        BatchNorm {
            eps: 1e-5,
            weight: None,
            bias: None,
            isa: None,
            parallel: true,
        }
    }

    /// The constant added to the variance inside the square root; finite and
    /// `>= 0` (checked when the operator runs).
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }

    /// Per-channel scale (gamma), `c` long.
    pub fn weight(mut self, weight: &'p [f32]) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Per-channel shift (beta), `c` long.
    pub fn bias(mut self, bias: &'p [f32]) -> Self {
        self.bias = Some(bias);
        self
    }

    /// Run on this instruction set instead of the selected one (results are
    /// bit-identical on every ISA).
    pub fn isa(mut self, isa: Isa) -> Self {
        self.isa = Some(isa);
        self
    }

    /// Spread the work over rayon's current pool (default `true`; results
    /// are bit-identical either way). Small inputs stay on the caller's thread.
    pub fn parallel(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }

    /// Rows per statistics chunk for NHWC with `c` channels: a multiple of 16
    /// between 16 and 1024 that depends on `c` only. SyncBatchNorm shards of an
    /// NHWC batch reproduce the single-process bits when they split at
    /// multiples of this many rows (`n * spatial` positions), see the module
    /// docs.
    pub fn nhwc_chunk_rows(c: usize) -> usize {
        chunk_rows(c)
    }

    /// Samples per NCHW statistics unit for planes of `spatial` values: the
    /// smallest power of two whose planes hold at least 2048 values (1 from
    /// `spatial = 2048` on), so it depends on `spatial` only. SyncBatchNorm
    /// shards of an NCHW batch reproduce the single-process bits when every
    /// shard but the last holds the same power-of-two number of units, see
    /// the module docs.
    ///
    /// ```
    /// use simdnorm::BatchNorm;
    /// assert_eq!(BatchNorm::nchw_unit_samples(7 * 7), 64);
    /// assert_eq!(BatchNorm::nchw_unit_samples(28 * 28), 4);
    /// assert_eq!(BatchNorm::nchw_unit_samples(56 * 56), 1);
    /// ```
    pub fn nchw_unit_samples(spatial: usize) -> usize {
        unit_samples(spatial)
    }

    /// Checks `x`, `y` and the parameters against `shape`.
    fn check(&self, shape: BatchShape, x: &[f32], y: Option<&[f32]>) -> Result<(), Error> {
        let len = shape.len()?;
        if x.len() != len {
            return Err(Error::Length {
                what: "input",
                expected: len,
                actual: x.len(),
            });
        }
        if let Some(y) = y
            && y.len() != len
        {
            return Err(Error::Length {
                what: "output",
                expected: len,
                actual: y.len(),
            });
        }
        check_eps(self.eps)?;
        check_len("weight", self.weight, shape.c)?;
        check_len("bias", self.bias, shape.c)
    }

    /// Inference: `y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`
    /// per channel. Reads `x` once, writes `y` once; no statistics are taken.
    pub fn forward_inference(
        &self,
        shape: BatchShape,
        x: &[f32],
        y: &mut [f32],
        running_mean: &[f32],
        running_var: &[f32],
    ) -> Result<(), Error> {
        self.check(shape, x, Some(y))?;
        check_len("running mean", Some(running_mean), shape.c)?;
        check_len("running var", Some(running_var), shape.c)?;
        let k = Isa::kernels(self.isa)?;
        if shape.is_empty() {
            return Ok(());
        }
        let eps = self.eps as f64;
        let coef = Coefficients::new(
            shape.c,
            |c| running_mean[c] as f64,
            |c| 1.0 / (running_var[c] as f64 + eps).sqrt(),
            self.weight,
            self.bias,
        );
        exec::apply(k, shape.geometry(), x, y, &coef, self.parallel, false);
        Ok(())
    }

    /// The inference map folded into one multiply-add per element:
    /// `scale = weight / sqrt(running_var + eps)`,
    /// `shift = bias - running_mean * scale` (computed in f64, rounded once),
    /// so that `y = x * scale + shift`. This is what an engine folds into the
    /// weights and bias of a preceding convolution.
    ///
    /// Caveat: `x * scale` and `shift` cancel when a channel's mean is large
    /// against its spread, leaving an error of about `ulp(mean * scale)` in
    /// `y` (~6e-5 for mean 1000, unit variance); [`forward_inference`](Self::forward_inference)
    /// subtracts the mean first and keeps full precision.
    ///
    /// ```
    /// use simdnorm::BatchNorm;
    /// let (mut scale, mut shift) = ([0.0f32; 1], [0.0f32; 1]);
    /// BatchNorm::new().eps(0.0).fold(&[2.0], &[4.0], &mut scale, &mut shift)?;
    /// assert_eq!((scale[0], shift[0]), (0.5, -1.0));
    /// # Ok::<(), simdnorm::Error>(())
    /// ```
    pub fn fold(
        &self,
        running_mean: &[f32],
        running_var: &[f32],
        scale: &mut [f32],
        shift: &mut [f32],
    ) -> Result<(), Error> {
        let c = running_mean.len();
        check_eps(self.eps)?;
        check_len("running var", Some(running_var), c)?;
        check_len("scale", Some(scale), c)?;
        check_len("shift", Some(shift), c)?;
        check_len("weight", self.weight, c)?;
        check_len("bias", self.bias, c)?;
        for ch in 0..c {
            let rstd = 1.0 / (running_var[ch] as f64 + self.eps as f64).sqrt();
            let a = rstd * self.weight.map_or(1.0, |w| w[ch] as f64);
            scale[ch] = a as f32;
            shift[ch] =
                (self.bias.map_or(0.0, |b| b[ch] as f64) - running_mean[ch] as f64 * a) as f32;
        }
        Ok(())
    }

    /// Training forward: batch statistics (one read of `x`), the normalized
    /// output (a second read), saved mean and rstd, and the running-statistics
    /// update. Equal to [`local_moments`](Self::local_moments) over the whole
    /// batch followed by [`apply_train`](Self::apply_train).
    ///
    /// Allocates O(`c`) per call for per-channel coefficients, for NHWC an
    /// O(`n * spatial / R * c`) buffer of per-chunk moments, and for the
    /// one-sweep NCHW schedule (see the module docs) O(`n`) per thread.
    pub fn forward_train(
        &self,
        shape: BatchShape,
        x: &[f32],
        y: &mut [f32],
        stats: TrainStats<'_>,
    ) -> Result<(), Error> {
        self.check(shape, x, Some(y))?;
        check_train_stats(&stats, shape.c)?;
        let k = Isa::kernels(self.isa)?;
        if shape.is_empty() {
            return Ok(());
        }
        if shape.per_channel() == 1 {
            return Err(Error::SingleValuePerChannel { count: 1 });
        }
        let mut m = ChannelMoments::new(shape.c);
        m.count = shape.per_channel() as u64;
        let g = shape.geometry();
        if exec::fuses_training(g, self.parallel) {
            let norm = self.normalization(m.count);
            exec::train_planes(k, g, x, y, &mut m.mean, &mut m.m2, &norm, self.parallel);
            self.write_train_stats(&m, stats);
        } else {
            exec::moments(k, g, x, &mut m.mean, &mut m.m2, self.parallel);
            self.finish_train(k, shape, x, y, &m, stats);
        }
        Ok(())
    }

    fn normalization(&self, count: u64) -> exec::Normalization<'p> {
        exec::Normalization {
            count,
            eps: self.eps,
            weight: self.weight,
            bias: self.bias,
        }
    }

    /// SyncBatchNorm step 1: the per-channel moments of this shard, into
    /// `out` (resized to `c`; no allocation when it already fits, except the
    /// NHWC chunk buffer). An empty shard gives count 0.
    pub fn local_moments(
        &self,
        shape: BatchShape,
        x: &[f32],
        out: &mut ChannelMoments,
    ) -> Result<(), Error> {
        self.check(shape, x, None)?;
        let k = Isa::kernels(self.isa)?;
        out.mean.resize(shape.c, 0.0);
        out.m2.resize(shape.c, 0.0);
        out.count = shape.per_channel() as u64;
        if shape.is_empty() {
            out.count = 0;
            out.mean.fill(0.0);
            out.m2.fill(0.0);
            return Ok(());
        }
        exec::moments(
            k,
            shape.geometry(),
            x,
            &mut out.mean,
            &mut out.m2,
            self.parallel,
        );
        Ok(())
    }

    /// SyncBatchNorm step 3: normalizes this shard with the merged statistics
    /// of all shards (`merged.count` values per channel, which must exceed 1),
    /// saves mean and rstd, and updates the running statistics (the unbiased
    /// variance uses the merged count). Every shard computes the same saved
    /// and running statistics.
    pub fn apply_train(
        &self,
        shape: BatchShape,
        x: &[f32],
        y: &mut [f32],
        merged: &ChannelMoments,
        stats: TrainStats<'_>,
    ) -> Result<(), Error> {
        self.check(shape, x, Some(y))?;
        merged.check("merged moments", shape.c)?;
        check_train_stats(&stats, shape.c)?;
        let k = Isa::kernels(self.isa)?;
        if shape.c == 0 {
            return Ok(());
        }
        if merged.count <= 1 {
            return Err(Error::SingleValuePerChannel {
                count: merged.count as usize,
            });
        }
        self.finish_train(k, shape, x, y, merged, stats);
        Ok(())
    }

    fn finish_train(
        &self,
        k: &crate::kernels::Kernels,
        shape: BatchShape,
        x: &[f32],
        y: &mut [f32],
        m: &ChannelMoments,
        stats: TrainStats<'_>,
    ) {
        let norm = self.normalization(m.count);
        let rstd = |c: usize| norm.rstd(m.m2[c]);
        let coef = Coefficients::new(shape.c, |c| m.mean[c], rstd, self.weight, self.bias);
        if !shape.is_empty() {
            exec::apply(k, shape.geometry(), x, y, &coef, self.parallel, true);
        }
        self.write_train_stats(m, stats);
    }

    /// Saved mean and rstd, and the running-statistics update, from the
    /// batch moments `m`.
    fn write_train_stats(&self, m: &ChannelMoments, stats: TrainStats<'_>) {
        let norm = self.normalization(m.count);
        let TrainStats {
            saved_mean,
            saved_rstd,
            running,
        } = stats;
        for c in 0..m.mean.len() {
            saved_mean[c] = m.mean[c] as f32;
            saved_rstd[c] = norm.rstd(m.m2[c]) as f32;
        }
        if let Some(r) = running {
            for c in 0..m.mean.len() {
                let batch = m.channel(c).expect("in range");
                let (mean, var) = r.momentum.update(r.mean[c] as f64, r.var[c] as f64, &batch);
                r.mean[c] = mean as f32;
                r.var[c] = var as f32;
            }
        }
    }
}

fn check_train_stats(stats: &TrainStats<'_>, c: usize) -> Result<(), Error> {
    check_len("saved mean", Some(stats.saved_mean), c)?;
    check_len("saved rstd", Some(stats.saved_rstd), c)?;
    if let Some(r) = &stats.running {
        check_len("running mean", Some(r.mean), c)?;
        check_len("running var", Some(r.var), c)?;
        r.momentum.check()?;
    }
    Ok(())
}
