"""The shared heartbeat wheel (session.HeartbeatWheel): one beat per session per
interval, bounded work per loop iteration, no double beat after a stalled
loop, and a closed session let go at once. Real sessions on a real loop."""
import asyncio
import gc
import time
import weakref

from tornadio import proto, session as sessions
from tornadio.router import DEFAULT_SETTINGS


class Quiet:
    def __init__(self, session):
        self.session = session

    def on_open(self, *args, **kwargs):
        pass

    def on_message(self, message):
        pass

    def on_close(self):
        pass


class Sink:
    once = False

    def __init__(self, session, echo=True):
        self.session = session
        self.echo = echo
        self.beats = []

    def write_payload(self, payload):
        for frame in proto.decode(payload):
            if frame.kind == proto.HEARTBEAT:
                self.beats.append(time.monotonic())
                if self.echo:
                    asyncio.get_running_loop().call_soon(
                        self.session.receive, proto.heartbeat(int(frame.data)))

    def end(self):
        pass


async def opened(container, count, interval, echo=True):
    settings = dict(DEFAULT_SETTINGS, heartbeat_interval=interval)
    out = []
    for _ in range(count):
        session = sessions.Session(container, Quiet, "websocket", None, settings)
        container.add(session)
        await session.open(None, (), {})
        sink = Sink(session, echo)
        session.attach(sink)
        session.start_heartbeats()
        out.append((session, sink))
    return out


def arun(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_every_session_keeps_beating_and_echoed_ones_stay_open():
    async def body():
        container = sessions.SessionContainer()
        pairs = await opened(container, 300, 0.2)
        for _ in range(500):  # bounded: until each session had three beats
            if all(len(sink.beats) >= 3 for _, sink in pairs):
                break
            await asyncio.sleep(0.02)
        assert all(len(sink.beats) >= 3 for _, sink in pairs)
        # A second beat before the echo of the first would have closed it.
        assert not any(session.is_closed for session, _ in pairs)
        assert len(container.heartbeat_wheel(0.2)) == 300
        container.close_all()
        assert len(container.heartbeat_wheel(0.2)) == 0
    arun(body())


def test_a_missing_echo_closes_the_session_at_the_next_beat():
    async def body():
        container = sessions.SessionContainer()
        [(session, sink)] = await opened(container, 1, 0.1, echo=False)
        while not session.is_closed:
            await asyncio.sleep(0.02)
        assert session.close_reason == sessions.REASON_HEARTBEAT
        assert len(sink.beats) == 1
    arun(body())


def test_a_stalled_loop_beats_each_session_once_not_twice():
    async def body():
        container = sessions.SessionContainer()
        pairs = await opened(container, 50, 0.1)
        await asyncio.sleep(0.15)
        time.sleep(0.35)  # the loop stalls for more than three intervals
        await asyncio.sleep(0.3)
        assert not any(session.is_closed for session, _ in pairs)
        container.close_all()
    arun(body())


def test_one_walk_beats_at_most_a_batch_per_loop_iteration():
    async def body():
        container = sessions.SessionContainer()
        wheel = container.heartbeat_wheel(0.2)
        # Every session in one bucket: they all come due in the same instant.
        pairs = []
        loop = asyncio.get_running_loop()
        settings = dict(DEFAULT_SETTINGS, heartbeat_interval=0.2)
        assert wheel.BATCH < 200
        for _ in range(200):
            session = sessions.Session(container, Quiet, "websocket", None, settings)
            container.add(session)
            await session.open(None, (), {})
            sink = Sink(session)
            session.attach(sink)
            pairs.append((session, sink))
        for session, _ in pairs:  # within one bucket's 5 ms: all due at once
            session.start_heartbeats()
        beaten_per_turn = []

        def count():
            beaten_per_turn.append(sum(len(sink.beats) for _, sink in pairs))
            if len(beaten_per_turn) < 400:
                loop.call_soon(count)

        loop.call_soon(count)
        await asyncio.sleep(0.5)
        steps = [b - a for a, b in zip(beaten_per_turn, beaten_per_turn[1:])]
        assert max(steps) <= wheel.BATCH
        assert all(len(sink.beats) >= 1 for _, sink in pairs)
        container.close_all()
    arun(body())


def test_a_closed_session_is_not_kept_by_the_wheel():
    async def body():
        container = sessions.SessionContainer()
        [(session, sink)] = await opened(container, 1, 5.0)
        ref = weakref.ref(session)
        session.close()
        del session, sink
        container.sessions.clear()
        gc.collect()
        assert ref() is None
        assert len(container.heartbeat_wheel(5.0)) == 0
    arun(body())
