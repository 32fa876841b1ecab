"""Files of each kind operators run ntpd with (data/kinds/: distribution defaults, rendered
configuration-management templates, a Samba DC), written for these tests. Each test asserts
what pyntpd keeps from the file — sources, restrict rules, knobs — not only that it parses."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from pyntpd.config import LocalClock, ParseResult
from pyntpd.config.audit import audit
from pyntpd.proto.access_types import RestrictFlag as F
from pyntpd.proto.access_types import RestrictRule

from .helpers import DATA, FakeResolver, messages, parse

KINDS = DATA / "kinds"
V4, V6 = ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")
HOSTS = {
    "0.pool.ntp.org": ["192.0.2.10"],
    "1.pool.ntp.org": ["192.0.2.11", "2001:db8::11"],
    "ntp2.corp.example": ["10.9.0.2"],
    **{f"{i}.centos.pool.ntp.org": [f"198.51.100.{i}"] for i in range(4)},
}
CENTOS_KEYS = {"/etc/ntp/keys": "4 MD5 four\n8 MD5 eight\n42 MD5 fortytwo\n"}
SERVING = F.KOD | F.NOTRAP | F.NOMODIFY | F.NOPEER | F.NOQUERY  # "time for everyone"


def _load(name: str, files: dict[str, str] | None = None) -> ParseResult:
    path = KINDS / name
    return parse(path.read_text(), str(path), hosts=HOSTS, files=files)


def _host(address: str, flags: F, name: str | None = None) -> RestrictRule:
    net = ipaddress.ip_network(address)
    return RestrictRule(net, flags, hostname=name)


def _sources(result: ParseResult) -> list[tuple[str, str, bool, int, int]]:
    return [(s.kind, s.address, s.iburst, s.minpoll, s.maxpoll) for s in result.config.servers]


def _warnings(result: ParseResult) -> list[str]:
    return [d.message for d in result.warnings]


@pytest.mark.parametrize("name", sorted(p.name for p in KINDS.glob("*.conf")))
def test_no_file_of_these_kinds_has_an_error_or_stops_the_start(name: str) -> None:
    result = _load(name, CENTOS_KEYS)
    assert not result.errors, messages(result)
    assert not result.fatal


def test_debian_keeps_its_pools_restrict_source_and_statistics() -> None:
    result = _load("debian.conf")
    assert _sources(result) == [("pool", f"{i}.debian.pool.ntp.org", True, 6, 10)
                                for i in range(4)]
    assert result.config.restrictions == (
        RestrictRule(V4, SERVING | F.LIMITED, is_default=True),
        RestrictRule(V6, SERVING | F.LIMITED, is_default=True),
        _host("127.0.0.1/32", F.NONE), _host("::1/128", F.NONE),
        RestrictRule(None, F.NOTRAP | F.NOMODIFY | F.NOQUERY | F.SOURCE),
    )
    config = result.config
    assert [n for n in ("loopstats", "peerstats", "clockstats") if config.stats_enabled(n)] \
        == ["loopstats", "peerstats", "clockstats"]
    assert (config.statsdir, config.leapfile) == (
        "/var/log/ntpstats/", "/usr/share/zoneinfo/leap-seconds.list")
    assert not result.diagnostics, messages(result)


def test_centos7_keeps_servers_keys_and_its_disable_monitor() -> None:
    result = _load("centos7.conf", CENTOS_KEYS)
    config = result.config
    assert _sources(result) == [("server", f"{i}.centos.pool.ntp.org", True, 6, 10)
                                for i in range(4)]
    flags = F.NOMODIFY | F.NOTRAP | F.NOPEER | F.NOQUERY
    assert config.restrictions[:2] == (RestrictRule(V4, flags, is_default=True),
                                       RestrictRule(V6, flags, is_default=True))
    assert (config.trusted_keys, config.control_key, config.flags.monitor) == (
        frozenset({4, 8, 42}), 8, False)
    assert [k.key_id for k in config.keys] == [4, 8, 42]


def test_centos7_audit_gives_no_key_advice_for_pool_servers_and_explains_monitor() -> None:
    result = _load("centos7.conf", CENTOS_KEYS)
    findings = {f.code: f for f in audit(result, resolve=FakeResolver(HOSTS))}
    assert "server-without-key" not in findings
    assert findings["public-server-unauthenticated"].severity == "note"
    assert "key 4" not in str(findings["public-server-unauthenticated"].lines())
    assert "'ntpq mrulist'" in (findings["disable-monitor"].why or "")


def test_freebsd_keeps_tos_the_restrict_source_template_and_the_quoted_leapfile() -> None:
    result = _load("freebsd.conf")
    config = result.config
    assert (config.tos.minclock, config.tos.maxclock) == (3, 6)
    assert _sources(result) == [("pool", "0.freebsd.pool.ntp.org", True, 6, 10)]
    default = F.LIMITED | F.KOD | F.NOMODIFY | F.NOTRAP | F.NOQUERY | F.NOPEER
    assert config.restrictions[:2] == (RestrictRule(V4, default, is_default=True),
                                       RestrictRule(V6, default, is_default=True))
    assert config.restrictions[2] == RestrictRule(
        None, F.LIMITED | F.KOD | F.NOMODIFY | F.NOTRAP | F.NOQUERY | F.SOURCE)
    assert config.leapfile == "/var/db/ntpd.leap-seconds.list"
    assert not result.diagnostics, messages(result)


def test_openwrt_keeps_the_local_clock_with_its_options_and_the_bracketed_rule() -> None:
    result = _load("openwrt.conf")
    config = result.config
    assert [s.address for s in config.servers] == [f"{i}.openwrt.pool.ntp.org"
                                                   for i in range(3)]
    assert config.local_clocks == (LocalClock(unit=0, stratum=10, prefer=True),)
    assert _host("::1/128", F.NONE) in config.restrictions
    assert _host("192.168.1.0/24", F.NOMODIFY | F.NOTRAP) in config.restrictions
    assert _warnings(result) == [
        "option 'burst' has no effect on the LOCAL driver; ignored",
        "option 'iburst' has no effect on the LOCAL driver; ignored",
    ]


def test_ansible_render_keeps_its_servers_with_polls_clamped_as_ntpd_does() -> None:
    result = _load("ansible.conf")
    assert _sources(result) == [("server", f"{i}.pool.ntp.org", True, 3, 17) for i in range(4)]
    assert _warnings(result).count(
        "minpoll 2 is out of range 3..17; using 3, as ntpd does") == 4
    assert _warnings(result).count(
        "maxpoll 18 is out of range 3..17; using 17, as ntpd does") == 4
    assert _host("10.20.0.0/16", F.NOMODIFY | F.NOTRAP) in result.config.restrictions
    assert result.config.tinker.panic == 0.0


def test_puppet_render_keeps_its_peers_as_servers_and_tinker_panic_0() -> None:
    result = _load("puppet.conf")
    config = result.config
    assert _sources(result) == [
        *[("server", f"{i}.pool.ntp.org", True, 6, 10) for i in range(3)],
        ("server", "10.1.1.11", False, 6, 10), ("server", "10.1.1.12", False, 6, 10),
    ]
    assert (config.tinker.panic, config.flags.monitor) == (0.0, False)
    assert sum("polled as 'server'" in w for w in _warnings(result)) == 2
    assert len(config.restrictions) == 4


def test_chef_render_keeps_its_peer_and_resolves_its_restrict_names() -> None:
    result = _load("chef.conf")
    config = result.config
    assert _sources(result) == [
        ("server", "0.pool.ntp.org", True, 6, 10), ("server", "1.pool.ntp.org", True, 6, 10),
        ("server", "ntp2.corp.example", True, 6, 10),
    ]
    pool = F.NOMODIFY | F.NOTRAP | F.NOQUERY
    assert _host("192.0.2.10/32", pool, "0.pool.ntp.org") in config.restrictions
    assert _host("2001:db8::11/128", pool, "1.pool.ntp.org") in config.restrictions
    assert _host("10.9.0.2/32", F.NOMODIFY, "ntp2.corp.example") in config.restrictions
    assert _host("127.0.0.1/32", F.NOMODIFY) in config.restrictions
    assert config.stats_enabled("peerstats")


def test_salt_render_keeps_the_whole_tinker_line_and_its_peers() -> None:
    result = _load("salt.conf")
    tinker = result.config.tinker
    assert (tinker.panic, tinker.step, tinker.stepout, tinker.dispersion) == (
        0.0, 0.128, 900.0, 15.0)
    assert tinker.allan == 220  # ntpd 4.2.8's byte of 1500
    assert [(s.kind, s.address) for s in result.config.servers] == [
        ("server", "0.pool.ntp.org"), ("server", "1.pool.ntp.org"),
        ("server", "172.30.0.5"), ("server", "172.30.0.6")]


def test_juju_render_keeps_its_orphan_mesh() -> None:
    result = _load("juju.conf")
    config = result.config
    assert config.tos.orphan == 10
    assert _sources(result) == [
        ("pool", "ntp.ubuntu.com", True, 6, 10),
        *[("server", f"10.5.0.1{i}", True, 6, 10) for i in (1, 2, 3)],
    ]
    assert config.tinker.panic == 0.0


def test_samba_dc_keeps_every_restrict_flag_and_its_signd_socket() -> None:
    result = _load("samba-dc.conf")
    config = result.config
    default = F.KOD | F.LIMITED | F.NOMODIFY | F.NOTRAP | F.NOPEER | F.NOQUERY | F.MSSNTP
    assert config.restrictions[:2] == (RestrictRule(V4, default, is_default=True),
                                       RestrictRule(V6, default, is_default=True))
    host = F.NOMODIFY | F.NOTRAP | F.NOPEER | F.NOQUERY
    assert _host("192.0.2.10/32", host, "0.pool.ntp.org") in config.restrictions
    assert config.local_clocks == (LocalClock(unit=0, stratum=10),)
    assert [(s.address, s.prefer) for s in config.servers] == [
        ("0.pool.ntp.org", True), ("1.pool.ntp.org", True)]
    assert (config.logfile, config.signd_directory) == ("/var/log/ntp",
                                                        "/var/lib/samba/ntp_signd/")
    assert not result.diagnostics, messages(result)  # no "mask ignored" for 255.255.255.255


def test_kinds_directory_has_every_kind_the_brief_names() -> None:
    names = {p.stem for p in Path(KINDS).glob("*.conf")}
    assert names == {"debian", "centos7", "freebsd", "openwrt", "ansible", "puppet", "chef",
                     "salt", "juju", "samba-dc"}
