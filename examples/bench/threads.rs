//! Thread pools with pinned workers, and the copy that sets the ceiling.
//!
//! Each thread count gets its own rayon pool whose worker `i` is pinned to
//! core `i` (through `core_affinity`; where the OS will not pin, the workers
//! just float and [`pin_failures`] counts it). The kernel and the copy run in
//! the same pool, so both see the same cores.

use rayon::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};
use simdnorm::ReadAhead;
use std::sync::atomic::{AtomicUsize, Ordering};

static PIN_FAILURES: AtomicUsize = AtomicUsize::new(0);

/// How many workers could not be pinned so far (0 where pinning works).
pub fn pin_failures() -> usize {
    PIN_FAILURES.load(Ordering::Relaxed)
}

/// Whether the OS reports cores to pin to at all.
pub fn can_pin() -> bool {
    core_affinity::get_core_ids().is_some_and(|ids| !ids.is_empty())
}

/// A pool of `threads` workers, worker `i` pinned to core `i` when this
/// machine has a core `i`.
pub fn pinned_pool(threads: usize) -> Result<ThreadPool, String> {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("bench-{i}"))
        .start_handler(move |i| {
            let pinned = cores
                .get(i)
                .is_some_and(|&core| core_affinity::set_for_current(core));
            if !pinned {
                PIN_FAILURES.fetch_add(1, Ordering::Relaxed);
            }
        })
        .build()
        .map_err(|e| format!("cannot start a pool of {threads} threads: {e}"))
}

/// The ways of copying the ceiling is measured with; it is the fastest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyKind {
    /// `<[f32]>::copy_from_slice`: the C library's `memcpy`, which picks its
    /// own stores (non-temporal above some size on glibc).
    Memcpy,
    /// `simdnorm::stream_copy`: vector loads in order, non-temporal stores.
    Stream,
    /// The same with the source read ahead pages interleaved
    /// (`ReadAhead::PageInterleaved`), which some memory systems serve
    /// faster and others slower.
    StreamPages,
}

impl CopyKind {
    /// Every kind, in the order they are timed.
    pub const ALL: [CopyKind; 3] = [CopyKind::Memcpy, CopyKind::Stream, CopyKind::StreamPages];

    /// Short name for the report.
    pub fn name(self) -> &'static str {
        match self {
            CopyKind::Memcpy => "memcpy",
            CopyKind::Stream => "stream",
            CopyKind::StreamPages => "pages",
        }
    }
}

/// Copies `src` into `dst` (same length) in as many equal contiguous parts
/// as the current pool has threads, the parts run in parallel. Part
/// boundaries fall on 16 values (64 bytes) so every part starts aligned.
pub fn split_copy(src: &[f32], dst: &mut [f32], kind: CopyKind) -> Result<(), simdnorm::Error> {
    let parts = rayon::current_num_threads().max(1);
    let copy = |s: &[f32], d: &mut [f32]| match kind {
        CopyKind::Memcpy => {
            d.copy_from_slice(s);
            Ok(())
        }
        CopyKind::Stream => simdnorm::stream_copy(s, d),
        CopyKind::StreamPages => simdnorm::stream_copy_with(s, d, ReadAhead::PageInterleaved),
    };
    if parts == 1 {
        return copy(src, dst);
    }
    let part = src.len().div_ceil(parts).next_multiple_of(16).max(16);
    dst.par_chunks_mut(part)
        .zip(src.par_chunks(part))
        .try_for_each(|(d, s)| copy(s, d))
}
