"""websocket at the wire: framing, heartbeats, drops, origins and bad input."""
import asyncio
import socket

import pytest
import tornado.websocket

from support.wire import (Events, captured_logs, echo_connection, open_ws, read_ws,
                          run, serve, tracebacks)


def test_echo_batch_and_heartbeat_cycle():
    events = Events()

    async def body():
        async with serve(echo_connection(events), {"heartbeat_interval": 0.2}) as (base, router):
            ws, sid = await open_ws(base)
            assert len(sid) == 32 and sid.isalnum()
            ws.write_message("~m~5~m~hello~m~10~m~~j~{\"a\":1}")
            got = []
            beats = 0
            while len(got) < 2 or beats < 3:
                for kind, data in await read_ws(ws):
                    if kind == "heartbeat":
                        beats += 1
                        ws.write_message("~m~%d~m~~h~%s" % (3 + len(data), data))
                    else:
                        got.append(data)
            assert got == ["hello", {"a": 1}]
            assert not events.closed  # echoed heartbeats keep it open
            ws.close()
            await events.wait_for(lambda: events.closed)
            assert len(router.sessions()) == 0
    run(body())


def test_unanswered_heartbeat_closes_socket_and_runs_on_close_once():
    events = Events()

    async def body():
        async with serve(echo_connection(events), {"heartbeat_interval": 0.1}) as (base, _):
            ws, _ = await open_ws(base)
            while True:
                frames = await read_ws(ws)
                if frames is None:
                    break
            await events.wait_for(lambda: events.closed)
            await asyncio.sleep(0.2)
    run(body())
    assert len(events.closed) == 1


def test_tcp_drop_runs_on_close_once():
    events = Events()

    async def body():
        async with serve(echo_connection(events)) as (base, router):
            ws, _ = await open_ws(base)
            ws.protocol.stream.close()  # no close frame: the network just went away
            await events.wait_for(lambda: events.closed)
            assert len(router.sessions()) == 0
            await asyncio.sleep(0.1)
    run(body())
    assert len(events.closed) == 1


@pytest.mark.parametrize("bad", ["~m~9~m~abc", "garbage", "~m~~m~", "~m~-1~m~", "~m~6~m~~j~{x}",
                                 "~m~20~m~~j~" + "[" * 5000, "~m~99999999999~m~x"])
def test_malformed_payload_closes_with_one_reason_line_and_server_lives(bad):
    events = Events()

    async def body():
        with captured_logs() as records:
            async with serve(echo_connection(events)) as (base, _):
                ws, _ = await open_ws(base)
                ws.write_message(bad)
                assert await read_ws(ws) is None
                fresh, _ = await open_ws(base)
                fresh.write_message("~m~5~m~alive")
                assert await read_ws(fresh) == [("text", "alive")]
                fresh.close()
        assert not tracebacks(records)
        reasons = [r for r in records if "closing on bad input" in r.getMessage()]
        assert len(reasons) == 1
        assert events.messages == ["alive"]
    run(body())


def test_binary_message_and_invalid_utf8_are_refused_without_traceback():
    events = Events()

    async def body():
        with captured_logs() as records:
            async with serve(echo_connection(events)) as (base, _):
                ws, _ = await open_ws(base)
                ws.write_message(b"~m~1~m~x", binary=True)
                assert await read_ws(ws) is None
                raw, _ = await open_ws(base)
                # A text frame whose bytes are not UTF-8, written by hand (masked, FIN, opcode 1).
                payload = b"~m~2~m~\xff\xfe"
                frame = bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload
                await raw.protocol.stream.write(frame)
                assert await read_ws(raw) is None
        assert not tracebacks(records)
        await asyncio.sleep(0)
    run(body())
    assert len(events.closed) == 2


def test_20_mib_frame_is_refused():
    events = Events()

    async def body():
        async with serve(echo_connection(events)) as (base, _):
            ws, _ = await open_ws(base)
            big = "x" * (20 << 20)
            ws.write_message("~m~%d~m~%s" % (len(big), big))
            assert await read_ws(ws, timeout=30) is None
            await events.wait_for(lambda: events.closed)
    run(body())
    assert events.messages == []


def test_cross_site_websocket_refused_when_origins_are_set():
    async def body():
        settings = {"allowed_origins": ["http://app.example"]}
        async with serve(echo_connection(Events()), settings) as (base, _):
            url = base.replace("http", "ws") + "/socket.io/websocket"
            with pytest.raises((tornado.websocket.WebSocketError, tornado.httpclient.HTTPClientError)):
                await tornado.websocket.websocket_connect(
                    tornado.httpclient.HTTPRequest(url, headers={"Origin": "http://evil.example"}))
            ok = await tornado.websocket.websocket_connect(
                tornado.httpclient.HTTPRequest(url, headers={"Origin": "http://app.example"}))
            assert (await ok.read_message()).startswith("~m~32~m~")
            ok.close()
    run(body())


def test_slow_consumer_hits_the_queue_cap_and_is_closed():
    events = Events()

    async def body():
        with captured_logs() as records:
            async with serve(echo_connection(events), {"max_queue_bytes": 256 << 10}) as (base, _):
                ws, _ = await open_ws(base)
                conn = events.connections[0]
                # Shrink the client's receive buffer and never read again.
                ws.protocol.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                chunk = "y" * 4096
                sent = 0
                while not conn.is_closed and sent < 20000:
                    conn.send(chunk)
                    sent += 1
                    if sent % 50 == 0:
                        await asyncio.sleep(0.001)
                assert conn.is_closed, "64 MiB were buffered for a client that reads nothing"
                await events.wait_for(lambda: events.closed)
        assert any("not reading" in r.getMessage() for r in records)
        assert not tracebacks(records)
    run(body())


import tornado.httpclient  # noqa: E402  (used above through the module attribute)
