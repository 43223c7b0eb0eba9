"""A Redis pub/sub broadcast backend: broadcasts reach every TornadIO process.

Needs redis-py >= 5 (``pip install 'tornadio[redis]'``)::

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
"""
import asyncio
import json
import logging
import os
import secrets
import time
from collections import deque
from urllib.parse import urlsplit, urlunsplit

try:
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff
except ImportError:  # pragma: no cover - depends on the environment
    aioredis = None

from tornadio.broadcast import BroadcastBackend
from tornadio.session import call_user

log = logging.getLogger("tornadio.redis")

__all__ = ["RedisBroadcastBackend"]

_GLOB_SPECIAL = "\\*?[]"

#: Message envelope version, first item of every published JSON array.
_FORMAT = 1


def _redact(url):
    """The URL without its password, for logs."""
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


def _glob_escape(text):
    return "".join("\\" + c if c in _GLOB_SPECIAL else c for c in text)


class RedisBroadcastBackend(BroadcastBackend):
    """Cross-process broadcasts over Redis pub/sub (see the module docstring).

    :param url: a redis-py URL (``redis://[:password@]host:port/db``,
        ``rediss://`` for TLS, ``unix://``)
    :param channel_prefix: the Redis channels used are
        ``<prefix>:<router channel>``
    :param min_backoff: first reconnection delay in seconds, doubled after
        each failed attempt ...
    :param max_backoff: ... up to this many seconds
    :param connect_timeout: seconds for each connection attempt
    :param health_check_interval: seconds between PINGs on an idle
        subscription, so that a dead peer is noticed without traffic (0: off)
    :param max_batch: most messages sent in one pipeline round trip
    :param redis_options: more keyword arguments for ``redis.asyncio.Redis``
    :raises ImportError: redis-py is not installed
    :raises ValueError: an empty ``channel_prefix``, or backoffs not
        ``0 < min_backoff <= max_backoff``

    One backend may serve several routers (one channel each). Create it
    anywhere, even before ``fork_processes()``: the process id and the Redis
    connections are made lazily, in the process that uses them.
    """

    def __init__(self, url="redis://127.0.0.1:6379/0", channel_prefix="tornadio",
                 min_backoff=0.1, max_backoff=5.0, connect_timeout=2.0,
                 health_check_interval=10, max_batch=512, redis_options=None):
        if aioredis is None:
            raise ImportError("RedisBroadcastBackend needs redis-py: pip install 'tornadio[redis]'")
        if not isinstance(channel_prefix, str) or not channel_prefix:
            raise ValueError("channel_prefix must be a non-empty string")
        if not 0 < min_backoff <= max_backoff:
            raise ValueError("need 0 < min_backoff <= max_backoff")
        self.url = url
        self.channel_prefix = channel_prefix
        self.min_backoff = float(min_backoff)
        self.max_backoff = float(max_backoff)
        self.connect_timeout = connect_timeout
        self.health_check_interval = health_check_interval
        self.max_batch = max_batch
        self.redis_options = dict(redis_options or {})
        self.process_id = None
        self._pid = None
        self._receivers = {}          # full channel name -> receiver
        self._outbox = deque()        # (channel, data, future) waiting for the publisher
        self._wake = None
        self._connected_event = None
        self._task = None
        self._client = None
        self._pubsub = None
        self._closed = False
        self._loop = None
        # State and counters (see stats()).
        self.connected = False
        self.outages = 0
        self._outage_since = None
        self._unpublished_in_outage = 0
        self.last_error = None
        self.published = 0
        self.not_published = 0
        self.received = 0
        self.own_skipped = 0
        self.malformed = 0

    # -- BroadcastBackend ---------------------------------------------------------
    def attach(self, channel, receiver):
        """Deliver what other processes publish on ``channel`` to ``receiver(group, frames, exclude)``.

        Starts the connection task when called inside the IOLoop.
        """
        self._receivers[self._full(channel)] = receiver
        self._ensure_running()

    def detach(self, channel, receiver):
        """Stop delivering ``channel`` to ``receiver`` (a no-op if it was not attached)."""
        full = self._full(channel)
        if self._receivers.get(full) == receiver:
            del self._receivers[full]

    def publish(self, channel, group, frames, exclude):
        """Queue encoded ``frames`` for the processes listening on ``channel``.

        :param group: the group name, or None for every session
        :param exclude: session ids that must not receive it
        :returns: an ``asyncio.Future`` resolving to the number of receiving
            processes, or to False at once while Redis is unreachable; it
            never raises. Must be called inside the IOLoop.
        """
        self._ensure_running()
        future = asyncio.get_running_loop().create_future()
        if not self.connected:
            self._not_published(1)
            future.set_result(False)
            return future
        data = json.dumps([_FORMAT, self.process_id, group, list(exclude), frames],
                          ensure_ascii=False, separators=(",", ":"))
        self._outbox.append((self._full(channel), data, future))
        self._wake.set()
        return future

    async def ready(self, timeout=5.0):
        """Wait at most ``timeout`` seconds for the subscription to be confirmed.

        :returns: True when connected and listening, False after the timeout
        """
        self._ensure_running()
        if self.connected:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self._connected_event.wait()), timeout)
        except asyncio.TimeoutError:
            return False
        return self.connected

    def stats(self):
        """Connection state and counters (the URL without its password), JSON-able."""
        return {
            "url": _redact(self.url),
            "process_id": self.process_id,
            "connected": self.connected,
            "outages": self.outages,
            "outage_seconds": None if self._outage_since is None
            else round(time.monotonic() - self._outage_since, 3),
            "last_error": self.last_error,
            "published": self.published,
            "not_published": self.not_published,
            "received": self.received,
            "pending": len(self._outbox),
        }

    async def close(self, drain_timeout=2.0):
        """Publish what is pending (for at most ``drain_timeout`` s), then stop
        reconnecting and drop the connections; what is still pending resolves False.

        A shutdown's last words (``on_close`` broadcasts such as "X left") are
        sent, not dropped.
        """
        pending = [future for _, _, future in self._outbox if not future.done()]
        if pending and self.connected:
            await asyncio.wait(pending, timeout=drain_timeout)
        self._closed = True
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._fail_outbox()
        await self._teardown()
        self.connected = False

    # -- internals ----------------------------------------------------------------
    def _full(self, channel):
        return "%s:%s" % (self.channel_prefix, channel)

    def _ensure_running(self):
        """Start the connection task in this process and loop (after a fork, anew)."""
        if self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not inside the IOLoop yet: started by the first call that is
        pid = os.getpid()
        if self._pid != pid or self._loop is not loop:
            # A new process (fork) or a new loop: nothing inherited is usable.
            self._pid = pid
            self._loop = loop
            self.process_id = "%d-%s" % (pid, secrets.token_hex(6))
            self._task = None
            self._client = self._pubsub = None
            self._outbox.clear()
            self.connected = False
            self._wake = asyncio.Event()
            self._connected_event = asyncio.Event()
        if self._task is None or self._task.done():
            self._task = loop.create_task(self._run())

    def _not_published(self, count):
        self.not_published += count
        if self._outage_since is not None:
            self._unpublished_in_outage += count

    def _fail_outbox(self):
        failed = 0
        while self._outbox:
            _, _, future = self._outbox.popleft()
            if not future.done():
                future.set_result(False)
                failed += 1
        if failed:
            self._not_published(failed)

    async def _run(self):
        """Connect, serve until the connection breaks, back off, again; forever."""
        delay = self.min_backoff
        while not self._closed:
            try:
                await self._connect()
            except asyncio.CancelledError:
                await self._teardown()
                raise
            except Exception as exc:
                await self._teardown()
                self._lost(exc, connecting=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff)
                continue
            delay = self.min_backoff
            self._up()
            reader = asyncio.ensure_future(self._read_loop())
            writer = asyncio.ensure_future(self._write_loop())
            try:
                done, _ = await asyncio.wait({reader, writer},
                                             return_when=asyncio.FIRST_COMPLETED)
                error = next(iter(done)).exception() or ConnectionError("loop ended")
            except asyncio.CancelledError:
                error = None
                raise
            finally:
                for task in (reader, writer):
                    task.cancel()
                for task in (reader, writer):
                    try:
                        await task
                    except (asyncio.CancelledError, Exception):
                        pass
                self.connected = False
                self._connected_event.clear()
                self._fail_outbox()
                await self._teardown()
            self._lost(error, connecting=False)
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    async def _connect(self):
        options = {
            "decode_responses": True,
            "socket_connect_timeout": self.connect_timeout,
            "socket_keepalive": True,
            "health_check_interval": self.health_check_interval,
            # Our own loop reconnects; redis-py's hidden retries would mask outages.
            "retry": Retry(NoBackoff(), 0),
        }
        options.update(self.redis_options)
        self._client = aioredis.Redis.from_url(self.url, **options)
        await asyncio.wait_for(self._client.ping(), self.connect_timeout)
        self._pubsub = self._client.pubsub()
        pattern = _glob_escape(self.channel_prefix) + ":*"
        await asyncio.wait_for(self._pubsub.psubscribe(pattern), self.connect_timeout)
        # Listening only counts once Redis confirmed the subscription.
        deadline = time.monotonic() + self.connect_timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ConnectionError("no psubscribe confirmation from Redis")
            message = await self._pubsub.get_message(timeout=remaining)
            if message is not None and message.get("type") == "psubscribe":
                break

    async def _teardown(self):
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        for closing in (pubsub, client):
            if closing is None:
                continue
            try:
                await asyncio.wait_for(closing.aclose(), 1.0)
            except (asyncio.CancelledError, Exception):
                pass

    def _up(self):
        self.connected = True
        self.last_error = None
        self._connected_event.set()
        if self._outage_since is not None:
            log.info("redis broadcast: reconnected to %s after %.1f s; "
                     "%d broadcasts of the outage reached this process only",
                     _redact(self.url), time.monotonic() - self._outage_since,
                     self._unpublished_in_outage)
            self._outage_since = None
            self._unpublished_in_outage = 0
        else:
            log.info("redis broadcast: connected to %s (process id %s)",
                     _redact(self.url), self.process_id)

    def _lost(self, error, connecting):
        self.last_error = "%s: %s" % (type(error).__name__, error) if error else None
        if self._closed:
            return
        if self._outage_since is None:
            self._outage_since = time.monotonic()
            self.outages += 1
            what = "cannot connect to" if connecting else "lost connection to"
            log.warning("redis broadcast: %s %s (%s); retrying every %g..%g s, "
                        "broadcasts reach this process only meanwhile",
                        what, _redact(self.url), self.last_error,
                        self.min_backoff, self.max_backoff)
        else:
            log.debug("redis broadcast: still no connection to %s (%s)",
                      _redact(self.url), self.last_error)

    async def _read_loop(self):
        pubsub = self._pubsub
        interval = self.health_check_interval or 1.0
        while True:
            # A bounded wait, so that redis-py sends its health-check PINGs.
            message = await pubsub.get_message(timeout=interval)
            if message is None or message.get("type") != "pmessage":
                continue
            self._incoming(message["channel"], message["data"])

    def _incoming(self, channel, data):
        try:
            version, origin, group, exclude, frames = json.loads(data)
            if version != _FORMAT or not isinstance(frames, str):
                raise ValueError("unknown envelope")
        except (ValueError, TypeError):
            self.malformed += 1
            log.warning("redis broadcast: ignoring a malformed message on %s", channel)
            return
        if origin == self.process_id:
            self.own_skipped += 1
            return
        receiver = self._receivers.get(channel)
        if receiver is None:
            return
        self.received += 1
        call_user("broadcast receiver", receiver, group, frames, exclude)

    async def _write_loop(self):
        client = self._client
        outbox = self._outbox
        while True:
            if not outbox:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [outbox.popleft() for _ in range(min(len(outbox), self.max_batch))]
            pipe = client.pipeline(transaction=False)
            for channel, data, _ in batch:
                pipe.publish(channel, data)
            try:
                results = await pipe.execute()
            except BaseException:
                # Whether Redis got any of them is unknown: never claim it did.
                for _, _, future in batch:
                    if not future.done():
                        future.set_result(False)
                self._not_published(len(batch))
                raise
            for (_, _, future), receivers in zip(batch, results):
                if not future.done():
                    future.set_result(int(receivers))
            self.published += len(batch)
