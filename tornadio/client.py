"""Serving the socket.io-client 0.6.2 files under the router's resource.

* ``/<resource>/socket.io.js``: the client script (``client_js`` setting);
* ``/<resource>/lib/vendor/web-socket-js/WebSocketMain.swf`` (the client's
  default ``WEB_SOCKET_SWF_LOCATION``) and ``/<resource>/WebSocketMain.swf``
  (where the reference server also answers), plus the same two paths for
  ``WebSocketMainInsecure.swf``: the Flash WebSocket polyfill that the
  flashsocket transport runs on (``client_swf`` setting).

They ship in the npm package ``socket.io@0.6.18`` and are never part of this
repository. Each is read once at start-up and served with an ETag, so
browsers revalidate with a 304.

The 2011 TornadIO served none of these; without the SWF, flashsocket cannot
start with the client's defaults.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from typing import Any, Dict, Mapping, Optional

NPM_PACKAGE = "socket.io@0.6.18"
PATH_IN_PACKAGE = os.path.join("node_modules", "socket.io", "support", "socket.io-client",
                               "socket.io.js")
INSTALL_HINT = "npm install %s" % NPM_PACKAGE
#: Where the SWF files are, relative to the directory of socket.io.js (and in URLs).
SWF_DIR_IN_CLIENT = os.path.join("lib", "vendor", "web-socket-js")
SWF_URL_DIR = "lib/vendor/web-socket-js"
SWF_NAMES = ("WebSocketMain.swf", "WebSocketMainInsecure.swf")
#: The package ships the insecure build zipped (its README says to unzip it).
INSECURE_ZIP = "WebSocketMainInsecure.zip"
#: Bound on a SWF read from that zip, so a damaged archive cannot inflate without limit.
MAX_SWF_BYTES = 16 << 20

SCRIPT_TYPE = "text/javascript; charset=UTF-8"
SWF_TYPE = "application/x-shockwave-flash"


class ClientScriptMissing(FileNotFoundError):
    """A configured client file is not on disk; the message says how to get it."""


def find_client_js(*start_dirs: str) -> Optional[str]:
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


class ClientFile:
    """One file's bytes, content type and validator, read once at start-up."""

    def __init__(self, body: bytes, content_type: str, path: str) -> None:
        self.body = body
        self.content_type = content_type
        self.path = path
        self.etag = '"%s"' % hashlib.sha1(body).hexdigest()[:20]

    def serve(self, handler: Any) -> None:
        """Answer ``handler``'s GET: 200 with the body, or 304 when ``If-None-Match`` matches."""
        handler.set_header("Content-Type", self.content_type)
        handler.set_header("Cache-Control", "public, max-age=86400")
        handler.set_header("ETag", self.etag)
        if_none_match = handler.request.headers.get("If-None-Match", "")
        if self.etag in [tag.strip() for tag in if_none_match.split(",")] or if_none_match == "*":
            handler.set_status(304)
            handler.finish()
            return
        handler.finish(self.body)


class ClientScript(ClientFile):
    """socket.io.js, read from ``path``; :class:`ClientScriptMissing` if it cannot be."""

    def __init__(self, path: str) -> None:
        try:
            with open(path, "rb") as handle:
                body = handle.read()
        except OSError as exc:
            raise ClientScriptMissing(
                "client_js setting names %r, which cannot be read (%s); install the client "
                "with `%s` and point client_js at %s"
                % (path, exc.strerror, INSTALL_HINT, PATH_IN_PACKAGE)) from None
        super().__init__(body, SCRIPT_TYPE, path)


def _read_swf(directory: str, name: str) -> Optional[ClientFile]:
    """``name`` from ``directory``, or the insecure build from its zip; None if absent."""
    path = os.path.join(directory, name)
    if os.path.isfile(path):
        with open(path, "rb") as handle:
            return ClientFile(handle.read(), SWF_TYPE, path)
    zipped = os.path.join(directory, INSECURE_ZIP)
    if name != "WebSocketMainInsecure.swf" or not os.path.isfile(zipped):
        return None
    try:
        with zipfile.ZipFile(zipped) as archive:
            info = archive.getinfo(name)
            if info.file_size > MAX_SWF_BYTES:
                raise ValueError("%s in %s is over %d bytes" % (name, zipped, MAX_SWF_BYTES))
            with archive.open(info) as member:
                body = member.read(MAX_SWF_BYTES + 1)
    except (KeyError, zipfile.BadZipFile, ValueError) as exc:
        raise ClientScriptMissing("cannot read %s from %s: %s" % (name, zipped, exc)) from None
    return ClientFile(body, SWF_TYPE, "%s:%s" % (zipped, name))


def swf_files(directory: str, required: bool) -> Dict[str, ClientFile]:
    """The SWF files found in ``directory``, by URL tail under the resource.

    ``required``: the directory was configured explicitly, so a missing
    ``WebSocketMain.swf`` raises :class:`ClientScriptMissing` instead of
    leaving the SWF unserved.
    """
    files: Dict[str, ClientFile] = {}
    for name in SWF_NAMES:
        found = _read_swf(directory, name)
        if found is None:
            if required and name == "WebSocketMain.swf":
                raise ClientScriptMissing(
                    "client_swf setting names %r, which has no %s; install the client with `%s` "
                    "and point client_swf at %s" % (directory, name, INSTALL_HINT,
                                                     os.path.join(os.path.dirname(PATH_IN_PACKAGE),
                                                                  SWF_DIR_IN_CLIENT)))
            continue
        files[name] = found
        files["%s/%s" % (SWF_URL_DIR, name)] = found
    return files


def client_files(settings: Mapping[str, Any]) -> Dict[str, ClientFile]:
    """What a router serves under its resource, by URL tail (``socket.io.js``, ``WebSocketMain.swf``...).

    ``client_js``: path of socket.io.js, or None. ``client_swf``: the
    directory holding ``WebSocketMain.swf`` (and ``WebSocketMainInsecure.swf``
    or the package's ``WebSocketMainInsecure.zip``); None looks for it next to
    ``client_js``, where the npm package has it (``lib/vendor/web-socket-js``),
    and serves nothing if it is not there; False serves no SWF.
    Raises :class:`ClientScriptMissing` for a configured file that cannot be
    read, ``ValueError`` for a ``client_swf`` that is not a str, None or False.
    """
    files: Dict[str, ClientFile] = {}
    client_js = settings.get("client_js")
    if client_js:
        files["socket.io.js"] = ClientScript(client_js)
    swf_dir = settings.get("client_swf")
    if swf_dir is False:
        return files
    if swf_dir is None:
        if client_js:
            files.update(swf_files(os.path.join(os.path.dirname(os.path.abspath(client_js)),
                                                SWF_DIR_IN_CLIENT), required=False))
        return files
    if not isinstance(swf_dir, (str, os.PathLike)):
        raise ValueError("setting client_swf must be a directory path, None or False, not %r"
                         % (swf_dir,))
    files.update(swf_files(os.fspath(swf_dir), required=True))
    return files
