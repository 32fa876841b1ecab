from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyntpd.daemon import pidfile as pidfile_mod
from pyntpd.daemon.pidfile import PidFile, PidFileError, PidState, pid_alive, read_pidfile


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "pyntpd.pid"


def _spawn(argv: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(argv)
    try:
        # vfork lets Popen return before execve has set up the new command line.
        deadline = time.monotonic() + 5
        while not Path(f"/proc/{proc.pid}/cmdline").read_bytes():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        yield proc
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def ntpd_like() -> Iterator[subprocess.Popen[bytes]]:
    # A live process whose command line names pyntpd, as a running daemon's would.
    for proc in _spawn(["bash", "-c", "exec -a /usr/sbin/pyntpd sleep 60"]):
        # Popen returns once bash runs; wait for its exec into the renamed sleep.
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/cmdline").read_bytes() != b"/usr/sbin/pyntpd\x0060\x00":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield proc


@pytest.fixture
def unrelated() -> Iterator[subprocess.Popen[bytes]]:
    yield from _spawn(["sleep", "60"])


@pytest.fixture
def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_acquire_writes_pid_and_newline(path: Path) -> None:
    PidFile(path).acquire()
    assert path.read_text() == f"{os.getpid()}\n"


def test_acquire_sets_mode_0644_whatever_the_umask(path: Path) -> None:
    old = os.umask(0o077)
    try:
        PidFile(path).acquire()
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o7777 == 0o644


def test_acquire_refuses_when_a_running_ntpd_holds_the_file(
    path: Path, ntpd_like: subprocess.Popen[bytes]
) -> None:
    path.write_text(f"{ntpd_like.pid}\n")
    with pytest.raises(PidFileError) as err:
        PidFile(path).acquire()
    assert str(err.value) == f"pyntpd already running as pid {ntpd_like.pid} (pidfile {path})"
    assert path.read_text() == f"{ntpd_like.pid}\n"


def test_acquire_replaces_file_of_dead_pid(path: Path, dead_pid: int) -> None:
    path.write_text(f"{dead_pid}\n")
    PidFile(path).acquire()
    assert read_pidfile(path) == os.getpid()


def test_acquire_replaces_file_with_garbage(path: Path) -> None:
    path.write_text("not a pid\n")
    PidFile(path).acquire()
    assert read_pidfile(path) == os.getpid()


def test_acquire_replaces_oversized_file(path: Path) -> None:
    path.write_text("1" * 100)
    PidFile(path).acquire()
    assert read_pidfile(path) == os.getpid()


def test_acquire_replaces_file_naming_a_reused_pid_of_another_program(
    path: Path, unrelated: subprocess.Popen[bytes]
) -> None:
    path.write_text(f"{unrelated.pid}\n")
    PidFile(path).acquire()
    assert read_pidfile(path) == os.getpid()


def test_acquire_replaces_file_naming_this_process(path: Path) -> None:
    # The container case: the daemon is pid 1 on every start.
    path.write_text(f"{os.getpid()}\n")
    PidFile(path).acquire()
    assert read_pidfile(path) == os.getpid()


def test_stale_pidfile_removal_is_logged(
    path: Path, dead_pid: int, caplog: pytest.LogCaptureFixture
) -> None:
    path.write_text(f"{dead_pid}\n")
    with caplog.at_level(logging.WARNING, logger="pyntpd.pidfile"):
        PidFile(path).acquire()
    assert f"stale pidfile {path}" in caplog.text
    assert f"pid {dead_pid} is not running" in caplog.text


def test_acquire_refuses_symlink_and_leaves_its_target_alone(path: Path, tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    path.symlink_to(target)
    with pytest.raises(PidFileError, match="is a symlink; refusing to follow it"):
        PidFile(path).acquire()
    assert target.read_text() == "keep me"
    assert path.is_symlink()


def test_acquire_refuses_dangling_symlink_without_creating_its_target(
    path: Path, tmp_path: Path
) -> None:
    target = tmp_path / "created-by-attacker-choice"
    path.symlink_to(target)
    with pytest.raises(PidFileError, match="symlink"):
        PidFile(path).acquire()
    assert not target.exists()


def test_acquire_refuses_directory(path: Path) -> None:
    path.mkdir()
    with pytest.raises(PidFileError, match="is a directory"):
        PidFile(path).acquire()


def test_acquire_refuses_fifo_without_blocking(path: Path) -> None:
    os.mkfifo(path)
    with pytest.raises(PidFileError, match="not a regular file"):
        PidFile(path).acquire()


def test_acquire_reports_missing_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "pyntpd.pid"
    with pytest.raises(PidFileError, match=f"directory {tmp_path / 'missing'} does not exist"):
        PidFile(path).acquire()


def test_acquire_fails_if_file_reappears_after_stale_removal(
    path: Path, dead_pid: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    path.write_text(f"{dead_pid}\n")
    real_unlink = os.unlink

    def racing_unlink(p: str) -> None:
        real_unlink(p)
        Path(p).write_text("99999\n")  # another starter wins the race

    monkeypatch.setattr(pidfile_mod.os, "unlink", racing_unlink)
    with pytest.raises(PidFileError, match="recreated"):
        PidFile(path).acquire()


def test_release_removes_own_pidfile(path: Path) -> None:
    pf = PidFile(path)
    pf.acquire()
    pf.release()
    assert not path.exists()


def test_release_keeps_file_that_names_another_pid(path: Path) -> None:
    pf = PidFile(path)
    pf.acquire()
    path.write_text("12345\n")
    pf.release()
    assert path.read_text() == "12345\n"


def test_release_without_acquire_leaves_file_alone(path: Path) -> None:
    path.write_text(f"{os.getpid()}\n")
    PidFile(path).release()
    assert path.exists()


def test_context_manager_holds_file_inside_and_removes_it_after(path: Path) -> None:
    with PidFile(path) as pf:
        assert pf.held
        assert read_pidfile(path) == os.getpid()
    assert not path.exists()


def test_read_pidfile_returns_none_when_missing(path: Path) -> None:
    assert read_pidfile(path) is None


@pytest.mark.parametrize("content", ["", "abc\n", "0\n", "-5\n", "12 34\n", "99999999999\n"])
def test_read_pidfile_returns_none_for_invalid_content(path: Path, content: str) -> None:
    path.write_text(content)
    assert read_pidfile(path) is None


def test_read_pidfile_tolerates_missing_newline(path: Path) -> None:
    path.write_text("4321")
    assert read_pidfile(path) == 4321


def test_read_pidfile_refuses_symlink(path: Path, tmp_path: Path) -> None:
    (tmp_path / "other").write_text("1\n")
    path.symlink_to(tmp_path / "other")
    with pytest.raises(PidFileError, match="symlink"):
        read_pidfile(path)


def test_pid_alive_for_this_process() -> None:
    assert pid_alive(os.getpid())


def test_pid_alive_false_for_dead_pid(dead_pid: int) -> None:
    assert not pid_alive(dead_pid)


@pytest.mark.parametrize("pid", [0, -1, -os.getpid()])
def test_pid_alive_false_for_group_addressing_pids(pid: int) -> None:
    assert not pid_alive(pid)


def test_pid_alive_counts_permission_denied_as_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    def kill(pid: int, sig: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(pidfile_mod.os, "kill", kill)
    assert pid_alive(1)


# --- inspect_pidfile: the one judgement pyntpctl and PidFile share ----------------------------


@pytest.fixture
def zombie() -> Iterator[int]:
    # An exited child not yet reaped: it still has a pid, but holds nothing.
    proc = subprocess.Popen(["true"])
    try:
        deadline = time.monotonic() + 5
        while Path(f"/proc/{proc.pid}/stat").read_bytes().rpartition(b") ")[2][:1] != b"Z":
            assert time.monotonic() < deadline
            time.sleep(0.01)
        yield proc.pid
    finally:
        proc.wait()


def test_inspect_without_a_file_is_none(path: Path) -> None:
    assert pidfile_mod.inspect_pidfile(path).state is PidState.NONE


def test_inspect_live_ntp_daemon(path: Path, ntpd_like: subprocess.Popen[bytes]) -> None:
    path.write_text(f"{ntpd_like.pid}\n")
    status = pidfile_mod.inspect_pidfile(path)
    assert (status.state, status.pid, status.stale) == (PidState.LIVE, ntpd_like.pid, False)


def test_inspect_dead_pid_is_stale(path: Path, dead_pid: int) -> None:
    path.write_text(f"{dead_pid}\n")
    status = pidfile_mod.inspect_pidfile(path)
    assert (status.state, status.pid) == (PidState.STALE, dead_pid)
    assert status.reason == f"pid {dead_pid} is not running"


def test_inspect_zombie_is_stale(path: Path, zombie: int) -> None:
    path.write_text(f"{zombie}\n")
    assert pidfile_mod.inspect_pidfile(path).state is PidState.STALE


def test_inspect_unrelated_live_process_is_not_ours(
    path: Path, unrelated: subprocess.Popen[bytes]
) -> None:
    path.write_text(f"{unrelated.pid}\n")
    status = pidfile_mod.inspect_pidfile(path)
    assert (status.state, status.stale) == (PidState.NOT_OURS, True)
    assert status.reason == f"pid {unrelated.pid} (sleep) is not an NTP daemon (pid reused)"


@pytest.mark.parametrize("content", [b"", b"\n", b"abc\n", b"-5\n", b"0\n", b"99999999\n",
                                     b"1" * 100])
def test_inspect_garbage_is_garbage(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    status = pidfile_mod.inspect_pidfile(path)
    assert (status.state, status.pid, status.stale) == (PidState.GARBAGE, None, True)


def test_inspect_own_pid_counts_as_stale_only_for_the_starter(path: Path) -> None:
    path.write_text(f"{os.getpid()}\n")
    assert pidfile_mod.inspect_pidfile(path, own_pid=os.getpid()).state is PidState.STALE


def test_inspect_symlink_is_never_followed(path: Path, tmp_path: Path,
                                           ntpd_like: subprocess.Popen[bytes]) -> None:
    target = tmp_path / "target"
    target.write_text(f"{ntpd_like.pid}\n")
    path.symlink_to(target)
    status = pidfile_mod.inspect_pidfile(path)
    assert (status.state, status.pid, status.stale) == (PidState.SYMLINK, None, False)
    assert "symlink" in status.reason


def test_inspect_directory_is_unreadable(path: Path) -> None:
    path.mkdir()
    status = pidfile_mod.inspect_pidfile(path)
    assert (status.state, status.reason) == (PidState.UNREADABLE, f"pidfile {path} is a directory")


def test_remove_stale_removes_the_file_it_judged(path: Path, dead_pid: int) -> None:
    path.write_text(f"{dead_pid}\n")
    assert pidfile_mod.remove_stale(pidfile_mod.inspect_pidfile(path))
    assert not path.exists()


def test_remove_stale_keeps_a_file_replaced_since(path: Path, dead_pid: int) -> None:
    path.write_text(f"{dead_pid}\n")
    status = pidfile_mod.inspect_pidfile(path)
    replacement = path.with_name("new")
    replacement.write_text("12345\n")
    replacement.rename(path)  # a racing starter's file: another inode
    assert not pidfile_mod.remove_stale(status)
    assert path.read_text() == "12345\n"


def test_remove_stale_never_removes_a_live_daemons_file(
    path: Path, ntpd_like: subprocess.Popen[bytes]
) -> None:
    path.write_text(f"{ntpd_like.pid}\n")
    assert not pidfile_mod.remove_stale(pidfile_mod.inspect_pidfile(path))
    assert path.exists()


def test_pid_running_is_false_for_a_zombie(zombie: int) -> None:
    assert pid_alive(zombie) and not pidfile_mod.pid_running(zombie)


def test_process_name_is_argv0(unrelated: subprocess.Popen[bytes]) -> None:
    assert pidfile_mod.process_name(unrelated.pid) == "sleep"


# --- a panic exit's note ----------------------------------------------------------------------


def test_a_panic_note_is_a_second_line_and_the_file_outlives_the_release(path: Path) -> None:
    pidfile = PidFile(path, pid=4321)
    pidfile.acquire()
    pidfile.note_panic()
    pidfile.release()
    assert path.read_bytes() == b"4321\npanic\n"


def test_inspect_a_dead_daemons_panic_note_is_stale_and_says_panic(
        path: Path, dead_pid: int) -> None:
    path.write_text(f"{dead_pid}\npanic\n")
    status = pidfile_mod.inspect_pidfile(path)
    assert (status.state, status.pid, status.stale, status.panicked) == (
        PidState.STALE, dead_pid, True, True)
    assert status.reason == f"pid {dead_pid} exited in panic"


def test_inspect_a_panic_note_of_a_live_daemon_is_live(
        path: Path, ntpd_like: subprocess.Popen[bytes]) -> None:
    path.write_text(f"{ntpd_like.pid}\npanic\n")
    status = pidfile_mod.inspect_pidfile(path)
    assert (status.state, status.panicked) == (PidState.LIVE, False)


@pytest.mark.parametrize("content", [b"123\npanic\nmore\n", b"123\nPANIC\n", b"123\nexit\n",
                                     b"panic\n123\n"])
def test_inspect_any_other_second_line_is_garbage(path: Path, content: bytes) -> None:
    path.write_bytes(content)
    assert pidfile_mod.inspect_pidfile(path).state is PidState.GARBAGE
