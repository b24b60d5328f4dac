//! Thread-count independence: the same bits from rayon pools of 1, 2 and 3
//! threads and with `.parallel(false)`, on shapes big enough to be split
//! (well above the operators' per-task threshold), for every entry point,
//! every ISA, LayerNorm and RMSNorm.

mod common;

use common::*;
use simdnorm::{Isa, Rows, RowsMut};

/// Output, saved mean and saved rstd of one call.
type Run = (Vec<f32>, Vec<f32>, Vec<f32>);

#[derive(Clone, Copy, Debug)]
enum Entry {
    Forward,
    InPlace,
    Train,
}

fn call(op: Op, p: &Params<'_>, entry: Entry, x: &[f32], rows: usize, cols: usize) -> Run {
    let mut mean = vec![0.0f32; rows];
    let mut rstd = vec![0.0f32; rows];
    let y = match entry {
        Entry::Forward => op.run(p, x, cols),
        Entry::InPlace => {
            let mut y = x.to_vec();
            op.forward_in_place(p, RowsMut::new(&mut y, rows, cols).unwrap())
                .unwrap();
            y
        }
        Entry::Train => {
            let mut y = vec![0.0f32; x.len()];
            op.forward_train(
                p,
                Rows::new(x, rows, cols).unwrap(),
                RowsMut::new(&mut y, rows, cols).unwrap(),
                &mut mean,
                &mut rstd,
            )
            .unwrap();
            y
        }
    };
    (y, mean, rstd)
}

fn pool(threads: usize) -> rayon::ThreadPool {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool")
}

fn check_shape(rows: usize, cols: usize, seed: u64) {
    let mut rng = Prng::new(seed);
    // Mixed classes so rows take different paths (scaled, constant, ...).
    let classes = [Class::Normal, Class::Mean1e4, Class::Huge, Class::Constant];
    let mut x = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        x.extend(classes[r % classes.len()].row(&mut rng, cols));
    }
    let w = weight_vec(&mut rng, cols);
    let b = bias_vec(&mut rng, cols);
    let pools: Vec<(usize, rayon::ThreadPool)> = [1, 2, 3].map(|n| (n, pool(n))).into();
    let isas = Isa::available();
    // Under qemu, one non-Portable ISA is enough to cover the split paths.
    let isas = if SLOW {
        &isas[isas.len() - 1..]
    } else {
        &isas[..]
    };
    for op in Op::ALL {
        let bias = (op == Op::Layer).then_some(&b[..]);
        for &isa in isas {
            let p = Params::new(isa, 1e-5).affine(Some(&w), bias);
            for entry in [Entry::Forward, Entry::InPlace, Entry::Train] {
                let what = format!("{op:?} {isa} {entry:?} [{rows}, {cols}]");
                // The reference run: one thread, no splitting at all.
                let serial = {
                    let mut q = p;
                    q.parallel = false;
                    pools[0].1.install(|| call(op, &q, entry, &x, rows, cols))
                };
                for (n, pool) in &pools {
                    for parallel in [true, false] {
                        let mut q = p;
                        q.parallel = parallel;
                        let got = pool.install(|| call(op, &q, entry, &x, rows, cols));
                        let what = format!("{what} on {n} threads, parallel={parallel}");
                        assert_same_bits(&got.0, &serial.0, &format!("{what}: output"));
                        assert_same_bits(&got.1, &serial.1, &format!("{what}: mean"));
                        assert_same_bits(&got.2, &serial.2, &format!("{what}: rstd"));
                    }
                }
            }
        }
    }
}

#[test]
fn many_rows_same_bits_on_any_thread_count() {
    check_shape(257, 1024, 40);
}

#[test]
fn wide_rows_same_bits_on_any_thread_count() {
    check_shape(64, 4097, 41);
}

#[test]
fn many_short_rows_same_bits_on_any_thread_count() {
    check_shape(if SLOW { 4100 } else { 20_000 }, 17, 42);
}
