"""Every drop happens in a forked child: the pytest process itself must stay root."""

from __future__ import annotations

import json
import os
import pwd
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pyntpd.daemon.privileges import (
    CAP_SYS_TIME,
    PrivilegeError,
    chroot_to,
    current_capabilities,
    drop_privileges,
    parse_user_spec,
    resolve_identity,
)

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")

NOBODY = pwd.getpwnam("nobody")
SYS_TIME = 1 << CAP_SYS_TIME


def in_child(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run fn in a forked child; return its dict, or {"error": type, "message": str}."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(rfd)
            try:
                result = fn()
            except Exception as exc:
                result = {"error": type(exc).__name__, "message": str(exc)}
            os.write(wfd, json.dumps(result).encode())
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(wfd)
    with os.fdopen(rfd, "rb") as r:
        data = r.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "child crashed"
    return json.loads(data)


def state() -> dict[str, Any]:
    return {
        "resuid": os.getresuid(),
        "resgid": os.getresgid(),
        "groups": os.getgroups(),
        "caps": current_capabilities(),
    }


def dropped(user: str, group: str | None = None, keep_sys_time: bool = True) -> dict[str, Any]:
    def child() -> dict[str, Any]:
        drop_privileges(user, group, keep_sys_time)
        return state()

    return in_child(child)


@pytest.mark.needs_sys_time
@needs_root
def test_drop_becomes_nobody_in_real_effective_and_saved_ids() -> None:
    s = dropped("nobody", "nogroup")
    assert s["resuid"] == [NOBODY.pw_uid] * 3
    assert s["resgid"] == [NOBODY.pw_gid] * 3


@pytest.mark.needs_sys_time
@needs_root
def test_drop_leaves_only_the_target_group_as_supplementary_group() -> None:
    assert dropped("nobody", "nogroup")["groups"] == [NOBODY.pw_gid]


@pytest.mark.needs_sys_time
@needs_root
def test_drop_keeps_only_cap_sys_time_effective_and_permitted() -> None:
    caps = dropped("nobody", "nogroup")["caps"]
    assert caps["CapEff"] == SYS_TIME
    assert caps["CapPrm"] == SYS_TIME


@pytest.mark.needs_sys_time
@needs_root
def test_drop_shrinks_bounding_set_to_cap_sys_time() -> None:
    assert dropped("nobody", "nogroup")["caps"]["CapBnd"] == SYS_TIME


@pytest.mark.needs_sys_time
@needs_root
def test_drop_clears_inheritable_and_ambient_sets() -> None:
    caps = dropped("nobody", "nogroup")["caps"]
    assert caps["CapInh"] == 0
    assert caps.get("CapAmb", 0) == 0


@pytest.mark.needs_sys_time
@needs_root
def test_drop_sets_no_new_privs() -> None:
    assert dropped("nobody", "nogroup")["caps"]["NoNewPrivs"] == 1


@needs_root
def test_drop_without_keep_sys_time_leaves_no_capabilities() -> None:
    caps = dropped("nobody", "nogroup", keep_sys_time=False)["caps"]
    assert (caps["CapEff"], caps["CapPrm"], caps["CapBnd"]) == (0, 0, 0)


@pytest.mark.needs_sys_time
@needs_root
def test_group_defaults_to_the_users_primary_group() -> None:
    s = dropped("nobody")
    assert s["resgid"] == [NOBODY.pw_gid] * 3
    assert s["groups"] == [NOBODY.pw_gid]


@pytest.mark.needs_sys_time
@needs_root
def test_numeric_uid_and_unlisted_numeric_gid_are_accepted() -> None:
    s = dropped(str(NOBODY.pw_uid), "4242")
    assert s["resuid"] == [NOBODY.pw_uid] * 3
    assert s["resgid"] == [4242] * 3
    assert s["groups"] == [4242]


@pytest.mark.needs_sys_time
@needs_root
def test_drop_accepts_identity_resolved_beforehand() -> None:
    ident = resolve_identity("nobody", "nogroup")

    def child() -> dict[str, Any]:
        drop_privileges(ident)
        return state()

    assert in_child(child)["resuid"] == [NOBODY.pw_uid] * 3


@pytest.mark.needs_sys_time
@needs_root
def test_drop_refuses_when_not_root() -> None:
    def child() -> dict[str, Any]:
        drop_privileges("nobody", "nogroup")
        drop_privileges("nobody", "nogroup")
        return {}

    result = in_child(child)
    assert result["error"] == "PrivilegeError"
    assert "needs root" in result["message"]


@needs_root
def test_drop_refuses_in_a_multithreaded_process_and_stays_unchanged() -> None:
    def child() -> dict[str, Any]:
        stop = threading.Event()
        threading.Thread(target=stop.wait, daemon=True).start()
        try:
            drop_privileges("nobody", "nogroup")
        except PrivilegeError as exc:
            return {"message": str(exc), **state()}
        finally:
            stop.set()
        return {}

    result = in_child(child)
    assert "several threads" in result["message"]
    assert result["resuid"] == [0, 0, 0]


def test_unknown_user_is_a_privilege_error() -> None:
    def child() -> dict[str, Any]:
        drop_privileges("no-such-user-pyntpd")
        return {}

    result = in_child(child)
    assert result == {
        "error": "PrivilegeError",
        "message": "-u: cannot find user 'no-such-user-pyntpd'",
    }


def test_unknown_numeric_uid_is_a_privilege_error() -> None:
    uid = next(u for u in range(4_000_000_000, 3_999_000_000, -1) if not _uid_exists(u))
    with pytest.raises(PrivilegeError, match=f"cannot find user ID '{uid}'"):
        resolve_identity(str(uid))


def _uid_exists(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True


def test_unknown_group_is_a_privilege_error() -> None:
    with pytest.raises(PrivilegeError, match="cannot find group 'no-such-group-pyntpd'"):
        resolve_identity("nobody", "no-such-group-pyntpd")


def test_parse_user_spec_splits_user_and_group() -> None:
    assert parse_user_spec("ntp:ntp") == ("ntp", "ntp")


def test_parse_user_spec_without_group_leaves_it_to_the_default() -> None:
    assert parse_user_spec("ntp") == ("ntp", None)


@pytest.mark.parametrize("spec", ["", ":ntp", "ntp:"])
def test_parse_user_spec_rejects_empty_parts(spec: str) -> None:
    with pytest.raises(PrivilegeError):
        parse_user_spec(spec)


def test_current_capabilities_reports_the_three_sets() -> None:
    caps = current_capabilities()
    assert {"CapEff", "CapPrm", "CapBnd"} <= caps.keys()
    assert all(isinstance(v, int) for v in caps.values())


@needs_root
def test_chroot_confines_the_view_to_the_directory(tmp_path: Path) -> None:
    (tmp_path / "marker").write_text("inside")

    def child() -> dict[str, Any]:
        chroot_to(tmp_path)
        return {"cwd": os.getcwd(), "marker": Path("/marker").read_text()}

    assert in_child(child) == {"cwd": "/", "marker": "inside"}


def test_chroot_to_missing_directory_is_a_privilege_error(tmp_path: Path) -> None:
    def child() -> dict[str, Any]:
        chroot_to(tmp_path / "missing")
        return {}

    result = in_child(child)
    assert result["error"] == "PrivilegeError"
    assert "No such file or directory" in result["message"]


@pytest.mark.needs_sys_time
@needs_root
def test_chroot_refuses_when_not_root() -> None:
    def child() -> dict[str, Any]:
        drop_privileges("nobody", "nogroup")
        # "/" because nobody can enter it; pytest's tmp_path is inside a 0700 directory.
        chroot_to("/")
        return {}

    result = in_child(child)
    assert result["error"] == "PrivilegeError"
    assert "chroot needs root" in result["message"]
