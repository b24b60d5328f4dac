//! Failures found by the BatchNorm fuzz targets (fuzz/fuzz_targets/batch_norm_*.rs),
//! each as a plain test with a small input that shows it. A bug still open in
//! src/ gets `#[ignore = "bug: ..."]` and a narrow known-bug exception in
//! fuzz/src/batch_norm.rs; when it is fixed, both go (as for every test
//! below: fixed in 3718977, 8001dd5 and with the overflow recomputation in
//! src/batch_norm/exec.rs).

use simdnorm::{BatchNorm, BatchShape, Isa, Layout, TrainStats};

/// A channel whose map `a = rstd * gamma` leaves `[2^-64, 2^64]` runs as
/// `y = (x * 2^k - hi) * a' + b` with `hi = mean * 2^k` rounded to f32
/// (src/batch_norm/exec.rs, `Coefficients::new`). When `|mean| * 2^k`
/// exceeds f32::MAX, `hi` is infinite and every element equal to the mean
/// gives `inf - inf = NaN`, though its exact output is beta (z = 0). Here a
/// constant channel of 1e26 with gamma 1e30 and eps 1e-5: rstd ~316,
/// a ~3e32 ~ 2^108, k = 44, 1e26 * 2^44 ~ 1.8e39 > f32::MAX. The contract
/// says a constant channel outputs beta exactly when eps > 0. Found by
/// batch_norm_train (seed `extremes`: a constant f32::MAX channel, eps 1e-45).
#[test]
fn constant_channel_with_huge_scaled_mean_outputs_beta() {
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for (value, eps, gamma) in [(1e26f32, 1e-5f32, 1e30f32), (f32::MAX, 1e-45, 1.0)] {
            let sh = BatchShape::new(layout, 2, 1, 2);
            let x = [value; 4];
            let (w, b) = ([gamma], [0.25f32]);
            for isa in Isa::available() {
                let mut y = [0.0f32; 4];
                let (mut mean, mut rstd) = ([0.0f32], [0.0f32]);
                BatchNorm::new()
                    .eps(eps)
                    .weight(&w)
                    .bias(&b)
                    .isa(isa)
                    .parallel(false)
                    .forward_train(
                        sh,
                        &x,
                        &mut y,
                        TrainStats {
                            saved_mean: &mut mean,
                            saved_rstd: &mut rstd,
                            running: None,
                        },
                    )
                    .unwrap();
                assert_eq!(mean[0], value, "{isa} {layout:?}");
                assert_eq!(
                    y, [b[0]; 4],
                    "{isa} {layout:?}: x = {value:e}, eps = {eps:e}, gamma = {gamma:e}"
                );
            }
        }
    }
}

/// The same overflow in inference: `x == running_mean == 1e38`, running
/// variance 1e-45, eps 0, gamma 1e30 (rstd ~2.7e22, a ~2^175, k = 111):
/// `z = 0`, so `y` must be beta; it is NaN.
/// Found by batch_norm_infer (seed `subnormal_var_big_weight`: mean 1e38,
/// variance 1e-45, eps 0, gamma 1e30).
#[test]
fn inference_at_the_mean_with_huge_scaled_mean_outputs_beta() {
    for layout in [Layout::Nchw, Layout::Nhwc] {
        for (value, var, eps, gamma) in [
            (1e26f32, 1.0f32, 1e-5f32, 1e30f32),
            (1e38, 1e-45, 0.0, 1e30),
        ] {
            let sh = BatchShape::new(layout, 1, 1, 3);
            let x = [value; 3];
            let (w, b) = ([gamma], [-2.0f32]);
            for isa in Isa::available() {
                let mut y = [0.0f32; 3];
                BatchNorm::new()
                    .eps(eps)
                    .weight(&w)
                    .bias(&b)
                    .isa(isa)
                    .forward_inference(sh, &x, &mut y, &[value], &[var])
                    .unwrap();
                assert_eq!(
                    y, [b[0]; 3],
                    "{isa} {layout:?}: x = rm = {value:e}, rv = {var:e}"
                );
            }
        }
    }
}

/// The NaN a BatchNorm output element gets is not the same bits on every
/// ISA: which operand's NaN (`x`'s own payload and sign, the coefficients'
/// NaN, or the CPU's default NaN, which is negative on x86) survives
/// `(x - hi) * a + b` depends on how each ISA's code orders the operands.
/// The contract promises the same bits as Portable; the row operators meet it
/// by writing one canonical NaN for a non-finite row. Found by
/// batch_norm_infer and batch_norm_train (NaN in x, NaN/inf running stats).
#[test]
fn nan_outputs_have_the_same_bits_on_every_isa() {
    let nans = [
        f32::NAN,
        -f32::NAN,
        f32::from_bits(0xffc0_1234),
        f32::from_bits(0x7f80_0001),
    ];
    let sh = BatchShape::new(Layout::Nhwc, 2, 3, 2);
    let x = [
        nans[0], 0.0, nans[1], 0.25, nans[2], 0.0, 0.0, nans[3], 0.0, 4e9, 0.0, 1.0,
    ];
    let (rm, rv) = (
        [f32::INFINITY, 0.25, f32::NEG_INFINITY],
        [-1.0, f32::NAN, f32::INFINITY],
    );
    let run_infer = |isa: Isa| {
        let mut y = [0.0f32; 12];
        BatchNorm::new()
            .isa(isa)
            .forward_inference(sh, &x, &mut y, &rm, &rv)
            .unwrap();
        y.map(f32::to_bits)
    };
    let run_train = |isa: Isa| {
        let (y, m, r) = train(BatchNorm::new().isa(isa), sh, &x);
        let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
        (bits(y), bits(m), bits(r))
    };
    let (want_infer, want_train) = (run_infer(Isa::Portable), run_train(Isa::Portable));
    let mut bad = Vec::new();
    for isa in Isa::available() {
        if run_infer(isa) != want_infer {
            bad.push(format!("inference on {isa}"));
        }
        if run_train(isa) != want_train {
            bad.push(format!("training on {isa}"));
        }
    }
    assert!(bad.is_empty(), "NaN bits differ from Portable: {bad:?}");
}

/// `x - mean` is computed in f32 by the output map, so it overflowed to ±inf
/// when `x` and the mean sit near ±f32::MAX on opposite sides, although
/// `(x - mean) * rstd` is finite: x = -3.3e38, running mean 1e38, running
/// variance 1e38 gave y = -inf where the reference is -4.9e19. Found by the
/// CI fuzz smoke (batch_norm_infer); fixed by recomputing such elements as
/// `(x/2 - mean/2) * 2a + b` (src/batch_norm/exec.rs). Both layouts, every
/// ISA, with weight and bias; the element that did not overflow keeps the
/// kernel's bits.
#[test]
fn difference_beyond_f32_max_stays_finite() {
    let (x0, x1, mean, var, eps) = (-3.314_973e38f32, 1e38f32, 1e38f32, 1e38f32, 7.8125e-3f32);
    let (gamma, beta) = (0.75f32, -2.0f32);
    for layout in [Layout::Nchw, Layout::Nhwc] {
        // Two channels: channel 0 holds the hard pair, channel 1 ordinary values.
        let sh = BatchShape::new(layout, 1, 2, 2);
        let x = match layout {
            Layout::Nchw => [x0, x1, 1.0, 2.0],
            Layout::Nhwc => [x0, 1.0, x1, 2.0],
        };
        let hard = match layout {
            Layout::Nchw => [0, 1],
            Layout::Nhwc => [0, 2],
        };
        for isa in Isa::available() {
            let mut y = [0.0f32; 4];
            BatchNorm::new()
                .eps(eps)
                .weight(&[gamma, 1.0])
                .bias(&[beta, 0.0])
                .isa(isa)
                .forward_inference(sh, &x, &mut y, &[mean, 1.5], &[var, 0.25])
                .unwrap();
            let rstd = 1.0 / (var as f64 + eps as f64).sqrt();
            for (i, &xi) in hard.iter().zip(&[x0, x1]) {
                let want = (xi as f64 - mean as f64) * rstd * gamma as f64 + beta as f64;
                assert!(
                    y[*i].is_finite(),
                    "{layout:?} {isa:?}: y = {}, want {want:e}",
                    y[*i]
                );
                let rel = ((y[*i] as f64 - want) / want).abs();
                assert!(
                    rel < 1e-6,
                    "{layout:?} {isa:?}: y = {:e}, want {want:e}",
                    y[*i]
                );
            }
            // x1 - mean = 0 exactly, so its output is beta to the bit.
            assert_eq!(y[hard[1]].to_bits(), beta.to_bits(), "{layout:?} {isa:?}");
        }
    }
}

/// The same overflow in training: a channel of {MAX, MAX, -MAX}-like values
/// has a batch mean near 1.1e38, and `-3.3e38 - mean` exceeds f32::MAX.
#[test]
fn training_difference_beyond_f32_max_stays_finite() {
    let v = 3.3e38f32;
    for layout in [Layout::Nchw, Layout::Nhwc] {
        let sh = BatchShape::new(layout, 3, 1, 1);
        let x = [v, v, -v];
        let xs: Vec<f64> = x.iter().map(|&t| t as f64).collect();
        let mean = xs.iter().sum::<f64>() / 3.0;
        let var = xs.iter().map(|t| (t - mean) * (t - mean)).sum::<f64>() / 3.0;
        let rstd = 1.0 / (var + 1e-5f32 as f64).sqrt();
        for isa in Isa::available() {
            let (y, _, _) = train(BatchNorm::new().isa(isa), sh, &x);
            for (k, (&yk, &xk)) in y.iter().zip(&xs).enumerate() {
                let want = (xk - mean) * rstd;
                assert!(
                    (yk as f64 - want).abs() < 1e-5,
                    "{layout:?} {isa:?} element {k}: y = {yk:e}, want {want:e}"
                );
            }
        }
    }
}

/// Training forward without running statistics: output, saved mean, saved rstd.
fn train(bn: BatchNorm<'_>, sh: BatchShape, x: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let c = sh.c;
    let (mut y, mut m, mut r) = (vec![0.0f32; x.len()], vec![0.0f32; c], vec![0.0f32; c]);
    bn.forward_train(
        sh,
        x,
        &mut y,
        TrainStats {
            saved_mean: &mut m,
            saved_rstd: &mut r,
            running: None,
        },
    )
    .unwrap();
    (y, m, r)
}
