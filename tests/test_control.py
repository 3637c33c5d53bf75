"""``sitebus status|stop|reload|graceful --pidfile``: real sites, found by their PID file's lock."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import WAIT, Child
from sitebus.cli import main

Spawn = Callable[..., Child]
SITE = "tests/children/process_site.py"
# A live process that is not a site: it only waits, and would die of any of
# the control signals (their default action ends the process).
BYSTANDER = "from report import report, hold; report('ready'); hold()"


def sitebus(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sitebus`` to completion."""
    return subprocess.run(
        [sys.executable, "-m", "sitebus", *args], capture_output=True, text=True, timeout=WAIT
    )


def site(spawn: Spawn, path: Path, *extra: str) -> Child:
    """A running site holding the PID file at ``path``."""
    child = spawn([SITE, "--pidfile", str(path), *extra])
    child.expect(f"started 0 {child.pid}")
    return child


def test_status_prints_the_pid_of_the_running_site_and_exits_0(
    spawn: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "site.pid"
    child = site(spawn, path)
    done = sitebus("status", "--pidfile", str(path))
    assert (done.returncode, done.stdout, done.stderr) == (0, f"{child.pid}\n", "")


def test_stop_returns_0_only_once_the_site_has_exited(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "site.pid"
    child = site(spawn, path)
    done = sitebus("stop", "--pidfile", str(path))
    assert (done.returncode, done.stderr) == (0, ""), done
    assert done.stdout == f"stopped (PID {child.pid})\n"
    # Already gone (a zombie waiting for us), not merely signalled: no wait needed.
    assert child.process.poll() == 0, child.output()
    child.expect("stop")
    assert not path.exists()
    again = sitebus("status", "--pidfile", str(path))
    assert (again.returncode, again.stdout) == (3, "not running\n")


def test_without_pidfd_stop_waits_on_the_lock_and_still_returns_once_the_site_is_gone(
    spawn: Spawn,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The fallback where ``os.pidfd_open`` is missing (not Linux): signal by PID, poll the lock."""
    monkeypatch.delattr(os, "pidfd_open")
    path = tmp_path / "site.pid"
    child = site(spawn, path)
    assert main(["stop", "--pidfile", str(path)]) == 0
    assert capsys.readouterr().out == f"stopped (PID {child.pid})\n"
    child.expect("stop")
    assert not path.exists()  # the site released the lock only when it removed the file
    assert child.wait() == 0


def test_stop_of_a_site_that_does_not_exit_fails_with_one_line_and_leaves_it_running(
    spawn: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "site.pid"
    child = site(spawn, path, "--signal", "SIGTERM=graceful")
    done = sitebus("stop", "--pidfile", str(path), "--timeout", "0.2")
    assert done.returncode == 1
    assert done.stderr == (
        f"sitebus: error: the site (PID {child.pid}, PID file {str(path)!r}) is still "
        "running 0.2 s after SIGTERM; it was not killed\n"
    )
    child.expect("graceful")  # it got the SIGTERM
    assert child.process.poll() is None


def test_reload_sends_sighup_and_the_site_restarts_in_place(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "site.pid"
    child = site(spawn, path)
    done = sitebus("reload", "--pidfile", str(path))
    assert (done.returncode, done.stdout) == (0, f"sent SIGHUP to PID {child.pid}\n")
    child.expect("stop")
    child.expect("exit")
    child.expect(f"started 1 {child.pid}")
    assert sitebus("status", "--pidfile", str(path)).stdout == f"{child.pid}\n"


def test_graceful_sends_sigusr1(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "site.pid"
    child = site(spawn, path)
    done = sitebus("graceful", "--pidfile", str(path))
    assert (done.returncode, done.stdout) == (0, f"sent SIGUSR1 to PID {child.pid}\n")
    child.expect("graceful")
    assert child.process.poll() is None


def test_unlocked_file_naming_a_live_process_is_not_running_and_it_is_never_signalled(
    spawn: Spawn, tmp_path: Path
) -> None:
    """A recycled PID: the file is stale (no lock), whoever has that PID now is left alone."""
    bystander = spawn(["-c", BYSTANDER])
    bystander.expect("ready")
    path = tmp_path / "site.pid"
    path.write_text(f"{bystander.pid}\n")
    status = sitebus("status", "--pidfile", str(path))
    assert (status.returncode, status.stdout) == (3, "not running\n")
    stop = sitebus("stop", "--pidfile", str(path))
    assert (stop.returncode, stop.stdout) == (0, "not running\n")
    for command in ("reload", "graceful"):
        done = sitebus(command, "--pidfile", str(path))
        assert done.returncode == 1
        assert done.stderr == (
            f"sitebus: error: not running: no running site holds the PID file {str(path)!r}\n"
        )
    assert bystander.process.poll() is None, "the bystander was signalled"
    assert path.read_text() == f"{bystander.pid}\n"


def test_missing_pid_file_is_not_running(tmp_path: Path) -> None:
    """LSB: status 3; stopping a stopped site succeeds (0); reload and graceful fail (1)."""
    path = str(tmp_path / "none.pid")
    status = sitebus("status", "--pidfile", path)
    assert (status.returncode, status.stdout, status.stderr) == (3, "not running\n", "")
    stop = sitebus("stop", "--pidfile", path)
    assert (stop.returncode, stop.stdout, stop.stderr) == (0, "not running\n", "")
    for command in ("reload", "graceful"):
        done = sitebus(command, "--pidfile", path)
        assert (done.returncode, done.stdout) == (1, "")
        assert done.stderr.count("\n") == 1 and "not running" in done.stderr


def test_symlink_pid_file_is_one_line_and_status_1(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text(f"{os.getpid()}\n")
    path = tmp_path / "site.pid"
    path.symlink_to(target)
    done = sitebus("status", "--pidfile", str(path))
    assert done.returncode == 1
    assert done.stderr.startswith(f"sitebus: error: PID file {str(path)!r} is a symbolic link")
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("command", ["status", "stop", "reload", "graceful"])
def test_each_control_command_has_help_naming_its_pid_file_option(command: str) -> None:
    done = sitebus(command, "--help")
    assert done.returncode == 0
    assert f"usage: sitebus {command} " in done.stdout and "--pidfile PATH" in done.stdout


def test_control_command_without_pidfile_is_a_usage_error() -> None:
    done = sitebus("status")
    assert done.returncode == 2
    assert "--pidfile" in done.stderr
