from __future__ import annotations

import logging
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pyntpd.daemon import logsetup
from pyntpd.daemon.logsetup import configure_logging, reopen
from pyntpd.logonce import LogOnce

LINE = re.compile(r"^(\S+) pyntpd\[(\d+)\]: (\w+) (.*)$")


@pytest.fixture(autouse=True)
def restore_logger() -> Iterator[None]:
    # configure_logging mutates the process-wide "pyntpd" logger; other tests must not see it.
    logger = logging.getLogger("pyntpd")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        if handler not in saved[0]:
            handler.close()
    for handler in saved[0]:
        logger.addHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


@pytest.fixture
def no_syslog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", str(tmp_path / "no-dev-log"))


@pytest.fixture
def syslog_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    # Short directory: AF_UNIX paths are limited to 107 bytes, pytest's tmp_path can exceed it.
    with tempfile.TemporaryDirectory(prefix="pyntpd-log") as d:
        path = os.path.join(d, "log")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(5)
        monkeypatch.setattr(logsetup, "SYSLOG_SOCKET", path)
        yield sock
        sock.close()


def parse(line: str) -> tuple[str, int, str, str]:
    """A stderr/file log line -> (timestamp, pid, level, message)."""
    match = LINE.match(line)
    assert match, line
    return match[1], int(match[2]), match[3], match[4]


def stderr_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_foreground_logs_to_stderr_with_timestamp_pid_and_level(
    capsys: pytest.CaptureFixture[str], no_syslog: None
) -> None:
    configure_logging(foreground=True, logfile=None, syslog=False, debug_level=0).info("hello")
    [line] = stderr_lines(capsys)
    stamp, pid, level, message = parse(line)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stamp)
    assert (pid, level, message) == (os.getpid(), "INFO", "hello")


def test_timestamps_are_utc_whatever_the_local_zone(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_syslog: None
) -> None:
    with monkeypatch.context() as m:
        m.setenv("TZ", "IST-5:30")  # POSIX form: needs no tzdata
        time.tzset()
        try:
            logger = configure_logging(foreground=True, logfile=None, syslog=False, debug_level=0)
            logger.info("x")
        finally:
            m.undo()
            time.tzset()
    stamp = parse(stderr_lines(capsys)[0])[0]
    logged = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - logged).total_seconds()) < 60


def test_debug_level_zero_hides_debug_messages(
    capsys: pytest.CaptureFixture[str], no_syslog: None
) -> None:
    configure_logging(foreground=True, logfile=None, syslog=False, debug_level=0).debug("noise")
    assert stderr_lines(capsys) == []


def test_debug_level_one_shows_debug_messages(
    capsys: pytest.CaptureFixture[str], no_syslog: None
) -> None:
    configure_logging(foreground=True, logfile=None, syslog=False, debug_level=1).debug("detail")
    assert parse(stderr_lines(capsys)[0])[2] == "DEBUG"


def test_control_characters_in_a_message_stay_on_one_line(
    capsys: pytest.CaptureFixture[str], no_syslog: None
) -> None:
    logger = configure_logging(foreground=True, logfile=None, syslog=False, debug_level=0)
    logger.warning("peer %s", "evil\nFAKE 2026 pyntpd[1]: ERROR forged\x1b[2J")
    [line] = stderr_lines(capsys)
    assert line.endswith(r"peer evil\x0aFAKE 2026 pyntpd[1]: ERROR forged\x1b[2J")


def test_logfile_receives_messages_instead_of_stderr(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logfile = tmp_path / "ntp.log"
    configure_logging(foreground=True, logfile=str(logfile), syslog=True, debug_level=0).info("hi")
    assert parse(logfile.read_text().splitlines()[0])[3] == "hi"
    assert stderr_lines(capsys) == []


def test_logfile_is_created_with_mode_0640(tmp_path: Path) -> None:
    logfile = tmp_path / "ntp.log"
    old = os.umask(0)
    try:
        configure_logging(foreground=False, logfile=str(logfile), syslog=False, debug_level=0)
    finally:
        os.umask(old)
    assert logfile.stat().st_mode & 0o777 == 0o640


def test_logfile_is_appended_to(tmp_path: Path) -> None:
    logfile = tmp_path / "ntp.log"
    logfile.write_text("earlier line\n")
    configure_logging(foreground=False, logfile=str(logfile), syslog=False, debug_level=0).info("x")
    assert logfile.read_text().splitlines()[0] == "earlier line"
    assert len(logfile.read_text().splitlines()) == 2


def test_logfile_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "shadow"
    target.write_text("")
    (tmp_path / "ntp.log").symlink_to(target)
    with pytest.raises(OSError):
        configure_logging(
            foreground=False, logfile=str(tmp_path / "ntp.log"), syslog=False, debug_level=0
        )
    assert target.read_text() == ""


def test_reopen_writes_to_a_fresh_file_after_rotation(tmp_path: Path) -> None:
    logfile = tmp_path / "ntp.log"
    logger = configure_logging(foreground=False, logfile=str(logfile), syslog=False, debug_level=0)
    logger.info("before")
    logfile.rename(tmp_path / "ntp.log.1")
    assert reopen()
    logger.info("after")
    assert "before" in (tmp_path / "ntp.log.1").read_text()
    assert "after" not in (tmp_path / "ntp.log.1").read_text()
    assert "after" in logfile.read_text()


def test_failed_reopen_keeps_logging_to_the_old_file(tmp_path: Path) -> None:
    logfile = tmp_path / "ntp.log"
    logger = configure_logging(foreground=False, logfile=str(logfile), syslog=False, debug_level=0)
    logfile.rename(tmp_path / "ntp.log.1")
    logfile.symlink_to(tmp_path / "elsewhere")
    assert not reopen()
    logger.info("still here")
    rotated = (tmp_path / "ntp.log.1").read_text()
    assert "cannot reopen log file" in rotated
    assert "still here" in rotated


def test_hand_over_gives_the_log_file_root_opened_to_the_service_user(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    logfile = tmp_path / "ntp.log"
    configure_logging(foreground=False, logfile=str(logfile), syslog=False, debug_level=0)
    logsetup.hand_over(65534, 65533, "nobody")
    st = logfile.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (65534, 65533, 0o640)


def test_hand_over_leaves_a_file_with_another_name_alone(tmp_path: Path) -> None:
    logfile = tmp_path / "ntp.log"
    logfile.write_text("")
    os.link(logfile, tmp_path / "other-name")  # e.g. a hard link planted to a root file
    logger = configure_logging(foreground=False, logfile=str(logfile), syslog=False,
                               debug_level=0)
    logsetup.hand_over(65534, 65534, "nobody")
    assert logfile.stat().st_uid == os.geteuid()
    assert f"log file {logfile} stays as it is (it has 2 names (hard links))" in \
        logfile.read_text()
    logger.info("still logging")


def test_hand_over_leaves_a_file_another_user_owns_alone(tmp_path: Path) -> None:
    logfile = tmp_path / "ntp.log"
    logfile.write_text("")
    os.chown(logfile, 1234, 1234)
    configure_logging(foreground=False, logfile=str(logfile), syslog=False, debug_level=0)
    logsetup.hand_over(65534, 65534, "nobody")
    assert logfile.stat().st_uid == 1234
    assert "it belongs to uid 1234, not root" in logfile.read_text()


def test_background_logs_to_syslog_with_daemon_facility_and_tag(
    syslog_socket: socket.socket,
) -> None:
    configure_logging(foreground=False, logfile=None, syslog=True, debug_level=0).info("synced")
    # <30> = facility daemon (3) * 8 + severity info (6)
    assert syslog_socket.recv(4096) == f"<30>pyntpd[{os.getpid()}]: synced\0".encode()


def test_foreground_with_syslog_logs_to_both(
    syslog_socket: socket.socket, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging(foreground=True, logfile=None, syslog=True, debug_level=0).info("both")
    assert syslog_socket.recv(4096).endswith(b"both\0")
    assert stderr_lines(capsys)[0].endswith("INFO both")


def test_syslog_falls_back_to_stderr_without_dev_log(
    capsys: pytest.CaptureFixture[str], no_syslog: None
) -> None:
    configure_logging(foreground=False, logfile=None, syslog=True, debug_level=0).info("lost?")
    assert stderr_lines(capsys)[0].endswith("INFO lost?")


def test_reconfiguring_replaces_previous_handlers(
    capsys: pytest.CaptureFixture[str], no_syslog: None
) -> None:
    configure_logging(foreground=True, logfile=None, syslog=False, debug_level=0)
    configure_logging(foreground=True, logfile=None, syslog=False, debug_level=0).info("once")
    assert len(stderr_lines(capsys)) == 1


def test_log_once_logs_a_key_only_once(caplog: pytest.LogCaptureFixture) -> None:
    once = LogOnce(logging.getLogger("pyntpd.test"))
    with caplog.at_level(logging.INFO, logger="pyntpd.test"):
        assert once.warning("unreachable", "server %s unreachable", "a")
        assert not once.warning("unreachable", "server %s unreachable", "a")
    assert len(caplog.records) == 1


def test_log_once_logs_again_after_reset_of_its_key(caplog: pytest.LogCaptureFixture) -> None:
    once = LogOnce(logging.getLogger("pyntpd.test"))
    with caplog.at_level(logging.INFO, logger="pyntpd.test"):
        once.info("k", "first")
        assert once.reset("k")
        assert once.info("k", "again")
    assert [r.getMessage() for r in caplog.records] == ["first", "again"]


def test_log_once_keys_are_independent() -> None:
    once = LogOnce(logging.getLogger("pyntpd.test"))
    assert once.error("a", "x")
    assert once.error("b", "x")


def test_log_once_reset_without_key_forgets_all() -> None:
    once = LogOnce(logging.getLogger("pyntpd.test"))
    once.info("a", "x")
    once.info("b", "x")
    once.reset()
    assert once.info("a", "x") and once.info("b", "x")


def test_log_once_forgets_the_oldest_key_beyond_its_limit() -> None:
    once = LogOnce(logging.getLogger("pyntpd.test"), max_keys=2)
    for key in ("a", "b", "c"):
        once.info(key, "x")
    assert once.info("a", "x")
    assert not once.info("c", "x")
