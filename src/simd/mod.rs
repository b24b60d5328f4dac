//! The SIMD layer: the only code in the crate that touches `core::arch`.
//!
//! Every kernel is written once, generic over [`Simd`], a dozen lane-wise
//! operations on a vector of [`LANES`] `f32` values. The logical width is the
//! same on every instruction set: one `zmm` register on AVX-512, two `ymm` on
//! AVX2, four `q` registers on NEON, two `wide::f32x8` in the portable
//! fallback. A fixed width, a fixed accumulator count in the kernels and a
//! fixed reduction tree (done in scalar, see [`hsum`]) are what make every ISA
//! produce the same bits.
//!
//! Each ISA is a zero-sized *token*. A token can only be made by runtime
//! detection ([`crate::Isa`]) or by an `unsafe` constructor whose caller
//! promises the CPU has the features, so holding one is the proof that its
//! intrinsics may run. The tokens' methods are `#[inline(always)]` so that they
//! melt into the `#[target_feature]` entry points stamped out in
//! `kernels::table`.
//!
//! FMA policy: none. Every `a*b + c` in the crate is a rounded multiply and a
//! rounded add. A fused multiply-add would have to be fused on every ISA to keep
//! results identical, and the portable path (SSE2 baseline, wasm simd128) has
//! no fused instruction: emulating one costs 10x there, while the unfused form
//! costs one extra rounding (< 1 ulp of the output) on memory-bound loops.
//! The one fused instruction in use is [`Simd::add_fused`], `a * 1 + b`,
//! which is an add with the same bits, only issued on other pipes.

pub(crate) mod portable;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;
#[cfg(target_arch = "aarch64")]
pub(crate) mod neon;

/// Logical vector width in `f32` lanes, the same on every ISA.
pub(crate) const LANES: usize = 16;

/// A vector instruction set, as a proof-carrying zero-sized token.
///
/// All operations are lane-wise IEEE-754 single precision with
/// round-to-nearest-even and no flush-to-zero, so they give the same bits on
/// every implementation.
pub(crate) trait Simd: Copy + Send + Sync + 'static {
    /// `LANES` lanes of `f32`.
    type V: Copy;

    /// How many `V` values the vector register file holds (architectural
    /// registers over registers per `V`). Kernels that keep many vectors
    /// live choose their shape by it: what runs from registers on AVX-512
    /// spills on AVX2.
    const REGISTER_VECTORS: usize;

    /// Whether [`Simd::prefetch`] does anything. Loops that count on the
    /// next row arriving while this one is written (the streamed row ops)
    /// pick another schedule where it does not.
    const PREFETCHES: bool;

    fn splat(self, value: f32) -> Self::V;
    fn load(self, src: &[f32; LANES]) -> Self::V;
    fn store(self, dst: &mut [f32; LANES], v: Self::V);
    /// A store that bypasses the caches where the ISA has one and `dst` is
    /// 64-byte aligned; a plain store otherwise. Pair with [`Simd::stream_fence`].
    fn store_stream(self, dst: &mut [f32; LANES], v: Self::V);
    /// Orders streaming stores before anything the caller does next.
    fn stream_fence(self);
    /// A hint to bring the cache line holding `src` into L2 (not L1: a row,
    /// its weight and its bias already fill Zen 4's 32 KiB L1 at 4096
    /// columns, and an L1 prefetch of the next row measured 10% slower than
    /// none, an L2 prefetch 25% faster). May do nothing.
    fn prefetch(self, src: &f32);

    fn add(self, a: Self::V, b: Self::V) -> Self::V;
    /// `a + b` with the same bits as [`Simd::add`], issued as the fused
    /// multiply-add `a * one + b` where the ISA has one (`a * 1` is exact, so
    /// the single rounding is that of the sum; NaN payloads aside, every
    /// result is the same). Zen 4 runs vector adds on two of its four FP
    /// pipes and multiplies and FMAs on the other two, so a loop heavy in
    /// adds can move some of them to the idle pipes. `one` must be 1.0 in
    /// every lane and should come through [`core::hint::black_box`]: given the
    /// constant, the compiler turns the FMA back into an add.
    #[inline(always)]
    fn add_fused(self, a: Self::V, b: Self::V, one: Self::V) -> Self::V {
        let _ = one;
        self.add(a, b)
    }
    fn sub(self, a: Self::V, b: Self::V) -> Self::V;
    fn mul(self, a: Self::V, b: Self::V) -> Self::V;

    fn to_array(self, v: Self::V) -> [f32; LANES];
}

/// Horizontal sum in one fixed tree: lane `i` with lane `i + 8`, then `+ 4`,
/// `+ 2`, `+ 1`. Done in scalar on the array so that no ISA's shuffle order can
/// change the bits.
#[inline(always)]
pub(crate) fn hsum(mut a: [f32; LANES]) -> f32 {
    let mut width = LANES / 2;
    while width > 0 {
        for i in 0..width {
            a[i] += a[i + width];
        }
        width /= 2;
    }
    a[0]
}

/// Loads up to `LANES` values, filling the missing lanes with `fill`.
#[inline(always)]
pub(crate) fn load_padded<S: Simd>(s: S, src: &[f32], fill: f32) -> S::V {
    match <&[f32; LANES]>::try_from(src) {
        Ok(full) => s.load(full),
        Err(_) => {
            let mut buf = [fill; LANES];
            let n = src.len().min(LANES);
            buf[..n].copy_from_slice(&src[..n]);
            s.load(&buf)
        }
    }
}

/// Stores the first `dst.len()` (at most `LANES`) lanes of `v`.
#[inline(always)]
pub(crate) fn store_partial<S: Simd>(s: S, dst: &mut [f32], v: S::V) {
    match <&mut [f32; LANES]>::try_from(&mut *dst) {
        Ok(full) => s.store(full, v),
        Err(_) => {
            let n = dst.len().min(LANES);
            dst[..n].copy_from_slice(&s.to_array(v)[..n]);
        }
    }
}

/// `[1.0; LANES]` followed by `[0.0; LANES]`: `&ONES_THEN_ZEROS[LANES - n..]`
/// starts with exactly `n` ones, a lane mask for a tail of `n` values.
pub(crate) static ONES_THEN_ZEROS: [f32; 2 * LANES] = {
    let mut m = [0.0f32; 2 * LANES];
    let mut i = 0;
    while i < LANES {
        m[i] = 1.0;
        i += 1;
    }
    m
};

/// A vector whose first `n` lanes are 1.0 and the rest 0.0.
#[inline(always)]
pub(crate) fn lane_mask<S: Simd>(s: S, n: usize) -> S::V {
    let n = n.min(LANES);
    let window: &[f32; LANES] = ONES_THEN_ZEROS[LANES - n..2 * LANES - n]
        .try_into()
        .expect("window is LANES long");
    s.load(window)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums that round, tie, overflow, cancel to signed zeros, or involve
    /// subnormals and infinities.
    fn edge_pairs() -> Vec<(f32, f32)> {
        let specials = [
            0.0,
            -0.0,
            1.0,
            -1.0,
            f32::EPSILON / 2.0,
            1.0 + f32::EPSILON,
            f32::MIN_POSITIVE,
            f32::MIN_POSITIVE / 3.0,
            -f32::from_bits(1),
            f32::MAX,
            -f32::MAX,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e4 + 0.5,
            -3.0e-8,
            16_777_216.0,
        ];
        let mut pairs = Vec::new();
        for &a in &specials {
            for &b in &specials {
                pairs.push((a, b));
            }
        }
        pairs
    }

    fn check_add_fused<S: Simd>(s: S, name: &str) {
        let one = s.splat(core::hint::black_box(1.0));
        for block in edge_pairs().chunks(LANES) {
            let mut a = [0.0f32; LANES];
            let mut b = [0.0f32; LANES];
            for (i, &(x, y)) in block.iter().enumerate() {
                a[i] = x;
                b[i] = y;
            }
            let (va, vb) = (s.load(&a), s.load(&b));
            let plain = s.to_array(s.add(va, vb));
            let fused = s.to_array(s.add_fused(va, vb, one));
            for i in 0..LANES {
                let same = plain[i].to_bits() == fused[i].to_bits()
                    || (plain[i].is_nan() && fused[i].is_nan());
                assert!(
                    same,
                    "{name}: {} + {}: add {} fused {}",
                    a[i], b[i], plain[i], fused[i]
                );
            }
        }
    }

    #[test]
    fn add_fused_is_add_on_every_isa() {
        check_add_fused(portable::Portable, "portable");
        #[cfg(target_arch = "x86_64")]
        {
            if let Some(s) = avx2::Avx2Fma::detect() {
                check_add_fused(s, "avx2");
            }
            if let Some(s) = avx512::Avx512::detect() {
                check_add_fused(s, "avx512");
            }
        }
        #[cfg(target_arch = "aarch64")]
        if let Some(s) = neon::Neon::detect() {
            check_add_fused(s, "neon");
        }
    }
}
