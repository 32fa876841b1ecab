"""The drift file: tolerant reading, atomic symlink-refusing writes, ntpd's hourly rule."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyntpd.daemon import driftfile as driftfile_mod
from pyntpd.daemon.driftfile import (
    WANDER_THRESHOLD_PPM,
    WRITE_INTERVAL_S,
    DriftFile,
    DriftFormatError,
    format_drift,
    parse_drift,
)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "ntp.drift"


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


# -- reading -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "ppm"),
    [(b"-12.345\n", -12.345), (b"  7.5  \n", 7.5), (b"500.000\n", 500.0), (b"-500", -500.0),
     (b"1e1\n", 10.0), (b".5", 0.5), (b"+3.000\n", 3.0), (b"-1.234 0.05\n", -1.234)],
)
def test_read_valid(path, content, ppm):
    path.write_bytes(content)
    drift = DriftFile(path)
    assert drift.read() == ppm
    assert drift.last_written == ppm


def test_read_missing_file_is_none(path):
    assert DriftFile(path).read() is None


@pytest.mark.parametrize(
    "content",
    [b"", b"\n \n", b"nan\n", b"NaN", b"inf", b"-Infinity", b"1e999", b"500.001", b"-600",
     b"0x1p3", b"1_000", b"twelve", b"\xff\xfe1.0", b"12,5", b"1" * 5000, b"\x00"],
)
def test_read_garbage_is_ignored_with_a_warning(path, content, caplog):
    path.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="pyntpd.driftfile"):
        assert DriftFile(path).read() is None
    assert "ignoring drift file" in caplog.text


def test_read_refuses_a_symlink(path, tmp_path, caplog):
    target = tmp_path / "elsewhere"
    target.write_text("1.0\n")
    path.symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="pyntpd.driftfile"):
        assert DriftFile(path).read() is None
    assert "symlink" in caplog.text


def test_read_refuses_directory_and_fifo_without_hanging(path, caplog):
    path.mkdir()
    assert DriftFile(path).read() is None
    path.rmdir()
    os.mkfifo(path)
    with caplog.at_level(logging.WARNING, logger="pyntpd.driftfile"):
        assert DriftFile(path).read() is None
    assert "not a regular file" in caplog.text


@given(st.binary(max_size=64))
def test_parse_never_raises_anything_else(data):
    try:
        ppm = parse_drift(data)
    except DriftFormatError:
        return
    assert -500.0 <= ppm <= 500.0


@given(st.floats(min_value=-500, max_value=500))
def test_format_round_trips_at_ntpd_precision(ppm):
    text = format_drift(ppm)
    assert text.endswith(b"\n") and text.count(b".") == 1
    assert parse_drift(text) == pytest.approx(ppm, abs=0.0005 + 1e-9)


# -- writing -------------------------------------------------------------------------------


def test_write_creates_the_file_in_ntpd_format(path):
    old = os.umask(0o077)
    try:
        assert DriftFile(path).write(-12.3456)
    finally:
        os.umask(old)
    assert path.read_bytes() == b"-12.346\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert _leftovers(path.parent) == []


def test_write_replaces_atomically(path):
    path.write_bytes(b"1.000\n")
    inode = path.stat().st_ino
    drift = DriftFile(path)
    assert drift.write(2.5)
    assert path.read_bytes() == b"2.500\n"
    assert path.stat().st_ino != inode  # a new file renamed over, not rewritten in place
    assert drift.last_written == 2.5


def test_write_refuses_a_symlink_and_leaves_its_target_alone(path, tmp_path):
    target = tmp_path / "precious"
    target.write_bytes(b"keep me\n")
    path.symlink_to(target)
    assert not DriftFile(path).write(1.0)
    assert target.read_bytes() == b"keep me\n"
    assert path.is_symlink()
    assert _leftovers(tmp_path) == []


def test_write_refuses_a_directory(path):
    path.mkdir()
    assert not DriftFile(path).write(1.0)
    assert path.is_dir()


def test_failure_mid_write_keeps_the_old_file(path, monkeypatch):
    path.write_bytes(b"1.000\n")

    def broken_fsync(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(driftfile_mod.os, "fsync", broken_fsync)
    drift = DriftFile(path)
    assert not drift.write(3.0)
    assert path.read_bytes() == b"1.000\n"
    assert _leftovers(path.parent) == []
    assert drift.last_written is None


def test_errors_are_logged_once_until_a_write_succeeds(tmp_path, caplog):
    directory = tmp_path / "missing"
    drift = DriftFile(directory / "ntp.drift")
    with caplog.at_level(logging.INFO, logger="pyntpd.driftfile"):
        assert not drift.write(1.0)
        assert not drift.write(1.5)
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "cannot write drift file" in errors[0].getMessage()
        directory.mkdir()
        assert drift.write(2.0)
        assert "written again" in caplog.text
        directory.joinpath("ntp.drift").unlink()
        directory.rmdir()
        assert not drift.write(2.0)
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 500.5, -1e6])
def test_write_refuses_values_out_of_range(path, bad):
    assert not DriftFile(path).write(bad)
    assert not path.exists()


def test_written_file_reads_back(path):
    assert DriftFile(path).write(-0.0004)
    assert DriftFile(path).read() == 0.0  # "-0.000"


# -- when to write: ntpd's hourly rule ------------------------------------------------------


def test_first_call_starts_the_hour_and_a_file_less_start_writes_on_the_hour(path):
    drift = DriftFile(path)
    assert not drift.should_write(100.0, 5.0)
    assert not drift.should_write(100.0 + WRITE_INTERVAL_S - 1, 5.0)
    assert drift.should_write(100.0 + WRITE_INTERVAL_S, 5.0)


def test_small_changes_halve_the_threshold_until_written(path):
    path.write_bytes(b"10.000\n")
    drift = DriftFile(path)
    assert drift.read() == 10.0
    t = 0.0
    assert not drift.should_write(t, 10.0)
    hour = WRITE_INTERVAL_S
    change = WANDER_THRESHOLD_PPM * 0.3  # below 0.1, 0.05; reached by the 0.025 threshold
    decisions = [drift.should_write(t + hour * i, 10.0 + change) for i in range(1, 5)]
    assert decisions == [False, False, True, False]


def test_a_large_change_is_written_at_the_next_check(path):
    path.write_bytes(b"10.000\n")
    drift = DriftFile(path)
    drift.read()
    assert not drift.should_write(0.0, 12.0)
    assert not drift.should_write(10.0, 12.0)  # not yet an hour
    assert drift.should_write(WRITE_INTERVAL_S, 12.0)
    assert drift.write(12.0)
    assert not drift.should_write(2 * WRITE_INTERVAL_S, 12.0)
