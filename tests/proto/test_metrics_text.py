"""proto.metrics_text: the daemon's state as Prometheus text (format 0.0.4) and as JSON."""

from __future__ import annotations

import json
import math

from pyntpd.proto.auth import AuthResult
from pyntpd.proto.control import ControlDrop, ControlSnapshot, PeerInfo
from pyntpd.proto.metrics_text import (
    Status,
    escape_label,
    exposition,
    format_value,
    status_document,
)
from pyntpd.proto.mssntp import MssntpFailure
from pyntpd.proto.nts import NtsFailure
from pyntpd.proto.packet import DropReason
from pyntpd.proto.server import ServerCounters
from pyntpd.proto.source import SourceDrop
from pyntpd.proto.timestamp import unix_to_ntp

NOW = 1_700_000_000.0


def _status(**kw: object) -> Status:
    counters = ServerCounters(received=10, served=6)
    for reason in (DropReason.RATE_LIMITED, DropReason.RATE_LIMITED, DropReason.TOO_SHORT):
        counters.drop(reason)
    counters.kiss(b"RATE")
    snapshot = ControlSnapshot(
        leap=0, stratum=3, precision=-20, rootdelay=0.012, rootdisp=0.034, refid=b"\xc0\0\x02\x01",
        reftime=unix_to_ntp(NOW - 30), offset=-0.0015, frequency=12.5, sys_jitter=0.0002,
        peers=(
            PeerInfo(associd=2, srcadr="192.0.2.1", stratum=1, reach=0o377, hpoll=6,
                     offset=-0.0015, delay=0.025, jitter=0.0003, dispersion=0.001,
                     tally="*", refid=b"GPS\0", srchost='ntp."one"\\\n', received=9,
                     dropped={"bogus_origin": 2, "authentication": 1}),
            PeerInfo(associd=3, srcadr="2001:db8::2", stratum=16, reach=0, hpoll=10,
                     offset=math.nan, tally=" "),
        ),
    )
    return Status.build(snapshot, counters, version="pyntpd 9", start_time=NOW - 100, now=NOW,
                        control_requests=4, mru_entries=7, **kw)  # type: ignore[arg-type]


def _lines(status: Status | None = None) -> list[str]:
    return exposition(status or _status()).splitlines()


def test_every_family_has_help_and_type_before_its_samples():
    lines = _lines()
    names = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    for name in names:
        i = lines.index(next(x for x in lines if x.startswith(f"# HELP {name} ")))
        assert lines[i + 1].startswith(f"# TYPE {name} ")
        assert lines[i + 2].startswith(name)
    assert len(names) == len(set(names))


def test_system_lines():
    lines = _lines()
    for expected in [
        "ntp_system_synchronised 1",
        "ntp_system_leap 0",
        "ntp_system_stratum 3",
        'ntp_system_refid_info{refid="192.0.2.1"} 1',
        "ntp_system_offset_seconds -0.0015",
        "ntp_system_frequency_ppm 12.5",
        "ntp_system_jitter_seconds 0.0002",
        "ntp_system_root_delay_seconds 0.012",
        "ntp_system_root_dispersion_seconds 0.034",
        "ntp_system_precision_seconds 9.5367431640625e-07",
        "process_start_time_seconds 1699999900.0",
        'ntp_build_info{version="pyntpd 9"} 1',
    ]:
        assert expected in lines


def test_reference_timestamp_is_unix_seconds():
    line = next(x for x in _lines() if x.startswith("ntp_system_reference_timestamp_seconds "))
    assert abs(float(line.split()[1]) - (NOW - 30)) < 1e-6


def test_source_lines_carry_address_and_name_labels_escaped():
    lines = _lines()
    labels = 'address="192.0.2.1",name="ntp.\\"one\\"\\\\\\n"'
    assert f"ntp_source_reach{{{labels}}} 255" in lines
    assert f"ntp_source_offset_seconds{{{labels}}} -0.0015" in lines
    assert f"ntp_source_delay_seconds{{{labels}}} 0.025" in lines
    assert f"ntp_source_poll_seconds{{{labels}}} 64.0" in lines
    assert f'ntp_source_selected{{{labels},tally="sys.peer"}} 1' in lines


def test_source_without_sample_has_nan_offset_and_is_not_selected():
    lines = _lines()
    labels = 'address="2001:db8::2",name="2001:db8::2"'
    assert f"ntp_source_offset_seconds{{{labels}}} NaN" in lines
    assert f'ntp_source_selected{{{labels},tally="reject"}} 0' in lines


def test_every_drop_reason_is_exported_even_at_zero():
    lines = _lines()
    for reason in DropReason:
        assert any(x.startswith(f'ntp_server_packets_dropped_total{{reason="{reason.value}"}} ')
                   for x in lines), reason
    assert 'ntp_server_packets_dropped_total{reason="rate_limited"} 2' in lines
    assert 'ntp_server_packets_dropped_total{reason="too_short"} 1' in lines
    assert 'ntp_server_packets_dropped_total{reason="mode7"} 0' in lines


def test_each_associations_datagrams_and_drops_are_exported_by_reason_even_at_zero():
    lines = _lines()
    labels = 'address="192.0.2.1",name="ntp.\\"one\\"\\\\\\n"'
    assert f"ntp_source_received_total{{{labels}}} 9" in lines
    assert f'ntp_source_dropped_total{{{labels},reason="bogus_origin"}} 2' in lines
    assert f'ntp_source_dropped_total{{{labels},reason="authentication"}} 1' in lines
    assert f'ntp_source_dropped_total{{{labels},reason="duplicate"}} 0' in lines
    assert sum(x.startswith("ntp_source_dropped_total{") for x in lines) == 2 * len(SourceDrop)


def test_a_reference_clock_has_no_datagram_counters():
    local = PeerInfo(associd=1, srcadr="127.127.1.0", srchost="LOCAL(0)", refclock=True)
    status = Status.build(ControlSnapshot(peers=(local,)), ServerCounters(), version="v",
                          start_time=0.0, now=NOW)
    assert not any(x.startswith(("ntp_source_received", "ntp_source_dropped"))
                   for x in exposition(status).splitlines())
    document = status_document(status)["sources"][0]  # type: ignore[index]
    assert "received" not in document and document["readings"] == 0  # type: ignore[index]


def test_a_reference_clock_has_its_readings_and_drops_by_reason():
    gps = PeerInfo(associd=1, srcadr="127.127.20.0", srchost="NMEA(0)", refclock=True,
                   received=57, dropped={"bad_checksum": 2, "no_fix": 0})
    status = Status.build(ControlSnapshot(peers=(gps,)), ServerCounters(), version="v",
                          start_time=0.0, now=NOW)
    lines = exposition(status).splitlines()
    assert 'ntp_refclock_readings_total{address="127.127.20.0",name="NMEA(0)"} 57' in lines
    assert ('ntp_refclock_dropped_total{address="127.127.20.0",name="NMEA(0)",'
            'reason="bad_checksum"} 2') in lines
    assert ('ntp_refclock_dropped_total{address="127.127.20.0",name="NMEA(0)",'
            'reason="no_fix"} 0') in lines
    document = status_document(status)["sources"][0]  # type: ignore[index]
    assert document["dropped"] == {"bad_checksum": 2, "no_fix": 0}  # type: ignore[index]


def test_mode_6_drops_are_exported_by_reason_even_at_zero():
    status = _status(control_dropped={ControlDrop.BAD_NONCE: 3})
    lines = _lines(status)
    assert 'ntp_server_control_dropped_total{reason="control_bad_nonce"} 3' in lines
    assert 'ntp_server_control_dropped_total{reason="control_too_short"} 0' in lines
    assert status_document(status)["server"]["control_dropped"] == {  # type: ignore[index]
        r.value: 3 if r is ControlDrop.BAD_NONCE else 0 for r in ControlDrop}


def test_serving_counters():
    lines = _lines()
    for expected in [
        "ntp_server_packets_received_total 10",
        "ntp_server_packets_served_total 6",
        "ntp_server_rate_limited_total 2",
        'ntp_server_kod_sent_total{code="RATE"} 1',
        'ntp_server_kod_sent_total{code="DENY"} 0',
        'ntp_server_kod_sent_total{code="RSTR"} 0',
        "ntp_server_control_requests_total 4",
        "ntp_server_mru_entries 7",
    ]:
        assert expected in lines
    assert "# TYPE ntp_server_packets_dropped_total counter" in lines


def test_authentication_failures_are_exported_by_kind_even_at_zero():
    counters = ServerCounters()
    counters.refuse_auth(AuthResult.BAD_MAC)
    status = Status.build(ControlSnapshot(), counters, version="v", start_time=0.0, now=NOW)
    lines = exposition(status).splitlines()
    assert 'ntp_server_auth_failed_total{kind="bad_mac"} 1' in lines
    assert 'ntp_server_auth_failed_total{kind="unknown_key"} 0' in lines
    assert 'ntp_server_packets_dropped_total{reason="bad_auth"} 1' in lines


def test_nts_counters_are_exported_by_kind_even_at_zero():
    counters = ServerCounters(nts_served=5, peer_packets=3)
    counters.nts_failed[NtsFailure.BAD_COOKIE] = 2
    status = Status.build(ControlSnapshot(), counters, version="v", start_time=0.0, now=NOW)
    lines = exposition(status).splitlines()
    assert "ntp_server_nts_served_total 5" in lines
    assert "ntp_server_peer_packets_total 3" in lines
    assert 'ntp_server_nts_failed_total{kind="nts_bad_cookie"} 2' in lines
    assert 'ntp_server_nts_failed_total{kind="nts_malformed"} 0' in lines
    assert status_document(status)["server"]["nts_failed"]["nts_bad_cookie"] == 2  # type: ignore[index]


def test_mssntp_counters_are_exported_by_kind_even_at_zero():
    counters = ServerCounters(mssntp_signed=4)
    counters.refuse_mssntp(MssntpFailure.UNAVAILABLE)
    status = Status.build(ControlSnapshot(), counters, version="v", start_time=0.0, now=NOW)
    lines = exposition(status).splitlines()
    assert "ntp_server_mssntp_signed_total 4" in lines
    assert 'ntp_server_mssntp_failed_total{kind="signd_unavailable"} 1' in lines
    assert 'ntp_server_mssntp_failed_total{kind="signd_timeout"} 0' in lines
    assert 'ntp_server_packets_dropped_total{reason="mssntp"} 1' in lines
    assert status_document(status)["server"]["mssntp_signed"] == 4  # type: ignore[index]


def test_http_outcomes_only_when_counted():
    assert not any(x.startswith("ntp_metrics_http") for x in _lines())
    lines = _lines(_status(http={"ok": 3, "bad_request": 1}))
    assert 'ntp_metrics_http_requests_total{outcome="bad_request"} 1' in lines
    assert 'ntp_metrics_http_requests_total{outcome="ok"} 3' in lines


def test_unsynchronised_state():
    status = Status.build(ControlSnapshot(), ServerCounters(), version="v", start_time=0.0,
                          now=NOW)
    lines = _lines(status)
    assert "ntp_system_synchronised 0" in lines and "ntp_system_stratum 16" in lines
    assert not any(x.startswith("ntp_system_reference_timestamp") for x in lines)
    assert not any(x.startswith("ntp_source_reach{") for x in lines)


def test_label_escaping_rules():
    assert escape_label('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_value_formatting():
    assert [format_value(v) for v in (True, 3, 0.5, math.nan, math.inf, -math.inf)] == [
        "1", "3", "0.5", "NaN", "+Inf", "-Inf"]


def test_text_ends_with_a_newline():
    assert exposition(_status()).endswith("\n")


def test_json_document_has_system_sources_and_counters():
    doc = status_document(_status())
    json.dumps(doc, allow_nan=False)  # valid JSON: NaN became null
    assert doc["system"]["stratum"] == 3 and doc["system"]["offset"] == -0.0015
    assert doc["system"]["synchronised"] is True
    assert [s["address"] for s in doc["sources"]] == ["192.0.2.1", "2001:db8::2"]
    assert doc["sources"][0]["condition"] == "sys.peer" and doc["sources"][0]["selected"]
    assert doc["sources"][1]["offset"] is None
    assert doc["sources"][0]["received"] == 9
    assert doc["sources"][0]["dropped"] == {
        r.value: {"bogus_origin": 2, "authentication": 1}.get(r.value, 0) for r in SourceDrop}
    assert doc["server"]["dropped"]["rate_limited"] == 2
    assert set(doc["server"]["dropped"]) == {r.value for r in DropReason}
    assert doc["server"]["kod_sent"] == {"RATE": 1, "DENY": 0, "RSTR": 0}


def test_refid_of_a_reference_clock_or_stratum_1_is_its_code():
    doc = status_document(_status())
    assert doc["system"]["refid"] == "192.0.2.1"
    assert doc["sources"][0]["refid"] == "GPS"
