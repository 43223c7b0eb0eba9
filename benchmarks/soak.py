"""Soak at full size: rounds of 2,000 xhr-polling + 500 websocket clients that vanish.

    python benchmarks/soak.py [--rounds 3] [--pollers 2000] [--websockets 500]

The same rounds as ``tests/test_soak.py`` (which runs 200 + 50): a real server
process (``tests/support/soak_server.py``, short timers), clients abandoned
without a FIN, and per round the time until every ``on_close`` ran and every
connection was closed by the server, then its Python memory (tracemalloc
blocks) against the baseline taken after a warm-up round of the same size.
Prints one line per round and a JSON summary; exits 1 when a round did not
settle, an ``on_close`` ran twice, or memory did not come back (within 100 blocks).
Under a minute on 2 cores (a warm-up round and 3 rounds of about 10 s each).
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))
sys.path.insert(0, HERE)
from common import raise_nofile  # noqa: E402
from support.soak import soak  # noqa: E402

TOLERANCE = 100


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pollers", type=int, default=2000)
    parser.add_argument("--websockets", type=int, default=500)
    parser.add_argument("--settle", type=float, default=120.0,
                        help="seconds a round may take to settle")
    args = parser.parse_args()
    raise_nofile()
    outcome = soak(args.rounds, args.pollers, args.websockets, settle=args.settle,
                   session_expiry=1, heartbeat=0.5, poll_timeout=1)
    baseline = outcome["baseline"]
    per_round = args.pollers + args.websockets
    problems = []
    for number, stats in enumerate(outcome["rounds"], 1):
        if stats["closed_twice"] or stats["opened"] != stats["closed"]:
            problems.append("round %d: on_close counts %r" % (number, stats))
        if stats["blocks"] - baseline["blocks"] > TOLERANCE:
            problems.append("round %d: %+d blocks; grew most:\n%s" % (
                number, stats["blocks"] - baseline["blocks"], "\n".join(stats.get("growth", []))))
    print(json.dumps({
        "sessions": per_round * (args.rounds + 1), "per_round": per_round,
        "baseline_blocks": baseline["blocks"],
        "rounds": [{key: stats[key] for key in ("seconds", "opened", "closed", "closed_twice",
                                                "blocks", "kib", "fds")}
                   for stats in outcome["rounds"]]}, indent=1))
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
