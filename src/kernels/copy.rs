//! A copy with non-temporal stores: the memory-bandwidth ceiling the bench
//! tool compares every kernel against (next to `copy_from_slice`, whose
//! choice of stores belongs to the C library).

use crate::simd::{LANES, Simd, store_partial};

/// Copies `src` into `dst` (same length, checked by the caller), streaming
/// the 64-byte-aligned body of `dst` past the caches while the source is
/// prefetched a block ahead (see [`prefetch_ahead`](super::prefetch_ahead)).
#[inline(always)]
pub(crate) fn stream_copy<S: Simd>(s: S, src: &[f32], dst: &mut [f32]) {
    let n = dst.len().min(src.len());
    let head = ((64 - dst.as_ptr() as usize % 64) % 64 / 4).min(n);
    dst[..head].copy_from_slice(&src[..head]);
    let body_len = (n - head) / LANES * LANES;
    let (body, _) = dst[head..head + body_len].as_chunks_mut::<LANES>();
    let (from, _) = src[head..head + body_len].as_chunks::<LANES>();
    for (j, (out, x)) in body.iter_mut().zip(from).enumerate() {
        if let Some(ahead) = from.get(super::prefetch_ahead(j)) {
            s.prefetch(&ahead[0]);
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
