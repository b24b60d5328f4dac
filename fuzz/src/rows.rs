//! The differential harness for the row operators, LayerNorm and RMSNorm.
//!
//! Input layout (header first, so that mutating the data keeps the shape):
//! call form, shape, eps, weight, bias, the two buffer layouts, an optional
//! corruption of one argument, then the rows.
//!
//! A valid case runs on `Portable`, serially, with saved statistics (the
//! baseline), which is checked against `simdnorm::reference`; then on every
//! available ISA and the default one, in the case's call form (out of place,
//! in place, or with saved statistics), with rayon allowed, and, for shapes
//! large enough to be split, inside 1- and 3-thread pools: every run must give
//! the baseline's bits, in the whole output buffer. A corrupted case must
//! give exactly the typed error for that argument and leave every buffer
//! untouched.

use crate::oracle::{self, expect_error};
use crate::{Src, bits, debug, values};
use simdnorm::{Error, Isa, LayerNorm, RmsNorm, Rows, RowsMut, reference};
use std::sync::OnceLock;

/// Which operator a target drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowOp {
    /// `LayerNorm` (weight and bias, saves mean and rstd).
    LayerNorm,
    /// `RmsNorm` (weight only, saves rstd).
    RmsNorm,
}

/// How the operator is called.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// `forward(input, output)`.
    Forward,
    /// `forward_in_place(data)`.
    InPlace,
    /// `forward_train(input, output, [mean,] rstd)`.
    Train,
}

/// What fills every element a call must not write (and the gaps of the
/// input, which it must not read: a signalling NaN there would turn its row
/// into NaN and disagree with the reference).
pub const SENTINEL: f32 = f32::from_bits(0x7fba_d0d0);

/// Elements in a shape above which rayon may split the rows
/// (`2 * MIN_ELEMS_PER_TASK` in src/parallel.rs).
pub const SPLIT_ELEMS: usize = 1 << 16;

/// Cap on `rows * cols`, so that one execution stays in milliseconds.
pub const MAX_ELEMS: usize = 140_000;

/// Row lengths around the kernels' edges: the 16-lane width, the four
/// accumulators (64), the 32-chunk blocks (512).
const COLS: [usize; 30] = [
    0, 1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 127, 128, 129, 255, 256, 511, 512, 513,
    768, 1023, 1024, 1025, 2047, 2048, 4097,
];

/// Where a `[rows, cols]` matrix sits in its buffer: `offset` elements in
/// (misaligning it), row `stride`, `len` elements handed to the view (the
/// matrix's span plus `slack` for a strided view), two more sentinels after.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Number of rows.
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
    /// Row stride, `>= cols`.
    pub stride: usize,
    /// Start of the view in the buffer.
    pub offset: usize,
    /// Length of the view.
    pub len: usize,
}

impl Layout {
    /// A contiguous or strided layout chosen by the input.
    pub fn decode(src: &mut Src, rows: usize, cols: usize) -> Layout {
        let pad = if src.chance(64) { 1 + src.below(20) } else { 0 };
        let offset = src.below(16);
        let slack = if pad > 0 { src.below(4) } else { 0 };
        let stride = cols + pad;
        Layout {
            rows,
            cols,
            stride,
            offset,
            len: span(rows, cols, stride) + slack,
        }
    }

    /// A buffer holding the contiguous `x` (or nothing: `x` empty) in this
    /// layout, [`SENTINEL`] everywhere else.
    pub fn place(&self, x: &[f32]) -> Vec<f32> {
        let mut buf = vec![SENTINEL; self.offset + self.len + 2];
        if !x.is_empty() {
            for r in 0..self.rows {
                let at = self.offset + r * self.stride;
                buf[at..at + self.cols].copy_from_slice(&x[r * self.cols..][..self.cols]);
            }
        }
        buf
    }

    /// The view's part of `buf`.
    pub fn view<'b>(&self, buf: &'b [f32]) -> &'b [f32] {
        &buf[self.offset..self.offset + self.len]
    }

    /// The view's part of `buf`, writable.
    pub fn view_mut<'b>(&self, buf: &'b mut [f32]) -> &'b mut [f32] {
        &mut buf[self.offset..self.offset + self.len]
    }

    /// The matrix in `buf`, contiguous.
    pub fn extract(&self, buf: &[f32]) -> Vec<f32> {
        let mut x = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            let at = self.offset + r * self.stride;
            x.extend_from_slice(&buf[at..at + self.cols]);
        }
        x
    }

    /// Whether element `i` of the buffer is inside the matrix.
    pub fn covers(&self, i: usize) -> bool {
        if self.cols == 0 || i < self.offset {
            return false;
        }
        let k = i - self.offset;
        k / self.stride < self.rows && k % self.stride < self.cols
    }

    /// Panics if any element outside the matrix differs from [`SENTINEL`].
    pub fn assert_untouched_outside(&self, buf: &[f32], ctx: &str) {
        for (i, v) in buf.iter().enumerate() {
            if !self.covers(i) && v.to_bits() != SENTINEL.to_bits() {
                panic!("{ctx}: element {i} outside the matrix was written ({v:e}); {self:?}");
            }
        }
    }
}

/// `(rows - 1) * stride + cols`, 0 for no rows.
fn span(rows: usize, cols: usize, stride: usize) -> usize {
    if rows == 0 {
        0
    } else {
        (rows - 1) * stride + cols
    }
}

/// One decoded case.
#[derive(Clone, Debug)]
struct Case {
    op: RowOp,
    form: Form,
    rows: usize,
    cols: usize,
    eps: f32,
    weight: Option<Vec<f32>>,
    bias: Option<Vec<f32>>,
    input: Layout,
    output: Layout,
    corrupt: Option<(u8, u32)>,
    /// Contiguous input, `rows * cols`.
    x: Vec<f32>,
}

impl Case {
    fn decode(op: RowOp, data: &[u8]) -> Case {
        let mut src = Src::new(data);
        let form = match src.u8() % 3 {
            0 => Form::Forward,
            1 => Form::InPlace,
            _ => Form::Train,
        };
        let class = src.u8();
        // Large shapes cost ~100x a small one: keep them rare, and away
        // from byte 0, which is what an exhausted input reads.
        let (rows, cols) = if class >= 253 {
            // Large enough that rayon splits the rows.
            let rows = 2 + src.below(7);
            let cols = SPLIT_ELEMS.div_ceil(rows) + src.below(2048);
            (rows, cols)
        } else if class < 128 {
            (src.below(5), src.pick(&COLS))
        } else {
            (src.below(9), src.below(80))
        };
        let rows = rows.min(MAX_ELEMS / cols.max(1));
        let eps = values::eps(&mut src);
        let weight = values::params(&mut src, cols);
        let bias = match op {
            RowOp::LayerNorm => values::params(&mut src, cols),
            RowOp::RmsNorm => None,
        };
        let input = Layout::decode(&mut src, rows, cols);
        let output = Layout::decode(&mut src, rows, cols);
        let corrupt = if src.chance(20) {
            Some((src.u8(), src.u32()))
        } else {
            None
        };
        let mut x = vec![0.0f32; rows * cols];
        for row in x.chunks_mut(cols.max(1)) {
            values::fill_row(&mut src, row);
        }
        Case {
            op,
            form,
            rows,
            cols,
            eps,
            weight,
            bias,
            input,
            output,
            corrupt,
            x,
        }
    }

    fn describe(&self) -> String {
        let head: Vec<f32> = self.x.iter().copied().take(24).collect();
        format!(
            "{:?} {:?} [{}, {}] eps={:e} weight={} bias={} in={:?} out={:?} x[..24]={head:?}",
            self.op,
            self.form,
            self.rows,
            self.cols,
            self.eps,
            self.weight.is_some(),
            self.bias.is_some(),
            self.input,
            self.output,
        )
    }
}

/// The arguments of one call, any of which a corruption may replace.
struct Args<'a> {
    eps: f32,
    weight: Option<&'a [f32]>,
    bias: Option<&'a [f32]>,
    isa: Option<Isa>,
    parallel: bool,
}

/// Calls `op` in `form`. `mean` is ignored by RMSNorm; `input` by in place.
fn apply(
    op: RowOp,
    form: Form,
    args: &Args<'_>,
    input: Rows<'_>,
    output: RowsMut<'_>,
    mean: &mut [f32],
    rstd: &mut [f32],
) -> Result<(), Error> {
    match op {
        RowOp::LayerNorm => {
            let mut n = LayerNorm::new().eps(args.eps).parallel(args.parallel);
            if let Some(w) = args.weight {
                n = n.weight(w);
            }
            if let Some(b) = args.bias {
                n = n.bias(b);
            }
            if let Some(isa) = args.isa {
                n = n.isa(isa);
            }
            match form {
                Form::Forward => n.forward(input, output),
                Form::InPlace => n.forward_in_place(output),
                Form::Train => n.forward_train(input, output, mean, rstd),
            }
        }
        RowOp::RmsNorm => {
            let mut n = RmsNorm::new().eps(args.eps).parallel(args.parallel);
            if let Some(w) = args.weight {
                n = n.weight(w);
            }
            if let Some(isa) = args.isa {
                n = n.isa(isa);
            }
            match form {
                Form::Forward => n.forward(input, output),
                Form::InPlace => n.forward_in_place(output),
                Form::Train => n.forward_train(input, output, rstd),
            }
        }
    }
}

/// What one call left behind.
struct Outcome {
    result: Result<(), Error>,
    out: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
}

/// Runs the case (valid arguments) on `isa` in `form` with fresh buffers.
fn call(case: &Case, isa: Option<Isa>, parallel: bool, form: Form) -> Outcome {
    let in_buf = case.input.place(&case.x);
    let mut out = if form == Form::InPlace {
        case.output.place(&case.x)
    } else {
        case.output.place(&[])
    };
    let mut mean = vec![SENTINEL; case.rows];
    let mut rstd = vec![SENTINEL; case.rows];
    let (l_in, l_out) = (&case.input, &case.output);
    let input = Rows::with_stride(l_in.view(&in_buf), case.rows, case.cols, l_in.stride)
        .expect("valid input layout");
    let output = RowsMut::with_stride(l_out.view_mut(&mut out), case.rows, case.cols, l_out.stride)
        .expect("valid output layout");
    let args = Args {
        eps: case.eps,
        weight: case.weight.as_deref(),
        bias: case.bias.as_deref(),
        isa,
        parallel,
    };
    let result = apply(case.op, form, &args, input, output, &mut mean, &mut rstd);
    Outcome {
        result,
        out,
        mean,
        rstd,
    }
}

/// Thread pools of 1 and 3 threads, for the thread-count check.
fn pools() -> &'static [rayon::ThreadPool] {
    static POOLS: OnceLock<Vec<rayon::ThreadPool>> = OnceLock::new();
    POOLS.get_or_init(|| {
        [1, 3]
            .into_iter()
            .map(|n| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build()
                    .expect("thread pool")
            })
            .collect()
    })
}

/// Every ISA to compare with the baseline: the available ones, and `None`
/// (the selected one, through the builder's default).
fn isas() -> Vec<Option<Isa>> {
    let mut all: Vec<Option<Isa>> = Isa::available().into_iter().map(Some).collect();
    all.push(None);
    all
}

/// The entry point of the `layer_norm` and `rms_norm` targets.
pub fn run(op: RowOp, data: &[u8]) {
    let case = Case::decode(op, data);
    let ctx = case.describe();
    if debug() {
        eprintln!("case: {ctx} corrupt={:?}", case.corrupt);
    }
    if let Some((kind, arg)) = case.corrupt {
        return check_corrupted(&case, kind, arg, &ctx);
    }
    let want = if !(case.eps.is_finite() && case.eps >= 0.0) {
        Err(Error::Eps { eps: case.eps })
    } else if case.rows > 0 && case.cols == 0 {
        Err(Error::EmptyRows { rows: case.rows })
    } else {
        Ok(())
    };
    if let Err(want) = want {
        for isa in isas() {
            for form in [Form::Forward, Form::InPlace, Form::Train] {
                let o = call(&case, isa, true, form);
                expect_error(o.result, &want, &format!("{ctx} isa={isa:?} {form:?}"));
                let before = if form == Form::InPlace {
                    case.output.place(&case.x)
                } else {
                    case.output.place(&[])
                };
                assert_eq!(
                    bits(&o.out),
                    bits(&before),
                    "{ctx}: failed call wrote output"
                );
                assert!(
                    o.mean
                        .iter()
                        .chain(&o.rstd)
                        .all(|v| v.to_bits() == SENTINEL.to_bits()),
                    "{ctx}: failed call wrote saved statistics"
                );
            }
        }
        return;
    }

    let base = call(&case, Some(Isa::Portable), false, Form::Train);
    assert_eq!(base.result, Ok(()), "{ctx}: portable baseline failed");
    case.output.assert_untouched_outside(&base.out, &ctx);
    check_reference(&case, &base, &ctx);

    let same = |o: &Outcome, form: Form, what: &str| {
        assert_eq!(o.result, Ok(()), "{ctx}: {what} failed");
        if bits(&o.out) != bits(&base.out) {
            let i = (0..o.out.len())
                .find(|&i| o.out[i].to_bits() != base.out[i].to_bits())
                .unwrap_or(0);
            panic!(
                "{ctx}: {what} differs from portable at buffer element {i}: {:e} ({:#010x}) vs {:e} ({:#010x})",
                o.out[i],
                o.out[i].to_bits(),
                base.out[i],
                base.out[i].to_bits()
            );
        }
        if form == Form::Train {
            if case.op == RowOp::LayerNorm {
                assert_eq!(bits(&o.mean), bits(&base.mean), "{ctx}: {what} saved mean");
            }
            assert_eq!(bits(&o.rstd), bits(&base.rstd), "{ctx}: {what} saved rstd");
        }
    };
    for isa in isas() {
        let o = call(&case, isa, true, case.form);
        same(&o, case.form, &format!("isa {isa:?}, {:?}", case.form));
    }
    if case.rows * case.cols >= SPLIT_ELEMS {
        for pool in pools() {
            let o = pool.install(|| call(&case, Some(Isa::best()), true, case.form));
            let what = format!("{} threads, {:?}", pool.current_num_threads(), case.form);
            same(&o, case.form, &what);
        }
    }
}

/// The baseline against the f64 reference and the contract's row rules.
fn check_reference(case: &Case, base: &Outcome, ctx: &str) {
    let (rows, cols) = (case.rows, case.cols);
    if rows == 0 {
        return; // a no-op; the reference would panic on cols == 0
    }
    let y = case.output.extract(&base.out);
    let (w, b) = (case.weight.as_deref(), case.bias.as_deref());
    let (plain, full) = match case.op {
        RowOp::LayerNorm => (
            reference::layer_norm(&case.x, cols, None, None, case.eps),
            reference::layer_norm(&case.x, cols, w, b, case.eps),
        ),
        RowOp::RmsNorm => (
            reference::rms_norm(&case.x, cols, None, case.eps),
            reference::rms_norm(&case.x, cols, w, case.eps),
        ),
    };
    for r in 0..rows {
        let x_row = &case.x[r * cols..][..cols];
        let y_row = &y[r * cols..][..cols];
        let row_ctx = || {
            let head: Vec<f32> = x_row.iter().copied().take(24).collect();
            format!("{ctx}: row {r} (x[..24] = {head:?})")
        };
        if x_row.iter().any(|v| !v.is_finite()) {
            assert!(
                y_row.iter().all(|v| v.is_nan()),
                "{}: non-finite row must be all NaN, got {y_row:?}",
                row_ctx()
            );
            assert!(base.rstd[r].is_nan(), "{}: saved rstd not NaN", row_ctx());
            if case.op == RowOp::LayerNorm {
                assert!(base.mean[r].is_nan(), "{}: saved mean not NaN", row_ctx());
            }
            continue;
        }
        for j in 0..cols {
            let wj = w.map_or(1.0, |w| w[j]);
            let bj = b.map_or(0.0, |b| b[j]);
            let at = r * cols + j;
            if let Err(msg) =
                oracle::element_ok(y_row[j], full.output[at], plain.output[at], wj, bj)
            {
                panic!("{}, column {j}: {msg}", row_ctx());
            }
        }
        // Rules stated exactly in the contract.
        let constant = x_row.iter().all(|&v| v == x_row[0]);
        let all_zero = x_row.iter().all(|&v| v == 0.0);
        let exact_rule = match case.op {
            RowOp::LayerNorm => constant,
            RowOp::RmsNorm => all_zero,
        };
        if exact_rule && case.eps > 0.0 {
            for j in 0..cols {
                let wj = w.map_or(1.0, |w| w[j]);
                let bj = b.map_or(0.0, |b| b[j]);
                if wj.is_finite() && bj.is_finite() {
                    assert!(
                        y_row[j] == bj,
                        "{}: constant row must output beta exactly: column {j} gives {:e}, beta {bj:e}",
                        row_ctx(),
                        y_row[j]
                    );
                }
            }
        }
        if let Err(msg) = oracle::rstd_ok(base.rstd[r], plain.rstd[r]) {
            panic!("{}: saved rstd: {msg}", row_ctx());
        }
        if case.op == RowOp::LayerNorm
            && let Err(msg) = oracle::mean_ok(base.mean[r], plain.mean[r], plain.rstd[r])
        {
            panic!("{}: saved mean: {msg}", row_ctx());
        }
    }
}

/// A case with one argument made invalid: every ISA must return exactly
/// that argument's error and write nothing.
fn check_corrupted(case: &Case, kind: u8, arg: u32, ctx: &str) {
    let (rows, cols) = (case.rows, case.cols);
    let eps = if case.eps.is_finite() && case.eps >= 0.0 {
        case.eps
    } else {
        1e-5
    };
    let arg = arg as usize;
    let wrong_len = |n: usize| {
        if n > 0 && arg.is_multiple_of(2) {
            n - 1 - arg / 2 % n
        } else {
            n + 1 + arg % 3
        }
    };
    let kinds = 10u8;
    let kind = kind % kinds;
    let unavailable = Isa::ALL.into_iter().find(|isa| !isa.is_available());

    // Layout corruptions fail when the view is built.
    match kind {
        0 if cols > 0 => {
            let stride = arg % cols;
            let buf = vec![0.0f32; span(rows, cols, cols)];
            let want = Error::Stride {
                what: "input",
                stride,
                cols,
            };
            expect_error(Rows::with_stride(&buf, rows, cols, stride), &want, ctx);
            let mut buf = buf;
            let want = Error::Stride {
                what: "output",
                stride,
                cols,
            };
            expect_error(
                RowsMut::with_stride(&mut buf, rows, cols, stride),
                &want,
                ctx,
            );
            return;
        }
        1 => {
            let need = span(rows, cols, case.input.stride);
            let len = if need > 0 {
                wrong_len(need)
            } else {
                // An empty matrix takes only an empty buffer when contiguous.
                1 + arg % 3
            };
            if case.input.stride != cols && len > need {
                // A strided view may sit in a longer buffer: not an error.
                return;
            }
            let mut buf = vec![0.0f32; len];
            let want = |what| Error::Length {
                what,
                expected: need,
                actual: len,
            };
            let stride = case.input.stride;
            expect_error(
                Rows::with_stride(&buf, rows, cols, stride),
                &want("input"),
                ctx,
            );
            expect_error(
                RowsMut::with_stride(&mut buf, rows, cols, stride),
                &want("output"),
                ctx,
            );
            return;
        }
        2 => {
            let rows = usize::MAX / 2 + 2 + arg % 1000;
            let (cols, stride) = (2 + arg % 5, 2 + arg % 5 + arg % 3);
            expect_error(
                Rows::with_stride(&[], rows, cols, stride),
                &Error::TooLarge { what: "input" },
                ctx,
            );
            expect_error(
                RowsMut::with_stride(&mut [], rows, cols, stride),
                &Error::TooLarge { what: "output" },
                ctx,
            );
            return;
        }
        _ => {}
    }

    // Operator argument corruptions fail inside the call.
    let weight_bad: Vec<f32>;
    let bias_bad: Vec<f32>;
    let mut args = Args {
        eps,
        weight: case.weight.as_deref(),
        bias: case.bias.as_deref(),
        isa: None,
        parallel: true,
    };
    let mut form = case.form;
    let mut mean_len = rows;
    let mut rstd_len = rows;
    let mut out_shape = (rows, cols);
    let want = match kind {
        3 => {
            args.eps = [
                -1e-5,
                f32::NEG_INFINITY,
                f32::INFINITY,
                f32::NAN,
                -f32::from_bits(1),
            ][arg % 5];
            Error::Eps { eps: args.eps }
        }
        4 => {
            weight_bad = vec![1.0; wrong_len(cols)];
            args.weight = Some(&weight_bad);
            Error::Length {
                what: "weight",
                expected: cols,
                actual: weight_bad.len(),
            }
        }
        5 if case.op == RowOp::LayerNorm => {
            bias_bad = vec![0.5; wrong_len(cols)];
            args.bias = Some(&bias_bad);
            Error::Length {
                what: "bias",
                expected: cols,
                actual: bias_bad.len(),
            }
        }
        6 if case.op == RowOp::LayerNorm => {
            form = Form::Train;
            mean_len = wrong_len(rows);
            Error::Length {
                what: "saved mean",
                expected: rows,
                actual: mean_len,
            }
        }
        7 => {
            form = Form::Train;
            rstd_len = wrong_len(rows);
            Error::Length {
                what: "saved rstd",
                expected: rows,
                actual: rstd_len,
            }
        }
        8 if form != Form::InPlace => {
            out_shape = if arg.is_multiple_of(2) {
                (rows + 1 + arg % 3, cols)
            } else {
                (rows, wrong_len(cols))
            };
            Error::Shape {
                what: "output vs input",
                expected: vec![rows, cols],
                actual: vec![out_shape.0, out_shape.1],
            }
        }
        9 if unavailable.is_some() => {
            let isa = unavailable.expect("checked");
            args.isa = Some(isa);
            Error::IsaUnavailable { isa: isa.name() }
        }
        _ => return,
    };
    let isas = if args.isa.is_some() {
        vec![args.isa]
    } else {
        isas()
    };
    for isa in isas {
        args.isa = isa;
        let in_buf = case.input.place(&case.x);
        let input = Rows::with_stride(case.input.view(&in_buf), rows, cols, case.input.stride)
            .expect("valid input layout");
        let (mut out, before) = if out_shape == (rows, cols) {
            let out = if form == Form::InPlace {
                case.output.place(&case.x)
            } else {
                case.output.place(&[])
            };
            (out.clone(), out)
        } else {
            let out = vec![SENTINEL; out_shape.0 * out_shape.1];
            (out.clone(), out)
        };
        let output = if out_shape == (rows, cols) {
            RowsMut::with_stride(
                case.output.view_mut(&mut out),
                rows,
                cols,
                case.output.stride,
            )
        } else {
            RowsMut::new(&mut out, out_shape.0, out_shape.1)
        }
        .expect("valid output layout");
        let mut mean = vec![SENTINEL; mean_len];
        let mut rstd = vec![SENTINEL; rstd_len];
        let got = apply(case.op, form, &args, input, output, &mut mean, &mut rstd);
        let what = format!("{ctx} corrupted (kind {kind}) isa={isa:?} {form:?}");
        expect_error(got, &want, &what);
        assert_eq!(
            bits(&out),
            bits(&before),
            "{what}: failed call wrote output"
        );
        assert!(
            mean.iter()
                .chain(&rstd)
                .all(|v| v.to_bits() == SENTINEL.to_bits()),
            "{what}: failed call wrote saved statistics"
        );
    }
}
