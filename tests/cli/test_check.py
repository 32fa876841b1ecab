"""`pyntpctl check [--audit] [--json]` on the seed's configuration and on the fixed one, in a
fake world: the seed's servers resolve to documentation addresses, /etc/ntp/* is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pyntpd.cli.pyntpctl import main
from pyntpd.config import files
from tests.config.helpers import SEED_RESOLVER, FakeFiles

SEED = Path(__file__).resolve().parents[1] / "data" / "seed"
CLEAN = str(SEED / "ntp.conf")
PUBLISHED = str(SEED / "ntp.conf.as-published")
FIXED = Path(__file__).resolve().parents[2] / "docs" / "examples" / "ntp.conf.audited"


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> FakeFiles:
    fs = FakeFiles({p: Path(p).read_bytes() for p in (CLEAN, PUBLISHED, str(FIXED))})
    monkeypatch.setattr(files, "read_file", fs.read_file)
    monkeypatch.setattr(files, "file_mode", fs.file_mode)
    monkeypatch.setattr(files, "resolve", SEED_RESOLVER)
    return fs


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["check", *argv])
    return code, capsys.readouterr().out


def _findings(capsys: pytest.CaptureFixture[str], *argv: str) -> list[tuple[str, str]]:
    _code, out = _run(capsys, *argv, "--json")
    return [(f["severity"], f["code"]) for f in json.loads(out)["findings"]]


@pytest.mark.usefixtures("world")
@pytest.mark.parametrize("path", [CLEAN, PUBLISHED])
def test_seed_audit_findings(capsys, path):
    found = _findings(capsys, "-c", path, "--audit")
    assert ("error", "parse") in found  # perfer
    security = sorted(code for severity, code in found if severity == "security")
    assert security == ["restrict-default-limited", "restrict-query-open", "too-few-sources"]
    notes = sorted(code for severity, code in found if severity == "note")
    assert notes == ["local-clock-fallback", "no-leapfile"]


@pytest.mark.usefixtures("world")
def test_seed_exit_status_is_1_for_its_error_even_with_audit(capsys):
    assert _run(capsys, "-c", CLEAN)[0] == 1
    assert _run(capsys, "-c", CLEAN, "--audit")[0] == 1


@pytest.mark.usefixtures("world")
def test_seed_text_output_is_grouped_with_locations_and_fixes(capsys):
    _code, out = _run(capsys, "-c", CLEAN, "--audit")
    lines = out.splitlines()
    assert lines[0] == (f"{CLEAN}:22:26: error: unknown option 'perfer' for 'server' — fix: "
                        "did you mean 'prefer'?")
    assert f"{CLEAN}:23:8: security: only 2 network time source(s); RFC 8633 §3.2 " \
           "recommends at least 4 — fix: add servers, or use 'pool'" in lines
    assert lines[-1] == (f"{CLEAN}: 1 error(s), 3 security finding(s), 2 warning(s), "
                         "2 note(s)")


@pytest.mark.usefixtures("world")
def test_seed_without_audit_reports_only_the_basic_checks(capsys):
    found = _findings(capsys, "-c", CLEAN)
    assert [code for _s, code in found] == ["parse", "too-few-sources", "parse", "parse"]


@pytest.mark.usefixtures("world")
def test_fixed_seed_passes_the_audit(capsys):
    code, out = _run(capsys, "-c", str(FIXED), "--audit")
    assert code == 0, out
    assert out.splitlines()[-1].startswith(f"{FIXED}: 0 error(s), 0 security finding(s)")


def test_security_finding_without_errors_exits_2(tmp_path, capsys):
    conf = tmp_path / "ntp.conf"
    conf.write_text("restrict default noquery\n"
                    + "".join(f"server 192.0.2.{i}\n" for i in range(1, 5)))
    assert _run(capsys, "-c", str(conf))[0] == 0
    assert _run(capsys, "-c", str(conf), "--audit")[0] == 2


def test_missing_file_is_a_clear_error(tmp_path, capsys):
    missing = tmp_path / "nope.conf"
    code, out = _run(capsys, "-c", str(missing), "--audit")
    assert code == 1
    assert out.splitlines()[0] == (f"{missing}: error: cannot read configuration: "
                                   "No such file or directory")


def test_json_document_has_counts_and_exit(tmp_path, capsys):
    conf = tmp_path / "ntp.conf"
    conf.write_text("restrict default kod limited nomodify notrap nopeer noquery\n"
                    "tinker panic 0\n")
    _code, out = _run(capsys, "-c", str(conf), "--audit", "--json")
    doc = json.loads(out)
    assert (doc["exit"], doc["audit"], doc["counts"]["security"]) == (2, True, 1)
    assert doc["findings"][0]["code"] == "tinker-panic-0"
