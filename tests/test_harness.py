"""The test harness itself: server thread, recorder, page error collection.

If these fail, conformance failures mean nothing, so they are kept small and fast.
"""
import threading
import time
import urllib.request

import pytest
import tornado.gen
import tornado.web
from tornado.ioloop import IOLoop

from support.apps import Recorder, client_js_path
from support.server import ServerThread, ServerThreadError


class _Hello(tornado.web.RequestHandler):
    def get(self):
        self.finish("hello from %s" % threading.current_thread().name)


def _hello_app():
    return tornado.web.Application([(r"/", _Hello)])


def _fetch(port, path="/"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as resp:
        return resp.read().decode()


def test_server_thread_serves_calls_and_stops():
    server = ServerThread(name="harness-test")
    port = server.start(_hello_app)
    try:
        assert port > 0
        assert _fetch(port) == "hello from harness-test"
        # call() runs on the loop thread, returns values and awaits coroutines.
        assert server.call(lambda: threading.current_thread().name) == "harness-test"
        assert server.call(lambda: IOLoop.current() is server.loop)

        async def later(x):
            await tornado.gen.sleep(0.01)
            return x * 2
        assert server.call(later, 21) == 42
        with pytest.raises(ZeroDivisionError):
            server.call(lambda: 1 / 0)
    finally:
        server.stop()
    assert not server.running
    with pytest.raises(OSError):
        _fetch(port)


def test_server_thread_start_failure_is_raised():
    def broken():
        raise RuntimeError("no app today")
    server = ServerThread()
    with pytest.raises(RuntimeError, match="no app today"):
        server.start(broken)
    server.stop()


def test_server_thread_call_is_bounded():
    server = ServerThread()
    server.start(_hello_app)
    try:
        with pytest.raises(ServerThreadError):
            server.call(tornado.gen.sleep, 5, timeout=0.2)
    finally:
        server.stop()


def test_recorder_wait_for_is_bounded():
    recorder = Recorder()
    started = time.monotonic()
    with pytest.raises(AssertionError, match="timed out"):
        recorder.wait_for(lambda: False, timeout=0.2)
    assert time.monotonic() - started < 2


def test_client_js_is_found():
    with open(client_js_path(), encoding="utf-8") as f:
        assert "io.Socket" in f.read()


def test_page_collects_console_errors(browser):
    page = browser.new_page()
    try:
        page.set_content("<script>console.error('boom'); undefinedFunction();</script>")
        page.wait_for_timeout(100)
        console = page.console_log
        assert any("boom" in e for e in console.errors)
        assert any("undefinedFunction" in e for e in console.errors)
        assert console.unexpected(["boom", "undefinedFunction"]) == []
    finally:
        page.close_context()


def test_browser_does_not_hold_an_event_loop_in_this_thread(browser):
    # Playwright's sync API must not leave a running loop in the test thread,
    # or every later asyncio.run() based test would fail.
    import asyncio

    async def nothing():
        return "ran"
    assert asyncio.run(nothing()) == "ran"


def test_htmlfile_shim_only_when_asked(client):
    client.open("websocket")
    assert client.evaluate("() => 'ActiveXObject' in window") is False
    client.open("htmlfile")
    assert client.evaluate("() => typeof new ActiveXObject('htmlfile').createElement") == "function"
    assert client.evaluate(
        "() => { try { new ActiveXObject('Microsoft.XMLHTTP'); return 'created'; }"
        " catch (e) { return 'threw'; } }") == "threw"
