"""Unit tests of the RFC 6455 server-side codec, tornadio/rfc6455.py.

Client frames are built here by a separate, deliberately plain encoder (byte
by byte XOR masking), so the reader is checked against the RFC, not against
itself: round trips under any split of the byte stream, fragmentation, and
each violation with its close code.
"""
import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from tornadio import rfc6455


def client_frame(opcode, data, fin=True, mask=None, rsv=0, masked=True):
    """One client frame, masked as RFC 6455 §5.3 says (the slow, obvious way)."""
    mask = os.urandom(4) if mask is None else mask
    first = (0x80 if fin else 0) | rsv | opcode
    size = len(data)
    bit = 0x80 if masked else 0
    if size < 126:
        head = bytes((first, bit | size))
    elif size < 0x10000:
        head = bytes((first, bit | 126)) + struct.pack(">H", size)
    else:
        head = bytes((first, bit | 127)) + struct.pack(">Q", size)
    if not masked:
        return head + data
    return head + mask + bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))


def feed_in_pieces(reader, stream, cuts):
    messages = []
    start = 0
    for cut in sorted(set(cuts)) + [len(stream)]:
        messages += reader.feed(stream[start:cut])
        start = cut
    return messages


def test_accept_key_is_the_rfc_example():
    assert rfc6455.accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 70000])
def test_server_frames_carry_each_length_form(size):
    data = b"x" * size
    frame = rfc6455.text_frame(data)
    assert frame[0] == 0x81  # FIN, text, no RSV
    assert not frame[1] & 0x80  # servers never mask
    if size < 126:
        assert frame[1] == size and frame[2:] == data
    elif size < 0x10000:
        assert frame[1] == 126 and struct.unpack(">H", frame[2:4])[0] == size
    else:
        assert frame[1] == 127 and struct.unpack(">Q", frame[2:10])[0] == size
    assert frame.endswith(data)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from([rfc6455.OP_TEXT, rfc6455.OP_BINARY]),
                          st.binary(max_size=300)), max_size=12),
       st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_messages_round_trip_under_any_split_of_the_stream(messages, cuts):
    stream = b"".join(client_frame(opcode, data) for opcode, data in messages)
    reader = rfc6455.FrameReader(1 << 20)
    assert feed_in_pieces(reader, stream, [c for c in cuts if c < len(stream)]) == messages


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=2000), st.integers(min_value=1, max_value=6), st.data())
def test_fragments_are_joined_and_control_frames_pass_between_them(data, pieces, draw):
    bounds = sorted(draw.draw(st.lists(st.integers(0, len(data)), min_size=pieces - 1,
                                       max_size=pieces - 1)))
    parts = [data[a:b] for a, b in zip([0] + bounds, bounds + [len(data)])]
    stream = b""
    for index, part in enumerate(parts):
        opcode = rfc6455.OP_TEXT if index == 0 else 0
        stream += client_frame(opcode, part, fin=index == len(parts) - 1)
        if index == 0:
            stream += client_frame(rfc6455.OP_PING, b"p")
    whole, ping = (rfc6455.OP_TEXT, data), (rfc6455.OP_PING, b"p")
    # The ping follows the first fragment, so it comes out first unless that was all.
    expected = [whole, ping] if len(parts) == 1 else [ping, whole]
    assert rfc6455.FrameReader(None).feed(stream) == expected


def test_a_large_frame_in_many_reads_is_whole_once():
    data = os.urandom(300_000)
    stream = client_frame(rfc6455.OP_BINARY, data)
    reader = rfc6455.FrameReader(1 << 20)
    found = []
    for start in range(0, len(stream), 4096):
        found += reader.feed(stream[start:start + 4096])
    assert found == [(rfc6455.OP_BINARY, data)]


@pytest.mark.parametrize("frames, code", [
    ([client_frame(1, b"x", masked=False)], 1002),
    ([client_frame(1, b"x", rsv=0x40)], 1002),
    ([client_frame(3, b"x")], 1002),
    ([client_frame(0, b"x")], 1002),
    ([client_frame(1, b"a", fin=False), client_frame(1, b"b")], 1002),
    ([client_frame(rfc6455.OP_PING, b"p", fin=False)], 1002),
    ([client_frame(rfc6455.OP_PING, b"p" * 126)], 1002),
    ([client_frame(1, b"x" * 101)], 1009),
    ([client_frame(1, b"x" * 60, fin=False), client_frame(0, b"y" * 60)], 1009),
])
def test_violations_name_their_close_code(frames, code):
    reader = rfc6455.FrameReader(100)
    with pytest.raises(rfc6455.ProtocolViolation) as caught:
        for frame in frames:
            reader.feed(frame)
    assert caught.value.code == code and caught.value.reason


def test_a_message_in_too_many_fragments_is_refused_even_when_they_are_empty():
    reader = rfc6455.FrameReader(1 << 20)
    stream = client_frame(1, b"", fin=False) + client_frame(0, b"", fin=False) * (
        rfc6455.MAX_FRAGMENTS + 5)
    with pytest.raises(rfc6455.ProtocolViolation) as caught:
        reader.feed(stream)
    assert caught.value.code == 1009


def test_a_64_bit_length_with_its_top_bit_set_is_a_violation_even_without_a_limit():
    header = bytes((0x81, 0x80 | 127)) + (1 << 63).to_bytes(8, "big") + b"\0\0\0\0"
    with pytest.raises(rfc6455.ProtocolViolation) as caught:
        rfc6455.FrameReader(None).feed(header)
    assert caught.value.code == 1002


@pytest.mark.parametrize("code", [999, 1004, 1005, 1006, 1015, 2000, 5000])
def test_close_codes_no_endpoint_may_send_are_violations(code):
    with pytest.raises(rfc6455.ProtocolViolation) as caught:
        rfc6455.parse_close(code.to_bytes(2, "big"))
    assert caught.value.code == 1002


def test_an_oversized_frame_is_refused_from_its_header_alone():
    header = client_frame(1, b"x" * 70000)[:14]  # 2 + 8 length bytes + mask, no payload
    with pytest.raises(rfc6455.ProtocolViolation) as caught:
        rfc6455.FrameReader(65536).feed(header)
    assert caught.value.code == 1009


@pytest.mark.parametrize("code, reason", [(None, ""), (1000, ""), (1008, "refused"),
                                          (1001, "é" * 100)])
def test_close_frames_parse_back(code, reason):
    frame = rfc6455.close_frame(code, reason)
    assert len(frame) <= 127 and frame[0] == 0x88
    parsed_code, parsed_reason = rfc6455.parse_close(frame[2:])
    assert parsed_code == code
    assert reason.startswith(parsed_reason)


def test_malformed_close_payloads_are_violations():
    with pytest.raises(rfc6455.ProtocolViolation):
        rfc6455.parse_close(b"\x03")
    with pytest.raises(rfc6455.ProtocolViolation) as caught:
        rfc6455.parse_close(b"\x03\xe8\xff")
    assert caught.value.code == 1007


@given(st.binary(min_size=4, max_size=4), st.binary(max_size=1000))
def test_unmask_is_xor_with_the_repeated_key(mask, data):
    expected = bytes(byte ^ mask[index % 4] for index, byte in enumerate(data))
    assert rfc6455.unmask(mask, data) == expected


@given(st.binary(max_size=125), st.data())
def test_a_short_text_frame_read_whole_or_in_two_is_the_same_message(data, draw):
    """One whole short text frame per read is the shortcut's case; every other
    shape of the same bytes goes through the full checks and agrees."""
    frame = client_frame(1, data)
    assert rfc6455.FrameReader(None).feed(frame) == [(1, data)]
    cut = draw.draw(st.integers(1, len(frame) - 1))
    reader = rfc6455.FrameReader(None)
    assert reader.feed(frame[:cut]) == []
    assert reader.feed(frame[cut:]) == [(1, data)]


def test_a_read_shorter_than_a_frame_header_is_never_a_whole_frame():
    # 0x7c is 0x80 + (2 - 6): the shortcut's length test alone would take this
    # unmasked two-byte header for a whole empty frame.
    with pytest.raises(rfc6455.ProtocolViolation) as caught:
        rfc6455.FrameReader(None).feed(b"\x81\x7c")
    assert caught.value.code == 1002
    assert rfc6455.FrameReader(None).feed(b"\x81\xfc") == []  # masked: wait for the rest
