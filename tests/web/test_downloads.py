"""File downloads (/v1/files/{id}/content and the browser's dataset version download) stream
through the web, or, with STORAGE_URL's downloads=redirect on S3, answer 302 to a presigned
URL on the store. Access is checked first either way: an outsider gets 404 and no URL.

The store is moto's standalone S3 server over HTTP; the presigned URLs are fetched with
`requests` (and the openai SDK), as a client would."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from django.core.exceptions import ImproperlyConfigured
from django.urls import reverse
from django.utils.http import content_disposition_header
from openai import DefaultHttpxClient, OpenAI

from tests.s3server import S3Server, s3, use_s3
from tests.web.conftest import CHAT_JSONL, Upload, client_for
from tests.web.test_settings import start_django
from webapp.api.keys import api_key_create
from webapp.datasets.models import DatasetVersion
from webapp.datasets.services import dataset_version_create
from webapp.storage_url import storages_for
from webapp.teams.services import team_create

__all__ = ["s3"]  # fixture

BODY = CHAT_JSONL * 2500  # ~300 KB: more than one 256 KiB chunk when streamed
NAME = "greetings été.jsonl"  # not ASCII: Content-Disposition must carry it (RFC 6266)


def use_s3_downloads(s3: S3Server, settings, monkeypatch, bucket: str, options: str) -> str:
    """Both aliases on a fresh bucket, with extra STORAGE_URL options; returns the URL."""
    use_s3(s3, settings, monkeypatch, bucket)
    url = f"{s3.url(bucket, 'team-data')}&{options}"
    settings.STORAGES = {**settings.STORAGES, **storages_for(url)}
    return url


def upload(team, owner) -> DatasetVersion:
    return dataset_version_create(
        team=team, name="greetings", upload=Upload.make(NAME, BODY), created_by=owner
    )


def api_get(version: DatasetVersion, key: str):  # noqa: ANN201 - Django's test response
    url = reverse("api_file_content", args=[f"file-{version.pk}"])
    return client_for(None).get(url, HTTP_AUTHORIZATION=f"Bearer {key}")


def browser_get(version: DatasetVersion, user):  # noqa: ANN201
    return client_for(user).get(reverse("dataset_version_download", args=[version.pk]))


def assert_streamed(response) -> None:
    assert response.status_code == 200 and response.streaming
    assert "Location" not in response
    assert b"".join(response.streaming_content) == BODY
    assert response["Content-Length"] == str(len(BODY))
    assert response["Content-Disposition"] == content_disposition_header(True, NAME)


def assert_redirected(response, endpoint: str, seconds: int) -> None:
    assert response.status_code == 302 and not response.streaming
    assert response["Cache-Control"] == "private, no-store"
    location = response["Location"]
    assert location.startswith(f"{endpoint}/"), location
    assert parse_qs(urlsplit(location).query)["X-Amz-Expires"] == [str(seconds)]
    fetched = requests.get(location, timeout=30)  # no cookie, no API key: the URL is the grant
    assert fetched.status_code == 200, fetched.text[:300]
    assert fetched.content == BODY
    assert fetched.headers["Content-Disposition"] == content_disposition_header(True, NAME)
    assert fetched.headers["Content-Type"] == "application/octet-stream"


def assert_refused(response) -> None:
    assert response.status_code == 404
    assert "Location" not in response
    content = b"".join(response.streaming_content) if response.streaming else response.content
    assert b"X-Amz" not in content and BODY[:40] not in content


@pytest.mark.parametrize("mode", ["stream", "redirect"])
def test_downloads_stream_or_redirect_after_the_access_check(
    mode: str, s3: S3Server, settings, monkeypatch, team, owner, viewer, outsider
) -> None:
    use_s3_downloads(
        s3, settings, monkeypatch, f"dl-{mode}", f"downloads={mode}&presign_seconds=120"
    )
    version = upload(team, owner)
    _, key = api_key_create(team=team, created_by=viewer, name="reader", read_only=True)
    other = team_create(name="Elsewhere", owner=outsider)
    _, outsider_key = api_key_create(team=other, created_by=outsider, name="theirs")

    for response in (api_get(version, key), browser_get(version, viewer)):
        if mode == "redirect":
            assert_redirected(response, s3.endpoint, 120)
        else:
            assert_streamed(response)
    assert_refused(api_get(version, outsider_key))
    assert_refused(browser_get(version, outsider))
    anonymous = browser_get(version, None)  # sent to log in, never to the store
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/accounts/login")


def test_presigned_urls_name_the_public_endpoint_when_clients_reach_the_store_elsewhere(
    s3: S3Server, settings, monkeypatch, team, owner
) -> None:
    # The web reaches moto as 127.0.0.1; clients are told "localhost" (another name, same server).
    public = s3.endpoint.replace("127.0.0.1", "localhost")
    use_s3_downloads(
        s3, settings, monkeypatch, "dl-public", f"downloads=redirect&public_endpoint_url={public}"
    )
    version = upload(team, owner)
    assert_redirected(browser_get(version, owner), public, 300)


def test_the_local_backend_always_streams(team, owner) -> None:
    version = upload(team, owner)  # STORAGE_URL unset: local folders
    assert_streamed(browser_get(version, owner))


def test_the_openai_sdk_follows_the_redirect_to_the_file(
    s3: S3Server, settings, monkeypatch, live_server, team, owner
) -> None:
    use_s3_downloads(s3, settings, monkeypatch, "dl-sdk", "downloads=redirect")
    version = upload(team, owner)
    _, key = api_key_create(team=team, created_by=owner, name="sdk")
    seen: list = []  # the SDK's own HTTP client (and its defaults: it follows redirects)
    http = DefaultHttpxClient(event_hooks={"response": [seen.append]})
    sdk = OpenAI(
        base_url=f"{live_server.url}/v1", api_key=key, max_retries=0, timeout=60, http_client=http
    )
    assert sdk.files.content(f"file-{version.pk}").content == BODY
    assert [r.status_code for r in seen] == [302, 200]
    to_store = seen[1].request
    assert str(to_store.url).startswith(s3.endpoint)
    # The client drops the API key on the cross-origin hop: the store sees only the signed URL.
    assert "authorization" not in to_store.headers


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("downloads=fast", "downloads must be one of stream, redirect, got 'fast'"),
        ("public_endpoint_url=minio:9000", "public_endpoint_url must be an http(s):// address"),
        ("presign_seconds=0", "presign_seconds must be from 1 to 604800"),
    ],
)
def test_a_bad_download_option_is_refused_at_settings_time(options: str, message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=re.escape(message)):
        storages_for(f"s3://bkt?{options}")
    started = start_django(STORAGE_URL=f"s3://bkt?endpoint_url=http://127.0.0.1:9&{options}")
    assert started.returncode != 0
    assert "ImproperlyConfigured" in started.stderr and message in started.stderr
