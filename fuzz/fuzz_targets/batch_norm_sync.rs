//! SyncBatchNorm: a batch cut along N into shards at statistics-unit
//! boundaries (`nchw_unit_samples` samples for NCHW planes, multiples of
//! `nhwc_chunk_rows` rows for rows of channels), every shard but the last
//! the same power-of-two number of units; `local_moments` of each shard,
//! `merge_ranks` in rank order, then `apply_train` on each shard must equal
//! `forward_train` of the whole batch bit for bit (merged moments, output,
//! saved and running statistics) on every ISA. Bad arguments give typed
//! errors and write nothing.
#![no_main]

use simdnorm::{BatchNorm, BatchShape, ChannelMoments, Error, Isa, Layout, Momentum};
use simdnorm_fuzz::Src;
use simdnorm_fuzz::batch_norm::{
    self as bn, Common, MAX_SYNC_ELEMS, TrainOut, bad_eps, expect_errors, head, moments_bits,
    wrong_len,
};
use simdnorm_fuzz::values;

libfuzzer_sys::fuzz_target!(|data: &[u8]| run(data));

const SPATIAL: [usize; 16] = [
    1, 1, 2, 3, 4, 7, 8, 16, 49, 64, 100, 256, 1000, 1024, 2048, 3000,
];
const CHANNELS: [usize; 14] = [0, 1, 1, 2, 3, 5, 16, 17, 33, 64, 65, 100, 300, 1025];

struct Case {
    common: Common,
    /// Samples per shard (every shard but the last).
    shard_n: usize,
    momentum: Momentum,
    running: bool,
    rm0: Vec<f32>,
    rv0: Vec<f32>,
    corrupt: Option<(u8, u32)>,
    x: Vec<f32>,
}

/// Samples per shard holding `2^j` statistics units (at least `2^j`), or
/// `None` when no such cut along N exists for this geometry.
fn shard_samples(layout: Layout, c: usize, spatial: usize, j: u32) -> Option<usize> {
    if layout == Layout::Nchw && spatial > 1 {
        return Some(BatchNorm::nchw_unit_samples(spatial) << j);
    }
    let r = BatchNorm::nhwc_chunk_rows(c);
    (j..j + 12)
        .map(|k| r << k)
        .find(|rows| rows % spatial == 0)
        .map(|rows| rows / spatial)
}

impl Case {
    fn decode(data: &[u8]) -> Case {
        let mut src = Src::new(data);
        let layout = if src.u8() & 1 == 0 {
            Layout::Nchw
        } else {
            Layout::Nhwc
        };
        let spatial = src.pick(&SPATIAL);
        let c = src.pick(&CHANNELS);
        let j = (src.u8() % 4) as u32;
        let mut shards = 1 + src.below(4);
        let last = src.u16() as usize;
        let (n, shard_n) = match shard_samples(layout, c, spatial, j) {
            Some(per) => {
                let per_shard = per * c.max(1) * spatial;
                while shards > 1 && (shards - 1) * per_shard >= MAX_SYNC_ELEMS {
                    shards -= 1;
                }
                let cap = (MAX_SYNC_ELEMS / (c.max(1) * spatial)).max(1);
                let tail = (last % per + 1).min(cap);
                ((shards - 1) * per + tail, per)
            }
            None => {
                let n = last % (MAX_SYNC_ELEMS / (c.max(1) * spatial)).max(1);
                (n, n.max(1))
            }
        };
        let shape = BatchShape::new(layout, n, c, spatial);
        let eps = values::eps(&mut src);
        let weight = values::params(&mut src, c);
        let bias = values::params(&mut src, c);
        let common = Common {
            shape,
            eps,
            weight,
            bias,
        };
        let momentum = bn::momentum(&mut src);
        let running = src.chance(200);
        let rm0 = bn::running_vec(&mut src, c, false);
        let rv0 = bn::running_vec(&mut src, c, true);
        let corrupt = if src.chance(20) {
            Some((src.u8(), src.u32()))
        } else {
            None
        };
        let x = bn::data(&mut src, shape);
        Case {
            common,
            shard_n,
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
            "{:?} shard_n={} eps={:e} weight={} bias={} momentum={:?} running={} x[..24]={:?}",
            self.common.shape,
            self.shard_n,
            self.common.eps,
            self.common.weight.is_some(),
            self.common.bias.is_some(),
            self.momentum,
            self.running,
            head(&self.x),
        )
    }

    /// The shards: (shape, first element, element count).
    fn shards(&self) -> Vec<(BatchShape, usize, usize)> {
        let sh = self.common.shape;
        let per_sample = sh.c * sh.spatial;
        let mut out = Vec::new();
        let mut n0 = 0;
        loop {
            let n = self.shard_n.min(sh.n - n0);
            out.push((
                BatchShape::new(sh.layout, n, sh.c, sh.spatial),
                n0 * per_sample,
                n * per_sample,
            ));
            n0 += n;
            if n0 >= sh.n {
                return out;
            }
        }
    }

    fn momentum(&self) -> Option<Momentum> {
        self.running.then_some(self.momentum)
    }

    fn fresh(&self, len: usize) -> TrainOut {
        TrainOut::fresh(len, self.common.shape.c, &self.rm0, &self.rv0)
    }
}

fn run(data: &[u8]) {
    let case = Case::decode(data);
    let ctx = case.describe();
    bn::trace(&format!("{ctx} corrupt={:?}", case.corrupt));
    let sh = case.common.shape;
    let eps = case.common.eps;
    if let Some((kind, arg)) = case.corrupt {
        return check_corrupted(&case, kind, arg, &ctx);
    }
    if !bn::eps_valid(eps) {
        let mut m = ChannelMoments::new(1);
        let before = m.clone();
        let r = case
            .common
            .bn(None, true)
            .local_moments(sh, &case.x, &mut m);
        expect_errors(r, &[Error::Eps { eps }], &ctx);
        assert_eq!(
            moments_bits(&m),
            moments_bits(&before),
            "{ctx}: wrote moments"
        );
        return;
    }
    let shards = case.shards();
    for isa in Isa::available() {
        let ctx = format!("{ctx} isa={isa}");
        let op = case.common.bn(Some(isa), true);
        let mut whole = case.fresh(case.x.len());
        let (y, stats) = whole.stats(case.momentum());
        whole.result = op.forward_train(sh, &case.x, y, stats);

        let mut all = ChannelMoments::new(3); // resized by the call
        op.local_moments(sh, &case.x, &mut all)
            .unwrap_or_else(|e| panic!("{ctx}: local_moments of the whole: {e}"));
        assert_eq!(all.channels(), sh.c, "{ctx}");
        let want_count = if sh.is_empty() { 0 } else { sh.per_channel() };
        assert_eq!(all.count, want_count as u64, "{ctx}: count");
        let mut parts = Vec::new();
        for &(s, at, len) in &shards {
            let mut m = ChannelMoments::default();
            op.local_moments(s, &case.x[at..at + len], &mut m)
                .unwrap_or_else(|e| panic!("{ctx}: local_moments of {s:?}: {e}"));
            parts.push(m);
        }
        let mut merged = ChannelMoments::new(sh.c + 2);
        ChannelMoments::merge_ranks(&parts, &mut merged)
            .unwrap_or_else(|e| panic!("{ctx}: merge_ranks: {e}"));
        assert_eq!(
            moments_bits(&merged),
            moments_bits(&all),
            "{ctx}: merged shard moments differ from the whole batch's ({} shards)",
            shards.len()
        );

        // apply_train on every shard with the merged statistics.
        let mut y_all = Vec::with_capacity(case.x.len());
        for (k, &(s, at, len)) in shards.iter().enumerate() {
            let mut o = case.fresh(len);
            let (y, stats) = o.stats(case.momentum());
            o.result = op.apply_train(s, &case.x[at..at + len], y, &merged, stats);
            let what = format!("shard {k} of {} ({s:?})", shards.len());
            if sh.c > 0 && sh.is_empty() && whole.result.is_ok() {
                // forward_train of an empty batch is a no-op; apply_train
                // with a count of 0 has no statistics to apply.
                expect_errors(
                    o.result.clone(),
                    &[Error::SingleValuePerChannel { count: 0 }],
                    &format!("{ctx}: {what}"),
                );
                o.result = Ok(());
                o.same(
                    &case.fresh(len),
                    &ctx,
                    &format!("{what}: failed call wrote"),
                );
                continue;
            }
            if let Err(e) = &whole.result {
                expect_errors(
                    o.result.clone(),
                    std::slice::from_ref(e),
                    &format!("{ctx}: {what}"),
                );
            } else {
                assert_eq!(o.result, Ok(()), "{ctx}: {what}: result");
            }
            if o.result.is_err() {
                o.result = Ok(());
                o.same(
                    &case.fresh(len),
                    &ctx,
                    &format!("{what}: failed call wrote"),
                );
                continue;
            }
            y_all.extend_from_slice(&o.y);
            let mut cmp = o.clone();
            cmp.y = whole.y[at..at + len].to_vec();
            o.same(&cmp, &ctx, &what);
            // Saved and running statistics: the same in every shard.
            let mut same_stats = whole.clone();
            same_stats.y = o.y.clone();
            o.same(&same_stats, &ctx, &format!("{what}: statistics"));
        }
        if whole.result.is_ok() && !sh.is_empty() {
            assert_eq!(y_all.len(), case.x.len(), "{ctx}");
        }
    }
}

/// One argument made invalid: exactly its error, nothing written.
fn check_corrupted(case: &Case, kind: u8, arg: u32, ctx: &str) {
    let sh = case.common.shape;
    let c = sh.c;
    let mut common = case.common.clone();
    if !bn::eps_valid(common.eps) {
        common.eps = 1e-5;
    }
    let momentum = Some(Momentum::Onnx(0.9));
    let mut whole = ChannelMoments::default();
    common
        .bn(Some(Isa::Portable), false)
        .local_moments(sh, &case.x, &mut whole)
        .unwrap_or_else(|e| panic!("{ctx}: local_moments: {e}"));
    let shards = case.shards();
    let (s, at, len) = shards[0];
    let xs = &case.x[at..at + len];
    let kind = kind % 6;
    let what = format!("{ctx} corrupted (kind {kind})");
    match kind {
        0 => {
            let mut parts = vec![whole.clone()];
            let bad_len = wrong_len(c, arg);
            let mut bad = ChannelMoments::new(c);
            if arg & 1 == 0 {
                bad.mean = vec![0.0; bad_len];
            }
            bad.m2 = vec![0.0; bad_len];
            parts.insert(1 + arg as usize % parts.len(), bad);
            let mut out = ChannelMoments::new(2);
            let before = out.clone();
            expect_errors(
                ChannelMoments::merge_ranks(&parts, &mut out),
                &[Error::Length {
                    what: "shard moments",
                    expected: c,
                    actual: bad_len,
                }],
                &what,
            );
            assert_eq!(moments_bits(&out), moments_bits(&before), "{what}: wrote");
        }
        3 | 4 => {
            let mut m = ChannelMoments::new(2);
            let before = m.clone();
            let (x, want) = if kind == 3 {
                common.eps = bad_eps(arg);
                (xs.to_vec(), Error::Eps { eps: common.eps })
            } else {
                let x = vec![1.0f32; wrong_len(len, arg)];
                let want = Error::Length {
                    what: "input",
                    expected: len,
                    actual: x.len(),
                };
                (x, want)
            };
            for isa in Isa::available() {
                let r = common.bn(Some(isa), true).local_moments(s, &x, &mut m);
                expect_errors(r, std::slice::from_ref(&want), &what);
                assert_eq!(moments_bits(&m), moments_bits(&before), "{what}: wrote");
            }
        }
        _ => {
            let mut merged = whole.clone();
            let want = match kind {
                1 if c > 0 => {
                    merged.count = u64::from(arg % 2);
                    Error::SingleValuePerChannel {
                        count: merged.count as usize,
                    }
                }
                2 => {
                    let bad = wrong_len(c, arg);
                    merged.mean.resize(bad, 0.5);
                    merged.m2.resize(bad, 0.5);
                    Error::Length {
                        what: "merged moments",
                        expected: c,
                        actual: bad,
                    }
                }
                5 => {
                    common.eps = bad_eps(arg);
                    Error::Eps { eps: common.eps }
                }
                _ => return,
            };
            for isa in Isa::available() {
                let mut o = case.fresh(len);
                let before = o.clone();
                let (y, stats) = o.stats(momentum);
                let r = common
                    .bn(Some(isa), true)
                    .apply_train(s, xs, y, &merged, stats);
                expect_errors(r, std::slice::from_ref(&want), &what);
                o.same(&before, &what, "failed call wrote");
            }
        }
    }
}
