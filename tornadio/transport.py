"""What every transport handler shares: the sink contract, session lookup and
opening, one HTTP error type answered in one place, and redacted access logs.

Each transport is a Tornado handler class of its own (``polling.py``,
``persistent.py``); the router's single URL rule hands every request to the
class of its transport, with the router as the handler's only argument.
"""
import logging
import re
from types import MemberDescriptorType, TracebackType
from typing import TYPE_CHECKING, Any, Dict, Optional, Protocol, Tuple, Type

import tornado.web
from tornado.concurrent import Future

from tornadio import proto, session as sessions

if TYPE_CHECKING:
    from tornadio.router import Router

    # The mixin is only ever mixed into a RequestHandler:
    # the type checker sees it as one, at run time it stays a plain class.
    _HandlerBase = tornado.web.RequestHandler
else:
    _HandlerBase = object

log = logging.getLogger("tornadio.transport")

_SESSION_ID = re.compile(r"[0-9A-Za-z]{1,64}\Z")

#: Headers every transport answer carries besides Tornado's own (Server, Date,
#: Content-Type): answers to a session's requests are never cached.
DEFAULT_HEADERS = (("Cache-Control", "no-store"),)


class Sink(Protocol):
    """Where a session writes its client's payloads: a transport handler.

    ``once`` is True for a long-poll GET, which the session detaches after one
    payload; False for a socket or a stream, which it keeps writing to.
    """

    once: bool

    def write_payload(self, payload: str) -> None:
        """Send ``payload`` (whole frames, maybe empty) to the client."""

    def end(self) -> None:
        """The session closed: finish the response or close the socket."""


class TransportError(tornado.web.HTTPError):
    """An HTTP error found while serving a transport request.

    Raised wherever it is found; the handler answers it in one place
    (:meth:`TransportHandlerMixin.write_error`) with ``status`` and a short
    text body ``detail``, which also ends the request's access-log line.
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status)
        self.detail = detail

    def __str__(self) -> str:
        return "HTTP %d: %s" % (self.status_code, self.detail)


def retrieve_write_error(future: "Future[Any]") -> None:
    """A write to a client that left meanwhile is not worth a traceback."""
    if not future.cancelled():
        future.exception()


#: The per-request state of :class:`TransportHandlerMixin` (its class-level
#: defaults), for the long-lived handlers that keep it in ``__slots__``.
SLOTTED_STATE: Tuple[str, ...] = (
    "router", "session", "fail_reason", "open_extra", "unsent_bytes", "answered")


def init_slotted_state(handler: Any) -> None:
    """Give a handler whose class has :data:`SLOTTED_STATE` in ``__slots__`` the
    mixin's defaults.

    Why slots: on CPython 3.11 each instance made shrinks its class's room for
    shared instance-dict keys by one, so a burst of WebSocket upgrades (many
    handlers made in one loop turn, before any of them sets its attributes)
    leaves no room for names set later, and each such handler gets a dict of
    its own, about 1.5 KiB per idle connection. A slot costs 8 bytes. A name a
    subclass gives a class-level value of its own is left to that value.
    """
    for name in SLOTTED_STATE:
        for klass in type(handler).__mro__:
            if name in klass.__dict__:
                if isinstance(klass.__dict__[name], MemberDescriptorType):
                    setattr(handler, name, getattr(TransportHandlerMixin, name, None))
                break


class TransportHandlerMixin(_HandlerBase):
    """The shared half of every transport handler (mixed into a Tornado handler).

    Per-request state lives in class-level defaults and is set on the instance
    only when used; the long-lived WebSocket handler keeps it in slots
    (:data:`SLOTTED_STATE`).
    """

    #: The transport's name in URLs and in ``enabled_protocols``.
    name = ""
    #: Sink contract: True when the session detaches this handler after one payload.
    once = False

    router: "Router"
    request: Any
    session: Optional[sessions.Session] = None
    fail_reason: Optional[str] = None
    #: The route's ``extra`` capture, for ``on_open`` (see :meth:`take_route`).
    open_extra: Optional[str] = ""
    #: Bytes handed to the socket and not yet flushed (bounded by max_queue_bytes).
    unsent_bytes = 0
    answered = False

    def initialize(self, router: "Router") -> None:
        self.router = router
        router.learn_application(self.application)

    @property
    def socket_settings(self) -> Dict[str, Any]:
        """The router's settings (``self.settings`` are the application's)."""
        return self.router.settings

    # -- Tornado hooks ---------------------------------------------------------
    def check_xsrf_cookie(self) -> None:
        """Exempt: the unguessable session id is what protects these POSTs."""

    def compute_etag(self) -> Optional[str]:
        return None

    def set_default_headers(self) -> None:
        for name, value in DEFAULT_HEADERS:
            self.set_header(name, value)

    def on_finish(self) -> None:
        self.answered = True

    def log_exception(self, typ: Optional[Type[BaseException]], value: Optional[BaseException],
                      tb: Optional[TracebackType]) -> None:
        if isinstance(value, TransportError):
            self.fail_reason = value.detail  # the access-log line says it
            return
        super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """The one place HTTP errors are answered: a short text body."""
        error = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(error, TransportError):
            detail = error.detail
        else:
            detail = self._reason
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        finished = self.finish(detail)
        if "upgrade" in self.request.headers.get("Connection", "").lower():
            # A refused upgrade may have sent bytes after its headers (hixie-76 key3);
            # they must not be read as a next request on a kept-alive connection.
            connection = self.request.connection
            finished.add_done_callback(lambda _: connection.close())

    def answer_error(self, error: TransportError) -> None:
        """Answer ``error`` from outside the request method (a callback, a body chunk)."""
        self.fail_reason = error.detail
        if not self.answered:
            self.send_error(error.status_code, exc_info=(type(error), error, None))

    def _request_summary(self) -> str:
        # Session ids are credentials: only a prefix reaches the access log.
        summary = "%s %s (%s)" % (self.request.method, self.router.redact(self.request.path),
                                  self.request.remote_ip)
        if self.fail_reason:
            summary += " " + self.fail_reason
        return summary

    # -- request arguments --------------------------------------------------------
    def take_route(self, extra: Optional[str]) -> None:
        """Keep the route's ``extra`` capture for ``on_open``."""
        if extra != self.open_extra:  # no instance attribute for the usual ""
            self.open_extra = extra

    # -- sessions -----------------------------------------------------------------
    def create_session(self, confirmed: bool = True) -> sessions.Session:
        """A new session of this router; TransportError 503 when it is full.

        :param confirmed: False for a long poll, whose handshake completes only
            when its client comes back after the first answer.
        """
        router = self.router
        self.check_capacity(confirmed)
        container = router.sessions()
        info = router.make_info(self.request, self.name)
        session = sessions.Session(container, router.connection_factory, self.name, info,
                                   router.settings)
        session.confirmed = confirmed
        container.add(session)
        return session

    def check_capacity(self, confirmed: bool = True) -> None:
        """TransportError 503 when the router is full.

        Full means ``max_sessions`` sessions with a complete handshake; for a
        new long poll (``confirmed`` False), as many still in their handshake
        (they expire after ``handshake_timeout``); and, for any, the client's
        address having ``max_sessions_per_address`` sessions already.
        """
        settings = self.socket_settings
        container = self.router.sessions()
        limit = settings["max_sessions"]
        if limit and (container.confirmed_count >= limit
                      or not confirmed and container.unconfirmed >= limit):
            raise TransportError(503, "session limit of %d reached" % limit)
        per_address = settings["max_sessions_per_address"]
        if per_address and container.per_address.get(self.request.remote_ip, 0) >= per_address:
            raise TransportError(503, "limit of %d sessions per address reached" % per_address)

    async def open_session(self, session: sessions.Session) -> bool:
        """Run ``on_open`` (``extra`` positional when non-empty, always as a
        keyword); True when the session may go on."""
        extra = self.open_extra
        return await session.open(self.request, (extra,) if extra else (), {"extra": extra})

    def find_session(self, session_id: str) -> Optional[sessions.Session]:
        """The session named in the URL; None when the shutdown just closed it.

        Raises TransportError 400 for a malformed id and 401 for an unknown,
        expired or foreign session. With a session relay, another process's
        session is returned as a :class:`tornadio.relay.RemoteSession`.
        """
        if not _SESSION_ID.match(session_id):
            raise TransportError(400, "malformed session id")
        session = self.router.sessions().get(session_id)
        if self.router.relay is not None:  # another process's session, or one settling
            session = self.router.relay.find_session(session_id, self.name, session)
        if session is None:
            if self.router.shutting_down:
                self.answer_during_shutdown()
                return None
            raise TransportError(401, "unknown or expired session")
        if session.transport != self.name:
            raise TransportError(401, "session belongs to transport %s" % session.transport)
        return session

    def answer_during_shutdown(self) -> None:
        """A request for a session the shutdown just closed, on a kept-alive connection.

        Answered as if all were well, with ``Connection: close``: the client's
        next request then meets the closed listener, which it reports as the
        server going away, instead of an error status for its own session.
        """
        self.set_header("Connection", "close")
        if self.request.method == "GET" and self.once:
            self.write_payload("")
        else:
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish("ok")

    def write_payload(self, payload: str) -> None:
        raise NotImplementedError

    def receive_or_refuse(self, session: sessions.Session,
                          payload: str) -> "Optional[Future[None]]":
        """Hand a socket payload to the session; a malformed one closes it.

        Returns what to await before reading on (see :meth:`Session.receive`).
        """
        try:
            return session.receive(payload)
        except proto.DecodeError as exc:
            self.refuse(session, exc.reason)
            return None

    def refuse(self, session: sessions.Session, reason: str) -> None:
        """Close a session over bad input, with the one log line that says why."""
        log.warning("session %s (%s): closing on bad input: %s",
                    sessions.short_id(session.id), self.name, reason)
        session.close(sessions.REASON_BAD_INPUT)

    # -- bounded writes -------------------------------------------------------------
    def room_for(self, size: int) -> bool:
        """False (and the session closed, one log line) when a client that stops
        reading would make us buffer more than ``max_queue_bytes``."""
        limit = self.socket_settings["max_queue_bytes"]
        if not limit or self.queued_for_client() + size <= limit:
            return True
        session = self.session
        log.warning("session %s (%s): client not reading, over %d bytes unsent; closing",
                    sessions.short_id(session.id) if session else "-", self.name, limit)
        self.drop_client()
        if session is not None:
            session.close(sessions.REASON_OVERFLOW)
        return False

    def queued_for_client(self) -> int:
        """Bytes written to the client's connection that it has not taken yet."""
        return self.unsent_bytes

    def track_write(self, future: "Future[Any]", size: int) -> None:
        """Count ``size`` bytes as unsent until ``future`` (the flush) resolves."""
        if future.done():  # the usual case: the socket took it all at once
            retrieve_write_error(future)
            return
        self.unsent_bytes += size

        def flushed(done: "Future[Any]") -> None:
            self.unsent_bytes -= size
            retrieve_write_error(done)

        future.add_done_callback(flushed)

    def drop_client(self) -> None:
        """Close the client's connection at once (it stopped reading)."""
        self.request.connection.close()

