"""The session relay (tornadio.relay, tornadio.redis_relay) between real processes.

Three ``scaling_node.py --relay`` processes and a real redis-server started
here. The clients speak xhr-polling and jsonp-polling on the wire and send
each request to the next process in turn, as a round-robin balancer would, so
every session is served by its owner and by two processes that do not hold
it. Faults are real: owners and non-owners killed (SIGKILL) or stopped
(SIGSTOP), Redis stopped.
"""
import asyncio
import os
import re
import signal
import sys
import time
from urllib.parse import quote

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scaling_clients import ClientClosed, JsonpClient, PollClient, close_all  # noqa: E402
from scaling_procs import (control, find_binary, node_stats, redis_server_fixture,  # noqa: E402
                           start_nodes)

from tornadio import proto  # noqa: E402
from tornadio.relay import TAG_LENGTH, owner_tag  # noqa: E402

REDIS_SERVER = find_binary("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server binary not found (scripts/setup.sh --services installs it)")

TEST_TIMEOUT = 120
#: Long-poll hold of the nodes (s): short, so that holds end within the tests.
POLL_TIMEOUT = 2.0
#: --alive-ttl of the nodes: a stopped owner counts as gone after this (s).
ALIVE_TTL = 2.0
KINDS = ["xhr-polling", "jsonp-polling"]

redis_server = redis_server_fixture(REDIS_SERVER)


def run(test, timeout=TEST_TIMEOUT):
    async def bounded():
        return await asyncio.wait_for(test(), timeout)
    return asyncio.run(bounded())


@pytest.fixture
def nodes(tmp_path, redis_server):
    started = start_nodes(tmp_path, 3, redis_server.url,
                          args=("--relay", "--poll-timeout", str(POLL_TIMEOUT),
                                "--alive-ttl", str(ALIVE_TTL), "--expiry", "5"))
    try:
        yield started
    finally:
        for node in started:
            if node.proc.poll() is None:
                os.kill(node.proc.pid, signal.SIGCONT)
            node.stop()
        for node in started:  # shown by pytest when the test failed
            print("---- %s stderr ----\n%s" % (node.name, node.stderr()[-4000:]))
    for node in started:
        assert "Traceback" not in node.stderr(), node.stderr()[-4000:]


class RoundRobin:
    """Mixin for the wire clients: each request goes to the next port of ``ports``."""

    ports = ()
    turn = 0

    @property
    def base(self):
        port = self.ports[self.turn % len(self.ports)]
        self.turn += 1
        self.hits.append(port)
        return self._template % port

    @base.setter
    def base(self, value):
        self._template = re.sub(r":\d+/", ":%d/", value, count=1)
        self.hits = []

    async def post(self, payload):
        """POST a raw payload to the next process; the response, whatever its status."""
        body = "data=" + quote(payload, safe="~!*()'")
        return await self._fetch(self.post_url(), "POST", body, timeout=self.timeout)

    def post_url(self):
        return self.base + self.sid + "/send"


class RoundRobinPoll(RoundRobin, PollClient):
    pass


class RoundRobinJsonp(RoundRobin, JsonpClient):
    def post_url(self):
        return "%s%s/%d/%d" % (self.base, self.sid, int(time.time() * 1000), self.index)


async def round_robin(kind, ports, first=0):
    """A client of ``kind`` whose requests visit ``ports`` in turn, the first at ``ports[first]``."""
    cls = RoundRobinPoll if kind == "xhr-polling" else RoundRobinJsonp
    rotating = type(cls.__name__, (cls,), {"ports": list(ports), "turn": first})
    client = await rotating.connect(ports[first], poll_timeout=POLL_TIMEOUT + 10)
    hello = (await client.recv())["hello"]
    assert hello["port"] == ports[first] and hello["sid"] == client.sid
    return client


async def relay_stats(node):
    return (await node_stats(node.port))["relay"]


async def until(predicate, timeout=15.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = await predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(0.05)


# -- serving through every process ------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_every_request_of_a_session_may_reach_any_process(nodes, kind):
    ports = [node.port for node in nodes]
    owner = nodes[1]

    async def test():
        client = await round_robin(kind, ports, first=1)
        try:
            assert len(client.sid) == 32 + TAG_LENGTH and owner_tag(client.sid)
            # POSTs through every process reach the owner's on_message, in order,
            # and each answer comes back through whichever process polls next.
            for n in range(12):
                await client.send({"whoami": n})
            answers = [await client.recv() for _ in range(12)]
            assert answers == [{"port": owner.port, "pid": owner.proc.pid, "n": n}
                               for n in range(12)]
            # The owner's own messages while polls are held elsewhere: all of them,
            # once, in order, while the client keeps posting.
            burst = asyncio.ensure_future(
                control(owner.port, {"op": "send_all", "message": "m", "count": 40}))
            for n in range(12, 20):
                await client.send({"whoami": n})
            await burst
            got = [await client.recv() for _ in range(48)]
            assert [m["i"] for m in got if "tag" in m] == list(range(40))
            assert [m["n"] for m in got if "n" in m] == list(range(12, 20))
            assert await client.drain(POLL_TIMEOUT + 0.5) == []
            assert not client.closed
            assert set(client.hits) == set(ports)
        finally:
            await close_all([client])

        # One session, in the owner only; the others served it without holding it.
        for node in nodes:
            stats = await node_stats(node.port)
            relay = stats["relay"]
            if node is owner:
                assert stats["opened_total"] == 1
                assert relay["served_posts"] > 0 and relay["served_polls"] > 0
                assert relay["forwarded_posts"] == relay["forwarded_polls"] == 0
            else:
                assert stats["opened_total"] == 0
                assert relay["forwarded_posts"] > 0 and relay["forwarded_polls"] > 0
                assert relay["served_posts"] == relay["served_polls"] == 0
            assert relay["owner_gone"] == relay["no_answer"] == 0

    run(test)
