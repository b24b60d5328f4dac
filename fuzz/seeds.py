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
