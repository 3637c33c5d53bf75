"""The command line's log: one line per message on stderr, held back until the start is over.

Lines read ``[2026-11-28 00:16:34,123] INFO sitebus: Bus started``, the same
for the bus's own messages and for stdlib ``logging`` records (the engine's,
the app's), at one level.

Records of stdlib loggers join through a handler on the root logger, put in
place once ``logging`` is loaded: at once if it already is, else right after
something first imports it. The bus's messages arrive on its ``log`` channel:
once ``logging`` is loaded they go on as records of the stdlib logger
``sitebus``, so handlers added there see them as before; until then nobody
can have added one, and they are written directly. A site whose app and
engine never use ``logging`` therefore never loads it, which is about 5 ms of
every start and in-place restart on the reference machine.
"""

from __future__ import annotations

import sys
import threading
import time

TYPE_CHECKING = False  # typing is not imported at run time: see bus.py
if TYPE_CHECKING:
    import logging
    import types
    from collections.abc import Callable, Sequence
    from importlib.machinery import ModuleSpec
    from typing import TextIO

__all__ = ["StderrLog"]

FORMAT = "[%(asctime)s] %(levelname)s %(name)s: %(message)s"
LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}
_LEVEL_NAMES = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


class StderrLog:
    """Writes the site's log lines to ``stream``, holding them back while ``hold`` is true.

    Subscribe ``bus_message`` to the bus's ``log`` channel; ``finish()`` ends
    the hold once the start is over. A start that fails drops what was held,
    so that the command prints one line (its error) rather than the
    rollback's log; ``--log-level debug`` shows everything as it happens.
    """

    def __init__(self, level: str, *, hold: bool, stream: TextIO | None = None) -> None:
        self.level = LEVELS[level]
        self._stream = stream or sys.stderr
        self._lock = threading.Lock()
        self._held: list[str] | None = [] if hold else None
        self._hook: _AfterImport | None = None
        self._handler: logging.Handler | None = None  # on the root logger
        self._stdlib: logging.Logger | None = None  # "sitebus", once logging is loaded

    def bus_message(self, message: str, level: int, exc: BaseException | None) -> None:
        """The ``log`` channel's listener: the bus's messages, as logger ``sitebus``."""
        stdlib = self._stdlib
        if stdlib is not None:
            stdlib.log(level, message, exc_info=exc)
            return
        if level < self.level:
            return
        created = time.time()
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created))
        name = _LEVEL_NAMES.get(level, f"Level {level}")
        line = f"[{stamp},{int(created % 1 * 1000):03d}] {name} sitebus: {message}"
        if exc is not None:
            import traceback  # only when a traceback is shown: rare

            line += "\n" + "".join(traceback.format_exception(exc)).rstrip("\n")
        self.write(line)

    def write(self, line: str) -> None:
        """Write one line, or keep it back while the start is under way."""
        with self._lock:
            if self._held is not None:
                self._held.append(line)
            else:
                self._emit((line,))

    def finish(self, *, show: bool) -> None:
        """Stop holding; write what was held if ``show``, else drop it."""
        with self._lock:
            held, self._held = self._held, None
            if show and held:
                self._emit(held)

    def _emit(self, lines: Sequence[str]) -> None:
        """Write under the lock, so that lines of two threads never interleave."""
        for line in lines:
            self._stream.write(line + "\n")
        self._stream.flush()

    def take_stdlib_records(self) -> None:
        """Route stdlib ``logging`` through this log, now or once it is imported."""
        if "logging" in sys.modules:
            self._install_root_handler()
        elif self._hook is None:
            self._hook = _AfterImport("logging", self._install_root_handler)
            sys.meta_path.insert(0, self._hook)

    def release_stdlib_records(self) -> None:
        """Undo ``take_stdlib_records``: remove the root handler, or the hook still waiting."""
        if self._hook is not None:
            self._hook.cancel()
            self._hook = None
        if self._handler is not None:
            import logging

            logging.getLogger().removeHandler(self._handler)
            self._handler = self._stdlib = None

    def _install_root_handler(self) -> None:
        import logging

        root = logging.getLogger()
        handler = self._handler = _handler_class()(self)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)
        root.setLevel(self.level)
        self._stdlib = logging.getLogger("sitebus")
        if self.level > logging.DEBUG:
            # uvicorn's INFO lines retell the bus's ("Started server process",
            # "Shutting down") and would read as if a second server were running.
            logging.getLogger("uvicorn.error").setLevel(max(logging.WARNING, self.level))


def _handler_class() -> Callable[[StderrLog], logging.Handler]:
    """The root handler's class, made only once ``logging`` is loaded."""
    import logging

    class ToStderrLog(logging.Handler):
        def __init__(self, log: StderrLog) -> None:
            super().__init__()
            self.log = log

        def emit(self, record: logging.LogRecord) -> None:
            try:
                self.log.write(self.format(record))
            except Exception:
                self.handleError(record)

    return ToStderrLog


class _AfterImport:
    """A ``sys.meta_path`` entry that calls ``then()`` right after ``name`` is first imported.

    It finds nothing itself: it asks the finders after it for the module,
    wraps the ``exec_module`` of the loader they return, and leaves
    ``sys.meta_path`` once the module has run.
    """

    def __init__(self, name: str, then: Callable[[], None]) -> None:
        self._name = name
        self._then = then

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> ModuleSpec | None:
        if fullname != self._name or self not in sys.meta_path:
            return None
        after = sys.meta_path[sys.meta_path.index(self) + 1 :]
        for finder in after:
            find_spec = getattr(finder, "find_spec", None)
            spec: ModuleSpec | None = find_spec(fullname, path, target) if find_spec else None
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then(module: types.ModuleType) -> None:
            exec_module(module)
            self.cancel()
            self._then()

        loader.exec_module = exec_then  # type: ignore[method-assign]  # this spec's loader only
        return spec

    def cancel(self) -> None:
        """Leave ``sys.meta_path`` without calling ``then``."""
        if self in sys.meta_path:
            sys.meta_path.remove(self)
