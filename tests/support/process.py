"""A Python script run as a real subprocess, its output collected line by line.

For tests that need a whole process: signals, exit statuses, a server whose
memory is measured on its own. Every wait is bounded; a process that outlives
its bound is killed and the test fails with what it printed.
"""
import os
import re
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))

#: Default bound on waiting for a line or for the exit (seconds).
WAIT = 20.0


class ScriptProcess:
    """``python [python_args] script args``, with the worktree's ``tornadio`` importable.

    ``lines()`` and ``output()`` give what it printed so far (stdout tagged
    ``out``, stderr ``err``); :meth:`wait_for` waits for a line.
    """

    def __init__(self, script, *args, python_args=(), name=None):
        self.script = script
        self.args = [str(arg) for arg in args]
        self.python_args = list(python_args)
        self.name = name or os.path.basename(script)
        self.proc = None
        self._lines = []
        self._changed = threading.Condition()
        self._readers = []

    def start(self):
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO_ROOT, env.get("PYTHONPATH")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.proc = subprocess.Popen(
            [sys.executable] + self.python_args + [self.script] + self.args, cwd=REPO_ROOT,
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, encoding="utf-8", errors="replace")
        for stream, tag in ((self.proc.stdout, "out"), (self.proc.stderr, "err")):
            reader = threading.Thread(target=self._read, args=(stream, tag), daemon=True,
                                      name="%s-%s" % (self.name, tag))
            reader.start()
            self._readers.append(reader)
        return self

    def _read(self, stream, tag):
        for line in stream:
            with self._changed:
                self._lines.append((tag, line.rstrip("\n")))
                self._changed.notify_all()
        stream.close()
        with self._changed:
            self._changed.notify_all()

    def wait_for(self, pattern, timeout=WAIT, tag="out", count=1):
        """The ``count``-th line matching ``pattern`` (a regex), as a match; fails
        if the process exits first or ``timeout`` seconds pass."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                matches = [regex.search(line) for line_tag, line in self._lines
                           if tag in (None, line_tag)]
                matches = [match for match in matches if match]
                if len(matches) >= count:
                    return matches[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self.proc.poll() is not None and not any(r.is_alive() for r in self._readers):
                    raise AssertionError("%s exited with %s before printing %r (x%d):\n%s"
                                         % (self.name, self.proc.returncode, pattern, count,
                                            self._output_locked()))
                self._changed.wait(min(remaining, 0.1))
        raise AssertionError("%s printed no %r (x%d) within %.0f s:\n%s"
                             % (self.name, pattern, count, timeout, self.output()))

    def send_signal(self, signum):
        self.proc.send_signal(signum)

    def wait_exit(self, timeout=WAIT):
        """The exit status of a process expected to end within ``timeout`` seconds."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("%s still running after %.1f s:\n%s"
                                 % (self.name, timeout, self.output())) from None
        self._join_readers()
        return self.proc.returncode

    def stop(self, signum=signal.SIGTERM, timeout=WAIT):
        """Send ``signum`` and wait; SIGKILL and fail if it outlives ``timeout``."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signum)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError("%s did not exit within %.0f s of signal %d:\n%s"
                                     % (self.name, timeout, signum, self.output())) from None
        self._join_readers()
        return self.proc.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(WAIT)
            except subprocess.TimeoutExpired:  # pragma: no cover - the kernel owes us
                pass
        self._join_readers()

    def _join_readers(self):
        for reader in self._readers:
            reader.join(2.0)

    def lines(self, tag=None):
        with self._changed:
            return [line for t, line in self._lines if tag in (None, t)]

    def output(self):
        with self._changed:
            return self._output_locked()

    def _output_locked(self):
        return "\n".join("[%s] %s" % item for item in self._lines) or "(no output)"
