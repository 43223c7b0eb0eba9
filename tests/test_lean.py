"""The lean path of the polling transports (tornadio.lean) answers exactly as
the RequestHandler path does: the same statuses, headers and bodies, the same
access-log lines through the application's ``log_function``, limits, origins,
xheaders and client drops. Each script runs twice on real loopback servers,
once with the lean path on and once with it off, and the raw answers are
compared byte for byte (session ids and the Date header aside).
"""
import asyncio
import contextlib
import logging
import re
import socket

import tornado.web
from tornado import httputil
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port

import tornadio
from tornadio import lean
from support.wire import Events, captured_logs, echo_connection, form, run, tracebacks

SID = re.compile(r"\b[0-9a-f]{32}\b")
SHORT_SID = re.compile(r"/[0-9a-f]{6}…")
SETTINGS = {"xhr_polling_timeout": 0.3, "allowed_origins": ["http://good.example"],
            "jsonp_cross_site": False, "max_http_body": 1000}


class Raw:
    """One kept-alive connection; answers come back raw (status line, headers in order)."""

    def __init__(self, port):
        self.port = port
        self.reader = self.writer = None

    async def open(self):
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", self.port), 5)
        return self

    async def send(self, method, path, body=None, headers=(), declared=None):
        self.method = method
        head = "%s %s HTTP/1.1\r\n" % (method, path)
        if not any(name.lower() == "host" for name, _ in headers):
            head += "Host: 127.0.0.1\r\n"
        for name, value in headers:
            head += "%s: %s\r\n" % (name, value)
        data = b"" if body is None else body.encode()
        if body is not None or declared is not None:
            head += ("Content-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: %d\r\n" % (len(data) if declared is None else declared))
        self.writer.write(head.encode() + b"\r\n" + data)

    async def answer(self, timeout=5):
        raw = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        lines = raw.decode("latin-1").split("\r\n")[:-2]
        length = 0
        kept = [lines[0]]
        for line in lines[1:]:
            name, _, value = line.partition(": ")
            if name.lower() == "content-length":
                length = int(value)
            if name.lower() != "date":
                kept.append(line)
        if self.method == "HEAD":
            length = 0
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return "\n".join(kept) + "\n\n" + body.decode("utf-8")

    async def request(self, *args, **kwargs):
        await self.send(*args, **kwargs)
        return await self.answer()

    def close(self):
        self.writer.close()


def recorded_log():
    """(log, log_function): each finished request appended as (status, summary, lean?)."""
    log = []

    def log_function(handler):
        log.append((handler.get_status(), handler._request_summary(),
                    isinstance(handler, lean.LeanHandler)))

    return log, log_function


@contextlib.asynccontextmanager
async def server(lean_on, settings=SETTINGS, xheaders=False, connection=None,
                 app_class=tornado.web.Application, record=True, http_options=None):
    """A router on 127.0.0.1 with the lean path on or off; yields (port, router, log).

    ``record=False`` leaves the application's default ``log_request`` at work;
    ``http_options`` go to the HTTPServer."""
    log, log_function = recorded_log()
    router = tornadio.get_router(connection or echo_connection(Events()), settings)
    app = app_class([router.route()], **({"log_function": log_function} if record else {}))
    router.learn_application(app)
    if not lean_on:
        router.learn_application(tornado.web.Application())  # a second one: lean path off
    assert (router.application is app) == lean_on
    sock, port = bind_unused_port(address="127.0.0.1")
    http = HTTPServer(app, xheaders=xheaders, **(http_options or {}))
    http.add_sockets([sock])
    try:
        yield port, router, log
    finally:
        http.stop()
        router.sessions().close_all()
        await asyncio.sleep(0)


def normalised(text):
    return SHORT_SID.sub("/<sid>…", SID.sub("<sid>", text))


def sid_of(answer):
    return SID.search(answer).group(0)


async def polling_script(port, router):
    """Every answer of a session's life over xhr-polling and jsonp-polling, and the errors."""
    out = []
    conn = await Raw(port).open()
    first = await conn.request("GET", "/socket.io/xhr-polling//1")
    sid = sid_of(first)
    out.append(first)
    out.append(await conn.request("GET", "/socket.io/xhr-polling/%s/2" % sid))  # held, times out
    out.append(await conn.request("POST", "/socket.io/xhr-polling/%s/send" % sid,
                                  form("~m~5~m~hello")))
    out.append(await conn.request("GET", "/socket.io/xhr-polling/%s/3" % sid))
    out.append(await conn.request("POST", "/socket.io/xhr-polling/%s/send" % sid,
                                  form("~m~2~m~hi"), headers=[("Origin", "http://good.example")]))
    out.append(await conn.request("GET", "/socket.io/xhr-polling/%s/4" % sid,
                                  headers=[("Origin", "http://good.example")]))
    for path, body, headers in [
            ("/socket.io/xhr-polling/%s/send" % sid, "data=x", [("Origin", "http://evil.example")]),
            ("/socket.io/xhr-polling/%s/send" % sid, "junk=1", []),
            ("/socket.io/xhr-polling/%s/send" % sid, form("~m~9~m~bad"), []),
            ("/socket.io/xhr-polling/%s/send" % sid, "data=%FF", []),
            ("/socket.io/xhr-polling/%s/nosend" % sid, form("~m~1~m~x"), []),
            ("/socket.io/xhr-polling/%s/send" % ("0" * 32), form("~m~1~m~x"), []),
            ("/socket.io/htmlfile/%s/send" % ("0" * 32), form("~m~1~m~x"), []),
            ("/socket.io/xhr-multipart/%s/send" % sid, form("~m~1~m~x"), [])]:
        out.append(await conn.request("POST", path, body, headers=headers))
    for path, headers in [("/socket.io/xhr-polling/ab$cd/1", []),
                          ("/socket.io/xhr-polling/%s/5" % ("0" * 32), []),
                          ("/socket.io/xhr-polling/%s/5" % sid, [("Origin", "http://evil.example")])]:
        out.append(await conn.request("GET", path, headers=headers))
    # A path that is not UTF-8: 400, and Tornado closes the connection.
    out.append(await conn.request("GET", "/socket.io/xhr-polling/%FF/5"))
    conn.close()
    conn = await Raw(port).open()
    out.append(await conn.request("HEAD", "/socket.io/xhr-polling/%s/6" % sid))
    out.append(await conn.request("OPTIONS", "/socket.io/xhr-polling/%s/send" % sid,
                                  headers=[("Origin", "http://good.example"),
                                           ("Access-Control-Request-Headers", "content-type")]))
    # jsonp-polling: index in the URL, JavaScript answers, cross-site refusal.
    jfirst = await conn.request("GET", "/socket.io/jsonp-polling//1/0")
    jsid = sid_of(jfirst)
    out.append(jfirst)
    out.append(await conn.request("POST", "/socket.io/jsonp-polling/%s/2/0" % jsid,
                                  form("~m~4~m~a\r\nb")))
    out.append(await conn.request("GET", "/socket.io/jsonp-polling/%s/3/7" % jsid))
    out.append(await conn.request("GET", "/socket.io/jsonp-polling/%s/4/x" % jsid))
    out.append(await conn.request("GET", "/socket.io/jsonp-polling/%s/4/0" % jsid,
                                  headers=[("Sec-Fetch-Site", "cross-site")]))
    out.append(await conn.request("GET", "/socket.io/xhr-polling/%s/5" % jsid))
    # An oversized POST is refused from its headers; the connection then closes.
    await conn.send("POST", "/socket.io/xhr-polling/%s/send" % sid, declared=5000)
    out.append(await conn.answer())
    assert await asyncio.wait_for(conn.reader.read(), 5) == b""
    conn.close()
    # The server closes the session: its last words, then 401.
    conn = await Raw(port).open()
    router.sessions().get(sid).send("bye")
    router.sessions().get(sid).close()
    out.append(await conn.request("GET", "/socket.io/xhr-polling/%s/7" % sid))
    out.append(await conn.request("GET", "/socket.io/xhr-polling/%s/8" % sid))
    conn.close()
    return out


async def run_both(script, **kwargs):
    results = {}
    for lean_on in (True, False):
        with captured_logs() as records:
            async with server(lean_on, **kwargs) as (port, router, log):
                answers = await script(port, router)
                await asyncio.sleep(0.05)
        assert not tracebacks(records), [r.getMessage() for r in tracebacks(records)]
        results[lean_on] = ([normalised(a) for a in answers],
                            [(status, normalised(summary)) for status, summary, _ in log],
                            [took_lean for _, _, took_lean in log])
    return results


def test_every_polling_answer_and_log_line_is_the_same_on_both_paths():
    async def go():
        results = await run_both(polling_script)
        lean_answers, lean_log, lean_used = results[True]
        plain_answers, plain_log, plain_used = results[False]
        for mine, theirs in zip(lean_answers, plain_answers):
            assert mine == theirs
        assert len(lean_answers) == len(plain_answers)
        assert lean_log == plain_log
        assert not any(plain_used)
        # Long polls and POSTs went the lean way; HEAD, OPTIONS and the path
        # that is not UTF-8 did not.
        assert sum(lean_used) == len(lean_used) - 3
        statuses = [status for status, _ in lean_log]
        assert {200, 400, 401, 403, 404, 405, 413} <= set(statuses)
        assert all("<sid>" not in summary or "…" in summary for _, summary in lean_log)
    run(go())


def test_session_limits_and_shutdown_answers_are_the_same_on_both_paths():
    async def script(port, router):
        out = []
        conn = await Raw(port).open()
        first = await conn.request("GET", "/socket.io/xhr-polling//1")
        out.append(first)
        out.append(await conn.request("GET", "/socket.io/xhr-polling//1"))  # 503: one in handshake
        sid = sid_of(first)
        await conn.send("GET", "/socket.io/xhr-polling/%s/2" % sid)  # held ...
        await asyncio.sleep(0.05)
        await router.stop_sessions()  # ... answered at once, Connection: close
        out.append(await conn.answer())
        conn.close()
        conn = await Raw(port).open()
        out.append(await conn.request("GET", "/socket.io/xhr-polling/%s/3" % sid))  # quiet answer
        out.append(await conn.request("POST", "/socket.io/xhr-polling/%s/send" % sid,
                                      form("~m~1~m~x")))
        conn.close()
        router.restart()
        conn = await Raw(port).open()
        out.append(await conn.request("GET", "/socket.io/xhr-polling/%s/4" % sid))  # 401 again
        conn.close()
        return out

    async def go():
        results = await run_both(script, settings={"max_sessions": 1})
        assert results[True][:2] == results[False][:2]
        assert all(results[True][2]) and not any(results[False][2])
        answers = results[True][0]
        assert answers[1].startswith("HTTP/1.1 503")
        assert "Connection: close" in answers[2] and "Connection: close" in answers[3]
        assert answers[5].startswith("HTTP/1.1 401")
    run(go())


async def exchange(port, lines, body=b"", sock=None, read_at_once=True):
    """One request of the given head lines on a new connection: (answer, closed after?).

    ``closed`` is whether the server ended the connection after its answer
    rather than keeping it alive to answer the next request."""
    if sock is None:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    else:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(sock=sock), 5)
    try:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        if not read_at_once:
            await asyncio.sleep(0.3)  # the answer waits in the server's buffers meanwhile
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        data = await asyncio.wait_for(reader.readexactly(length), 10)
        # Kept open or not: a further request gets an answer, or the end of the stream.
        try:
            writer.write(b"GET /socket.io/xhr-polling/%s/9 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
                         % (b"0" * 32))
            closed = await asyncio.wait_for(reader.read(1), 5) == b""
        except ConnectionError:
            closed = True
        text = re.sub(r"Date: [^\r]*\r\n", "", head.decode("latin-1"))
        return text, data, closed
    finally:
        writer.close()


def test_keep_alive_and_connection_close_answers_are_tornados_on_the_lean_path():
    """The lean answer is written in one piece, without Tornado's write_headers:
    its Connection header and whether the connection stays open follow Tornado's
    rules for every request version and Connection header, and for a server
    with no_keep_alive, exactly as the RequestHandler path gives them."""
    cases = [("HTTP/1.1", []), ("HTTP/1.1", ["Connection: close"]),
             ("HTTP/1.1", ["Connection: Keep-Alive"]), ("HTTP/1.0", []),
             ("HTTP/1.0", ["Connection: keep-alive"]), ("HTTP/1.0", ["Connection: close"])]

    async def script(port, router):
        out = []
        for version, extra in cases:
            host = ["Host: 127.0.0.1"]
            first = await exchange(port, ["GET /socket.io/xhr-polling//1 " + version] + host + extra)
            sid = sid_of(first[1].decode())
            out.append((first[0], normalised(first[1].decode()), first[2]))
            body = form("~m~5~m~hello").encode()
            posted = await exchange(port, ["POST /socket.io/xhr-polling/%s/send %s" % (sid, version)]
                                    + host + extra + ["Content-Length: %d" % len(body),
                                                      "Content-Type: application/x-www-form-urlencoded"],
                                    body)
            out.append(posted)
            polled = await exchange(port, ["GET /socket.io/xhr-polling/%s/2 %s" % (sid, version)]
                                    + host + extra)
            out.append(polled)
        return out

    async def go():
        for no_keep_alive in (False, True):
            results = {}
            for lean_on in (True, False):
                with captured_logs() as records:
                    async with server(lean_on, http_options={"no_keep_alive": no_keep_alive}
                                      ) as (port, router, log):
                        results[lean_on] = await script(port, router)
                        took = [took_lean for _, _, took_lean in log]
                assert not tracebacks(records)
                assert all(took) if lean_on else not any(took), took
            assert results[True] == results[False]
            closed = [closed for _, _, closed in results[True]]
            heads = [head for head, _, _ in results[True]]
            if no_keep_alive:
                assert all(closed)
                assert all("Connection: close" in head for head, (version, _) in
                           zip(heads, [c for c in cases for _ in range(3)]) if version == "HTTP/1.1")
            else:
                # kept: 1.1 plain, 1.1 keep-alive, 1.0 keep-alive (with its Keep-Alive header)
                assert closed == [False] * 3 + [True] * 3 + [False] * 3 + [True] * 3 \
                    + [False] * 3 + [True] * 3
                assert all("Connection: Keep-Alive" in head for head in heads[12:15])
                assert all("Connection: close" in head for head in heads[3:6])
    run(go())


def more_than_the_kernel_buffers():
    """An answer size no socket pair takes at once: three times the largest
    send buffer TCP may grow to here (the receiver's is kept at 4 KB)."""
    try:
        with open("/proc/sys/net/ipv4/tcp_wmem") as limits:
            largest = int(limits.read().split()[2])
    except (OSError, ValueError, IndexError):
        largest = 4 << 20
    return 3 * max(largest, 1 << 20)


@contextlib.asynccontextmanager
async def any_path(path, settings, http_options):
    """A server whose polls take ``path``: "front door" (SocketServer), "routed"
    (the lean rule behind Tornado's routing) or "handler" (RequestHandlers);
    yields (port, router, log)."""
    if path == "front door":
        async with socket_server(settings=settings, http_options=http_options) as (
                port, router, log, _):
            yield port, router, log
    else:
        async with server(path == "routed", settings=settings, http_options=http_options) as (
                port, router, log):
            yield port, router, log


async def slow_reader(port):
    """A connection whose receive buffer is 4 KB, so a big answer waits in the server."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), 5)
    return await asyncio.wait_for(asyncio.open_connection(sock=sock), 5)


PATHS = ("front door", "routed", "handler")


def test_a_large_answer_read_late_arrives_whole_whether_the_connection_closes_or_stays():
    """A held poll answered with more than the kernel takes at once, to a client
    that reads late: the connection is neither closed (Connection: close) nor
    timed out waiting for the next request (idle_connection_timeout, shorter
    than the wait) before the whole answer is out, and a kept-alive connection
    then serves the next request. The same on all three paths."""
    size = more_than_the_kernel_buffers()
    settings = dict(SETTINGS, max_queue_bytes=2 * size)

    async def script(port, router, close):
        conn = await Raw(port).open()
        sid = sid_of(await conn.request("GET", "/socket.io/xhr-polling//1"))
        conn.close()
        router.sessions().get(sid).send("x" * size)
        reader, writer = await slow_reader(port)
        try:
            head = "GET /socket.io/xhr-polling/%s/2 HTTP/1.1\r\nHost: 127.0.0.1\r\n" % sid
            writer.write((head + ("Connection: close\r\n" if close else "") + "\r\n").encode())
            await asyncio.sleep(1.0)  # twice the idle timeout
            answer = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(re.search(rb"Content-Length: (\d+)", answer).group(1))
            body = await asyncio.wait_for(reader.readexactly(length), 20)
            if close:
                after = await asyncio.wait_for(reader.read(), 5)
            else:
                writer.write(head.replace("/2 ", "/3 ").encode() + b"\r\n")
                router.sessions().get(sid).send("next")
                after = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            return (b"Connection: close" in answer, length > size, body.endswith(b"x" * 100),
                    after[:12])
        finally:
            writer.close()

    async def go():
        for close in (True, False):
            results = {}
            for path in PATHS:
                with captured_logs() as records:
                    async with any_path(path, settings, {"idle_connection_timeout": 0.5}) as (
                            port, router, log):
                        results[path] = await script(port, router, close)
                        took = [took_lean for _, _, took_lean in log]
                assert not tracebacks(records)
                assert took[1] == (path != "handler"), (path, took)
            assert results["front door"] == results["routed"] == results["handler"]
            assert results["handler"] == (close, True, True, b"" if close else b"HTTP/1.1 200")
    run(go())


def test_a_client_that_does_not_read_gets_no_further_answers_meanwhile():
    """Requests sent back to back on one connection by a client that reads
    nothing: while an answer is still being written, the next request is not
    read (as on Tornado's own path), so answers do not pile up in the server."""
    size = more_than_the_kernel_buffers()
    settings = dict(SETTINGS, max_queue_bytes=2 * size)

    async def script(port, router):
        conn = await Raw(port).open()
        sid = sid_of(await conn.request("GET", "/socket.io/xhr-polling//1"))
        conn.close()
        router.sessions().get(sid).send("x" * size)
        opened = len(router.sessions())
        reader, writer = await slow_reader(port)
        try:
            requests = "GET /socket.io/xhr-polling/%s/2 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % sid
            requests += "GET /socket.io/xhr-polling//3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * 5
            writer.write(requests.encode())
            await asyncio.sleep(0.5)
            return len(router.sessions()) - opened
        finally:
            writer.close()

    async def go():
        results = {}
        for path in PATHS:
            async with any_path(path, settings, None) as (port, router, log):
                results[path] = await script(port, router)
        assert results == {path: 0 for path in PATHS}
    run(go())


def address_recorder(seen):
    """A connection class that appends each session's client address to ``seen``."""
    class Remember(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            seen.append(request.remote_ip)

        def on_message(self, message):
            pass

    return Remember


def test_xheaders_give_the_real_client_address_on_the_lean_path():
    seen = []
    Remember = address_recorder(seen)

    async def script(port, router):
        conn = await Raw(port).open()
        forwarded = [("X-Real-IP", "203.0.113.9")]
        first = await conn.request("GET", "/socket.io/xhr-polling//1", headers=forwarded)
        sid = sid_of(first)
        out = [first, await conn.request("POST", "/socket.io/xhr-polling/%s/send" % sid,
                                         form("~m~1~m~x"), headers=forwarded),
               await conn.request("GET", "/socket.io/xhr-polling//1", headers=forwarded)]
        conn.close()
        return out

    async def go():
        results = await run_both(script, settings={"max_sessions_per_address": 1},
                                 xheaders=True, connection=Remember)
        assert results[True][:2] == results[False][:2]
        assert all(results[True][2])
        assert seen == ["203.0.113.9", "203.0.113.9"]
        lean_log = results[True][1]
        assert all("(203.0.113.9)" in summary for _, summary in lean_log)
        assert lean_log[2][0] == 503  # the per-address limit counted the forwarded address
    run(go())


def test_a_client_dropping_its_held_poll_lets_go_of_the_session():
    async def script(port, router):
        conn = await Raw(port).open()
        sid = sid_of(await conn.request("GET", "/socket.io/xhr-polling//1"))
        await conn.send("GET", "/socket.io/xhr-polling/%s/2" % sid)
        for _ in range(100):
            if router.sessions().get(sid).has_sink:
                break
            await asyncio.sleep(0.01)
        assert router.sessions().get(sid).has_sink
        conn.writer.transport.abort()  # gone without waiting for the answer
        for _ in range(100):
            if not router.sessions().get(sid).has_sink:
                break
            await asyncio.sleep(0.01)
        session = router.sessions().get(sid)
        assert not session.has_sink and not session.is_closed
        session.send("kept")  # queued for the next poll, which gets it
        conn = await Raw(port).open()
        answer = await conn.request("GET", "/socket.io/xhr-polling/%s/3" % sid)
        conn.close()
        return [answer]

    async def go():
        results = await run_both(script)
        assert results[True][:2] == results[False][:2]
        assert results[True][0][0].endswith("~m~4~m~kept")
        assert [status for status, _ in results[True][1]] == [200, 200, 200]
    run(go())


def test_a_coroutine_on_open_and_a_slow_on_message_on_the_lean_path():
    class Slow(tornadio.SocketConnection):
        async def on_open(self, request, *args, **kwargs):
            await asyncio.sleep(0.05)
            self.send("welcome")

        async def on_message(self, message):
            await asyncio.sleep(0.05)
            self.send(message)

    async def script(port, router):
        conn = await Raw(port).open()
        first = await conn.request("GET", "/socket.io/xhr-polling//1")
        sid = sid_of(first)
        loop = asyncio.get_running_loop()
        started = loop.time()
        posted = await conn.request("POST", "/socket.io/xhr-polling/%s/send" % sid,
                                    form("~m~1~m~a~m~1~m~b"))
        waited = loop.time() - started
        polled = await conn.request("GET", "/socket.io/xhr-polling/%s/2" % sid)
        conn.close()
        assert waited >= 0.09  # "ok" only once both messages were handled (back-pressure)
        return [first, posted, polled]

    async def go():
        results = await run_both(script, connection=Slow)
        assert results[True][:2] == results[False][:2]
        assert all(results[True][2])
        assert "~m~7~m~welcome" in results[True][0][0]
        assert results[True][0][2].endswith("~m~1~m~a~m~1~m~b")
    run(go())


def test_an_application_with_output_transforms_keeps_the_requesthandler_path():
    router = tornadio.get_router(echo_connection(Events()))
    app = tornado.web.Application([router.route()], compress_response=True)
    router.learn_application(app)
    assert router.application is None


def test_socket_server_tells_its_routers_their_application():
    router = tornadio.get_router(echo_connection(Events()))
    app = tornado.web.Application([router.route()], socket_io_port=0,
                                  socket_io_address="127.0.0.1", flash_policy_server=False)

    async def go():
        server = tornadio.SocketServer(app, auto_start=False)
        try:
            assert router.application is app
        finally:
            server.stop()
    run(go())


def test_the_default_access_log_gets_the_same_lines_and_is_skipped_only_when_off():
    """No ``log_function``: Tornado's ``log_request`` writes ``tornado.access``.
    The lean path writes the RequestHandler path's lines; with the logger off
    for a level, nothing is formatted for it, and an Application subclass's
    own ``log_request`` is always called."""
    access = logging.getLogger("tornado.access")

    async def requests(port):
        conn = await Raw(port).open()
        sid = sid_of(await conn.request("GET", "/socket.io/xhr-polling//1"))
        await conn.request("POST", "/socket.io/xhr-polling/%s/send" % sid, form("~m~1~m~x"))
        await conn.request("GET", "/socket.io/xhr-polling/%s/2" % sid)
        await conn.request("GET", "/socket.io/xhr-polling/%s/3" % ("f" * 32))  # 401
        conn.close()

    async def lines(lean_on, level, app_class=tornado.web.Application):
        old_level = access.level
        access.setLevel(level)
        try:
            with captured_logs(logging.DEBUG) as records:
                async with server(lean_on, app_class=app_class, record=False) as (port, _, _):
                    await requests(port)
                    await asyncio.sleep(0.05)
        finally:
            access.setLevel(old_level)
        return [re.sub(r" [0-9.]+ms$", "", normalised(r.getMessage()))
                for r in records if r.name == "tornado.access"]

    class Counting(tornado.web.Application):
        calls = 0

        def log_request(self, handler):
            Counting.calls += 1

    async def go():
        lean_info, plain_info = await lines(True, logging.INFO), await lines(False, logging.INFO)
        assert lean_info == plain_info and len(lean_info) == 4
        assert lean_info[1] == "200 POST /socket.io/xhr-polling/<sid>…/send (127.0.0.1)"
        lean_warning = await lines(True, logging.WARNING)
        assert lean_warning == await lines(False, logging.WARNING)
        assert [line[:3] for line in lean_warning] == ["401"]
        await lines(True, logging.CRITICAL, Counting)
        assert Counting.calls == 4
    run(go())


# -- the front door: SocketServer hands lean requests over without Tornado's routing --
@contextlib.asynccontextmanager
async def socket_server(rules_before=(), settings=SETTINGS, xheaders=False, hosts=None,
                        connection=None, http_options=None):
    """A SocketServer on 127.0.0.1; yields (port, router, log, server)."""
    from tornadio.server import SocketServer

    log, log_function = recorded_log()
    router = tornadio.get_router(connection or echo_connection(Events()), settings)
    app = tornado.web.Application(list(rules_before) + [router.route()],
                                  log_function=log_function, socket_io_port=0,
                                  socket_io_address="127.0.0.1", flash_policy_server=False)
    if hosts:
        app.add_handlers(hosts[0], hosts[1])
    server = SocketServer(app, auto_start=False, xheaders=xheaders, **(http_options or {}))
    try:
        yield server.port, router, log, server
    finally:
        server.stop()
        router.sessions().close_all()
        await asyncio.sleep(0)


def test_socket_server_answers_byte_for_byte_as_the_routed_paths_do():
    async def go():
        with captured_logs() as records:
            async with socket_server() as (port, router, log, server):
                assert isinstance(server.request_callback, lean.FrontDoor)
                answers = await polling_script(port, router)
                await asyncio.sleep(0.05)
        assert not tracebacks(records)
        routed = await run_both(polling_script)
        assert [normalised(a) for a in answers] == routed[True][0] == routed[False][0]
        assert [(s, normalised(summary)) for s, summary, _ in log] == routed[True][1]
        assert [took_lean for _, _, took_lean in log] == routed[True][2]
    run(go())


class Claims(tornado.web.RequestHandler):
    """An application rule listed before the router's, for the same paths."""

    def get(self, *args):
        self.finish("mine")

    post = get


def test_an_earlier_rule_of_the_application_keeps_its_paths():
    async def go():
        earlier = [(r"/socket\.io/xhr-polling/(?:ffff.*)", Claims), (r"/", Claims)]
        async with socket_server(earlier) as (port, router, log, server):
            conn = await Raw(port).open()
            claimed = await conn.request("GET", "/socket.io/xhr-polling/%s/1" % ("f" * 32))
            first = await conn.request("GET", "/socket.io/xhr-polling//1")
            conn.close()
        assert claimed.endswith("\n\nmine")
        assert first.startswith("HTTP/1.1 200") and sid_of(first)
        assert [took_lean for _, _, took_lean in log] == [False, True]
    run(go())


def test_host_specific_rules_route_every_request_the_tornado_way():
    async def go():
        hosts = (r"other\.example$", [(r"/socket\.io/.*", Claims)])
        async with socket_server(hosts=hosts) as (port, router, log, server):
            conn = await Raw(port).open()
            first = await conn.request("GET", "/socket.io/xhr-polling//1")
            other = await conn.request("GET", "/socket.io/xhr-polling//1",
                                       headers=[("Host", "other.example")])
            conn.close()
        assert first.startswith("HTTP/1.1 200") and sid_of(first)
        assert other.endswith("\n\nmine")  # the host's own rule, as Tornado routes it
        assert [took_lean for _, _, took_lean in log] == [True, False]
    run(go())


def test_xheaders_reach_the_front_door():
    seen = []
    Remember = address_recorder(seen)

    async def go():
        async with socket_server(xheaders=True, connection=Remember) as (port, _, log, _s):
            conn = await Raw(port).open()
            first = await conn.request("GET", "/socket.io/xhr-polling//1",
                                       headers=[("X-Real-IP", "203.0.113.9")])
            conn.close()
        assert first.startswith("HTTP/1.1 200")
        assert seen == ["203.0.113.9"] and log[0][1].endswith("(203.0.113.9)")
        assert log[0][2]
    run(go())


def nodelay_of(request):
    stream = request.connection.stream
    return stream.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


class NodelayProbe(tornado.web.RequestHandler):
    """A plain handler on the same application: answers its socket's TCP_NODELAY."""

    def get(self):
        self.finish("nodelay=%d" % nodelay_of(self.request))


def rebuilt_by_tornado(request):
    """What Tornado's own constructor makes of ``request``'s line and headers."""
    return httputil.HTTPServerRequest(
        connection=request.connection, server_connection=request.server_connection,
        start_line=httputil.RequestStartLine(request.method, request.uri, request.version),
        headers=request.headers)


def attributes(request):
    timing = {"_start_time", "_finish_time", "started_at"}
    return {k: v for k, v in vars(request).items() if k not in timing}


def test_front_door_requests_have_every_attribute_tornados_constructor_gives():
    requests = []
    seen = []
    Remember = address_recorder(seen)

    async def go():
        lean._CHECKED_HOSTS.clear()
        async with socket_server(xheaders=True, connection=Remember) as (port, _r, _l, server):
            server.request_callback.application.settings["log_function"] = (
                lambda handler: requests.append((handler.request, attributes(handler.request),
                                                 attributes(rebuilt_by_tornado(handler.request)))))
            conn = await Raw(port).open()
            forwarded = [("X-Real-IP", "203.0.113.9"), ("X-Scheme", "https")]
            sid = sid_of(await conn.request("GET", "/socket.io/xhr-polling//1", headers=forwarded))
            await conn.request("POST", "/socket.io/xhr-polling/%s/send" % sid, form("~m~1~m~x"),
                               headers=forwarded)
            await conn.request("GET", "/socket.io/xhr-polling/%s/2?t=5" % sid, headers=forwarded)
            await conn.request("GET", "/socket.io/xhr-polling//3")
            conn.close()
            old = await Raw(port).open()
            old.writer.write(b"GET /socket.io/xhr-polling//4 HTTP/1.0\r\n"
                             b"Host: 127.0.0.1\r\n\r\n")
            old.method = "GET"
            assert (await old.answer()).startswith("HTTP/1.1 200")
            old.close()
        assert len(requests) == 5
        assert all(isinstance(request, lean.LeanRequest) for request, _, _ in requests)
        # The first request with this Host and the one with a query went through
        # Tornado's constructor; the others took the direct path.
        took_tornados = ["_start_time" in vars(request) for request, _, _ in requests]
        assert took_tornados == [True, False, True, False, False]
        for request, mine, tornados in requests:
            # The address and scheme are checked below: xheaders rewrite them only
            # while the request's headers are being handled, and an opening GET is
            # logged later, so Tornado's constructor would see the socket's own.
            for forwarded in ("remote_ip", "protocol"):
                mine.pop(forwarded)
                tornados.pop(forwarded)
            assert mine == tornados
            assert isinstance(request.request_time(), float)  # no private attribute read
            assert repr(request).startswith("HTTPServerRequest(")
        assert [r.remote_ip for r, _, _ in requests[:3]] == ["203.0.113.9"] * 3
        assert [r.protocol for r, _, _ in requests[:3]] == ["https"] * 3
        assert requests[3][0].remote_ip == "127.0.0.1" and requests[3][0].protocol == "http"
        assert requests[4][0].version == "HTTP/1.0"
        assert requests[2][0].query_arguments == {"t": [b"5"]}
        assert seen == ["203.0.113.9", "127.0.0.1", "127.0.0.1"]
    run(go())


def test_a_host_is_taken_directly_only_after_tornado_accepted_it():
    def tornado_accepts(host):
        try:
            httputil.HTTPServerRequest(start_line=httputil.RequestStartLine("GET", "/", "HTTP/1.1"),
                                       headers=httputil.HTTPHeaders({"Host": host}))
        except httputil.HTTPInputError:
            return False
        return True

    async def go():
        lean._CHECKED_HOSTS.clear()
        statuses = {}
        with captured_logs() as records:
            async with socket_server() as (port, router, log, server):
                for host in ("127.0.0.1", "bad host", "bad host", "x" * 300):
                    conn = await Raw(port).open()
                    answer = await conn.request("GET", "/socket.io/xhr-polling//1",
                                                headers=[("Host", host)])
                    statuses.setdefault(host, []).append(int(answer.split()[1]))
                    conn.close()
        assert not tracebacks(records)
        for host, codes in statuses.items():
            # The same answer Tornado's own constructor gives the same Host.
            assert set(codes) == {200 if tornado_accepts(host) else 400}, host
        assert list(lean._CHECKED_HOSTS) == ["127.0.0.1"]  # refused and overlong ones never
    run(go())


def test_a_poll_connection_keeps_nagle_off_between_answers():
    seen = []

    class Probe(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            seen.append(nodelay_of(request))

        def on_message(self, message):
            pass

    async def go():
        probe = [(r"/probe", NodelayProbe)]
        async with socket_server(probe, connection=Probe) as (port, router, log, server):
            plain = await Raw(port).open()
            plain_answers = [await plain.request("GET", "/probe") for _ in range(2)]
            plain.close()
            polled = await Raw(port).open()
            sid = sid_of(await polled.request("GET", "/socket.io/xhr-polling//1"))
            await polled.request("POST", "/socket.io/xhr-polling/%s/send" % sid,
                                 form("~m~1~m~x"))
            second = await polled.request("GET", "/socket.io/xhr-polling//2")
            after_polls = [await polled.request("GET", "/probe") for _ in range(2)]
            polled.close()
        # Tornado turns Nagle back on after every answer (so a fresh request finds it
        # on); a poll connection keeps it off from its first poll on, as seen by
        # the second session's on_open, until a request that is not lean.
        assert [a.rpartition("\n")[2] for a in plain_answers] == ["nodelay=0"] * 2
        assert second.startswith("HTTP/1.1 200")
        assert seen == [True, True]
        assert [a.rpartition("\n")[2] for a in after_polls] == ["nodelay=0"] * 2
    run(go())
