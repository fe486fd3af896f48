"""Hosts that share nothing, on one machine: each is a network namespace joined to this one
by a veth pair, whose processes also run in a mount namespace where every other host's
folder is covered by an empty tmpfs. So a host reaches the others only over its link (the
database, the broker and the object store), and a path another host wrote cannot be read.

Needs root (namespaces and mounts); `unavailable()` says why not, for a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# A user, their team and an API key in the fresh database: printed for the test to read.
MAKE_KEY = """
from webapp.accounts.services import user_signup
from webapp.api.keys import api_key_create
from webapp.teams.models import Team
user = user_signup(username="ada", password="correct-horse-battery-9")
team = Team.objects.get(memberships__user=user)
print("KEY=" + api_key_create(team=team, created_by=user, name="hosts")[1])
"""

SUBNET = "10.231"  # host N: this side 10.231.N.1, the namespace 10.231.N.2 (a /30 each)


def unavailable() -> str | None:
    """Why hosts cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "separate hosts need root (network and mount namespaces); CI runs as root"
    for tool in ("ip", "unshare", "mount"):
        if shutil.which(tool) is None:
            return f"separate hosts need the `{tool}` command"
    probe = subprocess.run(["ip", "netns", "add", "tb-probe"], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", "tb-probe"], capture_output=True)
    if probe.returncode != 0:
        return f"cannot create a network namespace: {probe.stderr.strip()}"
    return None


def _ip(*args: str, ns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True)


@dataclass
class Host:
    name: str
    index: int
    root: Path  # this host's own folder (DATA_DIR, scratch); hidden from every other host
    hidden: list[Path] = field(default_factory=list)  # the other hosts' folders
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def ns(self) -> str:
        return f"tb-{self.name}"

    @property
    def address(self) -> str:
        """Where the other side reaches this host."""
        return f"{SUBNET}.{self.index}.2"

    @property
    def gateway(self) -> str:
        """Where this host reaches the machine's services (through the forwarders)."""
        return f"{SUBNET}.{self.index}.1"

    def start(
        self, argv: list[str], env: dict[str, str], log: str, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        """Runs `argv` on this host: its namespace, the other hosts' folders covered."""
        covers = " ".join(f"mount -t tmpfs -o size=1m,mode=000 none '{p}' &&" for p in self.hidden)
        script = f'mount --make-rprivate / && {covers} exec "$@"'
        out = open(self.root / f"{log}.log", "ab")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                self.ns,
                "unshare",
                "--mount",
                "--",
                "sh",
                "-c",
                script,
                "sh",
                *argv,
            ],
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def kill_all(self) -> list[int]:
        """SIGKILL for every process in this host's namespace, as when a machine dies."""
        pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
        killed = [int(p) for p in pids.stdout.split()]
        for pid in killed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            proc.wait(timeout=30)
        return killed

    def log(self, name: str) -> str:
        path = self.root / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


@contextmanager
def hosts(base: Path, names: list[str]) -> Iterator[dict[str, Host]]:
    """Makes one host per name (namespace, veth link, own folder); removes them afterwards."""
    made: dict[str, Host] = {}
    try:
        for index, name in enumerate(names, start=1):
            host = Host(name, index, base / name)
            host.root.mkdir(parents=True)
            made[name] = host
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True)  # a leftover
            _ip("netns", "add", host.ns)
            outside, inside = f"tbh{index}", f"tbn{index}"
            subprocess.run(["ip", "link", "del", outside], capture_output=True)
            _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
            _ip("link", "set", inside, "netns", host.ns)
            _ip("addr", "add", f"{host.gateway}/30", "dev", outside)
            _ip("link", "set", outside, "up")
            _ip("addr", "add", f"{host.address}/30", "dev", inside, ns=host.ns)
            _ip("link", "set", inside, "up", ns=host.ns)
            _ip("link", "set", "lo", "up", ns=host.ns)
        for host in made.values():
            host.hidden = [h.root for h in made.values() if h is not host]
        yield made
    finally:
        for host in made.values():
            host.kill_all()
            subprocess.run(["ip", "netns", "del", host.ns], capture_output=True)
            subprocess.run(["ip", "link", "del", f"tbh{host.index}"], capture_output=True)


class Forward:
    """Forwards TCP from every host's link (0.0.0.0:port) to a service on this machine's
    loopback: the shared PostgreSQL and Redis listen on 127.0.0.1 only."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.server = socket.create_server(("0.0.0.0", 0), reuse_port=False)
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return  # closed
            try:
                upstream = socket.create_connection(self.target, timeout=10)
            except OSError:
                client.close()
                continue
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


def wait_port(host: str, port: int, *, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} did not listen on {host}:{port}") from None
            time.sleep(0.2)
