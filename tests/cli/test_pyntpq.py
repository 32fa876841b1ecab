"""pyntpq: ntpq 4.2.8's layouts from fixed variables, the JSON shapes, exit codes, bad servers,
and ntpq's interactive mode (commands from standard input, the prompt, `host`, -i)."""

from __future__ import annotations

import io
import json
import os
import pty
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from pyntpd.cli import ntpqformat as fmt
from pyntpd.cli.pyntpq import main
from pyntpd.proto.control import ControlResponder, ControlSnapshot, MruItem, PeerInfo
from pyntpd.proto.control_client import Association, MruEntry, parse_vars, peer_row
from pyntpd.proto.timestamp import unix_to_ntp
from pyntpd.types import Tally

NOW = 1_800_000_000.0
NOW_NTP = unix_to_ntp(NOW)


def ts(unix: float) -> str:
    stamp = unix_to_ntp(unix)
    return f"0x{stamp >> 32:08x}.{stamp & 0xFFFFFFFF:08x}"


def row(status: int, text: str, associd: int = 1):  # type: ignore[no-untyped-def]
    return peer_row(Association(associd, status), parse_vars(text.encode()), NOW_NTP)


# --- layouts --------------------------------------------------------------------------------


def test_the_peers_billboard_matches_ntpq_line_for_line() -> None:
    rows = [
        row(0x961A, f"srcadr=192.0.2.10, refid=203.0.113.5, stratum=2, hmode=3, hpoll=6, "
                    f"ppoll=6, reach=0xff, delay=1.234567, offset=-0.123456, jitter=0.045678, "
                    f"rec={ts(NOW - 37)}"),
        row(0x9114, f"srcadr=192.0.2.66, refid=GPS, stratum=1, hmode=3, hpoll=10, ppoll=10, "
                    f"reach=0x7f, delay=25.5, offset=50.012345, jitter=1.5, rec={ts(NOW - 3000)}"),
        row(0x9424, "srcadr=192.0.2.11, refid=192.0.2.99, stratum=3, hmode=3, hpoll=6, "
                    "ppoll=6, reach=0x1, delay=0.5, offset=12345.678, jitter=0.001"),
        row(0x8011, "srcadr=127.127.1.0, srchost=\"LOCAL(0)\", refid=LOCL, stratum=10, "
                    "hmode=3, hpoll=6, ppoll=6, reach=0x0"),
    ]
    assert fmt.peers_text(rows, str).splitlines() == [
        "     remote           refid      st t when poll reach   delay   offset  jitter",
        "==============================================================================",
        "*192.0.2.10      203.0.113.5      2 u   37   64  377    1.235   -0.123   0.046",
        "x192.0.2.66      .GPS.            1 u  50m 1024  177   25.500   50.012   1.500",
        "+192.0.2.11      192.0.2.99       3 u    -   64    1    0.500  12345.6   0.001",
        " LOCAL(0)        .LOCL.          10 l    -   64    0    0.000    0.000   0.000",
    ]


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "-"), (0, "-"), (-5, "-"), (1, "1"), (2048, "2048"), (2049, "34m"),
    (18000, "300m"), (18060, "5h"), (96 * 3600, "96h"), (97 * 3600, "4d")])
def test_when_and_poll_are_printed_as_ntpq_does(seconds: int | None, text: str) -> None:
    assert fmt.pretty_interval(seconds) == text


@pytest.mark.parametrize(("hmode", "srcadr", "kind"), [
    (3, "192.0.2.1", "u"), (3, "127.127.1.0", "l"), (3, "0.0.0.0", "p"), (3, "239.1.1.1", "a"),
    (1, "192.0.2.1", "s"), (5, "192.0.2.255", "B"), (5, "224.0.1.1", "M"), (6, "192.0.2.1", "b")])
def test_the_type_column_follows_the_host_mode(hmode: int, srcadr: str, kind: str) -> None:
    assert row(0x9014, f"srcadr={srcadr}, hmode={hmode}").type == kind


def test_the_associations_table_matches_ntpq() -> None:
    assocs = [Association(40964, 0x961A), Association(40965, 0x9114),
              Association(40966, 0x8043), Association(40967, 0x0000)]
    assert fmt.assoc_text(assocs).splitlines() == [
        "",
        "ind assid status  conf reach auth condition  last_event cnt",
        "===========================================================",
        "  1 40964  961a   yes   yes  none  sys.peer    sys_peer  1",
        "  2 40965  9114   yes   yes  none falsetick   reachable  1",
        "  3 40966  8043   yes    no  none    reject unreachable  4",
    ]


def test_status_words_are_spelled_as_ntpq_does() -> None:
    assert fmt.sys_status_text(0x0615) == "0615 leap_none, sync_ntp, 1 event, clock_sync"
    assert fmt.sys_status_text(0xC000) == "c000 leap_alarm, sync_unspec, no events, unspecified"
    assert fmt.peer_status_text(0x961A) == "961a reach, conf, sel_sys.peer, 1 event, sys_peer"


def test_readvar_wraps_like_ntpq() -> None:
    text = fmt.readvar_text(0, 0x0615, parse_vars(
        b'version="pyntpd 0.1.0", processor="x86_64", system="Linux/6.1", leap=0, stratum=2, '
        b"precision=-24, rootdelay=1.234, rootdisp=5.678, refid=192.0.2.1"), NOW)
    assert text == (
        "associd=0 status=0615 leap_none, sync_ntp, 1 event, clock_sync,\n"
        'version="pyntpd 0.1.0", processor="x86_64", system="Linux/6.1", leap=00,\n'
        "stratum=2, precision=-24, rootdelay=1.234, rootdisp=5.678,\n"
        "refid=192.0.2.1\n")


def test_mrulist_lists_newest_first_in_ntpqs_columns() -> None:
    def entry(addr: str, last: float, count: int, rs: int = 0) -> MruEntry:
        return MruEntry(addr, 40000 + count, unix_to_ntp(NOW - 1000), unix_to_ntp(last), count,
                        3, 4, rs)
    text = fmt.mrulist_text([entry("192.0.2.1", NOW - 100, 10),
                             entry("2001:db8::1", NOW - 2, 1000, 0x0420)], NOW_NTP, str)
    assert text.splitlines() == [
        "lstint avgint rstr r m v  count rport remote address",
        "=" * 78,
        "     2      1  420 K 3 4   1000 41000 2001:db8::1",
        "   100     90    0 . 3 4     10 40010 192.0.2.1",
    ]


# --- ntpstat ---------------------------------------------------------------------------------


def test_status_synchronised_names_the_server_stratum_and_poll() -> None:
    system = parse_vars(b"leap=0, stratum=3, refid=192.0.2.1, rootdelay=10.0, rootdisp=2.5, "
                        b"offset=0.012, peer=7, tc=6")
    peer = parse_vars(b"srcadr=192.0.2.1, hpoll=6, ppoll=10")
    code, line = fmt.sync_status(0x0615, system, peer)
    assert code == fmt.EXIT_SYNCHRONISED
    assert line == ("synchronised to NTP server (192.0.2.1) at stratum 3, time correct to "
                    "within 7.500 ms, offset +0.012 ms, polling every 64 s")


def test_status_unsynchronised_when_leap_is_alarm() -> None:
    code, line = fmt.sync_status(0xC000, parse_vars(b"leap=3, stratum=16"), None)
    assert (code, line) == (fmt.EXIT_UNSYNCHRONISED, "unsynchronised")


def test_status_unknown_without_leap_or_stratum() -> None:
    assert fmt.sync_status(0, parse_vars(b"version=x"), None)[0] == fmt.EXIT_UNKNOWN


# --- the command against a fake server ------------------------------------------------------

Handler = Callable[[bytes, tuple[str, int]], list[bytes]]


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], int]]:
    """A UDP server on loopback, answering with `handler`, stopped after the test."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    socks: list[socket.socket] = []

    def start(handler: Handler) -> int:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.05)
        socks.append(sock)

        def loop() -> None:
            while not stop.is_set():
                try:
                    data, peer = sock.recvfrom(2048)
                except TimeoutError:
                    continue
                for reply in handler(data, peer):
                    sock.sendto(reply, peer)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        threads.append(thread)
        return sock.getsockname()[1]

    yield start
    stop.set()
    for thread in threads:
        thread.join(5)
    for sock in socks:
        sock.close()


def responder(snapshot: ControlSnapshot) -> Handler:
    control = ControlResponder(b"x" * 32)
    return lambda data, peer: control.respond(data, peer[0], 0, NOW, snapshot)


SYNCED = ControlSnapshot(
    leap=0, stratum=3, refid=bytes([192, 0, 2, 1]), peer=5, rootdelay=0.01, rootdisp=0.002,
    clock=NOW_NTP, peers=(
        PeerInfo(associd=5, srcadr="192.0.2.1", leap=0, stratum=1, refid=b"GPS\0", reach=0xFF,
                 tally=Tally.SYSPEER, delay=0.001, offset=0.0002, jitter=0.0001, hpoll=6,
                 ppoll=6),
        PeerInfo(associd=6, srcadr="192.0.2.66", leap=0, stratum=1, refid=b"GPS\0", reach=0x7,
                 tally=Tally.FALSETICKER, offset=0.05, hpoll=6, ppoll=6),
    ),
    mru=(MruItem("127.0.0.1", 40000, NOW - 10, NOW - 1, 5, (4 << 3) | 3),))


def run(capsys: pytest.CaptureFixture[str], port: int, *args: str) -> tuple[int, str, str]:
    code = main(["--port", str(port), "--timeout", "0.3", *args, "127.0.0.1"])
    out, err = capsys.readouterr()
    return code, out, err


def test_peers_against_a_server(serve: Callable[[Handler], int],
                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, serve(responder(SYNCED)), "-pn")
    assert code == 0
    assert out.splitlines()[2:] == [
        "*192.0.2.1       .GPS.            1 u    -   64  377    1.000    0.200   0.100",
        "x192.0.2.66      .GPS.            1 u    -   64    7    0.000   50.000   0.000",
    ]


def test_json_documents_have_typed_fields(serve: Callable[[Handler], int],
                                          capsys: pytest.CaptureFixture[str]) -> None:
    port = serve(responder(SYNCED))
    code, out, _ = run(capsys, port, "--json", "-n", "-c", "rv", "-c", "as", "-p",
                       "-c", "mrulist")
    docs = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert [d["command"] for d in docs] == ["readvar", "associations", "peers", "mrulist"]
    rv, assoc, peers, mru = docs
    assert rv["variables"]["stratum"] == 3 and rv["variables"]["refid"] == "192.0.2.1"
    assert rv["variables"]["clock"] == pytest.approx(NOW, abs=1e-3)
    assert [a["condition"] for a in assoc["associations"]] == ["sys.peer", "falsetick"]
    assert peers["peers"][1] == {
        "associd": 6, "tally": "x", "condition": "falsetick", "remote": "192.0.2.66",
        "srcadr": "192.0.2.66", "srcport": 123, "refid": "GPS", "stratum": 1, "type": "u",
        "when": None, "poll": 64, "reach": 7, "delay_ms": 0.0, "offset_ms": 50.0, "jitter_ms": 0.0}
    assert {"addr": "127.0.0.1", "port": 40000, "count": 5}.items() <= mru["entries"][-1].items()


def test_status_exit_codes(serve: Callable[[Handler], int],
                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, serve(responder(SYNCED)), "--status")
    assert code == 0 and out.startswith("synchronised to NTP server (192.0.2.1) at stratum 3")
    code, out, _ = run(capsys, serve(responder(ControlSnapshot())), "--status")
    assert (code, out) == (1, "unsynchronised\n")
    code, out, _ = run(capsys, serve(lambda data, peer: []), "--status")
    assert code == 2 and out.startswith("unknown:")


def test_a_silent_server_times_out_cleanly(serve: Callable[[Handler], int],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, serve(lambda data, peer: []), "-c", "rv")
    assert (code, out) == (1, "")
    assert "timed out, nothing received" in err


def test_garbage_replies_are_ignored_until_the_timeout(
        serve: Callable[[Handler], int], capsys: pytest.CaptureFixture[str]) -> None:
    garbage = [b"", b"\x16", b"\x16\x82" + b"\xff" * 30, bytes(range(48)) * 3]
    code, _, err = run(capsys, serve(lambda data, peer: garbage), "-pn")
    assert code == 1 and "timed out" in err and "Traceback" not in err


def test_an_unknown_association_is_an_error(serve: Callable[[Handler], int],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, serve(responder(SYNCED)), "-c", "rv 999")
    assert (code, out) == (1, "")
    assert "association 999 unknown to the server" in err


def test_unknown_commands_and_options_are_refused(serve: Callable[[Handler], int],
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    port = serve(responder(SYNCED))
    code, _, err = run(capsys, port, "-c", ":config restrict default")
    assert code == 1 and "unknown command" in err
    code, _, err = run(capsys, port, "-c", "mrulist kod=1")
    assert code == 1 and "unsupported option" in err


def test_a_closed_port_or_bad_host_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(capsys, port, "-c", "rv")
    assert code == 1 and "pyntpq:" in err
    assert main(["--status", "--port", "0", "127.0.0.1"]) == 2
    assert main(["-c", "rv", "no-such-host.invalid"]) == 1


def test_server_text_cannot_inject_terminal_escapes(serve: Callable[[Handler], int],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    snapshot = ControlSnapshot(version="evil\x1b[2J\x07", leap=0, stratum=2)
    code, out, _ = run(capsys, serve(responder(snapshot)), "-c", "rv")
    assert code == 0 and "\x1b" not in out and "\x07" not in out
    assert 'version="evil^[[2J^G"' in out


def test_a_nonsense_timeout_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--timeout", "nan", "-c", "rv", "127.0.0.1"]) == 1
    assert main(["--timeout=-1", "--status", "127.0.0.1"]) == 2
    assert "bad timeout" in capsys.readouterr().err


def test_name_lookups_share_one_bounded_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    from pyntpd.cli import pyntpq

    def slow(address: tuple[str, int], flags: int) -> tuple[str, str]:
        time.sleep(5 if address[0].endswith(".9") else 0)
        return f"host-{address[0]}", "0"

    monkeypatch.setattr(pyntpq, "RESOLVE_BUDGET", 0.3)
    monkeypatch.setattr(pyntpq.socket, "getnameinfo", slow)
    start = time.monotonic()
    namer = pyntpq.resolver(["192.0.2.1", "192.0.2.9", "127.127.1.0"])
    assert time.monotonic() - start < 1.0
    assert [namer(a) for a in ("192.0.2.1", "192.0.2.9", "127.127.1.0")] == [
        "host-192.0.2.1", "192.0.2.9", "127.127.1.0"]


# --- interactive mode ---------------------------------------------------------------------


def run_with_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                   text: str, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code = main(["--timeout", "0.3", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_without_commands_each_line_of_standard_input_is_one(
        serve: Callable[[Handler], int], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    port = serve(responder(SYNCED))
    code, out, err = run_with_stdin(monkeypatch, capsys, "rv 0 stratum\n\nas\nquit\npeers\n",
                                    "--port", str(port), "-n", "127.0.0.1")
    assert code == 0 and err == ""
    assert "stratum=3" in out and "sys.peer" in out
    assert "192.0.2.66" not in out  # `peers` came after `quit`
    assert "ntpq>" not in out  # no prompt when standard input is not a terminal


def test_host_sends_the_following_commands_to_the_new_host(
        serve: Callable[[Handler], int], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    port = serve(responder(SYNCED))
    code, out, err = run_with_stdin(
        monkeypatch, capsys, "host no-such-host.invalid\nhost 127.0.0.1\nrv 0 stratum\n",
        "--port", str(port), "localhost")
    assert code == 0
    assert "no-such-host.invalid: cannot resolve" in err
    assert "current host set to 127.0.0.1" in out and "stratum=3" in out


def test_minus_c_many_times_then_minus_i_keeps_reading(
        serve: Callable[[Handler], int], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    port = serve(responder(SYNCED))
    code, out, _ = run_with_stdin(monkeypatch, capsys, "rv 0 refid\n", "--port", str(port),
                                  "-c", "rv 0 stratum", "-c", "rv 0 leap", "-i", "127.0.0.1")
    assert code == 0
    assert out.index("stratum=3") < out.index("leap=00") < out.index("refid=192.0.2.1")
    assert "ntpq> " in out  # -i: the prompt even without a terminal


def test_minus_c_alone_does_not_read_standard_input(
        serve: Callable[[Handler], int], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    port = serve(responder(SYNCED))
    _, out, _ = run_with_stdin(monkeypatch, capsys, "rv 0 refid\n", "--port", str(port),
                               "-c", "rv 0 stratum", "127.0.0.1")
    assert "stratum=3" in out and "refid" not in out


def read_until(fd: int, marker: bytes, seen: bytearray, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while marker not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} in {bytes(seen)!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the child closed the terminal
                chunk = b""
            assert chunk, f"terminal closed before {marker!r}: {bytes(seen)!r}"
            seen.extend(chunk)
    del seen[:seen.index(marker) + len(marker)]  # what came after it is read next


def test_on_a_terminal_the_prompt_edits_lines_and_recalls_history(
        serve: Callable[[Handler], int]) -> None:
    pytest.importorskip("readline")
    port = serve(responder(SYNCED))
    controller, terminal = pty.openpty()
    env = {**os.environ, "TERM": "dumb", "INPUTRC": "/dev/null"}
    proc = subprocess.Popen([sys.executable, "-m", "pyntpd.cli.pyntpq", "--timeout", "2",
                             "--port", str(port), "-n", "127.0.0.1"],
                            stdin=terminal, stdout=terminal, stderr=terminal, env=env)
    os.close(terminal)
    seen = bytearray()
    try:
        read_until(controller, b"ntpq> ", seen)
        # Typed "rv 0 stratux", one character rubbed out and corrected: line editing.
        os.write(controller, b"rv 0 stratux\x7fm\r")
        read_until(controller, b"stratum=3", seen)
        read_until(controller, b"ntpq> ", seen)
        os.write(controller, b"\x10\r")  # Ctrl-P: the previous line from the history
        read_until(controller, b"stratum=3", seen)
        os.write(controller, b"quit\r")
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(controller)
