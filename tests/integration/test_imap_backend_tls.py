"""TLS towards the backends: Postern logs in to a real Dovecot over STARTTLS
and over implicit TLS with the backend certificate verified (ca_file,
server_name), refuses the login with NO [UNAVAILABLE] when verification
fails (unless verify = false), and never sends credentials in clear to a
backend configured for STARTTLS that does not offer or refuses it.

The TLS Dovecot listens on 127.0.0.2 with disable_plaintext_auth = yes and
no trusted networks: Postern reaches it from 127.0.0.1, so Dovecot refuses
any login that is not under TLS (it counts same-address connections as
secured, hence 127.0.0.2).  A servers.Tap in front of a backend records
the bytes Postern really sends it."""

import base64
import os
import re
import socket
import ssl
import threading
import time

import pytest

import servers
from servers import tls_only_dovecot
from helpers import imap_ssl, landing_host, raw, tagged_status

UNAVAILABLE = re.compile(
    rb"^a1 NO \[UNAVAILABLE\] Service temporarily unavailable, try again "
    rb"later\.\r\n$")
TLS_HOST = "mbox-tls"  # the "hello from ..." of the TLS Dovecot's messages


@pytest.fixture(scope="module")
def tls_dovecot(workroot, certs, all_users):
    """A Dovecot with ssl = yes (STARTTLS on .port, imaps on .imaps_port),
    the test CA's localhost certificate, on 127.0.0.2, refusing plaintext
    logins."""
    yield from tls_only_dovecot(workroot, certs, all_users, "tls-backend", TLS_HOST)


def dovecot_port(d, mode):
    return d.imaps_port if mode == "implicit" else d.port


def tls_backend(certs, d, mode, **extra):
    """The mbox-a backend entry for the TLS Dovecot."""
    cfg = {"host": d.address, "imap": dovecot_port(d, mode), "tls": mode,
           "verify": True, "ca_file": certs["ca"], "server_name": "localhost"}
    cfg.update(extra)
    return cfg


def plain_b64(authz, authc, password):
    return base64.b64encode(authz + b"\0" + authc + b"\0" + password)


def assert_no_credentials(data, user):
    """No login command and no form of the user's password in data."""
    pw = user.password_bytes
    assert pw not in data, data
    assert not re.search(rb"(?i)\b(LOGIN|AUTHENTICATE)\b", data), data
    assert base64.b64encode(pw) not in data
    assert plain_b64(b"", user.name.encode(), pw) not in data


def assert_no_dovecot_login(d, mark, name):
    """Dovecot saw the connection end without any login for name (its log
    process writes asynchronously: wait for the disconnect first)."""
    d.wait_log(r"imap-login: Info: Disconnected", since=mark)
    text = d.log_since(mark)
    assert "Login: user=<%s>" % name not in text, text
    assert "user=<%s>" % name not in text, text
    assert not re.search(r"auth: .*\b%s\b" % re.escape(name), text), text
    assert "auth failed" not in text.lower(), text


def login_unavailable(p, ssl_ctx, user):
    """LOGIN through the implicit-TLS listener must give NO [UNAVAILABLE];
    returns Postern's login tempfail event."""
    mark = p.log_mark()
    with raw(p.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        _, tagged = c.command("a1", 'LOGIN %s "%s"' % (user.name,
                                                      user.password),
                              timeout=30)
        assert UNAVAILABLE.match(tagged), tagged
        # the client may go on (and is not logged in)
        _, tagged = c.command("a2", "NOOP")
        assert tagged.startswith(b"a2 OK"), tagged
    ev = p.wait_event(since=mark, event="login", user=user.name,
                      result="tempfail")
    assert ev["backend"] == "mbox-a", ev
    assert user.password not in p.log()
    return ev


# --------------------------------------------------------------------------
# Logins over TLS


def test_tls_backend_refuses_plaintext(postern_factory, tls_dovecot,
                                       ssl_ctx, users):
    """The TLS Dovecot really refuses credentials in clear: so a login that
    works below went under TLS."""
    alice = users["alice"]
    p = postern_factory(backends={"mbox-a": {
        "host": tls_dovecot.address, "imap": tls_dovecot.port,
        "tls": "none"}})
    mark = tls_dovecot.log_mark()
    with raw(p.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        _, tagged = c.command("a1", 'LOGIN alice "%s"' % alice.password,
                              timeout=30)
        # the backend's NO [PRIVACYREQUIRED] is no verdict on the password
        assert tagged.startswith(b"a1 NO [UNAVAILABLE]"), tagged
    tls_dovecot.wait_log(r"Plaintext authentication disabled", since=mark)
    assert "Login: user=<alice>" not in tls_dovecot.log_since(mark)


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_login_over_backend_tls(postern_factory, tls_dovecot, tap_factory,
                                certs, ssl_ctx, users, mode):
    """tls = starttls / implicit, verify = true, ca_file = the test CA:
    logins work, land on the TLS Dovecot, which logs them as TLS; on the
    wire Postern sends nothing but TLS (after the STARTTLS command)."""
    tap = tap_factory(dovecot_port(tls_dovecot, mode), tls_dovecot.address)
    p = postern_factory(backends={"mbox-a": tls_backend(
        certs, tls_dovecot, mode, host="127.0.0.1", imap=tap.port)})
    for name in ("alice", "user00"):  # two users of mbox-a
        u = users[name]
        mark = tls_dovecot.log_mark()
        m = imap_ssl(p.imaps_port, ssl_ctx)
        typ, data = m.login(u.name, u.password)
        assert typ == "OK", data
        assert landing_host(m) == TLS_HOST
        m.logout()
        p.wait_event(event="login", user=name, backend="mbox-a", result="ok")
        line = tls_dovecot.wait_log(
            r"imap-login: Info: Login: user=<%s>, [^\n]*" % name,
            since=mark).group(0)
        assert re.search(r", TLS(,|$)", line), line
    tap.wait_closed()
    assert len(tap.sessions) == 2
    for s in tap.sessions:
        sent = bytes(s["c2s"])
        if mode == "implicit":
            assert sent.startswith(b"\x16\x03"), sent[:64]  # ClientHello
        else:
            m_ = re.match(rb"[^ \r\n]+ STARTTLS\r\n", sent)
            assert m_, sent[:64]
            assert sent[m_.end():m_.end() + 2] == b"\x16\x03", sent[:64]
        for u in (users["alice"], users["user00"]):
            assert_no_credentials(sent, u)
    assert p.running()


def test_starttls_backend_and_plain_backend_side_by_side(
        postern_factory, tls_dovecot, certs, ssl_ctx, users):
    """One Postern, one STARTTLS backend and one plain backend: users of
    both log in, several times (the STARTTLS leg is set up per login)."""
    p = postern_factory(backends={"mbox-a": tls_backend(
        certs, tls_dovecot, "starttls")})
    for _ in range(3):
        for name, host in (("alice", TLS_HOST), ("bob", "mbox-b")):
            m = imap_ssl(p.imaps_port, ssl_ctx)
            m.login(name, users[name].password)
            assert landing_host(m) == host
            m.logout()
    assert p.running()


def test_default_server_name_is_the_host_address(
        postern_factory, tls_dovecot, tap_factory, certs, ssl_ctx, users):
    """Without server_name the host is checked: 127.0.0.1 is in the
    certificate's IP SANs (reached through a tap), 127.0.0.2 is not."""
    tap = tap_factory(tls_dovecot.imaps_port, tls_dovecot.address)
    cfg = tls_backend(certs, tls_dovecot, "implicit", host="127.0.0.1",
                      imap=tap.port, server_name=None)
    p = postern_factory(backends={"mbox-a": cfg})
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("alice", users["alice"].password)
    assert landing_host(m) == TLS_HOST
    m.logout()

    cfg = tls_backend(certs, tls_dovecot, "implicit", server_name=None)
    p2 = postern_factory(backends={"mbox-a": cfg})
    mark = tls_dovecot.log_mark()
    ev = login_unavailable(p2, ssl_ctx, users["alice"])
    assert re.search(r"(?i)ip address mismatch|certificate", ev["reason"]), ev
    assert_no_dovecot_login(tls_dovecot, mark, "alice")


# --------------------------------------------------------------------------
# Verification failures


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_wrong_server_name_is_refused(postern_factory, tls_dovecot, certs,
                                      ssl_ctx, users, mode):
    p = postern_factory(backends={"mbox-a": tls_backend(
        certs, tls_dovecot, mode, server_name="wrong.example.test")})
    mark = tls_dovecot.log_mark()
    ev = login_unavailable(p, ssl_ctx, users["alice"])
    assert re.search(r"(?i)hostname|certificate", ev["reason"]), ev
    assert_no_dovecot_login(tls_dovecot, mark, "alice")
    # other users on other backends are not affected
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("bob", users["bob"].password)
    assert landing_host(m) == "mbox-b"
    m.logout()


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
def test_unknown_issuer_is_refused(postern_factory, tls_dovecot, certs,
                                   other_ca, ssl_ctx, users, mode):
    """ca_file holds a CA that did not sign the backend's certificate."""
    p = postern_factory(backends={"mbox-a": tls_backend(
        certs, tls_dovecot, mode, ca_file=other_ca)})
    mark = tls_dovecot.log_mark()
    ev = login_unavailable(p, ssl_ctx, users["alice"])
    assert re.search(r"(?i)issuer|certificate", ev["reason"]), ev
    assert_no_dovecot_login(tls_dovecot, mark, "alice")


@pytest.mark.parametrize("mode", ["starttls", "implicit"])
@pytest.mark.parametrize("what", ["wrong-name", "unknown-ca"])
def test_verify_false_accepts(postern_factory, tls_dovecot, certs, other_ca,
                              ssl_ctx, users, mode, what):
    """verify = false: neither the name nor the issuer is checked (and the
    session is still TLS: the Dovecot refuses plaintext logins)."""
    extra = ({"server_name": "wrong.example.test"} if what == "wrong-name"
             else {"ca_file": other_ca})
    p = postern_factory(backends={"mbox-a": tls_backend(
        certs, tls_dovecot, mode, verify=False, **extra)})
    mark = tls_dovecot.log_mark()
    m = imap_ssl(p.imaps_port, ssl_ctx)
    typ, data = m.login("alice", users["alice"].password)
    assert typ == "OK", data
    assert landing_host(m) == TLS_HOST
    m.logout()
    line = tls_dovecot.wait_log(r"Login: user=<alice>, [^\n]*",
                                since=mark).group(0)
    assert re.search(r", TLS(,|$)", line), line


# --------------------------------------------------------------------------
# STARTTLS configured, but the backend cannot or will not


def test_starttls_not_offered_no_credentials(postern_factory, private_dovecot,
                                             tap_factory, ssl_ctx, users):
    """tls = "starttls" towards a Dovecot without ssl (no STARTTLS in its
    capabilities): NO [UNAVAILABLE], and neither a login command nor the
    password goes to the backend."""
    plain = private_dovecot(hostname="mbox-plain")
    tap = tap_factory(plain.port)
    p = postern_factory(backends={"mbox-a": {
        "imap": tap.port, "tls": "starttls", "verify": True,
        "server_name": "localhost"}})
    alice = users["alice"]
    mark = plain.log_mark()
    ev = login_unavailable(p, ssl_ctx, alice)
    assert "STARTTLS" in ev["reason"], ev
    plain.wait_log(r"imap-login: Info: Disconnected[^\n]*no auth attempts",
                   since=mark)
    assert_no_dovecot_login(plain, mark, "alice")
    tap.wait_closed()
    assert tap.sessions, "Postern never connected to the backend"
    for s in tap.sessions:
        assert_no_credentials(bytes(s["c2s"]), alice)
    # the same backend with tls = "none" logs alice in: the backend is fine
    p2 = postern_factory(backends={"mbox-a": {"imap": plain.port}})
    m = imap_ssl(p2.imaps_port, ssl_ctx)
    m.login("alice", alice.password)
    assert landing_host(m) == "mbox-plain"
    m.logout()


def test_implicit_tls_to_plaintext_port(postern_factory, private_dovecot,
                                        ssl_ctx, users):
    """tls = "implicit" towards a plaintext IMAP port: the handshake fails,
    the client gets NO [UNAVAILABLE] and Dovecot sees no login."""
    plain = private_dovecot(hostname="mbox-plain")
    p = postern_factory(backends={"mbox-a": {
        "imap": plain.port, "tls": "implicit", "server_name": "localhost"}},
        limits={"auth_fail_delay": 0})
    mark = plain.log_mark()
    for _ in range(3):
        ev = login_unavailable(p, ssl_ctx, users["alice"])
        assert re.search(r"(?i)TLS|handshake|ssl", ev["reason"]), ev
    assert_no_dovecot_login(plain, mark, "alice")


class FakeBackend:
    """A scripted IMAP server on 127.0.0.1: sends `greeting`, then answers
    each command line with reply(tag, verb, tls), which returns bytes to
    send, None, or ("starttls", bytes): send the bytes, then take a TLS
    handshake (server side, the test localhost certificate).  Records what
    it receives in clear (.clear) and under TLS (.secure), and the command
    lines as (tls, line) in .commands."""

    def __init__(self, greeting, reply, certs=None):
        self.greeting = greeting
        self.reply = reply
        self.tls_ctx = None
        if certs:
            self.tls_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls_ctx.load_cert_chain(certs["server_cert"],
                                         certs["server_key"])
        self.clear = bytearray()
        self.secure = bytearray()
        self.commands = []
        self.connections = 0
        self.ended = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,),
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, conn):
        conn.settimeout(20)
        buf, tls = b"", False
        try:
            conn.sendall(self.greeting)
            while True:
                data = conn.recv(4096)
                if not data:
                    return
                with self.lock:
                    (self.secure if tls else self.clear).extend(data)
                buf += data
                while b"\n" in buf:
                    line, _, buf = buf.partition(b"\n")
                    line = line.rstrip(b"\r")
                    with self.lock:
                        self.commands.append((tls, line))
                    tag, _, cmd = line.partition(b" ")
                    verb = cmd.split(b" ", 1)[0].upper()
                    out = self.reply(tag, verb, tls)
                    if isinstance(out, tuple):
                        conn.sendall(out[1])
                        # anything the client pipelined after STARTTLS
                        # stays recorded in .clear and is dropped here
                        buf = b""
                        conn = self.tls_ctx.wrap_socket(conn,
                                                        server_side=True)
                        tls = True
                    elif out:
                        conn.sendall(out)
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()
            with self.lock:
                self.ended += 1

    def wait_ended(self, n=1, timeout=10):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if self.ended >= n:
                    return
            time.sleep(0.05)
        raise AssertionError("the fake backend saw %d of %d connections end"
                             % (self.ended, n))

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for t in self.threads:
            t.join(5)


FAKE_CAPS = b"IMAP4rev1 SASL-IR AUTH=PLAIN"


def fake_reply(starttls):
    """reply() for FakeBackend: STARTTLS answered with `starttls` (bytes,
    or ("starttls", bytes)); CAPABILITY, ID and NOOP answered OK; a login
    command answered OK with FAKE-TLS-SESSION capabilities (the tests make
    sure one is never sent in clear)."""
    def reply(tag, verb, tls):
        if verb == b"STARTTLS":
            if isinstance(starttls, tuple):
                return (starttls[0], tag + b" " + starttls[1])
            return tag + b" " + starttls
        if verb == b"CAPABILITY":
            return (b"* CAPABILITY " + FAKE_CAPS + b"\r\n" + tag +
                    b" OK done\r\n")
        if verb == b"ID":
            return b"* ID NIL\r\n" + tag + b" OK done\r\n"
        if verb in (b"LOGIN", b"AUTHENTICATE"):
            return (tag + b" OK [CAPABILITY IMAP4rev1 FAKE-TLS-SESSION] "
                    b"Logged in\r\n")
        if verb == b"LOGOUT":
            return b"* BYE bye\r\n" + tag + b" OK done\r\n"
        if verb == b"NOOP":
            return tag + b" OK done\r\n"
        return tag + b" BAD unexpected\r\n"
    return reply


# Plaintext the backend sends right after its STARTTLS OK (RFC 3207-style
# injection): Postern must discard it, not read it as a reply.
INJECTED = (b"* CAPABILITY IMAP4rev1 INJECTED AUTH=PLAIN\r\n"
            b"P2 OK [CAPABILITY IMAP4rev1 INJECTED] Logged in\r\n"
            b"P3 OK [CAPABILITY IMAP4rev1 INJECTED] Logged in\r\n")


@pytest.mark.parametrize("case", [
    "no-caps-starttls-bad",     # greeting without capabilities, BAD
    "offered-but-refused",      # STARTTLS advertised, answered NO
    "preauth",                  # greets PREAUTH: never a login
    "ok-then-no-tls",           # OK to STARTTLS, then plaintext, no TLS
])
def test_starttls_refused_no_credentials(postern_factory, ssl_ctx, users,
                                         case):
    """Each way a STARTTLS backend can fail: NO [UNAVAILABLE], no login
    command and no password ever reach the backend, Postern lives on."""
    caps = b"* OK [CAPABILITY " + FAKE_CAPS + b" STARTTLS] fake ready\r\n"
    if case == "no-caps-starttls-bad":
        fake = FakeBackend(b"* OK fake IMAP ready\r\n",
                           fake_reply(b"BAD TLS support isn't enabled.\r\n"))
    elif case == "offered-but-refused":
        fake = FakeBackend(caps, fake_reply(b"NO not today\r\n"))
    elif case == "preauth":
        fake = FakeBackend(b"* PREAUTH [CAPABILITY IMAP4rev1] fake\r\n",
                           fake_reply(b"OK begin\r\n"))
    else:
        # more than Postern reads at once, so the handshake meets it
        fake = FakeBackend(caps, fake_reply(b"OK Begin TLS now\r\n" +
                                            b"* OK this is not TLS\r\n" *
                                            800))
    try:
        p = postern_factory(backends={"mbox-a": {
            "imap": fake.port, "tls": "starttls", "server_name": "localhost",
            "auth": "login"}})
        ev = login_unavailable(p, ssl_ctx, users["alice"])
        assert ev["reason"], ev
        fake.wait_ended()
        assert fake.connections == 1
        assert_no_credentials(bytes(fake.clear), users["alice"])
        assert not fake.secure
        # IMAP command lines only (not the TLS ClientHello of the last case)
        verbs = [m_.group(1).upper() for m_ in (
            re.match(rb"[A-Za-z0-9.]+ ([A-Za-z]+)", line)
            for _, line in fake.commands) if m_]
        if case == "preauth":
            assert verbs == [], fake.commands
        else:
            assert verbs == [b"STARTTLS"], fake.commands
        # Postern still serves everyone
        m = imap_ssl(p.imaps_port, ssl_ctx)
        m.login("bob", users["bob"].password)
        assert landing_host(m) == "mbox-b"
        m.logout()
        assert p.running()
    finally:
        fake.close()


def test_starttls_injection_discarded(postern_factory, certs, ssl_ctx,
                                      users):
    """The backend's plaintext after its STARTTLS OK is dropped: Postern
    asks CAPABILITY again under TLS, logs in only under TLS, and the client
    gets the capabilities the backend gave under TLS."""
    fake = FakeBackend(
        b"* OK [CAPABILITY " + FAKE_CAPS + b" STARTTLS] fake ready\r\n",
        fake_reply(("starttls", b"OK Begin TLS now\r\n" + INJECTED)),
        certs=certs)
    try:
        p = postern_factory(backends={"mbox-a": {
            "imap": fake.port, "tls": "starttls", "ca_file": certs["ca"],
            "server_name": "localhost", "auth": "plain", "trusted": False}})
        alice = users["alice"]
        with raw(p.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
            _, tagged = c.command("a1", 'LOGIN alice "%s"' % alice.password,
                                  timeout=30)
            assert tagged.startswith(b"a1 OK [CAPABILITY IMAP4rev1 "
                                     b"FAKE-TLS-SESSION]"), tagged
            assert b"INJECTED" not in tagged
            _, tagged = c.command("a2", "NOOP")  # relayed to the fake
            assert tagged == b"a2 OK done\r\n", tagged
        fake.wait_ended()
        clear_verbs = [line.split(b" ")[1].upper()
                       for tls, line in fake.commands if not tls]
        tls_verbs = [line.split(b" ")[1].upper()
                     for tls, line in fake.commands if tls and b" " in line]
        assert clear_verbs == [b"STARTTLS"], fake.commands
        assert tls_verbs[:2] == [b"CAPABILITY", b"AUTHENTICATE"], tls_verbs
        assert_no_credentials(bytes(fake.clear), alice)
        expected = plain_b64(b"", b"alice", alice.password_bytes)
        assert expected in bytes(fake.secure)
        assert p.running()
    finally:
        fake.close()


def test_implicit_tls_to_server_that_talks_first(postern_factory, ssl_ctx,
                                                 users):
    """tls = "implicit" towards a server that greets in plaintext at once
    (an IMAP port, not an imaps one): its bytes are usually waiting when
    Postern starts the handshake, so the handshake fails on the spot.
    Every login gets NO [UNAVAILABLE], no credentials are sent, and
    Postern survives its backend login timeout afterwards."""
    fake = FakeBackend(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] plain\r\n" *
                       300, fake_reply(b"BAD no\r\n"))
    try:
        p = postern_factory(backends={"mbox-a": {
            "imap": fake.port, "tls": "implicit", "server_name": "localhost",
            "login_timeout": 1}}, limits={"auth_fail_delay": 0})
        for _ in range(10):
            ev = login_unavailable(p, ssl_ctx, users["alice"])
            assert re.search(r"(?i)TLS|handshake|ssl", ev["reason"]), ev
        time.sleep(2.5)  # past login_timeout of every attempt
        assert p.running(), p.log()[-4000:]
        m = imap_ssl(p.imaps_port, ssl_ctx)
        m.login("bob", users["bob"].password)
        assert landing_host(m) == "mbox-b"
        m.logout()
        fake.wait_ended(10)
        assert_no_credentials(bytes(fake.clear), users["alice"])
        assert not fake.secure
    finally:
        fake.close()
