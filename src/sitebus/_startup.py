"""The start of a site from the command line, shared by ``sitebus serve`` and ``sitebus run``.

Both hold the garbage collector back while they import apps and engines,
write one log (the root logger's, through the ``Logs`` plugin) whose lines
are held back until the start is over, and then block.
"""

from __future__ import annotations

import gc
import importlib
import logging
import os
import threading
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from ._stderr_log import UNHELD, HeldStderr
from .plugins.logs import Logs, LogsOptions

if TYPE_CHECKING:
    from .bus import Bus
    from .errors import AppError

__all__ = [
    "SLOW_START",
    "Progress",
    "app_traceback",
    "command_log",
    "failed_sources",
    "log_app_failure",
    "pause_collector",
    "resume_collector",
    "start_and_block",
]

# Seconds after which a start still under way says what it is starting: a
# slow app import is not silence, and a start that fails at once still
# prints only its error.
SLOW_START = 1.0


class Progress:
    """Logs ``say()`` once if not cancelled within ``SLOW_START`` seconds, even while held.

    ``cancel()`` returns only once the timer's thread has ended: a daemon
    plugin refuses to fork while another thread runs.
    """

    def __init__(self, say: Callable[[], str]) -> None:
        self._say = say
        self._timer = threading.Timer(SLOW_START, self._log)
        self._timer.daemon = True
        self._timer.start()

    def _log(self) -> None:
        logging.getLogger("sitebus").info(self._say(), extra={UNHELD: True})

    def cancel(self) -> None:
        """The start is over (or past its slow part): say nothing more."""
        self._timer.cancel()
        if self._timer is not threading.current_thread():
            self._timer.join()


def command_log(
    bus: Bus, level: int, options: LogsOptions | None = None
) -> tuple[Logs, HeldStderr]:
    """The log of a command that runs a site: subscribed, standard error held back.

    ``options`` default to the root logger, so the bus, the engine and the
    apps write one log. Where they send records to standard error, a
    ``HeldStderr`` does it instead: at levels above DEBUG, a start that fails
    prints one line (its error) rather than the rollback's log; debug shows
    everything as it happens.
    """
    options = options or LogsOptions(logger="")
    held = HeldStderr(hold=level > logging.DEBUG)
    to_stderr = options.stderr
    if to_stderr is None:
        to_stderr = options.file is None and not options.handlers
    if to_stderr:
        options = options.replace(stderr=False, handlers=(*options.handlers, held))
    logs = Logs(bus, options.replace(level=level))
    logs.subscribe()
    if level > logging.DEBUG:
        # uvicorn's INFO lines retell the bus's ("Started server process",
        # "Shutting down") and would read as if a second server were running.
        logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, level))
    return logs, held


def start_and_block(
    bus: Bus, held: HeldStderr, *, over: Callable[[], None], started: Callable[[], None]
) -> int:
    """Start ``bus``, show or drop the held log, and block; return the exit status.

    ``over`` runs once the start is over, whichever way it went; ``started``
    once it succeeded, after the held lines are written. A failed start
    (or Ctrl-C during it) raises, for the command line to print one line.
    """
    try:
        bus.start()
    except BaseException:
        over()
        held.finish(show=False)
        raise
    over()
    held.finish(show=True)
    started()
    return bus.block()


def pause_collector() -> tuple[int, int, int]:
    """Hold the cyclic garbage collector back while the app and the engine are imported.

    Importing them builds tens of thousands of objects that live as long as
    the process, and the collector scans the pile again and again as it
    grows: about 3% of a start (and of an in-place restart) on the reference
    machine. Returns the thresholds that ``resume_collector`` puts back.
    """
    thresholds = gc.get_threshold()
    gc.set_threshold(0)  # no automatic collection; gc.collect() still works
    return thresholds


def resume_collector(thresholds: tuple[int, int, int]) -> None:
    """Freeze what the imports built, then let the collector run again.

    Frozen objects are out of the collector's sight for good, as the gc
    module's documentation suggests for a server's start-up heap: no pause to
    scan them now, and none in any later full collection either. The price is
    that a reference cycle that became garbage during the imports is never
    freed. An app that set thresholds of its own meanwhile keeps them.
    """
    if gc.get_threshold()[0] == 0:
        gc.freeze()
        gc.set_threshold(*thresholds)


def app_traceback(exc: BaseException) -> str:
    """The traceback of an exception raised by the app's code, without sitebus's frames.

    The import machinery's frames and sitebus's own say nothing about the
    app: what is left points at the file and line of the app that failed.
    """
    ours = (
        "<frozen importlib",
        os.path.dirname(os.path.abspath(__file__)) + os.sep,  # sitebus itself
        os.path.dirname(importlib.__file__) + os.sep,
    )
    summary = traceback.TracebackException.from_exception(exc)
    for part in _chain(summary):
        part.stack = traceback.StackSummary.from_list(
            [frame for frame in part.stack if not frame.filename.startswith(ours)]
        )
    return "".join(summary.format()).rstrip("\n")


def _chain(summary: traceback.TracebackException) -> list[traceback.TracebackException]:
    parts, seen = [summary], {id(summary)}
    for part in parts:
        for linked in (part.__cause__, part.__context__):
            if linked is not None and id(linked) not in seen:
                seen.add(id(linked))
                parts.append(linked)
    return parts


def failed_sources(exc: BaseException) -> list[str]:
    """The source files of the modules whose code raised ``exc`` as they ran.

    A module that fails while it is imported leaves ``sys.modules``, so
    autoreload would not watch it: these are the files to watch for its fix.
    """
    files = []
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        if frame.f_code.co_name == "<module>":
            files.append(frame.f_code.co_filename)
    if isinstance(exc, SyntaxError) and exc.filename:
        files.append(exc.filename)
    return [os.path.abspath(f) for f in dict.fromkeys(files) if os.path.isfile(f)]


def log_app_failure(bus: Bus, error: AppError) -> list[str]:
    """Log why the site's code failed, with its traceback; return the files to watch for a fix.

    For a development server (``--reload``) that keeps serving 500 meanwhile.
    """
    cause = error.__cause__
    message = str(error) if cause is None else f"{error}\n{app_traceback(cause)}"
    bus.log(f"{message}\nServing 500 until a source file changes", logging.ERROR)
    return [] if cause is None else failed_sources(cause)
