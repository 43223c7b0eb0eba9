"""The Redis fault tests again, under the oldest redis-py that pyproject.toml allows.

This venv (``.venv``) has the newest redis-py and runs ``test_redis_faults.py``
and ``test_relay_nodes.py`` directly; ``scripts/setup.sh`` also makes
``.venv-redis-oldest`` (the same tornado and pytest, redis-py pinned to the
floor of pyproject.toml's ``redis`` extra), and this test runs those modules there,
in a subprocess.
"""
import os
import re
import subprocess
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from scaling_procs import REPO_ROOT, find_binary  # noqa: E402

OLDEST_PYTHON = os.path.join(REPO_ROOT, ".venv-redis-oldest", "bin", "python")
#: The broadcast backend's fault tests and the session relay's.
FAULT_TESTS = [os.path.join("tests", "scaling", name)
               for name in ("test_redis_faults.py", "test_relay_nodes.py")]

pytestmark = pytest.mark.skipif(
    find_binary("redis-server") is None,
    reason="redis-server binary not found (scripts/setup.sh --services installs it)")


def redis_floor():
    with open(os.path.join(REPO_ROOT, "pyproject.toml")) as f:
        found = re.search(r'"redis>=([0-9][0-9.]*)"', f.read())
    assert found, 'pyproject.toml has no "redis>=X.Y.Z" extra'
    return found.group(1)


def test_fault_tests_pass_under_the_oldest_redis_py():
    if not os.path.exists(OLDEST_PYTHON):
        message = "%s is missing: run scripts/setup.sh" % OLDEST_PYTHON
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    version = subprocess.run(
        [OLDEST_PYTHON, "-c", "import redis; print(redis.__version__)"],
        capture_output=True, text=True, timeout=60).stdout.strip()
    assert version == redis_floor(), (
        "%s has redis-py %r, pyproject.toml allows >= %s: rerun scripts/setup.sh"
        % (OLDEST_PYTHON, version, redis_floor()))
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [OLDEST_PYTHON, "-m", "pytest", *FAULT_TESTS, "-q", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=400)
    output = proc.stdout + proc.stderr
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    print("redis-py %s: %s" % (version, summary))
    assert proc.returncode == 0, output[-8000:]
    assert re.search(r"\b\d+ passed\b", summary) and "skipped" not in summary, output[-8000:]
