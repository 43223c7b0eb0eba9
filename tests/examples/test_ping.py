"""examples/ping: the page measures round trips over the transport it is given."""
import re

import pytest

from example_steps import count_of, expect_text, text_of

NUMBER = re.compile(r"\d+(\.\d+)?")


def wait_for_samples(page, count):
    page.wait_for_function(
        "n => Number(document.getElementById('samples').textContent) >= n", arg=count,
        polling=50)


def select_transport(page, name):
    page.select_option("#transport", name)


@pytest.mark.parametrize("transport", ["websocket", "xhr-polling", "jsonp-polling"])
def test_ping_shows_round_trip_times(transport, example_server, example_pages, save_screenshot):
    server = example_server("ping", "--port", "0")
    page = example_pages(server.url + "?transport=%s&interval=100" % transport)

    page.run(expect_text, "#status", "Connected · " + transport)
    assert page.run(lambda raw: raw.input_value("#transport")) == transport
    page.run(wait_for_samples, 10)
    values = {name: page.run(text_of, "#" + name) for name in ("last", "median", "p95")}
    for name, text in values.items():
        assert NUMBER.fullmatch(text), "%s shows %r, not a number of ms" % (name, text)
    last, median, p95 = (float(values[name]) for name in ("last", "median", "p95"))
    assert 0 < median <= p95 < 5000
    assert 0 < last < 5000
    assert page.run(count_of, "#bars .bar") >= 10
    assert page.run(text_of, "#lost") == ""
    save_screenshot(page, "ping-" + transport)
    example_pages.assert_no_console_errors()


def test_switching_transport_restarts_the_measurement(example_server, example_pages):
    server = example_server("ping", "--port", "0")
    page = example_pages(server.url + "?interval=100")
    page.run(expect_text, "#status", "Connected · websocket")
    page.run(wait_for_samples, 3)

    page.run(select_transport, "jsonp-polling")
    page.run(expect_text, "#status", "Connected · jsonp-polling")
    page.run(wait_for_samples, 3)
    assert NUMBER.fullmatch(page.run(text_of, "#median"))
    example_pages.assert_no_console_errors()
