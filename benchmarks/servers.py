"""Benchmark servers, one process per contender, listening on 127.0.0.1.

    python benchmarks/servers.py --kind plain|tornadio|socketio [--port 0]

``--nodelay`` sets TCP_NODELAY on every WebSocket (all kinds alike, from the
benchmark app: the libraries are not modified). Prints one JSON line
``{"ready": true, "port": P, "pid": PID, "variants": [...]}`` once listening,
then serves until its stdin reaches EOF (run.py holds the other end, so a
server never outlives the run) or it receives SIGTERM.

Every server has the same instrumentation at ``GET /_bench/stats``:
``rss_kb`` (VmRSS), ``sessions`` (live connections/sessions), ``?gc=1`` to
collect garbage first, ``?lag=start`` / ``?lag=stop`` to sample the IOLoop's
scheduling delay in between (reported as ``lag``: p50/p99/max in ms).

Endpoints per kind
    plain     /echo (echo), /fanout (each message to every /fanout client,
              a plain loop over a class-level set calling write_message)
    tornadio  /echo/<transport>/... (EchoConnection: send back what comes)
              /fanout/websocket (FanoutConnection: iterate a class-level
              set of connections and call send() on each)
              /bcast/websocket (the same fan-out through the library's
              SocketConnection.broadcast(), when the library has it)
    socketio  python-socketio AsyncServer(async_mode="tornado") at /socket.io/;
              namespace "/" echoes "message" events to the sender, "/fan"
              broadcasts each "message" event to the namespace
    handlp    /echo/xhr-polling/..., /echo/jsonp-polling/...: a hand-written
              Tornado long-poll echo (RequestHandler GET held until data, POST
              answered "ok", a dict of sessions, nothing else)
    barelp    the same echo on a bare tornado.httputil delegate given to
              HTTPServer (no Application, no RequestHandler): Tornado's floor

``--loop uvloop`` runs any kind on uvloop (an optional benchmark dependency).
socket.io 0.6.18 on node is benchmarks/node_sio06.js (same paths and stats).
"""
import argparse
import asyncio
import gc
import json
import os
import secrets
import signal
import sys
import time
from collections import deque
from urllib.parse import unquote_to_bytes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import emit, percentile, raise_nofile, rss_kb, use_repo_tornadio  # noqa: E402

import tornado.httputil  # noqa: E402
import tornado.ioloop  # noqa: E402
import tornado.web  # noqa: E402
import tornado.websocket  # noqa: E402
from tornado.httpserver import HTTPServer  # noqa: E402
from tornado.netutil import bind_sockets  # noqa: E402


class LagMonitor:
    """Samples how late a 5 ms sleep wakes up: the IOLoop's scheduling delay."""

    def __init__(self, interval=0.005, keep=200000):
        self.interval = interval
        self.samples = deque(maxlen=keep)
        self.task = None
        self.started = None
        self.stalls = []
        self.loop_start = 0.0

    def start(self):
        self.stop()
        self.samples.clear()
        self.stalls = []
        self.started = time.monotonic()
        self.loop_start = asyncio.get_running_loop().time()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def stop(self):
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _run(self):
        loop = asyncio.get_running_loop()
        interval = self.interval
        while True:
            before = loop.time()
            await asyncio.sleep(interval)
            lag = loop.time() - before - interval
            self.samples.append(lag if lag > 0.0 else 0.0)
            if lag > 0.02:
                self.stalls.append((round(before - self.loop_start, 3), round(lag * 1000, 1)))

    def summary(self):
        values = sorted(self.samples)
        if not values:
            return None
        return {
            "samples": len(values),
            "seconds": round(time.monotonic() - self.started, 3) if self.started else None,
            "p50_ms": round(percentile(values, 0.50) * 1000, 3),
            "p99_ms": round(percentile(values, 0.99) * 1000, 3),
            "max_ms": round(values[-1] * 1000, 3),
            # [seconds into the window, lag ms] of the worst stalls over 20 ms
            "worst_stalls": sorted(self.stalls, key=lambda s: -s[1])[:5],
            "stalls_over_20ms": len(self.stalls),
        }


class StatsHandler(tornado.web.RequestHandler):
    def initialize(self, monitor, count_sessions):
        self.monitor = monitor
        self.count_sessions = count_sessions

    def get(self):
        if self.get_argument("gc", None):
            gc.collect()
        lag = self.get_argument("lag", None)
        if lag == "start":
            self.monitor.start()
        elif lag == "stop":
            self.monitor.stop()
        self.write({
            "pid": os.getpid(),
            "rss_kb": rss_kb(),
            "sessions": self.count_sessions(),
            "lag": self.monitor.summary() if lag == "stop" else None,
            "gc_collections": [gen["collections"] for gen in gc.get_stats()],
            "cpu_s": round(time.process_time(), 3),
        })


# -- plain Tornado -------------------------------------------------------------
NODELAY = [False]


def _retrieve(future):
    """A write to a client that has gone meanwhile is no error worth a traceback."""
    if not future.cancelled():
        future.exception()

#: Optional endpoints this server has (announced in its ready line).
VARIANTS = []
#: The TornadIO routers of this server (told their application, as SocketServer does).
ROUTERS = []
#: Settings of the /echo router (--heartbeat-interval, --poll-timeout).
ROUTER_SETTINGS = {}


class PlainEcho(tornado.websocket.WebSocketHandler):
    live = set()

    def check_origin(self, origin):
        return True

    def open(self):
        if NODELAY[0]:
            self.set_nodelay(True)
        self.live.add(self)

    def on_message(self, message):
        self.write_message(message).add_done_callback(_retrieve)

    def on_close(self):
        self.live.discard(self)


class PlainFanout(tornado.websocket.WebSocketHandler):
    members = set()

    def check_origin(self, origin):
        return True

    def open(self):
        if NODELAY[0]:
            self.set_nodelay(True)
        self.members.add(self)

    def on_message(self, message):
        for member in self.members:
            try:
                member.write_message(message).add_done_callback(_retrieve)
            except tornado.websocket.WebSocketClosedError:
                pass

    def on_close(self):
        self.members.discard(self)


def plain_app():
    rules = [(r"/echo", PlainEcho), (r"/fanout", PlainFanout)]
    return rules, lambda: len(PlainEcho.live) + len(PlainFanout.members)


# -- TornadIO -----------------------------------------------------------------
def tornadio_app():
    use_repo_tornadio()
    from tornadio import SocketConnection, get_router

    class EchoConnection(SocketConnection):
        def on_message(self, message):
            self.send(message)

    class FanoutConnection(SocketConnection):
        participants = set()

        def on_open(self, request, *args, **kwargs):
            self.participants.add(self)

        def on_message(self, message):
            for participant in self.participants:
                participant.send(message)

        def on_close(self):
            self.participants.discard(self)

    # TornadIO turns Nagle off on its WebSockets itself: no with_nodelay here.
    routers = [get_router(EchoConnection, dict(ROUTER_SETTINGS), resource="echo"),
               get_router(FanoutConnection, resource="fanout")]
    if hasattr(SocketConnection, "broadcast"):
        class BroadcastConnection(SocketConnection):
            """Fan-out through the library's own API (encodes once per message)."""

            def on_message(self, message):
                self.broadcast(message, include_self=True)

        routers.append(get_router(BroadcastConnection, resource="bcast"))
        VARIANTS.append("bcast")

    def count():
        return sum(len(router.sessions()) for router in routers)

    ROUTERS.extend(routers)

    return [router.route() for router in routers], count


# -- python-socketio (Tornado mode) -------------------------------------------
def socketio_app():
    import socketio

    sio = socketio.AsyncServer(async_mode="tornado", cors_allowed_origins="*",
                               logger=False, engineio_logger=False)

    @sio.on("message")
    async def echo(sid, data):
        await sio.emit("message", data, to=sid)

    @sio.on("message", namespace="/fan")
    async def fan(sid, data):
        await sio.emit("message", data, namespace="/fan")

    def count():
        return len(sio.eio.sockets)

    return [(r"/socket.io/", with_nodelay(socketio.get_tornado_handler(sio)))], count


def with_nodelay(handler_class):
    """The handler class, turning Nagle off on each WebSocket when --nodelay is given.

    Applied from outside (a subclass) so the library under test is unchanged.
    """
    if not NODELAY[0]:
        return handler_class

    class NoDelay(handler_class):
        def open(self, *args, **kwargs):
            self.set_nodelay(True)
            return super().open(*args, **kwargs)

    NoDelay.__name__ = handler_class.__name__
    return NoDelay


# -- hand-written Tornado long-poll echo ------------------------------------------------
# What an application author would write without a library: a RequestHandler
# GET held until data, a POST answered "ok", a dict of sessions, nothing else.
# It speaks the Socket.IO 0.6 polling wire format (the id framed first, the
# client's own frames echoed back), so the same load generator drives it.
LONG_POLL_TIMEOUT = 20.0


class PollSession:
    __slots__ = ("queue", "waiter")

    def __init__(self):
        self.queue = []
        self.waiter = None


def _framed(text):
    return "~m~%d~m~%s" % (len(text), text)


def _jsonp(index, payload):
    return "io.JSONP[%s]._(%s);" % (index, json.dumps(payload))


class HandLongPoll(tornado.web.RequestHandler):
    sessions = {}

    def check_xsrf_cookie(self):
        pass

    def answer(self, transport, tail, payload):
        if transport == "jsonp-polling":
            self.set_header("Content-Type", "text/javascript; charset=UTF-8")
            self.finish(_jsonp(tail.rsplit("/", 1)[-1], payload))
        else:
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish(payload)

    async def get(self, transport, sid, tail):
        if not sid:
            sid = secrets.token_hex(16)
            self.sessions[sid] = PollSession()
            self.answer(transport, tail, _framed(sid))
            return
        session = self.sessions.get(sid)
        if session is None:
            raise tornado.web.HTTPError(401)
        if not session.queue:
            waiter = session.waiter = asyncio.get_running_loop().create_future()
            loop = tornado.ioloop.IOLoop.current()
            timer = loop.call_later(LONG_POLL_TIMEOUT, _wake, waiter)
            self.waiter = waiter
            await waiter
            loop.remove_timeout(timer)
            if session.waiter is waiter:
                session.waiter = None
        payload = "".join(session.queue)
        session.queue.clear()
        self.answer(transport, tail, payload)

    def post(self, transport, sid, tail):
        session = self.sessions.get(sid)
        if session is None:
            raise tornado.web.HTTPError(401)
        session.queue.append(self.get_body_argument("data"))
        _wake(session.waiter)
        self.finish("ok")

    def on_connection_close(self):
        _wake(getattr(self, "waiter", None))


def _wake(waiter):
    if waiter is not None and not waiter.done():
        waiter.set_result(None)


def handlp_app():
    rules = [(r"/echo/(xhr-polling|jsonp-polling)/([0-9a-f]*)(/.*)?", HandLongPoll)]
    return rules, lambda: len(HandLongPoll.sessions)


# -- the bare-delegate long-poll floor ---------------------------------------------------
# The same echo straight on tornado.httputil: no Application, no routing, no
# RequestHandler; one small object per request writing its answer itself.
# What Tornado's HTTP/1.1 machinery alone costs: the physical limit on Tornado.
class BareLongPoll(tornado.httputil.HTTPServerConnectionDelegate):
    def __init__(self, stats_app):
        self.stats_app = stats_app
        self.sessions = {}

    def start_request(self, server_conn, request_conn):
        return BareRequest(self, server_conn, request_conn)


class BareRequest(tornado.httputil.HTTPMessageDelegate):
    __slots__ = ("owner", "server_conn", "conn", "method", "path", "body", "inner",
                 "session", "timer")

    def __init__(self, owner, server_conn, conn):
        self.owner = owner
        self.server_conn = server_conn
        self.conn = conn
        self.body = b""
        self.inner = None
        self.session = None
        self.timer = None

    def headers_received(self, start_line, headers):
        self.method = start_line.method
        self.path = start_line.path
        if self.path.startswith("/_bench/"):
            self.inner = self.owner.stats_app.start_request(self.server_conn, self.conn)
            return self.inner.headers_received(start_line, headers)
        return None

    def data_received(self, chunk):
        if self.inner is not None:
            return self.inner.data_received(chunk)
        self.body += chunk
        return None

    def on_connection_close(self):
        if self.inner is not None:
            self.inner.on_connection_close()
        elif self.session is not None and self.session.waiter is self:
            self.session.waiter = None

    def finish(self):
        if self.inner is not None:
            self.inner.finish()
            return
        # /echo/<transport>/<sid>/<rest>
        parts = self.path.split("/", 4)
        transport, sid = parts[2], parts[3]
        sessions = self.owner.sessions
        if self.method == "POST":
            session = sessions.get(sid)
            data = unquote_to_bytes(self.body.partition(b"data=")[2]).decode("utf-8")
            session.queue.append(data)
            waiter = session.waiter
            if waiter is not None:
                session.waiter = None
                waiter.flush(session)
            self.respond("text/plain; charset=UTF-8", "ok")
        elif not sid:
            sid = secrets.token_hex(16)
            sessions[sid] = PollSession()
            self.send(transport, _framed(sid))
        else:
            session = self.session = sessions[sid]
            if session.queue:
                self.flush(session)
            else:
                session.waiter = self
                self.timer = tornado.ioloop.IOLoop.current().call_later(
                    LONG_POLL_TIMEOUT, self.flush, session)
                self.conn.set_close_callback(self.on_connection_close)

    def flush(self, session):
        if self.timer is not None:
            tornado.ioloop.IOLoop.current().remove_timeout(self.timer)
            self.timer = None
        if session.waiter is self:
            session.waiter = None
        payload = "".join(session.queue)
        session.queue.clear()
        self.conn.set_close_callback(None)
        self.send(self.path.split("/", 3)[2], payload)

    def send(self, transport, payload):
        if transport == "jsonp-polling":
            self.respond("text/javascript; charset=UTF-8",
                         _jsonp(self.path.rstrip("/").rsplit("/", 1)[-1], payload))
        else:
            self.respond("text/plain; charset=UTF-8", payload)

    def respond(self, content_type, text):
        body = text.encode("utf-8")
        self.conn.write_headers(
            tornado.httputil.ResponseStartLine("HTTP/1.1", 200, "OK"),
            tornado.httputil.HTTPHeaders({"Content-Type": content_type,
                                          "Content-Length": str(len(body))}), body)
        self.conn.finish()


APPS = {"plain": plain_app, "tornadio": tornadio_app, "socketio": socketio_app,
        "handlp": handlp_app, "barelp": lambda: ([], lambda: 0)}


async def serve(kind, port):
    rules, count = APPS[kind]()
    monitor = LagMonitor()
    bare = None
    if kind == "barelp":
        bare_sessions = {}
        count = lambda: len(bare_sessions)  # noqa: E731
    rules.append((r"/_bench/stats", StatsHandler, {"monitor": monitor, "count_sessions": count}))
    app = tornado.web.Application(rules)
    sockets = bind_sockets(port, "127.0.0.1", backlog=4096)
    if kind == "barelp":
        bare = BareLongPoll(app)
        bare.sessions = bare_sessions
        server = HTTPServer(bare)
    else:
        server = HTTPServer(app)
    if kind == "tornadio":
        # What SocketServer does: the routers learn their application (lean polling
        # path), and a FrontDoor hands the lean requests over without routing.
        for router in ROUTERS:
            router.learn_application(app)
        from tornadio.lean import FrontDoor  # imported by tornadio_app() from this checkout

        door = FrontDoor(app, ROUTERS)
        if door.usable:
            server.request_callback = door
    server.add_sockets(sockets)

    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def finish(*_):
        if not done.done():
            done.set_result(None)

    def on_stdin():
        try:
            data = os.read(0, 4096)
        except OSError:
            data = b""
        if not data:
            finish()

    loop.add_reader(0, on_stdin)
    loop.add_signal_handler(signal.SIGTERM, finish)
    loop.add_signal_handler(signal.SIGINT, finish)
    emit({"ready": True, "port": sockets[0].getsockname()[1], "pid": os.getpid(),
          "kind": kind, "variants": VARIANTS})
    await done
    loop.remove_reader(0)
    server.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(APPS), required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--nodelay", action="store_true",
                        help="set TCP_NODELAY on every WebSocket (all kinds alike)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the event loop under Tornado (uvloop: optional dependency)")
    parser.add_argument("--heartbeat-interval", type=float,
                        help="tornadio: heartbeat_interval of the /echo router")
    parser.add_argument("--poll-timeout", type=float,
                        help="tornadio: xhr_polling_timeout of the /echo router")
    args = parser.parse_args()
    NODELAY[0] = args.nodelay
    if args.heartbeat_interval is not None:
        ROUTER_SETTINGS["heartbeat_interval"] = args.heartbeat_interval
    if args.poll_timeout is not None:
        ROUTER_SETTINGS["xhr_polling_timeout"] = args.poll_timeout
    raise_nofile()
    if args.loop == "uvloop":
        import uvloop
        uvloop.install()
    asyncio.run(serve(args.kind, args.port))
    # Skip interpreter teardown of 10,000 live sockets: the OS closes them.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
