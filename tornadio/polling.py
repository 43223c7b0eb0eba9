"""The HTTP transports: xhr-polling and jsonp-polling (long-poll GETs) and
htmlfile and xhr-multipart (one streamed GET), all over one session mechanism.

Every one of them takes client payloads as ``data=`` POSTs; they differ only in
how a GET is answered and how a payload is wrapped (PROTOCOL.md §4.3–§4.6).
"""
import asyncio
import json
import secrets
from urllib.parse import unquote_to_bytes

from tornado.ioloop import IOLoop
from tornado.iostream import StreamBufferFullError

from tornadio import origins, proto, session as sessions
from tornadio.transport import Transport, limit_write_buffer, retrieve_write_error


_MAX_JSONP_INDEX_DIGITS = 10


class BadRequest(Exception):
    """The request cannot be served; ``status`` and a short reason for the log."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status = status
        self.reason = reason


def parse_data_field(body):
    """The client payload from a urlencoded body, decoded by hand.

    Tornado's ``get_argument`` strips whitespace and rewrites control
    characters, which would change messages (PROTOCOL.md §4).
    """
    for field in bytes(body).split(b"&"):
        name, _, value = field.partition(b"=")
        if name == b"data":
            try:
                return unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
            except UnicodeDecodeError:
                raise BadRequest(400, "data is not valid UTF-8") from None
    raise BadRequest(400, "no data field in the POST body")


def js_string(payload):
    """A JavaScript string literal safe inside <script>, in any engine."""
    # ensure_ascii escapes U+2028/U+2029; "<" escaped so "</script>" and
    # "<!--" can never appear in the page.
    return json.dumps(payload).replace("<", "\\u003c")


class HttpTransport(Transport):
    """GET/POST/OPTIONS plumbing shared by the four HTTP transports."""

    #: Replace CRLF with LF in POSTed payloads (the jsonp form quirk, §4.4).
    normalise_crlf = False

    def _split(self, rest):
        """(session id, remaining path segments) from the URL tail."""
        if not rest or rest == "/":
            return "", []
        segments = rest[1:].split("/")
        return segments[0], segments[1:]

    def _allow_origin(self):
        """CORS: echo an allowed Origin (never with credentials); refuse others."""
        origin = self.handler.request.headers.get("Origin")
        if origin is None:
            return True
        if not origins.check(self.settings["allowed_origins"], origin, self.handler.request,
                             self.name):
            self.fail(403, origins.REFUSED)
            return False
        self.handler.set_header("Access-Control-Allow-Origin", origin)
        self.handler.set_header("Vary", "Origin")
        return True

    def options(self):
        if not self._allow_origin():
            return
        headers = self.handler.request.headers
        self.handler.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        wanted = headers.get("Access-Control-Request-Headers")
        if wanted:
            self.handler.set_header("Access-Control-Allow-Headers", wanted)
        self.handler.set_header("Access-Control-Max-Age", "86400")
        self.handler.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.handler.finish("ok")

    async def get(self, rest):
        if not self._allow_origin():
            return
        session_id, tail = self._split(rest)
        if not self._valid_get_tail(session_id, tail):
            return
        if not session_id:
            await self._open()
            return
        session = self.find_session(session_id)
        if session is not None:
            await self.resume(session)

    async def _open(self):
        session = self.create_session()
        if session is None:
            return
        session.keeps_leftovers = self.once
        if self.once:
            # Collected even if on_open never returns and the client gives up.
            session.touch_expiry(self.settings["xhr_polling_timeout"] + self.settings["session_expiry"])
        self.session = session
        if not await self.open_session(session):
            self.fail(403, "connection refused by on_open")
            return
        await self.start(session)

    async def post(self, rest):
        if not self._allow_origin():
            return
        session_id, tail = self._split(rest)
        if not self._valid_post_tail(tail):
            return
        try:
            payload = parse_data_field(self.handler.request_body())
        except BadRequest as exc:
            self.fail(exc.status, exc.reason)
            return
        session = self.find_session(session_id)
        if session is None:
            return
        if session.is_closed:
            self.fail(401, "session closed")
            return
        if self.normalise_crlf:
            payload = payload.replace("\r\n", "\n")
        try:
            waiter = session.receive(payload)
        except proto.TooManyFramesError as exc:
            self.fail(413, exc.reason)
            return
        except proto.DecodeError as exc:
            self.fail(400, "malformed payload: %s" % exc.reason)
            return
        if waiter is not None:
            # The client sends its next POST only after this answer: waiting for
            # a slow on_message to catch up is the back-pressure.
            await waiter
        self.handler.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.handler.finish("ok")

    # URL shapes (PROTOCOL.md §2.1); a transport narrows them.
    def _valid_get_tail(self, session_id, tail):
        return True

    def _valid_post_tail(self, tail):
        if tail != ["send"]:
            self.fail(404, "POST goes to /<session>/send")
            return False
        return True

    def _write(self, data):
        """Write and flush; a client gone away shows up later as connection lost."""
        handler = self.handler
        if handler._finished:
            return
        handler.write(data)
        try:
            future = handler.flush()
        except StreamBufferFullError:
            self.overflowed(handler.request.connection.stream)
            return
        future.add_done_callback(retrieve_write_error)


class LongPollingTransport(HttpTransport):
    """One GET per payload: answered at once if anything is queued, else held."""

    once = True
    content_type = "text/plain; charset=UTF-8"

    def __init__(self, handler):
        super().__init__(handler)
        self._answered = None

    async def start(self, session):
        # The first GET returns at once, carrying the id (connectTimeout is 5 s).
        self._answered = asyncio.get_running_loop().create_future()
        session.attach(self)
        await self._answered

    async def resume(self, session):
        self.session = session
        if session.is_closed:
            # A closed session's last frames, then 401 on the next poll.
            self.write_payload(session.take_leftovers())
            return
        loop = asyncio.get_running_loop()
        self._answered = loop.create_future()
        timer = IOLoop.current().call_later(self.settings["xhr_polling_timeout"], self._hold_expired)
        session.attach(self)
        try:
            await self._answered
        finally:
            IOLoop.current().remove_timeout(timer)

    def _hold_expired(self):
        self.session.detach(self)
        self.write_payload("")

    def _done(self):
        if self._answered is not None and not self._answered.done():
            self._answered.set_result(None)

    # -- sink -------------------------------------------------------------------
    def write_payload(self, payload):
        handler = self.handler
        if not handler._finished:
            handler.set_header("Content-Type", self.content_type)
            if self.router.shutting_down:
                # The client's next poll then needs a new connection, which the
                # stopped server refuses, instead of a kept-alive one answered 401.
                handler.set_header("Connection", "close")
            handler.finish(self.envelope(payload))
        self._done()

    def end(self):
        self.write_payload("")

    def envelope(self, payload):
        return payload

    def on_connection_lost(self):
        if self.session is not None:
            self.session.detach(self)
        self._done()


class XHRPollingTransport(LongPollingTransport):
    name = "xhr-polling"


class JSONPPollingTransport(LongPollingTransport):
    """Polls by <script src>; the index says which ``io.JSONP`` entry to call."""

    name = "jsonp-polling"
    normalise_crlf = True
    content_type = "text/javascript; charset=UTF-8"

    def __init__(self, handler):
        super().__init__(handler)
        self.index = None

    def _index_from(self, tail):
        if len(tail) != 2 or not _is_index(tail[1]):
            self.fail(400, "jsonp-polling needs /SESSION/TIME/INDEX, INDEX digits")
            return False
        self.index = tail[1]
        return True

    def _allow_origin(self):
        """No CORS for this transport: its ``<script>`` polls carry no Origin, and the
        page never reads what its form POSTs get (their Origin is ``null`` under
        ``Referrer-Policy: no-referrer``). ``jsonp_cross_site`` is its guard."""
        return True

    def _valid_get_tail(self, session_id, tail):
        return self._index_from(tail) and self._site_allowed()

    def _valid_post_tail(self, tail):
        return self._index_from(tail) and self._site_allowed()

    def _site_allowed(self):
        """With ``jsonp_cross_site`` off, refuse pages of other sites (SECURITY.rst).

        ``<script>`` ignores CORS, so the browser's ``Sec-Fetch-Site`` is the
        signal; a cross-site page whose Referer origin is in ``allowed_origins``
        is still let in.
        """
        if self.settings["jsonp_cross_site"]:
            return True
        headers = self.handler.request.headers
        if headers.get("Sec-Fetch-Site") != "cross-site":
            return True
        policy = self.settings["allowed_origins"]
        referer = origins.origin_of(headers.get("Referer", ""))
        request = self.handler.request
        if referer and origins.origin_allowed(policy, referer, request.host, request.protocol):
            return True
        self.fail(403, "cross-site jsonp-polling refused")
        return False

    def write_payload(self, payload):
        self.handler.set_header("X-Content-Type-Options", "nosniff")
        super().write_payload(payload)

    def envelope(self, payload):
        return "io.JSONP[%s]._(%s);" % (self.index, js_string(payload))


def _is_index(text):
    return 0 < len(text) <= _MAX_JSONP_INDEX_DIGITS and text.isascii() and text.isdigit()


class StreamingTransport(HttpTransport):
    """One GET kept open; every payload is written into it as it comes."""


    def __init__(self, handler):
        super().__init__(handler)
        self._closed = None

    def _valid_get_tail(self, session_id, tail):
        if session_id:
            self.fail(400, "%s opens with a GET without session id" % self.name)
            return False
        return True

    async def start(self, session):
        self._closed = asyncio.get_running_loop().create_future()
        handler = self.handler
        handler.set_header("Content-Type", self.content_type)
        limit_write_buffer(handler.request.connection.stream, self.settings)
        self._write(self.prologue())
        session.attach(self)
        session.start_heartbeats()
        await self._closed

    def _done(self):
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    def write_payload(self, payload):
        if payload:
            self._write(self.envelope(payload))

    def end(self):
        if not self.handler._finished:
            self.handler.finish()
        self._done()

    def on_connection_lost(self):
        if self.session is not None:
            self.session.close(sessions.REASON_CLIENT)
        self._done()


class HtmlFileTransport(StreamingTransport):
    """IE's ActiveX htmlfile: script chunks into a forever-loading iframe."""

    name = "htmlfile"
    content_type = "text/html; charset=UTF-8"

    def prologue(self):
        # IE renders progressively only after 256 bytes.
        return "<html><body>" + " " * 244

    def envelope(self, payload):
        return "<script>parent.s._(%s, document);</script>" % js_string(payload)


class XHRMultipartTransport(StreamingTransport):
    """Old Gecko's multipart XHR: one part per payload.

    The boundary is random per response: a fixed one (``socketio``) would let a
    message containing ``\n--socketio\n`` forge parts. The client script never
    sees the boundary; only the browser's multipart parser does.
    """

    name = "xhr-multipart"

    def __init__(self, handler):
        super().__init__(handler)
        self.boundary = "socketio" + secrets.token_hex(8)
        self.content_type = 'multipart/x-mixed-replace;boundary="%s"' % self.boundary

    def prologue(self):
        return "--%s\n" % self.boundary

    def envelope(self, payload):
        return "Content-Type: text/plain\n\n%s\n--%s\n" % (payload, self.boundary)
