//! Shared helpers for the integration tests: a small deterministic PRNG with
//! Box-Muller normals, the input classes of the numeric contract, one handle
//! over LayerNorm and RMSNorm, and the checks every test repeats (bit-for-bit
//! equality, the accuracy bound against the f64 reference, saved statistics).
//!
//! Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use simdnorm::{Error, Isa, LayerNorm, RmsNorm, Rows, RowsMut, reference};

/// True when the suite runs under qemu (aarch64 on the x86_64 machine), where
/// everything is 10-30x slower: tests shrink their sizes, not their code paths.
pub const SLOW: bool = cfg!(target_arch = "aarch64");

/// The accuracy bound's relative constant (README): for every finite row,
/// `|y - y_ref| <= BOUND * (|w_j| * (1 + |z_j|) + |b_j|)`.
pub const BOUND: f64 = 2e-6;

// ---------------------------------------------------------------------------
// Random numbers

/// SplitMix64: tiny, fast, and good enough for test data.
#[derive(Clone, Debug)]
pub struct Prng {
    state: u64,
    spare: Option<f64>,
}

impl Prng {
    pub fn new(seed: u64) -> Self {
        Prng {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            spare: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `[lo, hi)`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// Uniform integer in `[0, n)`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n.max(1)
    }

    /// Standard normal by the Box-Muller transform (both values used).
    pub fn normal(&mut self) -> f64 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = 2.0 * std::f64::consts::PI * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }

    pub fn normals(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.normal() as f32).collect()
    }
}

// ---------------------------------------------------------------------------
// Input classes

/// The input classes the numeric contract names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// N(0, 1).
    Normal,
    /// 1e4 + N(0, 1): a large mean, the classic cancellation trap.
    Mean1e4,
    /// 1e3 + 1e-3 N(0, 1): tiny spread on a large mean.
    Mean1e3Tiny,
    /// 1e6 + 1e-3 N(0, 1): the spread is below f32's resolution at 1e6.
    Mean1e6Tiny,
    /// 1e30 N(0, 1): squares overflow f32.
    Huge,
    /// Magnitudes in `[MAX/2, MAX]` with random signs: even the sum overflows.
    NearMax,
    /// 1e-30 N(0, 1): squares underflow f32.
    Tiny,
    /// 1e-40 N(0, 1): subnormal values.
    Subnormal,
    /// Random signs with magnitudes spread over six decades.
    MixedSigns,
    /// One value repeated (a different one per row).
    Constant,
}

impl Class {
    pub const ALL: [Class; 10] = [
        Class::Normal,
        Class::Mean1e4,
        Class::Mean1e3Tiny,
        Class::Mean1e6Tiny,
        Class::Huge,
        Class::NearMax,
        Class::Tiny,
        Class::Subnormal,
        Class::MixedSigns,
        Class::Constant,
    ];

    /// `rows * cols` values of this class, each row drawn on its own.
    pub fn matrix(self, rng: &mut Prng, rows: usize, cols: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows * cols);
        for _ in 0..rows {
            out.extend(self.row(rng, cols));
        }
        out
    }

    /// One row of `cols` values.
    pub fn row(self, rng: &mut Prng, cols: usize) -> Vec<f32> {
        match self {
            Class::Constant => {
                let c = constant_values()[rng.below(constant_values().len())];
                vec![c; cols]
            }
            _ => (0..cols).map(|_| self.value(rng)).collect(),
        }
    }

    fn value(self, rng: &mut Prng) -> f32 {
        match self {
            Class::Normal => rng.normal() as f32,
            Class::Mean1e4 => (1e4 + rng.normal()) as f32,
            Class::Mean1e3Tiny => (1e3 + 1e-3 * rng.normal()) as f32,
            Class::Mean1e6Tiny => (1e6 + 1e-3 * rng.normal()) as f32,
            Class::Huge => (1e30 * rng.normal()) as f32,
            Class::NearMax => {
                let m = f32::MAX as f64 * rng.range(0.5, 1.0);
                let v = m as f32;
                if rng.uniform() < 0.5 { -v } else { v }
            }
            Class::Tiny => (1e-30 * rng.normal()) as f32,
            Class::Subnormal => (1e-40 * rng.normal()) as f32,
            Class::MixedSigns => {
                let m = 10f64.powf(rng.range(-3.0, 3.0));
                (if rng.uniform() < 0.5 { -m } else { m }) as f32
            }
            Class::Constant => unreachable!("drawn per row"),
        }
    }
}

/// Values a constant row is made of: signed zeros, ordinary numbers, and the
/// extremes (subnormal, smallest normal, largest finite).
pub fn constant_values() -> &'static [f32] {
    &[
        0.0,
        -0.0,
        1.0,
        -3.5,
        1e4,
        1e30,
        -1e-30,
        1e-40,
        f32::MIN_POSITIVE,
        f32::MAX,
        -f32::MAX,
    ]
}

// ---------------------------------------------------------------------------
// The operators behind one handle

/// LayerNorm or RMSNorm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Layer,
    Rms,
}

/// Options of one call.
#[derive(Clone, Copy, Debug)]
pub struct Params<'a> {
    pub isa: Isa,
    pub eps: f32,
    pub weight: Option<&'a [f32]>,
    /// LayerNorm only.
    pub bias: Option<&'a [f32]>,
    pub parallel: bool,
}

impl<'a> Params<'a> {
    pub fn new(isa: Isa, eps: f32) -> Self {
        Params {
            isa,
            eps,
            weight: None,
            bias: None,
            parallel: true,
        }
    }
    pub fn affine(mut self, weight: Option<&'a [f32]>, bias: Option<&'a [f32]>) -> Self {
        self.weight = weight;
        self.bias = bias;
        self
    }
    pub fn isa(mut self, isa: Isa) -> Self {
        self.isa = isa;
        self
    }
}

impl Op {
    pub const ALL: [Op; 2] = [Op::Layer, Op::Rms];

    fn layer<'a>(p: &Params<'a>) -> LayerNorm<'a> {
        let mut op = LayerNorm::new().eps(p.eps).isa(p.isa).parallel(p.parallel);
        if let Some(w) = p.weight {
            op = op.weight(w);
        }
        if let Some(b) = p.bias {
            op = op.bias(b);
        }
        op
    }

    fn rms<'a>(p: &Params<'a>) -> RmsNorm<'a> {
        assert!(p.bias.is_none(), "RMSNorm has no bias");
        let mut op = RmsNorm::new().eps(p.eps).isa(p.isa).parallel(p.parallel);
        if let Some(w) = p.weight {
            op = op.weight(w);
        }
        op
    }

    /// The weight/bias combinations this operator takes:
    /// `(has_weight, has_bias)`.
    pub fn affine_combos(self) -> &'static [(bool, bool)] {
        match self {
            Op::Layer => &[(false, false), (true, false), (false, true), (true, true)],
            Op::Rms => &[(false, false), (true, false)],
        }
    }

    pub fn forward(self, p: &Params<'_>, x: Rows<'_>, y: RowsMut<'_>) -> Result<(), Error> {
        match self {
            Op::Layer => Self::layer(p).forward(x, y),
            Op::Rms => Self::rms(p).forward(x, y),
        }
    }

    pub fn forward_in_place(self, p: &Params<'_>, y: RowsMut<'_>) -> Result<(), Error> {
        match self {
            Op::Layer => Self::layer(p).forward_in_place(y),
            Op::Rms => Self::rms(p).forward_in_place(y),
        }
    }

    /// `forward_train`; for RMSNorm `mean` is left untouched.
    pub fn forward_train(
        self,
        p: &Params<'_>,
        x: Rows<'_>,
        y: RowsMut<'_>,
        mean: &mut [f32],
        rstd: &mut [f32],
    ) -> Result<(), Error> {
        match self {
            Op::Layer => Self::layer(p).forward_train(x, y, mean, rstd),
            Op::Rms => Self::rms(p).forward_train(x, y, rstd),
        }
    }

    /// Contiguous `[x.len() / cols, cols]` forward into a fresh vector.
    pub fn run(self, p: &Params<'_>, x: &[f32], cols: usize) -> Vec<f32> {
        let rows = x.len() / cols;
        let mut y = vec![0.0f32; x.len()];
        self.forward(
            p,
            Rows::new(x, rows, cols).unwrap(),
            RowsMut::new(&mut y, rows, cols).unwrap(),
        )
        .unwrap_or_else(|e| panic!("{self:?} on {:?} failed: {e}", p.isa));
        y
    }

    /// The f64 reference with the given affine parameters.
    pub fn reference(
        self,
        x: &[f32],
        cols: usize,
        weight: Option<&[f32]>,
        bias: Option<&[f32]>,
        eps: f32,
    ) -> reference::Normalized {
        match self {
            Op::Layer => reference::layer_norm(x, cols, weight, bias, eps),
            Op::Rms => {
                assert!(bias.is_none());
                reference::rms_norm(x, cols, weight, eps)
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Checks

pub fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// Panics with the first differing index unless `a` and `b` have the same bits.
#[track_caller]
pub fn assert_same_bits(a: &[f32], b: &[f32], what: &dyn std::fmt::Display) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    if let Some(i) = (0..a.len()).find(|&i| a[i].to_bits() != b[i].to_bits()) {
        panic!(
            "{what}: differ at {i}: {:e} ({:#010x}) vs {:e} ({:#010x})",
            a[i],
            a[i].to_bits(),
            b[i],
            b[i].to_bits()
        );
    }
}

/// Checks `y` (contiguous, from `x`) against the f64 reference within the
/// README's bound. A row with NaN or ±inf must be all NaN. Where the
/// reference itself is NaN on a finite row (a constant row with `eps = 0`,
/// outside the contract) nothing is asserted. Returns the largest
/// `error / allowed` seen.
#[allow(clippy::too_many_arguments)]
pub fn check_bound(
    op: Op,
    x: &[f32],
    cols: usize,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
    y: &[f32],
    what: &dyn std::fmt::Display,
) -> Result<f64, String> {
    assert_eq!(x.len(), y.len());
    let z = op.reference(x, cols, None, None, eps).output;
    let y_ref = op.reference(x, cols, weight, bias, eps).output;
    let mut worst = 0.0f64;
    for (r, row) in x.chunks_exact(cols).enumerate() {
        let finite = row.iter().all(|v| v.is_finite());
        for j in 0..cols {
            let i = r * cols + j;
            if !finite {
                if !y[i].is_nan() {
                    return Err(format!(
                        "{what}: row {r} holds a non-finite value but y[{r}][{j}] = {:e}",
                        y[i]
                    ));
                }
                continue;
            }
            if y_ref[i].is_nan() {
                continue;
            }
            let w = weight.map_or(1.0, |w| w[j] as f64);
            let b = bias.map_or(0.0, |b| b[j] as f64);
            let allowed = BOUND * (w.abs() * (1.0 + z[i].abs()) + b.abs());
            let err = (y[i] as f64 - y_ref[i]).abs();
            // A NaN output gives a NaN error, which must fail too.
            if err.is_nan() || err > allowed {
                return Err(format!(
                    "{what}: y[{r}][{j}] = {:e}, reference {:e}, error {err:e} > allowed {allowed:e} \
                     (x = {:e}, z = {:e}, w = {w:e}, b = {b:e}, eps = {eps:e})",
                    y[i], y_ref[i], x[i], z[i]
                ));
            }
            if allowed > 0.0 {
                worst = worst.max(err / allowed);
            }
        }
    }
    Ok(worst)
}

/// Whether a saved f32 statistic matches its f64 reference within `rel`
/// relative to `scale`, allowing the rounding of a subnormal result and
/// requiring an infinity where the reference rounds to one.
pub fn stat_close(actual: f32, expected: f64, rel: f64, scale: f64) -> bool {
    if expected.is_nan() {
        return actual.is_nan();
    }
    let rounded = expected as f32;
    if rounded.is_infinite() || actual.is_infinite() {
        return actual == rounded;
    }
    // 2^-149: the spacing of f32 subnormals.
    let quantum = f32::from_bits(1) as f64;
    (actual as f64 - expected).abs() <= rel * scale.abs() + quantum
}

/// A weight vector: N(0, 1) scaled to `[0.25, 2.25)` in magnitude with random
/// signs, so products neither vanish nor blow up.
pub fn weight_vec(rng: &mut Prng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let m = rng.range(0.25, 2.25);
            (if rng.uniform() < 0.5 { -m } else { m }) as f32
        })
        .collect()
}

/// A bias vector: N(0, 1).
pub fn bias_vec(rng: &mut Prng, n: usize) -> Vec<f32> {
    rng.normals(n)
}

/// The row lengths the sweeps cover: 1 to 4 vectors + 3, the sizes around
/// powers of two, and 768. Under qemu the widest (4095..4097) are dropped.
pub fn sweep_cols() -> Vec<usize> {
    let mut cols: Vec<usize> = (1..=4 * 16 + 3).collect();
    cols.extend([
        127, 128, 129, 255, 256, 257, 511, 512, 513, 768, 1023, 1024, 1025,
    ]);
    if !SLOW {
        cols.extend([4095, 4096, 4097]);
    }
    cols
}

/// A `[rows, cols]` matrix with row `stride` at element `offset` of a buffer
/// filled with `fill`, holding `values` (contiguous `[rows, cols]`); the
/// buffer ends `tail` elements after the last row.
pub fn embed(
    values: &[f32],
    rows: usize,
    cols: usize,
    stride: usize,
    offset: usize,
    tail: usize,
    fill: f32,
) -> Vec<f32> {
    let mut buf = vec![fill; offset + span(rows, cols, stride) + tail];
    for r in 0..rows {
        let at = offset + r * stride;
        buf[at..at + cols].copy_from_slice(&values[r * cols..(r + 1) * cols]);
    }
    buf
}

/// The elements a `[rows, cols]` matrix with row `stride` spans.
pub fn span(rows: usize, cols: usize, stride: usize) -> usize {
    if rows == 0 {
        0
    } else {
        (rows - 1) * stride + cols
    }
}

/// The part of a buffer made by [`embed`] to view as the matrix: from
/// `offset` to the end of the buffer when strided (a strided view may sit in a
/// longer buffer), exactly the matrix when contiguous (a contiguous one must
/// match its length).
pub fn view(buf: &[f32], rows: usize, cols: usize, stride: usize, offset: usize) -> &[f32] {
    if stride == cols {
        &buf[offset..offset + span(rows, cols, stride)]
    } else {
        &buf[offset..]
    }
}

/// [`view`], writable.
pub fn view_mut(
    buf: &mut [f32],
    rows: usize,
    cols: usize,
    stride: usize,
    offset: usize,
) -> &mut [f32] {
    if stride == cols {
        &mut buf[offset..offset + span(rows, cols, stride)]
    } else {
        &mut buf[offset..]
    }
}

/// The contiguous `[rows, cols]` values of a strided matrix at `offset`.
pub fn extract(buf: &[f32], rows: usize, cols: usize, stride: usize, offset: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        let at = offset + r * stride;
        out.extend_from_slice(&buf[at..at + cols]);
    }
    out
}

/// Panics unless every element of `buf` outside the `[rows, cols]` matrix at
/// `offset` with `stride` still has the bits of `fill`.
#[track_caller]
pub fn assert_gaps_untouched(
    buf: &[f32],
    rows: usize,
    cols: usize,
    stride: usize,
    offset: usize,
    fill: f32,
    what: &dyn std::fmt::Display,
) {
    for (i, v) in buf.iter().enumerate() {
        let inside = i >= offset && {
            let k = i - offset;
            k / stride < rows && k % stride < cols
        };
        if !inside && v.to_bits() != fill.to_bits() {
            panic!("{what}: element {i} outside the matrix was written: {v:e}");
        }
    }
}

/// A NaN with a payload no kernel produces, to mark memory that must not be
/// written.
pub fn sentinel() -> f32 {
    f32::from_bits(0x7fc0_beef)
}
