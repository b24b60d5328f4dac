//! The portable token: `wide::f32x16`, which compiles to whatever vector
//! instructions the build target has as its baseline (SSE2 on x86_64, NEON on
//! aarch64, simd128 on wasm) and to scalar code elsewhere. It serves every
//! architecture and is the path every other ISA is compared with bit for bit.

use super::{LANES, Simd};
use wide::f32x16;

/// Always available: needs nothing beyond the compile target's baseline.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Portable;

impl Simd for Portable {
    type V = f32x16;
    // `wide` on SSE2 (16 xmm registers, four per vector) or NEON; the smaller.
    const REGISTER_VECTORS: usize = 4;
    const PREFETCHES: bool = false;

    #[inline(always)]
    fn splat(self, value: f32) -> f32x16 {
        f32x16::splat(value)
    }
    #[inline(always)]
    fn load(self, src: &[f32; LANES]) -> f32x16 {
        f32x16::new(*src)
    }
    #[inline(always)]
    fn store(self, dst: &mut [f32; LANES], v: f32x16) {
        *dst = v.to_array();
    }
    #[inline(always)]
    fn store_stream(self, dst: &mut [f32; LANES], v: f32x16) {
        *dst = v.to_array();
    }
    #[inline(always)]
    fn stream_fence(self) {}
    #[inline(always)]
    fn prefetch(self, _src: &f32) {}
    #[inline(always)]
    fn add(self, a: f32x16, b: f32x16) -> f32x16 {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: f32x16, b: f32x16) -> f32x16 {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: f32x16, b: f32x16) -> f32x16 {
        a * b
    }
    #[inline(always)]
    fn to_array(self, v: f32x16) -> [f32; LANES] {
        v.to_array()
    }
}
