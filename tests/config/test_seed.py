"""The team's seed configuration: an ntpd 4.2.8 ntp.conf as found on a CentOS server, and
the same file as published on a web page (non-breaking spaces between words)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest

from pyntpd.config import LocalClock, check_file, parse_file
from pyntpd.proto.access_types import RestrictFlag, RestrictRule

from .helpers import DATA, SEED_RESOLVER, SHARED_SEED, FakeFiles

F = RestrictFlag
CLEAN = DATA / "ntp.conf"
PUBLISHED = DATA / "ntp.conf.as-published"
PERFER = "22:26: error: unknown option 'perfer' for 'server'; did you mean 'prefer'?"


def _parse(path):
    # The seed names /etc/ntp/crypto/pw and /etc/ntp/keys; neither exists in the fake world.
    fs = FakeFiles({str(path): path.read_bytes()})
    return parse_file(path, resolve=SEED_RESOLVER, read_file=fs.read_file, file_mode=fs.file_mode)


def test_seed_has_exactly_one_error_the_perfer_typo():
    result = _parse(CLEAN)
    assert [str(d) for d in result.errors] == [f"{CLEAN}:{PERFER}"]


def test_seed_warnings_are_the_missing_include_and_keys_files():
    result = _parse(CLEAN)
    assert [str(d) for d in result.warnings] == [
        f"{CLEAN}:44:13: warning: include file '/etc/ntp/crypto/pw' does not exist; skipped",
        f"{CLEAN}:48:6: warning: cannot read keys file '/etc/ntp/keys': No such file or "
        "directory; no key is used, so none are loaded",
    ]


def test_seed_servers_are_the_two_without_errors():
    config = _parse(CLEAN).config
    assert [(s.kind, s.address) for s in config.servers] == [
        ("server", "1.cn.pool.ntp.org"),
        ("server", "0.asia.pool.ntp.org"),
    ]


def test_seed_local_clock_is_at_stratum_10():
    assert _parse(CLEAN).config.local_clocks == (LocalClock(unit=0, stratum=10),)


def test_seed_driftfile_and_keys_file():
    config = _parse(CLEAN).config
    assert (config.driftfile, config.keys_file, config.keys) == (
        "/var/lib/ntp/drift",
        "/etc/ntp/keys",
        (),
    )


def test_seed_restrictions_follow_ntpd_semantics():
    net = ipaddress.ip_network
    default = F.KOD | F.NOMODIFY | F.NOTRAP | F.NOPEER | F.NOQUERY
    server = F.NOMODIFY | F.NOTRAP | F.NOQUERY
    assert _parse(CLEAN).config.restrictions == (
        RestrictRule(net("0.0.0.0/0"), default, is_default=True),
        RestrictRule(net("::/0"), default, is_default=True),
        RestrictRule(net("127.0.0.1/32"), F.NONE),
        RestrictRule(net("::1/128"), F.NONE),
        RestrictRule(net("172.16.0.0/16"), F.NOMODIFY | F.NOTRAP),
        RestrictRule(net("192.0.2.3/32"), server, hostname="3.cn.pool.ntp.org"),
        RestrictRule(net("192.0.2.1/32"), server, hostname="1.cn.pool.ntp.org"),
        RestrictRule(net("2001:db8::1/128"), server, hostname="1.cn.pool.ntp.org"),
        RestrictRule(net("198.51.100.7/32"), server, hostname="0.asia.pool.ntp.org"),
    )


def test_published_copy_gives_the_same_config_as_the_clean_one():
    assert _parse(PUBLISHED).config == _parse(CLEAN).config


def test_published_copy_locations_differ_only_in_file_name():
    clean = _parse(CLEAN).config
    published = _parse(PUBLISHED).config
    assert [replace(s.location, file="x") for s in published.servers] == [
        replace(s.location, file="x") for s in clean.servers
    ]


def test_published_copy_warns_once_listing_the_lines_with_nbsp():
    result = _parse(PUBLISHED)
    nbsp = [d for d in result.warnings if "non-breaking" in d.message]
    assert len(nbsp) == 1
    assert str(nbsp[0]).startswith(
        f"{PUBLISHED}:4:10: warning: non-breaking spaces used as separators on lines 4, 8, 9, "
        "14, 15, 18, 22, 23, 24, 33, 34, 35, 38, 39, 44, 48 (copied from a web page?); "
        "treated as spaces"
    )


def test_published_copy_has_the_same_perfer_error():
    assert [str(d) for d in _parse(PUBLISHED).errors] == [f"{PUBLISHED}:{PERFER}"]


def test_check_file_adds_the_source_count_advice():
    fs = FakeFiles({str(CLEAN): CLEAN.read_bytes()})
    diags = check_file(CLEAN, resolve=SEED_RESOLVER, read_file=fs.read_file,
                       file_mode=fs.file_mode)
    assert [d.severity for d in diags] == ["error", "warning", "warning", "warning"]
    assert "only 2 network time source(s); RFC 8633 §3.2 recommends at least 4" in str(diags[-1])


@pytest.mark.parametrize("name", ["ntp.conf", "ntp.conf.as-published"])
def test_copies_match_the_shared_seed_when_it_is_present(name):
    shared = SHARED_SEED / name
    if not shared.exists():
        pytest.skip("shared seed directory not present")
    assert (DATA / name).read_bytes() == shared.read_bytes()
