"""Packaging: `python -m build` makes an sdist and a wheel that install and import.

The build runs on a copy of the checkout (so build/ and *.egg-info never land
in the working tree) without build isolation, so no package index is needed:
setuptools, wheel and build come from the test environment. The wheel goes
into a fresh venv with ``--no-deps``; Tornado is found through a ``.pth`` line
naming the test environment's site directory, after the venv's own (so the
import proves the installed copy works, whatever else that directory holds).
"""
import os
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile

import pytest
import tornado

import tornadio

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: What a checkout holds that is never part of a build's input.
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", ".tox", "node_modules", "__pycache__",
                                     "build", "dist", "*.egg-info", "test-artifacts",
                                     ".pytest_cache", ".hypothesis", "results")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(sdist path, wheel path) built from a copy of the checkout."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCES, symlinks=True)
    out = work / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, "python -m build failed:\n%s\n%s" % (
        proc.stdout[-3000:], proc.stderr[-3000:])
    sdists = list(out.glob("*.tar.gz"))
    wheels = list(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, os.listdir(out)
    return sdists[0], wheels[0]


def test_wheel_and_sdist_carry_the_one_version(built):
    sdist, wheel = built
    assert wheel.name == "tornadio-%s-py3-none-any.whl" % tornadio.__version__
    assert sdist.name == "tornadio-%s.tar.gz" % tornadio.__version__
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read("tornadio-%s.dist-info/METADATA" % tornadio.__version__).decode()
    assert re.search(r"^Version: %s$" % re.escape(tornadio.__version__), metadata, re.M)
    assert re.search(r"^Requires-Dist: tornado>=6$", metadata, re.M)
    assert re.search(r"^Requires-Python: >=3\.9$", metadata, re.M)


def test_wheel_holds_the_package_and_py_typed_but_no_tests_or_examples(built):
    _, wheel = built
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top_levels = {name.split("/")[0] for name in names}
    assert top_levels == {"tornadio", "tornadio-%s.dist-info" % tornadio.__version__}
    assert "tornadio/py.typed" in names
    assert "tornadio/testing.py" in names
    package_dir = os.path.join(ROOT, "tornadio")
    modules = {"tornadio/" + name for name in os.listdir(package_dir) if name.endswith(".py")}
    assert modules <= set(names)
    assert not [n for n in names if re.search(r"(^|/)(tests?|examples|benchmarks)(/|$)", n)]


def test_sdist_has_the_metadata_sources_and_no_node_modules(built):
    sdist, _ = built
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    for needed in ("pyproject.toml", "setup.py", "README.rst", "LICENSE", "tornadio/__init__.py",
                   "tornadio/py.typed"):
        assert needed in names
    assert not [n for n in names if n.startswith("node_modules")]


def test_wheel_installs_in_a_fresh_venv_and_imports(built, tmp_path):
    _, wheel = built
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = str(env_dir / "bin" / "python")
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-deps", "--no-index", "--disable-pip-version-check",
         "-q", str(wheel)], stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    # Then Tornado from the test environment, looked up after the venv's own packages
    # (written after the install: pip would take a tornadio seen there as installed).
    with open(os.path.join(site, "test_env_tornado.pth"), "w") as handle:
        handle.write(os.path.dirname(os.path.dirname(tornado.__file__)) + "\n")
    check = subprocess.run(
        [python, "-c", "import os, tornadio, tornadio.testing; "
                       "print(tornadio.__version__); print(tornadio.__file__); "
                       "print(os.path.isfile(os.path.join(os.path.dirname(tornadio.__file__), 'py.typed')))"],
        cwd=str(tmp_path), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr[-3000:]
    version, location, typed = check.stdout.split()
    assert version == tornadio.__version__
    assert location.startswith(site + os.sep)  # the installed copy, not the checkout
    assert typed == "True"
