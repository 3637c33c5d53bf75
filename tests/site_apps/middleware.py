"""Middleware factories that record, in ``environ["test.trail"]`` or ``scope["test.trail"]``,
the order they ran in."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def _marking(name: str) -> Callable[[WSGIApp], WSGIApp]:
    def factory(app: WSGIApp) -> WSGIApp:
        def marked(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            environ.setdefault("test.trail", []).append(name)
            return app(environ, start_response)

        return marked

    return factory


site_outer = _marking("site_outer")
site_inner = _marking("site_inner")
app_outer = _marking("app_outer")
app_inner = _marking("app_inner")


def _asgi_marking(name: str) -> Callable[[Any], Any]:
    def factory(app: Any) -> Any:
        async def marked(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                scope.setdefault("test.trail", []).append(name)
            await app(scope, receive, send)

        return marked

    return factory


asgi_site_outer = _asgi_marking("asgi_site_outer")
asgi_site_inner = _asgi_marking("asgi_site_inner")
