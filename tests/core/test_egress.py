"""Judge and candidate endpoints reach public addresses only, unless the operator lists a
host: checked on the URL (every address the host resolves to) and again on the address
each connection reached, against real HTTP servers and the real resolver. The rebinding
test re-points a name in a private /etc/hosts (a mount namespace) between the check and
the connect."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from finetune_core.contracts.egress import EgressPolicy, EgressRefused, address_class
from finetune_core.data.types import Message
from finetune_core.evaluate import Candidate, EvalSet, generate_answers, make_item, make_judge
from finetune_core.evaluate.endpoint import Endpoint
from tests.core.test_eval_endpoint import MSG, Loopback, endpoint

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def server():
    s = Loopback()
    yield s
    s.close()


def test_a_loopback_judge_url_is_refused_with_a_clear_message(server: Loopback) -> None:
    port = server.httpd.server_address[1]
    with pytest.raises(EgressRefused) as refused:
        make_judge(f"openai:judge@{server.url}")
    message = str(refused.value)
    assert "127.0.0.1 is a loopback address" in message
    assert f"EGRESS_ALLOW_HOSTS=127.0.0.1:{port}" in message  # what the operator would set
    # An API candidate at the same URL: the evaluation stops before any request.
    item = EvalSet("one", [make_item([Message("user", "hi")])])
    with pytest.raises(EgressRefused, match="loopback"):
        generate_answers([Candidate("openai", "m", base_url=server.url)], item)
    assert server.requests == []


def test_a_name_that_resolves_to_a_private_address_is_refused(server: Loopback) -> None:
    port = server.httpd.server_address[1]
    with pytest.raises(EgressRefused, match=r"localhost \(127\.0\.0\.1\) is a loopback"):
        Endpoint(f"http://localhost:{port}/v1", "m")
    # Listing the address lets the name through: the check is on what it resolves to.
    ep = Endpoint(f"http://localhost:{port}/v1", "m", egress=server.egress, max_attempts=1)
    assert ep.complete([MSG])[0].status == "ok" and len(server.requests) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
def test_cloud_metadata_is_refused_even_for_a_listed_name(url: str) -> None:
    listed = EgressPolicy.parse("metadata.google.internal,judge.internal,169.254.169.254")
    with pytest.raises(EgressRefused, match="metadata"):
        listed.check_url(url)
    assert listed.refusal("judge.internal", 80, "169.254.169.254") is not None


def test_every_non_public_range_is_refused_by_default() -> None:
    refused = {
        "10.1.2.3": "private", "172.16.0.1": "private", "192.168.1.1": "private",
        "100.64.0.1": "CGNAT", "fc00::1": "private", "fd12:3456::1": "private",
        "::1": "loopback", "127.8.8.8": "loopback", "::ffff:127.0.0.1": "loopback",
        "::ffff:10.0.0.1": "private", "2002:7f00:1::": "loopback", "169.254.1.1": "link-local",
        "fe80::1": "link-local", "224.0.0.1": "multicast", "ff02::1": "multicast",
        "0.0.0.0": "unspecified", "::": "unspecified", "192.0.2.1": "private",
    }  # fmt: skip
    for address, what in refused.items():
        assert what in (address_class(address) or ""), address
    for public in ("8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"):
        assert address_class(public) is None


def test_the_allow_list_lets_only_the_listed_judge_through(server: Loopback) -> None:
    (reply,) = endpoint(server).complete([MSG])  # listed: 127.0.0.1 and this port
    assert reply.status == "ok" and len(server.requests) == 1
    other = Loopback()  # the same address, another port: not listed
    try:
        with pytest.raises(EgressRefused, match="loopback"):
            Endpoint(other.url, "m", egress=server.egress)
    finally:
        other.close()
    with pytest.raises(ValueError, match="EGRESS_ALLOW_HOSTS: 'a:b:c'"):
        EgressPolicy.parse("judge.internal, a:b:c")


def test_a_failed_call_records_the_status_never_the_body(server: Loopback) -> None:
    secret = b'{"error": {"message": "internal token sk-live-SECRET-42 at 10.0.0.7"}}'
    server.script.extend([(500, {}, secret, 0), (403, {}, secret, 0)])
    (failed,) = endpoint(server, max_attempts=1).complete([MSG])
    (denied,) = endpoint(server).complete([MSG])
    assert failed.error == "HTTP 500 (InternalServerError)"
    assert denied.error == "HTTP 403 (PermissionDeniedError)"


# Run in a mount and network namespace of its own: /etc/hosts is a file the test rewrites,
# and 169.254.169.254 is an address of the namespace's loopback device.
REBIND = r"""
import json, sys
from pathlib import Path
from finetune_core.contracts.egress import EgressPolicy
from finetune_core.evaluate.endpoint import Endpoint
from tests.core.test_eval_endpoint import MSG, Loopback

hosts = Path(sys.argv[1])
out = {}
for case, address, allow in (
    ("rebound", "127.0.0.1", ""),  # public when checked, loopback when connected
    ("named_metadata", "169.254.169.254", "judge.rebind.test"),  # listed by name
    ("named_loopback", "127.0.0.1", "judge.rebind.test"),  # the on-premises case
):
    server = Loopback(host=address)
    port = server.httpd.server_address[1]
    hosts.write_text("8.8.8.8 judge.rebind.test\n" if case != "named_loopback" else
                     f"{address} judge.rebind.test\n")
    ep = Endpoint(f"http://judge.rebind.test:{port}/v1", "m", max_attempts=1,
                  egress=EgressPolicy.parse(allow))
    hosts.write_text(f"{address} judge.rebind.test\n")  # re-pointed before the connect
    (reply,) = ep.complete([MSG])
    out[case] = {"status": reply.status, "error": reply.error, "requests": len(server.requests)}
    server.close()
print("RESULT=" + json.dumps(out))
"""


def _namespaces_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "re-pointing a name needs root (a mount namespace over /etc/hosts)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "re-pointing a name needs the `unshare` and `ip` commands"
    return None


def test_the_connect_time_check_refuses_a_name_re_pointed_after_the_check(
    tmp_path: Path,
) -> None:
    if reason := _namespaces_unavailable():
        pytest.skip(reason)
    hosts = tmp_path / "hosts"
    hosts.write_text("8.8.8.8 judge.rebind.test\n")
    setup = (
        f"mount --bind {hosts} /etc/hosts && ip link set lo up && "
        'ip addr add 169.254.169.254/32 dev lo && exec "$@"'
    )
    done = subprocess.run(
        ["unshare", "-m", "-n", "--propagation", "private", "sh", "-c", setup, "sh",
         sys.executable, "-c", REBIND, str(hosts)],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT=")), None)
    assert line, done.stdout + done.stderr
    out = json.loads(line.removeprefix("RESULT="))
    # Checked as 8.8.8.8, connected to 127.0.0.1: refused on the peer address, unsent.
    assert out["rebound"]["requests"] == 0, out
    assert out["rebound"]["error"].startswith("refused: judge.rebind.test (127.0.0.1)")
    # A name the operator listed may be private, never metadata.
    assert out["named_metadata"]["requests"] == 0, out
    assert "cloud metadata address" in out["named_metadata"]["error"]
    assert out["named_loopback"] == {"status": "ok", "error": "", "requests": 1}
