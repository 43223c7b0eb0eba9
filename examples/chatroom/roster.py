"""Who is in the chat room: one process (``Roster``) or every process (``RedisRoster``).

A roster maps a *page key* (the page's random client id, or the session id when
it sent none) to the connection that joined with it, so a page that reconnects
takes the place of its stale session instead of appearing twice.

Why the shared roster is a Redis hash, not a presence protocol over broadcasts:
broadcasts reach browsers, not servers, and a newcomer needs the whole list at
once ("Also here: ..."), which a hash gives in one read. The layout:

    <prefix>:people             hash: page key -> JSON {"nickname", "transport",
                                "session" (8 chars, to tell sessions apart), "process"}
    <prefix>:alive:<process>    "1", expiring after ``ttl`` seconds

An entry counts while the alive key of its process exists. Every ``ttl / 3``
seconds each process refreshes its alive key and sweeps the hash:

* entries of a process whose alive key expired (it crashed or was killed) are
  ghosts: they are removed and the room hears "<nickname> left";
* so are entries of this process whose session is gone (their removal failed
  while Redis was unreachable);
* a session of this process whose page has since joined on another process is
  closed quietly (the newer session announced "reconnected");
* this process's entries that Redis lost (restarted empty) are written back.

A removal is a compare-and-delete (a Lua script), so whoever removes an entry
announces it, once, however many processes sweep at the same time. Redis keeps
the time (key expiry), so the processes' clocks need not agree.
"""
import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket

from tornadio.redis_broadcast import cancel_and_wait

log = logging.getLogger("chatroom.roster")

#: Delete field ARGV[1] of hash KEYS[1] only if it still holds ARGV[2]; 1 if deleted.
REMOVE_IF_UNCHANGED = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
    return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class RosterError(Exception):
    """The shared roster cannot be read or written (Redis unreachable)."""


def sorted_people(people):
    """What the pages show: nickname and transport, in a stable order."""
    return sorted(({"nickname": p["nickname"], "transport": p["transport"]} for p in people),
                  key=lambda person: (person["nickname"].casefold(), person["transport"]))


class Roster:
    """One process, one room: the roster is this process's own connections.

    A connection has ``key``, ``nickname``, ``transport``, ``session_id`` and
    ``close()``. ``enter``, ``leave`` and ``people`` are coroutines so that the
    shared roster can be a drop-in; here they never wait.
    """

    def __init__(self):
        self.here = {}      # page key -> connection of this process
        self.tasks = set()  # background updates (see spawn)

    async def start(self, on_gone):
        """Called once before serving; ``on_gone(nickname)`` announces ghosts."""

    async def stop(self, timeout=2.0):
        """Let pending updates (their "left" announcements) finish, bounded."""
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout)

    def spawn(self, coroutine):
        """Run ``coroutine`` in the background (from ``on_close``, which cannot wait)."""
        task = asyncio.ensure_future(coroutine)
        self.tasks.add(task)
        task.add_done_callback(self._finished)

    def _finished(self, task):
        self.tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if isinstance(error, RosterError):
            log.warning("roster update failed: %s", error)
        elif error is not None:
            log.error("roster update failed", exc_info=error)

    async def enter(self, conn):
        """Add ``conn``; True if it replaced an earlier session of the same page."""
        return self._replace(conn)

    async def leave(self, conn):
        """Take ``conn`` out; True if the room should hear that it left."""
        return self.forget(conn)

    async def people(self):
        return sorted_people({"nickname": c.nickname, "transport": c.transport}
                             for c in self.here.values())

    def _replace(self, conn):
        old = self.here.get(conn.key)
        self.here[conn.key] = conn
        if old is not None:
            old.close()  # its leave() finds itself replaced: no "left"
        return old is not None

    def forget(self, conn):
        """Drop ``conn`` from this process's members; False if it was not one."""
        if self.here.get(conn.key) is not conn:
            return False
        del self.here[conn.key]
        return True


class RedisRoster(Roster):
    """One room across processes: the roster lives in Redis (see the module docstring)."""

    def __init__(self, url, ttl=15.0, prefix="chatroom"):
        super().__init__()
        import redis.asyncio as aioredis  # only --redis needs redis-py
        from redis.exceptions import RedisError

        self.errors = (RedisError, OSError, asyncio.TimeoutError)
        self.redis = aioredis.Redis.from_url(url, decode_responses=True,
                                             socket_connect_timeout=2, socket_timeout=2)
        self.remove_if_unchanged = self.redis.register_script(REMOVE_IF_UNCHANGED)
        self.ttl = float(ttl)
        self.process = "%s:%d:%s" % (socket.gethostname(), os.getpid(), secrets.token_hex(3))
        self.people_key = prefix + ":people"
        self.alive_prefix = prefix + ":alive:"
        self.lock = None  # made in start(), inside the event loop
        self.on_gone = None
        self.beats = None
        self.failing = False

    # -- Roster ---------------------------------------------------------------------
    async def start(self, on_gone):
        self.on_gone = on_gone
        # enter, leave and the sweep each see this process's members and the
        # hash as one consistent picture.
        self.lock = asyncio.Lock()
        with self._redis():
            await asyncio.wait_for(self.sweep(), 5.0)
        self.beats = asyncio.ensure_future(self._beat_forever())

    async def stop(self, timeout=2.0):
        await super().stop(timeout)
        if self.beats is not None:
            # Cancelled again until it ends (see cancel_and_wait), bounded.
            await cancel_and_wait([self.beats])
        # Entries still here (a removal failed) become ghosts for the others to sweep.
        with contextlib.suppress(*self.errors):
            await asyncio.wait_for(self.redis.delete(self.alive_prefix + self.process), 2.0)
        with contextlib.suppress(*self.errors):
            await asyncio.wait_for(self.redis.aclose(), 2.0)

    async def enter(self, conn):
        async with self.lock:
            replaced = self._replace(conn)
            try:
                with self._redis():
                    added = await self.redis.hset(self.people_key, conn.key, self._entry(conn))
            except RosterError:
                self.forget(conn)
                raise
        return replaced or not added

    async def leave(self, conn):
        async with self.lock:
            if not self.forget(conn):
                return False
            with self._redis():
                return await self._remove(conn.key, self._entry(conn))

    async def people(self):
        with self._redis():
            entries = await self._entries()
            alive = await self._alive(entries.values())
        # This process's entries count only for its members: one being removed does not.
        return sorted_people(
            entry for key, entry in entries.items()
            if entry["process"] in alive
            and (entry["process"] != self.process or key in self.here))

    # -- the sweep ------------------------------------------------------------------
    async def sweep(self):
        """Refresh this process's alive key, then fix the hash (module docstring)."""
        gone = []
        async with self.lock:
            await self.redis.set(self.alive_prefix + self.process, "1", px=int(self.ttl * 1000))
            raw = await self.redis.hgetall(self.people_key)
            entries = {key: _parse(value) for key, value in raw.items()}
            alive = await self._alive(entry for entry in entries.values() if entry)
            for key, entry in entries.items():
                mine = self.here.get(key)
                if (entry is None or entry["process"] not in alive
                        or (entry["process"] == self.process and mine is None)):
                    # A ghost (or not ours at all): whoever removes it announces it.
                    if await self._remove(key, raw[key]) and entry is not None:
                        gone.append(entry["nickname"])
                elif entry["process"] != self.process and mine is not None:
                    # The page joined again on another process: our session is stale.
                    self.forget(mine)
                    mine.close()
            for key, conn in list(self.here.items()):
                if key not in raw:  # Redis lost it: write it back
                    await self.redis.hsetnx(self.people_key, key, self._entry(conn))
        for nickname in gone:
            await self.on_gone(nickname)

    async def _beat_forever(self):
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                with self._redis():
                    await self.sweep()
            except RosterError as exc:
                if not self.failing:
                    log.warning("roster: %s; retrying every %.1f s", exc, self.ttl / 3)
                self.failing = True
                continue
            except Exception:
                log.exception("roster sweep failed")
                continue
            if self.failing:
                log.info("roster: Redis is reachable again")
                self.failing = False

    # -- helpers --------------------------------------------------------------------
    @contextlib.contextmanager
    def _redis(self):
        """Turn Redis failures into RosterError."""
        try:
            yield
        except self.errors as exc:
            raise RosterError("Redis: %s: %s" % (type(exc).__name__, exc)) from exc

    def _entry(self, conn):
        """The hash value for ``conn``: the same string every time, for compare-and-delete."""
        return json.dumps({"nickname": conn.nickname, "transport": conn.transport,
                           "session": conn.session_id[:8], "process": self.process},
                          sort_keys=True)

    async def _entries(self):
        raw = await self.redis.hgetall(self.people_key)
        parsed = ((key, _parse(value)) for key, value in raw.items())
        return {key: entry for key, entry in parsed if entry is not None}

    async def _alive(self, entries):
        """The processes, among those of ``entries``, whose alive key exists (and this one)."""
        alive = {self.process}
        others = sorted({entry["process"] for entry in entries} - alive)
        if others:
            flags = await self.redis.mget([self.alive_prefix + p for p in others])
            alive.update(process for process, flag in zip(others, flags) if flag is not None)
        return alive

    async def _remove(self, key, value):
        removed = await self.remove_if_unchanged(keys=[self.people_key], args=[key, value])
        return removed == 1


def _parse(value):
    """A hash value as a dict, or None if it is not one of ours."""
    try:
        entry = json.loads(value)
    except ValueError:
        return None
    if not (isinstance(entry, dict) and isinstance(entry.get("nickname"), str)
            and isinstance(entry.get("transport"), str) and isinstance(entry.get("process"), str)):
        return None
    return entry
