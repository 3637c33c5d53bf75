"""Signals: turn process signals into bus requests that ``block()`` carries out.

A handler runs in the main thread between two bytecodes, possibly while that
thread holds one of the bus's locks, so it must not take a lock, log or wait.
Each handler here only calls one of the bus's signal-safe ``request_*``
methods, which record the request and wake ``block()``; a burst of the same
signal coalesces into one action there.

Handlers are installed by ``subscribe()`` (not at start: a signal that lands
while the site is starting must already be handled) and the previous handlers
are put back, in reverse order, by ``unsubscribe()``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Mapping
from types import FrameType, MappingProxyType
from typing import TYPE_CHECKING, Any

from .._options import Options
from ..bus import WARNING, State
from ..errors import ConfigError, StateError
from ..plugin import Plugin

if TYPE_CHECKING:
    from ..bus import Bus

    Handler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None

__all__ = ["ACTIONS", "DEFAULT_ACTIONS", "Signals", "SignalsOptions"]

ACTIONS = ("exit", "restart", "graceful", "ignore", "none")
"""What a signal can do: ``exit``, ``restart`` (re-exec), ``graceful``,
``ignore`` (SIG_IGN) or ``none`` (the plugin leaves that signal alone)."""

DEFAULT_ACTIONS: Mapping[str, str] = MappingProxyType(
    {"SIGTERM": "exit", "SIGINT": "exit", "SIGHUP": "restart", "SIGUSR1": "graceful"}
)


class SignalsOptions(Options):
    """Which signal does what.

    ``actions`` maps signal names (``"SIGTERM"`` or ``"TERM"``, any case) to
    one of ``ACTIONS``; its entries are laid over ``DEFAULT_ACTIONS``, so
    ``{"SIGUSR2": "graceful"}`` adds one and ``{"SIGHUP": "none"}`` removes
    one. With ``terminal_hangup_exits`` a SIGHUP whose action is ``restart``
    exits instead while standard input or output is a terminal: there it means
    the terminal went away, not "reload" (a daemonized site has no terminal).
    Unknown names raise ``ConfigError`` here, before anything is installed.
    """

    actions: Mapping[str, str] = MappingProxyType({})
    terminal_hangup_exits: bool = True

    def __post_init__(self) -> None:
        merged = {**DEFAULT_ACTIONS}
        for name, action in self.actions.items():
            merged[_signal_name(name)] = action
        unknown = {name: action for name, action in merged.items() if action not in ACTIONS}
        if unknown:
            wanted = ", ".join(ACTIONS)
            bad = ", ".join(f"{name}={action!r}" for name, action in unknown.items())
            raise ConfigError(f"unknown signal action(s) {bad}: expected one of {wanted}")
        # The merged map, validated; object.__setattr__ because the class is frozen.
        object.__setattr__(self, "actions", MappingProxyType(merged))

    def handled(self) -> dict[signal.Signals, str]:
        """The signals the plugin installs a handler for, with their actions."""
        return {
            signal.Signals[name]: action
            for name, action in self.actions.items()
            if action != "none"
        }


# The bus is between two steady states: a second Ctrl-C there cuts it short.
_TRANSITIONS = frozenset({State.STARTING, State.STOPPING, State.EXITING})


def _signal_name(name: str) -> str:
    """``"term"``, ``"TERM"`` or ``"SIGTERM"`` → ``"SIGTERM"``; else ConfigError."""
    upper = name.strip().upper()
    full = upper if upper.startswith("SIG") else f"SIG{upper}"
    valid = {s.name for s in signal.valid_signals() if isinstance(s, signal.Signals)}
    if full not in valid or full in ("SIGKILL", "SIGSTOP"):
        raise ConfigError(
            f"unknown or unhandleable signal {name!r}: expected a name such as "
            "'SIGTERM', 'SIGHUP' or 'SIGUSR2'"
        )
    return full


def _on_terminal() -> bool:
    """Whether fd 0 or 1 is a terminal: an isatty() system call, safe in a handler."""
    return os.isatty(0) or os.isatty(1)


class Signals(Plugin):
    """Installs the handlers of ``options`` on ``subscribe()``, restores on ``unsubscribe()``.

    Only the main thread may install handlers; from any other thread
    ``subscribe()`` raises ``StateError``. SIGTERM and SIGINT exit with status
    0: being asked to stop is not a failure. A second SIGINT while the bus is
    starting or stopping raises ``KeyboardInterrupt`` there, so Ctrl-C twice
    aborts a start that hangs or a stop that waits for requests; a repeated
    SIGTERM coalesces.
    """

    def __init__(self, bus: Bus, options: SignalsOptions | None = None) -> None:
        super().__init__(bus)
        self.options = options if options is not None else SignalsOptions()
        self._previous: list[tuple[signal.Signals, Handler]] = []
        self._interrupted = False  # a Ctrl-C arrived since the last start began
        self._hangup_on_terminal = False  # set by the handler, logged by state()

    def subscribe(self) -> None:
        """Install a handler for every signal in the map (once; again does nothing)."""
        if threading.current_thread() is not threading.main_thread():
            raise StateError(
                "signal handlers can only be installed from the main thread, "
                f"not from {threading.current_thread().name!r}"
            )
        super().subscribe()
        if self._previous:
            return
        for signum, action in self.options.handled().items():
            previous = signal.signal(signum, self._handler(signum, action))
            self._previous.append((signum, previous))

    def unsubscribe(self) -> None:
        """Put the previous handlers back, in reverse order of installation."""
        if self._previous and threading.current_thread() is not threading.main_thread():
            raise StateError("signal handlers can only be restored from the main thread")
        while self._previous:
            signum, previous = self._previous.pop()
            # None: the previous handler was not installed from Python; the
            # closest we can restore is the default action.
            signal.signal(signum, signal.SIG_DFL if previous is None else previous)
        super().unsubscribe()

    def state(self, state: State) -> None:
        """A new start begins with no Ctrl-C pending; a terminal's hangup is logged here."""
        if state is State.STARTING:
            self._interrupted = False
        if self._hangup_on_terminal and state in (State.STOPPING, State.EXITING):
            # The handler only recorded it: it must not log (it may run while
            # this thread holds a lock the log path takes).
            self._hangup_on_terminal = False
            self.bus.log(
                "SIGHUP while on a terminal: the terminal went away, so exiting "
                "instead of restarting (terminal_hangup_exits)",
                WARNING,
            )

    def _interrupt(self, _signum: int, _frame: FrameType | None) -> None:
        # A start listener may hang (a database that does not answer), and a
        # stop waits for the requests in flight. Requests wait for block(), so
        # a second Ctrl-C during either transition raises KeyboardInterrupt, as
        # Python's own handler would: start() then rolls back, block() gives up
        # on the stop. Only SIGINT, a person at the keyboard: a burst of
        # SIGTERM from a supervisor must still coalesce.
        if self._interrupted and self.bus.state in _TRANSITIONS:
            raise KeyboardInterrupt
        self._interrupted = True
        self.bus.request_exit()

    def _handler(self, signum: signal.Signals, action: str) -> Handler:
        bus = self.bus
        if action == "ignore":
            return signal.SIG_IGN
        if action == "exit" and signum is signal.SIGINT:
            return self._interrupt
        if action == "exit":
            return lambda _signum, _frame: bus.request_exit()
        if action == "graceful":
            return lambda _signum, _frame: bus.request_graceful()
        if signum is signal.SIGHUP and self.options.terminal_hangup_exits:

            def hangup(_signum: int, _frame: FrameType | None) -> None:
                # Decided when the signal lands, not at install: the daemon
                # plugin detaches from the terminal after handlers are installed.
                if _on_terminal():
                    self._hangup_on_terminal = True
                    bus.request_exit()
                else:
                    bus.request_restart()

            return hangup
        return lambda _signum, _frame: bus.request_restart()
