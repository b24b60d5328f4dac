//! LayerNorm over the last axis (PyTorch `torch.nn.functional.layer_norm` with
//! `normalized_shape = [cols]`, ONNX `LayerNormalization` with `axis = -1`).

use crate::Error;
use crate::isa::Isa;
use crate::kernels::RowOp;
use crate::layout::{Rows, RowsMut};
use crate::row_norm::{self, RowNormArgs};

/// LayerNorm over the last axis: for each row,
/// `y = (x - mean) / sqrt(var + eps) * weight + bias`, with `var` the biased
/// variance of the row. The same in training and inference, at any batch size.
///
/// A builder over borrowed parameters; building one is free, so make one per
/// call or keep one around. `weight` and `bias` are optional (each missing
/// one is skipped, not applied as 1 or 0).
///
/// ```
/// use simdnorm::{LayerNorm, Rows, RowsMut};
/// let x = [1.0f32, 2.0, 3.0, 4.0, 10.0, 10.0, 10.0, 10.0];
/// let mut y = [0.0f32; 8];
/// let weight = [1.0f32; 4];
/// let bias = [0.5f32; 4];
/// LayerNorm::new()
///     .eps(1e-5)
///     .weight(&weight)
///     .bias(&bias)
///     .forward(Rows::new(&x, 2, 4)?, RowsMut::new(&mut y, 2, 4)?)?;
/// assert!((y[0] - (0.5 - 1.5 / 1.25f32.sqrt())).abs() < 1e-5);
/// assert_eq!(&y[4..], &[0.5; 4]); // a constant row outputs bias
/// # Ok::<(), simdnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct LayerNorm<'p> {
    args: RowNormArgs<'p>,
}

impl Default for LayerNorm<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'p> LayerNorm<'p> {
    /// No weight, no bias, `eps = 1e-5` (PyTorch's and ONNX's default).
    pub fn new() -> Self {
        LayerNorm {
            args: RowNormArgs {
                eps: 1e-5,
                weight: None,
                bias: None,
                isa: None,
                parallel: true,
            },
        }
    }

    /// The constant added to the variance inside the square root. Must be
    /// finite and >= 0 (checked when the operator runs).
    pub fn eps(mut self, eps: f32) -> Self {
        self.args.eps = eps;
        self
    }

    /// Per-feature scale (gamma), `cols` long.
    pub fn weight(mut self, weight: &'p [f32]) -> Self {
        self.args.weight = Some(weight);
        self
    }

    /// Per-feature shift (beta), `cols` long.
    pub fn bias(mut self, bias: &'p [f32]) -> Self {
        self.args.bias = Some(bias);
        self
    }

    /// Run on this instruction set instead of the detected one (for tests and
    /// benchmarks; the result is bit-identical on every ISA).
    pub fn isa(mut self, isa: Isa) -> Self {
        self.args.isa = Some(isa);
        self
    }

    /// Whether rows may be spread over the current rayon pool (default true;
    /// small inputs stay on the caller's thread regardless). Results do not
    /// depend on it.
    pub fn parallel(mut self, parallel: bool) -> Self {
        self.args.parallel = parallel;
        self
    }

    /// Normalizes each row of `input` into the same row of `output`.
    pub fn forward(&self, input: Rows<'_>, output: RowsMut<'_>) -> Result<(), Error> {
        row_norm::run(
            RowOp::LayerNorm,
            &self.args,
            Some(input),
            output,
            None,
            None,
        )
    }

    /// Normalizes each row of `data` in place.
    pub fn forward_in_place(&self, data: RowsMut<'_>) -> Result<(), Error> {
        row_norm::run(RowOp::LayerNorm, &self.args, None, data, None, None)
    }

    /// [`forward`](Self::forward) that also saves each row's `mean` and
    /// `rstd = 1/sqrt(var + eps)` (one value per row, PyTorch's
    /// `native_layer_norm` outputs) for a backward pass. A row holding NaN or
    /// ±inf saves NaN for both.
    pub fn forward_train(
        &self,
        input: Rows<'_>,
        output: RowsMut<'_>,
        mean: &mut [f32],
        rstd: &mut [f32],
    ) -> Result<(), Error> {
        row_norm::run(
            RowOp::LayerNorm,
            &self.args,
            Some(input),
            output,
            Some(mean),
            Some(rstd),
        )
    }
}
