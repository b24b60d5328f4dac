//! BatchNorm training: every ISA and thread count against Portable bit for
//! bit (output, saved mean and rstd, running statistics), Portable against
//! the f64 reference (output within the README bound, saved statistics, the
//! three running-statistics conventions), non-finite channels all NaN and
//! isolated from the others, `SingleValuePerChannel` for one value per
//! channel, typed errors for bad arguments (see `simdnorm_fuzz::batch_norm`).
#![no_main]

use simdnorm::{BatchShape, Error, Isa, Layout, Momentum};
use simdnorm_fuzz::Src;
use simdnorm_fuzz::batch_norm::{
    self as bn, Common, SPLIT_ELEMS, STREAM_ELEMS, TrainOut, bad_eps, expect_errors, head,
    wrong_len,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

struct Case {
    common: Common,
    momentum: Momentum,
    running: bool,
    rm0: Vec<f32>,
    rv0: Vec<f32>,
    corrupt: Option<(u8, u32)>,
    x: Vec<f32>,
}

impl Case {
    fn decode(data: &[u8]) -> Case {
        let mut src = Src::new(data);
        let common = Common::decode(&mut src);
        let c = common.shape.c;
        let momentum = bn::momentum(&mut src);
        let running = src.chance(200);
        let rm0 = bn::running_vec(&mut src, c, false);
        let rv0 = bn::running_vec(&mut src, c, true);
        let corrupt = if src.chance(20) {
            Some((src.u8(), src.u32()))
        } else {
            None
        };
        let x = bn::data(&mut src, common.shape);
        Case {
            common,
            momentum,
            running,
            rm0,
            rv0,
            corrupt,
            x,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:?} eps={:e} weight={:?} bias={:?} momentum={:?} running={} rm0={:?} rv0={:?} x[..24]={:?}",
            self.common.shape,
            self.common.eps,
            self.common.weight.as_deref().map(head),
            self.common.bias.as_deref().map(head),
            self.momentum,
            self.running,
            head(&self.rm0),
            head(&self.rv0),
            head(&self.x),
        )
    }

    fn momentum(&self) -> Option<Momentum> {
        self.running.then_some(self.momentum)
    }

    fn fresh(&self) -> TrainOut {
        TrainOut::fresh(self.x.len(), self.common.shape.c, &self.rm0, &self.rv0)
    }

    /// `forward_train` of `x` on `isa`.
    fn call(&self, x: &[f32], isa: Option<Isa>, parallel: bool) -> TrainOut {
        let mut out = self.fresh();
        let m = self.momentum();
        let (y, stats) = out.stats(m);
        let r = self
            .common
            .bn(isa, parallel)
            .forward_train(self.common.shape, x, y, stats);
        out.result = r;
        out
    }
}

fn momentum_error(m: Momentum) -> Option<Error> {
    match m {
        Momentum::PyTorch(v) | Momentum::Onnx(v) if !bn::momentum_valid(m) => {
            Some(Error::Momentum { momentum: v })
        }
        _ => None,
    }
}

fn run(data: &[u8]) {
    let case = Case::decode(data);
    let ctx = case.describe();
    bn::trace(&format!("{ctx} corrupt={:?}", case.corrupt));
    let sh = case.common.shape;

    // The shape's own arithmetic.
    let dims = match sh.layout {
        Layout::Nchw => [sh.n, sh.c, sh.spatial],
        Layout::Nhwc => [sh.n, sh.spatial, sh.c],
    };
    assert_eq!(BatchShape::from_dims(sh.layout, &dims), Ok(sh), "{ctx}");
    assert_eq!(sh.len(), Ok(case.x.len()), "{ctx}");

    if let Some((kind, arg)) = case.corrupt {
        return check_corrupted(&case, kind, arg, &ctx);
    }

    let mut want = Vec::new();
    if !bn::eps_valid(case.common.eps) {
        want.push(Error::Eps {
            eps: case.common.eps,
        });
    }
    if case.running
        && let Some(e) = momentum_error(case.momentum)
    {
        want.push(e);
    }
    if want.is_empty() && !sh.is_empty() && sh.per_channel() == 1 {
        want.push(Error::SingleValuePerChannel { count: 1 });
    }
    if !want.is_empty() || sh.is_empty() {
        // An error or an empty batch: nothing may be written.
        let untouched = case.fresh();
        for isa in bn::isas() {
            let mut o = case.call(&case.x, isa, true);
            let what = format!("{ctx} isa={isa:?}");
            if want.is_empty() {
                assert_eq!(o.result, Ok(()), "{what}: empty batch");
            } else {
                expect_errors(o.result.clone(), &want, &what);
            }
            o.result = Ok(());
            o.same(&untouched, &what, "failed or empty call wrote a buffer");
        }
        return;
    }

    let base = case.call(&case.x, Some(Isa::Portable), false);
    assert_eq!(base.result, Ok(()), "{ctx}: portable baseline failed");
    bn::check_train_reference(
        &case.common,
        &case.x,
        &base,
        case.momentum(),
        &case.rm0,
        &case.rv0,
        &ctx,
    );
    // Streamed shapes (~4M values) skip the isolation rerun and the pools:
    // smaller shapes cover both, and the streaming stores are per ISA.
    let streamed = case.x.len() >= STREAM_ELEMS;
    if !streamed {
        bn::check_isolation(
            &case.x,
            &base,
            sh,
            |x| case.call(x, Some(Isa::Portable), false),
            &ctx,
        );
    }
    for isa in bn::isas() {
        let o = case.call(&case.x, isa, true);
        o.same(&base, &ctx, &format!("isa {isa:?}"));
    }
    if case.x.len() >= SPLIT_ELEMS && !streamed {
        for pool in bn::pools() {
            let o = pool.install(|| case.call(&case.x, Some(Isa::best()), true));
            o.same(
                &base,
                &ctx,
                &format!("{} threads", pool.current_num_threads()),
            );
        }
    }
}

/// One argument made invalid: every ISA must return exactly its error and
/// write nothing.
fn check_corrupted(case: &Case, kind: u8, arg: u32, ctx: &str) {
    let sh = case.common.shape;
    let c = sh.c;
    let mut common = case.common.clone();
    if !bn::eps_valid(common.eps) {
        common.eps = 1e-5;
    }
    let mut momentum = if bn::momentum_valid(case.momentum) {
        case.momentum
    } else {
        Momentum::PyTorch(0.1)
    };
    let mut running = case.running;
    let mut shape = sh;
    let mut x = case.x.clone();
    let mut out = case.fresh();
    let mut isa = None;
    let len = x.len();
    let want = match kind % 12 {
        0 => {
            x = vec![0.5; wrong_len(len, arg)];
            Error::Length {
                what: "input",
                expected: len,
                actual: x.len(),
            }
        }
        1 => {
            out.y = vec![bn::SENTINEL; wrong_len(len, arg)];
            Error::Length {
                what: "output",
                expected: len,
                actual: out.y.len(),
            }
        }
        2 => {
            common.weight = Some(vec![1.0; wrong_len(c, arg)]);
            Error::Length {
                what: "weight",
                expected: c,
                actual: wrong_len(c, arg),
            }
        }
        3 => {
            common.bias = Some(vec![0.5; wrong_len(c, arg)]);
            Error::Length {
                what: "bias",
                expected: c,
                actual: wrong_len(c, arg),
            }
        }
        4 => {
            out.mean = vec![bn::SENTINEL; wrong_len(c, arg)];
            Error::Length {
                what: "saved mean",
                expected: c,
                actual: out.mean.len(),
            }
        }
        5 => {
            out.rstd = vec![bn::SENTINEL; wrong_len(c, arg)];
            Error::Length {
                what: "saved rstd",
                expected: c,
                actual: out.rstd.len(),
            }
        }
        6 => {
            running = true;
            out.rm = vec![0.0; wrong_len(c, arg)];
            Error::Length {
                what: "running mean",
                expected: c,
                actual: out.rm.len(),
            }
        }
        7 => {
            running = true;
            out.rv = vec![1.0; wrong_len(c, arg)];
            Error::Length {
                what: "running var",
                expected: c,
                actual: out.rv.len(),
            }
        }
        8 => {
            running = true;
            let v = [f32::NAN, -0.1, 1.000_000_1, f32::INFINITY, -1e-45][arg as usize % 5];
            momentum = if arg & 8 == 0 {
                Momentum::PyTorch(v)
            } else {
                Momentum::Onnx(v)
            };
            Error::Momentum { momentum: v }
        }
        9 => {
            common.eps = bad_eps(arg);
            Error::Eps { eps: common.eps }
        }
        10 => match bn::unavailable_isa() {
            Some(bad) => {
                isa = Some(bad);
                Error::IsaUnavailable { isa: bad.name() }
            }
            None => return,
        },
        _ => {
            let a = arg as usize;
            shape = BatchShape::new(sh.layout, usize::MAX / 2 + 1 + a % 7, 2 + a % 5, 1 + a % 3);
            Error::TooLarge { what: "input" }
        }
    };
    let isas = if isa.is_some() { vec![isa] } else { bn::isas() };
    for isa in isas {
        let mut o = out.clone();
        let before = o.clone();
        let m = running.then_some(momentum);
        let (y, stats) = o.stats(m);
        let got = common.bn(isa, true).forward_train(shape, &x, y, stats);
        let what = format!("{ctx} corrupted (kind {}) isa={isa:?}", kind % 12);
        expect_errors(got, std::slice::from_ref(&want), &what);
        o.same(&before, &what, "failed call wrote a buffer");
    }
}
