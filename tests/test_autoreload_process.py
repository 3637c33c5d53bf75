"""Autoreload in real child processes: real edits, real re-execs, counted by generation.

To prove that something did *not* restart the site, a test follows it with a
change that does, or with a ping, and checks that the next report is that one.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import CHILDREN, Child

Spawn = Callable[..., Child]
SCRIPT = str(CHILDREN / "autoreload_site.py")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A site tree: ``app.py`` (VALUE = 1), ``late.py`` and a templates folder."""
    root = tmp_path / "site"
    (root / "templates").mkdir(parents=True)
    (root / "app.py").write_text("VALUE = 1\n")
    (root / "late.py").write_text("VALUE = 'late'\n")
    (root / "templates" / "page.html").write_text("<p>one</p>\n")
    return root


@pytest.fixture
def site(spawn: Spawn, tree: Path) -> Callable[..., Child]:
    def start(*options: str, env: dict[str, str] | None = None) -> Child:
        return spawn([SCRIPT, *options], cwd=tree, env=env)

    return start


def command(child: Child, text: str) -> None:
    os.write(child._hold_write, text.encode() + b"\n")


def ping(child: Child, generation: int) -> None:
    """The site answers, in the expected generation: no restart happened since."""
    command(child, "go")
    child.expect(f"pong {generation} started")


def save(path: Path, text: str) -> None:
    """Save the way many editors do: write a temporary file, rename it over the old one."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def finish(child: Child) -> None:
    child.signal(signal.SIGTERM)
    assert child.wait() == 0, child.output()


def finish_in_time(child: Child) -> None:
    """Like ``finish``, and no stop listener overran its bound (the child reports those)."""
    finish(child)
    rest = (child._buffer + child._reports.read()).decode()
    assert "has not ended" not in rest, rest
    assert "failed on 'stop'" not in rest, rest


@pytest.mark.parametrize(
    ("backend", "name"),
    [
        ("auto", "inotify"),
        ("inotify", "inotify"),
        ("watchfiles", "watchfiles"),
        ("poll", "polling"),
    ],
)
def test_edit_of_a_module_restarts_exactly_once(
    site: Callable[..., Child], tree: Path, backend: str, name: str
) -> None:
    child = site("--backend", backend)
    child.expect(f"watching 0 1 {name}")
    (tree / "app.py").write_text("VALUE = 2\n")
    child.expect(f"log Autoreload: {tree / 'app.py'} changed; restarting")
    child.expect(f"reload {tree / 'app.py'}")
    child.expect(f"watching 1 2 {name}")
    ping(child, 1)
    finish(child)


def test_rename_save_and_touch(site: Callable[..., Child], tree: Path) -> None:
    """A touch changes no content and restarts nothing; a rename-save does."""
    child = site()
    child.expect("watching 0 1")
    os.utime(tree / "app.py", (1, 1))
    save(tree / "late.py", "VALUE = 'still not imported'\n")  # not imported: not watched
    save(tree / "app.py", "VALUE = 3\n")
    child.expect("log Autoreload:")
    child.expect(f"reload {tree / 'app.py'}")
    child.expect("watching 1 3")
    finish(child)


def test_registered_template_triggers_restart(site: Callable[..., Child], tree: Path) -> None:
    child = site("--register", "templates/page.html")
    child.expect("watching 0 1")
    save(tree / "templates" / "page.html", "<p>two</p>\n")
    child.expect("log Autoreload:")
    child.expect(f"reload {tree / 'templates' / 'page.html'}")
    child.expect("watching 1 1")
    finish(child)


def test_ignored_file_does_not_restart(site: Callable[..., Child], tree: Path) -> None:
    """A swap file under a watched glob is ignored: the reload after it names only the page."""
    child = site("--glob", "templates/*")
    child.expect("watching 0 1")
    (tree / "templates" / "page.html.swp").write_text("swap")
    (tree / "templates" / "page.html~").write_text("backup")
    (tree / "templates" / "page.html").write_text("<p>three</p>\n")
    child.expect("log Autoreload:")
    child.expect(f"reload {tree / 'templates' / 'page.html'}")
    child.expect("watching 1 1")
    finish(child)


def test_file_created_later_in_a_new_directory_is_seen(
    site: Callable[..., Child], tree: Path
) -> None:
    child = site("--glob", "views/**/*.html")
    child.expect("watching 0 1")
    (tree / "views" / "admin").mkdir(parents=True)
    (tree / "views" / "admin" / "index.html").write_text("<p>new</p>\n")
    child.expect("log Autoreload:")
    child.expect(f"reload {tree / 'views' / 'admin' / 'index.html'}")
    child.expect("watching 1 1")
    finish(child)


def test_syntax_error_keeps_serving_until_fixed(site: Callable[..., Child], tree: Path) -> None:
    child = site()
    child.expect("watching 0 1")
    (tree / "app.py").write_text("VALUE = (\n")
    line = child.expect("log Autoreload: not restarting")
    assert f"{tree / 'app.py'}:1: '(' was never closed" in line
    ping(child, 0)
    (tree / "app.py").write_text("VALUE = 4)\n")  # still broken, another error
    line = child.expect("log Autoreload: not restarting")
    assert f"{tree / 'app.py'}:1: unmatched ')'" in line
    ping(child, 0)
    (tree / "app.py").write_text("VALUE = (\n  4)\n")
    child.expect("log Autoreload:")
    child.expect(f"reload {tree / 'app.py'}")
    child.expect("watching 1 4")
    finish(child)


def test_rapid_saves_cause_one_restart(site: Callable[..., Child], tree: Path) -> None:
    # A longer quiet period than the default, so that a test process preempted
    # between two saves on a busy machine still saves within one burst.
    child = site("--debounce", "0.5")
    child.expect("watching 0 1")
    for value in range(10, 20):
        save(tree / "app.py", f"VALUE = {value}\n")
        (tree / "templates" / "page.html").write_text(f"{value}\n")  # not watched
    child.expect("log Autoreload:")
    child.expect(f"reload {tree / 'app.py'}")
    child.expect("watching 1 19")
    ping(child, 1)
    finish(child)


def test_same_size_edit_in_the_same_second_never_runs_stale_bytecode(
    site: Callable[..., Child], tree: Path
) -> None:
    """CPython validates a .pyc by source mtime (whole seconds) and size only."""
    app = tree / "app.py"
    child = site(env={"PYTHONDONTWRITEBYTECODE": ""})  # empty: bytecode is cached
    child.expect("watching 0 1")
    assert list((tree / "__pycache__").glob("app.*.pyc")), "the child cached app's bytecode"
    before = app.stat()
    app.write_text("VALUE = 5\n")  # same size as "VALUE = 1\n"
    os.utime(app, ns=(before.st_atime_ns, before.st_mtime_ns))  # and the same mtime
    child.expect("log Autoreload:")
    child.expect(f"reload {app}")
    child.expect("watching 1 5")
    finish(child)


def test_module_imported_after_start_is_watched(site: Callable[..., Child], tree: Path) -> None:
    child = site()
    child.expect("watching 0 1")
    command(child, "im")
    child.expect("imported late True")
    save(tree / "late.py", "VALUE = 'edited'\n")
    child.expect("log Autoreload:")
    child.expect(f"reload {tree / 'late.py'}")
    child.expect("watching 1 1")
    finish(child)


def test_edit_during_the_reexec_is_not_lost(site: Callable[..., Child], tree: Path) -> None:
    """A file modified after the old process last read it, before the new one hashed it,
    counts as changed: the new process restarts once more, the one after does not."""
    app = tree / "app.py"
    since = str(app.stat().st_mtime_ns - 1)  # as if app.py was saved just after that moment
    child = site("--handed-since", since)
    seen = []
    while not (line := child.next_report()).startswith("watching 1"):
        seen.append(line)
    assert f"log Autoreload: {app} changed; restarting" in seen, seen
    assert f"reload {app}" in seen, seen
    # The first generation may have reached block() before the change was seen, or not.
    assert set(seen) <= {
        f"log Autoreload: {app} changed; restarting",
        f"reload {app}",
        "watching 0 1 inotify",
        "log Autoreload: restart() needs block() running in the main thread to re-execute"
        " the process; the restart waits for it",
    }, seen
    ping(child, 1)
    finish(child)


@pytest.mark.parametrize("backend", ["inotify", "watchfiles", "poll"])
def test_symlink_loops_under_a_recursive_glob_hang_neither_the_watcher_nor_its_stop(
    site: Callable[..., Child], tree: Path, backend: str
) -> None:
    """Links back up the tree (``ln -s .. loop``) are not followed: ready, edit seen, quick stop."""
    for name in ("a", "b"):
        (tree / "templates" / name).mkdir()
        (tree / "templates" / name / "loop").symlink_to("..")
    page = tree / "templates" / "a" / "page.html"
    page.write_text("<p>one</p>\n")
    child = site("--glob", "templates/**/*.html", "--backend", backend)
    child.expect("watching 0 1")
    page.write_text("<p>two</p>\n")
    child.expect("log Autoreload:")
    child.expect(f"reload {page}")
    child.expect("watching 1 1")
    finish_in_time(child)
