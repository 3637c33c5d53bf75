"""A bus with the interface of CherryPy 18's ``wspbus.Bus``, over a sitebus ``Bus``.

Code written for ``cherrypy.engine`` (its plugins, the ``SimplePlugin``
subclasses of ``cherrypy.process.plugins``, an application's own) calls the
same methods with the same arguments and gets the same results here; what it
drives is a sitebus ``Bus``, the *site bus*, so a CherryPy engine can be one
participant of a site that also serves apps of other frameworks. This is an
adapter, not a second bus: states, transitions, threads, signals and
re-exec are the site bus's.

How the two meet:

- ``states.STOPPED`` ... ``states.EXITING`` are the sitebus ``State`` members
  of the same names, and ``state`` reads the site bus's state.
- ``listeners`` is a ``dict`` of channel → ``set`` of callbacks, because
  CherryPy code reads it (``SimplePlugin.subscribe`` iterates its channels)
  and extends it (``ThreadManager`` adds its channels with ``setdefault``).
- Each channel with CherryPy listeners has one *forwarder* on the site bus,
  subscribed at ``priority`` (``StartOrder.DEFAULT``). When the site bus
  publishes that channel (its start and stop, a server's ``acquire_thread``)
  the forwarder calls the channel's CherryPy listeners in CherryPy's order:
  ascending priority on *every* channel, ``stop`` and ``exit`` included,
  ties in subscription order. So the CherryPy engine starts, as a whole,
  where ``DEFAULT`` starts (after the PID file, before the sockets are bound
  and the servers serve) and stops after the servers stopped.
- ``publish`` publishes on the site bus: its own listeners hear CherryPy's
  channels too. It returns every listener's result, the CherryPy listeners'
  in their order, and raises one ``ChannelFailures`` naming every failure.
- ``log`` logs through the site bus; CherryPy's ``log`` listeners receive
  ``(message, level)`` for everything the site bus logs, the traceback
  appended to the message as CherryPy does.

Where this bus differs from CherryPy's on purpose, and why:

- A start listener that fails rolls the bus back to STOPPED and ``start()``
  raises sitebus's ``StartError``; CherryPy exits and then ends the process
  with ``os._exit(70)``, which no caller can catch or clean up after.
- Each transition runs its listeners once: ``stop()`` on a stopped bus, a
  second ``exit()`` and ``graceful()`` while not STARTED do nothing (CherryPy
  publishes ``stop`` again from ``exit()``, and ``graceful`` in any state).
  ``exit()`` while STARTING or STOPPING raises ``StateError``: a listener
  that wants the site to end calls ``site_bus.request_exit()``.
- ``wait()`` wakes on the transition itself; CherryPy polls every
  ``interval`` seconds. With a ``channel`` it still publishes that channel
  every ``interval`` while it waits, as CherryPy does.
- ``block()`` is the site bus's ``block()``: signal requests carried out in
  the main thread, a restart by re-exec, and a bounded join of the threads
  given to ``register_thread`` (CherryPy joins every non-daemon thread, with
  no bound). ``main`` is published every ``interval`` from a helper thread,
  not the main thread, which sleeps until something happens, and only when
  ``main`` has listeners as ``block()`` begins.
- ``restart()`` needs ``block()`` running in the main thread to carry it
  out (``StateError`` otherwise), and no ``atexit`` hook exits a bus left
  running: call ``exit()``.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import threading
import traceback as _traceback
from collections.abc import Callable, Iterable, Sequence
from logging import DEBUG, ERROR, INFO
from typing import Any

from ..bus import Bus as SiteBus
from ..bus import State
from ..errors import ChannelFailures as SiteChannelFailures
from ..errors import StateError, describe
from ..plugin import StartOrder

__all__ = ["CHANNELS", "Bus", "ChannelFailures", "states"]

Callback = Callable[..., Any]
Failures = Sequence[tuple[Callback, Exception]]

# The channels a CherryPy bus knows from the start: SimplePlugin subscribes
# its methods of these names.
CHANNELS = ("start", "stop", "exit", "graceful", "log", "main")
_DEFAULT_PRIORITY = 50


class _States:
    """CherryPy's ``states`` object; each state is the sitebus ``State`` of that name."""

    State = State
    STOPPED = State.STOPPED
    STARTING = State.STARTING
    STARTED = State.STARTED
    STOPPING = State.STOPPING
    EXITING = State.EXITING

    def __repr__(self) -> str:
        return "<wspbus states: STOPPED, STARTING, STARTED, STOPPING, EXITING>"


states = _States()


class ChannelFailures(SiteChannelFailures):
    """Raised by ``publish`` (and ``stop``) when CherryPy listeners failed.

    sitebus's ``ChannelFailures`` (an ``ExceptionGroup`` whose ``failures``
    pair each exception with its listener) with CherryPy's
    ``get_instances()``. Once ``cherrypy.process.wspbus`` is imported, what
    this bus raises is also an instance of CherryPy's ``ChannelFailures``, so
    ``except cherrypy.process.wspbus.ChannelFailures`` catches it unchanged.
    """

    delimiter = "\n"

    @property
    def _exceptions(self) -> list[Exception]:
        # CherryPy's methods (__bool__, get_instances) read this attribute.
        return [exc for _, exc in self.failures]

    def get_instances(self) -> list[Exception]:
        """The exceptions, in the order the listeners raised them."""
        return self._exceptions


@functools.cache
def _joined(theirs: type[Exception]) -> type[ChannelFailures]:
    """Our ``ChannelFailures`` that is also CherryPy's class ``theirs``."""
    return type(
        "ChannelFailures",
        (ChannelFailures, theirs),
        {"__module__": __name__, "__doc__": ChannelFailures.__doc__},
    )


def _failures(channel: str, failures: Failures) -> ChannelFailures:
    """The exception to raise: joined with CherryPy's class when CherryPy is loaded.

    Only looked up in ``sys.modules``: code that catches CherryPy's class has
    imported it, and this module never imports CherryPy itself.
    """
    module = sys.modules.get("cherrypy.process.wspbus")
    theirs = getattr(module, "ChannelFailures", None)
    cls = _joined(theirs) if isinstance(theirs, type) else ChannelFailures
    return cls(channel, failures)


class _Results(list[Any]):
    """What a forwarder returns: the CherryPy listeners' results, spliced by ``publish``."""


class Bus:
    """CherryPy's ``wspbus.Bus`` interface, driving (and driven by) ``site_bus``.

    With no ``site_bus`` the bus makes a private one, as a stand-alone
    CherryPy engine; ``bind()`` moves it onto a site's bus. ``priority`` is
    where the CherryPy listeners, as a group, sit in the site bus's order.
    Thread-safe as the site bus is: ``listeners`` sets are replaced, never
    changed in place, so publishing never sees a set change under it.
    """

    states = states

    def __init__(
        self, site_bus: SiteBus | None = None, *, priority: int = StartOrder.DEFAULT
    ) -> None:
        self.listeners: dict[str, set[Callback]] = {channel: set() for channel in CHANNELS}
        self._priorities: dict[tuple[str, Callback], int] = {}
        self._orders: dict[tuple[str, Callback], int] = {}
        self._order = itertools.count()
        self._lock = threading.Lock()
        self.priority = priority
        self._forwarders: dict[str, Callback] = {}
        self._site_bus = site_bus if site_bus is not None else SiteBus()
        self._pid = os.getpid()  # of the process that bound it to _site_bus

    def __repr__(self) -> str:
        return f"<wspbus.Bus over {self._site_bus!r}>"

    @property
    def site_bus(self) -> SiteBus:
        """The sitebus ``Bus`` this bus drives and listens to."""
        return self._site_bus

    @property
    def state(self) -> State:
        return self._site_bus.state

    @property
    def execv(self) -> bool:
        """True while a restart (stop, then re-exec) is under way."""
        return self._site_bus.restarting

    def bind(self, site_bus: SiteBus | None) -> None:
        """Move the CherryPy listeners onto ``site_bus`` (None: a new private bus).

        Refused with ``StateError`` while the bus it leaves is running in this
        process: its stop must reach the listeners that started on it. A
        process forked from one whose bus runs (a host's worker) may move on:
        that bus is the parent's to stop.
        """
        new = site_bus if site_bus is not None else SiteBus()
        with self._lock:
            old = self._site_bus
            if old is new:
                return
            running = old.state not in (State.STOPPED, State.EXITING)
            if running and self._pid == os.getpid():
                raise StateError(f"cannot move the CherryPy engine: its bus is {old.state.value}")
            for channel, forwarder in self._forwarders.items():
                old.unsubscribe(channel, forwarder)
                new.subscribe(channel, forwarder, self.priority)
            self._site_bus = new
            self._pid = os.getpid()

    # -- channels -----------------------------------------------------------

    def subscribe(
        self, channel: str, callback: Callback | None = None, priority: int | None = None
    ) -> Any:
        """Add ``callback`` to ``channel``; without a callback, return a decorator.

        Returns None, as CherryPy's does (so ``@bus.subscribe("log")`` leaves
        None in the decorated name, as it does with CherryPy). ``priority``
        defaults to the callback's ``priority`` attribute, else 50.
        """
        if callback is None:
            return functools.partial(self.subscribe, channel, priority=priority)
        if priority is None:
            priority = getattr(callback, "priority", _DEFAULT_PRIORITY)
        key = (channel, callback)
        with self._lock:
            self._priorities[key] = priority
            self._orders.setdefault(key, next(self._order))
            self.listeners[channel] = {*self.listeners.get(channel, ()), callback}
            if channel not in self._forwarders:
                self._forward_locked(channel)
        return None

    def unsubscribe(self, channel: str, callback: Callback) -> None:
        """Discard ``callback`` from ``channel``, if it is there."""
        with self._lock:
            listeners = self.listeners.get(channel)
            if listeners and callback in listeners:
                self.listeners[channel] = listeners - {callback}
                del self._priorities[(channel, callback)]
                self._orders.pop((channel, callback), None)

    def publish(self, channel: str, *args: Any, **kwargs: Any) -> list[Any]:
        """Publish on the site bus; return every listener's result in call order.

        After every listener ran, one ``ChannelFailures`` names each failure.
        """
        if channel not in self._forwarders and self.listeners.get(channel):
            with self._lock:  # a listener put into the set directly, as CherryPy allows
                if channel not in self._forwarders:
                    self._forward_locked(channel)
        if channel == "log" and len(args) == 2:
            args = (*args, None)  # the site bus's log channel carries the exception too
        try:
            found = self._site_bus.publish(channel, *args, **kwargs)
        except SiteChannelFailures as group:
            raise self._flattened(group) from None
        results: list[Any] = []
        for result in found:
            if isinstance(result, _Results):
                results += result
            else:
                results.append(result)
        return results

    def _forward_locked(self, channel: str) -> None:
        forwarder = self._log_forwarder() if channel == "log" else self._forwarder(channel)
        forwarder.__module__ = "sitebus.compat"
        forwarder.__qualname__ = f"wspbus.{channel}"
        self._forwarders[channel] = forwarder
        self._site_bus.subscribe(channel, forwarder, self.priority)

    def _forwarder(self, channel: str) -> Callback:
        def forward(*args: Any, **kwargs: Any) -> _Results:
            return self._call_listeners(channel, args, kwargs)

        return forward

    def _log_forwarder(self) -> Callback:
        def forward(message: str, level: int = INFO, exc: BaseException | None = None) -> _Results:
            if exc is not None:
                message += "\n" + "".join(_traceback.format_exception(exc))
            return self._call_listeners("log", (message, level), {})

        return forward

    def _call_listeners(
        self, channel: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> _Results:
        """Call ``channel``'s CherryPy listeners by ascending priority, each even if some fail."""
        listeners = self.listeners.get(channel)
        if not listeners:
            return _Results()
        priorities, orders = self._priorities, self._orders
        ordered = sorted(
            listeners,
            key=lambda cb: (
                priorities.get((channel, cb), _DEFAULT_PRIORITY),
                orders.get((channel, cb), sys.maxsize),
            ),
        )
        results = _Results()
        failures: list[tuple[Callback, Exception]] = []
        for callback in ordered:
            try:
                results.append(callback(*args, **kwargs))
            except SystemExit as exc:
                if failures and exc.code == 0:
                    exc.code = 1  # as CherryPy: earlier failures make the exit a failure
                raise
            except Exception as exc:
                failures.append((callback, exc))
                if channel != "log":  # a failing log listener would fail again
                    # One line, the traceback at DEBUG, as the site bus logs failures.
                    site_bus = self._site_bus
                    site_bus.log(
                        f"Error in {channel!r} listener {callback!r}: {describe(exc)}", ERROR
                    )
                    site_bus.log(f"Traceback of the failure in {callback!r}:", DEBUG, exc)
        if failures:
            raise _failures(channel, failures)
        return results

    def _flattened(self, group: SiteChannelFailures) -> ChannelFailures:
        """The site bus's failures, a forwarder's own unpacked into its listeners'."""
        failures: list[tuple[Callback, Exception]] = []
        for callback, exc in group.failures:
            if isinstance(exc, ChannelFailures) and callback in self._forwarders.values():
                failures += exc.failures
            else:
                failures.append((callback, exc))
        return _failures(group.channel, failures)

    # -- transitions --------------------------------------------------------

    def start(self) -> None:
        """Start the site bus; a failed start rolls back and raises ``StartError``."""
        self._site_bus.start()

    def stop(self) -> None:
        """Stop the site bus; raises ``ChannelFailures`` after every stop listener ran."""
        try:
            self._site_bus.stop()
        except SiteChannelFailures as group:
            raise self._flattened(group) from None

    def exit(self) -> None:
        """Stop if started, then exit; failures are logged (see the module docstring)."""
        self._site_bus.exit()

    def restart(self) -> None:
        """Stop and re-execute the process; ``block()`` carries it out."""
        self._site_bus.restart()

    def graceful(self) -> None:
        """Publish ``graceful`` while STARTED."""
        self._site_bus.graceful()

    def block(self, interval: float = 0.1) -> None:
        """Run the site bus's ``block()`` in the main thread until the bus exits.

        ``main`` is published every ``interval`` seconds meanwhile, from a
        helper thread, when it has listeners. ``SystemExit`` raised here (by
        a signal handler) exits the bus, then propagates, as with CherryPy.
        """
        ticker = _Ticker(self, interval) if self.listeners.get("main") else None
        try:
            self._site_bus.block()
        except SystemExit:
            self.log("SystemExit raised: shutting down bus")
            self.exit()
            raise
        finally:
            if ticker is not None:
                ticker.stop()

    def wait(
        self, state: State | Iterable[State], interval: float = 0.1, channel: str | None = None
    ) -> None:
        """Return once the bus is in (or has passed through) ``state``, one or several.

        With a ``channel``, publish it every ``interval`` seconds while waiting.
        """
        wanted = {state} if isinstance(state, State) else set(state)
        if channel is None:
            self._site_bus.wait(wanted)
            return
        while not self._site_bus.wait(wanted, interval):
            self.publish(channel)

    def start_with_callback(
        self,
        func: Callback,
        args: tuple[Any, ...] | None = None,
        kwargs: dict[str, Any] | None = None,
    ) -> threading.Thread:
        """Start ``func(*args, **kwargs)`` in a new thread once started; start; return the thread.

        If the start fails, the thread ends without calling ``func``
        (CherryPy's would wait for ever, had the process not ended).
        """
        call_args = () if args is None else args
        call_kwargs = {} if kwargs is None else kwargs
        decided = threading.Event()
        started: list[bool] = []

        def callback() -> None:
            decided.wait()
            if started:
                func(*call_args, **call_kwargs)

        thread = threading.Thread(target=callback)
        thread.name = "Bus Callback " + thread.name
        thread.start()
        try:
            self.start()
            started.append(True)
        finally:
            decided.set()
        return thread

    def log(self, msg: str = "", level: int = INFO, traceback: bool = False) -> None:
        """Log ``msg`` on the site bus; ``traceback``: with the exception being handled."""
        self._site_bus.log(msg, level, exc_info=bool(traceback))


class _Ticker:
    """Publishes ``main`` every ``interval`` seconds on a helper thread until stopped."""

    def __init__(self, bus: Bus, interval: float) -> None:
        self._stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(bus, interval), name="wspbus main", daemon=True
        )
        self._thread.start()

    def _run(self, bus: Bus, interval: float) -> None:
        while not self._stopped.wait(interval):
            try:
                bus.publish("main")
            except ChannelFailures as failures:
                bus.log(str(failures), ERROR)

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()
