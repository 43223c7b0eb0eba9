"""Clients that vanish without a FIN, in rounds, against ``soak_server.py``.

A vanished client is a real TCP connection that its owner stops using: it is
neither read nor closed, so the server sees no FIN and no error, only silence,
as when a laptop lid closes or a mobile network drops. (The kernel of this
process still acknowledges what the server sends; nothing reads it.) The
sockets are closed only after the server has let go of them.

Used by ``tests/test_soak.py`` (small) and ``benchmarks/soak.py`` (full size).
"""
import base64
import json
import os
import socket
import time
import urllib.request

from support.process import ScriptProcess

HERE = os.path.dirname(os.path.abspath(__file__))
SOAK_SERVER = os.path.join(HERE, "soak_server.py")
WAIT = 10.0


def _read_until(sock, buffer, marker):
    while marker not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server after %r" % buffer[:200])
        buffer += chunk
    return buffer


def _read_exactly(sock, buffer, size):
    while len(buffer) < size:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server after %r" % buffer[:200])
        buffer += chunk
    return buffer


def _connect(port):
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    return sock


def vanishing_poller(port):
    """An xhr-polling client that gets its session, sends the next poll, and is gone."""
    sock = _connect(port)
    sock.sendall(b"GET /socket.io/xhr-polling//%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                 % (time.time() * 1000, port))
    buffer = _read_until(sock, b"", b"\r\n\r\n")
    head, _, body = buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    body = _read_exactly(sock, body, length)
    assert body.startswith(b"~m~32~m~"), body
    sid = body[8:40]
    sock.sendall(b"GET /socket.io/xhr-polling/%s/%d HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                 % (sid, time.time() * 1000, port))
    return sock


def vanishing_websocket(port):
    """A websocket client that reads its session id and is gone."""
    sock = _connect(port)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET /socket.io/websocket HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                 b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                 b"Sec-WebSocket-Key: %s\r\n\r\n" % (port, key))
    buffer = _read_until(sock, b"", b"\r\n\r\n")
    head, _, rest = buffer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101 "), head
    rest = _read_exactly(sock, rest, 2)
    size = rest[1] & 0x7F  # the session id frame is short: no extended length
    rest = _read_exactly(sock, rest, 2 + size)
    assert rest[2:2 + size].startswith(b"~m~32~m~"), rest
    return sock


class SoakServer:
    """soak_server.py as a process, and its /soak/stats."""

    def __init__(self, *args):
        self.process = ScriptProcess(SOAK_SERVER, *[str(arg) for arg in args])

    def __enter__(self):
        self.process.start()
        self.port = int(self.process.wait_for(r"listening on (\d+)").group(1))
        return self

    def __exit__(self, *exc_info):
        self.process.kill()

    def stats(self, **query):
        url = "http://127.0.0.1:%d/soak/stats?%s" % (
            self.port, "&".join("%s=1" % name for name in query))
        with urllib.request.urlopen(url, timeout=60) as response:
            return json.loads(response.read())

    def wait_clean(self, expected, fds, timeout):
        """Stats once every session ended and every connection is gone (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if (stats["opened"] == expected and stats["closed"] == expected
                    and stats["live"] == 0 and stats["connections"] == 0
                    and stats["fds"] <= fds):
                return stats
            if time.monotonic() > deadline:
                raise AssertionError("after %.0f s, expected %d sessions opened and closed "
                                     "and nothing left: %r" % (timeout, expected, stats))
            time.sleep(0.1)


def soak(rounds, pollers, websockets, settle=60.0, say=print, **server_options):
    """Rounds of vanishing clients; returns {"baseline": stats, "rounds": [stats...]}.

    ``server_options`` go to soak_server.py (``session_expiry=1``, ...). Each
    round opens ``pollers`` xhr-polling and ``websockets`` websocket sessions,
    abandons them, and waits (at most ``settle`` s) until the server has run
    every ``on_close`` and closed every connection by itself, then measures its
    memory. Raises AssertionError when a round does not settle in time.
    """
    args = []
    for name, value in server_options.items():
        args += ["--" + name.replace("_", "-"), value]
    with SoakServer(*args) as server:
        # A warm-up round of the same size: what is made once or cached with a bound
        # (the router's container and timers; CPython's method cache holding the
        # name of each fresh getattr) is in the baseline.
        fds = server.stats()["fds"]
        kept = []
        expected = _abandon(server.port, pollers, websockets, kept)
        server.wait_clean(expected, fds, settle)
        _close(kept)
        baseline = server.stats(memory=True, baseline=True)
        say("baseline: %d blocks, %d KiB, %d fds" % (baseline["blocks"], baseline["kib"],
                                                     baseline["fds"]))
        results = []
        for number in range(1, rounds + 1):
            kept = []
            started = time.monotonic()
            expected += _abandon(server.port, pollers, websockets, kept)
            # Measured while the clients are still silent: the server let go by itself.
            server.wait_clean(expected, fds, settle)
            seconds = time.monotonic() - started
            stats = server.stats(memory=True)
            stats["seconds"] = round(seconds, 1)
            _close(kept)
            results.append(stats)
            say("round %d: %d sessions opened and closed in %.1f s; %d blocks (%+d), %d KiB "
                "(%+d), %d fds" % (number, pollers + websockets, stats["seconds"],
                                   stats["blocks"], stats["blocks"] - baseline["blocks"],
                                   stats["kib"], stats["kib"] - baseline["kib"], stats["fds"]))
        return {"baseline": baseline, "rounds": results}


def _close(sockets):
    for sock in sockets:
        sock.close()
    sockets.clear()


def _abandon(port, pollers, websockets, kept):
    """Open that many sessions and abandon them (sockets in ``kept``); returns the count."""
    for index in range(max(pollers, websockets)):
        if index < pollers:
            kept.append(vanishing_poller(port))
        if index < websockets:
            kept.append(vanishing_websocket(port))
    return pollers + websockets
