"""The 2011 API one piece at a time: errors, warnings and refusals, over loopback sockets."""
import asyncio
import logging
import warnings

import pytest
import tornado.web
import tornado.websocket
from tornado.ioloop import IOLoop

import tornadio
from tornadio import testing
from support.wire import (Events, captured_logs, echo_connection, fetch, run,
                          serve, tracebacks)
from support_2011 import listening_sockets
from tornadio import session as sessions
from tornadio.conn import ConnectionFactory
from tornadio.flashserver import FlashPolicyServer
from tornadio.router import DEFAULT_SETTINGS
from tornadio.server import SocketServer, wants_policy_server

WAIT = 10.0


class Quiet(tornadio.SocketConnection):
    def on_message(self, message):
        pass


def errors(records):
    return [r for r in records if r.levelno >= logging.ERROR]


def session_of(connection_class, transport="websocket"):
    """A session (and its connection) outside any server, as the router would make it."""
    container = sessions.SessionContainer()
    session = sessions.Session(container, connection_class, transport, None, DEFAULT_SETTINGS)
    container.add(session)
    return session


async def ws_refused(base):
    """A WebSocket the server closes without a session id (the client is refused)."""
    ws = await asyncio.wait_for(
        tornado.websocket.websocket_connect(base.replace("http", "ws", 1) + "/socket.io/websocket"),
        WAIT)
    first = await asyncio.wait_for(ws.read_message(), WAIT)
    return first is None and ws.close_code == 1008


# -- get_router's first argument ------------------------------------------------------------
@pytest.mark.parametrize("not_a_factory", [42, "Quiet", None, object, dict])
def test_get_router_refuses_what_cannot_build_a_connection(not_a_factory):
    with pytest.raises(TypeError, match="SocketConnection"):
        tornadio.get_router(not_a_factory)


def test_get_router_refuses_a_connection_instance():
    async def body():
        with pytest.raises(TypeError, match="SocketConnection"):
            tornadio.get_router(session_of(Quiet).connection)
    run(body())


def test_get_router_refuses_a_factory_with_an_unusable_signature():
    with pytest.raises(TypeError, match="must accept"):
        tornadio.get_router(lambda: None)
    with pytest.raises(TypeError, match="must accept"):
        tornadio.get_router(lambda a, b: None)


def test_factory_is_called_with_the_session_or_the_2011_three():
    calls = []

    def one(session):
        calls.append(("one", session.id))
        return Quiet(session)

    def three(protocol, io_loop, heartbeat_interval):
        calls.append(("three", protocol.id, io_loop, heartbeat_interval))
        return Quiet(protocol, io_loop, heartbeat_interval)

    async def body():
        made = []
        for build in (one, three):
            session = session_of(ConnectionFactory(build, heartbeat_interval=7))
            assert type(session.connection) is Quiet
            made.append(session.id)
        return made, IOLoop.current()

    with captured_logs() as records:
        (first, second), loop = run(body())
    assert calls == [("one", first), ("three", second, loop, 7)]
    assert errors(records) == []


def test_router_from_a_factory_object_serves_clients():
    events = Events()
    Echo = echo_connection(events)

    class Factory:
        def __init__(self):
            self.built = 0

        def __call__(self, *args, **kwargs):
            self.built += 1
            return Echo(*args, **kwargs)

    factory = Factory()

    async def body():
        async with serve(factory) as (base, router):
            assert router.connection_class is factory
            assert router.socket_settings["broadcast_channel"] == Factory.__qualname__
            ws = await testing.connect(base); sid = ws.session_id
            ws.send_raw("~m~2~m~hi")
            assert await ws.receive() == "hi"
            await ws.close()
            await events.wait_for(lambda: events.closed)
            return sid

    with captured_logs() as records:
        sid = run(body())
    assert factory.built == 1 and events.closed == [sid]
    assert tracebacks(records) == []


class NotAConnection:
    def __init__(self, *args, **kwargs):
        pass


def raising_factory(*args):
    raise RuntimeError("the database is down")


class Hoarder:
    """Hands out the connection it built first, whoever asks."""

    def __init__(self):
        self.kept = None

    def __call__(self, session):
        if self.kept is None:
            self.kept = Quiet(session)
        return self.kept


@pytest.mark.parametrize("factory, words", [
    (lambda session: NotAConnection(), "returned NotAConnection, not a SocketConnection"),
    (raising_factory, "raised"),
    (Hoarder(), "connection of another session"),
], ids=["not-a-connection", "raises", "another-session"])
def test_a_factory_that_fails_refuses_the_client_with_one_error(factory, words):
    async def polling_refused():
        async with serve(factory) as (base, router):
            if isinstance(factory, Hoarder):
                factory.kept = None
                await testing.connect(base)  # its first connection is genuine
            response = await fetch("%s/socket.io/xhr-polling//1300000000000" % base)
            return response.code, len(router.sessions())

    async def websocket_refused():
        async with serve(factory) as (base, router):
            if isinstance(factory, Hoarder):
                factory.kept = None
                await testing.connect(base)  # its first connection is genuine
            return await ws_refused(base)

    with captured_logs() as records:
        assert run(websocket_refused())
    assert [words in r.getMessage() for r in errors(records)] == [True]
    with captured_logs() as records:
        genuine = 1 if isinstance(factory, Hoarder) else 0
        assert run(polling_refused()) == (403, genuine)
    assert [words in r.getMessage() for r in errors(records)] == [True]


# -- settings --------------------------------------------------------------------------------
def test_unknown_settings_are_kept_with_one_warning_naming_them():
    shared = {"socket_io_port": 8001, "socket_io_address": "127.0.0.1", "flash_policy_port": 843,
              "static_path": "/srv/static", "debug": True, "session_expiry": 5}
    with captured_logs(logging.WARNING) as records:
        router = tornadio.get_router(Quiet, shared)
    notes = [r.getMessage() for r in records if r.name == "tornadio.router"]
    assert len(notes) == 1
    assert "debug, static_path" in notes[0]
    assert "socket_io" not in notes[0] and "flash_policy" not in notes[0].split("(")[0]
    assert router.socket_settings["static_path"] == "/srv/static"
    assert router.socket_settings["session_expiry"] == 5
    with captured_logs(logging.WARNING) as records:
        tornadio.get_router(Quiet, {"socket_io_port": 8001})
    assert records == []


def test_wrong_values_of_known_settings_still_raise_next_to_unknown_ones():
    with pytest.raises(ValueError, match="heartbeat_interval"):
        tornadio.get_router(Quiet, {"static_path": "/srv", "heartbeat_interval": "12"})


# -- the connection object --------------------------------------------------------------------
def test_protocol_alias_reads_what_2011_code_read_and_warns_once_per_class():
    class First(Quiet):
        pass

    class Second(Quiet):
        pass

    async def body():
        a, b, c = session_of(First), session_of(First), session_of(Second)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            seen = [(s.connection._protocol.session_id, s.connection._protocol.is_closed)
                    for s in (a, b, c, a)]
            a.connection._protocol.send("sent through the alias")
            queued = list(a._queue)
            b.connection._protocol.close()
            closed = b.connection._protocol.is_closed
        return [s.id for s in (a, b, c, a)], seen, queued, closed, caught

    ids, seen, queued, closed, caught = run(body())
    assert seen == [(sid, False) for sid in ids]
    assert queued == ["~m~22~m~sent through the alias"]
    assert closed is True
    deprecations = [w for w in caught if issubclass(w.category, DeprecationWarning)]
    assert [("First" in str(w.message), "Second" in str(w.message)) for w in deprecations] == [
        (True, False), (False, True)]
    assert all(w.filename == __file__ for w in deprecations)


def test_is_closed_is_false_inside_on_close_and_send_there_is_quiet():
    seen = []

    class Leaving(tornadio.SocketConnection):
        def on_message(self, message):
            pass

        def on_close(self):
            seen.append(("inside", self.is_closed, self._tornadio_session.is_closed))
            seen.append(("send", self.send("too late")))

    async def body():
        async with serve(Leaving) as (base, router):
            ws = await testing.connect(base); sid = ws.session_id
            connection = router.sessions().get(sid).connection
            await ws.close()
            while not seen:
                await asyncio.sleep(0.01)
            return connection.is_closed

    with captured_logs(logging.DEBUG) as records:
        after = run(body())
    assert seen == [("inside", False, True), ("send", None)]
    assert after is True
    assert [r for r in records if r.levelno >= logging.WARNING] == []


def test_bytes_are_sent_as_text():
    async def body():
        session = session_of(Quiet)
        session.connection.send(b"caf\xc3\xa9")
        session.connection.send([b"a", "b"])
        with pytest.raises(tornadio.EncodeError, match="UTF-8"):
            session.connection.send(b"\xff")
        return list(session._queue)

    assert run(body()) == ["~m~4~m~café", "~m~1~m~a~m~1~m~b"]


def test_application_attributes_named_like_ours_break_nothing():
    class Shadowing(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            self.session = {"user": "ann"}   # e.g. a web framework's session
            self.transport = "mine"
            self.info = "app data"
            self.join("room")
            self.broadcast_to("room", "to the others")

        def on_message(self, message):
            self.send({"session": self.session, "transport": self.transport})

    async def body():
        async with serve(Shadowing) as (base, router):
            ws = await testing.connect(base); sid = ws.session_id
            ws.send_raw("~m~1~m~x")
            answer = [tuple(await ws.receive_frame())]
            assert router.broadcaster().members("room")[0].session_id == sid
            await ws.close()
            return answer

    with captured_logs() as records:
        answer = run(body())
    assert answer == [("json", {"session": {"user": "ann"}, "transport": "mine"})]
    assert tracebacks(records) == []


def test_2011_heartbeat_methods_and_raw_message():
    got = []

    class Old(tornadio.SocketConnection):
        def on_message(self, message):
            got.append(message)

    async def body():
        session = session_of(Old)
        await session.open(None, (), {})
        connection = session.connection
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for _ in range(2):
                connection.reset_heartbeat()
                connection.reset_heartbeat(5000)
                connection.delay_heartbeat()
                connection.send_heartbeat()
                connection.stop_heartbeat()
                connection.raw_message("~m~5~m~hello~m~10~m~~j~{\"a\":1}")
        return caught, list(session._queue), session.is_closed

    caught, queued, closed = run(body())
    names = sorted(str(w.message).split(" ")[0].rpartition("<locals>.")[2] for w in caught
                   if issubclass(w.category, DeprecationWarning))
    assert names == ["Old.delay_heartbeat", "Old.raw_message", "Old.reset_heartbeat",
                     "Old.send_heartbeat", "Old.stop_heartbeat"]
    assert got == ["hello", {"a": 1}] * 2
    assert len(queued) == 1 and not closed  # only the session id: no stray heartbeat frames


# -- SocketServer and the Flash policy listener ------------------------------------------------
@pytest.mark.parametrize("settings, wanted", [
    ({}, False),
    ({"socket_io_port": 8001}, False),
    ({"flash_policy_port": 10843}, True),
    ({"flash_policy_file": "/etc/flashpolicy.xml"}, True),
    ({"flash_policy_port": 10843, "flash_policy_server": False}, False),
    ({"flash_policy_server": True}, True),
])
def test_policy_listener_only_when_asked_for(settings, wanted):
    assert wants_policy_server(settings) is wanted


def app_with(**settings):
    router = tornadio.get_router(Quiet)
    return tornado.web.Application([router.route()], socket_io_port=0, **settings)


async def policy_answer(port):
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), WAIT)
    try:
        writer.write(b"<policy-file-request/>\0")
        return await asyncio.wait_for(reader.read(), WAIT)
    finally:
        writer.close()


def test_policy_listener_binds_socket_io_address():
    async def body():
        before = listening_sockets()
        server = SocketServer(app_with(socket_io_address="127.0.0.1", flash_policy_port=0),
                              auto_start=False)
        try:
            opened = listening_sockets() - before
            assert server.policy_server is not None and server.policy_server.listening
            assert opened == {("127.0.0.1", server.port), ("127.0.0.1", server.policy_server.port)}
            assert (await policy_answer(server.policy_server.port)).startswith(b"<?xml")
            assert (await policy_answer(server.port)).startswith(b"<?xml")
        finally:
            server.stop()
    run(body())


def test_no_policy_listener_without_flash_settings():
    async def body():
        before = listening_sockets()
        server = SocketServer(app_with(socket_io_address="127.0.0.1"), auto_start=False)
        try:
            assert server.policy_server is None
            assert listening_sockets() - before == {("127.0.0.1", server.port)}
            assert (await policy_answer(server.port)).startswith(b"<?xml")  # inline stays on
        finally:
            server.stop()
    run(body())


def test_flash_policy_server_takes_the_2011_io_loop_argument():
    async def body():
        server = FlashPolicyServer(io_loop=IOLoop.current(), port=0, address="127.0.0.1")
        try:
            return server.listening, await policy_answer(server.port)
        finally:
            server.stop()

    listening, answer = run(body())
    assert listening and answer.startswith(b"<?xml") and answer.endswith(b"\0")
