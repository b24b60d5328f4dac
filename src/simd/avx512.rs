//! The AVX-512 token: one `zmm` register per logical vector.

use super::{LANES, Simd};
use core::arch::x86_64::*;

/// Proof that the CPU supports AVX-512F.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx512 {
    _private: (),
}

impl Avx512 {
    /// The token, if this CPU has AVX-512F.
    pub(crate) fn detect() -> Option<Self> {
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the feature was just detected on this CPU.
            Some(unsafe { Self::new_unchecked() })
        } else {
            None
        }
    }

    /// # Safety
    /// The CPU running the program must support AVX-512F.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx512 { _private: () }
    }
}

// SAFETY (for every `unsafe` block below): holding an `Avx512` token proves
// the CPU supports AVX-512F (see `detect`/`new_unchecked`); pointers come from
// references to exactly `LANES` f32 values, so 64 bytes are valid to read or
// write; the streaming store is only issued after checking 64-byte alignment.
impl Simd for Avx512 {
    type V = __m512;
    // 32 zmm registers, one per vector.
    const REGISTER_VECTORS: usize = 32;
    const PREFETCHES: bool = true;

    #[inline(always)]
    fn splat(self, value: f32) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_set1_ps(value) }
    }
    #[inline(always)]
    fn load(self, src: &[f32; LANES]) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_loadu_ps(src.as_ptr()) }
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32; LANES], v: __m512) {
        // SAFETY: see the impl comment.
        unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) }
    }
    #[inline(always)]
    fn store_stream(self, dst: &mut [f32; LANES], v: __m512) {
        if (dst.as_ptr() as usize).is_multiple_of(64) {
            // SAFETY: see the impl comment; alignment checked just above.
            unsafe { _mm512_stream_ps(dst.as_mut_ptr(), v) }
        } else {
            self.store(dst, v)
        }
    }
    #[inline(always)]
    fn stream_fence(self) {
        // SAFETY: SSE is part of the x86_64 baseline.
        unsafe { _mm_sfence() }
    }
    #[inline(always)]
    fn prefetch(self, src: &f32) {
        // SAFETY: SSE is baseline; a prefetch never faults and reads nothing.
        unsafe { _mm_prefetch::<_MM_HINT_T1>((src as *const f32).cast::<i8>()) }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_add_ps(a, b) }
    }
    #[inline(always)]
    fn add_fused(self, a: __m512, b: __m512, one: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_fmadd_ps(a, one, b) }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_sub_ps(a, b) }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        // SAFETY: see the impl comment.
        unsafe { _mm512_mul_ps(a, b) }
    }
    #[inline(always)]
    fn to_array(self, v: __m512) -> [f32; LANES] {
        let mut out = [0.0; LANES];
        self.store(&mut out, v);
        out
    }
}
