"""A Starlette app for the mounting tests; it records its lifespan events in ``EVENTS``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.routing import Route

EVENTS: list[str] = []


async def home(request: Request) -> PlainTextResponse:
    return PlainTextResponse(f"starlette home; hello is at {request.url_for('hello')}")


async def hello(request: Request) -> PlainTextResponse:
    root = request.scope["root_path"]
    return PlainTextResponse(f"starlette hello; root_path={root} path={request.url.path}")


async def go(request: Request) -> RedirectResponse:
    return RedirectResponse(request.url_for("hello"))


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    EVENTS.append("startup")
    yield
    EVENTS.append("shutdown")


app = Starlette(
    routes=[Route("/", home), Route("/hello", hello, name="hello"), Route("/go", go)],
    lifespan=lifespan,
)


@asynccontextmanager
async def failing_lifespan(app: Starlette) -> AsyncIterator[None]:
    raise RuntimeError("the database is not there")
    yield


failing = Starlette(routes=[Route("/", home)], lifespan=failing_lifespan)
