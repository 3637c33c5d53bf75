"""The one self-pipe of sitebus: wake a thread that sleeps in select() without a lock.

A Python signal handler runs in the main thread between bytecodes, possibly in
the middle of code that holds one of the bus's locks; taking any lock or
waiting on an Event there can deadlock. Writing one byte to a non-blocking pipe
cannot: a full pipe means a wake-up is already pending, so the write is dropped
and requests coalesce. A waiter sleeps in ``select`` (or a selector, through
``fileno()``) on the read end, which the kernel wakes at once, so there is no
polling interval.

Every part of sitebus that must be woken (``block()``, the server engines'
accept loops, the file watchers) uses this class, with one rule for closing:
the owner closes it once its waiter has returned, and a ping after that does
nothing.
"""

from __future__ import annotations

import contextlib
import os
import select


class Wakeup:
    """The two ends of a non-blocking, close-on-exec pipe."""

    def __init__(self) -> None:
        self.closed = False
        self._read_fd, self.write_fd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def fileno(self) -> int:
        """The read end, to register with a selector or ``select``."""
        return self._read_fd

    def ping(self) -> None:
        """Wake the waiter; safe in a signal handler and from any thread."""
        if self.closed:
            return
        # Full: a wake-up is already pending, so this one coalesces.
        with contextlib.suppress(OSError):
            os.write(self.write_fd, b"\0")

    def drain(self) -> None:
        """Empty the pipe, so that the next wait sleeps until the next ping."""
        try:
            while os.read(self._read_fd, 4096):
                pass
        except BlockingIOError:
            pass

    def wait(self, timeout: float | None = None) -> None:
        """Sleep until pinged (or ``timeout`` seconds), then drain the pipe."""
        select.select([self._read_fd], [], [], timeout)
        self.drain()

    def close(self) -> None:
        """Close both ends; later pings do nothing. Closing twice is harmless.

        A thread that passed the ``closed`` check just before this runs could
        still write once; that needs a new descriptor to take the same number
        within those few instructions, a window we accept over leaking pipes
        until the garbage collector finds them (tracebacks kept in timing
        records hold on to the objects that reference this one).
        """
        if self.closed:
            return
        self.closed = True
        os.close(self._read_fd)
        os.close(self.write_fd)
