"""The router: one object per ``get_router`` call that owns everything of it.

A :class:`Router` holds the settings, the session container, the broadcaster,
the statistics, the shutdown state and the transport table. ``route()`` gives
Tornado one URL rule whose target is a list of rules, one per transport, so
Tornado itself hands each request to its transport's own handler class with
the router as the handler's argument: every transport runs on a plain
``RequestHandler`` class (websocket speaks RFC 6455 itself, tornadio.rfc6455).
"""
import logging
import numbers
import re
from typing import Any, Callable, Dict, List, Optional, Tuple, Type

import tornado.web
from tornado.ioloop import IOLoop

from tornadio import broadcast, lean, origins, persistent, polling, stats
from tornadio.session import REASON_SHUTDOWN, Session, SessionContainer
from tornadio.client import ClientFile, client_files
from tornadio.conn import ConnectionFactory, ConnectionInfo, SocketConnection
from tornadio.relay import SessionRelay, validate_relay_backend
from tornadio.transport import TransportError, TransportHandlerMixin

log = logging.getLogger("tornadio.router")

#: The one transport table: name -> handler class. ``enabled_protocols``
#: validation, URL matching and access-log redaction are derived from it.
TRANSPORTS: Dict[str, Type[TransportHandlerMixin]] = {
    handler.name: handler for handler in (
        persistent.WebSocketTransport,
        persistent.FlashSocketTransport,
        polling.HtmlFileTransport,
        polling.XHRMultipartTransport,
        polling.XHRPollingTransport,
        polling.JSONPPollingTransport,
    )
}

PROTOCOLS: Tuple[str, ...] = tuple(TRANSPORTS)

#: Application settings read by :class:`tornadio.server.SocketServer`; 2011
#: applications often pass them in the router's settings too.
APPLICATION_SETTINGS = frozenset(("socket_io_port", "socket_io_address", "flash_policy_port",
                                  "flash_policy_file", "flash_policy_server",
                                  "flash_policy_inline"))

#: Bound of a bare :meth:`Router.shutdown`'s wait for coroutine ``on_close``.
SHUTDOWN_TIMEOUT = 5.0

#: Every router setting with its default. Times are seconds, sizes bytes.
DEFAULT_SETTINGS: Dict[str, Any] = {
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
    # Live sessions per router; new ones get 503 beyond. 0 is unlimited. A
    # session counts once its handshake is complete (a long poll: once its
    # client came back after the first answer); as many may be mid-handshake.
    "max_sessions": 100000,
    # Live sessions per client address (request.remote_ip, so X-Real-IP /
    # X-Forwarded-For with xheaders=True); 503 beyond. 0 is unlimited.
    "max_sessions_per_address": 0,
    # A long-poll session whose client does not come back this long after its
    # first answer expires (a real client polls again at once).
    "handshake_timeout": 5,
    # Path of socket.io.js to serve at /<resource>/socket.io.js (None: not served).
    "client_js": None,
    # Directory of WebSocketMain.swf (flashsocket), served at /<resource>/WebSocketMain.swf
    # and /<resource>/lib/vendor/web-socket-js/... (None: next to client_js; False: not served).
    "client_swf": None,
    # Cross-process broadcasts (tornadio.broadcast): None keeps them in this
    # process; or a backend object, e.g. redis_broadcast.RedisBroadcastBackend(url=...).
    "broadcast_backend": None,
    # Name shared by the processes serving this router (None: the connection class name).
    "broadcast_channel": None,
    # Polling sessions served by whichever process a request reaches (tornadio.relay):
    # None, or a relay backend, e.g. redis_relay.RedisSessionRelay(url=...).
    "session_relay": None,
    # Seconds of history behind the per-second rates of Router.stats().
    "stats_window": 10,
}

_SECONDS = ("session_check_interval", "session_expiry", "heartbeat_interval",
            "xhr_polling_timeout", "handshake_timeout")
_SIZES = ("max_http_body", "max_websocket_message", "max_message_length",
          "max_frames_per_payload", "max_queue_bytes", "max_sessions",
          "max_sessions_per_address")


def validate_settings(settings: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """Merge ``settings`` over :data:`DEFAULT_SETTINGS` and check every value.

    :param settings: router settings, or None for the defaults.
    :returns: a new dict with every setting.
    :raises ValueError: for a bad value of a known setting. Unknown names are
        kept with one warning naming them, as the 2011 TornadIO merged them
        silently (applications pass one dict to the router and the application).
    """
    merged = dict(DEFAULT_SETTINGS)
    unknown = []
    for name, value in (settings or {}).items():
        if name not in DEFAULT_SETTINGS and name not in APPLICATION_SETTINGS:
            unknown.append(name)
        merged[name] = value
    if unknown:
        log.warning("unknown TornadIO setting(s) %s kept but unused (known: %s)",
                    ", ".join(sorted(unknown)), ", ".join(sorted(DEFAULT_SETTINGS)))
    for name in _SECONDS:
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
            raise ValueError("setting %s must be a number of seconds >= 0, not %r" % (name, value))
    for name in ("session_check_interval", "session_expiry", "xhr_polling_timeout",
                 "handshake_timeout"):
        if merged[name] <= 0:
            raise ValueError("setting %s must be > 0" % name)
    for name in _SIZES:
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("setting %s must be an integer >= 0, not %r" % (name, value))
    if not isinstance(merged["jsonp_cross_site"], bool):
        raise ValueError("setting jsonp_cross_site must be True or False")
    protocols = merged["enabled_protocols"]
    if isinstance(protocols, str) or not all(p in TRANSPORTS for p in protocols):
        raise ValueError("enabled_protocols must be a list drawn from %s, not %r"
                         % (", ".join(PROTOCOLS), protocols))
    merged["enabled_protocols"] = list(protocols)
    origins.validate_policy(merged["allowed_origins"])
    broadcast.validate_backend(merged["broadcast_backend"])
    broadcast.validate_channel(merged["broadcast_channel"])
    validate_relay_backend(merged["session_relay"])
    window = merged["stats_window"]
    if isinstance(window, bool) or not isinstance(window, numbers.Real) or window <= 0:
        raise ValueError("setting stats_window must be a number of seconds > 0, not %r" % (window,))
    return merged


class DisabledTransportHandler(TransportHandlerMixin, tornado.web.RequestHandler):
    """A transport of the table that ``enabled_protocols`` leaves out: 403."""

    def prepare(self) -> None:
        raise TransportError(403, "transport %s is disabled" % self.path_kwargs.get("protocol"))


class UnknownTransportHandler(TransportHandlerMixin, tornado.web.RequestHandler):
    """A path under the resource that names no transport: 404."""

    def prepare(self) -> None:
        raise TransportError(404, "unknown transport")


class ClientFileHandler(TransportHandlerMixin, tornado.web.RequestHandler):
    """``GET /<resource>/socket.io.js`` and the Flash files (``client_js``, ``client_swf``)."""

    def get(self, *args: Any, **kwargs: Any) -> None:
        tail = (self.path_kwargs.get("protocol") or "") + (self.path_kwargs.get("rest") or "")
        found = self.router.client_files.get(tail)
        if found is None:
            raise TransportError(404, "unknown transport")
        found.serve(self)


def _extra_pattern(extra_re: Optional[str], extra_sep: Optional[str]) -> str:
    if not extra_re:
        return "(?P<extra>)"
    if not extra_re.startswith("(?P<extra>"):
        extra_re = "(?P<extra>%s)" % extra_re
    return (extra_sep or "") + extra_re


def _extra_filter(extra_re: Optional[str], extra_sep: Optional[str]) -> str:
    """:func:`_extra_pattern` without its ``extra`` capture (the outer filter)."""
    if not extra_re:
        return ""
    if extra_re.startswith("(?P<extra>"):
        extra_re = "(?:" + extra_re[len("(?P<extra>"):]
    return (extra_sep or "") + "(?:%s)" % extra_re


ConnectionMaker = Callable[..., SocketConnection]


class Router:
    """Everything one ``get_router`` call serves: see :func:`get_router`.

    Made at import time by most applications, so nothing here touches the
    IOLoop until the first request (or the first ``sessions()`` call).
    """

    def __init__(self, connection: ConnectionMaker, settings: Optional[Dict[str, Any]] = None,
                 resource: str = "socket.io/*", extra_re: Optional[str] = None,
                 extra_sep: Optional[str] = None) -> None:
        #: The connection class (or factory) as given to ``get_router``.
        self.connection = connection
        #: Every router setting, defaults merged in (:data:`DEFAULT_SETTINGS`).
        self.settings = validate_settings(settings)
        #: Builds each session's connection (TypeError here for what cannot).
        self.connection_factory = ConnectionFactory(connection, self.settings["heartbeat_interval"])
        if self.settings["broadcast_channel"] is None:
            self.settings["broadcast_channel"] = self.connection_factory.name
        self.resource = resource
        prefix = r"/(?P<resource>%s)%s/" % (resource, _extra_pattern(extra_re, extra_sep))
        self._full_pattern = prefix + r"(?P<protocol>[^/]+)(?P<rest>/.*)?"
        try:
            re.compile(self._full_pattern)
        except re.error as exc:
            raise ValueError("resource/extra_re do not form a valid pattern: %s" % exc) from None
        #: The URL pattern of :meth:`route`: every path under the resource. It
        #: captures nothing of its own (Tornado would decode each capture of
        #: every request for nothing); the transport rules inside it have the
        #: named groups resource, extra, protocol and rest.
        self.pattern = r"/(?:%s)%s/[^/]+(?:/.*)?" % (resource, _extra_filter(extra_re, extra_sep))
        #: This router's transport table (name -> handler class).
        self.transports: Dict[str, Type[TransportHandlerMixin]] = dict(TRANSPORTS)
        self._session_in_path = re.compile(
            r"(/(?:%s)/)([0-9A-Za-z]+)" % "|".join(re.escape(name) for name in self.transports))
        #: URL tail under the resource -> what is served there (socket.io.js, the SWFs).
        self.client_files: Dict[str, ClientFile] = client_files(self.settings)
        self._application: Optional[tornado.web.Application] = None
        self._lean_off = False
        self._routes_given = 0
        self._route = (self.pattern, self._rules(prefix))
        #: True from :meth:`stop_sessions` until :meth:`restart`: answers then
        #: close their connection, and polls for closed sessions get a quiet answer.
        self.shutting_down = False
        self._container: Optional[SessionContainer] = None
        self._broadcaster: Optional[broadcast.Broadcaster] = None
        self._stats: Optional[stats.RouterStats] = None
        self._relay: Optional[SessionRelay] = None

    def _rules(self, prefix: str) -> List[Tuple[Any, Any, Dict[str, Any]]]:
        arguments = {"router": self}
        rules: List[Tuple[Any, Any, Dict[str, Any]]] = []
        enabled = self.settings["enabled_protocols"]
        # The lean path comes first, in front of its transports' own rules (it
        # declines what it does not take): polls are most of the requests, and
        # the patterns never overlap. A transport replaced in the table keeps its class.
        leaned = [name for name in lean.LEAN_CLASSES
                  if name in enabled and self.transports.get(name) is TRANSPORTS[name]]
        self._lean: Optional[Tuple[lean.LeanMatcher, lean.LeanRouter]] = None
        if leaned:
            alternatives = "|".join(re.escape(name) for name in leaned)
            self._lean = (lean.LeanMatcher(prefix + r"(?P<protocol>%s)(?P<rest>/.*)?"
                                           % alternatives), lean.LeanRouter(self, leaned))
            rules.append((self._lean[0], self._lean[1], arguments))
        rules.append((prefix + r"(?P<protocol>socket\.io\.js|WebSocketMain(?:Insecure)?\.swf|lib)"
                      r"(?P<rest>/vendor/web-socket-js/WebSocketMain(?:Insecure)?\.swf)?",
                      ClientFileHandler, arguments))
        for name, handler in self.transports.items():
            target = handler if name in enabled else DisabledTransportHandler
            rules.append((prefix + r"(?P<protocol>%s)(?P<rest>/.*)?" % re.escape(name),
                          target, arguments))
        rules.append((self._full_pattern, UnknownTransportHandler, arguments))
        return rules

    def __repr__(self) -> str:
        return "<Router %s at /%s>" % (self.connection_factory.name, self.resource)

    # -- what applications use -----------------------------------------------------
    def route(self) -> Tuple[str, Any]:
        """The ``(pattern, target)`` rule to put in ``tornado.web.Application``.

        The target is a list of rules, one per transport: Tornado routes each
        request straight to its transport's handler class. Asked more than
        once, the router may be in several applications, and the lean path
        (which cannot tell them apart for the access log) stays off.
        """
        self._routes_given += 1
        if self._routes_given > 1:
            self._lean_off = True
        return self._route

    def sessions(self) -> SessionContainer:
        """This router's session container, made on first use (inside the IOLoop)."""
        if self._container is None:
            self._container = SessionContainer(self.settings["session_check_interval"],
                                                        router=self)
            if self.settings["session_relay"] is not None:
                self._relay = SessionRelay(self._container, self.settings["session_relay"],
                                           self.settings)
            if self.settings["broadcast_backend"] is not None:
                self.broadcaster()  # listen for other processes' broadcasts from the start
        return self._container

    def broadcaster(self) -> broadcast.Broadcaster:
        """This router's :class:`tornadio.broadcast.Broadcaster`, made on first use."""
        container = self.sessions()  # may make the broadcaster itself (with a backend)
        if self._broadcaster is None:
            channel = self.settings["broadcast_channel"]
            self._broadcaster = broadcast.Broadcaster(container,
                                                      self.settings["broadcast_backend"], channel)
        return self._broadcaster

    @property
    def relay(self) -> Optional[SessionRelay]:
        """The session relay (setting ``session_relay``), once :meth:`sessions` made it."""
        return self._relay

    @property
    def has_broadcaster(self) -> bool:
        """Whether :meth:`broadcaster` was made (stats show it only then)."""
        return self._broadcaster is not None

    def stats(self) -> Dict[str, Any]:
        """Live statistics of this router as a JSON-able dict (see ``tornadio.stats``)."""
        if self._stats is None:
            self._stats = stats.RouterStats(self)
        return self._stats.snapshot()

    @property
    def application(self) -> Optional[tornado.web.Application]:
        """The Application serving this router, once known (None before, or
        when the lean path is off for it); see :meth:`learn_application`."""
        return None if self._lean_off else self._application

    def lean_entry(self) -> "Optional[Tuple[Router, lean.LeanMatcher, lean.LeanRouter]]":
        """(this router, its lean rule's matcher and target), for
        :class:`tornadio.lean.FrontDoor`; None with no lean transport enabled."""
        if self._lean is None:
            return None
        return (self, self._lean[0], self._lean[1])

    def learn_application(self, application: tornado.web.Application) -> None:
        """Tell the router which Application serves it.

        From then on the polling transports answer on their lean path
        (:mod:`tornadio.lean`), which logs through the application's
        ``log_request``. :class:`~tornadio.server.SocketServer` calls this, and
        every request reaching a transport's RequestHandler does too. An
        application with output transforms (``compress_response``), or a
        second application, turns the lean path off for good: RequestHandlers
        then answer everything.

        :param application: the ``tornado.web.Application`` whose rules hold
            :meth:`route`.
        """
        if application is self._application or self._lean_off:
            return
        if self._application is not None or getattr(application, "transforms", None):
            self._lean_off = True
            return
        self._application = application

    def make_info(self, request: Any, transport: str) -> ConnectionInfo:
        """The :class:`ConnectionInfo` kept for a session opened by ``request``."""
        return ConnectionInfo(request, transport)

    def redact(self, path: str) -> str:
        """``path`` with any session id cut to a prefix, for logs."""
        found = self._session_in_path.search(path)
        while found is not None:  # once per request, usually: no per-match callback
            start, end = found.span(2)
            path = path[:start] + path[start:min(end, start + 6)] + "…" + path[end:]
            found = self._session_in_path.search(path, start + 1)
        return path

    # -- shutdown and restart ------------------------------------------------------
    async def shutdown(self, reason: Optional[str] = None,
                       timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Close every session (``on_close`` runs), then start afresh.

        What :class:`tornadio.server.SocketServer` does for each router, in two
        steps (:meth:`stop_sessions`, then :meth:`restart` once its connections
        are closed). Afterwards the router behaves exactly like a new one. A
        ``broadcast_backend`` is left open: the application that made it closes it.

        :param reason: the close reason logged for each session.
        :param timeout: how long coroutine ``on_close`` handlers may take.
        """
        await self.stop_sessions(reason, timeout)
        self.restart()

    async def stop_sessions(self, reason: Optional[str] = None,
                            timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Close every session and wait (bounded) for coroutine ``on_close``.

        Until :meth:`restart`, HTTP answers say ``Connection: close`` and a
        poll for a session closed here gets a quiet empty answer.
        """
        self.shutting_down = True
        if self._stats is not None:
            self._stats.stop()
            self._stats = None
        container = self._container
        if self._relay is not None:
            self._relay.release_polls()
        if container is not None:
            container.close_all(reason or REASON_SHUTDOWN)
            await container.wait_tasks(timeout)

    def restart(self) -> None:
        """Forget every session and start serving as a fresh router."""
        if self._broadcaster is not None:
            self._broadcaster.close()
            self._broadcaster = None
        if self._relay is not None:
            self._relay.close()
            self._relay = None
        if self._container is not None:
            self._container.stop()
            self._container = None
        self.shutting_down = False

    # -- names of the 2011 TornadIO router class --------------------------------
    @property
    def _connection(self) -> ConnectionMaker:
        return self.connection

    @property
    def _sessions(self) -> SessionContainer:
        return self.sessions()

    @property
    def socket_settings(self) -> Dict[str, Any]:
        return self.settings

    @property
    def io_loop(self) -> IOLoop:
        """2011 name: the IOLoop (Tornado 6 has one current loop)."""
        return IOLoop.current()

    @property
    def connection_class(self) -> ConnectionMaker:
        return self.connection


def get_router(connection: ConnectionMaker, settings: Optional[Dict[str, Any]] = None,
               resource: str = "socket.io/*", io_loop: Any = None,
               extra_re: Optional[str] = None, extra_sep: Optional[str] = None) -> Router:
    """A new :class:`Router` serving ``connection``.

    :param connection: a :class:`SocketConnection` subclass, or any callable
        returning one, called as the class would be (see
        :class:`tornadio.conn.ConnectionFactory`), as in 2011.
    :param settings: router settings (:data:`DEFAULT_SETTINGS`).
    :param resource: a regular expression for the URL prefix, as in 2011.
    :param io_loop: accepted for old code and ignored (Tornado 6 has one IOLoop).
    :param extra_re: a regular expression capturing more of the path for
        ``on_open`` (``kwargs['extra']``); ``extra_sep`` goes before it.
    :returns: the router; put ``router.route()`` in the application's rules.
    :raises TypeError: when ``connection`` is not callable, or a class that is
        not a SocketConnection subclass.
    :raises ValueError: for a bad setting or a resource that is no valid pattern.
    """
    return Router(connection, settings, resource, extra_re, extra_sep)
