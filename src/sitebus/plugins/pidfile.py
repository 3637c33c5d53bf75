"""PID file: one file naming the site's process, locked for as long as it runs.

Liveness is decided by the lock, never by ``kill(pid, 0)``: a PID is recycled
by the kernel, so a file naming a live PID may be a stale file from a site
that died, naming an unrelated process. The lock dies with the site (the
kernel drops it with the last descriptor), so "locked" means "the site runs".

The lock is ``flock`` (through ``fcntl``), not a POSIX record lock: a record
lock belongs to the process and is lost when the process closes *any*
descriptor of the file, so a status check inside the site itself would
silently unlock it; ``flock`` belongs to the open file, so checks from
anywhere are safe, and the lock survives a re-exec through an inherited
descriptor.

The file is written whole before it appears at its path (a temporary file,
locked, then linked or renamed into place), so a reader never sees a
half-written PID, and the path's final component is never followed as a
symbolic link.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import stat
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .. import _handover
from .._options import Options, check_range
from ..errors import AlreadyRunningError, ProcessError
from ..plugin import Plugin, StartOrder, priority

if TYPE_CHECKING:
    from ..bus import Bus
    from .privileges import Credentials

__all__ = ["Pidfile", "PidfileOptions", "read_running_pid"]


# The hand-over section: descriptors of held PID files, by path, for the next image.
_SECTION = "pidfile"
_ATTEMPTS = 5  # to win against another site starting at the same moment


class PidfileOptions(Options):
    """``path`` of the PID file; ``mode`` its permission bits (whatever the umask)."""

    path: str | os.PathLike[str]
    mode: int = 0o644

    def __post_init__(self) -> None:
        check_range(self, "mode", 0, 0o777, "permission bits 0 to 777 (octal)")


def read_running_pid(path: str | os.PathLike[str]) -> int | None:
    """The PID of the site holding the lock of the PID file at ``path``; else None.

    None when the file is missing, unlocked (stale) or does not hold a PID.
    The control commands use this so that they never signal a process that
    merely reuses a dead site's PID. A symbolic link at ``path`` raises
    ``ProcessError``, as does a file that cannot be opened for reading.
    """
    fd = _open_existing(Path(path))
    if fd is None:
        return None
    try:
        if not _locked_elsewhere(fd):
            return None
        return _read_pid(fd)
    finally:
        os.close(fd)


def _open_existing(path: Path) -> int | None:
    """Open the file at ``path`` for reading without following a symbolic link."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ProcessError(
                f"PID file {str(path)!r} is a symbolic link; refusing to follow it "
                "(remove it, or use a path in a directory only the site can write to)"
            ) from None
        raise ProcessError(f"cannot open PID file {str(path)!r}: {exc.strerror}") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ProcessError(f"PID file {str(path)!r} is not a regular file")
    return fd


def _locked_elsewhere(fd: int) -> bool:
    """Whether another open file holds the lock; takes and drops a shared lock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    fcntl.flock(fd, fcntl.LOCK_UN)
    return False


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    return int(text) if text.isdigit() else None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open at ``fd`` (not replaced meanwhile)."""
    try:
        at_path = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (at_path.st_dev, at_path.st_ino)


class Pidfile(Plugin):
    """Writes and locks the PID file at start; removes it at stop, unless restarting.

    A restart keeps the file through stop and hands it to the next image at
    exit.

    Start fails with ``AlreadyRunningError`` (``already running as PID N
    (path)``) when a live site holds the file, replaces a stale file with a
    log line, and fails with ``ProcessError`` when the directory is missing or
    not writable. Across a re-exec the file and its lock are kept: the next
    image adopts the inherited descriptor. Before privileges are dropped it
    checks that the new user will be able to remove the file.
    """

    channels = ("privileges.dropping",)

    def __init__(self, bus: Bus, options: PidfileOptions) -> None:
        super().__init__(bus)
        self.options = options
        self.path = Path(os.path.abspath(options.path))
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this process holds the PID file now."""
        return self._fd is not None

    @priority(StartOrder.PIDFILE)
    def start(self) -> None:
        if self._fd is not None:
            return
        self._check_directory()
        self._fd = self._adopt_inherited()
        if self._fd is None:
            self._fd = self._create()
            self.bus.log(f"PID file {self.path} written: PID {os.getpid()}")

    @priority(StartOrder.PIDFILE)
    def stop(self) -> None:
        if self._fd is not None and not self.bus.restarting:
            self._release()

    @priority(StartOrder.PIDFILE)
    def exit(self) -> None:
        """Hand the file over to the re-exec; at a plain exit, remove it (if stop did not)."""
        if self._fd is None:
            return
        if self.bus.restarting:
            fd, self._fd = self._fd, None
            self._hand_over(fd)
        else:
            self._release()

    def _release(self) -> None:
        """Remove the file if it is still ours, then drop the lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path) and _read_pid(fd) == os.getpid():
                os.unlink(self.path)
            else:
                self.bus.log(
                    f"PID file {self.path} was replaced by another process; left in place",
                    logging.WARNING,
                )
        except OSError as exc:
            self.bus.log(f"Could not remove PID file {self.path}: {exc.strerror}", logging.ERROR)
        finally:
            os.close(fd)  # only now: the lock covers the file until it is gone

    def privileges_dropping(self, credentials: Credentials) -> None:
        """Fail the drop now if ``credentials`` could not remove the file at exit."""
        if self._fd is None or credentials.uid == 0:
            return
        directory = os.stat(self.path.parent)
        if not _may_write(directory, credentials):
            raise ProcessError(
                f"after dropping privileges, user {credentials.user!r} could not remove the "
                f"PID file {str(self.path)!r} at exit: it cannot write to the directory; "
                f"give that user write access to {str(self.path.parent)!r} or put the "
                "PID file elsewhere"
            )
        if directory.st_mode & stat.S_ISVTX and credentials.uid != directory.st_uid:
            # In a sticky directory (/tmp) only a file's owner may remove it.
            os.fchown(self._fd, credentials.uid, credentials.gid)

    def _check_directory(self) -> None:
        directory = self.path.parent
        if not directory.is_dir():
            raise ProcessError(
                f"the directory of PID file {str(self.path)!r} does not exist or is not a directory"
            )
        if not os.access(directory, os.W_OK | os.X_OK):
            raise ProcessError(
                f"the directory of PID file {str(self.path)!r} is not writable "
                f"by this process (uid {os.geteuid()})"
            )

    def _create(self) -> int:
        """Write the PID to a locked temporary file, then put it at the path."""
        directory, name = self.path.parent, self.path.name
        try:
            fd, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        except OSError as exc:
            raise ProcessError(
                f"cannot create the PID file {str(self.path)!r}: {exc.strerror}"
            ) from exc
        try:
            os.fchmod(fd, self.options.mode)
            os.write(fd, f"{os.getpid()}\n".encode())
            os.fsync(fd)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours before anyone can see it
            self._put_in_place(temporary)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        return fd

    def _put_in_place(self, temporary: str) -> None:
        for _ in range(_ATTEMPTS):
            existing = _open_existing(self.path)
            if existing is None:
                try:  # link: appears only if nothing is there, never over another site's file
                    os.link(temporary, self.path)
                except FileExistsError:
                    continue
                os.unlink(temporary)
                return
            try:
                if self._replace_stale(existing, temporary):
                    return
            finally:
                os.close(existing)
        raise ProcessError(f"PID file {str(self.path)!r} kept changing while starting; retry")

    def _replace_stale(self, existing: int, temporary: str) -> bool:
        """Replace the file open at ``existing`` if it is stale; False to look again."""
        try:
            # Exclusive: two sites that found the same stale file cannot both replace it.
            fcntl.flock(existing, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if _same_file(existing, self.path):
                raise AlreadyRunningError(_read_pid(existing), str(self.path)) from None
            return False
        if not _same_file(existing, self.path):
            return False
        self.bus.log(
            f"Replacing stale PID file {self.path} (PID {_read_pid(existing)}, not locked)",
            logging.WARNING,
        )
        os.rename(temporary, self.path)
        return True

    def _hand_over(self, fd: int) -> None:
        """Keep the file and its lock across the re-exec: the next image adopts ``fd``."""
        held = _handover.take(_SECTION) or {}
        held[str(self.path)] = fd
        _handover.put(_SECTION, held, held.values())
        self.bus.log(f"PID file {self.path} kept for the re-exec")

    def _adopt_inherited(self) -> int | None:
        """The descriptor a re-exec handed over for this path, if it is still ours."""
        held = _handover.take(_SECTION) or {}
        fd = held.pop(str(self.path), None)
        if held:  # other Pidfile plugins' files
            _handover.put(_SECTION, held, held.values())
        if not isinstance(fd, int):
            return None
        try:
            ours = _same_file(fd, self.path) and _read_pid(fd) == os.getpid()
        except OSError:  # not open any more
            return None
        if not ours:
            os.close(fd)
            return None
        os.set_inheritable(fd, False)
        return fd


def _may_write(directory: os.stat_result, who: Credentials) -> bool:
    """Whether ``who`` may add and remove entries in ``directory`` (mode bits; no ACLs)."""
    if who.uid == directory.st_uid:
        bits = directory.st_mode >> 6
    elif directory.st_gid == who.gid or directory.st_gid in who.groups:
        bits = directory.st_mode >> 3
    else:
        bits = directory.st_mode
    return bits & 0o3 == 0o3
