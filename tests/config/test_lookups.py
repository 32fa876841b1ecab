"""Name lookups for the checks, all at once with one deadline (issue 11, item 6).

With a resolver that never answers, looking names up one after another cost ~10 s each
(80-90 s for a file with 8 names, and `pyntpctl check --json` under a 60 s timeout printed
nothing). Here a resolver that blocks is a fake that waits on an event the test releases
at the end; tests/faults/test_dns.py does the same with the real resolver.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections.abc import Iterator

import pytest

from pyntpd.config import check_config, check_file, files
from pyntpd.config.check import audit_file

from .helpers import FakeFiles, parse

RESTRICTS = "restrict default noquery\nrestrict -6 default noquery\n"


class SilentResolver:
    """Answers the names in `table` at once; never answers any other (until released)."""

    def __init__(self, table: dict[str, list[str]] | None = None) -> None:
        self.table = table or {}
        self.release = threading.Event()
        self.asked: list[tuple[str, int | None]] = []
        self.lock = threading.Lock()

    def __call__(self, host: str, family: int | None) -> list[files.IPAddress]:
        with self.lock:
            self.asked.append((host, family))
        if host in self.table:
            return [ipaddress.ip_address(a) for a in self.table[host]]
        self.release.wait(60)
        return []


@pytest.fixture
def silent() -> Iterator[SilentResolver]:
    resolver = SilentResolver({"answers.example": ["192.0.2.7"]})
    yield resolver
    resolver.release.set()  # the threads left waiting finish


def _names(n: int) -> list[str]:
    return [f"silent{i}.example" for i in range(n)]


def test_names_are_looked_up_at_once_and_the_total_wait_is_the_budget(silent):
    started = time.monotonic()
    lookups = files.resolve_all([(n, None) for n in _names(8)], silent, budget=0.5)
    elapsed = time.monotonic() - started
    assert 0.5 <= elapsed < 1.5  # not 8 x anything
    assert len(silent.asked) == 8  # every name was asked before the deadline
    assert lookups.pending == [(n, None) for n in _names(8)]


def test_answers_in_time_are_kept_and_only_silent_names_are_pending(silent):
    lookups = files.resolve_all([("answers.example", None), ("silent0.example", None)],
                                silent, budget=0.3)
    assert lookups("answers.example", None) == [ipaddress.ip_address("192.0.2.7")]
    assert lookups.pending == [("silent0.example", None)]
    assert lookups("silent0.example", None) == []
    assert lookups.is_pending("SILENT0.example", None)  # names are case-insensitive
    assert not lookups.is_pending("answers.example", None)


def test_a_name_is_asked_once_per_family():
    resolver = SilentResolver({"a.example": ["192.0.2.1"]})
    files.resolve_all([("a.example", None), ("A.EXAMPLE", None), ("a.example", 2)], resolver,
                      budget=1.0)
    assert sorted(resolver.asked, key=str) == [("a.example", 2), ("a.example", None)]


def test_no_names_means_no_wait():
    started = time.monotonic()
    assert files.resolve_all([], SilentResolver(), budget=5.0).pending == []
    assert time.monotonic() - started < 0.5


def test_a_resolver_that_raises_counts_as_no_addresses():
    def broken(host: str, family: int | None) -> list[files.IPAddress]:
        raise RuntimeError("resolver bug")

    lookups = files.resolve_all([("a.example", None)], broken, budget=1.0)
    assert lookups.pending == [] and lookups("a.example", None) == []


def test_lookups_are_bounded_in_threads_but_all_wait_together(silent):
    n = files.MAX_CONCURRENT_LOOKUPS + 4
    started = time.monotonic()
    lookups = files.resolve_all([(name, None) for name in _names(n)], silent, budget=0.4)
    assert time.monotonic() - started < 1.4
    assert len(lookups.pending) == n
    assert len(silent.asked) == files.MAX_CONCURRENT_LOOKUPS


def test_check_file_reports_each_pending_server_and_the_list_in_the_budget(silent):
    text = RESTRICTS + "".join(f"server {n} iburst\n" for n in _names(8))
    fs = FakeFiles({"/etc/ntp.conf": text})
    started = time.monotonic()
    diags = [str(d) for d in check_file("/etc/ntp.conf", resolve=silent,
                                        read_file=fs.read_file, file_mode=fs.file_mode,
                                        budget=0.5)]
    assert time.monotonic() - started < 1.5
    assert ("/etc/ntp.conf:3:8: warning: server 'silent0.example': the resolver did not answer "
            "within 0.5 s; pyntpd will retry") in diags
    summary = [d for d in diags if "no answer from the resolver" in d]
    assert summary == [
        "/etc/ntp.conf: warning: no answer from the resolver within 0.5 s for 8 name(s): "
        + ", ".join(_names(8)) + ": they are reported as not resolving; the check does not "
        "wait longer, so that it always finishes; check the nameservers in /etc/resolv.conf, "
        "or write addresses"]


def test_restrict_host_names_are_looked_up_with_the_servers(silent):
    text = RESTRICTS + "server answers.example\nrestrict silent0.example nomodify\n"
    fs = FakeFiles({"/etc/ntp.conf": text})
    findings, lookups = audit_file("/etc/ntp.conf", full=False, resolve=silent,
                                   read_file=fs.read_file, file_mode=fs.file_mode,
                                   budget=0.3)
    assert lookups.pending == [("silent0.example", None)]
    assert lookups("answers.example", None)
    assert any(f.code == "resolver-pending" for f in findings)


def test_a_name_that_answers_empty_in_time_is_not_pending():
    resolver = SilentResolver({"nowhere.example": []})
    config = parse(RESTRICTS + "pool nowhere.example\n").config
    diags = [str(d) for d in check_config(config, resolve=resolver, budget=1.0)]
    assert diags == [
        "ntp.conf:3:6: warning: pool 'nowhere.example' does not resolve now; pyntpd will retry"]
