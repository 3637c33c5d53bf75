"""``sitebus.compat.wspbus``: CherryPy's bus interface, and CherryPy's own plugins on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cherrypy.process import plugins
from cherrypy.process import wspbus as cherrypy_wspbus

from sitebus import Bus as SiteBus
from sitebus import StartError, State, StateError
from sitebus.compat.wspbus import Bus, ChannelFailures, states

WAIT = 30.0


@pytest.fixture
def bus() -> Iterator[Bus]:
    """A compat bus over a fresh site bus, exited afterwards."""
    compat = Bus(SiteBus(listener_timeout=5.0, logger=None))
    yield compat
    compat.exit()


def test_the_states_are_the_site_bus_states() -> None:
    assert (states.STOPPED, states.STARTING, states.STARTED) == (
        State.STOPPED,
        State.STARTING,
        State.STARTED,
    )
    assert (states.STOPPING, states.EXITING) == (State.STOPPING, State.EXITING)
    assert Bus.states is states


def test_state_follows_every_transition(bus: Bus) -> None:
    seen: list[State] = []
    bus.site_bus.subscribe("state", seen.append)
    assert bus.state is bus.states.STOPPED
    bus.start()
    assert bus.state is bus.states.STARTED
    bus.stop()
    bus.exit()
    assert bus.state is bus.states.EXITING
    assert seen == [State.STARTING, State.STARTED, State.STOPPING, State.STOPPED, State.EXITING]


def test_listeners_is_cherrypys_mapping_of_channels_to_sets(bus: Bus) -> None:
    assert set(bus.listeners) == {"start", "stop", "exit", "graceful", "log", "main"}
    assert all(listeners == set() for listeners in bus.listeners.values())

    def hello() -> None: ...

    bus.subscribe("hello", hello)
    assert bus.listeners["hello"] == {hello}
    bus.unsubscribe("hello", hello)
    bus.unsubscribe("hello", hello)  # not there: nothing happens
    assert bus.listeners["hello"] == set()


def test_subscribe_returns_none_and_decorates_as_cherrypys_does(bus: Bus) -> None:
    calls: list[str] = []
    assert bus.subscribe("hello", lambda: calls.append("plain")) is None

    @bus.subscribe("hello", priority=10)
    def decorated() -> None:
        calls.append("decorated")

    assert decorated is None  # type: ignore[func-returns-value]  # as with CherryPy's bus
    bus.publish("hello")
    assert calls == ["decorated", "plain"]


@pytest.mark.parametrize("channel", ["start", "stop", "graceful", "exit", "custom"])
def test_every_channel_runs_in_ascending_priority(bus: Bus, channel: str) -> None:
    """CherryPy's order, stop and exit included; ties in subscription order."""
    calls: list[str] = []
    for name, priority in (("p80", 80), ("p10", 10), ("p50a", None), ("p50b", 50)):
        bus.subscribe(channel, lambda name=name: calls.append(name), priority)
    if channel == "custom":
        bus.publish("custom")
    else:
        bus.start()
        bus.graceful()
        bus.exit()
    assert calls == ["p10", "p50a", "p50b", "p80"]


def test_a_priority_attribute_is_the_default_priority(bus: Bus) -> None:
    calls: list[str] = []

    def late() -> None:
        calls.append("late")

    late.priority = 90  # type: ignore[attr-defined]  # CherryPy's way of giving one
    bus.subscribe("start", late)
    bus.subscribe("start", lambda: calls.append("default"))
    bus.start()
    assert calls == ["default", "late"]


def test_publish_returns_the_results_in_call_order(bus: Bus) -> None:
    bus.subscribe("ask", lambda x: x * 2, priority=20)
    bus.subscribe("ask", lambda x: x + 1, priority=10)
    assert bus.publish("ask", 5) == [6, 10]
    assert bus.publish("nobody listens") == []


def test_a_failure_runs_every_listener_then_raises_cherrypys_channel_failures(bus: Bus) -> None:
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise ValueError("no such table")

    bus.subscribe("ask", broken, priority=10)
    bus.subscribe("ask", lambda: calls.append("after"), priority=20)
    with pytest.raises(cherrypy_wspbus.ChannelFailures) as caught:
        bus.publish("ask")
    assert calls == ["broken", "after"]
    failures = caught.value
    assert isinstance(failures, ChannelFailures)
    assert bool(failures)
    (error,) = failures.get_instances()
    assert isinstance(error, ValueError) and str(error) == "no such table"
    assert failures.failures == ((broken, error),)


def test_the_site_bus_and_the_compat_bus_hear_each_other(bus: Bus) -> None:
    """The site bus's publish reaches CherryPy listeners; CherryPy's reaches site listeners."""
    heard: list[str] = []
    bus.subscribe("acquire_thread", lambda: heard.append("cherrypy") or "cp")
    bus.site_bus.subscribe("acquire_thread", lambda: heard.append("site") or "site", priority=90)
    assert bus.site_bus.publish("acquire_thread")[1] == "site"
    assert bus.publish("acquire_thread") == ["cp", "site"]
    assert heard == ["cherrypy", "site", "cherrypy", "site"]


def test_the_cherrypy_listeners_start_as_one_at_the_default_priority(bus: Bus) -> None:
    """Whatever their CherryPy priorities, they start before the site's servers, stop after."""
    calls: list[str] = []
    bus.subscribe("start", lambda: calls.append("cherrypy start"), priority=75)
    bus.subscribe("stop", lambda: calls.append("cherrypy stop"), priority=75)
    bus.site_bus.subscribe("start", lambda: calls.append("server start"), priority=70)
    bus.site_bus.subscribe("stop", lambda: calls.append("server stop"), priority=70)
    bus.start()
    bus.stop()
    assert calls == ["cherrypy start", "server start", "server stop", "cherrypy stop"]


def test_each_transition_runs_its_listeners_once(bus: Bus) -> None:
    """Unlike CherryPy's, exit() does not publish stop again on a stopped bus."""
    calls: list[str] = []
    for channel in ("start", "stop", "graceful", "exit"):
        bus.subscribe(channel, lambda channel=channel: calls.append(channel))
    bus.graceful()  # not started: nothing
    bus.start()
    bus.start()
    bus.graceful()
    bus.stop()
    bus.stop()
    bus.exit()
    bus.exit()
    assert calls == ["start", "graceful", "stop", "exit"]


def test_a_failed_start_rolls_back_and_raises_start_error(bus: Bus) -> None:
    """No os._exit(70): the bus is STOPPED again and the caller decides."""
    calls: list[str] = []

    def broken() -> None:
        raise OSError("the database is gone")

    bus.subscribe("start", broken)
    bus.subscribe("stop", lambda: calls.append("stop"))
    with pytest.raises(StartError, match="the database is gone"):
        bus.start()
    assert bus.state is states.STOPPED
    assert calls == ["stop"]


def test_a_failed_stop_raises_channel_failures_after_every_listener(bus: Bus) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise OSError("cannot flush")

    bus.subscribe("stop", broken, priority=10)
    bus.subscribe("stop", lambda: calls.append("later"), priority=20)
    bus.start()
    with pytest.raises(cherrypy_wspbus.ChannelFailures) as caught:
        bus.stop()
    assert calls == ["later"] and bus.state is states.STOPPED
    assert [type(e) for e in caught.value.get_instances()] == [OSError]


def test_exit_while_starting_is_refused(bus: Bus) -> None:
    """From a start listener, CherryPy's exit() would os._exit(70); here it raises."""
    errors: list[BaseException] = []

    def exit_early() -> None:
        try:
            bus.exit()
        except StateError as exc:
            errors.append(exc)

    bus.subscribe("start", exit_early)
    bus.start()
    assert [str(e) for e in errors] == ["cannot exit: the bus is starting"]


def test_log_reaches_cherrypys_log_listeners_with_the_traceback(bus: Bus) -> None:
    logged: list[tuple[str, int]] = []
    bus.subscribe("log", lambda msg, level: logged.append((msg, level)))
    bus.log("plain")
    try:
        raise KeyError("missing")
    except KeyError:
        bus.log("failed", 40, traceback=True)
    bus.site_bus.log("from the site bus", 30)
    assert logged[0] == ("plain", 20)
    message, level = logged[1]
    assert level == 40 and message.startswith("failed\nTraceback (most recent call last):")
    assert message.rstrip().endswith("KeyError: 'missing'")
    assert logged[2] == ("from the site bus", 30)


def test_wait_wakes_on_the_transition(bus: Bus) -> None:
    bus.start()
    waiting = threading.Event()
    returned: list[State] = []

    def waiter() -> None:
        waiting.set()
        bus.wait([states.STOPPED, states.EXITING])
        returned.append(bus.state)

    thread = threading.Thread(target=waiter)
    thread.start()
    assert waiting.wait(WAIT)
    bus.stop()
    thread.join(WAIT)
    assert not thread.is_alive() and returned


def test_wait_with_a_channel_publishes_it_while_waiting(bus: Bus) -> None:
    """As CherryPy's: the channel every interval; here the listener ends the wait itself."""
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 3:
            bus.exit()

    bus.subscribe("tick", tick)
    bus.start()
    bus.wait(states.EXITING, interval=0.01, channel="tick")
    assert len(ticks) == 3 and bus.state is states.EXITING


def test_block_publishes_main_every_interval_until_exit(bus: Bus) -> None:
    """block() in the main thread; the third ``main`` exits the bus, which ends block()."""
    ticks: list[str] = []

    def main() -> None:
        ticks.append(threading.current_thread().name)
        if len(ticks) == 3:
            bus.exit()

    bus.subscribe("main", main)
    bus.start()
    assert bus.block(interval=0.01) is None  # type: ignore[func-returns-value]  # as CherryPy's
    assert ticks == ["wspbus main"] * 3 and bus.state is states.EXITING


def test_start_with_callback_calls_back_once_started(bus: Bus) -> None:
    seen: list[tuple[State, Any]] = []
    thread = bus.start_with_callback(
        lambda *args, **kwargs: seen.append((bus.state, (args, kwargs))), (1, 2), {"x": 3}
    )
    thread.join(WAIT)
    assert thread.name.startswith("Bus Callback ")
    assert seen == [(states.STARTED, ((1, 2), {"x": 3}))]


def test_start_with_callback_after_a_failed_start_calls_nothing(bus: Bus) -> None:
    seen: list[str] = []

    def broken() -> None:
        raise OSError("no")

    bus.subscribe("start", broken)
    with pytest.raises(StartError):
        bus.start_with_callback(lambda: seen.append("called"))
    for thread in threading.enumerate():
        if thread.name.startswith("Bus Callback "):
            thread.join(WAIT)
    assert seen == []


def test_bind_moves_the_cherrypy_listeners_to_another_site_bus(bus: Bus) -> None:
    calls: list[str] = []
    bus.subscribe("start", lambda: calls.append("start"))
    first = bus.site_bus
    second = SiteBus(logger=None)
    bus.bind(second)
    first.start()
    assert calls == [] and bus.state is State.STOPPED
    bus.start()
    assert calls == ["start"] and second.state is State.STARTED
    with pytest.raises(StateError, match="cannot move the CherryPy engine: its bus is started"):
        bus.bind(first)
    first.exit()


# -- CherryPy's own plugins ----------------------------------------------------


def test_monitor_runs_its_callback_on_a_thread_while_started(bus: Bus) -> None:
    """Monitor and its BackgroundTask: started by start, stopped by stop, as on CherryPy's bus."""
    ran = threading.Event()
    monitor = plugins.Monitor(bus, ran.set, frequency=0.01, name="test monitor")
    monitor.subscribe()
    bus.start()
    assert ran.wait(WAIT)
    thread = monitor.thread
    assert isinstance(thread, plugins.BackgroundTask) and thread.name == "test monitor"
    bus.graceful()  # stops the thread and starts a new one
    assert monitor.thread is not thread and not thread.running
    thread.join(WAIT)
    replacement = monitor.thread
    bus.stop()
    assert monitor.thread is None and not replacement.running
    replacement.join(WAIT)


def test_the_thread_manager_numbers_each_thread_once(bus: Bus) -> None:
    manager = plugins.ThreadManager(bus)
    manager.subscribe()
    assert {"acquire_thread", "start_thread", "release_thread", "stop_thread"} <= set(bus.listeners)
    events: list[tuple[str, int]] = []
    bus.subscribe("start_thread", lambda i: events.append(("start", i)))
    bus.subscribe("stop_thread", lambda i: events.append(("stop", i)))
    bus.start()
    bus.publish("acquire_thread")
    bus.site_bus.publish("acquire_thread")  # as sitebus's servers announce request threads
    other = threading.Thread(target=lambda: bus.publish("acquire_thread"))
    other.start()
    other.join(WAIT)
    assert events == [("start", 1), ("start", 2)]
    bus.publish("release_thread")
    assert events[-1] == ("stop", 1)
    bus.stop()
    assert events[-1] == ("stop", 2) and manager.threads == {}


def test_a_simple_plugin_subscribes_to_the_channels_the_bus_knows(bus: Bus) -> None:
    class Persistence(plugins.SimplePlugin):
        def __init__(self, bus: Bus) -> None:
            super().__init__(bus)
            self.calls: list[str] = []

        def start(self) -> None:
            self.calls.append("start")

        start.priority = 20  # type: ignore[attr-defined]

        def stop(self) -> None:
            self.calls.append("stop")

        def main(self) -> None:
            self.calls.append("main")

    plugin = Persistence(bus)
    plugin.subscribe()
    assert bus._priorities[("start", plugin.start)] == 20
    bus.start()
    bus.stop()
    plugin.unsubscribe()
    bus.start()
    assert plugin.calls == ["start", "stop"]
