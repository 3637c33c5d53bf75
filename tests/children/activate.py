"""Starts ``python -u ARGS`` the way systemd passes sockets: as descriptors 3, 4, ...

Run as ``activate.py FD,FD,... ARGS``: the listed inherited descriptors
become 3, 4, ... in that order, ``LISTEN_FDS`` their count and ``LISTEN_PID``
this process's PID, which the exec keeps (``SITEBUS_TEST_LISTEN_PID``, when
set, is written instead: a PID that is not the site's). ``LISTEN_FDNAMES``
is passed on as the test set it. The report and hold pipes are moved out of
the way first, so that the test still hears from the site.
"""

from __future__ import annotations

import fcntl
import os
import sys

FIRST = 3


def main() -> None:
    sources = [int(fd) for fd in sys.argv[1].split(",") if fd]
    args = sys.argv[2:]
    above = FIRST + len(sources)  # every descriptor kept moves above the targets
    targets = set(range(FIRST, above))
    for variable in ("SITEBUS_TEST_REPORT_FD", "SITEBUS_TEST_HOLD_FD"):
        fd = int(os.environ[variable])
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD, above)  # inheritable, as F_DUPFD makes it
        os.environ[variable] = str(moved)
        if fd not in targets:
            os.close(fd)
    staged = [fcntl.fcntl(fd, fcntl.F_DUPFD, above) for fd in sources]
    for fd in set(sources):  # a test may pass one socket twice
        if fd not in targets:
            os.close(fd)
    for index, fd in enumerate(staged):
        os.dup2(fd, FIRST + index)  # inheritable
        os.close(fd)
    os.environ["LISTEN_FDS"] = str(len(sources))
    os.environ["LISTEN_PID"] = os.environ.pop("SITEBUS_TEST_LISTEN_PID", str(os.getpid()))
    os.execv(sys.executable, [sys.executable, "-u", *args])


if __name__ == "__main__":
    main()
