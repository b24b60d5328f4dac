//! BatchNorm against an f64 reference, across ISAs, thread counts, layouts and
//! the SyncBatchNorm partial-statistics path.

#![allow(clippy::needless_range_loop)]

use simdnorm::{
    BatchNorm, BatchShape, ChannelMoments, Error, Isa, Layout, Momentum, RunningStats, TrainStats,
};

const SMALL: bool = cfg!(target_arch = "aarch64");

/// xorshift64* with Box-Muller normals: deterministic test data.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
    fn vec(&mut self, len: usize, f: impl Fn(f64) -> f64) -> Vec<f32> {
        (0..len).map(|_| f(self.normal()) as f32).collect()
    }
}

/// Index of (n, c, s) in the layout.
fn idx(sh: BatchShape, n: usize, c: usize, s: usize) -> usize {
    match sh.layout {
        Layout::Nchw => (n * sh.c + c) * sh.spatial + s,
        Layout::Nhwc => (n * sh.spatial + s) * sh.c + c,
    }
}

/// Values of channel c.
fn channel(sh: BatchShape, x: &[f32], c: usize) -> Vec<f64> {
    let mut v = Vec::new();
    for n in 0..sh.n {
        for s in 0..sh.spatial {
            v.push(x[idx(sh, n, c, s)] as f64);
        }
    }
    v
}

/// f64 mean and biased variance per channel.
fn ref_stats(sh: BatchShape, x: &[f32]) -> Vec<(f64, f64)> {
    (0..sh.c)
        .map(|c| {
            let v = channel(sh, x, c);
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / v.len() as f64;
            (m, var)
        })
        .collect()
}

/// Checks `y` against `(x - mean) * rstd * w + b` with the crate's bound.
#[allow(clippy::too_many_arguments)]
fn check_output(
    sh: BatchShape,
    x: &[f32],
    y: &[f32],
    stats: &[(f64, f64)],
    w: Option<&[f32]>,
    b: Option<&[f32]>,
    eps: f32,
    rel: f64,
) {
    for n in 0..sh.n {
        for c in 0..sh.c {
            let (m, var) = stats[c];
            let rstd = 1.0 / (var + eps as f64).sqrt();
            let g = w.map_or(1.0, |w| w[c] as f64);
            let be = b.map_or(0.0, |b| b[c] as f64);
            for s in 0..sh.spatial {
                let i = idx(sh, n, c, s);
                let z = (x[i] as f64 - m) * rstd;
                let want = z * g + be;
                let bound = rel * (g.abs() * (1.0 + z.abs()) + be.abs());
                let err = (y[i] as f64 - want).abs();
                assert!(
                    err <= bound,
                    "{sh:?} n={n} c={c} s={s}: got {} want {want} err {err:e} > {bound:e}",
                    y[i]
                );
            }
        }
    }
}

struct Train {
    y: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    rm: Vec<f32>,
    rv: Vec<f32>,
}

fn train(bn: BatchNorm<'_>, sh: BatchShape, x: &[f32], momentum: Momentum) -> Train {
    let c = sh.c;
    let mut t = Train {
        y: vec![0.0; x.len()],
        mean: vec![0.0; c],
        rstd: vec![0.0; c],
        rm: (0..c).map(|i| i as f32 * 0.1).collect(),
        rv: (0..c).map(|i| 1.0 + i as f32 * 0.05).collect(),
    };
    bn.forward_train(
        sh,
        x,
        &mut t.y,
        TrainStats {
            saved_mean: &mut t.mean,
            saved_rstd: &mut t.rstd,
            running: Some(RunningStats {
                mean: &mut t.rm,
                var: &mut t.rv,
                momentum,
            }),
        },
    )
    .unwrap();
    t
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn same(a: &Train, b: &Train, what: &str) {
    assert_eq!(bits(&a.y), bits(&b.y), "{what}: output");
    assert_eq!(bits(&a.mean), bits(&b.mean), "{what}: saved mean");
    assert_eq!(bits(&a.rstd), bits(&b.rstd), "{what}: saved rstd");
    assert_eq!(bits(&a.rm), bits(&b.rm), "{what}: running mean");
    assert_eq!(bits(&a.rv), bits(&b.rv), "{what}: running var");
}

fn shapes() -> Vec<(usize, usize, usize)> {
    let mut v = vec![
        (2, 3, 5),
        (1, 4, 7),   // batch of 1, spatial > 1: valid in training
        (5, 17, 1),  // [N, C]
        (3, 16, 16), // multiple of LANES
        (4, 33, 9),
        (2, 1, 300),
        (7, 70, 3),
        (3, 5, 257),
        (70, 6, 49),  // NCHW units of 64 samples: one full, one partial
        (130, 4, 9),  // planes shorter than a vector, one partial unit of 256
        (9, 3, 1000), // units of 4 samples, the last of 1
        (3, 64, 7),   // NHWC: a 64-value period held in registers (4 vectors)
        (5, 32, 3),   // NHWC: a 32-value period (2 vectors)
        (3, 256, 7),  // NHWC: 16-vector periods, coefficients loaded per vector
        (2, 7, 300),  // NHWC: 7-vector periods (lcm 112)
    ];
    if !SMALL {
        v.push((6, 40, 24 * 24)); // big enough for threads
        v.push((300, 24, 1)); // many NHWC chunks (chunk rows = 256 here? no: 16384/24)
        v.push((2, 3, 100 * 100));
    }
    v
}

fn each_layout() -> [Layout; 2] {
    [Layout::Nchw, Layout::Nhwc]
}

#[test]
fn training_matches_reference_on_every_isa() {
    let mut rng = Rng(1);
    for (n, c, spatial) in shapes() {
        for layout in each_layout() {
            let sh = BatchShape::new(layout, n, c, spatial);
            let x = rng.vec(sh.len().unwrap(), |z| 3.0 + 2.0 * z);
            let w = rng.vec(c, |z| 1.0 + 0.5 * z);
            let b = rng.vec(c, |z| z);
            let eps = 1e-5;
            let bn = BatchNorm::new().eps(eps).weight(&w).bias(&b);
            let base = train(bn.isa(Isa::Portable), sh, &x, Momentum::PyTorch(0.1));
            let stats = ref_stats(sh, &x);
            check_output(sh, &x, &base.y, &stats, Some(&w), Some(&b), eps, 2e-6);
            let cnt = (n * spatial) as f64;
            for ch in 0..c {
                let (m, var) = stats[ch];
                let rstd = 1.0 / (var + eps as f64).sqrt();
                assert!((base.mean[ch] as f64 - m).abs() <= 1e-6 * (m.abs() + var.sqrt()));
                assert!(
                    (base.rstd[ch] as f64 - rstd).abs() <= 2e-6 * rstd,
                    "{sh:?} c={ch}"
                );
                let rm = 0.9 * (ch as f64 * 0.1) + 0.1 * m;
                let rv = 0.9 * (1.0 + ch as f64 * 0.05) + 0.1 * var * cnt / (cnt - 1.0);
                assert!((base.rm[ch] as f64 - rm).abs() <= 1e-6 * (1.0 + rm.abs()));
                assert!((base.rv[ch] as f64 - rv).abs() <= 1e-6 * (1.0 + rv.abs()));
            }
            for isa in Isa::available() {
                let t = train(bn.isa(isa), sh, &x, Momentum::PyTorch(0.1));
                same(&base, &t, &format!("{sh:?} {isa}"));
            }
            let t = train(bn.parallel(false), sh, &x, Momentum::PyTorch(0.1));
            same(&base, &t, &format!("{sh:?} serial"));
        }
    }
}

#[test]
fn inference_matches_reference_on_every_isa() {
    let mut rng = Rng(2);
    for (n, c, spatial) in shapes() {
        for layout in each_layout() {
            let sh = BatchShape::new(layout, n, c, spatial);
            let x = rng.vec(sh.len().unwrap(), |z| 3.0 + 2.0 * z);
            let w = rng.vec(c, |z| 1.0 + 0.5 * z);
            let b = rng.vec(c, |z| z);
            let rm = rng.vec(c, |z| 3.0 + 0.1 * z);
            let rv = rng.vec(c, |z| 4.0 + z.abs());
            for (wo, bo) in [
                (None, None),
                (Some(&w[..]), Some(&b[..])),
                (Some(&w[..]), None),
            ] {
                let mut bn = BatchNorm::new().eps(1e-3);
                if let Some(w) = wo {
                    bn = bn.weight(w);
                }
                if let Some(b) = bo {
                    bn = bn.bias(b);
                }
                let mut base = vec![0.0; x.len()];
                bn.isa(Isa::Portable)
                    .forward_inference(sh, &x, &mut base, &rm, &rv)
                    .unwrap();
                let stats: Vec<(f64, f64)> = (0..c).map(|i| (rm[i] as f64, rv[i] as f64)).collect();
                check_output(sh, &x, &base, &stats, wo, bo, 1e-3, 2e-6);
                for isa in Isa::available() {
                    let mut y = vec![0.0; x.len()];
                    bn.isa(isa)
                        .forward_inference(sh, &x, &mut y, &rm, &rv)
                        .unwrap();
                    assert_eq!(bits(&base), bits(&y), "{sh:?} {isa}");
                }
            }
        }
    }
}

#[test]
fn thread_counts_give_identical_bits() {
    let mut rng = Rng(3);
    let shapes = if SMALL {
        vec![(4, 8, 64 * 32)]
    } else {
        vec![
            (8, 32, 24 * 24),
            (16, 24, 33 * 17),
            (2, 3, 150 * 150),
            (200, 40, 7 * 7),
        ]
    };
    for (n, c, spatial) in shapes {
        for layout in each_layout() {
            let sh = BatchShape::new(layout, n, c, spatial);
            let x = rng.vec(sh.len().unwrap(), |z| 10.0 + z);
            let bn = BatchNorm::new();
            let run = |t: usize| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap()
                    .install(|| {
                        let tr = train(bn, sh, &x, Momentum::Onnx(0.9));
                        let mut yi = vec![0.0; x.len()];
                        bn.forward_inference(sh, &x, &mut yi, &tr.rm, &tr.rv)
                            .unwrap();
                        (tr, yi)
                    })
            };
            let (base, base_inf) = run(1);
            for t in [2, 3] {
                let (tr, yi) = run(t);
                same(&base, &tr, &format!("{sh:?} {t} threads"));
                assert_eq!(bits(&base_inf), bits(&yi), "{sh:?} {t} threads inference");
            }
        }
    }
}

#[test]
fn running_statistics_conventions_over_steps() {
    let mut rng = Rng(4);
    let (n, c, spatial) = (3, 5, 11);
    for layout in each_layout() {
        let sh = BatchShape::new(layout, n, c, spatial);
        for conv in 0..3 {
            let (mut rm, mut rv) = (vec![0.0f32; c], vec![1.0f32; c]);
            let (mut em, mut ev) = (vec![0.0f64; c], vec![1.0f64; c]);
            for step in 0..6u64 {
                let x = rng.vec(sh.len().unwrap(), |z| step as f64 + 0.5 * z);
                let momentum = match conv {
                    0 => Momentum::PyTorch(0.1),
                    1 => Momentum::Onnx(0.9),
                    _ => Momentum::Cumulative { batches_seen: step },
                };
                let (mut sm, mut sr, mut y) = (vec![0.0; c], vec![0.0; c], vec![0.0; x.len()]);
                BatchNorm::new()
                    .forward_train(
                        sh,
                        &x,
                        &mut y,
                        TrainStats {
                            saved_mean: &mut sm,
                            saved_rstd: &mut sr,
                            running: Some(RunningStats {
                                mean: &mut rm,
                                var: &mut rv,
                                momentum,
                            }),
                        },
                    )
                    .unwrap();
                let cnt = (n * spatial) as f64;
                for (ch, (m, var)) in ref_stats(sh, &x).into_iter().enumerate() {
                    let unbiased = var * cnt / (cnt - 1.0);
                    let (a, bm, bv) = match conv {
                        0 => (0.9, 0.1 * m, 0.1 * unbiased),
                        1 => (0.9, 0.1 * m, 0.1 * var),
                        _ => {
                            let f = 1.0 / (step as f64 + 1.0);
                            (1.0 - f, f * m, f * unbiased)
                        }
                    };
                    em[ch] = a * em[ch] + bm;
                    ev[ch] = a * ev[ch] + bv;
                    // The f32 running values carry one rounding per step.
                    assert!((rm[ch] as f64 - em[ch]).abs() <= 1e-6 * (1.0 + em[ch].abs()));
                    assert!((rv[ch] as f64 - ev[ch]).abs() <= 1e-6 * (1.0 + ev[ch].abs()));
                }
            }
            if conv == 2 {
                // Cumulative with 6 batches: the running mean is the plain
                // average of the batch means.
                assert!(em.iter().all(|m| (m - 2.5).abs() < 0.5));
            }
        }
    }
}

/// NCHW data transposed to NHWC.
fn to_nhwc(sh: BatchShape, x: &[f32]) -> Vec<f32> {
    let t = BatchShape {
        layout: Layout::Nhwc,
        ..sh
    };
    let mut out = vec![0.0; x.len()];
    for n in 0..sh.n {
        for c in 0..sh.c {
            for s in 0..sh.spatial {
                out[idx(t, n, c, s)] = x[idx(sh, n, c, s)];
            }
        }
    }
    out
}

#[test]
fn nchw_and_nhwc_agree() {
    let mut rng = Rng(5);
    for (n, c, spatial) in shapes() {
        let sh = BatchShape::new(Layout::Nchw, n, c, spatial);
        let x = rng.vec(sh.len().unwrap(), |z| -7.0 + 3.0 * z);
        let xt = to_nhwc(sh, &x);
        let th = BatchShape {
            layout: Layout::Nhwc,
            ..sh
        };
        let a = train(BatchNorm::new(), sh, &x, Momentum::PyTorch(0.1));
        let b = train(BatchNorm::new(), th, &xt, Momentum::PyTorch(0.1));
        for ch in 0..c {
            let scale = 1.0 / a.rstd[ch] as f64;
            assert!((a.mean[ch] - b.mean[ch]).abs() as f64 <= 1e-6 * (7.0 + scale));
            assert!(((a.rstd[ch] - b.rstd[ch]) / a.rstd[ch]).abs() <= 2e-6);
        }
        assert_eq!(to_nhwc(sh, &a.y).len(), b.y.len());
        let at = to_nhwc(sh, &a.y);
        for (u, v) in at.iter().zip(&b.y) {
            assert!((u - v).abs() <= 4e-6 * (1.0 + u.abs()));
        }
    }
}

#[test]
fn one_value_per_channel_is_an_error() {
    for layout in each_layout() {
        let sh = BatchShape::new(layout, 1, 4, 1);
        let x = [1.0f32, 2.0, 3.0, 4.0];
        let (mut y, mut m, mut r) = ([0.0; 4], [0.0; 4], [0.0; 4]);
        let res = BatchNorm::new().forward_train(
            sh,
            &x,
            &mut y,
            TrainStats {
                saved_mean: &mut m,
                saved_rstd: &mut r,
                running: None,
            },
        );
        assert_eq!(res, Err(Error::SingleValuePerChannel { count: 1 }));
        // Inference is fine.
        BatchNorm::new()
            .forward_inference(sh, &x, &mut y, &[0.0; 4], &[1.0; 4])
            .unwrap();
        // A batch of one with spatial > 1 trains.
        let sh = BatchShape::new(layout, 1, 2, 2);
        let res = BatchNorm::new().forward_train(
            sh,
            &x,
            &mut y,
            TrainStats {
                saved_mean: &mut m[..2],
                saved_rstd: &mut r[..2],
                running: None,
            },
        );
        assert_eq!(res, Ok(()));
    }
}

#[test]
fn large_mean_channels_stay_accurate() {
    let mut rng = Rng(6);
    let shapes = if SMALL {
        vec![(4, 19, 40)]
    } else {
        vec![(8, 19, 100), (4, 64, 33), (600, 20, 1), (150, 12, 49)]
    };
    for (n, c, spatial) in shapes {
        for layout in each_layout() {
            let sh = BatchShape::new(layout, n, c, spatial);
            let x = rng.vec(sh.len().unwrap(), |z| 1000.0 + z);
            let t = train(BatchNorm::new(), sh, &x, Momentum::PyTorch(0.1));
            let stats = ref_stats(sh, &x);
            let mut worst = 0.0f64;
            for n_ in 0..n {
                for ch in 0..c {
                    let (m, var) = stats[ch];
                    let rstd = 1.0 / (var + 1e-5).sqrt();
                    for s in 0..spatial {
                        let i = idx(sh, n_, ch, s);
                        worst = worst.max((t.y[i] as f64 - (x[i] as f64 - m) * rstd).abs());
                    }
                }
            }
            assert!(worst < 1e-5, "{sh:?}: max error {worst:e}");
            // Inference with the exact statistics rounded to f32.
            let rm: Vec<f32> = stats.iter().map(|s| s.0 as f32).collect();
            let rv: Vec<f32> = stats.iter().map(|s| s.1 as f32).collect();
            let mut y = vec![0.0; x.len()];
            BatchNorm::new()
                .forward_inference(sh, &x, &mut y, &rm, &rv)
                .unwrap();
            let st: Vec<(f64, f64)> = (0..c).map(|i| (rm[i] as f64, rv[i] as f64)).collect();
            check_output(sh, &x, &y, &st, None, None, 1e-5, 2e-6);
        }
    }
}

#[test]
fn non_finite_channel_leaves_others_untouched() {
    let mut rng = Rng(7);
    for (n, c, spatial) in [(3, 20, 9), (4, 3, 1), (2, 33, 40)] {
        for layout in each_layout() {
            let sh = BatchShape::new(layout, n, c, spatial);
            let x = rng.vec(sh.len().unwrap(), |z| z);
            for bad in [f32::NAN, f32::INFINITY] {
                let mut xb = x.clone();
                xb[idx(sh, n - 1, 1, spatial / 2)] = bad;
                let good = train(BatchNorm::new(), sh, &x, Momentum::PyTorch(0.1));
                let t = train(BatchNorm::new(), sh, &xb, Momentum::PyTorch(0.1));
                for ch in 0..c {
                    let vals: Vec<f32> = (0..n)
                        .flat_map(|n_| (0..spatial).map(move |s| (n_, s)))
                        .map(|(n_, s)| t.y[idx(sh, n_, ch, s)])
                        .collect();
                    if ch == 1 {
                        assert!(vals.iter().all(|v| v.is_nan()), "{sh:?}");
                        assert!(t.mean[ch].is_nan() && t.rstd[ch].is_nan());
                        assert!(t.rm[ch].is_nan() && t.rv[ch].is_nan());
                    } else {
                        let want: Vec<f32> = (0..n)
                            .flat_map(|n_| (0..spatial).map(move |s| (n_, s)))
                            .map(|(n_, s)| good.y[idx(sh, n_, ch, s)])
                            .collect();
                        assert_eq!(bits(&vals), bits(&want), "{sh:?} channel {ch}");
                        assert_eq!(t.mean[ch].to_bits(), good.mean[ch].to_bits());
                        assert_eq!(t.rv[ch].to_bits(), good.rv[ch].to_bits());
                    }
                }
            }
        }
    }
}

#[test]
fn constant_channel_outputs_bias() {
    for layout in each_layout() {
        let sh = BatchShape::new(layout, 4, 3, 70);
        let x: Vec<f32> = (0..sh.len().unwrap())
            .map(|i| {
                let c = match layout {
                    Layout::Nchw => (i / 70) % 3,
                    Layout::Nhwc => i % 3,
                };
                [0.1f32, 1234.567, -3.0][c]
            })
            .collect();
        let b = [0.25f32, -1.5, 7.0];
        let t = train(BatchNorm::new().bias(&b), sh, &x, Momentum::PyTorch(0.1));
        for (i, v) in t.y.iter().enumerate() {
            let c = match layout {
                Layout::Nchw => (i / 70) % 3,
                Layout::Nhwc => i % 3,
            };
            assert_eq!(*v, b[c], "{layout:?} at {i}");
        }
        assert_eq!(t.mean, [0.1, 1234.567, -3.0]);
    }
}

/// Shards along N, each computing local moments; merged in rank order; then
/// applied: bit-identical to the single process.
#[test]
fn partial_statistics_match_single_process() {
    let mut rng = Rng(8);
    let c = 24;
    let r = BatchNorm::nhwc_chunk_rows(c);
    let u = BatchNorm::nchw_unit_samples;
    // (layout, spatial, samples per shard, shards): NCHW shards hold a
    // power-of-two number of units of `u(spatial)` samples; NHWC shards a
    // power-of-two number of chunks (spatial * samples a multiple of r).
    let cases = [
        (Layout::Nchw, 9, u(9), 3),
        (Layout::Nchw, 50, 2 * u(50), 2),
        (Layout::Nchw, 700, 2 * u(700), 3),
        (Layout::Nchw, 2048, 1, 5),
        (Layout::Nchw, 3000, 2, 3),
        (Layout::Nhwc, r, 1, 3),
        (Layout::Nhwc, r / 2, 4, 3),
        (Layout::Nhwc, r, 2, 2),
    ];
    for (layout, spatial, per, shards) in cases {
        let n = per * shards;
        let sh = BatchShape::new(layout, n, c, spatial);
        let x = rng.vec(sh.len().unwrap(), |z| 5.0 + z);
        let w = rng.vec(c, |z| 1.0 + 0.1 * z);
        let bn = BatchNorm::new().weight(&w);
        let single = train(bn, sh, &x, Momentum::PyTorch(0.1));
        let local = BatchShape { n: per, ..sh };
        let shard_len = local.len().unwrap();
        let parts: Vec<ChannelMoments> = x
            .chunks(shard_len)
            .map(|xs| {
                let mut m = ChannelMoments::new(0);
                bn.local_moments(local, xs, &mut m).unwrap();
                m
            })
            .collect();
        let mut merged = ChannelMoments::new(c);
        ChannelMoments::merge_ranks(&parts, &mut merged).unwrap();
        let mut whole = ChannelMoments::new(c);
        bn.local_moments(sh, &x, &mut whole).unwrap();
        assert_eq!(merged, whole, "{layout:?} spatial {spatial} x{shards}");
        let mut y = vec![0.0; x.len()];
        for (k, (xs, ys)) in x.chunks(shard_len).zip(y.chunks_mut(shard_len)).enumerate() {
            let mut t = Train {
                y: vec![],
                mean: vec![0.0; c],
                rstd: vec![0.0; c],
                rm: (0..c).map(|i| i as f32 * 0.1).collect(),
                rv: (0..c).map(|i| 1.0 + i as f32 * 0.05).collect(),
            };
            bn.apply_train(
                local,
                xs,
                ys,
                &merged,
                TrainStats {
                    saved_mean: &mut t.mean,
                    saved_rstd: &mut t.rstd,
                    running: Some(RunningStats {
                        mean: &mut t.rm,
                        var: &mut t.rv,
                        momentum: Momentum::PyTorch(0.1),
                    }),
                },
            )
            .unwrap();
            assert_eq!(bits(&t.mean), bits(&single.mean), "shard {k}");
            assert_eq!(bits(&t.rstd), bits(&single.rstd), "shard {k}");
            assert_eq!(bits(&t.rm), bits(&single.rm), "shard {k}");
            assert_eq!(bits(&t.rv), bits(&single.rv), "shard {k}");
        }
        assert_eq!(bits(&y), bits(&single.y));
        // Any other split still agrees to rounding.
        let mut left = parts[0].clone();
        for p in &parts[1..] {
            left.merge(p).unwrap();
        }
        assert_eq!(left.count, whole.count);
        for ch in 0..c {
            assert!((left.mean[ch] - whole.mean[ch]).abs() <= 1e-12 * 6.0);
            assert!((left.m2[ch] - whole.m2[ch]).abs() <= 1e-12 * whole.m2[ch]);
        }
    }
}

#[test]
fn bad_arguments_are_typed_errors() {
    let sh = BatchShape::new(Layout::Nchw, 2, 3, 4);
    let x = vec![1.0f32; 24];
    let mut y = vec![0.0f32; 24];
    let (rm, rv) = ([0.0f32; 3], [1.0f32; 3]);
    let bn = BatchNorm::new();
    assert!(matches!(
        bn.forward_inference(sh, &x[..23], &mut y, &rm, &rv),
        Err(Error::Length { what: "input", .. })
    ));
    assert!(matches!(
        bn.forward_inference(sh, &x, &mut y[..20], &rm, &rv),
        Err(Error::Length { what: "output", .. })
    ));
    assert!(matches!(
        bn.forward_inference(sh, &x, &mut y, &rm[..2], &rv),
        Err(Error::Length {
            what: "running mean",
            ..
        })
    ));
    assert!(matches!(
        bn.forward_inference(sh, &x, &mut y, &rm, &[1.0; 4]),
        Err(Error::Length {
            what: "running var",
            ..
        })
    ));
    assert!(matches!(
        bn.weight(&[1.0; 2])
            .forward_inference(sh, &x, &mut y, &rm, &rv),
        Err(Error::Length { what: "weight", .. })
    ));
    for eps in [-1.0, f32::NAN, f32::INFINITY] {
        assert!(matches!(
            bn.eps(eps).forward_inference(sh, &x, &mut y, &rm, &rv),
            Err(Error::Eps { .. })
        ));
    }
    let big = BatchShape::new(Layout::Nhwc, usize::MAX, 2, 2);
    assert!(matches!(
        bn.forward_inference(big, &x, &mut y, &rm, &rv),
        Err(Error::TooLarge { .. })
    ));
    for m in [-0.1, 1.5, f32::NAN] {
        for momentum in [Momentum::PyTorch(m), Momentum::Onnx(m)] {
            let (mut a, mut b, mut sm, mut sr) = (rm, rv, [0.0; 3], [0.0; 3]);
            let res = bn.forward_train(
                sh,
                &x,
                &mut y,
                TrainStats {
                    saved_mean: &mut sm,
                    saved_rstd: &mut sr,
                    running: Some(RunningStats {
                        mean: &mut a,
                        var: &mut b,
                        momentum,
                    }),
                },
            );
            assert!(matches!(res, Err(Error::Momentum { .. })), "{momentum:?}");
        }
    }
    let (mut sm, mut sr, mut a, mut b) = ([0.0; 2], [0.0; 3], [0.0; 3], [0.0; 4]);
    let res = bn.forward_train(
        sh,
        &x,
        &mut y,
        TrainStats {
            saved_mean: &mut sm,
            saved_rstd: &mut sr,
            running: None,
        },
    );
    assert!(matches!(
        res,
        Err(Error::Length {
            what: "saved mean",
            ..
        })
    ));
    let mut sm = [0.0; 3];
    let res = bn.forward_train(
        sh,
        &x,
        &mut y,
        TrainStats {
            saved_mean: &mut sm,
            saved_rstd: &mut sr,
            running: Some(RunningStats {
                mean: &mut a,
                var: &mut b,
                momentum: Momentum::Cumulative { batches_seen: 3 },
            }),
        },
    );
    assert!(matches!(
        res,
        Err(Error::Length {
            what: "running var",
            ..
        })
    ));
    let merged = ChannelMoments::new(2);
    let res = bn.apply_train(
        sh,
        &x,
        &mut y,
        &merged,
        TrainStats {
            saved_mean: &mut sm,
            saved_rstd: &mut sr,
            running: None,
        },
    );
    assert!(matches!(
        res,
        Err(Error::Length {
            what: "merged moments",
            ..
        })
    ));
    let mut merged = ChannelMoments::new(3);
    merged.count = 1;
    let res = bn.apply_train(
        sh,
        &x,
        &mut y,
        &merged,
        TrainStats {
            saved_mean: &mut sm,
            saved_rstd: &mut sr,
            running: None,
        },
    );
    assert_eq!(res, Err(Error::SingleValuePerChannel { count: 1 }));
    assert!(BatchShape::from_dims(Layout::Nchw, &[3]).is_err());
    assert_eq!(
        BatchShape::from_dims(Layout::Nchw, &[2, 3, 4, 5]).unwrap(),
        BatchShape::new(Layout::Nchw, 2, 3, 20)
    );
    // Empty input is a no-op.
    let empty = BatchShape::new(Layout::Nhwc, 0, 3, 4);
    bn.forward_inference(empty, &[], &mut [], &rm, &rv).unwrap();
}

#[test]
fn fold_matches_its_formula() {
    let mut rng = Rng(9);
    let c = 37;
    let w = rng.vec(c, |z| 1.0 + 0.3 * z);
    let b = rng.vec(c, |z| z);
    let rm = rng.vec(c, |z| z * 5.0);
    let rv = rng.vec(c, |z| 1.0 + z.abs());
    let (mut scale, mut shift) = (vec![0.0; c], vec![0.0; c]);
    let bn = BatchNorm::new().eps(1e-3).weight(&w).bias(&b);
    bn.fold(&rm, &rv, &mut scale, &mut shift).unwrap();
    for i in 0..c {
        let a = w[i] as f64 / (rv[i] as f64 + 1e-3).sqrt();
        assert!((scale[i] as f64 - a).abs() <= 1e-7 * a.abs());
        let sft = b[i] as f64 - rm[i] as f64 * a;
        assert!((shift[i] as f64 - sft).abs() <= 1e-7 * (1.0 + sft.abs()));
    }
    // x * scale + shift is the inference output to the fold's own precision.
    let sh = BatchShape::new(Layout::Nhwc, 3, c, 5);
    let x = rng.vec(sh.len().unwrap(), |z| z * 5.0);
    let mut y = vec![0.0; x.len()];
    bn.forward_inference(sh, &x, &mut y, &rm, &rv).unwrap();
    for (i, (&xv, &yv)) in x.iter().zip(&y).enumerate() {
        let folded = xv * scale[i % c] + shift[i % c];
        assert!((folded - yv).abs() <= 1e-5 * (1.0 + yv.abs() + (xv * scale[i % c]).abs()));
    }
    assert!(matches!(
        bn.fold(&rm, &rv[..3], &mut scale, &mut shift),
        Err(Error::Length { .. })
    ));
}

#[test]
fn streaming_sized_outputs_match_portable() {
    if SMALL {
        return;
    }
    // 16 MiB of output and more switches to non-temporal stores.
    let mut rng = Rng(10);
    for layout in each_layout() {
        let sh = BatchShape::new(layout, 2, 40, 230 * 230);
        let x = rng.vec(sh.len().unwrap(), |z| z);
        let base = train(
            BatchNorm::new().isa(Isa::Portable),
            sh,
            &x,
            Momentum::PyTorch(0.1),
        );
        let t = train(
            BatchNorm::new().isa(Isa::best()),
            sh,
            &x,
            Momentum::PyTorch(0.1),
        );
        same(&base, &t, "streaming");
        let stats = ref_stats(sh, &x);
        check_output(sh, &x, &t.y, &stats, None, None, 1e-5, 2e-6);
    }
}

/// Channels of extreme magnitude (huge, tiny, subnormal) next to ordinary
/// ones: squares of deviations overflow or underflow f32 unless the kernels
/// rescale, and with `eps = 0` the subnormal channels' `rstd * gamma` is
/// beyond f32. Every layout and ISA must stay within the bound of the f64
/// reference and give the bits of `Portable`.
#[test]
fn extreme_magnitude_channels_match_reference() {
    let mut rng = Rng(11);
    let scales = [1e30, 1e-30, 1e-40, 1.0, 1e37, 1e-42, 1e-20, 1e15];
    let c = scales.len();
    let shapes = if SMALL {
        vec![(3, 40), (70, 9)]
    } else {
        vec![(3, 100), (70, 9), (2, 49), (600, 1)]
    };
    for (n, spatial) in shapes {
        for layout in each_layout() {
            let sh = BatchShape::new(layout, n, c, spatial);
            let mut x = vec![0.0f32; sh.len().unwrap()];
            for (ch, &sc) in scales.iter().enumerate() {
                for n_ in 0..n {
                    for s in 0..spatial {
                        x[idx(sh, n_, ch, s)] = (sc * (0.5 + rng.normal())) as f32;
                    }
                }
            }
            let w = rng.vec(c, |z| 1.0 + 0.3 * z);
            let b = rng.vec(c, |z| z);
            let stats = ref_stats(sh, &x);
            for eps in [0.0f32, 1e-5] {
                let bn = BatchNorm::new().eps(eps).weight(&w).bias(&b);
                let base = train(bn.isa(Isa::Portable), sh, &x, Momentum::PyTorch(0.1));
                check_output(sh, &x, &base.y, &stats, Some(&w), Some(&b), eps, 2e-6);
                for ch in 0..c {
                    let (m, var) = stats[ch];
                    let got = base.mean[ch] as f64;
                    // The saved mean is an f32: subnormal means round to a
                    // multiple of 2^-149.
                    let ulp = f32::from_bits(1) as f64;
                    assert!(
                        (got - m).abs() <= 1e-6 * (m.abs() + var.sqrt()) + ulp,
                        "{sh:?} eps {eps} channel {ch}: mean {got:e}, want {m:e}"
                    );
                }
                for isa in Isa::available() {
                    let t = train(bn.isa(isa), sh, &x, Momentum::PyTorch(0.1));
                    same(&base, &t, &format!("{sh:?} eps {eps} {isa}"));
                }
                let t = train(bn.parallel(false), sh, &x, Momentum::PyTorch(0.1));
                same(&base, &t, &format!("{sh:?} eps {eps} serial"));
            }
        }
    }
}
