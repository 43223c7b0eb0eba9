"""The cost of the session relay: one xhr-polling client through the owner vs
through a process that does not hold its session, in one run.

    python benchmarks/relay_bench.py [--rounds 3] [--seconds 4] [--size 32]

Starts a redis-server (on a free loopback port) and two TornadIO echo
processes with ``session_relay`` (``tornadio.redis_relay``). One client opens
an xhr-polling session on process A, then, round after round, talks to it
through A itself (*owner*) and through B (*relayed*: every poll and POST
reaches B, which forwards it to A over Redis). One message is in flight at a
time: POST it, wait for its echo on the held poll. Reported per path: round
trips, p50 and p99 of POST-to-echo, and the CPU time per message of the
TornadIO processes (A and B together) and of redis-server, from
``/proc/<pid>/stat``. The last line is the JSON result.

Needs redis-server on the PATH (scripts/setup.sh --services) and redis-py.
"""
import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from urllib.parse import quote

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)
from common import median, percentile, use_repo_tornadio  # noqa: E402
from loadgen import HTTPConnection, cpu_seconds, sio06_frame, sio06_frames  # noqa: E402

RESOURCE = "/relay/xhr-polling"
START_TIMEOUT = 15.0


# -- the server processes ------------------------------------------------------------
def serve(redis_url, prefix):
    """One echo process with the session relay; prints ``READY <port>`` and serves."""
    use_repo_tornadio()
    import tornado.web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    import tornadio
    from tornadio.redis_relay import RedisSessionRelay

    class EchoConnection(tornadio.SocketConnection):
        def on_message(self, message):
            self.send(message)

    async def main():
        relay = RedisSessionRelay(url=redis_url, prefix=prefix)
        router = tornadio.get_router(EchoConnection, {"session_relay": relay},
                                     resource="relay")
        sockets = bind_sockets(0, "127.0.0.1")
        HTTPServer(tornado.web.Application([router.route()])).add_sockets(sockets)
        router.sessions()  # makes the relay, which connects
        if not await relay.ready(timeout=10):
            sys.exit("cannot reach Redis at %s" % redis_url)
        print("READY %d" % sockets[0].getsockname()[1], flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await relay.close()

    asyncio.run(main())


class Process:
    """A child process that prints ``READY <port>`` once it serves."""

    def __init__(self, command):
        self.proc = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                     text=True)
        self.port = None

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY "):
                self.port = int(line.split()[1])
                return self
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError("%s did not start" % self.proc.args)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port):
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on %d" % port)


# -- the client -------------------------------------------------------------------------
class Session:
    """One xhr-polling session: a held poll and a POST connection, both to one process."""

    def __init__(self, sid):
        self.sid = sid
        self.poll = self.post = None
        self.echoes = None
        self.poller = None
        self.stopping = False

    async def aim(self, port):
        """Send the next requests to ``port`` (new keep-alive connections).

        The held poll is not abandoned (a real client never does that): one
        more round trip answers it, and the poller stops there.
        """
        if self.poller is not None:
            self.stopping = True
            await self.round_trip("switching")
            await asyncio.wait_for(self.poller, 10)
            await self.leave()
        self.stopping = False
        self.poll, self.post = HTTPConnection(port), HTTPConnection(port)
        await self.poll.open()
        await self.post.open()
        self.echoes = asyncio.Queue()
        self.poller = asyncio.ensure_future(self._poll())

    async def _poll(self):
        while not self.stopping:
            status, data = await self.poll.request(
                "GET", "%s/%s/%d" % (RESOURCE, self.sid, time.time() * 1000))
            if status != 200:
                raise RuntimeError("poll answered %d: %s" % (status, data))
            for message in sio06_frames(data):
                self.echoes.put_nowait((time.perf_counter(), message))

    async def round_trip(self, message):
        """Seconds from sending ``message`` to receiving its echo."""
        body = ("data=" + quote(sio06_frame(message), safe="~!*()'")).encode("ascii")
        start = time.perf_counter()
        status, _ = await self.post.request("POST", "%s/%s/send" % (RESOURCE, self.sid), body)
        if status != 200:
            raise RuntimeError("POST answered %d" % status)
        while True:
            getter = asyncio.ensure_future(self.echoes.get())
            done, _ = await asyncio.wait({getter, self.poller}, timeout=10,
                                         return_when=asyncio.FIRST_COMPLETED)
            if self.poller in done and getter not in done:
                getter.cancel()
                self.poller.result()
                raise RuntimeError("the poller stopped before the echo")
            if getter not in done:
                getter.cancel()
                raise RuntimeError("no echo within 10 s")
            received, echoed = getter.result()
            if echoed == message:
                return received - start

    async def leave(self):
        if self.poller is not None:
            self.poller.cancel()
            try:
                await self.poller
            except (asyncio.CancelledError, Exception):
                pass
        for connection in (self.poll, self.post):
            if connection is not None:
                connection.close()


async def measure(session, port, seconds, size, pids, counter):
    """Round trips through ``port`` for ``seconds``: (latencies, server CPU s, redis CPU s)."""
    await session.aim(port)
    await session.round_trip("warm-up" + "x" * size)
    tornadio_before = [cpu_seconds(pid) for pid in pids["tornadio"]]
    redis_before = cpu_seconds(pids["redis"])
    latencies = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        counter[0] += 1
        latencies.append(await session.round_trip("m%d-" % counter[0] + "x" * size))
    tornadio_cpu = sum(cpu_seconds(pid) - before
                       for pid, before in zip(pids["tornadio"], tornadio_before))
    redis_cpu = cpu_seconds(pids["redis"]) - redis_before
    return latencies, tornadio_cpu, redis_cpu


def summary(latencies, tornadio_cpu, redis_cpu):
    values = sorted(latencies)
    count = len(values)
    return {"round_trips": count,
            "p50_us": round(percentile(values, 0.5) * 1e6, 1),
            "p99_us": round(percentile(values, 0.99) * 1e6, 1),
            "tornadio_cpu_us_per_msg": round(tornadio_cpu / count * 1e6, 1),
            "redis_cpu_us_per_msg": round(redis_cpu / count * 1e6, 1)}


async def client(args, owner, other, pids):
    http = HTTPConnection(owner.port)
    await http.open()
    status, data = await http.request("GET", "%s//%d" % (RESOURCE, time.time() * 1000))
    http.close()
    if status != 200:
        raise RuntimeError("first poll answered %d" % status)
    session = Session(sio06_frames(data)[0])
    rounds = {"owner": [], "relayed": []}
    counter = [0]
    try:
        for _ in range(args.rounds):
            for path, process in (("owner", owner), ("relayed", other)):
                rounds[path].append(await measure(session, process.port, args.seconds,
                                                  args.size, pids, counter))
    finally:
        await session.leave()
    result = {}
    for path, measured in rounds.items():
        latencies = [value for latency, _, _ in measured for value in latency]
        per_round = [summary(*entry) for entry in measured]
        row = summary(latencies, sum(m[1] for m in measured), sum(m[2] for m in measured))
        row["p50_us_median_of_rounds"] = median([r["p50_us"] for r in per_round])
        result[path] = row
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per path (default 3)")
    parser.add_argument("--seconds", type=float, default=4.0,
                        help="seconds per path and round (default 4)")
    parser.add_argument("--size", type=int, default=32, help="message size (default 32)")
    parser.add_argument("--serve", metavar="REDIS_URL", help=argparse.SUPPRESS)
    parser.add_argument("--prefix", default="relay-bench", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.prefix)
        return
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(binary, os.X_OK):
        sys.exit("redis-server not found (scripts/setup.sh --services installs it)")
    redis_port = free_port()
    redis = subprocess.Popen([binary, "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--loglevel", "warning"],
                             stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    servers = []
    try:
        wait_port(redis_port)
        url = "redis://127.0.0.1:%d/0" % redis_port
        for _ in range(2):
            servers.append(Process([sys.executable, os.path.abspath(__file__), "--serve", url]))
        for server in servers:
            server.wait_ready()
        pids = {"tornadio": [server.proc.pid for server in servers], "redis": redis.pid}
        result = asyncio.run(client(args, servers[0], servers[1], pids))
    finally:
        for server in servers:
            server.stop()
        redis.terminate()
        redis.wait(5)
    print("1 xhr-polling client, %d-byte messages, %d rounds x %g s per path"
          % (args.size, args.rounds, args.seconds))
    print("%-9s %11s %8s %8s %22s %19s" % ("path", "round trips", "p50 us", "p99 us",
                                           "TornadIO CPU us/msg", "Redis CPU us/msg"))
    for path, row in result.items():
        print("%-9s %11d %8.0f %8.0f %22.1f %19.1f" % (
            path, row["round_trips"], row["p50_us"], row["p99_us"],
            row["tornadio_cpu_us_per_msg"], row["redis_cpu_us_per_msg"]))
    print(json.dumps({"result": result}))


if __name__ == "__main__":
    main()
