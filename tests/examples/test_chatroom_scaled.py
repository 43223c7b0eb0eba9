"""examples/chatroom as several processes behind nginx, with Redis: one room.

Everything is real: a redis-server on a free loopback port, two
``python examples/chatroom/chatroom.py --port 0 --redis URL`` processes, nginx
running examples/nginx/tornadio.conf with its ports rewritten
(tests/scaling/scaling_procs.py), and the chat page in Chromium. Pages opened on
the two process ports are on different processes for sure (their roster
entries in Redis name the process ids); one more page goes through nginx.
"""
import json
import os
import subprocess
import sys

import pytest
import redis
from playwright.sync_api import expect

from example_steps import expect_contains, expect_text, submit_text, texts_of

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scaling"))

from scaling_procs import (REPO_ROOT, Nginx, find_binary, free_port,  # noqa: E402
                           nginx_site_config, redis_server_fixture)

REDIS_SERVER = find_binary("redis-server")
NGINX = find_binary("nginx")
needs_redis = pytest.mark.skipif(
    REDIS_SERVER is None,
    reason="redis-server binary not found (scripts/setup.sh --services installs it)")
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx binary not found (scripts/setup.sh --services installs it)")

NGINX_MAIN_CONF = os.path.join(REPO_ROOT, "examples", "nginx", "nginx.conf")
#: --redis-ttl of the chat processes: a killed one's people leave within about this (s).
TTL = 3
LAST_SAID = "#log li:not(.notice) .text >> nth=-1"
# A page whose server was killed keeps trying to reconnect, loudly.
RECONNECT_NOISE = [r"ERR_CONNECTION_REFUSED", r"WebSocket connection to .* failed"]


def join(page, nickname):
    page.fill("#nickname", nickname)
    page.click("#join")
    expect_text(page, "#me", nickname)
    expect(page.locator("#say-form")).to_be_visible()


def port_of(process):
    return int(process.url.rstrip("/").rsplit(":", 1)[1])


def roster_pids(redis_url):
    """nickname -> pid of the process that holds the session, from the Redis roster."""
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    try:
        people = client.hgetall("chatroom:people")
    finally:
        client.close()
    entries = [json.loads(value) for value in people.values()]
    return {entry["nickname"]: int(entry["process"].split(":")[-2]) for entry in entries}


redis_server = redis_server_fixture(REDIS_SERVER)


@pytest.fixture
def chat_processes(redis_server, example_server):
    """Two chatroom processes sharing one room through ``redis_server``.

    Stopped here, after the pages closed: each that was not killed exits
    cleanly, and the processes leave nobody behind in the Redis roster.
    """
    processes = [example_server("chatroom", "--port", "0", "--redis", redis_server.url,
                                "--redis-ttl", TTL)
                 for _ in range(2)]
    yield processes
    for process in processes:
        killed = process.proc.poll() is not None
        assert killed or process.stop() == 0, process.output()
        assert "Traceback" not in process.output(), process.output()
    assert roster_pids(redis_server.url) == {}


@pytest.fixture
def nginx(tmp_path, chat_processes):
    ports = [port_of(process) for process in chat_processes]
    server = Nginx(tmp_path, NGINX, lambda port: nginx_site_config(port, ports)).start()
    try:
        yield server
    finally:
        server.stop()
        print("---- nginx error.log ----\n" + server.errors())


@needs_redis
@needs_nginx
def test_two_processes_and_nginx_are_one_room(redis_server, chat_processes, nginx,
                                              example_pages, save_screenshot):
    first, second = chat_processes
    ada = example_pages(first.url)                               # websocket, process 1
    bob = example_pages(second.url + "?transport=xhr-polling")   # polling, process 2
    ada.run(join, "ada")
    bob.run(join, "bob")
    pids = roster_pids(redis_server.url)
    assert pids == {"ada": first.proc.pid, "bob": second.proc.pid}

    # Each sees the other join, in the log and in the list.
    bob.run(expect_contains, "#log", "Also here: ada.")
    ada.run(expect_contains, "#log", "bob joined (xhr-polling).")
    for page in (ada, bob):
        page.run(expect_text, "#count", "2")
        assert sorted(page.run(texts_of, "#people .name")) == ["ada", "bob"]

    # Messages cross between the processes, both ways.
    ada.run(submit_text, "#text", "hello from process 1")
    bob.run(expect_text, LAST_SAID, "hello from process 1")
    bob.run(submit_text, "#text", "hello from process 2")
    ada.run(expect_text, LAST_SAID, "hello from process 2")
    ada.run(expect_text, "#log li:not(.notice) .who >> nth=-1", "bob")

    # Through nginx (polling, so every request must stick to one process).
    carol = example_pages("http://127.0.0.1:%d/?transport=xhr-polling" % nginx.port)
    carol.run(join, "carol")
    assert roster_pids(redis_server.url)["carol"] in (first.proc.pid, second.proc.pid)
    carol.run(expect_contains, "#log", "Also here: ada, bob.")
    carol.run(expect_text, "#count", "3")
    for page in (ada, bob):
        page.run(expect_contains, "#log", "carol joined (xhr-polling).")
        page.run(expect_text, "#count", "3")
    carol.run(submit_text, "#text", "hello through nginx")
    for page in (ada, bob):
        page.run(expect_text, LAST_SAID, "hello through nginx")
    ada.run(submit_text, "#text", "welcome, carol")
    carol.run(expect_text, LAST_SAID, "welcome, carol")
    save_screenshot(carol, "chatroom-scaled-nginx")

    # ada leaves (her WebSocket closes with the page): the other process hears it.
    ada.close()
    for page in (bob, carol):
        page.run(expect_contains, "#log", "ada left.")
        page.run(expect_text, "#count", "2")
        assert sorted(page.run(texts_of, "#people .name")) == ["bob", "carol"]
    assert set(roster_pids(redis_server.url)) == {"bob", "carol"}
    save_screenshot(bob, "chatroom-scaled")
    example_pages.assert_no_console_errors()

    with open(os.path.join(nginx.dir, "access.log")) as log:
        proxied = log.read()
    assert "/socket.io/xhr-polling/" in proxied and '" 401 ' not in proxied


@needs_redis
@needs_nginx
def test_stopping_a_process_moves_its_people_through_nginx(redis_server, chat_processes, nginx,
                                                          example_pages):
    """Ctrl-C on one process: the room hears its people leave at once, and
    their pages reconnect through nginx to the other process and rejoin."""
    carol = example_pages("http://127.0.0.1:%d/" % nginx.port)
    carol.run(join, "carol")
    pids = {process.proc.pid: process for process in chat_processes}
    hers = pids.pop(roster_pids(redis_server.url)["carol"])
    (other_pid, other), = pids.items()
    bob = example_pages(other.url)
    bob.run(join, "bob")
    carol.run(expect_text, "#count", "2")

    assert hers.stop() == 0, hers.output()
    bob.run(expect_contains, "#log", "carol left.")
    carol.run(expect_contains, "#log", "Reconnected via websocket", timeout=30000)
    bob.run(expect_contains, "#log", "carol joined (websocket).")
    for page in (bob, carol):
        page.run(expect_text, "#count", "2")
    assert roster_pids(redis_server.url) == {"bob": other_pid, "carol": other_pid}
    carol.run(submit_text, "#text", "still here")
    bob.run(expect_text, LAST_SAID, "still here")
    # nginx tried the other process at once: not even carol's page saw an error.
    example_pages.assert_no_console_errors()


@needs_redis
@pytest.mark.allow_console_errors(*RECONNECT_NOISE)
def test_people_of_a_killed_process_leave(redis_server, chat_processes, example_pages):
    """No ghosts: a process that dies without a word stops refreshing its
    alive key; once it expires, the other process says its people left."""
    first, second = chat_processes
    ada = example_pages(first.url)
    bob = example_pages(second.url)
    ada.run(join, "ada")
    bob.run(join, "bob")
    ada.run(expect_text, "#count", "2")

    second.kill()  # SIGKILL: no on_close, no goodbye
    ada.run(expect_contains, "#log", "bob left.", timeout=(TTL * 3 + 10) * 1000)
    ada.run(expect_text, "#count", "1")
    assert ada.run(texts_of, "#people .name") == ["ada"]
    assert roster_pids(redis_server.url) == {"ada": first.proc.pid}
    # Only bob's page, cut off from its server, may complain.
    assert ada.console_log.unexpected() == []


def test_unreachable_redis_is_one_clear_message(example_server):
    url = "redis://127.0.0.1:%d/0" % free_port()  # nothing listens there
    process = example_server("chatroom", "--port", "0", "--redis", url, wait=False)
    assert process.wait_exit(timeout=30) == 1
    errors = "\n".join(process.lines("err"))
    assert "error: cannot subscribe to Redis at " + url in errors
    assert "Traceback" not in errors
    assert not [line for line in process.lines("out") if "running: open" in line]


@needs_nginx
def test_nginx_conf_of_the_readme_is_complete(tmp_path):
    """examples/nginx/nginx.conf (the README's `nginx -c`) around tornadio.conf
    passes `nginx -t`; only the ports and the pid file are moved for the test."""
    with open(NGINX_MAIN_CONF) as f:
        main = f.read()
    assert main.count("pid /tmp/tornadio-nginx.pid;\n") == 1
    assert "    include tornadio.conf;\n" in main
    with open(tmp_path / "nginx.conf", "w") as f:
        f.write(main.replace("pid /tmp/tornadio-nginx.pid;", "pid %s;" % (tmp_path / "pid")))
    with open(tmp_path / "tornadio.conf", "w") as f:
        f.write(nginx_site_config(free_port(), [free_port(), free_port()]))
    result = subprocess.run([NGINX, "-t", "-e", "stderr", "-c", str(tmp_path / "nginx.conf")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
