"""Small applications written the 2011 TornadIO way, in Chromium over three transports.

Each ``build_*`` function is what a 2011 ``chat.py`` held at module level (a
connection class, ``get_router``, an ``Application`` with ``socket_io_port``),
with only the Python 3 spelling changed. They run behind a real
``SocketServer(app, auto_start=False)`` and are driven by the genuine 0.6
client; the server's log must stay free of errors.
"""
import itertools
import socket

import pytest
import tornado.web

import tornadio
import tornadio.router
import tornadio.server
from support_2011 import FAST, TRANSPORTS, page_routes

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)

#: Chromium logs a failed request when a closed polling session's next poll is
#: refused; that is the expected end of a polling session, not an error.
FAILED_REQUEST = r"Failed to load resource: the server responded with a status of 4\d\d"


def socket_io_settings(**more):
    """The one dict a 2011 application gave both get_router and the Application."""
    return dict(FAST, socket_io_port=0, socket_io_address="127.0.0.1", **more)


# -- a chat whose on_close filters its peers on is_closed ---------------------------------
def build_chat():
    class ChatConnection(tornadio.SocketConnection):
        participants = []
        numbers = itertools.count(1)

        def on_open(self, *args, **kwargs):
            self.name = "user%d" % next(self.numbers)
            self.participants.append(self)
            self.send({"you": self.name})
            for p in self.participants:
                if p is not self:
                    p.send("%s joined" % self.name)

        def on_message(self, message):
            for p in self.participants:
                p.send("%s: %s" % (self.name, message))

        def on_close(self):
            # Drop peers that are gone, then ourselves: in 2011 this connection
            # still counted as open here, so remove() found it.
            ChatConnection.participants = [p for p in self.participants if not p.is_closed]
            self.participants.remove(self)
            self.send("you will never see this")
            for p in self.participants:
                p.send("%s has left" % self.name)

    router = tornadio.get_router(ChatConnection, FAST)
    app = tornado.web.Application([router.route()] + page_routes(), **socket_io_settings())
    app.chat = ChatConnection
    return app


@pytest.mark.allow_console_errors(FAILED_REQUEST)
def test_chat_announces_a_leave_from_on_close(serve_2011, tabs, server_errors, transport):
    served = serve_2011(build_chat)
    client = tabs(served.port).connect(transport)
    assert client.wait_messages(1)[0] == {"you": "user1"}

    other = tabs(served.port).connect(transport)
    assert other.wait_messages(1)[0] == {"you": "user2"}
    client.wait_until("() => T.messages.includes('user2 joined')", what="the join notice")
    other.send("hello")
    client.wait_until("() => T.messages.includes('user2: hello')", what="user2's message")

    other.close_page()
    client.wait_until("() => T.messages.includes('user2 has left')", what="the leave notice")
    chat = served.app.chat
    assert served.call(lambda: [(p.name, p.is_closed) for p in chat.participants]) == [
        ("user1", False)]
    assert "you will never see this" not in client.messages()
    assert server_errors() == []


# -- a factory object, one settings dict for router and application, _protocol ----------------
class Room:
    """Application state that the connection factory closes over."""

    def __init__(self):
        self.members = {}


class RoomConnection(tornadio.SocketConnection):
    def __init__(self, room, *args, **kwargs):
        self.room = room
        super(RoomConnection, self).__init__(*args, **kwargs)

    def on_open(self, request, *args, **kwargs):
        self.sid = self._protocol.session_id
        self.room.members[self.sid] = self
        self.send({"sid": self.sid, "members": len(self.room.members)})

    def on_message(self, message):
        self.send({"echo": message, "from": self.sid})

    def on_close(self):
        del self.room.members[self.sid]


class RoomConnectionFactory(object):
    def __init__(self, room):
        self.room = room

    def __call__(self, *args, **kwargs):
        return RoomConnection(self.room, *args, **kwargs)


def build_room():
    settings = socket_io_settings(enabled_protocols=TRANSPORTS, cookie_secret="not-a-secret")
    room = Room()
    router = tornadio.get_router(RoomConnectionFactory(room), settings)
    app = tornado.web.Application([router.route()] + page_routes(), **settings)
    app.room, app.router = room, router
    return app


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_factory_router_shared_settings_and_protocol_session_id(serve_2011, tabs, caplog,
                                                               server_errors, transport):
    served = serve_2011(build_room)
    notes = [r.getMessage() for r in caplog.records if r.name == "tornadio.router"]
    assert len(notes) == 1 and "cookie_secret" in notes[0] and "socket_io" not in notes[0]
    assert served.app.router.socket_settings["cookie_secret"] == "not-a-secret"

    client = tabs(served.port).connect(transport)
    first = client.wait_messages(1)[0]
    assert first["sid"] == client.state()["sessionid"]
    assert first["members"] == 1
    client.send({"n": 1})
    assert client.wait_messages(2)[1] == {"echo": {"n": 1}, "from": first["sid"]}
    room = served.app.room
    assert served.call(lambda: sorted(room.members)) == [first["sid"]]
    assert server_errors() == []


# -- no Flash settings: no port but the application's own ---------------------------------------
class EchoConnection(tornadio.SocketConnection):
    def on_message(self, message):
        self.send(message)


def build_echo():
    router = tornadio.get_router(EchoConnection, FAST)
    return tornado.web.Application([router.route()] + page_routes(), **socket_io_settings())


def policy_answer(port):
    """What the server answers a Flash policy request on ``port`` (blocking, bounded)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"<policy-file-request/>\0")
        answer = b""
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                return answer
            answer += chunk


def test_without_flash_settings_only_its_own_port_is_opened(serve_2011, tabs, listeners,
                                                           server_errors, transport):
    others_on_843 = {entry for entry in listeners.all() if entry[1] == 843}
    served = serve_2011(build_echo)
    assert served.server.policy_server is None
    assert served.listeners_after - served.listeners_before == {("127.0.0.1", served.port)}
    assert not any(port == 843 for _, port in listeners.own())
    if not others_on_843:  # another program's policy server would answer instead
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", 843), timeout=5).close()
    # Flash still finds its policy inline, on the socket.io port.
    assert policy_answer(served.port).startswith(b"<?xml")

    client = tabs(served.port).connect(transport)
    client.send("still a working server")
    assert client.wait_messages(1) == ["still a working server"]
    assert server_errors() == []


# -- __init__(self, *args, **kwargs) and on_open(self, *args, **kwargs) passed to super() --------
class Greeter(tornadio.SocketConnection):
    def __init__(self, *args, **kwargs):
        super(Greeter, self).__init__(*args, **kwargs)
        self.count = 0

    def on_open(self, *args, **kwargs):
        super(Greeter, self).on_open(*args, **kwargs)
        request = args[0]
        self.send({"extra": kwargs["extra"], "ip": request.remote_ip, "closed": self.is_closed})

    def on_message(self, message):
        self.count += 1
        self.send({"echo": message, "count": self.count})


class ExplicitGreeter(Greeter):
    """The 2011 constructor spelled out, as some applications did."""

    def __init__(self, protocol, io_loop, heartbeat_interval):
        super(ExplicitGreeter, self).__init__(protocol, io_loop, heartbeat_interval)
        self.heartbeat_interval = heartbeat_interval


def build_greeter(connection):
    def build():
        router = tornadio.get_router(connection, FAST, resource="greet",
                                     extra_re=r"\d+", extra_sep="/")
        return tornado.web.Application([router.route()] + page_routes(), **socket_io_settings())
    return build


@pytest.mark.parametrize("connection", [Greeter, ExplicitGreeter])
def test_overridden_init_and_on_open_pass_everything_to_super(serve_2011, tabs, server_errors,
                                                              transport, connection):
    served = serve_2011(build_greeter(connection))
    client = tabs(served.port).connect(transport, resource="greet/123")
    assert client.wait_messages(1)[0] == {"extra": "123", "ip": "127.0.0.1", "closed": False}
    for text in ("one", "two"):
        client.send(text)
    assert client.wait_messages(3)[1:] == [{"echo": "one", "count": 1},
                                           {"echo": "two", "count": 2}]
    assert server_errors() == []
