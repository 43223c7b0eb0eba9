"""Transports over one long-lived socket: websocket (RFC 6455) and flashsocket (hixie-76)."""
import hashlib
import logging
import struct
from datetime import timedelta
from typing import Any, Awaitable, Coroutine, Generator, Optional, Union

import tornado.util
import tornado.web
import tornado.websocket
from tornado import gen, iostream
from tornado.ioloop import IOLoop

from tornadio import origins, session as sessions
from tornadio.transport import (SLOTTED_STATE, TransportError, TransportHandlerMixin,
                                init_slotted_state, retrieve_write_error)

log = logging.getLogger("tornadio.persistent")

# Headers of a final text frame with a 16-bit and a 64-bit payload length.
_FRAME_16 = b"\x81\x7e"
_FRAME_64 = b"\x81\x7f"


class ReleasedOnceRun:
    """Awaitable once, letting go of its coroutine as the await starts."""

    __slots__ = ("coroutine",)

    def __init__(self, coroutine: "Coroutine[Any, Any, None]") -> None:
        self.coroutine: "Optional[Coroutine[Any, Any, None]]" = coroutine

    def __await__(self) -> "Generator[Any, None, None]":
        coroutine, self.coroutine = self.coroutine, None
        if coroutine is None:
            raise RuntimeError("awaited twice")
        return coroutine.__await__()


class WebSocketTransport(TransportHandlerMixin, tornado.websocket.WebSocketHandler):
    """Native browser WebSocket; one text message carries one payload."""

    name = "websocket"
    # Kept out of the instance dict, which then holds only Tornado's names.
    __slots__ = tuple(name for name, _ in SLOTTED_STATE)

    def initialize(self, router: Any) -> None:
        init_slotted_state(self)
        super().initialize(router)

    def get(self, resource: Any = None, extra: Optional[str] = None,  # type: ignore[override]
            protocol: Any = None, rest: Optional[str] = None) -> Awaitable[None]:
        # Checked before the upgrade, while a 503 can still be answered.
        self.check_capacity()
        self.take_route(extra)
        # The 0.6 client never puts a session id in the WebSocket URL. Returned,
        # not awaited: no frame of ours stays alive for the connection's life.
        return super().get()

    def on_finish(self) -> None:
        # Nothing reads ``answered`` once the upgrade is answered.
        pass

    def post(self, *args: Any, **kwargs: Any) -> None:
        raise TransportError(405, "websocket takes no POST")

    def options(self, *args: Any, **kwargs: Any) -> None:
        raise TransportError(405, "websocket takes no OPTIONS")

    def check_origin(self, origin: str) -> bool:
        allowed: bool = origins.check(self.socket_settings["allowed_origins"], origin,
                                      self.request, self.name)
        if not allowed:
            self.fail_reason = origins.REFUSED
        return allowed

    @property
    def max_message_size(self) -> int:
        limit: int = self.socket_settings["max_websocket_message"]
        return limit

    def open(self, *args: Any, **kwargs: Any) -> Awaitable[None]:
        # Tornado keeps what open() returns for the connection's life: a
        # finished coroutine would stay with every idle connection.
        return ReleasedOnceRun(self.start_session())

    async def start_session(self) -> None:
        """Make the session, run ``on_open``, then attach (the body of ``open``)."""
        try:
            session = self.create_session()
        except TransportError as exc:
            self.fail_reason = exc.detail
            self.close(1013 if exc.status_code == 503 else 1011, exc.detail)
            return
        self.session = session
        if not await self.open_session(session):
            refused = session.close_reason == sessions.REASON_REFUSED
            self.close(1008 if refused else 1001, "refused" if refused else session.close_reason)
            return
        # Payloads are small and already batched per loop turn: Nagle would only
        # add delayed-ACK stalls (40 ms) to every round trip.
        self.set_nodelay(True)
        session.attach(self)
        session.start_heartbeats()

    def on_message(self, message: Union[str, bytes]) -> "Optional[Any]":
        session = self.session
        if session is None or session.is_closed:
            return None
        if isinstance(message, bytes):
            self.refuse(session, "binary WebSocket message")
            return None
        # A returned future makes Tornado hold further frames until it resolves.
        return self.receive_or_refuse(session, message)

    def on_close(self) -> None:
        if self.session is not None:
            self.session.close(sessions.REASON_CLIENT)

    # -- sink -----------------------------------------------------------------
    def write_payload(self, payload: str) -> None:
        if not payload or not self.room_for(len(payload)):
            return
        connection = self.ws_connection
        if connection is None or connection.is_closing() or connection.stream is None:
            self.on_close()
            return
        data = payload.encode("utf-8")
        # One unmasked text frame (RFC 6455 §5.2) straight to the stream: what
        # write_message writes, without the task it wraps every write in.
        # Uncompressed (RSV1 clear) is valid whatever extensions were agreed.
        size = len(data)
        if size < 126:
            frame = bytes((0x81, size)) + data
        elif size < 0x10000:
            frame = _FRAME_16 + size.to_bytes(2, "big") + data
        else:
            frame = _FRAME_64 + size.to_bytes(8, "big") + data
        try:
            self.track_write(connection.stream.write(frame), len(frame))
        except iostream.StreamClosedError:
            self.on_close()

    def end(self) -> None:
        self.close()

    def drop_client(self) -> None:
        self.close()


# -- flashsocket (hixie-76) ----------------------------------------------------

#: How long the client has to send the 8 key3 bytes after its headers.
HANDSHAKE_TIMEOUT = 10.0
#: How long ``end()`` waits for the last bytes to leave before closing anyway.
CLOSE_FLUSH_TIMEOUT = 5.0

_HIXIE_FRAME_START = b"\x00"
_HIXIE_FRAME_END = b"\xff"
_HIXIE_CLOSE = b"\xff\x00"
_DIGITS = frozenset("0123456789")


def _hixie76_key_number(key: Union[str, bytes]) -> int:
    """The 32-bit number a Sec-WebSocket-Key1/Key2 value encodes.

    Its ASCII digits read as one integer, divided by its number of spaces;
    ValueError when there are no digits, no spaces, a remainder, or the
    quotient does not fit in 32 bits.
    """
    if isinstance(key, bytes):
        key = key.decode("latin-1")
    digits = "".join(ch for ch in key if ch in _DIGITS)
    spaces = key.count(" ")
    if not digits:
        raise ValueError("key has no digits")
    if len(digits) > 20:
        raise ValueError("key has too many digits")
    if spaces == 0:
        raise ValueError("key has no spaces")
    number = int(digits)
    if number % spaces:
        raise ValueError("key number is not a multiple of its space count")
    quotient = number // spaces
    if quotient > 0xFFFFFFFF:
        raise ValueError("key number does not fit in 32 bits")
    return quotient


def hixie76_digest(key1: Union[str, bytes], key2: Union[str, bytes], key3: bytes) -> bytes:
    """The 16-byte hixie-76 handshake answer: md5(k1 ‖ k2 ‖ key3).

    ``key1``/``key2`` are the Sec-WebSocket-Key1/Key2 header values (str or
    bytes), ``key3`` the 8 raw bytes after the request headers. Raises
    ValueError for keys that break the draft's rules.
    """
    if len(key3) != 8:
        raise ValueError("key3 must be 8 bytes, not %d" % len(key3))
    packed = struct.pack(">II", _hixie76_key_number(key1), _hixie76_key_number(key2))
    return hashlib.md5(packed + bytes(key3)).digest()


def _header_value_ok(value: str) -> bool:
    """True for a value safe to echo into a response header line."""
    return bool(value) and not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


class FlashSocketTransport(TransportHandlerMixin, tornado.web.RequestHandler):
    """The Flash web-socket-js polyfill: hixie-76 handshake and 0x00…0xFF frames.

    Tornado's ``WebSocketHandler`` only speaks RFC 6455, so the request's stream
    is detached after the headers and the protocol is spoken by hand
    (docs/protocol.rst §4.2). The handler then is the session's sink until the
    socket closes. The session is made only once the handshake is complete:
    a client that never sends its key3 bytes holds no ``max_sessions`` slot.
    """

    name = "flashsocket"
    stream: Optional[iostream.IOStream] = None
    closing = False

    # -- HTTP entry points ---------------------------------------------------------
    def post(self, *args: Any, **kwargs: Any) -> None:
        raise TransportError(405, "flashsocket takes no POST")

    def options(self, *args: Any, **kwargs: Any) -> None:
        raise TransportError(405, "flashsocket takes no OPTIONS")

    async def get(self, resource: Any = None, extra: Optional[str] = None,
                  protocol: Any = None, rest: Optional[str] = None) -> None:
        request = self.request
        headers = request.headers
        if headers.get("Upgrade", "").strip().lower() != "websocket":
            raise TransportError(400, "flashsocket needs Upgrade: WebSocket")
        tokens = [token.strip().lower() for token in headers.get("Connection", "").split(",")]
        if "upgrade" not in tokens:
            raise TransportError(400, "flashsocket needs Connection: Upgrade")
        key1 = headers.get("Sec-WebSocket-Key1")
        key2 = headers.get("Sec-WebSocket-Key2")
        if key1 is None or key2 is None:
            raise TransportError(400, "flashsocket needs Sec-WebSocket-Key1/Key2 (hixie-76)")
        try:
            _hixie76_key_number(key1)
            _hixie76_key_number(key2)
        except ValueError as exc:
            raise TransportError(400, "bad hixie-76 key: %s" % exc) from None
        origin = headers.get("Origin", "")
        if not _header_value_ok(origin):
            raise TransportError(400, "flashsocket needs an Origin header")
        if not origins.check(self.socket_settings["allowed_origins"], origin, request, self.name):
            raise TransportError(403, origins.REFUSED)
        host = request.host
        if not _header_value_ok(host) or not _header_value_ok(request.uri):
            raise TransportError(400, "bad Host or request target")
        # Checked before the stream is detached, while a 503 can still be answered.
        self.check_capacity()
        self.take_route(extra)
        try:
            await self._run(key1, key2, origin, host, request)
        except Exception:
            session = self.session
            log.exception("session %s (%s): transport error",
                          sessions.short_id(session.id) if session else "-", self.name)
            if session is not None:
                session.close(sessions.REASON_SERVER)
            self._close_stream()

    async def _run(self, key1: str, key2: str, origin: str, host: str, request: Any) -> None:
        self.stream = stream = self.detach()
        self.answered = True
        try:
            key3 = await gen.with_timeout(timedelta(seconds=HANDSHAKE_TIMEOUT),
                                          stream.read_bytes(8),
                                          quiet_exceptions=iostream.StreamClosedError)
        except (tornado.util.TimeoutError, iostream.StreamClosedError):
            log.info("flashsocket handshake from %s: no key3 bytes", request.remote_ip)
            self._close_stream()
            return
        try:
            session = self.session = self.create_session()
        except TransportError as exc:
            # Full meanwhile: the upgrade is refused over the raw stream.
            self.fail_reason = exc.detail
            log.info("flashsocket handshake from %s refused: %s", request.remote_ip, exc.detail)
            self._close_stream()
            return
        scheme = "wss" if request.protocol == "https" else "ws"
        response = ("HTTP/1.1 101 WebSocket Protocol Handshake\r\n"
                    "Upgrade: WebSocket\r\n"
                    "Connection: Upgrade\r\n"
                    "Sec-WebSocket-Origin: %s\r\n"
                    "Sec-WebSocket-Location: %s://%s%s\r\n"
                    "\r\n" % (origin, scheme, host, request.uri))
        digest = hixie76_digest(key1, key2, key3)
        try:
            stream.write(response.encode("latin-1") + digest).add_done_callback(
                retrieve_write_error)
        except iostream.StreamClosedError:
            session.close(sessions.REASON_CLIENT)
            return
        if not await self.open_session(session):
            self._close_stream()
            return
        if stream.closed():
            session.close(sessions.REASON_CLIENT)
            return
        session.attach(self)
        session.start_heartbeats()
        await self._read_loop(session, stream)

    async def _read_loop(self, session: sessions.Session, stream: iostream.IOStream) -> None:
        limit = self.socket_settings["max_websocket_message"]
        max_bytes = limit + 1 if limit else None
        try:
            while True:
                kind = await stream.read_bytes(1)
                if kind == _HIXIE_FRAME_START:
                    try:
                        data = await stream.read_until(_HIXIE_FRAME_END, max_bytes=max_bytes)
                    except iostream.StreamClosedError as exc:
                        # Past max_bytes without the end marker, IOStream closes
                        # the stream and names the reason in real_error.
                        if isinstance(exc.real_error, iostream.UnsatisfiableReadError):
                            self.refuse(session, "frame longer than %d bytes" % limit)
                            return
                        raise
                    if session.is_closed:
                        continue
                    try:
                        text = data[:-1].decode("utf-8")
                    except UnicodeDecodeError:
                        self.refuse(session, "frame is not valid UTF-8")
                        return
                    waiter = self.receive_or_refuse(session, text)
                    if waiter is not None:
                        await waiter
                    if session.is_closed:
                        return
                elif kind == _HIXIE_FRAME_END:
                    second = await stream.read_bytes(1)
                    if second != b"\x00":
                        self.refuse(session, "unsupported frame type 0xff 0x%02x" % second[0])
                        return
                    # The client's closing handshake: end() answers it with
                    # 0xFF 0x00 and closes the stream once that is sent.
                    if session.is_closed:
                        self._close_stream()
                    else:
                        session.close(sessions.REASON_CLIENT)
                    return
                else:
                    self.refuse(session, "unexpected frame type 0x%02x" % kind[0])
                    return
        except iostream.StreamClosedError:
            session.close(sessions.REASON_CLIENT)

    def on_connection_close(self) -> None:
        # Tornado only calls this before the stream is detached.
        super().on_connection_close()
        if self.session is not None:
            self.session.close(sessions.REASON_CLIENT)

    # -- sink ---------------------------------------------------------------------
    def write_payload(self, payload: str) -> None:
        stream = self.stream
        if not payload or stream is None or self.closing:
            return
        if stream.closed():
            self._client_gone()
            return
        frame = _HIXIE_FRAME_START + payload.encode("utf-8") + _HIXIE_FRAME_END
        if not self.room_for(len(frame)):
            return
        try:
            self.track_write(stream.write(frame), len(frame))
        except iostream.StreamClosedError:
            self._client_gone()

    def _client_gone(self) -> None:
        if self.session is not None:
            self.session.close(sessions.REASON_CLIENT)

    def end(self) -> None:
        """Send the closing frame, then close once it (and all before it) left."""
        stream = self.stream
        if stream is None or self.closing:
            return
        self.closing = True
        if stream.closed():
            return
        try:
            flushed = stream.write(_HIXIE_CLOSE)
        except iostream.StreamClosedError:
            stream.close()
            return
        loop = IOLoop.current()
        timer = loop.call_later(CLOSE_FLUSH_TIMEOUT, stream.close)

        def done(future: Any) -> None:
            retrieve_write_error(future)
            loop.remove_timeout(timer)
            stream.close()

        flushed.add_done_callback(done)

    def drop_client(self) -> None:
        self._close_stream()

    def _close_stream(self) -> None:
        self.closing = True
        if self.stream is not None and not self.stream.closed():
            self.stream.close()
