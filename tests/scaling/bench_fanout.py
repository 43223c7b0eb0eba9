"""Fan-out across two processes through Redis: how many messages/s reach clients.

    PYTHONPATH=. python tests/scaling/bench_fanout.py [--clients 100] [--messages 2000]

Starts redis-server and two scaling_node.py processes (like test_redis.py),
connects ``--clients`` websocket clients to each, then asks node 1 to
``send_all`` ``--messages`` messages in one go and times until every client of
both processes has all of them. Prints deliveries per second (messages x
clients / time), for node 1's own clients (local) and node 2's (via Redis).
The clients run in this one Python process, so they are part of what is
measured: the figure is a floor for the servers.
"""
import argparse
import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scaling_clients import WSClient, close_all  # noqa: E402
from scaling_procs import RedisServer, control, find_binary, start_nodes  # noqa: E402


class CountingClient(WSClient):
    """Counts messages instead of queueing them; notes when the last one came."""

    expected = 0

    def _on_payload(self, payload):
        if self.sid is None:
            super()._on_payload(payload)
            return
        before = len(self.received)
        super()._on_payload(payload)
        while not self.messages.empty():
            self.messages.get_nowait()
        if before < self.expected <= len(self.received):
            self.done_at = time.monotonic()
            self.done.set()


def cpu_seconds(pid):
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


async def measure(nodes, clients_per_node, messages, size):
    groups = []
    for node in nodes:
        group = []
        for _ in range(clients_per_node):
            client = await CountingClient.connect(node.port)
            client.done = asyncio.Event()
            client.done_at = None
            group.append(client)
        groups.append(group)
    everyone = [client for group in groups for client in group]
    try:
        await asyncio.sleep(0.5)  # hellos in
        for client in everyone:
            client.received.clear()
            client.expected = messages
        cpu_before = [cpu_seconds(node.proc.pid) for node in nodes]
        start = time.monotonic()
        answer = await control(nodes[0].port, {"op": "send_all", "message": "x" * size,
                                               "count": messages}, timeout=120)
        assert all(answer["remote"]), "some messages were not published"
        await asyncio.wait_for(asyncio.gather(*(c.done.wait() for c in everyone)), 120)
        cpu = [cpu_seconds(node.proc.pid) - before for node, before in zip(nodes, cpu_before)]
        results = []
        for name, group, used in zip(("local (node 1)", "via redis (node 2)"), groups, cpu):
            elapsed = max(c.done_at for c in group) - start
            for c in group:
                got = [m["i"] for m in c.received]
                assert got == list(range(messages)), "missing or out of order"
            results.append((name, len(group) * messages, elapsed, used))
        total = len(everyone) * messages
        elapsed = max(c.done_at for c in everyone) - start
        return results, (total, elapsed)
    finally:
        await close_all(everyone)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100, help="websocket clients per process")
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--size", type=int, default=40, help="characters per message")
    args = parser.parse_args()
    binary = find_binary("redis-server")
    if binary is None:
        sys.exit("redis-server not found")
    tmpdir = tempfile.mkdtemp(prefix="tornadio-bench-")
    redis_server = RedisServer(tmpdir, binary)
    redis_server.start()
    nodes = []
    try:
        nodes = start_nodes(tmpdir, 2, redis_server.url, args=("--quiet", "--heartbeat", "30"))
        results, (total, elapsed) = asyncio.run(
            measure(nodes, args.clients, args.messages, args.size))
        print("%d messages of %d chars, %d websocket clients on each of 2 processes" % (
            args.messages, args.size, args.clients))
        for name, count, seconds, used in results:
            print("  %-20s %8d deliveries in %.2f s = %9.0f msg/s  (server CPU %.2f s)" % (
                name, count, seconds, count / seconds, used))
        print("  %-20s %8d deliveries in %.2f s = %9.0f msg/s" % (
            "both", total, elapsed, total / elapsed))
    finally:
        for node in nodes:
            node.stop()
        redis_server.stop()


if __name__ == "__main__":
    main()
