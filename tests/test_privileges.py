"""Dropping privileges, for real: children run as root and become ``nobody``."""

from __future__ import annotations

import errno
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Child
from sitebus import Bus, StartError
from sitebus.errors import ConfigError
from sitebus.plugins.privileges import Privileges, PrivilegesOptions, resolve

Spawn = Callable[..., Child]
SCRIPT = "tests/children/process_site.py"
NOBODY = pwd.getpwnam("nobody")
SRC = Path(__file__).parent.parent / "src"
CHILDREN = Path(__file__).parent / "children"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


def _ids(line: str) -> tuple[str, str, str, str]:
    _, uids, gids, groups, regain = line.split()
    return uids, gids, groups.removeprefix("groups="), regain.removeprefix("regain=")


def _stop(child: Child) -> None:
    child.signal(signal.SIGTERM)
    child.expect("stop")
    child.expect("exit")
    child.expect("exited 0")
    assert child.wait() == 0


def test_drop_to_nobody_sets_all_ids_and_groups_irrevocably(spawn: Spawn) -> None:
    child = spawn([SCRIPT, "--user", "nobody"])
    child.expect("started 0")
    uids, gids, groups, regain = _ids(child.expect("ids"))
    uid, gid = NOBODY.pw_uid, NOBODY.pw_gid
    assert uids == f"{uid},{uid},{uid}"
    assert gids == f"{gid},{gid},{gid}"
    expected = sorted(os.getgrouplist("nobody", gid))
    assert groups == ",".join(map(str, expected))
    assert regain == str(errno.EPERM), "setuid(0) must fail after the drop"
    _stop(child)


def test_group_by_number_and_no_supplementary_groups(spawn: Spawn) -> None:
    child = spawn([SCRIPT, "--user", str(NOBODY.pw_uid), "--group", "0", "--no-supplementary"])
    child.expect("started 0")
    uids, gids, groups, regain = _ids(child.expect("ids"))
    assert uids == f"{NOBODY.pw_uid}," * 2 + str(NOBODY.pw_uid)
    assert gids == "0,0,0"
    assert groups == ""
    assert regain == str(errno.EPERM)
    _stop(child)


def _python_nobody_can_run() -> str | None:
    """An interpreter of this version that nobody may execute: the re-exec needs one.

    The test interpreter may live where only root can reach it (``/root/.pyenv``).
    """
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for python in (sys.executable, shutil.which(version, path="/usr/local/bin:/usr/bin")):
        if python is None:
            continue
        try:
            subprocess.run([python, "-c", ""], user="nobody", check=True, timeout=30)
        except (OSError, subprocess.SubprocessError):
            continue
        return python
    return None


@pytest.fixture
def tree_nobody_can_read() -> Iterator[Path]:
    """A copy of ``src/sitebus`` and ``tests/children`` that user nobody can read.

    A process that dropped to nobody and then re-executes must open its
    script and import sitebus again as nobody, from a directory it may enter.
    The checkout may sit where nobody cannot (a private 0700 temporary
    directory, /root), so the test runs from this copy: world-readable files
    in a fresh directory under the system's temporary directory.
    """
    tree = Path(tempfile.mkdtemp(prefix="sitebus-as-nobody-"))
    try:
        ignore = shutil.ignore_patterns("__pycache__")
        shutil.copytree(SRC / "sitebus", tree / "src" / "sitebus", ignore=ignore)
        shutil.copytree(CHILDREN, tree / "children", ignore=ignore)
        for path in [tree, *tree.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield tree
    finally:
        shutil.rmtree(tree)


def _unreadable_by_nobody(python: str, tree: Path) -> str | None:
    """Why user nobody cannot run the copy's child from ``tree``, or None if it can."""
    probe = subprocess.run(
        [python, "-c", "import report, sitebus, process_site"],
        user="nobody",
        cwd=tree,
        env={"PYTHONPATH": f"{tree / 'src'}{os.pathsep}{tree / 'children'}"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return probe.stderr.strip().splitlines()[-1] if probe.returncode else None


def test_restart_after_the_drop_does_not_fail(
    spawn: Spawn, monkeypatch: pytest.MonkeyPatch, tree_nobody_can_read: Path
) -> None:
    """After the re-exec the process already is nobody: the plugin checks and goes on.

    It runs from a copy that nobody can read, wherever the checkout is.
    """
    python = _python_nobody_can_run()
    if python is None:
        pytest.skip("no interpreter that user nobody may execute for the re-exec")
    tree = tree_nobody_can_read
    why = _unreadable_by_nobody(python, tree)
    if why is not None:
        pytest.skip(f"user nobody cannot import the copy in {tree}: {why}")
    with monkeypatch.context() as patch:
        patch.setattr(sys, "executable", python)
        patch.setenv("PYTHONPATH", str(tree / "src"))  # the venv's path file is not read by it
        script = str(tree / "children" / "process_site.py")
        child = spawn([script, "--user", "nobody", "--restart-once"], cwd=tree)
    child.expect("started 0")
    child.expect("ids")
    child.expect("graceful")
    child.expect("stop")
    child.expect("exit")
    child.expect(f"started 1 {child.pid}")
    uids, _, _, regain = _ids(child.expect("ids"))
    assert uids == f"{NOBODY.pw_uid},{NOBODY.pw_uid},{NOBODY.pw_uid}"
    assert regain == str(errno.EPERM)
    _stop(child)


def test_changing_user_when_not_root_is_a_clear_error(spawn: Spawn) -> None:
    child = spawn([SCRIPT, "--become", "nobody", "--user", "daemon"])
    line = child.expect("start-failed")
    assert f"this process runs as uid {NOBODY.pw_uid}, not root" in line
    assert "'daemon'" in line
    assert child.wait() == 1


def test_already_the_requested_user_when_not_root_is_fine(spawn: Spawn) -> None:
    child = spawn([SCRIPT, "--become", "nobody", "--user", "nobody"])
    child.expect("started 0")
    child.expect(f"ids {NOBODY.pw_uid},")
    _stop(child)


@pytest.mark.parametrize(
    ("user", "group", "message"),
    [
        ("no-such-user", None, "unknown user 'no-such-user'"),
        ("nobody", "no-such-group", "unknown group 'no-such-group'"),
        ("4242424", None, "give the group too"),
    ],
)
def test_unknown_user_or_group_is_a_clear_error_naming_it(
    bus: Bus, user: str, group: str | None, message: str
) -> None:
    Privileges(bus, PrivilegesOptions(user=user, group=group)).subscribe()
    with pytest.raises(StartError, match=message) as info:
        bus.start()
    assert isinstance(info.value.__cause__, ConfigError)
    assert os.getresuid() == (0, 0, 0), "nothing changed"


def test_resolve_names_and_numbers() -> None:
    assert resolve("nobody", None) == resolve(NOBODY.pw_uid, None)
    credentials = resolve("nobody", "0", supplementary_groups=False)
    assert (credentials.uid, credentials.gid, credentials.groups) == (NOBODY.pw_uid, 0, ())
    assert resolve(4242424, 4242424).user == "4242424"


def test_umask_alone_is_set_without_root_or_a_user(bus: Bus) -> None:
    Privileges(bus, PrivilegesOptions(umask=0o027)).subscribe()
    old = os.umask(0o022)
    try:
        bus.start()
        assert os.umask(0o022) == 0o027
        bus.stop()
    finally:
        os.umask(old)
