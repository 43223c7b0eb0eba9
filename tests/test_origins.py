"""The origin policy (tornadio/origins.py): its rules, then the same rule on every
handshake that carries an Origin, over real sockets on 127.0.0.1."""
import logging

import pytest
import tornado.httpclient
import tornado.websocket
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine
from tornado.iostream import StreamClosedError
from tornado.tcpclient import TCPClient

import tornadio
from tornadio import flashserver, origins
from tornadio.origins import origin_allowed
from tornadio.server import merged_origins

from support.wire import (Events, captured_logs, echo_connection, fetch, post, read_ws, run,
                          serve, tracebacks)

WAIT = 10.0


# -- the rules ----------------------------------------------------------------------------
@pytest.mark.parametrize("origin, host, scheme, allowed", [
    # the 2011 layout: page on port 80 (or any other), socket.io on 8001
    ("http://example.com", "example.com:8001", "http", True),
    ("http://example.com:8080", "example.com:8001", "http", True),
    ("http://EXAMPLE.com", "Example.COM:8001", "http", True),
    ("http://[::1]:8080", "[::1]:8001", "http", True),
    # TLS ends at a proxy in front: an https page, the request arrives as http
    ("https://example.com", "example.com", "http", True),
    ("https://example.com", "example.com:8443", "https", True),
    # an http page is not let into a TLS server: anyone on its network can rewrite it
    ("http://example.com", "example.com:8443", "https", False),
    # another host, however close
    ("http://evil.example", "example.com:8001", "http", False),
    ("http://sub.example.com", "example.com:8001", "http", False),
    ("http://127.0.0.2:8080", "127.0.0.1:8001", "http", False),
    ("http://localhost:8080", "127.0.0.1:8001", "http", False),
    # no page, or not a web page
    ("null", "example.com", "http", False),
    ("", "example.com", "http", False),
    ("file://example.com", "example.com", "http", False),
    ("http://[abc", "example.com", "http", False),
])
def test_default_is_the_same_host_on_any_port(origin, host, scheme, allowed):
    assert origin_allowed(None, origin, host, scheme) is allowed


@pytest.mark.parametrize("origin", ["http://evil.example", "https://x.example:9", "null", ""])
def test_star_is_any_origin(origin):
    assert origin_allowed("*", origin, "example.com", "https")
    assert origin_allowed(["*"], origin, "example.com", "https")


@pytest.mark.parametrize("entry, origin, scheme, allowed", [
    # a full origin: scheme, host and port exactly (default ports filled in)
    ("https://app.example:8443", "https://app.example:8443", "https", True),
    ("https://app.example:8443", "https://app.example", "https", False),
    ("https://app.example:8443", "http://app.example:8443", "http", False),
    ("http://app.example", "http://app.example:80", "https", True),
    ("http://app.example", "http://app.example:8080", "http", False),
    # a host: its default port, https pages always, http pages over http only
    ("app.example", "http://app.example", "http", True),
    ("app.example", "https://app.example", "http", True),
    ("app.example", "https://app.example", "https", True),
    ("app.example", "http://app.example", "https", False),
    ("app.example", "http://app.example:8080", "http", False),
    ("app.example", "https://app.example:8443", "https", False),
    ("APP.example", "http://app.EXAMPLE", "http", True),
    # a host and a port: that port, whatever the scheme's default
    ("app.example:8080", "http://app.example:8080", "http", True),
    ("app.example:8080", "https://app.example:8080", "https", True),
    ("app.example:8080", "http://app.example", "http", False),
    ("app.example:8080", "http://app.example:8080", "https", False),
    ("app.example:443", "https://app.example", "https", True),
    # a host on any port
    ("app.example:*", "http://app.example:1234", "http", True),
    ("app.example:*", "https://app.example", "https", True),
    ("app.example:*", "http://app.example:1234", "https", False),
    ("app.example:*", "http://other.example:1234", "http", False),
    # any host on any port, still never a less secure page
    ("*:*", "http://whatever.example:1", "http", True),
    ("*:*", "http://whatever.example:1", "https", False),
    ("*:*", "null", "http", False),
    # IPv6
    ("[::1]:8080", "http://[::1]:8080", "http", True),
    ("[::1]", "http://[::1]:8080", "http", False),
])
def test_list_entries(entry, origin, scheme, allowed):
    assert origin_allowed([entry], origin, "server.example", scheme) is allowed


def test_a_list_replaces_the_default():
    """Listing origins is precise: the server's own host is not added behind your back."""
    assert not origin_allowed(["app.example"], "http://server.example:8080", "server.example",
                              "http")
    assert origin_allowed(["app.example", "server.example:*"], "http://server.example:8080",
                          "server.example", "http")


def test_a_callable_decides_alone():
    seen = []

    def policy(origin):
        seen.append(origin)
        return origin.endswith(".trusted.example")

    assert origin_allowed(policy, "https://a.trusted.example", "x", "https")
    assert not origin_allowed(policy, "http://evil.example", "evil.example", "http")
    assert seen == ["https://a.trusted.example", "http://evil.example"]


@pytest.mark.parametrize("policy", ["app.example", ["app.example/"], ["http://"], [""],
                                    ["app.example:80:*"], ["app.example:port"], [42],
                                    ["user@app.example"]])
def test_policies_that_could_never_work_fail_at_set_up(policy):
    with pytest.raises(ValueError, match="allowed_origins"):
        origins.validate_policy(policy)
    with pytest.raises(ValueError, match="allowed_origins"):
        tornadio.get_router(tornadio.SocketConnection, {"allowed_origins": policy})


@pytest.mark.parametrize("policy", [None, "*", ["*"], ["https://a.example:1", "a.example",
                                                      "a.example:2", "a.example:*", "*:*"],
                                    lambda origin: True])
def test_policies_accepted(policy):
    origins.validate_policy(policy)


def request(host):
    """A plain-HTTP request as Tornado builds it, addressed to ``host``."""
    start = RequestStartLine("GET", "/socket.io/websocket", "HTTP/1.1")
    return HTTPServerRequest(start_line=start, headers=HTTPHeaders({"Host": host}))


def test_a_refused_origin_is_logged_once_naming_the_setting(caplog):
    with caplog.at_level(logging.WARNING, "tornadio.origins"):
        for _ in range(3):
            assert not origins.check(None, "http://once.example", request("127.0.0.1:8001"),
                                     "websocket")
        assert origins.check(None, "http://127.0.0.1:8080", request("127.0.0.1:8001"),
                             "websocket")
        assert not origins.check(["a.example"], "http://twice.example", request("x"),
                                 "xhr-polling")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert lines[0].startswith("websocket from a page of http://once.example refused")
    assert "pages of 127.0.0.1 (any port)" in lines[0] and "allowed_origins='*'" in lines[0]
    assert "not in allowed_origins" in lines[1]


# -- the Flash policy file ------------------------------------------------------------------
def test_the_default_policy_file_allows_every_domain():
    """The policy request names no host: the same-host rule cannot be written down. The
    flashsocket handshake applies it to the page's Origin instead."""
    def router(policy, protocols=("flashsocket",)):
        return tornadio.get_router(tornadio.SocketConnection, {
            "allowed_origins": policy, "enabled_protocols": list(protocols)})

    assert merged_origins([router(None)]) is None
    assert merged_origins([router("*")]) is None
    assert merged_origins([router(["a.example"]), router(["b.example:*", "a.example"])]) == [
        "a.example", "b.example:*"]
    assert merged_origins([router(None, ["websocket"])]) == []
    for policy in (None, "*"):
        assert flashserver.policy_domains(policy) == ["*"]


# -- every handshake applies it ---------------------------------------------------------------
async def websocket_status(base, origin):
    url = base.replace("http", "ws", 1) + "/socket.io/websocket"
    headers = {"Origin": origin} if origin else {}
    try:
        ws = await tornado.websocket.websocket_connect(
            tornado.httpclient.HTTPRequest(url, headers=headers, request_timeout=WAIT))
    except tornado.httpclient.HTTPClientError as exc:
        return exc.code
    first = await read_ws(ws)
    ws.close()
    assert first[0][1] and len(first[0][1]) == 32
    return 101


async def cors_status(base, origin):
    response = await fetch(base + "/socket.io/xhr-polling//1", headers={"Origin": origin})
    if response.code == 200:
        assert response.headers["Access-Control-Allow-Origin"] == origin
    else:
        assert "Access-Control-Allow-Origin" not in response.headers
    return response.code


async def flashsocket_status(base, origin):
    port = int(base.rsplit(":", 1)[1])
    stream = await TCPClient().connect("127.0.0.1", port)
    try:
        await stream.write((
            "GET /socket.io/flashsocket HTTP/1.1\r\nUpgrade: WebSocket\r\n"
            "Connection: Upgrade\r\nHost: 127.0.0.1:%d\r\nOrigin: %s\r\n"
            "Sec-WebSocket-Key1: 18x 6]8vM;54 *(5:  {   U1]8  z [  8\r\n"
            "Sec-WebSocket-Key2: 1_ tx7X d  <  nw  334J702) 7]o}` 0\r\n\r\n" % (port, origin)
        ).encode("latin-1") + b"Tm[K T2u")
        head = await stream.read_until(b"\r\n")
    except StreamClosedError:
        return None
    finally:
        stream.close()
    return int(head.split()[1])


HANDSHAKES = {"websocket": websocket_status, "xhr-polling": cors_status,
              "flashsocket": flashsocket_status}


@pytest.mark.parametrize("transport", sorted(HANDSHAKES))
def test_default_policy_on_every_handshake(transport):
    """A page of this host on another port gets in; 127.0.0.2 (loopback too) and
    localhost are other hosts; listing one lets it in."""
    status = HANDSHAKES[transport]
    ok = 200 if transport == "xhr-polling" else 101
    foreign = "http://127.0.0.2:%d" % (8000 + sorted(HANDSHAKES).index(transport))

    async def go():
        with captured_logs(logging.WARNING) as records:
            async with serve(echo_connection(Events())) as (base, _):
                assert await status(base, "http://127.0.0.1:8080") == ok
                assert await status(base, foreign) == 403
                assert await status(base, foreign) == 403
                assert await status(base, "http://localhost:8080") == 403
            async with serve(echo_connection(Events()), {"allowed_origins": [foreign]}) as (
                    base, _):
                assert await status(base, foreign) == ok
                assert await status(base, "http://127.0.0.1:8080") == 403  # not listed
            async with serve(echo_connection(Events()), {"allowed_origins": "*"}) as (base, _):
                assert await status(base, "http://127.0.0.3") == ok
        refusals = [r.getMessage() for r in records if r.name == "tornadio.origins"]
        assert sum(foreign in line for line in refusals) == 1, refusals
        access = [r.getMessage() for r in records if r.name == "tornado.access"]
        assert any(origins.REFUSED in line for line in access), access
        assert not tracebacks(records)
    run(go())


def test_no_origin_header_is_no_browser_and_is_let_in():
    """Origin checks stop other sites' pages; a client without a page sends none."""
    async def go():
        async with serve(echo_connection(Events())) as (base, _):
            assert await websocket_status(base, None) == 101
            assert (await fetch(base + "/socket.io/xhr-polling//1")).code == 200
    run(go())


def test_jsonp_polling_is_not_subject_to_cors():
    """Its polls are <script> GETs (no Origin); its POSTs are forms whose answer the page
    never reads, sent with Origin: null by pages under Referrer-Policy: no-referrer."""
    events = Events()

    async def go():
        async with serve(echo_connection(events)) as (base, _):
            first = await fetch(base + "/socket.io/jsonp-polling//1/0")
            sid = first.body.decode()[len('io.JSONP[0]._("~m~32~m~'):][:32]
            for origin in ("null", "http://127.0.0.1:8080"):
                answer = await post(base, "jsonp-polling", sid, "~m~2~m~hi", tail="2/0",
                                    headers={"Origin": origin})
                assert answer.code == 200
            assert events.messages == ["hi", "hi"]
    run(go())
