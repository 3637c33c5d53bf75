"""The bus's rules, one test each, in this process."""

from __future__ import annotations

import logging
import sqlite3
import sys
import threading
from typing import Any

import pytest

from sitebus import Bus, ChannelFailures, StartError, State, StateError


def record(log: list[str], name: str) -> Any:
    def listener(*args: Any) -> str:
        log.append(name)
        return name

    listener.__qualname__ = name
    return listener


def test_new_bus_is_stopped_with_nothing_subscribed(bus: Bus) -> None:
    assert bus.state is State.STOPPED
    for channel in ("start", "stop", "exit", "log", "state", "graceful"):
        assert bus.listeners(channel) == ()


def test_transitions_are_published_on_the_state_channel(bus: Bus) -> None:
    seen: list[State] = []
    bus.subscribe("state", seen.append)
    bus.start()
    bus.stop()
    bus.exit()
    assert seen == [
        State.STARTING,
        State.STARTED,
        State.STOPPING,
        State.STOPPED,
        State.EXITING,
    ]


def test_start_on_started_and_stop_on_stopped_do_nothing(bus: Bus) -> None:
    calls: list[str] = []
    bus.subscribe("start", record(calls, "start"))
    bus.subscribe("stop", record(calls, "stop"))
    bus.stop()
    bus.start()
    bus.start()
    bus.stop()
    bus.stop()
    assert calls == ["start", "stop"]


def test_second_exit_does_not_run_exit_listeners_again(bus: Bus) -> None:
    calls: list[str] = []
    bus.subscribe("exit", record(calls, "exit"))
    bus.subscribe("stop", record(calls, "stop"))
    bus.start()
    bus.exit()
    bus.exit()
    assert calls == ["stop", "exit"]
    assert bus.state is State.EXITING


def test_start_after_exit_is_an_error_naming_the_state(bus: Bus) -> None:
    bus.exit()
    with pytest.raises(StateError, match="cannot start: the bus is exiting"):
        bus.start()


def test_listeners_run_by_priority_then_subscription_order(bus: Bus) -> None:
    calls: list[str] = []
    bus.subscribe("start", record(calls, "b50"))
    bus.subscribe("start", record(calls, "a10"), priority=10)
    bus.subscribe("start", record(calls, "c50"))
    bus.subscribe("start", record(calls, "d90"), priority=90)
    bus.start()
    assert calls == ["a10", "b50", "c50", "d90"]


def test_stop_and_exit_run_in_exact_reverse_order_ties_included(bus: Bus) -> None:
    calls: list[str] = []
    for channel in ("stop", "exit"):
        bus.subscribe(channel, record(calls, f"{channel}-first50"))
        bus.subscribe(channel, record(calls, f"{channel}-10"), priority=10)
        bus.subscribe(channel, record(calls, f"{channel}-second50"))
    bus.start()
    bus.exit()
    assert calls == [
        "stop-second50",
        "stop-first50",
        "stop-10",
        "exit-second50",
        "exit-first50",
        "exit-10",
    ]


def test_subscribe_works_as_decorator_and_reads_priority_attribute(bus: Bus) -> None:
    calls: list[str] = []

    @bus.subscribe("start")
    def late() -> None:
        calls.append("late")

    @bus.subscribe("start", priority=5)
    def early() -> None:
        calls.append("early")

    def marked() -> None:
        calls.append("marked")

    marked.priority = 1  # type: ignore[attr-defined]  # the attribute @priority sets
    bus.subscribe("start", marked)
    bus.start()
    assert calls == ["marked", "early", "late"]
    assert late.__name__ == "late", "the decorator returns the function itself"


def test_subscribing_again_moves_the_listener_to_its_new_priority(bus: Bus) -> None:
    calls: list[str] = []
    first = record(calls, "first")
    bus.subscribe("go", first)
    bus.subscribe("go", record(calls, "second"))
    bus.subscribe("go", first, priority=90)
    bus.publish("go")
    assert calls == ["second", "first"]


def test_unsubscribe_removes_only_that_listener(bus: Bus) -> None:
    calls: list[str] = []
    gone = record(calls, "gone")
    bus.subscribe("go", gone)
    bus.subscribe("go", record(calls, "kept"))
    bus.unsubscribe("go", gone)
    bus.unsubscribe("go", gone)  # a second time does nothing
    bus.unsubscribe("never", gone)
    bus.publish("go")
    assert calls == ["kept"]


def test_publish_returns_results_in_call_order(bus: Bus) -> None:
    bus.subscribe("sum", lambda a, b: a + b, priority=20)
    bus.subscribe("sum", lambda a, b: a * b, priority=10)
    bus.subscribe("sum", lambda a, b=0: f"{a}-{b}", priority=30)
    assert bus.publish("sum", 3, b=4) == [12, 7, "3-4"]
    assert bus.publish("nobody-listens", 1) == []


def test_publish_calls_every_listener_then_raises_all_failures(bus: Bus) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise ValueError("bad value")

    def also_broken() -> None:
        raise KeyError("missing")

    bus.subscribe("go", broken)
    bus.subscribe("go", record(calls, "middle"))
    bus.subscribe("go", also_broken)
    bus.subscribe("go", record(calls, "last"))
    with pytest.raises(ChannelFailures) as caught:
        bus.publish("go")
    assert calls == ["middle", "last"]
    failures = caught.value
    assert failures.channel == "go"
    assert [(fn, type(exc)) for fn, exc in failures.failures] == [
        (broken, ValueError),
        (also_broken, KeyError),
    ]
    assert "broken" in str(failures) and "bad value" in str(failures)
    assert any("test_bus" in note and "broken" in note for note in failures.exceptions[0].__notes__)


def test_channel_failures_work_with_except_star(bus: Bus) -> None:
    def broken() -> None:
        raise ValueError("bad")

    bus.subscribe("go", broken)
    caught: list[BaseException] = []
    try:
        bus.publish("go")
    except* ValueError as group:
        caught.extend(group.exceptions)
    assert [type(e) for e in caught] == [ValueError]


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_interrupt_and_exit_propagate_at_once(bus: Bus, error: type[BaseException]) -> None:
    calls: list[str] = []

    def interrupt() -> None:
        raise error

    bus.subscribe("go", interrupt)
    bus.subscribe("go", record(calls, "after"))
    with pytest.raises(error):
        bus.publish("go")
    assert calls == []


def test_start_failure_rolls_back_and_names_the_listener(
    bus: Bus, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    class Database:
        def start(self) -> None:
            raise OSError("unable to open database file")

    bus.subscribe("start", record(calls, "first"), priority=10)
    bus.subscribe("start", Database().start, priority=20)
    bus.subscribe("start", record(calls, "never"), priority=30)
    bus.subscribe("stop", record(calls, "stop"))
    with caplog.at_level(logging.ERROR, logger="sitebus"), pytest.raises(StartError) as caught:
        bus.start()
    assert bus.state is State.STOPPED
    assert calls == ["first", "stop"]
    assert "Database.start" in str(caught.value)
    assert "unable to open database file" in str(caught.value)
    assert caught.value.listener.endswith("Database.start")
    assert isinstance(caught.value.__cause__, OSError)
    assert any(
        "Start failed in" in r.message and "Database.start" in r.message for r in caplog.records
    )


def test_bus_can_start_again_after_a_failed_start(bus: Bus) -> None:
    attempts: list[int] = []

    def flaky() -> None:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first time fails")

    bus.subscribe("start", flaky)
    with pytest.raises(StartError):
        bus.start()
    bus.start()
    assert bus.state is State.STARTED


def test_interrupt_during_start_tears_down_and_propagates(bus: Bus) -> None:
    calls: list[str] = []

    def interrupted() -> None:
        raise KeyboardInterrupt

    bus.subscribe("start", interrupted)
    bus.subscribe("stop", record(calls, "stop"))
    with pytest.raises(KeyboardInterrupt):
        bus.start()
    assert calls == ["stop"]
    assert bus.state is State.STOPPED


def test_stop_runs_every_listener_then_raises_failures_when_stopped(bus: Bus) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("cannot close")

    bus.subscribe("stop", record(calls, "first-subscribed"))
    bus.subscribe("stop", broken)
    bus.start()
    with pytest.raises(ChannelFailures, match="cannot close"):
        bus.stop()
    assert calls == ["first-subscribed"]
    assert bus.state is State.STOPPED


def test_a_stop_listener_past_its_bound_is_named_while_it_still_runs() -> None:
    """The watchdog names the overrunning listener; the stop goes on in the caller's thread."""
    bus = Bus(listener_timeout=0.2)
    named = threading.Event()
    lines: list[str] = []
    calls: list[str] = []

    class Named(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "still running" in record.getMessage():
                lines.append(record.getMessage())
                named.set()

    def wedged() -> None:
        assert named.wait(30), "the watchdog never named the listener"
        calls.append("wedged")

    handler = Named(logging.WARNING)
    logging.getLogger("sitebus").addHandler(handler)
    bus.subscribe("stop", record(calls, "runs-after"), priority=10)
    bus.subscribe("stop", wedged, priority=20)
    bus.start()
    try:
        bus.stop()
    finally:
        logging.getLogger("sitebus").removeHandler(handler)
    assert calls == ["wedged", "runs-after"]
    assert bus.state is State.STOPPED
    (line,) = lines
    assert "wedged" in line and "'stop'" in line


def test_stop_and_exit_listeners_run_in_the_thread_that_calls_stop_and_exit() -> None:
    """A thread-affine resource (a sqlite3 connection) opened at start closes at stop."""
    bus = Bus()  # with the default bounds, which once moved teardown to a helper thread
    threads: dict[str, threading.Thread] = {}
    connection: list[sqlite3.Connection] = []

    def open_db() -> None:
        threads["start"] = threading.current_thread()
        connection.append(sqlite3.connect(":memory:"))

    def close_db() -> None:
        threads["stop"] = threading.current_thread()
        connection.pop().close()  # raises ProgrammingError from any other thread

    bus.subscribe("start", open_db, priority=20)
    bus.subscribe("stop", close_db, priority=20)
    bus.subscribe("exit", lambda: threads.setdefault("exit", threading.current_thread()))
    bus.start()
    bus.exit()
    here = threading.current_thread()
    assert threads == {"start": here, "stop": here, "exit": here}


def test_a_failed_start_is_published_on_start_failed_before_the_rollback() -> None:
    """Code that must know of a failed start subscribes to an event, never parses the log."""
    bus = Bus(logger=None)
    seen: list[tuple[str, str, str]] = []

    def bind() -> None:
        raise OSError("port in use")

    bus.subscribe("start", bind, priority=60)
    bus.subscribe(
        "start_failed", lambda name, exc: seen.append(("failed", name.rsplit(".", 1)[-1], str(exc)))
    )
    bus.subscribe("stop", lambda: seen.append(("stop", "", "")))
    with pytest.raises(StartError):
        bus.start()
    assert seen == [("failed", "bind", "port in use"), ("stop", "", "")]


def test_exit_turns_failed_teardown_into_status_one(bus: Bus) -> None:
    def broken() -> None:
        raise RuntimeError("cannot close")

    bus.subscribe("exit", broken)
    bus.request_exit(0)
    assert bus.block() == 1


def test_timings_record_each_listener_of_the_last_start_and_stop(bus: Bus) -> None:
    bus.subscribe("start", record([], "open_db"), priority=10)
    bus.subscribe("start", record([], "bind"), priority=20)
    bus.subscribe("stop", record([], "close_db"))
    bus.start()
    bus.stop()
    assert [t.listener for t in bus.timings["start"]] == ["test_bus.open_db", "test_bus.bind"]
    assert [t.listener for t in bus.timings["stop"]] == ["test_bus.close_db"]
    assert all(t.seconds >= 0 and t.error is None for t in bus.timings["start"])


def test_graceful_is_published_only_while_started(bus: Bus) -> None:
    calls: list[str] = []
    bus.subscribe("graceful", record(calls, "graceful"))
    bus.graceful()
    bus.start()
    bus.graceful()
    bus.stop()
    assert calls == ["graceful"]


def test_running_starts_and_always_stops(bus: Bus) -> None:
    with bus.running() as running:
        assert running is bus
        assert bus.state is State.STARTED
    assert bus.state is State.STOPPED
    with pytest.raises(RuntimeError), bus.running():
        raise RuntimeError("the body failed")
    assert bus.state is State.STOPPED


def test_wait_wakes_on_a_transition_made_by_another_thread(bus: Bus) -> None:
    bus.start()
    stopper = threading.Thread(target=bus.stop)
    stopper.start()
    assert bus.wait(State.STOPPED, timeout=30)
    stopper.join()


def test_wait_returns_false_on_timeout_and_true_when_already_there(bus: Bus) -> None:
    assert bus.wait(State.STOPPED, timeout=0)
    assert not bus.wait(State.STARTED, timeout=0.01)
    assert bus.wait([State.STARTED, State.STOPPED], timeout=0)


def test_wait_sees_a_state_the_bus_already_passed_through() -> None:
    """A waiter that only runs after STARTED has already given way to STOPPED
    still reports STARTED: it wakes on the transition, not on a later look."""
    bus = Bus(listener_timeout=None)
    entered = threading.Event()
    waited: list[bool] = []

    def waiter() -> None:
        entered.set()
        waited.append(bus.wait(State.STARTED, timeout=30))

    thread = threading.Thread(target=waiter)
    interval = sys.getswitchinterval()
    # With a long switch interval neither thread is preempted: the waiter runs
    # from entered.set() into its wait, then this thread starts and stops the
    # bus without ever yielding, so the waiter checks only after STOPPED.
    sys.setswitchinterval(30)
    try:
        thread.start()
        entered.wait(30)
        bus.start()
        bus.stop()
    finally:
        sys.setswitchinterval(interval)
    thread.join(30)
    assert waited == [True]


def test_log_publishes_and_forwards_to_the_stdlib_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = Bus()
    seen: list[tuple[str, int, BaseException | None]] = []
    bus.subscribe("log", lambda msg, level, exc: seen.append((msg, level, exc)))
    with caplog.at_level(logging.DEBUG, logger="sitebus"):
        bus.log("hello", logging.WARNING)
        try:
            raise ValueError("oops")
        except ValueError:
            bus.log("failed", logging.ERROR, exc_info=True)
    assert seen[0] == ("hello", logging.WARNING, None)
    assert seen[1][0] == "failed" and isinstance(seen[1][2], ValueError)
    messages = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    assert ("sitebus", logging.WARNING, "hello") in messages
    assert caplog.records[-1].exc_info is not None


def test_forwarding_to_stdlib_logging_is_removable(caplog: pytest.LogCaptureFixture) -> None:
    bus = Bus(logger=None)
    with caplog.at_level(logging.DEBUG, logger="sitebus"):
        bus.log("quiet")
    assert caplog.records == []


def test_broken_log_listener_does_not_break_the_bus(bus: Bus) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("log sink down")

    bus.subscribe("log", broken)
    with bus.running():
        pass
    assert bus.state is State.STOPPED


def test_restart_without_block_is_refused(bus: Bus) -> None:
    with pytest.raises(StateError, match="needs block"):
        bus.restart()


def test_block_outside_the_main_thread_is_refused(bus: Bus) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            bus.block()
        except StateError as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join(30)
    assert len(errors) == 1 and "main thread" in str(errors[0])


def test_request_before_block_is_carried_out_when_block_runs(bus: Bus) -> None:
    calls: list[str] = []
    bus.subscribe("graceful", record(calls, "graceful"))
    bus.subscribe("exit", record(calls, "exit"))
    bus.start()
    bus.request_graceful()
    bus.request_graceful()
    bus.request_exit(3)
    bus.request_exit(4)
    assert bus.block() == 3
    assert calls == ["exit"] or calls == ["graceful", "exit"]
    assert calls.count("graceful") <= 1


def test_graceful_request_runs_in_block_then_exit_from_another_thread(bus: Bus) -> None:
    calls: list[str] = []

    def on_graceful() -> None:
        calls.append("graceful")
        threading.Thread(target=bus.exit, args=(5,)).start()

    bus.subscribe("graceful", on_graceful)
    bus.start()
    bus.request_graceful()
    assert bus.block() == 5
    assert calls == ["graceful"]
    assert bus.state is State.EXITING


def test_block_joins_registered_threads_and_names_stuck_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = Bus(thread_join_timeout=0.2)
    finish, release = threading.Event(), threading.Event()
    finishing = threading.Thread(target=finish.wait, args=(30,), name="finishing")
    stuck = threading.Thread(target=release.wait, args=(30,), name="stuck-worker")
    bus.subscribe("exit", finish.set)
    for thread in (finishing, stuck):
        thread.start()
        bus.register_thread(thread)
    bus.request_exit()
    try:
        with caplog.at_level(logging.WARNING, logger="sitebus"):
            assert bus.block() == 0
        assert not finishing.is_alive()
        assert any("stuck-worker" in r.message for r in caplog.records)
        assert not any("finishing" in r.message for r in caplog.records)
    finally:
        release.set()
        stuck.join(30)


def test_responsive_is_false_while_a_transition_hangs() -> None:
    """What a watchdog asks: a graceful listener that hangs holds the bus."""
    bus = Bus(logger=None)
    entered, release = threading.Event(), threading.Event()

    def hanging() -> None:
        entered.set()
        release.wait(30)

    bus.subscribe("graceful", hanging)
    bus.start()
    assert bus.responsive(0.1)
    reloading = threading.Thread(target=bus.graceful)
    reloading.start()
    assert entered.wait(30)
    assert not bus.responsive(0.05)
    release.set()
    reloading.join(30)
    assert bus.responsive(0.1)
    bus.stop()
