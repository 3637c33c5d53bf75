"""Autoreload: re-execute the process when the site's source files change.

What is watched: the files of the user's imported modules (not the standard
library nor installed packages, unless asked), the config file, extra paths
and globs from the options, and whatever a framework registers at run time
with ``bus.publish("autoreload.watch", path_or_glob)`` or ``Autoreload.watch``.

How: a thread blocks on OS file events for the directories holding those
files (directories, so that files created later, deleted, or saved by rename
are seen), filters the events down to the watched files, waits for a short
quiet period, and compares content hashes with those taken at start: a touch
does nothing, any change of content counts. Then it checks that every changed
Python file compiles; if one does not, it logs ``file:line: message`` and
keeps the old code serving until the file is fixed. Otherwise it logs the
changed files, removes their cached bytecode, publishes ``reload`` with the
set of changed paths and calls ``bus.restart()``; ``block()`` re-executes the
process in the main thread.

Modules imported after start are picked up through a finder at the head of
``sys.meta_path`` that finds nothing but wakes the watcher thread, which then
rescans ``sys.modules`` for a moment: no timer runs while nothing is imported
or changed.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, ClassVar

from .. import _handover
from .._options import Options, check_range
from ..errors import ChannelFailures, ConfigError, StateError, describe
from ..plugin import Plugin, StartOrder, priority
from ._changes import compile_error, digest, invalidate_bytecode, modified_since, names
from ._sources import (
    DEFAULT_IGNORE,
    ImportNotifier,
    Pattern,
    current_modules,
    is_ignored,
    module_files,
)
from ._watchers import (
    BACKENDS,
    FallbackWatcher,
    Watcher,
    WatcherFactory,
    choose_backend,
    open_watcher,
    why_unavailable,
)

if TYPE_CHECKING:
    from ..bus import Bus

__all__ = ["DEFAULT_IGNORE", "Autoreload", "AutoreloadOptions", "Watcher", "WatcherFactory"]

_IMPORT_RESCAN = 0.05  # seconds between sys.modules rescans while an import is under way
_IMPORT_WINDOW = 2.0  # how long after an import starts its module is looked for
_STOP_TIMEOUT = 2.0  # seconds the stop waits for the watcher thread to end
_OVERFLOW = "*"
# The hand-over section: the moment the old process last read the files.
_SINCE_SECTION = "autoreload"
# File timestamps come from a coarse clock that lags the precise one by a few ms.
_MTIME_SLACK_NS = 20_000_000


class AutoreloadOptions(Options):
    """How the autoreload plugin watches; checked when made.

    ``paths`` are extra files or globs (``templates/**/*.html``), relative to
    the working directory when the plugin is made. ``ignore`` patterns match
    any component of a path. ``debounce`` is the quiet period, in seconds,
    that ends a burst of changes. ``backend`` is "auto" (the best available:
    inotify, watchfiles, polling), "inotify", "watchfiles" or "poll";
    ``poll_interval`` is the period of polling. ``AutoreloadOptions(**table)``
    takes a TOML table as is.
    """

    enabled: bool = True
    paths: tuple[str | os.PathLike[str], ...] = ()
    ignore: tuple[str, ...] = DEFAULT_IGNORE
    include_third_party: bool = False
    debounce: float = 0.05
    config_file: str | os.PathLike[str] | None = None
    backend: str = "auto"
    poll_interval: float = 1.0

    def __post_init__(self) -> None:
        # The types were checked against the annotations; here, what they cannot say.
        if self.backend not in ("auto", *BACKENDS):
            raise ConfigError(
                f"AutoreloadOptions.backend: {self.backend!r} is unknown; expected one of"
                f" {', '.join(('auto', *BACKENDS))}"
            )
        # Bounded above too: poll() takes a C int of milliseconds.
        check_range(self, "debounce", 0, 60, "seconds from 0 to 60")
        check_range(self, "poll_interval", 0.01, 3600, "seconds from 0.01 to 3600")
        if self.config_file is not None:
            object.__setattr__(self, "config_file", os.fspath(self.config_file))
        object.__setattr__(self, "paths", tuple(os.fspath(path) for path in self.paths))


class Autoreload(Plugin):
    """Restart the site when its code, config or registered files change.

    Starts at ``StartOrder.AUTORELOAD``: it watches only once everything else
    has started. A stop listener that is safe to call when start never ran.
    The backend is chosen when the plugin is made (``_watchers.choose_backend``);
    the seams to the OS are ``watcher_factory``, which replaces that choice,
    and ``why_unavailable``, which tells the choice what this machine offers.
    """

    channels: ClassVar[tuple[str, ...]] = ("autoreload.watch",)

    def __init__(
        self,
        bus: Bus,
        options: AutoreloadOptions | None = None,
        *,
        watcher_factory: WatcherFactory | None = None,
        why_unavailable: Callable[[str], str] = why_unavailable,
    ) -> None:
        super().__init__(bus)
        self.options = options = options or AutoreloadOptions()
        self._why_polling = ""  # why "auto" fell back to polling, if it did
        if watcher_factory is None:
            backend, self._why_polling = choose_backend(options.backend, why_unavailable)
            watcher_factory = functools.partial(open_watcher, backend, options.poll_interval)
        self._factory = watcher_factory
        self._lock = threading.Lock()
        self._registered: list[Pattern] = [Pattern(p) for p in options.paths]
        if options.config_file:
            self._registered.append(Pattern(options.config_file))
        # Registered while running, each with the contents it had when registered.
        self._arrivals: list[tuple[Pattern, dict[str, bytes | None]]] = []
        self._thread: threading.Thread | None = None
        self._watcher: FallbackWatcher | None = None
        self._finder: ImportNotifier | None = None
        self._ready = threading.Event()
        self._taken_in = threading.Condition(threading.Lock())  # notified as files are added
        self._stopping = threading.Event()
        self._fell_back = False
        self._import_deadline = 0.0
        # Owned by the watcher thread once it runs:
        self._files: set[str] = set()
        self._patterns: list[Pattern] = []
        self._snapshot: dict[str, bytes | None] = {}
        self._pending: set[str] = set()
        self._seen_modules: set[str] = set()
        self._wanted_dirs: set[str] = set()
        self._aliases: dict[str, str] = {}  # target of a watched symbolic link -> the link
        self._last_error = ""

    # -- the bus side -------------------------------------------------------

    @priority(StartOrder.AUTORELOAD)
    def start(self) -> None:
        if not self.options.enabled:
            return
        if self._thread is not None and self._thread.is_alive():
            if self._stopping.is_set():  # it overran its stop
                message = "Autoreload: not watching: its last thread has not ended"
                self.bus.log(message, logging.WARNING)
            return
        self._stopping.clear()
        self._ready.clear()
        self._watcher = FallbackWatcher(
            self._factory, self.options.poll_interval, self._say_polling, self._why_polling
        )
        self._finder = ImportNotifier(self._import_started)
        sys.meta_path.insert(0, self._finder)
        self._thread = threading.Thread(target=self._run, name="sitebus-autoreload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; waits at most ``_STOP_TIMEOUT`` seconds for the watcher thread.

        The thread ends at its next step once interrupted. One busy elsewhere
        (a slow ``reload`` listener, a file system that hangs) is left to end
        on its own, named in the log, rather than holding up the site's stop.
        """
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()  # before the interrupt: the thread checks it before each wait
        if self._finder is not None:
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self._finder)
            self._finder = None
        self._interrupt()
        if thread is not threading.current_thread():
            thread.join(_STOP_TIMEOUT)
            if thread.is_alive():
                self.bus.log(
                    f"Autoreload: its thread {thread.name!r} has not ended"
                    f" {_STOP_TIMEOUT:g} s after the stop; it will end on its own",
                    logging.WARNING,
                )
                return  # start() waits for it to end before watching again
        self._thread = None

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the files are hashed and watched; False if ``timeout`` passed first.

        An edit made after this returns True is seen; one made before may not be.
        """
        return self._ready.wait(timeout)

    def wait_watching(self, path: str | os.PathLike[str], timeout: float | None = None) -> bool:
        """Wait until the file ``path`` is watched; False if ``timeout`` passed first.

        For a module imported after start, or a path registered with ``watch``
        whose directory had to be added: once this returns True, an edit is seen.
        """
        target = os.path.abspath(os.fspath(path))
        with self._taken_in:
            return self._taken_in.wait_for(lambda: target in self._snapshot, timeout)

    def autoreload_watch(self, path_or_glob: str | os.PathLike[str]) -> None:
        """The ``autoreload.watch`` channel: watch one more path or glob."""
        self.watch(path_or_glob)

    def watch(self, path_or_glob: str | os.PathLike[str]) -> None:
        """Watch ``path_or_glob`` too (a template file or ``templates/**/*.html``).

        Callable from any thread, before or after start; relative paths are
        resolved against the working directory now.
        """
        pattern = Pattern(path_or_glob)
        # Hashed here, in the caller's thread: an edit made right after this
        # call is a change even if the watcher thread takes the path in later.
        baseline = {path: digest(path) for path in pattern.existing_files()}
        if not pattern.is_glob:
            baseline.setdefault(pattern.text, None)
        with self._lock:
            self._registered.append(pattern)
            self._arrivals.append((pattern, baseline))
        self._interrupt()

    @property
    def backend(self) -> str | None:
        """The name of the watcher in use ("inotify", "watchfiles", "polling"), if any."""
        watcher = self._watcher
        return None if watcher is None or self._thread is None else watcher.name

    # -- the watcher --------------------------------------------------------

    def _interrupt(self) -> None:
        watcher = self._watcher
        if watcher is not None:
            watcher.interrupt()

    def _import_started(self) -> None:
        self._import_deadline = time.monotonic() + _IMPORT_WINDOW
        self._interrupt()

    def _say_polling(self, reason: str) -> None:
        if not self._fell_back:
            self._fell_back = True
            self.bus.log(
                f"Autoreload: {reason}; polling every {self.options.poll_interval:g} s instead",
                logging.WARNING,
            )

    def _run(self) -> None:
        watcher = self._watcher
        assert watcher is not None  # set by start() before this thread
        try:
            late = self._prepare()
            self._ready.set()
            self.bus.log(f"Autoreload: watching {len(self._snapshot)} files with {watcher.name}")
            if late and self._consider(late):
                return
            while not self._stopping.is_set():
                touched = watcher.wait(self._idle_timeout())
                if self._stopping.is_set():
                    break
                changed = self._absorb_arrivals() | self._relevant(touched)
                if changed:
                    changed |= self._settle()
                    if not self._stopping.is_set() and self._consider(changed):
                        break
        except Exception as exc:
            self.bus.log(f"Autoreload stopped watching: {describe(exc)}", logging.ERROR, exc)
        finally:
            self._ready.set()
            watcher.close()  # by its waiter, once done waiting: interrupts after do nothing

    def _idle_timeout(self) -> float | None:
        """None (block until an event) unless a module import is under way."""
        return _IMPORT_RESCAN if time.monotonic() < self._import_deadline else None

    def _prepare(self) -> set[str]:
        """Watch and hash everything; return the files that changed during a re-exec."""
        since = str(_handover.take(_SINCE_SECTION) or "")
        self._snapshot, self._pending, self._wanted_dirs = {}, set(), set()
        self._aliases = {}
        self._last_error = ""
        modules = current_modules()
        self._seen_modules = set(modules)
        self._files = module_files(modules, include_third_party=self.options.include_third_party)
        with self._lock:
            registered, self._arrivals = list(self._registered), []  # all hashed below
        self._patterns = []
        for pattern in registered:
            self._add_pattern(pattern)
        # Watch first, then hash: an edit landing in between is still reported.
        self._refresh_dirs()
        snapshot: dict[str, bytes | None] = {}
        for path in self._all_files():
            if self._stopping.is_set():  # a stop right after start need not wait for this
                return set()
            snapshot[path] = digest(path)
        late = modified_since(snapshot, since)
        for path in late:
            snapshot[path] = None  # what this process loaded from it is unknown
        with self._taken_in:
            self._snapshot.update(snapshot)
            self._taken_in.notify_all()
        return late

    def _add_pattern(self, pattern: Pattern) -> None:
        if pattern.is_glob:
            self._patterns.append(pattern)
        else:
            self._files.add(pattern.text)

    def _all_files(self) -> set[str]:
        files = set(self._files)
        for pattern in self._patterns:
            files.update(pattern.existing_files())
        return {f for f in files if not is_ignored(f, self.options.ignore)}

    def _refresh_dirs(self) -> set[str]:
        """Watch every directory that holds or may hold a watched file; return those added."""
        wanted = {os.path.dirname(f) for f in self._files}
        for path in self._files - set(self._aliases.values()):
            if os.path.islink(path):
                # Writes through a link change the target, whose directory reports them.
                target = os.path.realpath(path)
                self._aliases[target] = path
                wanted.add(os.path.dirname(target))
        for pattern in self._patterns:
            wanted.update(pattern.directories())
        self._wanted_dirs |= wanted
        watcher = self._watcher
        assert watcher is not None
        before = watcher.directories
        for directory in sorted(self._wanted_dirs - before):
            watcher.add(directory)
        watcher.commit()
        return set(watcher.directories - before)

    def _absorb_arrivals(self) -> set[str]:
        """Take in newly imported modules and registered paths; return those changed since."""
        modules = current_modules()
        names = modules.keys() - self._seen_modules
        news: set[str] = set()
        if names:
            self._seen_modules.update(names)
            found = module_files(
                {n: modules[n] for n in names}, include_third_party=self.options.include_third_party
            )
            news |= found - self._files
            self._files |= found
        with self._lock:
            arrivals, self._arrivals = self._arrivals, []
        if not (news or arrivals):
            return set()
        for pattern, _baseline in arrivals:
            self._add_pattern(pattern)
        self._refresh_dirs()
        candidates: set[str] = set()
        for pattern, baseline in arrivals:
            for path in baseline.keys() | set(pattern.existing_files()):
                if path not in self._snapshot:
                    self._snapshot[path] = baseline.get(path)
                    candidates.add(path)
        for path in self._all_files() - self._snapshot.keys():
            self._snapshot[path] = digest(path)  # a module imported just now: as it is now
        with self._taken_in:
            self._taken_in.notify_all()
        return candidates

    def _relevant(self, touched: Iterable[str]) -> set[str]:
        """The watched files among the touched paths; picks up created directories."""
        touched = set(touched)
        if _OVERFLOW in touched:  # the kernel dropped events: compare everything
            return self._all_files() | self._snapshot.keys()
        ignore = self.options.ignore
        relevant: set[str] = set()
        new_dir = False
        for path in touched:
            if is_ignored(path, ignore):
                continue
            if path in self._files or any(p.matches(path) for p in self._patterns):
                relevant.add(path)
            elif path in self._aliases:
                relevant.add(self._aliases[path])
            elif self._may_hold_watched(path):
                new_dir = True
        if new_dir and self._refresh_dirs():
            # Files written into a new directory before its watch was added
            # made no event: compare them now.
            relevant |= self._all_files() - self._snapshot.keys()
        return relevant

    def _may_hold_watched(self, path: str) -> bool:
        """True if ``path`` is a directory that a watched file (or glob match) may be in."""
        if not os.path.isdir(path):
            return False
        prefix = path.rstrip(os.sep) + os.sep
        return any(d == path or d.startswith(prefix) for d in self._wanted_dirs) or any(
            p.recursive and path.startswith(p.base()) for p in self._patterns
        )

    def _settle(self) -> set[str]:
        """Collect more changes until ``debounce`` seconds pass without one."""
        watcher = self._watcher
        assert watcher is not None
        # A watcher that already waited for a quiet step before reporting
        # (watchfiles) has done part of the job.
        quiet = self.options.debounce - watcher.quiet
        if quiet <= 0:
            return set()
        deadline = time.monotonic() + max(1.0, 20 * quiet)
        more: set[str] = set()
        while not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            touched = watcher.wait(min(quiet, left))
            if not touched:
                break
            more |= self._relevant(touched)
        return more

    def _consider(self, candidates: set[str]) -> bool:
        """Restart if contents changed and the Python among them compiles; True if asked."""
        looked_at = time.time_ns() - _MTIME_SLACK_NS
        for path in candidates:
            if digest(path) == self._snapshot.get(path):
                self._pending.discard(path)  # touched, or changed back
            else:
                self._pending.add(path)
        if not self._pending:
            return False
        errors = [e for e in map(compile_error, sorted(self._pending)) if e]
        if errors:
            message = "; ".join(errors)
            if message != self._last_error:
                self._last_error = message
                self.bus.log(
                    f"Autoreload: not restarting, the old code keeps serving: {message}",
                    logging.ERROR,
                )
            return False
        changed = frozenset(self._pending)
        self.bus.log(f"Autoreload: {names(changed)} changed; restarting")
        invalidate_bytecode(p for p in changed if p.endswith(".py"))
        try:
            self.bus.publish("reload", changed)
        except ChannelFailures as failures:
            self.bus.log(str(failures), logging.ERROR)
        _handover.put(_SINCE_SECTION, str(looked_at))
        try:
            self.bus.restart()
        except StateError as exc:
            # A change seen while start() still runs, before block(): the
            # request waits in the bus, and block() carries it out first thing.
            self.bus.log(f"Autoreload: {exc}; the restart waits for it", logging.WARNING)
            self.bus.request_restart()
        return True
