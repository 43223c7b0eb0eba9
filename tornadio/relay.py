"""Polling sessions served by whichever process a request reaches.

A session lives in the process that created it, its *owner*. Without a relay
every request of a polling session must reach the owner (a sticky load
balancer). With the router setting ``session_relay`` (a :class:`RelayBackend`,
e.g. :class:`tornadio.redis_relay.RedisSessionRelay`), a poll GET or a POST
that reaches another process is forwarded to the owner, and the answer comes
back the same way; the owner keeps the :class:`~tornadio.SocketConnection`, so
``on_open``, ``on_message`` and ``on_close`` run once, in one process.

How a request finds its owner. Every session id ends with the owner's *tag*
(:data:`TAG_LENGTH` hex characters naming the process), so a process that does
not hold a session knows at once where to send the request, and a request
that reaches the owner costs nothing more than without a relay.

The exchange, all on the backend (one inbox per process)::

    non-owner                                   owner
    poll  {sid, transport, rid}        ->       attach a stand-in sink
          <- held                               (after a while without frames)
          <- frames {data, ack}                 what the session wrote to it
    ack / nack {rid}                   ->       frames delivered / put back
    detach {rid}                       ->       the hold ended here first
    post  {sid, transport, rid, data}  ->       Session.receive(data)
          <- busy                               a coroutine on_message runs
          <- taken | error {status}             the POST's answer

*Frames are kept until the non-owner confirms them.* The owner remembers what
it sent for a poll until the ``ack`` (written to the client) or ``nack`` (the
poll ended first); without either within ``ack_timeout`` (the non-owner died
or stalled) the frames go back to the front of the session's queue, and the
next poll, wherever it lands, gets them. Until then a new poll of the session
waits, so frames never overtake each other. A non-owner drops frames that
reach it later than ``ack_timeout / 2`` after they were sent (it was stopped,
say): the owner will send them again.

*An owner that dies or stops ends its sessions for everyone.* A request is
answered ``401`` (the client's cue to reconnect) when the backend says nobody
listens on the owner's inbox, when the owner does not answer within
``reply_timeout``, and, checked every ``watch_interval`` while requests wait,
when the backend reports the owner gone (a killed process at once, a stopped
one once its liveness mark expires). Nothing waits unbounded: a POST waits at
most ``request_timeout`` for a slow ``on_message`` (then ``504``), a poll at
most its hold.

*Nothing is taken over.* Only the owner reads or changes a session; a request
elsewhere is answered with the owner's own verdict (``401`` for an unknown,
expired, closed or other-transport session, ``400`` for a malformed payload,
``413``). Limits are applied before anything is forwarded: ``max_http_body``
by the transport, the frame codec's ``max_message_length`` here. Sessions are
only ever created by a request without a session id, in the process it
reaches. Whoever can publish on the backend is trusted, as for broadcasts.
"""
import asyncio
import itertools
import logging
import time
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Set, Tuple, cast

from tornado.ioloop import IOLoop, PeriodicCallback

from tornadio import proto
from tornadio.session import call_user, generate_session_id, short_id
from tornadio.transport import TransportError

if TYPE_CHECKING:
    from tornadio.session import Session, SessionContainer
    from tornadio.transport import Sink

log = logging.getLogger("tornadio.relay")

__all__ = ["RelayBackend", "SessionRelay", "RemoteSession", "TAG_LENGTH", "owner_tag",
           "validate_relay_backend"]

#: Hex characters of the owner's tag at the end of a relayed session id.
TAG_LENGTH = 10
#: Length of the random part in front of it (:func:`tornadio.session.generate_session_id`).
_RANDOM_LENGTH = 32
_HEX = frozenset("0123456789abcdef")

#: What a backend hands each message addressed to this process's router to.
Receiver = Callable[[Dict[str, Any]], None]


def owner_tag(session_id: str) -> Optional[str]:
    """The tag of the process that owns ``session_id``, or None for an id without one."""
    if len(session_id) != _RANDOM_LENGTH + TAG_LENGTH:
        return None
    tag = session_id[_RANDOM_LENGTH:]
    return tag if _HEX.issuperset(tag) else None


class RelayBackend:
    """Interface of a relay transport between processes (see ``tornadio.redis_relay``).

    Every method is called on the IOLoop thread. A backend carries JSON-able
    dicts from one process's router to another's, in the order they were
    sent by each sender, and tells which processes are alive.

    ``tag``
        This process's tag: :data:`TAG_LENGTH` lowercase hex characters,
        different in every process (made anew after a fork).
    ``connected``
        False while messages cannot be sent (they would resolve ``None``).
    ``attach(channel, receiver)`` / ``detach(channel, receiver)``
        Deliver (stop delivering) the messages sent to this process for the
        router named ``channel`` to ``receiver(message)``.
    ``send(tag, channel, message, ttl) -> asyncio.Future``
        Hand ``message`` to the router ``channel`` of process ``tag``; dropped
        by the receiver if it arrives more than ``ttl`` seconds after now. The
        future resolves to the number of processes that received it (0: no
        such process listens), or to ``None`` when it could not be sent; it
        never raises.
    ``alive(tags) -> asyncio.Future``
        Resolves to ``{tag: bool}`` for the tags the backend could check
        (a tag left out is unknown); never raises.
    ``ready(timeout)``, ``stats()``, ``close()``
        As for :class:`tornadio.broadcast.BroadcastBackend`.

    The timing attributes below are read by :class:`SessionRelay`.
    """

    #: Seconds a process waits for the owner's first answer to a request.
    reply_timeout = 3.0
    #: Seconds an owner keeps frames it relayed, waiting for the confirmation.
    ack_timeout = 3.0
    #: Longest wait, in seconds, of a relayed POST behind a slow ``on_message``.
    request_timeout = 60.0
    #: Seconds between two checks of the owners that requests wait for.
    watch_interval = 1.0

    @property
    def tag(self) -> str:
        raise NotImplementedError

    @property
    def connected(self) -> bool:
        raise NotImplementedError

    def attach(self, channel: str, receiver: Receiver) -> None:
        raise NotImplementedError

    def detach(self, channel: str, receiver: Receiver) -> None:
        raise NotImplementedError

    def send(self, tag: str, channel: str, message: Dict[str, Any],
             ttl: float) -> "asyncio.Future[Optional[int]]":
        raise NotImplementedError

    def alive(self, tags: Set[str]) -> "asyncio.Future[Dict[str, bool]]":
        raise NotImplementedError

    async def ready(self, timeout: float = 5.0) -> bool:
        raise NotImplementedError

    def stats(self) -> Dict[str, Any]:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


def validate_relay_backend(backend: Any) -> None:
    """ValueError unless ``backend`` is None or a :class:`RelayBackend` instance.

    A subclass, not any look-alike: the relay reads its timing attributes.
    """
    if backend is not None and not isinstance(backend, RelayBackend):
        raise ValueError("setting session_relay must be None or a RelayBackend object "
                         "(e.g. RedisSessionRelay(url=...)), not %r" % (backend,))


# -- the non-owner's side -------------------------------------------------------------
class RemoteSession:
    """A session of another process, as a transport handler sees it.

    Has the part of :class:`tornadio.session.Session` that the HTTP
    transports use; made for one request by :meth:`SessionRelay.find_session`.
    A poll (:meth:`attach`) or a POST (:meth:`receive`) is forwarded to the
    owner; ``is_closed`` turns True once the owner refused the request.
    """

    #: Set by transports on sessions they create; meaningless here.
    keeps_leftovers = False
    close_reason: Optional[str] = None

    def __init__(self, relay: "SessionRelay", session_id: str, transport: str,
                 owner: str) -> None:
        self.relay = relay
        self.id = session_id
        #: The transport the request came by; the owner checks it is the session's.
        self.transport = transport
        #: The owner's tag.
        self.owner = owner
        self.is_closed = False
        #: "poll" or "post" once forwarded.
        self.kind: Optional[str] = None
        #: This request's number among the relay's requests (0: not forwarded).
        self.rid = 0
        self.started = 0.0
        #: True once the owner answered anything.
        self.heard = False
        self._sink: Optional["Sink"] = None
        self._taken: "Optional[asyncio.Future[None]]" = None

    def confirm(self) -> None:
        """Nothing here: the owner confirms the handshake when the request reaches it."""

    def take_leftovers(self) -> str:
        """A refused remote session has nothing left: the owner sends leftovers with a poll."""
        return ""

    def receive(self, payload: str) -> "asyncio.Future[None]":
        """Check ``payload`` here, then forward it to the owner.

        :raises proto.DecodeError: for a malformed payload (nothing forwarded).
        :returns: a future that resolves once the owner's session took the
            payload, or raises :exc:`TransportError` with the owner's status
            (or 401 when the owner is gone, 503 when the relay is unreachable,
            504 after ``request_timeout``).
        """
        proto.decode(payload, self.relay.settings["max_message_length"])
        self._taken = asyncio.get_running_loop().create_future()
        self.relay.forward(self, "post", payload)
        return self._taken

    def attach(self, sink: "Sink") -> None:
        """Forward the poll; ``sink`` gets what the owner's session writes to it.

        A refused poll is answered through ``sink.answer_error`` (the
        transport handler's), then ``sink.end()``.
        """
        self._sink = sink
        self.relay.forward(self, "poll", None)

    def detach(self, sink: "Sink") -> None:
        """The poll ended here (its hold expired, the client left): tell the owner."""
        if self._sink is sink:
            self._sink = None
            self.relay.withdraw(self)

    # -- called by the relay ------------------------------------------------------
    def release(self) -> None:
        """End a held poll with an empty answer (this server is stopping)."""
        sink = self._sink
        if sink is not None:
            self.detach(sink)
            sink.end()

    def deliver(self, payload: str) -> bool:
        """Write the owner's frames to the waiting poll; False if it is gone."""
        sink, self._sink = self._sink, None
        if sink is None or getattr(sink, "answered", False):
            return False
        sink.write_payload(payload)
        return True

    def taken(self) -> None:
        """The owner's session took the POSTed payload: the POST is answered 200."""
        if self._taken is not None and not self._taken.done():
            self._taken.set_result(None)

    def fail(self, status: int, detail: str) -> None:
        """Answer the request with ``status``: the owner refused it, or is unreachable."""
        if status == 401:
            self.is_closed = True
        error = TransportError(status, detail)
        if self._taken is not None:
            if not self._taken.done():
                self._taken.set_exception(error)
            return
        sink, self._sink = self._sink, None
        if sink is None:
            return
        answer_error = getattr(sink, "answer_error", None)
        if answer_error is not None:
            answer_error(error)
        sink.end()


class _SettlingSession:
    """A local session whose last relayed frames are not confirmed yet.

    Everything is the session's own, except that a poll attaches only once
    the owner knows whether those frames were delivered (or must be sent
    again): so frames never overtake each other.
    """

    def __init__(self, relay: "SessionRelay", session: "Session") -> None:
        self._relay = relay
        self._session = session

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)

    def attach(self, sink: "Sink") -> None:
        self._relay.attach_when_settled(self._session, sink)

    def detach(self, sink: "Sink") -> None:
        self._relay.detach_waiting(self._session, sink)


# -- the owner's side ---------------------------------------------------------------
class _RelayedPoll:
    """The owner's stand-in sink for a poll that another process holds."""

    once = True

    def __init__(self, relay: "SessionRelay", session: "Session", tag: str, rid: int) -> None:
        self.relay = relay
        self.session = session
        self.tag = tag
        self.rid = rid
        self.finished = False
        #: Ends the poll if its holder never says it ended (it died).
        self.timer: Optional[object] = None
        #: Sends "held" if nothing else answered the poll meanwhile.
        self.held_timer: Optional[object] = None

    def write_payload(self, payload: str) -> None:
        if not self.finished:
            self.relay.poll_answered(self, payload)

    def end(self) -> None:
        self.write_payload("")


class _Unconfirmed:
    """Frames the owner relayed and the non-owner has not confirmed yet."""

    __slots__ = ("payload", "tag", "rid", "timer", "waiting")

    def __init__(self, payload: str, tag: str, rid: int, timer: object) -> None:
        self.payload = payload
        self.tag = tag
        self.rid = rid
        self.timer = timer
        #: A poll that came meanwhile (the newest), attached once settled.
        self.waiting: Optional["Sink"] = None


class SessionRelay:
    """One router's relay: forwards requests for other processes' sessions and
    serves the requests other processes forward for this one's.

    Made by the router with its session container when the setting
    ``session_relay`` is set; it gives the container its session ids (the
    process's tag at the end).

    :param container: the router's session container.
    :param backend: the :class:`RelayBackend`.
    :param settings: the router's settings (``broadcast_channel`` names the
        router in every process; ``xhr_polling_timeout``,
        ``max_message_length`` and ``max_http_body`` are read too).
    """

    def __init__(self, container: "SessionContainer", backend: RelayBackend,
                 settings: Dict[str, Any]) -> None:
        self.container = container
        self.backend = backend
        self.settings = settings
        self.channel: str = settings["broadcast_channel"]
        self._ids = itertools.count(1)
        #: Requests forwarded from here and not answered yet, by number.
        self._requests: Dict[int, RemoteSession] = {}
        #: Polls of other processes held for this process's sessions.
        self._polls: Dict[Tuple[str, int], _RelayedPoll] = {}
        #: Relayed frames waiting for their confirmation, by session id.
        self._unconfirmed: Dict[str, _Unconfirmed] = {}
        self._watch: Optional[PeriodicCallback] = None
        self._checking = False
        self.closed = False
        self.counts = {"forwarded_polls": 0, "forwarded_posts": 0, "served_polls": 0,
                       "served_posts": 0, "refused": 0, "owner_gone": 0, "no_answer": 0,
                       "unavailable": 0, "resent": 0, "late_frames": 0}
        container.id_factory = self.new_session_id
        backend.attach(self.channel, self.receive)

    def new_session_id(self) -> str:
        """A session id naming this process as its owner."""
        return generate_session_id() + self.backend.tag

    @property
    def tag(self) -> str:
        return self.backend.tag

    # -- what the transports call ---------------------------------------------------
    def find_session(self, session_id: str, transport: str,
                     local: "Optional[Session]") -> "Optional[Session]":
        """What a request for ``session_id`` should talk to.

        :param local: the session of this process by that id, if any.
        :returns: ``local`` itself (the common case, nothing relayed); a
            stand-in that makes a poll wait for unconfirmed relayed frames; a
            :class:`RemoteSession` for another process's session; or None when
            the id names no other process (the caller answers 401).
        :raises TransportError: 503 when the relay cannot reach other processes.
        """
        if local is not None:
            if session_id in self._unconfirmed:
                return cast("Session", _SettlingSession(self, local))
            return local
        owner = owner_tag(session_id)
        if owner is None or owner == self.backend.tag or self.closed:
            return None
        if not self.backend.connected:
            self.counts["unavailable"] += 1
            raise TransportError(503, "session relay unavailable")
        return cast("Session", RemoteSession(self, session_id, transport, owner))

    # -- forwarding (the non-owner's side) -------------------------------------------
    def forward(self, request: RemoteSession, kind: str, data: Optional[str]) -> None:
        """Send ``request`` (a poll, or a POST of ``data``) to its owner."""
        rid = next(self._ids)
        request.kind, request.rid, request.started = kind, rid, time.monotonic()
        self._requests[rid] = request
        self.counts["forwarded_%ss" % kind] += 1
        message: Dict[str, Any] = {"op": kind, "sid": request.id, "tr": request.transport,
                                   "rid": rid, "from": self.backend.tag}
        if data is not None:
            message["data"] = data
        sent = self.backend.send(request.owner, self.channel, message, self.backend.reply_timeout)
        sent.add_done_callback(lambda future: self._forwarded(request, future))
        self._start_watch()

    def _forwarded(self, request: RemoteSession, future: "asyncio.Future[Optional[int]]") -> None:
        receivers = None if future.cancelled() or future.exception() else future.result()
        if receivers is None:
            self.counts["unavailable"] += 1
            self._end(request, 503, "session relay unavailable")
        elif receivers == 0:
            self.counts["owner_gone"] += 1
            self._end(request, 401, "owner process gone")

    def withdraw(self, request: RemoteSession) -> None:
        """A forwarded poll ended here first: the owner stops holding it."""
        if self._requests.pop(request.rid, None) is not None:
            self._send(request.owner, {"op": "detach", "rid": request.rid,
                                       "from": self.backend.tag}, self.backend.reply_timeout)

    def _end(self, request: RemoteSession, status: int, detail: str) -> None:
        if self._requests.pop(request.rid, None) is not None:
            request.fail(status, detail)

    def _answer(self, message: Dict[str, Any]) -> None:
        """The owner's answer to a request forwarded from here."""
        op = message["op"]
        rid = message["rid"]
        request = self._requests.get(rid)
        if op == "frames":
            self._requests.pop(rid, None)
            delivered = request is not None and request.deliver(message["data"])
            if message.get("ack"):
                self._send(message["from"], {"op": "ack" if delivered else "nack", "rid": rid,
                                             "sid": message["sid"], "from": self.backend.tag},
                           self.backend.ack_timeout)
            return
        if request is None:
            return
        request.heard = True
        if op == "taken":
            del self._requests[rid]
            request.taken()
        elif op == "error":
            del self._requests[rid]
            self.counts["refused"] += 1
            request.fail(int(message["status"]), str(message["detail"]))

    def _start_watch(self) -> None:
        if self._watch is None and not self.closed:
            self._watch = PeriodicCallback(self._check_requests,
                                           self.backend.watch_interval * 1000)
            self._watch.start()

    def _check_requests(self) -> None:
        """Bound every wait: no answer in time, or an owner gone, ends the request."""
        if not self._requests:
            if self._watch is not None:
                self._watch.stop()
                self._watch = None
            return
        now = time.monotonic()
        backend = self.backend
        for request in list(self._requests.values()):
            waited = now - request.started
            if not request.heard and waited > backend.reply_timeout:
                self.counts["no_answer"] += 1
                log.info("session %s: owner %s did not answer within %g s",
                         short_id(request.id), request.owner, backend.reply_timeout)
                self._end(request, 401, "owner process did not answer")
            elif request.kind == "post" and waited > backend.request_timeout:
                self._end(request, 504, "owner did not take the payload within %g s"
                          % backend.request_timeout)
        owners = {request.owner for request in self._requests.values()}
        if owners and not self._checking:
            self._checking = True
            backend.alive(owners).add_done_callback(self._owners_checked)

    def _owners_checked(self, future: "asyncio.Future[Dict[str, bool]]") -> None:
        self._checking = False
        if future.cancelled() or future.exception() is not None:
            return
        gone = {tag for tag, alive in future.result().items() if not alive}
        for request in list(self._requests.values()):
            if request.owner in gone:
                self.counts["owner_gone"] += 1
                self._end(request, 401, "owner process gone")

    # -- serving (the owner's side) ---------------------------------------------------
    def receive(self, message: Dict[str, Any]) -> None:
        """A message from another process for this router (the backend calls it)."""
        if self.closed:
            return
        try:
            op = message["op"]
            if op == "poll":
                self._serve_poll(message)
            elif op == "post":
                self._serve_post(message)
            elif op in ("ack", "nack"):
                self._confirmed(message["sid"], message["from"], message["rid"], op == "ack")
            elif op == "detach":
                self._detach(message["from"], message["rid"])
            elif op in ("held", "busy", "taken", "error", "frames"):
                self._answer(message)
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("session relay: ignoring a malformed message (%s: %s)",
                        type(exc).__name__, exc)

    def _reply(self, request: Dict[str, Any], op: str, **fields: Any) -> None:
        fields.update(op=op, rid=request["rid"])
        self._send(request["from"], fields, self.backend.reply_timeout)

    def _send(self, tag: str, message: Dict[str, Any],
              ttl: float) -> "asyncio.Future[Optional[int]]":
        future = self.backend.send(tag, self.channel, message, ttl)
        return future

    def _owned(self, request: Dict[str, Any]) -> "Optional[Session]":
        """The session a forwarded request names, or None (refused 401, answered)."""
        session = self.container.get(request["sid"])
        if session is None:
            detail = "unknown or expired session"
        elif session.transport != request["tr"]:
            detail = "session belongs to transport %s" % session.transport
        else:
            return session
        self._reply(request, "error", status=401, detail=detail)
        return None

    def _serve_post(self, request: Dict[str, Any]) -> None:
        session = self._owned(request)
        if session is None:
            return
        self.counts["served_posts"] += 1
        data = request["data"]
        if not isinstance(data, str):
            raise TypeError("post data is not a string")
        if session.is_closed:
            self._reply(request, "error", status=401, detail="session closed")
            return
        limit = self.settings["max_http_body"]
        if len(data) > limit or len(data.encode("utf-8")) > limit:
            self._reply(request, "error", status=413, detail="body over max_http_body")
            return
        session.confirm()
        try:
            waiter = session.receive(data)
        except proto.DecodeError as exc:
            self._reply(request, "error", status=400, detail="malformed payload: %s" % exc.reason)
            return
        if waiter is None:
            self._reply(request, "taken")
            return
        self._reply(request, "busy")
        waiter.add_done_callback(lambda _: self._reply(request, "taken"))

    def _serve_poll(self, request: Dict[str, Any]) -> None:
        session = self._owned(request)
        if session is None:
            return
        self.counts["served_polls"] += 1
        tag, rid = request["from"], int(request["rid"])
        session.confirm()
        if session.is_closed:
            # Its last frames, then 401 on the next poll (as a local poll would).
            self._reply(request, "frames", data=session.take_leftovers(), sid=session.id,
                        ack=False)
            return
        poll = _RelayedPoll(self, session, tag, rid)
        self._polls[(tag, rid)] = poll
        # Held no longer than the non-owner's own hold, plus a margin for its
        # detach to arrive: a non-owner that died leaves nothing attached.
        poll.timer = IOLoop.current().call_later(
            self.settings["xhr_polling_timeout"] + self.backend.reply_timeout,
            self._poll_expired, poll)
        self.attach_when_settled(session, poll)
        if not poll.finished:
            # The holder wants a sign of life within reply_timeout; frames that
            # come before this fires are that sign (a busy session pays nothing).
            poll.held_timer = IOLoop.current().call_later(
                self.backend.reply_timeout / 3, self._still_held, poll, request)

    def _still_held(self, poll: _RelayedPoll, request: Dict[str, Any]) -> None:
        poll.held_timer = None
        if not poll.finished:
            self._reply(request, "held")

    def _poll_expired(self, poll: _RelayedPoll) -> None:
        poll.timer = None
        self._drop_poll(poll)

    def _detach(self, tag: str, rid: int) -> None:
        poll = self._polls.get((tag, rid))
        if poll is not None:
            self._drop_poll(poll)

    def _drop_poll(self, poll: _RelayedPoll) -> None:
        """The poll ended at its holder without an answer from here."""
        poll.finished = True
        self._forget_poll(poll)
        self.detach_waiting(poll.session, poll)

    def _forget_poll(self, poll: _RelayedPoll) -> None:
        self._polls.pop((poll.tag, poll.rid), None)
        loop = IOLoop.current()
        for timer in (poll.timer, poll.held_timer):
            if timer is not None:
                loop.remove_timeout(timer)
        poll.timer = poll.held_timer = None

    def poll_answered(self, poll: _RelayedPoll, payload: str) -> None:
        """The session wrote ``payload`` to a relayed poll: send it, keep it until confirmed."""
        poll.finished = True
        self._forget_poll(poll)
        session = poll.session
        message = {"op": "frames", "rid": poll.rid, "sid": session.id, "data": payload,
                   "from": self.backend.tag, "ack": bool(payload)}
        if not payload:
            self._send(poll.tag, message, self.backend.reply_timeout)
            return
        timer = IOLoop.current().call_later(self.backend.ack_timeout, self._confirmed,
                                            session.id, poll.tag, poll.rid, False)
        self._unconfirmed[session.id] = _Unconfirmed(payload, poll.tag, poll.rid, timer)
        sent = self._send(poll.tag, message, self.backend.ack_timeout / 2)

        def nobody_listens(future: "asyncio.Future[Optional[int]]") -> None:
            if not future.cancelled() and future.exception() is None and future.result() == 0:
                self._confirmed(session.id, poll.tag, poll.rid, False)  # its holder is gone

        sent.add_done_callback(nobody_listens)

    def _confirmed(self, session_id: str, tag: str, rid: int, delivered: bool) -> None:
        """Relayed frames were written to their client, or will never be: settle them."""
        pending = self._unconfirmed.get(session_id)
        if pending is None or pending.tag != tag or pending.rid != rid:
            return  # settled already (a late ack after the timeout, say)
        del self._unconfirmed[session_id]
        IOLoop.current().remove_timeout(pending.timer)
        session = self.container.get(session_id)
        if not delivered:
            self.counts["resent"] += 1
            if session is not None and session.accepts_sends:
                session.requeue(pending.payload)
            else:
                log.info("session %s: relayed frames not confirmed and the session is "
                         "closed; dropped", short_id(session_id))
        sink = pending.waiting
        if sink is None:
            return
        if session is None or session.is_closed:
            sink.end()
        else:
            session.attach(sink)

    def attach_when_settled(self, session: "Session", sink: "Sink") -> None:
        """Attach ``sink`` to ``session`` once its relayed frames are settled."""
        pending = self._unconfirmed.get(session.id)
        if pending is None:
            session.attach(sink)
            return
        older, pending.waiting = pending.waiting, sink
        if older is not None:
            older.write_payload("")  # overlapping polls: the older one ends empty
            return
        # The client polls again, so it got an answer or gave up: if the poll's
        # holder is gone, its confirmation will never come; do not wait for it.
        session_id, tag, rid = session.id, pending.tag, pending.rid

        def checked(future: "asyncio.Future[Dict[str, bool]]") -> None:
            if not future.cancelled() and future.exception() is None \
                    and future.result().get(tag) is False:
                self._confirmed(session_id, tag, rid, False)

        self.backend.alive({tag}).add_done_callback(checked)

    def detach_waiting(self, session: "Session", sink: "Sink") -> None:
        """``sink`` went away: whether it waited for settling or was attached."""
        pending = self._unconfirmed.get(session.id)
        if pending is not None and pending.waiting is sink:
            pending.waiting = None
        else:
            session.detach(sink)

    # -- lifecycle ------------------------------------------------------------------
    def release_polls(self) -> None:
        """The server is stopping: end the polls held here for other owners (empty
        answers, the clients poll again elsewhere)."""
        for request in list(self._requests.values()):
            request.release()

    def close(self) -> None:
        """Stop relaying (the router starts afresh); what waits is answered 503."""
        if self.closed:
            return
        self.closed = True
        self.backend.detach(self.channel, self.receive)
        if self._watch is not None:
            self._watch.stop()
            self._watch = None
        for request in list(self._requests.values()):
            self._end(request, 503, "server restarting")
        loop = IOLoop.current()
        for poll in list(self._polls.values()):
            self._forget_poll(poll)
        unconfirmed, self._unconfirmed = self._unconfirmed, {}
        for pending in unconfirmed.values():
            loop.remove_timeout(pending.timer)
            if pending.waiting is not None:
                pending.waiting.end()

    def stats(self) -> Dict[str, Any]:
        """Counters and what waits now, JSON-able."""
        stats: Dict[str, Any] = dict(self.counts)
        stats.update(tag=self.backend.tag, waiting_requests=len(self._requests),
                     held_polls=len(self._polls), unconfirmed=len(self._unconfirmed),
                     backend=type(self.backend).__name__,
                     backend_state=call_user("relay backend stats", self.backend.stats))
        return stats
