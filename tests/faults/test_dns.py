"""Name resolution failing, then recovering; pool members that die re-resolved (issue 6,
item 4); the checks against a resolver that never answers (issue 11, item 6).

pyntpd runs in a mount namespace of its own where /etc/nsswitch.conf says `hosts: files`
and /etc/hosts is a file this test writes (bind-mounted: the real ones are never touched,
and no DNS query ever leaves the machine). The resolver back-off (16 s doubling to 1 h in
daemon/sources.py) and the pool's patience (8 unanswered polls) are shortened in the child.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.harness import Upstreams, no_traceback, poll_until, program, require_root, wrapper
from tests.support import Pyntpd, query

FAST_RETRY = {"pyntpd.daemon.sources": {"RESOLVE_RETRY_MIN": 0.5, "RESOLVE_RETRY_MAX": 1.0,
                                        "POOL_REPLACE_AFTER": 3}}


@pytest.fixture(autouse=True)
def _mount_namespaces() -> None:
    require_root("unshare")


def _hosts_namespace(tmp_path: Path) -> tuple[Path, str]:
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    nsswitch = tmp_path / "nsswitch.conf"
    nsswitch.write_text("hosts: files\n")
    setup = f"mount --bind {nsswitch} /etc/nsswitch.conf\nmount --bind {hosts} /etc/hosts"
    return hosts, setup


def _rewrite(hosts: Path, text: str) -> None:
    # In place: the bind mount holds this inode (a rename would swap in another one).
    with open(hosts, "r+") as f:
        f.truncate()
        f.write(text)


def test_a_name_that_does_not_resolve_is_retried_until_it_does(tmp_path: Path) -> None:
    hosts, setup = _hosts_namespace(tmp_path)
    with Upstreams(stratum=2) as up:
        up.come_back("127.0.0.1")
        conf = tmp_path / "ntp.conf"
        conf.write_text(f"server ntp.faults.test port {up.port} iburst minpoll 3 maxpoll 3\n"
                        "restrict default\n")
        prog = program(tmp_path, **FAST_RETRY)
        with Pyntpd("-c", str(conf), wrap=wrapper(prog, setup)) as daemon:
            poll_until(lambda: daemon.output().count("cannot resolve ntp.faults.test") >= 2,
                       10, f"retries:\n{daemon.output()}")
            assert query(daemon.port).header.stratum == 16  # serving meanwhile
            _rewrite(hosts, "127.0.0.1 localhost ntp.faults.test\n")
            daemon.wait_for_log(f"association with 127.0.0.1 port {up.port} (ntp.faults.test)",
                                10)
            daemon.wait_for_log("synchronised to 127.0.0.1", 15)
            assert query(daemon.port).header.stratum == 3
            assert daemon.stop() == 0
            no_traceback(daemon.output())


def test_a_dead_pool_member_is_replaced_by_a_fresh_address(tmp_path: Path) -> None:
    hosts, setup = _hosts_namespace(tmp_path)
    live = ["127.0.0.3", "127.0.0.4", "127.0.0.5"]
    with Upstreams(stratum=2) as up:
        for address in live:
            up.come_back(address)
        # 127.0.0.2 is in the pool's answer but nobody serves there.
        _rewrite(hosts, "".join(f"{a} pool.faults.test\n" for a in ["127.0.0.2", *live]))
        conf = tmp_path / "ntp.conf"
        conf.write_text(f"pool pool.faults.test port {up.port} iburst minpoll 3 maxpoll 3\n"
                        "restrict default\n")
        prog = program(tmp_path, **FAST_RETRY)
        with Pyntpd("-c", str(conf), wrap=wrapper(prog, setup)) as daemon:
            for address in ["127.0.0.2", *live]:
                daemon.wait_for_log(f"association with {address} port {up.port}", 10)
            up.come_back("127.0.0.6")
            _rewrite(hosts, "".join(f"{a} pool.faults.test\n"
                                    for a in ["127.0.0.2", *live, "127.0.0.6"]))
            daemon.wait_for_log("pool member 127.0.0.2 (pool.faults.test) is not answering", 20)
            daemon.wait_for_log(f"association with 127.0.0.6 port {up.port}", 10)
            poll_until(lambda: up.answered.get("127.0.0.6"), 10, "the new member polled")
            assert query(daemon.port).header.stratum == 3
            assert daemon.stop() == 0
            no_traceback(daemon.output())


# --- a resolver that never answers: the checks (issue 11, item 6) -----------------------------

SILENT_NAMES = [f"ntp{i}.silent.test" for i in range(8)]
# A UDP "nameserver" that takes every query and never answers: what a firewalled or dead
# DNS server looks like to glibc, which then gives each name ~10 s (5 s, twice).
SILENT_SERVER = """\
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 53))
open(sys.argv[1], "w").close()
s.settimeout(1.0)
end = time.monotonic() + 90
while time.monotonic() < end:
    try:
        s.recv(512)
    except OSError:
        pass
"""


def _in_silent_dns(tmp_path: Path, argv: list[str], timeout: float = 60.0
                   ) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run `argv` in a network and mount namespace of its own whose only nameserver
    (127.0.0.1:53, this test's) never answers; returns the result and the seconds `argv`
    took (set-up excluded)."""
    (tmp_path / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (tmp_path / "nsswitch.conf").write_text("hosts: files dns\n")
    (tmp_path / "hosts").write_text("127.0.0.1 localhost\n")
    (tmp_path / "silent.py").write_text(SILENT_SERVER)
    ready, took = tmp_path / "ready", tmp_path / "took"
    script = f"""set -e
ip link set lo up
{sys.executable} {tmp_path / 'silent.py'} {ready} &
server=$!
for i in $(seq 100); do [ -e {ready} ] && break; sleep 0.05; done
for f in resolv.conf nsswitch.conf hosts; do mount --bind {tmp_path}/$f /etc/$f; done
start=$(date +%s%N)
set +e
{shlex.join(argv)}
code=$?
echo $(( $(date +%s%N) - start )) > {took}
kill $server
exit $code
"""
    result = subprocess.run(["unshare", "--net", "--mount", "--propagation", "private",
                             "sh", "-c", script], capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    return result, int(took.read_text()) / 1e9


def _silent_conf(tmp_path: Path) -> Path:
    conf = tmp_path / "ntp.conf"
    conf.write_text("restrict default kod limited nomodify notrap nopeer noquery\n"
                    "restrict -6 default kod limited nomodify notrap nopeer noquery\n"
                    + "".join(f"server {name} iburst\n" for name in SILENT_NAMES))
    return conf


def test_check_with_a_silent_resolver_finishes_in_seconds_and_names_what_is_pending(
        tmp_path: Path) -> None:
    require_root("unshare", "ip")
    conf = _silent_conf(tmp_path)
    result, took = _in_silent_dns(
        tmp_path, [sys.executable, "-m", "pyntpd.cli.pyntpd", "--check", "-c", str(conf)])
    assert took < 8.0, result  # the budget (4 s) and start-up, not 8 names x 10 s
    lines = result.stdout.splitlines()
    for number, name in enumerate(SILENT_NAMES, start=3):
        assert (f"{conf}:{number}:8: warning: server '{name}': the resolver did not answer "
                "within 4 s; pyntpd will retry") in lines
    assert (f"{conf}: warning: no answer from the resolver within 4 s for 8 name(s): "
            + ", ".join(SILENT_NAMES)) in result.stdout
    assert result.returncode == 0  # warnings only
    no_traceback(result.stdout + result.stderr)


def test_audit_json_with_a_silent_resolver_is_always_printed_with_the_pending_names(
        tmp_path: Path) -> None:
    require_root("unshare", "ip")
    conf = _silent_conf(tmp_path)
    result, took = _in_silent_dns(
        tmp_path, [sys.executable, "-m", "pyntpd.cli.pyntpctl", "check", "--audit", "--json",
                   "-c", str(conf)])
    assert took < 8.0, result
    document = json.loads(result.stdout)
    assert document["pending_names"] == SILENT_NAMES
    assert document["resolve_timeout"] == 4.0
    codes = [f["code"] for f in document["findings"]]
    assert codes.count("unresolved") == 8 and codes.count("resolver-pending") == 1
    no_traceback(result.stderr)
