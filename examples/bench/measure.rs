//! The timing loop.
//!
//! Memory bandwidth drifts from one moment to the next (other processes,
//! frequency, the DRAM refresh), so the kernel is never timed alone: each
//! sample times a batch of `copy_from_slice` copies, a batch of
//! `stream_copy` copies and a batch of kernel calls back to back, and the
//! report takes the median of each over the samples. Batch sizes come from a
//! time budget: a short calibration finds the time of one call, then each
//! batch lasts about `budget / samples` (never fewer than one call).
//!
//! Everything runs inside one `pool.install`, so the calls pay no hand-off
//! into the pool, only the op's own splitting across the pool's workers.

use crate::ops::Case;
use crate::threads::{CopyKind, split_copy};
use rayon::ThreadPool;
use simdnorm::{Error, Isa};
use std::time::{Duration, Instant};

/// The fewest timed samples a median is taken over.
const MIN_SAMPLES: usize = 3;

/// How long to measure.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Time spent timing each of kernel, memcpy and stream copy, all samples
    /// together (exceeded when one call takes longer than a sample's share).
    pub per_measurement: Duration,
    /// Timed samples; the median is reported. Fewer (down to 3) when one
    /// call is too long for the budget.
    pub samples: usize,
}

impl Budget {
    /// ~150 ms per measurement, 7 samples: the default run.
    pub const FULL: Budget = Budget {
        per_measurement: Duration::from_millis(150),
        samples: 7,
    };
    /// `--quick`: ~30 ms, 3 samples.
    pub const QUICK: Budget = Budget {
        per_measurement: Duration::from_millis(30),
        samples: 3,
    };
}

/// Median times per call, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    /// The op.
    pub kernel_ns: f64,
    /// The fastest of the copies.
    pub copy_ns: f64,
    /// Which copy that was.
    pub copy_kind: CopyKind,
}

/// Times `case` on `isa` against a copy of `src` into `dst`, in `pool`.
pub fn measure(
    pool: &ThreadPool,
    case: &mut dyn Case,
    isa: Isa,
    src: &[f32],
    dst: &mut [f32],
    budget: Budget,
) -> Result<Timing, Error> {
    let per_sample = budget.per_measurement / budget.samples.max(1) as u32;
    pool.install(|| {
        let mut copy = |kind| split_copy(src, dst, kind);
        let mut kernel = || case.run(isa);
        let mut copy_calib = Vec::with_capacity(CopyKind::ALL.len());
        for kind in CopyKind::ALL {
            copy_calib.push(calibrate(&mut || copy(kind), per_sample)?);
        }
        let (kernel_iters, kernel_call) = calibrate(&mut kernel, per_sample)?;
        // Calls longer than a sample's share: fewer samples (never under
        // MIN_SAMPLES), so a 1 GiB shape does not take seconds per line.
        let longest = copy_calib.iter().map(|c| c.1).fold(kernel_call, f64::max);
        let affordable = (budget.per_measurement.as_secs_f64() * 1e9 / longest) as usize;
        let samples = affordable.clamp(MIN_SAMPLES, budget.samples.max(MIN_SAMPLES));
        let mut copy_ns = vec![Vec::with_capacity(samples); CopyKind::ALL.len()];
        let mut kernel_ns = Vec::with_capacity(samples);
        for _ in 0..samples {
            for ((kind, &(iters, _)), times) in
                CopyKind::ALL.iter().zip(&copy_calib).zip(&mut copy_ns)
            {
                times.push(batch(&mut || copy(*kind), iters)?);
            }
            // Last, so the op's output is what the error check reads.
            kernel_ns.push(batch(&mut kernel, kernel_iters)?);
        }
        let (copy_ns, copy_kind) = CopyKind::ALL
            .into_iter()
            .zip(copy_ns)
            .map(|(kind, times)| (median(times), kind))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .expect("at least one copy kind");
        Ok(Timing {
            kernel_ns: median(kernel_ns),
            copy_ns,
            copy_kind,
        })
    })
}

/// Calls per sample so that a sample lasts about `per_sample`, and the
/// time of one call in ns. After one warm-up call (caches, page tables, the
/// pool's sleeping workers) that already took longer than a sample, one call
/// per sample it is; otherwise doubles a batch until it lasts a quarter of
/// `per_sample`, and scales.
fn calibrate(
    f: &mut dyn FnMut() -> Result<(), Error>,
    per_sample: Duration,
) -> Result<(u64, f64), Error> {
    let target = per_sample.as_secs_f64() * 1e9;
    let warm_up = batch(f, 1)?;
    if warm_up >= target {
        return Ok((1, warm_up));
    }
    let mut iters = 1u64;
    loop {
        let per_call = batch(f, iters)?;
        if per_call * iters as f64 >= target / 4.0 || iters >= 1 << 30 {
            let scaled = (target / per_call.max(0.1)).round();
            return Ok(((scaled as u64).max(1), per_call));
        }
        iters *= 2;
    }
}

/// Nanoseconds per call of `iters` calls of `f` in a row.
fn batch(f: &mut dyn FnMut() -> Result<(), Error>, iters: u64) -> Result<f64, Error> {
    let start = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e9 / iters as f64)
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
