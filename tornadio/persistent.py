"""Transports over one long-lived socket: websocket (RFC 6455) and flashsocket (hixie-76).

Both are plain ``RequestHandler``s that answer the upgrade, detach the
stream and speak the framing themselves: RFC 6455 through
:mod:`tornadio.rfc6455`, hixie-76 here. For websocket that replaced
Tornado's ``WebSocketHandler``, whose frame reading (two or three awaited
reads per frame) cost more than the whole Socket.IO layer
(docs/architecture.rst).
"""
import asyncio
import hashlib
import logging
import struct
from datetime import timedelta
from typing import Any, Awaitable, List, Optional, Tuple, Union

import tornado.util
import tornado.web
from tornado import gen, iostream
from tornado.concurrent import Future
from tornado.ioloop import IOLoop

from tornadio import origins, rfc6455, session as sessions
from tornadio.socketlink import SocketLink
from tornadio.transport import (SLOTTED_STATE, TransportError, TransportHandlerMixin,
                                init_slotted_state, retrieve_write_error)

log = logging.getLogger("tornadio.persistent")

#: How long the client has to send the 8 key3 bytes after its headers (flashsocket).
HANDSHAKE_TIMEOUT = 10.0
#: How long closing waits for the last bytes to leave, or (websocket) for the
#: client's answering close frame, before it closes the socket anyway.
CLOSE_FLUSH_TIMEOUT = 5.0
#: Frames (or 4 KiB reads) after which a busy socket lets the loop run others.
_YIELD_EVERY = 256
#: The RFC 6455 versions a client may ask for (13 is the RFC; 7 and 8 its drafts).
_WEBSOCKET_VERSIONS = ("7", "8", "13")
_NO_FRAMES: List[Tuple[int, bytes]] = []


def close_when_flushed(stream: iostream.IOStream, flushed: "Future[None]",
                       timeout: float = CLOSE_FLUSH_TIMEOUT) -> None:
    """Close ``stream`` once ``flushed`` (its last write) resolves, or after ``timeout``."""
    loop = IOLoop.current()
    timer = loop.call_later(timeout, stream.close)

    def done(future: "Future[None]") -> None:
        retrieve_write_error(future)
        loop.remove_timeout(timer)
        stream.close()

    flushed.add_done_callback(done)


def _tokens(value: str) -> List[str]:
    return [token.strip().lower() for token in value.split(",")]


class DetachedSocketTransport(TransportHandlerMixin, tornado.web.RequestHandler):
    """What both socket transports do once they detached the stream after the upgrade.

    Subclasses provide ``stream`` and ``closing`` (True once the close began).
    The writes here go through IOStream (flashsocket); websocket writes through
    its :class:`~tornadio.socketlink.SocketLink` and overrides them.
    """

    __slots__ = ()
    stream: Optional[iostream.IOStream]
    closing: bool

    def send_frame(self, frame: bytes) -> None:
        """Write one frame, bounded by ``max_queue_bytes``; a gone client closes the session."""
        stream = self.stream
        if stream is None or self.closing:
            return
        if stream.closed():
            self.client_gone()
            return
        if not self.room_for(len(frame)):
            return
        try:
            self.track_write(stream.write(frame), len(frame))
        except iostream.StreamClosedError:
            self.client_gone()

    def client_gone(self) -> None:
        if self.session is not None:
            self.session.close(sessions.REASON_CLIENT)

    def close_stream(self) -> None:
        """Close the socket at once, without a closing handshake."""
        self.closing = True
        if self.stream is not None and not self.stream.closed():
            self.stream.close()

    def drop_client(self) -> None:
        self.close_stream()


class WebSocketTransport(DetachedSocketTransport):
    """Native browser WebSocket; one text message carries one payload.

    ``get()`` answers the RFC 6455 upgrade with Tornado's own response
    machinery (so the 101 is logged like any answer), detaches the stream and
    hands it to a :class:`~tornadio.socketlink.SocketLink`. Frames are then
    handled in the link's callback as they arrive: no coroutine stays alive
    per connection once its first message came.
    """

    name = "websocket"
    # Kept out of the instance dict: an idle connection's handler then holds
    # only RequestHandler's own names there.
    __slots__ = SLOTTED_STATE + (
        "link", "closing", "client_closed", "close_code", "close_reason", "_close_timer",
        "_reader", "_frames", "_next", "_budget", "_ping", "_violation")

    def initialize(self, router: Any) -> None:
        init_slotted_state(self)
        self.link: Optional[SocketLink] = None
        #: True once our close frame is sent (or the socket is being dropped).
        self.closing = False
        #: True once the client's close frame arrived.
        self.client_closed = False
        #: The client's close code and reason, as ``WebSocketHandler`` had them.
        self.close_code: Optional[int] = None
        self.close_reason: Optional[str] = None
        self._close_timer: Optional[object] = None
        self._reader: Optional[rfc6455.FrameReader] = None
        # The frames of the last read not handled yet (a coroutine on_message, or
        # the loop's turn), where to go on, and what that read still owes.
        self._frames: List[Tuple[int, bytes]] = _NO_FRAMES
        self._next = 0
        self._budget = _YIELD_EVERY
        self._ping: Optional[bytes] = None
        self._violation: Optional[rfc6455.ProtocolViolation] = None
        super().initialize(router)

    @property
    def stream(self) -> Optional[iostream.IOStream]:  # type: ignore[override]
        """The detached stream (None before the upgrade)."""
        return self.link.stream if self.link is not None else None

    # -- the upgrade -----------------------------------------------------------------
    def get(self, resource: Any = None, extra: Optional[str] = None,
            protocol: Any = None, rest: Optional[str] = None) -> Optional[Awaitable[None]]:
        # Checked before the upgrade, while a 503 can still be answered.
        self.check_capacity()
        self.take_route(extra)
        # The 0.6 client never puts a session id in the WebSocket URL.
        headers = self.request.headers
        if headers.get("Upgrade", "").lower() != "websocket":
            raise TransportError(400, 'Can "Upgrade" only to "WebSocket".')
        if "upgrade" not in _tokens(headers.get("Connection", "")):
            raise TransportError(400, '"Connection" must be "Upgrade".')
        origin = headers.get("Origin", headers.get("Sec-Websocket-Origin"))
        if origin is not None and not self.check_origin(origin):
            raise TransportError(403, self.fail_reason or "Cross origin websockets not allowed")
        if headers.get("Sec-WebSocket-Version") not in _WEBSOCKET_VERSIONS:
            # Not an error answer: send_error() would drop the header that says
            # which versions are spoken (RFC 6455 §4.4).
            self.fail_reason = "unsupported Sec-WebSocket-Version"
            self.set_status(426)
            self.set_header("Sec-WebSocket-Version", ", ".join(reversed(_WEBSOCKET_VERSIONS)))
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish(self.fail_reason)
            return None
        key = headers.get("Sec-WebSocket-Key", "").strip()
        if not key:
            raise TransportError(400, "Missing/Invalid WebSocket headers")
        self.set_status(101)
        self.set_header("Upgrade", "websocket")
        self.set_header("Connection", "Upgrade")
        self.set_header("Sec-WebSocket-Accept", rfc6455.accept_key(key))
        self.finish()
        self.link = link = SocketLink(self.detach(), self._on_data, self._link_closed)
        # Returned, not awaited: it ends once the link reads the socket itself.
        return self._serve(link)

    def check_origin(self, origin: str) -> bool:
        """Whether a WebSocket from ``origin`` is allowed (``allowed_origins``)."""
        allowed: bool = origins.check(self.socket_settings["allowed_origins"], origin,
                                      self.request, self.name)
        if not allowed:
            self.fail_reason = origins.REFUSED
        return allowed

    def on_finish(self) -> None:
        # Nothing reads ``answered`` once the upgrade is answered.
        pass

    def post(self, *args: Any, **kwargs: Any) -> None:
        raise TransportError(405, "websocket takes no POST")

    def options(self, *args: Any, **kwargs: Any) -> None:
        raise TransportError(405, "websocket takes no OPTIONS")

    # -- the connection's life ---------------------------------------------------------
    async def _serve(self, link: SocketLink) -> None:
        """Open the session, then read until the link reads on its own."""
        session: Optional[sessions.Session] = None
        try:
            limit = self.socket_settings["max_websocket_message"]
            self._reader = rfc6455.FrameReader(limit or None)
            try:
                session = self.session = self.create_session()
            except TransportError as exc:
                self.fail_reason = exc.detail
                log.info("websocket from %s refused: %s", self.request.remote_ip, exc.detail)
                self.close(1013 if exc.status_code == 503 else 1011, exc.detail)
            else:
                if not await self.open_session(session):
                    refused = session.close_reason == sessions.REASON_REFUSED
                    self.close(1008 if refused else 1001,
                               "refused" if refused else session.close_reason or "")
                elif link.closed or link.stream.closed():
                    session.close(sessions.REASON_CLIENT)
                    link.close()
                    return
                else:
                    # Payloads are small and already batched per loop turn: Nagle
                    # would only add delayed-ACK stalls (40 ms) to every round trip.
                    link.stream.set_nodelay(True)
                    session.attach(self)
                    session.start_heartbeats()
            # Refused or not, read on: a refused client's answering close frame
            # is what lets the socket close at once (RFC 6455 §7.1.1).
            await link.read()
        except Exception:
            self._failed(session)

    def _failed(self, session: Optional[sessions.Session]) -> None:
        log.exception("session %s (%s): transport error",
                      sessions.short_id(session.id) if session else "-", self.name)
        if session is not None:
            session.close(sessions.REASON_SERVER)
        self.close_stream()

    def _on_data(self, data: bytes) -> None:
        """The link's callback: every frame completed by ``data``."""
        assert self._reader is not None  # made before the link reads
        try:
            self._frames = self._reader.feed(data)
        except rfc6455.ProtocolViolation as exc:
            self._violation, self._frames = exc, exc.messages  # the frames before it count
        except Exception:
            self._failed(self.session)
            return
        self._next = 0
        # A read returns at once while the client keeps the socket full, so the
        # loop gets a turn whenever this runs out: one per frame, one per 4 KiB read.
        self._budget -= 1 + (len(data) >> 12)
        self._handle_frames()

    def _handle_frames(self) -> None:
        # Called back by the loop, not awaited: a bug here must not leave the
        # socket registered and failing on every read.
        try:
            self._dispatch()
        except Exception:
            self._frames = _NO_FRAMES
            self._failed(self.session)

    def _after_waiter(self, _: "Future[None]") -> None:
        self._budget = _YIELD_EVERY
        self._handle_frames()

    def _dispatch(self) -> None:
        """Hand text messages to the session, from ``_next`` on, until the read's
        frames are done, the session is busy, or the loop's turn has come.

        The session is None, or closed, once we are closing: then only the
        client's close frame matters.
        """
        link = self.link
        assert link is not None
        session = self.session
        frames = self._frames
        index, count = self._next, len(frames)
        while index < count:
            self._budget -= 1
            if self._budget <= 0:
                self._budget = _YIELD_EVERY
                self._next = index
                link.pause()
                IOLoop.current().add_callback(self._handle_frames)
                return
            opcode, payload = frames[index]
            index += 1
            if opcode == rfc6455.OP_TEXT:
                if session is None or session.is_closed:
                    continue
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    self._frames = _NO_FRAMES
                    self.violated(session, rfc6455.ProtocolViolation(
                        rfc6455.CLOSE_INVALID_DATA, "text message is not valid UTF-8"))
                    return
                # A future: the session is still busy with a coroutine on_message.
                waiter = self.receive_or_refuse(session, text)
                if waiter is not None:
                    self._next = index
                    link.pause()
                    waiter.add_done_callback(self._after_waiter)
                    return
            elif opcode == rfc6455.OP_CLOSE:
                self._frames = _NO_FRAMES
                link.pause()
                self.client_closing(session, payload)
                return
            elif opcode == rfc6455.OP_PING:
                self._ping = payload  # only the last of a read is answered (§5.5.3)
            elif opcode == rfc6455.OP_BINARY:
                if session is not None and not session.is_closed:
                    self.refuse(session, "binary WebSocket message")
            # A pong needs nothing: liveness is the Socket.IO heartbeat's job.
        # An idle connection keeps nothing of its last read.
        self._frames = _NO_FRAMES
        violation, self._violation = self._violation, None
        if violation is not None:
            link.pause()
            self.violated(session, violation)
            return
        ping, self._ping = self._ping, None
        if ping is not None:
            self.send_frame(rfc6455.pong_frame(ping))
        link.resume()

    def client_closing(self, session: Optional[sessions.Session], payload: bytes) -> None:
        """The client's close frame: answer it (unless ours went first), then close."""
        self.client_closed = True
        try:
            self.close_code, self.close_reason = rfc6455.parse_close(payload)
        except rfc6455.ProtocolViolation as exc:
            self.violated(session, exc)
            return
        if self.closing:
            self.close_after_flush()  # it answered ours: the handshake is complete
        else:
            self.close(self.close_code)  # echoing its code; the session's end() is then a no-op
        if session is not None:
            session.close(sessions.REASON_CLIENT)

    def violated(self, session: Optional[sessions.Session],
                 exc: rfc6455.ProtocolViolation) -> None:
        """A frame broke RFC 6455: close with its code and one log line, without
        waiting for an answer from a client that does not speak the protocol."""
        self.close(exc.code, exc.reason)
        if session is not None and not session.is_closed:
            self.refuse(session, exc.reason)
        self.close_after_flush()  # at once when the frame left: the session must know why first

    def _cancel_close_timer(self) -> None:
        timer, self._close_timer = self._close_timer, None
        if timer is not None:
            IOLoop.current().remove_timeout(timer)

    def close_after_flush(self) -> None:
        """Close the socket once what was written to it has left (bounded)."""
        self._cancel_close_timer()
        link = self.link
        if link is None or link.closed:
            return
        self._close_timer = IOLoop.current().call_later(CLOSE_FLUSH_TIMEOUT, link.close)
        link.after_flush(link.close)

    def _link_closed(self) -> None:
        self.closing = True
        self._frames = _NO_FRAMES
        self._cancel_close_timer()
        # On the next turn, as IOStream's close callback ran: whoever closed the
        # link on purpose (a full queue, a bad frame) closes the session first,
        # with its own reason.
        IOLoop.current().add_callback(self.client_gone)

    # -- writing and closing -------------------------------------------------------
    def queued_for_client(self) -> int:
        return self.link.unsent if self.link is not None else 0

    def send_frame(self, frame: bytes) -> None:
        """Write one frame, bounded by ``max_queue_bytes``; a gone client closes the session."""
        link = self.link
        if link is None or self.closing:
            return
        if link.closed:
            self.client_gone()
            return
        if self.room_for(len(frame)):
            link.write(frame)

    def close_stream(self) -> None:
        """Close the socket at once, without a closing handshake."""
        self.closing = True
        if self.link is not None:
            self.link.close()

    def close(self, code: Optional[int] = None, reason: Optional[str] = None) -> None:
        """Start the closing handshake (as ``WebSocketHandler.close``).

        Sends our close frame (``code`` and ``reason`` when given), then closes
        the socket once the client answers, or after CLOSE_FLUSH_TIMEOUT; at
        once (after the frame left) when the client closed first.
        """
        link = self.link
        if self.closing or link is None:
            return
        self.closing = True
        if link.closed:
            return
        if code is None and reason:
            code = 1000
        link.write(rfc6455.close_frame(code, reason or ""))
        if link.closed:
            return  # the write failed: the client is gone
        if self.client_closed:
            self.close_after_flush()
        else:
            self._close_timer = IOLoop.current().call_later(CLOSE_FLUSH_TIMEOUT, link.close)

    # -- sink -------------------------------------------------------------------------
    def write_payload(self, payload: str) -> None:
        if payload:
            self.send_frame(rfc6455.text_frame(payload.encode("utf-8")))

    def end(self) -> None:
        self.close()


# -- flashsocket (hixie-76) ----------------------------------------------------

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


class FlashSocketTransport(DetachedSocketTransport):
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
            self.close_stream()

    async def _run(self, key1: str, key2: str, origin: str, host: str, request: Any) -> None:
        self.stream = stream = self.detach()
        self.answered = True
        try:
            key3 = await gen.with_timeout(timedelta(seconds=HANDSHAKE_TIMEOUT),
                                          stream.read_bytes(8),
                                          quiet_exceptions=iostream.StreamClosedError)
        except (tornado.util.TimeoutError, iostream.StreamClosedError):
            log.info("flashsocket handshake from %s: no key3 bytes", request.remote_ip)
            self.close_stream()
            return
        try:
            session = self.session = self.create_session()
        except TransportError as exc:
            # Full meanwhile: the upgrade is refused over the raw stream.
            self.fail_reason = exc.detail
            log.info("flashsocket handshake from %s refused: %s", request.remote_ip, exc.detail)
            self.close_stream()
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
            self.close_stream()
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
        budget = _YIELD_EVERY  # as websocket's: reads return at once while data waits
        try:
            while True:
                budget -= 1
                if budget <= 0:
                    budget = _YIELD_EVERY
                    await asyncio.sleep(0)
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
                        self.close_stream()
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
        if payload:
            self.send_frame(_HIXIE_FRAME_START + payload.encode("utf-8") + _HIXIE_FRAME_END)

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
        close_when_flushed(stream, flushed)
