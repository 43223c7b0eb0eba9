"""Transports over one long-lived socket: websocket (RFC 6455) and flashsocket (hixie-76)."""
import hashlib
import logging
import struct
from datetime import timedelta

import tornado.websocket
from tornado import gen, iostream
from tornado.ioloop import IOLoop
from tornado.iostream import StreamBufferFullError

from tornadio import origins, session as sessions
from tornadio.transport import Transport, limit_write_buffer, retrieve_write_error

log = logging.getLogger("tornadio.persistent")


class WebSocketTransport(Transport):
    """Native browser WebSocket; one text message carries one payload."""

    name = "websocket"

    def get(self, rest):
        # Checked before the upgrade, while a 503 can still be answered.
        if self.refused_for_capacity():
            return None
        # The 0.6 client never puts a session id in the WebSocket URL.
        return tornado.websocket.WebSocketHandler.get(self.handler)

    def post(self, rest):
        self.fail(405, "websocket takes no POST")

    def options(self):
        self.fail(405, "websocket takes no OPTIONS")

    async def on_open(self):
        session = self.create_session()
        if session is None:
            self.handler.close(1013, "session limit reached")
            return
        self.session = session
        if not await self.open_session(session):
            self.handler.close(1008, "refused")
            return
        limit_write_buffer(self.handler.ws_connection.stream, self.settings)
        # Payloads are small and already batched per loop turn: Nagle would only
        # add delayed-ACK stalls (40 ms) to every round trip.
        self.handler.set_nodelay(True)
        session.attach(self)
        session.start_heartbeats()

    def on_socket_message(self, message):
        session = self.session
        if session is None or session.is_closed:
            return
        if isinstance(message, bytes):
            self.refuse(session, "binary WebSocket message")
            return None
        # A returned future makes Tornado hold further frames until it resolves.
        return self.receive_or_refuse(session, message)

    def on_connection_lost(self):
        if self.session is not None:
            self.session.close(sessions.REASON_CLIENT)

    # -- sink -----------------------------------------------------------------
    def write_payload(self, payload):
        if payload:
            try:
                self.handler.write_message(payload).add_done_callback(retrieve_write_error)
            except tornado.websocket.WebSocketClosedError:
                self.on_connection_lost()
            except StreamBufferFullError:
                self.overflowed(self.handler.ws_connection.stream)

    def end(self):
        self.handler.close()


# -- flashsocket (hixie-76) ----------------------------------------------------

#: How long the client has to send the 8 key3 bytes after its headers.
HANDSHAKE_TIMEOUT = 10.0
#: How long ``end()`` waits for the last bytes to leave before closing anyway.
CLOSE_FLUSH_TIMEOUT = 5.0

_HIXIE_FRAME_START = b"\x00"
_HIXIE_FRAME_END = b"\xff"
_HIXIE_CLOSE = b"\xff\x00"
_DIGITS = frozenset("0123456789")


def _hixie76_key_number(key):
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


def hixie76_digest(key1, key2, key3):
    """The 16-byte hixie-76 handshake answer: md5(k1 ‖ k2 ‖ key3).

    ``key1``/``key2`` are the Sec-WebSocket-Key1/Key2 header values (str or
    bytes), ``key3`` the 8 raw bytes after the request headers. Raises
    ValueError for keys that break the draft's rules.
    """
    if len(key3) != 8:
        raise ValueError("key3 must be 8 bytes, not %d" % len(key3))
    packed = struct.pack(">II", _hixie76_key_number(key1), _hixie76_key_number(key2))
    return hashlib.md5(packed + bytes(key3)).digest()


def _header_value_ok(value):
    """True for a value safe to echo into a response header line."""
    return bool(value) and not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in value)


class FlashSocketTransport(Transport):
    """The Flash web-socket-js polyfill: hixie-76 handshake and 0x00…0xFF frames.

    Tornado's ``WebSocketHandler`` only speaks RFC 6455, so the request's stream
    is detached after the headers and the protocol is spoken by hand
    (PROTOCOL.md §4.2). The transport then is the session's sink until the
    socket closes.
    """

    name = "flashsocket"

    def __init__(self, handler):
        super().__init__(handler)
        self.stream = None
        self._closing = False

    # -- HTTP entry points ---------------------------------------------------------
    async def post(self, rest):
        self.fail(405, "flashsocket takes no POST")

    def options(self):
        self.fail(405, "flashsocket takes no OPTIONS")

    async def get(self, rest):
        request = self.handler.request
        headers = request.headers
        if headers.get("Upgrade", "").strip().lower() != "websocket":
            self.fail(400, "flashsocket needs Upgrade: WebSocket")
            return
        tokens = [token.strip().lower() for token in headers.get("Connection", "").split(",")]
        if "upgrade" not in tokens:
            self.fail(400, "flashsocket needs Connection: Upgrade")
            return
        key1 = headers.get("Sec-WebSocket-Key1")
        key2 = headers.get("Sec-WebSocket-Key2")
        if key1 is None or key2 is None:
            self.fail(400, "flashsocket needs Sec-WebSocket-Key1/Key2 (hixie-76)")
            return
        try:
            _hixie76_key_number(key1)
            _hixie76_key_number(key2)
        except ValueError as exc:
            self.fail(400, "bad hixie-76 key: %s" % exc)
            return
        origin = headers.get("Origin", "")
        if not _header_value_ok(origin):
            self.fail(400, "flashsocket needs an Origin header")
            return
        if not origins.check(self.settings["allowed_origins"], origin, request, self.name):
            self.fail(403, origins.REFUSED)
            return
        host = request.host
        if not _header_value_ok(host) or not _header_value_ok(request.uri):
            self.fail(400, "bad Host or request target")
            return
        # Made before the stream is detached, so that a full server can still
        # answer 503 over HTTP. Until it is opened, closing it runs no hook.
        session = self.create_session()
        if session is None:
            return
        self.session = session
        try:
            await self._run(session, key1, key2, origin, host, request)
        except Exception:
            log.exception("session %s (%s): transport error",
                          sessions.short_id(session.id), self.name)
            session.close(sessions.REASON_SERVER)
            self._close_stream()

    async def _run(self, session, key1, key2, origin, host, request):
        self.stream = stream = self.handler.detach()
        # write() beyond max_queue_bytes raises StreamBufferFullError: a client
        # that stops reading is dropped instead of buffering without bound.
        limit_write_buffer(stream, self.settings)
        try:
            key3 = await gen.with_timeout(timedelta(seconds=HANDSHAKE_TIMEOUT),
                                          stream.read_bytes(8),
                                          quiet_exceptions=iostream.StreamClosedError)
        except (gen.TimeoutError, iostream.StreamClosedError):
            log.info("flashsocket handshake from %s: no key3 bytes", request.remote_ip)
            session.close(sessions.REASON_CLIENT)
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

    async def _read_loop(self, session, stream):
        limit = self.settings["max_websocket_message"]
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

    def on_connection_lost(self):
        # Tornado only calls this before the stream is detached.
        if self.session is not None:
            self.session.close(sessions.REASON_CLIENT)

    # -- sink ---------------------------------------------------------------------
    def write_payload(self, payload):
        stream = self.stream
        if not payload or stream is None or self._closing:
            return
        if stream.closed():
            self._client_gone()
            return
        frame = _HIXIE_FRAME_START + payload.encode("utf-8") + _HIXIE_FRAME_END
        try:
            stream.write(frame).add_done_callback(retrieve_write_error)
        except iostream.StreamClosedError:
            self._client_gone()
        except iostream.StreamBufferFullError:
            self.overflowed(stream)

    def _client_gone(self):
        if self.session is not None:
            self.session.close(sessions.REASON_CLIENT)

    def end(self):
        """Send the closing frame, then close once it (and all before it) left."""
        stream = self.stream
        if stream is None or self._closing:
            return
        self._closing = True
        if stream.closed():
            return
        try:
            flushed = stream.write(_HIXIE_CLOSE)
        except (iostream.StreamClosedError, iostream.StreamBufferFullError):
            stream.close()
            return
        loop = IOLoop.current()
        timer = loop.call_later(CLOSE_FLUSH_TIMEOUT, stream.close)

        def done(future):
            retrieve_write_error(future)
            loop.remove_timeout(timer)
            stream.close()

        flushed.add_done_callback(done)

    def _close_stream(self):
        self._closing = True
        if self.stream is not None and not self.stream.closed():
            self.stream.close()
