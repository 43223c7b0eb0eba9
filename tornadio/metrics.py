"""``Router.stats()`` in the Prometheus text exposition format (version 0.0.4).

What operators scrape: counters end in ``_total`` and only grow, gauges are
the current value, every name starts with ``tornadio_``, and sessions are
labelled by ``transport``. The per-second rates of the stats document are
left out on purpose: Prometheus computes them from the counters
(``rate(tornadio_messages_received_total[1m])``), over any window.

``tornadio.stats.StatsHandler`` answers in this format for ``?format=prometheus``
or an ``Accept`` header that prefers ``text/plain`` (what Prometheus sends)::

    scrape_configs:
      - job_name: chat
        metrics_path: /stats
        params: {format: [prometheus]}

Several routers in one process: give each its own path (and, if they are
scraped as one job, a label such as ``render(stats, {"router": "chat"})``).

Not in the 2011 TornadIO.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Tuple

__all__ = ["CONTENT_TYPE", "render", "wants_prometheus"]

#: The Content-Type of the 0.0.4 text format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# (stats key, metric name, type, help). Counters carry their _total here.
_ROUTER_METRICS = (
    ("opened_total", "tornadio_sessions_opened_total", "counter", "Sessions created."),
    ("closed_total", "tornadio_sessions_closed_total", "counter", "Sessions ended, for any reason."),
    ("messages_in_total", "tornadio_messages_received_total", "counter",
     "Messages received from clients (heartbeat echoes not counted)."),
    ("messages_out_total", "tornadio_messages_sent_total", "counter",
     "Messages sent to clients (one per send() or broadcast delivery; heartbeats not counted)."),
    ("sessions_closing", "tornadio_sessions_closing", "gauge",
     "Closed sessions still holding last words for a polling client."),
    ("queued_bytes_total", "tornadio_queued_bytes", "gauge",
     "Outgoing data waiting for clients that are not reading, all sessions."),
    ("queued_bytes_max", "tornadio_queued_bytes_max", "gauge",
     "Outgoing data waiting for the most backlogged session."),
)
_BROADCAST_METRICS = (
    ("broadcasts", "tornadio_broadcasts_total", "counter", "Broadcasts sent from this process."),
    ("remote_received", "tornadio_broadcasts_remote_received_total", "counter",
     "Broadcasts received from other processes."),
    ("groups", "tornadio_broadcast_groups", "gauge", "Broadcast groups with members."),
    ("memberships", "tornadio_broadcast_memberships", "gauge", "Session memberships of all groups."),
)
# What tornadio.redis_broadcast.RedisBroadcastBackend.stats() reports.
_BACKEND_METRICS = (
    ("published", "tornadio_broadcast_backend_published_total", "counter",
     "Broadcasts the backend published."),
    ("not_published", "tornadio_broadcast_backend_not_published_total", "counter",
     "Broadcasts the backend could not publish (outage, overflow, shutdown)."),
    ("received", "tornadio_broadcast_backend_received_total", "counter",
     "Messages the backend received from its channel."),
    ("outages", "tornadio_broadcast_backend_outages_total", "counter",
     "Times the backend lost its connection."),
    ("connected", "tornadio_broadcast_backend_connected", "gauge",
     "1 while the backend is connected, else 0."),
    ("pending", "tornadio_broadcast_backend_pending", "gauge", "Broadcasts waiting to be published."),
    ("outage_seconds", "tornadio_broadcast_backend_outage_seconds", "gauge",
     "Length of the current outage, in seconds (absent when connected)."),
)


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    return "{%s}" % ",".join('%s="%s"' % (name, _escape_label(str(value)))
                             for name, value in labels.items())


def _number(value: Any) -> Optional[str]:
    """The sample text of a stats value, or None when it is not a number."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return None


def _check_label_names(labels: Mapping[str, str]) -> None:
    for name in labels:
        if not (isinstance(name, str) and name and (name[0].isalpha() or name[0] == "_")
                and name.isascii() and name.replace("_", "a").isalnum() and not name.startswith("__")):
            raise ValueError("invalid Prometheus label name %r" % (name,))


def render(stats: Mapping[str, Any], labels: Optional[Mapping[str, str]] = None) -> str:
    """The stats document of ``Router.stats()`` as Prometheus text.

    ``labels`` are added to every sample (e.g. ``{"router": "chat"}``).
    Keys missing from ``stats`` are skipped, so a document from an older or
    newer TornadIO still renders. Raises ``ValueError`` for a label name
    Prometheus would refuse.
    """
    constant = dict(labels or {})
    _check_label_names(constant)
    if "transport" in constant:
        raise ValueError("the label name 'transport' is taken by tornadio_sessions")
    families: List[Tuple[str, str, str, List[Tuple[Dict[str, str], str]]]] = []

    def add(name: str, kind: str, help_text: str, value: Any, extra: Optional[Dict[str, str]] = None) -> None:
        text = _number(value)
        if text is not None:
            families.append((name, kind, help_text, [(dict(constant, **(extra or {})), text)]))

    by_transport = stats.get("sessions_by_transport")
    if isinstance(by_transport, Mapping):
        samples = []
        for transport, count in sorted(by_transport.items()):
            text = _number(count)
            if text is not None:
                samples.append((dict(constant, transport=str(transport)), text))
        families.append(("tornadio_sessions", "gauge", "Live sessions, by transport.", samples))
    elif "sessions" in stats:
        add("tornadio_sessions", "gauge", "Live sessions.", stats["sessions"])
    for key, name, kind, help_text in _ROUTER_METRICS:
        add(name, kind, help_text, stats.get(key))
    broadcast = stats.get("broadcast")
    if isinstance(broadcast, Mapping):
        for key, name, kind, help_text in _BROADCAST_METRICS:
            add(name, kind, help_text, broadcast.get(key))
        backend = broadcast.get("backend_state")
        if isinstance(backend, Mapping):
            for key, name, kind, help_text in _BACKEND_METRICS:
                add(name, kind, help_text, backend.get(key))
    lines = []
    for name, kind, help_text, samples in families:
        lines.append("# HELP %s %s" % (name, help_text))
        lines.append("# TYPE %s %s" % (name, kind))
        for sample_labels, text in samples:
            lines.append("%s%s %s" % (name, _labels(sample_labels), text))
    return "\n".join(lines) + "\n"


def _accept_quality(accept: str) -> Dict[str, float]:
    """Media type -> q from an Accept header (the highest q when a type repeats)."""
    qualities: Dict[str, float] = {}
    for item in accept.split(","):
        parts = [part.strip() for part in item.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        quality = 1.0
        for parameter in parts[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities[media] = max(quality, qualities.get(media, 0.0))
    return qualities


def wants_prometheus(accept: Optional[str]) -> bool:
    """True if an ``Accept`` header prefers ``text/plain`` over ``application/json``.

    Prometheus asks for ``text/plain;version=0.0.4`` (after OpenMetrics, which
    this module does not write); browsers and ``curl`` (``*/*``) keep JSON.
    """
    if not accept:
        return False
    qualities = _accept_quality(accept)
    wildcard = qualities.get("*/*", 0.0)
    plain = qualities.get("text/plain", qualities.get("text/*", wildcard))
    as_json = qualities.get("application/json", qualities.get("application/*", wildcard))
    return plain > 0 and plain > as_json
