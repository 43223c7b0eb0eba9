"""Real nginx, configured with examples/nginx/tornadio.conf, in front of two processes.

* Polling clients (xhr-polling, jsonp-polling, htmlfile) from different source
  addresses: every request of a session reaches the same process (each answer
  names the process's port), and ip_hash spreads the addresses over both.
* WebSocket passes through (Upgrade), heartbeats included.
* The double-slash first poll survives, with the example's ``merge_slashes off``
  even when ``proxy_pass`` carries a URI part (where ``on`` breaks it).
"""
import asyncio
import os
import re
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tornadio import testing  # noqa: E402
from scaling_clients import close_all, connect  # noqa: E402
from scaling_procs import (NGINX_EXAMPLE, Nginx, control, find_binary,  # noqa: E402
                           nginx_site_config, node_stats, start_nodes)

NGINX = find_binary("nginx")
pytestmark = pytest.mark.skipif(
    NGINX is None,
    reason="nginx binary not found (scripts/setup.sh --services installs nginx-light)")

TEST_TIMEOUT = 90
#: Client source addresses in distinct /24s (ip_hash keys on the first three octets).
SOURCES = ["127.0.%d.1" % n for n in range(1, 9)]
#: Server heartbeat period (s): a missing echo closes the session at the next one.
HEARTBEAT = 1


def run(test, timeout=TEST_TIMEOUT):
    async def bounded():
        return await asyncio.wait_for(test(), timeout)
    return asyncio.run(bounded())


@pytest.fixture
def nodes(tmp_path):
    started = start_nodes(tmp_path, 2, args=("--heartbeat", str(HEARTBEAT)))
    try:
        yield started
    finally:
        for node in started:
            node.stop()
        for node in started:
            print("---- %s stderr ----\n%s" % (node.name, node.stderr()[-3000:]))


def start_nginx(tmp_path, nodes, edit=lambda text: text):
    ports = [node.port for node in nodes]
    return Nginx(tmp_path, NGINX, lambda port: edit(nginx_site_config(port, ports))).start()


@pytest.fixture
def nginx(tmp_path, nodes):
    server = start_nginx(tmp_path, nodes)
    try:
        yield server
    finally:
        server.stop()
        print("---- nginx error.log ----\n" + server.errors())


def test_example_config_has_the_required_settings():
    with open(NGINX_EXAMPLE) as f:
        text = f.read()
    assert re.search(r"^\s*ip_hash;", text, re.M)
    assert re.search(r"^\s*merge_slashes off;", text, re.M)
    assert re.search(r"^\s*proxy_http_version 1\.1;", text, re.M)
    assert re.search(r"^\s*proxy_set_header Upgrade \$http_upgrade;", text, re.M)
    assert re.search(r"^\s*proxy_set_header Connection \$tornadio_connection;", text, re.M)
    assert re.search(r"^\s*proxy_buffering off;", text, re.M)
    timeout = re.search(r"^\s*proxy_read_timeout (\d+)s;", text, re.M)
    assert timeout and int(timeout.group(1)) > 20


def test_polling_sessions_stick_to_one_process(nodes, nginx):
    ports = {node.port for node in nodes}
    kinds = ["xhr-polling", "jsonp-polling", "htmlfile", "xhr-polling"]

    async def test():
        clients = []
        try:
            seen = {}
            for i, source in enumerate(SOURCES):
                kind = kinds[i % len(kinds)]
                client = await connect(kind, nginx.port, source_ip=source)
                clients.append(client)
                hello = (await client.receive())["hello"]
                assert hello["port"] in ports and hello["sid"] == client.session_id
                for n in range(8):
                    await client.send({"whoami": n})
                    answer = await client.receive()
                    assert answer["n"] == n
                    assert answer["port"] == hello["port"], (
                        "%s session moved from %d to %d" % (kind, hello["port"], answer["port"]))
                seen[source] = hello["port"]
            # Every request of a session stayed put, and both processes got clients.
            assert set(seen.values()) == ports, seen
            # The same source address always lands on the same process.
            again = await connect("xhr-polling", nginx.port, source_ip=SOURCES[0])
            clients.append(again)
            assert (await again.receive())["hello"]["port"] == seen[SOURCES[0]]
            # No request was refused for an unknown session.
            for client in clients:
                assert not client.closed, (client.transport, client.close_reason)
        finally:
            await close_all(clients)

    run(test)
    with open(os.path.join(nginx.dir, "access.log")) as f:
        log = f.read()
    assert '" 401 ' not in log, log[-2000:]
    assert "/socket.io/xhr-polling//" in log  # the double-slash first poll went through


def test_websocket_passes_through(nodes, nginx):
    async def test():
        clients = []
        try:
            by_port = {}
            for source in SOURCES[:4]:
                client = await connect("websocket", nginx.port, source_ip=source)
                clients.append(client)
                hello = (await client.receive())["hello"]
                by_port.setdefault(hello["port"], []).append(client)
            for client in clients:
                await client.send({"whoami": 1})
            for port, group in by_port.items():
                for client in group:
                    assert (await client.receive())["port"] == port
            # Three heartbeat periods: every echo went back through nginx in time.
            await asyncio.sleep(3 * HEARTBEAT + 0.5)
            for node in nodes:
                stats = await node_stats(node.port)
                expected = len(by_port.get(node.port, []))
                assert stats["sessions_by_transport"]["websocket"] == expected
                assert stats["closed_total"] == 0
            # A broadcast from each process reaches its own websocket clients.
            for port, group in by_port.items():
                answer = await control(port, {"op": "send_all", "message": "hi %d" % port})
                assert answer["local"] == [len(group)]
                for client in group:
                    assert await client.receive() == "hi %d" % port
        finally:
            await close_all(clients)

    run(test)


@pytest.mark.parametrize("merge, works", [("off", True), ("on", False)])
def test_merge_slashes_matters_once_proxy_pass_has_a_uri(tmp_path, nodes, merge, works):
    def edit(text):
        text = text.replace("merge_slashes off;", "merge_slashes %s;" % merge)
        head, sep, tail = text.partition("location /socket.io/ {")
        return head + sep + tail.replace("proxy_pass http://tornadio;",
                                         "proxy_pass http://tornadio/socket.io/;", 1)

    server = start_nginx(tmp_path, nodes, edit)
    try:
        async def test():
            try:
                client = await connect("xhr-polling", server.port)
            except testing.ConnectionRefused as exc:
                return str(exc)
            await client.close()
            return "connected"

        outcome = run(test, timeout=20)
    finally:
        server.stop()
    if works:
        assert outcome == "connected"
    else:
        assert "401" in outcome, outcome
