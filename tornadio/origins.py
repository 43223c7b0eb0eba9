"""One origin policy for WebSocket ``check_origin``, flashsocket, CORS and the Flash policy.

``allowed_origins`` says which web pages may talk to this server (SECURITY.rst):

``None`` (the default)
    pages of the host the request is addressed to, on any port: the 2011
    layout (page on port 80, socket.io on 8001) works, another site's page is
    refused. The host is the request's ``Host`` header (behind a proxy: pass it
    on, as ``proxy_set_header Host $http_host`` does).
``"*"``
    any page, and pages without an origin (``null``: sandboxed frames, files).
a list of entries
    exactly these. An entry is a full origin (``https://app.example:8443``,
    compared as scheme, host and port, default ports filled in), a host
    (``app.example``: its default port), a host and port (``app.example:8080``),
    a host on any port (``app.example:*``), or ``*`` for anything.
a callable ``f(origin) -> bool``
    decides alone.

A host (the default's, or an entry without scheme) never admits a page less
secure than the connection: https pages always, http pages only when this
server is reached over http (``request.protocol``, which follows
``X-Forwarded-Proto`` with ``xheaders=True``). So listing ``app.example`` on a
TLS server does not let a page of ``http://app.example``, which anyone on the
network can rewrite, in; list that full origin to allow it.

.. versionchanged:: 1.0
   ``None`` used to allow every origin, and a host entry every scheme and port.
"""
import functools
import logging
from typing import Any, Callable, Collection, Literal, Optional, Set, Tuple, Union
from urllib.parse import urlsplit

from tornado.httputil import HTTPServerRequest

log = logging.getLogger("tornadio.origins")

#: The policy that allows every page.
ANY = "*"
#: The reason refused requests carry in the access log.
REFUSED = "origin not allowed by allowed_origins"
#: Distinct refused origins logged before the memory of them starts over.
MAX_REPORTED = 1000

#: An ``allowed_origins`` value: None, ``"*"``, a list of entries, or ``f(origin) -> bool``
#: (``origin`` is None or ``"null"`` for a page without one).
OriginPolicy = Union[None, str, Collection[str], Callable[[Optional[str]], Any]]
#: An origin as (scheme, host, port), lower case, the default port filled in.
SplitOrigin = Tuple[str, str, int]
#: A parsed entry: ("any",), ("origin", SplitOrigin) or ("host", host, port or None or "*").
ParsedEntry = Union[Tuple[Literal["any"]], Tuple[Literal["origin"], SplitOrigin],
                    Tuple[Literal["host"], str, Union[int, Literal["*"], None]]]

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_reported: Set[str] = set()


def _split(origin: str) -> Optional[SplitOrigin]:
    """(scheme, host, port) of an origin, default port filled in; None if malformed."""
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname
        port = parts.port
    except ValueError:  # e.g. "http://[abc": an attacker's header, not our error
        return None
    if not parts.scheme or not hostname:
        return None
    scheme = parts.scheme.lower()
    return scheme, hostname.lower(), port or _DEFAULT_PORTS.get(scheme, 80)


@functools.lru_cache(maxsize=256)
def _parse_entry(entry: str) -> ParsedEntry:
    """An entry as ("origin", (scheme, host, port)) or ("host", host, port or None or "*").

    ``host`` is ``*`` for any host; ValueError for an entry that can never match.
    """
    if entry == ANY:
        return ("any",)
    if "://" in entry:
        split = _split(entry)
        if split is None:
            raise ValueError("allowed_origins entry %r is not an origin" % entry)
        return ("origin", split)
    any_port = entry.endswith(":*")
    try:
        parts = urlsplit("//" + (entry[:-2] if any_port else entry))
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or parts.path or parts.query or parts.username:
        raise ValueError("allowed_origins entry %r is neither an origin nor a host[:port]"
                         % entry)
    if any_port and port is not None:
        raise ValueError("allowed_origins entry %r has two ports" % entry)
    return ("host", host.lower(), "*" if any_port else port)


def _secure_enough(page_scheme: str, request_scheme: str) -> bool:
    """An https page always; an http page only over an http connection."""
    return page_scheme == "https" or (page_scheme == "http" and request_scheme != "https")


def _entry_matches(entry: str, page: SplitOrigin, request_scheme: str) -> bool:
    parsed = _parse_entry(entry)
    if parsed[0] == "any":
        return True
    if parsed[0] == "origin":
        return parsed[1] == page
    _, host, port = parsed
    scheme, page_host, page_port = page
    if host not in ("*", page_host) or not _secure_enough(scheme, request_scheme):
        return False
    if port == "*":
        return True
    return page_port == (port or _DEFAULT_PORTS[scheme])


def request_host(host_header: Optional[str]) -> str:
    """The host name (lower case, no port, IPv6 without brackets) of a Host header."""
    try:
        return (urlsplit("//" + (host_header or "")).hostname or "").lower()
    except ValueError:
        return ""


def origin_of(url: str) -> Optional[str]:
    """The origin of ``url`` (a str such as a Referer header).

    :returns: ``scheme://host[:port]``, or None when ``url`` has no scheme or host
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if not parts.scheme or not parts.netloc:
        return None
    return "%s://%s" % (parts.scheme, parts.netloc)


def origin_allowed(policy: OriginPolicy, origin: Optional[str], host: Optional[str],
                   scheme: str) -> bool:
    """Whether a page at ``origin`` may talk to this server.

    :param policy: an ``allowed_origins`` value: None (the request's own host),
        ``"*"``, a list, or a callable
    :param origin: the ``Origin`` header's value (None or ``"null"`` when absent)
    :param host: the request's ``Host`` header, compared by the default policy
    :param scheme: the scheme the request came in by (``request.protocol``),
        which host entries compare with the page's
    :returns: bool; a callable policy's own exceptions propagate
    """
    if policy == ANY:
        return True
    if callable(policy):
        return bool(policy(origin))
    if not origin or origin == "null":
        return policy is not None and ANY in policy
    page = _split(origin)
    if page is None:
        return False
    if policy is None:
        return (page[1] == request_host(host) and page[0] in ("http", "https")
                and _secure_enough(page[0], scheme))
    return any(_entry_matches(entry, page, scheme) for entry in policy)


def check(policy: OriginPolicy, origin: str, request: HTTPServerRequest,
          what: str) -> bool:
    """:func:`origin_allowed` for a Tornado ``request``, logging a refusal.

    The first refusal of each origin logs one warning that names the setting;
    the request's access-log line carries :data:`REFUSED` each time. ``what``
    names the transport for that warning. Returns whether it is allowed.
    """
    if origin_allowed(policy, origin, request.host, request.protocol):
        return True
    if origin not in _reported:
        if len(_reported) >= MAX_REPORTED:
            _reported.clear()
        _reported.add(origin)
        if policy is None:
            why = ("allowed_origins is not set, and its default admits pages of %s (any port) "
                   "only" % (request_host(request.host) or "the server's host"))
        elif callable(policy):
            why = "the allowed_origins callable said no"
        else:
            why = "it is not in allowed_origins"
        log.warning("%s from a page of %s refused: %s; list the origin there, or set "
                    "allowed_origins='*' for any origin (SECURITY.rst)", what, origin[:200], why)
    return False


def validate_policy(policy: Any) -> None:
    """Check an ``allowed_origins`` value at set-up time.

    :raises ValueError: for a policy that could never work
    """
    if policy is None or policy == ANY or callable(policy):
        return
    if isinstance(policy, str) or not all(isinstance(entry, str) for entry in policy):
        raise ValueError("allowed_origins must be None, '*', a callable or a list of strings,"
                         " not %r" % (policy,))
    for entry in policy:
        _parse_entry(entry)
