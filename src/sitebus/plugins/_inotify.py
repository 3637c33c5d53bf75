"""Linux inotify, through the inotify_simple binding: watches that block until the kernel has news.

Why not watchfiles here: its ``watch()`` sleeps in steps (50 ms by default)
and takes the GIL after each one to check for a stop request, so an idle
process still wakes 20 times a second. inotify_simple is a thin, maintained
binding of the kernel calls; with it the watcher thread sleeps in ``poll()``
on the inotify descriptor and a wake-up pipe: no timer, no wake-up while
nothing changes, and a stop request is one byte written to the pipe. ``poll()``
rather than ``select()``, because a site with many sockets open may hand out
descriptor numbers above select's limit of 1024.
"""

from __future__ import annotations

import errno
import os
import select
from typing import Any

from ._watchers import WatcherUnavailable, WatchLimitReached, _Interruptible

__all__ = ["InotifyWatcher"]

_OVERFLOW = "*"  # reported when the kernel queue overflowed: anything may have changed


def _binding() -> Any:
    try:
        import inotify_simple
    except ImportError as exc:
        raise WatcherUnavailable(
            "OS file events need the inotify_simple package: pip install 'sitebus[reload]'"
        ) from exc
    return inotify_simple


class InotifyWatcher(_Interruptible):
    """Watches directories (not recursively) and reports the paths that had events.

    ``wait()`` returns the set of paths touched since the last call; a queue
    overflow is reported as the single path ``"*"``. ``interrupt()`` may be
    called from any thread and makes a pending ``wait()`` return.
    """

    name = "inotify"
    quiet = 0.0

    def __init__(self) -> None:
        binding = _binding()
        flags = binding.flags
        # Everything that can change what a path holds; the plugin compares contents.
        self._mask = (
            flags.MODIFY
            | flags.ATTRIB
            | flags.CLOSE_WRITE
            | flags.MOVED_FROM
            | flags.MOVED_TO
            | flags.CREATE
            | flags.DELETE
            | flags.DELETE_SELF
            | flags.MOVE_SELF
            | flags.ONLYDIR
        )
        self._overflow, self._ignored = flags.Q_OVERFLOW, flags.IGNORED
        try:
            self._inotify = binding.INotify(nonblocking=True)
        except OSError as exc:  # EMFILE: the per-user limit of inotify instances
            raise WatcherUnavailable(f"inotify_init1 failed: {exc.strerror}") from exc
        super().__init__()
        self._poll.register(self._inotify.fileno(), select.POLLIN)
        self._dirs: dict[int, str] = {}
        self._wds: dict[str, int] = {}

    def add(self, directory: str) -> bool:
        """Watch ``directory``; False if it does not exist or cannot be read."""
        if directory in self._wds:
            return True
        try:
            wd = int(self._inotify.add_watch(directory, self._mask))
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                raise WatchLimitReached(
                    f"the inotify watch limit is reached (adding {directory!r});"
                    " raise fs.inotify.max_user_watches"
                ) from exc
            if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return False
            raise
        self._dirs[wd] = directory
        self._wds[directory] = wd
        return True

    @property
    def directories(self) -> frozenset[str]:
        return frozenset(self._wds)

    def wait(self, timeout: float | None) -> set[str]:
        """Block until events arrive, ``interrupt()`` or ``timeout`` seconds."""
        self._sleep(timeout)
        paths: set[str] = set()
        for event in self._inotify.read(timeout=0):
            if event.mask & self._overflow:
                paths.add(_OVERFLOW)
                continue
            directory = self._dirs.get(event.wd)
            if directory is None:
                continue
            if event.mask & self._ignored:  # the directory is gone: its watch went with it
                del self._dirs[event.wd]
                self._wds.pop(directory, None)
            paths.add(os.path.join(directory, event.name) if event.name else directory)
        return paths

    def close(self) -> None:
        """Close the inotify descriptor; the wake-up pipe lives until collected.

        Another thread (an import in progress) may still call ``interrupt()``
        just after this: writing into a closed pipe number could hit a file
        opened since, so the pipe is closed only when nothing refers to it.
        """
        if not self._inotify.closed:
            self._poll.unregister(self._inotify.fileno())
            self._inotify.close()
        self._dirs.clear()
        self._wds.clear()
