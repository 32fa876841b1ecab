"""Name lookups from a helper process outside the jail (issue 12, item 4): daemon/resolver.

The helper is forked for real here (no chroot: tests/security/test_jail.py runs a jailed
daemon); `answer`, the helper's whole decision, is tested on its own with a fake resolver.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import socket
import time

import pytest

from pyntpd.daemon import resolver
from pyntpd.daemon.resolver import ResolverProcess, answer

V4 = (socket.AF_INET, socket.SOCK_DGRAM, 17, "", ("192.0.2.1", 123))
V6 = (socket.AF_INET6, socket.SOCK_DGRAM, 17, "", ("2001:db8::1", 123, 0, 0))


def request(**fields: object) -> bytes:
    return json.dumps({"id": 7, "host": "ntp.example", "port": 123, "family": 0,
                       **fields}).encode()


def test_the_helper_answers_each_address_once_in_the_resolvers_order() -> None:
    reply = json.loads(answer(request(), lambda *args: [V6, V4, V6]))
    assert reply == {"id": 7, "addresses": ["2001:db8::1", "192.0.2.1"]}


def test_the_helper_passes_the_resolvers_error_on() -> None:
    def fails(*args: object) -> list[tuple[object, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    reply = json.loads(answer(request(), fails))
    assert reply == {"id": 7, "errno": socket.EAI_NONAME, "error": "Name or service not known"}


@pytest.mark.parametrize("data", [
    b"\xff not json", b"[]", request(host=""), request(host="x" * 254), request(port=70000),
    request(family=socket.AF_UNIX), request(id="seven"),
], ids=["garbage", "not-an-object", "empty-name", "long-name", "port", "family", "id"])
def test_a_malformed_request_gets_an_error_reply_and_no_lookup(data: bytes) -> None:
    looked_up: list[object] = []
    reply = json.loads(answer(data, lambda *args: looked_up.append(args) or [V4]))
    assert reply["errno"] == errno.EINVAL and looked_up == []


def test_a_lookup_that_raises_anything_is_an_error_reply_not_the_end_of_the_helper() -> None:
    def broken(*args: object) -> list[tuple[object, ...]]:
        raise ModuleNotFoundError("No module named 'encodings.idna'")

    reply = json.loads(answer(request(), broken))
    assert reply["errno"] == errno.EIO and "ModuleNotFoundError" in reply["error"]


def test_the_forked_helper_resolves_and_ends_when_the_daemon_closes_its_end() -> None:
    helper = ResolverProcess.start(None)
    pid = helper.pid

    async def lookups() -> tuple[list[str], BaseException | None]:
        found = await helper.lookup("localhost", 123, socket.AF_INET)
        try:
            await helper.lookup("no-such-name.invalid", 123, socket.AF_INET)
        except OSError as exc:
            return found, exc
        return found, None

    try:
        found, failure = asyncio.run(lookups())
    finally:
        helper.close()
    assert found == ["127.0.0.1"]
    assert isinstance(failure, socket.gaierror)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reaped by close()


def test_the_helper_holds_no_descriptor_but_its_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as serving:
        serving.bind(("127.0.0.1", 0))
        helper = ResolverProcess.start(None)
        try:
            asyncio.run(helper.lookup("localhost", 123, socket.AF_INET))  # it is running
            fds = os.listdir(f"/proc/{helper.pid}/fd")
            targets = [os.readlink(f"/proc/{helper.pid}/fd/{fd}") for fd in fds]
        finally:
            helper.close()
    assert [t for t in targets if t.startswith("socket:")] == targets[3:]
    assert len(targets) == 4  # stdin, stdout, stderr and its end of the pair


def _wait_dead(pid: int) -> None:
    """Until the process is a zombie (dead, its end of the pair closed, not yet reaped)."""
    for _ in range(500):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                return
        time.sleep(0.01)
    raise AssertionError(f"{pid} did not die")


def test_lookups_go_on_in_process_when_the_helper_is_gone(
        caplog: pytest.LogCaptureFixture) -> None:
    helper = ResolverProcess.start(None)
    os.kill(helper.pid, signal.SIGKILL)
    _wait_dead(helper.pid)

    async def lookups() -> list[list[str]]:
        return [await helper.lookup("localhost", 123, socket.AF_INET) for _ in range(3)]

    with caplog.at_level(logging.ERROR, logger="pyntpd"):
        try:
            answers = asyncio.run(lookups())
        finally:
            helper.close()
    assert answers == [["127.0.0.1"]] * 3
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "the resolver process exited (killed by signal 9)"
    assert sum("resolver process is gone" in m for m in messages) == 1


def test_a_lookup_in_flight_when_the_helper_dies_fails_at_once() -> None:
    helper = ResolverProcess.start(None)
    os.kill(helper.pid, signal.SIGSTOP)  # it holds the request, unanswered

    async def lookup() -> BaseException | None:
        task = asyncio.create_task(helper.lookup("localhost", 123, socket.AF_INET))
        while not helper._pending:
            await asyncio.sleep(0.001)
        os.kill(helper.pid, signal.SIGKILL)
        try:
            await asyncio.wait_for(task, 5)
        except OSError as exc:
            return exc
        return None

    try:
        failure = asyncio.run(lookup())
    finally:
        helper.close()
    assert failure is not None and failure.errno == errno.EPIPE


def test_lookups_beyond_the_bound_are_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resolver, "MAX_PENDING", 2)
    helper = ResolverProcess.start(None)
    os.kill(helper.pid, signal.SIGSTOP)  # a helper stuck in a slow lookup

    async def lookups() -> list[object]:
        tasks = [asyncio.create_task(helper.lookup("localhost", 123, 0)) for _ in range(3)]
        await asyncio.sleep(0)
        third = await asyncio.gather(tasks[2], return_exceptions=True)
        for task in tasks[:2]:
            task.cancel()
        return third

    try:
        (third,) = asyncio.run(lookups())
    finally:
        os.kill(helper.pid, signal.SIGCONT)
        helper.close()
    assert isinstance(third, OSError) and third.errno == errno.EAGAIN
