//! The NEON token (aarch64): four `q` registers per logical vector.
//! NEON is part of the aarch64 baseline, so detection always succeeds there;
//! the token still exists so that the table and the tests treat it like the
//! others. aarch64 keeps subnormals (FPCR.FZ is clear on Linux, macOS and
//! Windows), so results match the other ISAs bit for bit.

use super::{LANES, Simd};
use core::arch::aarch64::*;

/// Proof that the CPU supports NEON (always true on aarch64).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Neon {
    _private: (),
}

impl Neon {
    /// The token, if this CPU has NEON.
    pub(crate) fn detect() -> Option<Self> {
        if std::arch::is_aarch64_feature_detected!("neon") {
            // SAFETY: the feature was just detected on this CPU.
            Some(unsafe { Self::new_unchecked() })
        } else {
            None
        }
    }

    /// # Safety
    /// The CPU running the program must support NEON.
    #[inline(always)]
    pub(crate) unsafe fn new_unchecked() -> Self {
        Neon { _private: () }
    }
}

/// Four quarters: lanes 0..4, 4..8, 8..12, 12..16.
#[derive(Clone, Copy)]
pub(crate) struct V4([float32x4_t; 4]);

macro_rules! lanewise {
    ($name:ident, $intrinsic:ident) => {
        #[inline(always)]
        fn $name(self, a: V4, b: V4) -> V4 {
            // SAFETY: see the impl comment.
            unsafe {
                V4([
                    $intrinsic(a.0[0], b.0[0]),
                    $intrinsic(a.0[1], b.0[1]),
                    $intrinsic(a.0[2], b.0[2]),
                    $intrinsic(a.0[3], b.0[3]),
                ])
            }
        }
    };
}

// SAFETY (for every `unsafe` block below): holding a `Neon` token proves the
// CPU supports NEON; pointers come from references to exactly `LANES` f32
// values, so offsets 0, 4, 8 and 12 each start 16 valid bytes.
impl Simd for Neon {
    type V = V4;
    // 32 q registers, four per vector.
    const REGISTER_VECTORS: usize = 8;
    // `prfm` needs inline assembly on stable Rust; not done yet.
    const PREFETCHES: bool = false;

    #[inline(always)]
    fn splat(self, value: f32) -> V4 {
        // SAFETY: see the impl comment.
        unsafe { V4([vdupq_n_f32(value); 4]) }
    }
    #[inline(always)]
    fn load(self, src: &[f32; LANES]) -> V4 {
        let p = src.as_ptr();
        // SAFETY: see the impl comment.
        unsafe {
            V4([
                vld1q_f32(p),
                vld1q_f32(p.add(4)),
                vld1q_f32(p.add(8)),
                vld1q_f32(p.add(12)),
            ])
        }
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32; LANES], v: V4) {
        let p = dst.as_mut_ptr();
        // SAFETY: see the impl comment.
        unsafe {
            vst1q_f32(p, v.0[0]);
            vst1q_f32(p.add(4), v.0[1]);
            vst1q_f32(p.add(8), v.0[2]);
            vst1q_f32(p.add(12), v.0[3]);
        }
    }
    #[inline(always)]
    fn store_stream(self, dst: &mut [f32; LANES], v: V4) {
        // No non-temporal store intrinsic on stable; a plain store.
        self.store(dst, v)
    }
    #[inline(always)]
    fn stream_fence(self) {}
    #[inline(always)]
    fn prefetch(self, _src: &f32) {}
    lanewise!(add, vaddq_f32);
    lanewise!(sub, vsubq_f32);
    lanewise!(mul, vmulq_f32);
    #[inline(always)]
    fn to_array(self, v: V4) -> [f32; LANES] {
        let mut out = [0.0; LANES];
        self.store(&mut out, v);
        out
    }
}
