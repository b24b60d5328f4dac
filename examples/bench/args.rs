//! Hand-written command-line parsing (the tool adds no dependencies).
//!
//! Every flag takes `--flag VALUE` or `--flag=VALUE`; list flags take a
//! comma list, repeat, or both. Anything wrong is a [`Usage`] error: the
//! caller prints it with a pointer to `--help` and exits with status 2.

use crate::ops::{self, Op, Shape};
use simdnorm::Isa;

/// What to run.
#[derive(Debug)]
pub struct Args {
    /// Ops with the shapes each runs, in report order.
    pub plan: Vec<(&'static Op, Vec<Shape>)>,
    /// ISAs to run, each available on this machine.
    pub isas: Vec<Isa>,
    /// Thread counts, each >= 1.
    pub threads: Vec<usize>,
    /// One JSON object per line instead of the table.
    pub json: bool,
    /// Fewer, shorter samples.
    pub quick: bool,
    /// Bytes past a page where the op's output starts; every other buffer
    /// starts on a page.
    pub offset: usize,
}

/// The outcome of parsing.
#[derive(Debug)]
pub enum Parsed {
    /// Run the benchmark.
    Run(Args),
    /// `--help`: print [`usage`] and exit 0.
    Help,
}

/// A command-line mistake, worded for the user.
#[derive(Debug)]
pub struct Usage(pub String);

fn usage_err<T>(msg: impl Into<String>) -> Result<T, Usage> {
    Err(Usage(msg.into()))
}

/// The `--help` text.
pub fn usage() -> String {
    let mut s = String::from(
        "simdnorm bench: time each op against a memory copy of the same bytes\n\
         \n\
         usage: cargo run --release --example bench -- [FLAGS]\n\
         \n\
         flags (list flags take a comma list and may repeat):\n\
         \x20 --op NAME          ops to run (default: all)\n\
         \x20 --shape SHAPE      shapes to run, in the op's syntax (default: built-in list);\n\
         \x20                    without --op, only the ops that accept the shape run\n\
         \x20 --layout NAME      nchw or nhwc: the memory layout of the BatchNorm ops\n\
         \x20                    (default: both); the row ops take none\n\
         \x20 --isa NAME|all     portable, avx2, avx512, neon, or every available one\n\
         \x20                    (default: the selected ISA: SIMDNORM_ISA or the best)\n\
         \x20 --threads N        thread counts (default: 1 and all cores)\n\
         \x20 --json             one JSON object per line: op, shape, dtype, isa, threads,\n\
         \x20                    ns_per_call, gbps, copy_gbps, ratio_to_copy, max_abs_err\n\
         \x20 --offset BYTES     where the op's output starts past a 4 KiB page, every\n\
         \x20                    other buffer starting on one (default 0; a multiple of 4\n\
         \x20                    below 4096): 4 KiB aliasing makes speed depend on it\n\
         \x20 --quick            fewer, shorter samples\n\
         \x20 --help             this text\n\
         \n\
         ops:\n",
    );
    for op in ops::OPS {
        s.push_str(&format!(
            "  {:<16} {}\n  {:<16} shape {}; built-in {}\n",
            op.name,
            op.about,
            "",
            op.shape_syntax,
            op.shapes.join(", ")
        ));
    }
    s.push_str(
        "\n\
         GB/s = (bytes read + bytes written) / time per call; copy GB/s is the fastest of\n\
         copy_from_slice (memcpy), simdnorm::stream_copy (stream) and the same with its\n\
         source read ahead pages interleaved (pages), over buffers of (read + written) / 2\n\
         bytes, split across the same threads; ratio = GB/s / copy GB/s.\n\
         batch_norm_train reads x twice (statistics, then output) but is credited with\n\
         one read, so out of cache its ratio tops out near 2/3.\n",
    );
    s
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, Usage> {
    let mut op_names: Vec<String> = Vec::new();
    let mut shape_specs: Vec<String> = Vec::new();
    let mut layout: Option<String> = None;
    let mut isa_names: Vec<String> = Vec::new();
    let mut thread_specs: Vec<String> = Vec::new();
    let (mut json, mut quick) = (false, false);
    let mut offset = 0;

    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_string(), Some(value.to_string()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |what: &str| -> Result<String, Usage> {
            match inline.clone().or_else(|| args.next()) {
                Some(v) if !v.is_empty() => Ok(v),
                _ => usage_err(format!("{flag} needs a value ({what})")),
            }
        };
        match flag.as_str() {
            "--op" => op_names.extend(list(&value("an op name")?)),
            "--shape" => shape_specs.extend(list(&value("e.g. 8192x4096")?)),
            "--layout" => {
                if layout.replace(value("e.g. nhwc")?).is_some() {
                    return usage_err("--layout given twice");
                }
            }
            "--isa" => isa_names.extend(list(&value("an ISA name or all")?)),
            "--threads" => thread_specs.extend(list(&value("a thread count")?)),
            "--offset" => offset = parse_offset(&value("bytes, e.g. 64")?)?,
            "--json" | "--quick" | "--help" | "-h" if inline.is_some() => {
                return usage_err(format!("{flag} takes no value"));
            }
            "--json" => json = true,
            "--quick" => quick = true,
            "--help" | "-h" => return Ok(Parsed::Help),
            _ if flag.starts_with('-') => return usage_err(format!("unknown flag {flag}")),
            _ => return usage_err(format!("unexpected argument {arg:?}")),
        }
    }

    Ok(Parsed::Run(Args {
        plan: plan(&op_names, &shape_specs, layout.as_deref())?,
        isas: isas(&isa_names)?,
        threads: threads(&thread_specs)?,
        json,
        quick,
        offset,
    }))
}

/// `--offset`: bytes past a page, a whole number of floats, inside a page.
fn parse_offset(value: &str) -> Result<usize, Usage> {
    match value.parse::<usize>() {
        Ok(bytes) if bytes.is_multiple_of(4) && bytes < crate::data::PAGE => Ok(bytes),
        _ => usage_err(format!(
            "--offset {value:?}: want bytes, a multiple of 4 below {}",
            crate::data::PAGE
        )),
    }
}

/// Splits a comma list, dropping empty items.
fn list(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
}

/// Pushes `item` unless it is already there.
fn push_unique<T: PartialEq>(v: &mut Vec<T>, item: T) {
    if !v.contains(&item) {
        v.push(item);
    }
}

/// Which shapes each op runs. Named ops must accept every shape given;
/// without `--op`, ops that cannot take the shapes are left out.
fn plan(
    op_names: &[String],
    shape_specs: &[String],
    layout: Option<&str>,
) -> Result<Vec<(&'static Op, Vec<Shape>)>, Usage> {
    let explicit = !op_names.is_empty();
    let mut chosen: Vec<&'static Op> = Vec::new();
    for name in op_names {
        match ops::find(name) {
            Some(op) => push_unique(&mut chosen, op),
            None => {
                let known: Vec<_> = ops::OPS.iter().map(|op| op.name).collect();
                return usage_err(format!("unknown op {name:?} (known: {})", known.join(", ")));
            }
        }
    }
    if !explicit {
        chosen = ops::OPS.iter().collect();
    }

    let mut plan = Vec::new();
    let mut rejections = Vec::new();
    for op in chosen {
        let parsed: Result<Vec<Vec<Shape>>, String> = if shape_specs.is_empty() {
            op.shapes
                .iter()
                .map(|label| op.parse_label(label, layout))
                .collect()
        } else {
            shape_specs
                .iter()
                .map(|spec| (op.parse_shape)(spec, layout))
                .collect()
        };
        match parsed {
            Ok(parsed) => {
                let mut shapes = Vec::new();
                for shape in parsed.into_iter().flatten() {
                    push_unique(&mut shapes, shape);
                }
                plan.push((op, shapes));
            }
            Err(e) if explicit => return usage_err(format!("--op {}: {e}", op.name)),
            Err(e) => rejections.push(format!("{}: {e}", op.name)),
        }
    }
    if plan.is_empty() {
        return usage_err(format!(
            "no op accepts these shapes/layout:\n  {}",
            rejections.join("\n  ")
        ));
    }
    Ok(plan)
}

/// `--isa`: names, `all`, or (default) the selected ISA.
fn isas(names: &[String]) -> Result<Vec<Isa>, Usage> {
    let mut isas = Vec::new();
    for name in names {
        if name.eq_ignore_ascii_case("all") {
            for isa in Isa::available() {
                push_unique(&mut isas, isa);
            }
            continue;
        }
        let isa: Isa = name.parse().map_err(|_| {
            let known: Vec<_> = Isa::ALL.iter().map(|isa| isa.name()).collect();
            Usage(format!(
                "unknown ISA {name:?} (known: {}, all)",
                known.join(", ")
            ))
        })?;
        if !isa.is_available() {
            return usage_err(format!(
                "ISA {isa} is not available on this machine (available: {})",
                available_names()
            ));
        }
        push_unique(&mut isas, isa);
    }
    if isas.is_empty() {
        isas.push(Isa::selected().map_err(|e| Usage(format!("SIMDNORM_ISA: {e}")))?);
    }
    Ok(isas)
}

/// The available ISAs as `a, b, c`.
pub fn available_names() -> String {
    let names: Vec<_> = Isa::available().iter().map(|isa| isa.name()).collect();
    names.join(", ")
}

/// `--threads`: positive counts, or (default) 1 and every core.
fn threads(specs: &[String]) -> Result<Vec<usize>, Usage> {
    let mut threads = Vec::new();
    for spec in specs {
        match spec.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => push_unique(&mut threads, n),
            _ => return usage_err(format!("bad thread count {spec:?} (want 1..=1024)")),
        }
    }
    if threads.is_empty() {
        threads.push(1);
        push_unique(&mut threads, cores());
    }
    Ok(threads)
}

/// Cores this process may run on.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
