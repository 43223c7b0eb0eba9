"""``loadgen.py --scenario latency-mix``: contenders in turns, failures kept apart.

Real benchmark servers on loopback, a port where nothing listens, and one that
accepts connections but never answers: the two live contenders are measured,
each failing one is named with its reason, and the run still ends.
"""
import json
import os
import signal
import socket
import subprocess
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(REPO_ROOT, "benchmarks")


def start_server(kind):
    proc = subprocess.Popen([sys.executable, os.path.join(BENCH, "servers.py"), "--kind", kind],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    line = proc.stdout.readline()  # servers.py prints it once listening, or exits
    if not line:
        proc.kill()
        pytest.fail("servers.py --kind %s did not start" % kind)
    return proc, json.loads(line)


@pytest.fixture
def servers():
    started = []
    try:
        for kind in ("plain", "tornadio"):
            started.append(start_server(kind))
        yield [ready for _, ready in started]
    finally:
        for proc, _ in started:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=10)


def test_turns_measure_each_contender_and_name_the_failures(servers):
    plain, tornadio = servers
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        dead_port = closed.getsockname()[1]
    stalled = socket.socket()
    stalled.bind(("127.0.0.1", 0))
    stalled.listen(8)  # the kernel completes the handshake; nobody ever answers
    try:
        targets = ["plain,plain,%d,%d" % (plain["port"], plain["pid"]),
                   "dead,plain,%d,0" % dead_port,
                   "tornadio,tornadio,%d,%d" % (tornadio["port"], tornadio["pid"]),
                   "stalled,plain,%d,0" % stalled.getsockname()[1]]
        argv = [sys.executable, os.path.join(BENCH, "loadgen.py"), "--scenario", "latency-mix",
                "--duration", "0.6", "--warmup", "0.1", "--slice", "0.05",
                "--step-timeout", "1"]
        for target in targets:
            argv += ["--target", target]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
    finally:
        stalled.close()
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])["result"]

    assert sorted(result["contenders"]) == ["plain", "tornadio"]
    assert "ConnectionRefusedError" in result["failed"]["dead"]
    assert "TimeoutError" in result["failed"]["stalled"]
    for name in ("plain", "tornadio"):
        run = result["contenders"][name]
        assert run["slices"] == 12 and run["round_trips"] >= run["slices"], run
        assert run["seconds"] >= 0.9 * 0.6, run
        assert run["p50_us"] > 0 and run["server_cpu_us_per_msg"] > 0, run
