"""Router.stats() in the Prometheus text format, read back with prometheus_client's parser.

The server is real (loopback, StatsHandler next to the router) and the
traffic comes from tornadio.testing clients over websocket and xhr-polling.
"""
import json

import pytest
import tornado.web
from prometheus_client.parser import text_string_to_metric_families

import tornadio
from tornadio import metrics, testing
from tornadio.redis_broadcast import RedisBroadcastBackend
from tornadio.stats import StatsHandler
from support.wire import Events, echo_connection, fetch, run

PROMETHEUS_ACCEPT = ("application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
                     "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1")
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def families(text):
    """name -> (type, documentation, {sample name + labels: value})."""
    parsed = {}
    for family in text_string_to_metric_families(text):
        samples = {}
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            assert key not in samples, "duplicate sample %r" % (key,)
            samples[key] = sample.value
        assert family.name not in parsed, "family %s twice" % family.name
        parsed[family.name] = (family.type, family.documentation, samples)
    return parsed


def value(parsed, family, sample=None, **labels):
    return parsed[family][2][(sample or family, tuple(sorted(labels.items())))]


def test_stats_handler_serves_prometheus_text_that_matches_the_json():
    events = Events()

    async def body():
        router = tornadio.get_router(echo_connection(events), {"session_expiry": 5})
        app = tornado.web.Application([router.route(), (r"/stats", StatsHandler, {"router": router})])
        async with testing.serve(app) as base:
            async with testing.connect(base) as ws, testing.connect(base, "xhr-polling") as poller:
                for client in (ws, poller):
                    for text in ("one", "two", "three"):
                        client.send(text)
                    assert [await client.receive() for _ in range(3)] == ["one", "two", "three"]
                events.connections[0].join("room")  # a local broadcaster appears in the stats
                events.connections[0].broadcast("hi all", include_self=True)
                assert await ws.receive() == "hi all" and await poller.receive() == "hi all"
                response = await fetch(base + "/stats?format=prometheus")
                as_json = json.loads((await fetch(base + "/stats")).body)
            return response, as_json

    response, as_json = run(body())
    assert response.code == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = response.body.decode("utf-8")
    parsed = families(text)

    for name, (kind, documentation, samples) in parsed.items():
        assert name.startswith("tornadio_") and documentation, name
        assert kind in ("counter", "gauge"), name
        for sample_name, _ in samples:
            assert sample_name.endswith("_total") == (kind == "counter"), sample_name
    assert value(parsed, "tornadio_sessions", transport="websocket") == 1
    assert value(parsed, "tornadio_sessions", transport="xhr-polling") == 1
    assert value(parsed, "tornadio_sessions", transport="jsonp-polling") == 0
    assert parsed["tornadio_sessions_opened"][0] == "counter"
    # Nothing happened between the two requests: the counters equal the JSON document's.
    assert value(parsed, "tornadio_sessions_opened", "tornadio_sessions_opened_total") == \
        as_json["opened_total"] == 2
    assert value(parsed, "tornadio_messages_received", "tornadio_messages_received_total") == \
        as_json["messages_in_total"] == 6
    assert value(parsed, "tornadio_messages_sent", "tornadio_messages_sent_total") == \
        as_json["messages_out_total"] == 8
    assert value(parsed, "tornadio_sessions_closed", "tornadio_sessions_closed_total") == \
        as_json["closed_total"]
    assert value(parsed, "tornadio_queued_bytes") == as_json["queued_bytes_total"]
    assert value(parsed, "tornadio_broadcasts", "tornadio_broadcasts_total") == 1
    assert value(parsed, "tornadio_broadcast_groups") == 1
    assert value(parsed, "tornadio_broadcast_memberships") == 1
    # Rates are Prometheus's job (rate() over the counters), not exported.
    assert not [name for name in parsed if "per_second" in name]


@pytest.mark.parametrize("accept, query, wanted", [
    (PROMETHEUS_ACCEPT, "", "prometheus"),
    ("text/plain", "", "prometheus"),
    ("*/*", "", "json"),
    (BROWSER_ACCEPT, "", "json"),
    ("application/json", "", "json"),
    (None, "", "json"),
    (PROMETHEUS_ACCEPT, "?format=json", "json"),
    ("application/json", "?format=prometheus", "prometheus"),
    (None, "?format=xml", 400),
])
def test_format_is_negotiated(accept, query, wanted):
    async def body():
        router = tornadio.get_router(echo_connection(Events()))
        app = tornado.web.Application([router.route(), (r"/stats", StatsHandler, {"router": router})])
        async with testing.serve(app) as base:
            return await fetch(base + "/stats" + query, headers={"Accept": accept} if accept else None)

    response = run(body())
    if wanted == 400:
        assert response.code == 400
        return
    assert response.code == 200
    assert "Accept" in response.headers.get("Vary", "")
    if wanted == "json":
        assert response.headers["Content-Type"].startswith("application/json")
        assert "opened_total" in json.loads(response.body)
    else:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert "tornadio_sessions_opened" in families(response.body.decode())


def test_redis_backend_state_and_labels_render():
    """A real backend's stats document (not connected: no redis-server needed) and hostile label values."""
    backend = RedisBroadcastBackend(url="redis://127.0.0.1:1/0")
    stats = {
        "sessions": 0, "sessions_by_transport": {"websocket": 0}, "opened_total": 3,
        "closed_total": 3, "messages_in_total": 0, "messages_out_total": 0,
        "sessions_closing": 0, "queued_bytes_total": 0, "queued_bytes_max": 0,
        "broadcast": {"channel": "Chat", "backend": "RedisBroadcastBackend", "groups": 0,
                      "memberships": 0, "broadcasts": 2, "remote_received": 5,
                      "backend_state": backend.stats()},
    }
    hostile = 'chat "main"\\\nroom'
    parsed = families(metrics.render(stats, {"router": hostile}))
    assert value(parsed, "tornadio_broadcast_backend_connected", router=hostile) == 0
    assert value(parsed, "tornadio_broadcast_backend_published",
                 "tornadio_broadcast_backend_published_total", router=hostile) == 0
    assert value(parsed, "tornadio_broadcasts_remote_received",
                 "tornadio_broadcasts_remote_received_total", router=hostile) == 5
    assert value(parsed, "tornadio_sessions", transport="websocket", router=hostile) == 0
    with pytest.raises(ValueError):
        metrics.render(stats, {"bad-name": "x"})
    with pytest.raises(ValueError):
        metrics.render(stats, {"transport": "x"})


def test_a_partial_document_still_renders():
    parsed = families(metrics.render({"sessions": 4, "opened_total": 9}))
    assert value(parsed, "tornadio_sessions") == 4
    assert value(parsed, "tornadio_sessions_opened", "tornadio_sessions_opened_total") == 9
    assert set(parsed) == {"tornadio_sessions", "tornadio_sessions_opened"}
