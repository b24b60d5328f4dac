//! Criterion benches: every op of the bench tool's registry at a few shapes
//! (rows: L1-, L2-, L3- and just-past-L3-sized; BatchNorm: 32x64x56x56 and
//! 8x256x28x28, each as NCHW and NHWC), once per available ISA, next to a
//! `stream_copy` of the same bytes as the ceiling, in both read-ahead orders
//! (memory systems differ on which is faster). A group is `op/shape`
//! (`batch_norm_train/32x64x56x56/nhwc`), its functions the ISAs, `copy`
//! and `copy_pages`.
//! All report `Throughput::Bytes(read + written)`, so criterion's GB/s
//! compare directly.
//!
//! Everything runs on one rayon worker pinned to core 0: criterion measures
//! the kernels, and thread scaling is the bench tool's job
//! (`cargo run --release --example bench`). The op registry, data and pool
//! code are the bench tool's own modules, included by path, so an op added
//! there is benched here too.
//!
//! `cargo bench -- --quick`, or a filter such as `cargo bench -- rms_norm/512x1024`
//! or `cargo bench -- batch_norm_infer/8x256x28x28/nhwc`.

#[allow(dead_code)]
#[path = "../examples/bench/batch_norm.rs"]
mod batch_norm;
#[allow(dead_code)]
#[path = "../examples/bench/data.rs"]
mod data;
#[allow(dead_code)]
#[path = "../examples/bench/ops.rs"]
mod ops;
#[allow(dead_code)]
#[path = "../examples/bench/threads.rs"]
mod threads;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use simdnorm::{Isa, ReadAhead};
use std::time::{Duration, Instant};

/// Buffers at least this large (read + written) come from DRAM: fewer, longer
/// samples.
const DRAM_BYTES: usize = 32 << 20;

fn norms(c: &mut Criterion) {
    let pool = threads::pinned_pool(1).expect("a one-thread pool");
    for op in ops::OPS {
        let shapes = op
            .bench_shapes
            .iter()
            .flat_map(|label| op.parse_label(label, None).expect("built-in shapes parse"));
        for shape in shapes {
            let mut case = pool.install(|| (op.make)(&shape, 0));
            let bytes = case.in_bytes() + case.out_bytes();
            let copy_len = bytes.div_ceil(8);
            let src = data::filler(copy_len);
            let mut dst = data::zeros(copy_len);

            let mut group = c.benchmark_group(format!("{}/{shape}", op.name));
            group.throughput(Throughput::Bytes(bytes as u64));
            if bytes >= DRAM_BYTES {
                group.sample_size(10);
            }
            for isa in Isa::available() {
                group.bench_function(isa.name(), |b| {
                    b.iter_custom(|iters| {
                        pool.install(|| time(iters, || case.run(isa).expect("a valid case")))
                    })
                });
            }
            group.throughput(Throughput::Bytes((2 * 4 * copy_len) as u64));
            for (name, order) in [
                ("copy", ReadAhead::Sequential),
                ("copy_pages", ReadAhead::PageInterleaved),
            ] {
                group.bench_function(name, |b| {
                    b.iter_custom(|iters| {
                        pool.install(|| {
                            time(iters, || {
                                simdnorm::stream_copy_with(&src, &mut dst, order)
                                    .expect("equal lengths")
                            })
                        })
                    })
                });
            }
            group.finish();
        }
    }
}

/// Wall time of `iters` calls of `f`.
fn time(iters: u64, mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed()
}

criterion_group! {
    name = benches;
    // Short warm-up and measurement: the 64 benches (32 row, 32 BatchNorm on
    // a 3-ISA machine) should take a few minutes, not twenty.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = norms
}
criterion_main!(benches);
