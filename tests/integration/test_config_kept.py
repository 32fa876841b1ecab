"""A real daemon keeps what its ntp.conf asks for, and fails closed when it cannot."""

from __future__ import annotations

import re
import subprocess
import sys

from pyntpd.proto.packet import decode
from tests.support import Pyntpd, client_request, config_file, exchange, free_udp_port

LOCAL = "server 127.127.1.0 burst iburst prefer\nfudge 127.127.1.0 stratum 10\n"
SAMBA = "restrict -4 default kod limited nomodify notrap nopeer noquery mssntp\n"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyntpd.cli.pyntpd", "--observe", *args],
                          capture_output=True, text=True, timeout=30.0)


def test_samba_default_line_applies_rate_limiting_and_kod_on_the_wire():
    """Samba's `restrict -4 default ... mssntp` line: before, `mssntp` dropped the line and
    the server ran with no default restriction; now every flag applies."""
    with config_file(LOCAL + SAMBA) as conf, Pyntpd("-4", "-c", conf) as d:
        replies = [exchange(d.port, client_request(), timeout=0.5) for _ in range(5)]
        output = d.output()
    decoded = [decode(r) for r in replies if r is not None]
    assert decoded[0].header.stratum == 11  # the local clock line with its options is kept
    assert [p.header.refid for p in decoded[1:]] == [b"RATE"]
    assert "error" not in output


def test_restrict_line_it_cannot_honour_stops_the_start_with_the_reason():
    with config_file(LOCAL + "restrict default kod limited nomodify noqeury\n") as conf:
        result = run_cli("-n", "--port", str(free_udp_port()), "-c", conf)
    assert result.returncode == 1
    assert "refusing to start: 1 security setting(s)" in result.stderr
    assert "unknown restrict flag 'noqeury'" in result.stderr


def test_forking_start_refused_for_a_restrict_line_tells_the_parent():
    with config_file(LOCAL + "restrict 192.0.2.300 ignore\n") as conf:
        result = run_cli("--port", str(free_udp_port()), "-c", conf)
    assert result.returncode == 1
    assert "pyntpd: refusing to start" in result.stderr
    assert "'192.0.2.300' is not a valid IPv4 address" in result.stderr


SYNCED_TO = re.compile(r"synchronised to 127\.0\.0\.1 port (\d+) \(stratum (\d+)\)")


def test_peer_without_key_is_polled_as_a_server_and_followed():
    """The Puppet/Chef/Salt/Juju templates' `peer HOST` (no key): the source is kept, polled
    in client mode, and followed."""
    port_a = free_udp_port()
    with config_file("server 127.127.1.0\nfudge 127.127.1.0 stratum 7\nrestrict default\n"
                     ) as conf_a, \
            config_file(f"peer 127.0.0.1 port {port_a} iburst minpoll 3 maxpoll 3\n"
                        "restrict default\n") as conf_b, \
            Pyntpd("-c", conf_a, port=port_a), Pyntpd("-c", conf_b) as b:
        match = b.search_log(SYNCED_TO, 30.0)
        output = b.output()
    assert match is not None, output
    assert (int(match.group(1)), match.group(2)) == (port_a, "9")
    assert "'peer' without 'key': polled as 'server' (client mode)" in output
    assert "association with 127.0.0.1 port" in output
    assert "symmetric association" not in output
