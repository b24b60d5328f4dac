//! `cargo run --release --example bench [-- FLAGS]`: the number this crate
//! exists for. For each op, shape, ISA and thread count it prints the time of
//! one call, the bandwidth that time implies, the bandwidth of a plain memory
//! copy of the same bytes measured in the same process on the same threads,
//! their ratio, and the largest error against the f64 reference.
//!
//! Normalization of anything bigger than the caches is memory-bound, so the
//! copy is the ceiling, and the ratio says how close an op gets: 1.0 means
//! it runs at copy speed. Copy and op are timed in alternation (see
//! [`measure`]) because bandwidth drifts; numbers are medians.
//!
//! Layout of the tool: [`ops`] is the registry (add an op there; the
//! BatchNorm ops and their f64 reference are in [`batch_norm`]), [`args`]
//! the command line, [`threads`] the pinned pools and the split copy,
//! [`measure`] the timing loop, [`report`] the table and JSON lines, [`data`]
//! aligned buffers and seeded normal inputs. `benches/norms.rs` (criterion)
//! reuses `data`, `ops` and `threads`.

mod args;
mod batch_norm;
mod data;
mod measure;
mod ops;
mod report;
mod threads;

use args::{Args, Parsed};
use measure::Budget;
use rayon::ThreadPool;
use simdnorm::Isa;
use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            print!("{}", args::usage());
            return ExitCode::SUCCESS;
        }
        Err(args::Usage(msg)) => {
            eprintln!("bench: {msg}\nTry --help.");
            return ExitCode::from(2);
        }
    };
    // stream_copy (the ceiling) runs on the selected ISA whatever --isa says,
    // so a bad SIMDNORM_ISA is a usage error even with --isa.
    if let Err(e) = Isa::selected() {
        eprintln!("bench: SIMDNORM_ISA: {e}\nTry --help.");
        return ExitCode::from(2);
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("bench: {msg}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the plan and prints as it goes.
fn run(args: &Args) -> Result<(), String> {
    let budget = if args.quick {
        Budget::QUICK
    } else {
        Budget::FULL
    };
    let pools = args
        .threads
        .iter()
        .map(|&n| threads::pinned_pool(n).map(|pool| (n, pool)))
        .collect::<Result<Vec<(usize, ThreadPool)>, String>>()?;
    // Inputs are filled on the widest pool: 512 MiB of normals is seconds on
    // one core.
    let widest = &pools
        .iter()
        .max_by_key(|(n, _)| *n)
        .ok_or("no thread counts")?
        .1;

    // In JSON mode stdout carries nothing but the JSON lines.
    let note = |line: String| {
        if args.json {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    };
    for line in header(args, budget) {
        note(line);
    }
    if !args.json {
        println!("{}", report::table_header());
    }

    for &(op, ref shapes) in &args.plan {
        for shape in shapes {
            let mut case = widest.install(|| (op.make)(shape, args.offset));
            let (in_bytes, out_bytes) = (case.in_bytes(), case.out_bytes());
            // Copy (in + out) / 2 bytes, so the copy moves the op's bytes.
            let copy_len = (in_bytes + out_bytes).div_ceil(8);
            let src = widest.install(|| data::filler(copy_len));
            // The copy runs page to page whatever --offset says: the ceiling
            // is the copy at its best placement.
            let mut dst = data::zeros(copy_len);
            for &isa in &args.isas {
                for (threads, pool) in &pools {
                    let t = measure::measure(pool, case.as_mut(), isa, &src, &mut dst, budget)
                        .map_err(|e| format!("{} {shape} on {isa}: {e}", op.name))?;
                    case.verify()
                        .map_err(|e| format!("{} {shape} on {isa}: wrong {e}", op.name))?;
                    let gbps = (in_bytes + out_bytes) as f64 / t.kernel_ns;
                    let copy_gbps = (2 * 4 * copy_len) as f64 / t.copy_ns;
                    let row = report::Row {
                        op: op.name,
                        shape: shape.to_string(),
                        dtype: "f32",
                        isa: isa.name(),
                        threads: *threads,
                        ns_per_call: t.kernel_ns,
                        gbps,
                        copy_gbps,
                        copy_kind: t.copy_kind,
                        ratio_to_copy: gbps / copy_gbps,
                        max_abs_err: case.max_abs_err(),
                    };
                    if args.json {
                        println!("{}", report::json_row(&row));
                    } else {
                        println!("{}", report::table_row(&row));
                    }
                    let _ = std::io::stdout().flush();
                }
            }
            if let Some(checked) = case.checked()
                && !args.json
            {
                println!("  ({} {shape}: max_err over {checked})", op.name);
            }
        }
    }

    let failures = threads::pin_failures();
    if failures > 0 {
        eprintln!(
            "bench: note: {failures} pool worker(s) ran unpinned \
             (more threads than cores, or the OS refused)"
        );
    }
    Ok(())
}

/// The lines above the table: machine, ISAs, threads, method.
fn header(args: &Args, budget: Budget) -> Vec<String> {
    let selected = Isa::selected().map_or("none".to_string(), |isa| isa.to_string());
    let running: Vec<_> = args.isas.iter().map(|isa| isa.name()).collect();
    let threads: Vec<_> = args.threads.iter().map(usize::to_string).collect();
    let pinning = if threads::can_pin() {
        "worker i pinned to core i"
    } else {
        "unpinned: no core list from the OS"
    };
    vec![
        format!("simdnorm bench, f32 ({} build)", build_kind()),
        format!(
            "cpu:      {} ({} cores available)",
            cpu_model(),
            args::cores()
        ),
        format!(
            "isa:      available {}; selected {selected}; running {}",
            args::available_names(),
            running.join(", ")
        ),
        format!(
            "threads:  {} (a rayon pool each, {pinning}; rayon default {})",
            threads.join(", "),
            rayon::current_num_threads()
        ),
        format!(
            "timing:   median of {} samples (3 for long calls), ~{} ms per measurement, \
             copies and op interleaved",
            budget.samples,
            budget.per_measurement.as_millis()
        ),
        "GB/s:     (bytes read + bytes written) / time per call; copy: the fastest of \
         copy_from_slice (memcpy) and stream_copy reading in order (stream) or pages \
         interleaved (pages), over the same bytes, on the same threads"
            .to_string(),
        format!(
            "buffers:  each on a 4 KiB page, the op's output {} bytes past one (--offset); \
             the copy page to page",
            args.offset
        ),
        "max_err:  vs an f64 reference (simdnorm::reference; the tool's own for BatchNorm); \
         big shapes check a sample of leading rows or of channels"
            .to_string(),
        String::new(),
    ]
}

/// `release` or `debug`: debug timings mean nothing, so say so.
fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "DEBUG build: timings are meaningless, use --release"
    } else {
        "release"
    }
}

/// The `model name` line of /proc/cpuinfo, where there is one.
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".to_string())
}
