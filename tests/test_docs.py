"""The documents a user reads first: valid reStructuredText, and the commands they name exist."""
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.rst", "SECURITY.rst", "docs/SCALING.rst", "docs/migrating.rst"]


@pytest.mark.parametrize("name", DOCS)
def test_document_is_valid_restructuredtext(name):
    docutils_core = pytest.importorskip("docutils.core")
    problems = []

    class Collect:
        def write(self, text):
            problems.append(text)

    with open(os.path.join(ROOT, name), encoding="utf-8") as handle:
        docutils_core.publish_doctree(handle.read(), settings_overrides={
            "report_level": 2, "halt_level": 5, "warning_stream": Collect()})
    assert not problems, "".join(problems)


def test_readme_commands_exist_and_are_executable():
    with open(os.path.join(ROOT, "README.rst"), encoding="utf-8") as handle:
        readme = handle.read()
    for command in ("scripts/demo", "scripts/test"):
        assert command in readme
        path = os.path.join(ROOT, command)
        assert os.access(path, os.X_OK), command
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as handle:
        assert re.search(r"^exec scripts/test\s*$", handle.read(), re.M)
