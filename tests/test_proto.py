"""Unit tests of the Socket.IO 0.6 frame codec, tornadio/proto.py.

Vectors are docs/protocol.rst §10.1 (encoding) and §10.2 (decoding); the rest are
hypothesis properties (round trips, LEN in UTF-16 units, fuzzing against a
reference splitter) and error cases (refused values, deep nesting, LEN
syntax, large payloads).

proto.py uses simplejson when it is importable and the stdlib ``json``
otherwise; the table-driven tests run against both back ends (a second copy of
the module is loaded with simplejson hidden).
"""
import importlib.util
import json as stdlib_json
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tornadio import proto


# --------------------------------------------------------------------------
# Both JSON back ends

def _load_stdlib_copy():
    """A private copy of proto.py that was imported without simplejson."""
    missing = object()
    saved = sys.modules.get("simplejson", missing)
    sys.modules["simplejson"] = None  # makes ``import simplejson`` fail
    try:
        spec = importlib.util.spec_from_file_location(
            "tornadio._proto_stdlib_json_copy", proto.__file__)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        if saved is missing:
            del sys.modules["simplejson"]
        else:
            sys.modules["simplejson"] = saved
    assert module.json is stdlib_json
    return module


proto_stdlib = _load_stdlib_copy()
CODECS = pytest.mark.parametrize(
    "p", [proto, proto_stdlib], ids=["default-json", "stdlib-json"])

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
FUZZ_SETTINGS = settings(max_examples=300, deadline=None,
                         suppress_health_check=[HealthCheck.too_slow])


def units(text):
    """Length in UTF-16 code units, as JavaScript's String.length."""
    return len(text.encode("utf-16-le")) // 2


SID = "8e1f0c2b9a7d4e6f8e1f0c2b9a7d4e6f"


# --------------------------------------------------------------------------
# §10.1 encoding vectors

ENCODE_VECTORS = [
    # (row, value, wire)
    (1, "hello", "~m~5~m~hello"),
    (2, "", "~m~0~m~"),
    (3, "h\u00e9llo", "~m~5~m~h\u00e9llo"),
    (4, "\u20ac", "~m~1~m~\u20ac"),
    (5, "\U0001F600", "~m~2~m~\U0001F600"),
    (6, "a~m~b", "~m~5~m~a~m~b"),
    (7, "line\nbreak", "~m~10~m~line\nbreak"),
    (8, "</script>", "~m~9~m~</script>"),
    (9, {"a": 1}, '~m~10~m~~j~{"a":1}'),
    (10, {"k": ["n", {"d": None}]}, '~m~25~m~~j~{"k":["n",{"d":null}]}'),
    (11, {"x": "\u00e9\U0001F600"}, '~m~14~m~~j~{"x":"\u00e9\U0001F600"}'),
    (12, 42, "~m~5~m~~j~42"),
    (13, 1.5, "~m~6~m~~j~1.5"),
    (14, True, "~m~7~m~~j~true"),
    (15, None, "~m~7~m~~j~null"),
    (16, ["a", {"b": 2}], '~m~1~m~a~m~10~m~~j~{"b":2}'),
    (17, [], ""),
    (18, (1, 2), "~m~8~m~~j~[1,2]"),
    (19, [["a", "b"], "c"], "~m~1~m~a~m~1~m~b~m~1~m~c"),
]


@CODECS
@pytest.mark.parametrize("row,value,wire", ENCODE_VECTORS,
                         ids=["row%d" % v[0] for v in ENCODE_VECTORS])
def test_encode_vector(p, row, value, wire):
    assert p.encode(value) == wire


@CODECS
def test_encode_vector_row20_nan_refused(p):
    with pytest.raises(p.EncodeError):
        p.encode(float("nan"))


@CODECS
@pytest.mark.parametrize("number,wire", [(1, "~m~4~m~~h~1"), (10, "~m~5~m~~h~10")])
def test_encode_vector_row21_heartbeat(p, number, wire):
    assert p.heartbeat(number) == wire


@CODECS
def test_encode_vector_row22_sid_then_message(p):
    assert p.frame(SID) + p.encode("hi") == \
        "~m~32~m~8e1f0c2b9a7d4e6f8e1f0c2b9a7d4e6f~m~2~m~hi"


@CODECS
@pytest.mark.parametrize("row,value,wire", ENCODE_VECTORS,
                         ids=["row%d" % v[0] for v in ENCODE_VECTORS])
def test_encode_vectors_decode_back(p, row, value, wire):
    """Every §10.1 wire string is itself a valid payload."""
    frames = p.decode(wire)
    assert all(isinstance(f, p.Frame) for f in frames)
    if isinstance(value, str):
        assert frames == [p.Frame(p.TEXT, value)]


def test_encode_vector_row11_ascii_variant_is_also_valid():
    wire = '~m~29~m~~j~{"x":"\\u00e9\\ud83d\\ude00"}'
    assert proto.decode(wire) == [proto.Frame(proto.JSON, {"x": "\u00e9\U0001F600"})]


# --------------------------------------------------------------------------
# §10.2 decoding vectors

T, J, H = proto.TEXT, proto.JSON, proto.HEARTBEAT

DECODE_VECTORS = [
    # (row, payload, [(kind, data), ...])
    (1, "~m~5~m~hello", [(T, "hello")]),
    (2, "~m~5~m~hello~m~3~m~abc", [(T, "hello"), (T, "abc")]),
    (3, "~m~0~m~", [(T, "")]),
    (4, "", []),
    (5, "~m~4~m~~h~7", [(H, "7")]),
    (6, '~m~10~m~~j~{"a":1}', [(J, {"a": 1})]),
    (7, "~m~8~m~~j~[1,2]", [(J, [1, 2])]),
    (8, "~m~8~m~h\u00e9llo \U0001F600", [(T, "h\u00e9llo \U0001F600")]),
    (9, "~m~4~m~arr1~m~4~m~arr2", [(T, "arr1"), (T, "arr2")]),
    (17, "~m~3~m~a\nb~m~1~m~x", [(T, "a\nb"), (T, "x")]),
]

DECODE_MALFORMED = [
    (10, "~m~2~m~\u00e9~m~1~m~a"),        # byte-counted
    (11, "~m~1~m~\U0001F600~m~1~m~a"),    # code-point-counted: splits a pair
    (12, "~m~9~m~abc"),                   # LEN past the end
    (13, "~m~3~m~abcXYZ"),                # trailing data
    (14, "hello"),                        # no frame
    (15, "~m~~m~abc"),                    # no digits
    (16, "~m~6~m~~j~{x}"),                # invalid JSON
]


@CODECS
@pytest.mark.parametrize("row,payload,expected", DECODE_VECTORS,
                         ids=["row%d" % v[0] for v in DECODE_VECTORS])
def test_decode_vector(p, row, payload, expected):
    frames = p.decode(payload)
    assert frames == [p.Frame(kind, data) for kind, data in expected]
    for f in frames:
        assert isinstance(f, p.Frame)
        assert f.kind in (p.TEXT, p.JSON, p.HEARTBEAT)


@CODECS
@pytest.mark.parametrize("row,payload", DECODE_MALFORMED,
                         ids=["row%d" % v[0] for v in DECODE_MALFORMED])
def test_decode_vector_malformed(p, row, payload):
    with pytest.raises(p.DecodeError) as info:
        p.decode(payload)
    assert isinstance(info.value.reason, str) and info.value.reason


@CODECS
@pytest.mark.parametrize("row,payload", DECODE_MALFORMED,
                         ids=["row%d" % v[0] for v in DECODE_MALFORMED])
def test_decode_malformed_poisons_the_whole_batch(p, row, payload):
    """A bad frame anywhere means nothing of the payload is delivered."""
    with pytest.raises(p.DecodeError):
        p.decode("~m~2~m~ok" + payload)
    with pytest.raises(p.DecodeError):
        p.decode("~m~2~m~\U0001F600" + payload)  # astral path


def test_decode_row17_without_crlf_normalisation_is_malformed():
    with pytest.raises(proto.DecodeError):
        proto.decode("~m~3~m~a\r\nb~m~1~m~x")


# --------------------------------------------------------------------------
# Strategies

# No lone surrogates (category Cs).
chars = st.characters(exclude_categories=("Cs",))
TRICKY = ["~", "m", "j", "h", "~m~", "~j~", "~h~", "0", "1", "9", "\u00e9",
          "\u20ac", "\U0001F600", "\U00010000", "\U0010FFFF", "\uffff",
          "\ufeff", "\n", "\r", "\x00", "\u2028", "{", "}", "[", "]", '"', " "]
tricky_text = st.lists(st.sampled_from(TRICKY), max_size=12).map("".join)
any_text = st.one_of(st.text(chars), tricky_text)
plain_text = any_text.filter(lambda s: not s.startswith(("~h~", "~j~")))

json_scalars = (st.none() | st.booleans()
                | st.integers(min_value=-2 ** 70, max_value=2 ** 70)
                | st.floats(allow_nan=False, allow_infinity=False)
                | any_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: (st.lists(inner, max_size=5)
                   | st.lists(inner, max_size=5).map(tuple)
                   | st.dictionaries(any_text, inner, max_size=5)),
    max_leaves=20)
# A top-level str goes as text and a top-level list as one frame per item,
# so those are wrapped to make the value go as ~j~ JSON.
json_messages = json_values.map(
    lambda v: {"v": v} if isinstance(v, (str, list)) else v)


def normalise(value):
    """What a JSON round trip gives back: tuples become lists."""
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    return value


def same(a, b):
    """Equality that also compares types (True is not 1, 1.0 is not 1)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


# --------------------------------------------------------------------------
# Round trips

@SETTINGS
@given(plain_text)
def test_text_round_trip(s):
    assert proto.decode(proto.encode(s)) == [proto.Frame(proto.TEXT, s)]


@SETTINGS
@given(any_text)
def test_len_is_utf16_units(s):
    n = units(s)
    assert proto.utf16_len(s) == n
    assert proto.frame(s) == "~m~%d~m~%s" % (n, s)
    if not s.startswith(("~h~", "~j~")):
        assert proto.encode(s) == "~m~%d~m~%s" % (n, s)


@SETTINGS
@given(json_messages)
def test_json_round_trip(value):
    wire = proto.encode(value)
    body = wire[wire.index("~m~", 3) + 3:]
    assert body.startswith("~j~")
    assert wire == "~m~%d~m~%s" % (units(body), body)
    frames = proto.decode(wire)
    assert len(frames) == 1
    assert frames[0].kind == proto.JSON
    assert same(frames[0].data, normalise(value))


@settings(max_examples=50, deadline=None)
@given(json_messages)
def test_json_round_trip_stdlib_backend(value):
    frames = proto_stdlib.decode(proto_stdlib.encode(value))
    assert [f.kind for f in frames] == [proto_stdlib.JSON]
    assert same(frames[0].data, normalise(value))


@SETTINGS
@given(st.lists(plain_text, max_size=20))
def test_text_batch_round_trip(batch):
    payload = "".join(proto.encode(x) for x in batch)
    assert proto.encode(batch) == payload
    assert proto.decode(payload) == [proto.Frame(proto.TEXT, x) for x in batch]


@SETTINGS
@given(st.lists(st.one_of(plain_text, json_messages, st.integers(0, 10 ** 6)
                          .map(lambda n: ("hb", n))), max_size=12))
def test_mixed_batch_round_trip(items):
    payload, expected = "", []
    for item in items:
        if isinstance(item, tuple) and item and item[0] == "hb":
            payload += proto.heartbeat(item[1])
            expected.append((proto.HEARTBEAT, str(item[1])))
        elif isinstance(item, str):
            payload += proto.encode(item)
            expected.append((proto.TEXT, item))
        else:
            payload += proto.encode(item)
            expected.append((proto.JSON, normalise(item)))
    frames = proto.decode(payload)
    assert len(frames) == len(expected)
    for got, (kind, data) in zip(frames, expected):
        assert got.kind == kind
        assert same(got.data, data)


@SETTINGS
@given(st.lists(st.one_of(plain_text, st.lists(plain_text, max_size=3)), max_size=8))
def test_nested_lists_flatten_in_order(value):
    flat = []
    for item in value:
        flat.extend(item if isinstance(item, list) else [item])
    assert proto.encode(value) == "".join(proto.encode(x) for x in flat)
    assert proto.decode(proto.encode(value)) == [proto.Frame(proto.TEXT, x) for x in flat]


@SETTINGS
@given(plain_text.filter(lambda s: units(s) > 0), st.booleans())
def test_max_length_bounds_each_len(s, astral):
    n = units(s)
    payload = proto.frame(s)
    if astral:  # force the UTF-16 path for the whole payload
        payload = proto.frame("\U0001F600") + payload
    extra = 2 if astral else 0
    classified = proto.decode(payload, max_length=max(n, extra))
    assert len(classified) == (2 if astral else 1)
    with pytest.raises(proto.DecodeError):
        proto.decode(payload, max_length=n - 1)


@pytest.mark.parametrize("payload,limit,ok", [
    ("~m~0~m~", 0, True),
    ("~m~5~m~hello", 5, True),
    ("~m~5~m~hello", 4, False),
    ("~m~2~m~\U0001F600", 2, True),
    ("~m~2~m~\U0001F600", 1, False),
    ("~m~1~m~a~m~6~m~abcdef", 5, False),
    ("~m~9999999999~m~x", 100, False),
])
def test_max_length_table(payload, limit, ok):
    if ok:
        assert len(proto.decode(payload, max_length=limit)) == 1
    else:
        with pytest.raises(proto.DecodeError):
            proto.decode(payload, max_length=limit)


@SETTINGS
@given(st.lists(st.one_of(plain_text, st.just("\U0001F600x"), st.just("~h~7")), min_size=1,
                max_size=30), st.integers(1, 30))
def test_max_frames_bounds_the_frame_count(bodies, limit):
    """Heartbeats count as frames; the ASCII, BMP and astral paths agree."""
    payload = "".join(proto.frame(body) for body in bodies)
    if len(bodies) <= limit:
        assert len(proto.decode(payload, max_frames=limit)) == len(bodies)
    else:
        with pytest.raises(proto.TooManyFramesError) as refused:
            proto.decode(payload, max_frames=limit)
        assert refused.value.reason == "payload holds more than %d frames" % limit


def test_max_frames_stops_reading_at_the_first_frame_over():
    """What follows the first frame over the limit is not even looked at: a flood
    costs no more to refuse than a legal payload costs to read."""
    payload = "".join(proto.frame("x") for _ in range(3)) + "garbage, not a frame"
    with pytest.raises(proto.TooManyFramesError):
        proto.decode(payload, max_frames=3)
    assert issubclass(proto.TooManyFramesError, proto.DecodeError)
    assert len(proto.decode(proto.frame("one"), max_frames=1)) == 1  # the one-frame path
    assert len(proto.decode("~m~1~m~a" * 125000)) == 125000  # None: no bound


# --------------------------------------------------------------------------
# Fuzzing: only DecodeError may come out of decode

def decode_or_error(payload, **kw):
    try:
        return proto.decode(payload, **kw)
    except proto.DecodeError as exc:
        assert isinstance(exc.reason, str)
        return None


FUZZ_PIECES = ["~m~", "~j~", "~h~", "~m", "m~", "~", "0", "1", "2", "3", "5",
               "9", "10", "\U0001F600", "\u00e9", "{", "}", "[", "]", '"', ":",
               ",", "a", "null", "true", "NaN", "-", ".", "e", "\\", "\n",
               "\u0663", "\uff13", "\u00b2"]
fuzz_text = st.lists(st.sampled_from(FUZZ_PIECES), max_size=30).map("".join)
SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
surrogate_text = st.lists(st.one_of(st.sampled_from(FUZZ_PIECES), SURROGATES),
                          max_size=20).map("".join)


def reference_decode(payload):
    """A slow, independent strict decoder (frames or None when malformed)."""
    try:
        data = payload.encode("utf-16-le")
    except UnicodeEncodeError:
        return None
    u = [int.from_bytes(data[i:i + 2], "little") for i in range(0, len(data), 2)]
    mark = [0x7E, 0x6D, 0x7E]
    out, pos = [], 0
    while pos < len(u):
        if u[pos:pos + 3] != mark:
            return None
        i = pos + 3
        while i < len(u) and 0x30 <= u[i] <= 0x39:
            i += 1
        digits = i - (pos + 3)
        if digits == 0 or digits > proto.MAX_LEN_DIGITS or u[i:i + 3] != mark:
            return None
        length = int("".join(chr(c) for c in u[pos + 3:i]))
        start, end = i + 3, i + 3 + length
        if end > len(u):
            return None
        try:
            message = data[2 * start:2 * end].decode("utf-16-le")
        except UnicodeDecodeError:
            return None
        if message.startswith("~h~"):
            out.append(proto.Frame(proto.HEARTBEAT, message[3:]))
        elif message.startswith("~j~"):
            def reject(name):
                raise ValueError(name)
            try:
                value = stdlib_json.loads(message[3:], parse_constant=reject)
            except (ValueError, RecursionError):
                return None
            out.append(proto.Frame(proto.JSON, value))
        else:
            out.append(proto.Frame(proto.TEXT, message))
        pos = end
    return out


@FUZZ_SETTINGS
@given(st.text())
def test_fuzz_arbitrary_text(payload):
    decode_or_error(payload)


@FUZZ_SETTINGS
@given(fuzz_text)
def test_fuzz_marker_soup_matches_reference(payload):
    assert decode_or_error(payload) == reference_decode(payload)


@FUZZ_SETTINGS
@given(st.lists(st.tuples(st.one_of(any_text, fuzz_text), st.integers(-2, 2)),
                max_size=6))
def test_fuzz_frames_with_wrong_len_match_reference(parts):
    """Well-formed framing with LEN sometimes off by a few units."""
    payload = "".join("~m~%d~m~%s" % (max(units(body) + delta, 0), body)
                      for body, delta in parts)
    got = decode_or_error(payload)
    assert got == reference_decode(payload)
    if all(delta == 0 for _, delta in parts) and not any(
            body.startswith(("~j~", "~h~")) for body, _ in parts):
        assert got == [proto.Frame(proto.TEXT, body) for body, _ in parts]


@FUZZ_SETTINGS
@given(surrogate_text)
def test_fuzz_lone_surrogates_refused(payload):
    got = decode_or_error(payload)
    if any(0xD800 <= ord(c) <= 0xDFFF for c in payload):
        assert got is None


@FUZZ_SETTINGS
@given(st.one_of(fuzz_text, st.text()), st.integers(0, 20))
def test_fuzz_max_length(payload, limit):
    got = decode_or_error(payload, max_length=limit)
    ref = reference_decode(payload)
    if got is not None:
        assert got == ref
    if ref is not None:
        # every declared LEN <= limit exactly when the limited decode succeeds
        lens = [units(f.data) + (3 if f.kind != proto.TEXT else 0) for f in ref]
        if all(f.kind != proto.JSON for f in ref):
            assert (got is not None) == all(n <= limit for n in lens)


# --------------------------------------------------------------------------
# Errors

def test_error_hierarchy():
    assert issubclass(proto.EncodeError, proto.ProtocolError)
    assert issubclass(proto.DecodeError, proto.ProtocolError)
    assert issubclass(proto.ProtocolError, ValueError)
    err = proto.EncodeError("why")
    assert err.reason == "why" and str(err) == "why"


def _deep_list(depth, leaf):
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def _deep_dict(depth):
    value = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _deep_tuple(depth):
    value = ()
    for _ in range(depth):
        value = (value,)
    return value


def _circular_list():
    value = ["a"]
    value.append(value)
    return value


def _circular_dict():
    value = {}
    value["self"] = value
    return value


REFUSED_VALUES = [
    ("lone-high-surrogate", "\ud800"),
    ("lone-low-surrogate", "a\udc00b"),
    ("split-pair-code-points", "\ud83d\ude00"),
    ("surrogate-in-list", ["ok", "\udfff"]),
    ("surrogate-in-json", {"k": "\ud800"}),
    ("surrogate-in-json-key", {"\ud800": 1}),
    ("set", set()),
    ("object", object()),
    ("nan", float("nan")),
    ("inf", float("inf")),
    ("-inf", float("-inf")),
    ("nan-in-dict", {"x": [1, float("nan")]}),
    ("inf-in-list", ["ok", float("inf")]),
    ("set-in-list", ["ok", {1}]),
    ("deep-dict", _deep_dict(100000)),
    ("deep-tuple", _deep_tuple(100000)),
    ("deep-list-in-dict", {"v": _deep_list(100000, 1)}),
    ("deep-list-in-tuple", (_deep_list(100000, 1),)),
    ("deep-dict-at-bottom-of-deep-list", _deep_list(100000, _deep_dict(100000))),
    ("circular-list", _circular_list()),
    ("circular-dict", _circular_dict()),
    ("circular-list-in-dict", {"v": _circular_list()}),
    ("heartbeat-text", "~h~1"),
    ("heartbeat-text-empty", "~h~"),
    ("heartbeat-text-in-list", ["ok", "~h~1"]),
    ("json-marker-invalid", "~j~{x}"),
    ("json-marker-empty", "~j~"),
    ("json-marker-nan", "~j~NaN"),
    ("json-marker-infinity", "~j~Infinity"),
    ("json-marker-trailing", '~j~{"a":1}x'),
    ("json-marker-deep", "~j~" + "[" * 100000 + "]" * 100000),
]


@CODECS
@pytest.mark.parametrize("value", [v for _, v in REFUSED_VALUES],
                         ids=[name for name, _ in REFUSED_VALUES])
def test_encode_refuses(p, value):
    try:
        p.encode(value)
    except p.EncodeError as exc:
        assert isinstance(exc, p.ProtocolError) and isinstance(exc, ValueError)
        assert isinstance(exc.reason, str) and exc.reason
    except RecursionError:  # pragma: no cover - the failure being tested
        pytest.fail("RecursionError escaped encode()")
    else:  # pragma: no cover
        pytest.fail("encode() accepted %r" % (value,))


@CODECS
def test_deep_list_flattens_without_recursion(p):
    """Nested lists flatten (§1.6); depth must not hit the recursion limit.

    Deeply nested *lists* are not an error under the TornadIO mapping: they
    flatten to their leaves. Only JSON-encoded values (dicts, tuples, ...)
    that are too deep are refused.
    """
    assert p.encode(_deep_list(100000, "a")) == "~m~1~m~a"
    assert p.encode(_deep_list(100000, {"b": 2})) == '~m~10~m~~j~{"b":2}'
    assert p.encode(_deep_list(100000, [])) == ""
    shared = ["x"]
    assert p.encode([shared, shared, [shared]]) == "~m~1~m~x" * 3


@CODECS
@pytest.mark.parametrize("text", ['~j~{"a":1}', "~j~null", "~j~[1,2]", "~j~ 1 ",
                                  '~j~"\\ud800"'])
def test_encode_accepts_json_marker_with_valid_json(p, text):
    wire = p.encode(text)
    assert wire == "~m~%d~m~%s" % (units(text), text)
    frames = p.decode(wire)
    assert [f.kind for f in frames] == [p.JSON]
    assert frames[0].data == stdlib_json.loads(text[3:])


@CODECS
@pytest.mark.parametrize("text", ["~h", "h~h~", " ~h~1", "~m~h~", "~J~x", "~j", "j~j~{"])
def test_encode_accepts_near_miss_markers_as_text(p, text):
    assert p.decode(p.encode(text)) == [p.Frame(p.TEXT, text)]


DECODE_REFUSED = [
    ("deep-json", "~m~200003~m~~j~" + "[" * 100000 + "]" * 100000),
    ("deep-json-short-len", "~m~20~m~~j~" + "[" * 100000 + "]" * 100000),
    ("deep-json-astral", "~m~2~m~\U0001F600~m~200003~m~~j~" + "[" * 100000 + "]" * 100000),
    ("deep-json-object", (lambda b: "~m~%d~m~%s" % (len(b), b))(
        "~j~" + '{"a":' * 100000 + "1" + "}" * 100000)),
    ("len-11-digits", "~m~" + "0" * 10 + "5~m~hello"),
    ("len-11-digits-astral", "~m~2~m~\U0001F600~m~" + "0" * 10 + "5~m~hello"),
    ("len-huge", "~m~" + "9" * 1000 + "~m~x"),
    ("len-minus-one", "~m~-1~m~"),
    ("len-minus-one-body", "~m~-1~m~abc"),
    ("len-plus", "~m~+3~m~abc"),
    ("len-space", "~m~ 3~m~abc"),
    ("len-trailing-space", "~m~3 ~m~abc"),
    ("len-arabic-indic", "~m~\u0663~m~abc"),
    ("len-arabic-indic-astral", "~m~\u0663~m~abc~m~2~m~\U0001F600"),
    ("len-fullwidth", "~m~\uff13~m~abc"),
    ("len-superscript", "~m~\u00b3~m~abc"),
    ("len-hex", "~m~0x3~m~abc"),
    ("len-float", "~m~3.0~m~abc"),
    ("len-unterminated", "~m~3"),
    ("len-unterminated-tilde", "~m~3~m"),
    ("only-marker", "~m~"),
    ("leading-space", " ~m~1~m~a"),
    ("leading-bom", "\ufeff~m~1~m~a"),
    ("trailing-newline", "~m~1~m~a\n"),
    ("trailing-marker", "~m~1~m~a~m~"),
    ("json-nan", "~m~6~m~~j~NaN"),
    ("json-infinity", "~m~11~m~~j~Infinity"),
    ("json-neg-infinity", "~m~12~m~~j~-Infinity"),
    ("json-empty", "~m~3~m~~j~"),
    ("json-trailing", '~m~11~m~~j~{"a":1}x'),
    ("json-single-quotes", "~m~10~m~~j~{'a':1}"),
    ("json-huge-int", "~m~5003~m~~j~" + "1" * 5000),
    ("lone-surrogate-bmp", "~m~1~m~\ud800"),
    ("lone-surrogate-astral", "~m~2~m~\U0001F600~m~1~m~\udc00"),
    ("surrogate-code-points-as-pair", "~m~2~m~\ud83d\ude00~m~2~m~\U0001F600"),
    ("surrogate-in-len", "~m~\ud800~m~~m~2~m~\U0001F600"),
    ("astral-split-at-end", "~m~1~m~\U0001F600"),
    ("astral-len-odd-past-end", "~m~3~m~\U0001F600"),
]


@CODECS
@pytest.mark.parametrize("payload", [v for _, v in DECODE_REFUSED],
                         ids=[name for name, _ in DECODE_REFUSED])
def test_decode_refuses(p, payload):
    try:
        p.decode(payload)
    except p.DecodeError as exc:
        assert isinstance(exc, p.ProtocolError) and isinstance(exc, ValueError)
        assert isinstance(exc.reason, str) and exc.reason
        assert len(exc.reason) < 300  # log-friendly even for huge payloads
    except RecursionError:  # pragma: no cover - the failure being tested
        pytest.fail("RecursionError escaped decode()")
    else:  # pragma: no cover
        pytest.fail("decode() accepted %r" % (payload[:60],))


@CODECS
@pytest.mark.parametrize("payload,expected", [
    ("~m~0000000005~m~hello", ["hello"]),               # MAX_LEN_DIGITS digits
    ("~m~05~m~hello~m~00~m~", ["hello", ""]),
    ("~m~0000000002~m~\U0001F600", ["\U0001F600"]),     # astral path
    ("~m~3~m~~m~", ["~m~"]),
    ("~m~7~m~~m~1~m~", ["~m~1~m~"]),
    ("~m~1~m~\x00", ["\x00"]),
    ("~m~1~m~\ufeff", ["\ufeff"]),
    ("~m~1~m~\uffff~m~2~m~\U0010FFFF", ["\uffff", "\U0010FFFF"]),
])
def test_decode_len_edge_cases(p, payload, expected):
    assert p.decode(payload) == [p.Frame(p.TEXT, x) for x in expected]


def test_max_len_digits_boundary():
    digits = proto.MAX_LEN_DIGITS
    ok = "~m~" + "0" * (digits - 1) + "1~m~a"
    assert proto.decode(ok) == [proto.Frame(proto.TEXT, "a")]
    with pytest.raises(proto.DecodeError):
        proto.decode("~m~" + "0" * digits + "1~m~a")


@pytest.mark.parametrize("payload,expected", [
    ("~m~4~m~~h~7", "7"),
    ("~m~3~m~~h~", ""),
    ("~m~6~m~~h~abc", "abc"),
    ("~m~7~m~~h~~j~1", "~j~1"),
])
def test_decode_heartbeats(payload, expected):
    assert proto.decode(payload) == [proto.Frame(proto.HEARTBEAT, expected)]


@SETTINGS
@given(st.integers(min_value=0, max_value=10 ** 12))
def test_heartbeat_round_trip(n):
    assert proto.decode(proto.heartbeat(n)) == [proto.Frame(proto.HEARTBEAT, str(n))]


def test_frame_does_not_check_content():
    """frame() is the raw builder (used for the session id)."""
    assert proto.frame("~h~1") == "~m~4~m~~h~1"
    assert proto.frame("~j~{x}") == "~m~6~m~~j~{x}"
    with pytest.raises(proto.EncodeError):
        proto.frame("\ud800")  # LEN cannot be counted


# --------------------------------------------------------------------------
# Large payloads (linearity): check the output, not the time

N_FRAMES = 10000


def _bodies(astral):
    if astral:
        # ~100 UTF-16 units each, astral characters all over the place
        return ["%05d\U0001F600\u00e9~m~" % i + "\U0001F4A9x" * 30
                + "\U00010000" * (i % 7) for i in range(N_FRAMES)]
    return ["%05d-" % i + "abcdefghij" * 9 + "~m~%d" % (i % 10) for i in range(N_FRAMES)]


@pytest.mark.parametrize("astral", [False, True], ids=["ascii", "astral"])
def test_decode_large_payload(astral):
    bodies = _bodies(astral)
    payload = "".join("~m~%d~m~%s" % (units(b), b) for b in bodies)
    assert len(payload.encode("utf-8")) > 1000000  # ~1 MiB on the wire
    frames = proto.decode(payload)
    assert len(frames) == N_FRAMES
    assert all(f.kind == proto.TEXT for f in frames)
    assert [f.data for f in frames] == bodies
    # a single bad LEN at the very end still poisons everything
    with pytest.raises(proto.DecodeError):
        proto.decode(payload + "~m~5~m~abc")


@pytest.mark.parametrize("astral", [False, True], ids=["ascii", "astral"])
def test_encode_large_list(astral):
    bodies = _bodies(astral)
    wire = proto.encode(bodies)
    assert wire == "".join("~m~%d~m~%s" % (units(b), b) for b in bodies)
    assert [f.data for f in proto.decode(wire)] == bodies


def test_decode_one_large_frame():
    body = ("\U0001F600" + "a" * 99) * 10000
    payload = "~m~%d~m~%s~m~1~m~z" % (units(body), body)
    assert proto.decode(payload) == [proto.Frame(proto.TEXT, body),
                                     proto.Frame(proto.TEXT, "z")]


def test_wire_output_does_not_depend_on_the_json_library():
    """simplejson, when installed, is told to behave as the stdlib does."""
    import collections
    import decimal

    point = collections.namedtuple("Point", "x y")(1, 2)
    assert proto.encode(point) == "~m~8~m~~j~[1,2]"
    for value in (decimal.Decimal("1.5"), b"bytes"):
        with pytest.raises(proto.EncodeError):
            proto.encode(value)
