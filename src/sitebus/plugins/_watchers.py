"""The file-watcher seam of the autoreload plugin, and its three implementations.

A watcher watches directories (not recursively) and reports which paths in
them had events; it never decides what changed. The plugin compares contents,
so a watcher may report too much but must never miss a path. Three kinds:

- ``InotifyWatcher`` (``_inotify.py``, Linux): blocks on kernel events, no
  wake-ups while idle. The default on Linux.
- ``WatchfilesWatcher``: watchfiles' Rust backend (FSEvents, kqueue, Windows);
  it checks for events every 50 ms, so it is the default only where inotify
  is missing. Needs the ``sitebus[reload]`` extra.
- ``PollingWatcher``: stats every entry of the watched directories at an
  interval; the fallback when OS events are unavailable or the inotify watch
  limit is reached.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..errors import AutoreloadError, ConfigError

if TYPE_CHECKING:
    from watchfiles._rust_notify import RustNotify

__all__ = [
    "PollingWatcher",
    "WatchLimitReached",
    "Watcher",
    "WatcherFactory",
    "WatcherUnavailable",
    "WatchfilesWatcher",
    "default_watcher",
]


class WatcherUnavailable(AutoreloadError):
    """The OS offers no file events here (or no more instances of them)."""


class WatchLimitReached(AutoreloadError):
    """The OS refused one more watch: the plugin falls back to polling."""


class Watcher(Protocol):
    """What the plugin needs from a file watcher; ``interrupt`` is thread-safe."""

    name: str
    quiet: float
    """Seconds without events that ``wait()`` itself waits for before it returns."""

    def add(self, directory: str) -> bool:
        """Watch ``directory``; False if it does not exist (yet)."""

    @property
    def directories(self) -> frozenset[str]: ...

    def commit(self) -> None:
        """Report events from now on for every directory added so far."""

    def interrupt(self) -> None:
        """Make a pending or the next ``wait()`` return at once."""

    def wait(self, timeout: float | None) -> set[str]:
        """Block until events, ``interrupt()`` or ``timeout``; return the paths touched."""

    def close(self) -> None: ...


WatcherFactory = Callable[[], Watcher]


def default_watcher(backend: str = "auto", poll_interval: float = 1.0) -> Watcher:
    """The watcher for ``backend``: "auto", "inotify", "watchfiles" or "poll"."""
    if backend == "poll":
        return PollingWatcher(poll_interval)
    if backend == "watchfiles" or (backend == "auto" and not sys.platform.startswith("linux")):
        return WatchfilesWatcher()
    if backend in ("auto", "inotify"):
        from ._inotify import InotifyWatcher

        return InotifyWatcher()
    raise ConfigError(
        f'autoreload backend "{backend}" is unknown; expected "auto", "inotify",'
        ' "watchfiles" or "poll"'
    )


class _Interruptible:
    """A wake-up pipe: ``interrupt()`` from any thread ends a ``_sleep()``."""

    def __init__(self) -> None:
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._wake_read, select.POLLIN)

    def interrupt(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is already pending
            os.write(self._wake_write, b"\0")

    def commit(self) -> None:
        """Nothing to do: a directory is listed, and so watched, when it is added."""

    def _sleep(self, timeout: float | None) -> None:
        self._poll.poll(None if timeout is None else max(0, int(timeout * 1000)))
        with contextlib.suppress(BlockingIOError):
            while os.read(self._wake_read, 4096):
                pass

    def __del__(self) -> None:
        # Closed on collection, not in close(): see InotifyWatcher.close.
        if hasattr(self, "_wake_write"):
            os.close(self._wake_read)
            os.close(self._wake_write)


class PollingWatcher(_Interruptible):
    """Stats each entry of the watched directories every ``interval`` seconds."""

    name = "polling"
    quiet = 0.0

    def __init__(self, interval: float = 1.0) -> None:
        super().__init__()
        self.interval = interval
        self._listings: dict[str, dict[str, tuple[int, int, int]]] = {}

    def add(self, directory: str) -> bool:
        if directory not in self._listings:
            listing = _listing(directory)
            if listing is None:
                return False
            self._listings[directory] = listing
        return True

    @property
    def directories(self) -> frozenset[str]:
        return frozenset(self._listings)

    def wait(self, timeout: float | None) -> set[str]:
        self._sleep(self.interval if timeout is None else min(timeout, self.interval))
        changed: set[str] = set()
        for directory, before in list(self._listings.items()):
            after = _listing(directory)
            if after is None:
                del self._listings[directory]
                changed.add(directory)
                continue
            self._listings[directory] = after
            for name in before.keys() | after.keys():
                if before.get(name) != after.get(name):
                    changed.add(os.path.join(directory, name))
        return changed

    def close(self) -> None:
        self._listings.clear()


def _listing(directory: str) -> dict[str, tuple[int, int, int]] | None:
    listing: dict[str, tuple[int, int, int]] = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=True)
                except OSError:  # vanished between listing and stat
                    continue
                listing[entry.name] = (st.st_mtime_ns, st.st_size, st.st_ino)
    except OSError:
        return None
    return listing


class _StopFlag:
    """What RustNotify polls between its steps: set by ``interrupt()``."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def is_set(self) -> bool:
        return self.event.is_set()


class WatchfilesWatcher:
    """watchfiles' Rust backend; it re-creates its notifier when directories are added."""

    name = "watchfiles"

    def __init__(self, step_ms: int = 50) -> None:
        self.quiet = step_ms / 1000  # it reports once a step passed with no new event
        try:
            from watchfiles._rust_notify import RustNotify
        except ImportError as exc:
            raise AutoreloadError(
                "the watchfiles backend of autoreload needs the watchfiles package:"
                " pip install 'sitebus[reload]'"
            ) from exc
        self._rust_notify = RustNotify
        self._step_ms = step_ms
        self._dirs: set[str] = set()
        self._notify: RustNotify | None = None
        self._stop = _StopFlag()

    def add(self, directory: str) -> bool:
        if directory in self._dirs:
            return True
        if not os.path.isdir(directory):
            return False
        self._dirs.add(directory)
        self.close()  # the notifier watches a fixed set: commit() makes a new one
        return True

    def commit(self) -> None:
        if self._notify is None and self._dirs:
            # debug off, no forced polling, poll delay (unused), not recursive,
            # ignore directories that cannot be read.
            self._notify = self._rust_notify(sorted(self._dirs), False, False, 300, False, True)

    @property
    def directories(self) -> frozenset[str]:
        return frozenset(self._dirs)

    def interrupt(self) -> None:
        self._stop.event.set()

    def wait(self, timeout: float | None) -> set[str]:
        if self._stop.event.is_set():
            self._stop.event.clear()
            return set()
        self.commit()
        if self._notify is None:  # nothing to watch yet
            self._stop.event.wait(timeout)
            self._stop.event.clear()
            return set()
        timeout_ms = 0 if timeout is None else max(1, int(timeout * 1000))
        # It returns once a step passes with no new event (at most 1 s after the
        # first), after "timeout" with none, or when interrupted.
        result = self._notify.watch(1000, self._step_ms, timeout_ms, self._stop)
        self._stop.event.clear()
        if isinstance(result, str):  # "timeout", "stop" or "signal"
            return set()
        return {path for _change, path in result}

    def close(self) -> None:
        if self._notify is not None:
            self._notify.close()
            self._notify = None
