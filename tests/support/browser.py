"""Driving the genuine socket.io 0.6 client in headless Chromium (Playwright, sync API).

One browser per test session; one fresh context (profile: cookies, cache,
storage) per test, so the client's ``socketio=<transport>`` cookie can never
carry over from one test to the next.

Playwright's sync API runs an asyncio loop in the thread that starts it, and
while it is active ``asyncio.run()`` fails in that thread ("cannot be called
from a running event loop"). Other tests use ``asyncio.run`` in the main
thread, so Playwright lives in its own thread (:class:`BrowserThread`) and the
test thread reaches it through :meth:`BrowserThread.run` and :class:`PageHandle`.
"""
import concurrent.futures
import json
import logging
import os
import queue
import re
import threading

log = logging.getLogger("tests.support.browser")

#: Bound for every browser-side wait, in milliseconds.
WAIT_MS = 15000
#: Bound for one call into the browser thread, in seconds (> any WAIT_MS wait).
CALL_TIMEOUT_S = 45.0

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path():
    """$TORNADIO_CHROMIUM, else the Debian package's /usr/bin/chromium."""
    return os.environ.get("TORNADIO_CHROMIUM", "/usr/bin/chromium")


def launch_chromium(playwright):
    path = chromium_path()
    if not os.path.exists(path):
        raise RuntimeError("Chromium not found at %s: run scripts/setup.sh --browser "
                           "or set TORNADIO_CHROMIUM" % path)
    return playwright.chromium.launch(executable_path=path, headless=True,
                                      args=CHROMIUM_ARGS, timeout=30000)


class BrowserThreadError(RuntimeError):
    pass


class BrowserThread:
    """Playwright + one Chromium, owned by a daemon thread; calls are marshalled.

    Every Playwright object (browser, context, page) must only be touched in
    that thread: pass a function to :meth:`run`, or use :class:`PageHandle`.
    """

    def __init__(self, name="playwright"):
        self.name = name
        self.browser = None
        self._queue = queue.Queue()
        self._thread = None

    def start(self, timeout=60.0):
        ready = concurrent.futures.Future()

        def main():
            try:
                from playwright.sync_api import sync_playwright
                with sync_playwright() as playwright:
                    self.browser = launch_chromium(playwright)
                    ready.set_result(True)
                    try:
                        self._serve()
                    finally:
                        try:
                            self.browser.close()
                        except Exception:  # already gone: nothing to clean
                            pass
            except BaseException as exc:
                if not ready.done():
                    ready.set_exception(exc)
                else:
                    log.exception("browser thread crashed")

        self._thread = threading.Thread(target=main, name=self.name, daemon=True)
        self._thread.start()
        try:
            ready.result(timeout)
        except concurrent.futures.TimeoutError:
            raise BrowserThreadError("Chromium did not start within %.0f s" % timeout) from None

    def _serve(self):
        while True:
            item = self._queue.get()
            if item is None:
                return
            fn, args, kwargs, future = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

    def run(self, fn, *args, timeout=CALL_TIMEOUT_S, **kwargs):
        """``fn(*args, **kwargs)`` in the browser thread; its result or exception."""
        if threading.current_thread() is self._thread:
            return fn(*args, **kwargs)
        if self._thread is None or not self._thread.is_alive():
            raise BrowserThreadError("the browser thread is not running")
        future = concurrent.futures.Future()
        self._queue.put((fn, args, kwargs, future))
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise BrowserThreadError("browser call %r did not return within %.0f s"
                                     % (fn, timeout)) from None

    def new_page(self):
        """A :class:`PageHandle` in a brand-new context (fresh profile)."""
        def make():
            context = self.browser.new_context()
            context.set_default_timeout(WAIT_MS)
            page = context.new_page()
            return context, page, ConsoleLog(page)
        context, page, console = self.run(make)
        return PageHandle(self, context, page, console)

    def stop(self, timeout=30.0):
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise BrowserThreadError("browser thread did not stop within %.0f s" % timeout)
        self._thread = None


class PageHandle:
    """A Playwright page seen from the test thread.

    ``handle.evaluate(...)``, ``handle.goto(...)``, ``handle.close()`` ... run
    the page method of that name in the browser thread. Return values should
    be plain data (``evaluate`` results); Playwright objects that come back
    must not be used outside :meth:`run`.
    """

    def __init__(self, browser_thread, context, page, console):
        self._thread = browser_thread
        self.context = context
        self.raw = page
        self.console_log = console

    def run(self, fn, *args, **kwargs):
        """``fn(page, *args, **kwargs)`` in the browser thread."""
        return self._thread.run(fn, self.raw, *args, **kwargs)

    def __getattr__(self, name):
        attr = getattr(self.raw, name)  # safe: attribute lookup only, no I/O
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            return self._thread.run(attr, *args, **kwargs)
        call.__name__ = name
        return call

    def close_context(self):
        self._thread.run(self.context.close)


class ConsoleLog:
    """Collects a page's console messages and uncaught errors."""

    def __init__(self, page):
        self.lines = []    # every console message, for failure reports
        self.errors = []   # console errors and page errors
        page.on("console", self._on_console)
        page.on("pageerror", self._on_pageerror)

    def _on_console(self, msg):
        line = "console.%s: %s" % (msg.type, msg.text)
        self.lines.append(line)
        if msg.type == "error":
            self.errors.append(line)

    def _on_pageerror(self, error):
        line = "pageerror: %s" % (error,)
        self.lines.append(line)
        self.errors.append(line)

    def unexpected(self, allowed_patterns=None):
        """Errors not matched by ``allowed_patterns`` (None: all are unexpected)."""
        if allowed_patterns is None:
            return list(self.errors)
        regexes = [re.compile(p) for p in allowed_patterns]
        return [e for e in self.errors if not any(r.search(e) for r in regexes)]


class BrowserClient:
    """The test page in one browser tab (a :class:`PageHandle`), talking to one test server.

    ``open(transport)`` loads the page (with the htmlfile shim when needed),
    ``connect(transport)`` creates and connects ``io.Socket``; the rest are
    thin, bounded wrappers over ``window.T`` (tests/support/harness.js).
    """

    def __init__(self, page, port, console=None):
        self.page = page
        self.port = port
        self.console = console
        self.transport = None

    @property
    def base_url(self):
        return "http://127.0.0.1:%d" % self.port

    def open(self, transport=None):
        query = "?shim=htmlfile" if transport == "htmlfile" else ""
        url = self.base_url + "/" + query
        self.page.run(lambda page: page.goto(url, wait_until="load", timeout=WAIT_MS) and None)
        self.wait_until("() => !!(window.T && window.io && window.io.Socket)",
                        what="the test page to load")

    def connect(self, transport, wait=True, **options):
        """Load the page, connect with only ``transport``; wait for ``connect``."""
        self.open(transport)
        self.transport = transport
        options["transport"] = transport
        chosen = self.page.evaluate("opts => T.connect(opts)", options)
        assert chosen == transport, "client picked %r instead of %r" % (chosen, transport)
        if wait:
            self.wait_event("connect")
        return self

    # -- actions ------------------------------------------------------------
    def send(self, message):
        self.page.evaluate("m => T.send(m)", message)

    def send_all(self, messages):
        return self.page.evaluate("ms => T.sendAll(ms)", messages)

    def disconnect(self):
        self.page.evaluate("() => T.disconnect()")

    def close_page(self):
        self.page.close()

    # -- state ----------------------------------------------------------------
    def evaluate(self, expression, arg=None):
        return self.page.evaluate(expression, arg)

    def messages(self):
        return self.page.evaluate("() => T.messages")

    def count(self, event_type):
        return self.page.evaluate("t => T.count(t)", event_type)

    def state(self):
        return self.page.evaluate("() => T.state()")

    # -- bounded waits ----------------------------------------------------------
    def wait_until(self, predicate_js, arg=None, timeout=WAIT_MS, what=None):
        """Wait for a JS predicate (a function of ``arg``) to become truthy."""
        try:
            self.page.run(lambda page: page.wait_for_function(
                predicate_js, arg=arg, timeout=timeout, polling=50) and None)
        except Exception as exc:
            raise AssertionError("timed out after %d ms waiting for %s; client state: %s"
                                 % (timeout, what or predicate_js, self._state_or_error())) from exc

    def wait_event(self, event_type, count=1, timeout=WAIT_MS):
        self.wait_until("a => T.count(a[0]) >= a[1]", [event_type, count], timeout,
                        what="%d x %r event" % (count, event_type))

    def wait_messages(self, count, timeout=WAIT_MS):
        self.wait_until("n => T.messages.length >= n", count, timeout,
                        what="%d messages" % count)
        return self.messages()

    def _state_or_error(self):
        try:
            return json.dumps(self.state())
        except Exception as exc:  # page gone, T missing...
            return "<unavailable: %s>" % (exc,)
