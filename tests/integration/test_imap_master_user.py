"""How Postern logs in to its backends, checked on the wire (a servers.Tap
records what Postern sends) and in Dovecot's log:

- as a Dovecot master user (master_user / master_password): AUTHENTICATE
  PLAIN with authzid = the user (auth = "plain"), or LOGIN "user*master"
  (auth = "login").  Postern's users file gives the users passwords that
  the backend does not know, so only the master login can succeed;
- auth = "login" with passwords that need escaping (quote, backslash,
  space) or are not ASCII: a valid IMAP quoted string or literal carrying
  exactly the password bytes."""

import base64
import os
import re

import pytest

import servers
from helpers import imap_ssl, landing_host, login_literal, raw, tagged_status

MASTER = "pmaster"
MASTER_PW = 'ma"ster\\ Pw-9'   # quote, backslash and space: LOGIN must escape
MASTER_HOST = "mbox-master"

# Postern's own passwords for these users: none is the backend's password.
POSTERN_PW = {
    "alice": "postern-only-alice-1",
    "grace": 'postern "only" \\ grace',
    "jorg": "p\u00f6stern-only-j\u00f6rg",
}


@pytest.fixture(scope="module")
def master_dovecot(workroot, all_users):
    """A plain Dovecot with a master passdb: pmaster may log in as anyone
    ("user*pmaster" or SASL authzid)."""
    d = servers.Dovecot("master-backend",
                        os.path.join(workroot, "master-backend"), all_users,
                        hostname=MASTER_HOST,
                        master_users={MASTER: MASTER_PW})
    try:
        yield d.start()
    finally:
        d.stop()
        assert not d.instance_pids(), "dovecot processes left behind"


@pytest.fixture(scope="module")
def postern_users(users):
    """Postern's users file: alice, grace and jorg (on mbox-a) with
    Postern-only passwords, bob unchanged (mbox-b)."""
    out = [servers.User(name, pw, "mbox-a") for name, pw in POSTERN_PW.items()]
    assert all(u.password != users[u.name].password for u in out)
    return out + [users["bob"]]


def master_backend(port, auth, **extra):
    cfg = {"imap": port, "tls": "none", "auth": auth, "master_user": MASTER,
           "master_password": MASTER_PW}
    cfg.update(extra)
    return cfg


# --------------------------------------------------------------------------
# Reading what went on the wire


def parse_astring(data, pos):
    """One IMAP astring at data[pos:]: returns (value, form, end).  form is
    "atom", "quoted", "literal" or "literal+"; raises AssertionError for
    anything RFC 9051 does not allow (CR/LF or a bad escape in a quoted
    string, a short literal)."""
    if data[pos:pos + 1] == b'"':
        out, i = bytearray(), pos + 1
        while True:
            ch = data[i:i + 1]
            assert ch, "unterminated quoted string: %r" % data[pos:]
            if ch == b'"':
                return bytes(out), "quoted", i + 1
            assert ch not in (b"\r", b"\n"), "CR/LF in quoted: %r" % data
            if ch == b"\\":
                nxt = data[i + 1:i + 2]
                assert nxt in (b'"', b"\\"), "bad escape: %r" % data[i:]
                out += nxt
                i += 2
            else:
                out += ch
                i += 1
    m = re.compile(rb"\{(\d+)(\+?)\}\r\n").match(data, pos)
    if m:
        n = int(m.group(1))
        value = data[m.end():m.end() + n]
        assert len(value) == n, "short literal: %r" % data[pos:]
        return value, "literal+" if m.group(2) else "literal", m.end() + n
    m = re.compile(rb"[^\s()\{\"\\%*\]]+").match(data, pos)
    assert m, "no astring at %r" % data[pos:pos + 40]
    return m.group(0), "atom", m.end()


def login_command(sent):
    """The one LOGIN command in sent: ((user, password), (forms)) after
    checking it is well formed and ends with CRLF."""
    found = list(re.finditer(rb"(?:^|\r\n)([A-Za-z0-9.]+) LOGIN ", sent))
    assert len(found) == 1, sent
    pos = found[0].end()
    user, ufm, pos = parse_astring(sent, pos)
    assert sent[pos:pos + 1] == b" ", sent[pos:]
    password, pfm, pos = parse_astring(sent, pos + 1)
    assert sent[pos:pos + 2] == b"\r\n", sent[pos:]
    return (user, password), (ufm, pfm)


def plain_response(sent):
    """The decoded SASL PLAIN response of the one AUTHENTICATE PLAIN (with
    an initial response, or after a continuation)."""
    m = re.search(rb"(?:^|\r\n)[A-Za-z0-9.]+ AUTHENTICATE PLAIN"
                  rb"(?: ([A-Za-z0-9+/=]+))?\r\n(?:([A-Za-z0-9+/=]+)\r\n)?",
                  sent)
    assert m, sent
    b64 = m.group(1) or m.group(2)
    assert b64, sent
    return base64.b64decode(b64, validate=True)


def assert_not_sent(sent, *passwords):
    for pw in passwords:
        pwb = pw.encode("utf-8")
        assert pwb not in sent, "password %r went to the backend" % pw
        assert base64.b64encode(pwb) not in sent


# --------------------------------------------------------------------------
# Master user


@pytest.mark.parametrize("auth", ["plain", "login"])
def test_master_user_login(postern_factory, master_dovecot, tap_factory,
                           postern_users, ssl_ctx, users, auth):
    tap = tap_factory(master_dovecot.port)
    p = postern_factory(users=postern_users,
                        backends={"mbox-a": master_backend(tap.port, auth)})
    for name in ("alice", "grace", "jorg"):
        mark = master_dovecot.log_mark()
        sessions_before = len(tap.sessions)
        m = imap_ssl(p.imaps_port, ssl_ctx)
        typ, data = login_literal(m, name, POSTERN_PW[name].encode("utf-8"))
        assert typ == "OK", (name, data)
        # the user's own mailbox on the master-enabled Dovecot
        assert landing_host(m) == MASTER_HOST
        typ, data = m.status("INBOX", "(MESSAGES)")
        assert typ == "OK" and b"MESSAGES 3" in data[0], data
        m.logout()
        master_dovecot.wait_log(r"auth: Info: Master user logging in as %s\b"
                                % name, since=mark)
        master_dovecot.wait_log(
            r"imap-login: Info: Login: user=<%s>, auth_user=<%s>, " % (
                name, MASTER), since=mark)
        tap.wait_closed()
        assert len(tap.sessions) == sessions_before + 1
        sent = bytes(tap.sessions[-1]["c2s"])
        if auth == "plain":
            assert plain_response(sent) == (
                name.encode() + b"\0" + MASTER.encode() + b"\0" +
                MASTER_PW.encode())
            assert not re.search(rb"(?:^|\n)\S+ LOGIN ", sent), sent
        else:
            (user, password), _ = login_command(sent)
            assert user == ("%s*%s" % (name, MASTER)).encode()
            assert password == MASTER_PW.encode()
            assert b"AUTHENTICATE" not in sent
        # neither the password the client gave nor the backend's own
        assert_not_sent(sent, POSTERN_PW[name], users[name].password)
        p.wait_event(event="login", user=name, backend="mbox-a", result="ok")
    log = p.log()
    assert MASTER_PW not in log
    assert all(pw not in log for pw in POSTERN_PW.values())


def test_without_master_user_the_backend_refuses(
        postern_factory, master_dovecot, postern_users, ssl_ctx):
    """Control: the Postern-only password is not the backend's, so without
    master_user the same login is refused by the backend (the master
    login above is what made it work)."""
    p = postern_factory(users=postern_users, backends={"mbox-a": {
        "imap": master_dovecot.port, "tls": "none", "auth": "plain"}})
    mark = master_dovecot.log_mark()
    with raw(p.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        _, tagged = c.command("a1", 'LOGIN alice "%s"' % POSTERN_PW["alice"],
                              timeout=30)
        assert tagged_status(tagged) == "NO", tagged
        _, tagged = c.command("a2", "SELECT INBOX")
        assert tagged_status(tagged) != "OK", tagged  # not logged in
    master_dovecot.wait_log(r"auth: Info: passwd-file\(alice,[^\n]*"
                            r"Password mismatch", since=mark)
    text = master_dovecot.log_since(mark)
    assert "Login: user=<alice>" not in text
    assert "Master user" not in text


@pytest.mark.parametrize("auth", ["plain", "login"])
def test_wrong_master_password_is_no_login(postern_factory, master_dovecot,
                                           postern_users, ssl_ctx, auth):
    p = postern_factory(users=postern_users, backends={
        "mbox-a": master_backend(master_dovecot.port, auth,
                                 master_password="not-the-master-pw")})
    mark = master_dovecot.log_mark()
    with raw(p.imaps_port, tls=True, ssl_context=ssl_ctx) as c:
        _, tagged = c.command("a1", 'LOGIN alice "%s"' % POSTERN_PW["alice"],
                              timeout=30)
        assert tagged_status(tagged) == "NO", tagged
    master_dovecot.wait_log(r"auth: Info: passwd-file\(%s,[^\n]*"
                            r"Password mismatch" % MASTER, since=mark)
    text = master_dovecot.log_since(mark)
    assert "Login: user=<alice>" not in text
    ev = p.wait_event(event="login", user="alice", backend="mbox-a")
    assert ev["result"] in ("fail", "tempfail"), ev
    assert "not-the-master-pw" not in p.log()


def test_master_user_other_backend_unaffected(postern_factory, master_dovecot,
                                              postern_users, ssl_ctx, users):
    """master_user is per backend: bob, on mbox-b without one, logs in with
    his own password."""
    p = postern_factory(users=postern_users, backends={
        "mbox-a": master_backend(master_dovecot.port, "login")})
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("bob", users["bob"].password)
    assert landing_host(m) == "mbox-b"
    m.logout()
    m = imap_ssl(p.imaps_port, ssl_ctx)
    m.login("alice", POSTERN_PW["alice"])
    assert landing_host(m) == MASTER_HOST
    m.logout()


# --------------------------------------------------------------------------
# auth = "login": the LOGIN command's arguments


@pytest.mark.parametrize("name", ["frank", "grace", "jorg", "alice"])
def test_backend_login_arguments(postern_factory, backends, tap_factory,
                                 ssl_ctx, users, name):
    """Passwords with a space (frank), a quote and a backslash (grace) and
    8-bit UTF-8 (jorg) reach Dovecot as exactly those bytes, in a well
    formed quoted string or literal, and the login lands."""
    u = users[name]
    d = backends[u.host]
    tap = tap_factory(d.port)
    p = postern_factory(backends={u.host: {"imap": tap.port,
                                           "auth": "login"}})
    mark = d.log_mark()
    m = imap_ssl(p.imaps_port, ssl_ctx)
    typ, data = login_literal(m, name, u.password_bytes)
    assert typ == "OK", data
    assert landing_host(m) == u.host
    m.logout()
    d.wait_log(r"imap-login: Info: Login: user=<%s>, method=PLAIN" % name,
               since=mark)
    tap.wait_closed()
    sent = tap.c2s()
    (user, password), (ufm, pfm) = login_command(sent)
    assert user == name.encode()
    assert password == u.password_bytes
    assert pfm in ("quoted", "literal", "literal+"), pfm
    if name in ("frank", "grace"):
        assert pfm == "quoted", (pfm, sent)  # README: quoted when possible
    if name == "jorg":
        # RFC 3501 quoted strings are 7-bit: 8-bit goes as a literal
        assert pfm in ("literal", "literal+"), (pfm, sent)
    assert b"AUTHENTICATE" not in sent
