//! The crate's one error type. Every bad argument from the public API ends
//! here, with the argument named and the numbers that disagree.

use core::fmt;

/// What was wrong with a call. Nothing in the public API panics on bad input;
/// it returns one of these instead.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Error {
    /// A buffer is too short (or too long) for the shape it was given with.
    Length {
        /// The argument, e.g. `"input"`, `"weight"`, `"saved rstd"`.
        what: &'static str,
        /// The length the shape requires.
        expected: usize,
        /// The length that was passed.
        actual: usize,
    },
    /// A row stride shorter than a row.
    Stride {
        /// The argument, e.g. `"input"`.
        what: &'static str,
        /// The stride that was passed, in elements.
        stride: usize,
        /// The row length it must reach.
        cols: usize,
    },
    /// Two arguments whose shapes must agree do not.
    Shape {
        /// What was compared, e.g. `"output vs input"`.
        what: &'static str,
        /// `[rows, cols]` (or another shape) expected.
        expected: Vec<usize>,
        /// The shape that was passed.
        actual: Vec<usize>,
    },
    /// Rows of zero elements: there is nothing to normalize over (the mean of
    /// an empty row is undefined). Zero rows, on the other hand, is a no-op.
    EmptyRows {
        /// How many rows were passed.
        rows: usize,
    },
    /// `eps` is negative, NaN or infinite.
    Eps {
        /// The value passed.
        eps: f32,
    },
    /// `momentum` is outside `[0, 1]` or not finite.
    Momentum {
        /// The value passed.
        momentum: f32,
    },
    /// The shape's element count overflows `usize`.
    TooLarge {
        /// The argument whose size overflowed.
        what: &'static str,
    },
    /// `SIMDNORM_ISA` (or a parse) named no instruction set this crate knows.
    UnknownIsa {
        /// The text that was given.
        value: String,
    },
    /// An instruction set was asked for that this CPU (or build target) lacks.
    IsaUnavailable {
        /// The instruction set's name.
        isa: &'static str,
    },
    /// Training statistics over a channel that holds a single value (for
    /// BatchNorm: `N * spatial == 1`), whose variance is undefined; PyTorch
    /// refuses it too.
    SingleValuePerChannel {
        /// Values per channel in the batch.
        count: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Length {
                what,
                expected,
                actual,
            } => {
                write!(
                    f,
                    "{what}: length {actual} does not match the shape, which needs {expected}"
                )
            }
            Error::Stride { what, stride, cols } => {
                write!(
                    f,
                    "{what}: row stride {stride} is shorter than a row of {cols} elements"
                )
            }
            Error::Shape {
                what,
                expected,
                actual,
            } => {
                write!(f, "{what}: shape {actual:?} does not match {expected:?}")
            }
            Error::EmptyRows { rows } => {
                write!(
                    f,
                    "{rows} rows of 0 elements: cannot normalize over an empty axis"
                )
            }
            Error::Eps { eps } => write!(f, "eps must be finite and >= 0, got {eps}"),
            Error::Momentum { momentum } => {
                write!(f, "momentum must be in [0, 1], got {momentum}")
            }
            Error::TooLarge { what } => write!(f, "{what}: element count overflows usize"),
            Error::UnknownIsa { value } => write!(
                f,
                "unknown instruction set {value:?}; expected one of portable, avx2, avx512, neon"
            ),
            Error::IsaUnavailable { isa } => {
                write!(
                    f,
                    "instruction set {isa} is not available on this CPU or target"
                )
            }
            Error::SingleValuePerChannel { count } => write!(
                f,
                "expected more than 1 value per channel when training, got {count}"
            ),
        }
    }
}

impl std::error::Error for Error {}

/// Checks `eps` as PyTorch and ONNX use it: inside the square root, finite, >= 0.
pub(crate) fn check_eps(eps: f32) -> Result<(), Error> {
    if eps.is_finite() && eps >= 0.0 {
        Ok(())
    } else {
        Err(Error::Eps { eps })
    }
}

/// Checks that an optional per-feature parameter has `len` elements.
pub(crate) fn check_len(what: &'static str, buf: Option<&[f32]>, len: usize) -> Result<(), Error> {
    match buf {
        Some(b) if b.len() != len => Err(Error::Length {
            what,
            expected: len,
            actual: b.len(),
        }),
        _ => Ok(()),
    }
}
