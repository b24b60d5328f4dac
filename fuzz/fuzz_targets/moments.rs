//! Moments: `Moments::of_with` on every ISA against Portable bit for bit and
//! against `reference::moments`; Chan's `merge` of shards (each summarized by
//! the reference, by Welford's `push`, or by the SIMD kernel) against the
//! reference of the whole; and `merge` of arbitrary summaries against its
//! algebraic properties.
//!
//! Bounds. The kernel (`of_with`) is held to the documented bound carried to
//! the statistics: mean within `2e-6 * std`, M2 within `4e-6 * M2` relative
//! (what keeps `rstd` within 2e-6), plus f64 rounding. The f64 paths (the
//! reference, Welford, the merge) get a first-order error analysis: each
//! shard's mean and M2 error, propagated through Chan's formulas, with a
//! safety factor of 2 in the final comparison.
#![no_main]

use simdnorm::{Isa, Moments, reference};
use simdnorm_fuzz::{Src, values};

/// f64 unit roundoff.
const U: f64 = f64::EPSILON / 2.0;

/// Slack for results in f64's subnormal range, where rounding is absolute.
const TINY: f64 = 16.0 * f64::from_bits(1); // 16 subnormal steps

/// Longest data row.
const MAX_LEN: usize = 20_000;

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut src = Src::new(data);
    let (a, b) = (raw_moments(&mut src), raw_moments(&mut src));
    check_merge_properties(&a, &b);

    let n = match src.u8() {
        0..=127 => src.below(80),
        128..=247 => src.pick(&[
            1usize, 2, 15, 16, 17, 63, 64, 65, 511, 512, 513, 1000, 2048, 4097,
        ]),
        _ => src.below(MAX_LEN + 1),
    };
    let cuts: Vec<(usize, u8)> = (0..src.u8() % 6)
        .map(|_| (src.below(n + 1), src.u8() % 3))
        .collect();
    let first_method = src.u8() % 3;
    let mut x = vec![0.0f32; n];
    let chunk = src.u8() as usize % 4;
    if chunk == 0 || n < 4 {
        values::fill_row(&mut src, &mut x);
    } else {
        // A few differently made pieces: shards with different means.
        let mut parts: Vec<usize> = (0..chunk).map(|_| src.below(n + 1)).collect();
        parts.push(0);
        parts.push(n);
        parts.sort_unstable();
        for w in parts.windows(2) {
            values::fill_row(&mut src, &mut x[w[0]..w[1]]);
        }
    }
    if simdnorm_fuzz::debug() {
        let head = &x[..n.min(24)];
        eprintln!(
            "case: {a:?} + {b:?}; n = {n}, cuts {cuts:?}, first method {first_method}, x[..24] = {head:?}"
        );
    }
    check_of(&x);
    check_shards(&x, &cuts, first_method);
}

/// Summaries with counts, means and M2 from the input, hard values included,
/// counts up to `u64::MAX` (a merged count saturates there).
fn raw_moments(src: &mut Src) -> Moments {
    let count = match src.u8() % 4 {
        0 => 0,
        1 => 1 + src.below(3) as u64,
        2 => src.u32() as u64,
        _ => src.u64(),
    };
    let f = |src: &mut Src| -> f64 {
        if src.chance(160) {
            values::scalar(src) as f64
        } else {
            f64::from_bits(src.u64())
        }
    };
    let mean = f(src);
    let m2 = f(src);
    let m2 = if src.chance(230) { m2.abs() } else { m2 };
    Moments { count, mean, m2 }
}

fn same_bits(a: &Moments, b: &Moments) -> bool {
    a.count == b.count && a.mean.to_bits() == b.mean.to_bits() && a.m2.to_bits() == b.m2.to_bits()
}

/// What `merge` must do on any summaries: identity on empty, exact counts,
/// variance from M2; and on sane finite ones, a mean between the two, an M2
/// at least the sum of the two, and commutativity up to rounding.
fn check_merge_properties(a: &Moments, b: &Moments) {
    let empty = Moments::new();
    assert!(same_bits(&a.merge(&empty), a), "{a:?} + empty");
    // Merging two empty summaries keeps the left one, whatever junk the
    // right one's mean holds.
    let want = if b.count == 0 { &empty } else { b };
    assert!(same_bits(&empty.merge(b), want), "empty + {b:?}");
    let m = a.merge(b);
    assert_eq!(m.count, a.count.saturating_add(b.count), "{a:?} + {b:?}");
    for unbiased in [false, true] {
        let d = m.count as f64 - f64::from(u8::from(unbiased));
        let want = if d > 0.0 { m.m2 / d } else { f64::NAN };
        let got = m.variance(unbiased);
        assert!(
            got.to_bits() == want.to_bits(),
            "variance({unbiased}) of {m:?}: {got:e}, want {want:e}"
        );
    }
    let sane = |x: &Moments| x.count > 0 && x.mean.abs() < 1e100 && x.m2 >= 0.0 && x.m2 < 1e300;
    // Past a saturated count, `merge` weighs the means by `nb / u64::MAX`
    // while `na + nb` is larger: the summary is no longer a mean of anything.
    if !(sane(a) && sane(b)) || a.count.checked_add(b.count).is_none() {
        return;
    }
    let scale = a.mean.abs().max(b.mean.abs());
    let (lo, hi) = (a.mean.min(b.mean), a.mean.max(b.mean));
    assert!(
        m.mean >= lo - 8.0 * U * scale - TINY && m.mean <= hi + 8.0 * U * scale + TINY,
        "merged mean {:e} outside [{lo:e}, {hi:e}]: {a:?} + {b:?}",
        m.mean
    );
    assert!(
        m.m2 >= (a.m2 + b.m2) * (1.0 - 4.0 * U) - TINY,
        "merged m2 {:e} below the parts: {a:?} + {b:?}",
        m.m2
    );
    let r = b.merge(a);
    assert!(
        (m.mean - r.mean).abs() <= 16.0 * U * (a.mean.abs() + b.mean.abs()) + TINY,
        "merge not commutative in mean: {m:?} vs {r:?}"
    );
    assert!(
        (m.m2 - r.m2).abs() <= 16.0 * U * m.m2 + TINY,
        "merge not commutative in m2: {m:?} vs {r:?}"
    );
}

/// `of_with` on every ISA: Portable's bits, the reference within the bound,
/// NaN for non-finite data, nothing for no data.
fn check_of(x: &[f32]) {
    let base = Moments::of_with(x, Some(Isa::Portable)).expect("portable is always available");
    for isa in Isa::available() {
        let m = Moments::of_with(x, Some(isa)).expect("available");
        assert!(
            same_bits(&m, &base),
            "{isa:?}: {m:?} vs portable {base:?}, x = {x:?}"
        );
    }
    let m = Moments::of(x).expect("selected ISA");
    assert!(
        same_bits(&m, &base),
        "Moments::of: {m:?} vs portable {base:?}"
    );
    if x.is_empty() {
        assert!(same_bits(&base, &Moments::new()), "empty: {base:?}");
        return;
    }
    assert_eq!(base.count, x.len() as u64);
    if x.iter().any(|v| !v.is_finite()) {
        assert!(
            base.mean.is_nan() && base.m2.is_nan(),
            "non-finite data: {base:?}"
        );
        return;
    }
    let want = reference::moments(x);
    let (e_mean, e_m2) = kernel_err(&want);
    let head = &x[..x.len().min(24)];
    assert!(
        (base.mean - want.mean).abs() <= e_mean,
        "of: mean {:e} vs reference {:e} (tol {e_mean:e}), n = {}, x[..24] = {head:?}",
        base.mean,
        want.mean,
        x.len()
    );
    assert!(
        (base.m2 - want.m2).abs() <= e_m2,
        "of: m2 {:e} vs reference {:e} (tol {e_m2:e}, rel err {:e}), n = {}, x[..24] = {head:?}",
        base.m2,
        want.m2,
        (base.m2 - want.m2).abs() / want.m2,
        x.len()
    );
}

/// The kernel's allowed (mean, M2) errors for data whose exact moments are `m`.
fn kernel_err(m: &Moments) -> (f64, f64) {
    let std = (m.m2 / m.count as f64).sqrt();
    (2e-6 * std + 4.0 * U * m.mean.abs(), 4e-6 * m.m2)
}

/// A summary with a bound on its error.
struct Approx {
    m: Moments,
    e_mean: f64,
    e_m2: f64,
}

/// Summarizes `x` by `method` (0 reference, 1 Welford, 2 SIMD kernel) with the
/// error bound of that method.
fn summarize(x: &[f32], method: u8) -> Approx {
    let exact = reference::moments(x);
    let n = x.len() as f64;
    let amax = x.iter().fold(0.0f64, |a, &v| a.max((v as f64).abs()));
    let (m, e_mean, e_m2) = match method {
        0 => {
            // Two-pass f64: the mean is off by ~n u |x|, which moves M2 only
            // to second order; the sum of squares adds n u M2.
            let e_mean = 2.0 * n * U * amax;
            (exact, e_mean, 2.0 * n * U * exact.m2 + n * e_mean * e_mean)
        }
        1 => {
            let mut m = Moments::new();
            x.iter().for_each(|&v| m.push(v as f64));
            // Welford: each step's delta carries ~u(|x| + |mean|), and the
            // running mean drifts by up to ~k u amax after k steps.
            let e_mean = 4.0 * n * U * amax;
            let e_m2 =
                4.0 * n * U * (exact.m2 + amax * (n * exact.m2).sqrt()) + n * e_mean * e_mean;
            (m, e_mean, e_m2)
        }
        _ => {
            let m = Moments::of_with(x, Some(Isa::Portable)).expect("portable");
            let (e_mean, e_m2) = kernel_err(&exact);
            (m, e_mean, e_m2)
        }
    };
    Approx { m, e_mean, e_m2 }
}

/// Chan's merge, with the first-order propagation of both inputs' errors.
fn merge(a: &Approx, b: &Approx) -> Approx {
    let m = a.m.merge(&b.m);
    if a.m.count == 0 || b.m.count == 0 {
        let e = if a.m.count == 0 { b } else { a };
        return Approx {
            m,
            e_mean: e.e_mean,
            e_m2: e.e_m2,
        };
    }
    let (na, nb) = (a.m.count as f64, b.m.count as f64);
    let w = na * nb / (na + nb);
    let delta = (b.m.mean - a.m.mean).abs();
    let e_delta = a.e_mean + b.e_mean + 2.0 * U * (a.m.mean.abs() + b.m.mean.abs());
    Approx {
        m,
        e_mean: a.e_mean.max(b.e_mean) + 4.0 * U * (a.m.mean.abs() + delta),
        e_m2: a.e_m2
            + b.e_m2
            + (2.0 * delta * e_delta + e_delta * e_delta) * w
            + 4.0 * U * (a.m.m2.abs() + b.m.m2.abs() + delta * delta * w),
    }
}

/// Cuts `x` at `cuts`, summarizes each shard by its method, merges left to
/// right and compares with the reference of the whole.
fn check_shards(x: &[f32], cuts: &[(usize, u8)], first_method: u8) {
    let mut cuts = cuts.to_vec();
    cuts.sort_unstable();
    let mut start = 0;
    let mut method = first_method;
    let mut total = Approx {
        m: Moments::new(),
        e_mean: 0.0,
        e_m2: 0.0,
    };
    let mut shards = Vec::new();
    for (end, next_method) in cuts.into_iter().chain([(x.len(), 0)]) {
        let part = summarize(&x[start..end], method);
        shards.push((
            end - start,
            method,
            part.m,
            reference::moments(&x[start..end]),
        ));
        total = merge(&total, &part);
        start = end;
        method = next_method;
    }
    let got = total.m;
    assert_eq!(got.count, x.len() as u64);
    if x.is_empty() {
        assert!(same_bits(&got, &Moments::new()));
        return;
    }
    if x.iter().any(|v| !v.is_finite()) {
        assert!(
            got.m2.is_nan() && !got.mean.is_finite(),
            "non-finite data merged to {got:?}"
        );
        return;
    }
    // The reference itself is two-pass f64, off by up to ~n u relative.
    let reference = summarize(x, 0);
    let want = reference.m;
    let e_mean = 2.0 * (total.e_mean + reference.e_mean);
    let e_m2 = 2.0 * (total.e_m2 + reference.e_m2);
    assert!(
        (got.mean - want.mean).abs() <= e_mean,
        "merged mean {:e} vs reference {:e} (tol {e_mean:e}), n = {}, shards (n, method, got, exact) {shards:?}",
        got.mean,
        want.mean,
        x.len()
    );
    assert!(
        (got.m2 - want.m2).abs() <= e_m2,
        "merged m2 {:e} vs reference {:e} (tol {e_m2:e}), n = {}, shards (n, method, got, exact) {shards:?}",
        got.m2,
        want.m2,
        x.len()
    );
}
