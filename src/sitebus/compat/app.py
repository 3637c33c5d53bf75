"""A CherryPy application as an app of a sitebus site, its engine driven by the site bus.

In the site file::

    [[app]]
    mount = "/shop"
    cherrypy = "shop:root"     # a root object, or a cherrypy.Application
    config = "shop.conf"       # optional: CherryPy's app config, a file or a table

``application()`` makes the ``cherrypy.Application`` the site mounts: its
``script_name`` is the mount prefix, so the URLs CherryPy builds
(``cherrypy.url()``, redirects) carry it, and it is registered in
``cherrypy.tree`` under that name, where CherryPy's checker looks. A
``[global]`` section of the config goes to ``cherrypy.config``, as
``cherrypy.quickstart`` does; the others are the app's. ``CherryPyEngine`` is
the site's plugin that puts ``cherrypy.engine`` (the compat bus that
``engine.install()`` made) on the site bus while the site is subscribed: the
site's start, stop, graceful and exit reach CherryPy's engine plugins once
each, and the files registered in ``cherrypy.engine.autoreload.files`` (a
config file, an app's templates) are watched by the site's ``[autoreload]``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..bus import State
from ..errors import ConfigError, describe
from ..plugin import Plugin
from .engine import install

if TYPE_CHECKING:
    from ..bus import Bus

__all__ = ["CherryPyEngine", "application", "flatten"]


class CherryPyEngine(Plugin):
    """Binds ``cherrypy.engine`` to the site bus while subscribed, to a private bus after.

    It has no listeners of its own: the engine's CherryPy listeners are
    reached through its forwarders on the site bus (see ``wspbus``).
    """

    def __init__(self, bus: Bus) -> None:
        super().__init__(bus)
        self.engine = install()

    def subscribe(self) -> None:
        self.engine.bind(self.bus)
        for path in sorted(self.engine.autoreload.files):  # type: ignore[attr-defined]  # set by install()
            self.bus.publish("autoreload.watch", path)

    def unsubscribe(self) -> None:
        if self.engine.site_bus is self.bus:
            self.engine.bind(None)


def application(target: Any, mount: str, config: str | Mapping[str, Any] | None, where: str) -> Any:
    """The ``cherrypy.Application`` to mount at ``mount`` for ``target``.

    ``target`` is a root object or an Application (whose ``script_name``, if
    it has one, must be the mount). ``config`` is a CherryPy config file's
    path or a table of sections. ``where`` starts every error message
    (``site.toml: app[1]``). Raises ``ConfigError``.
    """
    engine = install()
    import cherrypy

    if engine.state is not State.STOPPED:
        raise ConfigError(
            f"{where}.cherrypy: cherrypy.engine is {engine.state.value} already (does the "
            "module call cherrypy.engine.start()?): expected the site to start it; leave "
            "the start to the site"
        )
    script_name = "" if mount == "/" else mount
    if isinstance(target, cherrypy._cptree.Tree):
        raise ConfigError(
            f"{where}.cherrypy: names a cherrypy.Tree: expected one root object or "
            "cherrypy.Application; mount each app of the tree as an [[app]] of its own"
        )
    if isinstance(target, cherrypy.Application):
        app = target
        given = getattr(app, "_script_name", "")  # the property reads a request when None
        if given not in ("", script_name):
            raise ConfigError(
                f"{where}.cherrypy: the Application's script_name is {given!r} but it is "
                f"mounted at {mount!r}: expected Application(root, {script_name!r}) or "
                "Application(root) (the mount sets it)"
            )
        app.script_name = script_name
    elif isinstance(target, type):
        raise ConfigError(
            f"{where}.cherrypy: names the class {target.__name__}: expected an instance "
            "(the root object) or a cherrypy.Application"
        )
    else:
        app = cherrypy.Application(target, script_name)
    if config is not None:
        sections = _sections(config, where)
        if isinstance(config, str):
            cherrypy.engine.autoreload.files.add(config)  # as CherryPy registers its config files
        if "global" in sections:
            cherrypy.config.update({"global": sections.pop("global")})
        try:
            app.merge(sections)
        except Exception as exc:
            raise ConfigError(f"{where}.config: CherryPy refused it: {describe(exc)}") from exc
    cherrypy.tree.apps[script_name] = app
    return app


def _sections(config: str | Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    """The config's sections, each a flat dict of CherryPy's dotted keys."""
    if isinstance(config, str):
        if not os.path.isfile(config):
            raise ConfigError(
                f"{where}.config: {config!r} is not a file: expected the path of a "
                "CherryPy config file, or a table of sections"
            )
        from cherrypy.lib import reprconf

        try:
            table = reprconf.Parser().dict_from_file(config)
        except Exception as exc:
            raise ConfigError(f"{where}.config: cannot read {config!r}: {describe(exc)}") from exc
    else:
        table = dict(config)
    sections = {}
    for name, section in table.items():
        if not isinstance(section, Mapping):
            raise ConfigError(
                f"{where}.config.{name}: expected a section (a table of settings, such as "
                f'[app.config."/"]), got {section!r}'
            )
        sections[name] = flatten(section)
    return sections


def flatten(section: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"tools": {"sessions": {"on": True}}}`` → ``{"tools.sessions.on": True}``.

    TOML reads an unquoted dotted key as nested tables; CherryPy wants the
    dotted name, so both spellings mean the same.
    """
    flat: dict[str, Any] = {}
    for key, value in section.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
