"""A Redis pub/sub broadcast backend: broadcasts reach every TornadIO process.

Needs redis-py >= 5.0.1 (``pip install 'tornadio[redis]'``)::

    from tornadio.redis_broadcast import RedisBroadcastBackend

    backend = RedisBroadcastBackend(url="redis://127.0.0.1:6379/0", channel_prefix="tornadio")
    ChatRouter = tornadio.get_router(ChatConnection, {"broadcast_backend": backend})

How it works. Each process delivers its own broadcasts to its own sessions at
once (``tornadio.broadcast``), then publishes them on ``<prefix>:<channel>``.
Every process pattern-subscribes to ``<prefix>:*`` and delivers what others
published to its local sessions; its own publications come back too and are
skipped by a per-process id. One connection publishes, in call order (batched
into pipelines), and one connection reads, so messages of one sender arrive
everywhere in the order they were sent.

When Redis is unreachable: one warning per outage, reconnection with
exponential backoff (``min_backoff`` .. ``max_backoff`` seconds), local delivery
unaffected, and every broadcast made meanwhile reports ``remote=False``
(nothing is queued for later, nothing is claimed). Recovery is logged once.

When Redis stalls (the process hangs, its TCP connections stay up): a command
left unanswered for ``stall_timeout`` seconds is an outage like any other, on
the publishing side (its pipeline) as on a side that only receives (a PING
sent after ``health_check_interval`` seconds of silence). Whatever redis-py's
own timeouts are, this backend bounds every wait itself. Each broadcast carries
a deadline, ``max_delay`` after it was made, on Redis's clock (read with
``TIME`` at each connection, so the processes' clocks need not agree): a
receiver drops what arrives later, and a publication that Redis has not
confirmed by then resolves ``False`` (the connection that carried it stays open
until then, in case Redis resumes and confirms it). So nothing reaches another
process more than ``max_delay`` late, however long the stall, and ``False``
means the others did not get it.
"""
import asyncio
import json
import logging
import os
import secrets
import time
from collections import deque
from typing import (TYPE_CHECKING, Any, Awaitable, Deque, Dict, Iterable, List, Mapping, Optional,
                    Tuple, Type, TypeVar, Union)
from urllib.parse import urlsplit, urlunsplit

#: Raised by redis-py's socket timeouts (asyncio's when redis-py is missing).
_RedisTimeout: Type[BaseException]
#: Why redis-py cannot be used (None: it can).
_REDIS_MISSING: Optional[ImportError]
try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
    from redis.exceptions import TimeoutError as _RedisTimeoutError
    _RedisTimeout = _RedisTimeoutError
    _REDIS_MISSING = None
except ImportError as exc:  # pragma: no cover - depends on the environment
    _RedisTimeout = asyncio.TimeoutError
    _REDIS_MISSING = exc

from tornadio.broadcast import BroadcastBackend, Receiver
from tornadio.session import call_user

if TYPE_CHECKING:
    from redis.asyncio.client import PubSub

log = logging.getLogger("tornadio.redis")

__all__ = ["RedisBroadcastBackend"]

_GLOB_SPECIAL = "\\*?[]"

#: Message envelope version, first item of every published JSON array:
#: ``[version, process id, deadline on Redis's clock, group, exclude, frames]``.
_FORMAT = 2

#: Timeouts as raised by asyncio.wait_for and by redis-py's socket timeouts.
_TIMEOUTS = (asyncio.TimeoutError, _RedisTimeout)

#: What a publication resolves to: the number of receiving processes, or False.
_Outcome = asyncio.Future[Union[int, bool]]
#: A broadcast waiting for Redis: (full channel, envelope, outcome, local deadline).
_Entry = Tuple[str, str, _Outcome, float]

_T = TypeVar("_T")


class _Stalled(ConnectionError):
    """Redis kept the connection open but did not answer in time."""


def redact_url(url: str) -> str:
    """``url`` without its password, for logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port:
        netloc += ":%d" % parts.port
    if parts.username:
        netloc = parts.username + ":***@" + netloc
    else:
        netloc = ":***@" + netloc
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redis_client(url: str, connect_timeout: float, redis_options: Dict[str, Any]) -> Any:
    """A ``redis.asyncio.Redis`` for ``url`` that waits only as long as its caller says.

    No socket timeout of redis-py's own (every wait is bounded by the caller,
    and a reply in flight must stay readable until its deadline), no hidden
    retries (they would mask outages) and no health checks (they have no
    deadline): the caller reconnects and checks health itself.
    ``redis_options`` (TLS, credentials...) override these.
    """
    options: Dict[str, Any] = {
        "decode_responses": True,
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": None,
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
    }
    options.update(redis_options)
    return aioredis.Redis.from_url(url, **options)


async def redis_clock_offset(client: Any) -> float:
    """Redis's clock minus ``time.monotonic()``, in seconds (read with ``TIME``).

    Deadlines on Redis's clock mean the same to every process, whatever their
    own clocks say.
    """
    before = time.monotonic()
    seconds, microseconds = await client.time()
    after = time.monotonic()
    return float(seconds + microseconds / 1e6 - (before + after) / 2)


#: Longest wait for a backend's task to end once cancelled (seconds).
STOP_TIMEOUT = 5.0
#: How long a cancelled task may unwind (its own bounded clean-up: closing its
#: connections) before it is cancelled again, and how often after that (seconds).
_RECANCEL_AFTER = 1.5
_RECANCEL_EVERY = 0.5


async def cancel_and_wait(tasks: "Iterable[asyncio.Future[Any]]",
                          timeout: float = STOP_TIMEOUT) -> bool:
    """Cancel ``tasks`` and wait, at most ``timeout`` seconds, until they ended.

    One ``cancel()`` is not always enough: on Python 3.9 to 3.11,
    ``asyncio.wait_for`` returns its result, dropping the cancellation, when the
    awaited call completes in the same loop turn as the cancel (redis-py's
    commands finish all the time). A task that lost its cancellation carries on
    with its loop, so a task still running after ``_RECANCEL_AFTER`` seconds
    (time enough for its own clean-up) is cancelled again, every
    ``_RECANCEL_EVERY`` seconds, until it ends or the time is up.

    What the tasks that ended raised is retrieved here (their callers have
    read what they need by now): a stopped task's error is not logged again.

    :return: True if every task ended; False (logged) if some still run.
    :raises asyncio.CancelledError: if the caller itself is cancelled meanwhile.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    interval = _RECANCEL_AFTER
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning("%d task(s) still running %.1f s after being cancelled: %s",
                        len(pending), timeout, ", ".join(sorted(map(repr, pending))))
            return False
        _, pending = await asyncio.wait(pending, timeout=min(interval, remaining))
        interval = _RECANCEL_EVERY
    for task in tasks:
        if not task.cancelled():
            task.exception()
    return True


async def stop_task(task: "Optional[asyncio.Task[Any]]", same_loop: bool) -> None:
    """Cancel a backend's connection task and, on its own loop, wait (bounded,
    see :func:`cancel_and_wait`) until it ended.

    A task of a loop that is closed (or another loop) is only cancelled: it
    cannot be awaited from here.
    """
    if task is None or task.done():
        return
    if not same_loop:
        try:
            task.cancel()
        except RuntimeError:  # its loop is closed: the task is gone with it
            pass
        return
    await cancel_and_wait([task])


async def close_quietly(*connections: Any, timeout: float = 1.0) -> None:
    """``aclose()`` each redis-py object given (None: skipped), each bounded by
    ``timeout`` seconds; a connection that is gone already is no error."""
    cancelled: Optional[BaseException] = None
    for connection in connections:
        if connection is None:
            continue
        try:
            await asyncio.wait_for(connection.aclose(), timeout)
        except asyncio.CancelledError as exc:
            # Close the others, then let it through: a task that swallowed its
            # cancellation would keep reconnecting and hang asyncio.run's exit.
            cancelled = exc
        except Exception:
            pass
    if cancelled is not None:
        raise cancelled


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


def _resolve(futures: Iterable[_Outcome], result: Union[int, bool]) -> int:
    """Set ``result`` on those not done; how many were set. A future of a loop
    that is closed by now still gets its result (only its callbacks are lost)."""
    count = 0
    for future in futures:
        if not future.done():
            try:
                future.set_result(result)
            except RuntimeError:  # "Event loop is closed": the result is set anyway
                pass
            count += 1
    return count


class RedisBroadcastBackend(BroadcastBackend):
    """Cross-process broadcasts over Redis pub/sub (see the module docstring).

    :param url: a redis-py URL (``redis://[:password@]host:port/db``,
        ``rediss://`` for TLS, ``unix://``)
    :param channel_prefix: the Redis channels used are
        ``<prefix>:<router channel>``
    :param min_backoff: first reconnection delay in seconds, doubled after
        each failed attempt ...
    :param max_backoff: ... up to this many seconds
    :param connect_timeout: seconds for each connection attempt, from TCP
        connect to the confirmed subscription
    :param stall_timeout: seconds Redis may leave a command unanswered (a
        publication pipeline, the subscription's PING) before the connection
        counts as lost
    :param health_check_interval: seconds of silence on the subscription
        after which a PING is sent, so that a stall is noticed by a process
        that only receives (0: off)
    :param max_delay: seconds after a broadcast was made beyond which no
        process delivers it; its publication, unless Redis confirmed it by
        then, resolves ``False``
    :param max_outbox: most broadcasts waiting for Redis; beyond, a broadcast
        resolves ``remote=False`` at once
    :param max_batch: most messages sent in one pipeline round trip
    :param redis_options: more keyword arguments for ``redis.asyncio.Redis``
    :raises ImportError: redis-py is not installed
    :raises ValueError: an empty ``channel_prefix``, or backoffs not
        ``0 < min_backoff <= max_backoff``

    Raises ValueError for a setting out of range, ImportError without redis-py.

    One backend may serve several routers (one channel each). Create it
    anywhere, even before ``fork_processes()``: the process id and the Redis
    connections are made lazily, in the process that uses them.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", channel_prefix: str = "tornadio",
                 min_backoff: float = 0.1, max_backoff: float = 5.0,
                 connect_timeout: float = 2.0, stall_timeout: float = 3.0,
                 health_check_interval: float = 1.0, max_delay: float = 5.0,
                 max_outbox: int = 10000, max_batch: int = 512,
                 redis_options: Optional[Mapping[str, Any]] = None) -> None:
        if _REDIS_MISSING is not None:
            raise ImportError("RedisBroadcastBackend needs redis-py: pip install 'tornadio[redis]'")
        if not isinstance(channel_prefix, str) or not channel_prefix:
            raise ValueError("channel_prefix must be a non-empty string")
        if not 0 < min_backoff <= max_backoff:
            raise ValueError("need 0 < min_backoff <= max_backoff")
        for name, value in (("connect_timeout", connect_timeout),
                            ("stall_timeout", stall_timeout), ("max_delay", max_delay)):
            if not value > 0:
                raise ValueError("%s must be > 0 seconds, not %r" % (name, value))
        if not health_check_interval >= 0:
            raise ValueError("health_check_interval must be >= 0 (0: off), not %r"
                             % (health_check_interval,))
        for name, value in (("max_outbox", max_outbox), ("max_batch", max_batch)):
            if not isinstance(value, int) or value < 1:
                raise ValueError("%s must be an int >= 1, not %r" % (name, value))
        self.url = url
        self.channel_prefix = channel_prefix
        self.min_backoff = float(min_backoff)
        self.max_backoff = float(max_backoff)
        self.connect_timeout = float(connect_timeout)
        self.stall_timeout = float(stall_timeout)
        self.health_check_interval = float(health_check_interval)
        self.max_delay = float(max_delay)
        self.max_outbox = max_outbox
        self.max_batch = max_batch
        self.redis_options: Dict[str, Any] = dict(redis_options or {})
        self.process_id: Optional[str] = None
        self._pid: Optional[int] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._generation = 0          # bumped when a new process or loop takes over
        self._receivers: Dict[str, Receiver] = {}  # full channel name -> receiver
        # Broadcasts not answered yet (see _Entry):
        self._outbox: Deque[_Entry] = deque()      # waiting for the publisher
        self._in_flight: Optional[List[_Entry]] = None  # the pipeline Redis has not answered yet
        # Made with the loop (_ensure_running), so never None once connected:
        self._wake: Optional[asyncio.Event] = None
        self._connected_event: Optional[asyncio.Event] = None
        self._task: Optional["asyncio.Task[None]"] = None
        self._closed = False
        self._clock_offset = 0.0      # Redis's clock minus time.monotonic()
        self._warned_full = self._warned_stale = self._warned_malformed = False
        self._warned_refused = False
        # State and counters (see stats()).
        self.connected = False
        self.outages = 0
        self._outage_since: Optional[float] = None
        self._unpublished_in_outage = 0
        self.last_error: Optional[str] = None
        self.published = 0
        self.not_published = 0
        self.outbox_full = 0
        self.refused = 0
        self.received = 0
        self.stale_dropped = 0
        self.own_skipped = 0
        self.malformed = 0

    # -- BroadcastBackend ---------------------------------------------------------
    def attach(self, channel: str, receiver: Receiver) -> None:
        """Deliver what other processes publish on ``channel`` to ``receiver(group, frames, exclude)``.

        Starts the connection task when called inside the IOLoop.
        """
        self._receivers[self._full(channel)] = receiver
        self._ensure_running()

    def detach(self, channel: str, receiver: Receiver) -> None:
        """Stop delivering ``channel`` to ``receiver`` (a no-op if it was not attached)."""
        full = self._full(channel)
        if self._receivers.get(full) == receiver:
            del self._receivers[full]

    def publish(self, channel: str, group: Optional[str], frames: str,
                exclude: Iterable[str]) -> _Outcome:
        """Queue encoded ``frames`` for the processes listening on ``channel``.

        :param group: the group name, or None for every session
        :param exclude: session ids that must not receive it
        :returns: an ``asyncio.Future`` resolving to the number of receiving
            processes, or to False at once while Redis is unreachable; it
            never raises. Must be called inside the IOLoop.
        """
        self._ensure_running()
        future: _Outcome = asyncio.get_running_loop().create_future()
        if not self.connected:
            self._not_published(1)
            future.set_result(False)
            return future
        if len(self._outbox) >= self.max_outbox:
            self._reject_full()
            future.set_result(False)
            return future
        now = time.monotonic()
        deadline = now + self.max_delay
        data = json.dumps([_FORMAT, self.process_id, round(deadline + self._clock_offset, 3),
                           group, list(exclude), frames],
                          ensure_ascii=False, separators=(",", ":"))
        self._outbox.append((self._full(channel), data, future, deadline))
        assert self._wake is not None  # connected, so made with the loop
        self._wake.set()
        return future

    async def ready(self, timeout: float = 5.0) -> bool:
        """Wait at most ``timeout`` seconds for the subscription to be confirmed.

        :returns: True when connected and listening, False after the timeout
        """
        self._ensure_running()
        if self.connected:
            return True
        if self._closed or self._connected_event is None:
            return False
        try:
            # Not shielded: a timed-out wait must leave no waiter behind.
            await asyncio.wait_for(self._connected_event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return self.connected

    def stats(self) -> Dict[str, Any]:
        """Connection state and counters (the URL without its password), JSON-able."""
        return {
            "url": redact_url(self.url),
            "process_id": self.process_id,
            "connected": self.connected,
            "outages": self.outages,
            "outage_seconds": None if self._outage_since is None
            else round(time.monotonic() - self._outage_since, 3),
            "last_error": self.last_error,
            "published": self.published,
            "not_published": self.not_published,
            "outbox_full": self.outbox_full,
            "refused": self.refused,
            "received": self.received,
            "stale_dropped": self.stale_dropped,
            "malformed": self.malformed,
            "pending": len(self._outbox),
            "in_flight": len(self._in_flight or ()),
        }

    async def close(self, drain_timeout: float = 2.0) -> None:
        """Publish what is pending or in flight (for at most ``drain_timeout`` s),
        then stop reconnecting and drop the connections; what Redis has not
        confirmed by then resolves False.

        A shutdown's last words (``on_close`` broadcasts such as "X left") are
        sent, not dropped.
        """
        same_loop = self._loop is asyncio.get_running_loop()
        pending = [future for _, _, future, _ in self._unanswered() if not future.done()]
        if pending and self.connected and same_loop:
            await asyncio.wait(pending, timeout=drain_timeout)
        self._closed = True
        task, self._task = self._task, None
        await stop_task(task, same_loop)
        self._resolve_all_now()
        self.connected = False

    # -- internals ----------------------------------------------------------------
    def _full(self, channel: str) -> str:
        return "%s:%s" % (self.channel_prefix, channel)

    def _ensure_running(self) -> None:
        """Start the connection task in this process and loop (after a fork, anew)."""
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not inside the IOLoop yet: started by the first call that is
        pid = os.getpid()
        if self._pid != pid or self._loop is not loop:
            # A new process (fork) or a new loop: nothing inherited is usable, and
            # what the old task left unanswered will never be answered.
            old_task = self._task
            self._resolve_all_now()
            if old_task is not None and not old_task.done():
                try:
                    old_task.cancel()  # runs, if ever, when its own loop runs again
                except RuntimeError:
                    pass
            self._generation += 1
            self._pid = pid
            self._loop = loop
            self.process_id = "%d-%s" % (pid, secrets.token_hex(6))
            self._task = None
            self._outbox = deque()
            self._in_flight = None
            self.connected = False
            self._wake = asyncio.Event()
            self._connected_event = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run(self._generation))

    def _current(self, generation: int) -> bool:
        return generation == self._generation and not self._closed

    def _unanswered(self) -> List[_Entry]:
        """Every (channel, data, future, deadline) not answered by Redis yet."""
        return list(self._outbox) + list(self._in_flight or ())

    def _not_published(self, count: int) -> None:
        self.not_published += count
        if self._outage_since is not None:
            self._unpublished_in_outage += count

    def _reject_full(self) -> None:
        self.outbox_full += 1
        self._not_published(1)
        if not self._warned_full:
            self._warned_full = True
            log.warning("redis broadcast: %d broadcasts wait for %s (max_outbox); until "
                        "they drain, new ones reach this process only",
                        len(self._outbox), redact_url(self.url))

    def _fail_outbox(self) -> None:
        """The outbox will not be sent: its broadcasts never left this process."""
        outbox, self._outbox = self._outbox, deque()
        self._not_published(_resolve([future for _, _, future, _ in outbox], False))

    def _resolve_all_now(self) -> None:
        """Closing, a lost connection, a new process/loop: what Redis has not
        answered resolves False now."""
        futures = [future for _, _, future, _ in self._unanswered()]
        self._outbox = deque()
        self._in_flight = None
        self._not_published(_resolve(futures, False))

    def _down(self, error: BaseException, generation: int) -> None:
        """The connection failed (once per connection): new broadcasts resolve
        False at once, the outbox fails, the outage is logged. A pipeline in
        flight may still finish (see _published)."""
        if generation != self._generation or not self.connected:
            return
        self.connected = False
        assert self._connected_event is not None and self._wake is not None  # it was connected
        self._connected_event.clear()
        self._fail_outbox()
        self._wake.set()  # an idle writer ends
        self._lost(error, connecting=False)

    @staticmethod
    async def _answer(awaitable: Awaitable[_T], limit: float, problem: str) -> _T:
        """``await awaitable`` for at most ``limit`` s, else _Stalled(problem % limit)."""
        try:
            return await asyncio.wait_for(awaitable, limit)
        except _TIMEOUTS:
            raise _Stalled(problem % limit) from None

    async def _run(self, generation: int) -> None:
        """Connect, serve until the connection breaks, back off, again; forever."""
        delay = self.min_backoff
        while self._current(generation):
            try:
                client, pubsub, offset = await self._answer(
                    self._connect(), self.connect_timeout,
                    "connecting took more than %g s (no reply from Redis)")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._current(generation):
                    return
                self._lost(exc, connecting=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            if not self._current(generation):
                await self._disconnect(client, pubsub)
                return
            delay = self.min_backoff
            self._clock_offset = offset
            self._up()
            await self._serve(client, pubsub, generation)
            if not self._current(generation):
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    async def _serve(self, client: "aioredis.Redis", pubsub: "PubSub", generation: int) -> None:
        """Read and write until the connection fails (logged and counted by _down)."""
        reader = asyncio.ensure_future(self._read_loop(pubsub))
        writer = asyncio.ensure_future(self._write_loop(client, generation))
        try:
            done, _ = await asyncio.wait({reader, writer},
                                         return_when=asyncio.FIRST_COMPLETED)
            first = next(iter(done))
            error = (None if first.cancelled() else first.exception()) or ConnectionError(
                "the subscription ended" if first is reader else "the publisher ended")
            self._down(error, generation)
            if not writer.done():
                # A pipeline in flight may still be answered (a stalled Redis that
                # resumes in time): the writer waits for it, bounded by its deadlines.
                await asyncio.wait({writer})
        finally:
            cancelled: Optional[BaseException] = None
            try:
                await cancel_and_wait((reader, writer))
            except asyncio.CancelledError as exc:
                cancelled = exc  # finish the clean-up first, then let it through
            if generation == self._generation:  # also when closing
                self.connected = False
                assert self._connected_event is not None  # made with this generation
                self._connected_event.clear()
                self._resolve_all_now()
            await self._disconnect(client, pubsub)
            if cancelled is not None:
                raise cancelled

    async def _connect(self) -> Tuple["aioredis.Redis", "PubSub", float]:
        """New connections, subscribed: (client, pubsub, Redis clock offset)."""
        client = redis_client(self.url, self.connect_timeout, self.redis_options)
        pubsub: Optional["PubSub"] = None
        try:
            await client.ping()
            offset = await redis_clock_offset(client)
            pubsub = client.pubsub()
            await pubsub.psubscribe(_glob_escape(self.channel_prefix) + ":*")
            # Listening only counts once Redis confirmed the subscription.
            while True:
                message = await pubsub.get_message(timeout=self.connect_timeout)
                if message is not None and message.get("type") == "psubscribe":
                    return client, pubsub, offset
        except BaseException:
            await self._disconnect(client, pubsub)
            raise

    async def _disconnect(self, client: "aioredis.Redis", pubsub: Optional["PubSub"]) -> None:
        await close_quietly(pubsub, client)

    def _up(self) -> None:
        self.connected = True
        self.last_error = None
        self._warned_full = self._warned_stale = self._warned_malformed = False
        self._warned_refused = False
        assert self._connected_event is not None  # made with this generation
        self._connected_event.set()
        if self._outage_since is not None:
            log.info("redis broadcast: reconnected to %s after %.1f s; "
                     "%d broadcasts of the outage reached this process only",
                     redact_url(self.url), time.monotonic() - self._outage_since,
                     self._unpublished_in_outage)
            self._outage_since = None
            self._unpublished_in_outage = 0
        else:
            log.info("redis broadcast: connected to %s (process id %s)",
                     redact_url(self.url), self.process_id)

    def _lost(self, error: Optional[BaseException], connecting: bool) -> None:
        if error is None:
            self.last_error = None
        else:
            kind = "stalled" if isinstance(error, _Stalled) else type(error).__name__
            self.last_error = "%s: %s" % (kind, error)
        if self._closed:
            return
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.outages += 1
            what = "cannot connect to" if connecting else "lost connection to"
            log.warning("redis broadcast: %s %s (%s); retrying every %g..%g s, "
                        "broadcasts reach this process only meanwhile",
                        what, redact_url(self.url), self.last_error,
                        self.min_backoff, self.max_backoff)
        else:
            log.debug("redis broadcast: still no connection to %s (%s)",
                      redact_url(self.url), self.last_error)

    async def _read_loop(self, pubsub: "PubSub") -> None:
        """Deliver what others publish; a PING after each silence, answered in time."""
        interval = self.health_check_interval
        heard = time.monotonic()
        ping_sent: Optional[float] = None
        while True:
            now = time.monotonic()
            if ping_sent is not None:
                wait = ping_sent + self.stall_timeout - now
                if wait <= 0:
                    raise _Stalled("no reply to PING on the subscription within %g s"
                                   % self.stall_timeout)
            elif interval and now - heard >= interval:
                await self._answer(pubsub.ping(), self.stall_timeout,
                                   "could not send a PING within %g s")
                ping_sent = time.monotonic()
                continue
            else:
                # Never timeout=None: redis-py would apply socket_timeout if set.
                wait = heard + interval - now if interval else 1.0
            message = await pubsub.get_message(timeout=wait)
            if message is None:
                continue
            heard = time.monotonic()
            ping_sent = None
            if message.get("type") == "pmessage":
                self._incoming(message["channel"], message["data"])

    def _incoming(self, channel: str, data: Union[str, bytes]) -> None:
        try:
            version, origin, deadline, group, exclude, frames = json.loads(data)
            if version != _FORMAT or not isinstance(frames, str):
                raise ValueError("unknown envelope")
            late = time.monotonic() + self._clock_offset - float(deadline)
        except (ValueError, TypeError):
            self.malformed += 1
            if not self._warned_malformed:
                self._warned_malformed = True
                log.warning("redis broadcast: ignoring a malformed message on %s (another "
                            "TornadIO version?); further ones are counted in malformed",
                            channel)
            return
        if origin == self.process_id:
            self.own_skipped += 1
            return
        if late > 0:
            self.stale_dropped += 1
            if not self._warned_stale:
                self._warned_stale = True
                log.warning("redis broadcast: dropped a broadcast from process %s on %s: it "
                            "came %.1f s past its max_delay (Redis stalled?); further drops "
                            "are counted in stale_dropped", origin, redact_url(self.url), late)
            return
        receiver = self._receivers.get(channel)
        if receiver is None:
            return
        self.received += 1
        call_user("broadcast receiver", receiver, group, frames, exclude)

    async def _write_loop(self, client: "aioredis.Redis", generation: int) -> None:
        """Publish the outbox in order, one pipeline at a time, each answered in time."""
        while self.connected and self._current(generation):
            outbox = self._outbox
            if not outbox:
                assert self._wake is not None  # made with this generation
                self._wake.clear()
                await self._wake.wait()
                continue
            now = time.monotonic()
            batch: List[_Entry] = []
            expired: List[_Entry] = []
            while outbox and len(batch) < self.max_batch:
                entry = outbox.popleft()
                (batch if entry[3] >= now else expired).append(entry)
            self._not_published(_resolve([future for _, _, future, _ in expired], False))
            if not batch:
                continue
            pipe = client.pipeline(transaction=False)
            for channel, data, _, _ in batch:
                pipe.publish(channel, data)
            self._in_flight = batch
            # On a failure the batch stays in _in_flight: _serve resolves it False.
            # raise_on_error=False: a refused PUBLISH (ACL, OOM...) is an answer, not
            # a broken connection; reconnecting would not help.
            results = await self._published(pipe.execute(raise_on_error=False),
                                            batch, generation)
            if not self._current(generation):
                return
            self._in_flight = None
            now = time.monotonic()
            published = failed = 0
            for (_, _, future, deadline), receivers in zip(batch, results):
                if future.done():
                    continue
                if isinstance(receivers, Exception):
                    self._refused(receivers)
                elif now <= deadline:
                    future.set_result(int(receivers))
                    published += 1
                    continue
                # Refused, or confirmed past its deadline (receivers drop it).
                future.set_result(False)
                failed += 1
            self.published += published
            self._not_published(failed)

    def _refused(self, error: Exception) -> None:
        self.refused += 1
        if not self._warned_refused:
            self._warned_refused = True
            log.warning("redis broadcast: %s refused PUBLISH (%s: %s); such broadcasts "
                        "reach this process only, counted in refused", redact_url(self.url),
                        type(error).__name__, error)

    async def _published(self, execute: Awaitable[List[Any]], batch: List[_Entry],
                         generation: int) -> List[Any]:
        """The pipeline's replies. No reply within stall_timeout is an outage,
        declared at once; the reply is still awaited until the newest broadcast's
        deadline, because a stalled Redis that resumes before then does deliver
        them: only past it is False true for every receiver."""
        replies = asyncio.ensure_future(execute)
        try:
            return await asyncio.wait_for(asyncio.shield(replies), self.stall_timeout)
        except _TIMEOUTS:
            stalled = _Stalled("no reply to PUBLISH within %g s" % self.stall_timeout)
        except BaseException:
            replies.cancel()
            raise
        self._down(stalled, generation)
        remaining = max(deadline for _, _, _, deadline in batch) - time.monotonic()
        try:
            return await asyncio.wait_for(replies, max(0.0, remaining))
        except _TIMEOUTS:
            raise stalled from None
