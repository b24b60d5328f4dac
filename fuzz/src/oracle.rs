//! The checks every target shares: the documented accuracy bound, the
//! non-finite and constant-row rules, saved statistics, and typed errors.
//!
//! The bound (README, numeric contract): for every finite row, element-wise
//! `|y - y_ref| <= 2e-6 * (|w_j| * (1 + |z_j|) + |b_j|) + 2^-149`, with `z_j`
//! the f64 reference's normalized value before the affine step. The last
//! term is one step of the f32 subnormal grid: an output below
//! `f32::MIN_POSITIVE` (a subnormal weight or bias) is rounded to a multiple
//! of 2^-149, an absolute error no relative bound covers (the fuzzer's first
//! finding, tests/fuzz_regressions.rs). Two cases fall outside what any f32
//! kernel can promise and are skipped (the bit-for-bit comparison with
//! `Portable` still covers them):
//! - a non-finite weight or bias at `j` (the contract only speaks of
//!   non-finite *inputs*);
//! - an element whose scale `|w_j| * (1 + |z_j|) + |b_j|` is within a factor
//!   four of `f32::MAX`, where `z * w` or `+ b` may round to infinity.

use simdnorm::Error;

/// The documented relative bound.
pub const BOUND: f64 = 2e-6;

/// Elements whose scale reaches this may overflow f32 on the way; skipped.
pub const OVERFLOW_SCALE: f64 = f32::MAX as f64 / 4.0;

/// The accuracy rule for one element: `Ok` or a description of the miss.
pub fn element_ok(y: f32, y_ref: f64, z_ref: f64, w: f32, b: f32) -> Result<(), String> {
    if !w.is_finite() || !b.is_finite() {
        return Ok(());
    }
    if z_ref.is_nan() {
        // var + eps == 0 (eps = 0 and a constant or all-zero row): 0 * inf.
        return if y.is_nan() {
            Ok(())
        } else {
            Err(format!("reference is NaN (0/0), got {y:e}"))
        };
    }
    let scale = (w as f64).abs() * (1.0 + z_ref.abs()) + (b as f64).abs();
    if scale >= OVERFLOW_SCALE {
        return Ok(());
    }
    if !y.is_finite() {
        return Err(format!("non-finite output {y:e}, reference {y_ref:e}"));
    }
    let err = (y as f64 - y_ref).abs();
    if err <= BOUND * scale + SUBNORMAL_STEP {
        Ok(())
    } else {
        Err(format!(
            "|y - y_ref| = {err:e} > {:e} (y = {y:e}, y_ref = {y_ref:e}, z_ref = {z_ref:e}, w = {w:e}, b = {b:e}, err/scale = {:e})",
            BOUND * scale + SUBNORMAL_STEP,
            err / scale
        ))
    }
}

/// Checks a saved `rstd` against the reference's f64 value: relative
/// [`BOUND`], with overflow past `f32::MAX` allowed where the reference is
/// there too, and one subnormal step of slack where it underflows.
pub fn rstd_ok(got: f32, want: f64) -> Result<(), String> {
    if want.is_nan() {
        return if got.is_nan() {
            Ok(())
        } else {
            Err(format!("want NaN, got {got:e}"))
        };
    }
    let edge = f32::MAX as f64 * (1.0 - 2.0 * BOUND);
    if want >= edge {
        return if got as f64 >= edge {
            Ok(())
        } else {
            Err(format!("want {want:e} (f32 overflow), got {got:e}"))
        };
    }
    let err = (got as f64 - want).abs();
    if got.is_finite() && err <= BOUND * want + SUBNORMAL_STEP {
        Ok(())
    } else {
        Err(format!(
            "rstd {got:e} vs reference {want:e}: rel err {:e}",
            err / want
        ))
    }
}

/// Checks a saved mean: the error the bound allows in the normalized value
/// (`BOUND / rstd`), plus rounding the mean to f32.
pub fn mean_ok(got: f32, want: f64, rstd_ref: f64) -> Result<(), String> {
    if want.is_nan() {
        return if got.is_nan() {
            Ok(())
        } else {
            Err(format!("want NaN, got {got:e}"))
        };
    }
    let tol = BOUND / rstd_ref + want.abs() * f32::EPSILON as f64 / 2.0 + SUBNORMAL_STEP;
    let err = (got as f64 - want).abs();
    if got.is_finite() && err <= tol {
        Ok(())
    } else {
        Err(format!(
            "mean {got:e} vs reference {want:e}: err {err:e} > tol {tol:e}"
        ))
    }
}

/// The spacing of f32 subnormals, 2^-149: the rounding error of any result
/// that lands there, which no relative bound can cover.
pub const SUBNORMAL_STEP: f64 = 1.401_298_464_324_817e-45;

/// Compares two errors, `eps` by bits (NaN != NaN under `PartialEq`).
pub fn same_error(a: &Error, b: &Error) -> bool {
    match (a, b) {
        (Error::Eps { eps: x }, Error::Eps { eps: y }) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

/// Panics unless `got` is exactly the error `want`.
#[track_caller]
pub fn expect_error<T: std::fmt::Debug>(got: Result<T, Error>, want: &Error, ctx: &str) {
    match got {
        Err(e) if same_error(&e, want) => {}
        other => panic!("{ctx}: expected Err({want:?}), got {other:?}"),
    }
}
