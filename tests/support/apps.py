"""The server side of the browser tests: an echo connection, a recorder, the page.

``make_app(recorder)`` builds a ``tornado.web.Application`` with

* the TornadIO router (resource ``socket.io``) serving :class:`EchoConnection`,
* ``/`` : the test page (loads the harness, then the genuine client),
* ``/static/socket.io.js`` : the socket.io 0.6 client from npm,
* ``/static/harness.js`` : ``tests/support/harness.js``.

The client script is served outside ``/socket.io/`` on purpose, so the tests do
not depend on the router's own serving of it.
"""
import json
import os
import threading
import time

import tornado.web

import tornadio

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
CLIENT_JS_SUFFIX = os.path.join("node_modules", "socket.io", "support", "socket.io-client",
                                "socket.io.js")

#: Router settings for tests: every timer short, so failures show up fast.
TEST_SETTINGS = {
    "session_check_interval": 0.1,
    "session_expiry": 1.0,
    "heartbeat_interval": 1.0,
    "xhr_polling_timeout": 0.5,
}


def client_js_path():
    """Where socket.io.js is: $TORNADIO_CLIENT_JS, else node_modules of the repo."""
    candidates = []
    env = os.environ.get("TORNADIO_CLIENT_JS")
    if env:
        candidates.append(env)
    candidates.append(os.path.join(REPO_ROOT, CLIENT_JS_SUFFIX))
    for path in candidates:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        "socket.io 0.6 client not found (tried %s); run scripts/setup.sh "
        "or set TORNADIO_CLIENT_JS" % ", ".join(candidates))


class Recorder:
    """What the server saw, shared by all sessions of one app; thread-safe.

    Written on the IOLoop thread, read from the test thread: every read takes
    the lock and returns copies, and :meth:`wait_for` sleeps on a condition.
    """

    def __init__(self):
        self._cond = threading.Condition()
        self.opens = []        # (session_id, transport, monotonic time)
        self.closes = []       # (session_id, monotonic time)
        self.messages = []     # (session_id, message)
        self.infos = {}        # session_id -> ConnectionInfo

    # -- written by EchoConnection (loop thread) ------------------------------
    def _add(self, where, item):
        with self._cond:
            where.append(item)
            self._cond.notify_all()

    def opened(self, conn):
        with self._cond:
            self.infos[conn.session_id] = conn.info
        self._add(self.opens, (conn.session_id, conn.transport, time.monotonic()))

    def closed(self, conn):
        self._add(self.closes, (conn.session_id, time.monotonic()))

    def received(self, conn, message):
        self._add(self.messages, (conn.session_id, message))

    # -- read by tests ----------------------------------------------------------
    def session_ids(self):
        with self._cond:
            return [sid for sid, _, _ in self.opens]

    def transports(self):
        with self._cond:
            return [transport for _, transport, _ in self.opens]

    def open_count(self, session_id=None):
        with self._cond:
            return sum(1 for sid, _, _ in self.opens if session_id in (None, sid))

    def close_count(self, session_id=None):
        with self._cond:
            return sum(1 for sid, _ in self.closes if session_id in (None, sid))

    def messages_of(self, session_id=None):
        with self._cond:
            return [m for sid, m in self.messages if session_id in (None, sid)]

    def wait_for(self, predicate, timeout=10.0, what="condition"):
        """Wait until ``predicate()`` is true (checked under the lock)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if predicate():
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("timed out after %.1f s waiting for %s; %r"
                                         % (timeout, what, self))
                self._cond.wait(min(remaining, 0.2))

    def __repr__(self):
        with self._cond:
            return "<Recorder opens=%d closes=%d messages=%d>" % (
                len(self.opens), len(self.closes), len(self.messages))


def _info_value(info, name):
    if isinstance(info, dict):
        return info.get(name)
    return getattr(info, name, None)


class EchoConnection(tornadio.SocketConnection):
    """Echoes every message; JSON objects with a ``cmd`` key are commands.

    * ``{"cmd": "burst", "n": N}``: send ``"burst-0"`` ... ``"burst-<N-1>"``
    * ``{"cmd": "close"}``: ``self.close()``
    * ``{"cmd": "info"}``: send ``{"ip": ..., "transport": ..., "session_id": ...}``

    ``recorder`` is set on the subclass that :func:`make_app` creates.
    """

    recorder = None

    def on_open(self, request, *args, **kwargs):
        self.recorder.opened(self)

    def on_message(self, message):
        self.recorder.received(self, message)
        if isinstance(message, dict) and "cmd" in message:
            self.command(message)
        else:
            self.send(message)

    def on_close(self):
        self.recorder.closed(self)

    def command(self, message):
        cmd = message["cmd"]
        if cmd == "burst":
            for i in range(int(message.get("n", 100))):
                self.send("burst-%d" % i)
        elif cmd == "close":
            self.close()
        elif cmd == "info":
            self.send({"ip": _info_value(self.info, "remote_ip"),
                       "transport": self.transport,
                       "session_id": self.session_id})
        else:
            self.send({"error": "unknown cmd", "cmd": cmd})


PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
<title>TornadIO conformance page</title>
<link rel="icon" href="data:,">
<script>window.TEST_CONFIG = %(config)s;</script>
<script src="/static/harness.js"></script>
<script src="/static/socket.io.js"></script>
</head>
<body>
<h1>TornadIO conformance page</h1>
<div id="htmlfile-body" style="display:none"></div>
</body>
</html>
"""


class PageHandler(tornado.web.RequestHandler):
    """The test page. ``?shim=htmlfile`` installs the ActiveX htmlfile shim
    (harness.js does it before socket.io.js loads)."""

    def get(self):
        config = {"shim": self.get_query_argument("shim", "")}
        # JSON in a <script>: escape "<" so no value can end the element.
        literal = json.dumps(config).replace("<", "\\u003c")
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(PAGE % {"config": literal})


class ScriptHandler(tornado.web.RequestHandler):
    """Serves one JavaScript file, read at request time (never cached)."""

    def initialize(self, path):
        self.path = path

    def get(self):
        with open(self.path, "rb") as f:
            body = f.read()
        self.set_header("Content-Type", "text/javascript; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(body)


def make_app(recorder, settings=None, connection=EchoConnection, resource="socket.io/*",
             **app_settings):
    """The test application; ``settings`` are merged over :data:`TEST_SETTINGS`."""
    merged = dict(TEST_SETTINGS)
    merged.update(settings or {})
    bound = type("Recorded" + connection.__name__, (connection,), {"recorder": recorder})
    router = tornadio.get_router(bound, merged, resource=resource)
    return tornado.web.Application([
        router.route(),
        (r"/", PageHandler),
        (r"/static/socket.io.js", ScriptHandler, {"path": client_js_path()}),
        (r"/static/harness.js", ScriptHandler, {"path": os.path.join(HERE, "harness.js")}),
    ], **app_settings)
