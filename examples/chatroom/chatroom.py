"""A chat room: pick a nickname, talk to everyone else who has the page open.

    python examples/chatroom/chatroom.py [--host H] [--port N]

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
"""
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # examples/, for demo_support

import demo_support  # noqa: E402
import tornadio  # noqa: E402

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
    #: Everyone who has joined, on every transport. One process, one room.
    participants = set()

    def on_open(self, request, *args, **kwargs):
        self.nickname = None
        self.client_id = None

    def on_message(self, message):
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "join":
            self.join(message.get("nickname"), message.get("client"))
        elif kind == "say":
            self.say(message.get("text"))
        else:
            self.send({"type": "error", "text": "unknown message"})

    def on_close(self):
        if self in self.participants:
            self.participants.discard(self)
            self.broadcast({"type": "left", "nickname": self.nickname,
                            "people": self.roster()})

    # -- the room ------------------------------------------------------------------
    def join(self, nickname, client_id):
        nickname = clean_text(nickname, MAX_NICKNAME)
        if nickname is None or _CONTROL.search(nickname):
            self.send({"type": "error",
                       "text": "a nickname is 1 to %d printable characters" % MAX_NICKNAME})
            return
        if self in self.participants:
            self.send({"type": "error", "text": "already joined"})
            return
        self.nickname = nickname
        valid_id = isinstance(client_id, str) and _CLIENT_ID.match(client_id)
        self.client_id = client_id if valid_id else None
        replaced = self.retire_stale_sessions()
        self.participants.add(self)
        people = self.roster()
        self.send({"type": "welcome", "nickname": nickname, "transport": self.transport,
                   "people": people})
        self.broadcast({"type": "rejoined" if replaced else "joined", "nickname": nickname,
                        "transport": self.transport, "people": people}, skip=self)

    def retire_stale_sessions(self):
        """Close older sessions of this same page (it reconnected); True if any."""
        if self.client_id is None:
            return False
        stale = [p for p in self.participants if p.client_id == self.client_id]
        for old in stale:
            self.participants.discard(old)  # first, so its on_close stays silent
            old.close()
        return bool(stale)

    def say(self, text):
        if self not in self.participants:
            self.send({"type": "error", "text": "pick a nickname first"})
            return
        text = clean_text(text, MAX_TEXT)
        if text is None:
            self.send({"type": "error", "text": "a message is 1 to %d characters" % MAX_TEXT})
            return
        self.broadcast({"type": "said", "nickname": self.nickname, "text": text})

    @classmethod
    def roster(cls):
        return sorted(({"nickname": p.nickname, "transport": p.transport}
                       for p in cls.participants),
                      key=lambda person: (person["nickname"].casefold(), person["transport"]))

    @classmethod
    def broadcast(cls, message, skip=None):
        for person in list(cls.participants):
            if person is not skip:
                person.send(message)


def main(argv=None):
    args = demo_support.parse_args("TornadIO chat room example.", argv)
    app = demo_support.make_app(ChatConnection, os.path.join(HERE, "chatroom.html"), args)
    demo_support.run(app, "Chatroom", args)


if __name__ == "__main__":
    main()
