"""SHM units 0 and 1 are root's 0600 segments (gpsd as root makes them so): pyntpd under
`-u nobody` must attach them while still root, as ntpd opens its refclocks before it
drops root. A real daemon in an IPC namespace of the test's own, a writer (root) that made
unit 0 owner-only before the daemon started; the daemon, running as nobody, must read it.
Daemon under --observe."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Pyntpd, config_file

REPO = Path(__file__).resolve().parents[2]
OFFSET = 0.5  # s: what the writer claims the reference is ahead of this host's clock


@contextlib.contextmanager
def ipc_namespace() -> Iterator[str]:
    holder = subprocess.Popen(["unshare", "--ipc", "--", "cat"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL)
    try:
        own = Path("/proc/self/ns/ipc").readlink()
        deadline = time.monotonic() + 5
        while Path(f"/proc/{holder.pid}/ns/ipc").readlink() == own:
            assert time.monotonic() < deadline, "unshare never made the namespace"
            time.sleep(0.01)
        yield str(holder.pid)
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(5)


def pyntpq_peers(port: int) -> dict[str, dict[str, object]]:
    result = subprocess.run(
        [sys.executable, "-m", "pyntpd.cli.pyntpq", "--json", "--port", str(port), "-c",
         "peers", "127.0.0.1"], capture_output=True, text=True, timeout=30, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    [peers] = [json.loads(line) for line in result.stdout.splitlines()]
    return {str(r["remote"]): r for r in peers["peers"]}


@pytest.mark.skipif(os.geteuid() != 0, reason="-u and a root-owned segment need root")
def test_a_root_owned_0600_shm_unit_0_is_read_by_a_daemon_running_as_nobody():
    conf = "server 127.127.28.0 minpoll 4 maxpoll 4\nrestrict 127.0.0.1\n"
    with ipc_namespace() as ns:
        enter = ["nsenter", f"--ipc=/proc/{ns}/ns/ipc", "--"]
        writer = subprocess.Popen(
            [*enter, sys.executable, "-m", "tests.refclock.shmwriter", "0", str(OFFSET), "60",
             "600"], cwd=REPO, stdout=subprocess.PIPE, text=True)
        try:
            assert writer.stdout is not None and writer.stdout.readline() == "attached\n"
            with (config_file(conf) as path,
                  Pyntpd("-c", path, "-u", "nobody", wrap=lambda argv: [*enter, *argv]) as d):
                assert d.proc is not None
                status = Path(f"/proc/{d.proc.pid}/status").read_text()
                uid = next(line for line in status.splitlines() if line.startswith("Uid:"))
                assert uid.split()[1:] == ["65534"] * 4, uid
                deadline = time.monotonic() + 40
                row: dict[str, object] = {}
                while time.monotonic() < deadline:
                    time.sleep(2)
                    row = pyntpq_peers(d.port).get("SHM(0)", {})
                    if int(row.get("reach", 0)) & 1:  # type: ignore[call-overload]
                        break
                output = d.output()
        finally:
            writer.terminate()
            writer.wait(5)
    assert int(row.get("reach", 0)) & 1, (row, output)  # type: ignore[call-overload]
    assert abs(float(str(row["offset_ms"])) / 1e3 - OFFSET) < 0.01, row
    assert "Permission denied" not in output, output
