"""Raw Socket.IO 0.6 clients for the scaling tests (asyncio, Tornado's clients).

``WSClient`` (websocket), ``FlashClient`` (flashsocket, hixie-76), ``PollClient``
(xhr-polling), ``JsonpClient`` (jsonp-polling) and ``StreamClient`` (htmlfile,
xhr-multipart) speak as the 0.6.2 browser client does on the wire (PROTOCOL.md
§2, §4): the first frame is the session id, heartbeats are echoed, every later
frame is a message put on ``messages``. Every wait is bounded.

``source_ip`` binds the client's end to a loopback address (127.x.y.z), so that
nginx's ``ip_hash`` sees different clients.
"""
import asyncio
import json
import re
import time
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient
from tornado.websocket import websocket_connect

from tornadio import proto

#: Default bound, in seconds, for one wait.
WAIT = 5.0

#: Put on ``messages`` when the server ends the session / the client notices the end.
CLOSED = object()


class ClientClosed(Exception):
    pass


class _Client:
    transport = None

    def __init__(self, source_ip=None):
        self.source_ip = source_ip
        self.sid = None
        self.messages = asyncio.Queue()
        self.received = []
        self.closed = False
        self.close_status = None

    def _on_payload(self, payload):
        for kind, data in proto.decode(payload):
            if kind == proto.HEARTBEAT:
                self._echo_heartbeat(data)
            elif self.sid is None:
                self.sid = data
            else:
                self.received.append(data)
                self.messages.put_nowait(data)

    def _echo_heartbeat(self, number):
        pass

    def _ended(self, status=None):
        if not self.closed:
            self.closed = True
            self.close_status = status
            self.messages.put_nowait(CLOSED)

    async def _end_reader(self):
        """After closing the socket: let ``_reader`` end (bounded, else cancel it)."""
        try:
            await asyncio.wait_for(self._reader, WAIT)
        except (asyncio.TimeoutError, asyncio.CancelledError, Exception):
            self._reader.cancel()
        self._ended("closed by client")

    async def recv(self, timeout=WAIT):
        """The next message; ClientClosed if the session ended, TimeoutError after ``timeout``."""
        message = await asyncio.wait_for(self.messages.get(), timeout)
        if message is CLOSED:
            self.messages.put_nowait(CLOSED)
            raise ClientClosed("%s session ended (%r)" % (self.transport, self.close_status))
        return message

    async def recv_match(self, predicate, timeout=WAIT):
        """The next message for which ``predicate`` is true; others are kept in order."""
        deadline = time.monotonic() + timeout
        skipped = []
        try:
            while True:
                message = await self.recv(max(0.0, deadline - time.monotonic()))
                if predicate(message):
                    return message
                skipped.append(message)
        finally:
            # Put back what was skipped, ahead of anything that came after.
            rest = []
            while not self.messages.empty():
                rest.append(self.messages.get_nowait())
            for message in skipped + rest:
                self.messages.put_nowait(message)

    async def drain(self, duration):
        """Everything that arrives within ``duration`` seconds (closing ends it early)."""
        got = []
        deadline = time.monotonic() + duration
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got
            try:
                got.append(await self.recv(remaining))
            except asyncio.TimeoutError:
                return got
            except ClientClosed:
                return got


class WSClient(_Client):
    """The websocket transport: one WebSocket message per payload."""

    transport = "websocket"

    @classmethod
    async def connect(cls, port, host="127.0.0.1", source_ip=None, resource="socket.io",
                      timeout=WAIT):
        self = cls(source_ip)
        request = HTTPRequest("ws://%s:%d/%s/websocket" % (host, port, resource),
                              connect_timeout=timeout, request_timeout=timeout,
                              network_interface=source_ip)
        self.ws = await asyncio.wait_for(websocket_connect(request), timeout)
        first = await asyncio.wait_for(self.ws.read_message(), timeout)
        if first is None:
            raise ClientClosed("websocket closed before the session id")
        self._on_payload(first)
        if not self.sid:
            raise ClientClosed("no session id in %r" % first[:80])
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read(self):
        while True:
            payload = await self.ws.read_message()
            if payload is None:
                self._ended(self.ws.close_code)
                return
            self._on_payload(payload)

    def _echo_heartbeat(self, number):
        self.ws.write_message(proto.frame("~h~" + number))

    async def send(self, value):
        await self.ws.write_message(proto.encode(value))

    async def close(self):
        self.ws.close()
        await self._end_reader()


class PollClient(_Client):
    """The xhr-polling transport: a long-poll GET always outstanding, POSTs to /send."""

    transport = "xhr-polling"

    @classmethod
    async def connect(cls, port, host="127.0.0.1", source_ip=None, resource="socket.io",
                      timeout=WAIT, poll_timeout=30.0):
        self = cls(source_ip)
        self.timeout = timeout
        self.poll_timeout = poll_timeout
        self.base = "http://%s:%d/%s/%s/" % (host, port, resource, cls.transport)
        self.http = AsyncHTTPClient(force_instance=True, max_clients=4)
        self.requests = 0
        response = await self._fetch(self._first_url(), timeout=timeout)
        if response.code != 200:
            self.http.close()
            raise ClientClosed("first poll answered %d" % response.code)
        self._on_payload(self._unwrap(response.body.decode("utf-8")))
        if not self.sid:
            self.http.close()
            raise ClientClosed("no session id in the first poll")
        self._poller = asyncio.ensure_future(self._poll())
        return self

    async def _fetch(self, url, method="GET", body=None, timeout=None):
        request = HTTPRequest(url, method=method, body=body,
                              connect_timeout=self.timeout,
                              request_timeout=timeout or self.poll_timeout,
                              network_interface=self.source_ip,
                              headers={"Content-Type": "application/x-www-form-urlencoded; "
                                                       "charset=UTF-8"} if body else None)
        self.requests += 1
        return await self.http.fetch(request, raise_error=False)

    def _first_url(self):
        # The real client's first GET: empty session id, hence the double slash.
        return self.base + "/" + _timestamp()

    def _poll_url(self):
        return self.base + self.sid + "/" + _timestamp()

    def _unwrap(self, body):
        """The payload in the body of a GET's answer."""
        return body

    async def _poll(self):
        while not self.closed:
            response = await self._fetch(self._poll_url())
            if response.code != 200:
                self._ended(response.code)
                return
            self._on_payload(self._unwrap(response.body.decode("utf-8")))

    async def send(self, value):
        body = "data=" + quote(proto.encode(value), safe="~!*()'")
        response = await self._fetch(self.base + self.sid + "/send", "POST", body,
                                     timeout=self.timeout)
        if response.code != 200:
            raise ClientClosed("POST answered %d: %r" % (response.code, response.body[:80]))
        return response

    async def close(self):
        """Stop polling (the server expires the session after ``session_expiry``)."""
        self._ended("closed by client")
        self._poller.cancel()
        try:
            await self._poller
        except (asyncio.CancelledError, Exception):
            pass
        self.http.close()


class JsonpClient(PollClient):
    """jsonp-polling: GETs carry an index and answer ``io.JSONP[I]._("payload");``."""

    transport = "jsonp-polling"

    def __init__(self, source_ip=None):
        super().__init__(source_ip)
        self.index = 0

    def _first_url(self):
        return super()._first_url() + "/0"

    def _poll_url(self):
        self.index += 1
        return "%s%s/%s/%d" % (self.base, self.sid, _timestamp(), self.index)

    def _unwrap(self, body):
        return _unwrap_jsonp(body)

    async def send(self, value):
        body = "data=" + quote(proto.encode(value), safe="~!*()'")
        url = "%s%s/%s/%d" % (self.base, self.sid, _timestamp(), self.index)
        response = await self._fetch(url, "POST", body, timeout=self.timeout)
        if response.code != 200:
            raise ClientClosed("POST answered %d" % response.code)
        return response


def _unwrap_jsonp(body):
    match = re.fullmatch(r'io\.JSONP\[\d+\]\._\((".*")\);', body, re.S)
    if match is None:
        raise ClientClosed("not a JSONP answer: %r" % body[:80])
    return json.loads(match.group(1))


class StreamClient(_Client):
    """htmlfile or xhr-multipart: one streamed GET, heartbeats echoed by POST."""

    @classmethod
    async def connect(cls, port, kind, host="127.0.0.1", source_ip=None, resource="socket.io",
                      timeout=WAIT):
        self = cls(source_ip)
        self.transport = kind
        self.timeout = timeout
        self.base = "http://%s:%d/%s/%s/" % (host, port, resource, kind)
        self.http = AsyncHTTPClient(force_instance=True, max_clients=4)
        self._buffer = ""
        self.boundary = None
        self._got_sid = asyncio.get_running_loop().create_future()
        request = HTTPRequest(self.base, connect_timeout=timeout, request_timeout=3600,
                              network_interface=source_ip, streaming_callback=self._chunk)
        self._stream = asyncio.ensure_future(self.http.fetch(request, raise_error=False))
        self._stream.add_done_callback(lambda _: self._ended("stream ended"))
        await asyncio.wait_for(asyncio.shield(self._got_sid), timeout)
        return self

    def _chunk(self, data):
        self._buffer += data.decode("utf-8")
        if self.transport == "htmlfile":
            pattern = re.compile(r'<script>parent\.s\._\((".*?"), document\);</script>', re.S)
            unwrap = json.loads
        else:
            # The boundary is random per response: read it from the first line.
            if self.boundary is None:
                first, newline, rest = self._buffer.partition("\n")
                if not newline:
                    return
                self.boundary, self._buffer = first[2:], rest
            pattern = re.compile(r"Content-Type: text/plain\n\n(.*?)\n--%s\n"
                                 % re.escape(self.boundary), re.S)
            unwrap = str
        while True:
            match = pattern.search(self._buffer)
            if match is None:
                return
            self._buffer = self._buffer[match.end():]
            self._on_payload(unwrap(match.group(1)))
            if self.sid and not self._got_sid.done():
                self._got_sid.set_result(None)

    def _echo_heartbeat(self, number):
        asyncio.ensure_future(self.send_raw(proto.frame("~h~" + number)))

    async def send_raw(self, payload):
        body = "data=" + quote(payload, safe="~!*()'")
        request = HTTPRequest(self.base + self.sid + "/send", method="POST", body=body,
                              connect_timeout=self.timeout, request_timeout=self.timeout,
                              network_interface=self.source_ip)
        return await self.http.fetch(request, raise_error=False)

    async def send(self, value):
        response = await self.send_raw(proto.encode(value))
        if response.code != 200:
            raise ClientClosed("POST answered %d" % response.code)

    async def close(self):
        self._ended("closed by client")
        self._stream.cancel()
        self.http.close()


class FlashClient(_Client):
    """flashsocket as the web-socket-js SWF speaks it: hixie-76, 0x00 text 0xFF frames."""

    transport = "flashsocket"
    # The hixie-76 draft's example keys (PROTOCOL.md §4.2).
    KEY1 = "18x 6]8vM;54 *(5:  {   U1]8  z [  8"
    KEY2 = "1_ tx7X d  <  nw  334J702) 7]o}` 0"
    KEY3 = b"Tm[K T2u"
    DIGEST = b"fQJ,fN/4F4!~K~MH"

    @classmethod
    async def connect(cls, port, host="127.0.0.1", source_ip=None, resource="socket.io",
                      timeout=WAIT):
        self = cls(source_ip)
        self.stream = await asyncio.wait_for(
            TCPClient().connect(host, port, source_ip=source_ip), timeout)
        origin = "http://%s:%d" % (host, port)
        request = ("GET /%s/flashsocket HTTP/1.1\r\nUpgrade: WebSocket\r\n"
                   "Connection: Upgrade\r\nHost: %s:%d\r\nOrigin: %s\r\n"
                   "Sec-WebSocket-Key1: %s\r\nSec-WebSocket-Key2: %s\r\n\r\n"
                   % (resource, host, port, origin, self.KEY1, self.KEY2))
        await self.stream.write(request.encode("latin-1") + self.KEY3)
        head = await asyncio.wait_for(self.stream.read_until(b"\r\n\r\n", 4096), timeout)
        if not head.startswith(b"HTTP/1.1 101 "):
            raise ClientClosed("flashsocket handshake refused: %r" % head[:80])
        digest = await asyncio.wait_for(self.stream.read_bytes(16), timeout)
        if digest != self.DIGEST:
            raise ClientClosed("bad hixie-76 digest %r" % digest)
        self._on_payload(await asyncio.wait_for(self._read_frame(), timeout))
        self._reader = asyncio.ensure_future(self._read())
        return self

    async def _read_frame(self):
        start = await self.stream.read_bytes(1)
        if start != b"\x00":
            raise ClientClosed("flashsocket closing or bad frame start %r" % start)
        return (await self.stream.read_until(b"\xff"))[:-1].decode("utf-8")

    async def _read(self):
        try:
            while True:
                self._on_payload(await self._read_frame())
        except (StreamClosedError, ClientClosed):
            self._ended("flashsocket closed")

    def _echo_heartbeat(self, number):
        self._write(proto.frame("~h~" + number))

    def _write(self, payload):
        if not self.stream.closed():
            self.stream.write(b"\x00" + payload.encode("utf-8") + b"\xff")

    async def send(self, value):
        self._write(proto.encode(value))

    async def close(self):
        self.stream.close()
        await self._end_reader()


def _timestamp():
    return str(int(time.time() * 1000))


async def connect(kind, port, **kwargs):
    """A connected client of ``kind`` ('websocket' or 'xhr-polling')."""
    if kind in ("htmlfile", "xhr-multipart"):
        return await StreamClient.connect(port, kind, **kwargs)
    cls = {"websocket": WSClient, "flashsocket": FlashClient, "xhr-polling": PollClient,
           "jsonp-polling": JsonpClient}[kind]
    return await cls.connect(port, **kwargs)


async def close_all(clients):
    for client in clients:
        try:
            await client.close()
        except Exception:
            pass
