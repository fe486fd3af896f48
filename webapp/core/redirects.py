"""Redirects to a caller-supplied address (`next`), only when it stays on this site."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponseRedirect
from django.shortcuts import redirect
from django.utils.http import url_has_allowed_host_and_scheme


def redirect_to_next(
    request: HttpRequest, target: str | None, fallback: str, *args: object
) -> HttpResponseRedirect:
    """Redirect to target if it is a URL of this host, else to the named URL fallback.

    Django's check refuses other hosts, other schemes, "//host" and "/\\host" (which
    browsers read as "//host"), and control characters.
    """
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return HttpResponseRedirect(target)
    return redirect(fallback, *args)
