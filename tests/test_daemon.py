"""The daemon plugin in real processes: the launcher waits and reports, the daemon detaches."""

from __future__ import annotations

import contextlib
import os
import select
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import WAIT, Child
from sitebus.plugins.pidfile import read_running_pid

Spawn = Callable[..., Child]
SCRIPT = "tests/children/process_site.py"


class Daemons:
    """Daemons the test started: not our children, so ended by signal, seen gone by EOF."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.ended: set[int] = set()

    def facts(self, child: Child) -> dict[str, str]:
        """Read the daemon's ``daemon PID key=value ... fd0 fd1 fd2`` report."""
        words = child.expect("daemon ").split()
        pid = int(words[1])
        self.pids.append(pid)
        facts = dict(word.split("=", 1) for word in words[2:6])
        facts.update(pid=str(pid), fd0=words[6], fd1=words[7], fd2=words[8])
        return facts

    def expect_gone(self, child: Child, pid: int) -> None:
        """The report pipe reaches EOF once the daemon, its last writer, has ended."""
        reports = child._reports
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([reports], [], [], max(0.0, left))
            assert ready, f"daemon {pid} still running after {WAIT} s"
            if not reports.read(4096):
                self.ended.add(pid)
                return


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    tracked = Daemons()
    yield tracked
    for pid in set(tracked.pids) - tracked.ended:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _stop(child: Child, daemons: Daemons, pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    child.expect("stop")
    child.expect("exit")
    child.expect("exited 0")
    daemons.expect_gone(child, pid)


def test_daemon_detaches_and_the_launcher_exits_zero(spawn: Spawn, daemons: Daemons) -> None:
    child = spawn([SCRIPT, "--daemon"])
    assert child.wait() == 0, child.output()
    # The launcher says nothing but the bus log of the start it began (logging
    # is not configured in the child, so the bus log shows on stderr).
    said = [line for line in child.stderr().splitlines() if " INFO sitebus: " not in line]
    assert said == [], child.output()
    facts = daemons.facts(child)
    pid = int(facts["pid"])
    assert pid != child.pid
    assert int(facts["ppid"]) != child.pid
    assert int(facts["sid"]) not in (os.getsid(0), pid), "new session, not its leader"
    assert facts["cwd"] == "/"
    assert facts["umask"] == "022"
    assert facts["fd0"] == facts["fd1"] == facts["fd2"] == "/dev/null"
    child.expect(f"started 0 {pid}")
    _stop(child, daemons, pid)


def test_daemon_appends_to_log_files_with_a_safe_mode(
    spawn: Spawn, daemons: Daemons, tmp_path: Path
) -> None:
    """Relative log paths mean the launch directory, not the daemon's working one."""
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    out.write_text("before\n")
    script = str(Path(SCRIPT).resolve())
    child = spawn([script, "--daemon", "--stdout", "out.log", "--stderr", "err.log"], cwd=tmp_path)
    assert child.wait() == 0, child.output()
    facts = daemons.facts(child)
    assert (facts["fd1"], facts["fd2"]) == (str(out), str(err))
    child.expect("started 0")
    pid = int(facts["pid"])
    _stop(child, daemons, pid)
    assert out.read_text() == "before\nhello from the daemon\n"
    assert err.stat().st_mode & 0o022 == 0, "a new log file is not group/world-writable"


def test_daemon_umask_is_configurable(spawn: Spawn, daemons: Daemons) -> None:
    child = spawn([SCRIPT, "--daemon", "--umask", "027"])
    assert child.wait() == 0, child.output()
    facts = daemons.facts(child)
    assert facts["umask"] == "027"
    child.expect("started 0")
    _stop(child, daemons, int(facts["pid"]))


def test_start_failure_after_the_fork_is_reported_by_the_launcher(
    spawn: Spawn, daemons: Daemons
) -> None:
    child = spawn([SCRIPT, "--daemon", "--fail-start"])
    assert child.wait() == 1
    stderr = child.stderr()
    said = [line for line in stderr.splitlines() if " INFO sitebus: " not in line]
    assert len(said) == 1, child.output()
    assert said[0].startswith("daemon failed to start: Start failed in "), child.output()
    assert "address already in use: 127.0.0.1:8080" in said[0]
    line = child.expect("start-failed")
    assert "address already in use" in line
    daemons.expect_gone(child, 0)


def test_refuses_to_fork_when_threads_run(spawn: Spawn) -> None:
    child = spawn([SCRIPT, "--daemon", "--thread"])
    line = child.expect("start-failed")
    assert "cannot daemonize: other threads are already running (early-worker)" in line
    assert child.wait() == 1


def test_restart_does_not_daemonize_again_and_keeps_the_pid_file(
    spawn: Spawn, daemons: Daemons, tmp_path: Path
) -> None:
    path = tmp_path / "site.pid"
    child = spawn([SCRIPT, "--daemon", "--pidfile", str(path), "--restart-once"])
    assert child.wait() == 0, child.output()
    facts = daemons.facts(child)
    pid = int(facts["pid"])
    child.expect(f"started 0 {pid}")
    assert path.read_text() == f"{pid}\n", "the PID file names the daemon"
    child.expect("graceful")
    child.expect("stop")
    child.expect("exit")
    assert daemons.facts(child)["pid"] == str(pid), "no second fork after the re-exec"
    child.expect(f"started 1 {pid}")
    assert read_running_pid(path) == pid
    _stop(child, daemons, pid)
    assert not path.exists()


def test_failure_inside_the_daemon_itself_is_reported(spawn: Spawn, daemons: Daemons) -> None:
    child = spawn([SCRIPT, "--daemon", "--chdir", "/no/such/directory"])
    assert child.wait() == 1
    stderr = child.stderr()
    assert "daemon failed to start: Start failed in sitebus.plugins.daemon.Daemon.start" in stderr
    assert "No such file or directory" in stderr and "/no/such/directory" in stderr
    child.expect("start-failed")
    daemons.expect_gone(child, 0)


def test_already_running_is_said_where_the_daemon_was_launched(
    spawn: Spawn, daemons: Daemons, tmp_path: Path
) -> None:
    path = tmp_path / "site.pid"
    holder = spawn([SCRIPT, "--pidfile", str(path)])
    holder.expect("started 0")
    child = spawn([SCRIPT, "--daemon", "--pidfile", str(path)])
    assert child.wait() == 1
    assert f"already running as PID {holder.pid} ({path})" in child.stderr(), child.output()
    child.expect("start-failed")
    daemons.expect_gone(child, 0)
    assert read_running_pid(path) == holder.pid


def test_ctrl_c_at_the_launcher_leaves_the_daemon_and_runs_no_site_listener(
    spawn: Spawn, daemons: Daemons
) -> None:
    """Ctrl-C twice while the daemon is still starting: one line, no traceback, status 130."""
    child = spawn([SCRIPT, "--daemon", "--hold-start"])
    child.expect("holding")  # the daemon's start listener, waiting for the test
    for _ in range(2):
        with contextlib.suppress(ProcessLookupError):
            child.signal(signal.SIGINT)
    assert child.wait() == 128 + signal.SIGINT, child.output()
    # Logging is not configured in the child: the bus log of the start it began shows too.
    lines = [line for line in child.stderr().splitlines() if " INFO sitebus: " not in line]
    assert len(lines) == 1 and lines[0].startswith("daemon still starting as PID "), lines
    pid = int(lines[0].removeprefix("daemon still starting as PID ").split(";")[0])
    child.release()
    assert daemons.facts(child)["pid"] == str(pid)
    # The next report is the daemon's: the launcher ran no start, stop or exit listener.
    child.expect(f"started 0 {pid}")
    _stop(child, daemons, pid)
