"""Name resolution failing, then recovering; pool members that die re-resolved (issue 6,
item 4).

pyntpd runs in a mount namespace of its own where /etc/nsswitch.conf says `hosts: files`
and /etc/hosts is a file this test writes (bind-mounted: the real ones are never touched,
and no DNS query ever leaves the machine). The resolver back-off (16 s doubling to 1 h in
daemon/sources.py) and the pool's patience (8 unanswered polls) are shortened in the child.
"""

from __future__ import annotations

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
