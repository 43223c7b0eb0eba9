"""``get_router``: settings, URL grammar and dispatch of each request to its transport.

One Tornado handler class serves every transport of a router: Tornado 6 cannot
switch handler classes after routing, and WebSocket needs ``WebSocketHandler``.
The handler only parses the URL and hands the request to a small transport
object (``persistent.py``, ``polling.py``); the transports do the work.
"""
import numbers
import re

import tornado.web
import tornado.websocket

from tornadio import origins, session as sessions
from tornadio.client import ClientScript
from tornadio.conn import ConnectionInfo, SocketConnection


PROTOCOLS = ("websocket", "flashsocket", "htmlfile", "xhr-multipart", "xhr-polling",
             "jsonp-polling")

#: Every router setting with its default. Times are seconds, sizes bytes.
DEFAULT_SETTINGS = {
    # Transports a client may use; a disabled one answers 403.
    "enabled_protocols": list(PROTOCOLS),
    # How often expired polling sessions are looked for.
    "session_check_interval": 15,
    # A polling session with no GET for this long ends (on_close runs).
    "session_expiry": 30,
    # Heartbeat period on websocket, flashsocket, htmlfile, xhr-multipart;
    # a heartbeat not echoed by the next one closes the session. 0 disables.
    "heartbeat_interval": 12,
    # How long a long-poll GET is held before an empty answer.
    "xhr_polling_timeout": 20,
    # Origin policy, see tornadio.origins: None (pages of the same host, any port),
    # "*" (any page), a list, or a callable.
    "allowed_origins": None,
    # False: jsonp-polling refuses pages of other sites (Sec-Fetch-Site: cross-site)
    # unless their Referer origin is in allowed_origins. See SECURITY.rst.
    "jsonp_cross_site": True,
    # Largest POST body accepted (413 beyond, nothing buffered past it).
    "max_http_body": 1 << 20,
    # Largest WebSocket message accepted (Tornado closes the socket beyond).
    "max_websocket_message": 1 << 20,
    # Largest declared LEN of one incoming frame, in UTF-16 units.
    "max_message_length": 1 << 20,
    # Most frames in one incoming payload (a POST body or a socket message): 413
    # or a close beyond, nothing dispatched. The 0.6 client batches what is sent
    # while its previous POST is in flight (999 frames for a burst of 1,000). 0: no bound.
    "max_frames_per_payload": 10000,
    # Outgoing bytes a session may queue for a client that is not reading.
    "max_queue_bytes": 16 << 20,
    # Live sessions per router; new ones get 503 beyond. 0 is unlimited.
    "max_sessions": 100000,
    # Path of socket.io.js to serve at /<resource>/socket.io.js (None: not served).
    "client_js": None,
    # Cross-process broadcasts (tornadio.broadcast): None keeps them in this
    # process; or a backend object, e.g. redis_broadcast.RedisBroadcastBackend(url=...).
    "broadcast_backend": None,
    # Name shared by the processes serving this router (None: the connection class name).
    "broadcast_channel": None,
    # Seconds of history behind the per-second rates of Router.stats().
    "stats_window": 10,
}

_SECONDS = ("session_check_interval", "session_expiry", "heartbeat_interval",
            "xhr_polling_timeout")
_SIZES = ("max_http_body", "max_websocket_message", "max_message_length",
          "max_frames_per_payload", "max_queue_bytes", "max_sessions")


def validate_settings(settings):
    """Merge over the defaults; unknown names and bad values raise ValueError."""
    merged = dict(DEFAULT_SETTINGS)
    for name, value in (settings or {}).items():
        if name not in DEFAULT_SETTINGS:
            raise ValueError("unknown TornadIO setting %r (known: %s)"
                             % (name, ", ".join(sorted(DEFAULT_SETTINGS))))
        merged[name] = value
    for name in _SECONDS:
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
            raise ValueError("setting %s must be a number of seconds >= 0, not %r" % (name, value))
    for name in ("session_check_interval", "session_expiry", "xhr_polling_timeout"):
        if merged[name] <= 0:
            raise ValueError("setting %s must be > 0" % name)
    for name in _SIZES:
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("setting %s must be an integer >= 0, not %r" % (name, value))
    if not isinstance(merged["jsonp_cross_site"], bool):
        raise ValueError("setting jsonp_cross_site must be True or False")
    protocols = merged["enabled_protocols"]
    if isinstance(protocols, str) or not all(p in PROTOCOLS for p in protocols):
        raise ValueError("enabled_protocols must be a list drawn from %s, not %r"
                         % (", ".join(PROTOCOLS), protocols))
    merged["enabled_protocols"] = list(protocols)
    origins.validate_policy(merged["allowed_origins"])
    _validate_scaling(merged)
    return merged


def _validate_scaling(merged):
    from tornadio import broadcast
    broadcast.validate_backend(merged["broadcast_backend"])
    broadcast.validate_channel(merged["broadcast_channel"])
    window = merged["stats_window"]
    if isinstance(window, bool) or not isinstance(window, numbers.Real) or window <= 0:
        raise ValueError("setting stats_window must be a number of seconds > 0, not %r" % (window,))


def _transport_table():
    from tornadio import persistent, polling
    return {
        "websocket": persistent.WebSocketTransport,
        "flashsocket": persistent.FlashSocketTransport,
        "xhr-polling": polling.XHRPollingTransport,
        "jsonp-polling": polling.JSONPPollingTransport,
        "htmlfile": polling.HtmlFileTransport,
        "xhr-multipart": polling.XHRMultipartTransport,
    }


@tornado.web.stream_request_body
class SocketRouterHandler(tornado.websocket.WebSocketHandler):
    """The handler behind ``Router.route()``; one instance per HTTP request."""

    connection_class = SocketConnection
    socket_settings = DEFAULT_SETTINGS
    resource = "socket.io/*"
    pattern = None
    client_script = None
    #: Set by :meth:`shutdown`: HTTP answers then close their connection.
    shutting_down = False
    _container = None

    # -- class level ---------------------------------------------------------
    @classmethod
    def route(cls):
        """The ``(pattern, handler)`` rule to put in ``tornado.web.Application``."""
        return (cls.pattern, cls)

    @classmethod
    def sessions(cls):
        """This router's session container, made on first use (inside the IOLoop)."""
        if cls._container is None:
            cls._container = sessions.SessionContainer(cls.socket_settings["session_check_interval"])
            if cls.socket_settings.get("broadcast_backend") is not None:
                cls.broadcaster()  # listen for other processes' broadcasts from the start
        return cls._container

    @classmethod
    def broadcaster(cls):
        """This router's :class:`tornadio.broadcast.Broadcaster`, made on first use."""
        from tornadio import broadcast
        return broadcast.broadcaster_for(cls.sessions(), cls.socket_settings, cls.connection_class)

    @classmethod
    def stats(cls):
        """Live statistics of this router as a JSON-able dict (``tornadio.stats``)."""
        from tornadio import stats
        return stats.router_stats(cls).snapshot()

    @classmethod
    async def shutdown(cls, reason=None):
        """Close every session (``on_close`` runs) and stop the stats sampler.

        What ``SocketServer.shutdown`` does for each router; nothing is created
        for a router that never served a request. A ``broadcast_backend`` is
        left open: ``on_close`` handlers may still be broadcasting their last
        words, and the application that made the backend closes it (``await
        backend.close()``) when it is done.
        """
        from tornadio import stats
        cls.shutting_down = True
        sampler = stats._STATS.pop(cls, None)
        if sampler is not None:
            sampler.stop()
        if cls._container is not None:
            cls._container.close_all(reason or sessions.REASON_SHUTDOWN)

    @classmethod
    def make_info(cls, request, transport):
        return ConnectionInfo(request, transport)

    # -- request level -------------------------------------------------------
    # Per-request state as class-level defaults, set on the instance only when
    # used: a few more instance attributes would cost every WebSocket handler
    # CPython's shared-key dict (about 1 KiB per idle connection).
    transport = None
    fail_reason = None
    open_extra_args = ()
    open_extra_kwargs = None
    _body = None

    def prepare(self):
        # Bodies are streamed so an oversized POST is refused before it is buffered.
        if self.request.method == "POST":
            self._body = bytearray()
            declared = self.request.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > self.socket_settings["max_http_body"]:
                self.fail(413, "body of %s bytes over max_http_body" % declared)

    def data_received(self, chunk):
        if self._finished or self._body is None:
            return
        if len(self._body) + len(chunk) > self.socket_settings["max_http_body"]:
            self.fail(413, "body over max_http_body")
            return
        self._body += chunk

    def request_body(self):
        return self._body or b""

    def check_xsrf_cookie(self):
        """Exempt: the unguessable session id is what protects these POSTs."""

    def compute_etag(self):
        return None

    def set_default_headers(self):
        self.set_header("Cache-Control", "no-store")

    def check_origin(self, origin):
        policy = self.socket_settings["allowed_origins"]
        if origins.check(policy, origin, self.request, "websocket"):
            return True
        self.fail_reason = origins.REFUSED
        return False

    @property
    def max_message_size(self):
        return self.socket_settings["max_websocket_message"]

    def fail(self, status, reason):
        """A 4xx/5xx with a short text body; the reason goes in the one access-log line."""
        self.fail_reason = reason
        if self._finished:
            return
        self.clear()
        self.set_status(status)
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        finished = self.finish(reason)
        if "upgrade" in self.request.headers.get("Connection", "").lower():
            # A refused upgrade may have sent bytes after its headers (hixie-76 key3);
            # they must not be read as a next request on a kept-alive connection.
            connection = self.request.connection
            finished.add_done_callback(lambda _: connection.close())

    def _request_summary(self):
        # Session ids are credentials: only a prefix reaches the log.
        path = _SESSION_IN_PATH.sub(lambda m: m.group(1) + m.group(2)[:6] + "…", self.request.path)
        summary = "%s %s (%s)" % (self.request.method, path, self.request.remote_ip)
        if self.fail_reason:
            summary += " " + self.fail_reason
        return summary

    def _start(self, protocol, extra):
        transport_class = self.transports.get(protocol)
        if transport_class is None:
            self.fail(404, "unknown transport")
            return None
        if protocol not in self.socket_settings["enabled_protocols"]:
            self.fail(403, "transport %s is disabled" % protocol)
            return None
        self.open_extra_args = (extra,) if extra else ()
        self.open_extra_kwargs = {"extra": extra}
        self.transport = transport_class(self)
        return self.transport

    # get/post return the transport's awaitable (Tornado awaits it) instead of
    # awaiting it in a coroutine of their own, which would stay suspended, and
    # in memory, for a WebSocket's whole life.
    def get(self, resource=None, extra=None, protocol=None, rest=None, **_):
        if protocol == "socket.io.js" and rest is None and self.client_script is not None:
            self.client_script.serve(self)
            return None
        transport = self._start(protocol, extra)
        return None if transport is None else transport.get(rest or "")

    def post(self, resource=None, extra=None, protocol=None, rest=None, **_):
        transport = self._start(protocol, extra)
        return None if transport is None else transport.post(rest or "")

    def options(self, resource=None, extra=None, protocol=None, rest=None, **_):
        transport = self._start(protocol, extra)
        if transport is not None:
            transport.options()

    # -- callbacks Tornado makes on the WebSocket / the connection --------------
    def open(self, *args, **kwargs):
        return self.transport.on_open()

    def on_message(self, message):
        return self.transport.on_socket_message(message)

    def on_connection_close(self):
        # WebSocketHandler's version skips RequestHandler's, which is what ends
        # the wait for a streamed request body: without it an aborted POST
        # would leave its request task (and buffered body) behind.
        tornado.web.RequestHandler.on_connection_close(self)
        super().on_connection_close()

    def on_close(self):
        # Tornado calls this for a closed WebSocket and for a client that drops
        # any other request before it is finished.
        if self.transport is not None:
            self.transport.on_connection_lost()


_SESSION_IN_PATH = re.compile(r"(/(?:xhr-polling|jsonp-polling|htmlfile|xhr-multipart)/)([0-9A-Za-z]+)")


def _extra_pattern(extra_re, extra_sep):
    if not extra_re:
        return "(?P<extra>)"
    if not extra_re.startswith("(?P<extra>"):
        extra_re = "(?P<extra>%s)" % extra_re
    return (extra_sep or "") + extra_re


def get_router(connection, settings=None, resource="socket.io/*", io_loop=None,
               extra_re=None, extra_sep=None):
    """A new router class serving ``connection`` (a SocketConnection subclass).

    ``resource`` is a regular expression for the URL prefix, as in the 2011
    TornadIO; ``extra_re`` captures more of the path for ``on_open``.
    ``io_loop`` is accepted for old code and ignored: Tornado 6 has one
    current IOLoop.
    """
    if not (isinstance(connection, type) and issubclass(connection, SocketConnection)):
        raise TypeError("get_router() needs a SocketConnection subclass, not %r" % (connection,))
    merged = validate_settings(settings)
    pattern = r"/(?P<resource>%s)%s/(?P<protocol>[^/]+)(?P<rest>/.*)?" % (
        resource, _extra_pattern(extra_re, extra_sep))
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError("resource/extra_re do not form a valid pattern: %s" % exc) from None
    return type("%sRouter" % connection.__name__, (SocketRouterHandler,), {
        "connection_class": connection,
        "socket_settings": merged,
        "resource": resource,
        "pattern": pattern,
        "transports": _transport_table(),
        "client_script": ClientScript(merged["client_js"]) if merged["client_js"] else None,
        "_container": None,
    })
