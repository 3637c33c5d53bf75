"""Flask, Django, Bottle and Starlette side by side in one site, each at its own prefix.

The apps live in ``tests/site_apps/`` and are named by ``tests/site_apps/site.toml``;
the WSGI dispatcher is driven with werkzeug's test client, the ASGI one with
Starlette's (which runs the lifespan too) or by hand.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from werkzeug.test import Client

from sitebus.site.config import SiteImports, check_imports, load
from sitebus.site.mount import ASGIDispatcher, WSGIDispatcher, site_app

SITE = Path(__file__).parent / "site_apps" / "site.toml"


@pytest.fixture(scope="module")
def apps() -> Iterator[dict[str, Any]]:
    """The site file's apps, imported, by mount prefix."""
    path = list(sys.path)
    config = load(SITE)
    imported = check_imports(config)
    found = {app.mount: obj for app, obj in zip(config.apps, imported.apps, strict=True)}
    yield found
    sys.path[:] = path


@pytest.fixture
def wsgi_site(apps: dict[str, Any]) -> Client:
    """Every WSGI app of the site file in one WSGI dispatcher."""
    return Client(WSGIDispatcher({k: v for k, v in apps.items() if k != "/star"}))


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/flask/", "flask home; hello is at /flask/hello"),
        ("/flask/hello", "flask hello; script_name=/flask path=/hello"),
        ("/django/", "django home; hello is at /django/hello"),
        ("/django/hello", "django hello; path=/django/hello path_info=/hello"),
        ("/bottle/", "bottle home; hello is at /bottle/hello"),
        ("/bottle/hello", "bottle hello; script_name=/bottle/ path=/hello"),
        ("/", "plain script_name='' path_info='/' trail="),
        ("/elsewhere/x", "plain script_name='' path_info='/elsewhere/x' trail="),
    ],
)
def test_each_wsgi_framework_answers_its_own_routes_under_its_prefix(
    wsgi_site: Client, url: str, body: str
) -> None:
    response = wsgi_site.get(url)
    assert (response.status_code, response.get_data(as_text=True)) == (200, body)


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("/flask/go", "/flask/hello"),
        ("/django/go", "/django/hello"),
        ("/bottle/go", "http://localhost/bottle/hello"),
    ],
)
def test_redirects_the_frameworks_send_carry_the_prefix(
    wsgi_site: Client, url: str, location: str
) -> None:
    response = wsgi_site.get(url)
    assert response.status_code in (302, 303)
    assert response.headers["Location"] == location


def test_a_prefix_takes_whole_path_segments_only(wsgi_site: Client) -> None:
    """``/flask`` takes ``/flask`` and ``/flask/...``; ``/flaskish`` falls to the root app."""
    assert wsgi_site.get("/flaskish").get_data(as_text=True) == (
        "plain script_name='' path_info='/flaskish' trail="
    )
    # The bare prefix reaches Flask with an empty PATH_INFO, which Flask
    # answers by redirecting to the prefix with a slash.
    bare = wsgi_site.get("/flask")
    assert (bare.status_code, bare.headers["Location"]) == (308, "http://localhost/flask/")


def test_unmatched_paths_get_a_plain_404(apps: dict[str, Any]) -> None:
    client = Client(WSGIDispatcher({"/flask": apps["/flask"], "/flask/deeper": apps["/"]}))
    for url in ("/", "/flaskish", "/other/flask"):
        response = client.get(url)
        assert (response.status_code, response.get_data()) == (404, b"Not Found\n")
        assert response.headers["Content-Type"] == "text/plain; charset=utf-8"


def test_the_longest_prefix_wins_and_script_name_is_appended_to(apps: dict[str, Any]) -> None:
    dispatcher = WSGIDispatcher({"/a": apps["/flask"], "/a/b/": apps["/"]})
    response = Client(dispatcher).get("/a/b/c", environ_overrides={"SCRIPT_NAME": "/outer"})
    assert response.get_data(as_text=True) == (
        "plain script_name='/outer/a/b' path_info='/c' trail="
    )


def test_middleware_runs_site_first_then_the_apps_own_first_of_each_list_outermost(
    apps: dict[str, Any],
) -> None:
    config = load(
        SITE,
        (
            "site.middleware=['middleware:site_outer', 'middleware:site_inner']",
            "app[0].middleware=['middleware:app_outer', 'middleware:app_inner']",
        ),
    )
    imported = check_imports(config)
    wsgi_only = SiteImports(
        site_middleware=imported.site_middleware,
        apps=imported.apps[:4],
        app_middleware=imported.app_middleware[:4],
    )
    kind, app = site_app(config.replace(apps=config.apps[:4]), wsgi_only)
    assert kind == "wsgi"
    assert Client(app).get("/x").get_data(as_text=True) == (
        "plain script_name='' path_info='/x' trail=site_outer,site_inner,app_outer,app_inner"
    )
    # The flask app has no middleware of its own: only the site's ran.
    assert Client(app).get("/flask/trail").get_data(as_text=True) == "site_outer,site_inner"


# The ASGI site: Starlette natively, the WSGI frameworks through a2wsgi.


@pytest.fixture
def asgi_site(apps: dict[str, Any]) -> Iterator[TestClient]:
    """The whole site file as one ASGI app, its lifespan run by the test client."""
    config = load(SITE)
    kind, app = site_app(config, check_imports(config))
    assert kind == "asgi"
    with TestClient(app, follow_redirects=False) as client:
        yield client


@pytest.mark.parametrize(
    ("url", "body"),
    [
        ("/star/", "starlette home; hello is at http://testserver/star/hello"),
        ("/star/hello", "starlette hello; root_path=/star path=/star/hello"),
        ("/flask/", "flask home; hello is at /flask/hello"),
        ("/django/hello", "django hello; path=/django/hello path_info=/hello"),
        ("/bottle/", "bottle home; hello is at /bottle/hello"),
        ("/starry", "plain script_name='' path_info='/starry' trail="),
    ],
)
def test_each_framework_answers_under_its_prefix_in_an_asgi_site(
    asgi_site: TestClient, url: str, body: str
) -> None:
    response = asgi_site.get(url)
    assert (response.status_code, response.text) == (200, body)


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("/star/go", "http://testserver/star/hello"),
        ("/flask/go", "/flask/hello"),
        ("/django/go", "/django/hello"),
    ],
)
def test_redirects_carry_the_prefix_in_an_asgi_site(
    asgi_site: TestClient, url: str, location: str
) -> None:
    response = asgi_site.get(url)
    assert response.is_redirect
    assert response.headers["location"] == location


def test_an_asgi_site_answers_unmatched_paths_with_a_plain_404(apps: dict[str, Any]) -> None:
    dispatcher = ASGIDispatcher({"/star": apps["/star"]}, wsgi={"/flask": apps["/flask"]})
    with TestClient(dispatcher) as client:
        for url in ("/", "/stars", "/flaskish/x"):
            response = client.get(url)
            assert (response.status_code, response.text) == (404, "Not Found\n")


def test_lifespan_startup_and_shutdown_reach_a_mounted_starlette_app(
    apps: dict[str, Any],
) -> None:
    events = sys.modules["starlette_app"].EVENTS
    events.clear()
    dispatcher = ASGIDispatcher({"/star": apps["/star"]}, wsgi={"/": apps["/"]})
    with TestClient(dispatcher) as client:
        assert events == ["startup"]
        assert client.get("/star/hello").status_code == 200
    assert events == ["startup", "shutdown"]


def run_lifespan(app: Any) -> list[dict[str, Any]]:
    """Drive ``app``'s lifespan as a server does; the messages it sent back."""
    sent: list[dict[str, Any]] = []

    async def main() -> None:
        inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if message["type"] == "lifespan.startup.complete":
                await inbox.put({"type": "lifespan.shutdown"})

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, send)

    asyncio.run(main())
    return sent


def test_a_failing_lifespan_startup_fails_naming_the_app_and_stops_those_started(
    apps: dict[str, Any],
) -> None:
    events = sys.modules["starlette_app"].EVENTS
    events.clear()
    failing = sys.modules["starlette_app"].failing
    sent = run_lifespan(ASGIDispatcher({"/star": apps["/star"], "/bad": failing}))
    assert sent == [
        {
            "type": "lifespan.startup.failed",
            "message": "the app mounted at '/bad' failed to start: "
            "RuntimeError: the database is not there",
        }
    ]
    assert events == ["startup", "shutdown"]


def test_an_app_without_lifespan_support_does_not_stop_the_others(apps: dict[str, Any]) -> None:
    async def http_only(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"

    events = sys.modules["starlette_app"].EVENTS
    events.clear()
    sent = run_lifespan(ASGIDispatcher({"/star": apps["/star"], "/other": http_only}))
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert events == ["startup", "shutdown"]


def test_an_asgi_prefix_is_appended_to_the_servers_root_path() -> None:
    """Under a server's own root_path the prefix is appended, and ``path`` stays whole."""
    seen: list[tuple[str, str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope["root_path"], scope["path"]))
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def noop(message: Any) -> None:
        pass

    dispatcher = ASGIDispatcher({"/star": app})
    for path in ("/outer/star/x", "/star/x"):  # with root_path in path (the spec), and without
        scope = {"type": "http", "path": path, "root_path": "/outer"}
        asyncio.run(dispatcher(scope, noop, noop))
    assert seen == [("/outer/star", "/outer/star/x"), ("/outer/star", "/outer/star/x")]


def test_wsgi_apps_in_an_asgi_site_run_on_a_thread_pool_not_the_event_loop() -> None:
    def where(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [threading.current_thread().name.encode()]

    with TestClient(ASGIDispatcher({}, wsgi={"/": where})) as client:
        loop_thread = client.portal.call(lambda: threading.current_thread().name)
        served_by = client.get("/").text
    assert served_by.startswith("WSGI") and served_by != loop_thread


def test_a_non_ascii_prefix_matches_the_wsgi_form_of_the_path(apps: dict[str, Any]) -> None:
    """PATH_INFO holds UTF-8 bytes as latin-1 (PEP 3333); a prefix like ``/café`` still matches."""
    client = Client(WSGIDispatcher({"/café": apps["/"]}))
    response = client.get("/café/menu")
    assert response.status_code == 200
    assert response.get_data(as_text=True) == (
        f"plain script_name={'/café'.encode().decode('latin-1')!r} path_info='/menu' trail="
    )


def test_loading_a_site_file_and_mounting_wsgi_apps_imports_no_asyncio() -> None:
    """A site of WSGI apps pays for neither asyncio nor importlib.metadata at import."""
    code = (
        "import sys, sitebus.site.config, sitebus.site.mount; "
        "print(sorted({'asyncio', 'importlib.metadata'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_asgi_site_serves_its_wsgi_apps_again_after_a_stop_and_a_start(
    apps: dict[str, Any],
) -> None:
    """The lifespan shutdown ends the WSGI thread pools; the next startup makes new ones."""
    dispatcher = ASGIDispatcher({"/star": apps["/star"]}, wsgi={"/": apps["/"]})
    for _ in range(2):
        with TestClient(dispatcher) as client:
            assert client.get("/x").status_code == 200


def test_a_failing_lifespan_shutdown_names_the_app() -> None:
    async def breaks_on_stop(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.complete"})
        await receive()
        raise OSError("disk gone")

    sent = run_lifespan(ASGIDispatcher({"/db": breaks_on_stop}))
    assert sent[-1] == {
        "type": "lifespan.shutdown.failed",
        "message": "the app mounted at '/db' failed to stop: OSError: disk gone",
    }


def test_in_an_asgi_site_each_wsgi_apps_pool_has_the_servers_threads(apps: dict[str, Any]) -> None:
    config = load(SITE, ("server[0].threads=3", "server[1].threads=7"))
    kind, app = site_app(config, check_imports(config))
    assert kind == "asgi"
    pools = [adapter.executor for adapter in app._adapters]
    try:
        assert [pool._max_workers for pool in pools] == [7, 7, 7, 7]
    finally:
        app.close()


def test_in_an_asgi_site_the_site_middleware_wraps_the_dispatcher_and_app_middleware_the_app(
    apps: dict[str, Any],
) -> None:
    config = load(
        SITE,
        (
            "site.middleware=['middleware:asgi_site_outer', 'middleware:asgi_site_inner']",
            "app[0].middleware=['middleware:app_outer', 'middleware:app_inner']",
        ),
    )
    kind, app = site_app(config, check_imports(config))
    assert kind == "asgi"
    with TestClient(app) as client:
        assert client.get("/x").text == (
            "plain script_name='' path_info='/x' "
            "trail=asgi_site_outer,asgi_site_inner,app_outer,app_inner"
        )
        assert client.get("/star/hello").status_code == 200
