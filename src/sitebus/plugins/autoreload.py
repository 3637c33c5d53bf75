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
import importlib.abc
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import TYPE_CHECKING, ClassVar

from ..errors import ChannelFailures, StateError, describe
from ..plugin import Plugin, StartOrder, priority
from ._changes import compile_error, digest, invalidate_bytecode, modified_since, names
from ._reload_options import DEFAULT_IGNORE, AutoreloadOptions
from ._sources import (
    Pattern,
    current_modules,
    is_ignored,
    module_files,
    nearest_existing_dir,
)
from ._watchers import (
    PollingWatcher,
    Watcher,
    WatcherFactory,
    WatcherUnavailable,
    WatchLimitReached,
    default_watcher,
)

if TYPE_CHECKING:
    from ..bus import Bus

__all__ = ["DEFAULT_IGNORE", "Autoreload", "AutoreloadOptions", "Watcher", "WatcherFactory"]

_IMPORT_RESCAN = 0.05  # seconds between sys.modules rescans while an import is under way
_IMPORT_WINDOW = 2.0  # how long after an import starts its module is looked for
_OVERFLOW = "*"
# Carries, across the re-exec, the moment the old process last read the files.
_SINCE_ENV = "SITEBUS_AUTORELOAD_SINCE"
# File timestamps come from a coarse clock that lags the precise one by a few ms.
_MTIME_SLACK_NS = 20_000_000


class _ImportNotifier(importlib.abc.MetaPathFinder):
    """Finds nothing; it only tells the watcher that a module is being imported."""

    def __init__(self, notify: Callable[[], None]) -> None:
        self._notify = notify

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> ModuleSpec | None:
        self._notify()
        return None


class Autoreload(Plugin):
    """Restart the site when its code, config or registered files change.

    Starts at ``StartOrder.AUTORELOAD``: it watches only once everything else has started. A
    stop listener that is safe to call when start never ran. ``watcher_factory``
    is the seam to the OS; by default it follows ``options.backend``.
    """

    channels: ClassVar[tuple[str, ...]] = ("autoreload.watch",)

    def __init__(
        self,
        bus: Bus,
        options: AutoreloadOptions | None = None,
        *,
        watcher_factory: WatcherFactory | None = None,
    ) -> None:
        super().__init__(bus)
        self.options = options = options or AutoreloadOptions()
        self._factory = watcher_factory or functools.partial(
            default_watcher, options.backend, options.poll_interval
        )
        self._lock = threading.Lock()
        self._registered: list[Pattern] = [Pattern(p) for p in options.paths]
        if options.config_file:
            self._registered.append(Pattern(options.config_file))
        # Registered while running, each with the contents it had when registered.
        self._arrivals: list[tuple[Pattern, dict[str, bytes | None]]] = []
        self._thread: threading.Thread | None = None
        self._watcher: Watcher | None = None
        self._finder: _ImportNotifier | None = None
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
        if not self.options.enabled or self._thread is not None:
            return
        self._stopping.clear()
        self._ready.clear()
        self._watcher = self._open_watcher()
        self._finder = _ImportNotifier(self._import_started)
        sys.meta_path.insert(0, self._finder)
        self._thread = threading.Thread(target=self._run, name="sitebus-autoreload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()  # before reading _watcher: see _fall_back
        if self._finder is not None:
            with contextlib.suppress(ValueError):
                sys.meta_path.remove(self._finder)
            self._finder = None
        watcher = self._watcher
        if watcher is not None:
            watcher.interrupt()
        if thread is not threading.current_thread():
            thread.join()
        self._thread = None
        self._watcher = None

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
        return None if watcher is None else watcher.name

    # -- the watcher --------------------------------------------------------

    def _interrupt(self) -> None:
        watcher = self._watcher
        if watcher is not None:
            watcher.interrupt()

    def _import_started(self) -> None:
        self._import_deadline = time.monotonic() + _IMPORT_WINDOW
        self._interrupt()

    def _open_watcher(self) -> Watcher:
        try:
            return self._factory()
        except WatcherUnavailable as exc:
            return self._polling(f"file events are unavailable ({exc})")

    def _polling(self, reason: str) -> Watcher:
        if not self._fell_back:
            self._fell_back = True
            self.bus.log(
                f"Autoreload: {reason}; polling every {self.options.poll_interval:g} s instead",
                logging.WARNING,
            )
        return PollingWatcher(self.options.poll_interval)

    def _fall_back(self, reason: str) -> None:
        """Replace the event watcher with polling, carrying its directories over."""
        old = self._watcher
        assert old is not None
        new = self._polling(reason)
        for directory in old.directories:
            new.add(directory)
        new.commit()
        self._watcher = new  # stop() sets _stopping before reading this: no lost wake-up
        old.close()

    def _add_dir(self, directory: str) -> None:
        watcher = self._watcher
        assert watcher is not None
        try:
            added = watcher.add(directory)
        except WatchLimitReached as exc:
            self._fall_back(str(exc))
            return self._add_dir(directory)
        if not added:  # does not exist yet: watch the nearest ancestor for its creation
            ancestor = nearest_existing_dir(directory)
            if ancestor != directory:
                self._add_dir(ancestor)

    def _run(self) -> None:
        try:
            late = self._prepare()
            self._ready.set()
            watcher = self._watcher
            if watcher is not None:
                self.bus.log(
                    f"Autoreload: watching {len(self._snapshot)} files with {watcher.name}"
                )
            if late and self._consider(late):
                return
            while not self._stopping.is_set():
                watcher = self._watcher
                assert watcher is not None
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
            watcher = self._watcher
            if watcher is not None:
                watcher.close()

    def _idle_timeout(self) -> float | None:
        """None (block until an event) unless a module import is under way."""
        return _IMPORT_RESCAN if time.monotonic() < self._import_deadline else None

    def _prepare(self) -> set[str]:
        """Watch and hash everything; return the files that changed during a re-exec."""
        since = os.environ.pop(_SINCE_ENV, "")
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
            self._add_dir(directory)
        watcher = self._watcher  # polling may have taken over
        assert watcher is not None
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
            watcher = self._watcher
            assert watcher is not None
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
        os.environ[_SINCE_ENV] = str(looked_at)
        try:
            self.bus.restart()
        except StateError as exc:
            # A change seen while start() still runs, before block(): the
            # request waits in the bus, and block() carries it out first thing.
            self.bus.log(f"Autoreload: {exc}; the restart waits for it", logging.WARNING)
            self.bus.request_restart()
        return True
