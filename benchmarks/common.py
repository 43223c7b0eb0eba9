"""Small helpers shared by the benchmark processes (no third-party imports)."""
import json
import math
import os
import resource
import sys

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)


def use_repo_tornadio():
    """Import ``tornadio`` from this checkout, whatever venv runs the process.

    ``TORNADIO_BENCH_PATH`` names another directory holding a ``tornadio``
    package instead (to measure a modified copy against the same harness).
    """
    root = os.environ.get("TORNADIO_BENCH_PATH") or REPO_ROOT
    if root not in sys.path:
        sys.path.insert(0, root)


def raise_nofile(wanted=None):
    """Raise RLIMIT_NOFILE's soft limit (to the hard limit, or ``wanted``)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else wanted
    if hard != resource.RLIM_INFINITY:
        target = min(target, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def rss_kb(pid="self"):
    """VmRSS of a process in KiB, read from /proc/<pid>/status (None if unknown)."""
    try:
        with open("/proc/%s/status" % pid) as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def emit(obj):
    """One JSON line on stdout: how child processes talk to run.py."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def percentile(sorted_values, fraction):
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = math.ceil(fraction * len(sorted_values))
    return sorted_values[min(len(sorted_values), max(rank, 1)) - 1]


def median(values):
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    mid = len(values) // 2
    if len(values) % 2:
        return values[mid]
    return (values[mid - 1] + values[mid]) / 2.0
