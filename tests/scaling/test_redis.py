"""Two TornadIO processes joined by a real redis-server (started here, on a free port).

Clients on each process over websocket and xhr-polling. Broadcasts and group
messages from either process reach exactly the right clients of both, once
each, in order per sender; exclusions hold across processes. Killing Redis mid
test: local delivery goes on, remote delivery is reported as not done, one
warning per outage, and remote delivery resumes when Redis is back.
"""
import asyncio
import os
import re
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scaling_clients import close_all, connect, drain  # noqa: E402
from scaling_procs import (RedisServer, control, find_binary, node_stats,  # noqa: E402
                           redis_server_fixture, start_nodes)

REDIS_SERVER = find_binary("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server binary not found (scripts/setup.sh --services installs it)")

TEST_TIMEOUT = 90
WARNING_LINE = re.compile(
    r"^WARNING tornadio\.redis: redis broadcast: (lost connection|cannot connect)", re.M)
RECOVERY_LINE = re.compile(r"^INFO tornadio\.redis: redis broadcast: reconnected", re.M)


def run(test, timeout=TEST_TIMEOUT):
    async def bounded():
        return await asyncio.wait_for(test(), timeout)
    return asyncio.run(bounded())


redis_server = redis_server_fixture(REDIS_SERVER)


@pytest.fixture
def nodes(tmp_path, redis_server):
    started = start_nodes(tmp_path, 2, redis_server.url)
    try:
        yield started
    finally:
        for node in started:
            node.stop()
        for node in started:  # shown by pytest when the test failed
            print("---- %s stderr ----\n%s" % (node.name, node.stderr()[-4000:]))


async def clients_on(nodes):
    """ws and polling clients on each node, hello checked: {(node index, kind): client}."""
    clients = {}
    for index, node in enumerate(nodes):
        for kind in ("websocket", "xhr-polling"):
            client = await connect(kind, node.port)
            hello = await client.receive()
            assert hello["hello"]["port"] == node.port
            assert hello["hello"]["sid"] == client.session_id
            clients[index, kind] = client
    return clients


async def wait_backend(node, connected, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        state = (await node_stats(node.port))["broadcast"]["backend_state"]
        if state["connected"] == connected:
            return state
        if time.monotonic() > deadline:
            raise AssertionError("%s: backend connected=%r, wanted %r" % (
                node.name, state["connected"], connected))
        await asyncio.sleep(0.05)


async def expect_each(clients, message):
    for client in clients:
        got = await client.receive()
        assert got == message, "%s got %r, wanted %r" % (client.transport, got, message)


async def expect_silence(clients, duration=0.5):
    extra = await asyncio.gather(*(drain(client, duration) for client in clients))
    assert extra == [[] for _ in clients], "unexpected messages: %r" % (extra,)


def test_broadcasts_and_groups_across_two_processes(nodes):
    n1, n2 = nodes

    async def test():
        c = await clients_on(nodes)
        everyone = list(c.values())
        try:
            for node in nodes:
                assert node.state == "subscribed"

            # send_all from node 1 reaches all four clients, once.
            answer = await control(n1.port, {"op": "send_all", "message": "everyone"})
            assert answer == {"local": [2], "remote": [True], "receivers": [2]}
            await expect_each(everyone, "everyone")
            await expect_silence(everyone)

            # A group with one member on each node; the message comes from node 2.
            for key in ((0, "xhr-polling"), (1, "websocket")):
                await c[key].send({"join": "g"})
                assert await c[key].receive() == {"joined": "g"}
            answer = await control(n2.port, {"op": "send_group", "group": "g", "message": "grp"})
            assert answer["local"] == [1] and answer["remote"] == [True]
            await expect_each([c[0, "xhr-polling"], c[1, "websocket"]], "grp")
            await expect_silence(everyone)

            # Exclusions are session ids: they hold in the other process too.
            answer = await control(n1.port, {"op": "send_all", "message": "x",
                                             "exclude": [c[1, "websocket"].session_id,
                                                         c[0, "websocket"].session_id]})
            assert answer["local"] == [1]
            await expect_each([c[0, "xhr-polling"], c[1, "xhr-polling"]], "x")
            await expect_silence(everyone)

            # SocketConnection.broadcast from a polling client of node 2: all but itself.
            await c[1, "xhr-polling"].send({"shout": "from b"})
            shouted = await c[1, "xhr-polling"].receive()
            assert shouted == {"shouted": {"local": 1, "remote": True, "receivers": 2}}
            await expect_each([c[0, "websocket"], c[0, "xhr-polling"], c[1, "websocket"]],
                              "from b")

            # A member leaves: the group message goes to the other process only.
            await c[0, "xhr-polling"].send({"leave": "g"})
            assert await c[0, "xhr-polling"].receive() == {"left": "g"}
            answer = await control(n1.port, {"op": "send_group", "group": "g", "message": "g2"})
            assert answer["local"] == [0] and answer["remote"] == [True]
            await expect_each([c[1, "websocket"]], "g2")
            await expect_silence(everyone)

            # Both nodes send 60 each at once: every client gets all 120, once,
            # each sender's in order.
            await asyncio.gather(
                control(n1.port, {"op": "send_all", "message": "n1", "count": 60}),
                control(n2.port, {"op": "send_all", "message": "n2", "count": 60}))
            for client in everyone:
                got = [await client.receive() for _ in range(120)]
                for tag in ("n1", "n2"):
                    assert [m["i"] for m in got if m["tag"] == tag] == list(range(60)), (
                        client.transport, tag, got)
            await expect_silence(everyone)

            stats = await node_stats(n2.port)
            assert stats["sessions"] == 2
            assert stats["broadcast"]["remote_received"] >= 62
            assert stats["broadcast"]["backend_state"]["connected"] is True
        finally:
            await close_all(everyone)

    run(test)


def test_redis_outage_local_delivery_goes_on_and_remote_resumes(nodes, redis_server):
    n1, n2 = nodes

    async def test():
        c = await clients_on(nodes)
        on1 = [c[0, "websocket"], c[0, "xhr-polling"]]
        on2 = [c[1, "websocket"], c[1, "xhr-polling"]]
        try:
            answer = await control(n1.port, {"op": "send_all", "message": "before"})
            assert answer["remote"] == [True]
            await expect_each(on1 + on2, "before")

            for outage in (1, 2):
                redis_server.kill()
                await asyncio.gather(wait_backend(n1, False), wait_backend(n2, False))

                # Local delivery never stops; remote is reported as not done.
                for i in range(5):
                    a1 = await control(n1.port, {"op": "send_all", "message": {"n1": [outage, i]}})
                    a2 = await control(n2.port, {"op": "send_all", "message": {"n2": [outage, i]}})
                    assert a1 == {"local": [2], "remote": [False], "receivers": [0]}
                    assert a2 == {"local": [2], "remote": [False], "receivers": [0]}
                    await expect_each(on1, {"n1": [outage, i]})
                    await expect_each(on2, {"n2": [outage, i]})
                    await asyncio.sleep(0.3)  # let several reconnection attempts fail
                await expect_silence(on1 + on2)

                # One warning per outage, however many retries failed.
                for node in nodes:
                    assert len(WARNING_LINE.findall(node.stderr())) == outage, node.stderr()

                redis_server.start()  # same port
                await asyncio.gather(wait_backend(n1, True), wait_backend(n2, True))
                answer = await control(n2.port, {"op": "send_all", "message": {"after": outage}})
                assert answer == {"local": [2], "remote": [True], "receivers": [2]}
                await expect_each(on1 + on2, {"after": outage})
                await expect_silence(on1 + on2)
                for node in nodes:
                    log = node.stderr()
                    assert len(WARNING_LINE.findall(log)) == outage, log
                    assert len(RECOVERY_LINE.findall(log)) == outage, log

            stats = (await node_stats(n1.port))["broadcast"]["backend_state"]
            assert stats["outages"] == 2 and stats["not_published"] == 10
        finally:
            await close_all(on1 + on2)

    run(test)


def test_node_starts_while_redis_is_down(tmp_path):
    """No Redis at start: one warning, local delivery works, connects when Redis appears."""
    redis_server = RedisServer(tmp_path, REDIS_SERVER)  # not started yet
    (node,) = start_nodes(tmp_path, 1, redis_server.url)
    try:
        assert node.state == "not-subscribed"

        async def test():
            client = await connect("websocket", node.port)
            try:
                await client.receive()
                answer = await control(node.port, {"op": "send_all", "message": "alone"})
                assert answer == {"local": [1], "remote": [False], "receivers": [0]}
                assert await client.receive() == "alone"
                await asyncio.sleep(1.0)
                assert len(WARNING_LINE.findall(node.stderr())) == 1
                redis_server.start()
                await wait_backend(node, True)
                answer = await control(node.port, {"op": "send_all", "message": "joined"})
                assert answer["remote"] == [True]
                assert await client.receive() == "joined"
                assert len(RECOVERY_LINE.findall(node.stderr())) == 1
            finally:
                await client.close()

        run(test)
    finally:
        node.stop()
        redis_server.stop()
