"""The HTTP client behind every endpoint: each new connection's peer address is checked.

Endpoint checks its base URL with the policy (finetune_core/contracts/egress.py) before it
makes a client, resolving the host there. A name can be re-pointed after that check (DNS
rebinding), so this transport checks the address each connection actually reached, after
the TCP connect and before TLS or a byte of the request; a refused peer is closed and the
request fails with a connection error whose cause is EgressRefused. Redirects pass through here too.

It uses the connection pool's public `trace` hook. A custom transport also means the
client takes no proxy from the environment: a proxy would be the peer checked instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from finetune_core.contracts.egress import EgressPolicy, EgressRefused

try:  # the openai SDK's HTTP client: httpx, or its fork httpx2 in newer SDKs
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed SDK
    import httpx  # type: ignore[no-redef]

_CONNECTED = "connection.connect_tcp.complete"
_DEFAULT_PORT = {"http": 80, "https": 443}


class PeerCheckedTransport(httpx.BaseTransport):
    def __init__(self, policy: EgressPolicy) -> None:
        self.policy = policy
        self._inner = httpx.HTTPTransport()

    def handle_request(self, request: Any) -> Any:
        url = request.url
        port = url.port or _DEFAULT_PORT.get(url.scheme, 0)
        request.extensions = {**request.extensions, "trace": self._tracer(url.host, port)}
        try:
            return self._inner.handle_request(request)
        except EgressRefused as exc:  # as a transport error, which the SDK reports as such
            raise httpx.ConnectError(str(exc), request=request) from exc

    def _tracer(self, host: str, port: int) -> Callable[[str, dict[str, Any]], None]:
        def trace(event: str, info: dict[str, Any]) -> None:
            if event != _CONNECTED:
                return
            stream = info["return_value"]
            peer = stream.get_extra_info("server_addr")
            reason = self.policy.refusal(host, port, str(peer[0])) if peer else None
            if reason is not None or not peer:
                stream.close()
                raise EgressRefused(reason or f"{host}: the connected address is unknown")

        return trace

    def close(self) -> None:
        self._inner.close()


def checked_client(policy: EgressPolicy) -> Any:
    """An HTTP client for the openai SDK (its defaults) whose connections are checked."""
    import openai

    return openai.DefaultHttpxClient(transport=PeerCheckedTransport(policy))


def error_summary(exc: BaseException) -> str:
    """A failed call in a few words: the refusal, or the HTTP status and the error's
    class. Never the response body: the target's text would reach the results page."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, EgressRefused):
            return f"refused: {cause}"
        cause = cause.__cause__ or cause.__context__
    status = getattr(exc, "status_code", None)
    if status is not None:
        return f"HTTP {status} ({type(exc).__name__})"
    inner = exc.__cause__ or exc.__context__
    return type(exc).__name__ + (f" ({type(inner).__name__})" if inner is not None else "")
