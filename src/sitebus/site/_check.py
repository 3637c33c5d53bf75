"""Import everything a site file names, before anything starts.

Import strings resolve with the file's directory, then the current
directory, first on ``sys.path``. Every failure names the file and the key
path of the string that failed.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._options import Options
from ..errors import ConfigError, ImportStringError
from ..plugin import Plugin
from ._imports import import_object, search_first
from ._tables import did_you_mean

if TYPE_CHECKING:
    from .config import AppSection, SiteConfig

__all__ = ["ENTRY_POINT_GROUP", "SiteImports", "check_imports"]

ENTRY_POINT_GROUP = "sitebus.plugins"


class SiteImports(Options):
    """The objects a site file names, in the file's order.

    ``apps[i]`` and ``app_middleware[i]`` belong to ``config.apps[i]``;
    ``plugins[i]`` is the class ``config.plugins[i]`` uses.
    """

    site_middleware: tuple[Callable[..., Any], ...] = ()
    apps: tuple[Callable[..., Any], ...] = ()
    app_middleware: tuple[tuple[Callable[..., Any], ...], ...] = ()
    plugins: tuple[type[Plugin], ...] = ()


def check_imports(config: SiteConfig) -> SiteImports:
    """Import every app, middleware and plugin ``config`` names; return them.

    Raises ``ImportStringError`` for a string that does not import or names
    nothing callable, ``ConfigError`` for a plugin whose constructor does not
    take the keys of its table; both name the key path.
    """
    search_first([config.directory, os.getcwd()])
    file = config.path
    site_middleware = tuple(
        _callable(file, f"site.middleware[{i}]", spec, "a middleware factory(app) -> app")
        for i, spec in enumerate(config.site.middleware)
    )
    apps = []
    app_middleware = []
    for index, app in enumerate(config.apps):
        keypath = f"app[{index}]"
        if app.key == "cherrypy":
            apps.append(_cherrypy_app(file, keypath, app))
            app_middleware.append(_middleware(file, keypath, app.middleware))
            continue
        found = _callable(file, f"{keypath}.{app.kind}", app.target, f"a {app.kind} app")
        if app.kind == "wsgi" and _is_asgi(found):
            raise ConfigError(
                f"{file}: {keypath}.wsgi: {app.target!r} is an ASGI app (it is called as a "
                f"coroutine): expected asgi = {app.target!r}"
            )
        if app.kind == "wsgi" and _is_cherrypy_app(found):
            raise ConfigError(
                f"{file}: {keypath}.wsgi: {app.target!r} is a CherryPy application, whose "
                f"engine would never start: expected cherrypy = {app.target!r}"
            )
        apps.append(found)
        app_middleware.append(_middleware(file, keypath, app.middleware))
    plugins = []
    for index, section in enumerate(config.plugins):
        cls = _plugin_class(file, f"plugin[{index}].use", section.use)
        _check_keywords(file, f"plugin[{index}]", cls, dict(section.options))
        plugins.append(cls)
    return SiteImports(
        site_middleware=site_middleware,
        apps=tuple(apps),
        app_middleware=tuple(app_middleware),
        plugins=tuple(plugins),
    )


def _middleware(file: str, keypath: str, specs: tuple[str, ...]) -> tuple[Callable[..., Any], ...]:
    return tuple(
        _callable(file, f"{keypath}.middleware[{i}]", spec, "a middleware factory")
        for i, spec in enumerate(specs)
    )


def _cherrypy_app(file: str, keypath: str, app: AppSection) -> Callable[..., Any]:
    """The ``cherrypy.Application`` of a ``cherrypy = ...`` app.

    ``cherrypy.engine`` becomes the compat bus before the app's module is
    imported, so that what the module subscribes lands there.
    """
    from ..compat.app import application
    from ..compat.engine import install

    install()
    found = _import(file, f"{keypath}.cherrypy", app.target)
    made: Callable[..., Any] = application(found, app.mount, app.config, f"{file}: {keypath}")
    return made


def _callable(file: str, keypath: str, spec: str, expected: str) -> Callable[..., Any]:
    found = _import(file, keypath, spec)
    if not callable(found):
        raise ImportStringError(
            f"{file}: {keypath}: {spec!r} names a {type(found).__name__}, "
            f"which is not callable: expected {expected}"
        )
    return found  # type: ignore[no-any-return]  # callable() narrowed it


def _is_cherrypy_app(app: object) -> bool:
    """Whether ``app`` is a ``cherrypy.Application`` or a ``Tree``; never imports CherryPy."""
    cherrypy = sys.modules.get("cherrypy")
    if cherrypy is None:
        return False
    return isinstance(app, cherrypy.Application | cherrypy._cptree.Tree)


def _is_asgi(app: object) -> bool:
    """Whether calling ``app`` surely makes a coroutine: an ``async def`` function or method.

    Only this direction is checked: an ASGI app may also be a plain callable
    returning an awaitable, which cannot be told from a WSGI app without calling it.
    """
    call = getattr(type(app), "__call__", None)  # noqa: B004  # the method, not callable()
    return inspect.iscoroutinefunction(app) or inspect.iscoroutinefunction(call)


def _import(file: str, keypath: str, spec: str) -> Any:
    try:
        return import_object(spec)
    except ImportStringError as exc:
        raise ImportStringError(f"{file}: {keypath}: {exc}") from exc


def _plugin_class(file: str, keypath: str, use: str) -> type[Plugin]:
    if ":" in use:
        found = _import(file, keypath, use)
    else:
        from importlib import metadata  # only entry-point names need it: ~10 ms to import

        points = {point.name: point for point in metadata.entry_points(group=ENTRY_POINT_GROUP)}
        if use not in points:
            known = ", ".join(sorted(points)) or "none are installed"
            raise ImportStringError(
                f"{file}: {keypath}: no entry point {use!r} in the {ENTRY_POINT_GROUP} "
                f"group{did_you_mean(use, points)} (installed: {known})"
            )
        try:
            found = points[use].load()
        except Exception as exc:
            raise ImportStringError(
                f"{file}: {keypath}: loading entry point {use!r} "
                f"({points[use].value}) raised {type(exc).__name__}: {exc}"
            ) from exc
    if not (isinstance(found, type) and issubclass(found, Plugin)):
        raise ImportStringError(
            f"{file}: {keypath}: {use!r} names {found!r}: expected a subclass of sitebus.Plugin"
        )
    return found


def _check_keywords(file: str, keypath: str, cls: type[Plugin], options: dict[str, Any]) -> None:
    """The constructor, called as ``cls(bus, **options)``, takes these keywords."""
    signature = inspect.signature(cls)
    parameters = signature.parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        named = [
            name
            for name, p in parameters.items()
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ][1:]  # the first is the bus
        for key in options:
            if key not in named:
                raise ConfigError(
                    f"{file}: {keypath}.{key}: {cls.__name__}(bus, ...) takes no keyword "
                    f"{key!r}{did_you_mean(key, named)} (expected one of: "
                    f"{', '.join(named) or 'none'})"
                )
    try:
        signature.bind(None, **options)
    except TypeError as exc:
        raise ConfigError(f"{file}: {keypath}: {cls.__name__}(bus, ...): {exc}") from exc
