"""A Redis stall (SIGSTOP on a real redis-server) under broadcast traffic, measured.

    PYTHONPATH=. python tests/scaling/redis_stall.py [--stall 20] [--rate 400] [--size 1024]

Two ``RedisBroadcastBackend`` objects in this one process stand for two
processes (each has its own connections and process id): *pub* publishes
``--rate`` broadcasts/s of ``--size`` bytes, *recv* only receives. redis-server
is stopped (SIGSTOP: its TCP connections stay up, nothing answers) for
``--stall`` seconds, then resumed. :func:`stall_scenario` returns what each
side saw; ``tests/scaling/test_redis_faults.py`` asserts on it with short
settings, and the command line prints it (the figures in the report of
issue 12 come from here). Both backends share one clock, so the age of a
received broadcast is exact.
"""
import argparse
import asyncio
import inspect
import json
import logging
import os
import re
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from scaling_procs import RedisServer, find_binary  # noqa: E402

from tornadio.broadcast import Delivery  # noqa: E402
from tornadio.redis_broadcast import RedisBroadcastBackend  # noqa: E402

CHANNEL = "stall"
_URL_DB = re.compile(r"redis://\S+?/(\d+)")


class LogLines(logging.Handler):
    """The ``tornadio.redis`` lines, per backend (told apart by the db of their URL)."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.lines = {}

    def emit(self, record):
        text = record.getMessage()
        found = _URL_DB.search(text)
        key = found.group(1) if found else "?"
        self.lines.setdefault(key, []).append((record.levelname, text))

    def of(self, db, level=None):
        return ["%s %s" % (lvl, text) for lvl, text in self.lines.get(str(db), [])
                if level is None or lvl == level]


def _backend(url, settings):
    """A backend with those of ``settings`` that this version accepts (for "before" runs)."""
    accepted = inspect.signature(RedisBroadcastBackend).parameters
    return RedisBroadcastBackend(url=url, channel_prefix="stall-test",
                                 **{k: v for k, v in settings.items() if k in accepted})


def _pending(backend):
    stats = backend.stats()
    return stats.get("pending", 0) + stats.get("in_flight", 0)


async def stall_scenario(redis_server, stall, rate=400, size=1024, settings=None,
                         warmup=1.0, after=1.0, late_after=None, recover_timeout=30.0):
    """Publish through a stall of ``stall`` s; a dict of what was seen (see the keys).

    ``late_after``: a broadcast received more than this many seconds after it
    was sent counts as late (default: the ``max_delay`` setting, else 1 s).
    Every wait is bounded; redis-server is resumed whatever happens.
    """
    settings = dict(settings or {})
    late_after = late_after or settings.get("max_delay", 1.0)
    base = redis_server.url.rsplit("/", 1)[0]
    lines = LogLines()
    logger = logging.getLogger("tornadio.redis")
    logger.addHandler(lines)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    pub = _backend(base + "/0", settings)
    recv = _backend(base + "/1", settings)
    received = {}                      # id -> seconds from send to receipt, on recv
    sent = {}                          # id -> (send time, Delivery)
    unsettled = set()
    seen = {"max_outbox": 0, "max_unsettled": 0, "done_before_final": 0,
            "pub_down": None, "recv_down": None, "pub_first_false": None,
            "pub_up": None, "recv_up": None}
    t = {"stop": None, "cont": None}

    def on_recv(group, frames, exclude):
        message = json.loads(frames)
        received.setdefault(message["i"], time.monotonic() - message["t"])

    def settle(delivery_id):
        delivery = sent[delivery_id][1]
        if not delivery.done():
            return False
        if delivery.remote is None:
            seen["done_before_final"] += 1
        elif (delivery.remote is False and t["stop"] is not None
              and seen["pub_first_false"] is None):
            seen["pub_first_false"] = time.monotonic() - t["stop"]
        return True

    async def publisher():
        pad = "x" * max(0, size - 40)
        i = 0
        tick = 0.01
        per_tick = max(1, int(round(rate * tick)))
        next_at = time.monotonic()
        while True:
            for _ in range(per_tick):
                now = time.monotonic()
                frames = json.dumps({"i": i, "t": now, "p": pad})
                delivery = Delivery(0, pub.publish(CHANNEL, None, frames, []))
                sent[i] = (now, delivery)
                if not settle(i):
                    unsettled.add(i)
                i += 1
            next_at += tick
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))

    async def monitor():
        while True:
            now = time.monotonic()
            for delivery_id in [d for d in unsettled if settle(d)]:
                unsettled.discard(delivery_id)
            seen["max_unsettled"] = max(seen["max_unsettled"], len(unsettled))
            seen["max_outbox"] = max(seen["max_outbox"], _pending(pub))
            if t["stop"] is not None:
                for name, backend in (("pub", pub), ("recv", recv)):
                    if seen[name + "_down"] is None and not backend.connected:
                        seen[name + "_down"] = now - t["stop"]
                    if (t["cont"] is not None and seen[name + "_up"] is None
                            and backend.connected):
                        seen[name + "_up"] = now - t["cont"]
            await asyncio.sleep(0.02)

    tasks = []
    try:
        pub.attach(CHANNEL, lambda *a: None)
        recv.attach(CHANNEL, on_recv)
        ready = await asyncio.gather(pub.ready(10), recv.ready(10))
        if ready != [True, True]:
            raise RuntimeError("backends not ready: %r" % (ready,))
        tasks = [asyncio.ensure_future(publisher()), asyncio.ensure_future(monitor())]
        await asyncio.sleep(warmup)
        t["stop"] = time.monotonic()
        redis_server.pause()
        try:
            await asyncio.sleep(stall)
        finally:
            t["cont"] = time.monotonic()
            redis_server.resume()
        sent_before_cont = len(sent)
        deadline = time.monotonic() + recover_timeout
        while not (pub.connected and recv.connected) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(after)
        tasks[0].cancel()
        deadline = time.monotonic() + 10.0
        while unsettled and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # the last ones in flight to recv
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        redis_server.resume()
        await asyncio.wait_for(asyncio.gather(pub.close(), recv.close(),
                                              return_exceptions=True), 15)
        logger.removeHandler(lines)
        logger.setLevel(old_level)

    stall_ids = [i for i, (sent_at, _) in sent.items() if t["stop"] <= sent_at < t["cont"]]
    late = {i: age for i, age in received.items() if age > late_after}
    false_ids = {i for i, (_, d) in sent.items() if d.done() and d.remote is False}
    return {
        "sent": len(sent),
        "sent_before_resume": sent_before_cont,
        "sent_during_stall": len(stall_ids),
        "received": len(received),
        "pub_noticed_after": seen["pub_down"],
        "pub_first_false_after": seen["pub_first_false"],
        "recv_noticed_after": seen["recv_down"],
        "pub_reconnected_after_resume": seen["pub_up"],
        "recv_reconnected_after_resume": seen["recv_up"],
        "max_outbox": seen["max_outbox"],
        "max_pending_deliveries": seen["max_unsettled"],
        "still_pending_at_end": len(unsettled),
        "done_before_final": seen["done_before_final"],
        "late": len(late),
        "late_max_age": round(max(late.values()), 3) if late else None,
        "received_though_false": len(false_ids & set(received)),
        "missing_though_receivers_2": sum(
            1 for i, (_, d) in sent.items()
            if d.done() and d.remote and d.receivers >= 2 and i not in received),
        "pub_log": lines.of(0),
        "recv_log": lines.of(1),
        "pub_stats": pub.stats(),
        "recv_stats": recv.stats(),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stall", type=float, default=20.0)
    parser.add_argument("--rate", type=int, default=400)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=SECONDS",
                        help="a RedisBroadcastBackend setting (repeatable)")
    args = parser.parse_args()
    settings = {}
    for item in args.setting:
        name, value = item.split("=", 1)
        settings[name] = float(value)
    binary = find_binary("redis-server")
    if binary is None:
        sys.exit("redis-server not found (scripts/setup.sh --services)")
    import redis
    print("redis-py", redis.__version__)
    with tempfile.TemporaryDirectory() as tmp, RedisServer(tmp, binary) as server:
        result = asyncio.run(stall_scenario(server, args.stall, args.rate, args.size,
                                            settings))
    for key, value in result.items():
        if key.endswith("_log"):
            print("%s:" % key)
            for line in value:
                print("    " + line)
        else:
            print("%s: %s" % (key, value))


if __name__ == "__main__":
    main()
