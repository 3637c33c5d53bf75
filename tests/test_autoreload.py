"""The autoreload plugin in this process: what it watches, its backends, its seam.

Here ``block()`` does not run, so the plugin's ``restart()`` fails and is
logged; the tests look at the ``reload`` publication that comes before it.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sitebus import Bus
from sitebus.errors import ConfigError
from sitebus.plugins._sources import Pattern, is_ignored, module_files
from sitebus.plugins._watchers import (
    BACKENDS,
    PollingWatcher,
    WatcherUnavailable,
    WatchLimitReached,
    choose_backend,
    why_unavailable,
)
from sitebus.plugins.autoreload import DEFAULT_IGNORE, Autoreload, AutoreloadOptions

WAIT = 30.0


class Recorder:
    """Collects what the bus publishes on ``reload`` and ``log``."""

    def __init__(self, bus: Bus) -> None:
        self.reloads: queue.Queue[frozenset[str]] = queue.Queue()
        self.logs: list[str] = []
        self._logged = threading.Condition()
        bus.subscribe("reload", self.reloads.put)
        bus.subscribe("log", self._log)

    def _log(self, message: str, level: int, exc: BaseException | None) -> None:
        with self._logged:
            self.logs.append(message)
            self._logged.notify_all()

    def next_reload(self) -> set[str]:
        return set(self.reloads.get(timeout=WAIT))

    def wait_log(self, text: str) -> str:
        """The first log line containing ``text``, waiting for it if need be."""
        with self._logged:
            assert self._logged.wait_for(lambda: any(text in m for m in self.logs), WAIT)
            return next(m for m in self.logs if text in m)


@pytest.fixture
def recorder(bus: Bus) -> Recorder:
    return Recorder(bus)


@pytest.fixture
def running(bus: Bus) -> Iterator[list[Autoreload]]:
    """Plugins appended here are stopped after the test, before the leak checks."""
    finders = list(sys.meta_path)
    plugins: list[Autoreload] = []
    yield plugins
    bus.stop()
    for plugin in plugins:
        plugin.unsubscribe()
    assert sys.meta_path == finders, "the import notifier was removed on stop"
    # Set for a re-exec that never happens here: children of later tests must not see it.
    os.environ.pop("SITEBUS_AUTORELOAD_SINCE", None)


def start(bus: Bus, running: list[Autoreload], plugin: Autoreload) -> Autoreload:
    plugin.subscribe()
    running.append(plugin)
    bus.start()
    assert plugin.wait_ready(WAIT)
    return plugin


# -- options, sources, patterns ---------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"backend": "fsevents"}, "backend: 'fsevents' is unknown"),
        ({"debounce": -1}, "debounce: -1 is out of range: seconds from 0 to 60"),
        ({"debounce": "0.1"}, "debounce: expected float, got str '0.1'"),
        ({"debounce": 1e10}, "debounce: 10000000000.0 is out of range"),
        ({"poll_interval": 0}, "poll_interval: 0 is out of range: seconds from 0.01 to 3600"),
        ({"poll_interval": float("nan")}, "poll_interval: nan is out of range"),
        ({"poll_interval": True}, "poll_interval: expected float, got bool True"),
        ({"paths": "templates/*.html"}, "paths: expected tuple\\[.*\\], got str"),
        ({"paths": 5}, "paths: expected tuple\\[.*\\], got int 5"),
        ({"ignore": [1]}, "ignore: expected tuple\\[str, ...\\], got tuple \\(1,\\)"),
        ({"enabled": "no"}, "enabled: expected bool, got str 'no'"),
        ({"include_third_party": 1}, "include_third_party: expected bool, got int 1"),
        ({"config_file": 5}, "config_file: expected .*, got int 5"),
    ],
)
def test_options_refuse_bad_values_naming_the_option_and_quoting_them(
    options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        AutoreloadOptions(**options)  # type: ignore[arg-type]  # wrong types on purpose


def test_options_take_a_toml_table_as_is() -> None:
    table = {"paths": ["templates/*.html"], "ignore": ["*.log"], "debounce": 0.1}
    options = AutoreloadOptions(**table)  # type: ignore[arg-type]  # lists, as TOML gives them
    assert options.paths == ("templates/*.html",)
    assert options.ignore == ("*.log",)
    assert hash(options)


def test_user_modules_are_watched_not_stdlib_nor_installed_packages() -> None:
    modules = {"json": json, "pytest": pytest, "me": sys.modules[__name__]}
    assert module_files(modules, include_third_party=False) == {os.path.abspath(__file__)}
    with_installed = module_files(modules, include_third_party=True)
    assert os.path.abspath(pytest.__file__) in with_installed
    assert os.path.abspath(json.__file__) not in with_installed


def test_globs_keep_single_stars_within_one_directory(tmp_path: Path) -> None:
    flat = Pattern(tmp_path / "templates" / "*.html")
    deep = Pattern(tmp_path / "templates" / "**" / "*.html")
    assert flat.matches(str(tmp_path / "templates" / "a.html"))
    assert not flat.matches(str(tmp_path / "templates" / "sub" / "a.html"))
    assert deep.matches(str(tmp_path / "templates" / "a.html"))
    assert deep.matches(str(tmp_path / "templates" / "x" / "y" / "a.html"))
    assert flat.base() == deep.base() == str(tmp_path / "templates")


def test_recursive_glob_follows_links_but_never_back_into_a_walked_directory(
    tmp_path: Path,
) -> None:
    """Two links back up the tree would make glob's ``**`` walk 2**40 paths: walked once here."""
    site, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    for name in ("a", "b"):
        (site / "pages" / name).mkdir(parents=True)
        (site / "pages" / name / "loop").symlink_to("..")
    elsewhere.mkdir()
    (elsewhere / "shared.html").write_text("shared")
    (site / "linked").symlink_to(elsewhere)  # a folder kept outside: followed
    (site / "pages" / "a" / "page.html").write_text("page")
    pattern = Pattern(site / "**" / "*.html")
    walked = (site, site / "pages", site / "pages" / "a", site / "pages" / "b", site / "linked")
    assert pattern.directories() == sorted(map(str, walked))
    assert sorted(pattern.existing_files()) == [
        str(site / "linked" / "shared.html"),
        str(site / "pages" / "a" / "page.html"),
    ]
    later = Pattern(tmp_path / "later" / "**" / "*.html")
    assert later.directories() == [str(tmp_path / "later")], "its creation is watched"


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("/site/app.py", False),
        ("/site/.app.py.swp", True),
        ("/site/app.py~", True),
        ("/site/.#app.py", True),
        ("/site/__pycache__/app.cpython-311.pyc", True),
        ("/site/.git/index", True),
        ("/site/4913", True),
    ],
)
def test_default_ignore_patterns(path: str, ignored: bool) -> None:
    assert is_ignored(path, DEFAULT_IGNORE) is ignored


# -- the plugin on a bus ---------------------------------------------------


def test_content_change_publishes_reload_touch_does_not(
    bus: Bus, recorder: Recorder, running: list[Autoreload], tmp_path: Path
) -> None:
    touched, edited = tmp_path / "a.txt", tmp_path / "b.txt"
    touched.write_text("a")
    edited.write_text("b")
    plugin = start(bus, running, Autoreload(bus, AutoreloadOptions(paths=(f"{tmp_path}/*.txt",))))
    assert plugin.backend == "inotify"
    os.utime(touched, (1, 1))
    edited.write_text("B")
    assert recorder.next_reload() == {str(edited)}
    assert "the restart waits for it" in recorder.wait_log("needs block()")


def test_edit_of_a_symlinked_file_is_seen(
    bus: Bus, recorder: Recorder, running: list[Autoreload], tmp_path: Path
) -> None:
    """Writes through a link land in the target's directory, which is watched too."""
    (tmp_path / "real").mkdir()
    (tmp_path / "site").mkdir()
    target, link = tmp_path / "real" / "page.html", tmp_path / "site" / "page.html"
    target.write_text("one")
    link.symlink_to(target)
    start(bus, running, Autoreload(bus, AutoreloadOptions(paths=(str(link),))))
    link.write_text("two")
    assert recorder.next_reload() == {str(link)}


def test_a_directory_watched_by_two_paths_reports_under_both(
    bus: Bus, recorder: Recorder, running: list[Autoreload], tmp_path: Path
) -> None:
    """inotify gives one watch per directory, whatever the path: both paths get its events."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    page = tmp_path / "link" / "page.html"  # a module on a linked sys.path entry, say
    page.write_text("one")
    options = AutoreloadOptions(paths=(str(page), f"{tmp_path}/real/*.css"))
    start(bus, running, Autoreload(bus, options))
    page.write_text("two")
    assert recorder.next_reload() == {str(page)}


def test_channel_registration_watches_a_file_that_does_not_exist_yet(
    bus: Bus, recorder: Recorder, running: list[Autoreload], tmp_path: Path
) -> None:
    plugin = start(bus, running, Autoreload(bus))
    template = tmp_path / "later" / "page.html"
    bus.publish("autoreload.watch", template)
    template.parent.mkdir()
    template.write_text("<p>hi</p>")
    assert recorder.next_reload() == {str(template)}
    assert plugin.wait_watching(template, WAIT)


def test_a_recursive_glob_over_a_folder_made_later_sees_files_in_it(
    bus: Bus, recorder: Recorder, running: list[Autoreload], tmp_path: Path
) -> None:
    options = AutoreloadOptions(paths=(f"{tmp_path}/views/**/*.html",))
    start(bus, running, Autoreload(bus, options))
    (tmp_path / "views" / "admin").mkdir(parents=True)
    (tmp_path / "views" / "admin" / "index.html").write_text("<p>new</p>")
    assert recorder.next_reload() == {str(tmp_path / "views" / "admin" / "index.html")}


def test_polling_backend_sees_changes(
    bus: Bus, recorder: Recorder, running: list[Autoreload], tmp_path: Path
) -> None:
    """The watchfiles backend is tested in a child: its Rust thread closes fds late."""
    page = tmp_path / "page.html"
    page.write_text("one")
    options = AutoreloadOptions(paths=(str(page),), backend="poll", poll_interval=0.05)
    plugin = start(bus, running, Autoreload(bus, options))
    assert plugin.backend == "polling"
    page.write_text("two")
    assert recorder.next_reload() == {str(page)}


def test_watch_limit_falls_back_to_polling_and_says_so_once(
    bus: Bus, recorder: Recorder, running: list[Autoreload], tmp_path: Path
) -> None:
    class Limited(PollingWatcher):
        name = "limited"

        def add(self, directory: str) -> bool:
            raise WatchLimitReached("the inotify watch limit is reached")

    page = tmp_path / "page.html"
    page.write_text("one")
    options = AutoreloadOptions(paths=(str(page),), poll_interval=0.05)
    plugin = start(bus, running, Autoreload(bus, options, watcher_factory=Limited))
    assert plugin.backend == "polling"
    page.write_text("two")
    assert recorder.next_reload() == {str(page)}
    said = [line for line in recorder.logs if "polling every 0.05 s instead" in line]
    assert len(said) == 1, recorder.logs
    assert "watch limit is reached" in said[0]


def test_no_file_events_at_all_falls_back_to_polling(
    bus: Bus, recorder: Recorder, running: list[Autoreload]
) -> None:
    def unavailable() -> PollingWatcher:
        raise WatcherUnavailable("inotify_init1 failed: Too many open files")

    plugin = start(bus, running, Autoreload(bus, watcher_factory=unavailable))
    assert plugin.backend == "polling"
    assert any("Too many open files" in line for line in recorder.logs)


def test_missing_watchfiles_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "watchfiles._rust_notify", None)
    assert "pip install 'sitebus[reload]'" in why_unavailable("watchfiles")


def test_the_real_checks_accept_every_backend_on_this_linux_machine() -> None:
    """The test extra installs both event backends: nothing here needs a fallback."""
    assert [why_unavailable(name) for name in BACKENDS] == ["", "", ""]
    assert choose_backend("auto") == ("inotify", "")


def missing(*names: str) -> Callable[[str], str]:
    """An availability check for a machine without the ``names`` backends."""
    return lambda backend: f"no {backend} here" if backend in names else ""


@pytest.mark.parametrize(
    ("absent", "chosen", "why"),
    [
        ((), "inotify", ""),
        (("inotify",), "watchfiles", ""),
        (("watchfiles",), "inotify", ""),
        (("inotify", "watchfiles"), "poll", "no inotify here; no watchfiles here"),
    ],
)
def test_auto_takes_the_best_backend_available_and_always_one(
    absent: tuple[str, ...], chosen: str, why: str
) -> None:
    assert choose_backend("auto", missing(*absent)) == (chosen, why)


@pytest.mark.parametrize("backend", ["inotify", "watchfiles"])
def test_an_explicit_backend_that_cannot_be_used_is_refused_when_the_plugin_is_made(
    bus: Bus, backend: str
) -> None:
    options = AutoreloadOptions(backend=backend)
    with pytest.raises(ConfigError, match=f'backend "{backend}" cannot be used here: no {backend}'):
        Autoreload(bus, options, why_unavailable=missing("inotify", "watchfiles"))
    assert choose_backend("poll", missing("inotify", "watchfiles")) == ("poll", "")


def test_auto_without_file_events_polls_says_why_and_sees_edits(
    bus: Bus, recorder: Recorder, running: list[Autoreload], tmp_path: Path
) -> None:
    page = tmp_path / "page.html"
    page.write_text("one")
    options = AutoreloadOptions(paths=(str(page),), poll_interval=0.05)
    absent = missing("inotify", "watchfiles")
    plugin = start(bus, running, Autoreload(bus, options, why_unavailable=absent))
    assert plugin.backend == "polling"
    said = recorder.wait_log("polling every 0.05 s instead")
    assert "no OS file events: no inotify here; no watchfiles here" in said
    page.write_text("two")
    assert recorder.next_reload() == {str(page)}


def test_disabled_plugin_watches_nothing(bus: Bus, running: list[Autoreload]) -> None:
    plugin = Autoreload(bus, AutoreloadOptions(enabled=False))
    plugin.subscribe()
    running.append(plugin)
    bus.start()
    assert plugin.backend is None
    assert not plugin.wait_ready(0)


def test_the_stop_leaves_a_stuck_watcher_thread_behind_and_names_it(
    bus: Bus, recorder: Recorder, running: list[Autoreload]
) -> None:
    """The stop waits for the watcher thread within its own bound, not the bus's."""
    release = threading.Event()

    class Deaf(PollingWatcher):
        """Its wait() ignores interrupt(), like a thread stuck in a hung file system."""

        name = "deaf"

        def wait(self, timeout: float | None) -> set[str]:
            release.wait(WAIT)
            return set()

    start(bus, running, Autoreload(bus, watcher_factory=Deaf))
    try:
        bus.stop()
        assert "'sitebus-autoreload' has not ended" in recorder.wait_log("has not ended")
        assert not [line for line in recorder.logs if "failed on 'stop'" in line]
        bus.start()  # one watcher thread at a time
        recorder.wait_log("not watching: its last thread has not ended")
    finally:
        release.set()


def test_stop_without_start_is_harmless(bus: Bus) -> None:
    Autoreload(bus).stop()


def test_queue_overflow_compares_every_file(
    bus: Bus, recorder: Recorder, running: list[Autoreload], tmp_path: Path
) -> None:
    """When the kernel drops events, the plugin rehashes everything it watches."""

    class Overflowing(PollingWatcher):
        """Reports only an overflow, never the path itself."""

        name = "overflowing"
        events: queue.Queue[set[str]] = queue.Queue()

        def wait(self, timeout: float | None) -> set[str]:
            try:
                return self.events.get(timeout=timeout)
            except queue.Empty:
                return set()

        def interrupt(self) -> None:
            self.events.put(set())

    page = tmp_path / "page.html"
    page.write_text("one")
    options = AutoreloadOptions(paths=(str(page),))
    start(bus, running, Autoreload(bus, options, watcher_factory=Overflowing))
    page.write_text("two")
    Overflowing.events.put({"*"})
    assert recorder.next_reload() == {str(page)}


def test_importing_the_plugin_loads_no_watcher_library() -> None:
    code = (
        "import sys, sitebus\n"
        "from sitebus.plugins.autoreload import Autoreload\n"
        "b = sitebus.Bus(logger=None); p = Autoreload(b); p.subscribe(); b.start()\n"
        "assert p.wait_ready(30); b.stop()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('watchfiles', 'anyio')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr
