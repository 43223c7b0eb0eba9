"""Fixtures for the 2011-style applications: a real SocketServer, its pages, its log.

Fixtures
    ``serve_2011``      factory: ``serve_2011(build)`` calls ``build()`` on a loop
                        thread (a :class:`support.server.ServerThread`) to get a
                        ``tornado.web.Application`` and starts
                        ``SocketServer(app, auto_start=False)`` for it, as a 2011
                        ``__main__`` would (with ``auto_start=True``); returns a
                        :class:`Served2011` and shuts it down after the test
    ``tabs``            factory: ``tabs(port)`` is a :class:`support.browser.BrowserClient`
                        on the ``page`` fixture the first time (its console is
                        checked), then on pages of fresh contexts (other users)
    ``server_errors``   ``server_errors()``: the ERROR records (and tracebacks)
                        logged so far by any thread of this process
    ``listeners``       ``listeners.own()``: the (address, port) pairs this
                        process listens on; ``listeners.all()``: those of every
                        process (both read from /proc)
"""
import logging
import types

import pytest
import tornado.web

from support.server import ServerThread
from support_2011 import listening_sockets, tcp_listeners


class Served2011:
    """A SocketServer started for a 2011-style application, on its own loop thread."""

    def __init__(self, thread, app, server, listeners_before, listeners_after):
        self.thread = thread
        self.app = app
        self.server = server
        self.port = server.port
        #: What this process listened on just before/after SocketServer() returned.
        self.listeners_before = listeners_before
        self.listeners_after = listeners_after

    def call(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` on the server's loop thread (bounded)."""
        return self.thread.call(fn, *args, **kwargs)


@pytest.fixture
def serve_2011():
    from tornadio.server import SocketServer

    started = []

    def start(build):
        thread = ServerThread(name="tornadio-2011-app")
        # The thread's own listener serves nothing of interest; the 2011 app
        # runs behind the SocketServer made on that thread's loop.
        thread.start(lambda: tornado.web.Application([]))
        started.append((thread, None))

        def make():
            app = build()
            before = listening_sockets()
            server = SocketServer(app, auto_start=False)
            return app, server, before, listening_sockets()

        app, server, before, after = thread.call(make)
        started[-1] = (thread, server)
        return Served2011(thread, app, server, before, after)

    try:
        yield start
    finally:
        for thread, server in started:
            if server is not None and thread.running:
                try:
                    thread.call(server.shutdown, 2.0)
                except Exception:  # the thread is stopped below in any case
                    logging.getLogger("tests.compat").exception("SocketServer shutdown failed")
            thread.stop()


@pytest.fixture
def tabs(page, browser):
    from support.browser import BrowserClient

    handed = []  # the fixture's page, then pages of fresh contexts

    def open_tab(port):
        tab = browser.new_page() if handed else page
        handed.append(tab)
        return BrowserClient(tab, port, tab.console_log)

    try:
        yield open_tab
    finally:
        for other in handed[1:]:
            try:
                other.close_context()
            except Exception:  # already closed by the test
                pass


@pytest.fixture
def server_errors(caplog):
    caplog.set_level(logging.INFO)

    def errors():
        return ["%s: %s" % (r.name, r.getMessage()) for r in caplog.records
                if r.levelno >= logging.ERROR or r.exc_info]
    return errors


@pytest.fixture
def listeners():
    return types.SimpleNamespace(own=listening_sockets, all=tcp_listeners)
