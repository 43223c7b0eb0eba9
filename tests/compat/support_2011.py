"""What the 2011-style application tests share: fast timers, the page, /proc listeners."""
import os
import socket

from support.apps import HERE as SUPPORT_DIR, PageHandler, ScriptHandler, client_js_path
from support.apps import TEST_SETTINGS as FAST  # short timers: a vanished client is noticed fast

#: The transports Chromium runs natively.
TRANSPORTS = ["websocket", "xhr-polling", "jsonp-polling"]


def page_routes():
    """The test page and its scripts (tests/support), served next to the app's router."""
    return [
        (r"/", PageHandler),
        (r"/static/socket.io.js", ScriptHandler, {"path": client_js_path()}),
        (r"/static/harness.js", ScriptHandler, {"path": os.path.join(SUPPORT_DIR, "harness.js")}),
    ]


def _socket_inodes():
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _hex_address(text, family):
    host, port = text.split(":")
    raw = bytes.fromhex(host)
    if family == socket.AF_INET:
        raw = raw[::-1]
    else:  # four little-endian 32-bit words
        raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(family, raw), int(port, 16)


def tcp_listeners(only_inodes=None):
    """(address, port) of every listening TCP socket, or of those with these inodes."""
    found = set()
    for path, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            with open(path) as table:
                rows = table.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] != "0A":  # TCP_LISTEN
                continue
            if only_inodes is not None and fields[9] not in only_inodes:
                continue
            found.add(_hex_address(fields[1], family))
    return found


def listening_sockets():
    """The (address, port) pairs this process listens on."""
    return tcp_listeners(_socket_inodes())
