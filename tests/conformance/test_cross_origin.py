"""A page served from one port talks to TornadIO on another: CORS and origin checks,
with the real client in Chromium."""
import pytest

from support.apps import Recorder, make_app
from support.browser import BrowserClient
from support.server import ServerThread

TRANSPORTS = ["websocket", "xhr-polling", "jsonp-polling"]


@pytest.fixture
def two_servers(request):
    """(page server, socket server); the socket server allows only the page's origin
    unless the test is marked ``foreign_page``."""
    page_thread = ServerThread("page-server")
    page_port = page_thread.start(lambda: make_app(Recorder()))
    allowed = ["http://127.0.0.1:1"] if request.node.get_closest_marker("foreign_page") else [
        "http://127.0.0.1:%d" % page_port]
    recorder = Recorder()
    socket_thread = ServerThread("socket-server")
    socket_port = socket_thread.start(lambda: make_app(recorder, {"allowed_origins": allowed}))
    try:
        yield page_port, socket_port, recorder
    finally:
        socket_thread.stop()
        page_thread.stop()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_page_on_another_port_connects_and_echoes(two_servers, page, transport):
    page_port, socket_port, recorder = two_servers
    client = BrowserClient(page, page_port, page.console_log)
    client.connect(transport, port=socket_port)
    client.send({"from": "elsewhere", "text": "héllo 😀"})
    assert client.wait_messages(1) == [{"from": "elsewhere", "text": "héllo 😀"}]
    assert recorder.transports() == [transport]


@pytest.mark.foreign_page
@pytest.mark.allow_console_errors()
@pytest.mark.parametrize("transport", ["websocket", "xhr-polling"])
def test_page_from_a_disallowed_origin_never_connects(two_servers, page, transport):
    page_port, socket_port, recorder = two_servers
    client = BrowserClient(page, page_port, page.console_log)
    client.connect(transport, wait=False, port=socket_port, connectTimeout=1500)
    client.wait_event("connect_failed", timeout=10000)
    assert client.count("connect") == 0
    assert recorder.transports() == []


@pytest.fixture
def jsonp_guarded(request):
    """A socket server with jsonp_cross_site off; the page is served on 127.0.0.1
    and the socket addressed as localhost, a different site for the browser."""
    allow_page = request.param
    page_thread = ServerThread("page-server")
    page_port = page_thread.start(lambda: make_app(Recorder()))
    settings = {"jsonp_cross_site": False}
    if allow_page:
        settings["allowed_origins"] = ["http://127.0.0.1:%d" % page_port]
    recorder = Recorder()
    socket_thread = ServerThread("socket-server")
    socket_port = socket_thread.start(lambda: make_app(recorder, settings))
    try:
        yield page_port, socket_port, recorder, allow_page
    finally:
        socket_thread.stop()
        page_thread.stop()


@pytest.mark.allow_console_errors()
@pytest.mark.parametrize("jsonp_guarded", [False, True], indirect=True,
                         ids=["unlisted-page", "listed-page"])
def test_cross_site_jsonp_refused_unless_the_page_is_allowed(jsonp_guarded, page):
    page_port, socket_port, recorder, allow_page = jsonp_guarded
    client = BrowserClient(page, page_port, page.console_log)
    client.connect("jsonp-polling", wait=False, host="localhost", port=socket_port,
                   connectTimeout=2000)
    if allow_page:
        client.wait_event("connect")
        client.send("through")
        assert client.wait_messages(1) == ["through"]
    else:
        client.wait_event("connect_failed", timeout=10000)
        assert recorder.transports() == []


# -- the default policy: the page's host, any port ------------------------------------------
@pytest.fixture
def page_server():
    """The test page on 127.0.0.1 (its own port)."""
    thread = ServerThread("page-server")
    port = thread.start(lambda: make_app(Recorder()))
    try:
        yield port
    finally:
        thread.stop()


@pytest.fixture
def socket_server():
    """Factory: ``socket_server(settings)`` starts a socket server, returns (port, recorder)."""
    threads = []

    def start(settings=None):
        recorder = Recorder()
        thread = ServerThread("socket-server")
        threads.append(thread)
        return thread.start(lambda: make_app(recorder, settings or {})), recorder

    try:
        yield start
    finally:
        for thread in threads:
            thread.stop()


@pytest.mark.parametrize("transport", ["websocket", "xhr-polling"])
def test_by_default_a_page_of_the_same_host_on_another_port_connects(page_server, socket_server,
                                                                     page, transport):
    """The 2011 layout (page on :80, socket.io on :8001) needs no setting."""
    socket_port, recorder = socket_server()
    client = BrowserClient(page, page_server, page.console_log)
    client.connect(transport, port=socket_port)
    client.send("same host, other port")
    assert client.wait_messages(1) == ["same host, other port"]
    assert recorder.transports() == [transport]


@pytest.mark.parametrize("transport", ["websocket", "xhr-polling"])
@pytest.mark.parametrize("listed", [pytest.param(False, marks=pytest.mark.allow_console_errors()),
                                    True], ids=["default", "listed"])
def test_a_page_of_another_host_connects_only_when_listed(page_server, socket_server, page,
                                                          transport, listed):
    """The page is on 127.0.0.1, the socket addressed as localhost: another host for the
    browser (both are loopback)."""
    settings = {"allowed_origins": ["http://127.0.0.1:%d" % page_server]} if listed else {}
    socket_port, recorder = socket_server(settings)
    client = BrowserClient(page, page_server, page.console_log)
    client.connect(transport, wait=False, host="localhost", port=socket_port,
                   connectTimeout=1500)
    if listed:
        client.wait_event("connect")
        client.send("listed")
        assert client.wait_messages(1) == ["listed"]
        assert recorder.transports() == [transport]
    else:
        client.wait_event("connect_failed", timeout=10000)
        assert client.count("connect") == 0
        assert recorder.transports() == []
