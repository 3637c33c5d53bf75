"""A Bottle app mounted at ``/bottle``: it counts its visits in the site's database."""

from __future__ import annotations

import bottle

from .db import database

app = bottle.Bottle()


@app.get("/", name="home")
def home() -> str:
    visits = database().record_visit("bottle")
    # get_url builds the URL with the mount prefix: /bottle/
    return (
        f"<!doctype html><title>Bottle</title><h1>Bottle at {app.get_url('home')}</h1>"
        f'<p>{visits} visit(s).</p><p><a href="/">back to the index</a></p>'
    )
