"""``SocketServer``: an HTTPServer that also speaks the Flash socket policy.

It listens where ``application.settings`` say, answers
``<policy-file-request/>`` inline on the socket.io port itself (Tornado's HTTP
parser would wait forever for a header terminator that a Flash Player never
sends, docs/protocol.rst §4.2) and, when the application asks for one, runs the
separate Flash policy server.

Application settings read (all optional):

``socket_io_port`` (8001), ``socket_io_address`` (``''``: every interface; the
policy server binds it too), ``flash_policy_port`` (None; 843 when only the
file is set), ``flash_policy_file`` (None: generated from the routers'
``allowed_origins`` and the socket.io port), ``flash_policy_server`` (None:
run the separate policy listener when ``flash_policy_port`` or
``flash_policy_file`` is set, as the 2011 TornadIO did; True or False decide
outright), ``flash_policy_inline`` (True; False turns off the inline answer
on the socket.io port) and ``idle_connection_timeout`` (see
:func:`idle_timeout`).
"""
import asyncio
import logging
import numbers
import signal
import socket
import threading
from datetime import timedelta
from types import FrameType
from typing import (Any, Callable, Iterable, List, Mapping, NoReturn, Optional, Set, Tuple, Union,
                    cast)

import tornado.util
import tornado.web
from tornado import gen, netutil
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerConnectionDelegate, HTTPServerRequest
from tornado.ioloop import IOLoop
from tornado.iostream import IOStream
from tornado.platform.asyncio import BaseAsyncIOLoop

from tornadio import flashserver, lean
from tornadio.router import DEFAULT_SETTINGS, Router

log = logging.getLogger("tornadio.server")

#: How long a new connection on the socket.io port may stay silent before it
#: is handed to the HTTP machinery untouched (whose own timeouts then apply).
PEEK_TIMEOUT = 10.0
#: Default bound of :meth:`SocketServer.shutdown`.
SHUTDOWN_TIMEOUT = 5.0
#: Signals that shut a server started with ``auto_start=True`` down.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: What ``HTTPServer`` serves: usually a ``tornado.web.Application``.
RequestCallback = Union[HTTPServerConnectionDelegate, Callable[[HTTPServerRequest], None]]


def socket_routers(application: object) -> List[Router]:
    """Every TornadIO :class:`Router` whose ``route()`` is in the application's rules."""
    found: List[Router] = []
    seen: Set[int] = set()

    def walk(router: object) -> None:
        if id(router) in seen:
            return
        seen.add(id(router))
        for rule in getattr(router, "rules", ()):
            owner = (rule.target_kwargs or {}).get("router")
            if isinstance(owner, Router) and owner not in found:
                found.append(owner)
            if hasattr(rule.target, "rules"):
                walk(rule.target)

    walk(getattr(application, "default_router", None))
    return found


def merged_origins(routers: Iterable[Router]) -> Optional[List[str]]:
    """One origin policy for the Flash policy file covering every flashsocket router.

    None (every domain) as soon as one router has the default same-host
    policy, ``"*"`` or a callable: the policy request names no host, so
    neither can be written down, and the flashsocket handshake applies them to
    the page's Origin. Otherwise the union of the lists; an empty list (no
    ``allow-access-from`` line at all) when no router enables flashsocket.
    """
    merged: List[str] = []
    for router in routers:
        settings = router.settings
        if "flashsocket" not in settings["enabled_protocols"]:
            continue
        policy = settings["allowed_origins"]
        if policy is None or policy == "*" or callable(policy):
            return None
        for entry in policy:
            if entry not in merged:
                merged.append(entry)
    return merged


def wants_policy_server(settings: Mapping[str, Any]) -> bool:
    """Whether the application asked for the separate Flash policy listener.

    An application that names neither ``flash_policy_port`` nor
    ``flash_policy_file`` opens no port but its own (the 2011 TornadIO started
    the listener only for those); ``flash_policy_server`` True/False overrides.
    """
    explicit = settings.get("flash_policy_server")
    if explicit is not None:
        return bool(explicit)
    return (settings.get("flash_policy_port") is not None
            or settings.get("flash_policy_file") is not None)


def idle_timeout(application: object) -> float:
    """Seconds a keep-alive connection may wait for its next request before it is closed.

    The application setting ``idle_connection_timeout`` when there is one, else
    the longest ``xhr_polling_timeout + session_expiry`` of the app's routers
    (50 s with their defaults): how long a polling session outlives its
    client's last request, so the connection of a client that vanished goes
    with its session instead of staying open for Tornado's default hour.
    A live client is not affected: it polls again as soon as an answer
    arrives, and a browser opens a new connection when an idle one was closed.

    Raises ValueError for a setting that is not a number of seconds > 0.
    """
    settings: Mapping[str, Any] = getattr(application, "settings", {}) or {}
    value = settings.get("idle_connection_timeout")
    if value is None:
        routers = socket_routers(application)
        every = [router.settings for router in routers] or [DEFAULT_SETTINGS]
        longest: float = max(each["xhr_polling_timeout"] + each["session_expiry"]
                             for each in every)
        return longest
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
        raise ValueError("idle_connection_timeout must be a number of seconds > 0, not %r"
                         % (value,))
    return cast(float, value)  # any real number: an int, a float, a Fraction


def _exit_now(signum: int, frame: Optional[FrameType]) -> NoReturn:
    """A second stop signal: leave now, whatever the shutdown is still waiting for."""
    log.warning("signal %d again: exiting without waiting for the shutdown", signum)
    raise SystemExit(128 + signum)


def _log_failure(task: "asyncio.Future[None]") -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("shutdown failed", exc_info=task.exception())


def _url_host(address: str) -> str:
    host = address or "0.0.0.0"
    return "[%s]" % host if ":" in host else host


class SocketServer(HTTPServer):
    """HTTP server for a TornadIO application.

    ``SocketServer(application)`` listens, starts the Flash policy server if
    the settings ask for one (see the module docstring) and, with ``auto_start=True`` (the default, as in the 2011 TornadIO), runs
    ``IOLoop.current()`` until it is stopped. ``auto_start=False`` returns once
    listening, for embedding in a running loop and for tests. ``io_loop`` is
    accepted for old code and ignored: Tornado 6 has one current IOLoop.
    Other keyword arguments go to ``HTTPServer``; an ``idle_connection_timeout``
    given there wins over the one :func:`idle_timeout` derives.
    """

    # HTTPServer is a tornado Configurable: __new__ calls initialize() with the
    # constructor's arguments, and the inherited __init__ ignores them. The
    # signature is the 2011 one (io_loop third), not HTTPServer's: hence the ignore.
    def initialize(self, application: RequestCallback,  # type: ignore[override]
                   no_keep_alive: bool = False, io_loop: Any = None, xheaders: bool = False,
                   ssl_options: Any = None, auto_start: bool = True,
                   **more_httpserver_kwargs: Any) -> None:
        more_httpserver_kwargs.setdefault("idle_connection_timeout", idle_timeout(application))
        super().initialize(application, no_keep_alive=no_keep_alive, xheaders=xheaders,
                           ssl_options=ssl_options, **more_httpserver_kwargs)
        settings: Mapping[str, Any] = getattr(application, "settings", {}) or {}
        self.application = application
        self.address: str = settings.get("socket_io_address", "")
        self.policy_server: Optional[flashserver.FlashPolicyServer] = None
        self._peeks: Set[_Peek] = set()
        self._tasks: Set["asyncio.Future[bool]"] = set()
        self._owns_loop = False
        self._shutdown_task: Optional["asyncio.Future[None]"] = None
        self._inline_policy = bool(settings.get("flash_policy_inline", True))

        # Tornado's backlog of 128 drops the SYNs of a burst of reconnecting
        # clients (after a restart), who then retry 1, 3, 7... seconds later.
        sockets = netutil.bind_sockets(settings.get("socket_io_port", 8001),
                                       self.address or None, backlog=socket.SOMAXCONN)
        self.add_sockets(sockets)
        self.port: int = sockets[0].getsockname()[1]  # the real one, also for port 0
        try:
            policy_file = settings.get("flash_policy_file")
            policy_port = settings.get("flash_policy_port")
            routers = socket_routers(application)
            for router in routers:
                if router.shutting_down:  # an earlier server's shutdown did not finish
                    router.restart()
                if isinstance(application, tornado.web.Application):
                    router.learn_application(application)
            if isinstance(application, tornado.web.Application):
                door = lean.FrontDoor(application, routers)
                if door.usable:  # long polls and POSTs skip Tornado's routing
                    self.request_callback = door
            allowed = merged_origins(routers)
            self.policy = flashserver.policy_bytes(policy_file, allowed, [self.port])
            if wants_policy_server(settings):
                self.policy_server = flashserver.FlashPolicyServer(
                    port=flashserver.POLICY_PORT if policy_port is None else policy_port,
                    policy_file=policy_file, address=self.address, allowed_origins=allowed,
                    socket_ports=[self.port])
        except Exception:
            # E.g. an unreadable flash_policy_file: do not keep the port bound.
            super().stop()
            raise

        scheme = "https" if ssl_options is not None else "http"
        log.info("TornadIO listening on %s://%s:%d/", scheme, _url_host(self.address), self.port)
        if auto_start:
            self.start_loop()

    # -- loop control --------------------------------------------------------------
    def start_loop(self) -> None:
        """Run ``IOLoop.current()`` until :meth:`stop`; a no-op inside a running loop.

        While it runs, SIGINT and SIGTERM shut the server down gracefully
        (:meth:`shutdown`: every ``on_close`` runs). A second SIGINT or SIGTERM
        during that shutdown exits at once, without waiting for the rest:
        :class:`SystemExit` with status 128 + the signal number (130 for
        Ctrl-C), as a shell reports a process killed by that signal. The
        previous signal handlers are put back when the loop stops.

        .. versionchanged:: 1.0
           Signals no longer go through ``IOLoop.add_callback_from_signal``
           (deprecated since Tornado 6.4); a second signal forces the exit.
        """
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            log.warning("SocketServer(auto_start=True) inside a running event loop: "
                        "not starting it again")
            return
        self._owns_loop = True
        restore = self._install_signal_handlers()
        try:
            IOLoop.current().start()
        finally:
            self._owns_loop = False
            restore()

    def _install_signal_handlers(self) -> Callable[[], None]:
        """SIGINT/SIGTERM start :meth:`shutdown`; returns what puts the old handlers back.

        The first signal is taken by the asyncio loop (``add_signal_handler``),
        so the shutdown starts as an ordinary loop callback; where that is not
        available, a plain handler hands it to the loop with
        ``call_soon_threadsafe``. After it, a plain handler waits for a second
        signal: it runs between two bytecodes of the main thread, so it works
        even while an ``on_close`` blocks the loop (``time.sleep``, say).
        """
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        loop = cast(BaseAsyncIOLoop, IOLoop.current()).asyncio_loop  # Tornado 6: always one
        previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        through_loop: List[signal.Signals] = []

        def first(signum: int) -> None:
            log.info("signal %d: shutting down (send it again to exit at once)", signum)
            for number in through_loop:
                loop.remove_signal_handler(number)
            through_loop.clear()
            for number in STOP_SIGNALS:
                signal.signal(number, _exit_now)
            self._start_shutdown_task()

        try:
            for signum in STOP_SIGNALS:
                loop.add_signal_handler(signum, first, signum)
                through_loop.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not a Unix selector loop (e.g. Windows): a plain handler instead.
            for signum in through_loop:
                loop.remove_signal_handler(signum)
            through_loop.clear()

            def hand_to_loop(signum: int, frame: Optional[FrameType]) -> None:
                loop.call_soon_threadsafe(first, signum)

            for signum in STOP_SIGNALS:
                signal.signal(signum, hand_to_loop)

        def restore() -> None:
            for signum in through_loop:
                loop.remove_signal_handler(signum)
            through_loop.clear()
            for signum, handler in previous.items():
                signal.signal(signum, handler)

        return restore

    def _start_shutdown_task(self) -> None:
        """Run :meth:`shutdown` as a task held by this server until it ends."""
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.ensure_future(self.shutdown())
            self._shutdown_task.add_done_callback(_log_failure)

    def stop(self) -> None:
        """Stop listening (HTTP and policy); stop the loop if this server started it.

        Connections already open go on until they end; :meth:`shutdown` also
        closes the sessions. Call from the loop's thread (from another one:
        ``loop.add_callback(server.stop)``).
        """
        super().stop()
        if self.policy_server is not None:
            self.policy_server.stop()
        for peek in list(self._peeks):
            peek.cancel()
        if self._owns_loop:
            IOLoop.current().stop()

    async def shutdown(self, timeout: float = SHUTDOWN_TIMEOUT) -> None:
        """Stop listening, close every session (``on_close`` runs), then wait at
        most ``timeout`` seconds for the remaining HTTP connections to close."""
        owns_loop, self._owns_loop = self._owns_loop, False
        try:
            self.stop()
            routers = socket_routers(self.application)
            for router in routers:
                await router.stop_sessions(timeout=timeout)
            try:
                await gen.with_timeout(timedelta(seconds=timeout), self.close_all_connections())
            except tornado.util.TimeoutError:
                log.warning("shutdown: connections still open after %.1f s", timeout)
            for router in routers:
                router.restart()  # a new SocketServer for this application starts afresh
        finally:
            if owns_loop:  # even when a step failed: the process must not hang
                IOLoop.current().stop()

    # -- inline policy -------------------------------------------------------------
    def handle_stream(self, stream: IOStream, address: Tuple[Any, ...]) -> None:
        if self.ssl_options is not None or not self._inline_policy:
            # Under TLS the first bytes are a ClientHello, never a policy request.
            return super().handle_stream(stream, address)
        _Peek(self, stream, address).start()
        return None

    def _pass_on(self, stream: IOStream, address: Tuple[Any, ...]) -> None:
        super().handle_stream(stream, address)


class _Peek:
    """Looks at a new connection's first byte without taking it from the socket.

    ``MSG_PEEK`` leaves the byte in the kernel buffer, so an HTTP request goes
    to ``HTTPServer.handle_stream`` complete; no IOStream internals are
    touched. The IOStream has not registered its socket with the IOLoop yet,
    so this object may do so until it hands the stream on.
    """

    def __init__(self, server: SocketServer, stream: IOStream, address: Tuple[Any, ...]) -> None:
        self.server = server
        self.stream = stream
        self.address = address
        self.loop = IOLoop.current()
        self.sock = stream.socket
        self.timer: Optional[object] = None
        self.watching = False

    def start(self) -> None:
        self.server._peeks.add(self)
        try:
            self.loop.add_handler(self.sock, self._readable, IOLoop.READ)
        except (ValueError, OSError):
            # Cannot watch it (socket already gone): let HTTP deal with it.
            self._finish()
            self.server._pass_on(self.stream, self.address)
            return
        self.watching = True
        self.timer = self.loop.call_later(PEEK_TIMEOUT, self._timed_out)

    def _finish(self) -> None:
        self.server._peeks.discard(self)
        if self.watching:
            self.watching = False
            self.loop.remove_handler(self.sock)
        if self.timer is not None:
            self.loop.remove_timeout(self.timer)
            self.timer = None

    def _readable(self, fd: socket.socket, events: int) -> None:
        try:
            first = self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return  # spurious wake-up; keep watching
        except OSError:
            first = b""
        self._finish()
        if first == b"<":
            answering = asyncio.ensure_future(
                flashserver.answer_policy_request(self.stream, self.server.policy))
            self.server._tasks.add(answering)  # held until it ends
            answering.add_done_callback(self.server._tasks.discard)
            answering.add_done_callback(self._policy_done)
        elif first:
            self.server._pass_on(self.stream, self.address)
        else:
            self.stream.close()  # closed (or reset) before saying anything

    def _policy_done(self, future: "asyncio.Future[bool]") -> None:
        if not future.cancelled() and future.exception() is None and future.result():
            log.debug("answered the Flash policy request of %s inline", self.address[0])

    def _timed_out(self) -> None:
        self.timer = None
        self._finish()
        self.server._pass_on(self.stream, self.address)

    def cancel(self) -> None:
        """The server stops: drop a connection that has not said anything yet."""
        self._finish()
        self.stream.close()
