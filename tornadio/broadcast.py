"""Broadcasting: one message to many sessions of a router, encoded once.

Every router owns one :class:`Broadcaster` (``Router.broadcaster()``, made on
first use). It keeps named *groups* of this process's sessions and hands the
same encoded frames to each recipient session: a fan-out to N clients costs one
encode and N queue appends, whatever their transports.

A broadcaster with a *backend* (router setting ``broadcast_backend``) also
reaches the sessions of other processes: every broadcast is delivered locally
at once, then published; each process delivers what it receives from the
others to its own sessions. With no backend (the default) broadcasts stay in
the process and need nothing beyond Tornado.

Group names are strings. Exclusions are session ids (connections or sessions
are accepted and turned into ids), so they hold across processes too.
"""
import asyncio
import logging
import weakref

from tornadio import proto
from tornadio.session import OPEN, call_user

log = logging.getLogger("tornadio.broadcast")

__all__ = ["Broadcaster", "BroadcastBackend", "Delivery", "broadcaster_for",
           "default_channel", "validate_backend"]


class Delivery:
    """What became of one broadcast; returned by the ``send_*`` methods.

    ``local``
        How many sessions of this process were handed the message (already
        done when the call returns).
    ``remote``
        ``None`` with no remote backend, or while the publication is pending
        (see :meth:`done`); then ``True`` if the backend accepted it for the
        other processes, ``False`` if it did not (backend unreachable: the
        message reached this process's sessions only).
    ``receivers``
        When published: how many subscribed processes the backend handed it
        to, this one included; else 0.

    ``await delivery`` waits (never raises) until ``remote`` is settled and
    returns the delivery itself. Not awaiting it is fine: the local part is
    done and the publication goes on in the background.
    """

    __slots__ = ("local", "_remote", "_receivers", "_future")

    def __init__(self, local, future=None):
        self.local = local
        self._remote = None
        self._receivers = 0
        self._future = future
        if future is not None:
            # Not needed for done()/remote (read directly); it retrieves a
            # misbehaving backend's exception, which asyncio would log at GC.
            future.add_done_callback(self._on_done)

    def _on_done(self, future):
        self._settled()

    def _settled(self):
        """Read the backend's answer the moment it exists: ``done()``, ``remote``
        and ``receivers`` never disagree, not even for one loop turn."""
        future = self._future
        if self._remote is None and future is not None and future.done():
            if future.cancelled() or future.exception() is not None:
                result = False
            else:
                result = future.result()
            remote = result is not False and result is not None
            self._receivers = result if remote and isinstance(result, int) else 0
            self._remote = remote
        return self._remote

    @property
    def remote(self):
        return self._settled()

    @property
    def receivers(self):
        self._settled()
        return self._receivers

    @property
    def has_backend(self):
        return self._future is not None

    def done(self):
        """True once ``remote`` is final (always, without a backend)."""
        return self._future is None or self._settled() is not None

    async def _wait(self):
        future = self._future
        if future is not None:
            if not future.done():
                try:
                    # Shielded: a cancelled awaiter must not cancel the publication.
                    await asyncio.shield(future)
                except (asyncio.CancelledError, Exception):
                    if not future.done():
                        raise
        return self

    def __await__(self):
        return self._wait().__await__()

    def __repr__(self):
        state = "pending" if not self.done() else "remote=%r" % self.remote
        return "Delivery(local=%d, %s, receivers=%d)" % (self.local, state, self.receivers)


class BroadcastBackend:
    """Interface of a cross-process backend (see ``tornadio.redis_broadcast``).

    All methods are called on the IOLoop thread.

    ``attach(channel, receiver)``
        Start listening on ``channel`` (one per router). ``receiver(group,
        frames, exclude)`` is to be called, on the IOLoop, for each message
        another process published on it; never for this process's own.
    ``detach(channel, receiver)``
        Stop delivering ``channel`` to ``receiver``.
    ``publish(channel, group, frames, exclude) -> asyncio.Future``
        Hand a message to the other processes, in call order. The future
        resolves to the number of receiving processes (an int >= 0) when the
        message was accepted, or to ``False`` when it was not; it never raises.
        Messages published while the backend is unreachable resolve ``False``
        at once: they are not queued for later.
    ``ready(timeout) -> awaitable bool``
        Wait (bounded) until the backend is connected and listening.
    ``stats() -> dict``
        JSON-able counters and state, shown in ``Router.stats()``.
    ``close() -> awaitable``
        Disconnect and stop every background task.
    """

    def attach(self, channel, receiver):
        raise NotImplementedError

    def detach(self, channel, receiver):
        raise NotImplementedError

    def publish(self, channel, group, frames, exclude):
        raise NotImplementedError

    async def ready(self, timeout=5.0):
        return True

    def stats(self):
        return {}

    async def close(self):
        pass


def validate_backend(backend):
    """ValueError unless ``backend`` is None or looks like a :class:`BroadcastBackend`."""
    if backend is None:
        return
    missing = [name for name in ("attach", "detach", "publish", "ready", "stats", "close")
               if not callable(getattr(backend, name, None))]
    if missing or isinstance(backend, type):
        raise ValueError("setting broadcast_backend must be None or a backend object "
                         "(e.g. RedisBroadcastBackend(url=...)), not %r" % (backend,))


def validate_channel(channel):
    if channel is not None and not (isinstance(channel, str) and channel):
        raise ValueError("setting broadcast_channel must be None or a non-empty string, not %r"
                         % (channel,))


def default_channel(connection_class):
    """The channel of a router whose setting ``broadcast_channel`` is None."""
    return connection_class.__qualname__


def _session_of(target):
    """The session behind a SocketConnection (or a session itself)."""
    session = getattr(target, "session", None)
    if session is not None and hasattr(session, "send_payload"):
        return session
    if hasattr(target, "send_payload") and hasattr(target, "id"):
        return target
    raise TypeError("expected a SocketConnection or a Session, not %r" % (target,))


def _excluded_ids(exclude):
    """Session ids from connections, sessions or ids (one or an iterable)."""
    if not exclude:
        return frozenset()
    if isinstance(exclude, str) or hasattr(exclude, "session") or hasattr(exclude, "send_payload"):
        exclude = (exclude,)
    ids = set()
    for item in exclude:
        if isinstance(item, str):
            ids.add(item)
        else:
            ids.add(_session_of(item).id)
    return frozenset(ids)


def _check_group(group):
    if not isinstance(group, str) or not group:
        raise TypeError("group names are non-empty strings, not %r" % (group,))


class Broadcaster:
    """Groups and fan-out for the sessions of one router's container."""

    def __init__(self, container, backend=None, channel="default"):
        self._container_ref = weakref.ref(container)
        self.backend = backend
        self.channel = channel
        self._groups = {}        # group -> {session id: session}, in join order
        self._memberships = {}   # session id -> set of groups
        self.broadcasts = 0      # send_* calls made in this process
        self.remote_received = 0  # messages delivered here on behalf of other processes
        container.on_remove.append(self._session_removed)
        if backend is not None:
            backend.attach(channel, self._remote_message)

    @property
    def container(self):
        return self._container_ref()

    # -- groups ---------------------------------------------------------------
    def join(self, conn, group):
        """Add a connection (or session) to ``group``; False if closed or already in."""
        _check_group(group)
        session = _session_of(conn)
        if session.state != OPEN:
            return False
        members = self._groups.setdefault(group, {})
        if session.id in members:
            return False
        members[session.id] = session
        self._memberships.setdefault(session.id, set()).add(group)
        return True

    def leave(self, conn, group):
        """Take a connection out of ``group``; False if it was not in it."""
        _check_group(group)
        return self._remove(_session_of(conn).id, group)

    def _remove(self, session_id, group):
        members = self._groups.get(group)
        if members is None or members.pop(session_id, None) is None:
            return False
        if not members:
            del self._groups[group]
        groups = self._memberships.get(session_id)
        if groups is not None:
            groups.discard(group)
            if not groups:
                del self._memberships[session_id]
        return True

    def _session_removed(self, session):
        for group in self._memberships.pop(session.id, ()):
            members = self._groups.get(group)
            if members is not None:
                members.pop(session.id, None)
                if not members:
                    del self._groups[group]

    def groups_of(self, conn):
        """The groups a connection is in, as a frozenset."""
        return frozenset(self._memberships.get(_session_of(conn).id, ()))

    def members(self, group):
        """The connections of this process in ``group``, in join order."""
        return [session.connection for session in self._groups.get(group, {}).values()]

    def groups(self):
        """Names of the groups that have members in this process."""
        return list(self._groups)

    # -- sending --------------------------------------------------------------
    def send_all(self, message, exclude=()):
        """Send ``message`` to every open session of the router, in every process.

        ``message`` follows the ``send()`` mapping (str as is, list item by
        item, else JSON) and is encoded once; an unsendable value raises
        :class:`tornadio.proto.EncodeError` before anything is delivered.
        ``exclude``: connections, sessions or session ids to skip.
        Returns a :class:`Delivery`.
        """
        frames = proto.encode(message)
        excluded = _excluded_ids(exclude)
        container = self.container
        sessions = container.sessions.values() if container is not None else ()
        local = self._deliver(sessions, frames, excluded)
        return self._publish(None, frames, excluded, local)

    def send_group(self, group, message, exclude=()):
        """Like :meth:`send_all`, to the members of ``group`` only (in every process)."""
        _check_group(group)
        frames = proto.encode(message)
        excluded = _excluded_ids(exclude)
        local = self._deliver(self._groups.get(group, {}).values(), frames, excluded)
        return self._publish(group, frames, excluded, local)

    @staticmethod
    def _deliver(sessions, frames, excluded):
        if not frames:
            return 0
        count = 0
        # A copy: a send may close a session (queue overflow), which edits the dict.
        for session in list(sessions):
            if session.state == OPEN and session.id not in excluded:
                session.send_payload(frames)
                count += 1
        return count

    def _publish(self, group, frames, excluded, local):
        self.broadcasts += 1
        if self.backend is None or not frames:
            return Delivery(local)
        future = self.backend.publish(self.channel, group, frames, sorted(excluded))
        return Delivery(local, future)

    def _remote_message(self, group, frames, exclude):
        """A broadcast published by another process: deliver it to our sessions."""
        self.remote_received += 1
        excluded = frozenset(exclude or ())
        if group is None:
            container = self.container
            sessions = container.sessions.values() if container is not None else ()
        else:
            sessions = self._groups.get(group, {}).values()
        self._deliver(sessions, frames, excluded)

    # -- lifecycle --------------------------------------------------------------
    async def ready(self, timeout=5.0):
        """Wait (at most ``timeout`` s) until the backend listens; True without one."""
        if self.backend is None:
            return True
        return bool(await self.backend.ready(timeout))

    def stats(self):
        """Groups and backend state, as a JSON-able dict."""
        return {
            "channel": self.channel,
            "backend": None if self.backend is None else type(self.backend).__name__,
            "groups": len(self._groups),
            "memberships": sum(len(members) for members in self._groups.values()),
            "broadcasts": self.broadcasts,
            "remote_received": self.remote_received,
            "backend_state": None if self.backend is None else
            call_user("backend stats", self.backend.stats),
        }

    def close(self):
        """Stop listening for other processes' broadcasts (the backend stays open)."""
        if self.backend is not None:
            self.backend.detach(self.channel, self._remote_message)
        container = self.container
        if container is not None and self._session_removed in container.on_remove:
            container.on_remove.remove(self._session_removed)
        _BROADCASTERS.pop(container, None)


#: container -> Broadcaster; the broadcaster only holds its container weakly.
_BROADCASTERS = weakref.WeakKeyDictionary()


def broadcaster_for(container, settings, connection_class):
    """The broadcaster of a session container, made on first use."""
    broadcaster = _BROADCASTERS.get(container)
    if broadcaster is None:
        channel = settings.get("broadcast_channel") or default_channel(connection_class)
        broadcaster = Broadcaster(container, settings.get("broadcast_backend"), channel)
        _BROADCASTERS[container] = broadcaster
    return broadcaster


def of_connection(conn):
    """The broadcaster of the router a connection belongs to."""
    session = conn.session
    return broadcaster_for(session.container, session.settings, type(conn))
