"""The quick start's application (docs/quickstart.rst): one page and an echo.

    python docs/quickstart/echo.py          then open http://127.0.0.1:8001/

tests/test_docs.py serves this very module and talks to it over the wire, so
the quick start cannot drift from what works.
"""
import os

import tornado.web

import tornadio
import tornadio.server
from tornadio.client import find_client_js

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>TornadIO echo</title>
<script src="/socket.io/socket.io.js"></script>
<input id="line" autofocus placeholder="type and press Enter">
<pre id="log"></pre>
<script>
  var socket = new io.Socket(location.hostname, {port: location.port || 80});
  function show(text) { document.getElementById('log').textContent += text + '\\n'; }
  socket.on('connect', function () { show('connected over ' + socket.transport.type); });
  socket.on('message', function (m) { show(typeof m === 'string' ? m : JSON.stringify(m)); });
  socket.on('disconnect', function () { show('disconnected'); });
  socket.connect();
  document.getElementById('line').onkeydown = function (e) {
    if (e.key === 'Enter') { socket.send(this.value); this.value = ''; }
  };
</script>
"""


class EchoConnection(tornadio.SocketConnection):
    def on_open(self, request, *args, **kwargs):
        self.send("welcome, %s" % self.info.remote_ip)

    def on_message(self, message):
        self.send({"echo": message})  # a dict arrives in the page as an object

    def on_close(self):
        print("session ended")


class PageHandler(tornado.web.RequestHandler):
    def get(self):
        self.finish(PAGE)


# The browser client, from `npm install socket.io@0.6.18`, looked for in
# node_modules/ here or in a parent folder; the router serves it at
# /socket.io/socket.io.js.
CLIENT_JS = find_client_js(os.path.dirname(os.path.abspath(__file__)), os.getcwd())
if CLIENT_JS is None:
    raise SystemExit("socket.io.js not found: run `npm install socket.io@0.6.18` first")

EchoRouter = tornadio.get_router(EchoConnection, {"client_js": CLIENT_JS})


def make_app(port=8001):
    return tornado.web.Application(
        [(r"/", PageHandler), EchoRouter.route()],
        socket_io_port=port,
        flash_policy_server=False,  # no separate Flash policy port (843 needs root)
    )


if __name__ == "__main__":
    tornadio.server.SocketServer(make_app())  # listens, then runs the IOLoop until Ctrl-C
