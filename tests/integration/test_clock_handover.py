"""The real daemon takes the clock over, and hands it back on every way out: SIGTERM in the
middle of a slew, panic, an exception in the synchronisation loop. The clock is a SimClock
running on this machine's time (the kernel model a previous daemon left in some state), so
the daemon believes it disciplines a clock while this machine's is never touched; at exit
the test program writes down what the simulated kernel was left with. (The daemon takes receive
timestamps from the kernel, so the simulated clock stays within ~0.1 s of this machine's.)"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from pyntpd.daemon.exitcodes import EXIT_PANIC
from tests.faults.harness import no_traceback, poll_until, upstreams, wrapper
from tests.support import Pyntpd

PROGRAM = """\
import atexit, json, os, sys, time
from pyntpd.clock.simclock import SimClock
from pyntpd.daemon import app, syncloop


class LiveSimClock(SimClock):
    # True time is this machine's: every call first brings the model up to now.
    def __init__(self, **kw):
        super().__init__(epoch_ns=time.time_ns(), **kw)
        self._t0 = time.monotonic()
        self.frequencies = []

    def _live(self):
        self.advance_to(time.monotonic() - self._t0)

    def now(self):
        self._live()
        return super().now()

    def adjust_frequency(self, ppm):
        self._live()
        self.frequencies.append(ppm)
        return super().adjust_frequency(ppm)

    def read_back(self):
        self._live()
        return super().read_back()


clock = LiveSimClock(offset=float(os.environ["SIM_OFFSET"]), pll_offset=0.0123,
                     flags={"PLL", "NANO"}, kernel_frequency_ppm=7.0, time_constant=6)


def dump():
    with open(os.environ["SIM_DUMP"], "w") as f:
        json.dump({"ppm": clock.correction_ppm, "slew": clock.slew_left,
                   "pll": clock.pll_offset, "flags": sorted(clock.flags),
                   "max_ppm": max(map(abs, clock.frequencies), default=0.0)}, f)


atexit.register(dump)
app.make_clock = lambda options, config: clock
if os.environ.get("SIM_BREAK"):
    def broken(self, result):
        if result.system_peer is not None:
            raise RuntimeError("a bug in the loop")
    syncloop.Synchroniser._log_changes = broken
from pyntpd.cli.pyntpd import main
sys.exit(main())
"""
LEFT_AT = re.compile(r"clock left at the frequency estimate, ([-+.\d]+) ppm")


def run(tmp_path: Path, offset: float, *, stop_when: str, env: dict[str, str] | None = None,
        conf_extra: str = "", args: tuple[str, ...] = ()) -> tuple[int, str, dict]:
    prog = tmp_path / "pyntpd-liveclock"
    prog.write_text(f"#!{sys.executable}\n{PROGRAM}")
    prog.chmod(0o755)
    dump = tmp_path / "clock.json"
    with upstreams("127.0.0.1") as up:
        conf = tmp_path / "ntp.conf"
        conf.write_text(f"server 127.0.0.1 port {up.port} iburst minpoll 3 maxpoll 3\n"
                        f"restrict default\n{conf_extra}")
        daemon = Pyntpd("-c", str(conf), *args, observe=False, wrap=wrapper(prog),
                        env={"SIM_OFFSET": str(offset), "SIM_DUMP": str(dump), **(env or {})})
        with daemon:
            poll_until(lambda: stop_when in daemon.output(), 30, daemon.output())
            code = daemon.stop()
            output = daemon.output()
    return code, output, json.loads(dump.read_text())


@pytest.mark.needs_sys_time
def test_taken_over_at_start_and_left_at_the_estimate_after_sigterm_mid_slew(tmp_path):
    # 60 ms behind (measured as ~30 ms with kernel receive timestamps): below the step
    # threshold, slewed at ~500 ppm for about a minute.
    code, output, left = run(tmp_path, -0.06, stop_when="synchronised to")
    assert code == 0
    no_traceback(output)
    assert "kernel PLL offset +12.300 ms left by another daemon: cleared" in output
    assert "kernel discipline left on (STA_PLL): turned off" in output
    assert "no frequency from a drift file: starting from the kernel's, +7.000 ppm" in output
    assert (left["pll"], left["slew"]) == (0.0, 0.0) and "PLL" not in left["flags"]
    assert left["max_ppm"] > 300  # it was slewing when SIGTERM came
    [estimate] = [float(m) for m in LEFT_AT.findall(output)]
    assert left["ppm"] == pytest.approx(estimate, abs=1e-3) and abs(estimate) < 50


@pytest.mark.needs_sys_time
def test_a_panic_exit_leaves_the_estimate(tmp_path):
    # (The receive timestamps are the kernel's, so the simulated clock can only be a little
    # off this machine's; a panic threshold below the offset stands in for 1000 s.)
    code, output, left = run(tmp_path, -0.06, stop_when="exceeds the sanity limit",
                             conf_extra="tinker panic 0.01\n")
    assert code == EXIT_PANIC
    [estimate] = [float(m) for m in LEFT_AT.findall(output)]
    assert left["ppm"] == pytest.approx(estimate, abs=1e-3)


@pytest.mark.needs_sys_time
def test_an_exception_in_the_loop_exits_and_leaves_the_estimate(tmp_path):
    code, output, left = run(tmp_path, -0.06, stop_when="synchronisation failed, exiting",
                             env={"SIM_BREAK": "1"})
    assert code == 1
    assert "RuntimeError: a bug in the loop" in output
    [estimate] = [float(m) for m in LEFT_AT.findall(output)]
    assert left["ppm"] == pytest.approx(estimate, abs=1e-3)
    assert left["max_ppm"] > 300 and abs(estimate) < 50  # it had been slewing


@pytest.mark.needs_sys_time
def test_the_kernels_frequency_is_not_written_to_the_drift_file_unlearnt(tmp_path):
    # It may be anything a killed daemon left (even mid-slew); the next start would trust it.
    drift = tmp_path / "ntp.drift"
    code, output, left = run(tmp_path, -0.06, stop_when="serving time",
                             args=("-f", str(drift)))
    assert code == 0 and "synchronised to" not in output
    assert left["ppm"] == 7.0  # handed back as it was found
    assert not drift.exists()
