"""examples/chatroom: the real page, the real client, the example run as a subprocess."""
import re

import pytest
import websocket
from playwright.sync_api import expect

from example_steps import count_of, expect_contains, expect_text, submit_text, texts_of
from tornadio import proto

# A nickname and a message that would do damage if the page used innerHTML.
BOB = "Bob <b>&</b>"
XSS = '<img src="x" onerror="window.pwned = 1"> hi & <script>window.pwned = 2</script>'

# While a server restarts, the pages' reconnect attempts fail loudly in the console.
RECONNECT_NOISE = [r"ERR_CONNECTION_REFUSED", r"WebSocket connection to .* failed"]
LAST_SAID = "#log li:not(.notice) .text >> nth=-1"
#: The status pill while the client tries again, in either of its two wordings.
RECONNECTING = re.compile("reconnecting", re.IGNORECASE)


def join(page, nickname):
    page.fill("#nickname", nickname)
    page.click("#join")
    expect(page.locator("#me")).to_have_text(nickname)
    expect(page.locator("#say-form")).to_be_visible()
    expect(page.locator("#join-form")).to_be_hidden()


def no_markup_ran(page):
    return (page.locator("#log img, #log script, #people b").count() == 0
            and page.evaluate("() => window.pwned") is None)


def test_two_people_see_each_other(example_server, example_pages, save_screenshot):
    server = example_server("chatroom", "--port", "0")
    ada = example_pages(server.url + "?transport=xhr-polling")
    bob = example_pages(server.url)
    ada.run(expect_text, "#status", "Connected · xhr-polling")
    save_screenshot(ada, "chatroom-start")

    ada.run(join, "ada")
    ada.run(expect_text, "#transport", "xhr-polling")

    bob.run(join, BOB)
    bob.run(expect_text, "#transport", "websocket")
    ada.run(expect_contains, "#log", BOB + " joined (websocket).")
    bob.run(expect_contains, "#log", "Also here: ada.")
    for page in (ada, bob):
        page.run(expect_text, "#count", "2")
        assert sorted(page.run(texts_of, "#people .name")) == sorted(["ada", BOB])
    bob.run(expect_text, "#people li.me .name", BOB)

    bob.run(submit_text, "#text", XSS)
    ada.run(expect_text, LAST_SAID, XSS)
    bob.run(expect_text, LAST_SAID, XSS)
    ada.run(submit_text, "#text", "hello Bob, welcome")
    bob.run(expect_text, LAST_SAID, "hello Bob, welcome")
    bob.run(expect_text, "#log li:not(.notice) .who >> nth=-1", "ada")

    for page in (ada, bob):
        assert page.run(no_markup_ran)
    save_screenshot(bob, "chatroom")
    example_pages.assert_no_console_errors()


def test_leaving_is_announced(example_server, example_pages, save_screenshot):
    server = example_server("chatroom", "--port", "0")
    ada = example_pages(server.url)
    bob = example_pages(server.url + "?transport=xhr-polling")
    ada.run(join, "ada")
    bob.run(join, "bob")
    ada.run(expect_text, "#count", "2")

    ada.close()  # the page's WebSocket closes with it
    bob.run(expect_contains, "#log", "ada left.")
    bob.run(expect_text, "#count", "1")
    assert bob.run(texts_of, "#people .name") == ["bob"]
    save_screenshot(bob, "chatroom-after-leave")
    example_pages.assert_no_console_errors()


@pytest.mark.allow_console_errors(*RECONNECT_NOISE)
def test_reconnect_rejoins_with_the_same_nickname(example_server, example_pages, free_port):
    first = example_server("chatroom", "--port", free_port)
    ada = example_pages(first.url)
    bob = example_pages(first.url + "?transport=xhr-polling")
    ada.run(join, "ada")
    bob.run(join, "bob")
    ada.run(expect_text, "#count", "2")

    assert first.stop() == 0
    for page in (ada, bob):
        page.run(expect_contains, "#log", "Connection lost; reconnecting…")
        # "Disconnected · reconnecting…" lasts only until the client's first
        # reconnect attempt ("Reconnecting (attempt 1)…"): either says it.
        page.run(expect_contains, "#status", RECONNECTING)
    example_server("chatroom", "--port", free_port)  # a new process: an empty room

    # Both pages reconnect on their own and join again under their nicknames.
    for page, nickname, transport in ((ada, "ada", "websocket"), (bob, "bob", "xhr-polling")):
        page.run(expect_contains, "#log", "Reconnected via " + transport, timeout=30000)
        page.run(expect_text, "#count", "2", timeout=30000)
        page.run(expect_text, "#me", nickname)
        page.run(expect_text, "#status", "Connected · " + transport)
    ada.run(submit_text, "#text", "still here")
    bob.run(expect_text, LAST_SAID, "still here")
    example_pages.assert_no_console_errors(RECONNECT_NOISE)


def test_stale_session_of_a_reconnected_page_is_retired_quietly(example_server, example_pages):
    """A page rejoins while its old session is still open (a polling session
    lingers until it expires): the room hears "ada reconnected", not "ada
    joined" twice and later a stray "ada left"."""
    server = example_server("chatroom", "--port", "0")
    bob = example_pages(server.url)
    bob.run(join, "bob")
    ws_url = server.url.replace("http://", "ws://") + "socket.io/websocket"
    join_ada = {"type": "join", "nickname": "ada", "client": "0123456789abcdef"}

    old = RawSocket(ws_url)
    new = RawSocket(ws_url)
    try:
        old.send(join_ada)
        assert old.receive()["type"] == "welcome"
        new.send(join_ada)   # the same page, as after a reconnect
        welcome = new.receive()
        assert old.closed_by_server(), "the stale session was not closed"
    finally:
        old.close()
        new.close()
    assert welcome["type"] == "welcome"
    assert sorted(p["nickname"] for p in welcome["people"]) == ["ada", "bob"]
    bob.run(expect_contains, "#log", "ada joined (websocket).")
    bob.run(expect_contains, "#log", "ada reconnected (websocket).")
    # Closing the new socket is the only "left"; the retired session made none.
    bob.run(expect_contains, "#log", "ada left.")
    bob.run(expect_text, "#count", "1")
    assert bob.run(count_of, "#log li:has-text('ada left.')") == 1
    example_pages.assert_no_console_errors()


class RawSocket:
    """A bare Socket.IO 0.6 client over websocket-client: frames by hand, bounded waits."""

    def __init__(self, url, timeout=10):
        self.ws = websocket.create_connection(url, timeout=timeout)
        self.pending = []
        self.session_id = self.receive()

    def send(self, value):
        self.ws.send(proto.encode(value))

    def receive(self):
        """The next message; heartbeats are echoed on the way."""
        while not self.pending:
            for message in proto.decode(self.ws.recv()):
                if message.kind == proto.HEARTBEAT:
                    self.ws.send(proto.frame("~h~" + message.data))
                else:
                    self.pending.append(message.data)
        return self.pending.pop(0)

    def closed_by_server(self):
        """Read until the server closes the socket (True) or the timeout hits."""
        try:
            while self.ws.recv():
                pass
        except websocket.WebSocketConnectionClosedException:
            return True
        except websocket.WebSocketTimeoutException:
            return False
        return True

    def close(self):
        self.ws.close()
