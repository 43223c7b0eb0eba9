"""A chat room: pick a nickname, talk to everyone else who has the page open.

    python examples/chatroom/chatroom.py [--host H] [--port N] [--redis URL [--relay]]

Open the printed URL in several browser windows. Messages between page and
server are JSON objects with a ``type``:

    page -> server   {"type": "join", "nickname": "ada", "client": "<random id of the page>"}
                     {"type": "say", "text": "hello"}
    server -> page   {"type": "welcome", "nickname": ..., "transport": ..., "people": [...]}
                     {"type": "joined" | "rejoined" | "left", "nickname": ..., "people": [...]}
                     {"type": "said", "nickname": ..., "text": ...}
                     {"type": "error", "text": ...}

A reconnect is a brand-new Socket.IO session, so the page sends its "join"
again after every (re)connect, with the same random ``client`` id. The server
uses that id to retire the stale session of the same page quietly, instead of
announcing "ada left" a while after "ada joined".

Everyone who joined is in the broadcast group "room" of the router's
Broadcaster, which carries every announcement and message. By default one
process is one room. With ``--redis URL`` any number of processes (behind
nginx: examples/README.md) are one room: the Broadcaster gets a Redis backend,
so messages reach the people of every process, and who is here is kept in
Redis too (roster.py). Add ``--relay`` and a polling client's requests may reach
any of the processes (a round-robin balancer, no stickiness): the session
relay (tornadio.redis_relay) forwards them to the process that holds the
session.
"""
import argparse
import contextlib
import logging
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # roster; examples/, for demo_support

import demo_support  # noqa: E402
import tornadio  # noqa: E402
from roster import RedisRoster, Roster, RosterError  # noqa: E402

log = logging.getLogger("chatroom")

#: The broadcast group of everyone who joined.
ROOM = "room"
MAX_NICKNAME = 24
MAX_TEXT = 1000
_CLIENT_ID = re.compile(r"[0-9A-Za-z]{8,64}\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def clean_text(value, limit):
    """``value`` trimmed, if it is a non-empty string of at most ``limit`` characters.

    Strings must also survive UTF-8 encoding: JSON from a client may carry lone
    surrogates, which TornadIO refuses to send on.
    """
    if not isinstance(value, str):
        return None
    value = value.strip()
    if not value or len(value) > limit:
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


class ChatConnection(tornadio.SocketConnection):
    #: Who is here: this process's people (Roster), or with --redis every
    #: process's (RedisRoster, set by main()).
    roster = Roster()

    def on_open(self, request, *args, **kwargs):
        self.nickname = None
        self.key = None        # the page's client id, else the session id
        self.in_room = False

    async def on_message(self, message):
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "join":
            await self.enter_room(message.get("nickname"), message.get("client"))
        elif kind == "say":
            self.say(message.get("text"))
        else:
            self.send({"type": "error", "text": "unknown message"})

    def on_close(self):
        if self.key is not None:
            self.roster.spawn(self.leave_room())

    # -- the room ------------------------------------------------------------------
    async def enter_room(self, nickname, client_id):
        nickname = clean_text(nickname, MAX_NICKNAME)
        if nickname is None or _CONTROL.search(nickname):
            self.send({"type": "error",
                       "text": "a nickname is 1 to %d printable characters" % MAX_NICKNAME})
            return
        if self.in_room:
            self.send({"type": "error", "text": "already joined"})
            return
        self.nickname = nickname
        valid_id = isinstance(client_id, str) and _CLIENT_ID.match(client_id)
        self.key = client_id if valid_id else self.session_id
        try:
            replaced = await self.roster.enter(self)  # closes a stale session of this page
            people = await self.roster.people()
        except RosterError as exc:  # only with --redis: Redis is unreachable
            log.warning("%r could not join: %s", nickname, exc)
            with contextlib.suppress(RosterError):
                await self.roster.leave(self)
            self.send({"type": "error", "text": "the room is unavailable; try again shortly"})
            return
        self.in_room = True
        self.join(ROOM)
        self.send({"type": "welcome", "nickname": nickname, "transport": self.transport,
                   "people": people})
        self.broadcast_to(ROOM, {"type": "rejoined" if replaced else "joined",
                                 "nickname": nickname, "transport": self.transport,
                                 "people": people})

    async def leave_room(self):
        if await self.roster.leave(self):
            await announce_left(self.broadcaster(), self.nickname)

    def say(self, text):
        if not self.in_room:
            self.send({"type": "error", "text": "pick a nickname first"})
            return
        text = clean_text(text, MAX_TEXT)
        if text is None:
            self.send({"type": "error", "text": "a message is 1 to %d characters" % MAX_TEXT})
            return
        self.broadcast_to(ROOM, {"type": "said", "nickname": self.nickname, "text": text},
                          include_self=True)


async def announce_left(broadcaster, nickname):
    """Tell the room, in every process, that ``nickname`` left."""
    people = await ChatConnection.roster.people()
    await broadcaster.send_group(ROOM, {"type": "left", "nickname": nickname, "people": people})


# -- command line ------------------------------------------------------------------
def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError("%r is not a number of seconds" % text) from None
    if not 0.5 <= value <= 3600:
        raise argparse.ArgumentTypeError("%g is outside 0.5-3600 seconds" % value)
    return value


def add_arguments(parser):
    parser.add_argument("--redis", metavar="URL",
                        help="share the room with every process started with the same URL, "
                             "e.g. redis://127.0.0.1:6379/0 (default: this process only)")
    parser.add_argument("--redis-ttl", type=_seconds, default=15.0, metavar="SECONDS",
                        help="with --redis: a process silent this long is gone, and so are "
                             "its people (default: %(default)g)")
    parser.add_argument("--relay", action="store_true",
                        help="with --redis: serve polling clients whichever process their "
                             "requests reach (no sticky sessions needed in the balancer)")


def main(argv=None):
    args = demo_support.parse_args("TornadIO chat room example.", argv, add_arguments)
    if args.relay and not args.redis:
        sys.exit("error: --relay needs --redis URL")
    settings = {}
    if args.redis:
        try:
            from tornadio.redis_broadcast import RedisBroadcastBackend
            ChatConnection.roster = RedisRoster(args.redis, ttl=args.redis_ttl)
        except ImportError:
            sys.exit("error: --redis needs redis-py: pip install 'tornadio[redis]'")
        except ValueError as exc:  # a URL redis-py cannot use
            sys.exit("error: --redis %s: %s" % (args.redis, exc))
        settings["broadcast_backend"] = RedisBroadcastBackend(url=args.redis,
                                                              channel_prefix="chatroom")
    if args.relay:
        from tornadio.redis_relay import RedisSessionRelay
        settings["session_relay"] = RedisSessionRelay(url=args.redis, prefix="chatroom-relay")
    app = demo_support.make_app(ChatConnection, os.path.join(HERE, "chatroom.html"), args,
                                settings)
    broadcaster = app.socket_io_router.broadcaster
    roster = ChatConnection.roster

    relay = settings.get("session_relay")

    async def start():
        if not await broadcaster().ready(timeout=5.0):
            return "cannot subscribe to Redis at %s" % args.redis
        if relay is not None and not await relay.ready(timeout=5.0):
            return "cannot subscribe to Redis at %s for the session relay" % args.redis
        try:
            await roster.start(lambda nickname: announce_left(broadcaster(), nickname))
        except RosterError as exc:
            return "cannot use Redis at %s for the roster (%s)" % (args.redis, exc)
        return None

    async def stop():
        await roster.stop()
        if broadcaster().backend is not None:
            await broadcaster().backend.close()
        if relay is not None:
            await relay.close()

    demo_support.run(app, "Chatroom", args, on_start=start, on_stop=stop)


if __name__ == "__main__":
    main()
