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

#[cfg(test)]
mod tests {
    use crate::Isa;

    type CopyFn = fn(&[f32], &mut [f32]);

    /// Both read-ahead orders on every available ISA, in-process (the public
    /// `stream_copy_with` runs only the selected ISA): every bit (NaN
    /// payloads, signed zero, subnormals) at lengths around the vector width
    /// and across the 32 KiB prefetch blocks, at unaligned starts, and
    /// nothing written past either end.
    #[test]
    fn both_orders_copy_every_bit_on_every_isa() {
        let specials = [
            f32::from_bits(0xffc0_0001),
            -0.0,
            f32::from_bits(1),
            f32::INFINITY,
        ];
        let src: Vec<f32> = (0..20_000)
            .map(|i| match i % 97 {
                k @ 0..4 => specials[k],
                _ => i as f32 * 0.25 - 300.0,
            })
            .collect();
        let lens = (0..40).chain([255, 256, 257, 8191, 8192 + 17, 20_000 - 15]);
        let sentinel = f32::from_bits(0x7fa5_a5a5);
        for isa in Isa::available() {
            let k = Isa::kernels(Some(isa)).expect("available");
            let copies: [(&str, CopyFn); 2] = [
                ("sequential", k.stream_copy),
                ("page-interleaved", k.stream_copy_interleaved),
            ];
            for (order, copy) in copies {
                for len in lens.clone() {
                    for off in [0, 1, 15] {
                        let len = len.min(src.len() - off);
                        let mut buf = vec![sentinel; len + off + 3];
                        copy(&src[off..off + len], &mut buf[off..off + len]);
                        let want = src[off..off + len].iter().map(|v| v.to_bits());
                        let got = buf[off..off + len].iter().map(|v| v.to_bits());
                        assert!(want.eq(got), "{isa} {order} len {len} offset {off}");
                        let mut outside = buf[..off].iter().chain(&buf[off + len..]);
                        assert!(
                            outside.all(|v| v.to_bits() == sentinel.to_bits()),
                            "{isa} {order} len {len} offset {off}: wrote outside"
                        );
                    }
                }
            }
        }
    }
}
