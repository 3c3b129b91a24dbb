"""TLS on relay's non-blocking sockets: a sans-IO engine (``ssl.SSLObject`` over two ``MemoryBIO``)
behind the same calls as a socket, so that relay/_netio.py, the HTTP connection, the WebSocket and the
forward path take either one.

:class:`TLSStream` has the socket methods relay uses (``recv_into``, ``recv``, ``sendmsg``, ``send``,
``fileno``, ``shutdown``, ``close``, ``getpeername``) with a non-blocking socket's contract:
``BlockingIOError`` means "wait until the file descriptor is readable (reads) or writable (sends), then
call again".  Plaintext connections keep their plain socket: TLS costs nothing where it is off.

Sends follow OpenSSL's ``SSL_write`` rule for non-blocking sockets: after a partial send (or a
``BlockingIOError``) the next ``sendmsg`` must begin with the bytes not reported as sent, which is
what every stream-socket caller does anyway.  The stream encrypts up to ``ENCRYPT_CHUNK_BYTES`` of the
caller's buffers per call (``SSLObject.write`` of each view, no join) and reports them sent only once
the kernel has taken all of their ciphertext; until then it holds that ciphertext and reports
``BlockingIOError``.  So a frame shared by many slaves is built once and only encrypted per connection.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Optional

import trio

from relay._logging import limit_log, log_event
from relay._netio import Broken

__all__ = ["TLSStream", "TLSSettings", "NodeTLS", "node_tls", "load_context", "server_context", "client_context", "accept_tls", "connect_tls",
           "PlaintextOnTLSPort", "ALPN_PROTOCOLS", "ENCRYPT_CHUNK_BYTES"]

log = logging.getLogger("relay.tls")

ALPN_PROTOCOLS = ["http/1.1"]  # relay speaks HTTP/1.1 only (WebSocket upgrades need it)
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
# Plaintext encrypted per sendmsg call: enough for a batch of small frames in one kernel write, small
# enough that a slow reader holds at most this much ciphertext in the stream.
ENCRYPT_CHUNK_BYTES = 256 * 1024
CIPHERTEXT_RECV_BYTES = 256 * 1024
TLS_RECORD_BYTES = 16 * 1024  # the most plaintext one TLS record carries (RFC 8446 5.1)
TLS_HANDSHAKE_RECORD = 0x16  # the first byte of every ClientHello
HTTP_METHOD_PREFIXES = (b"GET ", b"POST", b"PUT ", b"HEAD", b"DELE", b"OPTI", b"PATC", b"CONN", b"TRAC", b"PRI ")
PLAINTEXT_ANSWER_BODY = b'{"error":"tls-required","message":"this port speaks HTTPS only: use https:// or wss://"}'
PLAINTEXT_ANSWER = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\nconnection: close\r\n"
                    b"content-length: " + str(len(PLAINTEXT_ANSWER_BODY)).encode() + b"\r\n\r\n"
                    + PLAINTEXT_ANSWER_BODY)

# Ciphertext is read through one buffer for the whole process: MemoryBIO.write copies it at once, and
# trio runs one task at a time (the same reasoning as the WebSocket reader's shared buffer).
_ciphertext_buffer = bytearray(CIPHERTEXT_RECV_BYTES)
_ciphertext_view = memoryview(_ciphertext_buffer)


TLS_LOG_LINES_PER_S = 5  # per event: a scanner must not flood the log with refused handshakes


class _Throttled:
    """At most TLS_LOG_LINES_PER_S lines a second per event; the held back ones are counted in the next."""

    def __init__(self) -> None:
        self._windows: dict = {}  # event -> [window start, lines in it, suppressed]

    def warn(self, event: str, **fields) -> None:
        now = time.monotonic()
        window = self._windows.get(event)
        if window is None or now - window[0] >= 1.0:
            window = self._windows[event] = [now, 0, window[2] if window else 0]
        if window[1] >= TLS_LOG_LINES_PER_S:
            window[2] += 1
            return
        window[1] += 1
        suppressed, window[2] = window[2], 0
        log_event(log, logging.WARNING, event, suppressed=suppressed or None, **fields)


_tls_log = _Throttled()


class PlaintextOnTLSPort(Exception):
    """The client sent a plaintext HTTP request to a port that speaks only TLS."""


@dataclass(frozen=True)
class TLSSettings:
    """The files of one listener's TLS: its certificate chain and key, and the CA whose client
    certificates it requires (None: no client certificate is asked for)."""

    cert_file: str
    key_file: str
    client_ca_file: Optional[str] = None


def _harden(context: ssl.SSLContext) -> ssl.SSLContext:
    context.minimum_version = MINIMUM_VERSION
    context.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    context.set_alpn_protocols(ALPN_PROTOCOLS)
    return context


def server_context(settings: TLSSettings) -> ssl.SSLContext:
    """The stdlib's secure server defaults, TLS 1.2 or later, ALPN http/1.1; client certificates
    required and verified against ``settings.client_ca_file`` when it is set."""
    context = _harden(ssl.create_default_context(ssl.Purpose.CLIENT_AUTH))
    context.load_cert_chain(settings.cert_file, settings.key_file)
    if settings.client_ca_file:
        context.load_verify_locations(cafile=settings.client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca_file: Optional[str] = None, *, cert_file: Optional[str] = None,
                   key_file: Optional[str] = None) -> ssl.SSLContext:
    """A client context that verifies the server's certificate and name (against ``ca_file``, else the
    system's trust store) and presents ``cert_file`` as its own certificate when given."""
    context = _harden(ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file))
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


@dataclass(frozen=True)
class NodeTLS:
    """A node's TLS contexts: for each listener (None: plaintext) and for connecting to its peers'
    private listeners (set when its own private listener speaks TLS: every node is set alike)."""

    public: Optional[ssl.SSLContext] = None
    private: Optional[ssl.SSLContext] = None
    peers: Optional[ssl.SSLContext] = None


def load_context(make, settings: TLSSettings, names: str) -> ssl.SSLContext:
    """``make(settings)``, or ConfigError naming the settings (``names``) and the files that cannot be
    used (missing, not PEM, a key that does not match its certificate)."""
    from relay._config import ConfigError

    try:
        return make(settings)
    except (OSError, ssl.SSLError) as exc:
        detail = getattr(exc, "reason", None) or exc.strerror or str(exc)
        files = ", ".join(f for f in (settings.cert_file, settings.key_file, settings.client_ca_file) if f)
        raise ConfigError(f"{names}: cannot use {files}: {detail}") from None


def node_tls(config) -> NodeTLS:
    """The contexts of ``config``'s TLS settings (ConfigError as ``load_context`` says)."""
    load = load_context
    public = private = peers = None
    if config.tls_cert_file:
        public = load(server_context, TLSSettings(config.tls_cert_file, config.tls_key_file),
                      "tls_cert_file/tls_key_file")
    if config.private_tls_cert_file:
        settings = TLSSettings(config.private_tls_cert_file, config.private_tls_key_file, config.private_tls_ca_file)
        names = "private_tls_cert_file/private_tls_key_file/private_tls_ca_file"
        private = load(server_context, settings, names)
        peers = load(lambda s: client_context(s.client_ca_file, cert_file=s.cert_file, key_file=s.key_file),
                     settings, names)
    return NodeTLS(public, private, peers)


class TLSStream:
    """One TLS connection over a connected non-blocking socket, with a socket's calls (module doc)."""

    __slots__ = ("sock", "_tls", "_incoming", "_outgoing", "_pending", "_encrypted", "_eof")

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, *, server_side: bool,
                 server_hostname: Optional[str] = None) -> None:
        self.sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_side=server_side,
                                     server_hostname=server_hostname)
        self._pending = b""  # ciphertext the kernel has not taken yet
        self._encrypted = 0  # plaintext bytes behind _pending, not yet reported sent
        self._eof = False

    # -- what callers ask of a socket

    @property
    def family(self) -> int:
        return self.sock.family

    def fileno(self) -> int:
        return self.sock.fileno()

    def getpeername(self):
        return self.sock.getpeername()

    def selected_alpn_protocol(self) -> Optional[str]:
        return self._tls.selected_alpn_protocol()

    def version(self) -> Optional[str]:
        return self._tls.version()

    def getpeercert(self):
        return self._tls.getpeercert()

    def recv_into(self, buffer, nbytes: int = 0) -> int:
        """Decrypted bytes into ``buffer`` (as many as are there, up to its size); 0 at the end."""
        view = memoryview(buffer)
        size = nbytes or len(view)
        tls = self._tls
        incoming = self._incoming
        total = 0
        while total < size:
            if not incoming.pending and not tls.pending():
                # Nothing to decrypt without more ciphertext (a partial record OpenSSL has already
                # taken in stays inside it): read the socket now rather than after an SSLWantReadError,
                # an exception that costs more than a small message's whole path.
                if total:
                    break  # what is decrypted goes up now; the socket is read on the next call
                if not self._receive_ciphertext():
                    return 0
            try:
                total += tls.read(size - total, view[total:] if total else view)
            except ssl.SSLWantReadError:  # the rest of a record is still on its way
                if total:
                    break
                if not self._receive_ciphertext():
                    return 0
            except ssl.SSLZeroReturnError:  # the peer's close_notify
                break
        if self._outgoing.pending:  # the read made protocol records (a key update's answer)
            self._push()
        return total

    def recv(self, max_bytes: int) -> bytes:
        buffer = bytearray(max_bytes)
        count = self.recv_into(buffer)
        del buffer[count:]
        return bytes(buffer)

    def sendmsg(self, buffers) -> int:
        """Encrypt from the front of ``buffers`` and send; the count of plaintext bytes sent."""
        if self._encrypted or self._pending or self._outgoing.pending:
            # (_encrypted: a reader's _push may have sent the rest of our ciphertext meanwhile)
            if not self._push():
                raise BlockingIOError
            sent, self._encrypted = self._encrypted, 0
            if sent:
                return sent
        tls = self._tls
        budget = ENCRYPT_CHUNK_BYTES
        taken = 0
        # Each SSLObject.write makes at least one record (its own header and tag, its own cipher call):
        # small pieces (a frame's head, a small body, the sender's tail, the next frame...) are staged
        # into full records; a large body goes in as a view, OpenSSL cutting it into records.
        staged = bytearray()
        for buffer in buffers:
            length = len(buffer)
            if not length:
                continue
            if length > budget:
                buffer = memoryview(buffer)[:budget]
                length = budget
            taken += length
            budget -= length
            if len(staged) + length <= TLS_RECORD_BYTES:
                staged += buffer
            else:
                view = memoryview(buffer)
                if staged:
                    fill = TLS_RECORD_BYTES - len(staged)
                    staged += view[:fill]
                    tls.write(staged)  # (an SSLError is an OSError: the caller's "connection gone")
                    staged = bytearray()
                    view = view[fill:]
                whole = len(view) - len(view) % TLS_RECORD_BYTES
                if whole:
                    tls.write(view[:whole])
                staged += view[whole:]
            if not budget:
                break
        if staged:
            tls.write(staged)
        if self._push():
            return taken
        self._encrypted = taken
        raise BlockingIOError

    def send(self, data) -> int:
        return self.sendmsg([data])

    def shutdown(self, how: int) -> None:
        """Our close_notify (best effort), then the socket's own shutdown."""
        if how in (socket.SHUT_WR, socket.SHUT_RDWR):
            self._close_notify()
        self.sock.shutdown(how)

    def close(self) -> None:
        self._close_notify()
        self.sock.close()

    # -- the handshake

    async def do_handshake(self, *, detect_plaintext: bool = False) -> None:
        """Run the handshake to its end (the caller bounds it in time).  SSLError when it fails (then
        ``send_alert`` tells the peer why); PlaintextOnTLSPort for an HTTP request."""
        first = detect_plaintext
        while True:
            try:
                self._tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pass
            await self._push_all()
            if not await self._receive_waiting():
                raise Broken("closed during the TLS handshake")
            if first:
                first = False
                if _looks_like_http(self._incoming):
                    raise PlaintextOnTLSPort()
        await self._push_all()  # our last flight (TLS 1.3 session tickets after the server's Finished)

    def send_alert(self) -> None:
        """What OpenSSL wrote after a failed handshake (its alert), without blocking, best effort."""
        try:
            self._push()
        except OSError:
            pass

    # -- ciphertext in and out

    def _receive_ciphertext(self) -> bool:
        """Move what the kernel has into the incoming BIO; False at EOF, BlockingIOError if nothing."""
        if self._eof:
            return False
        count = self.sock.recv_into(_ciphertext_view)
        if count == 0:
            self._eof = True
            self._incoming.write_eof()
            return False
        self._incoming.write(_ciphertext_view[:count])
        return True

    async def _receive_waiting(self) -> bool:
        while True:
            try:
                return self._receive_ciphertext()
            except BlockingIOError:
                await _wait(trio.lowlevel.wait_readable, self.sock)
            except InterruptedError:
                continue
            except OSError as exc:
                raise Broken(str(exc)) from None

    def _push(self) -> bool:
        """Send held and new ciphertext without blocking; True when none is left (OSError: gone)."""
        if self._outgoing.pending:
            fresh = self._outgoing.read()
            self._pending = (bytes(self._pending) + fresh) if self._pending else fresh
        pending = self._pending
        if not pending:
            return True
        try:
            sent = self.sock.send(pending)
        except (BlockingIOError, InterruptedError):
            return False
        if sent == len(pending):
            self._pending = b""
            return True
        self._pending = memoryview(pending)[sent:]
        return False

    async def _push_all(self) -> None:
        try:
            while not self._push():
                await _wait(trio.lowlevel.wait_writable, self.sock)
        except OSError as exc:
            raise Broken(str(exc)) from None

    def _close_notify(self) -> None:
        try:
            self._tls.unwrap()
        except (ssl.SSLError, ValueError, OSError):
            pass  # (SSLWantReadError: the peer's close_notify is not awaited)
        try:
            self._push()
        except OSError:
            pass


def _looks_like_http(incoming: ssl.MemoryBIO) -> bool:
    """Whether the first bytes of a connection are a plaintext HTTP request, not a TLS record.
    (Peeks by reading the BIO's pending bytes back in: the BIO is drained and refilled at once.)"""
    data = incoming.read()
    incoming.write(data)
    return bool(data) and data[0] != TLS_HANDSHAKE_RECORD and data[:4].upper() in HTTP_METHOD_PREFIXES


async def _wait(wait, sock: socket.socket) -> None:
    try:
        await wait(sock)
    except (trio.ClosedResourceError, OSError) as exc:
        raise Broken(str(exc)) from None


def _reason(exc: ssl.SSLError) -> str:
    """A log line's account of a failed handshake, e.g. ``certificate verify failed: unable to get
    local issuer certificate`` or ``peer did not return a certificate``."""
    verify = getattr(exc, "verify_message", None)
    reason = (exc.reason or "").replace("_", " ").lower() or str(exc)
    return f"{reason}: {verify}" if verify else reason


async def accept_tls(sock: socket.socket, context: ssl.SSLContext, *, timeout_s: float, listener: str,
                     peer: Optional[str]) -> Optional[TLSStream]:
    """The server side of a handshake within ``timeout_s``; None (logged) when it failed: a timeout
    (a client that never finishes is a slowloris), a plaintext request, a refused certificate."""
    stream = TLSStream(sock, context, server_side=True)
    try:
        with trio.fail_after(timeout_s):
            await stream.do_handshake(detect_plaintext=True)
    except trio.TooSlowError:
        limit_log.hit("handshake_timeout_s", stage="tls", listener=listener, peer=peer)
        return None
    except PlaintextOnTLSPort:
        _tls_log.warn("tls.plaintext_request", listener=listener, peer=peer,
                      hint="this port speaks TLS only: the client must use https:// or wss://")
        try:
            sock.send(PLAINTEXT_ANSWER)  # what nginx does too: a plaintext 400 the client can read
        except OSError:
            pass
        return None
    except ssl.SSLError as exc:
        _tls_log.warn("tls.handshake_failed", listener=listener, peer=peer, reason=_reason(exc))
        stream.send_alert()  # (after the log line: a client that reads the alert may look at the log at once)
        return None
    except (Broken, OSError):  # gone before the end of its handshake
        return None
    return stream


async def connect_tls(sock: socket.socket, context: ssl.SSLContext, server_hostname: str,
                      timeout_s: float) -> TLSStream:
    """The client side of a handshake on a connected socket; OSError (an SSLError, or ETIMEDOUT) if
    it fails."""
    stream = TLSStream(sock, context, server_side=False, server_hostname=server_hostname)
    try:
        with trio.fail_after(timeout_s):
            await stream.do_handshake()
    except ssl.SSLError:
        stream.send_alert()
        raise
    except trio.TooSlowError:
        raise TimeoutError(f"TLS handshake with {server_hostname} timed out") from None
    except Broken as exc:
        raise ConnectionResetError(f"TLS handshake with {server_hostname}: {exc}") from None
    return stream
