"""Sessions: one per connected client, whatever the transport.

A session owns the outgoing queue, the heartbeat timer and the order in which
incoming messages reach user code. It knows nothing of HTTP: a transport
attaches a *sink* — an object with ``write_payload(str)``, ``end()`` and
``once`` (True for a long-poll GET, which takes one payload and is detached) —
and the session writes whole payloads to it.
"""
import asyncio
import inspect
import logging
import secrets
import time
from collections import deque
from typing import (TYPE_CHECKING, Any, Awaitable, Callable, Deque, Dict, Iterator, List,
                    Optional, Tuple)

from tornado.ioloop import PeriodicCallback

from tornadio import proto

if TYPE_CHECKING:
    from tornadio.conn import ConnectionInfo, SocketConnection
    from tornadio.router import Router
    from tornadio.transport import Sink

log = logging.getLogger("tornadio.session")

#: Session states. OPENING: ``on_open`` runs; CLOSING: the client is gone and
#: ``on_close`` has not finished yet.
NEW, OPENING, OPEN, CLOSING, CLOSED = "new", "opening", "open", "closing", "closed"

# Why a session ended; logged and kept in ``Session.close_reason``.
REASON_SERVER = "closed by the server"
REASON_CLIENT = "client went away"
REASON_EXPIRED = "expired (no poll)"
REASON_HEARTBEAT = "heartbeat echo missing"
REASON_OVERFLOW = "send queue overflow"
REASON_INBOX_OVERFLOW = "too many messages waiting for on_message"
REASON_REFUSED = "refused by on_open"
REASON_SHUTDOWN = "server shutting down"
REASON_BAD_INPUT = "malformed input"

#: Incoming messages that may pile up behind the payload being dispatched
#: before the client is cut off (transports also stop reading while they wait).
MAX_INBOX = 10000
#: Seconds of ``on_message`` calls one loop turn may spend on a batch; the rest
#: of it is dispatched in later turns, in order, while the transport waits.
DISPATCH_SLICE = 0.002
#: The clock is read once per this many messages.
_SLICE_CHECK = 16

_FAILED = object()


def generate_session_id() -> str:
    """128 random bits as 32 hex characters: the charset the client pastes into URLs."""
    return secrets.token_hex(16)


def short_id(session_id: str) -> str:
    """A prefix safe to log: the full id is the polling session's only credential."""
    return session_id[:6] + "…"


def call_user(what: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The single funnel into user callbacks: errors are logged, never raised.

    Returns ``_FAILED`` when the callback raised, so callers can fail closed.
    """
    try:
        return func(*args, **kwargs)
    except Exception:
        log.exception("error in %s", what)
        return _FAILED


class Session:
    """State of one client: queue, timers, and dispatch into the connection."""

    # Slots: tens of thousands of idle sessions are the normal case.
    __slots__ = ("id", "container", "transport", "info", "settings", "state", "close_reason",
                 "deadline", "_queue", "_queued_size", "_sink", "_flush_scheduled",
                 "_receiving", "_inbox", "_drained", "_heartbeat_count", "_heartbeat_pending",
                 "heartbeat_slot", "messages_in", "messages_out", "keeps_leftovers",
                 "connection", "heap_index", "heap_key", "_running", "confirmed", "address",
                 "__weakref__")

    def __init__(self, container: "SessionContainer",
                 connection_factory: Callable[["Session"], "SocketConnection"],
                 transport: str, info: "ConnectionInfo", settings: Dict[str, Any]) -> None:
        self.id = container.id_factory()
        self.container = container
        self.transport = transport
        self.info = info
        self.settings = settings
        self.state = NEW
        self.close_reason: Optional[str] = None
        self.deadline: Optional[float] = None
        #: This session's slot in the container's expiry heap (-1: none), and
        #: the deadline the heap orders it by (at most ``deadline``: see set_deadline).
        self.heap_index = -1
        self.heap_key = 0.0
        self._queue: List[str] = []
        # Code points queued (ASCII frames: bytes); compared with max_queue_bytes.
        self._queued_size = 0
        self._sink: Optional["Sink"] = None
        self._flush_scheduled = False
        self._receiving = False
        # Messages waiting behind a running coroutine on_message (None: none).
        self._inbox: Optional[Deque[Any]] = None
        self._drained: Optional["asyncio.Future[None]"] = None
        # The coroutine on_message running now, if any (on_close waits for it).
        self._running: Optional["asyncio.Future[Any]"] = None
        self._heartbeat_count = 0
        self._heartbeat_pending: Optional[str] = None
        #: This session's bucket in its container's heartbeat wheel (-1: none).
        self.heartbeat_slot = -1
        self.messages_in = 0
        self.messages_out = 0
        #: Polling transports set this: frames queued when the session closes
        #: between two polls are kept for the next poll instead of dropped.
        self.keeps_leftovers = False
        #: False for a long-poll session until its client came back after the
        #: first answer: until then it holds no max_sessions slot and expires
        #: after the short ``handshake_timeout``.
        self.confirmed = True
        #: The client address (``request.remote_ip``, honouring xheaders).
        self.address = getattr(info, "remote_ip", None)
        self.connection = connection_factory(self)

    # ------------------------------------------------------------------ state
    @property
    def is_closed(self) -> bool:
        """True once closing began: no more traffic either way."""
        return self.state in (CLOSING, CLOSED)

    @property
    def accepts_sends(self) -> bool:
        """Sends are queued until closing begins (while ``on_open`` runs, behind the id)."""
        return self.state not in (CLOSING, CLOSED)

    async def open(self, request: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> bool:
        """Queue the session id, then run ``on_open``; False means refused or closed.

        The id is queued first so that anything ``on_open`` sends rides behind it
        in the first payload (docs/protocol.rst §2.2). ``on_open`` returning False, or
        raising, refuses the client: an authentication check that crashes must
        not let it in. A session closed while a coroutine ``on_open`` runs gets
        its ``on_close`` only after ``on_open`` returned, and none if it refused.
        """
        self._queue.append(proto.frame(self.id))
        self.state = OPENING
        result = call_user("on_open", self.connection.on_open, request, *args, **kwargs)
        if inspect.isawaitable(result):
            try:
                result = await result
            except Exception:
                log.exception("error in on_open")
                result = _FAILED
        refused = result is False or result is _FAILED
        if self.state == OPENING:
            if refused:
                self._queue.clear()
                self.close(REASON_REFUSED)
                return False
            self.state = OPEN
            return True
        # Closed (client gone, shutdown...) while on_open ran.
        if refused:
            self.state = CLOSED
        else:
            self._run_on_close()
        return False

    def close(self, reason: str = REASON_SERVER) -> None:
        """End the session once: stop timers, finish the sink, run ``on_close``.

        ``on_close`` runs after a running ``on_open`` returned and after a running
        coroutine ``on_message`` finished; a coroutine ``on_close`` is awaited in
        the background (the container keeps the task).
        """
        if self.state in (CLOSING, CLOSED):
            return
        previous = self.state
        self.state = CLOSING
        self.close_reason = reason
        self._inbox = None
        self._wake_readers()
        if self.heartbeat_slot >= 0:
            self.container.heartbeat_wheel(self.settings["heartbeat_interval"]).remove(self)
        sink, self._sink = self._sink, None
        if sink is not None:
            if self._queue:
                self._deliver(sink)
            sink.end()
        self.container.remove(self)
        log.info("session %s (%s) closed: %s", short_id(self.id), self.transport, reason)
        if previous == OPEN and reason != REASON_REFUSED:
            self._run_on_close()
        elif previous != OPENING or reason == REASON_REFUSED:
            self.state = CLOSED
        # else: open() runs on_close once on_open has returned.

    def _run_on_close(self) -> None:
        running = self._running
        if running is not None and not running.done():
            self.container.spawn(self._on_close_after(running))
            return
        result = call_user("on_close", self.connection.on_close)
        if result is not None and inspect.isawaitable(result):
            self.container.spawn(self._await_on_close(result))
        else:
            self.state = CLOSED

    async def _on_close_after(self, running: "asyncio.Future[Any]") -> None:
        await asyncio.wait([running])
        result = call_user("on_close", self.connection.on_close)
        if result is not None and inspect.isawaitable(result):
            await self._await_on_close(result)
        else:
            self.state = CLOSED

    async def _await_on_close(self, result: Any) -> None:
        try:
            await result
        except Exception:
            log.exception("error in on_close")
        finally:
            self.state = CLOSED

    @property
    def has_leftovers(self) -> bool:
        return bool(self._queue)

    def take_leftovers(self) -> str:
        """What a closed polling session still had for its client; it is then forgotten."""
        payload = "".join(self._queue)
        self._queue.clear()
        self.container.forget(self)
        return payload

    # --------------------------------------------------------------- outgoing
    def send(self, value: Any) -> None:
        """Encode ``value`` (TornadIO mapping) and queue it for the client."""
        payload = proto.encode(value)
        if payload:
            self.send_payload(payload)

    def send_payload(self, payload: str) -> None:
        """Queue already-encoded frames (counted as one message out)."""
        if not self.accepts_sends:
            return
        self.messages_out += 1
        self.container.messages_out += 1
        self._enqueue(payload)

    def _enqueue(self, payload: str) -> None:
        """Queue frames; flushed once per IOLoop iteration while a sink is attached."""
        self._queue.append(payload)
        self._queued_size += len(payload)
        limit = self.settings["max_queue_bytes"]
        if limit and self._queued_size > limit and self._sink is None:
            log.warning("session %s: %d bytes queued for a client that does not read",
                        short_id(self.id), self._queued_size)
            self._queue.clear()
            self.close(REASON_OVERFLOW)
            return
        if not self._receiving:
            self._flush_when_due()

    def _flush_when_due(self, replies: bool = False) -> None:
        """The one decision of when queued frames are written.

        ``replies`` (what user code queued while :meth:`receive` ran it) are
        written as soon as it returns: their client waits for them, and one
        payload's replies already form one write. Any other send waits for
        the end of the loop turn, so that sends from many places (broadcasts,
        timers, other sessions) reach this client in one write. Nothing here
        depends on the event loop's internals: any asyncio loop behaves alike.
        """
        sink = self._sink
        if sink is None or not self._queue:
            return
        if replies:
            self._deliver(sink)
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            self.container.schedule_flush(self)

    def requeue(self, payload: str) -> None:
        """Put ``payload`` back at the front of the queue, ahead of anything queued since.

        For frames handed to a relayed poll that never reached the client
        (``tornadio.relay``); a closed session drops them.
        """
        if not payload or not self.accepts_sends:
            return
        self._queue.insert(0, payload)
        self._queued_size += len(payload)
        if self._sink is not None and not self._flush_scheduled:
            self._flush_scheduled = True
            self.container.schedule_flush(self)

    def flush(self) -> None:
        """Write what is queued to the sink now (the container's end-of-turn flush)."""
        self._flush_scheduled = False
        sink = self._sink
        if sink is not None and self._queue:
            self._deliver(sink)

    def _deliver(self, sink: "Sink") -> None:
        payload = "".join(self._queue)
        self._queue.clear()
        self._queued_size = 0
        if sink.once:
            self._sink = None
            self.touch_expiry(self.idle_expiry)
        sink.write_payload(payload)

    def attach(self, sink: "Sink") -> None:
        """Give the session somewhere to write; queued frames go out at once.

        A newer sink replaces an older one, which is ended cleanly first (an
        overlapping long-poll gets an empty answer, docs/protocol.rst §2.3).
        """
        previous, self._sink = self._sink, sink
        if previous is not None and previous is not sink:
            previous.write_payload("")
        if self._queue:
            self._deliver(sink)
        elif sink.once:
            self.touch_expiry(self.settings["xhr_polling_timeout"] + self.settings["session_expiry"])

    def detach(self, sink: "Sink") -> None:
        """The sink went away (poll timed out or client dropped the request)."""
        if self._sink is sink:
            self._sink = None
            if sink.once:
                self.touch_expiry(self.idle_expiry)

    @property
    def idle_expiry(self) -> float:
        """Seconds a polling session may go without a poll before it expires."""
        expiry: float = self.settings["session_expiry"]
        return expiry if self.confirmed else min(expiry, self.settings["handshake_timeout"])

    def confirm(self) -> None:
        """The client came back after its first answer: the handshake is complete."""
        if not self.confirmed:
            self.confirmed = True
            self.container.confirmed(self)

    @property
    def has_sink(self) -> bool:
        return self._sink is not None

    @property
    def queued_bytes(self) -> int:
        """Outgoing data waiting for the client, in code points (bytes for ASCII)."""
        return self._queued_size

    def touch_expiry(self, seconds: float) -> None:
        """Expire the session ``seconds`` from now unless touched again."""
        self.container.set_deadline(self, time.monotonic() + seconds)

    # --------------------------------------------------------------- incoming
    def receive(self, payload: str) -> "Optional[asyncio.Future[None]]":
        """Decode a client payload and dispatch it in order.

        Raises :class:`proto.DecodeError` (and dispatches nothing) when it is
        malformed; the transport answers 400 or closes with that reason.
        Returns None when every message was handled, else a future that
        resolves once a slow coroutine ``on_message`` has caught up: transports
        wait for it before reading more, so a fast client cannot pile up work.
        """
        started = time.monotonic()
        frames = proto.decode(payload, self.settings["max_message_length"],
                              self.settings["max_frames_per_payload"] or None)
        if self.state != OPEN:
            return None
        messages: List[Any] = []
        for kind, data in frames:
            if kind is proto.HEARTBEAT:
                self._heartbeat_echo(data)
            else:
                messages.append(data)
        self.messages_in += len(messages)
        self.container.messages_in += len(messages)
        if self._drained is not None:  # earlier messages are still being dispatched
            assert self._inbox is not None  # _park() sets it before _drained
            self._inbox.extend(messages)
            # One payload is bounded by max_frames_per_payload; this bounds what
            # piles up behind it (transports stop reading, but POSTs can overlap).
            if len(self._inbox) > MAX_INBOX:
                log.warning("session %s: %d messages wait for on_message; closing",
                            short_id(self.id), len(self._inbox))
                self.close(REASON_INBOX_OVERFLOW)
                return None
        else:
            self._receiving = True
            try:
                self._run(iter(messages), started)  # decoding counts toward the slice
            finally:
                self._receiving = False
            self._flush_when_due(replies=True)
        if self._drained is None:
            return None
        return asyncio.shield(self._drained)

    def _run(self, messages: Iterator[Any], started: Optional[float] = None) -> None:
        """Hand ``messages`` (an iterator) to on_message until one is a coroutine,
        or until this turn (begun at ``started``) has used its :data:`DISPATCH_SLICE`."""
        on_message = self.connection.on_message
        if started is None:
            started = time.monotonic()
        for count, message in enumerate(messages, 1):
            if self.state != OPEN:
                return
            result = call_user("on_message", on_message, message)
            if result is not None and inspect.isawaitable(result):
                self._park(messages)  # the rest wait for this one
                # Referenced until done: by the session, and by the container's task set.
                self._running = running = self.container.spawn(result)
                running.add_done_callback(self._after_async_message)
                return
            if not count % _SLICE_CHECK and time.monotonic() - started > DISPATCH_SLICE:
                # A large batch: let the loop serve everyone else, then go on.
                self._park(messages)
                asyncio.get_running_loop().call_soon(self._resume)
                return
        self._inbox = None
        self._wake_readers()

    def _park(self, messages: Iterator[Any]) -> None:
        """The rest of ``messages`` waits in the inbox; readers wait for it to drain."""
        if self._inbox is None:
            self._inbox = deque(messages)
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def _wake_readers(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _after_async_message(self, future: "asyncio.Future[Any]") -> None:
        self._running = None
        if not future.cancelled() and future.exception() is not None:
            log.error("error in on_message", exc_info=future.exception())
        self._resume()

    def _resume(self) -> None:
        """Go on with the messages waiting in the inbox."""
        self._run(_drain(self._inbox))

    # -------------------------------------------------------------- heartbeats
    def start_heartbeats(self) -> None:
        """Persistent transports only: polling liveness is the poll cadence.

        One heartbeat every ``heartbeat_interval`` from now on, driven by the
        container's shared :class:`HeartbeatWheel` (no timer of its own).
        """
        interval = self.settings["heartbeat_interval"]
        if interval and self.state == OPEN and self.heartbeat_slot < 0:
            self.container.heartbeat_wheel(interval).add(self)

    def heartbeat_due(self) -> None:
        """Called by the wheel once per interval: send the next heartbeat, or
        close when the previous one was not echoed."""
        if self.state != OPEN:
            return
        if self._heartbeat_pending is not None:
            self.close(REASON_HEARTBEAT)
            return
        self._heartbeat_count += 1
        self._heartbeat_pending = str(self._heartbeat_count)
        self._enqueue(proto.heartbeat(self._heartbeat_count))

    def _heartbeat_echo(self, number: str) -> None:
        if number == self._heartbeat_pending:
            self._heartbeat_pending = None
        else:
            log.debug("session %s: stray heartbeat echo %r", short_id(self.id), number[:12])


class HeartbeatWheel:
    """One timer for the heartbeats of every session of a container.

    A timer per session per interval costs each idle session a timer handle
    (about half a KiB) and the loop a heap operation per beat. Here the
    interval is cut into ``SLOTS`` buckets of sessions; one timer walks the
    buckets in turn, and a session stays in its bucket for its whole life, so
    it beats once per interval (its first beat at most one bucket's width
    early). Removal is immediate (a closed session is not kept). A walk
    beats at most ``BATCH`` sessions per loop iteration, so a bucket that
    filled up in a burst of connections never stalls the loop; and after a
    stall longer than an interval each bucket is walked once, not twice
    (twice would close every session whose echo could not come back between).
    """

    #: Buckets per interval (bounded below by MIN_WIDTH seconds each).
    SLOTS = 600
    MIN_WIDTH = 0.005
    #: Heartbeats sent per loop iteration at most.
    BATCH = 64

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.count = max(1, min(self.SLOTS, int(interval / self.MIN_WIDTH)))
        self.width = interval / self.count
        self.buckets: List[Optional[Dict["Session", None]]] = [None] * self.count
        self.members = 0
        #: Absolute number of the next bucket to walk (its end is when it is due).
        self.cursor = 0
        #: Sessions of the bucket being walked still to beat.
        self._due: List["Session"] = []
        self._timer: Optional[asyncio.Handle] = None

    def __len__(self) -> int:
        return self.members

    def add(self, session: "Session") -> None:
        """First beat one interval from now, then one per interval."""
        loop = asyncio.get_running_loop()
        current = int(loop.time() / self.width)
        if not self.members:
            self.cursor = current
        # The bucket just walked (or passed over, when the cursor skipped empty
        # ones ahead): its next turn comes one interval later.
        slot = (min(self.cursor, current) - 1) % self.count
        bucket = self.buckets[slot]
        if bucket is None:
            bucket = self.buckets[slot] = {}
        bucket[session] = None
        session.heartbeat_slot = slot
        self.members += 1
        if self._timer is None:
            self._schedule(loop)

    def remove(self, session: "Session") -> None:
        slot = session.heartbeat_slot
        if slot < 0:
            return
        session.heartbeat_slot = -1
        bucket = self.buckets[slot]
        if bucket is not None and bucket.pop(session, 0) is None:
            self.members -= 1
            if not bucket:
                self.buckets[slot] = None
        if not self.members:
            self.stop()

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        # Skip empty buckets: an idle router wakes only when a beat is due.
        buckets, count, cursor = self.buckets, self.count, self.cursor
        for ahead in range(count):
            if buckets[(cursor + ahead) % count]:
                break
        self.cursor = cursor + ahead
        self._timer = loop.call_at((self.cursor + 1) * self.width, self._walk)

    def _walk(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        count, width = self.count, self.width
        # After a stall longer than an interval, walk each bucket once.
        self.cursor = max(self.cursor, int(loop.time() / width) - count)
        budget = self.BATCH
        due = self._due
        while budget and self.members:
            if not due:
                if (self.cursor + 1) * width > loop.time():
                    break  # no bucket is due yet
                bucket = self.buckets[self.cursor % count]
                self.cursor += 1
                if bucket:
                    due.extend(bucket)
                continue
            session = due.pop()
            if session.heartbeat_slot >= 0:  # not closed meanwhile
                call_user("heartbeat", session.heartbeat_due)
                budget -= 1
        if not self.members:
            due.clear()
        elif due or (self.cursor + 1) * width <= loop.time():
            self._timer = loop.call_soon(self._walk)  # the rest at the next iteration
        else:
            self._schedule(loop)

    def stop(self) -> None:
        self._due.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _drain(inbox: Optional[Deque[Any]]) -> Iterator[Any]:
    """Take messages from the front of ``inbox`` (None: nothing) while it has some."""
    while inbox:
        yield inbox.popleft()


class SessionContainer:
    """All live sessions of one router, with deadline-ordered expiry.

    Deadlines sit in an indexed binary heap holding each session at most once
    (a session knows its slot): touching a deadline moves the session in place,
    so the heap holds O(live sessions) entries whatever the request rate, and a
    session leaves it the moment it is removed. A check pops only what is due:
    O(expired · log n).
    """

    def __init__(self, check_interval: Optional[float] = None,
                 router: Optional["Router"] = None) -> None:
        #: The :class:`tornadio.router.Router` that owns this container (None in unit tests).
        self.router = router
        #: Makes each new session's id (a session relay puts its process tag in it).
        self.id_factory: Callable[[], str] = generate_session_id
        self.sessions: Dict[str, "Session"] = {}
        #: Closed polling sessions whose last frames wait for the next poll.
        self.closing: Dict[str, "Session"] = {}
        self._heap: List["Session"] = []
        self._timer: Optional[PeriodicCallback] = None
        self._check_interval = check_interval
        self.opened_total = 0
        self.closed_total = 0
        self.messages_in = 0
        self.messages_out = 0
        #: Called with each session as it leaves the container (groups, stats...).
        self.on_remove: List[Callable[["Session"], Any]] = []
        self._to_flush: List["Session"] = []
        #: Long-poll sessions whose client has not come back after the first answer.
        self.unconfirmed = 0
        #: Live sessions per client address (for ``max_sessions_per_address``).
        self.per_address: Dict[Optional[str], int] = {}
        #: Background tasks (coroutine on_message/on_close), referenced until done.
        self.tasks: "set[asyncio.Future[Any]]" = set()
        #: The heartbeat wheels, by interval (one per router in practice).
        self._wheels: Dict[float, HeartbeatWheel] = {}

    def heartbeat_wheel(self, interval: float) -> HeartbeatWheel:
        """The wheel that beats every ``interval`` seconds for this container's sessions."""
        wheel = self._wheels.get(interval)
        if wheel is None:
            wheel = self._wheels[interval] = HeartbeatWheel(interval)
        return wheel

    def spawn(self, awaitable: Awaitable[Any]) -> "asyncio.Future[Any]":
        """Run ``awaitable`` in the background, keeping a reference until it ends."""
        task = asyncio.ensure_future(awaitable)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def wait_tasks(self, timeout: float) -> int:
        """Wait at most ``timeout`` s for background tasks; cancel the rest, return their count."""
        pending: "set[asyncio.Future[Any]]" = set()
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("%d on_message/on_close coroutines still running after %.1f s; "
                        "cancelled", len(pending), timeout)
        return len(pending)

    def schedule_flush(self, session: "Session") -> None:
        """Flush ``session`` at the next loop turn, with every other session due then."""
        self._to_flush.append(session)
        if len(self._to_flush) == 1:
            asyncio.get_running_loop().call_soon(self._flush_due)

    def _flush_due(self) -> None:
        due, self._to_flush = self._to_flush, []
        for session in due:
            call_user("flush", session.flush)

    def __len__(self) -> int:
        return len(self.sessions)

    def __iter__(self) -> Iterator["Session"]:
        return iter(list(self.sessions.values()))

    @property
    def heap_size(self) -> int:
        """Entries in the expiry heap: at most one per live or parked session."""
        return len(self._heap)

    def get(self, session_id: str) -> Optional["Session"]:
        """A live session, or a closed one still holding frames for its client."""
        return self.sessions.get(session_id) or self.closing.get(session_id)

    @property
    def confirmed_count(self) -> int:
        """Live sessions whose handshake is complete: what ``max_sessions`` bounds."""
        return len(self.sessions) - self.unconfirmed

    def confirmed(self, session: "Session") -> None:
        """``session`` completed its handshake (see :meth:`Session.confirm`)."""
        if session.id in self.sessions:
            self.unconfirmed -= 1

    def add(self, session: "Session") -> None:
        self.sessions[session.id] = session
        self.opened_total += 1
        if not session.confirmed:
            self.unconfirmed += 1
        self.per_address[session.address] = self.per_address.get(session.address, 0) + 1
        if self._timer is None and self._check_interval:
            # The count expire() returns is ignored by PeriodicCallback (its stub wants None).
            self._timer = PeriodicCallback(self.expire,  # type: ignore[arg-type]
                                           self._check_interval * 1000)
            self._timer.start()

    def remove(self, session: "Session") -> None:
        if self.sessions.pop(session.id, None) is not None:
            self.closed_total += 1
            if not session.confirmed:
                self.unconfirmed -= 1
            left = self.per_address.get(session.address, 1) - 1
            if left > 0:
                self.per_address[session.address] = left
            else:
                self.per_address.pop(session.address, None)
            for listener in self.on_remove:
                call_user("session removal listener", listener, session)
        self.clear_deadline(session)
        if session.keeps_leftovers and session.has_leftovers:
            # Parked until the client's next poll collects them, or expiry.
            self.closing[session.id] = session
            self.set_deadline(session, time.monotonic() + session.settings["session_expiry"])
        self._stop_timer_when_idle()

    def forget(self, session: "Session") -> None:
        """Drop a closed session whose leftovers were collected."""
        self.closing.pop(session.id, None)
        self.clear_deadline(session)
        self._stop_timer_when_idle()

    def _stop_timer_when_idle(self) -> None:
        if not self.sessions and not self.closing and self._timer is not None:
            self._timer.stop()
            self._timer = None

    # -- the indexed heap ----------------------------------------------------
    def set_deadline(self, session: "Session", deadline: float) -> None:
        """Give ``session`` a new deadline.

        An earlier deadline moves its one heap entry up at once; a later one
        (every poll pushes it out) only updates ``session.deadline``: the
        entry keeps its earlier key, and when it comes to the top before its
        real deadline, :meth:`expire` moves it down then. O(1) per poll.
        """
        session.deadline = deadline
        index = session.heap_index
        if index < 0:
            session.heap_key = deadline
            session.heap_index = len(self._heap)
            self._heap.append(session)
            self._sift_up(session.heap_index)
        elif deadline < session.heap_key:
            session.heap_key = deadline
            self._sift_up(index)

    def clear_deadline(self, session: "Session") -> None:
        """Take ``session`` out of the heap (no deadline)."""
        session.deadline = None
        index = session.heap_index
        if index < 0:
            return
        heap = self._heap
        last = heap.pop()
        session.heap_index = -1
        if last is not session:
            heap[index] = last
            last.heap_index = index
            self._sift_up(index)
            self._sift_down(last.heap_index)

    def _sift_up(self, index: int) -> None:
        heap = self._heap
        item = heap[index]
        key = item.heap_key
        while index > 0:
            parent_index = (index - 1) >> 1
            parent = heap[parent_index]
            if parent.heap_key <= key:
                break
            heap[index] = parent
            parent.heap_index = index
            index = parent_index
        heap[index] = item
        item.heap_index = index

    def _sift_down(self, index: int) -> None:
        heap = self._heap
        size = len(heap)
        item = heap[index]
        key = item.heap_key
        while True:
            child_index = 2 * index + 1
            if child_index >= size:
                break
            right = child_index + 1
            if right < size and heap[right].heap_key < heap[child_index].heap_key:
                child_index = right
            child = heap[child_index]
            if key <= child.heap_key:
                break
            heap[index] = child
            child.heap_index = index
            index = child_index
        heap[index] = item
        item.heap_index = index

    def expire(self, now: Optional[float] = None) -> int:
        """Close every session whose deadline has passed; return how many."""
        now = time.monotonic() if now is None else now
        heap = self._heap
        expired = 0
        while heap and heap[0].heap_key <= now:
            session = heap[0]
            if session.deadline is not None and session.deadline > now:
                session.heap_key = session.deadline  # pushed out since: its real place
                self._sift_down(0)
                continue
            self.clear_deadline(session)
            if session.has_sink:
                continue  # a held poll is its liveness; detach() sets a new deadline
            if session.state == CLOSED:
                self.forget(session)
                continue
            expired += 1
            session.close(REASON_EXPIRED)
        return expired

    def close_all(self, reason: str = REASON_SHUTDOWN) -> None:
        """Close every session (``on_close`` runs).

        Leftovers of polling sessions stay parked, so a poll arriving during a
        graceful shutdown still collects its client's last messages.
        """
        for session in self:
            session.close(reason)

    def stop(self) -> None:
        """Stop the timers and forget parked sessions: the router is starting afresh."""
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        for wheel in self._wheels.values():
            wheel.stop()
        for session in list(self.closing.values()):
            self.forget(session)
