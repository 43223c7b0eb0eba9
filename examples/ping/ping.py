"""Round-trip time over one Socket.IO transport, measured by the browser.

    python examples/ping/ping.py [--host H] [--port N]

The page sends ``{"ping": n}`` on a timer and times the ``{"pong": n}`` that
comes back, over the transport picked in its menu (websocket, xhr-polling or
jsonp-polling). The page URL takes ``?transport=xhr-polling&interval=250``
(milliseconds) to start with other values.
"""
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # examples/, for demo_support

import demo_support  # noqa: E402
import tornadio  # noqa: E402


class PingConnection(tornadio.SocketConnection):
    def on_message(self, message):
        # Only echo what the page sends: a small sequence number. Anything else
        # is ignored rather than reflected back.
        if isinstance(message, dict):
            number = message.get("ping")
            if isinstance(number, int) and not isinstance(number, bool) and 0 <= number < 2 ** 53:
                self.send({"pong": number})


def main(argv=None):
    args = demo_support.parse_args("TornadIO ping example: round-trip times per transport.",
                                   argv)
    app = demo_support.make_app(PingConnection, os.path.join(HERE, "ping.html"), args)
    demo_support.run(app, "Ping", args)


if __name__ == "__main__":
    main()
