"""A Django app for the mounting tests, configured in this one module (no project)."""

from __future__ import annotations

from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="sitebus tests only",
    ALLOWED_HOSTS=["*"],
    ROOT_URLCONF=__name__,
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)

from django.core.wsgi import get_wsgi_application  # noqa: E402  # needs the settings above
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect  # noqa: E402
from django.shortcuts import redirect  # noqa: E402
from django.urls import path, reverse  # noqa: E402


def home(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"django home; hello is at {reverse('hello')}")


def hello(request: HttpRequest) -> HttpResponse:
    return HttpResponse(f"django hello; path={request.path} path_info={request.path_info}")


def go(request: HttpRequest) -> HttpResponseRedirect:
    return redirect("hello")


urlpatterns = [
    path("", home),
    path("hello", hello, name="hello"),
    path("go", go),
]

app = get_wsgi_application()
