"""TLS towards clients: resumption by session tickets, the protocol-version
floor (TLS 1.2 by default, configurable), and the TLS event in the log."""

import socket
import ssl

import pytest

HOST = "127.0.0.1"


def tls_connect(port, ctx, session=None):
    s = ctx.wrap_socket(socket.create_connection((HOST, port), timeout=10),
                        server_hostname="localhost", session=session)
    s.settimeout(10)
    greeting = s.recv(4096)   # TLS 1.3 tickets arrive with the first data
    assert greeting.startswith(b"* OK"), greeting
    return s


def test_session_resumption_with_tickets(postern, ssl_ctx):
    first = tls_connect(postern.imaps_port, ssl_ctx)
    session = first.session
    first.sendall(b"a LOGOUT\r\n")
    first.recv(4096)
    first.close()
    assert session is not None and session.has_ticket
    mark = postern.log_mark()
    second = tls_connect(postern.imaps_port, ssl_ctx, session=session)
    assert second.session_reused
    second.close()
    ev = postern.wait_event(mark, event="tls", reused="1")
    assert ev["version"].startswith("TLSv1.")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_protocol_versions_refused(postern, certs, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs["ca"])
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = version
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(postern.imaps_port, ctx)
    assert postern.running()


def test_min_version_tls13(postern_factory, certs, ssl_ctx):
    p = postern_factory(tls={"min_version": "TLSv1.3"})
    ctx12 = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx12.load_verify_locations(certs["ca"])
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(p.imaps_port, ctx12)
    s = tls_connect(p.imaps_port, ssl_ctx)
    assert s.version() == "TLSv1.3"
    s.close()


def test_tls12_client_is_served_by_default(postern, certs):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs["ca"])
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    s = tls_connect(postern.imaps_port, ctx)
    assert s.version() == "TLSv1.2"
    s.close()
