"""Test a ``SocketConnection`` without a browser: a Socket.IO 0.6 client and a loopback server.

The client speaks what the socket.io-client 0.6 browser script speaks, over
``websocket``, ``xhr-polling`` or ``jsonp-polling``: the same URLs, the same
form-encoded POSTs, heartbeats echoed by itself. So a test written with it
exercises the same server code paths as a browser does::

    import tornado.web
    from tornadio import get_router, testing

    async def test_echo():
        app = tornado.web.Application([get_router(EchoConnection).route()])
        async with testing.serve(app) as base_url:
            async with testing.connect(base_url, transport="xhr-polling") as client:
                client.send({"hello": "world"})
                assert await client.receive() == {"hello": "world"}

Messages map as the server's ``send`` maps them: a ``str`` travels as is, a
list becomes one message per item, anything else is JSON (``~j~``).
:meth:`Client.receive` returns a str or the decoded JSON value.

Every wait is bounded: connecting, receiving, sending and closing take a
``timeout`` (default :data:`DEFAULT_TIMEOUT` seconds) and raise instead of
hanging.

The same client is a command line tool for poking a deployed server::

    python -m tornadio.testing http://localhost:8001 --transport xhr-polling

Each line read from stdin is sent as a message; every message received is
printed on its own line (JSON values as JSON).

The 2011 TornadIO had no client and no test helpers.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import re
import socket
import ssl
import sys
import threading
import time
from collections import deque
from typing import (Any, AsyncIterator, Callable, Deque, Dict, Generator, List, Mapping, Optional, Set,
                    Tuple, Union)
from urllib.parse import quote, quote_plus, urlsplit

import tornado.testing
import tornado.web
import tornado.websocket
from tornado import httputil, netutil
from tornado.http1connection import HTTP1Connection, HTTP1ConnectionParameters
from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.httpserver import HTTPServer
from tornado.iostream import IOStream, StreamClosedError
from tornado.tcpclient import TCPClient

from tornadio import proto
from tornadio.router import Router
from tornadio.server import socket_routers

__all__ = [
    "TRANSPORTS", "DEFAULT_TIMEOUT", "ClientError", "ConnectionRefused", "ConnectionClosed",
    "SendRefused", "ReceiveTimeout", "Balancer", "Client", "Connecting", "connect", "serve",
    "SocketIOTestCase", "main",
]

#: Transports the client speaks (those a current browser can run).
TRANSPORTS = ("websocket", "xhr-polling", "jsonp-polling")
#: Seconds any single wait may take unless a ``timeout`` says otherwise.
DEFAULT_TIMEOUT = 10.0
#: How long a polling GET may be held by the server before the client gives
#: up on it; above the server's default ``xhr_polling_timeout`` (20 s).
DEFAULT_POLL_TIMEOUT = 45.0
#: Largest payload accepted from the server, in bytes.
DEFAULT_MAX_PAYLOAD = 64 << 20

_JSONP_BODY = re.compile(r'io\.JSONP\[([0-9]+)\]\._\((".*")\);\s*\Z', re.S)
_LINE_BREAKS = re.compile(r"\r\n|\r|\n")

Message = Any  # a str, or any JSON value (dict, list, number, bool, None)
#: The ``balancer`` option of :func:`connect`: given the method and path of an
#: HTTP request the client is about to make, the ``(host, port)`` to send it to.
Balancer = Callable[[str, str], Tuple[str, int]]


# -- errors ---------------------------------------------------------------------
class ClientError(Exception):
    """Base of the client's errors; ``reason`` is one short line."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ConnectionRefused(ClientError):
    """The server did not open a session: the handshake was refused or failed.

    ``status`` is the HTTP status (e.g. 403 from an ``on_open`` that refused,
    503 over ``max_sessions``), the WebSocket close code, or None when no
    answer came at all (connection refused, timeout).
    """

    def __init__(self, status: Optional[int], reason: str) -> None:
        super().__init__("%s%s" % ("" if status is None else "%s: " % status, reason))
        self.status = status
        self.reason = reason


class ConnectionClosed(ClientError):
    """The session is over: the server closed it, the network failed, or :meth:`Client.close` ran.

    ``code`` is the HTTP status of the poll or POST that found the session
    gone (401), the WebSocket close code, or None. Socket.IO 0.6 has no close
    message, so a server-side ``close()`` looks to the client like this.
    """

    def __init__(self, code: Optional[int], reason: str) -> None:
        super().__init__("%s%s" % ("" if code is None else "%s: " % code, reason))
        self.code = code
        self.reason = reason

    def copy(self) -> "ConnectionClosed":
        return ConnectionClosed(self.code, self.reason)


class SendRefused(ClientError):
    """A polling POST was not answered 200: ``status`` (e.g. 400 for a malformed payload, 401
    for a session that is gone), or None when no answer came. A 400 leaves the session open.
    """

    def __init__(self, status: Optional[int], reason: str) -> None:
        super().__init__("%s%s" % ("" if status is None else "%s: " % status, reason))
        self.status = status
        self.reason = reason


class ReceiveTimeout(ClientError, asyncio.TimeoutError):
    """No message arrived within the timeout; the connection is still open."""


def _wake(waiter: "asyncio.Future[None]") -> None:
    if not waiter.done():
        waiter.set_result(None)


def _retrieve(future: "asyncio.Future[Any]") -> None:
    # A send() nobody awaits must not log "exception was never retrieved":
    # the same failure reaches the test through receive() anyway.
    if not future.cancelled():
        future.exception()


class _Body(httputil.HTTPMessageDelegate):
    """Collects one HTTP response (status and body, bounded)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.code: Optional[int] = None
        self.reason = ""
        self.chunks: List[bytes] = []
        self.size = 0

    def headers_received(self, start_line: Union[httputil.RequestStartLine, httputil.ResponseStartLine],
                         headers: httputil.HTTPHeaders) -> None:
        assert isinstance(start_line, httputil.ResponseStartLine)
        self.code = start_line.code
        self.reason = start_line.reason

    def data_received(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise httputil.HTTPInputError("response body over %d bytes" % self.limit)
        self.chunks.append(chunk)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class _NoAnswer(Exception):
    """An HTTP exchange ended without a complete response."""


# -- the client -----------------------------------------------------------------
class Client:
    """One Socket.IO 0.6 session seen from the client side.

    Made by :func:`connect`; use it as ``async with connect(...) as client``
    or ``client = await connect(...)`` followed by ``await client.close()``.

    The parameters are those of :func:`connect`, which documents them; a bad
    ``url``, ``transport``, timeout or ``source_ip`` raises ``ValueError`` here already
    (a ``balancer`` that is not callable: ``TypeError``).
    ``session_id`` is the id the server issued. ``heartbeats`` counts the
    heartbeats received (websocket only: polling transports get none).
    """

    def __init__(self, url: str, transport: str = "websocket", resource: str = "socket.io", *,
                 headers: Optional[Mapping[str, str]] = None, timeout: float = DEFAULT_TIMEOUT,
                 poll_timeout: float = DEFAULT_POLL_TIMEOUT, answer_heartbeats: bool = True,
                 jsonp_index: int = 0, ssl_options: Optional[ssl.SSLContext] = None,
                 max_payload: int = DEFAULT_MAX_PAYLOAD, source_ip: Optional[str] = None,
                 balancer: Optional[Balancer] = None) -> None:
        if transport not in TRANSPORTS:
            raise ValueError("transport must be one of %s, not %r" % (", ".join(TRANSPORTS), transport))
        if timeout <= 0 or poll_timeout <= 0:
            raise ValueError("timeouts must be > 0")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
            raise ValueError("url must be http(s)://host[:port][/prefix] or ws(s)://..., not %r" % url)
        if source_ip is not None:
            try:
                ipaddress.ip_address(source_ip)
            except ValueError:
                raise ValueError("source_ip must be an IP address, not %r" % (source_ip,)) from None
        if balancer is not None and not callable(balancer):
            raise TypeError("balancer must be a callable (method, path) -> (host, port), not %r"
                            % (balancer,))
        self.secure = parts.scheme in ("https", "wss")
        self.host = parts.hostname
        self.port = parts.port or (443 if self.secure else 80)
        self._netloc = parts.netloc.rpartition("@")[2]
        self.transport = transport
        self.resource = resource.strip("/")
        self.timeout = float(timeout)
        self.poll_timeout = float(poll_timeout)
        self.answer_heartbeats = answer_heartbeats
        self.jsonp_index = int(jsonp_index)
        self.headers: Dict[str, str] = dict(headers or {})
        self.max_payload = max_payload
        self.source_ip = source_ip
        self.balancer = balancer
        self._ssl = ssl_options if ssl_options is not None else (
            ssl.create_default_context() if self.secure else None)
        self._prefix = parts.path.rstrip("/") + "/" + self.resource + "/" + transport
        self.session_id: Optional[str] = None
        self.heartbeats = 0
        self._inbox: Deque[proto.Frame] = deque()
        self._closed: Optional[ConnectionClosed] = None
        self._closing = False
        self._opened = False
        # Futures of receive()/wait_*() calls, woken on every change.
        self._waiters: List["asyncio.Future[None]"] = []
        self._ws: Optional[tornado.websocket.WebSocketClientConnection] = None
        self._reader: Optional["asyncio.Future[None]"] = None  # WebSocket reader or poller
        # Polling: the TCP connections in use (closed to abort), the send queue.
        self._tcp: Optional[TCPClient] = None
        self._streams: Set[IOStream] = set()
        self._outbox: List[Tuple[str, "asyncio.Future[None]"]] = []
        self._sender: Optional["asyncio.Future[None]"] = None
        self._last_ts = 0

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("open" if self.session_id else "new")
        return "<tornadio.testing.Client %s %s:%s/%s %s>" % (
            self.transport, self.host, self.port, self.resource, state)

    # -- state ------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once the session is over, whichever side ended it."""
        return self._closed is not None

    @property
    def close_reason(self) -> Optional[ConnectionClosed]:
        """Why the session ended (the exception :meth:`receive` raises), or None."""
        return self._closed

    @property
    def websocket(self) -> Optional[tornado.websocket.WebSocketClientConnection]:
        """The underlying Tornado WebSocket connection (websocket transport), for low-level tests."""
        return self._ws

    def _notify(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            _wake(waiter)

    async def _wait(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        # A plain future and a timer rather than wait_for(), which can swallow a
        # cancellation: a cancelled receive() must never have taken a message.
        if not self._opened:
            raise RuntimeError("the client is not open yet (use `await connect(...)`)")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise ReceiveTimeout("no %s within %.3g s" % (what, timeout))
            waiter: "asyncio.Future[None]" = loop.create_future()
            self._waiters.append(waiter)
            timer = loop.call_later(remaining, _wake, waiter)
            try:
                await waiter
            finally:
                timer.cancel()
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def _set_closed(self, reason: ConnectionClosed) -> None:
        """The session is over: remember why, fail what waits, release every socket."""
        if self._closed is None:
            self._closed = reason
            for _, waiter in self._outbox:
                if not waiter.done():
                    waiter.set_exception(reason.copy())
            self._outbox = []
            self._shutdown_transport()
        self._notify()

    # -- opening ----------------------------------------------------------------
    async def open(self) -> "Client":
        """Open the session: handshake, session id, background reader.

        Raises :class:`ConnectionRefused` if the server refuses or does not
        answer within ``timeout``. Called by :func:`connect`.
        """
        if self._opened:
            raise RuntimeError("Client.open() called twice")
        self._opened = True
        try:
            if self.transport == "websocket":
                await self._open_websocket()
            else:
                await self._open_polling()
        except BaseException:
            self._closing = True
            self._set_closed(ConnectionClosed(None, "the handshake failed"))
            raise
        return self

    def _take_first(self, payload: str) -> None:
        try:
            frames = proto.decode(payload, max_length=self.max_payload)
        except proto.DecodeError as exc:
            raise ConnectionRefused(None, "malformed first payload: %s" % exc.reason) from None
        if not frames or frames[0].kind != proto.TEXT or not frames[0].data:
            raise ConnectionRefused(None, "the first payload carries no session id")
        self.session_id = frames[0].data
        self._take_frames(frames[1:])

    def _address_for(self, method: str, path: str) -> Tuple[str, int]:
        """Where one HTTP request goes: the ``balancer``'s choice, else the url's host and port.

        Raises :class:`_NoAnswer` if the balancer fails: that request cannot be made.
        """
        if self.balancer is None:
            return self.host, self.port
        try:
            host, port = self.balancer(method, path)
            return str(host), int(port)
        except Exception as exc:
            raise _NoAnswer("balancer(%r, %r) failed: %r" % (method, path, exc)) from None

    async def _open_websocket(self) -> None:
        scheme = "wss" if self.secure else "ws"
        headers = dict(self.headers)
        netloc = self._netloc
        if self.balancer is not None:
            try:
                host, port = self._address_for("GET", self._prefix)
            except _NoAnswer as exc:
                raise ConnectionRefused(None, str(exc)) from None
            netloc = "%s:%d" % ("[%s]" % host if ":" in host else host, port)
            headers.setdefault("Host", self._netloc)  # as a balancer passes it on
        request = HTTPRequest("%s://%s%s" % (scheme, netloc, self._prefix), headers=headers,
                              connect_timeout=self.timeout, request_timeout=self.timeout,
                              ssl_options=self._ssl, network_interface=self.source_ip)
        try:
            self._ws = await asyncio.wait_for(tornado.websocket.websocket_connect(
                request, max_message_size=self.max_payload), self.timeout)
            first = await asyncio.wait_for(self._ws.read_message(), self.timeout)
        except HTTPClientError as exc:
            raise ConnectionRefused(exc.code, "WebSocket upgrade refused (%s)" % exc.message) from None
        except asyncio.TimeoutError:
            raise ConnectionRefused(None, "no session id within %.3g s" % self.timeout) from None
        except (OSError, StreamClosedError, tornado.websocket.WebSocketError) as exc:
            raise ConnectionRefused(None, "WebSocket connection failed: %s"
                                    % (exc or type(exc).__name__)) from None
        if first is None:
            raise ConnectionRefused(self._ws.close_code, "closed before the session id (%s)"
                                    % (self._ws.close_reason or "no reason given"))
        if isinstance(first, bytes):
            raise ConnectionRefused(None, "binary WebSocket message instead of a session id")
        self._take_first(first)
        self._reader = self._background(self._read_websocket())

    def _background(self, work: Any) -> "asyncio.Future[None]":
        """A task whose unexpected failure ends the session (and is what receive() raises)."""
        task: "asyncio.Future[None]" = asyncio.ensure_future(work)

        def done(finished: "asyncio.Future[None]") -> None:
            if not finished.cancelled() and finished.exception() is not None:
                self._protocol_error("client failure: %r" % (finished.exception(),))
        task.add_done_callback(done)
        return task

    async def _read_websocket(self) -> None:
        ws = self._ws
        assert ws is not None
        while True:
            message = await ws.read_message()
            if message is None:
                reason = ws.close_reason or ("closed by the client" if self._closing
                                             else "closed by the server")
                self._set_closed(ConnectionClosed(ws.close_code, reason))
                return
            if isinstance(message, bytes):
                self._protocol_error("binary WebSocket message from the server")
                return
            if not self._take_payload(message):
                return

    async def _open_polling(self) -> None:
        self._tcp = TCPClient()
        try:
            code, body = await self._http("GET", self._get_path(""), timeout=self.timeout)
        except _NoAnswer as exc:
            raise ConnectionRefused(None, str(exc)) from None
        if code != 200:
            raise ConnectionRefused(code, body[:200].decode("utf-8", "replace") or "no session")
        payload = self._unwrap(body)
        if payload is None:
            raise ConnectionRefused(code, "not a %s answer: %r" % (self.transport, body[:80]))
        self._take_first(payload)
        self._reader = self._background(self._poll())

    # -- polling over HTTP/1.1 ------------------------------------------------------
    def _get_path(self, session_id: str) -> str:
        # A fresh timestamp per GET, as the browser's cache buster.
        self._last_ts = max(int(time.time() * 1000), self._last_ts + 1)
        path = "%s/%s/%d" % (self._prefix, session_id, self._last_ts)
        if self.transport == "jsonp-polling":
            path += "/%d" % self.jsonp_index
        return path

    def _post_request(self, payload: str) -> Tuple[str, str, str]:
        """(path, content type, body) of the POST that carries ``payload``."""
        if self.transport == "jsonp-polling":
            # What the browser's hidden form sends: spaces as "+", every line break CRLF.
            body = "data=" + quote_plus(_LINE_BREAKS.sub("\r\n", payload))
            # The page's form keeps the session's first timestamp (a client quirk).
            return ("%s/%s/%d/%d" % (self._prefix, self.session_id, self._last_ts, self.jsonp_index),
                    "application/x-www-form-urlencoded", body)
        # XMLHttpRequest with encodeURIComponent.
        return ("%s/%s/send" % (self._prefix, self.session_id),
                "application/x-www-form-urlencoded; charset=UTF-8",
                "data=" + quote(payload, safe="~!'()*"))

    def _unwrap(self, body: bytes) -> Optional[str]:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return None
        if self.transport != "jsonp-polling":
            return text
        match = _JSONP_BODY.match(text)
        if match is None or int(match.group(1)) != self.jsonp_index:
            return None
        try:
            payload = json.loads(match.group(2))
        except ValueError:
            return None
        return payload if isinstance(payload, str) else None

    async def _http(self, method: str, path: str, body: Optional[str] = None,
                    content_type: Optional[str] = None,
                    timeout: float = DEFAULT_TIMEOUT) -> Tuple[int, bytes]:
        """One request on its own connection (closed to abort it); (status, body)."""
        assert self._tcp is not None
        stream: Optional[IOStream] = None
        try:
            host, port = self._address_for(method, path)
            stream = await asyncio.wait_for(self._tcp.connect(
                host, port, ssl_options=self._ssl, max_buffer_size=self.max_payload + (1 << 16),
                source_ip=self.source_ip), timeout)
            self._streams.add(stream)
            if self._closed is not None:
                raise _NoAnswer("the client is closed")
            connection = HTTP1Connection(stream, True, HTTP1ConnectionParameters(
                no_keep_alive=True, max_body_size=self.max_payload, decompress=False))
            headers = httputil.HTTPHeaders(self.headers)
            headers["Host"] = self._netloc
            headers["Connection"] = "close"
            data = None
            if body is not None:
                data = body.encode("utf-8")
                headers["Content-Type"] = content_type or "application/x-www-form-urlencoded"
                headers["Content-Length"] = str(len(data))
            connection.write_headers(httputil.RequestStartLine(method, path, "HTTP/1.1"), headers, data)
            connection.finish()
            response = _Body(self.max_payload)
            await asyncio.wait_for(connection.read_response(response), timeout)
        except asyncio.TimeoutError:
            raise _NoAnswer("no answer to %s %s within %.3g s" % (method, path, timeout)) from None
        except (OSError, StreamClosedError, httputil.HTTPInputError, httputil.HTTPOutputError) as exc:
            raise _NoAnswer("%s %s failed: %s" % (method, path, exc or type(exc).__name__)) from None
        finally:
            if stream is not None:
                stream.close()
                self._streams.discard(stream)
        if response.code is None:
            raise _NoAnswer("the connection closed before an answer to %s %s" % (method, path))
        return response.code, response.body

    async def _poll(self) -> None:
        """One GET outstanding at a time, re-issued as soon as the last one was answered."""
        while self._closed is None:
            try:
                code, body = await self._http("GET", self._get_path(self.session_id or ""),
                                              timeout=self.poll_timeout)
            except _NoAnswer as exc:
                reason = "closed by the client" if self._closing else str(exc)
                self._set_closed(ConnectionClosed(None, reason))
                return
            if code != 200:
                # 401 is how the server says the session is gone.
                self._set_closed(ConnectionClosed(code, body[:200].decode("utf-8", "replace")
                                                  or "poll refused"))
                return
            payload = self._unwrap(body)
            if payload is None:
                self._protocol_error("not a %s answer: %r" % (self.transport, body[:80]))
                return
            if not self._take_payload(payload):
                return

    async def _send_queued(self) -> None:
        """One POST in flight; what piles up meanwhile goes in the next one, as the browser does."""
        while self._outbox and self._closed is None:
            batch, self._outbox = self._outbox, []
            path, content_type, body = self._post_request("".join(payload for payload, _ in batch))
            error: Optional[SendRefused] = None
            try:
                code, answer = await self._http("POST", path, body, content_type, timeout=self.timeout)
            except _NoAnswer as exc:
                error = SendRefused(None, str(exc))
            else:
                if code != 200:
                    error = SendRefused(code, answer[:200].decode("utf-8", "replace") or "POST refused")
            # A refused POST fails its messages only: a 400 leaves the session
            # open, and after a 401 the poller still collects the last words.
            for _, waiter in batch:
                if not waiter.done():
                    if error is None:
                        waiter.set_result(None)
                    else:
                        waiter.set_exception(SendRefused(error.status, error.reason))

    # -- incoming ---------------------------------------------------------------------
    def _take_payload(self, payload: str) -> bool:
        try:
            frames = proto.decode(payload, max_length=self.max_payload)
        except proto.DecodeError as exc:
            self._protocol_error("malformed payload from the server: %s" % exc.reason)
            return False
        self._take_frames(frames)
        return True

    def _take_frames(self, frames: List[proto.Frame]) -> None:
        for frame in frames:
            if frame.kind == proto.HEARTBEAT:
                self.heartbeats += 1
                if self.answer_heartbeats and self._closed is None:
                    self._send_payload(proto.heartbeat(frame.data))
            else:
                self._inbox.append(frame)
        self._notify()

    def _protocol_error(self, reason: str) -> None:
        self._set_closed(ConnectionClosed(None, reason))

    # -- the API ----------------------------------------------------------------------
    def send(self, message: Message) -> "asyncio.Future[None]":
        """Send ``message``: a str as is, a list item by item, anything else as JSON.

        Returns a future that is done when the server accepted the payload
        (WebSocket: written; polling: its POST answered 200, else it fails
        with :class:`SendRefused`). Awaiting it is optional: a session that
        ends is reported by :meth:`receive` too.
        Raises :class:`tornadio.proto.EncodeError` for values the protocol
        cannot carry (NaN, sets, strings starting with ``~h~``...) and
        :class:`ConnectionClosed` once the session is over.
        """
        return self._send_payload(proto.encode(message))

    def send_raw(self, payload: str) -> "asyncio.Future[None]":
        """Send ``payload`` exactly as given, framing included: for testing a server's bad-input handling.

        Returns and raises as :meth:`send` does (without the encoding checks).
        """
        return self._send_payload(payload)

    def _send_payload(self, payload: str) -> "asyncio.Future[None]":
        if self._closed is not None:
            raise self._closed.copy()
        if not self._opened:
            raise RuntimeError("the client is not open yet (use `await connect(...)`)")
        loop = asyncio.get_running_loop()
        if not payload:  # e.g. send([]): nothing goes on the wire, as on the server
            done: "asyncio.Future[None]" = loop.create_future()
            done.set_result(None)
            return done
        if self._ws is not None:
            try:
                written = self._ws.write_message(payload)
            except tornado.websocket.WebSocketClosedError:
                raise ConnectionClosed(self._ws.close_code, "the WebSocket is closed") from None
            future: "asyncio.Future[None]" = asyncio.ensure_future(written)
        else:
            future = loop.create_future()
            self._outbox.append((payload, future))
            if self._sender is None or self._sender.done():
                self._sender = self._background(self._send_queued())
        future.add_done_callback(_retrieve)
        return future

    async def receive_frame(self, timeout: Optional[float] = None) -> proto.Frame:
        """The next message as a :class:`tornadio.proto.Frame` (``kind`` tells text from JSON).

        Raises :class:`ReceiveTimeout` if none arrives within ``timeout``
        seconds (default: the client's ``timeout``), and
        :class:`ConnectionClosed` once the session is over and every message
        that came before the end has been received.
        """
        closed_or_ready: Callable[[], bool] = lambda: bool(self._inbox) or self._closed is not None
        await self._wait(closed_or_ready, self.timeout if timeout is None else timeout, "message")
        if self._inbox:
            return self._inbox.popleft()
        assert self._closed is not None
        raise self._closed.copy()

    async def receive(self, timeout: Optional[float] = None) -> Message:
        """The next message: a str, or the decoded JSON value. Raises as :meth:`receive_frame`."""
        return (await self.receive_frame(timeout)).data

    def __aiter__(self) -> AsyncIterator[Message]:
        """``async for message in client``: every message until the session ends.

        Each wait is bounded by the client's ``timeout`` (:class:`ReceiveTimeout`).
        """
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.receive()
            except ConnectionClosed:
                return

    async def wait_heartbeats(self, count: int, timeout: Optional[float] = None) -> int:
        """Wait until ``count`` heartbeats have arrived in all; returns the number so far.

        Each was answered at once unless ``answer_heartbeats`` is False.
        Raises :class:`ReceiveTimeout` after ``timeout`` seconds, and
        :class:`ConnectionClosed` if the session ends first.
        """
        await self._wait(lambda: self.heartbeats >= count or self._closed is not None,
                         self.timeout if timeout is None else timeout, "heartbeat")
        if self.heartbeats < count:
            assert self._closed is not None
            raise self._closed.copy()
        return self.heartbeats

    async def wait_closed(self, timeout: Optional[float] = None) -> ConnectionClosed:
        """Wait for the session to end, leaving unread messages to :meth:`receive`; returns why.

        Raises :class:`ReceiveTimeout` if it is still open after ``timeout`` seconds.
        """
        await self._wait(lambda: self._closed is not None,
                         self.timeout if timeout is None else timeout, "close")
        assert self._closed is not None
        return self._closed

    async def close(self, timeout: Optional[float] = None) -> None:
        """End the session from the client side, as the browser's ``disconnect()`` does.

        What was sent first is flushed (bounded by ``timeout``). WebSocket: a
        close frame, so the server's ``on_close`` runs at once. Polling: the
        held GET is aborted and no other follows; like the browser, the
        client sends no goodbye, so the server's ``on_close`` runs when the
        session expires (its ``session_expiry`` setting). Idempotent; never raises.
        """
        if not self._opened or self._closing:
            return
        self._closing = True
        timeout = self.timeout if timeout is None else timeout
        if self._closed is None:
            if self._ws is not None:
                self._ws.close()
            elif self._sender is not None and not self._sender.done():
                with contextlib.suppress(asyncio.TimeoutError, ClientError):
                    await asyncio.wait_for(asyncio.shield(self._sender), timeout)
        if self._ws is not None and self._reader is not None:
            # The reader ends when the server answers the close frame.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        self._set_closed(ConnectionClosed(None, "closed by the client"))
        tasks = [task for task in (self._reader, self._sender) if task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)

    def abort(self) -> None:
        """Drop the connection(s) without a WebSocket close frame, as a network failure would.

        The server then notices by itself (TCP close, missed polls).
        """
        self._closing = True
        self._set_closed(ConnectionClosed(None, "aborted by the client"))

    def _shutdown_transport(self) -> None:
        """Close every socket still open (after the WebSocket close handshake, if any)."""
        for stream in list(self._streams):
            stream.close()
        self._streams.clear()
        if self._ws is not None:
            ws_stream = getattr(self._ws.protocol, "stream", None)
            if ws_stream is not None and not ws_stream.closed():
                ws_stream.close()
            self._ws.close()  # no frame on a closed stream; releases Tornado's side
        if self._tcp is not None:
            self._tcp.close()


class Connecting:
    """What :func:`connect` returns: ``await`` it, or use it as ``async with``."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def __await__(self) -> Generator[Any, None, Client]:
        return self.client.open().__await__()

    async def __aenter__(self) -> Client:
        return await self.client.open()

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.client.close()


def connect(url: str, transport: str = "websocket", resource: str = "socket.io", *,
            headers: Optional[Mapping[str, str]] = None, timeout: float = DEFAULT_TIMEOUT,
            poll_timeout: float = DEFAULT_POLL_TIMEOUT, answer_heartbeats: bool = True,
            jsonp_index: int = 0, ssl_options: Optional[ssl.SSLContext] = None,
            max_payload: int = DEFAULT_MAX_PAYLOAD, source_ip: Optional[str] = None,
            balancer: Optional[Balancer] = None) -> Connecting:
    """Open a Socket.IO 0.6 session with the server at ``url``.

    ``url``: the server's base, ``http(s)://host:port`` (a path is a prefix
    before ``resource``; ``ws(s)://`` works too). ``transport``: one of
    :data:`TRANSPORTS`. ``resource``: the router's resource (the client
    option of the same name), e.g. ``"chat/123"``. ``headers``: sent with
    every request (``Origin``, ``Cookie``...). ``timeout``: bound of each
    handshake, receive, send and close, in seconds. ``poll_timeout``: bound
    of one held polling GET; keep it above the server's
    ``xhr_polling_timeout``. ``answer_heartbeats=False`` lets heartbeats go
    unanswered, to test the server's timeout. ``jsonp_index``: the ``I`` of
    jsonp-polling URLs. ``ssl_options``: an ``ssl.SSLContext`` for https.
    ``max_payload``: largest payload accepted from the server, in bytes.
    ``source_ip``: the local address every connection is made from, e.g.
    ``"127.0.0.2"``, so that several clients on one machine look like
    different hosts to a balancer that hashes the client address (nginx's
    ``ip_hash``). ``balancer``: stands in for a load balancer in front of
    several processes, for testing a deployment without one. It is called
    as ``balancer(method, path)`` before every HTTP request the client makes
    (websocket: the upgrade; polling: each GET and POST) and returns the
    ``(host, port)`` to send that request to, e.g. the next process in turn;
    the ``Host`` header stays that of ``url``, and with https the
    certificate is checked against the returned host. An exception it
    raises counts as that request getting no answer: :func:`connect` raises
    :class:`ConnectionRefused`, a send fails with :class:`SendRefused`, a
    poll ends the session (:class:`ConnectionClosed`).

    Returns a :class:`Connecting`: ``async with connect(...) as client`` (closed
    on exit) or ``client = await connect(...)``, either giving a :class:`Client`.
    Raises :class:`ConnectionRefused` when the server refuses or does not
    answer, ``ValueError`` for a bad ``url``, ``transport``, timeout or
    ``source_ip``, ``TypeError`` for a ``balancer`` that is not callable.
    """
    return Connecting(Client(url, transport, resource, headers=headers, timeout=timeout,
                             poll_timeout=poll_timeout, answer_heartbeats=answer_heartbeats,
                             jsonp_index=jsonp_index, ssl_options=ssl_options,
                             max_payload=max_payload, source_ip=source_ip, balancer=balancer))


# -- serving an application in a test ------------------------------------------------
def _application(app: Union[tornado.web.Application, Router]) -> tornado.web.Application:
    if isinstance(app, tornado.web.Application):
        return app
    if isinstance(app, Router):
        return tornado.web.Application([app.route()])
    raise TypeError("serve() needs a tornado.web.Application or a router from get_router(), not %r"
                    % (app,))


async def _close_sessions(application: tornado.web.Application,
                          timeout: float = DEFAULT_TIMEOUT) -> None:
    for router in socket_routers(application):
        container = router.sessions()
        container.close_all()
        await container.wait_tasks(timeout)  # coroutine on_close handlers
    await asyncio.sleep(0)  # let the closes reach their sockets


@contextlib.asynccontextmanager
async def serve(app: Union[tornado.web.Application, Router], address: str = "127.0.0.1",
                timeout: float = DEFAULT_TIMEOUT, **server_options: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free port of ``address`` while inside; yields the base URL.

    ``app``: a ``tornado.web.Application``, or a router class from
    :func:`tornadio.get_router` (served alone). ``server_options`` go to
    ``tornado.httpserver.HTTPServer`` (e.g. ``xheaders=True``). On exit the
    server stops listening, every session of its routers is closed (each
    ``on_close`` runs) and open connections are closed, bounded by
    ``timeout``. Needs no test framework::

        async with serve(app) as base_url:
            async with connect(base_url) as client: ...
    """
    application = _application(app)
    # A test opens hundreds of connections in one loop turn, before the server
    # accepts any: with Tornado's backlog of 128 the kernel drops the rest of
    # the SYNs, and their retries come 1, 3, 7, 15 and 31 s later.
    sockets = netutil.bind_sockets(0, address, backlog=socket.SOMAXCONN)
    port = sockets[0].getsockname()[1]
    server = HTTPServer(application, **server_options)
    server.add_sockets(sockets)
    host = "[%s]" % address if ":" in address else address
    try:
        yield "http://%s:%d" % (host, port)
    finally:
        server.stop()
        await _close_sessions(application, timeout)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(server.close_all_connections(), timeout)


class SocketIOTestCase(tornado.testing.AsyncHTTPTestCase):
    """``AsyncHTTPTestCase`` with a Socket.IO client: define ``get_app()``, write ``@gen_test`` tests.

    ::

        class ChatTest(SocketIOTestCase):
            def get_app(self):
                return tornado.web.Application([ChatRouter.route()])

            @tornado.testing.gen_test
            async def test_hello(self):
                async with self.connect(transport="xhr-polling") as client:
                    ...

    The sessions of the app's routers are closed in ``tearDown`` (``on_close`` runs).
    """

    def connect(self, transport: str = "websocket", resource: str = "socket.io",
                **options: Any) -> Connecting:
        """:func:`connect` to this test's server; same parameters, same result."""
        return connect(self.get_url(""), transport, resource, **options)

    def tearDown(self) -> None:
        self.io_loop.run_sync(lambda: _close_sessions(self._app), timeout=DEFAULT_TIMEOUT)
        super().tearDown()


# -- command line ----------------------------------------------------------------------
def _print_message(frame: proto.Frame, out: Any) -> None:
    if frame.kind == proto.JSON:
        out.write(json.dumps(frame.data, ensure_ascii=False) + "\n")
    else:
        out.write(frame.data + "\n")
    out.flush()


def _stdin_lines(loop: asyncio.AbstractEventLoop, queue: "asyncio.Queue[Optional[str]]") -> None:
    # A daemon thread: a blocking read must never keep the process alive.
    def read() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line.rstrip("\r\n"))
        loop.call_soon_threadsafe(queue.put_nowait, None)
    threading.Thread(target=read, name="stdin", daemon=True).start()


async def _run_cli(args: argparse.Namespace) -> int:
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {name.strip(): value.strip() for name, value in headers.items()}
    try:
        client = await connect(args.url, args.transport, args.resource, headers=headers,
                               timeout=args.timeout, source_ip=args.source_ip)
    except ConnectionRefused as exc:
        print("tornadio.testing: refused: %s" % exc, file=sys.stderr)
        return 2
    print("tornadio.testing: connected over %s, session %s…"
          % (client.transport, (client.session_id or "")[:6]), file=sys.stderr, flush=True)
    lines: "asyncio.Queue[Optional[str]]" = asyncio.Queue()
    _stdin_lines(asyncio.get_running_loop(), lines)
    eof = False
    exit_code = 0
    incoming: Optional["asyncio.Future[proto.Frame]"] = None
    next_line: Optional["asyncio.Future[Optional[str]]"] = None
    try:
        while True:
            # One receive and one stdin read outstanding at a time; neither is
            # cancelled while the loop runs, so no message is taken and dropped.
            if incoming is None:
                incoming = asyncio.ensure_future(client.receive_frame(timeout=args.linger))
            if next_line is None and not eof:
                next_line = asyncio.ensure_future(lines.get())
            waiting: Set["asyncio.Future[Any]"] = {incoming}
            if next_line is not None:
                waiting.add(next_line)
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            if next_line is not None and next_line in done:
                line, next_line = next_line.result(), None
                if line is None:
                    eof = True
                elif line or not args.skip_empty:
                    try:
                        client.send(json.loads(line) if args.json else line)
                    except (ValueError, proto.EncodeError) as exc:
                        print("tornadio.testing: not sent: %s" % exc, file=sys.stderr, flush=True)
            if incoming in done:
                finished, incoming = incoming, None
                try:
                    _print_message(finished.result(), sys.stdout)
                except ReceiveTimeout:
                    if eof:  # stdin is done and the server has gone quiet
                        break
                except ConnectionClosed as exc:
                    print("tornadio.testing: %s" % exc, file=sys.stderr, flush=True)
                    exit_code = 1
                    break
    finally:
        for task in (incoming, next_line):
            if task is not None:
                task.cancel()
        await client.close()
    return exit_code


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m tornadio.testing URL``: send stdin lines, print every message received.

    Returns the exit status: 0 after stdin ended (and ``--linger`` seconds
    passed with no message), 1 when the server ended the session, 2 when it
    refused it.
    """
    parser = argparse.ArgumentParser(
        prog="python -m tornadio.testing",
        description="Talk to a Socket.IO 0.6 server: each stdin line is sent as a message, "
                    "every message received is printed (JSON values as JSON).")
    parser.add_argument("url", help="the server, e.g. http://localhost:8001")
    parser.add_argument("--transport", "-t", choices=TRANSPORTS, default="websocket")
    parser.add_argument("--resource", "-r", default="socket.io", help="default: socket.io")
    parser.add_argument("--header", "-H", action="append", default=[], metavar="'NAME: VALUE'",
                        help="a request header, e.g. 'Origin: http://app.example' (repeatable)")
    parser.add_argument("--json", action="store_true",
                        help="parse each line as JSON and send the value (default: send the text)")
    parser.add_argument("--skip-empty", action="store_true", help="do not send empty lines")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds for the handshake and each send (default %(default)s)")
    parser.add_argument("--source-ip", metavar="ADDRESS",
                        help="the local address to connect from, e.g. 127.0.0.2 "
                             "(for max_sessions_per_address or xheaders tests)")
    parser.add_argument("--linger", type=float, default=2.0,
                        help="after stdin ends, exit once no message came for this long "
                             "(default %(default)s s)")
    args = parser.parse_args(argv)
    if any(":" not in h for h in args.header):
        parser.error("--header takes 'NAME: VALUE'")
    try:
        return asyncio.run(_run_cli(args))
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:  # what connect() refuses at once: a bad URL or address
        parser.error(str(exc))


if __name__ == "__main__":
    sys.exit(main())
