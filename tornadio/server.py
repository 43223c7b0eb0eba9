"""``SocketServer``: an HTTPServer that also speaks the Flash socket policy.

It listens where ``application.settings`` say, answers
``<policy-file-request/>`` inline on the socket.io port itself (Tornado's HTTP
parser would wait forever for a header terminator that a Flash Player never
sends, PROTOCOL.md §4.2) and, when the application asks for one, runs the
separate Flash policy server.

Application settings read (all optional):

``socket_io_port`` (8001), ``socket_io_address`` (``''``: every interface; the
policy server binds it too), ``flash_policy_port`` (None; 843 when only the
file is set), ``flash_policy_file`` (None: generated from the routers'
``allowed_origins`` and the socket.io port), ``flash_policy_server`` (None:
run the separate policy listener when ``flash_policy_port`` or
``flash_policy_file`` is set, as the 2011 TornadIO did; True or False decide
outright) and ``flash_policy_inline`` (True; False turns off the inline answer
on the socket.io port).
"""
import asyncio
import logging
import signal
import socket
import threading
from datetime import timedelta

from tornado import gen, netutil
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from tornadio import flashserver
from tornadio.router import Router

log = logging.getLogger("tornadio.server")

#: How long a new connection on the socket.io port may stay silent before it
#: is handed to the HTTP machinery untouched (whose own timeouts then apply).
PEEK_TIMEOUT = 10.0
#: Default bound of :meth:`SocketServer.shutdown`.
SHUTDOWN_TIMEOUT = 5.0


def socket_routers(application):
    """Every TornadIO :class:`Router` whose ``route()`` is in the application's rules."""
    found = []
    seen = set()

    def walk(router):
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


def merged_origins(routers):
    """One origin policy for the Flash policy file covering every flashsocket router.

    None (unrestricted) as soon as one router allows any origin or uses a
    callable, otherwise the union of the lists; an empty list (no
    ``allow-access-from`` line at all) when no router enables flashsocket.
    """
    merged = []
    for router in routers:
        settings = router.settings
        if "flashsocket" not in settings["enabled_protocols"]:
            continue
        policy = settings["allowed_origins"]
        if policy is None or callable(policy):
            return None
        for entry in policy:
            if entry not in merged:
                merged.append(entry)
    return merged


def wants_policy_server(settings):
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


def _url_host(address):
    host = address or "0.0.0.0"
    return "[%s]" % host if ":" in host else host


class SocketServer(HTTPServer):
    """HTTP server for a TornadIO application.

    ``SocketServer(application)`` listens, starts the Flash policy server if
    the settings ask for one (see the module docstring) and, with ``auto_start=True`` (the default, as in the 2011 TornadIO), runs
    ``IOLoop.current()`` until it is stopped. ``auto_start=False`` returns once
    listening, for embedding in a running loop and for tests. ``io_loop`` is
    accepted for old code and ignored: Tornado 6 has one current IOLoop.
    Other keyword arguments go to ``HTTPServer``.
    """

    # HTTPServer is a tornado Configurable: __new__ calls initialize() with the
    # constructor's arguments, and the inherited __init__ ignores them.
    def initialize(self, application, no_keep_alive=False, io_loop=None, xheaders=False,
                   ssl_options=None, auto_start=True, **more_httpserver_kwargs):
        super().initialize(application, no_keep_alive=no_keep_alive, xheaders=xheaders,
                           ssl_options=ssl_options, **more_httpserver_kwargs)
        settings = getattr(application, "settings", {}) or {}
        self.application = application
        self.address = settings.get("socket_io_address", "")
        self.port = None
        self.policy_server = None
        self._peeks = set()
        self._owns_loop = False
        self._inline_policy = bool(settings.get("flash_policy_inline", True))

        sockets = netutil.bind_sockets(settings.get("socket_io_port", 8001),
                                       self.address or None)
        self.add_sockets(sockets)
        self.port = sockets[0].getsockname()[1]  # the real one, also for port 0
        try:
            policy_file = settings.get("flash_policy_file")
            policy_port = settings.get("flash_policy_port")
            routers = socket_routers(application)
            for router in routers:
                if router.shutting_down:  # an earlier server's shutdown did not finish
                    router.restart()
                router.learn_application(application)
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
    def start_loop(self):
        """Run ``IOLoop.current()`` until :meth:`stop`; a no-op inside a running loop."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            log.warning("SocketServer(auto_start=True) inside a running event loop: "
                        "not starting it again")
            return
        self._owns_loop = True
        previous = self._install_signal_handlers()
        try:
            IOLoop.current().start()
        finally:
            self._owns_loop = False
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _install_signal_handlers(self):
        """SIGINT/SIGTERM run :meth:`shutdown`, so every ``on_close`` runs before exit."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        loop = IOLoop.current()

        def on_signal(signum, frame):
            log.info("signal %d: shutting down", signum)
            loop.add_callback_from_signal(lambda: asyncio.ensure_future(self.shutdown()))

        previous = {}
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, on_signal)
        return previous

    def stop(self):
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

    async def shutdown(self, timeout=SHUTDOWN_TIMEOUT):
        """Stop listening, close every session (``on_close`` runs), then wait at
        most ``timeout`` seconds for the remaining HTTP connections to close."""
        owns_loop, self._owns_loop = self._owns_loop, False
        self.stop()
        routers = socket_routers(self.application)
        for router in routers:
            await router.stop_sessions(timeout=timeout)
        try:
            await gen.with_timeout(timedelta(seconds=timeout), self.close_all_connections())
        except gen.TimeoutError:
            log.warning("shutdown: connections still open after %.1f s", timeout)
        for router in routers:
            router.restart()  # a new SocketServer for this application starts afresh
        if owns_loop:
            IOLoop.current().stop()

    # -- inline policy -------------------------------------------------------------
    def handle_stream(self, stream, address):
        if self.ssl_options is not None or not self._inline_policy:
            # Under TLS the first bytes are a ClientHello, never a policy request.
            return super().handle_stream(stream, address)
        _Peek(self, stream, address).start()
        return None

    def _pass_on(self, stream, address):
        super().handle_stream(stream, address)


class _Peek:
    """Looks at a new connection's first byte without taking it from the socket.

    ``MSG_PEEK`` leaves the byte in the kernel buffer, so an HTTP request goes
    to ``HTTPServer.handle_stream`` complete; no IOStream internals are
    touched. The IOStream has not registered its socket with the IOLoop yet,
    so this object may do so until it hands the stream on.
    """

    def __init__(self, server, stream, address):
        self.server = server
        self.stream = stream
        self.address = address
        self.loop = IOLoop.current()
        self.sock = stream.socket
        self.timer = None
        self.watching = False

    def start(self):
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

    def _finish(self):
        self.server._peeks.discard(self)
        if self.watching:
            self.watching = False
            self.loop.remove_handler(self.sock)
        if self.timer is not None:
            self.loop.remove_timeout(self.timer)
            self.timer = None

    def _readable(self, fd, events):
        try:
            first = self.sock.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return  # spurious wake-up; keep watching
        except OSError:
            first = b""
        self._finish()
        if first == b"<":
            self.loop.add_future(
                gen.convert_yielded(flashserver.answer_policy_request(self.stream,
                                                                      self.server.policy)),
                self._policy_done)
        elif first:
            self.server._pass_on(self.stream, self.address)
        else:
            self.stream.close()  # closed (or reset) before saying anything

    def _policy_done(self, future):
        if future.exception() is None and future.result():
            log.debug("answered the Flash policy request of %s inline", self.address[0])

    def _timed_out(self):
        self.timer = None
        self._finish()
        self.server._pass_on(self.stream, self.address)

    def cancel(self):
        """The server stops: drop a connection that has not said anything yet."""
        self._finish()
        self.stream.close()
