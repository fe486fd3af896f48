"""Server paths out of what people read: the engine's events and errors name files on the host
(`adapter saved to /srv/tunebook/var/runs/2/adapter`); pages show `runs/2/adapter` instead.

The engine's own messages stay as they are (its CLI users want the full path); only the web
layer rewrites them, through the `public` template filter.
"""

from __future__ import annotations

import re
from pathlib import Path

from django.conf import settings

# Top-level folders of a host path; API paths such as /v1/files are left alone.
HOST_ROOTS = ("tmp", "home", "root", "usr", "var", "opt", "srv", "work", "mnt", "data", "etc")
ABSOLUTE = re.compile(
    r"(?<![\w:/.~-])/(?:" + "|".join(HOST_ROOTS) + r"|private)(?:/[\w.@+=,%-]+)+/?"
)


def server_roots() -> list[str]:
    """The folders whose names mean nothing to a user, longest first (the most specific wins)."""
    roots = {
        settings.MEDIA_ROOT,
        settings.DATA_DIR,
        settings.BASE_DIR,
        getattr(settings, "FILE_UPLOAD_TEMP_DIR", None),
    }
    resolved = {str(Path(r).resolve()) for r in roots if r} | {str(r) for r in roots if r}
    return sorted((r.rstrip("/") for r in resolved if r not in ("", "/")), key=len, reverse=True)


def _relative(match: re.Match[str]) -> str:
    path = match.group(0)
    for root in server_roots():
        if path == root:
            return "the server's data folder"
        if path.startswith(root + "/"):
            return path[len(root) + 1 :]
    return Path(path.rstrip("/")).name  # another host folder: its last name is enough


def _server_paths() -> re.Pattern[str]:
    """Paths under this server's own folders, wherever they sit (CI checks out under /check)."""
    roots = "|".join(re.escape(r) for r in server_roots())
    return re.compile(r"(?<![\w:/.~-])(?:" + roots + r")(?!\.?[\w@+=,%-])(?:/[\w.@+=,%-]+)*/?")


def public_text(text: object) -> str:
    """`text` with every host path made relative to the data folder (or cut to its name)."""
    text = _server_paths().sub(_relative, "" if text is None else str(text))
    return ABSOLUTE.sub(_relative, text)
