"""A Tornado server on its own IOLoop thread, driven from synchronous test code.

Playwright's sync API and plain ``assert``-style tests run in the main thread;
the server under test runs in a daemon thread with its own asyncio loop. All
access to server-side objects goes through :meth:`ServerThread.call`, which
runs a function on the loop thread and waits (boundedly) for its result.
"""
import asyncio
import concurrent.futures
import inspect
import logging
import threading

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from tornado.testing import bind_unused_port

log = logging.getLogger("tests.support.server")

#: Upper bound, in seconds, for any wait on the loop thread.
DEFAULT_TIMEOUT = 10.0


class ServerThreadError(RuntimeError):
    pass


class ServerThread:
    """Runs ``make_app()``'s application on 127.0.0.1, on a background IOLoop.

    Usage::

        server = ServerThread()
        port = server.start(lambda: make_app(recorder))
        ...
        value = server.call(some_function, arg)   # runs on the loop thread
        server.stop()
    """

    def __init__(self, name="tornado-test-server"):
        self.name = name
        self.port = None
        self.app = None
        self.loop = None
        self._server = None
        self._thread = None
        self._stopped = threading.Event()

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def start(self, make_app, timeout=DEFAULT_TIMEOUT, **server_kwargs):
        """Start the loop thread, build the app there, listen; returns the port."""
        if self._thread is not None:
            raise ServerThreadError("ServerThread.start() called twice")
        ready = threading.Event()
        failure = []

        def run():
            asyncio.set_event_loop(asyncio.new_event_loop())
            loop = IOLoop.current()
            self.loop = loop
            try:
                # Built in the loop thread: anything the app creates that grabs
                # IOLoop.current() (session containers, periodic callbacks)
                # attaches to this loop, not the test thread's.
                self.app = make_app()
                sock, port = bind_unused_port(address="127.0.0.1")
                self._server = HTTPServer(self.app, **server_kwargs)
                self._server.add_sockets([sock])
                self.port = port
            except BaseException as exc:  # reported to the starting thread
                failure.append(exc)
                ready.set()
                loop.close(all_fds=True)
                return
            loop.add_callback(ready.set)
            try:
                loop.start()
            finally:
                try:
                    loop.close(all_fds=True)
                except Exception:  # pragma: no cover - best effort
                    log.exception("closing the test IOLoop failed")
                self._stopped.set()

        self._thread = threading.Thread(target=run, name=self.name, daemon=True)
        self._thread.start()
        if not ready.wait(timeout):
            raise ServerThreadError("server thread did not start within %.1f s" % timeout)
        if failure:
            self._thread.join(timeout)
            raise failure[0]
        return self.port

    def call(self, fn, *args, timeout=DEFAULT_TIMEOUT, **kwargs):
        """Run ``fn(*args, **kwargs)`` on the loop thread and return its result.

        A coroutine function (or a function returning an awaitable) is awaited
        on the loop. Exceptions propagate to the caller; waiting is bounded.
        """
        if not self.running:
            raise ServerThreadError("server thread is not running")
        result = concurrent.futures.Future()

        async def runner():
            try:
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
            except BaseException as exc:
                result.set_exception(exc)
            else:
                result.set_result(value)

        self.loop.add_callback(runner)
        try:
            return result.result(timeout)
        except concurrent.futures.TimeoutError:
            raise ServerThreadError("call(%r) did not finish within %.1f s" % (fn, timeout)) from None

    def stop(self, timeout=DEFAULT_TIMEOUT):
        """Stop listening, drop open connections, stop the loop, join the thread."""
        if self._thread is None:
            return
        if self._thread.is_alive():
            async def shutdown():
                if self._server is not None:
                    self._server.stop()
                    try:
                        await asyncio.wait_for(self._server.close_all_connections(),
                                               timeout / 2)
                    except asyncio.TimeoutError:
                        log.warning("some HTTP connections did not close in time")
            try:
                self.call(shutdown, timeout=timeout)
            except Exception:
                log.exception("server shutdown failed; stopping the loop anyway")
            try:
                self.loop.add_callback(self.loop.stop)
            except RuntimeError:  # loop already closed
                pass
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise ServerThreadError("server thread did not stop within %.1f s" % timeout)
        self._thread = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop()
