"""The session relay (tornadio.relay, tornadio.redis_relay) between real processes.

Three ``scaling_node.py --relay`` processes and a real redis-server started
here. The clients (``tornadio.testing`` for xhr-polling and jsonp-polling,
scaling_clients.py's for the streaming transports) send each request to the
next process in turn, as a round-robin balancer would (their ``balancer``
option), so every session is served by its owner and by two processes that do
not hold it. Faults are real: owners and non-owners killed (SIGKILL) or stopped
(SIGSTOP), Redis stopped.
"""
import asyncio
import os
import signal
import sys
import time
from urllib.parse import quote

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scaling_clients import close_all, connect, drain  # noqa: E402
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
#: Heartbeat period of the streaming transports (s): a missing echo closes the session.
HEARTBEAT = 1.0

redis_server = redis_server_fixture(REDIS_SERVER)


def run(test, timeout=TEST_TIMEOUT):
    async def bounded():
        return await asyncio.wait_for(test(), timeout)
    return asyncio.run(bounded())


@pytest.fixture
def nodes(tmp_path, redis_server):
    started = start_nodes(tmp_path, 3, redis_server.url,
                          args=("--relay", "--poll-timeout", str(POLL_TIMEOUT),
                                "--alive-ttl", str(ALIVE_TTL), "--expiry", "5",
                                "--heartbeat", str(HEARTBEAT)))
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
    """A client's ``balancer``: each request goes to the next port of ``ports``
    for its method, noted in ``hits``.

    GETs and POSTs take turns separately: with one turn for both, a client whose
    requests fell into a steady rhythm (a POST, then two polls) could send every
    POST to the same process.
    """

    def __init__(self, ports, first=0):
        self.ports = list(ports)
        self.turns = {}
        self.first = first
        self.hits = []

    def __call__(self, method, path):
        turn = self.turns.get(method, self.first)
        self.turns[method] = turn + 1
        port = self.ports[turn % len(self.ports)]
        self.hits.append(port)
        return "127.0.0.1", port


async def round_robin(kind, ports, first=0):
    """A client of ``kind`` whose requests visit ``ports`` in turn, the first at ``ports[first]``;
    returns it and its balancer."""
    balancer = RoundRobin(ports, first)
    client = await connect(kind, ports[first], balancer=balancer, poll_timeout=POLL_TIMEOUT + 10)
    hello = (await client.receive())["hello"]
    assert hello["port"] == ports[first] and hello["sid"] == client.session_id
    return client, balancer


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
        client, balancer = await round_robin(kind, ports, first=1)
        try:
            assert len(client.session_id) == 32 + TAG_LENGTH and owner_tag(client.session_id)
            # POSTs through every process reach the owner's on_message, in order,
            # and each answer comes back through whichever process polls next.
            for n in range(12):
                await client.send({"whoami": n})
            answers = [await client.receive() for _ in range(12)]
            assert answers == [{"port": owner.port, "pid": owner.proc.pid, "n": n}
                               for n in range(12)]
            # The owner's own messages while polls are held elsewhere: all of them,
            # once, in order, while the client keeps posting.
            burst = asyncio.ensure_future(
                control(owner.port, {"op": "send_all", "message": "m", "count": 40}))
            for n in range(12, 20):
                await client.send({"whoami": n})
            await burst
            got = [await client.receive() for _ in range(48)]
            assert [m["i"] for m in got if "tag" in m] == list(range(40))
            assert [m["n"] for m in got if "n" in m] == list(range(12, 20))
            assert await drain(client, POLL_TIMEOUT + 0.5) == []
            assert not client.closed
            assert set(balancer.hits) == set(ports)
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


@pytest.mark.parametrize("kind", ["htmlfile", "xhr-multipart"])
def test_streaming_sessions_take_posts_through_any_process(nodes, kind):
    """The stream stays with its owner; its POSTs (messages and heartbeat
    echoes) may reach any process."""
    ports = [node.port for node in nodes]
    owner = nodes[0]

    async def test():
        balancer = RoundRobin(ports)
        client = await connect(kind, ports[0], balancer=balancer)
        try:
            assert (await client.receive())["hello"]["port"] == owner.port
            for n in range(6):
                await client.send({"whoami": n})
                assert await client.receive() == {"port": owner.port, "pid": owner.proc.pid,
                                                  "n": n}
            # Heartbeats come and their echoes go back through every process:
            # three periods later the session is still open.
            await asyncio.sleep(3 * HEARTBEAT + 0.5)
            assert not client.closed
            stats = await node_stats(owner.port)
            assert stats["sessions_by_transport"][kind] == 1 and stats["closed_total"] == 0
            assert set(balancer.hits) == set(ports)
        finally:
            await close_all([client])

    run(test)


# -- raw requests, one at a time ----------------------------------------------------------
class Raw:
    """Plain HTTP requests for one xhr-polling session, each to the port it names."""

    def __init__(self):
        from tornado.httpclient import AsyncHTTPClient
        self.http = AsyncHTTPClient(force_instance=True, max_clients=8)
        self.sid = None

    def url(self, port, tail):
        return "http://127.0.0.1:%d/socket.io/xhr-polling/%s" % (port, tail)

    async def fetch(self, port, tail, body=None, timeout=10.0):
        from tornado.httpclient import HTTPRequest
        request = HTTPRequest(self.url(port, tail), method="GET" if body is None else "POST",
                              body=body, request_timeout=timeout, connect_timeout=5,
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
        return await self.http.fetch(request, raise_error=False)

    async def open(self, port):
        response = await self.fetch(port, "/%d" % int(time.time() * 1000))
        assert response.code == 200, response
        frames = proto.decode(response.body.decode("utf-8"))
        self.sid = frames[0][1]
        return self.sid

    async def poll(self, port, sid=None, timeout=10.0):
        """(status, [messages]) of one poll."""
        response = await self.fetch(port, "%s/%d" % (sid or self.sid, int(time.time() * 1000)),
                                    timeout=timeout)
        if response.code != 200:
            return response.code, response.body.decode("utf-8", "replace")
        return 200, [data for _, data in proto.decode(response.body.decode("utf-8"))]

    async def post(self, port, payload, sid=None):
        """(status, body) of one POST of a raw payload."""
        body = "data=" + quote(payload, safe="~!*()'")
        response = await self.fetch(port, "%s/send" % (sid or self.sid), body=body)
        return response.code, response.body.decode("utf-8", "replace")

    def close(self):
        self.http.close()


async def held(node, count=1):
    """Wait until ``node`` holds ``count`` polls for other processes."""
    await until(lambda: _relay_is(node, "held_polls", count), what="%s holding" % node.name)


async def _relay_is(node, name, value):
    return (await relay_stats(node))[name] == value


async def declared_post(port, sid, length):
    """The status of a POST that declares ``length`` body bytes and sends none."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        writer.write(("POST /socket.io/xhr-polling/%s/send HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      "Content-Length: %d\r\n\r\n" % (sid, length)).encode("ascii"))
        status_line = await asyncio.wait_for(reader.readline(), 5)
        return int(status_line.split()[1])
    finally:
        writer.close()


def test_errors_are_the_owners_wherever_the_request_lands(nodes):
    """400, 401 and 413 through a non-owner, as the owner would answer them;
    malformed and oversized payloads are refused before anything is forwarded."""
    owner, other, third = nodes

    async def test():
        raw = Raw()
        try:
            sid = await raw.open(owner.port)
            assert await raw.post(other.port, proto.encode({"whoami": 1})) == (200, "ok")
            assert (await raw.poll(third.port))[1][-1] == {
                "port": owner.port, "pid": owner.proc.pid, "n": 1}
            before = await relay_stats(other)
            status, body = await raw.post(other.port, "~m~5~m~ab")
            assert (status, body) == (400, "malformed payload: LEN 5 runs past the end of "
                                           "the payload")
            assert await declared_post(other.port, sid, (1 << 20) + 1) == 413
            after = await relay_stats(other)
            assert after["forwarded_posts"] == before["forwarded_posts"]  # not forwarded
            # Unknown sessions: the owner's tag with another random part, a tag no
            # process has, no tag at all, a closed session: 401 everywhere.
            forged = "0" * 32 + sid[32:]
            nobody = sid[:32] + "f" * TAG_LENGTH
            for port in (owner.port, other.port, third.port):
                for bad in (forged, nobody, sid[:32]):
                    assert (await raw.poll(port, bad))[0] == 401
                    assert (await raw.post(port, proto.encode("x"), bad))[0] == 401
            # Another transport than the session's: 401 from the owner, relayed.
            response = await raw.http.fetch(
                "http://127.0.0.1:%d/socket.io/jsonp-polling/%s/1/1" % (other.port, sid),
                raise_error=False)
            assert response.code == 401
            assert b"belongs to transport xhr-polling" in response.body
            # Stop polling: once the session expired it is 401 wherever it is asked.
            await until(lambda: _closed(owner), what="session expired")
            for port in (owner.port, other.port, third.port):
                assert (await raw.poll(port))[0] == 401
                assert (await raw.post(port, proto.encode("late")))[0] == 401
        finally:
            raw.close()
        # Nothing was opened anywhere but in the owner; nothing waits.
        for node in nodes:
            stats = await node_stats(node.port)
            assert stats["opened_total"] == (1 if node is owner else 0)
            assert stats["relay"]["waiting_requests"] == stats["relay"]["unconfirmed"] == 0

    run(test)


async def _closed(node):
    return (await node_stats(node.port))["closed_total"] == 1


@pytest.mark.parametrize("fault", ["kill", "stop"])
def test_a_dead_or_stopped_owner_ends_its_sessions_everywhere(nodes, fault):
    """A poll held elsewhere is answered 401 once the owner is killed (its
    subscription goes at once) or stopped (its liveness key expires): never a
    hang. Sessions of the other processes carry on."""
    owner, other, third = nodes

    async def test():
        doomed, survivor = Raw(), Raw()
        try:
            await doomed.open(owner.port)
            await survivor.open(other.port)
            hold = asyncio.ensure_future(doomed.poll(third.port, timeout=30))
            await held(owner)
            survivor_hold = asyncio.ensure_future(survivor.poll(third.port, timeout=30))
            await held(other)
            os.kill(owner.proc.pid, signal.SIGKILL if fault == "kill" else signal.SIGSTOP)
            # The held poll ends with 401, or (a stopped owner) with its hold's
            # empty answer, and then the next one gets 401.
            status, body = await asyncio.wait_for(hold, 20)
            if (status, body) == (200, []) and fault == "stop":
                status, body = await asyncio.wait_for(doomed.poll(third.port), 20)
            assert status == 401, body
            assert body in ("owner process gone", "owner process did not answer")
            # Every later request of that session, wherever it lands: 401.
            assert (await doomed.poll(third.port))[0] == 401
            assert (await doomed.post(other.port, proto.encode("hello?")))[0] == 401
            # The other process's session is untouched, through the third process too.
            assert await survivor.post(third.port, proto.encode({"whoami": 7})) == (200, "ok")
            status, messages = await survivor_hold
            if messages == []:  # the hold ended first
                status, messages = await survivor.poll(third.port)
            assert (status, messages) == (200, [{"port": other.port, "pid": other.proc.pid,
                                                 "n": 7}])
        finally:
            doomed.close()
            survivor.close()

    run(test)


def test_frames_a_dying_non_owner_never_wrote_come_with_the_next_poll(nodes):
    """The owner keeps relayed frames until the non-owner confirms it wrote
    them: a non-owner stopped mid-poll and then killed loses nothing."""
    owner, doomed, other = nodes

    async def test():
        raw = Raw()
        try:
            await raw.open(owner.port)
            lost_poll = asyncio.ensure_future(raw.poll(doomed.port, timeout=30))
            await held(owner)
            os.kill(doomed.proc.pid, signal.SIGSTOP)
            answer = await control(owner.port, {"op": "send_all", "message": "kept"})
            assert answer["local"] == [1]
            await until(lambda: _relay_is(owner, "unconfirmed", 1), what="frames in flight")
            os.kill(doomed.proc.pid, signal.SIGKILL)
            # The connection died with the process (an error, or tornado's 599).
            outcome, = await asyncio.wait_for(asyncio.gather(lost_poll, return_exceptions=True),
                                              20)
            assert isinstance(outcome, Exception) or outcome[0] == 599, outcome
            # The next poll, through a live non-owner: the frames, once.
            assert await raw.poll(other.port) == (200, ["kept"])
            assert await raw.poll(owner.port) == (200, [])  # a whole hold: nothing twice
            assert (await relay_stats(owner))["resent"] == 1
        finally:
            raw.close()

    run(test)


def test_frames_written_by_a_non_owner_are_not_sent_again(nodes):
    """The counterpart: frames a non-owner wrote are confirmed and dropped by
    the owner, even when the next poll reaches the owner at once."""
    owner, other, third = nodes

    async def test():
        raw = Raw()
        try:
            await raw.open(owner.port)
            for n in range(20):
                port = (other, third)[n % 2].port
                hold = asyncio.ensure_future(raw.poll(port))
                await held(owner)
                await control(owner.port, {"op": "send_all", "message": n})
                assert await hold == (200, [n])
                assert await raw.post(owner.port, proto.encode({"whoami": n})) == (200, "ok")
                status, messages = await raw.poll(owner.port)  # maybe before the ack
                assert status == 200 and [m["n"] for m in messages] == [n]
            stats = await relay_stats(owner)
            assert stats["resent"] == 0 and stats["unconfirmed"] == 0
        finally:
            raw.close()

    run(test)


def test_overlapping_polls_on_two_non_owners(nodes):
    """As in one process: the older poll ends empty, the newer gets the frames."""
    owner, first, second = nodes

    async def test():
        raw = Raw()
        try:
            await raw.open(owner.port)
            older = asyncio.ensure_future(raw.poll(first.port))
            await held(owner)
            newer = asyncio.ensure_future(raw.poll(second.port))
            assert await asyncio.wait_for(older, 10) == (200, [])
            await held(owner)
            await control(owner.port, {"op": "send_all", "message": "to the newer"})
            assert await newer == (200, ["to the newer"])
        finally:
            raw.close()

    run(test)


def test_requests_at_the_owner_need_no_redis(nodes, redis_server):
    """Redis stopped: the owner still serves its session's requests that reach
    it; those that reach another process are answered at once, not held."""
    owner, other, _ = nodes

    async def test():
        raw = Raw()
        try:
            await raw.open(owner.port)
            redis_server.pause()
            try:
                for n in range(5):
                    assert await raw.post(owner.port, proto.encode({"whoami": n})) == (200, "ok")
                    status, messages = await raw.poll(owner.port)
                    assert status == 200 and messages == [
                        {"port": owner.port, "pid": owner.proc.pid, "n": n}]
                # Elsewhere: refused within a bounded time (the hold, 2 s here, may
                # end first with an empty answer: no news, the client polls again).
                for _ in range(3):
                    status, body = await asyncio.wait_for(raw.poll(other.port), 20)
                    if status != 200:
                        break
                    assert body == []
                assert status in (401, 503), (status, body)
            finally:
                redis_server.resume()
        finally:
            raw.close()

    run(test)
