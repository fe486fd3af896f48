"""The S3 backend STORAGE_URL names: django-storages' S3Storage plus how downloads leave.

Two settings of its own, both from STORAGE_URL (webapp/storage_url.py):
- `downloads`: "stream" (the web streams the object out, the default) or "redirect" (the web
  answers 302 to a short-lived presigned GET URL; webapp/core/downloads.py decides);
- `public_endpoint_url`: the address clients reach the store by, when the web reaches it by
  another (an internal name); presigned URLs are signed for it. Unset: `endpoint_url`.

Only hosts whose STORAGE_URL is s3:// import this module (and so boto3).
"""

from __future__ import annotations

import threading

from django.utils.http import content_disposition_header
from storages.backends.s3 import S3Storage as BaseS3Storage

from webapp.core.storage import join


class S3Storage(BaseS3Storage):
    downloads: str
    public_endpoint_url: str | None

    def __init__(self, **settings: object) -> None:
        super().__init__(**settings)
        self._public = threading.local()

    def get_default_settings(self) -> dict[str, object]:
        return {
            **super().get_default_settings(),
            "downloads": "stream",
            "public_endpoint_url": None,
        }

    def __getstate__(self) -> dict[str, object]:
        state = super().__getstate__()
        state.pop("_public", None)
        return state

    def __setstate__(self, state: dict[str, object]) -> None:
        super().__setstate__(state)
        self._public = threading.local()

    def _signing_client(self):  # noqa: ANN202 - boto3's client type is generated at run time
        """The client whose endpoint goes into presigned URLs (signing is local: no request)."""
        if not self.public_endpoint_url:
            return self.connection.meta.client
        client = getattr(self._public, "client", None)
        if client is None:
            client = self._create_session().client(
                "s3",
                region_name=self.region_name,
                use_ssl=self.use_ssl,
                endpoint_url=self.public_endpoint_url,
                config=self.client_config,
                verify=self.verify,
            )
            self._public.client = client
        return client

    def download_url(self, key: str, *, filename: str, content_type: str) -> str:
        """A GET URL for `key` valid for `querystring_expire` seconds; the store answers it
        with the file saved as `filename` (Content-Disposition) and `content_type`."""
        return self._signing_client().generate_presigned_url(
            "get_object",
            Params={
                "Bucket": self.bucket_name,
                "Key": join(self.location, key),
                "ResponseContentDisposition": content_disposition_header(True, filename),
                "ResponseContentType": content_type,
            },
            ExpiresIn=self.querystring_expire,
        )
