"""Broadcasts and groups inside one process, with a real server and real clients.

send_all reaches clients of all six transports (``tornadio.testing`` for
websocket and the polling transports, the hand-made clients of
scaling_clients.py for the others); groups, exclusions and leave-on-close are
checked over websocket and xhr-polling.

Server and clients share one asyncio loop (``asyncio.run`` per test): server-side
objects are touched directly, every wait is bounded.
"""
import asyncio
import contextlib
import json
import os
import sys
import time
import types

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.web import Application

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tornadio  # noqa: E402
from tornadio import broadcast, proto, session as sessions  # noqa: E402
from tornadio.stats import StatsHandler  # noqa: E402
from scaling_clients import WAIT, close_all, connect, drain  # noqa: E402

FAST = {
    "session_check_interval": 0.1,
    "session_expiry": 1.0,
    "heartbeat_interval": 1.0,
    "xhr_polling_timeout": 0.5,
}
TEST_TIMEOUT = 30


class Member(tornadio.SocketConnection):
    def on_message(self, message):
        if isinstance(message, dict) and "shout" in message:
            self.broadcast({"from": self.session_id, "shout": message["shout"]},
                           include_self=message.get("include_self", False))


def run(test, timeout=TEST_TIMEOUT):
    async def bounded():
        return await asyncio.wait_for(test(), timeout)
    return asyncio.run(bounded())


@contextlib.asynccontextmanager
async def serving(**settings):
    merged = dict(FAST)
    merged.update(settings)
    router = tornadio.get_router(Member, merged, resource="socket.io")
    app = Application([router.route(), (r"/stats", StatsHandler, {"router": router})])
    sock, port = bind_unused_port(address="127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets([sock])
    clients = []
    try:
        yield types.SimpleNamespace(router=router, port=port, clients=clients,
                                    broadcaster=router.broadcaster())
    finally:
        await close_all(clients)
        router.sessions().close_all()
        server.stop()
        try:
            await asyncio.wait_for(server.close_all_connections(), WAIT)
        except asyncio.TimeoutError:
            pass


async def join_clients(srv, *kinds):
    clients = []
    for kind in kinds:
        client = await connect(kind, srv.port)
        srv.clients.append(client)
        clients.append(client)
    return clients


def with_server(*kinds, **settings):
    """Decorator for a test ``async def test_x(srv, *clients)``: it runs bounded
    (``run``) inside ``serving(**settings)``, given clients of ``kinds``, joined in order."""
    def decorate(body):
        def test_function():
            async def test():
                async with serving(**settings) as srv:
                    await body(srv, *await join_clients(srv, *kinds))
            run(test)
        test_function.__name__ = test_function.__qualname__ = body.__name__
        test_function.__doc__ = body.__doc__
        return test_function
    return decorate


def conn_of(srv, client):
    return srv.router.sessions().get(client.session_id).connection


async def until(predicate, timeout=WAIT, what="condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(0.02)


async def assert_nothing_more(clients, duration=0.4):
    extra = await asyncio.gather(*(drain(client, duration) for client in clients))
    assert extra == [[] for _ in clients], "unexpected extra messages: %r" % (extra,)


ALL_KINDS = ("websocket", "flashsocket", "xhr-polling", "jsonp-polling", "htmlfile",
             "xhr-multipart")


def test_send_all_reaches_every_client_once_encoded_once(monkeypatch):
    encodes = []
    handed = []
    real_encode = proto.encode
    real_send_payload = sessions.Session.send_payload

    def counting_encode(value):
        encodes.append(value)
        return real_encode(value)

    def recording_send_payload(self, payload):
        handed.append(payload)
        return real_send_payload(self, payload)

    async def test():
        async with serving() as srv:
            clients = await join_clients(srv, "websocket", "websocket", *ALL_KINDS[1:])
            monkeypatch.setattr(proto, "encode", counting_encode)
            monkeypatch.setattr(sessions.Session, "send_payload", recording_send_payload)
            delivery = srv.broadcaster.send_all({"news": "héllo 😀"})
            monkeypatch.undo()
            assert encodes == [{"news": "héllo 😀"}]
            assert len(handed) == len(clients)
            assert all(payload is handed[0] for payload in handed), "frames re-encoded per session"
            assert delivery.local == len(clients)
            assert delivery.done() and delivery.remote is None
            assert (await delivery) is delivery
            for client in clients:
                assert await client.receive() == {"news": "héllo 😀"}, client.transport
            await assert_nothing_more(clients)
    run(test)


@with_server("websocket", "xhr-polling")
async def test_send_all_keeps_order(srv, *clients):
    for n in range(100):
        srv.broadcaster.send_all(n)
        if n % 10 == 0:
            await asyncio.sleep(0)
    for client in clients:
        got = [await client.receive() for _ in range(100)]
        assert got == list(range(100)), client.transport
    await assert_nothing_more(clients)


@with_server("websocket", "xhr-polling", "websocket")
async def test_exclusions_and_connection_broadcast(srv, ws, poll, ws2):
    b = srv.broadcaster
    b.send_all("a", exclude=[conn_of(srv, ws)])
    b.send_all("b", exclude=poll.session_id)
    b.send_all("c", exclude={ws.session_id, srv.router.sessions().get(ws2.session_id)})
    assert [await ws.receive()] == ["b"]
    assert [await poll.receive(), await poll.receive()] == ["a", "c"]
    assert [await ws2.receive(), await ws2.receive()] == ["a", "b"]
    await assert_nothing_more([ws, poll, ws2])

    # SocketConnection.broadcast: others only, unless include_self.
    await poll.send({"shout": "hi"})
    for client in (ws, ws2):
        assert await client.receive() == {"from": poll.session_id, "shout": "hi"}
    await ws.send({"shout": "me too", "include_self": True})
    for client in (ws, poll, ws2):
        assert await client.receive() == {"from": ws.session_id, "shout": "me too"}
    await assert_nothing_more([ws, poll, ws2])


@with_server("websocket", "xhr-polling", "websocket")
async def test_groups_join_leave_send_group(srv, ws, poll, other):
    b = srv.broadcaster
    a, c = conn_of(srv, ws), conn_of(srv, poll)
    assert a.join("room") is True
    assert a.join("room") is False
    assert b.join(c, "room") is True
    assert c.join("lobby") is True
    assert b.members("room") == [a, c]
    assert b.groups_of(c) == {"room", "lobby"}
    assert sorted(b.groups()) == ["lobby", "room"]

    assert b.send_group("room", "to room").local == 2
    assert await ws.receive() == "to room"
    assert await poll.receive() == "to room"

    delivery = a.broadcast_to("room", {"from": "a"})
    assert delivery.local == 1
    assert await poll.receive() == {"from": "a"}
    assert a.broadcast_to("room", "all of us", include_self=True).local == 2
    assert await ws.receive() == "all of us"
    assert await poll.receive() == "all of us"

    assert c.leave("room") is True
    assert c.leave("room") is False
    assert b.members("room") == [a]
    assert b.send_group("room", "only a").local == 1
    assert await ws.receive() == "only a"
    assert b.send_group("nobody", "x").local == 0
    await assert_nothing_more([ws, poll, other])

    with pytest.raises(TypeError):
        a.join(42)
    with pytest.raises(TypeError):
        b.send_group("", "x")


@with_server("websocket", "xhr-polling", "websocket")
async def test_closed_connections_leave_every_group(srv, ws, poll, stay):
    b = srv.broadcaster
    a, c, s = conn_of(srv, ws), conn_of(srv, poll), conn_of(srv, stay)
    for conn in (a, c, s):
        conn.join("room")
    a.join("side")
    c.join("side")

    await ws.close()  # websocket: the session ends with the socket
    await until(lambda: a.is_closed, what="websocket session closed")
    assert b.groups_of(a) == frozenset()
    assert b.members("room") == [c, s]
    assert a.join("room") is False

    await poll.close()  # polling: the session expires (session_expiry 1 s)
    await until(lambda: c.is_closed, timeout=5, what="polling session expired")
    assert b.members("room") == [s]
    assert "side" not in b.groups()
    assert b.send_group("room", "left?").local == 1
    assert await stay.receive() == "left?"

    # Server-side close too.
    s.close()
    assert b.members("room") == [] and b.groups() == []


@with_server("websocket")
async def test_unsendable_message_delivers_nothing(srv, ws):
    with pytest.raises(tornadio.EncodeError):
        srv.broadcaster.send_all(float("nan"))
    with pytest.raises(tornadio.EncodeError):
        srv.broadcaster.send_all("~h~1")
    assert srv.broadcaster.send_all([]).local == 0
    await assert_nothing_more([ws])


@with_server("websocket", "xhr-polling", session_expiry=5.0, stats_window=5)
async def test_stats_dict_and_handler(srv, ws, poll):
    idle = await connect("xhr-polling", srv.port)
    srv.clients.append(idle)
    await idle.close()  # stops reading; its session lives until expiry
    first = srv.router.stats()
    assert first["sessions"] == 3
    assert first["sessions_by_transport"]["websocket"] == 1
    assert first["sessions_by_transport"]["xhr-polling"] == 2
    assert first["opened_total"] == 3 and first["closed_total"] == 0

    for n in range(50):
        srv.broadcaster.send_all("m%d" % n)
        await ws.send("in%d" % n)
    for client in (ws, poll):
        for _ in range(50):
            await client.receive()
    await until(lambda: srv.router.sessions().messages_in >= 50, what="messages in")
    await asyncio.sleep(1.2)  # one more sample
    stats = srv.router.stats()
    assert stats["messages_out_total"] >= 150
    assert stats["messages_in_total"] == 50
    assert stats["messages_out_per_second"] > 0
    assert stats["messages_in_per_second"] > 0
    assert 0 < stats["rate_window_seconds"] <= 5.5
    # The idle session holds what it was sent: that is the queue depth.
    idle_queue = srv.router.sessions().get(idle.session_id).queued_bytes
    assert idle_queue > 0
    assert stats["queued_bytes_max"] == idle_queue
    assert stats["queued_bytes_total"] >= idle_queue
    assert stats["broadcast"]["broadcasts"] == 50
    assert stats["broadcast"]["backend"] is None

    http = AsyncHTTPClient(force_instance=True)
    try:
        response = await http.fetch("http://127.0.0.1:%d/stats" % srv.port,
                                    request_timeout=WAIT)
    finally:
        http.close()
    assert response.headers["Content-Type"].startswith("application/json")
    served = json.loads(response.body)
    assert served["sessions"] == 3 and served["pid"] == os.getpid()
    assert set(served) == set(stats)

    await ws.close()
    await until(lambda: srv.router.stats()["closed_total"] == 1, what="close counted")


@pytest.mark.parametrize("settings", [
    {"broadcast_backend": object()},
    {"broadcast_backend": broadcast.BroadcastBackend},
    {"broadcast_channel": ""},
    {"broadcast_channel": 5},
    {"stats_window": 0},
    {"stats_window": "10"},
])
def test_settings_validation(settings):
    with pytest.raises(ValueError):
        tornadio.get_router(Member, settings)


def test_router_owns_one_broadcaster_each():
    r1 = tornadio.get_router(Member)
    r2 = tornadio.get_router(Member, {"broadcast_channel": "other"})
    assert r1.broadcaster() is r1.broadcaster()
    assert r1.broadcaster() is not r2.broadcaster()
    assert r1.broadcaster().channel == "Member"
    assert r2.broadcaster().channel == "other"
