"""Real processes for the scaling tests: redis-server, TornadIO nodes, nginx.

Every start waits with a deadline, every stop escalates terminate → kill, and
all output goes to files in the test's tmp dir (read back for assertions and
shown when a start fails).
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
NODE_SCRIPT = os.path.join(HERE, "scaling_node.py")
NGINX_EXAMPLE = os.path.join(REPO_ROOT, "examples", "nginx", "tornadio.conf")

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def _die_with_parent():
    """In the child: get SIGKILL when the test process dies, however it dies (Linux)."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def spawn(command, **kwargs):
    """Popen with no stdin, killed if this process dies first."""
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=preexec, **kwargs)


def find_binary(name, *extra_dirs):
    found = shutil.which(name)
    if found:
        return found
    for directory in extra_dirs + ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin"):
        path = os.path.join(directory, name)
        if os.access(path, os.X_OK):
            return path
    return None


def free_port():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _tail(path, size=3000):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return "(no output)"


def stop_process(proc, timeout=STOP_TIMEOUT):
    """Terminate, then kill; always reaps. Safe on an already dead process."""
    if proc is None or proc.poll() is not None:
        return
    try:
        proc.terminate()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_port(port, timeout, proc=None, what="server", log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with %s:\n%s" % (what, proc.returncode, _tail(log)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s not listening on %d after %ss:\n%s" % (what, port, timeout, _tail(log)))


class RedisServer:
    """redis-server on a fixed free loopback port, no persistence; restartable."""

    def __init__(self, tmpdir, binary):
        self.binary = binary
        self.dir = os.path.join(str(tmpdir), "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.proc = None
        self.starts = 0

    @property
    def url(self):
        return "redis://127.0.0.1:%d/0" % self.port

    def start(self):
        self.starts += 1
        self.log = os.path.join(self.dir, "redis-%d.log" % self.starts)
        with open(self.log, "wb") as out:
            self.proc = spawn(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--daemonize", "no",
                 "--dir", self.dir, "--loglevel", "warning"],
                stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                wait_port(self.port, max(0.1, deadline - time.monotonic()), self.proc,
                          "redis-server", self.log)
                if self._ping():
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server does not answer PING:\n" + _tail(self.log))
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise

    def _ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self):
        """SIGKILL: the abrupt outage (connections reset, nothing saved)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)

    def pause(self):
        """SIGSTOP: a stall (the process hangs, its TCP connections stay up)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self):
        """SIGCONT after :meth:`pause`; harmless on a running or dead process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def stop(self):
        self.resume()  # a stopped process would not act on SIGTERM
        stop_process(self.proc)

    def __enter__(self):
        """``with RedisServer(...) as server:`` started, and stopped after the block."""
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()


def redis_server_fixture(binary):
    """A pytest fixture ``redis_server``: a started RedisServer of ``binary`` in
    ``tmp_path``, stopped after the test. Use: ``redis_server = redis_server_fixture(B)``."""
    import pytest

    @pytest.fixture
    def redis_server(tmp_path):
        with RedisServer(tmp_path, binary) as server:
            yield server
    return redis_server


class Node:
    """A ``scaling_node.py`` TornadIO server process."""

    def __init__(self, tmpdir, name, redis_url=None, args=()):
        self.name = name
        self.dir = str(tmpdir)
        self.out_path = os.path.join(self.dir, "%s.out" % name)
        self.err_path = os.path.join(self.dir, "%s.err" % name)
        command = [sys.executable, NODE_SCRIPT, "--port", "0"]
        if redis_url:
            command += ["--redis", redis_url]
        command += list(args)
        env = dict(os.environ)
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = spawn(command, stdout=out, stderr=err, env=env, cwd=REPO_ROOT)
        self.port = None
        self.state = None

    def wait_ready(self, timeout=START_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("node %s exited with %s:\n%s" % (
                    self.name, self.proc.returncode, _tail(self.err_path)))
            with open(self.out_path) as f:
                for line in f:
                    if line.startswith("READY "):
                        _, port, state = line.split()
                        self.port, self.state = int(port), state
                        return self
            time.sleep(0.05)
        raise RuntimeError("node %s not ready after %ss:\n%s" % (
            self.name, timeout, _tail(self.err_path)))

    def stderr(self):
        with open(self.err_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def stop(self):
        stop_process(self.proc)


def start_nodes(tmpdir, count, redis_url=None, args=()):
    nodes = []
    try:
        for i in range(count):
            nodes.append(Node(tmpdir, "node%d" % (i + 1), redis_url, args))
        for node in nodes:
            node.wait_ready()
    except BaseException:
        for node in nodes:
            node.stop()
        raise
    return nodes


async def control(port, body, timeout=10.0):
    """POST /control on a node; the decoded JSON answer."""
    from tornado.httpclient import AsyncHTTPClient

    http = AsyncHTTPClient(force_instance=True)
    try:
        response = await http.fetch("http://127.0.0.1:%d/control" % port, method="POST",
                                    body=json.dumps(body), request_timeout=timeout)
    finally:
        http.close()
    return json.loads(response.body)


async def node_stats(port, timeout=5.0):
    from tornado.httpclient import AsyncHTTPClient

    http = AsyncHTTPClient(force_instance=True)
    try:
        response = await http.fetch("http://127.0.0.1:%d/stats" % port, request_timeout=timeout)
    finally:
        http.close()
    return json.loads(response.body)


def nginx_site_config(listen_port, upstream_ports, example=NGINX_EXAMPLE):
    """examples/nginx/tornadio.conf with our ports: the tested file, not a copy of it."""
    with open(example) as f:
        text = f.read()
    servers = re.findall(r"^    server 127\.0\.0\.1:\d+;\n", text, re.M)
    if len(servers) < 1 or text.count("    listen 80;\n") != 1:
        raise RuntimeError("%s no longer has the lines the test rewrites" % example)
    upstream = "".join("    server 127.0.0.1:%d;\n" % port for port in upstream_ports)
    text = text.replace("".join(servers), upstream, 1)
    return text.replace("    listen 80;\n", "    listen 127.0.0.1:%d;\n" % listen_port)


class Nginx:
    """nginx in the foreground (daemon off, master_process off), all files in a tmp dir.

    ``log_format``: the access log's format (nginx variables), instead of
    nginx's ``combined``.
    """

    def __init__(self, tmpdir, binary, site_config, log_format=None):
        self.binary = binary
        self.dir = os.path.join(str(tmpdir), "nginx")
        os.makedirs(self.dir, exist_ok=True)
        self.port = free_port()
        self.site_path = os.path.join(self.dir, "tornadio.conf")
        with open(self.site_path, "w") as f:
            f.write(site_config(self.port))
        self.conf_path = os.path.join(self.dir, "nginx.conf")
        self.error_log = os.path.join(self.dir, "error.log")
        temp = "".join("    %s_temp_path %s;\n" % (kind, os.path.join(self.dir, kind))
                       for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        if log_format:
            access = "log_format tested '%s';\n    access_log %s tested" % (
                log_format, os.path.join(self.dir, "access.log"))
        else:
            access = "access_log " + os.path.join(self.dir, "access.log")
        with open(self.conf_path, "w") as f:
            f.write("daemon off;\nmaster_process off;\nworker_processes 1;\n"
                    "pid %s;\nerror_log %s info;\n"
                    "events { worker_connections 512; }\n"
                    "http {\n    %s;\n%s    include %s;\n}\n" % (
                        os.path.join(self.dir, "nginx.pid"), self.error_log,
                        access, temp, self.site_path))
        self.proc = None

    def start(self):
        self.out_path = os.path.join(self.dir, "nginx.out")
        with open(self.out_path, "wb") as out:
            self.proc = spawn(
                [self.binary, "-p", self.dir, "-c", self.conf_path, "-e", self.error_log],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_port(self.port, START_TIMEOUT, self.proc, "nginx", self.error_log)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        stop_process(self.proc)

    def errors(self):
        return _tail(self.error_log, 6000)
