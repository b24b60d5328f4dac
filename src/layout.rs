//! Row-major matrices over caller-owned buffers: `[rows, cols]` with a row
//! stride (PyTorch's `stride(0)`, BLAS's leading dimension). Validation happens
//! here, once, so the kernels can index without checks failing.

use crate::Error;

/// The element count a `[rows, cols]` matrix with row `stride` spans:
/// `(rows - 1) * stride + cols`, the last row needing no padding after it.
fn required_len(
    what: &'static str,
    rows: usize,
    cols: usize,
    stride: usize,
) -> Result<usize, Error> {
    if stride < cols {
        return Err(Error::Stride { what, stride, cols });
    }
    if rows == 0 {
        return Ok(0);
    }
    (rows - 1)
        .checked_mul(stride)
        .and_then(|n| n.checked_add(cols))
        .ok_or(Error::TooLarge { what })
}

fn check(
    what: &'static str,
    len: usize,
    rows: usize,
    cols: usize,
    stride: usize,
) -> Result<(), Error> {
    let need = required_len(what, rows, cols, stride)?;
    // A contiguous matrix must match exactly (a longer buffer usually means a
    // wrong shape); a strided view may sit inside a larger buffer.
    let ok = if stride == cols {
        len == need
    } else {
        len >= need
    };
    if ok {
        Ok(())
    } else {
        Err(Error::Length {
            what,
            expected: need,
            actual: len,
        })
    }
}

/// A read-only `[rows, cols]` view of `f32` values with a row stride.
///
/// ```
/// use simdnorm::Rows;
/// let data = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
/// let m = Rows::new(&data, 2, 3)?;                 // contiguous [2, 3]
/// assert_eq!(m.row(1), Some(&[4.0, 5.0, 6.0][..]));
/// let every_other = Rows::with_stride(&data, 2, 2, 4)?; // rows start at 0 and 4
/// assert_eq!(every_other.row(1), Some(&[5.0, 6.0][..]));
/// # Ok::<(), simdnorm::Error>(())
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a> Rows<'a> {
    /// A contiguous `[rows, cols]` matrix; `data.len()` must be `rows * cols`.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, Error> {
        Self::with_stride(data, rows, cols, cols)
    }

    /// A `[rows, cols]` matrix whose row `i` starts at `data[i * stride]`.
    /// `stride >= cols`; `data` must reach the end of the last row.
    pub fn with_stride(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> Result<Self, Error> {
        check("input", data.len(), rows, cols, stride)?;
        Ok(Rows {
            data,
            rows,
            cols,
            stride,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Elements per row.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Elements from the start of one row to the start of the next.
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// Row `i`, or `None` if `i >= rows`.
    pub fn row(&self, i: usize) -> Option<&'a [f32]> {
        (i < self.rows).then(|| &self.data[i * self.stride..i * self.stride + self.cols])
    }
    pub(crate) fn data(&self) -> &'a [f32] {
        self.data
    }
}

/// A writable `[rows, cols]` view of `f32` values with a row stride; the
/// output of every operator, and its input too for the in-place forms.
///
/// ```
/// use simdnorm::RowsMut;
/// let mut data = vec![0.0f32; 8];
/// let m = RowsMut::with_stride(&mut data, 2, 3, 4)?; // elements 3 and 7 untouched
/// assert_eq!(m.rows(), 2);
/// # Ok::<(), simdnorm::Error>(())
/// ```
#[derive(Debug)]
pub struct RowsMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    stride: usize,
}

impl<'a> RowsMut<'a> {
    /// A contiguous `[rows, cols]` matrix; `data.len()` must be `rows * cols`.
    pub fn new(data: &'a mut [f32], rows: usize, cols: usize) -> Result<Self, Error> {
        Self::with_stride(data, rows, cols, cols)
    }

    /// A `[rows, cols]` matrix whose row `i` starts at `data[i * stride]`;
    /// elements between rows are never touched.
    pub fn with_stride(
        data: &'a mut [f32],
        rows: usize,
        cols: usize,
        stride: usize,
    ) -> Result<Self, Error> {
        check("output", data.len(), rows, cols, stride)?;
        Ok(RowsMut {
            data,
            rows,
            cols,
            stride,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Elements per row.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Elements from the start of one row to the start of the next.
    pub fn stride(&self) -> usize {
        self.stride
    }
    /// The span of the buffer the matrix covers, from row 0 to the end of the
    /// last row, with its stride.
    pub(crate) fn into_parts(self) -> (&'a mut [f32], usize, usize, usize) {
        let need = if self.rows == 0 {
            0
        } else {
            (self.rows - 1) * self.stride + self.cols
        };
        (&mut self.data[..need], self.rows, self.cols, self.stride)
    }
}

/// Checks that `output` has the shape of `input`.
pub(crate) fn check_same_shape(input: &Rows<'_>, output: &RowsMut<'_>) -> Result<(), Error> {
    if input.rows() == output.rows() && input.cols() == output.cols() {
        Ok(())
    } else {
        Err(Error::Shape {
            what: "output vs input",
            expected: vec![input.rows(), input.cols()],
            actual: vec![output.rows(), output.cols()],
        })
    }
}
