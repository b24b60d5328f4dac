//! `Moments`: Welford's `push` and Chan's `merge` against the f64 two-pass
//! reference, and the vectorized `Moments::of_with` on every ISA against
//! Portable (bit for bit) and the reference (a tight bound) on hard inputs.

mod common;

use common::*;
use simdnorm::{Isa, Moments, reference};

fn pushed(x: &[f32]) -> Moments {
    let mut m = Moments::new();
    for &v in x {
        m.push(v as f64);
    }
    m
}

/// `|actual - expected|` within `rel` of the data's scale for the mean
/// (`|mean| + sigma`) and of `m2` itself for `m2`; counts equal.
#[track_caller]
fn assert_close(actual: &Moments, expected: &Moments, rel_mean: f64, rel_m2: f64, what: &str) {
    assert_eq!(actual.count, expected.count, "{what}: count");
    let n = expected.count as f64;
    let sigma = (expected.m2 / n).sqrt();
    let mean_err = (actual.mean - expected.mean).abs();
    assert!(
        mean_err <= rel_mean * (expected.mean.abs() + sigma),
        "{what}: mean {:e}, reference {:e} (error {mean_err:e}, sigma {sigma:e})",
        actual.mean,
        expected.mean
    );
    let m2_err = (actual.m2 - expected.m2).abs();
    assert!(
        m2_err <= rel_m2 * expected.m2,
        "{what}: m2 {:e}, reference {:e} (relative error {:e})",
        actual.m2,
        expected.m2,
        m2_err / expected.m2
    );
}

/// The relative error f64 Welford/Chan may make on `m2`: it subtracts a
/// running mean rounded to f64, so its error grows with the condition number
/// `|mean| / sigma` (1e6 for 1e3 + 1e-3 N(0,1)).
fn f64_m2_tolerance(m: &Moments) -> f64 {
    let sigma = (m.m2 / m.count as f64).sqrt();
    if sigma == 0.0 {
        return 1e-12; // m2 must then be 0 exactly
    }
    1e-12 + 16.0 * f64::EPSILON * m.mean.abs() / sigma
}

/// The finite classes with a spread (constant rows are tested on their own).
fn spread_classes() -> impl Iterator<Item = Class> {
    Class::ALL.into_iter().filter(|&c| c != Class::Constant)
}

#[test]
fn push_matches_the_two_pass_reference() {
    let mut rng = Prng::new(20);
    for class in spread_classes() {
        for n in [1, 2, 3, 17, 100, 1000, 4097] {
            let x = class.row(&mut rng, n);
            let what = format!("{class:?} n={n}");
            let want = reference::moments(&x);
            assert_close(&pushed(&x), &want, 1e-14, f64_m2_tolerance(&want), &what);
        }
    }
}

#[test]
fn merging_shards_in_order_matches_all_at_once() {
    let mut rng = Prng::new(21);
    for class in spread_classes() {
        let n = 5000;
        let x = class.row(&mut rng, n);
        let all = pushed(&x);
        for shards in [2, 3, 7, 64] {
            // Random cut points, some shards possibly empty.
            let mut cuts: Vec<usize> = (0..shards - 1).map(|_| rng.below(n + 1)).collect();
            cuts.push(0);
            cuts.push(n);
            cuts.sort_unstable();
            let merged = cuts
                .windows(2)
                .map(|w| pushed(&x[w[0]..w[1]]))
                .fold(Moments::new(), |acc, m| acc.merge(&m));
            let what = format!("{class:?} {shards} shards");
            let want = reference::moments(&x);
            let tol = f64_m2_tolerance(&want);
            assert_close(&merged, &all, 1e-14, 2.0 * tol, &what);
            assert_close(&merged, &want, 1e-14, tol, &what);
        }
    }
}

#[test]
fn merge_is_associative_and_commutative_within_rounding() {
    let mut rng = Prng::new(22);
    for class in spread_classes() {
        let a = pushed(&class.row(&mut rng, 300));
        let b = pushed(&class.row(&mut rng, 1));
        let c = pushed(&class.row(&mut rng, 4000));
        let left = a.merge(&b).merge(&c);
        let right = a.merge(&b.merge(&c));
        let what = format!("{class:?}");
        assert_close(
            &left,
            &right,
            1e-14,
            1e-12,
            &format!("{what} (ab)c vs a(bc)"),
        );
        assert_close(
            &a.merge(&c),
            &c.merge(&a),
            1e-14,
            1e-12,
            &format!("{what} ac vs ca"),
        );
    }
}

#[test]
fn merge_with_empty_is_the_identity() {
    let mut rng = Prng::new(23);
    let a = pushed(&Class::Mean1e4.row(&mut rng, 10));
    let e = Moments::new();
    assert_eq!(a.merge(&e), a);
    assert_eq!(e.merge(&a), a);
    assert_eq!(e.merge(&e), e);
    assert_eq!(Moments::default(), e);
}

/// Counts near `u64::MAX` neither wrap nor panic when merged.
#[test]
fn merge_of_huge_counts_does_not_overflow() {
    let a = Moments {
        count: u64::MAX - 1,
        mean: 1.0,
        m2: 2.0,
    };
    let b = Moments {
        count: 5,
        mean: 3.0,
        m2: 4.0,
    };
    let m = std::panic::catch_unwind(|| a.merge(&b)).expect("merge panicked");
    assert_eq!(m.count, u64::MAX);
    assert!(m.mean.is_finite() && m.m2.is_finite(), "{m:?}");
    assert!(m.mean >= 1.0 && m.mean <= 3.0 && m.m2 >= 6.0, "{m:?}");
}

/// `Moments::of_with` on every ISA: the same bits as Portable, and within a
/// tight bound of the reference on hard inputs.
#[test]
fn of_with_every_isa_matches_portable_and_reference() {
    let mut rng = Prng::new(24);
    let (mut worst_mean, mut worst_m2) = (0.0f64, 0.0f64);
    for class in spread_classes() {
        for n in sweep_cols() {
            let x = class.row(&mut rng, n);
            let want = reference::moments(&x);
            let portable = Moments::of_with(&x, Some(Isa::Portable)).unwrap();
            let what = format!("{class:?} n={n}");
            // Measured worst: 4.4e-8 (mean, of sigma) and 1.5e-7 (m2); a
            // single value has m2 = 0 exactly.
            assert_close(&portable, &want, 1e-6, 2e-6, &what);
            let sigma = (want.m2 / n as f64).sqrt();
            if sigma > 0.0 {
                worst_mean = worst_mean.max((portable.mean - want.mean).abs() / sigma);
                worst_m2 = worst_m2.max((portable.m2 - want.m2).abs() / want.m2);
            }
            for isa in Isa::available() {
                let m = Moments::of_with(&x, Some(isa)).unwrap();
                assert_eq!(m.count, portable.count, "{what} {isa}");
                assert_eq!(
                    m.mean.to_bits(),
                    portable.mean.to_bits(),
                    "{what} {isa}: mean {:e} vs {:e}",
                    m.mean,
                    portable.mean
                );
                assert_eq!(
                    m.m2.to_bits(),
                    portable.m2.to_bits(),
                    "{what} {isa}: m2 {:e} vs {:e}",
                    m.m2,
                    portable.m2
                );
            }
        }
    }
    println!("Moments::of: worst mean error {worst_mean:.2e} sigma, worst m2 error {worst_m2:.2e}");
}

/// Per-row moments from the kernel merged in order equal the moments of the
/// whole (SyncBatchNorm-style).
#[test]
fn kernel_moments_merge_across_shards() {
    let mut rng = Prng::new(25);
    for class in [Class::Mean1e4, Class::Mean1e3Tiny, Class::Huge, Class::Tiny] {
        let x = class.row(&mut rng, 3000);
        for isa in Isa::available() {
            let merged = x
                .chunks(256)
                .map(|c| Moments::of_with(c, Some(isa)).unwrap())
                .fold(Moments::new(), |acc, m| acc.merge(&m));
            assert_close(
                &merged,
                &reference::moments(&x),
                1e-6,
                2e-6,
                &format!("{class:?} {isa}"),
            );
        }
    }
}

#[test]
fn constant_input_has_zero_m2_and_its_value_as_mean() {
    for isa in Isa::available() {
        for &c in constant_values() {
            for n in [1, 15, 16, 17, 1000] {
                let m = Moments::of_with(&vec![c; n], Some(isa)).unwrap();
                assert_eq!(m.count, n as u64);
                assert!(m.mean == c as f64, "{isa} {c:e} x{n}: mean {:e}", m.mean);
                assert_eq!(m.m2, 0.0, "{isa} {c:e} x{n}");
            }
        }
    }
}

#[test]
fn empty_input_is_empty_moments() {
    for isa in Isa::available() {
        let m = Moments::of_with(&[], Some(isa)).unwrap();
        assert_eq!(m, Moments::new(), "{isa}");
        assert!(m.variance(false).is_nan() && m.variance(true).is_nan());
    }
    assert_eq!(Moments::of(&[]).unwrap().count, 0);
}

#[test]
fn variance_biased_and_unbiased() {
    let m = pushed(&[1.0, 2.0, 3.0, 4.0]);
    assert_eq!(m.variance(false), 1.25);
    assert!((m.variance(true) - 5.0 / 3.0).abs() < 1e-15);
    for isa in Isa::available() {
        let k = Moments::of_with(&[1.0, 2.0, 3.0, 4.0], Some(isa)).unwrap();
        assert_eq!(k.variance(false), 1.25, "{isa}");
    }
    let one = pushed(&[7.5]);
    assert_eq!(one.variance(false), 0.0);
    assert!(one.variance(true).is_nan());
    let none = Moments::new();
    assert!(none.variance(false).is_nan() && none.variance(true).is_nan());
    // variance = m2 / n and m2 / (n - 1) on random data.
    let mut rng = Prng::new(26);
    let x = Class::Mean1e4.row(&mut rng, 999);
    let r = reference::moments(&x);
    let m = pushed(&x);
    assert!((m.variance(false) - r.m2 / 999.0).abs() <= 1e-11 * r.m2 / 999.0);
    assert!((m.variance(true) - r.m2 / 998.0).abs() <= 1e-11 * r.m2 / 998.0);
}

#[test]
fn non_finite_input_gives_nan() {
    let mut rng = Prng::new(27);
    for n in [1, 5, 16, 17, 100] {
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, n / 2, n - 1] {
                let mut x = Class::Normal.row(&mut rng, n);
                x[at] = bad;
                for isa in Isa::available() {
                    let m = Moments::of_with(&x, Some(isa)).unwrap();
                    assert!(
                        m.mean.is_nan() && m.m2.is_nan(),
                        "{isa} n={n} {bad} at {at}: {m:?}"
                    );
                }
            }
        }
        let mut x = vec![f32::MAX; n];
        x[0] = f32::INFINITY;
        let m = Moments::of(&x).unwrap();
        assert!(m.mean.is_nan() && m.m2.is_nan(), "MAX and inf: {m:?}");
    }
    let mut m = pushed(&[1.0, 2.0]);
    m.push(f64::NAN);
    assert!(m.mean.is_nan() && m.m2.is_nan());
    let m = pushed(&[1.0, 2.0]).merge(&m);
    assert!(m.mean.is_nan() && m.m2.is_nan());
}

#[test]
fn of_uses_the_selected_isa() {
    let mut rng = Prng::new(28);
    let x = Class::Mean1e4.row(&mut rng, 333);
    let selected = Isa::selected().unwrap();
    let a = Moments::of(&x).unwrap();
    let b = Moments::of_with(&x, Some(selected)).unwrap();
    let c = Moments::of_with(&x, None).unwrap();
    assert_eq!(a.mean.to_bits(), b.mean.to_bits());
    assert_eq!(a.m2.to_bits(), b.m2.to_bits());
    assert_eq!(a, c);
}
