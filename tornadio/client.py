"""Serving the socket.io-client 0.6.2 script at ``/<resource>/socket.io.js``.

The script ships in the npm package ``socket.io@0.6.18`` and is never part of
this repository; the ``client_js`` router setting names the file.
"""
import hashlib
import os
from typing import Optional, Union

import tornado.web

NPM_PACKAGE = "socket.io@0.6.18"
PATH_IN_PACKAGE = os.path.join("node_modules", "socket.io", "support", "socket.io-client",
                               "socket.io.js")
INSTALL_HINT = "npm install %s" % NPM_PACKAGE


class ClientScriptMissing(FileNotFoundError):
    """The configured client script is not on disk; the message says how to get it."""


def find_client_js(*start_dirs: "Union[str, os.PathLike[str]]") -> Optional[str]:
    """The npm-installed client under any of ``start_dirs`` or their parents, or None."""
    for start in start_dirs or (os.getcwd(),):
        directory = os.path.abspath(start)
        while True:
            candidate = os.path.join(directory, PATH_IN_PACKAGE)
            if os.path.isfile(candidate):
                return candidate
            parent = os.path.dirname(directory)
            if parent == directory:
                break
            directory = parent
    return None


class ClientScript:
    """The script's bytes and validator, read once at start-up."""

    def __init__(self, path: "Union[str, os.PathLike[str]]") -> None:
        try:
            with open(path, "rb") as handle:
                self.body = handle.read()
        except OSError as exc:
            raise ClientScriptMissing(
                "client_js setting names %r, which cannot be read (%s); install the client "
                "with `%s` and point client_js at %s"
                % (path, exc.strerror, INSTALL_HINT, PATH_IN_PACKAGE)) from None
        self.path = path
        self.etag = '"%s"' % hashlib.sha1(self.body).hexdigest()[:20]

    def serve(self, handler: tornado.web.RequestHandler) -> None:
        """Answer ``handler``'s GET with the script, or 304 when the client has it."""
        handler.set_header("Content-Type", "text/javascript; charset=UTF-8")
        handler.set_header("Cache-Control", "public, max-age=86400")
        handler.set_header("ETag", self.etag)
        if_none_match = handler.request.headers.get("If-None-Match", "")
        if self.etag in [tag.strip() for tag in if_none_match.split(",")] or if_none_match == "*":
            handler.set_status(304)
            handler.finish()
            return
        handler.finish(self.body)
