"""Sessions: one per connected client, whatever the transport.

A session owns the outgoing queue, the heartbeat timer and the order in which
incoming messages reach user code. It knows nothing of HTTP: a transport
attaches a *sink* — an object with ``write_payload(str)``, ``end()`` and
``once`` (True for a long-poll GET, which takes one payload and is detached) —
and the session writes whole payloads to it.
"""
import asyncio
import heapq
import inspect
import itertools
import logging
import secrets
import time
from collections import deque

from tornado.ioloop import IOLoop, PeriodicCallback

from tornadio import proto

log = logging.getLogger("tornadio.session")

NEW, OPEN, CLOSED = "new", "open", "closed"

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


def generate_session_id():
    """128 random bits as 32 hex characters: the charset the client pastes into URLs."""
    return secrets.token_hex(16)


def short_id(session_id):
    """A prefix safe to log: the full id is the polling session's only credential."""
    return session_id[:6] + "…"


def call_user(what, func, *args, **kwargs):
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
                 "_heartbeat_timer", "messages_in", "messages_out", "keeps_leftovers",
                 "connection", "__weakref__")

    def __init__(self, container, connection_class, transport, info, settings):
        self.id = generate_session_id()
        self.container = container
        self.transport = transport
        self.info = info
        self.settings = settings
        self.state = NEW
        self.close_reason = None
        self.deadline = None
        self._queue = []
        # Code points queued (ASCII frames: bytes); compared with max_queue_bytes.
        self._queued_size = 0
        self._sink = None
        self._flush_scheduled = False
        self._receiving = False
        # Messages waiting behind a running coroutine on_message (None: none).
        self._inbox = None
        self._drained = None
        self._heartbeat_count = 0
        self._heartbeat_pending = None
        self._heartbeat_timer = None
        self.messages_in = 0
        self.messages_out = 0
        #: Polling transports set this: frames queued when the session closes
        #: between two polls are kept for the next poll instead of dropped.
        self.keeps_leftovers = False
        self.connection = connection_class(self)

    # ------------------------------------------------------------------ state
    @property
    def is_closed(self):
        return self.state == CLOSED

    async def open(self, request, args, kwargs):
        """Queue the session id, then run ``on_open``; False means refused.

        The id is queued first so that anything ``on_open`` sends rides behind it
        in the first payload (PROTOCOL.md §2.2). ``on_open`` returning False, or
        raising, refuses the client: an authentication check that crashes must
        not let it in.
        """
        self._queue.append(proto.frame(self.id))
        self.state = OPEN
        result = call_user("on_open", self.connection.on_open, request, *args, **kwargs)
        if inspect.isawaitable(result):
            try:
                result = await result
            except Exception:
                log.exception("error in on_open")
                result = _FAILED
        if result is False or result is _FAILED:
            self._queue.clear()
            self.close(REASON_REFUSED)
            return False
        return self.state == OPEN

    def close(self, reason=REASON_SERVER):
        """End the session once: stop timers, finish the sink, run ``on_close``."""
        if self.state == CLOSED:
            return
        was_open = self.state == OPEN
        self.state = CLOSED
        self.close_reason = reason
        self._inbox = None
        self._wake_readers()
        if self._heartbeat_timer is not None:
            IOLoop.current().remove_timeout(self._heartbeat_timer)
            self._heartbeat_timer = None
        sink, self._sink = self._sink, None
        if sink is not None:
            if self._queue:
                self._deliver(sink)
            sink.end()
        self.container.remove(self)
        log.info("session %s (%s) closed: %s", short_id(self.id), self.transport, reason)
        if was_open and reason != REASON_REFUSED:
            call_user("on_close", self.connection.on_close)

    @property
    def has_leftovers(self):
        return bool(self._queue)

    def take_leftovers(self):
        """What a closed polling session still had for its client; it is then forgotten."""
        payload = "".join(self._queue)
        self._queue.clear()
        self.container.forget(self)
        return payload

    # --------------------------------------------------------------- outgoing
    def send(self, value):
        """Encode ``value`` (TornadIO mapping) and queue it for the client."""
        payload = proto.encode(value)
        if payload:
            self.send_payload(payload)

    def send_payload(self, payload):
        """Queue already-encoded frames (counted as one message out)."""
        if self.state == CLOSED:
            return
        self.messages_out += 1
        self.container.messages_out += 1
        self._enqueue(payload)

    def _enqueue(self, payload):
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
        # While receive() runs user code, replies wait for its end (see there);
        # other sends are flushed together, once per loop turn.
        if self._sink is not None and not self._flush_scheduled and not self._receiving:
            self._flush_scheduled = True
            self.container.schedule_flush(self)

    def _flush(self):
        self._flush_scheduled = False
        sink = self._sink
        if sink is not None and self._queue:
            self._deliver(sink)

    def _deliver(self, sink):
        payload = "".join(self._queue)
        self._queue.clear()
        self._queued_size = 0
        if sink.once:
            self._sink = None
            self.touch_expiry(self.settings["session_expiry"])
        sink.write_payload(payload)

    def attach(self, sink):
        """Give the session somewhere to write; queued frames go out at once.

        A newer sink replaces an older one, which is ended cleanly first (an
        overlapping long-poll gets an empty answer, PROTOCOL.md §2.3).
        """
        previous, self._sink = self._sink, sink
        if previous is not None and previous is not sink:
            previous.write_payload("")
        if self._queue:
            self._deliver(sink)
        elif sink.once:
            self.touch_expiry(self.settings["xhr_polling_timeout"] + self.settings["session_expiry"])

    def detach(self, sink):
        """The sink went away (poll timed out or client dropped the request)."""
        if self._sink is sink:
            self._sink = None
            if sink.once:
                self.touch_expiry(self.settings["session_expiry"])

    @property
    def has_sink(self):
        return self._sink is not None

    @property
    def queued_bytes(self):
        """Outgoing data waiting for the client, in code points (bytes for ASCII)."""
        return self._queued_size

    def touch_expiry(self, seconds):
        self.container.set_deadline(self, time.monotonic() + seconds)

    # --------------------------------------------------------------- incoming
    def receive(self, payload):
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
        messages = []
        for kind, data in frames:
            if kind is proto.HEARTBEAT:
                self._heartbeat_echo(data)
            else:
                messages.append(data)
        self.messages_in += len(messages)
        self.container.messages_in += len(messages)
        if self._drained is not None:  # earlier messages are still being dispatched
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
            if self._sink is not None and self._queue:
                if _loop_is_idle():
                    self._deliver(self._sink)  # nothing else to batch with: no extra turn
                elif not self._flush_scheduled:
                    self._flush_scheduled = True
                    self.container.schedule_flush(self)
        if self._drained is None:
            return None
        return asyncio.shield(self._drained)

    def _run(self, messages, started=None):
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
                task = asyncio.ensure_future(result)
                # The loop holds tasks only weakly: without this a task waiting
                # on a future nobody else holds would be collected mid-await.
                self.container.tasks.add(task)
                task.add_done_callback(self.container.tasks.discard)
                task.add_done_callback(self._after_async_message)
                return
            if not count % _SLICE_CHECK and time.monotonic() - started > DISPATCH_SLICE:
                # A large batch: let the loop serve everyone else, then go on.
                self._park(messages)
                IOLoop.current().add_callback(self._resume)
                return
        self._inbox = None
        self._wake_readers()

    def _park(self, messages):
        """The rest of ``messages`` waits in the inbox; readers wait for it to drain."""
        if self._inbox is None:
            self._inbox = deque(messages)
        if self._drained is None:
            self._drained = asyncio.get_running_loop().create_future()

    def _wake_readers(self):
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def _after_async_message(self, future):
        if not future.cancelled() and future.exception() is not None:
            log.error("error in on_message", exc_info=future.exception())
        self._resume()

    def _resume(self):
        """Go on with the messages waiting in the inbox."""
        self._run(_drain(self._inbox))

    # -------------------------------------------------------------- heartbeats
    def start_heartbeats(self):
        """Persistent transports only: polling liveness is the poll cadence."""
        interval = self.settings["heartbeat_interval"]
        if interval and self.state == OPEN:
            self._heartbeat_timer = IOLoop.current().call_later(interval, self._heartbeat_tick)

    def _heartbeat_tick(self):
        self._heartbeat_timer = None
        if self.state != OPEN:
            return
        if self._heartbeat_pending is not None:
            self.close(REASON_HEARTBEAT)
            return
        self._heartbeat_count += 1
        self._heartbeat_pending = str(self._heartbeat_count)
        self._enqueue(proto.heartbeat(self._heartbeat_count))
        self.start_heartbeats()

    def _heartbeat_echo(self, number):
        if number == self._heartbeat_pending:
            self._heartbeat_pending = None
        else:
            log.debug("session %s: stray heartbeat echo %r", short_id(self.id), number[:12])


def _loop_is_idle():
    """True when no other callback waits in this loop turn.

    Then a reply is written at once (lowest latency); under load it waits for
    the turn's end and goes out with everything else due (fewer writes). Reads
    asyncio's private ready queue; an event loop without one counts as busy.
    """
    ready = getattr(asyncio.get_running_loop(), "_ready", None)
    return ready is not None and not ready


def _drain(inbox):
    """Take messages from the front of ``inbox`` (None: nothing) while it has some."""
    while inbox:
        yield inbox.popleft()


class SessionContainer:
    """All live sessions of one router, with deadline-ordered expiry.

    Deadlines sit in a heap; a check pops only what is due, so its cost is
    O(expired · log n) however many sessions are live. Entries made stale by a
    newer deadline are dropped when they surface.
    """

    def __init__(self, check_interval=None):
        self.sessions = {}
        #: Closed polling sessions whose last frames wait for the next poll.
        self.closing = {}
        self._heap = []
        self._counter = itertools.count()
        self._timer = None
        self._check_interval = check_interval
        self.opened_total = 0
        self.closed_total = 0
        self.messages_in = 0
        self.messages_out = 0
        #: Called with each session as it leaves the container (groups, stats...).
        self.on_remove = []
        self._to_flush = []
        #: Running coroutine ``on_message`` tasks, referenced until they end.
        self.tasks = set()

    def schedule_flush(self, session):
        """Flush ``session`` at the next loop turn, with every other session due then."""
        self._to_flush.append(session)
        if len(self._to_flush) == 1:
            IOLoop.current().add_callback(self._flush_due)

    def _flush_due(self):
        due, self._to_flush = self._to_flush, []
        for session in due:
            session._flush()

    def __len__(self):
        return len(self.sessions)

    def __iter__(self):
        return iter(list(self.sessions.values()))

    def get(self, session_id):
        """A live session, or a closed one still holding frames for its client."""
        return self.sessions.get(session_id) or self.closing.get(session_id)

    def add(self, session):
        self.sessions[session.id] = session
        self.opened_total += 1
        if self._timer is None and self._check_interval:
            self._timer = PeriodicCallback(self.expire, self._check_interval * 1000)
            self._timer.start()

    def remove(self, session):
        if self.sessions.pop(session.id, None) is not None:
            self.closed_total += 1
            for listener in self.on_remove:
                call_user("session removal listener", listener, session)
        session.deadline = None
        if session.keeps_leftovers and session.has_leftovers:
            # Parked until the client's next poll collects them, or expiry.
            self.closing[session.id] = session
            self.set_deadline(session, time.monotonic() + session.settings["session_expiry"])
        self._stop_timer_when_idle()

    def forget(self, session):
        """Drop a closed session whose leftovers were collected."""
        self.closing.pop(session.id, None)
        session.deadline = None
        self._stop_timer_when_idle()

    def _stop_timer_when_idle(self):
        if not self.sessions and not self.closing:
            self._heap.clear()
            if self._timer is not None:
                self._timer.stop()
                self._timer = None

    def set_deadline(self, session, deadline):
        session.deadline = deadline
        heapq.heappush(self._heap, (deadline, next(self._counter), session))

    def expire(self, now=None):
        """Close every session whose deadline has passed; return how many."""
        now = time.monotonic() if now is None else now
        heap = self._heap
        expired = 0
        while heap and heap[0][0] <= now:
            deadline, _, session = heapq.heappop(heap)
            if session.deadline != deadline or session.has_sink:
                continue
            if session.state == CLOSED:
                self.forget(session)
                continue
            expired += 1
            session.close(REASON_EXPIRED)
        return expired

    def close_all(self, reason=REASON_SHUTDOWN):
        """Close every session (``on_close`` runs).

        Leftovers of polling sessions stay parked, so a poll arriving during a
        graceful shutdown still collects its client's last messages.
        """
        for session in self:
            session.close(reason)
