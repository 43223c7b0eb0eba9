"""Session and SessionContainer logic, on a real IOLoop but without any socket."""
import asyncio
import time

import pytest

import tornadio
from tornadio import proto, session as sessions
from tornadio.router import DEFAULT_SETTINGS


class Sink:
    """A transport stand-in that records what the session writes to it."""

    def __init__(self, once=False):
        self.once = once
        self.payloads = []
        self.ended = False

    def write_payload(self, payload):
        self.payloads.append(payload)

    def end(self):
        self.ended = True


class Recording(tornadio.SocketConnection):
    def __init__(self, session):
        super().__init__(session)
        self.got, self.closes = [], 0

    def on_message(self, message):
        self.got.append(message)

    def on_close(self):
        self.closes += 1


def make(container=None, transport="xhr-polling", **settings):
    if container is None:
        container = sessions.SessionContainer()
    merged = dict(DEFAULT_SETTINGS, **settings)
    session = sessions.Session(container, Recording, transport, None, merged)
    container.add(session)
    return session


def arun(coro):
    return asyncio.run(asyncio.wait_for(coro, 20))


def test_ids_are_128_bit_hex_unique_and_unpredictable():
    ids = [sessions.generate_session_id() for _ in range(2000)]
    assert len(set(ids)) == 2000
    assert all(len(i) == 32 and int(i, 16) >= 0 and i.isalnum() for i in ids)
    # Not sequential: consecutive ids share no long common prefix as counters would.
    numbers = [int(i, 16) for i in ids]
    assert len({b - a for a, b in zip(numbers, numbers[1:])}) == 1999


def test_sid_comes_first_then_what_on_open_sent():
    async def body():
        session = make()
        session.connection.on_open = lambda request, *a, **k: session.connection.send("hi")
        assert await session.open(None, (), {}) is True
        sink = Sink(once=True)
        session.attach(sink)
        assert messages(sink.payloads[0]) == [session.id, "hi"]
    arun(body())


def messages(payload):
    return [frame.data for frame in proto.decode(payload)]


def test_sends_in_one_iteration_are_flushed_as_one_payload_in_order():
    async def body():
        session = make(transport="websocket")
        await session.open(None, (), {})
        sink = Sink()
        session.attach(sink)
        for i in range(500):
            session.send("m%d" % i)
        await asyncio.sleep(0.01)
        assert len(sink.payloads) == 2  # the id, then the whole burst
        assert messages(sink.payloads[1]) == ["m%d" % i for i in range(500)]
    arun(body())


def test_close_is_idempotent_and_on_close_runs_once():
    async def body():
        session = make()
        await session.open(None, (), {})
        session.close()
        session.close(sessions.REASON_EXPIRED)
        assert session.connection.closes == 1
        assert session.close_reason == sessions.REASON_SERVER
        session.connection.send("ignored")  # logged no-op
        assert session.is_closed
    arun(body())


def test_receive_dispatches_in_order_and_rejects_malformed_whole():
    async def body():
        session = make()
        await session.open(None, (), {})
        session.receive("~m~1~m~a~m~8~m~~j~[1,2]")
        assert session.connection.got == ["a", [1, 2]]
        with pytest.raises(proto.DecodeError):
            session.receive("~m~1~m~b~m~9~m~short")
        assert session.connection.got == ["a", [1, 2]]
        # A declared LEN over max_message_length is refused before anything is read.
        with pytest.raises(proto.DecodeError, match="exceeds the limit"):
            session.receive("~m~%d~m~%s" % (2 << 20, "x"))
    arun(body())


def test_heartbeat_echo_keeps_session_missing_echo_closes():
    async def body():
        session = make(transport="websocket", heartbeat_interval=0.05)
        await session.open(None, (), {})
        sink = Sink()
        session.attach(sink)
        session.start_heartbeats()
        for expected in ("1", "2", "3"):
            while not any(("~h~" + expected) in p for p in sink.payloads):
                await asyncio.sleep(0.01)
            session.receive(proto.heartbeat(int(expected)))
        assert not session.is_closed
        # A wrong number is not an answer.
        while not any("~h~4" in p for p in sink.payloads):
            await asyncio.sleep(0.01)
        session.receive(proto.heartbeat(99))
        while not session.is_closed:
            await asyncio.sleep(0.01)
        assert session.close_reason == sessions.REASON_HEARTBEAT
        assert session.connection.closes == 1 and sink.ended
    arun(body())


def test_container_expires_only_what_is_due():
    async def body():
        container = sessions.SessionContainer()
        now = time.monotonic()
        live = [make(container) for _ in range(2000)]
        for s in live:
            await s.open(None, (), {})
            container.set_deadline(s, now + 1000)
        due = live[:10]
        for s in due:
            container.set_deadline(s, now - 1)  # newer deadline; the old heap entry is stale
        assert container.expire(now) == 10
        assert all(s.is_closed and s.connection.closes == 1 for s in due)
        assert len(container) == 1990
        # Stale entries of the expired sessions never close anything again.
        assert container.expire(now + 999) == 0
        assert container.expire(now + 1001) == 1990
        assert len(container) == 0
    arun(body())


def test_expiry_check_with_100k_sessions_pops_only_the_due_ones():
    async def body():
        container = sessions.SessionContainer()
        now = time.monotonic()
        for i in range(100000):
            s = make(container)
            s.state = sessions.OPEN
            container.set_deadline(s, now + 60 + i)
        heap_before = len(container._heap)
        assert container.expire(now + 60.5) == 1
        # One pop, not a scan: every other entry is still in the heap.
        assert len(container._heap) == heap_before - 1
    arun(body())


def test_polling_session_kept_while_a_get_is_held():
    async def body():
        container = sessions.SessionContainer()
        session = make(container, xhr_polling_timeout=0.01, session_expiry=0.01)
        await session.open(None, (), {})
        first = Sink(once=True)
        session.attach(first)  # gets the id, detaches
        held = Sink(once=True)
        session.attach(held)
        assert container.expire(time.monotonic() + 100) == 0
        session.detach(held)
        assert container.expire(time.monotonic() + 100) == 1
    arun(body())


def test_leftovers_of_a_closed_polling_session_wait_for_the_next_poll():
    async def body():
        container = sessions.SessionContainer()
        session = make(container)
        session.keeps_leftovers = True
        await session.open(None, (), {})
        session.attach(Sink(once=True))
        session.send("bye")
        session.close()
        assert container.get(session.id) is session
        assert messages(session.take_leftovers()) == ["bye"]
        assert container.get(session.id) is None
    arun(body())


def test_queue_cap_closes_a_client_that_does_not_poll():
    async def body():
        session = make(max_queue_bytes=1000)
        await session.open(None, (), {})
        session.attach(Sink(once=True))
        for _ in range(100):
            session.send("x" * 50)
        assert session.is_closed and session.close_reason == sessions.REASON_OVERFLOW
    arun(body())


def test_a_coroutine_on_message_is_held_until_it_ends():
    """The loop holds tasks weakly: one awaiting a future nobody else holds must
    not be collected half-way through (it would never finish, silently)."""
    import gc
    import weakref

    async def body():
        session = make(transport="websocket")
        await session.open(None, (), {})
        awaited, finished = [], []

        async def on_message(message):
            future = asyncio.get_running_loop().create_future()
            awaited.append(weakref.ref(future))
            await future
            finished.append(message)

        session.connection.on_message = on_message
        session.receive(proto.frame("a"))
        await asyncio.sleep(0)
        gc.collect()
        future = awaited[0]()
        assert future is not None, "the on_message task was garbage-collected"
        future.set_result(None)
        for _ in range(10):
            await asyncio.sleep(0)
        assert finished == ["a"]
        assert not session.container.tasks
    arun(body())
