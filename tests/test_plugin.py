"""The Plugin base: methods named after channels, priorities, unsubscribe."""

from __future__ import annotations

import pytest

from sitebus import Bus, Plugin, priority


class Recorder(Plugin):
    """Listens to two built-in channels and two custom ones."""

    channels = ("acquire_thread", "autoreload.watch")

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.calls: list[str] = []

    @priority(20)
    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def acquire_thread(self) -> None:
        self.calls.append("acquire_thread")

    def autoreload_watch(self, path: str) -> None:
        self.calls.append(f"watch {path}")

    def helper(self) -> None:
        """Not named after a channel: never subscribed."""


def test_methods_named_after_channels_are_subscribed(bus: Bus) -> None:
    plugin = Recorder(bus)
    plugin.subscribe()
    assert bus.listeners("start") == (plugin.start,)
    assert bus.listeners("stop") == (plugin.stop,)
    assert bus.listeners("graceful") == ()
    bus.publish("acquire_thread")
    bus.publish("autoreload.watch", "templates/*.html")
    assert plugin.calls == ["acquire_thread", "watch templates/*.html"]


def test_priority_decorator_orders_plugin_methods(bus: Bus) -> None:
    order: list[str] = []
    plugin = Recorder(bus)
    plugin.subscribe()
    bus.subscribe("start", lambda: order.append("default 50"))
    bus.subscribe("start", lambda: order.append("10"), priority=10)
    bus.subscribe("start", lambda: order.append(f"plugin {plugin.calls}"), priority=21)
    bus.start()
    assert order == ["10", "plugin ['start']", "default 50"]


def test_unsubscribe_removes_exactly_what_subscribe_added(bus: Bus) -> None:
    plugin = Recorder(bus)
    other = Recorder(bus)
    plugin.subscribe()
    plugin.subscribe()  # twice changes nothing
    other.subscribe()
    plugin.unsubscribe()
    assert bus.listeners("start") == (other.start,)
    assert bus.listeners("autoreload.watch") == (other.autoreload_watch,)
    plugin.unsubscribe()
    assert bus.listeners("stop") == (other.stop,)


def test_priority_attribute_on_a_method_is_honoured(bus: Bus) -> None:
    class Late(Plugin):
        def start(self) -> None:
            pass

        start.priority = 90  # type: ignore[attr-defined]  # the CherryPy-style attribute

    late, early = Late(bus), Recorder(bus)
    late.subscribe()
    early.subscribe()
    assert bus.listeners("start") == (early.start, late.start)


def test_a_plugin_written_the_cherrypy_way_subscribes_and_unsubscribes() -> None:
    """``self.bus = bus`` without ``super().__init__()``, as every CherryPy plugin does, works."""

    class Persistence(Plugin):
        def __init__(self, bus: Bus) -> None:
            self.bus = bus
            self.calls: list[str] = []

        def start(self) -> None:
            self.calls.append("start")

        def stop(self) -> None:
            self.calls.append("stop")

    bus = Bus()
    plugin = Persistence(bus)
    plugin.subscribe()
    with bus.running():
        pass
    plugin.unsubscribe()
    assert plugin.calls == ["start", "stop"]
    assert bus.listeners("start") == ()


def test_a_plugin_without_a_bus_says_what_to_do_at_subscribe() -> None:
    """Neither ``super().__init__(bus)`` nor ``self.bus``: one clear error at subscribe."""

    class Forgetful(Plugin):
        def __init__(self, bus: Bus) -> None:
            pass

        def start(self) -> None:
            pass

    with pytest.raises(TypeError, match=r"super\(\)\.__init__\(bus\) or set self\.bus = bus"):
        Forgetful(Bus()).subscribe()
