//! What LayerNorm and RMSNorm share above the kernels: argument checks, the
//! choice of streaming stores, and the hand-off to [`parallel`](crate::parallel).

use crate::error::{check_eps, check_len};
use crate::isa::Isa;
use crate::kernels::{RowJob, RowOp, walk_backward};
use crate::layout::{Rows, RowsMut, check_same_shape};
use crate::{Error, parallel};

/// Outputs at least this large are written with non-temporal stores: they
/// would not stay in cache anyway (L3 is 32 MiB per Zen 4 CCD), and skipping
/// the read-for-ownership saves a third of the memory traffic (reasoning, not
/// a measurement: the threshold has not been swept with the bench tool).
pub(crate) const STREAM_MIN_BYTES: usize = 16 << 20;

/// The options every row operator takes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowNormArgs<'p> {
    pub eps: f32,
    pub weight: Option<&'p [f32]>,
    pub bias: Option<&'p [f32]>,
    pub isa: Option<Isa>,
    pub parallel: bool,
}

/// Checks everything, then runs `op` over the rows. `input = None`
/// normalizes `output` in place.
pub(crate) fn run(
    op: RowOp,
    args: &RowNormArgs<'_>,
    input: Option<Rows<'_>>,
    output: RowsMut<'_>,
    saved_mean: Option<&mut [f32]>,
    saved_rstd: Option<&mut [f32]>,
) -> Result<(), Error> {
    if let Some(input) = &input {
        check_same_shape(input, &output)?;
    }
    let (rows, cols) = (output.rows(), output.cols());
    check_eps(args.eps)?;
    check_len("weight", args.weight, cols)?;
    check_len("bias", args.bias, cols)?;
    check_len("saved mean", saved_mean.as_deref(), rows)?;
    check_len("saved rstd", saved_rstd.as_deref(), rows)?;
    let kernels = Isa::kernels(args.isa)?;
    if rows == 0 {
        return Ok(());
    }
    if cols == 0 {
        return Err(Error::EmptyRows { rows });
    }
    let stream = rows.saturating_mul(cols).saturating_mul(4) >= STREAM_MIN_BYTES;
    let (output, _, _, output_stride) = output.into_parts();
    // Cache-resident rows with the output just past the input modulo 4 KiB
    // are written last chunk first. Decided by the first row: with equal
    // strides every row sits the same way. Streamed rows wait on memory,
    // not on the store queue.
    let descending = !stream
        && input
            .as_ref()
            .is_some_and(|x| walk_backward(x.data(), output));
    let job = RowJob {
        input: input.as_ref().map(|x| x.data()),
        input_stride: input.as_ref().map_or(0, |x| x.stride()),
        output,
        output_stride,
        rows,
        cols,
        weight: args.weight,
        bias: args.bias,
        eps: args.eps,
        saved_mean,
        saved_rstd,
        stream,
    };
    parallel::run_rows(kernels.row_op(op, descending), job, args.parallel);
    Ok(())
}
