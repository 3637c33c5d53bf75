"""A CherryPy application mounted in a site beside a Flask app, its engine on the site bus.

The run tests start ``sitebus run`` in real child processes (as
``test_run.py`` does) and talk real HTTP to them; the app is
``tests/site_apps/cherrypy_app.py``, whose engine plugin reports each event
it sees. The in-process tests use ``sitebus.testing.running_site``; they
replace ``cherrypy.engine`` in this process, once, as a site does.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cherrypy
import pytest

from conftest import Child
from sitebus import StartError, State
from sitebus.compat.engine import SitebusOwns, install
from sitebus.compat.wspbus import Bus as CompatBus
from sitebus.errors import ConfigError
from sitebus.testing import running_site
from test_run import STARLETTE, Spawn, expect, run_sitebus, write_site
from test_servers import get

SITE_APPS = Path(__file__).parent / "site_apps"
RUN_REPORTING = Path(__file__).parent / "run_sites" / "run_reporting.py"
CHILDREN = Path(__file__).parent / "children"

SITE = """
[[server]]
bind = "127.0.0.1:0"

[[app]]
mount = "/cp"
cherrypy = "cherrypy_app:root"

[app.config."/"]
tools.sessions.on = true

[[app]]
mount = "/flask"
wsgi = "flask_app:app"
"""


def started(spawn: Spawn, tmp_path: Path, extra: str = "") -> tuple[Child, int]:
    """The site (with ``extra`` apps), running; its engine plugin has reported its one start."""
    site = write_site(tmp_path, SITE + extra)
    child = spawn([str(RUN_REPORTING), str(site)], cwd=SITE_APPS)
    line = child.next_report()
    if line.startswith("Starting "):  # said only when the imports take a while
        line = child.next_report()
    assert line == "engine start", child.output()
    port = int(expect(child, "Listening on http://127.0.0.1:").rsplit(":", 1)[1])
    return child, port


@pytest.mark.parametrize(
    ("extra", "engine"), [("", "cheroot"), (STARLETTE, "uvicorn")], ids=["wsgi", "with-asgi"]
)
def test_a_cherrypy_app_answers_beside_flask_with_urls_under_its_mount(
    spawn: Spawn, tmp_path: Path, extra: str, engine: str
) -> None:
    """On cheroot, or on uvicorn (through a2wsgi) when an ASGI app is mounted too."""
    child, port = started(spawn, tmp_path, extra)
    assert f"{engine} serving on" in child.stderr()
    assert get(port, "/cp/") == (
        200,
        f"cherrypy home; page is at http://127.0.0.1:{port}/cp/page".encode(),
    )
    assert get(port, "/cp/page") == (200, b"cherrypy page; script_name=/cp path_info=/page")
    assert get(port, "/flask/hello") == (200, b"flask hello; script_name=/flask path=/hello")
    if extra:
        assert get(port, "/star/hello")[0] == 200
    status, body = get(port, "/cp/go")
    assert status == 303 and f"http://127.0.0.1:{port}/cp/page".encode() in body
    assert get(port, "/cp/visits") == (200, b"1")
    # CherryPy's session tool subscribes its cleanup Monitor to the engine, which starts it.
    assert child.next_report() == "Started monitor thread 'Session cleanup'."
    child.signal(signal.SIGTERM)
    assert [child.next_report() for _ in range(3)] == ["engine stop", "engine exit", "exited 0"]
    assert child.wait() == 0


def test_start_graceful_and_stop_reach_the_engine_plugin_once_each(
    spawn: Spawn, tmp_path: Path
) -> None:
    child, _ = started(spawn, tmp_path)
    child.signal(signal.SIGUSR1)  # graceful, by the site's signals plugin
    assert child.next_report() == "engine graceful"
    child.signal(signal.SIGTERM)
    reports = []
    while not reports or not reports[-1].startswith("exited "):
        reports.append(child.next_report())
    assert reports == ["engine stop", "engine exit", "exited 0"], child.output()
    assert child.wait() == 0


def test_a_restart_stops_the_engine_once_and_starts_it_once_in_the_new_image(
    spawn: Spawn, tmp_path: Path
) -> None:
    """SIGHUP re-executes the site: the old image's engine stops and exits, the new one starts."""
    child, port = started(spawn, tmp_path)
    child.signal(signal.SIGHUP)
    reports = [child.next_report() for _ in range(3)]
    assert reports == ["engine stop", "engine exit", "engine start"], child.output()
    assert (
        expect(child, "Listening on http://127.0.0.1:") == f"Listening on http://127.0.0.1:{port}"
    )
    assert get(port, "/cp/page") == (200, b"cherrypy page; script_name=/cp path_info=/page")
    child.signal(signal.SIGTERM)
    assert [child.next_report() for _ in range(3)] == ["engine stop", "engine exit", "exited 0"]
    assert child.wait() == 0


def test_the_thread_manager_starts_each_request_thread_once_and_no_cherrypy_server(
    spawn: Spawn, tmp_path: Path
) -> None:
    """The site's server and CherryPy's app both announce a request thread: one start_thread."""
    child, port = started(spawn, tmp_path)
    for path in ["/cp/", "/flask/hello"] * 10:
        assert get(port, path)[0] == 200
    status, body = get(port, "/cp/threads")
    assert status == 200
    starts, current, names, httpserver = body.decode().split("|")
    pairs = [pair.split(":") for pair in starts.split(",")]
    idents = [ident for ident, _ in pairs]
    assert len(idents) == len(set(idents)), f"a thread started twice: {starts}"
    assert sorted(int(index) for _, index in pairs) == list(range(1, len(pairs) + 1))
    assert current in idents
    assert "Autoreloader" not in names.split(",")
    assert httpserver == "None", "CherryPy's own HTTP server was never made"
    child.signal(signal.SIGTERM)
    assert child.wait() == 0, child.output()


def test_check_names_the_cherrypy_app(tmp_path: Path) -> None:
    site = write_site(tmp_path, SITE)
    done = run_sitebus("check", str(site))
    assert done.returncode == 0, done.stderr
    assert "app /cp: cherrypy cherrypy_app:root\n" in done.stdout


# -- in this process -----------------------------------------------------------


@pytest.fixture
def events() -> Iterator[Any]:
    """The app's engine plugin, its record emptied before and after the test."""
    sys.path.insert(0, str(SITE_APPS))
    try:
        install()
        import cherrypy_app

        cherrypy_app.events.seen.clear()
        yield cherrypy_app.events
    finally:
        sys.path.remove(str(SITE_APPS))
    cherrypy_app.events.seen.clear()
    cherrypy_app.events.fail_start = False


def site_table(**extra: Any) -> dict[str, Any]:
    """The CherryPy app alone, with a config: CherryPy's checker warns of an empty one."""
    app = {
        "mount": "/cp",
        "cherrypy": "cherrypy_app:root",
        "config": {"/": {"tools.encode.on": True}},
    }
    return {"app": [{**app, **extra}]}


def test_the_engine_follows_the_site_in_process(events: Any) -> None:
    with running_site(site_table(), directory=SITE_APPS) as site:
        engine = cherrypy.engine
        assert isinstance(engine, CompatBus) and engine.site_bus is site.bus
        assert engine.state is State.STARTED
        site.bus.graceful()
        port = int(site.url.rsplit(":", 1)[1])
        assert get(port, "/cp/page") == (200, b"cherrypy page; script_name=/cp path_info=/page")
    assert events.seen == ["start", "graceful", "stop", "exit"]
    assert cherrypy.engine.site_bus is not site.bus, "the engine left the site's bus"


def test_a_failing_cherrypy_start_listener_fails_the_site_start(events: Any) -> None:
    events.fail_start = True
    with (
        pytest.raises(StartError, match="the database is gone"),
        running_site(site_table(), directory=SITE_APPS),
    ):
        pass
    assert events.seen == ["stop", "exit"]


def test_the_config_global_section_goes_to_cherrypy_config_and_the_app_to_the_tree(
    events: Any,
) -> None:
    config = {"global": {"checker": {"on": False}}, "/": {"tools": {"encode": {"on": True}}}}
    try:
        with running_site(site_table(config=config), directory=SITE_APPS):
            app = cherrypy.tree.apps["/cp"]
            assert app.script_name == "/cp"
            assert app.config["/"]["tools.encode.on"] is True  # nested tables: dotted keys
            assert "global" not in app.config
            assert cherrypy.checker.on is False
    finally:
        cherrypy.checker.on = True


def test_cherrypys_server_autoreloader_and_signal_handler_stay_off(events: Any) -> None:
    engine = install()
    assert install() is engine is cherrypy.engine
    for name in ("autoreload", "signal_handler", "signals"):
        assert isinstance(getattr(engine, name), SitebusOwns), name
    listening = {cb for callbacks in engine.listeners.values() for cb in callbacks}
    owners = {getattr(cb, "__self__", None) for cb in listening}
    assert cherrypy.server not in owners
    before = signal.getsignal(signal.SIGTERM)
    cherrypy.config.update({"engine.autoreload.on": True})  # what an app's config may say
    engine.signals.subscribe()  # what cherrypy.quickstart does
    assert signal.getsignal(signal.SIGTERM) == before
    assert not any(
        getattr(cb, "__self__", None).__class__.__name__ == "Autoreloader" for cb in listening
    )
    assert isinstance(engine.thread_manager, cherrypy.process.plugins.ThreadManager)
    assert engine.thread_manager.bus is engine


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            {"cherrypy": "cherrypy_app:Root"},
            "app[0].cherrypy: names the class Root: expected an instance (the root object) "
            "or a cherrypy.Application",
        ),
        (
            {"config": "missing.conf"},
            "app[0].config: '{dir}/missing.conf' is not a file: expected the path of a "
            "CherryPy config file, or a table of sections",
        ),
        (
            {"config": {"/": {"tools.sessions.on": True}, "tools.gzip.on": True}},
            "app[0].config.tools.gzip.on: expected a section (a table of settings, such as "
            '[app.config."/"]), got True',
        ),
        (
            {"cherrypy": "cherrypy:tree"},
            "app[0].cherrypy: names a cherrypy.Tree: expected one root object or "
            "cherrypy.Application; mount each app of the tree as an [[app]] of its own",
        ),
    ],
    ids=["a-class", "a-missing-file", "a-setting-outside-a-section", "the-tree"],
)
def test_a_bad_cherrypy_app_is_one_line_naming_the_key(
    events: Any, extra: dict[str, Any], message: str
) -> None:
    table = site_table(**extra)
    with pytest.raises(ConfigError) as caught, running_site(table, directory=SITE_APPS):
        pass
    assert str(caught.value) == f"{SITE_APPS}/<site table>: " + message.format(dir=SITE_APPS)


def test_an_application_mounted_elsewhere_is_refused(events: Any) -> None:
    import cherrypy_app

    cherrypy_app.shop = cherrypy.Application(cherrypy_app.root, "/shop")
    try:
        with (
            pytest.raises(ConfigError, match="the Application's script_name is '/shop' but it"),
            running_site(site_table(cherrypy="cherrypy_app:shop"), directory=SITE_APPS),
        ):
            pass
    finally:
        del cherrypy_app.shop


def test_files_registered_for_cherrypys_autoreload_are_watched_by_the_site(
    events: Any, tmp_path: Path
) -> None:
    """``engine.autoreload.files`` reaches the ``autoreload.watch`` channel of the site bus."""
    from sitebus import Bus
    from sitebus.compat.app import CherryPyEngine

    engine = install()
    early, late = str(tmp_path / "early.conf"), str(tmp_path / "late.html")
    engine.autoreload.files.add(early)  # type: ignore[attr-defined]  # set by install()
    bus = Bus(logger=None)
    watched: list[str] = []
    bus.subscribe("autoreload.watch", watched.append)
    plugin = CherryPyEngine(bus)
    plugin.subscribe()
    try:
        engine.autoreload.files.add(late)  # type: ignore[attr-defined]
        assert early in watched and late in watched
    finally:
        plugin.unsubscribe()
    assert engine.site_bus is not bus


def test_a_hosted_site_drives_the_engine_too(events: Any, tmp_path: Path) -> None:
    """Under a host process (``sitebus.hosted``) the engine starts with the site, on first use."""
    from wsgiref.util import setup_testing_defaults

    from sitebus.hosted import wsgi_app

    site = write_site(
        tmp_path,
        '[[app]]\nmount = "/cp"\ncherrypy = "cherrypy_app:root"\n'
        '[app.config."/"]\n"tools.encode.on" = true\n',
    )
    app = wsgi_app(site)
    environ: dict[str, Any] = {}
    setup_testing_defaults(environ)
    environ["PATH_INFO"] = "/cp/page"
    statuses: list[str] = []
    try:
        result = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
        try:
            body = b"".join(result)
        finally:
            result.close()  # type: ignore[attr-defined]  # CherryPy's response has one
        assert statuses == ["200 OK"]
        assert body == b"cherrypy page; script_name=/cp path_info=/page"
        assert events.seen == ["start"]
    finally:
        app.hosted.stop()
    assert events.seen == ["start", "stop", "exit"]


def test_a_cherrypy_application_named_as_wsgi_is_pointed_to_the_cherrypy_key(
    events: Any,
) -> None:
    """As a plain WSGI app its engine would never start: the error says which key to use."""
    import cherrypy_app

    cherrypy_app.app = cherrypy.Application(cherrypy_app.root)
    table = {"app": [{"mount": "/cp", "wsgi": "cherrypy_app:app"}]}
    try:
        with pytest.raises(ConfigError) as caught, running_site(table, directory=SITE_APPS):
            pass
    finally:
        del cherrypy_app.app
    assert str(caught.value) == (
        f"{SITE_APPS}/<site table>: app[0].wsgi: 'cherrypy_app:app' is a CherryPy application, "
        "whose engine would never start: expected cherrypy = 'cherrypy_app:app'"
    )


def test_a_forked_host_worker_drives_an_engine_of_its_own(spawn: Spawn, tmp_path: Path) -> None:
    """A hosted site used before and after a fork: the child's site starts and stops the
    engine in the child, the parent's stops it in the parent, each once."""
    site = write_site(
        tmp_path,
        '[[app]]\nmount = "/"\ncherrypy = "cherrypy_app:root"\n'
        '[app.config."/"]\n"tools.encode.on" = true\n',
    )
    child = spawn([str(CHILDREN / "hosted_fork.py"), str(site)], cwd=SITE_APPS)
    home = "cherrypy home; page is at http://127.0.0.1/page"
    reports = []
    while not reports or not reports[-1].startswith("parent: "):
        reports.append(child.next_report())
    reports += [child.next_report(), child.next_report()]
    assert reports == [
        "engine start",
        f"before fork: {home}",
        "engine start",  # in the child
        f"child: {home}",
        "engine stop",
        "engine exit",
        f"parent: {home} (child exited 0)",
        "engine stop",
        "engine exit",
    ], child.output()
    assert child.wait() == 0, child.output()


def test_a_module_that_starts_the_engine_itself_is_refused(events: Any) -> None:
    """Its plugins would start twice: once at import, once with the site."""
    engine = install()
    engine.start()
    try:
        with (
            pytest.raises(ConfigError, match=r"cherrypy.engine is started already \(does the"),
            running_site(site_table(), directory=SITE_APPS),
        ):
            pass
    finally:
        engine.exit()
        engine.bind(None)
    assert events.seen == ["start", "stop", "exit"]
