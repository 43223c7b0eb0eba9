"""A TornadIO server whose ``on_close`` blocks, run as its own process by the signal tests.

``python slow_close_server.py SECONDS`` listens on 127.0.0.1 (a free port) with
``SocketServer(auto_start=True)``, as a 2011 deployment does, and prints one line
per event, flushed: ``listening on PORT``, ``opened SID``, ``closing SID`` and
``closed SID`` around an ``on_close`` that sleeps SECONDS (blocking the loop, as
a slow database call would), and ``returned`` once ``SocketServer`` returns.

``python slow_close_server.py SECONDS no-loop-signals`` runs it on an asyncio
loop whose ``add_signal_handler`` raises ``NotImplementedError``, as Windows'
loops do: the server must fall back to plain signal handlers.
"""
import asyncio
import sys
import time

import tornado.web
from tornado.ioloop import IOLoop

import tornadio
from tornadio.server import SocketServer


def say(*words):
    print(*words, flush=True)


class SlowClose(tornadio.SocketConnection):
    seconds = 0.0

    def on_open(self, request, *args, **kwargs):
        say("opened", self.session_id)

    def on_message(self, message):
        self.send(message)

    def on_close(self):
        say("closing", self.session_id)
        time.sleep(self.seconds)
        say("closed", self.session_id)


class AnnouncingServer(SocketServer):
    def start_loop(self):
        say("loop", type(IOLoop.current().asyncio_loop).__name__)
        say("listening on", self.port)
        super().start_loop()


class NoSignalLoop(asyncio.SelectorEventLoop):
    """A loop without signal support, like asyncio's loops on Windows."""

    def add_signal_handler(self, sig, callback, *args):
        raise NotImplementedError


class NoSignalPolicy(asyncio.DefaultEventLoopPolicy):
    def new_event_loop(self):
        return NoSignalLoop()


def main(seconds, mode=""):
    if mode == "no-loop-signals":
        asyncio.set_event_loop_policy(NoSignalPolicy())
        say("loop without signal handlers")
    SlowClose.seconds = seconds
    router = tornadio.get_router(SlowClose)
    app = tornado.web.Application([router.route()], socket_io_port=0,
                                  socket_io_address="127.0.0.1", flash_policy_server=False)
    AnnouncingServer(app)
    say("returned")


if __name__ == "__main__":
    main(float(sys.argv[1]), *sys.argv[2:])
