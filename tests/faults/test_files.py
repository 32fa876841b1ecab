"""The statistics and drift directories full or read-only (issue 6, item 4).

pyntpd runs in a mount namespace of its own where the directory is a tiny tmpfs filled to
the last block, or a read-only bind mount; the test reaches it through /proc/PID/root and
frees space (or remounts it writable with nsenter) while the daemon runs. Unit-level
coverage of the same paths: tests/daemon/test_stats.py (write errors counted, logged once,
again after recovery; /dev/full) and tests/daemon/test_driftfile.py (a failed write keeps
the old file; logged once until a write succeeds).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from pyntpd.stats.statsformat import parse_loopstats, parse_peerstats
from tests.faults.harness import (
    Upstreams,
    no_traceback,
    ns_path,
    poll_until,
    program,
    require_root,
    wrapper,
)
from tests.support import LOCAL_CONF, Pyntpd, query

TMPFS = "mount -t tmpfs -o size=64k,mode=0755 faults {d}"
FILL = "dd if=/dev/zero of={d}/filler bs=4k 2>/dev/null || true"  # until ENOSPC
FULL = f"{TMPFS}\n{FILL}"
READ_ONLY = "mount --bind {d} {d}\nmount -o remount,bind,ro {d}"


@pytest.fixture(autouse=True)
def _mount_namespaces() -> None:
    require_root("unshare", "nsenter")


def _lines(directory: Path, name: str) -> list[str]:
    return [line for path in directory.glob(f"{name}.*")
            for line in path.read_text().splitlines()]


@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_statistics_on_a_broken_disk_are_logged_once_and_written_when_it_recovers(
        tmp_path: Path, fault: str) -> None:
    stats = tmp_path / "stats"
    stats.mkdir()
    setup = (FULL if fault == "full" else READ_ONLY).format(d=stats)
    with Upstreams(stratum=2) as up:
        up.come_back("127.0.0.1")
        conf = tmp_path / "ntp.conf"
        conf.write_text(f"server 127.0.0.1 port {up.port} iburst minpoll 3 maxpoll 3\n"
                        f"restrict default\nstatsdir {stats}/\nstatistics peerstats loopstats\n")
        with Pyntpd("-c", str(conf), wrap=wrapper(program(tmp_path), setup)) as daemon:
            error = "cannot write peerstats statistics"
            daemon.wait_for_log(error, 15)
            daemon.wait_for_log("synchronised to 127.0.0.1", 15)
            seen = ns_path(daemon.proc.pid, stats)
            poll_until(lambda: up.answered.get("127.0.0.1", 0) >= 4, 15, "more lines lost")
            assert query(daemon.port).header.stratum == 3  # serving all along
            if fault == "full":
                (seen / "filler").unlink()
            else:
                subprocess.run(["nsenter", "-t", str(daemon.proc.pid), "-m", "mount", "-o",
                                "remount,bind,rw", str(stats)], check=True, timeout=10)
            daemon.wait_for_log("peerstats statistics are written to", 20)
            daemon.wait_for_log("loopstats statistics are written to", 20)
            peer_lines = _lines(seen, "peerstats")
            loop_lines = _lines(seen, "loopstats")
            assert daemon.stop() == 0
            output = daemon.output()
        assert output.count(error) == 1  # once, not once per lost line
        assert output.count("cannot write loopstats statistics") == 1
        no_traceback(output)
        # Whole lines only: nothing half-written survives from the failed writes.
        assert peer_lines and all(parse_peerstats(x) for x in peer_lines)
        assert loop_lines and all(parse_loopstats(x) for x in loop_lines)


@pytest.mark.needs_sys_time
@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_drift_file_that_cannot_be_written_keeps_its_old_content(
        tmp_path: Path, fault: str) -> None:
    state = tmp_path / "state"
    state.mkdir()
    old = "-1.250\n"
    put_old = f"printf -- '{old.strip()}\\n' > {{d}}/ntp.drift"
    steps = [TMPFS, put_old, FILL] if fault == "full" else [put_old, READ_ONLY]
    setup = "\n".join(steps).format(d=state)
    conf = tmp_path / "ntp.conf"
    conf.write_text(f"{LOCAL_CONF}tinker freq 7.5\n")
    prog = program(tmp_path, simclock=True)
    with Pyntpd("-c", str(conf), "-f", str(state / "ntp.drift"), observe=False,
                wrap=wrapper(prog, setup)) as daemon:
        seen = ns_path(daemon.proc.pid, state)
        assert (seen / "ntp.drift").read_text() == old
        assert query(daemon.port).header.stratum == 11
        # The exit is held open by a reader, to look at the directory the daemon left.
        holder = subprocess.Popen(["nsenter", "-t", str(daemon.proc.pid), "-m", "sh", "-c",
                                   f"cd {state} && read x"], stdin=subprocess.PIPE)
        try:
            poll_until(lambda: Path(f"/proc/{holder.pid}/cwd").exists(), 10, "the holder")
            assert daemon.stop() == 0
            left = Path(f"/proc/{holder.pid}/cwd")
            contents = {p.name: p.read_text() for p in left.iterdir() if p.name != "filler"}
        finally:
            holder.kill()
            holder.wait(5)
        output = daemon.output()
    assert contents == {"ntp.drift": old}  # the old value, and no temporary file left
    assert output.count(f"cannot write drift file {state}/ntp.drift") == 1
    no_traceback(output)
