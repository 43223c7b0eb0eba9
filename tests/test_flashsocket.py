"""flashsocket: the hixie-76 handshake and 0x00…0xFF framing, over real sockets.

A raw TCP client plays the Flash web-socket-js polyfill against a real
Tornado server on 127.0.0.1 (docs/protocol.rst §4.2). Every wait is bounded.
"""
import re
from datetime import timedelta

import pytest
import tornado.web
from tornado import gen, iostream
from tornado.httpclient import AsyncHTTPClient
from tornado.tcpclient import TCPClient
from tornado.testing import AsyncHTTPTestCase, gen_test

import tornadio
from tornadio import persistent
from tornadio.persistent import hixie76_digest

# The hixie-76 draft's own example (spaces matter).
KEY1 = "18x 6]8vM;54 *(5:  {   U1]8  z [  8"
KEY2 = "1_ tx7X d  <  nw  334J702) 7]o}` 0"
KEY3 = b"Tm[K T2u"
DIGEST = b"fQJ,fN/4F4!~K~MH"

# A page of the same host on another port: what the default policy admits.
ORIGIN = "http://127.0.0.1:8080"
WAIT = 5.0  # upper bound of any single wait in these tests


# -- the pure digest -----------------------------------------------------------------
def test_digest_spec_vector():
    assert hixie76_digest(KEY1, KEY2, KEY3) == DIGEST


def test_digest_accepts_bytes_keys():
    assert hixie76_digest(KEY1.encode(), KEY2.encode(), bytearray(KEY3)) == DIGEST


@pytest.mark.parametrize("key1", [
    "12345",           # no spaces
    "1 2 3",           # 123 / 2 leaves a remainder
    "   ",             # no digits
    "8589934592 ",     # 8589934592 / 1 does not fit in 32 bits
])
def test_digest_rejects_bad_keys(key1):
    with pytest.raises(ValueError):
        hixie76_digest(key1, KEY2, KEY3)


def test_digest_needs_eight_key3_bytes():
    with pytest.raises(ValueError):
        hixie76_digest(KEY1, KEY2, b"short")


# -- a server ------------------------------------------------------------------------
class Log:
    """What the connections saw; one instance per test."""

    def __init__(self):
        self.opens = []
        self.closes = []
        self.messages = []


class Echo(tornadio.SocketConnection):
    log = None
    refuse = False

    def on_open(self, request, *args, **kwargs):
        if self.refuse:
            return False
        self.log.opens.append(self.session_id)
        return None

    def on_message(self, message):
        self.log.messages.append(message)
        if message == "please close":
            self.close()
        elif message == "flood":
            for _ in range(10):
                self.send("z" * 60000)
        else:
            self.send(message)

    def on_close(self):
        self.log.closes.append(self.session_id)


async def bounded(awaitable, seconds=WAIT):
    return await gen.with_timeout(timedelta(seconds=seconds), awaitable)


class FlashClient:
    """A raw TCP client speaking hixie-76 the way the Flash polyfill does."""

    def __init__(self, stream):
        self.stream = stream

    def request_bytes(self, port, origin=ORIGIN, key1=KEY1, key2=KEY2, path="/socket.io/flashsocket",
                      upgrade="WebSocket", connection="Upgrade"):
        lines = ["GET %s HTTP/1.1" % path,
                 "Upgrade: %s" % upgrade,
                 "Connection: %s" % connection,
                 "Host: 127.0.0.1:%d" % port]
        if origin is not None:
            lines.append("Origin: %s" % origin)
        lines += ["Sec-WebSocket-Key1: %s" % key1, "Sec-WebSocket-Key2: %s" % key2]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    async def send(self, data):
        await bounded(self.stream.write(data))

    async def read_head(self):
        """Status line and header lines of the response, as str."""
        head = await bounded(self.stream.read_until(b"\r\n\r\n", max_bytes=65536))
        return head.decode("latin-1").split("\r\n")[:-2]

    async def read_frame(self):
        """One text frame's str, or the marker 'CLOSE' for 0xFF 0x00."""
        kind = await bounded(self.stream.read_bytes(1))
        if kind == b"\xff":
            assert await bounded(self.stream.read_bytes(1)) == b"\x00"
            return "CLOSE"
        assert kind == b"\x00", kind
        data = await bounded(self.stream.read_until(b"\xff"))
        return data[:-1].decode("utf-8")

    async def send_frame(self, text):
        await self.send(b"\x00" + text.encode("utf-8") + b"\xff")

    async def wait_closed(self):
        """Read until the server closes; returns what came (frames are not parsed)."""
        received = b""
        try:
            while True:
                received += await bounded(self.stream.read_bytes(4096, partial=True))
        except iostream.StreamClosedError:
            return received

    def close(self):
        self.stream.close()


def frame(message):
    """~m~LEN~m~message, LEN in UTF-16 units."""
    return "~m~%d~m~%s" % (len(message.encode("utf-16-le")) // 2, message)


class FlashTestCase(AsyncHTTPTestCase):
    settings = {"heartbeat_interval": 5}

    def get_app(self):
        self.log = Log()
        connection = type("RecordedEcho", (Echo,), {"log": self.log})
        self.router = tornadio.get_router(connection, self.settings)
        return tornado.web.Application([self.router.route()])

    async def open_client(self, **request):
        client = FlashClient(await bounded(TCPClient().connect("127.0.0.1", self.get_http_port())))
        await client.send(client.request_bytes(self.get_http_port(), **request) + KEY3)
        return client

    async def connected_client(self):
        """Handshake done and the SID frame read; returns (client, sid)."""
        client = await self.open_client()
        head = await client.read_head()
        assert head[0] == "HTTP/1.1 101 WebSocket Protocol Handshake", head
        assert await bounded(client.stream.read_bytes(16)) == DIGEST
        first = await client.read_frame()
        match = re.match(r"~m~32~m~([0-9a-f]{32})\Z", first)
        assert match, first
        return client, match.group(1)

    async def wait_until(self, predicate, what, seconds=WAIT):
        deadline = self.io_loop.time() + seconds
        while not predicate():
            if self.io_loop.time() > deadline:
                raise AssertionError("timed out waiting for %s" % what)
            await gen.sleep(0.02)


class TestHandshake(FlashTestCase):
    @gen_test(timeout=10)
    async def test_exact_response_and_sid(self):
        client = await self.open_client()
        head = await client.read_head()
        port = self.get_http_port()
        assert head == [
            "HTTP/1.1 101 WebSocket Protocol Handshake",
            "Upgrade: WebSocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Origin: %s" % ORIGIN,
            "Sec-WebSocket-Location: ws://127.0.0.1:%d/socket.io/flashsocket" % port,
        ]
        assert await bounded(client.stream.read_bytes(16)) == DIGEST
        first = await client.read_frame()
        assert re.match(r"~m~32~m~[0-9a-f]{32}\Z", first), first
        sid = first[-32:]
        assert self.log.opens == [sid]
        assert self.router.sessions().get(sid).transport == "flashsocket"
        client.close()
        await self.wait_until(lambda: self.log.closes == [sid], "on_close after client close")

    @gen_test(timeout=10)
    async def test_header_values_case_insensitive_and_key3_in_pieces(self):
        client = FlashClient(await bounded(TCPClient().connect("127.0.0.1", self.get_http_port())))
        request = client.request_bytes(self.get_http_port(), upgrade="websocket",
                                       connection="keep-alive, upgrade")
        await client.send(request + KEY3[:3])
        await gen.sleep(0.05)
        await client.send(KEY3[3:])
        head = await client.read_head()
        assert head[0] == "HTTP/1.1 101 WebSocket Protocol Handshake"
        assert await bounded(client.stream.read_bytes(16)) == DIGEST
        client.close()

    @gen_test(timeout=10)
    async def test_echo(self):
        client, sid = await self.connected_client()
        await client.send_frame(frame("hello"))
        assert await client.read_frame() == frame("hello")
        # Non-ASCII: UTF-8 on the wire, LEN in UTF-16 units.
        await client.send_frame(frame("héllo 😀"))
        echoed = await client.read_frame()
        assert echoed == "~m~8~m~héllo 😀"
        # Several frames in one payload, JSON included.
        await client.send_frame(frame("a") + frame('~j~{"k":1}'))
        got = ""
        while len(got) < len(frame("a") + frame('~j~{"k":1}')):
            got += await client.read_frame()
        assert got == frame("a") + frame('~j~{"k":1}')
        assert self.log.messages == ["hello", "héllo 😀", "a", {"k": 1}]
        client.close()
        await self.wait_until(lambda: self.log.closes == [sid], "on_close")

    @gen_test(timeout=10)
    async def test_client_closing_frame(self):
        client, sid = await self.connected_client()
        await client.send(b"\xff\x00")
        rest = await client.wait_closed()
        assert rest == b"\xff\x00"
        await self.wait_until(lambda: self.log.closes == [sid], "on_close")
        assert self.router.sessions().get(sid) is None

    @gen_test(timeout=10)
    async def test_server_close_sends_closing_frame(self):
        client, sid = await self.connected_client()
        await client.send_frame(frame("please close"))
        assert await client.wait_closed() == b"\xff\x00"
        assert self.log.closes == [sid]

    @gen_test(timeout=10)
    async def test_post_and_options_refused(self):
        http = AsyncHTTPClient()
        for method, body in (("POST", b"data=x"), ("OPTIONS", None)):
            response = await http.fetch(self.get_url("/socket.io/flashsocket"), method=method,
                                        body=body, raise_error=False)
            assert response.code == 405, (method, response.code)
        assert self.log.opens == []


class TestRefusals(FlashTestCase):
    settings = {"heartbeat_interval": 5, "allowed_origins": ["http://good.example"]}

    async def status_of(self, **request):
        client = await self.open_client(**request)
        head = await client.read_head()
        client.close()
        return int(head[0].split()[1])

    @gen_test(timeout=10)
    async def test_key_without_spaces(self):
        assert await self.status_of(origin="http://good.example", key1="12345678") == 400
        assert self.log.opens == []
        assert len(self.router.sessions()) == 0

    @gen_test(timeout=10)
    async def test_key_with_remainder(self):
        assert await self.status_of(origin="http://good.example", key2="1 2 3") == 400

    @gen_test(timeout=10)
    async def test_not_an_upgrade(self):
        assert await self.status_of(origin="http://good.example", upgrade="h2c") == 400
        assert await self.status_of(origin="http://good.example", connection="keep-alive") == 400

    @gen_test(timeout=10)
    async def test_missing_origin(self):
        assert await self.status_of(origin=None) == 400

    @gen_test(timeout=10)
    async def test_disallowed_origin(self):
        assert await self.status_of(origin="http://evil.example") == 403
        assert self.log.opens == []

    @gen_test(timeout=10)
    async def test_allowed_origin_echoed(self):
        client = await self.open_client(origin="http://good.example")
        head = await client.read_head()
        assert head[0] == "HTTP/1.1 101 WebSocket Protocol Handshake"
        assert "Sec-WebSocket-Origin: http://good.example" in head
        client.close()


class TestBadInput(FlashTestCase):
    settings = {"heartbeat_interval": 5, "max_websocket_message": 64, "max_frames_per_payload": 3}

    async def check_closed_on(self, data):
        client, sid = await self.connected_client()
        with self.assertLogs("tornadio", "WARNING") as logs:
            await client.send(data)
            await client.wait_closed()
            await self.wait_until(lambda: self.log.closes == [sid], "on_close")
        assert len(logs.records) == 1
        assert sid not in logs.output[0]  # ids are credentials: never logged whole
        assert self.log.messages == []
        return logs.output[0]

    @gen_test(timeout=10)
    async def test_garbage_frame_byte(self):
        assert "unexpected frame type 0x42" in await self.check_closed_on(b"\x42hello")

    @gen_test(timeout=10)
    async def test_length_prefixed_frame(self):
        assert "0xff 0x05" in await self.check_closed_on(b"\xff\x05abcde")

    @gen_test(timeout=10)
    async def test_invalid_utf8(self):
        assert "UTF-8" in await self.check_closed_on(b"\x00~m~1~m~\xc3\xff")

    @gen_test(timeout=10)
    async def test_malformed_payload(self):
        await self.check_closed_on(b"\x00~m~9~m~abc\xff")

    @gen_test(timeout=10)
    async def test_frame_too_long(self):
        message = "x" * 100
        assert "longer than 64" in await self.check_closed_on(
            b"\x00" + frame(message).encode() + b"\xff")

    @gen_test(timeout=10)
    async def test_more_frames_than_max_frames_per_payload(self):
        assert "more than 3 frames" in await self.check_closed_on(
            b"\x00" + (frame("x") * 4).encode() + b"\xff")

    @gen_test(timeout=10)
    async def test_frame_at_the_limit_passes(self):
        client, sid = await self.connected_client()
        message = "y" * (64 - len(frame("y" * 56)) + 56)
        assert len(frame(message)) == 64
        await client.send_frame(frame(message))
        assert await client.read_frame() == frame(message)
        client.close()


class TestHeartbeats(FlashTestCase):
    settings = {"heartbeat_interval": 0.3}

    @gen_test(timeout=10)
    async def test_heartbeat_echoed_then_missed(self):
        client, sid = await self.connected_client()
        assert await client.read_frame() == "~m~4~m~~h~1"
        await client.send_frame("~m~4~m~~h~1")
        assert await client.read_frame() == "~m~4~m~~h~2"
        # Not answered: the next tick closes the socket and runs on_close once.
        assert await client.wait_closed() == b"\xff\x00"
        await self.wait_until(lambda: self.log.closes == [sid], "on_close")
        await gen.sleep(0.4)
        assert self.log.closes == [sid]
        assert self.log.messages == []


class TestSessionLifecycle(FlashTestCase):
    settings = {"heartbeat_interval": 5}

    @gen_test(timeout=10)
    async def test_refused_by_on_open(self):
        self.router.connection_class.refuse = True
        client = await self.open_client()
        head = await client.read_head()
        assert head[0] == "HTTP/1.1 101 WebSocket Protocol Handshake"
        rest = await client.wait_closed()
        assert rest == DIGEST
        assert self.log.closes == []
        assert len(self.router.sessions()) == 0

    @gen_test(timeout=10)
    async def test_silent_after_headers(self):
        saved = persistent.HANDSHAKE_TIMEOUT
        persistent.HANDSHAKE_TIMEOUT = 0.2
        try:
            client = FlashClient(await bounded(TCPClient().connect("127.0.0.1",
                                                                   self.get_http_port())))
            await client.send(client.request_bytes(self.get_http_port()))  # no key3
            assert await client.wait_closed() == b""
        finally:
            persistent.HANDSHAKE_TIMEOUT = saved
        assert self.log.opens == []
        assert len(self.router.sessions()) == 0

    @gen_test(timeout=10)
    async def test_session_close_all(self):
        clients = [await self.connected_client() for _ in range(3)]
        self.router.sessions().close_all()
        for client, _ in clients:
            assert await client.wait_closed() == b"\xff\x00"
        assert sorted(self.log.closes) == sorted(sid for _, sid in clients)


class TestSlowReader(FlashTestCase):
    settings = {"heartbeat_interval": 5, "max_queue_bytes": 100000}

    @gen_test(timeout=10)
    async def test_write_buffer_bound(self):
        client, sid = await self.connected_client()
        with self.assertLogs("tornadio", "WARNING") as logs:
            await client.send_frame(frame("flood"))  # 600 kB in one flush
            received = await client.wait_closed()
            await self.wait_until(lambda: self.log.closes == [sid], "on_close")
        assert "not reading" in logs.output[0]
        assert b"zzz" not in received
        assert self.router.sessions().get(sid) is None


class TestFlood(FlashTestCase):
    @gen_test(timeout=30)
    async def test_a_flood_of_frames_is_read_in_many_loop_turns(self):
        # read_bytes returns at once while data waits: without a budget, one
        # client's flood would hold the loop until the socket ran dry.
        client, _ = await self.connected_client()
        turns = [0]
        spinning = [True]

        def spin():
            turns[0] += 1
            if spinning[0]:
                self.io_loop.add_callback(spin)

        spin()
        await client.send(b"\x00\xff" * 50_000 + b"\x00" + frame("end").encode() + b"\xff")
        assert await client.read_frame() == frame("end")
        spinning[0] = False
        # One turn at least every 256 frames: 195 for these 50,001.
        assert turns[0] >= 195, "the flood was read in %d loop turns" % turns[0]
        client.close()
