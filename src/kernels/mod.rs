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

/// Whether an element-wise pass from `input` to `output` should walk
/// backward (last vector first) to avoid 4 KiB aliasing, from where the
/// two buffers sit relative to each other modulo 4 KiB.
///
/// A load whose address matches an older, not yet written store in the low
/// 12 bits waits for that store as if it were to the same place. Walking
/// forward, the load of `x[i]` is younger than the stores of `y[i - k]` for
/// the last few `k`: when `y` sits a few vectors past `x` modulo 4 KiB
/// (`0 < d < 2048` with `d = (y - x) mod 4096`, bytes), every load waits on
/// a store. Walking backward the pending stores are at higher addresses, so
/// the same `d` never matches; it would for `d` just below 4096, which walks
/// forward. The order changes no value, only speed. Two buffers allocated
/// one after the other often sit exactly one line apart (`d = 64`), as
/// most of the bench tool's BatchNorm buffers do.
///
/// Measured, inference at one thread, median of 3-4 alternations in one
/// process with buffers at `d = 64`, forward -> backward: `[8, 256, 28, 28]`
/// NCHW 290 -> 224 µs, NHWC 329 -> 271 µs; `[64, 512, 7, 7]` NHWC 369 -> 279
/// µs; DRAM-resident `[32, 64, 56, 56]` unchanged (memory, not the store
/// queue, sets its pace). A harness with the output placed 64 bytes past
/// the input modulo 4 KiB rather than 0: NCHW `[8, 192, 28, 28]` 141-156 µs
/// against 105-115 µs (fastest of 61 calls).
///
/// The row ops use it through separate entry points
/// ([`Kernels::row_op`]): each cache-resident row is written last chunk
/// first while the next row's sums, fused into the same loop, keep their
/// order. RMSNorm, one thread, buffers one line apart, medians of 4
/// alternations: `[512, 1024]` 81.3 -> 65.0 µs, `[128, 768]` 13.3 -> 11.0
/// µs; LayerNorm with its buffers at `d = 0` unchanged (14.2 -> 13.9 µs).
/// An earlier attempt chose the walk inside one entry point (a flag, or both
/// walks inlined side by side) and slowed that LayerNorm case to 14.9-15.2
/// from 13.7-14.3 µs in three sittings.
pub(crate) fn walk_backward(input: &[f32], output: &[f32]) -> bool {
    let d = (output.as_ptr() as usize).wrapping_sub(input.as_ptr() as usize) % 4096;
    d > 0 && d < 2048
}

/// Pages of 4 KiB per block of [`prefetch_ahead`]'s schedule.
const PREFETCH_PAGES: usize = 8;
/// Chunks of `LANES` values (64-byte lines) per 4 KiB page.
pub(crate) const PAGE_CHUNKS: usize = 4096 / (crate::simd::LANES * 4);
/// Chunks per block of [`prefetch_ahead`]'s schedule (32 KiB).
const PREFETCH_BLOCK_CHUNKS: usize = PREFETCH_PAGES * PAGE_CHUNKS;

/// The chunk to prefetch while a forward pass handles chunk `j` of a
/// buffer: one in the next block of [`PREFETCH_PAGES`] pages, visited in
/// page-interleaved order (the first line of each page, then the second
/// line of each, ...), so that by the end of a block the whole next block has
/// been asked for.
///
/// Why pages interleaved: memory serves several sequential streams at once
/// faster than one. A copy loop with non-temporal stores, one thread, 128 MiB
/// (the host of 2026-12-07, an Intel Xeon with AVX-512; medians of five in
/// an out-of-tree harness): loads in order 21.0 GB/s; with this prefetch
/// 31.4; loads themselves interleaved over 8 pages 30.4; a prefetch 16 KiB
/// ahead in order 26.9. Interleaving the stores instead gained nothing
/// (22.6), so it is the reads that want several streams. Not on every
/// memory system, though: on the AMD Zen 4 host (same harness) this
/// prefetch slowed the copy from 42.2 to 29.9 GB/s, and interleaved loads
/// to 22.5, which is why the bench's ceiling times both orders.
#[inline(always)]
pub(crate) fn prefetch_ahead(j: usize) -> usize {
    let within = j % PREFETCH_BLOCK_CHUNKS;
    j - within
        + PREFETCH_BLOCK_CHUNKS
        + (within % PREFETCH_PAGES) * PAGE_CHUNKS
        + within / PREFETCH_PAGES
}

/// Chunk `j` of a walk over a buffer of `pages` pages in page-interleaved
/// order (line 0 of every page, then line 1, ...): the order a prefetch of a
/// whole row follows, for the reason given at [`prefetch_ahead`]. Indices
/// past the buffer's end (a short last page) fall outside it and are skipped
/// by the caller.
#[inline(always)]
pub(crate) fn page_interleaved(j: usize, pages: usize) -> usize {
    (j % pages) * PAGE_CHUNKS + j / pages
}

/// The row op a [`RowJob`] runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RowOp {
    LayerNorm,
    RmsNorm,
}

/// One ISA's entry points.
pub(crate) struct Kernels {
    pub layer_norm: fn(RowJob<'_>),
    pub rms_norm: fn(RowJob<'_>),
    /// `layer_norm` writing each cache-resident row last chunk first; for
    /// unstreamed jobs only (it ignores `stream`).
    pub layer_norm_descending: fn(RowJob<'_>),
    /// `rms_norm` writing each cache-resident row last chunk first; for
    /// unstreamed jobs only (it ignores `stream`).
    pub rms_norm_descending: fn(RowJob<'_>),
    pub row_moments: fn(&[f32]) -> Moments,
    pub stream_copy: fn(&[f32], &mut [f32]),
    pub stream_copy_interleaved: fn(&[f32], &mut [f32]),
    pub bn_plane_moments: fn(channels::PlaneStatsJob<'_>),
    pub bn_chunk_moments: fn(channels::ChunkJob<'_>),
    pub bn_apply_planes: fn(channels::PlaneJob<'_>),
    pub bn_apply_channel_planes: fn(channels::ChannelPlanesJob<'_, '_>),
    pub bn_apply_pattern: fn(channels::PatternJob<'_>),
}

impl Kernels {
    /// The entry point for `op`; `descending` writes each cache-resident
    /// row last chunk first (see [`walk_backward`]). Two entry points
    /// rather than one with a flag: the flag, or both walks inlined into one
    /// function, slowed the forward walk (LayerNorm `[128, 768]`, see
    /// `walk_backward`).
    pub(crate) fn row_op(&self, op: RowOp, descending: bool) -> fn(RowJob<'_>) {
        match (op, descending) {
            (RowOp::LayerNorm, false) => self.layer_norm,
            (RowOp::LayerNorm, true) => self.layer_norm_descending,
            (RowOp::RmsNorm, false) => self.rms_norm,
            (RowOp::RmsNorm, true) => self.rms_norm_descending,
        }
    }
}
