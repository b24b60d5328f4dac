//! BatchNorm inference: every ISA and thread count against Portable bit for
//! bit, Portable against `(x - running_mean) / sqrt(running_var + eps) * w + b`
//! in f64 within the README bound, `fold` against its documented formula,
//! typed errors for bad arguments (see `simdnorm_fuzz::batch_norm`).
#![no_main]

use simdnorm::{BatchShape, Error, Isa};
use simdnorm_fuzz::Src;
use simdnorm_fuzz::batch_norm::{
    self as bn, Common, SENTINEL, SPLIT_ELEMS, STREAM_ELEMS, bad_eps, expect_errors, head,
    same_bits, wrong_len,
};

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

struct Case {
    common: Common,
    rm: Vec<f32>,
    rv: Vec<f32>,
    corrupt: Option<(u8, u32)>,
    x: Vec<f32>,
}

impl Case {
    fn decode(data: &[u8]) -> Case {
        let mut src = Src::new(data);
        let common = Common::decode(&mut src);
        let c = common.shape.c;
        let rm = bn::running_vec(&mut src, c, false);
        let rv = bn::running_vec(&mut src, c, true);
        let corrupt = if src.chance(20) {
            Some((src.u8(), src.u32()))
        } else {
            None
        };
        let x = bn::data(&mut src, common.shape);
        Case {
            common,
            rm,
            rv,
            corrupt,
            x,
        }
    }

    fn describe(&self) -> String {
        format!(
            "{:?} eps={:e} weight={:?} bias={:?} rm={:?} rv={:?} x[..24]={:?}",
            self.common.shape,
            self.common.eps,
            self.common.weight.as_deref().map(head),
            self.common.bias.as_deref().map(head),
            head(&self.rm),
            head(&self.rv),
            head(&self.x),
        )
    }

    fn call(&self, isa: Option<Isa>, parallel: bool) -> (Result<(), Error>, Vec<f32>) {
        let mut y = vec![SENTINEL; self.x.len()];
        let r = self.common.bn(isa, parallel).forward_inference(
            self.common.shape,
            &self.x,
            &mut y,
            &self.rm,
            &self.rv,
        );
        (r, y)
    }
}

fn run(data: &[u8]) {
    let case = Case::decode(data);
    let ctx = case.describe();
    bn::trace(&format!("{ctx} corrupt={:?}", case.corrupt));
    let sh = case.common.shape;
    check_fold(&case, &ctx);
    if let Some((kind, arg)) = case.corrupt {
        return check_corrupted(&case, kind, arg, &ctx);
    }
    let eps = case.common.eps;
    if !bn::eps_valid(eps) || sh.is_empty() {
        let want = [Error::Eps { eps }];
        for isa in bn::isas() {
            let (r, y) = case.call(isa, true);
            if sh.is_empty() && bn::eps_valid(eps) {
                assert_eq!(r, Ok(()), "{ctx}: empty batch");
            } else {
                expect_errors(r, &want, &format!("{ctx} isa={isa:?}"));
            }
            assert!(
                y.iter().all(|v| v.to_bits() == SENTINEL.to_bits()),
                "{ctx} isa={isa:?}: failed or empty call wrote the output"
            );
        }
        return;
    }

    let (r, base) = case.call(Some(Isa::Portable), false);
    assert_eq!(r, Ok(()), "{ctx}: portable baseline failed");
    // The reference, element by element (inference has no statistics: a
    // NaN or inf in x affects its own element only).
    for (i, (&v, &y)) in case.x.iter().zip(&base).enumerate() {
        if !bn::sampled(i, case.x.len()) {
            continue;
        }
        let c = bn::channel_of(sh, i);
        let rstd = 1.0 / (case.rv[c] as f64 + eps as f64).sqrt();
        let z = (v as f64 - case.rm[c] as f64) * rstd;
        if let Err(msg) = case.common.element(c, y, z) {
            panic!(
                "{ctx}: element {i} (channel {c}, x = {v:e}, rm = {:e}, rv = {:e}): {msg}",
                case.rm[c], case.rv[c]
            );
        }
    }
    for isa in bn::isas() {
        let (r, y) = case.call(isa, true);
        assert_eq!(r, Ok(()), "{ctx}: isa {isa:?} failed");
        same_bits(&y, &base, &ctx, &format!("isa {isa:?}: output"));
    }
    if case.x.len() >= SPLIT_ELEMS && case.x.len() < STREAM_ELEMS {
        for pool in bn::pools() {
            let (r, y) = pool.install(|| case.call(Some(Isa::best()), true));
            let what = format!("{} threads", pool.current_num_threads());
            assert_eq!(r, Ok(()), "{ctx}: {what} failed");
            same_bits(&y, &base, &ctx, &format!("{what}: output"));
        }
    }
}

/// `fold`: `scale = w / sqrt(rv + eps)`, `shift = b - rm * scale`, both in
/// f64 and rounded once (documented), so the bits are known.
fn check_fold(case: &Case, ctx: &str) {
    let c = case.common.shape.c;
    let eps = case.common.eps;
    let (mut scale, mut shift) = (vec![SENTINEL; c], vec![SENTINEL; c]);
    let r = case
        .common
        .bn(None, true)
        .fold(&case.rm, &case.rv, &mut scale, &mut shift);
    if !bn::eps_valid(eps) {
        expect_errors(r, &[Error::Eps { eps }], &format!("{ctx}: fold"));
        assert!(
            scale
                .iter()
                .chain(&shift)
                .all(|v| v.to_bits() == SENTINEL.to_bits()),
            "{ctx}: failed fold wrote its output"
        );
        return;
    }
    assert_eq!(r, Ok(()), "{ctx}: fold");
    for ch in 0..c {
        let (w, b) = (case.common.w(ch) as f64, case.common.b(ch) as f64);
        let root = (case.rv[ch] as f64 + eps as f64).sqrt();
        // `w / sqrt(v)` may be evaluated as `(1 / sqrt(v)) * w`: one f64
        // rounding apart, which `b - rm * a` may magnify, so either reading
        // must match exactly.
        let ok = [w / root, (1.0 / root) * w].into_iter().any(|a| {
            let (s, t) = (a as f32, (b - case.rm[ch] as f64 * a) as f32);
            let eq = |x: f32, y: f32| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan());
            eq(scale[ch], s) && eq(shift[ch], t)
        });
        assert!(
            ok,
            "{ctx}: fold channel {ch}: got ({:e}, {:e}) for w = {w:e}, b = {b:e}, rm = {:e}, rv = {:e}",
            scale[ch], shift[ch], case.rm[ch], case.rv[ch]
        );
    }
}

fn check_corrupted(case: &Case, kind: u8, arg: u32, ctx: &str) {
    let sh = case.common.shape;
    let c = sh.c;
    let mut common = case.common.clone();
    if !bn::eps_valid(common.eps) {
        common.eps = 1e-5;
    }
    let mut shape = sh;
    let mut x = case.x.clone();
    let mut y = vec![SENTINEL; x.len()];
    let (mut rm, mut rv) = (case.rm.clone(), case.rv.clone());
    let mut isa = None;
    let len = x.len();
    let want = match kind % 9 {
        0 => {
            x = vec![0.5; wrong_len(len, arg)];
            Error::Length {
                what: "input",
                expected: len,
                actual: x.len(),
            }
        }
        1 => {
            y = vec![SENTINEL; wrong_len(len, arg)];
            Error::Length {
                what: "output",
                expected: len,
                actual: y.len(),
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
            rm = vec![0.0; wrong_len(c, arg)];
            Error::Length {
                what: "running mean",
                expected: c,
                actual: rm.len(),
            }
        }
        5 => {
            rv = vec![1.0; wrong_len(c, arg)];
            Error::Length {
                what: "running var",
                expected: c,
                actual: rv.len(),
            }
        }
        6 => {
            common.eps = bad_eps(arg);
            Error::Eps { eps: common.eps }
        }
        7 => match bn::unavailable_isa() {
            Some(bad) => {
                isa = Some(bad);
                Error::IsaUnavailable { isa: bad.name() }
            }
            None => return,
        },
        _ => {
            let a = arg as usize;
            shape = BatchShape::new(sh.layout, 2 + a % 5, usize::MAX / 3 + a % 7, 3 + a % 3);
            Error::TooLarge { what: "input" }
        }
    };
    let isas = if isa.is_some() { vec![isa] } else { bn::isas() };
    for isa in isas {
        let mut out = y.clone();
        let got = common
            .bn(isa, true)
            .forward_inference(shape, &x, &mut out, &rm, &rv);
        let what = format!("{ctx} corrupted (kind {}) isa={isa:?}", kind % 9);
        expect_errors(got, std::slice::from_ref(&want), &what);
        assert!(
            out.iter().all(|v| v.to_bits() == SENTINEL.to_bits()),
            "{what}: failed call wrote the output"
        );
    }
}
