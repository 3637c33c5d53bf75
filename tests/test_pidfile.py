"""The PID file: written whole, locked, never followed as a link, removed only if ours."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Child
from sitebus import Bus, StartError, State
from sitebus.errors import AlreadyRunningError, ProcessError
from sitebus.plugins.pidfile import Pidfile, PidfileOptions, read_running_pid

Spawn = Callable[..., Child]
SCRIPT = "tests/children/process_site.py"


@pytest.fixture
def logged(bus: Bus) -> list[str]:
    lines: list[str] = []
    bus.subscribe("log", lambda message, level, exc: lines.append(f"{message} [{level}]"))
    return lines


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (tmp_path's parents are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="sitebus-pid-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def _pidfile(bus: Bus, path: Path) -> Pidfile:
    plugin = Pidfile(bus, PidfileOptions(path=path))
    plugin.subscribe()
    return plugin


def test_written_locked_with_mode_0644_and_removed_at_stop(bus: Bus, tmp_path: Path) -> None:
    path = tmp_path / "site.pid"
    _pidfile(bus, path)
    old_umask = os.umask(0o077)
    try:
        bus.start()
    finally:
        os.umask(old_umask)
    assert path.read_text() == f"{os.getpid()}\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert read_running_pid(path) == os.getpid()
    assert [p.name for p in tmp_path.iterdir()] == ["site.pid"], "no temporary file left"
    bus.stop()
    assert not path.exists()
    assert read_running_pid(path) is None


def test_stop_when_start_never_ran_does_nothing(bus: Bus, tmp_path: Path) -> None:
    _pidfile(bus, tmp_path / "site.pid")
    bus.exit()
    assert not (tmp_path / "site.pid").exists()


def test_live_holder_makes_start_fail_with_one_clear_line(
    bus: Bus, spawn: Spawn, tmp_path: Path
) -> None:
    path = tmp_path / "site.pid"
    holder = spawn([SCRIPT, "--pidfile", str(path)])
    holder.expect("started 0")
    assert read_running_pid(path) == holder.pid
    _pidfile(bus, path)
    with pytest.raises(StartError) as info:
        bus.start()
    cause = info.value.__cause__
    assert isinstance(cause, AlreadyRunningError)
    assert str(cause) == f"already running as PID {holder.pid} ({path})"
    assert bus.state is State.STOPPED
    assert path.read_text() == f"{holder.pid}\n", "the holder's file is untouched"

    second = spawn([SCRIPT, "--pidfile", str(path)])
    line = second.expect("start-failed")
    assert f"already running as PID {holder.pid} ({path})" in line
    assert second.wait() != 0
    holder.signal(signal.SIGTERM)
    holder.expect("stop")
    assert holder.wait() == 0
    assert not path.exists()


def test_stale_file_naming_a_live_unrelated_pid_is_replaced_with_a_log_line(
    bus: Bus, tmp_path: Path, logged: list[str]
) -> None:
    """PID 1 is alive but does not hold the lock: kill(pid, 0) would be fooled."""
    path = tmp_path / "site.pid"
    path.write_text("1\n")
    assert read_running_pid(path) is None
    _pidfile(bus, path)
    bus.start()
    assert path.read_text() == f"{os.getpid()}\n"
    stale = [line for line in logged if line.startswith(f"Replacing stale PID file {path}")]
    assert len(stale) == 1 and "(PID 1, not locked)" in stale[0] and "[30]" in stale[0]
    bus.stop()


def test_symlink_at_the_path_is_refused_and_its_target_untouched(bus: Bus, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    path = tmp_path / "site.pid"
    path.symlink_to(target)
    _pidfile(bus, path)
    with pytest.raises(StartError, match="is a symbolic link"):
        bus.start()
    assert target.read_text() == "keep me\n"
    assert path.is_symlink()
    with pytest.raises(ProcessError, match="symbolic link"):
        read_running_pid(path)


def test_missing_directory_is_a_clear_error_at_start(bus: Bus, tmp_path: Path) -> None:
    _pidfile(bus, tmp_path / "missing" / "site.pid")
    with pytest.raises(StartError, match="does not exist"):
        bus.start()


def test_unwritable_directory_is_a_clear_error_at_start(spawn: Spawn, open_dir: Path) -> None:
    path = open_dir / "site.pid"
    child = spawn([SCRIPT, "--become", "nobody", "--pidfile", str(path)])
    line = child.expect("start-failed")
    assert f"the directory of PID file '{path}' is not writable" in line
    assert child.wait() == 1


def test_file_replaced_by_another_process_is_left_at_stop(
    bus: Bus, tmp_path: Path, logged: list[str]
) -> None:
    path = tmp_path / "site.pid"
    _pidfile(bus, path)
    bus.start()
    other = tmp_path / "other"
    other.write_text("12345\n")
    other.rename(path)
    bus.stop()
    assert path.read_text() == "12345\n"
    assert any("replaced by another process" in line for line in logged)


def test_restart_keeps_the_file_and_its_lock(spawn: Spawn, tmp_path: Path) -> None:
    path = tmp_path / "site.pid"
    child = spawn([SCRIPT, "--pidfile", str(path), "--restart-once"])
    child.expect("started 0")
    child.expect("graceful")
    child.expect("stop")
    child.expect("exit")
    child.expect("started 1")
    assert path.read_text() == f"{child.pid}\n"
    assert read_running_pid(path) == child.pid, "the lock survived the exec"
    child.signal(signal.SIGTERM)
    child.expect("stop")
    child.expect("exit")
    child.expect("exited 0")
    assert child.wait() == 0
    assert not path.exists()
    # Kept for the restart only, not at the final exit.
    assert child.stderr().count("kept for the re-exec") == 1, child.output()


def test_dropped_user_that_could_not_remove_the_file_fails_the_start(
    spawn: Spawn, open_dir: Path
) -> None:
    """Reported at start, while still root: so the rollback can remove the file."""
    path = open_dir / "site.pid"
    child = spawn([SCRIPT, "--pidfile", str(path), "--user", "nobody"])
    line = child.expect("start-failed")
    assert "user 'nobody' could not remove the PID file" in line, child.output()
    assert child.wait() == 1
    assert not path.exists()


def test_dropped_user_removes_the_file_at_exit(spawn: Spawn, open_dir: Path) -> None:
    nobody = pwd.getpwnam("nobody")
    os.chown(open_dir, nobody.pw_uid, nobody.pw_gid)
    path = open_dir / "site.pid"
    child = spawn([SCRIPT, "--pidfile", str(path), "--user", "nobody"])
    child.expect("started 0")
    child.expect("ids 65534,65534,65534")
    assert read_running_pid(path) == child.pid
    child.signal(signal.SIGTERM)
    child.expect("stop")
    child.expect("exit")
    child.expect("exited 0")
    assert child.wait() == 0
    assert not path.exists()


def test_read_running_pid_from_the_site_itself_keeps_the_lock(bus: Bus, tmp_path: Path) -> None:
    """flock, not a POSIX record lock: closing a second descriptor drops nothing."""
    path = tmp_path / "site.pid"
    _pidfile(bus, path)
    bus.start()
    assert read_running_pid(path) == os.getpid()
    assert read_running_pid(path) == os.getpid()
    bus.stop()


def test_dropped_user_can_remove_the_file_from_a_sticky_directory(
    spawn: Spawn, open_dir: Path
) -> None:
    """In a sticky world-writable directory (like /tmp) the file is given to the user."""
    open_dir.chmod(0o1777)
    path = open_dir / "site.pid"
    child = spawn([SCRIPT, "--pidfile", str(path), "--user", "nobody"])
    child.expect("started 0")
    child.expect("ids 65534,65534,65534")
    assert path.stat().st_uid == pwd.getpwnam("nobody").pw_uid
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    child.signal(signal.SIGTERM)
    child.expect("stop")
    child.expect("exit")
    child.expect("exited 0")
    assert child.wait() == 0
    assert not path.exists()
