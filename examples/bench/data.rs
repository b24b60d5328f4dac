//! Test data: page-placed buffers and a seeded normal generator.
//!
//! Every buffer starts on a 4 KiB page, and an output may start a chosen
//! number of bytes past one ([`zeros_at`]). Where an output sits relative to
//! its input modulo 4 KiB changes how fast a kernel or a copy runs (4 KiB
//! aliasing between loads and pending stores, up to ~35% on cache-resident
//! shapes), and allocators place two large buffers however they like; fixed
//! placement makes runs, builds and tables comparable.
//!
//! The generator is SplitMix64 feeding Marsaglia's polar method, in f64,
//! rounded to f32 at the end. Buffers are filled in chunks of [`CHUNK`]
//! values, chunk `i` from its own stream derived from `(seed, i)`, so the data
//! is the same whatever rayon pool fills it, and a 512 MiB input fills on
//! every core instead of one.

use std::ops::{Deref, DerefMut};

use aligned_vec::{AVec, ConstAlign};
use rayon::prelude::*;

/// Page size the placement is relative to.
pub const PAGE: usize = 4096;

/// A buffer of `f32` starting on a page, or `offset` bytes past one.
#[derive(Clone)]
pub struct Buf {
    raw: AVec<f32, ConstAlign<PAGE>>,
    /// Elements skipped at the front of `raw`.
    skip: usize,
}

impl Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.raw[self.skip..]
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.raw[self.skip..]
    }
}

/// Values per independently seeded chunk of a filled buffer.
const CHUNK: usize = 1 << 16;

/// `len` zeros on a page, already written (so the pages are faulted in
/// before any timing starts).
pub fn zeros(len: usize) -> Buf {
    zeros_at(len, 0)
}

/// `len` zeros starting `offset` bytes past a page (`offset` a multiple of
/// 4 below [`PAGE`]).
pub fn zeros_at(len: usize, offset: usize) -> Buf {
    debug_assert!(offset.is_multiple_of(4) && offset < PAGE);
    let skip = offset / 4;
    let mut raw = AVec::with_capacity(PAGE, skip + len);
    raw.resize(skip + len, 0.0);
    Buf { raw, skip }
}

/// `len` values of `mean + sd * N(0, 1)`, the same for the same `seed`.
pub fn normal(len: usize, seed: u64, mean: f32, sd: f32) -> Buf {
    let mut buf = zeros(len);
    buf.par_chunks_mut(CHUNK)
        .enumerate()
        .for_each(|(i, chunk)| {
            let mut rng = Rng::new(seed, i as u64);
            for pair in chunk.chunks_mut(2) {
                let (a, b) = rng.normal_pair();
                pair[0] = (mean as f64 + sd as f64 * a) as f32;
                if let Some(v) = pair.get_mut(1) {
                    *v = (mean as f64 + sd as f64 * b) as f32;
                }
            }
        });
    buf
}

/// `len` arbitrary non-zero values, cheap to make: a copy's source, where
/// only the byte count matters.
pub fn filler(len: usize) -> Buf {
    let mut buf = zeros(len);
    buf.par_chunks_mut(CHUNK).for_each(|chunk| {
        for (i, v) in chunk.iter_mut().enumerate() {
            *v = 1.0 + (i % 251) as f32;
        }
    });
    buf
}

/// SplitMix64: a 64-bit counter through a strong mixing function. Small,
/// fast, and good enough for benchmark inputs (not for cryptography).
struct Rng(u64);

impl Rng {
    /// Stream `stream` of `seed`: the state starts at a mix of both, so
    /// neighbouring streams do not overlap in any run this tool makes.
    fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Rng(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let start = rng.next_u64();
        Rng(start)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-1, 1)`, 53 random bits.
    fn signed_unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (2.0 / (1u64 << 53) as f64) - 1.0
    }

    /// Two independent standard normal values: Marsaglia's polar method,
    /// Box–Muller without the sine and cosine (in a profile of the fill they
    /// cost several times the logarithm); about 21% of draws are rejected.
    fn normal_pair(&mut self) -> (f64, f64) {
        loop {
            let (u, v) = (self.signed_unit(), self.signed_unit());
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                let scale = (-2.0 * s.ln() / s).sqrt();
                return (u * scale, v * scale);
            }
        }
    }
}
