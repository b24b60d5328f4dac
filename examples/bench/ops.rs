//! The op registry: everything the tool knows about one operator lives in one
//! [`Op`] entry of [`OPS`], so adding an operator means writing its [`Case`],
//! its shape parser, and one more entry; the command line, the timing loop
//! and the report pick it up. The row ops live here, the BatchNorm ops in
//! [`crate::batch_norm`].
//!
//! Byte counts are what the operator must move at least: every input read
//! once (activations and per-feature parameters) and every output written
//! once. They are the numerator of the GB/s column.

use crate::batch_norm::{self, BnCase};
use crate::data::{self, Buf};
use simdnorm::{Error, Isa, LayerNorm, RmsNorm, Rows, RowsMut, reference};
use std::fmt;

/// One operator the tool can benchmark.
pub struct Op {
    /// Name on the command line (`--op NAME`) and in the report.
    pub name: &'static str,
    /// One line for `--help`.
    pub about: &'static str,
    /// The `--shape` syntax this op accepts, for `--help`.
    pub shape_syntax: &'static str,
    /// Shapes of the default run, as labels: the op's `--shape` syntax,
    /// then `/layout` for ops that take one (the form [`Shape`] displays).
    pub shapes: &'static [&'static str],
    /// The subset the criterion benches use (`benches/norms.rs`), as labels.
    #[allow(dead_code)] // read by the criterion benches only
    pub bench_shapes: &'static [&'static str],
    /// Parses a `--shape` value, with `--layout` if one was given, into the
    /// shapes to run (several when the op runs a spec in more than one
    /// layout by default). An error says why this op cannot take it.
    pub parse_shape: fn(spec: &str, layout: Option<&str>) -> Result<Vec<Shape>, String>,
    /// Allocates and fills inputs and outputs for `shape` (in the current
    /// rayon pool) and precomputes the f64 reference.
    /// Builds the case with its output `offset` bytes past a page.
    pub make: fn(&Shape, usize) -> Box<dyn Case>,
}

impl Op {
    /// Parses a shape label (`spec` or `spec/layout`); `layout`, when given,
    /// replaces the label's own.
    pub fn parse_label(&self, label: &str, layout: Option<&str>) -> Result<Vec<Shape>, String> {
        let (spec, own) = match label.split_once('/') {
            Some((spec, own)) => (spec, Some(own)),
            None => (label, None),
        };
        (self.parse_shape)(spec, layout.or(own))
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Op({})", self.name)
    }
}

/// Ops are the same op when they have the same name (the registry keeps
/// names unique).
impl PartialEq for Op {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// A parsed shape: its dimensions, and a memory layout for ops that have one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Dimensions, outermost first (`[rows, cols]` for the row ops).
    pub dims: Vec<usize>,
    /// Layout name (`nchw`, `nhwc`) for ops that take `--layout`.
    pub layout: Option<String>,
}

impl fmt::Display for Shape {
    /// `8192x4096`, or `32x64x56x56/nhwc` with a layout.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.dims.iter().enumerate() {
            if i > 0 {
                f.write_str("x")?;
            }
            write!(f, "{d}")?;
        }
        if let Some(layout) = &self.layout {
            write!(f, "/{layout}")?;
        }
        Ok(())
    }
}

/// Inputs, outputs and reference of one op at one shape.
pub trait Case: Send {
    /// Runs the op once on `isa` in the current rayon pool (which decides the
    /// thread count).
    fn run(&mut self, isa: Isa) -> Result<(), Error>;
    /// Bytes read by one call.
    fn in_bytes(&self) -> usize;
    /// Bytes written by one call.
    fn out_bytes(&self) -> usize;
    /// Largest `|output - f64 reference|` of the last run, over the checked
    /// part of the output (see [`Case::checked`]).
    fn max_abs_err(&self) -> f64;
    /// Which part of the output [`Case::max_abs_err`] covers, for a note
    /// under the table; `None` when it covers all of it.
    fn checked(&self) -> Option<String>;
    /// Checks the last run's outputs other than the main one (saved or
    /// running statistics) against the reference; an error says which value
    /// is off. Nothing to check by default.
    fn verify(&self) -> Result<(), String> {
        Ok(())
    }
}

/// Every operator the tool knows, in report order.
pub const OPS: &[Op] = &[
    Op {
        name: "layer_norm",
        about: "LayerNorm over the last axis, with weight and bias",
        shape_syntax: "RxC (rows x cols)",
        shapes: ROW_SHAPES,
        bench_shapes: ROW_BENCH_SHAPES,
        parse_shape: parse_rows,
        make: |shape, offset| Box::new(RowCase::new(RowOp::LayerNorm, shape, offset)),
    },
    Op {
        name: "rms_norm",
        about: "RMSNorm over the last axis, with weight",
        shape_syntax: "RxC (rows x cols)",
        shapes: ROW_SHAPES,
        bench_shapes: ROW_BENCH_SHAPES,
        parse_shape: parse_rows,
        make: |shape, offset| Box::new(RowCase::new(RowOp::RmsNorm, shape, offset)),
    },
    Op {
        name: "batch_norm_infer",
        about: "BatchNorm inference (running statistics given), with weight and bias",
        shape_syntax: batch_norm::SHAPE_SYNTAX,
        shapes: batch_norm::SHAPES,
        bench_shapes: batch_norm::BENCH_SHAPES,
        parse_shape: batch_norm::parse_infer,
        make: |shape, offset| Box::new(BnCase::new(batch_norm::Mode::Infer, shape, offset)),
    },
    Op {
        name: "batch_norm_train",
        about: "BatchNorm training (batch statistics, saved mean/rstd, PyTorch momentum 0.1 \
                running update), with weight and bias",
        shape_syntax: batch_norm::SHAPE_SYNTAX,
        shapes: batch_norm::SHAPES,
        bench_shapes: batch_norm::BENCH_SHAPES,
        parse_shape: batch_norm::parse_train,
        make: |shape, offset| Box::new(BnCase::new(batch_norm::Mode::Train, shape, offset)),
    },
];

/// The registry entry called `name`.
pub fn find(name: &str) -> Option<&'static Op> {
    OPS.iter().find(|op| op.name == name)
}

/// From one token (`[1, 768]`) to whole DRAM-sized batches: 16384x8192 f32
/// is 512 MiB per buffer.
const ROW_SHAPES: &[&str] = &[
    "1x768",
    "1x4096",
    "128x768",
    "512x1024",
    "2048x4096",
    "8192x4096",
    "16384x8192",
];

/// L1, L2, L3 and just-past-L3 (32 MiB per buffer) sizes.
const ROW_BENCH_SHAPES: &[&str] = &["1x768", "128x768", "512x1024", "2048x4096"];

/// Parses `RxC` with both sides positive; the row ops have no layout.
fn parse_rows(spec: &str, layout: Option<&str>) -> Result<Vec<Shape>, String> {
    if let Some(layout) = layout {
        return Err(format!(
            "row ops take no --layout (got {layout:?}); they normalize the last axis of RxC"
        ));
    }
    let dims = parse_dims(spec)?;
    if dims.len() != 2 {
        return Err(format!("expected RxC (two dimensions), got {spec:?}"));
    }
    Ok(vec![Shape { dims, layout: None }])
}

/// Parses `AxBx...` into positive dimensions whose product, in f32 bytes,
/// fits in `usize`. Shared by every op's shape parser.
pub fn parse_dims(spec: &str) -> Result<Vec<usize>, String> {
    let dims = spec
        .split(['x', 'X'])
        .map(|d| match d.trim().parse::<usize>() {
            Ok(0) => Err(format!("zero dimension in shape {spec:?}")),
            Ok(n) => Ok(n),
            Err(_) => Err(format!(
                "bad shape {spec:?}: expected positive integers separated by 'x'"
            )),
        })
        .collect::<Result<Vec<_>, _>>()?;
    dims.iter()
        .try_fold(4usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {spec:?} is too large"))?;
    Ok(dims)
}

/// Output values at most compared with the reference in full; past this the
/// first `max(MIN_CHECKED_ROWS, CHECKED_VALUES / cols)` rows are, so a 512 MiB
/// shape does not spend seconds in f64 loops.
const CHECKED_VALUES: usize = 1 << 20;
const MIN_CHECKED_ROWS: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowOp {
    LayerNorm,
    RmsNorm,
}

/// A `[rows, cols]` row-normalization problem with contiguous buffers.
struct RowCase {
    op: RowOp,
    rows: usize,
    cols: usize,
    x: Buf,
    y: Buf,
    weight: Buf,
    bias: Buf,
    eps: f32,
    /// Rows compared with the reference: the first `checked_rows`.
    checked_rows: usize,
    /// The f64 reference output of those rows.
    expected: Vec<f64>,
}

impl RowCase {
    fn new(op: RowOp, shape: &Shape, offset: usize) -> Self {
        let (rows, cols) = (shape.dims[0], shape.dims[1]);
        let x = data::normal(rows * cols, 1, 0.0, 1.0);
        let y = data::zeros_at(rows * cols, offset);
        let weight = data::normal(cols, 2, 1.0, 0.1);
        let bias = data::normal(cols, 3, 0.0, 0.1);
        let eps = 1e-5;
        let checked_rows = if rows * cols <= CHECKED_VALUES {
            rows
        } else {
            rows.min((CHECKED_VALUES / cols).max(MIN_CHECKED_ROWS))
        };
        let sample = &x[..checked_rows * cols];
        let expected = match op {
            RowOp::LayerNorm => {
                reference::layer_norm(sample, cols, Some(&weight), Some(&bias), eps)
            }
            RowOp::RmsNorm => reference::rms_norm(sample, cols, Some(&weight), eps),
        }
        .output;
        RowCase {
            op,
            rows,
            cols,
            x,
            y,
            weight,
            bias,
            eps,
            checked_rows,
            expected,
        }
    }

    /// Per-feature parameter vectors the op reads.
    fn params(&self) -> usize {
        match self.op {
            RowOp::LayerNorm => 2,
            RowOp::RmsNorm => 1,
        }
    }
}

impl Case for RowCase {
    fn run(&mut self, isa: Isa) -> Result<(), Error> {
        let x = Rows::new(&self.x, self.rows, self.cols)?;
        let y = RowsMut::new(&mut self.y, self.rows, self.cols)?;
        match self.op {
            RowOp::LayerNorm => LayerNorm::new()
                .eps(self.eps)
                .weight(&self.weight)
                .bias(&self.bias)
                .isa(isa)
                .forward(x, y),
            RowOp::RmsNorm => RmsNorm::new()
                .eps(self.eps)
                .weight(&self.weight)
                .isa(isa)
                .forward(x, y),
        }
    }

    fn in_bytes(&self) -> usize {
        4 * (self.rows * self.cols + self.params() * self.cols)
    }

    fn out_bytes(&self) -> usize {
        4 * self.rows * self.cols
    }

    fn max_abs_err(&self) -> f64 {
        reference::max_abs_error(&self.y[..self.checked_rows * self.cols], &self.expected)
    }

    fn checked(&self) -> Option<String> {
        (self.checked_rows < self.rows)
            .then(|| format!("the first {} of {} rows", self.checked_rows, self.rows))
    }
}
