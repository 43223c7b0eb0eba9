"""SocketServer and FlashPolicyServer over real sockets on 127.0.0.1.

Ports are 0 (a free high port picked by the kernel), never 843. Every wait
is bounded; nothing asserts on timing beyond "answered within the bound".
"""
import asyncio
import gc
import logging
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from datetime import timedelta

import pytest
import tornado.httpclient
import tornado.web
import tornado.websocket
from tornado import gen, iostream
from tornado.httpclient import AsyncHTTPClient
from tornado.ioloop import IOLoop
from tornado.tcpclient import TCPClient
from tornado.testing import AsyncTestCase, gen_test

import tornadio
from tornadio import flashserver
from tornadio.flashserver import FlashPolicyServer, policy_xml
from tornadio.persistent import WebSocketTransport
from tornadio.server import SocketServer, idle_timeout, socket_routers

from support.process import ScriptProcess

REQUEST = b"<policy-file-request/>\0"
FLASH_REQUEST = (b"GET /socket.io/flashsocket HTTP/1.1\r\nUpgrade: WebSocket\r\n"
                 b"Connection: Upgrade\r\nHost: 127.0.0.1:%d\r\nOrigin: http://127.0.0.1\r\n"
                 b"Sec-WebSocket-Key1: 18x 6]8vM;54 *(5:  {   U1]8  z [  8\r\n"
                 b"Sec-WebSocket-Key2: 1_ tx7X d  <  nw  334J702) 7]o}` 0\r\n\r\nTm[K T2u")
WAIT = 5.0


async def bounded(awaitable, seconds=WAIT):
    return await gen.with_timeout(timedelta(seconds=seconds), awaitable)


async def read_all(stream, seconds=WAIT):
    """Everything the server sends until it closes."""
    received = b""
    try:
        while True:
            received += await bounded(stream.read_bytes(65536, partial=True), seconds)
    except iostream.StreamClosedError:
        return received


async def ask_policy(port, request=REQUEST, seconds=WAIT):
    stream = await bounded(TCPClient().connect("127.0.0.1", port), seconds)
    try:
        if request:
            await bounded(stream.write(request), seconds)
        return await read_all(stream, seconds)
    finally:
        stream.close()


async def assert_refused(port):
    with pytest.raises(ConnectionRefusedError):
        await bounded(asyncio.open_connection("127.0.0.1", port))


class Hello(tornado.web.RequestHandler):
    def get(self):
        self.write("hello " + self.get_query_argument("who", "world"))


class Log:
    def __init__(self):
        self.opens = []
        self.closes = []


class Echo(tornadio.SocketConnection):
    log = None

    def on_open(self, request, *args, **kwargs):
        self.log.opens.append(self.session_id)

    def on_message(self, message):
        self.send(message)

    def on_close(self):
        self.log.closes.append(self.session_id)


def make_app(log=None, router_settings=None, **settings):
    connection = type("RecordedEcho", (Echo,), {"log": log or Log()})
    router = tornadio.get_router(connection, dict({"heartbeat_interval": 5},
                                                  **(router_settings or {})))
    base = {"socket_io_port": 0, "socket_io_address": "127.0.0.1", "flash_policy_port": 0}
    base.update(settings)
    return tornado.web.Application([router.route(), (r"/hello", Hello)], **base)


def busy_port():
    """A listening socket on 127.0.0.1 (so binding its port fails), and its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock, sock.getsockname()[1]


# -- the policy document ---------------------------------------------------------------
def test_policy_xml_unrestricted():
    assert policy_xml(None, [8001]) == (
        '<?xml version="1.0"?>\n'
        '<!DOCTYPE cross-domain-policy SYSTEM '
        '"http://www.macromedia.com/xml/dtds/cross-domain-policy.dtd">\n'
        '<cross-domain-policy>\n'
        '<allow-access-from domain="*" to-ports="8001"/>\n'
        '</cross-domain-policy>\n')
    assert 'to-ports="*"' in policy_xml(None, None)


def test_policy_xml_one_line_per_origin_host():
    xml = policy_xml(["https://app.example:8443", "other.example:*", "app.example",
                      "third.example:8080"], [8001, 8002])
    lines = [line for line in xml.splitlines() if "allow-access-from" in line]
    assert lines == ['<allow-access-from domain="app.example" to-ports="8001,8002"/>',
                     '<allow-access-from domain="other.example" to-ports="8001,8002"/>',
                     '<allow-access-from domain="third.example" to-ports="8001,8002"/>']
    assert policy_xml(["a.example", "*"], 80).count("allow-access-from") == 1
    assert 'domain="*"' in policy_xml(lambda origin: True, 80)


def test_policy_xml_skips_what_cannot_be_expressed(caplog):
    with caplog.at_level(logging.WARNING, "tornadio.flashserver"):
        xml = policy_xml(['evil"/><x a="', "ok.example"], 80)
    assert "evil" not in xml and 'domain="ok.example"' in xml
    assert len(caplog.records) == 1
    with pytest.raises(ValueError):
        policy_xml(None, '80"/>')


def test_policy_file_bytes(tmp_path):
    path = tmp_path / "policy.xml"
    path.write_bytes(b"<cross-domain-policy>custom</cross-domain-policy>\0")
    assert flashserver.policy_bytes(str(path)) == b"<cross-domain-policy>custom</cross-domain-policy>\0"


# -- FlashPolicyServer ------------------------------------------------------------------
class TestPolicyServer(AsyncTestCase):
    def tearDown(self):
        for server in getattr(self, "servers", []):
            server.stop()
        super().tearDown()

    def start(self, **kwargs):
        kwargs.setdefault("port", 0)
        kwargs.setdefault("address", "127.0.0.1")
        server = FlashPolicyServer(**kwargs)
        self.servers = getattr(self, "servers", []) + [server]
        assert server.listening
        return server

    @gen_test(timeout=10)
    async def test_answers_and_closes(self):
        server = self.start(socket_ports=[8001])
        answer = await ask_policy(server.port)
        assert answer == policy_xml(None, [8001]).encode() + b"\0"

    @gen_test(timeout=10)
    async def test_request_in_pieces_and_without_nul(self):
        server = self.start()
        stream = await bounded(TCPClient().connect("127.0.0.1", server.port))
        for piece in (b"<policy", b"-file-req", b"uest/>\0"):
            await bounded(stream.write(piece))
            await gen.sleep(0.02)
        assert (await read_all(stream)).endswith(b"</cross-domain-policy>\n\0")
        # Just the 22 characters, then nothing: still answered.
        assert (await ask_policy(server.port, REQUEST[:-1])).endswith(b"\0")

    @gen_test(timeout=10)
    async def test_policy_file(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "policy.xml")
            with open(path, "wb") as f:
                f.write(b"<cross-domain-policy>from file</cross-domain-policy>")
            server = self.start(policy_file=path)
        assert await ask_policy(server.port) == (
            b"<cross-domain-policy>from file</cross-domain-policy>\0")

    @gen_test(timeout=10)
    async def test_garbage_and_silence_closed(self):
        server = self.start()
        assert await ask_policy(server.port, b"GET / HTTP/1.1\r\n\r\n") == b""
        assert await ask_policy(server.port, b"<policy-file-request/>XYZ") == b""
        assert await ask_policy(server.port, b"A" * 100000) == b""

    @gen_test(timeout=20)
    async def test_many_clients_not_delayed_by_bad_ones(self):
        server = self.start()
        silent = await bounded(TCPClient().connect("127.0.0.1", server.port))
        garbage = await bounded(TCPClient().connect("127.0.0.1", server.port))
        await bounded(garbage.write(b"<policy-file-request"))  # a prefix, then nothing
        # The bad ones hold their connection for up to READ_TIMEOUT (5 s); the
        # good ones must be answered well within that.
        answers = await bounded(gen.multi([ask_policy(server.port, seconds=3)
                                           for _ in range(50)]), 4)
        assert all(answer.endswith(b"</cross-domain-policy>\n\0") for answer in answers)
        # The bad clients are dropped without an answer, within the bound.
        assert await read_all(silent, 7) == b""
        assert await read_all(garbage, 7) == b""

    @gen_test(timeout=10)
    async def test_busy_port_warns(self):
        sock, port = busy_port()
        try:
            with self.assertLogs("tornadio.flashserver", "WARNING") as logs:
                server = FlashPolicyServer(port=port, address="127.0.0.1")
            assert not server.listening and server.port is None
            assert len(logs.records) == 1 and str(port) in logs.output[0]
            server.stop()
        finally:
            sock.close()


# -- SocketServer -----------------------------------------------------------------------
class TestSocketServer(AsyncTestCase):
    def setUp(self):
        super().setUp()
        self.log = Log()
        self.server = None

    def tearDown(self):
        if self.server is not None:
            self.server.stop()
        super().tearDown()

    def start(self, **settings):
        self.app = make_app(self.log, **settings)
        self.server = SocketServer(self.app, auto_start=False)
        return self.server

    @gen_test(timeout=20)
    async def test_a_burst_of_connections_waits_in_the_backlog_instead_of_being_dropped(self):
        # The loop does not turn while the burst arrives, as when a restarted
        # server is busy and every client reconnects at once: what the kernel
        # keeps waiting is the listen backlog (Tornado's default, 128, drops the
        # SYNs of the rest, whose clients retry only 1, 3, 7... seconds later).
        server = self.start()
        burst = []
        try:
            for _ in range(600):
                sock = socket.socket()
                sock.setblocking(False)
                sock.connect_ex(("127.0.0.1", server.port))
                burst.append(sock)
            with select.epoll() as poller:
                for sock in burst:
                    poller.register(sock.fileno(), select.EPOLLOUT)
                connected, deadline = set(), time.monotonic() + 5
                while len(connected) < len(burst) and time.monotonic() < deadline:
                    for fd, _ in poller.poll(0.2):
                        poller.unregister(fd)
                        connected.add(fd)
            refused = [s for s in burst if s.fileno() in connected and
                       s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)]
            assert len(connected) == len(burst) and not refused
        finally:
            for sock in burst:
                sock.close()

    @gen_test(timeout=10)
    async def test_policy_on_policy_port_and_inline(self):
        server = self.start()
        assert server.policy_server is not None and server.policy_server.listening
        expected = policy_xml(None, [server.port]).encode() + b"\0"
        assert await ask_policy(server.policy_server.port) == expected
        assert await ask_policy(server.port) == expected

    @gen_test(timeout=10)
    async def test_policy_follows_router_origins(self):
        server = self.start(router_settings={"allowed_origins": ["http://page.example:8080"]})
        answer = await ask_policy(server.port)
        assert b'<allow-access-from domain="page.example" to-ports="%d"/>' % server.port in answer
        assert b'domain="*"' not in answer

    @gen_test(timeout=10)
    async def test_http_after_peek(self):
        server = self.start()
        http = AsyncHTTPClient()
        url = "http://127.0.0.1:%d/hello?who=flash" % server.port
        for _ in range(2):
            response = await bounded(http.fetch(url))
            assert response.body == b"hello flash"
        # A request arriving byte by byte is not damaged by the peek.
        stream = await bounded(TCPClient().connect("127.0.0.1", server.port))
        request = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        await bounded(stream.write(request[:1]))
        await gen.sleep(0.05)
        await bounded(stream.write(request[1:]))
        answer = await read_all(stream)
        assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"hello world")

    @gen_test(timeout=20)
    async def test_inline_many_clients_with_bad_ones(self):
        server = self.start()
        silent = await bounded(TCPClient().connect("127.0.0.1", server.port))
        garbage = await bounded(TCPClient().connect("127.0.0.1", server.port))
        await bounded(garbage.write(b"<garbage>"))
        answers = await bounded(gen.multi([ask_policy(server.port, seconds=3)
                                           for _ in range(50)]), 4)
        assert all(answer.endswith(b"</cross-domain-policy>\n\0") for answer in answers)
        assert await read_all(garbage, 3) == b""
        # HTTP still works meanwhile.
        response = await bounded(AsyncHTTPClient().fetch(
            "http://127.0.0.1:%d/hello" % server.port))
        assert response.code == 200
        silent.close()

    @gen_test(timeout=10)
    async def test_inline_off(self):
        server = self.start(flash_policy_inline=False, flash_policy_server=False)
        assert server.policy_server is None
        response = await bounded(AsyncHTTPClient().fetch(
            "http://127.0.0.1:%d/hello" % server.port))
        assert response.body == b"hello world"

    @gen_test(timeout=10)
    async def test_stop(self):
        server = self.start()
        ports = (server.port, server.policy_server.port)
        silent = await bounded(TCPClient().connect("127.0.0.1", server.port))
        await gen.sleep(0.05)
        server.stop()
        for port in ports:
            await assert_refused(port)
        # A connection still being peeked at is dropped too.
        assert await read_all(silent) == b""
        server.stop()  # twice is harmless

    @gen_test(timeout=10)
    async def test_busy_policy_port_warns_not_raises(self):
        sock, port = busy_port()
        try:
            with self.assertLogs("tornadio", "WARNING") as logs:
                server = self.start(flash_policy_port=port)
            assert [r for r in logs.records if r.levelno >= logging.WARNING][0].name \
                == "tornadio.flashserver"
            assert len([r for r in logs.records if r.levelno >= logging.WARNING]) == 1
            assert not server.policy_server.listening
            # The socket.io port serves, and still answers the policy inline.
            assert (await ask_policy(server.port)).endswith(b"\0")
        finally:
            sock.close()

    @gen_test(timeout=10)
    async def test_auto_start_inside_running_loop_warns(self):
        app = make_app(self.log, flash_policy_server=False)
        with self.assertLogs("tornadio.server", "WARNING"):
            self.server = SocketServer(app)  # auto_start=True, but the loop runs
        response = await bounded(AsyncHTTPClient().fetch(
            "http://127.0.0.1:%d/hello" % self.server.port))
        assert response.code == 200

    @gen_test(timeout=10)
    async def test_unreadable_policy_file_raises_and_frees_port(self):
        sock, port = busy_port()
        sock.close()
        app = make_app(self.log, flash_policy_file="/nonexistent/policy.xml",
                       flash_policy_server=False, socket_io_port=port)
        with pytest.raises(OSError):
            SocketServer(app, auto_start=False)
        again = socket.socket()
        try:
            again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            again.bind(("127.0.0.1", port))  # free again
        finally:
            again.close()

    @pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
    @gen_test(timeout=20)
    async def test_tls_passes_through(self):
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                        "-subj", "/CN=127.0.0.1", "-keyout", key, "-out", cert],
                       check=True, capture_output=True, timeout=15)
        app = make_app(self.log, flash_policy_server=False)
        self.server = server = SocketServer(app, auto_start=False,
                                            ssl_options={"certfile": cert, "keyfile": key})
        response = await bounded(AsyncHTTPClient().fetch(
            "https://127.0.0.1:%d/hello" % server.port, validate_cert=False))
        assert response.body == b"hello world"
        # flashsocket over TLS announces a wss:// location.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        # The page is https too: an http page is not let into a TLS server by default.
        flash = await bounded(TCPClient().connect("127.0.0.1", server.port, ssl_options=context))
        await bounded(flash.write(FLASH_REQUEST.replace(b"http://", b"https://") % server.port))
        head = await bounded(flash.read_until(b"\r\n\r\n"))
        assert b"Sec-WebSocket-Location: wss://127.0.0.1:%d/socket.io/flashsocket" % server.port \
            in head
        assert await bounded(flash.read_bytes(16)) == b"fQJ,fN/4F4!~K~MH"
        flash.close()
        # websocket over TLS (read through its SSLIOStream): every message
        # echoes, one of them larger than a TLS record.
        ws = await bounded(tornado.websocket.websocket_connect(tornado.httpclient.HTTPRequest(
            "wss://127.0.0.1:%d/socket.io/websocket" % server.port, validate_cert=False)))
        assert (await bounded(ws.read_message())).startswith("~m~32~m~")  # the session id
        big = "z" * 100_000  # more than one TLS record
        for text in ["one", big, "three"]:
            await ws.write_message("~m~%d~m~%s" % (len(text), text))
            assert await bounded(ws.read_message()) == "~m~%d~m~%s" % (len(text), text)
        # A TLS socket holds decrypted bytes its file descriptor no longer shows:
        # it is never read directly.
        routers = socket_routers(app)  # other tests' connections may still be in memory
        links = [obj.link for obj in gc.get_objects()
                 if isinstance(obj, WebSocketTransport) and obj.router in routers
                 and obj.link is not None and not obj.link.closed]
        assert len(links) == 1 and not links[0]._direct
        ws.close()

    @gen_test(timeout=10)
    async def test_listening_url_logged(self):
        with self.assertLogs("tornadio.server", "INFO") as logs:
            server = self.start(flash_policy_server=False)
        assert "http://127.0.0.1:%d/" % server.port in "\n".join(logs.output)

    async def idle_connection_outcome(self, server, seconds=10):
        """One request on a kept-alive connection, then silence: what the server does."""
        reader, writer = await bounded(asyncio.open_connection("127.0.0.1", server.port))
        try:
            writer.write(b"GET /hello HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await bounded(reader.readuntil(b"\r\n\r\n"))
            assert head.startswith(b"HTTP/1.1 200 ") and b"connection: close" not in head.lower()
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            assert await bounded(reader.readexactly(length)) == b"hello world"
            try:
                rest = await bounded(reader.read(), seconds)
            except gen.TimeoutError:
                return "still open"
            return "closed" if rest == b"" else rest
        finally:
            writer.close()

    @gen_test(timeout=20)
    async def test_idle_keep_alive_connection_is_closed(self):
        """A client that vanished after a request no longer holds its connection:
        by default it goes after xhr_polling_timeout + session_expiry (1.5 s here)."""
        server = self.start(flash_policy_server=False,
                            router_settings={"xhr_polling_timeout": 0.5, "session_expiry": 1})
        assert await self.idle_connection_outcome(server) == "closed"

    @gen_test(timeout=20)
    async def test_idle_connection_timeout_setting(self):
        server = self.start(flash_policy_server=False, idle_connection_timeout=0.5)
        assert await self.idle_connection_outcome(server) == "closed"
        for wrong in (0, -1, "10", True):
            with pytest.raises(ValueError, match="idle_connection_timeout"):
                SocketServer(make_app(self.log, idle_connection_timeout=wrong), auto_start=False)

    def test_idle_timeout_follows_the_routers(self):
        assert idle_timeout(make_app(self.log)) == 20 + 30
        slow = make_app(self.log, router_settings={"xhr_polling_timeout": 55, "session_expiry": 5})
        assert idle_timeout(slow) == 60
        assert idle_timeout(tornado.web.Application()) == 20 + 30

    @gen_test(timeout=15)
    async def test_shutdown_closes_every_session(self):
        server = self.start(flash_policy_server=False)
        sockets = []
        for _ in range(3):
            conn = await bounded(tornado.websocket.websocket_connect(
                "ws://127.0.0.1:%d/socket.io/websocket" % server.port))
            first = await bounded(conn.read_message())
            assert first.startswith("~m~32~m~")
            sockets.append(conn)
        assert len(self.log.opens) == 3
        # A flashsocket session too.
        flash = await bounded(TCPClient().connect("127.0.0.1", server.port))
        await bounded(flash.write(FLASH_REQUEST % server.port))
        await bounded(flash.read_until(b"\r\n\r\n"))
        await bounded(flash.read_bytes(16))
        assert (await bounded(flash.read_until(b"\xff"))).startswith(b"\x00~m~32~m~")
        assert len(self.log.opens) == 4
        # One idle keep-alive HTTP connection as well.
        await bounded(AsyncHTTPClient().fetch("http://127.0.0.1:%d/hello" % server.port))
        with self.assertLogs("tornadio", "INFO") as logs:
            await bounded(server.shutdown(3))
        assert not [r for r in logs.records if r.levelno >= logging.WARNING]
        assert sorted(self.log.closes) == sorted(self.log.opens)
        for conn in sockets:
            assert await bounded(conn.read_message()) is None
        assert await read_all(flash) == b"\xff\x00"
        await assert_refused(server.port)
        assert len(socket_routers(self.app)[0].sessions()) == 0


def test_socket_routers_found_in_nested_rules():
    app = make_app()
    router = socket_routers(app)[0]
    app.add_handlers(r"other\.example", [router.route()])
    assert socket_routers(app) == [router]


def test_auto_start_blocks_until_stopped():
    """auto_start=True runs the loop in the constructor; it returns once stopped."""
    outcome = {}

    def run():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            app = make_app(flash_policy_server=False)

            class Recording(SocketServer):
                def start_loop(self):
                    outcome["server"] = self
                    super().start_loop()

            async def probe():
                # Runs inside the loop the constructor started: the server
                # listens; its stop() ends the loop it started.
                server = outcome["server"]
                response = await AsyncHTTPClient().fetch(
                    "http://127.0.0.1:%d/hello" % server.port, request_timeout=5)
                outcome["body"] = response.body
                server.stop()

            IOLoop.current().add_callback(probe)
            server = Recording(app)  # blocks until probe() stops the server
            outcome["returned"] = True
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=2).close()
            except ConnectionRefusedError:
                outcome["refused_after_stop"] = True
        except Exception as exc:  # pragma: no cover - reported below
            outcome["error"] = exc
        finally:
            loop.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")
    assert outcome.get("body") == b"hello world"
    assert outcome.get("returned") and outcome.get("refused_after_stop")


def test_shutdown_answers_held_polls_with_connection_close():
    """So the next poll needs a new connection (refused) instead of a kept-alive 401."""
    import asyncio
    import tornado.web
    from tornado.httpclient import AsyncHTTPClient
    import tornadio
    from tornadio.server import SocketServer

    class Echo(tornadio.SocketConnection):
        def on_message(self, message):
            self.send(message)

    async def go():
        router = tornadio.get_router(Echo, {"xhr_polling_timeout": 30})
        app = tornado.web.Application([router.route()], socket_io_port=0,
                                      socket_io_address="127.0.0.1", flash_policy_server=False)
        server = SocketServer(app, auto_start=False)
        base = "http://127.0.0.1:%d/socket.io/xhr-polling/" % server.port
        client = AsyncHTTPClient(force_instance=True)
        try:
            first = await client.fetch(base + "/1")
            sid = first.body.decode()[8:40]
            held = asyncio.ensure_future(client.fetch(base + sid + "/2", request_timeout=10))
            for _ in range(200):
                if any(s.has_sink for s in router.sessions()):
                    break
                await asyncio.sleep(0.01)
            await server.shutdown(2)
            response = await asyncio.wait_for(held, 5)
            assert response.code == 200
            assert response.headers.get("Connection", "").lower() == "close"
        finally:
            client.close()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_polls_for_sessions_closed_by_the_shutdown_get_a_quiet_answer():
    """On a kept-alive connection, a poll for a session the shutdown closed gets an
    empty 200 with Connection: close, not a 401 the page would log as an error."""
    import asyncio
    import tornado.web
    import tornadio
    from tornadio.server import SocketServer

    class Echo(tornadio.SocketConnection):
        def on_message(self, message):
            self.send(message)

    async def request(reader, writer, path):
        writer.write(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode()
        length = int(head.lower().split("content-length:")[1].split("\r\n")[0])
        body = await asyncio.wait_for(reader.readexactly(length), 5)
        return head, body.decode()

    async def go():
        router = tornadio.get_router(Echo)
        app = tornado.web.Application([router.route()], socket_io_port=0,
                                      socket_io_address="127.0.0.1", flash_policy_server=False)
        server = SocketServer(app, auto_start=False)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        try:
            head, body = await request(reader, writer, "/socket.io/jsonp-polling//1/0")
            sid = body[len('io.JSONP[0]._("~m~32~m~'):][:32]
            router.shutting_down = True          # what shutdown() does first...
            router.sessions().close_all()        # ...then it closes the sessions
            head, body = await request(reader, writer, "/socket.io/jsonp-polling/%s/2/0" % sid)
            assert head.startswith("HTTP/1.1 200")
            assert "connection: close" in head.lower()
            assert body == 'io.JSONP[0]._("");'
        finally:
            writer.close()
            await server.shutdown(1)

    asyncio.run(asyncio.wait_for(go(), 30))


# -- signals, on a real process ---------------------------------------------------------
SLOW_CLOSE_SERVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "support",
                                 "slow_close_server.py")


#: How the server's loop takes signals: asyncio's add_signal_handler, or (as on
#: Windows, where loops have none) plain signal handlers.
LOOP_SIGNALS = ["loop-signals", "no-loop-signals"]


def run_with_sessions(close_seconds, count, body, mode="loop-signals"):
    """Start slow_close_server.py (deprecations are errors), open ``count`` websocket
    sessions, run ``body(process)`` in a thread while they stay connected; returns
    (its result, the process)."""
    process = ScriptProcess(SLOW_CLOSE_SERVER, close_seconds, mode,
                            python_args=["-W", "error::DeprecationWarning"])
    process.start()
    try:
        port = int(process.wait_for(r"listening on (\d+)").group(1))

        async def go():
            sockets = []
            try:
                for _ in range(count):
                    conn = await bounded(tornado.websocket.websocket_connect(
                        "ws://127.0.0.1:%d/socket.io/websocket" % port))
                    assert (await bounded(conn.read_message())).startswith("~m~32~m~")
                    sockets.append(conn)
                process.wait_for(r"^opened ", count=count)
                return await asyncio.get_running_loop().run_in_executor(None, body, process)
            finally:
                for conn in sockets:
                    conn.close()

        return asyncio.run(asyncio.wait_for(go(), 60)), process
    finally:
        process.kill()


def session_lines(process, word):
    return [line.split()[1] for line in process.lines("out") if line.startswith(word + " ")]


@pytest.mark.parametrize("mode", LOOP_SIGNALS)
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_runs_every_on_close_then_exits_0(signum, mode):
    def body(process):
        process.send_signal(signum)
        return process.wait_exit(20)

    status, process = run_with_sessions(0.5, 3, body, mode)
    assert ("loop NoSignalLoop" in process.lines("out")) == (mode == "no-loop-signals")
    assert status == 0, process.output()
    assert len(session_lines(process, "opened")) == 3
    assert sorted(session_lines(process, "closed")) == sorted(session_lines(process, "opened"))
    assert process.lines("out")[-1] == "returned"
    assert "Traceback" not in process.output() and "Warning" not in process.output()


@pytest.mark.parametrize("mode", LOOP_SIGNALS)
@pytest.mark.parametrize("second", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_during_a_slow_shutdown_exits_at_once(second, mode):
    """Three on_close of 3 s each: the second signal must not wait for them."""
    def body(process):
        process.send_signal(signal.SIGINT)
        process.wait_for(r"^closing ")
        process.send_signal(second)
        return process.wait_exit(2.0)  # a bound, not a measurement: the rest needs 6 s

    status, process = run_with_sessions(3.0, 3, body, mode)
    assert status == 128 + second, process.output()
    assert len(session_lines(process, "closed")) < 3
    assert "returned" not in process.lines("out")
    assert any("again: exiting" in line for line in process.lines("err")), process.output()
    assert "Traceback" not in process.output()
