"""Small page steps for the example tests, run in the browser thread.

Each takes the raw Playwright page first, so a test calls them as
``handle.run(expect_text, "#status", "Connected · websocket")``.
"""
from playwright.sync_api import expect


def expect_text(page, selector, text, timeout=None):
    expect(page.locator(selector)).to_have_text(text, timeout=timeout)


def expect_contains(page, selector, text, timeout=None):
    expect(page.locator(selector)).to_contain_text(text, timeout=timeout)


def text_of(page, selector):
    return page.locator(selector).text_content()


def texts_of(page, selector):
    return page.locator(selector).all_text_contents()


def count_of(page, selector):
    return page.locator(selector).count()


def submit_text(page, selector, text):
    """Type ``text`` into an input and press Enter."""
    page.fill(selector, text)
    page.press(selector, "Enter")
