"""Where the bus log goes: stdlib handlers, text or JSON lines, an optional file.

The bus writes its log to a stdlib logger (``sitebus`` unless the bus was
given another) and publishes it on the ``log`` channel. This plugin gives
that logger its handlers: standard error, a file opened for appending, and any
stdlib handlers the site adds (syslog, a queue), each writing plain text or
one JSON object per line. ``graceful`` reopens the file, so logrotate can move
it away and the next line lands in a fresh file at the same path.

It takes effect on ``subscribe()`` rather than in a start listener, so the
bus's own "Bus starting" line and the log of a failed start already go where
the site wants them; ``unsubscribe()`` puts the logger's previous handlers,
level and propagation back, leaving a host process or a test as it was.

The module is named ``logs`` rather than ``logging`` so that
``from sitebus.plugins import logs`` cannot shadow the standard library's
``logging`` in the importing module, the way ``signals``, ``threads`` and
``tasks`` name their services in the plural.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

from .._logformat import TEXT_FORMAT, JsonFormatter, TextFormatter
from .._options import Options
from ..errors import ConfigError, describe
from ..plugin import Plugin, StartOrder, priority

if TYPE_CHECKING:
    from ..bus import Bus

__all__ = [
    "FORMATS",
    "TEXT_FORMAT",
    "JsonFormatter",
    "Logs",
    "LogsOptions",
    "TextFormatter",
]

FORMATS = ("text", "json")


class LogsOptions(Options):
    """Where the log goes and in which form.

    - ``format``: ``"text"`` (``text_format``, a stdlib format string) or
      ``"json"`` (one object per line); times are ISO-8601 UTC in both.
    - ``file``: a path appended to, made absolute at ``subscribe()`` so a
      later ``chdir`` (daemonizing) does not move it; None for no file.
    - ``stderr``: also write to standard error; None means only when neither
      ``file`` nor ``handlers`` is given.
    - ``handlers``: further stdlib handlers; those without a formatter get
      this plugin's for as long as it is subscribed.
    - ``level``: the logger's level, a number or a name such as ``"DEBUG"``.
    - ``logger``: the stdlib logger to configure; None for the bus's own
      (``sitebus``), ``""`` for the root logger, which catches the
      applications' logs too.
    - ``propagate``: let records also reach the parent loggers' handlers.
      False by default, so a line is not written twice when the host has
      configured the root logger.
    """

    format: str = "text"
    file: str | os.PathLike[str] | None = None
    stderr: bool | None = None
    handlers: Sequence[logging.Handler] = ()
    level: int | str = logging.INFO
    logger: str | None = None
    propagate: bool = False
    text_format: str = TEXT_FORMAT

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ConfigError(f"log format {self.format!r} is not one of {', '.join(FORMATS)}")
        level_number(self.level)
        try:
            TextFormatter(self.text_format)
        except ValueError as exc:
            raise ConfigError(
                f"text_format {self.text_format!r} is not a logging format string: {exc}"
            ) from exc
        if not isinstance(self.handlers, tuple):
            object.__setattr__(self, "handlers", tuple(self.handlers))


def level_number(level: int | str) -> int:
    """The number of a log level given by number or name; a clear error otherwise."""
    if isinstance(level, int) and not isinstance(level, bool) and level >= 0:
        return level
    if isinstance(level, str):
        number = logging.getLevelNamesMapping().get(level.upper())
        if number is not None:
            return number
    names = ", ".join(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    raise ConfigError(f"log level {level!r} is not one of {names} or a number >= 0")


class _AppendingFile(logging.StreamHandler[TextIO]):
    """A handler on a file opened for appending, which ``reopen()`` swaps for a fresh one."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(self._open())

    def _open(self) -> TextIO:
        return open(self.path, "a", encoding="utf-8")

    def reopen(self) -> None:
        """Open the path anew, then switch to it; on failure the old file stays in use."""
        old = self.setStream(self._open())
        if old is not None:
            old.close()

    def close(self) -> None:
        self.acquire()
        try:
            if not self.stream.closed:
                self.stream.flush()
                self.stream.close()
        finally:
            self.release()
        super().close()


class _Saved:
    """The logger as the plugin found it.

    A plain class: a NamedTuple's string annotations would be evaluated with
    ``compile()`` at import, on the path every ``sitebus serve`` takes.
    """

    __slots__ = ("handlers", "level", "propagate")

    def __init__(self, handlers: list[logging.Handler], level: int, propagate: bool) -> None:
        self.handlers = handlers
        self.level = level
        self.propagate = propagate


class Logs(Plugin):
    """Configures the bus's stdlib logger on subscribe; restores it on unsubscribe.

    Also forwards the ``log`` channel into that logger when the bus does not
    already write there (a bus made with ``logger=None``, or ``logger``
    naming a logger the bus's records do not reach), so no line is lost and
    none is written twice.
    """

    def __init__(self, bus: Bus, options: LogsOptions | None = None) -> None:
        super().__init__(bus)
        self.options = options or LogsOptions()
        name = self.options.logger
        if name is None:
            name = bus.logger.name if bus.logger is not None else "sitebus"
        self.logger = logging.getLogger(name) if name else logging.getLogger()
        self._saved: _Saved | None = None
        self._owned: list[logging.Handler] = []
        self._formatted: list[logging.Handler] = []
        self._file: _AppendingFile | None = None

    def __repr__(self) -> str:
        return f"<Logs {self.options.format} to {[type(h).__name__ for h in self._handlers()]}>"

    def subscribe(self) -> None:
        """Give the logger this plugin's handlers, then subscribe ``graceful`` and ``log``.

        A log file that cannot be opened raises ``ConfigError`` and leaves the
        logger untouched.
        """
        if self._saved is None:
            self._configure()
        super().subscribe()

    def unsubscribe(self) -> None:
        """Put the logger back as it was and close the file this plugin opened."""
        super().unsubscribe()
        if self._saved is not None:
            self._restore(self._saved)
            self._saved = None

    # -- listeners ----------------------------------------------------------

    @priority(StartOrder.LOGS)
    def graceful(self) -> None:
        """Reopen the log file (after logrotate moved it); failures are logged."""
        self.reopen()

    def log(self, message: str, level: int, exc: BaseException | None) -> None:
        """Forward the ``log`` channel when the bus's own records do not reach the logger."""
        if not self._reached_by(self.bus.logger):
            self.logger.log(level, message, exc_info=exc)

    def reopen(self) -> None:
        """Reopen the log file at its path; on failure keep writing to the old one."""
        if self._file is None:
            return
        try:
            self._file.reopen()
        except OSError as exc:
            self.bus.log(
                f"Could not reopen log file {self._file.path}: {describe(exc)}; "
                "still writing to the file open before",
                logging.ERROR,
            )

    # -- helpers ------------------------------------------------------------

    def _reached_by(self, source: logging.Logger | None) -> bool:
        """Do records logged on ``source`` reach this plugin's logger's handlers?"""
        logger: logging.Logger | None = source
        while logger is not None:
            if logger is self.logger:
                return True
            if not logger.propagate:
                return False
            logger = logger.parent
        return False

    def _handlers(self) -> list[logging.Handler]:
        return [*self._owned, *self.options.handlers]

    def _configure(self) -> None:
        options = self.options
        formatter: logging.Formatter = (
            JsonFormatter() if options.format == "json" else TextFormatter(options.text_format)
        )
        owned: list[logging.Handler] = []
        if options.file is not None:
            path = os.path.abspath(os.fspath(options.file))
            try:
                self._file = _AppendingFile(path)
            except OSError as exc:
                raise ConfigError(
                    f"log file {path!r} cannot be opened for appending: {describe(exc)}"
                ) from exc
            owned.append(self._file)
        stderr = options.stderr
        if stderr is None:
            stderr = options.file is None and not options.handlers
        if stderr:
            owned.append(logging.StreamHandler(sys.stderr))
        for handler in owned:
            handler.setFormatter(formatter)
        self._formatted = [h for h in options.handlers if h.formatter is None]
        for handler in self._formatted:
            handler.setFormatter(formatter)
        self._owned = owned

        logger = self.logger
        self._saved = _Saved(list(logger.handlers), logger.level, logger.propagate)
        for handler in self._saved.handlers:
            logger.removeHandler(handler)
        for handler in self._handlers():
            logger.addHandler(handler)
        logger.setLevel(level_number(options.level))
        logger.propagate = options.propagate

    def _restore(self, saved: _Saved) -> None:
        logger = self.logger
        for handler in self._handlers():
            logger.removeHandler(handler)
        for handler in saved.handlers:
            logger.addHandler(handler)
        logger.setLevel(saved.level)
        logger.propagate = saved.propagate
        for handler in self._formatted:
            handler.setFormatter(None)
        for handler in self._owned:
            handler.close()
        self._owned, self._formatted, self._file = [], [], None
