"""Shared fixtures: the echo server thread and the Chromium browser/page.

Fixtures
    ``echo_server``  a started :class:`support.apps` echo app on 127.0.0.1
                     (``.port``, ``.recorder``, ``.thread``); settings can be
                     changed with ``@pytest.mark.server_settings(name=value)``
    ``browser``      one headless Chromium per test session, owned by its own
                     thread (:class:`support.browser.BrowserThread`)
    ``page``         a fresh context (profile) and page per test, as a
                     :class:`support.browser.PageHandle`; any console
                     error or uncaught page error fails the test unless it is
                     marked ``@pytest.mark.allow_console_errors(*regexes)``
    ``client``       a :class:`support.browser.BrowserClient` on ``page``,
                     pointed at ``echo_server``
"""
import os
import re
import sys
import types

import pytest

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)
ARTIFACTS_DIR = os.path.join(REPO_ROOT, "test-artifacts")
# `import tornadio` without installing it, and `import support` whatever the
# rootdir/import mode.
for path in (REPO_ROOT, TESTS_DIR):
    if path not in sys.path:
        sys.path.insert(0, path)

from support.server import ServerThread  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "allow_console_errors(*patterns): browser console errors matching any "
        "regex are expected (no pattern: all errors are)")
    config.addinivalue_line(
        "markers", "server_settings(**settings): router settings for the echo_server fixture")
    config.addinivalue_line(
        "markers", "foreign_page: the page's origin is not in the socket server's allow-list")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    # Keep each phase's report on the item, so fixtures can tell a failure.
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


# -- server --------------------------------------------------------------------
@pytest.fixture
def echo_server(request):
    from support.apps import Recorder, make_app

    marker = request.node.get_closest_marker("server_settings")
    settings = dict(marker.kwargs) if marker else {}
    recorder = Recorder()
    thread = ServerThread()
    port = thread.start(lambda: make_app(recorder, settings))
    server = types.SimpleNamespace(port=port, recorder=recorder, thread=thread,
                                   url="http://127.0.0.1:%d/" % port, settings=settings)
    try:
        yield server
    finally:
        thread.stop()
    # Invariants that hold for every test: each session opened once, closed at most once.
    opened = recorder.session_ids()
    assert len(opened) == len(set(opened)), "a session id was opened twice: %r" % opened
    for sid in set(opened):
        assert recorder.close_count(sid) <= 1, "on_close ran %d times for one session" % (
            recorder.close_count(sid))


# -- browser -------------------------------------------------------------------
@pytest.fixture(scope="session")
def browser():
    """One Chromium for the session, in its own thread (see support.browser)."""
    from support.browser import BrowserThread

    thread = BrowserThread()
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


@pytest.fixture
def page(browser, request):
    """A fresh context and page (a support.browser.PageHandle) for one test."""
    page = browser.new_page()
    console = page.console_log
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            _save_artifacts(request.node, page, console)
        try:
            page.close_context()
        except Exception:  # the browser may already be gone; nothing to clean
            pass
    marker = request.node.get_closest_marker("allow_console_errors")
    if marker is not None and not marker.args:
        return
    unexpected = console.unexpected(list(marker.args) if marker is not None else None)
    assert not unexpected, "browser console errors:\n" + "\n".join(unexpected)


@pytest.fixture
def client(echo_server, page):
    """The test page against the echo server (page closes before the server stops)."""
    from support.browser import BrowserClient

    return BrowserClient(page, echo_server.port, page.console_log)


def _save_artifacts(node, page, console):
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", node.nodeid)[:150]
    try:
        os.makedirs(ARTIFACTS_DIR, exist_ok=True)
        with open(os.path.join(ARTIFACTS_DIR, name + ".log"), "w", encoding="utf-8") as f:
            f.write("\n".join(console.lines) + "\n")
            try:
                f.write("T.state(): %r\n" % (page.evaluate("() => window.T && T.state()"),))
                f.write("T.events: %r\n" % (page.evaluate(
                    "() => window.T && T.events.filter(e => e.type !== 'message')"),))
            except Exception as exc:
                f.write("page state unavailable: %s\n" % exc)
        shot = os.path.join(ARTIFACTS_DIR, name + ".png")
        page.run(lambda raw: raw.screenshot(path=shot, timeout=5000) and None)
    except Exception:  # artifacts are a debugging aid, never a test failure
        pass
