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

from typing import (TYPE_CHECKING, AbstractSet, Any, Callable, Dict, FrozenSet, Generator,
                    Iterable, List, Optional, Set, Union, cast)

from tornadio import proto
from tornadio.session import call_user

if TYPE_CHECKING:
    from tornadio.conn import SocketConnection
    from tornadio.session import Session, SessionContainer

#: A broadcast member as the methods take it: a connection or its session.
Member = Union["SocketConnection", "Session"]
#: What a broadcast skips: one member or session id, or an iterable of them.
Exclusion = Union[Member, str, Iterable[Union[Member, str]], None]
#: What a backend calls with each message another process published:
#: ``receiver(group, frames, exclude)`` (group None: every session).
Receiver = Callable[[Optional[str], str, Iterable[str]], None]

log = logging.getLogger("tornadio.broadcast")

__all__ = ["Broadcaster", "BroadcastBackend", "ChannelHub", "Delivery", "validate_backend"]


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

    def __init__(self, local: int, future: "Optional[asyncio.Future[Any]]" = None) -> None:
        self.local = local
        self._remote: Optional[bool] = None
        self._receivers = 0
        self._future = future
        if future is not None:
            # Not needed for done()/remote (read directly); it retrieves a
            # misbehaving backend's exception, which asyncio would log at GC.
            future.add_done_callback(self._on_done)

    def _on_done(self, future: "asyncio.Future[Any]") -> None:
        self._settled()

    def _settled(self) -> Optional[bool]:
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
    def remote(self) -> Optional[bool]:
        """None while pending or without a backend; then whether it was published."""
        return self._settled()

    @property
    def receivers(self) -> int:
        """Processes the backend handed it to (this one included), once published."""
        self._settled()
        return self._receivers

    @property
    def has_backend(self) -> bool:
        return self._future is not None

    def done(self) -> bool:
        """True once ``remote`` is final (always, without a backend)."""
        return self._future is None or self._settled() is not None

    async def _wait(self) -> "Delivery":
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

    def __await__(self) -> Generator[Any, None, "Delivery"]:
        return self._wait().__await__()

    def __repr__(self) -> str:
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

    def attach(self, channel: str, receiver: Receiver) -> None:
        raise NotImplementedError

    def detach(self, channel: str, receiver: Receiver) -> None:
        raise NotImplementedError

    def publish(self, channel: str, group: Optional[str], frames: str,
                exclude: List[str]) -> "asyncio.Future[Any]":
        raise NotImplementedError

    async def ready(self, timeout: float = 5.0) -> bool:
        return True

    def stats(self) -> Dict[str, Any]:
        return {}

    async def close(self) -> None:
        pass


def validate_backend(backend: Any) -> None:
    """ValueError unless ``backend`` is None or looks like a :class:`BroadcastBackend`."""
    if backend is None:
        return
    missing = [name for name in ("attach", "detach", "publish", "ready", "stats", "close")
               if not callable(getattr(backend, name, None))]
    if missing or isinstance(backend, type):
        raise ValueError("setting broadcast_backend must be None or a backend object "
                         "(e.g. RedisBroadcastBackend(url=...)), not %r" % (backend,))


def validate_channel(channel: Any) -> None:
    """ValueError unless ``channel`` is None or a non-empty string."""
    if channel is not None and not (isinstance(channel, str) and channel):
        raise ValueError("setting broadcast_channel must be None or a non-empty string, not %r"
                         % (channel,))


def _session_of(target: Any) -> "Session":
    """The session behind a SocketConnection (or a session itself)."""
    session = getattr(target, "session", None)
    if session is not None and hasattr(session, "send_payload"):
        return cast("Session", session)
    if hasattr(target, "send_payload") and hasattr(target, "id"):
        return cast("Session", target)
    raise TypeError("expected a SocketConnection or a Session, not %r" % (target,))


def _excluded_ids(exclude: Any) -> FrozenSet[str]:
    """Session ids from connections, sessions or ids (one or an iterable)."""
    if not exclude:
        return frozenset()
    if isinstance(exclude, str) or hasattr(exclude, "session") or hasattr(exclude, "send_payload"):
        exclude = (exclude,)
    ids: Set[str] = set()
    for item in exclude:
        if isinstance(item, str):
            ids.add(item)
        else:
            ids.add(_session_of(item).id)
    return frozenset(ids)


def _check_group(group: Any) -> None:
    if not isinstance(group, str) or not group:
        raise TypeError("group names are non-empty strings, not %r" % (group,))


class ChannelHub:
    """The broadcasters of this process that share one channel of one backend.

    A backend delivers a channel to one receiver; the hub is that receiver and
    hands every message to each of its broadcasters. So several routers on one
    channel (two resources for one connection class, or an explicit shared
    ``broadcast_channel``) are one broadcast domain: each gets every broadcast,
    from other processes and from each other.
    """

    def __init__(self, backend: "BroadcastBackend", channel: str) -> None:
        self.backend = backend
        self.channel = channel
        self.members: "weakref.WeakSet[Broadcaster]" = weakref.WeakSet()
        backend.attach(channel, self.receive)

    @staticmethod
    def of(backend: "BroadcastBackend", channel: str) -> "ChannelHub":
        """The hub of ``channel`` on ``backend``, made on first use (kept on the backend)."""
        hubs: Optional[Dict[str, ChannelHub]] = getattr(backend, "_tornadio_hubs", None)
        if hubs is None:
            hubs = {}
            try:
                backend._tornadio_hubs = hubs  # type: ignore[attr-defined]
            except AttributeError:
                raise TypeError("broadcast_backend %r must accept attributes (no __slots__)"
                                % (backend,)) from None
        hub = hubs.get(channel)
        if hub is None:
            hub = hubs[channel] = ChannelHub(backend, channel)
        return hub

    def join(self, member: "Broadcaster") -> None:
        self.members.add(member)

    def leave(self, member: "Broadcaster") -> None:
        self.members.discard(member)
        if not self.members:
            self.backend.detach(self.channel, self.receive)
            hubs = getattr(self.backend, "_tornadio_hubs", {})
            if hubs.get(self.channel) is self:
                del hubs[self.channel]

    def receive(self, group: Optional[str], frames: str, exclude: Iterable[str]) -> None:
        """A message another process published on the channel."""
        excluded = frozenset(exclude or ())
        for member in list(self.members):
            member.deliver_remote(group, frames, excluded)

    def siblings(self, member: "Broadcaster") -> List["Broadcaster"]:
        """The other broadcasters of this process on the channel."""
        return [other for other in self.members if other is not member]


class Broadcaster:
    """Groups and fan-out for the sessions of one router's container."""

    def __init__(self, container: "SessionContainer", backend: Optional["BroadcastBackend"] = None,
                 channel: str = "default") -> None:
        self._container_ref = weakref.ref(container)
        self.backend = backend
        self.channel = channel
        self._groups: Dict[str, Dict[str, "Session"]] = {}  # group -> {session id: session}
        self._memberships: Dict[str, Set[str]] = {}          # session id -> set of groups
        self.broadcasts = 0      # send_* calls made in this process
        self.remote_received = 0  # messages delivered here on behalf of other processes
        container.on_remove.append(self._session_removed)
        self.hub: Optional[ChannelHub] = None
        if backend is not None:
            self.hub = ChannelHub.of(backend, channel)
            self.hub.join(self)

    @property
    def container(self) -> Optional["SessionContainer"]:
        """The router's session container (None once it is gone)."""
        return self._container_ref()

    # -- groups ---------------------------------------------------------------
    def join(self, conn: Member, group: str) -> bool:
        """Add a connection (or session) to ``group``; False if closed or already in."""
        _check_group(group)
        session = _session_of(conn)
        if not session.accepts_sends:
            return False
        members = self._groups.setdefault(group, {})
        if session.id in members:
            return False
        members[session.id] = session
        self._memberships.setdefault(session.id, set()).add(group)
        return True

    def leave(self, conn: Member, group: str) -> bool:
        """Take a connection out of ``group``; False if it was not in it."""
        _check_group(group)
        return self._remove(_session_of(conn).id, group)

    def _remove(self, session_id: str, group: str) -> bool:
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

    def _session_removed(self, session: "Session") -> None:
        for group in self._memberships.pop(session.id, ()):
            members = self._groups.get(group)
            if members is not None:
                members.pop(session.id, None)
                if not members:
                    del self._groups[group]

    def groups_of(self, conn: Member) -> FrozenSet[str]:
        """The groups a connection is in, as a frozenset."""
        return frozenset(self._memberships.get(_session_of(conn).id, ()))

    def members(self, group: str) -> List["SocketConnection"]:
        """The connections of this process in ``group``, in join order."""
        return [session.connection for session in self._groups.get(group, {}).values()]

    def groups(self) -> List[str]:
        """Names of the groups that have members in this process."""
        return list(self._groups)

    # -- sending --------------------------------------------------------------
    def send_all(self, message: Any, exclude: Exclusion = ()) -> Delivery:
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

    def send_group(self, group: str, message: Any, exclude: Exclusion = ()) -> Delivery:
        """Like :meth:`send_all`, to the members of ``group`` only (in every process)."""
        _check_group(group)
        frames = proto.encode(message)
        excluded = _excluded_ids(exclude)
        local = self._deliver(self._groups.get(group, {}).values(), frames, excluded)
        return self._publish(group, frames, excluded, local)

    @staticmethod
    def _deliver(sessions: Iterable["Session"], frames: str, excluded: AbstractSet[str]) -> int:
        if not frames:
            return 0
        count = 0
        # A copy: a send may close a session (queue overflow), which edits the dict.
        for session in list(sessions):
            if session.accepts_sends and session.id not in excluded:
                session.send_payload(frames)
                count += 1
        return count

    def _publish(self, group: Optional[str], frames: str, excluded: AbstractSet[str],
                 local: int) -> Delivery:
        self.broadcasts += 1
        if self.backend is None or not frames:
            return Delivery(local)
        if self.hub is not None:  # None once closed: still publishes, no longer listens
            for sibling in self.hub.siblings(self):
                local += sibling.deliver_local(group, frames, excluded)
        future = self.backend.publish(self.channel, group, frames, sorted(excluded))
        return Delivery(local, future)

    def _recipients(self, group: Optional[str]) -> Iterable["Session"]:
        if group is None:
            container = self.container
            return container.sessions.values() if container is not None else ()
        return self._groups.get(group, {}).values()

    def deliver_local(self, group: Optional[str], frames: str, excluded: AbstractSet[str]) -> int:
        """A broadcast of another router of this process on the same channel."""
        return self._deliver(self._recipients(group), frames, excluded)

    def deliver_remote(self, group: Optional[str], frames: str,
                       excluded: AbstractSet[str]) -> None:
        """A broadcast published by another process: deliver it to our sessions."""
        self.remote_received += 1
        self._deliver(self._recipients(group), frames, excluded)

    # -- lifecycle --------------------------------------------------------------
    async def ready(self, timeout: float = 5.0) -> bool:
        """Wait (at most ``timeout`` s) until the backend listens; True without one."""
        if self.backend is None:
            return True
        return bool(await self.backend.ready(timeout))

    def stats(self) -> Dict[str, Any]:
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

    def close(self) -> None:
        """Stop listening for other processes' broadcasts (the backend stays open)."""
        if self.hub is not None:
            self.hub.leave(self)
            self.hub = None
        container = self.container
        if container is not None and self._session_removed in container.on_remove:
            container.on_remove.remove(self._session_removed)
