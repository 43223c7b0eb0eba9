"""The Socket.IO 0.6 frame codec: pure functions, no I/O.

This is the only module that knows the ``~m~``, ``~j~`` and ``~h~`` markers.
LEN is counted in UTF-16 code units, as the JavaScript client counts
``String.length`` (docs/protocol.rst §1.3).
"""
import re
from typing import (TYPE_CHECKING, Any, AnyStr, Callable, Dict, List, NamedTuple, NoReturn,
                    Optional, Tuple, Union)

if TYPE_CHECKING:
    # Checked against the stdlib's interface, which is all this module uses of
    # either (simplejson ships no types of its own).
    import json
else:
    try:  # simplejson is faster on some payloads; the stdlib is the fallback.
        import simplejson as json
    except ImportError:  # pragma: no cover - depends on the environment
        import json

__all__ = [
    "ProtocolError", "DecodeError", "TooManyFramesError", "EncodeError", "Frame",
    "TEXT", "JSON", "HEARTBEAT", "utf16_len", "frame", "encode",
    "heartbeat", "decode", "MAX_LEN_DIGITS",
]

FRAME_MARK = "~m~"
JSON_MARK = "~j~"
HEARTBEAT_MARK = "~h~"

#: :attr:`Frame.kind` of a plain text message (``data`` is the str).
TEXT = "text"
#: :attr:`Frame.kind` of a ``~j~`` message (``data`` is the decoded value).
JSON = "json"
#: :attr:`Frame.kind` of a ``~h~`` heartbeat (``data`` is its number, a str).
HEARTBEAT = "heartbeat"

#: LEN with more digits than this is refused before it is parsed.
MAX_LEN_DIGITS = 10


class Frame(NamedTuple):
    """One decoded message: ``kind`` is TEXT, JSON or HEARTBEAT; ``data`` its content."""

    #: TEXT, JSON or HEARTBEAT.
    kind: str
    #: The str, the decoded JSON value, or the heartbeat number (a str).
    data: Any


_ENCODER_OPTIONS: Dict[str, Any] = dict(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
if json.__name__ == "simplejson":
    # Same wire output as the stdlib: namedtuples as arrays, Decimal and bytes refused.
    _ENCODER_OPTIONS.update(namedtuple_as_object=False, use_decimal=False, encoding=None)
_json_encode = json.JSONEncoder(**_ENCODER_OPTIONS).encode


def _reject_constant(name: str) -> NoReturn:
    raise ValueError("%s is not JSON" % name)


def _json_decode(text: str) -> Any:
    # The stdlib fallback accepts NaN/Infinity, which JSON.parse rejects.
    return json.loads(text, parse_constant=_reject_constant)


_MARK_UNITS = b"~\x00m\x00~\x00"  # "~m~" in UTF-16-LE
_ONE_FRAME = re.compile(r"~m~([0-9]{1,%d})~m~" % MAX_LEN_DIGITS)


class ProtocolError(ValueError):
    """Base of the codec's errors; ``reason`` is one short log-friendly line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class DecodeError(ProtocolError):
    """A payload from a client is malformed; deliver none of it."""


class TooManyFramesError(DecodeError):
    """A payload holds more frames than the receiver accepts at once (``max_frames``)."""


class EncodeError(ProtocolError):
    """A value cannot be sent without breaking the client."""


def utf16_len(text: str) -> int:
    """Length of ``text`` as JavaScript counts it: UTF-16 code units.

    :returns: an int; 2 for each character beyond U+FFFF
    :raises EncodeError: ``text`` holds a lone surrogate
    """
    if text.isascii():
        return len(text)
    try:
        return len(text.encode("utf-16-le")) >> 1
    except UnicodeEncodeError:
        raise EncodeError("string contains a lone surrogate") from None


def frame(text: str) -> str:
    """One raw frame ``~m~LEN~m~text`` (no checks on its content).

    :raises EncodeError: ``text`` holds a lone surrogate
    """
    return "~m~%d~m~%s" % (utf16_len(text), text)


def heartbeat(number: Union[int, str]) -> str:
    """The heartbeat frame ``~h~N``: the server sends it, the client echoes it verbatim.

    :param number: an int, or the str a received heartbeat carried (to echo it).
    :returns: the encoded frame.
    """
    return frame("%s%s" % (HEARTBEAT_MARK, number))


def _encode_json(value: Any) -> str:
    try:
        return _json_encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise EncodeError("value is not JSON-able: %s" % exc) from None


_last_text: Tuple[Optional[str], str] = (None, "")


def encode(value: Any) -> str:
    """Frames for a Python value, with the TornadIO mapping (docs/protocol.rst §1.6).

    ``str`` goes as is; a list (or nested lists) becomes one frame per item;
    anything else, ``None`` included, is sent as ``~j~`` JSON.

    :returns: the payload, a str (empty for an empty list)
    :raises EncodeError: the value cannot be sent without breaking the client:
        NaN or infinities, non-JSON types, a circular list, lone surrogates, a
        str starting with ``~h~``, or with ``~j~`` not followed by JSON
    """
    global _last_text
    if isinstance(value, str):
        last = _last_text
        if value is last[0]:  # the same string sent to many clients in a loop
            return last[1]
        if value.startswith(HEARTBEAT_MARK):
            raise EncodeError("a text message may not start with ~h~")
        if value.startswith(JSON_MARK):
            try:
                _json_decode(value[3:])
            except (ValueError, RecursionError):
                raise EncodeError("a text message starting with ~j~ must hold JSON") from None
        framed = frame(value)
        _last_text = (value, framed)  # one assignment: safe across threads
        return framed
    if isinstance(value, list):
        return _encode_list(value)
    return frame(JSON_MARK + _encode_json(value))


def _encode_list(value: List[Any]) -> str:
    """Flatten nested lists without recursion (deep nesting, cycles)."""
    parts: List[str] = []
    stack = [iter(value)]
    active = {id(value)}
    path = [id(value)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if id(item) in active:
                    raise EncodeError("circular list")
                stack.append(iter(item))
                active.add(id(item))
                path.append(id(item))
                break
            parts.append(encode(item))
        else:
            stack.pop()
            active.discard(path.pop())
    return "".join(parts)


_new_frame = tuple.__new__  # Frame(...) without the namedtuple's Python-level __new__


def _classify(message: str) -> Frame:
    if message[:1] != "~":
        return _new_frame(Frame, (TEXT, message))
    if message.startswith(HEARTBEAT_MARK):
        return Frame(HEARTBEAT, message[3:])
    if message.startswith(JSON_MARK):
        try:
            return Frame(JSON, _json_decode(message[3:]))
        except (ValueError, RecursionError) as exc:
            raise DecodeError("invalid JSON in ~j~ message: %s" % str(exc)[:80]) from None
    return Frame(TEXT, message)


def _parse_len(digits: str, max_length: Optional[int]) -> int:
    if not digits:
        raise DecodeError("frame without LEN digits")
    if len(digits) > MAX_LEN_DIGITS or not (digits.isascii() and digits.isdigit()):
        raise DecodeError("bad LEN %r" % digits[:MAX_LEN_DIGITS + 2])
    length = int(digits)
    if max_length is not None and length > max_length:
        raise DecodeError("LEN %d exceeds the limit of %d" % (length, max_length))
    return length


def _utf16_text(units: bytes) -> str:
    try:
        return units.decode("utf-16-le")
    except UnicodeDecodeError:
        raise DecodeError("a LEN splits a surrogate pair") from None


def _split(data: AnyStr, width: int, max_length: Optional[int], max_frames: Optional[int],
           as_text: Callable[[AnyStr], str]) -> List[str]:
    """Cut ``data`` into messages by LEN.

    ``data`` is the payload itself when every character is one UTF-16 unit
    (``width`` 1), else its UTF-16-LE bytes (``width`` 2), so LEN always
    counts what JavaScript counts. ``as_text`` turns a slice into a str.
    Stops at frame ``max_frames + 1``: refusing a flood costs no more than
    reading a legal payload.
    """
    # ~m~ in data's own form (str when width is 1, else UTF-16-LE bytes): the
    # checker cannot tie that to AnyStr, and a cast() would cost a call per payload.
    mark: Any = FRAME_MARK if width == 1 else _MARK_UNITS
    step = 3 * width
    window = (3 + MAX_LEN_DIGITS + 3) * width
    messages: List[str] = []
    pos, size = 0, len(data)
    while pos < size:
        if len(messages) == max_frames:
            raise TooManyFramesError("payload holds more than %d frames" % max_frames)
        if not data.startswith(mark, pos):
            raise DecodeError("expected ~m~ at unit %d" % (pos // width))
        end = data.find(mark, pos + step, pos + window)
        if end < 0 or (end - pos) % width:
            raise DecodeError("unterminated LEN at unit %d" % (pos // width))
        length = _parse_len(as_text(data[pos + step:end]), max_length)
        start = end + step
        pos = start + length * width
        if pos > size:
            raise DecodeError("LEN %d runs past the end of the payload" % length)
        messages.append(as_text(data[start:pos]))
    return messages


def _split_text(text: str, max_length: Optional[int], max_frames: Optional[int]) -> List[str]:
    """:func:`_split` for a str whose characters are one UTF-16 unit each.

    One regular-expression match per frame head instead of several steps: a
    batch of 10,000 frames is read about twice as fast. Anything it does not
    take goes to :func:`_split`, which raises the precise error.
    """
    head = _ONE_FRAME.match
    messages: List[str] = []
    append = messages.append
    pos, size = 0, len(text)
    while pos < size:
        if len(messages) == max_frames:
            raise TooManyFramesError("payload holds more than %d frames" % max_frames)
        found = head(text, pos)
        if found is None:
            break
        length = int(found.group(1))
        start = found.end()
        pos = start + length
        if pos > size or (max_length is not None and length > max_length):
            break
        append(text[start:pos])
    else:
        return messages
    return _split(text, 1, max_length, max_frames, str)


def decode(payload: str, max_length: Optional[int] = None,
           max_frames: Optional[int] = None) -> List[Frame]:
    """All frames of a payload, in order, as ``Frame(kind, data)``.

    The empty payload holds no frames.

    :param payload: the str a client sent
    :param max_length: bound of each declared LEN, in UTF-16 units (None: none)
    :param max_frames: bound of the number of frames, heartbeats included
        (None: none)
    :returns: a list of :class:`Frame`
    :raises TooManyFramesError: beyond ``max_frames`` (a DecodeError)
    :raises DecodeError: anything is malformed; nothing of the payload is returned
    """
    if payload.isascii():
        single = _ONE_FRAME.match(payload)
        if single is not None and len(payload) - single.end() == int(single.group(1)):
            # The common case: one frame, nothing to walk.
            _parse_len(single.group(1), max_length)
            return [_classify(payload[single.end():])]
        messages = _split_text(payload, max_length, max_frames)
    else:
        try:
            units = payload.encode("utf-16-le")
        except UnicodeEncodeError:
            raise DecodeError("payload contains a lone surrogate") from None
        if len(units) == 2 * len(payload):  # no astral character: units == code points
            messages = _split_text(payload, max_length, max_frames)
        else:
            messages = _split(units, 2, max_length, max_frames, _utf16_text)
    return [_classify(message) for message in messages]
