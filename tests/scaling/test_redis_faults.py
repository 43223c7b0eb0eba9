"""The Redis broadcast backend against a real redis-server that stalls or dies.

A stall is ``kill -STOP``: the TCP connections stay up and nothing answers.
Two backends in this process stand for two TornadIO processes (each has its
own connections and process id): ``pub`` publishes, ``recv`` only receives.
The settings are short so that a stall of a few seconds shows everything;
the defaults are measured by ``redis_stall.py`` (same scenario, longer).

``test_redis_py_matrix.py`` runs this module again under the oldest redis-py
that pyproject.toml allows.
"""
import asyncio
import logging
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from redis_stall import CHANNEL, LogLines, stall_scenario  # noqa: E402
from scaling_procs import RedisServer, find_binary, redis_server_fixture  # noqa: E402

from tornadio.broadcast import Delivery  # noqa: E402
from tornadio.redis_broadcast import RedisBroadcastBackend  # noqa: E402

REDIS_SERVER = find_binary("redis-server")
pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server binary not found (scripts/setup.sh --services installs it)")

#: Short settings: a stall is noticed after at most 0.5 + 1 s.
FAST = {"stall_timeout": 1.0, "health_check_interval": 0.5, "max_delay": 1.5,
        "connect_timeout": 1.0, "min_backoff": 0.1, "max_backoff": 0.5}
LOST = re.compile(r"^WARNING redis broadcast: lost connection to \S+ \((.*)\)")
RECONNECTED = re.compile(r"^INFO redis broadcast: reconnected to ")

redis_server = redis_server_fixture(REDIS_SERVER)


def run(test, timeout=60):
    async def bounded():
        return await asyncio.wait_for(test(), timeout)
    return asyncio.run(bounded())


def backend(server, db=0, received=None, **settings):
    """A backend listening on CHANNEL; what others publish there goes to ``received``.

    The db of the URL tells the log lines of two backends apart (pub/sub ignores it).
    """
    url = server.url.rsplit("/", 1)[0] + "/%d" % db
    made = RedisBroadcastBackend(url=url, channel_prefix="faults", **settings)
    if received is None:
        made.attach(CHANNEL, lambda group, frames, exclude: None)
    else:
        made.attach(CHANNEL, lambda group, frames, exclude: received.append(frames))
    return made


async def wait_until(condition, timeout=10.0, what="condition"):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError("timed out waiting for " + what)
        await asyncio.sleep(0.02)


def matching(pattern, lines):
    return [line for line in lines if pattern.search(line)]


def test_stall_is_noticed_bounded_and_nothing_arrives_late(redis_server):
    """400 broadcasts/s of 1 KB through a 5 s SIGSTOP of redis-server."""
    settings = dict(FAST, max_outbox=300)
    stall = 5.0
    try:
        seen = run(lambda: stall_scenario(redis_server, stall, rate=400, size=1024,
                                          settings=settings))
    finally:
        redis_server.resume()
    report = "\n".join("%s: %s" % item for item in seen.items())

    # Both sides noticed during the stall: the publisher, and the one that only receives.
    assert seen["pub_noticed_after"] is not None and seen["pub_noticed_after"] < stall, report
    assert seen["recv_noticed_after"] is not None and seen["recv_noticed_after"] < stall, report
    assert seen["pub_first_false_after"] is not None, report
    # The outbox stayed within max_outbox; beyond it sends resolved False at once.
    assert seen["max_outbox"] <= settings["max_outbox"] + 512, report
    assert seen["pub_stats"]["outbox_full"] > 0, report
    # Every delivery settled, and was final when done().
    assert seen["still_pending_at_end"] == 0 and seen["done_before_final"] == 0, report
    # Nothing late, nothing delivered that was reported unpublished, nothing
    # reported as received by both that recv did not get.
    assert seen["late"] == 0, report
    assert seen["received_though_false"] == 0, report
    assert seen["missing_though_receivers_2"] == 0, report
    # Broadcasts flow again after the stall.
    assert seen["received"] > 0 and seen["recv_stats"]["received"] == seen["received"], report
    assert seen["pub_stats"]["published"] > 0, report
    # One warning per side with its cause, one recovery line; one outage counted.
    for side in ("pub", "recv"):
        lost = matching(LOST, seen[side + "_log"])
        assert len(lost) == 1, report
        assert "no reply" in lost[0] and "within 1 s" in lost[0], lost
        assert len(matching(RECONNECTED, seen[side + "_log"])) == 1, report
        assert seen[side + "_stats"]["outages"] == 1, report
    assert "PING" in matching(LOST, seen["recv_log"])[0]


def test_stale_broadcasts_are_dropped_by_a_receiver_that_stayed_subscribed(redis_server):
    """A stall too short for ``recv`` to notice: what Redis executes late is dropped."""
    async def test():
        lines = LogLines()
        logger = logging.getLogger("tornadio.redis")
        logger.addHandler(lines)
        pub = backend(redis_server, 0, stall_timeout=0.5, max_delay=1.0,
                      health_check_interval=0.2, connect_timeout=0.5, max_backoff=0.3)
        got = []
        recv = backend(redis_server, 1, got, stall_timeout=30, health_check_interval=30)
        try:
            assert await pub.ready(5) and await recv.ready(5)
            first = Delivery(0, pub.publish(CHANNEL, None, "before", []))
            await first
            assert first.remote is True and first.receivers == 2
            await wait_until(lambda: got == ["before"], what="first broadcast")

            redis_server.pause()
            try:
                stuck = [Delivery(0, pub.publish(CHANNEL, None, "stuck %d" % i, []))
                         for i in range(5)]
                # Unconfirmed: False once their max_delay passed (so no receiver takes them).
                await asyncio.wait_for(asyncio.gather(*stuck), 5)
                assert [d.remote for d in stuck] == [False] * 5
                await asyncio.sleep(2.0)
            finally:
                redis_server.resume()
            await wait_until(lambda: recv.stats()["stale_dropped"] == 5, what="stale drops")
            assert recv.connected and recv.stats()["outages"] == 0
            await wait_until(lambda: pub.connected, what="pub reconnected")
            after = Delivery(0, pub.publish(CHANNEL, None, "after", []))
            await after
            assert after.remote is True and after.receivers == 2
            await wait_until(lambda: "after" in got, what="fresh broadcast")
            assert got == ["before", "after"]
            dropped = [line for line in lines.of(1, "WARNING") if "dropped" in line]
            assert len(dropped) == 1, lines.of(1)
        finally:
            redis_server.resume()
            logger.removeHandler(lines)
            await asyncio.gather(pub.close(), recv.close())

    run(test)


def test_a_stall_shorter_than_max_delay_reports_what_was_delivered(redis_server):
    """Redis resumes before the deadline of what was in flight: that is delivered and
    reported True; what came after the stall was noticed is reported False and is not."""
    async def test():
        got = []
        pub = backend(redis_server, 0, stall_timeout=0.5, max_delay=4.0,
                      health_check_interval=0.2, connect_timeout=0.5, max_backoff=0.3)
        recv = backend(redis_server, 1, got, stall_timeout=30, health_check_interval=30)
        try:
            assert await pub.ready(5) and await recv.ready(5)
            redis_server.pause()
            try:
                in_flight = [Delivery(0, pub.publish(CHANNEL, None, "in flight %d" % i, []))
                             for i in range(3)]
                await wait_until(lambda: not pub.connected, what="stall noticed")
                later = [Delivery(0, pub.publish(CHANNEL, None, "later %d" % i, []))
                         for i in range(2)]
                assert [d.remote for d in later] == [False, False]
                assert not any(d.done() for d in in_flight)
                await asyncio.sleep(1.0)
            finally:
                redis_server.resume()
            await asyncio.wait_for(asyncio.gather(*in_flight), 10)
            assert [(d.remote, d.receivers) for d in in_flight] == [(True, 2)] * 3
            await wait_until(lambda: len(got) == 3, what="the in-flight broadcasts")
            await wait_until(lambda: pub.connected, what="pub reconnected")
            after = Delivery(0, pub.publish(CHANNEL, None, "after", []))
            await after
            assert after.remote is True
            await wait_until(lambda: len(got) == 4, what="the broadcast after")
            assert got == ["in flight 0", "in flight 1", "in flight 2", "after"]
            assert pub.stats()["outages"] == 1 and recv.stats()["outages"] == 0
        finally:
            redis_server.resume()
            await asyncio.gather(pub.close(), recv.close())

    run(test)


def test_kill_and_restart_keep_working(redis_server):
    """kill -9: both sides notice the reset at once; after a restart, broadcasts flow."""
    async def test():
        pub = backend(redis_server, 0, **FAST)
        got = []
        recv = backend(redis_server, 1, got, **FAST)
        try:
            assert await pub.ready(5) and await recv.ready(5)
            redis_server.kill()
            await wait_until(lambda: not pub.connected and not recv.connected, what="down")
            during = Delivery(0, pub.publish(CHANNEL, None, "during", []))
            assert during.done() and during.remote is False
            redis_server.start()
            assert await pub.ready(10) and await recv.ready(10)
            after = Delivery(0, pub.publish(CHANNEL, None, "after", []))
            await after
            assert after.remote is True and after.receivers == 2
            await wait_until(lambda: got == ["after"], what="broadcast after restart")
            for side in (pub, recv):
                assert side.stats()["outages"] == 1
        finally:
            await asyncio.gather(pub.close(), recv.close())

    run(test)


def test_publish_refused_by_redis_is_not_an_outage(redis_server):
    """An ACL user that may not PUBLISH: each broadcast resolves False, one warning,
    the connection stays (no reconnect-and-warn storm); the password is not logged."""
    import redis.asyncio as aioredis

    async def test():
        lines = LogLines()
        logger = logging.getLogger("tornadio.redis")
        logger.addHandler(lines)
        admin = aioredis.Redis.from_url(redis_server.url)
        await admin.execute_command("ACL", "SETUSER", "listener", "on", ">s3cret",
                                    "~*", "&*", "+@all", "-publish")
        url = "redis://listener:s3cret@127.0.0.1:%d/0" % redis_server.port
        pub = RedisBroadcastBackend(url=url, channel_prefix="faults", **FAST)
        pub.attach(CHANNEL, lambda group, frames, exclude: None)
        try:
            assert await pub.ready(5)
            for i in range(3):
                refused = Delivery(0, pub.publish(CHANNEL, None, "m%d" % i, []))
                await asyncio.wait_for(refused, 10)
                assert refused.remote is False
            await asyncio.sleep(0.5)
            assert pub.connected and pub.stats()["outages"] == 0
            assert pub.stats()["not_published"] == 3
            log = lines.of(0)
            assert len([line for line in log if "refused" in line]) == 1, log
            assert len(log) == 1 and "s3cret" not in log[0], log  # no outage line
        finally:
            logger.removeHandler(lines)
            await pub.close()
            await admin.aclose()

    run(test)


def test_delivery_is_final_when_done(redis_server):
    """``remote`` is set in the same step that done() becomes True."""
    async def test():
        pub = backend(redis_server, 0)
        try:
            assert await pub.ready(5)
            finals = []
            for i in range(20):
                delivery = Delivery(0, pub.publish(CHANNEL, None, "m%d" % i, []))
                for _ in range(10000):
                    if delivery.done():
                        break
                    await asyncio.sleep(0)
                finals.append((delivery.done(), delivery.remote))
            assert finals == [(True, True)] * 20
        finally:
            await pub.close()

    run(test)


def test_close_waits_for_the_batch_in_flight(redis_server):
    """Last words: a broadcast already sent to Redis is confirmed, not cancelled, by close()."""
    async def test():
        pub = backend(redis_server, 0)
        got = []
        recv = backend(redis_server, 1, got)
        try:
            assert await pub.ready(5) and await recv.ready(5)
            last = Delivery(0, pub.publish(CHANNEL, None, "bye", []))
            for _ in range(100):  # until the writer took it from the outbox
                if pub.stats()["pending"] == 0:
                    break
                await asyncio.sleep(0)
            assert pub.stats()["pending"] == 0 and not last.done()
            await pub.close()
            assert last.done() and last.remote is True and last.receivers == 2
            await wait_until(lambda: got == ["bye"], what="last words")
        finally:
            await asyncio.gather(pub.close(), recv.close())

    run(test)


def test_a_new_event_loop_resolves_what_the_old_one_left(redis_server):
    """The task restarts in a new loop; the old loop's broadcasts resolve, none stays pending."""
    pub = backend(redis_server, 0)
    old_loop = asyncio.new_event_loop()

    async def first():
        assert await pub.ready(5)
        # The loop stops right after: these stay in the outbox or in flight.
        return [Delivery(0, pub.publish(CHANNEL, None, "m%d" % i, [])) for i in range(3)]

    try:
        left = old_loop.run_until_complete(asyncio.wait_for(first(), 10))
        assert not any(d.done() for d in left)

        async def second():
            assert await pub.ready(5)
            assert [(d.done(), d.remote) for d in left] == [(True, False)] * 3
            fresh = Delivery(0, pub.publish(CHANNEL, None, "fresh", []))
            await fresh
            assert fresh.remote is True
            await pub.close()

        run(second)
    finally:
        # What asyncio.run() would have done: the old loop's tasks end in it.
        leftover = asyncio.all_tasks(old_loop)
        for task in leftover:
            task.cancel()
        old_loop.run_until_complete(asyncio.wait_for(
            asyncio.gather(*leftover, return_exceptions=True), 10))
        old_loop.close()


def test_ready_leaves_no_waiter_behind_when_it_times_out(tmp_path):
    """Redis down: ready(timeout) keeps returning False and leaves no task behind."""
    server = RedisServer(tmp_path, REDIS_SERVER)  # never started: nothing listens

    def waiters():
        return [task for task in asyncio.all_tasks()
                if task.get_coro().__qualname__ == "Event.wait"]

    async def test():
        pub = backend(server, 0, connect_timeout=0.2, max_backoff=0.2)
        try:
            for _ in range(20):
                assert await pub.ready(0.01) is False
            assert waiters() == []
        finally:
            await pub.close()

    run(test)


def test_messages_of_another_format_are_counted_and_logged_once(redis_server):
    """A process of another TornadIO version publishing: no log line per message."""
    import redis.asyncio as aioredis

    async def test():
        lines = LogLines()
        logger = logging.getLogger("tornadio.redis")
        logger.addHandler(lines)
        got = []
        recv = backend(redis_server, 1, got)
        other = aioredis.Redis.from_url(redis_server.url)
        try:
            assert await recv.ready(5)
            for i in range(3):  # the envelope of format 1, which had no deadline
                await other.publish("faults:" + CHANNEL, '[1,"old-process",null,[],"m%d"]' % i)
            await wait_until(lambda: recv.stats()["malformed"] == 3, what="malformed count")
            assert got == []
            malformed = [line for line in lines.lines.get("?", []) if "malformed" in line[1]]
            assert len(malformed) == 1, lines.lines
        finally:
            logger.removeHandler(lines)
            await other.aclose()
            await recv.close()

    run(test)
