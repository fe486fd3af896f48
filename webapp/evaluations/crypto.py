"""API keys at rest: Fernet (AES-128-CBC + HMAC) keyed from SECRET_KEY.

The key is derived, not stored: rotating SECRET_KEY makes stored keys unreadable,
and the owner has to enter them again (decrypt raises, the run fails with a message).
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

_CONTEXT = b"tunebook/evaluations/api-key/v1"


def _fernet() -> Fernet:
    digest = hashlib.sha256(_CONTEXT + settings.SECRET_KEY.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode() if secret else ""


class KeyUnreadable(Exception):
    """The stored key was encrypted under another SECRET_KEY."""


def decrypt(token: str) -> str:
    if not token:
        return ""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise KeyUnreadable("The stored API key cannot be read; enter it again.") from None
