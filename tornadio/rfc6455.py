"""The RFC 6455 WebSocket wire format, server side: pure functions, no I/O.

Why TornadIO speaks it itself (docs/architecture.rst): Tornado's
``WebSocketHandler`` reads every frame with two or three awaited reads, each
with a future of its own, which costs more than the whole Socket.IO layer.
:class:`FrameReader` parses whatever bytes have arrived, many frames at once.
Only what a server needs is here: client frames are masked, server frames
are not; no extension is ever agreed, so RSV bits must be clear.
"""
import base64
import hashlib
import struct
from typing import List, Optional, Tuple

__all__ = ["ProtocolViolation", "FrameReader", "accept_key", "text_frame", "close_frame",
           "pong_frame", "OP_TEXT", "OP_BINARY", "OP_CLOSE", "OP_PING", "OP_PONG"]

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

#: Close codes (RFC 6455 §7.4.1) the reader gives its violations.
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

#: Most frames one message may come in. Browsers send a message as one frame;
#: the bound keeps a stream of empty continuations from costing unbounded work.
MAX_FRAGMENTS = 1024

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_DATA_OPCODES = (OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)


class ProtocolViolation(ValueError):
    """The client broke RFC 6455: close with ``code``; ``reason`` is one log line.

    ``messages``: what :meth:`FrameReader.feed` completed before the bad frame.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.messages: List[Tuple[int, bytes]] = []


def accept_key(key: str) -> str:
    """The ``Sec-WebSocket-Accept`` value answering a ``Sec-WebSocket-Key`` (§4.2.2)."""
    digest = hashlib.sha1(key.strip().encode("latin-1") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def unmask(mask: bytes, data: bytes) -> bytes:
    """``data`` XOR the repeated 4-byte ``mask`` (§5.3), one big-int operation."""
    size = len(data)
    if not size:
        return b""
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(data, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def _frame(opcode: int, data: bytes) -> bytes:
    """One final, unmasked server frame."""
    size = len(data)
    if size < 126:
        return bytes((0x80 | opcode, size)) + data
    if size < 0x10000:
        return bytes((0x80 | opcode, 126)) + size.to_bytes(2, "big") + data
    return bytes((0x80 | opcode, 127)) + size.to_bytes(8, "big") + data


def text_frame(data: bytes) -> bytes:
    """A text message of UTF-8 ``data`` as one frame."""
    return _frame(OP_TEXT, data)


def pong_frame(data: bytes) -> bytes:
    """The answer to a ping carrying ``data`` (at most 125 bytes, as the ping's)."""
    return _frame(OP_PONG, data)


def close_frame(code: Optional[int] = None, reason: str = "") -> bytes:
    """A close frame: no payload without ``code``; ``reason`` cut to fit 125 bytes."""
    if code is None:
        return _frame(OP_CLOSE, b"")
    text = reason.encode("utf-8")[:123]
    return _frame(OP_CLOSE, struct.pack(">H", code) + text.decode("utf-8", "ignore").encode())


def _sendable_close_code(code: int) -> bool:
    """Codes an endpoint may put in a close frame (§7.4): not 1004-1006, 1015, < 1000."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


def parse_close(data: bytes) -> Tuple[Optional[int], str]:
    """(code, reason) of a close frame's payload; ProtocolViolation when malformed."""
    if not data:
        return None, ""
    if len(data) == 1:
        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "close frame of 1 byte")
    code = struct.unpack(">H", data[:2])[0]
    if not _sendable_close_code(code):
        raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "close code %d may not be sent" % code)
    try:
        reason = data[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolViolation(CLOSE_INVALID_DATA, "close reason is not UTF-8") from None
    return code, reason


class FrameReader:
    """Messages from a client's byte stream, reassembled and unmasked.

    :meth:`feed` takes any slice of the stream and returns the complete
    messages in it as ``(opcode, payload)``: text and binary messages whole
    (fragments joined), control frames as they come. A message or frame
    declaring more than ``max_message`` bytes is refused from its header,
    before its payload is buffered.
    """

    __slots__ = ("max_message", "_buffer", "_wanted", "_fragments", "_fragment_opcode",
                 "_fragment_frames")

    def __init__(self, max_message: Optional[int] = None) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        #: Bytes the buffered frame needs before parsing is worth trying again:
        #: a large frame arriving in many reads is copied once, not once per read.
        self._wanted = 0
        #: The message being reassembled (None: none), its opcode and frame count.
        self._fragments: Optional[bytearray] = None
        self._fragment_opcode = 0
        self._fragment_frames = 0

    def feed(self, data: bytes) -> List[Tuple[int, bytes]]:
        """The messages completed by ``data``.

        Raises ProtocolViolation at the first bad frame, with the messages
        completed before it in its ``messages``; the reader is then unusable.
        """
        # The usual read: one whole, short, final text frame, nothing held over.
        if not self._buffer and data[:1] == b"\x81" and self._fragments is None:
            length = len(data) - 6
            limit = self.max_message
            if 0 <= length < 126 and data[1] == 0x80 + length and (limit is None or length <= limit):
                return [(OP_TEXT, unmask(data[2:6], data[6:]))]
        messages: List[Tuple[int, bytes]] = []
        try:
            self._parse(data, messages)
        except ProtocolViolation as exc:
            exc.messages = messages
            raise
        return messages

    def _parse(self, data: bytes, messages: List[Tuple[int, bytes]]) -> None:
        buffer = self._buffer
        if buffer:
            buffer += data
            if len(buffer) < self._wanted:
                return
            view: bytes = bytes(buffer)
        else:
            view = data
        pos, size = 0, len(view)
        limit = self.max_message
        wanted = 2
        while size - pos >= 2:
            first, second = view[pos], view[pos + 1]
            length = second & 0x7F
            head = pos + 2
            if length >= 126:  # a 16-bit or a 64-bit length follows
                extra = 2 if length == 126 else 8
                if size - head < extra:
                    wanted = 2 + extra
                    break
                length = int.from_bytes(view[head:head + extra], "big")
                if length >> 63:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "64-bit length with its top bit set")
                head += extra
            opcode = first & 0x0F
            fin = first & 0x80
            if first & 0x70:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "RSV bits set (no extension agreed)")
            if not second & 0x80:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "unmasked client frame")
            if opcode in _CONTROL_OPCODES:
                if length > 125 or not fin:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "fragmented or long control frame")
            elif opcode in _DATA_OPCODES or opcode == OP_CONTINUATION:
                if opcode == OP_CONTINUATION and self._fragments is None:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "continuation of no message")
                if opcode != OP_CONTINUATION and self._fragments is not None:
                    raise ProtocolViolation(CLOSE_PROTOCOL_ERROR,
                                            "new message inside a fragmented one")
                whole = length
                if opcode == OP_CONTINUATION:
                    assert self._fragments is not None
                    whole += len(self._fragments)
                    if self._fragment_frames >= MAX_FRAGMENTS:
                        raise ProtocolViolation(CLOSE_TOO_BIG,
                                                "message in more than %d frames" % MAX_FRAGMENTS)
                if limit is not None and whole > limit:
                    raise ProtocolViolation(CLOSE_TOO_BIG,
                                            "message over %d bytes (max_websocket_message)" % limit)
            else:
                raise ProtocolViolation(CLOSE_PROTOCOL_ERROR, "unknown opcode 0x%x" % opcode)
            end = head + 4 + length
            if end > size:
                wanted = end - pos
                break
            payload = unmask(view[head:head + 4], view[head + 4:end])
            pos = end
            if opcode in _CONTROL_OPCODES:
                messages.append((opcode, payload))
            elif opcode != OP_CONTINUATION and fin:
                messages.append((opcode, payload))
            elif opcode != OP_CONTINUATION:
                self._fragments = bytearray(payload)
                self._fragment_opcode = opcode
                self._fragment_frames = 1
            else:
                assert self._fragments is not None
                self._fragments += payload
                self._fragment_frames += 1
                if fin:
                    messages.append((self._fragment_opcode, bytes(self._fragments)))
                    self._fragments = None
                    self._fragment_frames = 0
        if pos == size:
            if buffer:
                buffer.clear()
            self._wanted = 0
        else:
            if buffer:
                del buffer[:pos]
            else:
                buffer += view[pos:]
            self._wanted = wanted
