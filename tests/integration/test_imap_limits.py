"""Pre-auth resource limits and ALPN on the IMAP listeners: a stuck TLS
handshake and a connection that never logs in are closed after their
timeouts, a client address cannot hold more than connections_per_ip
connections, and a TLS client offering only foreign ALPN protocols is
refused (ALPACA) while one offering "imap" or nothing is served."""

import socket
import ssl
import time

import pytest

from helpers import imap_ssl, landing_host, raw
from imapraw import Closed


def test_stuck_handshake_is_closed(postern_factory):
    p = postern_factory(limits={"handshake_timeout": 1})
    # TCP connect to the implicit-TLS port and never send a ClientHello
    c = raw(p.imaps_port, read_greeting=False, timeout=10)
    start = time.monotonic()
    data, closed = c.read_until_closed(10)
    c.close()
    assert closed, "stuck handshake still open after 10 s"
    assert data == b""
    assert time.monotonic() - start < 10
    assert p.running()


def test_preauth_connection_times_out(postern_factory):
    p = postern_factory(limits={"auth_timeout": 2})
    with raw(p.plain_port, timeout=15) as c:
        assert c.greeting.startswith(b"* OK")
        _, tagged = c.command("a", "NOOP")  # activity does not extend it
        assert tagged.startswith(b"a OK")
        data, closed = c.read_until_closed(15)
        assert closed, "pre-auth connection open after auth_timeout"
        assert data == b"" or data.startswith(b"* BYE"), data


def served(port, source=None, within=5):
    """A connection that got its greeting, retrying for `within` seconds
    (Postern may still count connections that just closed, such as the
    fixture's readiness probes)."""
    deadline = time.monotonic() + within
    while True:
        try:
            c = raw(port, source=source, timeout=2)
            if c.greeting.startswith(b"* OK"):
                return c
            c.close()
        except Exception:  # noqa: BLE001
            pass
        assert time.monotonic() < deadline, "not served within %ds" % within
        time.sleep(0.1)


def test_connections_per_ip(postern_factory, ssl_ctx, users):
    limit = 3
    p = postern_factory(limits={"connections_per_ip": limit})
    held = []
    try:
        for _ in range(limit):
            held.append(served(p.plain_port))
        # one more from the same address is not served
        try:
            extra = raw(p.plain_port, read_greeting=False, timeout=5)
        except OSError:
            extra = None
        if extra is not None:
            data, closed = extra.read_until_closed(5)
            extra.close()
            assert closed and data.startswith(b"* BYE Too many connections"), data
        # another address still is
        with raw(p.plain_port, source="127.0.0.2") as other:
            assert other.greeting.startswith(b"* OK")
        # the held connections still work
        _, tagged = held[0].command("a", "NOOP")
        assert tagged.startswith(b"a OK")
    finally:
        for c in held:
            c.close()
    # once they are gone the address is served again
    served(p.plain_port).close()


def _alpn_ctx(ssl_ctx_base, protocols, ca):
    ctx = ssl.create_default_context(cafile=ca)
    if protocols is not None:
        ctx.set_alpn_protocols(protocols)
    return ctx


@pytest.mark.parametrize("protocols,ok", [
    (None, True),
    (["imap"], True),
    (["h2", "imap"], True),
    (["http/1.1"], False),
    (["smtp"], False),
    (["pop3", "h2"], False),
])
def test_alpn(postern, certs, ssl_ctx, protocols, ok):
    ctx = _alpn_ctx(ssl_ctx, protocols, certs["ca"])
    sock = socket.create_connection(("127.0.0.1", postern.imaps_port),
                                    timeout=10)
    try:
        if ok:
            with ctx.wrap_socket(sock, server_hostname="localhost") as s:
                if protocols:
                    assert s.selected_alpn_protocol() == "imap"
                assert s.recv(4096).startswith(b"* OK")
        else:
            with pytest.raises(ssl.SSLError):
                with ctx.wrap_socket(sock, server_hostname="localhost") as s:
                    # TLS 1.3: an alert may only surface on the first read
                    data = s.recv(4096)
                    assert not data.startswith(b"* OK"), data
                    raise ssl.SSLError("closed without alert")
    finally:
        sock.close()


def test_alpn_on_starttls(postern, certs, ssl_ctx):
    bad = _alpn_ctx(ssl_ctx, ["http/1.1"], certs["ca"])
    with raw(postern.starttls_port) as c:
        _, tagged = c.command("s", "STARTTLS")
        assert tagged.startswith(b"s OK")
        with pytest.raises((ssl.SSLError, OSError, Closed)):
            c.starttls(bad)
            c.command("a", "NOOP", timeout=5)
    good = _alpn_ctx(ssl_ctx, ["imap"], certs["ca"])
    with raw(postern.starttls_port) as c:
        c.command("s", "STARTTLS")
        c.starttls(good)
        assert c.sock.selected_alpn_protocol() == "imap"
        _, tagged = c.command("a", "NOOP")
        assert tagged.startswith(b"a OK")


def test_service_after_limits(postern, ssl_ctx, users):
    m = imap_ssl(postern.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
