"""Periodic tasks in real threads, driven by a clock the test advances by hand."""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sitebus import Bus, State
from sitebus.errors import ConfigError
from sitebus.plugin import priority
from sitebus.plugins.tasks import Task, Tasks, TasksOptions

WAIT = 10.0


class ManualClock:
    """A ``Clock`` whose time moves only when the test calls ``advance``.

    ``wait_for_sleepers(n)`` returns once ``n`` threads are inside
    ``wait_until`` having found their condition false: the barrier that makes
    "advance, then see exactly one run" deterministic.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: dict[int, tuple[threading.Condition, float]] = {}
        self._changed = threading.Condition()

    def monotonic(self) -> float:
        return self.now

    def wait_until(
        self, condition: threading.Condition, done: Callable[[], bool], deadline: float
    ) -> bool:
        key = threading.get_ident()
        with self._changed:
            self._sleepers[key] = (condition, deadline)
            self._changed.notify_all()
        try:
            condition.wait_for(lambda: done() or self.now >= deadline)
            return done()
        finally:
            with self._changed:
                del self._sleepers[key]
                self._changed.notify_all()

    def advance(self, seconds: float) -> None:
        with self._changed:
            self.now += seconds
            conditions = {id(c): c for c, _ in self._sleepers.values()}
        for condition in conditions.values():
            with condition:
                condition.notify_all()

    def wait_for_sleepers(self, count: int, until: float | None = None) -> None:
        """Wait for ``count`` sleeping threads (those sleeping until ``until``, if given)."""

        def enough() -> bool:
            deadlines = [d for _, d in self._sleepers.values()]
            return sum(1 for d in deadlines if until is None or d == until) >= count

        with self._changed:
            assert self._changed.wait_for(enough, WAIT), f"sleepers: {self._sleepers}"


class Runs:
    """A task body that records the clock time of every run and can be waited on."""

    def __init__(self, clock: ManualClock, body: Callable[[], Any] | None = None) -> None:
        self.times: list[float] = []
        self.states: list[State] = []
        self._clock, self._body = clock, body
        self._changed = threading.Condition()
        self.bus: Bus | None = None

    def __call__(self) -> None:
        if self.bus is not None:
            self.states.append(self.bus.state)
        try:
            if self._body is not None:
                self._body()
        finally:
            with self._changed:
                self.times.append(self._clock.now)
                self._changed.notify_all()

    def wait_for(self, count: int) -> list[float]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.times) >= count, WAIT), self.times
            return list(self.times)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def tasks(bus: Bus, clock: ManualClock) -> Iterator[Tasks]:
    plugin = Tasks(bus, TasksOptions(clock=clock, join_timeout=WAIT))
    plugin.subscribe()
    yield plugin
    bus.stop()
    plugin.unsubscribe()


def test_runs_on_its_grid_while_started(bus: Bus, tasks: Tasks, clock: ManualClock) -> None:
    runs = Runs(clock)
    task = tasks.add(10, runs, name="tick")
    bus.start()
    for expected in ([10.0], [10.0, 20.0], [10.0, 20.0, 30.0]):
        clock.wait_for_sleepers(1, until=expected[-1])
        clock.advance(10)
        assert runs.wait_for(len(expected)) == expected
    assert (task.runs, task.failures, task.skipped) == (3, 0, 0)


def test_delay_sets_the_first_run_and_args_are_passed(
    bus: Bus, tasks: Tasks, clock: ManualClock
) -> None:
    seen: list[tuple[Any, ...]] = []
    runs = Runs(clock)
    tasks.add(10, lambda *a: (seen.append(a), runs()), "x", 2, delay=3)
    bus.start()
    clock.wait_for_sleepers(1, until=3)
    clock.advance(3)
    assert runs.wait_for(1) == [3.0]
    assert seen == [("x", 2)]


def test_no_run_before_the_bus_is_started(bus: Bus, tasks: Tasks, clock: ManualClock) -> None:
    """A start listener after the tasks' holds STARTING while time passes: nothing runs."""
    runs = Runs(clock)
    runs.bus = bus
    task = tasks.add(10, runs, delay=0)

    @priority(90)
    def later_start() -> None:
        clock.wait_for_sleepers(1, until=math.inf)  # the task thread waits for STARTED
        clock.advance(100)
        assert task.runs == 0

    bus.subscribe("start", later_start)
    bus.start()
    assert runs.wait_for(1) == [100.0]
    assert runs.states == [State.STARTED]


def test_stop_ends_task_threads_without_waiting_out_the_interval(bus: Bus) -> None:
    """The real clock: an hour's interval, and stop still ends the thread at once."""
    plugin = Tasks(bus, TasksOptions(join_timeout=WAIT))
    plugin.subscribe()
    ran = threading.Event()
    plugin.add(3600, ran.set, name="hourly")
    bus.start()
    thread = next(t for t in threading.enumerate() if t.name == "sitebus-task hourly")
    bus.stop()
    assert not thread.is_alive(), "stop joined the task thread"
    assert not ran.is_set()
    plugin.unsubscribe()


def test_overrun_skips_missed_ticks_instead_of_running_back_to_back(
    bus: Bus, tasks: Tasks, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    first = True

    def overrun() -> None:
        nonlocal first
        if first:
            first = False
            clock.advance(25)  # the run at 10 ends at 35: the ticks at 20 and 30 are missed

    runs = Runs(clock, overrun)
    task = tasks.add(10, runs, name="slow")
    bus.start()
    clock.wait_for_sleepers(1, until=10)
    clock.advance(10)
    runs.wait_for(1)
    clock.wait_for_sleepers(1, until=40)
    assert task.skipped == 2
    clock.advance(5)
    assert runs.wait_for(2) == [35.0, 40.0]
    assert "Task 'slow' overran its 10 s interval; skipped 2 run(s)" in caplog.messages


def test_failing_run_is_logged_with_traceback_and_keeps_its_schedule(
    bus: Bus, tasks: Tasks, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    logged: list[tuple[str, int, BaseException | None]] = []
    bus.subscribe("log", lambda *entry: logged.append(entry))

    def fail_once() -> None:
        if not runs.times:
            raise ValueError("disk full")

    runs = Runs(clock, fail_once)
    task = tasks.add(10, runs, name="cleanup")
    bus.start()
    clock.wait_for_sleepers(1, until=10)
    clock.advance(10)
    runs.wait_for(1)
    clock.wait_for_sleepers(1, until=20)
    clock.advance(10)
    assert runs.wait_for(2) == [10.0, 20.0]
    assert (task.runs, task.failures) == (2, 1)
    message, level, exc = next(e for e in logged if "cleanup" in e[0])
    assert message == "Task 'cleanup' failed: ValueError: disk full"
    assert level == logging.ERROR
    assert isinstance(exc, ValueError) and exc.__traceback__ is not None
    record = next(r for r in caplog.records if r.getMessage() == message)
    assert record.exc_info is not None and "fail_once" in caplog.text


def test_stop_waits_for_a_run_in_progress(bus: Bus, tasks: Tasks, clock: ManualClock) -> None:
    inside, finish = threading.Event(), threading.Event()

    def long_run() -> None:
        inside.set()
        assert finish.wait(WAIT)

    runs = Runs(clock, long_run)
    tasks.add(10, runs)
    bus.start()
    clock.wait_for_sleepers(1, until=10)
    clock.advance(10)
    assert inside.wait(WAIT)
    stopper = threading.Thread(target=bus.stop)
    stopper.start()
    assert bus.wait(State.STOPPING, WAIT)
    finish.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert bus.state is State.STOPPED
    assert runs.wait_for(1) == [10.0]


def test_a_run_stuck_past_join_timeout_is_named_and_left_behind(
    bus: Bus, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    plugin = Tasks(bus, TasksOptions(clock=clock, join_timeout=0))
    plugin.subscribe()
    inside, finish = threading.Event(), threading.Event()

    def stuck() -> None:
        inside.set()
        assert finish.wait(WAIT)

    plugin.add(10, stuck, name="stuck")
    bus.start()
    clock.wait_for_sleepers(1, until=10)
    clock.advance(10)
    assert inside.wait(WAIT)
    bus.stop()
    assert "Tasks still running 0 s after stop: sitebus-task stuck" in caplog.messages
    finish.set()  # let it end: the clean-process fixture joins it
    plugin.unsubscribe()


def test_runs_again_after_a_restart_and_never_while_stopped(
    bus: Bus, tasks: Tasks, clock: ManualClock
) -> None:
    runs = Runs(clock)
    runs.bus = bus
    tasks.add(10, runs)
    bus.start()
    clock.wait_for_sleepers(1, until=10)
    clock.advance(10)
    runs.wait_for(1)
    bus.stop()
    clock.advance(100)  # no thread is left to run it
    bus.start()
    clock.wait_for_sleepers(1, until=120)
    clock.advance(10)
    assert runs.wait_for(2) == [10.0, 120.0]
    assert runs.states == [State.STARTED, State.STARTED]


def test_add_while_started_runs_and_remove_stops(
    bus: Bus, tasks: Tasks, clock: ManualClock
) -> None:
    bus.start()
    runs = Runs(clock)
    task = tasks.add(5, runs, name="late")
    assert tasks.tasks == (task,)
    clock.wait_for_sleepers(1, until=5)
    clock.advance(5)
    runs.wait_for(1)
    clock.wait_for_sleepers(1, until=10)
    tasks.remove(task)
    assert tasks.tasks == ()
    assert not any(t.name == "sitebus-task late" for t in threading.enumerate())
    with pytest.raises(ConfigError, match="not one of this plugin's tasks"):
        tasks.remove(task)


def test_unsubscribe_while_started_stops_the_task_threads(bus: Bus, clock: ManualClock) -> None:
    plugin = Tasks(bus, TasksOptions(clock=clock))
    plugin.subscribe()
    plugin.add(10, print, name="orphan")
    bus.start()
    clock.wait_for_sleepers(1, until=10)
    plugin.unsubscribe()
    assert not any(t.name == "sitebus-task orphan" for t in threading.enumerate())
    bus.stop()


def test_task_threads_are_registered_with_the_bus(bus: Bus, tasks: Tasks) -> None:
    tasks.add(10, print, name="registered")
    bus.start()
    assert any(t.name == "sitebus-task registered" for t in bus._threads)


def test_stop_is_safe_when_start_never_ran(bus: Bus, tasks: Tasks) -> None:
    task = tasks.add(10, print)
    tasks.stop()
    assert isinstance(task, Task) and task.runs == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"interval": 0}, "interval 0 is not a finite number of seconds > 0"),
        ({"interval": -1.5}, "interval -1.5 is not"),
        ({"interval": math.nan}, "interval nan is not"),
        ({"interval": True}, "interval True is not"),
        ({"interval": 1, "delay": -1}, "delay -1 is not a finite number of seconds >= 0"),
    ],
)
def test_bad_interval_or_delay_is_a_clear_error(
    tasks: Tasks, kwargs: dict[str, Any], message: str
) -> None:
    interval = kwargs.pop("interval")
    with pytest.raises(ConfigError, match=message):
        tasks.add(interval, print, **kwargs)


def test_bad_join_timeout_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"TasksOptions.join_timeout: -1 is out of range"):
        TasksOptions(join_timeout=-1)
