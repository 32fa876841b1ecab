"""The security audit (config.audit): one test per finding, and a clean file with none."""

from __future__ import annotations

import pytest

from pyntpd.config.audit import Finding, audit, counts, ordered

from .helpers import FakeResolver, parse

GOOD_RESTRICT = (
    "restrict default kod limited nomodify notrap nopeer noquery\n"
    "restrict 127.0.0.1\n"
    "restrict ::1\n"
)
FOUR = "".join(f"server 192.0.2.{i} iburst\n" for i in range(1, 5))
LEAP = "leapfile /usr/share/zoneinfo/leap-seconds.list\n"
CLEAN = GOOD_RESTRICT + FOUR + LEAP + "driftfile /var/lib/ntp/drift\n"


def _audit(text: str, *, hosts: dict[str, list[str]] | None = None,
           files: dict[str, str] | None = None, mode: int = 0o100600) -> list[Finding]:
    result = parse(text, files=files, hosts=hosts, mode=mode)
    return audit(result, resolve=FakeResolver(hosts))


def _codes(text: str, **kw: object) -> list[str]:
    return [f.code for f in _audit(text, **kw)]  # type: ignore[arg-type]


def _only(text: str, code: str, **kw: object) -> Finding:
    found = [f for f in _audit(text, **kw) if f.code == code]  # type: ignore[arg-type]
    assert len(found) == 1, found
    return found[0]


def test_clean_configuration_has_no_finding():
    assert _audit(CLEAN) == []


def test_restrict_default_without_limited_is_a_security_finding():
    f = _only(CLEAN.replace(" limited", ""), "restrict-default-limited")
    assert (f.severity, f.what) == ("security", "'restrict default' lacks 'limited'")
    assert f.fix == "use 'restrict default kod limited nomodify notrap nopeer noquery'"


def test_restrict_default_without_noquery_mentions_the_mru_list():
    f = _only(CLEAN.replace(" noquery", ""), "restrict-default-noquery")
    assert f.severity == "security" and "MRU list" in (f.why or "")


def test_restrict_default_without_kod_is_a_security_finding():
    assert _only(CLEAN.replace(" kod", ""), "restrict-default-kod").severity == "security"


@pytest.mark.parametrize("flag", ["nomodify", "notrap", "nopeer"])
def test_flags_pyntpd_always_applies_are_notes_for_ntpd(flag):
    f = _only(CLEAN.replace(f" {flag}", ""), f"restrict-default-{flag}")
    assert f.severity == "note" and "ntpd" in (f.why or "")


def test_only_the_ipv6_default_lacking_a_flag_names_the_minus_6_line():
    text = CLEAN.replace("restrict default kod limited nomodify notrap nopeer noquery",
                         "restrict -4 default kod limited nomodify notrap nopeer noquery\n"
                         "restrict -6 default kod nomodify notrap nopeer noquery")
    f = _only(text, "restrict-default-limited")
    assert f.what == "'restrict -6 default' lacks 'limited'"


def test_ignore_as_default_satisfies_every_flag():
    text = CLEAN.replace(GOOD_RESTRICT.splitlines()[0], "restrict default ignore")
    assert not [c for c in _codes(text) if c.startswith("restrict-default")]


def test_no_ipv6_default_is_a_basic_security_finding():
    text = CLEAN.replace("restrict default", "restrict -4 default")
    f = _only(text, "restrict-default-ipv6")
    assert (f.severity, f.basic) == ("security", True)
    assert f.what == "no 'restrict -6 default' line"


def test_plain_restrict_default_covers_ipv6_as_in_ntpd_4_2_8():
    assert "restrict-default-ipv6" not in _codes(CLEAN)


def test_network_allowed_to_query_mode_6_is_a_security_finding():
    f = _only(CLEAN + "restrict 172.16.0.0 mask 255.255.0.0 nomodify notrap\n",
              "restrict-query-open")
    assert f.what == "'restrict 172.16.0.0 mask 255.255.0.0' allows mode 6 queries"


def test_loopback_may_query_mode_6():
    assert "restrict-query-open" not in _codes(CLEAN)


def test_peer_without_key_is_a_warning_that_it_is_polled_as_a_server():
    f = _only(CLEAN + "peer 192.0.2.9\n", "peer-as-server")
    assert (f.severity, f.location.line, f.basic) == ("warning", 10, True)


KEYS = {"/etc/ntp/keys": "1 SHA1 0123456789abcdef0123456789abcdef01234567\n"}


def test_unauthenticated_server_when_trusted_keys_exist():
    text = CLEAN + "keys /etc/ntp/keys\ntrustedkey 1\n"
    found = [f for f in _audit(text, files=KEYS) if f.code == "server-without-key"]
    assert len(found) == 4
    assert found[0].fix == ("add 'key N' with a key this server shares (trusted here: 1), or "
                            "'nts' if it offers NTS")


CENTOS_POOL = "".join(f"server {i}.centos.pool.ntp.org iburst\n" for i in range(4))


def test_public_pool_servers_are_not_told_to_use_a_key():
    """A CentOS file with `trustedkey 4` (for ntpq) and the pool's servers: no key can
    authenticate them, so the advice is NTS, once, as a note."""
    text = GOOD_RESTRICT + LEAP + CENTOS_POOL + "keys /etc/ntp/keys\ntrustedkey 4\n"
    keys = {"/etc/ntp/keys": "4 MD5 secret\n"}
    findings = _audit(text, files=keys, hosts={f"{i}.centos.pool.ntp.org": [f"192.0.2.{i}"]
                                               for i in range(4)})
    assert [f.code for f in findings if f.code == "server-without-key"] == []
    (note,) = [f for f in findings if f.code == "public-server-unauthenticated"]
    assert note.severity == "note"
    assert "'0.centos.pool.ntp.org', '1.centos.pool.ntp.org'" in note.what
    assert "key" not in (note.fix or "") and "'server HOST nts'" in (note.fix or "")


def test_private_server_beside_public_ones_is_still_told_to_use_a_shared_key():
    text = (GOOD_RESTRICT + LEAP + CENTOS_POOL + "server ntp1.corp.example\n"
            "keys /etc/ntp/keys\ntrustedkey 4\n")
    keys = {"/etc/ntp/keys": "4 MD5 secret\n"}
    (f,) = [f for f in _audit(text, files=keys) if f.code == "server-without-key"]
    assert "'ntp1.corp.example'" in f.what


def test_servers_with_keys_are_not_reported():
    text = (GOOD_RESTRICT + LEAP + "keys /etc/ntp/keys\ntrustedkey 1\n"
            + FOUR.replace("iburst", "iburst key 1"))
    assert "server-without-key" not in _codes(text, files=KEYS)


def test_keys_without_trustedkey_do_not_ask_for_authentication():
    assert "server-without-key" not in _codes(CLEAN + "keys /etc/ntp/keys\n", files=KEYS)


def test_keys_file_readable_by_others_is_a_security_finding():
    text = CLEAN + "keys /etc/ntp/keys\n"
    f = _only(text, "keys-file-mode", files=KEYS, mode=0o100644)
    assert f.severity == "security" and f.fix == "chmod 600 /etc/ntp/keys"


@pytest.mark.parametrize("line", ["crypto", "server 192.0.2.5 autokey"])
def test_autokey_is_an_error_pointing_to_nts(line):
    f = _only(CLEAN + line + "\n", "autokey")
    assert f.severity == "error" and "NTS" in (f.fix or "")


def test_requestkey_is_a_mode_7_security_finding():
    f = _only(CLEAN + "requestkey 8\n", "mode7")
    assert f.severity == "security" and "never answers mode 7" in f.what


def test_enable_mode7_is_an_error():
    assert _only(CLEAN + "enable mode7\n", "mode7").severity == "error"


def test_every_source_noselect():
    text = GOOD_RESTRICT + LEAP + FOUR.replace("iburst", "noselect")
    f = _only(text, "all-noselect")
    assert (f.severity, f.basic, f.location.line) == ("security", True, 5)
    assert "no-sources" not in _codes(text)


def test_one_server_cannot_detect_a_falseticker():
    f = _only(GOOD_RESTRICT + LEAP + "server 192.0.2.1\n", "too-few-sources")
    assert f.severity == "security" and "nothing can detect a falseticker" in (f.why or "")


def test_two_servers_cannot_tell_which_is_wrong():
    f = _only(GOOD_RESTRICT + LEAP + "server 192.0.2.1\nserver 192.0.2.2\n", "too-few-sources")
    assert "nobody can tell which one is wrong" in (f.why or "")


def test_three_servers_are_a_warning_not_a_security_finding():
    text = GOOD_RESTRICT + LEAP + "".join(f"server 192.0.2.{i}\n" for i in range(1, 4))
    assert _only(text, "few-sources").severity == "warning"


def test_pool_counts_as_the_addresses_its_name_has():
    text = GOOD_RESTRICT + LEAP + "pool pool.example iburst\n"
    f = _only(text, "too-few-sources", hosts={"pool.example": ["192.0.2.1"]})
    assert f.what.startswith("the sources add up to 1 server(s)")


def test_pool_with_enough_members_is_fine():
    hosts = {"pool.example": [f"192.0.2.{i}" for i in range(1, 5)]}
    assert _audit(GOOD_RESTRICT + LEAP + "pool pool.example iburst\n", hosts=hosts) == []


def test_local_clock_as_the_only_source():
    text = GOOD_RESTRICT + LEAP + "server 127.127.1.0\nfudge 127.127.1.0 stratum 10\n"
    f = _only(text, "local-clock-only")
    assert f.severity == "security" and "stratum 10" in (f.why or "")


def test_local_clock_beside_network_sources_is_a_note():
    assert _only(CLEAN + "server 127.127.1.0\n", "local-clock-fallback").severity == "note"


def test_tinker_panic_0_is_a_security_finding():
    f = _only(CLEAN + "tinker panic 0\n", "tinker-panic-0")
    assert (f.severity, f.location.line) == ("security", 10)


def test_raised_panic_threshold_is_a_security_finding():
    assert _only(CLEAN + "tinker panic 5000\n", "tinker-panic-raised").severity == "security"


def test_tinker_step_0_is_a_note():
    assert _only(CLEAN + "tinker step 0\n", "tinker-step-0").severity == "note"


def test_huge_step_threshold_is_a_note_with_the_slew_time():
    f = _only(CLEAN + "tinker step 600\n", "tinker-step-large")
    assert "13.9 days" in (f.why or "")


def test_disable_monitor_beside_a_limited_rule_says_ntpd_keeps_monitoring_too():
    """In ntpd any `restrict ... limited` starts the MRU list again: `disable monitor`
    never turned `limited` off."""
    f = _only(CLEAN + "disable monitor\n", "disable-monitor")
    assert f.severity == "note"
    assert "ntpd keeps its MRU list on whenever a 'restrict' rule says 'limited'" in f.why
    assert "turns off" not in f.why


def test_disable_monitor_without_limited_says_the_list_stays_readable():
    text = CLEAN.replace("kod limited ", "kod ") + "disable monitor\n"
    f = _only(text, "disable-monitor")
    assert "'ntpq mrulist'" in (f.why or "") and "limited" in (f.why or "")


def test_no_leapfile_is_a_note():
    assert _only(CLEAN.replace(LEAP, ""), "no-leapfile").severity == "note"


def test_burst_is_a_note():
    assert _only(CLEAN + "server 192.0.2.8 burst\n", "burst").severity == "note"


def test_unresolvable_name_is_a_basic_warning():
    f = _only(CLEAN + "server nowhere.example\n", "unresolved")
    assert (f.severity, f.basic) == ("warning", True)


def test_basic_only_review_leaves_the_audit_out():
    result = parse("restrict default noquery\n" + FOUR)
    assert audit(result, resolve=FakeResolver(), full=False) == []


def test_findings_are_grouped_errors_first_then_in_file_order():
    findings = ordered(_audit("crypto\nrestrict default\n" + FOUR + "tinker panic 0\n"))
    severities = [f.severity for f in findings]
    assert severities == sorted(severities, key=["error", "security", "warning",
                                                 "note"].index)
    assert counts(findings)["error"] == 1


def test_finding_lines_show_what_fix_and_why():
    f = _only(CLEAN + "tinker panic 5000\n", "tinker-panic-raised")
    assert f.lines() == [
        "ntp.conf: security: 'tinker panic 5000' raises the sanity limit above 1000 s"
        " — fix: remove it (the default is 1000 s)",
        "    why: a bad source can move the clock further before pyntpd gives up",
    ]


def test_finding_as_json_dict():
    f = _only(CLEAN + "tinker panic 0\n", "tinker-panic-0")
    d = f.to_dict()
    assert (d["code"], d["severity"], d["file"], d["line"], d["col"]) == (
        "tinker-panic-0", "security", "ntp.conf", 10, 8)
