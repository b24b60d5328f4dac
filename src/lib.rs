//! SIMD CPU kernels for the normalization layers of neural networks.
//!
//! - [`LayerNorm`] and [`RmsNorm`] over the last axis of `[rows, cols]`,
//!   with optional weight and bias, row strides, in place, and saved
//!   statistics for a backward pass.
//! - [`BatchNorm`] over NCHW or NHWC (`[N, C, spatial…]` or
//!   `[N, spatial…, C]`, see [`BatchShape`]): inference, training with saved
//!   statistics and PyTorch, ONNX or cumulative running statistics
//!   ([`Momentum`]), and SyncBatchNorm partial statistics ([`ChannelMoments`]).
//! - [`Moments`]: count, mean and M2 with Welford's update and Chan's merge,
//!   and [`Moments::of`] for a vectorized, exactly centred row.
//! - Hand-vectorized for AVX-512, AVX2 and NEON, with a portable fallback,
//!   chosen at run time ([`Isa`]); every ISA and every thread count gives the
//!   same bits.
//!
//! ```
//! use simdnorm::{LayerNorm, Rows, RowsMut};
//! let (rows, cols) = (2, 768);
//! let x: Vec<f32> = (0..rows * cols).map(|i| (i % 7) as f32).collect();
//! let mut y = vec![0.0f32; rows * cols];
//! LayerNorm::new().forward(Rows::new(&x, rows, cols)?, RowsMut::new(&mut y, rows, cols)?)?;
//! # Ok::<(), simdnorm::Error>(())
//! ```
//!
//! The numeric contract (accuracy bound, reproducibility) and measured
//! performance are in the README.
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

// Public for its module docs (the math, layouts, merge rules and
// guarantees), which `BatchNorm` and `ChannelMoments` link to; its types are
// also re-exported below.
pub mod batch_norm;
mod error;
mod isa;
mod kernels;
mod layer_norm;
mod layout;
mod moments;
mod parallel;
pub mod reference;
mod rms_norm;
mod row_norm;
mod simd;

pub use batch_norm::{
    BatchNorm, BatchShape, ChannelMoments, Layout, Momentum, RunningStats, TrainStats,
};
pub use error::Error;
pub use isa::Isa;
pub use layer_norm::LayerNorm;
pub use layout::{Rows, RowsMut};
pub use moments::Moments;
pub use rms_norm::RmsNorm;

/// Copies `src` into `dst` with non-temporal (cache-bypassing) stores where
/// the ISA has them, reading the source in address order: one of the copies
/// the bench tool measures every kernel against (see [`ReadAhead`]). Uses
/// the selected ISA.
///
/// ```
/// let src = vec![1.5f32; 1000];
/// let mut dst = vec![0.0f32; 1000];
/// simdnorm::stream_copy(&src, &mut dst)?;
/// assert_eq!(src, dst);
/// # Ok::<(), simdnorm::Error>(())
/// ```
pub fn stream_copy(src: &[f32], dst: &mut [f32]) -> Result<(), Error> {
    stream_copy_with(src, dst, ReadAhead::Sequential)
}

/// How [`stream_copy_with`] asks for its source ahead of use. Which is
/// faster depends on the memory system, so a ceiling measured against this
/// copy takes the faster of both: on an AMD Zen 4 host `Sequential` copied
/// 128 MiB at ~45 GB/s on one thread and `PageInterleaved` at ~30; on an
/// Intel Xeon host `PageInterleaved` reached ~31 against ~21 for loads in
/// order without any prefetch (`Sequential` itself was not measured there).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReadAhead {
    /// Prefetch a couple of KiB ahead, in address order.
    Sequential,
    /// Prefetch the next 32 KiB block with its 4 KiB pages interleaved (line
    /// 0 of each page, then line 1, ...), so that memory serves several
    /// streams at once.
    PageInterleaved,
}

/// [`stream_copy`] with the source read ahead in the given order; the same
/// bits either way.
///
/// ```
/// use simdnorm::ReadAhead;
/// let src: Vec<f32> = (0..100_000).map(|i| i as f32).collect();
/// let mut dst = vec![0.0f32; src.len()];
/// simdnorm::stream_copy_with(&src, &mut dst, ReadAhead::PageInterleaved)?;
/// assert_eq!(src, dst);
/// # Ok::<(), simdnorm::Error>(())
/// ```
pub fn stream_copy_with(src: &[f32], dst: &mut [f32], read_ahead: ReadAhead) -> Result<(), Error> {
    if src.len() != dst.len() {
        return Err(Error::Length {
            what: "stream_copy destination",
            expected: src.len(),
            actual: dst.len(),
        });
    }
    let kernels = Isa::kernels(None)?;
    match read_ahead {
        ReadAhead::Sequential => (kernels.stream_copy)(src, dst),
        ReadAhead::PageInterleaved => (kernels.stream_copy_interleaved)(src, dst),
    }
    Ok(())
}

/// The README's code blocks, compiled and run as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
