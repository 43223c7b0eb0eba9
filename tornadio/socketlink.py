"""A detached connection's socket, read and written without a future per read.

Why: IOStream takes a socket out of the event loop once a read is done and
puts it back for the next one, and hands every read over through a future,
a task wake-up and one more loop turn. For a websocket round trip of one small
message that was most of the server's time (docs/architecture.rst).
:class:`SocketLink` keeps one handler registered for the connection's life
and calls its owner as soon as bytes arrive; writes go straight to the
socket, and only what the kernel does not take waits in a buffer.

Until its first read is done, and over TLS always, it reads through the
IOStream it was given, so nothing that IOStream had buffered is lost. Only
public Tornado calls are used (``IOLoop.add_handler`` and friends,
``IOStream.read_bytes``, ``IOStream.socket``), so it runs on any asyncio loop.
"""
import asyncio
import logging
from typing import Callable, List, Optional

from tornado import iostream
from tornado.ioloop import IOLoop

log = logging.getLogger("tornadio.socketlink")

#: Most bytes one read takes from the socket.
READ_CHUNK = 65536

_READ = IOLoop.READ
_WRITE = IOLoop.WRITE


class SocketLink:
    """Bytes in and out of one detached stream, for a callback-driven owner.

    :param stream: the stream ``RequestHandler.detach()`` returned.
    :param on_data: called with each chunk read (never empty). It may call
        :meth:`pause` to stop the reads until it calls :meth:`resume`.
    :param on_closed: called once, when the link closes for whatever reason
        (the client left, a write failed, or :meth:`close`).
    """

    __slots__ = ("stream", "unsent", "closed", "_on_data", "_on_closed", "_io_loop",
                 "_fd", "_chunk", "_direct", "_paused", "_resumed", "_out", "_events",
                 "_flush_callbacks")

    def __init__(self, stream: iostream.IOStream, on_data: Callable[[bytes], None],
                 on_closed: Callable[[], None]) -> None:
        self.stream = stream
        #: Bytes written but not yet taken by the kernel.
        self.unsent = 0
        #: True once :meth:`close` ran (the socket is then closed too).
        self.closed = False
        self._on_data = on_data
        self._on_closed = on_closed
        self._io_loop = IOLoop.current()
        self._fd = -1
        # At least IOStream's own chunk, so that a socket read of its own never
        # leaves it more than was asked for.
        self._chunk = max(READ_CHUNK, stream.read_chunk_size)
        self._direct = False
        self._paused = False
        self._resumed: "Optional[asyncio.Future[None]]" = None
        self._out = bytearray()
        self._events = 0
        self._flush_callbacks: List[Callable[[], None]] = []

    # -- reading ---------------------------------------------------------------
    async def read(self) -> None:
        """Read through the stream until the socket can be read directly.

        Returns once it reads the socket itself (the loop then calls it back
        with no coroutine left), or once the link is closed.
        """
        stream = self.stream
        may_go_direct = not isinstance(stream, iostream.SSLIOStream)
        while not self.closed:
            if self._paused:
                self._resumed = asyncio.get_running_loop().create_future()
                await self._resumed
                continue
            try:
                data = await stream.read_bytes(self._chunk, partial=True)
            except iostream.StreamClosedError:
                self.close()
                return
            if self.closed:
                return
            # A read shorter than asked for emptied IOStream's buffer (a full one
            # may have left more: its header read can buffer several chunks).
            # With no write of its own pending either, the socket can change hands.
            if (may_go_direct and len(data) < self._chunk and not self.unsent
                    and not stream.writing() and not stream.closed()):
                self._go_direct()
            self._on_data(data)
            if self._direct:
                return  # a closed stream raises StreamClosedError on the next read

    def _go_direct(self) -> None:
        stream = self.stream
        self._fd = stream.fileno()  # type: ignore[assignment]
        self._io_loop.remove_handler(self._fd)  # IOStream's own, idle-close listener
        self._direct = True
        self._events = 0 if self._paused else _READ
        self._io_loop.add_handler(self._fd, self._handle_events, self._events)

    def _handle_events(self, fd: int, events: int) -> None:
        if events & _WRITE:
            self._writable()
        if events & _READ and not self.closed and not self._paused:
            self._readable()

    def _readable(self) -> None:
        try:
            data = self.stream.socket.recv(self._chunk)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # reset by the peer: as good as gone
        if data:
            self._on_data(data)
        else:
            self.close()

    def pause(self) -> None:
        """Read nothing more until :meth:`resume`."""
        if self._paused or self.closed:
            return
        self._paused = True
        if self._direct:
            self._set_events(self._events & ~_READ)

    def resume(self) -> None:
        """Read again (a no-op when not paused)."""
        if not self._paused or self.closed:
            return
        self._paused = False
        if self._direct:
            self._set_events(self._events | _READ)
        elif self._resumed is not None:
            resumed, self._resumed = self._resumed, None
            if not resumed.done():
                resumed.set_result(None)

    def _set_events(self, events: int) -> None:
        if events != self._events:
            self._events = events
            self._io_loop.update_handler(self._fd, events)

    # -- writing ---------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send ``data`` after what was written before; what the kernel does not
        take now is counted in :attr:`unsent` until it does. A failed write
        closes the link."""
        if self.closed or not data:
            return
        if not self._direct:
            self._write_to_stream(data)
            return
        if self._out:
            self._out += data
            self.unsent = len(self._out)
            return
        try:
            sent = self.stream.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return
        if sent < len(data):
            self._out += memoryview(data)[sent:]
            self.unsent = len(self._out)
            self._set_events(self._events | _WRITE)

    def _write_to_stream(self, data: bytes) -> None:
        try:
            future = self.stream.write(data)
        except iostream.StreamClosedError:
            self.close()
            return
        size = len(data)
        if future.done():  # the usual case: the socket took it all at once
            self._stream_written(0, future)
            return
        self.unsent += size
        future.add_done_callback(lambda done: self._stream_written(size, done))

    def _stream_written(self, size: int, future: "asyncio.Future[None]") -> None:
        self.unsent -= size
        if not future.cancelled() and future.exception() is not None:
            self.close()  # IOStream closed itself: the client is gone
        elif not self.unsent:
            self._flushed()

    def _writable(self) -> None:
        try:
            sent = self.stream.socket.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        del self._out[:sent]
        self.unsent = len(self._out)
        if not self._out:
            self._set_events(self._events & ~_WRITE)
            self._flushed()

    def after_flush(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once everything written so far has left (at once
        when nothing waits). Dropped if the link closes first."""
        if self.closed:
            return
        if self.unsent:
            self._flush_callbacks.append(callback)
        else:
            callback()

    def _flushed(self) -> None:
        callbacks, self._flush_callbacks = self._flush_callbacks, []
        for callback in callbacks:
            callback()

    # -- closing ---------------------------------------------------------------
    def close(self) -> None:
        """Close the socket at once (anything unsent is dropped); once."""
        if self.closed:
            return
        self.closed = True
        if self._direct:
            self._io_loop.remove_handler(self._fd)
        self._out = bytearray()
        self.unsent = 0
        self._flush_callbacks = []
        self.stream.close()
        resumed, self._resumed = self._resumed, None
        if resumed is not None and not resumed.done():
            resumed.set_result(None)  # the stream-mode reader returns
        self._on_closed()
