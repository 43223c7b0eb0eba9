"""One client floods, the others are still served: the cap on frames per payload
(``max_frames_per_payload``) and the sliced dispatch of large legal batches.

The flood is what a 1 MB body can hold: 125,000 one-character frames. The
largest legal payload has ``max_frames_per_payload`` of them. Nothing here
asserts on time: the round trips of a second client must all complete, in
order, and their p99 is printed (``-s``) for the record.
"""
import asyncio

import pytest
import tornado.websocket

import tornadio
from tornadio import session as sessions
from tornadio.router import DEFAULT_SETTINGS

from support.apps import Recorder, make_app
from support.server import ServerThread
from support.wire import (captured_logs, fetch, form, open_ws, open_xhr, post, read_ws, run,
                          serve, tracebacks)

CAP = DEFAULT_SETTINGS["max_frames_per_payload"]
FLOOD = "~m~1~m~x" * 125000
LEGAL = "~m~1~m~x" * CAP
#: Round trips the second client makes while the flood goes on.
PROBES = 150


class Counting(tornadio.SocketConnection):
    """Counts what reaches on_message; echoes only what is not a flood frame."""

    dispatched = None

    def on_message(self, message):
        self.dispatched.append(message)
        if message != "x":
            self.send(message)


def counting():
    return type("Counting", (Counting,), {"dispatched": []})


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


# -- refused whole -------------------------------------------------------------------------
@pytest.mark.parametrize("transport", ["xhr-polling", "jsonp-polling"])
def test_a_post_over_the_frame_cap_is_413_and_nothing_dispatched(transport):
    connection = counting()

    async def go():
        with captured_logs() as records:
            async with serve(connection) as (base, router):
                url = "%s/socket.io/%s//1" % (base, transport)
                first = await fetch(url + ("/0" if transport == "jsonp-polling" else ""))
                sid = first.body.decode()[first.body.find(b"~m~32~m~") + 8:][:32]
                tail = "1/0" if transport == "jsonp-polling" else "send"
                refused = await post(base, transport, sid, "~m~1~m~y" + FLOOD, tail=tail)
                assert refused.code == 413
                assert b"more than %d frames" % CAP in refused.body
                # The session itself goes on: a legal POST is still taken.
                taken = await post(base, transport, sid, "~m~2~m~ok", tail=tail)
                assert taken.code == 200
                assert connection.dispatched == ["ok"]
        assert not tracebacks(records)
    run(go())


def test_a_websocket_message_over_the_frame_cap_closes_with_one_log_line():
    connection = counting()

    async def go():
        with captured_logs() as records:
            async with serve(connection) as (base, router):
                ws, _ = await open_ws(base)
                ws.write_message("~m~1~m~y" + FLOOD)
                assert await read_ws(ws) is None  # closed by the server
                assert connection.dispatched == []
                assert len(router.sessions()) == 0
        lines = [r.getMessage() for r in records if "closing on bad input" in r.getMessage()]
        assert len(lines) == 1 and "more than %d frames" % CAP in lines[0]
        assert not tracebacks(records)
    run(go())


def test_a_legal_large_batch_is_dispatched_in_slices_in_order(monkeypatch):
    """Between slices the loop runs other callbacks; every message arrives once, in order."""
    monkeypatch.setattr(sessions, "DISPATCH_SLICE", 0.0)  # a slice after every check
    connection = counting()
    turns = []

    class Ticking(connection):
        def on_message(self, message):
            super().on_message(message)
            turns.append(ticks[0])

    ticks = [0]

    async def go():
        loop = asyncio.get_running_loop()

        def tick():
            ticks[0] += 1
            handle[0] = loop.call_soon(tick)

        handle = [loop.call_soon(tick)]
        try:
            async with serve(Ticking) as (base, router):
                sid, _ = await open_xhr(base)
                batch = "".join("~m~%d~m~%d" % (len(str(i)), i) for i in range(CAP))
                answer = await post(base, "xhr-polling", sid, batch)
                assert answer.code == 200  # answered once the whole batch was dispatched
                assert connection.dispatched == [str(i) for i in range(CAP)]
        finally:
            handle[0].cancel()
    run(go())
    # The loop turned between slices of _SLICE_CHECK messages, not once for all.
    assert len(set(turns)) >= CAP // sessions._SLICE_CHECK


# -- one floods, another is served ------------------------------------------------------------
@pytest.fixture
def flood_server():
    thread = ServerThread("flood-server")
    connection = counting()
    port = thread.start(lambda: make_app(Recorder(), {"heartbeat_interval": 0},
                                         connection=connection))
    try:
        yield port, thread, connection
    finally:
        thread.stop()


async def sample_lag(samples, stop):
    """How late a 5 ms sleep wakes up on the server's loop."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.005)
        samples.append(max(0.0, loop.time() - before - 0.005))


async def probe(base, flooding):
    """Echo round trips over a websocket until the flood is over; their durations."""
    ws, _ = await open_ws(base)
    loop = asyncio.get_running_loop()
    durations = []
    try:
        while not flooding.done() or len(durations) < PROBES:
            text = "probe-%d" % len(durations)
            started = loop.time()
            ws.write_message("~m~%d~m~%s" % (len(text), text))
            assert await read_ws(ws, timeout=30) == [("text", text)]
            durations.append(loop.time() - started)
            if len(durations) >= 20 * PROBES:
                break
    finally:
        ws.close()
    return durations


async def flood_xhr(base, payload, count):
    sid, _ = await open_xhr(base)
    codes = []
    for _ in range(count):
        codes.append((await fetch("%s/socket.io/xhr-polling/%s/send" % (base, sid),
                                  method="POST", body=form(payload), timeout=60)).code)
    return codes


async def flood_ws(base, payload, count):
    ws = await tornado.websocket.websocket_connect(
        base.replace("http", "ws", 1) + "/socket.io/websocket", max_message_size=1 << 22)
    await read_ws(ws)
    try:
        for _ in range(count):
            await ws.write_message(payload)
        # The server reads one message at a time: its answer comes after all of them.
        await ws.write_message("~m~4~m~done")
    except tornado.websocket.WebSocketClosedError:
        pass  # closed by the server: the next read says so
    outcome = await read_ws(ws, timeout=60)
    ws.close()
    return outcome


@pytest.mark.parametrize("transport", ["xhr-polling", "websocket"])
@pytest.mark.parametrize("payload", ["largest-legal", "over-the-cap"])
def test_while_one_client_floods_another_is_served(flood_server, transport, payload):
    port, thread, connection = flood_server
    base = "http://127.0.0.1:%d" % port
    body = LEGAL if payload == "largest-legal" else FLOOD
    count = 20 if payload == "largest-legal" else 5
    lag, sampler, stop = [], [], None

    async def go():
        nonlocal stop

        def start_sampler():
            stopping = asyncio.Event()
            sampler.append(asyncio.ensure_future(sample_lag(lag, stopping)))
            return stopping
        stop = thread.call(start_sampler)
        flooder = flood_xhr if transport == "xhr-polling" else flood_ws
        flooding = asyncio.ensure_future(flooder(base, body, count))
        durations = await probe(base, flooding)
        return await flooding, durations

    try:
        outcome, durations = run(go(), timeout=120)
    finally:
        if stop is not None:
            async def stop_sampler():
                stop.set()
                await sampler[0]
            thread.call(stop_sampler)
    print("\n%s, %s payloads: %d round trips, p99 %.1f ms, max %.1f ms; server loop lag p99 "
          "%.1f ms, max %.1f ms" % (transport, payload, len(durations),
                                    percentile(durations, 0.99) * 1000, max(durations) * 1000,
                                    percentile(lag, 0.99) * 1000, max(lag) * 1000))
    assert len(durations) >= PROBES  # every round trip completed, in order (probe checks)
    flood_frames = [m for m in connection.dispatched if m == "x"]
    if payload == "largest-legal":
        assert len(flood_frames) == count * CAP
        if transport == "xhr-polling":
            assert outcome == [200] * count
        else:
            assert outcome == [("text", "done")]
    else:
        assert flood_frames == []
        if transport == "xhr-polling":
            assert outcome == [413] * count
        else:
            assert outcome is None  # the flooding websocket was closed
