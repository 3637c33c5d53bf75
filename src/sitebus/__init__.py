"""sitebus: one process bus for a Python web site.

A ``Bus`` is a state machine whose transitions are published on named
channels; site-wide services are ``Plugin`` objects subscribed to it. ``default_bus``
is the instance for the convention of one bus per process: nothing is
subscribed to it at import, and nothing forces its use. (It is not named
``bus``, which would hide the module ``sitebus.bus``.)
"""

from .bus import Bus, ListenerTiming, State
from .errors import ChannelFailures, SitebusError, StartError, StateError
from .plugin import Plugin, StartOrder, priority

__all__ = [
    "Bus",
    "ChannelFailures",
    "ListenerTiming",
    "Plugin",
    "SitebusError",
    "StartError",
    "StartOrder",
    "State",
    "StateError",
    "default_bus",
    "priority",
]

__version__ = "0.1.0"

default_bus = Bus()
