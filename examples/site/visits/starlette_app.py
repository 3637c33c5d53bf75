"""A Starlette (ASGI) app mounted at ``/starlette``: it counts its visits in the site's database."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from .db import database


def home(request: Request) -> HTMLResponse:
    # A plain (not async) endpoint: Starlette runs it on its thread pool, so
    # the database call never blocks the event loop.
    visits = database().record_visit("starlette")
    # url_for builds the URL with the mount prefix (the ASGI root_path): /starlette/
    return HTMLResponse(
        f"<!doctype html><title>Starlette</title>"
        f"<h1>Starlette at {request.url_for('home').path}</h1>"
        f'<p>{visits} visit(s).</p><p><a href="/">back to the index</a></p>'
    )


app = Starlette(routes=[Route("/", home, name="home")])
