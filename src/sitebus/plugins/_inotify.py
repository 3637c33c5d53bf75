"""Linux inotify through ctypes: directory watches that block until the kernel has news.

Why not watchfiles here: its ``watch()`` sleeps in steps (50 ms by default)
and takes the GIL after each one to check for a stop request, so an idle
process still wakes 20 times a second. The kernel interface needs three
libc calls, so this module binds them directly and waits in ``poll()`` on the
inotify descriptor and a wake-up pipe: no timer, no wake-up while nothing
changes, and a stop request is one byte written to the pipe. ``poll()`` rather
than ``select()``, because a site with many sockets open may hand out
descriptor numbers above select's limit of 1024.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import struct
from collections.abc import Callable

from ._watchers import WatcherUnavailable, WatchLimitReached

__all__ = ["InotifyWatcher"]

_IN_MODIFY = 0x002
_IN_ATTRIB = 0x004
_IN_CLOSE_WRITE = 0x008
_IN_MOVED_FROM = 0x040
_IN_MOVED_TO = 0x080
_IN_CREATE = 0x100
_IN_DELETE = 0x200
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800
_IN_Q_OVERFLOW = 0x4000
_IN_IGNORED = 0x8000
_IN_ONLYDIR = 0x01000000
_IN_NONBLOCK = os.O_NONBLOCK
_IN_CLOEXEC = os.O_CLOEXEC

# Everything that can change what a path holds; the caller compares contents.
_MASK = (
    _IN_MODIFY
    | _IN_ATTRIB
    | _IN_CLOSE_WRITE
    | _IN_MOVED_FROM
    | _IN_MOVED_TO
    | _IN_CREATE
    | _IN_DELETE
    | _IN_DELETE_SELF
    | _IN_MOVE_SELF
    | _IN_ONLYDIR
)
_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len of the name that follows
_OVERFLOW = "*"  # reported when the kernel queue overflowed: anything may have changed


def _libc_call(name: str) -> Callable[..., int]:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function: Callable[..., int] = getattr(libc, name)
    except (OSError, AttributeError) as exc:
        raise WatcherUnavailable(f"inotify is not available here: {exc}") from exc
    return function


class InotifyWatcher:
    """Watches directories (not recursively) and reports the paths that had events.

    ``wait()`` returns the set of paths touched since the last call; a queue
    overflow is reported as the single path ``"*"``. ``interrupt()`` may be
    called from any thread and makes a pending ``wait()`` return.
    """

    name = "inotify"
    quiet = 0.0

    def __init__(self) -> None:
        self._add_watch = _libc_call("inotify_add_watch")
        fd = _libc_call("inotify_init1")(_IN_NONBLOCK | _IN_CLOEXEC)
        if fd < 0:
            code = ctypes.get_errno()
            raise WatcherUnavailable(f"inotify_init1 failed: {os.strerror(code)}")
        self._fd = fd
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._poll.register(self._wake_read, select.POLLIN)
        self._dirs: dict[int, str] = {}
        self._wds: dict[str, int] = {}

    def add(self, directory: str) -> bool:
        """Watch ``directory``; False if it does not exist or cannot be read."""
        if directory in self._wds:
            return True
        wd = self._add_watch(self._fd, os.fsencode(directory), _MASK)
        if wd < 0:
            code = ctypes.get_errno()
            if code == errno.ENOSPC:
                raise WatchLimitReached(
                    f"the inotify watch limit is reached (adding {directory!r});"
                    " raise fs.inotify.max_user_watches"
                )
            if code in (errno.ENOENT, errno.ENOTDIR, errno.EACCES):
                return False
            raise OSError(code, os.strerror(code), directory)
        self._dirs[wd] = directory
        self._wds[directory] = wd
        return True

    @property
    def directories(self) -> frozenset[str]:
        return frozenset(self._wds)

    def commit(self) -> None:
        """Nothing to do: the kernel reports events from ``add()`` on."""

    def interrupt(self) -> None:
        with contextlib.suppress(BlockingIOError):  # full: a wake-up is already pending
            os.write(self._wake_write, b"\0")

    def wait(self, timeout: float | None) -> set[str]:
        """Block until events arrive, ``interrupt()`` or ``timeout`` seconds."""
        self._poll.poll(None if timeout is None else max(0, int(timeout * 1000)))
        try:
            while os.read(self._wake_read, 4096):
                pass
        except BlockingIOError:
            pass
        return self._read_events()

    def _read_events(self) -> set[str]:
        paths: set[str] = set()
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return paths
            offset = 0
            while offset < len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size
                name = os.fsdecode(data[offset : offset + length].rstrip(b"\0"))
                offset += length
                if mask & _IN_Q_OVERFLOW:
                    paths.add(_OVERFLOW)
                    continue
                directory = self._dirs.get(wd)
                if directory is None:
                    continue
                if mask & _IN_IGNORED:  # the directory is gone: its watch went with it
                    del self._dirs[wd]
                    self._wds.pop(directory, None)
                paths.add(os.path.join(directory, name) if name else directory)

    def close(self) -> None:
        """Close the inotify descriptor; the wake-up pipe lives until collected.

        Another thread (an import in progress) may still call ``interrupt()``
        just after this: writing into a closed pipe number could hit a file
        opened since, so the pipe is closed only when nothing refers to it.
        """
        if self._fd >= 0:
            self._poll.unregister(self._fd)
            os.close(self._fd)
            self._fd = -1
        self._dirs.clear()
        self._wds.clear()

    def __del__(self) -> None:
        if hasattr(self, "_wake_write"):  # __init__ may have failed before the pipe existed
            os.close(self._wake_read)
            os.close(self._wake_write)
