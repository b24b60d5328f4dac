//! The AVX2 token: two `ymm` registers per logical vector (lanes 0..8 and
//! 8..16). Detection also requires FMA, the pair every x86 CPU since 2013 has;
//! the kernels do not fuse (see the FMA policy in `simd`).

use super::{LANES, Simd};
use core::arch::x86_64::*;

/// Proof that the CPU supports AVX2 and FMA.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2Fma {
    _private: (),
}

impl Avx2Fma {
    /// The token, if this CPU has AVX2 and FMA.
    pub(crate) fn detect() -> Option<Self> {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: both features were just detected on this CPU.
            Some(unsafe { Self::new_unchecked() })
        } else {
            None
        }
    }

    /// # Safety
    /// The CPU running the program must support AVX2 and FMA.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Avx2Fma { _private: () }
    }
}

/// Two halves: lanes 0..8 and 8..16.
#[derive(Clone, Copy)]
pub(crate) struct V2(__m256, __m256);

macro_rules! lanewise {
    ($name:ident, $intrinsic:ident) => {
        #[inline(always)]
        fn $name(self, a: V2, b: V2) -> V2 {
            // SAFETY: see the impl comment.
            unsafe { V2($intrinsic(a.0, b.0), $intrinsic(a.1, b.1)) }
        }
    };
}

// SAFETY (for every `unsafe` block below): holding an `Avx2Fma` token proves
// the CPU supports AVX2 and FMA (see `detect`/`new_unchecked`); pointers come
// from references to exactly `LANES` f32 values, so offsets 0 and 8 each start
// 32 valid bytes; streaming stores are issued only after checking that the
// first half is 64-byte aligned (so both halves are 32-byte aligned).
impl Simd for Avx2Fma {
    type V = V2;
    // 16 ymm registers, two per vector.
    const REGISTER_VECTORS: usize = 8;
    const PREFETCHES: bool = true;

    #[inline(always)]
    fn splat(self, value: f32) -> V2 {
        // SAFETY: see the impl comment.
        unsafe { V2(_mm256_set1_ps(value), _mm256_set1_ps(value)) }
    }
    #[inline(always)]
    fn load(self, src: &[f32; LANES]) -> V2 {
        let p = src.as_ptr();
        // SAFETY: see the impl comment.
        unsafe { V2(_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8))) }
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32; LANES], v: V2) {
        let p = dst.as_mut_ptr();
        // SAFETY: see the impl comment.
        unsafe {
            _mm256_storeu_ps(p, v.0);
            _mm256_storeu_ps(p.add(8), v.1);
        }
    }
    #[inline(always)]
    fn store_stream(self, dst: &mut [f32; LANES], v: V2) {
        if (dst.as_ptr() as usize).is_multiple_of(64) {
            let p = dst.as_mut_ptr();
            // SAFETY: see the impl comment; alignment checked just above.
            unsafe {
                _mm256_stream_ps(p, v.0);
                _mm256_stream_ps(p.add(8), v.1);
            }
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
    lanewise!(add, _mm256_add_ps);
    #[inline(always)]
    fn add_fused(self, a: V2, b: V2, one: V2) -> V2 {
        // SAFETY: see the impl comment.
        unsafe {
            V2(
                _mm256_fmadd_ps(a.0, one.0, b.0),
                _mm256_fmadd_ps(a.1, one.1, b.1),
            )
        }
    }
    lanewise!(sub, _mm256_sub_ps);
    lanewise!(mul, _mm256_mul_ps);
    #[inline(always)]
    fn to_array(self, v: V2) -> [f32; LANES] {
        let mut out = [0.0; LANES];
        self.store(&mut out, v);
        out
    }
}
