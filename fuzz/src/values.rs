//! Numbers biased toward the ones that break normalization kernels.
//!
//! Uniformly random bit patterns are mostly huge or tiny and almost never
//! produce a constant row or a large mean with a small spread, so values come
//! from a mix: a table of hard values (and their neighbours one or two ulps
//! away), small exact numbers that repeat often, raw bit patterns, and whole
//! rows made by a rule (offset + tiny spread, constant, sparse, normal).

use crate::{Rng, Src};

/// Values that sit on an edge of f32 or of the kernels' branches.
pub const HARD: [f32; 44] = [
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    2.0,
    -3.0,
    1e-5,
    f32::EPSILON,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
    -f32::NAN,
    f32::from_bits(0x7f80_0001), // signalling NaN
    f32::from_bits(0xffc0_1234), // negative NaN with a payload
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    f32::from_bits(1), // smallest subnormal
    -f32::from_bits(1),
    f32::from_bits(0x007f_ffff), // largest subnormal
    f32::from_bits(0x0000_1234),
    f32::MAX,
    f32::MIN,
    1e30,
    -1e30,
    1e-30,
    -1e-30,
    1e38,
    1e-38,
    1e4,
    -1e4,
    1e6,
    16_777_216.0,    // 2^24: the last integer step of 1
    4_294_967_296.0, // 2^32: the kernels' unscaled range ends here
    4_294_967_040.0, // the f32 just below 2^32
    4_294_967_808.0, // the f32 just above 2^32
    2.328_306_4e-10, // 2^-32: the other end of the unscaled range
    2.328_306_2e-10, // just below 2^-32
    65504.0,
    1.844_674_4e19,  // 2^64: squares of it overflow f32
    1.084_202_2e-19, // 2^-63: squares of it underflow to subnormals
    3.0e-39,
    -7.0,
    0.1,
];

/// Offsets for rows of `offset + small spread` (the E[x²]−E[x]² killers).
pub const OFFSETS: [f32; 20] = [
    1e4,
    1e3,
    -1e3,
    1e6,
    -1e6,
    1e30,
    -1e30,
    3e38,
    -3e38,
    1e-30,
    1e-38,
    1e-40,
    4_294_967_296.0,
    2.328_306_4e-10,
    1.0,
    0.0,
    65504.0,
    1e20,
    16_777_216.0,
    -123.456,
];

/// One value: a hard one, a neighbour of one, a small exact number or a raw
/// bit pattern.
pub fn scalar(src: &mut Src) -> f32 {
    let tag = src.u8();
    match tag {
        0..=95 => src.pick(&HARD),
        96..=159 => {
            // Small exact values (k/4 for k in -128..128) repeat often, which
            // makes ties, constant stretches and exact means.
            (src.u8() as i8) as f32 * 0.25
        }
        160..=223 => f32::from_bits(src.u32()),
        _ => {
            let mut v = src.pick(&HARD);
            for _ in 0..(tag % 3) {
                v = if tag & 4 == 0 {
                    v.next_up()
                } else {
                    v.next_down()
                };
            }
            v
        }
    }
}

/// A finite scalar of moderate size (weights, biases): mostly in [-4, 4],
/// sometimes a hard value (which may be non-finite when `hard` allows).
pub fn param(src: &mut Src, hard: bool) -> f32 {
    let tag = src.u8();
    if hard && tag >= 224 {
        scalar(src)
    } else if tag >= 128 {
        (src.u8() as i8) as f32 / 32.0
    } else {
        1.0 + (src.u8() as i8) as f32 / 512.0
    }
}

/// `eps`: usually a valid one from a table, sometimes raw bits (which may
/// be negative, NaN or infinite: then every call must return `Error::Eps`).
pub fn eps(src: &mut Src) -> f32 {
    const TABLE: [f32; 14] = [
        1e-5,
        1e-6,
        0.0,
        -0.0,
        f32::EPSILON,
        1e-12,
        1.0,
        1e5,
        f32::MIN_POSITIVE,
        f32::from_bits(1),
        1e30,
        f32::MAX,
        1e-30,
        1e-3,
    ];
    let tag = src.u8();
    if tag < 224 {
        src.pick(&TABLE)
    } else if tag < 240 {
        scalar(src)
    } else {
        f32::from_bits(src.u32())
    }
}

/// A per-feature parameter vector of length `n`, or `None`.
pub fn params(src: &mut Src, n: usize) -> Option<Vec<f32>> {
    let mode = src.u8() % 8;
    let hard = src.chance(32);
    match mode {
        0..=2 => None,
        3 => Some(vec![1.0; n]),
        4 => {
            let v = param(src, hard);
            Some(vec![v; n])
        }
        5 => {
            let mut rng = Rng::new(src.u64());
            Some((0..n).map(|_| rng.normal() as f32).collect())
        }
        _ => Some((0..n).map(|_| param(src, hard)).collect()),
    }
}

/// Fills `row` by one of several rules chosen from the input; may inject a
/// NaN or an infinity at one place.
pub fn fill_row(src: &mut Src, row: &mut [f32]) {
    let n = row.len();
    match src.u8() % 8 {
        // Every value straight from the input: the fuzzer controls each one.
        0 | 1 => row.iter_mut().for_each(|v| *v = scalar(src)),
        // offset + spread * u, spread a power of two below |offset|.
        2 | 3 => {
            let offset = src.pick(&OFFSETS) as f64;
            let down = (src.u8() % 48) as i32;
            let spread = if offset == 0.0 {
                2f64.powi(20 - down)
            } else {
                offset.abs() * 2f64.powi(-down)
            };
            let mut rng = Rng::new(src.u64());
            row.iter_mut()
                .for_each(|v| *v = (offset + spread * (2.0 * rng.unit() - 1.0)) as f32);
        }
        // Constant, with up to three values changed.
        4 => {
            let c = scalar(src);
            row.fill(c);
            for _ in 0..src.u8() % 4 {
                let at = src.below(n);
                let v = if src.chance(128) {
                    c.next_up()
                } else {
                    scalar(src)
                };
                if let Some(slot) = row.get_mut(at) {
                    *slot = v;
                }
            }
        }
        // Normal around an offset with a scale picked from the input.
        5 => {
            let mean = src.pick(&OFFSETS) as f64;
            let std = 2f64.powi((src.u8() % 80) as i32 - 40);
            let mut rng = Rng::new(src.u64());
            row.iter_mut()
                .for_each(|v| *v = (mean + std * rng.normal()) as f32);
        }
        // Sparse: zeros of one sign with a few hard values.
        6 => {
            let zero = if src.chance(128) { 0.0 } else { -0.0 };
            row.fill(zero);
            for _ in 0..src.u8() % 5 {
                let at = src.below(n);
                let v = scalar(src);
                if let Some(slot) = row.get_mut(at) {
                    *slot = v;
                }
            }
        }
        // Raw bits from a seed: anything at all, NaN payloads included.
        _ => {
            let mut rng = Rng::new(src.u64());
            row.iter_mut()
                .for_each(|v| *v = f32::from_bits(rng.next_u64() as u32));
        }
    }
    if n > 0 && src.chance(40) {
        let at = src.below(n);
        row[at] = src.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
    }
}
