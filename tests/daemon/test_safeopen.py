"""daemon/safeopen: root opens a path without following a link another user could plant
(issue 12, item 5). Ownership is set with chown, so these run as root."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from pyntpd.daemon.safeopen import UntrustedPath, open_trusted
from tests.faults.harness import require_root

OTHER = 65534  # nobody
FLAGS = os.O_WRONLY | os.O_CREAT | os.O_APPEND


@pytest.fixture(autouse=True)
def _root() -> None:
    require_root()


def _write(path: Path, text: str = "line\n") -> None:
    fd = open_trusted(str(path), FLAGS, 0o640)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def test_a_path_without_links_is_opened_and_created(tmp_path: Path) -> None:
    _write(tmp_path / "log")
    assert (tmp_path / "log").read_text() == "line\n"


def test_a_link_in_a_directory_another_user_owns_is_not_followed(tmp_path: Path) -> None:
    owned = tmp_path / "owned"
    owned.mkdir()
    os.chown(owned, OTHER, OTHER)
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (owned / "sub").symlink_to(target)
    os.lchown(owned / "sub", OTHER, OTHER)
    with pytest.raises(UntrustedPath, match=r"/owned/sub is a symbolic link that uid 65534"):
        _write(owned / "sub" / "log")
    assert list(target.iterdir()) == []


def test_even_a_root_link_in_a_directory_another_user_owns_is_not_followed(
        tmp_path: Path) -> None:
    owned = tmp_path / "owned"
    owned.mkdir()
    (owned / "sub").symlink_to(tmp_path)  # root's, but the owner may replace it
    os.chown(owned, OTHER, OTHER)
    with pytest.raises(UntrustedPath):
        _write(owned / "sub" / "log")


def test_a_root_link_in_a_directory_only_root_writes_is_followed(tmp_path: Path) -> None:
    """Like /var/run -> /run: only root could have put it there."""
    real = tmp_path / "real"
    real.mkdir()
    tmp_path.chmod(0o755)
    (tmp_path / "alias").symlink_to("real")
    _write(tmp_path / "alias" / "log")
    assert (real / "log").read_text() == "line\n"


def test_in_a_sticky_directory_only_roots_own_links_are_followed(tmp_path: Path) -> None:
    sticky = tmp_path / "tmp"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (tmp_path / "real").mkdir()
    (sticky / "roots").symlink_to(tmp_path / "real")
    (sticky / "users").symlink_to(tmp_path / "real")
    os.lchown(sticky / "users", OTHER, OTHER)
    _write(sticky / "roots" / "log")
    with pytest.raises(UntrustedPath):
        _write(sticky / "users" / "log")


def test_the_last_component_is_never_followed(tmp_path: Path) -> None:
    (tmp_path / "target").write_text("")
    (tmp_path / "log").symlink_to(tmp_path / "target")
    with pytest.raises(OSError) as failure:
        _write(tmp_path / "log")
    assert failure.value.errno == errno.ELOOP
    assert (tmp_path / "target").read_text() == ""


def test_relative_links_and_dot_dot_resolve_as_the_kernel_would(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "c").mkdir()
    (tmp_path / "a" / "b" / "up").symlink_to("../../c")
    _write(tmp_path / "a" / "b" / "up" / "log")
    assert (tmp_path / "c" / "log").exists()


def test_a_link_loop_ends_with_eloop(tmp_path: Path) -> None:
    tmp_path.chmod(0o755)
    (tmp_path / "x").symlink_to("y")
    (tmp_path / "y").symlink_to("x")
    with pytest.raises(OSError) as failure:
        _write(tmp_path / "x" / "log")
    assert failure.value.errno == errno.ELOOP
