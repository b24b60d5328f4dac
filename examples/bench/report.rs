//! The two output formats: an aligned table for people, JSON lines for
//! scripts.

use crate::threads::CopyKind;
use std::fmt::Write as _;

/// One measured line of the report.
#[derive(Clone, Debug)]
pub struct Row {
    /// Op name.
    pub op: &'static str,
    /// Shape label, e.g. `8192x4096` or `32x64x56x56/nhwc`.
    pub shape: String,
    /// Element type.
    pub dtype: &'static str,
    /// ISA name.
    pub isa: &'static str,
    /// Threads in the pool.
    pub threads: usize,
    /// Median time of one call.
    pub ns_per_call: f64,
    /// Bytes read + written per call, over `ns_per_call`.
    pub gbps: f64,
    /// The same for the fastest copy.
    pub copy_gbps: f64,
    /// Which copy that was.
    pub copy_kind: CopyKind,
    /// `gbps / copy_gbps`.
    pub ratio_to_copy: f64,
    /// Largest error against the f64 reference.
    pub max_abs_err: f64,
}

/// The table's column titles, aligned like [`table_row`].
pub fn table_header() -> String {
    format!(
        "{:<16} {:<16} {:<5} {:<8} {:>3} {:>11} {:>8} {:>16} {:>6} {:>9}",
        "op", "shape", "dtype", "isa", "thr", "time/call", "GB/s", "copy GB/s", "ratio", "max_err"
    )
}

/// One table line.
pub fn table_row(r: &Row) -> String {
    format!(
        "{:<16} {:<16} {:<5} {:<8} {:>3} {:>11} {:>8.2} {:>9.2} {:<6} {:>6.3} {:>9.2e}",
        r.op,
        r.shape,
        r.dtype,
        r.isa,
        r.threads,
        duration(r.ns_per_call),
        r.gbps,
        r.copy_gbps,
        r.copy_kind.name(),
        r.ratio_to_copy,
        r.max_abs_err
    )
}

/// A time with a unit that keeps 3-4 significant digits.
fn duration(ns: f64) -> String {
    if ns < 1e3 {
        format!("{ns:.1} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.3} s", ns / 1e9)
    }
}

/// One JSON object with exactly the documented fields, no trailing newline.
pub fn json_row(r: &Row) -> String {
    let mut s = String::from("{");
    let _ = write!(
        s,
        "\"op\":{},\"shape\":{},\"dtype\":{},\"isa\":{},\"threads\":{},",
        json_str(r.op),
        json_str(&r.shape),
        json_str(r.dtype),
        json_str(r.isa),
        r.threads
    );
    let _ = write!(
        s,
        "\"ns_per_call\":{},\"gbps\":{},\"copy_gbps\":{},\"ratio_to_copy\":{},\"max_abs_err\":{}",
        json_num(round_to(r.ns_per_call, 1)),
        json_num(round_to(r.gbps, 3)),
        json_num(round_to(r.copy_gbps, 3)),
        json_num(round_to(r.ratio_to_copy, 4)),
        json_num(r.max_abs_err)
    );
    s.push('}');
    s
}

/// A JSON string literal.
fn json_str(v: &str) -> String {
    let mut s = String::from("\"");
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(s, "\\u{:04x}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// `v` rounded to `digits` decimals (timings carry no more); dividing by a
/// power of ten gives the double nearest the short decimal.
fn round_to(v: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (v * scale).round() / scale
}

/// A JSON number in Rust's shortest round-trip form (plain, or with an
/// exponent outside 1e-4..1e15; both are valid JSON), or `null` for NaN and
/// infinities, which JSON cannot hold.
fn json_num(v: f64) -> String {
    if !v.is_finite() {
        "null".to_string()
    } else if v == 0.0 || (1e-4..1e15).contains(&v.abs()) {
        format!("{v}")
    } else {
        format!("{v:e}")
    }
}
