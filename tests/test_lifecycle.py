"""Session lifecycle faults, reproduced on real sockets: coroutine on_close,
on_close racing a slow on_open, and handshakes that never finish."""
import asyncio
import socket

import pytest
import tornado.web
import tornado.websocket

import tornadio
from tornadio.server import SocketServer
from tornadio import testing
from support.wire import captured_logs, fetch, messages, open_xhr, run, serve, tracebacks

FAST = {"session_check_interval": 0.1, "session_expiry": 5, "xhr_polling_timeout": 5,
        "heartbeat_interval": 0}


class Timeline:
    """Ordered record of what the connection did."""

    def __init__(self):
        self.steps = []
        self.changed = None

    def note(self, step):
        self.steps.append(step)
        if self.changed is not None:
            self.changed.set()

    async def wait_for(self, predicate, timeout=10):
        if self.changed is None:
            self.changed = asyncio.Event()

        async def loop():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), timeout)


# -- coroutine on_close -------------------------------------------------------------
def test_a_coroutine_on_close_is_awaited_once_per_session():
    timeline = Timeline()

    class AsyncClose(tornadio.SocketConnection):
        def on_message(self, message):
            pass

        async def on_close(self):
            await asyncio.sleep(0.05)
            timeline.note("closed")

    async def go():
        with captured_logs() as records:
            async with serve(AsyncClose, FAST) as (base, router):
                sockets = [await testing.connect(base) for _ in range(3)]
                for ws in sockets:
                    await ws.close()
                await timeline.wait_for(lambda: len(timeline.steps) == 3)
                await asyncio.sleep(0.1)
                assert not router.sessions().tasks
        assert timeline.steps == ["closed"] * 3
        assert not [r for r in records if "never awaited" in r.getMessage()]
        assert not tracebacks(records)
    run(go())


def test_on_close_waits_for_the_running_coroutine_on_message():
    timeline = Timeline()

    class Slow(tornadio.SocketConnection):
        async def on_message(self, message):
            timeline.note("message started")
            await asyncio.sleep(0.3)
            timeline.note("message done")

        def on_close(self):
            timeline.note("close")

    async def go():
        async with serve(Slow, FAST) as (base, _):
            ws = await testing.connect(base); _ = ws.session_id
            ws.send_raw("~m~1~m~a")
            await timeline.wait_for(lambda: "message started" in timeline.steps)
            await ws.close()
            await timeline.wait_for(lambda: "close" in timeline.steps)
        assert timeline.steps == ["message started", "message done", "close"]
    run(go())


def test_a_failing_coroutine_on_close_is_logged_not_raised():
    class Broken(tornadio.SocketConnection):
        def on_message(self, message):
            pass

        async def on_close(self):
            raise RuntimeError("on_close broke")

    async def go():
        with captured_logs() as records:
            async with serve(Broken, FAST) as (base, router):
                ws = await testing.connect(base); _ = ws.session_id
                await ws.close()
                for _ in range(100):
                    if any("on_close broke" in str(r.exc_info) for r in records if r.exc_info):
                        break
                    await asyncio.sleep(0.02)
                assert not router.sessions().tasks
        errors = [r for r in records if r.exc_info]
        assert len(errors) == 1 and errors[0].getMessage() == "error in on_close"
    run(go())


def test_a_shutdown_bounds_a_hanging_coroutine_on_close():
    class Hangs(tornadio.SocketConnection):
        def on_message(self, message):
            pass

        async def on_close(self):
            await asyncio.sleep(3600)

    async def go():
        router = tornadio.get_router(Hangs, FAST)
        app = tornado.web.Application([router.route()], socket_io_port=0,
                                      socket_io_address="127.0.0.1", flash_policy_server=False)
        server = SocketServer(app, auto_start=False)
        await testing.connect("http://127.0.0.1:%d" % server.port)
        with captured_logs() as records:
            await asyncio.wait_for(server.shutdown(timeout=0.5), 10)
        assert any("cancelled" in r.getMessage() for r in records)
    run(go())


async def assert_alive(base):
    ws = await testing.connect(base); sid = ws.session_id
    assert len(sid) == 32
    await ws.close()


# -- on_close never before on_open returned -------------------------------------------------
def slow_open_connection(timeline, refuse=False):
    class SlowOpen(tornadio.SocketConnection):
        async def on_open(self, request, *args, **kwargs):
            timeline.note("open started")
            await asyncio.sleep(0.6)
            timeline.note("open done")
            if refuse:
                return False
            self.send("welcome")

        def on_message(self, message):
            pass

        def on_close(self):
            timeline.note("close")
    return SlowOpen


async def drop_stream_get(port, transport):
    """Start a streaming/polling GET, then drop the connection mid on_open."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    tail = "/1/0" if transport == "jsonp-polling" else "/1"
    writer.write(("GET /socket.io/%s/%s HTTP/1.1\r\nHost: x\r\n\r\n" % (transport, tail)).encode())
    await writer.drain()
    return writer


@pytest.mark.parametrize("transport", ["htmlfile", "xhr-multipart", "xhr-polling",
                                       "jsonp-polling", "websocket"])
@pytest.mark.parametrize("refuse", [False, True])
def test_a_client_dropped_during_a_slow_on_open_gets_on_close_only_after_it(transport, refuse):
    timeline = Timeline()

    async def go():
        with captured_logs() as records:
            # A dropped long poll is not a closed session: it ends by expiry.
            settings = dict(FAST, handshake_timeout=0.3)
            async with serve(slow_open_connection(timeline, refuse), settings) as (base, router):
                port = int(base.rsplit(":", 1)[1])
                if transport == "websocket":
                    ws = await tornado.websocket.websocket_connect(
                        "ws://127.0.0.1:%d/socket.io/websocket" % port)
                    await timeline.wait_for(lambda: "open started" in timeline.steps)
                    ws.close()  # raw: the session id never came
                else:
                    writer = await drop_stream_get(port, transport)
                    await timeline.wait_for(lambda: "open started" in timeline.steps)
                    writer.transport.abort()
                await timeline.wait_for(lambda: "open done" in timeline.steps)
                if not refuse:
                    await timeline.wait_for(lambda: "close" in timeline.steps)
                await asyncio.sleep(0.2)
                assert len(router.sessions()) == 0
        expected = ["open started", "open done"] + ([] if refuse else ["close"])
        assert timeline.steps == expected
        assert not tracebacks(records)
    run(go())


def test_a_shutdown_during_a_slow_on_open_runs_on_close_after_it():
    timeline = Timeline()

    async def go():
        async with serve(slow_open_connection(timeline), FAST) as (base, router):
            port = int(base.rsplit(":", 1)[1])
            writer = await drop_stream_get(port, "htmlfile")
            await timeline.wait_for(lambda: "open started" in timeline.steps)
            await router.shutdown()
            await timeline.wait_for(lambda: "close" in timeline.steps)
            writer.close()
        assert timeline.steps == ["open started", "open done", "close"]
    run(go())


def test_broadcasts_reach_a_connection_whose_on_open_is_still_running():
    """Documented choice: a connection is in the room while on_open runs (as in 2011)."""
    timeline = Timeline()

    class Joins(tornadio.SocketConnection):
        async def on_open(self, request, *args, **kwargs):
            self.join("room")
            timeline.note("joined")
            await asyncio.sleep(0.3)

        def on_message(self, message):
            pass

    async def go():
        async with serve(Joins, FAST) as (base, router):
            opening = asyncio.ensure_future(tornado.websocket.websocket_connect(
                base.replace("http", "ws") + "/socket.io/websocket"))
            await timeline.wait_for(lambda: "joined" in timeline.steps)
            assert router.broadcaster().send_group("room", "early").local == 1
            ws = await asyncio.wait_for(opening, 5)
            frames = messages((await asyncio.wait_for(ws.read_message(), 5)))
            # The id first, then what reached the connection while on_open ran.
            assert frames[1:] == [("text", "early")] and len(frames[0][1]) == 32
            ws.close()
    run(go())


# -- handshakes that never finish -------------------------------------------------------------
def flash_headers():
    return ("GET /socket.io/flashsocket HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: WebSocket\r\n"
            "Connection: Upgrade\r\nOrigin: http://127.0.0.1\r\n"
            "Sec-WebSocket-Key1: 4 @1  46546xW%0l 1 5\r\n"
            "Sec-WebSocket-Key2: 12998 5 Y3 1  .P00\r\n\r\n").encode()


class Quiet(tornadio.SocketConnection):
    def on_message(self, message):
        pass


def test_flashsocket_handshakes_without_key_bytes_hold_no_session_slot():
    async def go():
        async with serve(Quiet, dict(FAST, max_sessions=50)) as (base, router):
            port = int(base.rsplit(":", 1)[1])
            stalled = []
            for _ in range(50):
                sock = socket.create_connection(("127.0.0.1", port))
                sock.sendall(flash_headers())  # ... and never the 8 key3 bytes
                stalled.append(sock)
            await asyncio.sleep(0.3)
            assert len(router.sessions()) == 0
            for _ in range(10):
                ws = await testing.connect(base); sid = ws.session_id
                assert len(sid) == 32
                await ws.close()
            for sock in stalled:
                sock.close()
    run(go())


def test_polling_first_gets_never_followed_up_expire_after_the_handshake_timeout():
    async def go():
        settings = dict(FAST, max_sessions=50, handshake_timeout=0.5, session_expiry=30)
        async with serve(Quiet, settings) as (base, router):
            for _ in range(50):
                await open_xhr(base)
            # They hold no slot meanwhile: a real client still gets in...
            ws = await testing.connect(base); sid = ws.session_id
            assert len(sid) == 32
            # ...and they are gone long before session_expiry.
            for _ in range(100):
                if router.sessions().unconfirmed == 0:
                    break
                await asyncio.sleep(0.05)
            assert router.sessions().unconfirmed == 0 and len(router.sessions()) == 1
            await ws.close()
    run(go())


def test_a_polling_client_that_comes_back_is_not_expired_by_the_handshake_timeout():
    async def go():
        settings = dict(FAST, handshake_timeout=0.3, session_expiry=30, xhr_polling_timeout=0.2)
        async with serve(Quiet, settings) as (base, router):
            sid, _ = await open_xhr(base)
            for number in range(6):  # 6 empty polls of 0.2 s: 1.2 s, four handshake timeouts
                response = await fetch("%s/socket.io/xhr-polling/%s/%d" % (base, sid, number))
                assert response.code == 200
            assert router.sessions().get(sid) is not None
            assert router.sessions().unconfirmed == 0
    run(go())


def test_per_address_limit_honours_xheaders():
    async def go():
        router = tornadio.get_router(Quiet, dict(FAST, max_sessions_per_address=2))
        app = tornado.web.Application([router.route()], socket_io_port=0,
                                      socket_io_address="127.0.0.1", flash_policy_server=False)
        server = SocketServer(app, auto_start=False, xheaders=True)
        base = "http://127.0.0.1:%d" % server.port
        try:
            url = base + "/socket.io/xhr-polling//1"
            for _ in range(2):
                assert (await fetch(url, headers={"X-Real-IP": "203.0.113.7"})).code == 200
            refused = await fetch(url, headers={"X-Real-IP": "203.0.113.7"})
            assert refused.code == 503 and b"per address" in refused.body
            assert (await fetch(url, headers={"X-Real-IP": "203.0.113.8"})).code == 200
        finally:
            await server.shutdown(1)
    run(go())
