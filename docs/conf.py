"""Sphinx configuration of the TornadIO documentation (``scripts/docs`` builds it)."""
import os
import sys

# The checkout's own package, not whatever tornadio is installed.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import tornadio  # noqa: E402

project = "TornadIO"
author = "the TornadIO authors"
copyright = "2011-2026, " + author
release = version = tornadio.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.viewcode"]

root_doc = "index"
exclude_patterns = ["_build"]

autodoc_default_options = {"members": True, "member-order": "bysource"}
# Signatures stay as written; type hints, where there are any, go in the text.
autodoc_typehints = "description"

html_theme = "alabaster"
html_title = "TornadIO %s" % release
html_theme_options = {
    "description": "Socket.IO 0.6 for Tornado 6",
    "fixed_sidebar": True,
}
html_static_path = []
