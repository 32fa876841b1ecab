"""daemon.metrics: the HTTP endpoint in-process, against a fixed state; every bad request
is answered (or closed) and counted, and the server keeps serving."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import stat
from collections.abc import Awaitable, Callable

import pytest

from pyntpd.daemon.metrics import (
    MAX_HEAD,
    BadRequest,
    Endpoints,
    MetricsBindError,
    MetricsServer,
    Slots,
    listen,
    parse_head,
)
from pyntpd.proto.control import ControlSnapshot
from pyntpd.proto.metrics_text import CONTENT_TYPE, Status
from pyntpd.proto.server import ServerCounters

GET = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"


def _state() -> Status:
    return Status.build(ControlSnapshot(stratum=2, leap=0), ServerCounters(received=5),
                        version="pyntpd test", start_time=1.0, now=2.0)


async def _send(port: int, data: bytes, *, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()


def _run(test: Callable[[MetricsServer, int], Awaitable[None]],
         collect: Callable[[], Status] = _state, **kw: float) -> MetricsServer:
    async def main() -> MetricsServer:
        sock = listen("127.0.0.1", 0)
        port = sock.getsockname()[1]
        server = MetricsServer(sock, collect, **kw)  # type: ignore[arg-type]
        await server.start()
        try:
            await asyncio.wait_for(test(server, port), 20)
        finally:
            await server.close()
        return server

    return asyncio.run(main())


def _split(reply: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return lines[0], headers, body


def test_metrics_is_prometheus_text():
    async def test(server: MetricsServer, port: int) -> None:
        status, headers, body = _split(await _send(port, GET))
        assert status == "HTTP/1.1 200 OK"
        assert headers["Content-Type"] == CONTENT_TYPE
        assert headers["Connection"] == "close"
        assert int(headers["Content-Length"]) == len(body)
        assert b"\nntp_system_stratum 2.0\n" in body
        assert b"\nntp_server_packets_received_total 5.0\n" in body

    assert _run(test).outcomes == {"ok": 1}


def test_metrics_is_openmetrics_when_the_scraper_asks_for_it():
    request = (b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: application/"
               b"openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n")

    async def test(server: MetricsServer, port: int) -> None:
        status, headers, body = _split(await _send(port, request))
        assert status == "HTTP/1.1 200 OK"
        assert headers["Content-Type"].startswith("application/openmetrics-text;")
        assert b"\nntp_system_stratum 2.0\n" in body and body.endswith(b"# EOF\n")

    assert _run(test).outcomes == {"ok": 1}


@pytest.mark.parametrize("path", ["/status", "/status.json", "/status?pretty=1"])
def test_status_is_json(path):
    async def test(server: MetricsServer, port: int) -> None:
        request = f"GET {path} HTTP/1.0\r\n\r\n".encode()
        status, headers, body = _split(await _send(port, request))
        assert status == "HTTP/1.1 200 OK" and headers["Content-Type"] == "application/json"
        assert json.loads(body)["system"]["stratum"] == 2

    _run(test)


def test_head_sends_headers_only():
    async def test(server: MetricsServer, port: int) -> None:
        status, headers, body = _split(await _send(port, GET.replace(b"GET", b"HEAD")))
        assert status == "HTTP/1.1 200 OK" and int(headers["Content-Length"]) > 0
        assert body == b""

    _run(test)


def test_unknown_path_is_404_and_other_methods_405():
    async def test(server: MetricsServer, port: int) -> None:
        assert (await _send(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404 ")
        status, headers, _ = _split(await _send(port, b"POST /metrics HTTP/1.1\r\n\r\n"))
        assert status == "HTTP/1.1 405 Method Not Allowed"
        assert headers["Allow"] == "GET, HEAD"

    assert _run(test).outcomes == {"not_found": 1, "method_not_allowed": 1}


@pytest.mark.parametrize("garbage", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS client hello, say
    b"GET /metrics\r\n\r\n",
    b"GET /metrics HTTP/2.0\r\n\r\n",
    b"GET metrics HTTP/1.1\r\n\r\n",
    b"GET /metrics HTTP/1.1\r\nno colon here\r\n\r\n",
    b"GET /m\x00etrics HTTP/1.1\r\n\r\n",
])
def test_garbage_is_400_and_counted(garbage):
    async def test(server: MetricsServer, port: int) -> None:
        assert (await _send(port, garbage)).startswith(b"HTTP/1.1 400 Bad Request")
        assert (await _send(port, GET)).startswith(b"HTTP/1.1 200 ")

    assert _run(test).outcomes == {"bad_request": 1, "ok": 1}


def test_oversized_head_is_refused_and_counted():
    async def test(server: MetricsServer, port: int) -> None:
        huge = b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * (2 * MAX_HEAD) + b"\r\n\r\n"
        assert (await _send(port, huge)).startswith(b"HTTP/1.1 431 ")
        assert (await _send(port, GET)).startswith(b"HTTP/1.1 200 ")

    assert _run(test).outcomes == {"too_large": 1, "ok": 1}


def test_slow_client_times_out_and_others_are_still_served():
    async def test(server: MetricsServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # never finished
        assert (await _send(port, GET)).startswith(b"HTTP/1.1 200 ")
        assert (await asyncio.wait_for(reader.read(), 5)).startswith(b"HTTP/1.1 408 ")
        writer.close()

    assert _run(test, read_timeout=0.3).outcomes == {"ok": 1, "timeout": 1}


def test_client_that_hangs_up_early_is_counted():
    async def test(server: MetricsServer, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /met")
        writer.write_eof()
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        assert (await _send(port, GET)).startswith(b"HTTP/1.1 200 ")

    assert _run(test).outcomes == {"incomplete": 1, "ok": 1}


def test_an_idle_connection_makes_room_for_a_scrape_when_all_slots_are_taken():
    async def test(server: MetricsServer, port: int) -> None:
        idle_reader, idle = await asyncio.open_connection("127.0.0.1", port)
        idle.write(b"GET")  # holds the only slot, never finishes its request
        while server.active == 0:
            await asyncio.sleep(0.01)
        assert (await _send(port, GET)).startswith(b"HTTP/1.1 200 ")
        with contextlib.suppress(ConnectionResetError):  # cut off: EOF or reset
            assert await asyncio.wait_for(idle_reader.read(), 5) == b""
        idle.close()

    assert _run(test, max_connections=1).outcomes == {"evicted": 1, "ok": 1}


def test_slots_make_room_by_cutting_off_the_oldest_connection_still_waiting():
    slots = Slots(3)
    for key in ("a", "b", "c"):
        assert slots.admit(key) == (True, None)
    slots.mark("a", Slots.ANSWERED)
    assert slots.admit("d") == (True, "b")  # the oldest that sent nothing yet
    assert slots.admit("e") == (True, "c")
    assert slots.admit("f") == (True, "d")
    assert len(slots) == 3 and "a" in slots


def test_slots_cut_off_an_answered_connection_only_when_none_is_waiting():
    slots = Slots(2)
    slots.admit("a")
    slots.admit("b")
    slots.mark("a", Slots.ANSWERED)
    slots.mark("b", Slots.ANSWERED)
    assert slots.admit("c") == (True, "a")


def test_slots_never_cut_off_a_connection_being_answered():
    slots = Slots(2)
    slots.admit("a")
    slots.admit("b")
    slots.mark("a", Slots.ANSWERING)
    slots.mark("b", Slots.ANSWERING)
    assert slots.admit("c") == (False, None)
    slots.release("a")
    assert slots.admit("c") == (True, None)


class _HugeReply(MetricsServer):
    def _render(self, route: str, *args: bool) -> bytes:
        self.count("ok")
        return b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * (64 << 20)  # beyond any socket buffer


def test_a_connection_ends_at_its_deadline_from_accept_even_if_it_never_reads():
    async def test(server: MetricsServer, port: int) -> None:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(GET)  # and never reads the reply
        while not server.outcomes.get("deadline"):
            await asyncio.sleep(0.02)
        writer.close()

    async def main() -> tuple[dict[str, int], float]:
        sock = listen("127.0.0.1", 0)
        server = _HugeReply(sock, _state, connection_timeout=0.5)
        await server.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await asyncio.wait_for(test(server, sock.getsockname()[1]), 5)
        finally:
            await server.close()
        return server.outcomes, loop.time() - started

    outcomes, took = asyncio.run(main())
    assert outcomes == {"ok": 1, "deadline": 1}
    assert took < 2.0  # the deadline, not WRITE_TIMEOUT (5 s) on the stalled write


def test_a_failing_state_collection_is_500_and_the_server_survives():
    calls = []

    def collect() -> Status:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return _state()

    async def test(server: MetricsServer, port: int) -> None:
        assert (await _send(port, GET)).startswith(b"HTTP/1.1 500 ")
        assert (await _send(port, GET)).startswith(b"HTTP/1.1 200 ")

    assert _run(test, collect).outcomes == {"error": 1, "ok": 1}


def test_outcomes_are_exported_on_the_next_scrape():
    async def test(server: MetricsServer, port: int) -> None:
        await _send(port, b"nonsense\r\n\r\n")
        _, _, body = _split(await _send(port, GET))
        assert b'ntp_metrics_http_requests_total{outcome="bad_request"} 1.0\n' in body

    _run(test)


def test_port_in_use_is_a_clear_error():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(MetricsBindError) as info:
            listen("127.0.0.1", port)
    assert str(info.value) == (f"cannot serve metrics on 127.0.0.1:{port} (--metrics): "
                               "Address already in use")


def test_ipv6_loopback_listens_ipv6_only():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this host")
    sock = listen("::1", 0)
    try:
        assert sock.family == socket.AF_INET6
        assert sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1
    finally:
        sock.close()


def test_parse_head_strips_the_query_string():
    assert parse_head(b"GET /status?x=1 HTTP/1.1\r\nA: b\r\n\r\n") == ("GET", "/status", "")


def test_parse_head_reads_the_accept_header_whatever_its_case():
    head = b"GET /metrics HTTP/1.1\r\naCCept:  text/plain \r\n\r\n"
    assert parse_head(head) == ("GET", "/metrics", "text/plain")


def test_parse_head_refuses_a_bare_line_feed_request():
    with pytest.raises(BadRequest):
        parse_head(b"GET /metrics HTTP/1.1\nHost: x\r\n\r\n")


# --- the Unix status socket ------------------------------------------------------------

def test_status_socket_is_created_0600(tmp_path):
    path = str(tmp_path / "status.sock")
    endpoints = Endpoints(None, path)
    try:
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert stat.S_IMODE(os.lstat(path).st_mode) == 0o600
    finally:
        endpoints.release()
    assert not os.path.exists(path)


def test_status_socket_serves_the_json_status(tmp_path):
    path = str(tmp_path / "status.sock")

    async def main() -> bytes:
        endpoints = Endpoints(None, path)
        await endpoints.start(_state)
        try:
            reader, writer = await asyncio.open_unix_connection(path)
            data = await asyncio.wait_for(reader.read(), 5)
            writer.close()
            return data
        finally:
            await endpoints.stop()

    assert json.loads(asyncio.run(main()))["system"]["stratum"] == 2
    assert not os.path.exists(path)


def test_status_socket_never_replaces_a_symlink_or_a_file(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me")
    link = tmp_path / "status.sock"
    link.symlink_to(target)
    with pytest.raises(MetricsBindError, match="not a socket"):
        Endpoints(None, str(link))
    with pytest.raises(MetricsBindError, match="not a socket"):
        Endpoints(None, str(target))
    assert link.is_symlink() and target.read_text() == "keep me"


def test_stale_status_socket_is_replaced(tmp_path):
    path = str(tmp_path / "status.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()  # left behind, nobody listening
    Endpoints(None, path).release()
    assert not os.path.exists(path)


def test_status_socket_in_use_is_refused(tmp_path):
    path = str(tmp_path / "status.sock")
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(path)
        live.listen()
        with pytest.raises(MetricsBindError, match="another process is listening"):
            Endpoints(None, path)
        assert os.path.exists(path)


def test_worker_release_keeps_the_path(tmp_path):
    path = str(tmp_path / "status.sock")
    endpoints = Endpoints(None, path)
    endpoints.release(keep_path=True)
    assert os.path.exists(path)


def test_failed_status_socket_closes_the_tcp_listener(tmp_path):
    (tmp_path / "file").write_text("")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(MetricsBindError):
        Endpoints(("127.0.0.1", port), str(tmp_path / "file"))
    listen("127.0.0.1", port).close()  # free again
