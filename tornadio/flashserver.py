"""The Flash socket policy: a small TCP server, and the pieces the inline path shares.

Before the Flash web-socket-js polyfill may open its socket, the Flash Player
connects to ``HOST:843`` (then to the socket's own port), sends the 23 bytes
``<policy-file-request/>\\0`` and expects an XML policy followed by ``\\0``
(docs/protocol.rst §4.2). Each connection here is served by its own coroutine and
bounded in time and size, so a silent or garbage client delays nobody else.
"""
import logging
import os
import re
from datetime import timedelta
from typing import Any, Callable, Iterable, List, Optional, Set, Tuple, Union
from urllib.parse import urlsplit

import tornado.util
from tornado import gen, iostream, netutil
from tornado.tcpserver import TCPServer

log = logging.getLogger("tornadio.flashserver")

#: Where the Flash Player asks first: the default port of FlashPolicyServer.
POLICY_PORT = 843
#: What the Flash Player sends on a fresh connection.
POLICY_REQUEST = b"<policy-file-request/>\0"
#: Total time a client has to send the request.
READ_TIMEOUT = 5.0
#: After the 22 characters without the NUL: how long to wait for the NUL.
NUL_GRACE = 0.5
#: How long writing the answer may take before the connection is dropped.
WRITE_TIMEOUT = 5.0

_PREAMBLE = ('<?xml version="1.0"?>\n'
             '<!DOCTYPE cross-domain-policy SYSTEM '
             '"http://www.macromedia.com/xml/dtds/cross-domain-policy.dtd">\n'
             '<cross-domain-policy>\n')
_CLOSING = '</cross-domain-policy>\n'
# What may go into a domain="" or to-ports="" attribute unescaped.
_DOMAIN_OK = re.compile(r"[A-Za-z0-9.*\-]+\Z")
_PORTS_OK = re.compile(r"[0-9*,\-]+\Z")

#: The ``allowed_origins`` forms (see tornadio.origins): None, a list, a callable.
OriginPolicy = Union[None, Iterable[str], Callable[[str], Any]]
#: ``to-ports``: an int, ints, or a Flash port string ("8001,9000-9010"); None is "*".
Ports = Union[None, int, str, Iterable[int]]
#: A file path as ``open`` takes it.
FilePath = Union[str, "os.PathLike[str]"]


def _origin_host(entry: str) -> str:
    """The host part of one ``allowed_origins`` entry (see tornadio.origins)."""
    entry = entry.strip().lower()
    if entry == "*":
        return "*"
    if "://" in entry:
        return urlsplit(entry).hostname or ""
    host, _, port = entry.rpartition(":")
    if host and (port.isdigit() or port == "*"):
        return host
    return entry


def policy_domains(allowed_origins: OriginPolicy) -> List[str]:
    """The ``domain`` values for ``allowed_origins``, in order, without repeats.

    ``None`` (the same-host default, which a policy file cannot express: the
    policy request names no host), ``"*"`` and a callable (which cannot be
    listed) give ``*``; the flashsocket handshake still applies the policy to
    the Origin of every connection.
    """
    if allowed_origins is None or allowed_origins == "*" or callable(allowed_origins):
        return ["*"]
    domains: List[str] = []
    for entry in allowed_origins:
        host = _origin_host(entry)
        if not _DOMAIN_OK.match(host):
            log.warning("allowed origin %r cannot be expressed in a Flash policy; skipped",
                        entry)
            continue
        if host == "*":
            return ["*"]
        if host not in domains:
            domains.append(host)
    return domains


def _ports_value(ports: Ports) -> str:
    if ports is None:
        return "*"
    if isinstance(ports, int):
        ports = [ports]
    if isinstance(ports, str):
        value = ports.replace(" ", "")
    else:
        value = ",".join(str(int(port)) for port in sorted(set(ports)))
    if not value or not _PORTS_OK.match(value):
        raise ValueError("bad to-ports value %r" % (ports,))
    return value


def policy_xml(allowed_origins: OriginPolicy = None, ports: Ports = None) -> str:
    """The policy document (str, without the trailing NUL).

    One ``<allow-access-from>`` per allowed origin host (``*`` when origins are
    unrestricted); ``to-ports`` lists ``ports`` (an int, a list of ints, or a
    Flash port string such as ``"8001,9000-9010"``), ``*`` when None.

    :raises ValueError: ``ports`` cannot be written as a ``to-ports`` value
    """
    to_ports = _ports_value(ports)
    lines = ['<allow-access-from domain="%s" to-ports="%s"/>\n' % (domain, to_ports)
             for domain in policy_domains(allowed_origins)]
    return _PREAMBLE + "".join(lines) + _CLOSING


def policy_bytes(policy_file: Optional[FilePath] = None, allowed_origins: OriginPolicy = None,
                 ports: Ports = None) -> bytes:
    """What goes on the wire: the bytes of ``policy_file``, else the XML
    :func:`policy_xml` makes from ``allowed_origins`` and ``ports``; plus NUL.

    :raises OSError: ``policy_file`` cannot be read
    :raises ValueError: bad ``ports``
    """
    if policy_file is not None:
        with open(policy_file, "rb") as f:
            body = f.read()
        body = body.rstrip(b"\0")
    else:
        body = policy_xml(allowed_origins, ports).encode("ascii")
    return body + b"\0"


async def read_policy_request(stream: iostream.IOStream, timeout: float = READ_TIMEOUT,
                              received: bytes = b"") -> bool:
    """Read the policy request from ``stream``; True when it was one.

    ``received`` are bytes already taken from the stream. Stops at the first
    byte that cannot be part of the request, at EOF, or after ``timeout``
    seconds; the 22 characters without their NUL count as a request when
    nothing follows them for a short while.
    """
    loop_time = stream.io_loop.time
    deadline = loop_time() + timeout
    buffer = bytes(received)
    while len(buffer) < len(POLICY_REQUEST):
        if not POLICY_REQUEST.startswith(buffer):
            return False
        remaining = deadline - loop_time()
        if buffer == POLICY_REQUEST[:-1]:
            remaining = min(remaining, NUL_GRACE)
        if remaining <= 0:
            break
        try:
            chunk = await gen.with_timeout(
                timedelta(seconds=remaining),
                stream.read_bytes(len(POLICY_REQUEST) - len(buffer), partial=True),
                quiet_exceptions=iostream.StreamClosedError)
        except (tornado.util.TimeoutError, iostream.StreamClosedError):
            break
        buffer += chunk
    return buffer == POLICY_REQUEST or buffer == POLICY_REQUEST[:-1]


async def answer_policy_request(stream: iostream.IOStream, policy: bytes,
                                timeout: float = READ_TIMEOUT, received: bytes = b"") -> bool:
    """Serve one policy connection: read the request, answer it, close.

    :param stream: the connection's ``IOStream``, closed on return
    :param policy: the bytes to answer (see :func:`policy_bytes`)
    :param timeout: seconds the client has to send its request
    :param received: bytes already taken from the stream
    :returns: True when a policy request was answered; never raises for
        the client's misbehaviour
    """
    answered = False
    try:
        if await read_policy_request(stream, timeout, received):
            if not stream.closed():
                await gen.with_timeout(timedelta(seconds=WRITE_TIMEOUT), stream.write(policy),
                                       quiet_exceptions=iostream.StreamClosedError)
                answered = True
    except (tornado.util.TimeoutError, iostream.StreamClosedError):
        pass
    finally:
        stream.close()
    return answered


def bind_or_warn(server: TCPServer, port: int, address: Optional[str], what: str) -> Optional[int]:
    """Bind ``port`` on ``address`` for ``server``; on failure log one warning.

    :param what: the server's name in that warning
    :returns: the bound port (useful with port 0), or None when it could not be bound
    """
    try:
        sockets = netutil.bind_sockets(port, address or None)
    except OSError as exc:
        hint = " (ports below 1024 need root)" if 0 < port < 1024 else ""
        log.warning("%s: cannot listen on %s:%d%s: %s", what, address or "*", port, hint, exc)
        return None
    server.add_sockets(sockets)
    bound: int = sockets[0].getsockname()[1]
    return bound


class FlashPolicyServer(TCPServer):
    """Answers ``<policy-file-request/>`` on its own port (843 by default).

    ``policy_file``: a file whose bytes are served as they are; without one the
    policy is generated by :func:`policy_xml` from ``allowed_origins`` (same
    forms as the router setting) and ``socket_ports`` (the socket.io port(s)
    Flash may connect to; ``*`` when None). ``address`` is the interface to
    bind (``''``: all). A port that cannot be bound (843 without root, or one
    in use) logs a warning; ``listening`` is then False. ``io_loop`` is
    accepted for 2011 code (``FlashPolicyServer(io_loop=..., port=...,
    policy_file=...)``) and ignored: Tornado 6 has one current IOLoop.

    :raises OSError: ``policy_file`` cannot be read
    """

    #: Seconds a client has to send its request before it is dropped.
    read_timeout = READ_TIMEOUT

    def __init__(self, port: int = POLICY_PORT, policy_file: Optional[FilePath] = None,
                 address: str = "", allowed_origins: OriginPolicy = None,
                 socket_ports: Ports = None, io_loop: Any = None) -> None:
        # A few hundred bytes is all a policy client ever needs to send.
        super().__init__(max_buffer_size=4096, read_chunk_size=1024)
        self.policy = policy_bytes(policy_file, allowed_origins, socket_ports)
        self.address = address
        self._streams: Set[iostream.IOStream] = set()
        self.port = bind_or_warn(self, port, address, "Flash policy server")
        self.listening = self.port is not None
        if self.listening:
            log.info("Flash policy server listening on %s:%d", address or "*", self.port)

    async def handle_stream(self, stream: iostream.IOStream, address: Tuple[Any, ...]) -> None:
        self._streams.add(stream)
        try:
            answered = await answer_policy_request(stream, self.policy, self.read_timeout)
        finally:
            self._streams.discard(stream)
        if not answered:
            log.debug("policy connection from %s: no policy request", address[0])

    def stop(self) -> None:
        """Stop listening and drop the connections still being served."""
        super().stop()
        self.listening = False
        for stream in list(self._streams):
            stream.close()
