"""`pyntpctl check [-c FILE] [-k KEYS] [--audit] [--json]`: the configuration checker.

Without --audit it reports what `pyntpd --check` does (parse errors and warnings, names that
do not resolve, too few sources, no `restrict default`); with --audit it adds the security
review of config.audit. Exit status: 0 nothing to fix, 1 errors (the daemon would skip
lines), 2 security findings with --audit and no errors. Warnings and notes never change it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from pyntpd.config import files
from pyntpd.config.audit import SEVERITIES, Finding, counts, ordered
from pyntpd.config.check import RESOLVE_BUDGET, audit_file
from pyntpd.config.defaults import DEFAULT_CONFIG

EXIT_CLEAN = 0
EXIT_ERRORS = 1
EXIT_SECURITY = 2


def run_check(path: str, keys_file: str | None, full: bool,
              budget: float = RESOLVE_BUDGET) -> tuple[list[Finding], files.Lookups]:
    # files.* looked up at call time, so tests can give the checker a fake world.
    findings, lookups = audit_file(path, full=full, resolve=files.resolve,
                                   read_file=files.read_file, file_mode=files.file_mode,
                                   keys_file=keys_file, budget=budget)
    return ordered(findings), lookups


def exit_status(findings: list[Finding], full: bool) -> int:
    totals = counts(findings)
    if totals["error"]:
        return EXIT_ERRORS
    if full and totals["security"]:
        return EXIT_SECURITY
    return EXIT_CLEAN


def _summary(path: str, findings: list[Finding]) -> str:
    totals = counts(findings)
    names = {"error": "error(s)", "security": "security finding(s)", "warning": "warning(s)",
             "note": "note(s)"}
    return f"{path}: " + ", ".join(f"{totals[s]} {names[s]}" for s in SEVERITIES)


def cmd_check(args: argparse.Namespace) -> int:
    path = os.fspath(args.config)
    findings, lookups = run_check(path, args.keyfile, args.audit, args.resolve_timeout)
    status = exit_status(findings, args.audit)
    if args.json:
        document = {"file": path, "audit": args.audit, "exit": status,
                    "counts": counts(findings), "findings": [f.to_dict() for f in findings],
                    "resolve_timeout": lookups.budget,
                    "pending_names": [name for name, _ in lookups.pending]}
        json.dump(document, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return status
    current = None
    for finding in findings:
        if finding.severity != current:
            if current is not None:
                print()
            current = finding.severity
        print("\n".join(finding.lines()))
    if findings:
        print()
    print(_summary(path, findings))
    return status


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a number of seconds") from None
    if not 0 < seconds <= 60:
        raise argparse.ArgumentTypeError(f"{value}: choose 0 < S <= 60")
    return seconds


def register_check(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "check", help="check ntp.conf; with --audit, review its security too",
        description="Report every problem in an ntp.conf as FILE:LINE:COL: severity: what — "
                    "fix. Exit status: 0 clean, 1 errors, 2 security findings (--audit).")
    p.add_argument("-c", "--config", default=DEFAULT_CONFIG, metavar="FILE",
                   help=f"configuration file (default {DEFAULT_CONFIG})")
    p.add_argument("-k", "--keyfile", metavar="FILE",
                   help="keys file (overrides the 'keys' line, as pyntpd -k does)")
    p.add_argument("--audit", action="store_true",
                   help="add the security review (restrict defaults, authentication, "
                        "source count, mode 6/7, discipline knobs)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--resolve-timeout", type=_seconds, default=RESOLVE_BUDGET, metavar="S",
                   help="wait at most S seconds for all name lookups together (default "
                        f"{RESOLVE_BUDGET:g}); names still unanswered are reported as pending")
    p.set_defaults(func=cmd_check)
