"""One origin policy for WebSocket ``check_origin``, flashsocket, CORS and the Flash policy.

``allowed_origins`` is ``None`` (any origin: what the 0.6 reference server
allowed with its default ``*:*``), a list of entries, or a callable
``f(origin) -> bool``. A list entry is a full origin (``https://app.example:8443``),
a host with or without port (``app.example``, ``app.example:8080``), a host
with ``*`` for any port (``app.example:*``), or ``*`` for anything.
"""
from urllib.parse import urlsplit


def _split(origin):
    try:
        parts = urlsplit(origin)
        hostname = parts.hostname
        port = parts.port
    except ValueError:  # e.g. "http://[abc": an attacker's header, not our error
        return None
    if not parts.scheme or not hostname:
        return None
    port = port or (443 if parts.scheme in ("https", "wss") else 80)
    return parts.scheme, hostname.lower(), port


def _entry_matches(entry, scheme, host, port):
    if entry == "*":
        return True
    if "://" in entry:
        wanted = _split(entry)
        return wanted is not None and wanted == (scheme, host, port)
    entry_host, _, entry_port = entry.lower().rpartition(":")
    if not entry_host or not entry_port.isdigit() and entry_port != "*":
        entry_host, entry_port = entry.lower(), ""
    if entry_host not in (host, "*"):
        return False
    return entry_port in ("", "*") or int(entry_port) == port


def origin_of(url):
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


def origin_allowed(policy, origin):
    """Whether a browser page at ``origin`` may talk to this server.

    :param policy: an ``allowed_origins`` value: None, a list, or a callable
    :param origin: the ``Origin`` header's value (None or ``"null"`` when absent)
    :returns: bool; a callable policy's own exceptions propagate
    """
    if policy is None:
        return True
    if callable(policy):
        return bool(policy(origin))
    if not origin or origin == "null":
        return "*" in policy
    split = _split(origin)
    if split is None:
        return False
    return any(_entry_matches(entry, *split) for entry in policy)


def validate_policy(policy):
    """Check an ``allowed_origins`` value at set-up time.

    :raises ValueError: ``policy`` is neither None, a callable, nor a list of str
    """
    if policy is None or callable(policy):
        return
    if isinstance(policy, str) or not all(isinstance(entry, str) for entry in policy):
        raise ValueError("allowed_origins must be None, a callable or a list of strings")
