"""TornadIO: a Socket.IO 0.6 server for Tornado 6."""
from tornadio.conn import ConnectionInfo, SocketConnection
from tornadio.proto import DecodeError, EncodeError, ProtocolError
from tornadio.router import Router, get_router
from tornadio.transport import TransportError
from tornadio.server import SocketServer

__version__ = "1.0.0"

__all__ = ["SocketConnection", "ConnectionInfo", "get_router", "Router", "SocketServer",
           "TransportError", "ProtocolError", "DecodeError", "EncodeError", "__version__"]
