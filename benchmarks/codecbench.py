"""Codec benchmark: ``tornadio.proto`` encode/decode throughput, in-process.

    python benchmarks/codecbench.py [--seconds 0.2] [--repeats 3]

Prints one JSON line ``{"result": {...}}``. MB/s counts the UTF-8 bytes of the
framed payload (what travels on the wire), 1 MB = 10**6 bytes. Text kinds:
ascii (letters and digits), bmp (Latin, Greek, Cyrillic, CJK: every character
one UTF-16 unit, none ASCII), astral (a mix with characters beyond U+FFFF,
which take the slow UTF-16 path). Shapes: single frames of several sizes, and
batches of 100 frames of 32 characters (the decoder sees the whole batch).
Calls alternate between two equal values made of distinct objects, so a
cache keyed on the last object encoded cannot make a row meaningless.
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, median, use_repo_tornadio  # noqa: E402

use_repo_tornadio()
from tornadio import proto  # noqa: E402

ALPHABETS = {
    "ascii": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,",
    "bmp": "éñüßøåçαβγδλπΣЖЯшщ中文字符日本語한국어€™",
    "astral": "a😀é𝄞b🚀中𐍈c🎉ж",
}

SINGLE_SIZES = (32, 1024, 65536)
BATCH_FRAMES, BATCH_SIZE = 100, 32


def text_of(kind, size, salt=0):
    alphabet = ALPHABETS[kind]
    repeated = alphabet * (size // len(alphabet) + 2)
    start = salt % len(alphabet)
    return repeated[start:start + size]


def twin(value):
    """An equal value made of distinct objects (so no cache keyed on identity helps)."""
    if isinstance(value, list):
        return [twin(item) for item in value]
    return value[:1] + value[1:]


def timed(func, pair, loops):
    first, second = pair
    start = time.perf_counter()
    for _ in range(loops >> 1):
        func(first)
        func(second)
    return time.perf_counter() - start


def rate(func, arg, wire_bytes, seconds, repeats):
    """Median MB/s of ``func`` over ``repeats`` timed runs of ~``seconds``.

    Calls alternate between ``arg`` and an equal copy made of other objects.
    """
    pair = (arg, twin(arg))
    loops = 2
    while True:  # calibrate: enough calls for ~seconds/5
        elapsed = timed(func, pair, loops)
        if elapsed >= seconds / 5 or loops >= 1 << 24:
            break
        loops *= 4
    loops = max(2, int(loops * (seconds / max(elapsed, 1e-9))) & ~1)
    rates, per_call = [], []
    for _ in range(repeats):
        elapsed = timed(func, pair, loops)
        rates.append(wire_bytes * loops / elapsed / 1e6)
        per_call.append(elapsed / loops * 1e6)
    return round(median(rates), 2), round(median(per_call), 3)


def run(seconds, repeats):
    results = {"json_module": getattr(proto.json, "__name__", "?"), "cases": []}
    for kind in ALPHABETS:
        shapes = [("single", size, text_of(kind, size)) for size in SINGLE_SIZES]
        batch = [text_of(kind, BATCH_SIZE, salt) for salt in range(BATCH_FRAMES)]
        shapes.append(("batch", BATCH_SIZE, batch))
        for shape, size, value in shapes:
            encoded = proto.encode(value)
            assert [f.data for f in proto.decode(encoded)] == (
                value if isinstance(value, list) else [value])
            wire = len(encoded.encode("utf-8"))
            enc_mbs, enc_us = rate(proto.encode, value, wire, seconds, repeats)
            dec_mbs, dec_us = rate(proto.decode, encoded, wire, seconds, repeats)
            results["cases"].append({
                "text": kind, "shape": shape, "chars": size,
                "frames": len(value) if isinstance(value, list) else 1,
                "wire_bytes": wire,
                "encode_mb_s": enc_mbs, "encode_us_per_call": enc_us,
                "decode_mb_s": dec_mbs, "decode_us_per_call": dec_us,
            })
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    emit({"result": run(args.seconds, args.repeats)})


if __name__ == "__main__":
    main()
