"""The core stays small: cheap to import, standard library only, pinned API."""

from __future__ import annotations

import json
import subprocess
import sys

import sitebus

CHECK = """
import json, sys
before = set(sys.modules)
import sitebus, sitebus.bus, sitebus.plugin, sitebus.errors
loaded = sorted(set(sys.modules) - before)
outside = [m for m in loaded
           if m.split(".")[0] not in sys.stdlib_module_names and m.split(".")[0] != "sitebus"]
project = [m for m in loaded if m.split(".")[:2] in (["sitebus", "servers"], ["sitebus", "site"],
           ["sitebus", "cli"], ["sitebus", "compat"], ["sitebus", "plugins"])]
print(json.dumps([outside, project]))
"""


def test_importing_the_core_loads_nothing_outside_the_standard_library() -> None:
    out = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True
    ).stdout
    outside, project = json.loads(out)
    assert outside == []
    assert project == [], "the core must not import servers, site, cli, compat or plugins"


def test_public_api_is_pinned() -> None:
    assert sitebus.__all__ == [
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


def test_import_sitebus_bus_gives_the_module() -> None:
    """The default instance shadows nothing: ``sitebus.bus`` is the module, as pydoc shows."""
    code = (
        "import sitebus.bus as m, sitebus, types; "
        "print(isinstance(m, types.ModuleType), m is sitebus.bus, m.Bus is sitebus.Bus, "
        "isinstance(sitebus.default_bus, m.Bus))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "True", "True", "True"]


def test_every_error_shares_one_base() -> None:
    for name in ("ChannelFailures", "StartError", "StateError"):
        assert issubclass(getattr(sitebus, name), sitebus.SitebusError)


def test_default_bus_has_nothing_subscribed_at_import() -> None:
    code = "import sitebus; b = sitebus.default_bus; print(sorted(b._callbacks), b.state.name)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["[]", "STOPPED"]


SERVE_PATH = """
import io, json, sys
from sitebus import Bus
from sitebus._stderr_log import HeldStderr
from sitebus.cli import _parser
from sitebus.plugins.logs import Logs, LogsOptions
from sitebus.plugins.signals import Signals
from sitebus.servers import Sockets, SocketsOptions
from sitebus.servers.base import ServerOptions, is_asgi, load_engine
_parser().parse_args(["serve", "app:app", "--bind", "127.0.0.1:0"])
bus = Bus()
logs = Logs(bus, LogsOptions(logger="", handlers=(HeldStderr(hold=False, stream=io.StringIO()),)))
logs.subscribe()
sockets = Sockets(bus, SocketsOptions(binds=("127.0.0.1:0", "localhost:0")))
sockets.subscribe()
app = lambda environ, start_response: []
is_asgi(app)
load_engine("wsgiref")(bus, app, sockets, ServerOptions(threads=4)).subscribe()
Signals(bus)
bus.start()
bus.exit()
logs.unsubscribe()
print(json.dumps(sorted(sys.modules)))
"""

# Modules the serve path once loaded for little use, each a millisecond or
# more of every start and restart: dataclasses for option records, the IDNA
# codec for encoding "127.0.0.1", ctypes for a stop's filter. What the
# default engines load anyway is welcome: logging, typing, inspect,
# contextlib, importlib; and json, which the hand-over to a re-exec needs
# loaded before privileges drop.
HEAVY = ["ctypes", "dataclasses", "encodings.idna"]


def _modules_loaded_by(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_the_serve_path_loads_no_heavy_module_it_does_not_need() -> None:
    loaded = _modules_loaded_by(SERVE_PATH)
    # What the engine loads for itself is not the serve path's doing
    # (http.server, under wsgiref, imports shutil).
    engine = _modules_loaded_by(
        "import json, sys, wsgiref.simple_server; print(json.dumps(sorted(sys.modules)))"
    )
    assert [name for name in HEAVY if name in loaded - engine] == []


NO_COMPILE = """
import builtins, json
real, evaluated = builtins.compile, []

def compile(source, filename, mode, *args, **kwargs):
    if mode == "eval":  # typing evaluating a string annotation (imports compile "exec")
        evaluated.append(str(source))
    return real(source, filename, mode, *args, **kwargs)

builtins.compile = compile
import sitebus, sitebus.cli, sitebus.servers, sitebus.plugins.signals
print(json.dumps(evaluated))
"""


def test_importing_the_serve_path_evaluates_no_string_annotation() -> None:
    """A NamedTuple with string annotations makes typing compile() each field.

    The first compile() in a process costs about a millisecond and each
    further one a little more, at every start and restart: keep them off the
    path that ``sitebus serve`` imports.
    """
    out = subprocess.run(
        [sys.executable, "-c", NO_COMPILE], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(out) == []
