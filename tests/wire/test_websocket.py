"""websocket at the wire: framing, heartbeats, drops, origins and bad input."""
import asyncio
import gc
import inspect
import socket

import pytest
import tornado.web
import tornado.websocket

import tornadio
from tornadio import persistent, session as sessions, testing
from tornadio.persistent import WebSocketTransport
from support.wire import (WAIT, Events, captured_logs, echo_connection, messages, run, serve,
                          tracebacks)


def test_echo_batch_and_heartbeat_cycle():
    events = Events()

    async def body():
        async with serve(echo_connection(events), {"heartbeat_interval": 0.2}) as (base, router):
            client = await testing.connect(base)
            sid = client.session_id
            assert len(sid) == 32 and sid.isalnum()
            client.send(["hello", {"a": 1}])  # one WebSocket message, two frames
            got = [await client.receive(), await client.receive()]
            await client.wait_heartbeats(3)  # each echoed by the client
            assert got == ["hello", {"a": 1}]
            assert not events.closed  # echoed heartbeats keep it open
            await client.close()
            await events.wait_for(lambda: events.closed)
            assert len(router.sessions()) == 0
    run(body())


async def _speak(client):
    """One message and its echo: the server's link then reads the socket itself."""
    await client.send("hi")
    assert await client.receive() == "hi"


@pytest.mark.parametrize("spoke_first", [False, True], ids=["silent", "after-a-message"])
def test_unanswered_heartbeat_closes_socket_and_runs_on_close_once(spoke_first):
    events = Events()

    async def body():
        async with serve(echo_connection(events), {"heartbeat_interval": 0.1}) as (base, _):
            client = await testing.connect(base, answer_heartbeats=False)
            if spoke_first:
                await _speak(client)
            await client.wait_closed()
            await events.wait_for(lambda: events.closed)
            await asyncio.sleep(0.2)
    run(body())
    assert len(events.closed) == 1


@pytest.mark.parametrize("spoke_first", [False, True], ids=["silent", "after-a-message"])
def test_tcp_drop_runs_on_close_once(spoke_first):
    events = Events()

    async def body():
        async with serve(echo_connection(events)) as (base, router):
            client = await testing.connect(base)
            if spoke_first:
                await _speak(client)
            client.abort()  # no close frame: the network just went away
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
                client = await testing.connect(base)
                client.send_raw(bad)
                with pytest.raises(testing.ConnectionClosed):
                    await client.receive()
                async with testing.connect(base) as fresh:
                    fresh.send("alive")
                    assert await fresh.receive_frame() == ("text", "alive")
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
                client = await testing.connect(base)
                client.websocket.write_message(b"~m~1~m~x", binary=True)
                await client.wait_closed()
                raw = await testing.connect(base)
                # A text frame whose bytes are not UTF-8, written by hand (masked, FIN, opcode 1).
                payload = b"~m~2~m~\xff\xfe"
                frame = bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload
                await raw.websocket.protocol.stream.write(frame)
                await raw.wait_closed()
        assert not tracebacks(records)
        await asyncio.sleep(0)
    run(body())
    assert len(events.closed) == 2


def test_20_mib_frame_is_refused():
    events = Events()

    async def body():
        async with serve(echo_connection(events)) as (base, _):
            client = await testing.connect(base)
            client.send("x" * (20 << 20))
            await client.wait_closed(timeout=30)
            await events.wait_for(lambda: events.closed)
    run(body())
    assert events.messages == []


def test_cross_site_websocket_refused_when_origins_are_set():
    async def body():
        settings = {"allowed_origins": ["http://app.example"]}
        async with serve(echo_connection(Events()), settings) as (base, _):
            with pytest.raises(testing.ConnectionRefused) as refused:
                await testing.connect(base, headers={"Origin": "http://evil.example"})
            assert refused.value.status == 403
            async with testing.connect(base, headers={"Origin": "http://app.example"}) as ok:
                assert len(ok.session_id) == 32
    run(body())


@pytest.mark.parametrize("spoke_first", [False, True], ids=["silent", "after-a-message"])
def test_slow_consumer_hits_the_queue_cap_and_is_closed(spoke_first):
    """Silent, the socket is still read through its IOStream; once the client
    has spoken, the link writes to the socket itself. Both are bounded."""
    events = Events()

    async def body():
        with captured_logs() as records:
            async with serve(echo_connection(events), {"max_queue_bytes": 256 << 10}) as (base, _):
                # A raw WebSocket: after the id it is never read again (Tornado's
                # client stops reading when one message is waiting unread).
                ws = await asyncio.wait_for(tornado.websocket.websocket_connect(
                    base.replace("http", "ws", 1) + "/socket.io/websocket"), WAIT)
                assert messages(await asyncio.wait_for(ws.read_message(), WAIT))[0][0] == "text"
                if spoke_first:
                    await ws.write_message("~m~2~m~hi")
                    assert await asyncio.wait_for(ws.read_message(), WAIT) == "~m~2~m~hi"
                conn = events.connections[0]
                assert conn._tornadio_session._sink.link._direct == spoke_first
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
                assert conn._tornadio_session.close_reason == sessions.REASON_OVERFLOW
                await events.wait_for(lambda: events.closed)
                ws.close()
        assert any("not reading" in r.getMessage() for r in records)
        assert not tracebacks(records)
    run(body())



class PlainEcho(tornado.websocket.WebSocketHandler):
    """Tornado's own WebSocket handler: the memory floor an idle TornadIO socket is held to."""

    def on_message(self, message):
        self.write_message(message)


def test_a_burst_of_idle_sockets_keeps_no_state_of_ours_in_their_instance_dicts():
    # Many upgrades in one loop turn, as when clients reconnect after a restart:
    # on CPython 3.11 that leaves each handler class no shared-key room for
    # names set later, so every extra attribute would cost a private dict.
    burst = 40

    async def body():
        async with serve(echo_connection(Events()), extra_handlers=[("/plain", PlainEcho)]) \
                as (base, router):
            url = base.replace("http", "ws", 1)
            ours = await asyncio.gather(*[asyncio.wait_for(tornado.websocket.websocket_connect(
                url + "/socket.io/websocket"), WAIT) for _ in range(burst)])
            theirs = await asyncio.gather(*[asyncio.wait_for(tornado.websocket.websocket_connect(
                url + "/plain"), WAIT) for _ in range(burst)])
            for ws in ours:  # each session is open once its id arrived
                assert messages(await asyncio.wait_for(ws.read_message(), WAIT))[0][1].isalnum()
            handlers = [obj for obj in gc.get_objects()
                        if isinstance(obj, tornado.web.RequestHandler)]
            transports = [h for h in handlers
                          if isinstance(h, WebSocketTransport) and h.router is router]
            plains = [h for h in handlers if isinstance(h, PlainEcho)]
            assert len(transports) == burst and len(plains) == burst
            assert all(h.session is not None for h in transports)
            plain_names = set(plains[0].__dict__)
            for handler in transports:
                assert set(handler.__dict__) <= plain_names
            # One coroutine of ours serves each socket; none that finished (the
            # upgrade, on_open) may stay referenced with its frame.
            methods = {f.__code__ for f in vars(WebSocketTransport).values()
                       if inspect.isfunction(f)}
            ours_running = [obj for obj in gc.get_objects()
                            if inspect.iscoroutine(obj) and obj.cr_code in methods]
            assert all(inspect.getcoroutinestate(c) != inspect.CORO_CLOSED for c in ours_running)
            for ws in ours + theirs:
                ws.close()
    run(body())


# -- RFC 6455 at the byte level: what a browser (or a broken client) may send ---------

def _client_frame(opcode, data, fin=True, masked=True):
    mask = b"\x01\x02\x03\x04"
    head = bytes(((0x80 if fin else 0) | opcode, (0x80 if masked else 0) | len(data)))
    if not masked:
        return head + data
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))


async def _raw_upgrade(base, version="13", key="dGhlIHNhbXBsZSBub25jZQ=="):
    """A raw RFC 6455 upgrade: (reader, writer, status line, response head)."""
    host, port = base.rsplit("/", 1)[1].rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), WAIT)
    lines = ["GET /socket.io/websocket HTTP/1.1", "Host: %s:%s" % (host, port),
             "Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: " + version]
    if key:
        lines.append("Sec-WebSocket-Key: " + key)
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)).decode("latin-1")
    return reader, writer, head.split("\r\n", 1)[0], head


async def _server_frame(reader):
    """(opcode, payload) of the next server frame; servers never mask."""
    first, second = await asyncio.wait_for(reader.readexactly(2), WAIT)
    assert not second & 0x80
    size = second & 0x7F
    if size == 126:
        size = int.from_bytes(await reader.readexactly(2), "big")
    elif size == 127:
        size = int.from_bytes(await reader.readexactly(8), "big")
    return first & 0x0F, await asyncio.wait_for(reader.readexactly(size), WAIT)


def test_raw_upgrade_ping_fragments_and_the_closing_handshake():
    events = Events()

    async def body():
        async with serve(echo_connection(events)) as (base, _):
            reader, writer, status, head = await _raw_upgrade(base)
            assert status == "HTTP/1.1 101 Switching Protocols"
            assert "sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=" in head.lower()
            opcode, sid = await _server_frame(reader)
            assert opcode == 1 and sid.startswith(b"~m~32~m~")
            writer.write(_client_frame(0x9, b"are you there"))
            assert await _server_frame(reader) == (0xA, b"are you there")
            # One payload in three frames, a ping between them.
            writer.write(_client_frame(0x1, b"~m~5~m", fin=False) + _client_frame(0x9, b"") +
                         _client_frame(0x0, b"~he", fin=False) + _client_frame(0x0, b"llo"))
            # The pong comes once the read's frames are handled: before or after the echo.
            got = {await _server_frame(reader), await _server_frame(reader)}
            assert got == {(0xA, b""), (0x1, b"~m~5~m~hello")}
            writer.write(_client_frame(0x8, (1000).to_bytes(2, "big") + b"bye"))
            assert await _server_frame(reader) == (0x8, (1000).to_bytes(2, "big"))
            assert await asyncio.wait_for(reader.read(), WAIT) == b""  # then the TCP close
            await events.wait_for(lambda: events.closed)
            writer.close()
    run(body())
    assert events.messages == ["hello"] and len(events.closed) == 1


@pytest.mark.parametrize("spoke_first", [False, True], ids=["first-read", "after-a-message"])
@pytest.mark.parametrize("frame, code", [
    (_client_frame(0x1, b"~m~1~m~x", masked=False), 1002),
    (bytes((0xC1, 0x80 | 8)) + b"\0\0\0\0~m~1~m~x", 1002),  # RSV1 without an extension
    (_client_frame(0x3, b"x"), 1002),
    (_client_frame(0x1, b"~m~2~m~\xff\xfe"), 1007),
    (_client_frame(0x8, (1005).to_bytes(2, "big")), 1002),  # a code no endpoint sends
    (_client_frame(0x8, (1000).to_bytes(2, "big") + b"\xff"), 1007),  # reason not UTF-8
])
def test_a_frame_breaking_rfc6455_closes_with_its_code_and_one_line(frame, code, spoke_first):
    """The first read goes through IOStream, later ones through the link: both
    close the session as bad input, with one log line."""
    events = Events()

    async def body():
        with captured_logs() as records:
            async with serve(echo_connection(events)) as (base, _):
                reader, writer, status, _head = await _raw_upgrade(base)
                await _server_frame(reader)  # the id
                if spoke_first:
                    writer.write(_client_frame(0x1, b"~m~2~m~hi"))
                    assert await _server_frame(reader) == (0x1, b"~m~2~m~hi")
                    assert events.connections[0]._tornadio_session._sink.link._direct
                writer.write(frame)
                opcode, payload = await _server_frame(reader)
                assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == code
                await events.wait_for(lambda: events.closed)
                writer.close()
        assert not tracebacks(records)
        assert len([r for r in records if "closing on bad input" in r.getMessage()]) == 1
        session = events.connections[0]._tornadio_session
        assert session.close_reason == sessions.REASON_BAD_INPUT
    run(body())
    assert events.messages == (["hi"] if spoke_first else [])


@pytest.mark.parametrize("version, key, status", [("9", "abc", 426), ("13", "", 400)])
def test_a_bad_upgrade_is_answered_before_any_session(version, key, status):
    events = Events()

    async def body():
        async with serve(echo_connection(events)) as (base, router):
            reader, writer, line, head = await _raw_upgrade(base, version=version, key=key)
            assert line.split()[1] == str(status)
            if status == 426:
                assert "sec-websocket-version: 13, 8, 7" in head.lower()
            assert len(router.sessions()) == 0
            writer.close()
    run(body())
    assert events.opened == []


def test_what_the_kernel_does_not_take_at_once_reaches_a_slow_reader_whole_and_in_order():
    events = Events()
    count, size = 400, 16 << 10

    async def body():
        async with serve(echo_connection(events), {"max_queue_bytes": 64 << 20}) as (base, _):
            reader, writer, _status, _head = await _raw_upgrade(base)
            await _server_frame(reader)  # the id
            writer.write(_client_frame(0x1, b"~m~2~m~hi"))
            assert await _server_frame(reader) == (0x1, b"~m~2~m~hi")
            conn = events.connections[0]
            sent = ["%06d" % number + "x" * (size - 6) for number in range(count)]
            for text in sent:  # 6.4 MiB, one write at the end of this loop turn
                conn.send(text)
            await asyncio.sleep(0)
            link = conn._tornadio_session._sink.link
            assert link._direct and link._out, "the kernel took it all: nothing waited in the link"
            assert link.unsent == len(link._out)
            opcode, payload = await _server_frame(reader)
            assert opcode == 0x1
            assert messages(payload.decode()) == [("text", text) for text in sent]
            assert link.unsent == 0
            writer.write(_client_frame(0x1, b"~m~3~m~end"))
            assert await _server_frame(reader) == (0x1, b"~m~3~m~end")
            writer.close()
    run(body())


def test_frames_sent_behind_a_large_upgrade_request_are_all_delivered():
    """A client that does not wait for the 101 (RFC 6455 §4.1 says it must)
    behind headers larger than one read: IOStream holds several reads' worth
    when the upgrade is answered, and every byte of it is still read."""
    events = Events()
    count = 20_000

    async def body():
        router = tornadio.get_router(echo_connection(events))
        app = tornado.web.Application([router.route()])
        async with testing.serve(app, max_header_size=1 << 20) as base:
            host, port = base.rsplit("/", 1)[1].rsplit(":", 1)
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), WAIT)
            head = ("GET /socket.io/websocket HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
                    "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Pad: %s\r\n\r\n"
                    % (host, port, "p" * 300_000))
            frames = b"".join(_client_frame(0x1, b"~m~%d~m~%d" % (len(b"%d" % n), n))
                              for n in range(count))
            writer.write(head.encode() + frames)
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            await _server_frame(reader)  # the id
            echoed = []
            while len(echoed) < count:
                opcode, payload = await _server_frame(reader)
                echoed += [data for kind, data in messages(payload.decode())]
            assert echoed == [str(n) for n in range(count)]
            writer.close()
    run(body())
    assert events.messages == [str(n) for n in range(count)]


def test_pings_in_one_read_get_one_pong_and_a_refused_client_is_let_go_at_once():
    class Refusing(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            return False

    async def body():
        async with serve(echo_connection(Events())) as (base, _):
            reader, writer, _status, _head = await _raw_upgrade(base)
            await _server_frame(reader)  # the id
            writer.write(b"".join(_client_frame(0x9, b"%d" % n) for n in range(50)))
            assert await _server_frame(reader) == (0xA, b"49")
            writer.write(_client_frame(0x1, b"~m~4~m~last"))
            assert await _server_frame(reader) == (0x1, b"~m~4~m~last")  # no other pong
            writer.close()
        async with serve(Refusing) as (base, _):
            reader, writer, status, _head = await _raw_upgrade(base)
            opcode, payload = await _server_frame(reader)
            assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1008
            writer.write(_client_frame(0x8, payload[:2]))
            # The handshake is complete: the server closes TCP now, not after its
            # wait for an answer (made longer than this test's own bound).
            assert await asyncio.wait_for(reader.read(), WAIT) == b""
            writer.close()

    saved = persistent.CLOSE_FLUSH_TIMEOUT
    persistent.CLOSE_FLUSH_TIMEOUT = 3600.0
    try:
        run(body())
    finally:
        persistent.CLOSE_FLUSH_TIMEOUT = saved


def test_a_flood_of_control_frames_leaves_the_loop_turns_and_an_idle_socket_keeps_no_copy():
    events = Events()
    turns = [0]
    spinning = [True]

    def spin():  # runs once per loop iteration while spinning
        turns[0] += 1
        if spinning[0]:
            asyncio.get_running_loop().call_soon(spin)

    async def body():
        async with serve(echo_connection(events)) as (base, router):
            reader, writer, _status, _head = await _raw_upgrade(base)
            await _server_frame(reader)  # the id
            big = "z" * 900_000
            framed = ("~m~%d~m~%s" % (len(big), big)).encode()
            head = bytes((0x81, 0x80 | 127)) + len(framed).to_bytes(8, "big") + b"\0\0\0\0"
            writer.write(head + framed)
            opcode, echoed = await _server_frame(reader)
            assert opcode == 0x1 and len(echoed) == len(framed)
            # Idle again: no coroutine reads this socket any more (the loop calls
            # its link back), and nothing of that message is kept.
            handlers = [obj for obj in gc.get_objects()
                        if isinstance(obj, WebSocketTransport) and obj.router is router]
            assert len(handlers) == 1
            handler = handlers[0]
            parts = (handler, handler.link, handler._reader)
            readers = [obj for obj in gc.get_objects() if inspect.iscoroutine(obj)
                       and obj.cr_frame is not None
                       and any(obj.cr_frame.f_locals.get("self") is part for part in parts)]
            assert readers == []
            held = [(type(part).__name__, name) for part in parts for name in type(part).__slots__
                    if isinstance(getattr(part, name, None), (bytes, bytearray, str, list))
                    and len(getattr(part, name)) > 1000]
            assert held == []
            # 100,000 pongs in one write, then a message. Reading the flood takes
            # many loop turns (one at least every 256 frames: 390), not one per
            # socket-buffer's worth; the message after it arrives.
            spin()
            writer.write(_client_frame(0xA, b"") * 100_000 + _client_frame(0x1, b"~m~3~m~end"))
            assert await _server_frame(reader) == (0x1, b"~m~3~m~end")
            spinning[0] = False
            assert turns[0] >= 390, "the flood was read in %d loop turns" % turns[0]
            writer.close()
    run(body())


def test_a_message_in_the_same_read_as_a_bad_frame_is_delivered_first():
    events = Events()

    async def body():
        async with serve(echo_connection(events)) as (base, _):
            reader, writer, _status, _head = await _raw_upgrade(base)
            await _server_frame(reader)  # the id
            writer.write(_client_frame(0x1, b"~m~4~m~good") + _client_frame(0x1, b"x", masked=False))
            assert await _server_frame(reader) == (0x1, b"~m~4~m~good")
            opcode, payload = await _server_frame(reader)
            assert opcode == 0x8 and int.from_bytes(payload[:2], "big") == 1002
            await events.wait_for(lambda: events.closed)
            writer.close()
    run(body())
    assert events.messages == ["good"]
