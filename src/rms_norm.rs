//! RMSNorm over the last axis (PyTorch `torch.nn.functional.rms_norm` with
//! `normalized_shape = [cols]`, ONNX `RMSNormalization` with `axis = -1`).

use crate::Error;
use crate::isa::Isa;
use crate::kernels::RowOp;
use crate::layout::{Rows, RowsMut};
use crate::row_norm::{self, RowNormArgs};

/// RMSNorm over the last axis: for each row,
/// `y = x / sqrt(mean(x²) + eps) * weight`.
///
/// `eps` defaults to `f32::EPSILON`, what PyTorch uses when `eps=None`
/// (LLaMA-style models pass 1e-5 or 1e-6 explicitly).
///
/// ```
/// use simdnorm::{RmsNorm, Rows, RowsMut};
/// let x = [3.0f32, 4.0];
/// let mut y = [0.0f32; 2];
/// RmsNorm::new().eps(0.0).forward(Rows::new(&x, 1, 2)?, RowsMut::new(&mut y, 1, 2)?)?;
/// // rms = sqrt((9 + 16) / 2)
/// assert!((y[0] - 3.0 / 12.5f32.sqrt()).abs() < 1e-6);
/// # Ok::<(), simdnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct RmsNorm<'p> {
    args: RowNormArgs<'p>,
}

impl Default for RmsNorm<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'p> RmsNorm<'p> {
    /// No weight, `eps = f32::EPSILON`.
    pub fn new() -> Self {
        RmsNorm {
            args: RowNormArgs {
                eps: f32::EPSILON,
                weight: None,
                bias: None,
                isa: None,
                parallel: true,
            },
        }
    }

    /// The constant added to the mean square inside the square root. Must be
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

    /// Run on this instruction set instead of the detected one (for tests and
    /// benchmarks; the result is bit-identical on every ISA).
    pub fn isa(mut self, isa: Isa) -> Self {
        self.args.isa = Some(isa);
        self
    }

    /// Whether rows may be spread over the current rayon pool (default true).
    /// Results do not depend on it.
    pub fn parallel(mut self, parallel: bool) -> Self {
        self.args.parallel = parallel;
        self
    }

    /// Normalizes each row of `input` into the same row of `output`.
    pub fn forward(&self, input: Rows<'_>, output: RowsMut<'_>) -> Result<(), Error> {
        row_norm::run(RowOp::RmsNorm, &self.args, Some(input), output, None, None)
    }

    /// Normalizes each row of `data` in place.
    pub fn forward_in_place(&self, data: RowsMut<'_>) -> Result<(), Error> {
        row_norm::run(RowOp::RmsNorm, &self.args, None, data, None, None)
    }

    /// [`forward`](Self::forward) that also saves each row's
    /// `rstd = 1/sqrt(mean(x²) + eps)` for a backward pass (NaN for a row
    /// holding NaN or ±inf).
    pub fn forward_train(
        &self,
        input: Rows<'_>,
        output: RowsMut<'_>,
        rstd: &mut [f32],
    ) -> Result<(), Error> {
        row_norm::run(
            RowOp::RmsNorm,
            &self.args,
            Some(input),
            output,
            None,
            Some(rstd),
        )
    }
}
