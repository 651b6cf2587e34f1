"""POP3 with TLS towards the backends: Postern logs in to a real Dovecot
over STLS and over implicit TLS (pop3s) with the backend certificate
verified, and never sends credentials in clear to a backend configured for
TLS that does not offer STLS or whose certificate does not verify.

As in test_imap_backend_tls.py, the TLS Dovecot listens on 127.0.0.2 with
disable_plaintext_auth = yes and no trusted networks, so it refuses any
login that is not under TLS; a servers.Tap in front of it records the bytes
Postern really sends."""

import base64
import os
import re

import pytest

import servers
from servers import tls_only_dovecot
from helpers import pop3_landing_host, pop3_ssl, raw

TLS_HOST = "mbox-tls-pop3"
LOGGED_IN = b"+OK Logged in.\r\n"
SYS_TEMP = re.compile(rb"^-ERR \[SYS/TEMP\] [^\r\n]+\r\n$")


@pytest.fixture(scope="module")
def tls_dovecot(workroot, certs, all_users):
    """ssl = yes (STLS on .pop3_port, pop3s on .pop3s_port), the test CA's
    localhost certificate, on 127.0.0.2, refusing plaintext logins."""
    yield from tls_only_dovecot(workroot, certs, all_users, "tls-backend-pop3", TLS_HOST)


def tls_backend(certs, d, mode, port, **extra):
    """The mbox-a entry for the TLS Dovecot, POP3 through `port` (a tap)."""
    cfg = {"host": "127.0.0.1", "pop3": port, "tls": mode, "verify": True,
           "ca_file": certs["ca"], "server_name": "localhost"}
    cfg.update(extra)
    return cfg


def assert_no_credentials(data, user):
    pw = user.password_bytes
    assert pw not in data, data[:300]
    assert not re.search(rb"(?i)(^|\r\n)(USER|PASS|AUTH)\b", data), data[:300]
    assert base64.b64encode(pw) not in data
    assert base64.b64encode(b"\0" + user.name.encode() + b"\0" + pw) \
        not in data


def login(p, ssl_ctx, user):
    """USER/PASS through the pop3s listener; returns the answer to PASS."""
    with raw(p.pop3s_port, tls=True, ssl_context=ssl_ctx) as c:
        c.send(b"USER %s\r\n" % user.name.encode())
        assert c.readline().startswith(b"+OK")
        c.send(b"PASS %s\r\n" % user.password_bytes)
        return c.readline(timeout=30)


def test_tls_backend_refuses_plaintext(postern_factory, tls_dovecot,
                                       ssl_ctx, users):
    """The TLS Dovecot really refuses credentials in clear, so a login that
    works below went under TLS."""
    alice = users["alice"]
    p = postern_factory(backends={"mbox-a": {
        "host": tls_dovecot.address, "pop3": tls_dovecot.pop3_port,
        "tls": "none"}})
    mark = tls_dovecot.log_mark()
    answer = login(p, ssl_ctx, alice)
    assert answer.startswith(b"-ERR "), answer
    assert answer != LOGGED_IN
    tls_dovecot.wait_log(r"pop3-login: Info: Disconnected", since=mark)
    assert "Login: user=<alice>" not in tls_dovecot.log_since(mark)


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_login_over_backend_tls(postern_factory, tls_dovecot, tap_factory,
                                certs, ssl_ctx, users, mode):
    port = (tls_dovecot.pop3s_port if mode == "implicit"
            else tls_dovecot.pop3_port)
    tap = tap_factory(port, tls_dovecot.address)
    p = postern_factory(backends={"mbox-a": tls_backend(
        certs, tls_dovecot, mode, tap.port)})
    for name in ("alice", "user00"):  # two users of mbox-a
        u = users[name]
        mark = tls_dovecot.log_mark()
        c = pop3_ssl(p.pop3s_port, ssl_ctx)
        c.user(u.name)
        assert c.pass_(u.password) == LOGGED_IN.rstrip(b"\r\n")
        assert pop3_landing_host(c) == TLS_HOST
        c.quit()
        p.wait_event(event="login", user=name, backend="mbox-a", result="ok")
        line = tls_dovecot.wait_log(
            r"pop3-login: Info: Login: user=<%s>, [^\n]*" % name,
            since=mark).group(0)
        assert re.search(r", TLS(,|$)", line), line
    tap.wait_closed()
    sessions = [bytes(s["c2s"]) for s in tap.sessions if s["c2s"]]
    assert len(sessions) == 2
    for sent in sessions:
        if mode == "implicit":
            assert sent.startswith(b"\x16\x03"), sent[:64]  # ClientHello
        else:
            m = re.match(rb"(?:CAPA\r\n)?STLS\r\n", sent)
            assert m, sent[:64]
            assert sent[m.end():m.end() + 2] == b"\x16\x03", sent[:64]
        for u in (users["alice"], users["user00"]):
            assert_no_credentials(sent, u)


@pytest.mark.parametrize("what", ["server_name", "ca_file"])
def test_unverified_backend_gets_no_credentials(postern_factory, tls_dovecot,
                                                tap_factory, certs, other_ca,
                                                ssl_ctx, users, what):
    tap = tap_factory(tls_dovecot.pop3s_port, tls_dovecot.address)
    extra = ({"server_name": "mail.example.test"} if what == "server_name"
             else {"ca_file": other_ca})
    p = postern_factory(backends={"mbox-a": tls_backend(
        certs, tls_dovecot, "implicit", tap.port, **extra)})
    mark = p.log_mark()
    alice = users["alice"]
    answer = login(p, ssl_ctx, alice)
    assert SYS_TEMP.match(answer), answer
    ev = p.wait_event(since=mark, event="login", user="alice",
                      result="tempfail")
    assert ev.get("backend") == "mbox-a", ev
    tap.wait_closed()
    assert_no_credentials(tap.c2s(), alice)
    assert p.running()


def test_starttls_not_offered_no_credentials(postern_factory, private_dovecot,
                                             tap_factory, certs, ssl_ctx,
                                             users):
    """tls = starttls towards a Dovecot without TLS: -ERR [SYS/TEMP] and
    nothing but CAPA/STLS on the wire."""
    plain = private_dovecot(hostname="mbox-a")
    tap = tap_factory(plain.pop3_port)
    p = postern_factory(backends={"mbox-a": {
        "pop3": tap.port, "tls": "starttls", "verify": True,
        "ca_file": certs["ca"], "server_name": "localhost"}})
    alice = users["alice"]
    answer = login(p, ssl_ctx, alice)
    assert SYS_TEMP.match(answer), answer
    tap.wait_closed()
    sent = tap.c2s()
    assert re.fullmatch(rb"((CAPA|STLS|QUIT)\r\n)*", sent), sent
    assert_no_credentials(sent, alice)
    assert p.running()
