"""Errors as a user meets them with DEBUG off: the product's own pages, never Django's debug ones."""

from __future__ import annotations

import re

from django.contrib.staticfiles import finders
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import include, path

from tests.web.conftest import client_for


def broken(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("/srv/secret/path exploded")


# The product's URLs plus one view that fails, for the 500 page (ROOT_URLCONF points here).
urlpatterns = [path("boom/", broken), path("", include("webapp.urls"))]


def test_an_unknown_page_is_the_friendly_404_without_url_patterns(settings, owner) -> None:
    assert settings.DEBUG is False
    for client in (Client(), client_for(owner)):
        page = client.get("/no/such/page/")
        body = page.content.decode()
        assert page.status_code == 404
        assert "Page not found" in body and 'class="brand"' in body  # in the product's layout
        assert "URLconf" not in body and "Django tried" not in body and "Traceback" not in body
    assert "Back to your dashboard" in client_for(owner).get("/no/such/page/").content.decode()


def test_a_server_error_is_the_friendly_500_without_the_traceback(settings) -> None:
    settings.ROOT_URLCONF = __name__
    page = Client(raise_request_exception=False).get("/boom/")
    body = page.content.decode()
    assert page.status_code == 500
    assert "Something went wrong" in body and 'class="brand"' in body
    assert "RuntimeError" not in body and "/srv/secret" not in body and "Traceback" not in body


def test_the_favicon_is_linked_served_from_static_and_answers_favicon_ico(settings, owner) -> None:
    body = client_for(owner).get("/dashboard/").content.decode()
    href = re.search(r'<link rel="icon" type="image/svg\+xml" href="([^"]+)"', body).group(1)
    assert href.startswith(settings.STATIC_URL)
    found = finders.find(href.removeprefix(settings.STATIC_URL))
    assert found, href
    with open(found, encoding="utf-8") as f:
        assert f.read().lstrip().startswith("<svg")
    ico = Client().get("/favicon.ico")
    assert ico.status_code == 301 and ico["Location"] == href
