"""tornadio.testing: the client against a real server on loopback, over every transport it speaks.

Also the helpers that serve an app (``serve``, ``SocketIOTestCase``) and the
command line, run as a real subprocess with stdin piped.
"""
import asyncio
import json
import os
import re
import socket
import sys

import pytest
import tornado.testing
import tornado.web

import tornadio
from tornadio import proto, testing
from support.wire import Events, echo_connection, run

TRANSPORTS = testing.TRANSPORTS
#: Short timers, so that expiry and heartbeats happen within a test.
FAST = {"xhr_polling_timeout": 0.5, "session_expiry": 0.5, "session_check_interval": 0.1}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def app_for(connection_class, settings=None, **router_kwargs):
    router = tornadio.get_router(connection_class, dict(FAST, **(settings or {})), **router_kwargs)
    return tornado.web.Application([router.route()]), router


# -- messages both ways ---------------------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_echo_of_text_json_lists_and_unicode(transport):
    events = Events()
    sent = ["hello", "", "héllo 😀 𝄞", "line\nbreak", "\u2028\u2029 </script>", "a~m~b",
            {"a": 1, "b": [True, None, 1.5]}, 42, None, (1, 2)]

    async def body():
        app, router = app_for(echo_connection(events))
        async with testing.serve(app) as base:
            async with testing.connect(base, transport) as client:
                assert client.session_id == events.connections[0].session_id
                for value in sent:
                    client.send(value)
                # The echo of the JSON array [1, 2] is a list: two messages.
                got = [await client.receive_frame() for _ in range(len(sent) + 1)]
                # A list is one message per item, each echoed on its own.
                await client.send(["x", {"y": 2}])
                got += [await client.receive_frame(), await client.receive_frame()]
                return got
    got = run(body())
    expected_server = ["hello", "", "héllo 😀 𝄞", "line\nbreak", "\u2028\u2029 </script>", "a~m~b",
                       {"a": 1, "b": [True, None, 1.5]}, 42, None, [1, 2], "x", {"y": 2}]
    assert events.messages == expected_server
    text, as_json = proto.TEXT, proto.JSON
    assert got == [(text, "hello"), (text, ""), (text, "héllo 😀 𝄞"), (text, "line\nbreak"),
                   (text, "\u2028\u2029 </script>"), (text, "a~m~b"),
                   (as_json, {"a": 1, "b": [True, None, 1.5]}), (as_json, 42), (as_json, None),
                   (as_json, 1), (as_json, 2), (text, "x"), (as_json, {"y": 2})]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_messages_sent_without_waiting_arrive_once_and_in_order(transport):
    events = Events()

    async def body():
        app, _ = app_for(echo_connection(events))
        async with testing.serve(app) as base:
            async with testing.connect(base, transport) as client:
                for i in range(300):
                    client.send("m%d" % i)
                got = [await client.receive() for _ in range(300)]
                assert got == ["m%d" % i for i in range(300)]
                with pytest.raises(testing.ReceiveTimeout):
                    await client.receive(timeout=0.3)  # nothing was duplicated
    run(body())
    assert events.messages == ["m%d" % i for i in range(300)]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_what_on_open_sends_arrives_first(transport):
    class Greeter(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            self.send({"welcome": self.transport})

        def on_message(self, message):
            pass

    async def body():
        app, _ = app_for(Greeter)
        async with testing.serve(app) as base:
            async with testing.connect(base, transport) as client:
                assert await client.receive() == {"welcome": transport}
    run(body())


def test_values_the_protocol_cannot_carry_are_refused_at_send():
    async def body():
        app, _ = app_for(echo_connection(Events()))
        async with testing.serve(app) as base:
            async with testing.connect(base) as client:
                for bad in (float("nan"), {1, 2}, "~h~1", "\ud800"):
                    with pytest.raises(proto.EncodeError):
                        client.send(bad)
                client.send("still open")
                assert await client.receive() == "still open"
    run(body())


@pytest.mark.parametrize("transport", ["xhr-polling", "jsonp-polling"])
def test_a_refused_post_fails_its_send_and_the_session_lives(transport):
    async def body():
        app, _ = app_for(echo_connection(Events()), {"session_expiry": 5})
        async with testing.serve(app) as base:
            async with testing.connect(base, transport) as client:
                with pytest.raises(testing.SendRefused) as refused:
                    await client.send_raw("~m~99~m~truncated")
                assert refused.value.status == 400
                await client.send("fine")
                assert await client.receive() == "fine"
    run(body())


# -- heartbeats -------------------------------------------------------------------
def test_heartbeats_are_answered_and_keep_the_websocket_open():
    events = Events()

    async def body():
        app, _ = app_for(echo_connection(events), {"heartbeat_interval": 0.1})
        async with testing.serve(app) as base:
            async with testing.connect(base) as client:
                # Heartbeat N+1 is only sent after the echo of N came back in time.
                assert await client.wait_heartbeats(4) >= 4
                assert not events.closed and not client.closed
                client.send("after heartbeats")
                assert await client.receive() == "after heartbeats"
    run(body())


def test_unanswered_heartbeats_let_the_server_close():
    events = Events()

    async def body():
        app, _ = app_for(echo_connection(events), {"heartbeat_interval": 0.1})
        async with testing.serve(app) as base:
            async with testing.connect(base, answer_heartbeats=False) as client:
                closed = await client.wait_closed()
                assert client.heartbeats == 1
                assert "server" in closed.reason
                await events.wait_for(lambda: events.closed)
    run(body())


# -- endings ----------------------------------------------------------------------
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_server_close_is_seen_after_the_last_words(transport):
    events = Events()

    async def body():
        app, _ = app_for(echo_connection(events), {"xhr_polling_timeout": 5})
        async with testing.serve(app) as base:
            async with testing.connect(base, transport) as client:
                conn = events.connections[0]
                conn.send("bye")
                conn.close()
                assert await client.receive() == "bye"
                with pytest.raises(testing.ConnectionClosed) as closed:
                    await client.receive()
                if transport != "websocket":
                    assert closed.value.code == 401  # the next poll found the session gone
                assert client.closed
                with pytest.raises(testing.ConnectionClosed):
                    client.send("too late")
    run(body())
    assert len(events.closed) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_close_ends_the_server_session(transport):
    events = Events()

    class Listener(tornadio.SocketConnection):
        def on_message(self, message):
            events.note(events.messages, message)

        def on_close(self):
            events.note(events.closed, self.session_id)

    async def body():
        app, router = app_for(Listener)
        async with testing.serve(app) as base:
            client = await testing.connect(base, transport)
            client.send("last")
            await client.close()  # flushes "last" first
            await client.close()  # idempotent
            # websocket: at once; polling: when the session expires (no goodbye in 0.6).
            await events.wait_for(lambda: events.closed, timeout=5)
            assert events.messages == ["last"]
            assert len(router.sessions()) == 0
            with pytest.raises(testing.ConnectionClosed, match="closed by the client"):
                await client.receive()
    run(body())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_receive_timeout_leaves_the_connection_usable(transport):
    async def body():
        app, _ = app_for(echo_connection(Events()))
        async with testing.serve(app) as base:
            async with testing.connect(base, transport) as client:
                with pytest.raises(testing.ReceiveTimeout):
                    await client.receive(timeout=0.2)
                with pytest.raises(asyncio.TimeoutError):  # it is one, for generic code
                    await client.receive(timeout=0.05)
                client.send("still here")
                assert await client.receive() == "still here"
    run(body())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_refusal_by_on_open_is_a_clear_exception(transport):
    class Doorman(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            return request.headers.get("X-Ticket") == "ok"

        def on_message(self, message):
            pass

    async def body():
        app, _ = app_for(Doorman)
        async with testing.serve(app) as base:
            with pytest.raises(testing.ConnectionRefused) as refused:
                await testing.connect(base, transport)
            assert refused.value.status == (1008 if transport == "websocket" else 403)
            async with testing.connect(base, transport, headers={"X-Ticket": "ok"}) as client:
                assert client.session_id
    run(body())


def test_nothing_listening_is_connection_refused():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there

    async def body():
        for transport in TRANSPORTS:
            with pytest.raises(testing.ConnectionRefused) as refused:
                await testing.connect("http://127.0.0.1:%d" % port, transport, timeout=2)
            assert refused.value.status is None
    run(body())


def test_abort_is_a_network_failure_for_the_server():
    events = Events()

    async def body():
        app, _ = app_for(echo_connection(events))
        async with testing.serve(app) as base:
            client = await testing.connect(base)
            client.abort()
            await events.wait_for(lambda: events.closed)
            with pytest.raises(testing.ConnectionClosed, match="aborted"):
                await client.receive()
            await client.close()
    run(body())


def test_resource_and_extra_reach_on_open():
    seen = []

    class Room(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            seen.append(kwargs["extra"])

        def on_message(self, message):
            self.send(message)

    async def body():
        app, _ = app_for(Room, resource="chat", extra_re=r"\d+", extra_sep="/")
        async with testing.serve(app) as base:
            for transport in TRANSPORTS:
                async with testing.connect(base, transport, resource="chat/7") as client:
                    client.send(transport)
                    assert await client.receive() == transport
    run(body())
    assert seen == ["7", "7", "7"]


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="transport"):
        testing.connect("http://127.0.0.1:1", "flashsocket")
    with pytest.raises(ValueError, match="url"):
        testing.connect("ftp://127.0.0.1:1")
    with pytest.raises(ValueError, match="source_ip"):
        testing.connect("http://127.0.0.1:1", source_ip="localhost")
    with pytest.raises(TypeError, match="balancer"):
        testing.connect("http://127.0.0.1:1", balancer="127.0.0.1:8001")


# -- where the requests come from and go to ------------------------------------------
class WhereFrom(tornadio.SocketConnection):
    """Tells the client the address and Host header its handshake came with; echoes."""

    def on_open(self, request, *args, **kwargs):
        self.send({"remote_ip": request.remote_ip, "host": request.host})

    def on_message(self, message):
        self.send(message)


def logged_app(router, log):
    """An app for ``router`` that notes the client address of every request it finished."""
    return tornado.web.Application(
        [router.route()], log_function=lambda handler: log.append(handler.request.remote_ip))


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_source_ip_is_the_address_every_request_comes_from(transport):
    log = []

    async def body():
        router = tornadio.get_router(WhereFrom, FAST)
        async with testing.serve(logged_app(router, log)) as base:
            async with testing.connect(base, transport) as plain:
                assert (await plain.receive())["remote_ip"] == "127.0.0.1"
            del log[:]
            async with testing.connect(base, transport, source_ip="127.0.0.2") as client:
                assert (await client.receive())["remote_ip"] == "127.0.0.2"
                for n in range(3):
                    await client.send(n)
                    assert await client.receive() == n
                if transport != "websocket":
                    # The first GET, the POSTs and the polls answered meanwhile.
                    assert len(log) >= 4, log
    run(body())
    assert log and set(log) == {"127.0.0.2"}, log


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_balancer_decides_where_each_request_goes(transport):
    """Two listeners of one router, requests sent to each in turn: the session
    lives across them, and the url's host (which does not resolve) is only the
    Host header."""
    served = {"a": [], "b": []}
    calls = []

    async def body():
        router = tornadio.get_router(WhereFrom, FAST)
        async with testing.serve(logged_app(router, served["a"])) as base_a, \
                testing.serve(logged_app(router, served["b"])) as base_b:
            ports = [int(base.rsplit(":", 1)[1]) for base in (base_a, base_b)]

            def round_robin(method, path):
                port = ports[len(calls) % 2]
                calls.append((method, path, port))
                return "127.0.0.1", port

            async with testing.connect("http://app.example:8123", transport, timeout=5,
                                       balancer=round_robin) as client:
                assert (await client.receive())["host"] == "app.example:8123"
                for n in range(4):
                    await client.send(n)
                    assert await client.receive() == n
    run(body())
    method, path, port = calls[0]
    assert method == "GET" and path.startswith("/socket.io/%s" % transport)
    if transport == "websocket":
        assert len(calls) == 1  # one upgrade; the rest is WebSocket frames
        assert served["b"] == []
    else:
        assert path.startswith("/socket.io/%s//" % transport)  # the first GET
        posts = [call for call in calls if call[0] == "POST"]
        assert len(posts) == 4
        tail = r"/send" if transport == "xhr-polling" else r"/\d+/0"
        assert all(re.fullmatch(r"/socket\.io/%s/\w+%s" % (transport, tail), path)
                   for _, path, _ in posts), posts
        # Each listener finished requests of the session (not only the one it opened).
        assert len(served["a"]) >= 2 and len(served["b"]) >= 2, served


def test_a_failing_balancer_is_a_request_without_answer():
    def nowhere(method, path):
        raise RuntimeError("no backend for %s" % method)

    async def body():
        router = tornadio.get_router(WhereFrom, FAST)
        async with testing.serve(router) as base:
            address = ("127.0.0.1", int(base.rsplit(":", 1)[1]))
            for transport in TRANSPORTS:
                with pytest.raises(testing.ConnectionRefused, match="no backend for GET"):
                    await testing.connect(base, transport, balancer=nowhere)

            def no_posts(method, path):
                return nowhere(method, path) if method == "POST" else address

            async with testing.connect(base, "xhr-polling", balancer=no_posts) as client:
                await client.receive()
                with pytest.raises(testing.SendRefused, match="no backend for POST"):
                    await client.send("lost")
                assert not client.closed  # only that request failed
    run(body())


# -- the example from the docs: a chat room -----------------------------------------
class ChatRoom(tornadio.SocketConnection):
    """Nick first, then every line goes to everyone; joins and leaves are announced."""

    def on_open(self, request, *args, **kwargs):
        self.nick = None
        self.send({"hello": "say your nick"})

    def on_message(self, message):
        if self.nick is None:
            self.nick = str(message)
            self.broadcast({"joined": self.nick}, include_self=True)
        else:
            self.broadcast({"from": self.nick, "text": message}, include_self=True)

    def on_close(self):
        if self.nick is not None:
            self.broadcast({"left": self.nick})


def test_chat_room_over_websocket_and_xhr_polling():
    async def body():
        router = tornadio.get_router(ChatRoom, {"session_expiry": 0.5, "session_check_interval": 0.1,
                                                "xhr_polling_timeout": 0.5})
        async with testing.serve(router) as url:
            async with testing.connect(url) as ann, testing.connect(url, "xhr-polling") as bob:
                assert await ann.receive() == {"hello": "say your nick"}
                assert await bob.receive() == {"hello": "say your nick"}
                ann.send("ann")
                assert await ann.receive() == {"joined": "ann"}
                assert await bob.receive() == {"joined": "ann"}
                bob.send("bob")
                assert await ann.receive() == {"joined": "bob"}
                assert await bob.receive() == {"joined": "bob"}
                bob.send("héllo 😀")
                assert await ann.receive() == {"from": "bob", "text": "héllo 😀"}
                assert await bob.receive() == {"from": "bob", "text": "héllo 😀"}
                await bob.close()
                # No goodbye in Socket.IO 0.6: bob's session ends when it expires.
                assert await ann.receive(timeout=5) == {"left": "bob"}
    run(body())


class ChatRoomTest(testing.SocketIOTestCase):
    """The same room, written as an AsyncHTTPTestCase."""

    def get_app(self):
        return tornado.web.Application([tornadio.get_router(ChatRoom).route()])

    @tornado.testing.gen_test(timeout=10)
    async def test_two_polling_clients_talk(self):
        async with self.connect("jsonp-polling") as ann, self.connect("xhr-polling") as bob:
            self.assertEqual(await ann.receive(), {"hello": "say your nick"})
            self.assertEqual(await bob.receive(), {"hello": "say your nick"})
            ann.send("ann")
            self.assertEqual(await ann.receive(), {"joined": "ann"})
            self.assertEqual(await bob.receive(), {"joined": "ann"})
            ann.send("line 1\nline 2")  # the jsonp form sends CRLF; the server restores LF
            for client in (ann, bob):
                self.assertEqual(await client.receive(), {"from": "ann", "text": "line 1\nline 2"})


# -- the command line ------------------------------------------------------------------
class CliGreeter(tornadio.SocketConnection):
    def on_open(self, request, *args, **kwargs):
        self.send({"hello": "cli", "n": 1})

    def on_message(self, message):
        if message == "quit":
            self.close()
        else:
            self.send(message)


async def run_cli(base, *args, stdin_lines=(), expect_lines=0, close_stdin=True):
    """Run the command line; stdin is closed only once ``expect_lines`` lines were printed."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tornadio.testing", base, "--linger", "0.5", *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
    try:
        for line in stdin_lines:
            process.stdin.write((line + "\n").encode("utf-8"))
        await process.stdin.drain()
        printed = []
        for _ in range(expect_lines):
            printed.append(await asyncio.wait_for(process.stdout.readline(), 20))
        if close_stdin:
            process.stdin.close()
        stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, b"".join(printed + [stdout]).decode("utf-8"), stderr.decode("utf-8")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_cli_sends_stdin_lines_and_prints_messages(transport):
    events = Events()

    class Recorded(CliGreeter):
        def on_message(self, message):
            events.note(events.messages, message)
            super().on_message(message)

    async def body():
        app, _ = app_for(Recorded)
        async with testing.serve(app) as base:
            return await run_cli(base, "--transport", transport,
                                 stdin_lines=["hello", "héllo 😀", '{"as": "text"}'], expect_lines=4)
    code, out, err = run(body())
    assert code == 0, err
    assert out.splitlines() == ['{"hello": "cli", "n": 1}', "hello", "héllo 😀", '{"as": "text"}']
    assert events.messages == ["hello", "héllo 😀", '{"as": "text"}']
    assert "connected over %s" % transport in err


def test_cli_json_mode_sends_values():
    async def body():
        app, _ = app_for(echo_connection(Events()))
        async with testing.serve(app) as base:
            return await run_cli(base, "--json", stdin_lines=['{"a": [1, 2]}', '"text"', "not json"],
                                 expect_lines=2)
    code, out, err = run(body())
    assert code == 0, err
    assert out.splitlines() == ['{"a": [1, 2]}', "text"]
    assert "not sent" in err


def test_cli_reports_a_server_close_and_a_refusal():
    class Refuser(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            return False

        def on_message(self, message):
            pass

    async def body():
        app, _ = app_for(CliGreeter)
        async with testing.serve(app) as base:
            closed = await run_cli(base, "-t", "xhr-polling", stdin_lines=["quit"], close_stdin=False)
        app, _ = app_for(Refuser)
        async with testing.serve(app) as base:
            refused = await run_cli(base)
        return closed, refused
    (code, out, err), (refused_code, _, refused_err) = run(body())
    assert code == 1 and "401" in err
    assert out.splitlines() == ['{"hello": "cli", "n": 1}']
    assert refused_code == 2 and "refused" in refused_err


def test_cli_connects_from_the_source_ip_it_is_given():
    async def body():
        router = tornadio.get_router(WhereFrom, FAST)
        async with testing.serve(logged_app(router, [])) as base:
            from_two = await run_cli(base, "-t", "xhr-polling", "--source-ip", "127.0.0.2",
                                     stdin_lines=["ping"], expect_lines=2)
            bad = await run_cli(base, "--source-ip", "localhost")
        return from_two, bad
    (code, out, err), (bad_code, _, bad_err) = run(body())
    assert code == 0, err
    first, echoed = out.splitlines()
    assert json.loads(first)["remote_ip"] == "127.0.0.2" and echoed == "ping"
    assert bad_code == 2 and "source_ip must be an IP address" in bad_err


# -- serve() ----------------------------------------------------------------------------
def test_serve_closes_the_sessions_it_served_and_stops_listening():
    events = Events()

    async def body():
        app, _ = app_for(echo_connection(events))
        async with testing.serve(app) as base:
            client = await testing.connect(base)
            polling = await testing.connect(base, "xhr-polling")
        assert len(events.closed) == 2  # on_close ran for both on the way out
        with pytest.raises(testing.ConnectionClosed):
            await client.receive()
        await client.close()
        await polling.close()
        with pytest.raises(testing.ConnectionRefused):
            await testing.connect(base, "xhr-polling", timeout=2)
    run(body())


def test_serve_needs_an_application_or_a_router():
    async def body():
        with pytest.raises(TypeError):
            async with testing.serve(object()):
                pass
    run(body())

