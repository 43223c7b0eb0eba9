"""The Redis backend of the session relay (``tornadio.relay``).

Needs redis-py >= 5.0.1 (``pip install 'tornadio[redis]'``)::

    from tornadio.redis_relay import RedisSessionRelay

    relay = RedisSessionRelay(url="redis://127.0.0.1:6379/0")
    ChatRouter = tornadio.get_router(ChatConnection, {"session_relay": relay,
                                                      "broadcast_backend": broadcasts})

What it keeps in Redis, with ``prefix`` (default ``tornadio-relay``):

``<prefix>:<tag>``
    the pub/sub channel of one process (its *inbox*): every message for that
    process's routers is published there, and only that process subscribes.
``<prefix>:alive:<tag>``
    a key the process sets every ``alive_ttl / 3`` seconds, expiring after
    ``alive_ttl``: a process that stopped (SIGSTOP, a hung loop) loses it,
    one that was killed loses its subscription at once. Either way the
    others answer its sessions' requests ``401``.

Each message is a JSON array ``[1, deadline, router channel, body]``; the
deadline is on Redis's clock (read with ``TIME`` at each connection), so a
message that waited too long (a stalled Redis or process) is dropped by its
receiver whatever the processes' own clocks say. One connection publishes, in
call order, several messages per round trip; one connection reads.

When Redis is unreachable: one warning per outage, reconnection with
exponential backoff, and requests for other processes' sessions answered
``503`` meanwhile (requests that reach a session's owner are served as
usual: they never touch Redis). Every wait on Redis is bounded by
``stall_timeout``.

Keep ``prefix`` different from the broadcast backend's ``channel_prefix``:
the broadcast backend subscribes to ``<channel_prefix>:*``.
"""
import asyncio
import json
import logging
import os
import secrets
import time
from collections import deque
from typing import Any, Deque, Dict, List, Optional, Set, Tuple

try:
    import redis  # noqa: F401 - only to say clearly when it is missing
except ImportError:  # pragma: no cover - depends on the environment
    redis = None  # type: ignore[assignment]

from tornadio.redis_broadcast import (cancel_and_wait, close_quietly, redact_url, redis_client,
                                      redis_clock_offset, stop_task)
from tornadio.relay import TAG_LENGTH, Receiver, RelayBackend
from tornadio.session import call_user

log = logging.getLogger("tornadio.redis")

__all__ = ["RedisSessionRelay"]

#: First item of every message: the envelope's version.
_FORMAT = 1

_Outgoing = Tuple[str, str, "asyncio.Future[Optional[int]]"]


class _Stalled(ConnectionError):
    """Redis kept the connection open but did not answer in time."""


class RedisSessionRelay(RelayBackend):
    """The session relay over Redis pub/sub (see the module docstring).

    :param url: a redis-py URL (``redis://[:password@]host:port/db``,
        ``rediss://`` for TLS, ``unix://``).
    :param prefix: the prefix of this backend's channels and keys.
    :param connect_timeout: seconds for one connection attempt, until the
        subscription is confirmed.
    :param stall_timeout: seconds Redis may leave a command unanswered before
        the connection counts as lost.
    :param alive_ttl: seconds after which a process that stopped refreshing
        its liveness key counts as gone.
    :param reply_timeout: seconds a process waits for the owner's first
        answer to a forwarded request (then ``401``).
    :param ack_timeout: seconds an owner waits for the confirmation that
        relayed frames were written, before sending them again.
    :param request_timeout: longest wait, in seconds, of a relayed POST
        behind a slow coroutine ``on_message`` (then ``504``).
    :param watch_interval: seconds between two checks of the owners that
        forwarded requests wait for.
    :param min_backoff: first reconnection delay in seconds, doubled after
        each failed attempt ...
    :param max_backoff: ... up to this many seconds.
    :param max_outbox: most messages waiting for Redis; beyond, a send fails.
    :param max_batch: most messages per pipeline round trip.
    :param redis_options: more keyword arguments for ``redis.asyncio.Redis``.
    :raises ImportError: redis-py is not installed.
    :raises ValueError: a setting out of range.

    One backend may serve several routers of a process (they are told apart
    by their ``broadcast_channel``). Create it anywhere, even before
    ``fork_processes()``: the process tag and the connections are made
    lazily, in the process that uses them.
    """

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", prefix: str = "tornadio-relay",
                 connect_timeout: float = 2.0, stall_timeout: float = 3.0,
                 alive_ttl: float = 3.0, reply_timeout: float = 3.0, ack_timeout: float = 3.0,
                 request_timeout: float = 60.0, watch_interval: float = 1.0,
                 min_backoff: float = 0.1, max_backoff: float = 5.0, max_outbox: int = 10000,
                 max_batch: int = 256, redis_options: Optional[Dict[str, Any]] = None) -> None:
        if redis is None:
            raise ImportError("RedisSessionRelay needs redis-py: pip install 'tornadio[redis]'")
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("prefix must be a non-empty string")
        self.url = url
        self.prefix = prefix
        # Seconds, each > 0 (the attributes RelayBackend documents among them).
        self.connect_timeout = self.stall_timeout = self.alive_ttl = 0.0
        self.min_backoff = self.max_backoff = 0.0
        for name, value in (("connect_timeout", connect_timeout),
                            ("stall_timeout", stall_timeout), ("alive_ttl", alive_ttl),
                            ("reply_timeout", reply_timeout), ("ack_timeout", ack_timeout),
                            ("request_timeout", request_timeout),
                            ("watch_interval", watch_interval),
                            ("min_backoff", min_backoff), ("max_backoff", max_backoff)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError("%s must be a number of seconds > 0, not %r" % (name, value))
            setattr(self, name, float(value))
        if self.min_backoff > self.max_backoff:
            raise ValueError("need min_backoff <= max_backoff")
        for name, count in (("max_outbox", max_outbox), ("max_batch", max_batch)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError("%s must be an int >= 1, not %r" % (name, count))
        self.max_outbox = max_outbox
        self.max_batch = max_batch
        self.redis_options = dict(redis_options or {})
        self._receivers: Dict[str, Receiver] = {}
        self._pid: Optional[int] = None
        self._tag = ""
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._task: "Optional[asyncio.Task[None]]" = None
        self._client: Any = None
        self._outbox: Deque[_Outgoing] = deque()
        self._in_flight: List[_Outgoing] = []
        self._wake: Optional[asyncio.Event] = None
        self._up_event: Optional[asyncio.Event] = None
        self._clock_offset = 0.0
        self._closed = False
        self._connected = False
        self._outage_since: Optional[float] = None
        self._warned_malformed = False
        self.outages = 0
        self.last_error: Optional[str] = None
        self.sent = 0
        self.not_sent = 0
        self.received = 0
        self.stale_dropped = 0
        self.malformed = 0
        self.unrouted = 0

    # -- RelayBackend ---------------------------------------------------------------
    @property
    def tag(self) -> str:
        """This process's tag (a new one in a forked child)."""
        self._adopt_process()
        return self._tag

    def _adopt_process(self) -> None:
        """In a new process (a fork), start over: nothing inherited is usable."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._tag = secrets.token_hex(TAG_LENGTH // 2)
            self._loop = None
            self._task = None
            self._client = None
            self._connected = False

    @property
    def connected(self) -> bool:
        """True while subscribed and able to publish, in this process."""
        self._ensure_running()
        return self._connected

    def attach(self, channel: str, receiver: Receiver) -> None:
        """Hand what other processes send to router ``channel`` here to ``receiver``."""
        self._receivers[channel] = receiver
        self._ensure_running()

    def detach(self, channel: str, receiver: Receiver) -> None:
        """Stop delivering ``channel`` to ``receiver`` (a no-op if it was not attached)."""
        if self._receivers.get(channel) == receiver:
            del self._receivers[channel]

    def send(self, tag: str, channel: str, message: Dict[str, Any],
             ttl: float) -> "asyncio.Future[Optional[int]]":
        """Publish ``message`` on the inbox of process ``tag`` (see :class:`RelayBackend`)."""
        self._ensure_running()
        future: "asyncio.Future[Optional[int]]" = asyncio.get_running_loop().create_future()
        if not self._connected or len(self._outbox) >= self.max_outbox:
            self.not_sent += 1
            future.set_result(None)
            return future
        deadline = round(time.monotonic() + self._clock_offset + ttl, 3)
        data = json.dumps([_FORMAT, deadline, channel, message], ensure_ascii=False,
                          separators=(",", ":"))
        self._outbox.append((self._inbox(tag), data, future))
        assert self._wake is not None  # made with the connection task
        self._wake.set()
        return future

    def alive(self, tags: Set[str]) -> "asyncio.Future[Dict[str, bool]]":
        """Which of ``tags`` are subscribed and have their liveness key; never raises."""
        self._ensure_running()
        loop = asyncio.get_running_loop()
        future: "asyncio.Future[Dict[str, bool]]" = loop.create_future()
        client = self._client
        if not self._connected or client is None or not tags:
            future.set_result({})
            return future

        def done(task: "asyncio.Task[Dict[str, bool]]") -> None:
            failed = task.cancelled() or task.exception() is not None
            if not future.done():
                future.set_result({} if failed else task.result())

        loop.create_task(self._check_alive(client, sorted(tags))).add_done_callback(done)
        return future

    async def ready(self, timeout: float = 5.0) -> bool:
        """Wait at most ``timeout`` seconds for the subscription; True when connected."""
        self._ensure_running()
        if self._connected or self._closed or self._up_event is None:
            return self._connected
        try:
            await asyncio.wait_for(self._up_event.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return self._connected

    def stats(self) -> Dict[str, Any]:
        """Connection state and counters (the URL without its password), JSON-able."""
        return {"url": redact_url(self.url), "connected": self._connected,
                "outages": self.outages, "last_error": self.last_error, "sent": self.sent,
                "not_sent": self.not_sent, "received": self.received,
                "stale_dropped": self.stale_dropped, "malformed": self.malformed,
                "unrouted": self.unrouted, "pending": len(self._outbox) + len(self._in_flight)}

    async def close(self) -> None:
        """Leave Redis: the liveness key is deleted, so others answer this process's
        sessions ``401`` at once; what is not sent resolves ``None``."""
        self._closed = True
        task, self._task = self._task, None
        await stop_task(task, self._loop is asyncio.get_running_loop())
        self._fail_unsent()
        self._connected = False

    # -- internals --------------------------------------------------------------------
    def _inbox(self, tag: str) -> str:
        return "%s:%s" % (self.prefix, tag)

    def _alive_key(self, tag: str) -> str:
        return "%s:alive:%s" % (self.prefix, tag)

    def _ensure_running(self) -> None:
        """Start the connection task in this process and loop (after a fork, anew)."""
        self._adopt_process()
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # started by the first call inside the IOLoop
        if self._loop is not loop:
            self._fail_unsent()
            self._loop = loop
            self._wake = asyncio.Event()
            self._up_event = asyncio.Event()
            self._task = None
            self._connected = False
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())

    def _fail_unsent(self) -> None:
        unsent = list(self._outbox) + self._in_flight
        self._outbox, self._in_flight = deque(), []
        for _, _, future in unsent:
            if not future.done():
                self.not_sent += 1
                try:
                    future.set_result(None)
                except RuntimeError:  # its loop is closed; the result is set anyway
                    pass

    async def _bounded(self, awaitable: Any, what: str) -> Any:
        try:
            return await asyncio.wait_for(awaitable, self.stall_timeout)
        except asyncio.TimeoutError:
            raise _Stalled("no reply to %s within %g s" % (what, self.stall_timeout)) from None

    async def _run(self) -> None:
        """Connect, serve until the connection fails, back off, again; until closed."""
        delay = self.min_backoff
        while not self._closed:
            try:
                client, pubsub = await asyncio.wait_for(self._connect(), self.connect_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lost(exc, connecting=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            delay = self.min_backoff
            self._up(client)
            error: Optional[BaseException] = None
            try:
                error = await self._serve(client, pubsub)
            finally:
                self._connected = False
                self._client = None
                if self._up_event is not None:
                    self._up_event.clear()
                self._fail_unsent()
                await self._disconnect(client, pubsub)
            self._lost(error, connecting=False)
            await asyncio.sleep(delay)

    async def _connect(self) -> Tuple[Any, Any]:
        client = redis_client(self.url, self.connect_timeout, self.redis_options)
        pubsub = None
        try:
            await client.ping()
            self._clock_offset = await redis_clock_offset(client)
            await client.set(self._alive_key(self.tag), "1", px=int(self.alive_ttl * 1000))
            pubsub = client.pubsub()
            await pubsub.subscribe(self._inbox(self.tag))
            while True:  # reachable only once Redis confirmed the subscription
                message = await pubsub.get_message(timeout=self.connect_timeout)
                if message is not None and message.get("type") == "subscribe":
                    return client, pubsub
        except BaseException:
            await self._disconnect(client, pubsub)
            raise

    async def _disconnect(self, client: Any, pubsub: Any) -> None:
        cancelled: Optional[BaseException] = None
        if self._closed:
            try:  # leaving on purpose: the others need not wait for the key to expire
                await asyncio.wait_for(client.delete(self._alive_key(self.tag)), 1.0)
            except asyncio.CancelledError as exc:
                cancelled = exc  # close the connections first, then let it through
            except Exception:
                pass
        await close_quietly(pubsub, client)
        if cancelled is not None:
            raise cancelled

    def _up(self, client: Any) -> None:
        self._client = client
        self._connected = True
        self.last_error = None
        if self._up_event is not None:
            self._up_event.set()
        if self._outage_since is not None:
            log.info("session relay: reconnected to %s after %.1f s", redact_url(self.url),
                     time.monotonic() - self._outage_since)
            self._outage_since = None
        else:
            log.info("session relay: connected to %s (process tag %s)", redact_url(self.url),
                     self.tag)

    def _lost(self, error: Optional[BaseException], connecting: bool) -> None:
        if error is not None:
            kind = "stalled" if isinstance(error, _Stalled) else type(error).__name__
            self.last_error = "%s: %s" % (kind, error)
        if self._closed:
            return
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.outages += 1
            log.warning("session relay: %s %s (%s); retrying every %g..%g s, requests for "
                        "other processes' sessions are answered 503 meanwhile",
                        "cannot connect to" if connecting else "lost connection to",
                        redact_url(self.url), self.last_error, self.min_backoff,
                        self.max_backoff)

    async def _serve(self, client: Any, pubsub: Any) -> Optional[BaseException]:
        """Read, write and refresh the liveness key until one of them fails."""
        tasks = [asyncio.ensure_future(job) for job in
                 (self._read(pubsub), self._write(client), self._beat(client))]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            first = next(iter(done))
            return (None if first.cancelled() else first.exception()) or ConnectionError(
                "the connection ended")
        finally:
            await cancel_and_wait(tasks)  # the first one's error is returned; the rest add nothing

    async def _read(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=1.0)
            if message is not None and message.get("type") == "message":
                self._incoming(message["data"])

    async def _write(self, client: Any) -> None:
        """Publish the outbox in order, one bounded pipeline at a time."""
        assert self._wake is not None
        while True:
            if not self._outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._outbox.popleft()
                     for _ in range(min(self.max_batch, len(self._outbox)))]
            pipe = client.pipeline(transaction=False)
            for channel, data, _ in batch:
                pipe.publish(channel, data)
            self._in_flight = batch
            results = await self._bounded(pipe.execute(raise_on_error=False), "PUBLISH")
            self._in_flight = []
            for (_, _, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, Exception):
                    self.not_sent += 1
                    future.set_result(None)
                else:
                    self.sent += 1
                    future.set_result(int(result))

    async def _beat(self, client: Any) -> None:
        key = self._alive_key(self.tag)
        while True:
            await asyncio.sleep(self.alive_ttl / 3)
            await self._bounded(client.set(key, "1", px=int(self.alive_ttl * 1000)), "SET")

    async def _check_alive(self, client: Any, tags: List[str]) -> Dict[str, bool]:
        pipe = client.pipeline(transaction=False)
        for tag in tags:
            pipe.pubsub_numsub(self._inbox(tag))
            pipe.exists(self._alive_key(tag))
        results = await self._bounded(pipe.execute(), "PUBSUB NUMSUB")
        alive = {}
        for index, tag in enumerate(tags):
            subscribed = results[2 * index]
            listening = bool(subscribed) and int(subscribed[0][1]) > 0
            alive[tag] = listening and bool(results[2 * index + 1])
        return alive

    def _incoming(self, data: str) -> None:
        try:
            version, deadline, channel, body = json.loads(data)
            if version != _FORMAT or not isinstance(body, dict):
                raise ValueError("unknown envelope")
            late = time.monotonic() + self._clock_offset - float(deadline)
        except (ValueError, TypeError):
            self.malformed += 1
            if not self._warned_malformed:
                self._warned_malformed = True
                log.warning("session relay: ignoring a malformed message (another TornadIO "
                            "version?); further ones are counted in malformed")
            return
        if late > 0:
            self.stale_dropped += 1
            log.info("session relay: dropped a message %.1f s past its deadline", late)
            return
        receiver = self._receivers.get(channel)
        if receiver is None:
            self.unrouted += 1
            return
        self.received += 1
        call_user("session relay receiver", receiver, body)
