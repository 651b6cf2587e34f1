"""The PROXY protocol (haproxy's proxy-protocol.txt), both ways.

Inbound, a listener with `proxy_protocol = true` wants a v1 or v2 header
as the first bytes of every connection (before TLS, before Postern's
greeting), only from `proxy_trusted_networks` (here 127.0.0.1/32): the
header's source is then the client everywhere (the connect line, with
`via=` the balancer; connections_per_ip; what trusted backends are told).
An untrusted sender, a malformed header or no header in time: the
connection is closed without a byte.  A real HAProxy (send-proxy-v2) in
front shows the same from the other side.

Outbound, a backend with `proxy_protocol = true` gets a v2 header with the
client's address: a Dovecot with `haproxy = yes` (which refuses a
connection without one) logs the client's address as rip=, and accepts the
LOCAL header of the health checks.

Clients come from chosen loopback addresses (127.0.0.X: Linux routes all
of 127/8 to lo); headers are built byte by byte in helpers.py."""

import re
import subprocess

import pytest

import servers
from conftest import _stop_all
from helpers import (closed_without_a_byte, connect_from, imap_from,
                     landing_host, pop3_from, proxy_v1, proxy_v1_unknown,
                     proxy_v2, proxy_v2_local, raw, raw_proxied,
                     smtp_command, tagged_status)

TRUSTED = ["127.0.0.1/32"]
SLACK = 5


def proxied(cfg):
    """Every listener wants a PROXY header."""
    for lst in cfg["listeners"]:
        lst["proxy_protocol"] = True


@pytest.fixture(scope="module")
def module_postern(postern_launcher):
    """Every listener with proxy_protocol, trusted 127.0.0.1/32 only, the
    session cache off (each login reaches the backend, whose log shows the
    address it was given)."""
    p = postern_launcher.start(mutate=proxied, proxy_trusted_networks=TRUSTED,
                               imap={"cache_ttl": 0})
    yield p
    _stop_all([p])


def dst(p, port):
    return ("127.0.0.1", port)


def login_alice(c, users, tag="a"):
    _, tagged = c.command(tag, 'LOGIN alice "%s"' % users["alice"].password)
    assert tagged_status(tagged) == "OK", tagged
    _, tagged = c.command(tag + "n", "NOOP")
    assert tagged_status(tagged) == "OK", tagged
    c.command(tag + "z", "LOGOUT")


def connect_event(p, mark, client):
    return p.wait_event(since=mark, event="connect", client=client)


def v6_client(ip, port):
    """The two ways an IPv6 client:port may be written in the log."""
    return ["[%s]:%d" % (ip, port), "%s:%d" % (ip, port)]


def wait_connect_any(p, mark, clients, timeout=10):
    import time
    deadline = time.monotonic() + timeout
    while True:
        for cl in clients:
            evs = p.events(since=mark, event="connect", client=cl)
            if evs:
                return evs[0]
        if time.monotonic() > deadline:
            raise AssertionError("no connect line for %r:\n%s" % (
                clients, p.log_since(mark)[-3000:]))
        time.sleep(0.05)


def refused(p, mark, sock_port, timeout=10):
    """The `event=refused` line of our connection (client 127.0.0.X:port
    of our own socket)."""
    import time
    deadline = time.monotonic() + timeout
    while True:
        evs = [e for e in p.events(since=mark, event="refused")
               if e.get("client", "").endswith(":%d" % sock_port)]
        if evs:
            return evs[0]
        if time.monotonic() > deadline:
            raise AssertionError("no refused line for port %d:\n%s" % (
                sock_port, p.log_since(mark)[-3000:]))
        time.sleep(0.05)


# --------------------------------------------------------------------------
# Valid headers


def test_v2_header_gives_the_client_address(postern, users, mbox_a):
    mark, dmark = postern.log_mark(), mbox_a.log_mark()
    hdr = proxy_v2(("192.0.2.7", 5555), dst(postern, postern.plain_port))
    with raw_proxied(postern.plain_port, hdr) as c:
        assert c.greeting.startswith(b"* OK"), c.greeting
        local = c.sock.getsockname()
        login_alice(c, users)
    ev = connect_event(postern, mark, "192.0.2.7:5555")
    assert ev["proto"] == "imap", ev
    assert ev["via"] == "127.0.0.1:%d" % local[1], ev
    assert ev["listener"] == "127.0.0.1:%d" % postern.plain_port, ev
    login = postern.wait_event(since=mark, event="login", user="alice",
                               result="ok")
    assert login["sid"] == ev["sid"], (login, ev)
    mbox_a.wait_log(r"Login: user=<alice>[^\n]*rip=192\.0\.2\.7,",
                    since=dmark)
    # no trace of the balancer's address as the client
    assert not postern.events(since=mark, event="connect",
                              client="127.0.0.1:%d" % local[1])


def test_v1_tcp4_header(postern, users, mbox_a):
    mark, dmark = postern.log_mark(), mbox_a.log_mark()
    hdr = proxy_v1(("192.0.2.17", 40001), dst(postern, postern.plain_port))
    with raw_proxied(postern.plain_port, hdr) as c:
        login_alice(c, users)
    ev = connect_event(postern, mark, "192.0.2.17:40001")
    assert ev["via"].startswith("127.0.0.1:"), ev
    mbox_a.wait_log(r"Login: user=<alice>[^\n]*rip=192\.0\.2\.17,",
                    since=dmark)


def test_v1_tcp6_header(postern, users, mbox_a):
    mark, dmark = postern.log_mark(), mbox_a.log_mark()
    hdr = proxy_v1(("2001:db8::7", 5555), ("2001:db8::1", 143))
    with raw_proxied(postern.plain_port, hdr) as c:
        login_alice(c, users)
    ev = wait_connect_any(postern, mark, v6_client("2001:db8::7", 5555))
    assert ev["via"].startswith("127.0.0.1:"), ev
    mbox_a.wait_log(r"Login: user=<alice>[^\n]*rip=2001:db8::7,",
                    since=dmark)


def test_v2_tcp6_header(postern, users, mbox_a):
    mark, dmark = postern.log_mark(), mbox_a.log_mark()
    hdr = proxy_v2(("2001:db8::8", 6000), ("2001:db8::1", 143))
    with raw_proxied(postern.plain_port, hdr) as c:
        login_alice(c, users)
    wait_connect_any(postern, mark, v6_client("2001:db8::8", 6000))
    mbox_a.wait_log(r"Login: user=<alice>[^\n]*rip=2001:db8::8,",
                    since=dmark)


@pytest.mark.parametrize("kind", ["v2-local", "v1-unknown"])
def test_local_header_keeps_the_connection_address(postern, users, mbox_a,
                                                   kind):
    """v2 LOCAL (what a balancer's health check sends) and v1 UNKNOWN:
    the connection's own addresses are used."""
    hdr = proxy_v2_local() if kind == "v2-local" else proxy_v1_unknown()
    mark, dmark = postern.log_mark(), mbox_a.log_mark()
    with raw_proxied(postern.plain_port, hdr) as c:
        assert c.greeting.startswith(b"* OK"), c.greeting
        local = c.sock.getsockname()
        login_alice(c, users)
    connect_event(postern, mark, "127.0.0.1:%d" % local[1])
    mbox_a.wait_log(r"Login: user=<alice>[^\n]*rip=127\.0\.0\.1,",
                    since=dmark)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_header_in_small_pieces(postern, users, mbox_a, version):
    """The header arrives over many reads (1, 2, 3, 5, 8... bytes, 50 ms
    apart): it is reassembled, and nothing of it reaches IMAP."""
    src = ("192.0.2.27", 27027)
    hdr = (proxy_v1 if version == "v1" else proxy_v2)(
        src, dst(postern, postern.plain_port))
    mark, dmark = postern.log_mark(), mbox_a.log_mark()
    with raw_proxied(postern.plain_port, hdr, pieces=True) as c:
        assert c.greeting.startswith(b"* OK"), c.greeting
        login_alice(c, users)
    connect_event(postern, mark, "192.0.2.27:27027")
    mbox_a.wait_log(r"Login: user=<alice>[^\n]*rip=192\.0\.2\.27,",
                    since=dmark)


def test_header_then_the_first_command_in_one_write(postern, users):
    """Bytes after the header in the same segment belong to IMAP: a
    CAPABILITY sent with the header is answered after the greeting."""
    hdr = proxy_v2(("192.0.2.28", 2828), dst(postern, postern.plain_port))
    with raw(postern.plain_port, read_greeting=False) as c:
        c.sock.sendall(hdr + b"c1 CAPABILITY\r\n")
        assert c.readline().startswith(b"* OK")
        _, tagged = c.read_until_tagged("c1")
        assert tagged.startswith(b"c1 OK"), tagged


def test_header_before_implicit_tls(postern, users, ssl_ctx, mbox_a):
    mark, dmark = postern.log_mark(), mbox_a.log_mark()
    hdr = proxy_v2(("192.0.2.37", 3737), dst(postern, postern.imaps_port))
    m = imap_from(postern.imaps_port, ssl_context=ssl_ctx, header=hdr)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    ev = connect_event(postern, mark, "192.0.2.37:3737")
    assert ev["tls"] == "implicit", ev
    mbox_a.wait_log(r"Login: user=<alice>[^\n]*rip=192\.0\.2\.37,",
                    since=dmark)
    # and over several reads, with the ClientHello right behind it
    mark = postern.log_mark()
    with raw_proxied(postern.imaps_port,
                     proxy_v1(("192.0.2.38", 3838),
                              dst(postern, postern.imaps_port)),
                     tls=True, ssl_context=ssl_ctx, pieces=True) as c:
        assert c.greeting.startswith(b"* OK"), c.greeting
    connect_event(postern, mark, "192.0.2.38:3838")


def test_header_then_starttls(postern, users, ssl_ctx, mbox_b):
    mark, dmark = postern.log_mark(), mbox_b.log_mark()
    hdr = proxy_v2(("192.0.2.39", 3939),
                   dst(postern, postern.starttls_req_port))
    m = imap_from(postern.starttls_req_port, header=hdr)
    typ, _ = m.starttls(ssl_context=ssl_ctx)
    assert typ == "OK"
    m.login("bob", users["bob"].password)
    assert landing_host(m) == "mbox-b"
    m.logout()
    connect_event(postern, mark, "192.0.2.39:3939")
    mbox_b.wait_log(r"Login: user=<bob>[^\n]*rip=192\.0\.2\.39,",
                    since=dmark)


def test_pop3_and_submission_listeners(postern, users, ssl_ctx, mbox_a,
                                       mbox_b):
    """POP3 (XCLIENT ADDR= to the trusted Dovecot) and submission
    (passthrough to mbox-b's Dovecot submission, XCLIENT ADDR=)."""
    mark, dmark = postern.log_mark(), mbox_a.log_mark()
    hdr = proxy_v2(("192.0.2.47", 4747), dst(postern, postern.pop3_port))
    p = pop3_from(postern.pop3_port, header=hdr)
    p.user("alice")
    p.pass_(users["alice"].password)
    p.quit()
    ev = connect_event(postern, mark, "192.0.2.47:4747")
    assert ev["proto"] == "pop3", ev
    mbox_a.wait_log(r"pop3-login: Info: Login: user=<alice>[^\n]*"
                    r"rip=192\.0\.2\.47,", since=dmark)

    import base64
    mark, dmark = postern.log_mark(), mbox_b.log_mark()
    hdr = proxy_v2(("192.0.2.48", 4848),
                   dst(postern, postern.submission_port))
    token = base64.b64encode(
        ("\0bob\0%s" % users["bob"].password).encode()).decode()
    with raw_proxied(postern.submission_port, hdr) as c:
        assert c.greeting.startswith(b"220"), c.greeting
        smtp_command(c, "EHLO client.test")
        reply = smtp_command(c, "AUTH PLAIN " + token)
        assert reply.startswith(b"235"), reply
        smtp_command(c, "QUIT")
    ev = connect_event(postern, mark, "192.0.2.48:4848")
    assert ev["proto"] == "submission", ev
    mbox_b.wait_log(r"submission-login: Info: Login: user=<bob>[^\n]*"
                    r"rip=192\.0\.2\.48,", since=dmark)


# --------------------------------------------------------------------------
# Refusals: closed without a byte


def test_untrusted_sender_is_refused(postern, users):
    """127.0.0.2 is not in proxy_trusted_networks: its (valid) header gets
    the connection closed before Postern says anything; others are still
    served."""
    mark = postern.log_mark()
    s = connect_from(postern.plain_port, source="127.0.0.2")
    port = s.getsockname()[1]
    try:
        s.sendall(proxy_v2(("192.0.2.7", 5555),
                           dst(postern, postern.plain_port)))
    except OSError:
        pass  # already closed: fine, as long as nothing was sent
    got, closed = closed_without_a_byte(s)
    s.close()
    assert (got, closed) == (b"", True)
    ev = refused(postern, mark, port)
    assert ev["reason"] == "PROXY header from an untrusted address", ev
    assert ev["client"] == "127.0.0.2:%d" % port, ev
    assert ev["listener"] == "127.0.0.1:%d" % postern.plain_port, ev
    assert not postern.events(since=mark, event="connect",
                              client="192.0.2.7:5555")
    # a trusted sender is still served
    hdr = proxy_v2(("192.0.2.7", 5556), dst(postern, postern.plain_port))
    with raw_proxied(postern.plain_port, hdr) as c:
        login_alice(c, users)


def _bad_v2_command():
    h = bytearray(proxy_v2(("192.0.2.1", 1), ("127.0.0.1", 2)))
    h[12] = 0x25  # version 2, command 5 (only 0 LOCAL and 1 PROXY exist)
    return bytes(h)


MALFORMED = {
    "imap-command": b"a1 LOGIN alice secret\r\n",
    "http": b"GET / HTTP/1.1\r\nHost: mail\r\n\r\n",
    "tls-hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32),
    "v1-bad-port": b"PROXY TCP4 192.0.2.1 127.0.0.1 99999 143\r\n",
    "v1-bad-address": b"PROXY TCP4 192.0.2.300 127.0.0.1 5555 143\r\n",
    "v1-family-mismatch": b"PROXY TCP4 2001:db8::1 127.0.0.1 5555 143\r\n",
    "v1-missing-field": b"PROXY TCP4 192.0.2.1 127.0.0.1 5555\r\n",
    "v1-lowercase": b"proxy TCP4 192.0.2.1 127.0.0.1 5555 143\r\n",
    "v1-too-long": b"PROXY TCP4 " + b"1" * 120 + b"\r\n",
    "v1-bare-lf": b"PROXY TCP4 192.0.2.1 127.0.0.1 5555 143\n",
    "v2-version-3": proxy_v2(("192.0.2.1", 1), ("127.0.0.1", 2), version=3),
    "v2-version-1": proxy_v2(("192.0.2.1", 1), ("127.0.0.1", 2), version=1),
    "v2-bad-command": _bad_v2_command(),
    "v2-over-1024": proxy_v2(("192.0.2.1", 1), ("127.0.0.1", 2),
                             tlvs=b"\x04\x04\x10" + bytes(1040)),
    "v2-too-short-for-ipv4": proxy_v2(("192.0.2.1", 1), ("127.0.0.1", 2),
                                      length=4) + bytes(4),
    "v2-bad-signature": b"\r\n\r\n\x00\r\nQUIX\n" + proxy_v2(
        ("192.0.2.1", 1), ("127.0.0.1", 2))[12:],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_header_is_refused(postern, name):
    mark = postern.log_mark()
    s = connect_from(postern.plain_port)
    port = s.getsockname()[1]
    try:
        s.sendall(MALFORMED[name])
    except OSError:
        pass
    got, closed = closed_without_a_byte(s)
    s.close()
    assert (got, closed) == (b"", True), (name, got)
    ev = refused(postern, mark, port)
    assert ev["reason"].startswith("malformed PROXY header"), ev
    assert postern.running()


@pytest.fixture(scope="module")
def quick_postern(postern_launcher):
    """Like module_postern with limits.handshake_timeout = 1."""
    p = postern_launcher.start(mutate=proxied, proxy_trusted_networks=TRUSTED,
                               limits={"handshake_timeout": 1})
    yield p
    _stop_all([p])


@pytest.mark.parametrize("sent", [
    b"",
    proxy_v2(("192.0.2.1", 1), ("127.0.0.1", 2))[:10],
    proxy_v2(("192.0.2.1", 1), ("127.0.0.1", 2))[:20],
    b"PROXY TCP4 192.0.",
], ids=["nothing", "v2-signature-part", "v2-address-part", "v1-part"])
def test_no_complete_header_in_time(quick_postern, sent):
    """Nothing, or only part of a header, within handshake_timeout (1 s):
    closed without a byte.  A plain IMAP client on a PROXY listener is
    this case: it waits for a greeting that never comes."""
    p = quick_postern
    mark = p.log_mark()
    s = connect_from(p.plain_port)
    port = s.getsockname()[1]
    if sent:
        s.sendall(sent)
    got, closed = closed_without_a_byte(s, timeout=1 + SLACK)
    s.close()
    assert (got, closed) == (b"", True), got
    ev = refused(p, mark, port)
    assert ev["reason"] == "PROXY header timeout", ev


def test_imaplib_without_header_gets_nothing(quick_postern):
    """imaplib (no PROXY support) connects, waits for the greeting and
    sees the connection closed instead."""
    import imaplib
    with pytest.raises((imaplib.IMAP4.abort, OSError, EOFError)):
        imaplib.IMAP4("127.0.0.1", quick_postern.plain_port, timeout=1 + SLACK)


# --------------------------------------------------------------------------
# connections_per_ip counts the real client


def test_connections_per_ip_counts_the_real_client(postern_factory, users):
    p = postern_factory(mutate=proxied, proxy_trusted_networks=TRUSTED,
                        limits={"connections_per_ip": 2})
    held = []
    try:
        for i in range(2):
            c = raw_proxied(p.plain_port, proxy_v2(
                ("192.0.2.1", 1000 + i), dst(p, p.plain_port)))
            assert c.greeting.startswith(b"* OK"), c.greeting
            held.append(c)
        mark = p.log_mark()
        third = raw_proxied(p.plain_port, proxy_v2(
            ("192.0.2.1", 1002), dst(p, p.plain_port)), read_greeting=False)
        data, closed = third.read_until_closed(10)
        third.close()
        assert closed, data
        assert data == b"" or data.startswith(b"* BYE"), data
        assert p.events(since=mark, event="refused") or data, \
            p.log_since(mark)
        # another real client through the same balancer address
        with raw_proxied(p.plain_port, proxy_v2(
                ("192.0.2.2", 2000), dst(p, p.plain_port))) as other:
            assert other.greeting.startswith(b"* OK"), other.greeting
            login_alice(other, users)
        # the held ones still work
        _, tagged = held[0].command("n", "NOOP")
        assert tagged.startswith(b"n OK"), tagged
    finally:
        for c in held:
            c.close()


def _failed_login_wait(p, real_ip, port_no, user):
    """Seconds from a wrong LOGIN (unknown user) to its NO, on a
    connection whose header says real_ip."""
    import time
    hdr = proxy_v2((real_ip, port_no), dst(p, p.plain_port))
    with raw_proxied(p.plain_port, hdr, timeout=30) as c:
        t0 = time.monotonic()
        _, tagged = c.command("a", 'LOGIN %s "Wr0ng-pw"' % user, timeout=30)
        waited = time.monotonic() - t0
    assert tagged.startswith(b"a NO [AUTHENTICATIONFAILED]"), tagged
    return waited


def test_auth_fail_delay_follows_the_real_client(postern_factory):
    """The failure delay doubles per recent failure from the same address:
    three failures from real client A (0.4, 0.8, 1.6 s), then one from B
    through the same balancer address is back at the base delay.  (Unknown
    users with fresh names, so the per-user doubling plays no part.)  A
    comparison within one run with a wide margin: were the balancer's
    address the key, B would wait 3.2 s, eight times the base."""
    p = postern_factory(mutate=proxied, proxy_trusted_networks=TRUSTED,
                        limits={"auth_fail_delay": 400})
    waits_a = [_failed_login_wait(p, "192.0.2.61", 6100 + i, "nx-a%d" % i)
               for i in range(3)]
    wait_b = _failed_login_wait(p, "192.0.2.62", 6200, "nx-b0")
    assert waits_a[2] > waits_a[0] * 2, waits_a  # the doubling is there
    assert wait_b < waits_a[2] / 2, (waits_a, wait_b)


# --------------------------------------------------------------------------
# A real HAProxy in front


def test_haproxy_in_front(postern, users, ssl_ctx, mbox_a, haproxy_factory):
    h = haproxy_factory([
        {"target": postern.plain_port, "send_proxy": "v2"},
        {"target": postern.imaps_port, "send_proxy": "v2"},
        {"target": postern.pop3_port, "send_proxy": "v1"},
    ])
    mark, dmark = postern.log_mark(), mbox_a.log_mark()
    m = imap_from(h.ports[0], source="127.0.0.5")
    local = m.sock.getsockname()
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    ev = connect_event(postern, mark, "127.0.0.5:%d" % local[1])
    assert ev["via"].startswith("127.0.0.1:"), ev
    mbox_a.wait_log(r"Login: user=<alice>[^\n]*rip=127\.0\.0\.5,",
                    since=dmark)

    # implicit TLS passes through HAProxy (TCP mode); the header is first
    mark, dmark = postern.log_mark(), mbox_a.log_mark()
    m = imap_from(h.ports[1], source="127.0.0.5", ssl_context=ssl_ctx)
    local = m.sock.getsockname()
    m.login("alice", users["alice"].password)
    m.logout()
    ev = connect_event(postern, mark, "127.0.0.5:%d" % local[1])
    assert ev["tls"] == "implicit", ev
    mbox_a.wait_log(r"Login: user=<alice>[^\n]*rip=127\.0\.0\.5,",
                    since=dmark)

    # POP3 with a v1 header (send-proxy)
    mark, dmark = postern.log_mark(), mbox_a.log_mark()
    p = pop3_from(h.ports[2], source="127.0.0.4")
    local = p.sock.getsockname()
    p.user("alice")
    p.pass_(users["alice"].password)
    p.quit()
    connect_event(postern, mark, "127.0.0.4:%d" % local[1])
    mbox_a.wait_log(r"pop3-login: Info: Login: user=<alice>[^\n]*"
                    r"rip=127\.0\.0\.4,", since=dmark)


# --------------------------------------------------------------------------
# Outbound: PROXY v2 to a Dovecot with haproxy = yes


FAST = {"interval": 0.5, "timeout": 1.0, "rise": 2, "fall": 2}
# Dovecot 2.3 logs "haproxy: ..." only when a header is missing, late,
# invalid or incomplete in its first read (at Error, or at Info for "Failed
# to read full header": it reads the whole header with one recv, so it must
# arrive in one piece).
HAPROXY_COMPLAINT = re.compile(r"haproxy: ")


@pytest.fixture
def hap_dovecot(private_dovecot, postfix):
    """A Dovecot (hostname mbox-a) whose IMAP, POP3 and submission
    listeners require a PROXY header."""
    return private_dovecot(hostname="mbox-a", haproxy=True,
                           submission_relay=("127.0.0.1",
                                             postfix.relay_port))


def outbound(d, trusted=False):
    return {"mbox-a": {"imap": d.port, "pop3": d.pop3_port,
                       "submission": d.submission_port,
                       "submission_login": "passthrough",
                       "proxy_protocol": True, "trusted": trusted,
                       "check": True}}


def test_outbound_header_carries_the_client(postern_factory, hap_dovecot,
                                            users, ssl_ctx):
    d = hap_dovecot
    p = postern_factory(backends=outbound(d), health=FAST,
                        admin={"socket": "admin.sock"},
                        imap={"cache_ttl": 0})
    dmark = d.log_mark()
    m = imap_from(p.imaps_port, source="127.0.0.6", ssl_context=ssl_ctx)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == "mbox-a"
    m.logout()
    d.wait_log(r"imap-login: Info: Login: user=<alice>[^\n]*"
               r"rip=127\.0\.0\.6,", since=dmark)

    po = pop3_from(p.pop3_port, source="127.0.0.6")
    po.user("alice")
    po.pass_(users["alice"].password)
    po.quit()
    d.wait_log(r"pop3-login: Info: Login: user=<alice>[^\n]*"
               r"rip=127\.0\.0\.6,", since=dmark)

    import base64
    token = base64.b64encode(
        ("\0alice\0%s" % users["alice"].password).encode()).decode()
    with raw(p.submission_port, source="127.0.0.6") as c:
        smtp_command(c, "EHLO client.test")
        reply = smtp_command(c, "AUTH PLAIN " + token)
        assert reply.startswith(b"235"), reply
        smtp_command(c, "QUIT")
    d.wait_log(r"submission-login: Info: Login: user=<alice>[^\n]*"
               r"rip=127\.0\.0\.6,", since=dmark)

    # health checks (v2 LOCAL) pass, and keep passing
    rows = p.wait_backends(
        lambda rows: all(p.backend_row("mbox-a", pr, rows)["health"] == "up"
                         for pr in ("imap", "pop3", "submission")),
        timeout=FAST["interval"] * FAST["rise"] + FAST["timeout"] + SLACK,
        what="mbox-a health=up")
    checks = int(p.backend_row("mbox-a", "imap", rows)["checks"])
    rows = p.wait_backends(
        lambda rows: int(p.backend_row("mbox-a", "imap", rows)["checks"])
        >= checks + 3, timeout=3 * FAST["interval"] + SLACK,
        what="three more checks")
    for pr in ("imap", "pop3", "submission"):
        row = p.backend_row("mbox-a", pr, rows)
        assert row["health"] == "up" and row["check_failures"] == "0", row
    complaints = [l for l in d.log_text().splitlines()
                  if HAPROXY_COMPLAINT.search(l)]
    assert not complaints, complaints


def test_inbound_to_outbound_chain(postern_factory, hap_dovecot, users):
    """A header from a balancer (source 192.0.2.9) in, a v2 header with
    192.0.2.9 out: the Dovecot behind sees the original client."""
    d = hap_dovecot
    p = postern_factory(mutate=proxied, proxy_trusted_networks=TRUSTED,
                        backends=outbound(d), imap={"cache_ttl": 0})
    dmark = d.log_mark()
    hdr = proxy_v2(("192.0.2.9", 9999), dst(p, p.plain_port))
    with raw_proxied(p.plain_port, hdr) as c:
        login_alice(c, users)
    d.wait_log(r"imap-login: Info: Login: user=<alice>[^\n]*"
               r"rip=192\.0\.2\.9,", since=dmark)
    # POP3 too, with a v1 header in
    hdr = proxy_v1(("192.0.2.10", 1010), dst(p, p.pop3_port))
    po = pop3_from(p.pop3_port, header=hdr)
    po.user("alice")
    po.pass_(users["alice"].password)
    po.quit()
    d.wait_log(r"pop3-login: Info: Login: user=<alice>[^\n]*"
               r"rip=192\.0\.2\.10,", since=dmark)
    assert not [l for l in d.log_text().splitlines()
                if HAPROXY_COMPLAINT.search(l)]


def test_backend_without_header_support_fails_cleanly(postern_factory,
                                                      hap_dovecot, users):
    """The same Dovecot without proxy_protocol on Postern's side: Dovecot
    refuses the header-less connection; the user gets a temporary failure,
    never a verdict on the password (a guard that the positive tests above
    really depend on the header)."""
    d = hap_dovecot
    b = outbound(d)
    b["mbox-a"]["proxy_protocol"] = False
    p = postern_factory(backends=b, limits={"auth_fail_delay": 0})
    with raw(p.plain_port) as c:
        _, tagged = c.command(
            "a", 'LOGIN alice "%s"' % users["alice"].password, timeout=30)
        assert tagged.startswith(b"a NO [UNAVAILABLE]"), tagged


# --------------------------------------------------------------------------
# Configuration


def config_check(launcher, tmp_path, mutate=None, **top):
    cfg = launcher.default_config(servers.listener_ports())
    cfg.update(top)
    if mutate:
        mutate(cfg)
    path = str(tmp_path / "postern.conf")
    with open(path, "w") as f:
        f.write(servers.render_libconfig(cfg))
    servers.write_postern_users(str(tmp_path / "users"),
                                launcher.all_users[:1],
                                launcher.hashes_for(launcher.all_users[:1]))
    return subprocess.run([launcher.binary, "-t", "-c", path],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=30)


def test_config_accepts_proxy_settings(postern_launcher, tmp_path):
    def mutate(cfg):
        proxied(cfg)
        cfg["backends"][0]["proxy_protocol"] = True
    r = config_check(postern_launcher, tmp_path, mutate,
                     proxy_trusted_networks=["127.0.0.1/32", "::1/128",
                                             "10.0.0.0/8", "192.0.2.5"])
    assert r.returncode == 0, (r.stdout, r.stderr)


@pytest.mark.parametrize("case", ["no-trusted-networks", "bad-cidr",
                                  "bad-prefix", "warm-and-proxy"])
def test_config_refuses(postern_launcher, tmp_path, case):
    top = {}
    if case == "no-trusted-networks":
        mutate, needle = proxied, "proxy_trusted_networks"
    elif case == "bad-cidr":
        mutate, needle = proxied, "proxy_trusted_networks"
        top = {"proxy_trusted_networks": ["127.0.0.1/32", "not-an-address"]}
    elif case == "bad-prefix":
        mutate, needle = proxied, "proxy_trusted_networks"
        top = {"proxy_trusted_networks": ["127.0.0.1/33"]}
    else:
        def mutate(cfg):
            cfg["backends"][0].update(proxy_protocol=True, warm=2)
        needle = ("proxy_protocol", "warm")
    r = config_check(postern_launcher, tmp_path, mutate, **top)
    assert r.returncode == 1, (case, r.stdout, r.stderr)
    needles = needle if isinstance(needle, tuple) else (needle,)
    assert any(n in r.stderr for n in needles), r.stderr
