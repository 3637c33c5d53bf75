"""The site file: one TOML file naming the servers, the apps and the site-wide services.

``load(path, overrides)`` reads and validates the whole file before anything
starts, and returns a frozen ``SiteConfig``. Every problem is one
``ConfigError`` line naming the file, the key path (``server[1].bind``) and
what was expected. The plugin sections (``[pidfile]``, ``[signals]``, ...)
become the existing plugins' options objects, field for field, so the plugin's
own validation runs here. ``check_imports`` then imports every app, middleware
and plugin the file names. Nothing is evaluated: values are TOML, and code is
named by import strings.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any

from .._options import Options
from ..errors import BindError, ConfigError
from ..plugins.autoreload import AutoreloadOptions
from ..plugins.daemon import DaemonOptions
from ..plugins.health import HealthOptions
from ..plugins.logs import LogsOptions
from ..plugins.pidfile import PidfileOptions
from ..plugins.privileges import PrivilegesOptions, resolve
from ..plugins.signals import SignalsOptions
from ..plugins.tasks import TasksOptions
from ._check import SiteImports, check_imports
from ._imports import check_form
from ._overrides import apply_overrides
from ._tables import FieldError, Where, build, did_you_mean, field_named, toml_type

__all__ = [
    "AppSection",
    "PluginSection",
    "ServerSection",
    "SiteConfig",
    "SiteImports",
    "SiteSection",
    "check_imports",
    "load",
    "load_table",
]

DEFAULT_BIND = "127.0.0.1:8080"
# The engines a [[server]] may name; only uvicorn serves ASGI apps.
ENGINE_NAMES = ("cheroot", "uvicorn", "waitress", "wsgiref")
ASGI_ENGINES = ("uvicorn",)


def _check_import_strings(field: str, specs: Iterable[str]) -> None:
    for spec in specs:
        problem = check_form(spec)
        if problem is not None:
            raise FieldError(field, problem)


class SiteSection(Options):
    """``[site]``: the site's name, the graceful stop bound, the site-wide middleware,
    and its worker processes.

    ``workers`` above 1 (or ``"auto"``, one per CPU) runs the site in that many
    worker processes under a master (``sitebus.workers``); ``worker_timeout``,
    ``max_requests`` and ``max_requests_jitter`` are the ``WorkersOptions``
    of the same names.
    """

    name: str = ""
    graceful_timeout: float = 30.0
    middleware: tuple[str, ...] = ()
    workers: int | str = 1
    worker_timeout: float = 30.0
    max_requests: int = 0
    max_requests_jitter: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.graceful_timeout < float("inf"):
            raise FieldError(
                "graceful_timeout",
                f"{self.graceful_timeout!r} is out of range: expected a number of seconds >= 0",
            )
        _check_import_strings("middleware", self.middleware)
        if self.workers != "auto" and not (
            isinstance(self.workers, int) and 1 <= self.workers <= 1024
        ):
            raise FieldError(
                "workers", f'{self.workers!r} is not a number from 1 to 1024, or "auto"'
            )
        if not 0.1 <= self.worker_timeout < float("inf"):
            raise FieldError(
                "worker_timeout",
                f"{self.worker_timeout!r} is out of range: expected a number of seconds >= 0.1",
            )
        for name in ("max_requests", "max_requests_jitter"):
            if getattr(self, name) < 0:
                raise FieldError(name, f"{getattr(self, name)!r} is below 0: expected 0 or more")

    def worker_count(self) -> int:
        """How many workers ``workers`` asks for, ``"auto"`` resolved to the CPUs here."""
        if self.workers == "auto":
            from ..workers.master import cpu_count

            return cpu_count()
        assert isinstance(self.workers, int)  # checked when made
        return self.workers


class ServerSection(Options):
    """One ``[[server]]``: where to listen and which engine serves (None: sitebus picks).

    ``name`` is the descriptor name (a socket unit's ``FileDescriptorName=``)
    whose sockets, passed by systemd, this server adopts instead of binding.
    """

    bind: str | tuple[str, ...] = (DEFAULT_BIND,)
    name: str | None = None
    engine: str | None = None
    threads: int = 10
    backlog: int = 1024
    certfile: str | None = None
    keyfile: str | None = None
    unix_mode: int | None = None

    def __post_init__(self) -> None:
        # servers are loaded only when used
        from ..servers._activation import check_name
        from ..servers._address import parse_address

        problem = None if self.name is None else check_name(self.name)
        if problem is not None:
            raise FieldError(
                "name",
                f"{self.name!r} {problem}: expected a name as systemd's FileDescriptorName= "
                "takes (printable ASCII, no ':', at most 255 characters)",
            )
        binds = (self.bind,) if isinstance(self.bind, str) else self.bind
        if not binds:
            raise FieldError("bind", "is empty: expected an address or a list of addresses")
        for spec in binds:
            try:
                parse_address(spec)
            except BindError as exc:
                raise FieldError("bind", str(exc)) from exc
        object.__setattr__(self, "bind", binds)
        if self.engine is not None and self.engine not in ENGINE_NAMES:
            raise FieldError(
                "engine",
                f"{self.engine!r} is not an engine: expected one of {', '.join(ENGINE_NAMES)}",
            )
        for name in ("threads", "backlog"):
            value = getattr(self, name)
            if value < 1:
                raise FieldError(name, f"{value!r} is out of range: expected a number >= 1")
        if self.unix_mode is not None and not 0 <= self.unix_mode <= 0o777:
            raise FieldError(
                "unix_mode", f"{self.unix_mode!r} is out of range: expected 0o000 to 0o777"
            )
        if self.keyfile is not None and self.certfile is None:
            raise FieldError("keyfile", "is given without certfile: expected both or neither")

    @property
    def binds(self) -> tuple[str, ...]:
        """``bind`` as a tuple, whatever the file wrote."""
        return (self.bind,) if isinstance(self.bind, str) else self.bind


class AppSection(Options):
    """One ``[[app]]``: the mount prefix, the app (``wsgi``, ``asgi`` or ``cherrypy``), middleware.

    ``cherrypy`` names a CherryPy root object or ``cherrypy.Application``,
    mounted as a WSGI app with CherryPy's engine on the site bus
    (``sitebus.compat.app``); ``config``, for it alone, is CherryPy's app
    config: a file's path or a table of sections.
    """

    mount: str
    wsgi: str | None = None
    asgi: str | None = None
    cherrypy: str | None = None
    config: str | Mapping[str, Any] | None = None
    middleware: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        mount = self.mount
        if not mount.startswith("/") or "//" in mount or any(c in mount for c in "?#"):
            raise FieldError(
                "mount", f"{mount!r} is not a path prefix: expected '/' or a path like '/blog'"
            )
        object.__setattr__(self, "mount", mount.rstrip("/") or "/")
        given = [name for name in APP_KEYS if getattr(self, name) is not None]
        if len(given) != 1:
            has = (
                f"both {given[0]} and {given[1]}"
                if len(given) == 2
                else ("all of" if given else "none of") + " wsgi, asgi and cherrypy"
            )
            raise FieldError(
                "",  # the section as a whole
                f'has {has}: expected exactly one, as wsgi = "pkg.module:app", '
                'asgi = "pkg.module:app" or cherrypy = "pkg.module:root"',
            )
        _check_import_strings(given[0], (getattr(self, given[0]),))
        if self.config is not None and self.cherrypy is None:
            raise FieldError(
                "config", "is CherryPy's app config: expected it only beside cherrypy = ..."
            )
        if isinstance(self.config, Mapping):
            object.__setattr__(self, "config", MappingProxyType(dict(self.config)))
        _check_import_strings("middleware", self.middleware)

    @property
    def key(self) -> str:
        """The key that names the app: ``"wsgi"``, ``"asgi"`` or ``"cherrypy"``."""
        return next(name for name in APP_KEYS if getattr(self, name) is not None)

    @property
    def kind(self) -> str:
        """``"wsgi"`` or ``"asgi"``: how the site serves it (a CherryPy app is WSGI)."""
        return "asgi" if self.asgi is not None else "wsgi"

    @property
    def target(self) -> str:
        """The app's import string."""
        spec: str = getattr(self, self.key)
        return spec


# The keys of an [[app]] that name the app, one of which each must have.
APP_KEYS = ("wsgi", "asgi", "cherrypy")


class PluginSection(Options):
    """One ``[[plugin]]``: ``use`` names the class; ``options`` are its keyword arguments."""

    use: str
    options: Mapping[str, Any] = MappingProxyType({})

    def __post_init__(self) -> None:
        if ":" in self.use:
            _check_import_strings("use", (self.use,))
        elif not self.use.replace("-", "_").replace(".", "_").isidentifier():
            raise FieldError(
                "use",
                f'{self.use!r} is neither an import string "<module>:<attribute>" nor the '
                "name of an entry point in the sitebus.plugins group",
            )


class SiteConfig(Options):
    """The whole site file, validated; ``path`` is the file's absolute path.

    A plugin section that the file leaves out is None: the file does not ask
    for that plugin.
    """

    path: str
    site: SiteSection = SiteSection()
    servers: tuple[ServerSection, ...] = ()
    apps: tuple[AppSection, ...] = ()
    privileges: PrivilegesOptions | None = None
    autoreload: AutoreloadOptions | None = None
    signals: SignalsOptions | None = None
    daemon: DaemonOptions | None = None
    pidfile: PidfileOptions | None = None
    log: LogsOptions | None = None
    tasks: TasksOptions | None = None
    health: HealthOptions | None = None
    plugins: tuple[PluginSection, ...] = ()

    @property
    def directory(self) -> str:
        """The file's directory: relative paths and import strings start there."""
        return os.path.dirname(self.path)


# section -> (options class, fields a file cannot give, keys holding paths)
_PLUGIN_SECTIONS: dict[str, tuple[type[Options], tuple[str, ...], tuple[str, ...]]] = {
    "privileges": (PrivilegesOptions, (), ()),
    "autoreload": (AutoreloadOptions, (), ("paths", "config_file")),
    "signals": (SignalsOptions, (), ()),
    "daemon": (DaemonOptions, (), ("chdir", "stdout", "stderr")),
    "pidfile": (PidfileOptions, (), ("path",)),
    "log": (LogsOptions, ("handlers",), ("file",)),
    "tasks": (TasksOptions, ("clock",), ()),
    "health": (HealthOptions, ("clock",), ()),
}
ARRAY_SECTIONS = ("server", "app", "plugin")
SECTIONS = ("site", *ARRAY_SECTIONS, *_PLUGIN_SECTIONS)


def load(path: str | os.PathLike[str], overrides: Iterable[str] = ()) -> SiteConfig:
    """Read and validate the site file at ``path``, with ``--set`` ``overrides`` applied.

    Each override is ``section.key=value``; the value is read as a TOML value,
    else taken as a string. Relative paths in the file resolve against its
    directory. Raises ``ConfigError`` with one line for the first problem.
    """
    file = os.path.abspath(os.fspath(path))
    shown = os.fspath(path)
    try:
        with open(file, "rb") as stream:
            raw = tomllib.load(stream)
    except OSError as exc:
        raise ConfigError(f"cannot read the site file {shown!r}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{shown}: invalid TOML: {exc}") from exc
    overridden = apply_overrides(raw, overrides, shown, ARRAY_SECTIONS)
    where = Where(shown, overridden)
    return _config(raw, file, where)


def load_table(
    table: Mapping[str, Any], directory: str | os.PathLike[str] | None = None
) -> SiteConfig:
    """Validate ``table``, a site file already read into a ``dict`` of the same shape.

    Relative paths and import strings start at ``directory`` (the current
    directory when None), as they would beside a file there. Errors name the
    table ``<site table>``. Raises ``ConfigError`` as ``load`` does.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(
            f"the site table {table!r} is a {type(table).__name__}: expected a dict with "
            "the sections of a site file ([[app]], [[server]], ...)"
        )
    base = os.path.abspath(os.fspath(directory) if directory is not None else os.getcwd())
    return _config(dict(table), os.path.join(base, TABLE_NAME), Where(TABLE_NAME))


# What ``SiteConfig.path`` ends with, and errors name, for a site given as a dict.
TABLE_NAME = "<site table>"


def _config(raw: dict[str, Any], file: str, where: Where) -> SiteConfig:
    base = os.path.dirname(file)
    for key in raw:
        if key not in SECTIONS:
            raise where.error(
                key,
                f"unknown section{did_you_mean(key, SECTIONS)} (expected one of: "
                f"{', '.join(SECTIONS)})",
            )
    values: dict[str, Any] = {"path": file}
    if "site" in raw:
        values["site"] = build(SiteSection, raw["site"], where, "site")
    servers = [
        build(ServerSection, _paths(table, base, ("certfile", "keyfile")), where, keypath)
        for keypath, table in _array(raw, "server", where)
    ]
    if not servers:  # one server on the default address
        servers.append(build(ServerSection, {}, where, "server[0]"))
    values["servers"] = tuple(servers)
    apps = [
        build(AppSection, _paths(table, base, ("config",)), where, keypath)
        for keypath, table in _array(raw, "app", where)
    ]
    if not apps:
        raise where.error("app", "missing: expected at least one [[app]] table with a mount")
    values["apps"] = tuple(apps)
    values["plugins"] = tuple(
        _plugin(table, where, keypath) for keypath, table in _array(raw, "plugin", where)
    )
    for section, (cls, exclude, path_keys) in _PLUGIN_SECTIONS.items():
        if section in raw:
            extra = {}
            table = raw[section]
            if section == "autoreload" and isinstance(table, dict) and "config_file" not in table:
                extra["config_file"] = file  # a change of the site file reloads the site
            table = _paths(table, base, path_keys)
            values[section] = build(cls, table, where, section, exclude=exclude, extra=extra)
    config = SiteConfig(**values)
    _check_site(config, where)
    _check_privileges(config.privileges, raw.get("privileges", {}), where)
    return config


def _check_privileges(options: PrivilegesOptions | None, table: Any, where: Where) -> None:
    """A user or group missing from this system's databases is named now, not at start."""
    if options is None or (options.user is None and options.group is None):
        return
    try:
        resolve(options.user, options.group, options.supplementary_groups)
    except ConfigError as exc:
        raise where.error(field_named("privileges", str(exc), table), str(exc)) from exc


def _array(raw: dict[str, Any], section: str, where: Where) -> list[tuple[str, Any]]:
    """The tables of ``[[section]]``, each with its key path ``section[i]``."""
    tables = raw.get(section, [])
    if not isinstance(tables, list):
        raise where.error(
            section,
            f"expected an array of tables, written [[{section}]], got {toml_type(tables)}",
        )
    return [(f"{section}[{index}]", table) for index, table in enumerate(tables)]


def _plugin(table: object, where: Where, keypath: str) -> PluginSection:
    if not isinstance(table, dict):
        raise where.error(keypath, f"expected a table, got {toml_type(table)} {table!r}")
    options = {key: value for key, value in table.items() if key != "use"}
    given = {key: table[key] for key in ("use",) if key in table}
    return build(PluginSection, given, where, keypath, extra={"options": MappingProxyType(options)})


def _paths(table: object, base: str, keys: Iterable[str]) -> object:
    """``table`` with its relative paths at ``keys`` (and ``unix:`` binds) made absolute."""
    if not isinstance(table, dict):
        return table
    resolved = dict(table)
    for key in keys:
        value = resolved.get(key)
        if isinstance(value, str):
            resolved[key] = os.path.join(base, value)
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            resolved[key] = [os.path.join(base, item) for item in value]
    bind = resolved.get("bind")
    if isinstance(bind, str):
        resolved["bind"] = _unix_path(bind, base)
    elif isinstance(bind, list):
        resolved["bind"] = [
            _unix_path(item, base) if isinstance(item, str) else item for item in bind
        ]
    return resolved


def _unix_path(spec: str, base: str) -> str:
    if not spec.startswith("unix:") or spec[len("unix:") :].startswith("/"):
        return spec
    return "unix:" + os.path.join(base, spec[len("unix:") :])


def _check_site(config: SiteConfig, where: Where) -> None:
    """What spans sections: one app per mount, an engine able to serve every app."""
    seen: dict[str, int] = {}
    for index, app in enumerate(config.apps):
        if app.mount in seen:
            raise where.error(
                f"app[{index}].mount",
                f"{app.mount!r} is already mounted by app[{seen[app.mount]}]: "
                "expected a different prefix",
            )
        seen[app.mount] = index
    asgi = [index for index, app in enumerate(config.apps) if app.kind == "asgi"]
    for index, server in enumerate(config.servers):
        if asgi and server.engine is not None and server.engine not in ASGI_ENGINES:
            raise where.error(
                f"server[{index}].engine",
                f"{server.engine!r} serves WSGI apps only, but app[{asgi[0]}] is an ASGI app: "
                f"expected {' or '.join(ASGI_ENGINES)}, or no engine to let sitebus pick",
            )
