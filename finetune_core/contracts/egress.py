"""Where judge and candidate endpoints may point: the one address policy.

Users type the base URL of an OpenAI-compatible endpoint; the workers then fetch it from
inside the operator's network, next to the database, the broker and the GPUs. So by
default a URL may not reach loopback, private (RFC 1918, ULA), shared (CGNAT), link-local,
multicast, unspecified, reserved or cloud-metadata addresses, nor an IPv6 address that
wraps one of those (IPv4-mapped, 6to4, Teredo, NAT64). The operator allows exceptions, an
on-premises judge for instance, as a comma list of hosts, each with an optional port:
EGRESS_ALLOW_HOSTS="judge.internal,10.0.0.5:8080,[fd12::5]:8000" (server setting; the CLI's
--egress-allow or the same variable). A listed name trusts the operator's DNS for private
addresses; cloud metadata is never reachable.

The web checks a URL when it is saved (an early, clear message); the engine checks it again
when it builds a client, and checks the address each connection actually reached
(finetune_core/evaluate/egress_http.py), so a name that is re-pointed after the check
(DNS rebinding) is still refused. Standard library only: the web process imports it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from finetune_core.errors import FinetuneError

ALLOW_ENV = "EGRESS_ALLOW_HOSTS"
# Names that answer with a cloud's instance metadata (credentials included): never reached.
METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data.ec2.internal"}
)
_METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200")
)
METADATA = "a cloud metadata address"
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_DEFAULT_PORT = {"http": 80, "https": 443}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class EgressRefused(FinetuneError):
    """A URL, or the address a connection reached, that the policy refuses."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code="egress_refused")


def _embedded(ip: Address) -> list[Address]:
    """Any IPv4 address an IPv6 one carries (first: it names the class best), then itself."""
    inner: list[Address | None] = []
    if isinstance(ip, ipaddress.IPv6Address):
        inner = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):  # not :: or ::1
            inner.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [a for a in inner if a is not None] + [ip]


def _class_of(ip: Address) -> str | None:
    checks = (
        (ip in _METADATA, METADATA),
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip in _CGNAT, "a shared (CGNAT) address"),
        (ip.is_private, "a private address"),
        (ip.is_reserved or not ip.is_global, "a reserved address"),
    )
    return next((what for hit, what in checks if hit), None)


def address_class(address: str) -> str | None:
    """Why `address` is refused by default ("a loopback address", ...), or None if public."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone
    return next((what for a in _embedded(ip) if (what := _class_of(a))), None)


def _host_key(host: str) -> str:
    """A host as the allow-list compares it: lower case, no brackets, no trailing dot,
    an IP address in its canonical spelling."""
    host = host.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Allowed:
    host: str  # as _host_key spells it
    port: int | None = None  # None: any port


def _parse_entry(entry: str) -> Allowed:
    host, port = entry, ""
    if entry.startswith("["):  # [v6] or [v6]:port
        host, _, rest = entry[1:].partition("]")
        port = rest.removeprefix(":")
    elif entry.count(":") == 1:  # name:port or v4:port (a bare v6 has several colons)
        host, port = entry.split(":")
    bad_port = port and not (port.isdigit() and 0 < int(port) < 65536)
    if not host or bad_port or (":" in host and not _is_ip(host)):
        raise ValueError(
            f"{ALLOW_ENV}: {entry!r} is not HOST, HOST:PORT or [IPv6]:PORT "
            "(e.g. judge.internal,10.0.0.5:8080)"
        )
    return Allowed(_host_key(host), int(port) if port else None)


@dataclass(frozen=True)
class Target:
    url: str
    host: str  # as _host_key spells it
    port: int


@dataclass(frozen=True)
class EgressPolicy:
    """The default refuses every non-public address; `allow` lists the exceptions."""

    allow: tuple[Allowed, ...] = ()

    @classmethod
    def parse(cls, text: str) -> EgressPolicy:
        """From EGRESS_ALLOW_HOSTS's comma list; ValueError names a bad entry."""
        entries = [e.strip() for e in (text or "").replace(" ", ",").split(",")]
        return cls(tuple(_parse_entry(e) for e in entries if e))

    def _listed(self, host: str, port: int) -> bool:
        return any(a.host == host and a.port in (None, port) for a in self.allow)

    def refusal(self, host: str, port: int, address: str) -> str | None:
        """Why connecting to `address` for the URL's host:port is refused, or None."""
        what = address_class(address)
        if what is None:
            return None
        ip = _host_key(address)
        shown = host if _host_key(host) == ip else f"{host} ({ip})"
        if what == METADATA:  # credentials live there: no allow-list entry reaches it
            return f"{shown} is {what}: never reachable."
        if self._listed(ip, port) or self._listed(_host_key(host), port):
            return None
        return (
            f"{shown} is {what}: endpoints may not reach this server's own network. "
            f"An operator can allow it with {ALLOW_ENV}={_entry(host, port)}."
        )

    def check_url(self, url: str) -> Target:
        """The URL's target, after checking its scheme, its host and every address the host
        resolves to here. A host that does not resolve here passes (another host, a
        worker, may resolve it): the connect-time check still applies there."""
        target = parse_url(url)
        if target.host in METADATA_HOSTS:
            raise EgressRefused(f"{target.host} is {METADATA}: never reachable.")
        for address in resolve(target.host, target.port):
            if reason := self.refusal(target.host, target.port, address):
                raise EgressRefused(reason)
        return target


def _entry(host: str, port: int) -> str:
    host = _host_key(host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_url(url: str) -> Target:
    """Scheme http(s), a host, a valid port; EgressRefused says which is missing."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise EgressRefused(f"{url!r} is not a valid URL ({exc}).") from None
    if parts.scheme not in _DEFAULT_PORT or not parts.hostname:
        raise EgressRefused(f"{url!r}: a base URL must be http:// or https:// with a host.")
    return Target(url, _host_key(parts.hostname), port or _DEFAULT_PORT[parts.scheme])


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to here ([] when it does not resolve)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]) for info in infos))
