"""A Bottle app for the mounting tests: a page, a URL it builds, a redirect."""

from __future__ import annotations

import bottle

app = bottle.Bottle()


@app.get("/")
def home() -> str:
    return f"bottle home; hello is at {app.get_url('hello')}"


@app.get("/hello", name="hello")
def hello() -> str:
    return f"bottle hello; script_name={bottle.request.script_name} path={bottle.request.path}"


@app.get("/go")
def go() -> None:
    bottle.redirect(app.get_url("hello"))
