"""Clients for the scaling tests: ``tornadio.testing``, plus the transports it does not speak.

websocket, xhr-polling and jsonp-polling go through the public client:
:func:`connect` returns a ``tornadio.testing.Client`` for them. Its
``source_ip`` option makes nginx's ``ip_hash`` see different clients, its
``balancer`` option sends each request to the process a test picks.

``tornadio.testing`` speaks only what a current browser can run, so three
transports stay hand-made here: ``StreamClient`` for htmlfile (IE's hidden
iframe, docs/protocol.rst §4.6) and xhr-multipart (Firefox's multipart XHR,
§4.5), one streamed GET with heartbeats echoed by POST; ``FlashClient`` for
flashsocket, hixie-76 framing as the web-socket-js SWF speaks it (§4.2). They
offer the part of ``Client`` the tests use (``session_id``, ``transport``,
``receive()``, ``send()``, ``close()``, ``closed``, ``close_reason``, the same
``source_ip`` and ``balancer``) and raise ``tornadio.testing``'s errors, so a
test treats all six transports alike. Every wait is bounded.
"""
import asyncio
import json
import re
import time
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

from tornadio import proto, testing

#: Default bound, in seconds, for one wait.
WAIT = 5.0

#: Put on the inbox of a hand-made client once its session is over.
_CLOSED = object()


async def connect(kind, port, host="127.0.0.1", resource="socket.io", timeout=WAIT,
                  source_ip=None, balancer=None, **options):
    """A client of transport ``kind`` connected to ``host:port``, past the session id.

    ``source_ip`` and ``balancer`` are those of ``tornadio.testing.connect``;
    ``options`` (e.g. ``poll_timeout``) go to it too, for its transports.
    Raises ``tornadio.testing.ConnectionRefused`` when no session opens.
    """
    if kind in testing.TRANSPORTS:
        return await testing.connect("http://%s:%d" % (host, port), kind, resource, timeout=timeout,
                                     source_ip=source_ip, balancer=balancer, **options)
    cls = {"flashsocket": FlashClient, "htmlfile": StreamClient, "xhr-multipart": StreamClient}[kind]
    client = cls(kind, host, port, resource, timeout, source_ip, balancer)
    try:
        await asyncio.wait_for(client.open(), timeout)
    except asyncio.TimeoutError:
        await client.close()
        raise testing.ConnectionRefused(None, "%s: no session id within %s s" % (kind, timeout))
    except testing.ConnectionRefused:
        await client.close()
        raise
    return client


async def drain(client, duration):
    """Every message that arrives within ``duration`` seconds (the session ending ends it early)."""
    got = []
    deadline = time.monotonic() + duration
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return got
        try:
            got.append(await client.receive(timeout=remaining))
        except (testing.ReceiveTimeout, testing.ConnectionClosed):
            return got


async def close_all(clients):
    for client in clients:
        try:
            await client.close()
        except Exception:
            pass


class _HandMade:
    """What both hand-made clients share: the inbox, the session id, the ending."""

    def __init__(self, transport, host, port, resource, timeout, source_ip, balancer):
        self.transport = transport
        self.host, self.port = host, port
        self.resource = resource
        self.timeout = timeout
        self.source_ip = source_ip
        self.balancer = balancer
        self.session_id = None
        self.close_reason = None
        self._inbox = asyncio.Queue()

    @property
    def closed(self):
        return self.close_reason is not None

    def _address(self, method, path):
        """(host, port) for one request: the balancer's choice, else where the client connected."""
        if self.balancer is None:
            return self.host, self.port
        return self.balancer(method, path)

    def _take(self, payload):
        for kind, data in proto.decode(payload):
            if kind == proto.HEARTBEAT:
                self._echo(proto.heartbeat(data))
            elif self.session_id is None:
                self.session_id = data
            else:
                self._inbox.put_nowait(data)

    def _ended(self, reason):
        if self.close_reason is None:
            self.close_reason = testing.ConnectionClosed(None, "%s: %s" % (self.transport, reason))
            self._inbox.put_nowait(_CLOSED)

    async def receive(self, timeout=None):
        """The next message; ``testing.ReceiveTimeout`` after ``timeout``,
        ``testing.ConnectionClosed`` once the session is over."""
        timeout = self.timeout if timeout is None else timeout
        try:
            message = await asyncio.wait_for(self._inbox.get(), timeout)
        except asyncio.TimeoutError:
            raise testing.ReceiveTimeout("no message within %.3g s" % timeout) from None
        if message is _CLOSED:
            self._inbox.put_nowait(_CLOSED)
            raise self.close_reason.copy()
        return message


class StreamClient(_HandMade):
    """htmlfile or xhr-multipart: the server streams every payload down one GET; messages and
    heartbeat echoes go up by POST (each where ``balancer`` says, as the stream is)."""

    async def open(self):
        self._path = "/%s/%s/" % (self.resource, self.transport)
        self._http = AsyncHTTPClient(force_instance=True, max_clients=4)
        self._buffer = ""
        self._boundary = None
        self._got_id = asyncio.get_running_loop().create_future()
        request = self._request("GET", self._path, request_timeout=3600,
                                streaming_callback=self._chunk)
        self._stream = asyncio.ensure_future(self._http.fetch(request, raise_error=False))
        self._stream.add_done_callback(self._stream_ended)
        await asyncio.shield(self._got_id)

    def _request(self, method, path, **kwargs):
        host, port = self._address(method, path)
        return HTTPRequest("http://%s:%d%s" % (host, port, path), method=method,
                           headers={"Host": "%s:%d" % (self.host, self.port)},
                           connect_timeout=self.timeout, network_interface=self.source_ip,
                           **kwargs)

    def _stream_ended(self, stream):
        if not self._got_id.done():  # it ended before the session id
            status, reason = None, "cancelled"
            if not stream.cancelled():
                if stream.exception() is not None:
                    reason = repr(stream.exception())
                else:
                    status = stream.result().code
                    reason = "answered %d without a session id" % status
            self._got_id.set_exception(testing.ConnectionRefused(
                status, "%s stream: %s" % (self.transport, reason)))
        self._ended("the stream ended")

    def _chunk(self, data):
        self._buffer += data.decode("utf-8")
        if self.transport == "htmlfile":
            pattern = re.compile(r'<script>parent\.s\._\((".*?"), document\);</script>', re.S)
            unwrap = json.loads
        else:
            # The boundary is random per response: read it from the first line.
            if self._boundary is None:
                first, newline, rest = self._buffer.partition("\n")
                if not newline:
                    return
                self._boundary, self._buffer = first[2:], rest
            pattern = re.compile(r"Content-Type: text/plain\n\n(.*?)\n--%s\n"
                                 % re.escape(self._boundary), re.S)
            unwrap = str
        while True:
            match = pattern.search(self._buffer)
            if match is None:
                return
            self._buffer = self._buffer[match.end():]
            self._take(unwrap(match.group(1)))
            if self.session_id and not self._got_id.done():
                self._got_id.set_result(None)

    def _echo(self, payload):
        echo = asyncio.ensure_future(self._post(payload))
        echo.add_done_callback(lambda done: done.cancelled() or done.exception())

    async def _post(self, payload):
        body = "data=" + quote(payload, safe="~!*()'")
        request = self._request("POST", "%s%s/send" % (self._path, self.session_id), body=body,
                                request_timeout=self.timeout)
        return await self._http.fetch(request, raise_error=False)

    async def send(self, value):
        """POST ``value``; ``testing.SendRefused`` unless it is answered 200."""
        response = await self._post(proto.encode(value))
        if response.code != 200:
            raise testing.SendRefused(response.code, "POST answered %d" % response.code)

    async def close(self):
        """Drop the stream (the server notices its connection closing)."""
        self._ended("closed by the client")
        stream = getattr(self, "_stream", None)
        if stream is not None:
            stream.cancel()
        http = getattr(self, "_http", None)
        if http is not None:
            http.close()


class FlashClient(_HandMade):
    """flashsocket as the web-socket-js SWF speaks it: hixie-76, 0x00 text 0xFF frames."""

    # The hixie-76 draft's example keys (docs/protocol.rst §4.2).
    KEY1 = "18x 6]8vM;54 *(5:  {   U1]8  z [  8"
    KEY2 = "1_ tx7X d  <  nw  334J702) 7]o}` 0"
    KEY3 = b"Tm[K T2u"
    DIGEST = b"fQJ,fN/4F4!~K~MH"

    async def open(self):
        self._reader = None
        self.stream = None
        path = "/%s/flashsocket" % self.resource
        host, port = self._address("GET", path)
        try:
            self.stream = await TCPClient().connect(host, port, source_ip=self.source_ip)
        except (OSError, StreamClosedError) as exc:
            raise testing.ConnectionRefused(None, "flashsocket: %s" % exc) from None
        origin = "http://%s:%d" % (self.host, self.port)
        request = ("GET %s HTTP/1.1\r\nUpgrade: WebSocket\r\n"
                   "Connection: Upgrade\r\nHost: %s:%d\r\nOrigin: %s\r\n"
                   "Sec-WebSocket-Key1: %s\r\nSec-WebSocket-Key2: %s\r\n\r\n"
                   % (path, self.host, self.port, origin, self.KEY1, self.KEY2))
        try:
            await self.stream.write(request.encode("latin-1") + self.KEY3)
            head = await self.stream.read_until(b"\r\n\r\n", 4096)
            if not head.startswith(b"HTTP/1.1 101 "):
                raise ValueError("handshake refused: %r" % head[:80])
            digest = await self.stream.read_bytes(16)
            if digest != self.DIGEST:
                raise ValueError("bad hixie-76 digest %r" % digest)
            self._take(await self._read_frame())
        except (StreamClosedError, ValueError) as exc:
            raise testing.ConnectionRefused(None, "flashsocket: %s" % (exc or type(exc).__name__)) \
                from None
        self._reader = asyncio.ensure_future(self._read())

    async def _read_frame(self):
        start = await self.stream.read_bytes(1)
        if start != b"\x00":
            raise ValueError("closing or bad frame start %r" % start)
        return (await self.stream.read_until(b"\xff"))[:-1].decode("utf-8")

    async def _read(self):
        try:
            while True:
                self._take(await self._read_frame())
        except (StreamClosedError, ValueError) as exc:
            self._ended("the connection closed (%s)" % (exc or type(exc).__name__))

    def _echo(self, payload):
        self._write(payload)

    def _write(self, payload):
        if not self.stream.closed():
            self.stream.write(b"\x00" + payload.encode("utf-8") + b"\xff")

    async def send(self, value):
        if self.closed:
            raise self.close_reason.copy()
        self._write(proto.encode(value))

    async def close(self):
        """Close the TCP connection, then let the reader see it (bounded)."""
        if self.stream is not None:
            self.stream.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, self.timeout)
            except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
                self._reader.cancel()
        self._ended("closed by the client")
