"""``sitebus run`` as PID 1 of a new PID namespace, as in a container, for real.

``unshare --pid --fork`` (util-linux) makes the command PID 1 of a namespace
of its own; the tests find its host PID as the one child of ``unshare`` and
signal it from outside, as ``docker stop`` or the kubelet would. The site's
app (``tests/site_apps/init_app.py``) says where it runs, runs a command and
leaves an orphan behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import WAIT, Child
from sitebus._init import fork_init
from test_run import RUN_SITES, SITE_APPS, expect, listening_port, write_site
from test_servers import get

Spawn = Callable[..., Child]
UNSHARE = "/usr/bin/unshare"

SITE = """
[[server]]
bind = "127.0.0.1:0"

[[app]]
mount = "/"
wsgi = "init_app:app"
"""


@pytest.fixture(scope="module", autouse=True)
def _new_pid_namespaces() -> None:
    """Skip, saying why, where PID namespaces cannot be made (no util-linux, not root)."""
    if not os.access(UNSHARE, os.X_OK):
        pytest.skip(f"needs {UNSHARE} (util-linux) to make a PID namespace")
    done = subprocess.run(
        [UNSHARE, "--pid", "--fork", "--kill-child", "true"],
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"unshare --pid is not permitted here: {done.stderr.strip()}")


def children(pid: int) -> list[int]:
    """The host PIDs of ``pid``'s children."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as listed:
            found += [int(word) for word in listed.read().split()]
    return found


def status(pid: int) -> dict[str, str]:
    """``/proc/PID/status`` as a dict: ``State``, ``PPid``, ``NSpid``, ..."""
    with open(f"/proc/{pid}/status") as lines:
        return dict(line.rstrip("\n").split(":\t", 1) for line in lines if ":\t" in line)


def ns_pids(parent: int) -> list[str]:
    """The PIDs of ``parent``'s children as their own namespace numbers them."""
    found = []
    for pid in children(parent):
        with contextlib.suppress(FileNotFoundError):  # reaped meanwhile
            found.append(status(pid)["NSpid"].split()[-1])
    return found


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` within ``WAIT``: the kernel tells nobody else that a zombie was reaped."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT} s: {what}"
        time.sleep(0.02)


def run_as_pid1(spawn: Spawn, tmp_path: Path) -> tuple[Child, int, int]:
    """``sitebus run`` as PID 1; the child (``unshare``), the init's host PID and the port."""
    site = write_site(tmp_path, SITE)
    child = spawn([str(RUN_SITES / "run_as_pid1.py"), str(site)], cwd=SITE_APPS)
    port = listening_port(child)
    (init,) = children(child.pid)
    return child, init, port


def test_as_pid1_the_site_runs_in_a_child_and_a_sigterm_to_pid1_stops_it(
    spawn: Spawn, tmp_path: Path
) -> None:
    child, init, port = run_as_pid1(spawn, tmp_path)
    assert status(init)["NSpid"].split()[-1] == "1"
    (site,) = children(init)
    code, body = get(port, "/")
    assert code == 200 and body.endswith(b" ppid=1"), body
    assert body == f"pid={status(site)['NSpid'].split()[-1]} ppid=1".encode()
    os.kill(init, signal.SIGTERM)
    expect(child, "exited 0")  # the site, then its init
    expect(child, "exited 0")
    assert child.wait() == 0, child.output()
    assert not os.path.exists(f"/proc/{site}"), "the site's process was reaped"


def test_as_pid1_orphans_are_reaped_and_the_apps_children_keep_their_status(
    spawn: Spawn, tmp_path: Path
) -> None:
    child, init, port = run_as_pid1(spawn, tmp_path)
    assert get(port, "/exit7") == (200, b"7"), "subprocess.run saw its child's own status"
    code, body = get(port, "/orphan")
    assert code == 200 and body.startswith(b"orphan pid=") and body.endswith(b" ppid=1"), body
    orphan = body.split()[1].removeprefix(b"pid=").decode()  # went to the init, and exited
    # It has exited: it is the init's zombie until the init reaps it.
    wait_until(
        lambda: orphan not in ns_pids(init), f"the init reaps PID {orphan} (in its namespace)"
    )
    os.kill(init, signal.SIGTERM)
    expect(child, "exited 0")
    expect(child, "exited 0")
    assert child.wait() == 0, child.output()


def test_as_pid1_signals_are_forwarded_and_a_restart_keeps_the_site_child(
    spawn: Spawn, tmp_path: Path
) -> None:
    """SIGHUP to PID 1 re-executes the site in place; the init does not notice."""
    child, init, port = run_as_pid1(spawn, tmp_path)
    (site,) = children(init)
    before = get(port, "/")
    os.kill(init, signal.SIGHUP)
    assert listening_port(child) == port
    assert get(port, "/") == before
    assert children(init) == [site]
    os.kill(init, signal.SIGINT)
    expect(child, "exited 0")
    expect(child, "exited 0")
    assert child.wait() == 0, child.output()


def test_as_pid1_a_site_killed_by_signal_n_makes_pid1_exit_128_plus_n(
    spawn: Spawn, tmp_path: Path
) -> None:
    child, init, _ = run_as_pid1(spawn, tmp_path)
    (site,) = children(init)
    os.kill(site, signal.SIGKILL)
    expect(child, f"exited {128 + signal.SIGKILL}")
    assert child.wait() == 128 + signal.SIGKILL, child.output()


def test_not_pid1_no_fork() -> None:
    """Anywhere but PID 1 the command runs the site in its own process."""
    assert os.getpid() != 1
    assert fork_init() is None
