"""HTTP servers as plugins: sockets the bus binds, and one module per engine.

``Sockets`` binds (or adopts across a re-exec) the listening sockets at start;
a ``Server`` subclass serves an app on them with one engine. Engines are
imported only when chosen: ``load_engine("cheroot")``.
"""

from ._address import Address, parse_address
from .base import ENGINES, Server, ServerOptions, as_asgi, load_engine
from .sockets import Listener, Sockets, SocketsOptions

__all__ = [
    "ENGINES",
    "Address",
    "Listener",
    "Server",
    "ServerOptions",
    "Sockets",
    "SocketsOptions",
    "as_asgi",
    "load_engine",
    "parse_address",
]
