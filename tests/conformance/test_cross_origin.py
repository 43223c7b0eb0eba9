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
