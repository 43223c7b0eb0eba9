"""The four HTTP transports at the wire, with real HTTP clients on loopback."""
import asyncio
import json
import re

import pytest

from support.wire import (Events, echo_connection, fetch, messages, open_xhr, post,
                          run, serve)

FAST = {"xhr_polling_timeout": 0.3, "session_expiry": 0.4, "session_check_interval": 0.1,
        "heartbeat_interval": 0.3}
HOSTILE = ["</script><script>alert(1)</script>", "<!--", "x\n--socketio\nContent-Type: text/plain\n\n~m~1~m~y", "\u2028\u2029", '"quoted" \'single\'',
           "back\\slash \\u0041", "</SCRIPT >", "\x00\x07\x1f", "]]>", "😀 𝄞 é"]

_SCRIPT_CHUNK = re.compile(r'<script>parent\.s\._\((".*?"), document\);</script>', re.S)


class Stream:
    """A streaming GET read chunk by chunk, so tests can wait for parts."""

    def __init__(self):
        self.data = b""
        self.changed = asyncio.Event()

    def feed(self, chunk):
        self.data += chunk
        self.changed.set()

    async def wait_for(self, predicate, timeout=10):
        async def loop():
            while not predicate(self.data.decode("utf-8", "replace")):
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), timeout)


def open_stream(base, transport, stream, **kwargs):
    url = "%s/socket.io/%s/%s" % (base, transport, "" if transport == "xhr-multipart" else "/1300000000000")
    return asyncio.ensure_future(fetch(url, streaming_callback=stream.feed, timeout=30, **kwargs))


def htmlfile_payloads(text):
    return [json.loads(literal) for literal in _SCRIPT_CHUNK.findall(text)]


def multipart_payloads(text):
    """Complete parts only: each ends with the boundary line (read from the first line)."""
    first, newline, rest = text.partition("\n")
    if not newline or not first.startswith("--socketio"):
        return []
    boundary = first[2:]
    payloads = []
    for part in rest.split("\n--%s\n" % boundary)[:-1]:
        header, _, payload = part.partition("\n\n")
        assert header == "Content-Type: text/plain"
        payloads.append(payload)
    return payloads


@pytest.mark.parametrize("transport", ["htmlfile", "xhr-multipart"])
def test_streaming_transports_carry_sid_echo_heartbeat_and_close(transport):
    events = Events()

    async def body():
        async with serve(echo_connection(events), dict(FAST, heartbeat_interval=1)) as (base, router):
            stream = Stream()
            request = open_stream(base, transport, stream)
            await stream.wait_for(lambda text: len(_payloads(text, transport)) >= 1)
            text = stream.data.decode()
            if transport == "htmlfile":
                assert text.startswith("<html><body>" + " " * 244)
                assert len(text.encode()) >= 256
            sid = messages(_payloads(text, transport)[0])[0][1]
            for hostile in HOSTILE:
                assert (await post(base, transport, sid, _frame(hostile))).code == 200
            await stream.wait_for(lambda text: _texts(text, transport)[1:] == HOSTILE)
            # A heartbeat arrives; echo it and the session stays.
            await stream.wait_for(lambda text: any(k == "heartbeat" for k, _ in _all(text, transport)))
            beat = [d for k, d in _all(stream.data.decode(), transport) if k == "heartbeat"][0]
            await post(base, transport, sid, "~m~%d~m~~h~%s" % (3 + len(beat), beat))
            # The next tick finds the echo and sends heartbeat 2 instead of closing.
            await stream.wait_for(lambda text: ("heartbeat", "2") in _all(text, transport))
            assert not events.closed
            events.connections[0].close()
            response = await request
            assert response.code == 200
            await events.wait_for(lambda: events.closed)
            assert len(router.sessions()) == 0
            if transport == "htmlfile":
                assert "<script>alert" not in stream.data.decode()
                assert "</script><script>" not in stream.data.decode().replace(
                    ";</script><script>parent", "")
    run(body())
    assert len(events.closed) == 1


def _frame(text):
    from tornadio import proto
    return proto.frame(text)


def _payloads(text, transport):
    if transport == "htmlfile":
        return htmlfile_payloads(text)
    return multipart_payloads(text)


def _all(text, transport):
    found = []
    for payload in _payloads(text, transport):
        found += messages(payload)
    return found


def _texts(text, transport):
    return [d for k, d in _all(text, transport) if k == "text"]


def test_streaming_client_going_away_closes_the_session():
    events = Events()

    async def body():
        async with serve(echo_connection(events), FAST) as (base, router):
            stream = Stream()
            request = open_stream(base, "htmlfile", stream, )
            await stream.wait_for(lambda text: htmlfile_payloads(text))
            request.cancel()
            # The cancelled fetch drops the connection; find it via the client closing.
            from tornado.httpclient import AsyncHTTPClient
            AsyncHTTPClient().close()
            await events.wait_for(lambda: events.closed)
            assert len(router.sessions()) == 0
    run(body())


def test_jsonp_hostile_strings_are_safe_literals():
    events = Events()

    async def body():
        async with serve(echo_connection(events), FAST) as (base, _):
            first = await fetch(base + "/socket.io/jsonp-polling//1/3")
            text = first.body.decode()
            assert first.headers["Content-Type"] == "text/javascript; charset=UTF-8"
            assert first.headers["X-Content-Type-Options"] == "nosniff"
            match = re.fullmatch(r'io\.JSONP\[3\]\._\((".*")\);', text)
            sid = messages(json.loads(match.group(1)))[0][1]
            payload = "".join(_frame(h) for h in HOSTILE)
            sent = await post(base, "jsonp-polling", sid, payload, tail="2/3")
            assert sent.code == 200
            poll = await fetch(base + "/socket.io/jsonp-polling/%s/3/3" % sid)
            body_text = poll.body.decode()
            assert body_text.isascii() and "<" not in body_text and "\u2028" not in body_text
            literal = re.fullmatch(r'io\.JSONP\[3\]\._\((".*")\);', body_text).group(1)
            assert [d for _, d in messages(json.loads(literal))] == HOSTILE
    run(body())


def test_jsonp_crlf_from_the_form_is_normalised():
    events = Events()

    async def body():
        async with serve(echo_connection(events), FAST) as (base, _):
            first = await fetch(base + "/socket.io/jsonp-polling//1/0")
            sid = messages(json.loads(first.body.decode()[len("io.JSONP[0]._("):-2]))[0][1]
            # What the browser's form encoder sends for the messages 'a\nb' and 'x'.
            body = "data=%7Em%7E3%7Em%7Ea%0D%0Ab%7Em%7E1%7Em%7Ex"
            response = await fetch(base + "/socket.io/jsonp-polling/%s/1/0" % sid, method="POST", body=body)
            assert response.code == 200
            assert events.messages == ["a\nb", "x"]
    run(body())


@pytest.mark.parametrize("tail", ["1/abc", "1/0x1", "1/" + "9" * 11, "1/-1", "1", "1/1/1"])
def test_jsonp_index_must_be_bounded_digits(tail):
    async def body():
        async with serve(echo_connection(Events()), FAST) as (base, _):
            response = await fetch(base + "/socket.io/jsonp-polling//" + tail)
            assert response.code == 400
            assert b"<" not in response.body
    run(body())


def test_overlapping_gets_older_finishes_empty_newer_takes_over():
    events = Events()

    async def body():
        async with serve(echo_connection(events), dict(FAST, xhr_polling_timeout=5)) as (base, _):
            sid, _ = await open_xhr(base)
            older = asyncio.ensure_future(fetch(base + "/socket.io/xhr-polling/%s/2" % sid))
            await asyncio.sleep(0.1)
            newer = asyncio.ensure_future(fetch(base + "/socket.io/xhr-polling/%s/3" % sid))
            first = await older
            assert first.code == 200 and first.body == b""
            await post(base, "xhr-polling", sid, "~m~5~m~hello")
            second = await newer
            assert second.code == 200 and messages(second.body.decode()) == [("text", "hello")]
    run(body())


def test_ten_thousand_messages_to_a_slow_poller_arrive_once_in_order():
    events = Events()

    async def body():
        async with serve(echo_connection(events), dict(FAST, session_expiry=10)) as (base, _):
            sid, _ = await open_xhr(base)
            conn = events.connections[0]
            received = []
            for i in range(10000):
                conn.send("m%d" % i)
                if i % 2500 == 0:
                    await asyncio.sleep(0)
            while len(received) < 10000:
                response = await fetch(base + "/socket.io/xhr-polling/%s/9" % sid)
                assert response.code == 200
                received += [d for _, d in messages(response.body.decode())]
                await asyncio.sleep(0.05)  # a slow client: more piles up meanwhile
            assert received == ["m%d" % i for i in range(10000)]
    run(body())


def test_held_get_times_out_with_empty_200_and_expiry_runs_on_close_once():
    events = Events()

    async def body():
        async with serve(echo_connection(events), FAST) as (base, router):
            sid, _ = await open_xhr(base)
            held = await fetch(base + "/socket.io/xhr-polling/%s/2" % sid)
            assert held.code == 200 and held.body == b""
            await events.wait_for(lambda: events.closed, timeout=5)
            assert len(router.sessions()) == 0
            gone = await fetch(base + "/socket.io/xhr-polling/%s/3" % sid)
            assert gone.code == 401
            await asyncio.sleep(0.5)
    run(body())
    assert len(events.closed) == 1


def test_server_close_finishes_the_held_get_at_once_with_last_words():
    events = Events()

    async def body():
        async with serve(echo_connection(events), dict(FAST, xhr_polling_timeout=10)) as (base, _):
            sid, _ = await open_xhr(base)
            held = asyncio.ensure_future(fetch(base + "/socket.io/xhr-polling/%s/2" % sid))
            await asyncio.sleep(0.1)
            conn = events.connections[0]
            conn.send("bye")
            conn.close()
            response = await asyncio.wait_for(held, 2)
            assert messages(response.body.decode()) == [("text", "bye")]
            assert (await fetch(base + "/socket.io/xhr-polling/%s/3" % sid)).code == 401
    run(body())


def test_messages_sent_just_before_close_between_polls_are_still_delivered():
    events = Events()

    async def body():
        async with serve(echo_connection(events), dict(FAST, session_expiry=5)) as (base, _):
            sid, _ = await open_xhr(base)
            conn = events.connections[0]
            conn.send("last")
            conn.close()
            # A POST meanwhile is refused, and does not eat the parked last words.
            assert (await post(base, "xhr-polling", sid, "~m~1~m~x")).code == 401
            response = await fetch(base + "/socket.io/xhr-polling/%s/2" % sid)
            assert messages(response.body.decode()) == [("text", "last")]
            assert (await fetch(base + "/socket.io/xhr-polling/%s/3" % sid)).code == 401
    run(body())


def test_post_body_over_the_limit_is_413_and_session_lives():
    events = Events()

    async def body():
        async with serve(echo_connection(events), dict(FAST, max_http_body=1000, session_expiry=5)) as (base, _):
            sid, _ = await open_xhr(base)
            big = await post(base, "xhr-polling", sid, "~m~2000~m~" + "x" * 2000)
            assert big.code == 413
            ok = await post(base, "xhr-polling", sid, "~m~2~m~ok")
            assert ok.code == 200 and events.messages == ["ok"]
    run(body())


def test_cors_echoes_only_allowed_origins_without_credentials():
    async def body():
        settings = dict(FAST, allowed_origins=["http://page.example:8080"])
        async with serve(echo_connection(Events()), settings) as (base, _):
            good = await fetch(base + "/socket.io/xhr-polling//1", headers={"Origin": "http://page.example:8080"})
            assert good.code == 200
            assert good.headers["Access-Control-Allow-Origin"] == "http://page.example:8080"
            assert "Access-Control-Allow-Credentials" not in good.headers
            bad = await fetch(base + "/socket.io/xhr-polling//1", headers={"Origin": "http://evil.example"})
            assert bad.code == 403 and "Access-Control-Allow-Origin" not in bad.headers
            pre = await fetch(base + "/socket.io/xhr-polling/abc/send", method="OPTIONS",
                              headers={"Origin": "http://page.example:8080",
                                       "Access-Control-Request-Method": "POST",
                                       "Access-Control-Request-Headers": "content-type"})
            assert pre.code == 200 and "POST" in pre.headers["Access-Control-Allow-Methods"]
    run(body())


@pytest.mark.parametrize("body, status", [
    ("nodata=1", 400), ("data=%FF%FE", 400), ("data=~m~9~m~abc", 400), ("data=~m~3~m~abcdef", 400),
    ("data=~m~6~m~~j~{x}", 400), ("data=", 200)])
def test_bad_post_bodies_get_4xx_and_the_session_survives(body, status):
    events = Events()

    async def run_it():
        async with serve(echo_connection(events), dict(FAST, session_expiry=5)) as (base, _):
            sid, _ = await open_xhr(base)
            response = await fetch(base + "/socket.io/xhr-polling/%s/send" % sid, method="POST", body=body)
            assert response.code == status
            assert (await post(base, "xhr-polling", sid, "~m~5~m~alive")).code == 200
            assert events.messages == ["alive"]
    run(run_it())


def test_session_bound_to_its_transport():
    async def body():
        async with serve(echo_connection(Events()), dict(FAST, session_expiry=5)) as (base, _):
            sid, _ = await open_xhr(base)
            assert (await fetch(base + "/socket.io/jsonp-polling/%s/1/0" % sid)).code == 401
            assert (await post(base, "htmlfile", sid, "~m~1~m~x")).code == 401
    run(body())
