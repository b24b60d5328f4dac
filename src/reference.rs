//! Plain f64 implementations: the oracle for tests, fuzzing and the bench
//! tool's error column. Slow on purpose: straight two-pass loops in double
//! precision, no SIMD, no cleverness. Inputs are contiguous `[rows, cols]`.

/// Output, mean and rstd of one row of LayerNorm in f64.
fn layer_norm_row(x: &[f32], eps: f64) -> (Vec<f64>, f64, f64) {
    let n = x.len() as f64;
    if x.iter().any(|v| !v.is_finite()) {
        return (vec![f64::NAN; x.len()], f64::NAN, f64::NAN);
    }
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    let rstd = 1.0 / (var + eps).sqrt();
    (
        x.iter().map(|&v| (v as f64 - mean) * rstd).collect(),
        mean,
        rstd,
    )
}

fn affine(y: &mut [f64], weight: Option<&[f32]>, bias: Option<&[f32]>) {
    for (j, v) in y.iter_mut().enumerate() {
        if let Some(w) = weight {
            *v *= w[j] as f64;
        }
        if let Some(b) = bias {
            *v += b[j] as f64;
        }
    }
}

/// Reference output of a LayerNorm over rows of `cols` values.
#[derive(Clone, Debug, Default)]
pub struct Normalized {
    /// The normalized values, `rows * cols`.
    pub output: Vec<f64>,
    /// Per-row mean (all zeros for RMSNorm).
    pub mean: Vec<f64>,
    /// Per-row `1/sqrt(var + eps)` (LayerNorm) or `1/sqrt(mean(x²) + eps)` (RMSNorm).
    pub rstd: Vec<f64>,
}

/// LayerNorm of a contiguous `[x.len() / cols, cols]` matrix, in f64.
/// A row with NaN or ±inf gives NaN everywhere in that row.
///
/// Panics if `cols == 0` or `x.len()` is not a multiple of `cols` (a test
/// helper, not part of the checked API).
pub fn layer_norm(
    x: &[f32],
    cols: usize,
    weight: Option<&[f32]>,
    bias: Option<&[f32]>,
    eps: f32,
) -> Normalized {
    let mut out = Normalized::default();
    for row in x.chunks_exact(cols) {
        let (mut y, mean, rstd) = layer_norm_row(row, eps as f64);
        affine(&mut y, weight, bias);
        out.output.extend(y);
        out.mean.push(mean);
        out.rstd.push(rstd);
    }
    out
}

/// RMSNorm of a contiguous `[x.len() / cols, cols]` matrix, in f64.
///
/// Panics if `cols == 0` (a test helper).
pub fn rms_norm(x: &[f32], cols: usize, weight: Option<&[f32]>, eps: f32) -> Normalized {
    let mut out = Normalized::default();
    for row in x.chunks_exact(cols) {
        if row.iter().any(|v| !v.is_finite()) {
            out.output.extend(std::iter::repeat_n(f64::NAN, cols));
            out.mean.push(0.0);
            out.rstd.push(f64::NAN);
            continue;
        }
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
        let rstd = 1.0 / (ms + eps as f64).sqrt();
        let mut y: Vec<f64> = row.iter().map(|&v| v as f64 * rstd).collect();
        affine(&mut y, weight, None);
        out.output.extend(y);
        out.mean.push(0.0);
        out.rstd.push(rstd);
    }
    out
}

/// Count, mean and M2 of `x` in f64 (two-pass).
pub fn moments(x: &[f32]) -> crate::Moments {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let m2 = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>();
    crate::Moments {
        count: x.len() as u64,
        mean,
        m2,
    }
}

/// Largest `|a - b|` over pairs of an f32 result and its f64 reference, where
/// two NaNs count as equal and one NaN as an infinite error.
pub fn max_abs_error(actual: &[f32], expected: &[f64]) -> f64 {
    actual
        .iter()
        .zip(expected)
        .map(|(&a, &e)| match (a.is_nan(), e.is_nan()) {
            (true, true) => 0.0,
            (false, false) => (a as f64 - e).abs(),
            _ => f64::INFINITY,
        })
        .fold(0.0, f64::max)
}
