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
        "State",
        "StateError",
        "bus",
        "priority",
    ]


def test_every_error_shares_one_base() -> None:
    for name in ("ChannelFailures", "StartError", "StateError"):
        assert issubclass(getattr(sitebus, name), sitebus.SitebusError)


def test_default_bus_has_nothing_subscribed_at_import() -> None:
    code = "import sitebus; b = sitebus.bus; print(sorted(b._callbacks), b.state.name)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["[]", "STOPPED"]
