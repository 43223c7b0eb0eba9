"""What the example servers share: the command line, finding the browser client,
serving the page, and running until Ctrl-C or SIGTERM.

Each example (``chatroom/``, ``ping/``, ``transports/``) is one
``SocketConnection`` subclass plus an HTML page; everything around them lives
here so the examples stay about Socket.IO; what the pages share
(``static/common.css``, ``static/common.js``) is served at ``/static/``. Run an
example from anywhere, e.g. ``python examples/chatroom/chatroom.py --port 8001``.
"""
import argparse
import asyncio
import faulthandler
import logging
import os
import signal
import sys

import tornado.web

EXAMPLES_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(EXAMPLES_DIR)
#: Served at /static/: the stylesheet and script every page links.
STATIC_DIR = os.path.join(EXAMPLES_DIR, "static")

try:
    import tornadio
except ImportError:  # a checkout that was never pip-installed: use it directly
    sys.path.insert(0, REPO_ROOT)
    import tornadio

from tornadio.client import PATH_IN_PACKAGE as CLIENT_JS_IN_NPM, find_client_js  # noqa: E402
from tornadio.server import SocketServer  # noqa: E402

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8001
#: Longest wait for open connections to finish after Ctrl-C.
SHUTDOWN_GRACE = 2.0
#: A shutdown still running this many seconds after the signal prints what it
#: waits for (every thread's stack, every pending task), to stderr.
SLOW_SHUTDOWN = 6.0

log = logging.getLogger("examples")


# -- command line -----------------------------------------------------------------
def _port(text):
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a port number" % text) from None
    if not 0 <= value < 65536:
        raise argparse.ArgumentTypeError("port %d is outside 0-65535" % value)
    return value


def parse_args(description, argv=None, add_arguments=None):
    """The options every example takes; ``add_arguments(parser)`` may add more."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help="address to listen on (default: %(default)s; "
                             "0.0.0.0 lets other machines connect)")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT,
                        help="HTTP port for the page and Socket.IO; 0 picks a free one "
                             "(default: %(default)s)")
    parser.add_argument("--client-js", metavar="PATH",
                        help="the socket.io 0.6 browser client to serve at "
                             "/socket.io/socket.io.js (default: found under node_modules/ "
                             "after `npm install`)")
    parser.add_argument("--flash-policy-port", type=_port, metavar="N",
                        help="also answer Flash socket policy requests on port N, for "
                             "flashsocket clients (843 is the port Flash asks first and "
                             "needs root); off by default")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log every HTTP request and debug messages")
    if add_arguments is not None:
        add_arguments(parser)
    return parser.parse_args(argv)


def client_js_or_exit(args):
    """Path of socket.io.js, or exit with a message saying how to get it."""
    if args.client_js:
        if not os.path.isfile(args.client_js):
            sys.exit("error: --client-js %s: no such file. `npm install` in %s puts the "
                     "client at %s." % (args.client_js, REPO_ROOT, CLIENT_JS_IN_NPM))
        return os.path.abspath(args.client_js)
    found = find_client_js(REPO_ROOT, os.getcwd())
    if found is None:
        sys.exit("error: the socket.io 0.6 browser client (socket.io.js) was not found.\n"
                 "Run `npm install` in %s (it fetches socket.io@0.6.18 into node_modules/), "
                 "or pass --client-js PATH." % REPO_ROOT)
    return found


# -- the application ----------------------------------------------------------------
class PageHandler(tornado.web.RequestHandler):
    """Serves one HTML file, read once at start-up."""

    def initialize(self, body):
        self.body = body

    def set_default_headers(self):
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")

    def get(self):
        self.finish(self.body)


class StaticHandler(tornado.web.StaticFileHandler):
    """``examples/static/``, revalidated on every load like the pages (an edit
    shows on reload; unchanged files cost a 304)."""

    def set_extra_headers(self, path):
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Content-Type-Options", "nosniff")


def make_app(connection, page_path, args, router_settings=None):
    """``/`` serves ``page_path``, ``/static/...`` the files in ``STATIC_DIR``;
    ``/socket.io/...`` is the TornadIO router.

    The router also serves the client at ``/socket.io/socket.io.js`` (its
    ``client_js`` setting), which is where the pages load it from. The router
    class is ``app.socket_io_router`` (for its ``broadcaster()``, say).
    """
    settings = dict(router_settings or {})
    settings["client_js"] = client_js_or_exit(args)
    router = tornadio.get_router(connection, settings)
    with open(page_path, "rb") as page:
        body = page.read()
    app = tornado.web.Application(
        [(r"/", PageHandler, {"body": body}),
         (r"/static/(.*)", StaticHandler, {"path": STATIC_DIR}),
         router.route()],
        socket_io_address=args.host,
        socket_io_port=args.port,
        flash_policy_server=args.flash_policy_port is not None,
        flash_policy_port=843 if args.flash_policy_port is None else args.flash_policy_port,
    )
    app.socket_io_router = router
    return app


# -- running --------------------------------------------------------------------------
def page_url(host, port):
    """The URL to print: a wildcard address is reachable as localhost."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = "[%s]" % host
    return "http://%s:%d/" % (host, port)


def run(app, title, args, on_start=None, on_stop=None):
    """Serve ``app`` until SIGINT or SIGTERM; print where to point the browser.

    ``on_start()`` and ``on_stop()`` are optional coroutine functions, awaited
    inside the event loop: ``on_start`` before listening (it returns None, or a
    message saying why the example cannot start), ``on_stop`` last, after the
    sessions have ended, whether the example started or not.
    """
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    if not args.verbose:
        # One access-log line per long poll drowns everything else.
        logging.getLogger("tornado.access").setLevel(logging.WARNING)
    try:
        error = asyncio.run(_serve(app, title, args, on_start, on_stop))
    finally:
        faulthandler.cancel_dump_traceback_later()
    if error:
        sys.exit("error: " + error)


async def _serve(app, title, args, on_start, on_stop):
    stop = asyncio.Event()
    _on_stop_signals(stop.set)
    try:
        error = await on_start() if on_start is not None else None
        if error:
            return error
        try:
            server = SocketServer(app, auto_start=False)
        except OSError as exc:  # most often: the port is taken
            where, hint = "%s port %d" % (args.host, args.port), "--port"
            if args.flash_policy_port is not None:
                where += " or Flash policy port %d" % args.flash_policy_port
                hint += " / --flash-policy-port"
            return "cannot listen on %s: %s (choose another with %s)" % (
                where, exc.strerror or exc, hint)
        print("%s running: open %s" % (title, page_url(args.host, server.port)), flush=True)
        print("Press Ctrl-C to stop.", flush=True)
        await stop.wait()
        log.info("shutting down")
        _report_if_slow(SLOW_SHUTDOWN)
        # Stops listening, ends every session (on_close runs), and waits a bounded
        # time for the browsers' connections to close.
        await server.shutdown(SHUTDOWN_GRACE)
    finally:
        if on_stop is not None:
            await on_stop()


def _report_if_slow(seconds):
    """Should the exit take longer than ``seconds``, say what it is waiting for.

    A thread's stack comes from faulthandler (it works even if the loop is
    stuck); the pending tasks from the loop, should it still run. Both are
    cancelled by a normal exit (see ``run``).
    """
    faulthandler.dump_traceback_later(seconds, exit=False)
    asyncio.get_running_loop().call_later(seconds, _print_pending_tasks)


def _print_pending_tasks():
    tasks = [task for task in asyncio.all_tasks() if not task.done()]
    print("slow shutdown: %d task(s) pending" % len(tasks), file=sys.stderr, flush=True)
    for task in tasks:
        print("-- %r" % task, file=sys.stderr)
        task.print_stack(file=sys.stderr)
    sys.stderr.flush()


def _on_stop_signals(callback):
    """The first SIGINT or SIGTERM calls ``callback``; a second one exits at once."""
    loop = asyncio.get_running_loop()
    signalled = []

    def on_signal(signum):
        if signalled:
            log.warning("signal %d again: exiting without waiting for the shutdown", signum)
            logging.shutdown()
            os._exit(128 + signum)
        signalled.append(signum)
        callback()

    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(signum, on_signal, signum)
        except (NotImplementedError, RuntimeError):  # Windows: no loop signal handlers
            signal.signal(signum, lambda number, _: loop.call_soon_threadsafe(on_signal, number))
