"""A self-pipe that lets a signal handler wake the main thread without a lock.

A Python signal handler runs in the main thread between bytecodes, possibly in
the middle of code that holds one of the bus's locks; taking any lock or
waiting on an Event there can deadlock. Writing one byte to a non-blocking pipe
cannot: a full pipe means a wake-up is already pending, so the write is dropped
and requests coalesce. ``block()`` sleeps in ``select`` on the read end, which
the kernel wakes at once, so there is no polling interval.
"""

from __future__ import annotations

import os
import select


class Wakeup:
    """The two ends of a non-blocking, non-inheritable pipe."""

    def __init__(self) -> None:
        self.closed = False
        self._read_fd, self.write_fd = os.pipe()
        for fd in (self._read_fd, self.write_fd):
            os.set_blocking(fd, False)

    def ping(self) -> None:
        """Wake the waiter; safe in a signal handler and from any thread."""
        if self.closed:
            return
        # Full: a wake-up is already pending, so this one coalesces.
        try:
            os.write(self.write_fd, b"\0")
        except OSError:
            pass

    def wait(self, timeout: float | None = None) -> None:
        """Sleep until pinged (or ``timeout`` seconds), then drain the pipe."""
        select.select([self._read_fd], [], [], timeout)
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        """Close both ends; later pings do nothing.

        A thread that passed the ``closed`` check just before this runs could
        still write once; that needs a new descriptor to take the same number
        within those few instructions, a window we accept over leaking pipes
        until the garbage collector finds them (tracebacks kept in timing
        records hold on to the objects that reference this one).
        """
        self.closed = True
        os.close(self._read_fd)
        os.close(self.write_fd)
