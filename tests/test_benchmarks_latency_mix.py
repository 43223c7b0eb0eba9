"""``loadgen.py --scenario latency-mix``: contenders in turns, failures kept apart.

Real benchmark servers on loopback, a port where nothing listens, one that
accepts connections but never answers, and one that stops answering mid-run:
the live contenders are measured, each failing one is named with its reason,
and the run still ends.
"""
import importlib.util
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter

import pytest

from tornadio import rfc6455

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO_ROOT, "benchmarks")


def load_loadgen():
    sys.path.insert(0, BENCH)
    try:
        spec = importlib.util.spec_from_file_location("bench_loadgen",
                                                      os.path.join(BENCH, "loadgen.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(BENCH)


@pytest.mark.parametrize("count", [2, 3, 4, 5])
def test_every_contender_follows_every_other_equally_often(count):
    cycle = load_loadgen().turn_cycle(count)
    assert Counter(cycle) == {index: count - 1 for index in range(count)}
    # Any whole cycle of consecutive turns, wherever it starts (after a warm-up).
    for start in range(len(cycle)):
        turns = [cycle[(start + offset) % len(cycle)] for offset in range(len(cycle) + 1)]
        predecessors = Counter(zip(turns, turns[1:]))
        assert set(predecessors) == {(a, b) for a in range(count) for b in range(count) if a != b}
        assert set(predecessors.values()) == {1}


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def start_server(kind, started):
    proc = subprocess.Popen([sys.executable, os.path.join(BENCH, "servers.py"), "--kind", kind],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    started.append(proc)
    with selectors.DefaultSelector() as selector:  # its ready line, or a bounded wait
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout=30):
            pytest.fail("servers.py --kind %s printed nothing in 30 s" % kind)
    line = proc.stdout.readline()
    if not line:
        pytest.fail("servers.py --kind %s exited before listening" % kind)
    return json.loads(line)


@pytest.fixture
def servers():
    started = []
    try:
        yield [start_server(kind, started) for kind in ("plain", "tornadio")]
    finally:
        for proc in started:
            stop(proc)


def stub_echo(listener, answers, echoed):
    """A WebSocket echo counting into ``echoed``. After ``answers`` (None: no
    limit) it closes without a word as soon as the generator pauses, that is
    once its turn is over."""
    listener.settimeout(20)
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    with conn:
        conn.settimeout(20)
        stream = conn.makefile("rb")
        headers = {}
        for line in iter(stream.readline, b"\r\n"):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        accept = rfc6455.accept_key(headers["sec-websocket-key"])
        conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        while True:
            if answers is not None and echoed[0] >= answers:
                conn.settimeout(0.05)
            try:
                head = stream.read(2)
            except socket.timeout:
                return  # between two of its turns
            if len(head) < 2 or head[0] & 0x0F == 8:
                return  # the generator is done
            size = head[1] & 0x7F  # its messages are short
            mask = stream.read(4)
            data = bytes(b ^ mask[i % 4] for i, b in enumerate(stream.read(size)))
            conn.sendall(bytes((0x81, len(data))) + data)
            echoed[0] += 1


def listening():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    return listener


def test_turns_measure_each_contender_and_name_the_failures(servers):
    plain, tornadio = servers
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    stalled = listening()  # the kernel completes the handshake; nobody ever answers
    quitter, counter = listening(), listening()
    quitter_echoed, counter_echoed = [0], [0]
    stubs = [threading.Thread(target=stub_echo, args=(quitter, 40, quitter_echoed), daemon=True),
             threading.Thread(target=stub_echo, args=(counter, None, counter_echoed), daemon=True)]
    for stub in stubs:
        stub.start()
    try:
        targets = ["plain,plain,%d,%d" % (plain["port"], plain["pid"]),
                   "dead,plain,%d,0" % dead_port,
                   "tornadio,tornadio,%d,%d" % (tornadio["port"], tornadio["pid"]),
                   "stalled,plain,%d,0" % stalled.getsockname()[1],
                   "quitter,plain,%d,0" % quitter.getsockname()[1],
                   "counter,plain,%d,0" % counter.getsockname()[1]]
        argv = [sys.executable, os.path.join(BENCH, "loadgen.py"), "--scenario", "latency-mix",
                "--duration", "0.6", "--warmup", "0", "--slice", "0.05", "--step-timeout", "1"]
        for target in targets:
            argv += ["--target", target]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    finally:
        for listener in (stalled, quitter, counter):
            listener.close()
        for stub in stubs:
            stub.join(timeout=30)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])["result"]

    assert sorted(result["contenders"]) == ["counter", "plain", "tornadio"]
    assert "ConnectionRefusedError" in result["failed"]["dead"]
    assert "TimeoutError" in result["failed"]["stalled"]
    # It closed between two of its turns: named at its next turn, not timed out.
    assert quitter_echoed[0] >= 40
    assert result["failed"]["quitter"].startswith("ConnectionError: connection closed")
    for name in ("plain", "tornadio", "counter"):
        run = result["contenders"][name]
        # Six contenders: five turns each per cycle; three cycles cover the 0.6 s.
        assert run["slices"] == 15, run
        assert run["seconds"] >= 0.9 * run["slices"] * run["slice_s"], run
        assert run["p50_us"] > 0 and 0 < run["generator_cpu_util"] <= 1.5, run
    for name in ("plain", "tornadio"):
        assert result["contenders"][name]["server_cpu_us_per_msg"] > 0
    # Every reply the counting server sent was its own: the first few of each
    # turn only settle it, the rest are the round trips measured.
    counted = result["contenders"]["counter"]
    settled = counted["settle_replies"] * counted["slices"]
    assert counter_echoed[0] == counted["round_trips"] + settled
    assert not any(stub.is_alive() for stub in stubs)
