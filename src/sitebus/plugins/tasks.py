"""Periodic background callables that run only while the bus is STARTED.

Cleanup jobs, cache refreshes and the watchdog pings of other plugins are
callables that must run every so often while the site serves, and never while
it is starting, stopping or stopped::

    tasks = Tasks(bus)
    tasks.subscribe()
    tasks.add(60.0, purge_sessions, store, name="purge sessions")

Schedule: runs fall on a fixed grid, ``delay`` after the bus started and then
every ``interval`` seconds. A run that overruns one or more ticks skips them:
the next run is at the next tick still ahead, never a burst of catch-up runs.
A run that raises is logged through ``bus.log`` with its traceback, and the
task keeps its schedule.

Each task has its own thread, started at ``StartOrder.TASKS`` (after the servers
serve) and stopped at the same priority (before they stop). Stopping wakes
the threads at once: nobody waits out an interval. A run in progress cannot be
interrupted; stop waits ``join_timeout`` seconds for it, then names it in the
log and moves on (the thread is a daemon registered with ``bus.register_thread``,
so ``block()`` still gives it until ``thread_join_timeout`` to finish).

Time is a seam: ``TasksOptions(clock=...)`` takes any ``Clock``; the default
reads ``time.monotonic`` and waits on a condition variable with a timeout,
which tests replace with a clock they advance by hand.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .._options import MAX_SECONDS, Options, check_range
from ..bus import State
from ..errors import ConfigError, describe
from ..plugin import Plugin, StartOrder, priority

if TYPE_CHECKING:
    from ..bus import Bus

__all__ = ["SYSTEM_CLOCK", "Clock", "SystemClock", "Task", "Tasks", "TasksOptions"]


class Clock(Protocol):
    """Where periodic tasks get the time from and how they sleep."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""
        ...

    def wait_until(
        self, condition: threading.Condition, done: Callable[[], bool], deadline: float
    ) -> bool:
        """With ``condition`` held, wait until ``done()`` or ``monotonic() >= deadline``.

        Returns ``done()``. Whoever makes ``done()`` true notifies ``condition``.
        A ``deadline`` of ``math.inf`` waits for ``done()`` alone.
        """
        ...


class SystemClock:
    """The real clock: ``time.monotonic`` and a condition wait with a timeout."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wait_until(
        self, condition: threading.Condition, done: Callable[[], bool], deadline: float
    ) -> bool:
        # wait_for re-checks done() on every wake-up and measures its timeout on
        # time.monotonic, the same clock as the deadline.
        timeout = None if deadline == math.inf else max(0.0, deadline - time.monotonic())
        return condition.wait_for(done, timeout)


SYSTEM_CLOCK = SystemClock()


class TasksOptions(Options):
    """``join_timeout``: seconds stop waits, for all tasks together, for runs in progress.

    ``clock``: the time source and sleep; the default is the system's.
    """

    join_timeout: float = 5.0
    clock: Clock = SYSTEM_CLOCK

    def __post_init__(self) -> None:
        check_range(self, "join_timeout", 0, MAX_SECONDS, "seconds from 0 to 1e8")


class Task:
    """One periodic callable; made by ``Tasks.add``, read-only afterwards.

    ``runs`` and ``failures`` count finished runs (all, and those that raised);
    ``skipped`` counts ticks missed because a run overran.
    """

    def __init__(
        self,
        interval: float,
        fn: Callable[..., object],
        args: tuple[Any, ...],
        name: str,
        delay: float,
    ) -> None:
        self.interval = interval
        self.fn = fn
        self.args = args
        self.name = name
        self.delay = delay
        self.runs = 0
        self.failures = 0
        self.skipped = 0
        # Set while the task has a thread: the flag its thread stops on.
        self._run: _Run | None = None
        # The last thread, still running perhaps: its successor waits for it, so
        # a run stuck past a stop never overlaps a run after the next start.
        self._last_thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"<Task {self.name!r} every {self.interval:g} s>"


class _Run:
    """One thread's life for one task, between a start and the next stop."""

    __slots__ = ("previous", "stop", "thread")
    thread: threading.Thread

    def __init__(self, previous: threading.Thread | None) -> None:
        self.previous = previous
        self.stop = False


class Tasks(Plugin):
    """Runs periodic tasks while the bus is STARTED; see the module docstring.

    Contract: no run begins before the bus is STARTED or after it leaves that
    state, and at most one run of a task is in progress at any time.
    """

    def __init__(self, bus: Bus, options: TasksOptions | None = None) -> None:
        super().__init__(bus)
        self.options = options or TasksOptions()
        self._clock = self.options.clock
        # One condition for every task thread: state changes, stops and clock
        # advances are rare, so waking all of them costs nothing worth a lock each.
        self._changed = threading.Condition(threading.Lock())
        self._tasks: list[Task] = []
        self._running = False  # between our start and stop listeners
        self._live = False  # the bus is STARTED

    def __repr__(self) -> str:
        return f"<Tasks {[t.name for t in self._tasks]}>"

    @property
    def tasks(self) -> tuple[Task, ...]:
        return tuple(self._tasks)

    def add(
        self,
        interval: float,
        fn: Callable[..., object],
        *args: Any,
        name: str | None = None,
        delay: float | None = None,
    ) -> Task:
        """Run ``fn(*args)`` every ``interval`` seconds while the bus is STARTED.

        The first run is ``delay`` seconds (default: ``interval``) after the
        bus started, or after this call if it already has. ``name`` appears in
        log lines and the thread name; it defaults to the function's name.
        """
        _check_seconds("interval", interval, positive=True)
        delay = interval if delay is None else delay
        _check_seconds("delay", delay, positive=False)
        name = name or str(getattr(fn, "__qualname__", None) or repr(fn))
        task = Task(interval, fn, args, name, delay)
        with self._changed:
            self._tasks.append(task)
            if self._running:
                self._launch_locked(task)
        return task

    def remove(self, task: Task) -> None:
        """Stop ``task`` (waiting up to ``join_timeout`` for a run in progress) and forget it."""
        with self._changed:
            if task not in self._tasks:
                raise ConfigError(f"{task!r} is not one of this plugin's tasks")
            self._tasks.remove(task)
            runs = self._halt_locked([task])
        self._join(runs)

    # -- the bus ------------------------------------------------------------

    @priority(StartOrder.TASKS)
    def start(self) -> None:
        """Start one thread per task; each waits for the bus to be STARTED."""
        with self._changed:
            self._running = True
            self._live = self.bus.state is State.STARTED
            for task in self._tasks:
                if task._run is None:
                    self._launch_locked(task)

    @priority(StartOrder.TASKS)
    def stop(self) -> None:
        """Wake every task thread to end; wait ``join_timeout`` for runs in progress.

        Safe to call when start never ran.
        """
        with self._changed:
            self._running = self._live = False
            runs = self._halt_locked(self._tasks)
        self._join(runs)

    def unsubscribe(self) -> None:
        """Stop listening, and stop the task threads: nothing would stop them later."""
        super().unsubscribe()
        self.stop()

    def state(self, state: State) -> None:
        """Runs may begin only in STARTED: leaving it holds every task at once."""
        with self._changed:
            self._live = state is State.STARTED
            self._changed.notify_all()

    # -- the task threads ---------------------------------------------------

    def _launch_locked(self, task: Task) -> None:
        run = _Run(task._last_thread)
        run.thread = threading.Thread(
            target=self._loop, args=(task, run), name=f"sitebus-task {task.name}", daemon=True
        )
        task._run, task._last_thread = run, run.thread
        self.bus.register_thread(run.thread)
        run.thread.start()

    def _halt_locked(self, tasks: list[Task]) -> list[_Run]:
        runs = [task._run for task in tasks if task._run is not None]
        for task in tasks:
            task._run = None
        for run in runs:
            run.stop = True
        self._changed.notify_all()
        return runs

    def _join(self, runs: list[_Run]) -> None:
        deadline = time.monotonic() + self.options.join_timeout
        me = threading.current_thread()
        for run in runs:
            if run.thread is not me:  # a task that stops its own bus
                run.thread.join(max(0.0, deadline - time.monotonic()))
        stuck = [r.thread.name for r in runs if r.thread.is_alive() and r.thread is not me]
        if stuck:
            self.bus.log(
                f"Tasks still running {self.options.join_timeout:g} s after stop: "
                + ", ".join(stuck),
                logging.WARNING,
            )

    def _loop(self, task: Task, run: _Run) -> None:
        if run.previous is not None:
            run.previous.join()
            run.previous = None  # no chain of dead threads across restarts
        clock, changed = self._clock, self._changed
        deadline = None  # None: wait for the bus to be STARTED first
        while True:
            with changed:
                if deadline is None:
                    clock.wait_until(changed, lambda: run.stop or self._live, math.inf)
                    if run.stop:
                        return
                    deadline = clock.monotonic() + task.delay
                if clock.wait_until(changed, lambda: run.stop, deadline):
                    return
                if not self._live:  # left STARTED: wait for the next start, or the stop
                    deadline = None
                    continue
            self._run_once(task)
            deadline = self._next_deadline(task, deadline)

    def _run_once(self, task: Task) -> None:
        try:
            task.fn(*task.args)
        except Exception as exc:
            task.failures += 1
            self.bus.log(f"Task {task.name!r} failed: {describe(exc)}", logging.ERROR, exc)
        finally:
            task.runs += 1

    def _next_deadline(self, task: Task, deadline: float) -> float:
        """The next tick of the grid that is still ahead; missed ticks are skipped."""
        deadline += task.interval
        late = self._clock.monotonic() - deadline
        if late <= 0:
            return deadline
        missed = math.ceil(late / task.interval)
        task.skipped += missed
        self.bus.log(
            f"Task {task.name!r} overran its {task.interval:g} s interval; skipped {missed} run(s)",
            logging.WARNING,
        )
        return deadline + missed * task.interval


def _check_seconds(what: str, value: float, *, positive: bool) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    ok = ok and (value > 0 if positive else value >= 0)
    if not ok:
        expected = "> 0" if positive else ">= 0"
        raise ConfigError(f"{what} {value!r} is not a finite number of seconds {expected}")
