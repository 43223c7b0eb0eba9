"""The user-facing connection class: subclass it and override the ``on_*`` hooks."""
import logging
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING

from tornadio.session import CLOSED

if TYPE_CHECKING:
    from tornadio.broadcast import Broadcaster

log = logging.getLogger("tornadio.conn")


class ConnectionInfo:
    """Facts about the request that opened the session, kept for its whole life.

    Polling transports see many requests per session; authentication needs the
    first one, so its remote address, headers, cookies and query arguments are
    copied here whatever the transport. TornadIO makes it; applications read it
    as :attr:`SocketConnection.info`.

    :param request: the ``tornado.httputil.HTTPServerRequest`` that opened the session
    :param transport: the transport name, e.g. ``'xhr-polling'``
    """

    __slots__ = {
        "remote_ip": "The client's address (the proxy's, unless ``xheaders=True``).",
        "headers": "The request's ``HTTPHeaders``; read it, do not change it.",
        "path": "The request path, e.g. ``/socket.io/websocket``.",
        "host": "The ``Host`` header's value.",
        "protocol": "``'http'`` or ``'https'``.",
        "transport": "The transport name.",
        "_query_arguments": None, "_cookies": None, "_arguments": None,
    }

    def __init__(self, request, transport):
        self.remote_ip = request.remote_ip
        # The request's own header object (not a copy): read-only here, and an
        # idle server holds one of these per client.
        self.headers = request.headers
        self.path = request.path
        self.host = request.host
        self.protocol = request.protocol
        self.transport = transport
        self._query_arguments = request.query_arguments
        self._cookies = None
        self._arguments = None

    @property
    def cookies(self):
        """Cookie name → value, parsed on first use."""
        if self._cookies is None:
            self._cookies = _parse_cookies(self.headers.get("Cookie", ""))
        return self._cookies

    @property
    def arguments(self):
        """Query argument name → list of str, decoded on first use."""
        if self._arguments is None:
            self._arguments = {name: [value.decode("utf-8", "replace") for value in values]
                               for name, values in self._query_arguments.items()}
        return self._arguments

    def get_argument(self, name, default=None):
        """The last value of the query argument ``name``, as Tornado's ``get_argument`` does.

        :returns: that value (a str), or ``default`` when the argument is absent
        """
        values = self.arguments.get(name)
        return values[-1] if values else default

    def get_cookie(self, name, default=None):
        """The value of the cookie ``name``, or ``default`` when there is none."""
        return self.cookies.get(name, default)

    def __repr__(self):
        return "ConnectionInfo(remote_ip=%r, transport=%r, path=%r)" % (
            self.remote_ip, self.transport, self.path)


def _parse_cookies(header):
    cookies = {}
    if header:
        try:
            parsed = SimpleCookie()
            parsed.load(header)
            cookies = {name: morsel.value for name, morsel in parsed.items()}
        except CookieError:
            log.debug("unparseable Cookie header ignored")
    return cookies


class SocketConnection:
    """One client, seen from the application.

    Override :meth:`on_message` (required), and :meth:`on_open` and
    :meth:`on_close` as needed. Messages of one client reach ``on_message`` in
    order; when it is a coroutine the next message waits for it.

    :param session: the session this object speaks for; TornadIO creates one
        connection per session, applications never instantiate it.
    """

    def __init__(self, session):
        self.session = session

    # -- hooks ---------------------------------------------------------------
    def on_open(self, request, *args, **kwargs):
        """The session was created by ``request``; return False to refuse it.

        ``args``/``kwargs`` are the route's extra captures (``kwargs['extra']``).
        Raising refuses too (and is logged): a crashing auth check lets no one in.
        A refused client gets no ``on_close``. May be a coroutine.
        """

    def on_message(self, message):
        """A message from the client: a ``str``, or the decoded JSON value.

        Heartbeats never arrive here. May be a coroutine; the return value is
        ignored and an exception is logged (the session goes on).
        """
        raise NotImplementedError("SocketConnection subclasses must define on_message")

    def on_close(self):
        """The session ended, for whatever reason: once per accepted session."""

    # -- actions -------------------------------------------------------------
    def send(self, message):
        """Send a str as is, a list item by item, anything else as JSON.

        On a closed connection this is a logged no-op.

        :param message: a ``str``, a ``list`` or any JSON-able value
            (:ref:`protocol-1.6`)
        :raises tornadio.EncodeError: for values that would break the client
            (NaN, sets, lone surrogates, text starting with ``~h~``...)
        """
        if not self.session.accepts_sends:
            log.debug("send() on a closed connection ignored")
            return
        self.session.send(message)

    def close(self):
        """End the session; ``on_close`` runs, the client sees a disconnect."""
        self.session.close()

    # -- groups and broadcasts (tornadio.broadcast) ------------------------------
    def broadcaster(self) -> "Broadcaster":
        """The :class:`tornadio.broadcast.Broadcaster` of this connection's router."""
        return self.session.container.router.broadcaster()

    def join(self, group):
        """Enter the broadcast group ``group`` (a str); left automatically on close.

        :returns: False when the connection is closed or already in the group
        :raises TypeError: ``group`` is not a non-empty str
        """
        return self.broadcaster().join(self, group)

    def leave(self, group):
        """Leave the broadcast group ``group``.

        :returns: False when the connection was not in it
        :raises TypeError: ``group`` is not a non-empty str
        """
        return self.broadcaster().leave(self, group)

    def broadcast(self, message, include_self=False):
        """Send ``message`` to every client of the router (in every process).

        :param message: as for :meth:`send`; encoded once for everyone
        :param include_self: also send it to this connection's own client
        :returns: a :class:`tornadio.broadcast.Delivery`
        :raises tornadio.EncodeError: before anyone gets anything, as :meth:`send`
        """
        return self.broadcaster().send_all(message, exclude=() if include_self else (self,))

    def broadcast_to(self, group, message, include_self=False):
        """Send ``message`` to the members of ``group`` (in every process).

        Parameters and errors as for :meth:`broadcast`; a ``group`` that is not
        a non-empty str raises :exc:`TypeError`.

        :returns: a :class:`tornadio.broadcast.Delivery`
        """
        return self.broadcaster().send_group(group, message,
                                           exclude=() if include_self else (self,))

    # -- facts ---------------------------------------------------------------
    @property
    def is_closed(self) -> bool:
        """True once the session ended and ``on_close`` returned.

        Still False while ``on_close`` runs, as in the 2011 TornadIO: code that
        filters ``[p for p in people if not p.is_closed]`` there still sees the
        closing connection (``send()`` to it is then a quiet no-op).
        """
        return self.session.state == CLOSED

    @property
    def session_id(self):
        """The session id: 32 hex characters, the polling client's credential (do not log it)."""
        return self.session.id

    @property
    def transport(self):
        """The transport name the client connected with, e.g. ``'websocket'``."""
        return self.session.transport

    @property
    def info(self):
        """:class:`ConnectionInfo` of the request that opened the session."""
        return self.session.info
