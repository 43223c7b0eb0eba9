"""Wire-test helpers over real loopback sockets, in the test's own loop.

For wire tests that need no browser: an in-process server on 127.0.0.1
(:func:`serve`, over ``tornadio.testing.serve``). Tests talk to it with the
``tornadio.testing`` client wherever they exchange messages; what is left here
is raw HTTP for tests that drive the transport by hand (a poll at a time,
malformed bodies, status codes). Every wait is bounded.
"""
import asyncio
import contextlib
import logging
from urllib.parse import quote

import tornado.web
import tornado.websocket
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

import tornadio
from tornadio import proto, testing

WAIT = 10.0


def run(coro, timeout=60.0):
    """Run an async test body with an overall bound."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout)
    return asyncio.run(bounded())


class Events:
    """What a connection class saw, for assertions."""

    def __init__(self):
        self.opened = []
        self.closed = []
        self.messages = []
        self.connections = []
        self._changed = None

    @property
    def changed(self):
        # Made on first use, inside the running loop (Python 3.9 binds an Event
        # to the loop current at construction).
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def note(self, where, item):
        where.append(item)
        self.changed.set()

    async def wait_for(self, predicate, timeout=WAIT):
        async def loop():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), timeout)


def echo_connection(events):
    class Echo(tornadio.SocketConnection):
        def on_open(self, request, *args, **kwargs):
            events.connections.append(self)
            events.note(events.opened, (self.session_id, args, kwargs))

        def on_message(self, message):
            events.note(events.messages, message)
            self.send(message)

        def on_close(self):
            events.note(events.closed, self.session_id)
    return Echo


@contextlib.asynccontextmanager
async def serve(connection_class, settings=None, extra_handlers=(), **router_kwargs):
    """A router for ``connection_class`` listening on 127.0.0.1; yields (base_url, Router).

    On exit every session of the app's routers is closed (``on_close`` runs).
    """
    router = tornadio.get_router(connection_class, settings, **router_kwargs)
    app = tornado.web.Application([router.route(), *extra_handlers])
    async with testing.serve(app) as base:
        yield base, router


async def fetch(url, method="GET", body=None, headers=None, timeout=WAIT, **kwargs):
    """An HTTP request that returns the response whatever its status."""
    request = HTTPRequest(url, method=method, body=body, headers=headers,
                          request_timeout=timeout, **kwargs)
    return await AsyncHTTPClient().fetch(request, raise_error=False)


def form(payload):
    """A POST body as the XHR transports send it."""
    return "data=" + quote(payload, safe="~!'()*")


async def post(base, transport, session_id, payload, tail="send", **kwargs):
    return await fetch("%s/socket.io/%s/%s/%s" % (base, transport, session_id, tail),
                       method="POST", body=form(payload), **kwargs)


def messages(payload):
    """Decoded frames of a payload as (kind, data) pairs."""
    return [(frame.kind, frame.data) for frame in proto.decode(payload)]


async def open_xhr(base, transport="xhr-polling"):
    """First poll by hand, and no other: returns (session id, the other messages of the payload).

    For tests that poll (or deliberately stop polling) themselves; a
    ``tornadio.testing`` client would keep a GET held in the background.
    """
    response = await fetch("%s/socket.io/%s//1300000000000" % (base, transport))
    assert response.code == 200, response.code
    frames = messages(response.body.decode("utf-8"))
    return frames[0][1], frames[1:]


async def open_ws(base, path="/socket.io/websocket", **options):
    """A raw WebSocket past the SID frame, for tests that must send bytes as they
    are (floods, malformed frames): returns (connection, session id). Everything
    else speaks through :mod:`tornadio.testing`."""
    ws = await asyncio.wait_for(tornado.websocket.websocket_connect(
        base.replace("http", "ws", 1) + path, **options), WAIT)
    first = await asyncio.wait_for(ws.read_message(), WAIT)
    return ws, messages(first)[0][1]


async def read_ws(ws, timeout=WAIT):
    """The frames of the next message of a raw WebSocket; None once it is closed."""
    message = await asyncio.wait_for(ws.read_message(), timeout)
    return None if message is None else messages(message)


@contextlib.contextmanager
def captured_logs(level=logging.INFO):
    """All records logged while inside, for 'no traceback' and 'one line' checks."""
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(min(old_level, level) if old_level else level)
    root.addHandler(handler)
    try:
        yield records
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def tracebacks(records):
    return [r for r in records if r.exc_info or r.levelno >= logging.ERROR]
