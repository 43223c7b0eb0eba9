"""examples/transports: the picker, and an echo over each transport Chromium can run."""
from playwright.sync_api import expect

from example_steps import count_of, expect_contains, expect_text, submit_text

RUNNABLE = ["websocket", "xhr-polling", "jsonp-polling"]
# Flash, IE's ActiveXObject and Gecko's XMLHttpRequest.multipart are all gone.
UNAVAILABLE = ["flashsocket", "htmlfile", "xhr-multipart"]


def picker_state(page):
    """[(transport, badge text, radio disabled, radio checked)] in page order."""
    return page.locator("#choices .choice").evaluate_all(
        """rows => rows.map(r => [r.dataset.transport, r.querySelector('.badge').textContent,
                                  r.querySelector('input').disabled,
                                  r.querySelector('input').checked])""")


def test_picker_marks_what_this_browser_cannot_run(example_server, example_pages,
                                                  save_screenshot):
    server = example_server("transports", "--port", "0")
    page = example_pages(server.url)
    rows = page.run(picker_state)
    assert [row[0] for row in rows] == [
        "websocket", "flashsocket", "htmlfile", "xhr-multipart", "xhr-polling", "jsonp-polling"]
    for name, badge, disabled, checked in rows:
        if name in UNAVAILABLE:
            assert (badge, disabled) == ("unavailable", True), name
        else:
            assert (badge, disabled) == ("available", False), name
        assert checked == (name == "websocket")
    save_screenshot(page, "transports-start")
    example_pages.assert_no_console_errors()


def echo_round_trip(page, transport, text):
    submit_text(page, "#text", text)
    echo = page.locator('#log li.echo[data-transport="%s"]' % transport).last
    expect(echo).to_contain_text(text)
    expect(echo.locator(".via")).to_have_text(transport)


def test_echo_over_each_runnable_transport(example_server, example_pages, save_screenshot):
    server = example_server("transports", "--port", "0")
    page = example_pages(server.url)
    for index, name in enumerate(RUNNABLE):
        page.run(lambda raw: raw.check("#t-" + name))
        if index == 0:
            page.run(lambda raw: raw.click("#connect"))  # later ones switch on the change
        page.run(expect_text, "#status", "Connected · " + name)
        page.run(expect_contains, "#log", "The server sees this session as %s." % name)
        for text in ("hello over " + name, "<i>markup stays text</i> & ü ✓"):
            page.run(echo_round_trip, name, text)
    assert page.run(count_of, "#log i") == 0
    assert page.run(count_of, "#log li.echo") == 2 * len(RUNNABLE)
    save_screenshot(page, "transports")

    page.run(lambda raw: raw.click("#disconnect"))
    page.run(expect_text, "#status", "Not connected")
    assert page.run(lambda raw: raw.is_disabled("#send"))
    example_pages.assert_no_console_errors()
