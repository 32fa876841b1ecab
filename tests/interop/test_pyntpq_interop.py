"""pyntpq against ntpsec's ntpd, and pyntpq beside ntpsec's ntpq against pyntpd, in network
namespaces of the tests' own (ntpq and ntpsec's ntpd only use port 123)."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest
import refdaemons
from refdaemons import ChronyServer, ManagedProcess, NetNamespace, ntpq_query, poll_until
from tests.support import REPO, Pyntpd, config_file, free_udp_port

pytestmark = pytest.mark.interop

Require = Callable[..., dict[str, str]]
# The columns both tools print the same way (when/delay/offset/jitter move between two runs).
STABLE = ("tally", "remote", "refid", "st", "t", "poll", "reach")


def ntpq(netns: NetNamespace, *args: str) -> str:
    return ntpq_query(netns, *args, timeout=30)


def pyntpq(netns: NetNamespace, *args: str) -> subprocess.CompletedProcess[str]:
    return netns.run([sys.executable, "-m", "pyntpd.cli.pyntpq", "--timeout", "3", *args,
                      "127.0.0.1"], timeout=60)


def pyntpq_ok(netns: NetNamespace, *args: str) -> str:
    result = pyntpq(netns, *args)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def billboard(text: str) -> list[dict[str, str]]:
    """The rows of a `-p` listing, by column (ntpq and pyntpq alike)."""
    rows = []
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("====")) + 1
    for line in lines[start:]:
        fields = line[1:].split()
        if len(fields) == 10:
            rows.append({"tally": line[0], **dict(zip(
                ("remote", "refid", "st", "t", "when", "poll", "reach", "delay", "offset",
                 "jitter"), fields, strict=True))})
    return rows


def stable(rows: list[dict[str, str]]) -> list[tuple[str, ...]]:
    return sorted(tuple(row[k] for k in STABLE) for row in rows)


def agree(netns: NetNamespace, timeout: float = 30.0) -> tuple[str, str]:
    """`ntpq -pn` and `pyntpq -pn`, taken until their stable columns agree (reach and poll may
    move between the two runs); the pair last taken."""
    taken: list[tuple[str, str]] = []

    def same() -> bool:
        taken.append((ntpq(netns, "-pn"), pyntpq_ok(netns, "-pn")))
        return stable(billboard(taken[-1][0])) == stable(billboard(taken[-1][1]))

    try:
        poll_until(same, timeout, "ntpq -pn and pyntpq -pn to agree", interval=1.0)
    except Exception as exc:
        raise AssertionError(f"{exc}\nntpq:\n{taken[-1][0]}\npyntpq:\n{taken[-1][1]}") from None
    return taken[-1]


def test_pyntpq_reads_ntpsecs_associations_and_variables(require: Require,
                                                         netns: NetNamespace) -> None:
    require("ntpsec-ntpd", "setpriv", "ntpq")
    with tempfile.TemporaryDirectory(prefix="ntpsec-") as tmp:
        work = Path(tmp)
        conf = work / "ntp.conf"
        # Two servers that cannot answer (no route out of the namespace): associations ntpq
        # lists (configured, unreachable). ntpsec answers mode 6 only where restrict names
        # the client.
        conf.write_text("tos orphan 6 orphanwait 1\nrestrict default\ndisable kernel\n"
                        "restrict 127.0.0.1\nrestrict ::1\n"
                        "server 192.0.2.1 minpoll 4\nserver 192.0.2.2 minpoll 4\n"
                        f"driftfile {work / 'drift'}\nstatsdir {work}\n")
        ntpsec = ManagedProcess(netns.wrap(refdaemons.ntpsec_ntpd_argv(conf, work / "pid")),
                                work / "ntpd.log")
        with ntpsec:
            poll_until(lambda: pyntpq(netns, "-c", "rv").returncode == 0, 20.0,
                       "ntpsec to answer mode 6")
            theirs_as = ntpq(netns, "-c", "as")
            ours_as = json.loads(pyntpq_ok(netns, "--json", "-c", "as"))["associations"]
            theirs_rv = ntpq(netns, "-c", "rv 0 version,stratum,leap,precision")
            ours_rv = json.loads(pyntpq_ok(netns, "--json", "-c", "rv"))["variables"]
            peers = pyntpq_ok(netns, "-pn")
            theirs_peers = ntpq(netns, "-pn")
            mru = json.loads(pyntpq_ok(netns, "--json", "-n", "-c", "mrulist"))["entries"]
            status = pyntpq(netns, "--status")
    their_ids = sorted(int(line.split()[1]) for line in theirs_as.splitlines()[3:] if line)
    assert sorted(a["associd"] for a in ours_as) == their_ids and len(their_ids) == 2
    assert "ntpsec" in ours_rv["version"] and f"stratum={ours_rv['stratum']}" in theirs_rv
    assert f"precision={ours_rv['precision']}" in theirs_rv
    remotes = sorted(row["remote"] for row in billboard(peers))
    assert remotes == ["192.0.2.1", "192.0.2.2"]
    assert stable(billboard(peers)) == stable(billboard(theirs_peers))
    # ntpsec's nonce handshake works with ours, and it counted our queries.
    assert any(e["addr"] == "127.0.0.1" and e["mode"] == 6 and e["count"] > 1 for e in mru)
    assert status.returncode in (0, 1) and status.stdout.startswith(("synchronised", "unsync"))


def test_ntpq_and_pyntpq_agree_on_pyntpds_peers(require: Require, netns: NetNamespace) -> None:
    require("ntpq", "chronyd", "chronyc")
    conf_text = ("server 127.0.0.1 port 10123 iburst minpoll 4 maxpoll 4\n"
                 "server 127.127.1.0\nfudge 127.127.1.0 stratum 10\nrestrict default\n")
    with ChronyServer(stratum=8, port=10123, bind="127.0.0.1", netns=netns), \
            config_file(conf_text) as conf, Pyntpd("-c", conf, port=123, wrap=netns.wrap) as d:
        d.wait_synced()
        theirs, ours = agree(netns)
        their_rv = ntpq(netns, "-c", "rv 0 stratum,refid,leap")
        our_rv = json.loads(pyntpq_ok(netns, "--json", "-c", "rv"))["variables"]
        status = pyntpq(netns, "--status")
    rows = {row["remote"]: row for row in billboard(ours)}
    assert rows["127.0.0.1"]["tally"] == "*" and rows["127.0.0.1"]["st"] == "8"
    assert len(billboard(theirs)) == len(rows) == 2
    assert f"stratum={our_rv['stratum']}" in their_rv and f"refid={our_rv['refid']}" in their_rv
    assert status.returncode == 0
    assert status.stdout.startswith("synchronised to NTP server (127.0.0.1) at stratum 9")


def test_a_falseticker_shows_x_and_the_system_peer_a_star(require: Require,
                                                          netns: NetNamespace) -> None:
    """Three honest chronyd servers and one 50 ms liar: once pyntpd logs the liar as a
    falseticker, ntpq and pyntpq both mark it 'x' and one honest server '*'."""
    require("ntpq", "chronyd", "chronyc")
    liar_port = free_udp_port()
    servers = [ChronyServer(stratum=3, name=n, port=free_udp_port(), netns=netns)
               for n in "abc"]
    liar = subprocess.Popen(netns.wrap([sys.executable, "-m", "tests.liar", str(liar_port),
                                        "0.050"]), cwd=REPO)
    try:
        with servers[0] as a, servers[1] as b, servers[2] as c:
            lines = [f"127.0.0.1 port {s.port}" for s in (a, b, c)]
            lines.append(f"127.0.0.1 port {liar_port}")
            conf_text = "".join(f"server {s} iburst minpoll 4 maxpoll 4\n" for s in lines)
            with config_file(conf_text + "restrict default\n") as conf, \
                    Pyntpd("-c", conf, port=123, wrap=netns.wrap) as d:
                d.wait_for_log(f"127.0.0.1 port {liar_port} is a falseticker", timeout=60.0)
                d.wait_synced()
                theirs, ours = agree(netns)
                assoc = json.loads(pyntpq_ok(netns, "--json", "-p", "-n"))["peers"]
    finally:
        liar.terminate()
        liar.wait(10)
    for text in (theirs, ours):
        rows = billboard(text)
        assert sorted(row["tally"] for row in rows if row["tally"] in "*x") == ["*", "x"], text
        assert all(row["tally"] in "*x+-" for row in rows), text
        liars = [row for row in rows if row["tally"] == "x"]
        assert abs(float(liars[0]["offset"])) > 40, text  # ms: the 50 ms liar
    # Every row names 127.0.0.1: the JSON's srcport tells which one lies.
    tally = {p["srcport"]: p["tally"] for p in assoc}
    assert tally.pop(liar_port) == "x"
    assert sorted(tally.values()).count("*") == 1
