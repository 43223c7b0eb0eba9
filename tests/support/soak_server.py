"""A TornadIO server for the soak test, in its own process so its memory is its own.

``python soak_server.py [--session-expiry S] [--heartbeat S] [--poll-timeout S]``
serves a silent connection on 127.0.0.1 (a free port) with ``SocketServer``,
prints ``listening on PORT`` and answers ``GET /soak/stats`` with JSON:

``opened``        sessions whose ``on_open`` ran
``closed``        sessions whose ``on_close`` ran
``closed_twice``  times an ``on_close`` ran again for the same session
``live``          sessions still in the router (parked leftovers included)
``connections``   HTTP connections the server still holds (this request's excluded)
``fds``           open file descriptors of the process
With ``?memory=1`` also ``blocks`` and ``kib``: the Python memory tracemalloc sees,
after a full garbage collection (and with CPython's method cache emptied).
``&baseline=1`` remembers that snapshot; later memory answers then carry
``growth``, the ten source lines whose allocations grew most since (for a
failure report).
"""
import tracemalloc

tracemalloc.start()  # before anything else: what follows is traced

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from collections import Counter  # noqa: E402

import tornado.web  # noqa: E402

import tornadio  # noqa: E402
from tornadio.server import SocketServer  # noqa: E402

# Counts only: keeping session ids here would be memory the soak then measures.
COUNTS = Counter()
BASELINE = []


class Silent(tornadio.SocketConnection):
    """Counts its lifecycle; says nothing (its clients will never read)."""

    closes = 0

    def on_open(self, request, *args, **kwargs):
        COUNTS["opened"] += 1

    def on_close(self):
        self.closes += 1
        COUNTS["closed" if self.closes == 1 else "closed_twice"] += 1


class Stats(tornado.web.RequestHandler):
    def initialize(self, router):
        self.router = router

    def get(self):
        report = {
            "opened": COUNTS["opened"],
            "closed": COUNTS["closed"],
            "closed_twice": COUNTS["closed_twice"],
            "live": len(self.router.sessions()) + len(self.router.sessions().closing),
            "connections": len(SERVER[0]._connections) - 1,
            "fds": len(os.listdir("/proc/self/fd")),
        }
        if self.get_query_argument("memory", None):  # slow: seconds for 100,000 blocks
            # CPython's method cache keeps the name of each recent attribute lookup,
            # and Tornado looks its handler methods up by a fresh string per request:
            # up to 4,096 of them, interpreter state rather than anything leaked.
            sys._clear_type_cache()
            gc.collect()
            snapshot = tracemalloc.take_snapshot()
            traces = snapshot.statistics("filename")
            report["blocks"] = sum(stat.count for stat in traces)
            report["kib"] = sum(stat.size for stat in traces) // 1024
            if self.get_query_argument("baseline", None):
                BASELINE[:] = [snapshot]
            elif BASELINE:
                growth = snapshot.compare_to(BASELINE[0], "lineno")[:10]
                report["growth"] = [str(stat) for stat in growth]
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(report))


SERVER = []


class RecordingServer(SocketServer):
    def start_loop(self):
        SERVER.append(self)
        print("listening on", self.port, flush=True)
        super().start_loop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--session-expiry", type=float, default=1.0)
    parser.add_argument("--heartbeat", type=float, default=0.5)
    parser.add_argument("--poll-timeout", type=float, default=1.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    router = tornadio.get_router(Silent, {
        "session_expiry": args.session_expiry, "heartbeat_interval": args.heartbeat,
        "xhr_polling_timeout": args.poll_timeout, "session_check_interval": 0.2,
        "max_sessions": 0})
    app = tornado.web.Application(
        [router.route(), (r"/soak/stats", Stats, {"router": router})],
        socket_io_port=0, socket_io_address="127.0.0.1", flash_policy_server=False)
    RecordingServer(app)


if __name__ == "__main__":
    main()
