#!/usr/bin/env python3
"""TornadIO benchmarks: one entry point for every scenario and contender.

    python benchmarks/run.py                 default run (about 12 min on 2 cores)
    python benchmarks/run.py --quick         ~3 minutes, fewer/shorter rounds
    python benchmarks/run.py --long          more rounds, longer windows
    python benchmarks/run.py --smoke         tiny configuration for CI (about 1 min)
    python benchmarks/run.py --profile       also py-spy TornadIO on echo/fan-out

Each server runs in its own process on 127.0.0.1 (benchmarks/servers.py) and
is driven by a separate load-generator process (benchmarks/loadgen.py), one
per measurement. Contenders of a scenario run alternately, round after round,
and the table shows medians over the rounds with ratios against plain Tornado.
The websocket latency scenario goes further: in each round one generator
takes every contender in turns of 0.1 s, so that all of them sample the same
moments of a machine whose speed drifts (``--latency-sequential``: a whole
window each, as the other scenarios do).
Results go to benchmarks/results/<timestamp>.json (``--output`` to change).

Contenders
    plain         tornado.websocket.WebSocketHandler echo / fan-out loop
    tornadio-ws   TornadIO over websocket (-uvloop: the same on uvloop)
    socketio-ws   python-socketio, Tornado mode, over websocket; optional:
                  used when the interpreter (or --socketio-python) has it
    tornadio-bcast  fan-out only: TornadIO's own SocketConnection.broadcast()
    handlp-xhr/-jsonp    hand-written Tornado long-poll echo (RequestHandler)
    barelp-xhr/-jsonp    the same echo on a bare HTTPMessageDelegate: the floor
    tornadio-xhr/-jsonp  TornadIO over xhr-polling / jsonp-polling (lean path)
    node-xhr/-jsonp      socket.io 0.6.18 on node (benchmarks/node_sio06.js)

Scenarios
    latency    websocket round-trip p50/p99, one client, 32-byte messages
    echo       websocket echo throughput, N clients with one message in flight each
    fanout     each message broadcast to all N clients: delivered msgs/s
    xhr_latency, jsonp_latency   one polling client ping-pong
    xhr_echo, jsonp_echo         polling echo throughput, N clients
    memory     server RSS per idle websocket session (heartbeats on)
    lag        IOLoop lag p99 while the largest count of sessions is held
    scale_ws   50,000 idle websockets (or the file limit, at the same heartbeat rate)
    scale_poll 20,000 polling sessions holding long polls (or the file limit)
    codec      tornadio.proto encode/decode MB/s (in-process, no server)

On a machine with two CPUs or more (and ``taskset``), every server runs on
CPU 0 and every load generator on the others (``--no-pin`` to share them
all): a server then has a core of its own, as in production, and the
generator's work does not land on the server's core. Every contender is
measured alike.

Ratios are against each scenario's baseline (plain Tornado; the hand-written
long poll for the polling scenarios); the targets of issue 13 follow the table.

Every wait is bounded; every child process is stopped at the end, on errors
and on Ctrl-C too. A run exits 1 when any measurement failed (the JSON is
written anyway, with the errors in it).
"""
import argparse
import datetime
import hashlib
import json
import os
import platform
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import BENCH_DIR, REPO_ROOT, median, raise_nofile  # noqa: E402

PRESETS = {
    "smoke": dict(repeats=1, duration=1.0, warmup=0.2, clients=5, hold_counts=[100, 200],
                  lag_seconds=1.0, codec_seconds=0.005, codec_repeats=1,
                  scale_ws=300, scale_poll=200, poll_timeout=2.0),
    "quick": dict(repeats=1, duration=1.5, warmup=0.3, clients=50, hold_counts=[1000, 3000],
                  lag_seconds=3.0, codec_seconds=0.02, codec_repeats=1,
                  scale_ws=5000, scale_poll=3000, poll_timeout=5.0),
    "default": dict(repeats=3, duration=3.0, warmup=0.5, clients=50,
                    hold_counts=[2000, 10000], lag_seconds=13.0, codec_seconds=0.08,
                    codec_repeats=3, scale_ws=50000, scale_poll=20000, poll_timeout=20.0),
    "long": dict(repeats=5, duration=8.0, warmup=1.0, clients=50, hold_counts=[2000, 10000],
                 lag_seconds=30.0, codec_seconds=0.3, codec_repeats=5,
                 scale_ws=50000, scale_poll=20000, poll_timeout=20.0),
}

SCENARIOS = ("latency", "echo", "fanout", "memory", "lag", "codec", "xhr_echo",
             "xhr_latency", "jsonp_echo", "jsonp_latency", "scale_ws", "scale_poll")

#: Idle websocket sessions the issue's scale target names; the run holds as
#: many as the file limit allows and keeps the heartbeat *rate* of this many.
SCALE_WS_TARGET = 50000
SCALE_POLL_TARGET = 20000

# contender -> (server, load-generator dialect, transport or None for WebSocket)
CONTENDERS = {
    "plain": ("plain", "plain", None),
    "tornadio-ws": ("tornadio", "tornadio", None),
    "tornadio-ws-uvloop": ("tornadio-uvloop", "tornadio", None),
    "socketio-ws": ("socketio", "socketio", None),
    "tornadio-bcast": ("tornadio", "tornadio", None),
    "tornadio-xhr": ("tornadio", "tornadio", "xhr-polling"),
    "tornadio-xhr-uvloop": ("tornadio-uvloop", "tornadio", "xhr-polling"),
    "handlp-xhr": ("handlp", "tornadio", "xhr-polling"),
    "barelp-xhr": ("barelp", "tornadio", "xhr-polling"),
    "node-xhr": ("node", "tornadio", "xhr-polling"),
    "tornadio-jsonp": ("tornadio", "tornadio", "jsonp-polling"),
    "handlp-jsonp": ("handlp", "tornadio", "jsonp-polling"),
    "barelp-jsonp": ("barelp", "tornadio", "jsonp-polling"),
    "node-jsonp": ("node", "tornadio", "jsonp-polling"),
}
#: Contenders that need a non-default path, and the server variant providing it.
VARIANT_PATHS = {"tornadio-bcast": ("bcast", "/bcast/websocket")}
#: The contender every ratio of a scenario is taken against.
BASELINES = {"xhr_echo": "handlp-xhr", "xhr_latency": "handlp-xhr",
             "jsonp_echo": "handlp-jsonp", "jsonp_latency": "handlp-jsonp"}
#: Polling scenarios: transport, the contenders' suffix, clients (None: the preset's).
POLLING = {"xhr_echo": ("xhr", None), "xhr_latency": ("xhr", 1),
           "jsonp_echo": ("jsonp", None), "jsonp_latency": ("jsonp", 1)}

MESSAGE_SIZE = 32
#: Seconds each contender of the latency scenario runs before the next takes its turn.
LATENCY_SLICE = 0.1
PROFILE_SECONDS = 4.0

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class BenchError(RuntimeError):
    pass


# -- child processes -----------------------------------------------------------
#: CPU lists (taskset syntax) for servers and load generators; None: unpinned.
PINNING = {"taskset": None, "server": None, "load": None}


def _siblings(cpu):
    """The hardware threads sharing ``cpu``'s core (itself included), when Linux says."""
    path = "/sys/devices/system/cpu/cpu%d/topology/thread_siblings_list" % cpu
    try:
        with open(path) as listing:
            text = listing.read().strip()
    except OSError:
        return {cpu}
    cpus = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def plan_pinning(enabled):
    """Servers on the first CPU this process may use, load generators on the others.

    The server's SMT siblings are left out of the load set when other cores
    remain, so that the server has a core to itself.
    """
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    taskset = shutil.which("taskset")
    if not enabled or len(usable) < 2 or taskset is None:
        return
    server = usable[0]
    load = [cpu for cpu in usable[1:] if cpu not in _siblings(server)] or usable[1:]
    PINNING.update(taskset=taskset, server=str(server), load=",".join(str(cpu) for cpu in load))


class Child:
    """A child process in its own session, talking JSON lines on stdout."""

    registry = []

    def __init__(self, name, argv, log_dir, env=None, cpus=None):
        self.name = name
        if cpus:
            argv = [PINNING["taskset"], "-c", cpus] + list(argv)
        self.log_path = os.path.join(log_dir, "%s.log" % name)
        self._log = open(self.log_path, "a")
        self._log.write("$ %s\n" % " ".join(argv))
        self._log.flush()
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
            start_new_session=True, text=True, bufsize=1, env=env, cwd=REPO_ROOT)
        Child.registry.append(self)
        self._lines = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def read_json(self, timeout):
        """The next JSON line; BenchError on timeout or exit."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError("%s: no answer within %.0f s%s"
                                 % (self.name, timeout, self.tail()))
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                try:
                    code = self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    code = "?"
                raise BenchError("%s exited (%s) before answering%s"
                                 % (self.name, code, self.tail()))
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    pass
            self._log.write("[stdout] %s\n" % line)

    def send_line(self, text="go"):
        try:
            self.proc.stdin.write(text + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass

    def tail(self, lines=8):
        try:
            self._log.flush()
            with open(self.log_path, errors="replace") as log:
                text = log.read().strip().splitlines()[-lines:]
        except OSError:
            return ""
        return ("\n    " + "\n    ".join(text)) if text else ""

    def stop(self, grace=2.0):
        """EOF on stdin, then SIGTERM, then SIGKILL: always bounded."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=grace)
                except subprocess.TimeoutExpired:
                    self._signal(signal.SIGKILL)
                    self.proc.wait(timeout=5)
        if not self._log.closed:
            self._log.close()
        if self in Child.registry:
            Child.registry.remove(self)

    def _signal(self, signum):
        try:
            # Our child leads its own process group (start_new_session).
            os.killpg(self.proc.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    @classmethod
    def stop_all(cls):
        for child in list(cls.registry):
            try:
                child.stop(grace=1.0)
            except Exception as exc:  # keep going: every child must be stopped
                print("warning: stopping %s: %s" % (child.name, exc), file=sys.stderr)


class Server:
    def __init__(self, kind, python, log_dir, tag="", nodelay=True, extra=()):
        self.kind = kind
        self.variants = []
        if kind == "node":
            argv = [shutil.which("node") or "node", os.path.join(BENCH_DIR, "node_sio06.js")]
        else:
            base, _, loop = kind.partition("-")
            argv = [python, os.path.join(BENCH_DIR, "servers.py"), "--kind", base]
            if loop:
                argv += ["--loop", loop]
            if nodelay:
                argv.append("--nodelay")
            argv += list(extra)
        self.child = Child("server-%s%s" % (kind, tag), argv, log_dir, cpus=PINNING["server"])
        ready = self.child.read_json(timeout=30)
        self.port = ready["port"]
        self.pid = ready["pid"]
        self.variants = ready.get("variants", [])

    def stats(self, timeout=20, **query):
        url = "http://127.0.0.1:%d/_bench/stats" % self.port
        if query:
            url += "?" + "&".join("%s=%s" % item for item in query.items())
        with _NO_PROXY.open(url, timeout=timeout) as response:
            return json.loads(response.read().decode("utf-8"))

    def stop(self):
        self.child.stop()


# -- the run -------------------------------------------------------------------
class Bench:
    def __init__(self, args, config):
        self.args = args
        self.cfg = config
        self.python = sys.executable
        self.started = datetime.datetime.now()
        self.clock_start = time.monotonic()
        self.git_start = _git_revision()
        self.source_start = _source_digest()
        stamp = self.started.strftime("%Y%m%d-%H%M%S")
        self.output = args.output or os.path.join(BENCH_DIR, "results", "%s.json" % stamp)
        self.log_dir = os.path.join(os.path.dirname(os.path.abspath(self.output)),
                                    "%s-logs" % os.path.splitext(os.path.basename(self.output))[0])
        os.makedirs(self.log_dir, exist_ok=True)
        self.errors = []
        self.skipped = []
        self.job_counter = Counter()
        self.scenarios = {name: {"contenders": {}} for name in args.scenarios}
        self.profiles = {}
        self.socketio_python = self._find_socketio()
        self.uvloop_python = self._find_optional("uvloop", "tornadio-*-uvloop")
        self.node = self._find_node()
        self.contenders = ["plain", "tornadio-ws"]
        if self.uvloop_python:
            self.contenders.append("tornadio-ws-uvloop")
        if self.socketio_python:
            self.contenders.append("socketio-ws")

    # -- setup ---------------------------------------------------------------
    def _find_socketio(self):
        args = self.args
        if args.without_socketio:
            self.skipped.append({"contender": "socketio-ws", "reason": "--without-socketio"})
            return None
        candidates = [args.socketio_python] if args.socketio_python else [
            self.python, os.path.join(BENCH_DIR, ".venv", "bin", "python")]
        for python in candidates:
            if python and os.path.exists(python) and _has_module(python, "socketio"):
                return python
        reason = ("python-socketio is not installed in %s" % " or ".join(
            c for c in candidates if c))
        if args.with_socketio:
            raise BenchError(reason + " (--with-socketio); pip install -r "
                             "benchmarks/requirements.txt")
        self.skipped.append({"contender": "socketio-ws", "reason": reason +
                             "; pip install -r benchmarks/requirements.txt to include it"})
        return None

    def _find_optional(self, module, contenders):
        """An interpreter having ``module`` (this one, or benchmarks/.venv's), or None."""
        for python in (self.python, os.path.join(BENCH_DIR, ".venv", "bin", "python")):
            if os.path.exists(python) and _has_module(python, module):
                return python
        self.skipped.append({"contender": contenders, "reason": "%s is not installed; pip "
                             "install -r benchmarks/requirements.txt to include it" % module})
        return None

    def _find_node(self):
        node = shutil.which("node")
        package = os.path.join(REPO_ROOT, "node_modules", "socket.io", "package.json")
        if node and os.path.exists(package):
            return node
        self.skipped.append({"contender": "node-*", "reason": "node or node_modules/socket.io "
                             "(0.6.18) not found"})
        return None

    def polling_contenders(self, suffix):
        """Contenders of a polling scenario, baseline (hand-written long poll) first."""
        names = ["handlp-" + suffix, "barelp-" + suffix, "tornadio-" + suffix]
        if suffix == "xhr" and self.uvloop_python:
            names.append("tornadio-xhr-uvloop")
        if self.node:
            names.append("node-" + suffix)
        return names

    def server(self, kind, tag="", extra=()):
        python = self.python
        if kind == "socketio":
            python = self.socketio_python
        elif kind.endswith("-uvloop"):
            python = self.uvloop_python
        return Server(kind, python, self.log_dir, tag, nodelay=not self.args.tornado_defaults,
                      extra=extra)

    def say(self, text):
        if not self.args.json_only:
            print(text, flush=True)

    # -- load generator ------------------------------------------------------
    def loadgen(self, scenario, dialect, port, extra=(), timeout=None):
        self.job_counter[(scenario, dialect)] += 1
        name = "loadgen-%s-%s-%d" % (scenario, dialect, self.job_counter[(scenario, dialect)])
        argv = [self.python, os.path.join(BENCH_DIR, "loadgen.py"), "--scenario", scenario,
                "--size", str(MESSAGE_SIZE), "--duration", str(self.cfg["duration"]),
                "--warmup", str(self.cfg["warmup"])]
        if port is not None:
            argv += ["--contender", dialect, "--port", str(port)]
        child = Child(name, argv + list(extra), self.log_dir, cpus=PINNING["load"])
        return child, (timeout or self.cfg["duration"] + self.cfg["warmup"] + 30)

    def measure(self, scenario, contender, server, clients):
        _, dialect, transport = CONTENDERS[contender]
        load_scenario = "xhr-echo" if transport else scenario
        extra = ["--clients", str(clients), "--server-pid", str(server.pid)]
        if transport:
            extra += ["--transport", transport]
        if contender in VARIANT_PATHS:
            extra += ["--path", VARIANT_PATHS[contender][1]]
        child, timeout = self.loadgen(load_scenario, dialect, server.port, extra)
        try:
            return child.read_json(timeout)["result"]
        finally:
            child.stop()

    # -- phases --------------------------------------------------------------
    def run(self):
        want = set(self.args.scenarios)
        if "codec" in want:
            self.phase_codec()
        if want & ({"latency", "echo", "fanout"} | set(POLLING)):
            self.phase_traffic(want)
        if want & {"memory", "lag"}:
            self.phase_hold(want)
        if "scale_ws" in want:
            self.phase_scale_ws()
        if "scale_poll" in want:
            self.phase_scale_poll()

    def phase_codec(self):
        self.say("codec: tornadio.proto encode/decode ...")
        child = Child("codec", [self.python, os.path.join(BENCH_DIR, "codecbench.py"),
                                "--seconds", str(self.cfg["codec_seconds"]),
                                "--repeats", str(self.cfg["codec_repeats"])], self.log_dir)
        try:
            result = child.read_json(timeout=240)["result"]
            self.scenarios["codec"].update(result)
        except BenchError as exc:
            self.error("codec", "tornadio", exc)
        finally:
            child.stop()

    def phase_traffic(self, want):
        servers = {}
        plan = []  # (scenario key, contenders, clients)
        traffic = list(self.contenders)
        if "latency" in want:
            plan.append(("latency", list(traffic), 1))
        if "echo" in want:
            plan.append(("echo", list(traffic), self.cfg["clients"]))
        if "fanout" in want:
            plan.append(("fanout", [c for c in traffic if not c.endswith("-uvloop")],
                         self.cfg["clients"]))
        for key, (suffix, clients) in POLLING.items():
            if key in want:
                plan.append((key, self.polling_contenders(suffix), clients or self.cfg["clients"]))
        try:
            for kind in sorted({CONTENDERS[c][0] for _, cs, _ in plan for c in cs}):
                try:
                    servers[kind] = self.server(kind)
                except BenchError as exc:
                    self.error("server", kind, exc)
            plan = [(scenario, [c for c in contenders if CONTENDERS[c][0] in servers], clients)
                    for scenario, contenders, clients in plan]
            if "fanout" in want and "tornadio" in servers:
                fanout = [contenders for scenario, contenders, _ in plan if scenario == "fanout"]
                if "bcast" in servers["tornadio"].variants:
                    fanout[0].append("tornadio-bcast")
                else:
                    self.skipped.append({"contender": "tornadio-bcast", "reason":
                                         "this TornadIO has no SocketConnection.broadcast()"})
            for scenario, contenders, clients in plan:
                if not contenders:
                    continue
                if scenario == "latency" and not self.args.latency_sequential:
                    self.latency_interleaved(contenders, servers)
                    continue
                for round_index in range(self.cfg["repeats"]):
                    shift = round_index % len(contenders)
                    order = contenders[shift:] + contenders[:shift]
                    for contender in order:
                        key = scenario
                        if key not in self.scenarios:
                            self.scenarios[key] = {"contenders": {}}
                        runs = self.scenarios[key]["contenders"].setdefault(
                            contender, {"runs": []})["runs"]
                        self.say("%-13s round %d/%d  %-19s ..." % (
                            key, round_index + 1, self.cfg["repeats"], contender))
                        try:
                            result = self.measure(scenario, contender,
                                                  servers[CONTENDERS[contender][0]], clients)
                            runs.append(result)
                        except BenchError as exc:
                            self.error(key, contender, exc)
            if self.args.profile:
                self.phase_profile(servers)
        finally:
            for server in servers.values():
                server.stop()

    def latency_interleaved(self, contenders, servers):
        """Each round, one generator taking the contenders in turns (0.1 s by default).

        One contender measured alone for seconds may land wholly in a period
        where the VM runs slowly, and the p50 ratio then measures the VM; in
        turns, every contender samples the same periods. A contender that
        fails is an error of its own; the others' runs still count.
        """
        entries = self.scenarios.setdefault("latency", {"contenders": {}})["contenders"]
        for round_index in range(self.cfg["repeats"]):
            shift = round_index % len(contenders)
            order = contenders[shift:] + contenders[:shift]
            targets = []
            for contender in order:
                server = servers[CONTENDERS[contender][0]]
                spec = [contender, CONTENDERS[contender][1], str(server.port), str(server.pid)]
                if contender in VARIANT_PATHS:
                    spec.append(VARIANT_PATHS[contender][1])
                targets += ["--target", ",".join(spec)]
            self.say("latency       round %d/%d  %s, in turns ..." % (
                round_index + 1, self.cfg["repeats"], " ".join(order)))
            # A stalled contender is dropped after 5 s, and the others go on.
            child, timeout = self.loadgen("latency-mix", "mix", None, targets + [
                "--slice", str(self.args.latency_slice), "--step-timeout", "5"])
            timeout += (self.cfg["duration"] + self.cfg["warmup"] + 15) * (len(order) - 1)
            try:
                result = child.read_json(timeout)["result"]
            except BenchError as exc:
                self.error("latency", "+".join(order), exc)
                continue
            finally:
                child.stop()
            for contender, reason in sorted(result["failed"].items()):
                self.error("latency", contender, BenchError(reason))
            for contender, run in result["contenders"].items():
                entries.setdefault(contender, {"runs": []})["runs"].append(run)

    def phase_profile(self, servers):
        pyspy = shutil.which("py-spy") or os.path.join(os.path.dirname(self.python), "py-spy")
        if not os.path.exists(pyspy):
            self.profiles["skipped"] = "py-spy not found (pip install py-spy)"
            return
        server = servers.get("tornadio")
        if server is None:
            return
        for scenario in ("echo", "fanout"):
            out = os.path.join(self.log_dir, "profile-tornadio-%s.txt" % scenario)
            self.say("profile  tornadio-ws %s with py-spy ..." % scenario)
            spy = Child("py-spy-%s" % scenario, [
                pyspy, "record", "--pid", str(server.pid), "--duration",
                str(int(PROFILE_SECONDS)), "--rate", "500", "--format", "raw",
                "--output", out, "--nonblocking"], self.log_dir)
            child, timeout = self.loadgen(scenario, "tornadio", server.port, [
                "--clients", str(self.cfg["clients"]), "--duration", str(PROFILE_SECONDS),
                "--warmup", "0.1"])
            try:
                child.read_json(timeout + PROFILE_SECONDS)
            except BenchError as exc:
                self.error("profile", scenario, exc)
            finally:
                child.stop()
            try:
                spy.proc.wait(timeout=PROFILE_SECONDS + 15)
            except subprocess.TimeoutExpired:
                pass
            spy.stop()
            self.profiles[scenario] = summarise_profile(out)

    def phase_hold(self, want):
        counts = self.cfg["hold_counts"]
        raise_nofile(max(counts) + 1000)
        for contender in [c for c in self.contenders if not c.endswith("-uvloop")]:
            self.say("memory   %-13s idle sessions %s ..." % (contender, counts))
            memory, lag = self._hold(contender, counts, "-hold",
                                     self.cfg["lag_seconds"] if "lag" in want else None)
            if lag is not None:
                self.scenarios["lag"]["contenders"][contender] = lag
            if "memory" in want:
                self.scenarios["memory"]["contenders"][contender] = memory

    def scale_counts(self):
        """(websocket, polling) session counts the file limit allows for the scale runs."""
        limit = raise_nofile()
        room = limit - 500  # the server's and generator's other descriptors
        return min(self.cfg["scale_ws"], room), min(self.cfg["scale_poll"], room), limit

    def phase_scale_ws(self):
        count, _, limit = self.scale_counts()
        # The heartbeat rate of SCALE_WS_TARGET sessions at the default 12 s interval.
        interval = max(0.5, round(12.0 * count / SCALE_WS_TARGET, 3))
        seconds = max(self.cfg["lag_seconds"], 2.5 * interval)
        entry = self.scenarios["scale_ws"]
        entry.update({"sessions_wanted": self.cfg["scale_ws"], "file_limit": limit,
                      "sessions": count, "heartbeat_interval": interval,
                      "heartbeats_per_s": round(count / interval, 1)})
        if count < self.cfg["scale_ws"]:
            entry["note"] = ("file limit %d (hard): %d sessions held, heartbeat_interval %.2f s "
                             "keeps the heartbeat rate of %d" % (limit, count, interval,
                                                                 self.cfg["scale_ws"]))
        for contender in ("plain", "tornadio-ws"):
            self.say("scale_ws %-13s %d idle sessions, heartbeats every %.2f s ..."
                     % (contender, count, interval))
            extra = ["--heartbeat-interval", str(interval)] if contender != "plain" else []
            memory, lag = self._hold(contender, [count], "-scale", seconds, extra)
            entry["contenders"][contender] = {"memory": memory, "lag": lag}

    def phase_scale_poll(self):
        _, count, limit = self.scale_counts()
        timeout = self.cfg["poll_timeout"]
        window = 1.5 * timeout + 2
        entry = self.scenarios["scale_poll"]
        entry.update({"sessions_wanted": self.cfg["scale_poll"], "file_limit": limit,
                      "sessions": count, "poll_timeout": timeout, "window_s": window})
        if count < self.cfg["scale_poll"]:
            entry["note"] = "file limit %d (hard): %d polling sessions held" % (limit, count)
        contender = "tornadio-xhr"
        self.say("scale_poll %s: %d sessions holding long polls (timeout %.0f s) for %.0f s ..."
                 % (contender, count, timeout, window))
        server = hold = None
        try:
            server = self.server("tornadio", "-scale-poll", extra=[
                "--poll-timeout", str(timeout)])
            hold, _ = self.loadgen("poll-hold", "tornadio", server.port, [
                "--counts", str(count), "--concurrency", "100", "--poll-timeout", str(timeout),
                "--step-timeout", str(max(60, count / 100))])
            opened = hold.read_json(timeout=max(90, count / 80))
            if opened["failures"]:
                raise BenchError("%d of %d polling sessions failed to open: %s" % (
                    opened["failures"], opened["target"], opened["failure_sample"]))
            hold.send_line("measure")
            lag = self._measure_lag(server, opened["open"], window)
            hold.send_line("report")
            result = hold.read_json(timeout=60)["result"]
            result["lag"] = lag
            result["connect_seconds"] = opened["seconds"]
            entry["contenders"][contender] = result
        except (BenchError, OSError, KeyError, ValueError) as exc:
            self.error("scale_poll", contender, exc)
        finally:
            if hold is not None:
                hold.stop()
            if server is not None:
                server.stop()

    def _hold(self, contender, counts, tag, lag_seconds, server_extra=()):
        """Hold ``counts`` idle sessions in steps: (memory steps, lag or None)."""
        kind, dialect, _ = CONTENDERS[contender]
        server = None
        hold = None
        memory = {"steps": []}
        lag = None
        try:
            server = self.server(kind, tag, extra=server_extra)
            # Warm up (imports, first-connection allocations), then the baseline.
            warm, timeout = self.loadgen("echo", dialect, server.port, [
                "--clients", "2", "--duration", "0.3", "--warmup", "0.1"])
            try:
                warm.read_json(timeout)
            finally:
                warm.stop()
            time.sleep(0.3)
            base = server.stats(gc=1)
            memory["baseline_rss_kb"] = base["rss_kb"]
            hold, _ = self.loadgen("hold", dialect, server.port, [
                "--counts", ",".join(map(str, counts)), "--concurrency", "100",
                "--step-timeout", str(max(60, max(counts) / 100))])
            for _ in counts:
                step = hold.read_json(timeout=max(90, max(counts) / 80))
                opened = step["open"]
                sessions = self._wait_sessions(server, opened)
                stats = server.stats(gc=1)
                grown = stats["rss_kb"] - base["rss_kb"]
                memory["steps"].append({
                    "target": step["target"], "open": opened, "server_sessions": sessions,
                    "failures": step["failures"], "failure_sample": step["failure_sample"],
                    "connect_seconds": step["seconds"], "rss_kb": stats["rss_kb"],
                    "per_session_kb": round(grown / opened, 2) if opened else None,
                    "generator_rss_kb": step["generator_rss_kb"]})
                if step["failures"]:
                    raise BenchError("%d of %d sessions failed to open: %s" % (
                        step["failures"], step["target"], step["failure_sample"]))
                hold.send_line("next")
            steps = memory["steps"]
            if len(steps) >= 2 and steps[-1]["open"] > steps[0]["open"]:
                memory["marginal_per_session_kb"] = round(
                    (steps[-1]["rss_kb"] - steps[0]["rss_kb"])
                    / (steps[-1]["open"] - steps[0]["open"]), 2)
            if lag_seconds is not None:
                lag = self._measure_lag(server, steps[-1]["open"] if steps else 0, lag_seconds)
            hold.send_line("close")
            final = hold.read_json(timeout=60)["result"]
            if lag is not None:
                lag.update({"heartbeats_echoed": final["heartbeats_echoed_while_held"],
                            "pings_answered": final["pings_answered_while_held"],
                            "alive_at_end": final["alive_at_end"]})
        except (BenchError, OSError, KeyError, ValueError) as exc:
            self.error("memory" if tag == "-hold" else "scale_ws", contender, exc)
        finally:
            if hold is not None:
                hold.stop()
            if server is not None:
                server.stop()
        return memory, lag

    def _wait_sessions(self, server, expected, timeout=20):
        deadline = time.monotonic() + timeout
        while True:
            sessions = server.stats()["sessions"]
            if sessions >= expected or time.monotonic() > deadline:
                return sessions
            time.sleep(0.2)

    def _measure_lag(self, server, sessions, seconds):
        self.say("lag      holding %d sessions for %.0f s ..." % (sessions, seconds))
        before = server.stats(lag="start")
        time.sleep(seconds)
        stats = server.stats(lag="stop")
        lag = dict(stats["lag"] or {})
        lag.update({
            "sessions": stats["sessions"], "held_seconds": seconds,
            "server_cpu_util": round((stats["cpu_s"] - before["cpu_s"]) / seconds, 3),
            "gc_collections": [b - a for a, b in zip(before["gc_collections"],
                                                     stats["gc_collections"])],
            "loadavg": _loadavg()})
        return lag

    def error(self, scenario, contender, exc):
        message = "%s/%s: %s" % (scenario, contender, exc)
        self.errors.append(message)
        print("ERROR " + message, file=sys.stderr, flush=True)

    # -- results -------------------------------------------------------------
    def summarise(self):
        cpu = "server_cpu_us_per_msg"
        for key, metrics in (("latency", ("p50_us", "p99_us", cpu)),
                             ("echo", ("msgs_per_s", cpu)), ("fanout", ("msgs_per_s", cpu)),
                             ("xhr_echo", ("msgs_per_s", cpu, "p50_us")),
                             ("jsonp_echo", ("msgs_per_s", cpu, "p50_us")),
                             ("xhr_latency", ("p50_us", "p99_us", cpu)),
                             ("jsonp_latency", ("p50_us", "p99_us", cpu))):
            for entry in self.scenarios.get(key, {}).get("contenders", {}).values():
                for metric in metrics:
                    entry[metric] = median([run.get(metric) for run in entry["runs"]])

    def table(self):
        """Every measured row with its ratio against the scenario's baseline."""
        rows = []
        sc = self.scenarios

        def value(key, contender, metric):
            return sc.get(key, {}).get("contenders", {}).get(contender, {}).get(metric)

        def add(key, metric, unit, contender, better="higher", note=""):
            baseline = BASELINES.get(key, "plain")
            val = value(key, contender, metric)
            base = value(key, baseline, metric)
            ratio = (val / base) if (val is not None and base) else None
            rows.append({"scenario": key, "metric": metric, "unit": unit,
                         "contender": contender, "median": val, "baseline": baseline,
                         "ratio": round(ratio, 3) if ratio is not None else None,
                         "better": better, "note": note})

        cpu = "server_cpu_us_per_msg"
        for key in ("latency", "xhr_latency", "jsonp_latency"):
            for contender in sc.get(key, {}).get("contenders", {}):
                add(key, "p50_us", "us", contender, better="lower")
                add(key, "p99_us", "us", contender, better="lower")
                add(key, cpu, "us", contender, better="lower", note="server CPU per round trip")
        for key in ("echo", "xhr_echo", "jsonp_echo"):
            for contender in sc.get(key, {}).get("contenders", {}):
                add(key, "msgs_per_s", "msg/s", contender)
                add(key, cpu, "us", contender, better="lower")
        for contender in sc.get("fanout", {}).get("contenders", {}):
            add("fanout", "msgs_per_s", "msg/s", contender, note="delivered" + (
                ", conn.broadcast()" if contender == "tornadio-bcast" else ""))
            add("fanout", cpu, "us", contender, better="lower", note="per delivered message")
        for contender, mem in sc.get("memory", {}).get("contenders", {}).items():
            base_steps = sc["memory"]["contenders"].get("plain", {}).get("steps", [])
            for index, step in enumerate(mem.get("steps", [])):
                base = base_steps[index]["per_session_kb"] if index < len(base_steps) else None
                val = step["per_session_kb"]
                rows.append({"scenario": "memory", "metric": "kb_per_session@%d" % step["open"],
                             "unit": "KiB", "contender": contender, "median": val,
                             "baseline": "plain",
                             "ratio": round(val / base, 3) if val and base else None,
                             "better": "lower", "note": "RSS growth / sessions"})
        for contender in sc.get("lag", {}).get("contenders", {}):
            entry = sc["lag"]["contenders"][contender]
            note = "%s sessions" % entry.get("sessions")
            if entry.get("heartbeats_echoed"):
                note += ", %d heartbeats echoed" % entry["heartbeats_echoed"]
            if entry.get("pings_answered"):
                note += ", %d pings answered" % entry["pings_answered"]
            add("lag", "p99_ms", "ms", contender, better="lower", note=note)
        scale = sc.get("scale_ws", {})
        for contender, entry in scale.get("contenders", {}).items():
            steps = entry.get("memory", {}).get("steps", [])
            base = scale["contenders"].get("plain", {}).get("memory", {}).get("steps", [])
            if steps:
                val = steps[-1]["per_session_kb"]
                ref = base[-1]["per_session_kb"] if base else None
                rows.append({"scenario": "scale_ws", "metric": "kb_per_session@%d"
                             % steps[-1]["open"], "unit": "KiB", "contender": contender,
                             "median": val, "baseline": "plain",
                             "ratio": round(val / ref, 3) if val and ref else None,
                             "better": "lower", "note": "heartbeats every %ss"
                             % scale.get("heartbeat_interval")})
            lag = entry.get("lag") or {}
            rows.append({"scenario": "scale_ws", "metric": "lag_p99_ms", "unit": "ms",
                         "contender": contender, "median": lag.get("p99_ms"), "baseline": None,
                         "ratio": None, "better": "lower", "note": "%s heartbeats echoed"
                         % lag.get("heartbeats_echoed")})
        poll = sc.get("scale_poll", {}).get("contenders", {}).get("tornadio-xhr")
        if poll:
            rows.append({"scenario": "scale_poll", "metric": "lag_p99_ms", "unit": "ms",
                         "contender": "tornadio-xhr", "median": (poll.get("lag") or {}).get(
                             "p99_ms"), "baseline": None, "ratio": None, "better": "lower",
                         "note": "%d sessions holding polls" % poll["sessions"]})
            rows.append({"scenario": "scale_poll", "metric": "held_s p50/p99/max", "unit": "s",
                         "contender": "tornadio-xhr", "median": poll.get("held_p99_s"),
                         "baseline": None, "ratio": None, "better": "lower",
                         "note": "%s answered: %s/%s/%s s held (timeout %s s); %d late, %d "
                         "early, %d overdue" % (
                             poll["polls_answered"], poll["held_p50_s"], poll["held_p99_s"],
                             poll["held_max_s"], poll["poll_timeout_s"], poll["answered_late"],
                             poll["answered_early"], poll["still_held_overdue"])})
        codec = sc.get("codec", {})
        for case in codec.get("cases", []):
            for op in ("encode", "decode"):
                rows.append({"scenario": "codec", "metric": "%s %s %s %d" % (
                    op, case["text"], case["shape"], case["chars"]), "unit": "MB/s",
                    "contender": "tornadio", "median": case["%s_mb_s" % op], "baseline": None,
                    "ratio": None, "better": "higher",
                    "note": "%.2f us/call" % case["%s_us_per_call" % op]})
        return rows

    def targets(self):
        """The issue's table: each target as a ratio (or a value) from this run."""
        sc = self.scenarios
        out = []

        def get(key, contender, metric):
            return sc.get(key, {}).get("contenders", {}).get(contender, {}).get(metric)

        def ratio(a, b):
            return a / b if a is not None and b else None

        def check(name, val, limit, op):
            met = None if val is None else (val >= limit if op == ">=" else
                                            val <= limit if op == "<=" else
                                            val == limit if op == "==" else val < limit)
            out.append({"target": name, "value": None if val is None else round(val, 3),
                        "op": op, "limit": limit, "met": met})

        cpu = "server_cpu_us_per_msg"
        check("websocket 1 client p50 latency vs plain", ratio(
            get("latency", "tornadio-ws", "p50_us"), get("latency", "plain", "p50_us")),
            1.10, "<=")
        check("websocket 1 client server CPU per round trip vs plain", ratio(
            get("latency", "tornadio-ws", cpu), get("latency", "plain", cpu)), 1.15, "<=")
        check("websocket echo (%s clients) throughput vs plain" % self.cfg["clients"], ratio(
            get("echo", "tornadio-ws", "msgs_per_s"), get("echo", "plain", "msgs_per_s")),
            1.0, ">=")
        check("websocket echo server CPU per message vs plain", ratio(
            get("echo", "tornadio-ws", cpu), get("echo", "plain", cpu)), 1.0, "<=")
        mem = sc.get("memory", {}).get("contenders", {})
        tornadio_steps = mem.get("tornadio-ws", {}).get("steps", [])
        plain_steps = mem.get("plain", {}).get("steps", [])
        if tornadio_steps and plain_steps:
            check("RSS per idle websocket session vs plain @%d" % tornadio_steps[0]["open"],
                  ratio(tornadio_steps[0]["per_session_kb"], plain_steps[0]["per_session_kb"]),
                  1.15, "<=")
        for name, suffix in (("xhr-polling", "xhr"), ("jsonp-polling", "jsonp")):
            echo, latency = suffix + "_echo", suffix + "_latency"
            hand = "handlp-" + suffix
            check("%s echo server CPU per message vs hand-written Tornado long poll" % name,
                  ratio(get(echo, "tornadio-" + suffix, cpu), get(echo, hand, cpu)), 0.75, "<=")
            check("%s 1 client p50 vs hand-written Tornado long poll" % name,
                  ratio(get(latency, "tornadio-" + suffix, "p50_us"),
                        get(latency, hand, "p50_us")), 0.80, "<=")
            check("%s echo throughput vs socket.io 0.6.18 on node" % name,
                  ratio(get(echo, "tornadio-" + suffix, "msgs_per_s"),
                        get(echo, "node-" + suffix, "msgs_per_s")), 0.35, ">=")
        check("fan-out vs plain loop", ratio(
            get("fanout", "tornadio-ws", "msgs_per_s"), get("fanout", "plain", "msgs_per_s")),
            0.90, ">=")
        lag = sc.get("lag", {}).get("contenders", {}).get("tornadio-ws", {})
        check("IOLoop lag p99 (ms) with %s sessions" % (lag.get("sessions") or "the held"),
              lag.get("p99_ms"), 50, "<")
        scale = sc.get("scale_ws", {})
        mine = scale.get("contenders", {}).get("tornadio-ws", {})
        theirs = scale.get("contenders", {}).get("plain", {})
        if mine:
            check("IOLoop lag p99 (ms), %s idle websocket sessions, heartbeats every %s s"
                  % (scale.get("sessions"), scale.get("heartbeat_interval")),
                  (mine.get("lag") or {}).get("p99_ms"), 20, "<")
            steps, base = mine["memory"]["steps"], theirs.get("memory", {}).get("steps", [])
            if steps and base:
                check("RSS per idle websocket session vs plain @%d" % steps[-1]["open"],
                      ratio(steps[-1]["per_session_kb"], base[-1]["per_session_kb"]), 1.2, "<=")
        poll = sc.get("scale_poll", {}).get("contenders", {}).get("tornadio-xhr")
        if poll:
            check("IOLoop lag p99 (ms), %d polling sessions holding long polls" % poll["sessions"],
                  (poll.get("lag") or {}).get("p99_ms"), 50, "<")
            missed = poll["answered_late"] + poll["still_held_overdue"] + poll["answered_early"]
            check("long polls not answered at their timeout (of %d answered)"
                  % poll["polls_answered"], missed if poll["polls_answered"] else None, 0, "==")
        for case in sc.get("codec", {}).get("cases", []):
            if case["text"] == "ascii" and case["shape"] == "single":
                for op in ("encode", "decode"):
                    check("codec %s ASCII single frame %d chars (MB/s)" % (op, case["chars"]),
                          case["%s_mb_s" % op], 50, ">=")
        return out

    def analysis(self):
        """Where the polling gap to node goes: Tornado's HTTP/1.1 floor against ours."""
        sc = self.scenarios
        out = {}
        for suffix in ("xhr", "jsonp"):
            echo = sc.get(suffix + "_echo", {}).get("contenders", {})
            cpu = {name.split("-")[0]: entry.get("server_cpu_us_per_msg")
                   for name, entry in echo.items() if not name.endswith("-uvloop")}
            if cpu.get("tornadio") and cpu.get("node") and cpu.get("barelp"):
                gap = cpu["tornadio"] - cpu["node"]
                floor = cpu["barelp"] - cpu["node"]
                out[suffix] = {
                    "tornadio_us": cpu["tornadio"], "bare_floor_us": cpu["barelp"],
                    "node_us": cpu["node"], "gap_to_node_us": round(gap, 1),
                    "of_which_tornado_http_us": round(floor, 1),
                    "of_which_tornadio_us": round(cpu["tornadio"] - cpu["barelp"], 1),
                    "tornado_http_share_of_gap": round(floor / gap, 3) if gap > 0 else None}
        return out

    def meta(self):
        return {
            "started": self.started.isoformat(timespec="seconds"),
            "finished": datetime.datetime.now().isoformat(timespec="seconds"),
            "preset": self.args.preset, "config": self.cfg,
            "message_size": MESSAGE_SIZE,
            "latency_method": ("sequential windows" if self.args.latency_sequential else
                               "turns of %g s" % self.args.latency_slice),
            "tcp_nodelay": not self.args.tornado_defaults,
            "python": platform.python_version(), "executable": self.python,
            "socketio_python": self.socketio_python,
            "versions": _versions(self.python, self.socketio_python),
            "git": self.git_start,
            "git_end": _git_revision(),
            "tornadio_source_sha1": self.source_start,
            # Servers started later import the library again: flag edits made meanwhile.
            "tornadio_changed_during_run": _source_digest() != self.source_start,
            "cpus": os.cpu_count(), "platform": platform.platform(),
            "pinned": {"servers": PINNING["server"], "load": PINNING["load"]},
            "loadavg_start": self.loadavg_start, "loadavg_end": _loadavg(),
            "elapsed_s": round(time.monotonic() - self.clock_start, 1),
            "logs": self.log_dir,
        }

    def report(self):
        self.summarise()
        rows = self.table()
        targets = self.targets()
        document = {"meta": self.meta(), "scenarios": self.scenarios, "table": rows,
                    "targets": targets, "analysis": self.analysis(),
                    "skipped": self.skipped, "errors": self.errors,
                    "profiles": self.profiles}
        os.makedirs(os.path.dirname(os.path.abspath(self.output)), exist_ok=True)
        with open(self.output, "w") as out:
            json.dump(document, out, indent=1)
        if not self.args.json_only:
            print_table(rows, targets, self.skipped, self.errors, self.profiles, document["meta"],
                        document["analysis"], self.scenarios)
            print("\nresults: %s" % self.output)
        return document


def print_table(rows, targets, skipped, errors, profiles, meta, analysis=None, scenarios=None):
    print("\nTornadIO benchmarks (%s preset, %s round(s), %s s, loadavg at start %s, end %s)"
          " - medians" % (meta["preset"], meta["config"]["repeats"], meta["elapsed_s"],
                          meta["loadavg_start"], meta["loadavg_end"]))
    pinned = meta.get("pinned") or {}
    if pinned.get("servers"):
        print("servers on CPU %s, load generators on CPU %s" % (pinned["servers"], pinned["load"]))
    else:
        print("unpinned: servers and load generators share every CPU")
    busy = (meta["loadavg_start"] or [0])[0]  # the end value counts this run's own load
    if busy > 0.5 * (meta["cpus"] or 1):
        print("note: the machine was busy (loadavg %.1f on %s cores): wall-clock rates and lag "
              "suffer first; server_cpu_us_per_msg rows are the steadier comparison"
              % (busy, meta["cpus"]))
    header = ("scenario", "metric", "contender", "median", "unit", "ratio", "vs", "note")
    lines = [header]
    for row in rows:
        med = row["median"]
        lines.append((row["scenario"], row["metric"], row["contender"],
                      "-" if med is None else ("%.1f" % med if med < 1e5 else "%.0f" % med),
                      row["unit"],
                      "-" if row["ratio"] is None else "%.2f" % row["ratio"],
                      row["baseline"] or "", row["note"]))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    for index, line in enumerate(lines):
        print("  ".join(str(cell).ljust(widths[i]) if i not in (3, 5) else
                        str(cell).rjust(widths[i]) for i, cell in enumerate(line)).rstrip())
        if index == 0:
            print("  ".join("-" * w for w in widths))
    if meta.get("tornadio_changed_during_run"):
        print("WARNING: tornadio/*.py changed during the run (git %s -> %s): servers started "
              "at different times ran different code" % (meta["git"], meta["git_end"]))
    for scenario in ("scale_ws", "scale_poll"):
        note = (scenarios or {}).get(scenario, {}).get("note")
        if note:
            print("note (%s): %s" % (scenario, note))
    for suffix, gap in (analysis or {}).items():
        print("\n%s-polling server CPU per message: TornadIO %.0f us, bare Tornado delegate %.0f "
              "us, node %.0f us: of the %.0f us gap to node, %.0f us (%.0f%%) is Tornado's own "
              "HTTP/1.1 machinery, %.0f us TornadIO's" % (
                  suffix, gap["tornadio_us"], gap["bare_floor_us"], gap["node_us"],
                  gap["gap_to_node_us"], gap["of_which_tornado_http_us"],
                  100 * (gap["tornado_http_share_of_gap"] or 0), gap["of_which_tornadio_us"]))
    print("\nTargets")
    for target in targets:
        mark = {True: "MET ", False: "MISS", None: "n/a "}[target["met"]]
        print("  [%s] %s: %s (target %s %s)" % (mark, target["target"], target["value"],
                                                target["op"], target["limit"]))
    for scenario, summary in profiles.items():
        if isinstance(summary, dict) and summary.get("top_self"):
            print("\nProfile tornadio-ws %s (py-spy, %d samples), top self time:"
                  % (scenario, summary["samples"]))
            for item in summary["top_self"][:10]:
                print("  %5.1f%%  %s" % (item["percent"], item["frame"]))
            print("  TornadIO functions, inclusive (request entry frames left out):")
            for item in summary["top_inclusive_tornadio"][:8]:
                print("  %5.1f%%  %s" % (item["percent"], item["frame"]))
    for skip in skipped:
        print("\nskipped %s: %s" % (skip["contender"], skip["reason"]))
    for error in errors:
        print("\nERROR %s" % error)


def summarise_profile(path, top=20):
    """Top frames by self and inclusive samples from py-spy's raw (collapsed) output."""
    self_samples, inclusive = Counter(), Counter()
    total = 0
    try:
        with open(path) as raw:
            for line in raw:
                stack, _, count = line.rstrip("\n").rpartition(" ")
                if not stack or not count.isdigit():
                    continue
                count = int(count)
                total += count
                frames = [_short_frame(f) for f in stack.split(";")]
                self_samples[frames[-1]] += count
                for frame in set(frames):
                    inclusive[frame] += count
    except OSError as exc:
        return {"error": str(exc)}

    def listing(counter):
        return [{"frame": frame, "samples": n, "percent": round(100.0 * n / total, 1)}
                for frame, n in counter.most_common(top)]

    tornadio = Counter({f: n for f, n in inclusive.items()
                        if "tornadio/" in f and f.split(" (")[0] not in _ENTRY_FRAMES})
    return {"raw": path, "samples": total, "top_self": listing(self_samples) if total else [],
            "top_inclusive_tornadio": listing(tornadio) if total else []}


#: TornadIO frames that sit under every WebSocket read (the request coroutine that
#: runs Tornado's receive loop): their inclusive time is Tornado's, not theirs.
_ENTRY_FRAMES = {"_maybe_await",
                 "WebSocketTransport.get", "HttpTransport.get", "HttpTransport.post"}


def _short_frame(frame):
    # "func (/path/to/pkg/file.py:123)" -> "func (pkg/file.py)": one entry per function.
    name, _, where = frame.partition(" (")
    where = where.rstrip(")").rpartition(":")[0] or where.rstrip(")")
    parts = where.replace("\\", "/").split("/")
    return "%s (%s)" % (name, "/".join(parts[-2:]))


def _has_module(python, module):
    try:
        return subprocess.run([python, "-c", "import %s" % module], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _versions(python, socketio_python):
    versions = {}
    code = ("import json, tornado\nout = {'tornado': tornado.version}\n"
            "try:\n import simplejson; out['simplejson'] = simplejson.__version__\n"
            "except ImportError: pass\nprint(json.dumps(out))")
    try:
        versions.update(json.loads(subprocess.run([python, "-c", code], capture_output=True,
                                                  text=True, timeout=30).stdout))
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    if socketio_python:
        code = ("import json, socketio, engineio, importlib.metadata as m\nprint(json.dumps("
                "{'python-socketio': m.version('python-socketio'), "
                "'python-engineio': m.version('python-engineio')}))")
        try:
            versions.update(json.loads(subprocess.run(
                [socketio_python, "-c", code], capture_output=True, text=True,
                timeout=30).stdout))
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
    return versions


def _git_revision():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=REPO_ROOT, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "tornadio"],
                               capture_output=True, text=True, cwd=REPO_ROOT,
                               timeout=10).stdout.strip()
        return rev + ("+dirty" if dirty else "") if rev else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def _source_digest():
    """SHA-1 over the tornadio package's .py files, as the servers will import them."""
    root = os.path.join(os.environ.get("TORNADIO_BENCH_PATH") or REPO_ROOT, "tornadio")
    digest = hashlib.sha1()
    try:
        for name in sorted(os.listdir(root)):
            if name.endswith(".py"):
                digest.update(name.encode())
                with open(os.path.join(root, name), "rb") as source:
                    digest.update(source.read())
    except OSError:
        return None
    return digest.hexdigest()


def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def parse_args(argv):
    parser = argparse.ArgumentParser(
        description="TornadIO benchmarks (see the module docstring for details).")
    size = parser.add_mutually_exclusive_group()
    for preset in ("smoke", "quick", "long"):
        size.add_argument("--" + preset, dest="preset", action="store_const", const=preset,
                          help="the %s preset" % preset)
    parser.set_defaults(preset="default")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help="comma-separated subset of: %s" % ", ".join(SCENARIOS))
    parser.add_argument("--repeats", type=int, help="rounds per contender (override)")
    parser.add_argument("--duration", type=float, help="seconds per measurement (override)")
    parser.add_argument("--clients", type=int, help="clients for echo/fan-out/xhr (override)")
    parser.add_argument("--hold-counts", help="idle session counts, e.g. 2000,10000 (override)")
    parser.add_argument("--lag-seconds", type=float, help="how long to sample IOLoop lag")
    so = parser.add_mutually_exclusive_group()
    so.add_argument("--with-socketio", action="store_true",
                    help="require python-socketio (fail if it is missing)")
    so.add_argument("--without-socketio", action="store_true", help="leave python-socketio out")
    parser.add_argument("--socketio-python", help="interpreter that has python-socketio")
    parser.add_argument("--tornado-defaults", action="store_true",
                        help="leave Nagle on (Tornado's default) instead of TCP_NODELAY on "
                             "every server's WebSockets")
    parser.add_argument("--latency-sequential", action="store_true",
                        help="latency: one contender after the other for a whole window "
                             "each, instead of in turns of %g s" % LATENCY_SLICE)
    parser.add_argument("--latency-slice", type=float, default=LATENCY_SLICE,
                        help="latency: seconds of each turn (default %g)" % LATENCY_SLICE)
    parser.add_argument("--profile", action="store_true",
                        help="py-spy TornadIO during extra echo and fan-out runs")
    parser.add_argument("--no-pin", action="store_true",
                        help="let servers and load generators share every CPU")
    parser.add_argument("--output", help="JSON path (default benchmarks/results/<time>.json)")
    parser.add_argument("--json-only", action="store_true", help="print nothing but errors")
    args = parser.parse_args(argv)
    if args.latency_slice <= 0:
        parser.error("--latency-slice must be positive")
    names = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        parser.error("unknown scenario(s): %s" % ", ".join(unknown))
    args.scenarios = [s for s in SCENARIOS if s in names]
    return args


def config_for(args):
    cfg = dict(PRESETS[args.preset])
    for name in ("repeats", "duration", "clients", "lag_seconds"):
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    if args.hold_counts:
        cfg["hold_counts"] = sorted(int(x) for x in args.hold_counts.split(","))
    return cfg


def _terminate(signum, frame):
    raise KeyboardInterrupt("signal %d" % signum)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    cfg = config_for(args)
    plan_pinning(not args.no_pin)
    # Explicit, so that Ctrl-C works even where SIGINT was inherited as ignored
    # (a background job of a non-interactive shell).
    signal.signal(signal.SIGINT, _terminate)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    bench = None
    try:
        bench = Bench(args, cfg)
        bench.loadavg_start = _loadavg()
        bench.say("TornadIO benchmarks, %s preset: contenders %s; scenarios %s" % (
            args.preset, ", ".join(bench.contenders), ", ".join(args.scenarios)))
        bench.run()
    except KeyboardInterrupt:
        print("\ninterrupted; stopping child processes", file=sys.stderr)
        Child.stop_all()
        if bench is not None:
            bench.errors.append("interrupted")
            bench.report()
        return 130
    except BenchError as exc:
        print("ERROR %s" % exc, file=sys.stderr)
        Child.stop_all()
        if bench is not None:
            bench.errors.append(str(exc))
            bench.report()
        return 2
    finally:
        Child.stop_all()
    bench.report()
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
