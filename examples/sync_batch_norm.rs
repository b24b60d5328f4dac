//! SyncBatchNorm on threads: each "rank" holds a shard of the batch (split
//! along N), computes its local per-channel moments, the ranks exchange them
//! (here through shared memory; in a real job an allgather over MPI, NCCL or
//! torch.distributed of `[count, mean…, m2…]`), merge them in rank order, and
//! normalize their own shard with the global statistics.
//!
//! The result is asserted bit-identical to one process running the whole
//! batch: the shards split at unit boundaries and hold the same power-of-two
//! number of units (for NCHW, `BatchNorm::nchw_unit_samples(spatial)`
//! samples; for NHWC, chunks of `BatchNorm::nhwc_chunk_rows(c)` rows), which
//! is the condition the module docs state.
//!
//! Run: `cargo run --release --example sync_batch_norm`

use simdnorm::{
    BatchNorm, BatchShape, ChannelMoments, Error, Layout, Momentum, RunningStats, TrainStats,
};
use std::sync::{Barrier, Mutex};

struct Result1 {
    y: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
    running_mean: Vec<f32>,
    running_var: Vec<f32>,
}

fn fresh(c: usize, len: usize) -> Result1 {
    Result1 {
        y: vec![0.0; len],
        mean: vec![0.0; c],
        rstd: vec![0.0; c],
        running_mean: vec![0.0; c],
        running_var: vec![1.0; c],
    }
}

fn stats<'a>(r: &'a mut Result1) -> (&'a mut [f32], TrainStats<'a>) {
    (
        &mut r.y,
        TrainStats {
            saved_mean: &mut r.mean,
            saved_rstd: &mut r.rstd,
            running: Some(RunningStats {
                mean: &mut r.running_mean,
                var: &mut r.running_var,
                momentum: Momentum::PyTorch(0.1),
            }),
        },
    )
}

fn run(layout: Layout, n: usize, c: usize, spatial: usize, ranks: usize) -> Result<(), Error> {
    let shape = BatchShape::new(layout, n, c, spatial);
    let len = shape.len()?;
    // Deterministic data with a per-channel offset.
    let x: Vec<f32> = (0..len)
        .map(|i| {
            let h = (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
            (h % 1000) as f32 / 100.0 + 50.0
        })
        .collect();
    let gamma: Vec<f32> = (0..c).map(|i| 1.0 + i as f32 / c as f32).collect();
    let beta: Vec<f32> = (0..c).map(|i| i as f32 * 0.01).collect();
    let bn = BatchNorm::new().weight(&gamma).bias(&beta);

    // One process, whole batch.
    let mut single = fresh(c, len);
    let (y, st) = stats(&mut single);
    bn.forward_train(shape, &x, y, st)?;

    // `ranks` threads, each with n / ranks samples.
    let local = BatchShape {
        n: n / ranks,
        ..shape
    };
    let shard_len = local.len()?;
    let board: Mutex<Vec<ChannelMoments>> = Mutex::new(vec![ChannelMoments::new(c); ranks]);
    let barrier = Barrier::new(ranks);
    let shards: Vec<Result1> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..ranks)
            .map(|rank| {
                let (x, board, barrier) = (&x[rank * shard_len..][..shard_len], &board, &barrier);
                s.spawn(move || -> Result<Result1, Error> {
                    // 1. Local moments of my shard.
                    let mut mine = ChannelMoments::new(c);
                    bn.local_moments(local, x, &mut mine)?;
                    // 2. "Allgather", then merge in rank order.
                    board.lock().expect("no panics")[rank] = mine;
                    barrier.wait();
                    let mut merged = ChannelMoments::new(c);
                    ChannelMoments::merge_ranks(&board.lock().expect("no panics"), &mut merged)?;
                    // 3. Apply with the global statistics.
                    let mut out = fresh(c, shard_len);
                    let (y, st) = stats(&mut out);
                    bn.apply_train(local, x, y, &merged, st)?;
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank panicked"))
            .collect::<Result<_, _>>()
    })?;

    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let y: Vec<f32> = shards.iter().flat_map(|r| r.y.iter().copied()).collect();
    assert_eq!(bits(&y), bits(&single.y), "output");
    for r in &shards {
        assert_eq!(bits(&r.mean), bits(&single.mean), "saved mean");
        assert_eq!(bits(&r.rstd), bits(&single.rstd), "saved rstd");
        assert_eq!(bits(&r.running_mean), bits(&single.running_mean));
        assert_eq!(bits(&r.running_var), bits(&single.running_var));
    }
    println!(
        "{layout:?} [n={n}, c={c}, spatial={spatial}] on {ranks} ranks: bit-identical to one process \
         (channel 0: mean {:.6}, rstd {:.6})",
        single.mean[0], single.rstd[0]
    );
    Ok(())
}

fn main() -> Result<(), Error> {
    // NCHW: units are blocks of `nchw_unit_samples(spatial)` samples (4 for
    // 28x28 planes, 64 for 7x7), so each rank's samples must be a
    // power-of-two number of units. (With 2 samples per rank of 28x28 planes
    // the ranks would still agree with each other, and with one process to
    // rounding, but not bit for bit.)
    let u = BatchNorm::nchw_unit_samples(28 * 28);
    run(Layout::Nchw, 4 * u, 32, 28 * 28, 4)?; // 4 ranks x 1 unit each
    let u = BatchNorm::nchw_unit_samples(7 * 7);
    run(Layout::Nchw, 6 * u, 16, 7 * 7, 3)?; // 3 ranks x 2 units each
    // NHWC: units are chunks of R rows, so each rank's rows must be a
    // power-of-two number of chunks: choose spatial as a multiple of R.
    // (With spatial = 28 * 28 a shard would hold 784 * samples rows, not a
    // whole number of chunks: the ranks would still agree with each other, and
    // with one process to rounding, but not bit for bit.)
    let c = 64;
    let r = BatchNorm::nhwc_chunk_rows(c);
    run(Layout::Nhwc, 8, c, 4 * r, 2)?; // 2 ranks x 4 samples x 4 chunks each
    run(Layout::Nhwc, 6, c, r, 3)?; // 3 ranks x 2 samples x 1 chunk each
    Ok(())
}
