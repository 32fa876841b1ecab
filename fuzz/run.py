"""Run the atheris harnesses (fuzz/fuzz_*.py), each for a bounded time and number of runs.

    .venv/bin/python -m fuzz [--time S] [--runs N] [--artifacts DIR] [--corpus-dir DIR]
                             [HARNESS ...]

Each harness runs in its own process (libFuzzer runs once per process) on a working copy of
its seed corpus (fuzz/corpus/<name>/), so the seeds in the repository never change. The
report gives executions and executions/s per harness; crash, timeout and out-of-memory inputs
land in the artifacts directory. The exit status is non-zero on any finding. The CI smoke test
(tests/fuzz/test_fuzz_smoke.py) calls `run_harness` from here: one runner, not two.

A harness whose code under test is not installed exits with SKIP_EXIT after saying why
(the NTS harnesses before the `nts` branch is merged); it is reported as skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPORA = HERE / "corpus"
SKIP_EXIT = 3  # not 77, the automake "skipped": that is libFuzzer's default error exit code
_ARTIFACT_KINDS = ("crash-", "timeout-", "oom-", "leak-", "slow-unit-")
_STAT = re.compile(r"^stat::(\w+):\s*(\d+)", re.MULTILINE)
_PROGRESS = re.compile(r"^#(\d+)\s", re.MULTILINE)


def require(module: str, why: str) -> None:
    """For a harness, before it imports anything: exit as skipped if `module` is missing."""
    if importlib.util.find_spec(module) is None:
        print(f"skipped: {module} is not installed ({why})", file=sys.stderr, flush=True)
        sys.exit(SKIP_EXIT)


def harnesses() -> list[str]:
    """Every harness, by name (`fuzz_packet.py` is `packet`)."""
    return sorted(p.stem.removeprefix("fuzz_") for p in HERE.glob("fuzz_*.py"))


@dataclass
class Outcome:
    harness: str
    status: str  # "ok", "finding", "skipped"
    executions: int
    seconds: float
    returncode: int
    artifacts: list[Path] = field(default_factory=list)
    output: str = ""  # libFuzzer's and the harness's output

    @property
    def per_second(self) -> float:
        return self.executions / self.seconds if self.seconds > 0 else 0.0

    @property
    def message(self) -> str:
        """The skip reason, or the end of the output for a finding."""
        if self.status == "skipped":
            return self.output.strip().splitlines()[-1] if self.output.strip() else "skipped"
        start = self.output.find("=== Uncaught Python exception")
        if start < 0:
            start = self.output.find("==ERROR")
        return self.output[start:][:4000] if start >= 0 else self.output[-4000:]


def seed(name: str, workdir: Path) -> Path:
    """A fresh working corpus for `name`, holding its seeds."""
    corpus = workdir / name
    corpus.mkdir(parents=True, exist_ok=True)
    source = CORPORA / name
    if source.is_dir():
        for item in sorted(source.iterdir()):
            if item.is_file():
                shutil.copyfile(item, corpus / item.name)
    return corpus


def _executions(output: str) -> int:
    stats = dict(_STAT.findall(output))
    if "number_of_executed_units" in stats:
        return int(stats["number_of_executed_units"])
    progress = _PROGRESS.findall(output)  # killed before the final stats: the last "#N"
    return int(progress[-1]) if progress else 0


def run_harness(
    name: str,
    *,
    seconds: int,
    runs: int | None,
    workdir: Path,
    artifacts: Path,
    extra: tuple[str, ...] = (),
) -> Outcome:
    """Fuzz one harness for at most `seconds` and `runs` executions (None: no limit)."""
    script = HERE / f"fuzz_{name}.py"
    if not script.is_file():
        raise ValueError(f"no harness {name!r} (known: {', '.join(harnesses())})")
    corpus = seed(name, workdir)
    artifacts.mkdir(parents=True, exist_ok=True)
    prefix = artifacts / f"{name}-"
    before = set(artifacts.iterdir())
    command = [
        sys.executable, str(script), str(corpus),
        f"-max_total_time={seconds}", "-timeout=10", "-rss_limit_mb=2048",
        "-print_final_stats=1", f"-artifact_prefix={prefix}", *extra,
    ]
    if runs is not None:
        command.append(f"-runs={runs}")
    start = time.monotonic()
    result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, errors="replace", timeout=seconds + 300)
    elapsed = time.monotonic() - start
    output = result.stdout
    found = sorted(p for p in set(artifacts.iterdir()) - before
                   if p.name.removeprefix(f"{name}-").startswith(_ARTIFACT_KINDS))
    if result.returncode == SKIP_EXIT:
        status = "skipped"
    elif result.returncode or found:
        status = "finding"
    else:
        status = "ok"
    return Outcome(name, status, _executions(output), elapsed, result.returncode, found, output)


def report_line(outcome: Outcome) -> str:
    what = outcome.status
    if outcome.status == "skipped":
        what = f"skipped: {outcome.message}"
    elif outcome.artifacts:
        what += " " + " ".join(str(p) for p in outcome.artifacts)
    return (f"{outcome.harness:16} {outcome.executions:>11,} execs {outcome.seconds:8.1f} s "
            f"{outcome.per_second:>9,.0f}/s  {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.split("\n")[0])
    parser.add_argument("harness", nargs="*", help=f"default: all ({', '.join(harnesses())})")
    parser.add_argument("--time", type=int, default=60, metavar="S",
                        help="seconds per harness (default 60)")
    parser.add_argument("--runs", type=int, default=None, metavar="N",
                        help="executions per harness (default: no limit)")
    parser.add_argument("--artifacts", type=Path, default=Path("fuzz-artifacts"), metavar="DIR",
                        help="where crashing inputs are written (default ./fuzz-artifacts)")
    parser.add_argument("--corpus-dir", type=Path, default=None, metavar="DIR",
                        help="keep the working corpora here (default: a temporary directory)")
    args = parser.parse_args(argv)
    names = args.harness or harnesses()
    unknown = [n for n in names if n not in harnesses()]
    if unknown:
        parser.error(f"unknown harness {', '.join(unknown)} (known: {', '.join(harnesses())})")
    findings = 0
    with tempfile.TemporaryDirectory(prefix="pyntpd-fuzz-") as temporary:
        workdir = args.corpus_dir or Path(temporary)
        for name in names:
            outcome = run_harness(name, seconds=args.time, runs=args.runs, workdir=workdir,
                                  artifacts=args.artifacts)
            print(report_line(outcome), flush=True)
            if outcome.status == "finding":
                findings += 1
                print(outcome.message, file=sys.stderr)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
