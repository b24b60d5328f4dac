//! stream_copy, in both read-ahead orders: the copy must reproduce every bit
//! (NaN payloads, signed zeros, subnormals) at every length and alignment of
//! source and destination, write nothing outside the destination, and
//! refuse a length mismatch with `Error::Length` without writing.
//!
//! `stream_copy` runs on the selected ISA only, so this target covers one ISA
//! per process: fuzz/smoke.sh runs it once per available ISA with
//! `SIMDNORM_ISA` set.
#![no_main]

use simdnorm::{Error, Isa, ReadAhead};
use simdnorm_fuzz::oracle::expect_error;
use simdnorm_fuzz::rows::SENTINEL;
use simdnorm_fuzz::{Rng, Src, bits, values};

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let mut src = Src::new(data);
    let len = match src.u8() {
        0..=127 => src.below(100),
        128..=239 => {
            let base = src.pick(&[16usize, 32, 48, 64, 128, 256, 1024, 4096]);
            (base + src.below(33)).saturating_sub(16)
        }
        _ => src.below(1 << 17),
    };
    let dst_len = if src.chance(16) {
        src.below(2 * len + 2)
    } else {
        len
    };
    let (src_off, dst_off) = (src.below(16), src.below(16));
    let mut from = vec![SENTINEL; src_off + len + 1];
    let x = &mut from[src_off..src_off + len];
    match src.u8() % 3 {
        0 => x.iter_mut().for_each(|v| *v = f32::from_bits(src.u32())),
        1 => {
            let mut rng = Rng::new(src.u64());
            x.iter_mut()
                .for_each(|v| *v = f32::from_bits(rng.next_u64() as u32));
        }
        _ => values::fill_row(&mut src, x),
    }
    let from_before = bits(&from);
    let mut to = vec![SENTINEL; dst_off + dst_len + 1];
    let to_before = bits(&to);

    let order = if src.u8() % 2 == 0 {
        ReadAhead::Sequential
    } else {
        ReadAhead::PageInterleaved
    };
    let got = simdnorm::stream_copy_with(
        &from[src_off..src_off + len],
        &mut to[dst_off..dst_off + dst_len],
        order,
    );
    assert_eq!(bits(&from), from_before, "source changed");
    let ctx = format!(
        "len {len} -> {dst_len}, offsets {src_off} -> {dst_off}, {order:?}, isa {:?}",
        Isa::selected()
    );
    if simdnorm_fuzz::debug() {
        eprintln!("case: {ctx}");
    }
    if len != dst_len {
        let want = Error::Length {
            what: "stream_copy destination",
            expected: len,
            actual: dst_len,
        };
        expect_error(got, &want, &ctx);
        assert_eq!(bits(&to), to_before, "{ctx}: failed copy wrote");
        return;
    }
    if let Err(want) = Isa::selected() {
        expect_error(got, &want, &ctx);
        assert_eq!(bits(&to), to_before, "{ctx}: failed copy wrote");
        return;
    }
    assert_eq!(got, Ok(()), "{ctx}");
    let copied = &to[dst_off..dst_off + len];
    if let Some(i) = (0..len).find(|&i| copied[i].to_bits() != from[src_off + i].to_bits()) {
        panic!(
            "{ctx}: element {i} is {:#010x}, source {:#010x}",
            copied[i].to_bits(),
            from[src_off + i].to_bits()
        );
    }
    let outside = to[..dst_off].iter().chain(&to[dst_off + len..]);
    assert!(
        outside
            .into_iter()
            .all(|v| v.to_bits() == SENTINEL.to_bits()),
        "{ctx}: wrote outside the destination"
    );
}
