"""The demo commands themselves: `python examples/<name>/<name>.py ...` as a user runs them."""
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from example_steps import expect_text

EXAMPLES = ["chatroom", "ping", "transports"]
TITLES = {"chatroom": "Chatroom", "ping": "Ping", "transports": "Transports"}
#: An example stopped by a signal must be gone well within this (seconds).
EXIT_BOUND = 5.0


def fetch(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


@pytest.mark.parametrize("name, signum", [
    ("chatroom", signal.SIGTERM),
    ("chatroom", signal.SIGINT),
    ("ping", signal.SIGTERM),
    ("transports", signal.SIGINT),
])
def test_demo_command_serves_page_and_client_then_exits(name, signum, example_server, free_port):
    process = example_server(name, "--port", free_port)
    url = "http://127.0.0.1:%d/" % free_port
    assert process.url == url
    assert "%s running: open %s" % (TITLES[name], url) in process.lines("out")

    status, content_type, body = fetch(url)
    assert status == 200 and content_type.startswith("text/html")
    assert b'<script src="/socket.io/socket.io.js"></script>' in body
    status, content_type, body = fetch(url + "socket.io/socket.io.js")
    assert status == 200 and "javascript" in content_type
    assert b"io.Socket" in body

    started = time.monotonic()
    returncode = process.stop(signum)
    assert time.monotonic() - started < EXIT_BOUND
    assert returncode == 0, process.output()
    assert "Traceback" not in process.output()


# The pages notice the server going away (that is the point) and say so.
@pytest.mark.allow_console_errors(r"ERR_CONNECTION_REFUSED", r"WebSocket connection to .* failed")
def test_demo_exits_promptly_with_a_browser_connected(example_server, example_pages):
    """Open sessions (a websocket and a held long poll) do not delay the exit."""
    process = example_server("chatroom", "--port", "0")
    example_pages(process.url)
    polling = example_pages(process.url + "?transport=xhr-polling")
    polling.run(expect_text, "#status", "Connected · xhr-polling")
    started = time.monotonic()
    assert process.stop(signal.SIGTERM) == 0, process.output()
    assert time.monotonic() - started < EXIT_BOUND
    example_pages.close()


@pytest.mark.parametrize("name", EXAMPLES)
def test_help(name):
    script = os.path.join(os.path.dirname(__file__), "..", "..", "examples", name, name + ".py")
    result = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stderr
    for option in ("--host", "--port", "--client-js", "--flash-policy-port"):
        assert option in result.stdout
    assert "127.0.0.1" in result.stdout and "8001" in result.stdout


def test_missing_client_script_is_one_clear_message(example_server, tmp_path):
    process = example_server("chatroom", "--port", "0", "--client-js",
                             str(tmp_path / "nowhere" / "socket.io.js"), wait=False)
    assert process.wait_exit() == 1
    errors = "\n".join(process.lines("err"))
    assert "npm install" in errors
    assert "Traceback" not in errors
    assert not process.lines("out")


def test_port_in_use_is_one_clear_message(example_server):
    first = example_server("ping", "--port", "0")
    port = first.url.rsplit(":", 1)[1].strip("/")
    second = example_server("ping", "--port", port, wait=False)
    assert second.wait_exit() == 1
    errors = "\n".join(second.lines("err"))
    assert "cannot listen" in errors and port in errors
    assert "Traceback" not in errors
