"""``run_reporting.py`` as PID 1 of a new PID namespace: ``unshare --pid --fork`` execs it.

Run as ``run_as_pid1.py <run arguments>``. This process becomes ``unshare``
(same PID, same report pipe), whose one child is the namespace's PID 1: the
``sitebus run`` under test. ``--kill-child`` kills it if ``unshare`` dies.
"""

from __future__ import annotations

import os
import sys

UNSHARE = "/usr/bin/unshare"
REPORTING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "run_reporting.py")

if __name__ == "__main__":
    command = [UNSHARE, "--pid", "--fork", "--kill-child"]
    os.execv(UNSHARE, [*command, sys.executable, "-u", REPORTING, *sys.argv[1:]])
