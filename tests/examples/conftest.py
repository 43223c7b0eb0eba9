"""Fixtures for the example tests: the example run as a real subprocess, and pages.

Fixtures
    ``example_server``  factory: ``example_server("chatroom", "--port", "0")``
                        runs ``python examples/chatroom/chatroom.py ...``, waits
                        (bounded) for the URL it prints, and stops it afterwards
                        (SIGTERM, then SIGKILL if it hangs)
    ``free_port``       a port number nothing listened on a moment ago
    ``save_screenshot`` ``save_screenshot(page, name)`` writes
                        ``test-artifacts/examples/<name>.png``
    ``example_pages``   factory: ``example_pages(url)`` opens ``url`` in a fresh
                        browser context (profile) and returns its
                        ``support.browser.PageHandle``; every page's console errors
                        and page errors fail the test, unless it is marked
                        ``@pytest.mark.allow_console_errors(*regexes)``
"""
import os
import re
import signal
import socket

import pytest

from support.browser import WAIT_MS, ConsoleLog, PageHandle
from support.process import ScriptProcess

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
EXAMPLES_DIR = os.path.join(REPO_ROOT, "examples")
ARTIFACTS_DIR = os.path.join(REPO_ROOT, "test-artifacts", "examples")

#: Bound on an example's start-up, until it prints its URL (seconds).
START_TIMEOUT = 20.0
#: Bound on an example's exit after SIGINT/SIGTERM (seconds).
STOP_TIMEOUT = 10.0

_URL_LINE = re.compile(r"running: open (http://\S+)")


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ExampleProcess(ScriptProcess):
    """``python examples/<name>/<name>.py <args>``, with its output collected."""

    def __init__(self, name, *args):
        super().__init__(os.path.join(EXAMPLES_DIR, name, name + ".py"), *args, name=name)
        self.url = None

    def wait_for_url(self, timeout=START_TIMEOUT):
        """The URL the example printed; fails if it exits or stays silent."""
        self.url = self.wait_for(_URL_LINE, timeout).group(1)
        return self.url

    def wait_exit(self, timeout=STOP_TIMEOUT):
        return super().wait_exit(timeout)

    def stop(self, signum=signal.SIGTERM, timeout=STOP_TIMEOUT):
        return super().stop(signum, timeout)


@pytest.fixture
def free_port():
    """A port on 127.0.0.1 that nothing listened on a moment ago."""
    return _free_port()


@pytest.fixture
def example_server():
    started = []

    def start(name, *args, wait=True):
        process = ExampleProcess(name, *args)
        started.append(process)
        process.start()
        if wait:
            process.wait_for_url()
        return process

    try:
        yield start
    finally:
        hung = []
        for process in started:
            try:
                process.stop()
            except AssertionError as exc:  # killed by now; still worth a failure
                hung.append(str(exc))
        assert not hung, "\n".join(hung)


class Pages:
    """Pages opened by one test, each in its own browser context.

    Playwright lives in the browser thread (``support.browser.BrowserThread``):
    a page is a :class:`support.browser.PageHandle`, and test steps run there
    with ``handle.run(step, *args)``, which calls ``step(raw_page, *args)``.
    """

    def __init__(self, browser):
        self.browser = browser
        self.opened = []   # PageHandle

    def __call__(self, url):
        def make():
            context = self.browser.browser.new_context(viewport={"width": 1200, "height": 760})
            context.set_default_timeout(WAIT_MS)
            page = context.new_page()
            console = ConsoleLog(page)
            return context, page, console

        context, page, console = self.browser.run(make)
        handle = PageHandle(self.browser, context, page, console)
        self.opened.append(handle)
        handle.run(lambda raw: raw.goto(url, wait_until="load") and None)
        return handle

    def errors(self, allowed=None):
        found = []
        for handle in self.opened:
            found.extend(handle.console_log.unexpected(allowed))
        return found

    def assert_no_console_errors(self, allowed=None):
        errors = self.errors(allowed)
        assert not errors, "browser console errors:\n" + "\n".join(errors)

    def save_failure_artifacts(self, nodeid):
        base = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid)[:140]
        os.makedirs(ARTIFACTS_DIR, exist_ok=True)
        for index, handle in enumerate(self.opened):
            name = os.path.join(ARTIFACTS_DIR, "FAILED-%s-%d" % (base, index))
            try:
                with open(name + ".log", "w", encoding="utf-8") as out:
                    out.write("\n".join(handle.console_log.lines) + "\n")
                handle.run(_screenshot, name + ".png")
            except Exception:  # a debugging aid, never a failure of its own
                pass

    def close(self):
        for handle in self.opened:
            try:
                handle.close_context()
            except Exception:  # the browser may be gone already
                pass


def _screenshot(page, path, timeout=5000):
    if not page.is_closed():
        page.screenshot(path=path, full_page=True, timeout=timeout)


@pytest.fixture
def example_pages(browser, example_server, request):
    """Depends on ``example_server`` so that pages close before servers stop."""
    pages = Pages(browser)
    try:
        yield pages
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            pages.save_failure_artifacts(request.node.nodeid)
        pages.close()
    marker = request.node.get_closest_marker("allow_console_errors")
    if marker is not None and not marker.args:
        return
    pages.assert_no_console_errors(list(marker.args) if marker else None)


@pytest.fixture
def save_screenshot():
    """``save_screenshot(handle, name)``: ``test-artifacts/examples/<name>.png``.

    Taken on every run, failed or not: whether the pages look tidy is checked by eye.
    """
    def save(handle, name):
        os.makedirs(ARTIFACTS_DIR, exist_ok=True)
        path = os.path.join(ARTIFACTS_DIR, name + ".png")
        handle.run(_screenshot, path)
        return path

    return save
