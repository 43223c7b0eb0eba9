"""Echo over the transport of your choice: which ones does this browser run?

    python examples/transports/transports.py [--host H] [--port N]

The page lists the six Socket.IO 0.6 transports and marks those the browser
cannot use, by the same checks socket.io-client runs: websocket needs a native
WebSocket, flashsocket the Flash plugin, htmlfile Internet Explorer's
ActiveXObject, xhr-multipart the long-gone ``XMLHttpRequest.multipart`` of old
Firefox; xhr-polling and jsonp-polling work everywhere. Pick one, connect, and
every line you send comes back with the transport the *server* saw.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # examples/, for demo_support

import demo_support  # noqa: E402
import tornadio  # noqa: E402

MAX_TEXT = 2000


class EchoConnection(tornadio.SocketConnection):
    def on_open(self, request, *args, **kwargs):
        self.count = 0
        self.send({"hello": self.transport})

    def on_message(self, message):
        self.count += 1
        if not isinstance(message, str) or len(message) > MAX_TEXT:
            self.send({"error": "send text of at most %d characters" % MAX_TEXT})
            return
        try:
            message.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate cannot be sent back
            self.send({"error": "text is not valid Unicode"})
            return
        # Wrapped in an object: a bare string starting with "~j~" or "~h~"
        # would mean something else on the wire.
        self.send({"echo": message, "transport": self.transport, "n": self.count})


def main(argv=None):
    args = demo_support.parse_args("TornadIO transports example: echo over a chosen transport.",
                                   argv)
    app = demo_support.make_app(EchoConnection, os.path.join(HERE, "transports.html"), args)
    demo_support.run(app, "Transports", args)


if __name__ == "__main__":
    main()
