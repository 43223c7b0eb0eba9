"""The lean path of the polling transports: long polls and POSTs answered on a
bare ``HTTPMessageDelegate`` instead of a ``RequestHandler``.

A long poll is two small requests per message, and a ``RequestHandler`` costs
far more than what a poll does: the handler's construction, its coroutine, its
per-request UI namespaces. Here each request gets one small handler object
that provides the few primitives the transports use (``request``,
``set_header``, ``finish``, ``answered``); what a request *does* is written
once, in :mod:`tornadio.polling`, for both bases.

Answers are the ones a ``RequestHandler`` gives, byte for byte: the same
status, body and headers (``Server``, ``Date``, ``Cache-Control`` and the
transport's own), errors raised as :exc:`~tornadio.TransportError` and
answered by the same ``write_error``, and every request handed to the
application's ``log_request`` (so its ``log_function`` setting) with the
session id redacted.

Tornado hands a matched request to a :class:`tornado.routing.Router` target
without telling it the application, which ``log_request`` needs: the
:class:`LeanRouter` answers only once its :class:`~tornadio.Router` knows the
application (``SocketServer`` says so, and so does every request that reaches
a transport's ``RequestHandler``). Until then, and for whatever it does not
take (OPTIONS, HEAD, the streaming GETs, a path that is not UTF-8, an
application with output transforms such as ``compress_response``), it
declines and Tornado goes on to the ``RequestHandler`` rule behind it.
"""
import asyncio
import functools
import logging
import re
import sys
import time
from http.client import responses
from typing import TYPE_CHECKING, Any, Awaitable, Dict, Iterable, Optional

import tornado
import tornado.routing
import tornado.web
from tornado import httputil
from tornado.concurrent import Future
from tornado.http1connection import HTTP1Connection
from tornado.iostream import StreamClosedError

from tornadio import polling
from tornadio.transport import DEFAULT_HEADERS

if TYPE_CHECKING:
    from tornadio.router import Router

app_log = logging.getLogger("tornado.application")
gen_log = logging.getLogger("tornado.general")
access_log = logging.getLogger("tornado.access")

_SERVER = "TornadoServer/%s" % tornado.version
# What RequestHandler accepts in a header value (anything else: ValueError).
_VALID_HEADER_VALUE = re.compile(r"[\x09\x20-\x7e\x80-\xff]*")


class _HttpDate:
    """``Date`` header values, formatted once per second (as RequestHandler would)."""

    __slots__ = ("second", "text")

    def __init__(self) -> None:
        self.second = -1
        self.text = ""

    def now(self) -> str:
        now = time.time()
        second = int(now)
        if second != self.second:
            self.text = httputil.format_timestamp(now)
            self.second = second
        return self.text


_DATE = _HttpDate()
_OK_LINE = b"HTTP/1.1 200 OK\r\n"
#: What RequestHandler.set_status accepts as a reason phrase (else "Unknown").
_VALID_REASON = re.compile(r"[\t\x20-\x7e\x80-\xff]+")
#: Statuses whose answer has no body: left to Tornado's write_headers.
_BODYLESS = frozenset((204, 304))


def _nodelay_stays_on(value: bool) -> None:
    """Stands in for ``set_nodelay`` on a stream whose Nagle switch is kept off."""


def keep_nodelay(connection: Any) -> None:
    """Turn Nagle's algorithm off while the connection carries lean requests.

    Tornado turns ``TCP_NODELAY`` on when it finishes a response and off
    again when the write is done: two ``setsockopt`` calls per response,
    four per polled message. A poll connection only ever sends whole
    answers, each one write, so Nagle has nothing to coalesce there; keeping
    it off sends every answer as promptly as the toggle does, without the
    calls. Later requests on the connection (a keep-alive connection may
    serve any handler after a poll) keep it off until one that is not lean
    hands it back (:func:`give_back_nodelay`).

    :param connection: the request's HTTP connection; from then on its
        stream's ``set_nodelay`` does nothing (already so: nothing happens).
    """
    stream = getattr(connection, "stream", None)
    if stream is not None and "set_nodelay" not in vars(stream):
        stream.set_nodelay(True)
        setattr(stream, "set_nodelay", _nodelay_stays_on)


def give_back_nodelay(connection: Any) -> None:
    """Undo :func:`keep_nodelay` for a request that is not lean: Tornado's own
    on/off switching (and any handler's ``set_nodelay``) works again.

    :param connection: the request's HTTP connection; nothing happens unless
        its stream had Nagle kept off.
    """
    stream = getattr(connection, "stream", None)
    if stream is not None and "set_nodelay" in vars(stream):
        delattr(stream, "set_nodelay")
        stream.set_nodelay(False)


#: Host header values Tornado has accepted, with their host names (bounded).
_CHECKED_HOSTS: Dict[str, str] = {}
_CHECKED_HOSTS_MAX = 64
#: Longer Host values (a DNS name has at most 253 characters) are not kept.
_CHECKED_HOST_LENGTH = 255


class LeanRequest(httputil.HTTPServerRequest):
    """An ``HTTPServerRequest`` for a lean request, with every attribute Tornado's has.

    A poll's URL has no query and its client sends the same ``Host`` on every
    request, so once Tornado's own constructor has accepted a ``Host`` value,
    a request with that value and no query is filled in directly: no query
    parsing, no deep copy of the (empty) arguments, no second check of the
    same ``Host``. Anything else goes through Tornado's constructor, which
    raises :exc:`tornado.httputil.HTTPInputError` for a bad ``Host``.

    :param connection: the request's HTTP connection.
    :param server_connection: the server-side connection object.
    :param start_line: the parsed request line.
    :param headers: the request headers.
    """

    def __init__(self, connection: httputil.HTTPConnection, server_connection: object,
                 start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders) -> None:
        self.started_at = time.time()
        host = headers.get("Host")
        host_name = None if host is None else _CHECKED_HOSTS.get(host)
        if host is None or host_name is None or "?" in start_line.path:
            super().__init__(connection=connection, server_connection=server_connection,
                             start_line=start_line, headers=headers)
            if host is not None and len(host) <= _CHECKED_HOST_LENGTH and \
                    host not in _CHECKED_HOSTS:
                if len(_CHECKED_HOSTS) >= _CHECKED_HOSTS_MAX:
                    _CHECKED_HOSTS.clear()
                _CHECKED_HOSTS[host] = self.host_name
            return
        self.method, self.uri, self.version = start_line
        self.headers = headers
        self.body = b""
        context = getattr(connection, "context", None)
        self.remote_ip = getattr(context, "remote_ip", None)
        self.protocol = getattr(context, "protocol", "http")
        self.host = host
        self.host_name = host_name
        self.files = {}
        self.connection = connection
        self.server_connection = server_connection
        self.path = self.uri
        self.query = ""
        self.arguments = {}
        self.query_arguments = {}
        self.body_arguments = {}

    def __repr__(self) -> str:
        # Error logs print the request: the same text as for Tornado's own class.
        return "HTTPServerRequest" + super().__repr__()[len(type(self).__name__):]

    def request_time(self) -> float:
        """Seconds since the request arrived (what the access log prints).

        :returns: the elapsed time in seconds, as ``HTTPServerRequest.request_time``.
        """
        return time.time() - self.started_at


_DEFAULT_TAIL = dict(DEFAULT_HEADERS)


def _default_headers() -> Dict[str, str]:
    """What ``RequestHandler.clear`` and the transports' ``set_default_headers`` set,
    in the same order."""
    return {"Server": _SERVER, "Content-Type": "text/html; charset=UTF-8",
            "Date": _DATE.now(), **_DEFAULT_TAIL}


@functools.lru_cache(maxsize=64)
def _header_name(name: str) -> str:
    """A header name as ``HTTPHeaders`` spells it (``content-type``: ``Content-Type``)."""
    if "\r" in name or "\n" in name or ":" in name:
        raise ValueError("Unsafe header name %r" % name)
    return "-".join(word.capitalize() for word in name.split("-"))


def _closes_http11(connection: HTTP1Connection, request: httputil.HTTPServerRequest) -> bool:
    """Whether Tornado ends this HTTP/1.1 connection after the answer (and so
    says ``Connection: close``): its own rule, from the server's
    ``no_keep_alive`` and the request's ``Connection`` header."""
    if connection.no_keep_alive:
        return True
    value = request.headers.get("Connection")
    return value is not None and value.lower() == "close"


def write_answer(connection: HTTP1Connection, request: httputil.HTTPServerRequest,
                 status: int, reason: str, headers: Dict[str, str], body: bytes
                 ) -> "Future[None]":
    """Write a whole answer in one stream write, then finish the request.

    ``HTTP1Connection.write_headers`` spends more on a small answer than the
    rest of a poll's Python does: per header line two conversions, a
    concatenation, an encoding and a regular-expression search, then two
    header lookups and a parse of ``Content-Length`` it was just given. A
    lean answer's header values are checked when they are set, so here they
    are joined once; the bytes are the ones Tornado writes, ``Connection``
    header included (``close`` to an HTTP/1.1 client whose connection ends,
    ``Keep-Alive`` to an HTTP/1.0 one that asked). The request is then
    finished through ``finish()`` once the kernel has the whole answer (at
    once for a small one), as Tornado does: only then is the next request
    read, or the connection closed when it is to close.

    :param connection: the request's connection; its request body is read.
    :param request: the request answered.
    :param status: the status code.
    :param reason: the reason phrase (no CR or LF).
    :param headers: header names and values, checked already; ``Connection``
        may be added.
    :param body: the whole body (its ``Content-Length`` is in ``headers``).
    :returns: the write's future; it fails with
        :exc:`tornado.iostream.StreamClosedError` when the client has gone.
    """
    version = request.version
    if version == "HTTP/1.1":
        if _closes_http11(connection, request):
            headers["Connection"] = "close"
    elif version == "HTTP/1.0" and \
            request.headers.get("Connection", "").lower() == "keep-alive":
        headers["Connection"] = "Keep-Alive"
    stream = connection.stream
    if stream.closed():
        future: "Future[None]" = Future()
        future.set_exception(StreamClosedError())
        future.exception()
        connection.finish()
        return future
    status_line = _OK_LINE if status == 200 and reason == "OK" else \
        ("HTTP/1.1 %d %s\r\n" % (status, reason)).encode("utf-8")  # as Tornado encodes it
    head = "".join(["%s: %s\r\n" % item for item in headers.items()])
    future = stream.write(b"%s%s\r\n%s" % (status_line, head.encode("latin1"), body))
    if future.done():
        connection.finish()
    else:
        # Tornado, too, finishes only once the answer is out: the next request
        # is not read (nor the connection closed, nor timed out) before.
        future.add_done_callback(lambda _: connection.finish())
    return future


def _tornados_own(application: tornado.web.Application, name: str) -> bool:
    """Whether ``application.<name>`` is Application's own method, overridden
    neither in the application's class nor on the instance."""
    return name not in getattr(application, "__dict__", ()) and \
        getattr(type(application), name, None) is getattr(tornado.web.Application, name)


def _logs_anything(application: tornado.web.Application, status: int) -> bool:
    """False only when ``log_request`` would log nothing: Tornado's own method,
    no ``log_function``, and ``tornado.access`` off for this status's level.

    Then the line (its redacted path, its timing) is not worth formatting.
    """
    if "log_function" in application.settings or not _tornados_own(application, "log_request"):
        return True
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    return access_log.isEnabledFor(level)


class LeanHandler:
    """The handler primitives of ``RequestHandler`` the transports use, and no more.

    The object ``log_function`` receives: it has ``request``, ``application``,
    ``get_status()`` and ``_request_summary()`` as a RequestHandler does.
    """

    name = ""
    answered = False
    #: True once the request's method runs (its body is complete).
    running = False
    _status_code = 200
    _reason = "OK"
    #: The held task of a GET that opens a session (``on_open`` may await).
    opening: "Optional[asyncio.Future[None]]" = None

    def __init__(self, application: tornado.web.Application, router: "Router",
                 request: httputil.HTTPServerRequest, extra: Optional[str],
                 rest: Optional[str]) -> None:
        self.application = application
        self.router = router
        self.request = request
        self.extra = extra
        self.rest = rest
        self._answer_headers = _default_headers()
        assert request.connection is not None
        request.connection.set_close_callback(  # type: ignore[attr-defined]
            self.on_connection_close)
        keep_nodelay(request.connection)

    # -- what RequestHandler offers ------------------------------------------------
    @property
    def settings(self) -> Dict[str, Any]:
        """The application's settings, as ``RequestHandler.settings``."""
        return self.application.settings

    def set_default_headers(self) -> None:
        """Overridden by the transport mixin (``Cache-Control: no-store``)."""

    def clear(self) -> None:
        """Reset headers and status, as ``RequestHandler.clear``."""
        self._answer_headers = _default_headers()
        self._status_code = 200
        self._reason = "OK"

    def set_header(self, name: str, value: str) -> None:
        if _VALID_HEADER_VALUE.fullmatch(value) is None:
            raise ValueError("Unsafe header value %r" % value)
        self._answer_headers[_header_name(name)] = value

    def set_status(self, status_code: int, reason: Optional[str] = None) -> None:
        """As ``RequestHandler.set_status``: a reason it would refuse becomes "Unknown"."""
        self._status_code = status_code
        if reason is None:
            self._reason = responses.get(status_code, "Unknown")
        elif "<" in reason or _VALID_REASON.fullmatch(reason) is None:
            self._reason = "Unknown"
        else:
            self._reason = reason

    def get_status(self) -> int:
        return self._status_code

    def finish(self, chunk: Optional[str] = None) -> "Future[None]":
        """Write the whole answer, end the request and log it."""
        if self.answered:
            raise RuntimeError("finish() called twice")
        body = chunk.encode("utf-8") if chunk else b""
        self._answer_headers["Content-Length"] = str(len(body))
        connection = self.request.connection
        assert connection is not None
        connection.set_close_callback(None)  # type: ignore[attr-defined]
        status = self._status_code
        if type(connection) is HTTP1Connection and self.running and status >= 200 and \
                status not in _BODYLESS:
            future = write_answer(connection, self.request, status, self._reason,
                                  self._answer_headers, body)
        else:
            # Another connection class, an answer before the body is read (Tornado
            # then closes the connection), or a status without a body: Tornado writes it.
            future = connection.write_headers(
                httputil.ResponseStartLine("", status, self._reason),
                httputil.HTTPHeaders(self._answer_headers), body)
            connection.finish()
        if _logs_anything(self.application, status):
            self.application.log_request(self)  # type: ignore[arg-type]
        self.on_finish()
        return future

    def on_finish(self) -> None:
        """Overridden by the transport mixin (marks the request answered)."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Overridden by the transport mixin (a short text body)."""

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        """Answer an error, as ``RequestHandler.send_error``: headers reset, then write_error."""
        if self.answered:
            return
        self.clear()
        reason = kwargs.get("reason")
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, tornado.web.HTTPError) and error.reason:
            reason = error.reason
        self.set_status(status_code, reason)
        try:
            self.write_error(status_code, **kwargs)
        except Exception:
            app_log.error("Uncaught exception in write_error", exc_info=True)
        if not self.answered:
            self.finish()

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        """As ``RequestHandler.log_exception`` (the mixin handles TransportError first)."""
        if isinstance(value, tornado.web.HTTPError):
            message = value.get_message()
            if message:
                gen_log.warning("%d %s: %s", value.status_code, self._request_summary(), message)
        else:
            app_log.error("Uncaught exception %s\n%r", self._request_summary(), self.request,
                          exc_info=(typ, value, tb))

    def _request_summary(self) -> str:
        """Overridden by the transport mixin (redacted session id, failure reason)."""
        raise NotImplementedError

    def failed(self) -> None:
        """Answer the exception being handled, as ``RequestHandler`` does."""
        typ, value, tb = sys.exc_info()
        try:
            self.log_exception(typ, value, tb)
        except Exception:
            app_log.error("Exception in exception handler", exc_info=True)
        if isinstance(value, tornado.web.HTTPError):
            self.send_error(value.status_code, exc_info=(typ, value, tb))
        else:
            self.send_error(500, exc_info=(typ, value, tb))

    def done(self) -> None:
        """The method ended: an unanswered request gets the empty 200 Tornado's auto-finish gives."""
        if not self.answered:
            self.finish()

    # -- the request's life, driven by the delegate ----------------------------------
    def on_connection_close(self) -> None:
        """The client left: the transport lets go of its session."""
        self.connection_lost()

    def connection_lost(self) -> None:
        """Overridden by the transports."""

    def headers_received(self) -> None:
        """Overridden: checks made before any body byte."""

    def data_received(self, chunk: bytes) -> None:
        """Overridden by the transports (the POST body, bounded)."""

    def run(self) -> None:
        """The request is complete: answer it (overridden per method)."""


class LeanPost(polling.HttpExchange, LeanHandler):
    """A POST of any HTTP transport: the payload to its session, then ``ok``."""

    def headers_received(self) -> None:
        try:
            self.check_declared_body()
        except Exception:
            self.failed()

    def run(self) -> None:
        if self.body is None or self.answered:
            return  # answered 413 while the body streamed in
        self.running = True
        try:
            waiter = self.take_post(self.rest)
        except Exception:
            self.failed()
            return
        if waiter is None:
            self.answer_post()
            self.done()
        else:
            asyncio.ensure_future(waiter).add_done_callback(self._caught_up)

    def _caught_up(self, future: "Future[Any]") -> None:
        try:
            future.result()
        except Exception:
            self.failed()
            return
        self.answer_post()
        self.done()


class LeanPoll(LeanHandler):
    """A long-poll GET: answered at once when data waits, else held (no coroutine)."""

    def run(self) -> None:
        assert isinstance(self, polling.LongPollExchange)
        self.running = True
        try:
            session_id = self.check_get(self.rest)
            if not session_id:
                self.opening = asyncio.ensure_future(self._open())
                return
            session = self.find_resumed(session_id)
            if session is None or not self.hold(session,
                                                self.socket_settings["xhr_polling_timeout"]):
                self.done()
        except Exception:
            self.failed()

    def on_connection_close(self) -> None:
        # As on a RequestHandler, whose held GET then returns and is auto-finished;
        # a GET still in on_open goes on until on_open returns.
        self.connection_lost()
        if self.running and self.opening is None:
            self.done()

    async def _open(self) -> None:
        assert isinstance(self, polling.LongPollExchange)
        try:
            session = await self.open_new(self.extra)
            if session is not None and self.hold(session, None):
                return  # answered by write_payload (or ended by the client leaving)
        except Exception:
            self.failed()
            return
        self.done()


class LeanXHRPolling(polling.XHRPollingExchange, LeanPoll):
    """xhr-polling GET on the lean path."""


class LeanJSONPPolling(polling.JSONPPollingExchange, LeanPoll):
    """jsonp-polling GET on the lean path."""


class LeanXHRPollingPost(polling.XHRPollingExchange, LeanPost):
    """xhr-polling POST on the lean path."""


class LeanJSONPPollingPost(polling.JSONPPollingExchange, LeanPost):
    """jsonp-polling POST on the lean path (its URL carries the index)."""


class LeanHtmlFilePost(LeanPost):
    """htmlfile POST on the lean path (its GET streams on a RequestHandler)."""

    name = "htmlfile"


class LeanXHRMultipartPost(LeanPost):
    """xhr-multipart POST on the lean path (its GET streams on a RequestHandler)."""

    name = "xhr-multipart"


#: transport -> (lean GET class or None, lean POST class)
LEAN_CLASSES: Dict[str, Any] = {
    "xhr-polling": (LeanXHRPolling, LeanXHRPollingPost),
    "jsonp-polling": (LeanJSONPPolling, LeanJSONPPollingPost),
    "htmlfile": (None, LeanHtmlFilePost),
    "xhr-multipart": (None, LeanXHRMultipartPost),
}


class _Delegate(httputil.HTTPMessageDelegate):
    """Hands Tornado's HTTP events to a lean handler."""

    __slots__ = ("handler",)

    def __init__(self, handler: LeanHandler) -> None:
        self.handler = handler

    def headers_received(self, start_line: Any, headers: Any) -> None:
        self.handler.headers_received()

    def data_received(self, chunk: bytes) -> None:
        self.handler.data_received(chunk)

    def finish(self) -> None:
        self.handler.run()

    def on_connection_close(self) -> None:
        self.handler.on_connection_close()


class LeanMatcher(tornado.routing.Matcher):
    """Matches the lean transports' URLs, with no percent-decoding to do.

    A path with a ``%`` escape or a byte outside ASCII does not match: the
    transport's RequestHandler rule behind takes it and decodes it as always.
    Real clients never send such paths (ids are hex, the rest digits).
    """

    def __init__(self, pattern: str) -> None:
        self.regex = re.compile(pattern if pattern.endswith("$") else pattern + "$")

    def match(self, request: httputil.HTTPServerRequest) -> Optional[Dict[str, Any]]:
        groups = self.match_groups(request.path)
        return None if groups is None else {"groups": groups}

    def match_groups(self, path: str) -> Optional[Dict[str, Any]]:
        """The pattern's named groups for this path (no query), or None."""
        if "%" in path or not path.isascii():
            return None
        found = self.regex.match(path)
        return None if found is None else found.groupdict()


class LeanRouter(tornado.routing.Router):
    """The ``route()`` rule target in front of the polling transports' handlers.

    Returns a lean delegate for what it takes, None (Tornado tries the next
    rule, the transport's RequestHandler) for the rest.
    """

    def __init__(self, router: "Router", transports: Iterable[str]) -> None:
        self.router = router
        self.transports = frozenset(transports)

    def find_handler(self, request: httputil.HTTPServerRequest,
                     **kwargs: Any) -> Optional[httputil.HTTPMessageDelegate]:
        handler = self.lean_handler(request, kwargs.get("groups"))
        if handler is None:
            give_back_nodelay(request.connection)
            return None
        return _Delegate(handler)

    def lean_handler(self, request: httputil.HTTPServerRequest,
                     groups: Optional[Dict[str, Any]]) -> Optional[LeanHandler]:
        """The lean handler for a request its rule matched, or None (declined).

        :param request: the request, its headers read.
        :param groups: the named groups the rule's pattern matched.
        :returns: a handler of the transport's lean class, not yet told its headers.
        """
        application = self.router.application
        if application is None or not groups:
            return None
        method = request.method
        if method == "GET":
            index = 0
        elif method == "POST":
            index = 1
        else:
            return None
        protocol = groups.get("protocol")
        if protocol not in self.transports:
            return None
        handler_class = LEAN_CLASSES[protocol][index]
        if handler_class is None:
            return None
        return handler_class(application, self.router, request, groups.get("extra"),  # type: ignore[no-any-return]
                             groups.get("rest"))


class FrontDoor(httputil.HTTPServerConnectionDelegate):
    """The HTTP server's delegate in front of an Application: a request the lean
    path takes goes straight to it, without Tornado's routing; every other
    request goes to the application as usual.

    It takes a request only where the application's own routing would have
    led: the application has no host-specific rules, no earlier rule matches
    the request, and the router's rule is in the application's rules (checked
    per request, so rules added later count). :class:`tornadio.server.SocketServer`
    puts one in front of its application.

    :param application: the ``tornado.web.Application`` served.
    :param routers: the TornadIO routers in its rules.
    """

    def __init__(self, application: tornado.web.Application,
                 routers: Iterable["Router"]) -> None:
        self.application = application
        self.entries = [entry for entry in (router.lean_entry() for router in routers)
                        if entry is not None]
        #: False when the application routes in a way of its own (overridden methods,
        #: in its class or on the instance).
        self.usable = bool(self.entries) and all(
            _tornados_own(application, name) for name in ("find_handler", "start_request"))

    def start_request(self, server_conn: object,
                      request_conn: httputil.HTTPConnection) -> httputil.HTTPMessageDelegate:
        if not self.usable:
            return self.application.start_request(server_conn, request_conn)
        return _FrontDelegate(self, server_conn, request_conn)

    def on_close(self, server_conn: object) -> None:
        self.application.on_close(server_conn)

    def lean_delegate(self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders,
                      server_conn: object, request_conn: httputil.HTTPConnection
                      ) -> Optional[httputil.HTTPMessageDelegate]:
        """The lean delegate for this request, or None: the application routes it."""
        handler = self.lean_handler(start_line, headers, server_conn, request_conn)
        return None if handler is None else _Delegate(handler)

    def lean_handler(self, start_line: httputil.RequestStartLine, headers: httputil.HTTPHeaders,
                     server_conn: object, request_conn: httputil.HTTPConnection
                     ) -> Optional[LeanHandler]:
        """The lean handler for this request, or None (the application routes it).

        The front door's own delegate drives it; :meth:`lean_delegate` wraps it
        for a server that wants a delegate.
        """
        if start_line.method not in ("GET", "POST"):
            return None
        path = start_line.path.partition("?")[0]
        for router, matcher, target in self.entries:
            groups = matcher.match_groups(path)
            if groups is None:
                continue
            if router.application is not self.application:
                return None  # the lean path is off for this router
            request = LeanRequest(request_conn, server_conn, start_line, headers)
            if not self._routed_to(matcher, request):
                return None
            return target.lean_handler(request, groups)
        return None

    def _routed_to(self, matcher: LeanMatcher, request: httputil.HTTPServerRequest) -> bool:
        """Whether the application's routing reaches the rule holding ``matcher``."""
        application = self.application
        if len(application.default_router.rules) != 1:
            return False  # host-specific rules (add_handlers) come first
        for rule in application.wildcard_router.rules:
            inner = getattr(rule.target, "rules", None)
            if inner and inner[0].matcher is matcher:
                return rule.matcher.match(request) is not None
            if rule.matcher.match(request) is not None:
                return False  # an earlier rule takes this path
        return False  # the router's rule is not in this application


class _FrontDelegate(httputil.HTTPMessageDelegate):
    """One request through the :class:`FrontDoor`: a lean handler it drives
    itself, or the application's own delegate."""

    __slots__ = ("door", "server_conn", "request_conn", "lean", "delegate")

    def __init__(self, door: FrontDoor, server_conn: object,
                 request_conn: httputil.HTTPConnection) -> None:
        self.door = door
        self.server_conn = server_conn
        self.request_conn = request_conn
        self.lean: Optional[LeanHandler] = None
        self.delegate: Optional[httputil.HTTPMessageDelegate] = None

    def headers_received(self, start_line: Any, headers: httputil.HTTPHeaders
                         ) -> Optional[Awaitable[None]]:
        door = self.door
        lean = door.lean_handler(start_line, headers, self.server_conn, self.request_conn)
        if lean is not None:
            self.lean = lean
            lean.headers_received()
            return None
        give_back_nodelay(self.request_conn)
        delegate = self.delegate = door.application.start_request(self.server_conn,
                                                                  self.request_conn)
        return delegate.headers_received(start_line, headers)

    def data_received(self, chunk: bytes) -> Optional[Awaitable[None]]:
        lean = self.lean
        if lean is not None:
            lean.data_received(chunk)
            return None
        assert self.delegate is not None
        return self.delegate.data_received(chunk)

    def finish(self) -> None:
        lean = self.lean
        if lean is not None:
            lean.run()
            return
        assert self.delegate is not None
        self.delegate.finish()

    def on_connection_close(self) -> None:
        lean = self.lean
        if lean is not None:
            lean.on_connection_close()
        elif self.delegate is not None:
            self.delegate.on_connection_close()
