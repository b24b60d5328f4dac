//! A copy with non-temporal stores: the memory-bandwidth ceiling the bench
//! tool compares every kernel against (next to `copy_from_slice`, whose
//! choice of stores belongs to the C library).

use crate::simd::{LANES, Simd, store_partial};

/// Lines ahead of the one being copied that [`stream_copy`] prefetches (2
/// KiB). On the AMD Zen 4 host of 2026-12-07 (one thread, 128 MiB, medians
/// of seven in an out-of-tree harness) loads in order ran at 42.2 GB/s,
/// with a prefetch 1 or 2 KiB ahead at 45-46, 4 and 8 KiB ahead at 45.
const SEQUENTIAL_AHEAD_CHUNKS: usize = 2048 / (LANES * 4);

/// Copies `src` into `dst` (same length, checked by the caller), streaming
/// the 64-byte-aligned body of `dst` past the caches while the source is
/// prefetched [`SEQUENTIAL_AHEAD_CHUNKS`] lines ahead, in address order.
#[inline(always)]
pub(crate) fn stream_copy<S: Simd>(s: S, src: &[f32], dst: &mut [f32]) {
    stream_copy_reading(s, src, dst, |j| j + SEQUENTIAL_AHEAD_CHUNKS);
}

/// [`stream_copy`] with the source prefetched a block ahead in page-
/// interleaved order (see [`prefetch_ahead`](super::prefetch_ahead)). Which
/// of the two is faster depends on the memory system. Against loads in order
/// with no prefetch, this order won on the Intel Xeon host (21.0 -> 31.4
/// GB/s) and lost on the Zen 4 host (42.2 -> 29.9 GB/s; same harness, same
/// sizes). The 2 KiB sequential prefetch was measured on Zen 4 only.
#[inline(always)]
pub(crate) fn stream_copy_interleaved<S: Simd>(s: S, src: &[f32], dst: &mut [f32]) {
    stream_copy_reading(s, src, dst, super::prefetch_ahead);
}

/// The copy loop, prefetching chunk `ahead(j)` of the source while it copies
/// chunk `j`.
#[inline(always)]
fn stream_copy_reading<S: Simd>(
    s: S,
    src: &[f32],
    dst: &mut [f32],
    ahead: impl Fn(usize) -> usize,
) {
    let n = dst.len().min(src.len());
    let head = ((64 - dst.as_ptr() as usize % 64) % 64 / 4).min(n);
    dst[..head].copy_from_slice(&src[..head]);
    let body_len = (n - head) / LANES * LANES;
    let (body, _) = dst[head..head + body_len].as_chunks_mut::<LANES>();
    let (from, _) = src[head..head + body_len].as_chunks::<LANES>();
    for (j, (out, x)) in body.iter_mut().zip(from).enumerate() {
        // Where `prefetch` is a no-op, skip the index and its bounds check.
        if S::PREFETCHES
            && let Some(next) = from.get(ahead(j))
        {
            s.prefetch(&next[0]);
        }
        s.store_stream(out, s.load(x));
    }
    s.stream_fence();
    let done = head + body_len;
    store_partial(
        s,
        &mut dst[done..n],
        crate::simd::load_padded(s, &src[done..n], 0.0),
    );
}
