"""Every exception sitebus raises, under one base class.

Library code raises these; only the command line turns them into one line and
an exit status.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

__all__ = [
    "AlreadyRunningError",
    "AppError",
    "AutoreloadError",
    "BindError",
    "ChannelFailures",
    "ConfigError",
    "ImportStringError",
    "MissingExtraError",
    "ProcessError",
    "SitebusError",
    "StartError",
    "StateError",
]


class SitebusError(Exception):
    """Base class of every error sitebus raises on purpose."""


class StateError(SitebusError):
    """Raised when a call is not allowed in the bus's current state.

    For example ``start()`` on a bus that is exiting, ``restart()`` when no
    ``block()`` runs to carry it out, or ``block()`` outside the main thread.
    """


class ConfigError(SitebusError, ValueError):
    """Raised when an option names something that does not exist or is not allowed.

    For example an unknown signal or action in the signals map, or a user or
    group that is not in the system's databases. The message quotes the value.
    """


class ProcessError(SitebusError):
    """Raised when the operating system refuses what a process plugin must do.

    For example a PID file directory that is missing or not writable, forking
    while other threads run, or changing user without being root.
    """


class AlreadyRunningError(ProcessError):
    """Raised at start when the PID file is locked by a live site.

    ``pid`` is the PID the file names and ``path`` the PID file.
    """

    def __init__(self, pid: int | None, path: str) -> None:
        named = f"PID {pid}" if pid is not None else "an unknown PID"
        super().__init__(f"already running as {named} ({path})")
        self.pid = pid
        self.path = path


class ChannelFailures(SitebusError, ExceptionGroup[Exception]):
    """Raised by ``publish`` after every listener ran, when some of them raised.

    It is an ``ExceptionGroup``, so ``except*`` works and tracebacks show every
    failure. ``failures`` pairs each exception with the listener that raised it,
    in call order; each exception also carries a note naming its listener.
    """

    channel: str
    failures: tuple[tuple[Callable[..., Any], Exception], ...]

    def __new__(
        cls, channel: str, failures: Sequence[tuple[Callable[..., Any], Exception]]
    ) -> ChannelFailures:
        excs = [exc for _, exc in failures]
        self = super().__new__(cls, _failures_message(channel, failures), excs)
        self.channel = channel
        self.failures = tuple(failures)
        return self

    def __init__(
        self, channel: str, failures: Sequence[tuple[Callable[..., Any], Exception]]
    ) -> None:
        super().__init__(_failures_message(channel, failures), [exc for _, exc in failures])

    def derive(self, excs: Sequence[Exception]) -> ExceptionGroup[Exception]:  # type: ignore[override]  # split() keeps the plain group type
        return ExceptionGroup(self.message, excs)


class StartError(SitebusError):
    """Raised by ``start()`` when a start listener failed.

    By the time it is raised the bus has rolled back: the stop listeners ran and
    the bus is STOPPED again. ``listener`` names the listener that failed; the
    original exception is ``__cause__``.
    """

    def __init__(self, listener: str, cause: BaseException) -> None:
        super().__init__(f"start failed in {listener}: {describe(cause)}")
        self.listener = listener


class AutoreloadError(SitebusError):
    """Raised when the autoreload plugin cannot watch files as configured.

    For example when the ``watchfiles`` backend is asked for and the
    ``sitebus[reload]`` extra is not installed. Malformed options raise
    ``ConfigError``.
    """


class BindError(SitebusError):
    """Raised when a listening address is malformed or cannot be bound or adopted.

    The message quotes the address as given and says what went wrong: a bad
    form, an address in use, a privileged port, an unknown host.
    """


class AppError(SitebusError):
    """Raised when the application's own code fails while it is loaded or started.

    An exception while its module runs, a missing app attribute, or a failed
    ASGI lifespan startup. The app's exception, if any, is ``__cause__``: the
    command line prints its traceback under the one-line message.
    """


class ImportStringError(SitebusError):
    """Raised when a ``"module:attribute"`` string is malformed or does not resolve."""


class MissingExtraError(SitebusError):
    """Raised when an optional dependency is not installed; it names the extra to install."""


def describe(exc: BaseException) -> str:
    """One line for an exception: its type and message, never a traceback."""
    text = str(exc)
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def listener_name(callback: Callable[..., Any]) -> str:
    """The name a log line uses for a listener: ``module.Class.method``."""
    qualname = getattr(callback, "__qualname__", None)
    if qualname is None:
        return repr(callback)
    module = getattr(callback, "__module__", None)
    return f"{module}.{qualname}" if module else str(qualname)


def _failures_message(
    channel: str, failures: Sequence[tuple[Callable[..., Any], Exception]]
) -> str:
    parts = "; ".join(f"{listener_name(fn)}: {describe(exc)}" for fn, exc in failures)
    return f"{len(failures)} listener(s) failed on channel {channel!r}: {parts}"
