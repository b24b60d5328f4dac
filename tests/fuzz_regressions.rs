//! Failures found by the fuzz targets (fuzz/), each turned into a plain test
//! with the smallest input that shows it. A test marked `#[ignore = "bug:
//! ..."]` is a bug still open in src/; when it is fixed, drop the `ignore`
//! and the matching known-bug exception in fuzz/src/.

use simdnorm::{Isa, LayerNorm, Moments, Rows, RowsMut, reference};

/// `eps = -0.0` passes the check (`-0.0 >= 0.0`), and for any row with
/// variance > 0 it acts as 0. On a constant row the kernel takes
/// `1/sqrt(eps)` directly, and `sqrt(-0.0) = -0.0`, so it saves
/// `rstd = -inf`; the definition `1/sqrt(var + eps)` gives
/// `1/sqrt(0 + -0) = 1/sqrt(+0) = +inf`, as the reference does.
#[test]
#[ignore = "bug: constant row with eps = -0.0 saves rstd = -inf instead of +inf (src/kernels/rows.rs, constant-row branch of layer_norm_stats)"]
fn constant_row_with_negative_zero_eps_saves_positive_infinite_rstd() {
    let x = [-1e-45f32; 5];
    let want = reference::layer_norm(&x, 5, None, None, -0.0);
    assert_eq!(want.rstd[0], f64::INFINITY);
    for isa in Isa::available() {
        let mut y = [0.0f32; 5];
        let (mut mean, mut rstd) = ([0.0f32], [0.0f32]);
        LayerNorm::new()
            .eps(-0.0)
            .isa(isa)
            .forward_train(
                Rows::new(&x, 1, 5).unwrap(),
                RowsMut::new(&mut y, 1, 5).unwrap(),
                &mut mean,
                &mut rstd,
            )
            .unwrap();
        assert_eq!(mean[0], x[0], "{isa}");
        assert_eq!(rstd[0] as f64, want.rstd[0], "{isa}: saved rstd");
    }
}

/// With eps = +0.0 the same row saves +inf: only the sign of zero differs.
#[test]
fn constant_row_with_zero_eps_saves_positive_infinite_rstd() {
    let x = [-1e-45f32; 5];
    for isa in Isa::available() {
        let mut y = [0.0f32; 5];
        let (mut mean, mut rstd) = ([0.0f32], [0.0f32]);
        LayerNorm::new()
            .eps(0.0)
            .isa(isa)
            .forward_train(
                Rows::new(&x, 1, 5).unwrap(),
                RowsMut::new(&mut y, 1, 5).unwrap(),
                &mut mean,
                &mut rstd,
            )
            .unwrap();
        assert_eq!(rstd[0], f32::INFINITY, "{isa}");
        // 0 * inf: a constant row with eps = 0 is 0/0, NaN as in the reference.
        assert!(y.iter().all(|v| v.is_nan()), "{isa}: {y:?}");
    }
}

/// `Moments::merge` adds the counts with `+`: two summaries whose counts
/// overflow u64 panic in a build with overflow checks (tests, fuzzing) and
/// wrap to a wrong count in release. Unreachable from real data (2^64
/// values), but the fields are public and summaries arrive from other
/// processes. The fuzz target keeps counts below 2^62 so as to reach the
/// rest of `merge`.
#[test]
#[ignore = "bug: Moments::merge overflows u64 count (panics with overflow checks, wraps in release); src/moments.rs"]
fn merge_count_overflow() {
    let a = Moments {
        count: u64::MAX,
        mean: 1.0,
        m2: 0.0,
    };
    let b = Moments {
        count: 2,
        mean: 1.0,
        m2: 0.0,
    };
    let merged = std::panic::catch_unwind(|| a.merge(&b));
    let merged = merged.expect("merge must not panic");
    assert!(merged.count >= a.count, "count wrapped around: {merged:?}");
}
