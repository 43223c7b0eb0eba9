"""The Router object owns its state: restart after shutdown, independence of
routers, one transport table, expiry heap bounded by live sessions, module
hygiene. Real sockets on loopback; the Redis test uses a real redis-server."""
import ast
import asyncio
import gc
import os
import subprocess
import sys
import weakref

import pytest
import tornado.web
import tornado.websocket

import tornadio
from tornadio import persistent, polling, router as router_module
from tornadio.server import SocketServer
from tornadio import testing
from support.wire import (Events, captured_logs, echo_connection, form, messages, run, serve,
                          tracebacks)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
PACKAGE_DIR = os.path.join(os.path.dirname(TESTS_DIR), "tornadio")
sys.path.insert(0, os.path.join(TESTS_DIR, "scaling"))

from scaling_procs import find_binary, redis_server_fixture  # noqa: E402

REDIS_SERVER = find_binary("redis-server")


class KeepAlive:
    """One kept-alive HTTP/1.1 connection: requests in sequence, whole answers back."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
        return cls(reader, writer)

    async def request(self, method, path, body=b""):
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n" % (method, path)
        if method == "POST":
            head += ("Content-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: %d\r\n" % len(body))
        self.writer.write(head.encode() + b"\r\n" + body)
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        payload = await asyncio.wait_for(
            self.reader.readexactly(int(headers.get("content-length", "0"))), 10)
        return status, headers, payload.decode("utf-8")

    def close(self):
        self.writer.close()


def new_app(router):
    return tornado.web.Application([router.route()], socket_io_port=0,
                                   socket_io_address="127.0.0.1", flash_policy_server=False)


async def open_polling_session(conn):
    status, _, body = await conn.request("GET", "/socket.io/xhr-polling//1")
    assert status == 200
    return messages(body)[0][1]


# -- restart after shutdown ----------------------------------------------------------
def test_a_router_serves_again_after_a_server_shutdown_like_a_fresh_one():
    events = Events()
    router = tornadio.get_router(echo_connection(events))
    app = new_app(router)

    async def go():
        server = SocketServer(app, auto_start=False)
        conn = await KeepAlive.open(server.port)
        old_sid = await open_polling_session(conn)
        conn.close()
        await server.shutdown(2)
        assert events.closed == [old_sid]

        server = SocketServer(app, auto_start=False)
        try:
            conn = await KeepAlive.open(server.port)
            for path in ("/socket.io/xhr-polling/%s/2" % old_sid,
                         "/socket.io/xhr-polling/%s/2" % ("0" * 32)):
                status, headers, _ = await conn.request("GET", path)
                assert status == 401
                assert headers.get("connection", "").lower() != "close"
            status, headers, _ = await conn.request(
                "POST", "/socket.io/xhr-polling/%s/send" % old_sid, form("~m~2~m~hi").encode())
            assert status == 401 and headers.get("connection", "").lower() != "close"
            assert events.messages == []

            sid = await open_polling_session(conn)
            status, _, _ = await conn.request("POST", "/socket.io/xhr-polling/%s/send" % sid,
                                              form("~m~5~m~again").encode())
            assert status == 200
            status, headers, body = await conn.request("GET", "/socket.io/xhr-polling/%s/3" % sid)
            assert status == 200 and messages(body) == [("text", "again")]
            assert headers.get("connection", "").lower() != "close"
            conn.close()
        finally:
            await server.shutdown(2)
    run(go())


def test_a_bare_router_shutdown_while_listening_leaves_a_fresh_router():
    events = Events()

    async def go():
        async with serve(echo_connection(events)) as (base, router):
            port = int(base.rsplit(":", 1)[1])
            conn = await KeepAlive.open(port)
            old_sid = await open_polling_session(conn)
            await router.shutdown()
            assert events.closed == [old_sid] and not router.shutting_down
            status, headers, _ = await conn.request("GET", "/socket.io/xhr-polling/%s/2" % old_sid)
            assert status == 401 and headers.get("connection", "").lower() != "close"
            sid = await open_polling_session(conn)
            assert sid != old_sid and len(router.sessions()) == 1
            conn.close()
    run(go())


def test_a_new_router_for_the_same_class_is_independent_of_the_old():
    events = Events()
    connection = echo_connection(events)
    first = tornadio.get_router(connection)
    second = tornadio.get_router(connection)
    assert first.sessions() is not second.sessions()

    async def go():
        async with serve(connection) as (base, router):
            ws = await testing.connect(base); sid = ws.session_id
            assert len(router.sessions()) == 1
            assert len(first.sessions()) == 0 and len(second.sessions()) == 0
            await ws.close()
    run(go())


# -- two routers on one channel ------------------------------------------------------------
redis_server = redis_server_fixture(REDIS_SERVER)


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server not installed")
def test_two_routers_on_one_redis_channel_both_receive_every_broadcast(redis_server):
    from tornadio.redis_broadcast import RedisBroadcastBackend

    class Room(tornadio.SocketConnection):
        def on_message(self, message):
            pass

    async def go():
        here = RedisBroadcastBackend(url=redis_server.url, channel_prefix="t10")
        elsewhere = RedisBroadcastBackend(url=redis_server.url, channel_prefix="t10")
        try:
            first = tornadio.get_router(Room, {"broadcast_backend": here}, resource="one")
            second = tornadio.get_router(Room, {"broadcast_backend": here}, resource="two")
            # "Another process": its own backend and router on the same channel.
            remote = tornadio.get_router(Room, {"broadcast_backend": elsewhere}, resource="one")
            remote_broadcaster = remote.broadcaster()
            async with serve(Room, extra_handlers=[first.route(), second.route()]) as (base, _):
                ws_one = await testing.connect(base, resource="one")
                ws_two = await testing.connect(base, resource="two")
                assert await first.broadcaster().ready(10)
                assert await second.broadcaster().ready(10)
                assert await remote_broadcaster.ready(10)
                for number in range(20):
                    delivery = await remote_broadcaster.send_all("remote %d" % number)
                    assert delivery.remote
                got_one, got_two = [], []
                while len(got_one) < 20:
                    got_one.append(await ws_one.receive())
                while len(got_two) < 20:
                    got_two.append(await ws_two.receive())
                expected = ["remote %d" % n for n in range(20)]
                assert got_one == expected and got_two == expected

                # A broadcast of one local router reaches the other's clients too.
                delivery = first.broadcaster().send_all("local")
                assert delivery.local == 2
                assert await ws_one.receive() == "local"
                assert await ws_two.receive() == "local"

                # Closing the second router's broadcaster leaves the first listening.
                second.broadcaster().close()
                await remote_broadcaster.send_all("after")
                assert await ws_one.receive() == "after"
                await ws_one.close()
                await ws_two.close()
            for router in (first, second, remote):
                await router.shutdown()
        finally:
            await here.close()
            await elsewhere.close()
    run(go(), timeout=60)


# -- expiry heap -------------------------------------------------------------------------------
def test_ten_thousand_poll_post_cycles_leave_at_most_two_heap_entries():
    events = Events()

    async def go():
        async with serve(echo_connection(events)) as (base, router):
            conn = await KeepAlive.open(int(base.rsplit(":", 1)[1]))
            sid = await open_polling_session(conn)
            body = form("~m~1~m~x").encode()
            for cycle in range(10000):
                status, _, _ = await conn.request("POST", "/socket.io/xhr-polling/%s/send" % sid,
                                                  body)
                assert status == 200
                status, _, payload = await conn.request(
                    "GET", "/socket.io/xhr-polling/%s/%d" % (sid, cycle))
                assert status == 200 and payload == "~m~1~m~x"
            assert router.sessions().heap_size <= 2
            assert len(events.messages) == 10000
            conn.close()
    run(go(), timeout=240)


class Forgetful(tornadio.SocketConnection):
    """Keeps no reference to itself anywhere."""

    def on_message(self, message):
        self.send(message)


def test_the_heap_keeps_no_closed_session_alive():
    async def go():
        async with serve(Forgetful) as (base, router):
            conn = await KeepAlive.open(int(base.rsplit(":", 1)[1]))
            sid = await open_polling_session(conn)
            session = router.sessions().get(sid)
            ref = weakref.ref(session)
            assert router.sessions().heap_size == 1
            session.close()
            del session
            await asyncio.sleep(0)
            assert router.sessions().heap_size == 0
            conn.close()
            await asyncio.sleep(0.05)
            gc.collect()
            assert ref() is None
    run(go())


# -- one transport table -------------------------------------------------------------------------
def test_every_name_comes_from_the_one_transport_table():
    assert router_module.PROTOCOLS == tuple(router_module.TRANSPORTS)
    for name, handler in router_module.TRANSPORTS.items():
        assert handler.name == name
    router = tornadio.get_router(echo_connection(Events()))
    for name in router.transports:
        redacted = router.redact("/socket.io/%s/%s/1" % (name, "a1" * 16))
        assert "a1" * 16 not in redacted and "a1a1a1…" in redacted


def test_no_transport_carries_tornados_websocket_machinery():
    # The HTTP transports never needed it; websocket and flashsocket detach
    # the stream and speak their framing themselves (tornadio.rfc6455, hixie-76).
    for handler in (polling.XHRPollingTransport, polling.JSONPPollingTransport,
                    polling.HtmlFileTransport, polling.XHRMultipartTransport,
                    persistent.FlashSocketTransport, persistent.WebSocketTransport):
        assert not issubclass(handler, tornado.websocket.WebSocketHandler), handler
        assert issubclass(handler, tornado.web.RequestHandler), handler


@pytest.mark.parametrize("transport", ["xhr-polling", "jsonp-polling"])
def test_access_log_lines_never_hold_a_full_session_id(transport):
    events = Events()

    async def go():
        with captured_logs() as records:
            async with serve(echo_connection(events), {"xhr_polling_timeout": 0.2}) as (base, _):
                conn = await KeepAlive.open(int(base.rsplit(":", 1)[1]))
                tail = "/0" if transport == "jsonp-polling" else ""
                status, _, body = await conn.request("GET", "/socket.io/%s//1%s" % (transport, tail))
                sid = body.split("~m~32~m~")[1][:32]
                await conn.request("GET", "/socket.io/%s/%s/2%s" % (transport, sid, tail))
                conn.close()
        access = [r.getMessage() for r in records if r.name == "tornado.access"]
        assert len(access) == 2
        assert not any(sid in line for line in access)
        assert any(sid[:6] + "…" in line for line in access)
        assert not tracebacks(records)
    run(go())


# -- module hygiene --------------------------------------------------------------------------------
def _modules():
    return sorted(name[:-3] for name in os.listdir(PACKAGE_DIR)
                  if name.endswith(".py") and name != "__main__.py")


def test_no_function_level_imports_in_the_library():
    offenders = []
    for module in _modules():
        path = os.path.join(PACKAGE_DIR, module + ".py")
        tree = ast.parse(open(path, encoding="utf-8").read(), path)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        offenders.append("%s.py:%d" % (module, inner.lineno))
    assert offenders == []


@pytest.mark.parametrize("module", _modules())
def test_each_module_imports_first_in_a_fresh_interpreter(module):
    """No import cycle: every module can be the first one imported."""
    result = subprocess.run([sys.executable, "-c", "import tornadio.%s" % module],
                            cwd=os.path.dirname(PACKAGE_DIR), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
