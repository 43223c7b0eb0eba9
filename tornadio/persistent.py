"""Transports over one long-lived socket: websocket (RFC 6455) and flashsocket (hixie-76)."""
import logging

import tornado.websocket
from tornado.iostream import StreamBufferFullError

from tornadio import proto, session as sessions
from tornadio.transport import Transport

log = logging.getLogger("tornadio.persistent")


def limit_write_buffer(stream, settings):
    """Bound what a client that stops reading can make us buffer (max_queue_bytes)."""
    if settings["max_queue_bytes"]:
        stream.max_write_buffer_size = settings["max_queue_bytes"]


class WebSocketTransport(Transport):
    """Native browser WebSocket; one text message carries one payload."""

    name = "websocket"
    persistent = True
    aborted = False

    async def get(self, rest):
        # The 0.6 client never puts a session id in the WebSocket URL.
        await tornado.websocket.WebSocketHandler.get(self.handler)

    def post(self, rest):
        self.fail(405, "websocket takes no POST")

    def options(self):
        self.fail(405, "websocket takes no OPTIONS")

    async def on_open(self):
        session = self.create_session()
        if session is None:
            self.handler.close(1013, "session limit reached")
            return
        self.session = session
        if not await self.open_session(session):
            self.handler.close(1008, "refused")
            return
        limit_write_buffer(self.handler.ws_connection.stream, self.settings)
        session.attach(self)
        session.start_heartbeats()

    def on_socket_message(self, message):
        session = self.session
        if session is None or session.is_closed:
            return
        if isinstance(message, bytes):
            self._refuse(session, "binary WebSocket message")
            return
        try:
            session.receive(message)
        except proto.DecodeError as exc:
            self._refuse(session, exc.reason)

    def _refuse(self, session, reason):
        log.warning("session %s (%s): closing on bad input: %s",
                    sessions.short_id(session.id), self.name, reason)
        session.close(sessions.REASON_BAD_INPUT)

    def on_connection_lost(self):
        if self.session is not None:
            self.session.close(sessions.REASON_CLIENT)

    # -- sink -----------------------------------------------------------------
    def write_payload(self, payload):
        if payload:
            try:
                self.handler.write_message(payload)
            except tornado.websocket.WebSocketClosedError:
                self.on_connection_lost()
            except StreamBufferFullError:
                self._overflow()

    def _overflow(self):
        log.warning("session %s (%s): client not reading, %d bytes unsent; closing",
                    sessions.short_id(self.session.id), self.name, self.settings["max_queue_bytes"])
        self.aborted = True
        self.session.close(sessions.REASON_OVERFLOW)

    def end(self):
        if self.aborted:
            self.handler.ws_connection.stream.close()
        else:
            self.handler.close()


class FlashSocketTransport(Transport):
    """Placeholder until the hixie-76 transport lands."""

    name = "flashsocket"

    async def get(self, rest):
        self.fail(501, "flashsocket not available yet")

    post = get
