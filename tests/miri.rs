//! Small end-to-end runs of every public operator on `Isa::Portable`, meant
//! for Miri (fuzz/miri.sh): `cargo +nightly miri test --test miri`. Miri
//! checks what the fuzzers cannot: out-of-bounds reads and writes that land
//! inside the allocation, reads of uninitialized memory, aliasing violations
//! in the slice splitting, and UB in the `unsafe` the portable path reaches.
//!
//! Under Miri the shapes shrink (every call is interpreted, ~1000x slower)
//! and rayon stays off (`parallel(false)`); natively the same tests run with
//! larger shapes as part of `cargo test`. The kernels' AVX2/AVX-512 paths are
//! not for Miri: it only reports the features enabled at compile time, so
//! `Isa::available()` is `[Portable]` there.

use simdnorm::{Isa, LayerNorm, Moments, RmsNorm, Rows, RowsMut, reference};

/// Row lengths: both sides of one vector (16), of four accumulators (64)
/// and, natively, of a 32-chunk block (512).
fn col_sizes() -> &'static [usize] {
    if cfg!(miri) {
        &[1, 15, 16, 17, 33, 64, 65, 513]
    } else {
        &[1, 2, 15, 16, 17, 33, 63, 64, 65, 127, 511, 512, 513, 1025]
    }
}

const ROWS: usize = if cfg!(miri) { 2 } else { 5 };

/// Deterministic values around `offset` with spread `spread` (a LCG: no
/// dependence on a RNG crate, cheap under Miri).
fn data(n: usize, offset: f32, spread: f32, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            offset + spread * ((s >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
        })
        .collect()
}

/// `|y - y_ref| <= 2e-6 * (|w| (1 + |z|) + |b|)` (README bound).
fn assert_within_bound(y: &[f32], plain: &[f64], full: &[f64], w: &[f32], b: Option<&[f32]>) {
    let cols = w.len();
    for (i, (&y, (&z, &r))) in y.iter().zip(plain.iter().zip(full)).enumerate() {
        let j = i % cols;
        let bj = b.map_or(0.0, |b| b[j]) as f64;
        let tol = 2e-6 * ((w[j] as f64).abs() * (1.0 + z.abs()) + bj.abs());
        assert!(
            (y as f64 - r).abs() <= tol,
            "element {i}: {y} vs {r} (tol {tol:e})"
        );
    }
}

#[test]
fn layer_norm_portable_strided_unaligned() {
    for &cols in col_sizes() {
        let stride = cols + 3;
        let x = data(ROWS * cols, 1e4, 2.0, cols as u32);
        let w = data(cols, 1.0, 0.5, 7);
        let b = data(cols, 0.0, 1.0, 8);
        // Input at offset 1 (unaligned), rows `stride` apart; output at offset 2.
        let mut input = vec![f32::NAN; 1 + (ROWS - 1) * stride + cols];
        for r in 0..ROWS {
            input[1 + r * stride..][..cols].copy_from_slice(&x[r * cols..][..cols]);
        }
        let mut out = vec![-7.0f32; 2 + (ROWS - 1) * stride + cols + 1];
        let (mut mean, mut rstd) = (vec![0.0f32; ROWS], vec![0.0f32; ROWS]);
        let end = out.len() - 1;
        LayerNorm::new()
            .weight(&w)
            .bias(&b)
            .isa(Isa::Portable)
            .parallel(false)
            .forward_train(
                Rows::with_stride(&input[1..], ROWS, cols, stride).unwrap(),
                RowsMut::with_stride(&mut out[2..end], ROWS, cols, stride).unwrap(),
                &mut mean,
                &mut rstd,
            )
            .unwrap();
        let y: Vec<f32> = (0..ROWS)
            .flat_map(|r| out[2 + r * stride..][..cols].to_vec())
            .collect();
        let plain = reference::layer_norm(&x, cols, None, None, 1e-5);
        let full = reference::layer_norm(&x, cols, Some(&w), Some(&b), 1e-5);
        assert_within_bound(&y, &plain.output, &full.output, &w, Some(&b));
        for r in 0..ROWS {
            let rel = (rstd[r] as f64 - plain.rstd[r]).abs() / plain.rstd[r];
            assert!(rel <= 2e-6, "cols {cols} row {r}: rstd rel err {rel:e}");
            // Gaps between rows and the guard elements are untouched.
            if r + 1 < ROWS {
                let gap = &out[2 + r * stride + cols..2 + (r + 1) * stride];
                assert!(gap.iter().all(|&v| v == -7.0), "gap after row {r}");
            }
        }
        assert_eq!(&out[..2], &[-7.0, -7.0]);
        assert_eq!(out[end], -7.0);
    }
}

#[test]
fn rms_norm_portable_in_place_matches_out_of_place() {
    for &cols in col_sizes() {
        let x = data(ROWS * cols, 0.0, 3.0, 40 + cols as u32);
        let w = data(cols, 1.0, 0.25, 9);
        let norm = RmsNorm::new()
            .eps(1e-6)
            .weight(&w)
            .isa(Isa::Portable)
            .parallel(false);
        let mut y = vec![0.0f32; x.len()];
        norm.forward(
            Rows::new(&x, ROWS, cols).unwrap(),
            RowsMut::new(&mut y, ROWS, cols).unwrap(),
        )
        .unwrap();
        let mut in_place = x.clone();
        norm.forward_in_place(RowsMut::new(&mut in_place, ROWS, cols).unwrap())
            .unwrap();
        assert_eq!(
            y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            in_place.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "cols {cols}"
        );
        let plain = reference::rms_norm(&x, cols, None, 1e-6);
        let full = reference::rms_norm(&x, cols, Some(&w), 1e-6);
        assert_within_bound(&y, &plain.output, &full.output, &w, None);
    }
}

#[test]
fn portable_edge_rows() {
    // Extremes that take the rescaled path, a constant row, a NaN row.
    let cols = 17;
    let mut x = data(4 * cols, 0.0, 1.0, 3);
    x[..cols].iter_mut().for_each(|v| *v *= 1e30);
    x[cols..2 * cols].iter_mut().for_each(|v| *v *= 1e-40);
    x[2 * cols..3 * cols].fill(5.0);
    x[3 * cols + 4] = f32::NAN;
    let bias = vec![0.5f32; cols];
    let mut y = vec![0.0f32; x.len()];
    LayerNorm::new()
        .bias(&bias)
        .isa(Isa::Portable)
        .parallel(false)
        .forward(
            Rows::new(&x, 4, cols).unwrap(),
            RowsMut::new(&mut y, 4, cols).unwrap(),
        )
        .unwrap();
    let ones = vec![1.0f32; cols];
    let plain = reference::layer_norm(&x[..2 * cols], cols, None, None, 1e-5);
    let full = reference::layer_norm(&x[..2 * cols], cols, None, Some(&bias), 1e-5);
    assert_within_bound(
        &y[..2 * cols],
        &plain.output,
        &full.output,
        &ones,
        Some(&bias),
    );
    assert!(
        y[2 * cols..3 * cols].iter().all(|&v| v == 0.5),
        "constant row gives beta"
    );
    assert!(
        y[3 * cols..].iter().all(|v| v.is_nan()),
        "NaN row gives NaN"
    );
}

#[test]
fn moments_portable_and_merge() {
    let n = if cfg!(miri) { 530 } else { 4099 };
    let x = data(n, 1e4, 1.0, 11);
    let whole = Moments::of_with(&x, Some(Isa::Portable)).unwrap();
    let want = reference::moments(&x);
    assert_eq!(whole.count, n as u64);
    let std = (want.m2 / n as f64).sqrt();
    assert!((whole.mean - want.mean).abs() <= 2e-6 * std + 1e-12 * want.mean.abs());
    assert!((whole.m2 - want.m2).abs() <= 4e-6 * want.m2);
    // Chan's merge of the two halves, each by the kernel, and Welford's push.
    let (a, b) = x.split_at(n / 3);
    let merged = Moments::of_with(a, Some(Isa::Portable))
        .unwrap()
        .merge(&Moments::of_with(b, Some(Isa::Portable)).unwrap());
    assert_eq!(merged.count, n as u64);
    assert!((merged.mean - want.mean).abs() <= 4e-6 * std + 1e-12 * want.mean.abs());
    assert!((merged.m2 - want.m2).abs() <= 2e-5 * want.m2);
    let mut pushed = Moments::new();
    x.iter().for_each(|&v| pushed.push(v as f64));
    assert!((pushed.m2 - want.m2).abs() <= 1e-9 * want.m2);
    assert_eq!(
        Moments::of_with(&[], Some(Isa::Portable)).unwrap(),
        Moments::new()
    );
}

#[test]
fn stream_copy_every_alignment() {
    // The selected ISA: Portable under Miri, the best one natively.
    let n = if cfg!(miri) { 100 } else { 1000 };
    let src: Vec<f32> = (0..n + 16)
        .map(|i| f32::from_bits(0x7fc0_0000 ^ (i as u32).wrapping_mul(0x9e37_79b9)))
        .collect();
    for offset in 0..16 {
        let mut dst = vec![0.0f32; n + 18];
        simdnorm::stream_copy(
            &src[offset..offset + n],
            &mut dst[1 + offset..1 + offset + n],
        )
        .unwrap();
        for i in 0..n {
            assert_eq!(dst[1 + offset + i].to_bits(), src[offset + i].to_bits());
        }
        assert!(dst[..1 + offset].iter().all(|&v| v == 0.0));
        assert!(dst[1 + offset + n..].iter().all(|&v| v == 0.0));
    }
}
