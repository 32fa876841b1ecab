"""`pyntpd --help` says what every flag does, and does what it says: each flag it lists is
accepted (short and long form), changes the option it names, or — where the help says it is
ignored or refused — changes nothing and says so; and each is in docs/configuration.md."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pyntpd.cli.options import OptionError, parse_args
from pyntpd.daemon.invocation import DaemonOptions

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# A value for each metavar --help shows (a new metavar needs one here).
SAMPLE = {
    "FILE": "/etc/ntp.test", "DIR": "/var/lib/test", "N": "3", "S": "2", "IFACE": "lo",
    "ADDR": "224.0.1.1", "KEY": "5", "USER[:GROUP]": "ntp:ntp", "VAR": "x=1", "DVAR": "y=2",
    "[ADDR:]PORT": "9975", "PATH": "/run/test.status",
}

# What each flag sets in DaemonOptions (what the daemon acts on).
EFFECT: dict[str, set[str]] = {
    "-4": {"ipv4_only"}, "-6": {"ipv6_only"}, "-b": {"broadcast_client"},
    "-c": {"config_file"}, "-d": {"debug_level", "foreground"},
    "-D": {"debug_level", "foreground"}, "-f": {"driftfile"}, "-g": {"panic_gate"},
    "-G": {"force_step_once"}, "-i": {"jaildir"}, "-I": {"interfaces"}, "-k": {"keyfile"},
    "-l": {"logfile"}, "-m": {"multicast_groups"}, "-n": {"foreground"}, "-N": {"nice"},
    "-p": {"pidfile"}, "-P": {"priority"}, "-q": {"quit_after_set"},
    "-r": {"broadcast_delay"}, "-s": {"statsdir"}, "-t": {"trusted_keys"},
    "-u": {"user", "group"}, "-w": {"wait_sync"}, "-x": {"slew_only"}, "--port": {"port"},
    "--check": {"check_only", "foreground"}, "--builtin-config": {"builtin_config"},
    "--observe": {"observe"}, "--workers": {"workers"}, "--metrics": {"metrics"},
    "--status-socket": {"status_socket"},
    # -a asks for what pyntpd always does: accepted, nothing to change.
    "-a": set(),
}


@dataclasses.dataclass
class Flag:
    names: list[str]
    metavar: str | None
    help: str


def help_flags() -> list[Flag]:
    """Every option in `pyntpd --help`, as the program prints it."""
    text = subprocess.run([sys.executable, "-m", "pyntpd.cli.pyntpd", "--help"],
                          capture_output=True, text=True, check=True, timeout=60).stdout
    body = text.split("options:", 1)[1]
    flags: list[Flag] = []
    for line in body.splitlines():
        match = re.match(r"  (-[^ ].*?)(?:  +(.*))?$", line)
        if match:
            spec, first = match.group(1), match.group(2) or ""
            names, metavar = [], None
            for part in spec.split(", "):
                name, _, value = part.partition(" ")
                names.append(name)
                metavar = value or metavar
            flags.append(Flag(names, metavar, first))
        elif flags and line.startswith(" " * 8):
            flags[-1].help += " " + line.strip()
    return [f for f in flags if f.names[0] not in ("-h", "--version")]


FLAGS = help_flags()


def test_help_lists_every_flag_of_ntpds_and_pyntpds():
    names = {n for f in FLAGS for n in f.names}
    assert {"-w", "-G", "-g", "-q", "-x", "-n", "--observe", "--metrics"} <= names
    assert len(FLAGS) >= 40


@pytest.mark.parametrize("flag", FLAGS, ids=lambda f: f.names[0])
def test_each_flag_is_accepted_and_does_what_help_says(flag):
    assert flag.help.strip(), f"{flag.names} has no help text"
    default = parse_args([])
    for name in flag.names:  # the short and the long form alike
        argv = [name] + ([SAMPLE[flag.metavar]] if flag.metavar else [])
        if "refused" in flag.help:
            with pytest.raises(OptionError, match=re.escape(name.lstrip("-"))):
                parse_args(argv)
            continue
        options = parse_args(argv)
        changed = {f.name for f in dataclasses.fields(DaemonOptions)
                   if f.name != "warnings"
                   and getattr(options, f.name) != getattr(default, f.name)}
        if "ignored" in flag.help:
            assert changed == set(), (name, changed)
            assert options.warnings and "ignored" in options.warnings[0], name
        else:
            assert changed == EFFECT[flag.names[0]], (name, changed)
            assert options.warnings == default.warnings, (name, options.warnings)


def test_w_with_n_is_ignored_with_a_warning_as_its_help_says_it_needs_a_forking_start():
    options = parse_args(["-n", "-w", "2"])
    assert "forking start" in next(f.help for f in FLAGS if "-w" in f.names)
    assert any(w.startswith("-w ignored") for w in options.warnings)


def test_every_flag_is_documented_in_configuration_md():
    section = DOCS.read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    for flag in FLAGS:
        assert any(re.search(rf"`{re.escape(n)}[` ]", section) for n in flag.names), flag.names
