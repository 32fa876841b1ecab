"""Our statistics files as the reference tools see them: written while synchronising from
chronyd, and read by ntpsec's own parser (ntp.statfiles, what ntpviz uses)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from refdaemons import ChronyServer, poll_until
from tests.support import Pyntpd, config_file

from pyntpd.cli.pyntpctl import main
from pyntpd.stats.statsformat import parse_loopstats, parse_peerstats

pytestmark = pytest.mark.interop

SYSTEM_PYTHON = "/usr/bin/python3"  # ntpsec's `ntp` package is installed for it (python3-ntp)

# ntpsec's NTPStats loads every STEM.* file of a directory and turns each line into
# [int ms, "unix time", field, field, ...]; this prints what it made of ours.
NTPSEC_READER = textwrap.dedent("""
    import json, sys
    from ntp.statfiles import NTPStats
    stats = NTPStats(sys.argv[1], starttime=0, endtime=2**33)
    print(json.dumps({"loopstats": stats.loopstats, "peerstats": stats.peerstats,
                      "peers": sorted(stats.peersplit())}))
""")


def ntpsec_reader() -> str:
    """The system python with ntpsec's `ntp` package; skips, or fails under CI=true."""
    ok = os.path.exists(SYSTEM_PYTHON) and subprocess.run(
        [SYSTEM_PYTHON, "-c", "import ntp.statfiles"], capture_output=True, timeout=30,
    ).returncode == 0
    if not ok:
        message = "ntpsec's python package (python3-ntp, `import ntp.statfiles`) is missing"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: interop tests are never skipped)", pytrace=False)
        pytest.skip(message)
    return SYSTEM_PYTHON


def read_with_ntpsec(statsdir: Path) -> dict[str, list]:
    done = subprocess.run([ntpsec_reader(), "-c", NTPSEC_READER, str(statsdir)],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


def assert_ntpsec_reads_what_we_wrote(statsdir: Path) -> None:
    ours_loop = [parse_loopstats(x) for x in (statsdir / "loopstats").read_text().splitlines()]
    ours_peer = [parse_peerstats(x) for x in (statsdir / "peerstats").read_text().splitlines()]
    theirs = read_with_ntpsec(statsdir)
    # Every line once: the bare link name is not read twice (ntpviz reads STEM.* only).
    assert len(theirs["loopstats"]) == len(ours_loop)
    assert len(theirs["peerstats"]) == len(ours_peer)
    # (ntpsec sorts lines of the same millisecond by their text: compare as sorted sets)
    assert sorted((float(row[2]), float(row[3])) for row in theirs["loopstats"]) == \
        sorted((r.offset, r.frequency) for r in ours_loop)
    times = sorted(float(row[1]) for row in theirs["loopstats"])
    assert times == pytest.approx(sorted(r.time for r in ours_loop), abs=1e-6)
    assert theirs["peers"] == sorted({r.address for r in ours_peer})


def test_ntpsecs_parser_reads_a_recorded_simulation(tmp_path):
    assert main(["simulate", "lan4", "--days", "0.05", "--stats", str(tmp_path)]) == 0
    assert_ntpsec_reads_what_we_wrote(tmp_path)


def test_statistics_written_while_following_chronyd_read_by_us_and_by_ntpsec(require,
                                                                             tmp_path):
    require("chronyd", "chronyc")
    statsdir = tmp_path / "stats"
    statsdir.mkdir()
    conf_text = ("restrict default\n"
                 f"statsdir {statsdir}\n"
                 "statistics loopstats peerstats sysstats\n"
                 "filegen loopstats file loopstats type day enable\n"
                 "filegen peerstats file peerstats type day enable\n")
    with ChronyServer(stratum=8) as server:
        server_line = f"server 127.0.0.1 port {server.port} iburst minpoll 4 maxpoll 4\n"
        with config_file(server_line + conf_text) as conf, Pyntpd("-c", conf) as d:
            def enough() -> bool:
                path = statsdir / "loopstats"
                return path.exists() and len(path.read_text().splitlines()) >= 2
            try:
                poll_until(enough, 40.0, "two loopstats lines")
            except TimeoutError:
                raise AssertionError(d.output()) from None
    peers = [parse_peerstats(x) for x in (statsdir / "peerstats").read_text().splitlines()]
    assert {p.address for p in peers} == {"127.0.0.1"}
    loop = [parse_loopstats(x) for x in (statsdir / "loopstats").read_text().splitlines()]
    assert abs(loop[-1].offset) < 1e-3
    assert abs(loop[-1].time - time.time()) < 600
    assert (statsdir / "sysstats").exists()
    assert_ntpsec_reads_what_we_wrote(statsdir)
    out = tmp_path / "plots"
    assert main(["plot", str(statsdir), "-o", str(out)]) == 0
    assert (out / "offset.png").read_bytes().startswith(b"\x89PNG")
    shutil.rmtree(out)
