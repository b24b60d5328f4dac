//! Shared machinery for simdnorm's fuzz targets.
//!
//! Every target turns libFuzzer's bytes into a call of the public API and
//! checks it three ways: against `Isa::Portable` bit for bit (every available
//! ISA, every thread count, every call form), against the f64 oracle in
//! `simdnorm::reference` within the crate's documented bound, and against the
//! rules of the numeric contract (non-finite rows, constant rows, untouched
//! memory, typed errors for bad arguments). A failed check panics with the
//! case in the message, which libFuzzer reports as a crash.
//!
//! - [`Src`] reads the bytes; once they run out it yields zeros, so every
//!   input decodes to some case and the fuzzer can grow inputs freely.
//! - [`values`] biases numbers toward the hard ones (0, -0, ±inf, NaN,
//!   subnormals, ±f32::MAX, 1e±30, big offsets with tiny spreads, constant
//!   rows) and a small PRNG fills long rows from a seed the input chooses.
//! - [`oracle`] holds the bounds and the comparison helpers.
//! - [`rows`] is the whole differential harness for the row operators
//!   (LayerNorm and RMSNorm); targets for other operators use the pieces.

pub mod batch_norm;
pub mod oracle;
pub mod rows;
pub mod values;

use std::sync::OnceLock;

/// A reader over the fuzzer's bytes. Reads past the end give zeros.
pub struct Src<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Src<'a> {
    /// Reads `data` from the start.
    pub fn new(data: &'a [u8]) -> Self {
        Src { data, pos: 0 }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// The next byte, or 0 past the end.
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    /// Two bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Four bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    /// Eight bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | (u64::from(self.u32()) << 32)
    }

    /// A value in `0..n` (0 when `n == 0`); reads as few bytes as `n` needs.
    pub fn below(&mut self, n: usize) -> usize {
        match n {
            0 | 1 => 0,
            2..=256 => self.u8() as usize % n,
            257..=65536 => self.u16() as usize % n,
            _ => self.u32() as usize % n,
        }
    }

    /// True with probability about `num / 256`.
    pub fn chance(&mut self, num: u8) -> bool {
        self.u8() < num
    }

    /// One element of `table` (which must not be empty).
    pub fn pick<T: Copy>(&mut self, table: &[T]) -> T {
        table[self.below(table.len())]
    }
}

/// xorshift64*: a tiny deterministic PRNG for filling long rows from a seed
/// that the input chooses (so a short input can describe a long row).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Roughly standard normal (Irwin–Hall with 4 terms, rescaled): cheap,
    /// bounded by ±3.5, good enough to make rows that look like activations.
    pub fn normal(&mut self) -> f64 {
        let s: f64 = (0..4).map(|_| self.unit()).sum();
        (s - 2.0) * 3f64.sqrt()
    }

    /// A value in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next_u64() % n as u64) as usize
        }
    }
}

/// The bits of an `f32` slice, for exact comparisons that tell NaN payloads
/// and the sign of zero apart.
pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Whether `SIMDNORM_FUZZ_DEBUG` is set: print each decoded case (to see
/// what a seed or a crash input means).
pub fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("SIMDNORM_FUZZ_DEBUG").is_some())
}
