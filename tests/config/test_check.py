from __future__ import annotations

from pyntpd.config import check_config, check_file

from .helpers import FakeFiles, FakeResolver, parse

RESTRICTS = "restrict default noquery\n"


def _check(text: str, hosts: dict[str, list[str]] | None = None) -> list[str]:
    config = parse(text).config
    return [str(d) for d in check_config(config, resolve=FakeResolver(hosts))]


def test_server_name_that_does_not_resolve_is_a_warning():
    diags = _check(RESTRICTS + "pool nowhere.example\n")
    assert diags == [
        "ntp.conf:2:6: warning: pool 'nowhere.example' does not resolve now; pyntpd will retry"
    ]


def test_server_name_that_resolves_is_fine():
    assert _check(RESTRICTS + "pool p.example\n", {"p.example": ["192.0.2.1"]}) == []


def test_literal_addresses_are_not_resolved():
    resolver = FakeResolver()
    check_config(parse("server 192.0.2.1").config, resolve=resolver)
    assert resolver.calls == []


def test_fewer_than_four_servers_is_a_warning():
    diags = _check(RESTRICTS + "server 192.0.2.1\nserver 192.0.2.2\n")
    assert len(diags) == 1 and "only 2 network time source(s)" in diags[0]


def test_four_servers_are_enough():
    text = RESTRICTS + "".join(f"server 192.0.2.{i}\n" for i in range(1, 5))
    assert _check(text) == []


def test_no_sources_at_all_is_a_warning():
    assert "no time sources are configured" in _check(RESTRICTS)[0]


def test_local_clock_alone_is_not_reported():
    assert _check(RESTRICTS + "server 127.127.1.0\n") == []


def test_missing_restrict_default_is_a_warning_per_family():
    diags = _check("restrict -4 default noquery\npool 192.0.2.1\n")
    assert diags == [
        "ntp.conf: warning: no 'restrict -6 default' line: every IPv6 client may query this "
        "server's status (mode 6) and rate limiting is off; add 'restrict -6 default kod "
        "limited nomodify notrap nopeer noquery'"
    ]


def test_check_file_of_a_missing_file_reports_only_that():
    fs = FakeFiles()
    diags = check_file("/etc/ntp.conf", resolve=FakeResolver(), read_file=fs.read_file,
                       file_mode=fs.file_mode)
    assert [str(d) for d in diags] == [
        "/etc/ntp.conf: error: cannot read configuration: No such file or directory"
    ]
