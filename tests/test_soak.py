"""Soak: rounds of clients that vanish without a FIN leave nothing behind.

Against a real server process (tests/support/soak_server.py) with short timers:
each round abandons xhr-polling sessions mid-poll and websocket sessions after
their handshake (sockets neither read nor closed, see tests/support/soak.py).
The server must run every ``on_close`` exactly once, empty its router, close
every connection (the keep-alive ones through ``idle_connection_timeout``), and
come back to the Python memory it had before (tracemalloc blocks). The full size
(2,000 + 500 per round) is ``benchmarks/soak.py``.
"""
from support.soak import soak

ROUNDS, POLLERS, WEBSOCKETS = 3, 200, 50
#: Blocks a settled server may be above its baseline: the stats request itself and
#: tracemalloc's bookkeeping (a few; measured: +5 after each round).
TOLERANCE = 100


def test_vanished_clients_leave_nothing_behind():
    outcome = soak(ROUNDS, POLLERS, WEBSOCKETS, say=lambda line: print("\n" + line),
                   session_expiry=1, heartbeat=0.5, poll_timeout=1)
    baseline, rounds = outcome["baseline"], outcome["rounds"]
    per_round = POLLERS + WEBSOCKETS
    for number, stats in enumerate(rounds, 1):
        # soak() waited for these; the counts say on_close ran once for each session.
        assert stats["opened"] == stats["closed"] == per_round * (number + 1)
        assert stats["closed_twice"] == 0
        assert stats["live"] == 0 and stats["connections"] == 0
        assert stats["fds"] <= baseline["fds"]
        assert stats["blocks"] - baseline["blocks"] <= TOLERANCE, (
            "round %d: %d blocks over the baseline of %d; grew most:\n%s" % (
                number, stats["blocks"] - baseline["blocks"], baseline["blocks"],
                "\n".join(stats.get("growth", []))))
    # A leak of one block per session would add per_round blocks each round.
    growth = rounds[-1]["blocks"] - rounds[0]["blocks"]
    assert growth < per_round // 5, "%d blocks more after round %d than after round 1:\n%s" % (
        growth, ROUNDS, "\n".join(rounds[-1].get("growth", [])))
