"""The site bus: one state machine per process, its transitions published on channels.

States and transitions::

    STOPPED --start()--> STARTING --(all start listeners ran)--> STARTED
       ^                    |                                       |
       |                    | a start listener failed:              | stop()
       |                    v roll back                             v
       +----------------- STOPPING <--------------------------------+

    any state --exit()--> (stop first if STARTED) --> EXITING   (final)

Every transition is published on the ``state`` channel; ``start``, ``stop``,
``graceful`` and ``exit`` are published by the transitions of those names.

The three ways to run a site all drive this one object:

1. From the command line, ``sitebus run site.toml`` builds the bus, subscribes
   the configured plugins, calls ``start()`` and then ``block()`` in the main
   thread, where signals, exit and re-exec are carried out.
2. Inside a host process (mod_wsgi, gunicorn) the bus is started on first use
   and stopped at interpreter exit; nobody calls ``block()``, so signals,
   autoreload and re-exec stay off: the host owns them.
3. A framework or a test builds a ``Bus``, subscribes plugins and uses
   ``start()``/``stop()``, ``with bus.running():`` or ``block()`` directly.

Ordering rule: listeners run by ascending priority (default 50), ties in
subscription order; the teardown channels ``stop`` and ``exit`` run in exactly
the reverse order, ties included, so whatever starts first stops last.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from enum import Enum
from logging import DEBUG, ERROR, INFO, WARNING
from time import perf_counter
from typing import TYPE_CHECKING, Any, TypeVar, overload

from . import _watchdog
from ._calls import ListenerTiming, call_each, failures_of
from ._logformat import log_unconfigured
from ._mainthread import MainThread
from .errors import ChannelFailures, ConfigError, StartError, StateError, describe, listener_name

if TYPE_CHECKING:
    from ._calls import Record

C = TypeVar("C", bound=Callable[..., Any])
# A subscription: a plain tuple sorts in publishing order, and the order
# number is unique, so two callbacks are never compared.
_Entry = tuple[int, int, Callable[..., Any]]  # priority, order, callback

__all__ = [
    "DEBUG",
    "DEFAULT_PRIORITY",
    "ERROR",
    "INFO",
    "TEARDOWN_CHANNELS",
    "WARNING",
    "Bus",
    "ListenerTiming",
    "State",
]

DEFAULT_PRIORITY = 50
TEARDOWN_CHANNELS = frozenset({"stop", "exit"})
# The log channel carries the stdlib's levels, re-exported above as
# sitebus.bus.DEBUG and so on.


class State(Enum):
    """The states of a bus; see the module docstring for the transitions."""

    STOPPED = "stopped"
    STARTING = "starting"
    STARTED = "started"
    STOPPING = "stopping"
    EXITING = "exiting"


class Bus(MainThread):
    """Publish/subscribe channels and the site's lifecycle state machine.

    Stop and exit listeners run in the thread that called ``stop()`` or
    ``exit()``, where start listeners ran too under ``block()``. Bounds, in
    seconds (None for none), kept by the process's watchdog thread:
    ``listener_timeout`` names in the log a stop or exit listener that runs
    longer (it is not interrupted); ``exit_timeout`` bounds a whole
    ``exit()``, stop included: past it the process writes every thread's
    stack to standard error and ends with status 1, because a wedged
    listener must not keep the site from exiting. ``thread_join_timeout``
    bounds how long ``block()`` waits, in all, for the threads registered
    with ``register_thread``. ``logger`` receives everything published on
    ``log``: a stdlib logger, or the name of one; None turns that off. While
    neither it nor its ancestors have a handler, INFO and above go to
    standard error.
    """

    def __init__(
        self,
        *,
        listener_timeout: float | None = 60.0,
        exit_timeout: float | None = 120.0,
        thread_join_timeout: float = 10.0,
        logger: logging.Logger | str | None = "sitebus",
    ) -> None:
        for name, bound in (("listener_timeout", listener_timeout), ("exit_timeout", exit_timeout)):
            if bound is not None and not bound > 0:
                raise ConfigError(
                    f"{name} must be a number of seconds above 0 or None, not {bound!r}"
                )
        self.listener_timeout = listener_timeout
        self.exit_timeout = exit_timeout
        self.thread_join_timeout = thread_join_timeout
        self._watch = _watchdog.Watch(self._overrun)
        self._logger = logger
        self._records: dict[str, list[Record]] = {}
        # Copy on write: publish reads these without a lock; writers replace them.
        self._callbacks: dict[str, tuple[Callable[..., Any], ...]] = {}
        self._entries: dict[str, tuple[_Entry, ...]] = {}
        self._subscription_lock = threading.Lock()
        self._order = itertools.count()
        self._transition_lock = threading.RLock()
        self._state_changed = threading.Condition(threading.Lock())
        self._waiters = 0  # threads in wait(); changed under _state_changed
        self._state = State.STOPPED
        self._history: collections.deque[tuple[int, State]] = collections.deque(maxlen=64)
        self._generation = 0
        self._status = 0
        self._exited = False
        self._init_main_thread()

    def __repr__(self) -> str:
        return f"<Bus state={self._state.value}>"

    @property
    def state(self) -> State:
        return self._state

    @property
    def timings(self) -> dict[str, tuple[ListenerTiming, ...]]:
        """How long each listener took in the last start, stop and exit, by channel."""
        return {
            channel: tuple(
                ListenerTiming(
                    channel=channel, listener=listener_name(callback), seconds=seconds, error=error
                )
                for callback, seconds, error in records
            )
            for channel, records in self._records.items()
        }

    @property
    def logger(self) -> logging.Logger | None:
        """The stdlib logger that receives the ``log`` channel, or None."""
        if isinstance(self._logger, str):
            self._logger = logging.getLogger(self._logger)
        return self._logger

    @logger.setter
    def logger(self, logger: logging.Logger | str | None) -> None:
        self._logger = logger

    # -- channels -----------------------------------------------------------

    @overload
    def subscribe(self, channel: str, callback: C, priority: int | None = None) -> C: ...
    @overload
    def subscribe(self, channel: str, *, priority: int | None = None) -> Callable[[C], C]: ...

    def subscribe(
        self, channel: str, callback: C | None = None, priority: int | None = None
    ) -> C | Callable[[C], C]:
        """Call ``callback`` on every publish to ``channel``; usable as a decorator.

        ``priority`` defaults to the callback's ``priority`` attribute (set by
        ``@priority``), else 50. Subscribing a callback again moves it to the
        new priority, last among its ties.
        """
        if callback is None:
            return lambda fn: self.subscribe(channel, fn, priority)
        if priority is None:
            priority = getattr(callback, "priority", DEFAULT_PRIORITY)
        with self._subscription_lock:
            entries = [e for e in self._entries.get(channel, ()) if e[2] != callback]
            entries.append((priority, next(self._order), callback))
            self._install(channel, entries)
        return callback

    def unsubscribe(self, channel: str, callback: Callable[..., Any]) -> None:
        """Stop calling ``callback`` on ``channel``; doing nothing if it was not subscribed."""
        with self._subscription_lock:
            entries = self._entries.get(channel, ())
            kept = [e for e in entries if e[2] != callback]
            if len(kept) != len(entries):
                self._install(channel, kept)

    def _install(self, channel: str, entries: list[_Entry]) -> None:
        if not entries:
            self._callbacks.pop(channel, None)
            self._entries.pop(channel, None)
            return
        entries.sort()
        callbacks = [e[2] for e in entries]
        if channel in TEARDOWN_CHANNELS:
            callbacks.reverse()
        self._entries[channel] = tuple(entries)
        self._callbacks[channel] = tuple(callbacks)

    def listeners(self, channel: str) -> tuple[Callable[..., Any], ...]:
        """The callbacks of ``channel`` in the order ``publish`` calls them."""
        return self._callbacks.get(channel, ())

    def publish(self, channel: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Call every listener of ``channel``; return their results in call order.

        Every listener runs even when some raise; then one ``ChannelFailures``
        carries all the exceptions. ``KeyboardInterrupt``, ``SystemExit`` and
        other non-``Exception`` errors propagate at once.
        """
        callbacks = self._callbacks.get(channel)
        if not callbacks:
            return []
        results: list[Any] = []
        append = results.append
        try:
            for callback in callbacks:
                append(callback(*args, **kwargs))
        except Exception as exc:
            self._publish_rest(channel, callbacks, results, exc, args, kwargs)
        return results

    def _publish_rest(
        self,
        channel: str,
        callbacks: tuple[Callable[..., Any], ...],
        results: list[Any],
        first: Exception,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        """The slow path of publish, entered at the first failure."""
        failed = len(results)
        failures = [(callbacks[failed], first)]
        results.append(None)
        for callback in callbacks[failed + 1 :]:
            try:
                results.append(callback(*args, **kwargs))
            except Exception as exc:
                failures.append((callback, exc))
                results.append(None)
        for callback, error in failures:
            error.add_note(f"raised by listener {listener_name(callback)} on channel {channel!r}")
        raise ChannelFailures(channel, failures)

    def log(self, message: str, level: int = INFO, exc_info: bool | BaseException = False) -> None:
        """Publish ``message`` on ``log`` as (message, level, exception or None).

        It also goes to ``self.logger`` (the stdlib logger ``sitebus``) unless
        that is set to None; to standard error while logging is not configured.
        """
        exc = sys.exception() if exc_info is True else (exc_info or None)
        logger = self.logger
        if logger is not None:
            if logger.hasHandlers():
                logger.log(level, message, exc_info=exc, stacklevel=2)
            else:
                log_unconfigured(logger, level, message, exc)
        if "log" in self._callbacks:
            try:
                self.publish("log", message, level, exc)
            except ChannelFailures as failures:
                if logger is not None:  # not self.log: a broken log listener must not recurse
                    logger.error("%s", failures)

    # -- transitions --------------------------------------------------------

    def start(self) -> None:
        """STOPPED → STARTING → STARTED; does nothing if already started.

        Start listeners run in order until one fails; then the bus logs which
        one and why, runs every stop listener (a stop listener must be safe to
        call when its start never ran), returns to STOPPED and raises
        ``StartError``.
        """
        with self._transition_lock:
            if self._state is State.STARTED:
                return
            if self._state is not State.STOPPED:
                raise StateError(f"cannot start: the bus is {self._state.value}")
            self._set_state(State.STARTING)
            self.log("Bus starting")
            try:
                # The watch is not begun: start listeners are not bounded, but
                # running_listener() names the one that runs.
                records = call_each(
                    "start",
                    self._callbacks.get("start", ()),
                    stop_at_first_error=True,
                    watch=self._watch,
                )
            except BaseException:  # Ctrl-C or SystemExit mid-start: tear down, then let it go
                self._stop_locked()
                raise
            self._records["start"] = records
            failures = failures_of(records)
            if failures:
                callback, exc = failures[0]
                name = listener_name(callback)
                self.log(f"Start failed in {name}: {describe(exc)}; rolling back", ERROR)
                self.log(f"Traceback of the start failure in {name}:", DEBUG, exc)
                try:
                    self.publish("start_failed", name, exc)
                except ChannelFailures as failures:
                    self.log(str(failures), ERROR)
                self._stop_locked()
                raise StartError(name, exc) from exc
            self._set_state(State.STARTED)
            self.log("Bus started")

    def stop(self) -> None:
        """STARTED → STOPPING → STOPPED; does nothing if stopped or exiting.

        Every stop listener runs, in reverse start order, even when some fail;
        the bus is STOPPED afterwards and then raises one ``ChannelFailures``.
        """
        with self._transition_lock:
            if self._state in (State.STOPPED, State.EXITING):
                return
            if self._state is not State.STARTED:
                raise StateError(f"cannot stop: the bus is {self._state.value}")
            failures = self._stop_locked()
        if failures:
            raise ChannelFailures("stop", failures)

    def _stop_locked(self, *, nested: bool = False) -> list[tuple[Callable[..., Any], Exception]]:
        self._set_state(State.STOPPING)
        self.log("Bus stopping")
        failures = self._teardown("stop", nested=nested)
        self._set_state(State.STOPPED)
        self.log("Bus stopped")
        return failures

    def graceful(self) -> None:
        """Publish ``graceful`` (reload config, reopen logs) while STARTED; else nothing."""
        with self._transition_lock:
            if self._state is not State.STARTED:
                self.log(f"Graceful ignored: the bus is {self._state.value}", DEBUG)
                return
            self.log("Bus graceful")
            self.publish("graceful")

    def exit(self, status: int = 0) -> None:
        """Stop if needed, enter EXITING, publish ``exit`` and wake ``block()``.

        Runs once: later calls do nothing. Failed stop and exit listeners are
        logged and turn a zero ``status`` into 1; the whole exit is bounded by
        ``exit_timeout`` (see the class). From inside a listener use
        ``request_exit()``, which ``block()`` carries out.
        """
        with self._transition_lock:
            if self._state is State.EXITING:
                return
            if self._state in (State.STARTING, State.STOPPING):
                raise StateError(f"cannot exit: the bus is {self._state.value}")
            self._status = status
            deadline = None if self.exit_timeout is None else perf_counter() + self.exit_timeout
            self._watch.begin(self.listener_timeout, deadline)
            try:
                failures = self._stop_locked(nested=True) if self._state is State.STARTED else []
                self._set_state(State.EXITING)
                self.log("Bus exiting")
                failures += self._teardown("exit", nested=True)
            finally:
                self._watch.end()
            if failures and self._status == 0:
                self._status = 1
            self._exited = True
        self._wake()

    def _teardown(
        self, channel: str, *, nested: bool = False
    ) -> list[tuple[Callable[..., Any], Exception]]:
        """Run the listeners of ``channel`` in this thread, watched for overruns.

        ``nested``: inside ``exit()``, whose watch (with its deadline) is begun.
        """
        callbacks = self._callbacks.get(channel, ())
        watch = self._watch
        if nested:
            records = call_each(channel, callbacks, stop_at_first_error=False, watch=watch)
        else:
            watch.begin(self.listener_timeout)
            try:
                records = call_each(channel, callbacks, stop_at_first_error=False, watch=watch)
            finally:
                watch.end()
        self._records[channel] = records
        failures = failures_of(records)
        for callback, exc in failures:
            name = listener_name(callback)
            self.log(f"Listener {name} failed on {channel!r}: {describe(exc)}", ERROR)
            self.log(f"Traceback of the failure in {name}:", DEBUG, exc)
        return failures

    def _overrun(self, channel: str, callback: Callable[..., Any], seconds: float) -> None:
        """The watchdog's report of a teardown listener past ``listener_timeout``."""
        self.log(
            f"Listener {listener_name(callback)} on {channel!r} still running after "
            f"{seconds:.1f} s (listener_timeout {self.listener_timeout:g} s)",
            WARNING,
        )

    def _set_state(self, state: State) -> None:
        with self._state_changed:
            self._state = state
            self._generation += 1
            self._history.append((self._generation, state))
            if self._waiters:  # notify_all costs a microsecond even with nobody waiting
                self._state_changed.notify_all()
        try:
            self.publish("state", state)
        except ChannelFailures as failures:
            self.log(str(failures), ERROR)

    def responsive(self, timeout: float) -> bool:
        """Whether no transition (start, stop, graceful, exit) holds the bus past ``timeout`` s.

        For a watchdog: the transitions run in the main thread under one lock,
        so a lock taken and given back within the bound shows none of them hangs.
        """
        if not self._transition_lock.acquire(timeout=timeout):
            return False
        self._transition_lock.release()
        return True

    def running_listener(self) -> tuple[str, str, float] | None:
        """The start, stop or exit listener running now: channel, name, seconds so far.

        None between listeners and outside those transitions. For a supervisor
        that must tell a slow start from a wedged one (systemd's
        ``EXTEND_TIMEOUT_USEC``), read from any thread.
        """
        current = self._watch.current
        if current is None:
            return None
        channel, callback, began = current
        return channel, listener_name(callback), perf_counter() - began

    @contextlib.contextmanager
    def running(self) -> Iterator[Bus]:
        """Start the bus for the ``with`` block and always stop it afterwards."""
        self.start()
        try:
            yield self
        finally:
            self.stop()

    def wait(self, states: State | Iterable[State], timeout: float | None = None) -> bool:
        """Wait until the bus enters one of ``states``; False if ``timeout`` passed first.

        Returns at once if the bus is already in one. Wakes on the transition
        itself, and sees a state the bus passed through even if it has already
        left it by the time this thread runs.
        """
        wanted = {states} if isinstance(states, State) else set(states)
        with self._state_changed:
            since = self._generation

            def reached() -> bool:
                return self._state in wanted or any(
                    gen > since and state in wanted for gen, state in self._history
                )

            self._waiters += 1
            try:
                return self._state_changed.wait_for(reached, timeout)
            finally:
                self._waiters -= 1
