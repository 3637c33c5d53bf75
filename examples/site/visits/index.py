"""The site's front page, a plain WSGI app at ``/``: a link to each framework and its visits."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from html import escape
from typing import Any

from .db import database

PAGES = [
    ("/flask/", "flask", "Flask"),
    ("/starlette/", "starlette", "Starlette"),
    ("/bottle/", "bottle", "Bottle"),
]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The index at ``/``; every other path the other apps do not take is a 404."""
    if environ.get("PATH_INFO", "/") not in ("", "/"):
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"Not Found\n"]
    db = database()
    visits = db.record_visit("index")
    counts = db.counts()
    root = escape(environ.get("SCRIPT_NAME", ""))
    items = "".join(
        f'<li><a href="{root}{href}">{name}</a>: {counts.get(page, 0)} visit(s)</li>'
        for href, page, name in PAGES
    )
    body = (
        "<!doctype html><title>sitebus demo</title>"
        "<h1>One site, three frameworks, one database</h1>"
        f"<ul>{items}</ul><p>This page: {visits} visit(s).</p>"
    ).encode()
    start_response(
        "200 OK",
        [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body)))],
    )
    return [body]
