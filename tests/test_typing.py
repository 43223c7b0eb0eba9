"""The package is typed: it ships ``py.typed`` (PEP 561) and ``mypy --strict``
accepts all of it, so applications that type-check see TornadIO's real types."""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Bound on one mypy run (a cold cache takes well under a minute).
MYPY_TIMEOUT = 300


def test_package_ships_py_typed_marker():
    import tornadio

    marker = os.path.join(os.path.dirname(tornadio.__file__), "py.typed")
    assert os.path.isfile(marker)


def test_mypy_strict_accepts_the_package():
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "tornadio"],
                            cwd=ROOT, capture_output=True, text=True, timeout=MYPY_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
