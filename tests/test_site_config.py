"""The site file: loaded into typed options, and every mistake named in one line."""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sitebus import Plugin
from sitebus.errors import ConfigError, ImportStringError
from sitebus.plugins.autoreload import AutoreloadOptions
from sitebus.plugins.logs import LogsOptions
from sitebus.plugins.pidfile import PidfileOptions
from sitebus.plugins.privileges import PrivilegesOptions
from sitebus.site.config import check_imports, load

MINIMAL = '[[app]]\nmount = "/"\nwsgi = "hello:app"\n'


def write(directory: Path, text: str, name: str = "site.toml") -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(text))
    return path


def error_of(path: Path, overrides: tuple[str, ...] = ()) -> str:
    with pytest.raises(ConfigError) as caught:
        load(path, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def clean_imports() -> Iterator[None]:
    """Modules the test imports from its own directory are forgotten afterwards."""
    path, modules = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = path
    for name in set(sys.modules) - modules:
        del sys.modules[name]


def test_a_full_file_becomes_the_plugins_own_options(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [site]
        name = "demo"
        graceful_timeout = 5
        middleware = ["mw:outer"]

        [[server]]
        bind = "127.0.0.1:8000"
        engine = "uvicorn"
        threads = 4

        [[server]]
        bind = ["[::1]:8001", "unix:/tmp/site.sock"]
        unix_mode = 0o660

        [[app]]
        mount = "/blog/"
        wsgi = "blog:app"
        middleware = ["mw:inner"]

        [[app]]
        mount = "/"
        asgi = "front:app"

        [privileges]
        user = "root"

        [pidfile]
        path = "/run/site.pid"

        [log]
        format = "json"
        level = "DEBUG"

        [signals.actions]
        SIGUSR2 = "graceful"

        [[plugin]]
        use = "db:Persistence"
        path = "/var/site.sqlite"
        """,
    )
    config = load(path)
    assert config.path == str(path)
    assert (config.site.name, config.site.graceful_timeout) == ("demo", 5)
    assert config.site.middleware == ("mw:outer",)
    assert [s.binds for s in config.servers] == [
        ("127.0.0.1:8000",),
        ("[::1]:8001", "unix:/tmp/site.sock"),
    ]
    assert (config.servers[0].engine, config.servers[0].threads) == ("uvicorn", 4)
    assert (config.servers[1].engine, config.servers[1].unix_mode) == (None, 0o660)
    assert [(a.mount, a.kind, a.target) for a in config.apps] == [
        ("/blog", "wsgi", "blog:app"),
        ("/", "asgi", "front:app"),
    ]
    assert config.privileges == PrivilegesOptions(user="root")
    assert config.pidfile == PidfileOptions(path="/run/site.pid")
    assert config.log == LogsOptions(format="json", level="DEBUG")
    assert config.signals is not None and config.signals.actions["SIGUSR2"] == "graceful"
    assert (config.autoreload, config.daemon, config.tasks) == (None, None, None)
    assert config.plugins[0].use == "db:Persistence"
    assert dict(config.plugins[0].options) == {"path": "/var/site.sqlite"}


def test_a_file_without_servers_gets_one_on_the_default_address(tmp_path: Path) -> None:
    config = load(write(tmp_path, MINIMAL))
    assert [s.binds for s in config.servers] == [("127.0.0.1:8080",)]


def test_relative_paths_resolve_against_the_files_directory(tmp_path: Path) -> None:
    site = tmp_path / "conf"
    site.mkdir()
    path = write(
        site,
        MINIMAL
        + """
        [[server]]
        bind = ["unix:run/site.sock", "127.0.0.1:0"]
        certfile = "tls/cert.pem"
        keyfile = "tls/key.pem"
        [pidfile]
        path = "run/site.pid"
        [log]
        file = "log/site.log"
        [autoreload]
        paths = ["templates/**/*.html", "/abs/*.txt"]
        [daemon]
        stdout = "log/out.log"
        """,
    )
    config = load(path)
    server = config.servers[0]
    assert server.binds == (f"unix:{site}/run/site.sock", "127.0.0.1:0")
    assert (server.certfile, server.keyfile) == (f"{site}/tls/cert.pem", f"{site}/tls/key.pem")
    assert config.pidfile == PidfileOptions(path=f"{site}/run/site.pid")
    assert config.log is not None and config.log.file == f"{site}/log/site.log"
    assert config.autoreload == AutoreloadOptions(
        paths=(f"{site}/templates/**/*.html", "/abs/*.txt"), config_file=str(path)
    )
    assert config.daemon is not None and config.daemon.stdout == f"{site}/log/out.log"


def test_a_misspelt_key_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[[server]]\nbind = "127.0.0.1:1"\n[[server]]\nbnid = "x"\n')
    assert error_of(path) == (
        f'{path}: server[1].bnid: unknown key; did you mean "bind"? (expected one of: '
        "bind, name, engine, threads, backlog, certfile, keyfile, unix_mode)"
    )


def test_a_misspelt_section_is_named_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[pidfiel]\npath = "x"\n')
    assert error_of(path).startswith(f'{path}: pidfiel: unknown section; did you mean "pidfile"?')


def test_a_wrong_type_names_the_key_and_the_type_expected(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[[server]]\nthreads = "8"\n')
    assert error_of(path) == f"{path}: server[0].threads: expected int, got string '8'"


def test_a_single_server_table_must_be_an_array_of_tables(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[server]\nbind = "127.0.0.1:1"\n')
    assert error_of(path) == (
        f"{path}: server: expected an array of tables, written [[server]], got table"
    )


def test_an_app_needs_exactly_one_of_wsgi_asgi_and_cherrypy(tmp_path: Path) -> None:
    both = write(tmp_path, '[[app]]\nmount = "/"\nwsgi = "a:b"\nasgi = "c:d"\n', "both.toml")
    neither = write(tmp_path, '[[app]]\nmount = "/"\n', "neither.toml")
    cherrypy = write(tmp_path, '[[app]]\nmount = "/"\nwsgi = "a:b"\ncherrypy = "c:d"\n', "cp.toml")
    expected = (
        'expected exactly one, as wsgi = "pkg.module:app", asgi = "pkg.module:app" '
        'or cherrypy = "pkg.module:root"'
    )
    assert error_of(both) == f"{both}: app[0]: has both wsgi and asgi: {expected}"
    assert (
        error_of(neither) == f"{neither}: app[0]: has none of wsgi, asgi and cherrypy: {expected}"
    )
    assert error_of(cherrypy) == f"{cherrypy}: app[0]: has both wsgi and cherrypy: {expected}"


def test_config_is_for_a_cherrypy_app_only(tmp_path: Path) -> None:
    path = write(tmp_path, '[[app]]\nmount = "/"\nwsgi = "a:b"\nconfig = "app.conf"\n')
    assert error_of(path) == (
        f"{path}: app[0].config: is CherryPy's app config: expected it only beside cherrypy = ..."
    )


def test_a_cherrypy_config_path_is_relative_to_the_site_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[[app]]\nmount = "/cp"\ncherrypy = "a:b"\nconfig = "app.conf"\n')
    (app,) = load(path).apps
    assert (app.key, app.kind, app.target) == ("cherrypy", "wsgi", "a:b")
    assert app.config == str(tmp_path / "app.conf")


def test_a_missing_required_value_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, '[[app]]\nwsgi = "a:b"\n')
    assert error_of(path) == f"{path}: app[0].mount: missing; a value is required here"
    no_apps = write(tmp_path, '[site]\nname = "x"\n', "empty.toml")
    assert error_of(no_apps) == (
        f"{no_apps}: app: missing: expected at least one [[app]] table with a mount"
    )


def test_a_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[site]\nname = "x"\ngraceful_timeout 3\n')
    assert error_of(path) == (
        f"{path}: invalid TOML: Expected '=' after a key in a key/value pair (at line 3, column 18)"
    )


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    assert error_of(path) == f"cannot read the site file '{path}': No such file or directory"


def test_out_of_range_values_run_the_plugins_own_validation(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[autoreload]\ndebounce = -1\n")
    assert error_of(path) == (
        f"{path}: autoreload.debounce: -1 is out of range: seconds from 0 to 60"
    )
    server = write(tmp_path, MINIMAL + "[[server]]\nbacklog = 0\n", "server.toml")
    assert error_of(server) == (
        f"{server}: server[0].backlog: 0 is out of range: expected a number >= 1"
    )


def test_a_plugins_error_points_at_the_only_key_given(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[signals.actions]\nSIGFOO = "exit"\n')
    assert error_of(path) == (
        f"{path}: signals.actions: unknown or unhandleable signal 'SIGFOO': expected a name "
        "such as 'SIGTERM', 'SIGHUP' or 'SIGUSR2'"
    )


def test_fields_a_file_cannot_give_are_unknown_keys(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + "[tasks]\nclock = 1\n")
    assert error_of(path) == f"{path}: tasks.clock: unknown key (expected one of: join_timeout)"


def test_a_malformed_address_or_import_string_is_named(tmp_path: Path) -> None:
    bind = write(tmp_path, MINIMAL + '[[server]]\nbind = ["127.0.0.1:1", "localhost"]\n', "b.toml")
    assert error_of(bind) == (
        f'{bind}: server[0].bind: Address "localhost" must be in format "HOST:PORT", '
        '"[IPV6]:PORT", "unix:/PATH" or "fd://N": the port is missing.'
    )
    spec = write(tmp_path, '[[app]]\nmount = "/"\nwsgi = "hello.app"\n', "i.toml")
    assert error_of(spec) == (
        f"{spec}: app[0].wsgi: 'hello.app' is not an import string: "
        'expected the form "<module>:<attribute>"'
    )


def test_a_wsgi_only_engine_refuses_a_site_with_an_asgi_app(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        MINIMAL + '[[app]]\nmount = "/api"\nasgi = "api:app"\n[[server]]\nengine = "waitress"\n',
    )
    assert error_of(path) == (
        f"{path}: server[0].engine: 'waitress' serves WSGI apps only, but app[1] is an ASGI "
        "app: expected uvicorn, or no engine to let sitebus pick"
    )


def test_two_apps_cannot_share_a_mount(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[[app]]\nmount = "/"\nasgi = "x:y"\n')
    assert error_of(path) == (
        f"{path}: app[1].mount: '/' is already mounted by app[0]: expected a different prefix"
    )


def test_set_overrides_a_value_with_the_same_validation(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[[server]]\nbind = "127.0.0.1:8000"\n')
    config = load(
        path,
        (
            "server.bind=0.0.0.0:9000",
            "server[0].threads=4",
            "site.name=my site",
            "app.0.middleware=['mw:a', 'mw:b']",
            "server[1].bind=unix:site.sock",
            "pidfile.path=site.pid",
        ),
    )
    assert [s.binds for s in config.servers] == [("0.0.0.0:9000",), (f"unix:{tmp_path}/site.sock",)]
    assert config.servers[0].threads == 4
    assert config.site.name == "my site"
    assert config.apps[0].middleware == ("mw:a", "mw:b")
    assert config.pidfile == PidfileOptions(path=f"{tmp_path}/site.pid")
    assert error_of(path, ("server.threads=many",)) == (
        f"{path}: server[0].threads: expected int, got string 'many' "
        "(from --set server.threads=many)"
    )
    assert error_of(path, ("server.0.bnid=x",)).startswith(
        f'{path}: server[0].bnid: unknown key; did you mean "bind"?'
    )
    assert error_of(path, ("server[3].bind=x",)) == (
        f"{path}: --set server[3].bind=x: server has 1 entries: expected an index up to 1"
    )
    assert error_of(path, ("autoreload=3",)) == (
        f"{path}: autoreload: expected a table, got integer 3 (from --set autoreload=3)"
    )
    assert error_of(path, ("nonsense",)) == (
        f"{path}: --set 'nonsense': expected section.key=value, "
        "as site.name=blog or server[0].bind=127.0.0.1:9000"
    )


# check_imports: the modules live beside the site file, which comes first on sys.path.


def test_check_imports_returns_the_objects_named(tmp_path: Path, clean_imports: None) -> None:
    (tmp_path / "cfg_apps.py").write_text(
        "from sitebus import Plugin\n"
        "def app(environ, start_response): pass\n"
        "def wrap(app): return app\n"
        "class Db(Plugin):\n"
        "    def __init__(self, bus, path, timeout=1.0):\n"
        "        super().__init__(bus)\n"
    )
    path = write(
        tmp_path,
        """
        [site]
        middleware = ["cfg_apps:wrap"]
        [[app]]
        mount = "/"
        wsgi = "cfg_apps:app"
        middleware = ["cfg_apps:wrap", "cfg_apps:wrap"]
        [[plugin]]
        use = "cfg_apps:Db"
        path = "x.sqlite"
        """,
    )
    imported = check_imports(load(path))
    module = sys.modules["cfg_apps"]
    assert imported.apps == (module.app,)
    assert imported.site_middleware == (module.wrap,)
    assert imported.app_middleware == ((module.wrap, module.wrap),)
    assert imported.plugins == (module.Db,)
    assert issubclass(imported.plugins[0], Plugin)
    assert sys.path[0] == str(tmp_path)


def test_a_module_that_does_not_exist_is_named(tmp_path: Path, clean_imports: None) -> None:
    path = write(tmp_path, '[[app]]\nmount = "/"\nwsgi = "cfg_nowhere:app"\n')
    with pytest.raises(ImportStringError) as caught:
        check_imports(load(path))
    assert str(caught.value) == (
        f"{path}: app[0].wsgi: cannot import 'cfg_nowhere:app': "
        "there is no module named 'cfg_nowhere'"
    )


def test_a_missing_dependency_of_an_existing_module_is_named(
    tmp_path: Path, clean_imports: None
) -> None:
    (tmp_path / "cfg_needy.py").write_text("import cfg_not_installed\napp = None\n")
    path = write(tmp_path, '[[app]]\nmount = "/"\nasgi = "cfg_needy:app"\n')
    with pytest.raises(ImportStringError) as caught:
        check_imports(load(path))
    assert str(caught.value) == (
        f"{path}: app[0].asgi: cannot import 'cfg_needy:app': module 'cfg_needy' needs "
        "'cfg_not_installed', which is not installed"
    )


def test_a_missing_attribute_or_a_non_callable_is_named(
    tmp_path: Path, clean_imports: None
) -> None:
    (tmp_path / "cfg_things.py").write_text("app = 42\n")
    path = write(
        tmp_path, '[[app]]\nmount = "/"\nwsgi = "cfg_things:app"\nmiddleware = ["cfg_things:mw"]\n'
    )
    with pytest.raises(ImportStringError) as caught:
        check_imports(load(path, ("app.middleware=[]",)))
    assert str(caught.value) == (
        f"{path}: app[0].wsgi: 'cfg_things:app' names a int, which is not callable: "
        "expected a wsgi app"
    )
    (tmp_path / "cfg_things.py").write_text("def app(environ, start_response): pass\n")
    del sys.modules["cfg_things"]
    with pytest.raises(ImportStringError) as caught:
        check_imports(load(path))
    assert str(caught.value) == (
        f"{path}: app[0].middleware[0]: cannot import 'cfg_things:mw': "
        "module 'cfg_things' has no attribute 'mw'"
    )


def test_a_plugins_keys_must_be_its_constructors_keywords(
    tmp_path: Path, clean_imports: None
) -> None:
    (tmp_path / "cfg_plug.py").write_text(
        "from sitebus import Plugin\n"
        "class Db(Plugin):\n"
        "    def __init__(self, bus, path, timeout=1.0):\n"
        "        super().__init__(bus)\n"
        "class NotPlugin:\n"
        "    pass\n"
    )
    misspelt = write(
        tmp_path,
        MINIMAL + '[[plugin]]\nuse = "cfg_plug:Db"\npath = "x"\ntimout = 2\n',
        "misspelt.toml",
    )
    with pytest.raises(ConfigError) as caught:
        check_imports(load(misspelt, ("app.wsgi=cfg_plug:Db",)))
    assert str(caught.value) == (
        f"{misspelt}: plugin[0].timout: Db(bus, ...) takes no keyword 'timout'; "
        'did you mean "timeout"? (expected one of: path, timeout)'
    )
    missing = write(tmp_path, MINIMAL + '[[plugin]]\nuse = "cfg_plug:Db"\n', "missing.toml")
    with pytest.raises(ConfigError) as caught:
        check_imports(load(missing, ("app.wsgi=cfg_plug:Db",)))
    assert str(caught.value) == (
        f"{missing}: plugin[0]: Db(bus, ...): missing a required argument: 'path'"
    )
    other = write(tmp_path, MINIMAL + '[[plugin]]\nuse = "cfg_plug:NotPlugin"\n', "other.toml")
    with pytest.raises(ImportStringError) as caught:
        check_imports(load(other, ("app.wsgi=cfg_plug:Db",)))
    assert str(caught.value) == (
        f"{other}: plugin[0].use: 'cfg_plug:NotPlugin' names <class 'cfg_plug.NotPlugin'>: "
        "expected a subclass of sitebus.Plugin"
    )


def test_a_plugin_is_found_by_its_entry_point_name(tmp_path: Path, clean_imports: None) -> None:
    """An installed distribution's ``sitebus.plugins`` entry point names the class."""
    (tmp_path / "cfg_ep.py").write_text(
        "from sitebus import Plugin\nclass Cache(Plugin):\n    pass\n"
        "def app(environ, start_response): pass\n"
    )
    dist = tmp_path / "cfg_ep_dist-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: cfg-ep-dist\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[sitebus.plugins]\ncache = cfg_ep:Cache\n")
    path = write(tmp_path, '[[app]]\nmount = "/"\nwsgi = "cfg_ep:app"\n[[plugin]]\nuse = "cache"\n')
    sys.path.insert(0, str(tmp_path))  # where importlib.metadata finds the distribution
    assert check_imports(load(path)).plugins == (sys.modules["cfg_ep"].Cache,)
    with pytest.raises(ImportStringError) as caught:
        check_imports(load(path, ("plugin.use=cahce",)))
    assert str(caught.value).startswith(
        f"{path}: plugin[0].use: no entry point 'cahce' in the sitebus.plugins group; "
        'did you mean "cache"? (installed: '
    )


def test_an_asgi_app_named_as_wsgi_is_refused(tmp_path: Path, clean_imports: None) -> None:
    (tmp_path / "cfg_async.py").write_text("async def app(scope, receive, send): pass\n")
    path = write(tmp_path, '[[app]]\nmount = "/"\nwsgi = "cfg_async:app"\n')
    with pytest.raises(ConfigError) as caught:
        check_imports(load(path))
    assert str(caught.value) == (
        f"{path}: app[0].wsgi: 'cfg_async:app' is an ASGI app (it is called as a coroutine): "
        "expected asgi = 'cfg_async:app'"
    )


def test_an_unknown_user_or_group_is_named_when_the_file_is_loaded(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL + '[privileges]\nuser = "no-such-user-here"\n')
    assert error_of(path) == (
        f"{path}: privileges.user: unknown user 'no-such-user-here': not in the password database"
    )
    assert error_of(path, ("privileges.user=0", "privileges.group=no-such-group")) == (
        f"{path}: privileges.group: unknown group 'no-such-group': not in the group database "
        "(from --set privileges.group=no-such-group)"
    )
