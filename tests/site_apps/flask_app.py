"""A Flask app for the mounting tests: a page, a URL it builds, a redirect."""

from __future__ import annotations

from flask import Flask, redirect, request, url_for
from werkzeug.wrappers import Response

app = Flask(__name__)


@app.get("/")
def home() -> str:
    return f"flask home; hello is at {url_for('hello')}"


@app.get("/hello")
def hello() -> str:
    return f"flask hello; script_name={request.script_root} path={request.path}"


@app.get("/go")
def go() -> Response:
    return redirect(url_for("hello"))


@app.get("/trail")
def trail() -> str:
    return ",".join(request.environ.get("test.trail", []))
