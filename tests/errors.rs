//! Every bad argument returns the right typed error, names the argument and
//! the numbers in its message, never panics, and writes nothing.

mod common;

use common::*;
use simdnorm::{Error, Isa, ReadAhead, Rows, RowsMut};

/// Runs `f` and turns a panic into a test failure naming the case, so a
/// panicking validation path is reported as such.
#[track_caller]
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(_) => panic!("{what}: panicked instead of returning an error"),
    }
}

/// Asserts the message of `e` mentions each of `parts`.
#[track_caller]
fn assert_message(e: &Error, parts: &[&str]) {
    let msg = e.to_string();
    for p in parts {
        assert!(msg.contains(p), "message {msg:?} does not mention {p:?}");
    }
}

#[test]
fn rows_length_mismatch() {
    let buf = [0.0f32; 7];
    let e = Rows::new(&buf[..5], 2, 3).unwrap_err();
    assert_eq!(
        e,
        Error::Length {
            what: "input",
            expected: 6,
            actual: 5
        }
    );
    assert_message(&e, &["input", "5", "6"]);
    // A contiguous matrix must match exactly: a longer buffer is a wrong shape.
    let e = Rows::new(&buf, 2, 3).unwrap_err();
    assert_eq!(
        e,
        Error::Length {
            what: "input",
            expected: 6,
            actual: 7
        }
    );
    // A strided one needs (rows - 1) * stride + cols and may sit in more.
    let e = Rows::with_stride(&buf[..6], 2, 3, 4).unwrap_err();
    assert_eq!(
        e,
        Error::Length {
            what: "input",
            expected: 7,
            actual: 6
        }
    );
    assert!(Rows::with_stride(&buf, 2, 3, 4).is_ok());
    assert!(Rows::with_stride(&buf, 1, 3, 5).is_ok());
    assert!(Rows::new(&[], 0, 3).is_ok());
}

#[test]
fn rows_mut_length_mismatch() {
    let mut buf = [0.0f32; 7];
    let e = RowsMut::new(&mut buf[..5], 2, 3).unwrap_err();
    assert_eq!(
        e,
        Error::Length {
            what: "output",
            expected: 6,
            actual: 5
        }
    );
    assert_message(&e, &["output", "5", "6"]);
    assert!(matches!(
        RowsMut::new(&mut buf, 2, 3),
        Err(Error::Length {
            what: "output",
            expected: 6,
            actual: 7
        })
    ));
    assert!(matches!(
        RowsMut::with_stride(&mut buf[..6], 2, 3, 4),
        Err(Error::Length {
            what: "output",
            expected: 7,
            actual: 6
        })
    ));
    assert!(RowsMut::with_stride(&mut buf, 2, 3, 4).is_ok());
}

#[test]
fn stride_shorter_than_a_row() {
    let mut buf = [0.0f32; 16];
    let e = Rows::with_stride(&buf, 2, 5, 4).unwrap_err();
    assert_eq!(
        e,
        Error::Stride {
            what: "input",
            stride: 4,
            cols: 5
        }
    );
    assert_message(&e, &["input", "4", "5"]);
    // Even with no rows, a stride below cols is a caller bug.
    assert!(matches!(
        Rows::with_stride(&[], 0, 5, 4),
        Err(Error::Stride { .. })
    ));
    let e = RowsMut::with_stride(&mut buf, 3, 3, 0).unwrap_err();
    assert_eq!(
        e,
        Error::Stride {
            what: "output",
            stride: 0,
            cols: 3
        }
    );
    assert_message(&e, &["output", "0", "3"]);
}

#[test]
fn overflowing_shapes() {
    let mut empty: [f32; 0] = [];
    let cases: [(usize, usize, usize); 5] = [
        (usize::MAX, 2, 2),
        (2, usize::MAX, usize::MAX),
        (2, 1, usize::MAX),
        (usize::MAX, usize::MAX, usize::MAX),
        (usize::MAX / 2 + 2, 1, 2),
    ];
    for (rows, cols, stride) in cases {
        let what = format!("[{rows}, {cols}] stride {stride}");
        let e = no_panic(&what, || Rows::with_stride(&empty, rows, cols, stride)).unwrap_err();
        assert_eq!(e, Error::TooLarge { what: "input" }, "{what}");
        assert_message(&e, &["input", "overflow"]);
        let e = no_panic(&what, || {
            RowsMut::with_stride(&mut empty, rows, cols, stride)
        })
        .unwrap_err();
        assert_eq!(e, Error::TooLarge { what: "output" }, "{what}");
    }
    // Contiguous forms: rows * cols overflows.
    assert_eq!(
        Rows::new(&empty, usize::MAX, 2).unwrap_err(),
        Error::TooLarge { what: "input" }
    );
    assert_eq!(
        RowsMut::new(&mut empty, 3, usize::MAX / 2).unwrap_err(),
        Error::TooLarge { what: "output" }
    );
    // Fits exactly in usize: a length error, not an overflow.
    assert_eq!(
        Rows::new(&empty, usize::MAX, 1).unwrap_err(),
        Error::Length {
            what: "input",
            expected: usize::MAX,
            actual: 0
        }
    );
}

/// Runs every entry point of `op` with `p` on the given buffers; each must
/// fail with `want` and leave the output untouched.
#[track_caller]
#[allow(clippy::too_many_arguments)]
fn assert_every_entry_fails(
    op: Op,
    p: &Params<'_>,
    x: &[f32],
    (rows, cols): (usize, usize),
    (out_rows, out_cols): (usize, usize),
    mean_len: usize,
    rstd_len: usize,
    want: &dyn Fn(&Error) -> bool,
) {
    let what = format!("{op:?} on {:?}", p.isa);
    let fill = sentinel();
    let mut y = vec![fill; out_rows * out_cols];
    let mut mean = vec![fill; mean_len];
    let mut rstd = vec![fill; rstd_len];
    let xr = Rows::new(x, rows, cols).unwrap();
    let r = no_panic(&what, || {
        op.forward(p, xr, RowsMut::new(&mut y, out_rows, out_cols).unwrap())
    });
    assert!(r.as_ref().is_err_and(want), "{what} forward: {r:?}");
    let r = no_panic(&what, || {
        op.forward_train(
            p,
            xr,
            RowsMut::new(&mut y, out_rows, out_cols).unwrap(),
            &mut mean,
            &mut rstd,
        )
    });
    assert!(r.as_ref().is_err_and(want), "{what} train: {r:?}");
    assert!(
        y.iter()
            .chain(&mean)
            .chain(&rstd)
            .all(|v| v.to_bits() == fill.to_bits()),
        "{what}: an error path wrote to the output"
    );
}

#[test]
fn output_shape_must_match_input() {
    let x = vec![1.0f32; 6];
    for op in Op::ALL {
        for isa in Isa::available() {
            let p = Params::new(isa, 1e-5);
            for out in [(3, 2), (2, 4), (1, 6), (0, 3)] {
                let want = |e: &Error| {
                    *e == Error::Shape {
                        what: "output vs input",
                        expected: vec![2, 3],
                        actual: vec![out.0, out.1],
                    }
                };
                assert_every_entry_fails(op, &p, &x, (2, 3), out, 2, 2, &want);
            }
        }
    }
    let e = Error::Shape {
        what: "output vs input",
        expected: vec![2, 3],
        actual: vec![3, 2],
    };
    assert_message(&e, &["output vs input", "[2, 3]", "[3, 2]"]);
}

#[test]
fn weight_and_bias_must_have_cols_elements() {
    let x = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let short = [1.0f32; 2];
    let long = [1.0f32; 4];
    let ok = [1.0f32; 3];
    for isa in Isa::available() {
        for op in Op::ALL {
            for bad in [&short[..], &long[..], &[][..]] {
                let p = Params::new(isa, 1e-5).affine(Some(bad), None);
                let want = |e: &Error| {
                    *e == Error::Length {
                        what: "weight",
                        expected: 3,
                        actual: bad.len(),
                    }
                };
                assert_every_entry_fails(op, &p, &x, (2, 3), (2, 3), 2, 2, &want);
            }
        }
        for bad in [&short[..], &long[..]] {
            let p = Params::new(isa, 1e-5).affine(Some(&ok), Some(bad));
            let want = |e: &Error| {
                *e == Error::Length {
                    what: "bias",
                    expected: 3,
                    actual: bad.len(),
                }
            };
            assert_every_entry_fails(Op::Layer, &p, &x, (2, 3), (2, 3), 2, 2, &want);
        }
    }
    let e = Error::Length {
        what: "bias",
        expected: 3,
        actual: 4,
    };
    assert_message(&e, &["bias", "3", "4"]);
}

#[test]
fn eps_must_be_finite_and_non_negative() {
    let x = vec![1.0f32, 2.0, 3.0, 4.0];
    for isa in Isa::available() {
        for op in Op::ALL {
            for eps in [
                -1e-5f32,
                -f32::MIN_POSITIVE,
                f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
            ] {
                let p = Params::new(isa, eps);
                let want = |e: &Error| match e {
                    Error::Eps { eps: got } => got.to_bits() == eps.to_bits(),
                    _ => false,
                };
                assert_every_entry_fails(op, &p, &x, (2, 2), (2, 2), 2, 2, &want);
                // Also checked when there are no rows to normalize.
                let mut y: [f32; 0] = [];
                let r = op.forward(
                    &p,
                    Rows::new(&[], 0, 2).unwrap(),
                    RowsMut::new(&mut y, 0, 2).unwrap(),
                );
                assert!(matches!(r, Err(Error::Eps { .. })), "{op:?} {eps}: {r:?}");
            }
            // -0.0 is >= 0.
            let y = op.run(&Params::new(isa, -0.0), &x, 2);
            assert!(y.iter().all(|v| v.is_finite()));
        }
    }
    let e = Error::Eps { eps: -0.5 };
    assert_message(&e, &["eps", "-0.5"]);
}

#[test]
fn zero_cols_with_rows_is_empty_rows() {
    for isa in Isa::available() {
        for op in Op::ALL {
            for rows in [1, 5] {
                let p = Params::new(isa, 1e-5).affine(Some(&[]), None);
                let want = |e: &Error| *e == Error::EmptyRows { rows };
                assert_every_entry_fails(op, &p, &[], (rows, 0), (rows, 0), rows, rows, &want);
                let mut y: [f32; 0] = [];
                let r = op.forward_in_place(&p, RowsMut::new(&mut y, rows, 0).unwrap());
                assert_eq!(r, Err(Error::EmptyRows { rows }));
            }
        }
    }
    assert_message(&Error::EmptyRows { rows: 5 }, &["5", "0"]);
}

#[test]
fn zero_rows_is_ok_and_touches_nothing() {
    for isa in Isa::available() {
        for op in Op::ALL {
            let w = [2.0f32; 4];
            let p = Params::new(isa, 1e-5).affine(Some(&w), None);
            // A strided view of zero rows inside a longer buffer.
            let mut buf = vec![sentinel(); 9];
            let x = [1.0f32; 9];
            op.forward(
                &p,
                Rows::with_stride(&x, 0, 4, 5).unwrap(),
                RowsMut::with_stride(&mut buf, 0, 4, 5).unwrap(),
            )
            .unwrap();
            op.forward_in_place(&p, RowsMut::with_stride(&mut buf, 0, 4, 6).unwrap())
                .unwrap();
            let (mut mean, mut rstd) = ([0.0f32; 0], [0.0f32; 0]);
            op.forward_train(
                &p,
                Rows::new(&[], 0, 4).unwrap(),
                RowsMut::with_stride(&mut buf, 0, 4, 7).unwrap(),
                &mut mean,
                &mut rstd,
            )
            .unwrap();
            assert!(
                buf.iter().all(|v| v.to_bits() == sentinel().to_bits()),
                "{op:?} {isa}: zero rows wrote to the buffer"
            );
        }
    }
}

#[test]
fn saved_statistics_must_have_one_value_per_row() {
    let x = vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    for isa in Isa::available() {
        let p = Params::new(isa, 1e-5);
        for bad in [0, 1, 3] {
            let mut y = vec![sentinel(); 6];
            let (mut mean, mut rstd) = (vec![sentinel(); bad], vec![sentinel(); 2]);
            let r = Op::Layer.forward_train(
                &p,
                Rows::new(&x, 2, 3).unwrap(),
                RowsMut::new(&mut y, 2, 3).unwrap(),
                &mut mean,
                &mut rstd,
            );
            let want = Error::Length {
                what: "saved mean",
                expected: 2,
                actual: bad,
            };
            assert_eq!(r, Err(want), "{isa}");
            assert!(
                y.iter()
                    .chain(&rstd)
                    .all(|v| v.to_bits() == sentinel().to_bits())
            );
            for op in Op::ALL {
                let want = |e: &Error| {
                    *e == Error::Length {
                        what: "saved rstd",
                        expected: 2,
                        actual: bad,
                    }
                };
                // RMSNorm has no mean: only its rstd length matters.
                let mut y = vec![sentinel(); 6];
                let (mut mean, mut rstd) = (vec![sentinel(); 2], vec![sentinel(); bad]);
                let r = op.forward_train(
                    &p,
                    Rows::new(&x, 2, 3).unwrap(),
                    RowsMut::new(&mut y, 2, 3).unwrap(),
                    &mut mean,
                    &mut rstd,
                );
                assert!(r.as_ref().is_err_and(want), "{op:?} {isa}: {r:?}");
                assert!(y.iter().all(|v| v.to_bits() == sentinel().to_bits()));
            }
        }
    }
    let e = Error::Length {
        what: "saved rstd",
        expected: 2,
        actual: 3,
    };
    assert_message(&e, &["saved rstd", "2", "3"]);
}

const READ_AHEADS: [ReadAhead; 2] = [ReadAhead::Sequential, ReadAhead::PageInterleaved];

#[test]
fn stream_copy_checks_length_and_copies_bits() {
    let src: Vec<f32> = (0..1000).map(|i| i as f32 * 0.5 - 7.0).collect();
    let mut dst = vec![sentinel(); 999];
    let e = simdnorm::stream_copy(&src, &mut dst).unwrap_err();
    assert_eq!(
        e,
        Error::Length {
            what: "stream_copy destination",
            expected: 1000,
            actual: 999
        }
    );
    assert_message(&e, &["stream_copy destination", "1000", "999"]);
    for order in READ_AHEADS {
        let e2 = simdnorm::stream_copy_with(&src, &mut dst, order).unwrap_err();
        assert_eq!(e2, e, "{order:?}");
    }
    assert!(dst.iter().all(|v| v.to_bits() == sentinel().to_bits()));
    // Every length around the vector width, every start offset, and NaN
    // payloads, bit for bit; nothing past the end is written.
    let mut src = src;
    src[3] = sentinel();
    src[500] = f32::from_bits(0xffc0_0001);
    // Past 1000 values the source repeats, long enough to cross the
    // page-interleaved read-ahead's 32 KiB blocks a few times.
    let src: Vec<f32> = src.iter().cycle().take(40_000).copied().collect();
    let lens = (0..70).chain([255, 256, 257, 1000 - 16, 8192 - 1, 8192 + 17, 40_000 - 15]);
    for (len, order) in lens.flat_map(|len| READ_AHEADS.map(|order| (len, order))) {
        for off in [0, 1, 5, 15] {
            let mut buf = vec![0.0f32; len + off + 2];
            simdnorm::stream_copy_with(&src[off..off + len], &mut buf[off..off + len], order)
                .unwrap();
            assert_eq!(
                bits(&buf[off..off + len]),
                bits(&src[off..off + len]),
                "len {len} offset {off} {order:?}"
            );
            assert!(
                buf[..off]
                    .iter()
                    .chain(&buf[off + len..])
                    .all(|&v| v == 0.0)
            );
        }
    }
}

#[test]
fn errors_are_std_errors_and_cloneable() {
    let e: Box<dyn std::error::Error + Send + Sync> = Box::new(Error::TooLarge { what: "input" });
    assert!(e.source().is_none());
    let a = Error::UnknownIsa {
        value: "sse9".into(),
    };
    assert_eq!(a.clone(), a);
    assert_message(&a, &["sse9"]);
    assert_message(&Error::IsaUnavailable { isa: "neon" }, &["neon"]);
}
