"""The user-facing connection class: subclass it and override the ``on_*`` hooks.

Also what keeps 2011 TornadIO applications running unchanged: the constructor
arguments of that time, connection factories (:class:`ConnectionFactory`), the
``_protocol`` alias and the heartbeat methods. ``docs/migrating.rst`` lists
every 2011 name and what it does now.
"""
import inspect
import logging
import warnings
import weakref
from http.cookies import CookieError, SimpleCookie
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Dict, Generic, List, Optional,
                    TypeVar, Union, overload)

from tornado.httputil import HTTPHeaders, HTTPServerRequest
from tornado.ioloop import IOLoop

from tornadio.proto import EncodeError
from tornadio.session import CLOSED

if TYPE_CHECKING:
    from tornadio.broadcast import Broadcaster, Delivery
    from tornadio.session import Session

log = logging.getLogger("tornadio.conn")

_T = TypeVar("_T")


class ConnectionInfo:
    """Facts about the request that opened the session, kept for its whole life.

    Polling transports see many requests per session; authentication needs the
    first one, so its remote address, headers, cookies and query arguments are
    copied here whatever the transport.
    """

    __slots__ = ("remote_ip", "headers", "path", "host", "protocol", "transport",
                 "_query_arguments", "_cookies", "_arguments")

    def __init__(self, request: HTTPServerRequest, transport: str) -> None:
        """``request``: the request that opened the session; ``transport``: its
        transport name (``'websocket'``, ``'xhr-polling'``...)."""
        self.remote_ip: Optional[str] = request.remote_ip  # as Tornado types it
        # The request's own header object (not a copy): read-only here, and an
        # idle server holds one of these per client.
        self.headers: HTTPHeaders = request.headers
        self.path: str = request.path
        self.host: str = request.host
        self.protocol: str = request.protocol
        self.transport = transport
        self._query_arguments: Dict[str, List[bytes]] = request.query_arguments
        self._cookies: Optional[Dict[str, str]] = None
        self._arguments: Optional[Dict[str, List[str]]] = None

    @property
    def cookies(self) -> Dict[str, str]:
        """Cookie name → value, parsed on first use."""
        if self._cookies is None:
            self._cookies = _parse_cookies(self.headers.get("Cookie", ""))
        return self._cookies

    @property
    def arguments(self) -> Dict[str, List[str]]:
        """Query argument name → list of str, decoded on first use."""
        if self._arguments is None:
            self._arguments = {name: [value.decode("utf-8", "replace") for value in values]
                               for name, values in self._query_arguments.items()}
        return self._arguments

    def get_argument(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The last value of the query argument ``name``, as Tornado's
        ``get_argument`` does; ``default`` when absent (never raises)."""
        values = self.arguments.get(name)
        return values[-1] if values else default

    def get_cookie(self, name: str, default: Optional[str] = None) -> Optional[str]:
        """The value of the cookie ``name``; ``default`` when absent or unparseable."""
        return self.cookies.get(name, default)

    def __repr__(self) -> str:
        return "ConnectionInfo(remote_ip=%r, transport=%r, path=%r)" % (
            self.remote_ip, self.transport, self.path)


def _parse_cookies(header: str) -> Dict[str, str]:
    cookies: Dict[str, str] = {}
    if header:
        try:
            parsed = SimpleCookie()
            parsed.load(header)
            cookies = {name: morsel.value for name, morsel in parsed.items()}
        except CookieError:
            log.debug("unparseable Cookie header ignored")
    return cookies



class _Fact(Generic[_T]):
    """A read-only attribute that an instance attribute of the same name shadows.

    2011 connections had plain attributes, and applications assign names such
    as ``is_closed`` or ``transport`` on their own objects; a ``property`` would
    make that assignment raise. The library itself reads the session, never these.
    """

    def __init__(self, getter: Callable[[Any], _T]) -> None:
        self.getter = getter
        self.__doc__ = getter.__doc__

    @overload
    def __get__(self, instance: None, owner: Optional[type] = None) -> "_Fact[_T]": ...

    @overload
    def __get__(self, instance: object, owner: Optional[type] = None) -> _T: ...

    def __get__(self, instance: Optional[object],
                owner: Optional[type] = None) -> Union["_Fact[_T]", _T]:
        return self if instance is None else self.getter(instance)


#: Classes already warned about one deprecated name, per name.
_WARNED: Dict[str, "weakref.WeakSet[type]"] = {}


def _warn_once(cls: type, name: str, advice: str, stacklevel: int = 3) -> None:
    """One DeprecationWarning per connection class and name, pointing at the caller."""
    warned = _WARNED.setdefault(name, weakref.WeakSet())
    if cls in warned:
        return
    warned.add(cls)
    warnings.warn("%s.%s is a 2011 TornadIO name kept for old code; %s"
                  % (cls.__qualname__, name, advice), DeprecationWarning, stacklevel=stacklevel)


def _text(value: Any) -> Any:
    # Python 2 code sent byte strings as text; ported code still does (redis-py
    # replies, file contents). JSON has no bytes, so decoding loses nothing.
    if isinstance(value, (bytes, bytearray)):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise EncodeError("bytes that are not UTF-8 cannot be sent as text") from None
    if isinstance(value, list) and any(isinstance(item, (bytes, bytearray)) for item in value):
        return [_text(item) for item in value]
    return value


class SocketConnection:
    """One client, seen from the application.

    Override :meth:`on_message` (required), and :meth:`on_open` and
    :meth:`on_close` as needed. Messages of one client reach ``on_message`` in
    order; when it is a coroutine the next message waits for it.

    The router builds one per session as ``cls(session)``; a subclass may take
    and pass on ``*args, **kwargs`` or the 2011 ``(protocol, io_loop,
    heartbeat_interval)`` (see :class:`ConnectionFactory`).
    """

    def __init__(self, session: "Session", io_loop: Optional[IOLoop] = None,
                 heartbeat_interval: Optional[float] = None) -> None:
        """``session``: the :class:`tornadio.session.Session` (2011: ``protocol``).

        ``io_loop`` and ``heartbeat_interval`` are what 2011 factories passed
        on; both are ignored (one current IOLoop; heartbeats follow the
        router's ``heartbeat_interval`` setting).
        """
        self._tornadio_session = session

    # -- hooks ---------------------------------------------------------------
    def on_open(self, request: HTTPServerRequest, *args: str,
                **kwargs: str) -> Union[None, bool, Awaitable[Optional[bool]]]:
        """The session was created by ``request``; return False to refuse it.

        ``args``/``kwargs`` are the route's extra captures (``kwargs['extra']``).
        Raising refuses too (and is logged): a crashing auth check lets no one in.
        A refused client gets no ``on_close``. May be a coroutine: while it
        runs the connection already receives broadcasts of the groups it
        joined (queued behind the session id, as in 2011), and ``on_close``
        waits for it to return, even when the client left meanwhile.
        """

    def on_message(self, message: Any) -> Optional[Awaitable[None]]:
        """A message from the client: a ``str``, or the decoded JSON value."""
        raise NotImplementedError("SocketConnection subclasses must define on_message")

    def on_close(self) -> None:
        """The session ended, for whatever reason: once per accepted session.

        While it runs :attr:`is_closed` is still False, as in the 2011 TornadIO
        (handlers that filter their peers on it still count themselves), and
        :meth:`send` to this connection is a quiet no-op.
        """

    # -- actions -------------------------------------------------------------
    def send(self, message: Any) -> None:
        """Send a str as is, a list item by item, anything else as JSON.

        ``bytes`` are sent as UTF-8 text, as Python 2 code expects. Raises
        :class:`tornadio.proto.EncodeError` for values that would break the
        client (NaN, sets, lone surrogates...). On a closed connection (also
        from inside ``on_close``) this is a quiet no-op.
        """
        session = self._tornadio_session
        if session.is_closed:
            log.debug("send() on a closed connection ignored")
            return
        session.send(_text(message))

    def close(self) -> None:
        """End the session; ``on_close`` runs, the client sees a disconnect."""
        self._tornadio_session.close()

    # -- groups and broadcasts (tornadio.broadcast) ------------------------------
    # The session, not the connection, goes to the broadcaster: an application
    # may well keep its own object under the name ``session``.
    def broadcaster(self) -> "Broadcaster":
        """The :class:`tornadio.broadcast.Broadcaster` of this connection's router."""
        router = self._tornadio_session.container.router
        assert router is not None, "a session of no router has no broadcaster"
        return router.broadcaster()

    def join(self, group: str) -> bool:
        """Enter the broadcast group ``group`` (a str); left automatically on close."""
        return self.broadcaster().join(self._tornadio_session, group)

    def leave(self, group: str) -> bool:
        """Leave the broadcast group ``group``; False if not in it."""
        return self.broadcaster().leave(self._tornadio_session, group)

    def broadcast(self, message: Any, include_self: bool = False) -> "Delivery":
        """Send ``message`` to every client of the router (in every process).

        Returns a :class:`tornadio.broadcast.Delivery`.
        """
        return self.broadcaster().send_all(
            _text(message), exclude=() if include_self else (self._tornadio_session,))

    def broadcast_to(self, group: str, message: Any, include_self: bool = False) -> "Delivery":
        """Send ``message`` to the members of ``group`` (in every process)."""
        return self.broadcaster().send_group(
            group, _text(message), exclude=() if include_self else (self._tornadio_session,))

    # -- facts ---------------------------------------------------------------
    @_Fact
    def session(self) -> "Session":
        """The :class:`tornadio.session.Session` behind this connection."""
        return self._tornadio_session

    @_Fact
    def is_closed(self) -> bool:
        """True once the session has ended and ``on_close`` has returned."""
        return self._tornadio_session.state == CLOSED

    @_Fact
    def session_id(self) -> str:
        """The session id (32 hex digits): a credential, log only a prefix."""
        return self._tornadio_session.id

    @_Fact
    def transport(self) -> str:
        """The transport name the client connected with, e.g. ``'websocket'``."""
        return self._tornadio_session.transport

    @_Fact
    def info(self) -> ConnectionInfo:
        """:class:`ConnectionInfo` of the request that opened the session."""
        return self._tornadio_session.info

    # -- 2011 names ------------------------------------------------------------
    @_Fact
    def _protocol(self) -> "ProtocolAlias":
        """2011: the transport object. Now a :class:`ProtocolAlias` (deprecated)."""
        _warn_once(type(self), "_protocol", "use self.session_id, self.is_closed, self.info",
                   stacklevel=4)
        return ProtocolAlias(self)

    def raw_message(self, message: str) -> None:
        """2011: hand a raw socket.io payload in as if the client had sent it.

        Deprecated. Raises :class:`tornadio.proto.DecodeError` when malformed.
        """
        _warn_once(type(self), "raw_message", "the transports feed the session themselves")
        self._tornadio_session.receive(message)

    # Heartbeats belong to the session now: one every ``heartbeat_interval``
    # seconds on persistent transports, and a missing echo closes the session.
    # Letting a connection stop or delay them would only let dead clients linger.
    def reset_heartbeat(self, interval: Optional[float] = None) -> None:
        """2011 heartbeat control; deprecated, does nothing (see the router setting)."""
        _warn_once(type(self), "reset_heartbeat", "set heartbeat_interval in the router settings")

    def stop_heartbeat(self) -> None:
        """2011 heartbeat control; deprecated, does nothing (see the router setting)."""
        _warn_once(type(self), "stop_heartbeat", "set heartbeat_interval in the router settings")

    def delay_heartbeat(self) -> None:
        """2011 heartbeat control; deprecated, does nothing (see the router setting)."""
        _warn_once(type(self), "delay_heartbeat", "set heartbeat_interval in the router settings")

    def send_heartbeat(self) -> None:
        """2011 heartbeat control; deprecated, does nothing (see the router setting)."""
        _warn_once(type(self), "send_heartbeat", "set heartbeat_interval in the router settings")


class ProtocolAlias:
    """What 2011 code read through ``self._protocol`` (then the transport handler).

    ``session_id``, ``is_closed``, ``request`` (now the :class:`ConnectionInfo`:
    ``remote_ip``, ``headers``, ``cookies`` as name → str...), ``send()`` and
    ``close()``, each answered by the connection.
    """

    __slots__ = ("_connection",)

    def __init__(self, connection: SocketConnection) -> None:
        self._connection = connection

    @property
    def session_id(self) -> str:
        return self._connection._tornadio_session.id

    @property
    def is_closed(self) -> bool:
        return self._connection.is_closed

    @property
    def request(self) -> ConnectionInfo:
        return self._connection._tornadio_session.info

    def send(self, message: Any) -> None:
        self._connection.send(message)

    def close(self) -> None:
        self._connection.close()

    def __repr__(self) -> str:
        return "<ProtocolAlias of %r>" % (self._connection,)


class _RefusedConnection(SocketConnection):
    """Stands in for a connection the factory failed to build: the client is refused."""

    def on_open(self, request: HTTPServerRequest, *args: str, **kwargs: str) -> bool:
        return False

    def on_message(self, message: Any) -> None:
        pass


def _binds(signature: inspect.Signature, count: int) -> bool:
    try:
        signature.bind(*([None] * count))
    except TypeError:
        return False
    return True


class ConnectionFactory:
    """Builds the connection of each new session from what ``get_router`` was given.

    ``build`` is a :class:`SocketConnection` subclass or any callable that
    returns an instance of one (2011 applications pass factory objects that
    close over their own state). It is called with the session alone when its
    signature allows one argument, else with the 2011 three: ``(session,
    io_loop, heartbeat_interval)``. When it raises, or returns something that
    is no connection of that session, one error is logged and the client is
    refused (``on_open`` and ``on_close`` do not run).

    Raises ``TypeError`` at construction for a non-callable, a class that is
    not a SocketConnection subclass, or a signature that takes neither form.
    """

    __slots__ = ("build", "heartbeat_interval", "_session_only")

    def __init__(self, build: Callable[..., SocketConnection],
                 heartbeat_interval: float = 12) -> None:
        if isinstance(build, type):
            if not issubclass(build, SocketConnection):
                raise TypeError("get_router() needs a SocketConnection subclass or a callable "
                                "returning a SocketConnection, not the class %r" % (build,))
        elif not callable(build):
            raise TypeError("get_router() needs a SocketConnection subclass or a callable "
                            "returning a SocketConnection, not %r" % (build,))
        self.build = build
        self.heartbeat_interval = heartbeat_interval
        try:
            signature = inspect.signature(build)
        except (TypeError, ValueError):  # no introspectable signature: the common form
            self._session_only = True
        else:
            self._session_only = _binds(signature, 1)
            if not self._session_only and not _binds(signature, 3):
                raise TypeError("connection factory %r must accept (session) or the 2011 "
                                "(protocol, io_loop, heartbeat_interval)" % (build,))

    @property
    def name(self) -> str:
        """The factory's name, for router class names and log lines."""
        return getattr(self.build, "__qualname__", None) or type(self.build).__qualname__

    def __call__(self, session: "Session") -> SocketConnection:
        try:
            if self._session_only:
                connection = self.build(session)
            else:
                connection = self.build(session, IOLoop.current(), self.heartbeat_interval)
        except Exception:
            log.exception("connection factory %s raised; client refused", self.name)
            return _RefusedConnection(session)
        if not isinstance(connection, SocketConnection):
            log.error("connection factory %s returned %s, not a SocketConnection; client refused",
                      self.name, type(connection).__qualname__)
            return _RefusedConnection(session)
        if getattr(connection, "_tornadio_session", None) is not session:
            log.error("connection factory %s returned a connection of another session (does "
                      "its __init__ pass its arguments on to SocketConnection.__init__?); "
                      "client refused", self.name)
            return _RefusedConnection(session)
        return connection

    def __repr__(self) -> str:
        return "ConnectionFactory(%r)" % (self.build,)
