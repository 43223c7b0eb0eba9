"""One client floods with maximal payloads; how long do the others wait?

    python benchmarks/flood.py [--seconds 8] [--transports xhr-polling,websocket]

Three processes on 127.0.0.1: the TornadIO echo server of ``servers.py``, a
flooding client, and this one, which makes websocket echo round trips the
whole time and reads the server's own IOLoop lag (a 5 ms sleep's overshoot,
``/_bench/stats?lag=...``). Each case runs for ``--seconds``:

* ``idle``   nobody floods (the reference);
* ``legal``  payloads of ``max_frames_per_payload`` one-character frames, the
             largest the server takes, sent back to back;
* ``flood``  125,000 one-character frames per payload (what a 1 MB body holds),
             which the frame cap refuses.

xhr-polling floods POST one payload after the other (as the 0.6 client does:
the next when the last is answered); websocket floods write one message after
the other. Prints a table of round-trip and lag percentiles and the flood's
payloads per second. ``TORNADIO_BENCH_PATH`` measures another checkout.
"""
import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from urllib.parse import quote

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BENCH_DIR, percentile, use_repo_tornadio  # noqa: E402

FLOOD_FRAMES = 125000
LEGAL_FRAMES = 10000  # DEFAULT_SETTINGS["max_frames_per_payload"]


def payload_of(case):
    return "~m~1~m~x" * (LEGAL_FRAMES if case == "legal" else FLOOD_FRAMES)


# -- the flooding client (its own process) -------------------------------------------------
async def flood(port, transport, case, seconds):
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest
    from tornado.websocket import websocket_connect

    payload = payload_of(case)
    base = "http://127.0.0.1:%d/echo" % port
    deadline = time.monotonic() + seconds
    sent, codes = 0, {}
    if transport == "xhr-polling":
        http = AsyncHTTPClient()
        body = "data=" + quote(payload, safe="~")
        sid = None
        while time.monotonic() < deadline:
            if sid is None:  # (again) after the echoes overflowed the session's queue
                first = await http.fetch(base + "/xhr-polling//%d" % time.time())
                sid = first.body.decode()[8:40]
            answer = await http.fetch(HTTPRequest(
                "%s/xhr-polling/%s/send" % (base, sid), method="POST", body=body,
                request_timeout=60), raise_error=False)
            codes[answer.code] = codes.get(answer.code, 0) + 1
            sent += 1
            if answer.code == 401:
                sid = None
    else:
        ws = None
        while time.monotonic() < deadline:
            if ws is None or ws.protocol is None:
                ws = await websocket_connect(base.replace("http", "ws", 1) + "/websocket",
                                             max_message_size=1 << 24)
                await ws.read_message()
                asyncio.ensure_future(_drain(ws))
                codes["connections"] = codes.get("connections", 0) + 1
            try:
                await ws.write_message(payload)
                sent += 1
            except Exception:  # closed by the server (the frame cap): open another
                ws = None
    print(json.dumps({"sent": sent, "codes": codes}), flush=True)


async def _drain(ws):
    while await ws.read_message() is not None:
        pass


# -- the measuring side ------------------------------------------------------------------
async def probe_round_trips(port, seconds):
    from tornado.websocket import websocket_connect

    ws = await websocket_connect("ws://127.0.0.1:%d/echo/websocket" % port)
    await ws.read_message()
    loop = asyncio.get_running_loop()
    durations = []
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        text = "probe-%d" % len(durations)
        started = loop.time()
        await ws.write_message("~m~%d~m~%s" % (len(text), text))
        while True:
            answer = await asyncio.wait_for(ws.read_message(), 60)
            if text in answer:
                break
        durations.append(loop.time() - started)
    ws.close()
    return sorted(durations)


def stats(port, **query):
    from urllib.request import urlopen
    from urllib.parse import urlencode
    with urlopen("http://127.0.0.1:%d/_bench/stats?%s" % (port, urlencode(query)),
                 timeout=60) as response:
        return json.loads(response.read())


def run_case(port, transport, case, seconds):
    flooder = None
    if case != "idle":
        flooder = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--flooder", str(port), transport, case,
             str(seconds)], stdout=subprocess.PIPE, text=True, env=os.environ)
        time.sleep(0.5)  # let it connect and start
    stats(port, lag="start")
    durations = asyncio.run(probe_round_trips(port, seconds))
    lag = stats(port, lag="stop")["lag"]
    sent = None
    if flooder is not None:
        out, _ = flooder.communicate(timeout=120)
        sent = json.loads(out.strip().splitlines()[-1])
    ms = lambda value: round(value * 1000, 1)  # noqa: E731
    return {
        "transport": transport, "case": case, "round_trips": len(durations),
        "rtt_p50_ms": ms(percentile(durations, 0.50)),
        "rtt_p99_ms": ms(percentile(durations, 0.99)),
        "rtt_max_ms": ms(durations[-1]), "lag_p99_ms": lag["p99_ms"], "lag_max_ms": lag["max_ms"],
        "flood": sent,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--transports", default="xhr-polling,websocket")
    parser.add_argument("--cases", default="idle,legal,flood")
    parser.add_argument("--flooder", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flooder:
        use_repo_tornadio()
        port, transport, case, seconds = args.flooder
        asyncio.run(flood(int(port), transport, case, float(seconds)))
        return
    use_repo_tornadio()
    server = subprocess.Popen([sys.executable, os.path.join(BENCH_DIR, "servers.py"),
                               "--kind", "tornadio"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        port = json.loads(server.stdout.readline())["port"]
        rows = []
        for transport in args.transports.split(","):
            for case in args.cases.split(","):
                if case == "idle" and rows and rows[0]["case"] == "idle":
                    continue  # one reference is enough
                row = run_case(port, transport, case, args.seconds)
                rows.append(row)
                print(json.dumps(row), flush=True)
        print("\n%-12s %-6s %7s %9s %9s %9s %9s  %s" % (
            "transport", "case", "trips", "rtt p50", "rtt p99", "lag p99", "lag max", "flood"))
        for row in rows:
            print("%-12s %-6s %7d %9.1f %9.1f %9.1f %9.1f  %s" % (
                row["transport"] if row["case"] != "idle" else "-", row["case"],
                row["round_trips"], row["rtt_p50_ms"], row["rtt_p99_ms"], row["lag_p99_ms"],
                row["lag_max_ms"], row["flood"] or ""))
    finally:
        server.stdin.close()
        server.wait(30)


if __name__ == "__main__":
    main()
