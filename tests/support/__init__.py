"""Test harness: a Tornado server thread, the echo app, and the browser driver.

* :mod:`support.server`  -- ``ServerThread``: an IOLoop in a daemon thread
* :mod:`support.apps`    -- ``Recorder``, ``EchoConnection``, ``make_app``
* :mod:`support.browser` -- Chromium via Playwright, ``BrowserClient``
* ``harness.js``         -- ``window.T`` in the test page, plus the htmlfile shim

The fixtures live in ``tests/conftest.py``.
"""
