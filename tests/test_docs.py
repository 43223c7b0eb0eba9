"""The documentation: valid reStructuredText, a Sphinx site that builds without
a warning, and pages that stay true to the code (settings, protocol sections,
the quick start's application)."""
import asyncio
import importlib.util
import os
import re
import subprocess
import sys

import pytest
import tornado.web
from tornado.httpserver import HTTPServer
from tornado.testing import bind_unused_port
from tornado.websocket import websocket_connect

from support.wire import WAIT, fetch, messages, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS_DIR = os.path.join(ROOT, "docs")
#: Documents read outside Sphinx too (on a repository host): plain docutils must accept them.
DOCS = ["README.rst", "SECURITY.rst", "docs/SCALING.rst", "docs/migrating.rst"]
#: Bound on the Sphinx build (it takes a few seconds).
BUILD_TIMEOUT = 120


def read(*parts):
    with open(os.path.join(ROOT, *parts), encoding="utf-8") as handle:
        return handle.read()


@pytest.mark.parametrize("name", DOCS)
def test_document_is_valid_restructuredtext(name):
    docutils_core = pytest.importorskip("docutils.core")
    problems = []

    class Collect:
        def write(self, text):
            problems.append(text)

    docutils_core.publish_doctree(read(name), settings_overrides={
        "report_level": 2, "halt_level": 5, "warning_stream": Collect()})
    assert not problems, "".join(problems)


def test_readme_commands_exist_and_are_executable():
    readme = read("README.rst")
    for command in ("scripts/demo", "scripts/test", "scripts/docs"):
        assert command in readme
        path = os.path.join(ROOT, command)
        assert os.access(path, os.X_OK), command
    assert re.search(r"^exec scripts/test\s*$", read(".ci", "run"), re.M)


# -- the Sphinx site ---------------------------------------------------------------

def test_sphinx_site_builds_without_a_warning(tmp_path):
    """scripts/docs turns every warning into an error: a broken reference, a
    docstring that is not valid reStructuredText, a page outside the toctree."""
    try:
        import sphinx  # noqa: F401
    except ImportError:
        pytest.fail("Sphinx is missing: it is in the test extras (pip install -e '.[test]')")
    out = tmp_path / "html"
    result = subprocess.run(
        [os.path.join(ROOT, "scripts", "docs"), str(out)],
        env=dict(os.environ, PYTHON=sys.executable), cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=BUILD_TIMEOUT)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "build succeeded." in result.stdout
    for page in ("index", "quickstart", "settings", "protocol", "security", "SCALING",
                 "migrating", "architecture", "api/tornadio"):
        assert (out / (page + ".html")).is_file(), page
    # The reference really comes from the docstrings.
    api = (out / "api" / "tornadio.html").read_text(encoding="utf-8")
    assert "Send a str as is, a list item by item" in api


def test_every_setting_is_documented_and_nothing_else():
    from tornadio.router import DEFAULT_SETTINGS
    documented = set(re.findall(r"^\.\. confval:: (\w+)$", read("docs", "settings.rst"), re.M))
    application = set(re.findall(r"""settings\.get\(["'](\w+)["']""", read("tornadio", "server.py")))
    assert application, "no application settings found in tornadio/server.py"
    assert documented == set(DEFAULT_SETTINGS) | application


# -- the protocol page and the citations of it ---------------------------------------

PROTOCOL_LABEL = re.compile(r"^\.\. _protocol-(\d+(?:\.\d+)?):\n\n(.+)\n([-~=^]+)\n", re.M)
#: "protocol.rst §2.3", "protocol.rst §4.3–§4.6", "protocol.rst section 5", ":ref:`protocol-1.6`".
CITATION = re.compile(r"protocol\.rst\s+((?:§|section\s+)\d+(?:\.\d+)?"
                      r"(?:\s*(?:–|-|,|and)\s*§?\d+(?:\.\d+)?)*)|:ref:`protocol-(\d+(?:\.\d+)?)`")
SKIPPED_DIRS = {".git", "node_modules", ".venv", ".venv-redis-oldest", ".tox", ".mypy_cache",
                "_build", "__pycache__", "test-artifacts", ".pytest_cache", ".hypothesis",
                "results"}
CITING_FILES = (".py", ".rst", ".md", ".js", ".html", ".conf")


def protocol_sections():
    return {number: title for number, title, _ in PROTOCOL_LABEL.findall(read("docs", "protocol.rst"))}


def test_protocol_sections_are_numbered_as_labelled():
    sections = protocol_sections()
    assert len(sections) >= 30
    for number, title in sections.items():
        assert title.startswith(number + (" " if "." in number else ". ")), (number, title)
    for chapter in range(1, 11):
        assert str(chapter) in sections


def test_every_protocol_citation_names_an_existing_section():
    sections = protocol_sections()
    dangling = []
    for directory, subdirs, files in os.walk(ROOT):
        subdirs[:] = [name for name in subdirs if name not in SKIPPED_DIRS]
        for name in files:
            if not name.endswith(CITING_FILES):
                continue
            path = os.path.join(directory, name)
            with open(path, encoding="utf-8", errors="replace") as handle:
                text = handle.read()
            if "PROTOCOL" + ".md" in text:  # the reference outside the project
                dangling.append("%s: cites the outside reference, not docs/protocol.rst"
                                % os.path.relpath(path, ROOT))
            for match in CITATION.finditer(text):
                numbers = re.findall(r"\d+(?:\.\d+)?", match.group(1) or match.group(2))
                for number in numbers:
                    if number not in sections:
                        dangling.append("%s: %s" % (os.path.relpath(path, ROOT), match.group(0)))
    assert not dangling, "\n".join(dangling)


# -- the quick start's application ----------------------------------------------------

def load_quickstart_app():
    spec = importlib.util.spec_from_file_location(
        "quickstart_echo", os.path.join(DOCS_DIR, "quickstart", "echo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_application_serves_its_page_and_echoes():
    echo = load_quickstart_app()

    async def body():
        app = echo.make_app()
        assert isinstance(app, tornado.web.Application)
        sock, port = bind_unused_port(address="127.0.0.1")
        server = HTTPServer(app)
        server.add_sockets([sock])
        base = "http://127.0.0.1:%d" % port
        try:
            page = await fetch(base + "/")
            assert page.code == 200
            assert b'<script src="/socket.io/socket.io.js">' in page.body
            script = await fetch(base + "/socket.io/socket.io.js")
            assert script.code == 200 and b"io.Socket" in script.body

            ws = await asyncio.wait_for(websocket_connect(base.replace("http", "ws", 1)
                                                          + "/socket.io/websocket"), WAIT)
            # What on_open sends rides in the first payload, behind the session id.
            (_, session_id), welcome = messages(await asyncio.wait_for(ws.read_message(), WAIT))
            assert re.fullmatch(r"[0-9a-f]{32}", session_id)
            assert welcome == ("text", "welcome, 127.0.0.1")
            ws.write_message("~m~2~m~hi")
            assert messages(await asyncio.wait_for(ws.read_message(), WAIT)) == [
                ("json", {"echo": "hi"})]
            ws.close()
        finally:
            server.stop()
            echo.EchoRouter.sessions().close_all()

    run(body())
