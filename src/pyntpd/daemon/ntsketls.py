"""NTS-KE over TLS 1.3: the server (TCP 4460) and the client.

The standard library's ssl module has no TLS exporter (DESIGN.md §3), so TLS is pyOpenSSL
in memory-BIO mode: asyncio owns the TCP socket, the bytes go through `bio_write`/`bio_read`,
and nothing blocks the loop. The server runs in a process of its own (daemon.ntskehelper),
so a flood of handshakes costs that process CPU and never the loop that serves time.

A hostile client costs a bounded amount. At accept, before any TLS: `restrict ignore` and
`noserve` refuse the connection; proto.ntskeslots shares the sessions out (per address, per
/24 or /64, in all; a newcomer displaces the session whose client has kept it waiting
longest rather than being refused) and limits how fast one address or network may open them. Each
session has a deadline (`SESSION_TIMEOUT` from accept to the response, however slowly the
client trickles bytes: chrony's 2 s) and a byte budget for the handshake and the request;
the request itself is bounded by proto.ntske's limits. Every refusal is counted by reason.

The certificate and key are loaded into a new TLS context on SIGHUP (`reload`); sessions
already running keep the context they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import socket
import ssl
import stat
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from cryptography import x509
from OpenSSL import SSL, crypto

from pyntpd.proto import ntske
from pyntpd.proto.access import IGNORE, NOSERVE, RestrictTable
from pyntpd.proto.nts import KEY_LENGTH, CookieKeys, NtsSession
from pyntpd.proto.ntskeslots import KeSlots, Refusal, SlotLimits

log = logging.getLogger("pyntpd")

SESSION_TIMEOUT = 2.0  # seconds from accept to the response, whatever the client does
MAX_SESSION_BYTES = 32768  # TLS bytes a client may send (handshake + request)
CLIENT_TIMEOUT = 10.0
LISTEN_BACKLOG = 256
FOLLOW_INTERVAL = 2.0  # s between a worker's looks at the cookie key file
_READ = 16384


class KeFailure(Exception):
    """An NTS-KE exchange that did not give us keys (client side)."""


# --- TLS contexts --------------------------------------------------------------------------


def _tls13(method_context: SSL.Context) -> SSL.Context:
    method_context.set_min_proto_version(SSL.TLS1_3_VERSION)
    return method_context


def server_context(cert: str, key: str) -> SSL.Context:
    """Raises SSL.Error / OSError with OpenSSL's reason when the files are unusable."""
    context = _tls13(SSL.Context(SSL.TLS_METHOD))
    context.use_certificate_chain_file(cert)
    context.use_privatekey_file(key)
    context.check_privatekey()

    def select(_conn: SSL.Connection, offered: list[bytes]) -> bytes:
        return ntske.ALPN if ntske.ALPN in offered else SSL.NO_OVERLAPPING_PROTOCOLS

    context.set_alpn_select_callback(select)
    return context


def client_context(ca: str | None) -> SSL.Context:
    preloaded = _preloaded.get(ca)
    if preloaded is not None:
        return preloaded
    context = _tls13(SSL.Context(SSL.TLS_METHOD))
    context.set_verify(SSL.VERIFY_PEER, None)
    if ca is None:
        context.set_default_verify_paths()
    elif os.path.isdir(ca):
        context.load_verify_locations(None, ca)
    else:
        context.load_verify_locations(ca)
    context.set_alpn_protos([ntske.ALPN])
    return context


_preloaded: dict[str | None, SSL.Context] = {}
MAX_CA_FILES = 4096


def _ca_files(ca: str | None) -> list[str]:
    """The files that hold the trust anchors `ca` names (None: the system's)."""
    if ca is None:
        paths = ssl.get_default_verify_paths()  # honours SSL_CERT_FILE / SSL_CERT_DIR
        cafile, capath = paths.cafile, paths.capath
    elif os.path.isdir(ca):
        cafile, capath = None, ca
    else:
        cafile, capath = ca, None
    files = [cafile] if cafile else []
    if capath:
        with contextlib.suppress(OSError):
            files += sorted(os.path.join(capath, name) for name in os.listdir(capath))
    unique = dict.fromkeys(os.path.realpath(f) for f in files)  # a hashed dir is links
    return [f for f in unique if os.path.isfile(f)][:MAX_CA_FILES]


def preload_client_context(ca: str | None) -> None:
    """Read the trust anchors for NTS-KE now (before -i and -u), every certificate into
    memory: OpenSSL reads a CA directory, the system's included, lazily, one file per
    handshake, which fails once /etc/ssl is outside the jail or unreadable by the -u user.
    What cannot be read now is read later, as without a jail."""
    context = _tls13(SSL.Context(SSL.TLS_METHOD))
    context.set_verify(SSL.VERIFY_PEER, None)
    context.set_alpn_protos([ntske.ALPN])
    store = context.get_cert_store()
    assert store is not None
    loaded = 0
    for path in _ca_files(ca):
        try:
            with open(path, "rb") as f, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # old roots with odd serial numbers
                certificates = x509.load_pem_x509_certificates(f.read(1 << 22))
        except (OSError, ValueError):
            continue  # not PEM (a CRL, a README): OpenSSL would skip it too
        for certificate in certificates:
            with contextlib.suppress(crypto.Error):
                store.add_cert(crypto.X509.from_cryptography(certificate))
                loaded += 1
    if loaded:
        _preloaded[ca] = context


def _name_matches(pattern: str, host: str) -> bool:
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        head, _, rest = host.partition(".")
        return bool(head) and rest == pattern[2:]
    return pattern == host


def certificate_matches(cert: x509.Certificate, host: str) -> bool:
    """RFC 6125 in brief: the host against the certificate's subjectAltName (IP or DNS)."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return any(_name_matches(n, host) for n in names.get_values_for_type(x509.DNSName))
    return address in names.get_values_for_type(x509.IPAddress)


# --- the TLS pump --------------------------------------------------------------------------


class _TlsProtocol(asyncio.Protocol):
    """TCP bytes <-> a pyOpenSSL connection in memory-BIO mode; subclasses speak NTS-KE."""

    def __init__(self, conn: SSL.Connection, limits: ntske.Limits) -> None:
        self.conn = conn
        self.reader = ntske.MessageReader(limits)
        self.transport: asyncio.Transport | None = None
        self.handshaken = False
        self.closed = False
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._pump()

    def data_received(self, data: bytes) -> None:
        self.received += len(data)
        if self.closed:
            return
        try:
            self.conn.bio_write(data)
        except SSL.Error as exc:
            self.fail(f"TLS: {exc}")
            return
        self._pump()

    def eof_received(self) -> bool:
        if not self.closed:
            try:
                self.reader.eof()
            except ntske.NtsKeError as exc:
                self.on_error(exc)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.finished()

    def _flush(self) -> None:
        while True:
            try:
                chunk = self.conn.bio_read(_READ)
            except SSL.WantReadError:
                return
            if not chunk or self.transport is None or self.transport.is_closing():
                return
            self.transport.write(chunk)

    def _pump(self) -> None:
        try:
            if not self.handshaken:
                try:
                    self.conn.do_handshake()
                except SSL.WantReadError:
                    self._flush()
                    return
                self.handshaken = True
                self._flush()
                self.on_handshake()
            while not self.closed:
                try:
                    data = self.conn.recv(_READ)
                except SSL.WantReadError:
                    break
                except SSL.ZeroReturnError:
                    self.eof_received()
                    break
                try:
                    message = self.reader.feed(data)
                except ntske.NtsKeError as exc:
                    self.on_error(exc)
                    break
                if message is not None:
                    self.on_message(message)
                    break
        except SSL.Error as exc:
            self.fail(f"TLS: {exc}")
            return
        self._flush()

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)
        self._flush()

    def close(self) -> None:
        """Say goodbye properly (close_notify), then close the TCP connection."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(SSL.Error):
            self.conn.shutdown()
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def fail(self, why: str) -> None:
        """Give up on the session: send what OpenSSL has to say (an alert) and close."""
        if not self.closed:
            self._flush()
            self.closed = True
            self.on_failure(why)
            if self.transport is not None:
                self.transport.close()

    # hooks
    def on_handshake(self) -> None: ...
    def on_message(self, records: list[ntske.Record]) -> None: ...
    def on_error(self, exc: ntske.NtsKeError) -> None: ...
    def on_failure(self, why: str) -> None: ...
    def finished(self) -> None: ...


# --- server --------------------------------------------------------------------------------


@dataclass
class KeCounters:
    """What became of the NTS-KE connections; every one that got no cookies has a reason."""

    accepted: int = 0
    served: int = 0
    refused_restrict: int = 0  # `restrict ... ignore` / `noserve` for its address
    refused_rate: int = 0  # its address or network opened sessions too fast
    refused_busy: int = 0  # every slot it could take was answering
    evicted: int = 0  # displaced by a newer session before its client finished
    timed_out: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def refuse(self, why: Refusal) -> None:
        if why is Refusal.RATE:
            self.refused_rate += 1
        else:
            self.refused_busy += 1

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: object) -> KeCounters:
        """The counters another process sent; ValueError unless exactly their shape."""
        names = {f for f in cls.__dataclass_fields__ if f != "errors"}
        if not isinstance(data, dict) or set(data) != names | {"errors"}:
            raise ValueError("not NTS-KE counters")
        errors = data["errors"]
        values = [data[name] for name in names]
        if not isinstance(errors, dict) or not all(
                isinstance(k, str) and len(k) <= 64 for k in errors) or len(errors) > 64:
            raise ValueError("bad NTS-KE error counters")
        values += list(errors.values())
        if not all(type(v) is int and v >= 0 for v in values):
            raise ValueError("NTS-KE counters must be non-negative integers")
        return cls(**{name: data[name] for name in names}, errors=dict(errors))

    def plus(self, other: KeCounters) -> KeCounters:
        """The sum: a restarted NTS-KE process counts from zero again."""
        mine, theirs = self.as_dict(), other.as_dict()
        errors = dict(self.errors)
        for kind, n in other.errors.items():
            errors[kind] = errors.get(kind, 0) + n
        sums = {k: int(v) + int(theirs[k]) for k, v in mine.items()  # type: ignore[call-overload]
                if k != "errors"}
        return KeCounters(**sums, errors=errors)

    def summary(self) -> str:
        errors = ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"
        return (f"{self.accepted} connections, {self.served} served, refused: "
                f"{self.refused_restrict} by restrict, {self.refused_rate} over the rate, "
                f"{self.refused_busy} busy; {self.evicted} displaced, {self.timed_out} "
                f"timed out; errors: {errors}")


class _ServerSession(_TlsProtocol):
    def __init__(self, server: NtsKeServer) -> None:
        conn = SSL.Connection(server.context, None)
        conn.set_accept_state()
        super().__init__(conn, ntske.REQUEST_LIMITS)
        self.server = server
        self.address = ""
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        server = self.server
        server.counters.accepted += 1
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if peer else ""
        refusal = server.admit(self, peer)
        if refusal is not None:
            self.closed = True
            transport.abort()
            return
        self._timer = asyncio.get_running_loop().call_later(SESSION_TIMEOUT, self._timeout)
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.received + len(data) > MAX_SESSION_BYTES:
            self.server.counters.error("oversized")
            self.fail("too many bytes")
            return
        self.server.slots.heard(self, self.server.monotonic())
        super().data_received(data)

    def _timeout(self) -> None:
        """The deadline: whatever state the session is in (even closing, with a peer that
        never reads), it ends now."""
        self.server.counters.timed_out += 1
        log.debug("NTS-KE session from %s timed out", self.address)
        self.abort()

    def evict(self) -> None:
        """A newer session took this one's slot."""
        self.server.counters.evicted += 1
        log.debug("NTS-KE session from %s displaced by a newer one", self.address)
        self.abort()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    def on_handshake(self) -> None:
        if self.conn.get_alpn_proto_negotiated() != ntske.ALPN:
            self.server.counters.error("no_alpn")
            self.fail("the client did not offer ALPN ntske/1")

    def on_message(self, records: list[ntske.Record]) -> None:
        server = self.server
        server.slots.answered(self)
        try:
            negotiated = ntske.negotiate(records)
        except ntske.NtsKeError as exc:
            self.on_error(exc)
            return
        cookies = []
        if negotiated.ok:
            assert negotiated.aead is not None
            c2s = self.conn.export_keying_material(
                ntske.EXPORTER_LABEL, KEY_LENGTH, ntske.exporter_context(negotiated.aead, False))
            s2c = self.conn.export_keying_material(
                ntske.EXPORTER_LABEL, KEY_LENGTH, ntske.exporter_context(negotiated.aead, True))
            cookies = [server.keys.make_cookie(c2s, s2c) for _ in range(ntske.MAX_COOKIES)]
            server.counters.served += 1
        else:
            server.counters.error("nothing_in_common")
        self.send(ntske.server_response(negotiated, cookies, port=server.ntp_port))
        self.close()

    def on_error(self, exc: ntske.NtsKeError) -> None:
        self.server.counters.error(exc.kind)
        log.debug("NTS-KE request refused: %s", exc)
        if self.handshaken and not self.closed:
            with contextlib.suppress(SSL.Error):
                self.send(ntske.error_message(exc.code))
        self.close()

    def on_failure(self, why: str) -> None:
        self.server.counters.error("tls")
        log.debug("NTS-KE session dropped: %s", why)

    def finished(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.server.slots.release(self)
        self.server.sessions.discard(self)


class NtsKeServer:
    """Hands out keys and cookies made with `keys` (the UDP responder opens them)."""

    def __init__(self, cert: str, key: str, keys: CookieKeys, ntp_port: int = 123,
                 limits: SlotLimits | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.cert, self.key = cert, key
        self.context = server_context(cert, key)
        self.keys = keys
        self.ntp_port: int | None = None if ntp_port == 123 else ntp_port
        self.slots: KeSlots[_ServerSession] = KeSlots(limits)
        self.sessions: set[_ServerSession] = set()
        self.restrict: RestrictTable | None = None  # `restrict` as the NTP port applies it
        self.counters = KeCounters()
        self.monotonic = monotonic
        self._servers: list[asyncio.AbstractServer] = []
        self._listening: list[socket.socket] = []

    def admit(self, session: _ServerSession, peer: object) -> Refusal | str | None:
        """None if `session` (from `peer`, the socket address) gets a slot, else why not
        (counted); a displaced session is closed."""
        try:
            host, port = peer[0], peer[1]  # type: ignore[index]
            address = ipaddress.ip_address(str(host).split("%", 1)[0])
        except (TypeError, IndexError, ValueError):
            self.counters.error("no_address")
            return "no_address"
        table = self.restrict
        if table is not None and table.lookup(int(address), address.version == 6,
                                              int(port)) & (IGNORE | NOSERVE):
            self.counters.refused_restrict += 1
            return "restrict"
        admission = self.slots.admit(session, str(address), self.monotonic())
        if admission.refused is not None:
            self.counters.refuse(admission.refused)
            return admission.refused
        if admission.evicted is not None:
            self.sessions.discard(admission.evicted)
            admission.evicted.evict()
        self.sessions.add(session)
        return None

    def bind(self, hosts: Sequence[str], port: int) -> None:
        """Listen on each address (IP literals), before the loop runs and before privileges
        are dropped, as the NTP sockets are; OSError (all closed again) if one cannot be."""
        try:
            for host in hosts:
                self._listening.append(_listen_tcp(host, port))
        except OSError:
            self.close_listeners()
            raise

    @property
    def listening(self) -> list[socket.socket]:
        return list(self._listening)

    def close_listeners(self) -> None:
        """Close the listening sockets not yet served (copies a process does not use)."""
        for sock in self._listening:
            sock.close()
        self._listening = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        listening, self._listening = self._listening, []
        for sock in listening:
            server = await loop.create_server(lambda: _ServerSession(self), sock=sock,
                                              backlog=LISTEN_BACKLOG)
            self._servers.append(server)
            where = sock.getsockname()
            log.info("NTS-KE listening on TCP %s port %d", where[0], where[1])

    def reload(self) -> None:
        """SIGHUP: a new certificate for new sessions; a bad one keeps the old."""
        try:
            self.context = server_context(self.cert, self.key)
        except (SSL.Error, OSError) as exc:
            log.error("NTS: cannot reload certificate %s / key %s: %s; keeping the old one",
                      self.cert, self.key, exc)
            return
        log.info("NTS: certificate reloaded from %s", self.cert)

    def close(self) -> None:
        self.close_listeners()
        for server in self._servers:
            server.close()
        for session in list(self.sessions):
            session.abort()
        self._servers = []


def _listen_tcp(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


# --- client --------------------------------------------------------------------------------


class _ClientSession(_TlsProtocol):
    def __init__(self, context: SSL.Context, host: str,
                 done: asyncio.Future[NtsSession]) -> None:
        conn = SSL.Connection(context, None)
        conn.set_connect_state()
        try:
            ipaddress.ip_address(host)
        except ValueError:
            conn.set_tlsext_host_name(host.encode("idna"))
        super().__init__(conn, ntske.RESPONSE_LIMITS)
        self.host = host
        self.done = done

    def _settle(self, result: NtsSession | Exception) -> None:
        if not self.done.done():
            if isinstance(result, Exception):
                self.done.set_exception(result)
            else:
                self.done.set_result(result)

    def on_handshake(self) -> None:
        if self.conn.get_alpn_proto_negotiated() != ntske.ALPN:
            self.fail("the server did not agree to ALPN ntske/1")
            return
        cert = self.conn.get_peer_certificate(as_cryptography=True)
        if cert is None or not certificate_matches(cert, self.host):
            self.fail(f"the server's certificate is not for {self.host}")
            return
        self.send(ntske.client_request())

    def on_message(self, records: list[ntske.Record]) -> None:
        try:
            result = ntske.parse_response(records)
        except ntske.NtsKeError as exc:
            self.on_error(exc)
            return
        c2s = self.conn.export_keying_material(
            ntske.EXPORTER_LABEL, KEY_LENGTH, ntske.exporter_context(result.aead, False))
        s2c = self.conn.export_keying_material(
            ntske.EXPORTER_LABEL, KEY_LENGTH, ntske.exporter_context(result.aead, True))
        # Without a Server record NTP goes to the address NTS-KE reached (RFC 8915 §4.1.7),
        # not to whatever a second lookup of the name would give.
        peer = self.transport.get_extra_info("peername") if self.transport else None
        server = result.server or (str(peer[0]) if peer else None)
        if result.refused_cookies:
            log.warning("NTS-KE with %s: %d cookie(s) refused (each must be 1-%d bytes, a "
                        "multiple of 4)", self.host, result.refused_cookies,
                        ntske.MAX_COOKIE_LENGTH)
        self._settle(NtsSession(c2s, s2c, list(result.cookies), server, result.port,
                                result.aead))
        self.close()

    def on_error(self, exc: ntske.NtsKeError) -> None:
        self._settle(KeFailure(f"bad NTS-KE response: {exc}"))
        self.close()

    def on_failure(self, why: str) -> None:
        self._settle(KeFailure(why))

    def finished(self) -> None:
        self._settle(KeFailure("connection closed before the response"))


async def key_exchange(host: str, port: int = ntske.DEFAULT_PORT, ca: str | None = None,
                       timeout: float = CLIENT_TIMEOUT,
                       connect_to: str | None = None, family: int = 0) -> NtsSession:
    """Run NTS-KE with `host` (checked against its certificate); `connect_to` is the
    address to use when `host` is already resolved; `family` limits the addresses tried
    (-4 / -6, or the one family this host has). Raises KeFailure or OSError."""
    loop = asyncio.get_running_loop()
    try:
        context = client_context(ca)
    except SSL.Error as exc:
        raise KeFailure(f"cannot load the CA certificates {ca}: {exc}") from None
    done: asyncio.Future[NtsSession] = loop.create_future()
    transport = None
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(
                lambda: _ClientSession(context, host, done), connect_to or host, port,
                family=family)
            return await done
    except TimeoutError:
        raise KeFailure(f"NTS-KE with {host} port {port} timed out") from None
    finally:
        if transport is not None:
            transport.abort()


# --- cookie keys on disk -------------------------------------------------------------------


def load_cookie_keys(path: str, now: float) -> CookieKeys:
    """The persisted keys (rotated if due); new ones when there are none or they are
    unreadable. Persisting keeps the cookies clients hold valid across restarts."""
    keys = CookieKeys()
    exposed = 0
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd) as f:
            exposed = os.fstat(fd).st_mode & 0o077
            keys = CookieKeys.from_text(f.read(65536))
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        log.warning("NTS: cannot read cookie keys from %s: %s; making new ones", path, exc)
    if exposed:
        # Whoever can read them can open every cookie, so read every client's keys.
        log.warning("NTS: cookie key file %s is accessible to group/others (mode %04o); "
                    "written again with mode 0600 now", path, exposed | 0o600)
    if keys.rotate_due(now):
        keys.rotate(now)
        save_cookie_keys(path, keys)
    elif exposed:
        save_cookie_keys(path, keys)
    return keys


def save_cookie_keys(path: str, keys: CookieKeys) -> bool:
    """Atomically (temp file + rename), mode 0600, never through a symlink."""
    directory = os.path.dirname(path) or "."
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".nts-keys.", dir=directory)
    except OSError as exc:
        log.warning("NTS: cannot write cookie keys to %s: %s; they last until restart "
                    "(the directory must be writable by the user pyntpd runs as)",
                    path, exc.strerror)
        return False
    try:
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
        with os.fdopen(fd, "w") as f:
            f.write(keys.to_text())
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        log.warning("NTS: cannot write cookie keys to %s: %s", path, exc.strerror)
        return False
    return True


@dataclass
class CookieKeyKeeper:
    """Rotates the cookie keys daily and writes them out; `now` is the wall clock."""

    path: str
    keys: CookieKeys
    now: Callable[[], float]
    follow: bool = False  # re-read the file written by another process instead of rotating
    on_rotate: Callable[[CookieKeys], None] | None = None  # tell the NTS-KE helper
    _timer: asyncio.TimerHandle | None = None
    _seen: tuple[int, int] | None = None  # (inode, mtime) of the file last followed

    def start(self) -> None:
        self._check()

    def _check(self) -> None:
        if self.follow:
            self._follow()
        elif self.keys.rotate_due(self.now()):
            self.keys.rotate(self.now())
            save_cookie_keys(self.path, self.keys)
            log.info("NTS: cookie key rotated")
            if self.on_rotate is not None:
                self.on_rotate(self.keys)
        # A follower (a worker) looks often, cheaply: the main process writes the file once
        # it is confined, after the workers started, and a cookie made with a key a worker
        # has not read yet would be refused there.
        interval = FOLLOW_INTERVAL if self.follow else 600.0
        self._timer = asyncio.get_running_loop().call_later(interval, self._check)

    def _follow(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd) as f:
                st = os.fstat(fd)
                if (st.st_ino, st.st_mtime_ns) == self._seen:
                    return
                fresh = CookieKeys.from_text(f.read(65536))
            if fresh.keys:
                self.keys.keys[:] = fresh.keys
                self._seen = (st.st_ino, st.st_mtime_ns)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
