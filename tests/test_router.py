"""Router: settings, URL grammar, dispatch, the connection API — real server on loopback."""
import asyncio

import pytest
import tornado.websocket

import tornadio
from tornadio import testing
from support.wire import (WAIT, Events, captured_logs, echo_connection, fetch, messages, post,
                          run, serve, tracebacks)


class Quiet(tornadio.SocketConnection):
    def on_message(self, message):
        pass


@pytest.mark.parametrize("settings, words", [
    ({"session_expiry": -1}, "session_expiry"),
    ({"session_expiry": 0}, "session_expiry must be > 0"),
    ({"xhr_polling_timeout": "20"}, "xhr_polling_timeout"),
    ({"enabled_protocols": ["websocket", "carrier-pigeon"]}, "enabled_protocols"),
    ({"enabled_protocols": "websocket"}, "enabled_protocols"),
    ({"max_http_body": 1.5}, "max_http_body"),
    ({"allowed_origins": "http://a.example"}, "allowed_origins"),
])
def test_bad_settings_fail_at_get_router(settings, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        tornadio.get_router(Quiet, settings)


def test_defaults_are_the_documented_ones():
    router = tornadio.get_router(Quiet)
    settings = router.socket_settings
    assert settings["session_check_interval"] == 15
    assert settings["session_expiry"] == 30
    assert settings["heartbeat_interval"] == 12
    assert settings["xhr_polling_timeout"] == 20
    assert set(settings["enabled_protocols"]) == {
        "websocket", "flashsocket", "xhr-multipart", "xhr-polling", "jsonp-polling", "htmlfile"}
    pattern, target = router.route()
    assert pattern.startswith("/") and pattern == router.pattern
    # One rule whose target lists a rule per transport, each carrying the router.
    assert {rule[1] for rule in target} >= set(router.transports.values())
    assert all(rule[2] == {"router": router} for rule in target)


def test_get_router_needs_a_connection_class():
    with pytest.raises(TypeError):
        tornadio.get_router(object)


def test_disabled_transport_403_unknown_404():
    async def body():
        async with serve(Quiet, {"enabled_protocols": ["websocket"]}) as (base, _):
            assert (await fetch(base + "/socket.io/xhr-polling//1")).code == 403
            assert (await fetch(base + "/socket.io/carrier-pigeon//1")).code == 404
            async with testing.connect(base) as client:
                assert len(client.session_id) == 32
    run(body())


def test_two_routers_with_different_resources_are_independent():
    events_a, events_b = Events(), Events()

    async def body():
        router_b = tornadio.get_router(echo_connection(events_b), resource="other")
        async with serve(echo_connection(events_a), extra_handlers=[router_b.route()]) as (base, router_a):
            client_a = await testing.connect(base, resource="socket.io")
            client_b = await testing.connect(base, resource="other")
            client_a.send("a")
            client_b.send("b")
            assert await client_a.receive_frame() == ("text", "a")
            assert await client_b.receive_frame() == ("text", "b")
            assert events_a.messages == ["a"] and events_b.messages == ["b"]
            assert len(router_a.sessions()) == 1 and len(router_b.sessions()) == 1
            await client_a.close()
            await client_b.close()
            await events_b.wait_for(lambda: events_b.closed)
            router_b.sessions().close_all()
    run(body())


def test_extra_captures_reach_on_open_as_real_arguments():
    seen = []

    class Room(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            seen.append((request.path, args, kwargs))

        def on_message(self, message):
            pass

    async def body():
        async with serve(Room, resource="chat", extra_re=r"\d+", extra_sep="/") as (base, _):
            async with testing.connect(base, resource="chat/123"):
                async with testing.connect(base, "xhr-polling", resource="chat/4567"):
                    pass
    run(body())
    assert seen[0] == ("/chat/123/websocket", ("123",), {"extra": "123"})
    assert seen[1][1:] == (("4567",), {"extra": "4567"})


def test_on_open_false_refuses_and_on_close_is_not_called():
    closed = []

    class Picky(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            return request.headers.get("X-Let-Me-In") == "yes"

        def on_message(self, message):
            pass

        def on_close(self):
            closed.append(1)

    async def body():
        async with serve(Picky) as (base, router):
            refused = await fetch(base + "/socket.io/xhr-polling//1")
            assert refused.code == 403
            allowed = await fetch(base + "/socket.io/xhr-polling//1", headers={"X-Let-Me-In": "yes"})
            assert allowed.code == 200
            assert len(router.sessions()) == 1
    run(body())
    assert closed == [1]  # only the accepted one, closed at teardown


def test_coroutine_on_open_and_on_message_keep_order():
    order = []

    class Slow(tornadio.SocketConnection):
        async def on_open(self, request, *args, **kwargs):
            await asyncio.sleep(0.01)
            self.send("ready")

        async def on_message(self, message):
            # Later messages must wait for earlier ones, however long they take.
            await asyncio.sleep(0.02 if message == "first" else 0)
            order.append(message)
            self.send(message)

    async def body():
        async with serve(Slow) as (base, _):
            ws = await tornado.websocket.websocket_connect(base.replace("http", "ws") + "/socket.io/websocket")
            # A raw WebSocket: whatever on_open sent rides behind the id in the first payload.
            first = messages(await asyncio.wait_for(ws.read_message(), WAIT))
            assert first[1:] == [("text", "ready")]
            ws.write_message("~m~5~m~first~m~6~m~second")
            ws.write_message("~m~5~m~third")
            got = []
            while len(got) < 3:
                got += [data for _, data in messages(await asyncio.wait_for(ws.read_message(), WAIT))]
            assert got == ["first", "second", "third"]
            ws.close()
    run(body())
    assert order == ["first", "second", "third"]


def test_user_exceptions_are_logged_and_the_server_lives_on():
    class Broken(tornadio.SocketConnection):
        def on_message(self, message):
            if message == "boom":
                raise RuntimeError("user bug")
            self.send(message)

        def on_close(self):
            raise RuntimeError("close bug")

    async def body():
        with captured_logs() as records:
            async with serve(Broken) as (base, _):
                client = await testing.connect(base)
                client.send(["boom", "ok"])  # one payload, two frames
                assert await client.receive_frame() == ("text", "ok")
                await client.close()
                await asyncio.sleep(0.1)
        errors = tracebacks(records)
        assert any("on_message" in r.getMessage() for r in errors)
        assert any("on_close" in r.getMessage() for r in errors)
    run(body())


def test_send_values_and_errors():
    class Sender(tornadio.SocketConnection):
        def on_message(self, message):
            self.send(["a", {"b": 2}, None, 42, (1, 2)])
            with pytest.raises(tornadio.EncodeError):
                self.send(float("nan"))
            with pytest.raises(tornadio.EncodeError):
                self.send({1, 2})
            self.send("done")

    async def body():
        async with serve(Sender) as (base, _):
            async with testing.connect(base) as client:
                client.send("go")
                got = []
                while not got or got[-1] != ("text", "done"):
                    got.append(await client.receive_frame())
                assert got == [("text", "a"), ("json", {"b": 2}), ("json", None), ("json", 42),
                               ("json", [1, 2]), ("text", "done")]
    run(body())


def test_send_after_close_is_a_logged_no_op_and_close_is_idempotent():
    events = Events()

    async def body():
        async with serve(echo_connection(events)) as (base, router):
            client = await testing.connect(base)
            conn = events.connections[0]
            conn.close()
            conn.close()
            assert conn.is_closed
            conn.send("late")
            with pytest.raises(testing.ConnectionClosed):  # the socket was closed, nothing more came
                await client.receive()
            await events.wait_for(lambda: events.closed)
            assert len(router.sessions()) == 0
    run(body())
    assert len(events.closed) == 1


def test_connection_info_survives_the_whole_polling_session():
    events = Events()

    async def body():
        async with serve(echo_connection(events)) as (base, _):
            response = await fetch(base + "/socket.io/xhr-polling//1?token=abc",
                                   headers={"Cookie": "user=ann; theme=dark", "X-Forwarded-For": "1.2.3.4"})
            sid = messages(response.body.decode())[0][1]
            assert (await post(base, "xhr-polling", sid, "~m~2~m~hi")).code == 200
            info = events.connections[0].info
            assert info.remote_ip == "127.0.0.1"
            assert info.cookies == {"user": "ann", "theme": "dark"}
            assert info.get_argument("token") == "abc"
            assert info.headers["X-Forwarded-For"] == "1.2.3.4"
            assert info.transport == "xhr-polling"
    run(body())


def test_client_script_served_with_etag_and_304(tmp_path):
    script = tmp_path / "socket.io.js"
    script.write_text("var io = {};")

    async def body():
        async with serve(Quiet, {"client_js": str(script)}) as (base, _):
            first = await fetch(base + "/socket.io/socket.io.js")
            assert first.code == 200 and first.body == b"var io = {};"
            assert first.headers["Content-Type"].startswith("text/javascript")
            assert "max-age" in first.headers["Cache-Control"]
            again = await fetch(base + "/socket.io/socket.io.js",
                                headers={"If-None-Match": first.headers["ETag"]})
            assert again.code == 304
    run(body())


def test_missing_client_script_is_one_clear_error():
    with pytest.raises(FileNotFoundError, match="npm install socket.io@0.6.18"):
        tornadio.get_router(Quiet, {"client_js": "/nonexistent/socket.io.js"})


def test_on_open_that_raises_refuses_the_client():
    closed = []

    class Crashing(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            raise RuntimeError("auth backend down")

        def on_message(self, message):
            pass

        def on_close(self):
            closed.append(1)

    async def body():
        with captured_logs() as records:
            async with serve(Crashing) as (base, router):
                for transport, status in (("xhr-polling", 403), ("websocket", 1008)):
                    with pytest.raises(testing.ConnectionRefused) as refused:
                        await testing.connect(base, transport)
                    assert refused.value.status == status  # 1008: closed before the id
                assert len(router.sessions()) == 0
        assert sum("on_open" in r.getMessage() for r in tracebacks(records)) == 2
    run(body())
    assert closed == []


def test_messages_in_counts_each_message_once():
    class Slow(tornadio.SocketConnection):
        async def on_message(self, message):
            await asyncio.sleep(0.001)

    async def body():
        async with serve(Slow) as (base, router):
            client = await testing.connect(base)
            for _ in range(50):
                client.send(["a", "b"])  # one WebSocket message of two frames
            for _ in range(200):
                if router.sessions().messages_in >= 100:
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.05)
            assert router.sessions().messages_in == 100
            await client.close()
    run(body())
