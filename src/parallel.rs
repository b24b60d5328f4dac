//! Spreading rows over threads.
//!
//! Rows are independent and each row's result is computed the same way
//! whichever thread runs it, so any split gives the same bits; the split only
//! decides speed. Work is cut in halves (rayon `join`) until a block is below
//! [`MIN_ELEMS_PER_TASK`], so tiny inputs never pay for a thread hand-off and
//! large ones balance by work stealing. The threshold is an estimate, not yet
//! tuned: single rows ([1,768], [1,4096]) take the same time at 1 and 2
//! threads in the bench tool, so they do not hand off, but the crossover
//! itself has not been measured.

use crate::kernels::RowJob;

/// Below this many elements a call runs on the caller's thread: roughly the
/// few microseconds of LayerNorm work (at the ~0.25 ns per element the bench
/// tool shows for [1,4096]) that a rayon hand-off is expected to cost; the
/// hand-off cost itself was not measured.
pub(crate) const MIN_ELEMS_PER_TASK: usize = 1 << 15;

/// Runs `kernel` over `job`, split across the current rayon pool when the
/// `rayon` feature is on, `parallel` is set and the job is big enough.
pub(crate) fn run_rows(kernel: fn(RowJob<'_>), job: RowJob<'_>, parallel: bool) {
    #[cfg(feature = "rayon")]
    if parallel && rayon::current_num_threads() > 1 {
        return split(kernel, job);
    }
    let _ = parallel;
    kernel(job)
}

#[cfg(feature = "rayon")]
fn split(kernel: fn(RowJob<'_>), job: RowJob<'_>) {
    let elems = job.rows.saturating_mul(job.cols);
    if job.rows < 2 || elems < 2 * MIN_ELEMS_PER_TASK {
        return kernel(job);
    }
    let half = job.rows / 2;
    let (lo, hi) = job.split_at(half);
    rayon::join(|| split(kernel, lo), || split(kernel, hi));
}
