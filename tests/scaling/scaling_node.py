"""One TornadIO server process for the multi-process tests and the fan-out measurement.

    python tests/scaling/scaling_node.py [--port 0] [--redis URL] [--prefix P] [--relay]

Prints ``READY <port> <backend state>`` on stdout once it listens (and, with
--redis, once the subscription is live or 10 s passed). Logs go to stderr.
With --relay (and --redis) polling sessions are also served through the
other nodes (``tornadio.redis_relay``); ``--ack-timeout`` and
``--alive-ttl`` set its timings.

Clients (any transport) get ``{"hello": {"port", "pid", "sid"}}`` right after
the session id, and may send:

* ``{"whoami": n}``            → ``{"port", "pid", "n"}``
* ``{"join": g}`` / ``{"leave": g}`` → ``{"joined": g}`` / ``{"left": g}``
* ``{"shout": m}``             → ``self.broadcast(m)``, then ``{"shouted": delivery}``

``POST /control`` with a JSON body runs broadcasts from the server itself:
``{"op": "send_all" | "send_group", "message": m, "group": g, "exclude": [sid],
"count": n}`` sends ``message`` n times, awaits every delivery and answers
``{"local": [...], "remote": [...], "receivers": [...]}``. With ``count`` > 1
the messages are ``{"tag": message, "i": 0..count-1}``.
``GET /stats`` is the router's StatsHandler.
"""
import argparse
import asyncio
import json
import logging
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

import tornado.web  # noqa: E402
from tornado.httpserver import HTTPServer  # noqa: E402
from tornado.netutil import bind_sockets  # noqa: E402

import tornadio  # noqa: E402
from tornadio.stats import StatsHandler  # noqa: E402

PORT = None


def _delivery(delivery):
    return {"local": delivery.local, "remote": delivery.remote, "receivers": delivery.receivers}


class Node(tornadio.SocketConnection):
    def on_open(self, request, *args, **kwargs):
        self.send({"hello": {"port": PORT, "pid": os.getpid(), "sid": self.session_id}})

    async def on_message(self, message):
        if not isinstance(message, dict):
            self.send({"echo": message})
        elif "whoami" in message:
            self.send({"port": PORT, "pid": os.getpid(), "n": message["whoami"]})
        elif "join" in message:
            self.join(message["join"])
            self.send({"joined": message["join"]})
        elif "leave" in message:
            self.leave(message["leave"])
            self.send({"left": message["leave"]})
        elif "shout" in message:
            delivery = await self.broadcast(message["shout"])
            self.send({"shouted": _delivery(delivery)})


def _messages(body):
    message = body.get("message")
    count = int(body.get("count", 1))
    if count == 1:
        return [message]
    return [{"tag": message, "i": i} for i in range(count)]


class Control(tornado.web.RequestHandler):
    def initialize(self, router):
        self.router = router

    def check_xsrf_cookie(self):
        pass

    async def post(self):
        body = json.loads(self.request.body)
        broadcaster = self.router.broadcaster()
        exclude = body.get("exclude", ())
        deliveries = []
        for message in _messages(body):
            if body["op"] == "send_all":
                deliveries.append(broadcaster.send_all(message, exclude=exclude))
            else:
                deliveries.append(broadcaster.send_group(body["group"], message, exclude=exclude))
        for delivery in deliveries:
            await delivery
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({
            "local": [d.local for d in deliveries],
            "remote": [d.remote for d in deliveries],
            "receivers": [d.receivers for d in deliveries],
        }))


async def main():
    global PORT
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--redis", default=None)
    parser.add_argument("--prefix", default="tornadio-test")
    parser.add_argument("--max-backoff", type=float, default=1.0)
    parser.add_argument("--poll-timeout", type=float, default=2.0)
    parser.add_argument("--expiry", type=float, default=3.0)
    parser.add_argument("--heartbeat", type=float, default=3.0)
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")
    parser.add_argument("--relay", action="store_true", help="with --redis: the session relay")
    parser.add_argument("--ack-timeout", type=float, default=3.0)
    parser.add_argument("--alive-ttl", type=float, default=3.0)
    args = parser.parse_args()

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    logging.getLogger("tornadio.session").setLevel(logging.WARNING)

    settings = {
        "session_check_interval": 0.5,
        "session_expiry": args.expiry,
        "heartbeat_interval": args.heartbeat,
        "xhr_polling_timeout": args.poll_timeout,
        "broadcast_channel": "scaling-test",
    }
    if args.redis:
        from tornadio.redis_broadcast import RedisBroadcastBackend
        settings["broadcast_backend"] = RedisBroadcastBackend(
            url=args.redis, channel_prefix=args.prefix, max_backoff=args.max_backoff)
    if args.redis and args.relay:
        from tornadio.redis_relay import RedisSessionRelay
        settings["session_relay"] = RedisSessionRelay(
            url=args.redis, prefix=args.prefix + "-relay", max_backoff=args.max_backoff,
            ack_timeout=args.ack_timeout, alive_ttl=args.alive_ttl)
    router = tornadio.get_router(Node, settings, resource="socket.io")
    app = tornado.web.Application([
        router.route(),
        (r"/stats", StatsHandler, {"router": router}),
        (r"/control", Control, {"router": router}),
    ])
    sockets = bind_sockets(args.port, "127.0.0.1")
    PORT = sockets[0].getsockname()[1]
    HTTPServer(app).add_sockets(sockets)
    ready = await router.broadcaster().ready(timeout=10)
    if args.relay:
        ready = ready and await settings["session_relay"].ready(timeout=10)
    print("READY %d %s" % (PORT, "subscribed" if ready and args.redis else
                           "local" if not args.redis else "not-subscribed"), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
