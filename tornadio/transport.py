"""What every transport shares: session lookup, opening, and one-line failures."""
import logging
import re

from tornadio import proto, session as sessions

log = logging.getLogger("tornadio.transport")

_SESSION_ID = re.compile(r"[0-9A-Za-z]{1,64}\Z")


def limit_write_buffer(stream, settings):
    """Bound what a client that stops reading can make us buffer (max_queue_bytes).

    Beyond it ``stream.write`` raises ``StreamBufferFullError``; the transport
    then calls :meth:`Transport.overflowed`.
    """
    if settings["max_queue_bytes"]:
        stream.max_write_buffer_size = settings["max_queue_bytes"]


def retrieve_write_error(future):
    """A write to a client that left meanwhile is not worth a traceback."""
    if not future.cancelled():
        future.exception()


class Transport:
    """Base of the per-request transport objects the router hands a request to.

    A transport object lives as long as its Tornado request. It may be a
    session *sink*: ``once`` says whether the session detaches it after one
    payload (a long-poll GET) or keeps writing to it (a socket or a stream).
    """

    name = None
    once = False

    def __init__(self, handler):
        self.handler = handler
        self.router = type(handler)
        self.settings = handler.socket_settings
        self.session = None

    # -- session helpers ---------------------------------------------------
    def create_session(self):
        """A new session of this router, or None (answered 503) when full."""
        if self.refused_for_capacity():
            return None
        container = self.router.sessions()
        info = self.router.make_info(self.handler.request, self.name)
        session = sessions.Session(container, self.router.connection_factory, self.name,
                                   info, self.settings)
        container.add(session)
        return session

    def refused_for_capacity(self):
        """Answer 503 when the router already has ``max_sessions`` live sessions."""
        limit = self.settings["max_sessions"]
        if limit and len(self.router.sessions()) >= limit:
            self.fail(503, "session limit of %d reached" % limit)
            return True
        return False

    async def open_session(self, session):
        """Run ``on_open``; True when the session may go on."""
        handler = self.handler
        return await session.open(handler.request, handler.open_extra_args,
                                  handler.open_extra_kwargs)

    def find_session(self, session_id):
        """The session named in the URL, or None after answering 4xx."""
        if not _SESSION_ID.match(session_id):
            self.fail(400, "malformed session id")
            return None
        session = self.router.sessions().get(session_id)
        if session is None:
            if self.router.shutting_down:
                self.answer_during_shutdown()
            else:
                self.fail(401, "unknown or expired session")
            return None
        if session.transport != self.name:
            self.fail(401, "session belongs to transport %s" % session.transport)
            return None
        return session

    def receive_or_refuse(self, session, payload):
        """Hand a socket payload to the session; a malformed one closes it.

        Returns what to await before reading on (see :meth:`Session.receive`).
        """
        try:
            return session.receive(payload)
        except proto.DecodeError as exc:
            self.refuse(session, exc.reason)
            return None

    def refuse(self, session, reason):
        """Close a session over bad input, with the one log line that says why."""
        log.warning("session %s (%s): closing on bad input: %s",
                    sessions.short_id(session.id), self.name, reason)
        session.close(sessions.REASON_BAD_INPUT)

    def answer_during_shutdown(self):
        """A request for a session the shutdown just closed, on a kept-alive connection.

        Answered as if all were well, with ``Connection: close``: the client's
        next request then meets the closed listener, which it reports as the
        server going away, instead of an error status for its own session.
        """
        handler = self.handler
        handler.set_header("Connection", "close")
        if handler.request.method == "GET" and self.once:
            self.write_payload("")
        else:
            handler.set_header("Content-Type", "text/plain; charset=UTF-8")
            handler.finish("ok")

    def overflowed(self, stream):
        """The client stopped reading: drop its connection, end the session, one log line."""
        log.warning("session %s (%s): client not reading, over %d bytes unsent; closing",
                    sessions.short_id(self.session.id), self.name, self.settings["max_queue_bytes"])
        stream.close()
        self.session.close(sessions.REASON_OVERFLOW)

    def fail(self, status, reason):
        """Answer an HTTP error with a short body; the access log line carries the reason."""
        self.handler.fail(status, reason)
