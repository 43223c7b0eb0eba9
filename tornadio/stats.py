"""Live statistics of a router: ``Router.stats()`` and an optional JSON handler.

``Router.stats()`` returns a dict (every value JSON-able)::

    {"pid": 4242, "time": 1700000000.0,
     "sessions": 3, "sessions_closing": 0,
     "sessions_by_transport": {"websocket": 2, "xhr-polling": 1, ...},
     "opened_total": 10, "closed_total": 7,
     "messages_in_total": 120, "messages_out_total": 480,
     "messages_in_per_second": 2.5, "messages_out_per_second": 10.0,
     "rate_window_seconds": 10.0,
     "queued_bytes_total": 0, "queued_bytes_max": 0,
     "broadcast": {...} or None, "relay": {...} or None}

Rates are sampled from the session container's counters over a sliding window
(router setting ``stats_window``, seconds): a sampler records the counters every
second from the first ``stats()`` call on, so the first reading of a process
shows rates of 0 until a second sample exists. Queue depths are the bytes
(about: code points) waiting for clients that are not reading right now.

To serve it::

    app = tornado.web.Application([ChatRouter.route(),
                                   (r"/stats", StatsHandler, {"router": ChatRouter})])

The document holds counts only, no session ids; still, put it behind whatever
guards your admin pages.
"""
import asyncio
import json
import os
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Deque, Dict, Optional, Tuple

import tornado.web
from tornado.ioloop import PeriodicCallback

from tornadio import metrics

if TYPE_CHECKING:
    from tornadio.router import Router

__all__ = ["RouterStats", "StatsHandler"]

#: Seconds between two samples of the counters.
SAMPLE_INTERVAL = 1.0


class RouterStats:
    """Counter samples of one router, for the per-second rates."""

    def __init__(self, router: "Router", window: Optional[float] = None,
                 interval: float = SAMPLE_INTERVAL) -> None:
        # Weak: the router owns this object, which must not keep it alive.
        self._router_ref = weakref.ref(router)
        if window is None:
            window = router.settings["stats_window"]
        self.window = float(window)
        self.interval = interval
        # (monotonic time, messages in, messages out), oldest first.
        self._samples: Deque[Tuple[float, int, int]] = deque()
        self._timer: Optional[PeriodicCallback] = None
        self.sample()
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass  # not on the IOLoop: samples are then taken at each snapshot
        else:
            self._timer = PeriodicCallback(self.sample, interval * 1000)
            self._timer.start()

    def _counters(self) -> Tuple[float, int, int]:
        router = self._router_ref()
        assert router is not None  # sample() stops the timer once the router is gone
        container = router.sessions()
        return (time.monotonic(), container.messages_in, container.messages_out)

    def sample(self) -> None:
        """Record the container counters now; forget what fell out of the window."""
        if self._router_ref() is None:
            self.stop()
            return
        now = self._counters()
        samples = self._samples
        samples.append(now)
        horizon = now[0] - self.window
        # Keep one sample at or before the horizon so the window stays full.
        while len(samples) > 2 and samples[1][0] <= horizon:
            samples.popleft()

    def rates(self) -> Tuple[float, float, float]:
        """(messages in/s, messages out/s, seconds covered) over the window."""
        now = self._counters()
        if not self._samples or now[0] - self._samples[-1][0] >= self.interval:
            self.sample()
        horizon = now[0] - self.window
        oldest = self._samples[0]
        for candidate in self._samples:
            if candidate[0] >= horizon:
                oldest = candidate
                break
        span = now[0] - oldest[0]
        if span <= 0:
            return 0.0, 0.0, 0.0
        return ((now[1] - oldest[1]) / span, (now[2] - oldest[2]) / span, span)

    def snapshot(self) -> Dict[str, Any]:
        """The statistics document (see the module docstring)."""
        router = self._router_ref()
        assert router is not None  # the router calls this; it owns this object
        container = router.sessions()
        by_transport = {name: 0 for name in router.settings["enabled_protocols"]}
        queued_total = queued_max = 0
        for session in container.sessions.values():
            by_transport[session.transport] = by_transport.get(session.transport, 0) + 1
            queued = session.queued_bytes
            queued_total += queued
            if queued > queued_max:
                queued_max = queued
        rate_in, rate_out, span = self.rates()
        broadcaster = router.broadcaster() if router.has_broadcaster else None
        return {
            "pid": os.getpid(),
            "time": time.time(),
            "sessions": len(container.sessions),
            "sessions_closing": len(container.closing),
            "sessions_by_transport": by_transport,
            "opened_total": container.opened_total,
            "closed_total": container.closed_total,
            "messages_in_total": container.messages_in,
            "messages_out_total": container.messages_out,
            "messages_in_per_second": round(rate_in, 3),
            "messages_out_per_second": round(rate_out, 3),
            "rate_window_seconds": round(span, 3),
            "queued_bytes_total": queued_total,
            "queued_bytes_max": queued_max,
            "broadcast": None if broadcaster is None else broadcaster.stats(),
            "relay": None if router.relay is None else router.relay.stats(),
        }

    def stop(self) -> None:
        """Stop sampling (the router's shutdown)."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None


class StatsHandler(tornado.web.RequestHandler):
    """``GET`` → ``router.stats()`` as JSON, or in the Prometheus text format.

    Route: ``(r"/stats", StatsHandler, {"router": R})``. Prometheus text
    (:mod:`tornadio.metrics`) for ``?format=prometheus`` or an ``Accept``
    header preferring ``text/plain`` (a Prometheus scrape); ``?format=json``
    forces JSON; any other ``format`` is a 400.
    """

    def initialize(self, router: "Router") -> None:
        self.router = router

    def compute_etag(self) -> Optional[str]:
        return None

    def get(self) -> None:
        wanted = self.get_query_argument("format", None)
        if wanted not in (None, "json", "prometheus"):
            raise tornado.web.HTTPError(400, reason="format must be json or prometheus")
        self.set_header("Cache-Control", "no-store")
        self.add_header("Vary", "Accept")
        if wanted == "prometheus" or (wanted is None and
                                      metrics.wants_prometheus(self.request.headers.get("Accept"))):
            self.set_header("Content-Type", metrics.CONTENT_TYPE)
            self.finish(metrics.render(self.router.stats()))
            return
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps(self.router.stats(), sort_keys=True))
