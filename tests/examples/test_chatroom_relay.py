"""examples/chatroom behind a round-robin nginx, with the session relay.

Everything is real: a redis-server, three ``chatroom.py --redis URL --relay``
processes, nginx running examples/nginx/tornadio-relay.conf (no ip_hash, no
cookie: every request goes to the next process) with its ports rewritten, and
the chat page in Chromium over xhr-polling and jsonp-polling. nginx logs which
process served each request, so the test sees one session's requests reach
all three processes.
"""
import os
import re
import signal
import sys

import pytest

from example_steps import expect_contains, expect_text, submit_text, texts_of
from test_chatroom_scaled import (LAST_SAID, NGINX, REDIS_SERVER, join,  # noqa: F401
                                  port_of, redis_server, roster_pids)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "scaling"))

from scaling_procs import REPO_ROOT, Nginx, nginx_site_config  # noqa: E402

pytestmark = [
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server binary not found "
                       "(scripts/setup.sh --services installs it)"),
    pytest.mark.skipif(NGINX is None, reason="nginx binary not found "
                       "(scripts/setup.sh --services installs it)"),
]

ROUND_ROBIN_CONF = os.path.join(REPO_ROOT, "examples", "nginx", "tornadio-relay.conf")
#: --redis-ttl of the chat processes (s).
TTL = 3
#: What nginx logs per request: which process served it, the status, the request.
LOG_FORMAT = '$upstream_addr $status "$request"'
SAID = "#log li:not(.notice) .text"
NOTICES = "#log li.notice .body"
#: A poll held until the room's polling session expires (the chatroom's defaults:
#: expiry 30 s, checked every 15 s) fits in this, in seconds.
EXPIRY_WAIT = 60


@pytest.fixture
def chat_processes(redis_server, example_server):
    """Three chatroom processes with the session relay, one room through Redis."""
    processes = [example_server("chatroom", "--port", "0", "--redis", redis_server.url,
                                "--relay", "--redis-ttl", TTL)
                 for _ in range(3)]
    yield processes
    for process in processes:
        killed = process.proc.poll() is not None
        assert killed or process.stop() == 0, process.output()
        assert "Traceback" not in process.output(), process.output()


@pytest.fixture
def nginx(tmp_path, chat_processes):
    ports = [port_of(process) for process in chat_processes]
    server = Nginx(tmp_path, NGINX,
                   lambda port: nginx_site_config(port, ports, example=ROUND_ROBIN_CONF),
                   log_format=LOG_FORMAT).start()
    try:
        yield server
    finally:
        server.stop()
        print("---- nginx error.log ----\n" + server.errors())


def access_log(nginx):
    with open(os.path.join(nginx.dir, "access.log")) as log:
        return log.read().splitlines()


def ports_serving(nginx, transport, session_prefix):
    """The upstream ports that served requests of the session whose id starts so."""
    pattern = re.compile(r"^127\.0\.0\.1:(\d+) \d+ \"\w+ /socket\.io/%s/%s"
                         % (re.escape(transport), re.escape(session_prefix)))
    return {int(m.group(1)) for m in map(pattern.match, access_log(nginx)) if m}


def session_of(redis_url, nickname):
    """(session id prefix, pid of its owner) of ``nickname``, from the Redis roster."""
    import json

    import redis
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
    try:
        people = [json.loads(value) for value in client.hgetall("chatroom:people").values()]
    finally:
        client.close()
    entry, = [p for p in people if p["nickname"] == nickname]
    return entry["session"], int(entry["process"].split(":")[-2])


def notices_with(page, text):
    return [line for line in page.run(texts_of, NOTICES) if text in line]


def converse(pages, lines):
    """Each page in turn says the next line; every page shows it before the next."""
    said = []
    for index, line in enumerate(lines):
        speaker = pages[index % len(pages)]
        speaker.run(submit_text, "#text", line)
        said.append(line)
        for page in pages:
            page.run(expect_text, LAST_SAID, line)
    return said


@pytest.mark.parametrize("transport", ["xhr-polling", "jsonp-polling"])
def test_round_robin_nginx_and_three_processes_are_one_room(transport, redis_server,
                                                            chat_processes, nginx,
                                                            example_pages, save_screenshot):
    url = "http://127.0.0.1:%d/?transport=%s" % (nginx.port, transport)
    ada = example_pages(url)
    ada.run(join, "ada")
    bob = example_pages(url)
    bob.run(join, "bob")
    ada.run(expect_contains, "#log", "bob joined (%s)." % transport)
    bob.run(expect_contains, "#log", "Also here: ada.")
    for page in (ada, bob):
        page.run(expect_text, "#count", "2")

    lines = ["message %d from %s" % (n, ("ada", "bob")[n % 2]) for n in range(12)]
    said = converse([ada, bob], lines)
    for page in (ada, bob):
        # Every message once, in order; each join announced once; no reconnects.
        assert page.run(texts_of, SAID) == said
        assert not notices_with(page, "Connection lost")
    assert len(notices_with(ada, "bob joined")) == 1
    assert notices_with(bob, "ada joined") == []
    save_screenshot(ada, "chatroom-relay-%s" % transport)

    # One session's requests reached all three processes; each session lives
    # in one process, and nothing was refused.
    ports = {port_of(process) for process in chat_processes}
    for nickname in ("ada", "bob"):
        prefix, owner = session_of(redis_server.url, nickname)
        assert owner in {process.proc.pid for process in chat_processes}
        assert ports_serving(nginx, transport, prefix) == ports, nickname
    refused = [line for line in access_log(nginx) if re.match(r"^\S+ [45]\d\d ", line)]
    assert refused == []

    # bob leaves (closes his tab): once his session expires, in its owner, the
    # room hears it once.
    bob.close()
    ada.run(expect_contains, "#log", "bob left.", EXPIRY_WAIT * 1000, timeout=EXPIRY_WAIT + 15)
    ada.run(expect_text, "#count", "1")
    assert len(notices_with(ada, "bob left")) == 1
    assert set(roster_pids(redis_server.url)) == {"ada"}
    example_pages.assert_no_console_errors()


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM], ids=["kill", "stop"])
@pytest.mark.allow_console_errors(r"status of 401", r"ERR_")
def test_losing_an_owner_moves_only_its_clients(signum, redis_server, chat_processes, nginx,
                                                example_pages):
    """SIGKILL (or a clean stop, SIGTERM) of the process that holds ada's
    session: ada's page reconnects (a new session, on a live process) and
    carries on; bob, whose session lives elsewhere and whose requests went
    through that process too, sees nothing of it."""
    url = "http://127.0.0.1:%d/?transport=xhr-polling" % nginx.port
    ada = example_pages(url)
    ada.run(join, "ada")
    _, ada_owner = session_of(redis_server.url, "ada")
    # Round-robin puts each new session on whichever process gets its first
    # request: open pages until one lives elsewhere than ada's (all take part).
    pages = [ada]
    for attempt in range(12):
        page = example_pages(url)
        page.run(join, "bob%d" % attempt)
        pages.append(page)
        _, owner = session_of(redis_server.url, "bob%d" % attempt)
        if owner != ada_owner:
            bob, bob_name = page, "bob%d" % attempt
            break
    else:
        pytest.fail("12 sessions in a row opened on ada's process")
    for page in pages:
        page.run(expect_text, "#count", str(len(pages)))
    converse([ada, bob], ["before 1", "before 2"])

    killed, = [process for process in chat_processes if process.proc.pid == ada_owner]
    os.kill(killed.proc.pid, signum)
    assert killed.proc.wait(15) == (0 if signum == signal.SIGTERM else -signal.SIGKILL)
    ada.run(expect_contains, "#log", "Reconnected via xhr-polling", 30000, timeout=45)
    # The room hears that ada is back: "ada reconnected", or, when a roster
    # sweep removed the killed process's people first, "ada left" + "ada joined".
    bob.run(expect_text, "#count", str(len(pages)), 30000, timeout=45)
    assert "ada" in bob.run(texts_of, "#people .name")
    _, new_owner = session_of(redis_server.url, "ada")
    assert new_owner != ada_owner
    about_ada = [line for line in bob.run(texts_of, NOTICES) if line.startswith("ada ")]
    assert about_ada in (["ada reconnected (xhr-polling)."],
                         ["ada left.", "ada joined (xhr-polling)."]), about_ada
    after = converse([ada, bob], ["after 1", "after 2", "after 3"])

    # bob saw every message once, in order, and no disconnect.
    assert bob.run(texts_of, SAID) == ["before 1", "before 2"] + after
    assert not notices_with(bob, "Connection lost")
    assert bob.console_log.unexpected() == []
    assert roster_pids(redis_server.url)[bob_name] != ada_owner
    assert ada.run(texts_of, SAID)[-3:] == after


def test_round_robin_conf_has_no_affinity():
    with open(ROUND_ROBIN_CONF) as f:
        lines = [line.split("#")[0].strip() for line in f]
    directives = [line for line in lines if line]
    assert not [d for d in directives if d.startswith(("ip_hash", "hash ", "sticky"))]
    assert "merge_slashes off;" in directives and "proxy_buffering off;" in directives
    assert sum(d.startswith("server 127.0.0.1:") for d in directives) == 3


def test_relay_without_redis_is_one_clear_message(example_server):
    process = example_server("chatroom", "--port", "0", "--relay", wait=False)
    assert process.wait_exit(timeout=30) == 1
    assert "error: --relay needs --redis URL" in "\n".join(process.lines("err"))
    assert "Traceback" not in process.output()
