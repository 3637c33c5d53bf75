"""A Flask app mounted at ``/flask``: it counts its visits in the site's database."""

from __future__ import annotations

from flask import Flask, url_for

from .db import database

app = Flask(__name__)


@app.get("/")
def home() -> str:
    visits = database().record_visit("flask")
    # url_for builds the URL with the mount prefix: /flask/
    return (
        f"<!doctype html><title>Flask</title><h1>Flask at {url_for('home')}</h1>"
        f'<p>{visits} visit(s).</p><p><a href="/">back to the index</a></p>'
    )
