"""API keys at rest: Fernet (AES-128-CBC + HMAC) keyed from SECRET_KEY.

The keys are derived, not stored. MultiFernet over SECRET_KEY then SECRET_KEY_FALLBACKS:
new tokens use SECRET_KEY, and tokens made under a fallback still read, so SECRET_KEY
can be rotated without losing stored API keys; `reencrypt` moves a token to SECRET_KEY
(`manage.py judge_keys_reencrypt`), after which the fallback can go.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings

_CONTEXT = b"tunebook/evaluations/api-key/v1"


def _derive(secret_key: str) -> Fernet:
    digest = hashlib.sha256(_CONTEXT + secret_key.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def _fernet() -> MultiFernet:
    keys = [settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS]
    return MultiFernet([_derive(key) for key in keys])


def encrypt(secret: str) -> str:
    return _fernet().encrypt(secret.encode()).decode() if secret else ""


class KeyUnreadable(Exception):
    """The stored key was encrypted under a key that is neither SECRET_KEY nor a fallback."""


def _read(token: str, use: Callable[[bytes], bytes]) -> str:
    if not token:
        return ""
    try:
        return use(token.encode()).decode()
    except InvalidToken:
        raise KeyUnreadable(
            "The stored API key cannot be read (SECRET_KEY changed without its old value in "
            "SECRET_KEY_FALLBACKS); enter it again."
        ) from None


def decrypt(token: str) -> str:
    return _read(token, _fernet().decrypt)


def reencrypt(token: str) -> str:
    """The same secret, encrypted under SECRET_KEY (from whichever key it was under)."""
    return _read(token, _fernet().rotate)
