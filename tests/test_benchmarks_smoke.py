"""The benchmark harness runs end to end: ``benchmarks/run.py --smoke``.

Only that it works is checked (exit 0, a JSON document with every scenario
and some traffic in each); never how fast anything was.
"""
import json
import os
import subprocess
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(REPO_ROOT, "benchmarks", "run.py")

SCENARIOS = ("latency", "echo", "fanout", "memory", "lag", "codec", "xhr_echo")


def test_smoke_run_writes_every_scenario(tmp_path):
    output = tmp_path / "smoke.json"
    proc = subprocess.run(
        [sys.executable, RUN, "--smoke", "--without-socketio", "--json-only",
         "--output", str(output)],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, "run.py --smoke failed:\n%s\n%s" % (
        proc.stdout[-2000:], proc.stderr[-4000:])
    document = json.loads(output.read_text())

    assert document["errors"] == []
    assert document["meta"]["preset"] == "smoke"
    for scenario in SCENARIOS:
        assert scenario in document["scenarios"], scenario

    scenarios = document["scenarios"]
    for scenario, contenders in (("latency", ("plain", "tornadio-ws")),
                                 ("echo", ("plain", "tornadio-ws")),
                                 ("fanout", ("plain", "tornadio-ws")),
                                 ("xhr_echo", ("tornadio-xhr",))):
        for contender in contenders:
            runs = scenarios[scenario]["contenders"][contender]["runs"]
            assert runs, (scenario, contender)
            counted = runs[0].get("messages", runs[0].get("delivered",
                                                          runs[0].get("round_trips")))
            assert counted > 0, (scenario, contender, runs[0])

    # The latency contenders took turns in one generator: each turn a ping-pong
    # of its own, timed on the generator's clock, with its own server's CPU.
    assert document["meta"]["latency_method"].startswith("turns of")
    for contender in ("plain", "tornadio-ws"):
        run = scenarios["latency"]["contenders"][contender]["runs"][0]
        assert run["round_trips"] >= run["slices"], run
        assert run["seconds"] >= 0.9 * run["slices"] * run["slice_s"], run
        assert run["server_cpu_us_per_msg"] > 0, run

    for contender in ("plain", "tornadio-ws"):
        memory = scenarios["memory"]["contenders"][contender]
        assert memory["steps"], contender
        assert all(step["open"] == step["target"] for step in memory["steps"]), memory
        assert scenarios["lag"]["contenders"][contender]["samples"] > 0

    cases = scenarios["codec"]["cases"]
    assert {case["text"] for case in cases} == {"ascii", "bmp", "astral"}
    assert {case["shape"] for case in cases} == {"single", "batch"}

    # The summary the table is printed from, and the target checks, are there too.
    assert document["table"]
    assert document["targets"]
    assert any(skip["contender"] == "socketio-ws" for skip in document["skipped"])
