"""Reliability and security: hostile input, limits and faults against a real server.

Every bad input is followed by a liveness check (a fresh session still echoes)
and a check that nothing was logged with a traceback.
"""
import asyncio
import logging
import resource

import pytest
import tornadio
from tornado.httpclient import AsyncHTTPClient

from tornadio import testing
from support.wire import (Events, captured_logs, echo_connection, fetch, messages, open_xhr,
                          post, run, serve, tracebacks)

FAST = {"xhr_polling_timeout": 0.5, "session_expiry": 0.5, "session_check_interval": 0.1}


async def assert_alive(base):
    async with testing.connect(base, "xhr-polling") as client:
        await client.send("alive")  # its POST answered 200
        assert await client.receive_frame() == ("text", "alive")


BAD_REQUESTS = [
    ("GET", "/socket.io/xhr-polling/" + "a" * 65 + "/1", None, 400),        # overlong id
    ("GET", "/socket.io/xhr-polling/abc%0D%0AX-Injected:%201/1", None, 400),  # CRLF in id
    ("GET", "/socket.io/xhr-polling/ab$cd/1", None, 400),                    # garbage id
    ("GET", "/socket.io/xhr-polling/0123456789abcdef0123456789abcdef/1", None, 401),  # unknown
    ("POST", "/socket.io/xhr-polling/0123456789abcdef0123456789abcdef/send", "data=~m~1~m~x", 401),
    ("POST", "/socket.io/xhr-polling//send", "data=~m~1~m~x", 400),          # no id
    ("PUT", "/socket.io/xhr-polling//1", "x", 405),
    ("DELETE", "/socket.io/xhr-polling//1", None, 405),
    ("GET", "/socket.io/no-such-transport//1", None, 404),
    ("GET", "/socket.io/jsonp-polling//1/alert(1)", None, 400),
    ("POST", "/socket.io/websocket", "data=x", 405),
    ("GET", "/socket.io/websocket", None, 400),                              # no Upgrade
    ("GET", "/socket.io/htmlfile/0123456789abcdef0123456789abcdef/1", None, 400),
]


@pytest.mark.parametrize("method, path, body, status", BAD_REQUESTS)
def test_bad_requests_get_a_clear_4xx_one_line_and_no_traceback(method, path, body, status):
    async def go():
        with captured_logs() as records:
            async with serve(echo_connection(Events()), FAST) as (base, router):
                response = await fetch(base + path, method=method, body=body,
                                       allow_nonstandard_methods=True)
                assert response.code == status
                assert len(response.body) < 200
                access = [r for r in records if r.name == "tornado.access"]
                assert len(access) == 1 and str(status) in access[0].getMessage()
                await assert_alive(base)
        assert not tracebacks(records)
    run(go())


def test_session_ids_never_logged_in_full():
    async def go():
        with captured_logs(logging.DEBUG) as records:
            async with serve(echo_connection(Events()), FAST) as (base, _):
                async with testing.connect(base, "xhr-polling") as client:
                    sid = client.session_id
                    client.send("hi")
                    assert await client.receive() == "hi"  # polled and answered
                    with pytest.raises(testing.SendRefused, match="400"):
                        await client.send_raw("~m~9~m~bad")
        text = "\n".join(r.getMessage() for r in records)
        assert sid[:6] in text and sid not in text
    run(go())


def test_huge_post_refused_before_the_body_is_sent():
    """Headers announce 50 MiB; the 413 arrives though only 1 KiB was ever sent."""
    async def go():
        async with serve(echo_connection(Events()), FAST) as (base, _):
            sid, _ = await open_xhr(base)
            host, port = base[len("http://"):].split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(("POST /socket.io/xhr-polling/%s/send HTTP/1.1\r\nHost: x\r\n"
                          "Content-Type: application/x-www-form-urlencoded\r\n"
                          "Content-Length: %d\r\n\r\n" % (sid, 50 << 20)).encode() + b"data=" + b"x" * 1024)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 10)
            assert status.startswith(b"HTTP/1.1 413")
            writer.close()
            await assert_alive(base)
    run(go())


def test_chunked_post_over_the_limit_is_413():
    async def go():
        async with serve(echo_connection(Events()), dict(FAST, max_http_body=4096)) as (base, _):
            sid, _ = await open_xhr(base)

            async def producer(write):
                for _ in range(64):
                    await write(b"x" * 1024)

            response = await fetch("%s/socket.io/xhr-polling/%s/send" % (base, sid), method="POST",
                                   body_producer=producer)
            assert response.code == 413
            await assert_alive(base)
    run(go())


def test_max_sessions_gives_503_then_recovers():
    async def go():
        events = Events()
        async with serve(echo_connection(events), dict(FAST, max_sessions=3)) as (base, router):
            for _ in range(3):
                await open_xhr(base)
            assert (await fetch(base + "/socket.io/xhr-polling//1")).code == 503
            await events.wait_for(lambda: len(events.closed) == 3, timeout=5)
            await assert_alive(base)
    run(go())


def _raise_fd_limit(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def test_5000_abandoned_polling_sessions_all_expire_and_the_container_empties():
    events = Events()

    async def go():
        async with serve(echo_connection(events), dict(FAST, session_expiry=1)) as (base, router):
            client = AsyncHTTPClient(force_instance=True, max_clients=100)
            try:
                async def one():
                    response = await client.fetch(base + "/socket.io/xhr-polling//1")
                    assert response.code == 200
                await asyncio.gather(*[one() for _ in range(5000)])
            finally:
                client.close()
            assert len(events.opened) == 5000
            await events.wait_for(lambda: len(events.closed) == 5000, timeout=20)
            assert len(router.sessions()) == 0
            assert not router.sessions().closing
    run(go(), timeout=120)
    assert len(set(events.closed)) == 5000


def test_1000_concurrent_held_long_polls_are_released_cleanly():
    if _raise_fd_limit(4096) < 2600:
        pytest.skip("not enough file descriptors for 1000 client + 1000 server sockets")
    events = Events()

    async def go():
        with captured_logs() as records:
            async with serve(echo_connection(events), dict(FAST, session_expiry=30,
                                                           xhr_polling_timeout=15)) as (base, router):
                client = AsyncHTTPClient(force_instance=True, max_clients=1100)
                try:
                    firsts = await asyncio.gather(*[client.fetch(base + "/socket.io/xhr-polling//1")
                                                    for _ in range(1000)])
                    sids = [messages(r.body.decode())[0][1] for r in firsts]
                    polls = [asyncio.ensure_future(client.fetch(
                        "%s/socket.io/xhr-polling/%s/2" % (base, sid), request_timeout=20))
                        for sid in sids]
                    for _ in range(1000):  # bounded: 20 s
                        if sum(s.has_sink for s in router.sessions()) == 1000:
                            break
                        await asyncio.sleep(0.02)
                    assert sum(s.has_sink for s in router.sessions()) == 1000
                    # Half get a message, the other half are released by closing their session.
                    for conn in events.connections[:500]:
                        conn.send("wake")
                    for conn in events.connections[500:]:
                        conn.close()
                    responses = await asyncio.gather(*polls)
                finally:
                    client.close()
                assert all(r.code == 200 for r in responses)
                assert sum(r.body == b"~m~4~m~wake" for r in responses) == 500
                assert sum(r.body == b"" for r in responses) == 500
        assert not tracebacks(records)
    run(go(), timeout=120)


def test_session_expiring_while_a_message_is_sent_loses_nothing_it_accepted():
    events = Events()

    async def go():
        async with serve(echo_connection(events), dict(FAST, session_expiry=0.3)) as (base, router):
            sid, _ = await open_xhr(base)
            conn = events.connections[0]
            await events.wait_for(lambda: events.closed, timeout=5)
            conn.send("too late")  # a logged no-op, no error
            assert (await post(base, "xhr-polling", sid, "~m~1~m~x")).code == 401
            await assert_alive(base)
    run(go())


def test_container_empty_after_every_kind_of_ending():
    events = Events()

    async def go():
        settings = dict(FAST, heartbeat_interval=0.2, session_expiry=0.3)
        async with serve(echo_connection(events), settings) as (base, router):
            clients = [await testing.connect(base) for _ in range(2)]
            await clients[0].close()                       # clean close
            clients[1].abort()                             # vanished
            clients.append(await testing.connect(base, answer_heartbeats=False))
            await open_xhr(base)                           # abandoned poller
            clients.append(await testing.connect(base))
            events.connections[-1].close()                 # closed by the server
            await events.wait_for(lambda: len(events.closed) == 5, timeout=10)
            for client in clients:
                await client.close()
            assert len(router.sessions()) == 0 and not router.sessions().closing
            assert router.sessions()._timer is None        # no periodic check left running
    run(go())


def test_graceful_shutdown_with_200_clients_of_mixed_transports():
    """100 websocket, 50 held xhr-polls, 25 htmlfile and 25 xhr-multipart streams."""
    import tornado.web
    from tornadio.server import SocketServer

    events = Events()

    async def go():
        router = tornadio.get_router(echo_connection(events), dict(FAST, xhr_polling_timeout=30,
                                                                    session_expiry=30))
        app = tornado.web.Application([router.route()], socket_io_port=0,
                                      socket_io_address="127.0.0.1", flash_policy_server=False)
        server = SocketServer(app, auto_start=False)
        base = "http://127.0.0.1:%d" % server.port
        client = AsyncHTTPClient(force_instance=True, max_clients=200)
        try:
            sockets = await asyncio.gather(*[testing.connect(base) for _ in range(100)])
            firsts = await asyncio.gather(*[client.fetch(base + "/socket.io/xhr-polling//1")
                                            for _ in range(50)])
            polls = [asyncio.ensure_future(client.fetch(
                "%s/socket.io/xhr-polling/%s/2" % (base, messages(r.body.decode())[0][1]),
                request_timeout=60)) for r in firsts]
            streams = [asyncio.ensure_future(client.fetch(
                base + path, request_timeout=60, streaming_callback=lambda chunk: None))
                for path in ["/socket.io/htmlfile//1"] * 25 + ["/socket.io/xhr-multipart/"] * 25]
            await events.wait_for(lambda: len(events.opened) == 200)
            for _ in range(500):  # bounded: until the 50 polls are held
                if sum(s.has_sink for s in router.sessions() if s.transport == "xhr-polling") == 50:
                    break
                await asyncio.sleep(0.02)
            # Bounded: shutdown(5) must return on its own well within 10 s.
            await asyncio.wait_for(server.shutdown(5), 10)
            assert len(events.closed) == 200 and len(set(events.closed)) == 200
            assert len(router.sessions()) == 0
            # Every client learnt it: polls answered, streams ended, sockets closed.
            for response in await asyncio.gather(*polls, *streams):
                assert response.code == 200
            for websocket_client in sockets:
                closed = await websocket_client.wait_closed()
                assert "server" in closed.reason
                await websocket_client.close()
        finally:
            client.close()
    run(go(), timeout=90)


def test_aborted_posts_leave_no_request_task_behind():
    async def go():
        async with serve(echo_connection(Events()), dict(FAST, session_expiry=10)) as (base, _):
            sid, _ = await open_xhr(base)
            await asyncio.sleep(0.05)
            baseline = len(asyncio.all_tasks())
            host, port = base[len("http://"):].split(":")
            for _ in range(20):
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(("POST /socket.io/xhr-polling/%s/send HTTP/1.1\r\nHost: x\r\n"
                              "Content-Length: 500000\r\n\r\n" % sid).encode() + b"data=" + b"x" * 1000)
                await writer.drain()
                writer.close()
            for _ in range(100):  # bounded: 2 s for the server to see the closes
                if len(asyncio.all_tasks()) <= baseline:
                    break
                await asyncio.sleep(0.02)
            assert len(asyncio.all_tasks()) <= baseline
            await assert_alive(base)
    run(go())


def test_slow_coroutine_on_message_holds_the_reader_instead_of_queueing():
    depth = []

    class Slow(tornadio.SocketConnection):
        async def on_message(self, message):
            depth.append(len(self.session._inbox or ()))
            await asyncio.sleep(0.002)
            self.send(message)

    async def go():
        async with serve(Slow) as (base, _):
            async with testing.connect(base) as client:
                for i in range(200):
                    client.send(str(i))  # one WebSocket message per frame
                got = [await client.receive() for _ in range(200)]
                assert got == [str(i) for i in range(200)]
    run(go())
    # One WebSocket message carries one frame here: nothing ever waits behind the one running.
    assert max(depth) == 0


def test_inbox_is_capped_when_payloads_pile_up():
    """One payload is bounded by max_frames_per_payload; what overlapping POSTs pile
    up behind a slow coroutine on_message is bounded by the inbox."""
    from tornadio import session as sessions

    class Slow(tornadio.SocketConnection):
        async def on_message(self, message):
            await asyncio.sleep(1)

    async def go():
        with captured_logs() as records:
            async with serve(Slow) as (base, router):
                sid, _ = await open_xhr(base)
                batch = "~m~1~m~x" * (sessions.MAX_INBOX // 2 + 10)
                answers = await asyncio.gather(post(base, "xhr-polling", sid, batch),
                                               post(base, "xhr-polling", sid, batch))
                assert [answer.code for answer in answers] == [200, 200]
                assert len(router.sessions()) == 0
        assert any("wait for on_message" in r.getMessage() for r in records)
    run(go())


@pytest.mark.parametrize("origin", ["http://[abc", "http://x:99999", "ftp://", "null"])
def test_malformed_origins_are_refused_not_crashed(origin):
    async def go():
        settings = dict(FAST, allowed_origins=["http://ok.example"], jsonp_cross_site=False)
        with captured_logs() as records:
            async with serve(echo_connection(Events()), settings) as (base, _):
                for path in ("/socket.io/xhr-polling//1", "/socket.io/jsonp-polling//1/0"):
                    response = await fetch(base + path, headers={
                        "Origin": origin, "Referer": origin, "Sec-Fetch-Site": "cross-site"})
                    assert response.code == 403
                await assert_alive(base)
        assert not tracebacks(records)
    run(go())


def test_websocket_over_the_session_limit_gets_503_before_the_upgrade():
    async def go():
        async with serve(echo_connection(Events()), dict(FAST, max_sessions=1)) as (base, _):
            async with testing.connect(base):
                with pytest.raises(testing.ConnectionRefused) as refused:
                    await testing.connect(base)
                assert refused.value.status == 503
    run(go())
