"""Fan-out across two processes through Redis: how many messages/s reach clients.

    PYTHONPATH=. python tests/scaling/bench_fanout.py [--clients 100] [--messages 2000]

Starts redis-server and two scaling_node.py processes (like test_redis.py),
connects ``--clients`` websocket clients to each, then asks node 1 to
``send_all`` ``--messages`` messages in one go and times until every client of
both processes has all of them. Prints deliveries per second (messages x
clients / time), for node 1's own clients (local) and node 2's (via Redis).
The clients (``tornadio.testing``) run in this one Python process, so they
are part of what is measured: the figure is a floor for the servers.
"""
import argparse
import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scaling_clients import close_all, connect  # noqa: E402
from scaling_procs import RedisServer, control, find_binary, start_nodes  # noqa: E402


async def take(client, count, timeout):
    """Receive ``count`` messages: (their ``i`` in arrival order, when the last one came)."""
    numbers = []
    for _ in range(count):
        numbers.append((await client.receive(timeout=timeout))["i"])
    return numbers, time.monotonic()


def cpu_seconds(pid):
    """User + system CPU time of a process so far (Linux /proc)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


async def measure(nodes, clients_per_node, messages, size):
    groups = [[] for _ in nodes]
    takers = []
    try:
        for node, group in zip(nodes, groups):
            for _ in range(clients_per_node):
                client = await connect("websocket", node.port, timeout=30)
                group.append(client)
                await client.receive()  # the hello
        takers = [[asyncio.ensure_future(take(client, messages, 120)) for client in group]
                  for group in groups]
        cpu_before = [cpu_seconds(node.proc.pid) for node in nodes]
        start = time.monotonic()
        answer = await control(nodes[0].port, {"op": "send_all", "message": "x" * size,
                                               "count": messages}, timeout=120)
        assert all(answer["remote"]), "some messages were not published"
        taken = [await asyncio.gather(*group) for group in takers]
        cpu = [cpu_seconds(node.proc.pid) - before for node, before in zip(nodes, cpu_before)]
        results = []
        for name, group, used in zip(("local (node 1)", "via redis (node 2)"), taken, cpu):
            elapsed = max(done_at for _, done_at in group) - start
            for numbers, _ in group:
                assert numbers == list(range(messages)), "missing or out of order"
            results.append((name, len(group) * messages, elapsed, used))
        total = sum(len(group) for group in groups) * messages
        elapsed = max(done_at for group in taken for _, done_at in group) - start
        return results, (total, elapsed)
    finally:
        for taker in (taker for group in takers for taker in group):
            taker.cancel()
        await close_all([client for group in groups for client in group])


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
