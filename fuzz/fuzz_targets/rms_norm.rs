//! RMSNorm: every ISA against Portable bit for bit, Portable against the f64
//! reference, bad arguments against their typed errors (see `rows`).
#![no_main]

use simdnorm_fuzz::rows::{self, RowOp};

libfuzzer_sys::fuzz_target!(|data: &[u8]| rows::run(RowOp::RmsNorm, data));
