"""proto.metrics_text: the daemon's state as Prometheus text (format 0.0.4, OpenMetrics)
and as JSON. The text is read back with prometheus_client's own parser, so the tests say
which series carry which value, not how the library spells a float."""

from __future__ import annotations

import json
import math

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import CollectorRegistry

from pyntpd.proto.auth import AuthResult
from pyntpd.proto.control import ControlDrop, ControlSnapshot, PeerInfo
from pyntpd.proto.metrics_text import (
    Status,
    StatusCollector,
    exposition,
    openmetrics_exposition,
    status_document,
    wants_openmetrics,
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


Series = tuple[str, frozenset[tuple[str, str]]]


def _series(status: Status | None = None) -> dict[Series, float]:
    """Every sample of the text as (name, labels) -> value; a repeated series fails."""
    found: dict[Series, float] = {}
    for family in text_string_to_metric_families(exposition(status or _status())):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"duplicate series {key}"
            found[key] = sample.value
    return found


def _value(metric: str, status: Status | None = None, /, **labels: str) -> float:
    return _series(status)[(metric, frozenset(labels.items()))]


ONE = {"address": "192.0.2.1", "port": "123", "name": 'ntp."one"\\\n'}
TWO = {"address": "2001:db8::2", "port": "123", "name": "2001:db8::2"}


def test_every_family_has_help_and_type_before_its_samples():
    lines = _lines()
    names = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    for name in names:
        i = lines.index(next(x for x in lines if x.startswith(f"# HELP {name} ")))
        assert lines[i + 1].startswith(f"# TYPE {name} ")
        assert lines[i + 2].startswith(name)
    assert len(names) == len(set(names))


def test_system_values():
    for name, value in [
        ("ntp_system_synchronised", 1), ("ntp_system_leap", 0), ("ntp_system_stratum", 3),
        ("ntp_system_offset_seconds", -0.0015), ("ntp_system_frequency_ppm", 12.5),
        ("ntp_system_jitter_seconds", 0.0002), ("ntp_system_root_delay_seconds", 0.012),
        ("ntp_system_root_dispersion_seconds", 0.034),
        ("ntp_system_precision_seconds", 2.0 ** -20),
        ("process_start_time_seconds", NOW - 100),
    ]:
        assert _value(name) == value, name
    assert _value("ntp_system_refid_info", refid="192.0.2.1") == 1
    assert _value("ntp_build_info", version="pyntpd 9") == 1


def test_reference_timestamp_is_unix_seconds():
    assert abs(_value("ntp_system_reference_timestamp_seconds") - (NOW - 30)) < 1e-6


def test_source_series_carry_address_port_and_name_labels_escaped():
    assert 'name="ntp.\\"one\\"\\\\\\n"' in exposition(_status())
    assert _value("ntp_source_reach", **ONE) == 255
    assert _value("ntp_source_offset_seconds", **ONE) == -0.0015
    assert _value("ntp_source_delay_seconds", **ONE) == 0.025
    assert _value("ntp_source_poll_seconds", **ONE) == 64
    assert _value("ntp_source_selected", **ONE, tally="sys.peer") == 1


def test_servers_on_one_address_with_different_ports_are_distinct_series():
    peers = tuple(PeerInfo(associd=10 + i, srcadr="127.0.0.1", srcport=port, reach=i)
                  for i, port in enumerate((12301, 12302, 12303, 12304)))
    status = Status.build(ControlSnapshot(peers=peers), ServerCounters(), version="v",
                          start_time=0.0, now=NOW)
    series = _series(status)  # fails on a repeated series
    for i, port in enumerate((12301, 12302, 12303, 12304)):
        labels = {"address": "127.0.0.1", "port": str(port), "name": "127.0.0.1"}
        assert _value("ntp_source_reach", status, **labels) == i
    assert sum(name == "ntp_source_reach" for name, _ in series) == 4
    assert [s["port"] for s in status_document(status)["sources"]] == [  # type: ignore[index]
        12301, 12302, 12303, 12304]


def test_metric_names_are_unique_as_a_registry_checks_them():
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatusCollector(_status(http={"ok": 1})))  # raises on a duplicate


def test_openmetrics_carries_the_same_values_and_ends_with_eof():
    text = openmetrics_exposition(_status())
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in openmetrics_families(text)}
    assert families["ntp_server_packets_served"].type == "counter"
    assert families["ntp_server_packets_served"].samples[0].value == 6
    assert families["ntp_system_stratum"].samples[0].value == 3


@pytest.mark.parametrize(("accept", "wanted"), [
    ("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5", True),
    ("text/plain;version=0.0.4", False),
    ("", False),
    ("*/*", False),
])
def test_openmetrics_only_when_the_scraper_asks_for_it(accept, wanted):
    assert wants_openmetrics(accept) is wanted


def test_source_without_sample_has_nan_offset_and_is_not_selected():
    assert math.isnan(_value("ntp_source_offset_seconds", **TWO))
    assert _value("ntp_source_selected", **TWO, tally="reject") == 0


def test_every_drop_reason_is_exported_even_at_zero():
    for reason in DropReason:
        expected = {"rate_limited": 2, "too_short": 1}.get(reason.value, 0)
        assert _value("ntp_server_packets_dropped_total", reason=reason.value) == expected


def test_each_associations_datagrams_and_drops_are_exported_by_reason_even_at_zero():
    assert _value("ntp_source_received_total", **ONE) == 9
    assert _value("ntp_source_dropped_total", **ONE, reason="bogus_origin") == 2
    assert _value("ntp_source_dropped_total", **ONE, reason="authentication") == 1
    assert _value("ntp_source_dropped_total", **ONE, reason="duplicate") == 0
    assert sum(name == "ntp_source_dropped_total" for name, _ in _series()) == 2 * len(SourceDrop)


def test_a_reference_clock_has_no_datagram_counters():
    local = PeerInfo(associd=1, srcadr="127.127.1.0", srchost="LOCAL(0)", refclock=True)
    status = Status.build(ControlSnapshot(peers=(local,)), ServerCounters(), version="v",
                          start_time=0.0, now=NOW)
    assert not any(x.startswith(("ntp_source_received", "ntp_source_dropped"))
                   for x in exposition(status).splitlines())
    document = status_document(status)["sources"][0]  # type: ignore[index]
    assert "received" not in document and document["readings"] == 0  # type: ignore[index]


def test_a_reference_clock_has_its_readings_and_drops_by_reason():
    gps = PeerInfo(associd=1, srcadr="127.127.20.0", srcport=0, srchost="NMEA(0)",
                   refclock=True, received=57, dropped={"bad_checksum": 2, "no_fix": 0})
    status = Status.build(ControlSnapshot(peers=(gps,)), ServerCounters(), version="v",
                          start_time=0.0, now=NOW)
    labels = {"address": "127.127.20.0", "port": "0", "name": "NMEA(0)"}
    assert _value("ntp_refclock_readings_total", status, **labels) == 57
    assert _value("ntp_refclock_dropped_total", status, **labels, reason="bad_checksum") == 2
    assert _value("ntp_refclock_dropped_total", status, **labels, reason="no_fix") == 0
    document = status_document(status)["sources"][0]  # type: ignore[index]
    assert document["dropped"] == {"bad_checksum": 2, "no_fix": 0}  # type: ignore[index]


def test_mode_6_drops_are_exported_by_reason_even_at_zero():
    status = _status(control_dropped={ControlDrop.BAD_NONCE: 3})
    assert _value("ntp_server_control_dropped_total", status, reason="control_bad_nonce") == 3
    assert _value("ntp_server_control_dropped_total", status, reason="control_too_short") == 0
    assert status_document(status)["server"]["control_dropped"] == {  # type: ignore[index]
        r.value: 3 if r is ControlDrop.BAD_NONCE else 0 for r in ControlDrop}


def test_serving_counters():
    for name, value in [
        ("ntp_server_packets_received_total", 10), ("ntp_server_packets_served_total", 6),
        ("ntp_server_rate_limited_total", 2), ("ntp_server_control_requests_total", 4),
        ("ntp_server_mru_entries", 7),
    ]:
        assert _value(name) == value, name
    for code, value in (("RATE", 1), ("DENY", 0), ("RSTR", 0)):
        assert _value("ntp_server_kod_sent_total", code=code) == value
    assert "# TYPE ntp_server_packets_dropped_total counter" in _lines()


def test_authentication_failures_are_exported_by_kind_even_at_zero():
    counters = ServerCounters()
    counters.refuse_auth(AuthResult.BAD_MAC)
    status = Status.build(ControlSnapshot(), counters, version="v", start_time=0.0, now=NOW)
    assert _value("ntp_server_auth_failed_total", status, kind="bad_mac") == 1
    assert _value("ntp_server_auth_failed_total", status, kind="unknown_key") == 0
    assert _value("ntp_server_packets_dropped_total", status, reason="bad_auth") == 1


def test_nts_counters_are_exported_by_kind_even_at_zero():
    counters = ServerCounters(nts_served=5, peer_packets=3)
    counters.nts_failed[NtsFailure.BAD_COOKIE] = 2
    status = Status.build(ControlSnapshot(), counters, version="v", start_time=0.0, now=NOW)
    assert _value("ntp_server_nts_served_total", status) == 5
    assert _value("ntp_server_peer_packets_total", status) == 3
    assert _value("ntp_server_nts_failed_total", status, kind="nts_bad_cookie") == 2
    assert _value("ntp_server_nts_failed_total", status, kind="nts_malformed") == 0
    assert status_document(status)["server"]["nts_failed"]["nts_bad_cookie"] == 2  # type: ignore[index]


def test_mssntp_counters_are_exported_by_kind_even_at_zero():
    counters = ServerCounters(mssntp_signed=4)
    counters.refuse_mssntp(MssntpFailure.UNAVAILABLE)
    status = Status.build(ControlSnapshot(), counters, version="v", start_time=0.0, now=NOW)
    assert _value("ntp_server_mssntp_signed_total", status) == 4
    assert _value("ntp_server_mssntp_failed_total", status, kind="signd_unavailable") == 1
    assert _value("ntp_server_mssntp_failed_total", status, kind="signd_timeout") == 0
    assert _value("ntp_server_packets_dropped_total", status, reason="mssntp") == 1
    assert status_document(status)["server"]["mssntp_signed"] == 4  # type: ignore[index]


def test_http_outcomes_only_when_counted():
    assert not any(x.startswith("ntp_metrics_http") for x in _lines())
    status = _status(http={"ok": 3, "bad_request": 1})
    assert _value("ntp_metrics_http_requests_total", status, outcome="bad_request") == 1
    assert _value("ntp_metrics_http_requests_total", status, outcome="ok") == 3


def test_unsynchronised_state():
    status = Status.build(ControlSnapshot(), ServerCounters(), version="v", start_time=0.0,
                          now=NOW)
    assert _value("ntp_system_synchronised", status) == 0
    assert _value("ntp_system_stratum", status) == 16
    names = {name for name, _ in _series(status)}
    assert "ntp_system_reference_timestamp_seconds" not in names
    assert "ntp_source_reach" not in names


def test_label_values_survive_escaping():
    name = 'a\\b"c\nd'
    status = Status.build(
        ControlSnapshot(peers=(PeerInfo(associd=1, srcadr="192.0.2.9", srchost=name),)),
        ServerCounters(), version="v", start_time=0.0, now=NOW)
    assert _value("ntp_source_reach", status, address="192.0.2.9", port="123", name=name) == 0


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
