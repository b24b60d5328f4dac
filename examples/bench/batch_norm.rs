//! The BatchNorm ops of the registry (`batch_norm_infer`, `batch_norm_train`):
//! shape parsing, the [`Case`], and a plain f64 reference to measure the
//! error against.
//!
//! Shapes are written in logical order, `NxC` then any number of spatial
//! dimensions (`NxCxL`, `NxCxHxW`, `NxCxDxHxW`…), whatever the memory
//! layout; `--layout nchw|nhwc` picks the layout, and without it each shape
//! runs in both. A parsed shape displays as `32x64x56x56/nhwc`.
//!
//! Bytes follow the row ops' convention: every input read once (`x` and the
//! per-channel vectors) and every output written once. Training reads `x`
//! twice (statistics, then output) but is credited with one read, so from
//! DRAM its ratio to the copy tops out near 2/3.
//!
//! The reference is deliberately naive: each checked channel's values are
//! gathered into an f64 vector, the mean and biased variance come from two
//! passes over it (mean first, then squared deviations from that mean), and
//! the output is `(x - mean) / sqrt(var + eps) * weight + bias` in f64.

use crate::data::{self, Buf};
use crate::ops::{Case, Shape, parse_dims};
use simdnorm::{
    BatchNorm, BatchShape, Error, Isa, Layout, Momentum, RunningStats, TrainStats, reference,
};

/// Shapes of the default run: a ResNet stem block at batch 1 and 32, and
/// deeper ResNet stages. 1x64x56x56 is 0.8 MB per buffer (L2), the others
/// 6.4 MB (8x256x28x28, 64x512x7x7: L3) and 25.7 MB (32x64x56x56: about the
/// L3, so mostly DRAM).
pub const SHAPES: &[&str] = &["1x64x56x56", "32x64x56x56", "8x256x28x28", "64x512x7x7"];

/// The subset the criterion benches use: each in both layouts.
pub const BENCH_SHAPES: &[&str] = &["32x64x56x56", "8x256x28x28"];

/// The `--shape` syntax, for `--help`.
pub const SHAPE_SYNTAX: &str =
    "NxC[xD..] (logical N, C, spatial; --layout nchw|nhwc, default both)";

/// PyTorch's default momentum, used by `batch_norm_train`.
const MOMENTUM: f32 = 0.1;

/// Output values at most compared with the reference in full; past this an
/// evenly spaced subset of channels is (at least one channel, all its
/// values), so a big shape does not spend seconds in f64 loops.
const CHECKED_VALUES: usize = 1 << 20;

/// Inference or training.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `forward_inference` with given running statistics.
    Infer,
    /// `forward_train`: batch statistics, saved mean/rstd, running update.
    Train,
}

/// `--shape` parser of `batch_norm_infer`.
pub fn parse_infer(spec: &str, layout: Option<&str>) -> Result<Vec<Shape>, String> {
    parse(spec, layout)
}

/// `--shape` parser of `batch_norm_train`: as for inference, and a channel
/// must hold more than one value (training has no variance otherwise).
pub fn parse_train(spec: &str, layout: Option<&str>) -> Result<Vec<Shape>, String> {
    let shapes = parse(spec, layout)?;
    let per_channel: usize = shapes[0].dims[0] * shapes[0].dims[2..].iter().product::<usize>();
    if per_channel < 2 {
        return Err(format!(
            "training needs more than one value per channel (N x spatial > 1), got {spec:?}"
        ));
    }
    Ok(shapes)
}

/// `NxC[x spatial…]` with every dimension positive, in the layout given or
/// (without one) in both.
fn parse(spec: &str, layout: Option<&str>) -> Result<Vec<Shape>, String> {
    let dims = parse_dims(spec)?;
    if dims.len() < 2 {
        return Err(format!(
            "expected NxC or NxC followed by spatial dimensions (e.g. 32x64x56x56), got {spec:?}"
        ));
    }
    let layouts: &[&str] = match layout {
        None => &["nchw", "nhwc"],
        Some(l) if l.eq_ignore_ascii_case("nchw") => &["nchw"],
        Some(l) if l.eq_ignore_ascii_case("nhwc") => &["nhwc"],
        Some(l) => return Err(format!("unknown layout {l:?} (known: nchw, nhwc)")),
    };
    Ok(layouts
        .iter()
        .map(|l| Shape {
            dims: dims.clone(),
            layout: Some(l.to_string()),
        })
        .collect())
}

/// The library's shape for a parsed one (which [`parse`] made, so valid).
fn batch_shape(shape: &Shape) -> BatchShape {
    let layout = match shape.layout.as_deref() {
        Some("nhwc") => Layout::Nhwc,
        Some("nchw") => Layout::Nchw,
        other => panic!("BatchNorm shape without a known layout: {other:?}"),
    };
    let spatial = shape.dims[2..].iter().product();
    BatchShape::new(layout, shape.dims[0], shape.dims[1], spatial)
}

/// Index of sample `n`, channel `c`, spatial position `s` in memory.
fn index(sh: &BatchShape, n: usize, c: usize, s: usize) -> usize {
    match sh.layout {
        Layout::Nchw => (n * sh.c + c) * sh.spatial + s,
        Layout::Nhwc => (n * sh.spatial + s) * sh.c + c,
    }
}

/// Memory indices of channel `c`'s values, samples outer, positions inner.
fn channel_indices(sh: &BatchShape, c: usize) -> impl Iterator<Item = usize> + '_ {
    (0..sh.n).flat_map(move |n| (0..sh.spatial).map(move |s| index(sh, n, c, s)))
}

/// Mean and biased variance of `v`, two passes in f64.
fn mean_var(v: &[f64]) -> (f64, f64) {
    let count = v.len() as f64;
    let mean = v.iter().sum::<f64>() / count;
    let var = v.iter().map(|a| (a - mean) * (a - mean)).sum::<f64>() / count;
    (mean, var)
}

/// What a training call must leave in its per-channel outputs, for one
/// channel.
#[derive(Clone, Copy, Debug)]
struct TrainRef {
    saved_mean: f64,
    saved_rstd: f64,
    running_mean: f64,
    running_var: f64,
}

/// A BatchNorm problem: contiguous buffers in the shape's layout, weight and
/// bias, and the reference output of the checked channels.
pub struct BnCase {
    mode: Mode,
    shape: BatchShape,
    x: Buf,
    y: Buf,
    weight: Buf,
    bias: Buf,
    eps: f32,
    /// Running statistics: read by inference; in training, reset to
    /// `initial_*` before each call (2·C values, nothing next to the tensor)
    /// so every call makes the same update and the reference knows it.
    running_mean: Buf,
    running_var: Buf,
    initial_mean: Buf,
    initial_var: Buf,
    saved_mean: Buf,
    saved_rstd: Buf,
    /// Channels compared with the reference, ascending.
    checked: Vec<usize>,
    /// Reference outputs of the checked channels, channel by channel, each
    /// in [`channel_indices`] order.
    expected: Vec<f64>,
    /// Training: reference statistics of the checked channels.
    expected_stats: Vec<TrainRef>,
}

impl BnCase {
    /// Fills the inputs (in the current rayon pool) and computes the
    /// reference.
    pub fn new(mode: Mode, shape: &Shape, offset: usize) -> Self {
        let sh = batch_shape(shape);
        let (c, len) = (sh.c, sh.len().expect("parse_dims bounds the size"));
        let x = data::normal(len, 11, 0.0, 1.0);
        let y = data::zeros_at(len, offset);
        let weight = data::normal(c, 12, 1.0, 0.1);
        let bias = data::normal(c, 13, 0.0, 0.1);
        let initial_mean = data::normal(c, 14, 0.0, 0.1);
        // Around 1 (the data's variance); |.| keeps it a variance whatever
        // the draw.
        let mut initial_var = data::normal(c, 15, 1.0, 0.1);
        initial_var.iter_mut().for_each(|v| *v = v.abs());
        let eps = 1e-5;

        let per_channel = sh.per_channel();
        let k = if len <= CHECKED_VALUES {
            c
        } else {
            (CHECKED_VALUES / per_channel).clamp(1, c)
        };
        let checked: Vec<usize> = (0..k).map(|i| i * c / k).collect();

        let mut expected = Vec::with_capacity(k * per_channel);
        let mut expected_stats = Vec::new();
        let mut values = Vec::with_capacity(per_channel);
        for &ch in &checked {
            values.clear();
            values.extend(channel_indices(&sh, ch).map(|i| x[i] as f64));
            let (mean, var) = match mode {
                Mode::Infer => (initial_mean[ch] as f64, initial_var[ch] as f64),
                Mode::Train => mean_var(&values),
            };
            let rstd = 1.0 / (var + eps as f64).sqrt();
            let (w, b) = (weight[ch] as f64, bias[ch] as f64);
            expected.extend(values.iter().map(|v| (v - mean) * rstd * w + b));
            if mode == Mode::Train {
                // PyTorch: the running variance takes the unbiased variance.
                let count = per_channel as f64;
                let m = MOMENTUM as f64;
                expected_stats.push(TrainRef {
                    saved_mean: mean,
                    saved_rstd: rstd,
                    running_mean: (1.0 - m) * initial_mean[ch] as f64 + m * mean,
                    running_var: (1.0 - m) * initial_var[ch] as f64
                        + m * var * count / (count - 1.0),
                });
            }
        }

        BnCase {
            mode,
            shape: sh,
            x,
            y,
            weight,
            bias,
            eps,
            running_mean: initial_mean.clone(),
            running_var: initial_var.clone(),
            initial_mean,
            initial_var,
            saved_mean: data::zeros(c),
            saved_rstd: data::zeros(c),
            checked,
            expected,
            expected_stats,
        }
    }
}

impl Case for BnCase {
    fn run(&mut self, isa: Isa) -> Result<(), Error> {
        let bn = BatchNorm::new()
            .eps(self.eps)
            .weight(&self.weight)
            .bias(&self.bias)
            .isa(isa);
        match self.mode {
            Mode::Infer => bn.forward_inference(
                self.shape,
                &self.x,
                &mut self.y,
                &self.running_mean,
                &self.running_var,
            ),
            Mode::Train => {
                self.running_mean.copy_from_slice(&self.initial_mean);
                self.running_var.copy_from_slice(&self.initial_var);
                bn.forward_train(
                    self.shape,
                    &self.x,
                    &mut self.y,
                    TrainStats {
                        saved_mean: &mut self.saved_mean,
                        saved_rstd: &mut self.saved_rstd,
                        running: Some(RunningStats {
                            mean: &mut self.running_mean,
                            var: &mut self.running_var,
                            momentum: Momentum::PyTorch(MOMENTUM),
                        }),
                    },
                )
            }
        }
    }

    /// `x`, weight and bias, and the running mean and variance (read by
    /// both modes).
    fn in_bytes(&self) -> usize {
        4 * (self.x.len() + 4 * self.shape.c)
    }

    /// `y`; training also writes saved mean and rstd and the running mean
    /// and variance.
    fn out_bytes(&self) -> usize {
        let per_channel = match self.mode {
            Mode::Infer => 0,
            Mode::Train => 4,
        };
        4 * (self.y.len() + per_channel * self.shape.c)
    }

    fn max_abs_err(&self) -> f64 {
        let got: Vec<f32> = self
            .checked
            .iter()
            .flat_map(|&ch| channel_indices(&self.shape, ch).map(|i| self.y[i]))
            .collect();
        reference::max_abs_error(&got, &self.expected)
    }

    fn checked(&self) -> Option<String> {
        (self.checked.len() < self.shape.c).then(|| {
            format!(
                "{} of {} channels, evenly spaced",
                self.checked.len(),
                self.shape.c
            )
        })
    }

    /// Training: saved mean and rstd and the updated running statistics of
    /// the checked channels, against the reference (relative 2e-6: f32
    /// storage alone costs 6e-8; a biased running variance would be off by
    /// about `0.1 / (N·S)`, caught while N·S is below ~2.5e4).
    fn verify(&self) -> Result<(), String> {
        let close = |what: &str, ch: usize, got: f32, want: f64, scale: f64| {
            let err = (got as f64 - want).abs();
            if err <= 2e-6 * scale {
                Ok(())
            } else {
                Err(format!(
                    "{what} of channel {ch}: got {got}, reference {want} (error {err:.2e})"
                ))
            }
        };
        for (&ch, r) in self.checked.iter().zip(&self.expected_stats) {
            let sd = 1.0 / r.saved_rstd;
            close(
                "saved mean",
                ch,
                self.saved_mean[ch],
                r.saved_mean,
                r.saved_mean.abs() + sd,
            )?;
            close(
                "saved rstd",
                ch,
                self.saved_rstd[ch],
                r.saved_rstd,
                r.saved_rstd,
            )?;
            close(
                "running mean",
                ch,
                self.running_mean[ch],
                r.running_mean,
                1.0 + r.running_mean.abs(),
            )?;
            close(
                "running var",
                ch,
                self.running_var[ch],
                r.running_var,
                1.0 + r.running_var.abs(),
            )?;
        }
        Ok(())
    }
}
