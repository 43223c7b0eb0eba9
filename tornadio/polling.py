"""The HTTP transports: xhr-polling and jsonp-polling (long-poll GETs) and
htmlfile and xhr-multipart (one streamed GET), all over one session mechanism.

Every one of them takes client payloads as ``data=`` POSTs; they differ only in
how a GET is answered and how a payload is wrapped (docs/protocol.rst §4.3–§4.6).

What a request does is written once, in the ``*Exchange`` classes, on a few
handler primitives (``request``, ``set_header``, ``finish``, ``answered``).
Two bases provide them: Tornado's ``RequestHandler`` (the handler classes
here) and the lean handlers of :mod:`tornadio.lean`, which answer long polls
and POSTs on a bare ``HTTPMessageDelegate`` once the router knows its
application.
"""
import asyncio
import json
import secrets
from typing import Any, Awaitable, List, Optional, Tuple, Union
from urllib.parse import unquote_to_bytes

import tornado.web

from tornadio import origins, proto, session as sessions
from tornadio.transport import TransportError, TransportHandlerMixin

_MAX_JSONP_INDEX_DIGITS = 10


def parse_data_field(body: Union[bytes, bytearray]) -> str:
    """The client payload from a urlencoded body, decoded by hand.

    Tornado's ``get_argument`` strips whitespace and rewrites control
    characters, which would change messages (docs/protocol.rst §4). Raises
    :class:`TransportError` 400 for a body without a UTF-8 ``data`` field.
    """
    data = bytes(body)
    if data.startswith(b"data=") and b"&" not in data:
        fields = [data]  # what every client sends: one field, no split needed
    else:
        fields = data.split(b"&")
    for field in fields:
        name, _, value = field.partition(b"=")
        if name == b"data":
            if b"%" in value or b"+" in value:
                value = unquote_to_bytes(value.replace(b"+", b" "))
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise TransportError(400, "data is not valid UTF-8") from None
    raise TransportError(400, "no data field in the POST body")


def js_string(payload: str) -> str:
    """A JavaScript string literal safe inside <script>, in any engine."""
    # ensure_ascii escapes U+2028/U+2029; "<" escaped so "</script>" and
    # "<!--" can never appear in the page.
    return json.dumps(payload).replace("<", "\\u003c")


def split_tail(rest: Optional[str]) -> Tuple[str, List[str]]:
    """(session id, remaining path segments) from the URL tail."""
    if not rest or rest == "/":
        return "", []
    segments = rest[1:].split("/")
    return segments[0], segments[1:]


class HttpExchange(TransportHandlerMixin):
    """One request of an HTTP transport, on either base (RequestHandler or lean).

    Validation, session lookup and the POST all live here, so both bases
    answer every request alike.
    """

    #: Replace CRLF with LF in POSTed payloads (the jsonp form quirk, §4.4).
    normalise_crlf = False
    body: Optional[bytearray] = None

    # -- the request body, streamed so an oversized POST is refused unbuffered ----
    def check_declared_body(self) -> None:
        """Before any body byte: TransportError 413 for a POST declaring too much."""
        if self.request.method == "POST":
            self.body = bytearray()
            declared = self.request.headers.get("Content-Length")
            limit = self.socket_settings["max_http_body"]
            if declared and declared.isdigit() and int(declared) > limit:
                raise TransportError(413, "body of %s bytes over max_http_body" % declared)

    def data_received(self, chunk: bytes) -> None:
        if self.answered or self.body is None:
            return
        if len(self.body) + len(chunk) > self.socket_settings["max_http_body"]:
            self.body = None
            self.answer_error(TransportError(413, "body over max_http_body"))
            return
        self.body += chunk

    def connection_lost(self) -> None:
        """The client dropped the request before it was answered."""

    # -- URL and origin ---------------------------------------------------------
    split_tail = staticmethod(split_tail)

    def allow_origin(self) -> None:
        """CORS: echo an allowed Origin (never with credentials); 403 for others."""
        origin = self.request.headers.get("Origin")
        if origin is None:
            return
        if not origins.check(self.socket_settings["allowed_origins"], origin, self.request,
                             self.name):
            raise TransportError(403, origins.REFUSED)
        self.set_header("Access-Control-Allow-Origin", origin)
        self.set_header("Vary", "Origin")

    # URL shapes (docs/protocol.rst §2.1); a transport narrows them.
    def check_get_tail(self, session_id: str, tail: List[str]) -> None:
        """Raise TransportError for a GET URL this transport does not take."""

    def check_post_tail(self, tail: List[str]) -> None:
        """Raise TransportError for a POST URL this transport does not take."""
        if tail != ["send"]:
            raise TransportError(404, "POST goes to /<session>/send")

    # -- GET ----------------------------------------------------------------------
    def check_get(self, rest: Optional[str]) -> str:
        """Validate a GET; its session id ("" for a new session)."""
        self.allow_origin()
        session_id, tail = split_tail(rest)
        self.check_get_tail(session_id, tail)
        return session_id

    def find_resumed(self, session_id: str) -> Optional[sessions.Session]:
        """The session a GET names, its handshake complete (None: answered already)."""
        session = self.find_session(session_id)
        if session is not None:
            session.confirm()
        return session

    async def open_new(self, extra: Optional[str]) -> Optional[sessions.Session]:
        """Open a session and run ``on_open``; the session, or None when answered.

        Raises TransportError 403/503 when ``on_open`` refused or the session
        closed meanwhile.
        """
        self.take_route(extra)
        session = self.session = self.create_session(confirmed=not self.once)
        session.keeps_leftovers = self.once
        if self.once:
            # Collected even if on_open never returns and the client gives up.
            session.touch_expiry(self.socket_settings["xhr_polling_timeout"]
                                 + self.socket_settings["session_expiry"])
        if not await self.open_session(session):
            if self.answered:
                return None
            if session.close_reason == sessions.REASON_REFUSED:
                raise TransportError(403, "connection refused by on_open")
            if session.close_reason == sessions.REASON_CLIENT:
                return None  # nobody is listening for an answer
            raise TransportError(503, "session closed while on_open ran: %s"
                                 % session.close_reason)
        return session

    # -- POST ---------------------------------------------------------------------
    def take_post(self, rest: Optional[str]) -> "Optional[Awaitable[Any]]":
        """Hand a POST's payload to its session.

        Returns what to wait for before answering ``ok`` (a slow coroutine
        ``on_message``: the client sends its next POST only after this answer,
        which is the back-pressure), or None. Raises TransportError.
        """
        self.allow_origin()
        session_id, tail = split_tail(rest)
        self.check_post_tail(tail)
        assert self.body is not None
        payload = parse_data_field(self.body)
        session = self.find_session(session_id)
        if session is None:
            return None  # answered during the shutdown
        if session.is_closed:
            raise TransportError(401, "session closed")
        session.confirm()
        if self.normalise_crlf:
            payload = payload.replace("\r\n", "\n")
        try:
            return session.receive(payload)
        except proto.TooManyFramesError as exc:
            raise TransportError(413, exc.reason) from None
        except proto.DecodeError as exc:
            raise TransportError(400, "malformed payload: %s" % exc.reason) from None

    def answer_post(self) -> None:
        """``ok``: the payload was taken (unless answered already)."""
        if not self.answered:
            self.set_header("Content-Type", "text/plain; charset=UTF-8")
            self.finish("ok")


class LongPollExchange(HttpExchange):
    """One GET per payload: answered at once if anything is queued, else held."""

    once = True
    content_type = "text/plain; charset=UTF-8"
    poll_timer: Optional[asyncio.TimerHandle] = None

    def hold(self, session: sessions.Session, timeout: Optional[float]) -> bool:
        """Become ``session``'s sink; True while the answer is still to come.

        ``timeout`` (None for the first GET, which its queued id answers at
        once) is how long the poll is held before an empty answer.
        """
        self.session = session
        if session.is_closed:
            # A closed session's last frames, then 401 on the next poll.
            self.write_payload(session.take_leftovers())
            return False
        session.attach(self)  # answers at once when frames are queued
        if self.answered:
            return False
        if timeout is not None:
            self.poll_timer = asyncio.get_running_loop().call_later(timeout, self.hold_expired)
        return True

    def hold_expired(self) -> None:
        self.poll_timer = None
        if self.session is not None:
            self.session.detach(self)
        self.write_payload("")

    def poll_done(self) -> None:
        """The poll is answered or its client gone: its timer is no longer needed."""
        timer, self.poll_timer = self.poll_timer, None
        if timer is not None:
            timer.cancel()

    # -- sink -------------------------------------------------------------------
    def write_payload(self, payload: str) -> None:
        if not self.answered:
            self.set_header("Content-Type", self.content_type)
            if self.router.shutting_down:
                # The client's next poll then needs a new connection, which the
                # stopped server refuses, instead of a kept-alive one answered 401.
                self.set_header("Connection", "close")
            self.finish(self.envelope(payload))
        self.poll_done()

    def end(self) -> None:
        self.write_payload("")

    def envelope(self, payload: str) -> str:
        return payload

    def connection_lost(self) -> None:
        if self.session is not None:
            self.session.detach(self)
        self.poll_done()


class XHRPollingExchange(LongPollExchange):
    name = "xhr-polling"


class JSONPPollingExchange(LongPollExchange):
    """Polls by <script src>; the index says which ``io.JSONP`` entry to call."""

    name = "jsonp-polling"
    normalise_crlf = True
    content_type = "text/javascript; charset=UTF-8"
    index = "0"

    def take_index(self, tail: List[str]) -> None:
        if len(tail) != 2 or not _is_index(tail[1]):
            raise TransportError(400, "jsonp-polling needs /SESSION/TIME/INDEX, INDEX digits")
        self.index = tail[1]

    def allow_origin(self) -> None:
        """No CORS for this transport: its ``<script>`` polls carry no Origin, and the
        page never reads what its form POSTs get (their Origin is ``null`` under
        ``Referrer-Policy: no-referrer``). ``jsonp_cross_site`` is its guard."""

    def check_get_tail(self, session_id: str, tail: List[str]) -> None:
        self.take_index(tail)
        self.check_site()

    def check_post_tail(self, tail: List[str]) -> None:
        self.take_index(tail)
        self.check_site()

    def check_site(self) -> None:
        """With ``jsonp_cross_site`` off, refuse pages of other sites (SECURITY.rst).

        ``<script>`` ignores CORS, so the browser's ``Sec-Fetch-Site`` is the
        signal; a cross-site page whose Referer origin is in ``allowed_origins``
        is still let in.
        """
        settings = self.socket_settings
        if settings["jsonp_cross_site"]:
            return
        headers = self.request.headers
        if headers.get("Sec-Fetch-Site") != "cross-site":
            return
        policy = settings["allowed_origins"]
        referer = origins.origin_of(headers.get("Referer", ""))
        request = self.request
        if referer and origins.origin_allowed(policy, referer, request.host, request.protocol):
            return
        raise TransportError(403, "cross-site jsonp-polling refused")

    def write_payload(self, payload: str) -> None:
        if not self.answered:
            self.set_header("X-Content-Type-Options", "nosniff")
        super().write_payload(payload)

    def envelope(self, payload: str) -> str:
        return "io.JSONP[%s]._(%s);" % (self.index, js_string(payload))


def _is_index(text: str) -> bool:
    return 0 < len(text) <= _MAX_JSONP_INDEX_DIGITS and text.isascii() and text.isdigit()


# -- the RequestHandler base ---------------------------------------------------------

@tornado.web.stream_request_body
class HttpTransport(HttpExchange, tornado.web.RequestHandler):
    """GET/POST/OPTIONS shared by the four HTTP transports (no WebSocket machinery)."""

    def prepare(self) -> None:
        self.check_declared_body()

    def on_connection_close(self) -> None:
        super().on_connection_close()  # ends the wait for a streamed body
        self.connection_lost()

    # -- methods ----------------------------------------------------------------
    def options(self, resource: Any = None, extra: Optional[str] = None,
                protocol: Any = None, rest: Optional[str] = None) -> None:
        self.allow_origin()
        wanted = self.request.headers.get("Access-Control-Request-Headers")
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        if wanted:
            self.set_header("Access-Control-Allow-Headers", wanted)
        self.set_header("Access-Control-Max-Age", "86400")
        self.set_header("Content-Type", "text/plain; charset=UTF-8")
        self.finish("ok")

    async def get(self, resource: Any = None, extra: Optional[str] = None,
                  protocol: Any = None, rest: Optional[str] = None) -> None:
        session_id = self.check_get(rest)
        if not session_id:
            session = await self.open_new(extra)
            if session is not None:
                await self.start(session)
            return
        resumed = self.find_resumed(session_id)
        if resumed is not None:
            await self.resume(resumed)

    async def start(self, session: sessions.Session) -> None:
        raise NotImplementedError

    async def resume(self, session: sessions.Session) -> None:
        raise NotImplementedError

    async def post(self, resource: Any = None, extra: Optional[str] = None,
                   protocol: Any = None, rest: Optional[str] = None) -> None:
        if self.body is None or self.answered:
            return  # already answered 413 while the body streamed in
        waiter = self.take_post(rest)
        if waiter is not None:
            await waiter
        self.answer_post()

    def write_chunk(self, data: str) -> None:
        """Write and flush into a streamed answer, bounded by max_queue_bytes."""
        if self.answered or not self.room_for(len(data)):
            return
        self.write(data)
        self.track_write(self.flush(), len(data))


class LongPollingTransport(LongPollExchange, HttpTransport):
    """A long poll on a RequestHandler: the GET waits for its answer."""

    poll_answered: "Optional[asyncio.Future[None]]" = None

    async def start(self, session: sessions.Session) -> None:
        # The first GET returns at once, carrying the id (connectTimeout is 5 s).
        await self.held(session, None)

    async def resume(self, session: sessions.Session) -> None:
        await self.held(session, self.socket_settings["xhr_polling_timeout"])

    async def held(self, session: sessions.Session, timeout: Optional[float]) -> None:
        if self.hold(session, timeout):
            self.poll_answered = asyncio.get_running_loop().create_future()
            await self.poll_answered

    def poll_done(self) -> None:
        super().poll_done()
        if self.poll_answered is not None and not self.poll_answered.done():
            self.poll_answered.set_result(None)


class XHRPollingTransport(XHRPollingExchange, LongPollingTransport):
    """xhr-polling on a RequestHandler (before the router knows its application)."""


class JSONPPollingTransport(JSONPPollingExchange, LongPollingTransport):
    """jsonp-polling on a RequestHandler (before the router knows its application)."""


class StreamingTransport(HttpTransport):
    """One GET kept open; every payload is written into it as it comes."""

    content_type = "text/plain; charset=UTF-8"
    stream_ended: "Optional[asyncio.Future[None]]" = None

    def check_get_tail(self, session_id: str, tail: List[str]) -> None:
        if session_id:
            raise TransportError(400, "%s opens with a GET without session id" % self.name)

    async def start(self, session: sessions.Session) -> None:
        self.stream_ended = asyncio.get_running_loop().create_future()
        self.set_header("Content-Type", self.content_type)
        self.write_chunk(self.prologue())
        session.attach(self)
        session.start_heartbeats()
        await self.stream_ended

    async def resume(self, session: sessions.Session) -> None:
        raise TransportError(400, "%s opens with a GET without session id" % self.name)

    def prologue(self) -> str:
        return ""

    def envelope(self, payload: str) -> str:
        return payload

    def stream_done(self) -> None:
        if self.stream_ended is not None and not self.stream_ended.done():
            self.stream_ended.set_result(None)

    def write_payload(self, payload: str) -> None:
        if payload:
            self.write_chunk(self.envelope(payload))

    def end(self) -> None:
        if not self.answered:
            self.finish()
        self.stream_done()

    def connection_lost(self) -> None:
        if self.session is not None:
            self.session.close(sessions.REASON_CLIENT)
        self.stream_done()

    def drop_client(self) -> None:
        super().drop_client()
        self.stream_done()


class HtmlFileTransport(StreamingTransport):
    """IE's ActiveX htmlfile: script chunks into a forever-loading iframe."""

    name = "htmlfile"
    content_type = "text/html; charset=UTF-8"

    def prologue(self) -> str:
        # IE renders progressively only after 256 bytes.
        return "<html><body>" + " " * 244

    def envelope(self, payload: str) -> str:
        return "<script>parent.s._(%s, document);</script>" % js_string(payload)


class XHRMultipartTransport(StreamingTransport):
    """Old Gecko's multipart XHR: one part per payload.

    The boundary is random per response: a fixed one (``socketio``) would let a
    message containing ``\n--socketio\n`` forge parts. The client script never
    sees the boundary; only the browser's multipart parser does.
    """

    name = "xhr-multipart"

    boundary = ""

    def prologue(self) -> str:
        self.boundary = "socketio" + secrets.token_hex(8)
        self.set_header("Content-Type", 'multipart/x-mixed-replace;boundary="%s"' % self.boundary)
        return "--%s\n" % self.boundary

    def envelope(self, payload: str) -> str:
        return "Content-Type: text/plain\n\n%s\n--%s\n" % (payload, self.boundary)
