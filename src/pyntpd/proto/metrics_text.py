"""The daemon's state as Prometheus text (exposition format 0.0.4) and as a JSON document.

Pure: `Status.build` takes the mode 6 snapshot (the same collection ntpq sees, built by
daemon.control), the responder's counters and a few process facts, and the renderers turn
it into text or a dict. The daemon's HTTP shell (daemon.metrics) only does the IO.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from pyntpd.proto.auth import AuthResult
from pyntpd.proto.control import ControlDrop, ControlSnapshot, PeerInfo
from pyntpd.proto.mssntp import MssntpFailure
from pyntpd.proto.nts import NtsFailure
from pyntpd.proto.packet import DropReason
from pyntpd.proto.server import KISS_DENY, KISS_RATE, KISS_RSTR, ServerCounters
from pyntpd.proto.source import SourceDrop, Stamp
from pyntpd.proto.timestamp import ntp_to_unix

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
KISS_CODES = (KISS_RATE, KISS_DENY, KISS_RSTR)
LEAP_UNSYNCHRONISED = 3

# ntpq's names for the tally codes (its "condition" column).
TALLY_NAMES = {
    "*": "sys.peer", "+": "candidate", "-": "outlier", "x": "falsetick", ".": "excess",
    "#": "backup", "o": "pps.peer", " ": "reject",
}


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("ascii", "replace")


def refid_text(raw: bytes, stratum: int, refclock: bool) -> str:
    """As ntpq shows it: a code at stratum 0/1/16 or from a reference clock, else the
    upstream's IPv4 address (or the hash of its IPv6 address) in dotted quad."""
    if refclock or stratum <= 1 or stratum >= 16 or len(raw) != 4:
        return _text(raw)
    return ".".join(str(b) for b in raw)


@dataclass(frozen=True, slots=True)
class SourceState:
    address: str
    name: str  # the configured host name, or the address
    refid: str
    stratum: int
    reach: int
    poll: int  # log2 s
    offset: float  # s; NaN before the first sample
    delay: float
    jitter: float
    dispersion: float
    tally: str  # ntpq's tally character
    selected: bool
    refclock: bool = False  # a reference clock driver: no datagrams, no drops
    received: int = 0  # datagrams from the source
    # No sample from them, by why: every SourceDrop, zeros included.
    dropped: Mapping[str, int] = field(default_factory=dict)
    interleaved: int = 0  # samples from interleaved-mode replies
    # Samples by where their T1 came from: every Stamp, zeros included.
    transmit_stamps: Mapping[str, int] = field(default_factory=dict)

    @staticmethod
    def from_peer(peer: PeerInfo) -> SourceState:
        tally = str(peer.tally)
        return SourceState(
            address=peer.srcadr, name=peer.srchost or peer.srcadr,
            refid=refid_text(peer.refid, peer.stratum, peer.refclock),
            stratum=peer.stratum, reach=peer.reach, poll=peer.hpoll,
            offset=peer.offset, delay=peer.delay, jitter=peer.jitter,
            dispersion=peer.dispersion, tally=tally, selected=tally in ("*", "o"),
            refclock=peer.refclock, received=peer.received,
            dropped={r.value: peer.dropped.get(r.value, 0) for r in SourceDrop},
            interleaved=peer.interleaved,
            transmit_stamps={s.value: peer.transmit_stamps.get(s.value, 0) for s in Stamp})


@dataclass(frozen=True, slots=True)
class Status:
    version: str
    start_time: float  # Unix s
    now: float  # Unix s
    leap: int
    stratum: int
    refid: str
    precision: int
    root_delay: float
    root_dispersion: float
    reference_time: float | None  # Unix s of the last clock update
    offset: float
    frequency: float
    jitter: float
    sources: tuple[SourceState, ...]
    received: int
    served: int
    dropped: Mapping[str, int]  # every DropReason, zeros included
    kod_sent: Mapping[str, int]  # RATE, DENY, RSTR
    control_requests: int
    auth_failed: Mapping[str, int]  # every refusal kind of proto.auth, zeros included
    mru_entries: int
    nts_served: int = 0
    peer_packets: int = 0  # mode 1/2 packets from configured peers, handed to them
    nts_failed: Mapping[str, int] = field(default_factory=dict)  # every NtsFailure
    control_dropped: Mapping[str, int] = field(default_factory=dict)  # every ControlDrop
    mssntp_signed: int = 0  # MS-SNTP replies signed by Samba's ntp_signd and sent
    mssntp_failed: Mapping[str, int] = field(default_factory=dict)  # every MssntpFailure
    http: Mapping[str, int] = field(default_factory=dict)  # metrics endpoint outcomes
    # Interleaved mode: replies in it, those with only a user-space transmit timestamp,
    # requests for it answered in basic mode, and replies kept for the next request.
    interleaved: Mapping[str, int] = field(default_factory=dict)

    @property
    def synchronised(self) -> bool:
        return self.leap != LEAP_UNSYNCHRONISED and self.stratum < 16

    @staticmethod
    def build(snapshot: ControlSnapshot, counters: ServerCounters, *, version: str,
              start_time: float, now: float, control_requests: int = 0,
              mru_entries: int = 0, http: Mapping[str, int] | None = None,
              control_dropped: Mapping[ControlDrop, int] | None = None,
              interleaved_kept: int = 0) -> Status:
        reftime = ntp_to_unix(snapshot.reftime, now) if snapshot.reftime else None
        dropped = {reason.value: counters.dropped.get(reason, 0) for reason in DropReason}
        kod = {_text(code): counters.kod_sent.get(code, 0) for code in KISS_CODES}
        auth = {r.value: counters.auth_failed.get(r, 0) for r in AuthResult
                if r not in (AuthResult.OK, AuthResult.NO_MAC)}
        return Status(
            version=version, start_time=start_time, now=now, leap=snapshot.leap,
            stratum=snapshot.stratum,
            refid=refid_text(snapshot.refid, snapshot.stratum, snapshot.refclock),
            precision=snapshot.precision, root_delay=snapshot.rootdelay,
            root_dispersion=snapshot.rootdisp, reference_time=reftime,
            offset=snapshot.offset, frequency=snapshot.frequency,
            jitter=snapshot.sys_jitter,
            sources=tuple(SourceState.from_peer(p) for p in snapshot.peers),
            received=counters.received, served=counters.served, dropped=dropped,
            kod_sent=kod, control_requests=control_requests, mru_entries=mru_entries,
            auth_failed=auth, nts_served=counters.nts_served,
            peer_packets=counters.peer_packets,
            nts_failed={f.value: counters.nts_failed.get(f, 0) for f in NtsFailure},
            control_dropped={r.value: (control_dropped or {}).get(r, 0) for r in ControlDrop},
            mssntp_signed=counters.mssntp_signed,
            mssntp_failed={f.value: counters.mssntp_failed.get(f, 0) for f in MssntpFailure},
            http=dict(http or {}),
            interleaved={"served": counters.interleaved,
                         "daemon_stamp": counters.interleaved_daemon_stamp,
                         "missed": counters.interleaved_missed, "kept": interleaved_kept})


# --- Prometheus text ---------------------------------------------------------------------

def escape_label(value: str) -> str:
    """Exposition format: backslash, double quote and line feed are escaped in labels."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


Sample = tuple[Mapping[str, str], float]


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        self.lines.append(f"# HELP {name} {escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            if labels:
                text = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
                self.lines.append(f"{name}{{{text}}} {format_value(value)}")
            else:
                self.lines.append(f"{name} {format_value(value)}")

    def gauge(self, name: str, help_text: str, value: float) -> None:
        self.family(name, "gauge", help_text, [({}, value)])

    def counter(self, name: str, help_text: str, value: float) -> None:
        self.family(name, "counter", help_text, [({}, value)])


def exposition(status: Status) -> str:
    w = _Writer()
    w.family("ntp_build_info", "gauge", "pyntpd version; always 1",
             [({"version": status.version}, 1)])
    w.gauge("process_start_time_seconds", "Start time of the process since the Unix epoch",
            status.start_time)
    # System.
    w.gauge("ntp_system_synchronised", "1 when this server is synchronised (leap != 3, "
            "stratum < 16)", status.synchronised)
    w.gauge("ntp_system_leap", "Leap indicator served (0 none, 1 insert, 2 delete, "
            "3 unsynchronised)", status.leap)
    w.gauge("ntp_system_stratum", "Stratum served (16: unsynchronised)", status.stratum)
    w.family("ntp_system_refid_info", "gauge", "Reference id served; always 1",
             [({"refid": status.refid}, 1)])
    w.gauge("ntp_system_precision_seconds", "Precision of the system clock",
            2.0 ** status.precision)
    w.gauge("ntp_system_root_delay_seconds", "Root delay served", status.root_delay)
    w.gauge("ntp_system_root_dispersion_seconds", "Root dispersion served",
            status.root_dispersion)
    if status.reference_time is not None:
        w.gauge("ntp_system_reference_timestamp_seconds",
                "Last clock update (reference timestamp) since the Unix epoch",
                status.reference_time)
    w.gauge("ntp_system_offset_seconds", "Estimated offset of the local clock (true minus "
            "local) at the last update", status.offset)
    w.gauge("ntp_system_frequency_ppm", "Frequency correction of the local clock",
            status.frequency)
    w.gauge("ntp_system_jitter_seconds", "System jitter: the combined estimate's standard "
            "deviation", status.jitter)
    # Sources.
    sources = status.sources

    def per_source(values: Iterable[tuple[SourceState, float]]) -> list[Sample]:
        return [({"address": s.address, "name": s.name}, v) for s, v in values]

    w.family("ntp_source_reach", "gauge", "Reach register of the source (8 bits, newest "
             "poll in the lowest)", per_source((s, s.reach) for s in sources))
    w.family("ntp_source_stratum", "gauge", "Stratum of the source",
             per_source((s, s.stratum) for s in sources))
    w.family("ntp_source_poll_seconds", "gauge", "Poll interval of the source",
             per_source((s, 2.0 ** s.poll) for s in sources))
    w.family("ntp_source_offset_seconds", "gauge", "Offset of the source (source minus "
             "local); NaN before the first sample", per_source((s, s.offset) for s in sources))
    w.family("ntp_source_delay_seconds", "gauge", "Round-trip delay to the source",
             per_source((s, s.delay) for s in sources))
    w.family("ntp_source_jitter_seconds", "gauge", "Jitter of the source",
             per_source((s, s.jitter) for s in sources))
    w.family("ntp_source_dispersion_seconds", "gauge", "Dispersion of the source",
             per_source((s, s.dispersion) for s in sources))
    associations = [s for s in sources if not s.refclock]
    w.family("ntp_source_received_total", "counter",
             "Datagrams received from the source (each a sample or a drop)",
             per_source((s, s.received) for s in associations))
    w.family("ntp_source_dropped_total", "counter",
             "Datagrams from the source that gave no sample, by reason",
             [({"address": s.address, "name": s.name, "reason": r}, n)
              for s in associations for r, n in s.dropped.items()])
    w.family("ntp_source_interleaved_samples_total", "counter",
             "Samples from interleaved-mode replies (xleave)",
             per_source((s, s.interleaved) for s in associations))
    w.family("ntp_source_transmit_stamps_total", "counter",
             "Samples by where their T1 came from: the kernel (SO_TIMESTAMPING), or the "
             "clock read before send() when the kernel gave none",
             [({"address": s.address, "name": s.name, "stamp": k}, n)
              for s in associations for k, n in s.transmit_stamps.items()])
    w.family("ntp_source_selected", "gauge",
             "1 for the system peer; the tally label is ntpq's condition of the source",
             [({"address": s.address, "name": s.name,
                "tally": TALLY_NAMES.get(s.tally, s.tally)}, s.selected) for s in sources])
    # Serving.
    w.counter("ntp_server_packets_received_total", "Datagrams received on the NTP port(s)",
              status.received)
    w.counter("ntp_server_packets_served_total", "Time requests answered", status.served)
    w.family("ntp_server_packets_dropped_total", "counter",
             "Datagrams dropped without a time reply, by reason",
             [({"reason": r}, n) for r, n in status.dropped.items()])
    w.counter("ntp_server_rate_limited_total", "Requests over the rate limit ('limited'); "
              "the same as ntp_server_packets_dropped_total{reason=\"rate_limited\"}",
              status.dropped.get(DropReason.RATE_LIMITED.value, 0))
    w.family("ntp_server_kod_sent_total", "counter", "Kiss-o'-death replies sent, by code",
             [({"code": c}, n) for c, n in status.kod_sent.items()])
    w.family("ntp_server_nts_served_total", "counter", "NTS requests answered",
             [({}, status.nts_served)])
    w.family("ntp_server_peer_packets_total", "counter",
             "Symmetric-mode packets from configured peers, handed to their associations",
             [({}, status.peer_packets)])
    w.family("ntp_server_nts_failed_total", "counter",
             "NTS requests not answered (or answered with an NTS NAK), by why",
             [({"kind": k}, n) for k, n in status.nts_failed.items()])
    w.family("ntp_server_mssntp_signed_total", "counter",
             "MS-SNTP replies signed by Samba's ntp_signd and sent",
             [({}, status.mssntp_signed)])
    w.family("ntp_server_mssntp_failed_total", "counter",
             "MS-SNTP requests left unanswered, by why",
             [({"kind": k}, n) for k, n in status.mssntp_failed.items()])
    w.family("ntp_server_auth_failed_total", "counter",
             "Signed requests left unanswered because the MAC did not verify, by why",
             [({"kind": k}, n) for k, n in status.auth_failed.items()])
    w.counter("ntp_server_control_requests_total", "Mode 6 (ntpq) requests answered",
              status.control_requests)
    w.family("ntp_server_control_dropped_total", "counter",
             "Mode 6 requests left unanswered, by reason",
             [({"reason": r}, n) for r, n in status.control_dropped.items()])
    w.gauge("ntp_server_mru_entries", "Sources in the MRU list (rate limiting, mrulist)",
            status.mru_entries)
    w.family("ntp_server_interleaved_total", "counter",
             "Interleaved mode: replies in it (served), those of them with only a user-space "
             "transmit timestamp (daemon_stamp), requests for it answered in basic mode "
             "(missed)",
             [({"kind": k}, n) for k, n in status.interleaved.items() if k != "kept"])
    w.gauge("ntp_server_interleaved_kept", "Replies kept for the next interleaved request",
            status.interleaved.get("kept", 0))
    if status.http:
        w.family("ntp_metrics_http_requests_total", "counter",
                 "Requests to this metrics endpoint, by outcome",
                 [({"outcome": k}, n) for k, n in sorted(status.http.items())])
    return "\n".join(w.lines) + "\n"


# --- JSON --------------------------------------------------------------------------------

def _num(value: float) -> float | None:
    """JSON has no NaN: an unknown value is null."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def status_document(status: Status) -> dict[str, object]:
    return {
        "version": status.version,
        "time": status.now,
        "start_time": status.start_time,
        "system": {
            "synchronised": status.synchronised, "leap": status.leap,
            "stratum": status.stratum, "refid": status.refid,
            "precision": status.precision, "root_delay": status.root_delay,
            "root_dispersion": status.root_dispersion,
            "reference_time": status.reference_time, "offset": _num(status.offset),
            "frequency": _num(status.frequency), "jitter": _num(status.jitter),
        },
        "sources": [
            {"address": s.address, "name": s.name, "refid": s.refid, "stratum": s.stratum,
             "reach": s.reach, "poll": s.poll, "offset": _num(s.offset),
             "delay": _num(s.delay), "jitter": _num(s.jitter),
             "dispersion": _num(s.dispersion), "tally": s.tally,
             "condition": TALLY_NAMES.get(s.tally, s.tally), "selected": s.selected,
             **({} if s.refclock else {
                 "received": s.received, "dropped": dict(s.dropped),
                 "interleaved": s.interleaved,
                 "transmit_stamps": dict(s.transmit_stamps)})}
            for s in status.sources
        ],
        "server": {
            "received": status.received, "served": status.served,
            "dropped": dict(status.dropped), "kod_sent": dict(status.kod_sent),
            "auth_failed": dict(status.auth_failed),
            "nts_served": status.nts_served, "nts_failed": dict(status.nts_failed),
            "peer_packets": status.peer_packets,
            "mssntp_signed": status.mssntp_signed,
            "mssntp_failed": dict(status.mssntp_failed),
            "control_requests": status.control_requests,
            "control_dropped": dict(status.control_dropped),
            "mru_entries": status.mru_entries,
            "interleaved": dict(status.interleaved),
        },
        "metrics_http": dict(sorted(status.http.items())),
    }
