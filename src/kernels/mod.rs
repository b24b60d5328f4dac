//! Kernels: each algorithm written once, generic over [`Simd`](crate::simd::Simd),
//! and stamped out per ISA into a static [`Kernels`] table of plain `fn`
//! pointers. Only slices and scalars (grouped in [`RowJob`]) cross the table,
//! never vector types, so the operators above it hold no `core::arch` types.

pub(crate) mod channels;
pub(crate) mod copy;
pub(crate) mod rows;
mod table;

pub(crate) use table::kernels_for;

use crate::moments::Moments;

/// A block of rows to normalize: everything a row kernel needs, as slices and
/// scalars, already validated by the operator layer (every row index below
/// `rows` is in bounds for `input`, `output` and the saved-statistics slices).
pub(crate) struct RowJob<'a> {
    /// `None`: normalize `output` in place.
    pub input: Option<&'a [f32]>,
    pub input_stride: usize,
    pub output: &'a mut [f32],
    pub output_stride: usize,
    pub rows: usize,
    pub cols: usize,
    pub weight: Option<&'a [f32]>,
    pub bias: Option<&'a [f32]>,
    pub eps: f32,
    pub saved_mean: Option<&'a mut [f32]>,
    pub saved_rstd: Option<&'a mut [f32]>,
    /// Write the output with non-temporal stores.
    pub stream: bool,
}

impl<'a> RowJob<'a> {
    /// Splits into rows `[0, at)` and `[at, rows)`; `0 < at < rows`.
    #[cfg(feature = "rayon")]
    pub(crate) fn split_at(self, at: usize) -> (RowJob<'a>, RowJob<'a>) {
        let (in_lo, in_hi) = match self.input {
            Some(x) => {
                let (a, b) = x.split_at(at * self.input_stride);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let (out_lo, out_hi) = self.output.split_at_mut(at * self.output_stride);
        let split = |v: Option<&'a mut [f32]>| match v {
            Some(v) => {
                let (a, b) = v.split_at_mut(at);
                (Some(a), Some(b))
            }
            None => (None, None),
        };
        let (mean_lo, mean_hi) = split(self.saved_mean);
        let (rstd_lo, rstd_hi) = split(self.saved_rstd);
        let lo = RowJob {
            input: in_lo,
            output: out_lo,
            rows: at,
            saved_mean: mean_lo,
            saved_rstd: rstd_lo,
            ..self
        };
        let hi = RowJob {
            input: in_hi,
            output: out_hi,
            rows: self.rows - at,
            saved_mean: mean_hi,
            saved_rstd: rstd_hi,
            ..lo
        };
        (lo, hi)
    }
}

/// One ISA's entry points.
pub(crate) struct Kernels {
    pub layer_norm: fn(RowJob<'_>),
    pub rms_norm: fn(RowJob<'_>),
    pub row_moments: fn(&[f32]) -> Moments,
    pub stream_copy: fn(&[f32], &mut [f32]),
    pub bn_plane_moments: fn(channels::PlaneStatsJob<'_>),
    pub bn_chunk_moments: fn(channels::ChunkJob<'_>),
    pub bn_apply_planes: fn(channels::PlaneJob<'_>),
    pub bn_apply_channel_planes: fn(channels::ChannelPlanesJob<'_, '_>),
    pub bn_apply_pattern: fn(channels::PatternJob<'_>),
}
