#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/corpus/<target>/.

Each seed is a few dozen bytes laid out as the decoders in fuzz/src/ and
fuzz/fuzz_targets/ read them, aimed at one branch: a constant row, a big
offset with a tiny spread, extremes that force rescaling, NaN and infinity,
strides and misaligned views, a shape large enough for rayon to split, and
every kind of bad argument. Run it from anywhere after changing a decoder;
`SIMDNORM_FUZZ_DEBUG=1 cargo +nightly fuzz run TARGET fuzz/corpus/TARGET/NAME`
prints what a seed decodes to.
"""

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))

# Indices into the decoders' tables (fuzz/src/values.rs, fuzz/src/rows.rs).
HARD = {"0": 0, "-0": 1, "1": 2, "nan": 11, "inf": 9, "-inf": 10, "min_sub": 17,
        "max": 21, "1e30": 23, "1e-30": 25, "1e4": 29}
OFFSETS = {"1e4": 0, "1e6": 3, "1e30": 5, "3e38": 7, "-3e38": 8, "1e-30": 9,
           "1e-40": 11, "2^32": 12, "0": 15}
EPS = {"1e-5": 0, "0": 2, "-0": 3, "max": 11}
COLS = [0, 1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 48, 63, 64, 65, 127, 128, 129,
        255, 256, 511, 512, 513, 768, 1023, 1024, 1025, 2047, 2048, 4097]
FORM = {"forward": 0, "in_place": 1, "train": 2}


def u16(v):
    return struct.pack("<H", v)


def u32(v):
    return struct.pack("<I", v)


def u64(v):
    return struct.pack("<Q", v)


def below(v, n):
    """Bytes that `Src::below(n)` decodes to `v`."""
    if n <= 256:
        return bytes([v])
    if n <= 65536:
        return u16(v)
    return u32(v)


def hard(name):
    """`values::scalar` picking a value from HARD."""
    return bytes([0, HARD[name]])


def small(k):
    """`values::scalar` giving the exact small value k / 4."""
    return bytes([100, k & 0xFF])


# Row rules of `values::fill_row`; each ends with "no injection" unless told.
def inject(what=None, at=0, n=1):
    if what is None:
        return b"\xff"
    return b"\x00" + below(at, n) + bytes([{"nan": 0, "inf": 1, "-inf": 2}[what]])


def row_values(vals, injected=b"\xff"):
    return b"\x00" + b"".join(vals) + injected


def row_offset_spread(offset, down, seed=1, injected=b"\xff"):
    return b"\x02" + bytes([OFFSETS[offset], down]) + u64(seed) + injected


def row_constant(value, changes=(), injected=b"\xff", n=1):
    out = b"\x04" + value + bytes([len(changes)])
    for at, v in changes:
        # v None: next_up of the constant; else a scalar encoding.
        out += below(at, n) + (b"\x00" if v is None else b"\xff" + v)
    return out + injected


def row_normal(offset, log2_std, seed=7, injected=b"\xff"):
    return b"\x05" + bytes([OFFSETS[offset], log2_std + 40]) + u64(seed) + injected


def row_sparse(negative, items, n, injected=b"\xff"):
    out = b"\x06" + bytes([255 if negative else 0, len(items)])
    for at, v in items:
        out += below(at, n) + v
    return out + injected


def params(mode=None, seed=3):
    """`values::params`: None, 'ones', 'seeded' (normal), or 'hard' (one hard
    value repeated)."""
    if mode is None:
        return b"\x00\xff"
    if mode == "ones":
        return b"\x03\xff"
    if mode == "seeded":
        return b"\x05\xff" + u64(seed)
    if mode == "hard":
        return b"\x04\x00\xff" + hard("1e30")
    raise ValueError(mode)


def layout(pad=0, offset=0, slack=0):
    if pad == 0:
        return b"\xff" + bytes([offset])
    return b"\x00" + bytes([pad - 1, offset, slack])


def rows_case(op, form, rows, cols, eps="1e-5", weight=None, bias=None,
              lin=b"\xff\x00", lout=b"\xff\x00", corrupt=None, data=b""):
    """A case for the layer_norm / rms_norm targets (`rows::Case::decode`)."""
    if cols in COLS and rows < 5:
        shape = bytes([6, rows, COLS.index(cols)])  # class < 128
    else:
        assert rows < 9 and cols < 80
        shape = bytes([200, rows, cols])  # 128 <= class < 253
    eps_bytes = bytes([0, EPS[eps]]) if isinstance(eps, str) else b"\xf0" + u32(eps)
    out = bytes([FORM[form]]) + shape + eps_bytes + params(weight)
    if op == "layer_norm":
        out += params(bias, seed=5)
    out += lin + lout
    out += b"\xff" if corrupt is None else b"\x00" + bytes([corrupt[0]]) + u32(corrupt[1])
    return out + data


def big_case(op, rows, extra):
    """Shape class >= 253: rows >= 2 and rows * cols >= 2^16 (rayon splits)."""
    out = bytes([0, 253, rows - 2]) + u16(extra) + bytes([0, 0])
    out += params("seeded")
    if op == "layer_norm":
        out += params(None)
    out += b"\xff\x00\xff\x00\xff"
    for r in range(rows):
        out += row_normal("1e4", 0, seed=r + 11)
    return out


def row_seeds(op):
    n = 17
    seeds = {
        "offset_spread": rows_case(op, "train", 2, 17, data=row_offset_spread("1e4", 20)
                                   + row_offset_spread("1e6", 30, seed=2)),
        "normal_513": rows_case(op, "train", 3, 513, weight="seeded", bias="seeded",
                                data=row_normal("1e4", 0) + row_normal("0", -20, seed=8)
                                + row_normal("1e30", 60, seed=9)),
        "constant_bias": rows_case(op, "train", 2, 33, bias="seeded", weight="seeded",
                                   data=row_constant(hard("1e4"))
                                   + row_constant(small(-3), changes=[(5, None)], n=33)),
        "constant_eps0": rows_case(op, "train", 2, 16, eps="0",
                                   data=row_constant(small(7)) + row_sparse(True, [], 16)),
        "neg_zero_eps": rows_case(op, "train", 1, 15, eps="-0", data=row_constant(hard("min_sub"))),
        "nan_inf_rows": rows_case(op, "train", 3, n,
                                  data=row_normal("1e4", 0, injected=inject("nan", 3, n))
                                  + row_normal("0", 0, injected=inject("-inf", 16, n))
                                  + row_values([hard("1")] * n, inject("inf", 0, n))),
        "extremes": rows_case(op, "train", 4, 65,
                              data=row_offset_spread("3e38", 2) + row_offset_spread("-3e38", 30)
                              + row_offset_spread("1e-40", 3) + row_offset_spread("2^32", 24)),
        "hard_values": rows_case(op, "forward", 1, 7, weight="ones",
                                 data=row_values([hard("max"), hard("max"), hard("-0"), hard("1e30"),
                                                  hard("min_sub"), hard("1e-30"), hard("0")])),
        "sparse": rows_case(op, "train", 2, 64,
                            data=row_sparse(False, [(3, hard("1e30"))], 64)
                            + row_sparse(True, [(63, hard("min_sub"))], 64)),
        "strided_in_place": rows_case(op, "in_place", 3, 31, weight="seeded",
                                      lout=layout(pad=5, offset=3, slack=2),
                                      data=row_normal("1e4", -3) * 3),
        "strided_forward": rows_case(op, "forward", 3, 20, bias="seeded",
                                     lin=layout(pad=9, offset=7, slack=1),
                                     lout=layout(pad=1, offset=13),
                                     data=row_normal("1e6", 2) * 3),
        "eps_max": rows_case(op, "train", 1, 32, eps="max", data=row_normal("1e30", 39)),
        "eps_nan": rows_case(op, "train", 2, 3, eps=0x7FC00000, data=row_normal("0", 0) * 2),
        "empty_rows": rows_case(op, "forward", 3, 0),
        "no_rows": rows_case(op, "train", 0, 64),
        "big_parallel": big_case(op, 3, 100),
    }
    if op == "rms_norm":
        del seeds["neg_zero_eps"]
        seeds["zero_row"] = rows_case(op, "train", 2, 17, data=row_sparse(True, [], 17)
                                      + row_sparse(False, [], 17))
    for kind in range(10):
        seeds[f"bad_arg_{kind}"] = rows_case(op, "train", 2, 17, weight="ones", bias="ones",
                                             corrupt=(kind, 6 + kind),
                                             data=row_normal("1e4", 0) * 2)
    return seeds


def raw_moments(count_mode, count=b"", mean=b"\x00" + hard("1"), m2=b"\x00" + hard("1")):
    return bytes([count_mode]) + count + mean + m2 + b"\x00"


def moments_case(a, b, n_bytes, n, cuts, first, chunks, data):
    out = a + b + n_bytes + bytes([len(cuts)])
    for at, method in cuts:
        out += below(at, n + 1) + bytes([method])
    out += bytes([first]) + bytes([len(chunks)])
    for at in chunks:
        out += below(at, n + 1)
    return out + data


def moments_seeds():
    empty = raw_moments(0)
    one = raw_moments(1, b"\x00")
    big = raw_moments(3, u64(2**64 - 3))
    f64 = lambda v: b"\xff" + u64(struct.unpack("<Q", struct.pack("<d", v))[0])
    table = [1, 2, 15, 16, 17, 63, 64, 65, 511, 512, 513, 1000, 2048, 4097]
    t = lambda n: bytes([128, table.index(n)])
    return {
        "empty_both": moments_case(empty, empty, bytes([0, 0]), 0, [], 0, [], b""),
        "far_means": moments_case(raw_moments(2, u32(1000), f64(1e30), f64(1e40)),
                                  raw_moments(2, u32(3), f64(-1e30), f64(0.0)),
                                  t(65), 65, [(20, 1), (40, 2)], 0, [],
                                  row_offset_spread("1e4", 20)),
        "big_counts": moments_case(big, big, t(17), 17, [], 2, [], row_normal("1e6", 0)),
        "shards_mixed": moments_case(one, empty, t(4097), 4097, [(1000, 1), (1000, 2), (3000, 0)], 2,
                                     [2000, 3500], row_offset_spread("1e30", 0)
                                     + row_offset_spread("1e-40", 5) + row_normal("1e4", -10)),
        "constant": moments_case(one, one, t(513), 513, [(256, 1)], 2, [],
                                 row_constant(hard("1e4"))),
        "non_finite": moments_case(one, one, t(64), 64, [(10, 0)], 1, [],
                                   row_normal("0", 0, injected=inject("inf", 40, 64))),
        "subnormal_means": moments_case(raw_moments(1, b"\x01", f64(1e-315), f64(0.0)),
                                        raw_moments(1, b"\x01", f64(-3e-320), f64(5e-324)),
                                        bytes([0, 5]), 5, [], 0, [],
                                        row_values([hard("min_sub"), hard("-0"), small(1), hard("0"),
                                                    hard("min_sub")])),
        "long": moments_case(one, one, b"\xff" + u16(20000), 20000, [(7000, 2)], 2, [],
                             row_normal("1e4", 0)),
    }


def copy_seeds():
    def case(len_bytes, offs, mode, data, dst=b"\xff"):
        return len_bytes + dst + bytes(offs) + bytes([mode]) + data
    return {
        "tiny_raw": case(bytes([0, 5]), [1, 3], 0, u32(0x7FC01234) + u32(0x80000000) + u32(1)
                         + u32(0xFF800000) + u32(0x7F7FFFFF)),
        "aligned_64": case(bytes([128, 3, 16]), [0, 0], 1, u64(42)),
        "misaligned_4096": case(bytes([128, 7, 17]), [5, 11], 1, u64(43)),
        "hard_rows": case(bytes([0, 77]), [2, 15], 2, row_sparse(True, [(3, hard("nan"))], 77)),
        "long": case(b"\xff" + u32(100_003), [3, 9], 1, u64(44)),
        "mismatch": case(bytes([0, 40]), [0, 0], 1, u64(45), dst=b"\x00" + bytes([17])),
        "empty": case(bytes([0, 0]), [0, 0], 0, b""),
    }


# --- BatchNorm (fuzz/src/batch_norm.rs, fuzz/fuzz_targets/batch_norm_*.rs) ---
BN_CHANNELS = [0, 1, 1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 100,
               127, 128, 129, 255, 257, 1000, 1025]
BN_SPATIAL = [0, 1, 1, 2, 3, 4, 7, 9, 15, 16, 17, 31, 33, 49, 63, 64, 65, 100, 127, 129, 255,
              513, 1023, 1024, 2048, 2049]
BN_EPS = dict(EPS, min_sub=9)
GOOD_MOMENTUM = {0.1: 0, 0.9: 1, 0.0: 2, 1.0: 3, 0.5: 5}
BAD_MOMENTUM = {"nan": 0, "-0.1": 1, "above_1": 2, "inf": 3}
CUMULATIVE = {0: 0, 1: 1, 2**53: 7, 2**64 - 1: 10}
STREAM_GATE = 77  # a u16 that opens the streamed shape class


def bn_shape(layout, n, c, spatial):
    """A small shape (class < 128 from the tables, else class 200: n < 70,
    c < 40, spatial < 40)."""
    lay = bytes([0 if layout == "nchw" else 1])
    if c in BN_CHANNELS and spatial in BN_SPATIAL and n < 9:
        return bytes([6]) + lay + bytes([n, BN_CHANNELS.index(c), BN_SPATIAL.index(spatial)])
    assert n < 70 and c < 40 and spatial < 40
    return bytes([200]) + lay + bytes([n, c, spatial])


def bn_big(layout, c_idx, s_idx, stream=False):
    lay = bytes([0 if layout == "nchw" else 1])
    if stream:
        return b"\xff" + lay + u16(STREAM_GATE) + bytes([c_idx, s_idx, 0])
    return b"\xfd" + lay + bytes([c_idx, s_idx, 1])


def bn_eps(name):
    return bytes([0, BN_EPS[name]]) if isinstance(name, str) else b"\xf0" + u32(name)


def bn_momentum(kind, value):
    if kind == "cumulative":
        return b"\x02\x00" + bytes([CUMULATIVE[value]])
    k = bytes([0 if kind == "pytorch" else 1])
    if value in BAD_MOMENTUM:
        return k + bytes([220, BAD_MOMENTUM[value]])
    return k + bytes([0, GOOD_MOMENTUM[value]])


def running(mode="default", seed=9, value=None):
    """`batch_norm::running_vec`: 'default' (0 / 1), 'seeded', 'each' (hard
    values from `vals`), 'same' (one scalar)."""
    if mode == "default":
        return b"\x00"
    if mode == "seeded":
        return b"\x02" + u64(seed) + bytes([22])
    if mode == "same":
        return b"\x01" + value
    if mode == "each":
        return b"\x05" + b"".join(value)
    raise ValueError(mode)


def no_corrupt(corrupt=None):
    return b"\xff" if corrupt is None else b"\x00" + bytes([corrupt[0]]) + u32(corrupt[1])


def bn_train_case(shape, eps="1e-5", weight=None, bias=None, momentum=("pytorch", 0.1),
                  track=True, rm=b"\x00", rv=b"\x00", corrupt=None, data=b""):
    return (shape + bn_eps(eps) + params(weight) + params(bias, seed=5)
            + bn_momentum(*momentum) + (b"\x00" if track else b"\xff") + rm + rv
            + no_corrupt(corrupt) + data)


def bn_infer_case(shape, eps="1e-5", weight=None, bias=None, rm=b"\x00", rv=b"\x00",
                  corrupt=None, data=b""):
    return (shape + bn_eps(eps) + params(weight) + params(bias, seed=5) + rm + rv
            + no_corrupt(corrupt) + data)


def bn_common_seeds(case):
    """Seeds shared by the inference and training targets."""
    nan_data = (row_normal("0", 0, injected=inject("nan", 5, 34))
                + row_normal("1e4", 0, injected=inject("inf", 33, 34))
                + row_normal("1e6", -3) + row_constant(small(3)))
    seeds = {
        "nchw_7x7": case(bn_shape("nchw", 4, 3, 49), weight="seeded", bias="seeded",
                         data=row_normal("1e4", 0) + row_offset_spread("1e6", 30)
                         + row_constant(hard("1e4"))),
        "nhwc_17": case(bn_shape("nhwc", 8, 17, 16), weight="seeded",
                        data=row_normal("0", 0) + row_offset_spread("1e30", 20) * 16),
        "nc_only": case(bn_shape("nchw", 8, 33, 1), bias="seeded",
                        data=row_normal("1e4", -2) * 33),
        "nan_inf_channels": case(bn_shape("nchw", 2, 4, 17), data=nan_data),
        "nan_inf_nhwc": case(bn_shape("nhwc", 2, 4, 17), data=nan_data),
        "units_2049": case(bn_shape("nchw", 3, 1, 2049), data=row_offset_spread("2^32", 10)),
        "units_1024": case(bn_shape("nchw", 7, 1, 1024), data=row_normal("1e4", 0)),
        "nhwc_chunks": case(bn_shape("nhwc", 69, 1, 39), data=row_normal("1e6", 0)),
        "extremes": case(bn_shape("nhwc", 3, 4, 15), eps="min_sub", weight="hard",
                         data=row_offset_spread("3e38", 2) + row_offset_spread("1e-40", 3)
                         + row_constant(hard("max")) + row_offset_spread("-3e38", 30)),
        "constant_eps0": case(bn_shape("nchw", 3, 2, 7), eps="0",
                              data=row_constant(small(7)) + row_sparse(True, [], 21)),
        "neg_zero_eps": case(bn_shape("nhwc", 3, 2, 7), eps="-0",
                             data=row_constant(hard("min_sub")) + row_constant(bytes([0, 27]))),
        "eps_nan": case(bn_shape("nchw", 2, 3, 4), eps=0x7FC00000, data=row_normal("0", 0)),
        "eps_max": case(bn_shape("nchw", 2, 3, 4), eps="max", data=row_normal("1e30", 39)),
        "empty_n": case(bn_shape("nchw", 0, 5, 16)),
        "empty_spatial": case(bn_shape("nhwc", 3, 5, 0)),
        "no_channels": case(bn_shape("nhwc", 3, 0, 5)),
        "threaded_nchw": case(bn_big("nchw", 2, 2), weight="seeded", data=row_normal("1e4", 0)),
        "threaded_nhwc": case(bn_big("nhwc", 3, 0), data=row_normal("1e4", 0) * 17),
        "streamed": case(bn_big("nhwc", 1, 0, stream=True),
                         data=bytes([OFFSETS["1e4"], 20]) + u64(5) + b"\x00" + u32(77)),
    }
    return seeds


def bn_train_seeds():
    case = bn_train_case
    seeds = bn_common_seeds(case)
    seeds.update({
        "single_value": case(bn_shape("nchw", 1, 5, 1), data=row_normal("0", 0) * 5),
        "onnx_running": case(bn_shape("nhwc", 5, 3, 9), momentum=("onnx", 0.9),
                             rm=running("seeded"), rv=running("seeded", seed=4),
                             data=row_normal("1e4", 0) * 3),
        "cumulative_max": case(bn_shape("nchw", 5, 3, 9), momentum=("cumulative", 2**64 - 1),
                               data=row_normal("1e4", 0) * 3),
        "cumulative_0": case(bn_shape("nchw", 2, 2, 2), momentum=("cumulative", 0),
                             data=row_values([small(1), small(2), small(3), small(5)]) * 2),
        "momentum_0_hard_running": case(bn_shape("nchw", 2, 3, 3), momentum=("pytorch", 0.0),
                                        rm=running("each", value=[hard("inf"), hard("nan"), hard("max")]),
                                        rv=running("each", value=[hard("-inf"), small(-4), hard("min_sub")]),
                                        data=row_normal("0", 0) * 3),
        "momentum_nan": case(bn_shape("nchw", 2, 3, 4), momentum=("pytorch", "nan"),
                             data=row_normal("0", 0) * 3),
        "momentum_above_1_untracked": case(bn_shape("nchw", 2, 3, 4), momentum=("onnx", "above_1"),
                                           track=False, data=row_normal("0", 0) * 3),
    })
    for kind in range(12):
        seeds[f"bad_arg_{kind}"] = case(bn_shape("nchw", 2, 3, 5), weight="ones", bias="ones",
                                        corrupt=(kind, 6 + kind), data=row_normal("1e4", 0) * 3)
    return seeds


def bn_infer_seeds():
    case = bn_infer_case
    seeds = bn_common_seeds(case)
    seeds.update({
        "seeded_running": case(bn_shape("nhwc", 4, 5, 3), rm=running("seeded"),
                               rv=running("seeded", seed=4), weight="seeded",
                               data=row_normal("0", 0) * 5),
        "zero_var_eps0": case(bn_shape("nchw", 2, 2, 3), eps="0", rv=running("same", value=hard("0")),
                              data=row_values([small(0), small(1), small(-1)] * 2) * 2),
        "subnormal_var_big_weight": case(bn_shape("nchw", 2, 3, 3), eps="0", weight="hard",
                                         rm=running("each", value=[bytes([0, 27]), small(4), hard("0")]),
                                         rv=running("same", value=hard("min_sub")),
                                         data=row_constant(bytes([0, 27])) + row_normal("1e-30", -100 + 60)
                                         + row_sparse(False, [(2, hard("min_sub"))], 6)),
        "negative_var": case(bn_shape("nhwc", 2, 3, 2), rv=running("each", value=[small(-4), hard("nan"), hard("inf")]),
                             rm=running("each", value=[hard("inf"), small(1), hard("-inf")]),
                             data=row_values([hard("inf"), small(1), hard("0"), hard("-inf")]) * 3),
    })
    for kind in range(9):
        seeds[f"bad_arg_{kind}"] = case(bn_shape("nchw", 2, 3, 5), weight="ones", bias="ones",
                                        corrupt=(kind, 6 + kind), data=row_normal("1e4", 0) * 3)
    return seeds


SYNC_SPATIAL = [1, 1, 2, 3, 4, 7, 8, 16, 49, 64, 100, 256, 1000, 1024, 2048, 3000]
SYNC_CHANNELS = [0, 1, 1, 2, 3, 5, 16, 17, 33, 64, 65, 100, 300, 1025]


def bn_sync_case(layout, spatial, c, j, shards, last, eps="1e-5", momentum=("pytorch", 0.1),
                 corrupt=None, data=b""):
    head = (bytes([0 if layout == "nchw" else 1, SYNC_SPATIAL.index(spatial),
                   SYNC_CHANNELS.index(c), j, shards - 1]) + u16(last))
    return (head + bn_eps(eps) + params("seeded") + params("seeded", seed=5)
            + bn_momentum(*momentum) + b"\x00" + running("seeded") + running("seeded", seed=4)
            + no_corrupt(corrupt) + data)


def bn_sync_seeds():
    case = bn_sync_case
    seeds = {
        "nchw_7x7_3_shards": case("nchw", 49, 2, 0, 3, 10, data=row_normal("1e4", 0) * 2),
        "nchw_1024_4_shards": case("nchw", 1024, 1, 1, 4, 1, data=row_offset_spread("1e6", 20)),
        "nhwc_16_2_shards": case("nhwc", 16, 16, 0, 2, 5, data=row_normal("1e4", 0) * 16),
        "nc_3_shards": case("nchw", 1, 3, 0, 3, 100, momentum=("onnx", 0.9),
                            data=row_normal("0", 0) * 3),
        "nhwc_nan": case("nhwc", 4, 5, 1, 2, 3,
                         data=row_normal("0", 0, injected=inject("nan", 3, 1024)) * 5),
        "odd_spatial_one_shard": case("nhwc", 7, 3, 0, 2, 40, data=row_normal("1e4", 0) * 3),
        "single_value": case("nchw", 1, 2, 0, 1, 0, data=row_normal("0", 0) * 2),
        "eps_nan": case("nchw", 49, 2, 0, 2, 3, eps=0x7FC00000),
        "cumulative": case("nchw", 64, 5, 0, 2, 7, momentum=("cumulative", 2**53),
                           data=row_normal("1e30", 0) * 5),
    }
    for kind in range(6):
        seeds[f"bad_arg_{kind}"] = case("nchw", 49, 2, 0, 2, 3, corrupt=(kind, 6 + kind),
                                        data=row_normal("1e4", 0) * 2)
    return seeds


def write(target, seeds):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    write("layer_norm", row_seeds("layer_norm"))
    write("rms_norm", row_seeds("rms_norm"))
    write("moments", moments_seeds())
    write("stream_copy", copy_seeds())
    write("batch_norm_infer", bn_infer_seeds())
    write("batch_norm_train", bn_train_seeds())
    write("batch_norm_sync", bn_sync_seeds())
